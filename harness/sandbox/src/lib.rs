//! moebench-sandbox: runs an untrusted program — model-generated code scored by HumanEval or
//! MBPP — in a contained subprocess, and reports how it ended.
//!
//! On Linux, with [`Isolation::Namespaces`] (the default, and required unless the caller
//! explicitly accepts less), every run gets:
//!
//! - fresh user, mount, network, PID, IPC and UTS namespaces: no network interface but a
//!   down loopback, no view of host processes, and the program is PID 1 of its namespace,
//!   so when it ends (or is killed) the kernel kills every process it started;
//! - a read-only view of the whole filesystem, with an empty private tmpfs on `/tmp`
//!   (size-limited; it holds the inputs and the writable working directory) and on `/run`
//!   (hiding host sockets), and a fresh `/proc`;
//! - an unprivileged identity: host root runs the program as host uid/gid 65534 (so that
//!   `RLIMIT_NPROC`, which the kernel never enforces for root, applies), keeping only
//!   `CAP_DAC_READ_SEARCH` so it can read an interpreter installed under a private home;
//!   other users run it as themselves, without capabilities; `no_new_privs` is set;
//! - rlimits on CPU time, address space, file size, processes and open files, no core dumps;
//! - a wall-clock timeout, after which the whole process group and namespace are killed.
//!
//! See `docs/architecture.md` ("Code execution sandbox") for the threat model and what is not
//! contained.
#[cfg(target_os = "linux")]
mod mounts;
pub mod python;
#[cfg(target_os = "linux")]
mod spawn;

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

/// Resource limits of one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Wall-clock time from start to kill.
    pub wall_time: Duration,
    /// `RLIMIT_CPU`, whole seconds.
    pub cpu_seconds: u64,
    /// `RLIMIT_AS`: address space of each process.
    pub memory_bytes: u64,
    /// `RLIMIT_FSIZE`: largest file the program may write.
    pub file_size_bytes: u64,
    /// `RLIMIT_NPROC`: processes and threads of the sandbox together.
    pub processes: u64,
    /// `RLIMIT_NOFILE`.
    pub open_files: u64,
    /// Size of the private `/tmp` (namespaces only).
    pub scratch_bytes: u64,
    /// Bytes of stdout and of stderr kept; the rest is read and dropped.
    pub output_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            wall_time: Duration::from_secs(10),
            cpu_seconds: 10,
            memory_bytes: 2 << 30,
            file_size_bytes: 16 << 20,
            processes: 32,
            open_files: 256,
            scratch_bytes: 64 << 20,
            output_bytes: 64 << 10,
        }
    }
}

/// How strongly runs are isolated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    /// Namespaces, read-only filesystem, no network, unprivileged identity (see the crate
    /// documentation). Refused where the OS does not allow it.
    Namespaces,
    /// rlimits, a process group and a temporary working directory only: the program can
    /// reach the network and write wherever the invoking user can. Only on explicit request.
    LimitsOnly,
}

/// What a [`Sandbox`] enforces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub limits: Limits,
    pub isolation: Isolation,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            isolation: Isolation::Namespaces,
        }
    }
}

/// One command-line argument of a [`Job`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Arg {
    Literal(OsString),
    /// The absolute path, as the program sees it, of the input file with this name.
    Input(String),
}

/// A program to run once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// Absolute path of the executable (no `PATH` lookup).
    pub program: PathBuf,
    pub args: Vec<Arg>,
    /// The whole environment of the program (nothing is inherited) besides `HOME` and
    /// `TMPDIR`, which point at the working directory.
    pub env: Vec<(String, String)>,
    /// Read-only files given to the program: name (no `/`) and content.
    pub inputs: Vec<(String, Vec<u8>)>,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Termination {
    Exited(i32),
    /// Killed by a signal (e.g. `SIGKILL` at `RLIMIT_CPU`'s hard limit, `SIGSEGV`).
    Signaled(i32),
    /// Still running at the wall-clock limit; killed with everything it started.
    TimedOut,
}

/// The result of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub termination: Termination,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// Whether stdout or stderr exceeded [`Limits::output_bytes`].
    pub output_truncated: bool,
    pub wall_time: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("code execution sandbox: {0}; {hint}", hint = ISOLATION_HINT)]
    Unavailable(String),
    #[error("code execution sandbox: {stage} failed: {source}")]
    Setup {
        stage: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("code execution sandbox: Python interpreter: {0}")]
    Interpreter(String),
    #[error("code execution sandbox: invalid job: {0}")]
    InvalidJob(String),
    #[error("code execution sandbox: {0}")]
    Io(#[from] std::io::Error),
}

const ISOLATION_HINT: &str = "generated code only runs where Linux user, mount, network and PID namespaces are available (e.g. not in a container that forbids unshare(2)); to run it with resource limits only — network and filesystem NOT isolated — opt in explicitly (moebench: --allow-unisolated-code)";

/// Runs jobs under a [`Policy`]. Cheap to share between threads: each run is independent.
#[derive(Debug, Clone)]
pub struct Sandbox {
    policy: Policy,
}

impl Sandbox {
    /// Checks that the OS provides the policy's isolation by running an empty job through
    /// it; refuses (with what to do) when it does not.
    pub fn new(policy: Policy) -> Result<Self, SandboxError> {
        let sandbox = Self { policy };
        sandbox.probe()?;
        Ok(sandbox)
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Runs `job` to completion, the wall-clock limit or a resource limit.
    pub fn run(&self, job: &Job) -> Result<Outcome, SandboxError> {
        if let Some((name, _)) = job
            .inputs
            .iter()
            .find(|(name, _)| name.is_empty() || name.contains(['/', '\0']) || name == "..")
        {
            return Err(SandboxError::InvalidJob(format!(
                "input file name {name:?} must be a plain file name"
            )));
        }
        if !job.program.is_absolute() {
            return Err(SandboxError::InvalidJob(format!(
                "program {} must be an absolute path",
                job.program.display()
            )));
        }
        self.run_job(job)
    }

    #[cfg(target_os = "linux")]
    fn run_job(&self, job: &Job) -> Result<Outcome, SandboxError> {
        spawn::run(&self.policy, Some(job))
    }

    #[cfg(target_os = "linux")]
    fn probe(&self) -> Result<(), SandboxError> {
        match spawn::run(&self.policy, None) {
            Ok(_) => Ok(()),
            Err(SandboxError::Setup { stage, source }) => Err(SandboxError::Unavailable(format!(
                "this system does not allow it ({stage}: {source})"
            ))),
            Err(other) => Err(other),
        }
    }

    #[cfg(not(target_os = "linux"))]
    fn run_job(&self, _job: &Job) -> Result<Outcome, SandboxError> {
        Err(SandboxError::Unavailable("only Linux is supported".into()))
    }

    #[cfg(not(target_os = "linux"))]
    fn probe(&self) -> Result<(), SandboxError> {
        Err(SandboxError::Unavailable("only Linux is supported".into()))
    }
}
