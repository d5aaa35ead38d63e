//! GGUF tensors → `model.safetensors`.
//!
//! Three things separate a GGUF tensor from its transformers counterpart:
//! 1. the name: gguf-py's `TensorNameMap` for llama, inverted (transformers'
//!    `get_gguf_hf_weights_map`), see [`LAYER_TENSORS`] and [`OUTER_TENSORS`];
//! 2. the shape: ggml lists `ne` fastest dimension first, torch slowest first, so the dimensions
//!    are reversed and the bytes stay in place;
//! 3. Q and K rows: llama.cpp's `convert_hf_to_gguf.py` (`LlamaModel.permute`) interleaves the two
//!    rotary halves of each head for its rope kernel. transformers undoes it in
//!    `LlamaTensorProcessor._reverse_permute_weights`:
//!    `w.reshape(n_head, rows / n_head / 2, 2, cols).swapaxes(1, 2).reshape(rows, cols)`, with
//!    `n_head` = attention heads for Q and KV heads for K. That is a pure row permutation, so each
//!    row is dequantised straight into its final place ([`RowOrder`]).
//!
//! Tensors are dequantised lazily, one at a time, while the file is written, so memory stays at
//! about the size of the largest tensor.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use safetensors::{Dtype, View};

use super::LlamaParams;
use crate::dequant::Dequantizer;
use crate::error::{Error, Result};
use crate::gguf::{GgufFile, TensorInfo};

/// A dimension of a llama weight, resolved against the config by [`Dim::size`].
#[derive(Clone, Copy, Debug)]
enum Dim {
    Vocab,
    Hidden,
    Ffn,
    /// `num_attention_heads * head_dim`
    QRows,
    /// `num_key_value_heads * head_dim`
    KvRows,
}

impl Dim {
    fn size(self, p: &LlamaParams) -> usize {
        match self {
            Self::Vocab => p.vocab_size,
            Self::Hidden => p.hidden_size,
            Self::Ffn => p.intermediate_size,
            Self::QRows => p.n_head * p.head_dim,
            Self::KvRows => p.n_head_kv * p.head_dim,
        }
    }
}

/// Per-layer tensors: GGUF name (between `blk.N.` and `.weight`), transformers module path, and
/// torch shape.
const LAYER_TENSORS: [(&str, &str, &[Dim]); 9] = [
    ("attn_norm", "input_layernorm", &[Dim::Hidden]),
    ("attn_q", "self_attn.q_proj", &[Dim::QRows, Dim::Hidden]),
    ("attn_k", "self_attn.k_proj", &[Dim::KvRows, Dim::Hidden]),
    ("attn_v", "self_attn.v_proj", &[Dim::KvRows, Dim::Hidden]),
    (
        "attn_output",
        "self_attn.o_proj",
        &[Dim::Hidden, Dim::QRows],
    ),
    ("ffn_norm", "post_attention_layernorm", &[Dim::Hidden]),
    ("ffn_gate", "mlp.gate_proj", &[Dim::Ffn, Dim::Hidden]),
    ("ffn_up", "mlp.up_proj", &[Dim::Ffn, Dim::Hidden]),
    ("ffn_down", "mlp.down_proj", &[Dim::Hidden, Dim::Ffn]),
];

/// Tensors outside the layers: GGUF name, transformers name, torch shape.
const OUTER_TENSORS: [(&str, &str, &[Dim]); 3] = [
    (
        "token_embd.weight",
        "model.embed_tokens.weight",
        &[Dim::Vocab, Dim::Hidden],
    ),
    ("output_norm.weight", "model.norm.weight", &[Dim::Hidden]),
    (
        "output.weight",
        "lm_head.weight",
        &[Dim::Vocab, Dim::Hidden],
    ),
];

/// Writes every tensor of `gguf`, renamed and un-permuted, to `path` as f32 safetensors with
/// metadata `{"format": "pt"}` (what transformers' `save_pretrained` writes). The safetensors
/// crate orders tensors by name.
pub(super) fn write_safetensors(gguf: &GgufFile, params: &LlamaParams, path: &Path) -> Result<()> {
    let tensors = plan(gguf, params)?;
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::serialize_to_file(tensors, Some(metadata), path).map_err(|source| {
        Error::Safetensors {
            path: path.into(),
            source,
        }
    })
}

/// Maps every GGUF tensor to its transformers name and checks that exactly the expected set, with
/// the expected shapes, is present.
fn plan<'a>(gguf: &'a GgufFile, params: &LlamaParams) -> Result<BTreeMap<String, HfTensor<'a>>> {
    let expected = expected_shapes(params);
    let mut planned = BTreeMap::new();
    for info in gguf.tensors() {
        let error = |problem: String| Error::Tensor {
            path: gguf.path().into(),
            tensor: info.name.clone(),
            problem,
        };
        let name = hf_name(&info.name)
            .filter(|name| expected.contains_key(name))
            .ok_or_else(|| error("not part of a llama model with this config".into()))?;
        let shape = info.torch_shape();
        if shape != expected[&name] {
            return Err(error(format!(
                "shape {shape:?}, expected {:?}",
                expected[&name]
            )));
        }
        let tensor = HfTensor::new(gguf, info, params)?;
        if planned.insert(name, tensor).is_some() {
            return Err(error("appears twice".into()));
        }
    }
    match expected.keys().find(|name| !planned.contains_key(*name)) {
        Some(missing) => Err(Error::Tensor {
            path: gguf.path().into(),
            tensor: missing.clone(),
            problem: "missing from the GGUF".into(),
        }),
        None => Ok(planned),
    }
}

/// The transformers name of a GGUF tensor, if it has one.
fn hf_name(gguf_name: &str) -> Option<String> {
    if let Some((_, hf, _)) = OUTER_TENSORS.iter().find(|(gguf, ..)| *gguf == gguf_name) {
        return Some(hf.to_string());
    }
    let (layer, part) = gguf_name.strip_prefix("blk.")?.split_once('.')?;
    let part = part.strip_suffix(".weight")?;
    let (_, module, _) = LAYER_TENSORS.iter().find(|(gguf, ..)| *gguf == part)?;
    Some(format!("model.layers.{layer}.{module}.weight"))
}

/// Every tensor `LlamaForCausalLM` loads, with its torch shape; `lm_head.weight` only when the
/// embeddings are not tied.
fn expected_shapes(p: &LlamaParams) -> BTreeMap<String, Vec<usize>> {
    let shape = |dims: &[Dim]| dims.iter().map(|d| d.size(p)).collect::<Vec<_>>();
    let outer = OUTER_TENSORS
        .iter()
        .filter(|(_, hf, _)| *hf != "lm_head.weight" || !p.tied_embeddings)
        .map(|(_, hf, dims)| (hf.to_string(), shape(dims)));
    let layers = (0..p.n_layer).flat_map(|layer| {
        LAYER_TENSORS.iter().map(move |(_, module, dims)| {
            (format!("model.layers.{layer}.{module}.weight"), shape(dims))
        })
    });
    outer.chain(layers).collect()
}

/// Where each stored row goes in the output.
#[derive(Clone, Copy, Debug)]
enum RowOrder {
    Identity,
    /// transformers' reverse permute: within each head of `2 * half` rows, stored row `2i + j`
    /// (`j` in 0..2) becomes row `j * half + i`.
    UnpermuteHeads {
        half: usize,
    },
}

impl RowOrder {
    fn for_tensor(gguf: &GgufFile, info: &TensorInfo, params: &LlamaParams) -> Result<Self> {
        let n_head = if info.name.ends_with(".attn_q.weight") {
            params.n_head
        } else if info.name.ends_with(".attn_k.weight") {
            params.n_head_kv
        } else {
            return Ok(Self::Identity);
        };
        let rows = info.torch_shape()[0];
        if !rows.is_multiple_of(2 * n_head) {
            return Err(Error::Tensor {
                path: gguf.path().into(),
                tensor: info.name.clone(),
                problem: format!("{rows} rows do not split into {n_head} heads of rotary pairs"),
            });
        }
        Ok(Self::UnpermuteHeads {
            half: rows / n_head / 2,
        })
    }

    fn destination(self, row: usize) -> usize {
        match self {
            Self::Identity => row,
            Self::UnpermuteHeads { half } => {
                let (head, within) = (row / (2 * half), row % (2 * half));
                head * 2 * half + (within % 2) * half + within / 2
            }
        }
    }
}

/// A GGUF tensor viewed as the f32 tensor transformers would hold; dequantised on demand.
struct HfTensor<'a> {
    shape: Vec<usize>,
    data: &'a [u8],
    dequantizer: Dequantizer,
    row_order: RowOrder,
    row_len: usize,
}

impl<'a> HfTensor<'a> {
    fn new(gguf: &'a GgufFile, info: &TensorInfo, params: &LlamaParams) -> Result<Self> {
        let ty = info.ggml_type;
        let dequantizer = Dequantizer::new(ty).ok_or_else(|| Error::UnsupportedType {
            path: gguf.path().into(),
            tensor: info.name.clone(),
            id: ty.id(),
            name: ty.name(),
        })?;
        Ok(Self {
            shape: info.torch_shape(),
            data: gguf.tensor_data(info),
            dequantizer,
            row_order: RowOrder::for_tensor(gguf, info, params)?,
            row_len: info.ne.first().map_or(1, |&n| n as usize),
        })
    }

    fn n_elements(&self) -> usize {
        self.shape.iter().product()
    }
}

impl View for HfTensor<'_> {
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }

    fn shape(&self) -> &[usize] {
        &self.shape
    }

    fn data(&self) -> Cow<'_, [u8]> {
        let mut values = vec![0f32; self.n_elements()];
        let n_rows = values.len() / self.row_len;
        let row_bytes = self.data.len() / n_rows;
        for (row, bytes) in self.data.chunks_exact(row_bytes).enumerate() {
            let start = self.row_order.destination(row) * self.row_len;
            self.dequantizer
                .run(bytes, &mut values[start..start + self.row_len]);
        }
        let mut out = Vec::with_capacity(self.data_len());
        for value in values {
            out.extend_from_slice(&value.to_le_bytes());
        }
        Cow::Owned(out)
    }

    fn data_len(&self) -> usize {
        self.n_elements() * std::mem::size_of::<f32>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gguf_names_map_to_transformers_names() {
        let cases = [
            ("token_embd.weight", "model.embed_tokens.weight"),
            ("output_norm.weight", "model.norm.weight"),
            ("output.weight", "lm_head.weight"),
            (
                "blk.0.attn_q.weight",
                "model.layers.0.self_attn.q_proj.weight",
            ),
            (
                "blk.12.attn_output.weight",
                "model.layers.12.self_attn.o_proj.weight",
            ),
            (
                "blk.3.ffn_norm.weight",
                "model.layers.3.post_attention_layernorm.weight",
            ),
            (
                "blk.29.ffn_down.weight",
                "model.layers.29.mlp.down_proj.weight",
            ),
        ];
        for (gguf, hf) in cases {
            assert_eq!(hf_name(gguf).as_deref(), Some(hf), "{gguf}");
        }
        assert_eq!(hf_name("rope_freqs.weight"), None);
        assert_eq!(hf_name("blk.0.attn_q.bias"), None);
    }

    /// The permutation, checked against numpy's
    /// `np.arange(12).reshape(2, 3, 2).swapaxes(1, 2).reshape(12)` (2 heads, 3 pairs each):
    /// `[0, 2, 4, 1, 3, 5, 6, 8, 10, 7, 9, 11]` — output row r holds stored row numpy[r].
    #[test]
    fn unpermute_matches_numpy() {
        let order = RowOrder::UnpermuteHeads { half: 3 };
        let numpy = [0, 2, 4, 1, 3, 5, 6, 8, 10, 7, 9, 11];
        for (out_row, stored_row) in numpy.into_iter().enumerate() {
            assert_eq!(order.destination(stored_row), out_row);
        }
    }
}
