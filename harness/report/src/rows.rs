//! A run's latest numbers arranged by row (model label × method label), indexed once: what
//! every section of the report reads. Also each task's headline metric and the run's quality
//! measure (the y axis of the quality-vs-cost charts).
use crate::frame::{averages, primary_values, Average};
use crate::metric;
use crate::run::Run;
use crate::ReportError;
use moebench_core::stats::unweighted_mean_stderr;
use moebench_suite::{Record, RecordKind};
use std::collections::HashMap;

/// The latest numbers of one model × method.
#[derive(Debug)]
pub struct RowNumbers<'a> {
    pub model_label: &'a str,
    pub method_label: &'a str,
    /// The method's name (`dense`, `reap`, …).
    pub method: &'a str,
    metrics: HashMap<(&'a str, &'a str), &'a Record>,
    measures: HashMap<&'a str, &'a Record>,
}

impl<'a> RowNumbers<'a> {
    pub fn metric(&self, task: &str, metric: &str) -> Option<&'a Record> {
        self.metrics.get(&(task, metric)).copied()
    }

    pub fn measure(&self, name: &str) -> Option<&'a Record> {
        self.measures.get(name).copied()
    }

    /// A finite measure value.
    pub fn cost(&self, name: &str) -> Option<f64> {
        self.measure(name)
            .map(|r| r.value)
            .filter(|v| v.is_finite())
    }

    /// `model/method`.
    pub fn label(&self) -> String {
        format!("{}/{}", self.model_label, self.method_label)
    }
}

/// A task's headline metric (see [`metric::primary_rank`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Headline {
    pub task: String,
    pub metric: String,
    pub higher_is_better: Option<bool>,
    pub accuracy_like: bool,
}

/// The number the quality-vs-cost charts put on their y axis.
#[derive(Debug, Clone, PartialEq)]
pub enum Quality {
    /// Mean of the accuracy-like headline metrics (indices into [`Rows::headlines`]); a row
    /// has it only when it has all of them.
    Average(Vec<usize>),
    /// One task metric.
    Metric { task: String, metric: String },
}

/// `--quality` / `report.quality`: `accuracy_avg`, or `TASK/METRIC` (`,none` is implied
/// when the metric names no filter).
pub const QUALITY_AVERAGE: &str = "accuracy_avg";

/// Rows and the indexes the report builds on.
#[derive(Debug)]
pub struct Rows<'a> {
    pub rows: Vec<RowNumbers<'a>>,
    index: HashMap<(&'a str, &'a str), usize>,
    pub headlines: Vec<Headline>,
    pub quality: Quality,
    averages: HashMap<(String, String), Average>,
}

impl<'a> Rows<'a> {
    /// Indexes the latest records of `run`; `quality` as `--quality` takes it (`None`: the
    /// accuracy average when the run has accuracy-like headlines, else the first task's
    /// headline).
    pub fn new(run: &'a Run, quality: Option<&str>) -> Result<Self, ReportError> {
        let mut rows: Vec<RowNumbers<'a>> = Vec::new();
        let mut index: HashMap<(&'a str, &'a str), usize> = HashMap::new();
        for r in run.records.iter().filter(|r| r.kind != RecordKind::JobDone) {
            let i = *index
                .entry((r.model_label.as_str(), r.method_label.as_str()))
                .or_insert_with(|| {
                    rows.push(RowNumbers {
                        model_label: &r.model_label,
                        method_label: &r.method_label,
                        method: &r.method,
                        metrics: HashMap::new(),
                        measures: HashMap::new(),
                    });
                    rows.len() - 1
                });
            // Later records of the same number replace earlier ones (a job run twice).
            match (&r.task, r.kind) {
                (Some(task), RecordKind::Metric) => {
                    rows[i].metrics.insert((task, &r.metric), r);
                }
                (None, RecordKind::Measure) => {
                    rows[i].measures.insert(&r.metric, r);
                }
                _ => {}
            }
        }
        let values = primary_values(&[run])?;
        let mut headlines: Vec<Headline> = Vec::new();
        for v in &values {
            if !headlines.iter().any(|h| h.task == v.task) {
                headlines.push(Headline {
                    task: v.task.clone(),
                    metric: v.metric.clone(),
                    higher_is_better: v.higher_is_better,
                    accuracy_like: v.accuracy_like,
                });
            }
        }
        let averages = averages(&values)?
            .into_iter()
            .map(|a| ((a.model_label.clone(), a.method_label.clone()), a))
            .collect();
        let quality = choose_quality(quality, &headlines, &rows)?;
        Ok(Self {
            rows,
            index,
            headlines,
            quality,
            averages,
        })
    }

    /// The row of a model label and a method label.
    pub fn position(&self, model_label: &str, method_label: &str) -> Option<usize> {
        self.index.get(&(model_label, method_label)).copied()
    }

    /// Headline indices the accuracy average covers.
    pub fn accuracy_headlines(&self) -> Vec<usize> {
        (0..self.headlines.len())
            .filter(|&h| self.headlines[h].accuracy_like)
            .collect()
    }

    /// The accuracy average of a row and how many tasks it covers (maybe fewer than all).
    pub fn average(&self, row: &RowNumbers) -> Option<&Average> {
        self.averages
            .get(&(row.model_label.to_owned(), row.method_label.to_owned()))
    }

    /// The quality of a row with its standard error, `None` when the row lacks a task of it.
    pub fn quality_of(&self, row: &RowNumbers) -> Option<(f64, Option<f64>)> {
        match &self.quality {
            Quality::Average(tasks) => {
                let records: Option<Vec<&Record>> = tasks
                    .iter()
                    .map(|&h| row.metric(&self.headlines[h].task, &self.headlines[h].metric))
                    .collect();
                let records = records?;
                let average = self.average(row)?;
                let stderrs: Option<Vec<f64>> = records.iter().map(|r| r.stderr).collect();
                Some((average.value, stderrs.map(|s| unweighted_mean_stderr(&s))))
            }
            Quality::Metric { task, metric } => {
                row.metric(task, metric).map(|r| (r.value, r.stderr))
            }
        }
        .filter(|(v, _)| v.is_finite())
    }

    /// The (task, metric) numbers the quality is made of.
    pub fn quality_keys(&self) -> Vec<(String, String)> {
        match &self.quality {
            Quality::Average(tasks) => tasks
                .iter()
                .map(|&h| {
                    (
                        self.headlines[h].task.clone(),
                        self.headlines[h].metric.clone(),
                    )
                })
                .collect(),
            Quality::Metric { task, metric } => vec![(task.clone(), metric.clone())],
        }
    }

    pub fn quality_title(&self) -> String {
        match &self.quality {
            Quality::Average(tasks) => format!("accuracy avg ({} tasks)", tasks.len()),
            Quality::Metric { task, metric } => format!("{task} {}", metric::short_name(metric)),
        }
    }

    /// The quality's direction (an average of accuracies is better high).
    pub fn quality_higher_is_better(&self) -> bool {
        match &self.quality {
            Quality::Average(_) => true,
            Quality::Metric { task, metric } => self
                .rows
                .iter()
                .find_map(|r| r.metric(task, metric))
                .and_then(metric::higher_is_better)
                .unwrap_or(true),
        }
    }
}

fn choose_quality(
    asked: Option<&str>,
    headlines: &[Headline],
    rows: &[RowNumbers],
) -> Result<Quality, ReportError> {
    let average: Vec<usize> = (0..headlines.len())
        .filter(|&h| headlines[h].accuracy_like)
        .collect();
    match asked {
        None if !average.is_empty() => Ok(Quality::Average(average)),
        None => Ok(headlines
            .first()
            .map_or(Quality::Average(Vec::new()), |h| Quality::Metric {
                task: h.task.clone(),
                metric: h.metric.clone(),
            })),
        Some(QUALITY_AVERAGE) if !average.is_empty() => Ok(Quality::Average(average)),
        Some(asked) => {
            let found = asked.split_once('/').and_then(|(task, metric)| {
                let metric = if metric.contains(',') {
                    metric.to_owned()
                } else {
                    format!("{metric},none")
                };
                rows.iter()
                    .any(|r| r.metric(task, &metric).is_some())
                    .then(|| Quality::Metric {
                        task: task.to_owned(),
                        metric,
                    })
            });
            found.ok_or_else(|| ReportError::UnknownQuality {
                asked: asked.to_owned(),
                known: known_qualities(headlines, !average.is_empty()),
            })
        }
    }
}

fn known_qualities(headlines: &[Headline], has_average: bool) -> String {
    let mut known: Vec<String> = Vec::new();
    if has_average {
        known.push(QUALITY_AVERAGE.to_owned());
    }
    known.extend(headlines.iter().map(|h| format!("{}/{}", h.task, h.metric)));
    known.join(", ")
}
