//! The reliability catalogue (issue #11): bad input and faults a new user meets, each tested for
//! a clear error (what, where, how to fix), its exit code, and that nothing half-written is left.
//! Every test is named after the behaviour it checks.
mod common;

use common::*;
use std::io::Read;
use std::path::Path;
use std::process::{Output, Stdio};

fn run(path: &Path, run_dir: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "run",
        path.to_str().unwrap(),
        "--run-dir",
        run_dir.to_str().unwrap(),
    ];
    args.extend(extra);
    moebench(&args)
}

/// A suite on the tiny MoE (4 experts, top-2) and the tiny dense Llama, measures only.
fn tiny_suite(methods: &str) -> String {
    format!(
        "name: t\nmodels:\n  - id: {}\n    label: moe\n  - id: {}\n    label: dense\nmethods:\n{methods}tasks:\n  - name: arc_easy_shared\n    limit: 2\nmeasure:\n  routing: false\n",
        tiny("mixtral"),
        tiny("llama")
    )
}

/// Runs the suite with and without `--dry-run`: both fail before anything runs, with exit code 1,
/// every needle in stderr, no panic, and no run directory.
fn assert_checked_before_running(text: &str, needles: &[&str]) {
    let (_dir, path, run_dir) = suite(text);
    for extra in [&["--dry-run"][..], &[]] {
        let out = run(&path, &run_dir, extra);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{extra:?}: {err}");
        assert!(err.starts_with("error: "), "{err}");
        assert!(!err.contains("panicked"), "{err}");
        for needle in needles {
            assert!(err.contains(needle), "{extra:?}: `{needle}` not in: {err}");
        }
        assert!(!run_dir.exists(), "nothing may be written: {extra:?}");
    }
}

#[test]
fn misspelled_parameter_is_named_with_the_closest_one() {
    assert_checked_before_running(
        &tiny_suite("  - name: reap\n    params: {compresion: 0.5}\n    models: [moe]\n"),
        &[
            "suite.yaml:8:5: methods: method `reap`: parameter `compresion` is unknown (did you mean `compression`?",
        ],
    );
}

#[test]
fn fractional_integer_parameter_is_refused_not_truncated() {
    assert_checked_before_running(
        &tiny_suite("  - name: upcycle\n    params: {num_experts: 2.9}\n    models: [dense]\n"),
        &["parameter `num_experts` must be a whole number, got 2.9"],
    );
}

#[test]
fn out_of_range_values_give_the_range() {
    assert_checked_before_running(
        &tiny_suite("  - name: reap\n    params: {compression: 1.0}\n    models: [moe]\n"),
        &["parameter `compression` is 1.0; allowed: [0, 1)"],
    );
}

#[test]
fn every_problem_of_a_suite_is_listed_at_once() {
    let methods = "  - name: reap\n    params: {compression: 2}\n    models: [moe]\n  - name: topp\n    params: {p: 0}\n    models: [moe]\n  - name: nope\n";
    assert_checked_before_running(
        &tiny_suite(methods),
        &[
            "3 problems found before running",
            "`compression` is 2",
            "`p` is 0",
            "unknown method `nope`",
        ],
    );
}

#[test]
fn top_k_above_the_models_experts_is_refused_before_loading() {
    assert_checked_before_running(
        &tiny_suite("  - name: topk\n    params: {k: 9}\n    models: [moe]\n"),
        &["method `topk` on model `moe`: topk: parameter `k` is 9; the model has 4 experts per layer"],
    );
}

#[test]
fn a_method_that_needs_experts_on_a_dense_model_is_refused_before_loading() {
    assert_checked_before_running(
        &tiny_suite("  - name: reap\n"),
        &["method `reap` on model `dense`: reap: the model has no MoE layer"],
    );
}

#[test]
fn a_chain_is_checked_against_the_model_each_step_makes() {
    // upcycle to 2 experts, then prune 75 %: fewer than the chain's top-k (2) would remain.
    let chain = "  - name: upcycle\n    params: {num_experts: 2, top_k: 2}\n    models: [dense]\n    then:\n      - {name: freq_prune, params: {compression: 0.5}}\n";
    assert_checked_before_running(
        &tiny_suite(chain),
        &["method `upcycle` on model `dense`: freq_prune: parameter `compression`"],
    );
}

#[test]
fn btx_top_k_of_zero_or_above_its_experts_is_refused() {
    let btx = |k: usize| {
        format!("  - name: btx\n    params: {{experts: [dense], domains: [a.txt, b.txt], top_k: {k}}}\n    models: [dense]\n")
    };
    assert_checked_before_running(
        &tiny_suite(&btx(0)),
        &["parameter `top_k` is 0; allowed: [1, ∞)"],
    );
    assert_checked_before_running(
        &tiny_suite(&btx(3)),
        &["btx: parameter `top_k` is 3; there are 2 experts"],
    );
}

#[test]
fn sweeps_that_expand_to_millions_of_jobs_are_refused() {
    let huge: Vec<String> = (0..2000)
        .map(|i| format!("{}", 0.4 + i as f64 * 1e-5))
        .collect();
    let methods = format!(
        "  - name: usmoe\n    params: {{r: [{}], k: [1, 1.5, 2, 2.5, 3, 3.5]}}\n    models: [moe]\n",
        huge.join(", ")
    );
    assert_checked_before_running(
        &tiny_suite(&methods),
        &["sweep 12000 configurations, more than the 10000 one entry may have"],
    );
}

#[test]
fn max_length_beyond_the_models_positions_is_refused() {
    let text = tiny_suite("  - name: dense\n") + "defaults:\n  max_length: 4096\n";
    assert_checked_before_running(
        &text,
        &["defaults.max_length is 4096 but model `moe` has 256 positions"],
    );
}

#[test]
fn a_built_models_router_must_be_a_router_swap() {
    let text = "name: t\nmodels:\n  - label: b\n    build: {router: reap}\nmethods:\n  - name: dense\ntasks:\n  - name: arc_easy_shared\n";
    assert_checked_before_running(
        text,
        &["models: `b`: build: router: `reap` is not a router swap"],
    );
}

/// A copy of a tiny fixture checkpoint with `damage` applied.
fn damaged_copy(name: &str, damage: impl FnOnce(&Path)) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(Path::new(&tiny(name)).join(f), dir.path().join(f)).unwrap();
    }
    damage(dir.path());
    dir
}

#[test]
fn a_truncated_checkpoint_is_found_before_the_first_job() {
    let model = damaged_copy("mixtral", |d| {
        let f = d.join("model.safetensors");
        let len = std::fs::metadata(&f).unwrap().len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&f)
            .unwrap()
            .set_len(len / 2)
            .unwrap();
    });
    let text = format!(
        "name: t\nmodels:\n  - id: {}\n    label: cut\n  - id: {}\n    label: fine\nmethods:\n  - name: dense\ntasks:\n  - name: arc_easy_shared\n",
        model.path().display(),
        tiny("llama")
    );
    let (_dir, path, run_dir) = suite(&text);
    let out = run(&path, &run_dir, &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("model cut: corrupt or truncated safetensors file"),
        "{err}"
    );
    assert!(err.contains("(truncated)"), "{err}");
    assert!(!run_dir.exists());
}

#[test]
fn a_tokenizer_larger_than_the_embedding_is_refused() {
    let Some(smollm2) = smollm2_dir("a_tokenizer_larger_than_the_embedding_is_refused") else {
        return;
    };
    // The tiny Llama has 128 embedding rows; SmolLM2's tokenizer has 49152 ids.
    let model = damaged_copy("llama", |d| {
        std::fs::copy(smollm2.join("tokenizer.json"), d.join("tokenizer.json")).unwrap();
    });
    let out = moebench(&["logits", model.path().to_str().unwrap(), "--prompt", "hi"]);
    assert_clean_failure(
        &out,
        "it has 49152 token ids but the model's embedding has 128 rows",
    );
    let text = format!(
        "name: t\nmodels:\n  - id: {}\nmethods:\n  - name: dense\ntasks:\n  - name: arc_easy_shared\n",
        model.path().display()
    );
    assert_checked_before_running(
        &text,
        &["49152 token ids but the model's embedding has 128 rows"],
    );
}

#[test]
fn a_second_run_on_a_run_directory_in_use_is_refused_and_a_stale_lock_taken_over() {
    let (_dir, path, run_dir) = suite(&tiny_suite("  - name: dense\n"));
    std::fs::create_dir_all(&run_dir).unwrap();
    // PID 1 is alive: the directory is in use.
    std::fs::write(run_dir.join(".lock"), "1").unwrap();
    let out = run(&path, &run_dir, &["--quiet"]);
    assert_clean_failure(&out, "the run directory is in use by process 1");
    assert!(!run_dir.join("records.jsonl").exists());
    // A lock whose process is gone is taken over, and released at the end.
    std::fs::write(run_dir.join(".lock"), "4194304").unwrap();
    let out = run(&path, &run_dir, &["--quiet"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!run_dir.join(".lock").exists());
}

#[test]
fn a_job_that_fails_at_run_time_is_recorded_and_the_run_goes_on() {
    // A model whose weights are NaN: its measures are fine, but a task on it would report a
    // meaningless accuracy, so the job fails; the other model's jobs still run.
    let Some(smollm2) = smollm2_dir("a_job_that_fails_at_run_time_is_recorded_and_the_run_goes_on")
    else {
        return;
    };
    let broken = tempfile::tempdir().unwrap();
    for f in ["config.json", "tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(smollm2.join(f), broken.path().join(f)).unwrap();
    }
    let weights = tch::Tensor::read_safetensors(smollm2.join("model.safetensors")).unwrap();
    let weights: Vec<(String, tch::Tensor)> = weights
        .into_iter()
        .map(|(name, t)| match name.as_str() {
            "model.norm.weight" => (name, t.fill(f64::NAN)),
            _ => (name, t),
        })
        .collect();
    tch::Tensor::write_safetensors(&weights, broken.path().join("model.safetensors")).unwrap();
    let text = format!(
        "name: t\nmodels:\n  - id: {}\n    label: broken\n  - id: {SMOLLM2}\n    label: fine\nmethods:\n  - name: dense\ntasks:\n  - name: arc_easy_shared\n    limit: 2\nmeasure:\n  routing: false\n  flops: false\n",
        broken.path().display()
    );
    let (_dir, path, run_dir) = suite(&text);
    let _guard = model_lock();
    let out = run(&path, &run_dir, &["--quiet"]);
    let (out_text, err) = (stdout(&out), stderr(&out));
    assert_eq!(out.status.code(), Some(1), "{out_text}{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        out_text.contains("failed broken/dense/arc_easy_shared: non-finite model output"),
        "{out_text}"
    );
    assert!(out_text.contains("1 failed"), "{out_text}");
    let records: Vec<serde_json::Value> = std::fs::read_to_string(run_dir.join("records.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let metric_of = |model: &str| {
        records
            .iter()
            .any(|r| r["kind"] == "metric" && r["model_label"] == model)
    };
    assert!(!metric_of("broken"), "no accuracy from NaN logits");
    assert!(metric_of("fine"), "the other model's task ran");
    let failed: Vec<&serde_json::Value> = records
        .iter()
        .filter(|r| r["kind"] == "job_failed")
        .collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["task"], "arc_easy_shared");
}

#[test]
fn a_closed_stdout_pipe_ends_quietly() {
    let mut child = moebench_command(&repo_root(), &["methods", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 1];
    child.stdout.take().unwrap().read_exact(&mut first).unwrap();
    // The reader went away after one byte (like `| head -c1`).
    let out = child.wait_with_output().unwrap();
    let err = stderr(&out);
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.is_empty(), "{err}");
}

#[test]
fn a_torn_multibyte_record_does_not_break_report_or_resume() {
    let (_dir, path, run_dir) = suite(&tiny_suite("  - name: dense\n"));
    let out = run(&path, &run_dir, &["--quiet"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // A crash in the middle of a record cut inside a two-byte character, then a stray byte.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(run_dir.join("records.jsonl"))
        .unwrap();
    std::io::Write::write_all(&mut f, b"{\"kind\":\"metric\",\"metric\":\"acc,\xc3").unwrap();
    std::io::Write::write_all(&mut f, b"\n\xff\n").unwrap();
    let report = moebench(&["report", run_dir.to_str().unwrap()]);
    assert!(report.status.success(), "{}", stderr(&report));
    let again = run(&path, &run_dir, &["--quiet"]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(stdout(&again).contains("0 ran"), "{}", stdout(&again));
}

#[test]
fn compare_exits_3_on_a_regression_and_1_on_an_error() {
    let out = moebench(&["compare", "/nonexistent/a", "/nonexistent/b"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let usage = moebench(&["compare"]);
    assert_eq!(usage.status.code(), Some(2), "clap usage errors exit 2");
}

/// A task that executes model-generated code is refused before any job unless the suite
/// confirms it (`code_execution.confirm_run_unsafe_code`, lm-eval's --confirm_run_unsafe_code);
/// confirmed, `run` executes the generations (of a suite-built byte-level model trained on
/// Python) in the sandbox and records pass@1.
#[test]
fn code_tasks_run_only_when_the_suite_confirms_it() {
    if !repo_root()
        .join("../shared/datasets/humaneval/HumanEval.jsonl.gz")
        .exists()
    {
        eprintln!("SKIP code_tasks_run_only_when_the_suite_confirms_it: ../shared/datasets/humaneval is absent");
        return;
    }
    let text = |extra: &str| {
        format!(
            "name: t\nmodels:\n  - label: dense\n    build: {{layers: 1, hidden_size: 32, heads: 2, intermediate_size: 32, steps: 1, batch_size: 2, seq_len: 32, warmup: 0, text: [{}]}}\nmethods:\n  - name: dense\ntasks:\n  - name: humaneval_shared\n    limit: 1\nmeasure:\n  routing: false\n{extra}",
            repo_root().join("harness/sandbox/src/python/runner.py").display()
        )
    };
    assert_checked_before_running(
        &text(""),
        &[
            "task `humaneval_shared` executes model-generated code",
            "code_execution: {confirm_run_unsafe_code: true}",
        ],
    );
    let (_dir, path, run_dir) = suite(&text(
        "code_execution:\n  confirm_run_unsafe_code: true\n  allow_unisolated: true\n",
    ));
    let out = run(&path, &run_dir, &["--quiet"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let records = std::fs::read_to_string(run_dir.join("records.jsonl")).unwrap();
    let pass_at_1: Vec<f64> = records
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|r| r["metric"] == "pass@1,create_test")
        .map(|r| r["value"].as_f64().unwrap())
        .collect();
    assert_eq!(pass_at_1.len(), 1, "one pass@1 record");
    assert!((0.0..=1.0).contains(&pass_at_1[0]), "{pass_at_1:?}");
}

/// A target that names no job of the plan (here a task the suite does not run) is a pre-run
/// problem, so a gate can never pass by checking nothing.
#[test]
fn a_target_naming_no_job_is_refused() {
    let text = format!(
        "{}targets:\n  - {{model: moe, method: dense, task: arc_challenge_shared, metric: acc, value: 0.5}}\n",
        tiny_suite("  - name: dense\n")
    );
    assert_checked_before_running(
        &text,
        &["targets[0] (moe/dense/arc_challenge_shared) names no job of the plan"],
    );
}

/// A claim whose `than` job is not in the plan (the method is restricted to another model) is a
/// pre-run problem, like a target's.
#[test]
fn a_claim_naming_no_job_is_refused() {
    let text = format!(
        "{}claims:\n  - {{claim: c, model: dense, better: dense, than: topk, task: arc_easy_shared, metric: \"acc,none\"}}\n",
        tiny_suite("  - name: dense\n  - name: topk\n    params: {k: 1}\n    models: [moe]\n")
    );
    assert_checked_before_running(
        &text,
        &["claims[0] (dense/topk/arc_easy_shared) names no job of the plan"],
    );
}

/// `run --check-targets` gates on claims too: a tiny built MoE's own top-2 routing and a Top-2
/// router swap answer every document alike, so "the swap beats it" is inconclusive (exit 3, the
/// claims table with both values and the paired interval over the documents).
#[test]
fn run_check_targets_exits_3_when_a_claim_does_not_hold() {
    let text = "name: t\ndefaults:\n  max_length: 32\nmodels:\n  - label: moe\n    build: {layers: 1, hidden_size: 32, heads: 2, intermediate_size: 32, experts: 4, top_k: 2, steps: 2, batch_size: 2, seq_len: 32, warmup: 1, text: [train.txt]}\nmethods:\n  - name: dense\n  - name: topk\n    params: {k: 2}\ntasks:\n  - name: shakespeare_nextline\n    limit: 6\nmeasure:\n  routing: false\nclaims:\n  - {claim: twins differ, model: moe, better: topk, than: dense, task: shakespeare_nextline, metric: \"acc,none\", source: \"made up\"}\n";
    let (dir, path, run_dir) = suite(text);
    std::fs::write(
        dir.path().join("train.txt"),
        "Shall I compare thee to a summer's day?\n".repeat(20),
    )
    .unwrap();
    let out = run(&path, &run_dir, &["--quiet", "--check-targets"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("twins differ") && table.contains("INCONCLUSIVE") && table.contains("(n=6)"),
        "{table}"
    );
    assert!(
        stderr(&out).contains("claims failed: 1 of 1 do not hold"),
        "{}",
        stderr(&out)
    );
}

/// `run --check-targets` gates on the suite's targets: a missed target exits 3 with the table
/// (target / obtained / Δ / source), a met one exits 0.
#[test]
fn run_check_targets_exits_3_on_a_missed_target() {
    let suite_with = |tolerance: &str| {
        format!(
            "{}targets:\n  - {{model: moe, method: dense, metric: params_total, value: 0, tolerance: {tolerance}, source: \"made up\"}}\n",
            tiny_suite("  - name: dense\n")
        )
    };
    let (_dir, path, run_dir) = suite(&suite_with("0"));
    let out = run(&path, &run_dir, &["--quiet", "--check-targets"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("params_total") && table.contains("made up"),
        "{table}"
    );
    assert!(
        stderr(&out).contains("targets missed: 1 of 1"),
        "{}",
        stderr(&out)
    );
    let (_dir, path, run_dir) = suite(&suite_with("1e12"));
    let out = run(&path, &run_dir, &["--quiet", "--check-targets"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}
