//! What the report knows about metric and measure names: which metric of a task is its
//! headline, which are accuracies, which way a measure is better, and how numbers are printed.

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

/// Metrics in [0, 1], higher is better, that the leaderboard averages.
const ACCURACY_LIKE: [&str; 4] = ["acc_norm", "acc", "exact_match", "f1"];

/// Measures that get a Pareto plot against the accuracy average, in plot order (the names
/// `moebench run` records).
pub const PARETO_MEASURES: [&str; 5] = [
    "params_active",
    "flops_per_token",
    "bytes_per_decode_token",
    "decode_tokens_per_s_b1",
    "peak_rss_mib",
];

/// `("acc", "none")` of `"acc,none"`.
pub fn split(metric: &str) -> (&str, &str) {
    metric.split_once(',').unwrap_or((metric, "none"))
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

/// Whether the leaderboard's accuracy average includes this metric.
pub fn accuracy_like(metric: &str, higher_is_better: Option<bool>) -> bool {
    higher_is_better == Some(true) && ACCURACY_LIKE.contains(&split(metric).0)
}

/// Throughputs and load entropy are better high; sizes, FLOPs, times and memory low.
pub fn measure_higher_is_better(measure: &str) -> bool {
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

/// `value ± 1.96·stderr` (the 95% normal interval), or the bare value without a stderr.
pub fn fmt_cell(value: f64, stderr: Option<f64>) -> String {
    match stderr.filter(|s| s.is_finite()) {
        Some(se) => format!("{} ± {}", fmt_value(value), fmt_value(1.96 * se)),
        None => fmt_value(value),
    }
}

/// A measure with a unit prefix: binary for byte counts, decimal (k, M, G, T) otherwise.
pub fn fmt_measure(measure: &str, v: f64) -> String {
    let (base, units): (f64, &[&str]) = if measure.contains("bytes") {
        (1024.0, &[" B", " KiB", " MiB", " GiB", " TiB"])
    } else {
        (1000.0, &["", "k", "M", "G", "T"])
    };
    let mut scaled = v;
    let mut unit = 0;
    while scaled.abs() >= base && unit + 1 < units.len() {
        scaled /= base;
        unit += 1;
    }
    let digits = if unit == 0 && scaled.fract() == 0.0 {
        0
    } else {
        1
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

    #[test]
    fn formatting() {
        assert_eq!(fmt_cell(0.61234, Some(0.01)), "0.6123 ± 0.0196");
        assert_eq!(fmt_cell(23.456, None), "23.46");
        assert_eq!(fmt_cell(0.5, Some(f64::NAN)), "0.5000");
        assert_eq!(fmt_measure("params_active", 134_515_008.0), "134.5M");
        assert_eq!(
            fmt_measure("bytes_per_decode_token", 3.0 * 1024.0 * 1024.0),
            "3.0 MiB"
        );
        assert_eq!(fmt_measure("params_total", 512.0), "512");
        assert_eq!(fmt_measure("decode_tokens_per_s_b1", 41.27), "41.3");
        assert!(measure_higher_is_better("decode_tokens_per_s_b1"));
        assert!(measure_higher_is_better("load_entropy"));
        assert!(!measure_higher_is_better("flops_per_token"));
    }
}
