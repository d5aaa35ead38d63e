//! Expert Choice routing (Zhou et al., NeurIPS 2022, arXiv 2202.09368; docs/methods.md §7.4):
//! S = softmax over experts; in a group of n real tokens each expert takes the k_e =
//! round(n·c/N) tokens (at most n) with the largest S in its column; a token's weights are S at
//! the experts that chose it, so it may get 0 or many experts. Non-causal in
//! [`GroupMode::FullSequence`].
use super::{real_tokens, selection, GroupBudget, GroupMode};
use moebench_model::moe::{CalibratedState, Selection, Selector};
use tch::{Kind, Tensor};

#[derive(Debug, Clone)]
pub struct ExpertChoice {
    /// Capacity factor c: experts per token on average (c = k matches TopK(k)'s FLOPs).
    pub capacity: f64,
    pub mode: GroupMode,
}

impl ExpertChoice {
    pub fn new(capacity: f64, mode: GroupMode) -> Self {
        Self { capacity, mode }
    }

    /// The scores the selection ranks (and a causal threshold is fitted on): softmax over experts.
    pub fn scores(&self, logits: &Tensor) -> Tensor {
        logits.softmax(-1, Kind::Float)
    }
}

impl Selector for ExpertChoice {
    fn describe(&self) -> String {
        format!(
            "expert_choice(c={},mode={})",
            self.capacity,
            self.mode.describe()
        )
    }

    fn select(&self, logits: &Tensor, token_mask: Option<&Tensor>) -> Selection {
        let scores = self.scores(logits);
        let budget = GroupBudget::PerExpert {
            capacity: self.capacity,
        };
        let mask = self
            .mode
            .select(&scores, &real_tokens(logits, token_mask), budget);
        selection(&scores, mask, false)
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
    use tch::Device;

    fn total(s: &Selection) -> i64 {
        i64::try_from(s.active_counts().sum(Kind::Int64)).unwrap()
    }

    #[test]
    fn capacity_k_uses_exactly_t_times_k_slots_per_group() {
        tch::manual_seed(21);
        // Groups of 8 tokens (sequences) or 4 tokens (positions), both divisible by N = 4.
        let logits = Tensor::randn([4, 8, 4], (Kind::Float, Device::Cpu));
        for mode in [GroupMode::FullSequence, GroupMode::DecodeBatch] {
            let s = ExpertChoice::new(2.0, mode).select(&logits, None);
            assert_eq!(total(&s), 4 * 8 * 2, "{mode:?}");
        }
        // Every expert takes exactly n·c/N = 4 tokens of each sequence.
        let s = ExpertChoice::new(2.0, GroupMode::FullSequence).select(&logits, None);
        let per_expert = s.mask.sum_dim_intlist(1, false, Kind::Int64);
        assert!(per_expert.eq(4).all().int64_value(&[]) == 1);
        let probs = logits.softmax(-1, Kind::Float);
        assert!(s.weights.equal(&(probs * s.mask.to_kind(Kind::Float))));
    }

    #[test]
    fn each_expert_takes_its_highest_scoring_tokens() {
        // One sequence, 4 tokens, 2 experts, c = 1: each expert takes 2 tokens.
        let logits =
            Tensor::from_slice(&[2.0f32, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 3.0]).view([1, 4, 2]);
        let s = ExpertChoice::new(1.0, GroupMode::FullSequence).select(&logits, None);
        let mask: Vec<bool> = Vec::try_from(s.mask.flatten(0, -1)).unwrap();
        assert_eq!(mask, [true, false, true, false, false, true, false, true]);
    }

    #[test]
    fn padding_takes_no_budget_and_leaves_real_choices_alone() {
        tch::manual_seed(22);
        let real = Tensor::randn([1, 6, 4], (Kind::Float, Device::Cpu));
        let pad = Tensor::full([1, 2, 4], 0.0, (Kind::Float, Device::Cpu));
        let _ = pad.narrow(-1, 0, 1).fill_(50.0);
        let padded = Tensor::cat(&[&real, &pad], 1);
        let token_mask = Tensor::cat(
            &[
                Tensor::ones([1, 6], (Kind::Bool, Device::Cpu)),
                Tensor::zeros([1, 2], (Kind::Bool, Device::Cpu)),
            ],
            1,
        );
        let ec = ExpertChoice::new(2.0, GroupMode::FullSequence);
        let alone = ec.select(&real, None);
        let with_pad = ec.select(&padded, Some(&token_mask));
        assert!(with_pad.mask.narrow(1, 0, 6).equal(&alone.mask));
        assert_eq!(total(&with_pad), 12);
        assert_eq!(
            i64::try_from(with_pad.active_counts().narrow(1, 6, 2).sum(Kind::Int64)).unwrap(),
            0
        );
    }
}
