//! `moebench_loader`: readers that turn the original release formats of the standard
//! benchmarks (as kept in `shared/datasets/`) into the Hugging Face schema that lm-eval's own
//! task YAMLs expect, so lm-eval's prompt templates apply unchanged. Column order follows the
//! Hugging Face datasets (it matters for lm-eval's `doc_hash`).
use super::formats::{read_json, read_text, unify_columns, universal_newlines};
use super::SplitData;
use crate::TaskError;
use moebench_core::pystr;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::io::Read;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Loader {
    /// AI2's ARC JSONL (`question.stem`, `question.choices[{text,label}]`) →
    /// `allenai/ai2_arc`: `{id, question, choices: {text, label}, answerKey}`.
    Ai2ArcJsonl,
    /// AI2's OpenBookQA JSONL → `allenai/openbookqa` (`main`):
    /// `{id, question_stem, choices: {text, label}, answerKey}`.
    OpenbookqaJsonl,
    /// PIQA `valid.jsonl` + `valid-labels.lst` → `{goal, sol1, sol2, label: int}`.
    PiqaJsonlLst,
    /// WinoGrande `dev.jsonl` + `dev-labels.lst` → `allenai/winogrande`:
    /// `{sentence, option1, option2, answer: "1"|"2"}`.
    WinograndeJsonlLst,
    /// SuperGLUE BoolQ `val.jsonl` (labels `true`/`false`, as JSON booleans or strings) →
    /// `super_glue/boolq`: `{question, passage, idx, label: 0|1}`.
    SuperglueBoolqJsonl,
    /// llama.cpp's HellaSwag text (6 lines per item: context, gold index, 4 endings), bzip2 →
    /// `{query, choices, label: int}`. The original `activity_label`/`ctx_a`/`ctx_b` cannot be
    /// recovered from it (llama.cpp already joined and preprocessed them, and lm-eval
    /// capitalizes `ctx_b`), so it feeds a dedicated task, not lm-eval's `hellaswag`.
    HellaswagLlamacppBz2,
    /// The same llama.cpp text → the `Rowan/hellaswag` columns lm-eval's own `hellaswag` task
    /// and its `utils.py` `process_docs` read: `{activity_label, ctx_a, ctx_b, endings,
    /// label: str}`, the context split at its first `": "` with an empty `ctx_b`. lm-eval's
    /// `process_docs` then rebuilds exactly llama.cpp's line as its query (it is already
    /// preprocessed); the split is a reconstruction, not the original fields.
    HellaswagLlamacppRowan,
    /// MMLU's header-less CSVs (`question,A,B,C,D,answer letter`) → `cais/mmlu`:
    /// `{question, subject, choices, answer: int}`. `subject` comes from the file name
    /// (`<subject>_test.csv`). A directory stands for `<dir>/<dataset_name>_*.csv` (every CSV
    /// when there is no `dataset_name`).
    MmluCsv,
    /// WikiText's tokenized `wiki.*.tokens` text → `EleutherAI/wikitext_document_level`
    /// `{page}` documents (see [`wikitext_pages`]).
    WikitextTokens,
    /// OpenAI's HumanEval release (`HumanEval.jsonl.gz`, whose columns are in another order)
    /// → `openai/openai_humaneval`: `{task_id, prompt, canonical_solution, test, entry_point}`.
    HumanevalJsonl,
    /// MBPP's full release (`mbpp.jsonl`, task ids 1-974) → the split asked for of
    /// `google-research-datasets/mbpp` (`full`): `prompt` 1-10, `test` 11-510, `validation`
    /// 511-600, `train` 601-974 (the release's README), columns in the Hub's order
    /// `{task_id, text, code, test_list, test_setup_code, challenge_test_list}`.
    MbppJsonl,
    /// JSON Lines (or a JSON array) passed through.
    Jsonl,
}

impl Loader {
    /// Reads split `split` from `files`.
    pub(crate) fn read(
        self,
        files: &[PathBuf],
        dataset_name: Option<&str>,
        split: &str,
    ) -> Result<SplitData, TaskError> {
        let files = match self {
            Self::MmluCsv => expand_mmlu_dirs(files, dataset_name)?,
            _ => files.to_vec(),
        };
        let docs = match self {
            Self::Ai2ArcJsonl => map_jsonl(&files, |row| ai2_row(row, "question"))?,
            Self::OpenbookqaJsonl => map_jsonl(&files, |row| ai2_row(row, "question_stem"))?,
            Self::PiqaJsonlLst => with_labels(&files, piqa_row)?,
            Self::WinograndeJsonlLst => with_labels(&files, winogrande_row)?,
            Self::SuperglueBoolqJsonl => map_jsonl(&files, boolq_row)?,
            Self::HellaswagLlamacppBz2 => concat(&files, |path| {
                read_hellaswag(
                    path,
                    |context, label, endings| json!({ "query": context, "choices": endings, "label": label }),
                )
            })?,
            Self::HellaswagLlamacppRowan => concat(&files, |path| {
                read_hellaswag(path, |context, label, endings| {
                    let (activity, rest) = context.split_once(": ").unwrap_or((context, ""));
                    json!({
                        "activity_label": activity, "ctx_a": rest, "ctx_b": "",
                        "endings": endings, "label": label.to_string(),
                    })
                })
            })?,
            Self::MmluCsv => concat(&files, read_mmlu)?,
            Self::WikitextTokens => concat(&files, |path| {
                Ok(wikitext_pages(&read_text(path)?)
                    .into_iter()
                    .map(|page| json!({ "page": page }))
                    .collect())
            })?,
            Self::HumanevalJsonl => map_jsonl(&files, |row| {
                reorder(
                    row,
                    &[
                        "task_id",
                        "prompt",
                        "canonical_solution",
                        "test",
                        "entry_point",
                    ],
                )
            })?,
            Self::MbppJsonl => {
                let ids = mbpp_split(split).ok_or_else(|| {
                    TaskError::data(
                        files.first().cloned().unwrap_or_default(),
                        format!("MBPP has no split `{split}` (prompt, test, validation, train)"),
                    )
                })?;
                map_jsonl(&files, |row| {
                    reorder(
                        row,
                        &[
                            "task_id",
                            "text",
                            "code",
                            "test_list",
                            "test_setup_code",
                            "challenge_test_list",
                        ],
                    )
                })?
                .into_iter()
                .filter(|row| row["task_id"].as_u64().is_some_and(|id| ids.contains(&id)))
                .collect()
            }
            Self::Jsonl => unify_columns(concat(&files, read_json)?),
        };
        Ok(SplitData { docs, files })
    }
}

fn concat(
    files: &[PathBuf],
    read: impl Fn(&Path) -> Result<Vec<Value>, TaskError>,
) -> Result<Vec<Value>, TaskError> {
    let mut docs = Vec::new();
    for path in files {
        docs.extend(read(path)?);
    }
    Ok(docs)
}

/// Reads JSONL files and maps each row, naming the file and line on failure.
fn map_jsonl(
    files: &[PathBuf],
    map: impl Fn(&Value) -> Result<Value, String>,
) -> Result<Vec<Value>, TaskError> {
    concat(files, |path| {
        read_json(path)?
            .iter()
            .enumerate()
            .map(|(i, row)| {
                map(row).map_err(|message| {
                    TaskError::data(path, format!("record {}: {message}", i + 1))
                })
            })
            .collect()
    })
}

fn field<'a>(row: &'a Value, path: &[&str]) -> Result<&'a Value, String> {
    path.iter()
        .try_fold(row, |value, key| value.get(key))
        .ok_or_else(|| format!("missing `{}`", path.join(".")))
}

fn text<'a>(row: &'a Value, path: &[&str]) -> Result<&'a str, String> {
    field(row, path)?
        .as_str()
        .ok_or_else(|| format!("`{}` is not a string", path.join(".")))
}

/// ARC and OpenBookQA share AI2's nested layout; only the question column's name differs.
fn ai2_row(row: &Value, question_column: &str) -> Result<Value, String> {
    let choices = field(row, &["question", "choices"])?
        .as_array()
        .ok_or("`question.choices` is not a list")?;
    let column = |key: &str| {
        choices
            .iter()
            .map(|choice| text(choice, &[key]).map(Value::from))
            .collect::<Result<Vec<_>, _>>()
    };
    let mut out = serde_json::Map::new();
    out.insert("id".to_owned(), json!(text(row, &["id"])?));
    out.insert(
        question_column.to_owned(),
        json!(text(row, &["question", "stem"])?),
    );
    out.insert(
        "choices".to_owned(),
        json!({ "text": column("text")?, "label": column("label")? }),
    );
    out.insert("answerKey".to_owned(), json!(text(row, &["answerKey"])?));
    Ok(Value::Object(out))
}

/// The task ids of an MBPP split.
fn mbpp_split(split: &str) -> Option<std::ops::RangeInclusive<u64>> {
    match split {
        "prompt" => Some(1..=10),
        "test" => Some(11..=510),
        "validation" => Some(511..=600),
        "train" => Some(601..=974),
        _ => None,
    }
}

/// The row with exactly `columns`, in that order.
fn reorder(row: &Value, columns: &[&str]) -> Result<Value, String> {
    let mut out = serde_json::Map::new();
    for key in columns {
        out.insert((*key).to_owned(), field(row, &[key])?.clone());
    }
    Ok(Value::Object(out))
}

fn piqa_row(row: &Value, label: &str) -> Result<Value, String> {
    let label: i64 = label
        .parse()
        .map_err(|_| format!("label {label:?} is not an integer"))?;
    Ok(json!({
        "goal": text(row, &["goal"])?,
        "sol1": text(row, &["sol1"])?,
        "sol2": text(row, &["sol2"])?,
        "label": label,
    }))
}

fn winogrande_row(row: &Value, label: &str) -> Result<Value, String> {
    if let Some(answer) = row.get("answer").and_then(Value::as_str) {
        if answer != label {
            return Err(format!(
                "`answer` {answer:?} disagrees with the label file's {label:?}"
            ));
        }
    }
    Ok(json!({
        "sentence": text(row, &["sentence"])?,
        "option1": text(row, &["option1"])?,
        "option2": text(row, &["option2"])?,
        "answer": label,
    }))
}

/// Pairs the rows of the `.jsonl` file with the lines of the `.lst` label file.
fn with_labels(
    files: &[PathBuf],
    map: impl Fn(&Value, &str) -> Result<Value, String>,
) -> Result<Vec<Value>, TaskError> {
    let find = |extension: &str| {
        files
            .iter()
            .find(|path| path.extension().is_some_and(|e| e == extension))
            .ok_or_else(|| {
                TaskError::data(
                    files.first().cloned().unwrap_or_default(),
                    format!("this loader needs a `.jsonl` and a `.lst` file in data_files, missing the `.{extension}`"),
                )
            })
    };
    let (rows_path, labels_path) = (find("jsonl")?, find("lst")?);
    let rows = read_json(rows_path)?;
    let text = read_text(labels_path)?;
    let labels: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect();
    if labels.len() != rows.len() {
        return Err(TaskError::data(
            labels_path,
            format!(
                "{} labels for {} rows in {}",
                labels.len(),
                rows.len(),
                rows_path.display()
            ),
        ));
    }
    rows.iter()
        .zip(labels)
        .enumerate()
        .map(|(i, (row, label))| {
            map(row, label).map_err(|message| {
                TaskError::data(rows_path, format!("record {}: {message}", i + 1))
            })
        })
        .collect()
}

fn boolq_row(row: &Value) -> Result<Value, String> {
    let label = match field(row, &["label"])? {
        Value::Bool(b) => *b,
        Value::String(s) if s.eq_ignore_ascii_case("true") => true,
        Value::String(s) if s.eq_ignore_ascii_case("false") => false,
        other => return Err(format!("`label` {other} is not true/false")),
    };
    let idx = field(row, &["idx"])?
        .as_i64()
        .ok_or("`idx` is not an integer")?;
    Ok(json!({
        "question": text(row, &["question"])?,
        "passage": text(row, &["passage"])?,
        "idx": idx,
        "label": i64::from(label),
    }))
}

/// Items of llama.cpp's HellaSwag text (context, gold index, 4 endings), as `row` builds them.
fn read_hellaswag(
    path: &Path,
    row: impl Fn(&str, i64, &[&str]) -> Value,
) -> Result<Vec<Value>, TaskError> {
    let file = std::fs::File::open(path).map_err(TaskError::io(path))?;
    let mut text = String::new();
    bzip2::read::MultiBzDecoder::new(file)
        .read_to_string(&mut text)
        .map_err(TaskError::io(path))?;
    let text = universal_newlines(text);
    let lines: Vec<&str> = text.lines().collect();
    if !lines.len().is_multiple_of(6) {
        return Err(TaskError::data(
            path,
            format!("{} lines is not a multiple of 6", lines.len()),
        ));
    }
    lines
        .chunks(6)
        .enumerate()
        .map(|(i, item)| {
            let label: i64 = item[1].trim().parse().map_err(|_| {
                TaskError::data(
                    path,
                    format!(
                        "line {}: gold label {:?} is not an integer",
                        6 * i + 2,
                        item[1]
                    ),
                )
            })?;
            Ok(row(item[0], label, &item[2..6]))
        })
        .collect()
}

/// `<dir>` entries of `data_files` → the subject CSVs inside.
fn expand_mmlu_dirs(
    files: &[PathBuf],
    dataset_name: Option<&str>,
) -> Result<Vec<PathBuf>, TaskError> {
    let mut expanded = Vec::new();
    for path in files {
        if !path.is_dir() {
            expanded.push(path.clone());
            continue;
        }
        let mut found: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(TaskError::io(path))?
            .filter_map(|entry| entry.ok().map(|entry| entry.path()))
            .filter(|file| {
                let name = file
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or_default();
                name.ends_with(".csv")
                    && dataset_name.is_none_or(|subject| subject_of(file) == subject)
            })
            .collect();
        if found.is_empty() {
            return Err(TaskError::data(
                path,
                format!("no CSV for subject {dataset_name:?} in this directory"),
            ));
        }
        found.sort();
        expanded.extend(found);
    }
    Ok(expanded)
}

/// `abstract_algebra_test.csv` → `abstract_algebra`.
fn subject_of(path: &Path) -> &str {
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default();
    match stem.rsplit_once('_') {
        Some((subject, "test" | "dev" | "val")) => subject,
        _ => stem,
    }
}

fn read_mmlu(path: &Path) -> Result<Vec<Value>, TaskError> {
    let subject = subject_of(path);
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_path(path)
        .map_err(|error| TaskError::data(path, error.to_string()))?;
    reader
        .records()
        .enumerate()
        .map(|(i, record)| {
            let record = record.map_err(|error| TaskError::data(path, error.to_string()))?;
            let bad = |message: &str| TaskError::data(path, format!("row {}: {message}", i + 1));
            if record.len() != 6 {
                return Err(bad(&format!("{} columns, expected 6", record.len())));
            }
            let answer = ["A", "B", "C", "D"]
                .iter()
                .position(|letter| *letter == pystr::strip(&record[5]))
                .ok_or_else(|| bad(&format!("answer {:?} is not A-D", &record[5])))?;
            Ok(json!({
                "question": &record[0],
                "subject": subject,
                "choices": [&record[1], &record[2], &record[3], &record[4]],
                "answer": answer,
            }))
        })
        .collect()
}

/// Splits a WikiText file into pages exactly as the `EleutherAI/wikitext_document_level`
/// builder does (`wikitext_document_level.py` `_generate_examples`, a modified copy of HF's
/// `wikitext.py`): split on `\n`; a line is a top-level heading when, after turning
/// `= = =` into `===` and `= =` into `==` and stripping, it starts with `"= "` and ends with
/// `" ="`; each heading starts a new page, and the lines before it form the previous page
/// (kept only if not blank). The last page is always kept.
///
/// Run on `wiki.test.tokens` (the tokenized release, as in `shared/datasets/wikitext2`) this
/// yields the builder's `wikitext-2-v1` documents, not lm-eval's `wikitext-2-raw-v1` ones: the
/// text has `<unk>` for rare words, so perplexities differ from lm-eval's `wikitext` task.
pub fn wikitext_pages(text: &str) -> Vec<String> {
    let mut pages = Vec::new();
    let mut lines: Vec<&str> = Vec::new();
    for line in text.split('\n') {
        let heading = line.replace("= = =", "===").replace("= =", "==");
        let heading = pystr::strip(&heading);
        if heading.starts_with("= ") && heading.ends_with(" =") {
            let page = lines.join("\n");
            if !pystr::strip(&page).is_empty() {
                pages.push(page);
            }
            lines.clear();
        }
        lines.push(line);
    }
    pages.push(lines.join("\n"));
    pages
}

#[cfg(test)]
mod tests;
