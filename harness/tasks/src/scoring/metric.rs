//! `metric_list` entries as lm-eval reads them (`ConfigurableTask.__init__`): the metric
//! function, its aggregation and `higher_is_better`, each from the entry or from lm-eval's
//! registry (`lm_eval/api/metrics.py`).
use super::SampleScore;
use crate::code::CodeMetric;
use crate::config::{closest_name, ConfigError, MetricConfig, NameOrHook, OutputType, TaskConfig};
use crate::hooks::{
    self, json_number, HookError, PyGenerationMetric, PyTarget, Registry, FLOAT_MARKER,
};
use moebench_core::metrics::{Aggregation, DocScore, ExactMatch, MetricName};
use moebench_core::CoreError;
use serde_json::{Map, Value};

/// How a metric's per-document values become the task score.
#[derive(Debug, Clone, PartialEq)]
pub enum AggregationSpec {
    Native(Aggregation),
    /// `aggregation: !function …`.
    Python(PyTarget),
}

/// Where a metric's per-document values come from.
#[derive(Debug, Clone)]
pub(crate) enum Source {
    /// Computed by moebench's port of the built-in `process_results` (for generation, a
    /// registered passthrough metric: its item is `[gold, result]`).
    Native(MetricName),
    /// Generation `bypass`: `None` per document.
    Bypass,
    /// Listed but never computed for this output type (lm-eval reports nothing for it).
    Absent,
    /// The generation `exact_match`, with its keyword arguments.
    ExactMatch(ExactMatch),
    /// A generation metric function run in Python.
    Python(PyGenerationMetric),
    /// The task's `process_results` hook reports it.
    FromProcessResults,
    /// A metric that executes the filtered candidates in the sandbox (HumanEval's
    /// `pass_at_k`, MBPP's `pass_at_1`); it reports [`CodeMetric::keys`].
    Code(CodeMetric),
}

/// A metric the task reports, with its aggregation over documents.
#[derive(Debug, Clone)]
pub struct MetricSpec {
    /// The key prefix of its results (a metric function's `__name__`).
    pub name: String,
    pub aggregation: AggregationSpec,
    pub higher_is_better: bool,
    pub(crate) source: Source,
}

/// lm-eval's registered metrics that moebench computes for each output type; the first
/// `defaults` are `DEFAULT_METRIC_REGISTRY` (used without a `metric_list`). Plus the moebench
/// extensions `acc_token_norm` and `token_perplexity`.
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
                F1,
                Mcc,
                BrierScore,
            ],
            2,
        ),
        OutputType::GenerateUntil => (&[ExactMatch, Bleu, Chrf, ChrfPlusPlus, Ter, Bypass], 1),
    }
}

/// The metrics of a task: `metric_list`, or the output type's defaults.
pub(crate) fn metric_specs(config: &TaskConfig) -> Result<Vec<MetricSpec>, ConfigError> {
    let (supported, defaults) = supported(config.output_type);
    let configured = config.metric_list.clone().unwrap_or_else(|| {
        supported[..defaults]
            .iter()
            .map(|name| MetricConfig::named(name.as_str()))
            .collect()
    });
    configured
        .iter()
        .map(|metric| metric_spec(metric, config, supported))
        .collect()
}

fn metric_spec(
    config: &MetricConfig,
    task: &TaskConfig,
    supported: &[MetricName],
) -> Result<MetricSpec, ConfigError> {
    let name = config.metric.name().to_owned();
    let registered: Option<MetricName> = name.parse().ok();
    let higher_is_better = config
        .higher_is_better
        .or(registered.map(MetricName::higher_is_better))
        .unwrap_or(true);
    let output_type = task.output_type;
    let code = match &config.metric {
        NameOrHook::Name(name) => CodeMetric::from_config(name, &config.kwargs),
        NameOrHook::Hook(_) => None,
    };
    let source = if task.process_results.is_some() {
        if task.unsafe_code {
            return Err(ConfigError(
                "`process_results` of an `unsafe_code: true` task would execute generated code \
                 in Python, outside moebench's sandbox; use the ported metrics (`pass_at_k`, \
                 `pass_at_1`) instead"
                    .to_owned(),
            ));
        }
        // lm-eval then ignores metric functions and their keyword arguments.
        Source::FromProcessResults
    } else if let Some(code) = code {
        Source::Code(code_metric(code.map_err(ConfigError)?, task)?)
    } else if output_type != OutputType::GenerateUntil {
        // The built-in `process_results` of the log-likelihood types computes its fixed set
        // of metrics and calls no metric function: keyword arguments, `hf_evaluate` and
        // metric functions have no effect, and other names are simply never reported.
        match registered.filter(|metric| supported.contains(metric)) {
            Some(metric) => Source::Native(metric),
            None if registered.is_some() || config.metric.hook().is_some() => Source::Absent,
            None => return Err(unregistered(&name, output_type, supported)),
        }
    } else if let NameOrHook::Hook(hook) = &config.metric {
        Source::Python(PyGenerationMetric {
            name: name.clone(),
            function: PyTarget::Hook(hook.clone()),
            kwargs: config.kwargs.clone(),
        })
    } else {
        generation_source(config, &name, registered)?
    };
    if let (true, Source::Python(python)) = (task.unsafe_code, &source) {
        return Err(ConfigError(format!(
            "metric `{name}` of an `unsafe_code: true` task would run {} in Python, where \
             generated code executes outside moebench's sandbox; use the ported metrics \
             (`pass_at_k`, `pass_at_1`) instead",
            python.function
        )));
    }
    let aggregation = match &config.aggregation {
        Some(NameOrHook::Hook(hook)) => AggregationSpec::Python(PyTarget::Hook(hook.clone())),
        Some(NameOrHook::Name(aggregation)) => {
            AggregationSpec::Native(aggregation.parse().map_err(core_error)?)
        }
        None => match registered {
            Some(metric) => AggregationSpec::Native(metric.default_aggregation()),
            None => {
                return Err(ConfigError(format!(
                    "metric `{name}` has no `aggregation`, and lm-eval's registry has no default \
                     for it (add e.g. `aggregation: mean`)"
                )))
            }
        },
    };
    Ok(MetricSpec {
        name,
        aggregation,
        higher_is_better,
        source,
    })
}

/// Checks a code metric against its task: generation, `unsafe_code: true`, enough draws.
fn code_metric(metric: CodeMetric, config: &TaskConfig) -> Result<CodeMetric, ConfigError> {
    if config.output_type != OutputType::GenerateUntil {
        return Err(ConfigError(format!(
            "metric `{}` scores generated programs; the task's output_type is {}",
            metric.name(),
            config.output_type.name()
        )));
    }
    if !config.unsafe_code {
        return Err(ConfigError(format!(
            "metric `{}` executes generated code: the task must say `unsafe_code: true`",
            metric.name()
        )));
    }
    if metric.max_k() > config.repeats {
        return Err(ConfigError(format!(
            "metric `{}` with k = {} needs at least that many generations per problem (`repeats: {}`)",
            metric.name(),
            metric.max_k(),
            config.repeats
        )));
    }
    Ok(metric)
}

fn unregistered(name: &str, output_type: OutputType, supported: &[MetricName]) -> ConfigError {
    let names: Vec<&str> = supported.iter().map(|m| m.as_str()).collect();
    let hint = closest_name(name, names.iter().copied())
        .map(|best| format!(" (did you mean `{best}`?)"))
        .unwrap_or_default();
    ConfigError(format!(
        "metric `{name}` is not one lm-eval registers{hint}, and {} computes only: {}",
        output_type.name(),
        names.join(", ")
    ))
}

/// A `generate_until` metric as `ConfigurableTask.process_results` calls it:
/// `metric(references=[gold], predictions=[result], **kwargs)`, falling back to
/// `metric([gold, result])` on `TypeError`. So `exact_match` (with its keyword arguments) is
/// computed, `bypass` gives `None`, the other registered metrics are passthrough functions
/// whose item is `[gold, result]`, and anything else (an `hf_evaluate` metric, or a name
/// lm-eval does not register, which it loads from Hugging Face `evaluate`) runs in Python.
fn generation_source(
    config: &MetricConfig,
    name: &str,
    registered: Option<MetricName>,
) -> Result<Source, ConfigError> {
    let hf_evaluate = config.hf_evaluate == Some(true);
    match registered {
        Some(MetricName::ExactMatch) if !hf_evaluate => {
            let options = ExactMatch::from_config(&Value::Object(config.kwargs.clone()));
            options
                .map(Source::ExactMatch)
                .map_err(|error| ConfigError(exact_match_hint(config, error)))
        }
        Some(MetricName::Bypass) if !hf_evaluate => Ok(Source::Bypass),
        Some(metric) if !hf_evaluate => Ok(Source::Native(metric)),
        _ => Ok(Source::Python(PyGenerationMetric {
            name: name.to_owned(),
            function: PyTarget::Registered {
                registry: if hf_evaluate {
                    Registry::HfEvaluateMetric
                } else {
                    Registry::Metric
                },
                name: name.to_owned(),
            },
            kwargs: config.kwargs.clone(),
        })),
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
fn exact_match_hint(config: &MetricConfig, error: CoreError) -> String {
    let unknown = config
        .kwargs
        .keys()
        .find(|key| !EXACT_MATCH_ARGUMENTS.contains(&key.as_str()));
    match unknown.and_then(|key| Some((key, closest_name(key, EXACT_MATCH_ARGUMENTS)?))) {
        Some((key, best)) => {
            format!("exact_match has no argument `{key}` (did you mean `{best}`?)")
        }
        None => error.to_string(),
    }
}

fn core_error(error: CoreError) -> ConfigError {
    ConfigError(error.to_string())
}

/// lm-eval's `bleu`, `chrf`, `chrf++` and `ter` bootstrap at most 100 times
/// (`_compute_task_aggregations`).
const CAPPED_BOOTSTRAP: [&str; 4] = ["bleu", "chrf", "chrf++", "ter"];

impl MetricSpec {
    /// A key only `process_results` reports: averaged (lm-eval warns and uses `mean`).
    pub(crate) fn unlisted(name: &str) -> Self {
        let registered: Option<MetricName> = name.parse().ok();
        Self {
            name: name.to_owned(),
            aggregation: AggregationSpec::Native(Aggregation::Mean),
            higher_is_better: registered.is_none_or(MetricName::higher_is_better),
            source: Source::FromProcessResults,
        }
    }

    pub(crate) fn python_targets(&self) -> Vec<PyTarget> {
        let mut targets = Vec::new();
        if let AggregationSpec::Python(target) = &self.aggregation {
            targets.push(target.clone());
        }
        if let Source::Python(metric) = &self.source {
            targets.push(metric.function.clone());
        }
        targets
    }

    /// A value Python reported for this metric as a per-document score: a pair for the
    /// weighted aggregations, a number where one is expected, else the item as it is (for
    /// corpus-level and Python aggregations).
    pub(crate) fn doc_score(&self, value: &Value) -> Result<SampleScore, String> {
        match &self.aggregation {
            AggregationSpec::Native(aggregation) if aggregation.is_weighted() => {
                match value.as_array().map(Vec::as_slice) {
                    Some([a, b]) => match (json_number(a), json_number(b)) {
                        (Some(a), Some(b)) => Ok(SampleScore::Score(DocScore::Weighted(a, b))),
                        _ => Err(format!("expected two numbers, got {value}")),
                    },
                    _ => Err(format!(
                        "`{aggregation}` aggregates (loglikelihood, weight) pairs, got {value}"
                    )),
                }
            }
            AggregationSpec::Native(aggregation) if aggregation.takes_items() => {
                Ok(SampleScore::Item(value.clone()))
            }
            AggregationSpec::Native(aggregation) => json_number(value)
                .map(|x| SampleScore::Score(DocScore::Value(x)))
                .ok_or_else(|| format!("`{aggregation}` aggregates numbers, got {value}")),
            AggregationSpec::Python(_) => Ok(json_number(value).map_or_else(
                || SampleScore::Item(value.clone()),
                |x| SampleScore::Score(DocScore::Value(x)),
            )),
        }
    }

    /// The task score.
    pub fn aggregate(&self, scores: &[SampleScore]) -> Result<f64, super::ScoreError> {
        match &self.aggregation {
            AggregationSpec::Native(aggregation) if aggregation.takes_items() => {
                Ok(aggregation.aggregate_items(&items(scores))?)
            }
            AggregationSpec::Native(aggregation) => {
                Ok(aggregation.aggregate(&numeric(scores, aggregation)?)?)
            }
            AggregationSpec::Python(target) => {
                let items: Vec<Value> = scores.iter().map(score_value).collect();
                Ok(hooks::runtime_for(target)?.aggregate(target, &items)?)
            }
        }
    }

    /// The standard error lm-eval reports; `None` for Python aggregations (lm-eval has no
    /// stderr function for them and prints `N/A`).
    pub fn stderr(
        &self,
        scores: &[SampleScore],
        bootstrap_iters: usize,
    ) -> Result<Option<f64>, super::ScoreError> {
        let iters = if CAPPED_BOOTSTRAP.contains(&self.name.as_str()) {
            bootstrap_iters.min(100)
        } else {
            bootstrap_iters
        };
        match &self.aggregation {
            AggregationSpec::Native(aggregation) if aggregation.takes_items() => {
                Ok(aggregation.stderr_items(&items(scores), iters)?)
            }
            AggregationSpec::Native(aggregation) => {
                Ok(aggregation.stderr(&numeric(scores, aggregation)?, iters)?)
            }
            AggregationSpec::Python(_) => Ok(None),
        }
    }

    /// Whether lm-eval reports a standard error for this aggregation (moebench bootstraps
    /// the weighted perplexities too).
    pub fn lm_eval_reports_stderr(&self) -> bool {
        match &self.aggregation {
            AggregationSpec::Native(aggregation) => aggregation.lm_eval_reports_stderr(),
            AggregationSpec::Python(_) => true,
        }
    }
}

/// The scores as items (numbers as JSON numbers).
fn items(scores: &[SampleScore]) -> Vec<Value> {
    scores.iter().map(score_value).collect()
}

/// The numeric scores a native aggregation takes.
fn numeric(
    scores: &[SampleScore],
    aggregation: &Aggregation,
) -> Result<Vec<DocScore>, super::ScoreError> {
    scores
        .iter()
        .map(|score| match score {
            SampleScore::Score(score) => Ok(*score),
            SampleScore::Item(item) => Err(super::ScoreError::Invalid(format!(
                "`{aggregation}` aggregates numbers, got {item}"
            ))),
        })
        .collect()
}

/// A score as a JSON value for Python (the inverse of [`json_number`] for non-finite values).
pub(crate) fn score_value(score: &SampleScore) -> Value {
    let number = |x: f64| {
        if x.is_finite() {
            Value::from(x)
        } else {
            let text = if x.is_nan() {
                "nan"
            } else if x > 0.0 {
                "inf"
            } else {
                "-inf"
            };
            Value::Object(Map::from_iter([(
                FLOAT_MARKER.to_owned(),
                Value::from(text),
            )]))
        }
    };
    match score {
        SampleScore::Score(DocScore::Value(x)) => number(*x),
        SampleScore::Score(DocScore::Weighted(a, b)) => Value::from(vec![number(*a), number(*b)]),
        SampleScore::Item(item) => item.clone(),
    }
}

impl From<HookError> for ConfigError {
    fn from(error: HookError) -> Self {
        Self(error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn python_numbers_cross_the_boundary() {
        assert_eq!(json_number(&json!(true)), Some(1.0));
        assert_eq!(json_number(&json!(2.5)), Some(2.5));
        assert!(json_number(&json!({"__float__": "nan"})).unwrap().is_nan());
        assert_eq!(json_number(&json!("1")), None);
        let back = score_value(&SampleScore::Score(DocScore::Value(f64::NEG_INFINITY)));
        assert_eq!(json_number(&back), Some(f64::NEG_INFINITY));
    }

    #[test]
    fn unlisted_process_results_keys_are_averaged() {
        let spec = MetricSpec::unlisted("score");
        assert_eq!(spec.aggregation, AggregationSpec::Native(Aggregation::Mean));
        assert_eq!(
            spec.doc_score(&json!(1)).unwrap(),
            SampleScore::Score(DocScore::Value(1.0))
        );
        assert!(spec.doc_score(&json!("x")).is_err());
        assert!(!MetricSpec::unlisted("ter").higher_is_better);
    }
}
