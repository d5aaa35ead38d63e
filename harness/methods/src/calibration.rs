//! Calibration engine, whole-model half (docs/methods.md §8.4): one forward pass over the calibration
//! batches with a [`ForwardObserver`] that streams per-MoE-layer statistics for the pruning
//! criteria of §7.6 (Freq, EAN, REAP) and for merging baselines (co-activation counts, router
//! probabilities). The layer-sequential half that REAM needs (§6.3 step 7) is [`BlockStream`]:
//! the calibration batches' residual stream cached at one block's input, so that block ℓ's
//! statistics cost one block forward and a change to block ℓ re-runs only blocks ≥ ℓ.
//!
//! Every statistic is reduced on the model's device in f32/f64 and added into host f64
//! accumulators after each layer call, so memory does not grow with the calibration set.
//!
//! Cost per MoE layer call, on top of the forward pass itself: each expert is re-run on the tokens
//! routed to it (for `‖E_j(x)‖₂`), i.e. one extra sparse expert pass (k/N of REAM's all-experts
//! pass), plus an `[M, N]ᵀ·[M, N]` product for co-activation and a few `[M, N]` reductions.
use crate::error::{MethodError, Result};
use moebench_model::moe::MoeLayer;
use moebench_model::observer::{ForwardObserver, MoeEvent};
use moebench_model::{BlockInputs, ForwardOptions, Model};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use tch::{Kind, Tensor};

/// The gate `g_j(x)` that multiplies `‖E_j(x)‖₂` in the REAP saliency (docs/methods.md §7.6).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReapGate {
    /// The selection's combine weights renormalised to sum 1 over the selected experts: the REAP
    /// code's default since its 2026-03 fix. For top-k checkpoints this is the renormalised
    /// softmax whatever the checkpoint's own `norm_topk_prob`.
    #[default]
    Renormalised,
    /// The router softmax over all N experts, not renormalised (REAP code before the fix).
    Softmax,
}

/// Choices that change the statistics, recorded with them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CalibrationOptions {
    /// Count padding tokens too. The official REAP/REAM/DUME code does not mask them
    /// (docs/methods.md §6.7 item 6); this flag reproduces it for exact parity. Off by default.
    pub include_padding: bool,
    pub reap_gate: ReapGate,
}

/// Streaming sums for one MoE layer; `X_j` is the set of counted tokens routed to expert `j`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LayerStats {
    /// Tokens counted.
    pub tokens: f64,
    /// `ν_j = |X_j|` (Freq saliency, and the REAP count).
    pub freq: Vec<f64>,
    /// Row-major `N × N`: tokens routed to both `i` and `j`; the diagonal is `freq`.
    pub coactivation: Vec<f64>,
    /// `Σ_{x∈X_j} ‖E_j(x)‖₂` (EAN saliency).
    pub ean_sum: Vec<f64>,
    /// `Σ_{x∈X_j} g_j(x)·‖E_j(x)‖₂` (numerator of the REAP conditional mean).
    pub reap_sum: Vec<f64>,
    /// `Σ_x softmax(router logits)_j` over all counted tokens.
    pub prob_sum: Vec<f64>,
}

impl LayerStats {
    fn new(n: usize) -> LayerStats {
        LayerStats {
            tokens: 0.0,
            freq: vec![0.0; n],
            coactivation: vec![0.0; n * n],
            ean_sum: vec![0.0; n],
            reap_sum: vec![0.0; n],
            prob_sum: vec![0.0; n],
        }
    }

    pub fn num_experts(&self) -> usize {
        self.freq.len()
    }

    /// REAP saliency `S_j = reap_sum_j / ν_j` (arXiv 2510.13999 App. D): a conditional mean over
    /// the tokens routed to `j`, so it does not reward frequency. Experts that saw no token get 0,
    /// which ranks them below every expert that was used.
    pub fn reap_mean(&self) -> Vec<f64> {
        self.reap_sum
            .iter()
            .zip(&self.freq)
            .map(|(&s, &c)| if c > 0.0 { s / c } else { 0.0 })
            .collect()
    }

    fn accumulate(&mut self, moe: &MoeLayer, event: &MoeEvent<'_>, options: &CalibrationOptions) {
        let n = moe.num_experts();
        assert_eq!(
            n as usize,
            self.num_experts(),
            "expert count changed between calibration calls of one layer"
        );
        let hidden = event.input.size()[2];
        let rows = match event.token_mask {
            Some(m) if !options.include_padding => Some(m.reshape([-1]).nonzero().squeeze_dim(1)),
            _ => None,
        };
        let counted = |t: Tensor| match &rows {
            Some(r) => t.index_select(0, r),
            None => t,
        };
        let x = counted(event.input.reshape([-1, hidden]));
        let mask = counted(event.selection.mask.reshape([-1, n]));
        let weights = counted(event.selection.weights.reshape([-1, n])).to_kind(Kind::Float);
        let probs = counted(event.router_logits.reshape([-1, n])).softmax(-1, Kind::Float);
        let m = x.size()[0];

        let maskf = mask.to_kind(Kind::Double);
        let freq = to_vec(&maskf.sum_dim_intlist(0, false, Kind::Double));
        // ‖E_j(x)‖₂ for routed tokens only, zero elsewhere: `[M, N]` f32.
        let zeros = Tensor::zeros([m], (Kind::Float, x.device()));
        let norms: Vec<Tensor> = (0..n)
            .map(|e| {
                if freq[e as usize] == 0.0 {
                    return zeros.shallow_clone();
                }
                let idx = mask.select(1, e).nonzero().squeeze_dim(1);
                let out = moe.expert_forward(e, &x.index_select(0, &idx));
                let norm = out
                    .to_kind(Kind::Float)
                    .norm_scalaropt_dim(2.0, [-1i64], false);
                zeros.index_copy(0, &idx, &norm)
            })
            .collect();
        let norms = Tensor::stack(&norms, 1);
        let gate = match options.reap_gate {
            ReapGate::Renormalised => {
                let total = weights.sum_dim_intlist(-1, true, Kind::Float);
                &weights / total.clamp_min(f64::from(f32::MIN_POSITIVE))
            }
            ReapGate::Softmax => probs.shallow_clone(),
        };

        self.tokens += m as f64;
        add(&mut self.freq, &freq);
        add(&mut self.coactivation, &to_vec(&maskf.tr().mm(&maskf)));
        add(&mut self.ean_sum, &column_sums(&norms));
        add(&mut self.reap_sum, &column_sums(&(&norms * gate)));
        add(&mut self.prob_sum, &column_sums(&probs));
    }
}

fn to_vec(t: &Tensor) -> Vec<f64> {
    Vec::try_from(t.to_kind(Kind::Double).flatten(0, -1)).expect("f64 statistics")
}

fn column_sums(t: &Tensor) -> Vec<f64> {
    to_vec(&t.sum_dim_intlist(0, false, Kind::Double))
}

fn add(acc: &mut [f64], batch: &[f64]) {
    acc.iter_mut().zip(batch).for_each(|(a, b)| *a += b);
}

/// Statistics of every MoE layer, keyed by the model's layer index (dense layers are absent).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CalibrationStats {
    pub options: CalibrationOptions,
    pub layers: BTreeMap<usize, LayerStats>,
}

impl CalibrationStats {
    pub fn new(options: CalibrationOptions) -> CalibrationStats {
        CalibrationStats {
            options,
            layers: BTreeMap::new(),
        }
    }

    /// Statistics of `layer`, or an error saying they are missing (e.g. stats from another model).
    pub fn layer(&self, layer: usize) -> Result<&LayerStats> {
        self.layers.get(&layer).ok_or_else(|| {
            MethodError::unsupported(
                "calibration",
                format!(
                    "no statistics for layer {layer}; run `calibrate` on this model before using them"
                ),
            )
        })
    }
}

impl ForwardObserver for CalibrationStats {
    fn on_moe(&mut self, layer: usize, moe: &MoeLayer, event: &MoeEvent<'_>) {
        let options = self.options;
        self.layers
            .entry(layer)
            .or_insert_with(|| LayerStats::new(moe.num_experts() as usize))
            .accumulate(moe, event, &options);
    }
}

/// [`calibrate_with`] with the default options (padding masked, renormalised REAP gate).
pub fn calibrate(model: &Model, batches: &[(Tensor, Tensor)]) -> Result<CalibrationStats> {
    calibrate_with(model, batches, CalibrationOptions::default())
}

/// Runs the model on `batches` of `(input_ids [B, T], attention_mask [B, T])` (1 = real token)
/// and returns the per-layer statistics. Gradients are off: calibration never trains.
pub fn calibrate_with(
    model: &Model,
    batches: &[(Tensor, Tensor)],
    options: CalibrationOptions,
) -> Result<CalibrationStats> {
    if !model
        .layers
        .iter()
        .any(|b| matches!(b.ffn, moebench_model::Ffn::Moe(_)))
    {
        return Err(MethodError::unsupported(
            "calibration",
            "the model has no MoE layer to calibrate",
        ));
    }
    let mut stats = CalibrationStats::new(options);
    observe(model, batches, &mut stats, "calibration")?;
    Ok(stats)
}

/// Checks that every batch is `[B, T]` ids with a same-shaped attention mask.
fn check_batches(batches: &[(Tensor, Tensor)], method: &str) -> Result<()> {
    for (i, (ids, mask)) in batches.iter().enumerate() {
        if ids.dim() != 2 || ids.size() != mask.size() {
            return Err(MethodError::param(
                method,
                "batches",
                format!(
                    "entry {i}: input_ids {:?} and attention_mask {:?} must both be [B, T]",
                    ids.size(),
                    mask.size()
                ),
            ));
        }
    }
    Ok(())
}

/// Runs `batches` (`[B, T]` ids with a same-shaped attention mask each) through `model` without
/// gradients, for `observer`'s sake: the statistics come from the observer and the hidden
/// states are dropped. `method` names the caller in errors.
pub fn observe(
    model: &Model,
    batches: &[(Tensor, Tensor)],
    observer: &mut dyn ForwardObserver,
    method: &str,
) -> Result<()> {
    check_batches(batches, method)?;
    tch::no_grad(|| {
        for (ids, mask) in batches {
            let mut opts = ForwardOptions {
                observer: Some(&mut *observer),
                route_override: None,
            };
            let _ = model.forward_hidden(ids, Some(mask), None, &mut opts);
        }
    });
    Ok(())
}

/// The calibration batches' residual stream at the input of block [`BlockStream::next_block`]
/// (docs/methods.md §8.4, the layer-sequential pass): REAM merges layer ℓ from statistics of block ℓ
/// alone and then only blocks ≥ ℓ see the change, so instead of a whole-model pass per layer
/// each block runs about twice in all. Every block runs exactly as in
/// [`Model::forward_hidden`] ([`Model::forward_block`]), so the statistics equal those of
/// whole-model passes bit for bit. Memory: one `[B, T, H]` tensor per batch.
pub struct BlockStream {
    states: Vec<(Tensor, BlockInputs)>,
    next: usize,
}

impl BlockStream {
    /// The embeddings of `batches` (`[B, T]` ids and attention mask each): the input of block 0.
    pub fn new(model: &Model, batches: &[(Tensor, Tensor)], method: &str) -> Result<BlockStream> {
        check_batches(batches, method)?;
        let states = tch::no_grad(|| {
            batches
                .iter()
                .map(|(ids, mask)| {
                    (
                        model.embed_tokens(ids),
                        model.block_inputs(ids, Some(mask), 0),
                    )
                })
                .collect()
        });
        Ok(BlockStream { states, next: 0 })
    }

    /// The block whose input is cached.
    pub fn next_block(&self) -> usize {
        self.next
    }

    /// Runs blocks `next_block() .. layer` as they are now and caches the input of `layer`.
    ///
    /// # Panics
    /// If `layer` is behind the stream or past the model's last block: blocks already run
    /// cannot be re-run from here.
    pub fn advance_to(&mut self, model: &Model, layer: usize) {
        assert!(
            (self.next..=model.num_layers()).contains(&layer),
            "BlockStream at block {} cannot advance to {layer}",
            self.next
        );
        tch::no_grad(|| {
            for l in self.next..layer {
                for (x, inputs) in &mut self.states {
                    let input = std::mem::replace(x, Tensor::new());
                    *x =
                        model.forward_block(l, input, inputs, None, &mut ForwardOptions::default());
                }
            }
        });
        self.next = layer;
    }

    /// The cached residual stream, one `[B, T, H]` tensor per batch (shallow copies).
    pub fn hidden_states(&self) -> Vec<Tensor> {
        self.states.iter().map(|(x, _)| x.shallow_clone()).collect()
    }

    /// What every block of each batch shares (for running a block on another input).
    pub fn block_inputs(&self) -> Vec<&BlockInputs> {
        self.states.iter().map(|(_, inputs)| inputs).collect()
    }

    /// Shows `observer` block `next_block()` of every batch, without advancing: the statistics
    /// of a block that is about to change. Only its MoE event and hidden-state hooks up to the
    /// FFN input fire ([`Model::observe_moe_block`]): the block's own expert pass and output
    /// would be thrown away. A dense block is not observed.
    pub fn observe(&self, model: &Model, observer: &mut dyn ForwardObserver) {
        tch::no_grad(|| {
            for (x, inputs) in &self.states {
                model.observe_moe_block(self.next, x.shallow_clone(), inputs, observer);
            }
        });
    }
}
