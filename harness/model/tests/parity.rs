//! Logit parity with transformers on tiny random-weight checkpoints of every supported family.
//! Fixtures: `tests/fixtures/tiny/<name>/` made by `scripts/make_fixtures.py` (transformers 5.23,
//! f32, CPU). Tolerance: max |Δ| ≤ 1e-4 on logits (issue #2); observed values are ~1e-6.
use moebench_model::generate::{greedy_batch, StopOnIds};
use moebench_model::Model;
use serde_json::Value;
use std::path::PathBuf;
use tch::{Device, Kind, Tensor};

const TOL: f64 = 1e-4;

fn fixture_dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/tiny")
        .join(name)
}

fn reference(name: &str) -> Value {
    let text = std::fs::read_to_string(fixture_dir(name).join("reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn tensor_i64(v: &Value) -> Tensor {
    let rows: Vec<Vec<i64>> = serde_json::from_value(v.clone()).unwrap();
    let n = rows.len() as i64;
    Tensor::from_slice(&rows.concat()).view([n, -1])
}

fn tensor_f32(v: &Value) -> Tensor {
    fn flatten(v: &Value, out: &mut Vec<f32>, shape: &mut Vec<i64>, depth: usize) {
        match v {
            Value::Array(a) => {
                if shape.len() == depth {
                    shape.push(a.len() as i64);
                }
                a.iter().for_each(|x| flatten(x, out, shape, depth + 1));
            }
            x => out.push(x.as_f64().unwrap() as f32),
        }
    }
    let (mut out, mut shape) = (Vec::new(), Vec::new());
    flatten(v, &mut out, &mut shape, 0);
    Tensor::from_slice(&out).view(shape.as_slice())
}

fn max_abs(a: &Tensor, b: &Tensor) -> f64 {
    f64::try_from((a - b).abs().max()).unwrap()
}

fn check_family(name: &str) {
    let _g = tch::no_grad_guard();
    let r = reference(name);
    let model = Model::load(&fixture_dir(name), Device::Cpu, Kind::Float).unwrap();

    let ids = tensor_i64(&Value::Array(vec![r["single"]["input_ids"].clone()]));
    let logits = model.forward(&ids, None, None).squeeze_dim(0);
    let d = max_abs(&logits, &tensor_f32(&r["single"]["logits"]));
    assert!(d <= TOL, "{name}: single-sequence logits differ by {d}");

    let batch = &r["batch"];
    let ids = tensor_i64(&batch["input_ids"]);
    let mask = tensor_i64(&batch["attention_mask"]);
    let logits = model.forward(&ids, Some(&mask), None);
    let real = mask.to_kind(Kind::Bool).unsqueeze(-1);
    let expected = tensor_f32(&batch["logits"]);
    let d = max_abs(&logits.masked_select(&real), &expected.masked_select(&real));
    assert!(d <= TOL, "{name}: left-padded batch logits differ by {d}");

    let gen = &r["generate"];
    let prompt: Vec<i64> = serde_json::from_value(gen["prompt_ids"].clone()).unwrap();
    let expected: Vec<i64> = serde_json::from_value(gen["new_ids"].clone()).unwrap();
    let got = greedy_batch(
        &model,
        std::slice::from_ref(&prompt),
        expected.len(),
        &mut StopOnIds(vec![]),
    );
    assert_eq!(got[0], expected, "{name}: greedy generation with KV cache");
    let longer: Vec<i64> = [7, 8, 9].iter().chain(&prompt).copied().collect();
    let got = greedy_batch(
        &model,
        &[prompt, longer],
        expected.len(),
        &mut StopOnIds(vec![]),
    );
    assert_eq!(
        got[0], expected,
        "{name}: left-padded greedy generation with KV cache"
    );
}

macro_rules! family_tests {
    ($($test:ident => $name:literal),* $(,)?) => {
        $(#[test] fn $test() { check_family($name); })*
    };
}

family_tests! {
    llama_tied => "llama",
    llama3_rope_scaling => "llama3",
    qwen2_attention_bias => "qwen2",
    qwen3_qk_norm => "qwen3",
    mixtral => "mixtral",
    qwen2_moe_shared_expert => "qwen2_moe",
    qwen3_moe => "qwen3_moe",
    olmoe => "olmoe",
}

#[test]
fn router_logits_match_for_moe_families() {
    let _g = tch::no_grad_guard();
    for name in ["mixtral", "qwen2_moe", "qwen3_moe", "olmoe"] {
        let r = reference(name);
        let model = Model::load(&fixture_dir(name), Device::Cpu, Kind::Float).unwrap();
        let ids = tensor_i64(&Value::Array(vec![r["single"]["input_ids"].clone()]));
        let mut rec = RouterLogits::default();
        let mut opts = moebench_model::ForwardOptions {
            observer: Some(&mut rec),
            route_override: None,
        };
        let _ = model.forward_hidden(&ids, None, None, &mut opts);
        let layers: Vec<usize> =
            serde_json::from_value(r["router_logits"]["layers"].clone()).unwrap();
        let expected = tensor_f32(&r["router_logits"]["logits"]);
        assert_eq!(
            rec.0.iter().map(|(l, _)| *l).collect::<Vec<_>>(),
            layers,
            "{name}"
        );
        for (i, (_, got)) in rec.0.iter().enumerate() {
            let d = max_abs(&got.squeeze_dim(0), &expected.get(i as i64));
            assert!(
                d <= TOL,
                "{name}: router logits of layer {} differ by {d}",
                layers[i]
            );
        }
    }
}

#[derive(Default)]
struct RouterLogits(Vec<(usize, Tensor)>);

impl moebench_model::observer::ForwardObserver for RouterLogits {
    fn on_moe(
        &mut self,
        layer: usize,
        _moe: &moebench_model::moe::MoeLayer,
        event: &moebench_model::observer::MoeEvent<'_>,
    ) {
        self.0.push((layer, event.router_logits.shallow_clone()));
    }
}
