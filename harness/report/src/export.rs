//! Machine-readable results next to the report: `results.csv` (one row per metric record of
//! the finished jobs) and `results.json` (lm-eval's aggregated schema, one entry per
//! `model_label/method_label`).
use crate::metric;
use crate::run::{row_label, Run};
use crate::ReportError;
use moebench_suite::{Record, RecordKind};
use serde::Serialize;
use serde_json::{json, Map, Value};
use std::path::Path;

pub const CSV_FILE: &str = "results.csv";
pub const JSON_FILE: &str = "results.json";

/// A `results.csv` row: the record, with `method_params` as JSON text.
#[derive(Serialize)]
struct CsvRow<'a> {
    suite: &'a str,
    job: &'a str,
    model: &'a str,
    model_label: &'a str,
    model_sha: &'a str,
    method: &'a str,
    method_label: &'a str,
    method_params: String,
    method_hash: &'a str,
    task: Option<&'a str>,
    task_hash: Option<&'a str>,
    metric: &'a str,
    value: f64,
    stderr: Option<f64>,
    n: Option<u64>,
    higher_is_better: Option<bool>,
    protocol: Option<&'a str>,
    device: &'a str,
    dtype: &'a str,
    batch_size: usize,
    seed: u64,
    harness_version: &'a str,
    wall_s: f64,
    time: &'a str,
}

impl<'a> From<&'a Record> for CsvRow<'a> {
    fn from(r: &'a Record) -> Self {
        Self {
            suite: &r.suite,
            job: &r.job,
            model: &r.model,
            model_label: &r.model_label,
            model_sha: &r.model_sha,
            method: &r.method,
            method_label: &r.method_label,
            method_params: r.method_params.to_string(),
            method_hash: &r.method_hash,
            task: r.task.as_deref(),
            task_hash: r.task_hash.as_deref(),
            metric: &r.metric,
            value: r.value,
            stderr: r.stderr,
            n: r.n,
            higher_is_better: r.higher_is_better,
            protocol: r.protocol.as_deref(),
            device: &r.device,
            dtype: &r.dtype,
            batch_size: r.batch_size,
            seed: r.seed,
            harness_version: &r.harness_version,
            wall_s: r.wall_s,
            time: &r.time,
        }
    }
}

/// Writes `results.csv`: every metric record of the finished jobs, in file order.
pub fn write_csv(run: &Run, path: &Path) -> Result<(), ReportError> {
    let csv_error = |source| ReportError::Csv {
        path: path.to_owned(),
        source,
    };
    let mut writer = csv::Writer::from_path(path).map_err(csv_error)?;
    for r in run.of_kind(RecordKind::Metric) {
        writer.serialize(CsvRow::from(r)).map_err(csv_error)?;
    }
    writer.flush().map_err(ReportError::write(path))
}

/// `results.json`: `results.<model_label/method_label>.<task>` holds lm-eval's
/// `"<metric>,<filter>"` and `"<metric>_stderr,<filter>"` keys (`"N/A"` without a stderr);
/// `measures`, `n-samples` and `config` are keyed the same way, `run` is `run.json`.
pub fn results_json(run: &Run) -> Value {
    let mut results = Map::new();
    let mut n_samples = Map::new();
    let mut measures = Map::new();
    let mut config = Map::new();
    for r in run.latest(RecordKind::Metric) {
        let task = r.task.clone().unwrap_or_default();
        let entry = object(object(&mut results, row_label(r)), task.clone());
        entry.insert("alias".into(), json!(task));
        let (name, filter) = metric::split(&r.metric);
        entry.insert(r.metric.clone(), json!(r.value));
        entry.insert(
            format!("{name}_stderr,{filter}"),
            r.stderr.map_or(json!("N/A"), |s| json!(s)),
        );
        if let Some(n) = r.n {
            object(&mut n_samples, row_label(r)).insert(task, json!({ "effective": n }));
        }
    }
    for r in run.latest(RecordKind::Measure) {
        object(&mut measures, row_label(r)).insert(r.metric.clone(), json!(r.value));
    }
    for r in &run.records {
        config.insert(row_label(r), row_config(r));
    }
    json!({
        "results": results,
        "measures": measures,
        "n-samples": n_samples,
        "config": config,
        "run": run.info,
    })
}

fn row_config(r: &Record) -> Value {
    json!({
        "model": r.model,
        "model_label": r.model_label,
        "model_sha": r.model_sha,
        "method": r.method,
        "method_label": r.method_label,
        "method_params": r.method_params,
        "method_hash": r.method_hash,
        "device": r.device,
        "dtype": r.dtype,
        "batch_size": r.batch_size,
        "seed": r.seed,
        "harness_version": r.harness_version,
    })
}

/// The object under `key`, created empty when absent.
fn object(map: &mut Map<String, Value>, key: String) -> &mut Map<String, Value> {
    map.entry(key)
        .or_insert_with(|| Value::Object(Map::new()))
        .as_object_mut()
        .expect("only objects are inserted here")
}

/// Writes `results.json` (pretty-printed).
pub fn write_json(run: &Run, path: &Path) -> Result<(), ReportError> {
    let text = serde_json::to_string_pretty(&results_json(run)).expect("JSON values serialize");
    std::fs::write(path, text + "\n").map_err(ReportError::write(path))
}
