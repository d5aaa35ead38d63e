//! Readers for the generic formats of `datasets.load_dataset` (`json`, `csv`, `parquet`), each
//! returning rows as JSON objects with Hugging Face's column semantics: every row has every
//! column (missing ones are `null`), columns in order of first appearance, and a column that
//! mixes integers and floats holds floats (pyarrow's type unification).
use crate::TaskError;
use parquet::file::reader::{FileReader, SerializedFileReader};
use serde_json::{Map, Value};
use std::fs::File;
use std::path::Path;

/// How CSV files are read (the `datasets` CSV builder's `header` and `column_names`, from
/// `dataset_kwargs`).
#[derive(Debug, Clone, PartialEq)]
pub struct CsvOptions {
    /// Whether the first row is a header (`header: null` says it is not).
    pub header_row: bool,
    /// Column names; with a header row they replace it.
    pub column_names: Option<Vec<String>>,
}

impl Default for CsvOptions {
    fn default() -> Self {
        Self {
            header_row: true,
            column_names: None,
        }
    }
}

/// A file format `datasets.load_dataset` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    Json,
    Csv,
    Parquet,
}

impl Format {
    /// The format of a `dataset_path` builder name (`json`, `csv`, `parquet`).
    pub(crate) fn from_builder(name: &str) -> Option<Self> {
        match name {
            "json" => Some(Self::Json),
            "csv" => Some(Self::Csv),
            "parquet" => Some(Self::Parquet),
            _ => None,
        }
    }

    /// The format of a data file, by extension (before a `.gz`).
    pub(crate) fn from_path(path: &Path) -> Option<Self> {
        let path = match path.extension()?.to_str()? {
            "gz" => Path::new(path.file_stem()?),
            _ => path,
        };
        match path.extension()?.to_str()? {
            "json" | "jsonl" => Some(Self::Json),
            "csv" => Some(Self::Csv),
            "parquet" => Some(Self::Parquet),
            _ => None,
        }
    }

    pub(crate) fn read(self, path: &Path, csv: &CsvOptions) -> Result<Vec<Value>, TaskError> {
        let rows = match self {
            Self::Json => read_json(path)?,
            Self::Csv => read_csv(path, csv)?,
            Self::Parquet => read_parquet(path)?,
        };
        Ok(unify_columns(rows))
    }
}

/// Reads a whole file as text, with Python's universal newlines (`\r\n` and `\r` → `\n`);
/// a `.gz` file is decompressed first, as `datasets` does.
pub(crate) fn read_text(path: &Path) -> Result<String, TaskError> {
    let text = if path.extension().is_some_and(|e| e == "gz") {
        let file = File::open(path).map_err(TaskError::io(path))?;
        let mut text = String::new();
        std::io::Read::read_to_string(&mut flate2::read::MultiGzDecoder::new(file), &mut text)
            .map_err(TaskError::io(path))?;
        text
    } else {
        std::fs::read_to_string(path).map_err(TaskError::io(path))?
    };
    Ok(universal_newlines(text))
}

pub(crate) fn universal_newlines(text: String) -> String {
    if text.contains('\r') {
        text.replace("\r\n", "\n").replace('\r', "\n")
    } else {
        text
    }
}

/// JSON Lines, or one JSON array of objects.
pub(crate) fn read_json(path: &Path) -> Result<Vec<Value>, TaskError> {
    let text = read_text(path)?;
    if text.trim_start().starts_with('[') {
        return match serde_json::from_str(&text) {
            Ok(Value::Array(rows)) => check_objects(path, rows),
            Ok(_) => Err(TaskError::data(path, "expected a JSON array of objects")),
            Err(error) => Err(TaskError::data(path, format!("invalid JSON: {error}"))),
        };
    }
    let rows = text
        .lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| {
            serde_json::from_str(line).map_err(|error| {
                TaskError::data(path, format!("line {}: invalid JSON: {error}", i + 1))
            })
        })
        .collect::<Result<Vec<Value>, _>>()?;
    check_objects(path, rows)
}

fn check_objects(path: &Path, rows: Vec<Value>) -> Result<Vec<Value>, TaskError> {
    match rows.iter().position(|row| !row.is_object()) {
        Some(i) => Err(TaskError::data(
            path,
            format!("record {} is not a JSON object", i + 1),
        )),
        None => Ok(rows),
    }
}

/// CSV with a header row, or with `column_names` (`header: null`: the first row is data).
/// Column types are inferred as pandas does for the common cases: all integers → int, all
/// numbers (empty cells allowed, as `null`) → float, all `True`/`False` → bool, else strings
/// with empty cells as `null`.
fn read_csv(path: &Path, options: &CsvOptions) -> Result<Vec<Value>, TaskError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(options.header_row)
        .flexible(!options.header_row)
        .from_path(path)
        .map_err(|error| TaskError::data(path, error.to_string()))?;
    let file_header: Vec<String> = if options.header_row {
        reader
            .headers()
            .map_err(|error| TaskError::data(path, error.to_string()))?
            .iter()
            .map(str::to_owned)
            .collect()
    } else {
        Vec::new()
    };
    let records = reader
        .records()
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| TaskError::data(path, error.to_string()))?;
    let header = match &options.column_names {
        Some(names) => names.clone(),
        None if options.header_row => file_header,
        None => {
            return Err(TaskError::data(
                path,
                "`header: null` needs `column_names` in `dataset_kwargs`",
            ))
        }
    };
    let columns: Vec<Vec<Value>> = (0..header.len())
        .map(|c| {
            infer_column(
                records
                    .iter()
                    .map(|record| record.get(c).unwrap_or_default()),
            )
        })
        .collect();
    Ok((0..records.len())
        .map(|r| {
            Value::Object(
                header
                    .iter()
                    .zip(&columns)
                    .map(|(name, column)| (name.clone(), column[r].clone()))
                    .collect(),
            )
        })
        .collect())
}

fn infer_column<'a>(cells: impl Iterator<Item = &'a str> + Clone) -> Vec<Value> {
    if cells.clone().all(|cell| cell.parse::<i64>().is_ok()) {
        return cells
            .map(|cell| Value::from(cell.parse::<i64>().unwrap_or_default()))
            .collect();
    }
    let is_float = |cell: &str| cell.is_empty() || cell.parse::<f64>().is_ok_and(f64::is_finite);
    if cells.clone().all(is_float) && cells.clone().any(|cell| !cell.is_empty()) {
        return cells
            .map(|cell| cell.parse::<f64>().ok().map_or(Value::Null, Value::from))
            .collect();
    }
    if cells.clone().all(|cell| matches!(cell, "True" | "False")) {
        return cells.map(|cell| Value::Bool(cell == "True")).collect();
    }
    cells
        .map(|cell| {
            if cell.is_empty() {
                Value::Null
            } else {
                Value::from(cell)
            }
        })
        .collect()
}

/// Parquet through the row API (no arrow): `Row::to_json_value`.
fn read_parquet(path: &Path) -> Result<Vec<Value>, TaskError> {
    let failed = |error: parquet::errors::ParquetError| TaskError::data(path, error.to_string());
    let file = File::open(path).map_err(TaskError::io(path))?;
    let reader = SerializedFileReader::new(file).map_err(failed)?;
    reader
        .get_row_iter(None)
        .map_err(failed)?
        .map(|row| row.map(|row| row.to_json_value()).map_err(failed))
        .collect()
}

/// Gives every row every column (in order of first appearance), `null` where missing, and
/// turns the integers of a column that also holds floats into floats.
pub(crate) fn unify_columns(rows: Vec<Value>) -> Vec<Value> {
    let mut columns: Vec<String> = Vec::new();
    let mut has_float = Map::new();
    for row in &rows {
        for (key, value) in row.as_object().into_iter().flatten() {
            if !has_float.contains_key(key) {
                columns.push(key.clone());
                has_float.insert(key.clone(), Value::Bool(false));
            }
            if value.is_f64() {
                has_float[key] = Value::Bool(true);
            }
        }
    }
    rows.into_iter()
        .map(|mut row| {
            let Some(map) = row.as_object_mut() else {
                return row;
            };
            let unified: Map<String, Value> = columns
                .iter()
                .map(|column| {
                    let value = map.remove(column).unwrap_or(Value::Null);
                    let value = match (&value, has_float[column].as_bool()) {
                        (Value::Number(n), Some(true)) if !n.is_f64() => {
                            n.as_f64().map_or(value.clone(), Value::from)
                        }
                        _ => value,
                    };
                    (column.clone(), value)
                })
                .collect();
            Value::Object(unified)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_lines_array_and_column_unification() {
        let dir = tempfile::tempdir().unwrap();
        let lines = dir.path().join("a.jsonl");
        std::fs::write(
            &lines,
            "{\"b\": 1, \"a\": \"x\"}\r\n\n{\"a\": \"y\", \"c\": 2.5, \"b\": 2.0}\n",
        )
        .unwrap();
        assert_eq!(
            Format::Json.read(&lines, &CsvOptions::default()).unwrap(),
            vec![
                json!({"b": 1.0, "a": "x", "c": null}),
                json!({"b": 2.0, "a": "y", "c": 2.5})
            ]
        );
        let array = dir.path().join("b.json");
        std::fs::write(&array, "[{\"q\": 1}, {\"q\": 2}]").unwrap();
        assert_eq!(
            Format::Json.read(&array, &CsvOptions::default()).unwrap(),
            vec![json!({"q": 1}), json!({"q": 2})]
        );
    }

    #[test]
    fn csv_types_are_inferred() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.csv");
        std::fs::write(&path, "n,x,t,s\n1,1.5,True,\"a, b\"\n2,,False,\n").unwrap();
        assert_eq!(
            Format::Csv.read(&path, &CsvOptions::default()).unwrap(),
            vec![
                json!({"n": 1, "x": 1.5, "t": true, "s": "a, b"}),
                json!({"n": 2, "x": null, "t": false, "s": null})
            ]
        );
        let headerless = CsvOptions {
            header_row: false,
            column_names: Some(vec!["q".into(), "a".into()]),
        };
        std::fs::write(&path, "What?,1\nWho?,2\n").unwrap();
        assert_eq!(
            Format::Csv.read(&path, &headerless).unwrap(),
            vec![json!({"q": "What?", "a": 1}), json!({"q": "Who?", "a": 2})]
        );
    }
}
