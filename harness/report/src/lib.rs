//! moebench-report: what `moebench report` and `moebench compare` make of run directories.
//!
//! - [`render`]: one self-contained HTML report (inline CSS, SVG and script, no external
//!   references) from the templates of `reports/`, plus `results.csv` (tidy, one row per
//!   number with its costs) and `results.json` (lm-eval's layout).
//! - [`compare()`]: two runs side by side, with a paired bootstrap over shared documents and
//!   the significant regressions named.
//! - [`check_targets`]: a run's numbers against its suite's targets, and [`check_claims`] its
//!   claims (paired bootstrap between two methods), for `--check-targets`.
//! - [`synthetic`]: synthetic run directories for tests, demos and scale measurements.
//!
//! Records come from [`moebench_suite::read_records`] (only jobs with a `job_done` count);
//! rows are compared only within their base model ([`baseline`]), against its dense row.
mod baseline;
mod claims;
mod compare;
mod error;
mod export;
mod frame;
mod html;
mod leaderboard;
mod metric;
mod overview;
mod routing;
mod rows;
mod run;
mod significance;
mod svg;
pub mod synthetic;
mod table;
mod targets;
mod text;

pub use claims::{check_claims, ClaimResult, ClaimStatus, CLAIMS_FILE};
pub use compare::{compare, CompareOptions, Comparison, Row, Verdict};
pub use error::ReportError;
pub use export::{results_json, CSV_FILE, JSON_FILE};
pub use rows::QUALITY_AVERAGE;
pub use run::{DocScores, Run, SuiteReport, REPORT_SPEC_FILE, TARGETS_FILE};
pub use significance::Test;
pub use targets::{check_run_targets, check_targets, TargetCheck, TargetResult, TargetStatus};

use std::path::{Path, PathBuf};

/// The files [`render`] wrote, and the run's targets as checked for the report.
#[derive(Debug, Clone, PartialEq)]
pub struct Written {
    pub html: PathBuf,
    pub csv: PathBuf,
    pub json: PathBuf,
    /// `None` when the run has neither targets nor claims.
    pub targets: Option<TargetCheck>,
}

/// How to render a report beyond what the run directory says.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderOptions {
    /// Earlier run directories, or directories of them, whose numbers are shown as trends.
    pub history: Vec<PathBuf>,
    /// Where to write the HTML (default `RUN_DIR/report.html`).
    pub output: Option<PathBuf>,
    /// The quality on the charts' y axis (`accuracy_avg` or `TASK/METRIC`); overrides the
    /// suite's `report.quality`.
    pub quality: Option<String>,
    /// Model labels charted and compared together; when not empty, replaces the suite's
    /// `report.groups`.
    pub groups: Vec<Vec<String>>,
    /// Paired bootstrap replicates of the Δ-vs-base tests.
    pub bootstrap_iters: usize,
    pub seed: u64,
}

impl Default for RenderOptions {
    fn default() -> Self {
        Self {
            history: Vec::new(),
            output: None,
            quality: None,
            groups: Vec::new(),
            bootstrap_iters: 1000,
            seed: 1234,
        }
    }
}

/// Writes the report of `run_dir` to `out` (default `run_dir/report.html`) and
/// `run_dir/results.csv`, `run_dir/results.json`. `history` lists earlier run directories, or
/// directories of them, whose headline metrics are shown as trends.
pub fn render(
    run_dir: &Path,
    history: &[PathBuf],
    out: Option<&Path>,
) -> Result<Written, ReportError> {
    render_with(
        run_dir,
        &RenderOptions {
            history: history.to_vec(),
            output: out.map(Path::to_owned),
            ..RenderOptions::default()
        },
    )
}

/// [`render`] with every option. Nothing is written unless everything could be computed.
pub fn render_with(run_dir: &Path, options: &RenderOptions) -> Result<Written, ReportError> {
    let runs = run::with_history(run::Run::load_nonempty(run_dir)?, &options.history)?;
    let current = runs
        .iter()
        .position(|r| r.dir == run_dir)
        .expect("the current run is among its history");
    let run = &runs[current];
    let analysis = baseline::Analysis::new(run, options)?;
    let targets = run.check_targets()?;
    let html = html::render_html(&runs, current, &analysis, targets.as_ref())?;
    let written = Written {
        html: options
            .output
            .clone()
            .unwrap_or_else(|| run_dir.join("report.html")),
        csv: run_dir.join(CSV_FILE),
        json: run_dir.join(JSON_FILE),
        targets,
    };
    let csv = export::results_csv(run, &analysis)?;
    let json = export::results_json_text(run);
    for (path, bytes) in [
        (&written.csv, csv.as_slice()),
        (&written.json, json.as_bytes()),
        (&written.html, html.as_bytes()),
    ] {
        moebench_suite::write_atomic(path, bytes)?;
    }
    Ok(written)
}
