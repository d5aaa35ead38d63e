//! `moebench report` and `moebench compare` end to end on synthetic run directories.
mod common;

use common::*;
use moebench_report::synthetic::Synthetic;
use std::path::{Path, PathBuf};

fn synthetic_run(root: &Path, name: &str, dense_accuracy: f64) -> PathBuf {
    let mut spec = Synthetic::example();
    spec.rows[0].accuracy = dense_accuracy;
    let dir = root.join(name);
    spec.write(&dir).unwrap();
    dir
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn report_writes_a_self_contained_html_file() {
    let root = tempfile::tempdir().unwrap();
    let run = synthetic_run(root.path(), "run", 0.62);
    let out = moebench(&["report", path(&run)]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("report.html"), "{}", stdout(&out));
    let html = std::fs::read_to_string(run.join("report.html")).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.contains("<section id=\"leaderboard\">") && html.contains("<svg "));
    // Self-contained: nothing is fetched (no external scripts, styles, images or fonts).
    for external in [
        "src=\"http",
        "href=\"http",
        "url(http",
        "@import",
        "<script src",
        "<link ",
    ] {
        assert!(
            !html.contains(external),
            "the report references `{external}`"
        );
    }
    assert!(run.join("results.csv").exists() && run.join("results.json").exists());

    let older = Synthetic {
        start_time: "2025-12-31T00:00:00Z".into(),
        ..Synthetic::example()
    };
    older.write(&root.path().join("older")).unwrap();
    let custom = root.path().join("custom.html");
    let out = moebench(&[
        "report",
        path(&run),
        "--history",
        path(root.path()),
        "-o",
        path(&custom),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(std::fs::read_to_string(custom)
        .unwrap()
        .contains("<section id=\"history\">"));
}

#[test]
fn report_of_a_non_run_fails_cleanly() {
    let root = tempfile::tempdir().unwrap();
    assert_clean_failure(&moebench(&["report", path(root.path())]), "no run.json");
}

#[test]
fn compare_exit_codes() {
    let root = tempfile::tempdir().unwrap();
    let base = synthetic_run(root.path(), "base", 0.62);
    let same = synthetic_run(root.path(), "same", 0.62);
    let worse = synthetic_run(root.path(), "worse", 0.45);

    let out = moebench(&[
        "compare",
        path(&base),
        path(&same),
        "--fail-on-regression",
        "--markdown",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("0 significant regressions"),
        "{}",
        stdout(&out)
    );

    let out = moebench(&[
        "compare",
        path(&base),
        path(&worse),
        "--fail-on-regression",
        "--markdown",
    ]);
    // A regression is not an error: exit code 3, one `regression:` line.
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).starts_with("regression: 5 significant regression(s)"),
        "{}",
        stderr(&out)
    );
    assert!(
        stdout(&out).contains("- smol/dense arc_easy acc,none"),
        "{}",
        stdout(&out)
    );

    let out = moebench(&["compare", path(&base), path(&worse)]);
    assert!(
        out.status.success(),
        "without --fail-on-regression the exit code is 0"
    );
    assert!(stdout(&out).contains("REGRESSION"));
}
