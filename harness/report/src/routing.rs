//! Layer × expert heatmaps from the routing logs (`routing/<job>.json`) of finished jobs.
use crate::run::Run;
use crate::svg::{heatmap, Heatmap};
use crate::ReportError;
use moebench_suite::{read_routing, RecordKind};
use std::collections::{BTreeMap, BTreeSet};

/// Tokens routed to each expert of each layer, summed over the jobs of one (model, method).
#[derive(Debug, Clone, PartialEq)]
pub struct RoutingLoads {
    pub model_label: String,
    pub method_label: String,
    pub layers: BTreeMap<usize, Vec<f64>>,
}

/// The routing loads of the finished jobs of `run`, one entry per (model, method) in order of
/// first appearance; empty when the run logged none.
pub fn routing_loads(run: &Run) -> Result<Vec<RoutingLoads>, ReportError> {
    let mut seen = BTreeSet::new();
    let mut out: Vec<RoutingLoads> = Vec::new();
    for done in run.of_kind(RecordKind::JobDone) {
        if !seen.insert(done.job.as_str()) {
            continue;
        }
        let Some(log) = read_routing(&run.dir, &done.job)? else {
            continue;
        };
        let position = out
            .iter()
            .position(|e| e.model_label == log.model_label && e.method_label == log.method_label);
        let entry = match position {
            Some(i) => &mut out[i],
            None => {
                out.push(RoutingLoads {
                    model_label: log.model_label,
                    method_label: log.method_label,
                    layers: BTreeMap::new(),
                });
                out.last_mut().expect("just pushed")
            }
        };
        for layer in log.layers {
            let sums = entry.layers.entry(layer.layer).or_default();
            sums.resize(sums.len().max(layer.loads.len()), 0.0);
            sums.iter_mut().zip(&layer.loads).for_each(|(s, l)| *s += l);
        }
    }
    Ok(out)
}

impl RoutingLoads {
    /// Largest expert load over the mean load of its layer, over all layers (1 = balanced).
    pub fn imbalance(&self) -> f64 {
        self.layers
            .values()
            .filter(|loads| !loads.is_empty())
            .map(|loads| {
                let mean = loads.iter().sum::<f64>() / loads.len() as f64;
                loads.iter().copied().fold(0.0, f64::max) / mean
            })
            .fold(1.0, f64::max)
    }

    /// Each layer's share of tokens per expert, as a heatmap.
    pub fn heatmap(&self) -> Heatmap {
        let layers: Vec<usize> = self.layers.keys().copied().collect();
        let shares: Vec<Vec<f64>> = self
            .layers
            .values()
            .map(|loads| {
                let total: f64 = loads.iter().sum();
                loads
                    .iter()
                    .map(|l| if total > 0.0 { l / total } else { 0.0 })
                    .collect()
            })
            .collect();
        let labels: Vec<String> = layers.iter().map(|l| format!("L{l}")).collect();
        let title = format!(
            "{} / {} (max/mean expert load {:.2})",
            self.model_label,
            self.method_label,
            self.imbalance()
        );
        heatmap(&title, &labels, &shares, &|r, c, share| {
            format!(
                "layer {}, expert {c}: {:.1}% of the layer's tokens",
                layers[r],
                share * 100.0
            )
        })
    }
}
