//! A `measure` job: parameter counts, analytic FLOPs and bytes per token, routing diagnostics of
//! MoE models on the calibration text (whose measured expert counts then feed FLOPs and bytes),
//! the method's own cost, and greedy latency.
use crate::calibration::CalibrationData;
use crate::error::Result;
use crate::latency::latency_measures;
use moebench_methods::calibration::observe;
use moebench_methods::diagnostics::{LayerDiagnostics, RoutingDiagnostics};
use moebench_model::cost::{bytes_per_decode_token, flops_per_token, param_counts};
use moebench_model::device::kind_name;
use moebench_model::{Ffn, Model};
use moebench_suite::measures::{self, Measure};
use moebench_suite::suite::Measure as MeasureSpec;
use moebench_suite::{LayerLoads, Measurement};
use tch::Device;

/// Wall time and peak memory of applying a method (the calibration and merge cost).
#[derive(Debug, Clone, Copy)]
pub struct MethodCost {
    pub seconds: f64,
    pub peak_rss_mib: Option<f64>,
}

/// What a measure job produced: its numbers and, for an MoE model with routing measures, the
/// per-layer expert loads (the report's heatmaps).
pub struct Measured {
    pub measurements: Vec<Measurement>,
    pub loads: Option<Vec<LayerLoads>>,
}

fn value(m: Measure, value: f64, protocol: Option<&str>) -> Measurement {
    Measurement {
        metric: m.name.to_owned(),
        value,
        stderr: None,
        n: None,
        higher_is_better: Some(m.higher_is_better),
        protocol: protocol.map(str::to_owned),
    }
}

/// Measures `model`. `cost` is recorded for every method but the identity (`None` then).
pub fn measure(
    model: &Model,
    calibration: &CalibrationData,
    spec: &MeasureSpec,
    cost: Option<MethodCost>,
) -> Result<Measured> {
    let mut out = Vec::new();
    let mut measured: Option<Vec<f64>> = None;
    let mut loads = None;
    let mut counted = "analytic(context=1, nominal top-k)".to_owned();
    if spec.routing && model.config.moe.is_some() {
        let mut diag = RoutingDiagnostics::default();
        observe(model, &calibration.batches, &mut diag, "routing measures")?;
        let protocol = format!("routing on {} ({})", calibration.source, selectors(model));
        let layers = diag.layers();
        let (mean, std) = diag.overall_active();
        let avg = |f: &dyn Fn(&LayerDiagnostics) -> f64| {
            layers.iter().map(f).sum::<f64>() / layers.len().max(1) as f64
        };
        let p = Some(protocol.as_str());
        out.push(value(measures::ACTIVE_EXPERTS_MEAN, mean, p));
        out.push(value(measures::ACTIVE_EXPERTS_STD, std, p));
        out.push(value(measures::LOAD_CV, avg(&|l| l.load_cv), p));
        out.push(value(measures::MAX_VIOLATION, avg(&|l| l.max_violation), p));
        out.push(value(measures::LOAD_ENTROPY, avg(&|l| l.load_entropy), p));
        let dead = layers.iter().map(|l| l.dead_experts as f64).sum();
        out.push(value(measures::DEAD_EXPERTS, dead, p));
        loads = Some(
            layers
                .iter()
                .map(|l| LayerLoads {
                    layer: l.layer,
                    loads: l.loads.clone(),
                    coactivation: l.coactivation.clone(),
                })
                .collect(),
        );
        measured = Some(diag.active_means(model.num_layers()));
        counted = "analytic(context=1, measured experts per token)".to_owned();
    }
    let measured = measured.as_deref();
    if let Some(cost) = cost {
        let protocol = Some(
            "applying the method once, calibration included (CPU: peak RSS during it, model \
             resident)",
        );
        out.push(value(measures::METHOD_APPLY_S, cost.seconds, protocol));
        if let Some(mib) = cost.peak_rss_mib {
            out.push(value(measures::METHOD_PEAK_RSS_MIB, mib, protocol));
        }
    }
    if spec.latency.enabled {
        let prompt: Vec<i64> = match calibration.batches.first() {
            Some((ids, _)) => Vec::<i64>::try_from(ids.get(0).to_device(Device::Cpu))?,
            None => Vec::new(),
        };
        out.extend(latency_measures(model, &prompt, &spec.latency));
    }
    if spec.params {
        let counts = param_counts(model, measured);
        out.push(value(measures::PARAMS_TOTAL, counts.total as f64, None));
        out.push(value(
            measures::PARAMS_ACTIVE,
            counts.active_per_token,
            Some(&counted),
        ));
    }
    if spec.flops {
        let flops = flops_per_token(model, 1, measured).total;
        out.push(value(measures::FLOPS_PER_TOKEN, flops, Some(&counted)));
        let context = spec.decode_context;
        let bytes = bytes_per_decode_token(model, context, measured).total;
        let protocol = format!(
            "analytic(batch=1, context={context}, {})",
            kind_name(model.kind)
        );
        out.push(value(
            measures::BYTES_PER_DECODE_TOKEN,
            bytes,
            Some(&protocol),
        ));
    }
    Ok(Measured {
        measurements: out,
        loads,
    })
}

/// The distinct selectors of the model's MoE layers, as recorded with routing measures.
pub fn selectors(model: &Model) -> String {
    let mut names: Vec<String> = model
        .layers
        .iter()
        .filter_map(|b| match &b.ffn {
            Ffn::Moe(m) => Some(m.selector.describe()),
            Ffn::Dense(_) => None,
        })
        .collect();
    names.dedup();
    names.join("; ")
}
