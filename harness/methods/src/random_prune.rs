//! Random expert pruning: every MoE layer keeps a seeded uniform random subset of its experts
//! at the same ratio as the calibrated criteria (Frequency, EAN, REAP) — the floor a saliency
//! criterion has to beat to mean anything. No calibration pass.
//!
//! This module is the whole method: the algorithm and its catalogue entry.
use crate::error::Result;
use crate::method::{pruned, MethodEnv, ModelFacts, TypedMethod};
use crate::prune::{prune_by, Criterion, Keep, PruneReport};
use moebench_core::params::{
    MethodKind, MethodSchema, ParamDefault as D, ParamSpec as P, ParamType as T,
};
use moebench_model::Model;
use serde::Deserialize;

/// Prunes every MoE layer to `keep`, choosing the survivors of layer `l` uniformly at random
/// from a splitmix64 stream seeded with `seed + l` (the same choice on every machine).
pub fn random_prune(model: &mut Model, keep: Keep, seed: u64) -> Result<PruneReport> {
    prune_by(model, Criterion::Random, keep, &|layer, n| {
        let mut state = seed.wrapping_add(layer as u64);
        Ok((0..n)
            .map(|_| {
                state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
                let mut z = state;
                z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                (z ^ (z >> 31)) as f64
            })
            .collect())
    })
}

/// The catalogue entry of [`random_prune`].
pub struct RandomPrune;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RandomPruneParams {
    compression: f64,
    seed: Option<u64>,
}

const METHOD: &str = "random_prune";

impl TypedMethod for RandomPrune {
    type Params = RandomPruneParams;

    fn schema(&self) -> &'static MethodSchema {
        const SCHEMA: MethodSchema = MethodSchema {
            name: METHOD,
            kind: MethodKind::Transform,
            description: "random expert pruning at a uniform ratio per layer: the baseline saliency criteria must beat",
            calibrated: false,
            params: &[
                P::new("compression", T::FRACTION_REMOVED, D::Float(0.5), "fraction of experts removed per layer"),
                P::new("seed", T::int(0), D::Unset, "seed of the draw (default: the suite's seed)"),
            ],
        };
        &SCHEMA
    }

    fn plan(&self, p: &RandomPruneParams, before: &ModelFacts) -> Result<ModelFacts> {
        pruned(METHOD, p.compression, before)
    }

    fn apply(&self, mut model: Model, p: &RandomPruneParams, env: &dyn MethodEnv) -> Result<Model> {
        let keep = Keep::Ratio(1.0 - p.compression);
        random_prune(&mut model, keep, p.seed.unwrap_or(env.seed()))?;
        Ok(model)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scratch::{random_model, ScratchConfig};
    use moebench_model::Ffn;

    #[test]
    fn keeps_a_seeded_half_of_every_layer_and_updates_the_config() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = ScratchConfig {
            num_experts: 8,
            top_k: 2,
            ..ScratchConfig::default()
        };
        let mut a = random_model(&cfg, dir.path()).unwrap();
        let mut b = random_model(&cfg, dir.path()).unwrap();
        let ra = random_prune(&mut a, Keep::Ratio(0.5), 7).unwrap();
        let rb = random_prune(&mut b, Keep::Ratio(0.5), 7).unwrap();
        assert_eq!(ra, rb, "same seed, same choice");
        assert_eq!(a.config.moe.as_ref().unwrap().num_experts, 4);
        for block in &a.layers {
            if let Ffn::Moe(m) = &block.ffn {
                assert_eq!(m.num_experts(), 4);
            }
        }
        let kept: Vec<&Vec<i64>> = ra.layers.iter().map(|l| &l.kept).collect();
        assert!(
            kept.windows(2).any(|w| w[0] != w[1]),
            "layers draw independently: {kept:?}"
        );
    }
}
