//! DUME, Dynamic Upcycling MoE (Fanì & Ersoy, arXiv 2603.29765; docs/methods.md §2), and the
//! baselines it is compared with (§2.5, §7.2): D dense fine-tunes of one base become one MoE
//! without training. The non-MLP weights are averaged, the D MLPs become the experts of every
//! layer ("MoErging"), and each layer's router is a closed-form ridge regression of the MoE input
//! onto the one-hot domain, fitted on hidden states collected with forced ("oracle") routing.
//!
//! The statistics are sums (`A = Σ h̃h̃ᵀ`, `B = Σ h̃yᵀ`), so they are collected batch by batch and
//! domain by domain, and a new expert needs only its own domain's data ([`add_expert`]).
//!
//! Choices where the paper and code are silent or where the harness differs, all documented at
//! the item: statistics in f64 with padding masked by default (§2.7 items 2 and 6); the
//! temperature is folded into the router weights so that the routing is the stock
//! [`TopK`] with renormalised weights (= softmax over the selected logits, §2.3 step 5); a new
//! expert keeps the old non-MLP average (§2.3 step 6 leaves it open).
//!
//! Training-based variants (§2.3 step 7, §7.2) train only what [`TrainConfig::trainable`] names.
//! DUME's code unfreezes every parameter whose name contains "gate" — the routers *and* every
//! expert's `gate_proj` (§2.7 item 1); that is the default here ([`Trainable::routers_and_expert_gates`]),
//! and [`Trainable::routers`] is the clean router-only ablation. With top-1 routing the router
//! gets no gradient from the LM loss (its combine weight is the constant 1, as a softmax over one
//! selected logit is in the code), so a router-only run at k = 1 moves the router only through
//! the load-balancing term.
use crate::error::{MethodError, Result};
use crate::train::{train, StepStats, TrainConfig, Trainable};
use crate::upcycle::{upcycle, UpcycleConfig};
use moebench_model::config::RouterNorm;
use moebench_model::layers::{Linear, Mlp};
use moebench_model::moe::{MoeLayer, Selection, Selector, TopK};
use moebench_model::observer::{ForwardObserver, MoeEvent};
use moebench_model::{Ffn, ForwardOptions, Model};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use tch::{Device, Kind, Tensor};

const METHOD: &str = "dume";

/// One batch of `(input_ids [B, T], attention_mask [B, T])`, 1 = real token (as in calibration).
pub use crate::method::Batch;

/// DUME's settings; the defaults are the official code's causal-LM setting (docs/methods.md §2.4).
#[derive(Debug, Clone, PartialEq)]
pub struct DumeConfig {
    /// Tikhonov λ; it also shrinks the bias row, as in the code (§2.7 item 5).
    pub lambda: f64,
    /// Router temperature τ (reasoning setting: 0.1). No effect with `top_k = 1`.
    pub temperature: f64,
    pub top_k: i64,
    /// `C_ctx`: only the first `context` positions of each sequence enter the statistics.
    pub context: usize,
    /// Count padding positions too, for exact parity with the code (§2.7 item 2). Off: cleaner.
    pub include_padding: bool,
}

impl Default for DumeConfig {
    fn default() -> Self {
        Self {
            lambda: 1e-2,
            temperature: 1.0,
            top_k: 1,
            context: 10_000,
            include_padding: false,
        }
    }
}

impl DumeConfig {
    /// Checks the settings that do not depend on the model.
    pub fn validate(&self) -> Result<()> {
        if self.top_k < 1 {
            return Err(MethodError::param(METHOD, "top_k", "must be at least 1"));
        }
        if !(self.lambda >= 0.0 && self.lambda.is_finite()) {
            return Err(MethodError::param(
                METHOD,
                "lambda",
                "must be ≥ 0 and finite",
            ));
        }
        if !(self.temperature > 0.0 && self.temperature.is_finite()) {
            return Err(MethodError::param(
                METHOD,
                "temperature",
                "must be positive",
            ));
        }
        if self.context == 0 {
            return Err(MethodError::param(METHOD, "context", "must be positive"));
        }
        Ok(())
    }

    fn check(&self, num_experts: i64) -> Result<()> {
        self.validate()?;
        if !(1..=num_experts).contains(&self.top_k) {
            return Err(MethodError::param(
                METHOD,
                "top_k",
                format!("must be between 1 and the number of experts ({num_experts})"),
            ));
        }
        Ok(())
    }
}

/// Checks that `dense` are ≥ 1 dense models of one architecture: the same tensor names, shapes
/// and dtypes. Config scalars that shapes do not show (RoPE, norm ε) are taken from model 0.
fn check_same_architecture(dense: &[Model]) -> Result<()> {
    let Some(first) = dense.first() else {
        return Err(MethodError::param(
            METHOD,
            "dense_models",
            "is empty; MoErging needs at least one dense model",
        ));
    };
    if let Some(i) = dense.iter().position(|m| m.config.moe.is_some()) {
        return Err(MethodError::unsupported(
            METHOD,
            format!("model {i} is already an MoE; DUME merges dense fine-tunes of one base"),
        ));
    }
    let shapes = |m: &Model| -> BTreeMap<String, (Vec<i64>, Kind)> {
        m.named_tensors()
            .into_iter()
            .map(|(n, t)| (n, (t.size(), t.kind())))
            .collect()
    };
    let reference = shapes(first);
    for (i, model) in dense.iter().enumerate().skip(1) {
        let other = shapes(model);
        let differ = |what: String| {
            Err(MethodError::unsupported(
                METHOD,
                format!(
                    "models 0 and {i} differ in architecture: {what} (MoErging needs fine-tunes of one base)"
                ),
            ))
        };
        if let Some(name) = reference.keys().find(|n| !other.contains_key(*n)) {
            return differ(format!("model {i} has no `{name}`"));
        }
        if let Some(name) = other.keys().find(|n| !reference.contains_key(*n)) {
            return differ(format!("model 0 has no `{name}`"));
        }
        if let Some((name, (s, k))) = reference.iter().find(|(n, v)| other[*n] != **v) {
            let (s_i, k_i) = &other[name];
            return differ(format!(
                "`{name}` is {s_i:?} {k_i:?} in model {i} but {s:?} {k:?} in model 0"
            ));
        }
    }
    Ok(())
}

/// Overwrites, in place, every tensor of `target` that `keep` accepts with the uniform mean over
/// `target` and `others` (computed in f64), as MoErging does for the shared weights (§2.3 step 1).
fn average_into(target: &Model, others: &[Model], keep: impl Fn(&str) -> bool) {
    let _guard = tch::no_grad_guard();
    let theirs: Vec<BTreeMap<String, Tensor>> = others.iter().map(Model::named_tensors).collect();
    let count = (others.len() + 1) as f64;
    for (name, mut tensor) in target.named_tensors() {
        if !keep(&name) {
            continue;
        }
        let sum = theirs.iter().fold(tensor.to_kind(Kind::Double), |acc, o| {
            acc + o[&name].to_kind(Kind::Double)
        });
        tensor.copy_(&(sum / count));
    }
}

fn dense_mlp(model: &Model, layer: usize) -> &Mlp {
    match &model.layers[layer].ffn {
        Ffn::Dense(mlp) => mlp,
        Ffn::Moe(_) => unreachable!("dense models are checked first"),
    }
}

fn moe_layers(model: &Model) -> impl Iterator<Item = (usize, &MoeLayer)> {
    model
        .layers
        .iter()
        .enumerate()
        .filter_map(|(l, b)| match &b.ffn {
            Ffn::Moe(moe) => Some((l, moe)),
            Ffn::Dense(_) => None,
        })
}

fn moe_layers_mut(model: &mut Model) -> impl Iterator<Item = (usize, &mut MoeLayer)> {
    model
        .layers
        .iter_mut()
        .enumerate()
        .filter_map(|(l, b)| match &mut b.ffn {
            Ffn::Moe(moe) => Some((l, moe)),
            Ffn::Dense(_) => None,
        })
}

/// Plain weight averaging of all weights, MLPs included: the "model averaging" baseline (§2.5).
pub fn average_merge(dense: Vec<Model>) -> Result<Model> {
    check_same_architecture(&dense)?;
    let mut models = dense.into_iter();
    let merged = models.next().expect("checked non-empty");
    average_into(&merged, &models.collect::<Vec<_>>(), |_| true);
    Ok(merged)
}

/// MoErging (docs/methods.md §2.3 step 1, as in BTX): the mean of every non-MLP weight, and expert `d`
/// of every layer = the MLP of `dense[d]`. The router is zero (a placeholder for the ridge solve or
/// BTX's random init) and the selector is top-1 with renormalised weights. The shell comes from
/// [`upcycle`] of model 0, so a Llama becomes a Mixtral that `save_pretrained` can write.
pub fn moerge(dense: Vec<Model>) -> Result<Model> {
    check_same_architecture(&dense)?;
    let num_experts = dense.len() as i64;
    let mut models = dense.into_iter();
    let mut merged = models.next().expect("checked non-empty");
    let others: Vec<Model> = models.collect();
    average_into(&merged, &others, |name| !name.contains(".mlp."));
    let _guard = tch::no_grad_guard();
    let experts: Vec<[Tensor; 3]> = (0..merged.num_layers())
        .map(|l| {
            let mlps: Vec<&Mlp> = std::iter::once(&merged)
                .chain(&others)
                .map(|m| dense_mlp(m, l))
                .collect();
            let stack = |w: fn(&Mlp) -> &Tensor| {
                Tensor::stack(&mlps.iter().map(|m| w(m)).collect::<Vec<_>>(), 0)
            };
            [
                stack(|m| &m.gate.weight),
                stack(|m| &m.up.weight),
                stack(|m| &m.down.weight),
            ]
        })
        .collect();
    upcycle(
        &mut merged,
        &UpcycleConfig {
            num_experts,
            top_k: 1,
            ..UpcycleConfig::default()
        },
    )?;
    for ((_, moe), [gate, up, down]) in moe_layers_mut(&mut merged).zip(experts) {
        moe.w_gate = gate;
        moe.w_up = up;
        moe.w_down = down;
        moe.router.weight = moe.router.weight.zeros_like();
    }
    Ok(merged)
}

/// Streaming ridge statistics of every MoE layer (docs/methods.md §2.3 step 2, §8.4 `RidgeStats`):
/// `A = Σ h̃h̃ᵀ` `[(H+1), (H+1)]`, shared by all domains, and `B = Σ h̃yᵀ` `[(H+1), D]` with `y`
/// the one-hot domain, where `h̃ = [h; 1]` is the MoE input with a bias entry. Kept in f64 on the
/// model's device (§2.7 item 6).
#[derive(Debug)]
pub struct RidgeStats {
    /// `C_ctx` of [`DumeConfig`]: positions per sequence that enter the statistics.
    pub context: usize,
    /// [`DumeConfig::include_padding`].
    pub include_padding: bool,
    layers: BTreeMap<usize, (Tensor, Tensor)>,
}

/// One layer's solved router, `logits = weight·x + bias` (f64).
#[derive(Debug)]
pub struct LayerRouter {
    pub layer: usize,
    /// `[D, H]`, i.e. `W_ℓᵀ` of §2.3 step 3.
    pub weight: Tensor,
    /// `[D]`.
    pub bias: Tensor,
}

impl LayerRouter {
    /// §2.3 step 4 [code]: each expert's weight vector and bias divided by the weight's L2 norm
    /// (0 → 1e-6), so that domains with more data do not get larger logits (§2.7 item 4).
    pub fn column_normalised(&self) -> LayerRouter {
        let norms = self
            .weight
            .norm_scalaropt_dim(2.0, [1i64], false)
            .clamp_min(1e-6);
        LayerRouter {
            layer: self.layer,
            weight: &self.weight / norms.unsqueeze(1),
            bias: &self.bias / norms,
        }
    }
}

impl RidgeStats {
    /// Empty statistics for `layers` of width `hidden` and `num_domains` domains.
    pub fn new(layers: &[usize], hidden: i64, num_domains: i64, device: Device) -> RidgeStats {
        let cfg = DumeConfig::default();
        let opts = (Kind::Double, device);
        RidgeStats {
            context: cfg.context,
            include_padding: cfg.include_padding,
            layers: layers
                .iter()
                .map(|&l| {
                    let a = Tensor::zeros([hidden + 1, hidden + 1], opts);
                    (l, (a, Tensor::zeros([hidden + 1, num_domains], opts)))
                })
                .collect(),
        }
    }

    /// Empty statistics for every MoE layer of `model`, one domain per expert.
    pub fn for_model(model: &Model, cfg: &DumeConfig) -> Result<RidgeStats> {
        let layers: Vec<usize> = moe_layers(model).map(|(l, _)| l).collect();
        let (_, first) = moe_layers(model).next().ok_or_else(|| {
            MethodError::unsupported(METHOD, "the model has no MoE layer; MoErge it first")
        })?;
        let mut stats = RidgeStats::new(
            &layers,
            model.config.hidden_size as i64,
            first.num_experts(),
            model.device,
        );
        stats.context = cfg.context;
        stats.include_padding = cfg.include_padding;
        Ok(stats)
    }

    pub fn num_domains(&self) -> i64 {
        self.layers.values().next().map_or(0, |(_, b)| b.size()[1])
    }

    /// Tokens counted for `domain` (the bias row of `B` sums the constant 1).
    pub fn tokens(&self, domain: i64) -> f64 {
        self.layers.values().next().map_or(0.0, |(a, b)| {
            f64::try_from(b.get(a.size()[0] - 1).get(domain)).expect("f64 scalar")
        })
    }

    /// Adds rows `x` `[M, H]` (MoE inputs of `layer`) labelled with `domain`.
    pub fn add_rows(&mut self, layer: usize, x: &Tensor, domain: i64) -> Result<()> {
        let d = self.num_domains();
        let (a, b) = self.layers.get_mut(&layer).ok_or_else(|| {
            MethodError::unsupported(METHOD, format!("no ridge statistics for layer {layer}"))
        })?;
        let h = a.size()[0] - 1;
        if x.dim() != 2 || x.size()[1] != h {
            return Err(MethodError::unsupported(
                METHOD,
                format!("layer {layer}: rows {:?} must be [M, {h}]", x.size()),
            ));
        }
        check_domain(domain, d)?;
        let x = x.to_kind(Kind::Double).to_device(a.device());
        let ones = Tensor::ones([x.size()[0], 1], (Kind::Double, a.device()));
        let x = Tensor::cat(&[x, ones], 1);
        *a += x.tr().mm(&x);
        let one_hot = Tensor::arange(d, (Kind::Int64, a.device()))
            .eq(domain)
            .to_kind(Kind::Double);
        *b += x.sum_dim_intlist(0, false, Kind::Double).unsqueeze(1) * one_hot.unsqueeze(0);
        Ok(())
    }

    /// Runs `model` on one batch of `domain` with every MoE layer forced to expert `domain`
    /// (§2.3 step 2) and adds the MoE inputs of the first `context` positions of each sequence.
    pub fn add_domain_batch(
        &mut self,
        model: &Model,
        domain: i64,
        ids: &Tensor,
        mask: &Tensor,
    ) -> Result<()> {
        let layers: Vec<usize> = moe_layers(model).map(|(l, _)| l).collect();
        if !layers.iter().eq(self.layers.keys()) {
            return Err(MethodError::unsupported(
                METHOD,
                format!(
                    "the statistics are for MoE layers {:?} but the model has {layers:?}",
                    self.layers.keys().collect::<Vec<_>>()
                ),
            ));
        }
        let (_, first) = moe_layers(model).next().expect("layers compared above");
        check_domain(domain, self.num_domains().min(first.num_experts()))?;
        check_batch(ids, mask)?;
        let mut collector = Collector {
            stats: self,
            domain,
        };
        let _guard = tch::no_grad_guard();
        let _ = model.forward_hidden(
            ids,
            Some(mask),
            None,
            &mut ForwardOptions {
                observer: Some(&mut collector),
                route_override: Some(domain),
            },
        );
        Ok(())
    }

    /// Adds a domain with no data yet (a zero column of every `B`, §2.3 step 6); returns its
    /// index. `A` is shared, so the old domains need not be revisited.
    pub fn add_domain(&mut self) -> i64 {
        for (a, b) in self.layers.values_mut() {
            let zero = Tensor::zeros([a.size()[0], 1], (Kind::Double, a.device()));
            *b = Tensor::cat(&[&*b, &zero], 1);
        }
        self.num_domains() - 1
    }

    /// Ridge solve per layer (§2.3 step 3): `W̃ = (A + λI)⁻¹B` by a linear solve, split into the
    /// weight rows and the bias row. Not column-normalised; see [`LayerRouter::column_normalised`].
    pub fn solve(&self, lambda: f64) -> Result<Vec<LayerRouter>> {
        if !(lambda >= 0.0 && lambda.is_finite()) {
            return Err(MethodError::param(
                METHOD,
                "lambda",
                "must be ≥ 0 and finite",
            ));
        }
        self.layers
            .iter()
            .map(|(&layer, (a, b))| {
                let n = a.size()[0];
                let eye = Tensor::eye(n, (Kind::Double, a.device()));
                let w = Tensor::f_linalg_solve(&(a + eye * lambda), b, true)?;
                Ok(LayerRouter {
                    layer,
                    weight: w.narrow(0, 0, n - 1).tr().contiguous(),
                    bias: w.get(n - 1),
                })
            })
            .collect()
    }
}

fn check_domain(domain: i64, num_domains: i64) -> Result<()> {
    if (0..num_domains).contains(&domain) {
        Ok(())
    } else {
        Err(MethodError::param(
            METHOD,
            "domain",
            format!("is {domain}, but there are {num_domains} domains/experts"),
        ))
    }
}

fn check_batch(ids: &Tensor, mask: &Tensor) -> Result<()> {
    if ids.dim() == 2 && ids.size() == mask.size() {
        return Ok(());
    }
    Err(MethodError::param(
        METHOD,
        "batches",
        format!(
            "input_ids {:?} and attention_mask {:?} must both be [B, T]",
            ids.size(),
            mask.size()
        ),
    ))
}

/// Feeds the MoE inputs of a forced-routing forward into [`RidgeStats`].
struct Collector<'a> {
    stats: &'a mut RidgeStats,
    domain: i64,
}

impl ForwardObserver for Collector<'_> {
    fn on_moe(&mut self, layer: usize, _moe: &MoeLayer, event: &MoeEvent<'_>) {
        let t = event.input.size()[1].min(self.stats.context as i64);
        let h = event.input.size()[2];
        let rows = event.input.narrow(1, 0, t).reshape([-1, h]);
        let rows = match event.token_mask {
            Some(m) if !self.stats.include_padding => {
                rows.index_select(0, &m.narrow(1, 0, t).reshape([-1]).nonzero().squeeze_dim(1))
            }
            _ => rows,
        };
        self.stats
            .add_rows(layer, &rows, self.domain)
            .expect("layers, width and domain are checked before the forward");
    }
}

/// Installs solved routers (§2.3 steps 4-5): column-normalised, divided by τ, as each MoE layer's
/// router weight and bias, with top-k over the logits and weights renormalised over the selected
/// experts. Softmax over all experts renormalised over the top k equals §2.3's softmax over the
/// k selected logits, and folding τ into the router makes the logits `(Wx + b)/τ`, so the stock
/// [`TopK`] is the DUME router and no separate selector is needed.
pub fn install_routers(model: &mut Model, routers: &[LayerRouter], cfg: &DumeConfig) -> Result<()> {
    let (kind, device) = (model.kind, model.device);
    for router in routers {
        let Some(Ffn::Moe(moe)) = model.layers.get_mut(router.layer).map(|b| &mut b.ffn) else {
            return Err(MethodError::unsupported(
                METHOD,
                format!("layer {} is not an MoE layer", router.layer),
            ));
        };
        cfg.check(moe.num_experts())?;
        if router.weight.size() != moe.router.weight.size() {
            return Err(MethodError::unsupported(
                METHOD,
                format!(
                    "layer {}: router {:?} does not fit the layer's {:?}",
                    router.layer,
                    router.weight.size(),
                    moe.router.weight.size()
                ),
            ));
        }
        let normalised = router.column_normalised();
        let to_model = |t: Tensor| (t / cfg.temperature).to_kind(kind).to_device(device);
        moe.router = Linear {
            weight: to_model(normalised.weight),
            bias: Some(to_model(normalised.bias)),
        };
        moe.selector = Arc::new(TopK {
            k: cfg.top_k,
            norm: RouterNorm::SoftmaxTopkRenorm,
        });
    }
    model.set_routing(cfg.top_k as usize, RouterNorm::SoftmaxTopkRenorm)?;
    Ok(())
}

/// Collects `batches` of `domain` into `stats` (forced to expert `domain`).
fn collect(model: &Model, stats: &mut RidgeStats, domain: i64, batches: &[Batch]) -> Result<()> {
    batches
        .iter()
        .try_for_each(|(ids, mask)| stats.add_domain_batch(model, domain, ids, mask))
}

/// DUME end to end (§2.3 steps 1-5): MoErge `dense`, collect the statistics of each domain `d`
/// from `domain_batches[d]` with forced routing to expert `d`, solve and install the routers.
/// Returns the statistics too, for [`add_expert`].
pub fn dume(
    dense: Vec<Model>,
    domain_batches: &[Vec<Batch>],
    cfg: &DumeConfig,
) -> Result<(Model, RidgeStats)> {
    if domain_batches.len() != dense.len() {
        return Err(MethodError::param(
            METHOD,
            "domain_batches",
            format!(
                "has {} domains but there are {} dense models (one unlabeled sample per model)",
                domain_batches.len(),
                dense.len()
            ),
        ));
    }
    cfg.check(dense.len() as i64)?;
    let mut model = moerge(dense)?;
    let mut stats = RidgeStats::for_model(&model, cfg)?;
    for (d, batches) in domain_batches.iter().enumerate() {
        collect(&model, &mut stats, d as i64, batches)?;
    }
    install_routers(&mut model, &stats.solve(cfg.lambda)?, cfg)?;
    Ok((model, stats))
}

/// Dynamic addition (§2.3 step 6): the MLPs of `dense` become expert D of every MoE layer, `B`
/// gains a column, only `batches` (the new domain) are run, and the routers are re-solved.
/// The non-MLP weights keep the old average ([inferred]: the official code MoErges one fixed
/// set), so the old domains' statistics stay valid. Returns the new expert's index.
pub fn add_expert(
    model: &mut Model,
    stats: &mut RidgeStats,
    dense: &Model,
    batches: &[Batch],
    cfg: &DumeConfig,
) -> Result<i64> {
    if dense.config.moe.is_some() || dense.num_layers() != model.num_layers() {
        return Err(MethodError::unsupported(
            METHOD,
            format!(
                "the new expert must come from a dense model with {} layers",
                model.num_layers()
            ),
        ));
    }
    let experts = moe_layers(model).next().map(|(_, m)| m.num_experts());
    if experts != Some(stats.num_domains()) {
        return Err(MethodError::unsupported(
            METHOD,
            format!(
                "the statistics have {} domains but the model has {experts:?} experts",
                stats.num_domains()
            ),
        ));
    }
    cfg.check(stats.num_domains() + 1)?;
    let _guard = tch::no_grad_guard();
    for (l, moe) in moe_layers(model) {
        let mlp = dense_mlp(dense, l);
        let fits = mlp.gate.weight.size() == moe.w_gate.get(0).size()
            && mlp.down.weight.size() == moe.w_down.get(0).size();
        if !fits {
            return Err(MethodError::unsupported(
                METHOD,
                format!(
                    "layer {l}: the new MLP {:?} does not fit the experts {:?}",
                    mlp.gate.weight.size(),
                    moe.w_gate.size()
                ),
            ));
        }
    }
    for (l, moe) in moe_layers_mut(model) {
        let mlp = dense_mlp(dense, l);
        let append = |stack: &Tensor, w: &Tensor| Tensor::cat(&[stack, &w.unsqueeze(0)], 0);
        moe.w_gate = append(&moe.w_gate, &mlp.gate.weight);
        moe.w_up = append(&moe.w_up, &mlp.up.weight);
        moe.w_down = append(&moe.w_down, &mlp.down.weight);
        // A placeholder row; the re-solve below overwrites the whole router.
        let weight = append(&moe.router.weight, &moe.router.weight.get(0).zeros_like());
        let bias = moe.router.bias.as_ref().map(|b| append(b, &b.get(0)));
        moe.router = Linear { weight, bias };
    }
    model.sync_expert_count()?;
    let domain = stats.add_domain();
    collect(model, stats, domain, batches)?;
    install_routers(model, &stats.solve(cfg.lambda)?, cfg)?;
    Ok(domain)
}

/// Logits `[B, T, V]` with every MoE layer sending every token to expert `domain`: the "oracle"
/// routing baseline, routing by the true domain (§2.5).
pub fn oracle_logits(
    model: &Model,
    ids: &Tensor,
    mask: Option<&Tensor>,
    domain: i64,
) -> Result<Tensor> {
    let (_, first) = moe_layers(model)
        .next()
        .ok_or_else(|| MethodError::unsupported(METHOD, "oracle routing needs an MoE model"))?;
    check_domain(domain, first.num_experts())?;
    let _guard = tch::no_grad_guard();
    let hidden = model.forward_hidden(
        ids,
        mask,
        None,
        &mut ForwardOptions {
            observer: None,
            route_override: Some(domain),
        },
    );
    Ok(model.logits(&hidden))
}

/// The random-routing baseline (§2.5): each token gets k experts drawn uniformly without
/// replacement, weight 1/k each. Seeded and reproducible: a splitmix64 stream advanced on every
/// call, so a sequence of calls is the same run after run.
#[derive(Debug)]
pub struct RandomRouter {
    pub k: i64,
    pub seed: u64,
    state: Mutex<u64>,
}

impl RandomRouter {
    pub fn new(k: i64, seed: u64) -> RandomRouter {
        RandomRouter {
            k,
            seed,
            state: Mutex::new(seed),
        }
    }
}

impl Selector for RandomRouter {
    fn describe(&self) -> String {
        format!("random(k={},seed={})", self.k, self.seed)
    }

    fn select(&self, logits: &Tensor, _token_mask: Option<&Tensor>) -> Selection {
        let mut state = self.state.lock().expect("random router state");
        let uniforms: Vec<f32> = (0..logits.numel())
            .map(|_| {
                *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
                let mut z = *state;
                z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                ((z ^ (z >> 31)) >> 40) as f32 / (1u64 << 24) as f32
            })
            .collect();
        let scores = Tensor::from_slice(&uniforms)
            .view(logits.size().as_slice())
            .to_device(logits.device());
        let (_, idx) = scores.topk(self.k, -1, true, false);
        let mask = scores
            .zeros_like()
            .to_kind(Kind::Bool)
            .scatter_value(-1, &idx, 1);
        let weights = mask.to_kind(Kind::Float) / self.k as f64;
        Selection { weights, mask }
    }
}

/// Replaces every MoE layer's selector by a [`RandomRouter`] (layer `l` seeded `seed + l`, so
/// layers draw independently).
pub fn random_routing(model: &mut Model, k: i64, seed: u64) -> Result<()> {
    for (l, moe) in moe_layers_mut(model) {
        if !(1..=moe.num_experts()).contains(&k) {
            return Err(MethodError::param(
                METHOD,
                "k",
                format!("must be between 1 and {}", moe.num_experts()),
            ));
        }
        moe.selector = Arc::new(RandomRouter::new(k, seed.wrapping_add(l as u64)));
    }
    Ok(())
}

/// The training recipe DUME's code uses for DUME+ and its BTX baseline (§2.3 step 7,
/// `utils/optimizer.py`): AdamW at lr 1e-4 with PyTorch's defaults (β = (0.9, 0.999), weight
/// decay 0.01), 10 warm-up steps from 0.1×lr, cosine to 0.1×lr over 1000 steps, clipping at 1,
/// LM loss only (the code's load-balancing `alpha` defaults to off), routers + `gate_proj`.
pub fn router_finetune_recipe() -> TrainConfig {
    TrainConfig {
        steps: 1000,
        lr: 1e-4,
        warmup_steps: 10,
        min_lr_ratio: 0.1,
        weight_decay: 0.01,
        beta1: 0.9,
        beta2: 0.999,
        load_balance_coef: 0.0,
        trainable: Trainable::routers_and_expert_gates(),
        ..TrainConfig::default()
    }
}

/// DUME+ (§2.3 step 7): DUME's closed-form routers, then training on the shuffled mix of the
/// domain texts with everything but what `train.trainable` names frozen.
#[derive(Debug, Clone, PartialEq)]
pub struct DumePlusConfig {
    pub dume: DumeConfig,
    /// [`router_finetune_recipe`] by default.
    pub train: TrainConfig,
}

impl Default for DumePlusConfig {
    fn default() -> Self {
        Self {
            dume: DumeConfig::default(),
            train: router_finetune_recipe(),
        }
    }
}

impl DumePlusConfig {
    pub fn validate(&self) -> Result<()> {
        self.dume.validate()?;
        self.train.validate()
    }
}

/// DUME+ end to end: [`dume`], then [`train`] on the concatenated `domain_tokens` (random
/// windows, i.e. a shuffled mix, §2.3 step 7). `domain_batches[d]` feed the ridge statistics of
/// domain d as in [`dume`].
pub fn dume_plus(
    dense: Vec<Model>,
    domain_batches: &[Vec<Batch>],
    domain_tokens: &[Vec<i64>],
    cfg: &DumePlusConfig,
    on_step: &mut dyn FnMut(&StepStats),
) -> Result<Model> {
    cfg.validate()?;
    check_domain_texts(domain_tokens, dense.len())?;
    let (model, _) = dume(dense, domain_batches, &cfg.dume)?;
    train(&model, &domain_tokens.concat(), &cfg.train, on_step)?;
    Ok(model)
}

fn check_domain_texts(domain_tokens: &[Vec<i64>], experts: usize) -> Result<()> {
    if domain_tokens.len() != experts {
        return Err(MethodError::param(
            METHOD,
            "domain_tokens",
            format!(
                "has {} domains but there are {experts} dense models (one text per model)",
                domain_tokens.len()
            ),
        ));
    }
    Ok(())
}

/// Which BTX the [`btx`] call runs; both start from MoErging and a random router.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BtxVariant {
    /// DUME's BTX baseline (§2.5, §7.2): only the router (and, as in DUME's code, `gate_proj`)
    /// trains, for the recipe's steps — what the DUME paper compares against.
    RouterOnly,
    /// Sukhbaatar et al.'s MoE fine-tuning stage (arXiv 2403.07816): every parameter trains.
    Full,
}

/// The BTX baseline (§7.2).
#[derive(Debug, Clone, PartialEq)]
pub struct BtxConfig {
    /// What trains is `train.trainable`; [`BtxConfig::variant`] sets it consistently.
    pub train: TrainConfig,
    /// Standard deviation of the random router init.
    pub router_init_std: f64,
    pub seed: i64,
}

impl Default for BtxConfig {
    /// DUME's BTX baseline: [`router_finetune_recipe`] (router + `gate_proj`, 1000 steps).
    fn default() -> Self {
        Self::variant(BtxVariant::RouterOnly)
    }
}

impl BtxConfig {
    /// The recipe of `variant`: router-only as DUME runs it, or every parameter (with the same
    /// optimizer settings, so the two differ only in what trains).
    pub fn variant(variant: BtxVariant) -> Self {
        let mut train = router_finetune_recipe();
        if variant == BtxVariant::Full {
            train.trainable = Trainable::all();
        }
        Self {
            train,
            router_init_std: 0.02,
            seed: 0,
        }
    }

    /// [`BtxVariant::Full`] when every module trains, [`BtxVariant::RouterOnly`] otherwise.
    pub fn label(&self) -> BtxVariant {
        if self.train.trainable == Trainable::all() {
            BtxVariant::Full
        } else {
            BtxVariant::RouterOnly
        }
    }

    pub fn validate(&self) -> Result<()> {
        if !(self.router_init_std > 0.0 && self.router_init_std.is_finite()) {
            return Err(MethodError::param(
                "btx",
                "router_init_std",
                format!("is {}; it must be positive", self.router_init_std),
            ));
        }
        self.train.validate()
    }
}

/// BTX (§7.2): MoErge, a random normal router (seeded), then training on the concatenated
/// domain texts (`train` samples random windows, i.e. a shuffled mix) with only
/// `cfg.train.trainable` unfrozen.
pub fn btx(
    dense: Vec<Model>,
    domain_tokens: &[Vec<i64>],
    cfg: &BtxConfig,
    on_step: &mut dyn FnMut(&StepStats),
) -> Result<Model> {
    cfg.validate()?;
    check_domain_texts(domain_tokens, dense.len())?;
    let mut model = moerge(dense)?;
    tch::manual_seed(cfg.seed);
    tch::no_grad(|| {
        for (_, moe) in moe_layers_mut(&mut model) {
            moe.router.weight = moe.router.weight.randn_like() * cfg.router_init_std;
        }
    });
    train(&model, &domain_tokens.concat(), &cfg.train, on_step)?;
    Ok(model)
}

/// The oracle router (§2.5): every token of every MoE layer goes to expert `domain` with weight
/// 1, i.e. routing by the true domain of the text being scored. Installed per evaluated domain
/// ([`oracle_routing`]); its `describe()` names the domain so results stay labelled.
#[derive(Debug, Clone)]
pub struct OracleRouter {
    pub domain: i64,
}

impl Selector for OracleRouter {
    fn describe(&self) -> String {
        format!("oracle(domain={})", self.domain)
    }

    fn select(&self, logits: &Tensor, token_mask: Option<&Tensor>) -> Selection {
        let s = Selection::forced(logits, self.domain);
        match token_mask {
            None => s,
            Some(m) => {
                let mask = s.mask.logical_and(&m.unsqueeze(-1));
                Selection {
                    weights: mask.to_kind(Kind::Float),
                    mask,
                }
            }
        }
    }
}

/// Replaces every MoE layer's selector by [`OracleRouter`] for `domain`: evaluate domain d's
/// texts after `oracle_routing(model, d)` for the oracle baseline (§2.5; DUME's code passes
/// `expert_id` the same way).
pub fn oracle_routing(model: &mut Model, domain: i64) -> Result<()> {
    let (_, first) = moe_layers(model)
        .next()
        .ok_or_else(|| MethodError::unsupported(METHOD, "oracle routing needs an MoE model"))?;
    check_domain(domain, first.num_experts())?;
    let oracle: Arc<dyn Selector> = Arc::new(OracleRouter { domain });
    for (_, moe) in moe_layers_mut(model) {
        moe.selector = oracle.clone();
    }
    Ok(())
}

/// Per MoE layer, the fraction of each domain's real tokens whose top-1 routed expert (largest
/// combine weight of the layer's own selection) is that domain's expert (§2.6 (a), §8.7).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RouterAccuracy {
    /// `layer → accuracy of domain d` at index d.
    pub layers: BTreeMap<usize, Vec<f64>>,
}

/// Counts `(correct, total)` per layer for one domain.
struct Top1Counter {
    domain: i64,
    counts: BTreeMap<usize, (f64, f64)>,
}

impl ForwardObserver for Top1Counter {
    fn on_moe(&mut self, layer: usize, _moe: &MoeLayer, event: &MoeEvent<'_>) {
        let hit = event.selection.weights.argmax(-1, false).eq(self.domain);
        let real = match event.token_mask {
            Some(m) => m.shallow_clone(),
            None => hit.ones_like(),
        };
        let count = |t: &Tensor| t.sum(Kind::Double).double_value(&[]);
        let entry = self.counts.entry(layer).or_default();
        entry.0 += count(&hit.logical_and(&real));
        entry.1 += count(&real);
    }
}

/// [`RouterAccuracy`] of `model` routing by itself (earlier layers use its own choices, §2.7
/// item 3) on `domain_batches[d]`, the held-out batches of domain `d`.
pub fn router_accuracy(model: &Model, domain_batches: &[Vec<Batch>]) -> Result<RouterAccuracy> {
    let mut layers: BTreeMap<usize, Vec<f64>> = BTreeMap::new();
    let _guard = tch::no_grad_guard();
    for (d, batches) in domain_batches.iter().enumerate() {
        let mut counter = Top1Counter {
            domain: d as i64,
            counts: BTreeMap::new(),
        };
        for (ids, mask) in batches {
            check_batch(ids, mask)?;
            let _ = model.forward_hidden(
                ids,
                Some(mask),
                None,
                &mut ForwardOptions {
                    observer: Some(&mut counter),
                    route_override: None,
                },
            );
        }
        for (layer, (correct, total)) in counter.counts {
            let acc = layers
                .entry(layer)
                .or_insert_with(|| vec![0.0; domain_batches.len()]);
            acc[d] = correct / total.max(1.0);
        }
    }
    Ok(RouterAccuracy { layers })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
        (a - b).abs().max().double_value(&[])
    }

    /// Toy domains: rows of domain d are Gaussian around a domain-specific mean.
    fn toy_rows(domain: i64, rows: i64, hidden: i64) -> Tensor {
        let opts = (Kind::Double, Device::Cpu);
        Tensor::randn([rows, hidden], opts) + Tensor::randn([1, hidden], opts) * (domain + 1)
    }

    /// The ridge minimiser in one shot: `(X̃ᵀX̃ + λI)⁻¹ X̃ᵀY` with all rows at once, `[(H+1), D]`.
    fn batch_ridge(x: &Tensor, y: &Tensor, lambda: f64) -> Tensor {
        let x = Tensor::cat(&[x, &x.ones_like().narrow(1, 0, 1)], 1);
        let n = x.size()[1];
        let a = x.tr().mm(&x) + Tensor::eye(n, (Kind::Double, Device::Cpu)) * lambda;
        Tensor::linalg_solve(&a, &x.tr().mm(y), true)
    }

    fn stacked(router: &LayerRouter) -> Tensor {
        Tensor::cat(&[router.weight.tr(), router.bias.unsqueeze(0)], 0)
    }

    /// docs/methods.md §8.8: accumulating batch by batch, with the third domain added later
    /// (dynamic addition), equals the one-shot batch ridge solution, which equals gradient descent
    /// on `‖X̃W̃ − Y‖² + λ‖W̃‖²`.
    #[test]
    fn incremental_ridge_equals_batch_ridge_equals_gradient_descent() {
        tch::manual_seed(0);
        let (h, d, lambda) = (6, 3, 0.5);
        let mut stats = RidgeStats::new(&[2], h, 2, Device::Cpu);
        let mut xs = Vec::new();
        let mut labels = Vec::new();
        for (domain, batches) in [(0, 3), (1, 2), (2, 4)] {
            if domain == 2 {
                assert_eq!(stats.add_domain(), 2);
            }
            for b in 0..batches {
                let x = toy_rows(domain, 5 + b, h);
                stats.add_rows(2, &x, domain).unwrap();
                labels.extend(std::iter::repeat_n(domain, x.size()[0] as usize));
                xs.push(x);
            }
        }
        assert_eq!(stats.tokens(2), (5 + 6 + 7 + 8) as f64);
        let x = Tensor::cat(&xs, 0);
        let y = Tensor::from_slice(&labels).one_hot(d).to_kind(Kind::Double);
        let routers = stats.solve(lambda).unwrap();
        assert_eq!(routers.len(), 1);
        assert_eq!(routers[0].weight.size(), [d, h]);
        let incremental = stacked(&routers[0]);
        let batch = batch_ridge(&x, &y, lambda);
        let diff = max_abs_diff(&incremental, &batch);
        assert!(diff <= 1e-6, "incremental vs batch: max |Δ| {diff}");

        let xt = Tensor::cat(&[&x, &x.ones_like().narrow(1, 0, 1)], 1);
        let gram = xt.tr().mm(&xt);
        let lipschitz = 2.0 * (gram.linalg_eigvalsh("L").max().double_value(&[]) + lambda);
        let mut w = Tensor::zeros([h + 1, d], (Kind::Double, Device::Cpu));
        for _ in 0..20_000 {
            let grad = (xt.tr().mm(&(xt.mm(&w) - &y)) + &w * lambda) * 2.0;
            w -= grad / lipschitz;
        }
        let diff = max_abs_diff(&w, &batch);
        assert!(
            diff <= 1e-6,
            "gradient descent vs closed form: max |Δ| {diff}"
        );
    }

    #[test]
    fn column_normalisation_gives_unit_weight_rows_and_scales_the_bias_alike() {
        let router = LayerRouter {
            layer: 0,
            weight: Tensor::from_slice(&[3.0f64, 4.0, 0.0, 0.0]).view([2, 2]),
            bias: Tensor::from_slice(&[10.0f64, 2e-6]),
        };
        let n = router.column_normalised();
        let w: Vec<f64> = Vec::try_from(n.weight.flatten(0, -1)).unwrap();
        let b: Vec<f64> = Vec::try_from(n.bias).unwrap();
        assert_eq!(w, [0.6, 0.8, 0.0, 0.0]);
        assert!(
            (b[0] - 2.0).abs() < 1e-12 && (b[1] - 2.0).abs() < 1e-9,
            "{b:?}"
        );
    }

    #[test]
    fn random_router_is_uniform_seeded_and_picks_k_distinct_experts() {
        let logits = Tensor::zeros([4, 500, 4], (Kind::Float, Device::Cpu));
        let pick = |seed| RandomRouter::new(2, seed).select(&logits, None);
        let s = pick(7);
        let counts = s.active_counts();
        assert_eq!(counts.min().int64_value(&[]), 2);
        assert_eq!(counts.max().int64_value(&[]), 2);
        let total = s.weights.sum_dim_intlist(-1, false, Kind::Float);
        assert!(max_abs_diff(&total, &total.ones_like()) < 1e-6);
        let share = s
            .mask
            .to_kind(Kind::Double)
            .mean_dim(&[0i64, 1][..], false, Kind::Double);
        let share: Vec<f64> = Vec::try_from(share).unwrap();
        assert!(share.iter().all(|p| (p - 0.5).abs() < 0.03), "{share:?}");
        assert!(pick(7).mask.equal(&s.mask));
        assert!(!pick(8).mask.equal(&s.mask));
    }

    #[test]
    fn bad_settings_are_named() {
        let stats = RidgeStats::new(&[0], 4, 2, Device::Cpu);
        let err = stats.solve(-1.0).unwrap_err().to_string();
        assert!(err.contains("`lambda` must be ≥ 0"), "{err}");
        let mut stats = stats;
        let err = stats
            .add_rows(0, &Tensor::zeros([3, 4], (Kind::Float, Device::Cpu)), 2)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`domain` is 2, but there are 2 domains"),
            "{err}"
        );
        let err = stats
            .add_rows(1, &Tensor::zeros([3, 4], (Kind::Float, Device::Cpu)), 0)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no ridge statistics for layer 1"), "{err}");
        let cfg = DumeConfig {
            top_k: 3,
            ..DumeConfig::default()
        };
        let err = cfg.check(2).unwrap_err().to_string();
        assert!(
            err.contains("`top_k` must be between 1 and the number of experts (2)"),
            "{err}"
        );
    }
}
