//! `moebench slurm SUITE --shards N`: a Slurm job array (task I runs `moebench run --shard
//! I+1/N`) and a report job that waits for it, written to RUN_DIR/slurm/ and, with `--submit`,
//! submitted with `sbatch`. The scripts are moebench_suite::cluster's.
use anyhow::{bail, Context, Result};
use moebench_suite::cluster::{
    parse_sbatch_id, slurm_scripts, slurm_submit_script, ShardedRun, SlurmOptions,
};
use moebench_suite::write_atomic;
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(clap::Args)]
pub struct Args {
    /// The suite YAML.
    suite: PathBuf,
    /// Array tasks, one shard each (`run --shard I/N`).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    shards: u32,
    /// Partition of the array and the report job.
    #[arg(long)]
    partition: Option<String>,
    /// GPUs per array task (`--gpus-per-task`).
    #[arg(long, value_name = "G")]
    gpus_per_task: Option<u32>,
    /// Wall-time limit per array task, in Slurm's format (e.g. 04:00:00).
    #[arg(long, value_name = "T")]
    time: Option<String>,
    /// More `#SBATCH` options for the array, as written (repeatable), e.g. --sbatch-arg=--cpus-per-task=8.
    #[arg(long = "sbatch-arg", value_name = "ARG", allow_hyphen_values = true)]
    sbatch_args: Vec<String>,
    /// The run directory on storage every node shares [default: runs/<suite name>].
    #[arg(long)]
    run_dir: Option<PathBuf>,
    /// Submit both jobs with sbatch and print their ids.
    #[arg(long, conflicts_with = "dry_run")]
    submit: bool,
    /// Print the scripts; write and submit nothing.
    #[arg(long)]
    dry_run: bool,
}

/// The suite (checked, so that a bad one fails here rather than in N array tasks) as a
/// [`ShardedRun`] with absolute paths, run from the current directory.
fn sharded_run(suite: &Path, run_dir: Option<&Path>, shards: u32) -> Result<ShardedRun> {
    let loaded = moebench_suite::load_suite(suite, &moebench_methods::catalogue::schemas())?;
    let run_dir = run_dir
        .map(Path::to_path_buf)
        .unwrap_or_else(|| Path::new("runs").join(&loaded.name));
    Ok(ShardedRun {
        name: loaded.name,
        moebench: std::env::current_exe().context("locating the moebench executable")?,
        suite: std::path::absolute(suite)?,
        run_dir: std::path::absolute(run_dir)?,
        workdir: std::env::current_dir()?,
        shards: shards as usize,
    })
}

pub fn run(args: Args) -> Result<()> {
    let sharded = sharded_run(&args.suite, args.run_dir.as_deref(), args.shards)?;
    let options = SlurmOptions {
        partition: args.partition,
        gpus_per_task: args.gpus_per_task,
        time: args.time,
        sbatch_args: args.sbatch_args,
    };
    let scripts = slurm_scripts(&sharded, &options);
    if args.dry_run {
        print!(
            "# ---- array.sbatch ----\n{}# ---- report.sbatch (--dependency=afterany:<array job id>) ----\n{}",
            scripts.array, scripts.report
        );
        return Ok(());
    }
    let dir = sharded.run_dir.join("slurm");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let (array, report, submit) = (
        dir.join("array.sbatch"),
        dir.join("report.sbatch"),
        dir.join("submit.sh"),
    );
    write_atomic(&array, scripts.array.as_bytes())?;
    write_atomic(&report, scripts.report.as_bytes())?;
    write_atomic(&submit, slurm_submit_script(&array, &report).as_bytes())?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&submit, std::fs::Permissions::from_mode(0o755))?;
    if !args.submit {
        println!(
            "wrote {}, {} and {} (run it, or pass --submit)",
            array.display(),
            report.display(),
            submit.display()
        );
        return Ok(());
    }
    let array_id = sbatch(&[array.as_os_str()])?;
    let dependency = format!("--dependency=afterany:{array_id}");
    let report_id = sbatch(&[dependency.as_ref(), report.as_os_str()])?;
    println!(
        "submitted array job {array_id} ({} tasks, {array_id}_0 … {array_id}_{}), report job \
         {report_id} after it; logs in {}",
        sharded.shards,
        sharded.shards - 1,
        dir.display()
    );
    Ok(())
}

/// Submits with `sbatch --parsable ARGS` and returns the job id.
fn sbatch(args: &[&std::ffi::OsStr]) -> Result<String> {
    let out = Command::new("sbatch")
        .arg("--parsable")
        .args(args)
        .output()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => anyhow::anyhow!(
                "sbatch not found on PATH; run on a Slurm login node, or drop --submit and submit \
                 RUN_DIR/slurm/submit.sh there"
            ),
            _ => anyhow::anyhow!("running sbatch: {e}"),
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    match (out.status.success(), parse_sbatch_id(&text)) {
        (true, Some(id)) => Ok(id),
        _ => bail!(
            "sbatch failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ),
    }
}
