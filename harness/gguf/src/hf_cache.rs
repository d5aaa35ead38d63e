//! Installing a checkpoint directory into a huggingface_hub cache, so that offline loaders
//! (`hf_hub::Cache`, transformers with `HF_HUB_OFFLINE=1`) find it as if it had been downloaded.
//!
//! The layout is huggingface_hub's (`file_download.py`; read by hf-hub's `Cache`):
//!
//! ```text
//! <hub_cache>/models--Org--Name/
//!     blobs/<sha256 of the file>
//!     snapshots/<revision>/<file>   symlink to ../../blobs/<sha256>
//!     refs/main                     "<revision>", no newline
//! ```
//!
//! The hub names a blob after its etag, which for LFS files is the content's sha256; here every
//! blob is named after its sha256. Every step is atomic, so a crash or a concurrent install leaves
//! either nothing or a complete entry: blobs are copied to `<sha256>.incomplete` and renamed (as
//! huggingface_hub does), a snapshot is assembled in a temporary directory and renamed into place,
//! and `refs/main` is written to a temporary file and renamed. A snapshot that already holds every
//! file is left alone. Symlinks make this Unix-only, as the rest of the workspace is.

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::convert::{convert_llama_gguf, OUTPUT_FILES};
use crate::error::{Error, IoContext, Result};

/// The hub repository the packaged SmolLM2 GGUF is a quantisation of.
pub const SMOLLM2_REPO_ID: &str = "HuggingFaceTB/SmolLM2-135M-Instruct";

/// Prefix of the hashed input that names a conversion's revision. Bump the version when the
/// conversion's output changes, so that caches holding the old output are not reused.
const REVISION_DOMAIN: &[u8] = b"moebench-gguf-convert-v1\0";

/// A converted model, installed in a hub cache.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreparedModel {
    /// `"HuggingFaceTB/SmolLM2-135M-Instruct"`.
    pub repo_id: String,
    /// The 40-hex revision of the snapshot (see [`conversion_revision`]); `refs/main` holds it.
    pub revision: String,
    /// `<hub_cache>/models--HuggingFaceTB--SmolLM2-135M-Instruct/snapshots/<revision>`.
    pub snapshot_dir: PathBuf,
}

/// Converts the SmolLM2 GGUF at `gguf_path` and installs the result into `hub_cache` (the
/// directory that holds the `models--*` folders, e.g. `$HF_HOME/hub`) under
/// [`SMOLLM2_REPO_ID`].
///
/// The revision is derived from the GGUF's content ([`conversion_revision`]), so the same file
/// always lands in the same snapshot, and an existing complete snapshot is reused without
/// converting again. The conversion is written to a temporary directory inside `hub_cache`, which
/// is removed afterwards.
pub fn prepare_smollm2(gguf_path: &Path, hub_cache: &Path) -> Result<PreparedModel> {
    let revision = conversion_revision(&sha256_file(gguf_path)?);
    let repo_dir = repo_dir(hub_cache, SMOLLM2_REPO_ID)?;
    let snapshot_dir = repo_dir.join("snapshots").join(&revision);
    if is_complete(&snapshot_dir, OUTPUT_FILES) {
        write_ref(&repo_dir, &revision)?;
    } else {
        fs::create_dir_all(hub_cache).io_context(hub_cache, "creating directory")?;
        let work =
            RemoveOnDrop(hub_cache.join(format!(".moebench-convert-{}.tmp", std::process::id())));
        remove_dir_if_present(&work.0)?;
        convert_llama_gguf(gguf_path, &work.0)?;
        install_into_hub_cache(&work.0, hub_cache, SMOLLM2_REPO_ID, &revision)?;
    }
    Ok(PreparedModel {
        repo_id: SMOLLM2_REPO_ID.into(),
        revision,
        snapshot_dir,
    })
}

/// The revision under which a conversion of a GGUF is installed: the first 40 hex digits of
/// `sha256("moebench-gguf-convert-v1\0" + gguf_sha256_hex)`, where `gguf_sha256_hex` is the
/// GGUF file's sha256 as 64 lowercase hex digits. From a shell:
///
/// ```sh
/// printf 'moebench-gguf-convert-v1\0%s' "$(sha256sum model.gguf | cut -c1-64)" | sha256sum | cut -c1-40
/// ```
///
/// It looks like a git commit id, which is what hub tools expect a revision to be, and is
/// deterministic, so every machine converting the same file agrees on it.
pub fn conversion_revision(gguf_sha256_hex: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(REVISION_DOMAIN);
    hasher.update(gguf_sha256_hex.as_bytes());
    let mut revision = hex(&hasher.finalize());
    revision.truncate(40);
    revision
}

/// Installs every file of the flat directory `src_dir` as revision `revision_sha` (40 lowercase
/// hex digits) of `repo_id` (`"Org/Name"`) in `hub_cache`, and points `refs/main` at it. Returns
/// the snapshot directory. Does nothing but check `refs/main` if the snapshot already holds every
/// file of `src_dir`.
pub fn install_into_hub_cache(
    src_dir: &Path,
    hub_cache: &Path,
    repo_id: &str,
    revision_sha: &str,
) -> Result<PathBuf> {
    if revision_sha.len() != 40
        || !revision_sha
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return Err(Error::InvalidArgument(format!(
            "revision {revision_sha:?} is not 40 lowercase hex digits"
        )));
    }
    let repo_dir = repo_dir(hub_cache, repo_id)?;
    let snapshot_dir = repo_dir.join("snapshots").join(revision_sha);
    let files = list_files(src_dir)?;
    if !is_complete(&snapshot_dir, files.iter().map(|(name, _)| name.as_str())) {
        let blobs = repo_dir.join("blobs");
        fs::create_dir_all(&blobs).io_context(&blobs, "creating directory")?;
        let entries = files
            .iter()
            .map(|(name, path)| Ok((name.as_str(), store_blob(&blobs, path)?)))
            .collect::<Result<Vec<_>>>()?;
        publish_snapshot(&snapshot_dir, &entries)?;
    }
    write_ref(&repo_dir, revision_sha)?;
    Ok(snapshot_dir)
}

/// The sha256 of a file's content, as 64 lowercase hex digits.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file = File::open(path).io_context(path, "opening")?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0; 1 << 20];
    loop {
        match file.read(&mut buffer).io_context(path, "reading")? {
            0 => return Ok(hex(&hasher.finalize())),
            n => hasher.update(&buffer[..n]),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `<hub_cache>/models--Org--Name`, huggingface_hub's `repo_folder_name` for a model repo.
fn repo_dir(hub_cache: &Path, repo_id: &str) -> Result<PathBuf> {
    let valid_part = |part: &str| !part.is_empty() && part != "." && part != "..";
    match repo_id.split_once('/') {
        Some((org, name)) if valid_part(org) && valid_part(name) && !name.contains('/') => {
            Ok(hub_cache.join(format!("models--{org}--{name}")))
        }
        _ => Err(Error::InvalidArgument(format!(
            "repo id {repo_id:?} is not of the form \"Org/Name\""
        ))),
    }
}

/// The regular files of `dir`, by name; anything else in it is an error, as it would be dropped.
fn list_files(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).io_context(dir, "listing directory")? {
        let path = entry.io_context(dir, "listing directory")?.path();
        let name = path.file_name().and_then(|n| n.to_str()).map(str::to_owned);
        match name {
            Some(name) if path.is_file() => files.push((name, path)),
            _ => {
                return Err(Error::InvalidArgument(format!(
                    "{} is not a regular file with a UTF-8 name; only flat directories of files are installed",
                    path.display()
                )))
            }
        }
    }
    if files.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "{} holds no files to install",
            dir.display()
        )));
    }
    files.sort();
    Ok(files)
}

/// Whether `snapshot_dir` has every named file, each resolving (through its symlink) to a file.
fn is_complete<'a>(snapshot_dir: &Path, names: impl IntoIterator<Item = &'a str>) -> bool {
    snapshot_dir.is_dir()
        && names
            .into_iter()
            .all(|name| snapshot_dir.join(name).is_file())
}

/// Copies `src` into `blobs/<sha256>` unless that blob exists; returns the sha256.
fn store_blob(blobs: &Path, src: &Path) -> Result<String> {
    let sha = sha256_file(src)?;
    let blob = blobs.join(&sha);
    if !blob.is_file() {
        let incomplete = blobs.join(format!("{sha}.incomplete"));
        fs::copy(src, &incomplete).io_context(&incomplete, "copying into")?;
        fs::rename(&incomplete, &blob).io_context(&blob, "renaming into")?;
    }
    Ok(sha)
}

/// Builds the snapshot's symlinks in a sibling temporary directory and renames it into place,
/// replacing an incomplete snapshot left by an earlier failure. If another process finished the
/// same snapshot first, its result is kept.
fn publish_snapshot(snapshot_dir: &Path, entries: &[(&str, String)]) -> Result<()> {
    let snapshots = snapshot_dir
        .parent()
        .expect("snapshot dir is snapshots/<revision>");
    let revision = snapshot_dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let staging = RemoveOnDrop(snapshots.join(format!(".{revision}.{}.tmp", std::process::id())));
    remove_dir_if_present(&staging.0)?;
    fs::create_dir_all(&staging.0).io_context(&staging.0, "creating directory")?;
    for (name, sha) in entries {
        let link = staging.0.join(name);
        symlink(Path::new("../../blobs").join(sha), &link).io_context(&link, "creating symlink")?;
    }
    remove_dir_if_present(snapshot_dir)?;
    match fs::rename(&staging.0, snapshot_dir) {
        Err(_) if is_complete(snapshot_dir, entries.iter().map(|(name, _)| *name)) => Ok(()),
        result => result.io_context(snapshot_dir, "renaming into"),
    }
}

/// Points `refs/main` at `revision`, unless it already does.
fn write_ref(repo_dir: &Path, revision: &str) -> Result<()> {
    let refs = repo_dir.join("refs");
    let main = refs.join("main");
    if fs::read_to_string(&main).is_ok_and(|current| current == revision) {
        return Ok(());
    }
    fs::create_dir_all(&refs).io_context(&refs, "creating directory")?;
    let staging = refs.join(format!(".main.{}.tmp", std::process::id()));
    fs::write(&staging, revision).io_context(&staging, "writing")?;
    fs::rename(&staging, &main).io_context(&main, "renaming into")
}

fn remove_dir_if_present(dir: &Path) -> Result<()> {
    match fs::remove_dir_all(dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e).io_context(dir, "removing"),
        _ => Ok(()),
    }
}

/// A scratch directory that is removed however the function using it returns.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        // Best effort: the directory may not exist (already renamed away, or never created).
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revision_is_domain_separated_sha256_prefix() {
        // printf 'moebench-gguf-convert-v1\0%s' "$(printf '' | sha256sum | cut -c1-64)" | sha256sum
        let empty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let revision = conversion_revision(empty);
        assert_eq!(revision.len(), 40);
        assert_eq!(revision, EMPTY_FILE_REVISION);
    }

    /// Computed with the shell command in [`conversion_revision`]'s docs, for an empty file.
    const EMPTY_FILE_REVISION: &str = "3da34b63794f9bd355fa7ac3a2b43b1b110f0396";

    #[test]
    fn repo_ids_become_folder_names() {
        let dir = repo_dir(Path::new("/c"), "HuggingFaceTB/SmolLM2-135M-Instruct").unwrap();
        assert_eq!(
            dir,
            Path::new("/c/models--HuggingFaceTB--SmolLM2-135M-Instruct")
        );
        for bad in ["noslash", "a/b/c", "/b", "a/", "../x"] {
            assert!(repo_dir(Path::new("/c"), bad).is_err(), "{bad}");
        }
    }
}
