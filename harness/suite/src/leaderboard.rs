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
}
