//! Calibration statistics and expert pruning (docs/methods.md §7.6, §8.4, §8.8) on the tiny fixtures.
mod common;

use common::token_batch;
use moebench_methods::calibration::{
    calibrate, calibrate_with, CalibrationOptions, CalibrationStats, LayerStats, ReapGate,
};
use moebench_methods::prune::{prune_layer, prune_model, Criterion, Keep};
use moebench_methods::MethodError;
use moebench_model::moe::MoeLayer;
use moebench_model::observer::ForwardObserver;
use moebench_model::save::save_pretrained;
use moebench_model::{Ffn, Model};
use std::path::PathBuf;
use tch::{Device, Kind, Tensor};

const CRITERIA: [Criterion; 3] = [Criterion::Frequency, Criterion::Ean, Criterion::Reap];

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/tiny")
        .join(name)
}

fn load(name: &str) -> Model {
    Model::load(&fixture(name), Device::Cpu, Kind::Float).unwrap()
}

/// Token ids below the fixtures' vocabulary (128), all real.
fn batch(b: i64, t: i64, seed: u64) -> (Tensor, Tensor) {
    token_batch(b, t, 128, seed)
}

fn logits(model: &Model, (ids, mask): &(Tensor, Tensor)) -> Tensor {
    tch::no_grad(|| model.forward(ids, Some(mask), None))
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    f64::try_from((a - b).abs().max()).unwrap()
}

fn moe_layers(model: &Model) -> Vec<(usize, &MoeLayer)> {
    model
        .layers
        .iter()
        .enumerate()
        .filter_map(|(l, b)| match &b.ffn {
            Ffn::Moe(m) => Some((l, m)),
            Ffn::Dense(_) => None,
        })
        .collect()
}

fn first_moe(model: &Model) -> &MoeLayer {
    moe_layers(model)[0].1
}

fn top_k(model: &Model) -> usize {
    model.config.moe.as_ref().unwrap().top_k
}

fn assert_close(actual: &[f64], expected: &[f64], rel: f64, what: &str) {
    assert_eq!(actual.len(), expected.len(), "{what}: length");
    for (j, (a, e)) in actual.iter().zip(expected).enumerate() {
        assert!(
            (a - e).abs() <= rel * e.abs().max(1.0),
            "{what}[{j}]: {a} vs expected {e}"
        );
    }
}

fn assert_stats_close(actual: &LayerStats, expected: &LayerStats, what: &str) {
    assert_eq!(actual.tokens, expected.tokens, "{what}: tokens");
    assert_eq!(actual.freq, expected.freq, "{what}: freq");
    assert_eq!(
        actual.coactivation, expected.coactivation,
        "{what}: coactivation"
    );
    assert_close(&actual.ean_sum, &expected.ean_sum, 1e-4, what);
    assert_close(&actual.reap_sum, &expected.reap_sum, 1e-4, what);
    assert_close(&actual.prob_sum, &expected.prob_sum, 1e-4, what);
}

fn param_of(err: MethodError) -> String {
    match err {
        MethodError::Param { param, .. } => param,
        other => panic!("expected a parameter error, got {other}"),
    }
}

/// §8.8: Freq/EAN/REAP with keep = N is the identity; a permutation of all experts (router rows
/// and expert weights moved together) is too, which keep-all alone would not catch.
#[test]
fn keep_all_is_the_identity() {
    for name in ["mixtral", "qwen2_moe"] {
        let mut model = load(name);
        let input = batch(2, 8, 0);
        let before = logits(&model, &input);
        let stats = calibrate(&model, std::slice::from_ref(&input)).unwrap();
        let n = first_moe(&model).num_experts();
        for criterion in CRITERIA {
            for keep in [Keep::Count(n as usize), Keep::Ratio(1.0)] {
                let report = prune_model(&mut model, &stats, criterion, keep).unwrap();
                assert_eq!(report.experts_after, n as usize);
                for l in &report.layers {
                    assert_eq!(l.kept, (0..n).collect::<Vec<_>>(), "{name} {criterion:?}");
                }
                let diff = max_abs_diff(&logits(&model, &input), &before);
                assert!(
                    diff <= 1e-6,
                    "{name} {criterion:?} {keep:?}: max|Δ| = {diff}"
                );
            }
        }
        let reversed: Vec<i64> = (0..n).rev().collect();
        for block in &mut model.layers {
            if let Ffn::Moe(moe) = &mut block.ffn {
                prune_layer(moe, &reversed).unwrap();
            }
        }
        let diff = max_abs_diff(&logits(&model, &input), &before);
        assert!(diff <= 1e-5, "{name} permuted experts: max|Δ| = {diff}");
    }
}

/// REAP, EAN and Freq of one layer on a fixed batch, recomputed token by token with the routing
/// done by hand (softmax, top-k, renormalisation in plain Rust) and one `expert_forward` call per
/// routed token. OLMoE does not renormalise its combine weights, so it checks that the default
/// REAP gate renormalises anyway (docs/methods.md §7.6) while `ReapGate::Softmax` does not.
#[test]
fn reap_matches_a_hand_computed_value() {
    for name in ["mixtral", "olmoe"] {
        let model = load(name);
        let moe = first_moe(&model);
        let (n, k) = (moe.num_experts() as usize, top_k(&model));
        let hidden = moe.router.weight.size()[1];
        tch::manual_seed(7);
        let x = Tensor::randn([1, 6, hidden], (Kind::Float, Device::Cpu));

        let mut renorm = CalibrationStats::new(CalibrationOptions::default());
        let mut softmax = CalibrationStats::new(CalibrationOptions {
            include_padding: false,
            reap_gate: ReapGate::Softmax,
        });
        tch::no_grad(|| {
            let _ = moe.forward(0, &x, None, None, Some(&mut |e| renorm.on_moe(0, moe, e)));
            let _ = moe.forward(0, &x, None, None, Some(&mut |e| softmax.on_moe(0, moe, e)));
        });

        let w: Vec<f32> = Vec::try_from(moe.router.weight.flatten(0, -1)).unwrap();
        let (mut freq, mut ean) = (vec![0.0f64; n], vec![0.0f64; n]);
        let (mut reap_renorm, mut reap_softmax) = (vec![0.0f64; n], vec![0.0f64; n]);
        tch::no_grad(|| {
            for t in 0..6 {
                let xt = x.get(0).get(t);
                let xv: Vec<f32> = Vec::try_from(&xt).unwrap();
                let logits: Vec<f64> = (0..n)
                    .map(|j| {
                        let row = &w[j * xv.len()..(j + 1) * xv.len()];
                        row.iter().zip(&xv).map(|(a, b)| (a * b) as f64).sum()
                    })
                    .collect();
                let max = logits.iter().cloned().fold(f64::MIN, f64::max);
                let z: f64 = logits.iter().map(|l| (l - max).exp()).sum();
                let probs: Vec<f64> = logits.iter().map(|l| (l - max).exp() / z).collect();
                let mut order: Vec<usize> = (0..n).collect();
                order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
                let top = &order[..k];
                let top_mass: f64 = top.iter().map(|&j| probs[j]).sum();
                for &j in top {
                    let out = moe.expert_forward(j as i64, &xt.view([1, hidden]));
                    let out: Vec<f32> = Vec::try_from(out.flatten(0, -1)).unwrap();
                    let norm = out.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt();
                    freq[j] += 1.0;
                    ean[j] += norm;
                    reap_renorm[j] += probs[j] / top_mass * norm;
                    reap_softmax[j] += probs[j] * norm;
                }
            }
        });
        let mean = |sums: &[f64]| -> Vec<f64> {
            sums.iter()
                .zip(&freq)
                .map(|(s, c)| if *c > 0.0 { s / c } else { 0.0 })
                .collect()
        };
        let (sr, ss) = (renorm.layer(0).unwrap(), softmax.layer(0).unwrap());
        assert_eq!(sr.freq, freq, "{name}: freq");
        assert_eq!(sr.tokens, 6.0);
        assert_close(&sr.ean_sum, &ean, 1e-5, &format!("{name} ean"));
        assert_close(&sr.reap_mean(), &mean(&reap_renorm), 1e-5, name);
        assert_close(&ss.reap_mean(), &mean(&reap_softmax), 1e-5, name);
        for (c, s) in [Criterion::Reap, Criterion::Ean, Criterion::Frequency]
            .into_iter()
            .zip([mean(&reap_renorm), ean.clone(), freq.clone()])
        {
            assert_close(&c.saliency(&renorm, 0).unwrap(), &s, 1e-5, name);
        }
    }
}

/// Every token goes to exactly k experts under top-k routing: Σ freq = T·k, the co-activation
/// diagonal is freq and its rows sum to k·freq; router probabilities sum to T. Dense layers
/// (qwen2_moe layer 0) have no statistics.
#[test]
fn freq_counts_sum_to_tokens_times_k() {
    for name in ["mixtral", "olmoe", "qwen3_moe", "qwen2_moe"] {
        let model = load(name);
        let stats = calibrate(&model, &[batch(2, 8, 1), batch(1, 5, 2)]).unwrap();
        let k = top_k(&model) as f64;
        let moe: Vec<usize> = moe_layers(&model).into_iter().map(|(l, _)| l).collect();
        assert_eq!(stats.layers.keys().cloned().collect::<Vec<_>>(), moe);
        for (l, s) in &stats.layers {
            let n = s.num_experts();
            assert_eq!(s.tokens, 21.0);
            assert_eq!(s.freq.iter().sum::<f64>(), 21.0 * k, "{name} layer {l}");
            for i in 0..n {
                let row = &s.coactivation[i * n..(i + 1) * n];
                assert_eq!(row[i], s.freq[i]);
                assert_eq!(row.iter().sum::<f64>(), k * s.freq[i]);
            }
            assert!((s.prob_sum.iter().sum::<f64>() - 21.0).abs() < 1e-4);
        }
    }
}

/// A batch with right and left padding gives the statistics of its unpadded rows run alone;
/// `include_padding` (official-code parity) counts the pads.
#[test]
fn padding_tokens_are_excluded() {
    let model = load("mixtral");
    let (ids, _) = batch(3, 8, 3);
    let lens_and_offsets = [(8, 0), (5, 0), (6, 2)];
    let mask = Tensor::zeros([3, 8], (Kind::Int64, Device::Cpu));
    let mut alone = Vec::new();
    for (row, &(len, off)) in lens_and_offsets.iter().enumerate() {
        let _ = mask.get(row as i64).narrow(0, off, len).fill_(1);
        let real = ids.get(row as i64).narrow(0, off, len).unsqueeze(0);
        let real_mask = real.ones_like();
        alone.push((real, real_mask));
    }
    let padded = calibrate(&model, &[(ids.shallow_clone(), mask.shallow_clone())]).unwrap();
    let unpadded = calibrate(&model, &alone).unwrap();
    for (l, s) in &unpadded.layers {
        assert_eq!(s.tokens, 19.0);
        assert_stats_close(&padded.layers[l], s, &format!("layer {l}"));
    }
    let with_pads = calibrate_with(
        &model,
        &[(ids, mask)],
        CalibrationOptions {
            include_padding: true,
            reap_gate: ReapGate::Renormalised,
        },
    )
    .unwrap();
    for s in with_pads.layers.values() {
        assert_eq!(s.tokens, 24.0);
        assert_eq!(s.freq.iter().sum::<f64>(), 24.0 * top_k(&model) as f64);
    }
}

/// Pruning to N/2 keeps the most salient experts, and the saved checkpoint reloads with N/2
/// experts in its config and the same logits as the pruned model in memory.
#[test]
fn prune_to_half_saves_and_reloads() {
    let input = batch(2, 8, 4);
    for name in ["mixtral", "qwen2_moe"] {
        let original = load(name);
        let before = logits(&original, &input);
        let stats = calibrate(&original, &[batch(4, 16, 5)]).unwrap();
        let n = first_moe(&original).num_experts() as usize;
        for criterion in CRITERIA {
            let mut model = load(name);
            let report = prune_model(&mut model, &stats, criterion, Keep::Ratio(0.5)).unwrap();
            assert_eq!((report.experts_before, report.experts_after), (n, n / 2));
            assert_eq!(model.config.moe.as_ref().unwrap().num_experts, n / 2);
            for l in &report.layers {
                assert_eq!(l.kept.len(), n / 2);
                assert!(l.kept.windows(2).all(|w| w[0] < w[1]), "original order");
                let kept_min = l
                    .kept
                    .iter()
                    .map(|&e| l.saliency[e as usize])
                    .fold(f64::INFINITY, f64::min);
                let dropped_max = (0..n as i64)
                    .filter(|e| !l.kept.contains(e))
                    .map(|e| l.saliency[e as usize])
                    .fold(f64::NEG_INFINITY, f64::max);
                assert!(
                    kept_min >= dropped_max,
                    "{name} {criterion:?} layer {}",
                    l.layer
                );
            }
            let pruned = logits(&model, &input);
            assert!(
                max_abs_diff(&pruned, &before) > 1e-4,
                "pruning changed nothing"
            );

            let dir = tempfile::tempdir().unwrap();
            let out = dir.path().join("pruned");
            save_pretrained(&model, None, &out).unwrap();
            let reloaded = Model::load(&out, Device::Cpu, Kind::Float).unwrap();
            assert_eq!(reloaded.config.moe.as_ref().unwrap().num_experts, n / 2);
            for (_, moe) in moe_layers(&reloaded) {
                assert_eq!(moe.num_experts() as usize, n / 2);
            }
            let diff = max_abs_diff(&logits(&reloaded, &input), &pruned);
            assert!(
                diff <= 1e-6,
                "{name} {criterion:?}: reloaded max|Δ| = {diff}"
            );
        }
    }
}

#[test]
fn bad_parameters_are_param_errors() {
    let mut model = load("mixtral");
    let stats = calibrate(&model, &[batch(1, 8, 6)]).unwrap();
    // N = 4, top_k = 2.
    for r in [0.0, -0.5, 1.5, f64::NAN, 0.25] {
        let err = prune_model(&mut model, &stats, Criterion::Reap, Keep::Ratio(r)).unwrap_err();
        assert!(err.to_string().contains("must be in"), "{err}");
        assert_eq!(param_of(err), "keep_ratio");
    }
    for c in [0, 1, 5] {
        let err = prune_model(&mut model, &stats, Criterion::Ean, Keep::Count(c)).unwrap_err();
        assert!(err.to_string().contains("2..=4"), "{err}");
        assert_eq!(param_of(err), "keep");
    }
    assert_eq!(
        first_moe(&model).num_experts(),
        4,
        "errors leave the model as it was"
    );
    assert_eq!(model.config.moe.as_ref().unwrap().num_experts, 4);

    let Ffn::Moe(moe) = &mut model.layers[0].ffn else {
        panic!("mixtral layer 0 is MoE")
    };
    for keep in [&[0, 0][..], &[4], &[-1, 2], &[]] {
        assert_eq!(param_of(prune_layer(moe, keep).unwrap_err()), "keep");
    }

    let other = calibrate(&load("qwen2_moe"), &[batch(1, 4, 7)]).unwrap();
    let err = prune_model(&mut model, &other, Criterion::Reap, Keep::Count(2)).unwrap_err();
    assert!(matches!(err, MethodError::Unsupported { .. }), "{err}");

    let mut dense = load("llama");
    assert!(matches!(
        calibrate(&dense, &[batch(1, 4, 8)]).unwrap_err(),
        MethodError::Unsupported { .. }
    ));
    let err = prune_model(&mut dense, &stats, Criterion::Reap, Keep::Count(2)).unwrap_err();
    assert!(matches!(err, MethodError::Unsupported { .. }), "{err}");
    let (ids, _) = batch(1, 4, 9);
    let err = calibrate(
        &load("mixtral"),
        &[(ids, Tensor::ones([1, 5], (Kind::Int64, Device::Cpu)))],
    )
    .unwrap_err();
    assert_eq!(param_of(err), "batches");
}
