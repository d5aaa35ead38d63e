//! Jinja2 rendering as lm-eval does it (`lm_eval/utils.py` `apply_template`: an
//! `Environment(undefined=StrictUndefined, keep_trailing_newline=True)` with a `regex_replace`
//! filter, rendered with the document's columns as variables), on minijinja:
//!
//! - values print as Python's `str()` ([`repr`]): `['a', 'b']`, `True`, `None`, `2.0`;
//! - Python methods on strings, lists and dicts come from minijinja-contrib's `pycompat`, plus
//!   `list.index`, `str.index` and Python-whitespace `strip`/`lstrip`/`rstrip` here;
//! - the `string` filter is Python's `str()`.
//!
//! Known difference: the `~` operator and `join` format non-string items with minijinja's own
//! formatting (lists print as `["a"]`); lm-eval's standard tasks do not use them on lists.
mod literal;
mod repr;

pub use literal::{literal_eval, LiteralError};
pub(crate) use repr::{float_repr, py_repr, py_str};

use minijinja::value::{from_args, Value, ValueKind};
use minijinja::{Environment, Error, ErrorKind, State, UndefinedBehavior};
use moebench_core::pystr;
use regex::Regex;

/// A template that does not compile, or failed to render for a document.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("template {template:?}: {message}")]
pub struct TemplateError {
    pub template: String,
    pub message: String,
}

/// A set of compiled templates, each registered under its own source text.
pub struct Templates {
    env: Environment<'static>,
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Templates").finish_non_exhaustive()
    }
}

impl Templates {
    /// Compiles `sources`; a syntax error is returned with the offending source.
    pub fn new<I: IntoIterator<Item = String>>(sources: I) -> Result<Self, TemplateError> {
        let mut env = Environment::new();
        let mut syntax = minijinja::syntax::SyntaxConfig::builder();
        syntax.keep_trailing_newline(true);
        env.set_syntax(syntax.build().expect("default delimiters are valid"));
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_formatter(|out, _state, value| out.write_str(&py_str(value)).map_err(Error::from));
        env.set_unknown_method_callback(python_methods);
        env.add_filter("regex_replace", regex_replace);
        env.add_filter("string", |value: Value| py_str(&value));
        for source in sources {
            env.add_template_owned(source.clone(), source.clone())
                .map_err(|error| TemplateError {
                    message: describe(&error),
                    template: source,
                })?;
        }
        Ok(Self { env })
    }

    /// Renders the registered template `source` with the columns of `doc` as variables.
    pub fn render(&self, source: &str, doc: &serde_json::Value) -> Result<String, TemplateError> {
        let failed = |error: Error| TemplateError {
            template: source.to_owned(),
            message: describe(&error),
        };
        let template = self.env.get_template(source).map_err(failed)?;
        template
            .render(Value::from(minijinja::value::Serde(doc)))
            .map_err(failed)
    }
}

/// The error with its detail and source line, on one line.
fn describe(error: &Error) -> String {
    let mut message = error.to_string();
    if let Some(detail) = error.detail() {
        if !message.contains(detail) {
            message = format!("{message}: {detail}");
        }
    }
    message
}

/// Python methods missing from pycompat (or with different whitespace), then pycompat.
fn python_methods(
    state: &mut State,
    value: &Value,
    method: &str,
    args: &[Value],
) -> Result<Value, Error> {
    match (value.kind(), method) {
        (ValueKind::Seq, "index") => {
            let (needle,): (&Value,) = from_args(args)?;
            let items = value.try_iter()?;
            for (i, item) in items.enumerate() {
                if &item == needle {
                    return Ok(Value::from(i));
                }
            }
            Err(Error::new(
                ErrorKind::InvalidOperation,
                format!("{} is not in list", py_repr(needle)),
            ))
        }
        (ValueKind::String, "index") => {
            let (needle,): (&str,) = from_args(args)?;
            let text = value.as_str().unwrap_or_default();
            text.find(needle)
                .map(|at| Value::from(text[..at].chars().count()))
                .ok_or_else(|| Error::new(ErrorKind::InvalidOperation, "substring not found"))
        }
        (ValueKind::String, "strip" | "lstrip" | "rstrip") if args.is_empty() => {
            let text = value.as_str().unwrap_or_default();
            Ok(Value::from(match method {
                "strip" => pystr::strip(text),
                "lstrip" => text.trim_start_matches(pystr::is_space),
                _ => text.trim_end_matches(pystr::is_space),
            }))
        }
        _ => minijinja_contrib::pycompat::unknown_method_callback(state, value, method, args),
    }
}

/// lm-eval's `regex_replace(string, pattern, repl, count=0)` filter (`re.sub`), with Python's
/// replacement syntax (`\1`, `\g<name>`) translated.
fn regex_replace(
    text: &str,
    pattern: &str,
    replacement: &str,
    count: Option<usize>,
) -> Result<String, Error> {
    let regex = Regex::new(pattern).map_err(|error| {
        Error::new(
            ErrorKind::InvalidOperation,
            format!("regex_replace pattern: {error}"),
        )
    })?;
    let replacement = python_replacement(replacement);
    Ok(regex
        .replacen(text, count.unwrap_or(0), replacement.as_str())
        .into_owned())
}

/// Python `re.sub` replacement → regex crate replacement.
fn python_replacement(python: &str) -> String {
    let mut out = String::new();
    let mut chars = python.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '$' => out.push_str("$$"),
            '\\' => match chars.next() {
                Some(d) if d.is_ascii_digit() => {
                    let mut group = d.to_string();
                    if let Some(&e) = chars.peek().filter(|e| e.is_ascii_digit()) {
                        group.push(e);
                        chars.next();
                    }
                    out.push_str(&format!("${{{group}}}"));
                }
                Some('g') if chars.peek() == Some(&'<') => {
                    chars.next();
                    let name: String = chars.by_ref().take_while(|&e| e != '>').collect();
                    out.push_str(&format!("${{{name}}}"));
                }
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some('r') => out.push('\r'),
                Some('\\') => out.push('\\'),
                Some(other) => {
                    out.push('\\');
                    out.push(other);
                }
                None => out.push('\\'),
            },
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn render(source: &str, doc: serde_json::Value) -> Result<String, String> {
        Templates::new([source.to_owned()])
            .unwrap()
            .render(source, &doc)
            .map_err(|error| error.message)
    }

    #[test]
    fn renders_like_jinja2() {
        let doc = json!({
            "question": "  What?\n", "choices": {"text": ["a", "it's"], "label": ["A", "B"]},
            "answerKey": "B", "text": "the last word", "n": 3, "x": 2.0, "flag": true
        });
        // Expected strings: lm-eval's Jinja2 environment (`lm_eval/utils.py`) on the same doc.
        let cases = [
            (
                "Question: {{question.strip()}}\nAnswer:",
                "Question: What?\nAnswer:",
            ),
            ("{{choices.label.index(answerKey)}}", "1"),
            ("{{choices.text}}", "['a', \"it's\"]"),
            ("{{[choices.label[0], n]}}", "['A', 3]"),
            ("{{text.split(' ')[:-1]|join(' ')}}", "the last"),
            ("{{' '+text.split(' ')[-1]}}", " word"),
            ("{{x}} {{flag}} {{none}}", "2.0 True None"),
            (
                "{{question|regex_replace('\\s+(\\w)', ' <\\1>')}}",
                " <\u{1}>hat?\n",
            ),
            (
                "{{question|regex_replace('\\\\s+(\\\\w)', ' <\\\\1>')}}",
                " <W>hat?\n",
            ),
            ("{{text.index('last')}}|{{n|string}}", "4|3"),
            ("trailing\n", "trailing\n"),
            (
                "{{choices}}",
                "{'text': ['a', \"it's\"], 'label': ['A', 'B']}",
            ),
            ("{{(1, 'a')}}", "(1, 'a')"),
            (
                "{{ 7 / 2 }} {{ 1e20 }} {{ 0.1 + 0.2 }}",
                "3.5 1e+20 0.30000000000000004",
            ),
            ("{{ [1.0, -0.0] }}", "[1.0, -0.0]"),
        ];
        let doc = {
            let mut doc = doc;
            doc["none"] = serde_json::Value::Null;
            doc
        };
        for (source, expected) in cases {
            assert_eq!(render(source, doc.clone()).unwrap(), expected, "{source}");
        }
        assert!(render("{{missing}}", doc.clone())
            .unwrap_err()
            .contains("undefined"));
        let error = render("{{choices.label.index('Z')}}", doc).unwrap_err();
        assert!(error.contains("'Z' is not in list"), "{error}");
    }
}
