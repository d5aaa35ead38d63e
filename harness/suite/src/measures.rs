//! The measures a `measure` job records: one name and one direction each, shared by the runner
//! (which writes them) and the report (which reads the direction from the records and uses the
//! names for its cost axes).
//!
//! Latency measures are per batch size: [`Measure::at_batch`] gives `ttft_ms_b8`, …

/// A measure's name and whether larger is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Measure {
    pub name: &'static str,
    pub higher_is_better: bool,
    /// What it counts, for tables and axis labels.
    pub label: &'static str,
}

impl Measure {
    const fn cost(name: &'static str, label: &'static str) -> Self {
        Self {
            name,
            higher_is_better: false,
            label,
        }
    }

    const fn benefit(name: &'static str, label: &'static str) -> Self {
        Self {
            name,
            higher_is_better: true,
            label,
        }
    }

    /// The per-batch-size name of a latency measure (`ttft_ms` at batch 8 → `ttft_ms_b8`).
    pub fn at_batch(&self, batch: usize) -> String {
        format!("{}_b{batch}", self.name)
    }

    /// The measure a recorded name belongs to (a latency name with its `_bN` suffix too).
    pub fn of(name: &str) -> Option<Measure> {
        let base = match name.rsplit_once("_b") {
            Some((base, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => base,
            _ => name,
        };
        ALL.iter()
            .copied()
            .find(|m| m.name == name || (m.per_batch() && m.name == base))
    }

    fn per_batch(&self) -> bool {
        LATENCY.iter().any(|m| m.name == self.name)
    }
}

pub const PARAMS_TOTAL: Measure = Measure::cost("params_total", "parameters");
pub const PARAMS_ACTIVE: Measure = Measure::cost("params_active", "active parameters per token");
pub const FLOPS_PER_TOKEN: Measure = Measure::cost("flops_per_token", "forward FLOPs per token");
pub const BYTES_PER_DECODE_TOKEN: Measure =
    Measure::cost("bytes_per_decode_token", "bytes read per decoded token");
pub const ACTIVE_EXPERTS_MEAN: Measure =
    Measure::cost("active_experts_mean", "active experts per token");
pub const ACTIVE_EXPERTS_STD: Measure =
    Measure::cost("active_experts_std", "std of active experts per token");
pub const LOAD_CV: Measure = Measure::cost("load_cv", "expert load coefficient of variation");
pub const MAX_VIOLATION: Measure = Measure::cost("max_violation", "expert load max violation");
pub const LOAD_ENTROPY: Measure = Measure::benefit("load_entropy", "expert load entropy");
pub const DEAD_EXPERTS: Measure = Measure::cost("dead_experts", "experts never routed to");
pub const METHOD_APPLY_S: Measure = Measure::cost("method_apply_s", "method application time (s)");
pub const METHOD_PEAK_RSS_MIB: Measure = Measure::cost(
    "method_peak_rss_mib",
    "peak memory applying the method (MiB)",
);
pub const PEAK_RSS_MIB: Measure = Measure::cost("peak_rss_mib", "peak memory (MiB)");
pub const TTFT_MS: Measure = Measure::cost("ttft_ms", "time to first token (ms)");
pub const PREFILL_TOKENS_PER_S: Measure =
    Measure::benefit("prefill_tokens_per_s", "prefill tokens per second");
pub const TPOT_MS: Measure = Measure::cost("tpot_ms", "time per output token (ms)");
pub const DECODE_TOKENS_PER_S: Measure =
    Measure::benefit("decode_tokens_per_s", "decode tokens per second");

/// The latency measures, recorded once per batch size.
pub const LATENCY: [Measure; 4] = [TTFT_MS, PREFILL_TOKENS_PER_S, TPOT_MS, DECODE_TOKENS_PER_S];

/// Every measure.
pub const ALL: [Measure; 17] = [
    PARAMS_TOTAL,
    PARAMS_ACTIVE,
    FLOPS_PER_TOKEN,
    BYTES_PER_DECODE_TOKEN,
    ACTIVE_EXPERTS_MEAN,
    ACTIVE_EXPERTS_STD,
    LOAD_CV,
    MAX_VIOLATION,
    LOAD_ENTROPY,
    DEAD_EXPERTS,
    METHOD_APPLY_S,
    METHOD_PEAK_RSS_MIB,
    PEAK_RSS_MIB,
    TTFT_MS,
    PREFILL_TOKENS_PER_S,
    TPOT_MS,
    DECODE_TOKENS_PER_S,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_latency_names_resolve_per_batch() {
        let mut names: Vec<&str> = ALL.iter().map(|m| m.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), ALL.len());
        assert_eq!(TTFT_MS.at_batch(8), "ttft_ms_b8");
        assert_eq!(Measure::of("ttft_ms_b8"), Some(TTFT_MS));
        assert_eq!(
            Measure::of("decode_tokens_per_s_b1"),
            Some(DECODE_TOKENS_PER_S)
        );
        assert_eq!(Measure::of("flops_per_token"), Some(FLOPS_PER_TOKEN));
        assert_eq!(Measure::of("flops_per_token_b2"), None);
        assert_eq!(Measure::of("acc,none"), None);
    }
}
