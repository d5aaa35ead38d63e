//! Task lookup by name, as lm-eval's `TaskManager` does it (`lm_eval/tasks/_index.py`,
//! `lm_eval/tasks/_factory.py`): every `*.yaml` under the task directories is indexed by its
//! `task` or `group` name, and every `tag` of a task names the tasks carrying it. A file that
//! cannot be read is skipped with its reason (lm-eval skips it silently), and a name defined
//! twice in one directory keeps its first file.
//!
//! A group's `task:` entries are resolved recursively: names of tasks, groups and tags, and
//! inline dicts (a task or group by name with overrides, or a new task or subgroup, named
//! `group::name`). A group's keys that are not group fields are task overrides for every
//! member, and a member's own keys override those (`TaskFactory._build_group_members`).
use crate::config::{GroupConfig, GroupMember, GroupSpec, TaskSpec};
use crate::yaml::{inline_task, load_with_overrides, read_merged, Kind, LoadedYaml};
use crate::TaskError;
use serde_json::{Map, Value};
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
    skipped: Vec<(PathBuf, String)>,
}

/// A resolved name: a task, or a group/tag with its members.
#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::large_enum_variant)] // a few per run: boxing would only burden callers
pub enum TaskNode {
    Task(TaskSpec),
    /// A group; its `aggregate_metric_list` says how to combine its leaf tasks.
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

    /// Every task below this node, depth first (lm-eval aggregates a group over these,
    /// `Group.get_all_tasks`).
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
    /// directory replaces an earlier one. Files that cannot be read, and later definitions of
    /// a name within one directory, are skipped and listed by [`TaskIndex::skipped`].
    pub fn scan<P: AsRef<Path>>(dirs: &[P]) -> Result<Self, TaskError> {
        let mut index = Self::default();
        for dir in dirs {
            let mut here: BTreeMap<String, PathBuf> = BTreeMap::new();
            let mut tags: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for path in yaml_files(dir.as_ref())? {
                let merged = match read_merged(&path) {
                    Ok(merged) => merged,
                    Err(error) => {
                        index.skipped.push((path, error.to_string()));
                        continue;
                    }
                };
                let kind = merged.kind();
                let name = match kind {
                    Kind::Group => merged.string("group"),
                    Kind::Task | Kind::PythonTask => merged.string("task"),
                };
                let Some(name) = name.map(str::to_owned) else {
                    continue;
                };
                if let Some(first) = here.get(&name) {
                    let reason = format!("`{name}` is already defined in {}", first.display());
                    index.skipped.push((path, reason));
                    continue;
                }
                if kind != Kind::Group {
                    for tag in merged.tags() {
                        tags.entry(tag).or_default().push(name.clone());
                    }
                }
                here.insert(name, path);
            }
            index.entries.extend(
                here.into_iter()
                    .map(|(name, path)| (name, Entry::Yaml(path))),
            );
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

    /// The YAML file a task or group name is defined in (`None` for tags and unknown names).
    pub fn path(&self, name: &str) -> Option<&Path> {
        match self.entries.get(name)? {
            Entry::Yaml(path) => Some(path),
            Entry::Tag(_) => None,
        }
    }

    /// The members of a tag.
    pub fn tag_members(&self, name: &str) -> Option<&[String]> {
        match self.entries.get(name)? {
            Entry::Tag(members) => Some(members),
            Entry::Yaml(_) => None,
        }
    }

    /// The files the scan skipped, with why.
    pub fn skipped(&self) -> &[(PathBuf, String)] {
        &self.skipped
    }

    /// Resolves a task, group or tag name, or the path of a YAML file.
    pub fn resolve(&self, name_or_path: &str) -> Result<TaskNode, TaskError> {
        self.resolve_with(name_or_path, &Map::new(), &mut Vec::new())
    }

    fn resolve_with(
        &self,
        name: &str,
        overrides: &Map<String, Value>,
        stack: &mut Vec<String>,
    ) -> Result<TaskNode, TaskError> {
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
            Entry::Tag(members) => {
                let mut members = members;
                members.sort();
                TaskNode::Tag {
                    name: name.to_owned(),
                    children: members
                        .iter()
                        .map(|member| self.resolve_with(member, overrides, stack))
                        .collect::<Result<_, _>>()?,
                }
            }
            Entry::Yaml(path) => match load_with_overrides(&path, overrides)? {
                LoadedYaml::Task(task) => TaskNode::Task(task),
                LoadedYaml::Group(spec) => self.group(spec, overrides, stack)?,
            },
        };
        stack.pop();
        Ok(node)
    }

    /// A group's node: its members, with the group's task overrides under the caller's.
    fn group(
        &self,
        spec: GroupSpec,
        overrides: &Map<String, Value>,
        stack: &mut Vec<String>,
    ) -> Result<TaskNode, TaskError> {
        let mut merged = spec.config.overrides.clone();
        merged.extend(overrides.clone());
        let group_name = spec.config.group.clone();
        let children = spec
            .config
            .task
            .iter()
            .map(|member| self.member(&spec.path, &group_name, member, &merged, stack))
            .collect::<Result<_, _>>()?;
        Ok(TaskNode::Group { spec, children })
    }

    fn member(
        &self,
        group_file: &Path,
        group_name: &str,
        member: &GroupMember,
        overrides: &Map<String, Value>,
        stack: &mut Vec<String>,
    ) -> Result<TaskNode, TaskError> {
        let map = match member {
            GroupMember::Name(name) => return self.resolve_with(name, overrides, stack),
            GroupMember::Inline(map) => map,
        };
        if let Some(name) = map.get("group").and_then(Value::as_str) {
            let mut item = map.clone();
            item.remove("group");
            if self.entries.contains_key(name) {
                let mut merged = overrides.clone();
                merged.extend(item);
                return self.resolve_with(name, &merged, stack);
            }
            let mut config = map.clone();
            config.insert("group".into(), Value::from(format!("{group_name}::{name}")));
            let config: GroupConfig =
                serde_json::from_value(Value::Object(config)).map_err(|error| {
                    TaskError::config(
                        group_file.display().to_string(),
                        format!("inline group `{name}`: {error}"),
                    )
                })?;
            config
                .check()
                .map_err(|error| TaskError::config(group_file.display().to_string(), error.0))?;
            let spec = GroupSpec {
                path: group_file.to_owned(),
                config,
            };
            return self.group(spec, overrides, stack);
        }
        let base = map.get("task").and_then(Value::as_str).unwrap_or_default();
        if map.contains_key("include") && !self.entries.contains_key(base) {
            return Err(TaskError::config(
                group_file.display().to_string(),
                format!(
                    "inline task `{base}`: `include` inside a group's `task` list is not resolved \
                     (lm-eval 0.4.13 passes it to TaskConfig, which rejects it); define the task \
                     in its own YAML file"
                ),
            ));
        }
        let mut item = overrides.clone();
        item.extend(map.clone());
        if self.entries.contains_key(base) {
            // lm-eval pops `task` (the name) and applies the other keys; left in, it would
            // replace the member list of a group named this way (`{task: mmlu, num_fewshot: 5}`).
            item.remove("task");
            return self.resolve_with(base, &item, stack);
        }
        item.insert("task".into(), Value::from(format!("{group_name}::{base}")));
        Ok(TaskNode::Task(inline_task(group_file, item)?))
    }
}

/// `*.yaml` files below `dir`, sorted by path (`__pycache__` and `.ipynb_checkpoints` left
/// out, as lm-eval does).
fn yaml_files(dir: &Path) -> Result<Vec<PathBuf>, TaskError> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).map_err(TaskError::io(&dir))? {
            let path = entry.map_err(TaskError::io(&dir))?.path();
            let ignored = path
                .file_name()
                .is_some_and(|name| name == "__pycache__" || name == ".ipynb_checkpoints");
            if path.is_dir() && !ignored {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml") {
                found.push(path);
            }
        }
    }
    found.sort();
    Ok(found)
}
