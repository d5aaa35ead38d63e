//! One run on Linux: `fork`, isolate, `exec`, watch the clock.
//!
//! With namespaces there are two processes: the *setup* child enters new user, mount, network,
//! PID, IPC and UTS namespaces, waits for the parent to write its uid/gid maps, remounts the
//! filesystem read-only and mounts the private tmpfs; it then forks the *program*, PID 1 of
//! the new PID namespace, which mounts `/proc`, drops to the sandbox identity, sets the
//! rlimits and `exec`s. The setup child waits for it and exits the same way. Both are in a new
//! session whose process group the parent kills at the deadline; killing the program (PID 1)
//! makes the kernel kill everything else in its namespace.
//!
//! After `fork` in a multi-threaded process the children may only make system calls, so
//! every path, argument, flag and file content is prepared by the parent ([`Prepared`]).
//! Setup failures travel back on a close-on-exec pipe as (stage, errno).
use crate::mounts::parse_mountinfo;
use crate::{Arg, Isolation, Job, Limits, Outcome, Policy, SandboxError, Termination};
use libc::{c_char, c_int, c_ulong};
use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The private tmpfs, the read-only inputs and the writable working directory, as the
/// program sees them with namespaces.
const SCRATCH: &str = "/tmp";
const INPUTS: &str = "/tmp/inputs";
const WORK: &str = "/tmp/work";
/// The program's uid and gid inside its user namespace.
const SANDBOX_ID: u32 = 1000;
/// The host uid/gid host root runs programs as (`nobody`).
const NOBODY: u32 = 65534;
const CAP_DAC_READ_SEARCH: u32 = 2;
/// `_LINUX_CAPABILITY_VERSION_3` (linux/capability.h).
const CAPABILITY_VERSION_3: u32 = 0x2008_0522;
/// Fixed descriptor numbers in the children.
const REPORT_FD: c_int = 3;
const SYNC_FD: c_int = 4;
const GO_FD: c_int = 5;

/// Setup steps, reported back by number when one fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
enum Stage {
    Descriptors,
    Session,
    Unshare,
    IdMaps,
    MountPrivate,
    RemountReadOnly,
    MountScratch,
    Inputs,
    Fork,
    MountProc,
    Identity,
    Capabilities,
    NoNewPrivileges,
    Rlimits,
    WorkingDirectory,
    Exec,
}

impl Stage {
    const ALL: [Stage; 16] = [
        Stage::Descriptors,
        Stage::Session,
        Stage::Unshare,
        Stage::IdMaps,
        Stage::MountPrivate,
        Stage::RemountReadOnly,
        Stage::MountScratch,
        Stage::Inputs,
        Stage::Fork,
        Stage::MountProc,
        Stage::Identity,
        Stage::Capabilities,
        Stage::NoNewPrivileges,
        Stage::Rlimits,
        Stage::WorkingDirectory,
        Stage::Exec,
    ];

    fn name(self) -> &'static str {
        match self {
            Stage::Descriptors => "setting up descriptors",
            Stage::Session => "creating a session",
            Stage::Unshare => "creating namespaces (unshare)",
            Stage::IdMaps => "writing uid/gid maps",
            Stage::MountPrivate => "making mounts private",
            Stage::RemountReadOnly => "remounting the filesystem read-only",
            Stage::MountScratch => "mounting the private tmpfs",
            Stage::Inputs => "writing the input files",
            Stage::Fork => "starting the program process",
            Stage::MountProc => "mounting /proc",
            Stage::Identity => "switching to the sandbox user",
            Stage::Capabilities => "setting capabilities",
            Stage::NoNewPrivileges => "setting no_new_privs",
            Stage::Rlimits => "setting rlimits",
            Stage::WorkingDirectory => "entering the working directory",
            Stage::Exec => "starting the program (execve)",
        }
    }
}

/// Everything the children need, allocated before `fork`.
struct Prepared {
    namespaces: bool,
    /// Run the whole setup, then exit 0 instead of `exec` (checks that isolation works).
    probe: bool,
    host_root: bool,
    program: CString,
    /// Keep the strings `argv_ptrs` and `envp_ptrs` point into alive.
    _argv: Vec<CString>,
    _envp: Vec<CString>,
    argv_ptrs: Vec<*const c_char>,
    envp_ptrs: Vec<*const c_char>,
    workdir: CString,
    /// Inputs the setup child writes into the private tmpfs (namespaces only).
    inputs: Vec<(CString, Vec<u8>)>,
    inputs_dir: CString,
    remounts: Vec<(CString, c_ulong)>,
    scratch: CString,
    scratch_options: CString,
    /// `/run`, hidden under an empty tmpfs when it exists.
    run_dir: Option<CString>,
    proc_dir: CString,
    dev_null: CString,
    rlimits: Vec<(libc::__rlimit_resource_t, libc::rlim_t, libc::rlim_t)>,
}

fn cstring(bytes: &[u8]) -> Result<CString, SandboxError> {
    CString::new(bytes)
        .map_err(|_| SandboxError::InvalidJob("a NUL byte in a path, argument or variable".into()))
}

fn rlimits(limits: &Limits) -> Vec<(libc::__rlimit_resource_t, libc::rlim_t, libc::rlim_t)> {
    vec![
        (libc::RLIMIT_CPU, limits.cpu_seconds, limits.cpu_seconds + 1),
        (libc::RLIMIT_AS, limits.memory_bytes, limits.memory_bytes),
        (
            libc::RLIMIT_FSIZE,
            limits.file_size_bytes,
            limits.file_size_bytes,
        ),
        (libc::RLIMIT_NPROC, limits.processes, limits.processes),
        (libc::RLIMIT_NOFILE, limits.open_files, limits.open_files),
        (libc::RLIMIT_CORE, 0, 0),
    ]
}

impl Prepared {
    fn new(
        policy: &Policy,
        job: Option<&Job>,
        host_dir: Option<&Path>,
    ) -> Result<Self, SandboxError> {
        let namespaces = policy.isolation == Isolation::Namespaces;
        let (inputs_dir, workdir) = match host_dir {
            Some(dir) => (dir.join("inputs"), dir.join("work")),
            None => (PathBuf::from(INPUTS), PathBuf::from(WORK)),
        };
        let empty = Job {
            program: PathBuf::from("/"),
            args: Vec::new(),
            env: Vec::new(),
            inputs: Vec::new(),
        };
        let job_or_probe = job.unwrap_or(&empty);
        let mut argv = vec![cstring(job_or_probe.program.as_os_str().as_bytes())?];
        for arg in &job_or_probe.args {
            argv.push(match arg {
                Arg::Literal(text) => cstring(text.as_bytes())?,
                Arg::Input(name) => cstring(inputs_dir.join(name).as_os_str().as_bytes())?,
            });
        }
        let workdir_text = workdir.to_string_lossy().into_owned();
        let mut envp = Vec::new();
        for (key, value) in job_or_probe
            .env
            .iter()
            .filter(|(key, _)| key != "HOME" && key != "TMPDIR")
            .chain([
                &("HOME".to_owned(), workdir_text.clone()),
                &("TMPDIR".to_owned(), workdir_text),
            ])
        {
            envp.push(cstring(format!("{key}={value}").as_bytes())?);
        }
        let remounts = if namespaces {
            let table = std::fs::read_to_string("/proc/self/mountinfo")?;
            parse_mountinfo(&table)
                .into_iter()
                .filter(|mount| !mount.read_only)
                .map(|mount| Ok((cstring(mount.point.as_os_str().as_bytes())?, mount.flags)))
                .collect::<Result<_, SandboxError>>()?
        } else {
            Vec::new()
        };
        let inputs = if namespaces {
            job_or_probe
                .inputs
                .iter()
                .map(|(name, content)| {
                    Ok((
                        cstring(Path::new(INPUTS).join(name).as_os_str().as_bytes())?,
                        content.clone(),
                    ))
                })
                .collect::<Result<_, SandboxError>>()?
        } else {
            Vec::new()
        };
        Ok(Self {
            namespaces,
            probe: job.is_none(),
            // SAFETY: geteuid has no preconditions.
            host_root: unsafe { libc::geteuid() } == 0,
            program: argv[0].clone(),
            argv_ptrs: null_terminated(&argv),
            envp_ptrs: null_terminated(&envp),
            _argv: argv,
            _envp: envp,
            workdir: cstring(workdir.as_os_str().as_bytes())?,
            inputs,
            inputs_dir: cstring(inputs_dir.as_os_str().as_bytes())?,
            remounts,
            scratch: cstring(SCRATCH.as_bytes())?,
            scratch_options: cstring(
                format!("size={},mode=0755", policy.limits.scratch_bytes).as_bytes(),
            )?,
            run_dir: Path::new("/run")
                .is_dir()
                .then(|| cstring(b"/run"))
                .transpose()?,
            proc_dir: cstring(b"/proc")?,
            dev_null: cstring(b"/dev/null")?,
            rlimits: rlimits(&policy.limits),
        })
    }
}

/// A pipe whose two ends close on `exec`.
struct Pipe {
    read: c_int,
    write: c_int,
}

impl Pipe {
    fn new() -> io::Result<Self> {
        let mut fds = [0; 2];
        // SAFETY: fds has room for the two descriptors pipe2 writes.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self {
            read: fds[0],
            write: fds[1],
        })
    }
}

fn close(fd: c_int) {
    // SAFETY: closing a descriptor this module owns.
    unsafe { libc::close(fd) };
}

/// Runs `job` (or, for `None`, the isolation probe) under `policy`.
pub(crate) fn run(policy: &Policy, job: Option<&Job>) -> Result<Outcome, SandboxError> {
    let host_dir = match policy.isolation {
        Isolation::Namespaces => None,
        Isolation::LimitsOnly => Some(host_workspace(job)?),
    };
    let prepared = Prepared::new(policy, job, host_dir.as_ref().map(tempfile::TempDir::path))?;
    let (stdout, stderr, report) = (Pipe::new()?, Pipe::new()?, Pipe::new()?);
    let (sync, go) = (Pipe::new()?, Pipe::new()?);
    let child_fds = [
        stdout.write,
        stderr.write,
        report.write,
        sync.write,
        go.read,
    ];
    let start = Instant::now();
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    // SAFETY: the child only makes system calls on data prepared above (see module docs).
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        let error = io::Error::last_os_error();
        for fd in
            child_fds
                .iter()
                .chain(&[stdout.read, stderr.read, report.read, sync.read, go.write])
        {
            close(*fd);
        }
        return Err(SandboxError::Setup {
            stage: Stage::Fork.name(),
            source: error,
        });
    }
    if pid == 0 {
        child(&prepared, parent, child_fds);
    }
    child_fds.iter().for_each(|fd| close(*fd));
    let mut watch = Watch {
        pid,
        program: None,
        reaped: false,
    };
    let setup = watch.setup(&prepared, &sync, &go, report.read);
    close(sync.read);
    close(go.write);
    close(report.read);
    if let Err(error) = setup {
        close(stdout.read);
        close(stderr.read);
        return Err(error);
    }
    let deadline = start + policy.limits.wall_time;
    let output = collect(
        [stdout.read, stderr.read],
        policy.limits.output_bytes,
        deadline,
    );
    close(stdout.read);
    close(stderr.read);
    let termination = watch.finish(deadline)?;
    let ([stdout, stderr], output_truncated) = output?;
    Ok(Outcome {
        termination,
        stdout,
        stderr,
        output_truncated,
        wall_time: start.elapsed(),
    })
}

/// Without namespaces: a host temporary directory with the inputs and a working directory.
fn host_workspace(job: Option<&Job>) -> Result<tempfile::TempDir, SandboxError> {
    let dir = tempfile::Builder::new()
        .prefix("moebench-sandbox-")
        .tempdir()?;
    std::fs::create_dir(dir.path().join("inputs"))?;
    std::fs::create_dir(dir.path().join("work"))?;
    for (name, content) in job.map(|job| job.inputs.as_slice()).unwrap_or_default() {
        std::fs::write(dir.path().join("inputs").join(name), content)?;
    }
    Ok(dir)
}

/// The parent's view of the child: finishing the setup, then waiting for the end.
struct Watch {
    pid: libc::pid_t,
    /// A pidfd on the program process when it runs in its own PID namespace: killing it makes
    /// the kernel kill the namespace, and the setup child exits only once that is done.
    program: Option<c_int>,
    reaped: bool,
}

impl Drop for Watch {
    /// Never leaves a running or unreaped child behind, whatever path returned early.
    fn drop(&mut self) {
        if !self.reaped {
            self.kill_program();
            self.kill();
            let mut status = 0;
            // SAFETY: reaping our own child.
            unsafe { libc::waitpid(self.pid, &mut status, 0) };
        }
        if let Some(fd) = self.program {
            close(fd);
        }
    }
}

impl Watch {
    fn kill_program(&self) {
        if let Some(fd) = self.program {
            // SAFETY: signalling through a pidfd we own.
            unsafe {
                libc::syscall(
                    libc::SYS_pidfd_send_signal,
                    fd,
                    libc::SIGKILL,
                    std::ptr::null::<u8>(),
                    0,
                )
            };
        }
    }

    fn kill(&self) {
        // SAFETY: signalling our own child's process group (it called setsid) and the child.
        unsafe {
            libc::kill(-self.pid, libc::SIGKILL);
            libc::kill(self.pid, libc::SIGKILL);
        }
    }

    /// Writes the id maps when the child asks (namespaces), then waits for the report pipe to
    /// close: at `exec`, or after a setup failure report.
    fn setup(
        &mut self,
        prepared: &Prepared,
        sync: &Pipe,
        go: &Pipe,
        report: c_int,
    ) -> Result<(), SandboxError> {
        if prepared.namespaces {
            let mut byte = [0u8; 1];
            if read_full(sync.read, &mut byte) == 1 {
                write_id_maps(self.pid, prepared.host_root).map_err(|source| {
                    SandboxError::Setup {
                        stage: Stage::IdMaps.name(),
                        source,
                    }
                })?;
                // SAFETY: writing one byte from a live buffer to our pipe.
                unsafe { libc::write(go.write, [1u8].as_ptr().cast(), 1) };
                let mut pid = [0u8; 4];
                if read_full(sync.read, &mut pid) == 4 {
                    let pid = libc::pid_t::from_le_bytes(pid);
                    // SAFETY: the setup child does not reap the program before our next byte.
                    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as c_int;
                    if fd < 0 {
                        return Err(SandboxError::Setup {
                            stage: Stage::Fork.name(),
                            source: io::Error::last_os_error(),
                        });
                    }
                    self.program = Some(fd);
                    // SAFETY: as above.
                    unsafe { libc::write(go.write, [1u8].as_ptr().cast(), 1) };
                }
            }
        }
        let mut message = [0u8; 8];
        if read_full(report, &mut message) == 8 {
            let stage = u32::from_le_bytes(message[..4].try_into().unwrap_or_default());
            let errno = i32::from_le_bytes(message[4..].try_into().unwrap_or_default());
            let stage = Stage::ALL
                .into_iter()
                .find(|s| *s as u32 == stage)
                .unwrap_or(Stage::Exec);
            return Err(SandboxError::Setup {
                stage: stage.name(),
                source: io::Error::from_raw_os_error(errno),
            });
        }
        Ok(())
    }

    /// Waits for the child until `deadline`, then kills it; kills any process it left in its
    /// group, and reaps it.
    fn finish(&mut self, deadline: Instant) -> Result<Termination, SandboxError> {
        let mut timed_out = false;
        loop {
            // SAFETY: siginfo_t is plain data; waitid fills it.
            let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
            // SAFETY: waiting for our own child, without reaping it (WNOWAIT) so that its
            // process group id cannot be reused before the kill below.
            let found = unsafe {
                libc::waitid(
                    libc::P_PID,
                    self.pid as libc::id_t,
                    &mut info,
                    libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
                )
            };
            // SAFETY: si_pid is set by waitid when a child changed state.
            if found == 0 && unsafe { info.si_pid() } == self.pid {
                break;
            }
            if found != 0 && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                return Err(io::Error::last_os_error().into());
            }
            if Instant::now() >= deadline && !timed_out {
                timed_out = true;
                match self.program {
                    // Wait for the setup child, which exits after the namespace is gone.
                    Some(_) => self.kill_program(),
                    None => break,
                }
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        self.kill();
        let mut status = 0;
        // SAFETY: reaping our own child.
        if unsafe { libc::waitpid(self.pid, &mut status, 0) } < 0 {
            return Err(io::Error::last_os_error().into());
        }
        self.reaped = true;
        Ok(if timed_out {
            Termination::TimedOut
        } else if libc::WIFSIGNALED(status) {
            Termination::Signaled(libc::WTERMSIG(status))
        } else {
            Termination::Exited(libc::WEXITSTATUS(status))
        })
    }
}

/// Host root maps itself (for setup) and runs the program as `nobody`; another user maps
/// only itself, the only mapping it may write.
fn write_id_maps(pid: libc::pid_t, host_root: bool) -> io::Result<()> {
    let proc = PathBuf::from(format!("/proc/{pid}"));
    if host_root {
        let map = format!("0 0 1\n{SANDBOX_ID} {NOBODY} 1\n");
        std::fs::write(proc.join("uid_map"), &map)?;
        std::fs::write(proc.join("gid_map"), &map)
    } else {
        // SAFETY: getuid/getgid have no preconditions.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        std::fs::write(proc.join("setgroups"), "deny")?;
        std::fs::write(proc.join("uid_map"), format!("{SANDBOX_ID} {uid} 1\n"))?;
        std::fs::write(proc.join("gid_map"), format!("{SANDBOX_ID} {gid} 1\n"))
    }
}

/// Reads until `buffer` is full or end of file; returns the bytes read.
fn read_full(fd: c_int, buffer: &mut [u8]) -> usize {
    let mut filled = 0;
    while filled < buffer.len() {
        // SAFETY: reading into the unfilled part of a live buffer.
        let n = unsafe {
            libc::read(
                fd,
                buffer[filled..].as_mut_ptr().cast(),
                buffer.len() - filled,
            )
        };
        match n {
            0 => break,
            n if n > 0 => filled += n as usize,
            _ if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted => {}
            _ => break,
        }
    }
    filled
}

/// Reads both pipes until they close or `deadline`, keeping at most `limit` bytes of each.
fn collect(
    fds: [c_int; 2],
    limit: usize,
    deadline: Instant,
) -> Result<([Vec<u8>; 2], bool), SandboxError> {
    let mut kept = [Vec::new(), Vec::new()];
    let mut open = [true, true];
    let mut truncated = false;
    let mut chunk = vec![0u8; 1 << 16];
    while open.iter().any(|o| *o) {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            break;
        }
        let mut polled: Vec<libc::pollfd> = (0..2)
            .filter(|&i| open[i])
            .map(|i| libc::pollfd {
                fd: fds[i],
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let timeout = remaining.as_millis().clamp(1, c_int::MAX as u128) as c_int;
        // SAFETY: polling a live array of pollfd.
        let ready =
            unsafe { libc::poll(polled.as_mut_ptr(), polled.len() as libc::nfds_t, timeout) };
        if ready < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(io::Error::last_os_error().into());
        }
        for entry in polled.iter().filter(|p| p.revents != 0) {
            let i = if entry.fd == fds[0] { 0 } else { 1 };
            // SAFETY: reading into a live buffer.
            let n = unsafe { libc::read(entry.fd, chunk.as_mut_ptr().cast(), chunk.len()) };
            if n <= 0 {
                if n == 0 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                    open[i] = false;
                }
                continue;
            }
            let room = limit.saturating_sub(kept[i].len());
            let n = n as usize;
            kept[i].extend_from_slice(&chunk[..n.min(room)]);
            truncated |= n > room;
        }
    }
    Ok((kept, truncated))
}

/// Reports a failed setup step to the parent and exits.
fn fail(stage: Stage) -> ! {
    let errno = io::Error::last_os_error().raw_os_error().unwrap_or(0);
    let mut message = [0u8; 8];
    message[..4].copy_from_slice(&(stage as u32).to_le_bytes());
    message[4..].copy_from_slice(&errno.to_le_bytes());
    // SAFETY: async-signal-safe calls on a stack buffer.
    unsafe {
        libc::write(REPORT_FD, message.as_ptr().cast(), message.len());
        libc::_exit(126)
    }
}

fn check(result: c_int, stage: Stage) {
    if result < 0 {
        fail(stage);
    }
}

fn null_terminated(strings: &[CString]) -> Vec<*const c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

/// The forked child. Only system calls from here on (see the module documentation).
fn child(p: &Prepared, parent: libc::pid_t, fds: [c_int; 5]) -> ! {
    // SAFETY: system calls on descriptors and C strings owned by this process.
    unsafe {
        // Move our descriptors above 10 first, then to their fixed numbers.
        let mut high = [0; 5];
        for (slot, fd) in high.iter_mut().zip(fds) {
            *slot = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 10);
            if *slot < 0 {
                libc::_exit(126);
            }
        }
        let null = libc::open(p.dev_null.as_ptr(), libc::O_RDONLY);
        if null < 0
            || libc::dup2(null, 0) < 0
            || libc::dup2(high[0], 1) < 0
            || libc::dup2(high[1], 2) < 0
            || libc::dup2(high[2], REPORT_FD) < 0
            || libc::dup2(high[3], SYNC_FD) < 0
            || libc::dup2(high[4], GO_FD) < 0
        {
            libc::_exit(126);
        }
        libc::syscall(libc::SYS_close_range, GO_FD as u32 + 1, u32::MAX, 0);
        for fd in [REPORT_FD, SYNC_FD, GO_FD] {
            check(
                libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC),
                Stage::Descriptors,
            );
        }
        check(libc::setsid(), Stage::Session);
        check(
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL),
            Stage::Session,
        );
        if libc::getppid() != parent {
            libc::_exit(126);
        }
        if p.namespaces {
            enter_namespaces(p);
        }
        program(p)
    }
}

/// The setup child with namespaces: new namespaces, filesystem view, then the program as
/// PID 1 of the new PID namespace. Never returns in the setup child.
unsafe fn enter_namespaces(p: &Prepared) {
    let flags = libc::CLONE_NEWUSER
        | libc::CLONE_NEWNS
        | libc::CLONE_NEWNET
        | libc::CLONE_NEWPID
        | libc::CLONE_NEWIPC
        | libc::CLONE_NEWUTS;
    check(libc::unshare(flags), Stage::Unshare);
    // Ask the parent for the id maps and wait until they are written.
    let mut byte = 0u8;
    check(
        libc::write(SYNC_FD, (&byte as *const u8).cast(), 1) as c_int,
        Stage::IdMaps,
    );
    if libc::read(GO_FD, (&mut byte as *mut u8).cast(), 1) != 1 {
        libc::_exit(126);
    }
    let none = std::ptr::null::<c_char>();
    let root = c"/";
    check(
        libc::mount(
            none,
            root.as_ptr(),
            none,
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ),
        Stage::MountPrivate,
    );
    for (point, flags) in &p.remounts {
        let flags = libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | libc::MS_NOSUID | flags;
        check(
            libc::mount(none, point.as_ptr(), none, flags, std::ptr::null()),
            Stage::RemountReadOnly,
        );
    }
    let tmpfs = c"tmpfs";
    check(
        libc::mount(
            tmpfs.as_ptr(),
            p.scratch.as_ptr(),
            tmpfs.as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV,
            p.scratch_options.as_ptr().cast(),
        ),
        Stage::MountScratch,
    );
    if let Some(run_dir) = &p.run_dir {
        let empty = c"size=4k,mode=0755";
        check(
            libc::mount(
                tmpfs.as_ptr(),
                run_dir.as_ptr(),
                tmpfs.as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC | libc::MS_RDONLY,
                empty.as_ptr().cast(),
            ),
            Stage::MountScratch,
        );
    }
    check(libc::mkdir(p.inputs_dir.as_ptr(), 0o755), Stage::Inputs);
    check(libc::mkdir(p.workdir.as_ptr(), 0o700), Stage::Inputs);
    check(
        libc::chown(p.workdir.as_ptr(), SANDBOX_ID, SANDBOX_ID),
        Stage::Inputs,
    );
    for (path, content) in &p.inputs {
        let fd = libc::open(
            path.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_CLOEXEC,
            0o444,
        );
        check(fd, Stage::Inputs);
        let mut written = 0;
        while written < content.len() {
            let n = libc::write(
                fd,
                content[written..].as_ptr().cast(),
                content.len() - written,
            );
            check(n as c_int, Stage::Inputs);
            written += n as usize;
        }
        libc::close(fd);
    }
    let pid = libc::fork();
    check(pid, Stage::Fork);
    if pid > 0 {
        // The setup child tells the parent the program's pid, and does not reap the program
        // (which would free the pid) before the parent holds a pidfd on it.
        let bytes = pid.to_le_bytes();
        libc::write(SYNC_FD, bytes.as_ptr().cast(), bytes.len());
        if libc::read(GO_FD, (&mut byte as *mut u8).cast(), 1) != 1 {
            libc::kill(pid, libc::SIGKILL);
        }
        // The report pipe must close when the program execs.
        libc::close(REPORT_FD);
        libc::close(SYNC_FD);
        libc::close(GO_FD);
        let mut status = 0;
        while libc::waitpid(pid, &mut status, 0) != pid {
            if *libc::__errno_location() != libc::EINTR {
                libc::_exit(126);
            }
        }
        if libc::WIFSIGNALED(status) {
            let signal = libc::WTERMSIG(status);
            libc::signal(signal, libc::SIG_DFL);
            libc::kill(libc::getpid(), signal);
        }
        libc::_exit(libc::WEXITSTATUS(status));
    }
    check(
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL),
        Stage::Session,
    );
    let proc = c"proc";
    check(
        libc::mount(
            proc.as_ptr(),
            p.proc_dir.as_ptr(),
            proc.as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            std::ptr::null(),
        ),
        Stage::MountProc,
    );
    drop_identity(p.host_root);
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: c_int,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Becomes the sandbox user. Host root's sandbox user is host `nobody`, given back only
/// `CAP_DAC_READ_SEARCH` (as an ambient capability, so it survives `exec`) to read an
/// interpreter under a private home; other users' sandbox user is themselves, and loses its
/// namespace capabilities at `exec`.
unsafe fn drop_identity(host_root: bool) {
    if host_root {
        check(libc::setgroups(0, std::ptr::null()), Stage::Identity);
        check(libc::prctl(libc::PR_SET_KEEPCAPS, 1), Stage::Identity);
    }
    check(
        libc::setresgid(SANDBOX_ID, SANDBOX_ID, SANDBOX_ID),
        Stage::Identity,
    );
    check(
        libc::setresuid(SANDBOX_ID, SANDBOX_ID, SANDBOX_ID),
        Stage::Identity,
    );
    if host_root {
        let header = CapHeader {
            version: CAPABILITY_VERSION_3,
            pid: 0,
        };
        let bit = 1u32 << CAP_DAC_READ_SEARCH;
        let data = [
            CapData {
                effective: bit,
                permitted: bit,
                inheritable: bit,
            },
            CapData {
                effective: 0,
                permitted: 0,
                inheritable: 0,
            },
        ];
        check(
            libc::syscall(libc::SYS_capset, &header, data.as_ptr()) as c_int,
            Stage::Capabilities,
        );
        check(
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_RAISE,
                CAP_DAC_READ_SEARCH as c_ulong,
                0,
                0,
            ),
            Stage::Capabilities,
        );
    }
}

/// Limits, working directory, `exec` (or exit 0 for the probe).
unsafe fn program(p: &Prepared) -> ! {
    check(
        libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0),
        Stage::NoNewPrivileges,
    );
    for &(resource, soft, hard) in &p.rlimits {
        let limit = libc::rlimit {
            rlim_cur: soft,
            rlim_max: hard,
        };
        check(libc::setrlimit(resource, &limit), Stage::Rlimits);
    }
    check(libc::chdir(p.workdir.as_ptr()), Stage::WorkingDirectory);
    if p.probe {
        libc::_exit(0);
    }
    libc::execve(
        p.program.as_ptr(),
        p.argv_ptrs.as_ptr(),
        p.envp_ptrs.as_ptr(),
    );
    fail(Stage::Exec)
}
