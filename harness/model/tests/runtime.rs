//! Runtime behaviour beyond parity: save/reload round trips, bad checkpoints, cost accounting.
use moebench_model::cost::{bytes_per_decode_token, flops_per_token, param_counts};
use moebench_model::save::save_pretrained;
use moebench_model::{Model, ModelError};
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

fn tiny(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/tiny")
        .join(name)
}

fn load(dir: &Path) -> Result<Model, ModelError> {
    Model::load(dir, Device::Cpu, Kind::Float)
}

fn logits(model: &Model) -> Tensor {
    let _g = tch::no_grad_guard();
    let ids = Tensor::from_slice(&[3i64, 17, 42, 5, 99, 1, 64]).view([1, -1]);
    model.forward(&ids, None, None)
}

/// Copies a fixture checkpoint so a test can damage it.
fn scratch_copy(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(tiny(name).join(f), dir.path().join(f)).unwrap();
    }
    dir
}

#[test]
fn save_pretrained_round_trips_every_family() {
    for name in [
        "llama",
        "llama3",
        "qwen2",
        "qwen3",
        "mixtral",
        "qwen2_moe",
        "qwen3_moe",
        "olmoe",
    ] {
        let model = load(&tiny(name)).unwrap();
        let out = tempfile::tempdir().unwrap();
        let dir = out.path().join("saved");
        save_pretrained(&model, Some(&tiny(name)), &dir).unwrap();
        let reloaded = load(&dir).unwrap();
        let d = f64::try_from((logits(&model) - logits(&reloaded)).abs().max()).unwrap();
        assert_eq!(d, 0.0, "{name}: reloaded model differs");
        assert!(dir.join("generation_config.json").exists());
    }
}

#[test]
fn truncated_safetensors_is_a_clear_error() {
    let dir = scratch_copy("llama");
    let f = dir.path().join("model.safetensors");
    let bytes = std::fs::read(&f).unwrap();
    std::fs::write(&f, &bytes[..bytes.len() / 2]).unwrap();
    let err = load(dir.path()).unwrap_err();
    assert!(matches!(err, ModelError::Safetensors { .. }), "{err}");
    assert!(err.to_string().contains("model.safetensors"), "{err}");
}

#[test]
fn config_that_does_not_match_weights_is_a_shape_error() {
    let dir = scratch_copy("llama");
    let cfg = dir.path().join("config.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg).unwrap()).unwrap();
    v["intermediate_size"] = serde_json::json!(96);
    std::fs::write(&cfg, v.to_string()).unwrap();
    let err = load(dir.path()).unwrap_err().to_string();
    assert!(
        err.contains("shape mismatch") && err.contains("mlp.gate_proj"),
        "{err}"
    );
}

#[test]
fn unsupported_family_names_the_model_type() {
    let dir = scratch_copy("llama");
    let cfg = dir.path().join("config.json");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("\"llama\"", "\"gpt2\"");
    std::fs::write(&cfg, text).unwrap();
    let err = load(dir.path()).unwrap_err().to_string();
    assert!(err.contains("unsupported model family `gpt2`"), "{err}");
}

#[test]
fn missing_weights_file_is_named() {
    let dir = scratch_copy("llama");
    std::fs::remove_file(dir.path().join("model.safetensors")).unwrap();
    let err = load(dir.path()).unwrap_err().to_string();
    assert!(err.contains("model.safetensors"), "{err}");
}

/// Hand count for tiny mixtral: H=32, 4 heads × 8 (Hq=32), 2 KV heads (Hkv=16), 2 layers,
/// 4 experts of F=64, top-2, V=128.
#[test]
fn flops_and_params_match_a_hand_count() {
    let model = load(&tiny("mixtral")).unwrap();
    let (h, hq, hkv, f, n, v, layers) = (32.0, 32.0, 16.0, 64.0, 4.0, 128.0, 2.0);
    let ctx = 10.0;
    let per_layer = 2.0 * h * (hq + 2.0 * hkv) + 2.0 * hq * h // projections
        + 4.0 * ctx * hq // scores + values
        + 2.0 * h * n // router
        + 2.0 * 6.0 * h * f; // two SwiGLU experts
    let expected = layers * per_layer + 2.0 * h * v;
    let got = flops_per_token(&model, ctx as usize, None);
    assert_eq!(got.total, expected);
    // Measured routing: layer 0 used 1.5 experts per token, layer 1 used 3.
    let got = flops_per_token(&model, ctx as usize, Some(&[1.5, 3.0]));
    assert_eq!(got.experts, (1.5 + 3.0) * 6.0 * h * f);

    let p = param_counts(&model, None);
    let attn = h * hq + 2.0 * h * hkv + hq * h;
    let expert = 3.0 * h * f;
    let total = 2.0 * v * h + h + layers * (attn + 2.0 * h + n * h + n * expert);
    assert_eq!(p.total as f64, total);
    assert_eq!(p.active_per_token, total - layers * (n - 2.0) * expert);
}

/// Hand count of the bytes one decode token reads on tiny mixtral in f32 (same shapes as above).
#[test]
fn decode_bytes_match_a_hand_count() {
    let model = load(&tiny("mixtral")).unwrap();
    let (h, hq, hkv, f, n, v, layers) = (32.0, 32.0, 16.0, 64.0, 4.0, 128.0, 2.0);
    let ctx = 10.0;
    let per_layer = (h * hq + 2.0 * h * hkv + hq * h) // attention weights
        + 2.0 * hkv * ctx // K and V of the earlier positions
        + 2.0 * h // two norms
        + n * h // router
        + 2.0 * 3.0 * h * f; // the two experts a token uses
    let expected = 4.0 * (layers * per_layer + h + h + v * h);
    let got = bytes_per_decode_token(&model, ctx as usize, None);
    assert_eq!(got.total, expected);
    let got = bytes_per_decode_token(&model, ctx as usize, Some(&[1.0, 4.0]));
    assert_eq!(got.experts, 4.0 * 5.0 * 3.0 * h * f);
}

/// Running the blocks one at a time from `embed_tokens` and `block_inputs` (what layer-sequential
/// calibration does) gives the final hidden states of `forward_hidden` bit for bit, with left
/// padding, for dense and MoE families.
#[test]
fn blocks_one_at_a_time_equal_the_whole_forward() {
    let _g = tch::no_grad_guard();
    let ids = Tensor::from_slice(&[0i64, 0, 3, 17, 42, 5, 99, 1, 64, 7, 8, 9]).view([2, -1]);
    let mask = Tensor::from_slice(&[0i64, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]).view([2, -1]);
    for name in ["llama", "qwen3", "mixtral", "qwen2_moe"] {
        let model = load(&tiny(name)).unwrap();
        let whole = model.forward_hidden(&ids, Some(&mask), None, &mut Default::default());
        let inputs = model.block_inputs(&ids, Some(&mask), 0);
        let mut x = model.embed_tokens(&ids);
        for l in 0..model.num_layers() {
            x = model.forward_block(l, x, &inputs, None, &mut Default::default());
        }
        assert!(model.norm.forward(&x).equal(&whole), "{name}");
    }
}

/// Retaining experts is the one way a model's expert count changes: every list is checked
/// before any layer changes, and `config.moe.num_experts` follows the layers (so a saved
/// checkpoint reloads).
#[test]
fn retaining_experts_keeps_the_config_in_step() {
    let mut model = load(&tiny("mixtral")).unwrap();
    let layers: Vec<usize> = model.moe_layers().map(|(l, _)| l).collect();
    let n = model.moe_layers().next().unwrap().1.num_experts();
    let bad: Vec<(usize, Vec<i64>)> = vec![(layers[0], vec![0, 1]), (layers[1], vec![0, 0])];
    let err = model.retain_experts(&bad).unwrap_err().to_string();
    assert!(err.contains("distinct indices"), "{err}");
    assert!(
        model.moe_layers().all(|(_, m)| m.num_experts() == n),
        "a rejected list changes no layer"
    );
    let keep: Vec<(usize, Vec<i64>)> = layers.iter().map(|&l| (l, vec![2, 0])).collect();
    model.retain_experts(&keep).unwrap();
    assert_eq!(model.config.moe.as_ref().unwrap().num_experts, 2);
    let dir = tempfile::tempdir().unwrap();
    save_pretrained(&model, Some(&tiny("mixtral")), dir.path()).unwrap();
    let reloaded = load(dir.path()).unwrap();
    let d = f64::try_from((logits(&model) - logits(&reloaded)).abs().max()).unwrap();
    assert_eq!(d, 0.0);
}
