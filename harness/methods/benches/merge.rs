//! Criterion micro-benchmark of the neuron-alignment assignment (issue #14 item 4): the
//! scipy-style shortest augmenting path solver `merge::linear_assignment` against the textbook
//! Hungarian it replaced (kept here as the baseline), on uniform random costs — the hard case,
//! where each row's search tree grows large — at a tiny and at SmolLM2's intermediate width
//! (F = 1536). Run with `cargo bench -p moebench-methods --bench merge`; figures in
//! docs/performance.md.
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use moebench_methods::merge::linear_assignment;

/// The textbook O(n³) Hungarian with potentials (e-maxx), moebench's solver before #14.
fn hungarian(cost: &[f32]) -> Vec<usize> {
    let n = (cost.len() as f64).sqrt().round() as usize;
    let (mut u, mut v) = (vec![0.0f64; n + 1], vec![0.0f64; n + 1]);
    let (mut row_of, mut way) = (vec![0usize; n + 1], vec![0usize; n + 1]);
    for i in 1..=n {
        row_of[0] = i;
        let mut j0 = 0;
        let mut min_to = vec![f64::INFINITY; n + 1];
        let mut used = vec![false; n + 1];
        loop {
            used[j0] = true;
            let i0 = row_of[j0];
            let (mut delta, mut j1) = (f64::INFINITY, 0);
            for j in 1..=n {
                if used[j] {
                    continue;
                }
                let reduced = f64::from(cost[(i0 - 1) * n + j - 1]) - u[i0] - v[j];
                if reduced < min_to[j] {
                    min_to[j] = reduced;
                    way[j] = j0;
                }
                if min_to[j] < delta {
                    delta = min_to[j];
                    j1 = j;
                }
            }
            for j in 0..=n {
                if used[j] {
                    u[row_of[j]] += delta;
                    v[j] -= delta;
                } else {
                    min_to[j] -= delta;
                }
            }
            j0 = j1;
            if row_of[j0] == 0 {
                break;
            }
        }
        while j0 != 0 {
            let j1 = way[j0];
            row_of[j0] = row_of[j1];
            j0 = j1;
        }
    }
    let mut assignment = vec![0; n];
    for j in 1..=n {
        assignment[row_of[j] - 1] = j - 1;
    }
    assignment
}

/// Uniform costs in [0, 1) from a fixed LCG.
fn costs(n: usize) -> Vec<f32> {
    let mut state = n as u64;
    (0..n * n)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((state >> 40) as f32) / (1u64 << 24) as f32
        })
        .collect()
}

fn assignment(c: &mut Criterion) {
    let mut group = c.benchmark_group("linear_assignment");
    group.sample_size(10);
    for n in [256usize, 1536] {
        let cost = costs(n);
        assert_eq!(hungarian(&cost), linear_assignment(&cost), "same optimum");
        group.bench_with_input(BenchmarkId::new("scipy_lsap", n), &cost, |b, cost| {
            b.iter(|| linear_assignment(cost))
        });
        group.bench_with_input(BenchmarkId::new("hungarian", n), &cost, |b, cost| {
            b.iter(|| hungarian(cost))
        });
    }
    group.finish();
}

criterion_group!(benches, assignment);
criterion_main!(benches);
