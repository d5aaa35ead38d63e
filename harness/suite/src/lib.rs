//! moebench-suite: what `moebench run` reads and writes, without the model runtime.
//!
//! - [`suite`]: the suite YAML ([`load_suite`]), parsed into typed structs and validated, with
//!   `file:line:column` errors.
//! - [`methods`]: method entries checked against the catalogue's schemas, and parameter sweeps.
//! - [`plan`]: models × methods × tasks expanded into content-hashed [`Job`]s, grouped by
//!   (model, method) so that a method is applied once per model.
//! - [`store`]: the run directory ([`RunStore`]): append-only `records.jsonl`, per-job sample
//!   logs, `run.json`; [`read_records`] applies the rule that makes resume safe.
//! - [`cluster`]: Slurm job arrays and Kubernetes Indexed Jobs that run a suite's shards.
//! - [`build`]: models a suite builds and trains itself ([`build::TrainSpec`]).
//! - [`leaderboard`]: the markdown leaderboard of a run's records.
//! - [`measures`]: the names and directions of the measures the runner records.
pub mod build;
pub mod cluster;
mod error;
pub mod leaderboard;
pub mod measures;
pub mod methods;
pub mod plan;
pub mod store;
pub mod suite;

pub use build::BuildError;
pub use error::SuiteError;
pub use methods::{MethodConfig, MethodStep};
pub use plan::{Job, JobKind, Plan, ResolvedModel, ResolvedTask, Shard};
pub use store::{
    failed_jobs, read_records, read_routing, write_atomic, LayerLoads, Measurement, Record,
    RecordKind, RoutingLog, RunInfo, RunStore,
};
pub use suite::{load_suite, Suite};

/// Version of the harness that produced a result; part of every job hash.
pub const HARNESS_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Lowercase hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    format!("{:x}", Sha256::digest(bytes))
}
