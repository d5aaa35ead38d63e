//! Criterion benchmarks of the prefix KV cache (issue #14 item 5): building the prefix trie and
//! plan for an MMLU-5-shot-shaped workload, and scoring few-shot workloads on SmolLM2 with the
//! cache (shared prefixes encoded once) against passes from scratch. Run with
//! `cargo bench -p moebench-eval --bench prefix_cache`; the SmolLM2 part needs the model in the
//! Hugging Face cache (`moebench prepare`) and says SKIP otherwise. Figures in
//! docs/performance.md.
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use moebench_eval::engine::{Batching, Engine, Job};
use moebench_eval::plan::{Plan, PlanJob, Reuse};
use moebench_eval::trie::PrefixTrie;
use moebench_model::generate::StopOnIds;
use moebench_model::Model;
use tch::{Device, Kind};

/// Deterministic token ids in `[100, 40000)` (a 64-bit LCG).
struct Tokens(u64);

impl Tokens {
    fn take(&mut self, n: usize) -> Vec<i64> {
        (0..n)
            .map(|_| {
                self.0 = self
                    .0
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                100 + ((self.0 >> 33) % 39_900) as i64
            })
            .collect()
    }
}

/// `subjects` × `docs` multiple-choice documents: a `preamble`-token few-shot prefix per subject
/// (shared by its documents, as MMLU's `first_n` sampler makes it), a `question`-token question
/// and four `choice`-token choices (a choice of 1 token: every choice scores the same input).
fn few_shot(
    subjects: usize,
    docs: usize,
    preamble: usize,
    question: usize,
    choice: usize,
) -> Vec<Job> {
    let mut rng = Tokens(42);
    let mut jobs = Vec::new();
    for _ in 0..subjects {
        let shots = rng.take(preamble);
        for _ in 0..docs {
            let context = [shots.clone(), rng.take(question)].concat();
            for _ in 0..4 {
                let full = [context.clone(), rng.take(choice)].concat();
                jobs.push(Job::Score {
                    input: full[..full.len() - 1].to_vec(),
                    targets: full[context.len()..].to_vec(),
                });
            }
        }
    }
    jobs
}

fn plan_jobs(jobs: &[Job]) -> Vec<PlanJob<'_>> {
    jobs.iter()
        .map(|j| match j {
            Job::Score { input, targets } => PlanJob {
                tokens: input,
                targets,
                generates: false,
            },
            Job::Generate { prompt, .. } => PlanJob {
                tokens: prompt,
                targets: &[],
                generates: true,
            },
        })
        .collect()
}

/// MMLU 5-shot on all 57 subjects is ~14k documents; this is 3 subjects × 300 documents × 4
/// choices of 2 tokens (3,600 inputs of ~580 tokens, 2.1 M tokens).
fn trie(c: &mut Criterion) {
    let jobs = few_shot(3, 300, 500, 80, 2);
    let inputs: Vec<&[i64]> = plan_jobs(&jobs).iter().map(|j| j.tokens).collect();
    let mut group = c.benchmark_group("prefix_trie_3600_inputs");
    group.sample_size(20);
    group.bench_function("build_trie", |b| b.iter(|| PrefixTrie::build(&inputs)));
    group.bench_function("build_plan", |b| {
        b.iter(|| Plan::new(&plan_jobs(&jobs), Reuse::SharedPrefixes))
    });
    group.finish();
}

fn smollm2() -> Option<Model> {
    let hub = moebench_hub::HubConfig::from_env().ok()?;
    let checkpoint =
        moebench_model::resolve_checkpoint(&hub, "HuggingFaceTB/SmolLM2-135M-Instruct").ok()?;
    checkpoint.load(Device::Cpu, Kind::Float).ok()
}

/// Scoring on SmolLM2, batch size 8: MMLU-5-shot-shaped (1 subject, 8 documents, 500-token
/// preamble, 80-token questions, 1-token choices) and HellaSwag-shaped (8 documents, 100-token
/// contexts, four 24-token endings), with the cache and from scratch.
fn kv_reuse(c: &mut Criterion) {
    let Some(model) = smollm2() else {
        eprintln!(
            "SKIP kv_reuse: SmolLM2 is not in the Hugging Face cache (run `moebench prepare`)"
        );
        return;
    };
    let engine = Engine::new(
        &model,
        Batching {
            batch_size: 8,
            token_budget: 8192,
            max_length: 2048,
        },
    );
    let mut group = c.benchmark_group("kv_reuse_smollm2");
    group.sample_size(10);
    for (name, jobs) in [
        ("mmlu_5shot_like", few_shot(1, 8, 500, 80, 1)),
        ("hellaswag_like", few_shot(8, 1, 0, 100, 24)),
    ] {
        for (mode, reuse) in [
            ("prefix_cache", Reuse::SharedPrefixes),
            ("no_prefix_cache", Reuse::LongerPasses),
        ] {
            group.bench_with_input(BenchmarkId::new(name, mode), &jobs, |b, jobs| {
                b.iter(|| {
                    engine
                        .run(jobs, reuse, &mut StopOnIds(Vec::new()))
                        .expect("scores")
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, trie, kv_reuse);
criterion_main!(benches);
