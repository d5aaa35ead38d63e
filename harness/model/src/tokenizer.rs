//! `tokenizer.json` (HF tokenizers) plus the special tokens named in `tokenizer_config.json`,
//! which lm-eval needs (BOS, else EOS, is the prefix token of an empty context).
use crate::error::{ModelError, Result};
use serde_json::Value;
use std::path::{Path, PathBuf};

pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    path: PathBuf,
    pub bos_id: Option<i64>,
    pub eos_id: Option<i64>,
    pub pad_id: Option<i64>,
}

impl Tokenizer {
    /// Loads `<dir>/tokenizer.json` and, when present, `<dir>/tokenizer_config.json`.
    pub fn from_dir(dir: &Path) -> Result<Tokenizer> {
        let path = dir.join("tokenizer.json");
        if !path.exists() {
            return Err(ModelError::Tokenizer {
                path,
                msg: "file not found (the checkpoint has no tokenizer.json)".into(),
            });
        }
        let inner = tokenizers::Tokenizer::from_file(&path).map_err(|e| ModelError::Tokenizer {
            path: path.clone(),
            msg: e.to_string(),
        })?;
        let config: Value = std::fs::read_to_string(dir.join("tokenizer_config.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(Value::Null);
        let special = |key: &str| -> Option<i64> {
            let v = config.get(key)?;
            let token = v.as_str().or_else(|| v.get("content")?.as_str())?;
            inner.token_to_id(token).map(i64::from)
        };
        Ok(Tokenizer {
            bos_id: special("bos_token"),
            eos_id: special("eos_token"),
            pad_id: special("pad_token"),
            inner,
            path,
        })
    }

    fn err(&self, e: impl std::fmt::Display) -> ModelError {
        ModelError::Tokenizer {
            path: self.path.clone(),
            msg: e.to_string(),
        }
    }

    /// Ids the tokenizer can produce, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Refuses a tokenizer that produces ids the model has no embedding row for (they would
    /// index past the embedding matrix).
    pub fn check_fits(&self, embedding_rows: usize) -> Result<()> {
        match self.vocab_size() {
            n if n > embedding_rows => Err(self.err(format!(
                "it has {n} token ids but the model's embedding has {embedding_rows} rows; use the \
                 tokenizer that belongs to this model"
            ))),
            _ => Ok(()),
        }
    }

    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<i64>> {
        let enc = self
            .inner
            .encode(text, add_special_tokens)
            .map_err(|e| self.err(e))?;
        Ok(enc.get_ids().iter().map(|&i| i64::from(i)).collect())
    }

    pub fn decode(&self, ids: &[i64], skip_special_tokens: bool) -> Result<String> {
        let ids: Vec<u32> = ids.iter().map(|&i| i as u32).collect();
        self.inner
            .decode(&ids, skip_special_tokens)
            .map_err(|e| self.err(e))
    }

    pub fn token_to_id(&self, token: &str) -> Option<i64> {
        self.inner.token_to_id(token).map(i64::from)
    }

    pub fn id_to_token(&self, id: i64) -> Option<String> {
        self.inner.id_to_token(id as u32)
    }

    /// sha256 of tokenizer.json, recorded with results (token counts depend on it).
    pub fn file_sha256(&self) -> Result<String> {
        crate::save::sha256_file(&self.path)
    }
}
