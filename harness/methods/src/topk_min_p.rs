//! Top-k with a relative probability floor: a token keeps at most k experts, and only those
//! whose softmax probability is at least `min_p` times its top expert's — the min-p rule of
//! sampling applied to routing. Confident tokens then use fewer experts than k, uncertain ones
//! all k: a training-free, per-token causal way to trade active experts for quality, next to
//! Top-p and DTop-p on the same cost axis. Weights follow the checkpoint's normalisation over
//! the kept experts (renormalised for Mixtral-style routers, raw probabilities otherwise).
//!
//! This module is the whole method: the selector and its catalogue entry.
use crate::error::{MethodError, Result};
use crate::method::{
    at_most_experts, moe_config, shared, swap, MethodEnv, ModelFacts, TypedMethod,
};
use crate::routing::{real_tokens, LayerSelectors};
use moebench_core::params::{
    MethodKind, MethodSchema, ParamDefault as D, ParamSpec as P, ParamType as T,
};
use moebench_model::config::RouterNorm;
use moebench_model::moe::{Selection, Selector};
use moebench_model::Model;
use serde::Deserialize;
use std::sync::Arc;
use tch::{Kind, Tensor};

#[derive(Debug, Clone)]
pub struct TopKMinP {
    pub k: i64,
    /// Relative floor in (0, 1]; 1 keeps only the top expert (and its ties).
    pub min_p: f64,
    pub norm: RouterNorm,
}

impl Selector for TopKMinP {
    fn describe(&self) -> String {
        let norm = match self.norm {
            RouterNorm::SoftmaxTopkRenorm => "renorm",
            RouterNorm::SoftmaxTopk => "raw",
        };
        format!("topk_min_p(k={},min_p={},{norm})", self.k, self.min_p)
    }

    fn select(&self, logits: &Tensor, token_mask: Option<&Tensor>) -> Selection {
        let probs = logits.softmax(-1, Kind::Float);
        let (top, idx) = probs.topk(self.k, -1, true, true);
        let floor = top.narrow(-1, 0, 1) * self.min_p;
        let keep = top.ge_tensor(&floor);
        let mut kept = top * keep.to_kind(Kind::Float);
        if self.norm == RouterNorm::SoftmaxTopkRenorm {
            kept = &kept / kept.sum_dim_intlist(-1, true, Kind::Float);
        }
        let real = real_tokens(logits, token_mask).unsqueeze(-1);
        let mask = probs
            .zeros_like()
            .to_kind(Kind::Bool)
            .scatter(-1, &idx, &keep)
            .logical_and(&real);
        let weights = probs.zeros_like().scatter(-1, &idx, &kept) * real.to_kind(Kind::Float);
        Selection { weights, mask }
    }
}

/// The catalogue entry of [`TopKMinP`].
pub struct TopKMinPMethod;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopKMinPParams {
    k: Option<i64>,
    min_p: f64,
}

const METHOD: &str = "topk_min_p";

impl TypedMethod for TopKMinPMethod {
    type Params = TopKMinPParams;

    fn schema(&self) -> &'static MethodSchema {
        const SCHEMA: MethodSchema = MethodSchema {
            name: METHOD,
            kind: MethodKind::RouterSwap,
            description: "top-k keeping only experts with probability ≥ min_p × the top expert's (fewer active experts on confident tokens)",
            calibrated: false,
            params: &[
                P::new("k", T::int(1), D::FromModel("top_k"), "most experts per token"),
                P::new("min_p", T::PROBABILITY, D::Float(0.1), "relative probability floor (1: only the top expert)"),
            ],
        };
        &SCHEMA
    }

    fn plan(&self, p: &TopKMinPParams, before: &ModelFacts) -> Result<ModelFacts> {
        at_most_experts(METHOD, "k", p.k.unwrap_or(1) as f64, before)?;
        Ok(before.clone())
    }

    fn apply(&self, model: Model, p: &TopKMinPParams, _env: &dyn MethodEnv) -> Result<Model> {
        swap(self, model, p)
    }

    fn selectors(&self, model: &Model, p: &TopKMinPParams) -> Option<Result<LayerSelectors>> {
        Some(moe_config(model, METHOD).and_then(|moe| {
            let k = p.k.unwrap_or(moe.top_k as i64);
            if k as usize > moe.num_experts {
                return Err(MethodError::param(
                    METHOD,
                    "k",
                    format!("is {k}; the model has {} experts", moe.num_experts),
                ));
            }
            let selector = TopKMinP {
                k,
                min_p: p.min_p,
                norm: moe.router_norm,
            };
            shared(model, METHOD, Arc::new(selector))
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use moebench_model::moe::TopK;

    fn select(min_p: f64, norm: RouterNorm, logits: &[f32]) -> (Vec<bool>, Vec<f32>) {
        let logits = Tensor::from_slice(logits).view([1, 1, logits.len() as i64]);
        let s = TopKMinP { k: 3, min_p, norm }.select(&logits, None);
        (
            Vec::try_from(s.mask.flatten(0, -1)).unwrap(),
            Vec::try_from(s.weights.flatten(0, -1)).unwrap(),
        )
    }

    #[test]
    fn drops_top_k_experts_below_the_relative_floor() {
        // probabilities ∝ e^[3, 2.9, 0, -5]: the third is far below 0.5 × the first.
        let (mask, _) = select(0.5, RouterNorm::SoftmaxTopk, &[3.0, 2.9, 0.0, -5.0]);
        assert_eq!(mask, [true, true, false, false]);
        let (mask, w) = select(0.5, RouterNorm::SoftmaxTopkRenorm, &[3.0, 2.9, 0.0, -5.0]);
        assert_eq!(mask, [true, true, false, false]);
        assert!((w[0] + w[1] - 1.0).abs() < 1e-6);
        assert_eq!(w[2], 0.0);
    }

    #[test]
    fn a_tiny_floor_is_plain_top_k() {
        tch::manual_seed(0);
        let logits = Tensor::randn([2, 5, 8], (Kind::Float, tch::Device::Cpu));
        for norm in [RouterNorm::SoftmaxTopk, RouterNorm::SoftmaxTopkRenorm] {
            let a = TopKMinP {
                k: 3,
                min_p: 1e-30,
                norm,
            }
            .select(&logits, None);
            let b = TopK { k: 3, norm }.select(&logits, None);
            assert!(a.mask.equal(&b.mask));
            assert!(a.weights.allclose(&b.weights, 1e-6, 1e-7, false));
        }
    }

    #[test]
    fn padding_gets_no_expert() {
        let logits = Tensor::randn([1, 3, 4], (Kind::Float, tch::Device::Cpu));
        let mask = Tensor::from_slice(&[true, false, true]).view([1, 3]);
        let s = TopKMinP {
            k: 2,
            min_p: 0.1,
            norm: RouterNorm::SoftmaxTopk,
        }
        .select(&logits, Some(&mask));
        let counts: Vec<i64> = Vec::try_from(s.active_counts().flatten(0, -1)).unwrap();
        assert_eq!(counts[1], 0);
        assert!(counts[0] >= 1 && counts[2] >= 1);
    }
}
