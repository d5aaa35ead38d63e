//! The suite's calibration text as token batches: what routing measures and calibration-based
//! methods (pruning, calibrated DTop-p) run on.
use crate::error::{bail, Context, Result, RunnerError};
use crate::paths::default_calibration_text;
use moebench_model::{Model, Tokenizer};
use moebench_suite::suite::Calibration;
use std::path::Path;
use tch::{Kind, Tensor};

/// Sequences per forward pass of a calibration pass.
const BATCH: usize = 8;

/// Token batches (`ids`, `attention_mask`) `[≤8, length]` and where they came from.
pub struct CalibrationData {
    pub batches: Vec<(Tensor, Tensor)>,
    pub source: String,
}

/// The text of a `.txt` file, or the `text` fields of a `.jsonl` file joined by blank lines.
pub fn read_text(path: &Path) -> Result<String> {
    let raw = std::fs::read_to_string(path).with_context(|| {
        format!(
            "reading calibration text {} (set calibration.source in the suite, or run `make deps` \
             for the default)",
            path.display()
        )
    })?;
    if path.extension().is_some_and(|e| e == "jsonl") {
        let texts = raw
            .lines()
            .filter(|l| !l.trim().is_empty())
            .enumerate()
            .map(|(i, line)| {
                let v: serde_json::Value = serde_json::from_str(line)
                    .with_context(|| format!("{}:{}: not JSON", path.display(), i + 1))?;
                v.get("text")
                    .and_then(|t| t.as_str())
                    .map(str::to_owned)
                    .ok_or_else(|| {
                        RunnerError::invalid(format!(
                            "{}:{}: no string `text` field",
                            path.display(),
                            i + 1
                        ))
                    })
            })
            .collect::<Result<Vec<_>>>()?;
        return Ok(texts.join("\n\n"));
    }
    Ok(raw)
}

/// Seeded choice of `sequences` non-overlapping windows of `length` tokens from the tokenized
/// text; a model without a tokenizer (the tiny fixtures) gets seeded random token ids.
pub fn calibration_data(
    cal: &Calibration,
    model: &Model,
    tokenizer: Option<&Tokenizer>,
) -> Result<CalibrationData> {
    let (need, length) = (cal.sequences, cal.length);
    let (windows, source): (Vec<Vec<i64>>, String) = match tokenizer {
        None => {
            tch::manual_seed(cal.seed as i64);
            let ids = Tensor::randint(
                model.config.vocab_size as i64,
                [(need * length) as i64],
                (Kind::Int64, tch::Device::Cpu),
            );
            let ids = Vec::<i64>::try_from(ids)?;
            (
                ids.chunks(length).map(<[i64]>::to_vec).collect(),
                format!(
                    "random token ids (seed {}): the model has no tokenizer",
                    cal.seed
                ),
            )
        }
        Some(tok) if !cal.mix.is_empty() => {
            let total: f64 = cal.mix.iter().map(|m| m.weight).sum();
            if total.is_nan() || total <= 0.0 {
                bail!("calibration mix: the weights sum to {total}; at least one must be > 0");
            }
            let mut windows = Vec::new();
            let mut parts = Vec::new();
            for (i, part) in cal.mix.iter().enumerate() {
                let count = (need as f64 * part.weight / total).round() as usize;
                if count == 0 {
                    continue;
                }
                let seed = cal.seed.wrapping_add(i as u64);
                windows.extend(windows_of(tok, &part.source, count, length, seed)?);
                parts.push(format!("{}×{}", part.source.display(), part.weight));
            }
            (windows, format!("mix [{}]", parts.join(", ")))
        }
        Some(tok) => {
            let path = cal.source.clone().unwrap_or_else(default_calibration_text);
            let windows = windows_of(tok, &path, need, length, cal.seed)?;
            (windows, path.display().to_string())
        }
    };
    let batches = windows
        .chunks(BATCH)
        .map(|group| {
            let ids = Tensor::from_slice(&group.concat())
                .view([group.len() as i64, length as i64])
                .to_device(model.device);
            let mask = ids.ones_like();
            (ids, mask)
        })
        .collect();
    Ok(CalibrationData { batches, source })
}

/// `count` seeded, non-overlapping windows of `length` tokens from the text at `path`.
fn windows_of(
    tok: &Tokenizer,
    path: &Path,
    count: usize,
    length: usize,
    seed: u64,
) -> Result<Vec<Vec<i64>>> {
    let ids = tok.encode(&read_text(path)?, false)?;
    let available = ids.len() / length;
    if available < count {
        bail!(
            "calibration text {} has {} tokens: fewer than the {count} × {length} it should give; \
             lower calibration.sequences/length or use a longer text",
            path.display(),
            ids.len()
        );
    }
    let mut order: Vec<usize> = (0..available).collect();
    shuffle(&mut order, seed);
    order.truncate(count);
    order.sort_unstable();
    Ok(order
        .iter()
        .map(|&w| ids[w * length..(w + 1) * length].to_vec())
        .collect())
}

/// The suite's calibration with its mix re-weighted by a method's `mix` parameter (one weight
/// per `calibration.mix` source, in order).
pub fn with_mix_weights(cal: &Calibration, weights: &[f64]) -> Result<Calibration> {
    if weights.len() != cal.mix.len() {
        bail!(
            "parameter `mix` has {} weights but the suite's calibration.mix has {} sources",
            weights.len(),
            cal.mix.len()
        );
    }
    let mut cal = cal.clone();
    for (part, &w) in cal.mix.iter_mut().zip(weights) {
        part.weight = w;
    }
    Ok(cal)
}

/// Fisher–Yates with splitmix64: the same windows on every machine for a seed.
fn shuffle(items: &mut [usize], seed: u64) {
    let mut state = seed;
    for i in (1..items.len()).rev() {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        let j = ((z ^ (z >> 31)) % (i as u64 + 1)) as usize;
        items.swap(i, j);
    }
}
