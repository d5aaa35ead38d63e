//! Flags shared by the commands that load a model or use the Hub.
use anyhow::Result;
use moebench_hub::HubConfig;
use moebench_runner::loaded::Loaded;
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

impl ModelArgs {
    /// The model with its saved router, on the requested device and dtype.
    pub fn load(&self) -> Result<Loaded> {
        Ok(Loaded::resolve(
            &self.hub.config()?,
            &self.model,
            &self.device,
            &self.dtype,
        )?)
    }
}
