//! `moebench bench MODEL`: prefill latency (one forward of the prompt = time to first token),
//! per-token decode latency and throughput with the KV cache, end-to-end greedy generation
//! throughput and peak memory, each as the median and best of `--repeats` runs after `--warmup`
//! runs. Timings wrap the `GreedyDecoder` and `greedy_batch` that `generate` uses; decoding never
//! stops at EOS. `scripts/bench_transformers.py` measures the same with transformers and prints
//! the same `--json` keys.
use crate::common::ModelArgs;
use anyhow::{ensure, Result};
use moebench_model::device::{device_name, kind_name};
use moebench_model::Model;
use moebench_runner::latency::{measure, median, peak_rss_mib, Run};
use serde_json::{json, Value};
use tch::Device;

/// ~64 tokens of plain English (the default `--prompt`; bench_transformers.py has the same text).
const DEFAULT_PROMPT: &str = "The old lighthouse stood at the edge of the cliff, its white paint \
peeling after decades of salt wind and rain. Every evening the keeper climbed the spiral stairs to \
light the lamp, and every morning he wrote a short note in the logbook about the weather, the \
ships that passed in the night, and the birds that nested in the rocks below.";

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    #[arg(long, default_value = DEFAULT_PROMPT)]
    prompt: String,
    /// Repeat or trim the prompt's token ids to exactly this many.
    #[arg(long)]
    prompt_tokens: Option<usize>,
    /// Tokens generated per sequence (EOS does not stop generation).
    #[arg(long, default_value_t = 64)]
    new_tokens: usize,
    /// Sequences per batch (copies of the prompt).
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Untimed runs before the measured ones.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Measured runs; medians and best values are over these.
    #[arg(long, default_value_t = 5)]
    repeats: usize,
    /// Intra-op CPU threads (tch::set_num_threads; default: libtorch's).
    #[arg(long)]
    threads: Option<i32>,
    /// Print one line of JSON instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<()> {
    ensure!(
        args.new_tokens >= 2,
        "--new-tokens must be at least 2 (one prefill, one decode step)"
    );
    ensure!(
        args.batch >= 1 && args.repeats >= 1,
        "--batch and --repeats must be at least 1"
    );
    if let Some(n) = args.threads {
        tch::set_num_threads(n);
    }
    let _guard = tch::no_grad_guard();
    let loaded = args.model.load()?;
    let ids = loaded.tokenizer()?.encode(&args.prompt, true)?;
    let ids: Vec<i64> = match args.prompt_tokens {
        Some(n) => ids.iter().copied().cycle().take(n).collect(),
        None => ids,
    };
    ensure!(
        !ids.is_empty(),
        "no prompt tokens; give a non-empty --prompt and --prompt-tokens ≥ 1"
    );
    let prompts = vec![ids.clone(); args.batch];
    let model = &loaded.model;
    for _ in 0..args.warmup {
        measure(model, &prompts, args.new_tokens);
    }
    let runs: Vec<Run> = (0..args.repeats)
        .map(|_| measure(model, &prompts, args.new_tokens))
        .collect();
    let report = report(&args, &runs, model, &ids, &loaded.checkpoint.reference);
    if args.json {
        println!("{report}");
    } else {
        print_text(&report);
    }
    Ok(())
}

/// Median and minimum (the best run) of latencies, in milliseconds.
fn latency_ms(seconds: impl Iterator<Item = f64>) -> Value {
    let mut ms: Vec<f64> = seconds.map(|s| s * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    json!({"median": median(&ms), "min": ms[0]})
}

/// Median and maximum (the best run) of `tokens / seconds`.
fn rate(tokens: usize, seconds: impl Iterator<Item = f64>) -> Value {
    let mut r: Vec<f64> = seconds.map(|s| tokens as f64 / s).collect();
    r.sort_by(f64::total_cmp);
    json!({"median": median(&r), "max": r[r.len() - 1]})
}

fn report(args: &Args, runs: &[Run], model: &Model, ids: &[i64], reference: &str) -> Value {
    let (b, n) = (args.batch, args.new_tokens);
    let steps = n - 1;
    json!({
        "engine": "moebench",
        "model": reference,
        "device": device_name(model.device),
        "dtype": kind_name(model.kind),
        "threads": tch::get_num_threads(),
        "batch": b,
        "prompt_tokens": ids.len(),
        "new_tokens": n,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "prefill_ms": latency_ms(runs.iter().map(|r| r.prefill)),
        "prefill_tokens_per_s": rate(b * ids.len(), runs.iter().map(|r| r.prefill)),
        "tpot_ms": latency_ms(runs.iter().map(|r| r.decode / steps as f64)),
        "decode_tokens_per_s": rate(b * steps, runs.iter().map(|r| r.decode)),
        "generate_ms": latency_ms(runs.iter().map(|r| r.generate)),
        "generate_tokens_per_s": rate(b * n, runs.iter().map(|r| r.generate)),
        "peak_rss_mib": (model.device == Device::Cpu).then(peak_rss_mib).flatten(),
        "prompt_ids": ids,
    })
}

fn print_text(r: &Value) {
    let s = |k: &str| {
        r[k].as_str()
            .map_or_else(|| r[k].to_string(), str::to_owned)
    };
    println!(
        "{} on {} ({}, {} threads): batch {}, prompt {} tokens, {} new tokens, {} runs after {} warm-up",
        s("model"), s("device"), s("dtype"), s("threads"), s("batch"), s("prompt_tokens"),
        s("new_tokens"), s("repeats"), s("warmup")
    );
    for (key, best) in [
        ("prefill_ms", "min"),
        ("prefill_tokens_per_s", "max"),
        ("tpot_ms", "min"),
        ("decode_tokens_per_s", "max"),
        ("generate_ms", "min"),
        ("generate_tokens_per_s", "max"),
    ] {
        let m = &r[key];
        println!(
            "{key:<22} median {:>10.2}  {best} {:>10.2}",
            num(&m["median"]),
            num(&m[best])
        );
    }
    match r["peak_rss_mib"].as_f64() {
        Some(mib) => println!("peak_rss_mib           {mib:.0}"),
        None => {
            println!("peak_rss_mib           n/a (GPU memory statistics are not exposed by tch)")
        }
    }
}

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}
