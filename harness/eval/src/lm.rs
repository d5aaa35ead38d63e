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
//! Throughput: requests are deduplicated, a request whose input is a prefix of another's is read
//! off that forward pass (causal attention makes the logits identical), inputs are sorted longest
//! first and packed into batches under a token budget, and log-probabilities are computed only
//! at the positions that are scored.
use crate::windows::rolling_windows;
use crate::EvalError;
use moebench_core::pystr;
use moebench_model::generate::{generate_batch, PerSequence, StopCondition};
use moebench_model::sampling::{Sampler, Sampling as ModelSampling};
use moebench_model::{Model, Tokenizer};
use moebench_tasks::{Request, Response, Sampling};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use tch::{Kind, Tensor};

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
}

pub struct LanguageModel<'a> {
    pub model: &'a Model,
    pub tokenizer: &'a Tokenizer,
    pub settings: LmSettings,
    sampling_seed: u64,
}

/// One scoring job: input ids and how many of the last positions predict the continuation.
#[derive(Debug, Clone)]
struct Scored {
    input: Vec<i64>,
    continuation: Vec<i64>,
}

/// Result of scoring a continuation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ContinuationScore {
    pub loglikelihood: f64,
    pub is_greedy: bool,
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
    fn scored(&self, context: &[i64], continuation: Vec<i64>) -> Result<Scored, EvalError> {
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
        Ok(Scored {
            input,
            continuation: continuation[continuation.len() - keep..].to_vec(),
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
        Ok(self
            .score(&jobs)?
            .into_iter()
            .map(|s| s.loglikelihood)
            .collect())
    }

    /// Answers `requests` in order.
    pub fn run(&self, requests: &[Request]) -> Result<Vec<Response>, EvalError> {
        let mut responses: Vec<Option<Response>> = vec![None; requests.len()];
        let mut scored = Vec::new();
        let mut owners = Vec::new(); // (request index, number of windows) per scored group
        let mut generations = Vec::new();
        for (i, request) in requests.iter().enumerate() {
            match request {
                Request::Loglikelihood {
                    context,
                    continuation,
                } => {
                    let (ctx, cont) = self.encode_pair(context, continuation)?;
                    scored.push(self.scored(&ctx, cont)?);
                    owners.push((i, 1));
                }
                Request::Rolling { text } => {
                    let tokens = self.encode(text)?;
                    let windows =
                        rolling_windows(&tokens, self.prefix_token()?, self.settings.max_length, 1);
                    owners.push((i, windows.len()));
                    for w in windows {
                        scored.push(self.scored(&w.context, w.continuation)?);
                    }
                }
                Request::Generate { .. } => generations.push(i),
            }
        }
        let scores = self.score(&scored)?;
        let mut next = 0;
        for (i, windows) in owners {
            let part = &scores[next..next + windows];
            let tokens: usize = scored[next..next + windows]
                .iter()
                .map(|s| s.continuation.len())
                .sum();
            next += windows;
            let loglikelihood = part.iter().map(|s| s.loglikelihood).sum();
            responses[i] = Some(match requests[i] {
                Request::Rolling { .. } => Response::Rolling {
                    loglikelihood,
                    tokens,
                },
                _ => Response::Loglikelihood {
                    loglikelihood,
                    is_greedy: part[0].is_greedy,
                    tokens,
                },
            });
        }
        for (i, text) in generations
            .iter()
            .zip(self.generate(requests, &generations)?)
        {
            responses[*i] = Some(Response::Generated(text));
        }
        Ok(responses
            .into_iter()
            .map(|r| r.expect("every request answered"))
            .collect())
    }

    /// Scores every job; identical inputs and inputs that are prefixes of longer ones share
    /// one forward pass.
    fn score(&self, jobs: &[Scored]) -> Result<Vec<ContinuationScore>, EvalError> {
        // Longest first (lm-eval's Collator order), so a prefix meets its carrier after it.
        let mut order: Vec<usize> = (0..jobs.len()).collect();
        order.sort_by(|&a, &b| {
            jobs[b]
                .input
                .len()
                .cmp(&jobs[a].input.len())
                .then_with(|| jobs[a].input.cmp(&jobs[b].input))
        });
        let mut carriers: Vec<usize> = Vec::new(); // job indices that get a forward pass
        let mut carrier_of = vec![0usize; jobs.len()];
        let mut by_prefix: HashMap<&[i64], usize> = HashMap::new();
        for &j in &order {
            let input = jobs[j].input.as_slice();
            match by_prefix.get(input) {
                Some(&c) => carrier_of[j] = c,
                None => {
                    let c = carriers.len();
                    carriers.push(j);
                    carrier_of[j] = c;
                    for end in 1..=input.len() {
                        by_prefix.entry(&input[..end]).or_insert(c);
                    }
                }
            }
        }
        // Positions to score per carrier: (job, first position).
        let mut wanted: Vec<Vec<usize>> = vec![Vec::new(); carriers.len()];
        for j in 0..jobs.len() {
            wanted[carrier_of[j]].push(j);
        }
        let mut out = vec![
            ContinuationScore {
                loglikelihood: 0.0,
                is_greedy: false
            };
            jobs.len()
        ];
        let _guard = tch::no_grad_guard();
        for batch in self.batches(&carriers, jobs) {
            self.score_batch(&batch, &carriers, &wanted, jobs, &mut out)?;
        }
        Ok(out)
    }

    /// Consecutive carriers (already longest first) packed under the batch and token budgets.
    fn batches(&self, carriers: &[usize], jobs: &[Scored]) -> Vec<Vec<usize>> {
        let mut batches: Vec<Vec<usize>> = Vec::new();
        for (c, &j) in carriers.iter().enumerate() {
            let len = jobs[j].input.len();
            match batches.last_mut() {
                Some(b)
                    if b.len() < self.settings.batch_size
                        && (b.len() + 1) * jobs[carriers[b[0]]].input.len()
                            <= self.settings.token_budget.max(len) =>
                {
                    b.push(c)
                }
                _ => batches.push(vec![c]),
            }
        }
        batches
    }

    fn score_batch(
        &self,
        batch: &[usize],
        carriers: &[usize],
        wanted: &[Vec<usize>],
        jobs: &[Scored],
        out: &mut [ContinuationScore],
    ) -> Result<(), EvalError> {
        let width = jobs[carriers[batch[0]]].input.len();
        let mut ids = vec![0i64; batch.len() * width];
        let mut rows = Vec::new(); // flattened positions
        let mut targets = Vec::new();
        let mut spans = Vec::new(); // (job, start in rows, len)
        for (r, &c) in batch.iter().enumerate() {
            let carrier = &jobs[carriers[c]].input;
            ids[r * width..r * width + carrier.len()].copy_from_slice(carrier);
            for &j in &wanted[c] {
                let job = &jobs[j];
                let n = job.input.len();
                spans.push((j, rows.len(), job.continuation.len()));
                for (k, &t) in job.continuation.iter().enumerate() {
                    rows.push((r * width + n - job.continuation.len() + k) as i64);
                    targets.push(t);
                }
            }
        }
        let device = self.model.device;
        let input = Tensor::from_slice(&ids)
            .view([batch.len() as i64, width as i64])
            .to_device(device);
        let hidden = self
            .model
            .forward_hidden(&input, None, None, &mut Default::default());
        let hidden = hidden.view([-1, hidden.size()[2]]);
        let (lls, greedy) = self.position_logprobs(&hidden, &rows, &targets);
        for (j, start, len) in spans {
            out[j] = ContinuationScore {
                loglikelihood: lls[start..start + len].iter().sum(),
                is_greedy: greedy[start..start + len].iter().all(|&g| g),
            };
        }
        Ok(())
    }

    /// Log-probability of `targets[i]` at flattened position `rows[i]`, and whether it is the
    /// argmax there; the vocabulary projection runs in chunks to bound memory.
    fn position_logprobs(
        &self,
        hidden: &Tensor,
        rows: &[i64],
        targets: &[i64],
    ) -> (Vec<f64>, Vec<bool>) {
        const CHUNK: usize = 1024;
        let device = hidden.device();
        let (mut lls, mut greedy) = (
            Vec::with_capacity(rows.len()),
            Vec::with_capacity(rows.len()),
        );
        for (r, t) in rows.chunks(CHUNK).zip(targets.chunks(CHUNK)) {
            let idx = Tensor::from_slice(r).to_device(device);
            let tgt = Tensor::from_slice(t).to_device(device);
            let logp = self
                .model
                .logits(&hidden.index_select(0, &idx))
                .log_softmax(-1, Kind::Float);
            let picked = logp
                .gather(1, &tgt.unsqueeze(1), false)
                .squeeze_dim(1)
                .to_kind(Kind::Double);
            let is_max = logp.argmax(-1, false).eq_tensor(&tgt);
            lls.extend(Vec::<f64>::try_from(picked.to_device(tch::Device::Cpu)).expect("f64"));
            greedy.extend(Vec::<bool>::try_from(is_max.to_device(tch::Device::Cpu)).expect("bool"));
        }
        (lls, greedy)
    }

    /// `HFLM.generate_until`: greedy continuations cut at the first stop string.
    fn generate(&self, requests: &[Request], which: &[usize]) -> Result<Vec<String>, EvalError> {
        let eos = match self.tokenizer.eos_id {
            Some(id) => Some(self.tokenizer.decode(&[id], false)?),
            None => None,
        };
        let mut jobs = Vec::new();
        for &i in which {
            let Request::Generate {
                context,
                until,
                max_gen_toks,
                sampling,
            } = &requests[i]
            else {
                unreachable!()
            };
            let sampler = sampling.as_ref().map(|s| self.sampler(context, s));
            let mut stops: Vec<String> = until.clone();
            stops.extend(eos.clone());
            let mut ids = self.encode(context)?;
            let max_ctx = self
                .settings
                .max_length
                .saturating_sub(*max_gen_toks)
                .max(1);
            if ids.len() > max_ctx {
                ids.drain(..ids.len() - max_ctx);
            }
            jobs.push((ids, stops, *max_gen_toks, sampler));
        }
        // Same-budget requests are generated together, longest prompt first.
        let mut order: Vec<usize> = (0..jobs.len()).collect();
        order.sort_by(|&a, &b| jobs[b].0.len().cmp(&jobs[a].0.len()));
        let mut texts = vec![String::new(); jobs.len()];
        for chunk in order.chunks(self.settings.batch_size.max(1)) {
            let max_new = chunk.iter().map(|&j| jobs[j].2).max().unwrap_or(0);
            let prompts: Vec<Vec<i64>> = chunk.iter().map(|&j| jobs[j].0.clone()).collect();
            let stops: Vec<Vec<String>> = chunk.iter().map(|&j| jobs[j].1.clone()).collect();
            let limits: Vec<usize> = chunk.iter().map(|&j| jobs[j].2).collect();
            let mut picker = PerSequence(chunk.iter().map(|&j| jobs[j].3.clone()).collect());
            let mut stop = StopStrings {
                tokenizer: self.tokenizer,
                stops: &stops,
                limits: &limits,
                eos: self.tokenizer.eos_id,
            };
            let generated = generate_batch(self.model, &prompts, max_new, &mut picker, &mut stop);
            for ((&j, ids), stops) in chunk.iter().zip(generated).zip(&stops) {
                let ids = &ids[..ids.len().min(jobs[j].2)];
                let mut text = self.tokenizer.decode(ids, true)?;
                for s in stops.iter().filter(|s| !s.is_empty()) {
                    if let Some(at) = text.find(s.as_str()) {
                        text.truncate(at);
                    }
                }
                texts[j] = text;
            }
        }
        Ok(texts)
    }
}

/// Stops a sequence at EOS, at its token limit, or once its decoded text holds a stop string.
struct StopStrings<'t> {
    tokenizer: &'t Tokenizer,
    stops: &'t [Vec<String>],
    limits: &'t [usize],
    eos: Option<i64>,
}

impl StopCondition for StopStrings<'_> {
    fn is_done(&mut self, seq: usize, generated: &[i64]) -> bool {
        if generated.len() >= self.limits[seq] || generated.last().copied() == self.eos {
            return true;
        }
        let text = self.tokenizer.decode(generated, true).unwrap_or_default();
        self.stops[seq]
            .iter()
            .any(|s| !s.is_empty() && text.contains(s.as_str()))
    }
}
