//! Seeded sampling (`do_sample: true`, `repeats`) on the real SmolLM2: draws differ from one
//! another, repeat exactly for a seed whatever the batch size, change with the seed, and greedy
//! repeats stay identical.
mod common;

use common::*;
use moebench_eval::{evaluate_task, EvalOptions, LanguageModel, LmSettings};
use moebench_model::{Model, Tokenizer};
use moebench_tasks::{Task, TaskIndex, TaskNode};
use serde_json::Value;
use tch::{Device, Kind};

fn task(dir: &std::path::Path, generation: &str) -> Task {
    std::fs::write(
        dir.join("rows.jsonl"),
        "{\"q\": \"Write a short poem about the sea.\", \"a\": \"x\"}\n{\"q\": \"Name three colours.\", \"a\": \"y\"}\n",
    )
    .unwrap();
    let yaml = format!(
        "task: sampled\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: rows.jsonl\n\
         test_split: test\noutput_type: generate_until\ndoc_to_text: \"{{{{q}}}}\"\n\
         doc_to_target: \"{{{{a}}}}\"\nrepeats: 4\n\
         filter_list:\n  - name: all\n    filter:\n      - function: take_first_k\n        k: 4\n\
         generation_kwargs:\n  until: [\"\\n\\n\"]\n  max_gen_toks: 12\n{generation}"
    );
    std::fs::write(dir.join("sampled.yaml"), yaml).unwrap();
    let index = TaskIndex::scan(&[dir]).unwrap();
    let TaskNode::Task(spec) = index.resolve("sampled").unwrap() else {
        panic!("not a task")
    };
    Task::load(spec, &moebench_hub::HubConfig::from_env().unwrap(), None).unwrap()
}

/// The generations of each document.
fn draws(
    model: &Model,
    tok: &Tokenizer,
    task: &Task,
    batch_size: usize,
    seed: u64,
) -> Vec<Vec<Value>> {
    let settings = LmSettings {
        max_length: 512,
        batch_size,
        token_budget: 4096,
        prefix_cache: true,
        lookup_decoding: true,
    };
    let lm = LanguageModel::new(model, tok, settings).with_sampling_seed(seed);
    let opts = EvalOptions {
        limit: None,
        fewshot_seed: 1234,
        bootstrap_iters: 10,
        ppl_protocol: None,
    };
    let outcome = evaluate_task(&lm, task, &opts).unwrap();
    outcome
        .samples
        .iter()
        .map(|s| s.responses.clone())
        .collect()
}

#[test]
fn sampled_draws_are_seeded_and_independent_of_batching() {
    let _lock = model_lock();
    let Some(dir) = smollm2_dir("sampled_draws_are_seeded") else {
        return;
    };
    let model = Model::load(&dir, Device::Cpu, Kind::Float).unwrap();
    let tok = Tokenizer::from_dir(&dir).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let sampled = task(
        tmp.path(),
        "  do_sample: true\n  temperature: 1.0\n  top_p: 0.95\n",
    );
    let one = draws(&model, &tok, &sampled, 1, 7);
    for doc in &one {
        assert_eq!(doc.len(), 4);
        let distinct: std::collections::BTreeSet<String> =
            doc.iter().map(|d| d.to_string()).collect();
        assert!(distinct.len() >= 2, "four draws, all equal: {doc:?}");
    }
    assert_eq!(
        draws(&model, &tok, &sampled, 8, 7),
        one,
        "batching changed the draws"
    );
    assert_ne!(
        draws(&model, &tok, &sampled, 8, 8),
        one,
        "the seed did not matter"
    );

    let greedy = task(tmp.path(), "  do_sample: false\n");
    for doc in draws(&model, &tok, &greedy, 8, 7) {
        assert!(
            doc.iter().all(|d| *d == doc[0]),
            "greedy repeats differ: {doc:?}"
        );
    }
}
