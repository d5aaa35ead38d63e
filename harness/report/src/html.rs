//! The HTML report: the sections' contents built from a run (and its history), drawn by the
//! minijinja templates of `reports/`, which are compiled into the binary.
use crate::frame::{averages, primary_values, Average, PrimaryValue};
use crate::metric::{self, fmt_cell, fmt_measure, fmt_value};
use crate::routing::routing_loads;
use crate::run::{key, MetricKey, Run};
use crate::svg::{hypervolume, line_chart, scatter, Heatmap, LineChart, Point, Scatter};
use crate::table::{distinct, Cell, Pivot, Style, Table};
use crate::ReportError;
use minijinja::{AutoEscape, Environment};
use moebench_suite::suite::{ReportSpec, Target};
use moebench_suite::{Record, RecordKind};
use serde::Serialize;
use std::collections::{BTreeSet, HashMap};

const TEMPLATES: [(&str, &str); 3] = [
    ("report.html", include_str!("../../../reports/report.html")),
    (
        "partials/table.html",
        include_str!("../../../reports/partials/table.html"),
    ),
    (
        "partials/charts.html",
        include_str!("../../../reports/partials/charts.html"),
    ),
];

#[derive(Debug, Serialize)]
struct Page {
    title: String,
    generator: String,
    meta: Vec<(String, String)>,
    leaderboard: Table,
    tasks: Vec<TaskSection>,
    measures: Option<Table>,
    pareto: Vec<Scatter>,
    routing: Vec<Heatmap>,
    targets: Option<Table>,
    history: Option<History>,
    jobs: Table,
}

/// Trends of the headline metrics over several runs.
#[derive(Debug, Serialize)]
struct History {
    runs: Vec<String>,
    charts: Vec<LineChart>,
}

#[derive(Debug, Serialize)]
struct TaskSection {
    task: String,
    protocols: String,
    table: Table,
}

/// The report of `runs[current]`, with trends over all of `runs` (ordered by start time) when
/// there are several.
pub fn render_html(runs: &[Run], current: usize) -> Result<String, ReportError> {
    let run = &runs[current];
    let own: Vec<PrimaryValue> = primary_values(&[run])?;
    let row_averages = averages(&own)?;
    let page = Page {
        title: run
            .report_spec()?
            .and_then(|s| s.title)
            .unwrap_or_else(|| format!("moebench report — {}", run.info.suite)),
        generator: format!("moebench {}", env!("CARGO_PKG_VERSION")),
        meta: meta(run),
        leaderboard: leaderboard(&own, &row_averages),
        tasks: task_sections(run),
        measures: measures_table(run),
        pareto: {
            let spec = run.report_spec()?;
            let mut plots = spec
                .as_ref()
                .map(|s| suite_pareto_plots(run, s))
                .unwrap_or_default();
            plots.extend(pareto_plots(&row_averages, run));
            plots
        },
        routing: routing_loads(run)?.iter().map(|r| r.heatmap()).collect(),
        targets: run
            .targets()?
            .filter(|t| !t.is_empty())
            .map(|t| targets_table(run, &t)),
        history: if runs.len() > 1 {
            Some(history(runs)?)
        } else {
            None
        },
        jobs: jobs_table(run),
    };
    let mut env = Environment::new();
    env.set_auto_escape_callback(|_| AutoEscape::Html);
    for (name, source) in TEMPLATES {
        env.add_template(name, source)?;
    }
    Ok(env
        .get_template("report.html")?
        .render(minijinja::value::Serde(&page))?)
}

fn meta(run: &Run) -> Vec<(String, String)> {
    let records = &run.records;
    let values_of = |f: &dyn Fn(&Record) -> String| -> String {
        let set: BTreeSet<String> = records.iter().map(f).collect();
        set.into_iter().collect::<Vec<_>>().join(", ")
    };
    let done: Vec<&Record> = run.of_kind(RecordKind::JobDone).collect();
    let wall: f64 = done.iter().map(|r| r.wall_s).sum();
    vec![
        ("Suite".into(), run.info.suite.clone()),
        (
            "Suite file".into(),
            run.info.suite_path.display().to_string(),
        ),
        ("Suite sha256".into(), run.info.suite_sha256.clone()),
        ("Run directory".into(), run.dir.display().to_string()),
        ("Started".into(), run.info.start_time.clone()),
        ("Harness version".into(), run.info.harness_version.clone()),
        (
            "Record harness versions".into(),
            values_of(&|r| r.harness_version.clone()),
        ),
        (
            "Models".into(),
            values_of(&|r| format!("{} = {} @ {}", r.model_label, r.model, short(&r.model_sha))),
        ),
        (
            "Methods".into(),
            values_of(&|r| {
                format!(
                    "{} = {} {} #{}",
                    r.method_label,
                    r.method,
                    r.method_params,
                    short(&r.method_hash)
                )
            }),
        ),
        ("Devices".into(), values_of(&|r| r.device.clone())),
        ("Dtypes".into(), values_of(&|r| r.dtype.clone())),
        (
            "Finished jobs".into(),
            format!("{} ({} of job wall time)", done.len(), fmt_duration(wall)),
        ),
    ]
}

fn short(hash: &str) -> &str {
    &hash[..hash.len().min(12)]
}

fn fmt_duration(secs: f64) -> String {
    let whole = secs.round() as u64;
    match whole {
        _ if secs < 60.0 => format!("{secs:.1} s"),
        _ if whole < 3600 => format!("{}m {:02}s", whole / 60, whole % 60),
        _ => format!("{}h {:02}m", whole / 3600, whole % 3600 / 60),
    }
}

type RowKey = (String, String);

fn row_key(model_label: &str, method_label: &str) -> RowKey {
    (model_label.to_owned(), method_label.to_owned())
}

fn label_cells((model, method): &RowKey) -> Vec<Cell> {
    vec![Cell::label(model.clone()), Cell::label(method.clone())]
}

/// Rows model × method, a column per task's headline metric and the accuracy average; the best
/// value of each column is marked.
fn leaderboard(values: &[PrimaryValue], averages: &[Average]) -> Table {
    let pivot = Pivot::new(values.iter().map(|v| {
        (
            row_key(&v.model_label, &v.method_label),
            (v.task.clone(), v.metric.clone()),
            v,
        )
    }));
    let direction: HashMap<(String, String), Option<bool>> = values
        .iter()
        .map(|v| ((v.task.clone(), v.metric.clone()), v.higher_is_better))
        .collect();
    let accuracy_columns = values
        .iter()
        .filter(|v| v.accuracy_like)
        .map(|v| &v.task)
        .collect::<BTreeSet<_>>()
        .len() as u32;
    let mut header = vec!["model".to_owned(), "method".to_owned()];
    header.extend(pivot.columns.iter().map(|(task, m)| {
        format!(
            "{task} {}{}",
            metric::split(m).0,
            metric::arrow(direction[&(task.clone(), m.clone())])
        )
    }));
    let mut columns: Vec<Vec<(Option<f64>, Cell)>> = (0..pivot.columns.len())
        .map(|c| {
            (0..pivot.rows.len())
                .map(|r| match pivot.get(r, c) {
                    Some(v) => (Some(v.value), Cell::num(fmt_cell(v.value, v.stderr))),
                    None => (None, Cell::missing()),
                })
                .collect()
        })
        .collect();
    for (c, (task, m)) in pivot.columns.iter().enumerate() {
        mark_best(&mut columns[c], direction[&(task.clone(), m.clone())]);
    }
    if accuracy_columns > 0 {
        header.push(format!("accuracy avg ({accuracy_columns} tasks) ↑"));
        let mut column: Vec<(Option<f64>, Cell)> = pivot
            .rows
            .iter()
            .map(|row| average_cell(averages, row, accuracy_columns))
            .collect();
        mark_best(&mut column, Some(true));
        columns.push(column);
    }
    Table {
        header,
        rows: (0..pivot.rows.len())
            .map(|r| {
                let mut cells = label_cells(&pivot.rows[r]);
                cells.extend(columns.iter().map(|c| c[r].1.clone()));
                cells
            })
            .collect(),
    }
}

fn average_cell(averages: &[Average], (model, method): &RowKey, of: u32) -> (Option<f64>, Cell) {
    match averages
        .iter()
        .find(|a| &a.model_label == model && &a.method_label == method)
    {
        Some(a) if a.tasks == of => (Some(a.value), Cell::num(fmt_value(a.value))),
        Some(a) => (
            None,
            Cell::num(format!("{} ({}/{of} tasks)", fmt_value(a.value), a.tasks)),
        ),
        None => (None, Cell::missing()),
    }
}

/// Marks the best value of a column (when the direction is known).
fn mark_best(column: &mut [(Option<f64>, Cell)], higher_is_better: Option<bool>) {
    let Some(higher) = higher_is_better else {
        return;
    };
    let sign = if higher { 1.0 } else { -1.0 };
    let best = column
        .iter()
        .enumerate()
        .filter_map(|(i, (v, _))| v.filter(|v| v.is_finite()).map(|v| (i, sign * v)))
        .max_by(|a, b| a.1.total_cmp(&b.1));
    if let (Some((i, _)), true) = (best, column.len() > 1) {
        column[i].1.style = Style::Best;
    }
}

/// One table per task with every metric it reports.
fn task_sections(run: &Run) -> Vec<TaskSection> {
    let latest = run.latest(RecordKind::Metric);
    distinct(latest.iter().map(|r| r.task.clone().unwrap_or_default()))
        .iter()
        .map(|task| {
            let records: Vec<&&Record> = latest
                .iter()
                .filter(|r| r.task.as_deref() == Some(task))
                .collect();
            let protocols: BTreeSet<&str> = records
                .iter()
                .filter_map(|r| r.protocol.as_deref())
                .collect();
            TaskSection {
                task: task.clone(),
                protocols: protocols.into_iter().collect::<Vec<_>>().join(", "),
                table: metrics_table(&records),
            }
        })
        .collect()
}

fn metrics_table(records: &[&&Record]) -> Table {
    let pivot = Pivot::new(records.iter().map(|r| {
        (
            row_key(&r.model_label, &r.method_label),
            r.metric.clone(),
            **r,
        )
    }));
    let mut header = vec!["model".to_owned(), "method".to_owned(), "n".to_owned()];
    header.extend(pivot.columns.iter().map(|m| {
        let hib = records
            .iter()
            .find(|r| &r.metric == m)
            .and_then(|r| r.higher_is_better);
        format!("{m}{}", metric::arrow(hib))
    }));
    let rows = pivot
        .rows
        .iter()
        .enumerate()
        .map(|(i, row)| {
            let n = (0..pivot.columns.len()).find_map(|c| pivot.get(i, c).and_then(|r| r.n));
            let mut cells = label_cells(row);
            cells.push(Cell::num(n.map_or_else(String::new, |n| n.to_string())));
            cells.extend((0..pivot.columns.len()).map(|c| match pivot.get(i, c) {
                Some(r) => Cell::num(fmt_cell(r.value, r.stderr)),
                None => Cell::missing(),
            }));
            cells
        })
        .collect();
    Table { header, rows }
}

/// Rows model × method, a column per measure; `None` when the run measured nothing.
fn measures_table(run: &Run) -> Option<Table> {
    let latest = run.latest(RecordKind::Measure);
    if latest.is_empty() {
        return None;
    }
    let pivot = Pivot::new(latest.iter().map(|r| {
        (
            row_key(&r.model_label, &r.method_label),
            r.metric.clone(),
            *r,
        )
    }));
    let mut header = vec!["model".to_owned(), "method".to_owned()];
    header.extend(pivot.columns.iter().cloned());
    let rows =
        pivot
            .rows
            .iter()
            .enumerate()
            .map(|(i, row)| {
                let mut cells = label_cells(row);
                cells.extend(pivot.columns.iter().enumerate().map(
                    |(c, m)| match pivot.get(i, c) {
                        Some(r) => Cell::num(fmt_measure(m, r.value)),
                        None => Cell::missing(),
                    },
                ));
                cells
            })
            .collect();
    Some(Table { header, rows })
}

/// Accuracy average against each measure the run has.
fn pareto_plots(averages: &[Average], run: &Run) -> Vec<Scatter> {
    let measures = run.latest(RecordKind::Measure);
    let mut plots = Vec::new();
    for measure in metric::PARETO_MEASURES {
        let points: Vec<Point> = averages
            .iter()
            .filter_map(|a| {
                let m = measures.iter().find(|r| {
                    r.metric == measure
                        && r.model_label == a.model_label
                        && r.method_label == a.method_label
                })?;
                Some(Point {
                    label: format!("{}/{}", a.model_label, a.method_label),
                    x: m.value,
                    y: a.value,
                })
            })
            .filter(|p| p.x.is_finite() && p.y.is_finite())
            .collect();
        if points.is_empty() {
            continue;
        }
        let higher = metric::measure_higher_is_better(measure);
        let better = if higher { "higher" } else { "lower" };
        plots.push(scatter(
            &format!("Accuracy average vs {measure} ({better} is better)"),
            (measure, &|v| fmt_measure(measure, v)),
            ("accuracy average", &fmt_value),
            &points,
            higher,
            true,
        ));
    }
    plots
}

/// The number an axis of a suite's `report.pareto` names for one row: a measure, or a task
/// metric written `task/metric`; with its direction.
fn axis_value(run: &Run, axis: &str, model: &str, method: &str) -> Option<(f64, bool)> {
    let (task, metric) = match axis.split_once('/') {
        Some((task, metric)) => (Some(task), metric),
        None => (None, axis),
    };
    let kind = if task.is_some() {
        RecordKind::Metric
    } else {
        RecordKind::Measure
    };
    run.latest(kind)
        .into_iter()
        .find(|r| {
            r.metric == metric
                && r.task.as_deref() == task
                && r.model_label == model
                && r.method_label == method
        })
        .map(|r| {
            let higher = r
                .higher_is_better
                .unwrap_or_else(|| metric::measure_higher_is_better(metric));
            (r.value, higher)
        })
}

/// Per method (a row label's method without its `[…]` sweep), the hypervolume of its points
/// with both axes oriented higher-is-better, against a reference one unit below the minima of
/// all points — REAM's comparison of methods over calibration mixes. Empty with one point per
/// method (nothing to compare).
fn hypervolumes(points: &[Point], (x_higher, y_higher): (bool, bool)) -> String {
    let orient = |p: &Point| {
        (
            if x_higher { p.x } else { -p.x },
            if y_higher { p.y } else { -p.y },
        )
    };
    let all: Vec<(f64, f64)> = points.iter().map(orient).collect();
    let reference = (
        all.iter().map(|p| p.0).fold(f64::INFINITY, f64::min) - 1.0,
        all.iter().map(|p| p.1).fold(f64::INFINITY, f64::min) - 1.0,
    );
    let mut groups: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    for (p, o) in points.iter().zip(&all) {
        let method = p.label.rsplit('/').next().unwrap_or(&p.label);
        let method = method.split('[').next().unwrap_or(method).to_owned();
        match groups.iter_mut().find(|(m, _)| *m == method) {
            Some((_, v)) => v.push(*o),
            None => groups.push((method, vec![*o])),
        }
    }
    if groups.iter().all(|(_, v)| v.len() < 2) {
        return String::new();
    }
    let parts: Vec<String> = groups
        .iter()
        .map(|(m, v)| format!("{m} {:.3}", hypervolume(v, reference)))
        .collect();
    format!(" — hypervolume: {}", parts.join(", "))
}

/// The suite's own Pareto plots (`report.pareto`: x and y axes), one point per model × method
/// that has both numbers.
fn suite_pareto_plots(run: &Run, spec: &ReportSpec) -> Vec<Scatter> {
    let mut rows: Vec<(String, String)> = Vec::new();
    for r in &run.records {
        let row = (r.model_label.clone(), r.method_label.clone());
        if !rows.contains(&row) {
            rows.push(row);
        }
    }
    spec.pareto
        .iter()
        .filter_map(|axes| {
            let mut directions = (true, true);
            let points: Vec<Point> = rows
                .iter()
                .filter_map(|(model, method)| {
                    let (x, x_higher) = axis_value(run, &axes.x, model, method)?;
                    let (y, y_higher) = axis_value(run, &axes.y, model, method)?;
                    directions = (x_higher, y_higher);
                    Some(Point {
                        label: format!("{model}/{method}"),
                        x,
                        y,
                    })
                })
                .filter(|p| p.x.is_finite() && p.y.is_finite())
                .collect();
            if points.is_empty() {
                return None;
            }
            let word = |higher: bool| if higher { "higher" } else { "lower" };
            Some(scatter(
                &format!(
                    "{} ({} is better) vs {} ({} is better){}",
                    axes.y,
                    word(directions.1),
                    axes.x,
                    word(directions.0),
                    hypervolumes(&points, directions)
                ),
                (&axes.x, &|v| fmt_measure(&axes.x, v)),
                (&axes.y, &fmt_value),
                &points,
                directions.0,
                directions.1,
            ))
        })
        .collect()
}

/// Targets against obtained values: within tolerance, or better than the target in the
/// metric's direction, passes.
fn targets_table(run: &Run, targets: &[Target]) -> Table {
    let obtained: HashMap<MetricKey, &Record> = run
        .latest(RecordKind::Metric)
        .into_iter()
        .chain(run.latest(RecordKind::Measure))
        .map(|r| (key(r), r))
        .collect();
    let header = [
        "model", "method", "task", "metric", "target", "obtained", "Δ", "status",
    ];
    let rows = targets
        .iter()
        .map(|t| {
            let found = obtained.get(&(
                t.model.clone(),
                t.method.clone(),
                t.task.clone(),
                t.metric.clone(),
            ));
            let mut cells = vec![
                Cell::label(t.model.clone()),
                Cell::label(t.method.clone()),
                Cell::label(t.task.clone().unwrap_or_default()),
                Cell::label(t.metric.clone()),
                Cell::num(format!(
                    "{} ± {}",
                    fmt_value(t.value),
                    fmt_value(t.tolerance)
                )),
            ];
            cells.extend(match found {
                Some(r) => target_verdict(t, r),
                None => vec![
                    Cell::missing(),
                    Cell::missing(),
                    Cell {
                        text: "missing".into(),
                        style: Style::Fail,
                    },
                ],
            });
            cells
        })
        .collect();
    Table {
        header: header.map(str::to_owned).to_vec(),
        rows,
    }
}

fn target_verdict(target: &Target, obtained: &Record) -> Vec<Cell> {
    let delta = obtained.value - target.value;
    let pass = match obtained.higher_is_better {
        Some(true) => delta >= -target.tolerance,
        Some(false) => delta <= target.tolerance,
        None => delta.abs() <= target.tolerance,
    };
    let (text, style) = if pass {
        ("pass", Style::Pass)
    } else {
        ("fail", Style::Fail)
    };
    vec![
        Cell::num(fmt_value(obtained.value)),
        Cell::num(format!("{delta:+.4}")),
        Cell {
            text: text.into(),
            style,
        },
    ]
}

fn run_name(run: &Run) -> String {
    let time = run.start_time().replace('T', " ");
    time.trim_end_matches('Z')
        .get(..16)
        .unwrap_or(&time)
        .to_owned()
}

/// One chart per task headline metric, a line per model × method over the runs.
fn history(runs: &[Run]) -> Result<History, ReportError> {
    let values = primary_values(&runs.iter().collect::<Vec<_>>())?;
    let categories: Vec<String> = runs.iter().map(run_name).collect();
    let charts = distinct(values.iter().map(|v| (v.task.clone(), v.metric.clone())))
        .iter()
        .map(|(task, m)| {
            let lines = Pivot::new(
                values
                    .iter()
                    .filter(|v| &v.task == task && &v.metric == m)
                    .map(|v| {
                        (
                            format!("{}/{}", v.model_label, v.method_label),
                            v.run as usize,
                            v.value,
                        )
                    }),
            );
            let series: Vec<(String, Vec<Option<f64>>)> = lines
                .rows
                .iter()
                .enumerate()
                .map(|(i, label)| {
                    let per_run = (0..runs.len())
                        .map(|run| {
                            lines
                                .columns
                                .iter()
                                .position(|c| *c == run)
                                .and_then(|c| lines.get(i, c))
                                .copied()
                        })
                        .collect();
                    (label.clone(), per_run)
                })
                .collect();
            line_chart(
                &format!("{task} — {m}"),
                &categories,
                (m, &fmt_value),
                &series,
            )
        })
        .collect();
    Ok(History {
        runs: categories,
        charts,
    })
}

fn jobs_table(run: &Run) -> Table {
    let header = [
        "job",
        "model",
        "method",
        "task",
        "records",
        "wall time",
        "finished",
    ];
    let rows = run
        .of_kind(RecordKind::JobDone)
        .map(|r| {
            vec![
                Cell::label(short(&r.job)),
                Cell::label(r.model_label.clone()),
                Cell::label(r.method_label.clone()),
                Cell::label(r.task.clone().unwrap_or_else(|| "(measures)".into())),
                Cell::num(format!("{}", r.value)),
                Cell::num(fmt_duration(r.wall_s)),
                Cell::label(r.time.clone()),
            ]
        })
        .collect();
    Table {
        header: header.map(str::to_owned).to_vec(),
        rows,
    }
}
