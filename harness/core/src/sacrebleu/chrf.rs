//! `sacrebleu.corpus_chrf(hypotheses, references, word_order=…)` with its defaults:
//! character 6-grams without whitespace, β = 2, no ε smoothing; `word_order=2` is chrF++
//! (Popović 2015 and 2017; sacrebleu `metrics/chrf.py`).
use super::{word_ngrams, Counts};
use crate::pystr;

const CHAR_ORDER: usize = 6;
const BETA: f64 = 2.0;
/// `CHRF._PUNCTS`.
const PUNCTUATION: &str = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";

/// Character n-grams of orders 1..=6 of the line without whitespace
/// (`extract_all_char_ngrams`).
fn char_ngrams(line: &str) -> Vec<Counts> {
    let chars: Vec<char> = pystr::split(line).flat_map(str::chars).collect();
    (1..=CHAR_ORDER)
        .map(|n| {
            let mut counts = Counts::new();
            if chars.len() >= n {
                for window in chars.windows(n) {
                    *counts.entry(window.iter().collect()).or_default() += 1;
                }
            }
            counts
        })
        .collect()
}

/// `_remove_punctuation`: words, with one leading or trailing punctuation mark split off.
fn remove_punctuation(sentence: &str) -> Vec<String> {
    let mut words = Vec::new();
    for word in pystr::split(sentence) {
        let mut chars = word.chars();
        let (first, last) = (chars.next(), word.chars().next_back());
        if word.chars().count() == 1 {
            words.push(word.to_owned());
        } else if last.is_some_and(|c| PUNCTUATION.contains(c)) {
            let cut = word.len() - last.map_or(0, char::len_utf8);
            words.push(word[..cut].to_owned());
            words.push(word[cut..].to_owned());
        } else if first.is_some_and(|c| PUNCTUATION.contains(c)) {
            let cut = first.map_or(0, char::len_utf8);
            words.push(word[..cut].to_owned());
            words.push(word[cut..].to_owned());
        } else {
            words.push(word.to_owned());
        }
    }
    words
}

/// Every n-gram counter of a segment: characters, then words of orders 1..=`word_order`.
fn all_ngrams(line: &str, word_order: usize) -> Vec<Counts> {
    let mut counts = char_ngrams(line);
    if word_order > 0 {
        let words = remove_punctuation(line);
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        counts.extend((1..=word_order).map(|n| word_ngrams(&words, n)));
    }
    counts
}

/// `_get_match_statistics`: `[hypothesis count (0 without reference n-grams), reference
/// count, matches]`.
fn match_statistics(hyp: &Counts, reference: &Counts) -> [u64; 3] {
    let (mut matches, mut hyp_count) = (0, 0);
    for (ngram, &count) in hyp {
        hyp_count += count;
        if let Some(&in_ref) = reference.get(ngram) {
            matches += count.min(in_ref);
        }
    }
    let ref_count = reference.values().sum();
    [
        if reference.is_empty() { 0 } else { hyp_count },
        ref_count,
        matches,
    ]
}

/// `_compute_f_score` without ε smoothing, in sacrebleu's order of operations.
fn f_score(stats: &[u64]) -> f64 {
    let eps = 1e-16;
    let factor = BETA * BETA;
    let (mut avg_prec, mut avg_rec, mut effective_order) = (0.0, 0.0, 0);
    for triple in stats.chunks(3) {
        let (n_hyp, n_ref, n_match) = (triple[0], triple[1], triple[2]);
        let prec = if n_hyp > 0 {
            n_match as f64 / n_hyp as f64
        } else {
            eps
        };
        let rec = if n_ref > 0 {
            n_match as f64 / n_ref as f64
        } else {
            eps
        };
        if n_hyp > 0 && n_ref > 0 {
            avg_prec += prec;
            avg_rec += rec;
            effective_order += 1;
        }
    }
    if effective_order == 0 {
        avg_prec = 0.0;
        avg_rec = 0.0;
    } else {
        avg_prec /= effective_order as f64;
        avg_rec /= effective_order as f64;
    }
    if avg_prec + avg_rec != 0.0 {
        let score = (1.0 + factor) * avg_prec * avg_rec;
        100.0 * (score / ((factor * avg_prec) + avg_rec))
    } else {
        0.0
    }
}

/// Corpus chrF (0-100); `word_order` 0 for `chrf`, 2 for `chrf++`.
pub fn corpus_chrf(hypotheses: &[String], references: &[Vec<String>], word_order: usize) -> f64 {
    let order = CHAR_ORDER + word_order;
    let mut total = vec![0u64; 3 * order];
    for (hypothesis, refs) in hypotheses.iter().zip(references) {
        let hyp_ngrams = all_ngrams(hypothesis, word_order);
        let mut best: Option<(f64, Vec<u64>)> = None;
        for reference in refs {
            let ref_ngrams = all_ngrams(reference, word_order);
            let stats: Vec<u64> = hyp_ngrams
                .iter()
                .zip(&ref_ngrams)
                .flat_map(|(h, r)| match_statistics(h, r))
                .collect();
            let score = f_score(&stats);
            if best.as_ref().is_none_or(|(b, _)| score > *b) {
                best = Some((score, stats));
            }
        }
        if let Some((_, stats)) = best {
            for (sum, value) in total.iter_mut().zip(stats) {
                *sum += value;
            }
        }
    }
    f_score(&total)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Expected values: lm-eval 0.4.13's `chrf` / `chrf++` aggregations (sacrebleu 2.6.0).
    #[test]
    fn matches_sacrebleu() {
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
        assert_eq!(corpus_chrf(&hyps, &refs, 0), 42.89929958086801);
        assert_eq!(corpus_chrf(&hyps, &refs, 2), 43.676692688435494);
        let two = [vec![
            "the cat sat on a mat".to_owned(),
            "The cat sat on the mat .".to_owned(),
        ]];
        assert_eq!(corpus_chrf(&hyps[..1], &two, 0), 100.0);
        assert_eq!(corpus_chrf(&hyps[..1], &two, 2), 100.0);
        assert_eq!(
            remove_punctuation("(hi there). a"),
            ["(", "hi", "there)", ".", "a"]
        );
    }
}
