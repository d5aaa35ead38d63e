//! Merge statistics (docs/methods.md §8.4) beyond the pruning ones of [`crate::calibration`]: router
//! logit and probability Grams (REAM δ_g, M-SMoE), expert output means over *all* tokens
//! (HC-SMoE `A_i`, REAM δ̃_E) and a reservoir of intermediate activations for neuron alignment
//! (REAM §6.3 step 5). Freq and REAP come from the wrapped [`CalibrationStats`], so the two
//! engines cannot disagree on them.
//!
//! Memory per MoE layer is `O(N² + N·H + N·S·F)`, independent of the calibration set: the Grams
//! and sums are streamed, and the activation sample is a seeded uniform reservoir of `S` tokens
//! (Algorithm R) instead of the code's fixed `32768 / n_chunks` tokens per chunk, which needs the
//! chunk count up front but gives the same expected coverage.
use crate::calibration::{observe, BlockStream, CalibrationOptions, CalibrationStats, LayerStats};
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
    /// Also sum per-token cosines between every two experts' (gated and ungated) outputs, for
    /// the paper's δ̃_E (a token mean of cosines, REAM §6.7 item 2); needs `expert_outputs`.
    pub output_cosines: bool,
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
    /// (docs/methods.md §6.7 item 1); empty without `expert_outputs`.
    pub reap_code_sum: Vec<f64>,
    /// Row-major `N × N`: `Σ_x cos(σ_i(x)E_i(x), σ_j(x)E_j(x))` (a zero output counts 0);
    /// empty without `output_cosines`.
    pub gated_cosine_sum: Vec<f64>,
    /// Row-major `N × N`: `Σ_x cos(E_i(x), E_j(x))`; empty without `output_cosines`.
    pub output_cosine_sum: Vec<f64>,
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
            gated_cosine_sum: vec![0.0; if options.output_cosines { n * n } else { 0 }],
            output_cosine_sum: vec![0.0; if options.output_cosines { n * n } else { 0 }],
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

        // The reservoir's rows of this call, drawn first so that their activations can be
        // read off the all-token intermediates below instead of being recomputed.
        let draw = self.draw_slots(m as u64);
        let sampled_rows = draw
            .as_ref()
            .map(|(_, rows)| Tensor::from_slice(rows).to_device(x.device()));
        let mut acts: Vec<Tensor> = Vec::new();
        if options.expert_outputs {
            let mask = counted(event.selection.mask.reshape([-1, n])).to_kind(Kind::Double);
            let h = hidden as usize;
            let (mut units, mut gated_units) = (Vec::new(), Vec::new());
            for e in 0..n {
                // `expert_forward` in two steps, keeping the intermediate for the reservoir.
                let intermediate = moe.expert_intermediate(e, &x);
                if let Some(rows) = &sampled_rows {
                    acts.push(intermediate.index_select(0, rows).to_kind(Kind::Float));
                }
                let out = intermediate
                    .linear::<Tensor>(&moe.w_down.get(e), None)
                    .to_kind(Kind::Double);
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
                if options.output_cosines {
                    units.push(unit_rows(&out));
                    gated_units.push(unit_rows(&gated));
                }
            }
            if options.output_cosines {
                add(&mut self.output_cosine_sum, &token_cosine_sums(&units));
                add(&mut self.gated_cosine_sum, &token_cosine_sums(&gated_units));
            }
        } else if let Some(rows) = &sampled_rows {
            let xs = x.index_select(0, rows);
            acts = (0..n)
                .map(|e| moe.expert_intermediate(e, &xs).to_kind(Kind::Float))
                .collect();
        }
        if let Some((slots, _)) = draw {
            self.store(&slots, Tensor::stack(&acts, 0));
        }
    }

    /// Algorithm R over the counted tokens: token `t` (0-based over all calls) fills slot `t`
    /// while the reservoir is short, then replaces a uniform slot with probability `S/(t+1)`.
    /// Returns the slots written by this call's `m` tokens and their rows (slot order), if any.
    fn draw_slots(&mut self, m: u64) -> Option<(Vec<i64>, Vec<i64>)> {
        if self.capacity == 0 || m == 0 {
            return None;
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
        (!slot_to_row.is_empty()).then(|| slot_to_row.into_iter().unzip())
    }

    /// Writes `acts` `[N, R, F]` into the reservoir `slots`.
    fn store(&mut self, slots: &[i64], acts: Tensor) {
        let device = acts.device();
        let s = self.capacity as u64;
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
        let slots = Tensor::from_slice(slots).to_device(device);
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
/// merge statistics of MoE layer `only` (or of every MoE layer). REAM's sequential pass uses
/// [`collect_block_merge_stats`] instead, which gives the same statistics from one block.
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

/// The merge statistics of block `stream.next_block()` alone, from its cached input: what
/// [`collect_merge_stats`] with `only = Some(that block)` returns on the same model, bit for bit,
/// for one block's forward instead of the whole model's (REAM §6.3 step 1).
pub fn collect_block_merge_stats(
    model: &Model,
    stream: &BlockStream,
    options: MergeStatsOptions,
) -> Result<MergeStats> {
    let layer = stream.next_block();
    if !matches!(model.layers.get(layer).map(|b| &b.ffn), Some(Ffn::Moe(_))) {
        return Err(MethodError::unsupported(
            "merge",
            format!("block {layer} is not an MoE layer; advance the stream to one"),
        ));
    }
    let mut stats = MergeStats::new(options, Some(layer));
    stream.observe(model, &mut stats);
    Ok(stats)
}

/// Rows scaled to unit L2 norm; zero rows stay zero.
fn unit_rows(t: &Tensor) -> Tensor {
    let norms = t.norm_scalaropt_dim(2.0, [-1i64], true);
    t / norms.clamp_min(f64::MIN_POSITIVE)
}

/// `Σ_x ⟨u_i(x), u_j(x)⟩` for per-expert unit rows `units[i]` `[M, H]`: one Gram matrix of the
/// experts' flattened rows, row-major `N × N`.
fn token_cosine_sums(units: &[Tensor]) -> Vec<f64> {
    let u = Tensor::stack(units, 0).flatten(1, -1);
    to_vec(&u.mm(&u.tr()))
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
pub(super) struct SplitMix64(pub(super) u64);

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

    /// A standard normal draw (Box–Muller on two 53-bit uniforms).
    pub(super) fn normal(&mut self) -> f64 {
        let uniform = |z: u64| ((z >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        let (u1, u2) = (uniform(self.next()), uniform(self.next()));
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}
