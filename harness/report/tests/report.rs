//! The report, the results files and the comparison, on synthetic run directories.
use moebench_report::synthetic::Synthetic;
use moebench_report::{compare, render, results_json, CompareOptions, Run, Test, Verdict};
use std::path::{Path, PathBuf};

fn write(dir: &Path, spec: &Synthetic) -> PathBuf {
    spec.write(dir).unwrap();
    dir.to_owned()
}

fn example_in(root: &tempfile::TempDir, name: &str) -> PathBuf {
    write(&root.path().join(name), &Synthetic::example())
}

fn rendered(run: &Path, history: &[PathBuf]) -> String {
    let written = render(run, history, None).unwrap();
    assert_eq!(written.html, run.join("report.html"));
    std::fs::read_to_string(written.html).unwrap()
}

#[test]
fn report_has_every_section() {
    let root = tempfile::tempdir().unwrap();
    let run = example_in(&root, "run");
    let html = rendered(&run, &[]);
    for id in [
        "run",
        "leaderboard",
        "targets",
        "pareto",
        "tasks",
        "measures",
        "routing",
        "jobs",
    ] {
        assert!(
            html.contains(&format!("<section id=\"{id}\">")),
            "section {id} missing"
        );
    }
    assert!(
        !html.contains("<section id=\"history\">"),
        "no history without --history"
    );
    // Headline metrics: acc_norm for the multiple-choice tasks, word_perplexity for wikitext.
    assert!(html.contains("<th>arc_easy acc_norm ↑</th>"), "{html}");
    assert!(html.contains("<th>wikitext word_perplexity ↓</th>"));
    assert!(html.contains("<th>accuracy avg (2 tasks) ↑</th>"));
    // Four Pareto plots and a heatmap per row, each an inline SVG.
    assert_eq!(html.matches("<figcaption>Accuracy average vs ").count(), 4);
    assert!(html.contains("decode_tokens_per_s_b1 (higher is better)"));
    assert!(html.contains("class=\"dot on-front\""));
    assert!(html.contains("<polyline points=\""));
    assert_eq!(
        html.matches("<figcaption>smol &#x2f; ").count(),
        3,
        "a routing heatmap per row"
    );
    assert_eq!(html.matches("<svg ").count(), 4 + 3);
    // The target row passes; the interrupted job's 0.999 never shows.
    assert!(html.contains("<td class=\"pass\">pass</td>"));
    assert!(!html.contains("0.9990"));
    assert!(html.contains("lm_eval_rolling(max_length=2048,context_len=1)"));
}

#[test]
fn report_has_no_external_references() {
    let root = tempfile::tempdir().unwrap();
    let html = rendered(&example_in(&root, "run"), &[]);
    let body = html.replace("xmlns=\"http://www.w3.org/2000/svg\"", "");
    for needle in [
        "http://", "https://", "//cdn", "<script", " src=", "url(", "@import", "<link",
    ] {
        assert!(!body.contains(needle), "found `{needle}`");
    }
}

#[test]
fn report_without_measures_routing_or_targets() {
    let root = tempfile::tempdir().unwrap();
    let spec = Synthetic {
        measures: false,
        routing: false,
        targets: Vec::new(),
        perplexity: false,
        interrupted_job: false,
        ..Synthetic::example()
    };
    let html = rendered(&write(&root.path().join("run"), &spec), &[]);
    for id in ["pareto", "measures", "routing", "targets"] {
        assert!(
            !html.contains(&format!("id=\"{id}\"")),
            "section {id} should be skipped"
        );
    }
    assert!(html.contains("<section id=\"leaderboard\">"));
    assert!(!html.contains("<svg "));
}

#[test]
fn history_orders_runs_by_start_time() {
    let root = tempfile::tempdir().unwrap();
    let history = root.path().join("history");
    let older = |name: &str, time: &str, accuracy: f64| {
        let mut spec = Synthetic {
            start_time: time.into(),
            ..Synthetic::example()
        };
        spec.rows[0].accuracy = accuracy;
        write(&history.join(name), &spec)
    };
    older("b", "2026-01-03T00:00:00Z", 0.60);
    older("a", "2026-01-02T00:00:00Z", 0.55);
    let current = example_in(&root, "current");
    let html = rendered(&current, &[history]);
    assert!(html.contains("<section id=\"history\">"));
    assert!(html.contains(
        "over 3 runs, ordered by start time: 2026-01-01 00:00, 2026-01-02 00:00, 2026-01-03 00:00"
    ));
    // One chart per task headline metric, one line per model × method.
    assert_eq!(html.matches("class=\"trend\"").count(), 3 * 3);
}

#[test]
fn results_csv_has_one_row_per_metric_record() {
    let root = tempfile::tempdir().unwrap();
    let run_dir = example_in(&root, "run");
    let written = render(&run_dir, &[], Some(&root.path().join("elsewhere.html"))).unwrap();
    assert!(root.path().join("elsewhere.html").exists());
    let mut reader = csv::Reader::from_path(&written.csv).unwrap();
    let header = reader.headers().unwrap().clone();
    for column in [
        "model_label",
        "method_label",
        "method_params",
        "task",
        "metric",
        "value",
        "stderr",
        "n",
    ] {
        assert!(header.iter().any(|h| h == column), "column {column}");
    }
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    // 3 rows × (2 tasks × {acc, acc_norm} + word_perplexity); measures and the interrupted job excluded.
    assert_eq!(rows.len(), 15);
    let metric = header.iter().position(|h| h == "metric").unwrap();
    assert!(rows.iter().all(|r| r[metric].contains(',')));
}

#[test]
fn results_json_follows_lm_eval() {
    let root = tempfile::tempdir().unwrap();
    let run_dir = example_in(&root, "run");
    render(&run_dir, &[], None).unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("results.json")).unwrap())
            .unwrap();
    assert_eq!(json, results_json(&Run::load(&run_dir).unwrap()));
    let arc = &json["results"]["smol/dense"]["arc_easy"];
    assert_eq!(arc["alias"], "arc_easy");
    let acc = arc["acc,none"].as_f64().unwrap();
    assert!((0.5..0.75).contains(&acc), "{acc}");
    assert!(arc["acc_stderr,none"].as_f64().unwrap() > 0.0);
    assert!(json["results"]["smol/pruned-50"]["wikitext"]["word_perplexity,none"].is_number());
    assert_eq!(
        json["measures"]["smol/moe-top2"]["decode_tokens_per_s_b1"],
        70.0
    );
    assert_eq!(json["n-samples"]["smol/dense"]["piqa"]["effective"], 200);
    assert_eq!(json["run"]["suite"], "synthetic");
    assert_eq!(json["config"]["smol/dense"]["method_label"], "dense");
}

#[test]
fn not_a_run_directory_fails_clearly() {
    let root = tempfile::tempdir().unwrap();
    let e = render(root.path(), &[], None).unwrap_err().to_string();
    assert!(e.contains("no run.json"), "{e}");
}

fn with_dense_accuracy(root: &tempfile::TempDir, name: &str, accuracy: f64) -> PathBuf {
    let mut spec = Synthetic::example();
    spec.rows[0].accuracy = accuracy;
    write(&root.path().join(name), &spec)
}

#[test]
fn identical_runs_have_no_regression() {
    let root = tempfile::tempdir().unwrap();
    let (base, new) = (example_in(&root, "base"), example_in(&root, "new"));
    let c = compare(&base, &new, &CompareOptions::default()).unwrap();
    assert_eq!(c.rows.len(), 15);
    assert_eq!(c.regressions().count(), 0);
    assert!(c
        .rows
        .iter()
        .all(|r| r.delta == 0.0 && r.verdict == Verdict::NotSignificant));
    let acc = c.rows.iter().find(|r| r.metric == "acc,none").unwrap();
    assert_eq!(acc.test, Test::PairedBootstrap(200));
    let ppl = c.rows.iter().find(|r| r.task == "wikitext").unwrap();
    assert_eq!(
        ppl.test,
        Test::ZTest,
        "perplexity logs no per-document number"
    );
}

#[test]
fn a_drop_on_many_shared_docs_is_a_named_regression() {
    let root = tempfile::tempdir().unwrap();
    let base = example_in(&root, "base");
    let new = with_dense_accuracy(&root, "new", 0.45);
    let c = compare(&base, &new, &CompareOptions::default()).unwrap();
    let regressed: Vec<(String, String, String)> = c
        .regressions()
        .map(|r| (r.method_label.clone(), r.task.clone(), r.metric.clone()))
        .collect();
    for (task, metric) in [
        ("arc_easy", "acc,none"),
        ("piqa", "acc_norm,none"),
        ("wikitext", "word_perplexity,none"),
    ] {
        assert!(
            regressed.contains(&("dense".into(), task.into(), metric.into())),
            "{task} {metric}: {regressed:?}"
        );
    }
    assert!(
        regressed.iter().all(|r| r.0 == "dense"),
        "only the dense row changed"
    );
    let md = c.render(true);
    assert!(md.contains("**Regressions:**"), "{md}");
    assert!(md.contains("- smol/dense arc_easy acc,none: "), "{md}");
    assert!(md.contains("| model | method | task | metric |"));
    assert!(md.contains("REGRESSION"));
    assert!(md.contains("z-test (stderr)"));
    assert!(md.contains("paired bootstrap (n=200)"));
    // Raising the bar above the drops (0.17 accuracy, 6.8 perplexity) silences them.
    let strict = CompareOptions {
        min_delta: 10.0,
        ..CompareOptions::default()
    };
    assert_eq!(
        compare(&base, &new, &strict).unwrap().regressions().count(),
        0
    );
}

#[test]
fn a_small_noisy_change_is_not_significant() {
    let root = tempfile::tempdir().unwrap();
    let base = example_in(&root, "base");
    let mut spec = Synthetic::example();
    spec.rows[0].noise = 4;
    let new = write(&root.path().join("new"), &spec);
    let c = compare(&base, &new, &CompareOptions::default()).unwrap();
    let changed: Vec<&moebench_report::Row> = c.rows.iter().filter(|r| r.delta != 0.0).collect();
    assert_eq!(
        changed.len(),
        4,
        "acc and acc_norm of both tasks lost one document"
    );
    assert!(
        changed
            .iter()
            .all(|r| (r.delta + 0.005).abs() < 1e-12 && r.p_value > Some(0.05)),
        "{}",
        c.render(false)
    );
    assert_eq!(c.regressions().count(), 0);
}
