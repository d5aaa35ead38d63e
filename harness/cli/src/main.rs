//! `moebench`: benchmark and evaluation harness for Mixture-of-Experts construction and
//! compression methods. Each subcommand lives in its own module; errors are printed as one line
//! (what, where, how to fix) and give a non-zero exit code.
mod apply;
mod bench;
mod common;
mod doctor;
mod eval;
mod generate;
mod inspect;
mod k8s;
mod methods;
mod prepare;
mod report;
mod rescore;
mod run;
mod slurm;
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
    /// List the methods suites and `apply` accept, with their parameters.
    Methods(methods::Args),
    /// Run a suite (models × methods × tasks) into a resumable run directory.
    Run(run::Args),
    /// Recompute a run's task metrics from its stored samples, without the model.
    Rescore(rescore::Args),
    /// Self-contained HTML report of a run directory, plus results.csv and results.json
    /// (--check-targets: exit 3 when a target of the suite is missed).
    Report(report::ReportArgs),
    /// Compare two run directories; significant regressions are named (and fail with
    /// --fail-on-regression).
    Compare(report::CompareArgs),
    /// List the tasks, groups and tags of the task directories; `tasks validate PATH…` checks
    /// task YAMLs without their data.
    Tasks(tasks::Args),
    /// What this machine gives moebench: libtorch, CUDA, bf16, the Hub cache, shipped data,
    /// the code sandbox (exit 1 when something is missing).
    Doctor(doctor::Args),
    /// Slurm job array running a suite's shards (`run --shard`) plus a report job after it.
    Slurm(slurm::Args),
    /// Kubernetes Indexed Job running a suite's shards (`run --shard`), as YAML.
    K8s(k8s::Args),
}

/// The process's exit status (docs/architecture.md, "Exit codes").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCode {
    /// Everything ran and nothing regressed.
    Ok = 0,
    /// An error: bad input, a failed job, an I/O failure.
    Error = 1,
    /// A regression (`compare --fail-on-regression`) or a missed target.
    Regression = 3,
}
// Usage errors exit with 2, clap's code.

/// libtorch allocates every tensor through malloc. glibc serves blocks above its mmap threshold
/// (at most 32 MiB) with a fresh `mmap` that the kernel zero-fills page by page and unmaps again
/// on free, so each large temporary costs page faults: 8 % of REAM's profile, half its system
/// time. Serving all blocks from the heap and keeping freed memory in it lets the next one
/// reuse the pages (docs/performance.md, "REAM application speed"); peak RSS grows by what
/// fragmentation holds (+3 % on ARC-Easy, +16 % on REAM). A user's own `GLIBC_TUNABLES`
/// malloc settings win.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if !std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("glibc.malloc.")) {
        // SAFETY: mallopt only changes allocator parameters; called before any thread starts.
        unsafe {
            libc::mallopt(libc::M_MMAP_MAX, 0);
            libc::mallopt(libc::M_TRIM_THRESHOLD, libc::c_int::MAX);
        }
    }
}

fn main() {
    // Like other Unix tools, stop quietly when the reader of stdout goes away (`| head`)
    // instead of panicking on the failed write.
    // SAFETY: restores the default disposition of SIGPIPE before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    keep_freed_memory();
    tracing_subscriber::fmt()
        .with_env_filter(
            // RUST_LOG as usual; MOEBENCH_LOG, the older name, wins when both are set.
            tracing_subscriber::EnvFilter::try_from_env("MOEBENCH_LOG")
                .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    moebench_pyhooks::install();
    let ok = |r: anyhow::Result<()>| r.map(|()| ExitCode::Ok);
    let result = match cli.command {
        Command::Prepare(a) => ok(prepare::run(a)),
        Command::Inspect(a) => ok(inspect::run(a)),
        Command::Generate(a) => ok(generate::run_generate(a)),
        Command::Logits(a) => ok(generate::run_logits(a)),
        Command::Eval(a) => ok(eval::run(a)),
        Command::Bench(a) => ok(bench::run(a)),
        Command::Apply(a) => ok(apply::run(a)),
        Command::Train(a) => ok(train::run(a)),
        Command::Methods(a) => ok(methods::run(a)),
        Command::Run(a) => run::run(a),
        Command::Rescore(a) => ok(rescore::run(a)),
        Command::Report(a) => report::run_report(a),
        Command::Compare(a) => report::run_compare(a),
        Command::Tasks(a) => tasks::run(a),
        Command::Doctor(a) => doctor::run(a),
        Command::Slurm(a) => ok(slurm::run(a)),
        Command::K8s(a) => ok(k8s::run(a)),
    };
    let code = result.unwrap_or_else(|e| {
        eprintln!("error: {e:#}");
        ExitCode::Error
    });
    std::process::exit(code as i32);
}
