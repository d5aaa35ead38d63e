//! Training a checkpoint from a suite's `models[].build` (or `moebench train`'s flags): a random
//! MoE (or dense) model from a config with a byte-level tokenizer, or a loaded model optionally
//! upcycled, trained with any router-swap method of the catalogue, saved as a checkpoint that
//! suites evaluate like any other. DTop-p's PI controller steps once per optimizer step.
use crate::error::{bail, Context, Result, RunnerError};
use crate::router_file::SavedRouter;
use moebench_hub::HubConfig;
use moebench_methods::catalogue::{install, lookup, Params};
use moebench_methods::scratch::{random_model, write_byte_tokenizer, ScratchConfig};
use moebench_methods::train::{mean_nll, train, StepStats, TrainConfig};
use moebench_methods::upcycle::{upcycle, UpcycleConfig};
use moebench_model::{resolve_checkpoint, Ffn, Model, Tokenizer};
use moebench_suite::build::TrainSpec;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::{Device, Kind};

/// What training starts from.
pub enum Start {
    /// A random model built from the spec's config, with a byte-level tokenizer.
    Scratch,
    /// A checkpoint (Hub id or path), upcycled first when `upcycle`.
    Model { reference: String, upcycle: bool },
}

/// `train.json` of a trained checkpoint: the settings and what came out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainSummary {
    pub router: String,
    pub router_params: Map<String, Value>,
    /// DTop-p: the frozen threshold of each controller.
    pub final_p: Vec<f64>,
    /// DTop-p: the learned logit scale s_ℓ of each MoE layer.
    pub final_scales: Vec<f64>,
    /// Mean NLL per token on the held-out end of the text (`None` when it is too short).
    pub heldout_nll: Option<f64>,
    pub heldout_tokens: usize,
    pub train_tokens: usize,
    pub texts: Vec<PathBuf>,
    pub steps: usize,
    pub batch_size: usize,
    pub seq_len: usize,
    pub lr: f64,
    pub warmup: usize,
    pub load_balance: f64,
    pub z_loss: f64,
    pub entropy: f64,
    pub seed: u64,
    pub wall_s: f64,
}

/// The files [`train_checkpoint`] reads: the spec's, else the default Shakespeare plays.
pub fn training_texts(spec: &TrainSpec) -> Result<Vec<PathBuf>> {
    match spec.text.is_empty() {
        true => crate::paths::default_training_texts(),
        false => Ok(spec.text.clone()),
    }
}

/// Options of one training run that are not part of the model's identity.
#[derive(Debug, Clone, Copy, Default)]
pub struct TrainOptions {
    /// A progress line every 50 steps on stderr.
    pub verbose: bool,
    /// Save the checkpoint even when the loss became NaN or infinite (default: error, nothing
    /// saved).
    pub save_diverged: bool,
    /// When `out` already holds a finished model (its `train.json`) by the time this one is
    /// saved, keep that one and discard this one instead of replacing it: another process
    /// (a shard of the same run) built the same model first and may be reading it.
    pub keep_finished: bool,
}

/// Builds (or loads) the model, trains it as `spec` says and saves it to `out` (replaced
/// atomically): config, weights, tokenizer, the router file for a router other than the
/// config's top-k, `train_log.jsonl` and `train.json` (the summary, also returned).
pub fn train_checkpoint(
    spec: &TrainSpec,
    start: &Start,
    hub: &HubConfig,
    out: &Path,
    options: TrainOptions,
) -> Result<TrainSummary> {
    match start {
        Start::Scratch => spec.validate(),
        // The config keys describe a scratch model; a loaded one has its own.
        Start::Model { .. } => spec.validate_training(),
    }?;
    let router = lookup(&spec.router)?;
    let router_params = Params::check(router, &spec.router_params)?;
    let parent = out.parent().unwrap_or(Path::new("."));
    let work = parent.join(format!(
        ".{}.train-{}",
        out.file_name().and_then(|n| n.to_str()).unwrap_or("model"),
        moebench_suite::store::process_tag()
    ));
    let result = train_into(spec, start, hub, &work, router, &router_params, options);
    let summary = match result {
        Ok(summary) => summary,
        Err(e) => {
            std::fs::remove_dir_all(&work).ok();
            return Err(e);
        }
    };
    let saved = work.join("model");
    let finished_there = || out.join("train.json").is_file();
    if out.exists() && !(options.keep_finished && finished_there()) {
        std::fs::remove_dir_all(out).map_err(RunnerError::io(out))?;
    }
    // A rename onto a non-empty directory fails: only one process's copy lands.
    let renamed = std::fs::rename(&saved, out);
    std::fs::remove_dir_all(&work).ok();
    match renamed {
        Err(_) if options.keep_finished && finished_there() => Ok(summary),
        other => other.map(|()| summary).map_err(RunnerError::io(out)),
    }
}

/// The training itself, writing into `work/` (removed by the caller on error).
fn train_into(
    spec: &TrainSpec,
    start: &Start,
    hub: &HubConfig,
    work: &Path,
    router: &dyn moebench_methods::catalogue::Method,
    router_params: &Params,
    options: TrainOptions,
) -> Result<TrainSummary> {
    let (mut model, tokenizer_dir) = build_model(spec, start, hub, work)?;
    let tokenizer = Tokenizer::from_dir(&tokenizer_dir)?;
    let texts = training_texts(spec)?;
    let mut tokens = Vec::new();
    for path in &texts {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading training text {}", path.display()))?;
        tokens.extend(tokenizer.encode(&text, false)?);
    }
    let held = (tokens.len() as f64 * spec.holdout) as usize;
    let (train_tokens, held_out) = tokens.split_at(tokens.len() - held);
    // A dense model (`experts: 0`, or a loaded model without `upcycle`) trains as it is: the
    // domain fine-tunes DUME merges.
    let default_router = spec.router == "topk" && spec.router_params.is_empty();
    let controllers = if model.config.moe.is_none() {
        if !default_router {
            bail!(
                "router {} needs an MoE model (build one with experts ≥ 1, or upcycle)",
                spec.router
            );
        }
        Vec::new()
    } else {
        let Some(built) = router.selectors(&model, router_params) else {
            bail!(
                "`router: {}` is not a router swap; use one of the catalogue's router swaps (moebench methods)",
                spec.router
            );
        };
        let built = built?;
        let controllers = built.controllers.clone();
        install(&mut model, built)?;
        controllers
    };

    let cfg = TrainConfig {
        steps: spec.steps,
        batch_size: spec.batch_size,
        seq_len: spec.seq_len,
        lr: spec.lr,
        warmup_steps: spec.warmup,
        seed: spec.seed,
        load_balance_coef: spec.load_balance,
        z_loss_coef: spec.z_loss,
        entropy_coef: spec.entropy,
        ..TrainConfig::default()
    };
    std::fs::create_dir_all(work).map_err(RunnerError::io(work))?;
    let log_path = work.join("train_log.jsonl");
    let file = std::fs::File::create(&log_path).map_err(RunnerError::io(&log_path))?;
    let mut log = std::io::BufWriter::new(file);
    let start_time = Instant::now();
    let mut write_error = None;
    let mut diverged: Option<(usize, f64)> = None;
    train(&model, train_tokens, &cfg, &mut |s: &StepStats| {
        if !s.loss.is_finite() && diverged.is_none() {
            diverged = Some((s.step, s.loss));
        }
        let p: Vec<f64> = controllers
            .iter()
            .filter_map(|c| c.lock().ok()?.step())
            .collect();
        let line = json!({"stats": s, "p": p, "scales": scales(&model), "elapsed_s": start_time.elapsed().as_secs_f64()});
        if let Err(e) = writeln!(log, "{line}") {
            write_error.get_or_insert(e);
        }
        if options.verbose && (s.step.is_multiple_of(50) || s.step + 1 == cfg.steps) {
            eprintln!(
                "step {:>5}  loss {:.4}  lm {:.4}  active {:.2}±{:.2}  p {:?}  {:.0}s",
                s.step,
                s.loss,
                s.lm_loss,
                s.active_mean,
                s.active_std,
                p,
                start_time.elapsed().as_secs_f64()
            );
        }
    })?;
    if let Some(e) = write_error {
        return Err(RunnerError::io(&log_path)(e));
    }
    if let (Some((step, loss)), false) = (diverged, options.save_diverged) {
        bail!(
            "training diverged: the loss was {loss} at step {step}; nothing was saved (lower `lr`, \
             raise `warmup`, or pass --save-diverged to keep the checkpoint anyway)"
        );
    }
    log.flush().map_err(RunnerError::io(&log_path))?;
    drop(log);
    for c in &controllers {
        c.lock().expect("controller").frozen = true;
    }
    let final_p: Vec<f64> = controllers
        .iter()
        .map(|c| c.lock().expect("controller").p)
        .collect();
    let held_nll = (held > spec.seq_len + 1).then(|| mean_nll(&model, held_out, spec.seq_len, 8));
    let saved = work.join("model");
    moebench_model::save::save_pretrained(&model, Some(&tokenizer_dir), &saved)?;
    std::fs::rename(&log_path, saved.join("train_log.jsonl"))
        .map_err(RunnerError::io(&log_path))?;
    let summary = TrainSummary {
        router: spec.router.clone(),
        router_params: spec.router_params.clone(),
        final_p: final_p.clone(),
        final_scales: scales(&model),
        heldout_nll: held_nll.filter(|v| v.is_finite()),
        heldout_tokens: held,
        train_tokens: train_tokens.len(),
        texts,
        steps: cfg.steps,
        batch_size: cfg.batch_size,
        seq_len: cfg.seq_len,
        lr: cfg.lr,
        warmup: cfg.warmup_steps,
        load_balance: cfg.load_balance_coef,
        z_loss: cfg.z_loss_coef,
        entropy: cfg.entropy_coef,
        seed: cfg.seed,
        wall_s: start_time.elapsed().as_secs_f64(),
    };
    let summary_path = saved.join("train.json");
    std::fs::write(
        &summary_path,
        serde_json::to_string_pretty(&summary)? + "\n",
    )
    .map_err(RunnerError::io(&summary_path))?;
    if !default_router {
        if let Some(router) = SavedRouter::of(router, &model, router_params) {
            router.write(&saved)?;
        }
    }
    Ok(summary)
}

/// The model to train and the directory its tokenizer files come from.
fn build_model(
    spec: &TrainSpec,
    start: &Start,
    hub: &HubConfig,
    work: &Path,
) -> Result<(Model, PathBuf)> {
    let (reference, upcycle_first) = match start {
        Start::Scratch => {
            let cfg = ScratchConfig {
                hidden_size: spec.hidden_size,
                num_layers: spec.layers,
                num_heads: spec.heads,
                num_kv_heads: spec.heads,
                intermediate_size: spec.intermediate_size,
                num_experts: spec.experts,
                top_k: spec.top_k,
                seed: spec.seed as i64,
                // The context it learns: lm-eval's rolling windows then stay within it.
                max_position_embeddings: spec.seq_len,
                ..ScratchConfig::default()
            };
            let init = work.join("init");
            let model = random_model(&cfg, &init)?;
            write_byte_tokenizer(&init)?;
            return Ok((model, init));
        }
        Start::Model { reference, upcycle } => (reference, *upcycle),
    };
    let checkpoint = resolve_checkpoint(hub, reference)?;
    let mut model = checkpoint.load(Device::Cpu, Kind::Float)?;
    if upcycle_first {
        upcycle(
            &mut model,
            &UpcycleConfig {
                num_experts: spec.experts as i64,
                top_k: spec.top_k as i64,
                seed: spec.seed as i64,
                ..UpcycleConfig::default()
            },
        )?;
    }
    Ok((model, checkpoint.dir.clone()))
}

/// DTop-p's current s_ℓ per layer (empty for other routers).
fn scales(model: &Model) -> Vec<f64> {
    model
        .layers
        .iter()
        .filter_map(|b| match &b.ffn {
            // DTop-p's only parameter is log s_ℓ.
            Ffn::Moe(m) => m
                .selector
                .parameters()
                .first()
                .map(|t| t.exp().double_value(&[])),
            Ffn::Dense(_) => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Shards of one run that need the same suite-built model build it side by side: the
    /// copy saved first stays (another shard may be reading it) and the later one is dropped.
    #[test]
    fn a_model_saved_first_by_another_process_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let text = dir.path().join("text.txt");
        std::fs::write(
            &text,
            "To be, or not to be, that is the question. ".repeat(40),
        )
        .unwrap();
        let spec = TrainSpec {
            layers: 1,
            hidden_size: 32,
            heads: 2,
            intermediate_size: 32,
            experts: 0,
            steps: 1,
            batch_size: 2,
            seq_len: 32,
            warmup: 1,
            holdout: 0.0,
            text: vec![text],
            ..TrainSpec::default()
        };
        let hub = HubConfig::from_env().unwrap();
        let out = dir.path().join("models").join("tiny");
        std::fs::create_dir_all(out.parent().unwrap()).unwrap();
        let keep = TrainOptions {
            keep_finished: true,
            ..TrainOptions::default()
        };
        train_checkpoint(&spec, &Start::Scratch, &hub, &out, keep).unwrap();
        std::fs::write(out.join("first"), "").unwrap();
        train_checkpoint(&spec, &Start::Scratch, &hub, &out, keep).unwrap();
        assert!(out.join("first").exists(), "the first copy stays");
        let left: Vec<_> = std::fs::read_dir(out.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, ["tiny"], "no work directory left");
        // `moebench train` (no keep_finished) replaces its output.
        train_checkpoint(&spec, &Start::Scratch, &hub, &out, TrainOptions::default()).unwrap();
        assert!(!out.join("first").exists());
        assert!(out.join("train.json").is_file());
    }
}
