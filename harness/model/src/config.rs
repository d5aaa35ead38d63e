//! `config.json` parsing for the supported decoder families, normalised into one [`ModelConfig`].
//!
//! Defaults are those of the transformers configuration classes (`configuration_<family>.py`), so a
//! config that omits a key means what it means to transformers. Both the transformers-4 layout
//! (`rope_theta` + `rope_scaling`) and the transformers-5 layout (`rope_parameters`) are accepted.
use crate::error::{ModelError, Result};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// Decoder families this runtime implements; the name is transformers' `model_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Llama,
    Qwen2,
    Qwen3,
    Mixtral,
    Qwen2Moe,
    Qwen3Moe,
    Olmoe,
}

impl Family {
    pub const ALL: [Family; 7] = [
        Family::Llama,
        Family::Qwen2,
        Family::Qwen3,
        Family::Mixtral,
        Family::Qwen2Moe,
        Family::Qwen3Moe,
        Family::Olmoe,
    ];

    pub fn model_type(self) -> &'static str {
        match self {
            Family::Llama => "llama",
            Family::Qwen2 => "qwen2",
            Family::Qwen3 => "qwen3",
            Family::Mixtral => "mixtral",
            Family::Qwen2Moe => "qwen2_moe",
            Family::Qwen3Moe => "qwen3_moe",
            Family::Olmoe => "olmoe",
        }
    }

    pub fn architecture(self) -> &'static str {
        match self {
            Family::Llama => "LlamaForCausalLM",
            Family::Qwen2 => "Qwen2ForCausalLM",
            Family::Qwen3 => "Qwen3ForCausalLM",
            Family::Mixtral => "MixtralForCausalLM",
            Family::Qwen2Moe => "Qwen2MoeForCausalLM",
            Family::Qwen3Moe => "Qwen3MoeForCausalLM",
            Family::Olmoe => "OlmoeForCausalLM",
        }
    }

    fn from_model_type(s: &str) -> Option<Family> {
        Family::ALL.into_iter().find(|f| f.model_type() == s)
    }

    /// transformers' default `rms_norm_eps` and `rope_theta` for the family.
    fn defaults(self) -> (f64, f64) {
        match self {
            Family::Mixtral => (1e-5, 1e6),
            Family::Olmoe => (1e-5, 10000.0),
            _ => (1e-6, 10000.0),
        }
    }
}

/// How RoPE inverse frequencies are derived (`modeling_rope_utils.py`).
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    Default,
    Linear {
        factor: f64,
    },
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: f64,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct RopeConfig {
    pub theta: f64,
    pub scaling: RopeScaling,
}

/// Where the query/key RMSNorm sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QkNorm {
    None,
    /// Qwen3: RMSNorm over `head_dim`, per head, before RoPE.
    PerHead,
    /// OLMoE: RMSNorm over the whole projection output (`heads·head_dim`), before the head split.
    Full,
}

/// How a checkpoint turns router logits into combine weights (docs/methods.md §1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouterNorm {
    /// softmax over all N, top-k, weights renormalised to sum 1 (Mixtral; Qwen with `norm_topk_prob`).
    SoftmaxTopkRenorm,
    /// softmax over all N, top-k, raw probabilities (OLMoE, Qwen1.5-MoE).
    SoftmaxTopk,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MoeConfig {
    pub num_experts: usize,
    pub top_k: usize,
    pub expert_intermediate_size: usize,
    pub router_norm: RouterNorm,
    /// Qwen2-MoE shared expert (always on, scaled by `sigmoid(shared_expert_gate(x))`).
    pub shared_expert_intermediate_size: Option<usize>,
    /// `sparse_layers[l]` is true when layer `l` has an MoE FFN, false for a dense MLP.
    pub sparse_layers: Vec<bool>,
}

#[derive(Debug, Clone)]
pub struct ModelConfig {
    pub family: Family,
    pub vocab_size: usize,
    pub hidden_size: usize,
    /// Width of dense MLPs (dense models, and dense layers of MoE models).
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope: RopeConfig,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    /// Bias on the q/k/v projections.
    pub qkv_bias: bool,
    /// Bias on the output projection (Llama/Qwen3 `attention_bias`; Qwen2 has none).
    pub o_bias: bool,
    pub qk_norm: QkNorm,
    pub clip_qkv: Option<f64>,
    pub moe: Option<MoeConfig>,
    pub bos_token_id: Option<i64>,
    pub eos_token_ids: Vec<i64>,
    pub pad_token_id: Option<i64>,
    /// The parsed file, kept so that `save_pretrained` writes back every key it did not change.
    pub raw: Value,
}

struct Reader<'a> {
    v: &'a Value,
    path: &'a Path,
}

impl Reader<'_> {
    fn err(&self, msg: String) -> ModelError {
        ModelError::Config {
            path: self.path.to_path_buf(),
            msg,
        }
    }
    fn get(&self, key: &str) -> Option<&Value> {
        self.v.get(key).filter(|v| !v.is_null())
    }
    fn usize_opt(&self, key: &str) -> Result<Option<usize>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.as_u64().map(|x| Some(x as usize)).ok_or_else(|| {
                self.err(format!("`{key}` must be a non-negative integer, got {v}"))
            }),
        }
    }
    fn usize(&self, key: &str) -> Result<usize> {
        self.usize_opt(key)?
            .ok_or_else(|| self.err(format!("missing required key `{key}`")))
    }
    fn f64_or(&self, key: &str, default: f64) -> Result<f64> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_f64()
                .ok_or_else(|| self.err(format!("`{key}` must be a number, got {v}"))),
        }
    }
    fn bool_or(&self, key: &str, default: bool) -> Result<bool> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_bool()
                .ok_or_else(|| self.err(format!("`{key}` must be true or false, got {v}"))),
        }
    }
    fn ids(&self, key: &str) -> Result<Vec<i64>> {
        match self.get(key) {
            None => Ok(vec![]),
            Some(Value::Array(a)) => a
                .iter()
                .map(|x| {
                    x.as_i64()
                        .ok_or_else(|| self.err(format!("`{key}` must hold integers")))
                })
                .collect(),
            Some(v) => v
                .as_i64()
                .map(|x| vec![x])
                .ok_or_else(|| self.err(format!("`{key}` must be an integer or a list"))),
        }
    }
}

impl ModelConfig {
    /// Reads and validates `<dir>/config.json`.
    pub fn from_file(path: &Path) -> Result<ModelConfig> {
        let text = std::fs::read_to_string(path).map_err(|source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let raw: Value = serde_json::from_str(&text).map_err(|e| ModelError::Config {
            path: path.to_path_buf(),
            msg: format!("not valid JSON: {e}"),
        })?;
        Self::from_value(raw, path)
    }

    pub fn from_value(raw: Value, path: &Path) -> Result<ModelConfig> {
        let r = Reader { v: &raw, path };
        let model_type = r
            .get("model_type")
            .and_then(Value::as_str)
            .ok_or_else(|| r.err("missing `model_type`".into()))?;
        let family =
            Family::from_model_type(model_type).ok_or_else(|| ModelError::UnsupportedFamily {
                model_type: model_type.to_string(),
                path: PathBuf::from(path),
                supported: Family::ALL.map(Family::model_type).join(", "),
            })?;
        let (default_eps, default_theta) = family.defaults();
        let hidden_size = r.usize("hidden_size")?;
        let num_heads = r.usize("num_attention_heads")?;
        let num_layers = r.usize("num_hidden_layers")?;
        let num_kv_heads = r.usize_opt("num_key_value_heads")?.unwrap_or(num_heads);
        if num_heads == 0 || num_kv_heads == 0 || num_heads % num_kv_heads != 0 {
            return Err(r.err(format!(
                "num_attention_heads ({num_heads}) must be a positive multiple of num_key_value_heads ({num_kv_heads})"
            )));
        }
        let head_dim = match r.usize_opt("head_dim")? {
            Some(d) => d,
            None if hidden_size % num_heads == 0 => hidden_size / num_heads,
            None => {
                return Err(r.err(format!(
                    "hidden_size {hidden_size} is not divisible by num_attention_heads {num_heads} and no head_dim is given"
                )))
            }
        };
        let intermediate_size = r.usize("intermediate_size")?;
        // Qwen2 always has q/k/v biases and never an o_proj bias (`Qwen2Attention.__init__`).
        let (qkv_bias, o_bias) = match family {
            Family::Qwen2 | Family::Qwen2Moe => (true, false),
            Family::Mixtral => (false, false),
            _ => {
                let b = r.bool_or("attention_bias", false)?;
                (b, b)
            }
        };
        if r.bool_or("mlp_bias", false)? {
            return Err(r.err("`mlp_bias: true` is not supported".into()));
        }
        if r.bool_or("use_sliding_window", false)? {
            return Err(r.err(
                "`use_sliding_window: true` is not supported (full attention only); set it to false".into(),
            ));
        }
        let qk_norm = match family {
            Family::Qwen3 | Family::Qwen3Moe => QkNorm::PerHead,
            Family::Olmoe => QkNorm::Full,
            _ => QkNorm::None,
        };
        let clip_qkv = match r.get("clip_qkv") {
            None => None,
            Some(v) => Some(
                v.as_f64()
                    .ok_or_else(|| r.err(format!("`clip_qkv` must be a number, got {v}")))?,
            ),
        };
        let moe = parse_moe(&r, family, num_layers, intermediate_size)?;
        let rope = parse_rope(&r, default_theta)?;
        let tie_word_embeddings = r.bool_or("tie_word_embeddings", false)?;
        Ok(ModelConfig {
            family,
            vocab_size: r.usize("vocab_size")?,
            hidden_size,
            intermediate_size,
            num_layers,
            num_heads,
            num_kv_heads,
            head_dim,
            rms_norm_eps: r.f64_or("rms_norm_eps", default_eps)?,
            rope,
            max_position_embeddings: r.usize_opt("max_position_embeddings")?.unwrap_or(2048),
            tie_word_embeddings,
            qkv_bias,
            o_bias,
            qk_norm,
            clip_qkv,
            moe,
            bos_token_id: r.ids("bos_token_id")?.first().copied(),
            eos_token_ids: r.ids("eos_token_id")?,
            pad_token_id: r.ids("pad_token_id")?.first().copied(),
            raw: raw.clone(),
        })
    }

    /// Whether layer `layer` has an MoE FFN.
    pub fn is_sparse_layer(&self, layer: usize) -> bool {
        self.moe.as_ref().is_some_and(|m| m.sparse_layers[layer])
    }
}

/// Keys that hold the number of routed experts, in lookup order.
pub const EXPERT_COUNT_KEYS: [&str; 2] = ["num_experts", "num_local_experts"];

fn parse_moe(
    r: &Reader,
    family: Family,
    num_layers: usize,
    intermediate_size: usize,
) -> Result<Option<MoeConfig>> {
    let (width, shared) = match family {
        Family::Llama | Family::Qwen2 | Family::Qwen3 => return Ok(None),
        Family::Mixtral | Family::Olmoe => (intermediate_size, None),
        Family::Qwen2Moe => (
            r.usize("moe_intermediate_size")?,
            r.usize_opt("shared_expert_intermediate_size")?
                .filter(|&w| w > 0),
        ),
        Family::Qwen3Moe => (r.usize("moe_intermediate_size")?, None),
    };
    // Hub checkpoints say `num_experts` (Mixtral: `num_local_experts`); transformers 5 writes
    // `num_local_experts` for every family.
    let experts_key = EXPERT_COUNT_KEYS
        .into_iter()
        .find(|k| r.get(k).is_some())
        .ok_or_else(|| {
            r.err("missing the expert count (`num_experts` or `num_local_experts`)".into())
        })?;
    let num_experts = r.usize(experts_key)?;
    let top_k = r.usize("num_experts_per_tok")?;
    if top_k == 0 || top_k > num_experts {
        return Err(r.err(format!(
            "num_experts_per_tok ({top_k}) must be in 1..={num_experts} ({experts_key})"
        )));
    }
    let router_norm = match family {
        Family::Mixtral => RouterNorm::SoftmaxTopkRenorm,
        _ if r.bool_or("norm_topk_prob", false)? => RouterNorm::SoftmaxTopkRenorm,
        _ => RouterNorm::SoftmaxTopk,
    };
    // Qwen-MoE: `mlp_only_layers` and `decoder_sparse_step` choose dense layers
    // (modeling_qwen2_moe.py, Qwen2MoeDecoderLayer.__init__).
    let sparse_layers = match family {
        Family::Qwen2Moe | Family::Qwen3Moe => {
            let step = r.usize_opt("decoder_sparse_step")?.unwrap_or(1).max(1);
            let dense: Vec<i64> = r.ids("mlp_only_layers")?;
            (0..num_layers)
                .map(|l| !dense.contains(&(l as i64)) && num_experts > 0 && (l + 1) % step == 0)
                .collect()
        }
        _ => vec![true; num_layers],
    };
    Ok(Some(MoeConfig {
        num_experts,
        top_k,
        expert_intermediate_size: width,
        router_norm,
        shared_expert_intermediate_size: shared,
        sparse_layers,
    }))
}

fn parse_rope(r: &Reader, default_theta: f64) -> Result<RopeConfig> {
    // transformers 5 folds theta and scaling into `rope_parameters`; 4.x used two keys.
    let params = r.get("rope_parameters").or_else(|| r.get("rope_scaling"));
    let theta = match params
        .and_then(|p| p.get("rope_theta"))
        .and_then(Value::as_f64)
    {
        Some(t) => t,
        None => r.f64_or("rope_theta", default_theta)?,
    };
    let Some(p) = params else {
        return Ok(RopeConfig {
            theta,
            scaling: RopeScaling::Default,
        });
    };
    let kind = p
        .get("rope_type")
        .or_else(|| p.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("default");
    let num = |key: &str| -> Result<f64> {
        p.get(key)
            .and_then(Value::as_f64)
            .ok_or_else(|| r.err(format!("rope `{kind}` needs a numeric `{key}`")))
    };
    let scaling = match kind {
        "default" => RopeScaling::Default,
        "linear" => RopeScaling::Linear {
            factor: num("factor")?,
        },
        "llama3" => RopeScaling::Llama3 {
            factor: num("factor")?,
            low_freq_factor: num("low_freq_factor")?,
            high_freq_factor: num("high_freq_factor")?,
            original_max_position_embeddings: num("original_max_position_embeddings")?,
        },
        other => {
            return Err(r.err(format!(
                "rope type `{other}` is not supported (supported: default, linear, llama3)"
            )))
        }
    };
    Ok(RopeConfig { theta, scaling })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<ModelConfig> {
        ModelConfig::from_value(v, Path::new("config.json"))
    }

    fn base(model_type: &str) -> Value {
        json!({"model_type": model_type, "hidden_size": 64, "num_attention_heads": 4,
               "num_key_value_heads": 2, "num_hidden_layers": 3, "intermediate_size": 96,
               "vocab_size": 100})
    }

    #[test]
    fn llama_defaults_follow_transformers() {
        let c = parse(base("llama")).unwrap();
        assert_eq!(c.head_dim, 16);
        assert_eq!(c.rms_norm_eps, 1e-6);
        assert_eq!(c.rope.theta, 10000.0);
        assert!(!c.tie_word_embeddings);
        assert!(c.moe.is_none());
    }

    #[test]
    fn rope_parameters_layout_of_transformers5() {
        let mut v = base("llama");
        v["rope_parameters"] = json!({"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
            "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 64});
        let c = parse(v).unwrap();
        assert_eq!(c.rope.theta, 500000.0);
        assert!(matches!(c.rope.scaling, RopeScaling::Llama3 { factor, .. } if factor == 8.0));
    }

    #[test]
    fn qwen2_moe_dense_layers() {
        let mut v = base("qwen2_moe");
        v["num_experts"] = json!(4);
        v["num_experts_per_tok"] = json!(2);
        v["moe_intermediate_size"] = json!(32);
        v["shared_expert_intermediate_size"] = json!(48);
        v["mlp_only_layers"] = json!([0]);
        let c = parse(v).unwrap();
        let m = c.moe.unwrap();
        assert_eq!(m.sparse_layers, vec![false, true, true]);
        assert_eq!(m.router_norm, RouterNorm::SoftmaxTopk);
        assert_eq!(m.shared_expert_intermediate_size, Some(48));
    }

    #[test]
    fn unsupported_family_is_named() {
        let err = parse(base("gpt_neox")).unwrap_err().to_string();
        assert!(err.contains("gpt_neox") && err.contains("llama"), "{err}");
    }

    #[test]
    fn bad_heads_are_rejected() {
        let mut v = base("llama");
        v["num_key_value_heads"] = json!(3);
        assert!(parse(v)
            .unwrap_err()
            .to_string()
            .contains("num_key_value_heads"));
    }
}
