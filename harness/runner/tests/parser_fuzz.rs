//! Parser fuzzing (issue #11 item 8): the suite loader and the task YAML loader get mutated
//! copies of the shipped files and random YAML, and must return `Ok` or a typed error — never
//! panic, never hang, never allocate without bound. proptest drives the inputs with a fixed
//! number of cases, so the run is bounded in CI (a few seconds); a watchdog fails any single
//! parse that takes longer than [`PARSE_LIMIT`].
use moebench_methods::catalogue::schemas;
use moebench_suite::load_suite;
use moebench_tasks::TaskIndex;
use proptest::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

/// One parse longer than this is a hang.
const PARSE_LIMIT: Duration = Duration::from_secs(10);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs `parse` on another thread; panics in it are failures, and so is running past the limit.
fn bounded(what: &str, parse: impl FnOnce() + Send + 'static) {
    let (done, finished) = mpsc::channel();
    let handle = std::thread::spawn(move || {
        parse();
        let _ = done.send(());
    });
    match finished.recv_timeout(PARSE_LIMIT) {
        Ok(()) => handle.join().expect("no panic"),
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("{what}: parsing took over {PARSE_LIMIT:?}"),
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            let panic = handle.join().expect_err("the parser thread panicked");
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!("{what}: the parser panicked: {message}");
        }
    }
}

/// Mutations a user's editor (or a bad merge) makes to a YAML file.
#[derive(Debug, Clone)]
enum Mutation {
    /// Delete `len` bytes at `at`.
    Delete { at: usize, len: usize },
    /// Insert a YAML-significant snippet at `at`.
    Insert { at: usize, snippet: usize },
    /// Duplicate the line at `at`.
    DuplicateLine { at: usize },
    /// Cut the file at `at`.
    Truncate { at: usize },
    /// Replace one byte at `at` by `byte` (any byte, invalid UTF-8 included).
    Byte { at: usize, byte: u8 },
}

const SNIPPETS: &[&str] = &[
    ":",
    "- ",
    "  ",
    "\n",
    "{",
    "}",
    "[",
    "]",
    "*a",
    "&a ",
    "!!int ",
    "!function x.y",
    "? ",
    "'",
    "\"",
    "#",
    "\t",
    "~",
    "null",
    "-1",
    "1e999",
    "NaN",
    "0x",
    "9999999999999999999999",
    "{{",
    "}}",
    "{% if %}",
    "\u{feff}",
    "é",
    "<<: *a\n",
];

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1usize..40).prop_map(|(at, len)| Mutation::Delete { at, len }),
        (any::<usize>(), 0..SNIPPETS.len())
            .prop_map(|(at, snippet)| Mutation::Insert { at, snippet }),
        any::<usize>().prop_map(|at| Mutation::DuplicateLine { at }),
        any::<usize>().prop_map(|at| Mutation::Truncate { at }),
        (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Byte { at, byte }),
    ]
}

fn apply(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        let n = bytes.len().max(1);
        match *m {
            Mutation::Delete { at, len } => {
                let at = at % n;
                let end = (at + len).min(bytes.len());
                bytes.drain(at.min(end)..end);
            }
            Mutation::Insert { at, snippet } => {
                let at = at % (bytes.len() + 1);
                bytes.splice(at..at, SNIPPETS[snippet].bytes());
            }
            Mutation::DuplicateLine { at } => {
                let lines: Vec<&[u8]> = bytes.split(|b| *b == b'\n').collect();
                let i = at % lines.len();
                let mut out = Vec::new();
                for (k, line) in lines.iter().enumerate() {
                    out.extend_from_slice(line);
                    out.push(b'\n');
                    if k == i {
                        out.extend_from_slice(line);
                        out.push(b'\n');
                    }
                }
                bytes = out;
            }
            Mutation::Truncate { at } => bytes.truncate(at % n),
            Mutation::Byte { at, byte } => {
                if !bytes.is_empty() {
                    let i = at % bytes.len();
                    bytes[i] = byte;
                }
            }
        }
    }
    bytes
}

/// Loads a suite written as `bytes`; any result but a panic or a hang is fine.
fn load_suite_bytes(bytes: Vec<u8>) {
    bounded("suite", move || {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("suite.yaml");
        std::fs::write(&path, bytes).unwrap();
        let _ = load_suite(&path, &schemas());
    });
}

/// Scans a task directory holding `bytes` as a task YAML (next to a valid include target) and
/// resolves every name it finds; any result but a panic or a hang is fine.
fn load_task_bytes(bytes: Vec<u8>) {
    bounded("task", move || {
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(
            repo().join("suites/tasks/arc_easy.yaml"),
            dir.path().join("base.yaml"),
        )
        .unwrap();
        std::fs::write(dir.path().join("fuzzed.yaml"), bytes).unwrap();
        if let Ok(index) = TaskIndex::scan(&[dir.path()]) {
            let names: Vec<String> = index.names().map(str::to_owned).collect();
            for name in names {
                let _ = index.resolve(&name);
            }
        }
    });
}

fn seeds(paths: &[&str]) -> Vec<Vec<u8>> {
    paths
        .iter()
        .map(|p| std::fs::read(repo().join(p)).unwrap_or_else(|e| panic!("{p}: {e}")))
        .collect()
}

const SUITES: &[&str] = &[
    "suites/smoke.yaml",
    "suites/methods.yaml",
    "suites/nightly.yaml",
];
const TASKS: &[&str] = &[
    "suites/tasks/arc_easy.yaml",
    "suites/tasks/gsm8k.yaml",
    "suites/tasks/hellaswag.yaml",
    "suites/tasks/wikitext.yaml",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn mutated_suites_never_panic_or_hang(seed in 0..SUITES.len(), mutations in proptest::collection::vec(mutation(), 1..6)) {
        load_suite_bytes(apply(seeds(SUITES)[seed].clone(), &mutations));
    }

    #[test]
    fn mutated_task_yamls_never_panic_or_hang(seed in 0..TASKS.len(), mutations in proptest::collection::vec(mutation(), 1..6)) {
        let mut bytes = apply(seeds(TASKS)[seed].clone(), &mutations);
        // Give it a name of its own, and sometimes make it include the valid file.
        bytes.extend_from_slice(b"\ntask: fuzzed\n");
        if mutations.len() % 2 == 0 {
            bytes.extend_from_slice(b"include: base.yaml\n");
        }
        load_task_bytes(bytes);
    }

    #[test]
    fn random_yaml_never_panics(text in "[ -~\n]{0,400}") {
        load_suite_bytes(text.clone().into_bytes());
        load_task_bytes(text.into_bytes());
    }
}

#[test]
fn yaml_alias_bombs_are_bounded() {
    // "Billion laughs": each level doubles the aliases; the loaders must refuse or cap it.
    let mut bomb = String::from("a0: &a0 [x, x]\n");
    for i in 1..40 {
        bomb.push_str(&format!("a{i}: &a{i} [*a{p}, *a{p}]\n", p = i - 1));
    }
    load_suite_bytes(format!("{bomb}name: s\n").into_bytes());
    load_task_bytes(format!("{bomb}task: bomb\n").into_bytes());
}

#[test]
fn deeply_nested_yaml_is_bounded() {
    let deep = "[".repeat(100_000);
    load_suite_bytes(deep.clone().into_bytes());
    load_task_bytes(deep.into_bytes());
}
