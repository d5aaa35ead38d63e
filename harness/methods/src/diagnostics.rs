//! Routing diagnostics per MoE layer (issue #4 item 4; docs/methods.md §8.6): expert load histogram,
//! active experts per token (mean, std), coefficient of variation of the loads, normalised load
//! entropy, MaxVio (Wang et al. 2024: max load over mean load, minus 1), dead experts and the
//! co-activation matrix. Counted over real tokens only (padding masked).
use moebench_model::moe::MoeLayer;
use moebench_model::observer::{ForwardObserver, MoeEvent};
use serde::Serialize;
use std::collections::BTreeMap;
use tch::{Kind, Tensor};

/// Running counts of one MoE layer.
#[derive(Debug, Clone, Default)]
struct LayerCounts {
    loads: Vec<f64>,
    coactivation: Vec<f64>,
    tokens: f64,
    active_sum: f64,
    active_sq_sum: f64,
}

/// A [`ForwardObserver`] that accumulates routing counts over any number of forward passes.
#[derive(Debug, Default)]
pub struct RoutingDiagnostics {
    layers: BTreeMap<usize, LayerCounts>,
}

/// The diagnostics of one layer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LayerDiagnostics {
    pub layer: usize,
    /// Token-expert assignments per expert.
    pub loads: Vec<f64>,
    pub tokens: f64,
    pub active_mean: f64,
    pub active_std: f64,
    /// std/mean of the loads (0 = perfectly balanced).
    pub load_cv: f64,
    /// Entropy of the load shares over ln N (1 = perfectly balanced).
    pub load_entropy: f64,
    /// max load / mean load − 1.
    pub max_violation: f64,
    pub dead_experts: usize,
    /// `[N×N]` row-major: tokens that used both experts i and j (diagonal = loads).
    pub coactivation: Vec<f64>,
}

impl ForwardObserver for RoutingDiagnostics {
    fn on_moe(&mut self, layer: usize, _moe: &MoeLayer, event: &MoeEvent<'_>) {
        let n = event.selection.mask.size()[2];
        let mut mask = event.selection.mask.view([-1, n]).to_kind(Kind::Double);
        if let Some(real) = event.token_mask {
            mask = mask.index_select(0, &real.flatten(0, -1).nonzero().squeeze_dim(1));
        }
        let counts = mask.sum_dim_intlist(-1, false, Kind::Double);
        let entry = self.layers.entry(layer).or_insert_with(|| LayerCounts {
            loads: vec![0.0; n as usize],
            coactivation: vec![0.0; (n * n) as usize],
            ..LayerCounts::default()
        });
        add(
            &mut entry.loads,
            &mask.sum_dim_intlist(0, false, Kind::Double),
        );
        add(&mut entry.coactivation, &mask.transpose(0, 1).matmul(&mask));
        entry.tokens += mask.size()[0] as f64;
        entry.active_sum += f64::try_from(counts.sum(Kind::Double)).unwrap_or(0.0);
        entry.active_sq_sum += f64::try_from(counts.square().sum(Kind::Double)).unwrap_or(0.0);
    }
}

fn add(acc: &mut [f64], t: &Tensor) {
    let values =
        Vec::<f64>::try_from(t.flatten(0, -1).to_device(tch::Device::Cpu)).expect("f64 counts");
    acc.iter_mut().zip(values).for_each(|(a, v)| *a += v);
}

impl RoutingDiagnostics {
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }

    /// Mean active experts per token for each model layer (`None` for layers never seen, e.g.
    /// dense ones), as [`moebench_model::cost::flops_per_token`] takes them.
    pub fn active_means(&self, num_layers: usize) -> Vec<f64> {
        (0..num_layers)
            .map(|l| {
                self.layers
                    .get(&l)
                    .filter(|c| c.tokens > 0.0)
                    .map_or(0.0, |c| c.active_sum / c.tokens)
            })
            .collect()
    }

    /// Mean and std of active experts per token over all layers' (token, layer) pairs.
    pub fn overall_active(&self) -> (f64, f64) {
        let (n, s, sq) = self.layers.values().fold((0.0, 0.0, 0.0), |(n, s, sq), c| {
            (n + c.tokens, s + c.active_sum, sq + c.active_sq_sum)
        });
        if n == 0.0 {
            return (0.0, 0.0);
        }
        let mean = s / n;
        (mean, (sq / n - mean * mean).max(0.0).sqrt())
    }

    pub fn layers(&self) -> Vec<LayerDiagnostics> {
        self.layers
            .iter()
            .map(|(&layer, c)| {
                let n = c.loads.len() as f64;
                let total: f64 = c.loads.iter().sum();
                let mean_load = total / n;
                let var = c.loads.iter().map(|l| (l - mean_load).powi(2)).sum::<f64>() / n;
                let entropy = -c
                    .loads
                    .iter()
                    .filter(|&&l| l > 0.0)
                    .map(|l| (l / total) * (l / total).ln())
                    .sum::<f64>();
                let active_mean = c.active_sum / c.tokens.max(1.0);
                let ratio = |x: f64| if mean_load > 0.0 { x } else { 0.0 };
                LayerDiagnostics {
                    layer,
                    loads: c.loads.clone(),
                    tokens: c.tokens,
                    active_mean,
                    active_std: (c.active_sq_sum / c.tokens.max(1.0) - active_mean.powi(2))
                        .max(0.0)
                        .sqrt(),
                    load_cv: ratio(var.sqrt() / mean_load),
                    load_entropy: if n > 1.0 { entropy / n.ln() } else { 1.0 },
                    max_violation: ratio(
                        c.loads.iter().copied().fold(0.0, f64::max) / mean_load - 1.0,
                    ),
                    dead_experts: c.loads.iter().filter(|&&l| l == 0.0).count(),
                    coactivation: c.coactivation.clone(),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use moebench_model::{ForwardOptions, Model};
    use std::path::Path;
    use tch::Device;

    #[test]
    fn counts_on_a_padded_batch_match_hand_values() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny/mixtral");
        let model = Model::load(&dir, Device::Cpu, Kind::Float).unwrap();
        let ids = Tensor::from_slice(&[0i64, 0, 5, 6, 7, 8, 9, 10]).view([2, 4]);
        let mask = Tensor::from_slice(&[0i64, 0, 1, 1, 1, 1, 1, 1]).view([2, 4]);
        let mut diag = RoutingDiagnostics::default();
        let _ = model.forward_hidden(
            &ids,
            Some(&mask),
            None,
            &mut ForwardOptions {
                observer: Some(&mut diag),
                route_override: None,
            },
        );
        let layers = diag.layers();
        assert_eq!(layers.len(), 2);
        for l in &layers {
            // 6 real tokens × top-2.
            assert_eq!(l.tokens, 6.0);
            assert_eq!(l.loads.iter().sum::<f64>(), 12.0);
            assert_eq!(l.active_mean, 2.0);
            assert_eq!(l.active_std, 0.0);
            let n = l.loads.len();
            for i in 0..n {
                assert_eq!(l.coactivation[i * n + i], l.loads[i]);
            }
            let mean = 3.0;
            let max = l.loads.iter().copied().fold(0.0, f64::max);
            assert!((l.max_violation - (max / mean - 1.0)).abs() < 1e-12);
            assert_eq!(
                l.dead_experts,
                l.loads.iter().filter(|&&x| x == 0.0).count()
            );
        }
        assert_eq!(diag.overall_active(), (2.0, 0.0));
        assert_eq!(diag.active_means(2), vec![2.0, 2.0]);
    }
}
