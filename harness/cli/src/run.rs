//! `moebench run SUITE.yaml`: every (model × method) of a suite on every task, plus
//! measurements, stored incrementally in a run directory (resumable), then a markdown
//! leaderboard on stdout and the HTML report (`report.path`, `moebench_report::render`).
//!
//! Everything is checked before anything is written: the suite, every task (data loaded) and
//! every model reference (resolved, downloaded when missing). Then, per (model, method) with
//! unfinished jobs, the model is loaded once, the method applied once, and its jobs run.
//! Models without a `tokenizer.json` (e.g. the tiny test fixtures) get measures only: their
//! task jobs are skipped, with the reason shown by `--dry-run` and in the run's log.
use crate::bench;
use crate::calibration::{calibration_data, with_mix_weights, CalibrationData};
use crate::common::{task_dirs, HubArgs, Loaded, TokenBudget};
use crate::methods::{apply_method, MethodContext};
use crate::train::{train_checkpoint, training_texts, Start};
use anyhow::{bail, Context, Result};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use moebench_eval::protocols::PplProtocol;
use moebench_eval::{evaluate_task, EvalOptions, LanguageModel, LmSettings};
use moebench_hub::{local_fingerprint, HubConfig};
use moebench_methods::calibration::observe;
use moebench_methods::diagnostics::{LayerDiagnostics, RoutingDiagnostics};
use moebench_model::cost::{bytes_per_decode_token, flops_per_token, param_counts};
use moebench_model::device::{device_name, kind_name, parse_device, parse_kind};
use moebench_model::{resolve_checkpoint, Checkpoint, Ffn, Model, Tokenizer};
use moebench_report::{render, REPORT_SPEC_FILE, TARGETS_FILE};
use moebench_suite::leaderboard::leaderboard_markdown;
use moebench_suite::plan::Group;
use moebench_suite::store::finished_jobs;
use moebench_suite::{
    load_suite, read_records, write_atomic, Job, JobKind, LayerLoads, Measurement, Plan,
    RecordKind, ResolvedModel, ResolvedTask, RoutingLog, RunInfo, RunStore, Suite,
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
    /// Parallel to `plan.tasks`; `None` only in a dry run, for a task that could not load.
    tasks: Vec<Option<Task>>,
    /// Parallel to the suite's models; `None` only in a dry run, for a model not available.
    checkpoints: Vec<Option<Checkpoint>>,
    /// Dry run: what could not be loaded here (and would fail a real run).
    notes: Vec<String>,
    device: Device,
    kind: Kind,
}

pub fn run(args: Args) -> Result<()> {
    let hub = args.hub.config()?;
    let mut prepared = prepare(&args.suite, &hub, args.dry_run)?;
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
        for note in &prepared.notes {
            println!("note: {note}");
        }
        return Ok(());
    }
    let store = RunStore::open(&run_dir, &RunInfo::new(&prepared.plan.suite))?;
    write_atomic(
        &run_dir.join(TARGETS_FILE),
        &serde_json::to_vec_pretty(&prepared.plan.suite.targets)?,
    )?;
    write_atomic(
        &run_dir.join(REPORT_SPEC_FILE),
        &serde_json::to_vec_pretty(&prepared.plan.suite.report)?,
    )?;
    let progress = Progress::new(args.quiet);
    Runner {
        prepared: &prepared,
        store: &store,
        progress: &progress,
        hub: &hub,
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

/// Parses the suite, loads every task and resolves every model, writing nothing. A dry run
/// plans what it can: a task or model that cannot be loaded here (e.g. a Hub dataset that is
/// not cached, offline) becomes a note instead of an error.
fn prepare(suite_path: &Path, hub: &HubConfig, dry_run: bool) -> Result<Prepared> {
    let suite = load_suite(suite_path)?;
    let latency = &suite.measure.latency;
    if latency.enabled
        && (latency.new_tokens < 2
            || latency.prompt_tokens == 0
            || latency.repeats == 0
            || latency.batch_sizes.contains(&0))
    {
        bail!(
            "{}: measure.latency needs new_tokens ≥ 2, prompt_tokens ≥ 1, repeats ≥ 1 and \
             batch sizes ≥ 1",
            suite.locate("latency", "")
        );
    }
    for entry in &suite.tasks {
        if let Some(p) = &entry.ppl_protocol {
            PplProtocol::parse(p).with_context(|| suite.locate("ppl_protocol", p))?;
        }
    }
    let mut notes = Vec::new();
    if let Some(missing) = suite.calibration_missing.first() {
        if !dry_run {
            bail!("{missing}");
        }
        notes.extend(suite.calibration_missing.iter().cloned());
    }
    let notes_if_dry = if dry_run { Some(&mut notes) } else { None };
    let (resolved, tasks): (Vec<_>, Vec<_>) = load_tasks_noting(&suite, hub, notes_if_dry)?
        .into_iter()
        .unzip();
    let device_spec = suite.defaults.device.as_str();
    let device = match parse_device(device_spec) {
        Ok(device) => device,
        Err(e) if dry_run => {
            notes.push(format!("{}: {e}", suite.locate("device", device_spec)));
            Device::Cpu
        }
        Err(e) => return Err(e.into()),
    };
    let kind = parse_kind(suite.defaults.dtype.as_str())?;
    let notes_if_dry = if dry_run { Some(&mut notes) } else { None };
    let (checkpoints, models) = resolve_models(&suite, hub, notes_if_dry)?;
    let device_kind = if device.is_cuda() || device_spec.starts_with("cuda") {
        "cuda"
    } else {
        "cpu"
    };
    let plan = Plan::new(suite, models, resolved, device_kind)?;
    Ok(Prepared {
        plan,
        tasks,
        checkpoints,
        notes,
        device,
        kind,
    })
}

/// Every task of the suite (groups and tags expanded), data loaded, in suite order.
pub fn load_tasks(suite: &Suite, hub: &HubConfig) -> Result<Vec<(ResolvedTask, Task)>> {
    Ok(load_tasks_noting(suite, hub, None)?
        .into_iter()
        .map(|(r, t)| (r, t.expect("no notes: every task loaded")))
        .collect())
}

/// [`load_tasks`]; with `notes`, a task whose data cannot be loaded is noted and kept unloaded.
fn load_tasks_noting(
    suite: &Suite,
    hub: &HubConfig,
    mut notes: Option<&mut Vec<String>>,
) -> Result<Vec<(ResolvedTask, Option<Task>)>> {
    let index = TaskIndex::scan(&task_dirs(&[]))?;
    let mut out = Vec::new();
    for (entry_index, entry) in suite.tasks.iter().enumerate() {
        let at = || suite.locate("name", &entry.name);
        let node = match (
            index.resolve(&suite.task_lookup(entry)).with_context(at),
            notes.as_deref_mut(),
        ) {
            (Ok(node), _) => node,
            (Err(e), Some(notes)) => {
                notes.push(format!("task {}: {e:#}", entry.name));
                continue;
            }
            (Err(e), None) => return Err(e),
        };
        for spec in node.tasks() {
            let loaded = Task::load(spec.clone(), hub, entry.num_fewshot).with_context(at);
            let (resolved, task) = match (loaded, notes.as_deref_mut()) {
                (Ok(task), _) => (
                    ResolvedTask {
                        name: task.name().to_owned(),
                        entry: entry_index,
                        content_hash: task.content_hash().to_owned(),
                        num_fewshot: task.num_fewshot(),
                    },
                    Some(task),
                ),
                (Err(e), Some(notes)) => {
                    notes.push(format!("task {}: {e:#}", spec.name));
                    let resolved = ResolvedTask {
                        name: spec.name.clone(),
                        entry: entry_index,
                        content_hash: "unresolved".into(),
                        num_fewshot: entry.num_fewshot.unwrap_or(0),
                    };
                    (resolved, None)
                }
                (Err(e), None) => return Err(e),
            };
            out.push((resolved, task));
        }
    }
    Ok(out)
}

/// Resolves every model; a local directory's sha is its content fingerprint. With `notes`, a
/// model that cannot be resolved is noted (and its task jobs planned as skipped).
fn resolve_models(
    suite: &Suite,
    hub: &HubConfig,
    mut notes: Option<&mut Vec<String>>,
) -> Result<(Vec<Option<Checkpoint>>, Vec<ResolvedModel>)> {
    let mut checkpoints = Vec::new();
    let mut models: Vec<ResolvedModel> = Vec::new();
    for m in &suite.models {
        if let Some(build) = &m.build {
            // Trained when a job first needs it (`Runner::checkpoint`); its identity is the
            // hash of its settings and training text.
            // `from` names an earlier model (checked by load_suite), resolved already.
            let from_sha = build.from.as_ref().map(|label| {
                let index = suite.models.iter().position(|o| &o.label == label);
                models[index.expect("an earlier model")].sha.clone()
            });
            let sha = training_texts(build).and_then(|texts| {
                build
                    .hash(&texts, from_sha.as_deref())
                    .with_context(|| format!("model {}: reading its training text", m.label))
            });
            let sha = match (sha, notes.as_deref_mut()) {
                (Ok(sha), _) => sha,
                (Err(e), Some(notes)) => {
                    notes.push(format!("model {}: {e:#}", m.label));
                    "unresolved".into()
                }
                (Err(e), None) => return Err(e.context(suite.locate("label", &m.label))),
            };
            checkpoints.push(None);
            models.push(ResolvedModel {
                sha,
                no_tasks_reason: None,
            });
            continue;
        }
        let checkpoint =
            resolve_checkpoint(hub, &m.reference).with_context(|| suite.locate("id", &m.id));
        let checkpoint = match (checkpoint, notes.as_deref_mut()) {
            (Ok(c), _) => c,
            (Err(e), Some(notes)) => {
                notes.push(format!("model {}: {e:#}", m.label));
                checkpoints.push(None);
                models.push(ResolvedModel {
                    sha: "unresolved".into(),
                    no_tasks_reason: Some(format!("{} is not available here", m.label)),
                });
                continue;
            }
            (Err(e), None) => return Err(e),
        };
        let sha = match &checkpoint.commit {
            Some(commit) => commit.clone(),
            None => local_fingerprint(&checkpoint.dir)?,
        };
        let no_tasks_reason = (!checkpoint.dir.join("tokenizer.json").is_file())
            .then(|| format!("{} has no tokenizer.json", m.label));
        checkpoints.push(Some(checkpoint));
        models.push(ResolvedModel {
            sha,
            no_tasks_reason,
        });
    }
    Ok((checkpoints, models))
}

struct Runner<'a> {
    prepared: &'a Prepared,
    store: &'a RunStore,
    progress: &'a Progress,
    hub: &'a HubConfig,
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

    /// The model's checkpoint; a model the suite builds is trained into the run directory's
    /// `models/LABEL-HASH/` the first time a job needs it, and reused from there after.
    fn checkpoint(&self, model: usize) -> Result<Checkpoint> {
        let p = self.prepared;
        if let Some(checkpoint) = &p.checkpoints[model] {
            return Ok(checkpoint.clone());
        }
        let spec = &p.plan.suite.models[model];
        let build = spec
            .build
            .as_ref()
            .expect("outside dry runs only built models resolve at run time");
        let safe_label: String = spec
            .label
            .chars()
            .map(|c| match c.is_ascii_alphanumeric() || "-_.".contains(c) {
                true => c,
                false => '_',
            })
            .collect();
        let sha = &p.plan.models[model].sha;
        let dir = self
            .store
            .dir()
            .join("models")
            .join(format!("{safe_label}-{}", &sha[..12]));
        if !dir.join("train.json").is_file() {
            std::fs::create_dir_all(dir.parent().expect("models/"))?;
            let start = match &build.from {
                None => Start::Scratch,
                Some(label) => {
                    let parent = p.plan.suite.models.iter().position(|m| &m.label == label);
                    let parent = self.checkpoint(parent.expect("checked by load_suite"))?;
                    Start::Model {
                        reference: parent.dir.display().to_string(),
                        upcycle: build.upcycle,
                    }
                }
            };
            let spinner = self.progress.spinner(&format!(
                "building {}: {} training steps",
                spec.label, build.steps
            ));
            let summary = train_checkpoint(build, &start, self.hub, &dir, false)
                .with_context(|| format!("building model {}", spec.label))?;
            self.progress.remove(&spinner);
            self.progress.log(&format!(
                "built {} in {:.0} s (held-out loss {:.4}) → {}",
                spec.label,
                summary["wall_s"].as_f64().unwrap_or(f64::NAN),
                summary["heldout_nll"].as_f64().unwrap_or(f64::NAN),
                dir.display()
            ));
        }
        resolve_checkpoint(self.hub, &dir.display().to_string())
            .with_context(|| format!("loading built model {}", spec.label))
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
        let checkpoint = self.checkpoint(group.model)?;
        let loaded = Loaded::new(checkpoint, p.device, p.kind)?;
        let tokenizer = loaded.tokenizer_if_any()?;
        // A method's `mix` re-weights the suite's calibration mix for it (REAM's mix sweeps).
        let calibration_spec = match method.params.get("mix") {
            Some(weights) => with_mix_weights(&p.plan.suite.calibration, weights)
                .with_context(|| format!("method {}", method.label))?,
            None => p.plan.suite.calibration.clone(),
        };
        if method.then.iter().any(|s| s.params.contains_key("mix")) {
            bail!(
                "method {}: `mix` is a parameter of the chain's first method only",
                method.label
            );
        }
        let calibration = calibration_data(&calibration_spec, &loaded.model, tokenizer.as_ref())?;
        // Suite models the method merges (DUME's `experts`) are built before its cost is timed.
        for label in p.plan.referenced_models(group.method).keys() {
            let index = p.plan.suite.models.iter().position(|m| &m.label == label);
            self.checkpoint(index.expect("referenced_models holds suite labels"))?;
        }
        bench::reset_peak_rss();
        let apply_start = Instant::now();
        let Loaded { checkpoint, model } = loaded;
        let ctx = MethodContext {
            calibration: &calibration,
            calibration_spec: &calibration_spec,
            seed: p.plan.suite.defaults.seed,
            suite_dir: &p.plan.suite.dir,
            hub: self.hub,
            tokenizer: tokenizer.as_ref(),
            suite_model: &|label| {
                let index = p.plan.suite.models.iter().position(|m| m.label == label)?;
                Some(self.checkpoint(index))
            },
        };
        let model = apply_method(model, method, &ctx)
            .with_context(|| format!("applying {}", method.label))?;
        let loaded = Loaded { checkpoint, model };
        let apply_cost = MethodCost {
            seconds: apply_start.elapsed().as_secs_f64(),
            peak_rss_mib: bench::peak_rss_mib(),
        };
        self.progress.remove(&spinner);
        let labels = (
            p.plan.suite.models[group.model].label.as_str(),
            method.label.as_str(),
        );
        for job in todo {
            let bar = self.progress.spinner(&job.label);
            let start = Instant::now();
            let (kind, measurements) = match job.kind {
                JobKind::Measure => (
                    RecordKind::Measure,
                    self.measure(&loaded.model, Some(&calibration), job, labels, &apply_cost)?,
                ),
                JobKind::Task(t) => {
                    let tokenizer = tokenizer.as_ref().expect("task jobs need a tokenizer");
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

    /// Parameter counts, analytic FLOPs per token (at context 1, as `moebench inspect`) and
    /// bytes per decode token; for MoE models with `measure.routing`, routing diagnostics on
    /// the calibration text, whose measured expert counts then feed the FLOPs and bytes.
    fn measure(
        &self,
        model: &Model,
        calibration: Option<&CalibrationData>,
        job: &Job,
        labels: (&str, &str),
        cost: &MethodCost,
    ) -> Result<Vec<Measurement>> {
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
        let mut measured: Option<Vec<f64>> = None;
        let mut counted = "analytic(context=1, nominal top-k)".to_owned();
        if let Some(cal) = calibration.filter(|_| measure.routing && model.config.moe.is_some()) {
            let diag = routing_diagnostics(model, cal)?;
            let protocol = format!("routing on {} ({})", cal.source, selectors(model));
            let layers = diag.layers();
            let (mean, std) = diag.overall_active();
            let avg = |f: &dyn Fn(&LayerDiagnostics) -> f64| {
                layers.iter().map(f).sum::<f64>() / layers.len().max(1) as f64
            };
            out.push(value("active_experts_mean", mean, Some(&protocol)));
            out.push(value("active_experts_std", std, Some(&protocol)));
            out.push(value("load_cv", avg(&|l| l.load_cv), Some(&protocol)));
            out.push(value(
                "max_violation",
                avg(&|l| l.max_violation),
                Some(&protocol),
            ));
            out.push(Measurement {
                higher_is_better: Some(true),
                ..value("load_entropy", avg(&|l| l.load_entropy), Some(&protocol))
            });
            out.push(value(
                "dead_experts",
                layers.iter().map(|l| l.dead_experts as f64).sum(),
                Some(&protocol),
            ));
            self.store.write_routing(&RoutingLog {
                job: job.hash.clone(),
                model_label: labels.0.to_owned(),
                method_label: labels.1.to_owned(),
                layers: layers
                    .iter()
                    .map(|l| LayerLoads {
                        layer: l.layer,
                        loads: l.loads.clone(),
                        coactivation: l.coactivation.clone(),
                    })
                    .collect(),
            })?;
            measured = Some(diag.active_means(model.num_layers()));
            counted = "analytic(context=1, measured experts per token)".to_owned();
        }
        let measured = measured.as_deref();
        let method = &self.prepared.plan.suite.methods[job.method];
        if method.name != "dense" || !method.then.is_empty() {
            let protocol = "applying the method once, calibration included (CPU: peak RSS \
                            during it, model resident)";
            out.push(value("method_apply_s", cost.seconds, Some(protocol)));
            if let Some(mib) = cost.peak_rss_mib {
                out.push(value("method_peak_rss_mib", mib, Some(protocol)));
            }
        }
        if measure.latency.enabled {
            out.extend(latency(model, calibration, &measure.latency));
        }
        if measure.params {
            let counts = param_counts(model, measured);
            out.push(value("params_total", counts.total as f64, None));
            out.push(value(
                "params_active",
                counts.active_per_token,
                Some(&counted),
            ));
        }
        if measure.flops {
            let flops = flops_per_token(model, 1, measured).total;
            out.push(value("flops_per_token", flops, Some(&counted)));
            let context = measure.decode_context;
            let bytes = bytes_per_decode_token(model, context, measured).total;
            let protocol = format!(
                "analytic(batch=1, context={context}, {})",
                kind_name(model.kind)
            );
            out.push(value("bytes_per_decode_token", bytes, Some(&protocol)));
        }
        Ok(out)
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
        let max_length = defaults
            .max_length
            .map_or_else(|| LanguageModel::default_max_length(model), usize::from);
        let budget = match defaults.token_budget {
            Some(n) => TokenBudget::Fixed(n.get()),
            None => TokenBudget::Auto,
        };
        let settings = LmSettings {
            max_length,
            batch_size: defaults.batch_size.get(),
            token_budget: budget.resolve(model, max_length).0,
            prefix_cache: true,
        };
        let opts = EvalOptions {
            limit: plan.limit(&plan.tasks[t]),
            fewshot_seed: defaults.seed,
            bootstrap_iters: defaults.bootstrap_iters,
            ppl_protocol: plan.suite.tasks[plan.tasks[t].entry]
                .ppl_protocol
                .as_deref()
                .map(PplProtocol::parse)
                .transpose()?,
        };
        let lm = LanguageModel::new(model, tokenizer, settings);
        let task = self.prepared.tasks[t]
            .as_ref()
            .expect("loaded outside dry runs");
        let outcome = evaluate_task(&lm, task, &opts)?;
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

/// Wall time and peak memory of applying a method (the calibration and merge cost).
struct MethodCost {
    seconds: f64,
    peak_rss_mib: Option<f64>,
}

/// Greedy-decoding latency (as `moebench bench`) with a prompt cut from the calibration text:
/// medians over `repeats` runs after `warmup`, per batch size. TTFT is the prefill time.
fn latency(
    model: &Model,
    calibration: Option<&CalibrationData>,
    spec: &moebench_suite::suite::Latency,
) -> Vec<Measurement> {
    let _guard = tch::no_grad_guard();
    let prompt: Vec<i64> = match calibration.and_then(|c| c.batches.first()) {
        Some((ids, _)) => Vec::<i64>::try_from(ids.get(0).to_device(Device::Cpu))
            .unwrap_or_default()
            .into_iter()
            .cycle()
            .take(spec.prompt_tokens)
            .collect(),
        None => vec![1; spec.prompt_tokens],
    };
    let protocol = format!(
        "greedy, prompt {} tokens, {} new, median of {} after {} warm-up, {} threads, {}",
        spec.prompt_tokens,
        spec.new_tokens,
        spec.repeats,
        spec.warmup,
        tch::get_num_threads(),
        device_name(model.device)
    );
    let mut out = Vec::new();
    let reset = bench::reset_peak_rss();
    for &batch in &spec.batch_sizes {
        let prompts = vec![prompt.clone(); batch];
        for _ in 0..spec.warmup {
            bench::measure(model, &prompts, spec.new_tokens);
        }
        let runs: Vec<bench::Run> = (0..spec.repeats)
            .map(|_| bench::measure(model, &prompts, spec.new_tokens))
            .collect();
        let med = |f: &dyn Fn(&bench::Run) -> f64| {
            let mut v: Vec<f64> = runs.iter().map(f).collect();
            v.sort_by(f64::total_cmp);
            bench::median(&v)
        };
        let steps = (spec.new_tokens - 1) as f64;
        let value = |metric: String, value: f64, higher: bool| Measurement {
            metric,
            value,
            stderr: None,
            n: Some(spec.repeats as u64),
            higher_is_better: Some(higher),
            protocol: Some(protocol.clone()),
        };
        let b = batch as f64;
        out.push(value(
            format!("ttft_ms_b{batch}"),
            med(&|r| r.prefill) * 1e3,
            false,
        ));
        out.push(value(
            format!("prefill_tokens_per_s_b{batch}"),
            med(&|r| b * spec.prompt_tokens as f64 / r.prefill),
            true,
        ));
        out.push(value(
            format!("tpot_ms_b{batch}"),
            med(&|r| r.decode / steps) * 1e3,
            false,
        ));
        out.push(value(
            format!("decode_tokens_per_s_b{batch}"),
            med(&|r| b * steps / r.decode),
            true,
        ));
    }
    if let Some(mib) = (model.device == Device::Cpu)
        .then(bench::peak_rss_mib)
        .flatten()
    {
        out.push(Measurement {
            metric: "peak_rss_mib".into(),
            value: mib,
            stderr: None,
            n: None,
            higher_is_better: Some(false),
            protocol: Some(
                match reset {
                    true => "process peak RSS (VmHWM) during the latency runs, model resident",
                    false => "process peak RSS (VmHWM) since start (could not reset it)",
                }
                .into(),
            ),
        });
    }
    out
}

/// Routing counts of one pass over the calibration batches.
fn routing_diagnostics(model: &Model, cal: &CalibrationData) -> Result<RoutingDiagnostics> {
    let mut diag = RoutingDiagnostics::default();
    observe(model, &cal.batches, &mut diag, "routing measures")?;
    Ok(diag)
}

/// The distinct selectors of the model's MoE layers, as recorded with routing measures.
pub fn selectors(model: &Model) -> String {
    let mut names: Vec<String> = model
        .layers
        .iter()
        .filter_map(|b| match &b.ffn {
            Ffn::Moe(m) => Some(m.selector.describe()),
            Ffn::Dense(_) => None,
        })
        .collect();
    names.dedup();
    names.join("; ")
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
