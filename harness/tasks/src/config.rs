//! Task and group configuration: lm-eval 0.4.13's YAML schema (`lm_eval/config/task.py`
//! `TaskConfig` and `FewshotConfig`, `lm_eval/config/group.py` `GroupConfig`), with Python
//! hooks as [`HookRef`]s, plus two `moebench_`-prefixed extensions:
//!
//! - `moebench_loader`: a built-in reader that turns an original benchmark file format into the
//!   Hugging Face schema lm-eval's task YAMLs expect ([`crate::data::Loader`]);
//! - `moebench_processor`: a built-in port of an lm-eval `utils.py` hook
//!   ([`crate::processors::Processor`]), standing in for `process_docs`, `!function` fields and
//!   `process_results` without Python.
//!
//! This module holds the types and the checks that need nothing but the configuration; files
//! are read by [`crate::yaml`]. YAML is parsed as YAML 1.2 (serde_yaml), while lm-eval uses
//! PyYAML (YAML 1.1): unquoted `yes`/`no`/`on`/`off` are strings here and booleans there.
//! lm-eval's own YAMLs quote them.
use crate::data::{CsvOptions, DataSource, Loader};
use crate::hooks::HookRef;
use crate::processors::Processor;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;

pub(crate) use moebench_core::suggest::closest as closest_name;

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

impl TaskSpec {
    /// Where the task's documents come from.
    pub fn data_source(&self) -> DataSource<'_> {
        let config = &self.config;
        let kwargs = config.dataset_kwargs.as_ref();
        DataSource {
            yaml: &self.path,
            dataset_path: config.dataset_path.as_deref(),
            dataset_name: config.dataset_name.as_deref(),
            data_files: kwargs
                .and_then(|kwargs| kwargs.data_files.as_ref())
                .map(DataFiles::by_split),
            revision: kwargs.and_then(|kwargs| kwargs.revision.as_deref()),
            csv: kwargs.map(DatasetKwargs::csv_options).unwrap_or_default(),
            data_dir: &self.data_dir,
            loader: config.moebench_loader,
        }
    }
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
/// or Jinja2 template (`Text`), a constant index, a list literal, for `doc_to_choice` a dict
/// whose values are the choices (`lm_eval/api/task.py` `doc_to_choice`), or a Python hook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "Value", into = "Value")]
pub enum FieldSpec {
    Text(String),
    Int(i64),
    List(Vec<Value>),
    Map(Map<String, Value>),
    Hook(HookRef),
}

/// A `doc_to_*` value of a type lm-eval cannot use.
#[derive(Debug, Clone, thiserror::Error)]
#[error("expected a column name, a Jinja2 template, an integer, a list, a map or `!function`, got `{0}`")]
pub struct FieldSpecError(Value);

impl TryFrom<Value> for FieldSpec {
    type Error = FieldSpecError;

    fn try_from(value: Value) -> Result<Self, FieldSpecError> {
        if let Some(hook) = HookRef::from_marker(&value) {
            return Ok(Self::Hook(hook));
        }
        match value {
            Value::String(text) => Ok(Self::Text(text)),
            Value::Number(n) if n.is_i64() => Ok(Self::Int(n.as_i64().unwrap_or_default())),
            Value::Array(items) => Ok(Self::List(items)),
            Value::Object(map) => Ok(Self::Map(map)),
            other => Err(FieldSpecError(other)),
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
            FieldSpec::Hook(hook) => Value::String(hook.to_string()),
        }
    }
}

/// A value that is either written out or computed by a Python hook (`metric: !function …`,
/// `aggregation: !function …`, `function: !function …`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum NameOrHook {
    Hook(HookRef),
    Name(String),
}

impl NameOrHook {
    /// The name, or the hook's function name (lm-eval reports a metric function under its
    /// `__name__`).
    pub fn name(&self) -> &str {
        match self {
            Self::Name(name) => name,
            Self::Hook(hook) => hook.function(),
        }
    }

    pub fn hook(&self) -> Option<&HookRef> {
        match self {
            Self::Hook(hook) => Some(hook),
            Self::Name(_) => None,
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
    /// `datasets`' CSV builder: the column names of header-less files.
    pub column_names: Option<Vec<String>>,
    /// `datasets`' CSV builder: the header row (`null` for none, as `pandas.read_csv`).
    #[serde(default = "default_header", deserialize_with = "nullable")]
    pub header: Option<i64>,
    /// Accepted and ignored: how `datasets` reads, not what (the documents are the same).
    pub streaming: Option<bool>,
    /// Accepted and ignored, as `streaming`.
    pub verification_mode: Option<String>,
}

fn default_header() -> Option<i64> {
    Some(0)
}

fn nullable<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
) -> Result<Option<T>, D::Error> {
    Option::<T>::deserialize(deserializer)
}

impl DatasetKwargs {
    fn csv_options(&self) -> CsvOptions {
        CsvOptions {
            header_row: self.header.is_some(),
            column_names: self.column_names.clone(),
        }
    }
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

/// `fewshot_config.samples`: the few-shot documents themselves, or a function returning them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum FewshotSamples {
    Hook(HookRef),
    List(Vec<Map<String, Value>>),
}

/// `fewshot_config` (`lm_eval/config/task.py` `FewshotConfig`): unset fields inherit the task's.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FewshotConfig {
    pub sampler: Sampler,
    /// Overrides `fewshot_split`.
    pub split: Option<String>,
    /// Overrides `process_docs` for the few-shot split.
    pub process_docs: Option<HookRef>,
    /// Indices into the few-shot split; the pool is those documents, in that order.
    pub fewshot_indices: Option<Vec<usize>>,
    /// Used when no few-shot split is set (`ConfigurableTask.fewshot_docs`).
    pub samples: Option<FewshotSamples>,
    pub doc_to_text: Option<FieldSpec>,
    pub doc_to_target: Option<FieldSpec>,
    pub doc_to_choice: Option<FieldSpec>,
    pub gen_prefix: Option<String>,
    pub target_delimiter: Option<String>,
    pub fewshot_delimiter: Option<String>,
}

/// `generation_kwargs`: stop strings and token budget, and transformers' sampling settings
/// (`do_sample: true` with `temperature`, `top_p`, `top_k`), which lm-eval's HF backend passes
/// to `generate`. Other keys are kept in `other`; those that change decoding are rejected.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
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
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// `do_sample: true` settings of a generation request (transformers' warpers, see
/// [`GenerationKwargs`]), and which of its document's `repeats` draws it is: the model side
/// seeds each draw differently and reproducibly.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampling {
    pub temperature: f64,
    pub top_p: f64,
    /// `None`: no top-k filtering.
    pub top_k: Option<usize>,
    pub draw: usize,
}

/// transformers' `GenerationConfig.top_k` default, in force when sampling without `top_k`.
pub const DEFAULT_TOP_K: usize = 50;

/// `generation_kwargs` keys that change decoding in ways not implemented (beam search,
/// penalties, other length controls).
const DECODING_KEYS: &[&str] = &[
    "num_beams",
    "repetition_penalty",
    "no_repeat_ngram_size",
    "length_penalty",
    "max_new_tokens",
    "min_new_tokens",
];

/// `lm_eval/defaults.py` `DEFAULT_MAX_GEN_TOKS`.
pub const DEFAULT_MAX_GEN_TOKS: usize = 256;

/// One `metric_list` entry. Other keys are the metric's keyword arguments (for
/// `exact_match`: `ignore_case`, `ignore_punctuation`, `ignore_numbers`, `regexes_to_ignore`),
/// checked by the scorer when the task is loaded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricConfig {
    pub metric: NameOrHook,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregation: Option<NameOrHook>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub higher_is_better: Option<bool>,
    /// Load the metric from Hugging Face `evaluate` instead of lm-eval's registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hf_evaluate: Option<bool>,
    #[serde(flatten)]
    pub kwargs: Map<String, Value>,
}

impl MetricConfig {
    /// A registry metric with lm-eval's defaults.
    pub fn named(name: &str) -> Self {
        Self {
            metric: NameOrHook::Name(name.to_owned()),
            aggregation: None,
            higher_is_better: None,
            hf_evaluate: None,
            kwargs: Map::new(),
        }
    }
}

/// One `filter_list` entry: a named pipeline of filter steps (`lm_eval/filters/`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterPipeline {
    pub name: String,
    pub filter: Vec<FilterStep>,
}

/// A filter step: `function` (a registered name or a `!function` class) and its keyword
/// arguments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FilterStep {
    pub function: NameOrHook,
    /// The function of `function: custom` (`lm_eval/filters/custom.py` `CustomFilter`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter_fn: Option<HookRef>,
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
    pub custom_dataset: Option<HookRef>,
    pub dataset_path: Option<String>,
    pub dataset_name: Option<String>,
    pub dataset_kwargs: Option<DatasetKwargs>,
    pub training_split: Option<String>,
    pub validation_split: Option<String>,
    pub test_split: Option<String>,
    pub fewshot_split: Option<String>,
    pub process_docs: Option<HookRef>,
    pub output_type: OutputType,
    pub doc_to_text: Option<FieldSpec>,
    pub doc_to_target: Option<FieldSpec>,
    pub doc_to_choice: Option<FieldSpec>,
    /// Rejected by [`TaskConfig::check`]: multimodal tasks are not supported.
    pub doc_to_image: Option<Value>,
    /// Rejected by [`TaskConfig::check`], as `doc_to_image`.
    pub doc_to_audio: Option<Value>,
    /// lm-eval's mark of tasks that execute model output (HumanEval, MBPP): they run only when
    /// the user confirms (`--confirm-run-unsafe-code`), and then only in moebench's sandbox.
    pub unsafe_code: bool,
    pub process_results: Option<HookRef>,
    /// promptsource prompts; rejected by [`TaskConfig::check`].
    pub use_prompt: Option<String>,
    pub description: String,
    pub target_delimiter: String,
    pub fewshot_delimiter: String,
    pub num_fewshot: Option<usize>,
    pub fewshot_config: Option<FewshotConfig>,
    pub generation_kwargs: Option<GenerationKwargs>,
    pub filter_list: Option<Vec<FilterPipeline>>,
    pub metric_list: Option<Vec<MetricConfig>>,
    pub metadata: Option<Map<String, Value>>,
    /// Generations per document (`generate_until`); the filters see them all, e.g. pass@k
    /// over sampled programs.
    pub repeats: usize,
    /// Accepted and ignored (decontamination is not implemented).
    pub should_decontaminate: bool,
    /// Accepted and ignored, as `should_decontaminate`.
    pub doc_to_decontamination_query: Option<Value>,
    /// Text the model's answer starts with (`ConfigurableTask.doc_to_prefix`): a column or a
    /// template.
    pub gen_prefix: Option<String>,
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
            custom_dataset: None,
            dataset_path: None,
            dataset_name: None,
            dataset_kwargs: None,
            training_split: None,
            validation_split: None,
            test_split: None,
            fewshot_split: None,
            process_docs: None,
            output_type: OutputType::default(),
            doc_to_text: None,
            doc_to_target: None,
            doc_to_choice: None,
            doc_to_image: None,
            doc_to_audio: None,
            unsafe_code: false,
            process_results: None,
            use_prompt: None,
            description: String::new(),
            target_delimiter: " ".to_owned(),
            fewshot_delimiter: "\n\n".to_owned(),
            num_fewshot: None,
            fewshot_config: None,
            generation_kwargs: None,
            filter_list: None,
            metric_list: None,
            metadata: None,
            repeats: 1,
            should_decontaminate: false,
            doc_to_decontamination_query: None,
            gen_prefix: None,
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
    pub fn sampling(&self) -> Option<Sampling> {
        let kwargs = self.generation_kwargs.as_ref()?;
        (kwargs.do_sample == Some(true)).then(|| Sampling {
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

    /// `fewshot_config.samples`, used only when there is no few-shot split.
    pub(crate) fn fewshot_samples(&self) -> Option<&FewshotSamples> {
        if self.fewshot_cfg_split().is_some() {
            return None;
        }
        self.fewshot_config.as_ref()?.samples.as_ref()
    }

    pub(crate) fn sampler(&self) -> Sampler {
        self.fewshot_config
            .as_ref()
            .map(|fewshot| fewshot.sampler)
            .unwrap_or_default()
    }

    /// `FewshotConfig.gen_prefix`, inherited from the task's.
    pub(crate) fn fewshot_gen_prefix(&self) -> Option<&str> {
        self.fewshot_config
            .as_ref()
            .and_then(|fewshot| fewshot.gen_prefix.as_deref())
            .or(self.gen_prefix.as_deref())
    }

    /// Every Python hook the configuration names, with the key that names it.
    pub fn hooks(&self) -> Vec<(String, &HookRef)> {
        fn field(spec: &Option<FieldSpec>) -> Option<&HookRef> {
            match spec {
                Some(FieldSpec::Hook(hook)) => Some(hook),
                _ => None,
            }
        }
        let mut found: Vec<(String, Option<&HookRef>)> = vec![
            ("custom_dataset".into(), self.custom_dataset.as_ref()),
            ("process_docs".into(), self.process_docs.as_ref()),
            ("process_results".into(), self.process_results.as_ref()),
            ("doc_to_text".into(), field(&self.doc_to_text)),
            ("doc_to_target".into(), field(&self.doc_to_target)),
            ("doc_to_choice".into(), field(&self.doc_to_choice)),
        ];
        if let Some(fewshot) = &self.fewshot_config {
            let samples = match &fewshot.samples {
                Some(FewshotSamples::Hook(hook)) => Some(hook),
                _ => None,
            };
            found.extend([
                (
                    "fewshot_config.process_docs".into(),
                    fewshot.process_docs.as_ref(),
                ),
                ("fewshot_config.samples".into(), samples),
                (
                    "fewshot_config.doc_to_text".into(),
                    field(&fewshot.doc_to_text),
                ),
                (
                    "fewshot_config.doc_to_target".into(),
                    field(&fewshot.doc_to_target),
                ),
                (
                    "fewshot_config.doc_to_choice".into(),
                    field(&fewshot.doc_to_choice),
                ),
            ]);
        }
        for (i, metric) in self.metric_list.iter().flatten().enumerate() {
            found.push((format!("metric_list[{i}].metric"), metric.metric.hook()));
            found.push((
                format!("metric_list[{i}].aggregation"),
                metric.aggregation.as_ref().and_then(NameOrHook::hook),
            ));
        }
        for (i, pipeline) in self.filter_list.iter().flatten().enumerate() {
            for (j, step) in pipeline.filter.iter().enumerate() {
                found.push((
                    format!("filter_list[{i}].filter[{j}].function"),
                    step.function.hook(),
                ));
                found.push((
                    format!("filter_list[{i}].filter[{j}].filter_fn"),
                    step.filter_fn.as_ref(),
                ));
            }
        }
        found
            .into_iter()
            .filter_map(|(key, hook)| Some((key, hook?)))
            .collect()
    }

    /// Checks what serde cannot and what needs only the configuration: required fields,
    /// supported values, and fields a processor already provides.
    pub(crate) fn check(&self) -> Result<(), ConfigError> {
        let fail = |message: String| Err(ConfigError(message));
        if self.task.as_deref().unwrap_or_default().is_empty() {
            return fail("`task:` (the task name) is missing".to_owned());
        }
        for (key, present, why) in [
            (
                "doc_to_image",
                self.doc_to_image.is_some(),
                "multimodal tasks are not supported",
            ),
            (
                "doc_to_audio",
                self.doc_to_audio.is_some(),
                "multimodal tasks are not supported",
            ),
            (
                "use_prompt",
                self.use_prompt.is_some(),
                "promptsource prompts are not supported",
            ),
        ] {
            if present {
                return fail(format!("`{key}`: {why}"));
            }
        }
        if self.repeats == 0 {
            return fail("`repeats: 0`: at least one generation per document".to_owned());
        }
        if self.repeats > 1 && self.output_type != OutputType::GenerateUntil {
            return fail(format!(
                "`repeats: {}` only applies to generate_until tasks",
                self.repeats
            ));
        }
        if self.dataset_path.is_none()
            && self.moebench_loader.is_none()
            && self.custom_dataset.is_none()
        {
            return fail(
                "no data source: set `dataset_path`, `custom_dataset` or `moebench_loader`"
                    .to_owned(),
            );
        }
        if self.eval_split().is_none() {
            return fail("no evaluation split: set `test_split` or `validation_split`".to_owned());
        }
        self.check_fields()?;
        self.check_generation()
    }

    fn check_fields(&self) -> Result<(), ConfigError> {
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
                    return Err(ConfigError(format!(
                        "`{name}` is computed by `moebench_processor: {}`; remove it from the YAML",
                        self.moebench_processor
                            .map(Processor::name)
                            .unwrap_or_default()
                    )))
                }
                (None, false) if name != "doc_to_choice" => {
                    return Err(ConfigError(format!("`{name}` is missing")));
                }
                _ => {}
            }
        }
        let has_choices = self.doc_to_choice.is_some() || provided.contains(&"doc_to_choice");
        if self.output_type == OutputType::MultipleChoice && !has_choices {
            return Err(ConfigError(
                "`output_type: multiple_choice` needs `doc_to_choice`".to_owned(),
            ));
        }
        Ok(())
    }

    fn check_generation(&self) -> Result<(), ConfigError> {
        let Some(kwargs) = &self.generation_kwargs else {
            return Ok(());
        };
        match (kwargs.do_sample, kwargs.temperature) {
            (Some(true), Some(t)) if t > 0.0 => {}
            (Some(true), _) => {
                return Err(ConfigError(
                    "`generation_kwargs.do_sample: true` needs a `temperature` above 0 (transformers rejects 0)"
                        .to_owned(),
                ))
            }
            (None, Some(t)) if t != 0.0 => {
                return Err(ConfigError(format!(
                    "`generation_kwargs.temperature: {t}` without `do_sample`: lm-eval's HF backend then decodes as the model's generation_config says; write `do_sample: true` to sample or `do_sample: false` for greedy decoding"
                )))
            }
            _ => {}
        }
        if let Some(p) = kwargs.top_p.filter(|p| !(*p > 0.0 && *p <= 1.0)) {
            return Err(ConfigError(format!(
                "`generation_kwargs.top_p: {p}` must be in (0, 1]"
            )));
        }
        if let Some(key) = kwargs
            .other
            .keys()
            .find(|key| DECODING_KEYS.contains(&key.as_str()))
        {
            return Err(ConfigError(format!(
                "`generation_kwargs.{key}` is not supported (greedy decoding or sampling with temperature, top_p, top_k only)"
            )));
        }
        Ok(())
    }
}

/// A configuration that cannot run, in one sentence that quotes the offending `key`s (the
/// YAML reader locates the first quoted key in the files).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

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

/// A member of a group's `task:` list: a task, group or tag name, or an inline definition
/// (`lm_eval/tasks/_factory.py` `_build_group_members`): a dict with `task:` (a task by name
/// with overrides, or a new task) or with `group:` (a group by name with overrides, or a new
/// subgroup).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum GroupMember {
    Name(String),
    Inline(Map<String, Value>),
}

impl<'de> Deserialize<'de> for GroupMember {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match Value::deserialize(deserializer)? {
            Value::String(name) => Ok(Self::Name(name)),
            Value::Object(map) => Ok(Self::Inline(map)),
            other => Err(serde::de::Error::custom(format!(
                "a group's `task` entry must be a task, group or tag name or a dict, got {other}"
            ))),
        }
    }
}

impl GroupMember {
    /// The name the member refers to or defines.
    pub fn name(&self) -> Option<&str> {
        match self {
            Self::Name(name) => Some(name),
            Self::Inline(map) => map
                .get("group")
                .or_else(|| map.get("task"))
                .and_then(Value::as_str),
        }
    }
}

/// A group YAML (`lm_eval/config/group.py` `GroupConfig`). Keys that are not group fields
/// are task overrides applied to every member (`TaskFactory._build_group`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct GroupConfig {
    /// Consumed by the loader, as [`TaskConfig::include`].
    #[serde(skip_serializing)]
    pub include: Option<OneOrMany>,
    pub group: String,
    pub group_alias: Option<String>,
    #[serde(deserialize_with = "one_or_list")]
    pub task: Vec<GroupMember>,
    #[serde(deserialize_with = "one_or_list")]
    pub aggregate_metric_list: Vec<AggregateMetric>,
    pub metadata: Option<Map<String, Value>>,
    /// A group may carry tags like a task; lm-eval indexes groups by name only.
    #[serde(deserialize_with = "one_or_many")]
    pub tag: Vec<String>,
    /// Task keys set for every member (they override the members' own values).
    #[serde(flatten)]
    pub overrides: Map<String, Value>,
}

impl GroupConfig {
    pub(crate) fn check(&self) -> Result<(), ConfigError> {
        if self.task.is_empty() {
            return Err(ConfigError(format!(
                "group `{}` lists no `task`",
                self.group
            )));
        }
        if let Some(member) = self.task.iter().find(|member| member.name().is_none()) {
            return Err(ConfigError(format!(
                "group `{}`: a `task` entry must be a name or a dict with `task` or `group`, got {}",
                self.group,
                serde_json::to_string(member).unwrap_or_default()
            )));
        }
        match self
            .aggregate_metric_list
            .iter()
            .find(|metric| metric.aggregation != "mean")
        {
            Some(metric) => Err(ConfigError(format!(
                "aggregation `{}` of `{}`: only `mean` exists for groups",
                metric.aggregation, metric.metric
            ))),
            None => Ok(()),
        }
    }
}

/// One item or a list of them. Items are read one by one so that a bad item reports its own
/// error (an untagged enum would only say that no variant matched).
fn one_or_list<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    let item = |value: Value| serde_json::from_value(value).map_err(serde::de::Error::custom);
    match Option::<Value>::deserialize(deserializer)? {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items.into_iter().map(item).collect(),
        Some(one) => Ok(vec![item(one)?]),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A bad entry of `aggregate_metric_list` or `task` names what is wrong with it
    /// (regression: "data did not match any variant of untagged enum OneOrList").
    #[test]
    fn a_bad_list_item_reports_its_own_error() {
        let read = |yaml: &str| serde_yaml::from_str::<GroupConfig>(yaml);
        let one = read("group: g\ntask: a\naggregate_metric_list:\n  metric: acc\n").unwrap();
        assert_eq!(one.task, [GroupMember::Name("a".into())]);
        assert_eq!(one.aggregate_metric_list[0].metric, "acc");
        let error = read(
            "group: g\ntask: [a]\naggregate_metric_list:\n  - metric: acc\n    weight_by_size: truez\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("invalid type: string \"truez\", expected a boolean"),
            "{error}"
        );
        let error = read("group: g\ntask: [a, 3]\n").unwrap_err().to_string();
        assert!(
            error.contains("`task` entry must be a task, group or tag name or a dict, got 3"),
            "{error}"
        );
    }
}
