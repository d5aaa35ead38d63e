//! Router swaps: training-free changes of the selection rule on an MoE model's routers.
use crate::calibration::observe;
use crate::dume::{OracleRouter, RandomRouter};
use crate::error::{MethodError, Result};
use crate::method::{
    at_most_experts, install, moe_config, moe_layers, shared, swap, MethodEnv, ModelFacts,
    SavedRouterParts, TypedMethod,
};
use crate::routing::{
    fit_causal_thresholds, measure_logit_std, DTopPConfig, GroupMode, LayerSelectors,
    ThresholdRouting,
};
use moebench_core::params::{
    MethodKind, MethodSchema, ParamDefault as D, ParamSpec as P, ParamType as T,
};
use moebench_model::moe::{self, MoeLayer, Selector};
use moebench_model::observer::{ForwardObserver, MoeEvent};
use moebench_model::Model;
use serde::Deserialize;
use std::sync::Arc;

const MODE: P = P::new(
    "mode",
    T::Choice(&["full_sequence", "decode_batch", "causal"]),
    D::Text("full_sequence"),
    "which tokens share the budget (§4.7.1): a sequence, a decode step's batch, or per token with `threshold`",
);
const THRESHOLD: P = P::new(
    "threshold",
    T::FloatOrList {
        min: None,
        max: None,
    },
    D::Unset,
    "score threshold(s) of mode=causal (one, or one per MoE layer); unset: fitted layer by layer on the calibration text so each layer spends the budget (§4.7.1)",
);

/// One number for every MoE layer, or one per layer (`fixed_scale`, `threshold`).
fn per_layer_values(
    method: &str,
    name: &str,
    value: Option<&serde_json::Value>,
    layers: usize,
) -> Result<Option<Vec<f64>>> {
    let bad = |got: usize| {
        MethodError::param(
            method,
            name,
            format!("has {got} values; give one number, or one per MoE layer ({layers})"),
        )
    };
    match value {
        None => Ok(None),
        Some(serde_json::Value::Array(items)) => {
            let values: Vec<f64> = items.iter().filter_map(serde_json::Value::as_f64).collect();
            match values.len() == layers {
                true => Ok(Some(values)),
                false => Err(bad(values.len())),
            }
        }
        Some(v) => Ok(Some(vec![v.as_f64().ok_or_else(|| bad(0))?; layers])),
    }
}

/// The budget-sharing rule of USMoE and Expert Choice: `mode` and `threshold` as given.
struct Grouping<'a> {
    method: &'static str,
    mode: &'a str,
    threshold: Option<&'a serde_json::Value>,
}

impl Grouping<'_> {
    /// Plan-time checks: a threshold only with mode=causal.
    fn check(&self) -> Result<()> {
        match (self.mode, self.threshold) {
            ("causal", _) | (_, None) => Ok(()),
            (_, Some(_)) => Err(MethodError::param(
                self.method,
                "threshold",
                "is only used with mode=causal",
            )),
        }
    }

    /// Causal without a threshold: fitted on calibration data when the method is applied.
    fn fitted(&self) -> bool {
        self.mode == "causal" && self.threshold.is_none()
    }

    /// One group mode per MoE layer.
    fn modes(&self, model: &Model) -> Result<Vec<GroupMode>> {
        self.check()?;
        let layers = moe_layers(model, self.method)?.len();
        let mode = match self.mode {
            "decode_batch" => GroupMode::DecodeBatch,
            _ => GroupMode::FullSequence,
        };
        match (self.mode, per_layer_values(self.method, "threshold", self.threshold, layers)?) {
            ("causal", Some(thresholds)) => Ok(thresholds
                .into_iter()
                .map(|threshold| GroupMode::Causal { threshold })
                .collect()),
            ("causal", None) => Err(MethodError::param(
                self.method,
                "threshold",
                "is fitted on the calibration text when the method is applied (`moebench run`, `moebench apply`); to train with a causal router or build it without calibration, give `threshold` (one, or one per MoE layer)",
            )),
            _ => Ok(vec![mode; layers]),
        }
    }

    /// Applies `selector_for(mode)` per layer, or with a causal mode and no threshold fits the
    /// thresholds layer by layer on the calibration text (§4.7.1's causal fallback).
    fn apply<S: ThresholdRouting + Selector + 'static>(
        &self,
        mut model: Model,
        env: &dyn MethodEnv,
        selector_for: impl Fn(GroupMode) -> S,
    ) -> Result<Model> {
        if self.fitted() {
            fit_causal_thresholds(
                &mut model,
                env.calibration(),
                &selector_for(GroupMode::FullSequence),
            )?;
            return Ok(model);
        }
        let selectors = self.selectors(&model, selector_for)?;
        install(&mut model, selectors)?;
        Ok(model)
    }

    /// One `selector_for(mode)` per MoE layer.
    fn selectors<S: Selector + 'static>(
        &self,
        model: &Model,
        selector_for: impl Fn(GroupMode) -> S,
    ) -> Result<LayerSelectors> {
        Ok(LayerSelectors {
            selectors: self
                .modes(model)?
                .into_iter()
                .map(|mode| Arc::new(selector_for(mode)) as Arc<dyn Selector>)
                .collect(),
            controllers: Vec::new(),
        })
    }
}

/// The saved router of USMoE or Expert Choice: in a causal mode it records each layer's
/// threshold (fitted or given), read back from the installed selectors.
fn saved_grouped_router(
    model: &Model,
    checked: &serde_json::Map<String, serde_json::Value>,
) -> Option<SavedRouterParts> {
    let mut params = checked.clone();
    if checked.get("mode").and_then(serde_json::Value::as_str) == Some("causal") {
        let thresholds: Vec<f64> = model
            .layers
            .iter()
            .filter_map(|b| match &b.ffn {
                moebench_model::Ffn::Moe(m) => m.selector.calibrated_state(),
                moebench_model::Ffn::Dense(_) => None,
            })
            .map(|s| s.threshold)
            .collect();
        params.insert("threshold".into(), serde_json::json!(thresholds));
    }
    Some(SavedRouterParts {
        params,
        frozen_p: Vec::new(),
    })
}

/// Token-choice top-k with the checkpoint's normalisation (docs/methods.md §7.3).
pub struct TopK;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopKParams {
    k: Option<i64>,
}

impl TypedMethod for TopK {
    type Params = TopKParams;

    fn schema(&self) -> &'static MethodSchema {
        const SCHEMA: MethodSchema = MethodSchema {
            name: "topk",
            kind: MethodKind::RouterSwap,
            description:
                "token-choice top-k with the checkpoint's normalisation (the standard router)",
            calibrated: false,
            params: &[P::new(
                "k",
                T::int(1),
                D::FromModel("top_k"),
                "experts per token",
            )],
        };
        &SCHEMA
    }

    fn plan(&self, p: &TopKParams, before: &ModelFacts) -> Result<ModelFacts> {
        at_most_experts("topk", "k", p.k.unwrap_or(1) as f64, before)?;
        Ok(before.clone())
    }

    fn apply(&self, model: Model, p: &TopKParams, _env: &dyn MethodEnv) -> Result<Model> {
        swap(self, model, p)
    }

    fn selectors(&self, model: &Model, p: &TopKParams) -> Option<Result<LayerSelectors>> {
        Some((|| {
            let moe = moe_config(model, "topk")?;
            let k = p.k.unwrap_or(moe.top_k as i64);
            if k as usize > moe.num_experts {
                return Err(MethodError::param(
                    "topk",
                    "k",
                    format!("is {k}; the model has {} experts", moe.num_experts),
                ));
            }
            shared(
                model,
                "topk",
                Arc::new(moe::TopK {
                    k,
                    norm: moe.router_norm,
                }),
            )
        })())
    }
}

/// Fixed-threshold Top-p (Huang et al., docs/methods.md §7.5).
pub struct TopP;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopPParams {
    p: f64,
}

impl TypedMethod for TopP {
    type Params = TopPParams;

    fn schema(&self) -> &'static MethodSchema {
        const SCHEMA: MethodSchema = MethodSchema {
            name: "topp",
            kind: MethodKind::RouterSwap,
            description: "fixed-threshold Top-p: the fewest experts whose softmax mass reaches p (Huang et al.)",
            calibrated: false,
            params: &[P::new("p", T::PROBABILITY, D::Float(0.4), "cumulative probability threshold")],
        };
        &SCHEMA
    }

    fn plan(&self, _p: &TopPParams, before: &ModelFacts) -> Result<ModelFacts> {
        before.require_moe("topp")?;
        Ok(before.clone())
    }

    fn apply(&self, model: Model, p: &TopPParams, _env: &dyn MethodEnv) -> Result<Model> {
        swap(self, model, p)
    }

    fn selectors(&self, model: &Model, p: &TopPParams) -> Option<Result<LayerSelectors>> {
        Some(shared(
            model,
            "topp",
            Arc::new(crate::routing::TopP::new(p.p)),
        ))
    }
}

/// Expert Choice (Zhou et al., docs/methods.md §7.4).
pub struct ExpertChoice;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpertChoiceParams {
    capacity: Option<f64>,
    mode: String,
    threshold: Option<serde_json::Value>,
}

impl ExpertChoiceParams {
    fn grouping(&self) -> Grouping<'_> {
        Grouping {
            method: "expert_choice",
            mode: &self.mode,
            threshold: self.threshold.as_ref(),
        }
    }

    fn capacity(&self, model: &Model) -> Result<f64> {
        let moe = moe_config(model, "expert_choice")?;
        let capacity = self.capacity.unwrap_or(moe.top_k as f64);
        match capacity > moe.num_experts as f64 {
            true => Err(MethodError::param(
                "expert_choice",
                "capacity",
                format!("is {capacity}; the model has {} experts", moe.num_experts),
            )),
            false => Ok(capacity),
        }
    }
}

impl TypedMethod for ExpertChoice {
    type Params = ExpertChoiceParams;

    fn schema(&self) -> &'static MethodSchema {
        const SCHEMA: MethodSchema = MethodSchema {
            name: "expert_choice",
            kind: MethodKind::RouterSwap,
            description: "Expert Choice: each expert takes its top tokens of a group (non-causal unless mode=causal)",
            calibrated: false,
            params: &[
                P::new("capacity", T::POSITIVE, D::FromModel("top_k"), "experts per token on average (c)"),
                MODE,
                THRESHOLD,
            ],
        };
        &SCHEMA
    }

    fn plan(&self, p: &ExpertChoiceParams, before: &ModelFacts) -> Result<ModelFacts> {
        at_most_experts(
            "expert_choice",
            "capacity",
            p.capacity.unwrap_or(0.0),
            before,
        )?;
        p.grouping().check()?;
        Ok(before.clone())
    }

    fn apply(&self, model: Model, p: &ExpertChoiceParams, env: &dyn MethodEnv) -> Result<Model> {
        let capacity = p.capacity(&model)?;
        p.grouping().apply(model, env, |mode| {
            crate::routing::ExpertChoice::new(capacity, mode)
        })
    }

    fn selectors(&self, model: &Model, p: &ExpertChoiceParams) -> Option<Result<LayerSelectors>> {
        Some((|| {
            let capacity = p.capacity(model)?;
            p.grouping().selectors(model, |mode| {
                crate::routing::ExpertChoice::new(capacity, mode)
            })
        })())
    }

    fn saved_router(
        &self,
        model: &Model,
        checked: &serde_json::Map<String, serde_json::Value>,
    ) -> Option<SavedRouterParts> {
        saved_grouped_router(model, checked)
    }
}

/// USMoE (docs/methods.md §4.3).
pub struct Usmoe;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsmoeParams {
    k: Option<f64>,
    r: f64,
    renormalize: bool,
    mode: String,
    threshold: Option<serde_json::Value>,
}

impl UsmoeParams {
    fn grouping(&self) -> Grouping<'_> {
        Grouping {
            method: "usmoe",
            mode: &self.mode,
            threshold: self.threshold.as_ref(),
        }
    }

    /// The selector with group mode `mode`, after checking k against the model.
    fn selector_for(&self, model: &Model) -> Result<impl Fn(GroupMode) -> crate::routing::Usmoe> {
        let moe = moe_config(model, "usmoe")?;
        let k = self.k.unwrap_or(moe.top_k as f64);
        if k > moe.num_experts as f64 {
            return Err(MethodError::param(
                "usmoe",
                "k",
                format!("is {k}; the model has {} experts", moe.num_experts),
            ));
        }
        let (r, renormalize, norm) = (self.r, self.renormalize, moe.router_norm);
        Ok(move |mode| crate::routing::Usmoe::new(k, r, renormalize, norm, mode))
    }
}

impl TypedMethod for Usmoe {
    type Params = UsmoeParams;

    fn schema(&self) -> &'static MethodSchema {
        const SCHEMA: MethodSchema = MethodSchema {
            name: "usmoe",
            kind: MethodKind::RouterSwap,
            description: "USMoE: token choice and expert choice unified, a shared budget of k per token (§4.3)",
            calibrated: false,
            params: &[
                P::new("k", T::AT_LEAST_ONE, D::FromModel("top_k"), "mean experts per token (the budget)"),
                P::new("r", T::UNIT, D::Float(0.5), "mix of token-choice (1) and expert-choice (0) scores"),
                P::new("renormalize", T::Bool, D::Bool(false), "rescale each token's selected weights to sum 1"),
                MODE,
                THRESHOLD,
            ],
        };
        &SCHEMA
    }

    fn plan(&self, p: &UsmoeParams, before: &ModelFacts) -> Result<ModelFacts> {
        at_most_experts("usmoe", "k", p.k.unwrap_or(1.0), before)?;
        p.grouping().check()?;
        Ok(before.clone())
    }

    fn apply(&self, model: Model, p: &UsmoeParams, env: &dyn MethodEnv) -> Result<Model> {
        let selector_for = p.selector_for(&model)?;
        p.grouping().apply(model, env, selector_for)
    }

    fn selectors(&self, model: &Model, p: &UsmoeParams) -> Option<Result<LayerSelectors>> {
        Some((|| {
            let selector_for = p.selector_for(model)?;
            p.grouping().selectors(model, selector_for)
        })())
    }

    fn saved_router(
        &self,
        model: &Model,
        checked: &serde_json::Map<String, serde_json::Value>,
    ) -> Option<SavedRouterParts> {
        saved_grouped_router(model, checked)
    }
}

/// Random routing (DUME's §2.5 baseline): k uniformly random experts per token, weight 1/k.
pub struct RandomRouting;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RandomRoutingParams {
    k: Option<i64>,
    seed: Option<u64>,
}

impl TypedMethod for RandomRouting {
    type Params = RandomRoutingParams;

    fn schema(&self) -> &'static MethodSchema {
        const SCHEMA: MethodSchema = MethodSchema {
            name: "random_routing",
            kind: MethodKind::RouterSwap,
            description:
                "random routing baseline: k experts drawn uniformly per token, weight 1/k (seeded)",
            calibrated: false,
            params: &[
                P::new("k", T::int(1), D::FromModel("top_k"), "experts per token"),
                P::new(
                    "seed",
                    T::int(0),
                    D::Unset,
                    "seed of the draws (default: the suite's seed); layer l uses seed + l",
                ),
            ],
        };
        &SCHEMA
    }

    fn plan(&self, p: &RandomRoutingParams, before: &ModelFacts) -> Result<ModelFacts> {
        at_most_experts("random_routing", "k", p.k.unwrap_or(1) as f64, before)?;
        Ok(before.clone())
    }

    fn apply(
        &self,
        mut model: Model,
        p: &RandomRoutingParams,
        env: &dyn MethodEnv,
    ) -> Result<Model> {
        let seeded = RandomRoutingParams {
            k: p.k,
            seed: Some(p.seed.unwrap_or(env.seed())),
        };
        let built = TypedMethod::selectors(self, &model, &seeded).expect("a router swap")?;
        install(&mut model, built)?;
        Ok(model)
    }

    fn selectors(&self, model: &Model, p: &RandomRoutingParams) -> Option<Result<LayerSelectors>> {
        Some((|| {
            let moe = moe_config(model, "random_routing")?;
            let k = p.k.unwrap_or(moe.top_k as i64);
            if k as usize > moe.num_experts {
                return Err(MethodError::param(
                    "random_routing",
                    "k",
                    format!("is {k}; the model has {} experts", moe.num_experts),
                ));
            }
            let seed = p.seed.unwrap_or(0);
            let selectors = (0..moe_layers(model, "random_routing")?.len())
                .map(|l| {
                    Arc::new(RandomRouter::new(k, seed.wrapping_add(l as u64))) as Arc<dyn Selector>
                })
                .collect();
            Ok(LayerSelectors {
                selectors,
                controllers: Vec::new(),
            })
        })())
    }
}

/// Oracle routing (DUME's §2.5 upper bound): every token of every MoE layer goes to one expert,
/// the one of the domain being evaluated — after DUME, expert d is domain d's dense model, so a
/// row with `expert: d` is the oracle on domain d's tasks (its other tasks are not an oracle).
pub struct OracleRouting;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OracleRoutingParams {
    expert: i64,
}

impl TypedMethod for OracleRouting {
    type Params = OracleRoutingParams;

    fn schema(&self) -> &'static MethodSchema {
        const SCHEMA: MethodSchema = MethodSchema {
            name: "oracle_routing",
            kind: MethodKind::RouterSwap,
            description: "oracle routing baseline: every token to one expert, the evaluated domain's (DUME §2.5)",
            calibrated: false,
            params: &[P::new(
                "expert",
                T::int(0),
                D::Required,
                "the expert every token goes to (after DUME: the domain's index, the suite's model being 0)",
            )],
        };
        &SCHEMA
    }

    fn plan(&self, p: &OracleRoutingParams, before: &ModelFacts) -> Result<ModelFacts> {
        // Experts are numbered from 0: `expert` must be below the count.
        at_most_experts("oracle_routing", "expert", (p.expert + 1) as f64, before)?;
        Ok(before.clone())
    }

    fn apply(&self, model: Model, p: &OracleRoutingParams, _env: &dyn MethodEnv) -> Result<Model> {
        swap(self, model, p)
    }

    fn selectors(&self, model: &Model, p: &OracleRoutingParams) -> Option<Result<LayerSelectors>> {
        Some(shared(
            model,
            "oracle_routing",
            Arc::new(OracleRouter { domain: p.expert }),
        ))
    }
}

/// DTop-p (docs/methods.md §5.3); training-free here: the "calibrated" variant of §5.6.
pub struct DTopP;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DTopPParams {
    target: Option<f64>,
    p0: f64,
    kp: f64,
    ki: f64,
    per_layer: bool,
    steps: u64,
    fixed_scale: Option<serde_json::Value>,
    standardize: bool,
    renormalize: bool,
}

impl DTopPParams {
    /// `fixed_scale`: one number for every MoE layer, or one per layer.
    fn scales(&self, layers: usize) -> Result<Option<Vec<f64>>> {
        per_layer_values("dtop_p", "fixed_scale", self.fixed_scale.as_ref(), layers)
    }
}

/// Controller steps of the training-free DTop-p when the suite does not say.
const DTOP_P_DEFAULT_STEPS: i64 = 50;

impl TypedMethod for DTopP {
    type Params = DTopPParams;

    fn schema(&self) -> &'static MethodSchema {
        // The controller's gains are §5.4's inferred defaults (`PiController::new`).
        const SCHEMA: MethodSchema = MethodSchema {
            name: "dtop_p",
            kind: MethodKind::RouterSwap,
            description: "DTop-p: Top-p with a PI controller driving the mean active experts to a target; calibrated without training (§5.6)",
            calibrated: true,
            params: &[
                P::new("target", T::AT_LEAST_ONE, D::FromModel("top_k"), "target mean active experts per token T (§5.3)"),
                P::new("p0", T::PROBABILITY, D::Float(0.5), "initial threshold p (§5.4)"),
                P::new("kp", T::NON_NEGATIVE, D::Float(0.5), "proportional gain (§5.4)"),
                P::new("ki", T::NON_NEGATIVE, D::Float(0.3), "integral gain (§5.4)"),
                P::new("per_layer", T::Bool, D::Bool(false), "one controller per layer instead of one global (§5.3 step 4)"),
                P::new("steps", T::int(0), D::Int(DTOP_P_DEFAULT_STEPS), "controller steps on calibration batches before p is frozen"),
                P::new("standardize", T::Bool, D::Bool(true), "standardize each token's logits before the scaled softmax (§5.3 step 1; ablation off)"),
                P::new("renormalize", T::Bool, D::Bool(true), "renormalize the selected experts' weights to sum 1 (§5.3 step 2; ablation off)"),
                P::new("fixed_scale", T::FloatOrList { min: Some(moebench_core::params::Bound::Exclusive(0.0)), max: None }, D::Unset, "logit scale s_ℓ (one, or one per MoE layer); default: each layer's measured logit std"),
            ],
        };
        &SCHEMA
    }

    fn plan(&self, p: &DTopPParams, before: &ModelFacts) -> Result<ModelFacts> {
        let moe = before.require_moe("dtop_p")?;
        at_most_experts("dtop_p", "target", p.target.unwrap_or(1.0), before)?;
        p.scales(moe.moe_layers)?;
        Ok(before.clone())
    }

    /// s_ℓ fixed to the mean std of the layer's raw logits over the calibration text (so the
    /// standardised logits keep their scale), then the PI controller stepped once per
    /// calibration batch (cycling) for `steps` steps, and p frozen.
    fn apply(&self, mut model: Model, p: &DTopPParams, env: &dyn MethodEnv) -> Result<Model> {
        let calibration = env.calibration();
        let mut params = DTopPParams {
            fixed_scale: p.fixed_scale.clone(),
            target: p.target,
            ..*p
        };
        if params.fixed_scale.is_none() {
            let mut scale = LogitScale::default();
            observe(&model, calibration, &mut scale, "dtop_p")?;
            let scales: Vec<f64> = scale
                .sums
                .values()
                .map(|(sum, n)| sum / *n as f64)
                .collect();
            params.fixed_scale = Some(serde_json::json!(scales));
        }
        let built = TypedMethod::selectors(self, &model, &params).expect("a router swap")?;
        let controllers = built.controllers.clone();
        install(&mut model, built)?;
        for batch in calibration.iter().cycle().take(p.steps as usize) {
            observe(
                &model,
                std::slice::from_ref(batch),
                &mut NoObserver,
                "dtop_p",
            )?;
            for c in &controllers {
                c.lock().expect("controller lock").step();
            }
        }
        for c in &controllers {
            c.lock().expect("controller lock").frozen = true;
        }
        Ok(model)
    }

    /// The calibrated (or trained) state: each layer's scale s_ℓ as `fixed_scale`, and the
    /// frozen threshold of each controller (one, or one per layer with `per_layer`).
    fn saved_router(
        &self,
        model: &Model,
        checked: &serde_json::Map<String, serde_json::Value>,
    ) -> Option<SavedRouterParts> {
        let states: Vec<_> = model
            .layers
            .iter()
            .filter_map(|b| match &b.ffn {
                moebench_model::Ffn::Moe(m) => m.selector.calibrated_state(),
                moebench_model::Ffn::Dense(_) => None,
            })
            .collect();
        let mut params = checked.clone();
        params.insert(
            "fixed_scale".into(),
            serde_json::json!(states.iter().map(|s| s.scale).collect::<Vec<_>>()),
        );
        let per_layer = params.get("per_layer").and_then(serde_json::Value::as_bool) == Some(true);
        let frozen_p = match per_layer {
            true => states.iter().map(|s| s.threshold).collect(),
            false => states.first().map(|s| s.threshold).into_iter().collect(),
        };
        Some(SavedRouterParts { params, frozen_p })
    }

    fn selectors(&self, model: &Model, p: &DTopPParams) -> Option<Result<LayerSelectors>> {
        Some((|| {
            let moe = moe_config(model, "dtop_p")?;
            let layers = moe_layers(model, "dtop_p")?.len();
            let target = p.target.unwrap_or(moe.top_k as f64);
            if target > moe.num_experts as f64 {
                return Err(MethodError::param(
                    "dtop_p",
                    "target",
                    format!("is {target}; the model has {} experts", moe.num_experts),
                ));
            }
            let cfg = DTopPConfig {
                num_experts: moe.num_experts as i64,
                target,
                p0: p.p0,
                kp: p.kp,
                ki: p.ki,
                per_layer: p.per_layer,
                fixed_scales: p.scales(layers)?,
                standardize: p.standardize,
                renormalize: p.renormalize,
            };
            let (selectors, controllers) = crate::routing::DTopP::for_model(layers, &cfg)?;
            Ok(LayerSelectors {
                selectors: selectors
                    .into_iter()
                    .map(|s| s as Arc<dyn Selector>)
                    .collect(),
                controllers,
            })
        })())
    }
}

/// Mean per-token std of each MoE layer's raw router logits over the calibration text.
#[derive(Default)]
struct LogitScale {
    sums: std::collections::BTreeMap<usize, (f64, usize)>,
}

impl ForwardObserver for LogitScale {
    fn on_moe(&mut self, layer: usize, _moe: &MoeLayer, event: &MoeEvent<'_>) {
        let entry = self.sums.entry(layer).or_default();
        entry.0 += measure_logit_std(event.router_logits, event.token_mask);
        entry.1 += 1;
    }
}

/// Counts nothing: the DTop-p selectors record into their controllers themselves.
struct NoObserver;

impl ForwardObserver for NoObserver {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::PiController;

    #[test]
    fn dtop_p_schema_defaults_are_the_controllers() {
        let c = PiController::new(2.0, 8);
        let schema = TypedMethod::schema(&DTopP);
        let default = |name: &str| match schema
            .params
            .iter()
            .find(|p| p.name == name)
            .unwrap()
            .default
        {
            D::Float(f) => f,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            (default("p0"), default("kp"), default("ki")),
            (c.p0, c.kp, c.ki)
        );
    }
}
