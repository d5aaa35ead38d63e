//! Expert merging: REAM (Jha et al., arXiv 2604.04356; docs/methods.md §6) and the merging
//! baselines M-SMoE (Li et al., arXiv 2310.01334) and HC-SMoE (Chen et al., arXiv 2410.08589)
//! (§7.7). Every method is "statistics → groups with a centroid and weights → align each member
//! to its centroid → weighted merge → router surgery" per MoE layer; they differ only in the
//! grouping, the weights and the defaults, so one driver runs all three.
//!
//! Choices where the spec leaves room (each is a field, so ablations stay possible):
//! - Similarities are the code's: cosine of token-mean gated outputs, normalised Euclidean
//!   distance of logit profiles (§6.7 item 2); their average, which ranks like the paper's sum.
//! - The REAM saliency is the paper's single gating by default ([`Saliency::Reap`], with
//!   the gate of [`CalibrationOptions::reap_gate`]); [`Saliency::ReapCode`] is the code's σ².
//! - Padding is masked (§6.7 item 6); `calibration.include_padding` restores code parity.
//! - M-SMoE picks dominant experts per layer at the uniform ratio, not globally across layers:
//!   one transformers config holds one expert count, and the REAP comparisons are per layer.
//! - HC-SMoE clusters the output means by Euclidean distance (the original code).
//! - All three default to [`RouterPolicy::KeepCentroidRow`], so every method really ends with
//!   `N'` experts (REAM's code also runs its HC-SMoE grouping this way);
//!   [`RouterPolicy::SumGroupProbs`] is the classic variant.
mod grouping;
mod primitives;
mod stats;

pub use grouping::{
    average_linkage, euclidean_distances, gram_cosines, logit_similarity, nearest_centroid_groups,
    pseudo_prune_groups, row_gram,
};
pub use primitives::{
    assignment_to_perm, install_merged, linear_assignment, merge_group, neuron_weight_vectors,
    pca_neuron_features, permute_neurons, Alignment, MergedExpert, NeuronFeatures, PcaSolver,
    RouterPolicy,
};
pub use stats::{
    collect_block_merge_stats, collect_merge_stats, MergeLayerStats, MergeStats, MergeStatsOptions,
};

use crate::calibration::{BlockStream, CalibrationOptions, LayerStats};
use crate::error::{MethodError, Result};
use crate::prune::{top_experts, Keep};
use moebench_model::{Ffn, Model};
use serde::{Deserialize, Serialize};
use tch::Tensor;

/// Settings every merging method has.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MergeSettings {
    /// Experts per MoE layer after merging (`N'`), in `top_k..=N`.
    pub keep: Keep,
    pub router: RouterPolicy,
    pub alignment: Alignment,
    /// Tokens in the activation reservoir (REAM: about 32k); used by activation alignment.
    pub samples: usize,
    /// PCA dimension of REAM's weight cost (64).
    pub pca_dim: usize,
    /// How the PCA finds its axes: the REAM code's randomized solver (default) or exact.
    pub pca_solver: PcaSolver,
    /// Seed of the activation sample (REAM code: 42).
    pub seed: u64,
    pub calibration: CalibrationOptions,
}

impl MergeSettings {
    /// REAM's code defaults (§6.4) with the given target and alignment; 25% fewer experts is the
    /// paper's headline setting (128 → 96).
    pub fn new(alignment: Alignment) -> MergeSettings {
        MergeSettings {
            keep: Keep::Ratio(0.75),
            router: RouterPolicy::KeepCentroidRow,
            alignment,
            samples: 32768,
            pca_dim: 64,
            pca_solver: PcaSolver::Randomized,
            seed: 42,
            calibration: CalibrationOptions::default(),
        }
    }
}

impl MergeSettings {
    /// Checks the settings that do not depend on the model (`method` names the caller); an
    /// expert count is checked against the model's N and top-k when it is known.
    pub fn validate(&self, method: &str) -> Result<()> {
        match self.keep {
            Keep::Ratio(r) if !(r > 0.0 && r <= 1.0) => {
                return Err(MethodError::param(
                    method,
                    "keep_ratio",
                    format!("is {r}; it must be in (0, 1] (fraction of experts kept)"),
                ))
            }
            _ => {}
        }
        if self.alignment.uses_activations() && self.samples == 0 {
            return Err(MethodError::param(
                method,
                "samples",
                "is 0; activation alignment needs at least 1 sampled token (REAM: 32768)",
            ));
        }
        if self.alignment.uses_pca() && self.pca_dim == 0 {
            return Err(MethodError::param(
                method,
                "pca_dim",
                "is 0; the weight cost needs a PCA dimension ≥ 1 (REAM: 64)",
            ));
        }
        Ok(())
    }
}

/// The expert importance that picks REAM's centroids and weights its merges (§6.3 step 2).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Saliency {
    /// Paper Eq. 3: the mean of `π_i(x)·‖E_i(x)‖₂` over the tokens routed to `i` (the REAP
    /// mean of [`crate::calibration`], gated as `calibration.reap_gate` says).
    #[default]
    Reap,
    /// The official code: `σ_i(x)²·‖E_i(x)‖₂` (gated outputs gated again, §6.7 item 1).
    ReapCode,
    /// Token counts (the "freq" ablation).
    Frequency,
}

/// Which definitions of REAM's two similarities (§6.3 step 3, §6.7 items 2–3).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SimilarityForm {
    /// The official code: δ̃_E = cosine of the token-mean (gated) outputs mapped to [0, 1] by
    /// `(cos + 1)/2`; δ_g = `1 − d/d_max` of the Euclidean distances between L2-normalised logit
    /// profiles.
    #[default]
    Code,
    /// The paper's text: δ̃_E = token mean of per-token cosines of the (gated) outputs; δ_g =
    /// cosine of the logit profiles; both mapped to [0, 1] like the code so they weigh alike.
    Paper,
}

/// REAM options; [`Default`] gives the code defaults of §6.4.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ReamConfig {
    pub merge: MergeSettings,
    /// Group size `C` counting the centroid (code convention, §6.7 item 4), or 0 for
    /// nearest-centroid (MC-SMoE-style) grouping. Default 16 (Qwen3-30B → 96).
    pub group_size: usize,
    /// Calibrate layer ℓ on the outputs of the already merged layers `< ℓ` (§6.3 step 7): the
    /// calibration residual stream is cached block by block, so each block runs twice in all
    /// (statistics, then its merged output), and one layer's statistics are in memory. Off: one
    /// whole-model pass on the original model, holding every layer's activation reservoir.
    pub sequential: bool,
    pub saliency: Saliency,
    /// The code's `merging=none`: groups are formed but only the centroids survive, unmerged.
    pub prune_only: bool,
    /// Include the logit-profile similarity δ_g (ablation "gate-logit similarity off").
    pub logit_similarity: bool,
    /// Gate the expert outputs by `σ_i(x)` in δ̃_E (ablation "no softmax gating").
    pub gated_outputs: bool,
    /// The code's or the paper's similarity definitions (§6.7 item 2).
    pub similarity: SimilarityForm,
}

impl ReamConfig {
    /// Checks the settings that do not depend on the model; the group size against `N/N'` is
    /// checked when the model is known.
    pub fn validate(&self) -> Result<()> {
        self.merge.validate("ream")
    }
}

impl Default for ReamConfig {
    fn default() -> Self {
        ReamConfig {
            merge: MergeSettings::new(Alignment::ActivationsAndWeights),
            group_size: 16,
            sequential: true,
            saliency: Saliency::Reap,
            prune_only: false,
            logit_similarity: true,
            gated_outputs: true,
            similarity: SimilarityForm::Code,
        }
    }
}

/// One merged expert: `members[0]` is the centroid (REAM, M-SMoE's dominant expert) or the
/// representative (HC-SMoE), whose slot and router row the merged expert takes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Group {
    pub members: Vec<i64>,
    /// Merge weights, normalised to sum 1.
    pub weights: Vec<f64>,
}

/// What one MoE layer did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerMerge {
    /// Model layer index.
    pub layer: usize,
    /// Per original expert: REAM saliency, or frequency for the baselines.
    pub scores: Vec<f64>,
    pub groups: Vec<Group>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MergeReport {
    pub method: String,
    pub router: RouterPolicy,
    pub alignment: Alignment,
    pub experts_before: usize,
    /// Distinct experts per layer; under [`RouterPolicy::SumGroupProbs`] the layer still has
    /// `experts_before` slots.
    pub experts_after: usize,
    pub layers: Vec<LayerMerge>,
}

/// REAM (§6.3): per MoE layer in order, REAP saliency, pseudo-pruning groups around the `N'`
/// most salient experts, neuron alignment to the centroid, saliency-weighted merge and
/// centroid-row router surgery; layer ℓ is calibrated on the merged layers `< ℓ` when
/// `sequential`. Parameters are checked before the model changes.
pub fn ream(
    model: &mut Model,
    batches: &[(Tensor, Tensor)],
    cfg: &ReamConfig,
) -> Result<MergeReport> {
    const METHOD: &str = "ream";
    let (n, count) = check(model, METHOD, &cfg.merge)?;
    let c = cfg.group_size;
    if c != 0 && c * count < n {
        return Err(MethodError::param(
            METHOD,
            "group_size",
            format!(
                "is {c}; with {count} of {n} experts kept it must be 0 (nearest-centroid \
                 grouping) or at least ⌈N/N'⌉ = {} so that the groups hold every expert",
                n.div_ceil(count)
            ),
        ));
    }
    let plan = |cal: &LayerStats, ms: &MergeLayerStats| {
        let saliency = ream_saliency(cfg.saliency, cal, ms);
        let mut centroids: Vec<usize> = top_experts(&saliency, count)
            .into_iter()
            .map(|e| e as usize)
            .collect();
        centroids.sort_by(|&a, &b| saliency[b].total_cmp(&saliency[a]).then(a.cmp(&b)));
        let distance = ream_distance(ms, n, cfg);
        let groups = if c == 0 {
            nearest_centroid_groups(&distance, n, &centroids)
        } else {
            pseudo_prune_groups(&distance, n, &centroids, c)
        };
        let groups = groups
            .into_iter()
            .map(|g| {
                let w: Vec<f64> = if cfg.prune_only {
                    (0..g.len())
                        .map(|i| if i == 0 { 1.0 } else { 0.0 })
                        .collect()
                } else {
                    g.iter().map(|&e| saliency[e]).collect()
                };
                group(g, w)
            })
            .collect();
        (saliency, groups)
    };
    let mut merge = cfg.merge;
    if cfg.prune_only {
        merge.alignment = Alignment::Identity;
    }
    run(
        model,
        batches,
        METHOD,
        &merge,
        (true, cfg.similarity == SimilarityForm::Paper),
        cfg.sequential,
        (n, count),
        plan,
    )
}

/// REAM saliency with zeros lifted to `min(0.5, smallest positive)` so that unused experts
/// still merge with a nonzero weight (§6.3 step 2).
fn ream_saliency(kind: Saliency, cal: &LayerStats, ms: &MergeLayerStats) -> Vec<f64> {
    let s: Vec<f64> = match kind {
        Saliency::Reap => cal.reap_mean(),
        Saliency::ReapCode => ms
            .reap_code_sum
            .iter()
            .zip(&cal.freq)
            .map(|(&s, &c)| if c > 0.0 { s / c } else { 0.0 })
            .collect(),
        Saliency::Frequency => cal.freq.clone(),
    };
    let floor = s.iter().cloned().filter(|&x| x > 0.0).fold(0.5, f64::min);
    s.into_iter()
        .map(|x| if x > 0.0 { x } else { floor })
        .collect()
}

/// REAM distance `D = 1 − (δ_g + δ̃_E)/2` (or `1 − δ̃_E` without δ_g), §6.3 step 3, with each
/// similarity in [0, 1] under `cfg.similarity`.
fn ream_distance(ms: &MergeLayerStats, n: usize, cfg: &ReamConfig) -> Vec<f64> {
    let to_unit = |c: f64| (c + 1.0) / 2.0;
    let output_sim: Vec<f64> = match cfg.similarity {
        SimilarityForm::Code => {
            let outputs = if cfg.gated_outputs {
                &ms.gated_output_sum
            } else {
                &ms.output_sum
            };
            gram_cosines(&row_gram(outputs, n), n)
                .into_iter()
                .map(to_unit)
                .collect()
        }
        SimilarityForm::Paper => {
            let sums = if cfg.gated_outputs {
                &ms.gated_cosine_sum
            } else {
                &ms.output_cosine_sum
            };
            let tokens = ms.tokens.max(1.0);
            sums.iter().map(|s| to_unit(s / tokens)).collect()
        }
    };
    if !cfg.logit_similarity {
        return output_sim.into_iter().map(|e| 1.0 - e).collect();
    }
    let logit_sim: Vec<f64> = match cfg.similarity {
        SimilarityForm::Code => logit_similarity(&ms.logit_gram, n),
        SimilarityForm::Paper => gram_cosines(&ms.logit_gram, n)
            .into_iter()
            .map(to_unit)
            .collect(),
    };
    output_sim
        .into_iter()
        .zip(logit_sim)
        .map(|(e, g)| 1.0 - (e + g) / 2.0)
        .collect()
}

/// M-SMoE options (merging half of MC-SMoE, as REAP/REAM compare it): weight matching and
/// the centroid router row by default.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MSmoeConfig {
    pub merge: MergeSettings,
}

impl Default for MSmoeConfig {
    fn default() -> Self {
        MSmoeConfig {
            merge: MergeSettings::new(Alignment::WeightMatching),
        }
    }
}

/// M-SMoE (§7.7): the `N'` most frequent experts dominate, every other expert joins the
/// dominant expert with the most similar router-probability profile (cosine over calibration
/// tokens), and groups merge frequency-weighted after neuron alignment.
pub fn m_smoe(
    model: &mut Model,
    batches: &[(Tensor, Tensor)],
    cfg: &MSmoeConfig,
) -> Result<MergeReport> {
    const METHOD: &str = "m-smoe";
    let (n, count) = check(model, METHOD, &cfg.merge)?;
    let plan = |cal: &LayerStats, ms: &MergeLayerStats| {
        let freq = cal.freq.clone();
        let mut dominant: Vec<usize> = top_experts(&freq, count)
            .into_iter()
            .map(|e| e as usize)
            .collect();
        dominant.sort_by(|&a, &b| freq[b].total_cmp(&freq[a]).then(a.cmp(&b)));
        let distance: Vec<f64> = gram_cosines(&ms.prob_gram, n)
            .into_iter()
            .map(|c| 1.0 - c)
            .collect();
        let groups = nearest_centroid_groups(&distance, n, &dominant)
            .into_iter()
            .map(|g| frequency_group(g, &freq))
            .collect();
        (freq, groups)
    };
    run(
        model,
        batches,
        METHOD,
        &cfg.merge,
        (false, false),
        false,
        (n, count),
        plan,
    )
}

/// HC-SMoE options: plain frequency-weighted averaging by default (REAM's runs add
/// activation alignment: set `merge.alignment`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct HcSmoeConfig {
    pub merge: MergeSettings,
}

impl Default for HcSmoeConfig {
    fn default() -> Self {
        HcSmoeConfig {
            merge: MergeSettings::new(Alignment::Identity),
        }
    }
}

/// HC-SMoE (§7.7): average-linkage clustering of the experts' mean outputs over all tokens down
/// to `N'` clusters; each cluster merges frequency-weighted into the slot of its representative,
/// the member whose mean output is closest to the cluster's mean.
pub fn hc_smoe(
    model: &mut Model,
    batches: &[(Tensor, Tensor)],
    cfg: &HcSmoeConfig,
) -> Result<MergeReport> {
    const METHOD: &str = "hc-smoe";
    let (n, count) = check(model, METHOD, &cfg.merge)?;
    let plan = |cal: &LayerStats, ms: &MergeLayerStats| {
        let freq = cal.freq.clone();
        let h = ms.output_sum.len() / n;
        let tokens = ms.tokens.max(1.0);
        let means: Vec<f64> = ms.output_sum.iter().map(|s| s / tokens).collect();
        let distance = euclidean_distances(&means, n);
        let groups = average_linkage(&distance, n, count)
            .into_iter()
            .map(|mut g| {
                let centre: Vec<f64> = (0..h)
                    .map(|k| g.iter().map(|&e| means[e * h + k]).sum::<f64>() / g.len() as f64)
                    .collect();
                let gap = |e: usize| -> f64 {
                    (0..h).map(|k| (means[e * h + k] - centre[k]).powi(2)).sum()
                };
                let rep = (0..g.len())
                    .min_by(|&a, &b| gap(g[a]).total_cmp(&gap(g[b])).then(a.cmp(&b)))
                    .expect("non-empty cluster");
                g.swap(0, rep);
                frequency_group(g, &freq)
            })
            .collect();
        (freq, groups)
    };
    run(
        model,
        batches,
        METHOD,
        &cfg.merge,
        (true, false),
        false,
        (n, count),
        plan,
    )
}

/// The neuron permutation of every member of every group (`None` for centroids and without
/// features): the cost matrices come from libtorch one after another, then the assignments,
/// plain CPU work with nothing else running, are solved in parallel.
fn align_groups(groups: &[Group], features: Option<&NeuronFeatures>) -> Vec<Vec<Option<Vec<i64>>>> {
    use rayon::prelude::*;
    let costs: Vec<Vec<Option<Vec<f32>>>> = groups
        .iter()
        .map(|g| {
            let c = g.members[0];
            g.members
                .iter()
                .map(|&e| features.filter(|_| e != c).map(|f| f.cost_matrix(c, e)))
                .collect()
        })
        .collect();
    costs
        .into_par_iter()
        .map(|members| {
            members
                .into_par_iter()
                .map(|cost| cost.map(|c| assignment_to_perm(linear_assignment(&c))))
                .collect()
        })
        .collect()
}

fn group(members: Vec<usize>, weights: Vec<f64>) -> Group {
    let total: f64 = weights.iter().sum();
    Group {
        members: members.into_iter().map(|e| e as i64).collect(),
        weights: weights.into_iter().map(|w| w / total).collect(),
    }
}

/// §7.7 frequency weights `ν_i / Σ ν`; a group no token reached is averaged uniformly.
fn frequency_group(members: Vec<usize>, freq: &[f64]) -> Group {
    let w: Vec<f64> = members.iter().map(|&e| freq[e]).collect();
    if w.iter().sum::<f64>() > 0.0 {
        group(members, w)
    } else {
        let uniform = vec![1.0; members.len()];
        group(members, uniform)
    }
}

/// Checks the model and the settings: returns `(N, N')`. Errors name `method`.
fn check(model: &Model, method: &str, s: &MergeSettings) -> Result<(usize, usize)> {
    s.validate(method)?;
    let top_k = match &model.config.moe {
        Some(m) => m.top_k,
        None => return Err(MethodError::unsupported(method, "the model is dense")),
    };
    let counts: Vec<usize> = model
        .layers
        .iter()
        .filter_map(|b| match &b.ffn {
            Ffn::Moe(m) => Some(m.num_experts() as usize),
            Ffn::Dense(_) => None,
        })
        .collect();
    let n = match counts.first() {
        Some(&n) if counts.iter().all(|&c| c == n) => n,
        _ => {
            return Err(MethodError::unsupported(
                method,
                format!("merging needs MoE layers with one expert count; counts = {counts:?}"),
            ))
        }
    };
    let count = s.keep.count(n, top_k).map_err(|e| match e {
        MethodError::Param { param, message, .. } => MethodError::param(method, &param, message),
        other => other,
    })?;
    Ok((n, count))
}

/// The shared driver: statistics (whole-model, or per layer on the partly merged model when
/// `sequential`), `plan` → groups per layer, alignment, merge and router surgery, then the
/// config's expert count.
#[allow(clippy::too_many_arguments)]
fn run(
    model: &mut Model,
    batches: &[(Tensor, Tensor)],
    method: &str,
    s: &MergeSettings,
    (expert_outputs, output_cosines): (bool, bool),
    sequential: bool,
    (n, count): (usize, usize),
    plan: impl Fn(&LayerStats, &MergeLayerStats) -> (Vec<f64>, Vec<Group>),
) -> Result<MergeReport> {
    let options = MergeStatsOptions {
        calibration: s.calibration,
        expert_outputs: expert_outputs || output_cosines,
        output_cosines,
        samples: if s.alignment.uses_activations() {
            s.samples
        } else {
            0
        },
        seed: s.seed,
    };
    let moe_layers: Vec<usize> = (0..model.layers.len())
        .filter(|&l| matches!(model.layers[l].ffn, Ffn::Moe(_)))
        .collect();
    if batches.is_empty() {
        return Err(MethodError::param(
            method,
            "batches",
            "is empty; merging needs at least one calibration batch",
        ));
    }
    let (whole, mut stream) = match sequential {
        true => (None, Some(BlockStream::new(model, batches, method)?)),
        false => (
            Some(collect_merge_stats(model, batches, options, None)?),
            None,
        ),
    };
    let mut layers = Vec::with_capacity(moe_layers.len());
    for &l in &moe_layers {
        let fresh;
        let stats = match (&whole, stream.as_mut()) {
            (Some(w), _) => w,
            (None, Some(stream)) => {
                stream.advance_to(model, l);
                fresh = collect_block_merge_stats(model, stream, options)?;
                &fresh
            }
            (None, None) => unreachable!("one of the two is built above"),
        };
        let (cal, ms) = stats.layer(l)?;
        let (scores, groups) = plan(cal, ms);
        let Ffn::Moe(moe) = &mut model.layers[l].ffn else {
            unreachable!("MoE layer index")
        };
        let features =
            if s.alignment != Alignment::Identity && groups.iter().any(|g| g.members.len() > 1) {
                Some(NeuronFeatures::new(
                    moe,
                    s.alignment,
                    ms.activation_samples().as_ref(),
                    (s.pca_dim, s.pca_solver, s.seed),
                )?)
            } else {
                None
            };
        let perms = tch::no_grad(|| align_groups(&groups, features.as_ref()));
        let merged = tch::no_grad(|| {
            groups
                .iter()
                .zip(&perms)
                .map(|(g, p)| merge_group(moe, &g.members, &g.weights, p))
                .collect::<Result<Vec<_>>>()
        })?;
        let members: Vec<Vec<i64>> = groups.iter().map(|g| g.members.clone()).collect();
        install_merged(moe, &members, &merged, s.router)?;
        layers.push(LayerMerge {
            layer: l,
            scores,
            groups,
        });
    }
    if s.router == RouterPolicy::KeepCentroidRow {
        model.sync_expert_count()?;
    }
    Ok(MergeReport {
        method: method.into(),
        router: s.router,
        alignment: s.alignment,
        experts_before: n,
        experts_after: count,
        layers,
    })
}
