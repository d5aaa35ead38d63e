//! What the report knows about metric and measure names: which metric of a task is its
//! headline, which are accuracies, which measures are costs, which way a number is better
//! (read from the records; guessed from the name only for old run directories), and how
//! numbers are printed.
use moebench_suite::Record;

/// Headline metrics, most preferred first (`acc_norm` over `acc`, as lm-eval leaderboards do).
const PRIMARY_ORDER: [&str; 10] = [
    "acc_norm",
    "acc",
    "exact_match",
    "f1",
    "mcc",
    "bleu",
    "word_perplexity",
    "perplexity",
    "byte_perplexity",
    "bits_per_byte",
];

/// Metrics in [0, 1], higher is better, that the accuracy average covers.
const ACCURACY_LIKE: [&str; 4] = ["acc_norm", "acc", "exact_match", "f1"];

/// A cost a run measures per (model, method) and the quality-vs-cost charts can put on their
/// x axis; every one is better low.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CostAxis {
    /// The measure's name in the records.
    pub measure: &'static str,
    /// Axis title.
    pub title: &'static str,
    /// Short column header.
    pub short: &'static str,
}

/// The cost axes, in the order of the axis selector (the first the run measured is shown
/// first). Decode latency is the batch-1 time per output token (TPOT).
pub const COST_AXES: [CostAxis; 6] = [
    CostAxis {
        measure: "params_active",
        title: "active parameters per token",
        short: "active params",
    },
    CostAxis {
        measure: "flops_per_token",
        title: "FLOPs per token",
        short: "FLOPs/token",
    },
    CostAxis {
        measure: "bytes_per_decode_token",
        title: "bytes read per decode token",
        short: "bytes/token",
    },
    CostAxis {
        measure: "tpot_ms_b1",
        title: "decode latency (ms per token, batch 1)",
        short: "latency",
    },
    CostAxis {
        measure: "peak_rss_mib",
        title: "peak memory (process RSS)",
        short: "memory",
    },
    CostAxis {
        measure: "params_total",
        title: "total parameters",
        short: "params",
    },
];

/// `("acc", "none")` of `"acc,none"`.
pub fn split(metric: &str) -> (&str, &str) {
    metric.split_once(',').unwrap_or((metric, "none"))
}

/// `acc` for `acc,none`, `exact_match (strict-match)` for other filters.
pub fn short_name(metric: &str) -> String {
    match split(metric) {
        (name, "none") => name.to_owned(),
        (name, filter) => format!("{name} ({filter})"),
    }
}

/// Lower is preferred as a task's headline metric: by name ([`PRIMARY_ORDER`], unknown names
/// last), then the `none` filter, then `strict-match`, then any other filter.
pub fn primary_rank(metric: &str) -> u32 {
    let (name, filter) = split(metric);
    let by_name = PRIMARY_ORDER
        .iter()
        .position(|p| *p == name)
        .unwrap_or(PRIMARY_ORDER.len()) as u32;
    let by_filter = match filter {
        "none" => 0,
        "strict-match" => 1,
        _ => 2,
    };
    by_name * 3 + by_filter
}

/// Whether the accuracy average includes this metric.
pub fn accuracy_like(metric: &str, higher_is_better: Option<bool>) -> bool {
    higher_is_better == Some(true) && ACCURACY_LIKE.contains(&split(metric).0)
}

/// Which way a record's number is better: the record's own `higher_is_better`, which
/// `moebench run` writes for every metric and measure. Run directories written before
/// measures carried it (`null`) fall back to [`legacy_measure_higher_is_better`]; a task
/// metric without it has no known direction.
pub fn higher_is_better(record: &Record) -> Option<bool> {
    match (record.higher_is_better, record.task.is_some()) {
        (Some(higher), _) => Some(higher),
        (None, false) => Some(legacy_measure_higher_is_better(&record.metric)),
        (None, true) => None,
    }
}

/// The direction of a measure by its name, for old run directories only (see
/// [`higher_is_better`]): throughputs and load entropy are better high; sizes, FLOPs, times
/// and memory low.
pub fn legacy_measure_higher_is_better(measure: &str) -> bool {
    measure.contains("tokens_per_s") || measure.contains("throughput") || measure == "load_entropy"
}

/// ` ↑`, ` ↓` or nothing, to follow a metric name.
pub fn arrow(higher_is_better: Option<bool>) -> &'static str {
    match higher_is_better {
        Some(true) => " ↑",
        Some(false) => " ↓",
        None => "",
    }
}

/// A metric value with 4 significant-ish digits.
pub fn fmt_value(v: f64) -> String {
    match v.abs() {
        a if !a.is_finite() => format!("{v}"),
        a if a >= 1000.0 => format!("{v:.1}"),
        a if a >= 10.0 => format!("{v:.2}"),
        _ => format!("{v:.4}"),
    }
}

/// A signed difference in the precision of [`fmt_value`], with a true minus sign.
pub fn fmt_delta(v: f64) -> String {
    let text = fmt_value(v.abs());
    match v {
        v if v > 0.0 => format!("+{text}"),
        v if v < 0.0 => format!("−{text}"),
        _ => text,
    }
}

/// `value ± 1.96·stderr` (the 95% normal interval), or the bare value without a stderr.
pub fn fmt_cell(value: f64, stderr: Option<f64>) -> String {
    match stderr.filter(|s| s.is_finite()) {
        Some(se) => format!("{} ± {}", fmt_value(value), fmt_value(1.96 * se)),
        None => fmt_value(value),
    }
}

/// A measure with its unit, read off its name: `…_mib` in binary units of bytes, `…bytes…`
/// in binary prefixes, `…_ms…` in milliseconds, `…_s` in seconds, anything else with a
/// decimal prefix (k, M, G, T).
pub fn fmt_measure(measure: &str, v: f64) -> String {
    if measure.ends_with("_mib") {
        return fmt_prefixed(
            v * 1024.0 * 1024.0,
            1024.0,
            &[" B", " KiB", " MiB", " GiB", " TiB"],
        );
    }
    if measure.contains("bytes") {
        return fmt_prefixed(v, 1024.0, &[" B", " KiB", " MiB", " GiB", " TiB"]);
    }
    if measure.contains("_ms") {
        return format!("{} ms", fmt_short(v));
    }
    if measure.ends_with("_s") {
        return format!("{} s", fmt_short(v));
    }
    fmt_prefixed(v, 1000.0, &["", "k", "M", "G", "T"])
}

/// Three significant digits, without a trailing `.0` on whole numbers.
fn fmt_short(v: f64) -> String {
    match v.abs() {
        a if a >= 100.0 || (a.fract() == 0.0 && a < 1e15) => format!("{v:.0}"),
        a if a >= 10.0 => format!("{v:.1}"),
        _ => format!("{v:.2}"),
    }
}

/// Three significant digits after scaling to the largest unit below `v` (whole numbers of the
/// base unit as they are).
fn fmt_prefixed(v: f64, base: f64, units: &[&str]) -> String {
    let mut scaled = v;
    let mut unit = 0;
    while scaled.abs() >= base && unit + 1 < units.len() {
        scaled /= base;
        unit += 1;
    }
    let digits = match scaled.abs() {
        _ if unit == 0 && scaled.fract() == 0.0 => 0,
        a if a >= 100.0 => 0,
        a if a >= 10.0 => 1,
        _ => 2,
    };
    format!("{scaled:.digits$}{}", units[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headline_metric_preference() {
        let mut metrics = [
            "word_perplexity,none",
            "acc,none",
            "exact_match,flexible-extract",
            "acc_norm,none",
            "exact_match,strict-match",
            "zzz,none",
        ];
        metrics.sort_by_key(|m| primary_rank(m));
        assert_eq!(
            metrics,
            [
                "acc_norm,none",
                "acc,none",
                "exact_match,strict-match",
                "exact_match,flexible-extract",
                "word_perplexity,none",
                "zzz,none"
            ]
        );
    }

    #[test]
    fn accuracy_like_needs_the_name_and_direction() {
        assert!(accuracy_like("acc,none", Some(true)));
        assert!(accuracy_like("exact_match,strict-match", Some(true)));
        assert!(!accuracy_like("word_perplexity,none", Some(false)));
        assert!(!accuracy_like("acc,none", None));
    }

    fn record(task: Option<&str>, metric: &str, higher: Option<bool>) -> Record {
        serde_json::from_value(serde_json::json!({
            "kind": if task.is_some() { "metric" } else { "measure" },
            "suite": "s", "job": "j", "model": "m", "model_label": "m", "model_sha": "0",
            "method": "dense", "method_label": "dense", "method_params": {}, "method_hash": "0",
            "task": task, "task_hash": null, "metric": metric, "value": 1.0, "stderr": null,
            "n": null, "higher_is_better": higher, "protocol": null, "device": "cpu",
            "dtype": "float32", "batch_size": 1, "seed": 0, "harness_version": "0",
            "wall_s": 0.0, "time": ""
        }))
        .unwrap()
    }

    #[test]
    fn direction_comes_from_the_record() {
        // The record wins over the name: a made-up measure named like a throughput but
        // recorded as lower-is-better stays lower-is-better.
        assert_eq!(
            higher_is_better(&record(None, "odd_tokens_per_s", Some(false))),
            Some(false)
        );
        assert_eq!(
            higher_is_better(&record(Some("t"), "acc,none", Some(true))),
            Some(true)
        );
        // Old run directories: measures without a direction are guessed from the name,
        // task metrics stay unknown.
        assert_eq!(
            higher_is_better(&record(None, "decode_tokens_per_s_b1", None)),
            Some(true)
        );
        assert_eq!(
            higher_is_better(&record(None, "flops_per_token", None)),
            Some(false)
        );
        assert_eq!(higher_is_better(&record(Some("t"), "acc,none", None)), None);
    }

    #[test]
    fn formatting() {
        assert_eq!(fmt_cell(0.61234, Some(0.01)), "0.6123 ± 0.0196");
        assert_eq!(fmt_cell(23.456, None), "23.46");
        assert_eq!(fmt_cell(0.5, Some(f64::NAN)), "0.5000");
        assert_eq!(fmt_delta(-0.0312), "−0.0312");
        assert_eq!(fmt_delta(0.5), "+0.5000");
        assert_eq!(fmt_delta(0.0), "0.0000");
        assert_eq!(fmt_measure("params_active", 134_515_008.0), "135M");
        assert_eq!(fmt_measure("params_active", 1.345e9), "1.34G");
        assert_eq!(
            fmt_measure("bytes_per_decode_token", 3.0 * 1024.0 * 1024.0),
            "3.00 MiB"
        );
        assert_eq!(fmt_measure("params_total", 512.0), "512");
        assert_eq!(fmt_measure("decode_tokens_per_s_b1", 41.27), "41.3");
        assert_eq!(fmt_measure("peak_rss_mib", 600.0), "600 MiB");
        assert_eq!(fmt_measure("peak_rss_mib", 2048.0), "2.00 GiB");
        assert_eq!(fmt_measure("tpot_ms_b1", 12.345), "12.3 ms");
        assert_eq!(fmt_measure("method_apply_s", 3.0), "3 s");
    }
}
