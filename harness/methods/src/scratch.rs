//! Models built from a config rather than downloaded: a randomly initialised Llama, optionally
//! turned into an MoE with independently initialised experts (so the experts differ from the
//! start, unlike upcycling), plus a byte-level tokenizer so that tiny models trained here on
//! local text are evaluated by the same engine as Hub models.
use crate::error::{MethodError, Result};
use crate::upcycle::{upcycle, UpcycleConfig};
use moebench_model::weights::write_safetensors;
use moebench_model::{Ffn, Model};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;
use tch::{Device, Kind, Tensor};

const METHOD: &str = "scratch";

/// The special token (id 256) that is BOS, EOS and the lm-eval prefix token.
pub const END_OF_TEXT: &str = "<|endoftext|>";

#[derive(Debug, Clone, PartialEq)]
pub struct ScratchConfig {
    pub hidden_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    /// Width of the dense MLP, and of each expert.
    pub intermediate_size: usize,
    pub vocab_size: usize,
    pub max_position_embeddings: usize,
    /// 0 for a dense model.
    pub num_experts: usize,
    pub top_k: usize,
    pub init_std: f64,
    pub seed: i64,
}

impl Default for ScratchConfig {
    /// docs/methods.md §5.6 / §4.6's CPU miniature: 4 layers, H=128, 16 experts of width 128, top-2,
    /// over bytes.
    fn default() -> Self {
        Self {
            hidden_size: 128,
            num_layers: 4,
            num_heads: 4,
            num_kv_heads: 4,
            intermediate_size: 128,
            vocab_size: 257,
            max_position_embeddings: 1024,
            num_experts: 16,
            top_k: 2,
            init_std: 0.02,
            seed: 0,
        }
    }
}

/// A random model for `cfg` on CPU in f32: a Llama written to `scratch_dir` and loaded back (so
/// that loading is the one code path), then, with experts, upcycled and every expert and router
/// re-initialised independently.
pub fn random_model(cfg: &ScratchConfig, scratch_dir: &Path) -> Result<Model> {
    if !cfg.hidden_size.is_multiple_of(cfg.num_heads)
        || !cfg.num_heads.is_multiple_of(cfg.num_kv_heads.max(1))
    {
        return Err(MethodError::param(
            METHOD,
            "num_heads",
            "must divide hidden_size and be a multiple of num_kv_heads",
        ));
    }
    tch::manual_seed(cfg.seed);
    let (h, f, v) = (
        cfg.hidden_size as i64,
        cfg.intermediate_size as i64,
        cfg.vocab_size as i64,
    );
    let head_dim = h / cfg.num_heads as i64;
    let kv = cfg.num_kv_heads as i64 * head_dim;
    let normal = |shape: &[i64]| Tensor::randn(shape, (Kind::Float, Device::Cpu)) * cfg.init_std;
    let ones = |n: i64| Tensor::ones([n], (Kind::Float, Device::Cpu));
    let mut tensors = BTreeMap::from([
        ("model.embed_tokens.weight".to_owned(), normal(&[v, h])),
        ("model.norm.weight".to_owned(), ones(h)),
    ]);
    for l in 0..cfg.num_layers {
        let p = format!("model.layers.{l}");
        for (name, shape) in [
            ("self_attn.q_proj", [h, h]),
            ("self_attn.k_proj", [kv, h]),
            ("self_attn.v_proj", [kv, h]),
            ("self_attn.o_proj", [h, h]),
            ("mlp.gate_proj", [f, h]),
            ("mlp.up_proj", [f, h]),
            ("mlp.down_proj", [h, f]),
        ] {
            tensors.insert(format!("{p}.{name}.weight"), normal(&shape));
        }
        for norm in ["input_layernorm", "post_attention_layernorm"] {
            tensors.insert(format!("{p}.{norm}.weight"), ones(h));
        }
    }
    std::fs::create_dir_all(scratch_dir).map_err(|e| {
        MethodError::unsupported(METHOD, format!("creating {}: {e}", scratch_dir.display()))
    })?;
    let config = json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "num_key_value_heads": cfg.num_kv_heads,
        "head_dim": head_dim,
        "vocab_size": cfg.vocab_size,
        "max_position_embeddings": cfg.max_position_embeddings,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "tie_word_embeddings": true,
        "hidden_act": "silu",
        "bos_token_id": 256,
        "eos_token_id": 256,
        "dtype": "float32",
    });
    write_json(&scratch_dir.join("config.json"), &config)?;
    write_safetensors(&tensors, &scratch_dir.join("model.safetensors"))?;
    let mut model = Model::load(scratch_dir, Device::Cpu, Kind::Float)?;
    if cfg.num_experts > 0 {
        upcycle(
            &mut model,
            &UpcycleConfig {
                num_experts: cfg.num_experts as i64,
                top_k: cfg.top_k as i64,
                layers: None,
                router_init_std: cfg.init_std,
                seed: cfg.seed,
            },
        )?;
        let _guard = tch::no_grad_guard();
        for block in &mut model.layers {
            if let Ffn::Moe(moe) = &mut block.ffn {
                for w in [&mut moe.w_gate, &mut moe.w_up, &mut moe.w_down] {
                    let fresh = normal(&w.size());
                    w.copy_(&fresh);
                }
            }
        }
    }
    Ok(model)
}

fn write_json(path: &Path, value: &Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value).expect("json") + "\n";
    std::fs::write(path, text)
        .map_err(|e| MethodError::unsupported(METHOD, format!("writing {}: {e}", path.display())))
}

/// GPT-2's byte → printable character table (`bytes_to_unicode`), which byte-level BPE
/// vocabularies are written in.
fn byte_chars() -> Vec<char> {
    let printable =
        |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
    let mut next = 256;
    (0u32..256)
        .map(|b| {
            if printable(b) {
                char::from_u32(b).expect("latin-1")
            } else {
                next += 1;
                char::from_u32(next - 1).expect("valid")
            }
        })
        .collect()
}

/// Writes `tokenizer.json` (byte-level BPE without merges: one token per byte, ids 0..=255, plus
/// `<|endoftext|>` = 256) and `tokenizer_config.json` naming it BOS and EOS.
pub fn write_byte_tokenizer(dir: &Path) -> Result<()> {
    let vocab: serde_json::Map<String, Value> = byte_chars()
        .into_iter()
        .enumerate()
        .map(|(id, c)| (c.to_string(), Value::from(id)))
        .collect();
    let tokenizer = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [{
            "id": 256, "content": END_OF_TEXT, "single_word": false, "lstrip": false,
            "rstrip": false, "normalized": false, "special": true
        }],
        "normalizer": null,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false},
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false},
        "model": {
            "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
            "ignore_merges": false, "vocab": vocab, "merges": []
        }
    });
    write_json(&dir.join("tokenizer.json"), &tokenizer)?;
    write_json(
        &dir.join("tokenizer_config.json"),
        &json!({"bos_token": END_OF_TEXT, "eos_token": END_OF_TEXT, "model_max_length": 1024}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use moebench_model::Tokenizer;

    #[test]
    fn byte_tokenizer_round_trips_any_text_one_token_per_byte() {
        let dir = tempfile::tempdir().unwrap();
        write_byte_tokenizer(dir.path()).unwrap();
        let tok = Tokenizer::from_dir(dir.path()).unwrap();
        let text = "Shall I compare thee to a summer's day?\n\tÉté — 夏 🌞";
        let ids = tok.encode(text, false).unwrap();
        assert_eq!(ids.len(), text.len());
        let bytes: Vec<i64> = text.bytes().map(i64::from).collect();
        assert_eq!(ids, bytes);
        assert_eq!(tok.decode(&ids, false).unwrap(), text);
        assert_eq!(tok.bos_id, Some(256));
        assert_eq!(tok.eos_id, Some(256));
    }

    #[test]
    fn scratch_moe_has_distinct_experts_and_saves_as_mixtral() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = ScratchConfig {
            hidden_size: 32,
            num_layers: 2,
            num_heads: 2,
            num_kv_heads: 1,
            intermediate_size: 16,
            num_experts: 4,
            ..ScratchConfig::default()
        };
        let model = random_model(&cfg, &dir.path().join("init")).unwrap();
        assert_eq!(model.config.family, moebench_model::Family::Mixtral);
        let Ffn::Moe(moe) = &model.layers[0].ffn else {
            panic!("MoE layer expected")
        };
        let gap = f64::try_from((moe.w_gate.get(0) - moe.w_gate.get(1)).abs().max()).unwrap();
        assert!(gap > 1e-3, "experts must differ, max |Δ| {gap}");
        let out = dir.path().join("saved");
        moebench_model::save::save_pretrained(&model, None, &out).unwrap();
        let back = Model::load(&out, Device::Cpu, Kind::Float).unwrap();
        let ids = Tensor::from_slice(&[1i64, 200, 3, 256]).view([1, 4]);
        let diff = f64::try_from(
            (back.forward(&ids, None, None) - model.forward(&ids, None, None))
                .abs()
                .max(),
        )
        .unwrap();
        assert!(diff < 1e-6);
    }
}
