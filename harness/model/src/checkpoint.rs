//! From a model reference (Hub id[@revision] or local directory) to a loaded model + tokenizer,
//! with the provenance (repo, commit) that results must record.
use crate::error::{ModelError, Result};
use crate::weights::{INDEX_FILE, SINGLE_FILE};
use crate::{Model, ModelConfig, Tokenizer};
use moebench_hub::{resolve, HubConfig, ModelRef, ResolvedRepo};
use std::path::PathBuf;
use tch::{Device, Kind};

/// Files a checkpoint may carry besides the weights.
const OPTIONAL: [&str; 6] = [
    SINGLE_FILE,
    INDEX_FILE,
    "tokenizer.json",
    "tokenizer_config.json",
    "generation_config.json",
    "special_tokens_map.json",
];

/// A resolved checkpoint directory and where it came from.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// What the user asked for, e.g. `HuggingFaceTB/SmolLM2-135M-Instruct@main`.
    pub reference: String,
    pub repo_id: String,
    /// Hub commit sha, or `None` for a local directory.
    pub commit: Option<String>,
    pub dir: PathBuf,
}

/// Resolves `reference` through the huggingface_hub cache contract and makes sure the weights
/// are all there. A checkpoint whose config and weights are already cached is used without
/// touching the network (as transformers does); otherwise, when online, missing files are
/// downloaded.
pub fn resolve_checkpoint(hub: &HubConfig, reference: &str) -> Result<Checkpoint> {
    let model_ref: ModelRef = reference.parse()?;
    let cached_only = HubConfig {
        offline: true,
        ..hub.clone()
    };
    let repo = match resolve(&cached_only, &model_ref, &["config.json"], &OPTIONAL) {
        Ok(repo) if has_weights(&repo) || hub.offline => repo,
        Err(e) if hub.offline => return Err(e.into()),
        _ => resolve(hub, &model_ref, &["config.json"], &OPTIONAL)?,
    };
    let repo = match (repo.files.get(SINGLE_FILE), repo.files.get(INDEX_FILE)) {
        (Some(_), _) => repo,
        (None, Some(index)) => {
            // Sharded checkpoint: resolve every shard the index lists.
            let shards: Vec<String> = crate::weights::shard_names(index)?;
            let names: Vec<&str> = shards.iter().map(String::as_str).collect();
            resolve(hub, &model_ref, &names, &[])?;
            repo
        }
        (None, None) => {
            return Err(ModelError::Io {
                path: repo.dir.join(SINGLE_FILE),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("{reference} has neither {SINGLE_FILE} nor {INDEX_FILE}"),
                ),
            })
        }
    };
    Ok(checkpoint_of(reference, repo))
}

fn has_weights(repo: &ResolvedRepo) -> bool {
    repo.files.contains_key(SINGLE_FILE) || repo.files.contains_key(INDEX_FILE)
}

fn checkpoint_of(reference: &str, repo: ResolvedRepo) -> Checkpoint {
    Checkpoint {
        reference: reference.to_string(),
        repo_id: repo.repo_id,
        commit: repo.commit,
        dir: repo.dir,
    }
}

impl Checkpoint {
    pub fn load(&self, device: Device, kind: Kind) -> Result<Model> {
        Model::load(&self.dir, device, kind)
    }

    /// What can be checked without loading the weights: the config parses and is of a
    /// supported family, the safetensors headers are whole, the embedding and the layer count
    /// match the config, and the tokenizer (when there is one) fits the embedding. Returns the
    /// config.
    pub fn check(&self) -> Result<ModelConfig> {
        let config = ModelConfig::from_file(&self.dir.join("config.json"))?;
        let shapes = crate::weights::read_shapes(&self.dir)?;
        let embed = "model.embed_tokens.weight";
        let expected = vec![config.vocab_size as i64, config.hidden_size as i64];
        match shapes.get(embed) {
            None => {
                return Err(ModelError::MissingTensor {
                    name: embed.into(),
                    dir: self.dir.clone(),
                })
            }
            Some(found) if *found != expected => {
                return Err(ModelError::ShapeMismatch {
                    name: embed.into(),
                    expected,
                    found: found.clone(),
                    dir: self.dir.clone(),
                })
            }
            Some(_) => {}
        }
        let layers = shapes
            .keys()
            .filter_map(|k| {
                k.strip_prefix("model.layers.")?
                    .split('.')
                    .next()?
                    .parse::<usize>()
                    .ok()
            })
            .max()
            .map_or(0, |l| l + 1);
        if layers != config.num_layers {
            return Err(ModelError::Config {
                path: self.dir.join("config.json"),
                msg: format!(
                    "num_hidden_layers is {} but the weights have {layers} layers (the config \
                     does not belong to these weights)",
                    config.num_layers
                ),
            });
        }
        if self.dir.join("tokenizer.json").is_file() {
            self.tokenizer()?.check_fits(config.vocab_size)?;
        }
        Ok(config)
    }

    pub fn tokenizer(&self) -> Result<Tokenizer> {
        Tokenizer::from_dir(&self.dir)
    }
}
