//! The method catalogue: every method a suite, `moebench apply`, `moebench train` or a saved
//! router file can name, each registered once in [`CATALOGUE`] (what a method is to its callers
//! is [`crate::method`]).
//!
//! Adding a method: its module (the algorithm and an `impl TypedMethod`), one line in
//! [`CATALOGUE`], a test and a row in docs (the docs table is checked against [`CATALOGUE`] by a
//! test). Methods reach what is not the model — calibration batches, texts, other models — only
//! through [`MethodEnv`], which the runner implements.
mod building;
mod compression;
mod routing;

use crate::error::{MethodError, Result};
use moebench_core::params::MethodSchema;

pub use crate::method::*;
pub use crate::random_prune::RandomPrune;
pub use crate::topk_min_p::TopKMinPMethod;
pub use building::{
    Btx, Dense, Dense2Moe, Dume, DumePlus, LayerPrune, LlmStreamline, PruneThenUpcycle, Train,
    Upcycle, WeightAverage,
};
pub use compression::{EanPrune, FreqPrune, HcSmoe, MSmoe, Ream, Reap};
pub use routing::{DTopP, ExpertChoice, OracleRouting, RandomRouting, TopK, TopP, Usmoe};

/// Every method, in the order `moebench methods` lists them.
pub static CATALOGUE: &[&dyn Method] = &[
    &Dense,
    &Upcycle,
    &Train,
    &TopK,
    &TopP,
    &TopKMinPMethod,
    &DTopP,
    &ExpertChoice,
    &Usmoe,
    &RandomRouting,
    &OracleRouting,
    &FreqPrune,
    &EanPrune,
    &Reap,
    &RandomPrune,
    &Ream,
    &MSmoe,
    &HcSmoe,
    &Dume,
    &DumePlus,
    &Btx,
    &WeightAverage,
    &Dense2Moe,
    &LayerPrune,
    &PruneThenUpcycle,
    &LlmStreamline,
];

/// The method called `name`, or an error naming the closest one.
pub fn lookup(name: &str) -> Result<&'static dyn Method> {
    CATALOGUE
        .iter()
        .copied()
        .find(|m| m.name() == name)
        .ok_or_else(|| MethodError::UnknownMethod {
            name: name.into(),
            hint: moebench_core::suggest::closest(name, names())
                .map(|best| format!("did you mean `{best}`? "))
                .unwrap_or_default(),
            known: names().join(", "),
        })
}

/// The names of every method, in catalogue order.
pub fn names() -> Vec<&'static str> {
    CATALOGUE.iter().map(|m| m.name()).collect()
}

/// Every method's schema, in catalogue order (the suite validator's view of the catalogue).
pub fn schemas() -> Vec<&'static MethodSchema> {
    CATALOGUE.iter().map(|m| m.schema()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use moebench_core::params::{markdown_table, Bound, ParamDefault, ParamType};
    use moebench_model::Model;
    use serde_json::{Map, Value};

    /// A number within the bounds.
    fn within(min: Option<Bound>, max: Option<Bound>) -> f64 {
        let lo = match min {
            Some(Bound::Inclusive(b)) => return b,
            Some(Bound::Exclusive(b)) => b,
            None => 0.0,
        };
        match max {
            Some(Bound::Inclusive(b) | Bound::Exclusive(b)) => (lo + b) / 2.0,
            None => lo + 1.0,
        }
    }

    /// A value of the parameter's type within its range: the default where there is one.
    fn example(p: &moebench_core::params::ParamSpec) -> Option<Value> {
        use serde_json::json;
        if !matches!(
            p.default,
            ParamDefault::Required | ParamDefault::Unset | ParamDefault::FromModel(_)
        ) {
            return None; // filled in by the schema
        }
        Some(match p.ty {
            ParamType::Bool => json!(true),
            ParamType::Int { min, .. } => json!(min.max(1)),
            ParamType::Float { min, max } | ParamType::FloatOrList { min, max } => {
                json!(within(min, max))
            }
            ParamType::Choice(c) => json!(c[0]),
            ParamType::Text => json!("x.txt"),
            ParamType::IntList { min } => json!([min]),
            ParamType::FloatList { min, max } => json!([within(min, max)]),
            ParamType::TextList => json!(["a", "b"]),
        })
    }

    #[test]
    fn names_are_unique_and_lookup_suggests() {
        let mut names = names();
        let n = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), n);
        let e = lookup("reamm").err().unwrap().to_string();
        assert!(
            e.starts_with("unknown method `reamm` (did you mean `ream`?"),
            "{e}"
        );
    }

    #[test]
    fn every_schema_matches_its_typed_parameter_struct() {
        // With every parameter given (defaults, or an example value), each method's typed
        // struct deserializes: the schema and the struct name the same parameters.
        for method in CATALOGUE {
            let mut given = Map::new();
            for p in method.schema().params {
                if let Some(v) = example(p) {
                    given.insert(p.name.into(), v);
                }
            }
            let params =
                Params::check(*method, &given).unwrap_or_else(|e| panic!("{}: {e}", method.name()));
            method
                .check_typed(&params)
                .unwrap_or_else(|e| panic!("{}: {e}", method.name()));
        }
    }

    /// A tiny random MoE: 8 experts, top-2, 2 layers.
    fn tiny_moe() -> (tempfile::TempDir, Model) {
        let dir = tempfile::tempdir().unwrap();
        let cfg = crate::scratch::ScratchConfig {
            num_layers: 2,
            num_experts: 8,
            top_k: 2,
            ..Default::default()
        };
        let model = crate::scratch::random_model(&cfg, dir.path()).unwrap();
        (dir, model)
    }

    fn selectors_of(
        model: &Model,
        name: &str,
        params: Value,
    ) -> Result<crate::routing::LayerSelectors> {
        let m = lookup(name)?;
        let params = Params::check(m, params.as_object().unwrap())?;
        m.plan(&params, &ModelFacts::of(&model.config))?;
        m.selectors(model, &params).expect("a router swap")
    }

    #[test]
    fn router_swaps_build_their_selectors_with_the_models_defaults() {
        use serde_json::json;
        let (_dir, model) = tiny_moe();
        let describe =
            |name: &str, v: Value| selectors_of(&model, name, v).unwrap().selectors[0].describe();
        assert_eq!(describe("topk", json!({})), "topk(k=2,renorm)");
        assert_eq!(describe("topp", json!({})), "topp(p=0.4)");
        assert_eq!(
            describe("expert_choice", json!({"mode": "decode_batch"})),
            "expert_choice(c=2,mode=decode_batch)"
        );
        assert_eq!(
            describe("usmoe", json!({"k": 1.5})),
            "usmoe(k=1.5,r=0.5,weights=row_normalised,mode=full_sequence)"
        );
        assert_eq!(
            describe("usmoe", json!({"mode": "causal", "threshold": 0.25})),
            "usmoe(k=2,r=0.5,weights=row_normalised,mode=causal(thr=0.250000))"
        );
        assert_eq!(
            describe("topk_min_p", json!({"min_p": 0.5})),
            "topk_min_p(k=2,min_p=0.5,renorm)"
        );
        let global = selectors_of(&model, "dtop_p", json!({})).unwrap();
        assert_eq!((global.selectors.len(), global.controllers.len()), (2, 1));
        let per_layer = selectors_of(
            &model,
            "dtop_p",
            json!({"per_layer": true, "fixed_scale": 1.0}),
        )
        .unwrap();
        assert_eq!(per_layer.controllers.len(), 2);
        assert!(per_layer.selectors[0].parameters().is_empty());
        assert_eq!(global.selectors[1].parameters().len(), 1);
    }

    #[test]
    fn router_swaps_reject_bad_params_naming_them() {
        use serde_json::json;
        let (_dir, model) = tiny_moe();
        let err = |name: &str, v: Value| selectors_of(&model, name, v).unwrap_err().to_string();
        assert!(err("topp", json!({"p": 1.5})).contains("`p` is 1.5; allowed: (0, 1]"));
        assert!(err("topp", json!({"q": 0.5})).contains("`q` is unknown"));
        assert!(err("topk", json!({"k": 9})).contains("`k` is 9; the model has 8 experts"));
        assert!(err("usmoe", json!({"k": 0.5})).contains("`k` is 0.5; allowed: [1, ∞)"));
        assert!(err("usmoe", json!({"r": -0.1})).contains("`r` is -0.1; allowed: [0, 1]"));
        assert!(err("usmoe", json!({"mode": "batch"})).contains("`mode` is \"batch\""));
        // Causal without a threshold is fitted when applied; only building it bare is refused.
        assert!(err("usmoe", json!({"mode": "causal"}))
            .contains("`threshold` is fitted on the calibration text when the method is applied"));
        assert!(err(
            "usmoe",
            json!({"mode": "causal", "threshold": [0.1, 0.2, 0.3]})
        )
        .contains("`threshold` has 3 values"));
        assert!(err("usmoe", json!({"threshold": 0.1})).contains("only used with mode=causal"));
        assert!(err("expert_choice", json!({"capacity": 0})).contains("`capacity` is 0"));
        assert!(err("dtop_p", json!({"fixed_scale": [1.0, 2.0, 3.0]}))
            .contains("`fixed_scale` has 3 values"));
    }

    #[test]
    fn a_saved_dtop_p_router_records_its_calibrated_state() {
        use serde_json::json;
        let (_dir, mut model) = tiny_moe();
        let m = lookup("dtop_p").unwrap();
        let params = Params::check(
            m,
            json!({"per_layer": true, "fixed_scale": [1.5, 2.5]})
                .as_object()
                .unwrap(),
        )
        .unwrap();
        let built = m.selectors(&model, &params).unwrap().unwrap();
        for (c, p) in built.controllers.iter().zip([0.3, 0.7]) {
            let mut c = c.lock().unwrap();
            c.p = p;
            c.frozen = true;
        }
        install(&mut model, built).unwrap();
        let saved = m.saved_router(&model, &params).unwrap();
        assert_eq!(saved.frozen_p, [0.3, 0.7]);
        assert_eq!(saved.params["fixed_scale"], json!([1.5, 2.5]));
        let topk = lookup("topk").unwrap();
        let saved = topk
            .saved_router(&model, &Params::check(topk, &Map::new()).unwrap())
            .unwrap();
        assert!(saved.frozen_p.is_empty() && saved.params.is_empty());
        let reap = lookup("reap").unwrap();
        assert!(reap
            .saved_router(&model, &Params::check(reap, &Map::new()).unwrap())
            .is_none());
    }

    /// `oracle_routing` sends every real token of every MoE layer to its one expert, and its
    /// plan refuses an expert the model does not have.
    #[test]
    fn oracle_routing_routes_every_token_to_its_expert() {
        use serde_json::json;
        let (_dir, mut model) = tiny_moe();
        let m = lookup("oracle_routing").unwrap();
        let experts = model.moe_layers().next().unwrap().1.num_experts() as i64;
        let params =
            |e: i64| Params::check(m, json!({ "expert": e }).as_object().unwrap()).unwrap();
        let facts = crate::method::ModelFacts::of(&model.config);
        let e = m.plan(&params(experts), &facts).unwrap_err().to_string();
        assert!(e.contains("expert"), "{e}");
        m.plan(&params(experts - 1), &facts).unwrap();
        let built = m.selectors(&model, &params(1)).unwrap().unwrap();
        install(&mut model, built).unwrap();
        use tch::{Device, Kind, Tensor};
        let logits = Tensor::randn([2, 5, experts], (Kind::Float, Device::Cpu));
        for (_, moe) in model.moe_layers() {
            let s = moe.selector.select(&logits, None);
            let picked = s.mask.to_kind(Kind::Int64).argmax(-1, false);
            assert!(picked.eq(1).all().int64_value(&[]) == 1);
            assert_eq!(
                s.mask
                    .to_kind(Kind::Int64)
                    .sum(Kind::Int64)
                    .int64_value(&[]),
                10
            );
        }
    }

    #[test]
    fn docs_table_lists_the_catalogue() {
        let docs = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/suite-format.md"),
        )
        .expect("docs/suite-format.md");
        let table = markdown_table(&schemas());
        assert!(
            docs.contains(&table),
            "docs/suite-format.md's method table is out of date; replace it with:\n{table}"
        );
    }
}
