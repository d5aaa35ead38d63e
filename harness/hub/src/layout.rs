//! huggingface_hub's cache layout for one repo, and the atomic file writes every cache update
//! goes through (a temporary file renamed into place, removed on failure).
use crate::{HubConfig, HubError, Missing};
use hf_hub::RepoType;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// One repo's folder in the cache.
pub(crate) struct CachedRepo<'a> {
    pub(crate) kind: RepoType,
    pub(crate) repo_id: &'a str,
    pub(crate) revision: &'a str,
    pub(crate) dir: PathBuf,
}

impl<'a> CachedRepo<'a> {
    pub(crate) fn new(
        config: &HubConfig,
        kind: RepoType,
        repo_id: &'a str,
        revision: &'a str,
    ) -> Self {
        let repo = hf_hub::Repo::new(repo_id.to_owned(), kind);
        Self {
            kind,
            repo_id,
            revision,
            dir: config.cache_dir.join(repo.folder_name()),
        }
    }

    pub(crate) fn ref_path(&self) -> PathBuf {
        self.dir.join("refs").join(self.revision)
    }

    pub(crate) fn snapshot(&self, commit: &str) -> PathBuf {
        self.dir.join("snapshots").join(commit)
    }

    pub(crate) fn no_exist(&self, commit: &str, file: &str) -> PathBuf {
        self.dir.join(".no_exist").join(commit).join(file)
    }

    /// Where a cache lookup of `file` looked: the snapshot file once the commit is known, else
    /// the ref.
    pub(crate) fn looked_for(&self, commit: Option<&str>, file: &str) -> PathBuf {
        commit.map_or_else(
            || self.ref_path(),
            |commit| self.snapshot(commit).join(file),
        )
    }

    pub(crate) fn not_cached(&self, commit: Option<&str>, file: &str) -> HubError {
        let missing = match commit {
            _ if !self.dir.is_dir() => Missing::Repo,
            None => Missing::Ref,
            Some(commit) if !self.snapshot(commit).is_dir() => Missing::Snapshot,
            Some(_) => Missing::File,
        };
        HubError::NotCached {
            repo: self.repo_id.to_owned(),
            revision: self.revision.to_owned(),
            file: file.to_owned(),
            missing,
            path: self.looked_for(commit, file),
        }
    }
}

/// A temporary name next to a destination; the file is removed on drop unless it was renamed
/// into place first, so that a failure never leaves half-written files behind.
pub(crate) struct Partial(pub(crate) PathBuf);

impl Partial {
    pub(crate) fn next_to(destination: &Path) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let mut name = destination.file_name().unwrap_or_default().to_owned();
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        name.push(format!(".{}-{n}.incomplete", std::process::id()));
        Self(destination.with_file_name(name))
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

pub(crate) fn create_parent(path: &Path) -> std::io::Result<()> {
    path.parent().map_or(Ok(()), fs::create_dir_all)
}

/// Writes through a temporary file and a rename, so readers see the old or the new content.
pub(crate) fn write_atomic(path: &Path, contents: &[u8]) -> Result<(), HubError> {
    let partial = Partial::next_to(path);
    create_parent(path)
        .and_then(|()| fs::write(&partial.0, contents))
        .and_then(|()| fs::rename(&partial.0, path))
        .map_err(|source| HubError::Io {
            path: path.to_owned(),
            source,
        })
}
