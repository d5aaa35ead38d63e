//! Requests per document, exactly as lm-eval 0.4.13 builds them (plain text, no chat
//! template):
//!
//! - context (`ConfigurableTask.fewshot_context`, `build_qa_turn`): the description, then for
//!   each shot `doc_to_text + target_delimiter + answer + fewshot_delimiter`, then
//!   `doc_to_text(doc)`; the answer is `choices[target]` for an index, the first target of a
//!   list, else the target; a shot with an empty or null target contributes its text alone;
//! - shots (`lm_eval/api/samplers.py`): one `random.Random(fewshot_seed)` for the whole task,
//!   drawing for each document in turn. `ContextSampler` draws `sample(pool, n)`, or — when
//!   the few-shot split *name* equals `test_split` (both may be unset) — `sample(pool, n + 1)`
//!   minus the documents equal to the evaluated one, cut to `n` (resampling the pool without
//!   them if fewer remain). `FirstNSampler` takes the first `n` (minus the evaluated document
//!   in that same case);
//! - `gen_prefix` (`build_qa_turn`): the evaluated document's text is followed by the target
//!   delimiter (when neither side has whitespace at the join) and the prefix; a shot's answer
//!   is the prefix and the answer joined by a space (`maybe_delimit`);
//! - requests (`construct_requests`): see [`Request`].
use crate::config::{OutputType, Sampler, Sampling};
use crate::hashing::{python_str, SampleHashes};
pub use crate::instance::{DocInstance, Expected, Request};
use crate::task::{Formatting, Task};
use crate::TaskError;
use moebench_core::metrics::Gold;
use moebench_core::{pystr, PyRandom};
use serde_json::Value;

/// lm-eval's default `fewshot_random_seed` (`lm_eval/defaults.py` `DEFAULT_OTHER_SEED`).
pub const DEFAULT_FEWSHOT_SEED: u64 = 1234;

/// Builds the instances of the first `limit` documents (all without a limit), drawing shots
/// with `random.Random(fewshot_seed)`.
pub fn build_instances(
    task: &Task,
    fewshot_seed: u64,
    limit: Option<usize>,
) -> Result<Vec<DocInstance>, TaskError> {
    let mut rng = PyRandom::new(fewshot_seed);
    let docs = task.eval_docs();
    let count = limit.map_or(docs.len(), |limit| limit.min(docs.len()));
    (0..count)
        .map(|doc_id| Builder { task, doc_id }.instance(&mut rng))
        .collect()
}

/// Builds one document's instance, naming the document in errors.
struct Builder<'a> {
    task: &'a Task,
    doc_id: usize,
}

impl Builder<'_> {
    fn error(&self, field: &str, message: String) -> TaskError {
        self.task.field_error(field, self.doc_id, message)
    }

    fn text(&self, formatting: &Formatting, doc: &Value, field: &str) -> Result<Value, TaskError> {
        formatting
            .text
            .text(&self.task.context, doc)
            .map_err(|m| self.error(field, m))
    }

    fn target(
        &self,
        formatting: &Formatting,
        doc: &Value,
        field: &str,
    ) -> Result<Value, TaskError> {
        formatting
            .target
            .target(&self.task.context, doc)
            .map_err(|m| self.error(field, m))
    }

    fn choices(
        &self,
        formatting: &Formatting,
        doc: &Value,
        field: &str,
    ) -> Result<Option<Vec<String>>, TaskError> {
        formatting
            .choice
            .as_ref()
            .map(|choice| {
                choice
                    .choices(&self.task.context, doc)
                    .map_err(|m| self.error(field, m))
            })
            .transpose()
    }

    fn instance(&self, rng: &mut PyRandom) -> Result<DocInstance, TaskError> {
        let task = self.task;
        let doc = &task.eval_docs()[self.doc_id];
        let eval = &task.eval;
        let target = self.target(eval, doc, "doc_to_target")?;
        let choices = self
            .choices(eval, doc, "doc_to_choice")?
            .unwrap_or_default();
        let output_type = task.spec().config.output_type;
        let (requests, expected) = match output_type {
            OutputType::LoglikelihoodRolling => {
                let text = as_str(&target).map_err(|m| self.error("doc_to_target", m))?;
                let counted = match task
                    .spec()
                    .config
                    .moebench_processor
                    .and_then(|p| p.counted_text(doc))
                {
                    Some(counted) => counted
                        .map_err(|m| self.error("counted text", m))?
                        .to_owned(),
                    None => text.to_owned(),
                };
                (
                    vec![Request::Rolling {
                        text: text.to_owned(),
                    }],
                    Expected::CountedText(counted),
                )
            }
            OutputType::Loglikelihood => {
                let context = self.context(doc, rng)?.remove(0);
                let continuation = as_str(&target)
                    .map_err(|m| self.error("doc_to_target", m))?
                    .to_owned();
                (
                    vec![Request::Loglikelihood {
                        context,
                        continuation,
                    }],
                    Expected::Greedy,
                )
            }
            OutputType::GenerateUntil => {
                let context = self.context(doc, rng)?.remove(0);
                let config = &task.spec().config;
                let (until, max_gen_toks) = config.generation();
                let sampling = config.sampling();
                let references = self.references(&target, &choices)?;
                let requests = (0..config.repeats)
                    .map(|draw| Request::Generate {
                        context: context.clone(),
                        until: until.clone(),
                        max_gen_toks,
                        sampling: sampling.map(|s| Sampling { draw, ..s }),
                    })
                    .collect();
                (requests, Expected::References(references))
            }
            OutputType::MultipleChoice => self.multiple_choice(doc, &target, &choices, rng)?,
        };
        let hashes = SampleHashes::new(doc, requests[0].first_argument(), &python_str(&target));
        let choices = if output_type == OutputType::MultipleChoice {
            choices
        } else {
            Vec::new()
        };
        Ok(DocInstance {
            doc_id: self.doc_id,
            doc: doc.clone(),
            requests,
            target,
            expected,
            choices,
            hashes,
        })
    }

    fn multiple_choice(
        &self,
        doc: &Value,
        target: &Value,
        choices: &[String],
        rng: &mut PyRandom,
    ) -> Result<(Vec<Request>, Expected), TaskError> {
        let delimiter = &self.task.eval.target_delimiter;
        let contexts = self.context(doc, rng)?;
        let mut requests: Vec<Request> = if self.task.multiple_input {
            let continuation = format!("{delimiter}{}", python_str(target));
            contexts
                .into_iter()
                .map(|context| Request::Loglikelihood {
                    context,
                    continuation: continuation.clone(),
                })
                .collect()
        } else {
            choices
                .iter()
                .map(|choice| Request::Loglikelihood {
                    context: contexts[0].clone(),
                    continuation: format!("{delimiter}{choice}"),
                })
                .collect()
        };
        if self.task.scorer.wants_unconditional() {
            requests.extend(choices.iter().map(|choice| Request::Loglikelihood {
                context: String::new(),
                continuation: format!("{delimiter}{choice}"),
            }));
        }
        let gold = if self.task.multiple_input {
            self.text(&self.task.eval, doc, "doc_to_text")?
        } else {
            target.clone()
        };
        let gold = match gold {
            Value::Number(n) if n.is_i64() => Gold::Index(n.as_i64().unwrap_or_default()),
            Value::String(text) => Gold::from_choice_text(choices, &text),
            Value::Array(items) => Gold::Indices(
                items
                    .iter()
                    .map(|item| {
                        item.as_i64()
                            .ok_or_else(|| format!("gold {item} is not an index"))
                    })
                    .collect::<Result<_, _>>()
                    .map_err(|m| self.error("doc_to_target", m))?,
            ),
            other => {
                return Err(self.error(
                    "doc_to_target",
                    format!("gold {other} is neither an index nor a choice"),
                ))
            }
        };
        Ok((requests, Expected::Choice(gold)))
    }

    /// `process_results` for generation: `choices[target]` with `doc_to_choice`,
    /// `list(target)` for multiple targets, else `str(target)`.
    fn references(&self, target: &Value, choices: &[String]) -> Result<Vec<String>, TaskError> {
        if self.task.eval.choice.is_some() {
            let index = target.as_u64().and_then(|i| choices.get(i as usize));
            return index.map(|choice| vec![choice.clone()]).ok_or_else(|| {
                self.error(
                    "doc_to_target",
                    format!("{target} is not an index into {choices:?}"),
                )
            });
        }
        Ok(match target {
            Value::Array(items) if self.task.multiple_target => {
                items.iter().map(python_str).collect()
            }
            // `list(gold)` of a string: its characters.
            Value::String(text) if self.task.multiple_target => {
                text.chars().map(String::from).collect()
            }
            other => vec![python_str(other)],
        })
    }

    /// The context (one per choice for multiple input): description, shots, then the
    /// document's text.
    fn context(&self, doc: &Value, rng: &mut PyRandom) -> Result<Vec<String>, TaskError> {
        let task = self.task;
        let mut prefix = self.description(doc)?;
        for (i, shot) in self.shots(doc, rng)?.iter().enumerate() {
            prefix.push_str(&self.shot_text(shot, i)?);
        }
        let gen_prefix = self.gen_prefix(&task.eval, doc, "gen_prefix")?;
        if task.multiple_input {
            let contexts = self
                .choices(&task.eval, doc, "doc_to_choice")?
                .unwrap_or_default();
            return Ok(contexts
                .into_iter()
                .map(|context| {
                    format!(
                        "{prefix}{}",
                        question_turn(&context, gen_prefix.as_deref(), "")
                    )
                })
                .collect());
        }
        let text = self.text(&task.eval, doc, "doc_to_text")?;
        let question = as_str(&text).map_err(|m| self.error("doc_to_text", m))?;
        prefix.push_str(&question_turn(
            question,
            gen_prefix.as_deref(),
            &task.eval.target_delimiter,
        ));
        Ok(vec![prefix])
    }

    /// `resolve_field(doc, description)`: a column of the document, else a template.
    fn description(&self, doc: &Value) -> Result<String, TaskError> {
        let description = &self.task.spec().config.description;
        if description.is_empty() {
            return Ok(String::new());
        }
        self.task
            .context
            .column_or_template(description, doc)
            .map_err(|m| self.error("description", m))
    }

    /// The document's `gen_prefix` (a column or a template), `None` when unset or empty.
    fn gen_prefix(
        &self,
        formatting: &Formatting,
        doc: &Value,
        field: &str,
    ) -> Result<Option<String>, TaskError> {
        let Some(gen_prefix) = &formatting.gen_prefix else {
            return Ok(None);
        };
        let rendered = self
            .task
            .context
            .column_or_template(gen_prefix, doc)
            .map_err(|m| self.error(field, m))?;
        Ok(Some(rendered).filter(|p| !p.is_empty()))
    }

    /// `build_qa_turn` for shot `i`: question, target delimiter, answer, few-shot delimiter.
    fn shot_text(&self, shot: &Value, i: usize) -> Result<String, TaskError> {
        let fewshot = &self.task.fewshot;
        let (text_field, target_field) = (
            format!("doc_to_text of few-shot example {i}"),
            format!("doc_to_target of few-shot example {i}"),
        );
        let choice_field = format!("doc_to_choice of few-shot example {i}");
        let mut question = self.text(fewshot, shot, &text_field)?;
        let mut choices = self.choices(fewshot, shot, &choice_field)?;
        let answer = self.target(fewshot, shot, &target_field)?;
        if self.task.multiple_input {
            let contexts = choices.take().unwrap_or_default();
            let context = index_into(&question, &contexts);
            question = Value::String(context.ok_or_else(|| {
                let message = format!("{question} is not an index into {contexts:?}");
                self.error(&text_field, message)
            })?);
        }
        let question = as_str(&question).map_err(|m| self.error(&text_field, m))?;
        let gen_prefix = self.gen_prefix(
            fewshot,
            shot,
            &format!("gen_prefix of few-shot example {i}"),
        )?;
        if answer.is_null() || answer.as_str() == Some("") {
            return Ok(question_turn(
                question,
                gen_prefix.as_deref(),
                &fewshot.target_delimiter,
            ));
        }
        let answer_text = match (&answer, &choices) {
            (Value::Number(_), Some(choices)) if !choices.is_empty() => {
                index_into(&answer, choices).ok_or_else(|| {
                    let message = format!("{answer} is not an index into {choices:?}");
                    self.error(&target_field, message)
                })?
            }
            (Value::Array(items), _) => as_str(items.first().unwrap_or(&Value::Null))
                .map_err(|m| self.error(&target_field, m))?
                .to_owned(),
            _ => as_str(&answer)
                .map_err(|m| self.error(&target_field, m))?
                .to_owned(),
        };
        let mut text = question.to_owned();
        match gen_prefix.as_deref() {
            None => text.push_str(&fewshot.target_delimiter),
            Some(prefix) if requires_delimiter(question, prefix) => {
                text.push_str(&fewshot.target_delimiter)
            }
            Some(_) => {}
        }
        text.push_str(&maybe_delimit(gen_prefix.as_deref(), &answer_text));
        text.push_str(&fewshot.fewshot_delimiter);
        Ok(text)
    }

    /// The shots for `doc` (`ContextSampler.sample` / `FirstNSampler.sample`).
    fn shots(&self, doc: &Value, rng: &mut PyRandom) -> Result<Vec<Value>, TaskError> {
        let task = self.task;
        let n = task.num_fewshot();
        if n == 0 {
            return Ok(Vec::new());
        }
        let config = &task.spec().config;
        let exclude = (config.fewshot_cfg_split() == config.test_split.as_deref()).then_some(doc);
        let pool = task.fewshot_docs();
        let without = |docs: &[Value]| -> Vec<Value> {
            docs.iter()
                .filter(|d| Some(*d) != exclude)
                .cloned()
                .collect()
        };
        let sample = |rng: &mut PyRandom, pool: &[Value], k: usize| {
            rng.sample(pool, k)
                .map_err(|error| self.error("few-shot sampling", error.to_string()))
        };
        match config.sampler() {
            Sampler::FirstN => {
                let pool = without(pool);
                if pool.len() < n {
                    return Err(self.error(
                        "few-shot sampling",
                        format!("{n} shots asked for, {} available", pool.len()),
                    ));
                }
                Ok(pool[..n].to_vec())
            }
            Sampler::Default if exclude.is_none() => sample(rng, pool, n),
            Sampler::Default => {
                let mut shots = without(&sample(rng, pool, n + 1)?);
                shots.truncate(n);
                if shots.len() < n {
                    shots = sample(rng, &without(pool), n)?;
                }
                Ok(shots)
            }
        }
    }
}

/// `build_qa_turn` without an answer: the question, then with a `gen_prefix` the target
/// delimiter (when `requires_delimiter`) and the prefix.
fn question_turn(question: &str, gen_prefix: Option<&str>, target_delimiter: &str) -> String {
    match gen_prefix {
        None => question.to_owned(),
        Some(prefix) if requires_delimiter(question, prefix) => {
            format!("{question}{target_delimiter}{prefix}")
        }
        Some(prefix) => format!("{question}{prefix}"),
    }
}

/// `lm_eval/api/utils.py` `requires_delimiter`: neither side has whitespace at the join.
fn requires_delimiter(prefix: &str, suffix: &str) -> bool {
    match (prefix.chars().next_back(), suffix.chars().next()) {
        (Some(last), Some(first)) => !(pystr::is_space(last) || pystr::is_space(first)),
        (None, _) => false,
        (Some(_), None) => true,
    }
}

/// `lm_eval/api/utils.py` `maybe_delimit(prefix, suffix, " ")`.
fn maybe_delimit(prefix: Option<&str>, suffix: &str) -> String {
    match prefix.filter(|p| !p.is_empty()) {
        None => suffix.to_owned(),
        Some(prefix) if suffix.is_empty() => prefix.to_owned(),
        Some(prefix) if requires_delimiter(prefix, suffix) => format!("{prefix} {suffix}"),
        Some(prefix) => format!("{prefix}{suffix}"),
    }
}

/// `items[index]` with Python's negative indices.
fn index_into(index: &Value, items: &[String]) -> Option<String> {
    let index = index.as_i64()?;
    let index = if index < 0 {
        index + items.len() as i64
    } else {
        index
    };
    usize::try_from(index)
        .ok()
        .and_then(|i| items.get(i))
        .cloned()
}

fn as_str(value: &Value) -> Result<&str, String> {
    value
        .as_str()
        .ok_or_else(|| format!("expected a string, got {value}"))
}
