//! A run directory as the report reads it: `run.json`, the records of its finished jobs
//! (through [`moebench_suite::read_records`], which applies the `job_done` rule), its optional
//! `targets.json` and per-job sample logs.
use crate::claims::CLAIMS_FILE;
use crate::ReportError;
use moebench_suite::store::{read_json_if_present, read_run_info, read_samples, samples_path};
use moebench_suite::suite::{Claim, ParetoAxes, Target};
use moebench_suite::{read_records, Record, RecordKind, RunInfo};
use serde::Deserialize;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

/// Optional list of expected values in a run directory.
pub const TARGETS_FILE: &str = "targets.json";

/// Optional report options of the suite (`report:` — title, Pareto axes) in a run directory.
pub const REPORT_SPEC_FILE: &str = "report_spec.json";

/// What the report reads of `report_spec.json` (the suite's `report:` section as `moebench
/// run` wrote it). Every key is optional and unknown keys are ignored, so that run
/// directories written by older or newer versions of the suite format still render.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct SuiteReport {
    pub title: Option<String>,
    /// The suite's own Pareto plots.
    pub pareto: Vec<ParetoAxes>,
    /// Model labels whose rows share one chart, each group compared with the dense row of its
    /// first model that has one (default: every model label alone).
    pub groups: Vec<Vec<String>>,
    /// The y axis of the quality-vs-cost charts: `accuracy_avg` or `TASK/METRIC`.
    pub quality: Option<String>,
}

/// A run directory, read.
#[derive(Debug, Clone)]
pub struct Run {
    pub dir: PathBuf,
    pub info: RunInfo,
    /// Records of the finished jobs, in file order, `job_done`s included.
    pub records: Vec<Record>,
}

/// Identifies one number of a run: model label, method label, task (`None` for measures),
/// metric.
pub type MetricKey = (String, String, Option<String>, String);

/// One document's scores from a sample log: `metrics` maps `"acc,none"`-style keys to a number
/// (or, for corpus-level metrics, whatever the task logs per document).
#[derive(Debug, Clone, Deserialize)]
pub struct DocScores {
    pub doc_hash: String,
    pub metrics: BTreeMap<String, Value>,
}

impl Run {
    /// Reads `dir`; fails when it has no `run.json`.
    pub fn load(dir: &Path) -> Result<Self, ReportError> {
        let info = read_run_info(dir)?.ok_or_else(|| ReportError::NotARun(dir.to_owned()))?;
        Ok(Self {
            dir: dir.to_owned(),
            info,
            records: read_records(dir)?,
        })
    }

    /// Like [`Run::load`], and fails when no job finished.
    pub fn load_nonempty(dir: &Path) -> Result<Self, ReportError> {
        let run = Self::load(dir)?;
        if run.records.is_empty() {
            return Err(ReportError::Empty(dir.to_owned()));
        }
        Ok(run)
    }

    /// The records of one kind, in file order.
    pub fn of_kind(&self, kind: RecordKind) -> impl Iterator<Item = &Record> {
        self.records.iter().filter(move |r| r.kind == kind)
    }

    /// The last record of each [`MetricKey`] of `kind`, in order of first appearance (a job
    /// that ran twice counts with its latest numbers).
    pub fn latest(&self, kind: RecordKind) -> Vec<&Record> {
        let mut index: HashMap<MetricKey, usize> = HashMap::new();
        let mut out: Vec<&Record> = Vec::new();
        for r in self.of_kind(kind) {
            match index.get(&key(r)) {
                Some(&i) => out[i] = r,
                None => {
                    index.insert(key(r), out.len());
                    out.push(r);
                }
            }
        }
        out
    }

    /// [`Run::latest`] keyed by [`MetricKey`], for lookups.
    pub fn latest_by_key(&self, kind: RecordKind) -> HashMap<MetricKey, &Record> {
        self.latest(kind).into_iter().map(|r| (key(r), r)).collect()
    }

    /// `targets.json`, `None` when the run has none.
    pub fn targets(&self) -> Result<Option<Vec<Target>>, ReportError> {
        Ok(read_json_if_present(&self.dir.join(TARGETS_FILE))?)
    }

    /// `claims.json`, `None` when the run has none.
    pub fn claims(&self) -> Result<Option<Vec<Claim>>, ReportError> {
        Ok(read_json_if_present(&self.dir.join(CLAIMS_FILE))?)
    }

    /// `report_spec.json`, all defaults when the run has none.
    pub fn suite_report(&self) -> Result<SuiteReport, ReportError> {
        Ok(read_json_if_present(&self.dir.join(REPORT_SPEC_FILE))?.unwrap_or_default())
    }

    /// The sample log of `job`, `None` when the job logged none.
    pub fn samples(&self, job: &str) -> Result<Option<Vec<DocScores>>, ReportError> {
        if !samples_path(&self.dir, job).exists() {
            return Ok(None);
        }
        Ok(Some(read_samples(&self.dir, job)?))
    }

    /// The `start_time` of `run.json`, for ordering runs.
    pub fn start_time(&self) -> &str {
        &self.info.start_time
    }
}

pub fn key(r: &Record) -> MetricKey {
    (
        r.model_label.clone(),
        r.method_label.clone(),
        r.task.clone(),
        r.metric.clone(),
    )
}

/// `model_label/method_label`, the name of a row of results.
pub fn row_label(r: &Record) -> String {
    format!("{}/{}", r.model_label, r.method_label)
}

/// The runs of `--history` arguments — each a run directory or a directory of run
/// directories — plus `current`, without duplicates, ordered by start time.
pub fn with_history(current: Run, history: &[PathBuf]) -> Result<Vec<Run>, ReportError> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    for dir in history {
        if dir.join(moebench_suite::store::RUN_FILE).exists() {
            dirs.push(dir.clone());
        } else {
            dirs.extend(child_runs(dir)?);
        }
    }
    let mut seen = HashSet::from([canonical(&current.dir)]);
    let mut runs = vec![current];
    for dir in dirs {
        if seen.insert(canonical(&dir)) {
            runs.push(Run::load(&dir)?);
        }
    }
    runs.sort_by(|a, b| a.start_time().cmp(b.start_time()));
    Ok(runs)
}

fn child_runs(dir: &Path) -> Result<Vec<PathBuf>, ReportError> {
    let entries = std::fs::read_dir(dir).map_err(ReportError::read(dir))?;
    let mut dirs = Vec::new();
    for entry in entries {
        let path = entry.map_err(ReportError::read(dir))?.path();
        if path.join(moebench_suite::store::RUN_FILE).exists() {
            dirs.push(path);
        }
    }
    if dirs.is_empty() {
        return Err(ReportError::NotARun(dir.to_owned()));
    }
    Ok(dirs)
}

fn canonical(dir: &Path) -> PathBuf {
    dir.canonicalize().unwrap_or_else(|_| dir.to_owned())
}
