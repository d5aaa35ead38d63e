//! Claims: a paper's headline result as an inequality between two methods (`claims:` of the
//! suite, written to `claims.json` in the run directory), checked with a paired bootstrap over
//! the two jobs' per-document scores — the mini-reproductions of `suites/repro-mini/`.
//!
//! The improvement is `better − than` in the metric's direction (negated for lower-is-better
//! metrics). A claim **holds** when the lower end of the 95% interval of the improvement is
//! above `margin`, **does not hold** when its upper end is below `margin`, and is
//! **inconclusive** in between; it is **missing** when either job has no number or no
//! per-document scores of the metric. Per-document numbers (accuracy, exact match) are
//! averaged; `[loglikelihood, weight]` pairs (perplexities, bits per byte) are aggregated as
//! the task score is, on each resample.
use crate::metric::{self, fmt_delta, fmt_value};
use crate::run::Run;
use crate::significance::logged;
use crate::text::render_table;
use crate::ReportError;
use moebench_core::metrics::{DocScore, MetricName};
use moebench_core::stats::{paired_bootstrap, paired_bootstrap_of, PairedBootstrap};
use moebench_suite::suite::Claim;
use moebench_suite::RecordKind;
use serde_json::Value;
use std::collections::HashMap;

/// The run directory's copy of the suite's claims.
pub const CLAIMS_FILE: &str = "claims.json";

/// Bootstrap replicates and seed of every claim check (fixed: the verdict is reproducible).
const ITERS: usize = 2000;
const SEED: u64 = 1234;

/// The outcome of one claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimStatus {
    Holds,
    Inconclusive,
    DoesNotHold,
    /// A number or the per-document scores of either job are missing.
    Missing,
}

impl ClaimStatus {
    pub fn describe(self) -> &'static str {
        match self {
            ClaimStatus::Holds => "holds",
            ClaimStatus::Inconclusive => "INCONCLUSIVE",
            ClaimStatus::DoesNotHold => "DOES NOT HOLD",
            ClaimStatus::Missing => "MISSING",
        }
    }
}

/// One claim against the run.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimResult {
    pub claim: Claim,
    /// The two methods' numbers (the task-level metric as recorded).
    pub better: Option<f64>,
    pub than: Option<f64>,
    /// Mean per-document improvement of `better` over `than` in the metric's direction, and
    /// its 95% paired-bootstrap interval.
    pub improvement: Option<f64>,
    pub ci: Option<(f64, f64)>,
    /// Documents paired.
    pub documents: usize,
    pub status: ClaimStatus,
}

/// Checks `claims` against the finished jobs of `run`, reading their sample logs.
pub fn check_claims(run: &Run, claims: &[Claim]) -> Result<Vec<ClaimResult>, ReportError> {
    let latest = run.latest_by_key(RecordKind::Metric);
    let find = |c: &Claim, model: &str, method: &str| {
        latest
            .get(&(
                model.to_owned(),
                method.to_owned(),
                Some(c.task.clone()),
                c.metric.clone(),
            ))
            .copied()
    };
    claims
        .iter()
        .map(|c| {
            let (better, than) = (
                find(c, &c.model, &c.better),
                find(c, c.than_model(), &c.than),
            );
            let mut result = ClaimResult {
                claim: c.clone(),
                better: better.map(|r| r.value),
                than: than.map(|r| r.value),
                improvement: None,
                ci: None,
                documents: 0,
                status: ClaimStatus::Missing,
            };
            let (Some(better), Some(than)) = (better, than) else {
                return Ok(result);
            };
            let (Some(better_log), Some(than_log)) =
                (run.samples(&better.job)?, run.samples(&than.job)?)
            else {
                return Ok(result);
            };
            let by_doc: HashMap<_, _> = logged(&better_log, &c.metric).into_iter().collect();
            let pairs: Vec<(&Value, &Value)> = logged(&than_log, &c.metric)
                .into_iter()
                .filter_map(|(doc, base)| Some((base, *by_doc.get(&doc)?)))
                .collect();
            let Some(boot) = paired_test(&pairs, &c.metric)? else {
                return Ok(result);
            };
            // Higher is better unless the record says otherwise.
            let sign = match metric::higher_is_better(better) {
                Some(false) => -1.0,
                _ => 1.0,
            };
            let (low, high) = if sign > 0.0 {
                (boot.ci_low, boot.ci_high)
            } else {
                (-boot.ci_high, -boot.ci_low)
            };
            result.improvement = Some(sign * boot.delta);
            result.ci = Some((low, high));
            result.documents = pairs.len();
            result.status = if low > c.margin {
                ClaimStatus::Holds
            } else if high < c.margin {
                ClaimStatus::DoesNotHold
            } else {
                ClaimStatus::Inconclusive
            };
            Ok(result)
        })
        .collect()
}

/// One document's `(loglikelihood, weight)` under `than` and under `better`.
type WeightedPair = ((f64, f64), (f64, f64));

/// The paired bootstrap of `than → better` over documents' logged values: numbers are
/// averaged; `[loglikelihood, weight]` pairs (the perplexity family, bits per byte) are
/// aggregated as the metric's default aggregation does, so that the difference is one of task
/// scores. `None` below two documents or for values of neither kind.
fn paired_test(
    pairs: &[(&Value, &Value)],
    metric: &str,
) -> Result<Option<PairedBootstrap>, ReportError> {
    if pairs.len() < 2 {
        return Ok(None);
    }
    let numbers: Option<Vec<(f64, f64)>> = pairs
        .iter()
        .map(|(a, b)| Some((a.as_f64()?, b.as_f64()?)))
        .collect();
    if let Some(numbers) = numbers {
        let (a, b): (Vec<f64>, Vec<f64>) = numbers.into_iter().unzip();
        return Ok(Some(paired_bootstrap(&a, &b, ITERS, SEED)?));
    }
    let name = metric.split(',').next().unwrap_or_default();
    let Some(aggregation) = MetricName::ALL
        .iter()
        .find(|m| m.as_str() == name)
        .map(|m| m.default_aggregation())
        .filter(|a| a.is_weighted())
    else {
        return Ok(None);
    };
    let weighted = |v: &Value| -> Option<(f64, f64)> {
        match v.as_array()?.as_slice() {
            [ll, w] => Some((ll.as_f64()?, w.as_f64()?)),
            _ => None,
        }
    };
    let Some(docs) = pairs
        .iter()
        .map(|(a, b)| Some((weighted(a)?, weighted(b)?)))
        .collect::<Option<Vec<WeightedPair>>>()
    else {
        return Ok(None);
    };
    let score = |side: &mut dyn Iterator<Item = (f64, f64)>| {
        let scores: Vec<DocScore> = side.map(|(ll, w)| DocScore::Weighted(ll, w)).collect();
        aggregation.aggregate(&scores).unwrap_or(f64::NAN)
    };
    let difference = |docs: &[WeightedPair]| {
        score(&mut docs.iter().map(|d| d.1)) - score(&mut docs.iter().map(|d| d.0))
    };
    Ok(Some(paired_bootstrap_of(difference, &docs, ITERS, SEED)?))
}

/// The index of the status column in [`HEADER`].
pub const STATUS_COLUMN: usize = 8;

/// The columns of [`render_claims`] and of the report's claims table.
pub const HEADER: [&str; 10] = [
    "claim",
    "model",
    "better",
    "than",
    "task · metric",
    "values",
    "improvement",
    "95% CI",
    "status",
    "source",
];

/// The cells of one claim's row, in [`HEADER`]'s order.
pub fn cells(r: &ClaimResult) -> Vec<String> {
    let c = &r.claim;
    let value = |v: Option<f64>| v.map(fmt_value).unwrap_or_else(|| "—".into());
    let margin = match c.margin {
        0.0 => String::new(),
        m => format!(" (margin {})", fmt_value(m)),
    };
    let model = match c.than_model() {
        than if than == c.model => c.model.clone(),
        than => format!("{} vs {than}", c.model),
    };
    vec![
        c.claim.clone(),
        model,
        c.better.clone(),
        c.than.clone(),
        format!("{} · {}", c.task, c.metric),
        format!("{} vs {}", value(r.better), value(r.than)),
        r.improvement.map(fmt_delta).unwrap_or_else(|| "—".into()) + &margin,
        r.ci.map(|(l, h)| format!("[{}, {}] (n={})", fmt_delta(l), fmt_delta(h), r.documents))
            .unwrap_or_else(|| "—".into()),
        r.status.describe().into(),
        c.source.clone().unwrap_or_default(),
    ]
}

/// The claims as a table, aligned or as markdown.
pub fn render_claims(results: &[ClaimResult], markdown: bool) -> String {
    let rows: Vec<Vec<String>> = results.iter().map(cells).collect();
    render_table(&HEADER, &rows, markdown)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::{RowSpec, Synthetic};
    use serde_json::json;

    fn claim(better: &str, than: &str, margin: f64) -> Claim {
        Claim {
            claim: format!("{better} beats {than}"),
            model: "m".into(),
            better: better.into(),
            than: than.into(),
            than_model: None,
            task: "arc_easy".into(),
            metric: "acc,none".into(),
            margin,
            source: Some("§4".into()),
        }
    }

    /// Rows of one model share their per-document draws: `strong` (0.9) is right wherever
    /// `weak` (0.5) is, and on ~40% more documents; `twin` answers exactly as `weak`.
    fn run() -> (tempfile::TempDir, Run) {
        let dir = tempfile::tempdir().unwrap();
        let row = |method: &str, accuracy: f64| RowSpec::scaled("m", method, accuracy, 1.0, 1.0);
        Synthetic {
            suite: "claims".into(),
            start_time: "2026-01-01T00:00:00Z".into(),
            rows: vec![row("strong", 0.9), row("weak", 0.5), row("twin", 0.5)],
            tasks: vec!["arc_easy".into()],
            perplexity: false,
            docs: 200,
            measures: false,
            routing: false,
            targets: Vec::new(),
            interrupted_job: false,
            legacy_measures: false,
        }
        .write(dir.path())
        .unwrap();
        let run = Run::load(dir.path()).unwrap();
        (dir, run)
    }

    #[test]
    fn a_clear_improvement_holds_its_reverse_does_not_and_a_tie_is_inconclusive() {
        let (_dir, run) = run();
        let results = check_claims(
            &run,
            &[
                claim("strong", "weak", 0.0),
                claim("weak", "strong", 0.0),
                claim("twin", "weak", 0.0),
                claim("strong", "weak", 0.6),
                claim("strong", "absent", 0.0),
            ],
        )
        .unwrap();
        let statuses: Vec<ClaimStatus> = results.iter().map(|r| r.status).collect();
        assert_eq!(
            statuses,
            [
                ClaimStatus::Holds,
                ClaimStatus::DoesNotHold,
                ClaimStatus::Inconclusive,
                ClaimStatus::DoesNotHold,
                ClaimStatus::Missing,
            ]
        );
        let strong = &results[0];
        let (better, than) = (strong.better.unwrap(), strong.than.unwrap());
        assert!((strong.improvement.unwrap() - (better - than)).abs() < 1e-12);
        assert_eq!(strong.documents, 200);
        let (low, high) = strong.ci.unwrap();
        assert!(
            0.0 < low && low < better - than && better - than < high,
            "{low} {high}"
        );
        let table = render_claims(&results, false);
        assert!(
            table.contains("DOES NOT HOLD") && table.contains("§4"),
            "{table}"
        );
    }

    /// Bits per byte over `[loglikelihood, bytes]` pairs: the difference is one of task scores
    /// (Σ over documents, not a mean of per-document ratios), negative when `b` is better.
    #[test]
    fn weighted_metrics_are_compared_as_task_scores() {
        let docs: Vec<(Value, Value)> = (0..30)
            .map(|d| {
                let bytes = 10.0 + f64::from(d);
                (
                    json!([-bytes, bytes]),
                    json!([-0.5 * bytes - 0.1 * f64::from(d % 3), bytes]),
                )
            })
            .collect();
        let pairs: Vec<(&Value, &Value)> = docs.iter().map(|(a, b)| (a, b)).collect();
        let boot = paired_test(&pairs, "bits_per_byte,none").unwrap().unwrap();
        let a: Vec<(f64, f64)> = docs
            .iter()
            .map(|d| (d.0[0].as_f64().unwrap(), d.0[1].as_f64().unwrap()))
            .collect();
        let b: Vec<(f64, f64)> = docs
            .iter()
            .map(|d| (d.1[0].as_f64().unwrap(), d.1[1].as_f64().unwrap()))
            .collect();
        let want =
            moebench_core::metrics::bits_per_byte(&b) - moebench_core::metrics::bits_per_byte(&a);
        assert!(
            (boot.delta - want).abs() < 1e-12,
            "{} vs {want}",
            boot.delta
        );
        assert!(boot.ci_low < boot.delta && boot.ci_high < 0.0, "{boot:?}");
        assert!(
            paired_test(&pairs, "acc,none").unwrap().is_none(),
            "pairs of a mean metric"
        );
    }
}
