//! `config.json` and `generation_config.json`, as transformers 5.23 writes them for a
//! `LlamaForCausalLM` loaded from this GGUF (`model.config` / `model.generation_config` after
//! `from_pretrained(dir, gguf_file=..., dtype=torch.float32)`, then `save_pretrained`).
//!
//! Where the values come from (`integrations/ggml.py`, `GGUF_CONFIG_MAPPING["llama"]` and
//! `["tokenizer"]`): `general.name` → `_model_name_or_path`, `llama.context_length` →
//! `max_position_embeddings`, `block_count` → `num_hidden_layers`, `feed_forward_length` →
//! `intermediate_size`, `embedding_length` → `hidden_size`, `rope.dimension_count` → `head_dim`,
//! `rope.freq_base` → `rope_theta`, `attention.head_count(_kv)` → `num_(key_value_)heads`,
//! `attention.layer_norm_rms_epsilon` → `rms_norm_eps`, `tokenizer.ggml.{bos,eos,unknown,padding}_token_id`
//! → `{bos,eos,unk,pad}_token_id`; `tie_word_embeddings` is "no `output.weight`". Everything else is
//! a `LlamaConfig` default.
//!
//! transformers 5 keeps `rope_theta` only inside `rope_parameters`. The f32 metadata floats are
//! widened exactly, so `rms_norm_eps` is 9.999999747378752e-06, not 1e-05, as in transformers.
//! Fields are declared in alphabetical order because transformers writes with `sort_keys=True`.
//! Token ids absent from the GGUF are left out, so that transformers falls back to its own
//! defaults, as it does when loading the GGUF.

use std::path::Path;

use serde::Serialize;

use super::{write_json, LlamaParams, TRANSFORMERS_VERSION};
use crate::error::Result;
use crate::gguf::GgufFile;

#[derive(Serialize)]
struct LlamaConfig<'a> {
    #[serde(
        rename = "_model_name_or_path",
        skip_serializing_if = "Option::is_none"
    )]
    model_name_or_path: Option<&'a str>,
    architectures: [&'static str; 1],
    attention_bias: bool,
    attention_dropout: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    bos_token_id: Option<usize>,
    dtype: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    eos_token_id: Option<usize>,
    head_dim: usize,
    hidden_act: &'static str,
    hidden_size: usize,
    initializer_range: f64,
    intermediate_size: usize,
    max_position_embeddings: usize,
    mlp_bias: bool,
    model_type: &'static str,
    num_attention_heads: usize,
    num_hidden_layers: usize,
    num_key_value_heads: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pad_token_id: Option<usize>,
    pretraining_tp: usize,
    rms_norm_eps: f64,
    rope_parameters: RopeParameters,
    tie_word_embeddings: bool,
    transformers_version: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    unk_token_id: Option<usize>,
    use_cache: bool,
    vocab_size: usize,
}

#[derive(Serialize)]
struct RopeParameters {
    rope_theta: f64,
    rope_type: &'static str,
}

/// `GenerationConfig.from_model_config(config)`, as `save_pretrained` writes it.
#[derive(Serialize)]
struct GenerationConfig {
    #[serde(rename = "_from_model_config")]
    from_model_config: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    bos_token_id: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    eos_token_id: Option<usize>,
    output_attentions: bool,
    output_hidden_states: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pad_token_id: Option<usize>,
    transformers_version: &'static str,
    use_cache: bool,
}

pub(super) fn write_configs(gguf: &GgufFile, params: &LlamaParams, out_dir: &Path) -> Result<()> {
    let token_id = |key: &str| gguf.get::<usize>(&format!("tokenizer.ggml.{key}"));
    let bos_token_id = token_id("bos_token_id")?;
    let eos_token_id = token_id("eos_token_id")?;
    let pad_token_id = token_id("padding_token_id")?;
    let config = LlamaConfig {
        model_name_or_path: gguf.get("general.name")?,
        architectures: ["LlamaForCausalLM"],
        attention_bias: false,
        attention_dropout: 0.0,
        bos_token_id,
        dtype: "float32",
        eos_token_id,
        head_dim: params.head_dim,
        hidden_act: "silu",
        hidden_size: params.hidden_size,
        initializer_range: 0.02,
        intermediate_size: params.intermediate_size,
        max_position_embeddings: params.context_length,
        mlp_bias: false,
        model_type: "llama",
        num_attention_heads: params.n_head,
        num_hidden_layers: params.n_layer,
        num_key_value_heads: params.n_head_kv,
        pad_token_id,
        pretraining_tp: 1,
        rms_norm_eps: params.rms_norm_eps,
        rope_parameters: RopeParameters {
            rope_theta: params.rope_theta,
            rope_type: "default",
        },
        tie_word_embeddings: params.tied_embeddings,
        transformers_version: TRANSFORMERS_VERSION,
        unk_token_id: token_id("unknown_token_id")?,
        use_cache: true,
        vocab_size: params.vocab_size,
    };
    let generation = GenerationConfig {
        from_model_config: true,
        bos_token_id,
        eos_token_id,
        output_attentions: false,
        output_hidden_states: false,
        pad_token_id,
        transformers_version: TRANSFORMERS_VERSION,
        use_cache: true,
    };
    write_json(&out_dir.join("config.json"), &config, true)?;
    write_json(&out_dir.join("generation_config.json"), &generation, true)
}
