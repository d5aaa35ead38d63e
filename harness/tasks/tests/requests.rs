//! Prompt assembly and few-shot sampling on small synthetic tasks. The expected strings are
//! what lm-eval 0.4.13 builds for the same YAML and rows (`ConfigurableTask`,
//! `set_fewshot_seed(1234)`, `build_all_requests`).
use moebench_core::metrics::Gold;
use moebench_hub::HubConfig;
use moebench_tasks::{
    build_instances, load_yaml, Expected, LoadedYaml, Request, Task, DEFAULT_FEWSHOT_SEED,
};
use std::path::Path;

fn task(dir: &Path, yaml: &str, files: &[(&str, &str)], shots: usize) -> Task {
    for (name, text) in files {
        std::fs::write(dir.join(name), text).unwrap();
    }
    let path = dir.join("task.yaml");
    std::fs::write(&path, yaml).unwrap();
    let LoadedYaml::Task(spec) = load_yaml(&path).unwrap() else {
        panic!("not a task")
    };
    let hub =
        HubConfig::from_lookup(|var| (var == "HF_HUB_CACHE").then(|| "/nonexistent".to_owned()))
            .unwrap();
    Task::load(spec, &hub, Some(shots)).unwrap()
}

fn loglikelihood(request: &Request) -> (&str, &str) {
    match request {
        Request::Loglikelihood {
            context,
            continuation,
        } => (context, continuation),
        other => panic!("{other:?}"),
    }
}

#[test]
fn description_delimiters_first_n_and_mutual_info() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = r#"
task: t
dataset_path: json
dataset_kwargs:
  data_files:
    test: test.jsonl
    train: train.jsonl
test_split: test
training_split: train
output_type: multiple_choice
description: "Answer the {{topic}} questions.\n\n"
doc_to_text: "Q: {{q}}"
doc_to_target: "{{a}}"
doc_to_choice: "{{opts}}"
target_delimiter: " -> "
fewshot_delimiter: "\n--\n"
fewshot_config:
  sampler: first_n
metric_list:
  - metric: acc
  - metric: acc_mutual_info
"#;
    let train = r#"{"topic": "math", "q": "1+1?", "a": 1, "opts": ["1", "2"]}
{"topic": "art", "q": "Color?", "a": "", "opts": ["red", "blue"]}
{"topic": "x", "q": "Third", "a": 0, "opts": ["yes", "no", "maybe"]}
"#;
    let test = r#"{"topic": "math", "q": "2+2?", "a": 0, "opts": ["4", "5"]}
{"topic": "geo", "q": "Capital?", "a": "Paris", "opts": ["Rome", "Paris"]}
"#;
    let task = task(
        dir.path(),
        yaml,
        &[("train.jsonl", train), ("test.jsonl", test)],
        2,
    );
    let instances = build_instances(&task, DEFAULT_FEWSHOT_SEED, None).unwrap();
    let requests: Vec<(&str, &str)> = instances[1].requests.iter().map(loglikelihood).collect();
    let context = "Answer the geo questions.\n\nQ: 1+1? -> 2\n--\nQ: Color?Q: Capital?";
    assert_eq!(
        requests,
        [
            (context, " -> Rome"),
            (context, " -> Paris"),
            ("", " -> Rome"),
            ("", " -> Paris")
        ]
    );
    assert_eq!(
        loglikelihood(&instances[0].requests[0]).0,
        "Answer the math questions.\n\nQ: 1+1? -> 2\n--\nQ: Color?Q: 2+2?"
    );
    assert_eq!(instances[0].expected, Expected::Choice(Gold::Index(0)));
    assert_eq!(instances[1].expected, Expected::Choice(Gold::Index(1)));
}

#[test]
fn default_sampler_excludes_the_evaluated_doc_and_its_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = r#"
task: d
dataset_path: json
dataset_kwargs:
  data_files:
    test: dup.jsonl
test_split: test
fewshot_split: test
output_type: generate_until
doc_to_text: "{{q}}"
doc_to_target: "{{a}}"
generation_kwargs:
  until: ["\n"]
  max_gen_toks: 16
"#;
    let rows = r#"{"q": "A", "a": "[\"x\", \"y\"]"}
{"q": "A", "a": "[\"x\", \"y\"]"}
{"q": "B", "a": "b"}
{"q": "C", "a": "c"}
{"q": "D", "a": "d"}
{"q": "E", "a": "e"}
"#;
    let task = task(dir.path(), yaml, &[("dup.jsonl", rows)], 3);
    let instances = build_instances(&task, DEFAULT_FEWSHOT_SEED, None).unwrap();
    let contexts: Vec<&str> = instances
        .iter()
        .map(|instance| match &instance.requests[0] {
            Request::Generate {
                context,
                until,
                max_gen_toks,
                sampling,
            } => {
                assert_eq!(
                    (until.as_slice(), *max_gen_toks, sampling),
                    (&["\n".to_owned()][..], 16, &None)
                );
                context.as_str()
            }
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        contexts,
        [
            "C c\n\nD d\n\nE e\n\nA",
            "D d\n\nE e\n\nC c\n\nA",
            "A x\n\nA x\n\nC c\n\nB",
            "A x\n\nB b\n\nD d\n\nC",
            "C c\n\nA x\n\nA x\n\nD",
            "A x\n\nD d\n\nB b\n\nE",
        ]
    );
    // The first target is a list, so every target is a list of references (`list(gold)`).
    assert_eq!(
        instances[0].expected,
        Expected::References(vec!["x".to_owned(), "y".to_owned()])
    );
    assert_eq!(
        instances[2].expected,
        Expected::References(vec!["b".to_owned()])
    );
}
