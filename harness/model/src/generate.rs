//! Greedy decoding with a KV cache, batched with left padding (transformers' `generate` with
//! `do_sample=False`): prefill once, then one token per step for every unfinished sequence.
use crate::model::{KvCache, Model};
use tch::{Kind, Tensor};

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

/// Greedy continuation of each prompt, at most `max_new_tokens` ids per prompt.
pub fn greedy_batch(
    model: &Model,
    prompts: &[Vec<i64>],
    max_new_tokens: usize,
    stop: &mut dyn StopCondition,
) -> Vec<Vec<i64>> {
    let _guard = tch::no_grad_guard();
    let b = prompts.len();
    let mut out: Vec<Vec<i64>> = vec![Vec::new(); b];
    if b == 0 || max_new_tokens == 0 {
        return out;
    }
    let max_len = prompts.iter().map(Vec::len).max().unwrap_or(0);
    let padded = prompts.iter().any(|p| p.len() != max_len);
    let mut ids = Vec::with_capacity(b * max_len);
    let mut mask = Vec::with_capacity(b * max_len);
    for p in prompts {
        let pad = max_len - p.len();
        ids.extend(std::iter::repeat_n(0i64, pad).chain(p.iter().copied()));
        mask.extend(std::iter::repeat_n(0i64, pad).chain(std::iter::repeat_n(1i64, p.len())));
    }
    let dev = model.device;
    let shape = [b as i64, max_len as i64];
    let mut input = Tensor::from_slice(&ids).view(shape).to_device(dev);
    let mut attention = padded.then(|| Tensor::from_slice(&mask).view(shape).to_device(dev));
    let mut cache = KvCache::new(model.num_layers());
    let mut done = vec![false; b];
    for _ in 0..max_new_tokens {
        let hidden = model.forward_hidden(
            &input,
            attention.as_ref(),
            Some(&mut cache),
            &mut Default::default(),
        );
        let last = hidden.narrow(1, hidden.size()[1] - 1, 1);
        let next: Vec<i64> =
            Vec::try_from(model.logits(&last).squeeze_dim(1).argmax(-1, false)).expect("argmax");
        for (i, &tok) in next.iter().enumerate() {
            if !done[i] {
                out[i].push(tok);
                done[i] = stop.is_done(i, &out[i]);
            }
        }
        if done.iter().all(|&d| d) {
            break;
        }
        input = Tensor::from_slice(&next).view([b as i64, 1]).to_device(dev);
        attention = attention.map(|m| Tensor::cat(&[m, Tensor::ones([b as i64, 1], (Kind::Int64, dev))], 1));
    }
    out
}
