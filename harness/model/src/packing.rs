//! A padding-free layout for ragged batches. Right-padded rows waste the token-wise work —
//! projections, MLPs, experts, norms: almost all of a pass's FLOPs — on padding (ARC-Easy's
//! answer choices at batch 8 were half padding). [`Packing`] keeps only the real tokens, `[N, H]`
//! instead of `[B, T, H]`, for that work; attention, the one step that mixes positions, still
//! runs on the padded layout with the usual mask, so every real token sees exactly what it saw.
use tch::{Kind, Tensor};

/// Where the real tokens of a `[B, T]` batch sit (row-major), and the padded shape.
#[derive(Debug)]
pub struct Packing {
    /// Flat indices into `B·T` of the real tokens, ascending.
    index: Tensor,
    rows: i64,
    width: i64,
}

impl Packing {
    /// `token_mask` `[B, T]`, true (or 1) for real tokens.
    pub fn new(token_mask: &Tensor) -> Packing {
        let size = token_mask.size();
        Packing {
            index: token_mask
                .to_kind(Kind::Bool)
                .reshape([-1])
                .nonzero()
                .squeeze_dim(1),
            rows: size[0],
            width: size[1],
        }
    }

    /// The padded shape `(B, T)`.
    pub fn padded_shape(&self) -> (i64, i64) {
        (self.rows, self.width)
    }

    /// Real tokens `[N, ..]` of a padded `[B, T, ..]` tensor.
    pub fn pack(&self, padded: &Tensor) -> Tensor {
        padded.flatten(0, 1).index_select(0, &self.index)
    }

    /// The padded `[B, T, ..]` layout of packed rows `[N, ..]`; padding is zero.
    pub fn unpack(&self, packed: &Tensor) -> Tensor {
        let mut shape = packed.size();
        shape[0] = self.rows * self.width;
        let padded = Tensor::zeros(&shape, (packed.kind(), packed.device())).index_copy(
            0,
            &self.index,
            packed,
        );
        shape[0] = self.width;
        shape.insert(0, self.rows);
        padded.view(shape.as_slice())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_then_unpack_restores_real_tokens_and_zeroes_padding() {
        let mask = Tensor::from_slice(&[1i64, 1, 0, 1, 0, 0]).view([2, 3]);
        let packing = Packing::new(&mask);
        let padded = Tensor::arange(12, (Kind::Float, tch::Device::Cpu)).view([2, 3, 2]) + 1.0;
        let packed = packing.pack(&padded);
        assert_eq!(
            Vec::<f32>::try_from(packed.flatten(0, -1)).unwrap(),
            [1.0, 2.0, 3.0, 4.0, 7.0, 8.0]
        );
        let back = packing.unpack(&packed);
        assert_eq!(back.size(), [2, 3, 2]);
        let expected = &padded * mask.to_kind(Kind::Float).unsqueeze(2);
        assert!(back.equal(&expected));
    }
}
