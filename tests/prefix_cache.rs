//! Issue #14: the prefix KV cache changes no result users compare, on the real SmolLM2 — zero-shot
//! multiple choice (a context shared by its choices), MMLU 5-shot (`first_n` few-shot examples:
//! one preamble shared by every document of a subject) and rolling perplexity — and
//! `--no-prefix-cache` is recorded in results.json. (Exactness against lm-eval with the cache on
//! is tests/lm_eval_parity.rs; every family's bound is harness/eval/tests/prefix_cache.rs.)
mod common;

use common::*;
use moebench_eval::{evaluate_task, EvalOptions, LanguageModel, LmSettings, PrefixCache};
use moebench_model::{Model, Tokenizer};
use moebench_tasks::{Task, TaskIndex};
use serde_json::Value;
use tch::{Device, Kind};

/// |Δ log-likelihood| of one request, cache on vs off (f32; observed ~1e-6).
const LL_BOUND: f64 = 1e-4;
/// Relative bound on perplexities (the issue's).
const PPL_REL: f64 = 1e-5;

fn load_task(name: &str, num_fewshot: Option<usize>) -> Task {
    let index = TaskIndex::scan(&[repo_root().join("suites/tasks")]).unwrap();
    let spec = index.resolve(name).unwrap().tasks()[0].clone();
    Task::load(
        spec,
        &moebench_hub::HubConfig::from_env().unwrap(),
        num_fewshot,
    )
    .unwrap()
}

#[test]
fn prefix_cache_changes_no_result() {
    let _lock = model_lock();
    let Some(dir) = smollm2_dir("prefix_cache_changes_no_result") else {
        return;
    };
    let model = Model::load(&dir, Device::Cpu, Kind::Float).unwrap();
    let tok = Tokenizer::from_dir(&dir).unwrap();
    // (task, few-shot override, limit, batch size, max_length)
    let mut cases = vec![
        ("shakespeare_nextline", None, 24, 8, 2048),
        ("shakespeare_sonnets", None, 8, 4, 64),
    ];
    if repo_root().join("../shared/datasets/mmlu").is_dir() {
        cases.push(("mmlu_shared_anatomy", Some(5), 12, 4, 2048));
    } else {
        eprintln!(
            "SKIP prefix_cache_changes_no_result (MMLU 5-shot): ../shared/datasets is absent"
        );
    }
    for (name, shots, limit, batch_size, max_length) in cases {
        let task = load_task(name, shots);
        let opts = EvalOptions {
            limit: Some(limit),
            fewshot_seed: 1234,
            bootstrap_iters: 100,
            ppl_protocol: None,
        };
        let [on, off] = [true, false].map(|prefix_cache| {
            let settings = LmSettings {
                max_length,
                batch_size,
                token_budget: 4096,
                prefix_cache,
                lookup_decoding: prefix_cache,
            };
            let lm = LanguageModel::new(&model, &tok, settings);
            assert_eq!(
                lm.prefix_cache(),
                if prefix_cache {
                    PrefixCache::On
                } else {
                    PrefixCache::Off
                }
            );
            evaluate_task(&lm, &task, &opts).unwrap()
        });
        assert!(!on.metrics.is_empty(), "{name}");
        for (key, a) in &on.metrics {
            let b = off.metrics[key].value;
            if key.starts_with("acc") || key.starts_with("exact_match") {
                assert_eq!(a.value, b, "{name}: {key}");
            } else {
                let rel = ((a.value - b) / b).abs();
                assert!(rel <= PPL_REL, "{name}: {key} differs by {rel:e} relative");
            }
        }
        let mut worst: f64 = 0.0;
        for (a, b) in on.samples.iter().zip(&off.samples) {
            assert_eq!(a.prompt_hash, b.prompt_hash, "{name}");
            for (ra, rb) in a.responses.iter().zip(&b.responses) {
                let (Value::Array(ra), Value::Array(rb)) = (ra, rb) else {
                    panic!("{name}: scored responses are arrays");
                };
                worst = worst.max((ra[0].as_f64().unwrap() - rb[0].as_f64().unwrap()).abs());
                assert_eq!(&ra[1..], &rb[1..], "{name}: greediness / token count");
            }
        }
        eprintln!("{name}: max |Δ loglikelihood| cache on vs off = {worst:.2e}");
        assert!(worst <= LL_BOUND, "{name}: {worst:e}");
    }
}

#[test]
fn no_prefix_cache_flag_is_recorded() {
    let _lock = model_lock();
    if smollm2_dir("no_prefix_cache_flag_is_recorded").is_none() {
        return;
    }
    let mut accs = Vec::new();
    for (flag, recorded) in [(None, "on"), (Some("--no-prefix-cache"), "off")] {
        let out = tempfile::tempdir().unwrap();
        let mut args = vec![
            "eval",
            SMOLLM2,
            "--device",
            "cpu",
            "--tasks",
            "shakespeare_nextline",
            "--limit",
            "6",
            "--out",
            out.path().to_str().unwrap(),
        ];
        args.extend(flag);
        let result = moebench(&args);
        assert!(result.status.success(), "{}", stderr(&result));
        let results: Value = serde_json::from_str(
            &std::fs::read_to_string(out.path().join("results.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(results["config"]["prefix_cache"], recorded);
        accs.push(results["results"]["shakespeare_nextline"]["acc,none"].clone());
    }
    assert_eq!(accs[0], accs[1]);
}
