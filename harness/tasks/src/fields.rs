//! The values of `doc_to_text`, `doc_to_target` and `doc_to_choice` for a document, with
//! `ConfigurableTask`'s rules (`lm_eval/api/task.py`):
//!
//! - a string naming a column (of the evaluation split) returns that column's value;
//! - any other string is rendered as a Jinja2 template; then
//!   - `doc_to_text`, `doc_to_target`: an all-digits result becomes an integer index when the
//!     task has `doc_to_choice`;
//!   - `doc_to_target`: a result that looks like `[…]` is parsed as a list when it can be;
//!   - `doc_to_choice`: the result is parsed with `ast.literal_eval`;
//! - integers, lists and (for choices) dict values are taken as they are;
//! - fields a `moebench_processor` provides come from it.
use crate::config::FieldSpec;
use crate::processors::Processor;
use crate::template::{literal_eval, Templates};
use serde_json::Value;
use std::collections::BTreeSet;

/// How one `doc_to_*` field is computed.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Field {
    Spec(FieldSpec),
    Processor(Processor, &'static str),
}

/// What the field rules need besides the document.
#[derive(Debug)]
pub(crate) struct FieldContext {
    pub(crate) templates: Templates,
    /// Columns of the evaluation split (`self.features`).
    pub(crate) features: BTreeSet<String>,
    /// Whether the task has `doc_to_choice` (digits then mean an index).
    pub(crate) has_choices: bool,
}

impl FieldContext {
    /// A column's value, or the rendered template.
    fn resolve(&self, text: &str, doc: &Value) -> Result<Resolved, String> {
        if self.features.contains(text) {
            return Ok(Resolved::Column(
                doc.get(text).cloned().unwrap_or(Value::Null),
            ));
        }
        self.templates.render(text, doc).map(Resolved::Rendered)
    }

    /// The rendered string as an index if it is all digits and the task has choices.
    fn index(&self, rendered: &str) -> Result<Option<Value>, String> {
        if self.has_choices && is_digits(rendered) {
            return literal_eval(rendered).map(Some);
        }
        Ok(None)
    }
}

enum Resolved {
    Column(Value),
    Rendered(String),
}

/// `str.isdigit()` restricted to ASCII digits: other Unicode digits make lm-eval's
/// `ast.literal_eval` fail, so they never form a valid index.
fn is_digits(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit())
}

impl Field {
    /// The processor-provided value, if this field is one.
    fn provided(&self, doc: &Value) -> Option<Result<Value, String>> {
        match self {
            Self::Processor(processor, name) => Some(processor.field(name, doc)),
            Self::Spec(_) => None,
        }
    }

    /// `doc_to_text`: a string, or an index for multiple-input tasks.
    pub(crate) fn text(&self, cx: &FieldContext, doc: &Value) -> Result<Value, String> {
        if let Some(value) = self.provided(doc) {
            return value;
        }
        match self {
            Self::Spec(FieldSpec::Int(n)) => Ok(Value::from(*n)),
            Self::Spec(FieldSpec::Text(text)) => match cx.resolve(text, doc)? {
                Resolved::Column(value) => Ok(value),
                Resolved::Rendered(rendered) => {
                    Ok(cx.index(&rendered)?.unwrap_or(Value::String(rendered)))
                }
            },
            _ => Err("doc_to_text must be a string or an integer".to_owned()),
        }
    }

    /// `doc_to_target`: a string, an index, or a list (several targets).
    pub(crate) fn target(&self, cx: &FieldContext, doc: &Value) -> Result<Value, String> {
        if let Some(value) = self.provided(doc) {
            return value;
        }
        match self {
            Self::Spec(FieldSpec::Int(n)) => Ok(Value::from(*n)),
            Self::Spec(FieldSpec::List(items)) => Ok(Value::Array(items.clone())),
            Self::Spec(FieldSpec::Text(text)) => match cx.resolve(text, doc)? {
                Resolved::Column(value) => Ok(value),
                Resolved::Rendered(rendered) => {
                    if let Some(index) = cx.index(&rendered)? {
                        return Ok(index);
                    }
                    if rendered.len() >= 2 && rendered.starts_with('[') && rendered.ends_with(']') {
                        if let Ok(list) = literal_eval(&rendered) {
                            return Ok(list);
                        }
                    }
                    Ok(Value::String(rendered))
                }
            },
            _ => Err("doc_to_target must be a string, an integer or a list".to_owned()),
        }
    }

    /// `doc_to_choice`: the list of choice strings.
    pub(crate) fn choices(&self, cx: &FieldContext, doc: &Value) -> Result<Vec<String>, String> {
        let value = match (self.provided(doc), self) {
            (Some(value), _) => value?,
            (None, Self::Spec(FieldSpec::List(items))) => Value::Array(items.clone()),
            (None, Self::Spec(FieldSpec::Map(map))) => {
                Value::Array(map.values().cloned().collect())
            }
            (None, Self::Spec(FieldSpec::Text(text))) => match cx.resolve(text, doc)? {
                Resolved::Column(value) => value,
                Resolved::Rendered(rendered) => literal_eval(&rendered)?,
            },
            (None, _) => return Err("doc_to_choice must be a string, a list or a map".to_owned()),
        };
        let items = value
            .as_array()
            .ok_or_else(|| format!("doc_to_choice gave {value}, not a list"))?;
        items
            .iter()
            .map(|item| {
                item.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| format!("choice {item} is not a string"))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn context(sources: &[&str], features: &[&str]) -> FieldContext {
        FieldContext {
            templates: Templates::new(sources.iter().map(|s| (*s).to_owned())).unwrap(),
            features: features.iter().map(|s| (*s).to_owned()).collect(),
            has_choices: true,
        }
    }

    fn spec(text: &str) -> Field {
        Field::Spec(FieldSpec::Text(text.to_owned()))
    }

    #[test]
    fn lm_eval_field_rules() {
        let templates = [
            "{{label}}",
            "{{choices.text}}",
            "{{[sol1, sol2]}}",
            "{{tgts}}",
            "Q: {{goal}}",
        ];
        let cx = context(
            &templates,
            &["goal", "label", "sol1", "sol2", "choices", "tgts"],
        );
        let doc = json!({"goal": "g", "label": "1", "sol1": "a", "sol2": "b",
                         "choices": {"text": ["x", "y's"]}, "tgts": ["p", "q"]});
        assert_eq!(spec("goal").text(&cx, &doc).unwrap(), json!("g"));
        assert_eq!(spec("Q: {{goal}}").text(&cx, &doc).unwrap(), json!("Q: g"));
        assert_eq!(spec("label").target(&cx, &doc).unwrap(), json!("1"));
        assert_eq!(spec("{{label}}").target(&cx, &doc).unwrap(), json!(1));
        assert_eq!(
            spec("{{tgts}}").target(&cx, &doc).unwrap(),
            json!(["p", "q"])
        );
        assert_eq!(
            spec("{{choices.text}}").choices(&cx, &doc).unwrap(),
            ["x", "y's"]
        );
        assert_eq!(
            spec("{{[sol1, sol2]}}").choices(&cx, &doc).unwrap(),
            ["a", "b"]
        );
        let fixed = Field::Spec(FieldSpec::List(vec![json!("no"), json!("yes")]));
        assert_eq!(fixed.choices(&cx, &doc).unwrap(), ["no", "yes"]);
        let by_map = Field::Spec(FieldSpec::Map(
            json!({"a": "A", "b": "B"}).as_object().unwrap().clone(),
        ));
        assert_eq!(by_map.choices(&cx, &doc).unwrap(), ["A", "B"]);
    }
}
