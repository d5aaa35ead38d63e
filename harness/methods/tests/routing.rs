//! Routing methods that need a model: USMoE's and Expert Choice's causal mode fitted on
//! calibration data (docs/methods.md §4.7.1).
mod common;

use common::token_batch;
use moebench_methods::routing::{fit_causal_thresholds, ExpertChoice, GroupMode, Usmoe};
use moebench_model::config::RouterNorm;
use moebench_model::observer::ActiveExperts;
use moebench_model::{Ffn, ForwardOptions, Model};
use std::collections::BTreeMap;
use std::path::PathBuf;
use tch::{Device, Kind, Tensor};

fn load(name: &str) -> Model {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/tiny")
        .join(name);
    Model::load(&dir, Device::Cpu, Kind::Float).unwrap()
}

/// Two batches below the fixtures' vocabulary (128); the second has 3 padding positions.
fn batches() -> Vec<(Tensor, Tensor)> {
    let (ids, mask) = token_batch(2, 10, 128, 4);
    let _ = mask.get(0).narrow(0, 7, 3).fill_(0);
    vec![token_batch(2, 16, 128, 3), (ids, mask)]
}

/// Active experts per real token of each MoE layer over `batches`.
fn mean_active(model: &Model, batches: &[(Tensor, Tensor)]) -> Vec<f64> {
    let mut active = ActiveExperts::default();
    tch::no_grad(|| {
        for (ids, mask) in batches {
            let mut opts = ForwardOptions {
                observer: Some(&mut active),
                route_override: None,
            };
            let _ = model.forward_hidden(ids, Some(mask), None, &mut opts);
        }
    });
    let mut per_layer: BTreeMap<usize, (i64, i64)> = BTreeMap::new();
    for (l, counts) in &active.per_layer {
        let valid = counts.ge(0);
        let entry = per_layer.entry(*l).or_default();
        entry.0 += i64::try_from(counts.masked_select(&valid).sum(Kind::Int64)).unwrap();
        entry.1 += i64::try_from(valid.sum(Kind::Int64)).unwrap();
    }
    per_layer
        .values()
        .map(|&(sum, n)| sum as f64 / n as f64)
        .collect()
}

/// `mode: causal` without a threshold: every MoE layer gets its own threshold, fitted on the
/// inputs the earlier (already causal) layers produce, so each layer spends exactly the budget
/// on the calibration tokens (real tokens: 32 + 17 = 49, budget round(49·k)).
#[test]
fn fitted_causal_thresholds_spend_the_budget_per_layer() {
    let batches = batches();
    for name in ["mixtral", "qwen2_moe"] {
        let budget = 1.5;
        let mut model = load(name);
        let usmoe = Usmoe::new(
            budget,
            0.5,
            false,
            RouterNorm::SoftmaxTopk,
            GroupMode::FullSequence,
        );
        let fitted = fit_causal_thresholds(&mut model, &batches, &usmoe).unwrap();
        assert_eq!(fitted.len(), 2, "{name}");
        assert_ne!(fitted[0].1, fitted[1].1, "{name}: per-layer thresholds");
        for (l, threshold) in &fitted {
            let Ffn::Moe(moe) = &model.layers[*l].ffn else {
                panic!("MoE layer")
            };
            assert!(moe.selector.is_causal());
            assert!(
                moe.selector
                    .describe()
                    .contains(&format!("causal(thr={threshold:.6})")),
                "{}",
                moe.selector.describe()
            );
        }
        let expected = (49.0f64 * budget).round() / 49.0;
        for mean in mean_active(&model, &batches) {
            assert!(
                (mean - expected).abs() < 1e-12,
                "{name}: {mean} vs {expected}"
            );
        }

        let mut model = load(name);
        let ec = ExpertChoice::new(2.0, GroupMode::FullSequence);
        fit_causal_thresholds(&mut model, &batches, &ec).unwrap();
        for mean in mean_active(&model, &batches) {
            assert!((mean - 2.0).abs() < 1e-12, "{name} EC: {mean}");
        }
    }
    let mut dense = load("llama");
    let usmoe = Usmoe::new(
        1.0,
        0.5,
        false,
        RouterNorm::SoftmaxTopk,
        GroupMode::FullSequence,
    );
    let err = fit_causal_thresholds(&mut dense, &batches, &usmoe)
        .unwrap_err()
        .to_string();
    assert!(err.contains("no MoE layer"), "{err}");
}
