//! Building blocks shared by every family: linear maps, RMSNorm and the SwiGLU MLP.
use tch::{Kind, Tensor};

/// `y = x Wᵀ (+ b)`, weight stored `[out, in]` as in PyTorch checkpoints.
#[derive(Debug)]
pub struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
}

impl Linear {
    pub fn forward(&self, x: &Tensor) -> Tensor {
        x.linear(&self.weight, self.bias.as_ref())
    }

    pub fn shallow_clone(&self) -> Linear {
        Linear {
            weight: self.weight.shallow_clone(),
            bias: self.bias.as_ref().map(Tensor::shallow_clone),
        }
    }
}

/// RMSNorm computed in f32 and cast back, then scaled (`LlamaRMSNorm.forward`).
#[derive(Debug)]
pub struct RmsNorm {
    pub weight: Tensor,
    pub eps: f64,
}

impl RmsNorm {
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let dtype = x.kind();
        let h = x.to_kind(Kind::Float);
        let variance = h.pow_tensor_scalar(2).mean_dim(-1, true, Kind::Float);
        let h = h * (variance + self.eps).rsqrt();
        &self.weight * h.to_kind(dtype)
    }

    pub fn shallow_clone(&self) -> RmsNorm {
        RmsNorm {
            weight: self.weight.shallow_clone(),
            eps: self.eps,
        }
    }
}

/// SwiGLU MLP: `down(silu(gate(x)) ⊙ up(x))`.
#[derive(Debug)]
pub struct Mlp {
    pub gate: Linear,
    pub up: Linear,
    pub down: Linear,
}

impl Mlp {
    pub fn forward(&self, x: &Tensor) -> Tensor {
        self.down
            .forward(&(self.gate.forward(x).silu() * self.up.forward(x)))
    }

    pub fn intermediate_size(&self) -> i64 {
        self.gate.weight.size()[0]
    }

    pub fn shallow_clone(&self) -> Mlp {
        Mlp {
            gate: self.gate.shallow_clone(),
            up: self.up.shallow_clone(),
            down: self.down.shallow_clone(),
        }
    }
}
