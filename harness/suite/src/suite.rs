//! The suite YAML: models × methods × tasks × measurements, with run defaults, report options
//! and optional targets (docs/suite-format.md describes every key).
//!
//! The file is parsed by serde_yaml into structs that deny unknown keys, so a typo is an error
//! at `file:line:column` with the closest key as a hint; semantic checks (empty lists,
//! duplicate labels, unknown methods) point at the line that writes the offending value.
use crate::build::TrainSpec;
use crate::methods::{
    check_step, expand_method, find_schema, MethodConfig, MethodStep, WARN_SWEEP,
};
use crate::SuiteError;
use moebench_core::params::{MethodKind, MethodSchema, MIX_PARAM};
use moebench_core::suggest::unknown_name_hint;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeSet;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};

/// A validated suite.
#[derive(Debug, Clone)]
pub struct Suite {
    /// The suite file as given.
    pub path: PathBuf,
    /// The directory relative model and task paths resolve against (absolute).
    pub dir: PathBuf,
    /// sha256 of the file's bytes.
    pub sha256: String,
    pub name: String,
    pub description: String,
    pub defaults: Defaults,
    pub models: Vec<ModelSpec>,
    /// Method configurations, sweeps expanded.
    pub methods: Vec<MethodConfig>,
    pub tasks: Vec<TaskEntry>,
    pub measure: Measure,
    pub calibration: Calibration,
    /// sha256 of the calibration source file(s), when the suite names any.
    pub calibration_sha256: Option<String>,
    /// Calibration sources that do not exist (yet), with their `file:line:column`: an error
    /// for a run, a note for a dry run (e.g. texts an experiment script builds first).
    pub calibration_missing: Vec<String>,
    pub report: ReportSpec,
    pub targets: Vec<Target>,
    pub claims: Vec<Claim>,
    pub code_execution: CodeExecution,
    /// Things that load but look unintended (a very large sweep), for the runner to show.
    pub warnings: Vec<String>,
}

/// The file as written (before sweeps are expanded and paths resolved).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SuiteFile {
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    defaults: Defaults,
    models: Vec<ModelEntry>,
    methods: Vec<MethodEntry>,
    tasks: Vec<TaskEntry>,
    #[serde(default)]
    measure: Measure,
    #[serde(default)]
    calibration: Calibration,
    #[serde(default)]
    report: ReportSpec,
    #[serde(default)]
    targets: Vec<Target>,
    #[serde(default)]
    claims: Vec<Claim>,
    #[serde(default)]
    code_execution: CodeExecution,
}

/// Run settings shared by every job.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Defaults {
    /// `auto`, `cpu`, `cuda` or `cuda:N`.
    pub device: DeviceSpec,
    pub dtype: Dtype,
    /// Few-shot sampling seed (lm-eval's `fewshot_random_seed`).
    pub seed: u64,
    /// Most sequences per forward pass.
    pub batch_size: NonZeroUsize,
    /// Most padded tokens per forward pass; `None`: from the memory free on the device
    /// (results do not depend on it, so it is not part of the job hash).
    pub token_budget: Option<NonZeroUsize>,
    /// Longest input in tokens; `None`: the model's `max_position_embeddings`.
    pub max_length: Option<NonZeroUsize>,
    /// Documents per task; `None`: all. A task's own `limit` wins.
    pub limit: Option<NonZeroUsize>,
    /// Bootstrap replicates for the stderrs of non-mean metrics.
    pub bootstrap_iters: usize,
}

impl Default for Defaults {
    fn default() -> Self {
        Self {
            device: DeviceSpec("auto".into()),
            dtype: Dtype::F32,
            seed: 1234,
            batch_size: NonZeroUsize::new(16).expect("non-zero"),
            token_budget: None,
            max_length: None,
            limit: None,
            bootstrap_iters: 1000,
        }
    }
}

/// A device name checked for its form: `auto`, `cpu`, `cuda` or `cuda:N`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DeviceSpec(String);

impl DeviceSpec {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for DeviceSpec {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        let index_ok = |n: &str| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit());
        match s.as_str() {
            "auto" | "cpu" | "cuda" => Ok(Self(s)),
            other if other.strip_prefix("cuda:").is_some_and(index_ok) => Ok(Self(s)),
            other => Err(format!(
                "unknown device `{other}` (expected auto, cpu, cuda or cuda:N)"
            )),
        }
    }
}

impl From<DeviceSpec> for String {
    fn from(d: DeviceSpec) -> String {
        d.0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    F32,
    Bf16,
    F16,
}

impl Dtype {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::Bf16 => "bf16",
            Self::F16 => "f16",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelEntry {
    id: Option<String>,
    label: Option<String>,
    /// A model the suite builds and trains itself instead of loading (`id` then absent).
    build: Option<TrainSpec>,
}

/// A model of the suite.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSpec {
    /// As written in the suite (part of the job hash, so a run directory survives moving the
    /// checkout); `build:<label>` for a built model.
    pub id: String,
    /// What to resolve: the Hub id (`org/name[@revision]`), or the absolute local directory
    /// (empty for a built model).
    pub reference: String,
    /// Unique name in tables: `label`, else the id (a local directory's last component).
    pub label: String,
    /// Set for a model the suite builds (text paths resolved against the suite's directory).
    pub build: Option<TrainSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MethodEntry {
    name: String,
    label: Option<String>,
    #[serde(default)]
    params: serde_json::Map<String, serde_json::Value>,
    /// Labels of the models the method applies to (default: all).
    models: Option<Vec<String>>,
    /// Methods applied after this one, in order.
    #[serde(default)]
    then: Vec<MethodStep>,
}

/// A task of the suite: a shipped task, group or tag name, or a task YAML path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskEntry {
    pub name: String,
    /// Overrides the task YAML's `num_fewshot`.
    pub num_fewshot: Option<usize>,
    /// Overrides `defaults.limit`.
    pub limit: Option<NonZeroUsize>,
    /// Perplexity tasks: `gptq_concat:SEQLEN` or `strided:MAX_LENGTH:STRIDE` instead of
    /// lm-eval's rolling windows (checked by the runner).
    pub ppl_protocol: Option<String>,
}

/// What to measure once per (model, method).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Measure {
    /// Analytic forward FLOPs per token (`flops_per_token`, at context 1).
    pub flops: bool,
    /// Parameter counts (`params_total`, `params_active`).
    pub params: bool,
    /// Routing diagnostics of MoE models on the calibration text (active experts, load
    /// balance, per-layer loads), and FLOPs/bytes from the measured expert counts.
    pub routing: bool,
    /// Context length (earlier positions) at which `bytes_per_decode_token` counts the KV cache.
    pub decode_context: usize,
    pub latency: Latency,
}

impl Default for Measure {
    fn default() -> Self {
        Self {
            flops: true,
            params: true,
            routing: true,
            decode_context: 512,
            latency: Latency::default(),
        }
    }
}

/// Calibration text: what routing measures run on and what calibration-based methods
/// (pruning, DTop-p calibration, …) compute their statistics from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Calibration {
    /// A text file, or JSON lines (`.jsonl`) whose `text` fields are joined, relative to the
    /// suite file. Default: the shipped `datasets/shakespeare/sonnets.jsonl`.
    pub source: Option<PathBuf>,
    /// Sequences drawn (seeded, non-overlapping windows of the tokenized text).
    pub sequences: usize,
    /// Tokens per sequence.
    pub length: usize,
    pub seed: u64,
    /// A mix of text sources instead of `source`: each gets its `weight`'s share of the
    /// sequences (REAM's C4:Math:Code ratios). A method's `mix` parameter re-weights them.
    pub mix: Vec<MixSource>,
}

/// One source of a calibration mix.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MixSource {
    pub source: PathBuf,
    pub weight: f64,
}

impl Default for Calibration {
    fn default() -> Self {
        Self {
            source: None,
            sequences: 16,
            length: 128,
            seed: 0,
            mix: Vec::new(),
        }
    }
}

/// Greedy-generation latency (as `moebench bench`); parsed here, run by the runner.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Latency {
    pub enabled: bool,
    pub prompt_tokens: usize,
    pub new_tokens: usize,
    pub repeats: usize,
    pub warmup: usize,
    /// Batch sizes measured (copies of the prompt decoded together).
    pub batch_sizes: Vec<usize>,
}

impl Default for Latency {
    fn default() -> Self {
        Self {
            enabled: false,
            prompt_tokens: 128,
            new_tokens: 32,
            repeats: 5,
            warmup: 1,
            batch_sizes: vec![1],
        }
    }
}

/// Running model-generated code (HumanEval, MBPP: tasks with lm-eval's `unsafe_code: true`).
/// Not part of any job hash: where the code runs does not change what a test decides.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CodeExecution {
    /// lm-eval's `--confirm_run_unsafe_code`: without it such tasks are refused before any job.
    pub confirm_run_unsafe_code: bool,
    /// Python interpreter that runs the generated programs.
    pub python: String,
    /// Where the OS forbids the sandbox's namespaces, run the code with resource limits only
    /// (it can then reach the network and write wherever the user can).
    pub allow_unisolated: bool,
}

impl Default for CodeExecution {
    fn default() -> Self {
        Self {
            confirm_run_unsafe_code: false,
            python: "python3".into(),
            allow_unisolated: false,
        }
    }
}

/// HTML report options.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReportSpec {
    /// Where to write the report; relative to the run directory. Default `report.html`.
    pub path: Option<PathBuf>,
    /// Default: the suite name.
    pub title: Option<String>,
    /// Pareto plots, one per pair of axes.
    pub pareto: Vec<ParetoAxes>,
}

/// Two axes of a Pareto plot: a measure (`flops_per_token`, `params_active`, …) or a task
/// metric written `task/metric` (e.g. `arc_easy_shared/acc,none`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParetoAxes {
    pub x: String,
    pub y: String,
}

/// An expected value, for regression gates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// A model label.
    pub model: String,
    /// A method label.
    pub method: String,
    /// A task name; absent for measures.
    pub task: Option<String>,
    pub metric: String,
    pub value: f64,
    #[serde(default)]
    pub tolerance: f64,
    /// Where the value comes from (paper, table, row), shown beside a missed target.
    #[serde(default)]
    pub source: Option<String>,
}

/// A paper's claim as an inequality between two methods on one task — `better` on `model`
/// beats `than` (on `than_model`, default `model`) on `metric` by more than `margin` — checked
/// with a paired bootstrap over the two jobs' per-document scores (`moebench report
/// --check-targets`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Claim {
    /// The claim in words, as the table shows it.
    pub claim: String,
    /// A model label.
    pub model: String,
    /// The method label claimed to do better.
    pub better: String,
    /// The method label it is claimed to beat.
    pub than: String,
    /// The model label of `than` when it is another model (two models trained differently,
    /// each evaluated as trained); default `model`.
    #[serde(default)]
    pub than_model: Option<String>,
    /// A task name (a task, or the suite entry it comes from when that has one task).
    pub task: String,
    /// A per-document metric key as in the records (`acc,none`, `bits_per_byte,none`, …).
    pub metric: String,
    /// How much better, in the metric's units (default 0: any improvement).
    #[serde(default)]
    pub margin: f64,
    /// Where the claim comes from (paper, section, table).
    #[serde(default)]
    pub source: Option<String>,
}

impl Claim {
    /// The model label of `than`.
    pub fn than_model(&self) -> &str {
        self.than_model.as_deref().unwrap_or(&self.model)
    }
}

impl Suite {
    /// The name a task entry is looked up by: a path (ends with `.yaml` or has a `/`) resolved
    /// against the suite's directory, else the name as written.
    pub fn task_lookup(&self, entry: &TaskEntry) -> String {
        if entry.name.ends_with(".yaml") || entry.name.contains('/') {
            self.dir.join(&entry.name).display().to_string()
        } else {
            entry.name.clone()
        }
    }

    /// The report file: `report.path` relative to the run directory, default `report.html`.
    pub fn report_path(&self, run_dir: &Path) -> PathBuf {
        run_dir.join(
            self.report
                .path
                .as_deref()
                .unwrap_or(Path::new("report.html")),
        )
    }

    /// `file:line:column` of the first `key: value` line (`value` unquoted), else the file.
    pub fn locate(&self, key: &str, value: &str) -> String {
        let text = read_text(&self.path).unwrap_or_default();
        Locator::new(&self.path, &text).at(&[key], value, 0)
    }
}

/// Reads, parses and validates a suite file against the method `schemas` (the catalogue's).
/// Every semantic problem is reported at once, each at its `file:line:column`.
pub fn load_suite(path: impl AsRef<Path>, schemas: &[&MethodSchema]) -> Result<Suite, SuiteError> {
    let path = path.as_ref();
    let text = read_text(path)?;
    let file: SuiteFile = serde_yaml::from_str(&text).map_err(|e| yaml_error(path, &e))?;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .canonicalize()
        .map_err(SuiteError::read(path))?;
    let at = Locator::new(path, &text);
    let mut problems = Problems::default();
    problems.check(check_file(&file, &at));
    let models: Vec<ModelSpec> = file
        .models
        .iter()
        .enumerate()
        .filter_map(|(i, m)| problems.check(model_spec(m, &file.models[..i], &dir, &at, schemas)))
        .collect();
    for (i, model) in models.iter().enumerate() {
        let Some(from) = model.build.as_ref().and_then(|b| b.from.as_ref()) else {
            continue;
        };
        if !models[..i].iter().any(|earlier| &earlier.label == from) {
            problems.push(SuiteError::invalid(
                at.at(&["label"], &model.label, 0),
                format!(
                    "models: `{}` is built from `{from}`, which is not the label of a model \
                     listed before it",
                    model.label
                ),
            ));
        }
    }
    let mut warnings = Vec::new();
    let mut methods = Vec::new();
    for m in &file.methods {
        let here = || at.at(&["name"], &m.name, 0);
        if m.then
            .iter()
            .any(|step| step.params.contains_key(MIX_PARAM))
        {
            problems.push(SuiteError::invalid(
                here(),
                "methods: `mix` is a parameter of a chain's first method only (it re-weights the \
                 calibration text the whole chain uses)",
            ));
        }
        let schema = match find_schema(schemas, &m.name) {
            Ok(schema) => schema,
            Err(e) => {
                problems.push(SuiteError::invalid(here(), format!("methods: {e}")));
                continue;
            }
        };
        let mut then = Vec::new();
        for step in &m.then {
            match check_step(schemas, step) {
                Ok(step) => then.push(step),
                Err(errors) => {
                    for e in errors {
                        problems.push(SuiteError::invalid(
                            at.at(&["name"], &step.name, 0),
                            format!("methods: then: {e}"),
                        ));
                    }
                }
            }
        }
        let mut configs = match expand_method(schema, m.label.as_deref(), &m.params) {
            Ok(configs) => configs,
            Err(errors) => {
                for e in errors {
                    problems.push(SuiteError::invalid(here(), format!("methods: {e}")));
                }
                continue;
            }
        };
        if configs.len() > WARN_SWEEP {
            warnings.push(format!(
                "{}: method `{}` sweeps {} configurations",
                here(),
                m.name,
                configs.len()
            ));
        }
        if let Some(labels) = &m.models {
            if let Some(unknown) = labels
                .iter()
                .find(|l| !models.iter().any(|spec| &spec.label == *l))
            {
                let known: Vec<&str> = models.iter().map(|spec| spec.label.as_str()).collect();
                problems.push(SuiteError::invalid(
                    here(),
                    format!(
                        "methods: `{}` names model `{unknown}`, which is not a model label \
                         (labels: {})",
                        m.name,
                        known.join(", ")
                    ),
                ));
            }
            configs
                .iter_mut()
                .for_each(|c| c.models = Some(labels.clone()));
        }
        configs.iter_mut().for_each(|c| c.then = then.clone());
        methods.extend(configs);
    }
    problems.check(unique(
        "models",
        &["label", "id"],
        models.iter().map(|m| m.label.as_str()),
        &at,
    ));
    problems.check(unique(
        "methods",
        &["label", "name"],
        methods.iter().map(|m| m.label.as_str()),
        &at,
    ));
    problems.check(check_targets(&file.targets, &models, &methods, &at));
    problems.check(check_claims(&file.claims, &models, &methods, &at));
    let mut calibration = file.calibration;
    let mut calibration_missing = Vec::new();
    let mut read_source = |source: &Path| -> Result<(PathBuf, String), SuiteError> {
        let resolved = dir.join(source);
        let located = || at.at(&["source"], &source.display().to_string(), 0);
        match std::fs::read(&resolved) {
            Ok(bytes) => Ok((resolved, crate::sha256_hex(&bytes))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                calibration_missing.push(format!(
                    "{}: calibration source {} does not exist",
                    located(),
                    resolved.display()
                ));
                Ok((resolved, "missing".to_owned()))
            }
            Err(e) => Err(SuiteError::invalid(
                located(),
                format!("calibration source {}: {e}", resolved.display()),
            )),
        }
    };
    let mut shas = Vec::new();
    if let Some(source) = &calibration.source {
        if let Some((resolved, sha)) = problems.check(read_source(source)) {
            calibration.source = Some(resolved);
            shas.push(sha);
        }
    }
    for part in &mut calibration.mix {
        if let Some((resolved, sha)) = problems.check(read_source(&part.source)) {
            part.source = resolved;
            shas.push(format!("{sha}*{}", part.weight));
        }
        if !(part.weight >= 0.0 && part.weight.is_finite()) {
            problems.push(SuiteError::invalid(
                at.at(&["weight"], &part.weight.to_string(), 0),
                "calibration.mix: `weight` must be a number ≥ 0".to_owned(),
            ));
        }
    }
    if !calibration.mix.is_empty() && calibration.mix.iter().all(|p| p.weight == 0.0) {
        problems.push(SuiteError::invalid(
            at.at_key(&["mix"], 0),
            "calibration.mix: the weights are all 0; at least one must be > 0".to_owned(),
        ));
    }
    for method in &methods {
        let Some(weights) = method.params.get(MIX_PARAM).and_then(Value::as_array) else {
            continue;
        };
        if weights.len() != calibration.mix.len() {
            problems.push(SuiteError::invalid(
                at.at_key(&[MIX_PARAM], 0),
                format!(
                    "methods: `{}`: `mix` has {} weights but calibration.mix has {} sources (one \
                     weight per source, in order)",
                    method.label,
                    weights.len(),
                    calibration.mix.len()
                ),
            ));
        }
    }
    let calibration_sha256 =
        (!shas.is_empty()).then(|| crate::sha256_hex(shas.join(",").as_bytes()));
    if calibration.sequences == 0 || calibration.length < 2 {
        problems.push(SuiteError::invalid(
            at.at(&["calibration"], "", 0),
            "calibration: `sequences` must be ≥ 1 and `length` ≥ 2".to_owned(),
        ));
    }
    problems.check(check_latency(&file.measure.latency, &at));
    problems.finish()?;
    Ok(Suite {
        path: path.to_owned(),
        dir,
        sha256: crate::sha256_hex(text.as_bytes()),
        name: file.name,
        description: file.description,
        defaults: file.defaults,
        models,
        methods,
        tasks: file.tasks,
        measure: file.measure,
        calibration,
        calibration_sha256,
        calibration_missing,
        report: file.report,
        targets: file.targets,
        claims: file.claims,
        code_execution: file.code_execution,
        warnings,
    })
}

/// `measure.latency`: enough of everything to time.
fn check_latency(latency: &Latency, at: &Locator) -> Result<(), SuiteError> {
    if latency.enabled
        && (latency.new_tokens < 2
            || latency.prompt_tokens == 0
            || latency.repeats == 0
            || latency.batch_sizes.is_empty()
            || latency.batch_sizes.contains(&0))
    {
        return Err(SuiteError::invalid(
            at.at_key(&["latency"], 0),
            "measure.latency needs new_tokens ≥ 2, prompt_tokens ≥ 1, repeats ≥ 1 and batch \
             sizes ≥ 1",
        ));
    }
    Ok(())
}

/// The problems found so far; one error holding all of them at the end.
#[derive(Default)]
struct Problems(Vec<SuiteError>);

impl Problems {
    fn push(&mut self, e: SuiteError) {
        match e {
            SuiteError::Many(many) => self.0.extend(many),
            e => self.0.push(e),
        }
    }

    /// The value, or `None` with its error noted.
    fn check<T>(&mut self, r: Result<T, SuiteError>) -> Option<T> {
        r.map_err(|e| self.push(e)).ok()
    }

    fn finish(self) -> Result<(), SuiteError> {
        let mut problems = self.0;
        match problems.len() {
            0 => Ok(()),
            1 => Err(problems.remove(0)),
            _ => Err(SuiteError::Many(problems)),
        }
    }
}

fn read_text(path: &Path) -> Result<String, SuiteError> {
    std::fs::read_to_string(path).map_err(SuiteError::read(path))
}

/// A serde_yaml error as `file:line:column: message (did you mean …?)`.
fn yaml_error(path: &Path, error: &serde_yaml::Error) -> SuiteError {
    let mut message = error.to_string();
    let at = match error.location() {
        Some(loc) => {
            let suffix = format!(" at line {} column {}", loc.line(), loc.column());
            if let Some(stripped) = message.strip_suffix(&suffix) {
                message = stripped.to_owned();
            }
            format!("{}:{}:{}", path.display(), loc.line(), loc.column())
        }
        None => path.display().to_string(),
    };
    if let Some(hint) = unknown_name_hint(&message) {
        message.push_str(&hint);
    }
    SuiteError::invalid(at, message)
}

/// Finds where values are written in the suite's text, for errors.
struct Locator<'a> {
    path: &'a Path,
    text: &'a str,
}

impl<'a> Locator<'a> {
    fn new(path: &'a Path, text: &'a str) -> Self {
        Self { path, text }
    }

    /// `file:line:column` of the `nth` (0-based) line writing `key: value` for one of `keys`
    /// (also as a list item, `value` unquoted), else the file alone.
    fn at(&self, keys: &[&str], value: &str, nth: usize) -> String {
        self.find(keys, &|written| written == value, nth)
    }

    /// [`Self::at`] for the `nth` line writing one of `keys`, whatever its value.
    fn at_key(&self, keys: &[&str], nth: usize) -> String {
        self.find(keys, &|_| true, nth)
    }

    fn find(&self, keys: &[&str], matches: &dyn Fn(&str) -> bool, nth: usize) -> String {
        let found = self
            .text
            .lines()
            .enumerate()
            .filter_map(|(i, line)| {
                let indent = line.len() - line.trim_start_matches([' ', '-']).len();
                let rest = &line[indent..];
                let rest = keys
                    .iter()
                    .find_map(|k| rest.strip_prefix(k)?.trim_start().strip_prefix(':'))?;
                let written = rest.split(" #").next().unwrap_or_default().trim();
                matches(written.trim_matches(['"', '\''])).then_some((i + 1, indent + 1))
            })
            .nth(nth);
        match found {
            Some((line, column)) => format!("{}:{line}:{column}", self.path.display()),
            None => self.path.display().to_string(),
        }
    }
}

fn check_file(file: &SuiteFile, at: &Locator) -> Result<(), SuiteError> {
    let name_ok = !file.name.is_empty()
        && file
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && !file.name.starts_with('.');
    if !name_ok {
        return Err(SuiteError::invalid(
            at.at(&["name"], &file.name, 0),
            format!(
                "suite name `{}` must be letters, digits, `-`, `_` or `.` (it names the run directory)",
                file.name
            ),
        ));
    }
    for (key, len) in [
        ("models", file.models.len()),
        ("methods", file.methods.len()),
        ("tasks", file.tasks.len()),
    ] {
        if len == 0 {
            return Err(SuiteError::invalid(
                at.at(&[key], "[]", 0),
                format!("`{key}` is empty: list at least one"),
            ));
        }
    }
    unique(
        "tasks",
        &["name"],
        file.tasks.iter().map(|t| t.name.as_str()),
        at,
    )
}

/// `earlier`: the entries before this one (to find its `build:` line).
fn model_spec(
    entry: &ModelEntry,
    earlier: &[ModelEntry],
    dir: &Path,
    at: &Locator,
    schemas: &[&MethodSchema],
) -> Result<ModelSpec, SuiteError> {
    let (id, build) = match (&entry.id, &entry.build) {
        (Some(id), None) => (id.as_str(), None),
        (None, Some(build)) => {
            let Some(label) = &entry.label else {
                let nth = earlier.iter().filter(|e| e.build.is_some()).count();
                return Err(SuiteError::invalid(
                    at.at_key(&["build"], nth),
                    "models: a `build` model needs a `label` (it names the model)".to_owned(),
                ));
            };
            let invalid = |e: String| {
                SuiteError::invalid(
                    at.at(&["label"], label, 0),
                    format!("models: `{label}`: build: {e}"),
                )
            };
            build.validate().map_err(|e| invalid(e.0))?;
            check_router(schemas, build).map_err(invalid)?;
            let build = build.clone().resolved(dir);
            if let Some(missing) = build.text.iter().find(|p| !p.is_file()) {
                return Err(SuiteError::invalid(
                    at.at(&["label"], label, 0),
                    format!(
                        "models: `{label}`: build: training text {} is not a file (paths are \
                         relative to the suite file)",
                        missing.display()
                    ),
                ));
            }
            return Ok(ModelSpec {
                id: format!("build:{label}"),
                reference: String::new(),
                label: label.clone(),
                build: Some(build),
            });
        }
        (id, _) => {
            let (key, value) = match (id, &entry.label) {
                (Some(id), _) => ("id", id.as_str()),
                (None, Some(label)) => ("label", label.as_str()),
                (None, None) => ("models", ""),
            };
            return Err(SuiteError::invalid(
                at.at(&[key], value, 0),
                "models: give either `id` (a Hub id or local path) or `build` (a model to \
                 train), not both or neither"
                    .to_owned(),
            ));
        }
    };
    let looks_local = ["/", "./", "../", "~"].iter().any(|p| id.starts_with(p))
        || id == "."
        || id == ".."
        || dir.join(id).is_dir();
    let reference = if looks_local && !id.starts_with('~') {
        dir.join(id).display().to_string()
    } else {
        id.to_owned()
    };
    let default_label = || match looks_local {
        true => Path::new(id)
            .file_name()
            .map_or_else(|| id.to_owned(), |n| n.to_string_lossy().into_owned()),
        false => id.to_owned(),
    };
    Ok(ModelSpec {
        id: id.to_owned(),
        reference,
        label: entry.label.clone().unwrap_or_else(default_label),
        build,
    })
}

/// A built model's `router` is a router swap of the catalogue and `router_params` fit it.
fn check_router(schemas: &[&MethodSchema], build: &TrainSpec) -> Result<(), String> {
    let schema = find_schema(schemas, &build.router).map_err(|e| format!("router: {e}"))?;
    if schema.kind != MethodKind::RouterSwap {
        let swaps: Vec<&str> = schemas
            .iter()
            .filter(|s| s.kind == MethodKind::RouterSwap)
            .map(|s| s.name)
            .collect();
        return Err(format!(
            "router: `{}` is not a router swap (router swaps: {})",
            build.router,
            swaps.join(", ")
        ));
    }
    schema
        .check(&build.router_params)
        .map(drop)
        .map_err(|errors| {
            let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
            format!("router_params: {}", errors.join("; "))
        })
}

/// No label twice in `list`; an error points at the second line writing it under one of `keys`.
fn unique<'a>(
    list: &str,
    keys: &[&str],
    labels: impl Iterator<Item = &'a str>,
    at: &Locator,
) -> Result<(), SuiteError> {
    let mut seen = BTreeSet::new();
    for label in labels {
        if !seen.insert(label) {
            return Err(SuiteError::invalid(
                at.at(keys, label, 1),
                format!("{list}: `{label}` appears twice; give each entry a unique `label`"),
            ));
        }
    }
    Ok(())
}

fn check_targets(
    targets: &[Target],
    models: &[ModelSpec],
    methods: &[MethodConfig],
    at: &Locator,
) -> Result<(), SuiteError> {
    for t in targets {
        check_labels(
            "targets",
            &t.model,
            &[("method", &t.method)],
            models,
            methods,
            at,
        )?;
    }
    Ok(())
}

fn check_claims(
    claims: &[Claim],
    models: &[ModelSpec],
    methods: &[MethodConfig],
    at: &Locator,
) -> Result<(), SuiteError> {
    for c in claims {
        let labels = [("better", c.better.as_str()), ("than", c.than.as_str())];
        check_labels("claims", &c.model, &labels, models, methods, at)?;
        check_labels("claims", c.than_model(), &[], models, methods, at)?;
        if c.better == c.than && c.than_model() == c.model {
            return Err(SuiteError::invalid(
                at.at(&["than"], &c.than, 0),
                format!(
                    "claims: `{}` compares `{}/{}` with itself; name two methods or `than_model`",
                    c.claim, c.model, c.than
                ),
            ));
        }
    }
    Ok(())
}

/// A model label and method labels (by key) of `list` (`targets`, `claims`) must name suite
/// entries.
fn check_labels(
    list: &str,
    model: &str,
    method_labels: &[(&str, &str)],
    models: &[ModelSpec],
    methods: &[MethodConfig],
    at: &Locator,
) -> Result<(), SuiteError> {
    let unknown = |key: &str, kind: &str, value: &str, known: Vec<&str>| {
        let within = if key == kind {
            String::new()
        } else {
            format!(" (`{key}`)")
        };
        SuiteError::invalid(
            at.at(&[key], value, 0),
            format!(
                "{list}: no {kind} labelled `{value}`{within} (labels: {})",
                known.join(", ")
            ),
        )
    };
    if !models.iter().any(|m| m.label == model) {
        let known = models.iter().map(|m| m.label.as_str()).collect();
        return Err(unknown("model", "model", model, known));
    }
    for (key, method) in method_labels {
        if !methods.iter().any(|m| m.label == *method) {
            let known = methods.iter().map(|m| m.label.as_str()).collect();
            return Err(unknown(key, "method", method, known));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, text: &str) -> PathBuf {
        let path = dir.join("suite.yaml");
        std::fs::write(&path, text).unwrap();
        path
    }

    const MINIMAL: &str = "name: s\nmodels:\n  - id: org/model\nmethods:\n  - name: dense\ntasks:\n  - name: arc_easy\n";

    #[test]
    fn minimal_suite_gets_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let suite = load_suite(
            write(dir.path(), MINIMAL),
            &crate::methods::test_catalogue::schemas(),
        )
        .unwrap();
        assert_eq!(suite.defaults.seed, 1234);
        assert_eq!(suite.defaults.device.as_str(), "auto");
        assert_eq!(suite.models[0].label, "org/model");
        assert_eq!(suite.methods[0].label, "dense");
        assert!(suite.measure.flops && suite.measure.params && !suite.measure.latency.enabled);
        assert_eq!(
            suite.report_path(Path::new("r")),
            Path::new("r/report.html")
        );
    }

    #[test]
    fn local_models_resolve_against_the_suite_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("models/tiny")).unwrap();
        let text = MINIMAL.replace(
            "org/model",
            "models/tiny\n  - id: ./models/tiny\n    label: again",
        );
        let suite = load_suite(
            write(dir.path(), &text),
            &crate::methods::test_catalogue::schemas(),
        )
        .unwrap();
        let root = dir.path().canonicalize().unwrap();
        assert_eq!(
            suite.models[0].reference,
            root.join("models/tiny").display().to_string()
        );
        assert_eq!(suite.models[0].label, "tiny");
        assert_eq!(
            suite.models[1].reference,
            root.join("./models/tiny").display().to_string()
        );
    }

    fn error(text: &str) -> String {
        let dir = tempfile::tempdir().unwrap();
        load_suite(
            write(dir.path(), text),
            &crate::methods::test_catalogue::schemas(),
        )
        .unwrap_err()
        .to_string()
    }

    #[test]
    fn unknown_key_has_location_and_hint() {
        let e = error(&MINIMAL.replace("  - id: org/model", "  - id: org/model\n    lable: x"));
        assert!(
            e.contains("suite.yaml:4:5: models[0]: unknown field `lable`"),
            "{e}"
        );
        assert!(e.contains("did you mean `label`?"), "{e}");
    }

    #[test]
    fn wrong_types_and_values_have_locations() {
        let e = error(&format!("{MINIMAL}defaults:\n  batch_size: many\n"));
        assert!(
            e.contains("suite.yaml:9:15: defaults.batch_size: invalid type: string"),
            "{e}"
        );
        let e = error(&format!("{MINIMAL}defaults:\n  device: tpu\n"));
        assert!(
            e.contains("suite.yaml:9:") && e.contains("unknown device `tpu`"),
            "{e}"
        );
        let e = error(&format!("{MINIMAL}defaults:\n  dtype: fp8\n"));
        assert!(
            e.contains("suite.yaml:9:10") && e.contains("unknown variant `fp8`"),
            "{e}"
        );
        let e = error(&format!("{MINIMAL}defaults:\n  limit: 0\n"));
        assert!(e.contains("suite.yaml:9:") && e.contains("nonzero"), "{e}");
    }

    #[test]
    fn semantic_errors_point_at_the_line() {
        let e = error(&MINIMAL.replace("  - name: dense", "  - name: dense\n  - name: dense"));
        assert!(
            e.contains("suite.yaml:6:5: methods: `dense` appears twice"),
            "{e}"
        );
        let e = error(&MINIMAL.replace("name: dense", "name: upcycling"));
        assert!(
            e.contains("suite.yaml:5:5")
                && e.contains("unknown method `upcycling` (did you mean `upcycle`?"),
            "{e}"
        );
        assert!(e.contains("implemented: dense"), "{e}");
        let e = error(&MINIMAL.replace("tasks:\n  - name: arc_easy\n", "tasks: []\n"));
        assert!(e.contains("suite.yaml:6:1: `tasks` is empty"), "{e}");
        let e = error(&MINIMAL.replace("name: s", "name: a/b"));
        assert!(e.contains("suite.yaml:1:1: suite name `a/b`"), "{e}");
        let e = error(&format!(
            "{MINIMAL}targets:\n  - {{model: other, method: dense, metric: acc, value: 1}}\n"
        ));
        assert!(e.contains("no model labelled `other`"), "{e}");
        let claim = |better: &str, than: &str| {
            format!(
                "{MINIMAL}claims:\n  - {{claim: c, model: org/model, better: {better}, than: {than}, task: arc_easy, metric: acc}}\n"
            )
        };
        let e = error(&claim("dense", "pruned"));
        assert!(
            e.contains("claims: no method labelled `pruned` (`than`)"),
            "{e}"
        );
        let e = error(&claim("dense", "dense"));
        assert!(e.contains("compares `org/model/dense` with itself"), "{e}");
    }

    #[test]
    fn built_models_parse_with_defaults_and_checked_values() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("verse.txt"), "shall I compare thee").unwrap();
        let text = MINIMAL.replace(
            "  - id: org/model\n",
            "  - label: tiny\n    build: {layers: 2, router: topk, router_params: {k: 2}, text: [verse.txt]}\n",
        );
        let suite = load_suite(
            write(dir.path(), &text),
            &crate::methods::test_catalogue::schemas(),
        )
        .unwrap();
        let model = &suite.models[0];
        assert_eq!(
            (model.id.as_str(), model.label.as_str()),
            ("build:tiny", "tiny")
        );
        let build = model.build.as_ref().unwrap();
        assert_eq!((build.layers, build.hidden_size), (2, 128));
        assert_eq!(build.router_params["k"], 2);
        let root = dir.path().canonicalize().unwrap();
        assert_eq!(build.text, vec![root.join("verse.txt")]);

        // (the models block, what the error must contain)
        let cases = [
            (
                "  - build: {}\n",
                &["suite.yaml:3:5", "needs a `label`"][..],
            ),
            ("  - label: x\n", &["suite.yaml:3:5", "either `id`"]),
            (
                "  - label: x\n    build: {top_k: 3, experts: 2}\n",
                &["suite.yaml:3:5", "`top_k` (3)"],
            ),
            (
                "  - label: x\n    build: {text: [missing.txt]}\n",
                &["missing.txt is not a file"],
            ),
            (
                "  - label: x\n    build: {from: y}\n  - label: y\n    build: {}\n",
                &["suite.yaml:3:5", "not the label of a model listed before"],
            ),
            (
                "  - label: x\n    build: {layer: 2}\n",
                &["unknown field `layer`"],
            ),
            (
                "  - label: x\n    build: {router: reap}\n",
                &["router: `reap` is not a router swap (router swaps: topk)"],
            ),
            (
                "  - label: x\n    build: {router: topk, router_params: {k: 2.5}}\n",
                &["router_params: method `topk`: parameter `k` must be a whole number, got 2.5"],
            ),
        ];
        for (models, needles) in cases {
            let e = error(&MINIMAL.replace("  - id: org/model\n", models));
            assert!(needles.iter().all(|n| e.contains(n)), "{models}: {e}");
        }
    }

    #[test]
    fn every_semantic_problem_is_listed_at_once() {
        let text = MINIMAL.replace(
            "  - name: dense\n",
            "  - name: dense\n  - name: dense\n  - name: reap\n    params: {compression: 1.5, steps: 2}\n    then:\n      - name: upcycle\n        params: {mix: [1]}\n  - name: nope\n",
        ) + "measure:\n  latency: {enabled: true, new_tokens: 1}\n";
        let e = error(&text);
        let lines: Vec<&str> = e.lines().collect();
        for needle in [
            "parameter `compression` is 1.5",
            "parameter `steps` is unknown",
            "then: method `upcycle`: parameter `mix` is unknown",
            "unknown method `nope`",
            "`dense` appears twice",
            "measure.latency needs new_tokens ≥ 2",
        ] {
            assert!(lines.iter().any(|l| l.contains(needle)), "{needle}: {e}");
        }
        assert!(lines.iter().all(|l| l.contains("suite.yaml")), "{e}");
    }

    #[test]
    fn unreadable_file_is_named() {
        let e = load_suite(
            "/nonexistent/suite.yaml",
            &crate::methods::test_catalogue::schemas(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("cannot read /nonexistent/suite.yaml"), "{e}");
    }
}
