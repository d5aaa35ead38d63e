//! `moebench k8s SUITE --shards N --image IMG`: a Kubernetes Indexed Job (pod index I runs
//! `moebench run --shard I+1/N`) as YAML on stdout, for `kubectl apply -f -`. The manifest is
//! moebench_suite::cluster's.
use anyhow::Result;
use moebench_suite::cluster::{k8s_indexed_job, K8sOptions, ShardedRun, K8S_MOUNT};
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct Args {
    /// The suite YAML, checked here; the pods read it at --suite-in-pod.
    suite: PathBuf,
    /// Pods, one shard each (`run --shard I/N`).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    shards: u32,
    /// Container image with moebench on its PATH.
    #[arg(long)]
    image: String,
    /// GPUs per pod (`nvidia.com/gpu`).
    #[arg(long, value_name = "G")]
    gpus: Option<u32>,
    /// A ReadWriteMany PersistentVolumeClaim mounted at /moebench: the run directory and the
    /// Hugging Face cache (HF_HUB_CACHE=/moebench/hub) live there.
    #[arg(long, value_name = "NAME")]
    pvc: Option<String>,
    /// The suite's path inside the pods [default: /moebench/suites/<file name> with --pvc,
    /// else the path given].
    #[arg(long, value_name = "PATH")]
    suite_in_pod: Option<PathBuf>,
    /// The run directory inside the pods [default: /moebench/runs/<suite name> with --pvc,
    /// else runs/<suite name>].
    #[arg(long)]
    run_dir: Option<PathBuf>,
    /// Retries of one shard before it counts as failed.
    #[arg(long, default_value_t = 3)]
    backoff_limit_per_index: u32,
}

pub fn run(args: Args) -> Result<()> {
    let loaded = moebench_suite::load_suite(&args.suite, &moebench_methods::catalogue::schemas())?;
    let shared = args.pvc.as_ref().map(|_| Path::new(K8S_MOUNT));
    let file_name = args
        .suite
        .file_name()
        .map(PathBuf::from)
        .unwrap_or_default();
    let suite = match (&args.suite_in_pod, shared) {
        (Some(path), _) => path.clone(),
        (None, Some(mount)) => mount.join("suites").join(file_name),
        (None, None) => args.suite.clone(),
    };
    let run_dir = match (&args.run_dir, shared) {
        (Some(dir), _) => dir.clone(),
        (None, Some(mount)) => mount.join("runs").join(&loaded.name),
        (None, None) => Path::new("runs").join(&loaded.name),
    };
    if args.pvc.is_none() {
        eprintln!(
            "warning: no --pvc: {} must be on storage every pod shares, or the shards' results \
             stay in their pods",
            run_dir.display()
        );
    }
    let sharded = ShardedRun {
        name: loaded.name,
        moebench: "moebench".into(),
        suite,
        run_dir,
        workdir: shared.map_or_else(|| "/".into(), Path::to_path_buf),
        shards: args.shards as usize,
    };
    let options = K8sOptions {
        image: args.image,
        gpus: args.gpus,
        pvc: args.pvc,
        backoff_limit_per_index: args.backoff_limit_per_index,
    };
    print!(
        "{}",
        serde_yaml::to_string(&k8s_indexed_job(&sharded, &options))?
    );
    Ok(())
}
