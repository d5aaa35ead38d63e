//! The evaluation engine on the real SmolLM2: batch-size invariance, the offline tasks, and bad
//! task files (one clear error, non-zero exit).
mod common;

use common::*;
use moebench_eval::{evaluate_task, EvalOptions, LanguageModel, LmSettings};
use moebench_model::{Model, Tokenizer};
use moebench_tasks::{Task, TaskIndex};
use std::path::Path;
use tch::{Device, Kind};

fn load_task(name: &str) -> Task {
    let index = TaskIndex::scan(&[repo_root().join("suites/tasks")]).unwrap();
    let spec = index.resolve(name).unwrap().tasks()[0].clone();
    Task::load(spec, &moebench_hub::HubConfig::from_env().unwrap(), None).unwrap()
}

/// Issue #3: batch size 1 vs 8 vs 32 gives identical accuracies and perplexities within 1e-5
/// relative (f32, CPU).
#[test]
fn results_do_not_depend_on_batch_size() {
    let _lock = model_lock();
    let Some(dir) = smollm2_dir("results_do_not_depend_on_batch_size") else {
        return;
    };
    let model = Model::load(&dir, Device::Cpu, Kind::Float).unwrap();
    let tok = Tokenizer::from_dir(&dir).unwrap();
    let opts = EvalOptions {
        limit: Some(24),
        fewshot_seed: 1234,
        bootstrap_iters: 100,
        ppl_protocol: None,
    };
    let tasks = [
        load_task("shakespeare_nextline"),
        load_task("shakespeare_sonnets"),
    ];
    let mut runs = Vec::new();
    for batch_size in [1, 8, 32] {
        // A small max_length makes the sonnets span several rolling windows.
        let settings = LmSettings {
            max_length: 64,
            batch_size,
            token_budget: 4096,
            prefix_cache: true,
            lookup_decoding: true,
        };
        let lm = LanguageModel::new(&model, &tok, settings);
        runs.push(
            tasks
                .iter()
                .map(|t| evaluate_task(&lm, t, &opts).unwrap())
                .collect::<Vec<_>>(),
        );
    }
    for other in &runs[1..] {
        for (a, b) in runs[0].iter().zip(other) {
            for (key, va) in &a.metrics {
                let vb = &b.metrics[key];
                if key.starts_with("acc") {
                    assert_eq!(va.value, vb.value, "{}: {key}", a.name);
                } else {
                    let rel = ((va.value - vb.value) / va.value).abs();
                    assert!(rel <= 1e-5, "{}: {key} differs by {rel:e} relative", a.name);
                }
            }
        }
    }
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_string_lossy().into_owned()
}

const DOCS: &str = "{\"q\": \"Two plus two?\", \"choices\": [\"four\", \"five\"], \"label\": 0}\n";

fn mc_task(extra: &str) -> String {
    format!(
        "task: bad_task\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: docs.jsonl\ntest_split: test\noutput_type: multiple_choice\ndoc_to_text: \"{{{{q}}}}\"\ndoc_to_choice: choices\ndoc_to_target: label\n{extra}"
    )
}

/// Runs `moebench eval` on a task file written into a scratch directory.
fn eval_bad_task(yaml: &str, docs: &str) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "docs.jsonl", docs);
    let task = write(dir.path(), "task.yaml", yaml);
    let out = dir.path().join("out");
    let output = moebench(&[
        "eval",
        SMOLLM2,
        "--device",
        "cpu",
        "--tasks",
        &task,
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(
        !out.join("results.json").exists(),
        "nothing may be written on error"
    );
    output
}

#[test]
fn bad_task_files_give_one_clear_error() {
    let _lock = model_lock();
    if smollm2_dir("bad_task_files_give_one_clear_error").is_none() {
        return;
    }
    let cases: [(&str, String, &str, &str); 6] = [
        ("unknown field", mc_task("doc_to_txet: oops\n"), DOCS, "doc_to_txet"),
        ("missing column", mc_task("").replace("{{q}}", "{{question}}"), DOCS, "question"),
        ("template syntax", mc_task("").replace("{{q}}", "{{q"), DOCS, "syntax error"),
        (
            "bad regex",
            mc_task("filter_list:\n  - name: f\n    filter:\n      - function: regex\n        regex_pattern: \"(unclosed\"\n      - function: take_first\n")
                .replace("output_type: multiple_choice", "output_type: generate_until")
                .replace("doc_to_choice: choices\n", "")
                .replace("doc_to_target: label", "doc_to_target: \"four\""),
            DOCS,
            "(unclosed",
        ),
        ("gold out of range", mc_task(""), "{\"q\": \"x\", \"choices\": [\"a\", \"b\"], \"label\": 7}\n", "7"),
        ("empty split", mc_task(""), "", "no documents"),
    ];
    for (what, yaml, docs, needle) in cases {
        let out = eval_bad_task(&yaml, docs);
        let err = stderr(&out);
        assert!(!out.status.success(), "{what}: expected failure");
        assert!(err.starts_with("error: "), "{what}: {err}");
        assert!(
            err.contains(needle),
            "{what}: error should mention `{needle}`: {err}"
        );
        assert!(
            err.contains("task.yaml") || err.contains("bad_task"),
            "{what}: error should name the task: {err}"
        );
        assert!(!err.contains("panicked"), "{what}: {err}");
    }
}

#[test]
fn unknown_field_error_has_line_and_column() {
    let _lock = model_lock();
    if smollm2_dir("unknown_field_error_has_line_and_column").is_none() {
        return;
    }
    let out = eval_bad_task(&mc_task("doc_to_txet: oops\n"), DOCS);
    let err = stderr(&out);
    // `doc_to_txet` is on line 11 of the generated file.
    assert!(err.contains(":11:1"), "{err}");
    assert!(
        err.contains("doc_to_text"),
        "should suggest the closest key: {err}"
    );
}

/// `--ppl-protocol gptq_concat:256` and `strided:256:128` on SmolLM2 over the first 20 sonnets
/// equal transformers' values (tests/fixtures/ppl_protocols, scripts/ppl_protocol_fixtures.py)
/// within 1e-4 relative, and the protocol is named in results.json.
#[test]
fn corpus_perplexity_protocols_match_transformers() {
    let _lock = model_lock();
    if smollm2_dir("corpus_perplexity_protocols_match_transformers").is_none() {
        return;
    }
    let reference: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join("tests/fixtures/ppl_protocols/reference.json"))
            .unwrap(),
    )
    .unwrap();
    for (protocol, named) in [
        ("gptq_concat:256", "gptq_concat(seqlen=256)"),
        ("strided:256:128", "strided(max_length=256,stride=128)"),
    ] {
        let out = tempfile::tempdir().unwrap();
        let result = moebench(&[
            "eval",
            SMOLLM2,
            "--device",
            "cpu",
            "--tasks",
            "shakespeare_sonnets",
            "--limit",
            "20",
            "--ppl-protocol",
            protocol,
            "--out",
            out.path().to_str().unwrap(),
        ]);
        assert!(result.status.success(), "{}", stderr(&result));
        let results: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(out.path().join("results.json")).unwrap(),
        )
        .unwrap();
        let task = &results["results"]["shakespeare_sonnets"];
        let ours = task["perplexity,none"].as_f64().unwrap();
        let theirs = reference[protocol].as_f64().unwrap();
        assert!(
            ((ours - theirs) / theirs).abs() < 1e-4,
            "{protocol}: moebench {ours} vs transformers {theirs}"
        );
        assert_eq!(
            results["moebench_ppl_protocols"]["shakespeare_sonnets"],
            named
        );
        // The default token budget is chosen from free memory and recorded.
        let config = &results["config"];
        assert!(
            config["token_budget"].as_u64().is_some_and(|b| b >= 1),
            "{config}"
        );
        assert!(
            config["token_budget_source"]
                .as_str()
                .is_some_and(|s| s.starts_with("auto")),
            "{config}"
        );
    }
    let bad = moebench(&[
        "eval",
        SMOLLM2,
        "--tasks",
        "shakespeare_sonnets",
        "--ppl-protocol",
        "gptq",
        "--out",
        "/tmp/never-written-moebench",
    ]);
    assert_clean_failure(&bad, "unknown perplexity protocol `gptq`");
}
