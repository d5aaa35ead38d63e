//! What a method is, to the code that runs it: its schema and typed parameters, the checks it
//! makes against a model's facts before anything is loaded, `apply`, and for router swaps the
//! selectors it installs and what a saved router file records. The catalogue
//! ([`crate::catalogue`]) lists the methods; this module is below both the catalogue and the
//! method modules, which implement [`TypedMethod`].
use crate::error::{MethodError, Result};
use crate::prune::Keep;
use crate::routing::LayerSelectors;
use moebench_core::params::{MethodKind, MethodSchema, MIX_PARAM};
use moebench_model::moe::{MoeLayer, Selector};
use moebench_model::{Ffn, Model, ModelConfig, Tokenizer};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use std::sync::Arc;
use tch::{Device, Kind, Tensor};

/// One batch of calibration or evaluation tokens: `ids` and `attention_mask`, `[B, T]`.
pub type Batch = (Tensor, Tensor);

/// What a method needs besides the model, provided by whoever runs it (the suite runner,
/// `moebench apply`). Errors are the provider's, boxed.
pub trait MethodEnv {
    /// The calibration batches on the model's device (a method's `mix` already applied).
    fn calibration(&self) -> &[Batch];
    /// Calibration batches cut the same way from another text (`text` as a method parameter
    /// names it: relative to the suite), e.g. DUME's domain texts.
    fn calibration_of(&self, text: &str, model: &Model) -> EnvResult<Vec<Batch>>;
    /// The run's seed.
    fn seed(&self) -> u64;
    /// The model's tokenizer, when its checkpoint has one.
    fn tokenizer(&self) -> Option<&Tokenizer>;
    /// The tokens of a text file a method parameter names (relative to the suite), encoded with
    /// the model's tokenizer.
    fn text_tokens(&self, text: &str) -> EnvResult<Vec<i64>>;
    /// The tokens of the default training text (the Shakespeare plays of `make deps`).
    fn default_training_tokens(&self) -> EnvResult<Vec<i64>>;
    /// A model a method parameter names (a suite model label, a Hub id, or a directory relative
    /// to the suite), loaded on `device` in `kind`.
    fn load_model(&self, reference: &str, device: Device, kind: Kind) -> EnvResult<Model>;
}

pub type EnvResult<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// What the pre-run checks know of a model: its config, read without loading weights, and
/// carried through a chain by each method's [`Method::plan`].
#[derive(Debug, Clone, PartialEq)]
pub struct ModelFacts {
    pub num_layers: usize,
    pub hidden_size: usize,
    pub vocab_size: usize,
    pub max_positions: usize,
    pub moe: Option<MoeFacts>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MoeFacts {
    pub num_experts: usize,
    pub top_k: usize,
    pub moe_layers: usize,
}

impl ModelFacts {
    pub fn of(config: &ModelConfig) -> Self {
        Self {
            num_layers: config.num_layers,
            hidden_size: config.hidden_size,
            vocab_size: config.vocab_size,
            max_positions: config.max_position_embeddings,
            moe: config.moe.as_ref().map(|m| MoeFacts {
                num_experts: m.num_experts,
                top_k: m.top_k,
                moe_layers: m.sparse_layers.iter().filter(|s| **s).count(),
            }),
        }
    }

    /// The MoE facts, or the error a method that needs an MoE model gives on a dense one.
    pub fn require_moe(&self, method: &str) -> Result<&MoeFacts> {
        self.moe.as_ref().ok_or_else(|| {
            MethodError::unsupported(
                method,
                "the model has no MoE layer (apply it to an MoE model, e.g. after `upcycle`)",
            )
        })
    }
}

/// Parameters checked against a method's schema, defaults filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    method: &'static str,
    values: Map<String, Value>,
}

impl Params {
    /// Checks `given` against `method`'s schema: every problem at once, in one error.
    pub fn check(method: &dyn Method, given: &Map<String, Value>) -> Result<Params> {
        let schema = method.schema();
        let values = schema.check(given).map_err(MethodError::Params)?;
        Ok(Params {
            method: schema.name,
            values,
        })
    }

    /// The checked values, defaults included (what hashes and saved router files record).
    pub fn values(&self) -> &Map<String, Value> {
        &self.values
    }

    /// A calibrated method's `mix` (consumed by the runner, not the method).
    pub fn mix(&self) -> Option<Vec<f64>> {
        self.values
            .get(MIX_PARAM)
            .and_then(|v| serde_json::from_value(v.clone()).ok())
    }

    /// The method's own typed parameters (`mix` left out). The schema has checked types and
    /// ranges, so a failure here is a schema/struct mismatch in the method's module (a test
    /// over the catalogue catches it).
    pub fn typed<T: DeserializeOwned>(&self) -> Result<T> {
        let mut values = self.values.clone();
        values.remove(MIX_PARAM);
        serde_json::from_value(Value::Object(values)).map_err(|e| {
            MethodError::unsupported(
                self.method,
                format!("its parameters do not match its declared schema: {e}"),
            )
        })
    }
}

/// A method as its module writes it: its schema and its own parameter struct, which the
/// schema's checked, default-filled values deserialize into (`deny_unknown_fields`).
pub trait TypedMethod: Sync {
    type Params: DeserializeOwned;

    fn schema(&self) -> &'static MethodSchema;

    /// Checks the parameters against the model as it is before the method (no weights loaded)
    /// and returns what the model is after it. Default: nothing to check, the model unchanged.
    fn plan(&self, _params: &Self::Params, before: &ModelFacts) -> Result<ModelFacts> {
        Ok(before.clone())
    }

    /// Applies the method. Methods that build a new model from several replace it, so the
    /// model is taken and returned.
    fn apply(&self, model: Model, params: &Self::Params, env: &dyn MethodEnv) -> Result<Model>;

    /// Router swaps: the selectors they put on the MoE layers (also used to train with a router
    /// and to restore a saved router). `None` for methods that are not router swaps.
    fn selectors(&self, _model: &Model, _params: &Self::Params) -> Option<Result<LayerSelectors>> {
        None
    }

    /// Router swaps: what a saved router file records so that loading rebuilds the router as it
    /// is on `model` now (after calibration or training). Default: the checked parameters.
    fn saved_router(
        &self,
        _model: &Model,
        checked: &Map<String, Value>,
    ) -> Option<SavedRouterParts> {
        (self.schema().kind == MethodKind::RouterSwap).then(|| SavedRouterParts {
            params: checked.clone(),
            frozen_p: Vec::new(),
        })
    }
}

/// What a router file holds besides the method's name.
#[derive(Debug, Clone, PartialEq)]
pub struct SavedRouterParts {
    pub params: Map<String, Value>,
    /// One threshold per controller of a calibrated or trained selector (DTop-p).
    pub frozen_p: Vec<f64>,
}

/// A method of the catalogue, as callers use it (implemented for every [`TypedMethod`]).
pub trait Method: Sync {
    fn schema(&self) -> &'static MethodSchema;

    fn name(&self) -> &'static str {
        self.schema().name
    }

    /// [`TypedMethod::plan`] with checked parameters.
    fn plan(&self, params: &Params, before: &ModelFacts) -> Result<ModelFacts>;

    /// [`TypedMethod::apply`] with checked parameters.
    fn apply(&self, model: Model, params: &Params, env: &dyn MethodEnv) -> Result<Model>;

    /// [`TypedMethod::selectors`] with checked parameters.
    fn selectors(&self, model: &Model, params: &Params) -> Option<Result<LayerSelectors>>;

    /// [`TypedMethod::saved_router`] (`mix` left out).
    fn saved_router(&self, model: &Model, params: &Params) -> Option<SavedRouterParts>;

    /// Whether checked parameters deserialize into the method's struct (a catalogue test).
    fn check_typed(&self, params: &Params) -> Result<()>;
}

impl<M: TypedMethod> Method for M {
    fn schema(&self) -> &'static MethodSchema {
        TypedMethod::schema(self)
    }

    fn plan(&self, params: &Params, before: &ModelFacts) -> Result<ModelFacts> {
        TypedMethod::plan(self, &params.typed()?, before)
    }

    fn apply(&self, model: Model, params: &Params, env: &dyn MethodEnv) -> Result<Model> {
        TypedMethod::apply(self, model, &params.typed()?, env)
    }

    fn selectors(&self, model: &Model, params: &Params) -> Option<Result<LayerSelectors>> {
        match params.typed() {
            Ok(p) => TypedMethod::selectors(self, model, &p),
            Err(e) => Some(Err(e)),
        }
    }

    fn saved_router(&self, model: &Model, params: &Params) -> Option<SavedRouterParts> {
        let mut values = params.values().clone();
        values.remove(MIX_PARAM);
        TypedMethod::saved_router(self, model, &values)
    }

    fn check_typed(&self, params: &Params) -> Result<()> {
        params.typed::<M::Params>().map(drop)
    }
}

/// The MoE layers of `model`, in layer order, or the "needs an MoE model" error.
pub fn moe_layers<'m>(model: &'m Model, method: &str) -> Result<Vec<&'m MoeLayer>> {
    let layers: Vec<&MoeLayer> = model
        .layers
        .iter()
        .filter_map(|b| match &b.ffn {
            Ffn::Moe(m) => Some(m),
            Ffn::Dense(_) => None,
        })
        .collect();
    if layers.is_empty() {
        return Err(MethodError::unsupported(
            method,
            "the model has no MoE layer (apply it to an MoE model, e.g. after `upcycle`)",
        ));
    }
    Ok(layers)
}

/// Puts one selector on each MoE layer, in layer order.
pub fn install(model: &mut Model, built: LayerSelectors) -> Result<()> {
    let mut selectors = built.selectors.into_iter();
    for block in &mut model.layers {
        if let Ffn::Moe(moe) = &mut block.ffn {
            moe.selector = selectors.next().ok_or_else(|| {
                MethodError::unsupported("router", "fewer selectors than MoE layers")
            })?;
        }
    }
    Ok(())
}

/// Wraps a provider error with what the method was doing.
pub fn env_error(
    method: &str,
    what: impl Into<String>,
) -> impl FnOnce(Box<dyn std::error::Error + Send + Sync>) -> MethodError {
    let (method, what) = (method.to_owned(), what.into());
    move |source| MethodError::Environment {
        method,
        what,
        source,
    }
}

/// The same selector on every MoE layer.
pub fn shared(model: &Model, method: &str, selector: Arc<dyn Selector>) -> Result<LayerSelectors> {
    Ok(LayerSelectors {
        selectors: vec![selector; moe_layers(model, method)?.len()],
        controllers: Vec::new(),
    })
}

/// The model's MoE config (top-k, normalisation), or the "needs an MoE model" error.
pub fn moe_config<'m>(
    model: &'m Model,
    method: &str,
) -> Result<&'m moebench_model::config::MoeConfig> {
    moe_layers(model, method)?;
    model
        .config
        .moe
        .as_ref()
        .ok_or_else(|| MethodError::unsupported(method, "the model's config has no MoE section"))
}

/// `value ≤ experts`, or an error naming the parameter.
pub fn at_most_experts(method: &str, param: &str, value: f64, facts: &ModelFacts) -> Result<()> {
    let n = facts.require_moe(method)?.num_experts;
    if value > n as f64 {
        return Err(MethodError::param(
            method,
            param,
            format!("is {value}; the model has {n} experts per layer"),
        ));
    }
    Ok(())
}

/// Installs the selectors a router swap builds: the `apply` of every stateless swap.
pub fn swap<M: TypedMethod>(method: &M, mut model: Model, params: &M::Params) -> Result<Model> {
    let built = method
        .selectors(&model, params)
        .expect("router swaps build selectors")?;
    install(&mut model, built)?;
    Ok(model)
}

/// Checks that removing `compression` of each layer's experts leaves at least top-k, and
/// returns the facts with the new expert count.
pub fn pruned(method: &str, compression: f64, before: &ModelFacts) -> Result<ModelFacts> {
    let moe = before.require_moe(method)?;
    let count = Keep::Ratio(1.0 - compression)
        .count(moe.num_experts, moe.top_k)
        .map_err(|e| crate::error::MethodError::param(method, "compression", e.to_string()))?;
    let mut after = before.clone();
    if let Some(m) = after.moe.as_mut() {
        m.num_experts = count;
    }
    Ok(after)
}
