//! The run directory: what `moebench run` writes and `moebench report`/`rescore` read.
//!
//! ```text
//! <run_dir>/run.json               suite name, suite file path + sha256, harness version, start time
//! <run_dir>/records.jsonl          append-only, one Record per line
//! <run_dir>/records.shard-I-of-N.jsonl   the same, written by shard I/N (`run --shard I/N`)
//! <run_dir>/samples/<job>.jsonl    per-document samples of a task job (lm-eval's sample format)
//! <run_dir>/routing/<job>.json      tokens routed to each expert per MoE layer (a RoutingLog)
//! ```
//!
//! **Writing.** A finished job appends all its records followed by its `job_done` record in a
//! single `write(2)` on a file opened with `O_APPEND`, then `fsync`s; nothing of a job is
//! appended before it finishes. Sample logs and `run.json` are written to a temporary file
//! and renamed into place. A SIGKILL therefore leaves either the whole block or nothing; only a
//! crash of the machine can tear the last line, and the next append starts on a new line.
//!
//! **Segments.** A sharded run (`moebench run --shard I/N`, one process per shard, possibly on
//! several machines sharing the run directory over NFS or Lustre) writes its records to its own
//! segment `records.shard-I-of-N.jsonl` under its own lock `.lock.shard-I-of-N`: no two
//! processes ever append to one file, and shards never wait for each other. Readers take every
//! segment (the unsharded `records.jsonl` first, then the shards in order); a job finished in
//! any segment is finished, and when two segments finished one job the first one counts.
//! Temporary files and locks carry `HOST-PID` ([`process_tag`]), so that a process cleaning up
//! after dead processes only touches what its own machine left.
//!
//! **Reading** ([`read_records`]). Unreadable lines are skipped with a warning. A `job_done`
//! record's `value` is the number of records it closes: a job's records are the `value` lines
//! immediately before its first `job_done`, all of the same job and none unreadable. Every
//! other record — those of an interrupted attempt, a torn block, or a second `job_done` of a
//! job already done — is ignored, so a job that was interrupted and run again counts once.
//! A job is finished when it has such a `job_done`.
use crate::{Shard, SuiteError};
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

pub const RECORDS_FILE: &str = "records.jsonl";
pub const RUN_FILE: &str = "run.json";
pub const SAMPLES_DIR: &str = "samples";
pub const ROUTING_DIR: &str = "routing";

/// Tokens routed to each expert of each MoE layer during one job: the data behind the report's
/// layer × expert heatmaps. Kept out of `records.jsonl` because it is a table, not a number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoutingLog {
    pub job: String,
    pub model_label: String,
    pub method_label: String,
    pub layers: Vec<LayerLoads>,
}

/// One MoE layer's expert loads (token-expert assignments per expert) and co-activation counts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerLoads {
    pub layer: usize,
    pub loads: Vec<f64>,
    /// `[N×N]` row-major: tokens that used both experts i and j (diagonal = loads); empty when
    /// not recorded.
    #[serde(default)]
    pub coactivation: Vec<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordKind {
    /// A task metric (`acc,none`, `perplexity,none`, …).
    Metric,
    /// A (model, method) measurement (`params_total`, `params_active`, `flops_per_token`, …).
    Measure,
    /// Closes a job: `metric` is `records`, `value` the number of records before it.
    JobDone,
    /// A job that failed at run time: `protocol` holds the error. The job is not finished, so
    /// a resumed run tries it again.
    JobFailed,
}

/// One line of `records.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub kind: RecordKind,
    pub suite: String,
    /// The job hash.
    pub job: String,
    /// The model as written in the suite.
    pub model: String,
    pub model_label: String,
    /// Hub commit, or the local directory's content fingerprint.
    pub model_sha: String,
    pub method: String,
    pub method_label: String,
    pub method_params: serde_json::Value,
    pub method_hash: String,
    /// `None` for measures.
    pub task: Option<String>,
    /// The task's content hash; `None` for measures.
    pub task_hash: Option<String>,
    pub metric: String,
    /// Non-finite values are written as `null` and read back as NaN.
    #[serde(deserialize_with = "nan_if_null")]
    pub value: f64,
    pub stderr: Option<f64>,
    /// Documents behind a metric.
    pub n: Option<u64>,
    pub higher_is_better: Option<bool>,
    /// How the number was obtained when it matters (e.g. the rolling-perplexity protocol).
    pub protocol: Option<String>,
    pub device: String,
    pub dtype: String,
    pub batch_size: usize,
    pub seed: u64,
    pub harness_version: String,
    /// Wall time of the whole job, in seconds.
    pub wall_s: f64,
    /// UTC time the job finished, `YYYY-MM-DDTHH:MM:SSZ`.
    pub time: String,
}

impl Record {
    /// The record of one measurement of a job, from the job's template (see
    /// [`crate::Plan::record_template`]): the only way records are made.
    pub fn of(
        template: &Record,
        kind: RecordKind,
        m: &Measurement,
        wall_s: f64,
        time: &str,
    ) -> Record {
        Record {
            kind,
            metric: m.metric.clone(),
            value: m.value,
            stderr: m.stderr,
            n: m.n,
            higher_is_better: m.higher_is_better,
            protocol: m.protocol.clone(),
            wall_s,
            time: time.to_owned(),
            ..template.clone()
        }
    }

    /// The error of a `job_failed` record.
    pub fn failure(&self) -> Option<&str> {
        match self.kind {
            RecordKind::JobFailed => self.protocol.as_deref(),
            _ => None,
        }
    }

    /// The job's `model/method/task` label.
    pub fn label(&self) -> String {
        job_label(&self.model_label, &self.method_label, self.task.as_deref())
    }
}

fn nan_if_null<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// One number a job produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Measurement {
    pub metric: String,
    pub value: f64,
    pub stderr: Option<f64>,
    pub n: Option<u64>,
    pub higher_is_better: Option<bool>,
    pub protocol: Option<String>,
}

/// `run.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunInfo {
    pub suite: String,
    /// Absolute path of the suite file.
    pub suite_path: PathBuf,
    pub suite_sha256: String,
    pub harness_version: String,
    /// When this run (or resumption) started, UTC.
    pub start_time: String,
}

impl RunInfo {
    pub fn new(suite: &crate::Suite) -> Self {
        Self {
            suite: suite.name.clone(),
            suite_path: suite.dir.join(suite.path.file_name().unwrap_or_default()),
            suite_sha256: suite.sha256.clone(),
            harness_version: crate::HARNESS_VERSION.to_owned(),
            start_time: utc_now(),
        }
    }
}

/// `model/method/task`, or `model/method/measure` without a task: what `--only` matches.
pub fn job_label(model: &str, method: &str, task: Option<&str>) -> String {
    format!("{model}/{method}/{}", task.unwrap_or("measure"))
}
/// A run directory opened for writing: it holds the lock of its segment until dropped.
#[derive(Debug)]
pub struct RunStore {
    dir: PathBuf,
    /// The segment this store appends to: `records.jsonl`, or a shard's.
    records: PathBuf,
    _lock: RunLock,
}

/// The lock file of a run directory (of its unsharded segment).
pub const LOCK_FILE: &str = ".lock";

/// The records file a shard writes (`None`: the unsharded `records.jsonl`).
fn segment_file(shard: Option<Shard>) -> String {
    match shard {
        None => RECORDS_FILE.to_owned(),
        Some(s) => format!("records.shard-{}-of-{}.jsonl", s.index, s.count),
    }
}

/// The lock file of a shard's segment (`None`: the unsharded run's).
fn lock_file(shard: Option<Shard>) -> String {
    match shard {
        None => LOCK_FILE.to_owned(),
        Some(s) => format!("{LOCK_FILE}.shard-{}-of-{}", s.index, s.count),
    }
}

/// The shard (`I`, `N`) of a segment file name, `None` for anything else.
fn shard_of_segment(name: &str) -> Option<(usize, usize)> {
    let rest = name
        .strip_prefix("records.shard-")?
        .strip_suffix(".jsonl")?;
    let (index, count) = rest.split_once("-of-")?;
    Some((index.parse().ok()?, count.parse().ok()?))
}

/// Every records segment of `run_dir` in reading order: `records.jsonl`, then the shards' by
/// (count, index). Missing files are simply absent.
pub fn segment_paths(run_dir: &Path) -> Result<Vec<PathBuf>, SuiteError> {
    let mut shards: Vec<((usize, usize), PathBuf)> = match std::fs::read_dir(run_dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(SuiteError::read(run_dir)(e)),
        Ok(entries) => entries
            .flatten()
            .filter_map(|e| {
                let (index, count) = shard_of_segment(e.file_name().to_str()?)?;
                Some(((count, index), e.path()))
            })
            .collect(),
    };
    shards.sort();
    let main = run_dir.join(RECORDS_FILE);
    Ok(main
        .is_file()
        .then_some(main)
        .into_iter()
        .chain(shards.into_iter().map(|(_, path)| path))
        .collect())
}

/// This machine's name (`/proc/sys/kernel/hostname`), with `-` kept and anything unusual in a
/// file name replaced.
fn host_name() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let name: String = name
        .trim()
        .chars()
        .map(|c| match c.is_ascii_alphanumeric() || "-.".contains(c) {
            true => c,
            false => '_',
        })
        .collect();
    if name.is_empty() {
        "localhost".into()
    } else {
        name
    }
}

/// This process as `HOST-PID`: what temporary files, work directories and locks in a run
/// directory are named or marked with. A run directory on a cluster's shared file system is
/// written from several machines, where a PID alone names no process.
pub fn process_tag() -> String {
    format!("{}-{}", host_name(), std::process::id())
}

/// Who a [`process_tag`] (or a bare PID, as older versions wrote) names.
#[derive(Debug, PartialEq, Eq)]
enum Owner {
    Me,
    /// A process of this machine, alive or not.
    Local {
        pid: u32,
        alive: bool,
    },
    /// A process of another machine, whose state cannot be checked from here.
    Remote {
        tag: String,
    },
    Unreadable,
}

fn owner_of(tag: &str) -> Owner {
    let tag = tag.trim();
    let (host, pid) = match tag.rsplit_once('-') {
        Some((host, pid)) => (Some(host), pid),
        None => (None, tag),
    };
    let Ok(pid) = pid.parse::<u32>() else {
        return Owner::Unreadable;
    };
    if host.is_some_and(|h| h != host_name()) {
        return Owner::Remote { tag: tag.into() };
    }
    match pid == std::process::id() {
        true => Owner::Me,
        false => Owner::Local {
            pid,
            alive: Path::new("/proc").join(pid.to_string()).exists(),
        },
    }
}

/// An exclusive lock on a segment of a run directory: a file holding the owner's
/// [`process_tag`], created with `O_EXCL` (atomic on NFSv3+ and Lustre). A lock whose process is
/// gone (a killed run) is taken over; the file is removed when the lock is dropped.
#[derive(Debug)]
struct RunLock {
    path: PathBuf,
}

impl RunLock {
    /// A shard's lock held on another machine is taken over: a scheduler runs each shard once
    /// at a time, so such a lock is a task that was requeued elsewhere (preempted, node lost).
    /// The unsharded lock of another machine is respected.
    fn acquire(dir: &Path, shard: Option<Shard>) -> Result<RunLock, SuiteError> {
        let path = dir.join(lock_file(shard));
        let what = match shard {
            None => "the run directory".to_owned(),
            Some(s) => format!("shard {s} of the run directory"),
        };
        for _ in 0..2 {
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut file) => {
                    file.write_all(process_tag().as_bytes())
                        .map_err(SuiteError::write(&path))?;
                    return Ok(RunLock { path });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let tag = std::fs::read_to_string(&path).unwrap_or_default();
                    let in_use = |by: String| SuiteError::Store {
                        path: dir.to_owned(),
                        message: format!(
                            "{what} is in use by {by} (another `moebench run`?); wait for it, \
                             or choose another --run-dir"
                        ),
                    };
                    match owner_of(&tag) {
                        Owner::Local { pid, alive: true } => {
                            return Err(in_use(format!("process {pid}")))
                        }
                        Owner::Remote { tag } if shard.is_none() => {
                            return Err(in_use(format!(
                                "process {tag} (HOST-PID; if it is gone, remove {})",
                                path.display()
                            )))
                        }
                        // Stale (its process is gone), a requeued shard's, or unreadable.
                        _ => {
                            tracing::warn!(
                                "{}: taking over a stale lock (held by {})",
                                path.display(),
                                tag.trim()
                            );
                            std::fs::remove_file(&path).map_err(SuiteError::write(&path))?;
                        }
                    }
                }
                Err(e) => return Err(SuiteError::write(&path)(e)),
            }
        }
        Err(SuiteError::Store {
            path: dir.to_owned(),
            message: format!("could not take the lock of {what} (another process took it)"),
        })
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        let ours = std::fs::read_to_string(&self.path).is_ok_and(|t| owner_of(&t) == Owner::Me);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Removes what dead processes of this machine left in the run directory: `*.tmp-TAG` files of
/// interrupted atomic writes and `.NAME.train-TAG` work directories of interrupted model builds
/// (TAG: [`process_tag`], or a bare PID).
fn remove_leftovers(dir: &Path) {
    let dead_pid = |name: &str, marker: &str| {
        name.rsplit_once(marker)
            .is_some_and(|(_, tag)| matches!(owner_of(tag), Owner::Local { alive: false, .. }))
    };
    for sub in [
        Path::new(""),
        Path::new(SAMPLES_DIR),
        Path::new(ROUTING_DIR),
        Path::new("models"),
    ] {
        let Ok(entries) = std::fs::read_dir(dir.join(sub)) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            let removed = if dead_pid(&name, ".tmp-") && path.is_file() {
                std::fs::remove_file(&path).is_ok()
            } else if name.starts_with('.') && dead_pid(&name, ".train-") && path.is_dir() {
                std::fs::remove_dir_all(&path).is_ok()
            } else {
                false
            };
            if removed {
                tracing::info!("removed {} (left by an interrupted run)", path.display());
            }
        }
    }
}

impl RunStore {
    /// Creates the run directory, or resumes it when it holds the same suite (by name), and
    /// writes `run.json`.
    pub fn open(dir: &Path, info: &RunInfo) -> Result<Self, SuiteError> {
        Self::open_segment(dir, info, None)
    }

    /// [`RunStore::open`] for one shard of a run (`None`: unsharded): it appends to the shard's
    /// own segment under the shard's own lock, so that shards run side by side.
    pub fn open_segment(
        dir: &Path,
        info: &RunInfo,
        shard: Option<Shard>,
    ) -> Result<Self, SuiteError> {
        if let Some(existing) = read_run_info(dir)? {
            if existing.suite != info.suite {
                return Err(SuiteError::Store {
                    path: dir.to_owned(),
                    message: format!(
                        "this run directory holds suite `{}`, not `{}`; choose another --run-dir",
                        existing.suite, info.suite
                    ),
                });
            }
        }
        for sub in [SAMPLES_DIR, ROUTING_DIR] {
            let sub = dir.join(sub);
            std::fs::create_dir_all(&sub).map_err(SuiteError::write(&sub))?;
        }
        let lock = RunLock::acquire(dir, shard)?;
        remove_leftovers(dir);
        let json = serde_json::to_vec_pretty(info).expect("RunInfo serializes");
        write_atomic(&dir.join(RUN_FILE), &json)?;
        Ok(Self {
            dir: dir.to_owned(),
            records: dir.join(segment_file(shard)),
            _lock: lock,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Hashes of the jobs that have a valid `job_done`.
    pub fn finished_jobs(&self) -> Result<BTreeSet<String>, SuiteError> {
        finished_jobs(&self.dir)
    }

    /// Writes `samples/<job>.jsonl` atomically, one JSON line per sample.
    pub fn write_samples<T: Serialize>(&self, job: &str, samples: &[T]) -> Result<(), SuiteError> {
        let mut text = String::new();
        for s in samples {
            text.push_str(&serde_json::to_string(s).expect("samples serialize"));
            text.push('\n');
        }
        write_atomic(&samples_path(&self.dir, job), text.as_bytes())
    }

    /// Writes a job's routing log (before the job's records are committed, so that a finished
    /// job always has it).
    pub fn write_routing(&self, log: &RoutingLog) -> Result<(), SuiteError> {
        let path = routing_path(&self.dir, &log.job);
        let bytes = serde_json::to_vec(log).expect("routing logs serialize");
        write_atomic(&path, &bytes)
    }

    /// Appends the job's records (`template` with each measurement, as `kind`) and its
    /// `job_done`, in one write.
    pub fn commit(
        &self,
        template: &Record,
        kind: RecordKind,
        measurements: &[Measurement],
        wall_s: f64,
    ) -> Result<(), SuiteError> {
        let time = utc_now();
        let record = |kind, m: &Measurement| Record::of(template, kind, m, wall_s, &time);
        let done = Measurement {
            metric: "records".into(),
            value: measurements.len() as f64,
            stderr: None,
            n: None,
            higher_is_better: None,
            protocol: None,
        };
        let mut block = String::new();
        for r in measurements
            .iter()
            .map(|m| record(kind, m))
            .chain([record(RecordKind::JobDone, &done)])
        {
            block.push_str(&serde_json::to_string(&r).expect("records serialize"));
            block.push('\n');
        }
        append_block(&self.records, block.as_bytes())
    }
}

impl RunStore {
    /// Records that the job of `template` failed with `error` (one line, appended atomically);
    /// its samples and routing log, if any were written, stay unreferenced.
    pub fn fail(&self, template: &Record, error: &str, wall_s: f64) -> Result<(), SuiteError> {
        let failed = Measurement {
            metric: "error".into(),
            value: f64::NAN,
            stderr: None,
            n: None,
            higher_is_better: None,
            protocol: Some(error.to_owned()),
        };
        let record = Record::of(template, RecordKind::JobFailed, &failed, wall_s, &utc_now());
        let mut line = serde_json::to_string(&record).expect("records serialize");
        line.push('\n');
        append_block(&self.records, line.as_bytes())
    }
}

/// Appends `block` in one write, after a newline if the file ends with a torn line, and syncs.
fn append_block(path: &Path, block: &[u8]) -> Result<(), SuiteError> {
    let write = SuiteError::write;
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .read(true)
        .open(path)
        .map_err(write(path))?;
    let mut bytes = Vec::with_capacity(block.len() + 1);
    if !ends_with_newline(&mut file).map_err(write(path))? {
        bytes.push(b'\n');
    }
    bytes.extend_from_slice(block);
    file.write_all(&bytes).map_err(write(path))?;
    file.sync_data().map_err(write(path))
}

/// True for an empty file or one whose last byte is a newline.
fn ends_with_newline(file: &mut File) -> std::io::Result<bool> {
    if file.metadata()?.len() == 0 {
        return Ok(true);
    }
    file.seek(SeekFrom::End(-1))?;
    let mut last = [0u8];
    file.read_exact(&mut last)?;
    Ok(last[0] == b'\n')
}

/// Writes `bytes` to `path` through a synced temporary file renamed into place.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), SuiteError> {
    let tmp = path.with_extension(format!("tmp-{}", process_tag()));
    let write = || -> std::io::Result<()> {
        let mut file = File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()
    };
    if let Err(e) = write() {
        // A full disk must not leave a partial temporary file behind.
        let _ = std::fs::remove_file(&tmp);
        return Err(SuiteError::write(&tmp)(e));
    }
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        SuiteError::write(path)(e)
    })
}

pub fn samples_path(run_dir: &Path, job: &str) -> PathBuf {
    run_dir.join(SAMPLES_DIR).join(format!("{job}.jsonl"))
}

pub fn routing_path(run_dir: &Path, job: &str) -> PathBuf {
    run_dir.join(ROUTING_DIR).join(format!("{job}.json"))
}

/// The routing log of a job, `None` when it logged none.
pub fn read_routing(run_dir: &Path, job: &str) -> Result<Option<RoutingLog>, SuiteError> {
    read_json_if_present(&routing_path(run_dir, job))
}

/// `run.json` of a run directory, `None` when there is none.
pub fn read_run_info(run_dir: &Path) -> Result<Option<RunInfo>, SuiteError> {
    read_json_if_present(&run_dir.join(RUN_FILE))
}

/// A JSON file of the run directory, `None` when it does not exist.
pub fn read_json_if_present<T: serde::de::DeserializeOwned>(
    path: &Path,
) -> Result<Option<T>, SuiteError> {
    let text = match std::fs::read_to_string(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        other => other.map_err(SuiteError::read(path))?,
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| SuiteError::Store {
            path: path.to_owned(),
            message: e.to_string(),
        })
}

/// The samples of a task job.
pub fn read_samples<T: serde::de::DeserializeOwned>(
    run_dir: &Path,
    job: &str,
) -> Result<Vec<T>, SuiteError> {
    let path = samples_path(run_dir, job);
    let text = std::fs::read_to_string(&path).map_err(SuiteError::read(&path))?;
    text.lines()
        .enumerate()
        .map(|(i, line)| {
            serde_json::from_str(line).map_err(|e| SuiteError::Store {
                path: path.clone(),
                message: format!("line {}: {e}", i + 1),
            })
        })
        .collect()
}

/// Hashes of the jobs of `run_dir` that have a valid `job_done`.
pub fn finished_jobs(run_dir: &Path) -> Result<BTreeSet<String>, SuiteError> {
    Ok(read_records(run_dir)?
        .into_iter()
        .filter(|r| r.kind == RecordKind::JobDone)
        .map(|r| r.job)
        .collect())
}

/// The records of the finished jobs of `run_dir`, every segment (see the module
/// documentation), in segment and file order, `job_done`s included. A run directory without
/// records has none.
pub fn read_records(run_dir: &Path) -> Result<Vec<Record>, SuiteError> {
    Ok(read_segments(run_dir)?.0)
}

/// The finished jobs' records of every segment (a job finished in two segments counts from
/// the first), and every readable line of every segment (for the failures).
fn read_segments(run_dir: &Path) -> Result<(Vec<Record>, Vec<Record>), SuiteError> {
    let mut finished = Vec::new();
    let mut lines = Vec::new();
    let mut done_before: BTreeSet<String> = BTreeSet::new();
    for path in segment_paths(run_dir)? {
        let segment = read_lines(&path)?;
        let completed = completed_jobs(&path, segment.clone());
        let done_here: BTreeSet<String> = completed
            .iter()
            .filter(|r| r.kind == RecordKind::JobDone)
            .map(|r| r.job.clone())
            .collect();
        finished.extend(
            completed
                .into_iter()
                .filter(|r| !done_before.contains(&r.job)),
        );
        done_before.extend(done_here);
        lines.extend(segment.into_iter().map(|(_, r)| r));
    }
    Ok((finished, lines))
}

/// The jobs of `run_dir` whose last attempt failed and that no attempt (in any segment)
/// finished, with the failure record (its `protocol` is the error).
pub fn failed_jobs(run_dir: &Path) -> Result<Vec<Record>, SuiteError> {
    let (finished, lines) = read_segments(run_dir)?;
    let done: BTreeSet<String> = finished
        .into_iter()
        .filter(|r| r.kind == RecordKind::JobDone)
        .map(|r| r.job)
        .collect();
    let mut failed: std::collections::BTreeMap<String, Record> = Default::default();
    for r in lines {
        if r.kind == RecordKind::JobFailed && !done.contains(&r.job) {
            failed.insert(r.job.clone(), r);
        }
    }
    Ok(failed.into_values().collect())
}

/// The readable records of `records.jsonl` with their line numbers. A line that is not UTF-8
/// or not a record (a write torn by a crash, a stray byte) is skipped; one warning says how
/// many and where the first was.
fn read_lines(path: &Path) -> Result<Vec<(usize, Record)>, SuiteError> {
    let bytes = match std::fs::read(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        other => other.map_err(SuiteError::read(path))?,
    };
    let mut records = Vec::new();
    let mut skipped: Vec<(usize, String)> = Vec::new();
    for (i, line) in bytes.split(|b| *b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let parsed = std::str::from_utf8(line)
            .map_err(|e| format!("not UTF-8 ({e})"))
            .and_then(|text| serde_json::from_str::<Record>(text).map_err(|e| e.to_string()));
        match parsed {
            Ok(record) => records.push((i + 1, record)),
            Err(e) => skipped.push((i + 1, e)),
        }
    }
    if let Some((line, why)) = skipped.first() {
        tracing::warn!(
            "{}: {} unreadable line(s) skipped (torn write?), the first at line {line}: {why}",
            path.display(),
            skipped.len()
        );
    }
    Ok(records)
}

/// Keeps, per job, its first `job_done` and the records it closes.
fn completed_jobs(path: &Path, records: Vec<(usize, Record)>) -> Vec<Record> {
    let mut keep = vec![false; records.len()];
    let mut done = BTreeSet::new();
    for (i, (line, r)) in records.iter().enumerate() {
        if r.kind != RecordKind::JobDone || done.contains(&r.job) {
            continue;
        }
        let count = r.value as usize;
        let closes = |start: usize| {
            records[start..i].iter().enumerate().all(|(k, (l, b))| {
                b.job == r.job
                    && matches!(b.kind, RecordKind::Metric | RecordKind::Measure)
                    && *l == line - count + k
            })
        };
        if r.value.fract() != 0.0 || r.value < 0.0 || count > i || !closes(i - count) {
            tracing::warn!(
                "{}:{line}: job_done of job {} does not follow its {} records; job ignored",
                path.display(),
                r.job,
                r.value
            );
            continue;
        }
        done.insert(r.job.clone());
        keep[i - count..=i].fill(true);
    }
    records
        .into_iter()
        .zip(keep)
        .filter_map(|((_, r), kept)| kept.then_some(r))
        .collect()
}

/// Current UTC time as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format_utc(secs)
}

fn format_utc(secs: u64) -> String {
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let (era, doe) = (z.div_euclid(146_097), z.rem_euclid(146_097));
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(suite: &str) -> RunInfo {
        RunInfo {
            suite: suite.into(),
            suite_path: "/s.yaml".into(),
            suite_sha256: "0".repeat(64),
            harness_version: "0".into(),
            start_time: utc_now(),
        }
    }

    fn template(job: &str) -> Record {
        Record {
            kind: RecordKind::JobDone,
            suite: "s".into(),
            job: job.into(),
            model: "m".into(),
            model_label: "m".into(),
            model_sha: "sha".into(),
            method: "dense".into(),
            method_label: "dense".into(),
            method_params: serde_json::json!({}),
            method_hash: "h".into(),
            task: Some("t".into()),
            task_hash: Some("th".into()),
            metric: String::new(),
            value: 0.0,
            stderr: None,
            n: None,
            higher_is_better: None,
            protocol: None,
            device: "cpu".into(),
            dtype: "f32".into(),
            batch_size: 1,
            seed: 1234,
            harness_version: "0".into(),
            wall_s: 0.0,
            time: String::new(),
        }
    }

    fn metric(name: &str, value: f64) -> Measurement {
        Measurement {
            metric: name.into(),
            value,
            stderr: Some(0.1),
            n: Some(10),
            higher_is_better: Some(true),
            protocol: None,
        }
    }

    fn commit(store: &RunStore, job: &str, values: &[f64]) {
        let ms: Vec<Measurement> = values.iter().map(|v| metric("acc,none", *v)).collect();
        store
            .commit(&template(job), RecordKind::Metric, &ms, 1.5)
            .unwrap();
    }

    fn append_raw(dir: &Path, text: &str) {
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(RECORDS_FILE))
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }

    fn line_of(job: &str, value: f64) -> String {
        let r = Record {
            kind: RecordKind::Metric,
            metric: "acc,none".into(),
            value,
            ..template(job)
        };
        serde_json::to_string(&r).unwrap() + "\n"
    }

    #[test]
    fn committed_jobs_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = RunStore::open(dir.path(), &info("s")).unwrap();
        assert!(read_records(dir.path()).unwrap().is_empty());
        commit(&store, "a", &[0.5, 0.25]);
        commit(&store, "b", &[]);
        let records = read_records(dir.path()).unwrap();
        let kinds: Vec<(&str, RecordKind)> =
            records.iter().map(|r| (r.job.as_str(), r.kind)).collect();
        assert_eq!(
            kinds,
            [
                ("a", RecordKind::Metric),
                ("a", RecordKind::Metric),
                ("a", RecordKind::JobDone),
                ("b", RecordKind::JobDone)
            ]
        );
        assert_eq!(records[1].value, 0.25);
        assert_eq!(records[2].value, 2.0);
        assert_eq!(records[2].metric, "records");
        assert_eq!(
            store.finished_jobs().unwrap(),
            BTreeSet::from(["a".to_owned(), "b".to_owned()])
        );
        assert_eq!(read_run_info(dir.path()).unwrap().unwrap().suite, "s");
    }

    #[test]
    fn torn_last_line_is_skipped_and_the_next_block_starts_on_a_new_line() {
        let dir = tempfile::tempdir().unwrap();
        let store = RunStore::open(dir.path(), &info("s")).unwrap();
        commit(&store, "a", &[0.5]);
        let torn = line_of("b", 0.1);
        append_raw(dir.path(), &torn[..torn.len() / 2]);
        assert_eq!(read_records(dir.path()).unwrap().len(), 2);
        commit(&store, "b", &[0.75]);
        let records = read_records(dir.path()).unwrap();
        assert_eq!(records.len(), 4);
        assert_eq!((records[2].job.as_str(), records[2].value), ("b", 0.75));
        let text = std::fs::read_to_string(dir.path().join(RECORDS_FILE)).unwrap();
        assert_eq!(
            text.lines().count(),
            5,
            "the torn fragment stays on its own line"
        );
    }

    #[test]
    fn torn_multibyte_utf8_and_stray_bytes_are_skipped_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let store = RunStore::open(dir.path(), &info("s")).unwrap();
        commit(&store, "a", &[0.5]);
        // A line cut inside "é" (0xC3 0xA9), then a stray byte on a line of its own.
        let mut torn = line_of("b", 0.1).replace("acc,none", "acc,é").into_bytes();
        let cut = torn.iter().position(|b| *b == 0xC3).unwrap() + 1;
        torn.truncate(cut);
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.path().join(RECORDS_FILE))
            .unwrap();
        f.write_all(&torn).unwrap();
        f.write_all(b"\n\xff\n").unwrap();
        assert_eq!(read_records(dir.path()).unwrap().len(), 2);
        commit(&store, "b", &[0.75]);
        assert_eq!(read_records(dir.path()).unwrap().len(), 4);
        assert!(failed_jobs(dir.path()).unwrap().is_empty());
    }

    #[test]
    fn failed_jobs_are_listed_until_an_attempt_finishes() {
        let dir = tempfile::tempdir().unwrap();
        let store = RunStore::open(dir.path(), &info("s")).unwrap();
        store.fail(&template("a"), "out of memory", 2.0).unwrap();
        store.fail(&template("b"), "NaN logits", 1.0).unwrap();
        commit(&store, "c", &[0.5]);
        assert!(!store.finished_jobs().unwrap().contains("a"));
        let failed = failed_jobs(dir.path()).unwrap();
        let errors: Vec<(&str, Option<&str>)> = failed
            .iter()
            .map(|r| (r.job.as_str(), r.failure()))
            .collect();
        assert_eq!(
            errors,
            [("a", Some("out of memory")), ("b", Some("NaN logits"))]
        );
        // A rerun of `a` succeeds: it is finished and no longer failed; its failure is not a metric.
        commit(&store, "a", &[0.25]);
        let failed = failed_jobs(dir.path()).unwrap();
        assert_eq!(failed.len(), 1);
        let records = read_records(dir.path()).unwrap();
        assert!(records.iter().all(|r| r.kind != RecordKind::JobFailed));
        assert_eq!(records.iter().filter(|r| r.job == "a").count(), 2);
    }

    #[test]
    fn a_second_store_on_a_locked_run_directory_is_refused_and_a_stale_lock_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let first = RunStore::open(dir.path(), &info("s")).unwrap();
        // The lock holds this process's PID, which is alive: a second opener (as another process
        // would see it) is refused. Simulate the other process with PID 1 (always alive).
        drop(first);
        std::fs::write(dir.path().join(LOCK_FILE), "1").unwrap();
        let e = RunStore::open(dir.path(), &info("s"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("in use by process 1"), "{e}");
        // A lock left by a dead process is taken over, and dropping the store releases it.
        std::fs::write(dir.path().join(LOCK_FILE), "4194304").unwrap();
        let store = RunStore::open(dir.path(), &info("s")).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join(LOCK_FILE)).unwrap(),
            process_tag()
        );
        drop(store);
        assert!(!dir.path().join(LOCK_FILE).exists());
        // Another machine's unsharded lock cannot be checked from here: it is respected.
        std::fs::write(dir.path().join(LOCK_FILE), "other-host-1").unwrap();
        let e = RunStore::open(dir.path(), &info("s"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("in use by process other-host-1"), "{e}");
    }

    fn shard(index: usize, count: usize) -> Shard {
        Shard { index, count }
    }

    #[test]
    fn shards_write_their_own_segments_under_their_own_locks() {
        let dir = tempfile::tempdir().unwrap();
        let main = RunStore::open(dir.path(), &info("s")).unwrap();
        let first = RunStore::open_segment(dir.path(), &info("s"), Some(shard(1, 2))).unwrap();
        let second = RunStore::open_segment(dir.path(), &info("s"), Some(shard(2, 2))).unwrap();
        for lock in [".lock", ".lock.shard-1-of-2", ".lock.shard-2-of-2"] {
            assert!(dir.path().join(lock).is_file(), "{lock} held");
        }
        commit(&second, "b", &[0.25]);
        commit(&first, "a", &[0.5]);
        first.fail(&template("c"), "out of memory", 1.0).unwrap();
        commit(&main, "m", &[0.75]);
        // The same job finished by two segments (a rerun with another shard count) counts once,
        // from the first segment in reading order.
        commit(&second, "a", &[0.9]);
        let names: Vec<String> = segment_paths(dir.path())
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "records.jsonl",
                "records.shard-1-of-2.jsonl",
                "records.shard-2-of-2.jsonl"
            ]
        );
        let values: Vec<(String, f64)> = read_records(dir.path())
            .unwrap()
            .into_iter()
            .filter(|r| r.kind == RecordKind::Metric)
            .map(|r| (r.job, r.value))
            .collect();
        assert_eq!(
            values,
            [("m".into(), 0.75), ("a".into(), 0.5), ("b".into(), 0.25)]
        );
        assert_eq!(
            finished_jobs(dir.path()).unwrap(),
            BTreeSet::from(["a", "b", "m"].map(String::from))
        );
        let failed = failed_jobs(dir.path()).unwrap();
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].job, "c");
        // `c` finishes in another segment: no longer failed.
        commit(&second, "c", &[0.1]);
        assert!(failed_jobs(dir.path()).unwrap().is_empty());
    }

    #[test]
    fn a_shard_lock_of_another_machine_is_taken_over_and_a_live_local_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let lock = dir.path().join(".lock.shard-2-of-3");
        std::fs::write(&lock, "node-17-4242").unwrap();
        let store = RunStore::open_segment(dir.path(), &info("s"), Some(shard(2, 3))).unwrap();
        assert_eq!(std::fs::read_to_string(&lock).unwrap(), process_tag());
        drop(store);
        std::fs::write(&lock, format!("{}-1", host_name())).unwrap();
        let e = RunStore::open_segment(dir.path(), &info("s"), Some(shard(2, 3)))
            .map(|_| ())
            .unwrap_err();
        assert!(e.to_string().contains("in use by process 1"), "{e}");
    }

    #[test]
    fn leftovers_of_dead_processes_are_removed_on_open() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("models/.tiny.train-4194304/init")).unwrap();
        std::fs::create_dir_all(dir.path().join(SAMPLES_DIR)).unwrap();
        std::fs::write(dir.path().join("samples/abc.tmp-4194304"), "partial").unwrap();
        let dead_here = format!("samples/ghi.tmp-{}-4194304", host_name());
        std::fs::write(dir.path().join(&dead_here), "partial").unwrap();
        // Another machine's write in progress on a shared file system stays.
        std::fs::write(dir.path().join("samples/jkl.tmp-node-9-4194304"), "theirs").unwrap();
        let live = format!("samples/def.tmp-{}", std::process::id());
        std::fs::write(dir.path().join(&live), "mine").unwrap();
        let _store = RunStore::open(dir.path(), &info("s")).unwrap();
        assert!(!dir.path().join("models/.tiny.train-4194304").exists());
        assert!(!dir.path().join("samples/abc.tmp-4194304").exists());
        assert!(!dir.path().join(dead_here).exists());
        assert!(dir.path().join("samples/jkl.tmp-node-9-4194304").exists());
        assert!(
            dir.path().join(live).exists(),
            "a live process's file stays"
        );
    }

    #[test]
    fn partial_and_duplicate_attempts_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let store = RunStore::open(dir.path(), &info("s")).unwrap();
        // An interrupted attempt of `a` left a whole record but no job_done ...
        append_raw(dir.path(), &line_of("a", 0.1));
        // ... then `a` ran again; a second job_done of `a` (a concurrent run) comes later.
        commit(&store, "a", &[0.5]);
        commit(&store, "a", &[0.9]);
        // A job_done that does not follow its records closes nothing.
        append_raw(dir.path(), &line_of("c", 0.3));
        let stray = Record {
            value: 2.0,
            metric: "records".into(),
            ..template("c")
        };
        append_raw(dir.path(), &(serde_json::to_string(&stray).unwrap() + "\n"));
        let records = read_records(dir.path()).unwrap();
        let values: Vec<(&str, f64)> = records.iter().map(|r| (r.job.as_str(), r.value)).collect();
        assert_eq!(values, [("a", 0.5), ("a", 1.0)]);
    }

    #[test]
    fn non_finite_values_round_trip_as_nan() {
        let dir = tempfile::tempdir().unwrap();
        let store = RunStore::open(dir.path(), &info("s")).unwrap();
        commit(&store, "a", &[f64::INFINITY]);
        let records = read_records(dir.path()).unwrap();
        assert!(records[0].value.is_nan());
    }

    #[test]
    fn run_dir_of_another_suite_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        RunStore::open(dir.path(), &info("s")).unwrap();
        RunStore::open(dir.path(), &info("s")).unwrap();
        let e = RunStore::open(dir.path(), &info("other"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("holds suite `s`, not `other`"), "{e}");
    }

    #[test]
    fn samples_are_written_atomically_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = RunStore::open(dir.path(), &info("s")).unwrap();
        store
            .write_samples("j", &[serde_json::json!({"doc_id": 0})])
            .unwrap();
        let back: Vec<serde_json::Value> = read_samples(dir.path(), "j").unwrap();
        assert_eq!(back, [serde_json::json!({"doc_id": 0})]);
        let names: Vec<_> = std::fs::read_dir(dir.path().join(SAMPLES_DIR))
            .unwrap()
            .collect();
        assert_eq!(names.len(), 1, "no temporary file left");
    }

    #[test]
    fn utc_formatting() {
        assert_eq!(format_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_utc(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(format_utc(951_782_400), "2000-02-29T00:00:00Z");
    }
}
