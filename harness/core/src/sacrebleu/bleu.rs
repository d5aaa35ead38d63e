//! `sacrebleu.corpus_bleu(hypotheses, references)` with its defaults: the `13a` tokenizer,
//! mixed case, exponential smoothing (mteval-v13a's), max n-gram order 4, no effective order
//! (Papineni et al., 2002; sacrebleu `metrics/bleu.py`).
use super::{my_log, word_ngrams, Counts};
use crate::pystr;
use regex::Regex;
use std::sync::OnceLock;

const MAX_ORDER: usize = 4;

/// `Tokenizer13a` (`tokenizers/tokenizer_13a.py` + `tokenizer_re.py`).
fn tokenize_13a(line: &str) -> String {
    static RULES: OnceLock<Vec<(Regex, &'static str)>> = OnceLock::new();
    let rules = RULES.get_or_init(|| {
        [
            // language-dependent part (assuming Western languages)
            (r"([\{-~\[-` -&\(-\+:-@/])", " ${1} "),
            // tokenize period and comma unless preceded by a digit
            (r"([^0-9])([\.,])", "${1} ${2} "),
            // tokenize period and comma unless followed by a digit
            (r"([\.,])([^0-9])", " ${1} ${2}"),
            // tokenize dash when preceded by a digit
            (r"([0-9])(-)", "${1} ${2} "),
        ]
        .into_iter()
        .map(|(pattern, replacement)| (Regex::new(pattern).expect("valid regex"), replacement))
        .collect()
    });
    let mut line = line
        .replace("<skipped>", "")
        .replace("-\n", "")
        .replace('\n', " ");
    if line.contains('&') {
        line = line
            .replace("&quot;", "\"")
            .replace("&amp;", "&")
            .replace("&lt;", "<")
            .replace("&gt;", ">");
    }
    let mut line = format!(" {line} ");
    for (pattern, replacement) in rules {
        line = pattern.replace_all(&line, *replacement).into_owned();
    }
    pystr::split(&line).collect::<Vec<_>>().join(" ")
}

/// `_preprocess_segment`: `tokenizer(sent.rstrip())`.
fn preprocess(sentence: &str) -> String {
    tokenize_13a(pystr::rstrip(sentence))
}

/// n-gram counts of orders 1..=4 and the token count (`extract_all_word_ngrams`).
fn ngrams(line: &str) -> ([Counts; MAX_ORDER], usize) {
    let tokens: Vec<&str> = pystr::split(line).collect();
    let counts = std::array::from_fn(|i| word_ngrams(&tokens, i + 1));
    (counts, tokens.len())
}

/// `_get_closest_ref_len`: the reference length closest to the hypothesis', the shorter on
/// ties.
fn closest_ref_len(hyp_len: usize, ref_lens: &[usize]) -> usize {
    let mut best: Option<(usize, usize)> = None;
    for &len in ref_lens {
        let diff = hyp_len.abs_diff(len);
        best = match best {
            Some((d, l)) if diff > d || (diff == d && len >= l) => Some((d, l)),
            _ => Some((diff, len)),
        };
    }
    best.map_or(0, |(_, len)| len)
}

/// Corpus BLEU (0-100) of `hypotheses` against `references[i]` (the references of segment `i`).
pub fn corpus_bleu(hypotheses: &[String], references: &[Vec<String>]) -> f64 {
    // [hyp_len, ref_len, correct_1..4, total_1..4], summed over segments.
    let mut stats = [0u64; 2 + 2 * MAX_ORDER];
    for (hypothesis, refs) in hypotheses.iter().zip(references) {
        let mut ref_ngrams: [Counts; MAX_ORDER] = Default::default();
        let mut ref_lens = Vec::with_capacity(refs.len());
        for reference in refs {
            let (counts, len) = ngrams(&preprocess(reference));
            ref_lens.push(len);
            for (merged, counts) in ref_ngrams.iter_mut().zip(counts) {
                for (ngram, count) in counts {
                    let slot = merged.entry(ngram).or_default();
                    *slot = (*slot).max(count);
                }
            }
        }
        let (hyp_ngrams, hyp_len) = ngrams(&preprocess(hypothesis));
        stats[0] += hyp_len as u64;
        stats[1] += closest_ref_len(hyp_len, &ref_lens) as u64;
        for (n, counts) in hyp_ngrams.iter().enumerate() {
            for (ngram, &count) in counts {
                stats[2 + MAX_ORDER + n] += count;
                if let Some(&in_ref) = ref_ngrams[n].get(ngram) {
                    stats[2 + n] += count.min(in_ref);
                }
            }
        }
    }
    compute_bleu(&stats)
}

/// `BLEU.compute_bleu` with `smooth_method="exp"`, `effective_order=False`.
fn compute_bleu(stats: &[u64; 2 + 2 * MAX_ORDER]) -> f64 {
    let (sys_len, ref_len) = (stats[0], stats[1]);
    let correct = &stats[2..2 + MAX_ORDER];
    let total = &stats[2 + MAX_ORDER..];
    let bp = if sys_len < ref_len {
        if sys_len > 0 {
            (1.0 - ref_len as f64 / sys_len as f64).exp()
        } else {
            0.0
        }
    } else {
        1.0
    };
    if correct.iter().all(|&c| c == 0) {
        return 0.0;
    }
    let mut precisions = [0.0; MAX_ORDER];
    let mut smooth_mteval = 1.0;
    for n in 0..MAX_ORDER {
        if total[n] == 0 {
            break;
        }
        precisions[n] = if correct[n] == 0 {
            smooth_mteval *= 2.0;
            100.0 / (smooth_mteval * total[n] as f64)
        } else {
            100.0 * correct[n] as f64 / total[n] as f64
        };
    }
    // Python's `sum` over four floats; CPython 3.11 (the reference) adds them in order.
    let logs: f64 = precisions.iter().map(|&p| my_log(p)).sum();
    bp * (logs / MAX_ORDER as f64).exp()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Expected values: `sacrebleu.corpus_bleu` 2.6.0 (through lm-eval 0.4.13's `bleu`
    /// aggregation) and `Tokenizer13a` on the same strings.
    #[test]
    fn matches_sacrebleu() {
        assert_eq!(
            tokenize_13a("Hello, world! It's 3.5-4 &amp; \"done\"."),
            "Hello , world ! It's 3.5 - 4 & \" done \" ."
        );
        let hyps = [
            "The cat sat on the mat.".to_owned(),
            "A quick brown fox jumps".to_owned(),
            "".to_owned(),
        ];
        let refs = [
            vec!["The cat is sitting on the mat.".to_owned()],
            vec!["The quick brown fox jumped over the lazy dog".to_owned()],
            vec!["Nothing here".to_owned()],
        ];
        assert_eq!(corpus_bleu(&hyps, &refs), SACREBLEU_CORPUS);
        let two_refs = [vec![
            "the cat sat on a mat".to_owned(),
            "The cat sat on the mat .".to_owned(),
        ]];
        assert_eq!(corpus_bleu(&hyps[..1], &two_refs), SACREBLEU_TWO_REFS);
        assert_eq!(closest_ref_len(5, &[7, 3]), 3);
    }

    const SACREBLEU_CORPUS: f64 = 22.852550903875517;
    const SACREBLEU_TWO_REFS: f64 = 100.00000000000004;
}
