//! Reading task and group YAML files.
//!
//! - `include:` (one path or a list, relative to the including file) is resolved recursively
//!   and merged shallowly, the including file's keys winning, exactly as
//!   `lm_eval/tasks/_yaml_loader.py` `load_yaml` does (`task_list` is not inherited).
//! - Every file of the include chain is checked on its own, so that an unknown key is reported
//!   at `file:line:column` with the closest known key as a hint.
//! - Python hooks (`!function` tags, `process_docs`, `process_results`, `custom_dataset`) are
//!   rejected with the built-in `moebench_processor` to use instead, when one exists.
use super::{GroupConfig, GroupSpec, TaskConfig, TaskSpec};
use crate::processors::Processor;
use crate::TaskError;
use moebench_core::suggest::unknown_name_hint;
use serde::de::DeserializeOwned;
use serde_yaml::{Mapping, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A task or a group YAML.
#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::large_enum_variant)] // one per YAML file: boxing would only burden callers
pub enum LoadedYaml {
    Task(TaskSpec),
    Group(GroupSpec),
}

impl LoadedYaml {
    /// The task or group name.
    pub fn name(&self) -> &str {
        match self {
            Self::Task(task) => &task.name,
            Self::Group(group) => &group.config.group,
        }
    }
}

/// Reads, merges and validates a task or group YAML.
pub fn load_yaml(path: &Path) -> Result<LoadedYaml, TaskError> {
    let merged = read_merged(path)?;
    let at = path.display().to_string();
    if merged.mapping.contains_key("group") {
        for file in &merged.files {
            file.validate::<GroupConfig>(false)?;
        }
        let config: GroupConfig = from_mapping(&merged.mapping, &at)?;
        config.check().map_err(|message| merged.error(message))?;
        return Ok(LoadedYaml::Group(GroupSpec {
            path: path.to_owned(),
            config,
        }));
    }
    for file in &merged.files {
        file.validate::<TaskConfig>(true)?;
    }
    let config: TaskConfig = from_mapping(&merged.mapping, &at)?;
    config.check().map_err(|message| merged.error(message))?;
    let data_dir = merged
        .origin
        .get("dataset_kwargs")
        .map_or(path, PathBuf::as_path)
        .parent()
        .map(Path::to_owned)
        .unwrap_or_default();
    Ok(LoadedYaml::Task(TaskSpec {
        name: config.task.clone().unwrap_or_default(),
        path: path.to_owned(),
        config,
        data_dir,
    }))
}

fn from_mapping<T: DeserializeOwned>(mapping: &Mapping, at: &str) -> Result<T, TaskError> {
    serde_yaml::from_value(Value::Mapping(mapping.clone()))
        .map_err(|error| TaskError::config(at, error.to_string()))
}

/// A YAML file with its includes merged in, not yet validated.
pub(crate) struct Merged {
    pub(crate) mapping: Mapping,
    /// Every file of the include tree, the top one first.
    files: Vec<SourceFile>,
    /// Top-level key → the file that supplied its value.
    origin: BTreeMap<String, PathBuf>,
}

impl Merged {
    /// An error about the merged configuration, located at the line that writes a `name`
    /// quoted in the message (the last one written in the files), else at the top file.
    fn error(&self, message: String) -> TaskError {
        let at = quoted(&message)
            .iter()
            .rev()
            .find_map(|name| {
                self.files.iter().find_map(|file| {
                    let (line, column) = nested_key_position(&file.text, name)?;
                    Some(format!("{}:{line}:{column}", file.path.display()))
                })
            })
            .unwrap_or_else(|| self.files[0].path.display().to_string());
        TaskError::config(at, message)
    }
}

/// The `` `names` `` quoted in a message.
fn quoted(message: &str) -> Vec<&str> {
    message.split('`').skip(1).step_by(2).collect()
}

/// The 1-based line and column of the first `name:` key at any depth (also as a list item,
/// `- name:`).
fn nested_key_position(text: &str, name: &str) -> Option<(usize, usize)> {
    text.lines().enumerate().find_map(|(i, line)| {
        let indent = line.len() - line.trim_start_matches([' ', '-']).len();
        let rest = &line[indent..];
        let after = rest
            .strip_prefix(name)
            .or_else(|| rest.strip_prefix(&format!("\"{name}\"")))
            .or_else(|| rest.strip_prefix(&format!("'{name}'")))?;
        after
            .trim_start()
            .starts_with(':')
            .then_some((i + 1, indent + 1))
    })
}

/// Reads `path` and merges its includes.
pub(crate) fn read_merged(path: &Path) -> Result<Merged, TaskError> {
    read_tree(path, &mut Vec::new())
}

fn read_tree(path: &Path, stack: &mut Vec<PathBuf>) -> Result<Merged, TaskError> {
    let canonical = path.canonicalize().map_err(TaskError::io(path))?;
    if stack.contains(&canonical) {
        return Err(TaskError::config(
            path.display().to_string(),
            "include cycle: this file includes itself, directly or through other files",
        ));
    }
    let file = SourceFile::read(path)?;
    let mut own = file.mapping()?;
    let includes = match own.remove("include") {
        None => Vec::new(),
        Some(Value::String(one)) => vec![one],
        Some(Value::Sequence(many)) => many
            .iter()
            .map(|item| item.as_str().map(str::to_owned))
            .collect::<Option<_>>()
            .ok_or_else(|| {
                file.error_at_key("include", "`include` must be a path or a list of paths")
            })?,
        Some(_) => {
            return Err(file.error_at_key("include", "`include` must be a path or a list of paths"))
        }
    };
    stack.push(canonical);
    let mut merged = Merged {
        mapping: Mapping::new(),
        files: Vec::new(),
        origin: BTreeMap::new(),
    };
    let mut included_files = Vec::new();
    for include in includes {
        let include_path = path.parent().unwrap_or(Path::new("")).join(&include);
        let mut included = read_tree(&include_path, stack)?;
        included.mapping.remove("task_list");
        for (key, value) in included.mapping {
            if let Some(name) = key.as_str() {
                if let Some(origin) = included.origin.remove(name) {
                    merged.origin.insert(name.to_owned(), origin);
                }
            }
            merged.mapping.insert(key, value);
        }
        included_files.extend(included.files);
    }
    stack.pop();
    for (key, value) in own {
        if let Some(name) = key.as_str() {
            merged.origin.insert(name.to_owned(), path.to_owned());
        }
        merged.mapping.insert(key, value);
    }
    merged.files.push(file);
    merged.files.extend(included_files);
    Ok(merged)
}

/// One YAML file as text, kept to report locations.
struct SourceFile {
    path: PathBuf,
    text: String,
}

/// lm-eval keys that moebench does not run, and why.
const UNSUPPORTED_KEYS: &[(&str, &str)] = &[
    ("use_prompt", "promptsource prompts are not supported"),
    ("doc_to_image", "multimodal tasks are not supported"),
    ("doc_to_audio", "multimodal tasks are not supported"),
    ("gen_prefix", "`gen_prefix` is not supported"),
    ("class", "Python task classes are not supported"),
];

/// lm-eval keys whose value is Python code.
const PYTHON_HOOKS: &[&str] = &["process_docs", "process_results", "custom_dataset"];

impl SourceFile {
    fn read(path: &Path) -> Result<Self, TaskError> {
        Ok(Self {
            path: path.to_owned(),
            text: std::fs::read_to_string(path).map_err(TaskError::io(path))?,
        })
    }

    fn mapping(&self) -> Result<Mapping, TaskError> {
        match serde_yaml::from_str(&self.text).map_err(|error| self.serde_error(&error))? {
            Value::Mapping(mapping) => Ok(mapping),
            _ => Err(TaskError::config(
                self.path.display().to_string(),
                "expected a mapping of keys to values at the top level",
            )),
        }
    }

    /// Rejects Python hooks and unsupported keys, then checks keys and types against `T`.
    fn validate<T: DeserializeOwned>(&self, is_task: bool) -> Result<(), TaskError> {
        let mapping = self.mapping()?;
        let task_name = mapping
            .get("task")
            .and_then(Value::as_str)
            .unwrap_or_default();
        for (key, value) in &mapping {
            let Some(key) = key.as_str() else { continue };
            if let Some(function) = find_function_tag(value) {
                let hint = self.processor_hint(task_name, &function);
                return Err(self.error_at_key(
                    key,
                    format!("`{key}: !function {function}` runs Python code, which moebench cannot do; {hint}"),
                ));
            }
            if is_task && PYTHON_HOOKS.contains(&key) {
                let hint = self.processor_hint(task_name, &yaml_scalar(value));
                return Err(self.error_at_key(
                    key,
                    format!("`{key}` runs Python code, which moebench cannot do; {hint}"),
                ));
            }
            if let Some((_, why)) = UNSUPPORTED_KEYS.iter().find(|(name, _)| *name == key) {
                return Err(self.error_at_key(key, format!("`{key}`: {why}")));
            }
        }
        serde_yaml::from_str::<T>(&self.text)
            .map(drop)
            .map_err(|error| self.serde_error(&error))
    }

    fn processor_hint(&self, task_name: &str, function: &str) -> String {
        let haystack = format!("{} {task_name} {function}", self.path.display());
        match Processor::suggest(&haystack) {
            Some(processor) => format!(
                "use `moebench_processor: {}` (a built-in port of lm-eval's {}) and remove the Python hooks",
                processor.name(),
                processor.ported_from()
            ),
            None => "express it as a Jinja2 template or a column name instead".to_owned(),
        }
    }

    fn error_at_key(&self, key: &str, message: impl Into<String>) -> TaskError {
        let at = match nested_key_position(&self.text, key) {
            Some((line, column)) => format!("{}:{line}:{column}", self.path.display()),
            None => self.path.display().to_string(),
        };
        TaskError::config(at, message)
    }

    /// A serde_yaml error as `file:line:column: message`, with a "did you mean" hint for an
    /// unknown key or variant.
    fn serde_error(&self, error: &serde_yaml::Error) -> TaskError {
        let mut message = error.to_string();
        let at = match error.location() {
            Some(location) => {
                let suffix = format!(" at line {} column {}", location.line(), location.column());
                if let Some(stripped) = message.strip_suffix(&suffix) {
                    message = stripped.to_owned();
                }
                format!(
                    "{}:{}:{}",
                    self.path.display(),
                    location.line(),
                    location.column()
                )
            }
            None => self.path.display().to_string(),
        };
        if let Some(hint) = unknown_name_hint(&message) {
            message.push_str(&hint);
        }
        TaskError::config(at, message)
    }
}

/// The argument of the first `!function` tag inside `value`.
fn find_function_tag(value: &Value) -> Option<String> {
    match value {
        Value::Tagged(tagged) => Some(yaml_scalar(&tagged.value)),
        Value::Sequence(items) => items.iter().find_map(find_function_tag),
        Value::Mapping(mapping) => mapping.values().find_map(find_function_tag),
        _ => None,
    }
}

fn yaml_scalar(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => serde_yaml::to_string(other)
            .unwrap_or_default()
            .trim()
            .to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        fs::write(&path, text).unwrap();
        path
    }

    const BASE: &str = "dataset_path: json\ntest_split: test\noutput_type: multiple_choice\n\
        doc_to_text: \"{{q}}\"\ndoc_to_target: 0\ndoc_to_choice: [\"a\", \"b\"]\n\
        training_split: train\ndataset_kwargs:\n  data_files:\n    test: base.jsonl\n";

    #[test]
    fn include_merges_with_includer_winning_and_nulls_overriding() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("sub")).unwrap();
        write(dir.path(), "base.yaml", BASE);
        let path = write(
            &dir.path().join("sub"),
            "child.yaml",
            "include: ../base.yaml\ntask: child\ntraining_split: null\ntarget_delimiter: \"\"\n",
        );
        let LoadedYaml::Task(spec) = load_yaml(&path).unwrap() else {
            panic!("not a task")
        };
        assert_eq!(spec.name, "child");
        assert_eq!(spec.config.training_split, None);
        assert_eq!(spec.config.target_delimiter, "");
        assert_eq!(spec.config.fewshot_delimiter, "\n\n");
        // data_files resolve against the file that set dataset_kwargs
        assert_eq!(
            spec.data_dir.canonicalize().unwrap(),
            dir.path().canonicalize().unwrap()
        );
    }

    #[test]
    fn unknown_key_reports_location_and_hint() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            "t.yaml",
            &format!("task: t\n{BASE}doc_to_txt: x\n"),
        );
        let error = load_yaml(&path).unwrap_err().to_string();
        assert!(
            error.contains("t.yaml:12:1: unknown field `doc_to_txt`"),
            "{error}"
        );
        assert!(error.ends_with("(did you mean `doc_to_text`?)"), "{error}");

        let nested = write(
            dir.path(),
            "m.yaml",
            &format!("task: m\n{BASE}metric_list:\n  - metric: acc\n    ignore_cse: true\n"),
        );
        let error = load_yaml(&nested).unwrap_err().to_string();
        assert!(
            error.contains("m.yaml:14:5: metric `acc` takes no argument `ignore_cse`"),
            "{error}"
        );

        let generation = write(
            dir.path(),
            "g.yaml",
            "task: g\ndataset_path: json\ntest_split: test\ndoc_to_text: q\ndoc_to_target: a\n\
             metric_list:\n  - metric: exact_match\n    ignore_cse: true\n",
        );
        let error = load_yaml(&generation).unwrap_err().to_string();
        assert!(error.contains("g.yaml:8:5: "), "{error}");
        assert!(error.contains("did you mean `ignore_case`"), "{error}");
    }

    #[test]
    fn python_hooks_suggest_processor() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            "hellaswag.yaml",
            &format!("task: hellaswag\n{BASE}process_docs: !function utils.process_docs\n"),
        );
        let error = load_yaml(&path).unwrap_err().to_string();
        assert!(
            error.contains("hellaswag.yaml:12:1: `process_docs: !function utils.process_docs`"),
            "{error}"
        );
        assert!(error.contains("moebench_processor: hellaswag"), "{error}");
    }

    #[test]
    fn include_cycle_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "a.yaml", "include: b.yaml\ntask: a\n");
        let b = write(dir.path(), "b.yaml", "include: a.yaml\n");
        assert!(load_yaml(&b)
            .unwrap_err()
            .to_string()
            .contains("include cycle"));
    }
}
