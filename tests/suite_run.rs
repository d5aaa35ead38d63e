//! `moebench run` / `moebench rescore` end to end (issue #5): bad suites fail before anything
//! is written, `--dry-run` writes nothing, an interrupted run resumes to the same numbers.
mod common;

use common::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn run(path: &Path, run_dir: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "run",
        path.to_str().unwrap(),
        "--run-dir",
        run_dir.to_str().unwrap(),
    ];
    args.extend(extra);
    moebench(&args)
}

fn tiny_suite(extra: &str) -> String {
    format!(
        "name: t\nmodels:\n  - id: {}\n    label: mixtral\nmethods:\n  - name: dense\ntasks:\n  - name: arc_easy_shared\n    limit: 2\n{extra}",
        tiny("mixtral")
    )
}

/// Runs `text`, expects a clean failure mentioning `needle`, and that nothing was written.
fn assert_rejected(text: &str, needle: &str) {
    let (_dir, path, run_dir) = suite(text);
    let out = run(&path, &run_dir, &[]);
    assert_clean_failure(&out, needle);
    assert!(!run_dir.exists(), "nothing may be written for a bad suite");
}

#[test]
fn bad_suites_fail_before_writing() {
    let lines =
        tiny_suite("").replace("    label: mixtral\n", "    label: mixtral\n    lable: x\n");
    assert_rejected(&lines, "suite.yaml:5:5: models[0]: unknown field `lable`");
    assert_rejected(&lines, "did you mean `label`?");
    assert_rejected(
        &tiny_suite("calibration:\n  source: nope.txt\n"),
        "suite.yaml:11:3: calibration source",
    );
    assert_rejected(
        &tiny_suite("defaults:\n  batch_size: many\n"),
        "suite.yaml:11:15: defaults.batch_size: invalid type: string \"many\"",
    );
    assert_rejected(&tiny_suite("").replace("arc_easy_shared", "arc_esy_shared"), "suite.yaml:8:5: arc_esy_shared: no task, group or tag named `arc_esy_shared` (did you mean `arc_easy_shared`?)");
    assert_rejected(
        &tiny_suite("").replace("name: dense", "name: upcycling"),
        "suite.yaml:6:5: methods: unknown method `upcycling` (did you mean `upcycle`?",
    );
    let twice = tiny_suite("").replace(
        "methods:",
        &format!(
            "  - id: {}\n    label: mixtral\nmethods:",
            tiny("qwen3_moe")
        ),
    );
    assert_rejected(&twice, "suite.yaml:6:5: models: `mixtral` appears twice");
    assert_rejected(
        &tiny_suite("").replace("methods:\n  - name: dense\n", "methods: []\n"),
        "suite.yaml:5:1: `methods` is empty",
    );
    let missing = moebench(&[
        "run",
        "/nonexistent/suite.yaml",
        "--run-dir",
        "/nonexistent/run",
    ]);
    assert_clean_failure(&missing, "cannot read /nonexistent/suite.yaml");
}

#[test]
fn dry_run_lists_jobs_and_writes_nothing() {
    let (_dir, path, run_dir) = suite(&tiny_suite(""));
    let out = run(&path, &run_dir, &["--dry-run"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let table = stdout(&out);
    assert!(
        table.contains("|mixtral|dense|(measures)|to run|"),
        "{table}"
    );
    assert!(
        table.contains("|mixtral|dense|arc_easy_shared|skip: mixtral has no tokenizer.json|"),
        "{table}"
    );
    assert!(!run_dir.exists());
}

#[test]
fn tiny_moe_models_get_measures_only() {
    let _lock = model_lock();
    let (_dir, path, run_dir) = suite(&tiny_suite(""));
    let out = run(&path, &run_dir, &["--quiet"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).is_empty(), "--quiet: {}", stderr(&out));
    let records = records(&run_dir);
    let metrics: Vec<&str> = records
        .iter()
        .map(|r| r["metric"].as_str().unwrap())
        .collect();
    assert_eq!(
        metrics,
        [
            "active_experts_mean",
            "active_experts_std",
            "load_cv",
            "max_violation",
            "load_entropy",
            "dead_experts",
            "params_total",
            "params_active",
            "flops_per_token",
            "bytes_per_decode_token",
            "records"
        ]
    );
    let value = |name: &str| {
        records.iter().find(|r| r["metric"] == name).unwrap()["value"]
            .as_f64()
            .unwrap()
    };
    assert!(
        value("params_active") < value("params_total"),
        "MoE: active < total"
    );
    // Top-2 routing of the calibration tokens (random ids: no tokenizer): exactly 2 per token.
    assert_eq!(value("active_experts_mean"), 2.0);
    assert_eq!(value("active_experts_std"), 0.0);
    assert_eq!(records[0]["kind"], "measure");
    assert_eq!(records[0]["task"], Value::Null);
    assert!(records[0]["protocol"]
        .as_str()
        .unwrap()
        .contains("topk(k=2,renorm)"));
    // The routing log behind the report's heatmap: 16 × 128 calibration tokens × top-2 per layer.
    let job = records[0]["job"].as_str().unwrap();
    let log: Value = serde_json::from_str(
        &std::fs::read_to_string(run_dir.join("routing").join(format!("{job}.json"))).unwrap(),
    )
    .unwrap();
    let layers = log["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 2);
    for layer in layers {
        let total: f64 = layer["loads"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l.as_f64().unwrap())
            .sum();
        assert_eq!(total, 16.0 * 128.0 * 2.0);
    }
    assert!(run_dir.join("report.html").is_file() && run_dir.join("targets.json").is_file());
    // The run ends with a summary; the leaderboard table only with --table.
    assert!(
        stdout(&out).starts_with("2 jobs: 1 ran, 0 failed, 0 done earlier, 1 skipped"),
        "{}",
        stdout(&out)
    );
    let again = run(&path, &run_dir, &["--quiet", "--table"]);
    assert!(
        stdout(&again).starts_with("|model|method|active_experts_mean↓|"),
        "{}",
        stdout(&again)
    );
}

/// Every line of records.jsonl, parsed (all must parse).
fn records(run_dir: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(run_dir.join("records.jsonl")).unwrap();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// (job label, metric) → (value, stderr) of the metric and measure records.
fn values(run_dir: &Path) -> BTreeMap<(String, String), (Value, Value)> {
    records(run_dir)
        .into_iter()
        .filter(|r| r["kind"] != "job_done")
        .filter(|r| r["kind"] != "measure") // measures are exact; metrics are what resume risks
        .map(|r| {
            let label = format!("{}/{}", r["model_label"], r["task"]);
            (
                (label, r["metric"].as_str().unwrap().to_owned()),
                (r["value"].clone(), r["stderr"].clone()),
            )
        })
        .collect()
}

fn smollm2_suite() -> String {
    format!(
        "name: resume\ndefaults:\n  device: cpu\n  bootstrap_iters: 10\nmodels:\n  - id: {SMOLLM2}\n    label: smollm2\nmethods:\n  - name: dense\ntasks:\n  - name: arc_easy_shared\n    limit: 4\n  - name: shakespeare_nextline\n    limit: 3\n  - name: lambada_openai_shared\n    limit: 4\n"
    )
}

fn job_dones(run_dir: &Path) -> usize {
    let text = std::fs::read_to_string(run_dir.join("records.jsonl")).unwrap_or_default();
    text.lines()
        .filter(|l| l.contains("\"kind\":\"job_done\""))
        .count()
}

#[test]
fn killed_run_resumes_to_the_same_numbers_and_rescores() {
    if smollm2_dir("killed_run_resumes_to_the_same_numbers_and_rescores").is_none() {
        return;
    }
    let _lock = model_lock();
    let (_dir, path, run_dir) = suite(&smollm2_suite());
    let reference = run_dir.with_file_name("reference");
    let out = run(&path, &reference, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(job_dones(&reference), 4);

    let args = [
        "run",
        path.to_str().unwrap(),
        "--run-dir",
        run_dir.to_str().unwrap(),
    ];
    let mut child = moebench_command(&repo_root(), &args)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    while job_dones(&run_dir) == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let done_before = job_dones(&run_dir);
    assert!(
        (1..4).contains(&done_before),
        "killed mid-way: {done_before} jobs done"
    );

    let out = run(&path, &run_dir, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let skipped = stderr(&out)
        .lines()
        .filter(|l| l.ends_with("(earlier run)"))
        .count();
    assert_eq!(
        skipped,
        done_before,
        "finished jobs are skipped: {}",
        stderr(&out)
    );
    assert_eq!(job_dones(&run_dir), 4, "each job finished exactly once");
    assert_eq!(values(&run_dir), values(&reference));

    let out = moebench(&["rescore", run_dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("metrics rescored, 0 differ"),
        "{}",
        stdout(&out)
    );
}

/// Every shipped suite parses and plans offline (`--dry-run`): what needs the Hub, a GPU or
/// trained models is listed as notes, not errors.
#[test]
fn shipped_suites_plan_offline() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("suites");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .chain(std::fs::read_dir(root.join("repro")).unwrap())
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 5, "{files:?}");
    for file in &files {
        let out = moebench(&["run", file.to_str().unwrap(), "--dry-run"]);
        assert!(out.status.success(), "{}: {}", file.display(), stderr(&out));
        let table = stdout(&out);
        assert!(
            table.starts_with("|job|model|method|task|state|"),
            "{table}"
        );
        assert!(table.contains("(measures)"), "{}: {table}", file.display());
    }
}

/// Methods that build one model from several (DUME, weight averaging), and chains, run from a
/// suite: on the tiny dense llama (no tokenizer, so calibration and domain windows are seeded
/// random ids), DUME of three copies has three experts per layer and top-1 routing; averaging
/// identical copies keeps the dense model's size; `upcycle → reap` ends with half the experts.
#[test]
fn multi_model_methods_and_chains_run_from_a_suite() {
    let _lock = model_lock();
    let llama = tiny("llama");
    let text = format!(
        "name: t\nmodels:\n  - id: {llama}\n    label: llama\nmethods:\n  - name: dense\n  - name: weight_average\n    params: {{experts: [{llama}, {llama}]}}\n  - name: dume\n    params: {{experts: [{llama}, {llama}], domains: [a.txt, b.txt, c.txt]}}\n  - name: upcycle\n    label: up4+reap\n    params: {{num_experts: 4, top_k: 2}}\n    then: [{{name: reap, params: {{compression: 0.5}}}}]\ntasks:\n  - name: arc_easy_shared\n    limit: 2\n"
    );
    let (_dir, path, run_dir) = suite(&text);
    let out = run(&path, &run_dir, &["--quiet"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let value = |method: &str, metric: &str| {
        records(&run_dir)
            .iter()
            .find(|r| r["method_label"] == method && r["metric"] == metric)
            .unwrap_or_else(|| panic!("{method} {metric}"))["value"]
            .as_f64()
            .unwrap()
    };
    let dense = value("dense", "params_total");
    assert_eq!(value("weight_average", "params_total"), dense);
    assert_eq!(value("dume", "active_experts_mean"), 1.0);
    assert!(value("dume", "params_total") > dense);
    assert!(value("dume", "method_apply_s") > 0.0);
    assert_eq!(value("up4+reap", "active_experts_mean"), 2.0);
    // 4 experts pruned to 2: total = dense + (2 − 1) MLP copies per layer + routers.
    assert!(value("up4+reap", "params_total") > dense);
    assert!(value("up4+reap", "params_total") < value("dume", "params_total"));
}

/// `moebench apply` saves a compressed checkpoint that loads again (with half the experts), and
/// names a bad method or parameter cleanly without writing anything.
#[test]
fn apply_saves_a_reloadable_checkpoint() {
    let _lock = model_lock();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("reap");
    let mixtral = tiny("mixtral");
    let args = |method: &str, params: &str| {
        moebench(&[
            "apply",
            &mixtral,
            "--device",
            "cpu",
            "--method",
            method,
            "--params",
            params,
            "--out",
            out.to_str().unwrap(),
        ])
    };
    let result = args("reap", r#"{"compression": 0.5}"#);
    assert!(result.status.success(), "{}", stderr(&result));
    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["num_local_experts"], 2);
    let inspect = moebench(&["inspect", out.to_str().unwrap(), "--json"]);
    assert!(inspect.status.success(), "{}", stderr(&inspect));
    std::fs::remove_dir_all(&out).unwrap();
    assert_clean_failure(&args("reaps", "{}"), "did you mean `reap`?");
    assert_clean_failure(
        &args("reap", r#"{"compression": 1.5}"#),
        "parameter `compression` is 1.5; allowed: [0, 1)",
    );
    assert!(!out.exists());
}

/// Dense2MoE (fixed span and δ search), its baselines (layer pruning, prune-then-upcycle,
/// LLM-Streamline), BTX and DUME+, from a suite, on a 6-layer dense byte-level model
/// built by `moebench train --scratch` (2 steps): the fused model has one MoE layer (2 routed
/// experts + the own MLP shared) and 4 blocks, the pruned one 4 dense blocks, and both read
/// fewer bytes per decode token than the dense model.
#[test]
fn dense2moe_and_layer_pruning_run_from_a_suite() {
    let _lock = model_lock();
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("text.txt");
    std::fs::write(
        &text,
        "To be, or not to be, that is the question. ".repeat(40),
    )
    .unwrap();
    let model = dir.path().join("dense6");
    let out = moebench(&[
        "train",
        "--scratch",
        "--experts",
        "0",
        "--layers",
        "6",
        "--hidden-size",
        "32",
        "--heads",
        "2",
        "--intermediate-size",
        "64",
        "--steps",
        "2",
        "--batch-size",
        "2",
        "--seq-len",
        "32",
        "--warmup",
        "1",
        "--holdout",
        "0",
        "--text",
        text.to_str().unwrap(),
        "--out",
        model.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let suite_text = format!(
        "name: t\nmodels:\n  - id: {}\n    label: d6\nmethods:\n  - name: dense\n  - name: dense2moe\n    params: {{span_len: 3}}\n  - name: layer_prune\n    params: {{span_len: 3}}\n  - name: btx\n    params: {{experts: [{m}, {m}], domains: [{t}, {t}, {t}], steps: 2, batch_size: 2, seq_len: 32}}\n  - name: dume_plus\n    params: {{experts: [{m}], domains: [{t}, {t}], steps: 2, batch_size: 2, seq_len: 32}}\n  - name: dense2moe\n    label: dense2moe-search\n    params: {{delta: -1.0, max_span_len: 3}}\n  - name: layer_prune\n    label: layer_prune-search\n    params: {{delta: -1.0, max_span_len: 3}}\n  - name: prune_then_upcycle\n    params: {{span_len: 3}}\n  - name: llm_streamline\n    params: {{span_len: 3, steps: 2}}\ntasks:\n  - name: shakespeare_nextline\n    limit: 2\ncalibration:\n  source: {}\n  sequences: 2\n  length: 32\n",
        model.display(),
        text.display(),
        m = model.display(),
        t = text.display(),
    );
    let (_d, path, run_dir) = suite(&suite_text);
    let out = run(&path, &run_dir, &["--quiet"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let value = |method: &str, metric: &str| {
        records(&run_dir)
            .iter()
            .find(|r| r["method_label"] == method && r["metric"] == metric)
            .map(|r| r["value"].as_f64().unwrap())
    };
    let dense = value("dense", "bytes_per_decode_token").unwrap();
    let fused = value("dense2moe", "bytes_per_decode_token").unwrap();
    let pruned = value("layer_prune", "bytes_per_decode_token").unwrap();
    assert!(
        pruned < fused && fused < dense,
        "{pruned} < {fused} < {dense}"
    );
    assert_eq!(value("dense2moe", "active_experts_mean"), Some(2.0));
    assert_eq!(
        value("layer_prune", "active_experts_mean"),
        None,
        "pruned model is dense"
    );
    assert!(value("dense2moe", "acc,none").is_some() && value("layer_prune", "acc,none").is_some());
    // BTX: three experts per layer, top-1 router trained for 2 steps.
    assert_eq!(value("btx", "active_experts_mean"), Some(1.0));
    assert!(value("btx", "params_total").unwrap() > value("dense", "params_total").unwrap());
    // DUME+: two experts, top-1 closed-form routers fine-tuned for 2 steps.
    assert_eq!(value("dume_plus", "active_experts_mean"), Some(1.0));
    // The search with δ = -1 qualifies every span; without a bytes target it takes the longest
    // allowed (3 layers), i.e. the fixed-span choice's length.
    assert_eq!(
        value("dense2moe-search", "bytes_per_decode_token"),
        Some(fused)
    );
    assert_eq!(
        value("layer_prune-search", "bytes_per_decode_token"),
        Some(pruned)
    );
    // Prune-then-upcycle keeps one MoE layer of the same shape as Dense2MoE's; LLM-Streamline
    // leaves a dense model with the pruned one's bytes.
    assert_eq!(
        value("prune_then_upcycle", "active_experts_mean"),
        Some(2.0)
    );
    assert_eq!(
        value("llm_streamline", "bytes_per_decode_token"),
        Some(pruned)
    );
}

/// A suite builds and trains its own models (`models[].build`): trained once into the run
/// directory, reused on rerun, nameable as DUME's/weight averaging's `experts`; a DTop-p build
/// is evaluated with the router it was trained with; a changed setting builds a new model.
#[test]
fn suites_build_and_reuse_their_own_models() {
    let _lock = model_lock();
    let build = |extra: &str| {
        format!("{{layers: 1, hidden_size: 32, heads: 2, intermediate_size: 32, steps: 3, batch_size: 2, seq_len: 32, warmup: 1, text: [train.txt]{extra}}}")
    };
    let text = format!(
        "name: t\ndefaults:\n  bootstrap_iters: 10\n  max_length: 32\nmodels:\n  - label: moe\n    build: {}\n  - label: moe-dtop_p\n    build: {}\n  - label: verse\n    build: {}\n  - label: code\n    build: {}\n  - label: verse-up\n    build: {{from: verse, upcycle: true, experts: 2, top_k: 1, steps: 2, batch_size: 2, seq_len: 32, warmup: 1, text: [train.txt]}}\nmethods:\n  - name: dense\n  - name: reap\n    params: {{compression: 0.5}}\n    models: [moe]\n  - name: weight_average\n    params: {{experts: [code]}}\n    models: [verse]\ncalibration:\n  sequences: 4\n  length: 32\n  source: train.txt\ntasks:\n  - name: eval.yaml\n",
        build(", experts: 4, top_k: 2"),
        build(", experts: 4, router: dtop_p, router_params: {target: 2}"),
        build(", experts: 0"),
        build(", experts: 0, seed: 1"),
    );
    let (dir, path, run_dir) = suite(&text);
    let corpus =
        "Shall I compare thee to a summer's day? Thou art more lovely and more temperate.\n";
    std::fs::write(dir.path().join("train.txt"), corpus.repeat(40)).unwrap();
    std::fs::write(
        dir.path().join("eval.jsonl"),
        "{\"text\": \"Rough winds do shake the darling buds of May.\"}\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("eval.yaml"),
        "task: eval_ppl\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: eval.jsonl\ntest_split: test\noutput_type: loglikelihood_rolling\ndoc_to_text: \"\"\ndoc_to_target: \"{{text}}\"\nmetric_list:\n  - metric: bits_per_byte\n",
    )
    .unwrap();
    let out = run(&path, &run_dir, &["--quiet"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let built: Vec<String> = std::fs::read_dir(run_dir.join("models"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(built.len(), 5, "{built:?}");
    for name in &built {
        let model = run_dir.join("models").join(name);
        assert!(model.join("train.json").is_file() && model.join("tokenizer.json").is_file());
    }
    let dtop_p = built.iter().find(|n| n.starts_with("moe-dtop_p-")).unwrap();
    assert!(run_dir
        .join("models")
        .join(dtop_p)
        .join("moebench_router.json")
        .is_file());
    let record = |model: &str, method: &str, metric: &str| {
        records(&run_dir)
            .into_iter()
            .find(|r| {
                r["model_label"] == model && r["method_label"] == method && r["metric"] == metric
            })
            .unwrap_or_else(|| panic!("{model} {method} {metric}"))
    };
    assert!(
        record("moe", "dense", "bits_per_byte,none")["value"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    assert!(
        record("moe", "reap", "params_total")["value"]
            .as_f64()
            .unwrap()
            < record("moe", "dense", "params_total")["value"]
                .as_f64()
                .unwrap()
    );
    let selector = record("moe-dtop_p", "dense", "active_experts_mean");
    assert!(
        selector["protocol"]
            .as_str()
            .unwrap_or_default()
            .contains("dtop_p")
            || selector.to_string().contains("dtop_p"),
        "the DTop-p build is evaluated with its trained router: {selector}"
    );
    assert!(
        record("verse", "weight_average", "bits_per_byte,none")["value"]
            .as_f64()
            .is_some()
    );

    // Rerun: nothing is rebuilt or re-run.
    let stamp = |name: &str| {
        std::fs::metadata(run_dir.join("models").join(name).join("train.json"))
            .unwrap()
            .modified()
            .unwrap()
    };
    let before: Vec<_> = built.iter().map(|n| stamp(n)).collect();
    let lines = records(&run_dir).len();
    let out = run(&path, &run_dir, &["--quiet"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(records(&run_dir).len(), lines);
    assert_eq!(built.iter().map(|n| stamp(n)).collect::<Vec<_>>(), before);

    // A changed setting of `code` builds a new `code` and re-runs the jobs merging it.
    std::fs::write(
        &path,
        text.replace("experts: 0, seed: 1", "experts: 0, seed: 2"),
    )
    .unwrap();
    let out = run(&path, &run_dir, &["--quiet", "--dry-run"]);
    let plan = String::from_utf8_lossy(&out.stdout);
    let todo: Vec<&str> = plan.lines().filter(|l| l.ends_with("|to run|")).collect();
    assert!(
        todo.iter().any(|l| l.contains("|verse|weight_average|")),
        "{plan}"
    );
    assert!(todo.iter().any(|l| l.contains("|code|dense|")), "{plan}");
    assert!(!todo.iter().any(|l| l.contains("|verse|dense|")), "{plan}");
    assert!(!todo.iter().any(|l| l.contains("|moe|")), "{plan}");
}

/// USMoE and Expert Choice with `mode: causal` and no threshold fit one threshold per layer on
/// the calibration text (§4.7.1's causal fallback), so on that text every layer spends exactly
/// the budget; a given threshold is used as is.
#[test]
fn causal_routing_without_a_threshold_is_fitted_to_the_budget() {
    let _lock = model_lock();
    let text = format!(
        "name: t\nmodels:\n  - id: {}\n    label: moe\nmethods:\n  - name: usmoe\n    label: usmoe-fitted\n    params: {{k: 2, mode: causal}}\n  - name: expert_choice\n    label: ec-fitted\n    params: {{capacity: 1.5, mode: causal}}\n  - name: usmoe\n    label: usmoe-given\n    params: {{k: 2, mode: causal, threshold: 0.1}}\ntasks:\n  - name: arc_easy_shared\n    limit: 1\ncalibration:\n  source: {}\n  sequences: 4\n  length: 32\n",
        repo_root().join("tests/fixtures/tiny/mixtral").display(),
        repo_root().join("README.md").display()
    );
    let (_d, path, run_dir) = suite(&text);
    let out = run(&path, &run_dir, &["--quiet"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let active = |method: &str| {
        records(&run_dir)
            .iter()
            .find(|r| r["method_label"] == method && r["metric"] == "active_experts_mean")
            .map(|r| r["value"].as_f64().unwrap())
            .unwrap()
    };
    assert_eq!(active("usmoe-fitted"), 2.0);
    assert_eq!(active("ec-fitted"), 1.5);
    assert_ne!(
        active("usmoe-given"),
        2.0,
        "a given threshold is not refitted"
    );
}
