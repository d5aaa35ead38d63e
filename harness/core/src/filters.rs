//! lm-eval's response filters (`filter_list` in task YAML), applied to one document's list
//! of generated responses (`lm_eval/filters/*.py`, `FilterEnsemble.apply` in
//! `lm_eval/api/filter.py`).
//!
//! lm-eval hands every filter the responses of all documents at once, but each of the
//! filters here works document by document, so a pipeline is applied per document.

use std::collections::HashMap;

use serde_json::{Map, Value};

use crate::pyre::{Found, PyRegex};
use crate::{pystr, CoreError};

/// `RegexFilter`'s default `regex_pattern` (GSM8K's "strict-match").
pub const DEFAULT_REGEX_PATTERN: &str = r"#### (\-?[0-9\.\,]+)";
/// `RegexFilter`'s default `fallback`.
pub const DEFAULT_FALLBACK: &str = "[invalid]";

/// `RegexFilter` (`lm_eval/filters/extraction.py`): extracts one `re.findall` match per
/// response.
#[derive(Debug, Clone)]
pub struct RegexFilter {
    regex: PyRegex,
    group_select: i64,
    fallback: String,
}

impl RegexFilter {
    /// `RegexFilter(regex_pattern, group_select, fallback)`.
    pub fn new(pattern: &str, group_select: i64, fallback: &str) -> Result<Self, CoreError> {
        Ok(Self {
            regex: PyRegex::new(pattern)?,
            group_select,
            fallback: fallback.to_owned(),
        })
    }

    /// `RegexFilter.apply` for one response: `findall`, pick match `group_select` (negative
    /// values count from the end, as Python indexing does); for a pattern with several groups
    /// take the first non-empty group, or the fallback when all are empty; then `str.strip()`
    /// the result. Without any match the fallback is returned unstripped.
    ///
    /// A `group_select` outside the list of matches is an error, as is the `IndexError`
    /// lm-eval raises.
    pub fn extract(&self, response: &str) -> Result<String, CoreError> {
        let found = self.regex.findall(response);
        if found.is_empty() {
            return Ok(self.fallback.clone());
        }
        let selected = python_index(found.len(), self.group_select)
            .map(|i| &found[i])
            .ok_or_else(|| CoreError::GroupSelect {
                pattern: self.regex.as_str().to_owned(),
                matches: found.len(),
                group_select: self.group_select,
            })?;
        let text = match selected {
            Found::Text(text) => text,
            Found::Groups(groups) => groups
                .iter()
                .find(|g| !g.is_empty())
                .copied()
                .unwrap_or(&self.fallback),
        };
        Ok(pystr::strip(text).to_owned())
    }
}

/// Position of Python index `index` in a list of `len` items, if in range.
fn python_index(len: usize, index: i64) -> Option<usize> {
    let len = i64::try_from(len).ok()?;
    let resolved = if index < 0 { index + len } else { index };
    (0..len).contains(&resolved).then_some(resolved as usize)
}

/// One step of a filter pipeline, named as in lm-eval's filter registry.
#[derive(Debug, Clone)]
pub enum Filter {
    /// `regex`.
    Regex(RegexFilter),
    /// `take_first`: keep the first response.
    TakeFirst,
    /// `take_first_k`: keep the first `k` responses.
    TakeFirstK(usize),
    /// `lowercase`: `str.lower()` (full Unicode mapping, e.g. final sigma).
    Lowercase,
    /// `uppercase`: `str.upper()` (full Unicode mapping, e.g. `ß` → `SS`).
    Uppercase,
    /// `remove_whitespace`: `str.strip()`. lm-eval 0.4.13 strips all Python whitespace on
    /// both sides; earlier releases used `lstrip()`, and before that dropped one leading space.
    RemoveWhitespace,
    /// `majority_vote`: the most frequent response, ties going to the one seen first
    /// (`Counter.most_common(1)`).
    MajorityVote,
}

impl Filter {
    /// Builds a filter from a `filter_list` entry: `function` and its other keys (an object,
    /// or null when there are none). Unknown functions (`custom`, `map`, `multi_choice_regex`,
    /// ...) and unknown arguments are errors.
    pub fn from_config(function: &str, args: &Value) -> Result<Self, CoreError> {
        let empty = Map::new();
        let args = match args {
            Value::Null => &empty,
            Value::Object(map) => map,
            other => {
                return Err(CoreError::argument(
                    function,
                    format!("expected an object, got {other}"),
                ))
            }
        };
        let allowed: &[&str] = match function {
            "regex" => &["regex_pattern", "group_select", "fallback"],
            "take_first_k" => &["k"],
            _ => &[],
        };
        if let Some(unknown) = args.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(CoreError::argument(
                function,
                format!("unexpected argument `{unknown}`"),
            ));
        }
        match function {
            "regex" => Ok(Self::Regex(RegexFilter::new(
                string_arg(function, args, "regex_pattern")?.unwrap_or(DEFAULT_REGEX_PATTERN),
                int_arg(function, args, "group_select")?.unwrap_or(0),
                string_arg(function, args, "fallback")?.unwrap_or(DEFAULT_FALLBACK),
            )?)),
            "take_first_k" => {
                let k = int_arg(function, args, "k")?
                    .ok_or_else(|| CoreError::argument(function, "missing argument `k`".into()))?;
                let k = usize::try_from(k).map_err(|_| {
                    CoreError::argument(function, format!("`k` must be non-negative, got {k}"))
                })?;
                Ok(Self::TakeFirstK(k))
            }
            "take_first" => Ok(Self::TakeFirst),
            "lowercase" => Ok(Self::Lowercase),
            "uppercase" => Ok(Self::Uppercase),
            "remove_whitespace" => Ok(Self::RemoveWhitespace),
            "majority_vote" => Ok(Self::MajorityVote),
            _ => Err(CoreError::UnknownFilter(function.to_owned())),
        }
    }

    /// Applies this step to one document's responses.
    pub fn apply(&self, mut responses: Vec<String>) -> Result<Vec<String>, CoreError> {
        match self {
            Self::Regex(filter) => responses.iter().map(|r| filter.extract(r)).collect(),
            Self::TakeFirst => {
                responses.truncate(1);
                Ok(responses)
            }
            Self::TakeFirstK(k) => {
                if responses.len() < *k {
                    return Err(CoreError::argument(
                        "take_first_k",
                        format!(
                            "need at least {k} responses per doc, got {}",
                            responses.len()
                        ),
                    ));
                }
                responses.truncate(*k);
                Ok(responses)
            }
            Self::Lowercase => Ok(responses.iter().map(|r| r.to_lowercase()).collect()),
            Self::Uppercase => Ok(responses.iter().map(|r| r.to_uppercase()).collect()),
            Self::RemoveWhitespace => Ok(responses
                .iter()
                .map(|r| pystr::strip(r).to_owned())
                .collect()),
            Self::MajorityVote => Ok(majority_vote(&responses).into_iter().collect()),
        }
    }
}

/// The most common response; on ties the one that occurred first.
fn majority_vote(responses: &[String]) -> Option<String> {
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for r in responses {
        *counts.entry(r).or_default() += 1;
    }
    let mut best: Option<(&str, usize)> = None;
    for r in responses {
        let count = counts[r.as_str()];
        if best.is_none_or(|(_, c)| count > c) {
            best = Some((r, count));
        }
    }
    best.map(|(r, _)| r.to_owned())
}

fn string_arg<'a>(
    filter: &str,
    args: &'a Map<String, Value>,
    key: &str,
) -> Result<Option<&'a str>, CoreError> {
    args.get(key)
        .map(|v| {
            v.as_str().ok_or_else(|| {
                CoreError::argument(filter, format!("`{key}` must be a string, got {v}"))
            })
        })
        .transpose()
}

fn int_arg(filter: &str, args: &Map<String, Value>, key: &str) -> Result<Option<i64>, CoreError> {
    args.get(key)
        .map(|v| {
            v.as_i64().ok_or_else(|| {
                CoreError::argument(filter, format!("`{key}` must be an integer, got {v}"))
            })
        })
        .transpose()
}

/// A named filter pipeline (`FilterEnsemble`); its name is the `,<filter>` suffix of every
/// metric key it produces.
#[derive(Debug, Clone)]
pub struct FilterPipeline {
    name: String,
    steps: Vec<Filter>,
}

impl FilterPipeline {
    /// A pipeline of `steps` applied in order.
    ///
    /// `take_first` must be the last step: lm-eval's `take_first` unwraps the list into a bare
    /// string, so any later filter would iterate over its characters.
    pub fn new(name: &str, steps: Vec<Filter>) -> Result<Self, CoreError> {
        let last = steps.len().saturating_sub(1);
        if steps
            .iter()
            .take(last)
            .any(|s| matches!(s, Filter::TakeFirst))
        {
            return Err(CoreError::TakeFirstNotLast(name.to_owned()));
        }
        Ok(Self {
            name: name.to_owned(),
            steps,
        })
    }

    /// The pipeline lm-eval uses when a task has no `filter_list`: `none` = `[take_first]`.
    pub fn none() -> Self {
        Self {
            name: "none".to_owned(),
            steps: vec![Filter::TakeFirst],
        }
    }

    /// The pipeline's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs every step on one document's responses.
    pub fn apply(&self, responses: &[String]) -> Result<Vec<String>, CoreError> {
        self.steps
            .iter()
            .try_fold(responses.to_vec(), |acc, step| step.apply(acc))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    fn extract_all(filter: &RegexFilter, responses: &[&str]) -> Vec<String> {
        responses
            .iter()
            .map(|r| filter.extract(r).unwrap())
            .collect()
    }

    /// Realistic GSM8K generations. The expected lists were produced by lm-eval 0.4.13's own
    /// `RegexFilter(...).apply([GSM8K_OUTPUTS], None)[0]` in CPython 3.11.7.
    const GSM8K_OUTPUTS: [&str; 9] = [
        "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72",
        "Weng earns 12/60 = $<<12/60=0.2>>0.2 per minute.\nWorking 50 minutes, she earned 0.2 x 50 = $<<0.2*50=10>>10.\n#### 10\n\nQuestion: Betty",
        "In the beginning, Betty has only 100 / 2 = $<<100/2=50>>50.\nThe answer is $5.",
        "He reads 12 x 2 = 24 pages today. So he read 12 + 24 = 36 pages. There are 120 - 36 = 84 pages left. He should read 84 / 2 = 42 pages.",
        "The total is 1,234.50 dollars, i.e. -7 degrees colder at 3 pm",
        "I don't know.",
        "#### -1,000.5\n",
        "",
        "She has 5 apples and 3 pears: 5+3=8",
    ];

    #[test]
    fn gsm8k_strict_match_matches_lm_eval() {
        let strict = RegexFilter::new(DEFAULT_REGEX_PATTERN, 0, DEFAULT_FALLBACK).unwrap();
        let inv = "[invalid]";
        assert_eq!(
            extract_all(&strict, &GSM8K_OUTPUTS),
            ["72", "10", inv, inv, inv, inv, "-1,000.5", inv, inv]
        );
    }

    #[test]
    fn gsm8k_flexible_extract_matches_lm_eval() {
        let pattern = r"(-?[$0-9.,]{2,})|(-?[0-9]+)";
        let last = RegexFilter::new(pattern, -1, DEFAULT_FALLBACK).unwrap();
        let inv = "[invalid]";
        assert_eq!(
            extract_all(&last, &GSM8K_OUTPUTS),
            ["72", "10", "$5.", "42", "3", inv, "-1,000.5", inv, "8"]
        );
        let first = RegexFilter::new(pattern, 0, DEFAULT_FALLBACK).unwrap();
        assert_eq!(
            extract_all(&first, &GSM8K_OUTPUTS),
            ["48", "12", "100", "12", "1,234.50", inv, "-1,000.5", inv, "5"]
        );
    }

    /// lm-eval: `RegexFilter(r"(x)?(y)?z", fallback="  [none]  ")` gives
    /// `['[none]', 'y', '  [none]  ']` for `["z", "yz", "q"]` (the fallback is stripped only
    /// when it replaces an all-empty group tuple), and `RegexFilter(r"(a)?b")` gives `['']`
    /// for `["b"]`.
    #[test]
    fn group_tuples_and_empty_groups_match_lm_eval() {
        let tuple = RegexFilter::new(r"(x)?(y)?z", 0, "  [none]  ").unwrap();
        assert_eq!(
            extract_all(&tuple, &["z", "yz", "q"]),
            ["[none]", "y", "  [none]  "]
        );
        let single = RegexFilter::new(r"(a)?b", 0, DEFAULT_FALLBACK).unwrap();
        assert_eq!(extract_all(&single, &["b"]), [""]);
    }

    /// lm-eval raises `IndexError` for `RegexFilter(r"(\d)", group_select=2)` on `"1 2"`.
    #[test]
    fn group_select_out_of_range_is_an_error() {
        let filter = RegexFilter::new(r"(\d)", 2, DEFAULT_FALLBACK).unwrap();
        assert!(matches!(
            filter.extract("1 2"),
            Err(CoreError::GroupSelect { matches: 2, .. })
        ));
        let filter = RegexFilter::new(r"(\d)", -2, DEFAULT_FALLBACK).unwrap();
        assert_eq!(filter.extract("1 2").unwrap(), "1");
    }

    /// Expected values from lm-eval 0.4.13's filter classes in CPython 3.11.7.
    #[test]
    fn simple_filters_match_lm_eval() {
        let apply = |f: Filter, items: &[&str]| f.apply(strings(items)).unwrap();
        assert_eq!(
            apply(Filter::RemoveWhitespace, &["  a b \n", "\u{1c} x\u{3000}"]),
            ["a b", "x"]
        );
        assert_eq!(
            apply(Filter::Lowercase, &["ΣΑΣ ΑΣ", "İx", "ABC"]),
            ["σας ας", "i\u{307}x", "abc"]
        );
        assert_eq!(
            apply(Filter::Uppercase, &["straße", "abc"]),
            ["STRASSE", "ABC"]
        );
        assert_eq!(
            apply(Filter::MajorityVote, &["b", "a", "a", "b", "c"]),
            ["b"]
        );
        assert_eq!(apply(Filter::MajorityVote, &["q", "r"]), ["q"]);
        assert_eq!(apply(Filter::TakeFirstK(2), &["a", "b", "c"]), ["a", "b"]);
        assert_eq!(apply(Filter::TakeFirst, &["a", "b"]), ["a"]);
        assert!(Filter::TakeFirstK(4).apply(strings(&["a"])).is_err());
    }

    /// Expected output from lm-eval 0.4.13: `build_filter_ensemble("maj@3", [("take_first_k",
    /// {"k": 3}), ("regex", {...}), ("majority_vote", None), ("take_first", None)])` applied
    /// filter by filter to the same responses in CPython 3.11.7.
    #[test]
    fn pipelines_from_config() {
        let regex = json!({"regex_pattern": r"(-?[$0-9.,]{2,})|(-?[0-9]+)", "group_select": -1});
        let steps = vec![
            Filter::from_config("take_first_k", &json!({"k": 3})).unwrap(),
            Filter::from_config("regex", &regex).unwrap(),
            Filter::from_config("majority_vote", &Value::Null).unwrap(),
            Filter::from_config("take_first", &Value::Null).unwrap(),
        ];
        let pipeline = FilterPipeline::new("maj@3", steps).unwrap();
        let responses = strings(&["so 12 + 30 = 42", "it is 41", "answer: 42", "#### 7"]);
        assert_eq!(pipeline.apply(&responses).unwrap(), ["42"]);
        assert_eq!(pipeline.name(), "maj@3");
        assert_eq!(
            FilterPipeline::none().apply(&responses).unwrap(),
            ["so 12 + 30 = 42"]
        );
    }

    #[test]
    fn bad_configs_are_rejected() {
        assert!(matches!(
            Filter::from_config("custom", &Value::Null),
            Err(CoreError::UnknownFilter(_))
        ));
        assert!(Filter::from_config("regex", &json!({"pattern": "x"})).is_err());
        assert!(Filter::from_config("regex", &json!({"group_select": "1"})).is_err());
        assert!(Filter::from_config("take_first_k", &Value::Null).is_err());
        assert!(matches!(
            Filter::from_config("regex", &json!({"regex_pattern": "(a"})),
            Err(CoreError::Regex { .. })
        ));
        let steps = vec![Filter::TakeFirst, Filter::Lowercase];
        assert!(matches!(
            FilterPipeline::new("bad", steps),
            Err(CoreError::TakeFirstNotLast(_))
        ));
    }
}
