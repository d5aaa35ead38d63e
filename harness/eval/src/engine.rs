//! Runs a [`Plan`] on the model: scored log-likelihoods and greedy generations, with the keys and
//! values of shared prefixes kept and continued (the prefix KV cache).
//!
//! Stages wait on a stack, children pushed above the stage that made them, so work goes depth
//! first: a prefix's continuations run soon after it and its keys and values are dropped as
//! soon as the last of them has run. A forward pass takes stages from the top of the stack —
//! siblings, so usually one shared prefix, expanded without a copy — up to the batch size and
//! the token budget (new positions' activations plus the keys and values the pass attends to).
//! Kept prefixes may hold [`memory::PREFIX_CACHE_SHARE`] of the bytes one pass may use; beyond
//! that, waiting generations are decoded and then the prefix needed last is evicted: its
//! continuations re-encode it from the nearest kept ancestor (or from scratch). Generations
//! continue their prompt stage's keys and values, decoded greedily in batches of prompts that
//! may differ in length (right-padded; the mask keeps positions exact).
use crate::memory;
use crate::plan::{Plan, PlanJob, Reuse};
use crate::EvalError;
use moebench_model::generate::{decode, decode_lookup, GreedyDecoder, StopCondition};
use moebench_model::kv_cache::{KvCache, SequenceKv};
use moebench_model::Model;
use tch::{Device, Kind, Tensor};

/// What the model is asked: the log-likelihood of `targets` predicted at the last
/// `targets.len()` positions of `input`, or a greedy continuation of `prompt`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Job {
    Score {
        input: Vec<i64>,
        targets: Vec<i64>,
    },
    Generate {
        prompt: Vec<i64>,
        max_new_tokens: usize,
    },
}

/// Result of scoring a continuation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ContinuationScore {
    pub loglikelihood: f64,
    pub is_greedy: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum JobOutput {
    Scored(ContinuationScore),
    /// Generated ids, at most the job's `max_new_tokens`.
    Generated(Vec<i64>),
}

/// What a run cost: the work the prefix cache saves shows in `positions`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunStats {
    /// Forward passes over prompts and scored inputs (decoding steps not counted).
    pub passes: usize,
    /// New token positions those passes encoded (padding excluded).
    pub positions: usize,
    /// Positions the passes computed, padding included (rows × widest row).
    pub padded_positions: usize,
    /// Kept prefixes dropped under the memory limit before all their continuations ran.
    pub evictions: usize,
    /// Most bytes of kept keys and values at any time.
    pub peak_kept_bytes: u64,
}

/// Outputs of [`Engine::run`], in job order, and its cost.
#[derive(Debug, Clone)]
pub struct Run {
    pub outputs: Vec<JobOutput>,
    pub stats: RunStats,
}

/// Batching limits of the forward passes.
#[derive(Debug, Clone, Copy)]
pub struct Batching {
    /// Most requests per forward pass; the answer choices that continue one kept prefix count
    /// as one request (see `Execution::next_batch`).
    pub batch_size: usize,
    /// Most (padded) new positions per forward pass, in tokens of `max_length`-long rows.
    pub token_budget: usize,
    pub max_length: usize,
}

pub struct Engine<'m> {
    model: &'m Model,
    batch_size: usize,
    /// Bytes one pass may use, one new position's activations, one cached position's keys and
    /// values, and what kept prefixes may hold.
    pass_bytes: u64,
    token_bytes: u64,
    kv_bytes: u64,
    cache_bytes: u64,
    lookup_decoding: bool,
}

impl<'m> Engine<'m> {
    pub fn new(model: &'m Model, batching: Batching) -> Engine<'m> {
        let token_bytes = memory::bytes_per_token(&model.config, model.kind, batching.max_length);
        let pass_bytes = batching.token_budget as u64 * token_bytes;
        Engine {
            model,
            batch_size: batching.batch_size.max(1),
            pass_bytes,
            token_bytes,
            kv_bytes: memory::kv_bytes_per_token(&model.config, model.kind),
            cache_bytes: (pass_bytes as f64 * memory::PREFIX_CACHE_SHARE) as u64,
            lookup_decoding: true,
        }
    }

    /// Whether a generation decoded alone (batch 1, or the last of a batch) feeds prompt-lookup
    /// drafts with each step ([`decode_lookup`]; on by default, off for A/B timing).
    pub fn lookup_decoding(mut self, on: bool) -> Self {
        self.lookup_decoding = on;
        self
    }

    /// Answers `jobs` in order. `stop` decides when a generation (by job index) is finished,
    /// besides its token limit.
    pub fn run(
        &self,
        jobs: &[Job],
        reuse: Reuse,
        stop: &mut dyn StopCondition,
    ) -> Result<Run, EvalError> {
        let plan_jobs: Vec<PlanJob<'_>> = jobs
            .iter()
            .map(|job| match job {
                Job::Score { input, targets } => {
                    if targets.is_empty() || targets.len() > input.len() {
                        return Err(EvalError::Invalid(format!(
                            "a scored input of {} tokens cannot score {} targets",
                            input.len(),
                            targets.len()
                        )));
                    }
                    Ok(PlanJob {
                        tokens: input,
                        targets,
                        generates: false,
                    })
                }
                Job::Generate {
                    prompt,
                    max_new_tokens,
                } => {
                    if prompt.is_empty() && *max_new_tokens > 0 {
                        return Err(EvalError::Invalid(
                            "a generation prompt encodes to no tokens".into(),
                        ));
                    }
                    // Nothing to generate: an empty path, which no stage covers.
                    let tokens: &[i64] = if *max_new_tokens == 0 { &[] } else { prompt };
                    Ok(PlanJob {
                        tokens,
                        targets: &[],
                        generates: true,
                    })
                }
            })
            .collect::<Result<_, _>>()?;
        let plan = Plan::new(&plan_jobs, reuse);
        let _guard = tch::no_grad_guard();
        let mut run = Execution::new(self, plan, jobs, reuse);
        loop {
            if run.should_decode() {
                run.decode_batch(stop);
                continue;
            }
            let batch = run.next_batch();
            if batch.is_empty() {
                break;
            }
            run.forward(&batch);
            run.enforce_cache_limit(stop);
        }
        let run = run.finish();
        let s = &run.stats;
        tracing::info!(
            jobs = jobs.len(),
            ?reuse,
            passes = s.passes,
            positions = s.positions,
            padded_positions = s.padded_positions,
            evictions = s.evictions,
            peak_kept_mib = s.peak_kept_bytes as f64 / (1 << 20) as f64,
            "engine run"
        );
        Ok(run)
    }
}

/// One run of a plan: the stack of stages waiting, kept keys and values, partial results.
struct Execution<'e, 'm> {
    engine: &'e Engine<'m>,
    plan: Plan,
    jobs: &'e [Job],
    /// Stages ready to run (their parent's keys and values are kept); the top is next.
    ready: Vec<usize>,
    /// Kept keys and values per stage, and how many continuations still need them.
    states: Vec<Option<SequenceKv>>,
    pending: Vec<usize>,
    kept_bytes: u64,
    /// Generations whose prompt has run: (job, prompt stage, first generated id).
    generations: Vec<(usize, usize, i64)>,
    scores: Vec<(f64, bool)>,
    generated: Vec<Vec<i64>>,
    stats: RunStats,
    /// Ragged passes run packed ([`Model::forward_hidden_packed`]): every token routes by its
    /// own logits ([`moebench_model::moe::Selector::is_per_token`]), so the real tokens of all
    /// rows may share one row.
    pack_ragged: bool,
    /// A generation decoded alone uses prompt-lookup drafts ([`decode_lookup`]); it needs
    /// per-token routing too, and [`Engine::lookup_decoding`].
    lookup_decoding: bool,
}

impl<'e, 'm> Execution<'e, 'm> {
    fn new(engine: &'e Engine<'m>, plan: Plan, jobs: &'e [Job], reuse: Reuse) -> Self {
        let pending = plan
            .stages
            .iter()
            .map(|s| s.children.len() + s.generations.len())
            .collect();
        let mut run = Execution {
            engine,
            states: (0..plan.stages.len()).map(|_| None).collect(),
            pending,
            plan,
            jobs,
            ready: Vec::new(),
            kept_bytes: 0,
            generations: Vec::new(),
            scores: vec![(0.0, true); jobs.len()],
            generated: vec![Vec::new(); jobs.len()],
            stats: RunStats::default(),
            pack_ragged: reuse != Reuse::Nothing
                && engine
                    .model
                    .moe_layers()
                    .all(|(_, moe)| moe.selector.is_per_token()),
            lookup_decoding: engine.lookup_decoding && reuse != Reuse::Nothing,
        };
        let roots = run.plan.roots.clone();
        run.push_ready(&roots);
        run
    }

    /// Pushes stages so that the longest is on top (lm-eval's longest-first order, and equal
    /// lengths next to each other to limit padding).
    fn push_ready(&mut self, stages: &[usize]) {
        let mut sorted = stages.to_vec();
        sorted.sort_by_key(|&s| (self.plan.stages[s].len(), std::cmp::Reverse(s)));
        self.ready.extend(sorted);
    }

    fn tokens(&self, stage: usize) -> &[i64] {
        let s = &self.plan.stages[stage];
        let tokens = match &self.jobs[s.seq] {
            Job::Score { input, .. } => input,
            Job::Generate { prompt, .. } => prompt,
        };
        &tokens[s.start..s.end]
    }

    /// Length of the prefix a stage continues (0 from scratch).
    fn past_len(&self, stage: usize) -> usize {
        self.plan.stages[stage].start
    }

    fn should_decode(&self) -> bool {
        !self.generations.is_empty()
            && (self.generations.len() >= self.engine.batch_size || self.ready.is_empty())
    }

    /// Bytes of a pass over `rows` rows of `new` new positions after `past` cached ones.
    fn pass_bytes(&self, rows: usize, new: usize, past: usize) -> u64 {
        rows as u64
            * (new as u64 * self.engine.token_bytes + (past + new) as u64 * self.engine.kv_bytes)
    }

    /// Stages from the top of the stack that fit one pass (at least one). Stages from scratch
    /// and continuations are not mixed.
    ///
    /// The batch size counts requests, and the final continuations of one kept prefix (a
    /// document's answer choices after its shared context) count as one: they ride in the same
    /// pass, as long as it fits the memory budget. On a memory-bound CPU a pass costs about the
    /// same for 1 or 4 short rows, so a zero-shot multiple-choice document takes two passes
    /// (context, then all choices) where lm-eval at batch 1 takes one per choice.
    fn next_batch(&mut self) -> Vec<usize> {
        let mut batch: Vec<usize> = Vec::new();
        let mut requests = 0;
        let (mut new, mut past) = (0, 0);
        while let Some(&s) = self.ready.last() {
            let stage = &self.plan.stages[s];
            let rides_along = stage.parent.is_some()
                && !stage.is_continued()
                && batch.iter().any(|&b| {
                    let other = &self.plan.stages[b];
                    other.parent == stage.parent && !other.is_continued()
                });
            if !rides_along && requests == self.engine.batch_size {
                break;
            }
            if let Some(&first) = batch.first() {
                let continues = self.plan.stages[first].parent.is_some();
                let (n, p) = (new.max(stage.len()), past.max(self.past_len(s)));
                if continues != stage.parent.is_some()
                    || self.pass_bytes(batch.len() + 1, n, p) > self.engine.pass_bytes
                {
                    break;
                }
            }
            new = new.max(stage.len());
            past = past.max(self.past_len(s));
            requests += usize::from(!rides_along);
            batch.push(s);
            self.ready.pop();
        }
        batch
    }

    /// One forward pass over `batch`: scores its positions, takes first generated ids, keeps
    /// the keys and values of continued stages and drops those no longer needed.
    fn forward(&mut self, batch: &[usize]) {
        let model = self.engine.model;
        let device = model.device;
        self.stats.passes += 1;
        self.stats.positions += batch
            .iter()
            .map(|&s| self.plan.stages[s].len())
            .sum::<usize>();
        let rows = batch.len() as i64;
        let width = batch
            .iter()
            .map(|&s| self.plan.stages[s].len())
            .max()
            .unwrap_or(0);
        self.stats.padded_positions += batch.len() * width;
        let mut ids = vec![0i64; batch.len() * width];
        let mut new_mask = vec![0i64; batch.len() * width];
        for (r, &s) in batch.iter().enumerate() {
            let tokens = self.tokens(s);
            ids[r * width..r * width + tokens.len()].copy_from_slice(tokens);
            new_mask[r * width..r * width + tokens.len()].fill(1);
        }
        let ragged = batch.iter().any(|&s| self.plan.stages[s].len() != width);
        let parents: Vec<&SequenceKv> = batch
            .iter()
            .filter_map(|&s| self.plan.stages[s].parent)
            .map(|p| {
                self.states[p]
                    .as_ref()
                    .expect("a ready stage's prefix is kept")
            })
            .collect();
        let continued = batch.iter().any(|&s| self.plan.stages[s].is_continued());
        let (mut cache, past_mask) = if parents.is_empty() {
            (KvCache::new(model.num_layers()), None)
        } else {
            KvCache::from_sequences(&parents)
        };
        let cached = cache.len();
        let shape = [rows, width as i64];
        let mask = (past_mask.is_some() || ragged).then(|| {
            let past =
                past_mask.unwrap_or_else(|| Tensor::ones([rows, cached], (Kind::Int64, device)));
            let new = Tensor::from_slice(&new_mask).view(shape).to_device(device);
            Tensor::cat(&[past, new], 1)
        });
        let input = Tensor::from_slice(&ids).view(shape).to_device(device);
        let keep_cache = continued || cached > 0;
        let cache_arg = keep_cache.then_some(&mut cache);
        // Row `r`'s first position in `hidden`'s rows: padded rows of `width`, or packed real
        // tokens when the batch is ragged and rows may be packed (per-token routing).
        let (hidden, row_starts): (Tensor, Vec<usize>) = match mask.as_ref() {
            Some(m) if ragged && self.pack_ragged => {
                let starts = batch
                    .iter()
                    .scan(0, |at, &s| {
                        let start = *at;
                        *at += self.plan.stages[s].len();
                        Some(start)
                    })
                    .collect();
                (model.forward_hidden_packed(&input, m, cache_arg), starts)
            }
            _ => {
                let hidden =
                    model.forward_hidden(&input, mask.as_ref(), cache_arg, &mut Default::default());
                let starts = (0..batch.len()).map(|r| r * width).collect();
                (hidden.view([-1, hidden.size()[2]]), starts)
            }
        };

        // Scored positions and the last prompt position of generations, flattened.
        let (mut flat_rows, mut targets) = (Vec::new(), Vec::new());
        for (&s, &row_start) in batch.iter().zip(&row_starts) {
            let stage = &self.plan.stages[s];
            for sp in &stage.scored {
                flat_rows.push((row_start + sp.position - stage.start) as i64);
                targets.push(sp.target);
            }
            if !stage.generations.is_empty() {
                flat_rows.push((row_start + stage.len() - 1) as i64);
                targets.push(0);
            }
        }
        let (logprobs, argmax) = self.position_logprobs(&hidden, &flat_rows, &targets);
        let mut at = 0;
        for (r, &s) in batch.iter().enumerate() {
            let stage = &self.plan.stages[s];
            for sp in &stage.scored {
                let score = &mut self.scores[sp.job];
                score.0 += logprobs[at];
                score.1 &= argmax[at] == sp.target;
                at += 1;
            }
            if !stage.generations.is_empty() {
                for &g in &stage.generations {
                    self.generations.push((g, s, argmax[at]));
                }
                at += 1;
            }
            if stage.is_continued() {
                let past = self.past_len(s) as i64;
                let state = cache.sequence(r as i64, &[(0, past), (cached, stage.len() as i64)]);
                self.kept_bytes += state.bytes();
                self.stats.peak_kept_bytes = self.stats.peak_kept_bytes.max(self.kept_bytes);
                self.states[s] = Some(state);
            }
        }
        drop(cache);
        for &s in batch {
            let children = self.plan.stages[s].children.clone();
            self.push_ready(&children);
            if let Some(p) = self.plan.stages[s].parent {
                self.release(p);
            }
        }
    }

    /// One continuation of `stage` is done; its keys and values go when none is left.
    fn release(&mut self, stage: usize) {
        self.pending[stage] -= 1;
        if self.pending[stage] == 0 {
            if let Some(state) = self.states[stage].take() {
                self.kept_bytes -= state.bytes();
            }
        }
    }

    /// Decodes up to a batch of waiting generations, longest prompt first.
    fn decode_batch(&mut self, stop: &mut dyn StopCondition) {
        self.generations
            .sort_by_key(|&(job, stage, _)| (self.plan.stages[stage].end, std::cmp::Reverse(job)));
        let mut batch: Vec<(usize, usize, i64)> = Vec::new();
        let mut longest = (0, 0); // (prompt, new tokens)
        while let Some(&(job, stage, first)) = self.generations.last() {
            let limit = self.max_new_tokens(job);
            let (p, n) = (
                longest.0.max(self.plan.stages[stage].end),
                longest.1.max(limit),
            );
            let bytes = (batch.len() + 1) as u64 * (p + n) as u64 * self.engine.kv_bytes;
            if batch.len() == self.engine.batch_size
                || (!batch.is_empty() && bytes > self.engine.pass_bytes)
            {
                break;
            }
            longest = (p, n);
            batch.push((job, stage, first));
            self.generations.pop();
        }
        let seqs: Vec<&SequenceKv> = batch
            .iter()
            .map(|&(_, stage, _)| {
                self.states[stage]
                    .as_ref()
                    .expect("a prompt's keys are kept")
            })
            .collect();
        let (cache, mask) = KvCache::from_sequences(&seqs);
        let decoder = GreedyDecoder::resume(self.engine.model, cache, mask);
        let jobs: Vec<usize> = batch.iter().map(|b| b.0).collect();
        let limits: Vec<usize> = jobs.iter().map(|&j| self.max_new_tokens(j)).collect();
        let mut rows = JobStop {
            jobs: &jobs,
            limits: &limits,
            inner: stop,
        };
        let out = match batch.as_slice() {
            [(job, _, first)] if self.lookup_decoding => {
                let Job::Generate { prompt, .. } = &self.jobs[*job] else {
                    unreachable!("only generations decode")
                };
                vec![decode_lookup(
                    decoder,
                    prompt.clone(),
                    *first,
                    longest.1,
                    &mut rows,
                )]
            }
            _ => decode(
                decoder,
                batch.iter().map(|b| b.2).collect(),
                longest.1,
                &mut rows,
            ),
        };
        for ((job, stage, _), mut ids) in batch.into_iter().zip(out) {
            ids.truncate(self.max_new_tokens(job));
            self.generated[job] = ids;
            self.release(stage);
        }
    }

    fn max_new_tokens(&self, job: usize) -> usize {
        match &self.jobs[job] {
            Job::Generate { max_new_tokens, .. } => *max_new_tokens,
            Job::Score { .. } => 0,
        }
    }

    /// Keeps kept keys and values under the cache's share of the memory budget: decodes waiting
    /// generations first, then evicts the prefix whose continuations are deepest in the stack
    /// (needed last); those continuations then start from its nearest kept ancestor.
    fn enforce_cache_limit(&mut self, stop: &mut dyn StopCondition) {
        while self.kept_bytes > self.engine.cache_bytes {
            if !self.generations.is_empty() {
                self.decode_batch(stop);
                continue;
            }
            let victim = self
                .ready
                .iter()
                .filter_map(|&s| self.plan.stages[s].parent)
                .find(|&p| self.states[p].is_some());
            let Some(victim) = victim else { break };
            self.evict(victim);
        }
    }

    fn evict(&mut self, victim: usize) {
        self.stats.evictions += 1;
        if let Some(state) = self.states[victim].take() {
            self.kept_bytes -= state.bytes();
        }
        let mut ancestor = self.plan.stages[victim].parent;
        while let Some(a) = ancestor {
            if self.states[a].is_some() {
                break;
            }
            ancestor = self.plan.stages[a].parent;
        }
        let start = ancestor.map_or(0, |a| self.plan.stages[a].end);
        let orphans: Vec<usize> = self
            .ready
            .iter()
            .copied()
            .filter(|&s| self.plan.stages[s].parent == Some(victim))
            .collect();
        for &c in &orphans {
            let stage = &mut self.plan.stages[c];
            stage.parent = ancestor;
            stage.start = start;
        }
        if let Some(a) = ancestor {
            self.pending[a] += orphans.len();
        }
        self.pending[victim] = 0;
    }

    /// Log-probability of `targets[i]` at flattened position `rows[i]` and the argmax there;
    /// the vocabulary projection runs in chunks to bound memory.
    fn position_logprobs(
        &self,
        hidden: &Tensor,
        rows: &[i64],
        targets: &[i64],
    ) -> (Vec<f64>, Vec<i64>) {
        const CHUNK: usize = 1024;
        let device = hidden.device();
        let (mut logprobs, mut argmax) = (
            Vec::with_capacity(rows.len()),
            Vec::with_capacity(rows.len()),
        );
        for (r, t) in rows.chunks(CHUNK).zip(targets.chunks(CHUNK)) {
            let idx = Tensor::from_slice(r).to_device(device);
            let tgt = Tensor::from_slice(t).to_device(device);
            let logp = self
                .engine
                .model
                .logits(&hidden.index_select(0, &idx))
                .log_softmax(-1, Kind::Float);
            let picked = logp
                .gather(1, &tgt.unsqueeze(1), false)
                .squeeze_dim(1)
                .to_kind(Kind::Double);
            logprobs.extend(Vec::<f64>::try_from(picked.to_device(Device::Cpu)).expect("f64"));
            argmax.extend(
                Vec::<i64>::try_from(logp.argmax(-1, false).to_device(Device::Cpu)).expect("i64"),
            );
        }
        (logprobs, argmax)
    }

    fn finish(self) -> Run {
        let outputs = self
            .jobs
            .iter()
            .zip(self.scores.into_iter().zip(self.generated))
            .map(|(job, ((loglikelihood, is_greedy), ids))| match job {
                Job::Score { .. } => JobOutput::Scored(ContinuationScore {
                    loglikelihood,
                    is_greedy,
                }),
                Job::Generate { .. } => JobOutput::Generated(ids),
            })
            .collect();
        Run {
            outputs,
            stats: self.stats,
        }
    }
}

/// Batch rows → jobs for the caller's stop condition, plus each job's token limit.
struct JobStop<'a> {
    jobs: &'a [usize],
    limits: &'a [usize],
    inner: &'a mut dyn StopCondition,
}

impl StopCondition for JobStop<'_> {
    fn is_done(&mut self, row: usize, generated: &[i64]) -> bool {
        generated.len() >= self.limits[row] || self.inner.is_done(self.jobs[row], generated)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use moebench_model::moe::{Selection, Selector, TopK};
    use moebench_model::Ffn;
    use std::sync::Arc;

    /// Causal, but a token's expert depends on the other rows of its pass: the mean of its
    /// position's column (like Expert Choice's `decode_batch` groups).
    #[derive(Debug)]
    struct ColumnMean;

    impl Selector for ColumnMean {
        fn describe(&self) -> String {
            "column_mean".into()
        }
        fn select(&self, logits: &Tensor, token_mask: Option<&Tensor>) -> Selection {
            let mean = logits.mean_dim(0, true, Kind::Float);
            TopK {
                k: 1,
                norm: moebench_model::config::RouterNorm::SoftmaxTopk,
            }
            .select(&(logits + mean), token_mask)
        }
        fn is_per_token(&self) -> bool {
            false
        }
    }

    /// Ragged passes are packed only when every selector routes a token by its own logits,
    /// and never under [`Reuse::Nothing`]; lookup decoding follows the reuse mode.
    #[test]
    fn ragged_passes_pack_only_for_per_token_routing() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/tiny/mixtral");
        let mut model = Model::load(&dir, Device::Cpu, Kind::Float).unwrap();
        let flags = |model: &Model, reuse: Reuse| {
            let engine = Engine::new(
                model,
                Batching {
                    batch_size: 4,
                    token_budget: 1024,
                    max_length: 64,
                },
            );
            let run = Execution::new(&engine, Plan::new(&[], reuse), &[], reuse);
            (run.pack_ragged, run.lookup_decoding)
        };
        assert_eq!(flags(&model, Reuse::SharedPrefixes), (true, true));
        assert_eq!(flags(&model, Reuse::LongerPasses), (true, true));
        assert_eq!(flags(&model, Reuse::Nothing), (false, false));
        for block in &mut model.layers {
            if let Ffn::Moe(moe) = &mut block.ffn {
                moe.selector = Arc::new(ColumnMean);
            }
        }
        assert_eq!(flags(&model, Reuse::SharedPrefixes), (false, true));
    }
}
