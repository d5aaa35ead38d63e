//! Criterion micro-benchmarks (issue #4 item 5): each selector on one batch of router logits,
//! and MoE dispatch — the layer's grouped gather → per-expert matmul → weighted scatter — against a naive
//! per-token loop and against running every expert on every token. Run with
//! `cargo bench -p moebench-methods --bench routing`; figures in docs/performance.md.
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use moebench_methods::routing::{DTopP, DTopPConfig, ExpertChoice, GroupMode, TopP, Usmoe};
use moebench_model::config::RouterNorm;
use moebench_model::layers::Linear;
use moebench_model::moe::{MoeLayer, Selection, Selector, TopK};
use std::sync::Arc;
use tch::{Device, Kind, Tensor};

const TOKENS: i64 = 512;
const EXPERTS: i64 = 16;

fn selectors(c: &mut Criterion) {
    tch::manual_seed(0);
    let logits = Tensor::randn([1, TOKENS, EXPERTS], (Kind::Float, Device::Cpu));
    let mut group = c.benchmark_group("selector_512x16");
    let norm = RouterNorm::SoftmaxTopkRenorm;
    let dtop_p = DTopPConfig {
        fixed_scales: Some(vec![1.0]),
        ..DTopPConfig::new(EXPERTS, 2.0)
    };
    let (dtop_p, controllers) = DTopP::for_model(1, &dtop_p).expect("dtop_p");
    controllers[0].lock().expect("controller").frozen = true;
    let selectors: [(&str, Arc<dyn Selector>); 5] = [
        ("topk", Arc::new(TopK { k: 2, norm })),
        ("topp", Arc::new(TopP::new(0.4))),
        (
            "expert_choice",
            Arc::new(ExpertChoice::new(2.0, GroupMode::FullSequence)),
        ),
        (
            "usmoe",
            Arc::new(Usmoe::new(2.0, 0.5, false, norm, GroupMode::FullSequence)),
        ),
        ("dtop_p", dtop_p[0].clone()),
    ];
    for (name, selector) in selectors {
        group.bench_function(name, |b| b.iter(|| selector.select(&logits, None)));
    }
    group.finish();
}

/// A random MoE layer: H = 256, F = 512, 16 experts, top-2.
fn layer() -> MoeLayer {
    let (h, f) = (256, 512);
    let w = |shape: &[i64]| Tensor::randn(shape, (Kind::Float, Device::Cpu)) * 0.05;
    MoeLayer {
        router: Linear {
            weight: w(&[EXPERTS, h]),
            bias: None,
        },
        w_gate: w(&[EXPERTS, f, h]),
        w_up: w(&[EXPERTS, f, h]),
        w_down: w(&[EXPERTS, h, f]),
        shared: None,
        selector: Arc::new(TopK {
            k: 2,
            norm: RouterNorm::SoftmaxTopkRenorm,
        }),
    }
}

/// One token at a time, one expert at a time: the loop the stacked dispatch replaces.
fn per_token(moe: &MoeLayer, x: &Tensor, selection: &Selection) -> Tensor {
    let flat = x.view([-1, x.size()[2]]);
    let weights = selection.weights.view([-1, EXPERTS]);
    let rows: Vec<Tensor> = (0..flat.size()[0])
        .map(|t| {
            let token = flat.get(t).unsqueeze(0);
            let chosen: Vec<i64> =
                Vec::try_from(weights.get(t).nonzero().squeeze_dim(1)).expect("expert ids");
            chosen
                .iter()
                .map(|&e| moe.expert_forward(e, &token) * weights.get(t).get(e))
                .fold(token.zeros_like(), |acc, y| acc + y)
        })
        .collect();
    Tensor::cat(&rows, 0)
}

/// The layer's previous dispatch (kept here as the baseline it was measured against): one
/// `nonzero` + gather + scatter per expert, over all experts.
fn per_expert_nonzero(moe: &MoeLayer, flat: &Tensor, selection: &Selection) -> Tensor {
    let mask = selection.mask.view([-1, EXPERTS]);
    let weights = selection.weights.view([-1, EXPERTS]);
    let counts: Vec<i64> =
        Vec::try_from(mask.sum_dim_intlist(0, false, Kind::Int64)).expect("expert counts");
    let mut out = flat.zeros_like();
    for (e, &count) in counts.iter().enumerate() {
        if count == 0 {
            continue;
        }
        let e = e as i64;
        let rows = mask.select(1, e).nonzero().squeeze_dim(1);
        let y = moe.expert_forward(e, &flat.index_select(0, &rows));
        let w = weights.select(1, e).index_select(0, &rows).unsqueeze(1);
        out = out.index_add(0, &rows, &(y * w));
    }
    out
}

/// Every expert on every token, then the weighted sum: no gather/scatter, N/k times the FLOPs.
fn all_experts(moe: &MoeLayer, x: &Tensor, selection: &Selection) -> Tensor {
    let flat = x.view([-1, x.size()[2]]);
    let gate = flat.matmul(&moe.w_gate.transpose(1, 2)).silu();
    let up = flat.matmul(&moe.w_up.transpose(1, 2));
    let out = (gate * up).matmul(&moe.w_down.transpose(1, 2)); // [N, T, H]
    let w = selection
        .weights
        .view([-1, EXPERTS])
        .transpose(0, 1)
        .unsqueeze(-1);
    (out * w).sum_dim_intlist(0, false, Kind::Float)
}

fn dispatch(c: &mut Criterion) {
    tch::manual_seed(0);
    let moe = layer();
    let mut group = c.benchmark_group("moe_dispatch_top2_of_16");
    group.sample_size(10);
    for tokens in [1i64, 64, 512] {
        let x = Tensor::randn([1, tokens, 256], (Kind::Float, Device::Cpu));
        let selection = moe.selector.select(&moe.router_logits(&x), None);
        let _guard = tch::no_grad_guard();
        let flat = x.view([-1, 256]);
        let reference = moe.dispatch(&flat, &selection);
        for other in [
            per_token(&moe, &x, &selection),
            all_experts(&moe, &x, &selection),
        ] {
            let diff = f64::try_from((other - &reference).abs().max()).expect("scalar");
            assert!(diff < 1e-4, "dispatch variants disagree: max |Δ| {diff}");
        }
        group.bench_with_input(
            BenchmarkId::new("grouped_dispatch", tokens),
            &flat,
            |b, flat| b.iter(|| moe.dispatch(flat, &selection)),
        );
        group.bench_with_input(
            BenchmarkId::new("per_expert_nonzero", tokens),
            &flat,
            |b, flat| b.iter(|| per_expert_nonzero(&moe, flat, &selection)),
        );
        group.bench_with_input(BenchmarkId::new("per_token_loop", tokens), &x, |b, x| {
            b.iter(|| per_token(&moe, x, &selection))
        });
        group.bench_with_input(
            BenchmarkId::new("all_experts_masked", tokens),
            &x,
            |b, x| b.iter(|| all_experts(&moe, x, &selection)),
        );
    }
    group.finish();
}

criterion_group!(benches, selectors, dispatch);
criterion_main!(benches);
