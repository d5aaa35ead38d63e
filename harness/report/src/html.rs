//! The HTML report: the sections' contents built from a run (and its history), drawn by the
//! minijinja templates of `reports/`, which are compiled into the binary.
//!
//! Section order answers the run's question first: trends (with `--history`), targets (when
//! the run has any), then per base model quality vs cost and the leaderboard; details
//! (suite plots, every metric, measures, routing, jobs) follow and the run's metadata ends it.
use crate::baseline::{Analysis, Base};
use crate::claims::{
    cells as claim_cells, ClaimStatus, HEADER as CLAIMS_HEADER, STATUS_COLUMN as CLAIM_STATUS,
};
use crate::frame::{averages, primary_values, PrimaryValue};
use crate::leaderboard::{leaderboard, Leaderboard};
use crate::metric::{self, fmt_cell, fmt_delta, fmt_measure, fmt_value};
use crate::overview::{overview, suite_plots, Overview, SuitePlot};
use crate::routing::routing_loads;
use crate::rows::{Quality, Rows};
use crate::run::Run;
use crate::svg::{line_chart, Heatmap, LineChart, SMALL};
use crate::table::{distinct, Cell, Pivot, Style, Table};
use crate::targets::{fmt_target, TargetCheck, TargetStatus, HEADER as TARGETS_HEADER};
use crate::ReportError;
use minijinja::{AutoEscape, Environment};
use moebench_suite::{Record, RecordKind};
use serde::Serialize;
use std::collections::{BTreeSet, HashMap};

const TEMPLATES: [(&str, &str); 4] = [
    ("report.html", include_str!("../../../reports/report.html")),
    (
        "partials/table.html",
        include_str!("../../../reports/partials/table.html"),
    ),
    (
        "partials/charts.html",
        include_str!("../../../reports/partials/charts.html"),
    ),
    (
        "partials/script.js",
        include_str!("../../../reports/partials/script.js"),
    ),
];

#[derive(Debug, Serialize)]
struct Page {
    title: String,
    generator: String,
    /// One line under the title: suite, start, rows, bases, tasks.
    subtitle: String,
    history: Option<History>,
    targets: Option<Targets>,
    overview: Overview,
    leaderboard: Leaderboard,
    suite_plots: Vec<SuitePlot>,
    tasks: Vec<TaskSection>,
    measures: Option<Table>,
    routing: Vec<Heatmap>,
    jobs: Table,
    meta: Vec<(String, String)>,
}

/// Trends over several runs, per base model.
#[derive(Debug, Serialize)]
struct History {
    runs: Vec<String>,
    bases: Vec<HistoryBase>,
}

#[derive(Debug, Serialize)]
struct HistoryBase {
    name: String,
    quality: Option<LineChart>,
    tasks: Vec<LineChart>,
}

#[derive(Debug, Serialize)]
struct Targets {
    summary: String,
    all_pass: bool,
    /// `None` when the suite has claims only.
    table: Option<Table>,
    claims: Option<Table>,
}

#[derive(Debug, Serialize)]
struct TaskSection {
    task: String,
    protocols: String,
    table: Table,
}

/// The report of `runs[current]`, with trends over all of `runs` (ordered by start time) when
/// there are several.
pub fn render_html(
    runs: &[Run],
    current: usize,
    analysis: &Analysis,
    targets_check: Option<&TargetCheck>,
) -> Result<String, ReportError> {
    let run = &runs[current];
    let Analysis {
        suite,
        rows,
        bases,
        deltas,
    } = analysis;
    let page = Page {
        title: suite
            .title
            .clone()
            .unwrap_or_else(|| format!("moebench report — {}", run.info.suite)),
        generator: format!("moebench {}", env!("CARGO_PKG_VERSION")),
        subtitle: subtitle(run, rows, bases),
        history: if runs.len() > 1 {
            Some(history(runs, rows, bases)?)
        } else {
            None
        },
        targets: targets_check.map(targets),
        overview: overview(rows, bases, deltas),
        leaderboard: leaderboard(rows, bases, deltas),
        suite_plots: suite_plots(rows, bases, &suite.pareto),
        tasks: task_sections(run),
        measures: measures_table(run),
        routing: routing_loads(run)?.iter().map(|r| r.heatmap()).collect(),
        jobs: jobs_table(run),
        meta: meta(run),
    };
    let mut env = Environment::new();
    env.set_auto_escape_callback(|name| {
        if name.ends_with(".js") {
            AutoEscape::None
        } else {
            AutoEscape::Html
        }
    });
    for (name, source) in TEMPLATES {
        env.add_template(name, source)?;
    }
    Ok(env
        .get_template("report.html")?
        .render(minijinja::value::Serde(&page))?)
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn subtitle(run: &Run, rows: &Rows, bases: &[Base]) -> String {
    [
        format!("suite {}", run.info.suite),
        format!("started {}", run.info.start_time.replace('T', " ")),
        plural(bases.len(), "base model", "base models"),
        plural(rows.rows.len(), "row", "rows"),
        plural(rows.headlines.len(), "task", "tasks"),
        plural(
            run.of_kind(RecordKind::JobDone).count(),
            "finished job",
            "finished jobs",
        ),
    ]
    .join(" · ")
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

fn label_cells(model: &str, method: &str) -> Vec<Cell> {
    vec![Cell::label(model), Cell::label(method)]
}

/// One table per task with every metric it reports.
fn task_sections(run: &Run) -> Vec<TaskSection> {
    let latest = run.latest(RecordKind::Metric);
    let mut by_task: HashMap<&str, Vec<&Record>> = HashMap::new();
    for r in &latest {
        by_task
            .entry(r.task.as_deref().unwrap_or_default())
            .or_default()
            .push(r);
    }
    distinct(latest.iter().map(|r| r.task.as_deref().unwrap_or_default()))
        .into_iter()
        .map(|task| {
            let records = &by_task[task];
            let protocols: BTreeSet<&str> = records
                .iter()
                .filter_map(|r| r.protocol.as_deref())
                .collect();
            TaskSection {
                task: task.to_owned(),
                protocols: protocols.into_iter().collect::<Vec<_>>().join(", "),
                table: metrics_table(records),
            }
        })
        .collect()
}

fn metrics_table(records: &[&Record]) -> Table {
    let pivot = Pivot::new(records.iter().map(|r| {
        (
            (r.model_label.as_str(), r.method_label.as_str()),
            r.metric.as_str(),
            *r,
        )
    }));
    let mut header = vec!["model".to_owned(), "method".to_owned(), "n".to_owned()];
    header.extend(pivot.columns.iter().enumerate().map(|(c, m)| {
        let direction = (0..pivot.rows.len())
            .find_map(|r| pivot.get(r, c))
            .and_then(|r| metric::higher_is_better(r));
        format!("{m}{}", metric::arrow(direction))
    }));
    let rows = pivot
        .rows
        .iter()
        .enumerate()
        .map(|(i, (model, method))| {
            let n = (0..pivot.columns.len()).find_map(|c| pivot.get(i, c).and_then(|r| r.n));
            let mut cells = label_cells(model, method);
            cells.push(n.map_or_else(Cell::missing, |n| Cell::value(n.to_string(), n as f64)));
            cells.extend((0..pivot.columns.len()).map(|c| match pivot.get(i, c) {
                Some(r) => Cell::value(fmt_cell(r.value, r.stderr), r.value),
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
            (r.model_label.as_str(), r.method_label.as_str()),
            r.metric.as_str(),
            *r,
        )
    }));
    let mut header = vec!["model".to_owned(), "method".to_owned()];
    header.extend(pivot.columns.iter().enumerate().map(|(c, m)| {
        let direction = (0..pivot.rows.len())
            .find_map(|r| pivot.get(r, c))
            .and_then(|r| metric::higher_is_better(r));
        format!("{m}{}", metric::arrow(direction))
    }));
    let rows =
        pivot
            .rows
            .iter()
            .enumerate()
            .map(|(i, (model, method))| {
                let mut cells = label_cells(model, method);
                cells.extend(pivot.columns.iter().enumerate().map(
                    |(c, m)| match pivot.get(i, c) {
                        Some(r) => Cell::value(fmt_measure(m, r.value), r.value),
                        None => Cell::missing(),
                    },
                ));
                cells
            })
            .collect();
    Some(Table { header, rows })
}

/// The targets section: every target with what the run obtained ([`crate::targets`]).
fn targets(check: &TargetCheck) -> Targets {
    let rows = check
        .results
        .iter()
        .map(|r| {
            let t = &r.target;
            let style = match r.status {
                TargetStatus::Pass => Style::Pass,
                _ => Style::Fail,
            };
            vec![
                Cell::label(t.model.clone()),
                Cell::label(t.method.clone()),
                Cell::label(t.task.clone().unwrap_or_default()),
                Cell::label(t.metric.clone()),
                Cell::value(fmt_target(t), t.value),
                r.obtained
                    .map_or_else(Cell::missing, |v| Cell::value(fmt_value(v), v)),
                r.delta
                    .filter(|d| d.is_finite())
                    .map_or_else(Cell::missing, |d| Cell::value(fmt_delta(d), d)),
                Cell::styled(r.status.describe().to_lowercase(), style),
                Cell::label(t.source.clone().unwrap_or_default()),
            ]
        })
        .collect();
    let claims = check
        .claims
        .iter()
        .map(|r| {
            let style = match r.status {
                ClaimStatus::Holds => Style::Pass,
                _ => Style::Fail,
            };
            let mut cells: Vec<Cell> = claim_cells(r).into_iter().map(Cell::label).collect();
            cells[CLAIM_STATUS] = Cell::styled(r.status.describe().to_lowercase(), style);
            cells
        })
        .collect();
    Targets {
        summary: check.summary(),
        all_pass: check.all_pass(),
        table: (!check.results.is_empty()).then(|| Table {
            header: TARGETS_HEADER.map(str::to_owned).to_vec(),
            rows,
        }),
        claims: (!check.claims.is_empty()).then(|| Table {
            header: CLAIMS_HEADER.map(str::to_owned).to_vec(),
            rows: claims,
        }),
    }
}

fn run_name(run: &Run) -> String {
    let time = run.start_time().replace('T', " ");
    time.trim_end_matches('Z')
        .get(..16)
        .unwrap_or(&time)
        .to_owned()
}

/// Per base model (of the current run; a model only older runs have is its own base): the
/// quality and each task's headline metric over the runs, a line per method.
fn history(runs: &[Run], rows: &Rows, bases: &[Base]) -> Result<History, ReportError> {
    let values = primary_values(&runs.iter().collect::<Vec<_>>())?;
    let categories: Vec<String> = runs.iter().map(run_name).collect();
    let base_of = |model: &str| {
        bases
            .iter()
            .find(|b| b.models.iter().any(|m| m == model))
            .map_or_else(|| model.to_owned(), |b| b.name.clone())
    };
    let quality_values = history_quality(&values, rows, runs.len())?;
    let names = distinct(values.iter().map(|v| base_of(&v.model_label)));
    // A base of several models names each line's model too.
    let series_label = |base: &str, model: &str, method: &str| {
        if base == model {
            method.to_owned()
        } else {
            format!("{model}/{method}")
        }
    };
    let bases_out = names
        .iter()
        .map(|name| {
            let quality_points = quality_values
                .iter()
                .filter(|(_, model, _, _)| base_of(model) == *name)
                .map(|(run, model, method, v)| (series_label(name, model, method), *run, *v));
            let quality = trend(
                &format!("{name}: {}", rows.quality_title()),
                &categories,
                &rows.quality_title(),
                quality_points,
            );
            let tasks = distinct(values.iter().map(|v| (v.task.clone(), v.metric.clone())))
                .iter()
                .filter_map(|(task, m)| {
                    trend(
                        &format!("{name}: {task} {}", metric::short_name(m)),
                        &categories,
                        m,
                        values
                            .iter()
                            .filter(|v| {
                                &v.task == task
                                    && &v.metric == m
                                    && base_of(&v.model_label) == *name
                            })
                            .map(|v| {
                                (
                                    series_label(name, &v.model_label, &v.method_label),
                                    v.run as usize,
                                    v.value,
                                )
                            }),
                    )
                })
                .collect();
            HistoryBase {
                name: name.clone(),
                quality,
                tasks,
            }
        })
        .collect();
    Ok(History {
        runs: categories,
        bases: bases_out,
    })
}

/// The quality of each row of each run: (run, model, method, value).
fn history_quality(
    values: &[PrimaryValue],
    rows: &Rows,
    runs: usize,
) -> Result<Vec<(usize, String, String, f64)>, ReportError> {
    Ok(match &rows.quality {
        Quality::Average(_) => {
            let mut out = Vec::new();
            for run in 0..runs {
                let own: Vec<PrimaryValue> = values
                    .iter()
                    .filter(|v| v.run as usize == run)
                    .cloned()
                    .collect();
                out.extend(
                    averages(&own)?
                        .into_iter()
                        .map(|a| (run, a.model_label, a.method_label, a.value)),
                );
            }
            out
        }
        Quality::Metric { task, metric } => values
            .iter()
            .filter(|v| &v.task == task && &v.metric == metric)
            .map(|v| {
                (
                    v.run as usize,
                    v.model_label.clone(),
                    v.method_label.clone(),
                    v.value,
                )
            })
            .collect(),
    })
}

/// A line chart of `(series, run, value)` points; `None` without points.
fn trend(
    title: &str,
    categories: &[String],
    y_label: &str,
    points: impl Iterator<Item = (String, usize, f64)>,
) -> Option<LineChart> {
    let lines = Pivot::new(points);
    if lines.rows.is_empty() {
        return None;
    }
    let series: Vec<(String, Vec<Option<f64>>)> = lines
        .rows
        .iter()
        .enumerate()
        .map(|(i, label)| {
            let per_run = (0..categories.len())
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
    Some(line_chart(
        title,
        categories,
        (y_label, &fmt_value),
        &series,
        SMALL,
    ))
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
                Cell::value(format!("{}", r.value), r.value),
                Cell::value(fmt_duration(r.wall_s), r.wall_s),
                Cell::label(r.time.clone()),
            ]
        })
        .collect();
    Table {
        header: header.map(str::to_owned).to_vec(),
        rows,
    }
}
