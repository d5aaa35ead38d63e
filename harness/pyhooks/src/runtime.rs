//! [`HookRuntime`] on an embedded CPython (pyo3).
//!
//! The interpreter starts on the first hook call (commands that need no hook never start
//! it), configured for the environment [`PythonEnv::discover`] finds. Each call holds the GIL
//! only while Python runs: the batch goes in as one JSON text and comes back as one, so Rust
//! threads (rayon) never wait on each other through the GIL, and a task costs a few calls
//! rather than one per document.
use crate::env::PythonEnv;
use moebench_tasks::hooks::{
    HookError, HookRef, HookRuntime, PyFilterStep, PyGenerationMetric, PyKind, PyResponse,
    PyTarget, Registry,
};
use pyo3::prelude::*;
use pyo3::types::PyModule;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::ffi::CString;
use std::sync::OnceLock;

const HELPER: &str = include_str!("moebench_hooks.py");

/// Hooks run in an embedded CPython.
#[derive(Default)]
pub struct PyRuntime {
    helper: OnceLock<Result<Py<PyModule>, String>>,
}

impl PyRuntime {
    /// The helper module, starting the interpreter on first use.
    fn helper(&self) -> Result<&Py<PyModule>, String> {
        self.helper
            .get_or_init(start)
            .as_ref()
            .map_err(Clone::clone)
    }

    /// Calls `function` of the helper with JSON text arguments; its JSON result, or the
    /// error as `HookError` for `target`.
    fn invoke(
        &self,
        target: &PyTarget,
        function: &str,
        args: &[String],
    ) -> Result<Value, HookError> {
        let helper = self
            .helper()
            .map_err(|reason| Failure::Unavailable(reason).into_hook_error(target))?;
        Python::attach(|py| {
            let result = helper
                .bind(py)
                .getattr(function)
                .and_then(|f| match args {
                    [a] => f.call1((a.as_str(),)),
                    [a, b] => f.call1((a.as_str(), b.as_str())),
                    [a, b, c] => f.call1((a.as_str(), b.as_str(), c.as_str())),
                    _ => f.call0(),
                })
                .and_then(|value| value.extract::<String>())
                .map_err(|error| Failure::Python(describe(py, &error)))?;
            serde_json::from_str(&result)
                .map_err(|error| Failure::Python(format!("bad result: {error}")))
        })
        .map_err(|failure| failure.into_hook_error(target))
    }

    fn invoke_hook(
        &self,
        hook: &HookRef,
        function: &str,
        args: &[String],
    ) -> Result<Value, HookError> {
        let target = PyTarget::Hook(hook.clone());
        let mut all = vec![target_json(&target)];
        all.extend_from_slice(args);
        self.invoke(&target, function, &all)
    }
}

/// Finds the environment, starts the interpreter and loads the helper into it.
fn start() -> Result<Py<PyModule>, String> {
    let env = PythonEnv::discover().map_err(|error| error.to_string())?;
    Python::initialize();
    Python::attach(|py| load_helper(py, &env))
}

/// Loads the helper and points `sys.path` at the environment.
fn load_helper(py: Python<'_>, env: &PythonEnv) -> Result<Py<PyModule>, String> {
    let code = CString::new(HELPER).map_err(|error| error.to_string())?;
    let module = PyModule::from_code(py, &code, c"moebench_hooks.py", c"moebench_hooks")
        .map_err(|error| describe(py, &error))?;
    let config = serde_json::to_string(env).map_err(|error| error.to_string())?;
    let embedded: (u32, u32) = module
        .getattr("setup")
        .and_then(|setup| setup.call1((config,)))
        .and_then(|v| v.extract::<String>())
        .map_err(|error| describe(py, &error))
        .and_then(|text| serde_json::from_str(&text).map_err(|error| error.to_string()))?;
    if embedded != env.version {
        return Err(format!(
            "{} is Python {}.{}, but this moebench embeds Python {}.{} (use an environment of that version)",
            env.executable.display(),
            env.version.0,
            env.version.1,
            embedded.0,
            embedded.1
        ));
    }
    Ok(module.unbind())
}

/// A Python exception as one line: its type and message, and where the hook's code raised
/// it (the innermost frame).
fn describe(py: Python<'_>, error: &PyErr) -> String {
    let mut message = error.to_string();
    if let Some(traceback) = error.traceback(py) {
        if let Ok(text) = traceback.format() {
            let frame = text
                .lines()
                .rfind(|line| line.trim_start().starts_with("File "))
                .map(str::trim)
                .unwrap_or_default();
            if !frame.is_empty() {
                message = format!("{message} ({frame})");
            }
        }
    }
    message
}

/// Why a call into Python failed.
enum Failure {
    /// The interpreter or the environment could not be started.
    Unavailable(String),
    /// Python raised (one line).
    Python(String),
}

impl Failure {
    /// As a hook error: unavailable, an import that failed (the module or a name in it), or
    /// a hook that raised.
    fn into_hook_error(self, target: &PyTarget) -> HookError {
        let (at, hook) = HookError::describe(target);
        match self {
            Self::Unavailable(reason) => HookError::Unavailable {
                at,
                hook,
                reason,
                alternative: String::new(),
            },
            Self::Python(message)
                if [
                    "ModuleNotFoundError",
                    "ImportError",
                    "AttributeError",
                    "FileNotFoundError",
                ]
                .iter()
                .any(|kind| message.starts_with(kind)) =>
            {
                HookError::Import {
                    at,
                    hook,
                    message,
                    alternative: String::new(),
                }
            }
            Self::Python(message) => HookError::Call { at, hook, message },
        }
    }
}

/// A target as the helper's `_target` reads it.
fn target_json(target: &PyTarget) -> String {
    match target {
        PyTarget::Hook(hook) => json!({"hook": [hook.qualified, hook.yaml]}),
        PyTarget::Registered { registry, name } => {
            let registry = match registry {
                Registry::Metric => "metric",
                Registry::HfEvaluateMetric => "hf_evaluate_metric",
                Registry::Aggregation => "aggregation",
                Registry::Filter => "filter",
            };
            json!({"registered": [registry, name]})
        }
    }
    .to_string()
}

fn text(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

fn rows(target: &PyTarget, value: Value) -> Result<Vec<Value>, HookError> {
    match value {
        Value::Array(rows) => Ok(rows),
        other => Err(HookError::call(
            target,
            format!("returned {other}, not a list"),
        )),
    }
}

fn maps(target: &PyTarget, value: Value) -> Result<Vec<Map<String, Value>>, HookError> {
    rows(target, value)?
        .into_iter()
        .map(|row| match row {
            Value::Object(map) => Ok(map),
            other => Err(HookError::call(
                target,
                format!("returned {other}, not a dict"),
            )),
        })
        .collect()
}

impl HookRuntime for PyRuntime {
    fn resolve(&self, target: &PyTarget) -> Result<PyKind, HookError> {
        let kind = self.invoke(target, "resolve", &[target_json(target)])?;
        match kind.as_str() {
            Some("task_class") => Ok(PyKind::TaskClass),
            Some("class") => Ok(PyKind::Class),
            Some("function") => Ok(PyKind::Function),
            _ => Err(HookError::call(target, format!("resolved to {kind}"))),
        }
    }

    fn process_docs(&self, hook: &HookRef, docs: Vec<Value>) -> Result<Vec<Value>, HookError> {
        let value = self.invoke_hook(hook, "process_docs", &[text(&docs)])?;
        rows(&PyTarget::Hook(hook.clone()), value)
    }

    fn map_docs(&self, hook: &HookRef, docs: &[Value]) -> Result<Vec<Value>, HookError> {
        let value = self.invoke_hook(hook, "map_docs", &[text(&docs)])?;
        let target = PyTarget::Hook(hook.clone());
        let values = rows(&target, value)?;
        if values.len() != docs.len() {
            return Err(HookError::call(&target, "returned a value per document"));
        }
        Ok(values)
    }

    fn call(&self, hook: &HookRef, kwargs: &Map<String, Value>) -> Result<Value, HookError> {
        self.invoke_hook(hook, "call", &[text(kwargs)])
    }

    fn custom_dataset(
        &self,
        hook: &HookRef,
        kwargs: &Map<String, Value>,
    ) -> Result<BTreeMap<String, Vec<Value>>, HookError> {
        let value = self.invoke_hook(hook, "custom_dataset", &[text(kwargs)])?;
        serde_json::from_value(value).map_err(|error| {
            HookError::call(&PyTarget::Hook(hook.clone()), format!("splits: {error}"))
        })
    }

    fn process_results(
        &self,
        hook: &HookRef,
        calls: &[(&Value, Vec<PyResponse>)],
    ) -> Result<Vec<Map<String, Value>>, HookError> {
        let calls: Vec<Value> = calls
            .iter()
            .map(|(doc, responses)| {
                let responses: Vec<Value> = responses
                    .iter()
                    .map(|response| match response {
                        PyResponse::Loglikelihood(ll, greedy) => json!({"ll": [ll, greedy]}),
                        PyResponse::Rolling(ll) => json!({"rolling": ll}),
                        PyResponse::Text(text) => json!({"text": text}),
                    })
                    .collect();
                json!([doc, responses])
            })
            .collect();
        let value = self.invoke_hook(hook, "process_results", &[text(&calls)])?;
        maps(&PyTarget::Hook(hook.clone()), value)
    }

    fn generation_metric(
        &self,
        metric: &PyGenerationMetric,
        multiple_target: bool,
        calls: &[(Value, Value)],
    ) -> Result<Vec<Map<String, Value>>, HookError> {
        let spec = json!({
            "name": metric.name,
            "function": serde_json::from_str::<Value>(&target_json(&metric.function)).unwrap_or_default(),
            "kwargs": metric.kwargs,
            "multiple_target": multiple_target,
        });
        let calls: Vec<Value> = calls
            .iter()
            .map(|(gold, result)| json!([gold, result]))
            .collect();
        let value = self.invoke(
            &metric.function,
            "generation_metric",
            &[spec.to_string(), text(&calls)],
        )?;
        maps(&metric.function, value)
    }

    fn aggregate(&self, target: &PyTarget, items: &[Value]) -> Result<f64, HookError> {
        let value = self.invoke(target, "aggregate", &[target_json(target), text(&items)])?;
        moebench_tasks::hooks::json_number(&value)
            .ok_or_else(|| HookError::call(target, format!("returned {value}, not a number")))
    }

    fn filter(
        &self,
        steps: &[PyFilterStep],
        responses: Vec<Vec<Value>>,
        docs: &[Value],
    ) -> Result<Vec<Value>, HookError> {
        let Some(first) = steps.first() else {
            return Ok(responses.into_iter().map(Value::from).collect());
        };
        let steps: Vec<Value> = steps
            .iter()
            .map(|step| {
                let parse = |t: &PyTarget| {
                    serde_json::from_str::<Value>(&target_json(t)).unwrap_or_default()
                };
                json!({
                    "filter": parse(&step.filter),
                    "filter_fn": step.filter_fn.clone().map(|hook| parse(&PyTarget::Hook(hook))),
                    "kwargs": step.kwargs,
                })
            })
            .collect();
        let value = self.invoke(
            &first.filter,
            "filter_responses",
            &[text(&steps), text(&responses), text(&docs)],
        )?;
        rows(&first.filter, value)
    }
}
