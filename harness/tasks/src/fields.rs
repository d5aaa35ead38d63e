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
//! - a `!function` hook's return value is taken as it is;
//! - fields a `moebench_processor` provides come from it.
use crate::config::FieldSpec;
use crate::hooks::{self, HookRef, PyTarget};
use crate::processors::Processor;
use crate::template::{literal_eval, Templates};
use serde_json::Value;
use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

/// How one `doc_to_*` field is computed.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Field {
    Spec(FieldSpec),
    Processor(Processor, &'static str),
}

/// Hook results by hook and document (the document's JSON text), filled in one batch per
/// hook and split when the task is loaded.
#[derive(Debug, Default)]
pub(crate) struct HookValues {
    values: Mutex<HashMap<(HookRef, String), Value>>,
}

impl HookValues {
    /// Calls `hook` once for all of `docs` and remembers the results.
    pub(crate) fn prefill(&self, hook: &HookRef, docs: &[Value]) -> Result<(), String> {
        let target = PyTarget::Hook(hook.clone());
        let runtime = hooks::runtime_for(&target).map_err(|error| error.to_string())?;
        let results = runtime
            .map_docs(hook, docs)
            .map_err(|error| error.to_string())?;
        let mut values = self.values.lock().unwrap_or_else(|e| e.into_inner());
        for (doc, result) in docs.iter().zip(results) {
            values.insert((hook.clone(), doc.to_string()), result);
        }
        Ok(())
    }

    /// `hook(doc)`, from the batch when it was in it.
    fn get(&self, hook: &HookRef, doc: &Value) -> Result<Value, String> {
        let key = (hook.clone(), doc.to_string());
        if let Some(value) = self
            .values
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return Ok(value.clone());
        }
        self.prefill(hook, std::slice::from_ref(doc))?;
        self.values
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .cloned()
            .ok_or_else(|| format!("`{hook}` returned nothing"))
    }
}

/// What the field rules need besides the document.
#[derive(Debug)]
pub(crate) struct FieldContext {
    pub(crate) templates: Templates,
    /// Columns of the evaluation split (`self.features`).
    pub(crate) features: BTreeSet<String>,
    /// Whether the task has `doc_to_choice` (digits then mean an index).
    pub(crate) has_choices: bool,
    pub(crate) hooks: HookValues,
}

impl FieldContext {
    /// A column's value, or the rendered template.
    fn resolve(&self, text: &str, doc: &Value) -> Result<Resolved, String> {
        if self.features.contains(text) {
            return Ok(Resolved::Column(
                doc.get(text).cloned().unwrap_or(Value::Null),
            ));
        }
        self.templates
            .render(text, doc)
            .map(Resolved::Rendered)
            .map_err(|error| error.to_string())
    }

    /// The rendered string as an index if it is all digits and the task has choices.
    fn index(&self, rendered: &str) -> Result<Option<Value>, String> {
        if self.has_choices && is_digits(rendered) {
            return literal_eval(rendered)
                .map(Some)
                .map_err(|error| error.to_string());
        }
        Ok(None)
    }

    /// `resolve_field(doc, field)` (`gen_prefix`, `description`): a column of the document,
    /// else the rendered template.
    pub(crate) fn column_or_template(&self, field: &str, doc: &Value) -> Result<String, String> {
        if let Some(value) = doc.get(field) {
            return Ok(crate::hashing::python_str(value));
        }
        self.templates
            .render(field, doc)
            .map_err(|error| error.to_string())
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
    /// The processor- or hook-provided value, if this field is one.
    fn provided(&self, cx: &FieldContext, doc: &Value) -> Option<Result<Value, String>> {
        match self {
            Self::Processor(processor, name) => Some(processor.field(name, doc)),
            Self::Spec(FieldSpec::Hook(hook)) => Some(cx.hooks.get(hook, doc)),
            Self::Spec(_) => None,
        }
    }

    /// The hook computing this field, if one does.
    pub(crate) fn hook(&self) -> Option<&HookRef> {
        match self {
            Self::Spec(FieldSpec::Hook(hook)) => Some(hook),
            _ => None,
        }
    }

    /// `doc_to_text`: a string, or an index for multiple-input tasks.
    pub(crate) fn text(&self, cx: &FieldContext, doc: &Value) -> Result<Value, String> {
        if let Some(value) = self.provided(cx, doc) {
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
        if let Some(value) = self.provided(cx, doc) {
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
        let value = match (self.provided(cx, doc), self) {
            (Some(value), _) => value?,
            (None, Self::Spec(FieldSpec::List(items))) => Value::Array(items.clone()),
            (None, Self::Spec(FieldSpec::Map(map))) => {
                Value::Array(map.values().cloned().collect())
            }
            (None, Self::Spec(FieldSpec::Text(text))) => match cx.resolve(text, doc)? {
                Resolved::Column(value) => value,
                Resolved::Rendered(rendered) => {
                    literal_eval(&rendered).map_err(|error| error.to_string())?
                }
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
            hooks: HookValues::default(),
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
