//! `sacrebleu.corpus_ter(hypotheses, references)` with its defaults (case-insensitive, no
//! normalisation or punctuation removal): Tercom's translation edit rate with shifts
//! (Snover et al., 2006), ported from sacrebleu `metrics/ter.py`, `metrics/lib_ter.py` and
//! `tokenizers/tokenizer_ter.py`. sacrebleu caches edit-distance rows between shift
//! candidates; every candidate has the hypothesis' length, so recomputing the rows gives the
//! same matrices and the same result.
use crate::pystr;
use std::collections::BTreeMap;

const MAX_SHIFT_SIZE: usize = 10;
const MAX_SHIFT_DIST: usize = 50;
const BEAM_WIDTH: usize = 25;
const MAX_SHIFT_CANDIDATES: usize = 1000;
const INFINITY: i64 = 10_000_000_000_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Nop,
    Sub,
    Ins,
    Del,
    Undefined,
}

/// `TercomTokenizer` with its defaults: lowercased, whitespace normalised.
fn tokenize(sentence: &str) -> Vec<String> {
    pystr::split(&sentence.to_lowercase())
        .map(str::to_owned)
        .collect()
}

/// `BeamEditDistance._edit_distance` from scratch: the distance and the trace of operations
/// rewriting the reference into the hypothesis.
fn edit_distance(hyp: &[String], reference: &[String]) -> (i64, Vec<Op>) {
    let (n_h, n_r) = (hyp.len(), reference.len());
    let mut dist = vec![vec![(INFINITY, Op::Undefined); n_r + 1]; n_h + 1];
    for (j, cell) in dist[0].iter_mut().enumerate() {
        *cell = (j as i64, Op::Ins);
    }
    let length_ratio = if n_h > 0 {
        n_r as f64 / n_h as f64
    } else {
        1.0
    };
    let beam_width = if (BEAM_WIDTH as f64) < length_ratio / 2.0 {
        (length_ratio / 2.0 + BEAM_WIDTH as f64).ceil() as usize
    } else {
        BEAM_WIDTH
    };
    for i in 1..=n_h {
        let pseudo_diag = (i as f64 * length_ratio).floor() as usize;
        let min_j = pseudo_diag.saturating_sub(beam_width);
        let max_j = if i == n_h {
            n_r + 1
        } else {
            (n_r + 1).min(pseudo_diag + beam_width)
        };
        for j in min_j..max_j {
            if j == 0 {
                dist[i][j] = (dist[i - 1][j].0 + 1, Op::Del);
                continue;
            }
            let (cost_sub, op_sub) = if hyp[i - 1] == reference[j - 1] {
                (0, Op::Nop)
            } else {
                (1, Op::Sub)
            };
            let ops = [
                (dist[i - 1][j - 1].0 + cost_sub, op_sub),
                (dist[i - 1][j].0 + 1, Op::Del),
                (dist[i][j - 1].0 + 1, Op::Ins),
            ];
            for (cost, op) in ops {
                if dist[i][j].0 > cost {
                    dist[i][j] = (cost, op);
                }
            }
        }
    }
    let mut trace = Vec::new();
    let (mut i, mut j) = (n_h, n_r);
    while i > 0 || j > 0 {
        let op = dist[i][j].1;
        trace.push(op);
        match op {
            Op::Sub | Op::Nop => {
                i -= 1;
                j -= 1;
            }
            Op::Ins => j -= 1,
            Op::Del => i -= 1,
            // The beam always reaches the last row and column, so every path is defined.
            Op::Undefined => break,
        }
    }
    trace.reverse();
    (dist[n_h][n_r].0, trace)
}

/// `trace_to_alignment` of the flipped trace: reference position → hypothesis position, and
/// the error flags of both sides.
fn alignment(trace: &[Op]) -> (BTreeMap<i64, i64>, Vec<u8>, Vec<u8>) {
    let (mut pos_hyp, mut pos_ref) = (-1i64, -1i64);
    let (mut align, mut ref_err, mut hyp_err) = (BTreeMap::new(), Vec::new(), Vec::new());
    for &op in trace {
        // `_flip_trace`: insertions and deletions swap roles.
        match op {
            Op::Nop | Op::Sub => {
                pos_hyp += 1;
                pos_ref += 1;
                align.insert(pos_ref, pos_hyp);
                let error = u8::from(op == Op::Sub);
                hyp_err.push(error);
                ref_err.push(error);
            }
            Op::Del => {
                pos_hyp += 1;
                hyp_err.push(1);
            }
            Op::Ins => {
                pos_ref += 1;
                align.insert(pos_ref, pos_hyp);
                ref_err.push(1);
            }
            Op::Undefined => {}
        }
    }
    (align, ref_err, hyp_err)
}

/// `_perform_shift`.
fn perform_shift(words: &[String], start: usize, length: usize, target: usize) -> Vec<String> {
    let mut out = Vec::with_capacity(words.len());
    if target < start {
        out.extend_from_slice(&words[..target]);
        out.extend_from_slice(&words[start..start + length]);
        out.extend_from_slice(&words[target..start]);
        out.extend_from_slice(&words[start + length..]);
    } else if target > start + length {
        out.extend_from_slice(&words[..start]);
        out.extend_from_slice(&words[start + length..target]);
        out.extend_from_slice(&words[start..start + length]);
        out.extend_from_slice(&words[target..]);
    } else {
        out.extend_from_slice(&words[..start]);
        out.extend_from_slice(&words[start + length..length + target]);
        out.extend_from_slice(&words[start..start + length]);
        out.extend_from_slice(&words[length + target..]);
    }
    out
}

/// `_find_shifted_pairs`: `(start_h, start_r, length)` of equal word runs.
fn shifted_pairs(hyp: &[String], reference: &[String]) -> Vec<(usize, usize, usize)> {
    let mut pairs = Vec::new();
    for start_h in 0..hyp.len() {
        for start_r in 0..reference.len() {
            if start_r.abs_diff(start_h) > MAX_SHIFT_DIST {
                continue;
            }
            let mut length = 0;
            while hyp[start_h + length] == reference[start_r + length] && length < MAX_SHIFT_SIZE {
                length += 1;
                pairs.push((start_h, start_r, length));
                if hyp.len() == start_h + length || reference.len() == start_r + length {
                    break;
                }
            }
        }
    }
    pairs
}

/// A shift candidate, ordered as sacrebleu's tuple `(gain, length, -start_h, -idx, words)`.
type Candidate = (i64, usize, i64, i64, Vec<String>);

/// `_shift`: the best shift, its gain, and the updated candidate count.
fn best_shift(
    hyp: &[String],
    reference: &[String],
    mut checked: usize,
) -> (i64, Vec<String>, usize) {
    let (pre_score, trace) = edit_distance(hyp, reference);
    let (align, ref_err, hyp_err) = alignment(&trace);
    let mut best: Option<Candidate> = None;
    for (start_h, start_r, length) in shifted_pairs(hyp, reference) {
        let errors = |flags: &[u8], start: usize| {
            flags
                .iter()
                .skip(start)
                .take(length)
                .map(|&f| u64::from(f))
                .sum::<u64>()
        };
        if errors(&hyp_err, start_h) == 0 || errors(&ref_err, start_r) == 0 {
            continue;
        }
        let aligned = align.get(&(start_r as i64)).copied().unwrap_or(-1);
        if start_h as i64 <= aligned && aligned < (start_h + length) as i64 {
            continue;
        }
        let mut previous = -1i64;
        for offset in -1..length as i64 {
            let position = start_r as i64 + offset;
            let idx = if position == -1 {
                0
            } else if let Some(&h) = align.get(&position) {
                h + 1
            } else {
                break;
            };
            if idx == previous {
                continue;
            }
            previous = idx;
            let shifted = perform_shift(hyp, start_h, length, idx as usize);
            let gain = pre_score - edit_distance(&shifted, reference).0;
            let candidate = (gain, length, -(start_h as i64), -idx, shifted);
            checked += 1;
            if best.as_ref().is_none_or(|b| candidate > *b) {
                best = Some(candidate);
            }
        }
        if checked >= MAX_SHIFT_CANDIDATES {
            break;
        }
    }
    match best {
        None => (0, hyp.to_vec(), checked),
        Some((gain, _, _, _, shifted)) => (gain, shifted, checked),
    }
}

/// `translation_edit_rate`: the edits (shifts included) and the reference length.
fn translation_edit_rate(hyp: &[String], reference: &[String]) -> (i64, usize) {
    if reference.is_empty() {
        return (hyp.len() as i64, 0);
    }
    let mut shifts = 0;
    let mut words = hyp.to_vec();
    let mut checked = 0;
    loop {
        let (delta, shifted, now_checked) = best_shift(&words, reference, checked);
        checked = now_checked;
        if checked >= MAX_SHIFT_CANDIDATES || delta <= 0 {
            break;
        }
        shifts += 1;
        words = shifted;
    }
    (shifts + edit_distance(&words, reference).0, reference.len())
}

/// Corpus TER (0-100): the fewest edits over the references, divided by the average
/// reference length, summed over segments.
pub fn corpus_ter(hypotheses: &[String], references: &[Vec<String>]) -> f64 {
    let (mut total_edits, mut total_ref_len) = (0i64, 0.0f64);
    for (hypothesis, refs) in hypotheses.iter().zip(references) {
        let words = tokenize(pystr::rstrip(hypothesis));
        let mut best = INFINITY;
        let mut ref_lengths = 0usize;
        for reference in refs {
            let (edits, len) = translation_edit_rate(&words, &tokenize(pystr::rstrip(reference)));
            ref_lengths += len;
            best = best.min(edits);
        }
        total_edits += best;
        total_ref_len += ref_lengths as f64 / refs.len() as f64;
    }
    let score = if total_ref_len > 0.0 {
        total_edits as f64 / total_ref_len
    } else if total_edits > 0 {
        1.0
    } else {
        0.0
    };
    100.0 * score
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Expected values: lm-eval 0.4.13's `ter` aggregation (sacrebleu 2.6.0).
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
        assert_eq!(corpus_ter(&hyps, &refs), 55.55555555555556);
        let shifted = ["on the mat the cat sat today".to_owned()];
        let reference = [vec!["the cat sat on the mat".to_owned()]];
        assert_eq!(corpus_ter(&shifted, &reference), 33.33333333333333);
        let reversed = [
            "a b c d e f g h i j k l m n o p".to_owned(),
            "x y z".to_owned(),
        ];
        let reversed_refs = [
            vec!["p o n m l k j i h g f e d c b a".to_owned()],
            vec!["z y x w".to_owned()],
        ];
        assert_eq!(corpus_ter(&reversed, &reversed_refs), 90.0);
    }
}
