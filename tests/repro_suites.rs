//! The paper-reproduction suites (`suites/repro/`) need a GPU host and the Hub, so here they
//! must plan: `run --dry-run` checks every parameter against the catalogue, every model
//! reference, and that every target names a job of the plan (a missing job is an error).
mod common;

use common::*;

#[test]
fn every_repro_suite_plans_and_its_targets_name_jobs() {
    let dir = repo_root().join("suites/repro");
    let mut suites: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    suites.sort();
    assert!(suites.len() >= 6, "{suites:?}");
    for suite in &suites {
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
