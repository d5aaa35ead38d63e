//! `moebench apply MODEL --method NAME [--params JSON] --out DIR`: one method of the catalogue
//! (or a chain, `--then`) applied to a model, and the result saved with `save_pretrained` — a
//! compressed, upcycled or DUME-merged checkpoint that suites, `eval` and transformers load.
//! A router swap is saved as the router file every moebench command installs on load; the save
//! says plainly that transformers ignores it.
use crate::common::ModelArgs;
use anyhow::{bail, Context, Result};
use moebench_methods::catalogue::{lookup, schemas, Params};
use moebench_runner::apply::apply_method;
use moebench_runner::calibration::calibration_data;
use moebench_runner::env::RunEnv;
use moebench_runner::router_file::{SavedRouter, ROUTER_FILE};
use moebench_suite::methods::{check_step, expand_method, find_schema, MethodStep};
use moebench_suite::suite::Calibration;
use serde_json::{Map, Value};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// A method of the catalogue (`moebench methods`).
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
    /// Print what was saved as JSON (`out`, `router`, `note`) instead of the directory.
    #[arg(long)]
    json: bool,
}

/// The key of `config.json` that says how a moebench router relates to transformers.
const ROUTING_NOTE_KEY: &str = "moebench_routing";

pub fn run(args: Args) -> Result<()> {
    let params: Map<String, Value> = serde_json::from_str(&args.params)
        .with_context(|| format!("--params {}: not a JSON object", args.params))?;
    let then: Vec<MethodStep> = serde_json::from_str(&args.then)
        .with_context(|| format!("--then {}: not a list of {{name, params}}", args.then))?;
    let schemas = schemas();
    let schema = find_schema(&schemas, &args.method).map_err(anyhow::Error::msg)?;
    let mut configs = expand_method(schema, None, &params)
        .map_err(|e| anyhow::anyhow!("--params: {}", e.join("; ")))?;
    if configs.len() != 1 {
        bail!(
            "--params sweeps {} configurations; apply takes one",
            configs.len()
        );
    }
    let mut method = configs.remove(0);
    method.then = then
        .iter()
        .map(|step| check_step(&schemas, step))
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow::anyhow!("--then: {}", e.join("; ")))?;
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
    let env = RunEnv {
        calibration: &calibration,
        calibration_spec: &spec,
        seed: args.seed,
        base_dir: &cwd,
        hub: &hub,
        tokenizer: tokenizer.as_ref(),
        suite_models: &|_| None,
    };
    let model = apply_method(loaded.model, &method, &env)?;
    // The last router swap of the chain is the router the model runs with.
    let steps = std::iter::once((&method.name, &method.params))
        .chain(method.then.iter().map(|s| (&s.name, &s.params)));
    let mut router = None;
    for (name, params) in steps {
        let m = lookup(name)?;
        if let Some(saved) = SavedRouter::of(m, &model, &Params::check(m, params)?) {
            router = Some(saved);
        }
    }
    moebench_model::save::save_pretrained(&model, Some(&loaded.checkpoint.dir), &args.out)?;
    let mut note = None;
    if let Some(router) = &router {
        router.write(&args.out)?;
        let text = format!(
            "routes with `{}` in moebench ({ROUTER_FILE}); transformers ignores that file and \
             runs this checkpoint with the config's top-k",
            router.name
        );
        annotate_config(&args.out, &text)?;
        eprintln!("note: {text}");
        note = Some(text);
    }
    match args.json {
        true => println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "out": args.out,
                "router": router.as_ref().map(|r| &r.name),
                "note": note,
            }))?
        ),
        false => println!("{}", args.out.display()),
    }
    Ok(())
}

/// Records `note` in the saved `config.json` under [`ROUTING_NOTE_KEY`], where a transformers
/// user looking at the config sees it (transformers keeps unknown keys as attributes).
fn annotate_config(dir: &std::path::Path, note: &str) -> Result<()> {
    let path = dir.join("config.json");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut config: Map<String, Value> = serde_json::from_str(&text)?;
    config.insert(ROUTING_NOTE_KEY.into(), Value::from(note));
    std::fs::write(&path, serde_json::to_string_pretty(&config)? + "\n")
        .with_context(|| format!("writing {}", path.display()))
}
