//! The staged apply between fork and exec.
//!
//! Two processes run this code, both forked from the Hall's spawner thread and both before any
//! worker code exists:
//!
//! - **init** (created by `clone3` with the namespaces, born inside the cgroup leaf): arranges
//!   its descriptors (0–2 stdio, 3 the status pipe, 4 the result pipe, 5 the Landlock ruleset)
//!   and closes every other inherited one, starts a new session, sets the parent-death signal,
//!   writes the user-namespace maps when the Hall is not root, resets signal dispositions, brings
//!   up loopback in the new network namespace, sets the rlimits (inherited by the whole tree),
//!   then forks the worker and becomes its reaper: PID 1 of the PID namespace (when it exits the
//!   kernel kills every process left in it) or a child subreaper, forwarding SIGTERM to the tree
//!   and reporting the worker's exit status on the result pipe.
//! - **worker**: restores the signal mask, sets its identity (supplementary groups cleared, then
//!   gid, then uid), the parent-death signal again (a credential change clears it), its working
//!   directory, `no_new_privs`, Landlock (`landlock_restrict_self` on the ruleset the Hall built),
//!   seccomp (last) and execs.
//!
//! Every stage writes a 16-byte record to the close-on-exec status pipe: ok, degraded (a
//! best-effort stage failed and the run continued) or failed (with errno; the process exits).
//! The pipe reaches end-of-file when the exec succeeds, so the Hall learns the exact stage and
//! errno of any failure instead of a generic "spawn failed".
//!
//! Rules for this file: the Hall is multi-threaded and these processes are raw `clone`s of it,
//! so between fork and exec only async-signal-safe system calls are made. No allocation, no
//! locks, no panics, no glibc wrappers that consult thread bookkeeping (credentials are changed
//! with raw `setresuid`/`setresgid`/`setgroups` system calls). Everything the children need is
//! prepared by the Hall in [`ChildSpec`] and only read here.

use std::ffi::{CStr, CString};

use nix::libc::{self, c_int};

/// Descriptor numbers inside the init and worker processes.
pub(crate) const FD_STATUS: c_int = 3;
pub(crate) const FD_RESULT: c_int = 4;
pub(crate) const FD_LANDLOCK: c_int = 5;

/// Exit code of a process whose stage failed (after writing the failure record).
pub(crate) const EXIT_STAGE_FAILED: c_int = 121;
/// Exit code of init when its descriptors could not even be arranged (no record possible).
pub(crate) const EXIT_FDS_FAILED: c_int = 122;

const RECORD_MAGIC: u32 = 0x5743_5053; // "WCPS"
const RESULT_MAGIC: u32 = 0x5743_5052; // "WCPR"

/// The stages, in the order they are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Stage {
    Fds = 1,
    Session = 2,
    ParentDeath = 3,
    UserNamespace = 4,
    Signals = 5,
    Loopback = 6,
    Hostname = 7,
    Rlimits = 8,
    Subreaper = 9,
    Fork = 10,
    WorkerSignals = 11,
    WorkerProcessGroup = 12,
    Identity = 13,
    WorkerParentDeath = 14,
    Cwd = 15,
    NoNewPrivs = 16,
    Landlock = 17,
    Seccomp = 18,
    Exec = 19,
}

impl Stage {
    pub fn from_u8(v: u8) -> Option<Stage> {
        use Stage::*;
        Some(match v {
            1 => Fds,
            2 => Session,
            3 => ParentDeath,
            4 => UserNamespace,
            5 => Signals,
            6 => Loopback,
            7 => Hostname,
            8 => Rlimits,
            9 => Subreaper,
            10 => Fork,
            11 => WorkerSignals,
            12 => WorkerProcessGroup,
            13 => Identity,
            14 => WorkerParentDeath,
            15 => Cwd,
            16 => NoNewPrivs,
            17 => Landlock,
            18 => Seccomp,
            19 => Exec,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        use Stage::*;
        match self {
            Fds => "fds",
            Session => "session",
            ParentDeath => "parent_death",
            UserNamespace => "user_namespace",
            Signals => "signals",
            Loopback => "loopback",
            Hostname => "hostname",
            Rlimits => "rlimits",
            Subreaper => "subreaper",
            Fork => "fork",
            WorkerSignals => "worker_signals",
            WorkerProcessGroup => "worker_process_group",
            Identity => "identity",
            WorkerParentDeath => "worker_parent_death",
            Cwd => "cwd",
            NoNewPrivs => "no_new_privs",
            Landlock => "landlock",
            Seccomp => "seccomp",
            Exec => "exec",
        }
    }

    pub fn process(self) -> &'static str {
        if (self as u8) < Stage::WorkerSignals as u8 {
            "init"
        } else {
            "worker"
        }
    }
}

/// A stage's outcome on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Outcome {
    Ok = 1,
    Degraded = 2,
    Failed = 3,
}

/// One status record (16 bytes, written atomically: well under PIPE_BUF).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct Record {
    magic: u32,
    pub stage: u8,
    pub outcome: u8,
    _pad: u16,
    pub errno: i32,
    pub value: i32,
}

pub(crate) const RECORD_LEN: usize = std::mem::size_of::<Record>();

impl Record {
    /// Parses records from the bytes read off the status pipe (ignores a torn tail).
    pub fn parse_all(bytes: &[u8]) -> Vec<Record> {
        bytes
            .chunks_exact(RECORD_LEN)
            .filter_map(|c| {
                let magic = u32::from_ne_bytes([c[0], c[1], c[2], c[3]]);
                (magic == RECORD_MAGIC).then(|| Record {
                    magic,
                    stage: c[4],
                    outcome: c[5],
                    _pad: 0,
                    errno: i32::from_ne_bytes([c[8], c[9], c[10], c[11]]),
                    value: i32::from_ne_bytes([c[12], c[13], c[14], c[15]]),
                })
            })
            .collect()
    }

    pub fn outcome(&self) -> Option<Outcome> {
        match self.outcome {
            1 => Some(Outcome::Ok),
            2 => Some(Outcome::Degraded),
            3 => Some(Outcome::Failed),
            _ => None,
        }
    }
}

/// What init reports when the worker has exited (24 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct ResultRecord {
    magic: u32,
    /// 1 exited (value = code), 2 killed by a signal (value = signal).
    pub kind: u32,
    pub value: i32,
    _pad: u32,
    /// Init's own peak RSS (KiB): the copy of the Hall every pre-exec process starts from.
    pub init_max_rss_kib: i64,
}

pub(crate) const RESULT_LEN: usize = std::mem::size_of::<ResultRecord>();

impl ResultRecord {
    pub fn parse(bytes: &[u8]) -> Option<ResultRecord> {
        if bytes.len() < RESULT_LEN {
            return None;
        }
        let u32_at =
            |i: usize| u32::from_ne_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        if u32_at(0) != RESULT_MAGIC {
            return None;
        }
        let mut rss = [0u8; 8];
        rss.copy_from_slice(&bytes[16..24]);
        Some(ResultRecord {
            magic: RESULT_MAGIC,
            kind: u32_at(4),
            value: u32_at(8) as i32,
            _pad: 0,
            init_max_rss_kib: i64::from_ne_bytes(rss),
        })
    }
}

/// One rlimit to set (`resource`, soft, hard).
#[derive(Debug, Clone, Copy)]
pub(crate) struct RawRlimit {
    pub resource: c_int,
    pub soft: u64,
    pub hard: u64,
}

/// Everything the init and worker processes need, prepared by the Hall before the clone.
/// Owned data lives here; the children only read it (from their copy of the Hall's memory).
pub(crate) struct ChildSpec {
    /// Descriptors in the Hall to become 0, 1, 2, 3, 4 and (optionally) 5 in init.
    pub src_stdin: c_int,
    pub src_stdout: c_int,
    pub src_stderr: c_int,
    pub src_status: c_int,
    pub src_result: c_int,
    pub src_landlock: c_int,
    pub pid_ns: bool,
    pub loopback: bool,
    pub hostname: Option<CString>,
    /// `(uid_map, gid_map)` contents when the Hall is not root and a user namespace is created.
    pub user_maps: Option<(CString, CString)>,
    pub rlimits: Vec<RawRlimit>,
    pub cwd: CString,
    /// `(uid, gid)` to switch to (the Hall is root).
    pub identity: Option<(u32, u32)>,
    pub landlock_required: bool,
    /// Seccomp programs to install, in order, and whether a failure aborts.
    pub seccomp: Vec<libc::sock_fprog>,
    pub seccomp_required: bool,
    pub program: CString,
    pub argv_ptrs: Vec<*const libc::c_char>,
    pub envp_ptrs: Vec<*const libc::c_char>,
    /// Owns the strings `argv_ptrs` / `envp_ptrs` point into.
    pub _strings: Vec<CString>,
    /// Owns the BPF instructions the `seccomp` programs point into.
    pub _bpf: Vec<Vec<libc::sock_filter>>,
    /// The worker's stack until it execs (it shares init's address space until then).
    pub worker_stack: Vec<u8>,
}

// SAFETY: the raw pointers point into data owned by the same struct, which is only read.
unsafe impl Send for ChildSpec {}
unsafe impl Sync for ChildSpec {}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Stage records are batched on the stack and written in a few `write`s (before the parent-
/// death check, before the fork, before the exec, or at a failure): every write wakes the
/// Hall's supervisor, and on a loaded host each wake-up is a trip through the scheduler.
struct Log {
    buf: [Record; 24],
    n: usize,
}

impl Log {
    fn new() -> Log {
        Log {
            buf: [Record {
                magic: RECORD_MAGIC,
                stage: 0,
                outcome: 0,
                _pad: 0,
                errno: 0,
                value: 0,
            }; 24],
            n: 0,
        }
    }

    fn push(&mut self, stage: Stage, outcome: Outcome, err: i32) {
        if self.n == self.buf.len() {
            self.flush();
        }
        self.buf[self.n] = Record {
            magic: RECORD_MAGIC,
            stage: stage as u8,
            outcome: outcome as u8,
            _pad: 0,
            errno: err,
            value: 0,
        };
        self.n += 1;
    }

    /// Writes the batch (one atomic write: at most 384 bytes < PIPE_BUF). False when the Hall's
    /// end of the pipe is gone (EPIPE: SIGPIPE is ignored in the Hall and so here).
    fn flush(&mut self) -> bool {
        if self.n == 0 {
            return true;
        }
        let len = self.n * RECORD_LEN;
        self.n = 0;
        // SAFETY: writing plain structs from our own buffer.
        let w = unsafe { libc::write(FD_STATUS, self.buf.as_ptr() as *const libc::c_void, len) };
        w == len as isize
    }

    /// Reports a fatal stage failure and exits.
    fn fail(&mut self, stage: Stage, err: i32) -> ! {
        self.push(stage, Outcome::Failed, err);
        self.flush();
        // SAFETY: _exit is async-signal-safe.
        unsafe { libc::_exit(EXIT_STAGE_FAILED) }
    }

    /// Records a stage's result: ok, degraded (best effort) or fatal.
    fn stage(&mut self, stage: Stage, ok: bool, required: bool) {
        if ok {
            self.push(stage, Outcome::Ok, 0);
        } else {
            let e = errno();
            if required {
                self.fail(stage, e);
            }
            self.push(stage, Outcome::Degraded, e);
        }
    }
}

fn write_file(path: &CStr, data: &CStr) -> bool {
    // SAFETY: NUL-terminated paths and data prepared by the Hall.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return false;
        }
        let bytes = data.to_bytes();
        let n = libc::write(fd, bytes.as_ptr() as *const libc::c_void, bytes.len());
        libc::close(fd);
        n == bytes.len() as isize
    }
}

/// Signals init waits for (blocked, taken with `sigwaitinfo`).
fn init_sigset() -> libc::sigset_t {
    // SAFETY: sigset operations on a local value.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in [
            libc::SIGCHLD,
            libc::SIGTERM,
            libc::SIGINT,
            libc::SIGHUP,
            libc::SIGQUIT,
        ] {
            libc::sigaddset(&mut set, sig);
        }
        set
    }
}

/// init: runs in the process `clone3` created. Never returns.
///
/// # Safety
/// Must only be called in a freshly cloned child of the spawner thread (see module docs).
pub(crate) unsafe fn init_main(spec: &ChildSpec) -> ! {
    // SAFETY (whole function): only system calls on prepared data; see the module docs.
    unsafe {
        // ---- fds: move the sources above every one of them, then into place ---------------
        let srcs = [
            spec.src_stdin,
            spec.src_stdout,
            spec.src_stderr,
            spec.src_status,
            spec.src_result,
            spec.src_landlock,
        ];
        let mut base = 10;
        for s in srcs {
            if s >= base {
                base = s + 1;
            }
        }
        let mut tmp = [-1 as c_int; 6];
        for (i, s) in srcs.iter().enumerate() {
            if *s >= 0 {
                tmp[i] = libc::fcntl(*s, libc::F_DUPFD_CLOEXEC, base);
                if tmp[i] < 0 {
                    libc::_exit(EXIT_FDS_FAILED);
                }
            }
        }
        for (i, t) in tmp.iter().enumerate() {
            if *t >= 0 && libc::dup2(*t, i as c_int) < 0 {
                libc::_exit(EXIT_FDS_FAILED);
            }
        }
        let first_free = if spec.src_landlock >= 0 {
            FD_LANDLOCK + 1
        } else {
            FD_LANDLOCK
        };
        if libc::syscall(libc::SYS_close_range, first_free as u32, u32::MAX, 0u32) < 0 {
            // Pre-5.9 kernels: close one by one up to the descriptor limit.
            let mut lim: libc::rlimit = std::mem::zeroed();
            let max = if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
                lim.rlim_cur.min(1 << 20) as c_int
            } else {
                65536
            };
            for fd in first_free..max {
                libc::close(fd);
            }
        }
        let mut log = Log::new();
        log.push(Stage::Fds, Outcome::Ok, 0);

        // ---- session ------------------------------------------------------------------
        log.stage(Stage::Session, libc::setsid() >= 0, true);

        // ---- parent death: SIGKILL when the spawner thread dies; then prove the Hall is
        // still there (a write to the status pipe fails with EPIPE once its reader is gone).
        if libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        ) < 0
        {
            log.fail(Stage::ParentDeath, errno());
        }
        log.push(Stage::ParentDeath, Outcome::Ok, 0);
        if !log.flush() {
            libc::_exit(EXIT_STAGE_FAILED);
        }

        // ---- user namespace maps (non-root Hall) ----------------------------------------
        if let Some((uid_map, gid_map)) = &spec.user_maps {
            let ok = write_file(c"/proc/self/setgroups", c"deny")
                && write_file(c"/proc/self/uid_map", uid_map)
                && write_file(c"/proc/self/gid_map", gid_map);
            log.stage(Stage::UserNamespace, ok, true);
        }

        // ---- signals: default dispositions (ignored ones survive exec), init's set blocked
        let mut ok = true;
        for sig in 1..32 {
            if sig == libc::SIGKILL || sig == libc::SIGSTOP {
                continue;
            }
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = libc::SIG_DFL;
            if libc::sigaction(sig, &sa, std::ptr::null_mut()) < 0 {
                ok = false;
            }
        }
        let set = init_sigset();
        ok &= libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut()) == 0;
        log.stage(Stage::Signals, ok, true);

        // ---- loopback and hostname in the new namespaces ----------------------------------
        if spec.loopback {
            log.stage(Stage::Loopback, loopback_up(), false);
        }
        if let Some(name) = &spec.hostname {
            let b = name.to_bytes();
            let r = libc::syscall(libc::SYS_sethostname, b.as_ptr(), b.len());
            log.stage(Stage::Hostname, r == 0, false);
        }

        // ---- rlimits (inherited by the whole tree) -----------------------------------------
        let mut ok = true;
        for r in &spec.rlimits {
            let lim = libc::rlimit {
                rlim_cur: r.soft,
                rlim_max: r.hard,
            };
            if libc::setrlimit(r.resource as _, &lim) < 0 {
                ok = false;
                break;
            }
        }
        log.stage(Stage::Rlimits, ok, true);

        if !spec.pid_ns {
            let r = libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
            log.stage(Stage::Subreaper, r == 0, true);
        }

        // ---- fork the worker ------------------------------------------------------------------
        let init_pid = libc::getpid();
        // Flush first so the worker starts with an empty batch of its own.
        log.flush();
        // vfork semantics (as posix_spawn): the worker borrows init's address space on its own
        // stack until it execs or exits, and init waits meanwhile. This saves copying the
        // page tables of the Hall a second time.
        let arg = WorkerArg { spec, init_pid };
        let stack_top = spec.worker_stack.as_ptr().add(spec.worker_stack.len()) as usize & !15usize;
        let w = libc::clone(
            worker_entry,
            stack_top as *mut libc::c_void,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            &arg as *const WorkerArg as *mut libc::c_void,
        );
        if w < 0 {
            log.fail(Stage::Fork, errno());
        }

        // init keeps only the result pipe.
        for fd in [0, 1, 2, FD_STATUS, FD_LANDLOCK] {
            libc::close(fd);
        }
        init_loop(spec, w)
    }
}

/// Brings `lo` up in the new network namespace (SIOCGIFFLAGS / SIOCSIFFLAGS).
fn loopback_up() -> bool {
    const SIOCGIFFLAGS: libc::c_ulong = 0x8913;
    const SIOCSIFFLAGS: libc::c_ulong = 0x8914;
    #[repr(C)]
    struct IfreqFlags {
        name: [u8; 16],
        flags: libc::c_short,
        _pad: [u8; 22],
    }
    // SAFETY: ioctl on a fresh socket with a properly sized ifreq.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return false;
        }
        let mut ifr = IfreqFlags {
            name: [0; 16],
            flags: 0,
            _pad: [0; 22],
        };
        ifr.name[..2].copy_from_slice(b"lo");
        let mut ok = libc::ioctl(fd, SIOCGIFFLAGS as _, &mut ifr) == 0;
        if ok {
            ifr.flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
            ok = libc::ioctl(fd, SIOCSIFFLAGS as _, &ifr) == 0;
        }
        libc::close(fd);
        ok
    }
}

/// init's reaper loop: forward termination signals to the tree, reap everything, report the
/// worker's status when it exits, then exit (taking the PID namespace down with it).
fn init_loop(spec: &ChildSpec, worker: libc::pid_t) -> ! {
    let set = init_sigset();
    // SAFETY: async-signal-safe calls only.
    unsafe {
        loop {
            let sig = libc::sigwaitinfo(&set, std::ptr::null_mut());
            if sig < 0 {
                continue;
            }
            if sig == libc::SIGCHLD {
                let mut worker_status: Option<c_int> = None;
                loop {
                    let mut st: c_int = 0;
                    let r = libc::waitpid(-1, &mut st, libc::WNOHANG | libc::__WALL);
                    if r <= 0 {
                        break;
                    }
                    if r == worker {
                        worker_status = Some(st);
                    }
                }
                if let Some(st) = worker_status {
                    let (kind, value) = if libc::WIFSIGNALED(st) {
                        (2u32, libc::WTERMSIG(st))
                    } else {
                        (1u32, libc::WEXITSTATUS(st))
                    };
                    let mut ru: libc::rusage = std::mem::zeroed();
                    libc::getrusage(libc::RUSAGE_SELF, &mut ru);
                    let rec = ResultRecord {
                        magic: RESULT_MAGIC,
                        kind,
                        value,
                        _pad: 0,
                        init_max_rss_kib: ru.ru_maxrss,
                    };
                    libc::write(
                        FD_RESULT,
                        &rec as *const ResultRecord as *const libc::c_void,
                        RESULT_LEN,
                    );
                    if !spec.pid_ns {
                        // Without a PID namespace: at least the worker's process group goes.
                        libc::kill(-worker, libc::SIGKILL);
                    }
                    libc::_exit(0);
                }
            } else if spec.pid_ns {
                // kill(-1) from PID 1 reaches every process in the namespace but init itself.
                libc::kill(-1, sig);
            } else {
                libc::kill(-worker, sig);
            }
        }
    }
}

struct WorkerArg<'a> {
    spec: &'a ChildSpec,
    init_pid: libc::pid_t,
}

extern "C" fn worker_entry(arg: *mut libc::c_void) -> c_int {
    // SAFETY: init passes a WorkerArg that outlives the vfork-style child (init is suspended).
    let arg = unsafe { &*(arg as *const WorkerArg) };
    worker_main(arg.spec, arg.init_pid)
}

/// The worker process: final stages, then exec. Never returns.
fn worker_main(spec: &ChildSpec, init_pid: libc::pid_t) -> ! {
    // SAFETY (whole function): only system calls on prepared data; see the module docs.
    unsafe {
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        let ok = libc::pthread_sigmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut()) == 0;
        libc::close(FD_RESULT);
        let ok = ok && libc::fcntl(FD_STATUS, libc::F_SETFD, libc::FD_CLOEXEC) == 0;
        let mut log = Log::new();
        log.stage(Stage::WorkerSignals, ok, true);

        if !spec.pid_ns {
            log.stage(Stage::WorkerProcessGroup, libc::setpgid(0, 0) == 0, true);
        }

        if let Some((uid, gid)) = spec.identity {
            let ok = libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()) == 0
                && libc::syscall(libc::SYS_setresgid, gid, gid, gid) == 0
                && libc::syscall(libc::SYS_setresuid, uid, uid, uid) == 0;
            log.stage(Stage::Identity, ok, true);
        }

        // A credential change clears the parent-death signal: set it after the switch, then
        // check init is still the parent (it is PID 1 inside a PID namespace).
        if libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        ) < 0
        {
            log.fail(Stage::WorkerParentDeath, errno());
        }
        let expected = if spec.pid_ns { 1 } else { init_pid };
        if libc::getppid() != expected {
            log.fail(Stage::WorkerParentDeath, libc::ESRCH);
        }
        log.push(Stage::WorkerParentDeath, Outcome::Ok, 0);

        log.stage(Stage::Cwd, libc::chdir(spec.cwd.as_ptr()) == 0, true);

        let r = libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
        log.stage(Stage::NoNewPrivs, r == 0, true);

        if spec.src_landlock >= 0 {
            let r = libc::syscall(libc::SYS_landlock_restrict_self, FD_LANDLOCK, 0u32);
            let ok = r == 0;
            let e = errno();
            libc::close(FD_LANDLOCK);
            if ok {
                log.push(Stage::Landlock, Outcome::Ok, 0);
            } else if spec.landlock_required {
                log.fail(Stage::Landlock, e);
            } else {
                log.push(Stage::Landlock, Outcome::Degraded, e);
            }
        }

        if !spec.seccomp.is_empty() {
            let mut ok = true;
            for prog in &spec.seccomp {
                let r = libc::syscall(
                    libc::SYS_seccomp,
                    libc::SECCOMP_SET_MODE_FILTER,
                    0u32,
                    prog as *const libc::sock_fprog,
                );
                if r != 0 {
                    ok = false;
                    break;
                }
            }
            log.stage(Stage::Seccomp, ok, spec.seccomp_required);
        }

        log.push(Stage::Exec, Outcome::Ok, 0);
        log.flush();
        libc::execve(
            spec.program.as_ptr(),
            spec.argv_ptrs.as_ptr(),
            spec.envp_ptrs.as_ptr(),
        );
        log.fail(Stage::Exec, errno())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let rec = Record {
            magic: RECORD_MAGIC,
            stage: Stage::Landlock as u8,
            outcome: Outcome::Failed as u8,
            _pad: 0,
            errno: libc::EPERM,
            value: 0,
        };
        // SAFETY: Record is plain old data.
        let bytes =
            unsafe { std::slice::from_raw_parts(&rec as *const Record as *const u8, RECORD_LEN) };
        let mut buf = bytes.to_vec();
        buf.extend_from_slice(&bytes[..7]); // a torn tail is ignored
        assert_eq!(Record::parse_all(&buf), vec![rec]);
        assert_eq!(RECORD_LEN, 16);
        assert_eq!(RESULT_LEN, 24);
    }

    #[test]
    fn stage_numbers_round_trip_and_name_their_process() {
        for v in 1..=19 {
            let s = Stage::from_u8(v).unwrap();
            assert_eq!(s as u8, v);
        }
        assert_eq!(Stage::from_u8(0), None);
        assert_eq!(Stage::Rlimits.process(), "init");
        assert_eq!(Stage::Seccomp.process(), "worker");
    }
}
