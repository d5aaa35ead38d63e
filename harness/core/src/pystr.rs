//! Python `str` behaviour that differs from Rust's standard library.

/// `str.isspace()` for one character: Unicode `White_Space` plus the ASCII information
/// separators U+001C..U+001F, which CPython counts as whitespace (bidirectional class B/S)
/// and Rust's [`char::is_whitespace`] does not. This is also what `\s` matches in a Python
/// `re` pattern.
pub fn is_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// `str.strip()` with no argument.
pub fn strip(s: &str) -> &str {
    s.trim_matches(is_space)
}

/// `str.rstrip()` with no argument.
pub fn rstrip(s: &str) -> &str {
    s.trim_end_matches(is_space)
}

/// `str.split()` with no argument: the runs of non-whitespace.
pub fn split(s: &str) -> impl Iterator<Item = &str> {
    s.split(is_space).filter(|piece| !piece.is_empty())
}

/// `len(re.split(r"\s+", text))`: lm-eval's default word count for perplexity
/// (`ConfigurableTask.count_words`, `lm_eval/api/task.py`). Leading and trailing whitespace
/// each add an empty piece, and the empty string counts as one word.
pub fn count_words(text: &str) -> usize {
    let mut pieces = 1;
    let mut in_space = false;
    for c in text.chars() {
        let space = is_space(c);
        if space && !in_space {
            pieces += 1;
        }
        in_space = space;
    }
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `[hex(i) for i in range(sys.maxunicode + 1) if chr(i).isspace()]` in CPython 3.11.7.
    const PY_SPACES: [u32; 29] = [
        0x9, 0xa, 0xb, 0xc, 0xd, 0x1c, 0x1d, 0x1e, 0x1f, 0x20, 0x85, 0xa0, 0x1680, 0x2000, 0x2001,
        0x2002, 0x2003, 0x2004, 0x2005, 0x2006, 0x2007, 0x2008, 0x2009, 0x200a, 0x2028, 0x2029,
        0x202f, 0x205f, 0x3000,
    ];

    #[test]
    fn is_space_matches_cpython_isspace() {
        let ours: Vec<u32> = (0..=u32::from(char::MAX))
            .filter_map(char::from_u32)
            .filter(|&c| is_space(c))
            .map(u32::from)
            .collect();
        assert_eq!(ours, PY_SPACES);
    }

    /// `len(re.split(r"\s+", t))` in CPython 3.11.7 for each text.
    #[test]
    fn count_words_matches_re_split() {
        let cases = [
            ("", 1),
            ("one", 1),
            ("two words", 2),
            (" lead and trail \n", 5),
            ("a\u{1c}b\u{3000}\u{3000}c", 3),
            ("= Valkyria Chronicles III = \n", 6),
        ];
        for (text, words) in cases {
            assert_eq!(count_words(text), words, "{text:?}");
        }
    }

    #[test]
    fn strip_uses_python_whitespace() {
        assert_eq!(strip("\u{1c} x y\u{3000}\n"), "x y");
    }
}
