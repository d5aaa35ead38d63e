//! Test helpers: a minimal GGUF writer and a tiny llama model built with it.
//!
//! The writer follows the same spec as the reader (ggml `docs/gguf.md`), written independently so
//! that the tests check the reader against the spec, not against itself.
#![allow(dead_code)] // each test binary uses a different subset

use std::path::Path;

/// A metadata value to write.
pub enum Value {
    U32(u32),
    F32(f32),
    Bool(bool),
    Str(String),
    StrArray(Vec<String>),
    I32Array(Vec<i32>),
}

impl Value {
    pub fn str(s: &str) -> Self {
        Self::Str(s.into())
    }

    fn type_id(&self) -> u32 {
        match self {
            Self::U32(_) => 4,
            Self::F32(_) => 6,
            Self::Bool(_) => 7,
            Self::Str(_) => 8,
            Self::StrArray(_) | Self::I32Array(_) => 9,
        }
    }

    fn write(&self, out: &mut Vec<u8>) {
        match self {
            Self::U32(v) => out.extend(v.to_le_bytes()),
            Self::F32(v) => out.extend(v.to_le_bytes()),
            Self::Bool(v) => out.push(u8::from(*v)),
            Self::Str(s) => write_string(out, s),
            Self::StrArray(items) => {
                out.extend(8u32.to_le_bytes());
                out.extend((items.len() as u64).to_le_bytes());
                items.iter().for_each(|s| write_string(out, s));
            }
            Self::I32Array(items) => {
                out.extend(5u32.to_le_bytes());
                out.extend((items.len() as u64).to_le_bytes());
                items.iter().for_each(|v| out.extend(v.to_le_bytes()));
            }
        }
    }
}

fn write_string(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

/// A tensor to write: name, ggml `ne` (fastest dimension first), ggml type id and raw bytes.
pub struct Tensor {
    pub name: String,
    pub ne: Vec<u64>,
    pub type_id: u32,
    pub data: Vec<u8>,
}

impl Tensor {
    /// An F32 tensor holding `values`.
    pub fn f32(name: &str, ne: &[u64], values: &[f32]) -> Self {
        assert_eq!(ne.iter().product::<u64>() as usize, values.len());
        Self {
            name: name.into(),
            ne: ne.to_vec(),
            type_id: 0,
            data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        }
    }
}

/// A GGUF file under construction.
pub struct GgufBuilder {
    pub version: u32,
    pub alignment: u64,
    pub metadata: Vec<(String, Value)>,
    pub tensors: Vec<Tensor>,
}

impl Default for GgufBuilder {
    fn default() -> Self {
        Self {
            version: 3,
            alignment: 32,
            metadata: Vec::new(),
            tensors: Vec::new(),
        }
    }
}

impl GgufBuilder {
    pub fn kv(mut self, key: &str, value: Value) -> Self {
        self.metadata.push((key.into(), value));
        self
    }

    pub fn tensor(mut self, tensor: Tensor) -> Self {
        self.tensors.push(tensor);
        self
    }

    /// The file's bytes: header, metadata, tensor infos, padding, then each tensor's data at an
    /// aligned offset.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = b"GGUF".to_vec();
        out.extend(self.version.to_le_bytes());
        out.extend((self.tensors.len() as u64).to_le_bytes());
        out.extend((self.metadata.len() as u64).to_le_bytes());
        for (key, value) in &self.metadata {
            write_string(&mut out, key);
            out.extend(value.type_id().to_le_bytes());
            value.write(&mut out);
        }
        let mut offset = 0u64;
        for t in &self.tensors {
            write_string(&mut out, &t.name);
            out.extend((t.ne.len() as u32).to_le_bytes());
            t.ne.iter().for_each(|d| out.extend(d.to_le_bytes()));
            out.extend(t.type_id.to_le_bytes());
            out.extend(offset.to_le_bytes());
            offset = (offset + t.data.len() as u64).next_multiple_of(self.alignment);
        }
        for t in &self.tensors {
            pad_to(&mut out, self.alignment);
            out.extend(&t.data);
        }
        out
    }

    pub fn write(&self, path: &Path) {
        std::fs::write(path, self.to_bytes()).unwrap();
    }
}

fn pad_to(out: &mut Vec<u8>, alignment: u64) {
    out.resize((out.len() as u64).next_multiple_of(alignment) as usize, 0);
}

/// One Q4_1 block (ggml-common.h `block_q4_1`): f16 `d`, f16 `m`, 16 bytes of nibbles.
pub fn q4_1_block(d: u16, m: u16, nibbles: [u8; 32]) -> Vec<u8> {
    let mut block = d.to_le_bytes().to_vec();
    block.extend(m.to_le_bytes());
    block.extend((0..16).map(|i| nibbles[i] | nibbles[i + 16] << 4));
    block
}

/// Dimensions of [`tiny_llama`].
pub const HIDDEN: usize = 32;
pub const N_HEAD: usize = 2;
pub const N_HEAD_KV: usize = 1;
pub const HEAD_DIM: usize = 16;
pub const FFN: usize = 64;
pub const TOKENS: [&str; 6] = ["<|endoftext|>", "<|im_start|>", "a", "b", "Ġ", "ab"];
/// llama.cpp token types: 3 = control, 1 = normal.
pub const TOKEN_TYPES: [i32; 6] = [3, 3, 1, 1, 1, 1];
pub const VOCAB: usize = TOKENS.len();

/// Value `i` of every F32 tensor of [`tiny_llama`] except the embedding: `row * 1000 + column`
/// (torch order), so tests can see which stored row ended where.
pub fn row_col_values(rows: usize, cols: usize) -> Vec<f32> {
    (0..rows * cols)
        .map(|i| ((i / cols) * 1000 + i % cols) as f32)
        .collect()
}

/// A one-layer llama GGUF with a Q4_1 embedding and F32 everything else, tokenizer included.
/// With `lm_head`, it also has an untied `output.weight`.
pub fn tiny_llama(lm_head: bool) -> GgufBuilder {
    let f32_tensor = |name: &str, rows: usize, cols: usize| {
        let ne: &[u64] = if rows == 1 {
            &[cols as u64]
        } else {
            &[cols as u64, rows as u64]
        };
        Tensor::f32(name, ne, &row_col_values(rows, cols))
    };
    let q_rows = N_HEAD * HEAD_DIM;
    let kv_rows = N_HEAD_KV * HEAD_DIM;
    let builder = GgufBuilder::default()
        .kv("general.architecture", Value::str("llama"))
        .kv("general.name", Value::str("tiny"))
        .kv("llama.block_count", Value::U32(1))
        .kv("llama.context_length", Value::U32(128))
        .kv("llama.embedding_length", Value::U32(HIDDEN as u32))
        .kv("llama.feed_forward_length", Value::U32(FFN as u32))
        .kv("llama.attention.head_count", Value::U32(N_HEAD as u32))
        .kv(
            "llama.attention.head_count_kv",
            Value::U32(N_HEAD_KV as u32),
        )
        .kv("llama.rope.freq_base", Value::F32(100000.0))
        .kv("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5))
        .kv("tokenizer.ggml.model", Value::str("gpt2"))
        .kv("tokenizer.ggml.pre", Value::str("smollm"))
        .kv(
            "tokenizer.ggml.tokens",
            Value::StrArray(TOKENS.map(String::from).to_vec()),
        )
        .kv(
            "tokenizer.ggml.token_type",
            Value::I32Array(TOKEN_TYPES.to_vec()),
        )
        .kv("tokenizer.ggml.merges", Value::StrArray(vec!["a b".into()]))
        .kv("tokenizer.ggml.bos_token_id", Value::U32(1))
        .kv("tokenizer.ggml.eos_token_id", Value::U32(0))
        .kv("tokenizer.chat_template", Value::str("{{ messages }}"))
        .tensor(Tensor {
            name: "token_embd.weight".into(),
            ne: vec![HIDDEN as u64, VOCAB as u64],
            type_id: 3,
            data: (0..VOCAB)
                .flat_map(|row| embedding_row(row as u8))
                .collect(),
        })
        .tensor(f32_tensor("blk.0.attn_norm.weight", 1, HIDDEN))
        .tensor(f32_tensor("blk.0.attn_q.weight", q_rows, HIDDEN))
        .tensor(f32_tensor("blk.0.attn_k.weight", kv_rows, HIDDEN))
        .tensor(f32_tensor("blk.0.attn_v.weight", kv_rows, HIDDEN))
        .tensor(f32_tensor("blk.0.attn_output.weight", HIDDEN, q_rows))
        .tensor(f32_tensor("blk.0.ffn_norm.weight", 1, HIDDEN))
        .tensor(f32_tensor("blk.0.ffn_gate.weight", FFN, HIDDEN))
        .tensor(f32_tensor("blk.0.ffn_up.weight", FFN, HIDDEN))
        .tensor(f32_tensor("blk.0.ffn_down.weight", HIDDEN, FFN))
        .tensor(f32_tensor("output_norm.weight", 1, HIDDEN));
    if lm_head {
        builder.tensor(f32_tensor("output.weight", VOCAB, HIDDEN))
    } else {
        builder
    }
}

/// Embedding row `row` as one Q4_1 block: d = 0.5 (f16 0x3800), m = row (exact in f16), and
/// nibble `i % 16` at position `i`, so value `i` is `(i % 16) * 0.5 + row`.
pub fn embedding_row(row: u8) -> Vec<u8> {
    let m = half_of_small_int(row);
    q4_1_block(0x3800, m, std::array::from_fn(|i| (i % 16) as u8))
}

/// The f16 bit pattern of a small non-negative integer (0..=8), written out by hand.
fn half_of_small_int(n: u8) -> u16 {
    [
        0x0000, 0x3C00, 0x4000, 0x4200, 0x4400, 0x4500, 0x4600, 0x4700, 0x4800,
    ][n as usize]
}
