//! Hashes: lm-eval's per-sample `doc_hash`/`prompt_hash`/`target_hash` and `task_hashes`
//! (`lm_eval/evaluator.py` `evaluate`, `lm_eval/loggers/evaluation_tracker.py`
//! `save_results_aggregated`), and moebench's task content hash for caching.
use crate::TaskError;
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::fmt::Write;
use std::io::Read;
use std::path::Path;

/// The hashes lm-eval logs with each sample.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SampleHashes {
    /// `sha256(json.dumps(doc, indent=2, ensure_ascii=False))`.
    pub doc: String,
    /// `sha256(arguments[0])` of the document's first request.
    pub prompt: String,
    /// `sha256(str(doc_to_target(doc)))`.
    pub target: String,
}

impl SampleHashes {
    pub(crate) fn new(doc: &Value, first_argument: &str, target: &str) -> Self {
        Self {
            doc: sha256_hex(python_json_dumps(doc).as_bytes()),
            prompt: sha256_hex(first_argument.as_bytes()),
            target: sha256_hex(target.as_bytes()),
        }
    }
}

/// Something logged as an lm-eval sample (a document instance).
pub trait HasSampleHashes {
    fn sample_hashes(&self) -> &SampleHashes;
}

/// lm-eval's `task_hashes[task]`: the hash of every sample's three hashes concatenated, the
/// samples being logged once per filter (in `filter_list` order), documents in order.
pub fn lm_eval_task_hash<T: HasSampleHashes>(instances: &[T], filters: usize) -> String {
    let mut all = String::new();
    for _ in 0..filters {
        for instance in instances {
            let hashes = instance.sample_hashes();
            all.push_str(&hashes.doc);
            all.push_str(&hashes.prompt);
            all.push_str(&hashes.target);
        }
    }
    sha256_hex(all.as_bytes())
}

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

/// The sha256 of a file, streamed.
pub(crate) fn file_sha256(path: &Path) -> Result<String, TaskError> {
    let mut file = std::fs::File::open(path).map_err(TaskError::io(path))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0; 1 << 16];
    loop {
        let read = file.read(&mut buffer).map_err(TaskError::io(path))?;
        if read == 0 {
            return Ok(hex(&hasher.finalize()));
        }
        hasher.update(&buffer[..read]);
    }
}

/// Python's `json.dumps(value, indent=2, ensure_ascii=False)`.
pub(crate) fn python_json_dumps(value: &Value) -> String {
    let mut out = String::new();
    dump(value, 0, &mut out);
    out
}

fn dump(value: &Value, level: usize, out: &mut String) {
    let indent = |out: &mut String, level: usize| {
        out.push('\n');
        out.push_str(&"  ".repeat(level));
    };
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) if n.is_f64() => {
            let x = n.as_f64().unwrap_or_default();
            out.push_str(&crate::template::float_repr(x));
        }
        Value::Number(n) => {
            let _ = write!(out, "{n}");
        }
        Value::String(s) => json_string(s, out),
        Value::Array(items) if items.is_empty() => out.push_str("[]"),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                indent(out, level + 1);
                dump(item, level + 1, out);
            }
            indent(out, level);
            out.push(']');
        }
        Value::Object(map) if map.is_empty() => out.push_str("{}"),
        Value::Object(map) => {
            out.push('{');
            for (i, (key, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                indent(out, level + 1);
                json_string(key, out);
                out.push_str(": ");
                dump(item, level + 1, out);
            }
            indent(out, level);
            out.push('}');
        }
    }
}

/// A JSON string as Python's encoder writes it with `ensure_ascii=False`.
fn json_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// `str(value)` of a target: strings as they are, anything else as Python's `repr`.
pub fn python_str(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => crate::template::py_str(&minijinja::Value::from(minijinja::value::Serde(other))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_dumps_like_python() {
        // json.dumps({"a": [1, 2.5, None, True], "é": "q\"\n\x01", "e": {}, "l": []}, indent=2, ensure_ascii=False)
        let value = json!({"a": [1, 2.5, null, true], "é": "q\"\n\u{1}", "e": {}, "l": []});
        assert_eq!(
            python_json_dumps(&value),
            "{\n  \"a\": [\n    1,\n    2.5,\n    null,\n    true\n  ],\n  \"é\": \"q\\\"\\n\\u0001\",\n  \"e\": {},\n  \"l\": []\n}"
        );
        assert_eq!(python_str(&json!(["a", 1])), "['a', 1]");
        assert_eq!(python_str(&json!(3)), "3");
    }
}
