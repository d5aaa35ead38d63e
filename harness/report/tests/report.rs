//! The report, the results files and the comparison, on synthetic run directories.
use moebench_report::synthetic::Synthetic;
use moebench_report::{
    check_run_targets, compare, render, results_json, CompareOptions, RenderOptions, Run,
    TargetStatus, Test, Verdict,
};
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

/// The text of the element that starts at `start` (e.g. `<div class="base" id="base-0">`),
/// up to the next occurrence of `end`.
fn between<'a>(html: &'a str, start: &str, end: &str) -> &'a str {
    let from = html
        .find(start)
        .unwrap_or_else(|| panic!("`{start}` missing"));
    let rest = &html[from..];
    let to = rest[start.len()..]
        .find(end)
        .map_or(rest.len(), |i| i + start.len());
    &rest[..to]
}

/// Position of `<section id="ID">`, panicking when absent.
fn section(html: &str, id: &str) -> usize {
    html.find(&format!("<section id=\"{id}\">"))
        .unwrap_or_else(|| panic!("section {id} missing"))
}

#[test]
fn report_has_every_section() {
    let root = tempfile::tempdir().unwrap();
    let run = example_in(&root, "run");
    let html = rendered(&run, &[]);
    for id in [
        "targets",
        "overview",
        "leaderboard",
        "tasks",
        "measures",
        "routing",
        "jobs",
        "run",
    ] {
        section(&html, id);
    }
    assert!(
        !html.contains("<section id=\"history\">"),
        "no history without --history"
    );
    assert!(
        !html.contains("<section id=\"suite-plots\">"),
        "no suite plots without report.pareto"
    );
    // Headline metrics: acc_norm for the multiple-choice tasks, word_perplexity for wikitext.
    assert!(html.contains(">arc_easy acc_norm ↑</th>"), "{html}");
    assert!(html.contains(">wikitext word_perplexity ↓</th>"));
    assert!(html.contains(">accuracy avg (2 tasks) ↑</th>"));
    // Cost columns in the leaderboard.
    for cost in [
        "active params",
        "FLOPs/token",
        "bytes/token",
        "latency",
        "memory",
    ] {
        assert!(
            between(&html, "<table class=\"sortable leaderboard\"", "</thead>")
                .contains(&format!(">{}</th>", cost.replace('/', "&#x2f;"))),
            "cost column {cost}"
        );
    }
    // One base: a view per cost axis (6), each a large chart; a heatmap per row (3).
    assert_eq!(html.matches("<div class=\"view\" data-axis=").count(), 6);
    assert_eq!(html.matches("<svg ").count(), 6 + 3);
    assert!(html.contains("<button type=\"button\" data-axis=\"tpot_ms_b1\""));
    assert!(html.contains("class=\"dot reference\""));
    assert!(html.contains("class=\"ref-line\""));
    assert!(html.contains("<polyline points=\""));
    assert_eq!(
        html.matches("<figcaption>smol &#x2f; ").count(),
        3,
        "a routing heatmap per row"
    );
    // Hypervolume in a table with its reference point, never in a chart title.
    assert!(html.contains("<h4>Hypervolume</h4>"));
    assert!(html.contains("reference point 10% of each range beyond the worst"));
    assert!(!html.contains("hypervolume:"), "no hypervolume in titles");
    // The target row passes; the interrupted job's 0.999 never shows.
    assert!(html.contains("<td class=\"pass\">pass</td>"));
    assert!(html.contains("1 of 1 target pass"));
    assert!(!html.contains("0.9990"));
    assert!(html.contains("lm_eval_rolling(max_length=2048,context_len=1)"));
}

#[test]
fn sections_answer_first_and_metadata_ends() {
    let root = tempfile::tempdir().unwrap();
    // No targets, no history: quality vs cost opens the page.
    let plain = Synthetic {
        targets: Vec::new(),
        ..Synthetic::example()
    };
    let html = rendered(&write(&root.path().join("plain"), &plain), &[]);
    let order = |html: &str, ids: &[&str]| {
        let positions: Vec<usize> = ids.iter().map(|id| section(html, id)).collect();
        assert!(
            positions.windows(2).all(|w| w[0] < w[1]),
            "sections out of order: {ids:?} at {positions:?}"
        );
        assert_eq!(
            html.matches("<section id=").count(),
            ids.len(),
            "exactly the sections {ids:?}"
        );
    };
    order(
        &html,
        &[
            "overview",
            "leaderboard",
            "tasks",
            "measures",
            "routing",
            "jobs",
            "run",
        ],
    );
    // Targets come first when the run has them.
    let with_targets = rendered(&example_in(&root, "targets"), &[]);
    order(
        &with_targets,
        &[
            "targets",
            "overview",
            "leaderboard",
            "tasks",
            "measures",
            "routing",
            "jobs",
            "run",
        ],
    );
    // Trends come first in --history mode.
    let older = Synthetic {
        start_time: "2025-12-01T00:00:00Z".into(),
        ..Synthetic::example()
    };
    let history = write(&root.path().join("older"), &older);
    let current = example_in(&root, "current");
    let html = rendered(&current, &[history]);
    order(
        &html,
        &[
            "history",
            "targets",
            "overview",
            "leaderboard",
            "tasks",
            "measures",
            "routing",
            "jobs",
            "run",
        ],
    );
}

#[test]
fn report_has_no_external_references() {
    let root = tempfile::tempdir().unwrap();
    let html = rendered(&example_in(&root, "run"), &[]);
    let body = html.replace("xmlns=\"http://www.w3.org/2000/svg\"", "");
    for needle in [
        "http://",
        "https://",
        "//cdn",
        " src=",
        "url(",
        "@import",
        "<link",
        "fetch(",
        "XMLHttpRequest",
        "import(",
        "<iframe",
    ] {
        assert!(!body.contains(needle), "found `{needle}`");
    }
    // Scripts are inline.
    assert_eq!(
        body.matches("<script").count(),
        body.matches("<script>").count()
    );
    assert_eq!(body.matches("<script>").count(), 1);
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
    for id in ["measures", "routing", "targets"] {
        assert!(
            !html.contains(&format!("id=\"{id}\"")),
            "section {id} should be skipped"
        );
    }
    assert!(html.contains("<section id=\"leaderboard\">"));
    assert!(html.contains("The run measured no cost"));
    assert!(!html.contains("<svg "));
}

#[test]
fn ties_are_not_bolded() {
    let root = tempfile::tempdir().unwrap();
    // Rows of one model share their per-document draws: equal accuracies give equal scores.
    let mut spec = Synthetic::example();
    for row in &mut spec.rows {
        row.accuracy = 0.6;
    }
    spec.perplexity = false;
    let html = rendered(&write(&root.path().join("tied"), &spec), &[]);
    let board = between(&html, "<table class=\"sortable leaderboard\"", "</table>");
    assert!(!board.contains("class=\"best\""), "a tie was marked best");
    // Distinct values: exactly one best per quality column (2 tasks + the average).
    let html = rendered(&example_in(&root, "distinct"), &[]);
    let board = between(&html, "<table class=\"sortable leaderboard\"", "</table>");
    // 2 tasks, wikitext and the average.
    assert_eq!(board.matches("class=\"best\"").count(), 4, "{board}");
}

#[test]
fn bases_get_separate_charts() {
    let root = tempfile::tempdir().unwrap();
    let run = write(&root.path().join("study"), &Synthetic::study());
    let html = rendered(&run, &[]);
    let olmoe = between(
        &html,
        "<div class=\"base\" id=\"base-0\">",
        "<div class=\"base\" id=",
    );
    let smol = between(&html, "<div class=\"base\" id=\"base-1\">", "</section>");
    assert!(olmoe.contains("<h3>olmoe-1b-7b<"), "{olmoe}");
    assert!(smol.contains("<h3>smollm2-135m<"));
    // Each base's charts hold its own rows only.
    assert!(olmoe.contains("<title>reap[compression=0.5]: "));
    assert!(!olmoe.contains("upcycle-8x2"));
    assert!(smol.contains("<title>upcycle-8x2: "));
    assert!(!smol.contains("reap["));
    // A chart per cost axis per base, none mixing them.
    assert_eq!(olmoe.matches("<svg ").count(), 6);
    assert_eq!(smol.matches("<svg ").count(), 6);
    // Hypervolume per method family over its sweep points.
    assert!(olmoe.contains("<td class=\"label\">reap</td><td class=\"num\" data-v=\"2.0\">2</td>"));

    // Asked for, two bases share one chart (compared with the first one's dense row).
    let grouped = moebench_report::render_with(
        &run,
        &RenderOptions {
            groups: vec![vec!["olmoe-1b-7b".into(), "smollm2-135m".into()]],
            ..RenderOptions::default()
        },
    )
    .unwrap();
    let html = std::fs::read_to_string(grouped.html).unwrap();
    assert!(!html.contains("id=\"base-1\""));
    let both = between(&html, "<div class=\"base\" id=\"base-0\">", "</section>");
    assert!(both.contains("<h3>olmoe-1b-7b + smollm2-135m<"));
    assert!(both.contains("<title>smollm2-135m&#x2f;upcycle-8x2: "));
    assert!(both.contains("<title>olmoe-1b-7b&#x2f;reap[compression=0.5]: "));
}

#[test]
fn delta_vs_base_is_tested_on_shared_documents() {
    let root = tempfile::tempdir().unwrap();
    let mut spec = Synthetic::example();
    spec.perplexity = false;
    // moe-top2 changes four answers each way but one (Δ = −1/200): noise; pruned-50 loses
    // 13 points.
    spec.rows[1].accuracy = spec.rows[0].accuracy;
    spec.rows[1].noise = 4;
    let html = rendered(&write(&root.path().join("run"), &spec), &[]);
    let board = between(&html, "<table class=\"sortable leaderboard\"", "</table>");
    let row = |method: &str| {
        between(
            board,
            &format!("<td class=\"label\">{method}</td>"),
            "</tr>",
        )
    };
    assert!(
        !row("dense").contains("class=\"delta"),
        "the reference has no Δ"
    );
    let noisy = row("moe-top2");
    assert!(noisy.contains("<span class=\"delta same\""), "{noisy}");
    assert!(noisy.contains(">−0.0050</span>"), "{noisy}");
    assert!(noisy.contains("paired bootstrap (n=200)"));
    let pruned = row("pruned-50");
    assert!(pruned.contains("<span class=\"delta worse\""), "{pruned}");
    assert!(
        pruned.contains("*</span>"),
        "significant changes carry a star"
    );
    // The average is tested on both tasks' documents pooled.
    assert!(pruned.contains("paired bootstrap (n=400)"), "{pruned}");
}

#[test]
fn quality_axis_can_be_chosen() {
    let root = tempfile::tempdir().unwrap();
    let run = example_in(&root, "run");
    let options = |quality: &str| RenderOptions {
        quality: Some(quality.into()),
        ..RenderOptions::default()
    };
    let written = moebench_report::render_with(&run, &options("wikitext/word_perplexity")).unwrap();
    let html = std::fs::read_to_string(written.html).unwrap();
    assert!(html.contains("y: <b>wikitext word_perplexity</b>."));
    assert!(html
        .contains("class=\"axis-label\" text-anchor=\"middle\">wikitext word_perplexity</text>"));
    // Perplexity is better low: the "better" corner is bottom-left.
    assert!(html.contains("↙ better"));
    let e = moebench_report::render_with(&run, &options("nope/acc"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("quality `nope/acc` is not a number of this run")
            && e.contains("accuracy_avg, arc_easy/acc_norm,none"),
        "{e}"
    );
}

#[test]
fn old_run_directories_without_measure_directions_still_render() {
    let root = tempfile::tempdir().unwrap();
    let spec = Synthetic {
        legacy_measures: true,
        ..Synthetic::example()
    };
    let html = rendered(&write(&root.path().join("old"), &spec), &[]);
    // Directions guessed from the names, as documented for old run directories.
    assert!(html.contains(">decode_tokens_per_s_b1 ↑</th>"));
    assert!(html.contains(">flops_per_token ↓</th>"));
    assert!(html.contains("class=\"dot reference\""));
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
    assert!(html
        .contains("Ordered by start time: 2026-01-01 00:00, 2026-01-02 00:00, 2026-01-03 00:00"));
    // Per base: the quality chart and one chart per task headline metric, a line per method.
    assert_eq!(html.matches("class=\"trend\"").count(), 3 * (1 + 3));
}

#[test]
fn results_csv_is_tidy_with_costs_and_deltas() {
    let root = tempfile::tempdir().unwrap();
    let run_dir = example_in(&root, "run");
    let written = render(&run_dir, &[], Some(&root.path().join("elsewhere.html"))).unwrap();
    assert!(root.path().join("elsewhere.html").exists());
    let mut reader = csv::Reader::from_path(&written.csv).unwrap();
    let header = reader.headers().unwrap().clone();
    let column = |name: &str| {
        header
            .iter()
            .position(|h| h == name)
            .unwrap_or_else(|| panic!("column {name}"))
    };
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    // 3 rows × (2 tasks × {acc, acc_norm} + word_perplexity); measures and the interrupted
    // job excluded; one row per (model, method, task, metric).
    assert_eq!(rows.len(), 15);
    let keys: std::collections::BTreeSet<(String, String, String, String)> = rows
        .iter()
        .map(|r| {
            let c = |n: &str| r[column(n)].to_owned();
            (c("model_label"), c("method_label"), c("task"), c("metric"))
        })
        .collect();
    assert_eq!(keys.len(), 15);
    let find = |method: &str, task: &str, metric: &str| {
        rows.iter()
            .find(|r| {
                &r[column("method_label")] == method
                    && &r[column("task")] == task
                    && &r[column("metric")] == metric
            })
            .unwrap()
    };
    let num = |r: &csv::StringRecord, name: &str| r[column(name)].parse::<f64>().unwrap();
    let dense = find("dense", "arc_easy", "acc_norm,none");
    let pruned = find("pruned-50", "arc_easy", "acc_norm,none");
    // Costs on every row.
    assert_eq!(num(dense, "params_active"), 135e6);
    assert_eq!(num(pruned, "flops_per_token"), 135e6);
    assert_eq!(num(pruned, "tpot_ms_b1"), 1000.0 / 60.0);
    assert_eq!(num(dense, "bytes_per_decode_token"), 4.0 * 135e6);
    assert_eq!(num(dense, "peak_rss_mib"), 600.0);
    // The 95% interval and the Δ vs the base's dense row (tested for headline metrics).
    let half = 1.96 * num(pruned, "stderr");
    assert!((num(pruned, "ci_low") - (num(pruned, "value") - half)).abs() < 1e-12);
    assert!((num(pruned, "ci_high") - (num(pruned, "value") + half)).abs() < 1e-12);
    assert_eq!(&pruned[column("base_model")], "smol");
    assert_eq!(&pruned[column("headline")], "true");
    assert_eq!(
        num(pruned, "delta_vs_base"),
        num(pruned, "value") - num(dense, "value")
    );
    assert_eq!(num(pruned, "base_value"), num(dense, "value"));
    assert!(num(pruned, "delta_p_value") < 0.05);
    assert_eq!(&pruned[column("delta_test")], "paired bootstrap (n=200)");
    assert_eq!(
        &dense[column("delta_vs_base")],
        "",
        "the reference has no Δ"
    );
    let acc = find("pruned-50", "arc_easy", "acc,none");
    assert_eq!(&acc[column("headline")], "false");
    assert_eq!(
        &acc[column("delta_p_value")],
        "",
        "only headlines are tested"
    );
    assert!(acc[column("delta_vs_base")].parse::<f64>().is_ok());
    assert_eq!(&acc[column("metric_name")], "acc");
    assert_eq!(&acc[column("filter")], "none");
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

#[test]
fn run_targets_are_checked_from_the_run_directory() {
    let root = tempfile::tempdir().unwrap();
    let check = check_run_targets(&example_in(&root, "run"))
        .unwrap()
        .expect("the example has a target");
    assert_eq!(check.results.len(), 1);
    assert_eq!(check.results[0].status, TargetStatus::Pass);
    let plain = Synthetic {
        targets: Vec::new(),
        ..Synthetic::example()
    };
    assert_eq!(
        check_run_targets(&write(&root.path().join("plain"), &plain)).unwrap(),
        None
    );
}
