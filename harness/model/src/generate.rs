//! Decoding with a KV cache, batched with left padding (transformers' `generate`): prefill
//! once, then one token per step for every unfinished sequence. Each step's next tokens come
//! from a [`TokenPicker`]: the argmax (`do_sample=False`, [`greedy_batch`]) or, per sequence,
//! seeded sampling ([`PerSequence`], [`crate::sampling`]).
use crate::kv_cache::KvCache;
use crate::model::Model;
use crate::sampling::Sampler;
use tch::{Device, Kind, Tensor};

/// Decides when a sequence is finished, given its generated ids so far.
pub trait StopCondition {
    fn is_done(&mut self, seq: usize, generated: &[i64]) -> bool;
}

/// Stops at any of the given token ids (the stop token is kept in the output).
pub struct StopOnIds(pub Vec<i64>);

impl StopCondition for StopOnIds {
    fn is_done(&mut self, _seq: usize, generated: &[i64]) -> bool {
        generated.last().is_some_and(|t| self.0.contains(t))
    }
}

/// Picks each sequence's next token from the last position's logits `[B, V]`.
pub trait TokenPicker {
    fn pick(&mut self, logits: &Tensor) -> Vec<i64>;
}

/// Greedy decoding: the argmax of every row.
pub struct Argmax;

impl TokenPicker for Argmax {
    fn pick(&mut self, logits: &Tensor) -> Vec<i64> {
        Vec::try_from(logits.argmax(-1, false)).expect("argmax")
    }
}

/// One choice per sequence: `None` decodes greedily, `Some` samples with the sequence's own
/// seeded sampler.
pub struct PerSequence(pub Vec<Option<Sampler>>);

impl TokenPicker for PerSequence {
    fn pick(&mut self, logits: &Tensor) -> Vec<i64> {
        let mut next = Argmax.pick(logits);
        if self.0.iter().any(Option::is_some) {
            let rows = logits.to_kind(Kind::Float).to_device(Device::Cpu);
            for (i, sampler) in self.0.iter_mut().enumerate() {
                if let Some(sampler) = sampler {
                    let row = Vec::<f32>::try_from(rows.get(i as i64)).expect("logits");
                    next[i] = sampler.sample(&row);
                }
            }
        }
        next
    }
}

/// One batch of sequences being decoded, one forward per call: [`GreedyDecoder::prefill`]
/// runs the prompts, [`GreedyDecoder::step`] feeds one token per sequence; both return the argmax
/// next id of every sequence (reading it back is the only host synchronisation), and their
/// `_with` forms the ids a [`TokenPicker`] chooses. This is the one decoding loop:
/// [`generate_batch`] drives it, and benchmarks time its two calls separately.
pub struct GreedyDecoder<'m> {
    model: &'m Model,
    cache: KvCache,
    /// `[B, S]` mask over every position fed so far; `None` when no prompt is padded.
    attention: Option<Tensor>,
}

impl<'m> GreedyDecoder<'m> {
    /// Forward of the left-padded `prompts` (at least one, not all empty) that fills the cache.
    pub fn prefill(model: &'m Model, prompts: &[Vec<i64>]) -> (GreedyDecoder<'m>, Vec<i64>) {
        Self::prefill_with(model, prompts, &mut Argmax)
    }

    /// [`Self::prefill`], the next ids chosen by `picker`.
    pub fn prefill_with(
        model: &'m Model,
        prompts: &[Vec<i64>],
        picker: &mut dyn TokenPicker,
    ) -> (GreedyDecoder<'m>, Vec<i64>) {
        let (input, attention) = left_pad(prompts, model.device);
        let mut decoder = GreedyDecoder {
            model,
            cache: KvCache::new(model.num_layers()),
            attention,
        };
        let next = picker.pick(&decoder.forward(&input));
        (decoder, next)
    }

    /// A decoder that continues sequences already run: `cache` holds their keys and values and
    /// `attention` the `[B, S]` mask of its columns when some rows are padded (as
    /// [`KvCache::from_sequences`] returns them). The next call is [`GreedyDecoder::step`].
    pub fn resume(
        model: &'m Model,
        cache: KvCache,
        attention: Option<Tensor>,
    ) -> GreedyDecoder<'m> {
        GreedyDecoder {
            model,
            cache,
            attention,
        }
    }

    /// Leaves room in the cache for `tokens` more steps, so that they write in place.
    pub fn reserve(&mut self, tokens: usize) {
        self.cache.reserve(tokens as i64);
    }

    /// Forward of one new token per sequence (`tokens.len()` = batch size).
    pub fn step(&mut self, tokens: &[i64]) -> Vec<i64> {
        self.step_with(tokens, &mut Argmax)
    }

    /// [`Self::step`], the next ids chosen by `picker`.
    pub fn step_with(&mut self, tokens: &[i64], picker: &mut dyn TokenPicker) -> Vec<i64> {
        let (b, dev) = (tokens.len() as i64, self.model.device);
        self.attention = self
            .attention
            .take()
            .map(|m| Tensor::cat(&[m, Tensor::ones([b, 1], (Kind::Int64, dev))], 1));
        let logits = self.forward(&Tensor::from_slice(tokens).view([b, 1]).to_device(dev));
        picker.pick(&logits)
    }

    /// Feeds `tokens` to a one-sequence decoder in one forward and returns the argmax after
    /// each of them (the verification pass of [`decode_lookup`]).
    pub fn step_many(&mut self, tokens: &[i64]) -> Vec<i64> {
        let (t, dev) = (tokens.len() as i64, self.model.device);
        self.attention = self
            .attention
            .take()
            .map(|m| Tensor::cat(&[m, Tensor::ones([1, t], (Kind::Int64, dev))], 1));
        let _guard = tch::no_grad_guard();
        let hidden = self.model.forward_hidden(
            &Tensor::from_slice(tokens).view([1, t]).to_device(dev),
            self.attention.as_ref(),
            Some(&mut self.cache),
            &mut Default::default(),
        );
        Vec::try_from(self.model.logits(&hidden.squeeze_dim(0)).argmax(-1, false)).expect("argmax")
    }

    /// Forgets the last `positions` positions fed.
    pub fn rewind(&mut self, positions: usize) {
        let keep = self.cache.len() - positions as i64;
        self.cache.truncate(keep);
        self.attention = self.attention.take().map(|m| m.narrow(1, 0, keep));
    }

    /// The logits `[B, V]` at the last position.
    fn forward(&mut self, input: &Tensor) -> Tensor {
        let _guard = tch::no_grad_guard();
        let hidden = self.model.forward_hidden(
            input,
            self.attention.as_ref(),
            Some(&mut self.cache),
            &mut Default::default(),
        );
        let last = hidden.narrow(1, hidden.size()[1] - 1, 1);
        self.model.logits(&last).squeeze_dim(1)
    }
}

/// Input ids `[B, T]` on `device`, left-padded with 0, and their attention mask when any prompt
/// is shorter than the longest.
fn left_pad(prompts: &[Vec<i64>], device: Device) -> (Tensor, Option<Tensor>) {
    let max_len = prompts.iter().map(Vec::len).max().unwrap_or(0);
    let padded = prompts.iter().any(|p| p.len() != max_len);
    let mut ids = Vec::with_capacity(prompts.len() * max_len);
    let mut mask = Vec::with_capacity(prompts.len() * max_len);
    for p in prompts {
        let pad = max_len - p.len();
        ids.extend(std::iter::repeat_n(0i64, pad).chain(p.iter().copied()));
        mask.extend(std::iter::repeat_n(0i64, pad).chain(std::iter::repeat_n(1i64, p.len())));
    }
    let shape = [prompts.len() as i64, max_len as i64];
    let input = Tensor::from_slice(&ids).view(shape).to_device(device);
    let attention = padded.then(|| Tensor::from_slice(&mask).view(shape).to_device(device));
    (input, attention)
}

/// Greedy continuation of each prompt, at most `max_new_tokens` ids per prompt.
pub fn greedy_batch(
    model: &Model,
    prompts: &[Vec<i64>],
    max_new_tokens: usize,
    stop: &mut dyn StopCondition,
) -> Vec<Vec<i64>> {
    generate_batch(model, prompts, max_new_tokens, &mut Argmax, stop)
}

/// Continuation of each prompt with the tokens `picker` chooses, at most `max_new_tokens`
/// ids per prompt.
pub fn generate_batch(
    model: &Model,
    prompts: &[Vec<i64>],
    max_new_tokens: usize,
    picker: &mut dyn TokenPicker,
    stop: &mut dyn StopCondition,
) -> Vec<Vec<i64>> {
    if prompts.is_empty() || max_new_tokens == 0 {
        return vec![Vec::new(); prompts.len()];
    }
    let (decoder, first) = GreedyDecoder::prefill_with(model, prompts, picker);
    decode_with(decoder, first, max_new_tokens, picker, stop)
}

/// Greedy continuation from `first`, the first generated id of every row (the argmax after its
/// prompt): [`decode_with`] and [`Argmax`].
pub fn decode(
    decoder: GreedyDecoder<'_>,
    first: Vec<i64>,
    max_new_tokens: usize,
    stop: &mut dyn StopCondition,
) -> Vec<Vec<i64>> {
    decode_with(decoder, first, max_new_tokens, &mut Argmax, stop)
}

/// Continuation from `first`, the first generated id of every row, at most `max_new_tokens` ids
/// per row (`first` included), each next id chosen by `picker`; finished rows keep being fed
/// (their outputs are dropped) until every row is done.
pub fn decode_with(
    mut decoder: GreedyDecoder<'_>,
    first: Vec<i64>,
    max_new_tokens: usize,
    picker: &mut dyn TokenPicker,
    stop: &mut dyn StopCondition,
) -> Vec<Vec<i64>> {
    let b = first.len();
    let mut out: Vec<Vec<i64>> = vec![Vec::new(); b];
    decoder.reserve(max_new_tokens.saturating_sub(1));
    let mut next = first;
    let mut done = vec![false; b];
    for step in 0..max_new_tokens {
        if step > 0 {
            next = decoder.step_with(&next, picker);
        }
        for (i, &tok) in next.iter().enumerate() {
            if !done[i] {
                out[i].push(tok);
                done[i] = stop.is_done(i, &out[i]);
            }
        }
        if done.iter().all(|&d| d) {
            break;
        }
    }
    out
}

/// Most draft tokens one verification pass of [`decode_lookup`] feeds. On this 2-core CPU a
/// pass of 13 tokens costs about 1.8 decoding steps (SmolLM2-135M at ~1k context).
pub const LOOKUP_DRAFT_TOKENS: usize = 12;

/// The tokens that followed the latest earlier occurrence of `text`'s last n-gram (n = 3, then
/// 2), at most `limit` of them: prompt-lookup drafts (Saxena 2023, transformers'
/// `prompt_lookup_num_tokens`). Answers copy their question and repeat themselves, so these
/// are often what the model says next.
pub fn lookup_draft(text: &[i64], limit: usize) -> &[i64] {
    for n in [3, 2] {
        if text.len() <= n || limit == 0 {
            continue;
        }
        let tail = &text[text.len() - n..];
        let earlier = (0..text.len() - n).rev().find(|&i| &text[i..i + n] == tail);
        if let Some(i) = earlier {
            let start = i + n;
            return &text[start..(start + limit).min(text.len())];
        }
    }
    &[]
}

/// Greedy continuation of one sequence — `text` its tokens so far, `first` the argmax after
/// them — at most `max_new_tokens` ids (`first` included), with prompt-lookup drafts: the next
/// token and the [`lookup_draft`] after it are fed in one pass, and the draft is kept as far as
/// each token is the argmax after its predecessors. A CPU reads every weight once per pass, so a
/// pass that keeps `a` draft tokens yields `a + 1` tokens for about the price of one step. The
/// ids are the greedy ones (the argmax of a wider pass's logits, equal up to BLAS rounding).
pub fn decode_lookup(
    mut decoder: GreedyDecoder<'_>,
    mut text: Vec<i64>,
    first: i64,
    max_new_tokens: usize,
    stop: &mut dyn StopCondition,
) -> Vec<i64> {
    let mut out = Vec::new();
    decoder.reserve(max_new_tokens + LOOKUP_DRAFT_TOKENS);
    let mut next = first;
    let mut draft_len = LOOKUP_DRAFT_TOKENS / 2;
    let mut emit = |token: i64, out: &mut Vec<i64>, text: &mut Vec<i64>| {
        out.push(token);
        text.push(token);
        out.len() >= max_new_tokens || stop.is_done(0, out)
    };
    if max_new_tokens == 0 {
        return out;
    }
    loop {
        if emit(next, &mut out, &mut text) {
            return out;
        }
        let room = (max_new_tokens - out.len()).min(draft_len);
        let draft = lookup_draft(&text, room).to_vec();
        if draft.is_empty() {
            next = decoder.step(&[next])[0];
            continue;
        }
        let fed: Vec<i64> = std::iter::once(next).chain(draft.iter().copied()).collect();
        let greedy = decoder.step_many(&fed);
        let kept = draft
            .iter()
            .zip(&greedy)
            .take_while(|(d, g)| d == g)
            .count();
        // transformers' schedule for assistant tokens: longer after a fully kept draft,
        // shorter after a miss, so poor drafts cost little.
        draft_len = if kept == draft.len() {
            (draft_len + 2).min(LOOKUP_DRAFT_TOKENS)
        } else {
            draft_len.saturating_sub(1).max(1)
        };
        decoder.rewind(draft.len() - kept);
        for &token in &greedy[..kept] {
            if emit(token, &mut out, &mut text) {
                return out;
            }
        }
        next = greedy[kept];
    }
}
