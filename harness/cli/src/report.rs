//! `moebench report RUN_DIR`: the self-contained HTML report of a run (plus `results.csv` and
//! `results.json`), with `--check-targets` a gate on the suite's targets; `moebench compare
//! BASE NEW`: regressions between two runs.
use crate::ExitCode;
use anyhow::{bail, Result};
use moebench_report::{compare, render_with, CompareOptions, RenderOptions, TargetCheck};
use std::path::{Path, PathBuf};

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
    /// The quality on the charts' y axis: `accuracy_avg` or TASK/METRIC (e.g.
    /// `wikitext/word_perplexity`) [default: the suite's `report.quality`, else the accuracy
    /// average, else the first task's headline metric].
    #[arg(long, value_name = "QUALITY")]
    quality: Option<String>,
    /// Model labels to chart and compare together, comma-separated (repeatable; replaces the
    /// suite's `report.groups`). Each group is compared with the dense row of its first model.
    #[arg(long = "group", value_name = "LABEL,LABEL", value_parser = parse_group)]
    groups: Vec<ModelGroup>,
    /// Paired bootstrap replicates of the Δ-vs-base tests (0: z-test on the standard errors).
    #[arg(long, default_value_t = 1000)]
    bootstrap_iters: usize,
    /// Check the suite's targets: print target / obtained / Δ / source and exit with status 3
    /// when one is missed (outside its tolerance, not a number, or its job did not finish).
    #[arg(long)]
    check_targets: bool,
}

pub fn run_report(args: ReportArgs) -> Result<ExitCode> {
    let options = RenderOptions {
        history: args.history,
        output: args.output,
        quality: args.quality,
        groups: args.groups.into_iter().map(|g| g.0).collect(),
        bootstrap_iters: args.bootstrap_iters,
        ..RenderOptions::default()
    };
    let written = render_with(&args.run_dir, &options)?;
    println!("report: {}", written.html.display());
    println!(
        "results: {}, {}",
        written.csv.display(),
        written.json.display()
    );
    match args.check_targets {
        true => gate_targets(written.targets.as_ref(), &args.run_dir),
        false => Ok(ExitCode::Ok),
    }
}

/// `--check-targets` of `report` and `run`: prints target / obtained / Δ / source (and the
/// claims' paired tests) and returns status 3 when a target is missed or a claim does not
/// hold; a run without targets or claims is an error (nothing to gate on).
pub fn gate_targets(check: Option<&TargetCheck>, run_dir: &Path) -> Result<ExitCode> {
    let Some(check) = check else {
        bail!(
            "{}: --check-targets, but the run has no targets or claims (targets.json, \
             claims.json); add `targets:` or `claims:` to the suite (docs/suite-format.md)",
            run_dir.display()
        );
    };
    println!();
    print!("{}", check.render(false));
    if check.all_pass() {
        println!("targets: {}", check.summary());
        return Ok(ExitCode::Ok);
    }
    let (targets, claims) = (check.results.len(), check.claims.len());
    if check.passed() < targets {
        eprintln!(
            "targets missed: {} of {targets} not met in {}; see the table above",
            targets - check.passed(),
            run_dir.display()
        );
    }
    if check.claims_holding() < claims {
        eprintln!(
            "claims failed: {} of {claims} do not hold in {}; see the table above",
            claims - check.claims_holding(),
            run_dir.display()
        );
    }
    Ok(ExitCode::Regression)
}

/// Model labels of one `--group`.
#[derive(Debug, Clone)]
struct ModelGroup(Vec<String>);

fn parse_group(text: &str) -> Result<ModelGroup, String> {
    let labels: Vec<String> = text.split(',').map(|l| l.trim().to_owned()).collect();
    if labels.len() < 2 || labels.iter().any(String::is_empty) {
        return Err(format!(
            "`{text}`: a group is two or more model labels separated by commas, e.g. \
             `--group olmoe,olmoe-upcycled`"
        ));
    }
    Ok(ModelGroup(labels))
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
    #[arg(long, conflicts_with = "json")]
    markdown: bool,
    /// Print the comparison as JSON (options, counts, and every metric's row with its test
    /// and verdict) instead of a table. Exit codes are unchanged.
    #[arg(long)]
    json: bool,
}

pub fn run_compare(args: CompareArgs) -> Result<ExitCode> {
    let options = CompareOptions {
        alpha: args.alpha,
        min_delta: args.min_delta,
        iters: args.bootstrap_iters,
        ..CompareOptions::default()
    };
    let comparison = compare(&args.base, &args.new, &options)?;
    let where_to_look = match args.json {
        true => {
            println!("{}", serde_json::to_string_pretty(&comparison.to_json())?);
            (
                "the rows with verdict `not_a_number`",
                "the rows with verdict `regression`",
            )
        }
        false => {
            print!("{}", comparison.render(args.markdown));
            ("`NOT A NUMBER` in the table above", "the table above")
        }
    };
    let not_numbers = comparison.not_numbers().count();
    if not_numbers > 0 {
        bail!(
            "{not_numbers} metric(s) are not a number (NaN) in {} or {}: they cannot be compared; \
             see {}",
            args.base.display(),
            args.new.display(),
            where_to_look.0
        );
    }
    let regressions = comparison.regressions().count();
    if args.fail_on_regression && regressions > 0 {
        eprintln!(
            "regression: {regressions} significant regression(s) between {} and {}; see {}",
            args.base.display(),
            args.new.display(),
            where_to_look.1
        );
        return Ok(ExitCode::Regression);
    }
    Ok(ExitCode::Ok)
}
