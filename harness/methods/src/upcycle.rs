//! Sparse upcycling (Komatsuzaki et al., ICLR 2023, arXiv 2212.05055; docs/methods.md §7.1): every
//! chosen dense MLP becomes E identical expert copies behind a new, small-normal-initialised
//! router with top-k and Mixtral-style renormalised weights. Because the copies are identical
//! and the weights sum to 1, the upcycled model computes exactly what the dense model did until
//! it is trained (the invariant tested below).
use crate::error::{MethodError, Result};
use moebench_model::config::RouterNorm;
use moebench_model::layers::Linear;
use moebench_model::moe::{MoeLayer, TopK};
use moebench_model::{Family, Ffn, Model, ModelConfig};
use serde_json::{json, Value};
use std::path::Path;
use std::sync::Arc;
use tch::Tensor;

const METHOD: &str = "upcycle";

#[derive(Debug, Clone, PartialEq)]
pub struct UpcycleConfig {
    pub num_experts: i64,
    pub top_k: i64,
    /// Layers to upcycle; `None` = every layer (the common choice for decoder LLMs).
    pub layers: Option<Vec<usize>>,
    /// Standard deviation of the new router's normal initialisation.
    pub router_init_std: f64,
    pub seed: i64,
}

impl Default for UpcycleConfig {
    /// docs/methods.md §7.1's decoder default: 4 experts, top-2.
    fn default() -> Self {
        Self {
            num_experts: 4,
            top_k: 2,
            layers: None,
            router_init_std: 0.02,
            seed: 0,
        }
    }
}

impl UpcycleConfig {
    /// Reads `num_experts`, `top_k`, `layers`, `router_init_std` from a suite method's params.
    pub fn from_params(params: &serde_json::Map<String, Value>, seed: u64) -> Result<Self> {
        let mut c = Self {
            seed: seed as i64,
            ..Self::default()
        };
        for (key, value) in params {
            let bad = |msg: &str| MethodError::param(METHOD, key, format!("{msg}, got {value}"));
            match key.as_str() {
                "num_experts" => {
                    c.num_experts = value.as_i64().ok_or_else(|| bad("must be an integer"))?
                }
                "top_k" => c.top_k = value.as_i64().ok_or_else(|| bad("must be an integer"))?,
                "router_init_std" => {
                    c.router_init_std = value.as_f64().ok_or_else(|| bad("must be a number"))?
                }
                "layers" => {
                    let layers = value
                        .as_array()
                        .and_then(|a| a.iter().map(|v| v.as_u64().map(|l| l as usize)).collect())
                        .ok_or_else(|| bad("must be a list of layer indices"))?;
                    c.layers = Some(layers);
                }
                _ => return Err(MethodError::param(
                    METHOD,
                    key,
                    "is not a parameter (accepted: num_experts, top_k, layers, router_init_std)",
                )),
            }
        }
        Ok(c)
    }

    fn check(&self, num_layers: usize) -> Result<()> {
        if self.num_experts < 1 {
            return Err(MethodError::param(
                METHOD,
                "num_experts",
                "must be at least 1",
            ));
        }
        if !(1..=self.num_experts).contains(&self.top_k) {
            return Err(MethodError::param(
                METHOD,
                "top_k",
                format!("must be between 1 and num_experts ({})", self.num_experts),
            ));
        }
        if let Some(bad) = self.layers.iter().flatten().find(|&&l| l >= num_layers) {
            return Err(MethodError::param(
                METHOD,
                "layers",
                format!("has layer {bad}, but the model has {num_layers} layers (0-based)"),
            ));
        }
        if self.router_init_std.is_nan() || self.router_init_std <= 0.0 {
            return Err(MethodError::param(
                METHOD,
                "router_init_std",
                "must be positive",
            ));
        }
        Ok(())
    }
}

/// Replaces the chosen dense MLPs of `model` by upcycled MoE layers, in place.
///
/// When every layer is upcycled, a Llama model becomes a Mixtral model (config and checkpoint
/// names), so `save_pretrained` writes a checkpoint transformers loads. Upcycling only some
/// layers is supported in memory; saving it is refused by `save_pretrained` because no
/// transformers family describes a Llama with some MoE layers and no shared expert.
pub fn upcycle(model: &mut Model, cfg: &UpcycleConfig) -> Result<()> {
    cfg.check(model.num_layers())?;
    if model.config.moe.is_some() {
        return Err(MethodError::unsupported(
            METHOD,
            "the model is already an MoE; upcycling starts from a dense model",
        ));
    }
    let chosen: Vec<bool> = (0..model.num_layers())
        .map(|l| cfg.layers.as_ref().is_none_or(|ls| ls.contains(&l)))
        .collect();
    tch::manual_seed(cfg.seed);
    let (e, k) = (cfg.num_experts, cfg.top_k);
    let _guard = tch::no_grad_guard();
    let mut layers = Vec::new();
    for (l, block) in model.layers.iter().enumerate().filter(|(l, _)| chosen[*l]) {
        let Ffn::Dense(mlp) = &block.ffn else {
            unreachable!("dense model checked above")
        };
        let h = mlp.gate.weight.size()[1];
        let router = Linear {
            weight: Tensor::randn([e, h], (mlp.gate.weight.kind(), mlp.gate.weight.device()))
                * cfg.router_init_std,
            bias: None,
        };
        let selector = Arc::new(TopK {
            k,
            norm: RouterNorm::SoftmaxTopkRenorm,
        });
        let moe = MoeLayer::copies_of(mlp, e, router, selector);
        layers.push((l, moe));
    }
    model.install_moe(layers, k as usize, RouterNorm::SoftmaxTopkRenorm)?;
    if chosen.iter().all(|c| *c) && model.config.family == Family::Llama {
        model.config = mixtral_config(&model.config, e, k)?;
    }
    Ok(())
}

/// The Mixtral config of a Llama config whose every MLP became `e` experts with top-`k`.
fn mixtral_config(llama: &ModelConfig, e: i64, k: i64) -> Result<ModelConfig> {
    let mut raw = llama.raw.clone();
    let obj = raw.as_object_mut().expect("configs are JSON objects");
    for key in [
        "attention_bias",
        "mlp_bias",
        "pretraining_tp",
        "_model_name_or_path",
    ] {
        obj.remove(key);
    }
    let extra = json!({
        "model_type": Family::Mixtral.model_type(),
        "architectures": [Family::Mixtral.architecture()],
        "num_local_experts": e,
        "num_experts_per_tok": k,
        "router_aux_loss_coef": 0.01,
        "router_jitter_noise": 0.0,
        "output_router_logits": false,
        "sliding_window": null,
        "rms_norm_eps": llama.rms_norm_eps,
        "head_dim": llama.head_dim,
    });
    for (key, value) in extra.as_object().expect("object") {
        obj.insert(key.clone(), value.clone());
    }
    Ok(ModelConfig::from_value(
        raw,
        Path::new("<upcycled config>"),
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    fn tiny_llama() -> Model {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny/llama");
        Model::load(&dir, Device::Cpu, Kind::Float).unwrap()
    }

    fn ids() -> Tensor {
        Tensor::from_slice(&[3i64, 17, 42, 99, 5, 64, 7, 1, 120, 33]).view([2, 5])
    }

    fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
        f64::try_from((a - b).abs().max()).unwrap()
    }

    /// docs/methods.md §8.8: before training, the upcycled model's logits equal the dense model's.
    #[test]
    fn upcycled_logits_equal_dense_logits() {
        let dense = tiny_llama();
        let expected = dense.forward(&ids(), None, None);
        for (experts, k) in [(4, 2), (8, 1), (3, 3)] {
            let mut model = tiny_llama();
            let cfg = UpcycleConfig {
                num_experts: experts,
                top_k: k,
                ..UpcycleConfig::default()
            };
            upcycle(&mut model, &cfg).unwrap();
            assert_eq!(model.config.family, Family::Mixtral);
            let got = model.forward(&ids(), None, None);
            let diff = max_abs_diff(&got, &expected);
            assert!(diff < 1e-5, "E={experts} k={k}: max |Δ| {diff}");
        }
    }

    #[test]
    fn partial_upcycling_keeps_other_layers_dense_and_the_output() {
        let dense = tiny_llama();
        let expected = dense.forward(&ids(), None, None);
        let mut model = tiny_llama();
        let cfg = UpcycleConfig {
            layers: Some(vec![1]),
            ..UpcycleConfig::default()
        };
        upcycle(&mut model, &cfg).unwrap();
        assert!(matches!(model.layers[0].ffn, Ffn::Dense(_)));
        assert!(matches!(model.layers[1].ffn, Ffn::Moe(_)));
        assert_eq!(
            model.config.moe.as_ref().unwrap().sparse_layers,
            [false, true]
        );
        assert!(max_abs_diff(&model.forward(&ids(), None, None), &expected) < 1e-5);
        let dir = tempfile::tempdir().unwrap();
        let err = moebench_model::save::save_pretrained(&model, None, &dir.path().join("x"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`llama` model with MoE layers has no transformers format"),
            "{err}"
        );
    }

    #[test]
    fn saved_upcycled_model_reloads_as_mixtral_with_the_same_logits() {
        let mut model = tiny_llama();
        upcycle(&mut model, &UpcycleConfig::default()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("up");
        moebench_model::save::save_pretrained(&model, None, &out).unwrap();
        let reloaded = Model::load(&out, Device::Cpu, Kind::Float).unwrap();
        assert_eq!(reloaded.config.family, Family::Mixtral);
        assert_eq!(reloaded.config.moe.as_ref().unwrap().num_experts, 4);
        let diff = max_abs_diff(
            &reloaded.forward(&ids(), None, None),
            &model.forward(&ids(), None, None),
        );
        assert!(diff < 1e-6, "max |Δ| {diff}");
    }

    #[test]
    fn bad_parameters_are_named() {
        let mut model = tiny_llama();
        let err = upcycle(
            &mut model,
            &UpcycleConfig {
                top_k: 5,
                ..UpcycleConfig::default()
            },
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("`top_k`") && err.contains("between 1 and num_experts (4)"),
            "{err}"
        );
        let params = json!({"experts": 4}).as_object().unwrap().clone();
        let err = UpcycleConfig::from_params(&params, 0)
            .unwrap_err()
            .to_string();
        assert!(err.contains("`experts` is not a parameter"), "{err}");
        let err = upcycle(
            &mut model,
            &UpcycleConfig {
                layers: Some(vec![2]),
                ..UpcycleConfig::default()
            },
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("has layer 2, but the model has 2 layers"),
            "{err}"
        );
    }
}
