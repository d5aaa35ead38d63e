//! Applying a suite method (or chain) to a loaded model through the catalogue.
use crate::error::{Context, Result};
use moebench_methods::catalogue::{lookup, MethodEnv, ModelFacts, Params};
use moebench_model::Model;
use moebench_suite::MethodConfig;
use serde_json::{Map, Value};

/// One step of a chain: a catalogue method and its raw parameters.
fn steps(method: &MethodConfig) -> impl Iterator<Item = (&str, &Map<String, Value>)> {
    std::iter::once((method.name.as_str(), &method.params))
        .chain(method.then.iter().map(|s| (s.name.as_str(), &s.params)))
}

/// Applies `method`, then each method of its chain (`then`), in order.
pub fn apply_method(model: Model, method: &MethodConfig, env: &dyn MethodEnv) -> Result<Model> {
    let mut model = model;
    for (i, (name, params)) in steps(method).enumerate() {
        let m = lookup(name)?;
        let params = Params::check(m, params)?;
        model = m.apply(model, &params, env).with_context(|| match i {
            0 => format!("applying {name}"),
            _ => format!("then {name}"),
        })?;
    }
    Ok(model)
}

/// Checks `method` and its chain against a model described by `facts`, without loading it;
/// returns what the model is after the chain. Every step's problems are reported.
pub fn plan_method(method: &MethodConfig, facts: &ModelFacts) -> Result<ModelFacts, Vec<String>> {
    let mut facts = facts.clone();
    let mut problems = Vec::new();
    for (name, params) in steps(method) {
        let checked = lookup(name).map_err(|e| e.to_string()).and_then(|m| {
            let params = Params::check(m, params).map_err(|e| e.to_string())?;
            m.plan(&params, &facts).map_err(|e| e.to_string())
        });
        match checked {
            Ok(after) => facts = after,
            Err(e) => {
                problems.push(e);
                // Later steps would be checked against a model this step did not make.
                break;
            }
        }
    }
    match problems.is_empty() {
        true => Ok(facts),
        false => Err(problems),
    }
}

/// The mix weights the chain's first method gives (a calibrated method's `mix`).
pub fn mix_weights(method: &MethodConfig) -> Result<Option<Vec<f64>>> {
    let m = lookup(&method.name)?;
    Ok(Params::check(m, &method.params)?.mix())
}
