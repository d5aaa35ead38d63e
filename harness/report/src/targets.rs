//! Targets: the suite's expected values (`targets:`, written to `targets.json` in the run
//! directory), checked against what the run obtained — the report's first section when a
//! suite has them, and the gate of `--check-targets` (exit code 3 when one is missed).
//!
//! A target passes when the obtained value is within `tolerance` of `value`, or better than
//! it in the metric's direction (a regression gate: doing better is never a failure). A
//! target whose number the run does not have (its job did not finish, or never ran) and one
//! whose number is not finite are missed, never passed.
use crate::claims::{check_claims, render_claims, ClaimResult, ClaimStatus};
use crate::metric::{self, fmt_delta, fmt_value};
use crate::run::{key, MetricKey, Run};
use crate::text::render_table;
use crate::ReportError;
use moebench_suite::suite::Target;
use moebench_suite::{Record, RecordKind};
use std::collections::HashMap;
use std::path::Path;

/// The outcome of one target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetStatus {
    Pass,
    /// Outside the tolerance, in the worse direction.
    Fail,
    /// The run has no such number: its job did not finish (or the target names none).
    Missing,
    /// The obtained value is NaN or infinite.
    NotANumber,
}

impl TargetStatus {
    pub fn describe(self) -> &'static str {
        match self {
            TargetStatus::Pass => "pass",
            TargetStatus::Fail => "FAIL",
            TargetStatus::Missing => "MISSING",
            TargetStatus::NotANumber => "NOT A NUMBER",
        }
    }
}

/// One target against the run.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetResult {
    pub target: Target,
    pub obtained: Option<f64>,
    /// `obtained − value`.
    pub delta: Option<f64>,
    pub status: TargetStatus,
}

/// Every target and claim of a run, checked, in the suite's order.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetCheck {
    pub results: Vec<TargetResult>,
    /// The suite's claims ([`crate::claims`]).
    pub claims: Vec<ClaimResult>,
}

/// Checks `targets` against `records` (the records of a run's finished jobs in file order; a
/// number recorded twice counts with its last value). Pure: no file is read.
pub fn check_targets(targets: &[Target], records: &[Record]) -> TargetCheck {
    let latest: HashMap<MetricKey, &Record> = records
        .iter()
        .filter(|r| matches!(r.kind, RecordKind::Metric | RecordKind::Measure))
        .map(|r| (key(r), r))
        .collect();
    let results = targets
        .iter()
        .map(|t| {
            let found = latest.get(&(
                t.model.clone(),
                t.method.clone(),
                t.task.clone(),
                t.metric.clone(),
            ));
            match found {
                Some(r) => verdict(t, r),
                None => TargetResult {
                    target: t.clone(),
                    obtained: None,
                    delta: None,
                    status: TargetStatus::Missing,
                },
            }
        })
        .collect();
    TargetCheck {
        results,
        claims: Vec::new(),
    }
}

fn verdict(target: &Target, obtained: &Record) -> TargetResult {
    let delta = obtained.value - target.value;
    let status = if !obtained.value.is_finite() {
        TargetStatus::NotANumber
    } else {
        let pass = match metric::higher_is_better(obtained) {
            Some(true) => delta >= -target.tolerance,
            Some(false) => delta <= target.tolerance,
            None => delta.abs() <= target.tolerance,
        };
        if pass {
            TargetStatus::Pass
        } else {
            TargetStatus::Fail
        }
    };
    TargetResult {
        target: target.clone(),
        obtained: Some(obtained.value),
        delta: Some(delta),
        status,
    }
}

/// The targets of the run directory `dir` (its `targets.json`) checked against its finished
/// jobs; `None` when the run has no targets.
pub fn check_run_targets(dir: &Path) -> Result<Option<TargetCheck>, ReportError> {
    Run::load(dir)?.check_targets()
}

impl Run {
    /// [`check_targets`] on this run's `targets.json` and [`check_claims`] on its
    /// `claims.json`; `None` when it has neither.
    pub fn check_targets(&self) -> Result<Option<TargetCheck>, ReportError> {
        let targets = self.targets()?.unwrap_or_default();
        let claims = self.claims()?.unwrap_or_default();
        if targets.is_empty() && claims.is_empty() {
            return Ok(None);
        }
        let mut check = check_targets(&targets, &self.records);
        check.claims = check_claims(self, &claims)?;
        Ok(Some(check))
    }
}

impl TargetCheck {
    pub fn passed(&self) -> usize {
        self.results
            .iter()
            .filter(|r| r.status == TargetStatus::Pass)
            .count()
    }

    pub fn claims_holding(&self) -> usize {
        self.claims
            .iter()
            .filter(|c| c.status == ClaimStatus::Holds)
            .count()
    }

    /// Every target passes and every claim holds.
    pub fn all_pass(&self) -> bool {
        self.passed() == self.results.len() && self.claims_holding() == self.claims.len()
    }

    /// `2 of 3 targets pass`, `1 of 2 claims hold`, or both joined by `; `.
    pub fn summary(&self) -> String {
        let plural = |n: usize| if n == 1 { "" } else { "s" };
        let mut parts = Vec::new();
        if !self.results.is_empty() {
            let n = self.results.len();
            parts.push(format!("{} of {n} target{} pass", self.passed(), plural(n)));
        }
        if !self.claims.is_empty() {
            let n = self.claims.len();
            let verb = if self.claims_holding() == 1 {
                "holds"
            } else {
                "hold"
            };
            parts.push(format!(
                "{} of {n} claim{} {verb}",
                self.claims_holding(),
                plural(n)
            ));
        }
        parts.join("; ")
    }

    /// The check as tables — target, obtained, Δ, status, source; then the claims — aligned
    /// or as markdown.
    pub fn render(&self, markdown: bool) -> String {
        let mut out = String::new();
        if !self.results.is_empty() {
            out.push_str(&self.render_targets(markdown));
        }
        if !self.claims.is_empty() {
            if !out.is_empty() {
                out.push('\n');
            }
            out.push_str(&render_claims(&self.claims, markdown));
        }
        out
    }

    fn render_targets(&self, markdown: bool) -> String {
        let rows: Vec<Vec<String>> = self
            .results
            .iter()
            .map(|r| {
                let t = &r.target;
                vec![
                    t.model.clone(),
                    t.method.clone(),
                    t.task.clone().unwrap_or_default(),
                    t.metric.clone(),
                    fmt_target(t),
                    r.obtained.map(fmt_value).unwrap_or_else(|| "—".into()),
                    r.delta.map(fmt_delta).unwrap_or_else(|| "—".into()),
                    r.status.describe().into(),
                    t.source.clone().unwrap_or_default(),
                ]
            })
            .collect();
        render_table(&HEADER, &rows, markdown)
    }
}

/// The columns of [`TargetCheck::render`] and of the report's targets table.
pub const HEADER: [&str; 9] = [
    "model", "method", "task", "metric", "target", "obtained", "Δ", "status", "source",
];

/// `0.8930 ± 0.0300`.
pub fn fmt_target(t: &Target) -> String {
    format!("{} ± {}", fmt_value(t.value), fmt_value(t.tolerance))
}

#[cfg(test)]
mod tests {
    use super::*;
    fn target(method: &str, metric: &str, value: f64, tolerance: f64) -> Target {
        Target {
            model: "m".into(),
            method: method.into(),
            task: (metric != "params_active").then(|| "t".to_owned()),
            metric: metric.into(),
            value,
            tolerance,
            source: Some("Table 1".into()),
        }
    }

    fn record(method: &str, metric: &str, value: f64, higher: Option<bool>) -> Record {
        let measure = metric == "params_active";
        serde_json::from_value(serde_json::json!({
            "kind": if measure { "measure" } else { "metric" },
            "suite": "s", "job": format!("job-{method}"), "model": "m", "model_label": "m",
            "model_sha": "0", "method": method, "method_label": method, "method_params": {},
            "method_hash": "0", "task": (!measure).then_some("t"), "task_hash": null,
            "metric": metric, "value": if value.is_finite() { Some(value) } else { None },
            "stderr": null, "n": null, "higher_is_better": higher, "protocol": null,
            "device": "cpu", "dtype": "float32", "batch_size": 1, "seed": 0,
            "harness_version": "0", "wall_s": 1.0, "time": "2026-01-01T00:00:00Z",
        }))
        .unwrap()
    }

    fn statuses(check: &TargetCheck) -> Vec<TargetStatus> {
        check.results.iter().map(|r| r.status).collect()
    }

    #[test]
    fn tolerance_and_direction_decide() {
        use TargetStatus::*;
        let targets = [
            target("a", "acc,none", 0.60, 0.02),    // 0.585: within
            target("b", "acc,none", 0.60, 0.02),    // 0.55: below
            target("c", "acc,none", 0.60, 0.02),    // 0.70: better, passes
            target("a", "ppl,none", 10.0, 0.5),     // 10.4: within (lower is better)
            target("b", "ppl,none", 10.0, 0.5),     // 11.0: worse
            target("c", "f1,none", 0.5, 0.01),      // no direction: 0.53 is outside
            target("a", "params_active", 1e6, 0.0), // measure, lower is better: 9e5 passes
        ];
        let records = [
            record("a", "acc,none", 0.585, Some(true)),
            record("b", "acc,none", 0.55, Some(true)),
            record("c", "acc,none", 0.70, Some(true)),
            record("a", "ppl,none", 10.4, Some(false)),
            record("b", "ppl,none", 11.0, Some(false)),
            record("c", "f1,none", 0.53, None),
            record("a", "params_active", 9e5, Some(false)),
        ];
        let check = check_targets(&targets, &records);
        assert_eq!(statuses(&check), [Pass, Fail, Pass, Pass, Fail, Fail, Pass]);
        assert_eq!(check.summary(), "4 of 7 targets pass");
        assert!(!check.all_pass());
        let b = &check.results[1];
        assert_eq!(b.obtained, Some(0.55));
        assert!((b.delta.unwrap() + 0.05).abs() < 1e-12);
    }

    #[test]
    fn missing_and_non_finite_numbers_are_missed() {
        let targets = [
            target("gone", "acc,none", 0.6, 0.1),
            target("nan", "acc,none", 0.6, 0.1),
            target("inf", "ppl,none", 10.0, 100.0),
        ];
        let records = [
            record("nan", "acc,none", f64::NAN, Some(true)),
            record("inf", "ppl,none", f64::INFINITY, None),
        ];
        let check = check_targets(&targets, &records);
        assert_eq!(
            statuses(&check),
            [
                TargetStatus::Missing,
                TargetStatus::NotANumber,
                TargetStatus::NotANumber
            ]
        );
        assert_eq!(check.passed(), 0);
    }

    #[test]
    fn the_latest_record_counts() {
        let targets = [target("a", "acc,none", 0.6, 0.0)];
        let records = [
            record("a", "acc,none", 0.1, Some(true)),
            record("a", "acc,none", 0.6, Some(true)),
        ];
        assert!(check_targets(&targets, &records).all_pass());
    }

    #[test]
    fn table_names_target_obtained_delta_and_source() {
        let targets = [
            target("a", "acc,none", 0.6, 0.02),
            target("gone", "acc,none", 0.6, 0.02),
        ];
        let records = [record("a", "acc,none", 0.55, Some(true))];
        let text = check_targets(&targets, &records).render(false);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        let cells = |line: &str| {
            line.split_whitespace()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            cells(lines[0]),
            ["model", "method", "task", "metric", "target", "obtained", "Δ", "status", "source"]
        );
        assert_eq!(
            cells(lines[1]),
            [
                "m",
                "a",
                "t",
                "acc,none",
                "0.6000",
                "±",
                "0.0200",
                "0.5500",
                "−0.0500",
                "FAIL",
                "Table",
                "1"
            ]
        );
        assert_eq!(
            cells(lines[2]),
            [
                "m", "gone", "t", "acc,none", "0.6000", "±", "0.0200", "—", "—", "MISSING",
                "Table", "1"
            ]
        );
    }
}
