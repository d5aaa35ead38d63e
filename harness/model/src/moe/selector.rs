//! Selectors turn router logits into a sparse choice of experts and their combine weights.
//! The MoE layer calls them through [`Selector`] so routing methods can be swapped without
//! touching the layer (docs/architecture.md, "The MoE layer").
use crate::config::RouterNorm;
use tch::{Kind, Tensor};

/// Which experts each token uses, and with what weight.
#[derive(Debug)]
pub struct Selection {
    /// `[B, T, N]` f32 combine weights, zero where an expert is not selected.
    pub weights: Tensor,
    /// `[B, T, N]` bool, true where an expert is selected.
    pub mask: Tensor,
}

impl Selection {
    /// Number of experts each token uses, `[B, T]` i64.
    pub fn active_counts(&self) -> Tensor {
        self.mask.sum_dim_intlist(-1, false, Kind::Int64)
    }

    /// Every token sent to `expert` with weight 1: the forced ("oracle") routing DUME collects
    /// its statistics with (docs/methods.md §2.3 step 2).
    pub fn forced(logits: &Tensor, expert: i64) -> Selection {
        let n = logits.size()[logits.dim() - 1];
        let one_hot = Tensor::arange(n, (Kind::Int64, logits.device()))
            .eq(expert)
            .expand_as(logits);
        Selection {
            weights: one_hot.to_kind(Kind::Float),
            mask: one_hot.copy(),
        }
    }
}

/// A routing rule. `logits` are `[B, T, N]` f32; `token_mask` `[B, T]` bool marks real
/// (non-padding) tokens, for selectors whose choice depends on other tokens.
pub trait Selector: std::fmt::Debug + Send + Sync {
    /// Short description recorded with every result, e.g. `topk(k=2,renorm)`.
    fn describe(&self) -> String;
    fn select(&self, logits: &Tensor, token_mask: Option<&Tensor>) -> Selection;
    /// False for selectors whose choice for a token depends on later tokens (Expert Choice, USMoE).
    fn is_causal(&self) -> bool {
        true
    }
    /// True when a token's experts depend on its own router logits only — not on the other
    /// tokens of its pass (Expert Choice's per-position groups across a batch depend on them):
    /// only then may a pass pack the real tokens of ragged rows into one row.
    fn is_per_token(&self) -> bool {
        self.is_causal()
    }
    /// Trainable tensors of the selector itself (e.g. DTop-p's per-layer logit scale), which a
    /// training loop optimises along with the model's weights.
    fn parameters(&self) -> Vec<Tensor> {
        Vec::new()
    }
    /// What the selector learned or calibrated beyond its parameters (DTop-p's threshold p and
    /// logit scale s), so that a saved router reproduces it; `None` for stateless selectors.
    fn calibrated_state(&self) -> Option<CalibratedState> {
        None
    }
}

/// A calibrated or trained selector's state: its threshold and its logit scale.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CalibratedState {
    pub threshold: f64,
    pub scale: f64,
}

/// Token-choice top-k with the checkpoint's normalisation (docs/methods.md §1, §7.3):
/// softmax over all experts in f32, keep the k largest, optionally renormalise them to sum 1
/// (`MixtralSparseMoeBlock` / `Qwen2MoeSparseMoeBlock.forward`).
#[derive(Debug, Clone)]
pub struct TopK {
    pub k: i64,
    pub norm: RouterNorm,
}

impl Selector for TopK {
    fn describe(&self) -> String {
        let norm = match self.norm {
            RouterNorm::SoftmaxTopkRenorm => "renorm",
            RouterNorm::SoftmaxTopk => "raw",
        };
        format!("topk(k={},{norm})", self.k)
    }

    fn select(&self, logits: &Tensor, _token_mask: Option<&Tensor>) -> Selection {
        let probs = logits.softmax(-1, Kind::Float);
        let (mut top, idx) = probs.topk(self.k, -1, true, true);
        if self.norm == RouterNorm::SoftmaxTopkRenorm {
            top = &top / top.sum_dim_intlist(-1, true, Kind::Float);
        }
        let weights = probs.zeros_like().scatter(-1, &idx, &top);
        let mask = probs
            .zeros_like()
            .to_kind(Kind::Bool)
            .scatter_value(-1, &idx, 1);
        Selection { weights, mask }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topk_renorm_sums_to_one_and_picks_largest() {
        let logits = Tensor::from_slice(&[0.0f32, 3.0, 1.0, 2.0]).view([1, 1, 4]);
        let s = TopK {
            k: 2,
            norm: RouterNorm::SoftmaxTopkRenorm,
        }
        .select(&logits, None);
        let mask: Vec<bool> = Vec::try_from(s.mask.flatten(0, -1)).unwrap();
        assert_eq!(mask, vec![false, true, false, true]);
        let w: Vec<f32> = Vec::try_from(s.weights.flatten(0, -1)).unwrap();
        assert!((w[1] + w[3] - 1.0).abs() < 1e-6);
        assert!((w[1] / w[3] - std::f32::consts::E).abs() < 1e-5);
        assert_eq!(
            i64::try_from(s.active_counts().sum(Kind::Int64)).unwrap(),
            2
        );
    }

    #[test]
    fn topk_raw_keeps_softmax_probabilities() {
        let logits = Tensor::from_slice(&[0.0f32, 0.0, 0.0, 0.0]).view([1, 1, 4]);
        let s = TopK {
            k: 1,
            norm: RouterNorm::SoftmaxTopk,
        }
        .select(&logits, None);
        let total = f32::try_from(s.weights.sum(Kind::Float)).unwrap();
        assert!((total - 0.25).abs() < 1e-6);
    }
}
