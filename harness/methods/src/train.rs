//! Training loop for MoE models (tch autograd): AdamW (Loshchilov & Hutter, decoupled weight
//! decay), linear warm-up then cosine decay, global-norm gradient clipping, seeded data order,
//! and the MoE losses of METHODS.md §7.3/§7.5/§5.3: LM loss + Switch load balancing
//! `α·N·Σ f_j·P̄_j` + router z-loss `β·mean(logsumexp(z)²)` + Huang et al.'s dynamic loss
//! (router entropy, minimised). After every optimizer step the caller's `on_step` sees the
//! measured active-expert counts — that is where DTop-p's PI controller steps (§5.3 step 3).
//!
//! Enough to pre-train a tiny MoE from scratch and to continue-train an upcycled model on CPU.
use crate::error::{MethodError, Result};
use moebench_model::moe::MoeLayer;
use moebench_model::observer::{ForwardObserver, MoeEvent};
use moebench_model::{Ffn, ForwardOptions, Model};
use serde::Serialize;
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
    /// Switch load-balancing coefficient α (METHODS.md §7.3).
    pub load_balance_coef: f64,
    /// Router z-loss coefficient β (0 for DTop-p, §5.3 step 5).
    pub z_loss_coef: f64,
    /// Huang et al.'s dynamic (entropy) loss coefficient (§7.5).
    pub entropy_coef: f64,
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

    fn check(&self, tokens: usize) -> Result<()> {
        let positive = [
            ("steps", self.steps),
            ("batch_size", self.batch_size),
            ("seq_len", self.seq_len),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(MethodError::param(METHOD, name, "must be positive"));
        }
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
        if self.lr.is_nan() || self.lr <= 0.0 {
            return Err(MethodError::param(METHOD, "lr", "must be positive"));
        }
        Ok(())
    }
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

/// The trainable tensors of `model` and its selectors, and whether each gets weight decay.
fn parameters(model: &Model) -> Vec<(Tensor, bool)> {
    let mut params: Vec<(Tensor, bool)> = model
        .parameters()
        .into_iter()
        .map(|t| {
            let decay = t.dim() >= 2;
            (t, decay)
        })
        .collect();
    for block in &model.layers {
        if let Ffn::Moe(moe) = &block.ffn {
            params.extend(moe.selector.parameters().into_iter().map(|t| (t, false)));
        }
    }
    params
}

fn f64_of(t: &Tensor) -> f64 {
    f64::try_from(t).expect("scalar tensor")
}

/// Trains `model` in place on windows of `tokens`, calling `on_step` after every optimizer step.
/// The model must be in f32.
pub fn train(
    model: &Model,
    tokens: &[i64],
    cfg: &TrainConfig,
    on_step: &mut dyn FnMut(&StepStats),
) -> Result<()> {
    cfg.check(tokens.len())?;
    if model.kind != Kind::Float {
        return Err(MethodError::unsupported(
            METHOD,
            "training needs f32 weights (load the model with --dtype f32)",
        ));
    }
    let params = parameters(model);
    for (p, _) in &params {
        let _ = p.set_requires_grad(true);
    }
    let mut moments: Vec<(Tensor, Tensor)> = params
        .iter()
        .map(|(p, _)| (p.zeros_like(), p.zeros_like()))
        .collect();
    let data = Tensor::from_slice(tokens).to_device(model.device);
    let mut windows = Windows { state: cfg.seed };
    let max_start = tokens.len() - cfg.seq_len - 1;
    for step in 0..cfg.steps {
        let starts: Vec<i64> = (0..cfg.batch_size)
            .map(|_| windows.next_start(max_start) as i64)
            .collect();
        let offsets = Tensor::arange((cfg.seq_len + 1) as i64, (Kind::Int64, model.device));
        let index = Tensor::from_slice(&starts)
            .to_device(model.device)
            .unsqueeze(1)
            + offsets.unsqueeze(0);
        let batch = data
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
        let mut active_per_layer = Vec::with_capacity(record.layers.len());
        let mut counts_all = Vec::with_capacity(record.layers.len());
        for (layer_logits, mask) in &record.layers {
            let (b, zl, e) = aux_losses(layer_logits, mask);
            balance += b;
            z += zl;
            entropy += e;
            let counts = mask.sum_dim_intlist(-1, false, Kind::Float).flatten(0, -1);
            active_per_layer.push(f64_of(&counts.mean(Kind::Float)));
            counts_all.push(counts);
        }
        let layers = record.layers.len().max(1) as f64;
        let (balance, z, entropy) = (balance / layers, z / layers, entropy / layers);
        let loss = &lm_loss
            + &balance * cfg.load_balance_coef
            + &z * cfg.z_loss_coef
            + &entropy * cfg.entropy_coef;
        for (p, _) in &params {
            let mut p = p.shallow_clone();
            p.zero_grad();
        }
        loss.backward();
        let lr = cfg.lr_at(step);
        let grad_norm = tch::no_grad(|| adamw_step(&params, &mut moments, cfg, step, lr));
        let (active_mean, active_std) = if counts_all.is_empty() {
            (0.0, 0.0)
        } else {
            let all = Tensor::cat(&counts_all, 0);
            (f64_of(&all.mean(Kind::Float)), f64_of(&all.std(false)))
        };
        on_step(&StepStats {
            step,
            lr,
            loss: f64_of(&loss),
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
    for (p, _) in &params {
        let _ = p.set_requires_grad(false);
    }
    Ok(())
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
