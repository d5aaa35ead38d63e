//! Merge statistics (METHODS.md §8.4) beyond the pruning ones of [`crate::calibration`]: router
//! logit and probability Grams (REAM δ_g, M-SMoE), expert output means over *all* tokens
//! (HC-SMoE `A_i`, REAM δ̃_E) and a reservoir of intermediate activations for neuron alignment
//! (REAM §6.3 step 5). Freq and REAP come from the wrapped [`CalibrationStats`], so the two
//! engines cannot disagree on them.
//!
//! Memory per MoE layer is `O(N² + N·H + N·S·F)`, independent of the calibration set: the Grams
//! and sums are streamed, and the activation sample is a seeded uniform reservoir of `S` tokens
//! (Algorithm R) instead of the code's fixed `32768 / n_chunks` tokens per chunk, which needs the
//! chunk count up front but gives the same expected coverage.
use crate::calibration::{observe, CalibrationOptions, CalibrationStats, LayerStats};
use crate::error::{MethodError, Result};
use moebench_model::moe::MoeLayer;
use moebench_model::observer::{ForwardObserver, MoeEvent};
use moebench_model::{Ffn, Model};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use tch::{Kind, Tensor};

/// What [`collect_merge_stats`] gathers.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MergeStatsOptions {
    pub calibration: CalibrationOptions,
    /// Run all N experts on every counted token (REAM §6.3 step 1, HC-SMoE): `N/k` times the
    /// expert cost of a forward pass, so off for methods that do not read output means.
    pub expert_outputs: bool,
    /// Reservoir size `S` (tokens) of intermediate activations per layer; 0 keeps none.
    pub samples: usize,
    /// Seed of the reservoir; each layer draws from its own stream so that a layer's sample does
    /// not depend on which other layers were observed (sequential vs. whole-model REAM).
    pub seed: u64,
}

/// Streaming merge statistics of one MoE layer with `N` experts, hidden size `H`.
#[derive(Debug)]
pub struct MergeLayerStats {
    /// Tokens counted (padding excluded unless `include_padding`).
    pub tokens: f64,
    /// Row-major `N × N`: `Σ_x g(x) g(x)ᵀ` of router logits; its cosines compare the experts'
    /// logit profiles over tokens without storing them (REAM δ_g).
    pub logit_gram: Vec<f64>,
    /// Row-major `N × N`: `Σ_x σ(x) σ(x)ᵀ` of router probabilities (M-SMoE similarity).
    pub prob_gram: Vec<f64>,
    /// Row-major `N × H`: `Σ_x E_i(x)` over all tokens (HC-SMoE `A_i`); empty without
    /// `expert_outputs`.
    pub output_sum: Vec<f64>,
    /// Row-major `N × H`: `Σ_x σ_i(x) E_i(x)` (REAM δ̃_E); empty without `expert_outputs`.
    pub gated_output_sum: Vec<f64>,
    /// `Σ_{x∈X_i} σ_i(x)·‖σ_i(x) E_i(x)‖₂`: the REAM code's doubly gated REAP numerator
    /// (METHODS.md §6.7 item 1); empty without `expert_outputs`.
    pub reap_code_sum: Vec<f64>,
    reservoir: Option<Tensor>,
    capacity: usize,
    seen: u64,
    rng: SplitMix64,
}

impl MergeLayerStats {
    fn new(n: usize, hidden: usize, options: &MergeStatsOptions, layer: usize) -> Self {
        let outputs = if options.expert_outputs {
            n * hidden
        } else {
            0
        };
        MergeLayerStats {
            tokens: 0.0,
            logit_gram: vec![0.0; n * n],
            prob_gram: vec![0.0; n * n],
            output_sum: vec![0.0; outputs],
            gated_output_sum: vec![0.0; outputs],
            reap_code_sum: vec![0.0; if options.expert_outputs { n } else { 0 }],
            reservoir: None,
            capacity: options.samples,
            seen: 0,
            rng: SplitMix64(options.seed ^ (layer as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)),
        }
    }

    pub fn num_experts(&self) -> usize {
        (self.logit_gram.len() as f64).sqrt().round() as usize
    }

    /// Sampled intermediate activations `a_i(x)` `[N, S', F]` f32 (`S' = min(S, tokens)`), the
    /// same tokens for every expert so neurons of different experts can be compared.
    pub fn activation_samples(&self) -> Option<Tensor> {
        self.reservoir.as_ref().map(Tensor::shallow_clone)
    }

    fn accumulate(&mut self, moe: &MoeLayer, event: &MoeEvent<'_>, options: &MergeStatsOptions) {
        let n = moe.num_experts();
        assert_eq!(
            n as usize,
            self.num_experts(),
            "expert count changed between calls of one layer"
        );
        let hidden = event.input.size()[2];
        let rows = match event.token_mask {
            Some(m) if !options.calibration.include_padding => {
                Some(m.reshape([-1]).nonzero().squeeze_dim(1))
            }
            _ => None,
        };
        let counted = |t: Tensor| match &rows {
            Some(r) => t.index_select(0, r),
            None => t,
        };
        let x = counted(event.input.reshape([-1, hidden]));
        let logits = counted(event.router_logits.reshape([-1, n])).to_kind(Kind::Double);
        let probs = logits.softmax(-1, Kind::Double);
        let m = x.size()[0];
        self.tokens += m as f64;
        add(&mut self.logit_gram, &to_vec(&logits.tr().mm(&logits)));
        add(&mut self.prob_gram, &to_vec(&probs.tr().mm(&probs)));

        if options.expert_outputs {
            let mask = counted(event.selection.mask.reshape([-1, n])).to_kind(Kind::Double);
            let h = hidden as usize;
            for e in 0..n {
                let out = moe.expert_forward(e, &x).to_kind(Kind::Double);
                let p = probs.select(1, e).unsqueeze(1);
                let gated = &out * &p;
                let norms = gated.norm_scalaropt_dim(2.0, [-1i64], false);
                let code = (norms * p.squeeze_dim(1) * mask.select(1, e)).sum(Kind::Double);
                let e = e as usize;
                add(
                    &mut self.output_sum[e * h..(e + 1) * h],
                    &to_vec(&out.sum_dim_intlist(0, false, Kind::Double)),
                );
                add(
                    &mut self.gated_output_sum[e * h..(e + 1) * h],
                    &to_vec(&gated.sum_dim_intlist(0, false, Kind::Double)),
                );
                self.reap_code_sum[e] += f64::try_from(code).expect("scalar");
            }
        }
        self.sample(moe, &x);
    }

    /// Algorithm R over the counted tokens: token `t` (0-based over all calls) fills slot `t`
    /// while the reservoir is short, then replaces a uniform slot with probability `S/(t+1)`.
    fn sample(&mut self, moe: &MoeLayer, x: &Tensor) {
        let m = x.size()[0] as u64;
        if self.capacity == 0 || m == 0 {
            return;
        }
        let s = self.capacity as u64;
        let mut slot_to_row = BTreeMap::new();
        for i in 0..m {
            let t = self.seen + i;
            let slot = if t < s {
                Some(t)
            } else {
                Some(self.rng.below(t + 1)).filter(|&r| r < s)
            };
            if let Some(slot) = slot {
                slot_to_row.insert(slot as i64, i as i64);
            }
        }
        self.seen += m;
        if slot_to_row.is_empty() {
            return;
        }
        let slots: Vec<i64> = slot_to_row.keys().copied().collect();
        let rows: Vec<i64> = slot_to_row.values().copied().collect();
        let device = x.device();
        let xs = x.index_select(0, &Tensor::from_slice(&rows).to_device(device));
        let acts: Vec<Tensor> = (0..moe.num_experts())
            .map(|e| moe.expert_intermediate(e, &xs).to_kind(Kind::Float))
            .collect();
        let acts = Tensor::stack(&acts, 0);
        let filled = self.seen.min(s) as i64;
        let reservoir = match self.reservoir.take() {
            None => acts.zeros_like().narrow(1, 0, 0),
            Some(r) => r,
        };
        let short = filled - reservoir.size()[1];
        let reservoir = if short > 0 {
            let pad = Tensor::zeros(
                [acts.size()[0], short, acts.size()[2]],
                (Kind::Float, device),
            );
            Tensor::cat(&[reservoir, pad], 1)
        } else {
            reservoir
        };
        let slots = Tensor::from_slice(&slots).to_device(device);
        self.reservoir = Some(reservoir.index_copy(1, &slots, &acts));
    }
}

/// Merge statistics of the observed MoE layers plus their Freq/REAP calibration statistics.
#[derive(Debug)]
pub struct MergeStats {
    pub options: MergeStatsOptions,
    pub calibration: CalibrationStats,
    pub layers: BTreeMap<usize, MergeLayerStats>,
    /// Observe only this model layer (REAM's sequential pass); `None` observes all.
    pub only: Option<usize>,
}

impl MergeStats {
    pub fn new(options: MergeStatsOptions, only: Option<usize>) -> MergeStats {
        MergeStats {
            options,
            calibration: CalibrationStats::new(options.calibration),
            layers: BTreeMap::new(),
            only,
        }
    }

    /// Both kinds of statistics of `layer`, or an error saying they are missing.
    pub fn layer(&self, layer: usize) -> Result<(&LayerStats, &MergeLayerStats)> {
        let calibration = self.calibration.layer(layer)?;
        let merge = self.layers.get(&layer).ok_or_else(|| {
            MethodError::unsupported(
                "merge",
                format!("no merge statistics for layer {layer}; collect them on this model"),
            )
        })?;
        Ok((calibration, merge))
    }
}

impl ForwardObserver for MergeStats {
    fn on_moe(&mut self, layer: usize, moe: &MoeLayer, event: &MoeEvent<'_>) {
        if self.only.is_some_and(|l| l != layer) {
            return;
        }
        self.calibration.on_moe(layer, moe, event);
        let options = self.options;
        let (n, hidden) = (moe.num_experts() as usize, event.input.size()[2] as usize);
        self.layers
            .entry(layer)
            .or_insert_with(|| MergeLayerStats::new(n, hidden, &options, layer))
            .accumulate(moe, event, &options);
    }
}

/// Runs the model on `batches` of `(input_ids [B, T], attention_mask [B, T])` and returns the
/// merge statistics of MoE layer `only` (or of every MoE layer). REAM's sequential pass calls
/// this once per layer on the partly merged model: simple, and exact because layers `< ℓ` are
/// already in their merged state (§6.3 step 1), at the price of a full forward per layer.
pub fn collect_merge_stats(
    model: &Model,
    batches: &[(Tensor, Tensor)],
    options: MergeStatsOptions,
    only: Option<usize>,
) -> Result<MergeStats> {
    if !model.layers.iter().any(|b| matches!(b.ffn, Ffn::Moe(_))) {
        return Err(MethodError::unsupported(
            "merge",
            "the model has no MoE layer to merge",
        ));
    }
    if batches.is_empty() {
        return Err(MethodError::param(
            "merge",
            "batches",
            "is empty; merging needs at least one calibration batch",
        ));
    }
    let mut stats = MergeStats::new(options, only);
    observe(model, batches, &mut stats, "merge")?;
    Ok(stats)
}

fn to_vec(t: &Tensor) -> Vec<f64> {
    Vec::try_from(t.to_kind(Kind::Double).flatten(0, -1)).expect("f64 statistics")
}

fn add(acc: &mut [f64], batch: &[f64]) {
    acc.iter_mut().zip(batch).for_each(|(a, b)| *a += b);
}

/// SplitMix64: a seeded generator with no dependency, so samples are reproducible across runs
/// and independent of libtorch's global RNG.
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (modulo bias below 2⁻³⁰ for any realistic `n`).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}
