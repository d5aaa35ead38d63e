//! USMoE, the "unified" selection (Do, Le & Tran, arXiv 2503.22996; code giangdip2410/USMoE;
//! docs/methods.md §4.3): F = (1−r)·softmax_row(S) + r·(2/N)·sigmoid(S); in each group of n real
//! tokens keep the B = round(n·k̄) largest entries of the flattened n×N matrix F, so tokens and
//! experts share one budget. Non-causal in [`GroupMode::FullSequence`].
//!
//! Combine weights (§4.3 step 4, §4.7.2):
//! - code behaviour (default): F itself at the selected entries; when the checkpoint has
//!   `norm_topk_prob` ([`RouterNorm::SoftmaxTopkRenorm`]) the official code divides F by its
//!   row sum over **all** N experts after selection (`modeling_qwen2_moe.py`), and so does this;
//! - `renormalize` (documented variant): F rescaled to sum 1 over each token's selected experts.
use super::{real_tokens, selection, GroupBudget, GroupMode};
use moebench_model::config::RouterNorm;
use moebench_model::moe::{CalibratedState, Selection, Selector};
use tch::{Kind, Tensor};

#[derive(Debug, Clone)]
pub struct Usmoe {
    /// Budget k̄ in experts per token on average; may be fractional.
    pub k: f64,
    /// Weight r (= α) of the sigmoid (expert-choice) term.
    pub r: f64,
    pub renormalize: bool,
    pub norm: RouterNorm,
    pub mode: GroupMode,
}

impl Usmoe {
    pub fn new(k: f64, r: f64, renormalize: bool, norm: RouterNorm, mode: GroupMode) -> Self {
        Self {
            k,
            r,
            renormalize,
            norm,
            mode,
        }
    }

    /// The unified score F the selection ranks (and a causal threshold is fitted on).
    pub fn scores(&self, logits: &Tensor) -> Tensor {
        let n = logits.size()[logits.dim() - 1] as f64;
        let token_choice = logits.softmax(-1, Kind::Float);
        let expert_choice = logits.to_kind(Kind::Float).sigmoid() * (2.0 / n);
        token_choice * (1.0 - self.r) + expert_choice * self.r
    }

    fn weights_label(&self) -> &'static str {
        match (self.renormalize, self.norm) {
            (true, _) => "renorm_selected",
            (false, RouterNorm::SoftmaxTopkRenorm) => "row_normalised",
            (false, RouterNorm::SoftmaxTopk) => "raw",
        }
    }
}

impl Selector for Usmoe {
    fn describe(&self) -> String {
        format!(
            "usmoe(k={},r={},weights={},mode={})",
            self.k,
            self.r,
            self.weights_label(),
            self.mode.describe()
        )
    }

    fn select(&self, logits: &Tensor, token_mask: Option<&Tensor>) -> Selection {
        let scores = self.scores(logits);
        let budget = GroupBudget::Shared { per_token: self.k };
        let mask = self
            .mode
            .select(&scores, &real_tokens(logits, token_mask), budget);
        let weights = match (self.renormalize, self.norm) {
            (false, RouterNorm::SoftmaxTopkRenorm) => {
                &scores / scores.sum_dim_intlist(-1, true, Kind::Float)
            }
            _ => scores,
        };
        selection(&weights, mask, self.renormalize)
    }

    fn is_causal(&self) -> bool {
        self.mode.is_causal()
    }

    fn is_per_token(&self) -> bool {
        self.mode.is_per_token()
    }

    /// A causal threshold (fitted on calibration data) is what a saved router must record; the
    /// scores are not rescaled.
    fn calibrated_state(&self) -> Option<CalibratedState> {
        match self.mode {
            GroupMode::Causal { threshold } => Some(CalibratedState {
                threshold,
                scale: 1.0,
            }),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use moebench_model::moe::TopK;
    use tch::Device;

    fn total(s: &Selection) -> i64 {
        i64::try_from(s.active_counts().sum(Kind::Int64)).unwrap()
    }

    #[test]
    fn budget_t_times_k_uses_exactly_t_times_k_slots() {
        tch::manual_seed(31);
        let logits = Tensor::randn([2, 5, 6], (Kind::Float, Device::Cpu));
        for mode in [GroupMode::FullSequence, GroupMode::DecodeBatch] {
            let s =
                Usmoe::new(2.0, 0.5, false, RouterNorm::SoftmaxTopk, mode).select(&logits, None);
            assert_eq!(total(&s), 2 * 5 * 2, "{mode:?}");
        }
        // Fractional budget: round(5·1.5) = 8 per sequence.
        let s = Usmoe::new(
            1.5,
            0.5,
            false,
            RouterNorm::SoftmaxTopk,
            GroupMode::FullSequence,
        )
        .select(&logits, None);
        assert_eq!(total(&s), 16);
    }

    #[test]
    fn selects_the_globally_largest_unified_scores() {
        tch::manual_seed(32);
        let logits = Tensor::randn([1, 4, 3], (Kind::Float, Device::Cpu));
        let u = Usmoe::new(
            1.0,
            0.5,
            false,
            RouterNorm::SoftmaxTopk,
            GroupMode::FullSequence,
        );
        let s = u.select(&logits, None);
        let f = u.scores(&logits);
        let kth = f.flatten(0, -1).topk(4, 0, true, true).0.min();
        assert!(s.mask.equal(&f.ge_tensor(&kth)));
        assert!(s.weights.equal(&(f * s.mask.to_kind(Kind::Float))));
    }

    #[test]
    fn r_zero_with_a_per_token_budget_is_topk() {
        tch::manual_seed(33);
        // Decode-batch mode with one sequence: every group is a single token, budget k.
        let logits = Tensor::randn([1, 7, 6], (Kind::Float, Device::Cpu));
        for (renormalize, norm) in [
            (true, RouterNorm::SoftmaxTopkRenorm),
            (false, RouterNorm::SoftmaxTopk),
        ] {
            let u = Usmoe::new(2.0, 0.0, renormalize, norm, GroupMode::DecodeBatch);
            let s = u.select(&logits, None);
            let t = TopK { k: 2, norm }.select(&logits, None);
            assert!(s.mask.equal(&t.mask), "{norm:?}");
            assert!(
                s.weights.allclose(&t.weights, 1e-5, 1e-6, false),
                "{norm:?}"
            );
        }
    }

    #[test]
    fn norm_topk_prob_divides_by_the_row_sum_over_all_experts() {
        tch::manual_seed(34);
        let logits = Tensor::randn([1, 4, 5], (Kind::Float, Device::Cpu));
        let u = Usmoe::new(
            2.0,
            0.5,
            false,
            RouterNorm::SoftmaxTopkRenorm,
            GroupMode::FullSequence,
        );
        let s = u.select(&logits, None);
        let f = u.scores(&logits);
        let expected = &f / f.sum_dim_intlist(-1, true, Kind::Float) * s.mask.to_kind(Kind::Float);
        assert!(s.weights.allclose(&expected, 1e-6, 1e-7, false));
    }

    #[test]
    fn padding_takes_no_budget_and_leaves_real_choices_alone() {
        tch::manual_seed(35);
        let real = Tensor::randn([1, 5, 4], (Kind::Float, Device::Cpu));
        let pad = Tensor::full([1, 3, 4], 20.0, (Kind::Float, Device::Cpu));
        let padded = Tensor::cat(&[&pad, &real], 1);
        let token_mask = Tensor::cat(
            &[
                Tensor::zeros([1, 3], (Kind::Bool, Device::Cpu)),
                Tensor::ones([1, 5], (Kind::Bool, Device::Cpu)),
            ],
            1,
        );
        let u = Usmoe::new(
            1.5,
            0.5,
            false,
            RouterNorm::SoftmaxTopk,
            GroupMode::FullSequence,
        );
        let alone = u.select(&real, None);
        let with_pad = u.select(&padded, Some(&token_mask));
        assert!(with_pad.mask.narrow(1, 3, 5).equal(&alone.mask));
        assert_eq!(total(&with_pad), 8);
    }

    #[test]
    fn weights_carry_gradient_to_the_logits() {
        let logits = Tensor::randn([1, 3, 4], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let u = Usmoe::new(
            1.0,
            0.5,
            false,
            RouterNorm::SoftmaxTopk,
            GroupMode::FullSequence,
        );
        let ramp = Tensor::arange_start(1, 5, (Kind::Float, Device::Cpu));
        (u.select(&logits, None).weights * ramp)
            .sum(Kind::Float)
            .backward();
        assert!(f64::try_from(logits.grad().abs().sum(Kind::Float)).unwrap() > 0.0);
    }
}
