//! `moebench k8s` (issue #13): the Indexed Job it prints is a valid `batch/v1` Job by the
//! Kubernetes JSON schema (fetched by scripts/fetch_k8s_schema.sh from the PyPI package
//! kubernetes-validate; `make test` runs it), and maps each pod index to one shard.
mod common;

use common::*;

const SCHEMA: &str = ".schemas/job-batch-v1-v1.33.0.json";

#[test]
fn indexed_job_manifest_is_valid_by_the_kubernetes_schema() {
    let dir = tempfile::tempdir().unwrap();
    let suite = write_tiny_cluster_suite(dir.path(), 2);
    let out = moebench(&[
        "k8s",
        suite.to_str().unwrap(),
        "--shards",
        "4",
        "--image",
        "registry.example/moebench:0.1",
        "--gpus",
        "1",
        "--pvc",
        "moebench-runs",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let manifest: serde_json::Value = serde_yaml::from_str(&stdout(&out)).unwrap();
    let spec = &manifest["spec"];
    assert_eq!(spec["completionMode"], "Indexed");
    assert_eq!(spec["completions"], 4);
    assert_eq!(spec["parallelism"], 4);
    assert_eq!(spec["backoffLimitPerIndex"], 3);
    let container = &spec["template"]["spec"]["containers"][0];
    let command = container["command"][2].as_str().unwrap();
    assert_eq!(
        command,
        "exec moebench run /moebench/suites/suite.yaml --run-dir /moebench/runs/cluster --shard \"$((JOB_COMPLETION_INDEX + 1))/4\" --quiet"
    );
    assert_eq!(container["env"][0]["value"], "/moebench/hub");

    let path = repo_root().join(SCHEMA);
    let Ok(text) = std::fs::read_to_string(&path) else {
        eprintln!(
            "SKIP indexed_job_manifest_is_valid_by_the_kubernetes_schema: {} is missing; run scripts/fetch_k8s_schema.sh (make test does)",
            path.display()
        );
        return;
    };
    let schema: serde_json::Value = serde_json::from_str(&text).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&manifest)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}\n{manifest:#}");
    // The schema does reject what Kubernetes would: a typo'd field, a count of the wrong type.
    let mut bad = manifest.clone();
    bad["spec"]["completionsMode"] = "Indexed".into();
    assert!(!validator.is_valid(&bad));
    let mut bad = manifest;
    bad["spec"]["parallelism"] = "four".into();
    assert!(!validator.is_valid(&bad));
}
