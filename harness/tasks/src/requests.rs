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
//! - requests (`construct_requests`): see [`Request`].
use crate::config::{OutputType, Sampler};
use crate::hashing::{python_str, SampleHashes};
use crate::task::{Formatting, Task};
use crate::TaskError;
use moebench_core::metrics::Gold;
use moebench_core::PyRandom;
use serde_json::Value;

/// lm-eval's default `fewshot_random_seed` (`lm_eval/defaults.py` `DEFAULT_OTHER_SEED`).
pub const DEFAULT_FEWSHOT_SEED: u64 = 1234;

/// One call to the model.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// `loglikelihood(context, continuation)`. Multiple choice: one per choice,
    /// `continuation = target_delimiter + choice` (multiple input: one per context with the
    /// shared target), then for `acc_mutual_info` one `("", target_delimiter + choice)` per
    /// choice. Loglikelihood tasks: the target itself as continuation.
    Loglikelihood {
        context: String,
        continuation: String,
    },
    /// `loglikelihood_rolling(text)` of the whole target, without context.
    Rolling { text: String },
    /// `generate_until(context, until, max_gen_toks)`: greedy, or sampled with `sampling`.
    /// A task with `repeats: n` asks for n of these per document.
    Generate {
        context: String,
        until: Vec<String>,
        max_gen_toks: usize,
        sampling: Option<Sampling>,
    },
}

/// `do_sample: true` settings of a generation request (transformers' warpers, see
/// [`crate::config::GenerationKwargs`]), and which of its document's `repeats` draws it is:
/// the model side seeds each draw differently and reproducibly.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampling {
    pub temperature: f64,
    pub top_p: f64,
    /// `None`: no top-k filtering.
    pub top_k: Option<usize>,
    pub draw: usize,
}

impl Request {
    /// `arguments[0]`, the string lm-eval hashes as `prompt_hash`.
    pub fn first_argument(&self) -> &str {
        match self {
            Self::Loglikelihood { context, .. } | Self::Generate { context, .. } => context,
            Self::Rolling { text } => text,
        }
    }
}

/// What a document's responses are compared with.
#[derive(Debug, Clone, PartialEq)]
pub enum Expected {
    /// `multiple_choice`: the gold index or indices into [`DocInstance::choices`].
    Choice(Gold),
    /// `generate_until`: the reference strings.
    References(Vec<String>),
    /// `loglikelihood_rolling`: the text whose words and UTF-8 bytes the perplexities count
    /// (the target, or what the processor says, e.g. WikiText's original page).
    CountedText(String),
    /// `loglikelihood`: only the greediness of the continuation is scored.
    Greedy,
}

/// One evaluated document with its requests.
#[derive(Debug, Clone, PartialEq)]
pub struct DocInstance {
    pub doc_id: usize,
    pub doc: Value,
    pub requests: Vec<Request>,
    /// `doc_to_target(doc)`, as lm-eval logs it as the sample's `target`.
    pub target: Value,
    pub expected: Expected,
    /// `doc_to_choice(doc)` for multiple-choice tasks (contexts for multiple input), else empty.
    pub choices: Vec<String>,
    pub hashes: SampleHashes,
}

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
        if task.multiple_input {
            let contexts = self
                .choices(&task.eval, doc, "doc_to_choice")?
                .unwrap_or_default();
            return Ok(contexts
                .into_iter()
                .map(|context| format!("{prefix}{context}"))
                .collect());
        }
        let text = self.text(&task.eval, doc, "doc_to_text")?;
        prefix.push_str(as_str(&text).map_err(|m| self.error("doc_to_text", m))?);
        Ok(vec![prefix])
    }

    /// `resolve_field(doc, description)`: a column of the document, else a template.
    fn description(&self, doc: &Value) -> Result<String, TaskError> {
        let description = &self.task.spec().config.description;
        if description.is_empty() {
            return Ok(String::new());
        }
        if let Some(value) = doc.get(description) {
            return Ok(python_str(value));
        }
        self.task
            .context
            .templates
            .render(description, doc)
            .map_err(|m| self.error("description", m))
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
        let mut text = as_str(&question)
            .map_err(|m| self.error(&text_field, m))?
            .to_owned();
        if answer.is_null() || answer.as_str() == Some("") {
            return Ok(text);
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
        text.push_str(&fewshot.target_delimiter);
        text.push_str(&answer_text);
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
