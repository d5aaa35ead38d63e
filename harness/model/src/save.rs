//! `save_pretrained`: config.json + model.safetensors (+ tokenizer files) in the layout
//! transformers loads, written to a temporary directory and renamed into place.
use crate::config::{Family, EXPERT_COUNT_KEYS};
use crate::error::{ModelError, Result};
use crate::model::{Ffn, Model};
use crate::weights::{write_safetensors, SINGLE_FILE};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::path::Path;
use tch::Kind;

/// Files copied verbatim from the source checkpoint when present.
const SIDE_FILES: [&str; 5] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "generation_config.json",
];

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ModelError + '_ {
    move |source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub fn sha256_file(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(io(path))?;
    Ok(format!("{:x}", Sha256::digest(&bytes)))
}

fn dtype_name(kind: Kind) -> &'static str {
    match kind {
        Kind::BFloat16 => "bfloat16",
        Kind::Half => "float16",
        _ => "float32",
    }
}

/// The config as it must be written for the model's current structure (layer count, expert
/// count, dtype). The layer count follows `model.layers`, which layer pruning and Dense2MoE's
/// layer fusion shorten.
pub fn updated_config(model: &Model) -> Result<Value> {
    let mut raw = model.config.raw.clone();
    raw["num_hidden_layers"] = Value::from(model.layers.len());
    let counts: Vec<i64> = model
        .layers
        .iter()
        .filter_map(|b| match &b.ffn {
            Ffn::Moe(m) => Some(m.num_experts()),
            Ffn::Dense(_) => None,
        })
        .collect();
    if !counts.is_empty()
        && matches!(
            model.config.family,
            Family::Llama | Family::Qwen2 | Family::Qwen3
        )
    {
        return Err(ModelError::Invalid(format!(
            "a `{}` model with MoE layers has no transformers format (fix: upcycle every layer, \
             which turns a llama model into mixtral, or do not save this model)",
            model.config.family.model_type()
        )));
    }
    let router_bias = model.layers.iter().any(|b| match &b.ffn {
        Ffn::Moe(m) => m.router.bias.is_some(),
        Ffn::Dense(_) => false,
    });
    if router_bias {
        return Err(ModelError::Invalid(format!(
            "the MoE routers have a bias, which `{}` checkpoints cannot hold (e.g. DUME's ridge \
             routers); this model can be evaluated but not saved in a transformers format",
            model.config.family.model_type()
        )));
    }
    if let Some(&n) = counts.first() {
        if counts.iter().any(|&c| c != n) {
            return Err(ModelError::Invalid(format!(
                "MoE layers have different expert counts {counts:?}; transformers configs need one count"
            )));
        }
        let key = EXPERT_COUNT_KEYS
            .into_iter()
            .find(|k| raw.get(k).is_some())
            .unwrap_or(EXPERT_COUNT_KEYS[0]);
        raw[key] = Value::from(n);
    }
    raw["dtype"] = Value::from(dtype_name(model.kind));
    Ok(raw)
}

/// Writes the model to `out` (which must not exist yet or will be replaced atomically).
/// Tokenizer and generation files are copied from `side_files_from` when given.
pub fn save_pretrained(model: &Model, side_files_from: Option<&Path>, out: &Path) -> Result<()> {
    let parent = out.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(io(parent))?;
    let name = out.file_name().and_then(|n| n.to_str()).unwrap_or("model");
    let tmp = parent.join(format!(".{name}.partial-{}", std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
    }
    std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
    let config = serde_json::to_string_pretty(&updated_config(model)?).expect("json");
    let cfg_path = tmp.join("config.json");
    std::fs::write(&cfg_path, config + "\n").map_err(io(&cfg_path))?;
    write_safetensors(&model.named_tensors(), &tmp.join(SINGLE_FILE))?;
    if let Some(src) = side_files_from {
        for f in SIDE_FILES {
            let from = src.join(f);
            if from.exists() {
                std::fs::copy(&from, tmp.join(f)).map_err(io(&from))?;
            }
        }
    }
    if out.exists() {
        std::fs::remove_dir_all(out).map_err(io(out))?;
    }
    std::fs::rename(&tmp, out).map_err(io(out))
}
