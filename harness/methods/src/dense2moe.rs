//! Dense2MoE (F. Li, H. Ji et al., arXiv 2605.26496; docs/methods.md §3): find a run of redundant
//! layers in a dense model, keep the first block of the run with its attention, delete the
//! attention (and norms) of the others, and move their MLPs into the surviving block as routed
//! experts of a new MoE FFN ("Layer-Fusion UpCycling", LF-UC). Decoding is memory-bound, so
//! dropping attention weights and KV cache is what buys latency (the roofline argument, §3.3
//! step 2). The plain layer-pruning baseline (delete the same blocks, MLPs included) shares the
//! analysis. No official code exists; the paper's text beyond the abstract was not readable, so
//! the details marked [inferred] are this harness's reconstruction, not the paper's.
//!
//! Steps: [`layer_similarity`] (one calibration pass, §3.3 step 1) → a span choice (one fixed
//! length, [`choose_span`], or the paper's δ-threshold search over start and length driven by a
//! roofline bytes target, [`search_spans`]) → [`lf_uc_spans`] or [`layer_prune`];
//! [`dense2moe`] and [`layer_prune_by_similarity`] chain them and return a [`Dense2MoeReport`].
//! The paper's other baselines are here too: LLM-Streamline ([`llm_streamline`]: the most
//! input/output-similar run of layers replaced by one layer trained to imitate it) and naive
//! prune-then-upcycle ([`prune_then_upcycle`]). Continual pre-training (§3.3 step 4) is the
//! train module's job.
use crate::calibration::{observe, BlockStream};
use crate::error::{MethodError, Result};
use crate::train::{optimize, LossFn, Module, TrainConfig, Trainable};
use crate::upcycle::{upcycle, UpcycleConfig};
use moebench_model::config::RouterNorm;
use moebench_model::cost::{bytes_per_decode_token, BytesPerToken};
use moebench_model::layers::{Linear, Mlp};
use moebench_model::model::Block;
use moebench_model::moe::{MoeLayer, SharedExpert, TopK};
use moebench_model::observer::{ForwardObserver, HiddenPoint};
use moebench_model::{Ffn, ForwardOptions, Model};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use tch::{Kind, Tensor};

const METHOD: &str = "dense2moe";

/// The L×L similarity matrices of §3.3 step 1, each entry the mean over real tokens of the
/// per-token cosine similarity.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LayerSimilarity {
    /// Inter-layer output similarity: residual streams leaving blocks `i` and `j`.
    pub output: Vec<Vec<f64>>,
    /// MLP-input similarity: FFN inputs (after the post-attention norm) of blocks `i` and `j`.
    /// High values are what makes fusing MLPs side by side approximate running them in turn.
    pub mlp_input: Vec<Vec<f64>>,
    /// Real (unmasked) tokens averaged over.
    pub tokens: f64,
}

impl LayerSimilarity {
    pub fn num_layers(&self) -> usize {
        self.mlp_input.len()
    }
}

/// Unit-normalised real-token rows `[M, H]` of every block for one batch, in layer order. Only
/// one batch is held at a time, so memory is `2·L·M·H` floats whatever the calibration size.
struct Collector {
    /// Flat indices of the batch's real tokens.
    rows: Tensor,
    outputs: Vec<Tensor>,
    mlp_inputs: Vec<Tensor>,
}

impl ForwardObserver for Collector {
    fn on_hidden(&mut self, layer: usize, point: HiddenPoint, hidden: &Tensor) {
        let store = match point {
            HiddenPoint::BlockOutput => &mut self.outputs,
            HiddenPoint::FfnInput => &mut self.mlp_inputs,
            HiddenPoint::BlockInput => return,
        };
        debug_assert_eq!(layer, store.len(), "blocks report in order");
        let real = hidden
            .reshape([-1, hidden.size()[2]])
            .index_select(0, &self.rows)
            .to_kind(Kind::Float);
        let norm = real.norm_scalaropt_dim(2.0, [-1i64], true).clamp_min(1e-12);
        store.push(real / norm);
    }
}

/// Row-major `L×L` sums over tokens of the per-token cosines: with unit rows flattened to
/// `[L, M·H]`, one Gram matrix sums `⟨u_i(m), u_j(m)⟩` over tokens `m`.
fn cosine_sums(unit: &[Tensor]) -> Vec<f64> {
    let u = Tensor::stack(unit, 0).flatten(1, -1);
    Vec::try_from(u.mm(&u.tr()).to_kind(Kind::Double).flatten(0, -1)).expect("f64 sums")
}

/// Runs `batches` (`[B, T]` ids and attention mask, 1 = real token) once through `model` and
/// returns both similarity matrices over the real tokens (§3.3 step 1).
pub fn layer_similarity(model: &Model, batches: &[(Tensor, Tensor)]) -> Result<LayerSimilarity> {
    let l = model.num_layers();
    let (mut output, mut mlp_input) = (vec![0.0; l * l], vec![0.0; l * l]);
    let mut tokens = 0.0;
    for batch in batches {
        let rows = batch.1.reshape([-1]).nonzero().squeeze_dim(1);
        tokens += rows.size()[0] as f64;
        let mut c = Collector {
            rows,
            outputs: Vec::with_capacity(l),
            mlp_inputs: Vec::with_capacity(l),
        };
        observe(model, std::slice::from_ref(batch), &mut c, METHOD)?;
        for (acc, states) in [(&mut output, &c.outputs), (&mut mlp_input, &c.mlp_inputs)] {
            acc.iter_mut()
                .zip(cosine_sums(states))
                .for_each(|(a, s)| *a += s);
        }
    }
    if tokens == 0.0 {
        return Err(MethodError::param(
            METHOD,
            "batches",
            "must hold at least one real token (attention mask 1)",
        ));
    }
    let matrix = |sums: Vec<f64>| -> Vec<Vec<f64>> {
        sums.chunks(l)
            .map(|row| row.iter().map(|s| s / tokens).collect())
            .collect()
    };
    Ok(LayerSimilarity {
        output: matrix(output),
        mlp_input: matrix(mlp_input),
        tokens,
    })
}

/// A run of `len` consecutive layers starting at `start`. Fusing or pruning it keeps block
/// `start` and removes blocks `start+1 .. start+len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Span {
    pub start: usize,
    pub len: usize,
}

impl Span {
    /// One past the last layer of the span.
    pub fn end(&self) -> usize {
        self.start + self.len
    }
}

/// Mean pairwise MLP-input similarity over the distinct layer pairs of `span`.
pub fn span_score(sim: &LayerSimilarity, span: Span) -> f64 {
    let pairs: Vec<f64> = (span.start..span.end())
        .flat_map(|i| (i + 1..span.end()).map(move |j| (i, j)))
        .map(|(i, j)| sim.mlp_input[i][j])
        .collect();
    pairs.iter().sum::<f64>() / pairs.len() as f64
}

/// The span of `span_len` layers with the highest [`span_score`] ([inferred]: the paper
/// thresholds pairwise similarity at an unpublished δ; ranking by the mean needs no δ).
///
/// Layer 0 and the last layer are never in the span: layer-pruning studies (ShortGPT,
/// LLM-Streamline, Gromov et al. 2024) find removing either hurts most [inferred]. Ties go to
/// the later span, since deeper layers are the more redundant ones in those studies.
pub fn choose_span(sim: &LayerSimilarity, span_len: usize) -> Result<Span> {
    let l = sim.num_layers();
    check_span_len(l, span_len)?;
    let mut best: Option<(Span, f64)> = None;
    for start in 1..l - span_len {
        let span = Span {
            start,
            len: span_len,
        };
        let score = span_score(sim, span);
        if best.is_none_or(|(_, b)| score >= b) {
            best = Some((span, score));
        }
    }
    Ok(best.expect("at least one candidate span").0)
}

/// Which similarity makes a run of layers redundant (§3.3 step 1; the paper defines both and
/// the reviewers could not tell which one decides, so it is a choice).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpanCriterion {
    /// Pairwise MLP-input similarity: what makes MLPs side by side approximate MLPs in turn.
    MlpInput,
    /// Pairwise inter-layer output similarity (the residual streams leaving the blocks).
    Output,
    /// Both at once (the smaller of the two per pair).
    Both,
}

impl SpanCriterion {
    fn pair(self, sim: &LayerSimilarity, i: usize, j: usize) -> f64 {
        match self {
            SpanCriterion::MlpInput => sim.mlp_input[i][j],
            SpanCriterion::Output => sim.output[i][j],
            SpanCriterion::Both => sim.mlp_input[i][j].min(sim.output[i][j]),
        }
    }

    /// `(least, mean)` similarity over the distinct layer pairs of `span`.
    pub fn span_similarity(self, sim: &LayerSimilarity, span: Span) -> (f64, f64) {
        let pairs: Vec<f64> = (span.start..span.end())
            .flat_map(|i| (i + 1..span.end()).map(move |j| (i, j)))
            .map(|(i, j)| self.pair(sim, i, j))
            .collect();
        let least = pairs.iter().copied().fold(f64::INFINITY, f64::min);
        (least, pairs.iter().sum::<f64>() / pairs.len() as f64)
    }
}

/// Dense2MoE's layer search (§3.3 steps 1–2, reconstructed [inferred]; the paper's δ, search
/// order and budget are unpublished): a span `[l*, l*+n*)` qualifies when every pair of its
/// layers has similarity ≥ δ; the roofline decides how many layers go. Decoding is memory
/// bound, so the cost model is bytes read per decode token ([`lf_uc_bytes_saved`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerSearch {
    /// δ in [-1, 1]: the least pairwise cosine similarity a span may have.
    pub delta: f64,
    pub criterion: SpanCriterion,
    /// Longest span considered (≥ 2); `None` = up to `L − 2` (layer 0 and the last layer are
    /// never fused, as in [`choose_span`]).
    pub max_span_len: Option<usize>,
    /// Roofline target in (0, 1): the fraction of the dense model's bytes per decode token the
    /// fused model must save. The search takes the shortest qualifying span that saves it (the
    /// most similar of those); if no single span does, it adds the longest remaining qualifying
    /// spans until it does. `None`: the single longest qualifying span, i.e. as many bytes as δ
    /// allows in one fused layer.
    pub bytes_reduction: Option<f64>,
}

impl Default for LayerSearch {
    fn default() -> Self {
        Self {
            delta: 0.9,
            criterion: SpanCriterion::MlpInput,
            max_span_len: None,
            bytes_reduction: None,
        }
    }
}

impl LayerSearch {
    pub fn validate(&self) -> Result<()> {
        if !(-1.0..=1.0).contains(&self.delta) {
            return Err(MethodError::param(
                METHOD,
                "delta",
                format!("is {}; allowed: [-1, 1] (a cosine similarity)", self.delta),
            ));
        }
        if self.max_span_len.is_some_and(|l| l < 2) {
            return Err(MethodError::param(
                METHOD,
                "max_span_len",
                "must be at least 2 (a span fuses two or more layers)",
            ));
        }
        if let Some(r) = self.bytes_reduction {
            if !(r > 0.0 && r < 1.0) {
                return Err(MethodError::param(
                    METHOD,
                    "bytes_reduction",
                    format!("is {r}; allowed: (0, 1), a fraction of the dense decode bytes"),
                ));
            }
        }
        Ok(())
    }
}

/// A span the search picked, with why.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ChosenSpan {
    pub span: Span,
    /// Least and mean pairwise similarity under the search's criterion.
    pub min_similarity: f64,
    pub mean_similarity: f64,
    /// Estimated bytes per decode token the change saves ([`lf_uc_bytes_saved`] or, for
    /// pruning, [`bytes_saved_per_decode_token`] plus the removed MLPs).
    pub bytes_saved: f64,
}

/// Every span that qualifies under `search` (layer 0 and the last layer excluded), each with its
/// estimated saving from `saving`, longest first, then most similar, then latest.
fn qualifying_spans(
    sim: &LayerSimilarity,
    search: &LayerSearch,
    saving: &dyn Fn(Span) -> Result<f64>,
) -> Result<Vec<ChosenSpan>> {
    let l = sim.num_layers();
    let longest = search.max_span_len.unwrap_or(l).min(l.saturating_sub(2));
    let mut out = Vec::new();
    for len in 2..=longest {
        for start in 1..l - len {
            let span = Span { start, len };
            let (min_similarity, mean_similarity) = search.criterion.span_similarity(sim, span);
            if min_similarity >= search.delta {
                out.push(ChosenSpan {
                    span,
                    min_similarity,
                    mean_similarity,
                    bytes_saved: saving(span)?,
                });
            }
        }
    }
    out.sort_by(|a, b| {
        b.span
            .len
            .cmp(&a.span.len)
            .then(b.mean_similarity.total_cmp(&a.mean_similarity))
            .then(b.span.start.cmp(&a.span.start))
    });
    Ok(out)
}

/// The search of [`LayerSearch`]: non-overlapping spans, sorted by start. `saving` estimates
/// the bytes per decode token a span's change saves and `dense_bytes` is the model's total
/// before any change. Errors name δ when nothing qualifies or the target cannot be met.
pub fn search_spans(
    sim: &LayerSimilarity,
    search: &LayerSearch,
    dense_bytes: f64,
    saving: &dyn Fn(Span) -> Result<f64>,
) -> Result<Vec<ChosenSpan>> {
    search.validate()?;
    let candidates = qualifying_spans(sim, search, saving)?;
    let Some(longest) = candidates.first().copied() else {
        return Err(MethodError::param(
            METHOD,
            "delta",
            format!(
                "is {}; no run of ≥ 2 interior layers is that similar under {:?} — lower δ",
                search.delta, search.criterion
            ),
        ));
    };
    let Some(fraction) = search.bytes_reduction else {
        return Ok(vec![longest]);
    };
    let target = fraction * dense_bytes;
    // The shortest single span that meets the target, the most similar among those.
    let single = candidates
        .iter()
        .filter(|c| c.bytes_saved >= target)
        .min_by(|a, b| {
            a.span
                .len
                .cmp(&b.span.len)
                .then(b.mean_similarity.total_cmp(&a.mean_similarity))
                .then(b.span.start.cmp(&a.span.start))
        });
    if let Some(c) = single {
        return Ok(vec![*c]);
    }
    // Otherwise greedily the longest non-overlapping spans until the target is met.
    let mut chosen: Vec<ChosenSpan> = Vec::new();
    let mut saved = 0.0;
    for c in &candidates {
        let overlaps = chosen
            .iter()
            .any(|o| c.span.start < o.span.end() && o.span.start < c.span.end());
        if overlaps {
            continue;
        }
        saved += c.bytes_saved;
        chosen.push(*c);
        if saved >= target {
            chosen.sort_by_key(|c| c.span.start);
            return Ok(chosen);
        }
    }
    Err(MethodError::param(
        METHOD,
        "bytes_reduction",
        format!(
            "is {fraction}, but the spans with similarity ≥ δ = {} save at most {:.1} % of the \
             {dense_bytes:.0} bytes per decode token; lower δ or the target",
            search.delta,
            100.0 * saved / dense_bytes
        ),
    ))
}

fn check_span_len(num_layers: usize, span_len: usize) -> Result<()> {
    if span_len < 2 || span_len + 2 > num_layers {
        return Err(MethodError::param(
            METHOD,
            "span_len",
            format!(
                "must be between 2 and num_layers - 2 = {} (layer 0 and the last layer are \
                 never fused), got {span_len}",
                num_layers as i64 - 2
            ),
        ));
    }
    Ok(())
}

fn check_span(num_layers: usize, span: Span) -> Result<()> {
    if span.len < 2 || span.end() > num_layers {
        return Err(MethodError::param(
            METHOD,
            "span",
            format!(
                "must hold at least 2 layers within the model's {num_layers} (layers \
                 [start, start+len) with start+len <= {num_layers}), got start {} len {}",
                span.start, span.len
            ),
        ));
    }
    Ok(())
}

/// Bytes per decode token at `context` that deleting the attention of `span`'s removed blocks
/// saves: attention weights, their KV cache and the blocks' two norms (§3.3 step 2, §8.6). Both
/// layer pruning and LF-UC save these; what they do with the MLPs is in the reports' totals.
///
/// Every block of a model in this IR has the same attention shapes, so the per-block cost is the
/// model's attention total over its layers, the same wherever the span starts: in such a model
/// the roofline fixes how many layers to fuse, and the similarity picks which.
pub fn bytes_saved_per_decode_token(model: &Model, span: Span, context: usize) -> Result<f64> {
    check_span(model.num_layers(), span)?;
    let b = bytes_per_decode_token(model, context, None);
    let per_block = (b.attention_weights + b.kv_cache + b.norms) / model.num_layers() as f64;
    Ok(per_block * (span.len - 1) as f64)
}

/// Removes blocks `start+1 .. end` of `span` (checked by the caller) and returns them.
fn remove_after_first(model: &mut Model, span: Span) -> Result<Vec<Block>> {
    Ok(model.remove_blocks(span.start + 1..span.end())?)
}

/// The layer-pruning baseline (§3.6 (b)): deletes the blocks LF-UC would fuse, MLPs included,
/// keeping block `span.start`.
pub fn layer_prune(model: &mut Model, span: Span) -> Result<()> {
    check_span(model.num_layers(), span)?;
    remove_after_first(model, span)?;
    Ok(())
}

/// Choices of the fused MoE FFN; the paper gives only N = 6 (§3.4).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LfUcConfig {
    /// Routed experts. `None`: one per routed MLP (`len − 1` with the own MLP shared, `len`
    /// without; with several spans, the longest span's count). More than a span's routed MLPs
    /// fills up with copies of them, round-robin, as the paper's "replicated experts" do (§3.3
    /// step 3).
    pub num_experts: Option<usize>,
    /// Experts per token; `None` = 2, capped at the expert count (§3.6's top-2).
    pub top_k: Option<usize>,
    /// The surviving layer's MLP as an always-on, ungated shared expert next to the top-k
    /// renormalised routed ones (the shared-expert reading of the paper's Eq. 6 [inferred]).
    /// Off: it is routed expert 0 like the others.
    pub keep_own_mlp_as_shared: bool,
    /// α of Eq. 6 as reconstructed [inferred]: the fused output is
    /// `α·MLP_l*(x) + β·Σ_j g_j(x)·MLP_j(x)`. α scales the shared own MLP (so it must stay 1
    /// when the own MLP is routed); folded into the down projections, so it costs nothing.
    pub own_scale: f64,
    /// β of the same reading: scales every routed expert. β = `len − 1` over k makes the routed
    /// part stand in for the *sum* of the removed MLPs that running them in turn would add.
    pub routed_scale: f64,
    /// Hardware-aware expert count (§3.5: 3.32 → 5.31 GB of experts gained almost nothing on
    /// Jetson Thor): at most this many bytes of routed experts per fused layer, in the model's
    /// dtype. Caps `num_experts` (replicas first); an error if even the routed MLPs do not fit.
    pub max_expert_bytes: Option<f64>,
    /// Standard deviation of the new router's normal initialisation [inferred] (as §7.1).
    pub router_init_std: f64,
    pub seed: i64,
}

impl Default for LfUcConfig {
    fn default() -> Self {
        Self {
            num_experts: None,
            top_k: None,
            keep_own_mlp_as_shared: true,
            own_scale: 1.0,
            routed_scale: 1.0,
            max_expert_bytes: None,
            router_init_std: 0.02,
            seed: 0,
        }
    }
}

impl LfUcConfig {
    /// Checks the settings that do not depend on the model.
    pub fn validate(&self) -> Result<()> {
        if self.router_init_std.is_nan() || self.router_init_std <= 0.0 {
            return Err(MethodError::param(
                METHOD,
                "router_init_std",
                "must be positive",
            ));
        }
        for (name, v) in [
            ("own_scale", self.own_scale),
            ("routed_scale", self.routed_scale),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return Err(MethodError::param(
                    METHOD,
                    name,
                    format!("is {v}; it must be finite and > 0"),
                ));
            }
        }
        if !self.keep_own_mlp_as_shared && self.own_scale != 1.0 {
            return Err(MethodError::param(
                METHOD,
                "own_scale",
                "scales the shared own MLP; with keep_own_mlp_as_shared = false it must be 1 \
                 (use routed_scale)",
            ));
        }
        if self
            .max_expert_bytes
            .is_some_and(|b| b.is_nan() || b <= 0.0)
        {
            return Err(MethodError::param(
                METHOD,
                "max_expert_bytes",
                "must be positive",
            ));
        }
        if self.num_experts == Some(0) || self.top_k == Some(0) {
            return Err(MethodError::param(
                METHOD,
                if self.top_k == Some(0) {
                    "top_k"
                } else {
                    "num_experts"
                },
                "must be at least 1",
            ));
        }
        Ok(())
    }

    fn routed(&self, span_len: usize) -> usize {
        span_len - usize::from(self.keep_own_mlp_as_shared)
    }

    /// `(num_experts, top_k)` for spans whose longest has `span_len` layers and experts of
    /// `expert_bytes` bytes each, or the parameter that is wrong.
    fn resolve(&self, span_len: usize, expert_bytes: f64) -> Result<(usize, usize)> {
        self.validate()?;
        let routed = self.routed(span_len);
        let mut n = self.num_experts.unwrap_or(routed);
        if let Some(budget) = self.max_expert_bytes {
            let fit = (budget / expert_bytes).floor() as usize;
            if fit < routed {
                return Err(MethodError::param(
                    METHOD,
                    "max_expert_bytes",
                    format!(
                        "is {budget} bytes, room for {fit} experts of {expert_bytes} bytes; the \
                         span's {routed} routed MLPs need {}",
                        routed as f64 * expert_bytes
                    ),
                ));
            }
            n = n.min(fit);
        }
        if n < routed {
            return Err(MethodError::param(
                METHOD,
                "num_experts",
                format!(
                    "must be at least the {routed} routed MLPs of the span (fewer would drop \
                     one), got {n}"
                ),
            ));
        }
        let k = self.top_k.unwrap_or(2.min(n));
        if !(1..=n).contains(&k) {
            return Err(MethodError::param(
                METHOD,
                "top_k",
                format!("must be between 1 and num_experts ({n}), got {k}"),
            ));
        }
        Ok((n, k))
    }
}

fn require_dense(model: &Model) -> Result<()> {
    if model.config.moe.is_some() {
        return Err(MethodError::unsupported(
            METHOD,
            "the model already has MoE layers; Dense2MoE starts from a dense model",
        ));
    }
    Ok(())
}

fn dense_mlp(block: &Block) -> &Mlp {
    match &block.ffn {
        Ffn::Dense(m) => m,
        Ffn::Moe(_) => unreachable!("dense model checked before"),
    }
}

fn mlp_bytes(model: &Model, layer: usize) -> f64 {
    let m = dense_mlp(&model.layers[layer]);
    let elt = model.kind.elt_size_in_bytes() as f64;
    [&m.gate, &m.up, &m.down]
        .iter()
        .map(|l| l.weight.numel() as f64 * elt)
        .sum()
}

/// Checks `spans` against the model: each valid, none overlapping. Returns them sorted.
fn check_spans(num_layers: usize, spans: &[Span]) -> Result<Vec<Span>> {
    if spans.is_empty() {
        return Err(MethodError::param(METHOD, "spans", "is empty"));
    }
    let mut sorted = spans.to_vec();
    sorted.sort_by_key(|s| s.start);
    for s in &sorted {
        check_span(num_layers, *s)?;
    }
    if let Some(w) = sorted.windows(2).find(|w| w[1].start < w[0].end()) {
        return Err(MethodError::param(
            METHOD,
            "spans",
            format!("overlap: {:?} and {:?}", w[0], w[1]),
        ));
    }
    Ok(sorted)
}

/// `(num_experts, top_k)` of [`lf_uc_spans`] for `spans` of a dense `model`.
fn resolve_for(model: &Model, spans: &[Span], cfg: &LfUcConfig) -> Result<(usize, usize)> {
    let longest = spans.iter().map(|s| s.len).max().unwrap_or(2);
    cfg.resolve(longest, mlp_bytes(model, spans[0].start))
}

/// Bytes per decode token (batch 1, top-k experts read) that LF-UC of `span` saves at `context`
/// (§3.3 step 2, §8.6): the removed blocks' attention, KV cache and norms, and their MLPs, less
/// the k routed experts now read and the new router. Equals the change of
/// [`bytes_per_decode_token`] exactly (tested), so the search can rank spans without fusing.
pub fn lf_uc_bytes_saved(
    model: &Model,
    span: Span,
    cfg: &LfUcConfig,
    context: usize,
) -> Result<f64> {
    require_dense(model)?;
    check_span(model.num_layers(), span)?;
    let (n, k) = resolve_for(model, &[span], cfg)?;
    let elt = model.kind.elt_size_in_bytes() as f64;
    let router = (n * model.config.hidden_size) as f64 * elt;
    let removed_mlps: f64 = (span.start + 1..span.end())
        .map(|l| mlp_bytes(model, l))
        .sum();
    let expert = mlp_bytes(model, span.start);
    // Shared own MLP: still read; routed own MLP: it becomes one of the k read experts.
    let own_read_before = if cfg.keep_own_mlp_as_shared {
        0.0
    } else {
        expert
    };
    Ok(
        bytes_saved_per_decode_token(model, span, context)? + removed_mlps + own_read_before
            - k as f64 * expert
            - router,
    )
}

/// Layer-Fusion UpCycling (§3.3 step 3), in place: the MLPs of the blocks after `span.start`
/// become routed experts (stacked, in layer order) of block `span.start`'s new MoE FFN behind a
/// new small random router with renormalised top-k, block `span.start`'s own MLP becomes the
/// shared expert (or expert 0), and the other blocks of the span, attention and norms included,
/// are deleted. The model stays a Llama with MoE layers, so it is evaluated in memory
/// (`save_pretrained` refuses it).
pub fn lf_uc(model: &mut Model, span: Span, cfg: &LfUcConfig) -> Result<()> {
    lf_uc_spans(model, &[span], cfg)
}

/// [`lf_uc`] of several non-overlapping spans at once (each fused layer has the same expert
/// count, so one MoE config describes the model).
pub fn lf_uc_spans(model: &mut Model, spans: &[Span], cfg: &LfUcConfig) -> Result<()> {
    require_dense(model)?;
    let spans = check_spans(model.num_layers(), spans)?;
    let (n, k) = resolve_for(model, &spans, cfg)?;
    let _guard = tch::no_grad_guard();
    // A fused layer ends up at its span's start less the blocks removed before it.
    let mut removed_before = 0;
    let fused_at: Vec<usize> = spans
        .iter()
        .map(|span| {
            let at = span.start - removed_before;
            removed_before += span.len - 1;
            at
        })
        .collect();
    // Back to front, so the earlier spans' indices stay valid; span i's router is seeded
    // `seed + i`.
    let mut layers = Vec::new();
    for (i, span) in spans.iter().enumerate().rev() {
        layers.push((
            fused_at[i],
            fuse(model, *span, (n, k), cfg.seed + i as i64, cfg)?,
        ));
    }
    // With the own MLP kept, it is the always-on shared expert; its gate semantics (Qwen2-MoE's
    // sigmoid) only matter when loading a checkpoint, which this model never is.
    model.install_moe(layers, k, RouterNorm::SoftmaxTopkRenorm)?;
    Ok(())
}

/// Fuses one span: removes its later blocks and returns the MoE layer with `n` experts,
/// top-`k`, that replaces the first block's MLP (installed by the caller).
fn fuse(
    model: &mut Model,
    span: Span,
    (n, k): (usize, usize),
    seed: i64,
    cfg: &LfUcConfig,
) -> Result<MoeLayer> {
    let own = dense_mlp(&model.layers[span.start]).shallow_clone();
    let removed = remove_after_first(model, span)?;
    let mut routed: Vec<&Mlp> = removed.iter().map(dense_mlp).collect();
    if !cfg.keep_own_mlp_as_shared {
        routed.insert(0, &own);
    }
    let sources: Vec<&Mlp> = routed.iter().cycle().take(n).copied().collect();
    let stack = |w: fn(&Mlp) -> &Tensor| {
        Tensor::stack(&sources.iter().map(|m| w(m)).collect::<Vec<_>>(), 0)
    };
    let (w_gate, w_up) = (stack(|m| &m.gate.weight), stack(|m| &m.up.weight));
    let w_down = stack(|m| &m.down.weight) * cfg.routed_scale;
    tch::manual_seed(seed);
    let h = w_gate.size()[2];
    let router =
        Tensor::randn([n as i64, h], (w_gate.kind(), w_gate.device())) * cfg.router_init_std;
    let shared = cfg.keep_own_mlp_as_shared.then(|| {
        let mut mlp = own.shallow_clone();
        mlp.down.weight = &own.down.weight * cfg.own_scale;
        SharedExpert { mlp, gate: None }
    });
    Ok(MoeLayer {
        router: Linear {
            weight: router,
            bias: None,
        },
        w_gate,
        w_up,
        w_down,
        shared,
        selector: Arc::new(TopK {
            k: k as i64,
            norm: RouterNorm::SoftmaxTopkRenorm,
        }),
    })
}

/// The naive prune-then-upcycle baseline of the paper (§3.5): delete the span's later blocks as
/// [`layer_prune`] does, then sparse-upcycle (§7.1) the surviving block's MLP into the same
/// number of experts and top-k as LF-UC would use, so the two differ only in where the experts
/// come from (copies of one MLP vs. the removed layers' MLPs).
pub fn prune_then_upcycle(model: &mut Model, span: Span, cfg: &LfUcConfig) -> Result<()> {
    require_dense(model)?;
    check_span(model.num_layers(), span)?;
    let (n, k) = resolve_for(model, &[span], cfg)?;
    layer_prune(model, span)?;
    upcycle(
        model,
        &UpcycleConfig {
            num_experts: n as i64,
            top_k: k as i64,
            layers: Some(vec![span.start]),
            router_init_std: cfg.router_init_std,
            seed: cfg.seed,
        },
    )
}

/// The whole method: analysis, span choice and LF-UC.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dense2MoeConfig {
    /// Layers fused into one block when `search` is `None` (§3.6's CPU miniature: 2–4).
    pub span_len: usize,
    /// The paper's search (δ threshold over start and length, roofline bytes target); `None`:
    /// the one span of `span_len` layers [`choose_span`] picks.
    pub search: Option<LayerSearch>,
    pub lf_uc: LfUcConfig,
    /// Context length at which decode bytes are counted (the roofline's KV-cache term).
    pub decode_context: usize,
}

impl Default for Dense2MoeConfig {
    fn default() -> Self {
        Self {
            span_len: 3,
            search: None,
            lf_uc: LfUcConfig::default(),
            decode_context: 512,
        }
    }
}

impl Dense2MoeConfig {
    /// Checks the settings that do not depend on the model.
    pub fn validate(&self) -> Result<()> {
        if self.span_len < 2 {
            return Err(MethodError::param(
                METHOD,
                "span_len",
                format!("must be at least 2, got {}", self.span_len),
            ));
        }
        if let Some(search) = &self.search {
            search.validate()?;
        }
        self.lf_uc.validate()
    }

    fn choice(&self) -> SpanChoice<'_> {
        match &self.search {
            Some(search) => SpanChoice::Search(search),
            None => SpanChoice::Fixed(self.span_len),
        }
    }
}

/// How [`analyse_and_apply`] picks spans.
enum SpanChoice<'a> {
    Fixed(usize),
    Search(&'a LayerSearch),
}

/// What the analysis found and what the change saves (§3.7: always report bytes per token).
#[derive(Debug, Clone, Serialize)]
pub struct Dense2MoeReport {
    pub similarity: LayerSimilarity,
    /// The changed spans in layer order, with their similarities (under the search's criterion,
    /// MLP-input for a fixed length) and estimated savings.
    pub spans: Vec<ChosenSpan>,
    pub decode_context: usize,
    pub bytes_before: BytesPerToken,
    pub bytes_after: BytesPerToken,
    /// `bytes_before.total − bytes_after.total`.
    pub bytes_saved: f64,
}

fn analyse_and_apply(
    model: &mut Model,
    batches: &[(Tensor, Tensor)],
    choice: SpanChoice<'_>,
    decode_context: usize,
    saving: &dyn Fn(&Model, Span) -> Result<f64>,
    apply: impl FnOnce(&mut Model, &[Span]) -> Result<()>,
) -> Result<Dense2MoeReport> {
    let similarity = layer_similarity(model, batches)?;
    let bytes_before = bytes_per_decode_token(model, decode_context, None);
    let spans = match choice {
        SpanChoice::Fixed(len) => {
            let span = choose_span(&similarity, len)?;
            let (min_similarity, mean_similarity) =
                SpanCriterion::MlpInput.span_similarity(&similarity, span);
            vec![ChosenSpan {
                span,
                min_similarity,
                mean_similarity,
                bytes_saved: saving(model, span)?,
            }]
        }
        SpanChoice::Search(search) => {
            search_spans(&similarity, search, bytes_before.total, &|span| {
                saving(model, span)
            })?
        }
    };
    apply(model, &spans.iter().map(|c| c.span).collect::<Vec<_>>())?;
    let bytes_after = bytes_per_decode_token(model, decode_context, None);
    Ok(Dense2MoeReport {
        similarity,
        spans,
        decode_context,
        bytes_saved: bytes_before.total - bytes_after.total,
        bytes_before,
        bytes_after,
    })
}

/// Dense2MoE without its continual pre-training: measures the similarities on `batches`,
/// picks the span(s) (fixed length or the search) and fuses them with [`lf_uc_spans`], in place.
pub fn dense2moe(
    model: &mut Model,
    batches: &[(Tensor, Tensor)],
    cfg: &Dense2MoeConfig,
) -> Result<Dense2MoeReport> {
    require_dense(model)?;
    cfg.validate()?;
    if cfg.search.is_none() {
        check_span_len(model.num_layers(), cfg.span_len)?;
        cfg.lf_uc.resolve(cfg.span_len, mlp_bytes(model, 0))?;
    }
    analyse_and_apply(
        model,
        batches,
        cfg.choice(),
        cfg.decode_context,
        &|m, span| lf_uc_bytes_saved(m, span, &cfg.lf_uc, cfg.decode_context),
        |m, spans| lf_uc_spans(m, spans, &cfg.lf_uc),
    )
}

/// Bytes per decode token [`layer_prune`] of `span` saves: attention, KV cache, norms and MLPs
/// of the removed blocks.
fn prune_bytes_saved(model: &Model, span: Span, context: usize) -> Result<f64> {
    let mlps: f64 = (span.start + 1..span.end())
        .map(|l| mlp_bytes(model, l))
        .sum();
    Ok(bytes_saved_per_decode_token(model, span, context)? + mlps)
}

/// The layer-pruning baseline on the span [`dense2moe`] would fuse with a fixed `span_len`
/// (same analysis, same choice), so the two differ only in what happens to the MLPs.
pub fn layer_prune_by_similarity(
    model: &mut Model,
    batches: &[(Tensor, Tensor)],
    span_len: usize,
    decode_context: usize,
) -> Result<Dense2MoeReport> {
    require_dense(model)?;
    check_span_len(model.num_layers(), span_len)?;
    layer_prune_with(model, batches, SpanChoice::Fixed(span_len), decode_context)
}

/// The layer-pruning baseline with Dense2MoE's search (same δ, criterion and bytes target):
/// pruning reaches a bytes target with fewer layers, which is the comparison at equal bytes.
pub fn layer_prune_by_search(
    model: &mut Model,
    batches: &[(Tensor, Tensor)],
    search: &LayerSearch,
    decode_context: usize,
) -> Result<Dense2MoeReport> {
    require_dense(model)?;
    layer_prune_with(model, batches, SpanChoice::Search(search), decode_context)
}

fn layer_prune_with(
    model: &mut Model,
    batches: &[(Tensor, Tensor)],
    choice: SpanChoice<'_>,
    decode_context: usize,
) -> Result<Dense2MoeReport> {
    analyse_and_apply(
        model,
        batches,
        choice,
        decode_context,
        &|m, span| prune_bytes_saved(m, span, decode_context),
        |m, spans| {
            let spans = check_spans(m.num_layers(), spans)?;
            spans.iter().rev().try_for_each(|s| layer_prune(m, *s))
        },
    )
}

/// [`prune_then_upcycle`] on the span [`dense2moe`] with `cfg` would fuse (a fixed length, or the
/// search's first span), so the two differ only in where the experts come from.
pub fn prune_then_upcycle_by_similarity(
    model: &mut Model,
    batches: &[(Tensor, Tensor)],
    cfg: &Dense2MoeConfig,
) -> Result<Dense2MoeReport> {
    require_dense(model)?;
    cfg.validate()?;
    analyse_and_apply(
        model,
        batches,
        cfg.choice(),
        cfg.decode_context,
        &|m, span| lf_uc_bytes_saved(m, span, &cfg.lf_uc, cfg.decode_context),
        |m, spans| match spans {
            [span] => prune_then_upcycle(m, *span, &cfg.lf_uc),
            _ => Err(MethodError::param(
                METHOD,
                "search",
                format!(
                    "chose {} spans; prune-then-upcycle upcycles one layer (one MoE config), so \
                     give a target one span meets",
                    spans.len()
                ),
            )),
        },
    )
}

/// LLM-Streamline (Chen et al., ICLR 2025, arXiv 2403.19135; the paper's layer-pruning
/// baseline): the run of `span_len` layers whose input and output hidden states are most
/// cosine-similar is replaced by one layer, initialised from the run's first layer and trained
/// with an MSE loss to map the run's input to its output on the calibration data (the official
/// code's "llama_layer" replacement; its settings: AdamW lr 2e-4, weight decay 1e-3, cosine to
/// 5e-5 after 1 % warm-up, clipping at 5).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamlineConfig {
    /// Layers replaced by one (LLM-Streamline's `layer_intervals + 1`), ≥ 2.
    pub span_len: usize,
    /// Optimizer steps, one calibration batch each (cycling); 0 = plain pruning of the run.
    pub steps: usize,
    pub lr: f64,
    /// The cosine schedule ends at `lr · min_lr_ratio` (code: 5e-5 / 2e-4).
    pub min_lr_ratio: f64,
    pub warmup_steps: usize,
    pub weight_decay: f64,
    /// Global gradient-norm clip (code: 5).
    pub grad_clip: f64,
    pub decode_context: usize,
}

impl Default for StreamlineConfig {
    fn default() -> Self {
        Self {
            span_len: 3,
            steps: 100,
            lr: 2e-4,
            min_lr_ratio: 0.25,
            warmup_steps: 1,
            weight_decay: 1e-3,
            grad_clip: 5.0,
            decode_context: 512,
        }
    }
}

impl StreamlineConfig {
    /// The optimizer settings as a [`TrainConfig`] training every module of block `layer`.
    fn optimizer(&self, layer: usize) -> TrainConfig {
        let block_modules: Vec<Module> = Module::ALL
            .into_iter()
            .filter(|m| !matches!(m, Module::Embeddings | Module::LmHead | Module::FinalNorm))
            .collect();
        TrainConfig {
            steps: self.steps.max(1),
            lr: self.lr,
            min_lr_ratio: self.min_lr_ratio,
            warmup_steps: self.warmup_steps,
            weight_decay: self.weight_decay,
            beta2: 0.999,
            grad_clip: self.grad_clip,
            load_balance_coef: 0.0,
            trainable: Trainable::only(&block_modules).in_layers([layer]),
            ..TrainConfig::default()
        }
    }

    pub fn validate(&self) -> Result<()> {
        if self.span_len < 2 {
            return Err(MethodError::param(
                "llm_streamline",
                "span_len",
                format!("must be at least 2, got {}", self.span_len),
            ));
        }
        self.optimizer(0).validate()
    }
}

/// What [`llm_streamline`] did.
#[derive(Debug, Clone, Serialize)]
pub struct StreamlineReport {
    pub span: Span,
    /// Mean per-token cosine between the run's input and output hidden states.
    pub input_output_similarity: f64,
    /// Mean squared error (real tokens) of the replacement on the calibration data, before and
    /// after training; the data is not split, so this is a training loss.
    pub mse_before: f64,
    pub mse_after: f64,
    pub bytes_before: BytesPerToken,
    pub bytes_after: BytesPerToken,
}

/// The run LLM-Streamline replaces: maximal cosine between the input of block `start` (the
/// output of block `start − 1`) and the output of block `end − 1` ([inferred]: `start ≥ 1`
/// because the similarity analysis has no embedding-output row; the official code also
/// considers the embeddings). Ties go to the later run.
pub fn choose_streamline_span(sim: &LayerSimilarity, span_len: usize) -> Result<(Span, f64)> {
    let l = sim.num_layers();
    if span_len < 2 || span_len + 1 > l {
        return Err(MethodError::param(
            "llm_streamline",
            "span_len",
            format!(
                "must be between 2 and num_layers - 1 = {}, got {span_len}",
                l as i64 - 1
            ),
        ));
    }
    let mut best: Option<(Span, f64)> = None;
    for start in 1..=l - span_len {
        let span = Span {
            start,
            len: span_len,
        };
        let score = sim.output[start - 1][span.end() - 1];
        if best.is_none_or(|(_, b)| score >= b) {
            best = Some((span, score));
        }
    }
    Ok(best.expect("at least one run"))
}

/// Mean squared error over the real tokens of `pred` vs `target` (`[B, T, H]`, mask `[B, T]`).
fn masked_mse(pred: &Tensor, target: &Tensor, mask: &Tensor) -> Tensor {
    let real = mask.to_kind(Kind::Float).unsqueeze(-1);
    let h = pred.size()[2] as f64;
    ((pred - target).square() * &real).sum(Kind::Float) / (real.sum(Kind::Float) * h).clamp_min(1.0)
}

/// LLM-Streamline, in place: choose the run, record its input and output hidden states on
/// `batches` (a [`BlockStream`] pass), delete blocks `start+1 .. end`, and train block `start`
/// alone to map the recorded inputs to the recorded outputs.
pub fn llm_streamline(
    model: &mut Model,
    batches: &[(Tensor, Tensor)],
    cfg: &StreamlineConfig,
) -> Result<StreamlineReport> {
    require_dense(model)?;
    cfg.validate()?;
    if model.kind != Kind::Float {
        return Err(MethodError::unsupported(
            "llm_streamline",
            "training the replacement layer needs f32 weights (load the model with --dtype f32)",
        ));
    }
    let similarity = layer_similarity(model, batches)?;
    let (span, input_output_similarity) = choose_streamline_span(&similarity, cfg.span_len)?;
    let mut stream = BlockStream::new(model, batches, "llm_streamline")?;
    stream.advance_to(model, span.start);
    let inputs = stream.hidden_states();
    stream.advance_to(model, span.end());
    let targets = stream.hidden_states();
    let bytes_before = bytes_per_decode_token(model, cfg.decode_context, None);
    layer_prune(model, span)?;
    let mse = |model: &Model| -> f64 {
        tch::no_grad(|| {
            let total: f64 = stream
                .block_inputs()
                .iter()
                .zip(&inputs)
                .zip(&targets)
                .zip(batches)
                .map(|(((bi, x), y), (_, mask))| {
                    let pred = model.forward_block(
                        span.start,
                        x.shallow_clone(),
                        bi,
                        None,
                        &mut ForwardOptions::default(),
                    );
                    masked_mse(&pred, y, mask).double_value(&[])
                })
                .sum();
            total / batches.len() as f64
        })
    };
    let mse_before = mse(model);
    if cfg.steps > 0 {
        let opt = cfg.optimizer(span.start);
        optimize(
            model,
            &opt,
            &mut LossFn(|model: &Model, step: usize| {
                let i = step % batches.len();
                let pred = model.forward_block(
                    span.start,
                    inputs[i].shallow_clone(),
                    stream.block_inputs()[i],
                    None,
                    &mut ForwardOptions::default(),
                );
                masked_mse(&pred, &targets[i], &batches[i].1)
            }),
        )?;
    }
    let mse_after = mse(model);
    Ok(StreamlineReport {
        span,
        input_output_similarity,
        mse_before,
        mse_after,
        bytes_after: bytes_per_decode_token(model, cfg.decode_context, None),
        bytes_before,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// MLP-input similarity 0.5 everywhere off the diagonal except `high` pairs.
    fn sim(l: usize, high: &[(usize, usize, f64)]) -> LayerSimilarity {
        let mut m = vec![vec![0.5; l]; l];
        for (i, row) in m.iter_mut().enumerate() {
            row[i] = 1.0;
        }
        for &(i, j, v) in high {
            m[i][j] = v;
            m[j][i] = v;
        }
        LayerSimilarity {
            output: m.clone(),
            mlp_input: m,
            tokens: 1.0,
        }
    }

    #[test]
    fn choose_span_picks_the_most_similar_interior_run() {
        // Layers 3,4,5 of 8 are mutually similar; 0-1 are even more so but layer 0 is excluded.
        let s = sim(
            8,
            &[
                (0, 1, 0.99),
                (3, 4, 0.9),
                (3, 5, 0.9),
                (4, 5, 0.9),
                (1, 2, 0.8),
            ],
        );
        assert_eq!(choose_span(&s, 3).unwrap(), Span { start: 3, len: 3 });
        assert!((span_score(&s, Span { start: 3, len: 3 }) - 0.9).abs() < 1e-12);
        // Length 2: the (3,4) and (4,5) pairs tie at 0.9; the later one wins.
        assert_eq!(choose_span(&s, 2).unwrap(), Span { start: 4, len: 2 });
        // The last layer (7) is excluded even when it is the most similar.
        let s = sim(8, &[(6, 7, 0.99), (2, 3, 0.7)]);
        assert_eq!(choose_span(&s, 2).unwrap(), Span { start: 2, len: 2 });
    }

    #[test]
    fn choose_span_names_a_bad_length() {
        let s = sim(6, &[]);
        assert_eq!(choose_span(&s, 4).unwrap(), Span { start: 1, len: 4 });
        for bad in [1, 5] {
            let err = choose_span(&s, bad).unwrap_err().to_string();
            assert!(
                err.contains("`span_len`") && err.contains("between 2 and num_layers - 2 = 4"),
                "{err}"
            );
        }
    }
}
