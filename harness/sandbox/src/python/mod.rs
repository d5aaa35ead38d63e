//! Functional-correctness checks of generated Python programs (HumanEval, MBPP): run the
//! program and its tests once in the [`Sandbox`] and say whether it passed.
//!
//! Inside, `runner.py` executes the program as lm-eval's `code_eval` metric does (see its
//! docstring), so pass/fail matches lm-eval 0.4.13; the sandbox, not the runner, contains
//! what the program may do.
use crate::{Arg, Job, Sandbox, SandboxError, Termination};
use std::ffi::{OsStr, OsString};
use std::path::PathBuf;
use std::time::Duration;

const RUNNER: &str = include_str!("runner.py");

/// lm-eval's `code_eval` timeout for one program (`timeout=3.0`).
pub const CODE_EVAL_TIMEOUT: Duration = Duration::from_secs(3);

/// How one program ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Passed,
    /// Raised an exception (a failed `assert` included), crashed, or was killed by a
    /// resource limit; with what the runner or the sandbox said.
    Failed(String),
    /// Ran past the timeout.
    TimedOut,
}

impl Verdict {
    pub fn passed(&self) -> bool {
        matches!(self, Self::Passed)
    }
}

/// Checks programs with one Python interpreter.
#[derive(Debug, Clone)]
pub struct PythonChecker {
    sandbox: Sandbox,
    interpreter: PathBuf,
    timeout: Duration,
}

impl PythonChecker {
    /// `python` is a command (looked up on `PATH`) or a path; it is resolved to the
    /// interpreter's `sys.executable` by running it once outside the sandbox (it is the
    /// user's own interpreter, not generated code). `timeout` bounds each program's `exec`;
    /// the sandbox's wall-clock limit must leave room for interpreter start-up beyond it.
    pub fn new(sandbox: Sandbox, python: &OsStr, timeout: Duration) -> Result<Self, SandboxError> {
        if sandbox.policy().limits.wall_time <= timeout {
            return Err(SandboxError::InvalidJob(format!(
                "the wall-clock limit ({:?}) must exceed the program timeout ({timeout:?})",
                sandbox.policy().limits.wall_time
            )));
        }
        let output = std::process::Command::new(python)
            .args(["-c", "import sys; sys.stdout.write(sys.executable)"])
            .output()
            .map_err(|error| {
                SandboxError::Interpreter(format!(
                    "cannot run {}: {error}",
                    python.to_string_lossy()
                ))
            })?;
        let executable = String::from_utf8_lossy(&output.stdout).into_owned();
        if !output.status.success() || !executable.starts_with('/') {
            return Err(SandboxError::Interpreter(format!(
                "{} did not report its sys.executable ({})",
                python.to_string_lossy(),
                String::from_utf8_lossy(&output.stderr).trim()
            )));
        }
        Ok(Self {
            sandbox,
            interpreter: PathBuf::from(executable),
            timeout,
        })
    }

    /// The resolved interpreter.
    pub fn interpreter(&self) -> &std::path::Path {
        &self.interpreter
    }

    /// Runs `program` (source text, tests included) once.
    pub fn check(&self, program: &str) -> Result<Verdict, SandboxError> {
        let nonce = nonce()?;
        let job = Job {
            program: self.interpreter.clone(),
            args: vec![
                Arg::Literal(OsString::from("-B")),
                Arg::Literal(OsString::from("-s")),
                Arg::Input("runner.py".into()),
                Arg::Input("program.py".into()),
            ],
            env: [
                ("PATH", "/usr/local/bin:/usr/bin:/bin"),
                ("LANG", "C.UTF-8"),
                ("PYTHONHASHSEED", "0"),
                ("PYTHONDONTWRITEBYTECODE", "1"),
                ("MOEBENCH_VERDICT_NONCE", nonce.as_str()),
                (
                    "MOEBENCH_TIMEOUT_SECONDS",
                    &self.timeout.as_secs_f64().to_string(),
                ),
            ]
            .into_iter()
            .map(|(key, value)| (key.to_owned(), value.to_owned()))
            .collect(),
            inputs: vec![
                ("runner.py".into(), RUNNER.as_bytes().to_vec()),
                ("program.py".into(), program.as_bytes().to_vec()),
            ],
        };
        let outcome = self.sandbox.run(&job)?;
        let stdout = String::from_utf8_lossy(&outcome.stdout);
        let said = stdout
            .lines()
            .find_map(|line| line.strip_prefix(nonce.as_str())?.strip_prefix(' '));
        Ok(match (said, outcome.termination) {
            (Some("passed"), Termination::Exited(0)) => Verdict::Passed,
            (Some("timed out"), _) | (None, Termination::TimedOut) => Verdict::TimedOut,
            (Some(failure), _) => Verdict::Failed(failure.to_owned()),
            (None, termination) => Verdict::Failed(format!(
                "no verdict ({termination:?}): {}",
                String::from_utf8_lossy(&outcome.stderr).trim()
            )),
        })
    }
}

/// 128 random bits, in hex: the verdict line's prefix, which the program is not told.
fn nonce() -> Result<String, SandboxError> {
    let mut bytes = [0u8; 16];
    // SAFETY: getrandom fills the live buffer it is given.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if n != bytes.len() as isize {
        return Err(std::io::Error::last_os_error().into());
    }
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}
