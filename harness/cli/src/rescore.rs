//! `moebench rescore RUN_DIR`: recomputes every stored task metric from the run's sample logs,
//! without the model, and prints stored and recomputed values side by side (moebench-runner's
//! `rescore`). Nothing is written: the store keeps the numbers the run produced.
use crate::common::HubArgs;
use anyhow::Result;
use moebench_runner::rescore::{rescore, RESCORE_TOLERANCE};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// A directory written by `moebench run`.
    run_dir: PathBuf,
    #[command(flatten)]
    hub: HubArgs,
}

pub fn run(args: Args) -> Result<()> {
    let done = rescore(&args.run_dir, &args.hub.config()?)?;
    if done.suite_changed {
        eprintln!(
            "note: the suite changed since the run; jobs are matched by task name and content hash"
        );
    }
    println!("|job|task|metric|stored|rescored|\n|---|---|---|---:|---:|");
    for m in &done.metrics {
        let new = m.rescored.map_or("missing".into(), |v| format!("{v:.6}"));
        println!("|{}|{}|{}|{:.6}|{new}|", m.job, m.task, m.metric, m.stored);
    }
    let differ = done.metrics.iter().filter(|m| !m.agrees()).count();
    println!(
        "{} metrics rescored, {differ} differ from the stored values by more than \
         {RESCORE_TOLERANCE:e} (relative)",
        done.metrics.len()
    );
    if done.skipped > 0 {
        println!(
            "{} jobs skipped: corpus perplexity protocols (gptq_concat, strided) keep no \
             per-document samples",
            done.skipped
        );
    }
    Ok(())
}
