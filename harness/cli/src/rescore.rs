//! `moebench rescore RUN_DIR`: recomputes every stored task metric from the run's sample logs,
//! without the model, and prints stored and recomputed values side by side.
//!
//! The documents are rebuilt from the task files of the suite the run used (`run.json`
//! names it); a job whose task content hash or document hashes differ from what was stored is
//! an error. Nothing is written: the store keeps the numbers the run produced.
use crate::common::HubArgs;
use crate::run::load_tasks;
use anyhow::{bail, Context, Result};
use moebench_eval::evaluate::response_from_json;
use moebench_eval::{score_task, EvalOptions, SampleRecord, TaskOutcome};
use moebench_suite::store::{read_run_info, read_samples};
use moebench_suite::{load_suite, read_records, Record, RecordKind, ResolvedTask};
use moebench_tasks::{build_instances, Response, Task};
use std::fmt::Write;
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct Args {
    /// A directory written by `moebench run`.
    run_dir: PathBuf,
    #[command(flatten)]
    hub: HubArgs,
}

pub fn run(args: Args) -> Result<()> {
    let dir = &args.run_dir;
    let info = read_run_info(dir)?
        .with_context(|| format!("{}: no run.json, not a run directory", dir.display()))?;
    let suite = load_suite(&info.suite_path).context("the suite the run used")?;
    if suite.sha256 != info.suite_sha256 {
        eprintln!(
            "note: {} changed since the run; jobs are matched by task name and content hash",
            info.suite_path.display()
        );
    }
    let tasks = load_tasks(&suite, &args.hub.config()?)?;
    let records = read_records(dir)?;
    let mut table = String::from("|job|task|metric|stored|rescored|\n|---|---|---|---:|---:|\n");
    let (mut compared, mut differ, mut skipped) = (0, 0, 0);
    for job in metric_jobs(&records) {
        // Corpus perplexity protocols keep no per-document samples to rescore from.
        let protocol = job[0].protocol.as_deref().unwrap_or_default();
        if protocol.starts_with("gptq_concat") || protocol.starts_with("strided") {
            skipped += 1;
            continue;
        }
        let outcome = rescore_job(dir, &tasks, job, suite.defaults.bootstrap_iters)?;
        for r in job {
            let new = outcome.metrics.get(&r.metric).map(|m| m.value);
            let same = new.is_some_and(|v| v == r.value || (v.is_nan() && r.value.is_nan()));
            compared += 1;
            differ += usize::from(!same);
            let new = new.map_or("missing".into(), |v| format!("{v:.6}"));
            let task = r.task.as_deref().unwrap_or_default();
            let _ = writeln!(
                table,
                "|{}|{task}|{}|{:.6}|{new}|",
                r.label(),
                r.metric,
                r.value
            );
        }
    }
    print!("{table}");
    println!("{compared} metrics rescored, {differ} differ from the stored values");
    if skipped > 0 {
        println!("{skipped} jobs skipped: corpus perplexity protocols (gptq_concat, strided) keep no per-document samples");
    }
    Ok(())
}

/// The metric records of each finished task job, in file order.
fn metric_jobs(records: &[Record]) -> Vec<&[Record]> {
    records
        .chunk_by(|a, b| a.job == b.job)
        .filter(|chunk| chunk[0].kind == RecordKind::Metric)
        .map(|chunk| &chunk[..chunk.len() - 1])
        .collect()
}

/// Scores the stored samples of one job again.
fn rescore_job(
    dir: &Path,
    tasks: &[(ResolvedTask, Task)],
    job: &[Record],
    bootstrap_iters: usize,
) -> Result<TaskOutcome> {
    let first = &job[0];
    let Some((_, task)) = tasks.iter().find(|(t, _)| {
        Some(&t.name) == first.task.as_ref() && Some(&t.content_hash) == first.task_hash.as_ref()
    }) else {
        bail!(
            "job {} ({}): task `{}` with content hash {} is not in the suite any more (its files or settings changed)",
            first.job,
            first.label(),
            first.task.as_deref().unwrap_or_default(),
            first.task_hash.as_deref().unwrap_or_default()
        );
    };
    let samples: Vec<SampleRecord> = read_samples(dir, &first.job)?;
    let limit = first.n.map(|n| n as usize);
    let instances = build_instances(task, first.seed, limit)?;
    if instances.len() != samples.len() {
        bail!(
            "job {}: {} stored samples for {} documents",
            first.job,
            samples.len(),
            instances.len()
        );
    }
    let mut docs = Vec::with_capacity(samples.len());
    for (inst, sample) in instances.iter().zip(&samples) {
        if inst.doc_id != sample.doc_id || inst.hashes.doc != sample.doc_hash {
            bail!(
                "job {}: stored sample of doc {} does not match document {} of task `{}` (doc hash differs)",
                first.job,
                sample.doc_id,
                inst.doc_id,
                task.name()
            );
        }
        docs.push((
            inst,
            responses(sample)
                .with_context(|| format!("job {}, doc {}", first.job, sample.doc_id))?,
        ));
    }
    let opts = EvalOptions {
        limit,
        fewshot_seed: first.seed,
        bootstrap_iters,
        ppl_protocol: None,
    };
    Ok(score_task(task, &docs, &opts)?)
}

fn responses(sample: &SampleRecord) -> Result<Vec<Response>> {
    sample
        .responses
        .iter()
        .map(|v| response_from_json(v).with_context(|| format!("unreadable stored response {v}")))
        .collect()
}
