//! moebench-runner: the engine behind `moebench run`, `apply`, `train` and `bench`.
//!
//! - [`engine`]: [`engine::prepare`] checks a whole suite before anything runs (suite, tasks,
//!   models' configs, weight headers and tokenizers, every method and chain against its model)
//!   and [`engine::run`] executes the plan into a run directory, recording failed jobs and going
//!   on; progress goes to a [`events::RunEvents`] sink.
//! - [`apply`]: a method or chain applied through the catalogue (moebench-methods), and checked
//!   against a model's facts without loading it.
//! - [`env`]: what methods read besides the model (calibration batches, texts, other models).
//! - [`calibration`]: the suite's calibration text as token batches (mixes included).
//! - [`train`]: models a suite builds (and `moebench train`): build, train, save.
//! - [`measure`], [`latency`]: a measure job (parameters, FLOPs, bytes, routing, latency).
//! - [`rescore`]: a run's metrics recomputed from its stored samples, without the model.
//! - [`router_file`]: the router a checkpoint was trained or compressed with, saved beside it.
//! - [`loaded`]: a checkpoint loaded with its router; the evaluator's token budget.
//! - [`paths`]: where shipped task YAMLs and default texts are found.
pub mod apply;
pub mod calibration;
pub mod code;
pub mod doctor;
pub mod engine;
pub mod env;
mod error;
pub mod events;
pub mod latency;
pub mod loaded;
pub mod measure;
pub mod paths;
pub mod rescore;
pub mod router_file;
pub mod train;

pub use error::{Context, Result, RunnerError};
