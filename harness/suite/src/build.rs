//! Models a suite builds itself: a random MoE (or dense) model from a config, trained on local
//! text with a chosen router — the tiny Shakespeare MoEs whose experts actually differ, which
//! routing swaps and expert compression need to show anything (an upcycled model has identical
//! experts until it is trained). `moebench train` takes the same settings as flags.
//!
//! A built model is a content-hashed artefact: [`TrainSpec::hash`] covers every setting and the
//! bytes of the training text, so a rerun (or another job of the same suite) reuses it and a
//! changed setting builds a new one.
use moebench_core::params::canonical_json;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

/// A `models[].build` setting that cannot be used; the message names the setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BuildError(pub String);

/// Settings of a from-scratch model and its training run (`models[].build` in a suite).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainSpec {
    /// Start from this suite model (its label; one listed earlier) instead of a random one:
    /// a fine-tune, e.g. DUME's domain experts of one base. The config keys are then unused.
    pub from: Option<String>,
    /// With `from`: sparse-upcycle the starting (dense) model into `experts` experts with
    /// top-`top_k` before training — `upcycle → train` as one cached model.
    pub upcycle: bool,
    pub hidden_size: usize,
    pub layers: usize,
    pub heads: usize,
    /// Expert (and dense MLP) width.
    pub intermediate_size: usize,
    /// Experts per MoE layer; 0 builds a dense model.
    pub experts: usize,
    /// Top-k of the model's config (the router of `topk`).
    pub top_k: usize,
    /// Router used in training: topk, topp, expert_choice, usmoe or dtop_p.
    pub router: String,
    /// The router's parameters, e.g. `{p: 0.4}` or `{target: 2, per_layer: true}`.
    pub router_params: Map<String, Value>,
    /// Training text files (relative to the suite file); empty: the Shakespeare plays.
    pub text: Vec<PathBuf>,
    /// Fraction of the text (its end) held out for the reported held-out loss.
    pub holdout: f64,
    pub steps: usize,
    pub batch_size: usize,
    pub seq_len: usize,
    pub lr: f64,
    pub warmup: usize,
    /// Switch load-balancing loss coefficient.
    pub load_balance: f64,
    pub z_loss: f64,
    /// Dynamic (router entropy) loss coefficient (Huang et al.).
    pub entropy: f64,
    /// Seeds the initial weights and the data order.
    pub seed: u64,
}

impl Default for TrainSpec {
    /// docs/methods.md §5.6's miniature: 4 layers, H = 128, 16 experts, top-2.
    fn default() -> Self {
        Self {
            from: None,
            upcycle: false,
            hidden_size: 128,
            layers: 4,
            heads: 4,
            intermediate_size: 128,
            experts: 16,
            top_k: 2,
            router: "topk".into(),
            router_params: Map::new(),
            text: Vec::new(),
            holdout: 0.02,
            steps: 1000,
            batch_size: 16,
            seq_len: 128,
            lr: 1e-3,
            warmup: 50,
            load_balance: 0.01,
            z_loss: 0.0,
            entropy: 0.0,
            seed: 0,
        }
    }
}

impl TrainSpec {
    /// Checks the values that do not need the model runtime; the message names the setting.
    pub fn validate(&self) -> Result<(), BuildError> {
        if self.upcycle && self.from.is_none() {
            return Err(BuildError(
                "`upcycle` needs `from` (the dense model to upcycle)".into(),
            ));
        }
        if self.from.is_some() && !self.upcycle {
            return self.validate_training();
        }
        let positive = [
            ("hidden_size", self.hidden_size),
            ("layers", self.layers),
            ("heads", self.heads),
            ("intermediate_size", self.intermediate_size),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(BuildError(format!("`{name}` must be ≥ 1")));
        }
        if !self.hidden_size.is_multiple_of(self.heads) {
            return Err(BuildError(format!(
                "`hidden_size` ({}) must be a multiple of `heads` ({})",
                self.hidden_size, self.heads
            )));
        }
        if self.experts > 0 && !(1..=self.experts).contains(&self.top_k) {
            return Err(BuildError(format!(
                "`top_k` ({}) must be in 1..={} (`experts`)",
                self.top_k, self.experts
            )));
        }
        if self.experts == 0 && (self.router != "topk" || !self.router_params.is_empty()) {
            return Err(BuildError(format!(
                "`router: {}` needs an MoE model (`experts` ≥ 1)",
                self.router
            )));
        }
        self.validate_training()
    }

    /// The training settings' checks, which apply whatever the model starts from.
    pub fn validate_training(&self) -> Result<(), BuildError> {
        if self.steps == 0 || self.batch_size == 0 {
            return Err(BuildError("`steps` and `batch_size` must be ≥ 1".into()));
        }
        if self.seq_len < 2 {
            return Err(BuildError("`seq_len` must be ≥ 2".into()));
        }
        if !(0.0..0.5).contains(&self.holdout) {
            return Err(BuildError(format!(
                "`holdout` ({}) must be in [0, 0.5)",
                self.holdout
            )));
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return Err(BuildError(format!(
                "`lr` ({}) must be a positive number",
                self.lr
            )));
        }
        for (name, v) in [
            ("load_balance", self.load_balance),
            ("z_loss", self.z_loss),
            ("entropy", self.entropy),
        ] {
            if !(v >= 0.0 && v.is_finite()) {
                return Err(BuildError(format!("`{name}` ({v}) must be a number ≥ 0")));
            }
        }
        Ok(())
    }

    /// sha256 of the canonical JSON of the settings, the training texts' bytes (`texts`: the
    /// files actually read, in order), the sha of the model it starts `from` (if any) and the
    /// harness version: the built model's identity.
    pub fn hash(&self, texts: &[PathBuf], from_sha: Option<&str>) -> std::io::Result<String> {
        let mut text_shas = Vec::new();
        for path in texts {
            text_shas.push(crate::sha256_hex(&std::fs::read(path)?));
        }
        let mut spec = self.clone();
        // The bytes identify the text, not where the checkout lives.
        spec.text.clear();
        let fields = serde_json::json!({
            "spec": spec,
            "text_sha256": text_shas,
            "from_sha": from_sha,
            "harness_version": crate::HARNESS_VERSION,
        });
        Ok(crate::sha256_hex(canonical_json(&fields).as_bytes()))
    }

    /// The spec with relative `text` paths resolved against `dir` (the suite's directory).
    pub fn resolved(mut self, dir: &Path) -> Self {
        self.text = self.text.iter().map(|p| dir.join(p)).collect();
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_covers_settings_and_text_bytes_not_paths() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.txt"), dir.path().join("b.txt"));
        std::fs::write(&a, "to be or not to be").unwrap();
        std::fs::write(&b, "to be or not to be").unwrap();
        let spec = TrainSpec::default();
        let base = spec.hash(std::slice::from_ref(&a), None).unwrap();
        assert_eq!(base, spec.hash(std::slice::from_ref(&b), None).unwrap());
        let tuned = spec.hash(std::slice::from_ref(&a), Some("parent")).unwrap();
        assert_ne!(base, tuned);
        assert_ne!(
            tuned,
            spec.hash(std::slice::from_ref(&a), Some("other")).unwrap()
        );
        let more_steps = TrainSpec {
            steps: 1001,
            ..TrainSpec::default()
        };
        assert_ne!(
            base,
            more_steps.hash(std::slice::from_ref(&a), None).unwrap()
        );
        std::fs::write(&b, "that is the question").unwrap();
        assert_ne!(base, spec.hash(&[b], None).unwrap());
    }

    #[test]
    fn hash_does_not_depend_on_the_key_order_of_router_params() {
        let dir = tempfile::tempdir().unwrap();
        let text = dir.path().join("t.txt");
        std::fs::write(&text, "to be").unwrap();
        let with = |params: &str| TrainSpec {
            router: "dtop_p".into(),
            router_params: serde_json::from_str(params).unwrap(),
            ..TrainSpec::default()
        };
        let a = with(r#"{"target": 2, "per_layer": true}"#);
        let b = with(r#"{"per_layer": true, "target": 2}"#);
        let texts = std::slice::from_ref(&text);
        assert_eq!(a.hash(texts, None).unwrap(), b.hash(texts, None).unwrap());
    }

    #[test]
    fn validate_names_the_bad_setting() {
        let bad = |spec: TrainSpec| spec.validate().unwrap_err().0;
        let d = TrainSpec::default;
        assert!(bad(TrainSpec { steps: 0, ..d() }).contains("`steps`"));
        let fine_tune = || TrainSpec {
            from: Some("base".into()),
            ..d()
        };
        assert!(bad(TrainSpec {
            lr: 0.0,
            ..fine_tune()
        })
        .contains("`lr`"));
        // The config keys do not apply to a fine-tune.
        assert!(TrainSpec {
            experts: 0,
            router: "topp".into(),
            ..fine_tune()
        }
        .validate()
        .is_ok());
        // Upcycling uses `experts` and `top_k`, and needs a model to start from.
        assert!(bad(TrainSpec {
            upcycle: true,
            ..d()
        })
        .contains("needs `from`"));
        assert!(bad(TrainSpec {
            upcycle: true,
            experts: 2,
            top_k: 3,
            ..fine_tune()
        })
        .contains("`top_k` (3)"));
        assert!(bad(TrainSpec { top_k: 17, ..d() }).contains("`top_k`"));
        assert!(bad(TrainSpec {
            hidden_size: 130,
            ..d()
        })
        .contains("multiple of `heads`"));
        assert!(bad(TrainSpec {
            experts: 0,
            router: "topp".into(),
            ..d()
        })
        .contains("needs an MoE model"));
        assert!(bad(TrainSpec { lr: -1.0, ..d() }).contains("`lr`"));
        assert!(d().validate().is_ok());
    }
}
