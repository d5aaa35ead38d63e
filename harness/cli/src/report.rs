//! `moebench report RUN_DIR`: the self-contained HTML report of a run (plus `results.csv` and
//! `results.json`); `moebench compare BASE NEW`: regressions between two runs.
use crate::ExitCode;
use anyhow::Result;
use moebench_report::{compare, render, CompareOptions};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct ReportArgs {
    /// A run directory written by `moebench run`.
    run_dir: PathBuf,
    /// Earlier runs to show trends against: a run directory or a directory of them (repeatable).
    #[arg(long, value_name = "DIR")]
    history: Vec<PathBuf>,
    /// Where to write the HTML [default: RUN_DIR/report.html].
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
}

pub fn run_report(args: ReportArgs) -> Result<()> {
    let written = render(&args.run_dir, &args.history, args.output.as_deref())?;
    println!("report: {}", written.html.display());
    println!(
        "results: {}, {}",
        written.csv.display(),
        written.json.display()
    );
    Ok(())
}

#[derive(clap::Args)]
pub struct CompareArgs {
    /// The baseline run directory.
    base: PathBuf,
    /// The run directory to check against it.
    new: PathBuf,
    /// Exit with status 3 when any metric regressed significantly.
    #[arg(long)]
    fail_on_regression: bool,
    /// Significance level of the one-sided test.
    #[arg(long, default_value_t = 0.05)]
    alpha: f64,
    /// Smallest absolute change that can count as a regression.
    #[arg(long, default_value_t = 0.0, value_name = "X")]
    min_delta: f64,
    /// Paired bootstrap replicates.
    #[arg(long, default_value_t = 10_000)]
    bootstrap_iters: usize,
    /// Print a markdown table (for a CI job summary) instead of aligned text.
    #[arg(long)]
    markdown: bool,
}

pub fn run_compare(args: CompareArgs) -> Result<ExitCode> {
    let options = CompareOptions {
        alpha: args.alpha,
        min_delta: args.min_delta,
        iters: args.bootstrap_iters,
        ..CompareOptions::default()
    };
    let comparison = compare(&args.base, &args.new, &options)?;
    print!("{}", comparison.render(args.markdown));
    let regressions = comparison.regressions().count();
    if args.fail_on_regression && regressions > 0 {
        eprintln!(
            "regression: {regressions} significant regression(s) between {} and {}; see the table \
             above",
            args.base.display(),
            args.new.display()
        );
        return Ok(ExitCode::Regression);
    }
    Ok(ExitCode::Ok)
}
