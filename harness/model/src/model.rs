//! The decoder: embeddings, blocks (attention + dense MLP or MoE FFN), final norm, LM head.
//! Loading maps transformers' checkpoint names (per family) onto this one structure.
use crate::attention::Attention;
use crate::config::{Family, ModelConfig, MoeConfig, QkNorm, RouterNorm};
use crate::error::{ModelError, Result};
pub use crate::kv_cache::KvCache;
use crate::kv_cache::LayerCache;
use crate::layers::{Linear, Mlp, RmsNorm};
use crate::moe::{MoeEvent, MoeLayer, SharedExpert, TopK};
use crate::observer::{ForwardObserver, HiddenPoint};
use crate::packing::Packing;
use crate::rope::Rope;
use crate::weights::WeightMap;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use tch::{Device, Kind, Tensor};

#[derive(Debug)]
pub enum Ffn {
    Dense(Mlp),
    Moe(MoeLayer),
}

#[derive(Debug)]
pub struct Block {
    pub input_norm: RmsNorm,
    pub attn: Attention,
    pub post_norm: RmsNorm,
    pub ffn: Ffn,
}

#[derive(Debug)]
pub struct Model {
    pub config: ModelConfig,
    pub embed: Tensor,
    pub layers: Vec<Block>,
    pub norm: RmsNorm,
    /// `None` when the LM head is tied to the embeddings.
    pub lm_head: Option<Tensor>,
    rope: Rope,
    pub device: Device,
    pub kind: Kind,
}

/// What every block of one forward call shares, from [`Model::block_inputs`].
#[derive(Debug)]
pub struct BlockInputs {
    cos: Tensor,
    sin: Tensor,
    /// `[B, 1, T, S]` bool; `None` lets SDPA apply its own causal mask.
    mask: Option<Tensor>,
    /// `[B, T]` bool, true for real tokens.
    token_mask: Option<Tensor>,
    /// Nothing is cached: SDPA's causal mask is valid when `mask` is `None`.
    causal: bool,
    /// The residual stream holds only the real tokens ([`Model::forward_hidden_packed`]).
    packing: Option<Packing>,
}

/// Optional parts of a forward call.
#[derive(Default)]
pub struct ForwardOptions<'a> {
    pub observer: Option<&'a mut dyn ForwardObserver>,
    /// Force every MoE layer to send every token to this expert (DUME statistics, oracle eval).
    pub route_override: Option<i64>,
}

/// Checkpoint tensor names of one family (transformers' `modeling_<family>.py` module paths).
pub(crate) struct Names {
    family: Family,
}

impl Names {
    pub(crate) fn new(family: Family) -> Names {
        Names { family }
    }
    pub(crate) fn layer(&self, l: usize) -> String {
        format!("model.layers.{l}")
    }
    pub(crate) fn ffn(&self, l: usize) -> String {
        match self.family {
            Family::Mixtral => format!("model.layers.{l}.block_sparse_moe"),
            _ => format!("model.layers.{l}.mlp"),
        }
    }
    /// Names of an expert's gate, up and down projections.
    pub(crate) fn expert_projs(&self) -> [&'static str; 3] {
        match self.family {
            Family::Mixtral => ["w1", "w3", "w2"],
            _ => ["gate_proj", "up_proj", "down_proj"],
        }
    }
}

fn linear(w: &mut WeightMap, name: &str, out: i64, inp: i64, bias: bool) -> Result<Linear> {
    Ok(Linear {
        weight: w.take(&format!("{name}.weight"), &[out, inp])?,
        bias: if bias {
            Some(w.take(&format!("{name}.bias"), &[out])?)
        } else {
            None
        },
    })
}

fn rms(w: &mut WeightMap, name: &str, dim: i64, eps: f64) -> Result<RmsNorm> {
    Ok(RmsNorm {
        weight: w.take(&format!("{name}.weight"), &[dim])?,
        eps,
    })
}

fn mlp(w: &mut WeightMap, prefix: &str, projs: [&str; 3], h: i64, f: i64) -> Result<Mlp> {
    Ok(Mlp {
        gate: linear(w, &format!("{prefix}.{}", projs[0]), f, h, false)?,
        up: linear(w, &format!("{prefix}.{}", projs[1]), f, h, false)?,
        down: linear(w, &format!("{prefix}.{}", projs[2]), h, f, false)?,
    })
}

impl Model {
    /// Loads a checkpoint directory (config.json + safetensors) in `kind` on `device`.
    pub fn load(dir: &Path, device: Device, kind: Kind) -> Result<Model> {
        let config = ModelConfig::from_file(&dir.join("config.json"))?;
        let mut w = WeightMap::load(dir, device, kind)?;
        let model = Self::from_weights(config, &mut w, device, kind)?;
        w.finish()?;
        Ok(model)
    }

    fn from_weights(
        config: ModelConfig,
        w: &mut WeightMap,
        device: Device,
        kind: Kind,
    ) -> Result<Model> {
        let c = &config;
        let names = Names::new(c.family);
        let (h, v) = (c.hidden_size as i64, c.vocab_size as i64);
        let embed = w.take("model.embed_tokens.weight", &[v, h])?;
        let layers = (0..c.num_layers)
            .map(|l| Self::load_block(c, &names, w, l))
            .collect::<Result<Vec<_>>>()?;
        let norm = rms(w, "model.norm", h, c.rms_norm_eps)?;
        let lm_head = if c.tie_word_embeddings {
            // Some tied checkpoints still store the (identical) head; it is not needed.
            w.take_opt("lm_head.weight", &[v, h])?;
            None
        } else {
            Some(w.take("lm_head.weight", &[v, h])?)
        };
        let rope = Rope::new(&c.rope, c.head_dim, device);
        Ok(Model {
            config,
            embed,
            layers,
            norm,
            lm_head,
            rope,
            device,
            kind,
        })
    }

    fn load_block(c: &ModelConfig, names: &Names, w: &mut WeightMap, l: usize) -> Result<Block> {
        let p = names.layer(l);
        let (h, hd) = (c.hidden_size as i64, c.head_dim as i64);
        let (nh, nkv) = (c.num_heads as i64, c.num_kv_heads as i64);
        let eps = c.rms_norm_eps;
        let a = format!("{p}.self_attn");
        let (q_norm, k_norm) = match c.qk_norm {
            QkNorm::None => (None, None),
            QkNorm::PerHead => (
                Some(rms(w, &format!("{a}.q_norm"), hd, eps)?),
                Some(rms(w, &format!("{a}.k_norm"), hd, eps)?),
            ),
            QkNorm::Full => (
                Some(rms(w, &format!("{a}.q_norm"), nh * hd, eps)?),
                Some(rms(w, &format!("{a}.k_norm"), nkv * hd, eps)?),
            ),
        };
        let attn = Attention {
            q_proj: linear(w, &format!("{a}.q_proj"), nh * hd, h, c.qkv_bias)?,
            k_proj: linear(w, &format!("{a}.k_proj"), nkv * hd, h, c.qkv_bias)?,
            v_proj: linear(w, &format!("{a}.v_proj"), nkv * hd, h, c.qkv_bias)?,
            o_proj: linear(w, &format!("{a}.o_proj"), h, nh * hd, c.o_bias)?,
            q_norm,
            k_norm,
            qk_norm: c.qk_norm,
            clip_qkv: c.clip_qkv,
            num_heads: nh,
            num_kv_heads: nkv,
            head_dim: hd,
        };
        let ffn_prefix = names.ffn(l);
        let ffn = match &c.moe {
            Some(m) if m.sparse_layers[l] => {
                let (n, f) = (m.num_experts as i64, m.expert_intermediate_size as i64);
                let projs = names.expert_projs();
                let (w_gate, w_up, w_down) = load_experts(w, &ffn_prefix, projs, n, f, h)?;
                let shared = match m.shared_expert_intermediate_size {
                    None => None,
                    Some(fs) => Some(SharedExpert {
                        mlp: mlp(
                            w,
                            &format!("{ffn_prefix}.shared_expert"),
                            projs,
                            h,
                            fs as i64,
                        )?,
                        gate: Some(linear(
                            w,
                            &format!("{ffn_prefix}.shared_expert_gate"),
                            1,
                            h,
                            false,
                        )?),
                    }),
                };
                Ffn::Moe(MoeLayer {
                    router: linear(w, &format!("{ffn_prefix}.gate"), n, h, false)?,
                    w_gate,
                    w_up,
                    w_down,
                    shared,
                    selector: Arc::new(TopK {
                        k: m.top_k as i64,
                        norm: m.router_norm,
                    }),
                })
            }
            _ => Ffn::Dense(mlp(
                w,
                &names.ffn(l).replace("block_sparse_moe", "mlp"),
                ["gate_proj", "up_proj", "down_proj"],
                h,
                c.intermediate_size as i64,
            )?),
        };
        Ok(Block {
            input_norm: rms(w, &format!("{p}.input_layernorm"), h, eps)?,
            attn,
            post_norm: rms(w, &format!("{p}.post_attention_layernorm"), h, eps)?,
            ffn,
        })
    }

    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// The MoE layers with their block index, in order.
    pub fn moe_layers(&self) -> impl Iterator<Item = (usize, &MoeLayer)> {
        self.layers
            .iter()
            .enumerate()
            .filter_map(|(l, b)| match &b.ffn {
                Ffn::Moe(moe) => Some((l, moe)),
                Ffn::Dense(_) => None,
            })
    }

    /// [`Self::moe_layers`], mutable.
    pub fn moe_layers_mut(&mut self) -> impl Iterator<Item = (usize, &mut MoeLayer)> {
        self.layers
            .iter_mut()
            .enumerate()
            .filter_map(|(l, b)| match &mut b.ffn {
                Ffn::Moe(moe) => Some((l, moe)),
                Ffn::Dense(_) => None,
            })
    }

    /// Turns dense models into MoE models: each listed layer's dense MLP is replaced by its MoE
    /// layer, and `config.moe` describes the result (expert count and width from the layers,
    /// which must agree — the config format has one of each — and `top_k`/`router_norm` as the
    /// layers' selectors route). Every list is checked before any layer changes. The one way a
    /// method adds MoE layers (upcycling, Dense2MoE).
    pub fn install_moe(
        &mut self,
        layers: Vec<(usize, MoeLayer)>,
        top_k: usize,
        router_norm: RouterNorm,
    ) -> Result<()> {
        let invalid = |msg: String| Err(ModelError::Invalid(msg));
        if self.config.moe.is_some() {
            return invalid(
                "the model already has MoE layers; install_moe starts from a dense model".into(),
            );
        }
        let Some((_, first)) = layers.first() else {
            return invalid("install_moe needs at least one layer".into());
        };
        let width = |m: &MoeLayer| m.w_gate.size()[1];
        let shared_width = |m: &MoeLayer| m.shared.as_ref().map(|s| s.mlp.gate.weight.size()[0]);
        let (experts, expert_width, shared) =
            (first.num_experts(), width(first), shared_width(first));
        let mut sparse_layers = vec![false; self.num_layers()];
        for (layer, moe) in &layers {
            if *layer >= self.num_layers() || sparse_layers[*layer] {
                return invalid(format!(
                    "layer {layer} is out of range (0..{}) or listed twice",
                    self.num_layers()
                ));
            }
            sparse_layers[*layer] = true;
            if (moe.num_experts(), width(moe), shared_width(moe)) != (experts, expert_width, shared)
            {
                return invalid(format!(
                    "layer {layer}: {} experts of width {} (shared {:?}), but layer {} has {experts} of width {expert_width} (shared {shared:?})",
                    moe.num_experts(),
                    width(moe),
                    shared_width(moe),
                    layers[0].0
                ));
            }
        }
        if !(1..=experts as usize).contains(&top_k) {
            return invalid(format!("top_k {top_k} is not in 1..={experts}"));
        }
        for (layer, moe) in layers {
            self.layers[layer].ffn = Ffn::Moe(moe);
        }
        self.config.moe = Some(MoeConfig {
            num_experts: experts as usize,
            top_k,
            expert_intermediate_size: expert_width as usize,
            router_norm,
            shared_expert_intermediate_size: shared.map(|w| w as usize),
            sparse_layers,
        });
        Ok(())
    }

    /// Removes blocks `range` (their entries of `config.moe.sparse_layers` too) and returns them.
    pub fn remove_blocks(&mut self, range: std::ops::Range<usize>) -> Result<Vec<Block>> {
        if range.start > range.end || range.end > self.num_layers() {
            return Err(ModelError::Invalid(format!(
                "blocks {range:?} are not within 0..{}",
                self.num_layers()
            )));
        }
        if let Some(moe) = &mut self.config.moe {
            moe.sparse_layers.drain(range.clone());
        }
        let blocks = self.layers.drain(range).collect();
        self.config.num_layers = self.layers.len();
        Ok(blocks)
    }

    /// Records that every MoE layer now routes top-`top_k` with `router_norm` (a method that
    /// replaced the layers' selectors, e.g. DUME's ridge routers): `config.moe` and the
    /// checkpoint's `num_experts_per_tok`.
    pub fn set_routing(&mut self, top_k: usize, router_norm: RouterNorm) -> Result<()> {
        let Some(moe) = self.config.moe.as_mut() else {
            return Err(ModelError::Invalid(
                "set_routing: the model has no MoE layers".into(),
            ));
        };
        moe.top_k = top_k;
        moe.router_norm = router_norm;
        if let Some(raw) = self.config.raw.as_object_mut() {
            raw.insert("num_experts_per_tok".into(), top_k.into());
        }
        Ok(())
    }

    /// Keeps, in each listed MoE layer, the experts its list names (in that order): every list
    /// is checked before any layer changes, and `config.moe` follows ([`Self::sync_expert_count`]).
    /// The one way pruning changes a model's experts.
    pub fn retain_experts(&mut self, keep: &[(usize, Vec<i64>)]) -> Result<()> {
        for (layer, experts) in keep {
            let Some(Block {
                ffn: Ffn::Moe(moe), ..
            }) = self.layers.get(*layer)
            else {
                return Err(ModelError::Invalid(format!(
                    "layer {layer} is not an MoE layer"
                )));
            };
            let n = moe.num_experts();
            let distinct: std::collections::BTreeSet<_> = experts.iter().collect();
            if experts.is_empty()
                || distinct.len() != experts.len()
                || experts.iter().any(|e| !(0..n).contains(e))
            {
                return Err(ModelError::Invalid(format!(
                    "layer {layer}: experts to keep must be distinct indices in 0..{n}, at least one; got {experts:?}"
                )));
            }
        }
        for (layer, experts) in keep {
            if let Ffn::Moe(moe) = &mut self.layers[*layer].ffn {
                moe.retain_experts(experts)?;
            }
        }
        self.sync_expert_count()
    }

    /// Sets `config.moe.num_experts` to the count every MoE layer has, after a method changed the experts; layers that disagree are an error (the
    /// config format has one count).
    pub fn sync_expert_count(&mut self) -> Result<()> {
        let counts: std::collections::BTreeSet<i64> =
            self.moe_layers().map(|(_, m)| m.num_experts()).collect();
        let count = match counts.len() {
            0 => return Ok(()),
            1 => *counts.first().expect("one count") as usize,
            _ => {
                return Err(ModelError::Invalid(format!(
                "MoE layers have different expert counts {counts:?}; a checkpoint config holds one"
            )))
            }
        };
        if let Some(moe) = self.config.moe.as_mut() {
            moe.num_experts = count;
        }
        Ok(())
    }

    /// Final hidden states `[B, T, H]` (after the final norm).
    ///
    /// `attention_mask` is `[B, S]` over all positions including cached ones (1 = real token,
    /// 0 = padding), as in transformers. Positions are `cumsum(mask) - 1`, so left padding works.
    pub fn forward_hidden(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        cache: Option<&mut KvCache>,
        opts: &mut ForwardOptions<'_>,
    ) -> Tensor {
        let past = cache.as_ref().map_or(0, |c| c.len());
        let inputs = self.block_inputs(input_ids, attention_mask, past);
        self.run_blocks(self.embed_tokens(input_ids), &inputs, cache, opts)
    }

    /// Every block on the residual stream `x`, then the final norm.
    fn run_blocks(
        &self,
        mut x: Tensor,
        inputs: &BlockInputs,
        mut cache: Option<&mut KvCache>,
        opts: &mut ForwardOptions<'_>,
    ) -> Tensor {
        for l in 0..self.layers.len() {
            let layer_cache = cache.as_deref_mut().map(|c| &mut c.layers[l]);
            x = self.forward_block(l, x, inputs, layer_cache, opts);
        }
        self.norm.forward(&x)
    }

    /// Token embeddings `[B, T, H]` of `input_ids` `[B, T]`: the input of block 0.
    pub fn embed_tokens(&self, input_ids: &Tensor) -> Tensor {
        let (b, t) = (input_ids.size()[0], input_ids.size()[1]);
        self.embed
            .index_select(0, &input_ids.flatten(0, -1))
            .view([b, t, -1])
    }

    /// What every block of one forward call over `input_ids` `[B, T]` shares (RoPE tables,
    /// attention and padding masks), `past` positions being cached already.
    pub fn block_inputs(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        past: i64,
    ) -> BlockInputs {
        let (b, t) = (input_ids.size()[0], input_ids.size()[1]);
        let total = past + t;
        let positions = match attention_mask {
            Some(m) => (m.to_kind(Kind::Int64).cumsum(1, Kind::Int64) - 1)
                .clamp_min(0)
                .narrow(1, past, t),
            None => Tensor::arange_start(past, total, (Kind::Int64, self.device))
                .unsqueeze(0)
                .expand([b, t], false),
        };
        let token_mask = attention_mask.map(|m| m.narrow(1, past, t).to_kind(Kind::Bool));
        let mask = match attention_mask {
            None if past == 0 || t == 1 => None,
            _ => Some(attention_mask_4d(attention_mask, b, past, t, self.device)),
        };
        let (cos, sin) = self.rope.cos_sin(&positions, self.kind);
        BlockInputs {
            cos,
            sin,
            mask,
            token_mask,
            causal: past == 0,
            packing: None,
        }
    }

    /// Block `l` on the residual stream `x` `[B, T, H]`: exactly one iteration of
    /// [`Model::forward_hidden`], so a caller that caches block inputs (REAM's layer-sequential
    /// calibration) can re-run single blocks and get the same values as a whole-model pass.
    pub fn forward_block(
        &self,
        l: usize,
        x: Tensor,
        inputs: &BlockInputs,
        cache: Option<&mut LayerCache>,
        opts: &mut ForwardOptions<'_>,
    ) -> Tensor {
        let (x, h) = self.attention_half(l, x, inputs, cache, opts);
        let y = match &self.layers[l].ffn {
            Ffn::Dense(m) => m.forward(&h),
            Ffn::Moe(moe) => {
                // A packed stream `[N, H]` is one row of real tokens to the MoE layer.
                let (h, token_mask) = match &inputs.packing {
                    Some(_) => (h.unsqueeze(0), None),
                    None => (h, inputs.token_mask.as_ref()),
                };
                let y = match opts.observer.as_deref_mut() {
                    Some(o) => moe.forward(
                        l,
                        &h,
                        token_mask,
                        opts.route_override,
                        Some(&mut |event: &MoeEvent<'_>| o.on_moe(l, moe, event)),
                    ),
                    None => moe.forward(l, &h, token_mask, opts.route_override, None),
                };
                match &inputs.packing {
                    Some(_) => y.squeeze_dim(0),
                    None => y,
                }
            }
        };
        // Out of place on purpose: autograd keeps `x` for the norm's backward (training).
        let x = x + y;
        if let Some(o) = opts.observer.as_deref_mut() {
            o.on_hidden(l, HiddenPoint::BlockOutput, &x);
        }
        x
    }

    /// Block `l` up to its FFN: the residual stream after attention, and the FFN's input.
    fn attention_half(
        &self,
        l: usize,
        x: Tensor,
        inputs: &BlockInputs,
        cache: Option<&mut LayerCache>,
        opts: &mut ForwardOptions<'_>,
    ) -> (Tensor, Tensor) {
        let block = &self.layers[l];
        if let Some(o) = opts.observer.as_deref_mut() {
            o.on_hidden(l, HiddenPoint::BlockInput, &x);
        }
        let h = block.input_norm.forward(&x);
        let attn = block.attn.forward(
            &h,
            &inputs.cos,
            &inputs.sin,
            inputs.mask.as_ref(),
            inputs.causal,
            cache,
            inputs.packing.as_ref(),
        );
        // Out of place on purpose: autograd keeps `x` for the norm's backward (training).
        let x = x + attn;
        let h = block.post_norm.forward(&x);
        if let Some(o) = opts.observer.as_deref_mut() {
            o.on_hidden(l, HiddenPoint::FfnInput, &h);
        }
        (x, h)
    }

    /// What [`Model::forward_block`] shows `observer` of MoE block `l` — the block input, the
    /// FFN input and the MoE event, the same values bit for bit — without running its experts
    /// or producing its output: statistics of a block about to change (REAM's sequential pass)
    /// need only these, and the experts are most of the block's cost. Returns `false` (and
    /// observes nothing) for a dense block.
    pub fn observe_moe_block(
        &self,
        l: usize,
        x: Tensor,
        inputs: &BlockInputs,
        observer: &mut dyn ForwardObserver,
    ) -> bool {
        let Ffn::Moe(moe) = &self.layers[l].ffn else {
            return false;
        };
        let mut opts = ForwardOptions {
            observer: Some(&mut *observer),
            route_override: None,
        };
        let (_, h) = self.attention_half(l, x, inputs, None, &mut opts);
        let (logits, selection) = moe.route(&h, inputs.token_mask.as_ref(), None);
        observer.on_moe(
            l,
            moe,
            &MoeEvent {
                layer: l,
                input: &h,
                router_logits: &logits,
                selection: &selection,
                token_mask: inputs.token_mask.as_ref(),
            },
        );
        true
    }

    /// Final hidden states `[N, H]` of the real new tokens of `input_ids` `[B, T]` (those with
    /// `attention_mask` `[B, past + T]` set), row-major: [`Model::forward_hidden`] with the
    /// token-wise work done on real tokens only ([`Packing`]). For per-token routing the rows
    /// equal `forward_hidden`'s at those positions (tested); no observer or route override.
    pub fn forward_hidden_packed(
        &self,
        input_ids: &Tensor,
        attention_mask: &Tensor,
        cache: Option<&mut KvCache>,
    ) -> Tensor {
        let past = cache.as_ref().map_or(0, |c| c.len());
        let mut inputs = self.block_inputs(input_ids, Some(attention_mask), past);
        let packing = Packing::new(
            inputs
                .token_mask
                .as_ref()
                .expect("block_inputs keeps the token mask of an attention mask"),
        );
        let x = self.embed.index_select(0, &packing.pack(input_ids));
        inputs.packing = Some(packing);
        self.run_blocks(x, &inputs, cache, &mut ForwardOptions::default())
    }

    /// LM-head logits in f32 for final hidden states.
    pub fn logits(&self, hidden: &Tensor) -> Tensor {
        hidden
            .linear::<Tensor>(self.lm_head.as_ref().unwrap_or(&self.embed), None)
            .to_kind(Kind::Float)
    }

    /// Logits `[B, T, V]` (f32) of a plain forward.
    pub fn forward(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        cache: Option<&mut KvCache>,
    ) -> Tensor {
        let hidden = self.forward_hidden(
            input_ids,
            attention_mask,
            cache,
            &mut ForwardOptions::default(),
        );
        self.logits(&hidden)
    }

    /// The tensors the forward pass reads (shallow clones sharing storage), each once: what a
    /// training loop optimises. Unlike [`Model::named_tensors`], experts are the stacked
    /// `[N, …]` tensors, not per-expert views, so gradients reach them.
    pub fn parameters(&self) -> Vec<Tensor> {
        let mut out = vec![self.embed.shallow_clone(), self.norm.weight.shallow_clone()];
        out.extend(self.lm_head.iter().map(Tensor::shallow_clone));
        let linear = |out: &mut Vec<Tensor>, l: &Linear| {
            out.push(l.weight.shallow_clone());
            out.extend(l.bias.iter().map(Tensor::shallow_clone));
        };
        for block in &self.layers {
            out.push(block.input_norm.weight.shallow_clone());
            out.push(block.post_norm.weight.shallow_clone());
            let a = &block.attn;
            for l in [&a.q_proj, &a.k_proj, &a.v_proj, &a.o_proj] {
                linear(&mut out, l);
            }
            out.extend(
                [&a.q_norm, &a.k_norm]
                    .into_iter()
                    .flatten()
                    .map(|n| n.weight.shallow_clone()),
            );
            let mlps: Vec<&Mlp> = match &block.ffn {
                Ffn::Dense(m) => vec![m],
                Ffn::Moe(moe) => {
                    linear(&mut out, &moe.router);
                    out.extend([&moe.w_gate, &moe.w_up, &moe.w_down].map(Tensor::shallow_clone));
                    if let Some(gate) = moe.shared.as_ref().and_then(|s| s.gate.as_ref()) {
                        linear(&mut out, gate);
                    }
                    moe.shared.iter().map(|s| &s.mlp).collect()
                }
            };
            for m in mlps {
                for l in [&m.gate, &m.up, &m.down] {
                    linear(&mut out, l);
                }
            }
        }
        out
    }

    /// Every weight under its transformers checkpoint name (per-expert layout, which every
    /// transformers version loads), as `save_pretrained` writes them.
    pub fn named_tensors(&self) -> BTreeMap<String, Tensor> {
        let names = Names::new(self.config.family);
        let mut out = BTreeMap::new();
        let mut put = |name: String, t: &Tensor| {
            out.insert(name, t.shallow_clone());
        };
        let put_linear = |put: &mut dyn FnMut(String, &Tensor), name: String, l: &Linear| {
            put(format!("{name}.weight"), &l.weight);
            if let Some(b) = &l.bias {
                put(format!("{name}.bias"), b);
            }
        };
        put("model.embed_tokens.weight".into(), &self.embed);
        put("model.norm.weight".into(), &self.norm.weight);
        if let Some(head) = &self.lm_head {
            put("lm_head.weight".into(), head);
        }
        for (l, block) in self.layers.iter().enumerate() {
            let p = names.layer(l);
            put(
                format!("{p}.input_layernorm.weight"),
                &block.input_norm.weight,
            );
            put(
                format!("{p}.post_attention_layernorm.weight"),
                &block.post_norm.weight,
            );
            let a = &block.attn;
            for (proj, lin) in [
                ("q_proj", &a.q_proj),
                ("k_proj", &a.k_proj),
                ("v_proj", &a.v_proj),
                ("o_proj", &a.o_proj),
            ] {
                put_linear(&mut put, format!("{p}.self_attn.{proj}"), lin);
            }
            for (nm, norm) in [("q_norm", &a.q_norm), ("k_norm", &a.k_norm)] {
                if let Some(n) = norm {
                    put(format!("{p}.self_attn.{nm}.weight"), &n.weight);
                }
            }
            let f = names.ffn(l);
            match &block.ffn {
                Ffn::Dense(m) => {
                    let f = f.replace("block_sparse_moe", "mlp");
                    put_mlp(&mut put, &f, ["gate_proj", "up_proj", "down_proj"], m);
                }
                Ffn::Moe(moe) => {
                    put_linear(&mut put, format!("{f}.gate"), &moe.router);
                    let [g, u, d] = names.expert_projs();
                    for e in 0..moe.num_experts() {
                        put(format!("{f}.experts.{e}.{g}.weight"), &moe.w_gate.get(e));
                        put(format!("{f}.experts.{e}.{u}.weight"), &moe.w_up.get(e));
                        put(format!("{f}.experts.{e}.{d}.weight"), &moe.w_down.get(e));
                    }
                    if let Some(s) = &moe.shared {
                        put_mlp(
                            &mut put,
                            &format!("{f}.shared_expert"),
                            names.expert_projs(),
                            &s.mlp,
                        );
                        if let Some(gate) = &s.gate {
                            put_linear(&mut put, format!("{f}.shared_expert_gate"), gate);
                        }
                    }
                }
            }
        }
        out
    }
}

fn put_mlp(put: &mut dyn FnMut(String, &Tensor), prefix: &str, projs: [&str; 3], m: &Mlp) {
    for (proj, lin) in projs.iter().zip([&m.gate, &m.up, &m.down]) {
        put(format!("{prefix}.{proj}.weight"), &lin.weight);
    }
}

/// Stacks per-expert projections `experts.{e}.{proj}.weight` into `[N, F, H]` / `[N, H, F]`.
/// Also accepts transformers-5 fused tensors (`experts.gate_up_proj` `[N, 2F, H]`,
/// `experts.down_proj` `[N, H, F]`).
fn load_experts(
    w: &mut WeightMap,
    prefix: &str,
    projs: [&str; 3],
    n: i64,
    f: i64,
    h: i64,
) -> Result<(Tensor, Tensor, Tensor)> {
    let fused = format!("{prefix}.experts.gate_up_proj");
    if w.contains(&fused) {
        let gate_up = w.take(&fused, &[n, 2 * f, h])?;
        let down = w.take(&format!("{prefix}.experts.down_proj"), &[n, h, f])?;
        let gate = gate_up.narrow(1, 0, f).contiguous();
        let up = gate_up.narrow(1, f, f).contiguous();
        return Ok((gate, up, down));
    }
    let mut stack = |proj: &str, shape: [i64; 2]| -> Result<Tensor> {
        let parts = (0..n)
            .map(|e| w.take(&format!("{prefix}.experts.{e}.{proj}.weight"), &shape))
            .collect::<Result<Vec<_>>>()?;
        Ok(Tensor::stack(&parts, 0))
    };
    Ok((
        stack(projs[0], [f, h])?,
        stack(projs[1], [f, h])?,
        stack(projs[2], [h, f])?,
    ))
}

/// Boolean attention mask `[B, 1, T, S]`: causal, no attention to padding keys, and every query
/// may always see itself so that fully padded rows stay finite (their outputs are never used).
fn attention_mask_4d(
    attention_mask: Option<&Tensor>,
    b: i64,
    past: i64,
    t: i64,
    device: Device,
) -> Tensor {
    let total = past + t;
    let q_pos = Tensor::arange_start(past, total, (Kind::Int64, device)).unsqueeze(1);
    let k_pos = Tensor::arange(total, (Kind::Int64, device)).unsqueeze(0);
    let causal = k_pos.le_tensor(&q_pos);
    let diag = k_pos.eq_tensor(&q_pos);
    let keys = match attention_mask {
        Some(m) => m.to_kind(Kind::Bool),
        None => Tensor::ones([b, total], (Kind::Bool, device)),
    };
    causal
        .unsqueeze(0)
        .unsqueeze(0)
        .logical_and(&keys.unsqueeze(1).unsqueeze(1))
        .logical_or(&diag.unsqueeze(0).unsqueeze(0))
}
