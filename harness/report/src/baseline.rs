//! Base models and Δ vs base: rows are compared only with rows of the same base model (a
//! model label, or a group of labels a suite puts together with `report.groups`), and each
//! against that base's dense row — the row of method `dense` (`dense` label preferred), i.e.
//! the model as loaded or built, before any method.
use crate::rows::{Quality, RowNumbers, Rows};
use crate::run::{DocScores, Run, SuiteReport};
use crate::significance::{pool_for_average, test_difference, DocValues, Paired, Tested};
use crate::RenderOptions;
use crate::ReportError;
use rayon::prelude::*;
use std::collections::HashMap;

/// A run read for reporting: its rows, their bases and their Δ vs base, computed once for
/// the HTML report and `results.csv`.
#[derive(Debug)]
pub struct Analysis<'a> {
    pub suite: SuiteReport,
    pub rows: Rows<'a>,
    pub bases: Vec<Base>,
    pub deltas: Vec<Option<RowDeltas>>,
}

impl<'a> Analysis<'a> {
    /// `options` (the command line) win over the suite's `report:` settings.
    pub fn new(run: &'a Run, options: &RenderOptions) -> Result<Self, ReportError> {
        let suite = run.suite_report()?;
        let quality = options.quality.as_deref().or(suite.quality.as_deref());
        let rows = Rows::new(run, quality)?;
        let groups = if options.groups.is_empty() {
            &suite.groups
        } else {
            &options.groups
        };
        let bases = bases(&rows, groups);
        let deltas = deltas(run, &rows, &bases, options.bootstrap_iters, options.seed)?;
        Ok(Self {
            suite,
            rows,
            bases,
            deltas,
        })
    }

    /// The base a row belongs to.
    pub fn base_of(&self, row: usize) -> Option<&Base> {
        self.bases.iter().find(|b| b.rows.contains(&row))
    }
}

/// Rows compared with each other: one base model, or a group of model labels.
#[derive(Debug, Clone, PartialEq)]
pub struct Base {
    /// The model label, or the group's labels joined with ` + `.
    pub name: String,
    /// The model labels in it.
    pub models: Vec<String>,
    /// Indices into [`Rows::rows`], in run order, the reference first.
    pub rows: Vec<usize>,
    /// The dense row of the first model that has one.
    pub reference: Option<usize>,
}

/// The bases of `rows`: each group of `groups` (model labels plotted together, as a suite's
/// `report.groups` asks) whose models have rows, then every other model label alone, in the
/// order models first appear.
pub fn bases(rows: &Rows, groups: &[Vec<String>]) -> Vec<Base> {
    let mut models: Vec<&str> = Vec::new();
    for r in &rows.rows {
        if !models.contains(&r.model_label) {
            models.push(r.model_label);
        }
    }
    let grouped = |m: &str| groups.iter().position(|g| g.iter().any(|l| l == m));
    let mut out: Vec<Base> = Vec::new();
    let mut done_groups: Vec<usize> = Vec::new();
    for model in &models {
        let members: Vec<String> = match grouped(model) {
            Some(g) if done_groups.contains(&g) => continue,
            Some(g) => {
                done_groups.push(g);
                groups[g]
                    .iter()
                    .filter(|l| models.contains(&l.as_str()))
                    .cloned()
                    .collect()
            }
            None => vec![(*model).to_owned()],
        };
        let mut indices: Vec<usize> = (0..rows.rows.len())
            .filter(|&i| members.iter().any(|m| m == rows.rows[i].model_label))
            .collect();
        let reference = members
            .iter()
            .find_map(|m| dense_row(&rows.rows, &indices, m));
        if let Some(r) = reference {
            indices.retain(|&i| i != r);
            indices.insert(0, r);
        }
        out.push(Base {
            name: members.join(" + "),
            models: members,
            rows: indices,
            reference,
        });
    }
    out
}

fn dense_row(rows: &[RowNumbers], indices: &[usize], model: &str) -> Option<usize> {
    let dense = |i: &&usize| rows[**i].model_label == model && rows[**i].method == "dense";
    let candidates: Vec<usize> = indices.iter().filter(dense).copied().collect();
    candidates
        .iter()
        .find(|&&i| rows[i].method_label == "dense")
        .or(candidates.first())
        .copied()
}

/// A row's differences from its base's dense row.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RowDeltas {
    /// Per headline (indices of [`Rows::headlines`]).
    pub headlines: Vec<Option<Tested>>,
    pub quality: Option<Tested>,
}

/// Δ vs base of every row that has a reference (the reference itself and rows of a base
/// without a dense row get `None`), tested as [`crate::significance`] describes; an average
/// quality is tested on the documents of all its tasks pooled ([`pool_for_average`]). Sample
/// logs are read once per job, one row at a time (rows of a base in parallel).
pub fn deltas(
    run: &Run,
    rows: &Rows,
    bases: &[Base],
    iters: usize,
    seed: u64,
) -> Result<Vec<Option<RowDeltas>>, ReportError> {
    let keys = tested_keys(rows);
    let mut out: Vec<Option<RowDeltas>> = vec![None; rows.rows.len()];
    for base in bases {
        let Some(reference) = base.reference else {
            continue;
        };
        let reference_values = doc_values(run, &rows.rows[reference], &keys)?;
        let computed: Vec<(usize, RowDeltas)> = base
            .rows
            .par_iter()
            .filter(|&&i| i != reference)
            .map(|&i| {
                let values = doc_values(run, &rows.rows[i], &keys)?;
                let pair = (&rows.rows[reference], &rows.rows[i]);
                let d = row_deltas(rows, &keys, pair, (&reference_values, &values), iters, seed)?;
                Ok((i, d))
            })
            .collect::<Result<_, ReportError>>()?;
        for (i, d) in computed {
            out[i] = Some(d);
        }
    }
    Ok(out)
}

/// The (task, metric) numbers that get a Δ: the headlines, then the quality's if it is not one.
fn tested_keys(rows: &Rows) -> Vec<(String, String)> {
    let mut keys: Vec<(String, String)> = rows
        .headlines
        .iter()
        .map(|h| (h.task.clone(), h.metric.clone()))
        .collect();
    for key in rows.quality_keys() {
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    keys
}

/// Per-document numbers of each key of a row (only those logged), each job's log read once.
fn doc_values(
    run: &Run,
    row: &RowNumbers,
    keys: &[(String, String)],
) -> Result<Vec<Option<DocValues>>, ReportError> {
    let mut logs: HashMap<&str, Option<Vec<DocScores>>> = HashMap::new();
    let mut out = Vec::with_capacity(keys.len());
    for (task, metric) in keys {
        let Some(record) = row.metric(task, metric) else {
            out.push(None);
            continue;
        };
        if !logs.contains_key(record.job.as_str()) {
            logs.insert(&record.job, run.samples(&record.job)?);
        }
        out.push(
            logs[record.job.as_str()]
                .as_deref()
                .map(|log| DocValues::of(log, metric)),
        );
    }
    Ok(out)
}

fn row_deltas(
    rows: &Rows,
    keys: &[(String, String)],
    (a, b): (&RowNumbers, &RowNumbers),
    (a_values, b_values): (&[Option<DocValues>], &[Option<DocValues>]),
    iters: usize,
    seed: u64,
) -> Result<RowDeltas, ReportError> {
    let mut tested: Vec<Option<Tested>> = Vec::with_capacity(keys.len());
    let mut paired: Vec<Option<Paired>> = Vec::with_capacity(keys.len());
    for (k, (task, metric)) in keys.iter().enumerate() {
        let (Some(x), Some(y)) = (a.metric(task, metric), b.metric(task, metric)) else {
            tested.push(None);
            paired.push(None);
            continue;
        };
        let pair = match (&a_values[k], &b_values[k]) {
            (Some(xs), Some(ys)) => xs.pair(ys),
            _ => None,
        };
        tested.push(Some(test_difference(
            (x.value, x.stderr),
            (y.value, y.stderr),
            pair.as_ref(),
            iters,
            seed,
        )?));
        paired.push(pair);
    }
    let key_index = |key: &(String, String)| keys.iter().position(|k| k == key);
    let quality = match (&rows.quality, rows.quality_of(a), rows.quality_of(b)) {
        (Quality::Metric { task, metric }, _, _) => {
            key_index(&(task.clone(), metric.clone())).and_then(|k| tested[k])
        }
        (Quality::Average(_), Some(x), Some(y)) => {
            let pooled: Option<Vec<Paired>> = rows
                .quality_keys()
                .iter()
                .map(|key| key_index(key).and_then(|k| paired[k].clone()))
                .collect();
            let pooled = pooled.map(|p| pool_for_average(&p));
            Some(test_difference(x, y, pooled.as_ref(), iters, seed)?)
        }
        (Quality::Average(_), _, _) => None,
    };
    tested.truncate(rows.headlines.len());
    Ok(RowDeltas {
        headlines: tested,
        quality,
    })
}
