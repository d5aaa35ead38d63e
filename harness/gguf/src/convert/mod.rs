//! Conversion of a llama-architecture GGUF into a Hugging Face checkpoint directory.
//!
//! The output is what transformers 5.23 builds when it loads the GGUF with
//! `from_pretrained(dir, gguf_file=..., dtype=torch.float32)`: its legacy GGUF loader
//! (`modeling_gguf_pytorch_utils.load_gguf_checkpoint`, with `integrations/ggml.py`'s
//! `GGUF_CONFIG_MAPPING`) for weights and config, and `integrations/gguf/gguf_tokenizer_mapping.py`
//! for the tokenizer. Loading the directory written here with plain `from_pretrained(out_dir)` gives
//! the same weights (bit for bit), the same config and the same token ids.
//!
//! Files written (see [`OUTPUT_FILES`]):
//! - `model.safetensors`: every weight as f32, renamed and with Q/K rows un-permuted;
//! - `config.json`, `generation_config.json`: as `LlamaForCausalLM.save_pretrained` writes them;
//! - `tokenizer.json`, `tokenizer_config.json`: the byte-level BPE tokenizer and the chat template.

mod config;
mod tensors;
mod tokenizer;

use std::fs;
use std::path::Path;

use serde::Serialize;

use crate::error::{Error, IoContext, Result};
use crate::gguf::GgufFile;

/// The transformers release whose output this conversion reproduces (written into the configs).
pub const TRANSFORMERS_VERSION: &str = "5.23.0";

/// The files [`convert_llama_gguf`] writes, sorted.
pub const OUTPUT_FILES: [&str; 5] = [
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
];

/// Converts the llama-architecture GGUF at `gguf_path` into a Hugging Face checkpoint in
/// `out_dir` (created if needed; existing files of the same names are overwritten).
pub fn convert_llama_gguf(gguf_path: &Path, out_dir: &Path) -> Result<()> {
    let gguf = GgufFile::open(gguf_path)?;
    let params = LlamaParams::from_gguf(&gguf)?;
    fs::create_dir_all(out_dir).io_context(out_dir, "creating directory")?;
    tensors::write_safetensors(&gguf, &params, &out_dir.join("model.safetensors"))?;
    config::write_configs(&gguf, &params, out_dir)?;
    tokenizer::write_tokenizer(&gguf, out_dir)
}

/// The hyperparameters the conversion needs, read as transformers reads them.
#[derive(Debug)]
struct LlamaParams {
    n_layer: usize,
    hidden_size: usize,
    intermediate_size: usize,
    n_head: usize,
    n_head_kv: usize,
    head_dim: usize,
    context_length: usize,
    rms_norm_eps: f64,
    rope_theta: f64,
    vocab_size: usize,
    /// llama.cpp writes `output.weight` only when it differs from the embedding.
    tied_embeddings: bool,
}

const HEAD_COUNT: &str = "llama.attention.head_count";
const HEAD_COUNT_KV: &str = "llama.attention.head_count_kv";

impl LlamaParams {
    /// Reads `llama.*` metadata. Keys that transformers leaves to `LlamaConfig`'s defaults when
    /// absent get the same defaults here: `head_count_kv` = `head_count`, `rope.freq_base` =
    /// 10000, `rope.dimension_count` = hidden / heads, `vocab_size` = number of tokens.
    fn from_gguf(gguf: &GgufFile) -> Result<Self> {
        let architecture: &str = gguf.require("general.architecture")?;
        if architecture != "llama" {
            return Err(Error::Unsupported {
                path: gguf.path().into(),
                problem: format!("architecture {architecture:?} (only \"llama\" is converted)"),
            });
        }
        let hidden_size = gguf.require("llama.embedding_length")?;
        let n_head = gguf.require(HEAD_COUNT)?;
        let n_head_kv = gguf.get(HEAD_COUNT_KV)?.unwrap_or(n_head);
        // Head counts divide the weights into heads; zero would make that meaningless.
        if let Some((key, _)) = [(HEAD_COUNT, n_head), (HEAD_COUNT_KV, n_head_kv)]
            .into_iter()
            .find(|&(_, n)| n == 0)
        {
            return Err(Error::Metadata {
                path: gguf.path().into(),
                key: key.into(),
                problem: "must be positive".into(),
            });
        }
        let vocab_size = match gguf.get("llama.vocab_size")? {
            Some(n) => n,
            None => gguf.require::<Vec<&str>>("tokenizer.ggml.tokens")?.len(),
        };
        Ok(Self {
            n_layer: gguf.require("llama.block_count")?,
            hidden_size,
            intermediate_size: gguf.require("llama.feed_forward_length")?,
            n_head,
            n_head_kv,
            head_dim: gguf
                .get("llama.rope.dimension_count")?
                .unwrap_or(hidden_size / n_head),
            context_length: gguf.require("llama.context_length")?,
            rms_norm_eps: gguf.require("llama.attention.layer_norm_rms_epsilon")?,
            rope_theta: gguf.get("llama.rope.freq_base")?.unwrap_or(10_000.0),
            vocab_size,
            tied_embeddings: gguf.tensor("output.weight").is_none(),
        })
    }
}

/// Writes `value` as JSON indented by two spaces, the way both Python's `json.dumps(indent=2)` and
/// the `tokenizers` library lay it out.
fn write_json(path: &Path, value: &impl Serialize, trailing_newline: bool) -> Result<()> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|source| Error::Json {
        path: path.into(),
        source,
    })?;
    if trailing_newline {
        bytes.push(b'\n');
    }
    fs::write(path, bytes).io_context(path, "writing")
}
