//! "Did you mean …?" hints for misspelled keys and names.
use regex::Regex;
use std::sync::OnceLock;

/// The candidate closest to `word` by edit distance, if it is close enough to be a plausible
/// typo (at most a third of the word's length, and at least 2 edits allowed).
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).max(2);
    candidates
        .into_iter()
        .map(|candidate| (edit_distance(word, candidate), candidate))
        .filter(|(distance, _)| *distance <= limit)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}

/// For serde's "unknown field `x`, expected one of `a`, `b`" (or "unknown variant"), the
/// closest expected name as ` (did you mean `a`?)`.
pub fn unknown_name_hint(message: &str) -> Option<String> {
    static PATTERN: OnceLock<Regex> = OnceLock::new();
    static NAME: OnceLock<Regex> = OnceLock::new();
    let pattern = PATTERN.get_or_init(|| {
        Regex::new(r"unknown (?:field|variant) `([^`]*)`, expected (.*)").expect("valid regex")
    });
    let name = NAME.get_or_init(|| Regex::new(r"`([^`]*)`").expect("valid regex"));
    let captures = pattern.captures(message)?;
    let expected = captures.get(2)?.as_str();
    let candidates = name
        .captures_iter(expected)
        .filter_map(|c| c.get(1).map(|m| m.as_str()));
    closest(&captures[1], candidates).map(|best| format!(" (did you mean `{best}`?)"))
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

    #[test]
    fn hints_at_serde_unknown_fields() {
        let message = "models[0]: unknown field `lable`, expected `id` or `label`";
        assert_eq!(
            unknown_name_hint(message).as_deref(),
            Some(" (did you mean `label`?)")
        );
        assert_eq!(unknown_name_hint("invalid type: string"), None);
    }
}
