//! The model side of an evaluation: lm-eval's HF backend semantics (`lm_eval/models/huggingface.py`
//! and `TemplateLM` in `lm_eval/api/model.py`) on the tch runtime.
//!
//! - loglikelihood: trailing context whitespace moves to the continuation, the continuation
//!   tokens are taken from the joint encoding, an empty context becomes the prefix token, inputs
//!   are left-truncated to `max_length + 1` tokens and the last one dropped;
//! - rolling: disjoint windows of `max_length` tokens ([`crate::windows`]);
//! - generation: greedy (or, with `do_sample`, seeded sampling: each draw's stream depends
//!   only on the sampling seed, the context and the draw number), left-truncated to
//!   `max_length - max_gen_toks`, cut at the first `until` string (EOS is always a stop string).
//!
//! Throughput ([`crate::plan`], [`crate::engine`]): the requests' token inputs form a prefix
//! trie; a prefix shared by several requests (few-shot examples, a multiple-choice context, a
//! generation prompt's preamble) is encoded once and its keys and values continued, a request
//! whose input is a prefix of another's is read off that pass (causal attention makes the
//! logits identical), passes are packed longest first under a token budget, and
//! log-probabilities are computed only at the positions that are scored. The requests and the
//! positions scored are lm-eval's; only the work shared between them changes. Sampled
//! generations (`do_sample`) are decoded outside the engine, in batches of their own, with
//! each draw's own seeded sampler.
use crate::engine::{Batching, ContinuationScore, Engine, Job, JobOutput};
use crate::plan::Reuse;
use crate::windows::rolling_windows;
use crate::EvalError;
use moebench_core::pystr;
use moebench_model::generate::{generate_batch, PerSequence, StopCondition, StopOnIds};
use moebench_model::sampling::{Sampler, Sampling as ModelSampling};
use moebench_model::{Ffn, Model, Tokenizer};
use moebench_tasks::{Request, Response, Sampling};
use sha2::{Digest, Sha256};

/// lm-eval's `DEFAULT_MAX_LENGTH` when neither the config nor the tokenizer says.
pub const DEFAULT_MAX_LENGTH: usize = 2048;

/// Seed of sampled generations unless set: lm-eval's `torch_random_seed` default
/// (`lm_eval/defaults.py` `DEFAULT_OTHER_SEED`).
pub const DEFAULT_SAMPLING_SEED: u64 = 1234;

#[derive(Debug, Clone)]
pub struct LmSettings {
    /// Longest input in tokens (lm-eval's `max_length`).
    pub max_length: usize,
    /// Most sequences per forward pass.
    pub batch_size: usize,
    /// Most (padded) tokens per forward pass; bounds activation memory.
    pub token_budget: usize,
    /// Encode a prefix shared by several requests once and continue its keys and values
    /// (`--no-prefix-cache` turns it off for A/B comparisons; results are the same).
    pub prefix_cache: bool,
    /// Decode a generation that runs alone with prompt-lookup drafts (`--no-lookup-decoding`
    /// turns it off for A/B comparisons; generations are the same up to float rounding).
    pub lookup_decoding: bool,
}

pub struct LanguageModel<'a> {
    pub model: &'a Model,
    pub tokenizer: &'a Tokenizer,
    pub settings: LmSettings,
    sampling_seed: u64,
}

impl<'a> LanguageModel<'a> {
    pub fn new(model: &'a Model, tokenizer: &'a Tokenizer, settings: LmSettings) -> Self {
        LanguageModel {
            model,
            tokenizer,
            settings,
            sampling_seed: DEFAULT_SAMPLING_SEED,
        }
    }

    /// Seeds sampled generations (`do_sample: true`) with `seed` instead of
    /// [`DEFAULT_SAMPLING_SEED`].
    pub fn with_sampling_seed(mut self, seed: u64) -> Self {
        self.sampling_seed = seed;
        self
    }

    /// The sampler of one draw: its stream depends only on the seed, the context and the draw
    /// number, not on batching.
    fn sampler(&self, context: &str, sampling: &Sampling) -> Sampler {
        let digest = Sha256::new()
            .chain_update(self.sampling_seed.to_le_bytes())
            .chain_update((sampling.draw as u64).to_le_bytes())
            .chain_update(context.as_bytes())
            .finalize();
        let mut seed = [0u8; 8];
        seed.copy_from_slice(&digest[..8]);
        Sampler::new(ModelSampling {
            temperature: sampling.temperature,
            top_k: sampling.top_k,
            top_p: sampling.top_p,
            seed: u64::from_le_bytes(seed),
        })
    }

    /// lm-eval's max_length resolution (`models/utils.py` `resolve_max_length`): the config's
    /// `max_position_embeddings`, else [`DEFAULT_MAX_LENGTH`].
    pub fn default_max_length(model: &Model) -> usize {
        match model.config.max_position_embeddings {
            0 => DEFAULT_MAX_LENGTH,
            n => n,
        }
    }

    /// BOS if the tokenizer has one, else EOS (`HFLM.prefix_token_id`).
    pub fn prefix_token(&self) -> Result<i64, EvalError> {
        self.tokenizer
            .bos_id
            .or(self.tokenizer.eos_id)
            .ok_or_else(|| {
                EvalError::Invalid("the tokenizer has neither a BOS nor an EOS token".into())
            })
    }

    fn encode(&self, text: &str) -> Result<Vec<i64>, EvalError> {
        Ok(self.tokenizer.encode(text, false)?)
    }

    /// `TemplateLM._encode_pair` plus the empty-context rule of `TemplateLM.loglikelihood`.
    fn encode_pair(
        &self,
        context: &str,
        continuation: &str,
    ) -> Result<(Vec<i64>, Vec<i64>), EvalError> {
        if context.is_empty() {
            return Ok((vec![self.prefix_token()?], self.encode(continuation)?));
        }
        let trimmed = pystr::rstrip(context);
        let moved = &context[trimmed.len()..];
        let whole = self.encode(&format!("{trimmed}{moved}{continuation}"))?;
        let context_ids = self.encode(trimmed)?;
        let continuation_ids = whole[context_ids.len().min(whole.len())..].to_vec();
        Ok((context_ids, continuation_ids))
    }

    /// `(context + continuation)[-(max_length + 1):][:-1]` and the continuation to score.
    fn scored(&self, context: &[i64], continuation: Vec<i64>) -> Result<Job, EvalError> {
        if continuation.is_empty() {
            return Err(EvalError::Invalid(
                "a continuation encodes to no tokens".into(),
            ));
        }
        let mut full = context.to_vec();
        full.extend_from_slice(&continuation);
        let start = full.len().saturating_sub(self.settings.max_length + 1);
        let mut input = full[start..].to_vec();
        input.pop();
        let keep = continuation.len().min(input.len());
        Ok(Job::Score {
            input,
            targets: continuation[continuation.len() - keep..].to_vec(),
        })
    }

    /// Log-likelihood of each `(context, continuation)` token window (the context may be
    /// empty only if the continuation's first token is not scored: the caller's protocol
    /// decides), with the same batching and left truncation at `max_length` as [`Self::run`].
    pub fn score_windows(&self, windows: &[(Vec<i64>, Vec<i64>)]) -> Result<Vec<f64>, EvalError> {
        let jobs = windows
            .iter()
            .map(|(context, continuation)| self.scored(context, continuation.clone()))
            .collect::<Result<Vec<_>, _>>()?;
        let run = self
            .engine()
            .run(&jobs, self.reuse(), &mut StopOnIds(Vec::new()))?;
        Ok(run
            .outputs
            .into_iter()
            .map(|o| match o {
                JobOutput::Scored(s) => s.loglikelihood,
                JobOutput::Generated(_) => unreachable!("only scored jobs were asked"),
            })
            .collect())
    }

    /// Answers `requests` in order.
    pub fn run(&self, requests: &[Request]) -> Result<Vec<Response>, EvalError> {
        let mut jobs = Vec::new();
        let mut stops: Vec<Vec<String>> = Vec::new(); // per job (empty for scored jobs)
        let mut owners = Vec::new(); // (first job, number of jobs) per request
        let mut sampled = Vec::new(); // sampled generations, decoded outside the engine
        let eos = match self.tokenizer.eos_id {
            Some(id) => Some(self.tokenizer.decode(&[id], false)?),
            None => None,
        };
        for request in requests {
            let first = jobs.len();
            match request {
                Request::Loglikelihood {
                    context,
                    continuation,
                } => {
                    let (ctx, cont) = self.encode_pair(context, continuation)?;
                    jobs.push(self.scored(&ctx, cont)?);
                }
                Request::Rolling { text } => {
                    let tokens = self.encode(text)?;
                    let windows =
                        rolling_windows(&tokens, self.prefix_token()?, self.settings.max_length, 1);
                    for w in windows {
                        jobs.push(self.scored(&w.context, w.continuation)?);
                    }
                }
                Request::Generate {
                    context,
                    until,
                    max_gen_toks,
                    sampling: None,
                } => {
                    jobs.push(self.generation(context, *max_gen_toks)?);
                    stops.resize(jobs.len() - 1, Vec::new());
                    stops.push(until.iter().cloned().chain(eos.clone()).collect());
                }
                Request::Generate {
                    context,
                    until,
                    max_gen_toks,
                    sampling: Some(sampling),
                } => {
                    let Job::Generate { prompt, .. } = self.generation(context, *max_gen_toks)?
                    else {
                        unreachable!("generation() makes a generation job")
                    };
                    sampled.push(SampledDraw {
                        request: owners.len(),
                        prompt,
                        stops: until.iter().cloned().chain(eos.clone()).collect(),
                        max_new_tokens: *max_gen_toks,
                        sampler: self.sampler(context, sampling),
                    });
                }
            }
            owners.push((first, jobs.len() - first));
        }
        stops.resize(jobs.len(), Vec::new());
        let mut stop = StopStrings {
            tokenizer: self.tokenizer,
            stops: &stops,
            eos: self.tokenizer.eos_id,
        };
        let outputs = self.engine().run(&jobs, self.reuse(), &mut stop)?.outputs;
        let mut sampled_texts = self.sample(sampled)?;
        requests
            .iter()
            .zip(owners)
            .enumerate()
            .map(|(i, (request, (first, n)))| {
                if let Some(text) = sampled_texts.remove(&i) {
                    return Ok(Response::Generated(text));
                }
                let part = &outputs[first..first + n];
                let tokens: usize = jobs[first..first + n]
                    .iter()
                    .map(|j| match j {
                        Job::Score { targets, .. } => targets.len(),
                        Job::Generate { .. } => 0,
                    })
                    .sum();
                let scores: Vec<ContinuationScore> = part
                    .iter()
                    .filter_map(|o| match o {
                        JobOutput::Scored(s) => Some(*s),
                        JobOutput::Generated(_) => None,
                    })
                    .collect();
                let loglikelihood = scores.iter().map(|s| s.loglikelihood).sum();
                Ok(match (request, part) {
                    (Request::Generate { .. }, [JobOutput::Generated(ids)]) => {
                        Response::Generated(self.generated_text(ids, &stops[first])?)
                    }
                    (Request::Rolling { .. }, _) => Response::Rolling {
                        loglikelihood,
                        tokens,
                    },
                    _ => Response::Loglikelihood {
                        loglikelihood,
                        is_greedy: scores[0].is_greedy,
                        tokens,
                    },
                })
            })
            .collect()
    }

    /// Sampled generations, longest prompt first in batches of `batch_size`, each with its own
    /// seeded sampler (so the draws do not depend on batching); request index → text.
    fn sample(
        &self,
        mut draws: Vec<SampledDraw>,
    ) -> Result<std::collections::HashMap<usize, String>, EvalError> {
        draws.sort_by_key(|d| std::cmp::Reverse(d.prompt.len()));
        let mut texts = std::collections::HashMap::new();
        let mut pending = draws.into_iter().peekable();
        while pending.peek().is_some() {
            let chunk: Vec<SampledDraw> = pending
                .by_ref()
                .take(self.settings.batch_size.max(1))
                .collect();
            let max_new = chunk.iter().map(|d| d.max_new_tokens).max().unwrap_or(0);
            let prompts: Vec<Vec<i64>> = chunk.iter().map(|d| d.prompt.clone()).collect();
            let stops: Vec<Vec<String>> = chunk.iter().map(|d| d.stops.clone()).collect();
            let limits: Vec<usize> = chunk.iter().map(|d| d.max_new_tokens).collect();
            let mut picker = PerSequence(chunk.iter().map(|d| Some(d.sampler.clone())).collect());
            let mut stop = SampledStop {
                inner: StopStrings {
                    tokenizer: self.tokenizer,
                    stops: &stops,
                    eos: self.tokenizer.eos_id,
                },
                limits: &limits,
            };
            let generated = generate_batch(self.model, &prompts, max_new, &mut picker, &mut stop);
            for ((draw, ids), stops) in chunk.iter().zip(generated).zip(&stops) {
                let ids = &ids[..ids.len().min(draw.max_new_tokens)];
                texts.insert(draw.request, self.generated_text(ids, stops)?);
            }
        }
        Ok(texts)
    }

    /// Whether shared prefixes are encoded once here, and if not, why.
    pub fn prefix_cache(&self) -> PrefixCache {
        PrefixCache::for_model(self.model, self.settings.prefix_cache)
    }

    /// Whether lone generations use prompt-lookup drafts: asked for, and routing per token
    /// (a draft token must not change the experts of the tokens before it).
    pub fn lookup_decoding(&self) -> bool {
        self.settings.lookup_decoding && self.reuse() != Reuse::Nothing
    }

    fn reuse(&self) -> Reuse {
        self.prefix_cache().reuse()
    }

    fn engine(&self) -> Engine<'_> {
        Engine::new(
            self.model,
            Batching {
                batch_size: self.settings.batch_size,
                token_budget: self.settings.token_budget,
                max_length: self.settings.max_length,
            },
        )
        .lookup_decoding(self.settings.lookup_decoding)
    }

    /// `HFLM.generate_until`'s prompt: the context left-truncated to
    /// `max_length - max_gen_toks` tokens.
    fn generation(&self, context: &str, max_gen_toks: usize) -> Result<Job, EvalError> {
        let mut ids = self.encode(context)?;
        let max_ctx = self.settings.max_length.saturating_sub(max_gen_toks).max(1);
        if ids.len() > max_ctx {
            ids.drain(..ids.len() - max_ctx);
        }
        Ok(Job::Generate {
            prompt: ids,
            max_new_tokens: max_gen_toks,
        })
    }

    /// The decoded generation cut at the first occurrence of each stop string.
    fn generated_text(&self, ids: &[i64], stops: &[String]) -> Result<String, EvalError> {
        let mut text = self.tokenizer.decode(ids, true)?;
        for s in stops.iter().filter(|s| !s.is_empty()) {
            if let Some(at) = text.find(s.as_str()) {
                text.truncate(at);
            }
        }
        Ok(text)
    }
}

/// Whether shared prefixes are encoded once (recorded in results.json).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrefixCache {
    On,
    /// Turned off (`--no-prefix-cache`).
    Off,
    /// Off because a selector's choice for a token depends on later tokens (the layer and
    /// selector named): a prefix's logits then depend on what follows it, so nothing is shared.
    NonCausalRouting(String),
}

impl PrefixCache {
    /// The cache's state for `model` when `enabled` is asked: any MoE layer whose selector is
    /// not causal (Expert Choice, USMoE in `full_sequence` mode) turns it off.
    pub fn for_model(model: &Model, enabled: bool) -> PrefixCache {
        let non_causal = model
            .layers
            .iter()
            .enumerate()
            .find_map(|(l, block)| match &block.ffn {
                Ffn::Moe(moe) if !moe.selector.is_causal() => {
                    Some(format!("layer {l}: {}", moe.selector.describe()))
                }
                _ => None,
            });
        match non_causal {
            Some(selector) => PrefixCache::NonCausalRouting(selector),
            None if enabled => PrefixCache::On,
            None => PrefixCache::Off,
        }
    }

    /// What the engine may share under this state.
    pub fn reuse(&self) -> Reuse {
        match self {
            PrefixCache::On => Reuse::SharedPrefixes,
            PrefixCache::Off => Reuse::LongerPasses,
            PrefixCache::NonCausalRouting(_) => Reuse::Nothing,
        }
    }
}

impl std::fmt::Display for PrefixCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PrefixCache::On => write!(f, "on"),
            PrefixCache::Off => write!(f, "off"),
            PrefixCache::NonCausalRouting(selector) => {
                write!(f, "off: non-causal routing ({selector})")
            }
        }
    }
}

/// One sampled generation (`do_sample`): its request, prompt ids, stop strings, token limit and
/// seeded sampler.
struct SampledDraw {
    request: usize,
    prompt: Vec<i64>,
    stops: Vec<String>,
    max_new_tokens: usize,
    sampler: Sampler,
}

/// [`StopStrings`] plus each sequence's own token limit (a batch of sampled draws decodes to
/// the largest limit).
struct SampledStop<'t> {
    inner: StopStrings<'t>,
    limits: &'t [usize],
}

impl StopCondition for SampledStop<'_> {
    fn is_done(&mut self, seq: usize, generated: &[i64]) -> bool {
        generated.len() >= self.limits[seq] || self.inner.is_done(seq, generated)
    }
}

/// Stops a generation at EOS or once its decoded text holds one of its stop strings (token
/// limits are the engine's).
struct StopStrings<'t> {
    tokenizer: &'t Tokenizer,
    stops: &'t [Vec<String>],
    eos: Option<i64>,
}

impl StopCondition for StopStrings<'_> {
    fn is_done(&mut self, job: usize, generated: &[i64]) -> bool {
        if generated.last().copied() == self.eos {
            return true;
        }
        let text = self.tokenizer.decode(generated, true).unwrap_or_default();
        self.stops[job]
            .iter()
            .any(|s| !s.is_empty() && text.contains(s.as_str()))
    }
}
