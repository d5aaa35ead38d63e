//! Local model directories: resolution and content fingerprint.
use crate::{HubError, ResolvedRepo};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::path::Path;

pub(crate) fn resolve_local<'a>(
    dir: &Path,
    wanted: impl Iterator<Item = (&'a str, bool)>,
) -> Result<ResolvedRepo, HubError> {
    let mut files = BTreeMap::new();
    for (file, is_required) in wanted {
        let path = dir.join(file);
        if path.is_file() {
            files.insert(file.to_owned(), path);
        } else if is_required {
            return Err(HubError::LocalFileMissing {
                dir: dir.to_owned(),
                file: file.to_owned(),
                path,
            });
        }
    }
    Ok(ResolvedRepo {
        repo_id: dir.display().to_string(),
        revision: None,
        commit: None,
        dir: dir.to_owned(),
        files,
    })
}

/// Content hash of a local model directory, standing in for the commit sha: hex sha256 over the
/// sorted `name NUL sha256(file) LF` lines of `config.json`, `tokenizer.json` and `*.safetensors`
/// at its top level. Every byte of those files is read (no size+mtime shortcut), so this costs
/// one pass over the weights; other files do not change it.
pub fn local_fingerprint(dir: &Path) -> Result<String, HubError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| HubError::Io { path, source }
    };
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).map_err(io(dir))? {
        let entry = entry.map_err(io(dir))?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        let listed = name == "config.json" || name == "tokenizer.json";
        if (listed || name.ends_with(".safetensors")) && entry.path().is_file() {
            names.push(name);
        }
    }
    names.sort();
    let mut fingerprint = Sha256::new();
    for name in names {
        let path = dir.join(&name);
        let sha = sha256_file(&path).map_err(io(&path))?;
        fingerprint.update(format!("{name}\0{sha}\n"));
    }
    Ok(format!("{:x}", fingerprint.finalize()))
}

/// Hex sha256 of a file's content.
pub(crate) fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut hasher = Sha256::new();
    std::io::copy(&mut File::open(path)?, &mut hasher)?;
    Ok(format!("{:x}", hasher.finalize()))
}
