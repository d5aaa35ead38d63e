//! Rotary position embeddings, computed exactly as transformers does (`modeling_rope_utils.py`
//! for the inverse frequencies, `LlamaRotaryEmbedding.forward` for cos/sin): f32 throughout,
//! `freqs = inv_freq ⊗ positions`, `emb = [freqs, freqs]`.
use crate::config::{RopeConfig, RopeScaling};
use tch::{Device, Kind, Tensor};

#[derive(Debug)]
pub struct Rope {
    inv_freq: Tensor,
}

impl Rope {
    pub fn new(cfg: &RopeConfig, head_dim: usize, device: Device) -> Rope {
        let dim = head_dim as i64;
        let exponents = Tensor::arange_start_step(0, dim, 2, (Kind::Int64, device))
            .to_kind(Kind::Float)
            / dim as f64;
        let inv_freq = Tensor::pow_scalar(cfg.theta, &exponents).reciprocal();
        let inv_freq = match cfg.scaling {
            RopeScaling::Default => inv_freq,
            RopeScaling::Linear { factor } => inv_freq / factor,
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings: old_ctx,
            } => {
                // `_compute_llama3_parameters`: long wavelengths are divided by `factor`,
                // short ones kept, and the band between interpolated smoothly.
                let low_freq_wavelen = old_ctx / low_freq_factor;
                let high_freq_wavelen = old_ctx / high_freq_factor;
                let wavelen = inv_freq.full_like(2.0 * std::f64::consts::PI) / &inv_freq;
                let scaled =
                    inv_freq.where_self(&wavelen.le(low_freq_wavelen), &(&inv_freq / factor));
                let smooth = (wavelen.full_like(old_ctx) / &wavelen - low_freq_factor)
                    / (high_freq_factor - low_freq_factor);
                let smoothed =
                    (smooth.ones_like() - &smooth) * &scaled / factor + &smooth * &scaled;
                let is_medium = wavelen
                    .ge(high_freq_wavelen)
                    .logical_and(&wavelen.le(low_freq_wavelen));
                smoothed.where_self(&is_medium, &scaled)
            }
        };
        Rope { inv_freq }
    }

    /// cos/sin of shape `[B, T, head_dim]` for integer `positions` `[B, T]`, cast to `kind`.
    pub fn cos_sin(&self, positions: &Tensor, kind: Kind) -> (Tensor, Tensor) {
        let b = positions.size()[0];
        let inv = self.inv_freq.view([1, -1, 1]).expand([b, -1, 1], false);
        let pos = positions.unsqueeze(1).to_kind(Kind::Float);
        let freqs = inv.matmul(&pos).transpose(1, 2);
        let emb = Tensor::cat(&[&freqs, &freqs], -1);
        (emb.cos().to_kind(kind), emb.sin().to_kind(kind))
    }
}

fn rotate_half(x: &Tensor) -> Tensor {
    let half = x.size()[x.dim() - 1] / 2;
    let x1 = x.narrow(-1, 0, half);
    let x2 = x.narrow(-1, half, half);
    Tensor::cat(&[&x2.neg(), &x1], -1)
}

/// Applies RoPE to `x` `[B, heads, T, head_dim]` with cos/sin `[B, T, head_dim]`.
pub fn apply(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Tensor {
    let cos = cos.unsqueeze(1);
    let sin = sin.unsqueeze(1);
    x * cos + rotate_half(x) * sin
}
