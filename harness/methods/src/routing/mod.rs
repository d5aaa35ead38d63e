//! Selectors beyond the checkpoint's top-k (METHODS.md §8.3): fixed Top-p (Huang et al., §7.5),
//! DTop-p with its PI controller (§5.3), Expert Choice (§7.4) and USMoE (§4.3). Each one is a
//! [`Selector`] the MoE layer calls; the checkpoint's own top-k is
//! [`moebench_model::moe::TopK`].
//!
//! Conventions shared by every selector here:
//! - padding tokens (`token_mask` false) get no expert and never take budget (METHODS.md §4.7.3);
//! - combine weights stay differentiable w.r.t. the logits and the selector's parameters, only
//!   the boolean mask comes from non-differentiable ops (sort, top-k, threshold);
//! - non-causal selectors (Expert Choice, USMoE) take a [`GroupMode`] that says which tokens
//!   share a budget, and `describe()` records it, because their numbers mean different things
//!   per mode (§4.7.1, §8.3).
//!
//! Two entry points build selectors from a method's JSON parameters: [`build_selector`] for the
//! stateless selectors (one instance serves every layer), and [`build_layer_selectors`], which
//! also builds DTop-p: DTop-p needs one selector per MoE layer (each has its own learnable
//! scale) and a PI controller shared between them, which the caller must step.
mod controller;
mod dtop_p;
mod expert_choice;
mod topp;
mod usmoe;

pub use controller::{PiController, SharedController};
pub use dtop_p::{measure_logit_std, DTopP, DTopPConfig};
pub use expert_choice::ExpertChoice;
pub use topp::TopP;
pub use usmoe::Usmoe;

use crate::calibration::BlockStream;
use crate::error::{MethodError, Result};
use moebench_model::config::RouterNorm;
use moebench_model::moe::{MoeLayer, Selection, Selector, TopK};
use moebench_model::observer::{ForwardObserver, MoeEvent};
use moebench_model::{Ffn, Model};
use serde_json::{Map, Value};
use std::sync::Arc;
use tch::{Kind, Tensor};

/// Which tokens share the budget of a non-causal selector (METHODS.md §4.7.1).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum GroupMode {
    /// Group = the real tokens of one sequence (row b); the authors' "prefill" mode. Token t's
    /// experts depend on later tokens, so causal LM perplexity in this mode leaks the future.
    FullSequence,
    /// Group = the tokens of all sequences at the same position t (column t), i.e. the
    /// concurrent sequences of one decode step. Causal within each sequence.
    DecodeBatch,
    /// Per-token fallback: select every expert whose score exceeds `threshold`, fitted on
    /// calibration data with [`fit_threshold`] so that the mean count matches the budget.
    Causal { threshold: f64 },
}

impl GroupMode {
    /// Parses the `mode` parameter; `causal` needs the calibrated `threshold` parameter.
    fn from_params(method: &str, params: &Map<String, Value>) -> Result<Self> {
        let threshold = opt_f64(method, params, "threshold")?;
        let mode = match str_param(method, params, "mode", "full_sequence")? {
            "full_sequence" => GroupMode::FullSequence,
            "decode_batch" => GroupMode::DecodeBatch,
            "causal" => {
                let threshold = threshold.ok_or_else(|| {
                    MethodError::param(
                        method,
                        "threshold",
                        "is required with mode=causal (fit it with routing::fit_threshold)",
                    )
                })?;
                return Ok(GroupMode::Causal { threshold });
            }
            other => {
                return Err(MethodError::param(
                    method,
                    "mode",
                    format!("is `{other}`; allowed: full_sequence, decode_batch, causal"),
                ))
            }
        };
        match threshold {
            Some(_) => Err(MethodError::param(
                method,
                "threshold",
                "is only used with mode=causal",
            )),
            None => Ok(mode),
        }
    }

    fn describe(&self) -> String {
        match self {
            GroupMode::FullSequence => "full_sequence".into(),
            GroupMode::DecodeBatch => "decode_batch".into(),
            GroupMode::Causal { threshold } => format!("causal(thr={threshold:.6})"),
        }
    }

    /// True unless a token's experts depend on later tokens of its own sequence.
    fn is_causal(&self) -> bool {
        !matches!(self, GroupMode::FullSequence)
    }

    /// Boolean `[B, T, N]` selection of `scores` under this mode; padding never selected.
    fn select(&self, scores: &Tensor, real: &Tensor, budget: GroupBudget) -> Tensor {
        let transpose = match self {
            GroupMode::Causal { threshold } => {
                return scores.gt(*threshold).logical_and(&real.unsqueeze(-1))
            }
            GroupMode::FullSequence => false,
            GroupMode::DecodeBatch => true,
        };
        // Groups on dim 0: rows as they are, or columns brought to dim 0.
        let grouped = |t: &Tensor| {
            if transpose {
                t.transpose(0, 1)
            } else {
                t.shallow_clone()
            }
        };
        let (scores, real) = (grouped(scores), grouped(real));
        let (g, n, e) = scores.size3().expect("scores are [B, T, N]");
        let masked = scores
            .detach()
            .masked_fill(&real.unsqueeze(-1).logical_not(), f64::NEG_INFINITY);
        let real_counts = Vec::<i64>::try_from(real.sum_dim_intlist(1, false, Kind::Int64))
            .expect("token counts");
        let budgets: Vec<i64> = real_counts
            .iter()
            .map(|&c| budget.per_group(c, e))
            .collect();
        let budgets = Tensor::from_slice(&budgets).to_device(scores.device());
        let mask = match budget {
            GroupBudget::Shared { .. } => rank_desc(&masked.view([g, n * e]), 1)
                .lt_tensor(&budgets.unsqueeze(1))
                .view([g, n, e]),
            GroupBudget::PerExpert { .. } => {
                rank_desc(&masked, 1).lt_tensor(&budgets.view([g, 1, 1]))
            }
        };
        let mask = mask.logical_and(&real.unsqueeze(-1));
        if transpose {
            mask.transpose(0, 1).contiguous()
        } else {
            mask
        }
    }
}

/// How a non-causal selector spends its budget in a group of n real tokens and N experts.
#[derive(Debug, Clone, Copy)]
enum GroupBudget {
    /// USMoE: round(n·k̄) (token, expert) pairs shared by the whole group.
    Shared { per_token: f64 },
    /// Expert Choice: each expert takes round(n·c/N) tokens, at most n.
    PerExpert { capacity: f64 },
}

impl GroupBudget {
    fn per_group(&self, n: i64, num_experts: i64) -> i64 {
        match *self {
            GroupBudget::Shared { per_token } => (n as f64 * per_token).round() as i64,
            GroupBudget::PerExpert { capacity } => {
                ((n as f64 * capacity / num_experts as f64).round() as i64).min(n)
            }
        }
    }
}

/// Rank of each entry along `dim` in descending order (0 = largest): the inverse of the
/// sorting permutation, so a budget per group becomes a single `rank < budget` comparison.
fn rank_desc(x: &Tensor, dim: i64) -> Tensor {
    x.argsort(dim, true).argsort(dim, false)
}

/// The threshold for [`GroupMode::Causal`]: `scores` are `[M, N]` over the real calibration
/// tokens; returns t such that round(M·budget) entries are > t (the midpoint between the
/// two order statistics around that count, so float noise does not move the count).
/// Ties at the boundary can make the count differ.
pub fn fit_threshold(scores: &Tensor, per_token_budget: f64) -> f64 {
    let sorted = Vec::<f64>::try_from(
        scores
            .detach()
            .flatten(0, -1)
            .to_kind(Kind::Double)
            .sort(0, true)
            .0,
    )
    .expect("scores to f64");
    let m = scores.size()[0] as f64;
    let count = ((m * per_token_budget).round() as usize).min(sorted.len());
    match count {
        0 => sorted.first().copied().unwrap_or(0.0),
        c if c == sorted.len() => sorted[c - 1] - 1.0,
        c => 0.5 * (sorted[c - 1] + sorted[c]),
    }
}

/// A non-causal selector whose causal fallback is a threshold on its scores (USMoE, Expert
/// Choice), so that [`fit_causal_thresholds`] can fit it.
pub trait ThresholdRouting {
    /// The scores a [`GroupMode::Causal`] threshold applies to, `[.., N]`.
    fn scores(&self, logits: &Tensor) -> Tensor;
    /// Experts per token on average the threshold must spend (USMoE's k̄, EC's capacity).
    fn per_token_budget(&self) -> f64;
    /// This selector with `mode = causal(threshold)`.
    fn causal(&self, threshold: f64) -> Arc<dyn Selector>;
}

impl ThresholdRouting for Usmoe {
    fn scores(&self, logits: &Tensor) -> Tensor {
        Usmoe::scores(self, logits)
    }
    fn per_token_budget(&self) -> f64 {
        self.k
    }
    fn causal(&self, threshold: f64) -> Arc<dyn Selector> {
        Arc::new(Usmoe {
            mode: GroupMode::Causal { threshold },
            ..self.clone()
        })
    }
}

impl ThresholdRouting for ExpertChoice {
    fn scores(&self, logits: &Tensor) -> Tensor {
        ExpertChoice::scores(self, logits)
    }
    fn per_token_budget(&self) -> f64 {
        self.capacity
    }
    fn causal(&self, threshold: f64) -> Arc<dyn Selector> {
        Arc::new(ExpertChoice::new(
            self.capacity,
            GroupMode::Causal { threshold },
        ))
    }
}

/// Scores of the real tokens of one MoE layer's calls, `[M, N]` each.
struct ScoreRows<'a> {
    routing: &'a dyn ThresholdRouting,
    rows: Vec<Tensor>,
}

impl ForwardObserver for ScoreRows<'_> {
    fn on_moe(&mut self, _layer: usize, moe: &MoeLayer, event: &MoeEvent<'_>) {
        let n = moe.num_experts();
        let scores = self.routing.scores(event.router_logits).reshape([-1, n]);
        self.rows.push(match event.token_mask {
            Some(m) => scores.index_select(0, &m.reshape([-1]).nonzero().squeeze_dim(1)),
            None => scores,
        });
    }
}

/// USMoE's (and Expert Choice's) causal mode fitted on calibration data (METHODS.md §4.7.1's
/// causal fallback, so `mode: causal` needs no hand-given threshold): MoE layer by layer, in
/// order, the threshold of layer ℓ is [`fit_threshold`] on the scores of its real calibration
/// tokens — computed on the hidden states the already installed causal selectors of layers < ℓ
/// produce, so every layer spends its budget on the inputs it will see — and `routing` in
/// causal mode with that threshold becomes layer ℓ's selector. Returns `(layer, threshold)`.
pub fn fit_causal_thresholds(
    model: &mut Model,
    batches: &[(Tensor, Tensor)],
    routing: &dyn ThresholdRouting,
) -> Result<Vec<(usize, f64)>> {
    const METHOD: &str = "causal threshold";
    let moe_layers: Vec<usize> = (0..model.num_layers())
        .filter(|&l| matches!(model.layers[l].ffn, Ffn::Moe(_)))
        .collect();
    if moe_layers.is_empty() {
        return Err(MethodError::unsupported(
            METHOD,
            "the model has no MoE layer",
        ));
    }
    let mut stream = BlockStream::new(model, batches, METHOD)?;
    let mut fitted = Vec::with_capacity(moe_layers.len());
    for l in moe_layers {
        stream.advance_to(model, l);
        let mut rows = ScoreRows {
            routing,
            rows: Vec::new(),
        };
        stream.observe(model, &mut rows);
        let scores = Tensor::cat(&rows.rows, 0);
        if scores.size()[0] == 0 {
            return Err(MethodError::param(
                METHOD,
                "batches",
                "hold no real token (attention mask 1) to fit a threshold on",
            ));
        }
        let threshold = fit_threshold(&scores, routing.per_token_budget());
        let Ffn::Moe(moe) = &mut model.layers[l].ffn else {
            unreachable!("MoE layer index")
        };
        moe.selector = routing.causal(threshold);
        fitted.push((l, threshold));
    }
    Ok(fitted)
}

/// `[B, T]` bool: real tokens (all, when there is no mask).
fn real_tokens(logits: &Tensor, token_mask: Option<&Tensor>) -> Tensor {
    match token_mask {
        Some(m) => m.to_kind(Kind::Bool),
        None => {
            let s = logits.size();
            Tensor::ones([s[0], s[1]], (Kind::Bool, logits.device()))
        }
    }
}

/// Zeroes `scores` outside `mask` (keeping the gradient of the selected entries) and, with
/// `renormalize`, rescales each token's selected weights to sum 1. Tokens with no expert keep
/// all-zero weights.
fn selection(scores: &Tensor, mask: Tensor, renormalize: bool) -> Selection {
    let mut weights = scores * mask.to_kind(Kind::Float);
    if renormalize {
        weights = &weights
            / weights
                .sum_dim_intlist(-1, true, Kind::Float)
                .clamp_min(1e-12);
    }
    Selection { weights, mask }
}

/// Selectors, one per MoE layer, plus the PI controllers the caller must step (DTop-p only;
/// empty for the stateless selectors, which share one instance across layers).
#[derive(Debug)]
pub struct LayerSelectors {
    pub selectors: Vec<Arc<dyn Selector>>,
    pub controllers: Vec<SharedController>,
}

/// Builds a stateless selector by name (`topk`, `topp`, `expert_choice`, `usmoe`); see the
/// module docs of each for its parameters. `dtop_p` is refused: it needs one selector per layer
/// and a shared controller, so use [`build_layer_selectors`] (or [`DTopP::for_model`]).
pub fn build_selector(
    name: &str,
    params: &Map<String, Value>,
    num_experts: i64,
    model_top_k: i64,
    norm: RouterNorm,
) -> Result<Arc<dyn Selector>> {
    let n = num_experts as f64;
    let k_default = model_top_k as f64;
    Ok(match name {
        "topk" => {
            allow_keys(name, params, &["k"])?;
            let k = in_range(name, params, "k", k_default, 1.0, n)?;
            if k.fract() != 0.0 {
                return Err(MethodError::param(name, "k", "must be an integer"));
            }
            Arc::new(TopK { k: k as i64, norm })
        }
        "topp" => {
            allow_keys(name, params, &["p"])?;
            Arc::new(TopP::new(prob(name, params, "p", 0.4)?))
        }
        "expert_choice" => {
            allow_keys(name, params, &["capacity", "mode", "threshold"])?;
            let capacity = f64_param(name, params, "capacity", k_default)?;
            if !(capacity > 0.0 && capacity <= n) {
                return Err(MethodError::param(
                    name,
                    "capacity",
                    format!("is {capacity}; allowed: (0, {n}] (experts per token on average)"),
                ));
            }
            let mode = GroupMode::from_params(name, params)?;
            Arc::new(ExpertChoice::new(capacity, mode))
        }
        "usmoe" => {
            allow_keys(
                name,
                params,
                &["k", "r", "renormalize", "mode", "threshold"],
            )?;
            let k = in_range(name, params, "k", k_default, 1.0, n)?;
            let r = in_range(name, params, "r", 0.5, 0.0, 1.0)?;
            let renormalize = bool_param(name, params, "renormalize", false)?;
            let mode = GroupMode::from_params(name, params)?;
            Arc::new(Usmoe::new(k, r, renormalize, norm, mode))
        }
        "dtop_p" => {
            return Err(MethodError::unsupported(
                name,
                "needs one selector per MoE layer and a shared PI controller: \
                 use routing::build_layer_selectors or DTopP::for_model",
            ))
        }
        other => {
            return Err(MethodError::param(
                other,
                "name",
                "is not a selector; allowed: topk, topp, expert_choice, usmoe, dtop_p",
            ))
        }
    })
}

/// Builds the selectors of all `num_moe_layers` MoE layers: DTop-p from `params` {target
/// (default `model_top_k`), p0, kp, ki, per_layer (default false), fixed_scale (the calibrated,
/// training-free variant)}, any other name through [`build_selector`], shared by every layer.
pub fn build_layer_selectors(
    name: &str,
    params: &Map<String, Value>,
    num_moe_layers: usize,
    num_experts: i64,
    model_top_k: i64,
    norm: RouterNorm,
) -> Result<LayerSelectors> {
    if name != "dtop_p" {
        let selector = build_selector(name, params, num_experts, model_top_k, norm)?;
        return Ok(LayerSelectors {
            selectors: vec![selector; num_moe_layers],
            controllers: Vec::new(),
        });
    }
    allow_keys(
        name,
        params,
        &["target", "p0", "kp", "ki", "per_layer", "fixed_scale"],
    )?;
    let defaults = DTopPConfig::new(num_experts, model_top_k as f64);
    let cfg = DTopPConfig {
        target: in_range(
            name,
            params,
            "target",
            defaults.target,
            1.0,
            num_experts as f64,
        )?,
        p0: prob(name, params, "p0", defaults.p0)?,
        kp: in_range(name, params, "kp", defaults.kp, 0.0, f64::INFINITY)?,
        ki: in_range(name, params, "ki", defaults.ki, 0.0, f64::INFINITY)?,
        per_layer: bool_param(name, params, "per_layer", defaults.per_layer)?,
        fixed_scales: fixed_scales(name, params, num_moe_layers)?,
        ..defaults
    };
    let (selectors, controllers) = DTopP::for_model(num_moe_layers, &cfg)?;
    Ok(LayerSelectors {
        selectors: selectors
            .into_iter()
            .map(|s| s as Arc<dyn Selector>)
            .collect(),
        controllers,
    })
}

/// `fixed_scale`: one positive number for every layer, or a list with one per MoE layer (e.g.
/// the s_ℓ a DTop-p training run learned).
fn fixed_scales(
    method: &str,
    params: &Map<String, Value>,
    num_moe_layers: usize,
) -> Result<Option<Vec<f64>>> {
    let Some(value) = params.get("fixed_scale") else {
        return Ok(None);
    };
    let bad = || {
        MethodError::param(
            method,
            "fixed_scale",
            format!(
                "is {value}; it must be a number > 0 or a list of {num_moe_layers} such numbers \
                 (one per MoE layer)"
            ),
        )
    };
    let scales: Vec<f64> = match value {
        Value::Array(items) => items
            .iter()
            .map(|v| v.as_f64().ok_or_else(bad))
            .collect::<Result<_>>()?,
        other => vec![other.as_f64().ok_or_else(bad)?; num_moe_layers],
    };
    if scales.len() != num_moe_layers || scales.iter().any(|s| !(*s > 0.0 && s.is_finite())) {
        return Err(bad());
    }
    Ok(Some(scales))
}

fn allow_keys(method: &str, params: &Map<String, Value>, allowed: &[&str]) -> Result<()> {
    match params.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(MethodError::param(
            method,
            k,
            format!("is unknown; allowed: {}", allowed.join(", ")),
        )),
        None => Ok(()),
    }
}

fn opt_f64(method: &str, params: &Map<String, Value>, key: &str) -> Result<Option<f64>> {
    params
        .get(key)
        .map(|v| {
            v.as_f64().ok_or_else(|| {
                MethodError::param(method, key, format!("must be a number, got {v}"))
            })
        })
        .transpose()
}

fn f64_param(method: &str, params: &Map<String, Value>, key: &str, default: f64) -> Result<f64> {
    Ok(opt_f64(method, params, key)?.unwrap_or(default))
}

/// A number in the closed range [lo, hi].
fn in_range(
    method: &str,
    params: &Map<String, Value>,
    key: &str,
    default: f64,
    lo: f64,
    hi: f64,
) -> Result<f64> {
    let v = f64_param(method, params, key, default)?;
    if v >= lo && v <= hi {
        Ok(v)
    } else {
        Err(MethodError::param(
            method,
            key,
            format!("is {v}; allowed: [{lo}, {hi}]"),
        ))
    }
}

/// A probability threshold in (0, 1].
fn prob(method: &str, params: &Map<String, Value>, key: &str, default: f64) -> Result<f64> {
    let v = f64_param(method, params, key, default)?;
    if v > 0.0 && v <= 1.0 {
        Ok(v)
    } else {
        Err(MethodError::param(
            method,
            key,
            format!("is {v}; allowed: (0, 1]"),
        ))
    }
}

fn bool_param(method: &str, params: &Map<String, Value>, key: &str, default: bool) -> Result<bool> {
    params.get(key).map_or(Ok(default), |v| {
        v.as_bool().ok_or_else(|| {
            MethodError::param(method, key, format!("must be true or false, got {v}"))
        })
    })
}

fn str_param<'a>(
    method: &str,
    params: &'a Map<String, Value>,
    key: &str,
    default: &'a str,
) -> Result<&'a str> {
    params.get(key).map_or(Ok(default), |v| {
        v.as_str()
            .ok_or_else(|| MethodError::param(method, key, format!("must be a string, got {v}")))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn params(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn err(name: &str, v: Value) -> String {
        build_selector(name, &params(v), 8, 2, RouterNorm::SoftmaxTopk)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn build_selector_defaults_and_descriptions() {
        let build = |name: &str, v: Value| {
            build_selector(name, &params(v), 8, 2, RouterNorm::SoftmaxTopk)
                .unwrap()
                .describe()
        };
        assert_eq!(build("topk", json!({})), "topk(k=2,raw)");
        assert_eq!(build("topp", json!({})), "topp(p=0.4)");
        assert_eq!(
            build("expert_choice", json!({"mode": "decode_batch"})),
            "expert_choice(c=2,mode=decode_batch)"
        );
        assert_eq!(
            build("usmoe", json!({"k": 1.5})),
            "usmoe(k=1.5,r=0.5,weights=raw,mode=full_sequence)"
        );
        assert_eq!(
            build("usmoe", json!({"mode": "causal", "threshold": 0.25})),
            "usmoe(k=2,r=0.5,weights=raw,mode=causal(thr=0.250000))"
        );
    }

    #[test]
    fn build_selector_rejects_bad_params_naming_them() {
        assert!(err("topp", json!({"p": 1.5})).contains("`p` is 1.5; allowed: (0, 1]"));
        assert!(err("topp", json!({"q": 0.5})).contains("`q` is unknown"));
        assert!(err("topk", json!({"k": 9})).contains("`k` is 9; allowed: [1, 8]"));
        assert!(err("usmoe", json!({"k": 0.5})).contains("`k`"));
        assert!(err("usmoe", json!({"r": -0.1})).contains("`r` is -0.1; allowed: [0, 1]"));
        assert!(err("usmoe", json!({"mode": "batch"})).contains("`mode` is `batch`"));
        assert!(err("usmoe", json!({"mode": "causal"})).contains("`threshold` is required"));
        assert!(err("expert_choice", json!({"capacity": 0})).contains("`capacity`"));
        assert!(err("dtop_p", json!({})).contains("build_layer_selectors"));
    }

    #[test]
    fn build_layer_selectors_shares_or_splits_controllers() {
        let build = |v: Value| {
            build_layer_selectors("dtop_p", &params(v), 3, 8, 2, RouterNorm::SoftmaxTopk).unwrap()
        };
        let global = build(json!({}));
        assert_eq!((global.selectors.len(), global.controllers.len()), (3, 1));
        let per_layer = build(json!({"per_layer": true, "fixed_scale": 1.0}));
        assert_eq!(per_layer.controllers.len(), 3);
        assert!(per_layer.selectors[0].parameters().is_empty());
        assert_eq!(global.selectors[1].parameters().len(), 1);
        let topk =
            build_layer_selectors("topk", &Map::new(), 3, 8, 2, RouterNorm::SoftmaxTopk).unwrap();
        assert_eq!((topk.selectors.len(), topk.controllers.len()), (3, 0));
    }

    #[test]
    fn fit_threshold_gives_the_requested_mean_count() {
        tch::manual_seed(3);
        let scores = Tensor::rand([50, 8], (Kind::Float, tch::Device::Cpu));
        for budget in [0.0, 0.5, 1.5, 2.0, 8.0] {
            let t = fit_threshold(&scores, budget);
            let count = i64::try_from(scores.gt(t).sum(Kind::Int64)).unwrap();
            assert_eq!(count, (50.0 * budget).round() as i64, "budget {budget}");
        }
    }

    #[test]
    fn causal_mode_spends_the_fitted_budget_per_token_on_average() {
        tch::manual_seed(4);
        let logits = Tensor::randn([2, 16, 8], (Kind::Float, tch::Device::Cpu));
        let ec = ExpertChoice::new(2.0, GroupMode::FullSequence);
        let threshold = fit_threshold(&ec.scores(&logits).view([-1, 8]), 2.0);
        let causal = ExpertChoice::new(2.0, GroupMode::Causal { threshold });
        let s = causal.select(&logits, None);
        assert!(causal.is_causal() && !ec.is_causal());
        assert_eq!(
            i64::try_from(s.active_counts().sum(Kind::Int64)).unwrap(),
            64
        );
    }
}
