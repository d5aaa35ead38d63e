//! Fixed-threshold Top-p routing (Huang et al., ACL 2024, "Harder Tasks Need More Experts",
//! arXiv 2403.07652; docs/methods.md §7.5): P = softmax(logits); sort descending; keep every expert
//! up to and including the first position where the cumulative sum is strictly > p. Weights are
//! the raw P, not renormalised (unlike DTop-p, which shares [`top_p_mask`]).
use super::{real_tokens, selection};
use moebench_model::moe::{Selection, Selector};
use tch::{Kind, Tensor};

#[derive(Debug, Clone)]
pub struct TopP {
    /// Threshold in (0, 1]; Huang et al.'s default is 0.4.
    pub p: f64,
}

impl TopP {
    pub fn new(p: f64) -> Self {
        Self { p }
    }
}

impl Selector for TopP {
    fn describe(&self) -> String {
        format!("topp(p={})", self.p)
    }

    fn select(&self, logits: &Tensor, token_mask: Option<&Tensor>) -> Selection {
        let probs = logits.softmax(-1, Kind::Float);
        let mask =
            top_p_mask(&probs, self.p).logical_and(&real_tokens(logits, token_mask).unsqueeze(-1));
        selection(&probs, mask, false)
    }
}

/// Boolean mask of the Top-p set of `probs` (`[..., N]`, rows summing to 1): expert j (in
/// descending order) is kept while the mass before it is ≤ p, i.e. the crossing expert is
/// included and the top-1 always is (Huang et al.'s strict `>`; docs/methods.md §5.7). p ≥ 1 keeps
/// every expert without relying on the float sum reaching exactly 1.
pub(super) fn top_p_mask(probs: &Tensor, p: f64) -> Tensor {
    if p >= 1.0 {
        return probs.ones_like().to_kind(Kind::Bool);
    }
    let (sorted, order) = probs.detach().sort(-1, true);
    let mass_before = sorted.cumsum(-1, Kind::Float) - &sorted;
    let keep = mass_before.le(p);
    probs
        .zeros_like()
        .to_kind(Kind::Bool)
        .scatter(-1, &order, &keep)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mask_of(t: &Tensor) -> Vec<bool> {
        Vec::try_from(t.flatten(0, -1)).unwrap()
    }

    #[test]
    fn crossing_expert_is_included_with_strict_greater() {
        let probs = Tensor::from_slice(&[0.2f32, 0.5, 0.3]).view([1, 1, 3]);
        // cumsum 0.5 is not > 0.5, so the 0.3 expert that crosses is kept too.
        assert_eq!(mask_of(&top_p_mask(&probs, 0.5)), [false, true, true]);
        assert_eq!(mask_of(&top_p_mask(&probs, 0.4)), [false, true, false]);
        assert_eq!(mask_of(&top_p_mask(&probs, 0.85)), [true, true, true]);
    }

    #[test]
    fn p_one_selects_all_and_tiny_p_selects_top1_with_raw_weights() {
        tch::manual_seed(1);
        let logits = Tensor::randn([2, 5, 6], (Kind::Float, tch::Device::Cpu));
        let all = TopP::new(1.0).select(&logits, None);
        assert!(mask_of(&all.mask).iter().all(|&m| m));
        let w: Vec<f32> = Vec::try_from(
            all.weights
                .sum_dim_intlist(-1, false, Kind::Float)
                .flatten(0, -1),
        )
        .unwrap();
        assert!(w.iter().all(|s| (s - 1.0).abs() < 1e-5));

        let one = TopP::new(1e-6).select(&logits, None);
        let top1 = logits.argmax(-1, true);
        let expected = logits
            .zeros_like()
            .to_kind(Kind::Bool)
            .scatter_value(-1, &top1, 1);
        assert!(one.mask.equal(&expected));
        // Raw softmax probabilities, not renormalised to 1.
        let probs = logits.softmax(-1, Kind::Float);
        assert!(one
            .weights
            .allclose(&(probs * expected.to_kind(Kind::Float)), 1e-6, 1e-7, false));
    }

    #[test]
    fn padding_tokens_get_no_expert() {
        let logits = Tensor::randn([1, 3, 4], (Kind::Float, tch::Device::Cpu));
        let token_mask = Tensor::from_slice(&[true, false, true]).view([1, 3]);
        let s = TopP::new(0.9).select(&logits, Some(&token_mask));
        let counts: Vec<i64> = Vec::try_from(s.active_counts().flatten(0, -1)).unwrap();
        assert_eq!(counts[1], 0);
        assert!(counts[0] >= 1 && counts[2] >= 1);
        assert_eq!(
            f32::try_from(s.weights.select(1, 1).abs().sum(Kind::Float)).unwrap(),
            0.0
        );
    }
}
