//! What methods may read besides the model ([`MethodEnv`]): the calibration batches, texts and
//! other models, resolved against the suite (or, for `moebench apply`, the working directory).
use crate::calibration::{calibration_data, read_text, CalibrationData};
use crate::error::{Context, Result};
use moebench_hub::HubConfig;
use moebench_methods::catalogue::{Batch, EnvResult, MethodEnv};
use moebench_model::{resolve_checkpoint, Checkpoint, Model, Tokenizer};
use moebench_suite::suite::Calibration;
use std::path::Path;
use tch::{Device, Kind};

/// A suite model's checkpoint by label (built first if the suite builds it); `None` for a name
/// that is not a label of the suite.
pub type SuiteModels<'a> = dyn Fn(&str) -> Option<Result<Checkpoint>> + 'a;

pub struct RunEnv<'a> {
    pub calibration: &'a CalibrationData,
    pub calibration_spec: &'a Calibration,
    pub seed: u64,
    /// Relative texts and model directories resolve against it (the suite's directory).
    pub base_dir: &'a Path,
    pub hub: &'a HubConfig,
    pub tokenizer: Option<&'a Tokenizer>,
    pub suite_models: &'a SuiteModels<'a>,
}

impl RunEnv<'_> {
    fn tokenizer_for(&self, what: &str) -> Result<&Tokenizer> {
        self.tokenizer.ok_or_else(|| {
            crate::error::RunnerError::invalid(format!(
                "{what}: the model has no tokenizer.json to encode it with"
            ))
        })
    }

    fn encode_files(&self, paths: &[std::path::PathBuf]) -> Result<Vec<i64>> {
        let tokenizer = self.tokenizer_for("the training text")?;
        let mut tokens = Vec::new();
        for path in paths {
            let text = read_text(path)?;
            tokens.extend(tokenizer.encode(&text, false)?);
        }
        Ok(tokens)
    }
}

impl MethodEnv for RunEnv<'_> {
    fn calibration(&self) -> &[Batch] {
        &self.calibration.batches
    }

    fn calibration_of(&self, text: &str, model: &Model) -> EnvResult<Vec<Batch>> {
        let spec = Calibration {
            source: Some(self.base_dir.join(text)),
            mix: Vec::new(),
            ..self.calibration_spec.clone()
        };
        Ok(calibration_data(&spec, model, self.tokenizer)?.batches)
    }

    fn seed(&self) -> u64 {
        self.seed
    }

    fn tokenizer(&self) -> Option<&Tokenizer> {
        self.tokenizer
    }

    fn text_tokens(&self, text: &str) -> EnvResult<Vec<i64>> {
        Ok(self.encode_files(&[self.base_dir.join(text)])?)
    }

    fn default_training_tokens(&self) -> EnvResult<Vec<i64>> {
        Ok(self.encode_files(&crate::paths::default_training_texts()?)?)
    }

    fn load_model(&self, reference: &str, device: Device, kind: Kind) -> EnvResult<Model> {
        if let Some(checkpoint) = (self.suite_models)(reference) {
            return Ok(checkpoint?.load(device, kind)?);
        }
        let local = self.base_dir.join(reference);
        let reference = match local.is_dir() {
            true => local.display().to_string(),
            false => reference.to_owned(),
        };
        let checkpoint = resolve_checkpoint(self.hub, &reference)
            .with_context(|| format!("resolving {reference}"))?;
        Ok(checkpoint.load(device, kind)?)
    }
}
