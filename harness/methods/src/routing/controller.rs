//! The PI controller of DTop-p (Jin et al., arXiv 2512.13996; docs/methods.md §5.3 step 3): once per
//! training (or calibration) step it moves the Top-p threshold p so that the mean number of
//! active experts per token tracks the target T. It runs outside the gradient.
//!
//! The paper gives neither the gains nor p0 (§5.4). The defaults here are **inferred**: p0 = 0.5,
//! Kp = 0.5, Ki = 0.3 on the normalised error e = (T − a)/N, chosen on the synthetic router of
//! the tests (64 tokens × 16 experts, DTop-p with unit scale): a approaches T from one side and
//! is within one token in 64 of it after about 50 steps, also after T changes from 2 to 4. In
//! the positional form the proportional term alone makes p alternate around the set point with
//! ratio about Kp·(da/dp)/N; with Kp = 2, Ki = 0.2 that router alternated and, at T = 4, locked
//! into a 1 ↔ 14 experts limit cycle. So Kp stays below the 1–5 of docs/methods.md §5.4 and the
//! integral does the tracking.

/// A controller shared by the DTop-p selectors that read its p (all layers, or one).
pub type SharedController = std::sync::Arc<std::sync::Mutex<PiController>>;

/// Positional PI update `p = p0 + Kp·e + Ki·Σe`, clipped to `[p_min, p_max]`.
#[derive(Debug, Clone, PartialEq)]
pub struct PiController {
    pub p0: f64,
    pub kp: f64,
    pub ki: f64,
    /// Target mean active experts per token, T.
    pub target: f64,
    /// N, which normalises the error.
    pub num_experts: i64,
    /// Σe over the steps taken so far.
    pub integral: f64,
    /// The current threshold, read by the selectors on every forward.
    pub p: f64,
    pub p_min: f64,
    pub p_max: f64,
    /// Frozen: the selectors stop recording measurements and `step` does nothing (inference
    /// uses the final p*, §5.3 step 6).
    pub frozen: bool,
    /// Active (token, expert) pairs and real tokens recorded since the last step.
    active: f64,
    tokens: f64,
}

impl PiController {
    /// The inferred defaults (module docs), p clipped to [1e-3, 1] (§5.7 leaves the range open;
    /// p = 0 would be meaningless and p ≥ 1 already selects every expert).
    pub fn new(target: f64, num_experts: i64) -> Self {
        Self::with_gains(target, num_experts, 0.5, 0.5, 0.3)
    }

    pub fn with_gains(target: f64, num_experts: i64, p0: f64, kp: f64, ki: f64) -> Self {
        let (p_min, p_max) = (1e-3, 1.0);
        Self {
            p0,
            kp,
            ki,
            target,
            num_experts,
            integral: 0.0,
            p: p0.clamp(p_min, p_max),
            p_min,
            p_max,
            frozen: false,
            active: 0.0,
            tokens: 0.0,
        }
    }

    /// One controller step from the measured mean active experts `a`; returns the new p.
    /// Anti-windup by conditional integration [inferred, standard]: when the output saturates
    /// and this step's error pushes further into the limit, that step's error is not
    /// accumulated, so the integral does not wind up while p sits at a bound.
    pub fn update(&mut self, measured_mean_active: f64) -> f64 {
        let e = (self.target - measured_mean_active) / self.num_experts as f64;
        self.integral += e;
        let raw = self.p0 + self.kp * e + self.ki * self.integral;
        if (raw > self.p_max && e > 0.0) || (raw < self.p_min && e < 0.0) {
            self.integral -= e;
        }
        self.p = (self.p0 + self.kp * e + self.ki * self.integral).clamp(self.p_min, self.p_max);
        self.p
    }

    /// Adds one selector call's counts (all real tokens of one layer) to the current step's
    /// measurement; with a global controller this aggregates over every MoE layer (§5.3 step 3).
    pub fn record(&mut self, active_pairs: f64, real_tokens: f64) {
        if !self.frozen {
            self.active += active_pairs;
            self.tokens += real_tokens;
        }
    }

    /// The mean active experts per token recorded since the last step, if any.
    pub fn measured(&self) -> Option<f64> {
        (self.tokens > 0.0).then(|| self.active / self.tokens)
    }

    /// Updates from what the selectors recorded since the last step, then clears it. Returns
    /// the new p, or None when frozen or nothing was recorded.
    pub fn step(&mut self) -> Option<f64> {
        let a = self.measured().filter(|_| !self.frozen)?;
        self.active = 0.0;
        self.tokens = 0.0;
        Some(self.update(a))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn update_follows_the_positional_pi_law() {
        let mut c = PiController::with_gains(2.0, 10, 0.5, 1.0, 0.1);
        // e = (2 − 4)/10 = −0.2: p = 0.5 − 0.2 − 0.02.
        assert!((c.update(4.0) - 0.28).abs() < 1e-12);
        // e = −0.2 again: integral −0.4.
        assert!((c.update(4.0) - 0.26).abs() < 1e-12);
    }

    #[test]
    fn saturation_does_not_wind_up_the_integral() {
        let mut c = PiController::with_gains(8.0, 8, 0.9, 1.0, 0.5);
        for _ in 0..100 {
            assert_eq!(c.update(1.0), 1.0);
        }
        // Only the steps before saturation accumulated, so one overshoot brings p straight down.
        assert_eq!(c.integral, 0.0);
        assert!(c.update(8.0) < 1.0);
    }

    #[test]
    fn step_uses_recorded_counts_and_respects_freeze() {
        let mut c = PiController::new(2.0, 16);
        assert_eq!(c.step(), None);
        c.record(30.0, 10.0);
        c.record(10.0, 10.0);
        assert_eq!(c.measured(), Some(2.0));
        assert_eq!(c.step(), Some(0.5));
        assert_eq!(c.measured(), None);
        c.frozen = true;
        c.record(100.0, 10.0);
        assert_eq!((c.measured(), c.step(), c.p), (None, None, 0.5));
    }
}
