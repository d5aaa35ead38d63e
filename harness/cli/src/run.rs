//! `moebench run SUITE.yaml`: every (model × method) of a suite on every task, plus
//! measurements, stored incrementally in a run directory (resumable), then the HTML report.
//! The engine is moebench-runner; this file is flags, the progress display and the summary.
use crate::common::HubArgs;
use crate::report::gate_targets;
use crate::ExitCode;
use anyhow::{bail, Context, Result};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use moebench_report::{render, CLAIMS_FILE, REPORT_SPEC_FILE, TARGETS_FILE};
use moebench_runner::engine::{prepare, run as run_plan};
use moebench_runner::events::{Event, RunEvents};
use moebench_suite::leaderboard::{best_per_model, leaderboard_markdown, Best};
use moebench_suite::store::finished_jobs;
use moebench_suite::{read_records, write_atomic, RunInfo, RunStore, Shard};
use std::cell::RefCell;
use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(clap::Args)]
pub struct Args {
    /// The suite YAML (docs/suite-format.md).
    suite: PathBuf,
    /// Where results go; rerunning into the same directory resumes [default: runs/<suite name>].
    #[arg(long)]
    run_dir: Option<PathBuf>,
    /// Check everything and print the jobs and whether each is done, to run or skipped; run
    /// and write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Only the jobs whose `model/method/task` label contains PATTERN (`measure` for measures).
    #[arg(long, value_name = "PATTERN")]
    only: Option<String>,
    /// Run only shard INDEX of COUNT (1-based, e.g. 2/4): whole (model, method) groups dealt
    /// to shards by estimated cost, each shard writing its own segment of the run directory,
    /// so that shards run side by side (`moebench slurm`, `moebench k8s`). The report merges
    /// all segments (`moebench report RUN_DIR`).
    #[arg(long, value_name = "INDEX/COUNT")]
    shard: Option<Shard>,
    /// No progress bars and no progress lines.
    #[arg(long)]
    quiet: bool,
    /// Print the full leaderboard table at the end.
    #[arg(long)]
    table: bool,
    /// Check the suite's targets after the run: print target / obtained / Δ / source and exit
    /// with status 3 when one is missed (failed jobs still exit 1). A shard cannot: check the
    /// merged run with `moebench report RUN_DIR --check-targets` after the last shard.
    #[arg(long, conflicts_with = "shard")]
    check_targets: bool,
    /// Print the summary as one JSON object on stdout (jobs, failures, best method per model,
    /// report path) instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    hub: HubArgs,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let hub = args.hub.config()?;
    let mut prepared = prepare(&args.suite, &hub, args.dry_run)?;
    for warning in &prepared.warnings {
        eprintln!("warning: {warning}");
    }
    if let Some(pattern) = &args.only {
        prepared.plan.retain_matching(pattern);
        if prepared.plan.jobs.is_empty() {
            bail!("--only {pattern}: no job label contains it (labels read model/method/task)");
        }
    }
    if let Some(shard) = args.shard {
        prepared.retain_shard(shard);
    }
    let run_dir = args
        .run_dir
        .clone()
        .unwrap_or_else(|| Path::new("runs").join(&prepared.plan.suite.name));
    if args.dry_run {
        print!("{}", prepared.plan.table(&finished_jobs(&run_dir)?));
        for note in &prepared.notes {
            println!("note: {note}");
        }
        return Ok(ExitCode::Ok);
    }
    let store = RunStore::open_segment(&run_dir, &RunInfo::new(&prepared.plan.suite), args.shard)?;
    write_atomic(
        &run_dir.join(TARGETS_FILE),
        &serde_json::to_vec_pretty(&prepared.plan.suite.targets)?,
    )?;
    write_atomic(
        &run_dir.join(CLAIMS_FILE),
        &serde_json::to_vec_pretty(&prepared.plan.suite.claims)?,
    )?;
    write_atomic(
        &run_dir.join(REPORT_SPEC_FILE),
        &serde_json::to_vec_pretty(&prepared.plan.suite.report)?,
    )?;
    let progress = Progress::new(args.quiet);
    let outcome = run_plan(&prepared, &store, &hub, &progress)?;
    progress.clear();
    drop(store);
    let records = read_records(&run_dir)?;
    if args.table {
        print!("{}", leaderboard_markdown(&records));
    }
    // Shards finish at different times: one report of all of them comes after the last (the
    // report job of `moebench slurm`).
    let written = match records.is_empty() || args.shard.is_some() {
        true => None,
        false => {
            let report_path = prepared.plan.suite.report_path(&run_dir);
            Some(render(&run_dir, &[], Some(&report_path)).context("rendering the report")?)
        }
    };
    let report = written.as_ref().map(|w| w.html.clone());
    let best = best_per_model(&records);
    if args.json {
        let summary = serde_json::json!({
            "jobs": outcome.jobs,
            "ran": outcome.ran,
            "failed": outcome.failed.iter().map(|(job, error)| serde_json::json!({"job": job, "error": error.to_string()})).collect::<Vec<_>>(),
            "done_earlier": outcome.done_earlier,
            "skipped": outcome.skipped,
            "wall_s": outcome.wall_s,
            "best": best,
            "run_dir": run_dir,
            "shard": args.shard.map(|s| s.to_string()),
            "report": report,
        });
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!(
            "{} jobs: {} ran, {} failed, {} done earlier, {} skipped, in {:.0} s",
            outcome.jobs,
            outcome.ran,
            outcome.failed.len(),
            outcome.done_earlier,
            outcome.skipped,
            outcome.wall_s
        );
        for (job, error) in &outcome.failed {
            println!("failed {job}: {error}");
        }
        for b in &best {
            println!("{}", best_line(b));
        }
        if let Some(report) = &report {
            println!("report: {}", report.display());
        }
        if let Some(shard) = args.shard {
            println!(
                "shard {shard} done; `moebench report {}` reports every shard",
                run_dir.display()
            );
        }
    }
    let targets = match args.check_targets {
        true => gate_targets(written.as_ref().and_then(|w| w.targets.as_ref()), &run_dir)?,
        false => ExitCode::Ok,
    };
    Ok(match outcome.failed.is_empty() {
        true => targets,
        false => ExitCode::Error,
    })
}

/// `best on arc/acc: smol → reap 0.6100 ± 0.0100 (dense 0.5900)`.
fn best_line(b: &Best) -> String {
    let stderr = b.stderr.map(|e| format!(" ± {e:.4}")).unwrap_or_default();
    let reference = match &b.reference {
        Some((method, value)) if *method != b.method => format!(" ({method} {value:.4})"),
        _ => String::new(),
    };
    match b.tie {
        true => format!(
            "best on {}: {}: tie at {:.4}{stderr}",
            b.metric, b.model, b.value
        ),
        false => format!(
            "best on {}: {} → {} {:.4}{stderr}{reference}",
            b.metric, b.model, b.method, b.value
        ),
    }
}

/// Progress bars (overall with ETA, one spinner per step) on a terminal, plain lines otherwise;
/// nothing with `--quiet`.
struct Progress {
    quiet: bool,
    multi: MultiProgress,
    overall: ProgressBar,
    spinners: RefCell<HashMap<String, ProgressBar>>,
}

impl Progress {
    fn new(quiet: bool) -> Self {
        let target = match quiet || !std::io::stderr().is_terminal() {
            true => ProgressDrawTarget::hidden(),
            false => ProgressDrawTarget::stderr(),
        };
        let multi = MultiProgress::with_draw_target(target);
        let overall = multi.add(ProgressBar::new(0));
        overall.set_style(
            ProgressStyle::with_template(
                "{prefix} [{bar:30}] {pos}/{len} jobs, {elapsed} elapsed, ETA {eta}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        overall.set_prefix("moebench run");
        Self {
            quiet,
            multi,
            overall,
            spinners: RefCell::new(HashMap::new()),
        }
    }

    fn spin(&self, label: &str) {
        let bar = self
            .multi
            .insert_before(&self.overall, ProgressBar::new_spinner());
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg} {elapsed}").expect("valid template"),
        );
        bar.set_message(label.to_owned());
        bar.enable_steady_tick(Duration::from_millis(200));
        self.spinners.borrow_mut().insert(label.to_owned(), bar);
    }

    fn stop(&self, label: &str) {
        if let Some(bar) = self.spinners.borrow_mut().remove(label) {
            bar.finish_and_clear();
            self.multi.remove(&bar);
        }
    }

    /// A line on stderr, above the bars when they are drawn.
    fn log(&self, line: &str) {
        match (self.quiet, self.multi.is_hidden()) {
            (true, _) => {}
            (false, true) => eprintln!("{line}"),
            (false, false) => self.multi.suspend(|| eprintln!("{line}")),
        }
    }

    fn clear(&self) {
        self.overall.finish_and_clear();
    }
}

impl RunEvents for Progress {
    fn event(&self, event: Event<'_>) {
        match event {
            Event::Started {
                jobs,
                done_earlier,
                skipped,
                to_run,
                run_dir,
            } => {
                self.overall.set_length(to_run as u64);
                self.overall.reset_eta();
                self.log(&format!(
                    "{jobs} jobs: {done_earlier} done earlier, {skipped} skipped, {to_run} to run \
                     (run directory {})",
                    run_dir.display()
                ));
            }
            Event::Skipped { job, reason } => self.log(&format!("skip {job}: {reason}")),
            Event::DoneEarlier { job } => self.log(&format!("done {job} (earlier run)")),
            Event::StepStarted { what } | Event::JobStarted { job: what } => self.spin(what),
            Event::StepFinished { what, .. } => self.stop(what),
            Event::Built {
                model,
                seconds,
                heldout_nll,
                dir,
            } => self.log(&format!(
                "built {model} in {seconds:.0} s (held-out loss {}) → {}",
                heldout_nll.map_or("n/a".into(), |l| format!("{l:.4}")),
                dir.display()
            )),
            Event::JobFinished { job, seconds } => {
                self.stop(job);
                self.overall.inc(1);
                self.log(&format!("ran {job} in {seconds:.1}s"));
            }
            Event::JobFailed { job, error } => {
                self.stop(job);
                self.overall.inc(1);
                self.log(&format!("FAILED {job}: {error}"));
            }
        }
    }
}
