//! Running a suite: [`prepare`] checks everything before anything runs — the suite, every task
//! (data loaded), every model (config, weight headers, tokenizer), every method and chain
//! against the model it applies to, latency and perplexity settings — and reports all problems
//! at once. [`run`] then executes the plan group by group (a model loaded and its method applied
//! once per (model, method)); a job that fails at run time is recorded as failed with its error
//! and the run goes on.
use crate::apply::{apply_method, mix_weights, plan_method};
use crate::calibration::{calibration_data, with_mix_weights, CalibrationData};
use crate::code::{check_confirmed, enable_code_execution, CodePolicy};
use crate::env::RunEnv;
use crate::error::{Context, Result, RunnerError};
use crate::events::{Event, RunEvents};
use crate::latency::{peak_rss_mib, reset_peak_rss};
use crate::loaded::{Loaded, TokenBudget};
use crate::measure::{measure, MethodCost};
use crate::paths::task_dirs;
use crate::train::{train_checkpoint, training_texts, Start, TrainOptions};
use moebench_eval::protocols::PplProtocol;
use moebench_eval::{evaluate_task, EvalOptions, LanguageModel, LmSettings};
use moebench_hub::{local_fingerprint, HubConfig};
use moebench_methods::catalogue::{schemas, ModelFacts, MoeFacts};
use moebench_methods::scratch::ScratchConfig;
use moebench_model::device::{device_name, parse_device, parse_kind};
use moebench_model::{resolve_checkpoint, Checkpoint, Model, Tokenizer};
use moebench_suite::build::TrainSpec;
use moebench_suite::plan::Group;
use moebench_suite::{
    load_suite, Job, JobKind, Measurement, Plan, RecordKind, ResolvedModel, ResolvedTask,
    RoutingLog, RunStore, Shard, Suite,
};
use moebench_tasks::{Task, TaskIndex};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Instant;
use tch::{Device, Kind};

/// A suite with its tasks loaded and its models resolved and checked: ready to run.
pub struct Prepared {
    pub plan: Plan,
    /// Parallel to `plan.tasks`; `None` only in a dry run, for a task that could not load.
    tasks: Vec<Option<Task>>,
    /// Parallel to the suite's models; `None` for a model the suite builds, and in a dry run
    /// for a model not available here.
    checkpoints: Vec<Option<Checkpoint>>,
    /// Dry run: what could not be loaded here (and would fail a real run).
    pub notes: Vec<String>,
    /// Things that load but look unintended (a very large sweep).
    pub warnings: Vec<String>,
    /// Parallel to the suite's models: what is known of each without its weights.
    facts: Vec<Option<ModelFacts>>,
    device: Device,
    kind: Kind,
}

impl Prepared {
    /// Keeps the jobs of `shard` (`run --shard I/N`): whole (model, method) groups dealt by
    /// estimated cost ([`Plan::retain_shard`]; the estimate is [`Prepared::group_cost`]).
    pub fn retain_shard(&mut self, shard: Shard) {
        let costs: BTreeMap<(usize, usize), f64> = self
            .plan
            .groups()
            .iter()
            .map(|g| ((g.model, g.method), self.group_cost(g)))
            .collect();
        self.plan
            .retain_shard(shard, |g| costs[&(g.model, g.method)]);
    }

    /// A group's relative cost, to balance shards (only ratios matter): model size ×
    /// sequences processed. Model size is `layers × hidden² + vocab × hidden` (the matrices
    /// every token passes through, up to constants); sequences are the calibration set once for
    /// a method's set-up (not for plain `dense`) and once for a measure job (plus the latency
    /// runs' decoded tokens), and per task the documents evaluated × requests per document by
    /// protocol: 1 for loglikelihood, 4 for multiple choice (typical choice count), 4 for
    /// rolling perplexity (windows), 16 for generation (a forward pass per generated token,
    /// with a cache). Models the suite builds are not counted: each shard that needs one
    /// rebuilds it (docs/scale-out.md).
    pub fn group_cost(&self, group: &Group) -> f64 {
        use moebench_tasks::config::OutputType;
        let suite = &self.plan.suite;
        let size = self.facts[group.model].as_ref().map_or(1e6, |f| {
            (f.num_layers * f.hidden_size * f.hidden_size + f.vocab_size * f.hidden_size) as f64
        });
        let calibration = suite.calibration.sequences as f64;
        let method = &suite.methods[group.method];
        let set_up = match method.name == "dense" && method.then.is_empty() {
            true => 0.0,
            false => calibration,
        };
        let latency = &suite.measure.latency;
        let sequences: f64 = group
            .jobs
            .iter()
            .map(|job| match job.kind {
                JobKind::Measure if latency.enabled => {
                    let decoded = latency.new_tokens * (latency.repeats + latency.warmup);
                    calibration + decoded as f64 / 16.0
                }
                JobKind::Measure => calibration,
                JobKind::Task(t) => {
                    let Some(task) = &self.tasks[t] else {
                        return 1.0;
                    };
                    let docs = task.eval_docs().len();
                    let docs = self
                        .plan
                        .limit(&self.plan.tasks[t])
                        .map_or(docs, |l| l.min(docs));
                    let per_doc = match task.spec().config.output_type {
                        OutputType::Loglikelihood => 1.0,
                        OutputType::MultipleChoice | OutputType::LoglikelihoodRolling => 4.0,
                        OutputType::GenerateUntil => 16.0,
                    };
                    docs as f64 * per_doc
                }
            })
            .sum();
        size * (set_up + sequences).max(1.0)
    }
}

/// Parses and checks the suite, loads every task and resolves and checks every model. Every
/// problem found is reported at once ([`RunnerError::Checks`]). A dry run plans what it can: a
/// task or model that cannot be loaded here (e.g. a Hub dataset not cached, offline) becomes a
/// note instead of an error.
pub fn prepare(suite_path: &Path, hub: &HubConfig, dry_run: bool) -> Result<Prepared> {
    let suite = load_suite(suite_path, &schemas())
        .map_err(|e| RunnerError::Checks(e.problems().iter().map(ToString::to_string).collect()))?;
    let mut problems = Vec::new();
    let mut notes = Vec::new();
    // What is only unavailable here is a note in a dry run, a problem in a real one.
    let mut unavailable = |problems: &mut Vec<String>, message: String| match dry_run {
        true => notes.push(message),
        false => problems.push(message),
    };
    for entry in &suite.tasks {
        if let Some(p) = &entry.ppl_protocol {
            if let Err(e) = PplProtocol::parse(p) {
                problems.push(format!("{}: {e}", suite.locate("ppl_protocol", p)));
            }
        }
    }
    for missing in &suite.calibration_missing {
        unavailable(&mut problems, missing.clone());
    }
    let device_spec = suite.defaults.device.as_str();
    let device = parse_device(device_spec).unwrap_or_else(|e| {
        unavailable(
            &mut problems,
            format!("{}: {e}", suite.locate("device", device_spec)),
        );
        Device::Cpu
    });
    let kind = match parse_kind(suite.defaults.dtype.as_str()) {
        Ok(kind) => kind,
        Err(e) => {
            problems.push(e.to_string());
            Kind::Float
        }
    };
    let loaded_tasks = load_tasks(&suite, hub, &mut |message| {
        unavailable(&mut problems, message)
    })?;
    let (resolved, mut tasks): (Vec<_>, Vec<_>) = loaded_tasks.into_iter().unzip();
    let code_policy = CodePolicy {
        confirmed: suite.code_execution.confirm_run_unsafe_code,
        python: suite.code_execution.python.clone().into(),
        allow_unisolated: suite.code_execution.allow_unisolated,
    };
    let executing = resolved.iter().zip(&tasks).filter_map(|(r, t)| {
        t.as_ref()
            .is_some_and(Task::executes_code)
            .then_some(r.name.as_str())
    });
    if let Err(e) = check_confirmed(
        &code_policy,
        executing,
        "set `code_execution: {confirm_run_unsafe_code: true}` in the suite",
    ) {
        problems.push(format!("{}: {e}", suite.path.display()));
    }
    let mut warnings = suite.warnings.clone();
    let mut facts: Vec<Option<ModelFacts>> = Vec::new();
    let mut bad_models = Vec::new();
    let (checkpoints, models) =
        resolve_models(&suite, hub, &mut facts, &mut bad_models, &mut |message| {
            unavailable(&mut problems, message)
        });
    problems.extend(bad_models);
    check_methods(&suite, &facts, &mut problems);
    if problems.is_empty() || dry_run {
        let device_kind = match device.is_cuda() || device_spec.starts_with("cuda") {
            true => "cuda",
            false => "cpu",
        };
        let plan = Plan::new(suite.clone(), models, resolved, device_kind)?;
        problems.extend(plan.target_problems());
        if problems.is_empty() {
            if !dry_run {
                let mut loaded: Vec<&mut Task> = tasks.iter_mut().flatten().collect();
                warnings.extend(enable_code_execution(&mut loaded, &code_policy)?);
            }
            return Ok(Prepared {
                warnings,
                plan,
                tasks,
                checkpoints,
                facts,
                notes,
                device,
                kind,
            });
        }
    }
    Err(RunnerError::Checks(problems))
}

/// Every method and chain, checked against each model it applies to (as far as the model is
/// known here), and the suite's `max_length` against the model's positions.
fn check_methods(suite: &Suite, facts: &[Option<ModelFacts>], problems: &mut Vec<String>) {
    for (model, facts) in suite.models.iter().zip(facts) {
        let Some(facts) = facts else { continue };
        if let Some(max_length) = suite.defaults.max_length {
            if max_length.get() > facts.max_positions {
                problems.push(format!(
                    "{}: defaults.max_length is {max_length} but model `{}` has {} positions; \
                     lower it or leave it unset (the model's positions)",
                    suite.locate("max_length", &max_length.to_string()),
                    model.label,
                    facts.max_positions
                ));
            }
        }
        for method in suite.methods.iter().filter(|m| m.applies_to(&model.label)) {
            if let Err(errors) = plan_method(method, facts) {
                for e in errors {
                    problems.push(format!(
                        "{}: method `{}` on model `{}`: {e}",
                        suite.locate("name", &method.name),
                        method.label,
                        model.label
                    ));
                }
            }
        }
    }
}

/// Every task of the suite (groups and tags expanded), data loaded, in suite order. A task
/// that cannot be loaded goes to `unavailable` and stays unloaded.
pub fn load_tasks(
    suite: &Suite,
    hub: &HubConfig,
    unavailable: &mut dyn FnMut(String),
) -> Result<Vec<(ResolvedTask, Option<Task>)>> {
    let index = TaskIndex::scan(&task_dirs(&[]))?;
    let mut out = Vec::new();
    for (entry_index, entry) in suite.tasks.iter().enumerate() {
        let at = || suite.locate("name", &entry.name);
        let node = match index.resolve(&suite.task_lookup(entry)) {
            Ok(node) => node,
            Err(e) => {
                unavailable(format!("{}: {e}", at()));
                continue;
            }
        };
        for spec in node.tasks() {
            let (resolved, task) = match Task::load(spec.clone(), hub, entry.num_fewshot) {
                Ok(task) => (
                    ResolvedTask {
                        name: task.name().to_owned(),
                        entry: entry_index,
                        content_hash: task.content_hash().to_owned(),
                        num_fewshot: task.num_fewshot(),
                    },
                    Some(task),
                ),
                Err(e) => {
                    unavailable(format!("{}: task {}: {e}", at(), spec.name));
                    let resolved = ResolvedTask {
                        name: spec.name.clone(),
                        entry: entry_index,
                        content_hash: "unresolved".into(),
                        num_fewshot: entry.num_fewshot.unwrap_or(0),
                    };
                    (resolved, None)
                }
            };
            out.push((resolved, task));
        }
    }
    Ok(out)
}

/// What a built model will be, from its settings (and the model it starts from).
fn built_facts(build: &TrainSpec, parent: Option<&ModelFacts>) -> Option<ModelFacts> {
    let moe = |layers| {
        (build.experts > 0).then_some(MoeFacts {
            num_experts: build.experts,
            top_k: build.top_k,
            moe_layers: layers,
        })
    };
    match (&build.from, parent) {
        (None, _) => Some(ModelFacts {
            num_layers: build.layers,
            hidden_size: build.hidden_size,
            vocab_size: ScratchConfig::default().vocab_size,
            max_positions: build.seq_len,
            moe: moe(build.layers),
        }),
        (Some(_), Some(parent)) if build.upcycle => Some(ModelFacts {
            moe: moe(parent.num_layers),
            ..parent.clone()
        }),
        (Some(_), Some(parent)) => Some(parent.clone()),
        (Some(_), None) => None,
    }
}

/// Resolves and checks every model (header-only: config, weight headers, tokenizer); a local
/// directory's sha is its content fingerprint. A model that cannot be resolved here goes to
/// `unavailable` (its task jobs are planned as skipped); one that is there but broken goes to
/// `problems`. `facts` gets what is known of each.
fn resolve_models(
    suite: &Suite,
    hub: &HubConfig,
    facts: &mut Vec<Option<ModelFacts>>,
    problems: &mut Vec<String>,
    unavailable: &mut dyn FnMut(String),
) -> (Vec<Option<Checkpoint>>, Vec<ResolvedModel>) {
    let mut checkpoints = Vec::new();
    let mut models: Vec<ResolvedModel> = Vec::new();
    for m in &suite.models {
        let at = || {
            suite.locate(
                if m.build.is_some() { "label" } else { "id" },
                if m.build.is_some() { &m.label } else { &m.id },
            )
        };
        if let Some(build) = &m.build {
            // Trained when a job first needs it; its identity is the hash of its settings and
            // training text. `from` names an earlier model (checked by load_suite).
            let parent = build
                .from
                .as_ref()
                .and_then(|label| suite.models.iter().position(|o| &o.label == label));
            let from_sha = parent.map(|i| models[i].sha.clone());
            let sha = training_texts(build).and_then(|texts| {
                build
                    .hash(&texts, from_sha.as_deref())
                    .with_context(|| format!("model {}: reading its training text", m.label))
            });
            let sha = sha.unwrap_or_else(|e| {
                unavailable(format!("{}: {e}", at()));
                "unresolved".into()
            });
            facts.push(built_facts(build, parent.and_then(|i| facts[i].as_ref())));
            checkpoints.push(None);
            models.push(ResolvedModel {
                sha,
                no_tasks_reason: None,
            });
            continue;
        }
        let resolved =
            resolve_checkpoint(hub, &m.reference).map_err(|e| (true, RunnerError::from(e)));
        let checked = resolved.and_then(|c| {
            let broken = |e: RunnerError| (false, e);
            let config = c.check().map_err(|e| broken(e.into()))?;
            let sha = match &c.commit {
                Some(commit) => commit.clone(),
                None => local_fingerprint(&c.dir).map_err(|e| broken(e.into()))?,
            };
            Ok((c, config, sha))
        });
        match checked {
            Ok((checkpoint, config, sha)) => {
                let no_tasks_reason = (!checkpoint.dir.join("tokenizer.json").is_file())
                    .then(|| format!("{} has no tokenizer.json", m.label));
                facts.push(Some(ModelFacts::of(&config)));
                checkpoints.push(Some(checkpoint));
                models.push(ResolvedModel {
                    sha,
                    no_tasks_reason,
                });
            }
            Err((not_here, e)) => {
                let message = format!("{}: model {}: {e}", at(), m.label);
                match not_here {
                    true => unavailable(message),
                    false => problems.push(message),
                }
                facts.push(None);
                checkpoints.push(None);
                models.push(ResolvedModel {
                    sha: "unresolved".into(),
                    no_tasks_reason: Some(format!("{} is not available here", m.label)),
                });
            }
        }
    }
    (checkpoints, models)
}

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct RunOutcome {
    pub jobs: usize,
    pub done_earlier: usize,
    pub skipped: usize,
    pub ran: usize,
    /// `(job label, error)` of every job that failed in this run.
    pub failed: Vec<(String, String)>,
    pub wall_s: f64,
}

/// Runs every unfinished job of the plan into `store`. Failures of jobs are recorded and
/// counted; only a failure to write the store itself stops the run.
pub fn run(
    prepared: &Prepared,
    store: &RunStore,
    hub: &HubConfig,
    events: &dyn RunEvents,
) -> Result<RunOutcome> {
    let start = Instant::now();
    let plan = &prepared.plan;
    let finished = store.finished_jobs()?;
    let todo = plan
        .jobs
        .iter()
        .filter(|j| j.skip.is_none() && !finished.contains(&j.hash))
        .count();
    let mut outcome = RunOutcome {
        jobs: plan.jobs.len(),
        done_earlier: plan
            .jobs
            .iter()
            .filter(|j| finished.contains(&j.hash))
            .count(),
        skipped: plan.jobs.iter().filter(|j| j.skip.is_some()).count(),
        ..RunOutcome::default()
    };
    events.event(Event::Started {
        jobs: outcome.jobs,
        done_earlier: outcome.done_earlier,
        skipped: outcome.skipped,
        to_run: todo,
        run_dir: store.dir(),
    });
    let runner = Runner {
        prepared,
        store,
        hub,
        events,
        built: RefCell::new(Vec::new()),
    };
    for group in plan.groups() {
        runner.run_group(&group, &finished, &mut outcome)?;
    }
    outcome.wall_s = start.elapsed().as_secs_f64();
    Ok(outcome)
}

struct Runner<'a> {
    prepared: &'a Prepared,
    store: &'a RunStore,
    hub: &'a HubConfig,
    events: &'a dyn RunEvents,
    /// Built models trained (or found) in this run: index → checkpoint.
    built: RefCell<Vec<(usize, Checkpoint)>>,
}

impl Runner<'_> {
    /// The model's checkpoint; a model the suite builds is trained into the run directory's
    /// `models/LABEL-HASH/` the first time a job needs it, and reused from there after.
    fn checkpoint(&self, model: usize) -> Result<Checkpoint> {
        let p = self.prepared;
        if let Some(checkpoint) = &p.checkpoints[model] {
            return Ok(checkpoint.clone());
        }
        if let Some((_, c)) = self.built.borrow().iter().find(|(i, _)| *i == model) {
            return Ok(c.clone());
        }
        let spec = &p.plan.suite.models[model];
        let Some(build) = spec.build.as_ref() else {
            return Err(RunnerError::invalid(format!(
                "model {} is not available here",
                spec.label
            )));
        };
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
            .join(format!("{safe_label}-{}", &sha[..12.min(sha.len())]));
        if !dir.join("train.json").is_file() {
            let parent_dir = dir.parent().expect("models/");
            std::fs::create_dir_all(parent_dir).map_err(RunnerError::io(parent_dir))?;
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
            let what = format!("building {}: {} training steps", spec.label, build.steps);
            self.events.event(Event::StepStarted { what: &what });
            let started = Instant::now();
            // Shards that need the same model build it side by side (deterministically: same
            // settings, text and seed); the first to finish keeps its copy and every shard
            // then uses that one.
            let options = TrainOptions {
                keep_finished: true,
                ..TrainOptions::default()
            };
            let summary = train_checkpoint(build, &start, self.hub, &dir, options)
                .with_context(|| format!("building model {}", spec.label))?;
            self.events.event(Event::StepFinished {
                what: &what,
                seconds: started.elapsed().as_secs_f64(),
            });
            self.events.event(Event::Built {
                model: &spec.label,
                seconds: summary.wall_s,
                heldout_nll: summary.heldout_nll,
                dir: &dir,
            });
        }
        let checkpoint = resolve_checkpoint(self.hub, &dir.display().to_string())
            .with_context(|| format!("loading built model {}", spec.label))?;
        self.built.borrow_mut().push((model, checkpoint.clone()));
        Ok(checkpoint)
    }

    /// Loads the group's model once, applies its method once, and runs its unfinished jobs.
    /// A set-up failure fails every job of the group; a job's failure fails that job only.
    fn run_group(
        &self,
        group: &Group,
        finished: &BTreeSet<String>,
        outcome: &mut RunOutcome,
    ) -> Result<()> {
        let mut todo = Vec::new();
        for job in &group.jobs {
            match &job.skip {
                Some(reason) => self.events.event(Event::Skipped {
                    job: &job.label,
                    reason,
                }),
                None if finished.contains(&job.hash) => {
                    self.events.event(Event::DoneEarlier { job: &job.label })
                }
                None => todo.push(*job),
            }
        }
        if todo.is_empty() {
            return Ok(());
        }
        let p = self.prepared;
        let what = format!(
            "loading {}, applying {}",
            p.plan.suite.models[group.model].label, p.plan.suite.methods[group.method].label
        );
        self.events.event(Event::StepStarted { what: &what });
        let started = Instant::now();
        let set_up = self.set_up(group);
        self.events.event(Event::StepFinished {
            what: &what,
            seconds: started.elapsed().as_secs_f64(),
        });
        let set_up = match set_up {
            Ok(set_up) => set_up,
            Err(e) => {
                let error = format!("{what}: {e}");
                for job in todo {
                    self.fail(job, &error, 0.0, outcome)?;
                }
                return Ok(());
            }
        };
        for job in todo {
            self.events.event(Event::JobStarted { job: &job.label });
            let start = Instant::now();
            let result = match job.kind {
                JobKind::Measure => self.measure_job(&set_up, job),
                JobKind::Task(t) => match &set_up.tokenizer {
                    Some(tokenizer) => self.evaluate(&set_up.model, tokenizer, job, t),
                    None => Err(RunnerError::invalid("the model has no tokenizer")),
                },
            };
            let seconds = start.elapsed().as_secs_f64();
            match result {
                Ok((kind, measurements)) => {
                    let template = p.plan.record_template(job, &device_name(p.device));
                    self.store.commit(&template, kind, &measurements, seconds)?;
                    outcome.ran += 1;
                    self.events.event(Event::JobFinished {
                        job: &job.label,
                        seconds,
                    });
                }
                Err(e) => self.fail(job, &e.to_string(), seconds, outcome)?,
            }
        }
        Ok(())
    }

    /// Records a failed job; only a failure to write the record is an error.
    fn fail(&self, job: &Job, error: &str, seconds: f64, outcome: &mut RunOutcome) -> Result<()> {
        let p = self.prepared;
        let template = p.plan.record_template(job, &device_name(p.device));
        self.store.fail(&template, error, seconds)?;
        outcome.failed.push((job.label.clone(), error.to_owned()));
        self.events.event(Event::JobFailed {
            job: &job.label,
            error,
        });
        Ok(())
    }

    /// The group's model loaded, its method applied, and what the jobs need from the set-up.
    fn set_up(&self, group: &Group) -> Result<SetUp> {
        let p = self.prepared;
        let method = &p.plan.suite.methods[group.method];
        let checkpoint = self.checkpoint(group.model)?;
        let loaded = Loaded::new(checkpoint, p.device, p.kind)?;
        let tokenizer = loaded.tokenizer_if_any()?;
        // A method's `mix` re-weights the suite's calibration mix for it (REAM's mix sweeps).
        let calibration_spec = match mix_weights(method)? {
            Some(weights) => with_mix_weights(&p.plan.suite.calibration, &weights)?,
            None => p.plan.suite.calibration.clone(),
        };
        let calibration = calibration_data(&calibration_spec, &loaded.model, tokenizer.as_ref())?;
        // Suite models the method merges (DUME's `experts`) are built before its cost is timed.
        for label in p.plan.referenced_models(group.method).keys() {
            let index = p.plan.suite.models.iter().position(|m| &m.label == label);
            self.checkpoint(index.expect("referenced_models holds suite labels"))?;
        }
        reset_peak_rss();
        let apply_start = Instant::now();
        let suite_models = |label: &str| {
            let index = p.plan.suite.models.iter().position(|m| m.label == label)?;
            Some(self.checkpoint(index))
        };
        let env = RunEnv {
            calibration: &calibration,
            calibration_spec: &calibration_spec,
            seed: p.plan.suite.defaults.seed,
            base_dir: &p.plan.suite.dir,
            hub: self.hub,
            tokenizer: tokenizer.as_ref(),
            suite_models: &suite_models,
        };
        let model = apply_method(loaded.model, method, &env)?;
        let is_identity = method.name == "dense" && method.then.is_empty();
        let cost = (!is_identity).then(|| MethodCost {
            seconds: apply_start.elapsed().as_secs_f64(),
            peak_rss_mib: peak_rss_mib(),
        });
        Ok(SetUp {
            model,
            tokenizer,
            calibration,
            cost,
            labels: (
                p.plan.suite.models[group.model].label.clone(),
                method.label.clone(),
            ),
        })
    }

    fn measure_job(&self, set_up: &SetUp, job: &Job) -> Result<(RecordKind, Vec<Measurement>)> {
        let spec = &self.prepared.plan.suite.measure;
        let measured = measure(&set_up.model, &set_up.calibration, spec, set_up.cost)?;
        if let Some(layers) = measured.loads {
            self.store.write_routing(&RoutingLog {
                job: job.hash.clone(),
                model_label: set_up.labels.0.clone(),
                method_label: set_up.labels.1.clone(),
                layers,
            })?;
        }
        Ok((RecordKind::Measure, measured.measurements))
    }

    /// Evaluates task `t` of the plan, writes its samples and returns its metrics.
    fn evaluate(
        &self,
        model: &Model,
        tokenizer: &Tokenizer,
        job: &Job,
        t: usize,
    ) -> Result<(RecordKind, Vec<Measurement>)> {
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
            lookup_decoding: true,
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
            .ok_or_else(|| RunnerError::invalid("the task's data is not loaded"))?;
        let outcome = evaluate_task(&lm, task, &opts)?;
        self.store.write_samples(&job.hash, &outcome.samples)?;
        let measurements = outcome
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
            .collect();
        Ok((RecordKind::Metric, measurements))
    }
}

/// A (model, method)'s model, ready for its jobs.
struct SetUp {
    model: Model,
    tokenizer: Option<Tokenizer>,
    calibration: CalibrationData,
    cost: Option<MethodCost>,
    /// (model label, method label), for routing logs.
    labels: (String, String),
}
