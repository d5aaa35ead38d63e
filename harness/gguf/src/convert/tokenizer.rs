//! `tokenizer.json` and `tokenizer_config.json` from the GGUF's `tokenizer.*` metadata.
//!
//! This reproduces transformers 5.23's `integrations/gguf/gguf_tokenizer_mapping.py` for a
//! `tokenizer.ggml.model = "gpt2"` file (byte-level BPE), whose output is the successor of the
//! older `GGUFGPTConverter`:
//! - `byte_level_tokenizer`: the vocabulary is the token list, with any token that uses a character
//!   outside GPT-2's byte alphabet (`bytes_to_unicode`) respelled as its UTF-8 bytes in that
//!   alphabet; merges are the `"a b"` strings split at the space; a `GPT2Tokenizer` supplies the
//!   rest: BPE without dropout or unk token, a `ByteLevel(add_prefix_space=False)` pre-tokenizer, a
//!   `ByteLevel` decoder, no normalizer and a `TemplateProcessing` post-processor that adds nothing;
//! - `add_gguf_special_tokens`: tokens of type 3 (CONTROL) whose characters are all in the byte
//!   alphabet become special added tokens; tokens of type 4 (USER_DEFINED) that are in the
//!   vocabulary become non-special added tokens; all with `normalized: false`;
//! - `set_split_regex`: only some `tokenizer.ggml.pre` values replace the pre-tokenizer; those
//!   ([`PRE_TOKENIZERS_WITH_OWN_SPLIT`]) are refused here rather than converted wrongly.
//!
//! The JSON is laid out as the `tokenizers` library saves it (serde_json, two-space indent, keys in
//! struct order, vocabulary in id order, no trailing newline), so the file is byte-identical to
//! the one `AutoTokenizer.from_pretrained(dir, gguf_file=...).save_pretrained()` writes.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

use super::write_json;
use crate::error::{Error, Result};
use crate::gguf::GgufFile;

/// `tokenizer.ggml.pre` values for which transformers installs its own split regex
/// (`GGUF_PRE_TOKENIZER_SPLITS`); every other value keeps GPT-2's byte-level pre-tokenizer.
const PRE_TOKENIZERS_WITH_OWN_SPLIT: [&str; 23] = [
    "llama3",
    "llama-v3",
    "llama-bpe",
    "falcon3",
    "falcon-h1",
    "pixtral",
    "midm-2.0",
    "lfm2",
    "jina-v5-nano",
    "dbrx",
    "smaug-bpe",
    "tekken",
    "qwen2",
    "deepseek-r1-qwen",
    "kormo",
    "f2llmv2",
    "megrez",
    "qwen35",
    "gpt-4o",
    "llama4",
    "kanana2",
    "talkie",
    "minimax-m2",
];

/// llama.cpp's `LLAMA_TOKEN_TYPE_CONTROL` and `LLAMA_TOKEN_TYPE_USER_DEFINED`.
const CONTROL: i64 = 3;
const USER_DEFINED: i64 = 4;

/// transformers' `VERY_LARGE_INTEGER` (`int(1e30)`), its `model_max_length` when nothing sets one.
const VERY_LARGE_INTEGER: u128 = 1_000_000_000_000_000_019_884_624_838_656;

pub(super) fn write_tokenizer(gguf: &GgufFile, out_dir: &Path) -> Result<()> {
    let vocab = GgufVocab::read(gguf)?;
    write_json(
        &out_dir.join("tokenizer.json"),
        &vocab.tokenizer_json(gguf)?,
        false,
    )?;
    write_json(
        &out_dir.join("tokenizer_config.json"),
        &vocab.tokenizer_config(gguf)?,
        true,
    )
}

/// The `tokenizer.*` metadata.
struct GgufVocab<'a> {
    tokens: Vec<&'a str>,
    /// Empty when the file has no `tokenizer.ggml.token_type`.
    token_types: Vec<i64>,
    merges: Vec<&'a str>,
    chat_template: Option<&'a str>,
}

impl<'a> GgufVocab<'a> {
    fn read(gguf: &'a GgufFile) -> Result<Self> {
        let unsupported = |problem: String| Error::Unsupported {
            path: gguf.path().into(),
            problem,
        };
        let model: &str = gguf.require("tokenizer.ggml.model")?;
        if model != "gpt2" {
            return Err(unsupported(format!(
                "tokenizer.ggml.model {model:?} (only byte-level BPE, \"gpt2\", is converted)"
            )));
        }
        if let Some(pre) = gguf.get::<&str>("tokenizer.ggml.pre")? {
            if PRE_TOKENIZERS_WITH_OWN_SPLIT.contains(&pre) {
                return Err(unsupported(format!(
                    "tokenizer.ggml.pre {pre:?} needs its own split regex, which is not implemented"
                )));
            }
        }
        Ok(Self {
            tokens: gguf.require("tokenizer.ggml.tokens")?,
            token_types: gguf.get("tokenizer.ggml.token_type")?.unwrap_or_default(),
            merges: gguf.require("tokenizer.ggml.merges")?,
            chat_template: gguf.get("tokenizer.chat_template")?,
        })
    }

    fn tokenizer_json(&self, gguf: &GgufFile) -> Result<TokenizerJson<'a>> {
        let alphabet = ByteAlphabet::new();
        let vocab: Vec<Cow<'a, str>> = self.tokens.iter().map(|t| alphabet.spell(t)).collect();
        let added_tokens = self.added_tokens(&alphabet, &unique_tokens(gguf, &vocab)?);
        let merges = self
            .merges
            .iter()
            .map(|merge| {
                merge.split_once(' ').ok_or_else(|| Error::Metadata {
                    path: gguf.path().into(),
                    key: "tokenizer.ggml.merges".into(),
                    problem: format!("merge {merge:?} is not two tokens separated by a space"),
                })
            })
            .collect::<Result<_>>()?;
        Ok(TokenizerJson {
            version: "1.0",
            truncation: None,
            padding: None,
            added_tokens,
            normalizer: None,
            pre_tokenizer: ByteLevel::new(false),
            post_processor: TemplateProcessing::default(),
            decoder: ByteLevel::new(true),
            model: Bpe {
                kind: "BPE",
                dropout: None,
                unk_token: None,
                continuing_subword_prefix: "",
                end_of_word_suffix: "",
                fuse_unk: false,
                byte_fallback: false,
                ignore_merges: false,
                vocab: Vocab(vocab),
                merges,
            },
        })
    }

    /// Control tokens spelled in the byte alphabet (special) and user-defined tokens present in the
    /// vocabulary (not special), in id order as `tokenizers` serialises them.
    fn added_tokens(&self, alphabet: &ByteAlphabet, vocab: &HashSet<&str>) -> Vec<AddedToken<'a>> {
        self.tokens
            .iter()
            .zip(&self.token_types)
            .enumerate()
            .filter_map(|(id, (&content, &token_type))| {
                let special = match token_type {
                    CONTROL if alphabet.spells(content) => true,
                    USER_DEFINED if vocab.contains(content) => false,
                    _ => return None,
                };
                Some(AddedToken::new(id, content, special))
            })
            .collect()
    }

    /// `tokenizer_config.json` as transformers saves it, plus the chat template (transformers 5
    /// would put that in `chat_template.jinja`; it reads it from either place).
    fn tokenizer_config(&self, gguf: &GgufFile) -> Result<TokenizerConfig<'a>> {
        let token = |key: &str| -> Result<Option<&'a str>> {
            let key = format!("tokenizer.ggml.{key}");
            let Some(id) = gguf.get::<usize>(&key)? else {
                return Ok(None);
            };
            let token = self.tokens.get(id).ok_or_else(|| Error::Metadata {
                path: gguf.path().into(),
                key,
                problem: format!(
                    "token id {id} is outside the {}-token vocabulary",
                    self.tokens.len()
                ),
            })?;
            Ok(Some(*token))
        };
        Ok(TokenizerConfig {
            backend: "tokenizers",
            bos_token: token("bos_token_id")?,
            chat_template: self.chat_template,
            eos_token: token("eos_token_id")?,
            model_max_length: VERY_LARGE_INTEGER,
            pad_token: token("padding_token_id")?,
            tokenizer_class: "TokenizersBackend",
            unk_token: token("unknown_token_id")?,
        })
    }
}

/// The vocabulary as a set; a token spelled twice has no single id, so it is refused.
fn unique_tokens<'v>(gguf: &GgufFile, vocab: &'v [Cow<'_, str>]) -> Result<HashSet<&'v str>> {
    let mut seen = HashSet::with_capacity(vocab.len());
    for token in vocab {
        if !seen.insert(token.as_ref()) {
            return Err(Error::Unsupported {
                path: gguf.path().into(),
                problem: format!("token {token:?} appears twice in the vocabulary"),
            });
        }
    }
    Ok(seen)
}

/// GPT-2's `bytes_to_unicode`: printable Latin-1 bytes stand for themselves, the other 68 bytes
/// map in order to U+0100..U+0143.
struct ByteAlphabet([char; 256]);

impl ByteAlphabet {
    fn new() -> Self {
        let mut chars = ['\0'; 256];
        let mut next_unprintable = 256;
        for (byte, c) in (0u8..=255).zip(&mut chars) {
            *c = if Self::printable(byte) {
                byte.into()
            } else {
                next_unprintable += 1;
                char::from_u32(next_unprintable - 1).expect("U+0100..U+0143 are chars")
            };
        }
        Self(chars)
    }

    fn printable(byte: u8) -> bool {
        matches!(byte, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF)
    }

    /// Whether every character of `token` is one of the 256 alphabet characters.
    fn spells(&self, token: &str) -> bool {
        token
            .chars()
            .all(|c| matches!(c as u32, 0x21..=0x7E | 0xA1..=0xAC | 0xAE..=0x143))
    }

    /// `token` itself if it is spelled in the alphabet, else its UTF-8 bytes in the alphabet.
    fn spell<'t>(&self, token: &'t str) -> Cow<'t, str> {
        if self.spells(token) {
            Cow::Borrowed(token)
        } else {
            Cow::Owned(token.bytes().map(|b| self.0[usize::from(b)]).collect())
        }
    }
}

#[derive(Serialize)]
struct TokenizerJson<'a> {
    version: &'static str,
    truncation: Option<()>,
    padding: Option<()>,
    added_tokens: Vec<AddedToken<'a>>,
    normalizer: Option<()>,
    pre_tokenizer: ByteLevel,
    post_processor: TemplateProcessing,
    decoder: ByteLevel,
    model: Bpe<'a>,
}

#[derive(Serialize)]
struct AddedToken<'a> {
    id: usize,
    content: &'a str,
    single_word: bool,
    lstrip: bool,
    rstrip: bool,
    normalized: bool,
    special: bool,
}

impl<'a> AddedToken<'a> {
    fn new(id: usize, content: &'a str, special: bool) -> Self {
        Self {
            id,
            content,
            single_word: false,
            lstrip: false,
            rstrip: false,
            normalized: false,
            special,
        }
    }
}

/// `pre_tokenizers.ByteLevel(add_prefix_space=False)` and `decoders.ByteLevel()` serialise alike
/// except for `add_prefix_space`, whose decoder default is `true`.
#[derive(Serialize)]
struct ByteLevel {
    #[serde(rename = "type")]
    kind: &'static str,
    add_prefix_space: bool,
    trim_offsets: bool,
    use_regex: bool,
}

impl ByteLevel {
    fn new(add_prefix_space: bool) -> Self {
        Self {
            kind: "ByteLevel",
            add_prefix_space,
            trim_offsets: true,
            use_regex: true,
        }
    }
}

/// The post-processor `TokenizersBackend` installs when neither BOS nor EOS is added: `$A` for a
/// single sequence, `$A $B:1` for a pair.
#[derive(Serialize)]
struct TemplateProcessing {
    #[serde(rename = "type")]
    kind: &'static str,
    single: [Piece; 1],
    pair: [Piece; 2],
    special_tokens: BTreeMap<String, ()>,
}

impl Default for TemplateProcessing {
    fn default() -> Self {
        Self {
            kind: "TemplateProcessing",
            single: [Piece::sequence("A", 0)],
            pair: [Piece::sequence("A", 0), Piece::sequence("B", 1)],
            special_tokens: BTreeMap::new(),
        }
    }
}

#[derive(Serialize)]
enum Piece {
    Sequence { id: &'static str, type_id: u32 },
}

impl Piece {
    fn sequence(id: &'static str, type_id: u32) -> Self {
        Self::Sequence { id, type_id }
    }
}

#[derive(Serialize)]
struct Bpe<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    dropout: Option<f64>,
    unk_token: Option<&'a str>,
    continuing_subword_prefix: &'static str,
    end_of_word_suffix: &'static str,
    fuse_unk: bool,
    byte_fallback: bool,
    ignore_merges: bool,
    vocab: Vocab<'a>,
    merges: Vec<(&'a str, &'a str)>,
}

/// Tokens in id order, serialised as a `{token: id}` object in that order.
struct Vocab<'a>(Vec<Cow<'a, str>>);

impl Serialize for Vocab<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (id, token) in self.0.iter().enumerate() {
            map.serialize_entry(token, &id)?;
        }
        map.end()
    }
}

#[derive(Serialize)]
struct TokenizerConfig<'a> {
    backend: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    bos_token: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    chat_template: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    eos_token: Option<&'a str>,
    model_max_length: u128,
    #[serde(skip_serializing_if = "Option::is_none")]
    pad_token: Option<&'a str>,
    tokenizer_class: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    unk_token: Option<&'a str>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_alphabet_matches_gpt2() {
        let alphabet = ByteAlphabet::new();
        assert_eq!(alphabet.0[b'A' as usize], 'A');
        assert_eq!(alphabet.0[b' ' as usize], 'Ġ'); // U+0120: byte 32 is the 33rd unprintable
        assert_eq!(alphabet.0[b'\n' as usize], 'Ċ'); // U+010A
        assert_eq!(alphabet.0[0xAD], 'Ń'); // U+0143, the last one
        let distinct: HashSet<char> = alphabet.0.iter().copied().collect();
        assert_eq!(distinct.len(), 256);
        assert!(alphabet.0.iter().all(|c| alphabet.spells(&c.to_string())));
    }

    #[test]
    fn tokens_outside_the_alphabet_are_respelled_as_bytes() {
        let alphabet = ByteAlphabet::new();
        assert_eq!(alphabet.spell("Ġhello"), "Ġhello");
        assert!(matches!(alphabet.spell("Ġhello"), Cow::Borrowed(_)));
        // "é" is U+00E9, inside the alphabet; " é" has a space, so both characters are respelled:
        // 0x20 -> 'Ġ', 0xC3 -> 'Ã', 0xA9 -> '©'.
        assert_eq!(alphabet.spell("é"), "é");
        assert_eq!(alphabet.spell(" é"), "ĠÃ©");
    }
}
