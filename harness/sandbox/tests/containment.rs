//! Malicious programs are contained: each test runs a program that tries to harm the host
//! through the raw interpreter (no Python-level guard) and checks, from the host, that it
//! did not. Skips visibly where the OS forbids the namespaces the sandbox needs.
use moebench_sandbox::python::{PythonChecker, Verdict};
use moebench_sandbox::{Arg, Isolation, Job, Limits, Outcome, Policy, Sandbox, Termination};
use std::path::{Path, PathBuf};
use std::time::Duration;

fn sandbox(test: &str, limits: Limits) -> Option<Sandbox> {
    match Sandbox::new(Policy {
        limits,
        isolation: Isolation::Namespaces,
    }) {
        Ok(sandbox) => Some(sandbox),
        Err(error) => {
            eprintln!("SKIP {test}: {error}");
            None
        }
    }
}

/// The host's Python (`sys.executable` of `python3`).
fn python() -> PathBuf {
    let out = std::process::Command::new("python3")
        .args(["-c", "import sys; sys.stdout.write(sys.executable)"])
        .output()
        .expect("python3 runs");
    PathBuf::from(String::from_utf8(out.stdout).unwrap())
}

/// Runs a Python script directly (no runner, no guard), with a marker argument that lets the
/// test find leftover processes.
fn run_python(sandbox: &Sandbox, script: &str, marker: &str) -> Outcome {
    sandbox
        .run(&Job {
            program: python(),
            args: vec![Arg::Input("script.py".into()), Arg::Literal(marker.into())],
            env: vec![("PATH".into(), "/usr/bin:/bin".into())],
            inputs: vec![("script.py".into(), script.as_bytes().to_vec())],
        })
        .expect("the sandbox runs the job")
}

fn stdout(outcome: &Outcome) -> String {
    String::from_utf8_lossy(&outcome.stdout).into_owned()
}

fn unique(name: &str) -> String {
    format!("moebench-sandbox-test-{name}-{}", std::process::id())
}

/// Host processes whose command line contains `marker`.
fn processes_with(marker: &str) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| std::fs::read(entry.ok()?.path().join("cmdline")).ok())
        .filter(|cmdline| String::from_utf8_lossy(cmdline).contains(marker))
        .count()
}

fn limits(wall: u64) -> Limits {
    Limits {
        wall_time: Duration::from_secs(wall),
        cpu_seconds: wall,
        ..Limits::default()
    }
}

#[test]
fn runs_a_program_with_inputs_and_reports_its_exit() {
    let Some(sandbox) = sandbox("runs_a_program", limits(10)) else {
        return;
    };
    let outcome = run_python(
        &sandbox,
        "import os, sys\nprint(open(sys.argv[0]).read().count(chr(10)), os.getcwd())\nsys.exit(3)",
        "m",
    );
    assert_eq!(outcome.termination, Termination::Exited(3));
    assert_eq!(stdout(&outcome), "2 /tmp/work\n");
}

#[test]
fn an_infinite_loop_is_killed_at_the_wall_clock_limit() {
    let Some(sandbox) = sandbox("infinite_loop", limits(1)) else {
        return;
    };
    let marker = unique("loop");
    let outcome = run_python(&sandbox, "while True:\n    pass\n", &marker);
    assert_eq!(outcome.termination, Termination::TimedOut);
    assert!(
        outcome.wall_time < Duration::from_secs(5),
        "{:?}",
        outcome.wall_time
    );
    assert_eq!(processes_with(&marker), 0, "the loop survived");
}

#[test]
fn a_fork_bomb_hits_the_process_limit_and_dies_with_its_namespace() {
    let Some(sandbox) = sandbox("fork_bomb", limits(3)) else {
        return;
    };
    let marker = unique("forkbomb");
    // Count how many forks succeed before the kernel refuses, then bomb for real: every
    // process forks forever and ignores failures.
    let script = "import os, sys, time\n\
                  n = 0\n\
                  while True:\n\
                  \x20   try:\n\
                  \x20       pid = os.fork()\n\
                  \x20   except OSError:\n\
                  \x20       break\n\
                  \x20   if pid == 0:\n\
                  \x20       time.sleep(60)\n\
                  \x20       os._exit(0)\n\
                  \x20   n += 1\n\
                  print(n, flush=True)\n\
                  while True:\n\
                  \x20   try:\n\
                  \x20       os.fork()\n\
                  \x20   except OSError:\n\
                  \x20       pass\n";
    let outcome = run_python(&sandbox, script, &marker);
    assert_eq!(outcome.termination, Termination::TimedOut);
    let forks: u64 = stdout(&outcome).trim().parse().expect("the fork count");
    assert!(
        forks < Limits::default().processes,
        "{forks} forks succeeded under a limit of {}",
        Limits::default().processes
    );
    assert_eq!(processes_with(&marker), 0, "fork bomb processes survived");
}

#[test]
fn writes_outside_the_working_directory_do_not_reach_the_host() {
    let Some(sandbox) = sandbox("writes_outside", limits(10)) else {
        return;
    };
    let host_dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let in_project = host_dir.path().join("written-by-sandbox");
    let in_tmp = Path::new("/tmp").join(unique("tmp-write"));
    let script = format!(
        "import sys\n\
         for path in [{:?}, {:?}, 'inside']:\n\
         \x20   try:\n\
         \x20       open(path, 'w').write('x')\n\
         \x20       print(path, 'written')\n\
         \x20   except OSError as error:\n\
         \x20       print(path, type(error).__name__, error.errno)\n",
        in_project, in_tmp
    );
    let outcome = run_python(&sandbox, &script, "m");
    assert_eq!(outcome.termination, Termination::Exited(0));
    let report = stdout(&outcome);
    // Read-only outside the working directory (EROFS); a checkout under /tmp is hidden by the
    // sandbox's own /tmp instead (ENOENT). Either way nothing reaches the host (checked below).
    let refused = if in_project.starts_with("/tmp") {
        format!("{} FileNotFoundError 2", in_project.display())
    } else {
        format!("{} OSError 30", in_project.display())
    };
    assert!(report.contains(&refused), "{report}");
    assert!(report.contains("inside written"), "{report}");
    assert!(
        !in_project.exists(),
        "the sandbox wrote {}",
        in_project.display()
    );
    assert!(!in_tmp.exists(), "the sandbox wrote {}", in_tmp.display());
}

#[test]
fn the_network_is_unreachable() {
    let Some(sandbox) = sandbox("network", limits(10)) else {
        return;
    };
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let script = format!(
        "import socket\n\
         for host in ['127.0.0.1', '1.1.1.1']:\n\
         \x20   try:\n\
         \x20       socket.create_connection((host, {port}), timeout=2)\n\
         \x20       print(host, 'connected')\n\
         \x20   except OSError as error:\n\
         \x20       print(host, 'refused', error.errno)\n"
    );
    let outcome = run_python(&sandbox, &script, "m");
    let report = stdout(&outcome);
    assert!(!report.contains("connected"), "{report}");
    assert_eq!(report.matches("refused").count(), 2, "{report}");
    assert!(
        listener.accept().is_err(),
        "the host listener received a connection from the sandbox"
    );
}

#[test]
fn a_shell_command_runs_inside_the_sandbox() {
    let Some(sandbox) = sandbox("shell", limits(10)) else {
        return;
    };
    let host_dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let target = host_dir.path().join("touched-by-shell");
    let script = format!(
        "import posix\nprint(posix.system('touch {} 2>/dev/null') != 0)\n",
        target.display()
    );
    let outcome = run_python(&sandbox, &script, "m");
    assert_eq!(stdout(&outcome), "True\n");
    assert!(!target.exists(), "the shell wrote {}", target.display());
}

#[test]
fn memory_beyond_the_limit_is_refused() {
    let limits = Limits {
        memory_bytes: 512 << 20,
        ..limits(10)
    };
    let Some(sandbox) = sandbox("memory", limits) else {
        return;
    };
    let outcome = run_python(
        &sandbox,
        "try:\n    x = bytearray(1 << 30)\n    print('allocated')\nexcept MemoryError:\n    print('refused')\n",
        "m",
    );
    assert_eq!(stdout(&outcome), "refused\n");
}

#[test]
fn output_beyond_the_limit_is_dropped() {
    let limits = Limits {
        output_bytes: 1000,
        ..limits(10)
    };
    let Some(sandbox) = sandbox("output", limits) else {
        return;
    };
    let outcome = run_python(&sandbox, "print('x' * 100000)", "m");
    assert_eq!(outcome.stdout.len(), 1000);
    assert!(outcome.output_truncated);
    assert_eq!(outcome.termination, Termination::Exited(0));
}

#[test]
fn the_checker_passes_correct_programs_and_fails_the_rest() {
    let Some(sandbox) = sandbox("checker", limits(8)) else {
        return;
    };
    let checker = PythonChecker::new(sandbox, "python3".as_ref(), Duration::from_secs(3)).unwrap();
    let cases: &[(&str, &str)] = &[
        (
            "def add(a, b):\n    return a + b\nassert add(2, 3) == 5\n",
            "passed",
        ),
        (
            "def add(a, b):\n    return a * b\nassert add(2, 3) == 5\n",
            "failed",
        ),
        ("def f(:\n", "failed"),
        ("while True:\n    pass\n", "timed out"),
        // lm-eval's code_eval runs programs with fresh globals: `__main__` blocks do not run.
        (
            "if __name__ == '__main__':\n    raise SystemExit(1)\n",
            "passed",
        ),
        // ... and disables os.system and friends, and makes stdin unreadable.
        ("import os\nos.system('true')\n", "failed"),
        ("input()\n", "failed"),
        ("print('noise ' * 10000)\n", "passed"),
    ];
    for (program, want) in cases {
        let verdict = checker.check(program).unwrap();
        let got = match &verdict {
            Verdict::Passed => "passed",
            Verdict::Failed(_) => "failed",
            Verdict::TimedOut => "timed out",
        };
        assert_eq!(got, *want, "{program:?}: {verdict:?}");
    }
}

#[test]
fn the_limits_only_isolation_still_kills_at_the_wall_clock_limit() {
    // LimitsOnly is the explicit opt-out; it still applies rlimits and the wall clock.
    let sandbox = Sandbox::new(Policy {
        limits: limits(1),
        isolation: Isolation::LimitsOnly,
    })
    .unwrap();
    let marker = unique("limits-only-loop");
    let outcome = run_python(&sandbox, "while True:\n    pass\n", &marker);
    assert_eq!(outcome.termination, Termination::TimedOut);
    assert_eq!(processes_with(&marker), 0);
}
