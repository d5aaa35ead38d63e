//! Selectors beyond the checkpoint's top-k (docs/methods.md §8.3): fixed Top-p (Huang et al., §7.5),
//! DTop-p with its PI controller (§5.3), Expert Choice (§7.4) and USMoE (§4.3). Each one is a
//! [`Selector`] the MoE layer calls; the checkpoint's own top-k is
//! [`moebench_model::moe::TopK`].
//!
//! Conventions shared by every selector here:
//! - padding tokens (`token_mask` false) get no expert and never take budget (docs/methods.md §4.7.3);
//! - combine weights stay differentiable w.r.t. the logits and the selector's parameters, only
//!   the boolean mask comes from non-differentiable ops (sort, top-k, threshold);
//! - non-causal selectors (Expert Choice, USMoE) take a [`GroupMode`] that says which tokens
//!   share a budget, and `describe()` records it, because their numbers mean different things
//!   per mode (§4.7.1, §8.3).
//!
//! The method catalogue ([`crate::catalogue`]) builds these selectors from a method's typed
//! parameters: one instance shared by every layer for the stateless selectors, one per MoE
//! layer for DTop-p (each has its own learnable scale) with the PI controllers the caller steps.
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
use moebench_model::moe::{MoeLayer, Selection, Selector};
use moebench_model::observer::{ForwardObserver, MoeEvent};
use moebench_model::{Ffn, Model};
use std::sync::Arc;
use tch::{Kind, Tensor};

/// Which tokens share the budget of a non-causal selector (docs/methods.md §4.7.1).
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

    /// True when a token's experts depend on its own scores only (a fitted threshold).
    fn is_per_token(&self) -> bool {
        matches!(self, GroupMode::Causal { .. })
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

/// USMoE's (and Expert Choice's) causal mode fitted on calibration data (docs/methods.md §4.7.1's
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
pub(crate) fn real_tokens(logits: &Tensor, token_mask: Option<&Tensor>) -> Tensor {
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

#[cfg(test)]
mod tests {
    use super::*;

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
