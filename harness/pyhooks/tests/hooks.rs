//! Python hooks end to end on small task folders: `process_docs` on a real
//! `datasets.Dataset`, `!function` fields, `process_results`, metric and aggregation
//! functions, custom and class filters, `fewshot_config.samples` as a function, and import
//! errors that name the hook and its YAML line.
//!
//! They need a Python environment with `datasets` (and `lm_eval` for its registered filters):
//! `MOEBENCH_PYTHON`, else the repository's `.venv-hooks` (`make hook-venv`); without one,
//! each test prints `SKIP` and returns, as it does in a build without embedded Python.

use moebench_hub::HubConfig;
use moebench_tasks::{
    build_instances, load_yaml, score_docs, LoadedYaml, Request, Response, SampleScore, Task,
};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// Points the hook runtime at a usable environment, or says why the test is skipped.
fn python_env(test: &str) -> bool {
    if !moebench_pyhooks::EMBEDS_PYTHON {
        eprintln!("SKIP {test}: built without Python hooks (moebench-pyhooks' `embed` feature)");
        return false;
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv-hooks/bin/python");
    let python = match std::env::var_os("MOEBENCH_PYTHON") {
        Some(python) => PathBuf::from(python),
        None if venv.exists() => venv,
        None => {
            eprintln!("SKIP {test}: no MOEBENCH_PYTHON and no .venv-hooks (run `make hook-venv`)");
            return false;
        }
    };
    let has = |module: &str| {
        std::process::Command::new(&python)
            .args(["-c", &format!("import {module}")])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !has("datasets") || !has("lm_eval") {
        eprintln!(
            "SKIP {test}: {} lacks `datasets` or `lm_eval`",
            python.display()
        );
        return false;
    }
    // Every test in this binary uses the same environment.
    std::env::set_var("MOEBENCH_PYTHON", &python);
    moebench_pyhooks::install();
    true
}

fn hub() -> HubConfig {
    HubConfig::from_lookup(|var| (var == "HF_HUB_CACHE").then(|| "/nonexistent".to_owned()))
        .unwrap()
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

fn load(dir: &Path, shots: usize) -> Task {
    let LoadedYaml::Task(spec) = load_yaml(&dir.join("task.yaml")).unwrap() else {
        panic!("not a task")
    };
    Task::load(spec, &hub(), Some(shots)).unwrap()
}

const ROWS: &str = r#"{"q": "2+2", "a": "4", "options": ["3", "4", "5"], "n": 1}
{"q": "3+3", "a": "6", "options": ["6", "7", "8"], "n": 0}
{"q": "1+1", "a": "2", "options": ["1", "0", "2"], "n": 2}
"#;

#[test]
fn process_docs_fields_and_process_results_run_in_python() {
    if !python_env("process_docs_fields_and_process_results_run_in_python") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "test.jsonl", ROWS);
    write(
        dir.path(),
        "utils.py",
        r#"
import datasets

def process_docs(dataset: datasets.Dataset) -> datasets.Dataset:
    assert isinstance(dataset, datasets.Dataset)
    return dataset.map(lambda doc: {"question": "Q: " + doc["q"] + " =", "gold": doc["n"]})

def doc_to_choice(doc):
    return [" " + o for o in doc["options"]]

def process_results(doc, results):
    lls = [ll for ll, _ in results]
    best = max(range(len(lls)), key=lls.__getitem__)
    return {"acc": float(best == doc["gold"]), "margin": lls[doc["gold"]] - min(lls)}
"#,
    );
    write(
        dir.path(),
        "task.yaml",
        "task: hooked\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: test.jsonl\n\
         test_split: test\noutput_type: multiple_choice\nprocess_docs: !function utils.process_docs\n\
         doc_to_text: question\ndoc_to_target: gold\ndoc_to_choice: !function utils.doc_to_choice\n\
         target_delimiter: \"\"\nprocess_results: !function utils.process_results\n\
         metric_list:\n  - metric: acc\n    aggregation: mean\n",
    );
    let task = load(dir.path(), 0);
    assert_eq!(task.eval_docs()[0]["question"], "Q: 2+2 =");
    // dataset.map keeps the original columns first, then adds the new ones.
    let keys: Vec<&String> = task.eval_docs()[0].as_object().unwrap().keys().collect();
    assert_eq!(keys, ["q", "a", "options", "n", "question", "gold"]);
    let instances = build_instances(&task, 1234, None).unwrap();
    assert_eq!(
        instances[0].requests[1],
        Request::Loglikelihood {
            context: "Q: 2+2 =".into(),
            continuation: " 4".into()
        }
    );
    let responses: Vec<Vec<Response>> =
        [[-2.0, -1.0, -3.0], [-1.5, -0.5, -4.0], [-2.0, -2.5, -0.25]]
            .iter()
            .map(|lls| {
                lls.iter()
                    .map(|&loglikelihood| Response::Loglikelihood {
                        loglikelihood,
                        is_greedy: false,
                        tokens: 1,
                    })
                    .collect()
            })
            .collect();
    let docs: Vec<(&_, &[Response])> = instances
        .iter()
        .zip(&responses)
        .map(|(i, r)| (i, r.as_slice()))
        .collect();
    let scores = score_docs(&task, &docs).unwrap();
    let acc: Vec<&SampleScore> = scores.iter().map(|s| &s["acc,none"]).collect();
    assert_eq!(
        acc.iter().map(|s| s.to_json()).collect::<Vec<_>>(),
        [json!(1.0), json!(0.0), json!(1.0)]
    );
    assert_eq!(scores[1]["margin,none"].to_json(), json!(2.5));
    // `margin` is not in metric_list: averaged, as lm-eval does.
    let spec = task.scorer().metric("margin");
    let margins: Vec<SampleScore> = scores.iter().map(|s| s["margin,none"].clone()).collect();
    assert_eq!(spec.aggregate(&margins).unwrap(), (2.0 + 2.5 + 2.25) / 3.0);
}

#[test]
fn generation_metric_aggregation_and_filters_run_in_python() {
    if !python_env("generation_metric_aggregation_and_filters_run_in_python") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "test.jsonl", ROWS);
    write(
        dir.path(),
        "utils.py",
        r#"
from lm_eval.api.filter import Filter

def contains(references, predictions):
    return {"contains": float(references[0] in predictions[0]), "length": len(predictions[0])}

def best(items):
    return max(items)

def strip_words(resps, docs):
    return [[r.replace("The answer is", "") for r in rs] for rs, doc in zip(resps, docs)]

class Upper(Filter):
    def __init__(self, suffix="") -> None:
        self.suffix = suffix

    def apply(self, resps, docs):
        return [[r.strip().upper() + self.suffix for r in rs] for rs in resps]

def samples():
    return [{"q": "5+5", "a": "10", "options": [], "n": 0}]
"#,
    );
    write(
        dir.path(),
        "task.yaml",
        "task: gen\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: test.jsonl\n\
         test_split: test\noutput_type: generate_until\ndoc_to_text: \"{{q}} =\"\ndoc_to_target: a\n\
         fewshot_config:\n  sampler: first_n\n  samples: !function utils.samples\n\
         generation_kwargs:\n  until: [\"\\n\"]\n\
         filter_list:\n  - name: custom\n    filter:\n      - function: custom\n        filter_fn: !function utils.strip_words\n\
         \x20     - function: !function utils.Upper\n        suffix: \"!\"\n      - function: take_first\n\
         metric_list:\n  - metric: !function utils.contains\n    aggregation: !function utils.best\n    higher_is_better: true\n\
         \x20 - metric: exact_match\n",
    );
    let task = load(dir.path(), 1);
    let instances = build_instances(&task, 1234, None).unwrap();
    let Request::Generate { context, .. } = &instances[0].requests[0] else {
        panic!("not a generation")
    };
    assert_eq!(context, "5+5 = 10\n\n2+2 =");
    let responses = [
        vec![Response::Generated("The answer is 4".into())],
        vec![Response::Generated("seven".into())],
        vec![Response::Generated(" 2".into())],
    ];
    let docs: Vec<(&_, &[Response])> = instances
        .iter()
        .zip(&responses)
        .map(|(i, r)| (i, r.as_slice()))
        .collect();
    let scores = score_docs(&task, &docs).unwrap();
    // "The answer is 4" → " 4" → "4!"; "seven" → "SEVEN!"; " 2" → "2!".
    let contains: Vec<Value> = scores
        .iter()
        .map(|s| s["contains,custom"].to_json())
        .collect();
    assert_eq!(contains, [json!(1.0), json!(0.0), json!(1.0)]);
    let length: Vec<Value> = scores
        .iter()
        .map(|s| s["length,custom"].to_json())
        .collect();
    assert_eq!(length, [json!(2.0), json!(6.0), json!(2.0)]);
    let exact: Vec<Value> = scores
        .iter()
        .map(|s| s["exact_match,custom"].to_json())
        .collect();
    assert_eq!(exact, [json!(0.0), json!(0.0), json!(0.0)]);
    let spec = task.scorer().metric("contains");
    let values: Vec<SampleScore> = scores
        .iter()
        .map(|s| s["contains,custom"].clone())
        .collect();
    assert_eq!(spec.aggregate(&values).unwrap(), 1.0);
    assert_eq!(spec.stderr(&values, 1000).unwrap(), None);
}

#[test]
fn a_missing_import_names_the_hook_and_its_line() {
    if !python_env("a_missing_import_names_the_hook_and_its_line") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "test.jsonl", ROWS);
    write(
        dir.path(),
        "utils.py",
        "import a_module_that_is_not_installed\n\ndef process_docs(ds):\n    return ds\n",
    );
    write(
        dir.path(),
        "task.yaml",
        "task: hellaswag_like\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: test.jsonl\n\
         test_split: test\noutput_type: multiple_choice\ndoc_to_text: q\ndoc_to_target: 0\n\
         doc_to_choice: options\nprocess_docs: !function utils.process_docs\n",
    );
    let LoadedYaml::Task(spec) = load_yaml(&dir.path().join("task.yaml")).unwrap() else {
        panic!("not a task")
    };
    let error = Task::load(spec.clone(), &hub(), Some(0))
        .unwrap_err()
        .to_string();
    let at = format!("{}:11", dir.path().join("task.yaml").display());
    assert!(error.starts_with(&at), "{error}");
    assert!(error.contains("`!function utils.process_docs`"), "{error}");
    assert!(
        error.contains("No module named 'a_module_that_is_not_installed'"),
        "{error}"
    );
    assert!(error.contains("moebench_processor: hellaswag"), "{error}");
    let rejected = moebench_tasks::validate::check_task(&spec)
        .unwrap_err()
        .to_string();
    assert!(
        rejected.contains("a_module_that_is_not_installed"),
        "{rejected}"
    );
}
