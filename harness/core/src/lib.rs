//! Scoring math shared by every evaluation, bit-compatible with EleutherAI lm-evaluation-harness.
//!
//! - [`pyrandom`]: CPython's `random.Random` (few-shot sampling, bootstrap resampling).
//! - [`metrics`]: per-document metrics and their aggregations (`lm_eval/api/task.py`,
//!   `lm_eval/api/metrics.py`).
//! - [`classification`], [`sacrebleu`]: corpus-level metrics (F1, MCC, Brier score; BLEU,
//!   chrF, chrF++, TER) that lm-eval aggregates over all documents.
//! - [`numpy`]: numpy's summation order for the metrics lm-eval computes with numpy.
//! - [`filters`]: the response post-processing pipelines (`lm_eval/filters/`).
//! - [`stats`]: standard errors, bootstrap, group aggregation, paired comparison of runs.
//! - [`pyre`], [`pystr`]: Python `re` patterns and `str` semantics on top of Rust's.
//! - [`suggest`]: "did you mean …?" hints for misspelled names.
//! - [`params`]: method parameter schemas (types, ranges, defaults) and canonical JSON for hashes.

pub mod classification;
pub mod filters;
pub mod metrics;
pub mod numpy;
pub mod params;
pub mod pyrandom;
pub mod pyre;
pub mod pystr;
pub mod sacrebleu;
pub mod stats;
pub mod suggest;

pub use filters::{Filter, FilterPipeline, RegexFilter};
pub use metrics::{
    Aggregation, DocScore, ExactMatch, Gold, Loglikelihood, MetricName, MultipleChoice,
};
pub use pyrandom::PyRandom;
pub use pyre::PyRegex;

/// Every error this crate reports.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error("unknown metric `{0}`")]
    UnknownMetric(String),
    #[error("unknown aggregation `{0}`")]
    UnknownAggregation(String),
    #[error("unknown filter `{0}`")]
    UnknownFilter(String),
    #[error("invalid argument for `{what}`: {message}")]
    Argument { what: String, message: String },
    #[error("filter pipeline `{0}`: `take_first` must be the last step")]
    TakeFirstNotLast(String),
    #[error("regex `{pattern}` cannot run on the Rust regex engine: {message}")]
    Regex { pattern: String, message: String },
    #[error(
        "regex `{pattern}` found {matches} matches, group_select {group_select} is out of range"
    )]
    GroupSelect {
        pattern: String,
        matches: usize,
        group_select: i64,
    },
    #[error("aggregation `{aggregation}` got a {got} per-document score")]
    ScoreKind {
        aggregation: &'static str,
        got: &'static str,
    },
    #[error("metric `{metric}`: {message}")]
    Metric { metric: String, message: String },
    #[error("cannot aggregate an empty list of scores")]
    NoScores,
    #[error("{0} per-choice values for {1} choices")]
    ChoiceCount(usize, usize),
    #[error("sample of {k} from a population of {n}")]
    SampleTooLarge { k: usize, n: usize },
    #[error("empty range for randrange({start}, {stop}, {step})")]
    EmptyRange { start: i64, stop: i64, step: i64 },
    #[error("paired samples differ in length: {0} and {1}")]
    PairedLength(usize, usize),
}

impl CoreError {
    /// A [`CoreError::Argument`] for the filter or metric `what`.
    pub(crate) fn argument(what: &str, message: String) -> Self {
        Self::Argument {
            what: what.to_owned(),
            message,
        }
    }
}
