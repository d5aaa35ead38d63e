//! Token-level perplexity protocols other than lm-eval's rolling windows, each named in every
//! result it produces (issue #3): both concatenate the task's documents (their rolling targets)
//! with "\n\n", tokenize once with the tokenizer's special tokens (one BOS at the start for
//! Llama-style tokenizers, as both references do), and report `perplexity` = exp(mean NLL).
//!
//! - `gptq_concat(seqlen)`: GPTQ's evaluation (`datautils.py` + `llama_eval` in
//!   IST-DASLab/gptq): ⌊n/seqlen⌋ non-overlapping windows, each scored on its own (the first
//!   token of a window is never predicted), and — GPTQ's own accounting, kept for comparability
//!   with the papers that quote it — each window's mean NLL over `seqlen − 1` predictions
//!   multiplied by `seqlen`, summed and divided by `windows × seqlen`. The tail is dropped.
//! - `strided(max_length, stride)`: the Hugging Face "Perplexity of fixed-length models" guide:
//!   windows of `max_length` tokens starting every `stride` tokens, each scoring only the tokens
//!   the previous window did not (all of the first window but its first token), NLL summed over
//!   exactly the scored tokens.
//!
//! The stderr is a seeded bootstrap over windows (an approximation: windows overlap in context
//! for `strided`).
use crate::error::EvalError;
use crate::lm::LanguageModel;
use moebench_core::stats::bootstrap_stderr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PplProtocol {
    GptqConcat { seqlen: usize },
    Strided { max_length: usize, stride: usize },
}

impl PplProtocol {
    /// `gptq_concat:2048` or `strided:1024:512`.
    pub fn parse(s: &str) -> Result<PplProtocol, EvalError> {
        let parts: Vec<&str> = s.split(':').collect();
        let num = |p: &str| -> Result<usize, EvalError> {
            p.parse::<usize>().ok().filter(|n| *n >= 2).ok_or_else(|| {
                EvalError::Invalid(format!(
                    "perplexity protocol `{s}`: `{p}` is not an integer ≥ 2"
                ))
            })
        };
        match parts.as_slice() {
            ["gptq_concat", seqlen] => Ok(PplProtocol::GptqConcat { seqlen: num(seqlen)? }),
            ["strided", max_length, stride] => {
                let (max_length, stride) = (num(max_length)?, num(stride)?);
                if stride > max_length {
                    return Err(EvalError::Invalid(format!(
                        "perplexity protocol `{s}`: stride {stride} exceeds the window {max_length}"
                    )));
                }
                Ok(PplProtocol::Strided { max_length, stride })
            }
            _ => Err(EvalError::Invalid(format!(
                "unknown perplexity protocol `{s}` (expected gptq_concat:SEQLEN or strided:MAX_LENGTH:STRIDE)"
            ))),
        }
    }

    /// The name recorded with the result, e.g. `gptq_concat(seqlen=2048)`.
    pub fn describe(&self) -> String {
        match self {
            PplProtocol::GptqConcat { seqlen } => format!("gptq_concat(seqlen={seqlen})"),
            PplProtocol::Strided { max_length, stride } => {
                format!("strided(max_length={max_length},stride={stride})")
            }
        }
    }

    /// `(context, continuation)` windows over `ids` and the divisor of each window's NLL sum
    /// (GPTQ's `seqlen / (seqlen − 1)` rescaling folds into a per-window weight).
    pub fn windows(&self, ids: &[i64]) -> Vec<(Vec<i64>, Vec<i64>)> {
        match *self {
            PplProtocol::GptqConcat { seqlen } => ids
                .chunks_exact(seqlen)
                .map(|w| (w[..1].to_vec(), w[1..].to_vec()))
                .collect(),
            PplProtocol::Strided { max_length, stride } => {
                let mut out = Vec::new();
                let mut prev_end = 0;
                let mut begin = 0;
                while begin < ids.len() {
                    let end = (begin + max_length).min(ids.len());
                    let target_len = end - prev_end;
                    // Tokens [end − target_len, end) are targets; the window's first token
                    // cannot be predicted.
                    let first = (end - target_len).max(begin + 1);
                    if first < end {
                        out.push((ids[begin..first].to_vec(), ids[first..end].to_vec()));
                    }
                    prev_end = end;
                    if end == ids.len() {
                        break;
                    }
                    begin += stride;
                }
                out
            }
        }
    }
}

/// A corpus perplexity (lower is better) and its bootstrap stderr over windows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CorpusPerplexity {
    pub value: f64,
    pub stderr: Option<f64>,
    pub windows: usize,
}

/// The perplexity of `texts` (concatenated) under `protocol`.
pub fn corpus_perplexity(
    lm: &LanguageModel<'_>,
    texts: &[String],
    protocol: PplProtocol,
    bootstrap_iters: usize,
) -> Result<CorpusPerplexity, EvalError> {
    let ids = lm
        .tokenizer
        .encode(&texts.join("\n\n"), true)
        .map_err(|e| EvalError::Invalid(e.to_string()))?;
    let windows = protocol.windows(&ids);
    if windows.is_empty() {
        return Err(EvalError::Invalid(format!(
            "{}: the text has {} tokens, fewer than one window",
            protocol.describe(),
            ids.len()
        )));
    }
    let lls = lm.score_windows(&windows)?;
    // (NLL mass, token weight) per window.
    let per_window: Vec<(f64, f64)> = match protocol {
        PplProtocol::GptqConcat { seqlen } => lls
            .iter()
            .map(|ll| (-ll / (seqlen - 1) as f64 * seqlen as f64, seqlen as f64))
            .collect(),
        PplProtocol::Strided { .. } => lls
            .iter()
            .zip(&windows)
            .map(|(ll, (_, cont))| (-ll, cont.len() as f64))
            .collect(),
    };
    let ppl = |ws: &[(f64, f64)]| {
        let (nll, n): (f64, f64) = ws.iter().fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
        (nll / n).exp()
    };
    let value = ppl(&per_window);
    let stderr = bootstrap_stderr(
        |ws: &[(f64, f64)]| ppl(ws),
        &per_window,
        bootstrap_iters,
        1234,
    );
    Ok(CorpusPerplexity {
        value,
        stderr,
        windows: windows.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gptq_windows_drop_the_tail_and_never_predict_a_window_start() {
        let ids: Vec<i64> = (0..10).collect();
        let w = PplProtocol::GptqConcat { seqlen: 4 }.windows(&ids);
        assert_eq!(w, vec![(vec![0], vec![1, 2, 3]), (vec![4], vec![5, 6, 7])]);
    }

    /// The HF guide's loop on 10 tokens, window 4, stride 2: targets [1..4), then the 2 new
    /// tokens of each later window, every token from 1 on scored exactly once.
    #[test]
    fn strided_windows_score_each_token_once() {
        let ids: Vec<i64> = (0..10).collect();
        let w = PplProtocol::Strided {
            max_length: 4,
            stride: 2,
        }
        .windows(&ids);
        assert_eq!(
            w,
            vec![
                (vec![0], vec![1, 2, 3]),
                (vec![2, 3], vec![4, 5]),
                (vec![4, 5], vec![6, 7]),
                (vec![6, 7], vec![8, 9]),
            ]
        );
        let scored: Vec<i64> = w.iter().flat_map(|(_, c)| c.clone()).collect();
        assert_eq!(scored, (1..10).collect::<Vec<_>>());
        // stride = window: disjoint windows, each window's first token unscored.
        let w = PplProtocol::Strided {
            max_length: 4,
            stride: 4,
        }
        .windows(&ids);
        assert_eq!(w[1], (vec![4], vec![5, 6, 7]));
    }

    #[test]
    fn parsing_names_the_problem() {
        assert_eq!(
            PplProtocol::parse("strided:1024:512").unwrap().describe(),
            "strided(max_length=1024,stride=512)"
        );
        assert!(PplProtocol::parse("strided:4:8")
            .unwrap_err()
            .to_string()
            .contains("exceeds"));
        assert!(PplProtocol::parse("gptq")
            .unwrap_err()
            .to_string()
            .contains("unknown perplexity protocol"));
    }
}
