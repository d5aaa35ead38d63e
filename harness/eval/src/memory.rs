//! Memory-safe batching. The evaluator packs requests under a token budget (most padded tokens
//! per forward pass); `auto` derives that budget from the memory free on the device and an
//! upper bound of the transient bytes one token costs in a no-grad forward, so that a large
//! vocabulary, long context or many experts shrink the batches instead of exhausting memory
//! (lm-eval's `--batch_size auto` finds the same limit by trying sizes until CUDA reports an
//! out-of-memory error, which a CPU process cannot catch: it is killed).
use moebench_model::ModelConfig;
use tch::{Device, Kind};

/// Fraction of the free memory one forward pass may use: the rest is headroom for the
/// allocator, the tokenizer, per-request bookkeeping and estimation error.
pub const MEMORY_FRACTION: f64 = 0.5;

/// Share of one forward pass's bytes (the token budget's) that the prefix KV cache may keep
/// between passes: with `auto`, passes use at most [`MEMORY_FRACTION`] of the free memory and
/// kept prefixes a quarter more.
pub const PREFIX_CACHE_SHARE: f64 = 0.5;

/// Bytes of the keys and values one position keeps in every layer's KV cache.
pub fn kv_bytes_per_token(config: &ModelConfig, kind: Kind) -> u64 {
    let per_layer = 2 * config.num_kv_heads as u64 * config.head_dim as u64;
    kind.elt_size_in_bytes() as u64 * per_layer * config.num_layers as u64
}

/// Upper bound of the transient bytes one input token costs in a no-grad forward pass whose
/// rows are `max_length` long: the residual stream and attention projections, attention
/// scores (the math kernel materialises `heads × length` per token, twice with the softmax),
/// the widest feed-forward (a dense MLP's gate/up/activation, or `top_k` gathered expert inputs
/// with theirs plus the router and a shared expert) and, for scored positions, the f32 logits,
/// their log-softmax and a copy (every position of a rolling-perplexity window is scored).
pub fn bytes_per_token(config: &ModelConfig, kind: Kind, max_length: usize) -> u64 {
    let element = kind.elt_size_in_bytes() as u64;
    let (h, heads) = (config.hidden_size as u64, config.num_heads as u64);
    let qkv = (config.num_heads + 2 * config.num_kv_heads) as u64 * config.head_dim as u64;
    let attention = 4 * h + qkv + 2 * heads * max_length as u64;
    let dense_mlp = 3 * config.intermediate_size as u64;
    let moe_mlp = config.moe.as_ref().map_or(0, |moe| {
        let expert = h + 3 * moe.expert_intermediate_size as u64;
        let shared = 3 * moe.shared_expert_intermediate_size.unwrap_or(0) as u64;
        moe.top_k as u64 * (expert + 2) + 2 * moe.num_experts as u64 + shared
    });
    let activations = element * (attention + dense_mlp.max(moe_mlp));
    let logits = 4 * 3 * config.vocab_size as u64;
    activations + logits
}

/// The largest token budget whose forward fits `MEMORY_FRACTION` of `available_bytes`, at least
/// `max_length` (one full row always runs, as with a fixed budget) and at most `cap`.
pub fn safe_token_budget(
    config: &ModelConfig,
    kind: Kind,
    max_length: usize,
    available_bytes: u64,
    cap: usize,
) -> usize {
    let per_token = bytes_per_token(config, kind, max_length).max(1);
    let fits = (available_bytes as f64 * MEMORY_FRACTION / per_token as f64) as usize;
    fits.min(cap).max(max_length)
}

/// Bytes free for this process on `device`: on CPU the kernel's `MemAvailable`, lowered to the
/// cgroup v2 limit's headroom when one is set; on CUDA the free memory `nvidia-smi` reports for
/// the device. `None` when it cannot be read (the caller keeps its fixed budget).
pub fn available_memory(device: Device) -> Option<u64> {
    match device {
        Device::Cuda(index) => cuda_free(index),
        _ => {
            let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
            let available = meminfo_available(&meminfo)?;
            Some(match cgroup_headroom() {
                Some(headroom) => available.min(headroom),
                None => available,
            })
        }
    }
}

/// `MemAvailable` of a `/proc/meminfo` text, in bytes.
fn meminfo_available(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// `memory.max − memory.current` of this process's cgroup (v2), when it has a limit.
fn cgroup_headroom() -> Option<u64> {
    let read = |name: &str| std::fs::read_to_string(format!("/sys/fs/cgroup/{name}")).ok();
    let max: u64 = read("memory.max")?.trim().parse().ok()?; // "max": no limit
    let current: u64 = read("memory.current")?.trim().parse().ok()?;
    Some(max.saturating_sub(current))
}

fn cuda_free(index: usize) -> Option<u64> {
    let out = std::process::Command::new("nvidia-smi")
        .args([
            "--query-gpu=memory.free",
            "--format=csv,noheader,nounits",
            &format!("--id={index}"),
        ])
        .output()
        .ok()?;
    let mib: u64 = String::from_utf8(out.stdout).ok()?.trim().parse().ok()?;
    Some(mib * 1024 * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;
    use moebench_model::config::{MoeConfig, RouterNorm};

    fn smollm2_like() -> ModelConfig {
        let raw = serde_json::json!({"model_type": "llama", "vocab_size": 49152,
            "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
            "num_attention_heads": 9, "num_key_value_heads": 3, "max_position_embeddings": 8192});
        ModelConfig::from_value(raw, std::path::Path::new("config.json")).unwrap()
    }

    #[test]
    fn per_token_bytes_are_counted_by_hand() {
        let config = smollm2_like();
        // head_dim 64: q/k/v = (9 + 2·3)·64 = 960; attention = 4·576 + 960 + 2·9·2048.
        let attention = 4 * 576 + 960 + 2 * 9 * 2048;
        let mlp = 3 * 1536;
        let logits = 4 * 3 * 49152;
        assert_eq!(
            bytes_per_token(&config, Kind::Float, 2048),
            4 * (attention + mlp) + logits
        );
        // bf16 halves the activations, not the f32 logits.
        assert_eq!(
            bytes_per_token(&config, Kind::BFloat16, 2048),
            2 * (attention + mlp) + logits
        );
        let mut moe = config.clone();
        moe.moe = Some(MoeConfig {
            num_experts: 8,
            top_k: 2,
            expert_intermediate_size: 1536,
            router_norm: RouterNorm::SoftmaxTopkRenorm,
            shared_expert_intermediate_size: None,
            sparse_layers: vec![true; 30],
        });
        let expert_path = 2 * (576 + 3 * 1536 + 2) + 2 * 8;
        assert_eq!(
            bytes_per_token(&moe, Kind::Float, 2048),
            4 * (attention + expert_path) + logits
        );
    }

    #[test]
    fn kv_bytes_are_counted_by_hand() {
        // SmolLM2: 30 layers × keys and values × 3 heads × 64 dims × 4 bytes = 46,080.
        assert_eq!(kv_bytes_per_token(&smollm2_like(), Kind::Float), 46_080);
        assert_eq!(kv_bytes_per_token(&smollm2_like(), Kind::BFloat16), 23_040);
    }

    #[test]
    fn budget_follows_free_memory_within_its_bounds() {
        let config = smollm2_like();
        let per_token = bytes_per_token(&config, Kind::Float, 2048);
        let gib = 1u64 << 30;
        let budget = safe_token_budget(&config, Kind::Float, 2048, 8 * gib, usize::MAX);
        assert_eq!(budget, (8.0 * gib as f64 * 0.5 / per_token as f64) as usize);
        // Little memory: one full row still runs; plenty: the cap holds.
        assert_eq!(
            safe_token_budget(&config, Kind::Float, 2048, gib / 64, 8192),
            2048
        );
        assert_eq!(
            safe_token_budget(&config, Kind::Float, 2048, 1024 * gib, 8192),
            8192
        );
    }

    #[test]
    fn meminfo_available_is_parsed_in_bytes() {
        let text = "MemTotal:       24000000 kB\nMemFree:  100 kB\nMemAvailable:   20000000 kB\n";
        assert_eq!(meminfo_available(text), Some(20_000_000 * 1024));
        assert_eq!(meminfo_available("MemTotal: 1 kB\n"), None);
        assert!(available_memory(Device::Cpu).is_some_and(|b| b > 0));
    }
}
