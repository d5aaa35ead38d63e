//! The aggregations behind the leaderboard, the Pareto plots and the history trends, with
//! polars (its eager core only, to keep its build small): each task's headline metric and the
//! per-row accuracy average.
use crate::metric;
use crate::run::Run;
use moebench_suite::RecordKind;
use polars::prelude::*;

/// One headline-metric number of one run.
#[derive(Debug, Clone, PartialEq)]
pub struct PrimaryValue {
    /// Index of the run in the slice given to [`primary_values`].
    pub run: u32,
    pub model_label: String,
    pub method_label: String,
    pub task: String,
    pub metric: String,
    pub value: f64,
    pub stderr: Option<f64>,
    pub higher_is_better: Option<bool>,
    pub accuracy_like: bool,
}

/// The accuracy average of one row (model × method).
#[derive(Debug, Clone, PartialEq)]
pub struct Average {
    pub model_label: String,
    pub method_label: String,
    pub value: f64,
    /// How many tasks it averages.
    pub tasks: u32,
}

/// The latest metric records of every run, with the run index, record order, the metric's
/// headline rank and whether it is an accuracy.
fn metric_frame(runs: &[&Run]) -> PolarsResult<DataFrame> {
    let rows: Vec<(u32, &moebench_suite::Record)> = runs
        .iter()
        .enumerate()
        .flat_map(|(i, run)| {
            run.latest(RecordKind::Metric)
                .into_iter()
                .map(move |r| (i as u32, r))
        })
        .collect();
    df!(
        "run" => rows.iter().map(|(i, _)| *i).collect::<Vec<u32>>(),
        "order" => (0..rows.len() as u32).collect::<Vec<u32>>(),
        "model_label" => rows.iter().map(|(_, r)| r.model_label.as_str()).collect::<Vec<_>>(),
        "method_label" => rows.iter().map(|(_, r)| r.method_label.as_str()).collect::<Vec<_>>(),
        "task" => rows.iter().map(|(_, r)| r.task.as_deref().unwrap_or_default()).collect::<Vec<_>>(),
        "metric" => rows.iter().map(|(_, r)| r.metric.as_str()).collect::<Vec<_>>(),
        "value" => rows.iter().map(|(_, r)| r.value).collect::<Vec<f64>>(),
        "stderr" => rows.iter().map(|(_, r)| r.stderr).collect::<Vec<_>>(),
        "higher_is_better" => rows.iter().map(|(_, r)| r.higher_is_better).collect::<Vec<_>>(),
        "rank" => rows.iter().map(|(_, r)| metric::primary_rank(&r.metric)).collect::<Vec<u32>>(),
        "accuracy_like" => rows
            .iter()
            .map(|(_, r)| metric::accuracy_like(&r.metric, r.higher_is_better))
            .collect::<Vec<bool>>(),
    )
}

/// The rows of each task's headline metric (the lowest rank, ties broken by name), in record
/// order.
fn headline_rows(metrics: &DataFrame) -> PolarsResult<DataFrame> {
    metrics
        .sort(["task", "rank", "metric"], SortMultipleOptions::default())?
        .group_by_stable(["task"])?
        .apply(|task| {
            let names = task.column("metric")?.str()?;
            let best = names.get(0).unwrap_or_default().to_owned();
            task.filter(&names.equal(best.as_str()))
        })?
        .sort(["order"], SortMultipleOptions::default())
}

/// The headline-metric values of `runs` (the headline of a task chosen over all of them), in
/// record order.
pub fn primary_values(runs: &[&Run]) -> PolarsResult<Vec<PrimaryValue>> {
    let metrics = metric_frame(runs)?;
    if metrics.height() == 0 {
        return Ok(Vec::new());
    }
    let df = headline_rows(&metrics)?;
    let run = u32s(&df, "run")?;
    let (model, method) = (strings(&df, "model_label")?, strings(&df, "method_label")?);
    let (task, name) = (strings(&df, "task")?, strings(&df, "metric")?);
    let (value, stderr) = (floats(&df, "value")?, floats(&df, "stderr")?);
    let hib = bools(&df, "higher_is_better")?;
    let acc = bools(&df, "accuracy_like")?;
    Ok((0..df.height())
        .map(|i| PrimaryValue {
            run: run[i],
            model_label: model[i].clone(),
            method_label: method[i].clone(),
            task: task[i].clone(),
            metric: name[i].clone(),
            value: value[i].unwrap_or(f64::NAN),
            stderr: stderr[i],
            higher_is_better: hib[i],
            accuracy_like: acc[i] == Some(true),
        })
        .collect())
}

fn primary_frame(values: &[PrimaryValue]) -> PolarsResult<DataFrame> {
    df!(
        "model_label" => values.iter().map(|v| v.model_label.as_str()).collect::<Vec<_>>(),
        "method_label" => values.iter().map(|v| v.method_label.as_str()).collect::<Vec<_>>(),
        "value" => values.iter().map(|v| v.value).collect::<Vec<f64>>(),
        "accuracy_like" => values.iter().map(|v| v.accuracy_like).collect::<Vec<bool>>(),
    )
}

/// Mean of the accuracy-like headline values per (model, method) of one run's `values`, rows in
/// record order.
pub fn averages(values: &[PrimaryValue]) -> PolarsResult<Vec<Average>> {
    let df = primary_frame(values)?;
    let accuracies = df.filter(df.column("accuracy_like")?.bool()?)?;
    if accuracies.height() == 0 {
        return Ok(Vec::new());
    }
    let keys = ["model_label", "method_label"];
    let df = accuracies.group_by_stable(keys)?.apply(|row| {
        let mean = row.column("value")?.f64()?.mean().unwrap_or(f64::NAN);
        let mut out = row.select(keys)?.head(Some(1));
        out.with_column(Column::new("average".into(), [mean]))?;
        out.with_column(Column::new("tasks".into(), [row.height() as u32]))?;
        Ok(out)
    })?;
    let (model, method) = (strings(&df, "model_label")?, strings(&df, "method_label")?);
    let value = floats(&df, "average")?;
    let tasks = u32s(&df, "tasks")?;
    Ok((0..df.height())
        .map(|i| Average {
            model_label: model[i].clone(),
            method_label: method[i].clone(),
            value: value[i].unwrap_or(f64::NAN),
            tasks: tasks[i],
        })
        .collect())
}

fn strings(df: &DataFrame, name: &str) -> PolarsResult<Vec<String>> {
    Ok(df
        .column(name)?
        .str()?
        .iter()
        .map(|s| s.unwrap_or_default().to_owned())
        .collect())
}

fn floats(df: &DataFrame, name: &str) -> PolarsResult<Vec<Option<f64>>> {
    Ok(df.column(name)?.f64()?.iter().collect())
}

fn bools(df: &DataFrame, name: &str) -> PolarsResult<Vec<Option<bool>>> {
    Ok(df.column(name)?.bool()?.iter().collect())
}

fn u32s(df: &DataFrame, name: &str) -> PolarsResult<Vec<u32>> {
    Ok(df
        .column(name)?
        .u32()?
        .iter()
        .map(Option::unwrap_or_default)
        .collect())
}
