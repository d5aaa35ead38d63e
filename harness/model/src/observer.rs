//! Hooks into the forward pass. Calibration (REAP, REAM, DUME statistics, Dense2MoE
//! similarities) and routing diagnostics observe the model through this trait instead of
//! reaching into it.
pub use crate::moe::MoeEvent;
use crate::moe::MoeLayer;
use tch::{Kind, Tensor};

/// Points in a decoder block where hidden states are reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HiddenPoint {
    /// Residual stream entering the block.
    BlockInput,
    /// Input of the FFN (MLP or MoE) after its norm.
    FfnInput,
    /// Residual stream leaving the block.
    BlockOutput,
}

pub trait ForwardObserver {
    fn on_moe(&mut self, _layer: usize, _moe: &MoeLayer, _event: &MoeEvent<'_>) {}
    fn on_hidden(&mut self, _layer: usize, _point: HiddenPoint, _hidden: &Tensor) {}
}

/// Records, per MoE layer, how many experts every real token used.
#[derive(Debug, Default)]
pub struct ActiveExperts {
    /// `(layer, counts)` with counts `[B, T]` i64; padding positions are set to -1.
    pub per_layer: Vec<(usize, Tensor)>,
}

impl ActiveExperts {
    /// Mean active experts per real token over all recorded layers.
    pub fn mean(&self) -> Option<f64> {
        let (mut sum, mut n) = (0i64, 0i64);
        for (_, c) in &self.per_layer {
            let valid = c.ge(0);
            sum += i64::try_from(c.masked_select(&valid).sum(Kind::Int64)).ok()?;
            n += i64::try_from(valid.sum(Kind::Int64)).ok()?;
        }
        (n > 0).then(|| sum as f64 / n as f64)
    }
}

impl ForwardObserver for ActiveExperts {
    fn on_moe(&mut self, layer: usize, _moe: &MoeLayer, event: &MoeEvent<'_>) {
        let counts = event.selection.active_counts();
        let counts = match event.token_mask {
            Some(m) => counts.masked_fill(&m.logical_not(), -1),
            None => counts,
        };
        self.per_layer.push((layer, counts));
    }
}
