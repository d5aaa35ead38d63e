//! Built-in ports of the Python hooks of lm-eval's standard tasks, selected with
//! `moebench_processor:` in a task YAML. Each one reproduces its `utils.py` line by line.
use moebench_core::pystr;
use regex::{NoExpand, Regex};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::sync::OnceLock;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Processor {
    /// `lm_eval/tasks/hellaswag/utils.py` `process_docs`: adds `query`, `choices` and `gold`.
    Hellaswag,
    /// `lm_eval/tasks/wikitext/preprocess_wikitext.py`: `doc_to_target` is the detokenized
    /// page; words and bytes are counted on the original `page` (`process_results`).
    Wikitext,
    /// `lm_eval/tasks/winogrande/preprocess_winogrande.py`: multiple-input scoring, one partial
    /// sentence per option as context and the rest of the sentence as the shared target.
    Winogrande,
    /// `lm_eval/tasks/humaneval/utils.py`: the `custom` filter `build_predictions` (prompt +
    /// generation); the metric `pass_at_k` is [`crate::code::CodeMetric`].
    Humaneval,
    /// `lm_eval/tasks/mbpp/utils.py`: the few-shot `samples` `list_fewshot_samples`; the
    /// metric `pass_at_1` is [`crate::code::CodeMetric`].
    Mbpp,
}

/// A value one of the fields produced, or why it could not.
pub(crate) type FieldResult = Result<Value, String>;

impl Processor {
    const ALL: [Self; 5] = [
        Self::Hellaswag,
        Self::Wikitext,
        Self::Winogrande,
        Self::Humaneval,
        Self::Mbpp,
    ];

    /// The name used in YAML.
    pub fn name(self) -> &'static str {
        match self {
            Self::Hellaswag => "hellaswag",
            Self::Wikitext => "wikitext",
            Self::Winogrande => "winogrande",
            Self::Humaneval => "humaneval",
            Self::Mbpp => "mbpp",
        }
    }

    /// The lm-eval code this ports.
    pub fn ported_from(self) -> &'static str {
        match self {
            Self::Hellaswag => "lm_eval/tasks/hellaswag/utils.py",
            Self::Wikitext => "lm_eval/tasks/wikitext/preprocess_wikitext.py",
            Self::Winogrande => "lm_eval/tasks/winogrande/preprocess_winogrande.py",
            Self::Humaneval => "lm_eval/tasks/humaneval/utils.py",
            Self::Mbpp => "lm_eval/tasks/mbpp/utils.py",
        }
    }

    /// How to get the same result without Python, for error messages.
    pub fn native_alternative(self) -> String {
        format!(
            "set `moebench_processor: {}` (a built-in port of lm-eval's {}) instead of the `!function` hooks",
            self.name(),
            self.ported_from()
        )
    }

    /// The processor whose name occurs in `text` (a file path, task name or `!function`).
    pub(crate) fn suggest(text: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|processor| text.contains(processor.name()))
    }

    /// The `doc_to_*` fields the processor computes, which the YAML must therefore not set.
    pub(crate) fn provided_fields(self) -> &'static [&'static str] {
        match self {
            Self::Hellaswag | Self::Humaneval | Self::Mbpp => &[],
            Self::Wikitext => &["doc_to_target"],
            Self::Winogrande => &["doc_to_text", "doc_to_target", "doc_to_choice"],
        }
    }

    /// `process_docs` for one document (applied to every split, as lm-eval does).
    pub(crate) fn process_doc(self, doc: Value) -> FieldResult {
        match self {
            Self::Hellaswag => hellaswag_doc(doc),
            Self::Wikitext | Self::Winogrande | Self::Humaneval | Self::Mbpp => Ok(doc),
        }
    }

    /// The few-shot examples (`fewshot_config.samples`) the processor provides.
    pub(crate) fn fewshot_samples(self) -> Option<Vec<Value>> {
        (self == Self::Mbpp).then(crate::code::mbpp_fewshot_samples)
    }

    /// Whether the processor ports a `custom` filter (`filter_fn`) of a `filter_list`.
    pub(crate) fn has_custom_filter(self) -> bool {
        self == Self::Humaneval
    }

    /// The ported `custom` filter, on one document's responses.
    pub(crate) fn custom_filter(
        self,
        doc: &Value,
        responses: Vec<String>,
    ) -> Result<Vec<String>, String> {
        match self {
            Self::Humaneval => crate::code::humaneval_build_predictions(doc, responses),
            other => Err(format!("`{}` ports no `custom` filter", other.name())),
        }
    }

    /// The value of a provided `field` for `doc`.
    pub(crate) fn field(self, field: &str, doc: &Value) -> FieldResult {
        match (self, field) {
            (Self::Wikitext, "doc_to_target") => {
                Ok(Value::String(wikitext_detokenizer(string(doc, "page")?)))
            }
            (Self::Winogrande, "doc_to_text") => match string(doc, "answer")? {
                "1" => Ok(json!(0)),
                "2" => Ok(json!(1)),
                other => Err(format!("`answer` is {other:?}, expected \"1\" or \"2\"")),
            },
            (Self::Winogrande, "doc_to_target") => {
                let (_, rest) = split_blank(doc)?;
                Ok(Value::String(pystr::strip(rest).to_owned()))
            }
            (Self::Winogrande, "doc_to_choice") => {
                let (before, _) = split_blank(doc)?;
                let options = [string(doc, "option1")?, string(doc, "option2")?];
                Ok(options
                    .iter()
                    .map(|option| format!("{before}{option}"))
                    .collect())
            }
            _ => Err(format!("`{}` does not provide `{field}`", self.name())),
        }
    }

    /// The text whose words and bytes the perplexity metrics count, when it is not the
    /// target: the original page for wikitext.
    pub(crate) fn counted_text(self, doc: &Value) -> Option<Result<&str, String>> {
        match self {
            Self::Wikitext => Some(string(doc, "page")),
            Self::Hellaswag | Self::Winogrande | Self::Humaneval | Self::Mbpp => None,
        }
    }
}

fn string<'a>(doc: &'a Value, key: &str) -> Result<&'a str, String> {
    doc.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("the document has no string field `{key}`"))
}

/// `sentence[:idx]` and `sentence[idx + 1:]` around the first `_`.
fn split_blank(doc: &Value) -> Result<(&str, &str), String> {
    let sentence = string(doc, "sentence")?;
    let idx = sentence
        .find('_')
        .ok_or_else(|| "`sentence` has no `_` blank".to_owned())?;
    Ok((&sentence[..idx], &sentence[idx + 1..]))
}

/// `str.capitalize()`: the first character upper-cased, the rest lower-cased.
fn capitalize(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first
            .to_uppercase()
            .chain(chars.as_str().to_lowercase().chars())
            .collect(),
        None => String::new(),
    }
}

/// `utils.preprocess`.
fn hellaswag_preprocess(text: &str) -> String {
    static BRACKETS: OnceLock<Regex> = OnceLock::new();
    let brackets = BRACKETS.get_or_init(|| Regex::new(r"\[.*?\]").expect("valid regex"));
    let text = pystr::strip(text).replace(" [title]", ". ");
    brackets.replace_all(&text, "").replace("  ", " ")
}

/// `utils.process_docs._process_doc`; `dataset.map` keeps the original columns and appends the
/// new ones.
fn hellaswag_doc(mut doc: Value) -> FieldResult {
    let ctx = format!(
        "{} {}",
        string(&doc, "ctx_a")?,
        capitalize(string(&doc, "ctx_b")?)
    );
    let query = hellaswag_preprocess(&format!("{}: {ctx}", string(&doc, "activity_label")?));
    let choices = doc
        .get("endings")
        .and_then(Value::as_array)
        .ok_or("the document has no list field `endings`")?
        .iter()
        .map(|ending| ending.as_str().map(hellaswag_preprocess))
        .collect::<Option<Vec<_>>>()
        .ok_or("`endings` holds a non-string")?;
    let gold = match doc.get("label") {
        Some(Value::String(label)) => label.parse::<i64>().ok(),
        Some(Value::Number(label)) => label.as_i64(),
        _ => None,
    }
    .ok_or("`label` is not an integer")?;
    let map = doc.as_object_mut().ok_or("the document is not an object")?;
    map.insert("query".to_owned(), Value::String(query));
    map.insert("choices".to_owned(), json!(choices));
    map.insert("gold".to_owned(), json!(gold));
    Ok(doc)
}

/// `preprocess_wikitext.wikitext_detokenizer`, step by step.
pub(crate) fn wikitext_detokenizer(page: &str) -> String {
    static RULES: OnceLock<Vec<(Regex, &'static str)>> = OnceLock::new();
    let rules = RULES.get_or_init(|| {
        [
            (r"\(\s*([^\)]*?)\s*\)", "(${1})"),
            (r"\[\s*([^\]]*?)\s*\]", "[${1}]"),
            (r"\{\s*([^}]*?)\s*\}", "{${1}}"),
            (r#""\s*([^"]*?)\s*""#, "\"${1}\""),
            (r"'\s*([^']*?)\s*'", "'${1}'"),
        ]
        .into_iter()
        .map(|(pattern, replacement)| (Regex::new(pattern).expect("valid regex"), replacement))
        .collect()
    });
    static QUOTE_DIGIT: OnceLock<Regex> = OnceLock::new();
    let quote_digit = QUOTE_DIGIT.get_or_init(|| Regex::new(r"/' [0-9]/").expect("valid regex"));

    // contractions
    let mut string = page.replace("s '", "s'");
    string = quote_digit
        .replace_all(&string, NoExpand("/'[0-9]/"))
        .into_owned();
    // number separators
    for (from, to) in [(" @-@ ", "-"), (" @,@ ", ","), (" @.@ ", ".")] {
        string = string.replace(from, to);
    }
    // punctuation
    for (from, to) in [
        (" : ", ": "),
        (" ; ", "; "),
        (" . ", ". "),
        (" ! ", "! "),
        (" ? ", "? "),
        (" , ", ", "),
    ] {
        string = string.replace(from, to);
    }
    // double brackets
    for (pattern, replacement) in rules {
        string = pattern.replace_all(&string, *replacement).into_owned();
    }
    // miscellaneous
    for (from, to) in [
        ("= = = =", "===="),
        ("= = =", "==="),
        ("= =", "=="),
        (" \u{b0} ", "\u{b0}"),
        (" \n", "\n"),
        ("\n ", "\n"),
        (" N ", " 1 "),
        (" 's", "'s"),
    ] {
        string = string.replace(from, to);
    }
    string
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hellaswag_matches_lm_eval() {
        // Rowan/hellaswag validation row 0 and the query/choices lm-eval builds from it.
        let doc = json!({
            "ind": 24, "activity_label": "Roof shingle removal",
            "ctx_a": "A man is sitting on a roof.", "ctx_b": "he",
            "ctx": "A man is sitting on a roof. he",
            "endings": ["is using wrap to wrap a pair of skis.", "is ripping level tiles off.",
                        "is holding a rubik's cube.", "starts pulling up roofing on a roof."],
            "source_id": "activitynet~v_-JhWjGDPHMY", "split": "val", "split_type": "indomain",
            "label": "3"
        });
        let out = Processor::Hellaswag.process_doc(doc).unwrap();
        assert_eq!(
            out["query"],
            "Roof shingle removal: A man is sitting on a roof. He"
        );
        assert_eq!(out["choices"][1], "is ripping level tiles off.");
        assert_eq!(out["gold"], 3);
        assert_eq!(out.as_object().unwrap().keys().next_back().unwrap(), "gold");
        assert_eq!(capitalize("then THE man"), "Then the man");
        assert_eq!(
            hellaswag_preprocess(" [header] How to x [title] Do y.  [step] z "),
            " How to x. Do y.  z"
        );
    }

    #[test]
    fn winogrande_matches_lm_eval() {
        let doc = json!({"sentence": "Sarah was a much better surgeon than Maria so _ always got the easier cases.",
                         "option1": "Sarah", "option2": "Maria", "answer": "2"});
        let p = Processor::Winogrande;
        assert_eq!(p.field("doc_to_text", &doc).unwrap(), json!(1));
        assert_eq!(
            p.field("doc_to_target", &doc).unwrap(),
            "always got the easier cases."
        );
        assert_eq!(
            p.field("doc_to_choice", &doc).unwrap(),
            json!([
                "Sarah was a much better surgeon than Maria so Sarah",
                "Sarah was a much better surgeon than Maria so Maria"
            ])
        );
    }

    #[test]
    fn wikitext_detokenizer_matches_lm_eval() {
        let page =
            " = Robert <unk> = \n Robert is an English film , television and theatre actor . \
                    He had a guest @-@ starring role ( in 2000 ) . \" Craig \" , 1 @,@ 000 \n";
        assert_eq!(
            wikitext_detokenizer(page),
            " = Robert <unk> =\nRobert is an English film, television and theatre actor. \
             He had a guest-starring role (in 2000). \"Craig\", 1,000\n"
        );
        assert_eq!(wikitext_detokenizer("it /' 5/ x"), "it /'[0-9]/ x");
    }
}
