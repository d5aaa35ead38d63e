//! From a suite and what the caller resolved (model commits, task content hashes) to jobs.
//!
//! A job is one measurement pass of one (model, method) — `measure` — or one task evaluated on
//! one (model, method). Its hash is the sha256 of the canonical JSON of everything that
//! determines its result; a job whose hash already has a `job_done` record is not run again.
pub use crate::store::job_label;
use crate::store::{Record, RecordKind};
use crate::suite::Suite;
use crate::{SuiteError, HARNESS_VERSION};
use moebench_core::params::canonical_json;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

/// A model of the suite after resolution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedModel {
    /// Hub commit sha, or the local directory's content fingerprint.
    pub sha: String,
    /// Why token-based tasks cannot run on it (e.g. no `tokenizer.json`), if so.
    pub no_tasks_reason: Option<String>,
}

/// One task (a leaf of a suite task entry, which may be a group or tag) after loading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedTask {
    pub name: String,
    /// Index of the suite's task entry it comes from.
    pub entry: usize,
    /// `moebench_tasks::Task::content_hash`.
    pub content_hash: String,
    /// The shot count in effect.
    pub num_fewshot: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobKind {
    /// Parameter counts and FLOPs of a (model, method).
    Measure,
    /// Index into [`Plan::tasks`].
    Task(usize),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub hash: String,
    /// Index into the suite's models.
    pub model: usize,
    /// Index into the suite's method configurations.
    pub method: usize,
    pub kind: JobKind,
    /// `model/method/task` (`measure` for measures), what `--only` matches.
    pub label: String,
    /// Why the job cannot run, if it cannot.
    pub skip: Option<String>,
}

/// Every job of a suite, in order: per model, per method, measures first, then tasks.
#[derive(Debug, Clone)]
pub struct Plan {
    pub suite: Suite,
    pub models: Vec<ResolvedModel>,
    pub tasks: Vec<ResolvedTask>,
    /// `cpu` or `cuda` (the device index does not change results).
    pub device_kind: String,
    pub jobs: Vec<Job>,
}

/// The jobs of one (model, method), which share one loaded and transformed model.
#[derive(Debug)]
pub struct Group<'a> {
    pub model: usize,
    pub method: usize,
    pub jobs: Vec<&'a Job>,
}

impl Plan {
    /// Targets and claims that name no job of the plan (a typo in a task name, a method
    /// restricted to other models), each as a problem to fix before anything runs. A target's
    /// task may be a task or the suite entry (group) it comes from, and without a task it names
    /// the measures; a claim names one task (its per-document scores are compared).
    pub fn target_problems(&self) -> Vec<String> {
        let suite = &self.suite;
        let fix =
            "check the task name and that the method runs on that model (`models:` of the method)";
        let targets = suite
            .targets
            .iter()
            .enumerate()
            .filter(|(_, t)| !self.names_job(&t.model, &t.method, t.task.as_deref(), true))
            .map(|(i, t)| {
                format!(
                    "{}: targets[{i}] ({}/{}/{}) names no job of the plan: {fix}",
                    suite.path.display(),
                    t.model,
                    t.method,
                    t.task.as_deref().unwrap_or("measure")
                )
            });
        let claims = suite.claims.iter().enumerate().flat_map(|(i, c)| {
            [(c.model.as_str(), &c.better), (c.than_model(), &c.than)]
                .into_iter()
                .filter(|(model, method)| !self.names_job(model, method, Some(&c.task), false))
                .map(move |(model, method)| {
                    format!(
                        "{}: claims[{i}] ({model}/{method}/{}) names no job of the plan: {fix}",
                        suite.path.display(),
                        c.task
                    )
                })
        });
        targets.chain(claims).collect()
    }

    /// Whether some job runs `method` on `model` for `task` (a task, or with `by_entry` also
    /// the suite entry it comes from), or its measures when `task` is `None` (suite labels).
    fn names_job(&self, model: &str, method: &str, task: Option<&str>, by_entry: bool) -> bool {
        let suite = &self.suite;
        self.jobs.iter().any(|job| {
            suite.models[job.model].label == model
                && suite.methods[job.method].label == method
                && match (task, job.kind) {
                    (None, JobKind::Measure) => true,
                    (Some(name), JobKind::Task(i)) => {
                        let t = &self.tasks[i];
                        t.name == name || (by_entry && suite.tasks[t.entry].name == name)
                    }
                    _ => false,
                }
        })
    }

    /// Expands models × methods × (measures + tasks). `models` follows the suite's models;
    /// two tasks with one name (from two entries) are an error.
    pub fn new(
        suite: Suite,
        models: Vec<ResolvedModel>,
        tasks: Vec<ResolvedTask>,
        device_kind: &str,
    ) -> Result<Self, SuiteError> {
        if models.len() != suite.models.len() {
            return Err(SuiteError::invalid(
                suite.path.display().to_string(),
                format!(
                    "{} models resolved for {}",
                    models.len(),
                    suite.models.len()
                ),
            ));
        }
        let mut names = BTreeSet::new();
        if let Some(dup) = tasks.iter().find(|t| !names.insert(&t.name)) {
            let entry = &suite.tasks[dup.entry];
            return Err(SuiteError::invalid(
                suite.locate("name", &entry.name),
                format!(
                    "task `{}` is listed twice (also through a group or tag)",
                    dup.name
                ),
            ));
        }
        let mut plan = Self {
            suite,
            models,
            tasks,
            device_kind: device_kind.to_owned(),
            jobs: Vec::new(),
        };
        plan.jobs = plan.expand();
        Ok(plan)
    }

    fn expand(&self) -> Vec<Job> {
        let measures = self.suite.measure.flops
            || self.suite.measure.params
            || self.suite.measure.routing
            || self.suite.measure.latency.enabled;
        let mut jobs = Vec::new();
        for model in 0..self.models.len() {
            for method in 0..self.suite.methods.len() {
                if !self.suite.methods[method].applies_to(&self.suite.models[model].label) {
                    continue;
                }
                if measures {
                    jobs.push(self.job(model, method, JobKind::Measure));
                }
                for task in 0..self.tasks.len() {
                    jobs.push(self.job(model, method, JobKind::Task(task)));
                }
            }
        }
        jobs
    }

    fn job(&self, model: usize, method: usize, kind: JobKind) -> Job {
        let what = match kind {
            JobKind::Measure => None,
            JobKind::Task(t) => Some(self.tasks[t].name.as_str()),
        };
        let skip = match kind {
            JobKind::Measure => None,
            JobKind::Task(_) => self.models[model].no_tasks_reason.clone(),
        };
        Job {
            hash: self.job_hash(model, method, kind),
            model,
            method,
            kind,
            label: job_label(
                &self.suite.models[model].label,
                &self.suite.methods[method].label,
                what,
            ),
            skip,
        }
    }

    /// label → sha of the suite models a method's parameters name (e.g. DUME's `experts`), so
    /// that rebuilding such a model invalidates the jobs that merged it.
    pub fn referenced_models(&self, method: usize) -> BTreeMap<String, String> {
        fn strings<'v>(value: &'v Value, out: &mut Vec<&'v str>) {
            match value {
                Value::String(s) => out.push(s),
                Value::Array(items) => items.iter().for_each(|v| strings(v, out)),
                Value::Object(map) => map.values().for_each(|v| strings(v, out)),
                _ => {}
            }
        }
        let config = &self.suite.methods[method];
        let mut named = Vec::new();
        let steps = config.then.iter().map(|s| &s.params);
        for params in std::iter::once(&config.params).chain(steps) {
            params.values().for_each(|v| strings(v, &mut named));
        }
        named
            .into_iter()
            .filter_map(|label| {
                let index = self.suite.models.iter().position(|m| m.label == label)?;
                Some((label.to_owned(), self.models[index].sha.clone()))
            })
            .collect()
    }

    /// sha256 of the canonical JSON of every input that determines the job's result.
    fn job_hash(&self, model: usize, method: usize, kind: JobKind) -> String {
        let (m, config, d) = (
            &self.suite.models[model],
            &self.suite.methods[method],
            &self.suite.defaults,
        );
        let mut fields = json!({
            "harness_version": HARNESS_VERSION,
            "model": m.id,
            "model_sha": self.models[model].sha,
            "method": config.name,
            "method_params": config.params_json(),
            "method_then": config.then,
            "dtype": d.dtype.as_str(),
            "device": self.device_kind,
            "calibration": {
                "sequences": self.suite.calibration.sequences,
                "length": self.suite.calibration.length,
                "seed": self.suite.calibration.seed,
                "source_sha256": self.suite.calibration_sha256,
            },
        });
        let extra = match kind {
            JobKind::Measure => json!({"kind": "measure", "measure": self.suite.measure}),
            JobKind::Task(t) => {
                let task = &self.tasks[t];
                json!({
                    "kind": "task",
                    "task": task.name,
                    "task_hash": task.content_hash,
                    "num_fewshot": task.num_fewshot,
                    "limit": self.limit(task),
                    "ppl_protocol": self.suite.tasks[task.entry].ppl_protocol,
                    "max_length": d.max_length,
                    "seed": d.seed,
                    "bootstrap_iters": d.bootstrap_iters,
                })
            }
        };
        if let (Value::Object(fields), Value::Object(extra)) = (&mut fields, extra) {
            fields.extend(extra);
            // Only when present, so that the hashes of other jobs stay as they were.
            let referenced = self.referenced_models(method);
            if !referenced.is_empty() {
                fields.insert("method_models".into(), json!(referenced));
            }
        }
        crate::sha256_hex(canonical_json(&fields).as_bytes())
    }

    /// Documents evaluated per task: the task entry's `limit`, else `defaults.limit`.
    pub fn limit(&self, task: &ResolvedTask) -> Option<usize> {
        self.suite.tasks[task.entry]
            .limit
            .or(self.suite.defaults.limit)
            .map(usize::from)
    }

    /// Keeps the jobs whose label contains `pattern`.
    pub fn retain_matching(&mut self, pattern: &str) {
        self.jobs.retain(|j| j.label.contains(pattern));
    }

    /// Keeps the jobs of `shard`: the plan's (model, method) groups — whose jobs share one
    /// loaded and transformed model — are dealt to the shards by [`assign_shards`] on
    /// `group_cost`, so every job is in exactly one shard and a method is applied in one shard
    /// only. The assignment depends on the plan alone (not on what earlier runs finished), so a
    /// rerun of a shard gets the same jobs.
    pub fn retain_shard(&mut self, shard: Shard, group_cost: impl Fn(&Group) -> f64) {
        let groups = self.groups();
        let costs: Vec<f64> = groups.iter().map(&group_cost).collect();
        let owner = assign_shards(&costs, shard.count);
        let mine: BTreeSet<(usize, usize)> = groups
            .iter()
            .zip(owner)
            .filter(|(_, owner)| *owner == shard.index - 1)
            .map(|(g, _)| (g.model, g.method))
            .collect();
        self.jobs.retain(|j| mine.contains(&(j.model, j.method)));
    }

    /// The jobs grouped by (model, method), in plan order.
    pub fn groups(&self) -> Vec<Group<'_>> {
        let mut groups: Vec<Group> = Vec::new();
        for job in &self.jobs {
            match groups.last_mut() {
                Some(g) if (g.model, g.method) == (job.model, job.method) => g.jobs.push(job),
                _ => groups.push(Group {
                    model: job.model,
                    method: job.method,
                    jobs: vec![job],
                }),
            }
        }
        groups
    }

    /// A record of `job` carrying its provenance; `kind`, `metric`, `value`, … are set per
    /// record by [`crate::RunStore::commit`]. `device` is the full device name (`cuda:1`).
    pub fn record_template(&self, job: &Job, device: &str) -> Record {
        let (m, config, d) = (
            &self.suite.models[job.model],
            &self.suite.methods[job.method],
            &self.suite.defaults,
        );
        let task = match job.kind {
            JobKind::Measure => None,
            JobKind::Task(t) => Some(&self.tasks[t]),
        };
        Record {
            kind: RecordKind::JobDone,
            suite: self.suite.name.clone(),
            job: job.hash.clone(),
            model: m.id.clone(),
            model_label: m.label.clone(),
            model_sha: self.models[job.model].sha.clone(),
            method: config.name.clone(),
            method_label: config.label.clone(),
            method_params: config.params_json(),
            method_hash: config.hash(),
            task: task.map(|t| t.name.clone()),
            task_hash: task.map(|t| t.content_hash.clone()),
            metric: String::new(),
            value: 0.0,
            stderr: None,
            n: None,
            higher_is_better: None,
            protocol: None,
            device: device.to_owned(),
            dtype: d.dtype.as_str().to_owned(),
            batch_size: d.batch_size.get(),
            seed: d.seed,
            harness_version: HARNESS_VERSION.to_owned(),
            wall_s: 0.0,
            time: String::new(),
        }
    }

    /// The plan as a markdown table, with each job's state.
    pub fn table(&self, finished: &BTreeSet<String>) -> String {
        let mut s = String::from("|job|model|method|task|state|\n|---|---|---|---|---|\n");
        for job in &self.jobs {
            let task = match job.kind {
                JobKind::Measure => "(measures)",
                JobKind::Task(t) => &self.tasks[t].name,
            };
            let state = match &job.skip {
                Some(reason) => format!("skip: {reason}"),
                None if finished.contains(&job.hash) => "done".to_owned(),
                None => "to run".to_owned(),
            };
            let _ = writeln!(
                s,
                "|{}|{}|{}|{task}|{state}|",
                &job.hash[..12],
                self.suite.models[job.model].label,
                self.suite.methods[job.method].label
            );
        }
        s
    }
}

/// One of `count` disjoint parts of a plan, numbered from 1 (`--shard INDEX/COUNT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl std::str::FromStr for Shard {
    type Err = SuiteError;

    fn from_str(text: &str) -> Result<Self, SuiteError> {
        let at = format!("--shard {text}");
        let parsed = text
            .split_once('/')
            .and_then(|(i, n)| Some((i.trim().parse().ok()?, n.trim().parse().ok()?)));
        match parsed {
            None => Err(SuiteError::invalid(
                at,
                "expected INDEX/COUNT with whole numbers, e.g. --shard 2/4",
            )),
            Some((_, 0)) => Err(SuiteError::invalid(
                at,
                "the shard count must be at least 1",
            )),
            Some((index, count)) if index == 0 || index > count => Err(SuiteError::invalid(
                at,
                format!(
                    "shards are numbered 1 to {count}; use --shard 1/{count} … {count}/{count}"
                ),
            )),
            Some((index, count)) => Ok(Self { index, count }),
        }
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// The shard (0-based) of each group, given each group's estimated cost: the longest-processing-
/// time-first rule (Graham 1969, §3) — groups by decreasing cost, each to the least loaded shard
/// so far, ties to the earlier group and the lower shard — which keeps the most loaded shard
/// within 4/3 of the best split. Deterministic: only the costs and their order matter.
pub fn assign_shards(costs: &[f64], count: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..costs.len()).collect();
    order.sort_by(|&a, &b| costs[b].total_cmp(&costs[a]).then(a.cmp(&b)));
    let mut loads = vec![0.0f64; count.max(1)];
    let mut owner = vec![0; costs.len()];
    for group in order {
        let (lightest, _) = loads
            .iter()
            .enumerate()
            .min_by(|(i, a), (j, b)| a.total_cmp(b).then(i.cmp(j)))
            .expect("at least one shard");
        owner[group] = lightest;
        loads[lightest] += costs[group];
    }
    owner
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load_suite;

    fn suite(dir: &std::path::Path, extra: &str) -> Suite {
        let path = dir.join("s.yaml");
        let text = format!("name: s\nmodels:\n  - id: org/a\n  - id: org/b\nmethods:\n  - name: dense\ntasks:\n  - name: t1\n  - name: g\n{extra}");
        std::fs::write(&path, text).unwrap();
        load_suite(&path, &crate::methods::test_catalogue::schemas()).unwrap()
    }

    fn model(sha: &str) -> ResolvedModel {
        ResolvedModel {
            sha: sha.into(),
            no_tasks_reason: None,
        }
    }

    fn task(name: &str, entry: usize) -> ResolvedTask {
        ResolvedTask {
            name: name.into(),
            entry,
            content_hash: format!("hash-{name}"),
            num_fewshot: 0,
        }
    }

    fn plan(extra: &str, sha_b: &str) -> Plan {
        let dir = tempfile::tempdir().unwrap();
        let tasks = vec![task("t1", 0), task("g1", 1), task("g2", 1)];
        Plan::new(
            suite(dir.path(), extra),
            vec![model("sa"), model(sha_b)],
            tasks,
            "cpu",
        )
        .unwrap()
    }

    /// The suite written as `text` (in a temporary `s.yaml`).
    fn suite_of(text: &str) -> Result<Suite, SuiteError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.yaml");
        std::fs::write(&path, text).unwrap();
        load_suite(&path, &crate::methods::test_catalogue::schemas())
    }

    /// The plan of a two-model suite (`org/a`, `org/b`) written as `text`, with one task `t1`.
    fn plan_of(text: &str, sha_b: &str) -> Plan {
        Plan::new(
            suite_of(text).unwrap(),
            vec![model("sa"), model(sha_b)],
            vec![task("t1", 0)],
            "cpu",
        )
        .unwrap()
    }

    #[test]
    fn jobs_merging_another_suite_model_hash_its_sha() {
        let text = "name: s\nmodels:\n  - id: org/a\n  - id: org/b\nmethods:\n  - name: dense\n  - name: weight_average\n    params: {experts: [org/b]}\n    models: [org/a]\ntasks:\n  - name: t1\n";
        let (before, after) = (plan_of(text, "sb"), plan_of(text, "sb2"));
        let hash = |p: &Plan, label: &str| {
            let job = p.jobs.iter().find(|j| j.label == label).unwrap();
            job.hash.clone()
        };
        assert_eq!(
            hash(&before, "org/a/dense/t1"),
            hash(&after, "org/a/dense/t1")
        );
        assert_ne!(
            hash(&before, "org/a/weight_average/t1"),
            hash(&after, "org/a/weight_average/t1")
        );
    }

    #[test]
    fn methods_restricted_to_models_only_run_there() {
        let text = "name: s\nmodels:\n  - id: org/a\n  - id: org/b\nmethods:\n  - name: dense\n  - name: upcycle\n    models: [org/b]\ntasks:\n  - name: t1\n";
        let p = plan_of(text, "sb");
        let labels: Vec<&str> = p.jobs.iter().map(|j| j.label.as_str()).collect();
        assert_eq!(
            labels,
            [
                "org/a/dense/measure",
                "org/a/dense/t1",
                "org/b/dense/measure",
                "org/b/dense/t1",
                "org/b/upcycle/measure",
                "org/b/upcycle/t1"
            ]
        );
        let chained = text.replace(
            "    models: [org/b]\n",
            "    models: [org/b]\n    then:\n      - name: reap\n        params: {compression: 0.5}\n",
        );
        let chain = plan_of(&chained, "sb");
        assert_eq!(chain.suite.methods[1].then[0].name, "reap");
        assert_ne!(
            chain.jobs[4].hash, p.jobs[4].hash,
            "the chain is part of the job hash"
        );
        assert_eq!(chain.jobs[0].hash, p.jobs[0].hash);
        let e = suite_of(&chained.replace("name: reap", "name: reaps"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("methods: then: unknown method `reaps` (did you mean `reap`?"),
            "{e}"
        );
        let e = suite_of(&text.replace("[org/b]", "[org/c]"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("s.yaml:7:5")
                && e.contains(
                    "names model `org/c`, which is not a model label (labels: org/a, org/b)"
                ),
            "{e}"
        );
    }

    #[test]
    fn expands_models_methods_and_tasks_in_groups() {
        let p = plan("", "sb");
        let labels: Vec<&str> = p.jobs.iter().map(|j| j.label.as_str()).collect();
        assert_eq!(
            labels[..4],
            [
                "org/a/dense/measure",
                "org/a/dense/t1",
                "org/a/dense/g1",
                "org/a/dense/g2"
            ]
        );
        assert_eq!(p.jobs.len(), 8);
        assert_eq!(p.groups().len(), 2);
        let hashes: BTreeSet<&str> = p.jobs.iter().map(|j| j.hash.as_str()).collect();
        assert_eq!(hashes.len(), 8);
        assert!(p
            .table(&BTreeSet::new())
            .contains("|org/b|dense|g2|to run|"));
    }

    #[test]
    fn hashes_change_with_their_inputs_only() {
        let base = plan("", "sb");
        assert_eq!(base.jobs, plan("", "sb").jobs);
        let other_sha = plan("", "sb2");
        assert_eq!(base.jobs[..4], other_sha.jobs[..4]);
        assert_ne!(base.jobs[4].hash, other_sha.jobs[4].hash);
        let limited = plan("defaults:\n  limit: 5\n", "sb");
        assert_eq!(
            base.jobs[0].hash, limited.jobs[0].hash,
            "measures do not depend on limit"
        );
        assert_ne!(base.jobs[1].hash, limited.jobs[1].hash);
        let own_limit = plan("    limit: 5\n", "sb");
        assert_eq!(
            own_limit.jobs[1].hash, base.jobs[1].hash,
            "g's limit does not change t1"
        );
        assert_ne!(own_limit.jobs[2].hash, base.jobs[2].hash);
    }

    #[test]
    fn only_filters_by_label_and_skips_are_kept() {
        let mut p = plan("", "sb");
        p.models[1].no_tasks_reason = Some("no tokenizer.json".into());
        p.jobs = p.expand();
        p.retain_matching("org/b/");
        assert_eq!(p.jobs.len(), 4);
        assert!(p.jobs[0].skip.is_none() && p.jobs[1].skip.is_some());
    }

    #[test]
    fn shards_parse_one_based_and_bad_values_say_why() {
        let shard: Shard = "2/3".parse().unwrap();
        assert_eq!(shard, Shard { index: 2, count: 3 });
        assert_eq!(shard.to_string(), "2/3");
        for (bad, why) in [
            ("0/3", "--shard 0/3: shards are numbered 1 to 3"),
            ("4/3", "--shard 4/3: shards are numbered 1 to 3"),
            (
                "x/y",
                "--shard x/y: expected INDEX/COUNT with whole numbers",
            ),
            ("3", "--shard 3: expected INDEX/COUNT"),
            ("1/0", "--shard 1/0: the shard count must be at least 1"),
            ("-1/2", "expected INDEX/COUNT"),
        ] {
            let e = bad.parse::<Shard>().unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn groups_are_dealt_largest_first_to_the_lightest_shard() {
        assert_eq!(
            assign_shards(&[1.0, 5.0, 3.0, 3.0, 2.0], 2),
            [1, 0, 1, 1, 0]
        );
        assert_eq!(assign_shards(&[1.0, 1.0], 3), [0, 1]);
        assert_eq!(assign_shards(&[], 3), Vec::<usize>::new());
        // Equal costs go round-robin in plan order.
        assert_eq!(assign_shards(&[2.0; 4], 2), [0, 1, 0, 1]);
    }

    #[test]
    fn shards_partition_the_plan_by_group() {
        let text = "name: s\nmodels:\n  - id: org/a\n  - id: org/b\nmethods:\n  - name: dense\n  - name: upcycle\ntasks:\n  - name: t1\n";
        let full = plan_of(text, "sb");
        let cost = |g: &Group| 1.0 + g.model as f64 + 2.0 * g.method as f64;
        let mut seen = Vec::new();
        for index in 1..=3 {
            let mut part = full.clone();
            part.retain_shard(Shard { index, count: 3 }, cost);
            let again = {
                let mut p = full.clone();
                p.retain_shard(Shard { index, count: 3 }, cost);
                p.jobs
            };
            assert_eq!(part.jobs, again, "deterministic");
            for g in part.groups() {
                assert_eq!(g.jobs.len(), 2, "a group stays whole: {g:?}");
            }
            seen.extend(part.jobs.into_iter().map(|j| j.hash));
        }
        let mut all: Vec<String> = full.jobs.iter().map(|j| j.hash.clone()).collect();
        all.sort();
        seen.sort();
        assert_eq!(seen, all, "every job in exactly one shard");
    }

    #[test]
    fn duplicate_leaf_tasks_are_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let tasks = vec![task("t1", 0), task("t1", 1)];
        let e = Plan::new(
            suite(dir.path(), ""),
            vec![model("a"), model("b")],
            tasks,
            "cpu",
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("s.yaml:9:5: task `t1` is listed twice"),
            "{e}"
        );
    }
}
