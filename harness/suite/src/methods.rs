//! The methods a suite may name, and parameter sweeps.
//!
//! A list value in a method's `params` sweeps that parameter: the suite gets one method
//! configuration per combination (in key order, values in list order), labelled
//! `label[k=v,…]` with the swept parameters. A parameter whose value is itself a list
//! ([`MethodInfo::list_params`]: `layers`, `experts`, …) takes a plain list as its value and
//! sweeps only when given a list of lists (`layers: [[0], [0, 1]]`).
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;

/// A method the runner implements.
#[derive(Debug, Clone, Copy)]
pub struct MethodInfo {
    pub name: &'static str,
    /// The parameter names it accepts.
    pub params: &'static [&'static str],
    /// Those of `params` whose value is itself a list (`layers`, `experts`, …): a plain list
    /// is the value; a list of lists sweeps it.
    pub list_params: &'static [&'static str],
}

/// Every implemented method. Adding one here makes suites accept it; the runner's
/// `apply_method` must then apply it.
pub const METHODS: &[MethodInfo] = &[
    // The model as loaded: the identity baseline.
    MethodInfo {
        name: "dense",
        params: &[],
        list_params: &[],
    },
    // Sparse upcycling of a dense model (METHODS.md §7.1).
    MethodInfo {
        name: "upcycle",
        params: &["num_experts", "top_k", "layers", "router_init_std"],
        list_params: &["layers"],
    },
    // Training-free router swaps on an MoE model (METHODS.md §§4, 5, 7.3-7.5).
    MethodInfo {
        name: "topk",
        params: &["k"],
        list_params: &[],
    },
    MethodInfo {
        name: "topp",
        params: &["p"],
        list_params: &[],
    },
    MethodInfo {
        name: "expert_choice",
        params: &["capacity", "mode", "threshold"],
        list_params: &[],
    },
    MethodInfo {
        name: "usmoe",
        params: &["k", "r", "renormalize", "mode", "threshold"],
        list_params: &[],
    },
    MethodInfo {
        name: "dtop_p",
        params: &[
            "target",
            "p0",
            "kp",
            "ki",
            "per_layer",
            "steps",
            "fixed_scale",
            "mix",
        ],
        list_params: &["fixed_scale", "mix"],
    },
    // Expert pruning at a uniform ratio per layer (METHODS.md §7.6).
    MethodInfo {
        name: "freq_prune",
        params: &["compression", "mix"],
        list_params: &["mix"],
    },
    MethodInfo {
        name: "ean_prune",
        params: &["compression", "mix"],
        list_params: &["mix"],
    },
    MethodInfo {
        name: "reap",
        params: &["compression", "mix"],
        list_params: &["mix"],
    },
    // DUME: the suite's model and `experts` (dense domain experts) merged into one MoE with
    // closed-form ridge routers (METHODS.md §2).
    MethodInfo {
        name: "dume",
        params: &["experts", "domains", "top_k", "temperature", "lambda"],
        list_params: &["experts", "domains"],
    },
    // Dense2MoE layer-fusion upcycling and its layer-pruning baseline (METHODS.md §3).
    MethodInfo {
        name: "dense2moe",
        params: &["span_len", "num_experts", "top_k", "keep_own_mlp"],
        list_params: &[],
    },
    MethodInfo {
        name: "layer_prune",
        params: &["span_len"],
        list_params: &[],
    },
    // Continued training (in a chain: `upcycle → train`, `dense2moe → train`).
    MethodInfo {
        name: "train",
        params: &[
            "steps",
            "lr",
            "batch_size",
            "seq_len",
            "warmup",
            "load_balance",
            "z_loss",
            "entropy",
            "text",
        ],
        list_params: &[],
    },
    // BTX: MoErge + a trained router (DUME's baseline, METHODS.md §7.2).
    MethodInfo {
        name: "btx",
        params: &[
            "experts",
            "domains",
            "steps",
            "lr",
            "batch_size",
            "seq_len",
            "top_k",
        ],
        list_params: &["experts", "domains"],
    },
    // Baseline: the suite's model and `experts` averaged weight by weight (one dense model).
    MethodInfo {
        name: "weight_average",
        params: &["experts"],
        list_params: &["experts"],
    },
    // Expert merging (METHODS.md §6, §7.7).
    MethodInfo {
        name: "ream",
        params: &["compression", "group_size", "sequential", "merging", "mix"],
        list_params: &["mix"],
    },
    MethodInfo {
        name: "m_smoe",
        params: &["compression", "mix"],
        list_params: &["mix"],
    },
    MethodInfo {
        name: "hc_smoe",
        params: &["compression", "mix"],
        list_params: &["mix"],
    },
];

/// The names of [`METHODS`].
pub fn method_names() -> Vec<&'static str> {
    METHODS.iter().map(|m| m.name).collect()
}

/// One method configuration: a method with every parameter fixed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MethodConfig {
    pub name: String,
    /// Unique in the suite: `label` (default: the name), plus `[k=v,…]` for swept parameters.
    pub label: String,
    pub params: BTreeMap<String, Value>,
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
    pub params: BTreeMap<String, Value>,
}

/// Checks a chain step: an implemented method with its parameters.
pub(crate) fn check_step(step: &MethodStep) -> Result<(), String> {
    check_method(&step.name, &step.params)
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
        Value::Object(
            self.params
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        )
    }

    /// sha256 of the canonical JSON of name and parameters.
    pub fn hash(&self) -> String {
        let mut value = serde_json::json!({"name": self.name, "params": self.params_json()});
        if !self.then.is_empty() {
            value["then"] = serde_json::to_value(&self.then).expect("steps serialize");
        }
        crate::sha256_hex(crate::plan::canonical_json(&value).as_bytes())
    }
}

/// Checks a suite's method entry and expands its sweeps.
pub fn expand_method(
    name: &str,
    label: Option<&str>,
    params: &BTreeMap<String, Value>,
) -> Result<Vec<MethodConfig>, String> {
    check_method(name, params)?;
    let lists = METHODS
        .iter()
        .find(|m| m.name == name)
        .map_or(&[][..], |m| m.list_params);
    sweep(name, label.unwrap_or(name), params, lists)
}

/// The method is implemented and takes these parameters.
fn check_method(name: &str, params: &BTreeMap<String, Value>) -> Result<(), String> {
    let info = METHODS.iter().find(|m| m.name == name).ok_or_else(|| {
        let hint = moebench_core::suggest::closest(name, method_names())
            .map(|best| format!("did you mean `{best}`? "))
            .unwrap_or_default();
        format!(
            "unknown method `{name}` ({hint}implemented: {})",
            method_names().join(", ")
        )
    })?;
    match params.keys().find(|k| !info.params.contains(&k.as_str())) {
        None => Ok(()),
        Some(key) => {
            let accepted = match info.params {
                [] => "none".to_owned(),
                names => names.join(", "),
            };
            Err(format!(
                "method `{name}` has no parameter `{key}` (accepted: {accepted})"
            ))
        }
    }
}

/// One configuration per combination of the list-valued parameters.
fn sweep(
    name: &str,
    label: &str,
    params: &BTreeMap<String, Value>,
    list_params: &[&str],
) -> Result<Vec<MethodConfig>, String> {
    let mut combos: Vec<(BTreeMap<String, Value>, Vec<String>)> = vec![Default::default()];
    for (key, value) in params {
        let is_list_param = list_params.contains(&key.as_str());
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unknown_methods_and_params_are_errors() {
        let e = expand_method("dens", None, &BTreeMap::new()).unwrap_err();
        assert_eq!(
            e,
            "unknown method `dens` (did you mean `dense`? implemented: dense, upcycle, topk, topp, expert_choice, usmoe, dtop_p, freq_prune, ean_prune, reap, dume, dense2moe, layer_prune, train, btx, weight_average, ream, m_smoe, hc_smoe)"
        );
        let params = BTreeMap::from([("k".to_owned(), json!(2))]);
        let e = expand_method("dense", None, &params).unwrap_err();
        assert_eq!(e, "method `dense` has no parameter `k` (accepted: none)");
    }

    #[test]
    fn lists_sweep_parameters() {
        let params = serde_json::from_value(
            json!({"k": [1, 2], "mode": ["a", "b"], "fixed": 0.5, "layers": [[0, 1]]}),
        )
        .unwrap();
        let configs = sweep("topk", "t", &params, &[]).unwrap();
        let labels: Vec<&str> = configs.iter().map(|c| c.label.as_str()).collect();
        assert_eq!(
            labels,
            [
                "t[k=1,layers=[0,1],mode=a]",
                "t[k=1,layers=[0,1],mode=b]",
                "t[k=2,layers=[0,1],mode=a]",
                "t[k=2,layers=[0,1],mode=b]"
            ]
        );
        assert_eq!(
            configs[3].params_json(),
            json!({"fixed": 0.5, "k": 2, "layers": [0, 1], "mode": "b"})
        );
        assert_ne!(configs[0].hash(), configs[1].hash());
        let empty = serde_json::from_value(json!({"k": []})).unwrap();
        assert_eq!(
            sweep("topk", "t", &empty, &[]).unwrap_err(),
            "method `topk`: `k` sweeps an empty list"
        );
    }

    #[test]
    fn list_parameters_are_values_unless_given_a_list_of_lists() {
        let plain =
            serde_json::from_value(json!({"experts": ["a", "b"], "top_k": [1, 2]})).unwrap();
        let configs = expand_method("dume", None, &plain).unwrap();
        let labels: Vec<&str> = configs.iter().map(|c| c.label.as_str()).collect();
        assert_eq!(labels, ["dume[top_k=1]", "dume[top_k=2]"]);
        assert_eq!(configs[0].params["experts"], json!(["a", "b"]));
        let swept = serde_json::from_value(json!({"layers": [[0], [0, 1]]})).unwrap();
        let configs = expand_method("upcycle", None, &swept).unwrap();
        assert_eq!(configs.len(), 2);
        assert_eq!(configs[1].params["layers"], json!([0, 1]));
    }

    #[test]
    fn dense_is_the_identity_with_a_stable_hash() {
        let configs = expand_method("dense", None, &BTreeMap::new()).unwrap();
        assert_eq!(configs.len(), 1);
        assert_eq!(configs[0].label, "dense");
        assert_eq!(configs[0].params_json(), json!({}));
        assert_eq!(configs[0].hash(), configs[0].clone().hash());
        assert_eq!(configs[0].hash().len(), 64);
    }
}
