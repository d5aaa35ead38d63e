//! Corpus-level classification metrics of multiple-choice tasks, from `(gold, prediction)`
//! pairs (`lm_eval/api/metrics.py`: the `f1`, `matthews_corrcoef` and `brier_score`
//! aggregations; scikit-learn's `f1_score` and `matthews_corrcoef` underneath).
use crate::{numpy, CoreError};

fn error(metric: &str, message: String) -> CoreError {
    CoreError::Metric {
        metric: metric.to_owned(),
        message,
    }
}

/// The sorted distinct labels of golds and predictions (`sklearn.utils.multiclass.unique_labels`).
fn labels(golds: &[i64], preds: &[i64]) -> Vec<i64> {
    let mut labels: Vec<i64> = golds.iter().chain(preds).copied().collect();
    labels.sort_unstable();
    labels.dedup();
    labels
}

/// lm-eval's `f1` aggregation: `sklearn.metrics.f1_score(golds, preds)` with its defaults
/// (`average="binary"`, `pos_label=1`, `zero_division="warn"` → 0): `2·tp / (2·tp + fp + fn)`.
/// Errors where scikit-learn raises: more than two labels, or two labels without `1`.
pub fn f1(golds: &[i64], preds: &[i64]) -> Result<f64, CoreError> {
    let labels = labels(golds, preds);
    if labels.len() > 2 {
        return Err(error(
            "f1",
            format!("target is multiclass ({labels:?}) but lm-eval's f1 is binary"),
        ));
    }
    if labels.len() == 2 && !labels.contains(&1) {
        return Err(error(
            "f1",
            format!("pos_label=1 is not a valid label: {labels:?}"),
        ));
    }
    let (mut tp, mut fp, mut fn_) = (0u64, 0u64, 0u64);
    for (&gold, &pred) in golds.iter().zip(preds) {
        match (gold == 1, pred == 1) {
            (true, true) => tp += 1,
            (false, true) => fp += 1,
            (true, false) => fn_ += 1,
            (false, false) => {}
        }
    }
    let denominator = (tp + fn_) + (tp + fp);
    Ok(if denominator == 0 {
        0.0
    } else {
        (2 * tp) as f64 / denominator as f64
    })
}

/// lm-eval's `matthews_corrcoef` aggregation (`sklearn.metrics.matthews_corrcoef`, multiclass
/// form): `(c·s − Σ t_k p_k) / sqrt((s² − Σ p_k²)(s² − Σ t_k²))`, 0 when a factor is 0.
/// Every term is an integer, so the result does not depend on summation order.
pub fn matthews_corrcoef(golds: &[i64], preds: &[i64]) -> f64 {
    let labels = labels(golds, preds);
    let index = |label: i64| labels.binary_search(&label).unwrap_or_default();
    let k = labels.len();
    let mut true_sum = vec![0.0f64; k];
    let mut pred_sum = vec![0.0f64; k];
    let mut correct = 0.0f64;
    for (&gold, &pred) in golds.iter().zip(preds) {
        true_sum[index(gold)] += 1.0;
        pred_sum[index(pred)] += 1.0;
        if gold == pred {
            correct += 1.0;
        }
    }
    let samples: f64 = golds.len().min(preds.len()) as f64;
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    let cov_ytyp = correct * samples - dot(&true_sum, &pred_sum);
    let cov_ypyp = samples * samples - dot(&pred_sum, &pred_sum);
    let cov_ytyt = samples * samples - dot(&true_sum, &true_sum);
    let product = cov_ypyp * cov_ytyt;
    if product == 0.0 {
        0.0
    } else {
        cov_ytyp / product.sqrt()
    }
}

/// lm-eval's `brier_score` aggregation: `mean_docs Σ_i (p_i − onehot(gold)_i)²` with the
/// softmax probabilities `p` of each document, numpy's summation order.
pub fn brier_score(golds: &[i64], probabilities: &[Vec<f64>]) -> Result<f64, CoreError> {
    let classes = probabilities.first().map_or(0, Vec::len);
    let per_doc = golds
        .iter()
        .zip(probabilities)
        .map(|(&gold, probs)| {
            if probs.len() != classes {
                return Err(error(
                    "brier_score",
                    "documents have different numbers of choices".to_owned(),
                ));
            }
            // `np.eye(num_class)[gold]`, negative golds indexing from the end.
            let hot = if gold < 0 {
                gold + classes as i64
            } else {
                gold
            };
            if !(0..classes as i64).contains(&hot) {
                return Err(error(
                    "brier_score",
                    format!("gold {gold} is out of range for {classes} choices"),
                ));
            }
            let squares: Vec<f64> = probs
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    let d = p - if i as i64 == hot { 1.0 } else { 0.0 };
                    d * d
                })
                .collect();
            Ok(numpy::sum(&squares))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(numpy::mean(&per_doc))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Expected values: scikit-learn 1.9.1 (`f1_score`, `matthews_corrcoef`) and lm-eval
    /// 0.4.13's `brier_score` aggregation on the same pairs.
    #[test]
    fn match_scikit_learn_and_lm_eval() {
        let golds = [1, 0, 1, 1, 0, 0, 1];
        let preds = [1, 1, 0, 1, 0, 0, 1];
        assert_eq!(f1(&golds, &preds).unwrap(), 0.75);
        assert_eq!(matthews_corrcoef(&golds, &preds), 0.4166666666666667);
        let multi_golds = [0, 1, 2, 2, 1, 0, 3];
        let multi_preds = [0, 2, 2, 1, 1, 0, 3];
        assert_eq!(
            matthews_corrcoef(&multi_golds, &multi_preds),
            0.6111111111111112
        );
        assert!(f1(&multi_golds, &multi_preds).is_err());
        assert!(f1(&[0, 2], &[2, 0]).is_err());
        assert_eq!(f1(&[0, 0], &[0, 0]).unwrap(), 0.0);
        assert_eq!(matthews_corrcoef(&[1, 1], &[1, 1]), 0.0);
        let probs = vec![vec![0.7, 0.2, 0.1], vec![0.1, 0.3, 0.6]];
        assert_eq!(brier_score(&[0, 1], &probs).unwrap(), 0.49999999999999994);
    }
}
