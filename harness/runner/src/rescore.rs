//! Rescoring a run from its stored samples, without the model: every stored task metric is
//! recomputed from the sample logs and compared with what the run recorded. The documents are
//! rebuilt from the task files of the suite the run used (`run.json` names it); a job whose task
//! content hash or document hashes differ from what was stored is an error.
use crate::engine::load_tasks;
use crate::error::{bail, Context, Result, RunnerError};
use moebench_eval::evaluate::response_from_json;
use moebench_eval::{score_task, EvalOptions, SampleRecord, TaskOutcome};
use moebench_hub::HubConfig;
use moebench_suite::store::{read_run_info, read_samples};
use moebench_suite::{load_suite, read_records, Record, RecordKind, ResolvedTask};
use moebench_tasks::{build_instances, Response, Task};
use std::path::Path;

/// One rescored metric.
#[derive(Debug, Clone)]
pub struct Rescored {
    pub job: String,
    pub task: String,
    pub metric: String,
    pub stored: f64,
    /// `None` when rescoring did not produce the metric.
    pub rescored: Option<f64>,
}

impl Rescored {
    pub fn agrees(&self) -> bool {
        self.rescored.is_some_and(|v| agrees(v, self.stored))
    }
}

/// Everything rescored, and the jobs that cannot be (corpus perplexity protocols keep no
/// per-document samples).
#[derive(Debug, Clone, Default)]
pub struct Rescore {
    pub metrics: Vec<Rescored>,
    pub skipped: usize,
    /// Set when the suite file changed since the run (jobs are matched by task content hash).
    pub suite_changed: bool,
}

pub fn rescore(dir: &Path, hub: &HubConfig) -> Result<Rescore> {
    let info = read_run_info(dir)?.ok_or_else(|| {
        RunnerError::invalid(format!(
            "{}: no run.json, not a run directory",
            dir.display()
        ))
    })?;
    let suite = load_suite(&info.suite_path, &moebench_methods::catalogue::schemas())
        .context("the suite the run used")?;
    let mut unavailable = Vec::new();
    let tasks: Vec<(ResolvedTask, Task)> = load_tasks(&suite, hub, &mut |e| unavailable.push(e))?
        .into_iter()
        .filter_map(|(resolved, task)| Some((resolved, task?)))
        .collect();
    if let Some(first) = unavailable.first() {
        bail!("{first}");
    }
    let records = read_records(dir)?;
    let mut out = Rescore {
        suite_changed: suite.sha256 != info.suite_sha256,
        ..Rescore::default()
    };
    for job in metric_jobs(&records) {
        let protocol = job[0].protocol.as_deref().unwrap_or_default();
        if protocol.starts_with("gptq_concat") || protocol.starts_with("strided") {
            out.skipped += 1;
            continue;
        }
        let outcome = rescore_job(dir, &tasks, job, suite.defaults.bootstrap_iters)?;
        for r in job {
            out.metrics.push(Rescored {
                job: r.label(),
                task: r.task.clone().unwrap_or_default(),
                metric: r.metric.clone(),
                stored: r.value,
                rescored: outcome.metrics.get(&r.metric).map(|m| m.value),
            });
        }
    }
    Ok(out)
}

/// Relative tolerance of a rescored value: the per-document scores are the same numbers, but a
/// metric aggregated in another order (a bootstrap, a perplexity's exponent) may differ in its
/// last bits.
pub const RESCORE_TOLERANCE: f64 = 1e-9;

fn agrees(new: f64, stored: f64) -> bool {
    (new.is_nan() && stored.is_nan())
        || (new - stored).abs() <= RESCORE_TOLERANCE * stored.abs().max(1.0)
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
        .map(|v| {
            response_from_json(v)
                .ok_or_else(|| RunnerError::invalid(format!("unreadable stored response {v}")))
        })
        .collect()
}
