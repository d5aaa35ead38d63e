//! Standard errors and bootstrap, as lm-eval computes them (`lm_eval/api/metrics.py`:
//! `mean`, `sample_stddev`, `mean_stderr`, `bootstrap_stderr`, `pooled_sample_stderr`,
//! `unweighted_mean_stderr`, `aggregate_subtask_metrics`), plus a paired bootstrap for
//! comparing two runs.
//!
//! Sums follow CPython's builtin `sum`, which since Python 3.12 adds floats with Neumaier
//! compensation. Under Python 3.10/3.11 lm-eval sums naively, so its last digit can differ
//! from these (and from itself on 3.12) for non-integer scores such as log-likelihoods.
//! `x ** 2` is computed as `x * x` (CPython calls `pow(x, 2.0)`, which glibc rounds the same
//! way in all but pathological cases).

use rayon::prelude::*;

use crate::{CoreError, PyRandom};

/// CPython's builtin `sum` over floats (≥ 3.12: Neumaier compensated summation,
/// `builtin_sum_impl` in `Python/bltinmodule.c`).
pub fn py_sum(xs: impl IntoIterator<Item = f64>) -> f64 {
    let mut sum = 0.0;
    let mut compensation = 0.0;
    for x in xs {
        let t = sum + x;
        compensation += if f64::abs(sum) >= x.abs() {
            (sum - t) + x
        } else {
            (x - t) + sum
        };
        sum = t;
    }
    if compensation != 0.0 && compensation.is_finite() {
        sum += compensation;
    }
    sum
}

/// lm-eval's `mean`: `sum(arr) / len(arr)` (NaN for an empty slice).
pub fn mean(xs: &[f64]) -> f64 {
    py_sum(xs.iter().copied()) / xs.len() as f64
}

/// lm-eval's `sample_stddev` (Bessel-corrected); `None` below two values, where lm-eval
/// would divide by zero.
pub fn sample_stddev(xs: &[f64]) -> Option<f64> {
    if xs.len() < 2 {
        return None;
    }
    let mu = mean(xs);
    let squares = py_sum(xs.iter().map(|x| (x - mu) * (x - mu)));
    Some((squares / (xs.len() - 1) as f64).sqrt())
}

/// lm-eval's `mean_stderr`: `sample_stddev(xs) / sqrt(n)`. `None` below two values, which
/// lm-eval reports as `N/A` (`_compute_task_aggregations` only calls it when `len(items) > 1`).
pub fn mean_stderr(xs: &[f64]) -> Option<f64> {
    sample_stddev(xs).map(|sd| sd / (xs.len() as f64).sqrt())
}

/// The bootstrap replicates of `statistic` that lm-eval's `bootstrap_stderr` computes.
///
/// Replicates come in `iters / chunk` chunks of `chunk = min(1000, iters)` (so `iters` is
/// rounded down to a multiple of 1000 above 1000); chunk `c` draws its resamples with
/// `random.Random(seed + c).choices(xs, k=len(xs))`, one after another. lm-eval uses
/// `seed = 0`. Chunks run in parallel; the result, in chunk order, does not depend on the
/// number of threads.
pub fn bootstrap_replicates<T, F>(statistic: F, xs: &[T], iters: usize, seed: u64) -> Vec<f64>
where
    T: Copy + Send + Sync,
    F: Fn(&[T]) -> f64 + Sync,
{
    let chunk = iters.min(1000);
    if chunk == 0 || xs.is_empty() {
        return Vec::new();
    }
    let chunks = (iters / chunk) as u64;
    (0..chunks)
        .into_par_iter()
        .flat_map_iter(|c| {
            let mut rng = PyRandom::new(seed + c);
            let mut resample = Vec::with_capacity(xs.len());
            (0..chunk)
                .map(|_| {
                    resample.clear();
                    resample.extend((0..xs.len()).map(|_| xs[rng.choice_index(xs.len())]));
                    statistic(&resample)
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// lm-eval's `bootstrap_stderr`: the sample standard deviation of the bootstrap replicates
/// (see [`bootstrap_replicates`]). `None` where lm-eval reports `N/A`: `iters == 0`, fewer
/// than two scores, or fewer than two replicates.
pub fn bootstrap_stderr<T, F>(statistic: F, xs: &[T], iters: usize, seed: u64) -> Option<f64>
where
    T: Copy + Send + Sync,
    F: Fn(&[T]) -> f64 + Sync,
{
    if xs.len() < 2 {
        return None;
    }
    sample_stddev(&bootstrap_replicates(statistic, xs, iters, seed))
}

/// lm-eval's `aggregate_subtask_metrics`: a group's score from its subtasks' scores,
/// weighted by subtask size (`weight_by_size`, the default) or not.
pub fn group_mean(values: &[f64], sizes: &[usize], weight_by_size: bool) -> f64 {
    assert_eq!(values.len(), sizes.len(), "one size per subtask score");
    let weight = |size: usize| if weight_by_size { size as f64 } else { 1.0 };
    let total = py_sum(sizes.iter().map(|&s| weight(s)));
    py_sum(values.iter().zip(sizes).map(|(v, &s)| v * weight(s))) / total
}

/// lm-eval's `pooled_sample_stderr`, the group stderr for a size-weighted group mean:
/// `sqrt(Σ (n_i − 1)·se_i²·n_i / (Σ n_i − k) / Σ n_i)`.
pub fn pooled_sample_stderr(stderrs: &[f64], sizes: &[usize]) -> f64 {
    assert_eq!(stderrs.len(), sizes.len(), "one size per subtask stderr");
    let total: usize = sizes.iter().sum();
    let pooled_numerator = py_sum(
        stderrs
            .iter()
            .zip(sizes)
            .map(|(se, &n)| (n as f64 - 1.0) * (se * se) * n as f64),
    );
    let pooled_variance = pooled_numerator / (total as f64 - stderrs.len() as f64);
    (pooled_variance / total as f64).sqrt()
}

/// lm-eval's `unweighted_mean_stderr`, the group stderr when `weight_by_size` is false:
/// `sqrt(Σ se_i²) / k`.
pub fn unweighted_mean_stderr(stderrs: &[f64]) -> f64 {
    py_sum(stderrs.iter().map(|se| se * se)).sqrt() / stderrs.len() as f64
}

/// Result of [`paired_bootstrap`].
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PairedBootstrap {
    /// `mean(b) − mean(a)` on the full data.
    pub delta: f64,
    /// One-sided bootstrap p-value in the direction of `delta`: the fraction of replicates
    /// whose difference is `<= 0` when `delta > 0` (`>= 0` when `delta < 0`); `1.0` when
    /// `delta == 0`. A small value means the sign of `delta` is not a resampling accident.
    pub p_value: f64,
    /// Lower end of the 95% percentile interval of the difference.
    pub ci_low: f64,
    /// Upper end of the 95% percentile interval of the difference.
    pub ci_high: f64,
}

/// Paired bootstrap comparison of two runs `a` (baseline) and `b` (candidate) scored on the
/// same documents (`a[i]` and `b[i]` belong to document `i`): documents are resampled
/// jointly with the same chunked `random.Random(seed + c).choices` scheme as
/// [`bootstrap_replicates`]; the difference is `mean(b) − mean(a)`. A moebench extension;
/// lm-eval only offers an unpaired z-test (`scripts/model_comparator.py`).
///
/// Fails when the runs differ in length, or when there is nothing to resample (no documents
/// or `iters == 0`).
pub fn paired_bootstrap(
    a: &[f64],
    b: &[f64],
    iters: usize,
    seed: u64,
) -> Result<PairedBootstrap, CoreError> {
    if a.len() != b.len() {
        return Err(CoreError::PairedLength(a.len(), b.len()));
    }
    let pairs: Vec<(f64, f64)> = a.iter().copied().zip(b.iter().copied()).collect();
    // `mean(b) − mean(a)`, summed in place: no copy of the resample per replicate.
    let difference = |pairs: &[(f64, f64)]| {
        let n = pairs.len() as f64;
        py_sum(pairs.iter().map(|p| p.1)) / n - py_sum(pairs.iter().map(|p| p.0)) / n
    };
    paired_bootstrap_of(difference, &pairs, iters, seed)
}

/// The paired bootstrap of any statistic `difference` of (baseline, candidate) document pairs
/// — e.g. the difference of two bits-per-byte aggregates over `(loglikelihood, bytes)` pairs.
pub fn paired_bootstrap_of<T, F>(
    difference: F,
    pairs: &[T],
    iters: usize,
    seed: u64,
) -> Result<PairedBootstrap, CoreError>
where
    T: Copy + Send + Sync,
    F: Fn(&[T]) -> f64 + Sync,
{
    let mut replicates = bootstrap_replicates(&difference, pairs, iters, seed);
    if replicates.is_empty() {
        return Err(CoreError::NoScores);
    }
    let delta = difference(pairs);
    let against = replicates
        .iter()
        .filter(|&&d| (delta > 0.0 && d <= 0.0) || (delta < 0.0 && d >= 0.0))
        .count();
    let p_value = if delta == 0.0 {
        1.0
    } else {
        against as f64 / replicates.len() as f64
    };
    replicates.sort_by(f64::total_cmp);
    Ok(PairedBootstrap {
        delta,
        p_value,
        ci_low: quantile(&replicates, 0.025),
        ci_high: quantile(&replicates, 0.975),
    })
}

/// `numpy.quantile(sorted, q)` with the default linear interpolation.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let h = (sorted.len() - 1) as f64 * q;
    let below = h.floor() as usize;
    let above = (below + 1).min(sorted.len() - 1);
    sorted[below] + (h - below as f64) * (sorted[above] - sorted[below])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{bits_per_byte, median, perplexity, weighted_perplexity};

    // Inputs drawn in CPython 3.11.7 with `rnd = random.Random(99)`:
    //   ACCS = [float(rnd.random() < 0.6) for _ in range(57)]
    //   LLS = [-rnd.expovariate(0.5) for _ in range(40)]
    //   WEIGHTS = [rnd.randint(3, 40) for _ in LLS]
    // Expected values: lm-eval 0.4.13's own functions (`lm_eval.api.metrics`) run in CPython
    // 3.11.7 with `DISABLE_MULTIPROC=1` and the module's `sum` replaced by an emulation of
    // CPython 3.12's compensated builtin `sum` (a line-by-line Python port of the float path
    // of `builtin_sum_impl`).
    const ACCS: [f64; 57] = [
        1.0, 1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0,
        1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0,
        1.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0,
        1.0, 1.0, 1.0,
    ];
    const LLS: [f64; 40] = [
        -3.0949541646927483,
        -0.11398724599713946,
        -0.47508133779406214,
        -0.5956710871228859,
        -1.0352562972460244,
        -2.8861098188962155,
        -0.8733188264346672,
        -2.37487984810796,
        -5.107212046414739,
        -0.2806561726540856,
        -3.989163532183057,
        -1.8309223110057558,
        -2.7504818092513093,
        -1.8731632412962715,
        -1.0495092398866865,
        -0.20292125219257978,
        -0.3101811999597272,
        -0.3826480932435268,
        -0.39116744168399514,
        -0.31450434722341974,
        -0.46532573633730034,
        -1.6463556291021235,
        -2.9442897928122678,
        -3.198634626108865,
        -3.743234826842691,
        -0.24934327399079376,
        -3.455862612232202,
        -0.41147174177605345,
        -0.15028658424963487,
        -0.67855231262431,
        -1.7622938406363238,
        -0.09770338895831115,
        -0.48751451426050196,
        -1.0186562749507357,
        -3.4560726091797696,
        -1.019685960164748,
        -1.0690935530485688,
        -0.9271737165448497,
        -0.1944855746071893,
        -4.23334599690493,
    ];
    const WEIGHTS: [f64; 40] = [
        26.0, 28.0, 31.0, 17.0, 22.0, 17.0, 22.0, 9.0, 23.0, 16.0, 18.0, 27.0, 21.0, 31.0, 8.0,
        31.0, 29.0, 19.0, 7.0, 35.0, 21.0, 23.0, 33.0, 37.0, 11.0, 19.0, 30.0, 21.0, 29.0, 13.0,
        21.0, 27.0, 31.0, 15.0, 27.0, 24.0, 15.0, 25.0, 3.0, 25.0,
    ];

    fn weighted() -> Vec<(f64, f64)> {
        LLS.iter().copied().zip(WEIGHTS).collect()
    }

    #[test]
    fn py_sum_is_compensated_like_cpython_3_12() {
        // sum([0.1] * 10): 1.0 on 3.12+, 0.9999999999999999 with naive summation.
        assert_eq!(py_sum([0.1; 10]), 1.0);
        // 3.12+: -61.141171878619026; naive (3.11): -61.14117187861904
        assert_eq!(py_sum(LLS), -61.141171878619026);
        assert_eq!(py_sum([1e100, 1.0, -1e100]), 1.0);
        assert_eq!(py_sum([]), 0.0);
    }

    #[test]
    fn closed_form_stderr_matches_lm_eval() {
        assert_eq!(mean(&LLS), -1.5285292969654756);
        assert_eq!(mean_stderr(&ACCS), Some(0.06377448947368157));
        assert_eq!(mean_stderr(&LLS), Some(0.22143517382737096));
        assert_eq!(mean_stderr(&[1.0]), None);
    }

    /// `bootstrap_stderr(f, xs, iters)`; 2500 iterations run 2 chunks of 1000, as in lm-eval.
    #[test]
    fn bootstrap_stderr_matches_lm_eval() {
        assert_eq!(
            bootstrap_stderr(mean, &ACCS, 300, 0),
            Some(0.05768817569529089)
        );
        assert_eq!(
            bootstrap_stderr(perplexity, &LLS, 2500, 0),
            Some(1.068421814635419)
        );
        assert_eq!(
            bootstrap_stderr(median, &LLS, 1000, 0),
            Some(0.2923350052589017)
        );
        assert_eq!(bootstrap_replicates(mean, &ACCS, 2500, 0).len(), 2000);
        assert_eq!(bootstrap_stderr(mean, &ACCS, 0, 0), None);
        assert_eq!(bootstrap_stderr(mean, &ACCS[..1], 100, 0), None);
    }

    /// lm-eval never bootstraps these (it reports N/A); the reference values come from
    /// calling its `bootstrap_stderr(weighted_perplexity | bits_per_byte, pairs, 2000)`.
    #[test]
    fn weighted_bootstrap_matches_lm_eval_functions() {
        let pairs = weighted();
        assert_eq!(
            bootstrap_stderr(weighted_perplexity, &pairs, 2000, 0),
            Some(0.011268069176335802)
        );
        assert_eq!(
            bootstrap_stderr(bits_per_byte, &pairs, 2000, 0),
            Some(0.015145545489170607)
        );
    }

    #[test]
    fn parallel_bootstrap_equals_sequential() {
        let sequential = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let one = sequential.install(|| bootstrap_replicates(perplexity, &LLS, 5000, 3));
        assert_eq!(one, bootstrap_replicates(perplexity, &LLS, 5000, 3));
    }

    /// `pooled_sample_stderr`, `unweighted_mean_stderr` and `aggregate_subtask_metrics` with
    /// stderrs [0.0123, 0.0456, 0.0078], sizes [1172, 299, 2376], scores [0.41, 0.73, 0.655].
    #[test]
    fn group_aggregation_matches_lm_eval() {
        let stderrs = [0.0123, 0.0456, 0.0078];
        let sizes = [1172, 299, 2376];
        let scores = [0.41, 0.73, 0.655];
        assert_eq!(pooled_sample_stderr(&stderrs, &sizes), 0.007055913127169572);
        assert_eq!(unweighted_mean_stderr(&stderrs), 0.01595650337636664);
        assert_eq!(group_mean(&scores, &sizes, true), 0.5861892383675591);
        assert_eq!(group_mean(&scores, &sizes, false), 0.5983333333333333);
    }

    // Paired bootstrap reference: the same scheme written directly in Python
    // (`random.Random(seed + c).choices(pairs, k=len(pairs))` per replicate, lm-eval's `mean`,
    // `numpy.quantile(reps, [0.025, 0.975])`), CPython 3.11.7 + numpy; inputs drawn with
    // `random.Random(7)`.
    const RUN_A: [f64; 80] = [
        1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.0,
        0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0,
        0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0,
        1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 0.0,
        0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0,
    ];
    const RUN_B: [f64; 80] = [
        0.0, 1.0, 1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0,
        0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0,
        0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0,
        1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 0.0,
        0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0,
    ];

    #[test]
    fn paired_bootstrap_matches_python_reference() {
        let cases = [
            (
                &RUN_A,
                &RUN_B,
                2000,
                0,
                [
                    0.03750000000000009,
                    0.191,
                    -0.025000000000000022,
                    0.11250000000000004,
                ],
            ),
            (
                &RUN_A,
                &RUN_B,
                500,
                11,
                [
                    0.03750000000000009,
                    0.188,
                    -0.03749999999999998,
                    0.10000000000000006,
                ],
            ),
            (
                &RUN_B,
                &RUN_A,
                2000,
                0,
                [
                    -0.03750000000000009,
                    0.191,
                    -0.11250000000000004,
                    0.025000000000000022,
                ],
            ),
        ];
        for (a, b, iters, seed, [delta, p_value, ci_low, ci_high]) in cases {
            let got = paired_bootstrap(a, b, iters, seed).unwrap();
            let want = PairedBootstrap {
                delta,
                p_value,
                ci_low,
                ci_high,
            };
            assert_eq!(got, want, "iters {iters} seed {seed}");
        }
        assert!(matches!(
            paired_bootstrap(&RUN_A, &RUN_B[..3], 10, 0),
            Err(CoreError::PairedLength(80, 3))
        ));
        assert_eq!(
            paired_bootstrap(&RUN_A, &RUN_A, 100, 0).unwrap().p_value,
            1.0
        );
    }
}
