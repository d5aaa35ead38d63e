//! moebench-eval: answers lm-eval requests with the tch runtime ([`lm`]), scores and aggregates
//! tasks ([`evaluate`]) and writes lm-eval's results schema ([`results`]).
mod error;
pub mod evaluate;
pub mod lm;
pub mod memory;
pub mod protocols;
pub mod results;
pub mod windows;

pub use error::EvalError;
pub use evaluate::{
    evaluate_task, score_task, EvalOptions, MetricValue, SampleRecord, TaskOutcome,
};
pub use lm::{LanguageModel, LmSettings};
