//! "Did you mean …?" hints for misspelled keys.

/// The candidate closest to `word` by edit distance, if it is close enough to be a plausible
/// typo (at most a third of the word's length, and at least 2 edits allowed).
pub(crate) fn closest<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).max(2);
    candidates
        .into_iter()
        .map(|candidate| (edit_distance(word, candidate), candidate))
        .filter(|(distance, _)| *distance <= limit)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}

/// Levenshtein distance over characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        previous = current;
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_typos_only() {
        let keys = ["doc_to_text", "doc_to_target", "task"];
        assert_eq!(closest("doc_to_txt", keys), Some("doc_to_text"));
        assert_eq!(closest("tsak", keys), Some("task"));
        assert_eq!(closest("completely_different", keys), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
