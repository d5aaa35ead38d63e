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

use crate::TaskError;
use formats::Format;
use moebench_hub::HubConfig;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use formats::CsvOptions;

/// The documents of one split and the files they were read from.
#[derive(Debug, Clone, PartialEq)]
pub struct SplitData {
    pub docs: Vec<Value>,
    pub files: Vec<PathBuf>,
}

/// Where a task's documents come from (the data keys of its YAML).
#[derive(Debug, Clone, PartialEq)]
pub struct DataSource<'a> {
    /// The task YAML, for error messages.
    pub yaml: &'a Path,
    pub dataset_path: Option<&'a str>,
    pub dataset_name: Option<&'a str>,
    /// `dataset_kwargs.data_files` by split, paths as written.
    pub data_files: Option<BTreeMap<String, Vec<String>>>,
    pub revision: Option<&'a str>,
    pub csv: CsvOptions,
    /// What relative `data_files` resolve against.
    pub data_dir: &'a Path,
    pub loader: Option<Loader>,
}

/// Reads `split` of a dataset (before any `process_docs`).
pub fn load_split(
    source: &DataSource<'_>,
    hub: &HubConfig,
    split: &str,
) -> Result<SplitData, TaskError> {
    let local_files = || -> Result<Vec<PathBuf>, TaskError> {
        let files = source
            .data_files
            .as_ref()
            .and_then(|splits| splits.get(split))
            .ok_or_else(|| {
                TaskError::config(
                    source.yaml.display().to_string(),
                    format!("`dataset_kwargs.data_files` has no files for split `{split}`"),
                )
            })?;
        Ok(files
            .iter()
            .map(|file| source.data_dir.join(file))
            .collect())
    };
    if let Some(loader) = source.loader {
        return loader.read(&local_files()?, source.dataset_name, split);
    }
    let dataset_path = source.dataset_path.unwrap_or_default();
    if let Some(format) = Format::from_builder(dataset_path) {
        let files = local_files()?;
        let mut docs = Vec::new();
        for file in &files {
            docs.extend(format.read(file, &source.csv)?);
        }
        return Ok(SplitData { docs, files });
    }
    let hub_source = hub::HubSource {
        repo: dataset_path,
        name: source.dataset_name,
        revision: source.revision,
        data_files: source.data_files.clone(),
        csv: &source.csv,
    };
    hub::load_split(hub, &hub_source, split)
}
