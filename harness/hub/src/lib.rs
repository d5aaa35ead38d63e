//! Resolution of model and dataset references the way huggingface_hub does it: the same
//! environment variables ([`HubConfig`]), the same cache layout (shared with Python tools), and
//! downloads through hf-hub 0.5 plus ureq (see the `download` module for what hf-hub does not do).
//!
//! ```no_run
//! # fn main() -> Result<(), moebench_hub::HubError> {
//! use moebench_hub::{resolve, HubConfig, ModelRef};
//! let config = HubConfig::from_env()?;
//! let model: ModelRef = "Qwen/Qwen1.5-MoE-A2.7B@main".parse()?;
//! let repo = resolve(&config, &model, &["config.json", "tokenizer.json"], &["generation_config.json"])?;
//! println!("{} at {:?}: {:?}", repo.repo_id, repo.commit, repo.files["config.json"]);
//! # Ok(()) }
//! ```
mod cache;
mod config;
mod download;
mod error;
mod layout;
mod local;
mod reference;

pub use cache::{resolve, resolve_dataset, ResolvedRepo};
pub use config::{HubConfig, DEFAULT_ENDPOINT};
pub use error::{DownloadCause, DownloadFailure, HubError, Missing};
pub use local::local_fingerprint;
pub use reference::ModelRef;
