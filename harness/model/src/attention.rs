//! Grouped-query self-attention with optional q/k bias, qk-norm (per head or over the whole
//! projection), QKV clipping and a KV cache. The kernel is libtorch's SDPA, as in transformers'
//! default `sdpa` attention, with a boolean mask (true = may attend).
use crate::config::QkNorm;
use crate::kv_cache::LayerCache;
use crate::layers::{Linear, RmsNorm};
use crate::packing::Packing;
use crate::rope;
use tch::Tensor;

#[derive(Debug)]
pub struct Attention {
    pub q_proj: Linear,
    pub k_proj: Linear,
    pub v_proj: Linear,
    pub o_proj: Linear,
    pub q_norm: Option<RmsNorm>,
    pub k_norm: Option<RmsNorm>,
    pub qk_norm: QkNorm,
    pub clip_qkv: Option<f64>,
    pub num_heads: i64,
    pub num_kv_heads: i64,
    pub head_dim: i64,
}

impl Attention {
    /// `x` `[B, T, H]`, `cos`/`sin` `[B, T, head_dim]`, `mask` `[B, 1, T, S]` bool. Without a mask,
    /// `causal` selects SDPA's built-in causal mask (valid only when nothing is cached). With a
    /// `packing`, `x` and the output are its real tokens `[N, H]`: the projections skip padding,
    /// and queries, keys and values are laid out padded (zero at padding) for SDPA and the cache.
    #[allow(clippy::too_many_arguments)]
    pub fn forward(
        &self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        mask: Option<&Tensor>,
        causal: bool,
        cache: Option<&mut LayerCache>,
        packing: Option<&Packing>,
    ) -> Tensor {
        let (b, t) = match packing {
            Some(p) => p.padded_shape(),
            None => (x.size()[0], x.size()[1]),
        };
        let mut q = self.q_proj.forward(x);
        let mut k = self.k_proj.forward(x);
        let mut v = self.v_proj.forward(x);
        if self.qk_norm == QkNorm::Full {
            q = self.q_norm.as_ref().expect("q_norm").forward(&q);
            k = self.k_norm.as_ref().expect("k_norm").forward(&k);
        }
        if let Some(c) = self.clip_qkv {
            q = q.clamp(-c, c);
            k = k.clamp(-c, c);
            v = v.clamp(-c, c);
        }
        let split = |y: Tensor, heads: i64| {
            match packing {
                Some(p) => p.unpack(&y),
                None => y,
            }
            .view([b, t, heads, self.head_dim])
        };
        let mut q = split(q, self.num_heads);
        let mut k = split(k, self.num_kv_heads);
        if self.qk_norm == QkNorm::PerHead {
            q = self.q_norm.as_ref().expect("q_norm").forward(&q);
            k = self.k_norm.as_ref().expect("k_norm").forward(&k);
        }
        let q = rope::apply(&q.transpose(1, 2), cos, sin);
        let k = rope::apply(&k.transpose(1, 2), cos, sin);
        let v = split(v, self.num_kv_heads).transpose(1, 2);
        let (k, v) = match cache {
            Some(c) => c.append(k, v),
            None => (k, v),
        };
        let out = Tensor::scaled_dot_product_attention(
            &q,
            &k,
            &v,
            mask,
            0.0,
            mask.is_none() && causal,
            None::<f64>,
            self.num_kv_heads != self.num_heads,
        );
        let out = out
            .transpose(1, 2)
            .contiguous()
            .view([b, t, self.num_heads * self.head_dim]);
        match packing {
            Some(p) => self.o_proj.forward(&p.pack(&out)),
            None => self.o_proj.forward(&out),
        }
    }
}
