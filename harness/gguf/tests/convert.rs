//! A synthetic one-layer llama GGUF through the converter.

mod common;

use std::path::Path;

use common::{row_col_values, tiny_llama, FFN, HEAD_DIM, HIDDEN, N_HEAD, N_HEAD_KV, VOCAB};
use moebench_gguf::convert::OUTPUT_FILES;
use moebench_gguf::{convert_llama_gguf, Error};
use safetensors::{Dtype, SafeTensors};
use serde_json::{json, Value};

/// Converts `builder`'s file into `<dir>/out` and returns the output directory.
fn convert(dir: &Path, builder: &common::GgufBuilder) -> std::path::PathBuf {
    let gguf = dir.join("tiny.gguf");
    builder.write(&gguf);
    let out = dir.join("out");
    convert_llama_gguf(&gguf, &out).unwrap();
    out
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

/// Stored row `s` of a Q/K tensor with `n_head` heads ends up at output row `perm(s)`: the
/// reference permutation, written out from numpy's `reshape(n, d, 2, c).swapaxes(1, 2)`.
fn unpermuted_rows(n_head: usize, rows: usize) -> Vec<usize> {
    let half = rows / n_head / 2;
    let mut order = Vec::new();
    for head in 0..n_head {
        for j in 0..2 {
            for i in 0..half {
                order.push(head * 2 * half + 2 * i + j); // output row <- this stored row
            }
        }
    }
    order
}

#[test]
fn tiny_llama_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let out = convert(dir.path(), &tiny_llama(false));

    let mut written: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    written.sort();
    assert_eq!(written, OUTPUT_FILES);

    let bytes = std::fs::read(out.join("model.safetensors")).unwrap();
    let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
    assert_eq!(
        header
            .metadata()
            .as_ref()
            .and_then(|m| m.get("format"))
            .map(String::as_str),
        Some("pt")
    );
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let names = st.names();
    assert_eq!(names.len(), 11, "{names:?}"); // 9 per layer + embedding + norm; lm_head is tied
    assert!(!names.contains(&"lm_head.weight"));

    let embed = st.tensor("model.embed_tokens.weight").unwrap();
    assert_eq!(
        (embed.dtype(), embed.shape()),
        (Dtype::F32, &[VOCAB, HIDDEN][..])
    );
    // Row r is one Q4_1 block with d = 0.5, m = r and nibble i % 16 at position i.
    let expected: Vec<f32> = (0..VOCAB * HIDDEN)
        .map(|i| (i % HIDDEN % 16) as f32 * 0.5 + (i / HIDDEN) as f32)
        .collect();
    assert_eq!(f32s(embed.data()), expected);

    // Plain tensors keep their bytes; ggml's ne = [cols, rows] becomes torch's [rows, cols].
    let down = st.tensor("model.layers.0.mlp.down_proj.weight").unwrap();
    assert_eq!(down.shape(), [HIDDEN, FFN]);
    assert_eq!(f32s(down.data()), row_col_values(HIDDEN, FFN));
    let norm = st.tensor("model.layers.0.input_layernorm.weight").unwrap();
    assert_eq!(norm.shape(), [HIDDEN]);

    // Q (2 heads) and K (1 KV head) rows are un-permuted; V is not.
    for (name, n_head) in [("q_proj", N_HEAD), ("k_proj", N_HEAD_KV)] {
        let t = st
            .tensor(&format!("model.layers.0.self_attn.{name}.weight"))
            .unwrap();
        let rows = n_head * HEAD_DIM;
        assert_eq!(t.shape(), [rows, HIDDEN]);
        let values = f32s(t.data());
        for (out_row, stored_row) in unpermuted_rows(n_head, rows).into_iter().enumerate() {
            assert_eq!(
                values[out_row * HIDDEN],
                (stored_row * 1000) as f32,
                "{name} row {out_row}"
            );
        }
    }
    let v = st.tensor("model.layers.0.self_attn.v_proj.weight").unwrap();
    assert_eq!(f32s(v.data()), row_col_values(N_HEAD_KV * HEAD_DIM, HIDDEN));
}

#[test]
fn configs_follow_transformers() {
    let dir = tempfile::tempdir().unwrap();
    let out = convert(dir.path(), &tiny_llama(false));
    let config = read_json(&out.join("config.json"));
    let expected = json!({
        "_model_name_or_path": "tiny",
        "architectures": ["LlamaForCausalLM"],
        "attention_bias": false,
        "attention_dropout": 0.0,
        "bos_token_id": 1,
        "dtype": "float32",
        "eos_token_id": 0,
        "head_dim": HEAD_DIM,
        "hidden_act": "silu",
        "hidden_size": HIDDEN,
        "initializer_range": 0.02,
        "intermediate_size": FFN,
        "max_position_embeddings": 128,
        "mlp_bias": false,
        "model_type": "llama",
        "num_attention_heads": N_HEAD,
        "num_hidden_layers": 1,
        "num_key_value_heads": N_HEAD_KV,
        "pretraining_tp": 1,
        "rms_norm_eps": f64::from(1e-5f32),
        "rope_parameters": {"rope_theta": 100000.0, "rope_type": "default"},
        "tie_word_embeddings": true,
        "transformers_version": "5.23.0",
        "use_cache": true,
        "vocab_size": VOCAB,
    });
    assert_eq!(config, expected);
    let generation = read_json(&out.join("generation_config.json"));
    assert_eq!(generation["bos_token_id"], 1);
    assert_eq!(generation["eos_token_id"], 0);
    assert!(generation.get("pad_token_id").is_none());
}

#[test]
fn tokenizer_follows_transformers() {
    let dir = tempfile::tempdir().unwrap();
    let out = convert(dir.path(), &tiny_llama(false));
    let tokenizer = read_json(&out.join("tokenizer.json"));
    let added: Vec<_> = tokenizer["added_tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["id"].clone(), t["content"].clone(), t["special"].clone()))
        .collect();
    assert_eq!(
        added,
        [
            (json!(0), json!("<|endoftext|>"), json!(true)),
            (json!(1), json!("<|im_start|>"), json!(true))
        ]
    );
    assert_eq!(tokenizer["pre_tokenizer"]["type"], "ByteLevel");
    assert_eq!(tokenizer["pre_tokenizer"]["add_prefix_space"], false);
    assert_eq!(tokenizer["decoder"]["add_prefix_space"], true);
    assert_eq!(tokenizer["normalizer"], Value::Null);
    let model = &tokenizer["model"];
    assert_eq!(model["type"], "BPE");
    assert_eq!(model["merges"], json!([["a", "b"]]));
    assert_eq!(model["vocab"]["ab"], 5);
    assert_eq!(model["vocab"]["Ġ"], 4);

    let config = read_json(&out.join("tokenizer_config.json"));
    assert_eq!(config["bos_token"], "<|im_start|>");
    assert_eq!(config["eos_token"], "<|endoftext|>");
    assert_eq!(config["chat_template"], "{{ messages }}");
    assert!(config.get("pad_token").is_none());
}

#[test]
fn untied_lm_head_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let out = convert(dir.path(), &tiny_llama(true));
    let bytes = std::fs::read(out.join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let lm_head = st.tensor("lm_head.weight").unwrap();
    assert_eq!(lm_head.shape(), [VOCAB, HIDDEN]);
    assert_eq!(f32s(lm_head.data()), row_col_values(VOCAB, HIDDEN));
    assert_eq!(
        read_json(&out.join("config.json"))["tie_word_embeddings"],
        false
    );
}

#[test]
fn missing_tensor_is_reported() {
    let mut builder = tiny_llama(false);
    builder.tensors.retain(|t| t.name != "blk.0.ffn_up.weight");
    let dir = tempfile::tempdir().unwrap();
    let gguf = dir.path().join("tiny.gguf");
    builder.write(&gguf);
    let err = convert_llama_gguf(&gguf, &dir.path().join("out")).unwrap_err();
    assert!(
        matches!(&err, Error::Tensor { tensor, .. } if tensor == "model.layers.0.mlp.up_proj.weight")
    );
    assert!(err.to_string().ends_with("missing from the GGUF"), "{err}");
}

#[test]
fn unsupported_tensor_type_is_reported() {
    let mut builder = tiny_llama(false);
    let norm = builder
        .tensors
        .iter_mut()
        .find(|t| t.name == "output_norm.weight")
        .unwrap();
    // 32 I32 values take the same 128 bytes as 32 F32 ones, but have no dequantiser.
    norm.type_id = 26;
    let dir = tempfile::tempdir().unwrap();
    let gguf = dir.path().join("tiny.gguf");
    builder.write(&gguf);
    let err = convert_llama_gguf(&gguf, &dir.path().join("out")).unwrap_err();
    assert!(
        matches!(
            err,
            Error::UnsupportedType {
                id: 26,
                name: "I32",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err
        .to_string()
        .ends_with("tensor \"output_norm.weight\": ggml type 26 (I32) is not supported"));
}

#[test]
fn other_architectures_are_refused() {
    let mut builder = tiny_llama(false);
    builder.metadata[0].1 = common::Value::str("gemma3");
    let dir = tempfile::tempdir().unwrap();
    let gguf = dir.path().join("tiny.gguf");
    builder.write(&gguf);
    let err = convert_llama_gguf(&gguf, &dir.path().join("out")).unwrap_err();
    assert!(
        err.to_string()
            .ends_with("cannot convert: architecture \"gemma3\" (only \"llama\" is converted)"),
        "{err}"
    );
}
