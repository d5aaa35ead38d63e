//! Method entries of a suite, checked against the method catalogue's schemas, and parameter
//! sweeps.
//!
//! The catalogue lives with the methods (moebench-methods); the suite crate sees only its
//! [`MethodSchema`]s, passed in by the caller, so suites are validated without the model runtime.
//! A list value in a method's `params` sweeps that parameter: the suite gets one method
//! configuration per combination (in key order, values in list order), labelled
//! `label[k=v,…]` with the swept parameters. A parameter whose value is itself a list (its
//! schema type takes a list: `layers`, `experts`, …) takes a plain list as its value and sweeps
//! only when given a list of lists (`layers: [[0], [0, 1]]`).
use moebench_core::params::{canonical_json, MethodSchema};
use serde::Serialize;
use serde_json::{Map, Value};

/// Most configurations one method entry may sweep into: beyond it the suite is rejected (a
/// typo such as a 1000-element list, or several long lists, multiplies into millions of jobs).
pub const MAX_SWEEP: usize = 10_000;
/// Above this many configurations a suite loads with a warning.
pub const WARN_SWEEP: usize = 500;

/// The schema called `name` among `schemas`, or what to say when there is none.
pub fn find_schema<'s>(
    schemas: &[&'s MethodSchema],
    name: &str,
) -> Result<&'s MethodSchema, String> {
    schemas
        .iter()
        .copied()
        .find(|s| s.name == name)
        .ok_or_else(|| {
            let names = schemas.iter().map(|s| s.name);
            let hint = moebench_core::suggest::closest(name, names.clone())
                .map(|best| format!("did you mean `{best}`? "))
                .unwrap_or_default();
            format!(
                "unknown method `{name}` ({hint}implemented: {})",
                names.collect::<Vec<_>>().join(", ")
            )
        })
}

/// One method configuration: a method with every parameter fixed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MethodConfig {
    pub name: String,
    /// Unique in the suite: `label` (default: the name), plus `[k=v,…]` for swept parameters.
    pub label: String,
    /// Checked against the method's schema, defaults filled in.
    pub params: Map<String, Value>,
    /// Model labels the method applies to; `None`: every model.
    pub models: Option<Vec<String>>,
    /// Methods applied after this one, in order (a chain such as `upcycle → reap`).
    pub then: Vec<MethodStep>,
}

/// One later method of a chain: fixed parameters, no sweeps.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MethodStep {
    pub name: String,
    #[serde(default)]
    pub params: Map<String, Value>,
}

/// Checks a chain step against its schema, filling in its defaults.
pub fn check_step(schemas: &[&MethodSchema], step: &MethodStep) -> Result<MethodStep, Vec<String>> {
    let schema = find_schema(schemas, &step.name).map_err(|e| vec![e])?;
    let params = schema
        .check(&step.params)
        .map_err(|errors| errors.iter().map(ToString::to_string).collect::<Vec<_>>())?;
    Ok(MethodStep {
        name: step.name.clone(),
        params,
    })
}

impl MethodConfig {
    /// Whether the method runs on the model labelled `label`.
    pub fn applies_to(&self, label: &str) -> bool {
        self.models
            .as_ref()
            .is_none_or(|m| m.iter().any(|l| l == label))
    }

    /// The parameters as a JSON object.
    pub fn params_json(&self) -> Value {
        Value::Object(self.params.clone())
    }

    /// sha256 of the canonical JSON of name and parameters.
    pub fn hash(&self) -> String {
        let mut value = serde_json::json!({"name": self.name, "params": self.params_json()});
        if !self.then.is_empty() {
            value["then"] = serde_json::to_value(&self.then).expect("steps serialize");
        }
        crate::sha256_hex(canonical_json(&value).as_bytes())
    }
}

/// Expands a suite's method entry into its sweep's configurations, each checked against the
/// schema with defaults filled in. Every problem is reported (once).
pub fn expand_method(
    schema: &MethodSchema,
    label: Option<&str>,
    params: &Map<String, Value>,
) -> Result<Vec<MethodConfig>, Vec<String>> {
    let takes_list = |key: &str| schema.param(key).is_some_and(|p| p.ty.takes_list());
    let mut configs = sweep(
        schema.name,
        label.unwrap_or(schema.name),
        params,
        &takes_list,
    )
    .map_err(|e| vec![e])?;
    let mut problems: Vec<String> = Vec::new();
    for config in &mut configs {
        match schema.check(&config.params) {
            Ok(filled) => config.params = filled,
            Err(errors) => {
                for e in errors.iter().map(ToString::to_string) {
                    if !problems.contains(&e) {
                        problems.push(e);
                    }
                }
            }
        }
    }
    match problems.is_empty() {
        true => Ok(configs),
        false => Err(problems),
    }
}

/// One configuration per combination of the list-valued parameters.
fn sweep(
    name: &str,
    label: &str,
    params: &Map<String, Value>,
    takes_list: &dyn Fn(&str) -> bool,
) -> Result<Vec<MethodConfig>, String> {
    let mut keys: Vec<&String> = params.keys().collect();
    keys.sort();
    let mut total: usize = 1;
    for key in &keys {
        if let Value::Array(items) = &params[*key] {
            if !takes_list(key) || (!items.is_empty() && items.iter().all(Value::is_array)) {
                total = total.saturating_mul(items.len().max(1));
            }
        }
    }
    if total > MAX_SWEEP {
        return Err(format!(
            "method `{name}`: the parameter lists sweep {total} configurations, more than the \
             {MAX_SWEEP} one entry may have; split the sweep over several entries or suites"
        ));
    }
    let mut combos: Vec<(Map<String, Value>, Vec<String>)> = vec![Default::default()];
    for key in keys {
        let value = &params[key];
        let is_list_param = takes_list(key);
        let choices: Vec<(&Value, bool)> = match value {
            Value::Array(items) if items.is_empty() && !is_list_param => {
                return Err(format!("method `{name}`: `{key}` sweeps an empty list"))
            }
            Value::Array(items)
                if !is_list_param || (!items.is_empty() && items.iter().all(Value::is_array)) =>
            {
                items.iter().map(|v| (v, true)).collect()
            }
            other => vec![(other, false)],
        };
        combos = combos
            .into_iter()
            .flat_map(|(fixed, swept)| {
                choices.iter().map(move |&(v, is_sweep)| {
                    let mut fixed = fixed.clone();
                    let mut swept = swept.clone();
                    fixed.insert(key.clone(), v.clone());
                    if is_sweep {
                        swept.push(format!("{key}={}", short(v)));
                    }
                    (fixed, swept)
                })
            })
            .collect();
    }
    Ok(combos
        .into_iter()
        .map(|(params, swept)| MethodConfig {
            name: name.to_owned(),
            models: None,
            then: Vec::new(),
            label: match swept.is_empty() {
                true => label.to_owned(),
                false => format!("{label}[{}]", swept.join(",")),
            },
            params,
        })
        .collect())
}

/// A parameter value in a label: strings bare, the rest as JSON.
fn short(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Schemas for the tests of this crate (the real catalogue is in moebench-methods).
#[cfg(test)]
pub(crate) mod test_catalogue {
    use moebench_core::params::{
        MethodKind, MethodSchema, ParamDefault as D, ParamSpec as P, ParamType as T,
    };

    pub const DENSE: MethodSchema = MethodSchema {
        name: "dense",
        kind: MethodKind::Transform,
        description: "identity",
        calibrated: false,
        params: &[],
    };
    pub const TOPK: MethodSchema = MethodSchema {
        name: "topk",
        kind: MethodKind::RouterSwap,
        description: "top-k",
        calibrated: false,
        params: &[P::new("k", T::int(1), D::FromModel("top_k"), "k")],
    };
    pub const UPCYCLE: MethodSchema = MethodSchema {
        name: "upcycle",
        kind: MethodKind::Transform,
        description: "upcycling",
        calibrated: false,
        params: &[
            P::new("num_experts", T::int(1), D::Int(4), "experts"),
            P::new("layers", T::IntList { min: 0 }, D::Unset, "layers"),
        ],
    };
    pub const REAP: MethodSchema = MethodSchema {
        name: "reap",
        kind: MethodKind::Transform,
        description: "pruning",
        calibrated: true,
        params: &[P::new(
            "compression",
            T::FRACTION_REMOVED,
            D::Float(0.5),
            "c",
        )],
    };
    pub const DUME: MethodSchema = MethodSchema {
        name: "dume",
        kind: MethodKind::Builder,
        description: "merging",
        calibrated: false,
        params: &[
            P::new("experts", T::TextList, D::Required, "experts"),
            P::new("top_k", T::int(1), D::Int(1), "k"),
        ],
    };

    pub const WEIGHT_AVERAGE: MethodSchema = MethodSchema {
        name: "weight_average",
        kind: MethodKind::Builder,
        description: "averaging",
        calibrated: false,
        params: &[P::new("experts", T::TextList, D::Required, "experts")],
    };

    pub fn schemas() -> Vec<&'static MethodSchema> {
        vec![&DENSE, &TOPK, &UPCYCLE, &REAP, &DUME, &WEIGHT_AVERAGE]
    }
}

#[cfg(test)]
mod tests {
    use super::test_catalogue::*;
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn unknown_methods_and_params_are_errors() {
        let e = find_schema(&schemas(), "dens").unwrap_err();
        assert_eq!(
            e,
            "unknown method `dens` (did you mean `dense`? implemented: dense, topk, upcycle, reap, dume, weight_average)"
        );
        let e = expand_method(&DENSE, None, &map(json!({"k": 2}))).unwrap_err();
        assert_eq!(
            e,
            ["method `dense`: parameter `k` is unknown (accepted: none)"]
        );
    }

    #[test]
    fn lists_sweep_parameters_and_each_value_is_checked() {
        let params = map(json!({"compression": [0.25, 0.5], "mix": [1.0, 2.0]}));
        let configs = expand_method(&REAP, Some("r"), &params).unwrap();
        let labels: Vec<&str> = configs.iter().map(|c| c.label.as_str()).collect();
        assert_eq!(labels, ["r[compression=0.25]", "r[compression=0.5]"]);
        assert_eq!(
            configs[1].params_json(),
            json!({"compression": 0.5, "mix": [1.0, 2.0]})
        );
        assert_ne!(configs[0].hash(), configs[1].hash());
        let bad = map(json!({"compression": [0.5, 1.5, 2.5]}));
        let e = expand_method(&REAP, None, &bad).unwrap_err();
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(
            e[0].contains("`compression` is 1.5; allowed: [0, 1)"),
            "{e:?}"
        );
        let empty = map(json!({"k": []}));
        assert_eq!(
            expand_method(&TOPK, None, &empty).unwrap_err(),
            ["method `topk`: `k` sweeps an empty list"]
        );
    }

    #[test]
    fn defaults_are_filled_in_so_an_explicit_default_hashes_the_same() {
        let implicit = expand_method(&REAP, None, &Map::new()).unwrap();
        let explicit = expand_method(&REAP, None, &map(json!({"compression": 0.5}))).unwrap();
        assert_eq!(implicit[0].params_json(), json!({"compression": 0.5}));
        assert_eq!(implicit[0].hash(), explicit[0].hash());
    }

    #[test]
    fn list_parameters_are_values_unless_given_a_list_of_lists() {
        let plain = map(json!({"experts": ["a", "b"], "top_k": [1, 2]}));
        let configs = expand_method(&DUME, None, &plain).unwrap();
        let labels: Vec<&str> = configs.iter().map(|c| c.label.as_str()).collect();
        assert_eq!(labels, ["dume[top_k=1]", "dume[top_k=2]"]);
        assert_eq!(configs[0].params["experts"], json!(["a", "b"]));
        let swept = map(json!({"layers": [[0], [0, 1]]}));
        let configs = expand_method(&UPCYCLE, None, &swept).unwrap();
        assert_eq!(configs.len(), 2);
        assert_eq!(configs[1].params["layers"], json!([0, 1]));
    }

    #[test]
    fn sweeps_expanding_to_too_many_jobs_are_refused_before_expanding() {
        let huge = map(json!({
            "num_experts": (1..=200).collect::<Vec<_>>(),
            "layers": (0..100).map(|l| vec![l]).collect::<Vec<_>>(),
        }));
        let e = expand_method(&UPCYCLE, None, &huge).unwrap_err();
        assert_eq!(e.len(), 1);
        assert!(
            e[0].contains("sweep 20000 configurations, more than the 10000"),
            "{e:?}"
        );
    }

    #[test]
    fn dense_is_the_identity_with_a_stable_hash() {
        let configs = expand_method(&DENSE, None, &Map::new()).unwrap();
        assert_eq!(configs.len(), 1);
        assert_eq!(configs[0].label, "dense");
        assert_eq!(configs[0].params_json(), json!({}));
        assert_eq!(configs[0].hash(), configs[0].clone().hash());
        assert_eq!(configs[0].hash().len(), 64);
    }

    #[test]
    fn chain_steps_are_checked_and_filled() {
        let step = MethodStep {
            name: "reap".into(),
            params: Map::new(),
        };
        assert_eq!(
            check_step(&schemas(), &step).unwrap().params,
            map(json!({"compression": 0.5}))
        );
        let bad = MethodStep {
            name: "reap".into(),
            params: map(json!({"compresion": 0.5})),
        };
        let e = check_step(&schemas(), &bad).unwrap_err();
        assert!(e[0].contains("did you mean `compression`?"), "{e:?}");
    }
}
