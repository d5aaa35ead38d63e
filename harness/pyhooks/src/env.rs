//! Which Python environment hooks run against: `MOEBENCH_PYTHON` (an interpreter), else the
//! active virtual environment (`VIRTUAL_ENV`), else `python3` on `PATH`. The interpreter is
//! asked once for its version, `sys.path` and site directories; the embedded CPython then
//! imports from exactly those.
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A Python environment, as its interpreter describes itself.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
pub struct PythonEnv {
    /// `sys.executable`.
    pub executable: PathBuf,
    /// `sys.version_info[:2]`.
    pub version: (u32, u32),
    /// `sys.path` (without the script directory).
    pub path: Vec<String>,
    /// `site.getsitepackages()` and the user site directory when enabled.
    pub site: Vec<String>,
}

/// Why no usable Python environment was found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvError {
    #[error(
        "no Python found (set MOEBENCH_PYTHON to an interpreter, activate a virtual environment, or put python3 on PATH)"
    )]
    NotFound,
    #[error("{interpreter} (from {source_var}) cannot be run: {message}")]
    Broken {
        interpreter: String,
        source_var: &'static str,
        message: String,
    },
}

/// Where the interpreter was found, for messages.
fn candidate() -> Option<(PathBuf, &'static str)> {
    if let Some(python) = std::env::var_os("MOEBENCH_PYTHON").filter(|v| !v.is_empty()) {
        return Some((PathBuf::from(python), "MOEBENCH_PYTHON"));
    }
    if let Some(venv) = std::env::var_os("VIRTUAL_ENV").filter(|v| !v.is_empty()) {
        let python = Path::new(&venv).join("bin/python");
        if python.exists() {
            return Some((python, "VIRTUAL_ENV"));
        }
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("python3"))
        .find(|python| python.is_file())
        .map(|python| (python, "PATH"))
}

const DESCRIBE: &str = "import json, site, sys\n\
    sites = list(site.getsitepackages())\n\
    if site.ENABLE_USER_SITE: sites.append(site.getusersitepackages())\n\
    print(json.dumps({'executable': sys.executable, 'version': list(sys.version_info[:2]), \
    'path': [p for p in sys.path if p], 'site': sites}))";

impl PythonEnv {
    /// Finds and describes the environment.
    pub fn discover() -> Result<Self, EnvError> {
        let (interpreter, source_var) = candidate().ok_or(EnvError::NotFound)?;
        Self::describe(&interpreter, source_var)
    }

    /// Asks `interpreter` to describe its environment.
    pub fn describe(interpreter: &Path, source_var: &'static str) -> Result<Self, EnvError> {
        let broken = |message: String| EnvError::Broken {
            interpreter: interpreter.display().to_string(),
            source_var,
            message,
        };
        let output = Command::new(interpreter)
            .args(["-c", DESCRIBE])
            .output()
            .map_err(|error| broken(error.to_string()))?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            return Err(broken(stderr.lines().last().unwrap_or("failed").to_owned()));
        }
        serde_json::from_slice(&output.stdout).map_err(|error| broken(error.to_string()))
    }
}
