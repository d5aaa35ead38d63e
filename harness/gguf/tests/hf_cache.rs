//! The huggingface_hub cache layout written by `install_into_hub_cache` and `prepare_smollm2`.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use moebench_gguf::convert::OUTPUT_FILES;
use moebench_gguf::hf_cache::{conversion_revision, sha256_file, SMOLLM2_REPO_ID};
use moebench_gguf::{install_into_hub_cache, prepare_smollm2, Error};

const REVISION: &str = "0123456789abcdef0123456789abcdef01234567";

fn source_dir(root: &Path) -> std::path::PathBuf {
    let src = root.join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("config.json"), "{}").unwrap();
    fs::write(src.join("weights.bin"), [1u8, 2, 3]).unwrap();
    src
}

/// Every entry under `dir`, relative, sorted: the whole layout at a glance.
fn tree(dir: &Path) -> Vec<String> {
    let mut entries = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(current) = stack.pop() {
        for entry in fs::read_dir(&current).unwrap() {
            let path = entry.unwrap().path();
            entries.push(path.strip_prefix(dir).unwrap().display().to_string());
            if path.is_dir() && !path.is_symlink() {
                stack.push(path);
            }
        }
    }
    entries.sort();
    entries
}

#[test]
fn installs_the_hub_layout() {
    let root = tempfile::tempdir().unwrap();
    let src = source_dir(root.path());
    let cache = root.path().join("hub");
    let snapshot = install_into_hub_cache(&src, &cache, "Org/Name", REVISION).unwrap();

    let repo = cache.join("models--Org--Name");
    assert_eq!(snapshot, repo.join("snapshots").join(REVISION));
    let config_sha = sha256_file(&src.join("config.json")).unwrap();
    let weights_sha = sha256_file(&src.join("weights.bin")).unwrap();
    let mut expected = vec![
        "blobs".to_string(),
        format!("blobs/{config_sha}"),
        format!("blobs/{weights_sha}"),
        "refs".into(),
        "refs/main".into(),
        "snapshots".into(),
        format!("snapshots/{REVISION}"),
        format!("snapshots/{REVISION}/config.json"),
        format!("snapshots/{REVISION}/weights.bin"),
    ];
    expected.sort();
    assert_eq!(tree(&repo), expected);

    assert_eq!(
        fs::read_to_string(repo.join("refs/main")).unwrap(),
        REVISION
    );
    for (name, sha) in [("config.json", &config_sha), ("weights.bin", &weights_sha)] {
        let link = snapshot.join(name);
        assert!(link.is_symlink());
        assert_eq!(
            fs::read_link(&link).unwrap(),
            Path::new("../../blobs").join(sha)
        );
        assert_eq!(fs::read(&link).unwrap(), fs::read(src.join(name)).unwrap());
    }
}

#[test]
fn installing_again_changes_nothing_and_repairs_a_partial_snapshot() {
    let root = tempfile::tempdir().unwrap();
    let src = source_dir(root.path());
    let cache = root.path().join("hub");
    let snapshot = install_into_hub_cache(&src, &cache, "Org/Name", REVISION).unwrap();
    let repo = cache.join("models--Org--Name");
    let before = tree(&repo);
    let inode = fs::metadata(&snapshot).unwrap().ino();

    assert_eq!(
        install_into_hub_cache(&src, &cache, "Org/Name", REVISION).unwrap(),
        snapshot
    );
    assert_eq!(tree(&repo), before);
    assert_eq!(
        fs::metadata(&snapshot).unwrap().ino(),
        inode,
        "complete snapshot was rebuilt"
    );

    fs::remove_file(snapshot.join("weights.bin")).unwrap();
    fs::write(repo.join("refs/main"), "stale").unwrap();
    install_into_hub_cache(&src, &cache, "Org/Name", REVISION).unwrap();
    assert_eq!(tree(&repo), before);
    assert_eq!(
        fs::read_to_string(repo.join("refs/main")).unwrap(),
        REVISION
    );
}

#[test]
fn bad_arguments_are_refused() {
    let root = tempfile::tempdir().unwrap();
    let src = source_dir(root.path());
    let cache = root.path().join("hub");
    for (repo, revision) in [
        ("Org/Name", "main"),
        ("Org/Name", &REVISION.to_uppercase()),
        ("no-org", REVISION),
    ] {
        let err = install_into_hub_cache(&src, &cache, repo, revision).unwrap_err();
        assert!(
            matches!(err, Error::InvalidArgument(_)),
            "{repo} {revision}: {err:?}"
        );
    }
    fs::create_dir(src.join("nested")).unwrap();
    let err = install_into_hub_cache(&src, &cache, "Org/Name", REVISION).unwrap_err();
    assert!(err.to_string().contains("only flat directories"), "{err}");
    assert!(!cache.exists());
}

#[test]
fn prepare_converts_once_under_a_content_revision() {
    let root = tempfile::tempdir().unwrap();
    let gguf = root.path().join("tiny.gguf");
    common::tiny_llama(false).write(&gguf);
    let cache = root.path().join("hub");

    let prepared = prepare_smollm2(&gguf, &cache).unwrap();
    assert_eq!(prepared.repo_id, SMOLLM2_REPO_ID);
    assert_eq!(
        prepared.revision,
        conversion_revision(&sha256_file(&gguf).unwrap())
    );
    let repo = cache.join("models--HuggingFaceTB--SmolLM2-135M-Instruct");
    assert_eq!(
        prepared.snapshot_dir,
        repo.join("snapshots").join(&prepared.revision)
    );
    for name in OUTPUT_FILES {
        assert!(prepared.snapshot_dir.join(name).is_file(), "{name}");
    }
    assert_eq!(
        fs::read_to_string(repo.join("refs/main")).unwrap(),
        prepared.revision
    );
    // Only the repository is left behind: the conversion's scratch directory is gone.
    let cache_entries: Vec<_> = fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        cache_entries,
        ["models--HuggingFaceTB--SmolLM2-135M-Instruct"]
    );

    let model = prepared.snapshot_dir.join("model.safetensors");
    let modified = fs::metadata(&model).unwrap().modified().unwrap();
    assert_eq!(prepare_smollm2(&gguf, &cache).unwrap(), prepared);
    assert_eq!(fs::metadata(&model).unwrap().modified().unwrap(), modified);
}
