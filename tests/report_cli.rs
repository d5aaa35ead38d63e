//! `moebench report` and `moebench compare` end to end on synthetic run directories.
mod common;

use common::*;
use moebench_report::synthetic::Synthetic;
use moebench_suite::suite::Target;
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
fn report_flags_choose_quality_and_groups() {
    let root = tempfile::tempdir().unwrap();
    let run = root.path().join("study");
    moebench_report::synthetic::Synthetic::study()
        .write(&run)
        .unwrap();
    let out = moebench(&[
        "report",
        path(&run),
        "--quality",
        "hellaswag/acc_norm",
        "--group",
        "olmoe-1b-7b,smollm2-135m",
        "--bootstrap-iters",
        "200",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let html = std::fs::read_to_string(run.join("report.html")).unwrap();
    assert!(html.contains("y: <b>hellaswag acc_norm</b>."));
    assert!(html.contains("<h3>olmoe-1b-7b + smollm2-135m<"));

    // An unknown quality: a one-line error naming the choices, and nothing written.
    std::fs::remove_file(run.join("report.html")).unwrap();
    assert_clean_failure(
        &moebench(&["report", path(&run), "--quality", "piqa/bleu"]),
        "quality `piqa/bleu` is not a number of this run; use one of: accuracy_avg",
    );
    assert!(!run.join("report.html").exists());
    // A group of one label is a usage error.
    let out = moebench(&["report", path(&run), "--group", "olmoe-1b-7b"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("a group is two or more model labels"));
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

#[test]
fn compare_json_lists_every_metric_with_its_verdict() {
    let root = tempfile::tempdir().unwrap();
    let base = synthetic_run(root.path(), "base", 0.62);
    let worse = synthetic_run(root.path(), "worse", 0.45);
    let out = moebench(&[
        "compare",
        path(&base),
        path(&worse),
        "--json",
        "--fail-on-regression",
        "--bootstrap-iters",
        "500",
    ]);
    // The exit code follows the verdicts as without --json; stdout is one JSON document.
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("see the rows with verdict `regression`"),
        "{}",
        stderr(&out)
    );
    let doc: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let rows = doc["rows"].as_array().unwrap();
    assert_eq!(doc["metrics"], rows.len());
    assert_eq!(doc["options"]["bootstrap_iters"], 500);
    let regressions: Vec<&serde_json::Value> = rows
        .iter()
        .filter(|r| r["verdict"] == "regression")
        .collect();
    assert_eq!(doc["regressions"], regressions.len());
    assert_eq!(regressions.len(), 5, "{doc:#}");
    let arc = rows
        .iter()
        .find(|r| {
            r["model_label"] == "smol"
                && r["method_label"] == "dense"
                && r["task"] == "arc_easy"
                && r["metric"] == "acc,none"
        })
        .unwrap_or_else(|| panic!("no dense arc_easy acc row: {doc:#}"));
    assert_eq!(arc["verdict"], "regression");
    assert_eq!(arc["higher_is_better"], true);
    let (base_value, new_value) = (arc["base"].as_f64().unwrap(), arc["new"].as_f64().unwrap());
    assert!((arc["delta"].as_f64().unwrap() - (new_value - base_value)).abs() < 1e-12);
    assert!(arc["p_value"].as_f64().unwrap() < 0.05);
    let kind = arc["test"]["kind"].as_str().unwrap();
    assert!(["paired_bootstrap", "z_test"].contains(&kind), "{arc}");
    // Rows that did not change are listed too, as not significant.
    assert!(
        rows.iter().any(|r| r["verdict"] == "not_significant"),
        "{doc:#}"
    );
}

fn target(method: &str, value: f64, tolerance: f64, source: &str) -> Target {
    Target {
        model: "smol".into(),
        method: method.into(),
        task: Some("arc_easy".into()),
        metric: "acc,none".into(),
        value,
        tolerance,
        source: Some(source.into()),
    }
}

/// The words of the table row of `method` in `--check-targets`' output.
fn target_row(stdout: &str, method: &str) -> Vec<String> {
    stdout
        .lines()
        .map(|l| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .find(|cells| cells.len() > 2 && cells[0] == "smol" && cells[1] == method)
        .unwrap_or_else(|| panic!("no target row for {method}: {stdout}"))
}

#[test]
fn report_check_targets_exits_3_on_a_failed_or_missing_target() {
    let root = tempfile::tempdir().unwrap();
    // The example's rows score about 0.62 (dense) and 0.49 (pruned-50) on arc_easy; no row
    // has the method `distilled`, so its job is missing.
    let spec = Synthetic {
        targets: vec![
            target("dense", 0.6, 0.05, "Table-1-dense"),
            target("pruned-50", 0.6, 0.02, "Table-1-pruned"),
            target("distilled", 0.55, 0.02, "Table-2-distilled"),
        ],
        ..Synthetic::example()
    };
    let run = root.path().join("run");
    spec.write(&run).unwrap();
    let out = moebench(&["report", path(&run), "--check-targets"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert_eq!(
        stderr(&out).trim_end(),
        format!(
            "targets missed: 2 of 3 not met in {}; see the table above",
            run.display()
        )
    );
    let text = stdout(&out);
    assert!(
        text.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()
                == [
                    "model", "method", "task", "metric", "target", "obtained", "Δ", "status",
                    "source"
                ]),
        "{text}"
    );
    let dense = target_row(&text, "dense");
    assert_eq!(dense[4..7], ["0.6000", "±", "0.0500"]);
    assert_eq!(dense[9..], ["pass", "Table-1-dense"]);
    let pruned = target_row(&text, "pruned-50");
    let obtained: f64 = pruned[7].parse().unwrap();
    assert!((0.4..0.58).contains(&obtained), "{pruned:?}");
    assert!(pruned[8].starts_with('−'), "Δ below the target: {pruned:?}");
    assert_eq!(pruned[9..], ["FAIL", "Table-1-pruned"]);
    assert_eq!(
        target_row(&text, "distilled")[7..],
        ["—", "—", "MISSING", "Table-2-distilled"]
    );
    // The report is written all the same, its targets section first.
    let html = std::fs::read_to_string(run.join("report.html")).unwrap();
    let first_section = html.find("<section id=").unwrap();
    assert!(html[first_section..].starts_with("<section id=\"targets\">"));
    assert!(html.contains("1 of 3 targets pass"));

    // All targets met: exit code 0 and the summary.
    let met = root.path().join("met");
    Synthetic {
        targets: vec![target("dense", 0.6, 0.05, "Table-1-dense")],
        ..Synthetic::example()
    }
    .write(&met)
    .unwrap();
    let out = moebench(&["report", path(&met), "--check-targets"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).ends_with("targets: 1 of 1 target pass\n"));

    // No targets to check is an error, not a silent pass.
    let none = root.path().join("none");
    Synthetic {
        targets: Vec::new(),
        ..Synthetic::example()
    }
    .write(&none)
    .unwrap();
    let out = moebench(&["report", path(&none), "--check-targets"]);
    assert_clean_failure(&out, "--check-targets, but the run has no targets");
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn compare_of_runs_without_a_shared_metric_fails() {
    let root = tempfile::tempdir().unwrap();
    let base = synthetic_run(root.path(), "base", 0.62);
    let mut other = Synthetic::example();
    for row in &mut other.rows {
        row.model = "other".into();
    }
    let other_dir = root.path().join("other");
    other.write(&other_dir).unwrap();
    let out = moebench(&["compare", path(&base), path(&other_dir)]);
    assert_clean_failure(&out, "share no metric");
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).is_empty(), "{}", stdout(&out));
}

#[test]
fn compare_fails_on_a_metric_that_turned_nan() {
    let root = tempfile::tempdir().unwrap();
    let base = synthetic_run(root.path(), "base", 0.62);
    let new = synthetic_run(root.path(), "new", 0.62);
    // One metric of the new run turned NaN (the store writes non-finite values as null).
    let records = new.join("records.jsonl");
    let text = std::fs::read_to_string(&records).unwrap();
    let mut nulled = 0;
    let lines: Vec<String> = text
        .lines()
        .map(|line| {
            let mut r: serde_json::Value = serde_json::from_str(line).unwrap();
            if r["method_label"] == "moe-top2"
                && r["task"] == "arc_easy"
                && r["metric"] == "acc,none"
            {
                r["value"] = serde_json::Value::Null;
                nulled += 1;
            }
            r.to_string()
        })
        .collect();
    assert_eq!(nulled, 1);
    std::fs::write(&records, lines.join("\n") + "\n").unwrap();

    for extra in [&[][..], &["--fail-on-regression"][..]] {
        let mut args = vec!["compare", path(&base), path(&new)];
        args.extend_from_slice(extra);
        let out = moebench(&args);
        assert_clean_failure(&out, "1 metric(s) are not a number (NaN)");
        assert_eq!(out.status.code(), Some(1));
        let text = stdout(&out);
        let listed = text
            .lines()
            .find(|l| l.starts_with("- smol/moe-top2 arc_easy acc,none: "))
            .unwrap_or_else(|| panic!("the NaN metric is not listed: {text}"));
        assert!(listed.ends_with(" → NaN"), "{listed}");
        assert!(text.contains("NOT A NUMBER"), "{text}");
    }
}
