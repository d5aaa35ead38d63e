//! Per-document scoring: lm-eval's `ConfigurableTask.process_results` (`lm_eval/api/task.py`)
//! on moebench-core's metric and filter implementations, with Python where the task says so:
//! a `process_results` hook replaces the built-in scoring, generation metrics without a port
//! (`metric: !function …`, Hugging Face style metric functions) and aggregation functions run
//! in Python, and so do filter steps without a port ([`pipeline`]). Code metrics (`pass_at_k`,
//! `pass_at_1`) run the filtered programs in moebench's sandbox ([`crate::code`]), and only
//! once the user allowed it.
//!
//! Keys are lm-eval's `"<metric>,<filter>"`; every pipeline of `filter_list` (the implicit
//! `none` = `take_first` without one) scores every document.
mod metric;
mod pipeline;

pub use crate::error::ScoreError;
pub use metric::{AggregationSpec, MetricSpec};

/// One document's contribution to a metric: a number (or a weighted pair), or an item that a
/// corpus-level or Python aggregation takes as it is.
#[derive(Debug, Clone, PartialEq)]
pub enum SampleScore {
    Score(DocScore),
    Item(Value),
}

impl SampleScore {
    /// The score as lm-eval logs it in a sample.
    pub fn to_json(&self) -> Value {
        metric::score_value(self)
    }
}

use crate::code::CodeExecutor;
use crate::config::{ConfigError, OutputType, TaskConfig};
use crate::hooks::{self, HookError, HookRef, PyResponse, PyTarget};
use crate::instance::{DocInstance, Expected};
use metric::{metric_specs, Source};
use moebench_core::metrics::{
    multiple_choice_items, score_loglikelihood, score_multiple_choice, score_rolling, DocScore,
    Gold, Loglikelihood, MetricName, MultipleChoice,
};
use pipeline::Pipeline;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

/// One model answer to one request of a document, in the order of
/// [`DocInstance::requests`].
#[derive(Debug, Clone, PartialEq)]
pub enum Response {
    /// A `loglikelihood` request: the summed log-probability of the continuation, whether it
    /// is the greedy continuation, and its token count (for `acc_token_norm`).
    Loglikelihood {
        loglikelihood: f64,
        is_greedy: bool,
        tokens: usize,
    },
    /// A `loglikelihood_rolling` request: the document's log-likelihood and token count (for
    /// `token_perplexity`).
    Rolling { loglikelihood: f64, tokens: usize },
    /// A `generate_until` request: the generated text.
    Generated(String),
}

impl Response {
    /// The response as lm-eval hands it to Python hooks.
    fn to_python(&self) -> PyResponse {
        match self {
            Self::Loglikelihood {
                loglikelihood,
                is_greedy,
                ..
            } => PyResponse::Loglikelihood(*loglikelihood, *is_greedy),
            Self::Rolling { loglikelihood, .. } => PyResponse::Rolling(*loglikelihood),
            Self::Generated(text) => PyResponse::Text(text.clone()),
        }
    }
}

/// The metrics and filter pipelines of a task.
#[derive(Debug, Clone)]
pub struct Scorer {
    output_type: OutputType,
    metrics: Vec<MetricSpec>,
    pipelines: Vec<Pipeline>,
    process_results: Option<HookRef>,
    /// lm-eval's `multiple_target`: the first document's target is a list.
    pub(crate) multiple_target: bool,
    /// Keys that a Python metric's dict result reported, → that metric's name: they take its
    /// aggregation and `higher_is_better` (`ConfigurableTask.process_results`).
    expanded: ExpandedKeys,
    /// Set once the user allowed code execution ([`crate::Task::allow_code_execution`]).
    code_executor: Option<Arc<CodeExecutor>>,
}

/// One document's scores, and each pipeline's filtered responses (generation tasks; lm-eval's
/// `filtered_resps`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScoredDoc {
    /// Keyed `"<metric>,<filter>"`.
    pub scores: BTreeMap<String, SampleScore>,
    /// `(filter name, filtered value)` in `filter_list` order: a bare string after
    /// `take_first`, else the list. Empty for the log-likelihood output types.
    pub filtered: Vec<(String, Value)>,
}

/// The keys Python metric functions reported besides their own name.
#[derive(Debug, Default)]
struct ExpandedKeys(std::sync::Mutex<BTreeMap<String, String>>);

impl Clone for ExpandedKeys {
    fn clone(&self) -> Self {
        Self(std::sync::Mutex::new(self.lock().clone()))
    }
}

impl ExpandedKeys {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, String>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Scorer {
    /// Reads `metric_list` (lm-eval's defaults without one), `filter_list` and
    /// `process_results`.
    pub(crate) fn new(config: &TaskConfig) -> Result<Self, ConfigError> {
        let metrics = metric_specs(config)?;
        let pipelines = match &config.filter_list {
            None => vec![Pipeline::none()],
            Some(list) => list
                .iter()
                .map(|pipeline| {
                    Pipeline::from_config(pipeline, config.output_type, config.moebench_processor)
                })
                .collect::<Result<_, _>>()?,
        };
        Ok(Self {
            output_type: config.output_type,
            metrics,
            pipelines,
            process_results: config.process_results.clone(),
            multiple_target: false,
            expanded: ExpandedKeys::default(),
            code_executor: None,
        })
    }

    pub(crate) fn set_code_executor(&mut self, executor: Arc<CodeExecutor>) {
        self.code_executor = Some(executor);
    }

    /// Whether code metrics may run programs (an executor was set).
    pub(crate) fn executes_code(&self) -> bool {
        self.code_executor.is_some()
    }

    /// The metrics, in `metric_list` order.
    pub fn metrics(&self) -> &[MetricSpec] {
        &self.metrics
    }

    /// The metric reported under `name`; a name only a `process_results` hook produces is
    /// aggregated by `mean`, as lm-eval does (`_compute_task_aggregations`).
    pub fn metric(&self, name: &str) -> MetricSpec {
        let listed = |name: &str| {
            self.metrics
                .iter()
                .find(|metric| metric.name == name)
                .cloned()
        };
        if let Some(spec) = listed(name) {
            return spec;
        }
        let code = self.metrics.iter().find(|metric| {
            matches!(&metric.source, Source::Code(code) if code.keys().iter().any(|key| key == name))
        });
        if let Some(spec) = code {
            return MetricSpec {
                name: name.to_owned(),
                ..spec.clone()
            };
        }
        let source = self.expanded.lock().get(name).cloned();
        match source.and_then(|source| listed(&source)) {
            Some(spec) => MetricSpec {
                name: name.to_owned(),
                ..spec
            },
            None => MetricSpec::unlisted(name),
        }
    }

    /// The filter names, in `filter_list` order (`["none"]` without one).
    pub fn filter_names(&self) -> Vec<&str> {
        self.pipelines.iter().map(Pipeline::name).collect()
    }

    /// Every Python callable scoring needs: hooks and registered lm-eval names without a port.
    pub fn python_targets(&self) -> Vec<PyTarget> {
        let mut targets: Vec<PyTarget> = self
            .process_results
            .iter()
            .cloned()
            .map(PyTarget::Hook)
            .collect();
        targets.extend(self.metrics.iter().flat_map(MetricSpec::python_targets));
        targets.extend(self.pipelines.iter().flat_map(Pipeline::python_targets));
        targets
    }

    fn uses(&self, name: MetricName) -> bool {
        self.metrics
            .iter()
            .any(|metric| matches!(metric.source, Source::Native(native) if native == name))
    }

    /// Whether multiple-choice documents also need the unconditional log-likelihood of each
    /// choice (`acc_mutual_info`).
    pub(crate) fn wants_unconditional(&self) -> bool {
        self.output_type == OutputType::MultipleChoice
            && self.process_results.is_none()
            && self.uses(MetricName::AccMutualInfo)
    }

    /// The per-document scores of one document given the `responses` to its requests.
    pub fn score(
        &self,
        instance: &DocInstance,
        responses: &[Response],
    ) -> Result<BTreeMap<String, SampleScore>, ScoreError> {
        Ok(self
            .score_all(&[(instance, responses)])?
            .pop()
            .unwrap_or_default())
    }

    /// The per-document scores of every document, keyed `"<metric>,<filter>"`. Python hooks
    /// are called once per pipeline for all documents.
    pub fn score_all(
        &self,
        docs: &[(&DocInstance, &[Response])],
    ) -> Result<Vec<BTreeMap<String, SampleScore>>, ScoreError> {
        Ok(self
            .score_documents(docs)?
            .into_iter()
            .map(|doc| doc.scores)
            .collect())
    }

    /// Each filter's output on a generation document's responses, in `filter_list` order,
    /// shaped as lm-eval's `filtered_resps` entry: a bare string after `take_first`, else
    /// the list. Runs no metric (and no generated code).
    pub fn filtered_responses(
        &self,
        instance: &DocInstance,
        responses: &[Response],
    ) -> Result<Vec<(String, Value)>, ScoreError> {
        let texts = vec![generated_texts(responses)?];
        self.pipelines
            .iter()
            .map(|pipeline| {
                let mut filtered = pipeline.apply(texts.clone(), &[&instance.doc])?;
                Ok((pipeline.name().to_owned(), filtered.remove(0)))
            })
            .collect()
    }

    /// [`Self::score_all`] with each document's filtered responses.
    pub fn score_documents(
        &self,
        docs: &[(&DocInstance, &[Response])],
    ) -> Result<Vec<ScoredDoc>, ScoreError> {
        for (instance, responses) in docs {
            if responses.len() != instance.requests.len() {
                return Err(ScoreError::ResponseCount {
                    got: responses.len(),
                    want: instance.requests.len(),
                });
            }
        }
        let mut out = vec![ScoredDoc::default(); docs.len()];
        let generated = if self.output_type == OutputType::GenerateUntil {
            Some(
                docs.iter()
                    .map(|(_, responses)| generated_texts(responses))
                    .collect::<Result<Vec<_>, _>>()?,
            )
        } else {
            None
        };
        let doc_values: Vec<&Value> = docs.iter().map(|(instance, _)| &instance.doc).collect();
        for pipeline in &self.pipelines {
            let filter = pipeline.name();
            let filtered = match &generated {
                Some(texts) => Some(pipeline.apply(texts.clone(), &doc_values)?),
                None => None,
            };
            let scores = match (&self.process_results, &filtered) {
                (Some(hook), _) => self.hook_scores(hook, docs, filtered.as_deref())?,
                (None, Some(filtered)) => self.generation_scores(docs, filtered)?,
                (None, None) => docs
                    .iter()
                    .map(|(instance, responses)| self.native_scores(instance, responses))
                    .collect::<Result<_, _>>()?,
            };
            for (doc_out, scores) in out.iter_mut().zip(scores) {
                for (name, score) in scores {
                    doc_out.scores.insert(format!("{name},{filter}"), score);
                }
            }
            for (doc_out, value) in out.iter_mut().zip(filtered.into_iter().flatten()) {
                doc_out.filtered.push((filter.to_owned(), value));
            }
        }
        Ok(out)
    }

    /// `process_results` hook: one call per document, all documents at once.
    fn hook_scores(
        &self,
        hook: &HookRef,
        docs: &[(&DocInstance, &[Response])],
        filtered: Option<&[Value]>,
    ) -> Result<Vec<Vec<(String, SampleScore)>>, ScoreError> {
        let target = PyTarget::Hook(hook.clone());
        let runtime = hooks::runtime_for(&target)?;
        let calls: Vec<(&Value, Vec<PyResponse>)> = docs
            .iter()
            .enumerate()
            .map(|(d, (instance, responses))| {
                let results = match filtered {
                    // lm-eval passes each request's filtered response: the string (or list)
                    // the pipeline produced.
                    Some(filtered) => vec![match &filtered[d] {
                        Value::String(text) => PyResponse::Text(text.clone()),
                        other => PyResponse::Text(other.to_string()),
                    }],
                    None => responses.iter().map(Response::to_python).collect(),
                };
                (&instance.doc, results)
            })
            .collect();
        let results = runtime.process_results(hook, &calls)?;
        if results.len() != docs.len() {
            return Err(HookError::call(
                &target,
                format!(
                    "returned {} results for {} documents",
                    results.len(),
                    docs.len()
                ),
            )
            .into());
        }
        results
            .into_iter()
            .map(|map| self.convert(&map, &target))
            .collect()
    }

    /// Python values (a `process_results` dict, a metric function's result) as scores of the
    /// metrics they name.
    fn convert(
        &self,
        map: &Map<String, Value>,
        target: &PyTarget,
    ) -> Result<Vec<(String, SampleScore)>, ScoreError> {
        map.iter()
            .map(|(name, value)| {
                let score = self
                    .metric(name)
                    .doc_score(value)
                    .map_err(|message| HookError::call(target, format!("`{name}`: {message}")))?;
                Ok((name.clone(), score))
            })
            .collect()
    }

    /// `generate_until` without `process_results`: each metric on the filtered response.
    fn generation_scores(
        &self,
        docs: &[(&DocInstance, &[Response])],
        filtered: &[Value],
    ) -> Result<Vec<Vec<(String, SampleScore)>>, ScoreError> {
        let mut out: Vec<Vec<(String, SampleScore)>> = vec![Vec::new(); docs.len()];
        let references: Vec<&[String]> = docs
            .iter()
            .map(|(instance, _)| match &instance.expected {
                Expected::References(references) => Ok(references.as_slice()),
                _ => Err(ScoreError::ResponseKind("reference")),
            })
            .collect::<Result<_, _>>()?;
        let predictions: Vec<&str> = filtered
            .iter()
            .map(|value| match value {
                Value::String(text) => text.as_str(),
                Value::Array(items) => items.first().and_then(Value::as_str).unwrap_or_default(),
                _ => "",
            })
            .collect();
        for metric in &self.metrics {
            match &metric.source {
                Source::ExactMatch(exact_match) => {
                    for (d, doc_out) in out.iter_mut().enumerate() {
                        let score = exact_match.score(predictions[d], references[d]);
                        doc_out.push((
                            metric.name.clone(),
                            SampleScore::Score(DocScore::Value(score)),
                        ));
                    }
                }
                Source::Native(_) if self.multiple_target => {
                    return Err(ScoreError::Invalid(format!(
                        "metric `{}` with several targets per document: lm-eval scores it as \
                         any(truthy), which moebench does not reproduce",
                        metric.name
                    )))
                }
                Source::Bypass => {
                    for doc_out in &mut out {
                        doc_out.push((metric.name.clone(), SampleScore::Item(Value::Null)));
                    }
                }
                Source::Native(_) => {
                    // Passthrough metrics (`bleu`, `chrf`, `ter`, `acc`, …): lm-eval's
                    // `fn(references=…)` raises `TypeError`, so the item is `[gold, result]`.
                    for (d, doc_out) in out.iter_mut().enumerate() {
                        let gold = references[d].first().cloned().unwrap_or_default();
                        let item = Value::from(vec![gold, predictions[d].to_owned()]);
                        doc_out.push((metric.name.clone(), SampleScore::Item(item)));
                    }
                }
                Source::Python(python) => {
                    let target = &python.function;
                    let runtime = hooks::runtime_for(target)?;
                    let calls: Vec<(Value, Value)> = references
                        .iter()
                        .zip(filtered)
                        .map(|(references, result)| {
                            let gold = if self.multiple_target {
                                Value::from(references.to_vec())
                            } else {
                                Value::from(references.first().cloned().unwrap_or_default())
                            };
                            (gold, result.clone())
                        })
                        .collect();
                    let results =
                        runtime.generation_metric(python, self.multiple_target, &calls)?;
                    if results.len() != docs.len() {
                        return Err(HookError::call(
                            target,
                            format!(
                                "returned {} results for {} documents",
                                results.len(),
                                docs.len()
                            ),
                        )
                        .into());
                    }
                    {
                        let mut expanded = self.expanded.lock();
                        for key in results.iter().flat_map(Map::keys) {
                            if *key != metric.name {
                                expanded.insert(key.clone(), metric.name.clone());
                            }
                        }
                    }
                    for (doc_out, map) in out.iter_mut().zip(results) {
                        doc_out.extend(self.convert(&map, target)?);
                    }
                }
                Source::Code(code) => {
                    let executor = self
                        .code_executor
                        .as_ref()
                        .ok_or(ScoreError::CodeExecutionNotAllowed)?;
                    for (d, doc_out) in out.iter_mut().enumerate() {
                        // lm-eval passes the one gold string (`doc_to_target`) and every
                        // filtered candidate.
                        let candidates = match &filtered[d] {
                            Value::Array(items) => items
                                .iter()
                                .map(|item| item.as_str().unwrap_or_default().to_owned())
                                .collect(),
                            Value::String(one) => vec![one.clone()],
                            _ => Vec::new(),
                        };
                        let reference = references[d].first().map(String::as_str);
                        let passed = executor.passes(&candidates, reference.unwrap_or_default())?;
                        doc_out.extend(
                            code.score(&passed).into_iter().map(|(key, value)| {
                                (key, SampleScore::Score(DocScore::Value(value)))
                            }),
                        );
                    }
                }
                Source::FromProcessResults | Source::Absent => {}
            }
        }
        Ok(out)
    }

    /// The built-in `process_results` of the log-likelihood output types.
    fn native_scores(
        &self,
        instance: &DocInstance,
        responses: &[Response],
    ) -> Result<Vec<(String, SampleScore)>, ScoreError> {
        let scores = match &instance.expected {
            Expected::Choice(gold) => self.multiple_choice(instance, responses, gold)?,
            Expected::Greedy => {
                let (loglikelihood, is_greedy, _) = as_loglikelihood(&responses[0])?;
                score_loglikelihood(Loglikelihood {
                    loglikelihood,
                    is_greedy,
                })
            }
            Expected::CountedText(text) => match responses[0] {
                Response::Rolling {
                    loglikelihood,
                    tokens,
                } => score_rolling(loglikelihood, text, tokens),
                _ => return Err(ScoreError::ResponseKind("rolling log-likelihood")),
            },
            Expected::References(_) => Vec::new(),
        };
        let mut out: Vec<(String, SampleScore)> = scores
            .into_iter()
            .filter(|(name, _)| self.uses(*name))
            .map(|(name, score)| (name.as_str().to_owned(), SampleScore::Score(score)))
            .collect();
        if let Expected::Choice(gold) = &instance.expected {
            let wants_items = [MetricName::F1, MetricName::Mcc, MetricName::BrierScore]
                .into_iter()
                .any(|name| self.uses(name));
            if wants_items {
                let (results, _) = self.choice_results(instance, responses)?;
                let doc = MultipleChoice {
                    choices: &instance.choices,
                    results: &results,
                    unconditional: None,
                    token_counts: None,
                };
                out.extend(
                    multiple_choice_items(&doc, gold)?
                        .into_iter()
                        .filter(|(name, _)| self.uses(*name))
                        .map(|(name, item)| (name.as_str().to_owned(), SampleScore::Item(item))),
                );
            }
        }
        Ok(out)
    }

    /// The conditional results of a multiple-choice document and the rest of its responses.
    fn choice_results(
        &self,
        instance: &DocInstance,
        responses: &[Response],
    ) -> Result<(Vec<Loglikelihood>, Vec<ParsedLoglikelihood>), ScoreError> {
        let parsed = responses
            .iter()
            .map(as_loglikelihood)
            .collect::<Result<Vec<_>, _>>()?;
        let results = parsed[..instance.choices.len().min(parsed.len())]
            .iter()
            .map(|&(loglikelihood, is_greedy, _)| Loglikelihood {
                loglikelihood,
                is_greedy,
            })
            .collect();
        Ok((results, parsed))
    }

    fn multiple_choice(
        &self,
        instance: &DocInstance,
        responses: &[Response],
        gold: &Gold,
    ) -> Result<Vec<(MetricName, DocScore)>, ScoreError> {
        let parsed = responses
            .iter()
            .map(as_loglikelihood)
            .collect::<Result<Vec<_>, _>>()?;
        let (conditional, unconditional) =
            parsed.split_at(instance.choices.len().min(parsed.len()));
        let results: Vec<Loglikelihood> = conditional
            .iter()
            .map(|&(loglikelihood, is_greedy, _)| Loglikelihood {
                loglikelihood,
                is_greedy,
            })
            .collect();
        let unconditional: Vec<f64> = unconditional.iter().map(|r| r.0).collect();
        let tokens: Vec<usize> = conditional.iter().map(|r| r.2).collect();
        let doc = MultipleChoice {
            choices: &instance.choices,
            results: &results,
            unconditional: self
                .wants_unconditional()
                .then_some(unconditional.as_slice()),
            token_counts: self
                .uses(MetricName::AccTokenNorm)
                .then_some(tokens.as_slice()),
        };
        Ok(score_multiple_choice(&doc, gold)?)
    }
}

/// The texts of a generation document's responses (one per `repeats` draw).
fn generated_texts(responses: &[Response]) -> Result<Vec<String>, ScoreError> {
    responses
        .iter()
        .map(|response| match response {
            Response::Generated(text) => Ok(text.clone()),
            _ => Err(ScoreError::ResponseKind("generated")),
        })
        .collect()
}

/// A log-likelihood response: `(loglikelihood, is_greedy, continuation tokens)`.
type ParsedLoglikelihood = (f64, bool, usize);

fn as_loglikelihood(response: &Response) -> Result<ParsedLoglikelihood, ScoreError> {
    match *response {
        Response::Loglikelihood {
            loglikelihood,
            is_greedy,
            tokens,
        } => Ok((loglikelihood, is_greedy, tokens)),
        _ => Err(ScoreError::ResponseKind("log-likelihood")),
    }
}
