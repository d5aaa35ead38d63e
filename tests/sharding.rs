//! `moebench run --shard I/N` (issue #13): shards run as separate processes at once, each into
//! its own segment of one run directory, give exactly the numbers of one unsharded run; reruns
//! of a shard and unsharded resumes skip what any segment finished; bad `--shard` values are
//! usage errors.
mod common;

use common::*;
use std::path::Path;

fn run_args<'a>(suite: &'a Path, run_dir: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "run",
        suite.to_str().unwrap(),
        "--run-dir",
        run_dir.to_str().unwrap(),
        "--quiet",
    ];
    args.extend(extra);
    args
}

#[test]
fn three_shards_at_once_equal_one_unsharded_run() {
    let _lock = model_lock();
    let dir = tempfile::tempdir().unwrap();
    let suite = write_tiny_cluster_suite(dir.path(), 2);
    let reference = dir.path().join("reference");
    let out = moebench(&run_args(&suite, &reference, &[]));
    assert!(out.status.success(), "{}", stderr(&out));

    let sharded = dir.path().join("sharded");
    let shards = ["1/3", "2/3", "3/3"];
    let children: Vec<_> = shards
        .iter()
        .map(|s| {
            moebench_command(&repo_root(), &run_args(&suite, &sharded, &["--shard", s]))
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut ran = 0;
    for (shard, child) in shards.iter().zip(children) {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "shard {shard}: {}", stderr(&out));
        let summary = stdout(&out);
        assert!(
            summary.contains(&format!("shard {shard} done")),
            "{summary}"
        );
        let count: usize = summary
            .split(" ran")
            .next()
            .unwrap()
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(count > 0, "every shard gets work: {summary}");
        ran += count;
    }
    assert_eq!(ran, 11, "every runnable job in exactly one shard");
    for i in 1..=3 {
        assert!(sharded
            .join(format!("records.shard-{i}-of-3.jsonl"))
            .is_file());
        assert!(
            !sharded.join(format!(".lock.shard-{i}-of-3")).exists(),
            "lock released"
        );
    }
    assert!(!sharded.join("records.jsonl").exists());
    let built = std::fs::read_dir(sharded.join("models")).unwrap().count();
    assert_eq!(
        built, 2,
        "one copy of each built model, no work directory left"
    );

    let (rows, measures) = comparable_results(&reference);
    assert_eq!(
        rows.len(),
        8,
        "4 groups with a tokenizer × 2 metrics: {rows:#?}"
    );
    assert!(measures.len() >= 7 * 4, "{measures:#?}");
    assert_eq!(comparable_results(&sharded), (rows, measures));

    // Rescoring reads every segment's records and samples; compare finds no difference.
    let rescored = moebench(&["rescore", sharded.to_str().unwrap()]);
    assert!(
        stdout(&rescored).contains("8 metrics rescored, 0 differ"),
        "{}{}",
        stdout(&rescored),
        stderr(&rescored)
    );
    let compared = moebench(&[
        "compare",
        reference.to_str().unwrap(),
        sharded.to_str().unwrap(),
        "--fail-on-regression",
    ]);
    assert!(
        compared.status.success(),
        "{}{}",
        stdout(&compared),
        stderr(&compared)
    );

    // A rerun of a shard, and an unsharded resume, find every job done in some segment.
    let again = moebench(&run_args(&suite, &sharded, &["--shard", "2/3"]));
    assert!(
        stdout(&again).contains(" 0 ran, 0 failed"),
        "{}",
        stdout(&again)
    );
    let whole = moebench(&run_args(&suite, &sharded, &[]));
    assert!(
        stdout(&whole).starts_with("14 jobs: 0 ran, 0 failed, 11 done earlier, 3 skipped"),
        "{}",
        stdout(&whole)
    );
}

#[test]
fn bad_shard_values_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let suite = write_tiny_cluster_suite(dir.path(), 2);
    let run_dir = dir.path().join("run");
    for (bad, why) in [
        ("0/3", "shards are numbered 1 to 3"),
        ("4/3", "shards are numbered 1 to 3"),
        ("x/y", "expected INDEX/COUNT with whole numbers"),
        ("2", "expected INDEX/COUNT"),
    ] {
        let out = moebench(&run_args(&suite, &run_dir, &["--shard", bad]));
        assert_eq!(
            out.status.code(),
            Some(2),
            "--shard {bad}: {}",
            stderr(&out)
        );
        let err = stderr(&out);
        assert!(
            err.starts_with("error: ") && err.contains(why),
            "--shard {bad}: {err}"
        );
        assert!(!err.contains("panicked"));
    }
    assert!(!run_dir.exists(), "nothing written");
}
