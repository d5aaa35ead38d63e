//! Typed errors. Every variant that concerns a repo names the repo, the revision, the file and the
//! exact path that was looked for, and says how to fix it, so that the CLI can print one line.
use std::fmt;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error(
        "cannot locate the Hugging Face cache: none of HF_HUB_CACHE, HF_HOME, XDG_CACHE_HOME and \
         HOME is set (fix: set HF_HUB_CACHE or HF_HOME, or pass --cache-dir)"
    )]
    NoCacheDir,

    #[error(
        "invalid model or dataset reference `{input}`: {reason} (fix: use `org/name`, \
         `org/name@revision`, or a local directory such as `./path` or `/path`)"
    )]
    InvalidRef { input: String, reason: &'static str },

    #[error(
        "{repo}@{revision}: `{file}` is not in the Hugging Face cache ({missing}; looked for {}) \
         (fix: run `moebench prepare` with network access, or unset HF_HUB_OFFLINE so that it is \
         downloaded)",
        path.display()
    )]
    NotCached {
        repo: String,
        revision: String,
        file: String,
        missing: Missing,
        path: PathBuf,
    },

    #[error(
        "local directory {}: `{file}` not found at {} (fix: pass a directory that contains it, \
         e.g. the output of `save_pretrained`, or an `org/name` Hub id)",
        dir.display(), path.display()
    )]
    LocalFileMissing {
        dir: PathBuf,
        file: String,
        path: PathBuf,
    },

    #[error(
        "{repo}@{revision}: `{file}` is not in the cache (looked for {}) and {url} answered \
         404 Not Found (fix: check the repo id, the revision and the file name)",
        path.display()
    )]
    RemoteNotFound {
        repo: String,
        revision: String,
        file: String,
        url: String,
        path: PathBuf,
    },

    #[error(transparent)]
    Download(Box<DownloadFailure>),

    #[error("I/O error on {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Which part of the cache layout `<repo>/refs/<revision>` → `<repo>/snapshots/<commit>/<file>`
/// was absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    /// No `models--org--name` (or `datasets--…`) folder at all.
    Repo,
    /// No `refs/<revision>` file for a branch or tag.
    Ref,
    /// No `snapshots/<commit>` folder.
    Snapshot,
    /// The snapshot exists but lacks the file.
    File,
}

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Missing::Repo => "the repo was never downloaded",
            Missing::Ref => "no ref for this revision",
            Missing::Snapshot => "no snapshot for this commit",
            Missing::File => "the snapshot lacks this file",
        })
    }
}

/// A file missing from the cache could not be downloaded; nothing of it was kept.
#[derive(Debug, thiserror::Error)]
#[error(
    "{repo}@{revision}: `{file}` is not in the cache (looked for {}) and downloading it from \
     {url} failed: {cause} (fix: check the network and HF_ENDPOINT; HTTP 401/403 means a \
     private or gated repo: accept its terms on the Hub and set HF_TOKEN; no partial file was \
     kept, so retrying is safe)",
    path.display()
)]
pub struct DownloadFailure {
    pub repo: String,
    pub revision: String,
    pub file: String,
    pub url: String,
    pub path: PathBuf,
    pub cause: DownloadCause,
}

/// Why a download failed.
#[derive(Debug, thiserror::Error)]
pub enum DownloadCause {
    #[error("metadata request: {0}")]
    Metadata(#[from] hf_hub::api::sync::ApiError),
    #[error("{0}")]
    Http(#[from] ureq::Error),
    #[error("transfer: {0}")]
    Transfer(std::io::Error),
    #[error("server sent an invalid `{header}` header: `{value}`")]
    BadHeader { header: &'static str, value: String },
    #[error("received {got} bytes, expected {expected}")]
    Size { expected: u64, got: u64 },
    #[error("content sha256 {got} differs from the etag {expected}")]
    Checksum { expected: String, got: String },
    #[error("writing {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}
