//! lm-evaluation-harness 0.4.13 compatible tasks: task YAML ([`config`]), prompt templates
//! ([`template`]), datasets ([`data`]), the built-in ports of lm-eval's Python hooks
//! ([`processors`]), request construction ([`requests`]), per-document scoring ([`scoring`])
//! and lm-eval's hashes ([`hashing`]).
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use moebench_tasks::{build_instances, Task, TaskIndex, DEFAULT_FEWSHOT_SEED};
//! let index = TaskIndex::scan(&["suites/tasks"])?;
//! let hub = moebench_hub::HubConfig::from_env()?;
//! for spec in index.resolve("arc_easy_shared")?.tasks() {
//!     let task = Task::load(spec.clone(), &hub, Some(0))?;
//!     let instances = build_instances(&task, DEFAULT_FEWSHOT_SEED, Some(10))?;
//!     println!("{}: {:?}", task.name(), instances[0].requests[0]);
//! }
//! # Ok(()) }
//! ```
pub mod code;
pub mod config;
pub mod data;
mod error;
mod fields;
pub mod hashing;
pub mod processors;
pub mod registry;
pub mod requests;
pub mod scoring;
mod task;
pub mod template;

pub use config::{load_yaml, GroupSpec, LoadedYaml, TaskConfig, TaskSpec};
pub use error::TaskError;
pub use registry::{TaskIndex, TaskNode};
pub use requests::{
    build_instances, DocInstance, Expected, Request, Sampling, DEFAULT_FEWSHOT_SEED,
};
pub use scoring::{Response, Scorer};
pub use task::Task;

/// lm-eval's per-document scores of `instance` under `task`'s metrics and filters, keyed
/// `"<metric>,<filter>"` (`ConfigurableTask.process_results`).
pub fn score_doc(
    task: &Task,
    instance: &DocInstance,
    responses: &[Response],
) -> Result<std::collections::BTreeMap<String, moebench_core::metrics::DocScore>, TaskError> {
    task.scorer()
        .score(instance, responses)
        .map_err(|message| TaskError::Responses {
            task: task.name().to_owned(),
            doc: instance.doc_id,
            message,
        })
}
