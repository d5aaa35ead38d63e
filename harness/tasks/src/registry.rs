//! Task lookup by name, as lm-eval's `TaskManager` does it (`lm_eval/tasks/_index.py`): every
//! `*.yaml` under the task directories is indexed by its `task` or `group` name, and every
//! `tag` of a task names the list of tasks carrying it. A group's `task:` entries are task,
//! group or tag names, resolved recursively.
use crate::config::yaml::read_merged;
use crate::config::{load_yaml, GroupSpec, LoadedYaml, TaskSpec};
use crate::TaskError;
use serde_yaml::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq)]
enum Entry {
    Yaml(PathBuf),
    Tag(Vec<String>),
}

/// Names → YAML files (or tag members) under some task directories.
#[derive(Debug, Clone, Default)]
pub struct TaskIndex {
    entries: BTreeMap<String, Entry>,
}

/// A resolved name: a task, or a group/tag with its members.
#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::large_enum_variant)] // a few per run: boxing would only burden callers
pub enum TaskNode {
    Task(TaskSpec),
    /// A group YAML; its `aggregate_metric_list` says how to combine the children.
    Group {
        spec: GroupSpec,
        children: Vec<TaskNode>,
    },
    /// A tag: a plain list of tasks, not aggregated.
    Tag {
        name: String,
        children: Vec<TaskNode>,
    },
}

impl TaskNode {
    /// The task, group or tag name.
    pub fn name(&self) -> &str {
        match self {
            Self::Task(task) => &task.name,
            Self::Group { spec, .. } => &spec.config.group,
            Self::Tag { name, .. } => name,
        }
    }

    /// Every task below this node, depth first.
    pub fn tasks(&self) -> Vec<&TaskSpec> {
        match self {
            Self::Task(task) => vec![task],
            Self::Group { children, .. } | Self::Tag { children, .. } => {
                children.iter().flat_map(TaskNode::tasks).collect()
            }
        }
    }
}

impl TaskIndex {
    /// Indexes every `*.yaml` below `dirs` (sorted by path). A name defined in a later
    /// directory replaces an earlier one; defined twice in one directory, it is an error.
    pub fn scan<P: AsRef<Path>>(dirs: &[P]) -> Result<Self, TaskError> {
        let mut index = Self::default();
        for dir in dirs {
            let mut here: BTreeMap<String, (PathBuf, Entry)> = BTreeMap::new();
            let mut tags: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for path in yaml_files(dir.as_ref())? {
                let mapping = read_merged(&path)?.mapping;
                let name_of =
                    |key: &str| mapping.get(key).and_then(Value::as_str).map(str::to_owned);
                let Some(name) = name_of("group").or_else(|| name_of("task")) else {
                    continue;
                };
                if let Some((first, _)) = here.get(&name) {
                    return Err(TaskError::config(
                        path.display().to_string(),
                        format!("`{name}` is already defined in {}", first.display()),
                    ));
                }
                if !mapping.contains_key("group") {
                    for tag in tag_names(mapping.get("tag")) {
                        tags.entry(tag).or_default().push(name.clone());
                    }
                }
                here.insert(name, (path.clone(), Entry::Yaml(path)));
            }
            index
                .entries
                .extend(here.into_iter().map(|(name, (_, entry))| (name, entry)));
            for (tag, members) in tags {
                index.entries.entry(tag).or_insert(Entry::Tag(members));
            }
        }
        Ok(index)
    }

    /// Every indexed task, group and tag name.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// Resolves a task, group or tag name, or the path of a YAML file.
    pub fn resolve(&self, name_or_path: &str) -> Result<TaskNode, TaskError> {
        self.resolve_inner(name_or_path, &mut Vec::new())
    }

    fn resolve_inner(&self, name: &str, stack: &mut Vec<String>) -> Result<TaskNode, TaskError> {
        if stack.iter().any(|seen| seen == name) {
            return Err(TaskError::config(
                name,
                format!("group cycle: {} → {name}", stack.join(" → ")),
            ));
        }
        let entry = match self.entries.get(name) {
            Some(entry) => entry.clone(),
            None if Path::new(name).is_file() => Entry::Yaml(PathBuf::from(name)),
            None => {
                let hint = crate::config::closest_name(name, self.names())
                    .map(|best| format!(" (did you mean `{best}`?)"))
                    .unwrap_or_default();
                return Err(TaskError::config(
                    name,
                    format!("no task, group or tag named `{name}`{hint}"),
                ));
            }
        };
        stack.push(name.to_owned());
        let node = match entry {
            Entry::Tag(members) => TaskNode::Tag {
                name: name.to_owned(),
                children: self.resolve_all(&members, stack)?,
            },
            Entry::Yaml(path) => match load_yaml(&path)? {
                LoadedYaml::Task(task) => TaskNode::Task(task),
                LoadedYaml::Group(spec) => {
                    let children = self.resolve_all(&spec.config.task, stack)?;
                    TaskNode::Group { spec, children }
                }
            },
        };
        stack.pop();
        Ok(node)
    }

    fn resolve_all(
        &self,
        names: &[String],
        stack: &mut Vec<String>,
    ) -> Result<Vec<TaskNode>, TaskError> {
        names
            .iter()
            .map(|name| self.resolve_inner(name, stack))
            .collect()
    }
}

fn tag_names(tag: Option<&Value>) -> Vec<String> {
    match tag {
        Some(Value::String(one)) => vec![one.clone()],
        Some(Value::Sequence(many)) => many
            .iter()
            .filter_map(|t| t.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

/// `*.yaml` files below `dir`, sorted by path.
fn yaml_files(dir: &Path) -> Result<Vec<PathBuf>, TaskError> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).map_err(TaskError::io(&dir))? {
            let path = entry.map_err(TaskError::io(&dir))?.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml") {
                found.push(path);
            }
        }
    }
    found.sort();
    Ok(found)
}
