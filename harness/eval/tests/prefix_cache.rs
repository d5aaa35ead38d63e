//! The prefix KV cache against passes from scratch, on the tiny random-weight checkpoint of every
//! supported family (tests/fixtures/tiny, f32, CPU): few-shot-shaped workloads (shared
//! preambles, shared multiple-choice contexts, continuations that start inside a shared prefix,
//! inputs that are prefixes of others, generations), batched with padding and under memory
//! limits that force evictions.
//!
//! Bound checked: every log-likelihood (a sum over the scored tokens) within
//! [`LL_BOUND`] absolute of the same job run alone in its own pass from scratch, for every family;
//! greedy flags and greedy generations identical.
use moebench_eval::engine::{Batching, Engine, Job, JobOutput, Run};
use moebench_eval::plan::Reuse;
use moebench_eval::{memory, PrefixCache};
use moebench_model::generate::StopOnIds;
use moebench_model::moe::{Selection, Selector, TopK};
use moebench_model::{Ffn, Model};
use std::path::PathBuf;
use std::sync::Arc;
use tch::{Device, Kind, Tensor};

/// Absolute bound on |Δ log-likelihood| between the cache and passes from scratch (f32; the
/// differences are float summation order in matmuls of different shapes, observed ≤ ~2e-6).
const LL_BOUND: f64 = 1e-4;

const FAMILIES: [&str; 8] = [
    "llama",
    "llama3",
    "qwen2",
    "qwen3",
    "mixtral",
    "qwen2_moe",
    "qwen3_moe",
    "olmoe",
];

fn load(name: &str) -> Model {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/tiny")
        .join(name);
    Model::load(&dir, Device::Cpu, Kind::Float).unwrap()
}

/// A deterministic token stream in `[3, vocab)` (a 64-bit LCG).
struct Tokens(u64);

impl Tokens {
    fn take(&mut self, n: usize) -> Vec<i64> {
        (0..n)
            .map(|_| {
                self.0 = self
                    .0
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                3 + ((self.0 >> 33) % 125) as i64
            })
            .collect()
    }
}

/// Two "subjects", each a shared preamble and documents whose question is shared by four
/// choices; choices 0 and 1 share their first token, choice 3 is one token (its input is the
/// bare context, identical for every such choice); one job scores a continuation that starts
/// inside the shared preamble; one input is a prefix of another; a generation per document.
fn workload(seed: u64) -> Vec<Job> {
    let mut rng = Tokens(seed);
    let mut jobs = Vec::new();
    for subject in 0..2 {
        let preamble = rng.take(48 + 8 * subject);
        for doc in 0..3 {
            let context = [preamble.clone(), rng.take(6 + 5 * doc)].concat();
            let shared_first = rng.take(1);
            let choices = [
                [shared_first.clone(), rng.take(3)].concat(),
                [shared_first.clone(), rng.take(2)].concat(),
                rng.take(4),
                rng.take(1),
            ];
            for choice in choices {
                let full = [context.clone(), choice.clone()].concat();
                jobs.push(Job::Score {
                    input: full[..full.len() - 1].to_vec(),
                    targets: choice,
                });
            }
            jobs.push(Job::Generate {
                prompt: context.clone(),
                max_new_tokens: 5 + doc,
            });
        }
        // Scores the last 3 preamble tokens and 2 more: starts inside the shared prefix.
        let tail = rng.take(2);
        let full = [preamble.clone(), tail].concat();
        jobs.push(Job::Score {
            input: full[..full.len() - 1].to_vec(),
            targets: full[full.len() - 5..].to_vec(),
        });
        // A prefix of the preamble, scored on its own.
        jobs.push(Job::Score {
            input: preamble[..20].to_vec(),
            targets: preamble[11..21].to_vec(),
        });
    }
    jobs
}

fn run(model: &Model, jobs: &[Job], reuse: Reuse, batch_size: usize, token_budget: usize) -> Run {
    Engine::new(
        model,
        Batching {
            batch_size,
            token_budget,
            max_length: 256,
        },
    )
    .run(jobs, reuse, &mut StopOnIds(Vec::new()))
    .unwrap()
}

/// Each job alone, in its own pass from scratch.
fn reference(model: &Model, jobs: &[Job]) -> Vec<JobOutput> {
    jobs.iter()
        .map(|j| {
            let mut out = run(model, std::slice::from_ref(j), Reuse::Nothing, 1, 4096).outputs;
            out.remove(0)
        })
        .collect()
}

/// Largest |Δ log-likelihood|; panics on any difference in greedy flags or generations.
fn compare(what: &str, got: &[JobOutput], want: &[JobOutput]) -> f64 {
    assert_eq!(got.len(), want.len());
    let mut worst: f64 = 0.0;
    for (j, (g, w)) in got.iter().zip(want).enumerate() {
        match (g, w) {
            (JobOutput::Scored(g), JobOutput::Scored(w)) => {
                assert!(g.loglikelihood.is_finite(), "{what}: job {j}");
                assert_eq!(g.is_greedy, w.is_greedy, "{what}: job {j} greedy flag");
                worst = worst.max((g.loglikelihood - w.loglikelihood).abs());
            }
            (JobOutput::Generated(g), JobOutput::Generated(w)) => {
                assert_eq!(g, w, "{what}: job {j} generation")
            }
            _ => panic!("{what}: job {j} answered with the wrong kind"),
        }
    }
    worst
}

fn check_family(name: &str) {
    let model = load(name);
    let jobs = workload(7);
    let want = reference(&model, &jobs);
    let alone = run(&model, &jobs, Reuse::LongerPasses, 1, 4096);
    let cached = run(&model, &jobs, Reuse::SharedPrefixes, 1, 4096);
    let batched = run(&model, &jobs, Reuse::SharedPrefixes, 5, 4096);
    // A budget whose kept-prefix share (memory::PREFIX_CACHE_SHARE) holds ~80 positions of
    // keys and values: fewer than a preamble and two document contexts, so prefixes get evicted.
    let token_bytes = memory::bytes_per_token(&model.config, model.kind, 256);
    let kv_bytes = memory::kv_bytes_per_token(&model.config, model.kind);
    let tight_budget = (160 * kv_bytes / token_bytes).max(1) as usize;
    let tight = run(&model, &jobs, Reuse::SharedPrefixes, 3, tight_budget);
    assert!(
        tight.stats.evictions > 0,
        "{name}: the tight budget should evict ({:?})",
        tight.stats
    );
    assert!(
        cached.stats.positions < alone.stats.positions,
        "{name}: shared prefixes are encoded once ({:?} vs {:?})",
        cached.stats,
        alone.stats
    );
    for (what, r) in [
        ("no cache", &alone),
        ("cache, batch 1", &cached),
        ("cache, batch 5", &batched),
        ("cache, tight budget", &tight),
    ] {
        let worst = compare(&format!("{name}, {what}"), &r.outputs, &want);
        eprintln!("{name}, {what}: max |Δ loglikelihood| = {worst:.2e}");
        assert!(
            worst <= LL_BOUND,
            "{name}, {what}: log-likelihoods differ by {worst:e} > {LL_BOUND:e}"
        );
    }
}

macro_rules! family_tests {
    ($($test:ident => $name:literal),* $(,)?) => {
        $(#[test] fn $test() { check_family($name); })*
    };
}

family_tests! {
    cache_matches_passes_from_scratch_llama => "llama",
    cache_matches_passes_from_scratch_llama3 => "llama3",
    cache_matches_passes_from_scratch_qwen2 => "qwen2",
    cache_matches_passes_from_scratch_qwen3 => "qwen3",
    cache_matches_passes_from_scratch_mixtral => "mixtral",
    cache_matches_passes_from_scratch_qwen2_moe => "qwen2_moe",
    cache_matches_passes_from_scratch_qwen3_moe => "qwen3_moe",
    cache_matches_passes_from_scratch_olmoe => "olmoe",
}

#[test]
fn every_family_is_covered() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny");
    let mut present: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    present.sort();
    let mut tested: Vec<String> = FAMILIES.iter().map(|s| s.to_string()).collect();
    tested.sort();
    assert_eq!(present, tested);
}

/// Routing by each sequence's mean router logits: a token's experts depend on later tokens,
/// like Expert Choice or USMoE over a full sequence.
#[derive(Debug)]
struct SequenceMean;

impl Selector for SequenceMean {
    fn describe(&self) -> String {
        "sequence_mean".into()
    }
    fn select(&self, logits: &Tensor, token_mask: Option<&Tensor>) -> Selection {
        let mean = logits.mean_dim(1, true, Kind::Float);
        TopK {
            k: 1,
            norm: moebench_model::config::RouterNorm::SoftmaxTopk,
        }
        .select(&(logits + mean), token_mask)
    }
    fn is_causal(&self) -> bool {
        false
    }
}

/// A non-causal selector turns the cache off (recorded as such) and each distinct input gets
/// its own pass: the results equal single passes exactly, while sharing prefixes would change
/// them (which is why it is off).
#[test]
fn non_causal_routing_disables_prefix_reuse() {
    let mut model = load("mixtral");
    assert_eq!(PrefixCache::for_model(&model, true), PrefixCache::On);
    assert_eq!(PrefixCache::for_model(&model, false), PrefixCache::Off);
    for block in &mut model.layers {
        if let Ffn::Moe(moe) = &mut block.ffn {
            moe.selector = Arc::new(SequenceMean);
        }
    }
    let status = PrefixCache::for_model(&model, true);
    assert_eq!(status.reuse(), Reuse::Nothing);
    assert_eq!(
        status.to_string(),
        "off: non-causal routing (layer 0: sequence_mean)"
    );
    let jobs: Vec<Job> = workload(11)
        .into_iter()
        .filter(|j| matches!(j, Job::Score { .. }))
        .collect();
    let want = reference(&model, &jobs);
    let got = run(&model, &jobs, status.reuse(), 1, 4096);
    assert_eq!(compare("non-causal", &got.outputs, &want), 0.0);
    let shared = run(&model, &jobs, Reuse::SharedPrefixes, 1, 4096);
    let leaked = shared
        .outputs
        .iter()
        .zip(&want)
        .map(|(g, w)| match (g, w) {
            (JobOutput::Scored(g), JobOutput::Scored(w)) => {
                (g.loglikelihood - w.loglikelihood).abs()
            }
            _ => unreachable!("only scored jobs"),
        })
        .fold(0.0, f64::max);
    assert!(
        leaked > LL_BOUND,
        "sharing prefixes under non-causal routing changes the results ({leaked:e})"
    );
}

/// At batch 1, a zero-shot multiple-choice document takes two passes with the cache: its
/// context, then its choices together (they count as one request), with the same scores as
/// each job alone.
#[test]
fn a_documents_choices_share_one_pass_at_batch_one() {
    let model = load("llama");
    let mut rng = Tokens(11);
    // Long enough to be shared (plan::MIN_SAVED_TOKENS).
    let context = rng.take(24);
    let jobs: Vec<Job> = (1..=4)
        .map(|n| {
            let choice = rng.take(n);
            let full = [context.clone(), choice.clone()].concat();
            Job::Score {
                input: full[..full.len() - 1].to_vec(),
                targets: choice,
            }
        })
        .collect();
    let cached = run(&model, &jobs, Reuse::SharedPrefixes, 1, 4096);
    let alone = run(&model, &jobs, Reuse::LongerPasses, 1, 4096);
    assert_eq!(cached.stats.passes, 2, "{:?}", cached.stats);
    // Without the cache: one pass per choice, but the one-token choice reads its score off a
    // longer choice's pass (its input is the bare context).
    assert_eq!(alone.stats.passes, 3, "{:?}", alone.stats);
    let worst = compare(
        "choices in one pass",
        &cached.outputs,
        &reference(&model, &jobs),
    );
    assert!(worst <= LL_BOUND, "|Δ ll| = {worst:e}");
}

#[test]
fn bad_jobs_are_errors() {
    let model = load("llama");
    let engine = Engine::new(
        &model,
        Batching {
            batch_size: 1,
            token_budget: 256,
            max_length: 256,
        },
    );
    let err = |job: Job| {
        engine
            .run(&[job], Reuse::SharedPrefixes, &mut StopOnIds(Vec::new()))
            .unwrap_err()
            .to_string()
    };
    assert!(err(Job::Generate {
        prompt: vec![],
        max_new_tokens: 3
    })
    .contains("no tokens"));
    assert!(err(Job::Score {
        input: vec![5],
        targets: vec![]
    })
    .contains("0 targets"));
    let out = engine
        .run(
            &[Job::Generate {
                prompt: vec![5, 6],
                max_new_tokens: 0,
            }],
            Reuse::SharedPrefixes,
            &mut StopOnIds(Vec::new()),
        )
        .unwrap();
    assert_eq!(out.outputs, vec![JobOutput::Generated(vec![])]);
}
