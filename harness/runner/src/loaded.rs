//! A checkpoint loaded as a model (with its saved router), and the evaluator's token budget.
use crate::error::{Context, Result};
use crate::router_file::restore_router;
use moebench_hub::HubConfig;
use moebench_model::device::{parse_device, parse_kind};
use moebench_model::{resolve_checkpoint, Checkpoint, Model, Tokenizer};
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

/// A `--token-budget` value that is neither `auto` nor a positive number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not `auto` or a number of tokens ≥ 1")]
pub struct BadTokenBudget(String);

impl std::str::FromStr for TokenBudget {
    type Err = BadTokenBudget;

    fn from_str(s: &str) -> Result<Self, BadTokenBudget> {
        match s {
            "auto" => Ok(Self::Auto),
            n => match n.parse::<usize>() {
                Ok(n) if n > 0 => Ok(Self::Fixed(n)),
                _ => Err(BadTokenBudget(n.to_owned())),
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

pub struct Loaded {
    pub checkpoint: Checkpoint,
    pub model: Model,
}

impl Loaded {
    /// Loads the checkpoint, with the router it was trained with when it saved one
    /// ([`crate::router_file::ROUTER_FILE`]).
    pub fn new(checkpoint: Checkpoint, device: Device, kind: Kind) -> Result<Self> {
        let mut model = checkpoint
            .load(device, kind)
            .with_context(|| format!("loading model {}", checkpoint.reference))?;
        restore_router(&mut model, &checkpoint.dir)?;
        Ok(Self { checkpoint, model })
    }

    /// Resolves `reference` (Hub id, `id@revision` or directory) and loads it.
    pub fn resolve(hub: &HubConfig, reference: &str, device: &str, dtype: &str) -> Result<Self> {
        let device = parse_device(device)?;
        let kind = parse_kind(dtype)?;
        Self::new(resolve_checkpoint(hub, reference)?, device, kind)
    }

    /// The checkpoint's tokenizer, refused when it produces ids the model has no embedding for.
    pub fn tokenizer(&self) -> Result<Tokenizer> {
        let tokenizer = self.checkpoint.tokenizer()?;
        tokenizer.check_fits(self.model.config.vocab_size)?;
        Ok(tokenizer)
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

#[cfg(test)]
mod tests {
    use super::TokenBudget;

    #[test]
    fn token_budget_parses_auto_and_positive_numbers() {
        assert_eq!("auto".parse(), Ok(TokenBudget::Auto));
        assert_eq!("4096".parse(), Ok(TokenBudget::Fixed(4096)));
        for bad in ["0", "-1", "lots"] {
            let e = bad.parse::<TokenBudget>().unwrap_err().to_string();
            assert!(e.contains(bad) && e.contains("auto"), "{e}");
        }
    }
}
