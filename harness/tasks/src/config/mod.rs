//! Task and group configuration: lm-eval 0.4.13's YAML schema (`lm_eval/config/task.py`
//! `TaskConfig` and `FewshotConfig`, `lm_eval/config/group.py` `GroupConfig`), the subset that
//! moebench can run without Python, plus two `moebench_`-prefixed extensions:
//!
//! - `moebench_loader`: a built-in reader that turns an original benchmark file format into the
//!   Hugging Face schema lm-eval's task YAMLs expect ([`crate::data::Loader`]);
//! - `moebench_processor`: a built-in port of an lm-eval `utils.py` hook
//!   ([`crate::processors::Processor`]), standing in for `process_docs`, `!function` fields and
//!   `process_results`.
//!
//! Files are read by [`yaml`]; this module holds the types and their semantic checks.
//! YAML is parsed as YAML 1.2 (serde_yaml), while lm-eval uses PyYAML (YAML 1.1): unquoted
//! `yes`/`no`/`on`/`off` are strings here and booleans there. lm-eval's own YAMLs quote them.
pub(crate) mod yaml;

use crate::data::Loader;
use crate::processors::Processor;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;

pub(crate) use moebench_core::suggest::closest as closest_name;
pub use yaml::{load_yaml, LoadedYaml};

/// A parsed task YAML (includes resolved), ready to load data for.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskSpec {
    /// `task:` of the YAML.
    pub name: String,
    /// The YAML file the task was read from.
    pub path: PathBuf,
    pub config: TaskConfig,
    /// Directory that relative `dataset_kwargs.data_files` paths resolve against: the directory
    /// of the file (in the include chain) that set `dataset_kwargs`.
    pub data_dir: PathBuf,
}

/// A parsed group YAML (`group:` + `task: [..]` + `aggregate_metric_list`).
#[derive(Debug, Clone, PartialEq)]
pub struct GroupSpec {
    pub path: PathBuf,
    pub config: GroupConfig,
}

/// `lm_eval/api/task.py` `ALL_OUTPUT_TYPES`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputType {
    Loglikelihood,
    LoglikelihoodRolling,
    MultipleChoice,
    #[default]
    GenerateUntil,
}

impl OutputType {
    /// The name as written in YAML.
    pub fn name(self) -> &'static str {
        match self {
            Self::Loglikelihood => "loglikelihood",
            Self::LoglikelihoodRolling => "loglikelihood_rolling",
            Self::MultipleChoice => "multiple_choice",
            Self::GenerateUntil => "generate_until",
        }
    }
}

/// A `doc_to_text` / `doc_to_target` / `doc_to_choice` value as written in YAML: a column name
/// or Jinja2 template (`Text`), a constant index, a list literal, or (for `doc_to_choice`) a
/// dict whose values are the choices (`lm_eval/api/task.py` `doc_to_choice`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "Value", into = "Value")]
pub enum FieldSpec {
    Text(String),
    Int(i64),
    List(Vec<Value>),
    Map(Map<String, Value>),
}

impl TryFrom<Value> for FieldSpec {
    type Error = String;

    fn try_from(value: Value) -> Result<Self, String> {
        match value {
            Value::String(text) => Ok(Self::Text(text)),
            Value::Number(n) if n.is_i64() => Ok(Self::Int(n.as_i64().unwrap_or_default())),
            Value::Array(items) => Ok(Self::List(items)),
            Value::Object(map) => Ok(Self::Map(map)),
            other => Err(format!(
                "expected a column name, a Jinja2 template, an integer, a list or a map, got `{other}`"
            )),
        }
    }
}

impl From<FieldSpec> for Value {
    fn from(spec: FieldSpec) -> Self {
        match spec {
            FieldSpec::Text(text) => Value::String(text),
            FieldSpec::Int(n) => Value::from(n),
            FieldSpec::List(items) => Value::Array(items),
            FieldSpec::Map(map) => Value::Object(map),
        }
    }
}

/// `dataset_kwargs` (passed to `datasets.load_dataset` by lm-eval).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatasetKwargs {
    pub data_files: Option<DataFiles>,
    /// Hub revision (branch, tag or commit) of a Hub dataset.
    pub revision: Option<String>,
    /// Accepted for compatibility and ignored: nothing here runs dataset scripts (lm-eval drops
    /// it too with `datasets>=4`).
    pub trust_remote_code: Option<bool>,
}

/// `data_files` as `datasets.load_dataset` accepts it: one path or a list (the `train` split),
/// or a map split → path(s).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum DataFiles {
    One(String),
    Many(Vec<String>),
    Splits(BTreeMap<String, OneOrMany>),
}

/// One string or a list of them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            Self::One(one) => vec![one.clone()],
            Self::Many(many) => many.clone(),
        }
    }
}

impl DataFiles {
    /// Split name → paths as written; a bare path or list is the `train` split, as in
    /// `datasets.load_dataset`.
    pub fn by_split(&self) -> BTreeMap<String, Vec<String>> {
        match self {
            Self::One(path) => BTreeMap::from([("train".to_owned(), vec![path.clone()])]),
            Self::Many(paths) => BTreeMap::from([("train".to_owned(), paths.clone())]),
            Self::Splits(splits) => splits
                .iter()
                .map(|(split, paths)| (split.clone(), paths.to_vec()))
                .collect(),
        }
    }
}

/// Few-shot sampler (`lm_eval/api/samplers.py` `SAMPLER_REGISTRY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sampler {
    /// `ContextSampler`: `random.Random(seed).sample`.
    #[default]
    Default,
    /// `FirstNSampler`: the first n documents of the few-shot split, in order.
    FirstN,
}

/// `fewshot_config` (`lm_eval/config/task.py` `FewshotConfig`): unset fields inherit the task's.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FewshotConfig {
    pub sampler: Sampler,
    /// Overrides `fewshot_split`.
    pub split: Option<String>,
    pub doc_to_text: Option<FieldSpec>,
    pub doc_to_target: Option<FieldSpec>,
    pub doc_to_choice: Option<FieldSpec>,
    pub target_delimiter: Option<String>,
    pub fewshot_delimiter: Option<String>,
}

/// `generation_kwargs`: stop strings and token budget, and transformers' sampling settings
/// (`do_sample: true` with `temperature`, `top_p`, `top_k`), which lm-eval's HF backend passes
/// to `generate`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GenerationKwargs {
    #[serde(deserialize_with = "one_or_many_opt")]
    pub until: Option<Vec<String>>,
    pub max_gen_toks: Option<usize>,
    pub do_sample: Option<bool>,
    pub temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_k: Option<usize>,
}

/// transformers' `GenerationConfig.top_k` default, in force when sampling without `top_k`.
pub const DEFAULT_TOP_K: usize = 50;

/// `lm_eval/defaults.py` `DEFAULT_MAX_GEN_TOKS`.
pub const DEFAULT_MAX_GEN_TOKS: usize = 256;

/// One `metric_list` entry. Other keys are the metric's keyword arguments (for
/// `exact_match`: `ignore_case`, `ignore_punctuation`, `ignore_numbers`, `regexes_to_ignore`),
/// checked by moebench-core when the task is loaded.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct MetricConfig {
    pub metric: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregation: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub higher_is_better: Option<bool>,
    #[serde(flatten)]
    pub kwargs: Map<String, Value>,
}

/// One `filter_list` entry: a named pipeline of filter steps (`lm_eval/filters/`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterPipeline {
    pub name: String,
    pub filter: Vec<FilterStep>,
}

/// A filter step: `function` and its keyword arguments, checked by moebench-core
/// (`moebench_core::Filter::from_config`) when the task is loaded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FilterStep {
    pub function: String,
    #[serde(flatten)]
    pub args: Map<String, Value>,
}

/// lm-eval's task fields (`lm_eval/config/task.py` `TaskConfig`, same defaults) plus the
/// `moebench_` extensions. Every field has a default, so an included template file with only
/// some keys deserializes too; [`TaskConfig::check`] validates the merged result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TaskConfig {
    /// Consumed by the loader (`include:` of a file, relative to it); `None` once resolved.
    #[serde(skip_serializing)]
    pub include: Option<OneOrMany>,
    pub task: Option<String>,
    pub task_alias: Option<String>,
    #[serde(deserialize_with = "one_or_many")]
    pub tag: Vec<String>,
    pub dataset_path: Option<String>,
    pub dataset_name: Option<String>,
    pub dataset_kwargs: Option<DatasetKwargs>,
    pub training_split: Option<String>,
    pub validation_split: Option<String>,
    pub test_split: Option<String>,
    pub fewshot_split: Option<String>,
    pub output_type: OutputType,
    pub doc_to_text: Option<FieldSpec>,
    pub doc_to_target: Option<FieldSpec>,
    pub doc_to_choice: Option<FieldSpec>,
    pub target_delimiter: String,
    pub fewshot_delimiter: String,
    pub description: String,
    pub num_fewshot: Option<usize>,
    pub fewshot_config: Option<FewshotConfig>,
    pub generation_kwargs: Option<GenerationKwargs>,
    pub filter_list: Option<Vec<FilterPipeline>>,
    pub metric_list: Option<Vec<MetricConfig>>,
    pub metadata: Option<Map<String, Value>>,
    /// Generations per document (`generate_until`); the filters see them all, e.g. pass@k
    /// over sampled programs.
    pub repeats: usize,
    /// lm-eval's mark of tasks that execute model output (HumanEval, MBPP): they run only when
    /// the user confirms (`--confirm-run-unsafe-code`), and then only in moebench's sandbox.
    pub unsafe_code: bool,
    /// Accepted and ignored (decontamination is not implemented).
    pub should_decontaminate: bool,
    /// Accepted and ignored, as `should_decontaminate`.
    pub doc_to_decontamination_query: Option<String>,
    pub moebench_loader: Option<Loader>,
    pub moebench_processor: Option<Processor>,
}

impl Default for TaskConfig {
    fn default() -> Self {
        Self {
            include: None,
            task: None,
            task_alias: None,
            tag: Vec::new(),
            dataset_path: None,
            dataset_name: None,
            dataset_kwargs: None,
            training_split: None,
            validation_split: None,
            test_split: None,
            fewshot_split: None,
            output_type: OutputType::default(),
            doc_to_text: None,
            doc_to_target: None,
            doc_to_choice: None,
            target_delimiter: " ".to_owned(),
            fewshot_delimiter: "\n\n".to_owned(),
            description: String::new(),
            num_fewshot: None,
            fewshot_config: None,
            generation_kwargs: None,
            filter_list: None,
            metric_list: None,
            metadata: None,
            repeats: 1,
            unsafe_code: false,
            should_decontaminate: false,
            doc_to_decontamination_query: None,
            moebench_loader: None,
            moebench_processor: None,
        }
    }
}

impl TaskConfig {
    /// `metadata.version`, printed in results next to the task.
    pub fn version(&self) -> Option<&Value> {
        self.metadata.as_ref()?.get("version")
    }

    /// Stop sequences and token budget of `generate_until` (`TaskConfig.__post_init__`: with no
    /// `until`, the few-shot delimiter; `lm_eval/defaults.py` `default_gen_kwargs`).
    pub fn generation(&self) -> (Vec<String>, usize) {
        let kwargs = self.generation_kwargs.clone().unwrap_or_default();
        (
            kwargs
                .until
                .unwrap_or_else(|| vec![self.fewshot_delimiter.clone()]),
            kwargs.max_gen_toks.unwrap_or(DEFAULT_MAX_GEN_TOKS),
        )
    }

    /// Sampling settings when `do_sample: true` (else greedy decoding), for the document's
    /// first draw; [`crate::requests`] numbers the `repeats` draws.
    pub fn sampling(&self) -> Option<crate::requests::Sampling> {
        let kwargs = self.generation_kwargs.as_ref()?;
        (kwargs.do_sample == Some(true)).then(|| crate::requests::Sampling {
            temperature: kwargs.temperature.unwrap_or(1.0),
            top_p: kwargs.top_p.unwrap_or(1.0),
            top_k: match kwargs.top_k {
                None => Some(DEFAULT_TOP_K),
                Some(0) => None,
                Some(k) => Some(k),
            },
            draw: 0,
        })
    }

    /// The split documents are evaluated on (`Task.eval_docs`: test, else validation).
    pub fn eval_split(&self) -> Option<&str> {
        self.test_split
            .as_deref()
            .or(self.validation_split.as_deref())
    }

    /// The split few-shot examples come from (`ConfigurableTask.fewshot_docs`: the few-shot
    /// split, else training, else validation, else test).
    pub fn fewshot_source_split(&self) -> Option<&str> {
        self.fewshot_cfg_split()
            .or(self.training_split.as_deref())
            .or(self.validation_split.as_deref())
            .or(self.test_split.as_deref())
    }

    /// `FewshotConfig.split`: `fewshot_config.split`, else `fewshot_split`.
    pub(crate) fn fewshot_cfg_split(&self) -> Option<&str> {
        self.fewshot_config
            .as_ref()
            .and_then(|fewshot| fewshot.split.as_deref())
            .or(self.fewshot_split.as_deref())
    }

    pub(crate) fn sampler(&self) -> Sampler {
        self.fewshot_config
            .as_ref()
            .map(|fewshot| fewshot.sampler)
            .unwrap_or_default()
    }

    /// Checks what serde cannot: required fields, supported values, and fields a processor
    /// already provides. Returns the problem as a message.
    pub(crate) fn check(&self) -> Result<(), String> {
        if self.task.as_deref().unwrap_or_default().is_empty() {
            return Err("`task:` (the task name) is missing".to_owned());
        }
        if self.repeats == 0 {
            return Err("`repeats: 0`: at least one generation per document".to_owned());
        }
        if self.repeats > 1 && self.output_type != OutputType::GenerateUntil {
            return Err(format!(
                "`repeats: {}` only applies to generate_until tasks",
                self.repeats
            ));
        }
        if self.dataset_path.is_none() && self.moebench_loader.is_none() {
            return Err("no data source: set `dataset_path` or `moebench_loader`".to_owned());
        }
        if self.eval_split().is_none() {
            return Err("no evaluation split: set `test_split` or `validation_split`".to_owned());
        }
        self.check_fields()?;
        self.check_generation()?;
        crate::scoring::Scorer::new(self).map(drop)
    }

    fn check_fields(&self) -> Result<(), String> {
        let provided = self
            .moebench_processor
            .map(Processor::provided_fields)
            .unwrap_or_default();
        for (name, spec) in [
            ("doc_to_text", &self.doc_to_text),
            ("doc_to_target", &self.doc_to_target),
            ("doc_to_choice", &self.doc_to_choice),
        ] {
            let by_processor = provided.contains(&name);
            match (spec, by_processor) {
                (Some(_), true) => {
                    return Err(format!(
                        "`{name}` is computed by `moebench_processor: {}`; remove it from the YAML",
                        self.moebench_processor
                            .map(Processor::name)
                            .unwrap_or_default()
                    ))
                }
                (None, false) if name != "doc_to_choice" => {
                    return Err(format!("`{name}` is missing"));
                }
                _ => {}
            }
        }
        let has_choices = self.doc_to_choice.is_some() || provided.contains(&"doc_to_choice");
        if self.output_type == OutputType::MultipleChoice && !has_choices {
            return Err("`output_type: multiple_choice` needs `doc_to_choice`".to_owned());
        }
        Ok(())
    }

    fn check_generation(&self) -> Result<(), String> {
        let Some(kwargs) = &self.generation_kwargs else {
            return Ok(());
        };
        match (kwargs.do_sample, kwargs.temperature) {
            (Some(true), Some(t)) if t > 0.0 => {}
            (Some(true), _) => {
                return Err(
                    "`generation_kwargs.do_sample: true` needs a `temperature` above 0 (transformers rejects 0)"
                        .to_owned(),
                )
            }
            (None, Some(t)) if t != 0.0 => {
                return Err(format!(
                    "`generation_kwargs.temperature: {t}` without `do_sample`: lm-eval's HF backend then decodes as the model's generation_config says; write `do_sample: true` to sample or `do_sample: false` for greedy decoding"
                ))
            }
            _ => {}
        }
        if let Some(p) = kwargs.top_p.filter(|p| !(*p > 0.0 && *p <= 1.0)) {
            return Err(format!("`generation_kwargs.top_p: {p}` must be in (0, 1]"));
        }
        Ok(())
    }
}

/// `aggregate_metric_list` entry (`lm_eval/config/group.py` `AggMetricConfig`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggregateMetric {
    pub metric: String,
    /// Only `mean` exists in lm-eval.
    #[serde(default = "default_aggregation")]
    pub aggregation: String,
    #[serde(default = "default_true")]
    pub weight_by_size: bool,
    /// Filters to aggregate; `None` means every filter the subtasks report.
    #[serde(default, deserialize_with = "one_or_many_opt")]
    pub filter_list: Option<Vec<String>>,
}

fn default_aggregation() -> String {
    "mean".to_owned()
}

fn default_true() -> bool {
    true
}

/// A group YAML (`lm_eval/config/group.py` `GroupConfig`). Children are task, group or tag
/// names; inline task dicts are not supported.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GroupConfig {
    /// Consumed by the loader, as [`TaskConfig::include`].
    #[serde(skip_serializing)]
    pub include: Option<OneOrMany>,
    pub group: String,
    pub group_alias: Option<String>,
    #[serde(deserialize_with = "one_or_many")]
    pub task: Vec<String>,
    pub aggregate_metric_list: Vec<AggregateMetric>,
    pub metadata: Option<Map<String, Value>>,
}

impl GroupConfig {
    pub(crate) fn check(&self) -> Result<(), String> {
        if self.task.is_empty() {
            return Err(format!("group `{}` lists no `task`", self.group));
        }
        match self
            .aggregate_metric_list
            .iter()
            .find(|metric| metric.aggregation != "mean")
        {
            Some(metric) => Err(format!(
                "aggregation `{}` of `{}`: only `mean` exists for groups",
                metric.aggregation, metric.metric
            )),
            None => Ok(()),
        }
    }
}

fn one_or_many<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    Ok(one_or_many_opt(deserializer)?.unwrap_or_default())
}

fn one_or_many_opt<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Vec<String>>, D::Error> {
    Ok(Option::<OneOrMany>::deserialize(deserializer)?.map(|value| value.to_vec()))
}
