//! lm-eval's aggregated results schema (`lm_eval/result_schema.py`,
//! `EvaluationTracker.save_results_aggregated`), group scores, and the console table.
use crate::evaluate::TaskOutcome;
use moebench_core::stats::{group_mean, pooled_sample_stderr, unweighted_mean_stderr};
use moebench_tasks::GroupSpec;
use serde::Serialize;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// What produced the numbers (lm-eval's `config` block plus moebench's provenance).
#[derive(Debug, Clone, Serialize)]
pub struct RunConfig {
    pub model: String,
    pub model_repo: String,
    /// Hub commit of the weights (`model_sha`); `None` for a local directory.
    pub model_sha: Option<String>,
    pub model_num_parameters: i64,
    pub model_dtype: String,
    pub device: String,
    pub batch_size: usize,
    /// Most padded tokens per forward pass, and how it was chosen (`auto`: from free memory).
    pub token_budget: usize,
    pub token_budget_source: String,
    pub max_length: usize,
    pub limit: Option<usize>,
    pub bootstrap_iters: usize,
    pub fewshot_seed: u64,
    pub tokenizer_sha256: String,
    pub harness_version: String,
}

/// A group's aggregate of its subtasks' metrics (`lm_eval/api/group.py` `Group.aggregate`):
/// the size-weighted mean with the pooled stderr, or with `weight_by_size: false` the plain
/// mean with the stderr of a mean of independent means.
pub fn group_outcome(group: &GroupSpec, children: &[&TaskOutcome]) -> Map<String, Value> {
    let mut out = Map::new();
    out.insert("alias".into(), json!(group.config.group));
    for agg in &group.config.aggregate_metric_list {
        let keys: std::collections::BTreeSet<&String> = children
            .iter()
            .flat_map(|c| c.metrics.keys())
            .filter(|k| k.split(',').next() == Some(agg.metric.as_str()))
            .filter(|k| {
                let filter = k.split(',').nth(1).unwrap_or("none");
                agg.filter_list
                    .as_ref()
                    .is_none_or(|f| f.iter().any(|x| x == filter))
            })
            .collect();
        for key in keys {
            let parts: Vec<(&TaskOutcome, f64, Option<f64>)> = children
                .iter()
                .filter_map(|c| c.metrics.get(key).map(|m| (*c, m.value, m.stderr)))
                .collect();
            let sizes: Vec<usize> = parts.iter().map(|p| p.0.n_effective).collect();
            let values: Vec<f64> = parts.iter().map(|p| p.1).collect();
            out.insert(
                key.clone(),
                json!(group_mean(&values, &sizes, agg.weight_by_size)),
            );
            let stderrs: Option<Vec<f64>> = parts.iter().map(|p| p.2).collect();
            let stderr = stderrs.map(|s| {
                if agg.weight_by_size {
                    pooled_sample_stderr(&s, &sizes)
                } else {
                    unweighted_mean_stderr(&s)
                }
            });
            let (metric, filter) = key.split_once(',').unwrap_or((key, "none"));
            out.insert(
                format!("{metric}_stderr,{filter}"),
                stderr.map_or(json!("N/A"), |s| json!(s)),
            );
        }
    }
    out
}

fn task_entry(t: &TaskOutcome) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("alias".into(), json!(t.name));
    for (key, v) in &t.metrics {
        let (metric, filter) = key.split_once(',').unwrap_or((key, "none"));
        m.insert(key.clone(), json!(v.value));
        m.insert(
            format!("{metric}_stderr,{filter}"),
            v.stderr.map_or(json!("N/A"), |s| json!(s)),
        );
    }
    if let Some(p) = &t.ppl_protocol {
        m.insert("ppl_protocol".into(), json!(p));
    }
    m
}

/// The whole `results.json` document.
pub fn results_json(
    outcomes: &[TaskOutcome],
    groups: &[(GroupSpec, Vec<String>)],
    run: &RunConfig,
    timing: (f64, f64),
) -> Value {
    let by_name: BTreeMap<&str, &TaskOutcome> =
        outcomes.iter().map(|t| (t.name.as_str(), t)).collect();
    let mut results = Map::new();
    let mut group_results = Map::new();
    let mut group_subtasks = Map::new();
    for (group, names) in groups {
        let children: Vec<&TaskOutcome> = names
            .iter()
            .filter_map(|n| by_name.get(n.as_str()).copied())
            .collect();
        let entry = group_outcome(group, &children);
        results.insert(group.config.group.clone(), Value::Object(entry.clone()));
        group_results.insert(group.config.group.clone(), Value::Object(entry));
        group_subtasks.insert(group.config.group.clone(), json!(names));
    }
    for t in outcomes {
        results.insert(t.name.clone(), Value::Object(task_entry(t)));
    }
    let per_task = |f: &dyn Fn(&TaskOutcome) -> Value| -> Map<String, Value> {
        outcomes.iter().map(|t| (t.name.clone(), f(t))).collect()
    };
    json!({
        "results": results,
        "groups": group_results,
        "group_subtasks": group_subtasks,
        "configs": per_task(&|t| t.config.clone()),
        "versions": per_task(&|t| t.version.clone()),
        "n-shot": per_task(&|t| json!(t.num_fewshot)),
        "higher_is_better": per_task(&|t| json!(t.metrics.iter().map(|(k, v)| (k.split(',').next().unwrap_or(k).to_string(), v.higher_is_better)).collect::<BTreeMap<_, _>>())),
        "n-samples": per_task(&|t| json!({"original": t.n_original, "effective": t.n_effective})),
        "config": run,
        "task_hashes": per_task(&|t| json!(t.task_hash)),
        "moebench_task_content_hashes": per_task(&|t| json!(t.content_hash)),
        "model_name": run.model,
        "model_sha": run.model_sha,
        "max_length": run.max_length,
        "start_time": timing.0,
        "end_time": timing.1,
        "total_evaluation_time_seconds": format!("{:.3}", timing.1 - timing.0),
    })
}

/// lm-eval's console table: `|Tasks|Version|Filter|n-shot|Metric| |Value| |Stderr|`.
pub fn markdown_table(outcomes: &[TaskOutcome]) -> String {
    let mut s = String::from("|Tasks|Version|Filter|n-shot|Metric| |Value| |Stderr|\n|---|---|---|---:|---|---|---:|---|---:|\n");
    for t in outcomes {
        for (key, v) in &t.metrics {
            let (metric, filter) = key.split_once(',').unwrap_or((key, "none"));
            let arrow = if v.higher_is_better { "↑" } else { "↓" };
            let stderr = v.stderr.map_or("N/A".to_string(), |e| format!("{e:.4}"));
            let version = match &t.version {
                Value::Null => "-".to_string(),
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            s.push_str(&format!(
                "|{}|{}|{}|{}|{}|{}|{:.4}|±|{}|\n",
                t.name, version, filter, t.num_fewshot, metric, arrow, v.value, stderr
            ));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evaluate::MetricValue;

    fn outcome(name: &str, acc: f64, stderr: f64, n: usize) -> TaskOutcome {
        let metric = MetricValue {
            value: acc,
            stderr: Some(stderr),
            higher_is_better: true,
            stderr_is_moebench_extension: false,
        };
        TaskOutcome {
            name: name.to_owned(),
            metrics: BTreeMap::from([("acc,none".to_owned(), metric)]),
            n_original: n,
            n_effective: n,
            samples: Vec::new(),
            task_hash: String::new(),
            content_hash: String::new(),
            version: json!(1),
            num_fewshot: 0,
            config: json!({}),
            ppl_protocol: None,
        }
    }

    fn group(weight_by_size: bool) -> GroupSpec {
        GroupSpec {
            path: "g.yaml".into(),
            config: serde_json::from_value(json!({
                "group": "g",
                "task": ["a", "b"],
                "aggregate_metric_list": [{"metric": "acc", "weight_by_size": weight_by_size}],
            }))
            .unwrap(),
        }
    }

    /// Values from lm-eval 0.4.13 (`aggregate_subtask_metrics`, `pooled_sample_stderr`,
    /// `unweighted_mean_stderr` of `lm_eval/api/metrics.py`) for these two subtasks: the
    /// unweighted group must not take the pooled stderr (regression: it did).
    #[test]
    fn group_stderr_follows_weight_by_size() {
        let (a, b) = (outcome("a", 0.5, 0.1, 10), outcome("b", 0.8, 0.05, 30));
        let weighted = group_outcome(&group(true), &[&a, &b]);
        assert_eq!(weighted["acc,none"], json!(0.725));
        assert_eq!(weighted["acc_stderr,none"], json!(0.04497806482930845));
        let unweighted = group_outcome(&group(false), &[&a, &b]);
        assert_eq!(unweighted["acc,none"], json!(0.65));
        assert_eq!(unweighted["acc_stderr,none"], json!(0.05590169943749475));
    }
}
