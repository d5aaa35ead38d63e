//! `moebench`: benchmark and evaluation harness for Mixture-of-Experts construction and
//! compression methods. Each subcommand lives in its own module; errors are printed as one line
//! (what, where, how to fix) and give a non-zero exit code.
mod apply;
mod bench;
mod calibration;
mod common;
mod eval;
mod generate;
mod inspect;
mod methods;
mod prepare;
mod report;
mod rescore;
mod run;
mod tasks;
mod train;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "moebench",
    version,
    about = "MoE construction/compression benchmark harness"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Convert the packaged SmolLM2-135M-Instruct GGUF into a Hugging Face cache entry.
    Prepare(prepare::Args),
    /// Family, parameter counts and analytic FLOPs per token of a model.
    Inspect(inspect::Args),
    /// Greedy generation with a KV cache.
    Generate(generate::GenerateArgs),
    /// Token ids of a prompt and the top-K log-probabilities at its last position.
    Logits(generate::LogitsArgs),
    /// Evaluate a model on lm-eval compatible tasks.
    Eval(eval::Args),
    /// Prefill latency, decode latency/throughput and peak memory of greedy generation.
    Bench(bench::Args),
    /// Apply a method (or chain) to a model and save the result as a checkpoint.
    Apply(apply::Args),
    /// Train an MoE (from a config, or a model, optionally upcycled) on local text.
    Train(train::Args),
    /// Run a suite (models × methods × tasks) into a resumable run directory.
    Run(run::Args),
    /// Recompute a run's task metrics from its stored samples, without the model.
    Rescore(rescore::Args),
    /// Self-contained HTML report of a run directory, plus results.csv and results.json.
    Report(report::ReportArgs),
    /// Compare two run directories; significant regressions are named (and fail with
    /// --fail-on-regression).
    Compare(report::CompareArgs),
    /// List the tasks, groups and tags of the task directories; `tasks validate PATH…` checks
    /// task YAMLs without their data.
    Tasks(tasks::Args),
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("MOEBENCH_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    moebench_pyhooks::install();
    let result = match cli.command {
        Command::Prepare(a) => prepare::run(a),
        Command::Inspect(a) => inspect::run(a),
        Command::Generate(a) => generate::run_generate(a),
        Command::Logits(a) => generate::run_logits(a),
        Command::Eval(a) => eval::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Apply(a) => apply::run(a),
        Command::Train(a) => train::run(a),
        Command::Run(a) => run::run(a),
        Command::Rescore(a) => rescore::run(a),
        Command::Report(a) => report::run_report(a),
        Command::Compare(a) => report::run_compare(a),
        Command::Tasks(a) => tasks::run(a),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
