//! Run-to-run comparison: every (model, method, task, metric) present in both runs, tested
//! as [`crate::significance`] describes (paired bootstrap over the documents both runs scored,
//! else a z-test on the two standard errors).
use crate::metric::fmt_value;
use crate::run::{key, Run};
use crate::significance::{test_records, LastLog, Test, Tested};
use crate::text::render_table;
use crate::ReportError;
use moebench_suite::{Record, RecordKind};
use serde_json::{json, Value};
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Regression,
    Improvement,
    /// Significant, but the metric has no better direction.
    Changed,
    NotSignificant,
    Untested,
    /// The value of either run is NaN or infinite: not comparable, and never a pass.
    NotANumber,
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
    let new_by_key = new_run.latest_by_key(RecordKind::Metric);
    let (mut base_log, mut new_log) = (LastLog::default(), LastLog::default());
    let mut rows = Vec::new();
    for a in base_run.latest(RecordKind::Metric) {
        if let Some(b) = new_by_key.get(&key(a)) {
            if !(a.value.is_finite() && b.value.is_finite()) {
                rows.push(not_a_number(a, b));
                continue;
            }
            let tested = test_records(
                (&base_run, a, &mut base_log),
                (&new_run, b, &mut new_log),
                options.iters,
                options.seed,
            )?;
            rows.push(row(a, b, tested, options));
        }
    }
    if rows.is_empty() {
        return Err(ReportError::NothingInCommon {
            base: base.to_owned(),
            new: new.to_owned(),
        });
    }
    Ok(Comparison {
        base: base.display().to_string(),
        new: new.display().to_string(),
        options: *options,
        rows,
    })
}

fn row(a: &Record, b: &Record, tested: Tested, options: &CompareOptions) -> Row {
    let higher_is_better = a.higher_is_better.or(b.higher_is_better);
    Row {
        model_label: a.model_label.clone(),
        method_label: a.method_label.clone(),
        task: a.task.clone().unwrap_or_default(),
        metric: a.metric.clone(),
        base: a.value,
        new: b.value,
        delta: tested.delta,
        p_value: tested.p_value,
        ci: tested.ci,
        test: tested.test,
        higher_is_better,
        verdict: verdict(tested.delta, tested.p_value, higher_is_better, options),
    }
}

/// The row of a metric that is not a finite number in either run: untested.
fn not_a_number(a: &Record, b: &Record) -> Row {
    Row {
        verdict: Verdict::NotANumber,
        ..row(
            a,
            b,
            Tested {
                delta: b.value - a.value,
                p_value: None,
                ci: None,
                test: Test::None,
            },
            &CompareOptions::default(),
        )
    }
}

/// `None` (JSON `null`) for NaN and infinities.
fn finite(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

impl Verdict {
    /// The verdict's name in `compare --json`.
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Regression => "regression",
            Verdict::Improvement => "improvement",
            Verdict::Changed => "changed",
            Verdict::NotSignificant => "not_significant",
            Verdict::Untested => "untested",
            Verdict::NotANumber => "not_a_number",
        }
    }
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

impl Comparison {
    pub fn regressions(&self) -> impl Iterator<Item = &Row> {
        self.rows
            .iter()
            .filter(|r| r.verdict == Verdict::Regression)
    }

    /// Metrics that are NaN or infinite in either run.
    pub fn not_numbers(&self) -> impl Iterator<Item = &Row> {
        self.rows
            .iter()
            .filter(|r| r.verdict == Verdict::NotANumber)
    }

    /// The comparison for scripts and dashboards (`moebench compare --json`): the options, the
    /// counts the exit code follows, and every row. A number that is NaN or infinite is `null`
    /// (JSON has no NaN), with its row's verdict `not_a_number`.
    pub fn to_json(&self) -> Value {
        let rows: Vec<Value> = self
            .rows
            .iter()
            .map(|r| {
                json!({
                    "model_label": r.model_label,
                    "method_label": r.method_label,
                    "task": r.task,
                    "metric": r.metric,
                    "base": finite(r.base),
                    "new": finite(r.new),
                    "delta": finite(r.delta),
                    "p_value": r.p_value,
                    "ci95": r.ci.map(|(lo, hi)| [lo, hi]),
                    "test": match r.test {
                        Test::PairedBootstrap(documents) => {
                            json!({"kind": "paired_bootstrap", "documents": documents})
                        }
                        Test::ZTest => json!({"kind": "z_test"}),
                        Test::None => json!({"kind": "none"}),
                    },
                    "higher_is_better": r.higher_is_better,
                    "verdict": r.verdict.name(),
                })
            })
            .collect();
        json!({
            "base": self.base,
            "new": self.new,
            "options": {
                "alpha": self.options.alpha,
                "min_delta": self.options.min_delta,
                "bootstrap_iters": self.options.iters,
                "seed": self.options.seed,
            },
            "metrics": self.rows.len(),
            "regressions": self.regressions().count(),
            "not_numbers": self.not_numbers().count(),
            "rows": rows,
        })
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
        let not_numbers: Vec<&Row> = self.not_numbers().collect();
        if !not_numbers.is_empty() {
            out.push_str(if markdown {
                "\n**Not a number (not compared):**\n"
            } else {
                "\nNot a number (not compared):\n"
            });
            for r in &not_numbers {
                out.push_str(&format!(
                    "- {}/{} {} {}: {} → {}\n",
                    r.model_label,
                    r.method_label,
                    r.task,
                    r.metric,
                    fmt_value(r.base),
                    fmt_value(r.new),
                ));
            }
        }
        out.push('\n');
        let cells: Vec<Vec<String>> = self.rows.iter().map(row_cells).collect();
        out.push_str(&render_table(&HEADER, &cells, markdown));
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
        r.test.describe(),
        match r.verdict {
            Verdict::Regression => "REGRESSION",
            Verdict::Improvement => "improvement",
            Verdict::Changed => "changed",
            Verdict::NotSignificant => "not significant",
            Verdict::Untested => "untested",
            Verdict::NotANumber => "NOT A NUMBER",
        }
        .into(),
    ]
}

fn fmt_p(p: Option<f64>) -> String {
    p.map_or_else(|| "—".into(), |p| format!("{p:.4}"))
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
