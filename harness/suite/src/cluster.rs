//! What runs a suite's shards (`moebench run --shard I/N`) on a cluster's scheduler, as text:
//! a Slurm job array plus a report job that waits for it (`moebench slurm`), and a Kubernetes
//! Indexed Job (`moebench k8s`). The scheduler does the scheduling, retries and requeues; each
//! task only maps its index to a shard, and the shared run directory merges the shards
//! (docs/scale-out.md).
use serde_json::{json, Value};
use std::fmt::Write;
use std::path::PathBuf;

/// One sharded run of a suite: what every task of the array runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardedRun {
    /// The suite's name, for job names.
    pub name: String,
    /// The `moebench` executable as the tasks see it.
    pub moebench: PathBuf,
    /// The suite file, absolute (or relative to `workdir`).
    pub suite: PathBuf,
    /// The run directory all shards share (a shared file system: NFS, Lustre, a PVC).
    pub run_dir: PathBuf,
    /// The tasks' working directory (where relative paths of the suite resolve from).
    pub workdir: PathBuf,
    pub shards: usize,
}

/// `sbatch` options of the shard tasks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlurmOptions {
    pub partition: Option<String>,
    pub gpus_per_task: Option<u32>,
    /// Wall-time limit per task, in Slurm's format (`HH:MM:SS`, `D-HH`, minutes).
    pub time: Option<String>,
    /// More `#SBATCH` options, written as given (e.g. `--cpus-per-task=8`).
    pub sbatch_args: Vec<String>,
}

/// The two batch scripts of a sharded run on Slurm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlurmScripts {
    /// The job array: task `SLURM_ARRAY_TASK_ID` runs shard `TASK_ID + 1` of `N`.
    pub array: String,
    /// The report of all shards; submitted with `--dependency=afterany:<array job id>`.
    pub report: String,
}

/// `text` quoted for a POSIX shell when it needs to be.
pub fn shell_quote(text: &str) -> String {
    let plain = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
    match plain {
        true => text.to_owned(),
        false => format!("'{}'", text.replace('\'', r"'\''")),
    }
}

fn quoted(path: &std::path::Path) -> String {
    shell_quote(&path.display().to_string())
}

/// The Slurm scripts of `run`. The array is `--requeue`able: a task preempted or on a failed
/// node is requeued by Slurm and its rerun resumes the shard (finished jobs are skipped);
/// output is appended (`--open-mode=append`) so that every attempt's log stays.
pub fn slurm_scripts(run: &ShardedRun, options: &SlurmOptions) -> SlurmScripts {
    let logs = run.run_dir.join("slurm");
    let mut common = String::new();
    if let Some(partition) = &options.partition {
        let _ = writeln!(common, "#SBATCH --partition={partition}");
    }
    let mut array = format!(
        "#!/bin/bash\n# moebench suite `{name}`: array task I runs shard I+1 of {n} into one run directory.\n\
         #SBATCH --job-name=moebench-{name}\n#SBATCH --array=0-{last}\n#SBATCH --requeue\n\
         #SBATCH --ntasks=1\n#SBATCH --open-mode=append\n#SBATCH --output={logs}/shard-%a.out\n{common}",
        name = run.name,
        n = run.shards,
        last = run.shards.saturating_sub(1),
        logs = logs.display(),
    );
    if let Some(gpus) = options.gpus_per_task {
        let _ = writeln!(array, "#SBATCH --gpus-per-task={gpus}");
    }
    if let Some(time) = &options.time {
        let _ = writeln!(array, "#SBATCH --time={time}");
    }
    for arg in &options.sbatch_args {
        let _ = writeln!(array, "#SBATCH {arg}");
    }
    let _ = write!(
        array,
        "set -euo pipefail\ncd {workdir}\nshard=\"$((SLURM_ARRAY_TASK_ID + 1))/{n}\"\n\
         echo \"moebench shard $shard: job ${{SLURM_ARRAY_JOB_ID}}_${{SLURM_ARRAY_TASK_ID}} on $(hostname), \
         restart ${{SLURM_RESTART_COUNT:-0}}\"\n\
         exec {moebench} run {suite} --run-dir {run_dir} --shard \"$shard\" --quiet\n",
        workdir = quoted(&run.workdir),
        n = run.shards,
        moebench = quoted(&run.moebench),
        suite = quoted(&run.suite),
        run_dir = quoted(&run.run_dir),
    );
    let report = format!(
        "#!/bin/bash\n# moebench suite `{name}`: the report of every shard, after the array \
         (submitted with --dependency=afterany:<array job id>).\n\
         #SBATCH --job-name=moebench-{name}-report\n#SBATCH --ntasks=1\n\
         #SBATCH --output={logs}/report.out\n{common}\
         set -euo pipefail\ncd {workdir}\nexec {moebench} report {run_dir}\n",
        name = run.name,
        logs = logs.display(),
        workdir = quoted(&run.workdir),
        moebench = quoted(&run.moebench),
        run_dir = quoted(&run.run_dir),
    );
    SlurmScripts { array, report }
}

/// The shell script that submits both scripts by hand (what `moebench slurm --submit` does).
pub fn slurm_submit_script(array: &std::path::Path, report: &std::path::Path) -> String {
    format!(
        "#!/bin/bash\nset -euo pipefail\narray=$(sbatch --parsable {array})\narray=${{array%%;*}}\n\
         report=$(sbatch --parsable --dependency=afterany:$array {report})\n\
         echo \"array job $array, report job ${{report%%;*}}\"\n",
        array = quoted(array),
        report = quoted(report),
    )
}

/// The job id in `sbatch --parsable` output (`ID` or `ID;CLUSTER`), `None` when there is none.
pub fn parse_sbatch_id(output: &str) -> Option<String> {
    let id = output.trim().split(';').next()?.trim();
    (!id.is_empty() && id.chars().all(|c| c.is_ascii_digit())).then(|| id.to_owned())
}

/// Kubernetes settings of the Indexed Job.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct K8sOptions {
    pub image: String,
    pub gpus: Option<u32>,
    /// A PersistentVolumeClaim (ReadWriteMany) mounted at [`K8S_MOUNT`]: the run directory and
    /// the Hugging Face cache live there.
    pub pvc: Option<String>,
    /// Retries of one index before it counts as failed.
    pub backoff_limit_per_index: u32,
}

/// Where `--pvc` is mounted in the pods.
pub const K8S_MOUNT: &str = "/moebench";

/// A DNS-1123 label (lowercase alphanumerics and `-`, at most 63) from `text`.
pub fn dns_label(text: &str) -> String {
    let mut label: String = text
        .to_ascii_lowercase()
        .chars()
        .map(|c| match c.is_ascii_alphanumeric() {
            true => c,
            false => '-',
        })
        .collect();
    label.truncate(63);
    let label = label.trim_matches('-');
    match label.is_empty() {
        true => "moebench".to_owned(),
        false => label.to_owned(),
    }
}

/// The Indexed Job of `run` (`batch/v1`): `completions` = `parallelism` = shards, pod index
/// `JOB_COMPLETION_INDEX` runs shard `INDEX + 1`; a failed pod is retried per index
/// (`backoffLimitPerIndex`, which needs `restartPolicy: Never`) and resumes its shard.
pub fn k8s_indexed_job(run: &ShardedRun, options: &K8sOptions) -> Value {
    let command = format!(
        "exec {} run {} --run-dir {} --shard \"$((JOB_COMPLETION_INDEX + 1))/{}\" --quiet",
        quoted(&run.moebench),
        quoted(&run.suite),
        quoted(&run.run_dir),
        run.shards
    );
    let mut container = json!({
        "name": "shard",
        "image": options.image,
        "workingDir": run.workdir.display().to_string(),
        "command": ["/bin/sh", "-c", command],
    });
    if let Some(gpus) = options.gpus {
        container["resources"] = json!({"limits": {"nvidia.com/gpu": gpus}});
    }
    let mut pod = json!({"restartPolicy": "Never", "containers": [container]});
    if let Some(pvc) = &options.pvc {
        pod["containers"][0]["volumeMounts"] = json!([{"name": "shared", "mountPath": K8S_MOUNT}]);
        pod["containers"][0]["env"] = json!([{
            "name": "HF_HUB_CACHE",
            "value": format!("{K8S_MOUNT}/hub"),
        }]);
        pod["volumes"] = json!([{"name": "shared", "persistentVolumeClaim": {"claimName": pvc}}]);
    }
    let name = dns_label(&format!("moebench-{}", run.name));
    json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/name": "moebench"}},
        "spec": {
            "completionMode": "Indexed",
            "completions": run.shards,
            "parallelism": run.shards,
            "backoffLimitPerIndex": options.backoff_limit_per_index,
            "template": {"metadata": {"labels": {"app.kubernetes.io/name": "moebench"}}, "spec": pod},
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(shards: usize) -> ShardedRun {
        ShardedRun {
            name: "nightly".into(),
            moebench: "/opt/moebench/bin/moebench".into(),
            suite: "/shared/suites/nightly.yaml".into(),
            run_dir: "/shared/runs/night of 1".into(),
            workdir: "/shared".into(),
            shards,
        }
    }

    #[test]
    fn slurm_array_maps_task_ids_to_one_based_shards() {
        let options = SlurmOptions {
            partition: Some("gpu".into()),
            gpus_per_task: Some(1),
            time: Some("04:00:00".into()),
            sbatch_args: vec!["--cpus-per-task=8".into()],
        };
        let scripts = slurm_scripts(&run(4), &options);
        for line in [
            "#SBATCH --array=0-3",
            "#SBATCH --requeue",
            "#SBATCH --partition=gpu",
            "#SBATCH --gpus-per-task=1",
            "#SBATCH --time=04:00:00",
            "#SBATCH --cpus-per-task=8",
            "shard=\"$((SLURM_ARRAY_TASK_ID + 1))/4\"",
            "exec /opt/moebench/bin/moebench run /shared/suites/nightly.yaml --run-dir '/shared/runs/night of 1' --shard \"$shard\" --quiet",
        ] {
            assert!(
                scripts.array.lines().any(|l| l == line),
                "{line}\n{}",
                scripts.array
            );
        }
        // Every #SBATCH line comes before the first command (sbatch stops reading there).
        let first_command = scripts
            .array
            .lines()
            .position(|l| !l.starts_with('#'))
            .unwrap();
        assert!(!scripts
            .array
            .lines()
            .skip(first_command)
            .any(|l| l.starts_with("#SBATCH")));
        assert!(scripts.report.contains("#SBATCH --partition=gpu\n"));
        assert!(!scripts.report.contains("gpus"), "the report needs no GPU");
        assert!(scripts
            .report
            .ends_with("exec /opt/moebench/bin/moebench report '/shared/runs/night of 1'\n"));
    }

    #[test]
    fn sbatch_ids_and_quoting() {
        assert_eq!(parse_sbatch_id("1234\n").as_deref(), Some("1234"));
        assert_eq!(parse_sbatch_id("1234;cluster\n").as_deref(), Some("1234"));
        assert_eq!(parse_sbatch_id("sbatch: error"), None);
        assert_eq!(parse_sbatch_id(""), None);
        assert_eq!(shell_quote("a/b-c.yaml"), "a/b-c.yaml");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
        let submit = slurm_submit_script("/r/a b.sbatch".as_ref(), "/r/report.sbatch".as_ref());
        assert!(submit.contains("sbatch --parsable '/r/a b.sbatch'"));
        assert!(submit.contains("--dependency=afterany:$array /r/report.sbatch"));
    }

    #[test]
    fn indexed_job_runs_one_shard_per_index_on_the_shared_volume() {
        let options = K8sOptions {
            image: "ghcr.io/lab/moebench:1".into(),
            gpus: Some(1),
            pvc: Some("moebench-runs".into()),
            backoff_limit_per_index: 3,
        };
        let job = k8s_indexed_job(&run(5), &options);
        let spec = &job["spec"];
        assert_eq!(spec["completionMode"], "Indexed");
        assert_eq!(
            (spec["completions"].clone(), spec["parallelism"].clone()),
            (json!(5), json!(5))
        );
        assert_eq!(spec["backoffLimitPerIndex"], 3);
        let pod = &spec["template"]["spec"];
        assert_eq!(pod["restartPolicy"], "Never");
        let container = &pod["containers"][0];
        assert!(container["command"][2]
            .as_str()
            .unwrap()
            .contains("--shard \"$((JOB_COMPLETION_INDEX + 1))/5\""));
        assert_eq!(container["resources"]["limits"]["nvidia.com/gpu"], 1);
        assert_eq!(
            pod["volumes"][0]["persistentVolumeClaim"]["claimName"],
            "moebench-runs"
        );
        assert_eq!(job["metadata"]["name"], "moebench-nightly");
        assert_eq!(dns_label("Moebench_Nightly v2!"), "moebench-nightly-v2");
    }
}
