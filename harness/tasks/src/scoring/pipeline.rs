//! Filter pipelines (`filter_list`), as `FilterEnsemble.apply` runs them
//! (`lm_eval/api/filter.py`): every step sees the responses of all documents and hands its
//! output to the next step. Steps with a native port (`moebench_core::Filter`) run per
//! document; the others — `!function` filter classes, `function: custom` with `filter_fn`,
//! and lm-eval's registered filters without a port (`multi_choice_regex`, `map`, …) — run in
//! Python, once per step for the whole task. A `function: custom` step without `filter_fn`
//! is the ported `filter_fn` of the task's `moebench_processor` (HumanEval's
//! `build_predictions`).
use super::ScoreError;
use crate::config::{ConfigError, FilterPipeline as PipelineConfig, NameOrHook, OutputType};
use crate::hooks::{self, PyFilterStep, PyTarget, Registry};
use crate::processors::Processor;
use moebench_core::Filter;
use serde_json::Value;

/// Whether a registered filter has a native port (moebench-core knows the name).
fn is_native(name: &str) -> bool {
    !matches!(
        Filter::from_config(name, &Value::Null),
        Err(moebench_core::CoreError::UnknownFilter(_))
    )
}

/// One filter step.
#[derive(Debug, Clone)]
enum Step {
    Native(Filter),
    Python(PyFilterStep),
    /// A `custom` filter whose function the processor ports; it sees the document.
    Ported(Processor),
}

/// A named filter pipeline; its name is the `,<filter>` suffix of the metric keys it feeds.
#[derive(Debug, Clone)]
pub(crate) struct Pipeline {
    name: String,
    steps: Vec<Step>,
}

/// One document's responses between steps: a list, or (after `take_first`) one response.
enum Responses {
    List(Vec<String>),
    One(String),
}

impl Pipeline {
    /// The pipeline lm-eval uses without a `filter_list`: `none` = `[take_first]`.
    pub(crate) fn none() -> Self {
        Self {
            name: "none".to_owned(),
            steps: vec![Step::Native(Filter::TakeFirst)],
        }
    }

    /// `processor`: the task's `moebench_processor`, which may port a `custom` step.
    pub(crate) fn from_config(
        config: &PipelineConfig,
        output_type: OutputType,
        processor: Option<Processor>,
    ) -> Result<Self, ConfigError> {
        let fail = |message: String| ConfigError(format!("filter `{}`: {message}", config.name));
        let mut steps = Vec::new();
        for step in &config.filter {
            let args = Value::Object(step.args.clone());
            let python = |filter: PyTarget| {
                Step::Python(PyFilterStep {
                    filter,
                    filter_fn: step.filter_fn.clone(),
                    kwargs: step.args.clone(),
                })
            };
            steps.push(match &step.function {
                NameOrHook::Hook(hook) => python(PyTarget::Hook(hook.clone())),
                NameOrHook::Name(name) if name == "custom" && step.filter_fn.is_none() => {
                    let port = processor.filter(|p| p.has_custom_filter()).ok_or_else(|| {
                        fail(
                            "`function: custom` needs `filter_fn: !function module.fn` (or a \
                             `moebench_processor` that ports it: humaneval)"
                                .to_owned(),
                        )
                    })?;
                    if let Some(key) = step.args.keys().next() {
                        return Err(fail(format!(
                            "`{key}` of the `custom` step: `moebench_processor: {}` provides \
                             the function, remove `{key}`",
                            port.name()
                        )));
                    }
                    Step::Ported(port)
                }
                NameOrHook::Name(name) if name == "custom" => python(PyTarget::Registered {
                    registry: Registry::Filter,
                    name: name.clone(),
                }),
                NameOrHook::Name(name) if is_native(name) => {
                    Step::Native(Filter::from_config(name, &args).map_err(|e| fail(e.to_string()))?)
                }
                NameOrHook::Name(name) => python(PyTarget::Registered {
                    registry: Registry::Filter,
                    name: name.clone(),
                }),
            });
        }
        let last = steps.len().saturating_sub(1);
        if steps
            .iter()
            .take(last)
            .any(|step| matches!(step, Step::Native(Filter::TakeFirst)))
        {
            return Err(fail(
                "`take_first` must be the last step (it unwraps the responses)".to_owned(),
            ));
        }
        if output_type != OutputType::GenerateUntil
            && steps.iter().any(|step| {
                !matches!(
                    step,
                    Step::Native(Filter::TakeFirst | Filter::TakeFirstK(_) | Filter::MajorityVote)
                )
            })
        {
            return Err(fail(format!(
                "only selection filters (`take_first`, `take_first_k`, `majority_vote`) apply to \
                 {} responses, which are log-likelihoods",
                output_type.name()
            )));
        }
        Ok(Self {
            name: config.name.clone(),
            steps,
        })
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The Python targets the pipeline calls.
    pub(crate) fn python_targets(&self) -> impl Iterator<Item = PyTarget> + '_ {
        self.steps.iter().flat_map(|step| match step {
            Step::Python(python) => {
                let mut targets = vec![python.filter.clone()];
                targets.extend(python.filter_fn.clone().map(PyTarget::Hook));
                targets
            }
            Step::Native(_) | Step::Ported(_) => Vec::new(),
        })
    }

    /// Filters the generated texts of every document (`responses[d]` are document `d`'s);
    /// returns each document's filtered value: a string after `take_first`, else a list.
    pub(crate) fn apply(
        &self,
        responses: Vec<Vec<String>>,
        docs: &[&Value],
    ) -> Result<Vec<Value>, ScoreError> {
        let mut state: Vec<Responses> = responses.into_iter().map(Responses::List).collect();
        for step in &self.steps {
            state = match step {
                Step::Native(filter) => state
                    .into_iter()
                    .map(|responses| match responses {
                        Responses::List(list) => Ok(match (filter, filter.apply(list)?) {
                            (Filter::TakeFirst, mut first) if !first.is_empty() => {
                                Responses::One(first.swap_remove(0))
                            }
                            (_, list) => Responses::List(list),
                        }),
                        Responses::One(_) => Err(ScoreError::Invalid(format!(
                            "filter `{}`: a step after the responses were unwrapped",
                            self.name
                        ))),
                    })
                    .collect::<Result<_, ScoreError>>()?,
                Step::Python(python) => self.python_step(python, state, docs)?,
                Step::Ported(processor) => state
                    .into_iter()
                    .zip(docs)
                    .map(|(responses, doc)| match responses {
                        Responses::List(list) => processor
                            .custom_filter(doc, list)
                            .map(Responses::List)
                            .map_err(|message| {
                                ScoreError::Invalid(format!("filter `{}`: {message}", self.name))
                            }),
                        Responses::One(_) => Err(ScoreError::Invalid(format!(
                            "filter `{}`: a step after the responses were unwrapped",
                            self.name
                        ))),
                    })
                    .collect::<Result<_, ScoreError>>()?,
            };
        }
        Ok(state
            .into_iter()
            .map(|responses| match responses {
                Responses::One(one) => Value::String(one),
                Responses::List(list) => Value::from(list),
            })
            .collect())
    }

    fn python_step(
        &self,
        step: &PyFilterStep,
        state: Vec<Responses>,
        docs: &[&Value],
    ) -> Result<Vec<Responses>, ScoreError> {
        let runtime = hooks::runtime_for(&step.filter)?;
        let input = state
            .into_iter()
            .map(|responses| match responses {
                Responses::List(list) => list.into_iter().map(Value::String).collect(),
                Responses::One(one) => vec![Value::String(one)],
            })
            .collect();
        let docs: Vec<Value> = docs.iter().map(|doc| (*doc).clone()).collect();
        let output = runtime.filter(std::slice::from_ref(step), input, &docs)?;
        if output.len() != docs.len() {
            return Err(hooks::HookError::call(
                &step.filter,
                format!("returned {} documents for {}", output.len(), docs.len()),
            )
            .into());
        }
        output
            .into_iter()
            .map(|value| match value {
                Value::String(one) => Ok(Responses::One(one)),
                Value::Array(items) => items
                    .into_iter()
                    .map(|item| match item {
                        Value::String(text) => Ok(text),
                        other => Err(other),
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map(Responses::List)
                    .map_err(|other| {
                        hooks::HookError::call(
                            &step.filter,
                            format!("returned a non-string response {other}"),
                        )
                        .into()
                    }),
                other => Err(hooks::HookError::call(
                    &step.filter,
                    format!("returned {other} for a document, not a response or a list of them"),
                )
                .into()),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::FilterStep;
    use serde_json::json;

    fn step(function: &str, args: Value) -> FilterStep {
        FilterStep {
            function: NameOrHook::Name(function.to_owned()),
            filter_fn: None,
            args: args.as_object().cloned().unwrap_or_default(),
        }
    }

    #[test]
    fn native_steps_unwrap_after_take_first() {
        let config = PipelineConfig {
            name: "strict".into(),
            filter: vec![
                step("regex", json!({"regex_pattern": "#### (\\d+)"})),
                step("take_first", Value::Null),
            ],
        };
        let pipeline = Pipeline::from_config(&config, OutputType::GenerateUntil, None).unwrap();
        let doc = json!({});
        let out = pipeline
            .apply(vec![vec!["so #### 42".into()]], &[&doc])
            .unwrap();
        assert_eq!(out, vec![json!("42")]);
        let keep = PipelineConfig {
            name: "k".into(),
            filter: vec![step("take_first_k", json!({"k": 1}))],
        };
        let out = Pipeline::from_config(&keep, OutputType::GenerateUntil, None)
            .unwrap()
            .apply(vec![vec!["a".into(), "b".into()]], &[&doc])
            .unwrap();
        assert_eq!(out, vec![json!(["a"])]);
    }

    #[test]
    fn unported_filters_go_to_python_and_misuse_is_rejected() {
        let config = PipelineConfig {
            name: "mc".into(),
            filter: vec![
                step("multi_choice_regex", json!({"group_select": 0})),
                step("take_first", Value::Null),
            ],
        };
        let pipeline = Pipeline::from_config(&config, OutputType::GenerateUntil, None).unwrap();
        let targets: Vec<PyTarget> = pipeline.python_targets().collect();
        assert_eq!(
            targets,
            vec![PyTarget::Registered {
                registry: Registry::Filter,
                name: "multi_choice_regex".into()
            }]
        );
        let custom = PipelineConfig {
            name: "c".into(),
            filter: vec![step("custom", Value::Null)],
        };
        let error = Pipeline::from_config(&custom, OutputType::GenerateUntil, None).unwrap_err();
        assert!(error.0.contains("filter_fn"), "{error}");
        let early = PipelineConfig {
            name: "e".into(),
            filter: vec![
                step("take_first", Value::Null),
                step("lowercase", Value::Null),
            ],
        };
        assert!(
            Pipeline::from_config(&early, OutputType::GenerateUntil, None)
                .unwrap_err()
                .0
                .contains("last step")
        );
        let ported = Pipeline::from_config(
            &custom,
            OutputType::GenerateUntil,
            Some(Processor::Humaneval),
        )
        .unwrap();
        assert_eq!(ported.python_targets().count(), 0);
        let doc = json!({"prompt": "def f():\n"});
        let out = ported
            .apply(vec![vec!["    return 1".into()]], &[&doc])
            .unwrap();
        assert_eq!(out, vec![json!(["def f():\n    return 1"])]);
        let with_args = PipelineConfig {
            name: "c".into(),
            filter: vec![step("custom", json!({"x": 1}))],
        };
        let error = Pipeline::from_config(
            &with_args,
            OutputType::GenerateUntil,
            Some(Processor::Humaneval),
        )
        .unwrap_err();
        assert!(error.0.contains("remove `x`"), "{error}");
        let mc = PipelineConfig {
            name: "m".into(),
            filter: vec![step("lowercase", Value::Null)],
        };
        assert!(Pipeline::from_config(&mc, OutputType::MultipleChoice, None).is_err());
    }
}
