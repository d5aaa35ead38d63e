//! `moebench tasks` and `moebench tasks validate`, and groups of groups through
//! `moebench eval`: the listing, per-file verdicts (`--json`: one object per file), the error a
//! Python hook gives without Python (the hook, its YAML line and the native alternative),
//! task directories with bad files, lm-eval's own MMLU YAMLs in a group of inline members, and
//! the aggregate of `mmlu_shared` (a group of groups).
mod common;

use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};

const GOOD: &str =
    "task: good\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: t.jsonl\n\
                    test_split: test\noutput_type: multiple_choice\ndoc_to_text: \"{{q}}\"\n\
                    doc_to_target: 0\ndoc_to_choice: [\"a\", \"b\"]\n";

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn tasks_lists_the_shipped_names() {
    let out = moebench(&["tasks", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let lines: Vec<Value> = stdout(&out)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let find = |name: &str| lines.iter().find(|l| l["name"] == name).cloned().unwrap();
    assert_eq!(find("mmlu_shared")["kind"], "group");
    assert_eq!(find("arc_easy_shared")["kind"], "task");
    assert_eq!(find("moebench_shared")["kind"], "tag");
}

#[test]
fn a_bad_file_in_a_tasks_dir_is_skipped_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "good.yaml", GOOD);
    write(dir.path(), "bad.yaml", "task: [unclosed\n");
    let out = moebench(&["tasks", "--tasks-dir", dir.path().to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).lines().any(|l| l.starts_with("good\ttask\t")));
    let warning = stderr(&out);
    assert!(
        warning.contains("warning: skipped") && warning.contains("bad.yaml"),
        "{warning}"
    );
}

/// Without Python (`MOEBENCH_PYTHON` naming no interpreter) a hook is rejected with the hook,
/// its YAML file and line, and the built-in port that needs no Python.
#[test]
fn validate_reports_each_file_and_hooks_without_python() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "good.yaml", GOOD);
    write(
        dir.path(),
        "typo.yaml",
        &GOOD.replace("task: good", "task: typo\ndoc_to_txt: q"),
    );
    let hooked = write(
        dir.path(),
        "hellaswag.yaml",
        &GOOD.replace(
            "task: good",
            "task: hellaswag_like\nprocess_docs: !function utils.process_docs",
        ),
    );
    write(
        dir.path(),
        "utils.py",
        "def process_docs(ds):\n    return ds\n",
    );
    let out = moebench_command(
        &repo_root(),
        &["tasks", "validate", "--json", dir.path().to_str().unwrap()],
    )
    .env("MOEBENCH_PYTHON", dir.path().join("no-python"))
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let verdicts: Vec<Value> = stdout(&out)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(verdicts.len(), 3);
    for verdict in &verdicts {
        let keys: Vec<&String> = verdict.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["path", "accepted", "reason"]);
    }
    let by_name = |name: &str| {
        verdicts
            .iter()
            .find(|v| v["path"].as_str().unwrap().ends_with(name))
            .unwrap()
    };
    assert_eq!(by_name("good.yaml")["accepted"], true);
    assert_eq!(by_name("good.yaml")["reason"], Value::Null);
    let typo = by_name("typo.yaml")["reason"].as_str().unwrap();
    assert!(typo.contains("unknown field `doc_to_txt`"), "{typo}");
    assert!(typo.contains("did you mean `doc_to_text`"), "{typo}");
    let hook = by_name("hellaswag.yaml")["reason"].as_str().unwrap();
    let at = format!("{}:2", std::path::absolute(&hooked).unwrap().display());
    assert!(hook.starts_with(&at), "{hook}");
    assert!(
        hook.contains("`!function utils.process_docs` needs Python"),
        "{hook}"
    );
    // Why there is no Python: the environment variable names no interpreter, or this build
    // has no embedded Python (`--no-default-features`).
    assert!(
        hook.contains("MOEBENCH_PYTHON") || hook.contains("built without Python hooks"),
        "{hook}"
    );
    assert!(hook.contains("moebench_processor: hellaswag"), "{hook}");
    assert!(
        stderr(&out).contains("accepted 1 of 3 YAML files"),
        "{}",
        stderr(&out)
    );
}

fn results(out_dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(out_dir.join("results.json")).unwrap()).unwrap()
}

/// `mmlu_shared` is a group of four groups: every level gets lm-eval's size-weighted
/// aggregate of its leaf tasks.
#[test]
fn a_group_of_groups_is_aggregated() {
    let _lock = model_lock();
    if smollm2_dir("a_group_of_groups_is_aggregated").is_none() {
        return;
    }
    if !repo_root().join("../shared/datasets").is_dir() {
        eprintln!("SKIP a_group_of_groups_is_aggregated: ../shared/datasets is absent");
        return;
    }
    let out = tempfile::tempdir().unwrap();
    let run = moebench(&[
        "eval",
        SMOLLM2,
        "--device",
        "cpu",
        "--tasks",
        "mmlu_shared",
        "--limit",
        "1",
        "--out",
        out.path().to_str().unwrap(),
    ]);
    assert!(run.status.success(), "{}", stderr(&run));
    let results = results(out.path());
    let leaves: Vec<f64> = results["results"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(name, _)| {
            name.starts_with("mmlu_shared_") && results["groups"].get(*name).is_none()
        })
        .map(|(_, entry)| entry["acc,none"].as_f64().unwrap())
        .collect();
    assert_eq!(leaves.len(), 57);
    let mean = leaves.iter().sum::<f64>() / leaves.len() as f64;
    let top = results["groups"]["mmlu_shared"]["acc,none"]
        .as_f64()
        .unwrap();
    assert!((top - mean).abs() < 1e-12, "{top} vs {mean}");
    for sub in ["stem", "other", "social_sciences", "humanities"] {
        assert!(
            results["groups"][format!("mmlu_shared_{sub}")]["acc,none"].is_f64(),
            "{sub}"
        );
    }
}

/// lm-eval's own MMLU subject YAMLs (from the hook environment's lm_eval), named in a group
/// as inline members with their data source overridden, give lm-eval's group aggregate
/// (`tests/fixtures/lm_eval/mmlu`: group `mmlu_subset` of three subjects, 20 documents each).
#[test]
fn lm_eval_mmlu_yamls_in_an_inline_group_match_lm_eval() {
    let test = "lm_eval_mmlu_yamls_in_an_inline_group_match_lm_eval";
    let _lock = model_lock();
    if smollm2_dir(test).is_none() {
        return;
    }
    let shared = repo_root().join("../shared/datasets/mmlu");
    if !shared.is_dir() {
        eprintln!("SKIP {test}: ../shared/datasets is absent");
        return;
    }
    let python = repo_root().join(".venv-hooks/bin/python");
    let found = std::process::Command::new(&python)
        .args([
            "-c",
            "import os, lm_eval; print(os.path.dirname(lm_eval.__file__))",
        ])
        .output();
    let Some(lm_eval) = found.ok().filter(|o| o.status.success()) else {
        eprintln!(
            "SKIP {test}: no lm_eval in {} (run `make hook-venv`)",
            python.display()
        );
        return;
    };
    let mmlu = PathBuf::from(String::from_utf8_lossy(&lm_eval.stdout).trim()).join("tasks/mmlu");
    let dir = tempfile::tempdir().unwrap();
    let members: String = ["abstract_algebra", "anatomy", "marketing"]
        .iter()
        .map(|subject| {
            let csv = |split: &str| {
                shared
                    .join(split)
                    .join(format!("{subject}_{split}.csv"))
                    .canonicalize()
                    .unwrap()
                    .display()
                    .to_string()
            };
            format!(
                "  - task: mmlu_{subject}\n    moebench_loader: mmlu_csv\n    dataset_name: {subject}\n\
                 \x20   dataset_kwargs:\n      data_files:\n        test: {}\n        dev: {}\n",
                csv("test"),
                csv("dev")
            )
        })
        .collect();
    let group = write(
        dir.path(),
        "mmlu_subset.yaml",
        &format!(
            "group: mmlu_subset\ntask:\n{members}aggregate_metric_list:\n  - metric: acc\n\
             \x20   weight_by_size: true\nmetadata:\n  version: 2\n"
        ),
    );
    let out = tempfile::tempdir().unwrap();
    let run = moebench_command(
        &repo_root(),
        &[
            "eval",
            SMOLLM2,
            "--device",
            "cpu",
            "--tasks-dir",
            mmlu.to_str().unwrap(),
            "--tasks",
            group.to_str().unwrap(),
            "--limit",
            "20",
            "--out",
            out.path().to_str().unwrap(),
        ],
    )
    .env("MOEBENCH_PYTHON", &python)
    .output()
    .unwrap();
    assert!(run.status.success(), "{}", stderr(&run));
    let ours = results(out.path());
    let theirs = fixture("lm_eval/mmlu/results.json");
    for name in [
        "mmlu_abstract_algebra",
        "mmlu_anatomy",
        "mmlu_marketing",
        "mmlu_subset",
    ] {
        for key in ["acc,none", "acc_stderr,none"] {
            let (got, want) = (&ours["results"][name][key], &theirs["results"][name][key]);
            let (got, want) = (got.as_f64().unwrap(), want.as_f64().unwrap());
            assert!(
                (got - want).abs() <= 1e-12,
                "{name} {key}: {got} vs lm-eval {want}"
            );
        }
    }
}
