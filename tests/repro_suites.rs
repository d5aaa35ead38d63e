//! The paper-reproduction suites (`suites/repro/`) need a GPU host and the Hub, so here they
//! must plan: `run --dry-run` checks every parameter against the catalogue, every model
//! reference, and that every target and claim names a job of the plan (a missing job is an
//! error). The mini-reproductions (`suites/repro-mini/`) run on a CPU in minutes, but train
//! their models: here they plan, and each states at least one claim.
mod common;

use common::*;

fn suites_in(folder: &str) -> Vec<std::path::PathBuf> {
    let mut suites: Vec<_> = std::fs::read_dir(repo_root().join(folder))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    suites.sort();
    suites
}

#[test]
fn every_repro_suite_plans_and_its_targets_name_jobs() {
    let suites = suites_in("suites/repro");
    assert!(suites.len() >= 6, "{suites:?}");
    let mini = suites_in("suites/repro-mini");
    assert!(mini.len() >= 5, "{mini:?}");
    for suite in &mini {
        let text = std::fs::read_to_string(suite).unwrap();
        assert!(
            text.contains("\nclaims:\n"),
            "{}: no claims",
            suite.display()
        );
    }
    for suite in suites.iter().chain(&mini) {
        let out = moebench(&["run", suite.to_str().unwrap(), "--dry-run"]);
        let err = stderr(&out);
        assert!(out.status.success(), "{}: {err}", suite.display());
        let table = String::from_utf8_lossy(&out.stdout);
        assert!(
            table.lines().filter(|l| l.starts_with('|')).count() > 2,
            "{}: no plan table in {table}",
            suite.display()
        );
    }
}
