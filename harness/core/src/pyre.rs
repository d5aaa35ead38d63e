//! Python `re` patterns (as written in lm-eval task YAML) run on the Rust `regex` engine.
//!
//! lm-eval's `RegexFilter` calls `re.findall` and its `exact_match` calls `re.sub`
//! (`lm_eval/filters/extraction.py`, `lm_eval/api/metrics.py`). This module reproduces both,
//! including CPython's handling of empty matches (`pattern_findall` / `pattern_subx` in
//! `Modules/_sre/sre.c`: after an empty match the next match may not be empty at the same
//! position, but an empty match right after a non-empty one is kept).
//!
//! The pattern is translated minimally to Rust syntax:
//! - `\Z` becomes `\z`;
//! - `$` (outside a character class, without a leading `(?m)` flag) becomes `(?:\n?\z)`, since
//!   Python's `$` also matches before a final newline;
//! - `[`, `&` and `~` inside a character class are escaped (literals in Python, set operators
//!   in Rust);
//! - `{` that does not start a quantifier is escaped (a literal in Python), and `{,n}` becomes
//!   `{0,n}`.
//!
//! Patterns with look-around or backreferences, which the `regex` crate lacks, run on
//! `fancy-regex` (a backtracking engine like CPython's, delegating the rest to `regex`);
//! one that exceeds its backtracking limit on a text stops matching there. Known residual
//! differences, none of which affect the patterns lm-eval ships for the filters we support:
//! a translated `$` consumes the final newline (visible only in the matched text, which
//! `RegexFilter` strips anyway); Python's `\s` also matches U+001C..U+001F and its `\w`
//! differs from Rust's on combining marks and non-decimal numerics; when a pattern prefers an
//! empty match where a non-empty one is also possible at the same position, CPython can
//! backtrack into the non-empty one after an empty match while this port moves one character
//! ahead.

use regex::Regex;

use crate::CoreError;

/// A compiled Python regular expression.
#[derive(Debug, Clone)]
pub struct PyRegex {
    pattern: String,
    engine: Engine,
}

/// The `regex` crate where it can run the pattern, else `fancy-regex`.
#[derive(Debug, Clone)]
enum Engine {
    Plain(Regex),
    Fancy(Box<fancy_regex::Regex>),
}

/// The byte spans of a match's groups (group 0 first; `None` for a group that did not take
/// part).
type Spans = Vec<Option<(usize, usize)>>;

impl Engine {
    fn groups(&self) -> usize {
        match self {
            Self::Plain(regex) => regex.captures_len() - 1,
            Self::Fancy(regex) => regex.captures_len() - 1,
        }
    }

    /// The first match at or after `pos`.
    fn captures_at(&self, text: &str, pos: usize) -> Option<Spans> {
        let spans = |get: &dyn Fn(usize) -> Option<(usize, usize)>, n: usize| -> Spans {
            (0..n).map(get).collect()
        };
        match self {
            Self::Plain(regex) => {
                let caps = regex.captures_at(text, pos)?;
                Some(spans(
                    &|i| caps.get(i).map(|m| (m.start(), m.end())),
                    caps.len(),
                ))
            }
            Self::Fancy(regex) => {
                let caps = regex.captures_from_pos(text, pos).ok().flatten()?;
                Some(spans(
                    &|i| caps.get(i).map(|m| (m.start(), m.end())),
                    caps.len(),
                ))
            }
        }
    }
}

/// One element of the list returned by Python's `re.findall`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found<'t> {
    /// The whole match (pattern without groups) or the only group (`""` if it did not take
    /// part in the match).
    Text(&'t str),
    /// All groups, for patterns with two or more groups (`""` for groups that did not match).
    Groups(Vec<&'t str>),
}

impl PyRegex {
    /// Compiles a Python pattern, translating it to Rust syntax (see the module docs).
    pub fn new(pattern: &str) -> Result<Self, CoreError> {
        let translated = translate(pattern);
        let engine = match Regex::new(&translated) {
            Ok(regex) => Engine::Plain(regex),
            Err(plain) => match fancy_regex::Regex::new(&translated) {
                Ok(regex) => Engine::Fancy(Box::new(regex)),
                Err(fancy) => {
                    return Err(CoreError::Regex {
                        pattern: pattern.to_owned(),
                        message: format!("{plain}\n(fancy-regex: {fancy})"),
                    })
                }
            },
        };
        Ok(Self {
            pattern: pattern.to_owned(),
            engine,
        })
    }

    /// The pattern as written in Python.
    pub fn as_str(&self) -> &str {
        &self.pattern
    }

    /// `re.findall(pattern, text)`.
    pub fn findall<'t>(&self, text: &'t str) -> Vec<Found<'t>> {
        let groups = self.engine.groups();
        self.python_matches(text)
            .iter()
            .map(|caps| {
                let group = |i: usize| {
                    caps.get(i)
                        .copied()
                        .flatten()
                        .map_or("", |(start, end)| &text[start..end])
                };
                match groups {
                    0 => Found::Text(group(0)),
                    1 => Found::Text(group(1)),
                    _ => Found::Groups((1..=groups).map(group).collect()),
                }
            })
            .collect()
    }

    /// `re.sub(pattern, "", text)`.
    pub fn remove_all(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let mut last = 0;
        for caps in self.python_matches(text) {
            let (start, end) = caps[0].expect("group 0 always participates");
            out.push_str(&text[last..start]);
            last = end;
        }
        out.push_str(&text[last..]);
        out
    }

    /// Non-overlapping matches in CPython's order (see the module docs for empty matches).
    fn python_matches(&self, text: &str) -> Vec<Spans> {
        let mut found = Vec::new();
        let mut pos = 0;
        let mut must_advance = false;
        while pos <= text.len() {
            let Some(caps) = self.engine.captures_at(text, pos) else {
                break;
            };
            let (start, end) = caps[0].expect("group 0 always participates");
            if must_advance && start == end && start == pos {
                match text[pos..].chars().next() {
                    Some(c) => pos += c.len_utf8(),
                    None => break,
                }
                must_advance = false;
                continue;
            }
            must_advance = start == end;
            pos = end;
            found.push(caps);
        }
        found
    }
}

/// Rewrites the Python-only syntax of `pattern` (see the module docs).
fn translate(pattern: &str) -> String {
    let multiline = leading_flags(pattern).contains('m');
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = String::with_capacity(pattern.len() + 8);
    let mut in_class = false;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '\\' => {
                match chars.get(i + 1) {
                    Some('Z') if !in_class => out.push_str("\\z"),
                    Some(&next) => {
                        out.push('\\');
                        out.push(next);
                    }
                    None => out.push('\\'),
                }
                i += 2;
                continue;
            }
            '[' if in_class => out.push_str("\\["),
            '&' | '~' if in_class => {
                out.push('\\');
                out.push(c);
            }
            ']' if in_class => {
                in_class = false;
                out.push(']');
            }
            '[' => {
                in_class = true;
                out.push('[');
                i = push_class_start(&chars, i + 1, &mut out);
                continue;
            }
            '$' if !in_class && !multiline => out.push_str("(?:\\n?\\z)"),
            '{' if !in_class => match quantifier_end(&chars, i) {
                Some(end) => {
                    let body: String = chars[i + 1..end].iter().collect();
                    out.push('{');
                    if body.starts_with(',') {
                        out.push('0');
                    }
                    out.push_str(&body);
                    out.push('}');
                    i = end + 1;
                    continue;
                }
                None => out.push_str("\\{"),
            },
            _ => out.push(c),
        }
        i += 1;
    }
    out
}

/// Copies the optional `^` and a leading `]` (a literal in both dialects) of a character class
/// starting at `i`; returns the index of the next unread character.
fn push_class_start(chars: &[char], mut i: usize, out: &mut String) -> usize {
    if chars.get(i) == Some(&'^') {
        out.push('^');
        i += 1;
    }
    if chars.get(i) == Some(&']') {
        out.push_str("\\]");
        i += 1;
    }
    i
}

/// If `chars[start]` (a `{`) opens a Python quantifier `{m}`, `{m,}`, `{,n}`, `{m,n}` or
/// `{,}` (`sre_parse` accepts empty bounds around the comma), the index of its closing `}`.
fn quantifier_end(chars: &[char], start: usize) -> Option<usize> {
    let close = start + chars[start..].iter().position(|&c| c == '}')?;
    let body = &chars[start + 1..close];
    let mut parts = body.split(|&c| c == ',');
    let low = parts.next()?;
    let valid = match (parts.next(), parts.next()) {
        (None, _) => !low.is_empty() && low.iter().all(char::is_ascii_digit),
        (Some(high), None) => low.iter().chain(high).all(char::is_ascii_digit),
        _ => false,
    };
    valid.then_some(close)
}

/// The letters of a global inline flag group at the start of the pattern, e.g. `"im"` for
/// `(?im)...`.
fn leading_flags(pattern: &str) -> &str {
    pattern
        .strip_prefix("(?")
        .and_then(|rest| rest.split_once(')'))
        .map(|(flags, _)| flags)
        .filter(|flags| flags.chars().all(|c| c.is_ascii_alphabetic()))
        .unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts<'t>(found: &[Found<'t>]) -> Vec<&'t str> {
        found
            .iter()
            .map(|f| match f {
                Found::Text(t) => *t,
                Found::Groups(_) => panic!("expected plain matches, got {f:?}"),
            })
            .collect()
    }

    /// Expected values printed by CPython 3.11.7:
    /// `re.findall(pattern, text)` and `re.sub(pattern, "", text)`.
    #[test]
    fn findall_and_sub_match_cpython() {
        let cases: [(&str, &str, &[&str], &str); 14] = [
            (
                r"#### (\-?[0-9\.\,]+)",
                "so 3+4=7\n#### 1,234.5 and #### -7",
                &["1,234.5", "-7"],
                "so 3+4=7\n and ",
            ),
            (r"a*", "baaab", &["", "aaa", "", ""], "bb"),
            (r"x*", "abxd", &["", "", "x", "", ""], "abd"),
            (r"(a)|b", "ab", &["a", ""], ""),
            (r"(a)?b", "b", &[""], ""),
            (r"(\d+)$", "12 34", &["34"], "12 "),
            (r"^(.*?)\s*$", "answer: B  \n", &["answer: B"], ""),
            (r"[$]\d", "cost $5", &["$5"], "cost "),
            (r"\\boxed\{([A-D])\}", r"so \boxed{C}", &["C"], "so "),
            (r"a{,2}", "aaaa", &["aa", "aa", ""], ""),
            (r"[[]x", "[x", &["[x"], ""),
            (r"x{a", "x{a", &["x{a"], ""),
            (r"(?m)^\d$", "1\n2\nx", &["1", "2"], "\n\nx"),
            (r"end\Z", "the end", &["end"], "the "),
        ];
        for (pattern, text, found, removed) in cases {
            let re = PyRegex::new(pattern).unwrap();
            assert_eq!(texts(&re.findall(text)), found, "findall {pattern:?}");
            assert_eq!(re.remove_all(text), removed, "sub {pattern:?}");
        }
    }

    /// `re.findall(r"(-?[$0-9.,]{2,})|(-?[0-9]+)", ...)` and `re.findall(r"é|(ü)", "éü")`
    /// return tuples / empty groups exactly as printed by CPython 3.11.7.
    #[test]
    fn findall_groups_match_cpython() {
        let re = PyRegex::new(r"(-?[$0-9.,]{2,})|(-?[0-9]+)").unwrap();
        let text = "She pays $18 per day, so 7 days cost 126. The answer is 126.";
        let want =
            [["$18", ""], ["", "7"], ["126.", ""], ["126.", ""]].map(|g| Found::Groups(g.to_vec()));
        assert_eq!(re.findall(text), want);
        let re = PyRegex::new("é|(ü)").unwrap();
        assert_eq!(re.findall("éü"), [Found::Text(""), Found::Text("ü")]);
        let re = PyRegex::new("[a&&b]").unwrap();
        assert_eq!(texts(&re.findall("a&b")), ["a", "&", "b"]);
    }

    /// Python's `$` also matches before a final newline without consuming it; the translation
    /// consumes it. Groups agree with CPython (`re.findall(r"(\d+)$", "12 34\n") == ["34"]`),
    /// whole matches do not (documented difference: CPython gives `["34"]` and
    /// `re.sub(r"\d+$", "", "12 34\n") == "12 \n"`).
    #[test]
    fn dollar_before_final_newline() {
        let grouped = PyRegex::new(r"(\d+)$").unwrap();
        assert_eq!(texts(&grouped.findall("12 34\n")), ["34"]);
        let whole = PyRegex::new(r"\d+$").unwrap();
        assert_eq!(texts(&whole.findall("12 34\n")), ["34\n"]);
        assert_eq!(whole.remove_all("12 34\n"), "12 ");
    }

    /// lm-eval's look-around patterns (bbh/mmlu CoT `strict-match`, mmlu `generative`'s
    /// `get_response`, turkishmmlu); expected values printed by CPython 3.11.7.
    #[test]
    fn lookaround_runs_like_cpython() {
        let answer = PyRegex::new("(?<=The answer is )(.*)(?=.)").unwrap();
        assert_eq!(
            texts(&answer.findall("So. The answer is (B).\nThe answer is C.")),
            ["(B)", "C"]
        );
        let response = PyRegex::new(r"^(.*?)(?=\n|$)").unwrap();
        assert_eq!(texts(&response.findall("B) no\nmore")), ["B) no"]);
        assert_eq!(response.remove_all("B\nx"), "\nx");
        let turkish = PyRegex::new("([A-E])(?= şıkkıdır| şıkkı)").unwrap();
        assert_eq!(texts(&turkish.findall("Cevap C şıkkıdır.")), ["C"]);
        let backreference = PyRegex::new(r"(\w)\1").unwrap();
        assert_eq!(texts(&backreference.findall("aabcdd")), ["a", "d"]);
        let err = PyRegex::new("(?<=a+)b(").unwrap_err().to_string();
        assert!(err.contains("(?<=a+)b("), "{err}");
    }

    #[test]
    fn translation_rewrites_only_python_specific_syntax() {
        assert_eq!(translate(r"a$"), r"a(?:\n?\z)");
        assert_eq!(translate(r"(?m)a$"), r"(?m)a$");
        assert_eq!(translate(r"[$\]]\Z"), r"[$\]]\z");
        assert_eq!(translate(r"[]a[]"), r"[\]a\[]");
        assert_eq!(translate(r"[^]a]"), r"[^\]a]");
        assert_eq!(
            translate(r"a{2}b{2,}c{,3}d{,}e{x}f{}"),
            r"a{2}b{2,}c{0,3}d{0,}e\{x}f\{}"
        );
    }
}
