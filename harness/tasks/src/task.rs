//! A task ready to build requests: its YAML, the documents of its evaluation split (and of
//! its few-shot split when shots are asked for), and lm-eval's per-task state computed from
//! the first document (`ConfigurableTask.__init__`: `features`, `multiple_input`,
//! `multiple_target`).
use crate::config::{FieldSpec, TaskSpec};
use crate::data::{load_split, SplitData};
use crate::fields::{Field, FieldContext};
use crate::hashing::{file_sha256, sha256_hex};
use crate::scoring::Scorer;
use crate::template::Templates;
use crate::TaskError;
use moebench_hub::HubConfig;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::PathBuf;

/// The fields used to format one kind of document (evaluated, or few-shot example).
#[derive(Debug)]
pub(crate) struct Formatting {
    pub(crate) text: Field,
    pub(crate) target: Field,
    pub(crate) choice: Option<Field>,
    pub(crate) target_delimiter: String,
    pub(crate) fewshot_delimiter: String,
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
        let eval = process(&spec, load_split(&spec, hub, &eval_split)?)?;
        if eval.docs.is_empty() {
            return Err(TaskError::config(
                at(),
                format!("split `{eval_split}` has no documents"),
            ));
        }
        let mut files = eval.files.clone();
        let samples = config.moebench_processor.and_then(|p| p.fewshot_samples());
        let fewshot_docs = match (config.fewshot_source_split(), samples) {
            _ if num_fewshot == 0 => Vec::new(),
            (_, Some(samples)) => samples,
            (Some(split), None) if split == eval_split => eval.docs.clone(),
            (Some(split), None) => {
                let data = process(&spec, load_split(&spec, hub, split)?)?;
                files.extend(data.files);
                data.docs
            }
            (None, None) => {
                return Err(TaskError::config(
                    at(),
                    "few-shot examples asked for, but no split to draw them from",
                ))
            }
        };
        if fewshot_docs.len() < num_fewshot {
            return Err(TaskError::config(
                at(),
                format!(
                    "{num_fewshot} shots asked for, but the few-shot split has {} documents",
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
        let templates = Templates::new(template_sources(&spec)).map_err(|(source, message)| {
            TaskError::config(at(), format!("template {source:?}: {message}"))
        })?;
        let context = FieldContext {
            templates,
            features,
            has_choices: eval_formatting.choice.is_some(),
        };
        let scorer = Scorer::new(config).map_err(|message| TaskError::config(at(), message))?;
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
    /// count and the content of every data file read. Use it as a cache key.
    pub fn content_hash(&self) -> &str {
        &self.content_hash
    }
}

/// Applies the task's `moebench_processor` to every document of a split.
fn process(spec: &TaskSpec, data: SplitData) -> Result<SplitData, TaskError> {
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
    };
    (eval, fewshot)
}

/// Every string of the configuration that may be rendered as a template.
fn template_sources(spec: &TaskSpec) -> BTreeSet<String> {
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
    Ok(sha256_hex(text.as_bytes()))
}
