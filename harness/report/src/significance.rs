//! Whether the difference between two numbers of the same (task, metric) is more than
//! resampling noise — between two runs (`moebench compare`) or between a row and its base
//! model's dense row (the report's Δ columns).
//!
//! With per-document numbers for both (the sample logs, documents matched by `doc_hash`,
//! repeated documents paired in order): a paired bootstrap ([`paired_bootstrap`], the same
//! chunked resampling as lm-eval's `bootstrap_stderr`). Otherwise, with two standard errors: a
//! z-test that treats them as independent, which is conservative for numbers of the same
//! documents. Otherwise: no test.
use crate::run::{DocScores, Run};
use crate::ReportError;
use moebench_core::stats::paired_bootstrap;
use moebench_suite::Record;
use serde_json::Value;
use std::collections::HashMap;

/// How a p-value was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Test {
    /// Paired bootstrap over this many shared documents.
    PairedBootstrap(usize),
    /// z-test on the two reported standard errors.
    ZTest,
    /// Neither per-document numbers nor standard errors.
    None,
}

impl Test {
    pub fn describe(&self) -> String {
        match self {
            Test::PairedBootstrap(n) => format!("paired bootstrap (n={n})"),
            Test::ZTest => "z-test (stderr)".into(),
            Test::None => "none".into(),
        }
    }
}

/// A tested difference `new − base`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tested {
    pub delta: f64,
    /// One-sided p-value in the direction of `delta` (see
    /// [`moebench_core::stats::PairedBootstrap::p_value`]).
    pub p_value: Option<f64>,
    /// 95% interval of the difference (paired bootstrap only).
    pub ci: Option<(f64, f64)>,
    pub test: Test,
}

impl Tested {
    /// Two-sided p-value: twice the one-sided one, at most 1.
    pub fn two_sided_p(&self) -> Option<f64> {
        self.p_value.map(|p| (2.0 * p).min(1.0))
    }
}

/// Per-document numbers of a base and a new row, document by document.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Paired {
    pub base: Vec<f64>,
    pub new: Vec<f64>,
}

/// Tests `new − base` of two numbers, on `paired` documents when there are at least two,
/// else on the standard errors.
pub fn test_difference(
    base: (f64, Option<f64>),
    new: (f64, Option<f64>),
    paired: Option<&Paired>,
    iters: usize,
    seed: u64,
) -> Result<Tested, ReportError> {
    let delta = new.0 - base.0;
    if let Some(p) = paired.filter(|p| p.base.len() >= 2 && iters > 0) {
        let boot = paired_bootstrap(&p.base, &p.new, iters, seed)?;
        return Ok(Tested {
            delta,
            p_value: Some(boot.p_value),
            ci: Some((boot.ci_low, boot.ci_high)),
            test: Test::PairedBootstrap(p.base.len()),
        });
    }
    Ok(match z_test(delta, base.1, new.1) {
        Some(p) => Tested {
            delta,
            p_value: Some(p),
            ci: None,
            test: Test::ZTest,
        },
        None => Tested {
            delta,
            p_value: None,
            ci: None,
            test: Test::None,
        },
    })
}

/// The per-document numbers of several tasks as one paired sample whose mean difference is the
/// difference of the tasks' unweighted average: document `i` of task `t` (of `n_t`) weighs
/// `N / (T · n_t)`. Resampling it jointly is a paired bootstrap of the average (not stratified
/// by task; with tasks of hundreds of documents the difference is negligible).
pub fn pool_for_average(tasks: &[Paired]) -> Paired {
    let total: usize = tasks.iter().map(|p| p.base.len()).sum();
    let mut pooled = Paired::default();
    for p in tasks {
        let weight = total as f64 / (tasks.len() as f64 * p.base.len() as f64);
        pooled.base.extend(p.base.iter().map(|x| x * weight));
        pooled.new.extend(p.new.iter().map(|x| x * weight));
    }
    pooled
}

/// Numbers of one metric per document of one job, keyed by (doc_hash, occurrence) so that
/// repeated documents pair up in order.
#[derive(Debug, Clone, Default)]
pub struct DocValues {
    values: Vec<((String, usize), f64)>,
}

impl DocValues {
    /// The numeric values of `metric` in a sample log; documents that log no number for it
    /// (corpus-level metrics log pairs) are left out.
    pub fn of(log: &[DocScores], metric: &str) -> Self {
        let values = logged(log, metric)
            .into_iter()
            .filter_map(|(doc, v)| Some((doc, v.as_f64()?)))
            .collect();
        Self { values }
    }

    /// The documents both scored, in this (the base's) order; `None` below two.
    pub fn pair(&self, new: &DocValues) -> Option<Paired> {
        let by_doc: HashMap<&(String, usize), f64> =
            new.values.iter().map(|(d, v)| (d, *v)).collect();
        let (base, new): (Vec<f64>, Vec<f64>) = self
            .values
            .iter()
            .filter_map(|(doc, x)| by_doc.get(doc).map(|y| (*x, *y)))
            .unzip();
        (base.len() >= 2).then_some(Paired { base, new })
    }
}

/// What a sample log holds for `metric`, per document keyed by (doc_hash, occurrence) so
/// that repeated documents pair up in order.
pub fn logged<'l>(log: &'l [DocScores], metric: &str) -> Vec<((String, usize), &'l Value)> {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    log.iter()
        .filter_map(|d| {
            let value = d.metrics.get(metric)?;
            let k = seen.entry(d.doc_hash.as_str()).or_default();
            *k += 1;
            Some(((d.doc_hash.clone(), *k), value))
        })
        .collect()
}

/// The sample log of the job read last: a job's records are consecutive, so its metrics are
/// tested one after another and only one log per run needs to stay in memory.
#[derive(Debug, Default)]
pub struct LastLog {
    job: String,
    log: Option<Vec<DocScores>>,
}

impl LastLog {
    /// The values of `metric` logged by `job` of `run`; `None` when the job logged no samples.
    pub fn values(
        &mut self,
        run: &Run,
        job: &str,
        metric: &str,
    ) -> Result<Option<DocValues>, ReportError> {
        if self.job != job {
            self.log = run.samples(job)?;
            self.job = job.to_owned();
        }
        Ok(self.log.as_deref().map(|log| DocValues::of(log, metric)))
    }
}

/// Tests `new − base` of two records on their jobs' sample logs (read through `logs`).
pub fn test_records(
    (base_run, base, base_log): (&Run, &Record, &mut LastLog),
    (new_run, new, new_log): (&Run, &Record, &mut LastLog),
    iters: usize,
    seed: u64,
) -> Result<Tested, ReportError> {
    let paired = match (
        base_log.values(base_run, &base.job, &base.metric)?,
        new_log.values(new_run, &new.job, &new.metric)?,
    ) {
        (Some(a), Some(b)) => a.pair(&b),
        _ => None,
    };
    test_difference(
        (base.value, base.stderr),
        (new.value, new.stderr),
        paired.as_ref(),
        iters,
        seed,
    )
}

/// One-sided p-value of `delta` against independent normal errors `se_a`, `se_b`.
pub fn z_test(delta: f64, se_a: Option<f64>, se_b: Option<f64>) -> Option<f64> {
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
pub fn normal_sf(z: f64) -> f64 {
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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

    fn log(docs: &[(&str, f64)]) -> Vec<DocScores> {
        docs.iter()
            .map(|(hash, v)| DocScores {
                doc_hash: (*hash).into(),
                metrics: [("acc,none".to_owned(), json!(v))].into(),
            })
            .collect()
    }

    #[test]
    fn documents_pair_by_hash_and_occurrence() {
        let base = DocValues::of(
            &log(&[("a", 1.0), ("b", 0.0), ("a", 0.0), ("c", 1.0)]),
            "acc,none",
        );
        let new = DocValues::of(&log(&[("c", 0.0), ("a", 1.0), ("a", 1.0)]), "acc,none");
        // b is missing from the new run; the second `a` pairs with the second `a`.
        assert_eq!(
            base.pair(&new),
            Some(Paired {
                base: vec![1.0, 0.0, 1.0],
                new: vec![1.0, 1.0, 0.0]
            })
        );
        assert_eq!(
            DocValues::of(&log(&[("a", 1.0)]), "acc,none").pair(&new),
            None
        );
    }

    #[test]
    fn pooled_sample_averages_tasks_unweighted() {
        let small = Paired {
            base: vec![1.0, 0.0],
            new: vec![1.0, 1.0],
        };
        let large = Paired {
            base: vec![1.0; 6],
            new: vec![0.0, 1.0, 1.0, 1.0, 1.0, 1.0],
        };
        let pooled = pool_for_average(&[small.clone(), large.clone()]);
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        let per_task =
            ((mean(&small.new) - mean(&small.base)) + (mean(&large.new) - mean(&large.base))) / 2.0;
        assert!((mean(&pooled.new) - mean(&pooled.base) - per_task).abs() < 1e-12);
    }

    #[test]
    fn a_clear_paired_difference_is_significant() {
        let base: Vec<f64> = (0..200).map(|i| f64::from(i % 4 != 0)).collect();
        let mut new = base.clone();
        for v in new.iter_mut().step_by(5) {
            *v = 0.0;
        }
        let paired = Paired { base, new };
        let t = test_difference(
            (0.75, Some(0.03)),
            (0.6, Some(0.03)),
            Some(&paired),
            1000,
            1,
        )
        .unwrap();
        assert_eq!(t.test, Test::PairedBootstrap(200));
        assert!(t.two_sided_p().unwrap() < 0.01, "{t:?}");
        let (lo, hi) = t.ci.unwrap();
        assert!(lo < -0.1 && hi < 0.0);
        // Without documents, the stderrs decide; without those, nothing is tested.
        let z = test_difference((0.75, Some(0.03)), (0.6, Some(0.03)), None, 1000, 1).unwrap();
        assert_eq!(z.test, Test::ZTest);
        let none = test_difference((0.75, None), (0.6, None), None, 1000, 1).unwrap();
        assert_eq!((none.test, none.p_value), (Test::None, None));
    }
}
