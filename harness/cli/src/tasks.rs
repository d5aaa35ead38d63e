//! `moebench tasks`: the tasks, groups and tags the task directories define, and
//! `moebench tasks validate PATH…`: which task and group YAMLs would run, without their data.
use crate::ExitCode;
use anyhow::{bail, Result};
use moebench_runner::paths::task_dirs;
use moebench_tasks::validate::{Validator, Verdict};
use moebench_tasks::TaskIndex;
use serde_json::json;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// Extra directories of task YAMLs (listed after the shipped suites/tasks).
    #[arg(long = "tasks-dir")]
    tasks_dirs: Vec<PathBuf>,
    /// One JSON object per line: `{"name", "kind", "path"}`.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Check task and group YAMLs (files, or directories searched for `*.yaml`) without their
    /// data: accepted when the configuration parses, templates compile, Python hooks import
    /// and resolve, and metrics and filters are known. Exits 1 when any file is rejected.
    Validate(ValidateArgs),
}

#[derive(clap::Args)]
struct ValidateArgs {
    /// Task or group YAML files, or directories of them.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// More directories whose tasks the validated groups may name.
    #[arg(long = "tasks-dir")]
    tasks_dirs: Vec<PathBuf>,
    /// One JSON object per file: `{"path", "accepted", "reason"}`.
    #[arg(long)]
    json: bool,
}

/// Exits with [`ExitCode::Error`] when `validate` rejects any file.
pub fn run(args: Args) -> Result<ExitCode> {
    match args.command {
        Some(Command::Validate(validate)) => run_validate(validate),
        None => list(&args.tasks_dirs, args.json).map(|()| ExitCode::Ok),
    }
}

/// Prints every name of the index: tasks and groups with their file, tags with their members.
fn list(extra: &[PathBuf], json: bool) -> Result<()> {
    let index = TaskIndex::scan(&task_dirs(extra))?;
    warn_skipped(&index);
    let mut out = std::io::stdout().lock();
    for name in index.names() {
        let (kind, location) = match (index.path(name), index.tag_members(name)) {
            (Some(path), _) => {
                let kind = match moebench_tasks::load_yaml(path) {
                    Ok(moebench_tasks::LoadedYaml::Group(_)) => "group",
                    _ => "task",
                };
                (kind, path.display().to_string())
            }
            (None, Some(members)) => ("tag", members.join(",")),
            (None, None) => continue,
        };
        let line = if json {
            let key = if kind == "tag" { "tasks" } else { "path" };
            json!({"name": name, "kind": kind, key: location}).to_string()
        } else {
            format!("{name}\t{kind}\t{location}")
        };
        if writeln!(out, "{line}").is_err() {
            break; // a closed pipe (`| head`) ends the listing
        }
    }
    Ok(())
}

fn warn_skipped(index: &TaskIndex) {
    for (path, reason) in index.skipped() {
        eprintln!("warning: skipped {}: {reason}", path.display());
    }
}

fn run_validate(args: ValidateArgs) -> Result<ExitCode> {
    let mut files = Vec::new();
    let mut dirs = Vec::new();
    for path in &args.paths {
        if path.is_dir() {
            files.extend(yaml_files(path)?);
            dirs.push(path.clone());
        } else if path.is_file() {
            files.push(path.clone());
            dirs.extend(path.parent().map(Path::to_owned));
        } else {
            bail!("{}: no such file or directory", path.display());
        }
    }
    dirs.extend(args.tasks_dirs.iter().cloned());
    dirs.sort();
    dirs.dedup();
    // Directories inside others are scanned with them.
    let roots: Vec<PathBuf> = dirs
        .iter()
        .filter(|dir| {
            !dirs
                .iter()
                .any(|other| other != *dir && dir.starts_with(other))
        })
        .cloned()
        .collect();
    let index = TaskIndex::scan(&roots)?;
    let mut validator = Validator::new(&index);
    let mut out = std::io::stdout().lock();
    let mut verdicts = Vec::with_capacity(files.len());
    for file in &files {
        let verdict = validator.file(file);
        let line = if args.json {
            json!({"path": verdict.path, "accepted": verdict.accepted, "reason": verdict.reason})
                .to_string()
        } else if verdict.accepted {
            format!("accepted {}", verdict.path.display())
        } else {
            format!(
                "rejected {}: {}",
                verdict.path.display(),
                verdict.reason.as_deref().unwrap_or_default()
            )
        };
        if writeln!(out, "{line}").is_err() {
            break;
        }
        verdicts.push(verdict);
    }
    let rejected = summarize(&verdicts);
    Ok(if rejected > 0 {
        ExitCode::Error
    } else {
        ExitCode::Ok
    })
}

/// Prints the acceptance rate and the most common rejection reasons to stderr; returns the
/// number rejected.
fn summarize(verdicts: &[Verdict]) -> usize {
    let accepted = verdicts.iter().filter(|v| v.accepted).count();
    let total = verdicts.len();
    let rate = if total == 0 {
        0.0
    } else {
        100.0 * accepted as f64 / total as f64
    };
    eprintln!("accepted {accepted} of {total} YAML files ({rate:.1}%)");
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    for verdict in verdicts.iter().filter(|v| !v.accepted) {
        let reason = verdict.reason.as_deref().unwrap_or_default();
        *reasons.entry(reason_class(reason)).or_default() += 1;
    }
    let mut reasons: Vec<(String, usize)> = reasons.into_iter().collect();
    reasons.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    for (reason, count) in reasons.iter().take(15) {
        eprintln!("  {count:6}  {reason}");
    }
    total - accepted
}

/// A rejection reason without the parts that differ between files (paths, lines, names in
/// backticks), so that equal causes group together.
fn reason_class(reason: &str) -> String {
    let mut class = String::new();
    for (i, piece) in reason.split('`').enumerate() {
        if i % 2 == 1 {
            class.push_str("`…`");
            continue;
        }
        let words: Vec<String> = piece
            .split(' ')
            .map(|word| {
                if word.contains('/') {
                    "<path>".to_owned()
                } else {
                    word.to_owned()
                }
            })
            .collect();
        class.push_str(&words.join(" "));
    }
    class.chars().take(160).collect()
}

/// `*.yaml` files below `dir`, sorted.
fn yaml_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.is_dir() {
                if path.file_name().is_some_and(|n| n != "__pycache__") {
                    pending.push(path);
                }
            } else if path.extension().is_some_and(|e| e == "yaml") {
                found.push(path);
            }
        }
    }
    found.sort();
    Ok(found)
}
