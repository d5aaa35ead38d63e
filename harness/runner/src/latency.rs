//! Greedy-decoding latency (prefill, per-token decode, whole generation) and peak memory: what
//! `moebench bench` prints and a suite's `measure.latency` records.
use moebench_model::device::device_name;
use moebench_model::generate::{greedy_batch, GreedyDecoder, StopOnIds};
use moebench_model::Model;
use moebench_suite::measures::{self, Measure};
use moebench_suite::suite::Latency;
use moebench_suite::Measurement;
use std::time::Instant;
use tch::Device;

/// One timed generation: prefill, the decode steps after it, and `greedy_batch` end to end.
pub struct Run {
    pub prefill: f64,
    pub decode: f64,
    pub generate: f64,
}

/// Times one generation of `new_tokens` tokens for each of `prompts` (decoded together).
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

/// Wall time of `f`, synchronising CUDA before and after so queued kernels are counted.
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

/// The median of sorted values.
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

/// A suite's latency measures: medians over `repeats` runs after `warmup`, per batch size,
/// with `prompt` repeated (or cut) to `prompt_tokens`. TTFT is the prefill time.
pub fn latency_measures(model: &Model, prompt: &[i64], spec: &Latency) -> Vec<Measurement> {
    let _guard = tch::no_grad_guard();
    let prompt: Vec<i64> = match prompt.is_empty() {
        true => vec![1; spec.prompt_tokens],
        false => prompt
            .iter()
            .copied()
            .cycle()
            .take(spec.prompt_tokens)
            .collect(),
    };
    let protocol = format!(
        "greedy, prompt {} tokens, {} new, median of {} after {} warm-up, {} threads, {}",
        spec.prompt_tokens,
        spec.new_tokens,
        spec.repeats,
        spec.warmup,
        tch::get_num_threads(),
        device_name(model.device)
    );
    let mut out = Vec::new();
    let reset = reset_peak_rss();
    for &batch in &spec.batch_sizes {
        let prompts = vec![prompt.clone(); batch];
        for _ in 0..spec.warmup {
            measure(model, &prompts, spec.new_tokens);
        }
        let runs: Vec<Run> = (0..spec.repeats)
            .map(|_| measure(model, &prompts, spec.new_tokens))
            .collect();
        let med = |f: &dyn Fn(&Run) -> f64| {
            let mut v: Vec<f64> = runs.iter().map(f).collect();
            v.sort_by(f64::total_cmp);
            median(&v)
        };
        let steps = (spec.new_tokens - 1) as f64;
        let value = |m: Measure, value: f64| Measurement {
            metric: m.at_batch(batch),
            value,
            stderr: None,
            n: Some(spec.repeats as u64),
            higher_is_better: Some(m.higher_is_better),
            protocol: Some(protocol.clone()),
        };
        let b = batch as f64;
        out.push(value(measures::TTFT_MS, med(&|r| r.prefill) * 1e3));
        out.push(value(
            measures::PREFILL_TOKENS_PER_S,
            med(&|r| b * spec.prompt_tokens as f64 / r.prefill),
        ));
        out.push(value(measures::TPOT_MS, med(&|r| r.decode / steps) * 1e3));
        out.push(value(
            measures::DECODE_TOKENS_PER_S,
            med(&|r| b * steps / r.decode),
        ));
    }
    if let Some(mib) = (model.device == Device::Cpu).then(peak_rss_mib).flatten() {
        let protocol = match reset {
            true => "process peak RSS (VmHWM) during the latency runs, model resident",
            false => "process peak RSS (VmHWM) since start (could not reset it)",
        };
        out.push(Measurement {
            metric: measures::PEAK_RSS_MIB.name.into(),
            value: mib,
            stderr: None,
            n: None,
            higher_is_better: Some(false),
            protocol: Some(protocol.into()),
        });
    }
    out
}
