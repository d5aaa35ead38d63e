//! The MoE feed-forward layer: stacked SwiGLU experts (`w_gate`/`w_up` `[N, F, H]`,
//! `w_down` `[N, H, F]`, so pruning, merging and neuron permutation are single tensor ops), a
//! linear router, a pluggable [`Selector`] and an optional sigmoid-gated shared expert.
pub mod selector;

use crate::error::{ModelError, Result};
use crate::layers::{Linear, Mlp};
pub use selector::{CalibratedState, Selection, Selector, TopK};
use std::sync::Arc;
use tch::{Kind, Tensor};

/// What an MoE layer saw and chose for one forward call (what observers receive).
pub struct MoeEvent<'a> {
    /// The model layer index.
    pub layer: usize,
    /// MoE input (after the pre-FFN norm), `[B, T, H]`.
    pub input: &'a Tensor,
    /// Router logits, `[B, T, N]` f32.
    pub router_logits: &'a Tensor,
    pub selection: &'a Selection,
    /// `[B, T]` bool, true for real (non-padding) tokens; `None` when there is no padding.
    pub token_mask: Option<&'a Tensor>,
}

/// Qwen2-MoE's always-on expert, scaled by `sigmoid(gate(x))` when a gate is present.
#[derive(Debug)]
pub struct SharedExpert {
    pub mlp: Mlp,
    pub gate: Option<Linear>,
}

#[derive(Debug)]
pub struct MoeLayer {
    /// Router `[N, H]` (+ optional bias `[N]`, used by DUME's ridge router).
    pub router: Linear,
    pub w_gate: Tensor,
    pub w_up: Tensor,
    pub w_down: Tensor,
    pub shared: Option<SharedExpert>,
    pub selector: Arc<dyn Selector>,
}

impl MoeLayer {
    /// `experts` copies of a dense MLP behind `router`: sparse upcycling's starting point
    /// (Komatsuzaki et al. 2023). With weights that sum to 1 over the chosen experts it computes
    /// exactly what the MLP did.
    pub fn copies_of(mlp: &Mlp, experts: i64, router: Linear, selector: Arc<dyn Selector>) -> Self {
        let stack = |w: &Tensor| w.unsqueeze(0).repeat([experts, 1, 1]);
        MoeLayer {
            router,
            w_gate: stack(&mlp.gate.weight),
            w_up: stack(&mlp.up.weight),
            w_down: stack(&mlp.down.weight),
            shared: None,
            selector,
        }
    }

    pub fn num_experts(&self) -> i64 {
        self.w_gate.size()[0]
    }

    /// Keeps the experts `keep` names, in that order (distinct indices in `0..N`, at least
    /// one): their expert weights and router rows. Prefer [`crate::Model::retain_experts`],
    /// which also keeps `config.moe` in step.
    pub fn retain_experts(&mut self, keep: &[i64]) -> Result<()> {
        let n = self.num_experts();
        let mut seen = vec![false; n as usize];
        for &e in keep {
            if !(0..n).contains(&e) || std::mem::replace(&mut seen[e as usize], true) {
                return Err(ModelError::Invalid(format!(
                    "experts to keep must be distinct indices in 0..{n}; got {keep:?}"
                )));
            }
        }
        if keep.is_empty() {
            return Err(ModelError::Invalid(
                "no expert to keep; at least one must stay".into(),
            ));
        }
        let idx = Tensor::from_slice(keep).to_device(self.w_gate.device());
        self.w_gate = rows(&self.w_gate, &idx);
        self.w_up = rows(&self.w_up, &idx);
        self.w_down = rows(&self.w_down, &idx);
        self.router.weight = rows(&self.router.weight, &idx);
        self.router.bias = self.router.bias.as_ref().map(|b| rows(b, &idx));
        Ok(())
    }

    pub fn expert_intermediate_size(&self) -> i64 {
        self.w_gate.size()[1]
    }

    /// Router logits `[.., N]` in f32 (computed in the model dtype, then upcast, as transformers).
    pub fn router_logits(&self, x: &Tensor) -> Tensor {
        self.router.forward(x).to_kind(Kind::Float)
    }

    /// Intermediate activation `silu(W_gate x) ⊙ (W_up x)` of one expert, `[M, F]`.
    pub fn expert_intermediate(&self, expert: i64, x: &Tensor) -> Tensor {
        x.linear::<Tensor>(&self.w_gate.get(expert), None).silu()
            * x.linear::<Tensor>(&self.w_up.get(expert), None)
    }

    /// Output `E_i(x)` of one expert for rows `x` `[M, H]`.
    pub fn expert_forward(&self, expert: i64, x: &Tensor) -> Tensor {
        self.expert_intermediate(expert, x)
            .linear::<Tensor>(&self.w_down.get(expert), None)
    }

    /// Router logits and the selection for `x` `[B, T, H]` (what [`MoeLayer::forward`] routes by).
    pub fn route(
        &self,
        x: &Tensor,
        token_mask: Option<&Tensor>,
        route_override: Option<i64>,
    ) -> (Tensor, Selection) {
        let logits = self.router_logits(x);
        let selection = match route_override {
            Some(e) => Selection::forced(&logits, e),
            None => self.selector.select(&logits, token_mask),
        };
        (logits, selection)
    }

    /// `x` `[B, T, H]`; `token_mask` `[B, T]` bool marks real tokens.
    pub fn forward<'o>(
        &self,
        layer: usize,
        x: &Tensor,
        token_mask: Option<&Tensor>,
        route_override: Option<i64>,
        on_event: Option<&mut (dyn FnMut(&MoeEvent<'_>) + 'o)>,
    ) -> Tensor {
        let size = x.size();
        let (logits, selection) = self.route(x, token_mask, route_override);
        if let Some(on_event) = on_event {
            on_event(&MoeEvent {
                layer,
                input: x,
                router_logits: &logits,
                selection: &selection,
                token_mask,
            });
        }
        let hidden = size[2];
        let flat = x.view([-1, hidden]);
        let out = self.dispatch(&flat, &selection);
        let out = match &self.shared {
            None => out,
            Some(shared) => {
                let mut s = shared.mlp.forward(&flat);
                if let Some(g) = &shared.gate {
                    s *= g.forward(&flat).sigmoid();
                }
                out + s
            }
        };
        out.view(size.as_slice())
    }

    /// The weighted sum of the selected experts' outputs for rows `flat` `[M, H]`: the
    /// (token, expert) pairs of the selection are grouped by expert with one `nonzero`, the
    /// tokens gathered once, each active expert run once on its contiguous slice, and the
    /// weighted outputs scattered back with one `index_add`. Per-expert work is only the
    /// expert's matmuls, so small batches (decoding) do not pay for the idle experts
    /// (benchmarks: `moe_dispatch` in harness/methods/benches/routing.rs).
    pub fn dispatch(&self, flat: &Tensor, selection: &Selection) -> Tensor {
        let n = self.num_experts();
        let mask = selection.mask.view([-1, n]);
        let weights = selection.weights.view([-1, n]);
        if flat.size()[0] == 1 {
            // One token (batch-1 decoding): no gather or scatter, just its experts' outputs.
            let chosen: Vec<i64> =
                Vec::try_from(mask.get(0).nonzero().squeeze_dim(1)).expect("expert ids");
            let row = weights.get(0).to_kind(flat.kind());
            return chosen.iter().fold(flat.zeros_like(), |acc, &e| {
                acc + self.expert_forward(e, flat) * row.get(e)
            });
        }
        // Rows (expert, token), ordered by expert, then token.
        let pairs = mask.transpose(0, 1).nonzero();
        let (experts, tokens) = (pairs.select(1, 0), pairs.select(1, 1));
        let counts: Vec<i64> =
            Vec::try_from(mask.sum_dim_intlist(0, false, Kind::Int64)).expect("expert counts");
        let x = flat.index_select(0, &tokens);
        let w = weights
            .reshape([-1])
            .index_select(0, &(&tokens * n + &experts))
            .unsqueeze(1)
            .to_kind(flat.kind());
        let mut outputs = Vec::new();
        let mut start = 0;
        for (e, &count) in counts.iter().enumerate() {
            if count > 0 {
                outputs.push(self.expert_forward(e as i64, &x.narrow(0, start, count)));
                start += count;
            }
        }
        if outputs.is_empty() {
            return flat.zeros_like();
        }
        flat.zeros_like()
            .index_add(0, &tokens, &(Tensor::cat(&outputs, 0) * w))
    }
}

/// `t[idx]` along dim 0, as a fresh leaf that keeps `t`'s `requires_grad` (so a pruned model can
/// still be fine-tuned).
fn rows(t: &Tensor, idx: &Tensor) -> Tensor {
    tch::no_grad(|| t.index_select(0, idx)).set_requires_grad(t.requires_grad())
}
