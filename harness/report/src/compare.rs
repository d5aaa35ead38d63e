//! Run-to-run comparison: every (model, method, task, metric) present in both runs, with a
//! paired bootstrap over the documents both runs scored (matched by `doc_hash`), or — when
//! there are no per-document numbers — a z-test on the two standard errors.
use crate::metric::fmt_value;
use crate::run::{key, DocScores, MetricKey, Run};
use crate::ReportError;
use moebench_core::stats::paired_bootstrap;
use moebench_suite::{Record, RecordKind};
use std::collections::HashMap;
use std::path::Path;

/// When a change counts as significant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CompareOptions {
    /// Significance level of the one-sided test.
    pub alpha: f64,
    /// Smallest |Δ| that can count.
    pub min_delta: f64,
    /// Paired bootstrap replicates.
    pub iters: usize,
    pub seed: u64,
}

impl Default for CompareOptions {
    fn default() -> Self {
        Self {
            alpha: 0.05,
            min_delta: 0.0,
            iters: 10_000,
            seed: 1234,
        }
    }
}

/// How a row's p-value was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Test {
    /// Paired bootstrap over this many shared documents.
    PairedBootstrap(usize),
    /// z-test on the two reported standard errors.
    ZTest,
    /// Neither per-document numbers nor standard errors.
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Regression,
    Improvement,
    /// Significant, but the metric has no better direction.
    Changed,
    NotSignificant,
    Untested,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub model_label: String,
    pub method_label: String,
    pub task: String,
    pub metric: String,
    pub base: f64,
    pub new: f64,
    /// `new − base`.
    pub delta: f64,
    pub p_value: Option<f64>,
    /// 95% interval of Δ (paired bootstrap only).
    pub ci: Option<(f64, f64)>,
    pub test: Test,
    pub higher_is_better: Option<bool>,
    pub verdict: Verdict,
}

#[derive(Debug, Clone)]
pub struct Comparison {
    pub base: String,
    pub new: String,
    pub options: CompareOptions,
    pub rows: Vec<Row>,
}

/// Compares the finished metrics of two run directories.
pub fn compare(
    base: &Path,
    new: &Path,
    options: &CompareOptions,
) -> Result<Comparison, ReportError> {
    let base_run = Run::load_nonempty(base)?;
    let new_run = Run::load_nonempty(new)?;
    let new_by_key: HashMap<MetricKey, &Record> = new_run
        .latest(RecordKind::Metric)
        .into_iter()
        .map(|r| (key(r), r))
        .collect();
    let mut samples = SampleCache::default();
    let mut rows = Vec::new();
    for a in base_run.latest(RecordKind::Metric) {
        if let Some(b) = new_by_key.get(&key(a)) {
            let paired = samples.paired(&base_run, a, &new_run, b)?;
            rows.push(row(a, b, paired, options)?);
        }
    }
    Ok(Comparison {
        base: base.display().to_string(),
        new: new.display().to_string(),
        options: *options,
        rows,
    })
}

/// Per-document numbers of the base and the new run, document by document.
type Paired = (Vec<f64>, Vec<f64>);

/// Sample logs read once per (run, job).
#[derive(Default)]
struct SampleCache {
    logs: HashMap<(String, String), Option<Vec<DocScores>>>,
}

impl SampleCache {
    fn log(&mut self, run: &Run, job: &str) -> Result<&Option<Vec<DocScores>>, ReportError> {
        let id = (run.dir.display().to_string(), job.to_owned());
        if !self.logs.contains_key(&id) {
            let log = run.samples(job)?;
            self.logs.insert(id.clone(), log);
        }
        Ok(&self.logs[&id])
    }

    /// Per-document numbers of `a` (in `base`) and `b` (in `new`) on the documents both
    /// scored, in the base run's order; `None` unless there are at least two.
    fn paired(
        &mut self,
        base: &Run,
        a: &Record,
        new: &Run,
        b: &Record,
    ) -> Result<Option<Paired>, ReportError> {
        let Some(new_scores) = self
            .log(new, &b.job)?
            .as_ref()
            .map(|log| doc_values(log, &b.metric))
        else {
            return Ok(None);
        };
        let Some(base_scores) = self
            .log(base, &a.job)?
            .as_ref()
            .map(|log| doc_values(log, &a.metric))
        else {
            return Ok(None);
        };
        let new_by_doc: HashMap<&(String, usize), f64> =
            new_scores.iter().map(|(d, v)| (d, *v)).collect();
        let (xs, ys): (Vec<f64>, Vec<f64>) = base_scores
            .iter()
            .filter_map(|(doc, x)| new_by_doc.get(doc).map(|y| (*x, *y)))
            .unzip();
        Ok((xs.len() >= 2).then_some((xs, ys)))
    }
}

/// The numeric per-document values of `metric`, keyed by (doc_hash, occurrence) so that
/// repeated documents pair up in order.
fn doc_values(log: &[DocScores], metric: &str) -> Vec<((String, usize), f64)> {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    log.iter()
        .filter_map(|d| {
            let value = d.metrics.get(metric)?.as_f64()?;
            let k = seen.entry(d.doc_hash.as_str()).or_default();
            *k += 1;
            Some(((d.doc_hash.clone(), *k), value))
        })
        .collect()
}

fn row(
    a: &Record,
    b: &Record,
    paired: Option<Paired>,
    options: &CompareOptions,
) -> Result<Row, ReportError> {
    let delta = b.value - a.value;
    let (test, p_value, ci) = match paired {
        Some((xs, ys)) => {
            let boot = paired_bootstrap(&xs, &ys, options.iters, options.seed)?;
            (
                Test::PairedBootstrap(xs.len()),
                Some(boot.p_value),
                Some((boot.ci_low, boot.ci_high)),
            )
        }
        None => match z_test(delta, a.stderr, b.stderr) {
            Some(p) => (Test::ZTest, Some(p), None),
            None => (Test::None, None, None),
        },
    };
    let higher_is_better = a.higher_is_better.or(b.higher_is_better);
    Ok(Row {
        model_label: a.model_label.clone(),
        method_label: a.method_label.clone(),
        task: a.task.clone().unwrap_or_default(),
        metric: a.metric.clone(),
        base: a.value,
        new: b.value,
        delta,
        p_value,
        ci,
        test,
        higher_is_better,
        verdict: verdict(delta, p_value, higher_is_better, options),
    })
}

fn verdict(
    delta: f64,
    p_value: Option<f64>,
    higher_is_better: Option<bool>,
    options: &CompareOptions,
) -> Verdict {
    let Some(p) = p_value else {
        return Verdict::Untested;
    };
    if p >= options.alpha || delta.abs() < options.min_delta || delta == 0.0 {
        return Verdict::NotSignificant;
    }
    match higher_is_better {
        Some(higher) if higher == (delta > 0.0) => Verdict::Improvement,
        Some(_) => Verdict::Regression,
        None => Verdict::Changed,
    }
}

/// One-sided p-value of `delta` against independent normal errors `se_a`, `se_b`.
fn z_test(delta: f64, se_a: Option<f64>, se_b: Option<f64>) -> Option<f64> {
    let se = (se_a? * se_a? + se_b? * se_b?).sqrt();
    if !se.is_finite() || se <= 0.0 || !delta.is_finite() {
        return None;
    }
    Some(if delta == 0.0 {
        1.0
    } else {
        normal_sf(delta.abs() / se)
    })
}

/// P(Z > z) for a standard normal Z: `erfc(z/√2)/2`, with the erfc approximation of
/// Numerical Recipes (`erfcc`, fractional error below 1.2e-7).
fn normal_sf(z: f64) -> f64 {
    let x = z / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.5 * x.abs());
    let poly = [
        -1.265_512_23,
        1.000_023_68,
        0.374_091_96,
        0.096_784_18,
        -0.186_288_06,
        0.278_868_07,
        -1.135_203_98,
        1.488_515_87,
        -0.822_152_23,
        0.170_872_77,
    ]
    .iter()
    .rev()
    .fold(0.0, |acc, c| acc * t + c);
    let erfc = t * (-x * x + poly).exp();
    let erfc = if x >= 0.0 { erfc } else { 2.0 - erfc };
    erfc / 2.0
}

impl Comparison {
    pub fn regressions(&self) -> impl Iterator<Item = &Row> {
        self.rows
            .iter()
            .filter(|r| r.verdict == Verdict::Regression)
    }

    /// The comparison as markdown (a CI job summary) or as an aligned text table.
    pub fn render(&self, markdown: bool) -> String {
        let regressions: Vec<&Row> = self.regressions().collect();
        let mut out = format!(
            "{}moebench compare: {} → {}\n\n{} metrics in both runs; {} significant regression{} (one-sided α = {}, min |Δ| = {}).\n",
            if markdown { "### " } else { "" },
            self.base,
            self.new,
            self.rows.len(),
            regressions.len(),
            if regressions.len() == 1 { "" } else { "s" },
            self.options.alpha,
            self.options.min_delta,
        );
        if !regressions.is_empty() {
            out.push_str(if markdown {
                "\n**Regressions:**\n"
            } else {
                "\nRegressions:\n"
            });
            for r in &regressions {
                out.push_str(&format!(
                    "- {}/{} {} {}: {} → {} (Δ {:+.4}, p = {})\n",
                    r.model_label,
                    r.method_label,
                    r.task,
                    r.metric,
                    fmt_value(r.base),
                    fmt_value(r.new),
                    r.delta,
                    fmt_p(r.p_value)
                ));
            }
        }
        out.push('\n');
        let cells: Vec<Vec<String>> = self.rows.iter().map(row_cells).collect();
        out.push_str(&if markdown {
            markdown_table(&HEADER, &cells)
        } else {
            text_table(&HEADER, &cells)
        });
        out
    }
}

const HEADER: [&str; 11] = [
    "model", "method", "task", "metric", "base", "new", "Δ", "95% CI", "p", "test", "verdict",
];

fn row_cells(r: &Row) -> Vec<String> {
    vec![
        r.model_label.clone(),
        r.method_label.clone(),
        r.task.clone(),
        r.metric.clone(),
        fmt_value(r.base),
        fmt_value(r.new),
        format!("{:+.4}", r.delta),
        r.ci.map_or_else(String::new, |(lo, hi)| format!("[{lo:+.4}, {hi:+.4}]")),
        fmt_p(r.p_value),
        match r.test {
            Test::PairedBootstrap(n) => format!("paired bootstrap (n={n})"),
            Test::ZTest => "z-test (stderr)".into(),
            Test::None => "none".into(),
        },
        match r.verdict {
            Verdict::Regression => "REGRESSION",
            Verdict::Improvement => "improvement",
            Verdict::Changed => "changed",
            Verdict::NotSignificant => "not significant",
            Verdict::Untested => "untested",
        }
        .into(),
    ]
}

fn fmt_p(p: Option<f64>) -> String {
    p.map_or_else(|| "—".into(), |p| format!("{p:.4}"))
}

fn markdown_table(header: &[&str], rows: &[Vec<String>]) -> String {
    let line = |cells: &[String]| format!("| {} |\n", cells.join(" | "));
    let mut out = line(&header.iter().map(|h| h.to_string()).collect::<Vec<_>>());
    out.push_str(&line(
        &header.iter().map(|_| "---".to_owned()).collect::<Vec<_>>(),
    ));
    for row in rows {
        out.push_str(&line(row));
    }
    out
}

fn text_table(header: &[&str], rows: &[Vec<String>]) -> String {
    let head: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    let all: Vec<&Vec<String>> = std::iter::once(&head).chain(rows).collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|c| all.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    all.iter()
        .map(|r| {
            let cells: Vec<String> = r
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect();
            cells.join("  ").trim_end().to_owned() + "\n"
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_tail() {
        assert!((normal_sf(0.0) - 0.5).abs() < 1e-7);
        assert!((normal_sf(1.959_963_985) - 0.025).abs() < 1e-7);
        assert!((normal_sf(3.0) - 0.001_349_898).abs() < 1e-8);
    }

    #[test]
    fn z_test_needs_both_stderrs() {
        assert_eq!(z_test(0.1, Some(0.03), None), None);
        assert_eq!(z_test(0.0, Some(0.03), Some(0.04)), Some(1.0));
        let p = z_test(-0.1, Some(0.03), Some(0.04)).unwrap();
        assert!((p - normal_sf(2.0)).abs() < 1e-12);
    }

    #[test]
    fn verdicts_follow_direction_threshold_and_alpha() {
        let o = CompareOptions {
            min_delta: 0.01,
            ..CompareOptions::default()
        };
        assert_eq!(
            verdict(-0.05, Some(0.001), Some(true), &o),
            Verdict::Regression
        );
        assert_eq!(
            verdict(0.05, Some(0.001), Some(false), &o),
            Verdict::Regression
        );
        assert_eq!(
            verdict(0.05, Some(0.001), Some(true), &o),
            Verdict::Improvement
        );
        assert_eq!(
            verdict(-0.005, Some(0.001), Some(true), &o),
            Verdict::NotSignificant
        );
        assert_eq!(
            verdict(-0.05, Some(0.2), Some(true), &o),
            Verdict::NotSignificant
        );
        assert_eq!(verdict(-0.05, Some(0.001), None, &o), Verdict::Changed);
        assert_eq!(verdict(-0.05, None, Some(true), &o), Verdict::Untested);
    }

    #[test]
    fn tables() {
        let rows = vec![vec!["a".to_owned(), "1".to_owned()]];
        assert_eq!(
            markdown_table(&["x", "y"], &rows),
            "| x | y |\n| --- | --- |\n| a | 1 |\n"
        );
        assert_eq!(text_table(&["xx", "y"], &rows), "xx  y\na   1\n");
    }
}
