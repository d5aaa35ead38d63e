//! Checking task and group YAMLs without their data: a file is *accepted* when the task (or
//! every task of the group) would run given its data — the configuration parses and passes
//! its checks, every template compiles, every Python hook imports and resolves to the right
//! kind of object, and every metric, aggregation and filter is known (natively, or to lm-eval
//! through Python).
use crate::config::TaskSpec;
use crate::hooks::{self, HookError, PyKind, PyTarget};
use crate::registry::{TaskIndex, TaskNode};
use crate::scoring::Scorer;
use crate::task::template_sources;
use crate::template::Templates;
use crate::yaml::{read_merged, Kind};
use crate::TaskError;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The verdict on one YAML file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Verdict {
    pub path: PathBuf,
    pub accepted: bool,
    /// Why it was rejected (`None` when accepted).
    pub reason: Option<String>,
}

/// Validates YAML files with an index of the task directories their groups refer to; task
/// verdicts are remembered, so that a task shared by many groups is checked once.
pub struct Validator<'a> {
    index: &'a TaskIndex,
    checked: HashMap<String, Result<(), String>>,
}

impl<'a> Validator<'a> {
    pub fn new(index: &'a TaskIndex) -> Self {
        Self {
            index,
            checked: HashMap::new(),
        }
    }

    /// The verdict on one file.
    pub fn file(&mut self, path: &Path) -> Verdict {
        let result = self.check_file(path);
        Verdict {
            path: path.to_owned(),
            accepted: result.is_ok(),
            reason: result.err(),
        }
    }

    fn check_file(&mut self, path: &Path) -> Result<(), String> {
        let merged = read_merged(path).map_err(|error| error.to_string())?;
        let name = match merged.kind() {
            Kind::Group => merged.string("group"),
            Kind::Task | Kind::PythonTask => merged.string("task"),
        };
        if name.is_none() {
            return Err(format!(
                "{}: no `task` or `group` key (an include-only template is checked where it is included)",
                path.display()
            ));
        }
        let node = self
            .index
            .resolve(&path.display().to_string())
            .map_err(|error| error.to_string())?;
        for task in node.tasks() {
            self.task(task)?;
        }
        if let TaskNode::Group { children, .. } = &node {
            if node.tasks().is_empty() && children.is_empty() {
                return Err(format!("{}: the group has no tasks", path.display()));
            }
        }
        Ok(())
    }

    /// Checks one task configuration (remembered by file and configuration).
    fn task(&mut self, spec: &TaskSpec) -> Result<(), String> {
        let key = format!(
            "{}\n{}",
            spec.path.display(),
            serde_json::to_string(&spec.config).unwrap_or_default()
        );
        if let Some(result) = self.checked.get(&key) {
            return result.clone();
        }
        let result = check_task(spec).map_err(|error| error.to_string());
        self.checked.insert(key, result.clone());
        result
    }
}

/// Templates, hooks and Python-backed metrics and filters of a task.
pub fn check_task(spec: &TaskSpec) -> Result<(), TaskError> {
    let at = || spec.path.display().to_string();
    Templates::new(template_sources(spec))
        .map_err(|error| TaskError::config(at(), error.to_string()))?;
    for (key, hook) in spec.config.hooks() {
        let target = PyTarget::Hook(hook.clone());
        let kind = resolve(&target, spec)?;
        let wanted = if key.ends_with(".function") {
            // A filter given as `function: !function`: lm-eval instantiates it.
            [PyKind::Class, PyKind::Function]
        } else {
            [PyKind::Function, PyKind::Function]
        };
        if !wanted.contains(&kind) {
            return Err(HookError::call(
                &target,
                format!("`{key}` names a {kind:?}, not a function"),
            )
            .into());
        }
    }
    let scorer = Scorer::new(&spec.config).map_err(|error| TaskError::config(at(), error.0))?;
    for target in scorer.python_targets() {
        resolve(&target, spec)?;
    }
    Ok(())
}

fn resolve(target: &PyTarget, spec: &TaskSpec) -> Result<PyKind, TaskError> {
    let alternative = match target {
        PyTarget::Hook(hook) => crate::processors::Processor::suggest(&format!(
            "{} {} {}",
            spec.path.display(),
            spec.name,
            hook.qualified
        ))
        .map(crate::processors::Processor::native_alternative),
        PyTarget::Registered { .. } => None,
    };
    let kind = hooks::runtime_for(target)
        .and_then(|runtime| runtime.resolve(target))
        .map_err(|error| error.with_alternative(alternative))?;
    Ok(kind)
}
