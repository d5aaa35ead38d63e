//! Rolling log-likelihood windows, a port of lm-eval's `get_rolling_token_windows` and
//! `make_disjoint_window` (`lm_eval/utils.py`), as the HF backend calls them with
//! `context_len = 1`: non-overlapping chunks of `max_len` tokens, the first conditioned on the
//! prefix token, each later one on the single token before it, and the final partial chunk on as
//! much left context as fits.

/// One window: the context tokens and the tokens whose log-probabilities are summed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    pub context: Vec<i64>,
    pub continuation: Vec<i64>,
}

/// Disjoint rolling windows over `tokens` (empty input → no window).
pub fn rolling_windows(
    tokens: &[i64],
    prefix_token: i64,
    max_len: usize,
    context_len: usize,
) -> Vec<Window> {
    assert!(
        1 <= context_len && context_len <= max_len,
        "context_len must be in 1..=max_len"
    );
    let mut out = Vec::new();
    if tokens.is_empty() {
        return out;
    }
    let pred_len = max_len - context_len + 1;
    let first = max_len.min(tokens.len());
    let mut context = vec![prefix_token];
    context.extend_from_slice(&tokens[..first - 1]);
    out.push(disjoint(context, tokens[..first].to_vec()));
    let mut predicted = first;
    while predicted < tokens.len() {
        let window_pred = (tokens.len() - predicted).min(pred_len);
        let end = predicted + window_pred;
        // `end - max_len - 1 >= 0` here: `end > predicted >= max_len`.
        let context = tokens[end - max_len - 1..end - 1].to_vec();
        out.push(disjoint(context, tokens[end - window_pred..end].to_vec()));
        predicted += window_pred;
    }
    out
}

/// `make_disjoint_window`: drops the context tokens that the continuation already covers.
fn disjoint(mut context: Vec<i64>, continuation: Vec<i64>) -> Window {
    context.truncate(context.len() - (continuation.len() - 1));
    Window {
        context,
        continuation,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Expected values printed by lm-eval 0.4.13:
    /// `[make_disjoint_window(w) for w in get_rolling_token_windows(list(range(10)), -1, 4, 1)]`.
    #[test]
    fn matches_lm_eval_for_ten_tokens_window_four() {
        let w = rolling_windows(&(0..10).collect::<Vec<_>>(), -1, 4, 1);
        let pairs: Vec<(Vec<i64>, Vec<i64>)> =
            w.into_iter().map(|w| (w.context, w.continuation)).collect();
        assert_eq!(
            pairs,
            vec![
                (vec![-1], vec![0, 1, 2, 3]),
                (vec![3], vec![4, 5, 6, 7]),
                (vec![5, 6, 7], vec![8, 9]),
            ]
        );
    }

    #[test]
    fn short_text_is_one_window_and_every_token_is_predicted_once() {
        let w = rolling_windows(&[7, 8, 9], 0, 16, 1);
        assert_eq!(
            w,
            vec![Window {
                context: vec![0],
                continuation: vec![7, 8, 9]
            }]
        );
        let tokens: Vec<i64> = (0..1000).collect();
        let predicted: Vec<i64> = rolling_windows(&tokens, -1, 64, 1)
            .into_iter()
            .flat_map(|w| w.continuation)
            .collect();
        assert_eq!(predicted, tokens);
        assert!(rolling_windows(&[], 0, 8, 1).is_empty());
    }
}
