//! The router file: a checkpoint whose router is not its config's top-k (trained here with
//! another router, or saved by `moebench apply` after a router swap) records it in
//! [`ROUTER_FILE`], and every moebench command installs it on load, so the model routes as it
//! was trained or compressed. transformers ignores the file (see docs/methods.md).
use crate::error::{bail, Context, Result};
use moebench_methods::catalogue::{install, lookup, Method, Params};
use moebench_model::Model;
use serde_json::{Map, Value};
use std::path::Path;

pub const ROUTER_FILE: &str = "moebench_router.json";

/// The contents of [`ROUTER_FILE`].
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavedRouter {
    /// A router-swap method of the catalogue.
    pub name: String,
    pub params: Map<String, Value>,
    /// DTop-p: the frozen threshold of each controller (one, or one per layer).
    #[serde(default)]
    pub frozen_p: Vec<f64>,
}

impl SavedRouter {
    /// The router file of a router swap `method` as it is on `model` now (after calibration or
    /// training); `None` for a method that is not a router swap.
    pub fn of(method: &dyn Method, model: &Model, params: &Params) -> Option<SavedRouter> {
        method.saved_router(model, params).map(|parts| SavedRouter {
            name: method.name().to_owned(),
            params: parts.params,
            frozen_p: parts.frozen_p,
        })
    }

    /// Builds the saved router on `model` (checked like a suite method) and installs it; returns
    /// the selectors' description.
    pub fn install(&self, model: &mut Model) -> Result<String> {
        let method = lookup(&self.name)?;
        let params = Params::check(method, &self.params)?;
        let Some(built) = method.selectors(model, &params) else {
            bail!("`{}` is not a router swap", self.name);
        };
        let built = built?;
        if built.controllers.len() != self.frozen_p.len() {
            bail!(
                "{} frozen thresholds for {} controllers",
                self.frozen_p.len(),
                built.controllers.len()
            );
        }
        for (c, p) in built.controllers.iter().zip(&self.frozen_p) {
            let mut c = c.lock().expect("controller lock");
            c.p = *p;
            c.frozen = true;
        }
        let description = built
            .selectors
            .first()
            .map(|s| s.describe())
            .unwrap_or_default();
        install(model, built)?;
        Ok(description)
    }

    pub fn write(&self, dir: &Path) -> Result<()> {
        let path = dir.join(ROUTER_FILE);
        std::fs::write(&path, serde_json::to_string_pretty(self)? + "\n")
            .map_err(crate::error::RunnerError::io(&path))
    }
}

/// Installs the router saved with the checkpoint in `dir`, if any; returns its description.
pub fn restore_router(model: &mut Model, dir: &Path) -> Result<Option<String>> {
    let path = dir.join(ROUTER_FILE);
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(None);
    };
    let saved: SavedRouter =
        serde_json::from_str(&text).with_context(|| format!("reading {}", path.display()))?;
    saved
        .install(model)
        .with_context(|| format!("installing the router saved in {}", path.display()))
        .map(Some)
}
