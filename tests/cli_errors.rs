//! Bad input gives one clear error line and a non-zero exit, never a panic (issue #2).
mod common;

use common::*;
use std::path::Path;

fn damaged_copy(name: &str, damage: impl FnOnce(&Path)) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let src = repo_root().join("tests/fixtures/tiny").join(name);
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
    }
    damage(dir.path());
    dir
}

fn edit_config(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join("config.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(&path, v.to_string()).unwrap();
}

fn inspect(dir: &Path) -> std::process::Output {
    moebench(&["inspect", dir.to_str().unwrap(), "--device", "cpu"])
}

#[test]
fn missing_model_offline() {
    let out = moebench(&["inspect", "nobody/no-such-model", "--offline"]);
    assert_clean_failure(&out, "nobody/no-such-model");
    assert!(stderr(&out).contains("models--nobody--no-such-model"));
}

#[test]
fn truncated_safetensors() {
    let dir = damaged_copy("llama", |d| {
        let f = d.join("model.safetensors");
        let bytes = std::fs::read(&f).unwrap();
        std::fs::write(&f, &bytes[..bytes.len() - 1000]).unwrap();
    });
    assert_clean_failure(&inspect(dir.path()), "model.safetensors");
}

#[test]
fn corrupted_safetensors_header() {
    let dir = damaged_copy("llama", |d| {
        std::fs::write(
            d.join("model.safetensors"),
            b"\x10\0\0\0\0\0\0\0not json at all!",
        )
        .unwrap()
    });
    assert_clean_failure(&inspect(dir.path()), "corrupt or truncated safetensors");
}

#[test]
fn unsupported_family() {
    let dir = damaged_copy("llama", |d| {
        edit_config(d, |v| v["model_type"] = "bloom".into())
    });
    assert_clean_failure(&inspect(dir.path()), "unsupported model family `bloom`");
}

#[test]
fn shape_mismatch_between_config_and_weights() {
    let dir = damaged_copy("mixtral", |d| {
        edit_config(d, |v| v["hidden_size"] = 48.into())
    });
    assert_clean_failure(&inspect(dir.path()), "shape mismatch");
}

#[test]
fn bad_device_and_dtype() {
    let dir = repo_root().join("tests/fixtures/tiny/llama");
    assert_clean_failure(
        &moebench(&["inspect", dir.to_str().unwrap(), "--device", "tpu"]),
        "unknown device `tpu`",
    );
    assert_clean_failure(
        &moebench(&["inspect", dir.to_str().unwrap(), "--dtype", "int3"]),
        "unknown dtype `int3`",
    );
}

#[test]
fn inspect_tiny_moe_reports_active_parameters() {
    let dir = repo_root().join("tests/fixtures/tiny/mixtral");
    let out = moebench(&[
        "inspect",
        dir.to_str().unwrap(),
        "--device",
        "cpu",
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["experts"], 4);
    assert!(
        v["params"]["active_per_token"].as_f64().unwrap() < v["params"]["total"].as_f64().unwrap()
    );
}
