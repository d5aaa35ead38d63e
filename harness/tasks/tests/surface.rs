//! The task YAML surface beyond the shipped tasks: `gen_prefix`, several targets per document,
//! groups with inline members and task overrides (nested, aggregated over their leaf tasks),
//! `fewshot_config.samples` and `fewshot_indices`, and task directories with bad files. The
//! expected prompts and scores are what lm-eval 0.4.13 builds for the same YAML and rows
//! (`ConfigurableTask(config=…)`, `set_fewshot_seed(1234)`, `build_all_requests`,
//! `process_results`).
use moebench_hub::HubConfig;
use moebench_tasks::{
    build_instances, load_yaml, score_doc, LoadedYaml, Request, Response, Task, TaskIndex, TaskNode,
};
use std::path::Path;

const ROWS: &str = r#"{"q": "2+2", "a": "4", "opts": ["3", "4"], "gold": 1, "alts": ["four", "4"]}
{"q": "3+3", "a": "6", "opts": ["6", "7"], "gold": 0, "alts": ["six", "6"]}
{"q": "1+1", "a": "2", "opts": ["2", "0"], "gold": 0, "alts": ["two", "2"]}
"#;

const DATA: &str = "dataset_path: json\ndataset_kwargs:\n  data_files:\n    test: t.jsonl\n\
                    test_split: test\nfewshot_split: test\n";

fn hub() -> HubConfig {
    HubConfig::from_lookup(|var| (var == "HF_HUB_CACHE").then(|| "/nonexistent".to_owned()))
        .unwrap()
}

fn task(dir: &Path, yaml: &str, shots: usize) -> Task {
    std::fs::write(dir.join("t.jsonl"), ROWS).unwrap();
    let path = dir.join("task.yaml");
    std::fs::write(&path, format!("task: t\n{DATA}{yaml}")).unwrap();
    let LoadedYaml::Task(spec) = load_yaml(&path).unwrap() else {
        panic!("not a task")
    };
    Task::load(spec, &hub(), Some(shots)).unwrap()
}

fn contexts(task: &Task) -> Vec<(String, Option<String>)> {
    build_instances(task, 1234, None)
        .unwrap()
        .iter()
        .flat_map(|instance| instance.requests.clone())
        .map(|request| match request {
            Request::Generate { context, .. } => (context, None),
            Request::Loglikelihood {
                context,
                continuation,
            } => (context, Some(continuation)),
            Request::Rolling { text } => (text, None),
        })
        .collect()
}

#[test]
fn gen_prefix_is_placed_as_lm_eval_places_it() {
    let dir = tempfile::tempdir().unwrap();
    let generation = task(
        dir.path(),
        "output_type: generate_until\ndoc_to_text: \"Q: {{q}}\"\ndoc_to_target: a\n\
         gen_prefix: \"Answer:\"\nfewshot_config:\n  sampler: first_n\n\
         generation_kwargs:\n  until: [\"\\n\"]\n",
        2,
    );
    let want = [
        "Q: 3+3 Answer: 6\n\nQ: 1+1 Answer: 2\n\nQ: 2+2 Answer:",
        "Q: 2+2 Answer: 4\n\nQ: 1+1 Answer: 2\n\nQ: 3+3 Answer:",
        "Q: 2+2 Answer: 4\n\nQ: 3+3 Answer: 6\n\nQ: 1+1 Answer:",
    ];
    let got: Vec<String> = contexts(&generation).into_iter().map(|c| c.0).collect();
    assert_eq!(got, want);

    let choice = task(
        dir.path(),
        "output_type: multiple_choice\ndoc_to_text: \"Q: {{q}}\\n\"\ndoc_to_target: gold\n\
         doc_to_choice: opts\ngen_prefix: \"A: \"\nfewshot_config:\n  sampler: first_n\n",
        1,
    );
    let want = [
        ("Q: 3+3\nA: 6\n\nQ: 2+2\nA: ", " 3"),
        ("Q: 3+3\nA: 6\n\nQ: 2+2\nA: ", " 4"),
        ("Q: 2+2\nA: 4\n\nQ: 3+3\nA: ", " 6"),
        ("Q: 2+2\nA: 4\n\nQ: 3+3\nA: ", " 7"),
        ("Q: 2+2\nA: 4\n\nQ: 1+1\nA: ", " 2"),
        ("Q: 2+2\nA: 4\n\nQ: 1+1\nA: ", " 0"),
    ];
    let got = contexts(&choice);
    assert_eq!(got.len(), want.len());
    for ((context, continuation), (want_context, want_continuation)) in got.iter().zip(want) {
        assert_eq!(context, want_context);
        assert_eq!(continuation.as_deref(), Some(want_continuation));
    }
}

/// `doc_to_target` giving a list makes the task `multiple_target`: a generation is right if
/// it matches any target (lm-eval: `{"exact_match": 1.0}`, `0.0`, `1.0` for these answers).
#[test]
fn several_targets_score_any_match() {
    let dir = tempfile::tempdir().unwrap();
    let task = task(
        dir.path(),
        "output_type: generate_until\ndoc_to_text: \"{{q}} =\"\ndoc_to_target: alts\n\
         generation_kwargs:\n  until: [\"\\n\"]\nmetric_list:\n  - metric: exact_match\n",
        0,
    );
    assert!(task.multiple_target());
    let instances = build_instances(&task, 1234, None).unwrap();
    let scores: Vec<f64> = instances
        .iter()
        .zip(["4", "seven", "two"])
        .map(|(instance, answer)| {
            let scores =
                score_doc(&task, instance, &[Response::Generated(answer.to_owned())]).unwrap();
            match scores["exact_match,none"] {
                moebench_core::metrics::DocScore::Value(x) => x,
                other => panic!("{other:?}"),
            }
        })
        .collect();
    assert_eq!(scores, [1.0, 0.0, 1.0]);
}

#[test]
fn fewshot_samples_and_indices() {
    let dir = tempfile::tempdir().unwrap();
    let listed = task(
        dir.path(),
        "output_type: generate_until\ndoc_to_text: \"{{q}} =\"\ndoc_to_target: a\n\
         fewshot_split: null\nfewshot_config:\n  sampler: first_n\n  samples:\n\
         \x20   - {q: \"9+9\", a: \"18\"}\n",
        1,
    );
    assert_eq!(contexts(&listed)[0].0, "9+9 = 18\n\n2+2 =");
    // `fewshot_indices` picks the pool of the default sampler.
    let indexed = task(
        dir.path(),
        "output_type: generate_until\ndoc_to_text: \"{{q}} =\"\ndoc_to_target: a\n\
         fewshot_split: other\nfewshot_config:\n  fewshot_indices: [2]\n\
         dataset_kwargs:\n  data_files:\n    test: t.jsonl\n    other: t.jsonl\n",
        1,
    );
    assert!(contexts(&indexed)
        .iter()
        .all(|(context, _)| context.starts_with("1+1 = 2\n\n")));
}

#[test]
fn groups_nest_inline_members_take_overrides() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("t.jsonl"), ROWS).unwrap();
    let base = "dataset_path: json\ndataset_kwargs:\n  data_files:\n    test: t.jsonl\n\
                test_split: test\noutput_type: multiple_choice\ndoc_to_text: \"{{q}}\"\n\
                doc_to_target: gold\ndoc_to_choice: opts\n";
    std::fs::write(
        dir.path().join("a.yaml"),
        format!("task: a\ntag: letters\n{base}"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("b.yaml"),
        format!("task: b\ntag: letters\n{base}"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("outer.yaml"),
        "group: outer\nnum_fewshot: 1\ntask:\n  - group: inner\n    task: [a]\n\
         \x20   aggregate_metric_list:\n      - metric: acc\n\
         \x20 - task: b\n    target_delimiter: \"|\"\n\
         \x20 - task: fresh\n    dataset_path: json\n    dataset_kwargs:\n      data_files:\n        test: t.jsonl\n\
         \x20   test_split: test\n    output_type: multiple_choice\n    doc_to_text: q\n\
         \x20   doc_to_target: gold\n    doc_to_choice: opts\n\
         aggregate_metric_list:\n  - metric: acc\n    weight_by_size: true\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("broken.yaml"), "task: [unclosed\n").unwrap();
    std::fs::write(dir.path().join("again.yaml"), format!("task: a\n{base}")).unwrap();
    let index = TaskIndex::scan(&[dir.path()]).unwrap();
    let skipped: Vec<String> = index
        .skipped()
        .iter()
        .map(|(path, reason)| format!("{}: {reason}", path.display()))
        .collect();
    assert_eq!(skipped.len(), 2, "{skipped:?}");
    assert!(skipped[0].contains("again.yaml") && skipped[0].contains("already defined"));
    assert!(skipped[1].contains("broken.yaml"));
    let node = index.resolve("outer").unwrap();
    let TaskNode::Group { children, .. } = &node else {
        panic!("not a group")
    };
    assert_eq!(
        children[0].name(),
        "outer::inner",
        "inline groups are namespaced"
    );
    let names: Vec<&str> = node.tasks().iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["a", "b", "outer::fresh"]);
    let tasks = node.tasks();
    // The group's `num_fewshot` reaches every member; the member's own keys win over it.
    assert!(tasks.iter().all(|t| t.config.num_fewshot == Some(1)));
    assert_eq!(tasks[1].config.target_delimiter, "|");
    assert_eq!(tasks[0].config.target_delimiter, " ");
    let TaskNode::Tag { children, .. } = index.resolve("letters").unwrap() else {
        panic!("not a tag")
    };
    assert_eq!(children.len(), 2);
}

/// A registered group named as an inline `task:` entry takes the entry's other keys as
/// overrides for its members (lm-eval's `benchmarks/openllm.yaml`: `- task: mmlu` with
/// `num_fewshot: 5`); the name itself must not replace the group's member list (regression:
/// a group cycle). lm-eval 0.4.13 passes the name on as a `task` override too, so that every
/// leaf of such a group is renamed to the group's name (57 tasks called `mmlu`, colliding in
/// its results); moebench keeps the leaves' own names.
#[test]
fn a_group_named_as_an_inline_task_takes_overrides() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("t.jsonl"), ROWS).unwrap();
    let base = "dataset_path: json\ndataset_kwargs:\n  data_files:\n    test: t.jsonl\n\
                test_split: test\noutput_type: multiple_choice\ndoc_to_text: \"{{q}}\"\n\
                doc_to_target: gold\ndoc_to_choice: opts\n";
    std::fs::write(dir.path().join("a.yaml"), format!("task: a\n{base}")).unwrap();
    std::fs::write(dir.path().join("b.yaml"), format!("task: b\n{base}")).unwrap();
    std::fs::write(dir.path().join("pair.yaml"), "group: pair\ntask: [a, b]\n").unwrap();
    std::fs::write(
        dir.path().join("board.yaml"),
        "group: board\ntask:\n  - task: pair\n    num_fewshot: 2\n  - task: a\n    num_fewshot: 3\n",
    )
    .unwrap();
    let index = TaskIndex::scan(&[dir.path()]).unwrap();
    let node = index.resolve("board").unwrap();
    let tasks = node.tasks();
    let got: Vec<(&str, Option<usize>)> = tasks
        .iter()
        .map(|t| (t.name.as_str(), t.config.num_fewshot))
        .collect();
    assert_eq!(got, [("a", Some(2)), ("b", Some(2)), ("a", Some(3))]);
}

/// Code metrics execute programs only in moebench's sandbox: they need `unsafe_code: true`
/// and enough generations, and an `unsafe_code` task may not score through Python (lm-eval's
/// own `!function utils.pass_at_k` would run the programs unsandboxed).
#[test]
fn code_metrics_are_checked_against_their_task() {
    let dir = tempfile::tempdir().unwrap();
    let error = |yaml: &str| {
        let path = dir.path().join("code.yaml");
        std::fs::write(
            &path,
            format!(
                "task: c\n{DATA}output_type: generate_until\ndoc_to_text: q\ndoc_to_target: a\n{yaml}"
            ),
        )
        .unwrap();
        load_yaml(&path).unwrap_err().to_string()
    };
    let sandboxed = "metric_list:\n  - metric: pass_at_k\n    aggregation: mean\n    k: [2]\n";
    let message = error(sandboxed);
    assert!(
        message.contains("must say `unsafe_code: true`"),
        "{message}"
    );
    let message = error(&format!("unsafe_code: true\n{sandboxed}"));
    assert!(message.contains("`repeats: 1`"), "{message}");
    let python = "unsafe_code: true\nmetric_list:\n  - metric: !function utils.pass_at_k\n    \
                  aggregation: mean\n";
    let message = error(python);
    assert!(message.contains("outside moebench's sandbox"), "{message}");
    let custom = "filter_list:\n  - name: create_test\n    filter:\n      - function: custom\n";
    let message = error(custom);
    assert!(message.contains("filter_fn"), "{message}");
}
