//! Resolution from a cache laid out by hand, as huggingface_hub lays it out.
#![cfg(unix)]
use moebench_hub::{
    local_fingerprint, resolve, resolve_dataset, HubConfig, HubError, Missing, ModelRef,
};
use std::fs;
use std::path::{Path, PathBuf};

const SHA: &str = "1111111111111111111111111111111111111111";
const PINNED: &str = "2222222222222222222222222222222222222222";
const UNKNOWN: &str = "3333333333333333333333333333333333333333";

fn offline(cache: &Path) -> HubConfig {
    HubConfig {
        cache_dir: cache.to_owned(),
        offline: true,
        token: None,
        // Never contacted: offline resolution must not touch the network.
        endpoint: "http://127.0.0.1:9".to_owned(),
    }
}

fn model(reference: &str) -> ModelRef {
    reference.parse().unwrap()
}

/// Stores `content` as `blobs/<etag>` and links `snapshots/<commit>/<file>` to it.
fn put(repo: &Path, commit: &str, file: &str, content: &str) -> PathBuf {
    let etag = format!("etag{}", content.len());
    fs::create_dir_all(repo.join("blobs")).unwrap();
    fs::write(repo.join("blobs").join(&etag), content).unwrap();
    let pointer = repo.join("snapshots").join(commit).join(file);
    fs::create_dir_all(pointer.parent().unwrap()).unwrap();
    let up = "../".repeat(2 + file.matches('/').count());
    std::os::unix::fs::symlink(format!("{up}blobs/{etag}"), &pointer).unwrap();
    pointer
}

fn set_ref(repo: &Path, revision: &str, commit: &str) {
    fs::create_dir_all(repo.join("refs")).unwrap();
    // huggingface_hub writes no newline; tolerate one anyway.
    fs::write(repo.join("refs").join(revision), format!("{commit}\n")).unwrap();
}

/// A cache with `org/tiny`: `main` → SHA (config + weights), and PINNED reachable only by sha.
fn tiny_cache() -> (tempfile::TempDir, PathBuf) {
    let cache = tempfile::tempdir().unwrap();
    let repo = cache.path().join("models--org--tiny");
    put(&repo, SHA, "config.json", "{\"model_type\": \"tiny\"}");
    put(&repo, SHA, "model.safetensors", "weights");
    put(&repo, PINNED, "config.json", "{}");
    set_ref(&repo, "main", SHA);
    (cache, repo)
}

fn assert_mentions(error: &HubError, parts: &[&str]) {
    let message = error.to_string();
    for part in parts {
        assert!(message.contains(part), "`{part}` missing from: {message}");
    }
}

#[test]
fn branch_resolves_through_ref_and_symlinked_blobs() {
    let (cache, repo) = tiny_cache();
    let resolved = resolve(
        &offline(cache.path()),
        &model("org/tiny"),
        &["config.json", "model.safetensors"],
        &["tokenizer.json"],
    )
    .unwrap();
    let snapshot = repo.join("snapshots").join(SHA);
    assert_eq!(resolved.repo_id, "org/tiny");
    assert_eq!(resolved.revision.as_deref(), Some("main"));
    assert_eq!(resolved.commit.as_deref(), Some(SHA));
    assert_eq!(resolved.dir, snapshot);
    assert_eq!(
        resolved.files.keys().collect::<Vec<_>>(),
        ["config.json", "model.safetensors"]
    );
    assert_eq!(
        resolved.files["model.safetensors"],
        snapshot.join("model.safetensors")
    );
    assert_eq!(
        fs::read_to_string(&resolved.files["model.safetensors"]).unwrap(),
        "weights"
    );
    assert_eq!(
        resolved.list("*.safetensors").unwrap(),
        [snapshot.join("model.safetensors")]
    );
}

#[test]
fn commit_sha_revision_needs_no_ref() {
    let (cache, repo) = tiny_cache();
    assert!(!repo.join("refs").join(PINNED).exists());
    let resolved = resolve(
        &offline(cache.path()),
        &model(&format!("org/tiny@{PINNED}")),
        &["config.json"],
        &[],
    )
    .unwrap();
    assert_eq!(resolved.revision.as_deref(), Some(PINNED));
    assert_eq!(resolved.commit.as_deref(), Some(PINNED));
    assert_eq!(
        fs::read_to_string(&resolved.files["config.json"]).unwrap(),
        "{}"
    );
}

#[test]
fn missing_model() {
    let (cache, _) = tiny_cache();
    let error = resolve(
        &offline(cache.path()),
        &model("org/absent"),
        &["config.json"],
        &[],
    )
    .unwrap_err();
    let path = cache.path().join("models--org--absent/refs/main");
    assert!(matches!(
        error,
        HubError::NotCached {
            missing: Missing::Repo,
            ..
        }
    ));
    assert_mentions(
        &error,
        &[
            "org/absent",
            "main",
            "config.json",
            path.to_str().unwrap(),
            "moebench prepare",
            "HF_HUB_OFFLINE",
        ],
    );
}

#[test]
fn missing_ref() {
    let (cache, repo) = tiny_cache();
    let error = resolve(
        &offline(cache.path()),
        &model("org/tiny@dev"),
        &["config.json"],
        &[],
    )
    .unwrap_err();
    let path = repo.join("refs/dev");
    assert!(matches!(
        error,
        HubError::NotCached {
            missing: Missing::Ref,
            ..
        }
    ));
    assert_mentions(
        &error,
        &["org/tiny", "dev", "config.json", path.to_str().unwrap()],
    );
}

#[test]
fn missing_snapshot() {
    let (cache, repo) = tiny_cache();
    let reference = model(&format!("org/tiny@{UNKNOWN}"));
    let error = resolve(&offline(cache.path()), &reference, &["config.json"], &[]).unwrap_err();
    let path = repo.join("snapshots").join(UNKNOWN).join("config.json");
    assert!(matches!(
        error,
        HubError::NotCached {
            missing: Missing::Snapshot,
            ..
        }
    ));
    assert_mentions(
        &error,
        &["org/tiny", UNKNOWN, "config.json", path.to_str().unwrap()],
    );
}

#[test]
fn missing_file_and_dangling_link() {
    let (cache, repo) = tiny_cache();
    let config = offline(cache.path());
    let error = resolve(&config, &model("org/tiny"), &["tokenizer.json"], &[]).unwrap_err();
    let path = repo.join("snapshots").join(SHA).join("tokenizer.json");
    assert!(matches!(
        error,
        HubError::NotCached {
            missing: Missing::File,
            ..
        }
    ));
    assert_mentions(
        &error,
        &["org/tiny", "main", "tokenizer.json", path.to_str().unwrap()],
    );

    // A link whose blob was deleted counts as missing.
    fs::remove_file(repo.join("blobs/etag7")).unwrap();
    let error = resolve(&config, &model("org/tiny"), &["model.safetensors"], &[]).unwrap_err();
    assert!(matches!(
        error,
        HubError::NotCached {
            missing: Missing::File,
            ..
        }
    ));
}

#[test]
fn dataset_files_are_listed_by_pattern() {
    let cache = tempfile::tempdir().unwrap();
    let repo = cache.path().join("datasets--org--data");
    let test = put(&repo, SHA, "data/test-00000-of-00001.parquet", "test rows");
    let train = put(
        &repo,
        SHA,
        "data/train-00000-of-00002.parquet",
        "train rows",
    );
    put(&repo, SHA, "README.md", "readme");
    set_ref(&repo, "main", SHA);
    let resolved = resolve_dataset(
        &offline(cache.path()),
        &model("org/data"),
        &["README.md"],
        &[],
    )
    .unwrap();
    assert_eq!(
        resolved.list("data/*.parquet").unwrap(),
        [test.clone(), train]
    );
    assert_eq!(resolved.list("data/test-*").unwrap(), [test]);
    // Models and datasets have separate folders.
    let error = resolve(
        &offline(cache.path()),
        &model("org/data"),
        &["README.md"],
        &[],
    )
    .unwrap_err();
    assert_mentions(&error, &["models--org--data"]);
}

#[test]
fn local_directory() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("config.json"), "{}").unwrap();
    let local = ModelRef::Local(dir.path().to_owned());
    let config = offline(dir.path());
    let resolved = resolve(&config, &local, &["config.json"], &["tokenizer.json"]).unwrap();
    assert_eq!((resolved.revision, resolved.commit), (None, None));
    assert_eq!(resolved.dir, dir.path());
    assert_eq!(
        resolved.files["config.json"],
        dir.path().join("config.json")
    );
    assert!(!resolved.files.contains_key("tokenizer.json"));

    let error = resolve(&config, &local, &["model.safetensors"], &[]).unwrap_err();
    let path = dir.path().join("model.safetensors");
    assert!(matches!(error, HubError::LocalFileMissing { .. }));
    assert_mentions(&error, &["model.safetensors", path.to_str().unwrap()]);
}

#[test]
fn local_fingerprint_hashes_listed_files_only() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, content: &str| fs::write(dir.path().join(name), content).unwrap();
    write("config.json", "{}");
    write("model-00001-of-00002.safetensors", "a");
    write("model-00002-of-00002.safetensors", "b");
    let first = local_fingerprint(dir.path()).unwrap();
    assert_eq!(first.len(), 64);
    assert_eq!(local_fingerprint(dir.path()).unwrap(), first);

    write("README.md", "not part of the model");
    assert_eq!(local_fingerprint(dir.path()).unwrap(), first);

    // Same size, same name, different bytes.
    write("model-00002-of-00002.safetensors", "c");
    let changed = local_fingerprint(dir.path()).unwrap();
    assert_ne!(changed, first);
    write("tokenizer.json", "{}");
    assert_ne!(local_fingerprint(dir.path()).unwrap(), changed);
}
