//! Per-document scoring: lm-eval's `ConfigurableTask.process_results` (`lm_eval/api/task.py`)
//! on moebench-core's metric and filter implementations.
//!
//! Keys are lm-eval's `"<metric>,<filter>"`. Only `generate_until` tasks have real filter
//! pipelines (`filter_list`); the others report under the implicit `none` filter.
use crate::code::{CodeExecutor, CodeMetric};
use crate::config::{MetricConfig, OutputType, TaskConfig};
use crate::processors::Processor;
use crate::requests::{DocInstance, Expected};
use moebench_core::metrics::{
    score_loglikelihood, score_multiple_choice, score_rolling, Aggregation, DocScore, ExactMatch,
    Loglikelihood, MetricName, MultipleChoice,
};
use moebench_core::{Filter, FilterPipeline};
use serde_json::Value;
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

/// A metric the task reports, with its aggregation over documents.
#[derive(Debug, Clone)]
pub struct MetricSpec {
    pub name: MetricName,
    pub aggregation: Aggregation,
    pub higher_is_better: bool,
    exact_match: Option<ExactMatch>,
}

/// A metric key the task reports (`pass@1` for `pass_at_k` with `k: [1]`, else the metric's
/// name) with its aggregation.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportedMetric {
    pub name: String,
    pub aggregation: Aggregation,
    pub higher_is_better: bool,
}

/// A `filter_list` pipeline: optionally first a `custom` step whose function the task's
/// `moebench_processor` ports (it sees the document), then lm-eval's built-in filters.
#[derive(Debug, Clone)]
struct Pipeline {
    custom: Option<Processor>,
    filters: FilterPipeline,
    /// Ends with `take_first`, which leaves lm-eval a bare string instead of a list.
    unwraps: bool,
}

impl Pipeline {
    fn apply(&self, doc: &Value, responses: &[String]) -> Result<Vec<String>, String> {
        let responses = match self.custom {
            Some(processor) => processor.custom_filter(doc, responses.to_vec())?,
            None => responses.to_vec(),
        };
        self.filters
            .apply(&responses)
            .map_err(|error| error.to_string())
    }
}

/// The metrics and filter pipelines of a task.
#[derive(Debug, Clone)]
pub struct Scorer {
    output_type: OutputType,
    metrics: Vec<MetricSpec>,
    /// Metrics that execute the generated programs (HumanEval, MBPP).
    code_metrics: Vec<CodeMetric>,
    /// Set once the user allowed code execution ([`crate::Task::allow_code_execution`]).
    code_executor: Option<Arc<CodeExecutor>>,
    pipelines: Vec<Pipeline>,
}

/// Metrics each output type computes (lm-eval's, plus the moebench extensions
/// `acc_token_norm` and `token_perplexity`); the first ones are lm-eval's defaults
/// (`lm_eval/api/registry.py` `DEFAULT_METRIC_REGISTRY`).
fn supported(output_type: OutputType) -> (&'static [MetricName], usize) {
    use MetricName::*;
    match output_type {
        OutputType::Loglikelihood => (&[Perplexity, Acc], 2),
        OutputType::LoglikelihoodRolling => (
            &[WordPerplexity, BytePerplexity, BitsPerByte, TokenPerplexity],
            3,
        ),
        OutputType::MultipleChoice => (
            &[
                Acc,
                AccNorm,
                AccBytes,
                AccMutualInfo,
                ExactMatch,
                AccTokenNorm,
            ],
            2,
        ),
        OutputType::GenerateUntil => (&[ExactMatch], 1),
    }
}

impl Scorer {
    /// Reads `metric_list` (lm-eval's defaults without one) and `filter_list`.
    pub(crate) fn new(config: &TaskConfig) -> Result<Self, String> {
        let (supported, defaults) = supported(config.output_type);
        let configured = config.metric_list.clone().unwrap_or_else(|| {
            supported[..defaults]
                .iter()
                .map(|name| MetricConfig {
                    metric: name.as_str().to_owned(),
                    ..MetricConfig::default()
                })
                .collect()
        });
        let mut metrics = Vec::new();
        let mut code_metrics = Vec::new();
        for metric in &configured {
            match CodeMetric::from_config(metric) {
                Some(code) => code_metrics.push(code_metric(code?, config)?),
                None => metrics.push(metric_spec(metric, config.output_type, supported)?),
            }
        }
        let pipelines = match (&config.filter_list, config.output_type) {
            (None, _) => vec![Pipeline {
                custom: None,
                filters: FilterPipeline::none(),
                unwraps: true,
            }],
            (Some(list), OutputType::GenerateUntil) => list
                .iter()
                .map(|pipeline| pipeline_of(pipeline, config.moebench_processor))
                .collect::<Result<_, _>>()?,
            (Some(_), other) => {
                return Err(format!(
                    "`filter_list` is only supported for generate_until, not {}",
                    other.name()
                ))
            }
        };
        Ok(Self {
            output_type: config.output_type,
            metrics,
            code_metrics,
            code_executor: None,
            pipelines,
        })
    }

    /// The metrics, in `metric_list` order (without the code metrics).
    pub fn metrics(&self) -> &[MetricSpec] {
        &self.metrics
    }

    /// Every metric key the task reports, in `metric_list` order, code metrics last.
    pub fn reported_metrics(&self) -> Vec<ReportedMetric> {
        let plain = self.metrics.iter().map(|spec| ReportedMetric {
            name: spec.name.as_str().to_owned(),
            aggregation: spec.aggregation,
            higher_is_better: spec.higher_is_better,
        });
        let code = self.code_metrics.iter().flat_map(|metric| {
            metric.keys().into_iter().map(|name| ReportedMetric {
                name,
                aggregation: Aggregation::Mean,
                higher_is_better: true,
            })
        });
        plain.chain(code).collect()
    }

    pub(crate) fn set_code_executor(&mut self, executor: Arc<CodeExecutor>) {
        self.code_executor = Some(executor);
    }

    /// Whether code metrics may run programs (an executor was set).
    pub(crate) fn executes_code(&self) -> bool {
        self.code_executor.is_some()
    }

    /// The filter names, in `filter_list` order (`["none"]` without one).
    pub fn filter_names(&self) -> Vec<&str> {
        self.pipelines
            .iter()
            .map(|pipeline| pipeline.filters.name())
            .collect()
    }

    /// Each filter's output on a generation document's responses, in `filter_list` order,
    /// shaped as lm-eval's `filtered_resps` entry: a bare string after `take_first`, else
    /// the list.
    pub fn filtered_responses(
        &self,
        instance: &DocInstance,
        responses: &[Response],
    ) -> Result<Vec<(String, Value)>, String> {
        let texts = generated_texts(responses)?;
        self.pipelines
            .iter()
            .map(|pipeline| {
                let filtered = pipeline.apply(&instance.doc, &texts)?;
                let shaped = match (pipeline.unwraps, filtered.as_slice()) {
                    (true, [one]) => Value::String(one.clone()),
                    _ => Value::from(filtered),
                };
                Ok((pipeline.filters.name().to_owned(), shaped))
            })
            .collect()
    }

    fn uses(&self, name: MetricName) -> bool {
        self.metrics.iter().any(|metric| metric.name == name)
    }

    /// Whether multiple-choice documents also need the unconditional log-likelihood of each
    /// choice (`acc_mutual_info`).
    pub(crate) fn wants_unconditional(&self) -> bool {
        self.output_type == OutputType::MultipleChoice && self.uses(MetricName::AccMutualInfo)
    }

    /// The per-document scores of `instance` given the `responses` to its requests.
    pub fn score(
        &self,
        instance: &DocInstance,
        responses: &[Response],
    ) -> Result<BTreeMap<String, DocScore>, String> {
        if responses.len() != instance.requests.len() {
            return Err(format!(
                "{} responses for {} requests",
                responses.len(),
                instance.requests.len()
            ));
        }
        let mut out = BTreeMap::new();
        if let Expected::References(references) = &instance.expected {
            let texts = generated_texts(responses)?;
            for pipeline in &self.pipelines {
                let filtered = pipeline.apply(&instance.doc, &texts)?;
                let filter = pipeline.filters.name();
                let prediction = filtered.first().map(String::as_str).unwrap_or_default();
                for metric in &self.metrics {
                    let exact_match = metric
                        .exact_match
                        .as_ref()
                        .ok_or("only exact_match scores generations")?;
                    let score = DocScore::Value(exact_match.score(prediction, references));
                    out.insert(format!("{},{filter}", metric.name), score);
                }
                if !self.code_metrics.is_empty() {
                    for (key, value) in self.code_scores(&filtered, references)? {
                        out.insert(format!("{key},{filter}"), DocScore::Value(value));
                    }
                }
            }
            return Ok(out);
        }
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
                _ => return Err("expected a rolling log-likelihood".to_owned()),
            },
            Expected::References(_) => Vec::new(),
        };
        let filter = self.pipelines[0].filters.name();
        for (name, score) in scores {
            if self.uses(name) {
                out.insert(format!("{name},{filter}"), score);
            }
        }
        Ok(out)
    }

    /// The code metrics of one document: every filtered candidate runs against the reference
    /// (lm-eval passes the one gold string, `doc_to_target`).
    fn code_scores(
        &self,
        candidates: &[String],
        references: &[String],
    ) -> Result<Vec<(String, f64)>, String> {
        let executor = self.code_executor.as_ref().ok_or(
            "this task executes generated code, which was not allowed (confirm with --confirm-run-unsafe-code)",
        )?;
        let reference = references.first().map(String::as_str).unwrap_or_default();
        let passed = executor
            .passes(candidates, reference)
            .map_err(|error| error.to_string())?;
        Ok(self
            .code_metrics
            .iter()
            .flat_map(|metric| metric.score(&passed))
            .collect())
    }

    fn multiple_choice(
        &self,
        instance: &DocInstance,
        responses: &[Response],
        gold: &moebench_core::metrics::Gold,
    ) -> Result<Vec<(MetricName, DocScore)>, String> {
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
        score_multiple_choice(&doc, gold).map_err(|error| error.to_string())
    }
}

/// The keyword arguments of lm-eval's `exact_match` (`lm_eval/api/metrics.py`), for hints.
const EXACT_MATCH_ARGUMENTS: [&str; 4] = [
    "ignore_case",
    "ignore_punctuation",
    "ignore_numbers",
    "regexes_to_ignore",
];

/// Core's error, naming the misspelled argument and its closest valid name when there is one.
fn exact_match_hint(config: &MetricConfig, error: moebench_core::CoreError) -> String {
    let unknown = config
        .kwargs
        .keys()
        .find(|key| !EXACT_MATCH_ARGUMENTS.contains(&key.as_str()));
    match unknown.and_then(|key| {
        Some((
            key,
            crate::config::closest_name(key, EXACT_MATCH_ARGUMENTS)?,
        ))
    }) {
        Some((key, best)) => {
            format!("exact_match has no argument `{key}` (did you mean `{best}`?)")
        }
        None => error.to_string(),
    }
}

/// The texts of a generation document's responses (one per `repeats` draw).
fn generated_texts(responses: &[Response]) -> Result<Vec<String>, String> {
    responses
        .iter()
        .map(|response| match response {
            Response::Generated(text) => Ok(text.clone()),
            _ => Err("expected a generated text".to_owned()),
        })
        .collect()
}

/// Checks a code metric against its task: generation, `unsafe_code: true`, enough draws.
fn code_metric(metric: CodeMetric, config: &TaskConfig) -> Result<CodeMetric, String> {
    if config.output_type != OutputType::GenerateUntil {
        return Err(format!(
            "metric `{}` scores generated programs; the task's output_type is {}",
            metric.name(),
            config.output_type.name()
        ));
    }
    if !config.unsafe_code {
        return Err(format!(
            "metric `{}` executes generated code: the task must say `unsafe_code: true`",
            metric.name()
        ));
    }
    if metric.max_k() > config.repeats {
        return Err(format!(
            "metric `{}` with k = {} needs at least that many generations per problem (`repeats: {}`)",
            metric.name(),
            metric.max_k(),
            config.repeats
        ));
    }
    Ok(metric)
}

/// A `filter_list` entry: lm-eval's built-in filters, and a first `custom` step that the
/// task's `moebench_processor` ports.
fn pipeline_of(
    pipeline: &crate::config::FilterPipeline,
    processor: Option<Processor>,
) -> Result<Pipeline, String> {
    let mut steps = pipeline.filter.as_slice();
    let mut custom = None;
    if let Some(first) = steps.first().filter(|step| step.function == "custom") {
        let port = processor.filter(|p| p.has_custom_filter()).ok_or_else(|| {
            format!(
                "filter `{}`: `function: custom` runs a Python `filter_fn`, which moebench cannot do; a `moebench_processor` that ports it (humaneval) can stand in for it",
                pipeline.name
            )
        })?;
        if let Some(key) = first.args.keys().next() {
            return Err(format!(
                "filter `{}`: `{key}` of the `custom` step: `moebench_processor: {}` provides the function, remove `{key}`",
                pipeline.name,
                port.name()
            ));
        }
        custom = Some(port);
        steps = &steps[1..];
    }
    let steps = steps
        .iter()
        .map(|step| Filter::from_config(&step.function, &Value::Object(step.args.clone())))
        .collect::<Result<_, _>>()
        .map_err(|error| format!("filter `{}`: {error}", pipeline.name))?;
    let filters = FilterPipeline::new(&pipeline.name, steps).map_err(|error| error.to_string())?;
    let unwraps = pipeline
        .filter
        .last()
        .is_some_and(|step| step.function == "take_first");
    Ok(Pipeline {
        custom,
        filters,
        unwraps,
    })
}

fn as_loglikelihood(response: &Response) -> Result<(f64, bool, usize), String> {
    match *response {
        Response::Loglikelihood {
            loglikelihood,
            is_greedy,
            tokens,
        } => Ok((loglikelihood, is_greedy, tokens)),
        _ => Err("expected a log-likelihood".to_owned()),
    }
}

fn metric_spec(
    config: &MetricConfig,
    output_type: OutputType,
    supported: &[MetricName],
) -> Result<MetricSpec, String> {
    let name: MetricName = config
        .metric
        .parse()
        .map_err(|error: moebench_core::CoreError| error.to_string())?;
    if !supported.contains(&name) {
        let names: Vec<&str> = supported.iter().map(|m| m.as_str()).collect();
        return Err(format!(
            "metric `{name}` is not computed for output_type {} (supported: {})",
            output_type.name(),
            names.join(", ")
        ));
    }
    let aggregation = match &config.aggregation {
        Some(aggregation) => aggregation
            .parse()
            .map_err(|error: moebench_core::CoreError| error.to_string())?,
        None => name.default_aggregation(),
    };
    let exact_match = if output_type == OutputType::GenerateUntil {
        let options = ExactMatch::from_config(&Value::Object(config.kwargs.clone()));
        Some(options.map_err(|error| exact_match_hint(config, error))?)
    } else if let Some(key) = config.kwargs.keys().next() {
        return Err(format!("metric `{name}` takes no argument `{key}`"));
    } else {
        None
    };
    Ok(MetricSpec {
        name,
        aggregation,
        higher_is_better: config.higher_is_better.unwrap_or(name.higher_is_better()),
        exact_match,
    })
}
