//! Expert merging (REAM, M-SMoE, HC-SMoE) on the tiny fixtures: the invariants of docs/methods.md
//! §8.8 plus save/reload and parameter errors.
mod common;

use common::token_batch;
use moebench_methods::calibration::{calibrate, BlockStream};
use moebench_methods::merge::{
    collect_block_merge_stats, collect_merge_stats, hc_smoe, linear_assignment, m_smoe,
    merge_group, neuron_weight_vectors, pca_neuron_features, permute_neurons, ream, Alignment,
    HcSmoeConfig, MSmoeConfig, MergeReport, MergeSettings, MergeStats, MergeStatsOptions,
    NeuronFeatures, PcaSolver, ReamConfig, RouterPolicy, SimilarityForm,
};
use moebench_methods::prune::{prune_layer, top_experts, Keep};
use moebench_methods::MethodError;
use moebench_model::moe::MoeLayer;
use moebench_model::observer::ForwardObserver;
use moebench_model::save::save_pretrained;
use moebench_model::{Ffn, Model};
use std::path::PathBuf;
use tch::{Device, Kind, Tensor};

fn load(name: &str) -> Model {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/tiny")
        .join(name);
    Model::load(&dir, Device::Cpu, Kind::Float).unwrap()
}

/// Token ids below the fixtures' vocabulary (128), all real.
fn batch(b: i64, t: i64, seed: u64) -> (Tensor, Tensor) {
    token_batch(b, t, 128, seed)
}

fn calibration() -> Vec<(Tensor, Tensor)> {
    vec![batch(2, 16, 10), batch(2, 12, 11)]
}

fn logits(model: &Model, (ids, mask): &(Tensor, Tensor)) -> Tensor {
    tch::no_grad(|| model.forward(ids, Some(mask), None))
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    f64::try_from((a - b).abs().max()).unwrap()
}

fn moe_layers_mut(model: &mut Model) -> Vec<&mut MoeLayer> {
    model
        .layers
        .iter_mut()
        .filter_map(|b| match &mut b.ffn {
            Ffn::Moe(m) => Some(m),
            Ffn::Dense(_) => None,
        })
        .collect()
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

fn expert_diff(a: &MoeLayer, ea: i64, b: &MoeLayer, eb: i64) -> f64 {
    [
        (&a.w_gate, &b.w_gate),
        (&a.w_up, &b.w_up),
        (&a.w_down, &b.w_down),
    ]
    .iter()
    .map(|(x, y)| max_abs_diff(&x.get(ea), &y.get(eb)))
    .fold(0.0, f64::max)
}

fn layers_equal(a: &MoeLayer, b: &MoeLayer) -> bool {
    a.w_gate.equal(&b.w_gate)
        && a.w_up.equal(&b.w_up)
        && a.w_down.equal(&b.w_down)
        && a.router.weight.equal(&b.router.weight)
}

fn param_of(err: MethodError) -> String {
    match err {
        MethodError::Param { param, .. } => param,
        other => panic!("expected a parameter error, got {other}"),
    }
}

/// Small samples and PCA so the tiny fixtures (H = 32, F = 64) exercise every cost term.
fn settings(alignment: Alignment, keep: Keep) -> MergeSettings {
    MergeSettings {
        keep,
        samples: 48,
        pca_dim: 16,
        ..MergeSettings::new(alignment)
    }
}

fn ream_cfg(keep: Keep) -> ReamConfig {
    ReamConfig {
        merge: settings(Alignment::ActivationsAndWeights, keep),
        ..ReamConfig::default()
    }
}

type Method = fn(&mut Model, &[(Tensor, Tensor)], Keep, RouterPolicy) -> MergeReport;

fn methods() -> [(&'static str, Method); 3] {
    [
        ("ream", |m, b, keep, router| {
            let mut cfg = ream_cfg(keep);
            cfg.merge.router = router;
            ream(m, b, &cfg).unwrap()
        }),
        ("m-smoe", |m, b, keep, router| {
            let mut merge = settings(Alignment::WeightMatching, keep);
            merge.router = router;
            m_smoe(m, b, &MSmoeConfig { merge }).unwrap()
        }),
        ("hc-smoe", |m, b, keep, router| {
            let mut merge = settings(Alignment::Activations, keep);
            merge.router = router;
            hc_smoe(m, b, &HcSmoeConfig { merge }).unwrap()
        }),
    ]
}

/// Deterministic pseudo-random numbers for cost matrices.
fn lcg(state: &mut u64) -> f32 {
    *state = state
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    ((*state >> 40) as f32) / (1u64 << 24) as f32
}

fn permutations(n: usize) -> Vec<Vec<usize>> {
    if n == 0 {
        return vec![vec![]];
    }
    let mut out = Vec::new();
    for p in permutations(n - 1) {
        for i in 0..=p.len() {
            let mut q = p.clone();
            q.insert(i, n - 1);
            out.push(q);
        }
    }
    out
}

#[test]
fn linear_assignment_matches_brute_force() {
    let mut state = 7u64;
    for n in [1usize, 2, 3, 6] {
        let perms = permutations(n);
        for _ in 0..25 {
            // Integer-valued costs make ties likely, which the solver must handle too.
            let cost: Vec<f32> = (0..n * n)
                .map(|_| {
                    let x = lcg(&mut state) * 10.0;
                    if n == 6 && x > 5.0 {
                        x.floor()
                    } else {
                        x - 3.0
                    }
                })
                .collect();
            let total = |a: &[usize]| -> f64 {
                a.iter()
                    .enumerate()
                    .map(|(i, &j)| f64::from(cost[i * n + j]))
                    .sum()
            };
            let best = perms.iter().map(|p| total(p)).fold(f64::INFINITY, f64::min);
            let got = linear_assignment(&cost);
            let mut sorted = got.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, (0..n).collect::<Vec<_>>(), "a permutation");
            assert!(
                (total(&got) - best).abs() < 1e-9,
                "n={n}: {} vs {best}",
                total(&got)
            );
        }
    }
    assert!(linear_assignment(&[]).is_empty());
}

/// §8.8: expert 1 := expert 0 with its neurons permuted. Every alignment recovers the inverse
/// permutation, and merging the aligned pair returns expert 0 (an unaligned average does not).
#[test]
fn alignment_undoes_a_neuron_permutation() {
    let mut model = load("mixtral");
    let moe = &mut *moe_layers_mut(&mut model).remove(0);
    let f = moe.expert_intermediate_size();
    moe.w_gate =
        moe.w_gate
            .index_copy(0, &Tensor::from_slice(&[1i64]), &moe.w_gate.narrow(0, 0, 1));
    moe.w_up = moe
        .w_up
        .index_copy(0, &Tensor::from_slice(&[1i64]), &moe.w_up.narrow(0, 0, 1));
    moe.w_down =
        moe.w_down
            .index_copy(0, &Tensor::from_slice(&[1i64]), &moe.w_down.narrow(0, 0, 1));
    let original = moe.w_gate.copy();
    let perm: Vec<i64> = (0..f).map(|p| (p * 37 + 11) % f).collect();
    permute_neurons(moe, 1, &perm).unwrap();
    for p in 0..f {
        let moved = moe.w_gate.get(1).get(p);
        assert!(moved.equal(&original.get(0).get(perm[p as usize])));
    }
    let mut inverse = vec![0i64; f as usize];
    for (p, &q) in perm.iter().enumerate() {
        inverse[q as usize] = p as i64;
    }

    let hidden = moe.router.weight.size()[1];
    tch::manual_seed(3);
    let x = Tensor::randn([2, 40, hidden], (Kind::Float, Device::Cpu));
    let options = MergeStatsOptions {
        calibration: Default::default(),
        expert_outputs: false,
        output_cosines: false,
        samples: 64,
        seed: 1,
    };
    let mut stats = MergeStats::new(options, None);
    let _ = tch::no_grad(|| moe.forward(0, &x, None, None, Some(&mut |e| stats.on_moe(0, moe, e))));
    let samples = stats.layers[&0].activation_samples().unwrap();
    assert_eq!(samples.size(), [4, 64, f]);

    for alignment in [
        Alignment::WeightMatching,
        Alignment::Activations,
        Alignment::Weights,
        Alignment::ActivationsAndWeights,
    ] {
        let features =
            NeuronFeatures::new(moe, alignment, Some(&samples), (16, PcaSolver::Exact, 0)).unwrap();
        let found = features.align(0, 1);
        assert_eq!(found, inverse, "{alignment:?}");
        let merged = merge_group(moe, &[0, 1], &[0.5, 0.5], &[None, Some(found)]).unwrap();
        for (m, w) in [
            (&merged.gate, &moe.w_gate),
            (&merged.up, &moe.w_up),
            (&merged.down, &moe.w_down),
        ] {
            let d = max_abs_diff(m, &w.get(0));
            assert!(d <= 1e-5, "{alignment:?}: max|Δ| = {d}");
        }
    }
    let plain = merge_group(moe, &[0, 1], &[0.5, 0.5], &[None, None]).unwrap();
    assert!(max_abs_diff(&plain.gate, &moe.w_gate.get(0)) > 1e-3);
}

/// §8.8: weights (1, 0) return the centroid exactly, whatever the other member and its
/// permutation; weights are normalised, so (3, 1) equals (0.75, 0.25).
#[test]
fn merge_with_weights_one_zero_is_the_centroid() {
    let model = load("qwen3_moe");
    let (_, moe) = moe_layers(&model)[0];
    let f = moe.expert_intermediate_size();
    let rev: Vec<i64> = (0..f).rev().collect();
    let merged = merge_group(moe, &[2, 0, 3], &[1.0, 0.0, 0.0], &[None, Some(rev), None]).unwrap();
    assert!(merged.gate.equal(&moe.w_gate.get(2)));
    assert!(merged.up.equal(&moe.w_up.get(2)));
    assert!(merged.down.equal(&moe.w_down.get(2)));
    let a = merge_group(moe, &[1, 3], &[3.0, 1.0], &[None, None]).unwrap();
    let b = merge_group(moe, &[1, 3], &[0.75, 0.25], &[None, None]).unwrap();
    assert!(a.down.equal(&b.down));
    let expected = moe.w_down.get(1) * 0.75 + moe.w_down.get(3) * 0.25;
    assert!(max_abs_diff(&a.down, &expected) <= 1e-6);
}

/// §8.8: REAM with `merging=none` equals pruning every layer to its centroids, and the
/// centroids are the most salient experts (layer 0 of the whole-model pass: the REAP means of
/// `calibrate`).
#[test]
fn ream_without_merging_is_centroid_pruning() {
    let batches = calibration();
    let input = batch(2, 8, 1);
    for sequential in [true, false] {
        let mut merged = load("mixtral");
        let stats = calibrate(&merged, &batches).unwrap();
        let cfg = ReamConfig {
            prune_only: true,
            sequential,
            ..ream_cfg(Keep::Count(2))
        };
        let report = ream(&mut merged, &batches, &cfg).unwrap();
        let reap = stats.layer(0).unwrap().reap_mean();
        let first = &report.layers[0];
        for (s, r) in first.scores.iter().zip(&reap) {
            assert!(
                *r == 0.0 || (s - r).abs() <= 1e-9 * r.abs().max(1.0),
                "{s} vs {r}"
            );
        }
        let mut pruned = load("mixtral");
        for (moe, layer) in moe_layers_mut(&mut pruned).into_iter().zip(&report.layers) {
            let mut centroids: Vec<i64> = layer.groups.iter().map(|g| g.members[0]).collect();
            let mut covered: Vec<i64> = layer
                .groups
                .iter()
                .flat_map(|g| g.members.clone())
                .collect();
            covered.sort_unstable();
            assert_eq!(covered, vec![0, 1, 2, 3], "every expert is in one group");
            centroids.sort_unstable();
            assert_eq!(centroids, top_experts(&layer.scores, 2));
            prune_layer(moe, &centroids).unwrap();
        }
        for ((_, a), (_, b)) in moe_layers(&merged).into_iter().zip(moe_layers(&pruned)) {
            assert!(layers_equal(a, b), "sequential={sequential}");
        }
        assert!(logits(&merged, &input).equal(&logits(&pruned, &input)));
    }
}

/// §8.8: the first MoE layer sees the original model either way, so sequential and
/// whole-model REAM produce the same first layer (bit for bit) and the same plan for it.
#[test]
fn sequential_and_whole_model_ream_agree_on_the_first_moe_layer() {
    let batches = calibration();
    for name in ["qwen2_moe", "olmoe"] {
        let run = |sequential: bool| {
            let mut model = load(name);
            let cfg = ReamConfig {
                sequential,
                ..ream_cfg(Keep::Count(2))
            };
            let report = ream(&mut model, &batches, &cfg).unwrap();
            (model, report)
        };
        let (seq, seq_report) = run(true);
        let (whole, whole_report) = run(false);
        assert_eq!(seq_report.layers[0], whole_report.layers[0], "{name}");
        assert!(
            layers_equal(moe_layers(&seq)[0].1, moe_layers(&whole)[0].1),
            "{name}"
        );
        // Later layers are calibrated on different inputs, so their saliencies differ.
        assert_ne!(
            seq_report.layers[1].scores, whole_report.layers[1].scores,
            "{name}"
        );
    }
}

/// §8.8: keep = N is the identity for every method and both router policies.
#[test]
fn keep_all_is_the_identity() {
    let batches = calibration();
    let input = batch(2, 8, 2);
    for name in ["mixtral", "qwen2_moe"] {
        let before = logits(&load(name), &input);
        for (method, merge) in methods() {
            for router in [RouterPolicy::KeepCentroidRow, RouterPolicy::SumGroupProbs] {
                let mut model = load(name);
                let report = merge(&mut model, &batches, Keep::Count(4), router);
                assert_eq!(report.experts_after, 4);
                for l in &report.layers {
                    assert_eq!(l.groups.len(), 4);
                    assert!(l.groups.iter().all(|g| g.members.len() == 1));
                }
                let diff = max_abs_diff(&logits(&model, &input), &before);
                assert!(diff <= 1e-6, "{name} {method} {router:?}: max|Δ| = {diff}");
            }
        }
    }
}

/// Merging to N/2 changes the model, keeps the centroid's router row, and the saved
/// checkpoint reloads with N/2 experts and the same logits.
#[test]
fn merge_to_half_saves_and_reloads() {
    let batches = calibration();
    let input = batch(2, 8, 3);
    for name in ["mixtral", "qwen2_moe"] {
        let original = load(name);
        let before = logits(&original, &input);
        for (method, merge) in methods() {
            let mut model = load(name);
            let report = merge(
                &mut model,
                &batches,
                Keep::Ratio(0.5),
                RouterPolicy::KeepCentroidRow,
            );
            assert_eq!((report.experts_before, report.experts_after), (4, 2));
            assert_eq!(model.config.moe.as_ref().unwrap().num_experts, 2);
            for ((l, moe), plan) in moe_layers(&model).into_iter().zip(&report.layers) {
                assert_eq!(l, plan.layer);
                assert_eq!(moe.num_experts(), 2);
                let orig = moe_layers(&original)
                    .into_iter()
                    .find(|(k, _)| *k == l)
                    .unwrap()
                    .1;
                let mut groups = plan.groups.clone();
                groups.sort_by_key(|g| g.members[0]);
                for (slot, g) in groups.iter().enumerate() {
                    assert!((g.weights.iter().sum::<f64>() - 1.0).abs() < 1e-12);
                    let row = orig.router.weight.get(g.members[0]);
                    assert!(
                        moe.router.weight.get(slot as i64).equal(&row),
                        "{method}: centroid row"
                    );
                }
            }
            let merged = logits(&model, &input);
            assert!(
                max_abs_diff(&merged, &before) > 1e-4,
                "{name} {method} changed nothing"
            );

            let dir = tempfile::tempdir().unwrap();
            let out = dir.path().join("merged");
            save_pretrained(&model, None, &out).unwrap();
            let reloaded = Model::load(&out, Device::Cpu, Kind::Float).unwrap();
            assert_eq!(reloaded.config.moe.as_ref().unwrap().num_experts, 2);
            for (_, moe) in moe_layers(&reloaded) {
                assert_eq!(moe.num_experts(), 2);
            }
            let diff = max_abs_diff(&logits(&reloaded, &input), &merged);
            assert!(diff <= 1e-6, "{name} {method}: reloaded max|Δ| = {diff}");
        }
    }
}

/// Classic merging keeps all router rows and N slots; members of a group share the merged
/// expert, so their summed gate weight reaches it.
#[test]
fn sum_group_probs_shares_the_merged_expert() {
    let batches = calibration();
    let original = load("olmoe");
    for (method, merge) in methods() {
        let mut model = load("olmoe");
        let report = merge(
            &mut model,
            &batches,
            Keep::Count(2),
            RouterPolicy::SumGroupProbs,
        );
        assert_eq!(model.config.moe.as_ref().unwrap().num_experts, 4);
        for ((_, moe), ((_, orig), plan)) in moe_layers(&model)
            .into_iter()
            .zip(moe_layers(&original).into_iter().zip(&report.layers))
        {
            assert_eq!(moe.num_experts(), 4);
            assert!(moe.router.weight.equal(&orig.router.weight), "{method}");
            for g in &plan.groups {
                for &e in &g.members[1..] {
                    assert_eq!(expert_diff(moe, g.members[0], moe, e), 0.0, "{method}");
                }
            }
        }
    }
}

fn assert_same_stats(a: &MergeStats, b: &MergeStats, layer: usize, what: &str) {
    let ((ca, ma), (cb, mb)) = (a.layer(layer).unwrap(), b.layer(layer).unwrap());
    assert_eq!(ca, cb, "{what}: calibration statistics of layer {layer}");
    assert_eq!(ma.tokens, mb.tokens, "{what}");
    for (x, y, name) in [
        (&ma.logit_gram, &mb.logit_gram, "logit_gram"),
        (&ma.prob_gram, &mb.prob_gram, "prob_gram"),
        (&ma.output_sum, &mb.output_sum, "output_sum"),
        (
            &ma.gated_output_sum,
            &mb.gated_output_sum,
            "gated_output_sum",
        ),
        (&ma.reap_code_sum, &mb.reap_code_sum, "reap_code_sum"),
        (
            &ma.gated_cosine_sum,
            &mb.gated_cosine_sum,
            "gated_cosine_sum",
        ),
    ] {
        assert_eq!(x, y, "{what}: {name} of layer {layer}");
    }
    assert!(ma
        .activation_samples()
        .unwrap()
        .equal(&mb.activation_samples().unwrap()));
}

/// REAM's sequential pass reads each layer's statistics off one block run from cached inputs
/// (#14): they equal, bit for bit, those of a whole-model pass on the same model — for every
/// MoE layer of an original and of a merged model, with padding in the batches. Merging is a
/// deterministic function of the model and these statistics, so sequential REAM merges
/// exactly as the whole-model-per-layer implementation did.
#[test]
fn block_statistics_equal_whole_model_statistics() {
    let options = MergeStatsOptions {
        calibration: Default::default(),
        expert_outputs: true,
        output_cosines: true,
        samples: 20,
        seed: 5,
    };
    let (ids, mask) = batch(2, 10, 3);
    let _ = mask.get(1).narrow(0, 7, 3).fill_(0);
    let batches = vec![batch(2, 16, 10), (ids, mask)];
    for name in ["qwen2_moe", "olmoe", "mixtral"] {
        let mut model = load(name);
        for state in ["original", "merged"] {
            let mut stream = BlockStream::new(&model, &batches, "test").unwrap();
            for (l, _) in moe_layers(&model) {
                stream.advance_to(&model, l);
                let block = collect_block_merge_stats(&model, &stream, options).unwrap();
                let whole = collect_merge_stats(&model, &batches, options, Some(l)).unwrap();
                assert_same_stats(&block, &whole, l, &format!("{name} {state}"));
            }
            ream(&mut model, &batches, &ream_cfg(Keep::Count(2))).unwrap();
        }
    }
}

/// The reservoir is bounded by `samples` and reproducible with its seed.
#[test]
fn activation_reservoir_is_bounded_and_seeded() {
    let model = load("mixtral");
    let options = MergeStatsOptions {
        calibration: Default::default(),
        expert_outputs: true,
        output_cosines: true,
        samples: 20,
        seed: 5,
    };
    let batches = calibration();
    let a = collect_merge_stats(&model, &batches, options, None).unwrap();
    let b = collect_merge_stats(&model, &batches, options, Some(1)).unwrap();
    assert_eq!(a.layers.keys().cloned().collect::<Vec<_>>(), vec![0, 1]);
    assert_eq!(b.layers.keys().cloned().collect::<Vec<_>>(), vec![1]);
    let (sa, sb) = (
        a.layers[&1].activation_samples().unwrap(),
        b.layers[&1].activation_samples().unwrap(),
    );
    assert_eq!(sa.size(), [4, 20, 64]);
    assert!(sa.equal(&sb));
    assert_eq!(a.layers[&1].tokens, 56.0);
    let few = collect_merge_stats(&model, &[batch(1, 5, 0)], options, None).unwrap();
    assert_eq!(
        few.layers[&0].activation_samples().unwrap().size(),
        [4, 5, 64]
    );
}

#[test]
fn bad_parameters_are_param_errors() {
    let batches = calibration();
    let mut model = load("mixtral");
    let err = |r: Result<MergeReport, MethodError>| -> (String, String) {
        let e = r.unwrap_err();
        let text = e.to_string();
        (param_of(e), text)
    };
    for c in [0usize, 1, 5] {
        let (p, text) = err(ream(&mut model, &batches, &ream_cfg(Keep::Count(c))));
        assert_eq!(p, "keep");
        assert!(
            text.starts_with("ream:") && text.contains("2..=4"),
            "{text}"
        );
    }
    let (p, text) = err(m_smoe(
        &mut model,
        &batches,
        &MSmoeConfig {
            merge: settings(Alignment::WeightMatching, Keep::Ratio(1.5)),
        },
    ));
    assert_eq!(p, "keep_ratio");
    assert!(
        text.starts_with("m-smoe:") && text.contains("must be in"),
        "{text}"
    );
    let cfg = ReamConfig {
        group_size: 1,
        ..ream_cfg(Keep::Count(2))
    };
    let (p, text) = err(ream(&mut model, &batches, &cfg));
    assert_eq!(p, "group_size");
    assert!(text.contains("at least ⌈N/N'⌉ = 2"), "{text}");
    let mut zero = ream_cfg(Keep::Count(2));
    zero.merge.samples = 0;
    assert_eq!(err(ream(&mut model, &batches, &zero)).0, "samples");
    let mut zero = HcSmoeConfig::default();
    zero.merge.alignment = Alignment::Weights;
    zero.merge.pca_dim = 0;
    assert_eq!(err(hc_smoe(&mut model, &batches, &zero)).0, "pca_dim");
    assert_eq!(
        err(ream(&mut model, &[], &ream_cfg(Keep::Count(2)))).0,
        "batches"
    );
    assert_eq!(
        moe_layers(&model)[0].1.num_experts(),
        4,
        "errors leave the model as it was"
    );

    let moe = &mut *moe_layers_mut(&mut model).remove(0);
    assert_eq!(
        param_of(permute_neurons(moe, 4, &[0]).unwrap_err()),
        "expert"
    );
    assert_eq!(
        param_of(permute_neurons(moe, 0, &[0, 0]).unwrap_err()),
        "perm"
    );
    assert_eq!(
        param_of(merge_group(moe, &[0, 0], &[1.0, 1.0], &[None, None]).unwrap_err()),
        "group"
    );
    assert_eq!(
        param_of(merge_group(moe, &[0, 1], &[0.0, 0.0], &[None, None]).unwrap_err()),
        "weights"
    );
    assert_eq!(
        param_of(merge_group(moe, &[0, 1], &[1.0, -1.0], &[None, None]).unwrap_err()),
        "weights"
    );
    assert_eq!(
        param_of(
            NeuronFeatures::new(moe, Alignment::Activations, None, (8, PcaSolver::Exact, 0))
                .unwrap_err()
        ),
        "samples"
    );

    let mut dense = load("llama");
    assert!(matches!(
        ream(&mut dense, &batches, &ReamConfig::default()).unwrap_err(),
        MethodError::Unsupported { .. }
    ));
}

/// The paper's similarity form (§6.7 item 2): per-token cosines averaged over tokens. Identical
/// experts have token-mean cosine 1 under both forms; on a real layer the two forms give valid
/// groupings of the same shape, and REAM runs end to end with either.
#[test]
fn paper_similarity_form_runs_and_has_unit_self_similarity() {
    let batches = calibration();
    let options = MergeStatsOptions {
        calibration: Default::default(),
        expert_outputs: true,
        output_cosines: true,
        samples: 0,
        seed: 0,
    };
    let model = load("mixtral");
    let stats = collect_merge_stats(&model, &batches, options, Some(0)).unwrap();
    let (_, ms) = stats.layer(0).unwrap();
    for e in 0..4 {
        let diag = ms.gated_cosine_sum[e * 4 + e] / ms.tokens;
        assert!((diag - 1.0).abs() < 1e-9, "expert {e}: {diag}");
    }
    for form in [SimilarityForm::Code, SimilarityForm::Paper] {
        let mut model = load("mixtral");
        let cfg = ReamConfig {
            similarity: form,
            ..ream_cfg(Keep::Count(2))
        };
        let report = ream(&mut model, &batches, &cfg).unwrap();
        assert_eq!(report.experts_after, 2, "{form:?}");
        let members: usize = report.layers[0]
            .groups
            .iter()
            .map(|g| g.members.len())
            .sum();
        assert_eq!(members, 4, "{form:?}");
    }
}

/// The exact PCA takes its axes from `linalg_eigh` of the Gram instead of the SVD it replaced
/// (#14): the scores equal the SVD path's up to each component's sign and rounding, so every
/// distance — and so every alignment — is the same. The randomized solver (the REAM code's:
/// q = r, 2 power iterations) is approximate: on this random layer, whose spectrum is flat (its
/// worst case), it captures 93 % of the exact scores' variance.
#[test]
fn pca_features_match_the_svd_path_and_randomized_is_close() {
    let model = load("mixtral");
    let moe = moe_layers(&model)[0].1;
    let r = 16;
    let w = neuron_weight_vectors(moe);
    let w = &w / w.norm_scalaropt_dim(2.0, [-1i64], true);
    let (n, f, d) = (w.size()[0], w.size()[1], w.size()[2]);
    let x = w.to_kind(Kind::Double).reshape([n * f, d]);
    let xc = &x - x.mean_dim(0, true, Kind::Double);
    let (axes, _, _) = xc.tr().mm(&xc).svd(true, true);
    let reference = xc.mm(&axes.narrow(1, 0, r)).reshape([n, f, r]);
    let exact = pca_neuron_features(moe, r as usize, PcaSolver::Exact, 0).to_kind(Kind::Double);
    let sign = (&reference * &exact)
        .sum_dim_intlist(&[0i64, 1][..], true, Kind::Double)
        .sign();
    let scale = f64::try_from(reference.abs().max()).unwrap();
    let diff = max_abs_diff(&(exact * sign), &reference) / scale;
    assert!(diff < 1e-6, "relative max |Δ| {diff}");

    let captured =
        |t: &Tensor| f64::try_from(t.to_kind(Kind::Double).square().sum(Kind::Double)).unwrap();
    let randomized = pca_neuron_features(moe, r as usize, PcaSolver::Randomized, 7);
    assert_eq!(randomized.size(), [n, f, r]);
    let ratio = captured(&randomized) / captured(&reference);
    assert!(
        (0.9..=1.0 + 1e-6).contains(&ratio),
        "variance captured {ratio}"
    );
    let again = pca_neuron_features(moe, r as usize, PcaSolver::Randomized, 7);
    assert!(randomized.equal(&again), "seeded");
}
