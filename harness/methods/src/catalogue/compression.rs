//! Expert compression: pruning by a calibration saliency (Freq, EAN, REAP; docs/methods.md §7.6) and
//! merging (REAM §6, M-SMoE and HC-SMoE §7.7), all at one uniform ratio per MoE layer.
use crate::calibration::calibrate;
use crate::error::Result;
use crate::merge::{
    hc_smoe, m_smoe, ream, HcSmoeConfig, MSmoeConfig, PcaSolver, ReamConfig, Saliency,
    SimilarityForm,
};
use crate::method::{moe_layers, pruned, MethodEnv, ModelFacts, TypedMethod};
use crate::prune::{prune_model, Criterion, Keep};
use moebench_core::params::{
    MethodKind, MethodSchema, ParamDefault as D, ParamSpec as P, ParamType as T,
};
use moebench_model::Model;
use serde::Deserialize;

const fn compression(default: f64) -> P {
    P::new(
        "compression",
        T::FRACTION_REMOVED,
        D::Float(default),
        "fraction of experts removed per layer (⌊N·c⌋)",
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompressionParams {
    compression: f64,
}

/// A pruning criterion as a method: calibrate, then keep the most salient experts per layer.
macro_rules! pruning_method {
    ($ty:ident, $name:literal, $criterion:expr, $description:literal) => {
        pub struct $ty;

        impl TypedMethod for $ty {
            type Params = CompressionParams;

            fn schema(&self) -> &'static MethodSchema {
                const SCHEMA: MethodSchema = MethodSchema {
                    name: $name,
                    kind: MethodKind::Transform,
                    description: $description,
                    calibrated: true,
                    params: &[compression(0.5)],
                };
                &SCHEMA
            }

            fn plan(&self, p: &CompressionParams, before: &ModelFacts) -> Result<ModelFacts> {
                pruned($name, p.compression, before)
            }

            fn apply(
                &self,
                mut model: Model,
                p: &CompressionParams,
                env: &dyn MethodEnv,
            ) -> Result<Model> {
                let stats = calibrate(&model, env.calibration())?;
                prune_model(
                    &mut model,
                    &stats,
                    $criterion,
                    Keep::Ratio(1.0 - p.compression),
                )?;
                Ok(model)
            }
        }
    };
}

pruning_method!(
    FreqPrune,
    "freq_prune",
    Criterion::Frequency,
    "expert pruning by routing frequency on the calibration text"
);
pruning_method!(
    EanPrune,
    "ean_prune",
    Criterion::Ean,
    "expert pruning by EAN, the summed expert-output norm (Jaiswal et al.)"
);
pruning_method!(
    Reap,
    "reap",
    Criterion::Reap,
    "REAP: expert pruning by the mean router-weighted expert-output norm (arXiv 2510.13999)"
);

/// REAM (docs/methods.md §6).
pub struct Ream;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReamParams {
    compression: f64,
    group_size: Option<usize>,
    sequential: bool,
    merging: String,
    saliency: String,
    logit_similarity: bool,
    gated_outputs: bool,
    similarity: String,
    pca_solver: String,
}

impl TypedMethod for Ream {
    type Params = ReamParams;

    fn schema(&self) -> &'static MethodSchema {
        const SCHEMA: MethodSchema = MethodSchema {
            name: "ream",
            kind: MethodKind::Transform,
            description: "REAM: router-weighted expert activation merging, layer by layer (§6)",
            calibrated: true,
            params: &[
                compression(0.25),
                P::new("group_size", T::int(0), D::FromModel("experts, at most 16"), "group size C counting the centroid; 0: nearest-centroid grouping (pseudo-pruning group size, §6.3 step 3)"),
                P::new("sequential", T::Bool, D::Bool(true), "calibrate layer ℓ on the outputs of the merged layers < ℓ (§6.3 step 7); false: one-shot"),
                P::new("merging", T::Choice(&["logits+weights", "none"]), D::Text("logits+weights"), "`none`: keep the centroids unmerged (the code's pseudo-pruning)"),
                P::new("saliency", T::Choice(&["reap", "reap_code", "frequency"]), D::Text("reap"), "centroid saliency: paper Eq. 3, the code's σ², or token counts (§6.3 step 2, §6.7)"),
                P::new("logit_similarity", T::Bool, D::Bool(true), "include the gate-logit similarity in the expert distance (ablation, §6.3 step 4)"),
                P::new("gated_outputs", T::Bool, D::Bool(true), "gate expert outputs by σ_i(x) in the output similarity (ablation, §6.3 step 4)"),
                P::new("similarity", T::Choice(&["code", "paper"]), D::Text("code"), "similarity definitions: the official code's (cosine of token-mean outputs, logit-distance profile) or the paper text's (mean per-token cosine, logit cosine) (§6.7 item 2)"),
                P::new("pca_solver", T::Choice(&["randomized", "exact"]), D::Text("randomized"), "PCA axes of the weight alignment: the code's pca_lowrank (seeded; approximate) or exact (eigh of the Gram; 1.6x the job's time at SmolLM2 scale)"),
            ],
        };
        &SCHEMA
    }

    fn plan(&self, p: &ReamParams, before: &ModelFacts) -> Result<ModelFacts> {
        pruned("ream", p.compression, before)
    }

    fn apply(&self, mut model: Model, p: &ReamParams, env: &dyn MethodEnv) -> Result<Model> {
        let mut cfg = ReamConfig::default();
        cfg.merge.keep = Keep::Ratio(1.0 - p.compression);
        let experts = moe_layers(&model, "ream")?[0].num_experts() as usize;
        cfg.group_size = p.group_size.unwrap_or(cfg.group_size.min(experts));
        cfg.sequential = p.sequential;
        cfg.prune_only = p.merging == "none";
        cfg.saliency = match p.saliency.as_str() {
            "reap_code" => Saliency::ReapCode,
            "frequency" => Saliency::Frequency,
            _ => Saliency::Reap,
        };
        cfg.logit_similarity = p.logit_similarity;
        cfg.gated_outputs = p.gated_outputs;
        cfg.similarity = match p.similarity.as_str() {
            "paper" => SimilarityForm::Paper,
            _ => SimilarityForm::Code,
        };
        cfg.merge.pca_solver = match p.pca_solver.as_str() {
            "exact" => PcaSolver::Exact,
            _ => PcaSolver::Randomized,
        };
        ream(&mut model, env.calibration(), &cfg)?;
        Ok(model)
    }
}

/// M-SMoE (docs/methods.md §7.7).
pub struct MSmoe;

impl TypedMethod for MSmoe {
    type Params = CompressionParams;

    fn schema(&self) -> &'static MethodSchema {
        const SCHEMA: MethodSchema = MethodSchema {
            name: "m_smoe",
            kind: MethodKind::Transform,
            description: "M-SMoE: the most frequent experts absorb their most similar ones, weight-matched (MC-SMoE)",
            calibrated: true,
            params: &[compression(0.5)],
        };
        &SCHEMA
    }

    fn plan(&self, p: &CompressionParams, before: &ModelFacts) -> Result<ModelFacts> {
        pruned("m_smoe", p.compression, before)
    }

    fn apply(&self, mut model: Model, p: &CompressionParams, env: &dyn MethodEnv) -> Result<Model> {
        let mut cfg = MSmoeConfig::default();
        cfg.merge.keep = Keep::Ratio(1.0 - p.compression);
        m_smoe(&mut model, env.calibration(), &cfg)?;
        Ok(model)
    }
}

/// HC-SMoE (docs/methods.md §7.7).
pub struct HcSmoe;

impl TypedMethod for HcSmoe {
    type Params = CompressionParams;

    fn schema(&self) -> &'static MethodSchema {
        const SCHEMA: MethodSchema = MethodSchema {
            name: "hc_smoe",
            kind: MethodKind::Transform,
            description:
                "HC-SMoE: hierarchical clustering of expert outputs, frequency-weighted merging",
            calibrated: true,
            params: &[compression(0.5)],
        };
        &SCHEMA
    }

    fn plan(&self, p: &CompressionParams, before: &ModelFacts) -> Result<ModelFacts> {
        pruned("hc_smoe", p.compression, before)
    }

    fn apply(&self, mut model: Model, p: &CompressionParams, env: &dyn MethodEnv) -> Result<Model> {
        let mut cfg = HcSmoeConfig::default();
        cfg.merge.keep = Keep::Ratio(1.0 - p.compression);
        hc_smoe(&mut model, env.calibration(), &cfg)?;
        Ok(model)
    }
}
