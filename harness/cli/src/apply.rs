//! `moebench apply MODEL --method NAME [--params JSON] --out DIR`: one suite method (or a chain,
//! `--then`) applied to a model, and the result saved with `save_pretrained` — a compressed,
//! upcycled or DUME-merged checkpoint that suites, `eval` and transformers load. Routing swaps
//! are saved as the router file every moebench command installs on load.
use crate::calibration::calibration_data;
use crate::common::ModelArgs;
use crate::methods::{apply_method, MethodContext, SavedRouter, ROUTER_FILE};
use anyhow::{bail, Context, Result};
use moebench_suite::methods::{expand_method, MethodStep};
use moebench_suite::suite::Calibration;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Methods that only swap the router: saved as [`ROUTER_FILE`] next to unchanged weights.
const ROUTER_METHODS: [&str; 4] = ["topk", "topp", "expert_choice", "usmoe"];

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// A suite method name (docs/suite-format.md).
    #[arg(long)]
    method: String,
    /// Its parameters as a JSON object (no sweeps), e.g. '{"compression": 0.5}'.
    #[arg(long, default_value = "{}")]
    params: String,
    /// Methods applied after it, as the suite's `then:` list in JSON, e.g.
    /// '[{"name": "reap", "params": {"compression": 0.5}}]'.
    #[arg(long, default_value = "[]")]
    then: String,
    /// Calibration text (default: the suite default, Hamlet from `make deps`).
    #[arg(long)]
    calibration_source: Option<PathBuf>,
    #[arg(long, default_value_t = 16)]
    calibration_sequences: usize,
    #[arg(long, default_value_t = 128)]
    calibration_length: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output checkpoint directory (replaced atomically).
    #[arg(long)]
    out: PathBuf,
}

pub fn run(args: Args) -> Result<()> {
    let params: BTreeMap<String, Value> = serde_json::from_str(&args.params)
        .with_context(|| format!("--params {}: not a JSON object", args.params))?;
    let then: Vec<MethodStep> = serde_json::from_str(&args.then)
        .with_context(|| format!("--then {}: not a list of {{name, params}}", args.then))?;
    let mut configs = expand_method(&args.method, None, &params)
        .map_err(|e| anyhow::anyhow!("--method/--params: {e}"))?;
    if configs.len() != 1 {
        bail!(
            "--params sweeps {} configurations; apply takes one",
            configs.len()
        );
    }
    let mut method = configs.remove(0);
    method.then = then;
    if method.name == "dtop_p" || method.then.iter().any(|s| s.name == "dtop_p") {
        bail!(
            "dtop_p (calibrated) cannot be saved yet: its frozen thresholds live in the selector; \
             use it as a suite method instead"
        );
    }
    let loaded = args.model.load()?;
    let tokenizer = loaded.tokenizer_if_any()?;
    let spec = Calibration {
        source: args.calibration_source.clone(),
        sequences: args.calibration_sequences,
        length: args.calibration_length,
        seed: args.seed,
        mix: Vec::new(),
    };
    let calibration = calibration_data(&spec, &loaded.model, tokenizer.as_ref())?;
    let hub = args.model.hub.config()?;
    let cwd = std::env::current_dir()?;
    let ctx = MethodContext {
        calibration: &calibration,
        calibration_spec: &spec,
        seed: args.seed,
        suite_dir: &cwd,
        hub: &hub,
        tokenizer: tokenizer.as_ref(),
        suite_model: &|_| None,
    };
    let model = apply_method(loaded.model, &method, &ctx)
        .with_context(|| format!("applying {}", method.name))?;
    moebench_model::save::save_pretrained(&model, Some(&loaded.checkpoint.dir), &args.out)?;
    let last_router = std::iter::once((&method.name, &method.params))
        .chain(method.then.iter().map(|s| (&s.name, &s.params)))
        .rfind(|(name, _)| ROUTER_METHODS.contains(&name.as_str()));
    if let Some((name, params)) = last_router {
        let router = SavedRouter {
            name: name.clone(),
            params: params.clone().into_iter().collect(),
            frozen_p: Vec::new(),
        };
        std::fs::write(
            args.out.join(ROUTER_FILE),
            serde_json::to_string_pretty(&router)? + "\n",
        )?;
    }
    println!("{}", args.out.display());
    Ok(())
}
