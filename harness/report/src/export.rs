//! Machine-readable results next to the report: `results.csv` (tidy: one row per (model,
//! method, task, metric) with the row's costs, its 95% interval and its Δ vs the base model's
//! dense row — what a pandas or polars user plots cost against quality from) and
//! `results.json` (lm-eval's aggregated schema, one entry per `model_label/method_label`).
use crate::baseline::Analysis;
use crate::metric;
use crate::run::{row_label, Run};
use crate::ReportError;
use moebench_suite::{Record, RecordKind};
use serde::Serialize;
use serde_json::{json, Map, Value};

pub const CSV_FILE: &str = "results.csv";
pub const JSON_FILE: &str = "results.json";

/// A `results.csv` row; docs/report.md describes every column.
#[derive(Serialize)]
struct CsvRow<'a> {
    suite: &'a str,
    base_model: &'a str,
    model: &'a str,
    model_label: &'a str,
    model_sha: &'a str,
    method: &'a str,
    method_label: &'a str,
    method_params: String,
    method_hash: &'a str,
    task: &'a str,
    task_hash: Option<&'a str>,
    metric: &'a str,
    metric_name: &'a str,
    filter: &'a str,
    headline: bool,
    value: f64,
    stderr: Option<f64>,
    ci_low: Option<f64>,
    ci_high: Option<f64>,
    n: Option<u64>,
    higher_is_better: Option<bool>,
    base_value: Option<f64>,
    delta_vs_base: Option<f64>,
    delta_p_value: Option<f64>,
    delta_test: Option<String>,
    params_total: Option<f64>,
    params_active: Option<f64>,
    flops_per_token: Option<f64>,
    bytes_per_decode_token: Option<f64>,
    tpot_ms_b1: Option<f64>,
    ttft_ms_b1: Option<f64>,
    decode_tokens_per_s_b1: Option<f64>,
    peak_rss_mib: Option<f64>,
    protocol: Option<&'a str>,
    device: &'a str,
    dtype: &'a str,
    batch_size: usize,
    seed: u64,
    harness_version: &'a str,
    job: &'a str,
    wall_s: f64,
    time: &'a str,
}

/// `results.csv`: the latest value of every task metric of the finished jobs, in record order.
pub fn results_csv(run: &Run, analysis: &Analysis) -> Result<Vec<u8>, ReportError> {
    let csv_error = |source| ReportError::Csv {
        path: run.dir.join(CSV_FILE),
        source,
    };
    let rows = &analysis.rows;
    let mut writer = csv::Writer::from_writer(Vec::new());
    for r in run.latest(RecordKind::Metric) {
        let i = rows
            .position(&r.model_label, &r.method_label)
            .expect("every metric record has its row");
        let row = &rows.rows[i];
        let base = analysis.base_of(i);
        let task = r.task.as_deref().unwrap_or_default();
        let reference = base
            .and_then(|b| b.reference)
            .filter(|&reference| reference != i)
            .and_then(|reference| rows.rows[reference].metric(task, &r.metric));
        let headline = rows
            .headlines
            .iter()
            .position(|h| h.task == task && h.metric == r.metric);
        let tested = headline.and_then(|h| {
            analysis.deltas[i]
                .as_ref()
                .and_then(|d| d.headlines[h].as_ref())
        });
        let ci = r.stderr.filter(|s| s.is_finite()).map(|s| 1.96 * s);
        let (metric_name, filter) = metric::split(&r.metric);
        let record = CsvRow {
            base_model: base.map_or(r.model_label.as_str(), |b| b.name.as_str()),
            method_params: r.method_params.to_string(),
            task,
            metric_name,
            filter,
            headline: headline.is_some(),
            ci_low: ci.map(|c| r.value - c),
            ci_high: ci.map(|c| r.value + c),
            base_value: reference.map(|b| b.value),
            delta_vs_base: reference.map(|b| r.value - b.value),
            delta_p_value: tested.and_then(|t| t.two_sided_p()),
            delta_test: tested.map(|t| t.test.describe()),
            params_total: row.cost("params_total"),
            params_active: row.cost("params_active"),
            flops_per_token: row.cost("flops_per_token"),
            bytes_per_decode_token: row.cost("bytes_per_decode_token"),
            tpot_ms_b1: row.cost("tpot_ms_b1"),
            ttft_ms_b1: row.cost("ttft_ms_b1"),
            decode_tokens_per_s_b1: row.cost("decode_tokens_per_s_b1"),
            peak_rss_mib: row.cost("peak_rss_mib"),
            ..CsvRow::of(r)
        };
        writer.serialize(record).map_err(csv_error)?;
    }
    writer.into_inner().map_err(|e| ReportError::Write {
        path: run.dir.join(CSV_FILE),
        source: e.into_error(),
    })
}

impl<'a> CsvRow<'a> {
    /// The record's own fields; the rest empty.
    fn of(r: &'a Record) -> Self {
        Self {
            suite: &r.suite,
            base_model: &r.model_label,
            model: &r.model,
            model_label: &r.model_label,
            model_sha: &r.model_sha,
            method: &r.method,
            method_label: &r.method_label,
            method_params: String::new(),
            method_hash: &r.method_hash,
            task: r.task.as_deref().unwrap_or_default(),
            task_hash: r.task_hash.as_deref(),
            metric: &r.metric,
            metric_name: "",
            filter: "",
            headline: false,
            value: r.value,
            stderr: r.stderr,
            ci_low: None,
            ci_high: None,
            n: r.n,
            higher_is_better: r.higher_is_better,
            base_value: None,
            delta_vs_base: None,
            delta_p_value: None,
            delta_test: None,
            params_total: None,
            params_active: None,
            flops_per_token: None,
            bytes_per_decode_token: None,
            tpot_ms_b1: None,
            ttft_ms_b1: None,
            decode_tokens_per_s_b1: None,
            peak_rss_mib: None,
            protocol: r.protocol.as_deref(),
            device: &r.device,
            dtype: &r.dtype,
            batch_size: r.batch_size,
            seed: r.seed,
            harness_version: &r.harness_version,
            job: &r.job,
            wall_s: r.wall_s,
            time: &r.time,
        }
    }
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
    // The last record of a row wins (a resumed run may have changed, e.g., the harness).
    for r in run.records.iter().rev() {
        let label = row_label(r);
        if !config.contains_key(&label) {
            config.insert(label, row_config(r));
        }
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

/// `results.json` as text (pretty-printed).
pub fn results_json_text(run: &Run) -> String {
    serde_json::to_string_pretty(&results_json(run)).expect("JSON values serialize") + "\n"
}
