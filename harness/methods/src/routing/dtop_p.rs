//! DTop-p routing (Jin et al., arXiv 2512.13996; docs/methods.md §5.3): standardise each token's
//! logits over the experts, ẑ = (z − mean)/(std + ε), scale by a learnable positive per-layer
//! s_ℓ = exp(log_s), P = softmax(s_ℓ·ẑ), keep the Top-p set with the crossing expert (strict
//! `>`, the same rule as the Huang et al. baseline, §5.7) and renormalise over it. p comes from
//! a [`PiController`] shared by all layers (global variant) or one per layer (per-layer variant).
//!
//! The "calibrated, no training" retrofit (§5.6) fixes s_ℓ to the standard deviation of the
//! layer's raw logits ([`measure_logit_std`]), so P is close to the checkpoint's softmax. The
//! calibration loop lives with the caller: run calibration batches without gradient, call
//! [`PiController::step`] after each, and freeze the controller once the mean settles at T.
use super::controller::{PiController, SharedController};
use super::topp::top_p_mask;
use super::{real_tokens, selection};
use crate::error::{MethodError, Result};
use moebench_model::moe::{CalibratedState, Selection, Selector};
use std::sync::{Arc, Mutex};
use tch::{Kind, Tensor};

/// Guards the standardisation against a token whose logits are all equal.
const STD_EPS: f64 = 1e-6;

/// How to build the DTop-p selectors and controllers of a model.
#[derive(Debug, Clone, PartialEq)]
pub struct DTopPConfig {
    pub num_experts: i64,
    /// Target mean active experts per token T (the Top-k baseline's k, for equal FLOPs).
    pub target: f64,
    pub p0: f64,
    pub kp: f64,
    pub ki: f64,
    /// One controller per layer instead of one for all layers (§5.3 step 4).
    pub per_layer: bool,
    /// One fixed scale per MoE layer (the calibrated variant); None learns s_ℓ from s = 1.
    pub fixed_scales: Option<Vec<f64>>,
    /// §5.3 step 1's dynamic routing normalisation: standardise each token's logits over the
    /// experts before the scale s_ℓ. Off (ablation): `P = softmax(s_ℓ·z)` on the raw logits,
    /// i.e. Top-p with a learned temperature.
    pub standardize: bool,
    /// §5.3 step 2: renormalise the combine weights over the selected experts. Off (ablation):
    /// the raw P, as Huang et al.'s fixed Top-p uses (§5.7).
    pub renormalize: bool,
}

impl DTopPConfig {
    /// The global, trained variant with the controller's inferred default gains.
    pub fn new(num_experts: i64, target: f64) -> Self {
        let c = PiController::new(target, num_experts);
        Self {
            num_experts,
            target,
            p0: c.p0,
            kp: c.kp,
            ki: c.ki,
            per_layer: false,
            fixed_scales: None,
            standardize: true,
            renormalize: true,
        }
    }

    /// Checks ranges (§5.4 leaves the gains open, so only their signs are constrained): T in
    /// [1, N], p0 in (0, 1], Kp, Ki ≥ 0, fixed scales > 0.
    pub fn validate(&self) -> Result<()> {
        let bad = |param: &str, msg: String| Err(MethodError::param("dtop_p", param, msg));
        if !(self.target >= 1.0 && self.target <= self.num_experts as f64) {
            return bad(
                "target",
                format!("is {}; allowed: [1, {}]", self.target, self.num_experts),
            );
        }
        if !(self.p0 > 0.0 && self.p0 <= 1.0) {
            return bad("p0", format!("is {}; allowed: (0, 1]", self.p0));
        }
        for (name, v) in [("kp", self.kp), ("ki", self.ki)] {
            if !(v.is_finite() && v >= 0.0) {
                return bad(name, format!("is {v}; it must be finite and ≥ 0"));
            }
        }
        if let Some(s) = self
            .fixed_scales
            .iter()
            .flatten()
            .find(|s| !(s.is_finite() && **s > 0.0))
        {
            return bad("fixed_scales", format!("holds {s}; scales must be > 0"));
        }
        Ok(())
    }

    fn controller(&self) -> SharedController {
        Arc::new(Mutex::new(PiController::with_gains(
            self.target,
            self.num_experts,
            self.p0,
            self.kp,
            self.ki,
        )))
    }
}

#[derive(Debug)]
pub struct DTopP {
    /// log s_ℓ, a scalar f32 leaf with `requires_grad` (behind a mutex because `Tensor` is not
    /// `Sync`); unused when `fixed_scale` is set.
    log_s: Mutex<Tensor>,
    fixed_scale: Option<f64>,
    controller: SharedController,
    per_layer: bool,
    standardize: bool,
    renormalize: bool,
}

impl DTopP {
    /// A selector reading p from `controller`; `fixed_scale` None learns s from s = 1. The
    /// paper's normalisation (standardised logits, renormalised weights).
    pub fn new(controller: SharedController, fixed_scale: Option<f64>, per_layer: bool) -> Self {
        let log_s = Tensor::zeros([], (Kind::Float, tch::Device::Cpu))
            .set_requires_grad(fixed_scale.is_none());
        Self {
            log_s: Mutex::new(log_s),
            fixed_scale,
            controller,
            per_layer,
            standardize: true,
            renormalize: true,
        }
    }

    /// The same selector with the ablation switches of [`DTopPConfig`].
    pub fn with_normalisation(mut self, standardize: bool, renormalize: bool) -> Self {
        self.standardize = standardize;
        self.renormalize = renormalize;
        self
    }

    /// One selector per MoE layer and the controllers to step: one shared by every layer, or
    /// one per layer with `per_layer`.
    pub fn for_model(
        num_moe_layers: usize,
        cfg: &DTopPConfig,
    ) -> Result<(Vec<Arc<DTopP>>, Vec<SharedController>)> {
        cfg.validate()?;
        if let Some(scales) = &cfg.fixed_scales {
            if scales.len() != num_moe_layers {
                return Err(MethodError::param(
                    "dtop_p",
                    "fixed_scales",
                    format!(
                        "has {} values for {num_moe_layers} MoE layers",
                        scales.len()
                    ),
                ));
            }
        }
        let controllers: Vec<_> = if cfg.per_layer {
            (0..num_moe_layers).map(|_| cfg.controller()).collect()
        } else {
            vec![cfg.controller()]
        };
        let selectors = (0..num_moe_layers)
            .map(|l| {
                let controller = controllers[if cfg.per_layer { l } else { 0 }].clone();
                let scale = cfg.fixed_scales.as_ref().map(|s| s[l]);
                Arc::new(
                    DTopP::new(controller, scale, cfg.per_layer)
                        .with_normalisation(cfg.standardize, cfg.renormalize),
                )
            })
            .collect();
        Ok((selectors, controllers))
    }

    /// The controller this layer reads p from.
    pub fn controller(&self) -> &SharedController {
        &self.controller
    }

    /// The current s_ℓ.
    pub fn scale(&self) -> f64 {
        self.fixed_scale
            .unwrap_or_else(|| f64::try_from(self.log_s.lock().unwrap().exp()).expect("scalar"))
    }
}

impl Selector for DTopP {
    fn describe(&self) -> String {
        let p = self.controller.lock().unwrap().p;
        let (variant, scale) = match self.fixed_scale {
            Some(s) => ("calibrated", s),
            None => ("trained", self.scale()),
        };
        let controller = if self.per_layer {
            "per_layer"
        } else {
            "global"
        };
        let mut ablations = String::new();
        if !self.standardize {
            ablations.push_str(",raw_logits");
        }
        if !self.renormalize {
            ablations.push_str(",raw_weights");
        }
        format!("dtop_p(p={p:.4},s={scale:.4},{controller},{variant}{ablations})")
    }

    fn select(&self, logits: &Tensor, token_mask: Option<&Tensor>) -> Selection {
        let z_hat = if self.standardize {
            let mean = logits.mean_dim(-1, true, Kind::Float);
            let std = logits.std_dim(-1, false, true);
            (logits - mean) / (std + STD_EPS)
        } else {
            logits.shallow_clone()
        };
        let scaled = match self.fixed_scale {
            Some(s) => z_hat * s,
            // `to_device` is differentiable: the gradient reaches the CPU leaf from any device.
            None => z_hat * self.log_s.lock().unwrap().to_device(logits.device()).exp(),
        };
        let probs = scaled.softmax(-1, Kind::Float);
        let p = self.controller.lock().unwrap().p;
        let real = real_tokens(logits, token_mask);
        let mask = top_p_mask(&probs, p).logical_and(&real.unsqueeze(-1));
        // Counting needs a host sync, so a frozen controller (inference) skips it.
        let mut controller = self.controller.lock().unwrap();
        if !controller.frozen {
            let active = f64::try_from(mask.sum(Kind::Double)).expect("scalar");
            let tokens = f64::try_from(real.sum(Kind::Double)).expect("scalar");
            controller.record(active, tokens);
        }
        selection(&probs, mask, self.renormalize)
    }

    fn parameters(&self) -> Vec<Tensor> {
        match self.fixed_scale {
            Some(_) => Vec::new(),
            None => vec![self.log_s.lock().unwrap().shallow_clone()],
        }
    }

    fn calibrated_state(&self) -> Option<CalibratedState> {
        Some(CalibratedState {
            threshold: self.controller.lock().unwrap().p,
            scale: self.scale(),
        })
    }
}

/// Mean over real tokens of the per-token standard deviation of the raw logits: the fixed
/// s_ℓ of the calibrated variant, which undoes the standardisation on average (§5.6).
pub fn measure_logit_std(logits: &Tensor, token_mask: Option<&Tensor>) -> f64 {
    let real = real_tokens(logits, token_mask).to_kind(Kind::Double);
    let std = logits
        .detach()
        .std_dim(-1, false, false)
        .to_kind(Kind::Double);
    f64::try_from((std * &real).sum(Kind::Double) / real.sum(Kind::Double).clamp_min(1.0))
        .expect("scalar")
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn fixed_p(p: f64, n: i64) -> SharedController {
        Arc::new(Mutex::new(PiController::with_gains(2.0, n, p, 0.0, 0.0)))
    }

    #[test]
    fn p_one_selects_all_with_weights_summing_to_one() {
        tch::manual_seed(5);
        let logits = Tensor::randn([2, 3, 6], (Kind::Float, Device::Cpu));
        let s = DTopP::new(fixed_p(1.0, 6), None, false).select(&logits, None);
        assert_eq!(i64::try_from(s.active_counts().min()).unwrap(), 6);
        let sums = s.weights.sum_dim_intlist(-1, false, Kind::Float);
        assert!(sums.allclose(&sums.ones_like(), 1e-5, 1e-6, false));
    }

    #[test]
    fn renormalised_over_the_selected_set_and_padding_excluded() {
        tch::manual_seed(6);
        let logits = Tensor::randn([1, 4, 8], (Kind::Float, Device::Cpu));
        let token_mask = Tensor::from_slice(&[true, true, false, true]).view([1, 4]);
        let controller = fixed_p(0.3, 8);
        let s = DTopP::new(controller.clone(), None, false).select(&logits, Some(&token_mask));
        let counts: Vec<i64> = Vec::try_from(s.active_counts().flatten(0, -1)).unwrap();
        assert_eq!(counts[2], 0);
        assert!(counts
            .iter()
            .enumerate()
            .all(|(t, &c)| t == 2 || (1..8).contains(&c)));
        let sums: Vec<f32> = Vec::try_from(
            s.weights
                .sum_dim_intlist(-1, false, Kind::Float)
                .flatten(0, -1),
        )
        .unwrap();
        for (t, sum) in sums.iter().enumerate() {
            let expected = if t == 2 { 0.0 } else { 1.0 };
            assert!((sum - expected).abs() < 1e-5, "token {t}: {sum}");
        }
        let total: i64 = counts.iter().sum();
        assert_eq!(
            controller.lock().unwrap().measured(),
            Some(total as f64 / 3.0)
        );
    }

    #[test]
    fn gradient_reaches_log_s() {
        tch::manual_seed(7);
        let logits = Tensor::randn([1, 4, 8], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let dtopp = DTopP::new(fixed_p(0.6, 8), None, false);
        let s = dtopp.select(&logits, None);
        let ramp = Tensor::arange(8, (Kind::Float, Device::Cpu));
        (s.weights * ramp).sum(Kind::Float).backward();
        let grad = dtopp.parameters()[0].grad();
        assert!(grad.defined());
        assert!(f64::try_from(grad.abs()).unwrap() > 1e-6);
        assert!(logits.grad().defined());
    }

    #[test]
    fn calibrated_scale_equal_to_the_logit_std_reproduces_the_softmax() {
        // With equal per-token stds, s = std undoes the standardisation exactly.
        let logits = Tensor::from_slice(&[3.0f32, 1.0, 0.0, 0.0, 1.0, 3.0]).view([2, 1, 3]);
        let std = measure_logit_std(&logits, None);
        let dtopp = DTopP::new(fixed_p(1.0, 3), Some(std), false);
        assert!(dtopp.parameters().is_empty());
        let s = dtopp.select(&logits, None);
        let expected = logits.softmax(-1, Kind::Float);
        assert!(s.weights.allclose(&expected, 1e-4, 1e-5, false));
    }

    /// The ablation switches (§5.3 steps 1–2): without standardisation P is the softmax of the
    /// scaled raw logits; without renormalisation the weights are P itself at the selection.
    #[test]
    fn normalisation_switches() {
        tch::manual_seed(8);
        let logits = Tensor::randn([1, 3, 6], (Kind::Float, Device::Cpu)) * 3.0;
        let raw = DTopP::new(fixed_p(0.5, 6), Some(0.7), false).with_normalisation(false, false);
        let s = raw.select(&logits, None);
        let probs = (&logits * 0.7).softmax(-1, Kind::Float);
        let expected = &probs * s.mask.to_kind(Kind::Float);
        assert!(s.weights.allclose(&expected, 1e-6, 1e-7, false));
        assert!(
            raw.describe().ends_with(",raw_logits,raw_weights)"),
            "{}",
            raw.describe()
        );
        let paper = DTopP::new(fixed_p(0.5, 6), Some(0.7), false);
        assert!(!paper.describe().contains("raw"));
        let sums = paper
            .select(&logits, None)
            .weights
            .sum_dim_intlist(-1, false, Kind::Float);
        assert!(sums.allclose(&sums.ones_like(), 1e-5, 1e-6, false));
        let bad = DTopPConfig {
            p0: 0.0,
            ..DTopPConfig::new(6, 2.0)
        };
        let err = DTopP::for_model(1, &bad).unwrap_err().to_string();
        assert!(err.contains("`p0` is 0; allowed: (0, 1]"), "{err}");
    }

    /// Mean active experts of the synthetic router at the controller's current p.
    fn measure(selectors: &[Arc<DTopP>], logits: &[Tensor]) -> Vec<f64> {
        selectors
            .iter()
            .zip(logits)
            .map(|(s, l)| {
                let counts = s.select(l, None).active_counts();
                f64::try_from(counts.to_kind(Kind::Double).mean(Kind::Double)).unwrap()
            })
            .collect()
    }

    /// Runs `steps` controller steps; returns the measured mean per step (all layers together).
    fn run(
        selectors: &[Arc<DTopP>],
        controllers: &[SharedController],
        logits: &[Tensor],
        steps: usize,
    ) -> Vec<Vec<f64>> {
        (0..steps)
            .map(|_| {
                let a = measure(selectors, logits);
                for c in controllers {
                    c.lock().unwrap().step().unwrap();
                }
                a
            })
            .collect()
    }

    /// Within 0.1 of the target at the end and from step 50 on, and no sustained oscillation:
    /// the error changes sign at most 3 times after step 50, not counting the ±1-token
    /// flicker (|a − T| ≤ 0.05) a 64-token router shows when no p gives exactly T.
    fn assert_settles(trace: &[f64], target: f64) {
        let last = *trace.last().unwrap();
        assert!(
            (last - target).abs() < 0.1,
            "ended at {last}, target {target}"
        );
        let tail: Vec<f64> = trace[50..].iter().map(|a| a - target).collect();
        assert!(tail.iter().all(|e| e.abs() < 0.1), "{trace:?}");
        let outside: Vec<f64> = tail.into_iter().filter(|e| e.abs() > 0.05).collect();
        let sign_changes = outside.windows(2).filter(|w| w[0] * w[1] < 0.0).count();
        assert!(sign_changes <= 3, "{sign_changes} sign changes: {trace:?}");
    }

    #[test]
    fn global_controller_tracks_the_target_and_a_changed_target() {
        tch::manual_seed(11);
        let logits = vec![Tensor::randn([1, 64, 16], (Kind::Float, Device::Cpu))];
        let (selectors, controllers) = DTopP::for_model(1, &DTopPConfig::new(16, 2.0)).unwrap();
        let trace: Vec<f64> = run(&selectors, &controllers, &logits, 200).concat();
        assert_settles(&trace, 2.0);
        controllers[0].lock().unwrap().target = 4.0;
        let trace: Vec<f64> = run(&selectors, &controllers, &logits, 200).concat();
        assert_settles(&trace, 4.0);
    }

    #[test]
    fn per_layer_controllers_each_reach_their_own_target() {
        tch::manual_seed(12);
        // Layers with sharper and flatter routers: the standardisation removes the logit scale,
        // so make the layers differ in shape instead (a heavy top expert vs. Gaussian).
        let flat = Tensor::randn([1, 64, 16], (Kind::Float, Device::Cpu));
        let peaked = flat.copy();
        let _ = peaked.narrow(-1, 0, 1).g_add_scalar_(6.0);
        let logits = vec![flat, peaked];
        let cfg = DTopPConfig {
            per_layer: true,
            ..DTopPConfig::new(16, 3.0)
        };
        let (selectors, controllers) = DTopP::for_model(2, &cfg).unwrap();
        controllers[1].lock().unwrap().target = 1.5;
        let traces = run(&selectors, &controllers, &logits, 200);
        for (layer, target) in [(0, 3.0), (1, 1.5)] {
            let trace: Vec<f64> = traces.iter().map(|a| a[layer]).collect();
            assert_settles(&trace, target);
        }
        let (p0, p1) = (
            controllers[0].lock().unwrap().p,
            controllers[1].lock().unwrap().p,
        );
        assert!(p0 != p1);
    }
}
