//! `moebench run SUITE.yaml`: every (model × method) of a suite on every task, plus
//! measurements, stored incrementally in a run directory (resumable), then a markdown
//! leaderboard on stdout and the HTML report (`report.path`, `moebench_report::render`).
//!
//! Everything is checked before anything is written: the suite, every task (data loaded) and
//! every model reference (resolved, downloaded when missing). Then, per (model, method) with
//! unfinished jobs, the model is loaded once, the method applied once, and its jobs run.
//! Models without a `tokenizer.json` (e.g. the tiny test fixtures) get measures only: their
//! task jobs are skipped, with the reason shown by `--dry-run` and in the run's log.
use crate::common::{task_dirs, HubArgs, Loaded, DEFAULT_TOKEN_BUDGET};
use anyhow::{bail, Context, Result};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use moebench_eval::{evaluate_task, EvalOptions, LanguageModel, LmSettings};
use moebench_hub::{local_fingerprint, HubConfig};
use moebench_model::cost::{flops_per_token, param_counts};
use moebench_model::device::{device_name, parse_device, parse_kind};
use moebench_model::{resolve_checkpoint, Checkpoint, Model, Tokenizer};
use moebench_report::{render, TARGETS_FILE};
use moebench_suite::leaderboard::leaderboard_markdown;
use moebench_suite::plan::Group;
use moebench_suite::store::finished_jobs;
use moebench_suite::{
    load_suite, read_records, write_atomic, Job, JobKind, Measurement, MethodConfig, Plan,
    RecordKind, ResolvedModel, ResolvedTask, RunInfo, RunStore, Suite,
};
use moebench_tasks::{Task, TaskIndex};
use std::collections::BTreeSet;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tch::{Device, Kind};

#[derive(clap::Args)]
pub struct Args {
    /// The suite YAML (docs/suite-format.md).
    suite: PathBuf,
    /// Where results go; rerunning into the same directory resumes [default: runs/<suite name>].
    #[arg(long)]
    run_dir: Option<PathBuf>,
    /// Print the jobs and whether each is done, to run or skipped; run and write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Only the jobs whose `model/method/task` label contains PATTERN (`measure` for measures).
    #[arg(long, value_name = "PATTERN")]
    only: Option<String>,
    /// No progress bars and no progress lines.
    #[arg(long)]
    quiet: bool,
    #[command(flatten)]
    hub: HubArgs,
}

/// A suite with its tasks loaded and its models resolved: ready to run.
struct Prepared {
    plan: Plan,
    /// Parallel to `plan.tasks`.
    tasks: Vec<Task>,
    /// Parallel to the suite's models.
    checkpoints: Vec<Checkpoint>,
    device: Device,
    kind: Kind,
}

pub fn run(args: Args) -> Result<()> {
    let hub = args.hub.config()?;
    let mut prepared = prepare(&args.suite, &hub)?;
    if let Some(pattern) = &args.only {
        prepared.plan.retain_matching(pattern);
        if prepared.plan.jobs.is_empty() {
            bail!("--only {pattern}: no job label contains it (labels read model/method/task)");
        }
    }
    let run_dir = args
        .run_dir
        .clone()
        .unwrap_or_else(|| Path::new("runs").join(&prepared.plan.suite.name));
    if args.dry_run {
        print!("{}", prepared.plan.table(&finished_jobs(&run_dir)?));
        return Ok(());
    }
    let store = RunStore::open(&run_dir, &RunInfo::new(&prepared.plan.suite))?;
    write_atomic(
        &run_dir.join(TARGETS_FILE),
        &serde_json::to_vec_pretty(&prepared.plan.suite.targets)?,
    )?;
    let progress = Progress::new(args.quiet);
    Runner {
        prepared: &prepared,
        store: &store,
        progress: &progress,
    }
    .run_all()?;
    progress.clear();
    let records = read_records(&run_dir)?;
    print!("{}", leaderboard_markdown(&records));
    if records.is_empty() {
        progress.log("no job finished: no report");
        return Ok(());
    }
    let report_path = prepared.plan.suite.report_path(&run_dir);
    let written = render(&run_dir, &[], Some(&report_path)).context("rendering the report")?;
    println!("report: {}", written.html.display());
    Ok(())
}

/// Parses the suite, loads every task and resolves every model, writing nothing.
fn prepare(suite_path: &Path, hub: &HubConfig) -> Result<Prepared> {
    let suite = load_suite(suite_path)?;
    if suite.measure.latency.enabled {
        bail!(
            "{}: measure.latency is not run by `moebench run` yet; use `moebench bench`",
            suite.locate("enabled", "true")
        );
    }
    let (resolved, tasks): (Vec<_>, Vec<_>) = load_tasks(&suite, hub)?.into_iter().unzip();
    let device = parse_device(suite.defaults.device.as_str())?;
    let kind = parse_kind(suite.defaults.dtype.as_str())?;
    let (checkpoints, models) = resolve_models(&suite, hub)?;
    let device_kind = if device.is_cuda() { "cuda" } else { "cpu" };
    let plan = Plan::new(suite, models, resolved, device_kind)?;
    Ok(Prepared {
        plan,
        tasks,
        checkpoints,
        device,
        kind,
    })
}

/// Every task of the suite (groups and tags expanded), data loaded, in suite order.
pub fn load_tasks(suite: &Suite, hub: &HubConfig) -> Result<Vec<(ResolvedTask, Task)>> {
    let index = TaskIndex::scan(&task_dirs(&[]))?;
    let mut out = Vec::new();
    for (entry_index, entry) in suite.tasks.iter().enumerate() {
        let at = || suite.locate("name", &entry.name);
        let node = index.resolve(&suite.task_lookup(entry)).with_context(at)?;
        for spec in node.tasks() {
            let task = Task::load(spec.clone(), hub, entry.num_fewshot).with_context(at)?;
            let resolved = ResolvedTask {
                name: task.name().to_owned(),
                entry: entry_index,
                content_hash: task.content_hash().to_owned(),
                num_fewshot: task.num_fewshot(),
            };
            out.push((resolved, task));
        }
    }
    Ok(out)
}

/// Resolves every model; a local directory's sha is its content fingerprint.
fn resolve_models(suite: &Suite, hub: &HubConfig) -> Result<(Vec<Checkpoint>, Vec<ResolvedModel>)> {
    let mut checkpoints = Vec::new();
    let mut models = Vec::new();
    for m in &suite.models {
        let checkpoint =
            resolve_checkpoint(hub, &m.reference).with_context(|| suite.locate("id", &m.id))?;
        let sha = match &checkpoint.commit {
            Some(commit) => commit.clone(),
            None => local_fingerprint(&checkpoint.dir)?,
        };
        let no_tasks_reason = (!checkpoint.dir.join("tokenizer.json").is_file())
            .then(|| format!("{} has no tokenizer.json", m.label));
        checkpoints.push(checkpoint);
        models.push(ResolvedModel {
            sha,
            no_tasks_reason,
        });
    }
    Ok((checkpoints, models))
}

/// Applies a method configuration to a loaded model (`dense`: the identity).
fn apply_method(_model: &mut Model, method: &MethodConfig) -> Result<()> {
    match method.name.as_str() {
        "dense" => Ok(()),
        other => bail!("method `{other}` is accepted by suites but not implemented by the runner"),
    }
}

struct Runner<'a> {
    prepared: &'a Prepared,
    store: &'a RunStore,
    progress: &'a Progress,
}

impl Runner<'_> {
    fn run_all(&self) -> Result<()> {
        let plan = &self.prepared.plan;
        let finished = self.store.finished_jobs()?;
        let todo: Vec<&Job> = plan
            .jobs
            .iter()
            .filter(|j| j.skip.is_none() && !finished.contains(&j.hash))
            .collect();
        self.progress.start(todo.len());
        self.progress.log(&format!(
            "{} jobs: {} done earlier, {} skipped, {} to run (run directory {})",
            plan.jobs.len(),
            plan.jobs
                .iter()
                .filter(|j| finished.contains(&j.hash))
                .count(),
            plan.jobs.iter().filter(|j| j.skip.is_some()).count(),
            todo.len(),
            self.store.dir().display()
        ));
        for group in plan.groups() {
            self.run_group(&group, &finished)?;
        }
        Ok(())
    }

    /// Loads the group's model once, applies its method once, and runs its unfinished jobs.
    fn run_group(&self, group: &Group, finished: &BTreeSet<String>) -> Result<()> {
        let mut todo = Vec::new();
        for job in &group.jobs {
            match &job.skip {
                Some(reason) => self.progress.log(&format!("skip {}: {reason}", job.label)),
                None if finished.contains(&job.hash) => self
                    .progress
                    .log(&format!("done {} (earlier run)", job.label)),
                None => todo.push(*job),
            }
        }
        if todo.is_empty() {
            return Ok(());
        }
        let p = self.prepared;
        let method = &p.plan.suite.methods[group.method];
        let spinner = self.progress.spinner(&format!(
            "loading {}, applying {}",
            p.plan.suite.models[group.model].label, method.label
        ));
        let mut loaded = Loaded::new(p.checkpoints[group.model].clone(), p.device, p.kind)?;
        apply_method(&mut loaded.model, method)
            .with_context(|| format!("applying {}", method.label))?;
        self.progress.remove(&spinner);
        let needs_tokenizer = todo.iter().any(|j| matches!(j.kind, JobKind::Task(_)));
        let tokenizer = needs_tokenizer.then(|| loaded.tokenizer()).transpose()?;
        for job in todo {
            let bar = self.progress.spinner(&job.label);
            let start = Instant::now();
            let (kind, measurements) = match job.kind {
                JobKind::Measure => (RecordKind::Measure, self.measure(&loaded.model)),
                JobKind::Task(t) => {
                    let tokenizer = tokenizer.as_ref().expect("loaded for task jobs");
                    let m = self
                        .evaluate(&loaded.model, tokenizer, job, t)
                        .with_context(|| job.label.clone())?;
                    (RecordKind::Metric, m)
                }
            };
            let template = p.plan.record_template(job, &device_name(p.device));
            self.store.commit(
                &template,
                kind,
                &measurements,
                start.elapsed().as_secs_f64(),
            )?;
            self.progress.finish_job(
                bar,
                &format!("ran {} in {:.1}s", job.label, start.elapsed().as_secs_f64()),
            );
        }
        Ok(())
    }

    /// Parameter counts and analytic FLOPs per token (at context 1, as `moebench inspect`).
    fn measure(&self, model: &Model) -> Vec<Measurement> {
        let measure = &self.prepared.plan.suite.measure;
        let mut out = Vec::new();
        let value = |metric: &str, value: f64, protocol: Option<&str>| Measurement {
            metric: metric.to_owned(),
            value,
            stderr: None,
            n: None,
            higher_is_better: Some(false),
            protocol: protocol.map(str::to_owned),
        };
        if measure.params {
            let counts = param_counts(model, None);
            out.push(value("params_total", counts.total as f64, None));
            out.push(value("params_active", counts.active_per_token, None));
        }
        if measure.flops {
            let flops = flops_per_token(model, 1, None).total;
            out.push(value("flops_per_token", flops, Some("analytic(context=1)")));
        }
        out
    }

    /// Evaluates task `t` of the plan, writes its samples and returns its metrics.
    fn evaluate(
        &self,
        model: &Model,
        tokenizer: &Tokenizer,
        job: &Job,
        t: usize,
    ) -> Result<Vec<Measurement>> {
        let plan = &self.prepared.plan;
        let defaults = &plan.suite.defaults;
        let settings = LmSettings {
            max_length: defaults
                .max_length
                .map_or_else(|| LanguageModel::default_max_length(model), usize::from),
            batch_size: defaults.batch_size.get(),
            token_budget: DEFAULT_TOKEN_BUDGET,
        };
        let opts = EvalOptions {
            limit: plan.limit(&plan.tasks[t]),
            fewshot_seed: defaults.seed,
            bootstrap_iters: defaults.bootstrap_iters,
        };
        let lm = LanguageModel::new(model, tokenizer, settings);
        let outcome = evaluate_task(&lm, &self.prepared.tasks[t], &opts)?;
        self.store.write_samples(&job.hash, &outcome.samples)?;
        Ok(outcome
            .metrics
            .iter()
            .map(|(key, m)| Measurement {
                metric: key.clone(),
                value: m.value,
                stderr: m.stderr,
                n: Some(outcome.n_effective as u64),
                higher_is_better: Some(m.higher_is_better),
                protocol: outcome.ppl_protocol.clone(),
            })
            .collect())
    }
}

/// Progress bars (overall with ETA, one spinner per job) on a terminal, plain lines otherwise;
/// nothing with `--quiet`.
struct Progress {
    quiet: bool,
    multi: MultiProgress,
    overall: ProgressBar,
}

impl Progress {
    fn new(quiet: bool) -> Self {
        let target = match quiet || !std::io::stderr().is_terminal() {
            true => ProgressDrawTarget::hidden(),
            false => ProgressDrawTarget::stderr(),
        };
        let multi = MultiProgress::with_draw_target(target);
        let overall = multi.add(ProgressBar::new(0));
        overall.set_style(
            ProgressStyle::with_template(
                "{prefix} [{bar:30}] {pos}/{len} jobs, {elapsed} elapsed, ETA {eta}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        overall.set_prefix("moebench run");
        Self {
            quiet,
            multi,
            overall,
        }
    }

    fn start(&self, jobs: usize) {
        self.overall.set_length(jobs as u64);
        self.overall.reset_eta();
    }

    /// A spinner for one step (a job, loading a model).
    fn spinner(&self, label: &str) -> ProgressBar {
        let bar = self
            .multi
            .insert_before(&self.overall, ProgressBar::new_spinner());
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg} {elapsed}").expect("valid template"),
        );
        bar.set_message(label.to_owned());
        bar.enable_steady_tick(Duration::from_millis(200));
        bar
    }

    fn remove(&self, spinner: &ProgressBar) {
        spinner.finish_and_clear();
        self.multi.remove(spinner);
    }

    fn finish_job(&self, bar: ProgressBar, line: &str) {
        self.remove(&bar);
        self.overall.inc(1);
        self.log(line);
    }

    /// A line on stderr, above the bars when they are drawn.
    fn log(&self, line: &str) {
        match (self.quiet, self.multi.is_hidden()) {
            (true, _) => {}
            (false, true) => eprintln!("{line}"),
            (false, false) => self.multi.suspend(|| eprintln!("{line}")),
        }
    }

    fn clear(&self) {
        self.overall.finish_and_clear();
    }
}
