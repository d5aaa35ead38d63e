//! Reading task and group YAML files.
//!
//! - `include:` (one path or a list, relative to the including file) is resolved recursively
//!   and merged shallowly, the including file's keys winning, exactly as
//!   `lm_eval/tasks/_yaml_loader.py` `load_yaml` does (`task_list` is not inherited).
//! - `!function module.fn` tags are recorded with the file and line that contain them (where
//!   lm-eval looks for `module.py`): before parsing, each tag is rewritten on its own line to
//!   a marker mapping that [`HookRef`](crate::hooks::HookRef) deserializes.
//! - Every file of the include chain is checked on its own, so that an unknown key is reported
//!   at `file:line:column` with the closest known key as a hint.
//! - A file with `class:` is a Python task, one with `group:` a group, else a task
//!   (`lm_eval/tasks/_index.py` `TaskIndex._kind_of`).
use crate::config::{ConfigError, GroupConfig, GroupSpec, TaskConfig, TaskSpec};
use crate::hooks::HOOK_MARKER;
use crate::scoring::Scorer;
use crate::TaskError;
use moebench_core::suggest::unknown_name_hint;
use regex::Regex;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_yaml::{Mapping, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

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
    load_with_overrides(path, &serde_json::Map::new())
}

/// Reads a YAML as a member of a group: `overrides` (the group's task keys, then the member
/// entry's own) replace the file's keys (`TaskFactory._load_full_config`).
pub(crate) fn load_with_overrides(
    path: &Path,
    overrides: &serde_json::Map<String, serde_json::Value>,
) -> Result<LoadedYaml, TaskError> {
    let mut merged = read_merged(path)?;
    let kind = merged.kind();
    for file in &merged.files {
        match kind {
            Kind::Group => file.validate::<GroupConfig>()?,
            Kind::Task => file.validate::<TaskConfig>()?,
            Kind::PythonTask => {}
        }
    }
    merged.apply_overrides(path, overrides)?;
    match kind {
        Kind::PythonTask => Err(merged.error_at_key(
            "class",
            "`class`: Python task classes are not supported (moebench builds requests itself)",
        )),
        Kind::Group => {
            let config: GroupConfig = from_mapping(&merged.mapping, path)?;
            config.check().map_err(|error| merged.error(error))?;
            Ok(LoadedYaml::Group(GroupSpec {
                path: path.to_owned(),
                config,
            }))
        }
        Kind::Task => {
            let config: TaskConfig = from_mapping(&merged.mapping, path)?;
            let data_dir = merged
                .origin
                .get("dataset_kwargs")
                .map_or(path, PathBuf::as_path)
                .parent()
                .map(Path::to_owned)
                .unwrap_or_default();
            task_spec(config, path, data_dir).map_err(|error| merged.error(error))
        }
    }
}

/// A task defined inline in a group's `task:` list; hooks in it resolve next to the group file.
pub(crate) fn inline_task(
    group_file: &Path,
    config: serde_json::Map<String, serde_json::Value>,
) -> Result<TaskSpec, TaskError> {
    let at = group_file.display().to_string();
    let config: TaskConfig = serde_json::from_value(serde_json::Value::Object(config))
        .map_err(|error| TaskError::config(&at, format!("inline task: {error}")))?;
    let data_dir = group_file.parent().map(Path::to_owned).unwrap_or_default();
    match task_spec(config, group_file, data_dir) {
        Ok(LoadedYaml::Task(spec)) => Ok(spec),
        Ok(LoadedYaml::Group(_)) => Err(TaskError::config(at, "inline task: not a task")),
        Err(error) => Err(TaskError::config(at, format!("inline task: {error}"))),
    }
}

fn task_spec(
    config: TaskConfig,
    path: &Path,
    data_dir: PathBuf,
) -> Result<LoadedYaml, ConfigError> {
    config.check()?;
    Scorer::new(&config)?;
    Ok(LoadedYaml::Task(TaskSpec {
        name: config.task.clone().unwrap_or_default(),
        path: path.to_owned(),
        config,
        data_dir,
    }))
}

fn from_mapping<T: DeserializeOwned>(mapping: &Mapping, path: &Path) -> Result<T, TaskError> {
    serde_yaml::from_value(Value::Mapping(mapping.clone()))
        .map_err(|error| TaskError::config(path.display().to_string(), error.to_string()))
}

/// What a YAML file defines (`TaskIndex._kind_of`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    PythonTask,
    Group,
    Task,
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
    pub(crate) fn kind(&self) -> Kind {
        if self.mapping.contains_key("class") {
            Kind::PythonTask
        } else if self.mapping.contains_key("group") {
            Kind::Group
        } else {
            Kind::Task
        }
    }

    /// The string value of a top-level key.
    pub(crate) fn string(&self, key: &str) -> Option<&str> {
        self.mapping.get(key).and_then(Value::as_str)
    }

    /// The `tag` names of the file (one or a list).
    pub(crate) fn tags(&self) -> Vec<String> {
        match self.mapping.get("tag") {
            Some(Value::String(one)) => vec![one.clone()],
            Some(Value::Sequence(many)) => many
                .iter()
                .filter_map(|t| t.as_str().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        }
    }

    fn apply_overrides(
        &mut self,
        path: &Path,
        overrides: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<(), TaskError> {
        for (key, value) in overrides {
            let value = serde_yaml::to_value(value).map_err(|error| {
                TaskError::config(path.display().to_string(), error.to_string())
            })?;
            self.mapping.insert(Value::String(key.clone()), value);
        }
        Ok(())
    }

    /// An error about the merged configuration, located at the line that writes a `name`
    /// quoted in the message (the last one written in the files), else at the top file.
    fn error(&self, error: ConfigError) -> TaskError {
        let message = error.0;
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

    fn error_at_key(&self, key: &str, message: &str) -> TaskError {
        self.files
            .iter()
            .find(|file| nested_key_position(&file.text, key).is_some())
            .unwrap_or(&self.files[0])
            .error_at_key(key, message)
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

/// One YAML file as text (with its `!function` tags rewritten), kept to report locations.
struct SourceFile {
    path: PathBuf,
    text: String,
}

/// `!function module.fn`, the name optionally quoted.
fn function_tag() -> &'static Regex {
    static TAG: OnceLock<Regex> = OnceLock::new();
    TAG.get_or_init(|| {
        Regex::new(r#"!function[ \t]+(?:'([^'\n]*)'|"([^"\n]*)"|([^\s,\]\}#]+))"#)
            .expect("valid regex")
    })
}

/// Rewrites each `!function name` tag of `text` to `{"__moebench_hook__": [name, file, line]}`
/// on the same line, so that line numbers (and the columns before the tag) stay as written.
fn rewrite_function_tags(text: &str, path: &Path) -> String {
    let file = serde_json::to_string(&path.display().to_string()).unwrap_or_default();
    text.lines()
        .enumerate()
        .map(|(i, line)| {
            function_tag().replace_all(line, |caps: &regex::Captures| {
                let name = caps
                    .get(1)
                    .or_else(|| caps.get(2))
                    .or_else(|| caps.get(3))
                    .map_or("", |m| m.as_str());
                let name = serde_json::to_string(name).unwrap_or_default();
                format!("{{\"{HOOK_MARKER}\": [{name}, {file}, {}]}}", i + 1)
            })
        })
        .collect::<Vec<_>>()
        .join("\n")
}

impl SourceFile {
    fn read(path: &Path) -> Result<Self, TaskError> {
        let text = std::fs::read_to_string(path).map_err(TaskError::io(path))?;
        let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
        Ok(Self {
            path: path.to_owned(),
            text: rewrite_function_tags(&text, &absolute),
        })
    }

    fn mapping(&self) -> Result<Mapping, TaskError> {
        match self.value()? {
            Value::Mapping(mapping) => Ok(mapping),
            _ => Err(TaskError::config(
                self.path.display().to_string(),
                "expected a mapping of keys to values at the top level",
            )),
        }
    }

    /// The document. A key written twice in one mapping keeps its last value, as PyYAML
    /// (which lm-eval uses) does; serde_yaml would reject it.
    fn value(&self) -> Result<Value, TaskError> {
        match serde_yaml::from_str::<Value>(&self.text) {
            Err(error) if is_duplicate_key(&error) => serde_yaml::from_str::<LastWins>(&self.text)
                .map(|value| value.0)
                .map_err(|error| self.serde_error(&error)),
            other => other.map_err(|error| self.serde_error(&error)),
        }
    }

    /// Checks keys and types against `T`, for locations.
    fn validate<T: DeserializeOwned>(&self) -> Result<(), TaskError> {
        match serde_yaml::from_str::<T>(&self.text) {
            Err(error) if is_duplicate_key(&error) => serde_yaml::from_value::<T>(self.value()?)
                .map(drop)
                .map_err(|error| {
                    TaskError::config(self.path.display().to_string(), error.to_string())
                }),
            other => other.map(drop).map_err(|error| self.serde_error(&error)),
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

fn is_duplicate_key(error: &serde_yaml::Error) -> bool {
    let message = error.to_string();
    message.contains("duplicate entry with key") || message.contains("duplicate field")
}

/// A YAML value whose mappings keep the last of duplicate keys (PyYAML's behaviour).
struct LastWins(Value);

impl<'de> serde::Deserialize<'de> for LastWins {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(LastWinsVisitor).map(LastWins)
    }
}

struct LastWinsVisitor;

impl<'de> serde::de::Visitor<'de> for LastWinsVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a YAML value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        LastWins::deserialize(d).map(|v| v.0)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<LastWins>()? {
            items.push(item.0);
        }
        Ok(Value::Sequence(items))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut mapping = Mapping::new();
        while let Some((key, value)) = map.next_entry::<LastWins, LastWins>()? {
            mapping.insert(key.0, value.0);
        }
        Ok(Value::Mapping(mapping))
    }

    fn visit_enum<A: serde::de::EnumAccess<'de>>(self, data: A) -> Result<Value, A::Error> {
        use serde::de::VariantAccess;
        let (tag, variant) = data.variant::<String>()?;
        let value = variant.newtype_variant::<LastWins>()?.0;
        Ok(Value::Tagged(Box::new(serde_yaml::value::TaggedValue {
            tag: serde_yaml::value::Tag::new(tag),
            value,
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::FieldSpec;
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
            &format!("task: m\n{BASE}metric_list:\n  - metric: acc_nrom\n"),
        );
        let error = load_yaml(&nested).unwrap_err().to_string();
        assert!(error.contains("m.yaml"), "{error}");
        assert!(
            error.contains(
                "metric `acc_nrom` is not one lm-eval registers (did you mean `acc_norm`?)"
            ),
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

    /// A hook in an included file is recorded with that file and line (lm-eval looks for its
    /// module next to the file that contains the tag).
    #[test]
    fn function_tags_keep_the_file_and_line_that_contain_them() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("base")).unwrap();
        write(
            &dir.path().join("base"),
            "common.yaml",
            &format!("{BASE}process_docs: !function utils.process_docs\n"),
        );
        let path = write(
            dir.path(),
            "hellaswag.yaml",
            "include: base/common.yaml\ntask: hellaswag\ndoc_to_text: !function 'my.mod.text'\n",
        );
        let LoadedYaml::Task(spec) = load_yaml(&path).unwrap() else {
            panic!("not a task")
        };
        let docs = spec.config.process_docs.unwrap();
        assert_eq!(docs.qualified, "utils.process_docs");
        assert_eq!(docs.line, 11);
        assert!(docs.yaml.ends_with("base/common.yaml"), "{docs:?}");
        assert_eq!(docs.module_file(), dir.path().join("base/utils.py"));
        let Some(FieldSpec::Hook(text)) = spec.config.doc_to_text else {
            panic!("doc_to_text is not a hook")
        };
        assert_eq!(
            (text.module(), text.function(), text.line),
            ("my.mod", "text", 3)
        );
        assert!(text.yaml.ends_with("hellaswag.yaml"));
    }

    /// PyYAML keeps the last of duplicate keys (kmmlu's CoT filters write `regex_pattern`
    /// twice).
    #[test]
    fn duplicate_keys_keep_the_last_value() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            "d.yaml",
            &format!(
                "task: d\n{BASE}target_delimiter: \"a\"\ntarget_delimiter: \"b\"\n\
                 filter_list:\n  - name: f\n    filter:\n      - function: take_first_k\n\
                 \x20       k: 1\n        k: 2\n"
            ),
        );
        let LoadedYaml::Task(spec) = load_yaml(&path).unwrap() else {
            panic!("not a task")
        };
        assert_eq!(spec.config.target_delimiter, "b");
        let step = &spec.config.filter_list.unwrap()[0].filter[0];
        assert_eq!(step.args["k"], 2);
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
