//! Dense2MoE (F. Li, H. Ji et al., arXiv 2605.26496; METHODS.md §3): find a run of redundant
//! layers in a dense model, keep the first block of the run with its attention, delete the
//! attention (and norms) of the others, and move their MLPs into the surviving block as routed
//! experts of a new MoE FFN ("Layer-Fusion UpCycling", LF-UC). Decoding is memory-bound, so
//! dropping attention weights and KV cache is what buys latency (the roofline argument, §3.3
//! step 2). The plain layer-pruning baseline (delete the same blocks, MLPs included) shares the
//! analysis. No official code exists; the paper's text beyond the abstract was not readable, so
//! the details marked [inferred] are this harness's reconstruction, not the paper's.
//!
//! Steps: [`layer_similarity`] (one calibration pass, §3.3 step 1) → [`choose_span`] →
//! [`lf_uc`] or [`layer_prune`]; [`dense2moe`] and [`layer_prune_by_similarity`] chain them and
//! return a [`Dense2MoeReport`]. Continual pre-training (§3.3 step 4) is the train module's job.
use crate::calibration::observe;
use crate::error::{MethodError, Result};
use moebench_model::config::{MoeConfig, RouterNorm};
use moebench_model::cost::{bytes_per_decode_token, BytesPerToken};
use moebench_model::layers::{Linear, Mlp};
use moebench_model::model::Block;
use moebench_model::moe::{MoeLayer, SharedExpert, TopK};
use moebench_model::observer::{ForwardObserver, HiddenPoint};
use moebench_model::{Ffn, Model};
use serde::Serialize;
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

/// Removes blocks `start+1 .. end` of `span` and their entries in the config.
fn remove_after_first(model: &mut Model, span: Span) -> Vec<Block> {
    let removed = span.start + 1..span.end();
    if let Some(moe) = &mut model.config.moe {
        moe.sparse_layers.drain(removed.clone());
    }
    let blocks = model.layers.drain(removed).collect();
    model.config.num_layers = model.layers.len();
    blocks
}

/// The layer-pruning baseline (§3.6 (b)): deletes the blocks LF-UC would fuse, MLPs included,
/// keeping block `span.start`.
pub fn layer_prune(model: &mut Model, span: Span) -> Result<()> {
    check_span(model.num_layers(), span)?;
    remove_after_first(model, span);
    Ok(())
}

/// Choices of the fused MoE FFN; the paper gives only N = 6 (§3.4).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LfUcConfig {
    /// Routed experts. `None`: one per routed MLP (`len − 1` with the own MLP shared, `len`
    /// without). More than that fills up with copies of the routed MLPs, round-robin, as the
    /// paper's "replicated experts" do (§3.3 step 3).
    pub num_experts: Option<usize>,
    /// Experts per token; `None` = 2, capped at the expert count (§3.6's top-2).
    pub top_k: Option<usize>,
    /// The surviving layer's MLP as an always-on, ungated shared expert next to the top-k
    /// renormalised routed ones: the α = β = 1 reading of the paper's Eq. 6 [inferred]. Off: it
    /// is routed expert 0 like the others.
    pub keep_own_mlp_as_shared: bool,
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
            router_init_std: 0.02,
            seed: 0,
        }
    }
}

impl LfUcConfig {
    /// `(num_experts, top_k)` for a span of `span_len` layers, or the parameter that is wrong.
    fn resolve(&self, span_len: usize) -> Result<(usize, usize)> {
        let routed = span_len - usize::from(self.keep_own_mlp_as_shared);
        let n = self.num_experts.unwrap_or(routed);
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
        if self.router_init_std.is_nan() || self.router_init_std <= 0.0 {
            return Err(MethodError::param(
                METHOD,
                "router_init_std",
                "must be positive",
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

/// Layer-Fusion UpCycling (§3.3 step 3), in place: the MLPs of the blocks after `span.start`
/// become routed experts (stacked, in layer order) of block `span.start`'s new MoE FFN behind a
/// new small random router with renormalised top-k, block `span.start`'s own MLP becomes the
/// shared expert (or expert 0), and the other blocks of the span, attention and norms included,
/// are deleted. The model stays a Llama with one MoE layer, so it is evaluated in memory
/// (`save_pretrained` refuses it).
pub fn lf_uc(model: &mut Model, span: Span, cfg: &LfUcConfig) -> Result<()> {
    require_dense(model)?;
    check_span(model.num_layers(), span)?;
    let (n, k) = cfg.resolve(span.len)?;
    let _guard = tch::no_grad_guard();
    let Ffn::Dense(own) = &model.layers[span.start].ffn else {
        unreachable!("dense model checked above")
    };
    let own = own.shallow_clone();
    let removed = remove_after_first(model, span);
    let mut routed: Vec<_> = removed
        .iter()
        .map(|b| match &b.ffn {
            Ffn::Dense(m) => m,
            Ffn::Moe(_) => unreachable!("dense model checked above"),
        })
        .collect();
    if !cfg.keep_own_mlp_as_shared {
        routed.insert(0, &own);
    }
    let sources: Vec<&Mlp> = routed.iter().cycle().take(n).copied().collect();
    let stack = |w: fn(&Mlp) -> &Tensor| {
        Tensor::stack(&sources.iter().map(|m| w(m)).collect::<Vec<_>>(), 0)
    };
    let (w_gate, w_up, w_down) = (
        stack(|m| &m.gate.weight),
        stack(|m| &m.up.weight),
        stack(|m| &m.down.weight),
    );
    tch::manual_seed(cfg.seed);
    let h = w_gate.size()[2];
    let router =
        Tensor::randn([n as i64, h], (w_gate.kind(), w_gate.device())) * cfg.router_init_std;
    let shared = cfg.keep_own_mlp_as_shared.then(|| SharedExpert {
        mlp: own.shallow_clone(),
        gate: None,
    });
    model.layers[span.start].ffn = Ffn::Moe(MoeLayer {
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
    });
    let mut sparse_layers = vec![false; model.num_layers()];
    sparse_layers[span.start] = true;
    model.config.moe = Some(MoeConfig {
        num_experts: n,
        top_k: k,
        expert_intermediate_size: model.config.intermediate_size,
        router_norm: RouterNorm::SoftmaxTopkRenorm,
        // The width of the always-on expert. Its gate semantics (Qwen2-MoE's sigmoid) only
        // matter when loading a checkpoint, which this model never is.
        shared_expert_intermediate_size: cfg
            .keep_own_mlp_as_shared
            .then_some(model.config.intermediate_size),
        sparse_layers,
    });
    Ok(())
}

/// The whole method: analysis, span choice and LF-UC.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Dense2MoeConfig {
    /// Layers fused into one block (§3.6's CPU miniature: 2–4).
    pub span_len: usize,
    pub lf_uc: LfUcConfig,
    /// Context length at which the report's decode bytes are counted.
    pub decode_context: usize,
}

impl Default for Dense2MoeConfig {
    fn default() -> Self {
        Self {
            span_len: 3,
            lf_uc: LfUcConfig::default(),
            decode_context: 512,
        }
    }
}

/// What the analysis found and what the change saves (§3.7: always report bytes per token).
#[derive(Debug, Clone, Serialize)]
pub struct Dense2MoeReport {
    pub similarity: LayerSimilarity,
    pub span: Span,
    /// [`span_score`] of the chosen span.
    pub span_score: f64,
    pub decode_context: usize,
    pub bytes_before: BytesPerToken,
    pub bytes_after: BytesPerToken,
    /// `bytes_before.total − bytes_after.total`.
    pub bytes_saved: f64,
}

fn analyse_and_apply(
    model: &mut Model,
    batches: &[(Tensor, Tensor)],
    span_len: usize,
    decode_context: usize,
    apply: impl FnOnce(&mut Model, Span) -> Result<()>,
) -> Result<Dense2MoeReport> {
    let similarity = layer_similarity(model, batches)?;
    let span = choose_span(&similarity, span_len)?;
    let bytes_before = bytes_per_decode_token(model, decode_context, None);
    apply(model, span)?;
    let bytes_after = bytes_per_decode_token(model, decode_context, None);
    Ok(Dense2MoeReport {
        span_score: span_score(&similarity, span),
        similarity,
        span,
        decode_context,
        bytes_saved: bytes_before.total - bytes_after.total,
        bytes_before,
        bytes_after,
    })
}

/// Dense2MoE without its continual pre-training: measures the similarities on `batches`,
/// picks the span with [`choose_span`] and fuses it with [`lf_uc`], in place.
pub fn dense2moe(
    model: &mut Model,
    batches: &[(Tensor, Tensor)],
    cfg: &Dense2MoeConfig,
) -> Result<Dense2MoeReport> {
    require_dense(model)?;
    check_span_len(model.num_layers(), cfg.span_len)?;
    cfg.lf_uc.resolve(cfg.span_len)?;
    analyse_and_apply(
        model,
        batches,
        cfg.span_len,
        cfg.decode_context,
        |m, span| lf_uc(m, span, &cfg.lf_uc),
    )
}

/// The layer-pruning baseline on the span [`dense2moe`] would fuse (same analysis, same
/// choice), so the two differ only in what happens to the MLPs.
pub fn layer_prune_by_similarity(
    model: &mut Model,
    batches: &[(Tensor, Tensor)],
    span_len: usize,
    decode_context: usize,
) -> Result<Dense2MoeReport> {
    check_span_len(model.num_layers(), span_len)?;
    analyse_and_apply(model, batches, span_len, decode_context, layer_prune)
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
