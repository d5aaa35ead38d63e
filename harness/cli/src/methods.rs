//! Suite methods → `moebench-methods`: each method configuration is applied once to a loaded
//! model, in place, before its jobs run (docs/methods.md says what each one does).
use crate::calibration::{calibration_data, CalibrationData};
use anyhow::{bail, Context, Result};
use moebench_hub::HubConfig;
use moebench_methods::calibration::{calibrate, observe};
use moebench_methods::dense2moe::{dense2moe, layer_prune_by_similarity, Dense2MoeConfig};
use moebench_methods::dume::{average_merge, btx, dume, BtxConfig, DumeConfig};
use moebench_methods::merge::{hc_smoe, m_smoe, ream, HcSmoeConfig, MSmoeConfig, ReamConfig};
use moebench_methods::prune::{prune_model, Criterion, Keep};
use moebench_methods::routing::{build_layer_selectors, measure_logit_std, LayerSelectors};
use moebench_methods::train::{train, TrainConfig};
use moebench_methods::upcycle::{upcycle, UpcycleConfig};
use moebench_model::moe::MoeLayer;
use moebench_model::observer::{ForwardObserver, MoeEvent};
use moebench_model::{resolve_checkpoint, Checkpoint, Ffn, Model, Tokenizer};
use moebench_suite::suite::Calibration;
use moebench_suite::MethodConfig;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::Path;

/// A checkpoint trained here with a router other than its config's top-k records that router in
/// this file, so that loading it (the `dense` method: the model as it is) routes as trained.
pub const ROUTER_FILE: &str = "moebench_router.json";

/// The contents of [`ROUTER_FILE`].
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SavedRouter {
    /// A selector name of `routing::build_layer_selectors`.
    pub name: String,
    pub params: Map<String, Value>,
    /// DTop-p: the frozen threshold of each controller (one, or one per layer).
    #[serde(default)]
    pub frozen_p: Vec<f64>,
}

/// Installs the router saved with a checkpoint, if any; returns its description.
pub fn restore_router(model: &mut Model, dir: &std::path::Path) -> Result<Option<String>> {
    let path = dir.join(ROUTER_FILE);
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(None);
    };
    let saved: SavedRouter =
        serde_json::from_str(&text).with_context(|| format!("reading {}", path.display()))?;
    let built = build(model, &saved.name, &saved.params)
        .with_context(|| format!("building the router saved in {}", path.display()))?;
    if built.controllers.len() != saved.frozen_p.len() {
        bail!(
            "{}: {} frozen thresholds for {} controllers",
            path.display(),
            saved.frozen_p.len(),
            built.controllers.len()
        );
    }
    for (c, p) in built.controllers.iter().zip(&saved.frozen_p) {
        let mut c = c.lock().expect("controller lock");
        c.p = *p;
        c.frozen = true;
    }
    let description = built.selectors.first().map(|s| s.describe());
    install(model, built)?;
    Ok(description)
}

/// Controller steps of the training-free ("calibrated") DTop-p when the suite does not say.
const DTOP_P_DEFAULT_STEPS: u64 = 50;

/// What methods may read besides the model: the calibration batches, the suite's seed and
/// calibration settings, and (for methods that load more models or texts, e.g. DUME) the
/// suite's directory, the Hub and the model's tokenizer.
pub struct MethodContext<'a> {
    pub calibration: &'a CalibrationData,
    pub calibration_spec: &'a Calibration,
    pub seed: u64,
    pub suite_dir: &'a Path,
    pub hub: &'a HubConfig,
    pub tokenizer: Option<&'a Tokenizer>,
    /// A suite model's checkpoint by label (built first if the suite builds it), so that
    /// `experts` may name models of the suite; `None` for a name that is not a label.
    pub suite_model: &'a dyn Fn(&str) -> Option<Result<Checkpoint>>,
}

/// Applies `method` to `model`, then each method of its chain (`then`), in order. Methods that
/// build a new model from several (DUME) replace it, so the model is taken and returned.
pub fn apply_method(model: Model, method: &MethodConfig, ctx: &MethodContext) -> Result<Model> {
    let mut model = apply_one(model, &method.name, &method.params, ctx)?;
    for step in &method.then {
        model = apply_one(model, &step.name, &step.params, ctx)
            .with_context(|| format!("then {}", step.name))?;
    }
    Ok(model)
}

fn apply_one(
    mut owned: Model,
    name: &str,
    params: &BTreeMap<String, Value>,
    ctx: &MethodContext,
) -> Result<Model> {
    let (calibration, seed) = (ctx.calibration, ctx.seed);
    match name {
        "dume" => return dume_method(owned, params, ctx),
        "btx" => return btx_method(owned, params, ctx),
        "train" => {
            train_method(&owned, params, ctx)?;
            return Ok(owned);
        }
        "weight_average" => {
            return Ok(average_merge(with_experts(owned, name, params, ctx)?)?);
        }
        _ => {}
    }
    let model = &mut owned;
    let params: Map<String, Value> = params.clone().into_iter().collect();
    match name {
        "dense" => {}
        "upcycle" => upcycle(model, &UpcycleConfig::from_params(&params, seed)?)?,
        "topk" | "topp" | "expert_choice" | "usmoe" => {
            install(model, build(model, name, &params)?)?;
        }
        "dtop_p" => calibrated_dtop_p(model, params, calibration)?,
        "freq_prune" | "ean_prune" | "reap" => {
            let criterion = match name {
                "freq_prune" => Criterion::Frequency,
                "ean_prune" => Criterion::Ean,
                _ => Criterion::Reap,
            };
            let keep = keep_ratio(name, &params)?;
            let stats = calibrate(model, &calibration.batches)?;
            prune_model(model, &stats, criterion, keep)?;
        }
        "ream" => {
            let mut cfg = ReamConfig::default();
            cfg.merge.keep = keep_ratio("ream", &params)?;
            let experts = moe_layers(model, "ream")?[0].num_experts() as usize;
            cfg.group_size = cfg.group_size.min(experts);
            for (key, value) in &params {
                let bad = |msg: &str| anyhow::anyhow!("ream: parameter `{key}` is {value}; {msg}");
                match key.as_str() {
                    "group_size" => {
                        cfg.group_size = value
                            .as_u64()
                            .ok_or_else(|| bad("it must be a non-negative integer"))?
                            as usize
                    }
                    "sequential" => {
                        cfg.sequential =
                            value.as_bool().ok_or_else(|| bad("it must be a boolean"))?
                    }
                    "merging" => {
                        cfg.prune_only = match value.as_str() {
                            Some("none") => true,
                            Some("logits+weights") => false,
                            _ => return Err(bad("it must be `logits+weights` or `none`")),
                        }
                    }
                    _ => {}
                }
            }
            ream(model, &calibration.batches, &cfg)?;
        }
        "dense2moe" | "layer_prune" => {
            let mut cfg = Dense2MoeConfig::default();
            cfg.lf_uc.seed = seed as i64;
            for (key, value) in &params {
                let count = || {
                    value.as_u64().map(|v| v as usize).with_context(|| {
                        format!("{name}: parameter `{key}` must be a positive integer, got {value}")
                    })
                };
                match key.as_str() {
                    "span_len" => cfg.span_len = count()?,
                    "num_experts" => cfg.lf_uc.num_experts = Some(count()?),
                    "top_k" => cfg.lf_uc.top_k = Some(count()?),
                    "keep_own_mlp" => {
                        cfg.lf_uc.keep_own_mlp_as_shared = value.as_bool().with_context(|| {
                            format!(
                                "{name}: parameter `keep_own_mlp` must be a boolean, got {value}"
                            )
                        })?
                    }
                    _ => {}
                }
            }
            if name == "dense2moe" {
                dense2moe(model, &calibration.batches, &cfg)?;
            } else {
                layer_prune_by_similarity(
                    model,
                    &calibration.batches,
                    cfg.span_len,
                    cfg.decode_context,
                )?;
            }
        }
        "m_smoe" => {
            let mut cfg = MSmoeConfig::default();
            cfg.merge.keep = keep_ratio("m_smoe", &params)?;
            m_smoe(model, &calibration.batches, &cfg)?;
        }
        "hc_smoe" => {
            let mut cfg = HcSmoeConfig::default();
            cfg.merge.keep = keep_ratio("hc_smoe", &params)?;
            hc_smoe(model, &calibration.batches, &cfg)?;
        }
        other => bail!("method `{other}` is accepted by suites but not implemented by the runner"),
    }
    Ok(owned)
}

/// Continued training inside a suite chain (e.g. `upcycle → train`, `dense2moe → train`):
/// `moebench train`'s loop with the model's installed routers, on `text` (a file relative to
/// the suite; default the Shakespeare plays of `make deps`). Parameters: `steps` (200),
/// `lr` (1e-4), `batch_size` (8), `seq_len` (128), `warmup` (20), `load_balance` (0.01),
/// `z_loss` (0), `entropy` (0), `text`. DTop-p controllers are not stepped here (train DTop-p
/// models with `moebench train`).
fn train_method(
    model: &Model,
    params: &BTreeMap<String, Value>,
    ctx: &MethodContext,
) -> Result<()> {
    let tokenizer = ctx
        .tokenizer
        .context("train: the model has no tokenizer.json to encode the training text")?;
    let mut cfg = TrainConfig {
        steps: 200,
        lr: 1e-4,
        batch_size: 8,
        warmup_steps: 20,
        seed: ctx.seed,
        ..TrainConfig::default()
    };
    let mut texts = None;
    for (key, value) in params {
        let number = || {
            value
                .as_f64()
                .with_context(|| format!("train: parameter `{key}` must be a number, got {value}"))
        };
        match key.as_str() {
            "steps" => cfg.steps = number()? as usize,
            "lr" => cfg.lr = number()?,
            "batch_size" => cfg.batch_size = number()? as usize,
            "seq_len" => cfg.seq_len = number()? as usize,
            "warmup" => cfg.warmup_steps = number()? as usize,
            "load_balance" => cfg.load_balance_coef = number()?,
            "z_loss" => cfg.z_loss_coef = number()?,
            "entropy" => cfg.entropy_coef = number()?,
            "text" => {
                let path = value.as_str().with_context(|| {
                    format!("train: parameter `text` must be a path, got {value}")
                })?;
                texts = Some(vec![ctx.suite_dir.join(path)]);
            }
            _ => {}
        }
    }
    let texts = match texts {
        Some(t) => t,
        None => crate::train::default_texts()?,
    };
    let mut tokens = Vec::new();
    for path in &texts {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("train: reading {}", path.display()))?;
        tokens.extend(tokenizer.encode(&text, false)?);
    }
    train(model, &tokens, &cfg, &mut |_| {})?;
    Ok(())
}

/// BTX (§7.2), DUME's trained-router baseline: MoErge of the suite's model and `experts`, a
/// random router, then training on the concatenated `domains` texts (one per expert, suite
/// model's first). `steps` (1000), `lr` (1e-4), `batch_size` (8), `seq_len` (128), `top_k` (1).
/// Trains every weight (the training loop has no parameter filter; DUME's code trains the
/// router and gate_proj only).
fn btx_method(base: Model, params: &BTreeMap<String, Value>, ctx: &MethodContext) -> Result<Model> {
    let tokenizer = ctx
        .tokenizer
        .context("btx: the model has no tokenizer.json to encode the domain texts")?;
    let dense = with_experts(base, "btx", params, ctx)?;
    let domains = strings("btx", params, "domains")?;
    if domains.len() != dense.len() {
        bail!(
            "btx: `domains` has {} texts for {} experts (the suite's model and `experts`)",
            domains.len(),
            dense.len()
        );
    }
    let mut cfg = BtxConfig {
        seed: ctx.seed as i64,
        ..BtxConfig::default()
    };
    cfg.train.batch_size = 8;
    cfg.train.seed = ctx.seed;
    let mut top_k = 1;
    for (key, value) in params {
        let number = || {
            value
                .as_f64()
                .with_context(|| format!("btx: parameter `{key}` must be a number, got {value}"))
        };
        match key.as_str() {
            "steps" => cfg.train.steps = number()? as usize,
            "lr" => cfg.train.lr = number()?,
            "batch_size" => cfg.train.batch_size = number()? as usize,
            "seq_len" => cfg.train.seq_len = number()? as usize,
            "top_k" => top_k = number()? as i64,
            _ => {}
        }
    }
    let tokens = domains
        .iter()
        .map(|text| {
            let path = ctx.suite_dir.join(text);
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("btx: reading {}", path.display()))?;
            Ok(tokenizer.encode(&text, false)?)
        })
        .collect::<Result<Vec<_>>>()?;
    let mut model = btx(dense, &tokens, &cfg, &mut |_| {})?;
    let norm = model.config.moe.as_ref().map(|m| m.router_norm);
    for block in &mut model.layers {
        if let (Ffn::Moe(moe), Some(norm)) = (&mut block.ffn, norm) {
            moe.selector = std::sync::Arc::new(moebench_model::moe::TopK { k: top_k, norm });
        }
    }
    Ok(model)
}

/// A list-of-strings parameter.
fn strings(method: &str, params: &BTreeMap<String, Value>, key: &str) -> Result<Vec<String>> {
    params
        .get(key)
        .and_then(Value::as_array)
        .and_then(|a| a.iter().map(|v| v.as_str().map(str::to_owned)).collect())
        .with_context(|| format!("{method}: parameter `{key}` must be a list of strings"))
}

/// The suite's model followed by the dense models `experts` names (labels of the suite's
/// models, Hub ids, or directories relative to the suite), loaded like it.
fn with_experts(
    base: Model,
    method: &str,
    params: &BTreeMap<String, Value>,
    ctx: &MethodContext,
) -> Result<Vec<Model>> {
    let (device, kind) = (base.device, base.kind);
    let mut dense = vec![base];
    for reference in strings(method, params, "experts")? {
        if let Some(checkpoint) = (ctx.suite_model)(&reference) {
            let checkpoint = checkpoint.with_context(|| format!("{method}: expert {reference}"))?;
            dense.push(checkpoint.load(device, kind)?);
            continue;
        }
        let local = ctx.suite_dir.join(&reference);
        let reference = if local.is_dir() {
            local.display().to_string()
        } else {
            reference
        };
        let checkpoint = resolve_checkpoint(ctx.hub, &reference)
            .with_context(|| format!("{method}: expert {reference}"))?;
        dense.push(checkpoint.load(device, kind)?);
    }
    Ok(dense)
}

/// DUME (METHODS.md §2): the suite's model is domain expert 0; `experts` names the other dense
/// domain experts, `domains` one unlabeled text per expert (in order), from which
/// `calibration.sequences × length` windows each feed the ridge statistics. Optional `top_k`
/// (1), `temperature` (1.0), `lambda` (0.01).
fn dume_method(
    base: Model,
    params: &BTreeMap<String, Value>,
    ctx: &MethodContext,
) -> Result<Model> {
    let dense = with_experts(base, "dume", params, ctx)?;
    let domains = strings("dume", params, "domains")?;
    if domains.len() != dense.len() {
        bail!(
            "dume: `domains` has {} texts for {} experts (the suite's model and `experts`); give \
             one text per expert, the suite model's first",
            domains.len(),
            dense.len()
        );
    }
    let mut cfg = DumeConfig::default();
    for (key, value) in params {
        let number = || {
            value
                .as_f64()
                .with_context(|| format!("dume: parameter `{key}` must be a number, got {value}"))
        };
        match key.as_str() {
            "top_k" => cfg.top_k = number()? as i64,
            "temperature" => cfg.temperature = number()?,
            "lambda" => cfg.lambda = number()?,
            _ => {}
        }
    }
    let batches = domains
        .iter()
        .map(|text| {
            let spec = Calibration {
                source: Some(ctx.suite_dir.join(text)),
                ..ctx.calibration_spec.clone()
            };
            Ok(calibration_data(&spec, &dense[0], ctx.tokenizer)?.batches)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(dume(dense, &batches, &cfg)?.0)
}

/// `compression` (fraction of experts removed per layer, default 0.5 for pruning/merging
/// baselines as the papers' 50% setting; REAM's headline is 0.25) as the fraction kept.
fn keep_ratio(method: &str, params: &Map<String, Value>) -> Result<Keep> {
    let default = if method == "ream" { 0.25 } else { 0.5 };
    let compression = match params.get("compression") {
        None => default,
        Some(v) => v
            .as_f64()
            .filter(|c| (0.0..1.0).contains(c))
            .with_context(|| {
                format!(
                "{method}: parameter `compression` (fraction of experts removed) is {v}; it must \
                 be in [0, 1)"
            )
            })?,
    };
    Ok(Keep::Ratio(1.0 - compression))
}

fn moe_layers<'m>(model: &'m Model, method: &str) -> Result<Vec<&'m MoeLayer>> {
    let layers: Vec<&MoeLayer> = model
        .layers
        .iter()
        .filter_map(|b| match &b.ffn {
            Ffn::Moe(m) => Some(m),
            Ffn::Dense(_) => None,
        })
        .collect();
    if layers.is_empty() {
        bail!(
            "{method}: the model has no MoE layer (apply it to an MoE model, e.g. after `upcycle`)"
        );
    }
    Ok(layers)
}

pub fn build(model: &Model, name: &str, params: &Map<String, Value>) -> Result<LayerSelectors> {
    let layers = moe_layers(model, name)?;
    let moe = model
        .config
        .moe
        .as_ref()
        .expect("MoE layers have an MoE config");
    Ok(build_layer_selectors(
        name,
        params,
        layers.len(),
        layers[0].num_experts(),
        moe.top_k as i64,
        moe.router_norm,
    )?)
}

/// Puts one selector on each MoE layer, in layer order.
pub fn install(model: &mut Model, built: LayerSelectors) -> Result<()> {
    let mut selectors = built.selectors.into_iter();
    for block in &mut model.layers {
        if let Ffn::Moe(moe) = &mut block.ffn {
            moe.selector = selectors.next().context("one selector per MoE layer")?;
        }
    }
    Ok(())
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

/// DTop-p without training (METHODS.md §5.6, "DTop-p (calibrated, no training)"): s_ℓ fixed to
/// the mean std of the layer's raw logits, so the standardised logits keep their scale, and the
/// PI controller stepped once per calibration batch (cycling through them) for `steps` steps,
/// driving the mean active experts to `target`; then p is frozen.
fn calibrated_dtop_p(
    model: &mut Model,
    mut params: Map<String, Value>,
    calibration: &CalibrationData,
) -> Result<()> {
    params.remove("mix"); // consumed by the runner (calibration mix)
    let steps = match params.remove("steps") {
        None => DTOP_P_DEFAULT_STEPS,
        Some(v) => v.as_u64().with_context(|| {
            format!("dtop_p: parameter `steps` is {v}; it must be an integer ≥ 0")
        })?,
    };
    if !params.contains_key("fixed_scale") {
        let mut scale = LogitScale::default();
        observe(model, &calibration.batches, &mut scale, "dtop_p")?;
        let scales: Vec<Value> = scale
            .sums
            .values()
            .map(|(sum, n)| Value::from(sum / *n as f64))
            .collect();
        params.insert("fixed_scale".into(), Value::Array(scales));
    }
    let built = build(model, "dtop_p", &params)?;
    let controllers = built.controllers.clone();
    install(model, built)?;
    for batch in calibration.batches.iter().cycle().take(steps as usize) {
        observe(
            model,
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
    Ok(())
}

/// Counts nothing: the DTop-p selectors record into their controllers themselves.
struct NoObserver;

impl ForwardObserver for NoObserver {}
