//! lm-eval's own tooling reads `moebench eval`'s output files: the results (tasks, a group of
//! aliased tasks, a generation task with two filters, a perplexity task) through
//! `lm_eval.utils.make_table` and lm-eval's file helpers, and every sample line the way its
//! Zeno and W&B loggers read them (tests/python/read_lm_eval_outputs.py, in the venv that
//! `make hook-venv` installs). Skips visibly without that venv or the model.
mod common;

use common::*;
use std::path::PathBuf;

/// `MOEBENCH_LM_EVAL_PYTHON`, else `.venv-hooks/bin/python` (`make hook-venv`).
fn lm_eval_python(test: &str) -> Option<PathBuf> {
    let python = std::env::var_os("MOEBENCH_LM_EVAL_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".venv-hooks/bin/python"));
    if python.exists() {
        return Some(python);
    }
    eprintln!(
        "SKIPPED {test}: no lm-eval reader venv at {} (run `make hook-venv`)",
        python.display()
    );
    None
}

#[test]
fn lm_eval_make_table_and_readers_read_eval_outputs() {
    let test = "lm_eval_outputs";
    let Some(python) = lm_eval_python(test) else {
        return;
    };
    let _lock = model_lock();
    if smollm2_dir(test).is_none() {
        return;
    }
    if !repo_root().join("../shared/datasets").is_dir() {
        eprintln!("SKIPPED {test}: ../shared/datasets is absent");
        return;
    }
    let out = tempfile::tempdir().unwrap();
    let tasks = [
        "arc_easy_shared",
        "gsm8k_offline",
        "wikitext_shared",
        "mmlu_shared_stem",
    ];
    let result = moebench(&[
        "eval",
        SMOLLM2,
        "--device",
        "cpu",
        "--tasks",
        &tasks.join(","),
        "--limit",
        "2",
        "--num-fewshot",
        "0",
        "--max-length",
        "512",
        "--log-samples",
        "--out",
        out.path().to_str().unwrap(),
    ]);
    assert!(result.status.success(), "{}", stderr(&result));
    let read = std::process::Command::new(&python)
        .arg(repo_root().join("tests/python/read_lm_eval_outputs.py"))
        .arg(out.path())
        .args([
            "arc_easy_shared",
            "gsm8k_offline",
            "wikitext_shared",
            "mmlu_shared_astronomy",
        ])
        .output()
        .expect("run the lm-eval reader");
    let printed = String::from_utf8_lossy(&read.stdout);
    assert!(
        read.status.success(),
        "lm-eval could not read moebench's outputs:\n{printed}\n{}",
        String::from_utf8_lossy(&read.stderr)
    );
    // make_table printed the group's aggregate, and its subjects indented below it.
    assert!(printed.contains("|Groups"), "no group table:\n{printed}");
    assert!(
        printed.contains("|stem "),
        "no row for the group (alias `stem`):\n{printed}"
    );
    assert!(
        printed.contains(" - astronomy"),
        "subjects not under the group:\n{printed}"
    );
}
