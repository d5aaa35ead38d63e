//! Downloading one file into the cache.
//!
//! hf-hub 0.5's sync API does the metadata request (`Api::metadata`: `GET` with
//! `Range: bytes=0-0`, following only relative redirects, then `x-repo-commit`,
//! `x-linked-etag`/`etag`, and the size from `Content-Range`, asked of the redirect target when
//! the file lives on the LFS CDN) and names the cache folder (`Repo::folder_name`). Its
//! `ApiRepo::get`/`download` are replaced by the transfer below, on plain ureq, because they:
//! - find cached files only through `refs/<revision>`, so a snapshot pinned by commit sha (for
//!   which huggingface_hub writes no ref) is never found;
//! - write `refs/<revision>` non-atomically, and even for a commit sha;
//! - keep `blobs/<etag>.part` after a failed transfer and later append to it even when the
//!   server ignores the `Range` header, and never check the received size nor the sha256 of LFS
//!   files, so a cut or corrupt transfer can become a blob;
//! - leave `blobs/<etag>.lock` files among the blobs.
//!
//! Known limitations kept from hf-hub's metadata request: it has no timeout, and when the Hub
//! redirects to the CDN it sends the token there too.
use crate::layout::{create_parent, CachedRepo, Partial};
use crate::local::sha256_file;
use crate::reference::is_commit_sha;
use crate::{DownloadCause, DownloadFailure, HubConfig, HubError};
use hf_hub::api::sync::{ApiBuilder, ApiError};
use hf_hub::Cache;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;
use ureq::config::RedirectAuthHeaders;
use ureq::Agent;

/// Downloads `file` at the `pinned` commit (at the requested revision while no commit is known),
/// stores it as `blobs/<etag>` (unless already there) linked from `snapshots/<commit>/<file>`,
/// and returns the commit and that link.
pub(crate) fn fetch(
    config: &HubConfig,
    repo: &CachedRepo,
    pinned: Option<&str>,
    file: &str,
) -> Result<(String, PathBuf), HubError> {
    let url_at = |revision: &str| {
        let at = hf_hub::Repo::with_revision(repo.repo_id.to_owned(), repo.kind, revision.into());
        let (endpoint, repo_url) = (&config.endpoint, at.url());
        format!("{endpoint}/{repo_url}/resolve/{}/{file}", at.url_revision())
    };
    let url = url_at(pinned.unwrap_or(repo.revision));
    let fail = |url: &str, cause| {
        HubError::Download(Box::new(DownloadFailure {
            repo: repo.repo_id.to_owned(),
            revision: repo.revision.to_owned(),
            file: file.to_owned(),
            url: url.to_owned(),
            path: repo.looked_for(pinned, file),
            cause,
        }))
    };
    let metadata = ApiBuilder::from_cache(Cache::new(config.cache_dir.clone()))
        .with_endpoint(config.endpoint.clone())
        .with_token(config.token.clone())
        .build()
        .and_then(|api| api.metadata(&url));
    let metadata = match metadata {
        Err(ApiError::RequestError(error)) if matches!(*error, ureq::Error::StatusCode(404)) => {
            return Err(HubError::RemoteNotFound {
                repo: repo.repo_id.to_owned(),
                revision: repo.revision.to_owned(),
                file: file.to_owned(),
                url,
                path: repo.looked_for(pinned, file),
            })
        }
        metadata => metadata.map_err(|error| fail(&url, error.into()))?,
    };
    let headers = || -> Result<(String, String), DownloadCause> {
        let commit = match pinned {
            Some(commit) => commit.to_owned(),
            None => checked("x-repo-commit", metadata.commit_hash(), is_commit_sha)?,
        };
        // hf-hub removed the quotes; huggingface_hub also drops the weak-validator prefix.
        let etag = checked("etag", metadata.etag().trim_start_matches("W/"), |etag| {
            !etag.is_empty()
                && etag
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })?;
        Ok((commit, etag))
    };
    let (commit, etag) = headers().map_err(|cause| fail(&url, cause))?;
    // The body is fetched at the commit too, so that a branch moving meanwhile cannot mix commits.
    let url = url_at(&commit);
    let blob = repo.dir.join("blobs").join(&etag);
    let pointer = repo.snapshot(&commit).join(file);
    let stored = if blob.exists() {
        Ok(())
    } else {
        transfer(config, &url, metadata.size() as u64, &etag, &blob)
    };
    stored
        .and_then(|()| {
            link(&blob, file, &pointer).map_err(|source| DownloadCause::Write {
                path: pointer.clone(),
                source,
            })
        })
        .map_err(|cause| fail(&url, cause))?;
    Ok((commit, pointer))
}

/// Header values become path components, so they are checked before use.
fn checked(
    header: &'static str,
    value: &str,
    valid: impl Fn(&str) -> bool,
) -> Result<String, DownloadCause> {
    if valid(value) {
        Ok(value.to_owned())
    } else {
        Err(DownloadCause::BadHeader {
            header,
            value: value.to_owned(),
        })
    }
}

/// `GET`s `url` into a temporary file next to `blob`, checks its size and, for LFS files
/// (64-hex etag), its sha256, then renames it into place. Redirects are followed; the token is
/// kept only for those to the same host that do not downgrade to http.
fn transfer(
    config: &HubConfig,
    url: &str,
    size: u64,
    etag: &str,
    blob: &Path,
) -> Result<(), DownloadCause> {
    let agent: Agent = Agent::config_builder()
        .redirect_auth_headers(RedirectAuthHeaders::SameHost)
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_per_read(Some(Duration::from_secs(60)))
        .build()
        .into();
    let mut request = agent.get(url);
    if let Some(token) = &config.token {
        request = request.header("Authorization", format!("Bearer {token}"));
    }
    let response = request.call()?;
    let partial = Partial::next_to(blob);
    let write = |source| DownloadCause::Write {
        path: partial.0.clone(),
        source,
    };
    create_parent(blob).map_err(write)?;
    let mut out = File::create_new(&partial.0).map_err(write)?;
    let got = io::copy(&mut response.into_body().into_reader(), &mut out)
        .map_err(DownloadCause::Transfer)?;
    if got != size {
        return Err(DownloadCause::Size {
            expected: size,
            got,
        });
    }
    if etag.len() == 64 && etag.bytes().all(|b| b.is_ascii_hexdigit()) {
        let got = sha256_file(&partial.0).map_err(write)?;
        if got != etag {
            return Err(DownloadCause::Checksum {
                expected: etag.to_owned(),
                got,
            });
        }
    }
    fs::rename(&partial.0, blob).map_err(write)
}

/// Makes `pointer` (`snapshots/<commit>/<file>`) point at `blob`, replacing it atomically.
fn link(blob: &Path, file: &str, pointer: &Path) -> io::Result<()> {
    create_parent(pointer)?;
    let partial = Partial::next_to(pointer);
    place(blob, file, &partial.0)?;
    fs::rename(&partial.0, pointer)
}

/// A relative symlink `../../blobs/<etag>` (one more `../` per directory in `file`), like
/// huggingface_hub.
#[cfg(unix)]
fn place(blob: &Path, file: &str, at: &Path) -> io::Result<()> {
    let up = "../".repeat(2 + file.matches('/').count());
    let etag = blob.file_name().unwrap_or_default();
    std::os::unix::fs::symlink(Path::new(&up).join("blobs").join(etag), at)
}

/// A copy, as huggingface_hub does where symlinks are unavailable.
#[cfg(not(unix))]
fn place(blob: &Path, _file: &str, at: &Path) -> io::Result<()> {
    fs::copy(blob, at).map(drop)
}
