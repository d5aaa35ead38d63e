//! Merge primitives (docs/methods.md §8.5): neuron permutation, a float linear-assignment solver,
//! neuron alignment costs (REAM §6.3 step 5, M-SMoE weight matching), the weighted merge of a
//! group and the router surgery that installs merged experts (§7.7 router policies).
use crate::error::{MethodError, Result};
use crate::prune::prune_layer;
use moebench_model::moe::MoeLayer;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

const METHOD: &str = "merge";

/// How the router treats a merged group (docs/methods.md §7.7).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum RouterPolicy {
    /// REAM (§6.3 step 6): the merged expert takes the centroid's slot, only the centroid's
    /// router row stays, so the layer really has `N'` experts.
    #[default]
    KeepCentroidRow,
    /// Classic merging: all `N` router rows stay and every member's slot holds the merged
    /// expert, so a token routed to several members gets their summed gate weight on it, exactly
    /// the MC-SMoE code's shared-weights layout. The layer keeps `N` slots (`N'` distinct
    /// experts); a linear router with `N'` rows cannot express the sum of top-k probabilities.
    SumGroupProbs,
}

/// Which neuron correspondence a non-centroid is aligned with before averaging.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Alignment {
    /// No permutation: a plain weighted average (REAM `merging=avg`, HC-SMoE as published).
    Identity,
    /// M-SMoE weight matching: maximise `Σ_p ⟨w_c^p, w_j^{π(p)}⟩` over the raw neuron vectors
    /// `[W_gate[p,:] ‖ W_up[p,:] ‖ W_down[:,p]]` (Git Re-Basin's objective, arXiv 2310.01334).
    WeightMatching,
    /// REAM `C_act`: distances between L2-normalised activation profiles over sampled tokens.
    Activations,
    /// REAM `C_wt`: distances between row-normalised neuron vectors reduced by a layer-wide PCA.
    Weights,
    /// REAM default `C_act + C_wt` (`merging=logits+weights` in the code).
    ActivationsAndWeights,
}

impl Alignment {
    pub fn uses_activations(self) -> bool {
        matches!(
            self,
            Alignment::Activations | Alignment::ActivationsAndWeights
        )
    }

    pub fn uses_pca(self) -> bool {
        matches!(self, Alignment::Weights | Alignment::ActivationsAndWeights)
    }
}

/// One expert's SwiGLU weights: `gate`/`up` `[F, H]`, `down` `[H, F]`, in the layer's dtype.
#[derive(Debug)]
pub struct MergedExpert {
    pub gate: Tensor,
    pub up: Tensor,
    pub down: Tensor,
}

/// Checks that `perm` is a permutation of `0..f`.
fn check_perm(perm: &[i64], f: i64, param: &str) -> Result<()> {
    let mut seen = vec![false; f as usize];
    let ok = perm.len() as i64 == f
        && perm
            .iter()
            .all(|&p| (0..f).contains(&p) && !std::mem::replace(&mut seen[p as usize], true));
    if ok {
        Ok(())
    } else {
        Err(MethodError::param(
            METHOD,
            param,
            format!("must be a permutation of 0..{f} (the intermediate neurons)"),
        ))
    }
}

fn check_expert(moe: &MoeLayer, expert: i64, param: &str) -> Result<()> {
    let n = moe.num_experts();
    if (0..n).contains(&expert) {
        Ok(())
    } else {
        Err(MethodError::param(
            METHOD,
            param,
            format!("has expert {expert}; it must be in 0..{n}"),
        ))
    }
}

/// Replaces `t[index]` (dim 0) by `value` out of place, keeping `t`'s `requires_grad`.
fn replace_rows(t: &Tensor, index: &[i64], value: &Tensor) -> Tensor {
    let idx = Tensor::from_slice(index).to_device(t.device());
    tch::no_grad(|| t.index_copy(0, &idx, value)).set_requires_grad(t.requires_grad())
}

/// Reorders the intermediate neurons of `expert` so that its new neuron `p` is old neuron
/// `perm[p]`: rows of `W_gate`/`W_up`, columns of `W_down` (docs/methods.md §1). The expert's
/// function is unchanged.
pub fn permute_neurons(moe: &mut MoeLayer, expert: i64, perm: &[i64]) -> Result<()> {
    check_expert(moe, expert, "expert")?;
    check_perm(perm, moe.expert_intermediate_size(), "perm")?;
    let merged = merge_group(moe, &[expert], &[1.0], &[Some(perm.to_vec())])?;
    install_slots(moe, &[expert], &[&merged]);
    Ok(())
}

/// Weighted merge `θ = Σ_i w_i θ_i^{aligned}` of the experts `group` for gate, up and down
/// (§6.3 step 5, §7.7 frequency-weighted averaging). `weights` are normalised to sum 1 here;
/// `perms[i]` (`None` = identity) aligns member `i` as in [`permute_neurons`]. Accumulates in
/// f32, so weights (1, 0, …) return the first member bit for bit.
pub fn merge_group(
    moe: &MoeLayer,
    group: &[i64],
    weights: &[f64],
    perms: &[Option<Vec<i64>>],
) -> Result<MergedExpert> {
    if group.is_empty() || weights.len() != group.len() || perms.len() != group.len() {
        return Err(MethodError::param(
            METHOD,
            "group",
            format!(
                "has {} experts, {} weights and {} permutations; they must be equal and non-zero",
                group.len(),
                weights.len(),
                perms.len()
            ),
        ));
    }
    let f = moe.expert_intermediate_size();
    for (i, &e) in group.iter().enumerate() {
        check_expert(moe, e, "group")?;
        if group[..i].contains(&e) {
            return Err(MethodError::param(
                METHOD,
                "group",
                format!("lists expert {e} twice"),
            ));
        }
    }
    for p in perms.iter().flatten() {
        check_perm(p, f, "perms")?;
    }
    let total: f64 = weights.iter().sum();
    if weights.iter().any(|w| !w.is_finite() || *w < 0.0) || total <= 0.0 {
        return Err(MethodError::param(
            METHOD,
            "weights",
            format!("are {weights:?}; they must be finite, ≥ 0 and sum to more than 0"),
        ));
    }
    let kind = moe.w_gate.kind();
    let merge = |stack: &Tensor, neuron_dim: i64| -> Tensor {
        let mut acc: Option<Tensor> = None;
        for ((&e, &w), perm) in group.iter().zip(weights).zip(perms) {
            let mut t = stack.get(e);
            if let Some(p) = perm {
                t = t.index_select(neuron_dim, &Tensor::from_slice(p).to_device(t.device()));
            }
            let term = t.to_kind(Kind::Float) * (w / total);
            acc = Some(match acc {
                None => term,
                Some(a) => a + term,
            });
        }
        acc.expect("non-empty group").to_kind(kind)
    };
    Ok(tch::no_grad(|| MergedExpert {
        gate: merge(&moe.w_gate, 0),
        up: merge(&moe.w_up, 0),
        down: merge(&moe.w_down, 1),
    }))
}

/// Writes `experts[i]` into slot `slots[i]`.
fn install_slots(moe: &mut MoeLayer, slots: &[i64], experts: &[&MergedExpert]) {
    let stack = |part: fn(&MergedExpert) -> &Tensor| {
        Tensor::stack(&experts.iter().map(|m| part(m)).collect::<Vec<_>>(), 0)
    };
    moe.w_gate = replace_rows(&moe.w_gate, slots, &stack(|m| &m.gate));
    moe.w_up = replace_rows(&moe.w_up, slots, &stack(|m| &m.up));
    moe.w_down = replace_rows(&moe.w_down, slots, &stack(|m| &m.down));
}

/// Installs one merged expert per group (`groups[i][0]` is the centroid/representative) with
/// the router policy. Under [`RouterPolicy::KeepCentroidRow`] the layer ends with the centroids
/// in their original relative order, so with unmerged centroids it equals `prune_layer`.
pub fn install_merged(
    moe: &mut MoeLayer,
    groups: &[Vec<i64>],
    merged: &[MergedExpert],
    policy: RouterPolicy,
) -> Result<()> {
    match policy {
        RouterPolicy::KeepCentroidRow => {
            let centroids: Vec<i64> = groups.iter().map(|g| g[0]).collect();
            install_slots(moe, &centroids, &merged.iter().collect::<Vec<_>>());
            let mut keep = centroids;
            keep.sort_unstable();
            prune_layer(moe, &keep)
        }
        RouterPolicy::SumGroupProbs => {
            let (slots, experts): (Vec<i64>, Vec<&MergedExpert>) = groups
                .iter()
                .zip(merged)
                .flat_map(|(g, m)| g.iter().map(move |&e| (e, m)))
                .unzip();
            install_slots(moe, &slots, &experts);
            Ok(())
        }
    }
}

/// Minimum-cost perfect matching of a square cost matrix (row-major `n × n`, `n = √len`):
/// returns `assignment[row] = column`. The shortest-augmenting-path algorithm of scipy's
/// `linear_sum_assignment` (Crouse 2016, IEEE TAES 52(4); `rectangular_lsap.cpp`), which REAM's
/// code calls: one Dijkstra search per row over the columns not yet in its tree, dual
/// variables updated once per row, ties broken toward a free column as scipy does. `O(n³)`
/// worst case, in f64 so f32 costs lose nothing. 1.1–1.7× faster than the textbook Hungarian
/// it replaced (`benches/merge.rs`, docs/performance.md), with the same optimum: on costs
/// without ties (any real-valued calibration cost) the assignment is the same permutation.
///
/// # Panics
/// If `cost` is not square or holds a non-finite value.
pub fn linear_assignment(cost: &[f32]) -> Vec<usize> {
    const FREE: usize = usize::MAX;
    let n = (cost.len() as f64).sqrt().round() as usize;
    assert_eq!(n * n, cost.len(), "linear_assignment: cost must be n × n");
    assert!(
        cost.iter().all(|c| c.is_finite()),
        "linear_assignment: costs must be finite"
    );
    let c: Vec<f64> = cost.iter().map(|&x| f64::from(x)).collect();
    let (mut u, mut v) = (vec![0.0f64; n], vec![0.0f64; n]);
    let mut path_cost = vec![f64::INFINITY; n];
    let mut path = vec![FREE; n];
    let (mut col_of_row, mut row_of_col) = (vec![FREE; n], vec![FREE; n]);
    let (mut in_rows, mut in_cols) = (vec![false; n], vec![false; n]);
    let mut remaining = vec![0usize; n];
    for start in 0..n {
        // Dijkstra from row `start` over the reduced costs until a free column is reached.
        let mut min_val = 0.0;
        let mut num_remaining = n;
        for (it, r) in remaining.iter_mut().enumerate() {
            *r = n - it - 1;
        }
        in_rows.fill(false);
        in_cols.fill(false);
        path_cost.fill(f64::INFINITY);
        let mut i = start;
        let sink = loop {
            in_rows[i] = true;
            let row = &c[i * n..(i + 1) * n];
            let (mut index, mut lowest) = (0, f64::INFINITY);
            for (it, &j) in remaining[..num_remaining].iter().enumerate() {
                let reduced = min_val + row[j] - u[i] - v[j];
                if reduced < path_cost[j] {
                    path[j] = i;
                    path_cost[j] = reduced;
                }
                if path_cost[j] < lowest || (path_cost[j] == lowest && row_of_col[j] == FREE) {
                    lowest = path_cost[j];
                    index = it;
                }
            }
            min_val = lowest;
            let j = remaining[index];
            in_cols[j] = true;
            num_remaining -= 1;
            remaining[index] = remaining[num_remaining];
            if row_of_col[j] == FREE {
                break j;
            }
            i = row_of_col[j];
        };
        u[start] += min_val;
        for r in (0..n).filter(|&r| in_rows[r] && r != start) {
            u[r] += min_val - path_cost[col_of_row[r]];
        }
        for j in (0..n).filter(|&j| in_cols[j]) {
            v[j] -= min_val - path_cost[j];
        }
        // Augment along the path back to `start`.
        let mut j = sink;
        loop {
            let i = path[j];
            row_of_col[j] = i;
            std::mem::swap(&mut col_of_row[i], &mut j);
            if i == start {
                break;
            }
        }
    }
    col_of_row
}

/// An assignment as the `i64` neuron permutation [`merge_group`] takes.
pub fn assignment_to_perm(assignment: Vec<usize>) -> Vec<i64> {
    assignment.into_iter().map(|q| q as i64).collect()
}

/// Neuron vectors `[W_gate[p,:] ‖ W_up[p,:] ‖ W_down[:,p]]`, `[N, F, 3H]` f32 (REAM §6.3 step 5).
pub fn neuron_weight_vectors(moe: &MoeLayer) -> Tensor {
    Tensor::cat(
        &[
            moe.w_gate.to_kind(Kind::Float),
            moe.w_up.to_kind(Kind::Float),
            moe.w_down.transpose(1, 2).to_kind(Kind::Float),
        ],
        2,
    )
}

fn l2_normalise_rows(t: &Tensor) -> Tensor {
    t / t
        .norm_scalaropt_dim(2.0, [-1i64], true)
        .clamp_min(f64::from(f32::MIN_POSITIVE))
}

/// How REAM's weight features find their principal axes (§6.3 step 5, §6.7 item 7).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PcaSolver {
    /// The exact top-r axes: eigenvectors of the f64 Gram `X_cᵀX_c` (`3H × 3H`, so the cost
    /// does not grow with `N·F` beyond the Gram itself).
    Exact,
    /// The REAM code's `torch.pca_lowrank(x, q=r)` (seeded), the default as in the code: a
    /// randomized range finder with q = r columns and 2 power iterations (Halko, Martinsson & Tropp 2011, Alg. 4.4 with QR
    /// re-orthonormalisation), in f32 as the code; approximate axes at `O(N·F·3H·r)` instead
    /// of the Gram's `O(N·F·(3H)²)`. The test matrix is drawn from the merge seed, not
    /// libtorch's generator, so it is reproducible but not the code's exact draw.
    #[default]
    Randomized,
}

/// REAM's weight features: row-normalised neuron vectors of all experts of the layer, centred
/// and projected on their top `dim` principal axes (`X_c V_r = U_r Σ_r`, the scores), `[N, F, r]`
/// with `r = min(dim, 3H)`. [`PcaSolver::Exact`] takes the axes from `linalg_eigh` of the f64
/// Gram — the same axes as the SVD this replaced (#14), up to sign, which no distance sees, and
/// rounding (features agree to ~1e-12 relative before the f32 cast; tested), at less than half
/// the cost; [`PcaSolver::Randomized`] is the REAM code's solver. (The code also scales the
/// scores by the singular values once more, `x @ (V·s)`; moebench does not.)
pub fn pca_neuron_features(moe: &MoeLayer, dim: usize, solver: PcaSolver, seed: u64) -> Tensor {
    let w = l2_normalise_rows(&neuron_weight_vectors(moe));
    let (n, f, d) = (w.size()[0], w.size()[1], w.size()[2]);
    let r = (dim as i64).min(d);
    let scores = match solver {
        PcaSolver::Exact => {
            let x = w.to_kind(Kind::Double).reshape([n * f, d]);
            let xc = &x - x.mean_dim(0, true, Kind::Double);
            // Eigenvalues ascending: the last r columns, largest first.
            let (_, vectors) = xc.tr().mm(&xc).linalg_eigh("L");
            xc.mm(&vectors.narrow(1, d - r, r).flip([1]))
        }
        PcaSolver::Randomized => {
            let x = w.reshape([n * f, d]);
            let xc = &x - x.mean_dim(0, true, Kind::Float);
            let mut rng = super::stats::SplitMix64(seed);
            let omega: Vec<f32> = (0..d * r).map(|_| rng.normal() as f32).collect();
            let omega = Tensor::from_slice(&omega)
                .view([d, r])
                .to_device(xc.device());
            let orthonormal = |t: Tensor| Tensor::linalg_qr(&t, "reduced").0;
            let mut q = orthonormal(xc.mm(&omega));
            for _ in 0..2 {
                q = orthonormal(xc.tr().mm(&q));
                q = orthonormal(xc.mm(&q));
            }
            let (_, _, v) = q.tr().mm(&xc).svd(true, true);
            xc.mm(&v.narrow(1, 0, r))
        }
    };
    scores.to_kind(Kind::Float).reshape([n, f, r])
}

/// Per-neuron features of one layer, from which alignment costs between two experts follow.
#[derive(Debug)]
pub struct NeuronFeatures {
    /// `[N, F, D]` feature sets whose Euclidean distances are summed into the cost.
    distances: Vec<Tensor>,
    /// Raw neuron vectors for weight matching.
    raw: Option<Tensor>,
}

impl NeuronFeatures {
    /// `samples` are activations `[N, S, F]` (needed by the activation costs); `pca` the PCA
    /// dimension of the weight cost (REAM: 64), its solver and seed.
    pub fn new(
        moe: &MoeLayer,
        alignment: Alignment,
        samples: Option<&Tensor>,
        (pca_dim, solver, seed): (usize, PcaSolver, u64),
    ) -> Result<NeuronFeatures> {
        if alignment == Alignment::Identity {
            return Err(MethodError::param(
                METHOD,
                "alignment",
                "is Identity, which needs no neuron features; use any other alignment",
            ));
        }
        let mut distances = Vec::new();
        if alignment.uses_activations() {
            let samples = samples.filter(|s| s.size()[1] > 0).ok_or_else(|| {
                MethodError::param(
                    METHOD,
                    "samples",
                    "holds no activation sample; activation alignment needs samples ≥ 1 and \
                     calibration tokens",
                )
            })?;
            distances.push(l2_normalise_rows(
                &samples.to_kind(Kind::Float).transpose(1, 2),
            ));
        }
        if alignment.uses_pca() {
            if pca_dim == 0 {
                return Err(MethodError::param(
                    METHOD,
                    "pca_dim",
                    "is 0; it must be ≥ 1",
                ));
            }
            distances.push(pca_neuron_features(moe, pca_dim, solver, seed));
        }
        let raw = (alignment == Alignment::WeightMatching).then(|| neuron_weight_vectors(moe));
        Ok(NeuronFeatures { distances, raw })
    }

    /// Cost `[F, F]` f32 of matching neuron `p` of `centroid` with neuron `q` of `member`.
    pub fn cost(&self, centroid: i64, member: i64) -> Tensor {
        let matching = self
            .raw
            .iter()
            .map(|raw| -raw.get(centroid).mm(&raw.get(member).tr()));
        let distances = self
            .distances
            .iter()
            .map(|t| Tensor::cdist(&t.get(centroid), &t.get(member), 2.0, None));
        matching
            .chain(distances)
            .reduce(|a, b| a + b)
            .expect("alignment other than Identity has a cost term")
    }

    /// [`NeuronFeatures::cost`] on the host, row-major, for [`linear_assignment`].
    pub fn cost_matrix(&self, centroid: i64, member: i64) -> Vec<f32> {
        Vec::try_from(self.cost(centroid, member).flatten(0, -1)).expect("f32 alignment cost")
    }

    /// The permutation that lines `member`'s neurons up with `centroid`'s (for
    /// [`permute_neurons`] / [`merge_group`]).
    pub fn align(&self, centroid: i64, member: i64) -> Vec<i64> {
        assignment_to_perm(linear_assignment(&self.cost_matrix(centroid, member)))
    }
}
