//! Options and helpers shared by the commands that load a model or tasks.
use anyhow::{Context, Result};
use moebench_hub::HubConfig;
use moebench_model::device::{parse_device, parse_kind};
use moebench_model::{resolve_checkpoint, Checkpoint, Model, Tokenizer};
use std::path::{Path, PathBuf};
use tch::{Device, Kind};

/// Most tokens per forward pass on CPU, where larger batches gain nothing; `auto` lowers it
/// when memory is short (and allows 8× on CUDA).
pub const DEFAULT_TOKEN_BUDGET: usize = 8192;

/// The evaluator's token budget (most padded tokens per forward pass): a number, or derived
/// from the memory free on the device (`moebench_eval::memory`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenBudget {
    Auto,
    Fixed(usize),
}

impl std::str::FromStr for TokenBudget {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            n => match n.parse::<usize>() {
                Ok(n) if n > 0 => Ok(Self::Fixed(n)),
                _ => Err(format!("`{n}` is not `auto` or a number of tokens ≥ 1")),
            },
        }
    }
}

impl TokenBudget {
    /// The budget for `model` at `max_length`, and how it was chosen (recorded with results).
    pub fn resolve(self, model: &Model, max_length: usize) -> (usize, String) {
        use moebench_eval::memory::{available_memory, safe_token_budget, MEMORY_FRACTION};
        if let Self::Fixed(n) = self {
            return (n, "fixed".into());
        }
        let cap = match model.device.is_cuda() {
            true => 8 * DEFAULT_TOKEN_BUDGET,
            false => DEFAULT_TOKEN_BUDGET,
        };
        match available_memory(model.device) {
            Some(free) => {
                let budget = safe_token_budget(&model.config, model.kind, max_length, free, cap);
                let source = format!(
                    "auto: {:.0}% of {:.1} GiB free, at most {cap}",
                    MEMORY_FRACTION * 100.0,
                    free as f64 / (1u64 << 30) as f64
                );
                (budget, source)
            }
            None => (cap, "auto: free memory unknown, the default".into()),
        }
    }
}

/// The checkout the binary was built from (`<root>/target/<profile>/moebench`), if it still is.
pub fn checkout_root() -> Option<PathBuf> {
    std::env::current_exe()
        .ok()
        .and_then(|e| e.ancestors().nth(3).map(Path::to_path_buf))
}

/// Shipped task directories: `suites/tasks` in the working directory and in the checkout the
/// binary was built from.
pub fn task_dirs(extra: &[PathBuf]) -> Vec<PathBuf> {
    let mut dirs = vec![PathBuf::from("suites/tasks")];
    if let Some(root) = checkout_root() {
        dirs.insert(0, root.join("suites/tasks"));
    }
    dirs.retain(|d| d.is_dir());
    dirs.dedup_by(|a, b| a.canonicalize().ok() == b.canonicalize().ok());
    dirs.extend(extra.iter().cloned());
    dirs
}

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
    /// Loads the checkpoint, with the router it was trained with when it saved one
    /// ([`crate::methods::ROUTER_FILE`]).
    pub fn new(checkpoint: Checkpoint, device: Device, kind: Kind) -> Result<Self> {
        let mut model = checkpoint
            .load(device, kind)
            .with_context(|| format!("loading model {}", checkpoint.reference))?;
        crate::methods::restore_router(&mut model, &checkpoint.dir)?;
        Ok(Self { checkpoint, model })
    }

    pub fn tokenizer(&self) -> Result<Tokenizer> {
        Ok(self.checkpoint.tokenizer()?)
    }

    /// The tokenizer when the checkpoint has a `tokenizer.json` (the tiny test fixtures do not).
    pub fn tokenizer_if_any(&self) -> Result<Option<Tokenizer>> {
        self.checkpoint
            .dir
            .join("tokenizer.json")
            .is_file()
            .then(|| self.tokenizer())
            .transpose()
    }
}

impl ModelArgs {
    pub fn load(&self) -> Result<Loaded> {
        let device = parse_device(&self.device)?;
        let kind = parse_kind(&self.dtype)?;
        Loaded::new(
            resolve_checkpoint(&self.hub.config()?, &self.model)?,
            device,
            kind,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::TokenBudget;

    #[test]
    fn token_budget_parses_auto_and_positive_numbers() {
        assert_eq!("auto".parse(), Ok(TokenBudget::Auto));
        assert_eq!("4096".parse(), Ok(TokenBudget::Fixed(4096)));
        for bad in ["0", "-1", "lots"] {
            let e = bad.parse::<TokenBudget>().unwrap_err();
            assert!(e.contains(bad) && e.contains("auto"), "{e}");
        }
    }
}
