//! Options shared by the commands that load a model.
use anyhow::{Context, Result};
use moebench_hub::HubConfig;
use moebench_model::device::{parse_device, parse_kind};
use moebench_model::{resolve_checkpoint, Checkpoint, Model, Tokenizer};
use std::path::PathBuf;

#[derive(clap::Args, Debug, Clone)]
pub struct ModelArgs {
    /// Hub id with optional @revision (branch, tag or commit sha), or a local directory.
    pub model: String,
    /// auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// f32, bf16 or f16.
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    #[command(flatten)]
    pub hub: HubArgs,
}

#[derive(clap::Args, Debug, Clone)]
pub struct HubArgs {
    /// Resolve from the local cache only (same as HF_HUB_OFFLINE=1).
    #[arg(long)]
    pub offline: bool,
    /// Hugging Face hub cache directory (default: HF_HUB_CACHE, $HF_HOME/hub, …).
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
}

impl HubArgs {
    pub fn config(&self) -> Result<HubConfig> {
        let mut cfg = HubConfig::from_env()?;
        cfg.offline |= self.offline;
        if let Some(dir) = &self.cache_dir {
            cfg.cache_dir = dir.clone();
        }
        Ok(cfg)
    }
}

pub struct Loaded {
    pub checkpoint: Checkpoint,
    pub model: Model,
}

impl Loaded {
    pub fn tokenizer(&self) -> Result<Tokenizer> {
        Ok(self.checkpoint.tokenizer()?)
    }
}

impl ModelArgs {
    pub fn load(&self) -> Result<Loaded> {
        let device = parse_device(&self.device)?;
        let kind = parse_kind(&self.dtype)?;
        let checkpoint = resolve_checkpoint(&self.hub.config()?, &self.model)?;
        let model = checkpoint
            .load(device, kind)
            .with_context(|| format!("loading model {}", self.model))?;
        Ok(Loaded { checkpoint, model })
    }
}
