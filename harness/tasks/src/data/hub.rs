//! Splits of a Hugging Face Hub dataset read from the local cache (`datasets--org--name`
//! snapshots, through moebench-hub), without running `datasets`:
//!
//! 1. `data_files` from the task's `dataset_kwargs`, as patterns in the repo;
//! 2. else the `configs:` of the dataset card (`README.md` YAML header), as the Hub's
//!    no-script datasets declare them: the entry whose `config_name` is `dataset_name`
//!    (or the `default` one);
//! 3. else the `datasets` naming conventions (`data_files.py` `DEFAULT_PATTERNS_*`), looked for
//!    under `<dataset_name>/` when that folder exists: a file belongs to a split when a
//!    component of its path contains one of the split's keywords as a word delimited by
//!    `-`, `_`, `.`, space or digits (`test-00000-of-00001.parquet`, `data/test.jsonl`,
//!    `wikitext-2-raw-v1-test.parquet`, `ARC-Easy/test/0000.parquet`).
//!
//! Only what is cached is read: a dataset must be downloaded beforehand (e.g.
//! `huggingface-cli download --repo-type dataset org/name`), since listing a remote repo's
//! files is not available.
use super::formats::Format;
use super::SplitData;
use crate::TaskError;
use moebench_hub::{resolve_dataset, HubConfig, ModelRef, ResolvedRepo};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Where a Hub dataset split is.
pub(crate) struct HubSource<'a> {
    pub(crate) repo: &'a str,
    pub(crate) name: Option<&'a str>,
    pub(crate) revision: Option<&'a str>,
    pub(crate) data_files: Option<BTreeMap<String, Vec<String>>>,
    pub(crate) csv: &'a super::CsvOptions,
}

pub(crate) fn load_split(
    hub: &HubConfig,
    source: &HubSource,
    split: &str,
) -> Result<SplitData, TaskError> {
    let reference = match source.repo.parse::<ModelRef>()? {
        ModelRef::Hub { repo_id, revision } => ModelRef::Hub {
            repo_id,
            revision: source.revision.map(str::to_owned).or(revision),
        },
        local => local,
    };
    let repo = resolve_dataset(hub, &reference, &[], &["README.md"])?;
    let files = split_files(&repo, source, split)?;
    if files.is_empty() {
        return Err(TaskError::data(
            &repo.dir,
            format!(
                "no data file of split `{split}` (config {:?}) in this snapshot of {}",
                source.name, source.repo
            ),
        ));
    }
    let mut docs = Vec::new();
    for file in &files {
        let format = Format::from_path(file).ok_or_else(|| {
            TaskError::data(
                file,
                "unsupported data file type (supported: parquet, json, jsonl, csv)",
            )
        })?;
        docs.extend(format.read(file, source.csv)?);
    }
    Ok(SplitData { docs, files })
}

fn split_files(
    repo: &ResolvedRepo,
    source: &HubSource,
    split: &str,
) -> Result<Vec<PathBuf>, TaskError> {
    let patterns = match &source.data_files {
        Some(data_files) => Some(data_files.get(split).cloned().unwrap_or_default()),
        None => card_patterns(repo, source.name, split)?,
    };
    match patterns {
        Some(patterns) => {
            let mut files = Vec::new();
            for pattern in patterns {
                files.extend(repo.list(&pattern)?);
            }
            Ok(files)
        }
        None => conventional_files(repo, source.name, split),
    }
}

#[derive(Deserialize)]
struct Card {
    #[serde(default)]
    configs: Vec<CardConfig>,
}

#[derive(Deserialize)]
struct CardConfig {
    config_name: String,
    #[serde(default)]
    default: bool,
    data_files: Option<serde_yaml::Value>,
}

/// The `data_files` patterns of `split` declared in the dataset card, if it declares configs.
fn card_patterns(
    repo: &ResolvedRepo,
    name: Option<&str>,
    split: &str,
) -> Result<Option<Vec<String>>, TaskError> {
    let Some(readme) = repo.files.get("README.md") else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(readme).map_err(TaskError::io(readme))?;
    let Some(header) = text
        .strip_prefix("---\n")
        .and_then(|rest| rest.split_once("\n---"))
        .map(|(h, _)| h)
    else {
        return Ok(None);
    };
    let card: Card = serde_yaml::from_str(header)
        .map_err(|error| TaskError::data(readme, format!("dataset card header: {error}")))?;
    let config = card.configs.iter().find(|config| match name {
        Some(name) => config.config_name == name,
        None => config.default || config.config_name == "default",
    });
    let Some(config) = config else {
        return Ok(None);
    };
    Ok(Some(match &config.data_files {
        Some(serde_yaml::Value::String(pattern)) if split == "train" => vec![pattern.clone()],
        Some(serde_yaml::Value::Sequence(entries)) => entries
            .iter()
            .filter(|entry| entry.get("split").and_then(serde_yaml::Value::as_str) == Some(split))
            .flat_map(|entry| match entry.get("path") {
                Some(serde_yaml::Value::String(path)) => vec![path.clone()],
                Some(serde_yaml::Value::Sequence(paths)) => paths
                    .iter()
                    .filter_map(|p| p.as_str().map(str::to_owned))
                    .collect(),
                _ => Vec::new(),
            })
            .collect(),
        _ => Vec::new(),
    }))
}

/// Keywords of a split in file and folder names (`datasets` `data_files.py` `SPLIT_KEYWORDS`).
fn split_keywords(split: &str) -> Vec<&str> {
    match split {
        "train" => vec!["train", "training"],
        "validation" => vec!["validation", "valid", "dev", "val"],
        "test" => vec!["test", "testing", "eval", "evaluation"],
        other => vec![other],
    }
}

fn conventional_files(
    repo: &ResolvedRepo,
    name: Option<&str>,
    split: &str,
) -> Result<Vec<PathBuf>, TaskError> {
    let base = match name {
        Some(name) if repo.dir.join(name).is_dir() => repo.dir.join(name),
        _ => repo.dir.clone(),
    };
    let keywords = split_keywords(split);
    Ok(repo
        .list("*")?
        .into_iter()
        .filter(|file| Format::from_path(file).is_some())
        .filter(|file| {
            file.strip_prefix(&base).is_ok_and(|relative| {
                relative.components().any(|component| {
                    component
                        .as_os_str()
                        .to_string_lossy()
                        .split(|c: char| "-_. ".contains(c) || c.is_ascii_digit())
                        .any(|word| keywords.contains(&word))
                })
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    /// A fake cache holding one dataset snapshot; returns the cache dir.
    fn cache_with(files: &[(&str, &str)]) -> tempfile::TempDir {
        let cache = tempfile::tempdir().unwrap();
        let repo = cache.path().join("datasets--org--data");
        let commit = "0123456789abcdef0123456789abcdef01234567";
        fs::create_dir_all(repo.join("refs")).unwrap();
        fs::write(repo.join("refs/main"), commit).unwrap();
        for (path, text) in files {
            let path = repo.join("snapshots").join(commit).join(path);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, text).unwrap();
        }
        cache
    }

    fn load(cache: &tempfile::TempDir, name: Option<&str>, split: &str) -> Vec<serde_json::Value> {
        let hub = HubConfig::from_lookup(|var| match var {
            "HF_HUB_CACHE" => Some(cache.path().display().to_string()),
            "HF_HUB_OFFLINE" => Some("1".to_owned()),
            _ => None,
        })
        .unwrap();
        let source = HubSource {
            repo: "org/data",
            name,
            revision: None,
            data_files: None,
            csv: &crate::data::CsvOptions::default(),
        };
        load_split(&hub, &source, split).unwrap().docs
    }

    #[test]
    fn dataset_card_configs() {
        let readme = "---\nconfigs:\n- config_name: Easy\n  data_files:\n  - split: test\n    path: Easy/test-*\n\
                      - config_name: Hard\n  data_files:\n  - split: test\n    path: Hard/test-*\n---\n# card\n";
        let cache = cache_with(&[
            ("README.md", readme),
            ("Easy/test-00000-of-00001.jsonl", "{\"q\": \"easy\"}\n"),
            ("Hard/test-00000-of-00001.jsonl", "{\"q\": \"hard\"}\n"),
        ]);
        assert_eq!(
            load(&cache, Some("Hard"), "test"),
            vec![serde_json::json!({"q": "hard"})]
        );
    }

    #[test]
    fn naming_conventions() {
        let cache = cache_with(&[
            ("data/test-00000-of-00001.jsonl", "{\"q\": 1}\n"),
            ("data/validation.jsonl", "{\"q\": 2}\n"),
            ("data/contest.jsonl", "{\"q\": 3}\n"),
            ("cfg/cfg-test.jsonl", "{\"q\": 4}\n"),
        ]);
        assert_eq!(
            load(&cache, None, "test"),
            vec![serde_json::json!({"q": 4}), serde_json::json!({"q": 1})]
        );
        assert_eq!(
            load(&cache, Some("cfg"), "test"),
            vec![serde_json::json!({"q": 4})]
        );
        assert_eq!(
            load(&cache, None, "validation"),
            vec![serde_json::json!({"q": 2})]
        );
    }
}
