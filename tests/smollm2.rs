//! The real model: SmolLM2-135M-Instruct converted from the packaged GGUF, checked against
//! transformers 5.23 (fixtures from scripts/make_fixtures.py): last-position log-probs within
//! 1e-4 on 7 prompts and on a left-padded batch, greedy text, and tokenizer ids.
mod common;

use common::*;
use moebench_model::{Model, Tokenizer};
use serde_json::Value;
use std::sync::{Mutex, MutexGuard, OnceLock};
use tch::{Device, Kind, Tensor};

const TOL: f64 = 1e-4;

/// The model is loaded once per test binary; tch tensors are `Send` but not `Sync`, hence the lock.
fn model(test: &str) -> Option<MutexGuard<'static, (Model, Tokenizer)>> {
    static M: OnceLock<Mutex<(Model, Tokenizer)>> = OnceLock::new();
    let dir = smollm2_dir(test)?;
    let m = M.get_or_init(|| {
        let model = Model::load(&dir, Device::Cpu, Kind::Float).unwrap();
        Mutex::new((model, Tokenizer::from_dir(&dir).unwrap()))
    });
    Some(m.lock().unwrap_or_else(|e| e.into_inner()))
}

fn ids_of(v: &Value) -> Vec<i64> {
    serde_json::from_value(v.clone()).unwrap()
}

/// Checks `(id, logprob)` pairs against a log-softmax row.
fn check_pairs(row: &Tensor, pairs: &Value, what: &str) {
    for pair in pairs.as_array().unwrap() {
        let id = pair[0].as_i64().unwrap();
        let expected = pair[1].as_f64().unwrap();
        let got = f64::try_from(row.get(id)).unwrap();
        assert!(
            (got - expected).abs() <= TOL,
            "{what}: id {id}: {got} vs {expected}"
        );
    }
}

#[test]
fn last_position_logprobs_match_transformers() {
    let _lock = model_lock();
    let Some(guard) = model("last_position_logprobs_match_transformers") else {
        return;
    };
    let (model, tok) = &*guard;
    let _g = tch::no_grad_guard();
    let reference = fixture("smollm2/reference.json");
    let prompts = reference["prompts"].as_array().unwrap();
    assert!(prompts.len() >= 5);
    for p in prompts {
        let text = p["text"].as_str().unwrap();
        let ids = tok.encode(text, true).unwrap();
        assert_eq!(ids, ids_of(&p["input_ids"]), "token ids of {text:?}");
        let input = Tensor::from_slice(&ids).view([1, -1]);
        let logits = model
            .forward(&input, None, None)
            .get(0)
            .get(ids.len() as i64 - 1);
        let lse = f64::try_from(logits.logsumexp([-1], false)).unwrap();
        assert!(
            (lse - p["logsumexp"].as_f64().unwrap()).abs() <= TOL,
            "logsumexp of {text:?}"
        );
        let row = logits.log_softmax(-1, Kind::Float);
        check_pairs(&row, &p["top50"], text);
        let fixed: Vec<Value> = p["fixed_ids"]
            .as_array()
            .unwrap()
            .iter()
            .zip(p["fixed_logprobs"].as_array().unwrap())
            .map(|(i, l)| serde_json::json!([i, l]))
            .collect();
        check_pairs(&row, &Value::Array(fixed), text);
        // The top-50 ranking itself must agree.
        let (_, top) = row.topk(50, -1, true, true);
        let top: Vec<i64> = Vec::try_from(top).unwrap();
        let expected: Vec<i64> = p["top50"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x[0].as_i64().unwrap())
            .collect();
        assert_eq!(top[..10], expected[..10], "top-10 order of {text:?}");
    }
}

#[test]
fn left_padded_batch_matches_transformers() {
    let _lock = model_lock();
    let Some(guard) = model("left_padded_batch_matches_transformers") else {
        return;
    };
    let model = &guard.0;
    let _g = tch::no_grad_guard();
    let b = &fixture("smollm2/reference.json")["batch"];
    let rows: Vec<Vec<i64>> = serde_json::from_value(b["input_ids"].clone()).unwrap();
    let mask: Vec<Vec<i64>> = serde_json::from_value(b["attention_mask"].clone()).unwrap();
    let n = rows.len() as i64;
    let ids = Tensor::from_slice(&rows.concat()).view([n, -1]);
    let mask = Tensor::from_slice(&mask.concat()).view([n, -1]);
    let logits = model.forward(&ids, Some(&mask), None);
    let last = logits.size()[1] - 1;
    for (i, top) in b["top20"].as_array().unwrap().iter().enumerate() {
        let row = logits.get(i as i64).get(last).log_softmax(-1, Kind::Float);
        check_pairs(&row, top, &format!("batch row {i}"));
    }
}

#[test]
fn tokenizer_ids_match_on_multilingual_emoji_text() {
    let _lock = model_lock();
    let Some(guard) = model("tokenizer_ids_match_on_multilingual_emoji_text") else {
        return;
    };
    let tok = &guard.1;
    let t = &fixture("smollm2/reference.json")["tokenizer"];
    let text = t["text"].as_str().unwrap();
    assert_eq!(tok.encode(text, false).unwrap(), ids_of(&t["ids"]));
    assert_eq!(
        tok.encode(text, true).unwrap(),
        ids_of(&t["ids_add_special_tokens"])
    );
    assert_eq!(
        tok.decode(&ids_of(&t["ids"]), false).unwrap(),
        t["decoded"].as_str().unwrap()
    );
    assert_eq!(tok.bos_id, t["bos_token_id"].as_i64());
    assert_eq!(tok.eos_id, t["eos_token_id"].as_i64());
}

#[test]
fn cli_generate_says_paris_like_transformers() {
    let _lock = model_lock();
    if smollm2_dir("cli_generate_says_paris_like_transformers").is_none() {
        return;
    }
    let g = &fixture("smollm2/reference.json")["generate"];
    let out = moebench(&[
        "generate",
        SMOLLM2,
        "--device",
        "cpu",
        "--prompt",
        "The capital of France is",
        "--max-new-tokens",
        "20",
        "--ignore-eos",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.starts_with("The capital of France is Paris."),
        "{text}"
    );
    assert_eq!(
        text.trim_end_matches('\n'),
        g["full_text"].as_str().unwrap()
    );
}

#[test]
fn cli_logits_json_reports_ids_and_top_k() {
    let _lock = model_lock();
    if smollm2_dir("cli_logits_json_reports_ids_and_top_k").is_none() {
        return;
    }
    let p = &fixture("smollm2/reference.json")["prompts"][0];
    let out = moebench(&[
        "logits",
        SMOLLM2,
        "--device",
        "cpu",
        "--prompt",
        p["text"].as_str().unwrap(),
        "--top",
        "5",
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["input_ids"], p["input_ids"]);
    assert_eq!(v["commit"].as_str().unwrap().len(), 40);
    for (got, want) in v["top"]
        .as_array()
        .unwrap()
        .iter()
        .zip(p["top50"].as_array().unwrap())
    {
        assert_eq!(got["id"], want[0]);
        assert!((got["logprob"].as_f64().unwrap() - want[1].as_f64().unwrap()).abs() <= TOL);
    }
}

#[test]
fn cli_inspect_counts_smollm2_parameters() {
    let _lock = model_lock();
    if smollm2_dir("cli_inspect_counts_smollm2_parameters").is_none() {
        return;
    }
    let out = moebench(&["inspect", SMOLLM2, "--device", "cpu", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    // 134,515,008 = the parameter count transformers reports for SmolLM2-135M (tied head).
    assert_eq!(v["params"]["total"], 134_515_008);
    assert_eq!(v["family"], "llama");
}
