//! Dense2MoE (docs/methods.md §3) on a random 6-layer Llama: similarity analysis, layer pruning,
//! Layer-Fusion UpCycling and its cost accounting (§8.6).
mod common;

use common::token_batch;
use moebench_methods::dense2moe::{
    bytes_saved_per_decode_token, choose_streamline_span, dense2moe, layer_prune,
    layer_prune_by_search, layer_prune_by_similarity, layer_similarity, lf_uc, lf_uc_bytes_saved,
    lf_uc_spans, llm_streamline, prune_then_upcycle, search_spans, Dense2MoeConfig, LayerSearch,
    LayerSimilarity, LfUcConfig, Span, SpanCriterion, StreamlineConfig,
};
use moebench_methods::scratch::{random_model, ScratchConfig};
use moebench_model::cost::{bytes_per_decode_token, flops_per_token, param_counts};
use moebench_model::layers::Mlp;
use moebench_model::model::Block;
use moebench_model::moe::MoeLayer;
use moebench_model::save::save_pretrained;
use moebench_model::{Ffn, Model};
use std::path::Path;
use tch::{Device, Kind, Tensor};

const H: i64 = 32;
const F: i64 = 16;

/// A random dense 6-layer model written to `dir` (reload it with [`reload`] for a reference).
fn model(dir: &Path) -> Model {
    let cfg = ScratchConfig {
        hidden_size: H as usize,
        num_layers: 6,
        num_heads: 2,
        num_kv_heads: 1,
        intermediate_size: F as usize,
        num_experts: 0,
        init_std: 0.2,
        ..ScratchConfig::default()
    };
    random_model(&cfg, dir).unwrap()
}

fn reload(dir: &Path) -> Model {
    Model::load(dir, Device::Cpu, Kind::Float).unwrap()
}

/// Two fixed batches of token ids.
fn batches() -> Vec<(Tensor, Tensor)> {
    (0..2).map(|i| token_batch(2, 6, 256, 7 + i)).collect()
}

fn mlp(block: &Block) -> &Mlp {
    match &block.ffn {
        Ffn::Dense(m) => m,
        Ffn::Moe(_) => panic!("dense block expected"),
    }
}

fn moe(block: &Block) -> &MoeLayer {
    match &block.ffn {
        Ffn::Moe(m) => m,
        Ffn::Dense(_) => panic!("MoE block expected"),
    }
}

/// Attention and norm weights of a block.
fn attention_tensors(b: &Block) -> Vec<&Tensor> {
    let a = &b.attn;
    vec![
        &b.input_norm.weight,
        &b.post_norm.weight,
        &a.q_proj.weight,
        &a.k_proj.weight,
        &a.v_proj.weight,
        &a.o_proj.weight,
    ]
}

fn mlp_tensors(m: &Mlp) -> Vec<&Tensor> {
    vec![&m.gate.weight, &m.up.weight, &m.down.weight]
}

fn numel(ts: &[&Tensor]) -> i64 {
    ts.iter().map(|t| t.numel() as i64).sum()
}

fn same(a: &[&Tensor], b: &[&Tensor]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.equal(y))
}

fn runs(model: &Model) {
    let (ids, mask) = &batches()[0];
    let logits = tch::no_grad(|| model.forward(ids, Some(mask), None));
    assert_eq!(logits.size(), [2, 6, 257]);
    assert!(bool::try_from(logits.isfinite().all()).unwrap());
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

#[test]
fn similarity_matrices_are_symmetric_cosines_over_real_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let m = model(dir.path());
    let sim = layer_similarity(&m, &batches()).unwrap();
    assert_eq!(sim.tokens, 24.0);
    for matrix in [&sim.output, &sim.mlp_input] {
        assert_eq!(matrix.len(), 6);
        for (i, row) in matrix.iter().enumerate() {
            assert!((row[i] - 1.0).abs() < 1e-5, "diagonal {}", row[i]);
            for (j, &v) in row.iter().enumerate() {
                assert!((v - matrix[j][i]).abs() < 1e-5 && v.abs() <= 1.0 + 1e-5);
            }
        }
    }
    // Not trivially all ones: the layers of a random model do differ.
    assert!(sim.mlp_input[0][5] < 0.999, "{}", sim.mlp_input[0][5]);

    // Right padding is masked out: a padded batch gives the statistics of its real tokens.
    let (ids, _) = &batches()[0];
    let real = ids.narrow(1, 0, 4);
    let padded = Tensor::cat(&[&real, &real.zeros_like().narrow(1, 0, 2)], 1);
    let mask = Tensor::cat(&[real.ones_like(), real.zeros_like().narrow(1, 0, 2)], 1);
    let a = layer_similarity(&m, &[(real.shallow_clone(), real.ones_like())]).unwrap();
    let b = layer_similarity(&m, &[(padded, mask)]).unwrap();
    assert_eq!(b.tokens, 8.0);
    for (x, y) in a
        .mlp_input
        .iter()
        .flatten()
        .zip(b.mlp_input.iter().flatten())
    {
        assert!((x - y).abs() < 1e-5, "{x} vs {y}");
    }
}

#[test]
fn layer_prune_removes_exactly_the_span_after_its_first_block() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = model(dir.path());
    let original = reload(dir.path());
    layer_prune(&mut m, Span { start: 1, len: 3 }).unwrap();
    assert_eq!(m.num_layers(), 4);
    assert_eq!(m.config.num_layers, 4);
    for (kept, &from) in m.layers.iter().zip(&[0usize, 1, 4, 5]) {
        let orig = &original.layers[from];
        assert!(same(&attention_tensors(kept), &attention_tensors(orig)));
        assert!(same(&mlp_tensors(mlp(kept)), &mlp_tensors(mlp(orig))));
    }
    runs(&m);
    // Saved and reloaded with the shorter config, the pruned model computes the same logits.
    let out = dir.path().join("pruned");
    save_pretrained(&m, None, &out).unwrap();
    let back = reload(&out);
    assert_eq!(back.num_layers(), 4);
    let (ids, mask) = &batches()[0];
    let diff = tch::no_grad(|| {
        f64::try_from(
            (back.forward(ids, Some(mask), None) - m.forward(ids, Some(mask), None))
                .abs()
                .max(),
        )
    })
    .unwrap();
    assert!(diff < 1e-6, "max |Δ| {diff}");
}

#[test]
fn lf_uc_moves_the_removed_mlps_into_experts_and_saves_attention_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = model(dir.path());
    let original = reload(dir.path());
    let span = Span { start: 1, len: 3 };
    let ctx = 100;
    let saved = bytes_saved_per_decode_token(&original, span, ctx).unwrap();
    lf_uc(&mut m, span, &LfUcConfig::default()).unwrap();

    assert_eq!(m.num_layers(), 4);
    assert_eq!(m.config.num_layers, 4);
    let cfg = m.config.moe.as_ref().unwrap();
    assert_eq!((cfg.num_experts, cfg.top_k), (2, 2));
    assert_eq!(cfg.sparse_layers, [false, true, false, false]);
    let fused = moe(&m.layers[1]);
    assert_eq!(fused.num_experts(), 2);
    for (e, from) in [2usize, 3].into_iter().enumerate() {
        let o = mlp(&original.layers[from]);
        let e = e as i64;
        assert!(same(
            &[
                &fused.w_gate.get(e),
                &fused.w_up.get(e),
                &fused.w_down.get(e)
            ],
            &mlp_tensors(o)
        ));
    }
    let shared = fused.shared.as_ref().unwrap();
    assert!(shared.gate.is_none());
    assert!(same(
        &mlp_tensors(&shared.mlp),
        &mlp_tensors(mlp(&original.layers[1]))
    ));
    for (kept, &from) in m.layers.iter().zip(&[0usize, 1, 4, 5]) {
        assert!(same(
            &attention_tensors(kept),
            &attention_tensors(&original.layers[from])
        ));
    }
    runs(&m);

    // Parameters: two blocks' attention and norms gone, a [2, H] router added, MLPs all kept.
    let attn = numel(&attention_tensors(&original.layers[2]));
    let (before, after) = (param_counts(&original, None), param_counts(&m, None));
    assert_eq!(after.total, before.total - 2 * attn + 2 * H);
    assert_eq!(after.expert, 2 * 3 * H * F);

    // Bytes per decode token: exactly the removed attention, KV cache and norms, which is what
    // `bytes_saved_per_decode_token` predicted; the MLP bytes move from dense to experts.
    let (b0, b1) = (
        bytes_per_decode_token(&original, ctx, None),
        bytes_per_decode_token(&m, ctx, None),
    );
    let attn_part =
        |b: &moebench_model::cost::BytesPerToken| b.attention_weights + b.kv_cache + b.norms;
    assert!(close(attn_part(&b0) - attn_part(&b1), saved));
    assert!(close(
        b1.attention_weights,
        b0.attention_weights * 4.0 / 6.0
    ));
    assert!(close(b1.kv_cache, b0.kv_cache * 4.0 / 6.0));
    let mlp_bytes = (3 * H * F * 4) as f64;
    assert!(close(b1.dense_mlp, 3.0 * mlp_bytes));
    assert!(close(b1.shared_experts, mlp_bytes));
    assert!(close(b1.experts, 2.0 * mlp_bytes));
    assert!(close(b1.router, (2 * H * 4) as f64));
    assert!(b1.total < b0.total);

    // FLOPs: 4 attentions, 3 dense MLPs, one shared + top-2 experts, a 2-expert router.
    let (f0, f1) = (
        flops_per_token(&original, ctx, None),
        flops_per_token(&m, ctx, None),
    );
    let mlp_flops = (6 * H * F) as f64;
    assert!(close(
        f1.attention_projections,
        f0.attention_projections * 4.0 / 6.0
    ));
    assert!(close(
        f1.attention_context,
        f0.attention_context * 4.0 / 6.0
    ));
    assert!(close(f1.dense_mlp, 3.0 * mlp_flops));
    assert!(close(f1.shared_experts, mlp_flops));
    assert!(close(f1.experts, 2.0 * mlp_flops));
    assert!(close(f1.router, (2 * H * 2) as f64));
}

#[test]
fn fused_ffn_is_the_own_mlp_plus_the_router_weighted_experts() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = model(dir.path());
    let original = reload(dir.path());
    // Top-k = all experts: the renormalised weights are the router softmax; a wide router
    // init makes them far from uniform.
    let cfg = LfUcConfig {
        top_k: Some(2),
        router_init_std: 1.0,
        ..LfUcConfig::default()
    };
    lf_uc(&mut m, Span { start: 2, len: 3 }, &cfg).unwrap();
    let fused = moe(&m.layers[2]);
    tch::manual_seed(3);
    let x = Tensor::randn([1, 5, H], (Kind::Float, Device::Cpu));
    let got = tch::no_grad(|| fused.forward(2, &x, None, None, None));
    let w = x
        .linear::<Tensor>(&fused.router.weight, None)
        .softmax(-1, Kind::Float);
    let own = mlp(&original.layers[2]).forward(&x);
    let expected = [3usize, 4].iter().enumerate().fold(own, |acc, (j, &l)| {
        acc + mlp(&original.layers[l]).forward(&x) * w.narrow(-1, j as i64, 1)
    });
    let spread = f64::try_from((w.narrow(-1, 0, 1) - w.narrow(-1, 1, 1)).abs().max()).unwrap();
    assert!(
        spread > 0.05,
        "router weights too uniform to test: {spread}"
    );
    let diff = f64::try_from((got - expected).abs().max()).unwrap();
    assert!(diff < 1e-5, "max |Δ| {diff}");
}

#[test]
fn extra_experts_replicate_the_fused_mlps_round_robin() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = model(dir.path());
    let original = reload(dir.path());
    let cfg = LfUcConfig {
        num_experts: Some(5),
        keep_own_mlp_as_shared: false,
        ..LfUcConfig::default()
    };
    lf_uc(&mut m, Span { start: 1, len: 2 }, &cfg).unwrap();
    let fused = moe(&m.layers[1]);
    assert!(fused.shared.is_none());
    assert_eq!(m.config.moe.as_ref().unwrap().top_k, 2);
    // Own MLP first, then the removed layer's: 1, 2, 1, 2, 1.
    for (e, from) in [1usize, 2, 1, 2, 1].into_iter().enumerate() {
        assert!(fused
            .w_down
            .get(e as i64)
            .equal(&mlp(&original.layers[from]).down.weight));
    }
    runs(&m);
}

#[test]
fn dense2moe_and_the_pruning_baseline_fuse_the_same_chosen_span() {
    let dir = tempfile::tempdir().unwrap();
    let mut fused = model(dir.path());
    let mut pruned = reload(dir.path());
    let cfg = Dense2MoeConfig {
        span_len: 2,
        decode_context: 64,
        ..Dense2MoeConfig::default()
    };
    let r = dense2moe(&mut fused, &batches(), &cfg).unwrap();
    let p = layer_prune_by_similarity(&mut pruned, &batches(), 2, 64).unwrap();
    assert_eq!(r.spans.len(), 1);
    let span = r.spans[0].span;
    assert_eq!(span, p.spans[0].span);
    assert!((1..=3).contains(&span.start) && span.len == 2);
    assert_eq!(r.similarity, p.similarity);
    assert!(close(
        r.bytes_saved,
        r.bytes_before.total - r.bytes_after.total
    ));
    // The estimates the search ranks spans by are the measured changes.
    assert!(close(r.spans[0].bytes_saved, r.bytes_saved));
    assert!(close(p.spans[0].bytes_saved, p.bytes_saved));
    // Pruning also drops the MLP; LF-UC keeps it as an expert and adds a router.
    assert!(p.bytes_saved > r.bytes_saved && r.bytes_saved > 0.0);
    assert_eq!((fused.num_layers(), pruned.num_layers()), (5, 5));
    assert!(matches!(fused.layers[span.start].ffn, Ffn::Moe(_)));
    runs(&fused);
    runs(&pruned);
}

#[test]
fn bad_parameters_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = model(dir.path());
    let err = |r: moebench_methods::Result<()>| r.unwrap_err().to_string();
    let e = err(layer_prune(&mut m, Span { start: 4, len: 3 }));
    assert!(e.contains("`span`") && e.contains("start+len <= 6"), "{e}");
    let e = err(lf_uc(
        &mut m,
        Span { start: 1, len: 1 },
        &LfUcConfig::default(),
    ));
    assert!(
        e.contains("`span`") && e.contains("at least 2 layers"),
        "{e}"
    );
    let too_many = LfUcConfig {
        top_k: Some(3),
        ..LfUcConfig::default()
    };
    let e = err(lf_uc(&mut m, Span { start: 1, len: 3 }, &too_many));
    assert!(
        e.contains("`top_k`") && e.contains("between 1 and num_experts (2)"),
        "{e}"
    );
    let too_few = LfUcConfig {
        num_experts: Some(1),
        ..LfUcConfig::default()
    };
    let e = err(lf_uc(&mut m, Span { start: 1, len: 3 }, &too_few));
    assert!(
        e.contains("`num_experts`") && e.contains("at least the 2 routed MLPs"),
        "{e}"
    );
    let e = dense2moe(
        &mut m,
        &batches(),
        &Dense2MoeConfig {
            span_len: 5,
            ..Dense2MoeConfig::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("`span_len`") && e.contains("num_layers - 2 = 4"),
        "{e}"
    );
    assert_eq!(m.num_layers(), 6, "failed calls leave the model alone");
    lf_uc(&mut m, Span { start: 1, len: 2 }, &LfUcConfig::default()).unwrap();
    let e = err(lf_uc(
        &mut m,
        Span { start: 2, len: 2 },
        &LfUcConfig::default(),
    ));
    assert!(e.contains("already has MoE layers"), "{e}");
}

/// The bytes estimate the search uses equals the measured change of bytes per decode token,
/// for the own MLP shared or routed and for several k and expert counts.
#[test]
fn lf_uc_bytes_estimate_is_the_measured_change() {
    let dir = tempfile::tempdir().unwrap();
    let _ = model(dir.path());
    for (shared, n, k) in [
        (true, None, None),
        (false, Some(4), Some(1)),
        (true, Some(3), Some(3)),
    ] {
        let cfg = LfUcConfig {
            keep_own_mlp_as_shared: shared,
            num_experts: n,
            top_k: k,
            ..LfUcConfig::default()
        };
        let mut m = reload(dir.path());
        let span = Span { start: 2, len: 3 };
        let estimate = lf_uc_bytes_saved(&m, span, &cfg, 50).unwrap();
        let before = bytes_per_decode_token(&m, 50, None).total;
        lf_uc(&mut m, span, &cfg).unwrap();
        let after = bytes_per_decode_token(&m, 50, None).total;
        assert!(
            close(estimate, before - after),
            "{cfg:?}: {estimate} vs {}",
            before - after
        );
    }
}

/// An 8-layer similarity matrix: 0.5 off the diagonal except `high` pairs.
fn matrix(high: &[(usize, usize, f64)]) -> Vec<Vec<f64>> {
    let mut m = vec![vec![0.5; 8]; 8];
    for (i, row) in m.iter_mut().enumerate() {
        row[i] = 1.0;
    }
    for &(i, j, v) in high {
        m[i][j] = v;
        m[j][i] = v;
    }
    m
}

/// δ decides which runs qualify (every pair ≥ δ), the roofline target how many layers go:
/// without a target the longest qualifying run; with one, the shortest single run that saves
/// enough, else several runs; impossible settings are named.
#[test]
fn search_takes_qualifying_spans_by_the_bytes_target() {
    // Layers 1-4 are mutually ≥ 0.9 similar, 5-6 at 0.95; 3-4 at 0.97.
    let mut high = vec![(5, 6, 0.95)];
    for i in 1..=4 {
        for j in i + 1..=4 {
            high.push((i, j, if (i, j) == (3, 4) { 0.97 } else { 0.9 }));
        }
    }
    let sim = LayerSimilarity {
        mlp_input: matrix(&high),
        output: matrix(&[(5, 6, 0.99)]),
        tokens: 1.0,
    };
    // Every removed layer saves 10 of 100 bytes.
    let saving = |span: Span| Ok(10.0 * (span.len - 1) as f64);
    let search = |delta: f64, reduction: Option<f64>| LayerSearch {
        delta,
        criterion: SpanCriterion::MlpInput,
        max_span_len: None,
        bytes_reduction: reduction,
    };
    let spans = |s: &LayerSearch| -> Vec<Span> {
        search_spans(&sim, s, 100.0, &saving)
            .unwrap()
            .iter()
            .map(|c| c.span)
            .collect()
    };
    assert_eq!(spans(&search(0.9, None)), [Span { start: 1, len: 4 }]);
    // 10 %: one removed layer; the most similar pair (3, 4) wins over (5, 6).
    assert_eq!(spans(&search(0.9, Some(0.1))), [Span { start: 3, len: 2 }]);
    // 25 %: three layers, the 1-4 run. 35 %: four, more than one run can remove → 1-4 and 5-6.
    assert_eq!(spans(&search(0.9, Some(0.25))), [Span { start: 1, len: 4 }]);
    assert_eq!(
        spans(&search(0.9, Some(0.35))),
        [Span { start: 1, len: 4 }, Span { start: 5, len: 2 }]
    );
    // δ = 0.96: only (3, 4) qualifies.
    assert_eq!(spans(&search(0.96, None)), [Span { start: 3, len: 2 }]);
    let chosen = search_spans(&sim, &search(0.9, Some(0.1)), 100.0, &saving).unwrap();
    assert_eq!(
        (chosen[0].min_similarity, chosen[0].mean_similarity),
        (0.97, 0.97)
    );
    // Under the output criterion only 5-6 is similar.
    let output = LayerSearch {
        criterion: SpanCriterion::Output,
        ..search(0.9, None)
    };
    assert_eq!(spans(&output), [Span { start: 5, len: 2 }]);
    let both = LayerSearch {
        criterion: SpanCriterion::Both,
        ..search(0.9, None)
    };
    assert_eq!(spans(&both), [Span { start: 5, len: 2 }]);

    let err = |s: &LayerSearch| {
        search_spans(&sim, s, 100.0, &saving)
            .unwrap_err()
            .to_string()
    };
    let e = err(&search(0.99, None));
    assert!(
        e.contains("`delta` is 0.99; no run") && e.contains("lower δ"),
        "{e}"
    );
    let e = err(&search(0.9, Some(0.5)));
    assert!(
        e.contains("`bytes_reduction` is 0.5") && e.contains("save at most 40.0 %"),
        "{e}"
    );
    let e = err(&search(1.5, None));
    assert!(e.contains("`delta` is 1.5; allowed: [-1, 1]"), "{e}");
}

/// Dense2MoE with the search end to end: the fused model saves at least the target, and the
/// pruning baseline with the same search meets it with the same or fewer layers.
#[test]
fn dense2moe_search_meets_its_bytes_target() {
    let dir = tempfile::tempdir().unwrap();
    let mut fused = model(dir.path());
    let mut pruned = reload(dir.path());
    let search = LayerSearch {
        delta: -1.0,
        bytes_reduction: Some(0.2),
        ..LayerSearch::default()
    };
    let cfg = Dense2MoeConfig {
        search: Some(search.clone()),
        decode_context: 64,
        ..Dense2MoeConfig::default()
    };
    let r = dense2moe(&mut fused, &batches(), &cfg).unwrap();
    assert!(
        r.bytes_saved >= 0.2 * r.bytes_before.total,
        "{}",
        r.bytes_saved
    );
    let estimated: f64 = r.spans.iter().map(|c| c.bytes_saved).sum();
    assert!(close(estimated, r.bytes_saved));
    let p = layer_prune_by_search(&mut pruned, &batches(), &search, 64).unwrap();
    assert!(p.bytes_saved >= 0.2 * p.bytes_before.total);
    let removed = |spans: &[moebench_methods::dense2moe::ChosenSpan]| -> usize {
        spans.iter().map(|c| c.span.len - 1).sum()
    };
    assert!(removed(&p.spans) <= removed(&r.spans));
    assert_eq!(fused.num_layers(), 6 - removed(&r.spans));
    runs(&fused);
    runs(&pruned);
}

/// Two spans fused at once: each becomes an MoE layer (the later one at its shifted index),
/// both with the longer span's expert count.
#[test]
fn lf_uc_fuses_several_spans() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = model(dir.path());
    let original = reload(dir.path());
    lf_uc_spans(
        &mut m,
        &[Span { start: 3, len: 2 }, Span { start: 1, len: 2 }],
        &LfUcConfig {
            num_experts: Some(2),
            top_k: Some(1),
            ..LfUcConfig::default()
        },
    )
    .unwrap();
    assert_eq!(m.num_layers(), 4);
    let cfg = m.config.moe.as_ref().unwrap();
    assert_eq!(cfg.sparse_layers, [false, true, true, false]);
    // Layer 1 holds layer 2's MLP (twice), layer 2 (old 3) holds old layer 4's.
    for (at, from) in [(1usize, 2usize), (2, 4)] {
        let fused = moe(&m.layers[at]);
        for e in 0..2 {
            assert!(fused
                .w_up
                .get(e)
                .equal(&mlp(&original.layers[from]).up.weight));
        }
    }
    runs(&m);
    let e = lf_uc_spans(
        &mut reload(dir.path()),
        &[Span { start: 1, len: 3 }, Span { start: 2, len: 2 }],
        &LfUcConfig::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("`spans` overlap"), "{e}");
}

/// α and β (the reconstructed Eq. 6) scale the own MLP and the routed sum; the expert-memory
/// cap decides how many replicas stay.
#[test]
fn alpha_beta_and_the_expert_memory_cap() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = model(dir.path());
    let original = reload(dir.path());
    let cfg = LfUcConfig {
        top_k: Some(2),
        own_scale: 0.5,
        routed_scale: 2.0,
        router_init_std: 1.0,
        ..LfUcConfig::default()
    };
    lf_uc(&mut m, Span { start: 2, len: 3 }, &cfg).unwrap();
    let fused = moe(&m.layers[2]);
    tch::manual_seed(4);
    let x = Tensor::randn([1, 5, H], (Kind::Float, Device::Cpu));
    let got = tch::no_grad(|| fused.forward(2, &x, None, None, None));
    let w = x
        .linear::<Tensor>(&fused.router.weight, None)
        .softmax(-1, Kind::Float);
    let own = mlp(&original.layers[2]).forward(&x) * 0.5;
    let expected = [3usize, 4].iter().enumerate().fold(own, |acc, (j, &l)| {
        acc + mlp(&original.layers[l]).forward(&x) * w.narrow(-1, j as i64, 1) * 2.0
    });
    let diff = f64::try_from((got - expected).abs().max()).unwrap();
    assert!(diff < 1e-5, "max |Δ| {diff}");

    let expert_bytes = (3 * H * F * 4) as f64;
    let capped = LfUcConfig {
        num_experts: Some(6),
        max_expert_bytes: Some(4.5 * expert_bytes),
        ..LfUcConfig::default()
    };
    let mut m = reload(dir.path());
    lf_uc(&mut m, Span { start: 1, len: 3 }, &capped).unwrap();
    assert_eq!(moe(&m.layers[1]).num_experts(), 4);
    let tight = LfUcConfig {
        max_expert_bytes: Some(1.5 * expert_bytes),
        ..LfUcConfig::default()
    };
    let e = lf_uc(&mut reload(dir.path()), Span { start: 1, len: 3 }, &tight)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("`max_expert_bytes`") && e.contains("room for 1 experts"),
        "{e}"
    );
    let e = lf_uc(
        &mut reload(dir.path()),
        Span { start: 1, len: 3 },
        &LfUcConfig {
            keep_own_mlp_as_shared: false,
            own_scale: 2.0,
            ..LfUcConfig::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("`own_scale`"), "{e}");
}

/// Prune-then-upcycle is the pruned model until trained (identical copies, renormalised
/// top-k), with LF-UC's expert count and top-k.
#[test]
fn prune_then_upcycle_equals_pruning_until_trained() {
    let dir = tempfile::tempdir().unwrap();
    let mut upcycled = model(dir.path());
    let mut pruned = reload(dir.path());
    let span = Span { start: 2, len: 3 };
    prune_then_upcycle(&mut upcycled, span, &LfUcConfig::default()).unwrap();
    layer_prune(&mut pruned, span).unwrap();
    let fused = moe(&upcycled.layers[2]);
    assert_eq!(
        (
            fused.num_experts(),
            upcycled.config.moe.as_ref().unwrap().top_k
        ),
        (2, 2)
    );
    let (ids, mask) = &batches()[0];
    let diff = tch::no_grad(|| {
        f64::try_from(
            (upcycled.forward(ids, Some(mask), None) - pruned.forward(ids, Some(mask), None))
                .abs()
                .max(),
        )
    })
    .unwrap();
    assert!(diff < 1e-5, "max |Δ| {diff}");
}

/// LLM-Streamline picks the run whose input and output are most alike, replaces it with its
/// first layer trained on MSE (the MSE falls), and leaves every other weight untouched.
#[test]
fn llm_streamline_trains_only_the_replacement_layer() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = model(dir.path());
    let original = reload(dir.path());
    let sim = layer_similarity(&original, &batches()).unwrap();
    let (span, score) = choose_streamline_span(&sim, 3).unwrap();
    assert_eq!(score, sim.output[span.start - 1][span.end() - 1]);
    for start in 1..=3 {
        assert!(sim.output[start - 1][start + 2] <= score);
    }
    let cfg = StreamlineConfig {
        span_len: 3,
        steps: 30,
        lr: 1e-2,
        ..StreamlineConfig::default()
    };
    let r = llm_streamline(&mut m, &batches(), &cfg).unwrap();
    assert_eq!(r.span, span);
    assert!(
        r.mse_after < 0.8 * r.mse_before,
        "{} → {}",
        r.mse_before,
        r.mse_after
    );
    assert_eq!(m.num_layers(), 4);
    for (l, kept) in m.layers.iter().enumerate() {
        let from = if l <= span.start { l } else { l + 2 };
        let unchanged = same(
            &attention_tensors(kept),
            &attention_tensors(&original.layers[from]),
        ) && same(
            &mlp_tensors(mlp(kept)),
            &mlp_tensors(mlp(&original.layers[from])),
        );
        assert_eq!(unchanged, l != span.start, "layer {l}");
    }
    assert!(m.embed.equal(&original.embed));
    assert!(r.bytes_after.total < r.bytes_before.total);
    runs(&m);
    let e = choose_streamline_span(&sim, 6).unwrap_err().to_string();
    assert!(
        e.contains("`span_len`") && e.contains("num_layers - 1 = 5"),
        "{e}"
    );
}
