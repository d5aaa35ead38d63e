//! A task ready to build requests: its YAML, the documents of its evaluation split (and of
//! its few-shot pool when shots are asked for), and lm-eval's per-task state computed from
//! the first document (`ConfigurableTask.__init__`: `features`, `multiple_input`,
//! `multiple_target`).
use crate::config::{FewshotSamples, FieldSpec, TaskSpec};
use crate::data::{load_split, SplitData};
use crate::fields::{Field, FieldContext, HookValues};
use crate::hashing::{file_sha256, sha256_hex};
use crate::hooks::{self, HookRef, PyTarget};
use crate::processors::Processor;
use crate::scoring::Scorer;
use crate::template::Templates;
use crate::TaskError;
use moebench_hub::HubConfig;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

/// The fields used to format one kind of document (evaluated, or few-shot example).
#[derive(Debug)]
pub(crate) struct Formatting {
    pub(crate) text: Field,
    pub(crate) target: Field,
    pub(crate) choice: Option<Field>,
    pub(crate) target_delimiter: String,
    pub(crate) fewshot_delimiter: String,
    /// `gen_prefix`: a column or template the answer starts with.
    pub(crate) gen_prefix: Option<String>,
}

#[derive(Debug)]
pub struct Task {
    spec: TaskSpec,
    eval_docs: Vec<Value>,
    fewshot_docs: Vec<Value>,
    num_fewshot: usize,
    pub(crate) context: FieldContext,
    pub(crate) eval: Formatting,
    pub(crate) fewshot: Formatting,
    pub(crate) multiple_input: bool,
    pub(crate) multiple_target: bool,
    pub(crate) scorer: Scorer,
    content_hash: String,
}

/// Where a task's splits come from: files (the YAML's data source), or the dataset a
/// `custom_dataset` hook built.
enum Splits<'a> {
    Files(&'a TaskSpec, &'a HubConfig),
    Custom(BTreeMap<String, Vec<Value>>),
}

impl Splits<'_> {
    fn load(&self, split: &str, at: &str) -> Result<SplitData, TaskError> {
        match self {
            Self::Files(spec, hub) => load_split(&spec.data_source(), hub, split),
            Self::Custom(splits) => {
                let docs = splits.get(split).cloned().ok_or_else(|| {
                    TaskError::config(
                        at,
                        format!(
                            "`custom_dataset` returned no split `{split}` (it has: {})",
                            splits.keys().cloned().collect::<Vec<_>>().join(", ")
                        ),
                    )
                })?;
                Ok(SplitData {
                    docs,
                    files: Vec::new(),
                })
            }
        }
    }
}

impl Task {
    /// Loads the data of `spec` for an evaluation with `num_fewshot` shots. As lm-eval's
    /// `--num_fewshot` (`lm_eval/evaluator.py` `simple_evaluate`): `None` keeps the YAML's
    /// `num_fewshot` (0 without one), and a YAML that says `num_fewshot: 0` ignores the override.
    pub fn load(
        spec: TaskSpec,
        hub: &HubConfig,
        num_fewshot: Option<usize>,
    ) -> Result<Self, TaskError> {
        let config = &spec.config;
        let num_fewshot = match config.num_fewshot {
            Some(0) => 0,
            default => num_fewshot.or(default).unwrap_or(0),
        };
        let at = || spec.path.display().to_string();
        let eval_split = config
            .eval_split()
            .ok_or_else(|| TaskError::config(at(), "no evaluation split"))?
            .to_owned();
        let splits = match &config.custom_dataset {
            Some(hook) => Splits::Custom(custom_dataset(&spec, hook)?),
            None => Splits::Files(&spec, hub),
        };
        let process_docs = config.process_docs.as_ref();
        let eval = process(&spec, splits.load(&eval_split, &at())?, process_docs)?;
        if eval.docs.is_empty() {
            return Err(TaskError::config(
                at(),
                format!("split `{eval_split}` has no documents"),
            ));
        }
        let mut files = eval.files.clone();
        let fewshot_docs = if num_fewshot == 0 {
            Vec::new()
        } else {
            let (docs, more_files) = fewshot_pool(&spec, &splits, &eval_split, &eval)?;
            files.extend(more_files);
            docs
        };
        if fewshot_docs.len() < num_fewshot {
            return Err(TaskError::config(
                at(),
                format!(
                    "{num_fewshot} shots asked for, but the few-shot pool has {} documents",
                    fewshot_docs.len()
                ),
            ));
        }
        let features: BTreeSet<String> = eval
            .docs
            .iter()
            .filter_map(Value::as_object)
            .flat_map(|doc| doc.keys().cloned())
            .collect();
        let (eval_formatting, fewshot_formatting) = formattings(&spec);
        let templates = Templates::new(template_sources(&spec))
            .map_err(|error| TaskError::config(at(), error.to_string()))?;
        let context = FieldContext {
            templates,
            features,
            has_choices: eval_formatting.choice.is_some(),
            hooks: HookValues::default(),
        };
        for (formatting, docs) in [
            (&eval_formatting, &eval.docs),
            (&fewshot_formatting, &fewshot_docs),
        ] {
            let fields = [
                Some(&formatting.text),
                Some(&formatting.target),
                formatting.choice.as_ref(),
            ];
            for hook in fields.into_iter().flatten().filter_map(Field::hook) {
                if !docs.is_empty() {
                    context
                        .hooks
                        .prefill(hook, docs)
                        .map_err(|message| TaskError::config(hook.at(), message))?;
                }
            }
        }
        let scorer = Scorer::new(config).map_err(|error| TaskError::config(at(), error.0))?;
        let content_hash = content_hash(&spec, num_fewshot, &files)?;
        let mut task = Self {
            eval_docs: eval.docs,
            fewshot_docs,
            num_fewshot,
            context,
            eval: eval_formatting,
            fewshot: fewshot_formatting,
            multiple_input: false,
            multiple_target: false,
            scorer,
            content_hash,
            spec,
        };
        task.inspect_first_doc()?;
        Ok(task)
    }

    /// `ConfigurableTask.__init__` "Test One Doc": `doc_to_text` giving an index means
    /// multiple inputs; `doc_to_target` giving a list means multiple targets.
    fn inspect_first_doc(&mut self) -> Result<(), TaskError> {
        let first = &self.eval_docs[0];
        let text = self
            .eval
            .text
            .text(&self.context, first)
            .map_err(|m| self.field_error("doc_to_text", 0, m))?;
        let target = self
            .eval
            .target
            .target(&self.context, first)
            .map_err(|m| self.field_error("doc_to_target", 0, m))?;
        self.multiple_input = self.eval.choice.is_some() && text.is_i64();
        self.multiple_target = target.is_array();
        self.scorer.multiple_target = self.multiple_target;
        Ok(())
    }

    pub(crate) fn field_error(&self, field: &str, doc: usize, message: String) -> TaskError {
        TaskError::Field {
            task: self.spec.name.clone(),
            file: self.spec.path.clone(),
            field: field.to_owned(),
            doc,
            message,
        }
    }

    pub fn name(&self) -> &str {
        &self.spec.name
    }

    pub fn spec(&self) -> &TaskSpec {
        &self.spec
    }

    /// The documents evaluated, in order (`doc_id` = index).
    pub fn eval_docs(&self) -> &[Value] {
        &self.eval_docs
    }

    /// The pool few-shot examples are drawn from (empty for zero-shot).
    pub fn fewshot_docs(&self) -> &[Value] {
        &self.fewshot_docs
    }

    pub fn num_fewshot(&self) -> usize {
        self.num_fewshot
    }

    /// Whether the first document's target is a list (lm-eval's `multiple_target`).
    pub fn multiple_target(&self) -> bool {
        self.multiple_target
    }

    /// The metrics and filters of the task.
    pub fn scorer(&self) -> &Scorer {
        &self.scorer
    }

    /// Whether the task executes model output (lm-eval's `unsafe_code: true`), which needs
    /// the user's confirmation and [`Self::allow_code_execution`].
    pub fn executes_code(&self) -> bool {
        self.spec.config.unsafe_code
    }

    /// Whether [`Self::allow_code_execution`] was called.
    pub fn code_execution_allowed(&self) -> bool {
        self.scorer.executes_code()
    }

    /// Lets the task's code metrics run generated programs with `executor` (the user
    /// confirmed; without this they refuse to score).
    pub fn allow_code_execution(&mut self, executor: std::sync::Arc<crate::code::CodeExecutor>) {
        self.scorer.set_code_executor(executor);
    }

    /// sha256 of everything the requests depend on: the resolved configuration, the shot
    /// count, the content of every data file read and of every hook module. Use it as a
    /// cache key.
    pub fn content_hash(&self) -> &str {
        &self.content_hash
    }
}

/// `custom_dataset(**metadata, **dataset_kwargs)` (`ConfigurableTask.download`).
fn custom_dataset(
    spec: &TaskSpec,
    hook: &HookRef,
) -> Result<BTreeMap<String, Vec<Value>>, TaskError> {
    let config = &spec.config;
    let mut kwargs: Map<String, Value> = config.metadata.clone().unwrap_or_default();
    if let Some(dataset_kwargs) = &config.dataset_kwargs {
        if let Value::Object(more) = serde_json::to_value(dataset_kwargs).unwrap_or_default() {
            kwargs.extend(more.into_iter().filter(|(_, value)| !value.is_null()));
        }
    }
    let target = PyTarget::Hook(hook.clone());
    Ok(hooks::runtime_for(&target)?.custom_dataset(hook, &kwargs)?)
}

/// The few-shot pool (`ConfigurableTask.fewshot_docs`): the few-shot split (with
/// `fewshot_config.process_docs`, inherited from the task's), else `fewshot_config.samples`,
/// else the training, validation or test split; then `fewshot_indices` for the default
/// sampler (`ContextSampler.fewshot_docs`; `FirstNSampler` ignores them).
fn fewshot_pool(
    spec: &TaskSpec,
    splits: &Splits<'_>,
    eval_split: &str,
    eval: &SplitData,
) -> Result<(Vec<Value>, Vec<PathBuf>), TaskError> {
    let config = &spec.config;
    let at = || spec.path.display().to_string();
    let fewshot = config.fewshot_config.clone().unwrap_or_default();
    let (mut docs, files) = if let Some(samples) = config.fewshot_samples() {
        let docs = match samples {
            FewshotSamples::List(list) => list.iter().cloned().map(Value::Object).collect(),
            FewshotSamples::Hook(hook) => {
                let target = PyTarget::Hook(hook.clone());
                let value = hooks::runtime_for(&target)?.call(hook, &Map::new())?;
                match value {
                    Value::Array(items) => items,
                    other => {
                        return Err(hooks::HookError::call(
                            &target,
                            format!("`fewshot_config.samples` must return a list, got {other}"),
                        )
                        .into())
                    }
                }
            }
        };
        (docs, Vec::new())
    } else if let Some(samples) = config
        .moebench_processor
        .filter(|_| config.fewshot_cfg_split().is_none())
        .and_then(|processor| processor.fewshot_samples())
    {
        // A ported `samples` hook (MBPP's `list_fewshot_samples`).
        (samples, Vec::new())
    } else {
        let split = config.fewshot_source_split().ok_or_else(|| {
            TaskError::config(
                at(),
                "few-shot examples asked for, but no split to draw them from",
            )
        })?;
        let process_docs = match config.fewshot_cfg_split() {
            Some(_) => fewshot
                .process_docs
                .as_ref()
                .or(config.process_docs.as_ref()),
            None => config.process_docs.as_ref(),
        };
        if split == eval_split && process_docs == config.process_docs.as_ref() {
            (eval.docs.clone(), Vec::new())
        } else {
            let data = process(spec, splits.load(split, &at())?, process_docs)?;
            (data.docs, data.files)
        }
    };
    if let (Some(indices), crate::config::Sampler::Default) =
        (&fewshot.fewshot_indices, config.sampler())
    {
        docs = indices
            .iter()
            .map(|&i| {
                docs.get(i).cloned().ok_or_else(|| {
                    TaskError::config(
                        at(),
                        format!(
                            "`fewshot_indices` has {i}, but the pool has {} documents",
                            docs.len()
                        ),
                    )
                })
            })
            .collect::<Result<_, _>>()?;
    }
    Ok((docs, files))
}

/// Applies the task's `moebench_processor`, or its `process_docs` hook (the whole split in
/// one call), to the documents of a split.
fn process(
    spec: &TaskSpec,
    data: SplitData,
    hook: Option<&HookRef>,
) -> Result<SplitData, TaskError> {
    if let Some(hook) = hook {
        let target = PyTarget::Hook(hook.clone());
        let alternative = Processor::suggest(&format!(
            "{} {} {}",
            spec.path.display(),
            spec.name,
            hook.qualified
        ))
        .map(Processor::native_alternative);
        let runtime =
            hooks::runtime_for(&target).map_err(|e| e.with_alternative(alternative.clone()))?;
        let docs = runtime
            .process_docs(hook, data.docs)
            .map_err(|e| e.with_alternative(alternative))?;
        return Ok(SplitData {
            docs,
            files: data.files,
        });
    }
    let Some(processor) = spec.config.moebench_processor else {
        return Ok(data);
    };
    let file = data.files.first().cloned().unwrap_or_default();
    let docs = data
        .docs
        .into_iter()
        .enumerate()
        .map(|(i, doc)| {
            processor.process_doc(doc).map_err(|message| {
                TaskError::data(
                    &file,
                    format!("document {i}: {}: {message}", processor.name()),
                )
            })
        })
        .collect::<Result<_, _>>()?;
    Ok(SplitData {
        docs,
        files: data.files,
    })
}

/// The fields of evaluated documents, and of few-shot examples (`fewshot_config` overrides,
/// `FewshotConfig.from_dict` inheriting the rest).
fn formattings(spec: &TaskSpec) -> (Formatting, Formatting) {
    let config = &spec.config;
    let field =
        |name: &'static str, value: &Option<FieldSpec>| match (config.moebench_processor, value) {
            (_, Some(value)) => Some(Field::Spec(value.clone())),
            (Some(processor), None) if processor.provided_fields().contains(&name) => {
                Some(Field::Processor(processor, name))
            }
            _ => None,
        };
    let eval = Formatting {
        text: field("doc_to_text", &config.doc_to_text)
            .unwrap_or(Field::Spec(FieldSpec::Text(String::new()))),
        target: field("doc_to_target", &config.doc_to_target)
            .unwrap_or(Field::Spec(FieldSpec::Text(String::new()))),
        choice: field("doc_to_choice", &config.doc_to_choice),
        target_delimiter: config.target_delimiter.clone(),
        fewshot_delimiter: config.fewshot_delimiter.clone(),
        gen_prefix: config.gen_prefix.clone(),
    };
    let overrides = config.fewshot_config.clone().unwrap_or_default();
    let fewshot = Formatting {
        text: overrides
            .doc_to_text
            .map_or_else(|| eval.text.clone(), Field::Spec),
        target: overrides
            .doc_to_target
            .map_or_else(|| eval.target.clone(), Field::Spec),
        choice: overrides
            .doc_to_choice
            .map(Field::Spec)
            .or_else(|| eval.choice.clone()),
        target_delimiter: overrides
            .target_delimiter
            .unwrap_or_else(|| eval.target_delimiter.clone()),
        fewshot_delimiter: overrides
            .fewshot_delimiter
            .unwrap_or_else(|| eval.fewshot_delimiter.clone()),
        gen_prefix: config.fewshot_gen_prefix().map(str::to_owned),
    };
    (eval, fewshot)
}

/// Every string of the configuration that may be rendered as a template.
pub(crate) fn template_sources(spec: &TaskSpec) -> BTreeSet<String> {
    let config = &spec.config;
    let overrides = config.fewshot_config.clone().unwrap_or_default();
    let mut sources: BTreeSet<String> = [
        &config.doc_to_text,
        &config.doc_to_target,
        &config.doc_to_choice,
        &overrides.doc_to_text,
        &overrides.doc_to_target,
        &overrides.doc_to_choice,
    ]
    .into_iter()
    .filter_map(|spec| match spec {
        Some(FieldSpec::Text(text)) => Some(text.clone()),
        _ => None,
    })
    .collect();
    sources.insert(config.description.clone());
    sources.extend(config.gen_prefix.clone());
    sources.extend(overrides.gen_prefix);
    sources
}

fn content_hash(
    spec: &TaskSpec,
    num_fewshot: usize,
    files: &[PathBuf],
) -> Result<String, TaskError> {
    let config = serde_json::to_string(&spec.config).unwrap_or_default();
    let mut text = format!("moebench-tasks content v1\n{config}\nnum_fewshot={num_fewshot}\n");
    for file in files {
        text.push_str(&file_sha256(file)?);
        text.push('\n');
    }
    let modules: BTreeSet<PathBuf> = spec
        .config
        .hooks()
        .into_iter()
        .map(|(_, hook)| hook.module_file())
        .filter(|module| module.is_file())
        .collect();
    for module in modules {
        text.push_str(&format!("hook module {}\n", file_sha256(&module)?));
    }
    Ok(sha256_hex(text.as_bytes()))
}
