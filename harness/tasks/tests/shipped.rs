//! The task YAMLs shipped in `suites/tasks/`: every one parses and resolves; every `*_shared`
//! variant loads its data from `../shared/datasets`, and the standard `arc_easy` and `gsm8k`
//! load synthetic rows from a Hub-cache fixture; all build exactly the requests lm-eval 0.4.13
//! builds and score synthetic responses as it does (`golden/lm_eval_hashes.json`, made by
//! `golden/generate_lm_eval_hashes.py`).
use moebench_core::metrics::DocScore;
use moebench_hub::HubConfig;
use moebench_tasks::hashing::lm_eval_task_hash;
use moebench_tasks::{
    build_instances, load_yaml, score_doc, DocInstance, Request, Response, Task, TaskIndex,
    TaskNode, DEFAULT_FEWSHOT_SEED,
};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn index() -> TaskIndex {
    TaskIndex::scan(&[repo().join("suites/tasks")]).unwrap()
}

/// An offline Hub configuration whose cache is the synthetic fixture.
fn hub() -> HubConfig {
    let cache = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hub");
    HubConfig::from_lookup(|var| match var {
        "HF_HUB_CACHE" => Some(cache.display().to_string()),
        "HF_HUB_OFFLINE" => Some("1".to_owned()),
        _ => None,
    })
    .unwrap()
}

#[test]
fn every_shipped_yaml_parses_and_every_name_resolves() {
    let mut pending = vec![repo().join("suites/tasks")];
    let mut count = 0;
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml") {
                load_yaml(&path).unwrap_or_else(|error| panic!("{error}"));
                count += 1;
            }
        }
    }
    assert!(count > 130, "{count} YAML files");
    let index = index();
    for name in index.names() {
        index
            .resolve(name)
            .unwrap_or_else(|error| panic!("{name}: {error}"));
    }
    for (group, children) in [("mmlu", 4), ("mmlu_shared", 4)] {
        let node = index.resolve(group).unwrap();
        let TaskNode::Group {
            children: groups, ..
        } = &node
        else {
            panic!("{group} is not a group")
        };
        assert_eq!(groups.len(), children);
        assert_eq!(node.tasks().len(), 57, "{group}");
    }
    let shared = index.resolve("moebench_shared").unwrap();
    assert_eq!(shared.tasks().len(), 9);
}

#[test]
fn gsm8k_is_five_shot_greedy_with_two_filters() {
    let TaskNode::Task(spec) = index().resolve("gsm8k").unwrap() else {
        panic!("not a task")
    };
    assert_eq!(spec.config.num_fewshot, Some(5));
    assert_eq!(
        spec.config.generation(),
        (
            vec![
                "Question:".to_owned(),
                "</s>".to_owned(),
                "<|im_end|>".to_owned()
            ],
            256
        )
    );
    let names: Vec<&str> = spec
        .config
        .filter_list
        .iter()
        .flatten()
        .map(|f| f.name.as_str())
        .collect();
    assert_eq!(names, ["strict-match", "flexible-extract"]);
}

fn sha(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A request's arguments as the golden file holds them (strings hashed; of the generation
/// kwargs, `until`).
fn arguments(request: &Request) -> Value {
    match request {
        Request::Loglikelihood {
            context,
            continuation,
        } => serde_json::json!([sha(context), sha(continuation)]),
        Request::Rolling { text } => serde_json::json!([sha(text)]),
        Request::Generate { context, until, .. } => serde_json::json!([sha(context), until]),
    }
}

fn golden_arguments(arguments: &Value) -> Value {
    let mut arguments = arguments.clone();
    if let Some(kwargs) = arguments.get_mut(1).filter(|kwargs| kwargs.is_object()) {
        *kwargs = kwargs["until"].clone();
    }
    arguments
}

/// lm-eval's synthetic responses (JSON) for `instance`, as [`Response`]s.
fn responses(instance: &DocInstance, golden: &Value) -> Vec<Response> {
    let golden = golden.as_array().unwrap();
    golden
        .iter()
        .zip(&instance.requests)
        .map(|(response, request)| match (request, response) {
            (Request::Generate { .. }, text) => {
                Response::Generated(text.as_str().unwrap().to_owned())
            }
            (Request::Rolling { .. }, ll) => Response::Rolling {
                loglikelihood: ll.as_f64().unwrap(),
                tokens: 0,
            },
            (Request::Loglikelihood { .. }, pair) => Response::Loglikelihood {
                loglikelihood: pair[0].as_f64().unwrap(),
                is_greedy: pair[1].as_bool().unwrap(),
                tokens: 0,
            },
        })
        .collect()
}

/// `value` with every number as a float (Python's `5456` weight is our `5456.0`).
fn as_floats(value: &Value) -> Value {
    match value {
        Value::Number(n) => serde_json::json!(n.as_f64().unwrap()),
        Value::Array(items) => Value::Array(items.iter().map(as_floats).collect()),
        Value::Object(map) => {
            Value::Object(map.iter().map(|(k, v)| (k.clone(), as_floats(v))).collect())
        }
        other => other.clone(),
    }
}

fn check_scores(key: &str, task: &Task, instances: &[DocInstance], golden: &Value) {
    let Some(golden) = golden.as_object() else {
        return;
    };
    for (doc_id, expected) in golden {
        let instance = &instances[doc_id.parse::<usize>().unwrap()];
        let scores =
            score_doc(task, instance, &responses(instance, &expected["responses"])).unwrap();
        let ours: serde_json::Map<String, Value> = scores
            .into_iter()
            .map(|(metric, score)| {
                let value = match score {
                    DocScore::Value(x) => serde_json::json!(x),
                    DocScore::Weighted(ll, weight) => serde_json::json!([ll, weight]),
                };
                (metric, value)
            })
            .collect();
        assert_eq!(
            as_floats(&Value::Object(ours)),
            as_floats(&expected["metrics"]),
            "{key}, doc {doc_id}: scores"
        );
    }
}

#[test]
fn tasks_build_and_score_what_lm_eval_does() {
    let shared_data = repo().join("../shared/datasets").is_dir();
    if !shared_data {
        eprintln!(
            "SKIPPED: the *_shared tasks, {} is absent",
            repo().join("../shared/datasets").display()
        );
    }
    let golden: serde_json::Map<String, Value> = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/lm_eval_hashes.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let index = index();
    for (key, expected) in &golden {
        let (name, shots) = key.split_once('/').unwrap();
        if name.contains("_shared") && !shared_data {
            continue;
        }
        let TaskNode::Task(spec) = index.resolve(name).unwrap() else {
            panic!("{name} is not a task")
        };
        let task = Task::load(spec, &hub(), Some(shots.parse().unwrap()))
            .unwrap_or_else(|e| panic!("{key}: {e}"));
        let instances = build_instances(&task, DEFAULT_FEWSHOT_SEED, None)
            .unwrap_or_else(|e| panic!("{key}: {e}"));
        assert_eq!(
            instances.len() as u64,
            expected["docs"].as_u64().unwrap(),
            "{key}: document count"
        );
        for (instance, doc) in instances
            .iter()
            .zip(expected["first_docs"].as_array().unwrap())
        {
            let at = format!("{key}, doc {}", instance.doc_id);
            assert_eq!(instance.hashes.doc, doc["doc"], "{at}: doc_hash");
            assert_eq!(instance.hashes.prompt, doc["prompt"], "{at}: prompt_hash");
            assert_eq!(instance.hashes.target, doc["target"], "{at}: target_hash");
            let ours: Vec<Value> = instance.requests.iter().map(arguments).collect();
            let expected: Vec<Value> = doc["arguments"]
                .as_array()
                .unwrap()
                .iter()
                .map(golden_arguments)
                .collect();
            assert_eq!(ours, expected, "{at}: request arguments");
        }
        let filters = task.scorer().filter_names().len();
        assert_eq!(
            lm_eval_task_hash(&instances, filters),
            expected["task_hash"],
            "{key}: task hash"
        );
        check_scores(key, &task, &instances, &expected["scores"]);
    }
}
