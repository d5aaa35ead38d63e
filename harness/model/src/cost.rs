//! Parameter counts and analytic forward FLOPs per token (docs/methods.md §8.6; Kaplan et al. 2020,
//! Table 1, with a multiply-add counted as 2 FLOPs). Expert terms take the number of experts a
//! token actually used per layer, so data-dependent routers are counted, not assumed.
use crate::model::{Ffn, Model};
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct ParamCounts {
    pub total: i64,
    /// Parameters a token touches: everything but the unselected experts.
    pub active_per_token: f64,
    pub embedding: i64,
    pub expert: i64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct FlopsPerToken {
    pub attention_projections: f64,
    /// QKᵀ and attention-weighted values at the given context length.
    pub attention_context: f64,
    pub dense_mlp: f64,
    pub router: f64,
    pub experts: f64,
    pub shared_experts: f64,
    pub lm_head: f64,
    pub total: f64,
}

fn numel(t: &tch::Tensor) -> i64 {
    t.size().iter().product()
}

/// Mean experts per token for each layer: `measured[l]` where given (MoE layers only),
/// otherwise the selector's nominal top-k from the config.
fn experts_used(model: &Model, layer: usize, measured: Option<&[f64]>) -> f64 {
    measured
        .and_then(|m| m.get(layer).copied())
        .unwrap_or_else(|| model.config.moe.as_ref().map_or(0.0, |m| m.top_k as f64))
}

pub fn param_counts(model: &Model, measured_active: Option<&[f64]>) -> ParamCounts {
    let tensors = model.named_tensors();
    let total: i64 = tensors.values().map(numel).sum();
    let mut expert = 0i64;
    let mut active = total as f64;
    for (l, block) in model.layers.iter().enumerate() {
        if let Ffn::Moe(moe) = &block.ffn {
            let all = numel(&moe.w_gate) + numel(&moe.w_up) + numel(&moe.w_down);
            let per_expert = all as f64 / moe.num_experts() as f64;
            expert += all;
            active -= all as f64 - per_expert * experts_used(model, l, measured_active);
        }
    }
    ParamCounts {
        total,
        active_per_token: active,
        embedding: numel(&model.embed),
        expert,
    }
}

/// Forward FLOPs of one token that attends to `context` positions (itself included).
pub fn flops_per_token(
    model: &Model,
    context: usize,
    measured_active: Option<&[f64]>,
) -> FlopsPerToken {
    let c = &model.config;
    let h = c.hidden_size as f64;
    let hq = (c.num_heads * c.head_dim) as f64;
    let hkv = (c.num_kv_heads * c.head_dim) as f64;
    let mut f = FlopsPerToken {
        lm_head: 2.0 * h * c.vocab_size as f64,
        ..Default::default()
    };
    for (l, block) in model.layers.iter().enumerate() {
        f.attention_projections += 2.0 * h * (hq + 2.0 * hkv) + 2.0 * hq * h;
        f.attention_context += 4.0 * context as f64 * hq;
        match &block.ffn {
            Ffn::Dense(m) => f.dense_mlp += 6.0 * h * m.intermediate_size() as f64,
            Ffn::Moe(moe) => {
                f.router += 2.0 * h * moe.num_experts() as f64;
                f.experts += experts_used(model, l, measured_active)
                    * 6.0
                    * h
                    * moe.expert_intermediate_size() as f64;
                if let Some(s) = &moe.shared {
                    f.shared_experts += 6.0 * h * s.mlp.intermediate_size() as f64
                        + if s.gate.is_some() { 2.0 * h } else { 0.0 };
                }
            }
        }
    }
    f.total = f.attention_projections
        + f.attention_context
        + f.dense_mlp
        + f.router
        + f.experts
        + f.shared_experts
        + f.lm_head;
    f
}

/// Bytes read from memory to decode one token at batch 1 (docs/methods.md §8.6, the roofline proxy
/// Dense2MoE optimises): every weight the token touches once — attention, norms, router, the
/// experts it uses (mean measured count per layer), shared experts, dense MLPs, one embedding
/// row and the LM head — plus the KV cache of `context` earlier positions.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BytesPerToken {
    pub attention_weights: f64,
    pub kv_cache: f64,
    pub dense_mlp: f64,
    pub router: f64,
    pub experts: f64,
    pub shared_experts: f64,
    /// One embedding row, the final norm and the LM head (the whole embedding when tied).
    pub embedding_and_head: f64,
    pub norms: f64,
    pub total: f64,
}

pub fn bytes_per_decode_token(
    model: &Model,
    context: usize,
    measured_active: Option<&[f64]>,
) -> BytesPerToken {
    let c = &model.config;
    let elt = model.kind.elt_size_in_bytes() as f64;
    let bytes = |t: &tch::Tensor| numel(t) as f64 * elt;
    let linear = |l: &crate::layers::Linear| bytes(&l.weight) + l.bias.as_ref().map_or(0.0, bytes);
    let h = c.hidden_size as f64;
    let mut b = BytesPerToken {
        embedding_and_head: h * elt
            + bytes(&model.norm.weight)
            + bytes(model.lm_head.as_ref().unwrap_or(&model.embed)),
        ..Default::default()
    };
    for (l, block) in model.layers.iter().enumerate() {
        let a = &block.attn;
        b.attention_weights += [&a.q_proj, &a.k_proj, &a.v_proj, &a.o_proj]
            .map(linear)
            .iter()
            .sum::<f64>()
            + [&a.q_norm, &a.k_norm]
                .into_iter()
                .flatten()
                .map(|n| bytes(&n.weight))
                .sum::<f64>();
        b.kv_cache += 2.0 * (c.num_kv_heads * c.head_dim) as f64 * context as f64 * elt;
        b.norms += bytes(&block.input_norm.weight) + bytes(&block.post_norm.weight);
        match &block.ffn {
            Ffn::Dense(m) => b.dense_mlp += linear(&m.gate) + linear(&m.up) + linear(&m.down),
            Ffn::Moe(moe) => {
                b.router += linear(&moe.router);
                let per_expert = (bytes(&moe.w_gate) + bytes(&moe.w_up) + bytes(&moe.w_down))
                    / moe.num_experts() as f64;
                b.experts += per_expert * experts_used(model, l, measured_active);
                if let Some(s) = &moe.shared {
                    b.shared_experts += linear(&s.mlp.gate)
                        + linear(&s.mlp.up)
                        + linear(&s.mlp.down)
                        + s.gate.as_ref().map_or(0.0, linear);
                }
            }
        }
    }
    b.total = b.attention_weights
        + b.kv_cache
        + b.dense_mlp
        + b.router
        + b.experts
        + b.shared_experts
        + b.embedding_and_head
        + b.norms;
    b
}
