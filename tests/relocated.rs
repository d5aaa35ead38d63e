//! An installed or copied binary needs no files from where it was built into: shipped tasks,
//! the default calibration text and templates are found through the data roots
//! (`$MOEBENCH_DATA`, the checkout beside the binary, the checkout it was built from), and
//! libtorch through the RUNPATH baked at build time (docs/architecture.md, "Installing").
mod common;

use common::*;
use std::path::Path;
use std::process::Command;

/// The binary copied into a fresh directory, run from there.
fn copied_binary(dir: &Path) -> Command {
    let exe = dir.join("moebench");
    if !exe.exists() {
        std::fs::copy(env!("CARGO_BIN_EXE_moebench"), &exe).unwrap();
    }
    let mut command = Command::new(exe);
    command
        .current_dir(dir)
        .env("HF_HUB_CACHE", hub_cache())
        .env("HF_HUB_OFFLINE", "1")
        .env_remove("MOEBENCH_DATA");
    command
}

/// Runs `command`, retrying while the kernel says the fresh copy is busy (ETXTBSY): a process
/// another test thread forks while the copy's write handle is open inherits that handle until
/// it execs, and executing a file open for writing fails. The copy itself is complete.
fn output(command: &mut Command) -> std::process::Output {
    for _ in 0..100 {
        match command.output() {
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy => {
                std::thread::sleep(std::time::Duration::from_millis(50))
            }
            result => return result.unwrap(),
        }
    }
    panic!("the copied binary stayed busy (ETXTBSY) for 5 s")
}

#[test]
fn a_copied_binary_runs_eval_and_a_suite_from_another_directory() {
    let Some(_) = smollm2_dir("a_copied_binary_runs_eval_and_a_suite_from_another_directory")
    else {
        return;
    };
    let _lock = model_lock();
    let dir = tempfile::tempdir().unwrap();
    let out = output(copied_binary(dir.path()).args([
        "eval",
        SMOLLM2,
        "--tasks",
        "arc_easy_shared",
        "--limit",
        "2",
        "--out",
        "ev",
        "--json",
    ]));
    assert!(out.status.success(), "{}", stderr(&out));
    let results: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        results["results"]["arc_easy_shared"]["acc,none"].is_number(),
        "{results}"
    );
    std::fs::write(
        dir.path().join("suite.yaml"),
        format!("name: t\nmodels:\n  - id: {SMOLLM2}\n    label: smol\nmethods:\n  - name: dense\ntasks:\n  - name: arc_easy_shared\n    limit: 2\nmeasure:\n  routing: false\n"),
    )
    .unwrap();
    let out = output(copied_binary(dir.path()).args([
        "run",
        "suite.yaml",
        "--run-dir",
        "run",
        "--json",
        "--quiet",
    ]));
    assert!(out.status.success(), "{}", stderr(&out));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["failed"], serde_json::json!([]), "{summary}");
    assert_eq!(summary["best"][0]["model"], "smol", "{summary}");
    assert!(dir.path().join("run/report.html").is_file());
}

/// `$MOEBENCH_DATA` comes first: a moved install points it at its data directory.
#[test]
fn the_data_directory_variable_is_looked_at_first() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(data.join("suites/tasks")).unwrap();
    let out = output(
        copied_binary(dir.path())
            .env("MOEBENCH_DATA", &data)
            .args(["doctor", "--json"]),
    );
    let checks: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let tasks = checks
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "shipped tasks")
        .unwrap();
    let detail = tasks["detail"].as_str().unwrap();
    assert!(
        detail.contains(&format!("under {}", data.display())),
        "{detail}"
    );
}
