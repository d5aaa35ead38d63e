//! Training loop for MoE models (tch autograd): AdamW (Loshchilov & Hutter, decoupled weight
//! decay), linear warm-up then cosine decay, global-norm gradient clipping, seeded data order,
//! and the MoE losses of docs/methods.md §7.3/§7.5/§5.3: LM loss + Switch load balancing
//! `α·N·Σ f_j·P̄_j` + router z-loss `β·mean(logsumexp(z)²)` + Huang et al.'s dynamic loss
//! (router entropy, minimised). After every optimizer step the caller's `on_step` sees the
//! measured active-expert counts — that is where DTop-p's PI controller steps (§5.3 step 3).
//!
//! What trains is a [`Trainable`]: every parameter, or only some modules (routers, the
//! experts' gate projections, …) of some layers. Frozen tensors get no gradient, no optimizer
//! state and no weight decay, so they leave training bit for bit unchanged — DUME+ and BTX
//! train only routers (docs/methods.md §2.3 step 7, §7.2), LLM-Streamline only its replacement layer.
//!
//! Enough to pre-train a tiny MoE from scratch and to continue-train an upcycled model on CPU.
use crate::error::{MethodError, Result};
use moebench_model::layers::Linear;
use moebench_model::moe::MoeLayer;
use moebench_model::observer::{ForwardObserver, MoeEvent};
use moebench_model::{Ffn, ForwardOptions, Model};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use tch::{Kind, Reduction, Tensor};

const METHOD: &str = "train";

#[derive(Debug, Clone, PartialEq)]
pub struct TrainConfig {
    pub steps: usize,
    pub batch_size: usize,
    pub seq_len: usize,
    pub lr: f64,
    /// Cosine decay ends at `lr · min_lr_ratio`.
    pub min_lr_ratio: f64,
    pub warmup_steps: usize,
    /// Decoupled weight decay, applied to matrices only (not norms, biases or selector scales).
    pub weight_decay: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Global gradient-norm clip; 0 disables it.
    pub grad_clip: f64,
    pub seed: u64,
    /// Switch load-balancing coefficient α (docs/methods.md §7.3).
    pub load_balance_coef: f64,
    /// Router z-loss coefficient β (0 for DTop-p, §5.3 step 5).
    pub z_loss_coef: f64,
    /// Huang et al.'s dynamic (entropy) loss coefficient (§7.5).
    pub entropy_coef: f64,
    /// What is trained; everything else stays frozen.
    pub trainable: Trainable,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            steps: 1000,
            batch_size: 16,
            seq_len: 128,
            lr: 1e-3,
            min_lr_ratio: 0.1,
            warmup_steps: 50,
            weight_decay: 0.1,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            grad_clip: 1.0,
            seed: 0,
            load_balance_coef: 0.01,
            z_loss_coef: 0.0,
            entropy_coef: 0.0,
            trainable: Trainable::all(),
        }
    }
}

impl TrainConfig {
    /// Learning rate at `step` (0-based): linear warm-up, then cosine to `lr·min_lr_ratio`.
    pub fn lr_at(&self, step: usize) -> f64 {
        if step < self.warmup_steps {
            return self.lr * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let span = (self.steps - self.warmup_steps).max(1) as f64;
        let progress = ((step - self.warmup_steps) as f64 / span).min(1.0);
        let cosine = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
        self.lr * (self.min_lr_ratio + (1.0 - self.min_lr_ratio) * cosine)
    }

    /// Checks every setting that does not depend on the model or the data.
    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("steps", self.steps),
            ("batch_size", self.batch_size),
            ("seq_len", self.seq_len),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(MethodError::param(METHOD, name, "must be positive"));
        }
        if self.lr.is_nan() || self.lr <= 0.0 {
            return Err(MethodError::param(METHOD, "lr", "must be positive"));
        }
        let unit = [
            ("min_lr_ratio", self.min_lr_ratio),
            ("beta1", self.beta1),
            ("beta2", self.beta2),
        ];
        if let Some((name, v)) = unit.iter().find(|(_, v)| !(0.0..=1.0).contains(v)) {
            return Err(MethodError::param(
                METHOD,
                name,
                format!("is {v}; allowed: [0, 1]"),
            ));
        }
        let non_negative = [
            ("weight_decay", self.weight_decay),
            ("eps", self.eps),
            ("grad_clip", self.grad_clip),
            ("load_balance_coef", self.load_balance_coef),
            ("z_loss_coef", self.z_loss_coef),
            ("entropy_coef", self.entropy_coef),
        ];
        if let Some((name, v)) = non_negative
            .iter()
            .find(|(_, v)| !(v.is_finite() && *v >= 0.0))
        {
            return Err(MethodError::param(
                METHOD,
                name,
                format!("is {v}; it must be finite and ≥ 0"),
            ));
        }
        self.trainable.validate()
    }

    fn check(&self, tokens: usize) -> Result<()> {
        self.validate()?;
        if tokens <= self.seq_len + 1 {
            return Err(MethodError::param(
                METHOD,
                "seq_len",
                format!(
                    "is {} but the training text has only {tokens} tokens",
                    self.seq_len
                ),
            ));
        }
        Ok(())
    }
}

/// A part of a model the training loop can train or freeze. The names are this IR's modules,
/// not checkpoint names: "gate" in DUME's code matches both the router and every expert's
/// `gate_proj` (docs/methods.md §2.7 item 1), which here are [`Module::Router`] and
/// [`Module::ExpertGate`], so either reading can be chosen explicitly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Module {
    /// Token embeddings (also the LM head when it is tied).
    Embeddings,
    /// An untied LM head.
    LmHead,
    /// The norm after the last block.
    FinalNorm,
    /// Each block's input and post-attention RMSNorms.
    Norms,
    /// q/k/v/o projections (with biases and q/k norms).
    Attention,
    /// A dense block's MLP.
    Mlp,
    /// An MoE layer's router (weight and bias).
    Router,
    /// The experts' `gate_proj` (`w_gate`, all experts of a layer).
    ExpertGate,
    /// The experts' `up_proj`.
    ExpertUp,
    /// The experts' `down_proj`.
    ExpertDown,
    /// A shared expert and its sigmoid gate.
    SharedExpert,
    /// Learnable parameters of a selector (DTop-p's per-layer scale s_ℓ).
    Selector,
}

impl Module {
    pub const ALL: [Module; 12] = [
        Module::Embeddings,
        Module::LmHead,
        Module::FinalNorm,
        Module::Norms,
        Module::Attention,
        Module::Mlp,
        Module::Router,
        Module::ExpertGate,
        Module::ExpertUp,
        Module::ExpertDown,
        Module::SharedExpert,
        Module::Selector,
    ];

    /// Modules that belong to no block (trained whatever [`Trainable::layers`] says).
    fn is_model_level(self) -> bool {
        matches!(
            self,
            Module::Embeddings | Module::LmHead | Module::FinalNorm
        )
    }
}

/// Which parameters train: `modules`, restricted to the blocks `layers` (`None` = every block).
/// [`Default`] trains everything.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trainable {
    pub modules: BTreeSet<Module>,
    /// Block indices whose modules train; model-level modules (embeddings, LM head, final
    /// norm) are not in a block and train when listed.
    pub layers: Option<BTreeSet<usize>>,
}

impl Default for Trainable {
    fn default() -> Self {
        Self::all()
    }
}

impl Trainable {
    /// Every parameter (pre-training, continued training, Sukhbaatar et al.'s BTX fine-tune).
    pub fn all() -> Self {
        Self::only(&Module::ALL)
    }

    /// Routers only: the clean reading of "router-only" training (§2.7 item 1).
    pub fn routers() -> Self {
        Self::only(&[Module::Router])
    }

    /// Routers and every expert's `gate_proj`: what DUME's code trains for BTX and DUME+
    /// (`requires_grad = "gate" in name`, §2.7 item 1).
    pub fn routers_and_expert_gates() -> Self {
        Self::only(&[Module::Router, Module::ExpertGate])
    }

    pub fn only(modules: &[Module]) -> Self {
        Self {
            modules: modules.iter().copied().collect(),
            layers: None,
        }
    }

    /// The same modules in the blocks `layers` only.
    pub fn in_layers(mut self, layers: impl IntoIterator<Item = usize>) -> Self {
        self.layers = Some(layers.into_iter().collect());
        self
    }

    pub fn validate(&self) -> Result<()> {
        if self.modules.is_empty() || self.layers.as_ref().is_some_and(BTreeSet::is_empty) {
            return Err(MethodError::param(
                METHOD,
                "trainable",
                "selects nothing to train; name at least one module (and layer, if given)",
            ));
        }
        Ok(())
    }

    fn trains(&self, layer: Option<usize>, module: Module) -> bool {
        self.modules.contains(&module)
            && (module.is_model_level()
                || match (&self.layers, layer) {
                    (None, _) => true,
                    (Some(set), Some(l)) => set.contains(&l),
                    (Some(_), None) => false,
                })
    }

    /// Checks that the layers exist and that something of `model` is selected.
    fn check(&self, model: &Model, params: &[Parameter]) -> Result<()> {
        self.validate()?;
        if let Some(bad) = self
            .layers
            .iter()
            .flatten()
            .find(|&&l| l >= model.num_layers())
        {
            return Err(MethodError::param(
                METHOD,
                "trainable",
                format!(
                    "names layer {bad}, but the model has {} layers (0-based)",
                    model.num_layers()
                ),
            ));
        }
        if !params.iter().any(|p| self.trains(p.layer, p.module)) {
            let modules: Vec<&Module> = self.modules.iter().collect();
            return Err(MethodError::param(
                METHOD,
                "trainable",
                format!("selects {modules:?}, which this model does not have in those layers"),
            ));
        }
        Ok(())
    }
}

/// One tensor the forward reads, with where it sits.
pub struct Parameter {
    pub layer: Option<usize>,
    pub module: Module,
    pub tensor: Tensor,
}

/// Every tensor [`Model::parameters`] returns, plus the selectors' parameters, tagged with its
/// block and module (a test checks the two lists hold the same tensors).
pub fn tagged_parameters(model: &Model) -> Vec<Parameter> {
    let mut out = Vec::new();
    let mut put = |layer: Option<usize>, module: Module, t: &Tensor| {
        out.push(Parameter {
            layer,
            module,
            tensor: t.shallow_clone(),
        })
    };
    put(None, Module::Embeddings, &model.embed);
    put(None, Module::FinalNorm, &model.norm.weight);
    if let Some(head) = &model.lm_head {
        put(None, Module::LmHead, head);
    }
    let linear = |put: &mut dyn FnMut(Option<usize>, Module, &Tensor),
                  layer: usize,
                  module: Module,
                  l: &Linear| {
        put(Some(layer), module, &l.weight);
        if let Some(b) = &l.bias {
            put(Some(layer), module, b);
        }
    };
    for (l, block) in model.layers.iter().enumerate() {
        put(Some(l), Module::Norms, &block.input_norm.weight);
        put(Some(l), Module::Norms, &block.post_norm.weight);
        let a = &block.attn;
        for proj in [&a.q_proj, &a.k_proj, &a.v_proj, &a.o_proj] {
            linear(&mut put, l, Module::Attention, proj);
        }
        for norm in [&a.q_norm, &a.k_norm].into_iter().flatten() {
            put(Some(l), Module::Attention, &norm.weight);
        }
        match &block.ffn {
            Ffn::Dense(m) => {
                for proj in [&m.gate, &m.up, &m.down] {
                    linear(&mut put, l, Module::Mlp, proj);
                }
            }
            Ffn::Moe(moe) => {
                linear(&mut put, l, Module::Router, &moe.router);
                put(Some(l), Module::ExpertGate, &moe.w_gate);
                put(Some(l), Module::ExpertUp, &moe.w_up);
                put(Some(l), Module::ExpertDown, &moe.w_down);
                if let Some(shared) = &moe.shared {
                    for proj in [&shared.mlp.gate, &shared.mlp.up, &shared.mlp.down] {
                        linear(&mut put, l, Module::SharedExpert, proj);
                    }
                    if let Some(gate) = &shared.gate {
                        linear(&mut put, l, Module::SharedExpert, gate);
                    }
                }
                for t in moe.selector.parameters() {
                    put(Some(l), Module::Selector, &t);
                }
            }
        }
    }
    out
}

/// What one optimizer step did; written as one JSONL line by the caller.
#[derive(Debug, Clone, Serialize)]
pub struct StepStats {
    pub step: usize,
    pub lr: f64,
    pub loss: f64,
    pub lm_loss: f64,
    pub load_balance_loss: f64,
    pub z_loss: f64,
    pub entropy_loss: f64,
    pub grad_norm: f64,
    /// Mean / std of active experts per token over all MoE layers (empty model: 0).
    pub active_mean: f64,
    pub active_std: f64,
    /// Mean active experts per token of each MoE layer, in layer order.
    pub active_per_layer: Vec<f64>,
}

/// Seeded, reproducible window sampler (splitmix64).
struct Windows {
    state: u64,
}

impl Windows {
    fn next_start(&mut self, max_start: usize) -> usize {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) % (max_start as u64 + 1)) as usize
    }
}

/// Keeps, per MoE layer of one forward, what the auxiliary losses need (with their graphs).
#[derive(Default)]
struct RouterRecord {
    layers: Vec<(Tensor, Tensor)>,
}

impl ForwardObserver for RouterRecord {
    fn on_moe(&mut self, _layer: usize, _moe: &MoeLayer, event: &MoeEvent<'_>) {
        self.layers.push((
            event.router_logits.shallow_clone(),
            event.selection.mask.shallow_clone(),
        ));
    }
}

/// Aux losses of one layer: (load balance, z-loss, entropy), from logits `[B,T,N]` and mask.
fn aux_losses(logits: &Tensor, mask: &Tensor) -> (Tensor, Tensor, Tensor) {
    let n = logits.size()[2];
    let logits = logits.view([-1, n]);
    let mask = mask.view([-1, n]).to_kind(Kind::Float);
    let probs = logits.softmax(-1, Kind::Float);
    // f_j: share of routed slots that went to expert j (not differentiable, as in Switch).
    let f = mask.sum_dim_intlist(0, false, Kind::Float) / mask.sum(Kind::Float).clamp_min(1.0);
    let p_mean = probs.mean_dim(0, false, Kind::Float);
    let balance = (f * p_mean).sum(Kind::Float) * n as f64;
    let z = logits.logsumexp(-1, false).square().mean(Kind::Float);
    let entropy = -(&probs * probs.clamp_min(1e-20).log())
        .sum_dim_intlist(-1, false, Kind::Float)
        .mean(Kind::Float);
    (balance, z, entropy)
}

/// The trained tensors, each with whether it gets weight decay, and the frozen ones.
type Split = (Vec<(Tensor, bool)>, Vec<Tensor>);

/// Splits `model`'s tensors into the trained ones (with whether each gets weight decay:
/// matrices only, not norms, biases or selector scales) and the frozen ones.
fn split_parameters(model: &Model, trainable: &Trainable) -> Result<Split> {
    let params = tagged_parameters(model);
    trainable.check(model, &params)?;
    let (mut trained, mut frozen) = (Vec::new(), Vec::new());
    for p in params {
        if trainable.trains(p.layer, p.module) {
            let decay = p.tensor.dim() >= 2 && p.module != Module::Selector;
            trained.push((p.tensor, decay));
        } else {
            frozen.push(p.tensor);
        }
    }
    Ok((trained, frozen))
}

fn f64_of(t: &Tensor) -> f64 {
    f64::try_from(t).expect("scalar tensor")
}

/// What [`optimize`] minimises: the loss of each step, and a hook after the step's update.
pub(crate) trait Objective {
    fn loss(&mut self, model: &Model, step: usize) -> Tensor;
    fn stepped(&mut self, _step: usize, _lr: f64, _grad_norm: f64, _loss: &Tensor) {}
}

/// An [`Objective`] that is only a loss function.
pub(crate) struct LossFn<F>(pub F);

impl<F: FnMut(&Model, usize) -> Tensor> Objective for LossFn<F> {
    fn loss(&mut self, model: &Model, step: usize) -> Tensor {
        (self.0)(model, step)
    }
}

/// The optimizer loop every trainer here shares: freezes what `cfg.trainable` leaves out,
/// then `cfg.steps` times: the objective's loss, backward, one AdamW update with clipping at
/// the scheduled learning rate. The model must be in f32; `requires_grad` is off again after.
pub(crate) fn optimize(
    model: &Model,
    cfg: &TrainConfig,
    objective: &mut dyn Objective,
) -> Result<()> {
    cfg.validate()?;
    if model.kind != Kind::Float {
        return Err(MethodError::unsupported(
            METHOD,
            "training needs f32 weights (load the model with --dtype f32)",
        ));
    }
    let (params, frozen) = split_parameters(model, &cfg.trainable)?;
    for p in &frozen {
        let _ = p.set_requires_grad(false);
    }
    for (p, _) in &params {
        let _ = p.set_requires_grad(true);
    }
    let mut moments: Vec<(Tensor, Tensor)> = params
        .iter()
        .map(|(p, _)| (p.zeros_like(), p.zeros_like()))
        .collect();
    for step in 0..cfg.steps {
        let loss = objective.loss(model, step);
        for (p, _) in &params {
            let mut p = p.shallow_clone();
            p.zero_grad();
        }
        loss.backward();
        let lr = cfg.lr_at(step);
        let grad_norm = tch::no_grad(|| adamw_step(&params, &mut moments, cfg, step, lr));
        objective.stepped(step, lr, grad_norm, &loss);
    }
    for (p, _) in &params {
        let _ = p.set_requires_grad(false);
    }
    Ok(())
}

/// Next-token prediction on seeded random windows of a token stream, with the MoE losses.
struct LanguageModeling<'a> {
    cfg: &'a TrainConfig,
    data: Tensor,
    windows: Windows,
    max_start: usize,
    on_step: &'a mut dyn FnMut(&StepStats),
    /// The last step's parts, for its [`StepStats`].
    pending: Option<(Tensor, [Tensor; 3], Vec<Tensor>)>,
}

impl Objective for LanguageModeling<'_> {
    fn loss(&mut self, model: &Model, _step: usize) -> Tensor {
        let cfg = self.cfg;
        let starts: Vec<i64> = (0..cfg.batch_size)
            .map(|_| self.windows.next_start(self.max_start) as i64)
            .collect();
        let offsets = Tensor::arange((cfg.seq_len + 1) as i64, (Kind::Int64, model.device));
        let index = Tensor::from_slice(&starts)
            .to_device(model.device)
            .unsqueeze(1)
            + offsets.unsqueeze(0);
        let batch = self
            .data
            .index_select(0, &index.flatten(0, -1))
            .view([cfg.batch_size as i64, -1]);
        let inputs = batch.narrow(1, 0, cfg.seq_len as i64);
        let targets = batch.narrow(1, 1, cfg.seq_len as i64);

        let mut record = RouterRecord::default();
        let hidden = model.forward_hidden(
            &inputs,
            None,
            None,
            &mut ForwardOptions {
                observer: Some(&mut record),
                route_override: None,
            },
        );
        let logits = model.logits(&hidden);
        let lm_loss = logits
            .view([-1, logits.size()[2]])
            .cross_entropy_for_logits(&targets.flatten(0, -1));
        let zero = || Tensor::zeros([], (Kind::Float, model.device));
        let (mut balance, mut z, mut entropy) = (zero(), zero(), zero());
        let mut counts = Vec::with_capacity(record.layers.len());
        for (layer_logits, mask) in &record.layers {
            let (b, zl, e) = aux_losses(layer_logits, mask);
            balance += b;
            z += zl;
            entropy += e;
            counts.push(mask.sum_dim_intlist(-1, false, Kind::Float).flatten(0, -1));
        }
        let layers = record.layers.len().max(1) as f64;
        let (balance, z, entropy) = (balance / layers, z / layers, entropy / layers);
        let loss = &lm_loss
            + &balance * cfg.load_balance_coef
            + &z * cfg.z_loss_coef
            + &entropy * cfg.entropy_coef;
        self.pending = Some((lm_loss, [balance, z, entropy], counts));
        loss
    }

    fn stepped(&mut self, step: usize, lr: f64, grad_norm: f64, loss: &Tensor) {
        let (lm_loss, [balance, z, entropy], counts) =
            self.pending.take().expect("loss computed before the step");
        let active_per_layer = counts
            .iter()
            .map(|c| f64_of(&c.mean(Kind::Float)))
            .collect();
        let (active_mean, active_std) = if counts.is_empty() {
            (0.0, 0.0)
        } else {
            let all = Tensor::cat(&counts, 0);
            (f64_of(&all.mean(Kind::Float)), f64_of(&all.std(false)))
        };
        (self.on_step)(&StepStats {
            step,
            lr,
            loss: f64_of(loss),
            lm_loss: f64_of(&lm_loss),
            load_balance_loss: f64_of(&balance),
            z_loss: f64_of(&z),
            entropy_loss: f64_of(&entropy),
            grad_norm,
            active_mean,
            active_std,
            active_per_layer,
        });
    }
}

/// Trains `model` in place on windows of `tokens`, calling `on_step` after every optimizer step.
/// Only `cfg.trainable` changes. The model must be in f32.
pub fn train(
    model: &Model,
    tokens: &[i64],
    cfg: &TrainConfig,
    on_step: &mut dyn FnMut(&StepStats),
) -> Result<()> {
    cfg.check(tokens.len())?;
    let mut objective = LanguageModeling {
        cfg,
        data: Tensor::from_slice(tokens).to_device(model.device),
        windows: Windows { state: cfg.seed },
        max_start: tokens.len() - cfg.seq_len - 1,
        on_step,
        pending: None,
    };
    optimize(model, cfg, &mut objective)
}

/// One AdamW update with global-norm clipping; returns the gradient norm before clipping.
fn adamw_step(
    params: &[(Tensor, bool)],
    moments: &mut [(Tensor, Tensor)],
    cfg: &TrainConfig,
    step: usize,
    lr: f64,
) -> f64 {
    let grads: Vec<Option<Tensor>> = params
        .iter()
        .map(|(p, _)| Some(p.grad()).filter(Tensor::defined))
        .collect();
    let norm_sq: f64 = grads
        .iter()
        .flatten()
        .map(|g| f64_of(&g.square().sum(Kind::Double)))
        .sum();
    let grad_norm = norm_sq.sqrt();
    let scale = if cfg.grad_clip > 0.0 && grad_norm > cfg.grad_clip {
        cfg.grad_clip / (grad_norm + 1e-6)
    } else {
        1.0
    };
    let t = (step + 1) as i32;
    let (bc1, bc2) = (1.0 - cfg.beta1.powi(t), 1.0 - cfg.beta2.powi(t));
    for (((p, decay), (m, v)), g) in params.iter().zip(moments.iter_mut()).zip(&grads) {
        let Some(g) = g else { continue };
        let g = g * scale;
        *m = &*m * cfg.beta1 + &g * (1.0 - cfg.beta1);
        *v = &*v * cfg.beta2 + g.square() * (1.0 - cfg.beta2);
        let update = (&*m / bc1) / ((&*v / bc2).sqrt() + cfg.eps);
        let mut p = p.shallow_clone();
        if *decay && cfg.weight_decay > 0.0 {
            let _ = p.g_mul_scalar_(1.0 - lr * cfg.weight_decay);
        }
        let _ = p.g_sub_(&(update * lr));
    }
    grad_norm
}

/// Mean next-token negative log-likelihood (nats) of `model` on consecutive non-overlapping
/// windows of `tokens` (each window predicts its own positions 1..len): the held-out loss of
/// the training experiments. Perplexity is `exp` of it.
pub fn mean_nll(model: &Model, tokens: &[i64], seq_len: usize, batch_size: usize) -> f64 {
    let _guard = tch::no_grad_guard();
    let window = seq_len + 1;
    let windows: Vec<&[i64]> = tokens.chunks_exact(window).collect();
    let (mut total, mut count) = (0.0, 0usize);
    for group in windows.chunks(batch_size.max(1)) {
        let flat: Vec<i64> = group.concat();
        let batch = Tensor::from_slice(&flat)
            .to_device(model.device)
            .view([group.len() as i64, window as i64]);
        let logits = model.forward(&batch.narrow(1, 0, seq_len as i64), None, None);
        let nll = logits
            .view([-1, logits.size()[2]])
            .cross_entropy_loss::<Tensor>(
                &batch.narrow(1, 1, seq_len as i64).flatten(0, -1),
                None,
                Reduction::Sum,
                -100,
                0.0,
            );
        total += f64_of(&nll);
        count += group.len() * seq_len;
    }
    total / count.max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upcycle::{upcycle, UpcycleConfig};
    use std::path::Path;
    use tch::Device;

    fn fixture(name: &str) -> Model {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/tiny")
            .join(name);
        Model::load(&dir, Device::Cpu, Kind::Float).unwrap()
    }

    /// A periodic token stream a tiny model can learn quickly.
    fn pattern(len: usize) -> Vec<i64> {
        (0..len)
            .map(|i| [5i64, 9, 17, 33, 65, 9, 17][i % 7])
            .collect()
    }

    #[test]
    fn schedule_warms_up_then_decays_to_the_floor() {
        let cfg = TrainConfig {
            steps: 100,
            warmup_steps: 10,
            lr: 1.0,
            min_lr_ratio: 0.1,
            ..TrainConfig::default()
        };
        assert!((cfg.lr_at(0) - 0.1).abs() < 1e-12);
        assert!((cfg.lr_at(9) - 1.0).abs() < 1e-12);
        assert!((cfg.lr_at(10) - 1.0).abs() < 1e-12);
        assert!((cfg.lr_at(55) - 0.55).abs() < 1e-12);
        assert!((cfg.lr_at(100) - 0.1).abs() < 1e-12);
    }

    /// Switch load balancing is 1 for a perfectly balanced router and N for a collapsed one.
    #[test]
    fn load_balance_loss_hand_values() {
        let uniform = Tensor::zeros([1, 4, 4], (Kind::Float, Device::Cpu));
        let mask = Tensor::eye(4, (Kind::Bool, Device::Cpu)).view([1, 4, 4]);
        let (balance, z, entropy) = aux_losses(&uniform, &mask);
        assert!((f64_of(&balance) - 1.0).abs() < 1e-6);
        assert!((f64_of(&z) - 4f64.ln().powi(2)).abs() < 1e-5);
        assert!((f64_of(&entropy) - 4f64.ln()).abs() < 1e-6);
        let collapsed = Tensor::from_slice(&[50f32, 0.0, 0.0, 0.0])
            .view([1, 1, 4])
            .repeat([1, 4, 1]);
        let all_to_0 = collapsed.eq(50.0);
        let (balance, _, _) = aux_losses(&collapsed, &all_to_0);
        assert!((f64_of(&balance) - 4.0).abs() < 1e-4);
    }

    #[test]
    fn training_an_upcycled_model_lowers_the_loss_and_is_seeded() {
        let run = || {
            let mut model = fixture("llama");
            upcycle(&mut model, &UpcycleConfig::default()).unwrap();
            let cfg = TrainConfig {
                steps: 30,
                batch_size: 4,
                seq_len: 16,
                lr: 3e-3,
                warmup_steps: 3,
                seed: 7,
                ..TrainConfig::default()
            };
            let tokens = pattern(400);
            let before = mean_nll(&model, &tokens, 16, 8);
            let mut log = Vec::new();
            train(&model, &tokens, &cfg, &mut |s| log.push(s.clone())).unwrap();
            (before, mean_nll(&model, &tokens, 16, 8), log)
        };
        let (before, after, log) = run();
        assert_eq!(log.len(), 30);
        assert!(after < before * 0.7, "held-out NLL {before} → {after}");
        assert!(log.iter().all(|s| (s.active_mean - 2.0).abs() < 1e-9));
        assert_eq!(log[0].active_per_layer.len(), 2);
        let (_, again, _) = run();
        assert_eq!(after, again, "same seed, same result");
    }

    fn ptrs(ts: impl IntoIterator<Item = Tensor>) -> std::collections::BTreeSet<usize> {
        ts.into_iter().map(|t| t.data_ptr() as usize).collect()
    }

    /// The tagged list is the model's parameter list plus the selectors' (so freezing cannot
    /// miss a tensor the forward reads), for dense, MoE and shared-expert models.
    #[test]
    fn tagged_parameters_are_the_model_parameters() {
        for name in ["llama", "mixtral", "qwen2_moe"] {
            let model = fixture(name);
            let tagged = tagged_parameters(&model);
            assert_eq!(tagged.len(), model.parameters().len(), "{name}");
            assert_eq!(
                ptrs(tagged.into_iter().map(|p| p.tensor)),
                ptrs(model.parameters()),
                "{name}"
            );
        }
    }

    fn snapshot(model: &Model) -> Vec<(Option<usize>, Module, Tensor)> {
        tagged_parameters(model)
            .into_iter()
            .map(|p| (p.layer, p.module, p.tensor.copy()))
            .collect()
    }

    /// Frozen tensors are bit-identical after training; the trained ones moved.
    #[test]
    fn frozen_tensors_stay_bit_identical() {
        let mut model = fixture("llama");
        upcycle(&mut model, &UpcycleConfig::default()).unwrap();
        let before = snapshot(&model);
        let trainable = Trainable::only(&[Module::Router, Module::Attention]).in_layers([1]);
        let cfg = TrainConfig {
            steps: 4,
            batch_size: 2,
            seq_len: 8,
            lr: 1e-2,
            warmup_steps: 1,
            trainable: trainable.clone(),
            ..TrainConfig::default()
        };
        train(&model, &pattern(100), &cfg, &mut |_| {}).unwrap();
        let after = tagged_parameters(&model);
        let mut moved = 0;
        for ((layer, module, old), new) in before.iter().zip(&after) {
            if trainable.trains(*layer, *module) {
                moved += usize::from(!old.equal(&new.tensor));
            } else {
                assert!(
                    old.equal(&new.tensor),
                    "{module:?} of layer {layer:?} changed"
                );
            }
            assert!(!new.tensor.requires_grad());
        }
        // Layer 1: the router and q/k/v/o all train.
        assert_eq!(moved, 5);
    }

    #[test]
    fn trainable_selections_are_checked() {
        let model = fixture("llama");
        let run = |trainable: Trainable| {
            let cfg = TrainConfig {
                steps: 1,
                seq_len: 8,
                trainable,
                ..TrainConfig::default()
            };
            train(&model, &pattern(100), &cfg, &mut |_| {})
                .unwrap_err()
                .to_string()
        };
        let err = run(Trainable::routers());
        assert!(
            err.contains("selects [Router], which this model does not have"),
            "{err}"
        );
        let err = run(Trainable::all().in_layers([7]));
        assert!(
            err.contains("names layer 7, but the model has 2 layers"),
            "{err}"
        );
        let err = run(Trainable::only(&[]));
        assert!(
            err.contains("`trainable` selects nothing to train"),
            "{err}"
        );
        let bad = TrainConfig {
            beta2: 1.5,
            ..TrainConfig::default()
        };
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("`beta2` is 1.5"));
    }

    #[test]
    fn bad_settings_are_named() {
        let model = fixture("mixtral");
        let cfg = TrainConfig {
            seq_len: 64,
            ..TrainConfig::default()
        };
        let err = train(&model, &pattern(20), &cfg, &mut |_| {})
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`seq_len` is 64 but the training text has only 20 tokens"),
            "{err}"
        );
    }
}
