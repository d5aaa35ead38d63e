//! Golden parity with lm-evaluation-harness 0.4.13 (HF backend, f32, CPU) on SmolLM2 over real
//! data from ../shared/datasets (fixtures: scripts/lm_eval_fixtures/make_lm_eval_fixtures.py).
//! Accuracies and exact matches must be identical; log-likelihoods and perplexities within 1e-4
//! relative; the same documents, prompts and targets (lm-eval's sample hashes).
mod common;

use common::*;
use serde_json::Value;
use std::collections::BTreeMap;

const REL: f64 = 1e-4;

/// One fixture run and the moebench invocation that must reproduce it.
struct Run {
    fixture: &'static str,
    /// lm-eval task name → moebench task name.
    tasks: &'static [(&'static str, &'static str)],
    limit: usize,
    extra: &'static [&'static str],
}

const RUNS: &[Run] = &[
    Run {
        fixture: "arc_easy",
        tasks: &[("arc_easy", "arc_easy_shared")],
        limit: 100,
        extra: &[],
    },
    Run {
        fixture: "arc_challenge",
        tasks: &[("arc_challenge", "arc_challenge_shared")],
        limit: 100,
        extra: &[],
    },
    Run {
        fixture: "arc_easy_3shot",
        tasks: &[("arc_easy", "arc_easy_shared")],
        limit: 30,
        extra: &["--num-fewshot", "3"],
    },
    Run {
        fixture: "hellaswag",
        tasks: &[("hellaswag", "hellaswag_shared")],
        limit: 100,
        extra: &[],
    },
    Run {
        fixture: "winogrande",
        tasks: &[("winogrande", "winogrande_shared")],
        limit: 100,
        extra: &[],
    },
    Run {
        fixture: "piqa",
        tasks: &[("piqa", "piqa_shared")],
        limit: 100,
        extra: &[],
    },
    Run {
        fixture: "boolq",
        tasks: &[("boolq", "boolq_shared")],
        limit: 50,
        extra: &[],
    },
    Run {
        fixture: "openbookqa",
        tasks: &[("openbookqa", "openbookqa_shared")],
        limit: 100,
        extra: &[],
    },
    Run {
        fixture: "lambada_openai",
        tasks: &[("lambada_openai", "lambada_openai_shared")],
        limit: 100,
        extra: &["--bootstrap-iters", "100000"],
    },
    Run {
        fixture: "wikitext",
        tasks: &[("wikitext", "wikitext_shared")],
        limit: 5,
        extra: &[],
    },
    Run {
        fixture: "wikitext_len512",
        tasks: &[("wikitext", "wikitext_shared")],
        limit: 5,
        extra: &["--max-length", "512"],
    },
    Run {
        fixture: "mmlu",
        tasks: &[
            ("mmlu_abstract_algebra", "mmlu_shared_abstract_algebra"),
            ("mmlu_anatomy", "mmlu_shared_anatomy"),
            ("mmlu_marketing", "mmlu_shared_marketing"),
        ],
        limit: 20,
        extra: &[],
    },
    Run {
        fixture: "gsm8k",
        tasks: &[("gsm8k", "gsm8k_offline")],
        limit: 10,
        extra: &[],
    },
    // `first_n` few-shot examples: one preamble per subject, shared by its documents (the
    // prefix KV cache encodes it once).
    Run {
        fixture: "mmlu_5shot",
        tasks: &[
            ("mmlu_abstract_algebra", "mmlu_shared_abstract_algebra"),
            ("mmlu_anatomy", "mmlu_shared_anatomy"),
            ("mmlu_marketing", "mmlu_shared_marketing"),
        ],
        limit: 20,
        extra: &["--num-fewshot", "5"],
    },
];

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= REL * a.abs().max(b.abs()).max(1.0)
}

fn read_jsonl(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Metric values must agree: 0/1 means exactly (up to float formatting), the rest within REL.
fn check_metrics(run: &str, ours: &Value, theirs: &Value) {
    let theirs = theirs.as_object().unwrap();
    for (key, want) in theirs {
        let Some(want) = want.as_f64() else { continue };
        if key == "sample_len"
            || key.contains("_stderr") && !key.starts_with("acc") && !key.starts_with("exact")
        {
            continue; // lm-eval's bootstrap stderrs are checked below only when iterations match
        }
        let got = ours[key]
            .as_f64()
            .unwrap_or_else(|| panic!("{run}: we do not report {key}"));
        let ok = if key.starts_with("acc") || key.starts_with("exact_match") {
            (got - want).abs() <= 1e-12
        } else {
            close(got, want)
        };
        assert!(ok, "{run}: {key} = {got}, lm-eval {want}");
    }
}

/// Per-request log-likelihoods, greediness and generations against lm-eval's samples.
fn check_samples(run: &str, ours: &[Value], theirs: &[Value]) {
    assert_eq!(ours.len(), theirs.len(), "{run}: sample count");
    for (o, t) in ours.iter().zip(theirs) {
        let doc = &t["doc_id"];
        assert_eq!(o["doc_id"], *doc, "{run}: document order");
        for h in ["doc_hash", "prompt_hash", "target_hash"] {
            assert_eq!(o[h], t[h], "{run}: {h} of doc {doc}");
        }
        let reqs = t["requests"].as_array().unwrap();
        // lm-eval's `resps`: one list per request, its first entry the answer.
        let resps = o["resps"].as_array().unwrap();
        assert_eq!(resps.len(), reqs.len(), "{run}: requests of doc {doc}");
        for (r, want) in resps.iter().zip(reqs) {
            let r = &r[0];
            if let Some(text) = want.get("generation") {
                assert_eq!(r, text, "{run}: generation of doc {doc}");
                continue;
            }
            // Log-likelihoods are `[str(ll), str(is_greedy)]`, rolling ones `str(ll)`.
            let (ll, greedy) = match r {
                Value::Array(pair) => (&pair[0], Some(&pair[1])),
                one => (one, None),
            };
            let ll: f64 = ll.as_str().unwrap().parse().unwrap();
            let want_ll = want["loglikelihood"].as_f64().unwrap();
            assert!(
                close(ll, want_ll),
                "{run}: loglikelihood of doc {doc}: {ll} vs {want_ll}"
            );
            if let (Some(g), Some(greedy)) = (want.get("is_greedy"), greedy) {
                let g = if g.as_bool().unwrap() {
                    "True"
                } else {
                    "False"
                };
                assert_eq!(greedy, g, "{run}: is_greedy of doc {doc}");
            }
        }
    }
}

fn check_run(run: &Run) {
    let _lock = model_lock();
    if smollm2_dir(run.fixture).is_none() {
        return;
    }
    if !repo_root().join("../shared/datasets").is_dir() {
        eprintln!("SKIPPED {}: ../shared/datasets is absent", run.fixture);
        return;
    }
    let fixture = repo_root().join("tests/fixtures/lm_eval").join(run.fixture);
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture.join("results.json")).unwrap())
            .unwrap();
    let out = tempfile::tempdir().unwrap();
    let tasks: Vec<&str> = run.tasks.iter().map(|(_, ours)| *ours).collect();
    let tasks = tasks.join(",");
    let limit = run.limit.to_string();
    let mut args = vec![
        "eval",
        SMOLLM2,
        "--device",
        "cpu",
        "--tasks",
        &tasks,
        "--limit",
        &limit,
        "--log-samples",
        "--out",
        out.path().to_str().unwrap(),
    ];
    args.extend_from_slice(run.extra);
    let result = moebench(&args);
    assert!(
        result.status.success(),
        "{}: {}",
        run.fixture,
        stderr(&result)
    );
    let ours: Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("results.json")).unwrap())
            .unwrap();
    let mut theirs_samples: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
    let all = read_jsonl(&fixture.join("samples.jsonl"));
    for s in &all {
        theirs_samples
            .entry(s["task"].as_str().unwrap())
            .or_default()
            .push(s.clone());
    }
    for (theirs, mine) in run.tasks {
        check_metrics(
            run.fixture,
            &ours["results"][mine],
            &expected["results"][theirs],
        );
        let samples = theirs_samples.get(theirs).unwrap();
        // lm-eval logs one line per filter; keep the first filter's lines.
        let first_filter = samples[0].get("filter").cloned();
        let samples: Vec<Value> = samples
            .iter()
            .filter(|s| s.get("filter").cloned() == first_filter)
            .cloned()
            .collect();
        let ours = lm_eval_samples(out.path(), mine);
        let first_filter = ours[0]["filter"].clone();
        let ours: Vec<Value> = ours
            .into_iter()
            .filter(|s| s["filter"] == first_filter)
            .collect();
        check_samples(run.fixture, &ours, &samples);
    }
}

// One test per fixture run; they share the SmolLM2 lock, so they run one at a time.
macro_rules! parity_tests {
    ($($name:ident => $idx:expr),* $(,)?) => {
        $(#[test]
        fn $name() { check_run(&RUNS[$idx]); })*
    };
}

parity_tests! {
    arc_easy => 0, arc_challenge => 1, arc_easy_3shot => 2, hellaswag => 3, winogrande => 4,
    piqa => 5, boolq => 6, openbookqa => 7, lambada_openai => 8, wikitext => 9,
    wikitext_max_length_512 => 10, mmlu_three_subjects => 11, gsm8k_5shot_greedy => 12,
    mmlu_three_subjects_5shot => 13,
}
