//! Expert pruning by a calibration saliency (docs/methods.md §7.6, §8.5 `prune(layer, keep_idx)`):
//! each MoE layer keeps its most salient experts at one uniform ratio, the router loses the rows
//! of the pruned experts and top-k is unchanged, so active parameters stay the same.
use crate::calibration::CalibrationStats;
use crate::error::{MethodError, Result};
use moebench_model::moe::MoeLayer;
use moebench_model::{Ffn, Model};
use serde::{Deserialize, Serialize};

const METHOD: &str = "prune";

/// Saliency of an expert (REAP arXiv 2510.13999, App. D; docs/methods.md §7.6). The lowest go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Criterion {
    /// `ν_j`, the number of tokens routed to `j`.
    Frequency,
    /// EAN (Jaiswal et al. 2025): `Σ_{x∈X_j} ‖E_j(x)‖₂`, a sum, so it grows with frequency.
    Ean,
    /// REAP: the mean of `g_j(x)·‖E_j(x)‖₂` over the tokens routed to `j`.
    Reap,
    /// Seeded uniform scores, no calibration: the sanity baseline every criterion must beat
    /// ([`crate::random_prune`]).
    Random,
}

impl Criterion {
    /// Per-expert saliency of `layer` (a model layer index) from the calibration statistics.
    pub fn saliency(self, stats: &CalibrationStats, layer: usize) -> Result<Vec<f64>> {
        let s = stats.layer(layer)?;
        Ok(match self {
            Criterion::Frequency => s.freq.clone(),
            Criterion::Ean => s.ean_sum.clone(),
            Criterion::Reap => s.reap_mean(),
            Criterion::Random => {
                return Err(MethodError::unsupported(
                    METHOD,
                    "random pruning has no calibration saliency (use random_prune::random_prune)",
                ))
            }
        })
    }
}

/// How many experts every MoE layer keeps.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Keep {
    /// Fraction of the experts, in (0, 1]. `⌊N·(1−r)⌋` experts are pruned, as in the REAP code.
    Ratio(f64),
    /// Exact number of experts, in `top_k..=N`.
    Count(usize),
}

impl Keep {
    /// Experts kept out of `n`; fewer than `top_k` would leave the top-k selector short.
    pub fn count(self, n: usize, top_k: usize) -> Result<usize> {
        match self {
            Keep::Ratio(r) => {
                if !(r > 0.0 && r <= 1.0) {
                    return Err(MethodError::param(
                        METHOD,
                        "keep_ratio",
                        format!("is {r}; it must be in (0, 1]"),
                    ));
                }
                // ⌈N·r⌉ = N − ⌊N·(1−r)⌋; the epsilon absorbs float error in N·r.
                let count = (n as f64 * r - 1e-9).ceil().max(0.0) as usize;
                if count < top_k {
                    return Err(MethodError::param(
                        METHOD,
                        "keep_ratio",
                        format!(
                            "is {r}, which keeps {count} of {n} experts, fewer than top_k = \
                             {top_k}; it must be in [{top_k}/{n}, 1]"
                        ),
                    ));
                }
                Ok(count)
            }
            Keep::Count(count) => {
                if count < top_k || count > n {
                    return Err(MethodError::param(
                        METHOD,
                        "keep",
                        format!("is {count}; it must be in {top_k}..={n} (top_k..=num_experts)"),
                    ));
                }
                Ok(count)
            }
        }
    }
}

/// What one MoE layer kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerPrune {
    /// Model layer index.
    pub layer: usize,
    /// Saliency of every original expert.
    pub saliency: Vec<f64>,
    /// Original indices of the kept experts, in their original order.
    pub kept: Vec<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PruneReport {
    pub criterion: Criterion,
    pub experts_before: usize,
    pub experts_after: usize,
    pub layers: Vec<LayerPrune>,
}

/// The `keep` most salient experts, ties broken by the lower index, returned in index order so
/// the pruned layer keeps the experts' relative order.
pub fn top_experts(saliency: &[f64], keep: usize) -> Vec<i64> {
    let mut order: Vec<usize> = (0..saliency.len()).collect();
    order.sort_by(|&a, &b| saliency[b].total_cmp(&saliency[a]).then(a.cmp(&b)));
    let mut kept: Vec<i64> = order.into_iter().take(keep).map(|e| e as i64).collect();
    kept.sort_unstable();
    kept
}

/// Keeps only the experts `keep` (distinct indices, in the order given): slices the stacked
/// expert weights, the router rows and the router bias. The selector is untouched and sees fewer
/// logits; a top-k selector needs `keep.len() >= k`, which the caller checks ([`prune_model`]
/// uses the config's `num_experts_per_tok`, the k of the checkpoint's [`moebench_model::moe::TopK`]).
pub fn prune_layer(moe: &mut MoeLayer, keep: &[i64]) -> Result<()> {
    moe.retain_experts(keep)
        .map_err(|e| MethodError::param(METHOD, "keep", e.to_string()))
}

/// Prunes every MoE layer to the same number of experts, keeping the highest `criterion`
/// saliency per layer, and updates `config.moe.num_experts`. Parameters and statistics are
/// checked for every layer before any layer is changed.
pub fn prune_model(
    model: &mut Model,
    stats: &CalibrationStats,
    criterion: Criterion,
    keep: Keep,
) -> Result<PruneReport> {
    prune_by(model, criterion, keep, &|layer, _| {
        criterion.saliency(stats, layer)
    })
}

/// [`prune_model`] with the saliency of each MoE layer from `saliency(layer, num_experts)`;
/// `criterion` labels the report.
pub fn prune_by(
    model: &mut Model,
    criterion: Criterion,
    keep: Keep,
    saliency: &dyn Fn(usize, usize) -> Result<Vec<f64>>,
) -> Result<PruneReport> {
    let top_k = match &model.config.moe {
        Some(m) => m.top_k,
        None => return Err(MethodError::unsupported(METHOD, "the model is dense")),
    };
    let moe_layers: Vec<(usize, usize)> = model
        .layers
        .iter()
        .enumerate()
        .filter_map(|(l, b)| match &b.ffn {
            Ffn::Moe(m) => Some((l, m.num_experts() as usize)),
            Ffn::Dense(_) => None,
        })
        .collect();
    let n = match moe_layers.first() {
        Some(&(_, n)) if moe_layers.iter().all(|&(_, c)| c == n) => n,
        _ => {
            return Err(MethodError::unsupported(
                METHOD,
                format!(
                    "uniform pruning needs MoE layers with one expert count; (layer, count) = \
                     {moe_layers:?}"
                ),
            ))
        }
    };
    let count = keep.count(n, top_k)?;
    let mut layers = Vec::with_capacity(moe_layers.len());
    for &(layer, _) in &moe_layers {
        let saliency = saliency(layer, n)?;
        if saliency.len() != n {
            return Err(MethodError::unsupported(
                METHOD,
                format!(
                    "layer {layer} has {n} experts but its statistics have {}; calibrate this model",
                    saliency.len()
                ),
            ));
        }
        let kept = top_experts(&saliency, count);
        layers.push(LayerPrune {
            layer,
            saliency,
            kept,
        });
    }
    let keep: Vec<(usize, Vec<i64>)> = layers.iter().map(|p| (p.layer, p.kept.clone())).collect();
    model.retain_experts(&keep)?;
    Ok(PruneReport {
        criterion,
        experts_before: n,
        experts_after: count,
        layers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_experts_breaks_ties_by_lower_index_and_keeps_order() {
        assert_eq!(top_experts(&[1.0, 3.0, 3.0, 0.5, 3.0], 2), vec![1, 2]);
        assert_eq!(top_experts(&[2.0, 0.0, 5.0, 1.0], 3), vec![0, 2, 3]);
    }

    #[test]
    fn keep_ratio_prunes_floor_of_the_complement() {
        assert_eq!(Keep::Ratio(0.5).count(8, 2).unwrap(), 4);
        assert_eq!(Keep::Ratio(0.9).count(10, 2).unwrap(), 9);
        assert_eq!(Keep::Ratio(0.75).count(16, 4).unwrap(), 12);
        assert_eq!(Keep::Ratio(0.5).count(7, 2).unwrap(), 4);
        assert_eq!(Keep::Ratio(1.0).count(7, 2).unwrap(), 7);
    }
}
