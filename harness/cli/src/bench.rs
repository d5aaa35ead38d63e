//! `moebench bench MODEL`: prefill latency (one forward of the prompt = time to first token),
//! per-token decode latency and throughput with the KV cache, end-to-end greedy generation
//! throughput and peak memory, each as the median and best of `--repeats` runs after `--warmup`
//! runs. Timings wrap the `GreedyDecoder` and `greedy_batch` that `generate` uses; decoding never
//! stops at EOS. `scripts/bench_transformers.py` measures the same with transformers and prints
//! the same `--json` keys.
use crate::common::ModelArgs;
use anyhow::{ensure, Result};
use moebench_model::device::{device_name, kind_name};
use moebench_model::generate::{greedy_batch, GreedyDecoder, StopOnIds};
use moebench_model::Model;
use serde_json::{json, Value};
use std::time::Instant;
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

/// Seconds spent in each phase of one run.
pub struct Run {
    pub prefill: f64,
    pub decode: f64,
    pub generate: f64,
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

/// One run: prefill and `new_tokens - 1` decode steps timed separately, then a whole
/// `greedy_batch` of `new_tokens` tokens.
pub fn measure(model: &Model, prompts: &[Vec<i64>], new_tokens: usize) -> Run {
    let device = model.device;
    let ((mut decoder, mut next), prefill) =
        timed(device, || GreedyDecoder::prefill(model, prompts));
    let ((), decode) = timed(device, || {
        for _ in 1..new_tokens {
            next = decoder.step(&next);
        }
    });
    let (_, generate) = timed(device, || {
        greedy_batch(model, prompts, new_tokens, &mut StopOnIds(vec![]))
    });
    Run {
        prefill,
        decode,
        generate,
    }
}

/// `f()` and its wall time in seconds, with the device synchronised on both sides.
fn timed<T>(device: Device, f: impl FnOnce() -> T) -> (T, f64) {
    let sync = || {
        if let Device::Cuda(i) = device {
            tch::Cuda::synchronize(i as i64);
        }
    };
    sync();
    let start = Instant::now();
    let out = f();
    sync();
    (out, start.elapsed().as_secs_f64())
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

pub fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    (sorted[(n - 1) / 2] + sorted[n / 2]) / 2.0
}

/// Resets the process's peak RSS (VmHWM) to the current RSS (Linux ≥ 4.0, `clear_refs` 5), so
/// that a later [`peak_rss_mib`] covers only what ran in between; false where unsupported.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Process peak resident set size (VmHWM), which includes loading the model. libtorch's CUDA
/// allocator statistics are not exposed by tch, so there is no GPU figure.
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib / 1024.0)
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
