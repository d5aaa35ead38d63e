//! moebench-report: what `moebench report` and `moebench compare` make of run directories.
//!
//! - [`render`]: one self-contained HTML report (inline CSS and SVG, no scripts, no external
//!   references) from the templates of `reports/`, plus `results.csv` and `results.json`.
//! - [`compare()`]: two runs side by side, with a paired bootstrap over shared documents and
//!   the significant regressions named.
//! - [`synthetic`]: synthetic run directories for tests and demos.
//!
//! Records come from [`moebench_suite::read_records`] (only jobs with a `job_done` count);
//! the aggregations behind the leaderboard, Pareto plots and trends use polars (`frame`).
mod compare;
mod error;
mod export;
mod frame;
mod html;
mod metric;
mod routing;
mod run;
mod svg;
pub mod synthetic;
mod table;

pub use compare::{compare, CompareOptions, Comparison, Row, Test, Verdict};
pub use error::ReportError;
pub use export::{results_json, CSV_FILE, JSON_FILE};
pub use run::{DocScores, Run, REPORT_SPEC_FILE, TARGETS_FILE};

use std::path::{Path, PathBuf};

/// The files [`render`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub html: PathBuf,
    pub csv: PathBuf,
    pub json: PathBuf,
}

/// Writes the report of `run_dir` to `out` (default `run_dir/report.html`) and
/// `run_dir/results.csv`, `run_dir/results.json`. `history` lists earlier run directories, or
/// directories of them, whose headline metrics are shown as trends.
pub fn render(
    run_dir: &Path,
    history: &[PathBuf],
    out: Option<&Path>,
) -> Result<Written, ReportError> {
    let run = Run::load_nonempty(run_dir)?;
    let written = Written {
        html: out.map_or_else(|| run_dir.join("report.html"), Path::to_owned),
        csv: run_dir.join(CSV_FILE),
        json: run_dir.join(JSON_FILE),
    };
    export::write_csv(&run, &written.csv)?;
    export::write_json(&run, &written.json)?;
    let runs = run::with_history(run, history)?;
    let current = runs
        .iter()
        .position(|r| r.dir == run_dir)
        .expect("the current run is among its history");
    let html = html::render_html(&runs, current)?;
    std::fs::write(&written.html, html).map_err(ReportError::write(&written.html))?;
    Ok(written)
}
