//! HumanEval and MBPP end to end against lm-eval 0.4.13 (HF backend, f32, CPU, greedy) on
//! SmolLM2 and the first 20 problems of each (fixtures:
//! scripts/lm_eval_fixtures/make_code_fixtures.py): identical generations, identical filtered
//! programs, identical pass/fail per problem and identical pass@1, in lm-eval's own sample
//! and results files. Skips visibly without the model, `../shared`, or the sandbox.
mod common;

use common::*;
use serde_json::Value;

fn fixture_samples(run: &str) -> Vec<Value> {
    std::fs::read_to_string(
        repo_root()
            .join("tests/fixtures/lm_eval")
            .join(run)
            .join("samples.jsonl"),
    )
    .unwrap()
    .lines()
    .map(|line| serde_json::from_str(line).unwrap())
    .collect()
}

fn sandbox_available(test: &str) -> bool {
    match moebench_sandbox::Sandbox::new(moebench_sandbox::Policy::default()) {
        Ok(_) => true,
        Err(error) => {
            eprintln!("SKIPPED {test}: {error}");
            false
        }
    }
}

fn check(test: &str, run: &str, task: &str, metric: &str) {
    let _lock = model_lock();
    if smollm2_dir(test).is_none() || !sandbox_available(test) {
        return;
    }
    if !repo_root().join("../shared/datasets").is_dir() {
        eprintln!("SKIPPED {test}: ../shared/datasets is absent");
        return;
    }
    let theirs = fixture_samples(run);
    let expected: Value = serde_json::from_str(
        &std::fs::read_to_string(
            repo_root()
                .join("tests/fixtures/lm_eval")
                .join(run)
                .join("results.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let out = tempfile::tempdir().unwrap();
    let limit = theirs.len().to_string();
    let result = moebench(&[
        "eval",
        SMOLLM2,
        "--device",
        "cpu",
        "--tasks",
        task,
        "--limit",
        &limit,
        "--log-samples",
        "--confirm-run-unsafe-code",
        "--out",
        out.path().to_str().unwrap(),
    ]);
    assert!(result.status.success(), "{test}: {}", stderr(&result));
    let ours = lm_eval_samples(out.path(), task);
    assert_eq!(
        ours.len(),
        theirs.len(),
        "{test}: one line per problem (one filter)"
    );
    let mut passed = 0;
    for (o, t) in ours.iter().zip(&theirs) {
        let doc = &t["doc_id"];
        assert_eq!(o["doc_id"], *doc);
        for key in [
            "doc_hash",
            "prompt_hash",
            "target_hash",
            "filter",
            "filtered_resps",
        ] {
            assert_eq!(o[key], t[key], "{test}: {key} of problem {doc}");
        }
        assert_eq!(
            o["resps"][0][0], t["requests"][0]["generation"],
            "{test}: generation of problem {doc}"
        );
        assert_eq!(
            o["arguments"]["gen_args_0"]["arg_1"], t["requests"][0]["gen_kwargs"],
            "{test}: generation kwargs"
        );
        assert_eq!(
            o[metric], t["metrics"][metric],
            "{test}: pass/fail of problem {doc} (lm-eval's execution: {})",
            t["executions"][0]
        );
        passed += usize::from(o[metric] == 1.0);
    }
    let key = format!("{metric},{}", theirs[0]["filter"].as_str().unwrap());
    let ours_results: Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("results.json")).unwrap())
            .unwrap();
    assert_eq!(
        ours_results["results"][task][&key], expected["results"][run][&key],
        "{test}: {key}"
    );
    eprintln!(
        "{test}: {passed} of {} problems pass, as in lm-eval",
        theirs.len()
    );
}

#[test]
fn humaneval_greedy_generations_and_pass_fail_match_lm_eval() {
    check(
        "humaneval_parity",
        "humaneval",
        "humaneval_shared",
        "pass@1",
    );
}

#[test]
fn mbpp_greedy_generations_and_pass_fail_match_lm_eval() {
    check("mbpp_parity", "mbpp", "mbpp_shared", "pass_at_1");
}

#[test]
fn code_tasks_need_confirmation_before_any_model_time() {
    let out = tempfile::tempdir().unwrap();
    let result = moebench(&[
        "eval",
        SMOLLM2,
        "--tasks",
        "humaneval",
        "--out",
        out.path().to_str().unwrap(),
    ]);
    assert!(!result.status.success());
    let message = stderr(&result);
    assert!(
        message.contains("executes model-generated code")
            && message.contains("--confirm-run-unsafe-code"),
        "{message}"
    );
    assert_eq!(
        std::fs::read_dir(out.path()).unwrap().count(),
        0,
        "nothing written"
    );
}
