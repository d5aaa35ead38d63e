//! Runtime behaviour beyond parity: save/reload round trips, bad checkpoints, cost accounting.
use moebench_model::config::RouterNorm;
use moebench_model::cost::{bytes_per_decode_token, flops_per_token, param_counts};
use moebench_model::layers::Linear;
use moebench_model::moe::{MoeLayer, TopK};
use moebench_model::save::save_pretrained;
use moebench_model::{Ffn, Model, ModelError};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tch::{Device, Kind, Tensor};

/// Every tiny random-weight checkpoint in tests/fixtures/tiny (one or more per supported
/// family; `harness/eval/tests/prefix_cache.rs` checks the set against its list).
fn families() -> Vec<String> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny");
    let mut names: Vec<String> = std::fs::read_dir(root)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(names.len() >= 8, "fixtures missing: {names:?}");
    names
}

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
    for name in &families() {
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

/// A ragged batch run packed (token-wise work on real tokens only) gives the padded forward's
/// hidden states at every real position, from scratch and continuing a cached prefix, for
/// every family. Bound: 1e-5 absolute (the two runs multiply matrices of different heights,
/// which BLAS may block differently); seen: ≤ 4e-6 here, and bit-identical log-likelihoods on
/// SmolLM2's ARC-Easy at batch 8.
#[test]
fn packed_forward_equals_the_padded_rows() {
    let _g = tch::no_grad_guard();
    let ids =
        Tensor::from_slice(&[3i64, 17, 42, 5, 99, 1, 64, 7, 0, 0, 8, 0, 0, 0, 0]).view([3, 5]);
    let new_mask =
        Tensor::from_slice(&[1i64, 1, 1, 1, 1, 1, 1, 1, 0, 0, 1, 0, 0, 0, 0]).view([3, 5]);
    let prefix = Tensor::from_slice(&[11i64, 12, 13, 14])
        .view([1, 4])
        .repeat([3, 1]);
    for name in &families() {
        let model = load(&tiny(name)).unwrap();
        for past in [0, 4] {
            let cache_after_prefix = || {
                let mut cache = moebench_model::KvCache::new(model.num_layers());
                if past > 0 {
                    let _ = model.forward_hidden(
                        &prefix,
                        None,
                        Some(&mut cache),
                        &mut Default::default(),
                    );
                }
                cache
            };
            let mask = Tensor::cat(
                &[
                    Tensor::ones([3, past], (Kind::Int64, Device::Cpu)),
                    new_mask.shallow_clone(),
                ],
                1,
            );
            let (mut padded_cache, mut packed_cache) = (cache_after_prefix(), cache_after_prefix());
            let padded = model.forward_hidden(
                &ids,
                Some(&mask),
                Some(&mut padded_cache),
                &mut Default::default(),
            );
            let packed = model.forward_hidden_packed(&ids, &mask, Some(&mut packed_cache));
            let real = new_mask.reshape([-1]).nonzero().squeeze_dim(1);
            let expected = padded.flatten(0, 1).index_select(0, &real);
            assert_eq!(packed.size(), expected.size(), "{name}, past {past}");
            let diff = f64::try_from((&packed - &expected).abs().max()).unwrap();
            assert!(diff <= 1e-5, "{name}, past {past}: max |Δ| {diff}");
            // The cached keys and values of real positions agree too (generation continues them).
            let continue_one = |cache: &mut moebench_model::KvCache| {
                let next = Tensor::from_slice(&[5i64, 6, 7]).view([3, 1]);
                let mask = Tensor::cat(
                    &[
                        mask.shallow_clone(),
                        Tensor::ones([3, 1], (Kind::Int64, Device::Cpu)),
                    ],
                    1,
                );
                model.forward_hidden(&next, Some(&mask), Some(cache), &mut Default::default())
            };
            let diff = f64::try_from(
                (continue_one(&mut packed_cache) - continue_one(&mut padded_cache))
                    .abs()
                    .max(),
            )
            .unwrap();
            assert!(
                diff <= 1e-5,
                "{name}, past {past}, next token: max |Δ| {diff}"
            );
        }
    }
}

#[test]
fn lookup_draft_continues_the_latest_earlier_ngram() {
    use moebench_model::generate::lookup_draft;
    // The last trigram (7, 8, 9) occurred at 4..7; the draft is what followed it.
    let text = [1, 7, 8, 9, 7, 8, 9, 4, 5, 6, 7, 8, 9];
    assert_eq!(lookup_draft(&text, 3), [4, 5, 6]);
    assert_eq!(lookup_draft(&text, 10), [4, 5, 6, 7, 8, 9]);
    // Only the bigram (2, 3) repeats.
    assert_eq!(lookup_draft(&[9, 2, 3, 4, 1, 2, 3], 2), [4, 1]);
    assert!(lookup_draft(&[1, 2, 3, 4], 5).is_empty());
    assert!(lookup_draft(&[1, 2, 1, 2], 0).is_empty());
}

/// Decoding with prompt-lookup drafts gives plain greedy decoding's ids, for dense and MoE
/// families, on prompts whose repeats make drafts (and the test checks that some were fed).
#[test]
fn lookup_decoding_is_greedy_decoding() {
    use moebench_model::generate::{
        decode_lookup, greedy_batch, lookup_draft, GreedyDecoder, StopOnIds,
    };
    let prompt: Vec<i64> = [5, 6, 7, 8, 9].repeat(4);
    for name in ["llama", "qwen3", "mixtral", "qwen2_moe", "olmoe"] {
        let model = load(&tiny(name)).unwrap();
        let greedy = greedy_batch(
            &model,
            std::slice::from_ref(&prompt),
            24,
            &mut StopOnIds(vec![]),
        )
        .remove(0);
        let (decoder, first) = GreedyDecoder::prefill(&model, std::slice::from_ref(&prompt));
        let lookup = decode_lookup(
            decoder,
            prompt.clone(),
            first[0],
            24,
            &mut StopOnIds(vec![]),
        );
        assert_eq!(lookup, greedy, "{name}");
        let text: Vec<i64> = prompt.iter().chain(&greedy).copied().collect();
        assert!(
            (prompt.len() + 1..text.len()).any(|end| !lookup_draft(&text[..end], 4).is_empty()),
            "{name}: no draft was fed"
        );
        // Stops are honoured inside a kept draft.
        let stop_at = greedy[3];
        let (decoder, first) = GreedyDecoder::prefill(&model, std::slice::from_ref(&prompt));
        let stopped = decode_lookup(
            decoder,
            prompt.clone(),
            first[0],
            24,
            &mut StopOnIds(vec![stop_at]),
        );
        let expected = greedy_batch(
            &model,
            std::slice::from_ref(&prompt),
            24,
            &mut StopOnIds(vec![stop_at]),
        )
        .remove(0);
        assert_eq!(stopped, expected, "{name}, stop id");
    }
}

/// An MoE layer of `experts` copies of layer `l`'s dense MLP, routing top-1: it computes
/// exactly what the MLP did.
fn copies_of_mlp(model: &Model, l: usize, experts: i64) -> MoeLayer {
    let Ffn::Dense(mlp) = &model.layers[l].ffn else {
        panic!("layer {l} is not dense")
    };
    let router = Linear {
        weight: Tensor::randn(
            [experts, mlp.gate.weight.size()[1]],
            (Kind::Float, Device::Cpu),
        ),
        bias: None,
    };
    let selector = Arc::new(TopK {
        k: 1,
        norm: RouterNorm::SoftmaxTopkRenorm,
    });
    MoeLayer::copies_of(mlp, experts, router, selector)
}

#[test]
fn install_moe_checks_every_layer_first_and_describes_the_result() {
    let mut model = load(&tiny("llama")).unwrap();
    let dense = logits(&model);
    let norm = RouterNorm::SoftmaxTopkRenorm;
    let refused = [
        // Expert counts that disagree: the config holds one count.
        vec![
            (0, copies_of_mlp(&model, 0, 4)),
            (1, copies_of_mlp(&model, 1, 2)),
        ],
        vec![(2, copies_of_mlp(&model, 1, 4))],
        vec![
            (0, copies_of_mlp(&model, 0, 4)),
            (0, copies_of_mlp(&model, 0, 4)),
        ],
        vec![],
    ];
    for layers in refused {
        let err = model.install_moe(layers, 1, norm).unwrap_err();
        assert!(matches!(err, ModelError::Invalid(_)), "{err}");
        assert!(
            model.config.moe.is_none(),
            "a refused install changed the config"
        );
        assert!(
            model.moe_layers().next().is_none(),
            "a refused install changed a layer"
        );
    }
    let err = model
        .install_moe(vec![(1, copies_of_mlp(&model, 1, 4))], 5, norm)
        .unwrap_err();
    assert!(err.to_string().contains("top_k 5 is not in 1..=4"), "{err}");

    model
        .install_moe(vec![(1, copies_of_mlp(&model, 1, 4))], 1, norm)
        .unwrap();
    let moe = model.config.moe.as_ref().unwrap();
    assert_eq!(
        (moe.num_experts, moe.top_k, moe.expert_intermediate_size),
        (4, 1, model.config.intermediate_size)
    );
    assert_eq!(moe.sparse_layers, [false, true]);
    assert_eq!(moe.shared_expert_intermediate_size, None);
    let d = f64::try_from((logits(&model) - &dense).abs().max()).unwrap();
    assert!(d < 1e-5, "copies of the MLP changed the logits by {d}");
    assert!(model
        .install_moe(vec![(0, copies_of_mlp(&model, 0, 4))], 1, norm)
        .is_err());

    // The routing record follows the selectors a method installs.
    model.set_routing(2, norm).unwrap();
    assert_eq!(model.config.moe.as_ref().unwrap().top_k, 2);
    assert_eq!(model.config.raw["num_experts_per_tok"], 2);
    assert!(load(&tiny("llama")).unwrap().set_routing(2, norm).is_err());

    // Removing blocks keeps the config's layer list in step.
    assert!(model.remove_blocks(1..3).is_err());
    let removed = model.remove_blocks(0..1).unwrap();
    assert_eq!(removed.len(), 1);
    assert_eq!(model.config.num_layers, 1);
    assert_eq!(model.config.moe.as_ref().unwrap().sparse_layers, [true]);
}
