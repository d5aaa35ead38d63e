//! Loading the documents of a task split as JSON objects, from:
//!
//! - a `moebench_loader` (original benchmark formats, see [`Loader`]) over
//!   `dataset_kwargs.data_files`;
//! - `dataset_path: json | csv | parquet` over `dataset_kwargs.data_files`;
//! - a Hub dataset id (`org/name`, config `dataset_name`) from the local Hugging Face cache.
//!
//! Relative `data_files` paths resolve against the directory of the YAML file that set
//! `dataset_kwargs` (lm-eval passes them to `datasets`, which resolves them against the working
//! directory; task files that carry their data are only portable this way).
mod formats;
mod hub;
mod loaders;

pub use loaders::{wikitext_pages, Loader};

use crate::config::TaskSpec;
use crate::TaskError;
use formats::Format;
use moebench_hub::HubConfig;
use serde_json::Value;
use std::path::PathBuf;

/// The documents of one split and the files they were read from.
#[derive(Debug, Clone, PartialEq)]
pub struct SplitData {
    pub docs: Vec<Value>,
    pub files: Vec<PathBuf>,
}

/// Reads `split` of the task's dataset (before any `moebench_processor`).
pub fn load_split(spec: &TaskSpec, hub: &HubConfig, split: &str) -> Result<SplitData, TaskError> {
    let config = &spec.config;
    let kwargs = config.dataset_kwargs.clone().unwrap_or_default();
    let data_files = kwargs.data_files.as_ref().map(|files| files.by_split());
    let local_files = || -> Result<Vec<PathBuf>, TaskError> {
        let files = data_files
            .as_ref()
            .and_then(|splits| splits.get(split))
            .ok_or_else(|| {
                TaskError::config(
                    spec.path.display().to_string(),
                    format!("`dataset_kwargs.data_files` has no files for split `{split}`"),
                )
            })?;
        Ok(files.iter().map(|file| spec.data_dir.join(file)).collect())
    };
    if let Some(loader) = config.moebench_loader {
        return loader.read(&local_files()?, config.dataset_name.as_deref(), split);
    }
    let dataset_path = config.dataset_path.as_deref().unwrap_or_default();
    if let Some(format) = Format::from_builder(dataset_path) {
        let files = local_files()?;
        let mut docs = Vec::new();
        for file in &files {
            docs.extend(format.read(file)?);
        }
        return Ok(SplitData { docs, files });
    }
    let source = hub::HubSource {
        repo: dataset_path,
        name: config.dataset_name.as_deref(),
        revision: kwargs.revision.as_deref(),
        data_files,
    };
    hub::load_split(hub, &source, split)
}
