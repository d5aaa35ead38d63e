//! The boundary between task YAML and Python hooks.
//!
//! lm-eval task folders carry Python modules (`utils.py`, …) whose functions the YAMLs name
//! with `!function module.fn`: `process_docs`, `doc_to_text`/`doc_to_target`/`doc_to_choice`,
//! `process_results`, metric and aggregation functions, filters, `fewshot_config.samples`,
//! `custom_dataset` and `class`. lm-eval resolves a tag like this
//! (`lm_eval/tasks/_yaml_loader.py` `_import_func_in_yml`): `module.py` (dots as directories) in
//! the directory of the YAML file that *contains the tag* — an `include:`d file's tags resolve
//! next to that file — loaded with `importlib.util.spec_from_file_location`; else an importable
//! module of that name.
//!
//! This crate does not link Python. It records each tag as a [`HookRef`] (with the YAML file
//! and line it came from) and calls hooks through a [`HookRuntime`], which the binary installs
//! once ([`install`]); `moebench-pyhooks` implements it on an embedded CPython. Everything
//! crosses the boundary as JSON values, in batches (a whole split for `process_docs`, every
//! document of a task for `process_results`, metrics and filters), so that a task costs a few
//! calls into Python rather than one per document and field.
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

/// The key a YAML `!function module.fn` tag is rewritten to before parsing (see
/// `crate::yaml`), holding `[module.fn, yaml file, line]`.
pub(crate) const HOOK_MARKER: &str = "__moebench_hook__";

/// How a non-finite float crosses the boundary (JSON has none): `{"__float__": "nan"}`,
/// `"inf"` or `"-inf"`.
pub const FLOAT_MARKER: &str = "__float__";

/// One `!function module.fn` tag of a task YAML.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HookRef {
    /// `module.fn` as written after the tag.
    pub qualified: String,
    /// The YAML file that contains the tag (its directory is where `module.py` is looked up).
    pub yaml: PathBuf,
    /// 1-based line of the tag in `yaml`.
    pub line: usize,
}

impl HookRef {
    /// The module part (`utils` of `utils.process_docs`).
    pub fn module(&self) -> &str {
        self.qualified
            .rsplit_once('.')
            .map_or("", |(module, _)| module)
    }

    /// The function (or class) name.
    pub fn function(&self) -> &str {
        self.qualified
            .rsplit_once('.')
            .map_or(self.qualified.as_str(), |(_, function)| function)
    }

    /// The directory `module.py` is looked for in.
    pub fn dir(&self) -> &Path {
        self.yaml.parent().unwrap_or(Path::new(""))
    }

    /// `dir/module.py`, dots of the module name as directories (`_import_func_in_yml`).
    pub fn module_file(&self) -> PathBuf {
        self.dir()
            .join(format!("{}.py", self.module().replace('.', "/")))
    }

    /// `file:line` of the tag.
    pub fn at(&self) -> String {
        format!("{}:{}", self.yaml.display(), self.line)
    }
}

impl std::fmt::Display for HookRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "!function {}", self.qualified)
    }
}

/// Serialised as lm-eval prints an unresolved tag, `!function module.fn` (resolved configs in
/// results name the hook; its module's content is part of the task content hash).
impl Serialize for HookRef {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}

/// Read back from the marker the YAML reader writes for a tag:
/// `{__moebench_hook__: [module.fn, file, line]}`.
impl<'de> Deserialize<'de> for HookRef {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Marker {
            #[serde(rename = "__moebench_hook__")]
            hook: (String, PathBuf, usize),
        }
        let value = Value::deserialize(deserializer)?;
        let (qualified, yaml, line) = serde_json::from_value::<Marker>(value)
            .map_err(|_| {
                serde::de::Error::custom("expected `!function module.function` (a Python hook)")
            })?
            .hook;
        Ok(Self {
            qualified,
            yaml,
            line,
        })
    }
}

impl HookRef {
    /// The hook a marker value stands for, if it is one.
    pub(crate) fn from_marker(value: &Value) -> Option<Self> {
        let map = value.as_object()?;
        if map.len() != 1 || !map.contains_key(HOOK_MARKER) {
            return None;
        }
        serde_json::from_value(value.clone()).ok()
    }
}

/// A Python callable: a `!function` hook, or a name in one of lm-eval's registries
/// (`lm_eval/api/registry.py`), used for registered metrics, aggregations and filters that
/// have no native port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum PyTarget {
    Hook(HookRef),
    Registered { registry: Registry, name: String },
}

impl std::fmt::Display for PyTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Hook(hook) => write!(f, "`{hook}` ({})", hook.at()),
            Self::Registered { registry, name } => {
                write!(f, "lm-eval's registered {} `{name}`", registry.noun())
            }
        }
    }
}

/// lm-eval's registries (`lm_eval/api/registry.py`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Registry {
    Metric,
    /// A Hugging Face `evaluate` metric (`hf_evaluate: true`): `evaluate.load(name).compute`.
    HfEvaluateMetric,
    Aggregation,
    Filter,
}

impl Registry {
    fn noun(self) -> &'static str {
        match self {
            Self::Metric => "metric",
            Self::HfEvaluateMetric => "Hugging Face evaluate metric",
            Self::Aggregation => "aggregation",
            Self::Filter => "filter",
        }
    }
}

/// What a resolved hook is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PyKind {
    /// A plain callable.
    Function,
    /// A class (filters are classes whose instances `apply(resps, docs)`).
    Class,
    /// A subclass of `lm_eval.api.task.Task` (`class:` tasks).
    TaskClass,
}

/// How the model answered one request, in the shape lm-eval hands to Python
/// (`Instance.filtered_resps`): `(loglikelihood, is_greedy)` tuples, a rolling
/// log-likelihood, or a generated text.
#[derive(Debug, Clone, PartialEq)]
pub enum PyResponse {
    Loglikelihood(f64, bool),
    Rolling(f64),
    Text(String),
}

/// One step of a filter pipeline that runs in Python.
#[derive(Debug, Clone, PartialEq)]
pub struct PyFilterStep {
    /// The filter class or function: a hook, `custom` (then `filter_fn` is in `kwargs`), or
    /// a registered lm-eval filter.
    pub filter: PyTarget,
    /// `filter_fn` of `function: custom`, passed as a keyword argument once resolved.
    pub filter_fn: Option<HookRef>,
    /// The step's other keys, passed as keyword arguments.
    pub kwargs: Map<String, Value>,
}

/// A generation metric without a native port, computed per document as lm-eval's
/// `ConfigurableTask.process_results` does for `generate_until`.
#[derive(Debug, Clone, PartialEq)]
pub struct PyGenerationMetric {
    /// The name the metric's values are reported under.
    pub name: String,
    pub function: PyTarget,
    pub kwargs: Map<String, Value>,
}

/// The runtime that calls Python hooks. Implementations hold the interpreter; every method
/// takes a whole batch.
pub trait HookRuntime: Send + Sync {
    /// Imports the hook's module and looks the function up, as lm-eval does.
    fn resolve(&self, target: &PyTarget) -> Result<PyKind, HookError>;

    /// `process_docs(datasets.Dataset(docs))`, back as rows.
    fn process_docs(&self, hook: &HookRef, docs: Vec<Value>) -> Result<Vec<Value>, HookError>;

    /// `[hook(doc) for doc in docs]` (`doc_to_text`, `doc_to_target`, `doc_to_choice`,
    /// `gen_prefix`).
    fn map_docs(&self, hook: &HookRef, docs: &[Value]) -> Result<Vec<Value>, HookError>;

    /// `hook(**kwargs)`: `fewshot_config.samples` (no arguments) and `custom_dataset`.
    fn call(&self, hook: &HookRef, kwargs: &Map<String, Value>) -> Result<Value, HookError>;

    /// `custom_dataset(**kwargs)`: the splits of the dataset it returns, as rows.
    fn custom_dataset(
        &self,
        hook: &HookRef,
        kwargs: &Map<String, Value>,
    ) -> Result<BTreeMap<String, Vec<Value>>, HookError>;

    /// `[hook(doc, results) for doc, results in calls]` (`process_results`).
    fn process_results(
        &self,
        hook: &HookRef,
        calls: &[(&Value, Vec<PyResponse>)],
    ) -> Result<Vec<Map<String, Value>>, HookError>;

    /// One generation metric for every document: `calls` are `(gold, result)` with lm-eval's
    /// gold (a string, or a list for multiple targets) and the filtered response (a string,
    /// or a list when the pipeline does not end with `take_first`).
    fn generation_metric(
        &self,
        metric: &PyGenerationMetric,
        multiple_target: bool,
        calls: &[(Value, Value)],
    ) -> Result<Vec<Map<String, Value>>, HookError>;

    /// `aggregation(items)`.
    fn aggregate(&self, target: &PyTarget, items: &[Value]) -> Result<f64, HookError>;

    /// Runs filter steps over every document's responses at once (`FilterEnsemble.apply`);
    /// returns each document's filtered responses.
    fn filter(
        &self,
        steps: &[PyFilterStep],
        responses: Vec<Vec<Value>>,
        docs: &[Value],
    ) -> Result<Vec<Value>, HookError>;
}

/// Why a hook could not be used. Every variant names the hook and where the YAML names it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum HookError {
    /// No Python to run the hook in.
    #[error("{at}: `{hook}` needs Python, but {reason}{alternative}")]
    Unavailable {
        at: String,
        hook: String,
        reason: String,
        /// `"; …"`: the Rust-native way to get the same result, where one exists.
        alternative: String,
    },
    /// The module could not be imported, or has no such function.
    #[error("{at}: `{hook}`: {message}{alternative}")]
    Import {
        at: String,
        hook: String,
        message: String,
        alternative: String,
    },
    /// The hook raised, or returned something of the wrong shape.
    #[error("{at}: `{hook}` failed: {message}")]
    Call {
        at: String,
        hook: String,
        message: String,
    },
}

impl HookError {
    /// Where a target is named, and how it reads in messages.
    pub fn describe(target: &PyTarget) -> (String, String) {
        match target {
            PyTarget::Hook(hook) => (hook.at(), hook.to_string()),
            PyTarget::Registered { registry, name } => {
                (format!("lm-eval {}", registry.noun()), name.clone())
            }
        }
    }

    /// The hook raised or returned something unusable.
    pub fn call(target: &PyTarget, message: impl Into<String>) -> Self {
        let (at, hook) = Self::describe(target);
        Self::Call {
            at,
            hook,
            message: message.into(),
        }
    }

    /// Appends a native alternative to an unavailable or unimportable hook's message.
    pub fn with_alternative(mut self, native: Option<String>) -> Self {
        if let Some(native) = native {
            match &mut self {
                Self::Unavailable { alternative, .. } | Self::Import { alternative, .. } => {
                    *alternative = format!("; or, without Python: {native}");
                }
                Self::Call { .. } => {}
            }
        }
        self
    }
}

/// A number as it crosses the boundary: JSON numbers and booleans, and non-finite floats
/// written as [`FLOAT_MARKER`] objects.
pub fn json_number(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::Bool(b) => Some(f64::from(u8::from(*b))),
        Value::Object(map) if map.len() == 1 => match map.get(FLOAT_MARKER)?.as_str()? {
            "nan" => Some(f64::NAN),
            "inf" => Some(f64::INFINITY),
            "-inf" => Some(f64::NEG_INFINITY),
            _ => None,
        },
        _ => None,
    }
}

static RUNTIME: OnceLock<Arc<dyn HookRuntime>> = OnceLock::new();

/// Installs the process-wide hook runtime (once; later calls are ignored and return false).
pub fn install(runtime: Arc<dyn HookRuntime>) -> bool {
    RUNTIME.set(runtime).is_ok()
}

/// The installed runtime, or the error naming `target` when there is none.
pub fn runtime_for(target: &PyTarget) -> Result<&'static dyn HookRuntime, HookError> {
    match RUNTIME.get() {
        Some(runtime) => Ok(runtime.as_ref()),
        None => {
            let (at, hook) = HookError::describe(target);
            Err(HookError::Unavailable {
                at,
                hook,
                reason: "this moebench was built without Python hooks (cargo feature `python`)"
                    .to_owned(),
                alternative: String::new(),
            })
        }
    }
}

/// Whether a runtime is installed.
pub fn is_installed() -> bool {
    RUNTIME.get().is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn hook_ref_parts_and_marker() {
        let value = json!({HOOK_MARKER: ["pkg.utils.process_docs", "/t/x/task.yaml", 7]});
        let hook = HookRef::from_marker(&value).unwrap();
        assert_eq!(hook.module(), "pkg.utils");
        assert_eq!(hook.function(), "process_docs");
        assert_eq!(hook.module_file(), Path::new("/t/x/pkg/utils.py"));
        assert_eq!(hook.at(), "/t/x/task.yaml:7");
        assert_eq!(
            serde_json::to_value(&hook).unwrap(),
            "!function pkg.utils.process_docs"
        );
        assert!(HookRef::from_marker(&json!({"a": 1})).is_none());
    }

    #[test]
    fn missing_runtime_names_the_hook() {
        let hook = HookRef {
            qualified: "utils.process_docs".into(),
            yaml: "/t/h.yaml".into(),
            line: 3,
        };
        let error = runtime_for(&PyTarget::Hook(hook))
            .err()
            .map(|e| e.with_alternative(Some("use `moebench_processor: hellaswag`".into())));
        if is_installed() {
            return; // another test in this binary installed one
        }
        let message = error.unwrap().to_string();
        assert!(message.starts_with("/t/h.yaml:3: `!function utils.process_docs` needs Python"));
        assert!(message.ends_with("; or, without Python: use `moebench_processor: hellaswag`"));
    }
}
