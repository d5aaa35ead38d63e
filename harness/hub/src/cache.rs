//! Resolution of a [`ModelRef`] to files on disk, in huggingface_hub's cache layout:
//!
//! ```text
//! <cache>/models--org--name/            (datasets--org--name/ for datasets)
//!   refs/<branch or tag>                the commit sha it pointed to when last resolved
//!   blobs/<etag>                        file contents (sha256 for LFS files, git sha1 otherwise)
//!   snapshots/<commit>/<file>           relative symlink to ../../blobs/<etag>
//!   .no_exist/<commit>/<file>           marker: the Hub said the file does not exist
//! ```
use crate::download::fetch;
use crate::layout::{write_atomic, CachedRepo};
use crate::local::resolve_local;
use crate::reference::is_commit_sha;
use crate::{HubConfig, HubError, ModelRef};
use hf_hub::RepoType;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// The outcome of a resolution: every required file, and the optional files that exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedRepo {
    /// `org/name`, or the directory for a local model.
    pub repo_id: String,
    /// The requested revision (`main` when none was given); `None` for a local directory.
    pub revision: Option<String>,
    /// The 40-hex commit the files belong to; `None` for a local directory.
    pub commit: Option<String>,
    /// `snapshots/<commit>/`, or the local directory.
    pub dir: PathBuf,
    /// File name as requested → path to read it from.
    pub files: BTreeMap<String, PathBuf>,
}

impl ResolvedRepo {
    /// Files below [`ResolvedRepo::dir`] whose `/`-separated relative path matches `pattern`,
    /// sorted. As in huggingface_hub's `allow_patterns` (fnmatch), `*` matches any run of
    /// characters, `/` included, and `?` one character. Only what is on disk is listed: the
    /// remote repo is not asked.
    pub fn list(&self, pattern: &str) -> Result<Vec<PathBuf>, HubError> {
        let mut found = Vec::new();
        let mut pending = vec![self.dir.clone()];
        while let Some(dir) = pending.pop() {
            let io = |source| HubError::Io {
                path: dir.clone(),
                source,
            };
            for entry in fs::read_dir(&dir).map_err(io)? {
                let path = entry.map_err(io)?.path();
                if path.is_dir() {
                    pending.push(path);
                    continue;
                }
                let relative = path.strip_prefix(&self.dir).unwrap_or(&path);
                if path.is_file() && glob_match(pattern, &relative.to_string_lossy()) {
                    found.push(path);
                }
            }
        }
        found.sort();
        Ok(found)
    }
}

/// Resolves a model: the `required` files must exist, the `optional` ones are included when
/// they do. Offline, only the cache is read. Online, files missing from the cache are
/// downloaded; once the commit is known (from the ref, from a sha revision, or from the first
/// download) every file is fetched at that commit, so a snapshot never mixes commits. A branch
/// already in the cache is not re-checked against the Hub: to move to a newer commit, pass a sha
/// or delete `refs/<branch>`.
pub fn resolve(
    config: &HubConfig,
    model: &ModelRef,
    required: &[&str],
    optional: &[&str],
) -> Result<ResolvedRepo, HubError> {
    resolve_repo(config, RepoType::Model, model, required, optional)
}

/// [`resolve`] for a dataset repo (`datasets--org--name` in the cache, `/datasets/…` URLs).
pub fn resolve_dataset(
    config: &HubConfig,
    dataset: &ModelRef,
    required: &[&str],
    optional: &[&str],
) -> Result<ResolvedRepo, HubError> {
    resolve_repo(config, RepoType::Dataset, dataset, required, optional)
}

fn resolve_repo(
    config: &HubConfig,
    kind: RepoType,
    reference: &ModelRef,
    required: &[&str],
    optional: &[&str],
) -> Result<ResolvedRepo, HubError> {
    let wanted = required
        .iter()
        .map(|file| (*file, true))
        .chain(optional.iter().map(|file| (*file, false)));
    let (repo_id, revision) = match reference {
        ModelRef::Local(dir) => return resolve_local(dir, wanted),
        ModelRef::Hub { repo_id, revision } => (repo_id, revision.as_deref().unwrap_or("main")),
    };
    let repo = CachedRepo::new(config, kind, repo_id, revision);
    let mut commit = if is_commit_sha(revision) {
        Some(revision.to_owned())
    } else {
        read_ref(&repo.ref_path())?
    };
    let mut files = BTreeMap::new();
    for (file, is_required) in wanted {
        if let Some(commit) = &commit {
            let path = repo.snapshot(commit).join(file);
            if path.exists() {
                files.insert(file.to_owned(), path);
                continue;
            }
            if !is_required && repo.no_exist(commit, file).exists() {
                continue;
            }
        }
        if config.offline {
            if is_required {
                return Err(repo.not_cached(commit.as_deref(), file));
            }
            continue;
        }
        match fetch(config, &repo, commit.as_deref(), file) {
            Ok((at, path)) => {
                // Only a branch or tag missing from `refs/` starts without a commit.
                if commit.is_none() {
                    write_atomic(&repo.ref_path(), at.as_bytes())?;
                }
                files.insert(file.to_owned(), path);
                commit = Some(at);
            }
            Err(HubError::RemoteNotFound { .. }) if !is_required => {
                if let Some(commit) = &commit {
                    write_atomic(&repo.no_exist(commit, file), b"")?;
                }
            }
            Err(error) => return Err(error),
        }
    }
    let Some(commit) = commit else {
        let file = required.iter().chain(optional).next();
        return Err(repo.not_cached(None, file.unwrap_or(&"(no file requested)")));
    };
    Ok(ResolvedRepo {
        repo_id: repo_id.clone(),
        revision: Some(revision.to_owned()),
        dir: repo.snapshot(&commit),
        commit: Some(commit),
        files,
    })
}

/// The commit in `refs/<revision>`; `None` when the file is absent or does not hold a sha (it is
/// then rewritten by the next online resolution).
fn read_ref(path: &Path) -> Result<Option<String>, HubError> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text.trim().to_owned()).filter(|sha| is_commit_sha(sha))),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(HubError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

/// fnmatch without character classes: `*` matches any run (including `/`), `?` one character.
fn glob_match(pattern: &str, name: &str) -> bool {
    let (pattern, name): (Vec<char>, Vec<char>) =
        (pattern.chars().collect(), name.chars().collect());
    let (mut p, mut n) = (0, 0);
    // After a `*`: where the pattern resumes, and how much of the name the `*` has taken.
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match pattern.get(p) {
            Some('*') => {
                star = Some((p + 1, n));
                p += 1;
            }
            Some(&c) if c == '?' || c == name[n] => {
                p += 1;
                n += 1;
            }
            _ => match star {
                Some((resume, taken)) => {
                    star = Some((resume, taken + 1));
                    p = resume;
                    n = taken + 1;
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn glob() {
        assert!(glob_match("*.parquet", "data/test-00000-of-00001.parquet"));
        assert!(glob_match(
            "data/test-*",
            "data/test-00000-of-00001.parquet"
        ));
        assert!(glob_match(
            "model-?????-of-*.safetensors",
            "model-00001-of-00002.safetensors"
        ));
        assert!(glob_match("*", ""));
        assert!(glob_match("a*b*c", "axxbyyc"));
        assert!(!glob_match("a*b*c", "axxbyy"));
        assert!(!glob_match("*.json", "config.json.lock"));
        assert!(!glob_match("data/*", "other/data/x"));
    }
}
