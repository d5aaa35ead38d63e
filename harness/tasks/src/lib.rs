//! lm-evaluation-harness 0.4.13 compatible tasks: task YAML ([`config`], read by [`yaml`]),
//! prompt templates ([`template`]), datasets ([`data`]), Python hooks ([`hooks`]: the
//! boundary, called through a runtime the binary installs) and the built-in ports of
//! lm-eval's standard hooks ([`processors`]), request construction ([`requests`]),
//! per-document scoring ([`scoring`]), lm-eval's hashes ([`hashing`]) and the code benchmarks'
//! ports and sandboxed execution ([`code`]).
//!
//! Modules depend only on the ones listed before them here: `template`, `hashing`, `hooks`,
//! `code`, `processors`, `data` → `config` → `instance` → `scoring` → `fields` → `yaml` →
//! `registry` → `task` → `requests` → `validate`.
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
pub mod hooks;
mod instance;
pub mod processors;
pub mod registry;
pub mod requests;
pub mod scoring;
mod task;
pub mod template;
pub mod validate;
mod yaml;

pub use config::{GroupSpec, Sampling, TaskConfig, TaskSpec};
pub use error::TaskError;
pub use instance::{DocInstance, Expected, Request};
pub use registry::{TaskIndex, TaskNode};
pub use requests::{build_instances, DEFAULT_FEWSHOT_SEED};
pub use scoring::{Response, SampleScore, ScoreError, ScoredDoc, Scorer};
pub use task::Task;
pub use yaml::{load_yaml, LoadedYaml};

use moebench_core::metrics::DocScore;
use std::collections::BTreeMap;

/// lm-eval's per-document scores of `instance` under `task`'s metrics and filters, keyed
/// `"<metric>,<filter>"` (`ConfigurableTask.process_results`). Corpus-level metrics (`f1`,
/// `bleu`, …) have items rather than numbers per document: use [`score_docs`] for them.
pub fn score_doc(
    task: &Task,
    instance: &DocInstance,
    responses: &[Response],
) -> Result<BTreeMap<String, DocScore>, TaskError> {
    let error = |source| TaskError::Score {
        task: task.name().to_owned(),
        doc: Some(instance.doc_id),
        source: Box::new(source),
    };
    task.scorer()
        .score(instance, responses)
        .map_err(error)?
        .into_iter()
        .map(|(key, score)| match score {
            SampleScore::Score(score) => Ok((key, score)),
            SampleScore::Item(_) => Err(error(ScoreError::Invalid(format!(
                "`{key}` is a corpus-level metric: score all documents with `score_docs`"
            )))),
        })
        .collect()
}

/// [`score_doc`] for every document at once: Python hooks (`process_results`, metric
/// functions, filters) are called once per filter pipeline for the whole task.
pub fn score_docs(
    task: &Task,
    docs: &[(&DocInstance, &[Response])],
) -> Result<Vec<BTreeMap<String, SampleScore>>, TaskError> {
    task.scorer()
        .score_all(docs)
        .map_err(|source| TaskError::Score {
            task: task.name().to_owned(),
            doc: None,
            source: Box::new(source),
        })
}
