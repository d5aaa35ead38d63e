//! lm-eval 0.4.13's output files, so that its tooling reads moebench's: the aggregated
//! `results_<date>.json` (`lm_eval/evaluator.py` `evaluate`, `EvaluationTracker.
//! save_results_aggregated` in `lm_eval/loggers/evaluation_tracker.py`, `add_env_info` and
//! `add_tokenizer_info` in `lm_eval/loggers/utils.py`) and the per-task
//! `samples_<task>_<date>.jsonl` (`EvaluationTracker.save_results_samples`), in lm-eval's
//! layout `<output>/<model_name_sanitized>/`; group scores; the console table.
//!
//! moebench's own facts (token budget, perplexity protocols, tokenizer hash, sampling seed)
//! are extra keys outside the per-task results, where lm-eval's readers ignore them.
use crate::evaluate::{SampleRecord, TaskOutcome};
use crate::EvalError;
use moebench_core::stats::{group_mean, pooled_sample_stderr, unweighted_mean_stderr};
use moebench_model::Tokenizer;
use moebench_tasks::hashing::python_str;
use moebench_tasks::{GroupSpec, TaskNode, TaskSpec};
use serde::Serialize;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A special token as lm-eval records it: `[token, "id"]`.
pub type TokenRecord = Option<(String, String)>;

/// The tokenizer's special tokens (`add_tokenizer_info`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct TokenizerTokens {
    pub pad: TokenRecord,
    pub eos: TokenRecord,
    pub bos: TokenRecord,
    /// `eot_token_id`: the end-of-text id generation stops at.
    pub eot_id: Option<i64>,
}

impl TokenizerTokens {
    pub fn of(tokenizer: &Tokenizer) -> Self {
        let record =
            |id: Option<i64>| id.and_then(|id| Some((tokenizer.id_to_token(id)?, id.to_string())));
        Self {
            pad: record(tokenizer.pad_id),
            eos: record(tokenizer.eos_id),
            bos: record(tokenizer.bos_id),
            eot_id: tokenizer.eos_id,
        }
    }
}

/// What produced the numbers: the fields of lm-eval's `config` block, and moebench's
/// provenance.
#[derive(Debug, Clone, Serialize)]
pub struct RunConfig {
    /// lm-eval's `config.model`, the model type (`hf` there): `moebench`.
    pub model: String,
    /// lm-eval's `config.model_args`, e.g. `pretrained=HuggingFaceTB/SmolLM2-135M-Instruct,
    /// dtype=float32`; `moebench run` adds the method (`method=<label>`).
    pub model_args: String,
    /// lm-eval's `model_name`: what `pretrained=` names (a `moebench run` job names its
    /// model and method, e.g. `smollm2/top_p_0.5`).
    pub model_name: String,
    pub model_repo: String,
    /// Hub commit of the weights (`model_sha`); `None` for a local directory.
    pub model_sha: Option<String>,
    pub model_num_parameters: i64,
    pub model_dtype: String,
    pub device: String,
    pub batch_size: usize,
    /// Most padded tokens per forward pass, and how it was chosen (`auto`: from free memory).
    pub token_budget: usize,
    pub token_budget_source: String,
    pub max_length: usize,
    /// `on`, `off` (`--no-prefix-cache`) or why it is off (non-causal routing).
    pub prefix_cache: String,
    /// Prompt-lookup drafts in lone generations (`--no-lookup-decoding` turns them off).
    pub lookup_decoding: bool,
    pub limit: Option<usize>,
    pub bootstrap_iters: usize,
    pub fewshot_seed: u64,
    /// Seed of sampled generations (lm-eval's `torch_seed` plays this part).
    pub sampling_seed: u64,
    pub tokenizer: TokenizerTokens,
    pub tokenizer_sha256: String,
    pub harness_version: String,
}

impl RunConfig {
    /// lm-eval's `config` block, moebench's provenance as extra keys.
    fn lm_eval_config(&self) -> Value {
        json!({
            "model": self.model,
            "model_args": self.model_args,
            "model_num_parameters": self.model_num_parameters,
            "model_dtype": self.model_dtype,
            "model_revision": self.model_sha.clone().unwrap_or_else(|| "main".into()),
            "model_sha": self.model_sha.clone().unwrap_or_default(),
            "batch_size": self.batch_size,
            "batch_sizes": [],
            "device": self.device,
            "use_cache": null,
            "limit": self.limit,
            "bootstrap_iters": self.bootstrap_iters,
            "gen_kwargs": null,
            "random_seed": null,
            "numpy_seed": null,
            "torch_seed": self.sampling_seed,
            "fewshot_seed": self.fewshot_seed,
            "model_repo": self.model_repo,
            "token_budget": self.token_budget,
            "token_budget_source": self.token_budget_source,
            "prefix_cache": self.prefix_cache,
            "lookup_decoding": self.lookup_decoding,
            "max_length": self.max_length,
            "tokenizer_sha256": self.tokenizer_sha256,
            "harness_version": self.harness_version,
        })
    }
}

/// `lm_eval.utils.sanitize_model_name`: `"<>:/|\?*[]` runs become `__`.
pub fn sanitize_model_name(name: &str) -> String {
    let mut out = String::new();
    let mut in_run = false;
    for c in name.chars() {
        if "\"<>:/|\\?*[]".contains(c) {
            if !in_run {
                out.push_str("__");
            }
            in_run = true;
        } else {
            out.push(c);
            in_run = false;
        }
    }
    out
}

/// A group of the run.
#[derive(Debug, Clone)]
pub struct RunGroup {
    pub spec: GroupSpec,
    /// Every task below it, which its score aggregates (lm-eval's `Group.aggregate` over
    /// `get_all_tasks()`, so a group of groups gets its own score).
    pub tasks: Vec<String>,
    /// Its members as lm-eval lists them in `group_subtasks`: tasks and groups, with tags
    /// replaced by their tasks.
    pub members: Vec<String>,
}

/// The tasks to evaluate (in order, each once) and the groups to aggregate, from the
/// resolved `--tasks` names. A group aggregates all its leaf tasks (lm-eval's
/// `Group.aggregate` over `get_all_tasks()`, so a group of groups gets its own score).
pub fn plan_tasks(nodes: Vec<TaskNode>) -> (Vec<TaskSpec>, Vec<RunGroup>) {
    fn visit(node: TaskNode, tasks: &mut Vec<TaskSpec>, groups: &mut Vec<RunGroup>) {
        match node {
            TaskNode::Task(spec) => {
                if !tasks.iter().any(|t| t.name == spec.name) {
                    tasks.push(spec);
                }
            }
            TaskNode::Tag { children, .. } => {
                children.into_iter().for_each(|c| visit(c, tasks, groups))
            }
            TaskNode::Group { spec, children } => {
                groups.push(RunGroup {
                    tasks: children
                        .iter()
                        .flat_map(TaskNode::tasks)
                        .map(|t| t.name.clone())
                        .collect(),
                    members: children.iter().flat_map(member_names).collect(),
                    spec,
                });
                children.into_iter().for_each(|c| visit(c, tasks, groups));
            }
        }
    }
    let (mut tasks, mut groups) = (Vec::new(), Vec::new());
    nodes
        .into_iter()
        .for_each(|node| visit(node, &mut tasks, &mut groups));
    (tasks, groups)
}

/// A group's members as lm-eval lists them (`group_subtasks`): tasks and groups, with tags
/// replaced by their tasks.
fn member_names(node: &TaskNode) -> Vec<String> {
    match node {
        TaskNode::Tag { children, .. } => children.iter().flat_map(member_names).collect(),
        other => vec![other.name().to_owned()],
    }
}

/// A group's aggregate of its subtasks' metrics (`lm_eval/api/group.py` `Group.aggregate`):
/// the size-weighted mean with the pooled stderr, or with `weight_by_size: false` the plain
/// mean with the stderr of a mean of independent means.
pub fn group_outcome(group: &GroupSpec, children: &[&TaskOutcome]) -> Map<String, Value> {
    let name = &group.config.group;
    let mut out = Map::new();
    out.insert(
        "alias".into(),
        json!(group.config.group_alias.as_ref().unwrap_or(name)),
    );
    out.insert("name".into(), json!(name));
    out.insert(
        "sample_len".into(),
        json!(children.iter().map(|c| c.n_effective).sum::<usize>()),
    );
    let mut sample_count = Map::new();
    for agg in &group.config.aggregate_metric_list {
        let keys: std::collections::BTreeSet<&String> = children
            .iter()
            .flat_map(|c| c.metrics.keys())
            .filter(|k| k.split(',').next() == Some(agg.metric.as_str()))
            .filter(|k| {
                let filter = k.split(',').nth(1).unwrap_or("none");
                agg.filter_list
                    .as_ref()
                    .is_none_or(|f| f.iter().any(|x| x == filter))
            })
            .collect();
        for key in keys {
            let parts: Vec<(&TaskOutcome, f64, Option<f64>)> = children
                .iter()
                .filter_map(|c| c.metrics.get(key).map(|m| (*c, m.value, m.stderr)))
                .collect();
            let sizes: Vec<usize> = parts.iter().map(|p| p.0.n_effective).collect();
            let values: Vec<f64> = parts.iter().map(|p| p.1).collect();
            out.insert(
                key.clone(),
                json!(group_mean(&values, &sizes, agg.weight_by_size)),
            );
            let stderrs: Option<Vec<f64>> = parts.iter().map(|p| p.2).collect();
            let stderr = stderrs.map(|s| {
                if agg.weight_by_size {
                    pooled_sample_stderr(&s, &sizes)
                } else {
                    unweighted_mean_stderr(&s)
                }
            });
            let (metric, filter) = key.split_once(',').unwrap_or((key, "none"));
            out.insert(
                format!("{metric}_stderr,{filter}"),
                stderr.map_or(json!("N/A"), |s| json!(s)),
            );
            sample_count.insert(key.clone(), json!(sizes.iter().sum::<usize>()));
        }
    }
    out.insert("sample_count".into(), Value::Object(sample_count));
    out
}

fn task_entry(t: &TaskOutcome) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("name".into(), json!(t.name));
    let alias = t.config.get("task_alias").filter(|a| !a.is_null());
    m.insert(
        "alias".into(),
        alias.cloned().unwrap_or_else(|| json!(t.name)),
    );
    m.insert("sample_len".into(), json!(t.n_effective));
    for (key, v) in &t.metrics {
        let (metric, filter) = key.split_once(',').unwrap_or((key, "none"));
        m.insert(key.clone(), json!(v.value));
        m.insert(
            format!("{metric}_stderr,{filter}"),
            v.stderr.map_or(json!("N/A"), |s| json!(s)),
        );
    }
    m
}

/// The whole aggregated results document (lm-eval's `results_<date>.json`). `timing` is
/// (start, end) in seconds since the Unix epoch; the start is lm-eval's `date`.
pub fn results_json(
    outcomes: &[TaskOutcome],
    groups: &[RunGroup],
    run: &RunConfig,
    timing: (f64, f64),
) -> Value {
    let by_name: BTreeMap<&str, &TaskOutcome> =
        outcomes.iter().map(|t| (t.name.as_str(), t)).collect();
    let mut results = Map::new();
    let mut group_results = Map::new();
    let mut group_subtasks = Map::new();
    let mut versions = Map::new();
    let mut n_shot = Map::new();
    let mut higher_is_better = Map::new();
    for RunGroup {
        spec: group,
        tasks,
        members,
    } in groups
    {
        let children: Vec<&TaskOutcome> = tasks
            .iter()
            .filter_map(|n| by_name.get(n.as_str()).copied())
            .collect();
        let entry = Value::Object(group_outcome(group, &children));
        let name = group.config.group.clone();
        results.insert(name.clone(), entry.clone());
        group_results.insert(name.clone(), entry);
        group_subtasks.insert(name.clone(), json!(members));
        let version = group
            .config
            .metadata
            .as_ref()
            .and_then(|m| m.get("version"));
        versions.insert(name.clone(), version.cloned().unwrap_or(Value::Null));
        n_shot.insert(
            name.clone(),
            json!(children.first().map_or(0, |c| c.num_fewshot)),
        );
        let better: Map<String, Value> = group
            .config
            .aggregate_metric_list
            .iter()
            .map(|agg| (agg.metric.clone(), json!(true)))
            .collect();
        higher_is_better.insert(name, Value::Object(better));
    }
    for t in outcomes {
        results.insert(t.name.clone(), Value::Object(task_entry(t)));
        group_subtasks.entry(t.name.clone()).or_insert(json!([]));
        versions.insert(t.name.clone(), t.version.clone());
        n_shot.insert(t.name.clone(), json!(t.num_fewshot));
        let better: BTreeMap<String, bool> = t
            .metrics
            .iter()
            .map(|(k, v)| {
                (
                    k.split(',').next().unwrap_or(k).to_string(),
                    v.higher_is_better,
                )
            })
            .collect();
        higher_is_better.insert(t.name.clone(), json!(better));
    }
    let per_task = |f: &dyn Fn(&TaskOutcome) -> Value| -> Map<String, Value> {
        outcomes.iter().map(|t| (t.name.clone(), f(t))).collect()
    };
    let token = |t: &TokenRecord| t.as_ref().map_or(Value::Null, |(s, id)| json!([s, id]));
    let mut doc = Map::new();
    doc.insert("results".into(), Value::Object(results));
    if !group_results.is_empty() {
        doc.insert("groups".into(), Value::Object(group_results));
    }
    for (key, value) in [
        ("group_subtasks", Value::Object(group_subtasks)),
        ("configs", Value::Object(per_task(&|t| t.config.clone()))),
        ("versions", Value::Object(versions)),
        ("n-shot", Value::Object(n_shot)),
        ("higher_is_better", Value::Object(higher_is_better)),
        (
            "n-samples",
            Value::Object(per_task(
                &|t| json!({"original": t.n_original, "effective": t.n_effective}),
            )),
        ),
        ("config", run.lm_eval_config()),
        ("git_hash", Value::Null),
        ("date", json!(timing.0)),
        ("pretty_env_info", json!("N/A")),
        ("transformers_version", json!("N/A")),
        ("lm_eval_version", json!("N/A")),
        ("upper_git_hash", Value::Null),
        ("tokenizer_pad_token", token(&run.tokenizer.pad)),
        ("tokenizer_eos_token", token(&run.tokenizer.eos)),
        ("tokenizer_bos_token", token(&run.tokenizer.bos)),
        ("eot_token_id", json!(run.tokenizer.eot_id)),
        ("max_length", json!(run.max_length)),
        (
            "task_hashes",
            Value::Object(per_task(&|t| json!(t.task_hash))),
        ),
        ("model_source", json!(run.model)),
        ("model_name", json!(run.model_name)),
        (
            "model_name_sanitized",
            json!(sanitize_model_name(&run.model_name)),
        ),
        ("system_instruction", Value::Null),
        ("system_instruction_sha", Value::Null),
        ("fewshot_as_multiturn", json!(false)),
        ("chat_template", Value::Null),
        ("chat_template_sha", Value::Null),
        ("start_time", json!(timing.0)),
        ("end_time", json!(timing.1)),
        (
            "total_evaluation_time_seconds",
            json!(format!("{}", timing.1 - timing.0)),
        ),
        ("moebench_version", json!(run.harness_version)),
        (
            "moebench_task_content_hashes",
            Value::Object(per_task(&|t| json!(t.content_hash))),
        ),
        (
            // Outside `results`, where lm-eval's table would print it as a metric.
            "moebench_ppl_protocols",
            outcomes
                .iter()
                .filter_map(|t| Some((t.name.clone(), json!(t.ppl_protocol.as_ref()?))))
                .collect::<Map<String, Value>>()
                .into(),
        ),
    ] {
        doc.insert(key.into(), value);
    }
    Value::Object(doc)
}

/// lm-eval's `sanitize_list`: every leaf as Python's `str`, lists kept.
fn sanitize(value: &Value) -> Value {
    match value {
        Value::Array(items) => Value::Array(items.iter().map(sanitize).collect()),
        other => Value::String(python_str(other)),
    }
}

/// lm-eval's `arguments` of one request (`Instance.args`), as `gen_args_<i>` saves them.
fn lm_eval_arguments(record: &SampleRecord, generation_kwargs: &Value) -> Value {
    let mut arguments = Map::new();
    let requests: &[Value] = if generation_kwargs.is_null() {
        &record.arguments
    } else {
        // Generation: one request per document, answered `repeats` times.
        &record.arguments[..record.arguments.len().min(1)]
    };
    for (i, request) in requests.iter().enumerate() {
        let mut args = request.as_object().cloned().unwrap_or_default();
        if !generation_kwargs.is_null() {
            args.insert("arg_1".into(), generation_kwargs.clone());
        }
        arguments.insert(format!("gen_args_{i}"), Value::Object(args));
    }
    Value::Object(arguments)
}

/// The `generation_kwargs` lm-eval passes with each request (`TaskConfig.__post_init__`: the
/// YAML's, `until` defaulting to the few-shot delimiter; without any, `default_gen_kwargs`).
fn lm_eval_generation_kwargs(config: &Value) -> Value {
    let delimiter = config
        .get("fewshot_delimiter")
        .cloned()
        .unwrap_or(json!("\n\n"));
    match config.get("generation_kwargs") {
        Some(Value::Object(kwargs)) => {
            let mut kwargs: Map<String, Value> = kwargs
                .iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            kwargs.entry("until").or_insert(json!([delimiter]));
            Value::Object(kwargs)
        }
        _ => json!({
            "temperature": 0.0,
            "do_sample": false,
            "max_gen_toks": moebench_tasks::config::DEFAULT_MAX_GEN_TOKS,
            "until": [delimiter],
        }),
    }
}

/// The sample lines of one task: one per document per filter, filters in `filter_list`
/// order (`evaluator.py`'s `logged_samples`, as `save_results_samples` writes them).
pub fn samples_jsonl(outcome: &TaskOutcome) -> Vec<Value> {
    let generation = outcome.config.get("output_type") == Some(&json!("generate_until"));
    let kwargs = match generation {
        true => lm_eval_generation_kwargs(&outcome.config),
        false => Value::Null,
    };
    let filters: Vec<String> = match outcome.samples.first() {
        Some(first) if generation => first.filtered.iter().map(|(f, _)| f.clone()).collect(),
        _ => vec!["none".into()],
    };
    let mut lines = Vec::new();
    for (i, filter) in filters.iter().enumerate() {
        for record in &outcome.samples {
            let (resps, filtered_resps) = if generation {
                let filtered = record.filtered.get(i).map(|(_, f)| f.clone());
                (json!([record.responses]), json!([filtered]))
            } else {
                let resps: Vec<Value> = record.responses.iter().map(lm_eval_response).collect();
                let wrapped: Vec<Value> = resps.iter().map(|r| json!([r])).collect();
                (json!(wrapped), json!(resps))
            };
            let mut line = Map::new();
            line.insert("doc_id".into(), json!(record.doc_id));
            line.insert("doc".into(), record.doc.clone());
            line.insert("target".into(), json!(python_str(&record.target)));
            line.insert("arguments".into(), lm_eval_arguments(record, &kwargs));
            line.insert("resps".into(), sanitize(&resps));
            line.insert("filtered_resps".into(), sanitize(&filtered_resps));
            line.insert("filter".into(), json!(filter));
            let metrics: Vec<(&str, &Value)> = record
                .metrics
                .iter()
                .filter_map(|(key, value)| {
                    let (metric, f) = key.split_once(',')?;
                    (f == filter).then_some((metric, value))
                })
                .collect();
            line.insert(
                "metrics".into(),
                json!(metrics.iter().map(|(m, _)| *m).collect::<Vec<_>>()),
            );
            line.insert("doc_hash".into(), json!(record.doc_hash));
            line.insert("prompt_hash".into(), json!(record.prompt_hash));
            line.insert("target_hash".into(), json!(record.target_hash));
            for (metric, value) in metrics {
                line.insert(metric.into(), value.clone());
            }
            lines.push(Value::Object(line));
        }
    }
    lines
}

/// A log-likelihood response as lm-eval's `resps` entry: `(loglikelihood, is_greedy)`, or
/// the rolling log-likelihood alone (moebench's token counts are not part of it).
fn lm_eval_response(response: &Value) -> Value {
    match response.as_array().map(Vec::as_slice) {
        Some([ll, greedy, _tokens]) => json!([ll, greedy]),
        Some([ll, _tokens]) => ll.clone(),
        _ => response.clone(),
    }
}

/// The files one evaluation wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LmEvalFiles {
    pub results: PathBuf,
    pub samples: Vec<PathBuf>,
}

/// lm-eval's date id of output file names: ISO-8601 local-free UTC time with `:` → `-`
/// (`datetime.now().isoformat().replace(":", "-")`), from seconds since the Unix epoch.
pub fn date_id(seconds: f64) -> String {
    let micros = (seconds * 1e6).round() as i64;
    let (secs, micro) = (micros.div_euclid(1_000_000), micros.rem_euclid(1_000_000));
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's `civil_from_days`).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}-{:02}-{:02}.{micro:06}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Writes one evaluation (one model, or one model under one method) in lm-eval's layout:
/// `output/<model_name_sanitized>/results_<date>.json` and, with `log_samples`,
/// `samples_<task>_<date>.jsonl` beside it; an `output` ending in `.json` writes
/// `<stem>_<date>.json` and the samples next to it, as lm-eval's `--output_path` does.
/// `timing` is (start, end) in seconds since the Unix epoch; the date id is the end's.
/// Files are written atomically (temporary name, then rename).
pub fn write_lm_eval_outputs(
    output: &Path,
    outcomes: &[TaskOutcome],
    groups: &[RunGroup],
    run: &RunConfig,
    timing: (f64, f64),
    log_samples: bool,
) -> Result<LmEvalFiles, EvalError> {
    let date = date_id(timing.1);
    let (dir, results_path) = if output.extension().is_some_and(|e| e == "json") {
        let stem = output.file_stem().unwrap_or_default().to_string_lossy();
        let dir = output.parent().unwrap_or(Path::new(".")).to_owned();
        let path = dir.join(format!("{stem}_{date}.json"));
        (dir, path)
    } else {
        let dir = output.join(sanitize_model_name(&run.model_name));
        let path = dir.join(format!("results_{date}.json"));
        (dir, path)
    };
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| EvalError::Io { path, source }
    };
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let doc = results_json(outcomes, groups, run, timing);
    let text = serde_json::to_string_pretty(&doc).expect("JSON values serialize");
    write_atomic(&results_path, text.as_bytes()).map_err(io(&results_path))?;
    let mut samples = Vec::new();
    if log_samples {
        for outcome in outcomes.iter().filter(|t| !t.samples.is_empty()) {
            let path = dir.join(format!("samples_{}_{date}.jsonl", outcome.name));
            let mut text = String::new();
            for line in samples_jsonl(outcome) {
                text.push_str(&serde_json::to_string(&line).expect("JSON values serialize"));
                text.push('\n');
            }
            write_atomic(&path, text.as_bytes()).map_err(io(&path))?;
            samples.push(path);
        }
    }
    Ok(LmEvalFiles {
        results: results_path,
        samples,
    })
}

fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let partial = path.with_extension("part");
    std::fs::write(&partial, bytes)?;
    std::fs::rename(&partial, path)
}

/// lm-eval's console table: `|Tasks|Version|Filter|n-shot|Metric| |Value| |Stderr|`.
pub fn markdown_table(outcomes: &[TaskOutcome]) -> String {
    let mut s = String::from("|Tasks|Version|Filter|n-shot|Metric| |Value| |Stderr|\n|---|---|---|---:|---|---|---:|---|---:|\n");
    for t in outcomes {
        for (key, v) in &t.metrics {
            let (metric, filter) = key.split_once(',').unwrap_or((key, "none"));
            let arrow = if v.higher_is_better { "↑" } else { "↓" };
            let stderr = v.stderr.map_or("N/A".to_string(), |e| format!("{e:.4}"));
            let version = match &t.version {
                Value::Null => "-".to_string(),
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            s.push_str(&format!(
                "|{}|{}|{}|{}|{}|{}|{:.4}|±|{}|\n",
                t.name, version, filter, t.num_fewshot, metric, arrow, v.value, stderr
            ));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evaluate::MetricValue;

    fn outcome(name: &str, acc: f64, stderr: f64, n: usize) -> TaskOutcome {
        let metric = MetricValue {
            value: acc,
            stderr: Some(stderr),
            higher_is_better: true,
            stderr_is_moebench_extension: false,
        };
        TaskOutcome {
            name: name.to_owned(),
            metrics: BTreeMap::from([("acc,none".to_owned(), metric)]),
            n_original: n,
            n_effective: n,
            samples: Vec::new(),
            task_hash: String::new(),
            content_hash: String::new(),
            version: json!(1),
            num_fewshot: 0,
            config: json!({}),
            ppl_protocol: None,
        }
    }

    fn group(weight_by_size: bool) -> GroupSpec {
        GroupSpec {
            path: "g.yaml".into(),
            config: serde_json::from_value(json!({
                "group": "g",
                "task": ["a", "b"],
                "aggregate_metric_list": [{"metric": "acc", "weight_by_size": weight_by_size}],
            }))
            .unwrap(),
        }
    }

    /// Values from lm-eval 0.4.13 (`aggregate_subtask_metrics`, `pooled_sample_stderr`,
    /// `unweighted_mean_stderr` of `lm_eval/api/metrics.py`) for these two subtasks: the
    /// unweighted group must not take the pooled stderr (regression: it did).
    #[test]
    fn group_stderr_follows_weight_by_size() {
        let (a, b) = (outcome("a", 0.5, 0.1, 10), outcome("b", 0.8, 0.05, 30));
        let weighted = group_outcome(&group(true), &[&a, &b]);
        assert_eq!(weighted["acc,none"], json!(0.725));
        assert_eq!(weighted["acc_stderr,none"], json!(0.04497806482930845));
        let unweighted = group_outcome(&group(false), &[&a, &b]);
        assert_eq!(unweighted["acc,none"], json!(0.65));
        assert_eq!(unweighted["acc_stderr,none"], json!(0.05590169943749475));
    }

    #[test]
    fn date_ids_are_iso_with_dashes() {
        assert_eq!(date_id(0.0), "1970-01-01T00-00-00.000000");
        // 2024-02-29T13:45:07.25 UTC
        assert_eq!(date_id(1_709_214_307.25), "2024-02-29T13-45-07.250000");
        assert_eq!(date_id(1_735_689_599.999_999), "2024-12-31T23-59-59.999999");
    }

    #[test]
    fn model_names_are_sanitized_as_lm_eval_does() {
        // re.sub(r"[\"<>:/|\\?*\[\]]+", "__", name)
        assert_eq!(
            sanitize_model_name("HuggingFaceTB/SmolLM2-135M-Instruct"),
            "HuggingFaceTB__SmolLM2-135M-Instruct"
        );
        assert_eq!(sanitize_model_name("a//b:[c]"), "a__b__c__");
        assert_eq!(sanitize_model_name("/abs/path"), "__abs__path");
    }

    #[test]
    fn leaves_are_python_strings() {
        assert_eq!(
            sanitize(&json!([[-1.5, false], [1e-5, true]])),
            json!([["-1.5", "False"], ["1e-05", "True"]])
        );
    }
}
