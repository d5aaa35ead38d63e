//! sacreBLEU 2.x's corpus metrics as lm-eval calls them (`lm_eval/api/metrics.py`: the
//! `bleu`, `chrf`, `chrf++` and `ter` aggregations → `sacrebleu.corpus_bleu` / `corpus_chrf`
//! / `corpus_ter` with their defaults), ported from sacrebleu 2.6's `metrics/` and
//! `tokenizers/`.
//!
//! Items are lm-eval's `(reference, prediction)` pairs; `_sacreformat` turns them into one
//! reference stream per reference position (a document with a list of references contributes
//! one to each stream; `zip` cuts the streams to the shortest list) and the predictions.
mod bleu;
mod chrf;
mod ter;

pub use bleu::corpus_bleu;
pub use chrf::corpus_chrf;
pub use ter::corpus_ter;

use crate::CoreError;
use serde_json::Value;
use std::collections::HashMap;

/// `_sacreformat(refs, preds)`: the references of each segment (after the transposition
/// lm-eval and sacrebleu both apply) and the predictions.
pub fn sacreformat(items: &[Value]) -> Result<(Vec<Vec<String>>, Vec<String>), CoreError> {
    let bad = |message: String| CoreError::Metric {
        metric: "sacrebleu".to_owned(),
        message,
    };
    let mut references: Vec<Vec<String>> = Vec::with_capacity(items.len());
    let mut predictions = Vec::with_capacity(items.len());
    for item in items {
        let pair = item
            .as_array()
            .filter(|pair| pair.len() == 2)
            .ok_or_else(|| {
                bad(format!(
                    "expected a (reference, prediction) pair, got {item}"
                ))
            })?;
        let refs = match &pair[0] {
            Value::String(one) => vec![one.clone()],
            Value::Array(many) => many
                .iter()
                .map(|r| r.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| bad(format!("references must be strings: {}", pair[0])))?,
            other => return Err(bad(format!("references must be strings: {other}"))),
        };
        let prediction = match &pair[1] {
            Value::String(one) => one.clone(),
            Value::Array(many) if many.len() == 1 && many[0].is_string() => {
                many[0].as_str().unwrap_or_default().to_owned()
            }
            other => return Err(bad(format!("the prediction must be a string: {other}"))),
        };
        references.push(refs);
        predictions.push(prediction);
    }
    // `zip(*refs)` cuts every document's references to the shortest list.
    let streams = references.iter().map(Vec::len).min().unwrap_or(0);
    for refs in &mut references {
        refs.truncate(streams);
    }
    Ok((references, predictions))
}

/// sacrebleu's `my_log`: `log(x)`, floored to `-9999999999` at 0.
fn my_log(x: f64) -> f64 {
    if x == 0.0 {
        -9_999_999_999.0
    } else {
        x.ln()
    }
}

/// A `collections.Counter` of n-grams.
type Counts = HashMap<String, u64>;

/// n-grams of `tokens` of order `n`, joined by a space (`extract_word_ngrams`).
fn word_ngrams(tokens: &[&str], n: usize) -> Counts {
    let mut counts = Counts::new();
    if tokens.len() >= n {
        for window in tokens.windows(n) {
            *counts.entry(window.join(" ")).or_default() += 1;
        }
    }
    counts
}
