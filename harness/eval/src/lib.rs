//! moebench-eval: answers lm-eval requests with the tch runtime ([`lm`]), scores and aggregates
//! tasks ([`evaluate`]) and writes lm-eval's results schema ([`results`]).
//!
//! Modules depend only on the ones listed before them: `error`, `windows`, `trie` → `plan` →
//! `memory` → `engine` → `lm` → `protocols` → `evaluate` → `results`.
pub mod engine;
mod error;
pub mod evaluate;
pub mod lm;
pub mod memory;
pub mod plan;
pub mod protocols;
pub mod results;
pub mod trie;
pub mod windows;

pub use error::EvalError;
pub use evaluate::{
    evaluate_task, score_task, EvalOptions, MetricValue, SampleRecord, TaskOutcome,
};
pub use lm::{LanguageModel, LmSettings, PrefixCache};
