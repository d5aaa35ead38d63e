//! The leaderboard printed at the end of `moebench run`: one row per (model, method), measure
//! columns first, then one column per task metric.
use crate::store::{Record, RecordKind};
use std::collections::BTreeMap;
use std::fmt::Write;

/// A column: the task (`None` for measures) and the metric key.
type Column = (Option<String>, String);

/// The records (as [`crate::read_records`] returns them) as a markdown table. Rows and columns
/// keep the order they first appear in; metrics read `value ± stderr`, with ↑/↓ for the better
/// direction in the header; an empty cell means no finished job for it.
pub fn leaderboard_markdown(records: &[Record]) -> String {
    let mut rows: Vec<(String, String)> = Vec::new();
    let mut columns: Vec<Column> = Vec::new();
    let mut cells: BTreeMap<(usize, usize), String> = BTreeMap::new();
    let mut arrows: BTreeMap<usize, &str> = BTreeMap::new();
    for r in records.iter().filter(|r| r.kind != RecordKind::JobDone) {
        let row = index(&mut rows, (r.model_label.clone(), r.method_label.clone()));
        let col = index(&mut columns, (r.task.clone(), r.metric.clone()));
        cells.insert((row, col), cell(r));
        if let Some(better) = r.higher_is_better {
            arrows.insert(col, if better { "↑" } else { "↓" });
        }
    }
    let mut order: Vec<usize> = (0..columns.len()).collect();
    order.sort_by_key(|&c| columns[c].0.is_some());
    let mut s = String::from("|model|method|");
    for &c in &order {
        let (task, metric) = &columns[c];
        let metric = metric.strip_suffix(",none").unwrap_or(metric);
        let arrow = arrows.get(&c).copied().unwrap_or_default();
        let _ = match task {
            Some(task) => write!(s, "{task} {metric}{arrow}|"),
            None => write!(s, "{metric}{arrow}|"),
        };
    }
    s.push_str(&format!("\n|---|---|{}\n", "---:|".repeat(order.len())));
    for (i, (model, method)) in rows.iter().enumerate() {
        let _ = write!(s, "|{model}|{method}|");
        for &c in &order {
            let _ = write!(s, "{}|", cells.get(&(i, c)).map_or("", String::as_str));
        }
        s.push('\n');
    }
    s
}

/// The best method of one base model on the run's headline metric.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Best {
    pub model: String,
    /// `task/metric`.
    pub metric: String,
    pub method: String,
    pub value: f64,
    pub stderr: Option<f64>,
    /// The same metric of the model's first method (the suite's reference, usually `dense`).
    pub reference: Option<(String, f64)>,
    /// More than one method reached the best value: no winner.
    pub tie: bool,
}

/// Per base model, the best method on the headline metric: the first task metric (in record
/// order) that says which direction is better. NaN values never win.
pub fn best_per_model(records: &[Record]) -> Vec<Best> {
    let metrics = || {
        records
            .iter()
            .filter(|r| r.kind == RecordKind::Metric && r.higher_is_better.is_some())
    };
    let Some(headline) = metrics().next() else {
        return Vec::new();
    };
    let (task, metric) = (headline.task.clone(), headline.metric.clone());
    let mut models: Vec<String> = Vec::new();
    for r in metrics() {
        index(&mut models, r.model_label.clone());
    }
    models
        .into_iter()
        .filter_map(|model| {
            let rows: Vec<&Record> = metrics()
                .filter(|r| r.model_label == model && r.task == task && r.metric == metric)
                .collect();
            let higher = rows.first()?.higher_is_better == Some(true);
            let better = |a: f64, b: f64| if higher { a > b } else { a < b };
            let best =
                rows.iter()
                    .filter(|r| !r.value.is_nan())
                    .fold(None::<&&Record>, |best, r| match best {
                        Some(b) if !better(r.value, b.value) => Some(b),
                        _ => Some(r),
                    })?;
            Some(Best {
                model,
                metric: format!("{}/{}", task.as_deref().unwrap_or_default(), metric),
                method: best.method_label.clone(),
                value: best.value,
                stderr: best.stderr,
                reference: rows.first().map(|r| (r.method_label.clone(), r.value)),
                tie: rows.iter().filter(|r| r.value == best.value).count() > 1,
            })
        })
        .collect()
}

/// Position of `item` in `list`, appended if absent.
fn index<T: PartialEq>(list: &mut Vec<T>, item: T) -> usize {
    match list.iter().position(|x| *x == item) {
        Some(i) => i,
        None => {
            list.push(item);
            list.len() - 1
        }
    }
}

fn cell(r: &Record) -> String {
    match (r.kind, r.stderr) {
        (RecordKind::Measure, _) => si(r.value),
        (_, Some(e)) => format!("{:.4} ± {e:.4}", r.value),
        (_, None) => format!("{:.4}", r.value),
    }
}

/// 134515008 → `134.52M`.
fn si(v: f64) -> String {
    let (scaled, unit) = [(1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")]
        .into_iter()
        .find(|(scale, _)| v.abs() >= *scale)
        .map_or((v, ""), |(scale, unit)| (v / scale, unit));
    format!("{scaled:.2}{unit}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(
        kind: RecordKind,
        model: &str,
        task: Option<&str>,
        metric: &str,
        value: f64,
    ) -> Record {
        let line = serde_json::json!({
            "kind": kind, "suite": "s", "job": "j", "model": model, "model_label": model,
            "model_sha": "x", "method": "dense", "method_label": "dense", "method_params": {},
            "method_hash": "h", "task": task, "task_hash": task.map(|_| "th"), "metric": metric,
            "value": value, "stderr": task.map(|_| 0.01), "n": null,
            "higher_is_better": task.map(|_| true), "protocol": null, "device": "cpu",
            "dtype": "f32", "batch_size": 1, "seed": 1, "harness_version": "0", "wall_s": 1.0,
            "time": "t"
        });
        serde_json::from_value(line).unwrap()
    }

    #[test]
    fn rows_per_model_method_measures_first() {
        let records = [
            record(RecordKind::Metric, "a", Some("arc"), "acc,none", 0.5),
            record(
                RecordKind::Measure,
                "a",
                None,
                "params_active",
                134_515_008.0,
            ),
            record(RecordKind::JobDone, "a", None, "records", 1.0),
            record(RecordKind::Measure, "b", None, "params_active", 1500.0),
        ];
        let table = leaderboard_markdown(&records);
        assert_eq!(
            table,
            "|model|method|params_active|arc acc↑|\n|---|---|---:|---:|\n|a|dense|134.52M|0.5000 ± 0.0100|\n|b|dense|1.50k||\n"
        );
    }

    fn metric(method: &str, value: f64) -> Record {
        let mut r = record(RecordKind::Metric, "m", Some("arc"), "acc,none", value);
        r.method_label = method.into();
        r
    }

    #[test]
    fn best_method_is_named_against_the_first_method_and_ties_are_flagged() {
        let best = best_per_model(&[
            metric("dense", 0.5),
            metric("reap", 0.6),
            metric("freq", f64::NAN),
        ]);
        assert_eq!(best.len(), 1);
        assert_eq!(best[0].method, "reap");
        assert_eq!(best[0].metric, "arc/acc,none");
        assert_eq!(best[0].reference, Some(("dense".into(), 0.5)));
        assert!(!best[0].tie);
        let tied = best_per_model(&[metric("dense", 0.5), metric("reap", 0.5)]);
        assert!(tied[0].tie, "equal values are a tie, not a win");
    }
}
