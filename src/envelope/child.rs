//! The staged apply between clone and exec.
//!
//! Two processes run this code before any worker code exists:
//!
//! - **init** (cloned by the Hall's supervising thread with `clone3`: the namespaces, born in
//!   the cgroup leaf, on its own stack in the Hall's address space): arranges its descriptors
//!   (0–2 stdio, 3 the status pipe, 4 the result pipe, 5 the Landlock ruleset, 6 a pooled
//!   network namespace) and closes every other inherited one, starts a new session, sets the
//!   parent-death signal, writes the user-namespace maps when the Hall is not root, joins the
//!   pooled network namespace, resets signal dispositions, brings up loopback in a new network
//!   namespace, sets the rlimits (inherited by the whole tree), then starts the worker and
//!   becomes its reaper: PID 1 of the PID namespace (when it exits the kernel kills every
//!   process left in it) or a child subreaper, forwarding SIGTERM to the tree and reporting
//!   the worker's exit status on the result pipe.
//! - **worker** (vfork-style: it runs on its own stack until it execs, init waits): restores the
//!   signal mask, sets its identity (supplementary groups cleared, then gid, then uid), the
//!   parent-death signal again (a credential change clears it), its working directory,
//!   `no_new_privs`, Landlock (`landlock_restrict_self` on the ruleset the Hall built), seccomp
//!   (last) and execs.
//!
//! Every stage is a 16-byte record on the close-on-exec status pipe: ok, degraded (a
//! best-effort stage failed and the run continued) or failed (with errno; the process exits).
//! The pipe reaches end-of-file when the exec succeeds, so the Hall learns the exact stage and
//! errno of any failure instead of a generic "spawn failed".
//!
//! Why the address space is shared (`CLONE_VM`), as `posix_spawn` does: copying the Hall's page
//! tables for every run costs time that grows with the Hall's memory, and every page either
//! side then writes takes a copy-on-write fault with a TLB shoot-down across CPUs (the largest
//! kernel cost in a profile of the copying version). The price is discipline, enforced here:
//! between clone and exec only raw system calls ([`super::rawsys`]) are made, on the
//! children's own stacks, reading data the Hall prepared in [`ChildSpec`] and keeps alive
//! until init is reaped. No allocation, no locks, no panics, no libc wrappers (they would
//! write `errno` into the Hall thread's TLS), nothing written outside the children's stacks.

use std::ffi::{CStr, CString};

use nix::libc::{self, c_int};

use super::rawsys::{KernelSigaction, clone_on_stack, err, sigset, sys};

/// Descriptor numbers inside the init and worker processes.
pub(crate) const FD_STATUS: c_int = 3;
pub(crate) const FD_RESULT: c_int = 4;
pub(crate) const FD_LANDLOCK: c_int = 5;
pub(crate) const FD_NETNS: c_int = 6;

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
    NetNamespace = 20,
    MountNamespace = 21,
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
            20 => NetNamespace,
            21 => MountNamespace,
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
            NetNamespace => "net_namespace",
            MountNamespace => "mount_namespace",
        }
    }

    pub fn process(self) -> &'static str {
        use Stage::*;
        match self {
            Fds | Session | ParentDeath | UserNamespace | NetNamespace | MountNamespace
            | Signals | Loopback | Hostname | Rlimits | Subreaper | Fork => "init",
            _ => "worker",
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
/// Owned data lives here; the children only read it, from the Hall's own memory (they share
/// its address space), so it must stay alive and unmodified until init has been reaped.
pub(crate) struct ChildSpec {
    /// Descriptors in the Hall to become 0, 1, 2, 3, 4, 5 and 6 in init (-1: none).
    pub src_stdin: c_int,
    pub src_stdout: c_int,
    pub src_stderr: c_int,
    pub src_status: c_int,
    pub src_result: c_int,
    pub src_landlock: c_int,
    /// A pre-created network namespace to join (`setns`) instead of `CLONE_NEWNET`.
    pub src_netns: c_int,
    pub netns_required: bool,
    pub pid_ns: bool,
    pub loopback: bool,
    pub hostname: Option<CString>,
    /// `(uid_map, gid_map)` contents when the Hall is not root and a user namespace is created.
    pub user_maps: Option<(CString, CString)>,
    /// In a new mount namespace: `(cover, paths)`, the empty file bound over each path.
    pub hide: Option<(CString, Vec<CString>)>,
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
    /// Top of the worker's pre-exec stack (16-byte aligned; see [`Stacks`]).
    pub worker_stack_top: usize,
}

// SAFETY: the raw pointers point into data owned by the same struct, which is only read.
unsafe impl Send for ChildSpec {}
unsafe impl Sync for ChildSpec {}

/// The pre-exec stacks of init and the worker, in one private mapping with a guard page below
/// each: `[guard][init stack][guard][worker stack]`. Both processes share the Hall's address
/// space, so a stack overflow must fault, never run into the Hall's heap. Unmapped on drop,
/// which the Hall only does after init has been reaped.
pub(crate) struct Stacks {
    base: *mut libc::c_void,
    len: usize,
}

const PAGE: usize = 4096;
pub(crate) const INIT_STACK: usize = 128 << 10;
const WORKER_STACK: usize = 64 << 10;

impl Stacks {
    pub(crate) fn new() -> std::io::Result<Stacks> {
        let len = PAGE + INIT_STACK + PAGE + WORKER_STACK;
        // SAFETY: a fresh anonymous mapping; guard pages are made inaccessible below.
        unsafe {
            let base = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            );
            if base == libc::MAP_FAILED {
                return Err(std::io::Error::last_os_error());
            }
            let stacks = Stacks { base, len };
            for guard in [0, PAGE + INIT_STACK] {
                if libc::mprotect(base.cast::<u8>().add(guard).cast(), PAGE, libc::PROT_NONE) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(stacks)
        }
    }

    pub(crate) fn init_top(&self) -> usize {
        self.base as usize + PAGE + INIT_STACK
    }

    pub(crate) fn worker_top(&self) -> usize {
        self.base as usize + self.len
    }
}

impl Drop for Stacks {
    fn drop(&mut self) {
        // SAFETY: unmapping our own mapping.
        unsafe {
            libc::munmap(self.base, self.len);
        }
    }
}

// SAFETY: a plain memory mapping.
unsafe impl Send for Stacks {}

/// Stage records are batched on the stack and written in a few `write`s (before the parent-
/// death check, before the fork, before the exec, or at a failure): every write wakes the
/// Hall's supervisor, and on a loaded host each wake-up is a trip through the scheduler.
struct Log {
    buf: [Record; 24],
    n: usize,
}

const EMPTY_RECORD: Record = Record {
    magic: RECORD_MAGIC,
    stage: 0,
    outcome: 0,
    _pad: 0,
    errno: 0,
    value: 0,
};

impl Log {
    fn new() -> Log {
        Log {
            buf: [EMPTY_RECORD; 24],
            n: 0,
        }
    }

    fn push(&mut self, stage: Stage, outcome: Outcome, errno: i32) {
        if self.n >= self.buf.len() {
            self.flush();
        }
        if let Some(slot) = self.buf.get_mut(self.n) {
            *slot = Record {
                magic: RECORD_MAGIC,
                stage: stage as u8,
                outcome: outcome as u8,
                _pad: 0,
                errno,
                value: 0,
            };
            self.n += 1;
        }
    }

    /// Writes the batch (one atomic write: at most 384 bytes < PIPE_BUF). False when the Hall's
    /// end of the pipe is gone (EPIPE; SIGPIPE is ignored in the Hall and so here).
    fn flush(&mut self) -> bool {
        if self.n == 0 {
            return true;
        }
        let len = self.n * RECORD_LEN;
        self.n = 0;
        // SAFETY: writing plain structs from our own buffer.
        let w = unsafe {
            sys(
                libc::SYS_write,
                &[FD_STATUS as usize, self.buf.as_ptr() as usize, len],
            )
        };
        w == len as isize
    }

    /// Reports a fatal stage failure and exits.
    fn fail(&mut self, stage: Stage, errno: i32) -> ! {
        self.push(stage, Outcome::Failed, errno);
        self.flush();
        exit(EXIT_STAGE_FAILED)
    }

    /// Records a raw system call result: ok, degraded (best effort) or fatal.
    fn stage(&mut self, stage: Stage, result: isize, required: bool) {
        let e = err(result);
        if e == 0 {
            self.push(stage, Outcome::Ok, 0);
        } else if required {
            self.fail(stage, e);
        } else {
            self.push(stage, Outcome::Degraded, e);
        }
    }
}

fn exit(code: c_int) -> ! {
    loop {
        // SAFETY: exit_group never returns.
        unsafe {
            sys(libc::SYS_exit_group, &[code as usize]);
        }
    }
}

fn close(fd: c_int) {
    // SAFETY: closing a descriptor number.
    unsafe {
        sys(libc::SYS_close, &[fd as usize]);
    }
}

fn prctl(option: c_int, arg: usize) -> isize {
    // SAFETY: integer-argument prctl.
    unsafe { sys(libc::SYS_prctl, &[option as usize, arg, 0, 0, 0]) }
}

/// First error of a sequence of raw results (0 if none failed), as a raw result.
fn first_err(results: &[isize]) -> isize {
    results.iter().copied().find(|r| err(*r) != 0).unwrap_or(0)
}

fn write_file(path: &CStr, data: &CStr) -> isize {
    // SAFETY: NUL-terminated path and data prepared by the Hall.
    unsafe {
        let fd = sys(
            libc::SYS_openat,
            &[
                libc::AT_FDCWD as usize,
                path.as_ptr() as usize,
                (libc::O_WRONLY | libc::O_CLOEXEC) as usize,
            ],
        );
        if fd < 0 {
            return fd;
        }
        let bytes = data.to_bytes();
        let n = sys(
            libc::SYS_write,
            &[fd as usize, bytes.as_ptr() as usize, bytes.len()],
        );
        close(fd as c_int);
        if n < 0 {
            n
        } else if n as usize != bytes.len() {
            -(libc::EIO as isize)
        } else {
            0
        }
    }
}

/// Signals init waits for (blocked, taken with `rt_sigtimedwait`).
const INIT_SIGNALS: u64 = sigset(&[
    libc::SIGCHLD,
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGQUIT,
]);

fn set_sigmask(mask: u64) -> isize {
    // SAFETY: the kernel reads 8 bytes of signal set.
    unsafe {
        sys(
            libc::SYS_rt_sigprocmask,
            &[
                libc::SIG_SETMASK as usize,
                &mask as *const u64 as usize,
                0,
                8,
            ],
        )
    }
}

/// init's entry point on its own stack (see [`super::rawsys::clone_on_stack`]).
///
/// # Safety
/// `arg` is a `*const ChildSpec` that outlives init.
pub(crate) unsafe extern "C" fn init_entry(arg: usize) -> ! {
    // SAFETY: the Hall keeps the spec alive until it has reaped init.
    let spec = unsafe { &*(arg as *const ChildSpec) };
    init_main(spec)
}

/// init: runs in the process the Hall cloned. Never returns.
fn init_main(spec: &ChildSpec) -> ! {
    // SAFETY (whole function): raw system calls on prepared data; see the module docs.
    unsafe {
        // ---- fds: move the sources above every one of them, then into place ---------------
        let srcs = [
            spec.src_stdin,
            spec.src_stdout,
            spec.src_stderr,
            spec.src_status,
            spec.src_result,
            spec.src_landlock,
            spec.src_netns,
        ];
        let mut base = 10;
        for s in srcs {
            if s >= base {
                base = s + 1;
            }
        }
        let mut tmp = [-1 as c_int; 7];
        for (i, s) in srcs.iter().enumerate() {
            if *s >= 0 {
                let r = sys(
                    libc::SYS_fcntl,
                    &[*s as usize, libc::F_DUPFD_CLOEXEC as usize, base as usize],
                );
                if r < 0 {
                    exit(EXIT_FDS_FAILED);
                }
                tmp[i] = r as c_int;
            }
        }
        for (target, t) in tmp.iter().enumerate() {
            if *t >= 0 {
                // dup3 without O_CLOEXEC: the targets must survive into init.
                if sys(libc::SYS_dup3, &[*t as usize, target, 0]) < 0 {
                    exit(EXIT_FDS_FAILED);
                }
            } else {
                // An unused slot may still hold an inherited descriptor.
                close(target as c_int);
            }
        }
        let first_free = FD_NETNS + 1;
        if sys(
            libc::SYS_close_range,
            &[first_free as usize, u32::MAX as usize, 0],
        ) < 0
        {
            // Pre-5.9 kernels: close one by one up to the descriptor limit.
            let mut lim: libc::rlimit = std::mem::zeroed();
            sys(
                libc::SYS_prlimit64,
                &[
                    0,
                    libc::RLIMIT_NOFILE as usize,
                    0,
                    &mut lim as *mut libc::rlimit as usize,
                ],
            );
            let max = lim.rlim_cur.clamp(1024, 1 << 20) as c_int;
            for fd in first_free..max {
                close(fd);
            }
        }
        let mut log = Log::new();
        log.push(Stage::Fds, Outcome::Ok, 0);

        // ---- session ------------------------------------------------------------------
        log.stage(Stage::Session, sys(libc::SYS_setsid, &[]), true);

        // ---- parent death: SIGKILL when the forking thread dies; then prove the Hall is
        // still there (a write to the status pipe fails with EPIPE once its reader is gone).
        let r = prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as usize);
        if r < 0 {
            log.fail(Stage::ParentDeath, err(r));
        }
        log.push(Stage::ParentDeath, Outcome::Ok, 0);
        if !log.flush() {
            exit(EXIT_STAGE_FAILED);
        }

        // ---- user namespace maps (non-root Hall) ----------------------------------------
        if let Some((uid_map, gid_map)) = &spec.user_maps {
            let mut r = write_file(c"/proc/self/setgroups", c"deny");
            if r == 0 {
                r = write_file(c"/proc/self/uid_map", uid_map);
            }
            if r == 0 {
                r = write_file(c"/proc/self/gid_map", gid_map);
            }
            log.stage(Stage::UserNamespace, r, true);
        }

        // ---- mount namespace: nothing propagates back to the host, then each hidden path is
        // covered by the empty file (a path that is gone needs no cover) ------------------
        if let Some((cover, paths)) = &spec.hide {
            log.stage(Stage::MountNamespace, hide_paths(cover, paths), true);
        }

        // ---- network namespace from the pool ----------------------------------------------
        if spec.src_netns >= 0 {
            let r = sys(
                libc::SYS_setns,
                &[FD_NETNS as usize, libc::CLONE_NEWNET as usize],
            );
            close(FD_NETNS);
            log.stage(Stage::NetNamespace, r, spec.netns_required);
        }

        // ---- signals: default dispositions (ignored ones survive exec), init's set blocked
        let dfl = KernelSigaction {
            handler: 0, // SIG_DFL
            flags: 0,
            restorer: 0,
            mask: 0,
        };
        let mut r = 0;
        for sig in 1..=64usize {
            if sig == libc::SIGKILL as usize || sig == libc::SIGSTOP as usize {
                continue;
            }
            let x = sys(
                libc::SYS_rt_sigaction,
                &[sig, &dfl as *const KernelSigaction as usize, 0, 8],
            );
            if r == 0 && err(x) != 0 {
                r = x;
            }
        }
        let r = first_err(&[r, set_sigmask(INIT_SIGNALS)]);
        log.stage(Stage::Signals, r, true);

        // ---- loopback and hostname in the new namespaces ----------------------------------
        if spec.loopback {
            log.stage(Stage::Loopback, loopback_up_raw(), false);
        }
        if let Some(name) = &spec.hostname {
            let b = name.to_bytes();
            let r = sys(libc::SYS_sethostname, &[b.as_ptr() as usize, b.len()]);
            log.stage(Stage::Hostname, r, false);
        }

        // ---- rlimits (inherited by the whole tree) -----------------------------------------
        let mut r = 0;
        for l in &spec.rlimits {
            let lim = libc::rlimit {
                rlim_cur: l.soft,
                rlim_max: l.hard,
            };
            r = sys(
                libc::SYS_prlimit64,
                &[
                    0,
                    l.resource as usize,
                    &lim as *const libc::rlimit as usize,
                    0,
                ],
            );
            if r < 0 {
                break;
            }
        }
        log.stage(Stage::Rlimits, r, true);

        if !spec.pid_ns {
            let r = prctl(libc::PR_SET_CHILD_SUBREAPER, 1);
            log.stage(Stage::Subreaper, r, true);
        }

        // ---- the worker ------------------------------------------------------------------------
        let init_pid = sys(libc::SYS_getpid, &[]) as libc::pid_t;
        // Flush first so the worker starts with an empty batch of its own.
        log.flush();
        // vfork semantics (as posix_spawn): the worker runs on its own stack in the shared
        // address space until it execs or exits, and init waits meanwhile.
        let arg = WorkerArg { spec, init_pid };
        let mut args = super::sys::CloneArgs {
            flags: (libc::CLONE_VM | libc::CLONE_VFORK) as u64,
            exit_signal: libc::SIGCHLD as u64,
            stack: (spec.worker_stack_top - WORKER_STACK) as u64,
            stack_size: WORKER_STACK as u64,
            ..Default::default()
        };
        let w = clone_on_stack(&mut args, worker_entry, &arg as *const WorkerArg as usize);
        if w < 0 {
            log.fail(Stage::Fork, err(w));
        }
        let w = w as libc::pid_t;

        // init keeps only the result pipe.
        for fd in [0, 1, 2, FD_STATUS, FD_LANDLOCK, FD_NETNS] {
            close(fd);
        }
        init_loop(spec, w)
    }
}

/// In init's new mount namespace: makes every mount private (so nothing done here reaches the
/// host), then binds `cover` over each of `paths`. Raw result of the first failure.
fn hide_paths(cover: &CStr, paths: &[CString]) -> isize {
    // SAFETY: mount(2) with NUL-terminated strings the Hall prepared and keeps alive, and null
    // pointers where the kernel accepts them; only this process's mount namespace changes.
    unsafe {
        let r = sys(
            libc::SYS_mount,
            &[
                0,
                c"/".as_ptr() as usize,
                0,
                (libc::MS_REC | libc::MS_PRIVATE) as usize,
                0,
            ],
        );
        if r < 0 {
            return r;
        }
        for p in paths {
            let r = sys(
                libc::SYS_mount,
                &[
                    cover.as_ptr() as usize,
                    p.as_ptr() as usize,
                    0,
                    libc::MS_BIND as usize,
                    0,
                ],
            );
            if r < 0 && err(r) != libc::ENOENT {
                return r;
            }
        }
        0
    }
}

/// Brings `lo` up in the current network namespace (SIOCGIFFLAGS / SIOCSIFFLAGS), raw result.
fn loopback_up_raw() -> isize {
    const SIOCGIFFLAGS: usize = 0x8913;
    const SIOCSIFFLAGS: usize = 0x8914;
    #[repr(C)]
    struct IfreqFlags {
        name: [u8; 16],
        flags: libc::c_short,
        _pad: [u8; 22],
    }
    // SAFETY: ioctl on a fresh socket with a properly sized ifreq.
    unsafe {
        let fd = sys(
            libc::SYS_socket,
            &[
                libc::AF_INET as usize,
                (libc::SOCK_DGRAM | libc::SOCK_CLOEXEC) as usize,
                0,
            ],
        );
        if fd < 0 {
            return fd;
        }
        let mut ifr = IfreqFlags {
            name: [0; 16],
            flags: 0,
            _pad: [0; 22],
        };
        ifr.name[0] = b'l';
        ifr.name[1] = b'o';
        let mut r = sys(
            libc::SYS_ioctl,
            &[
                fd as usize,
                SIOCGIFFLAGS,
                &mut ifr as *mut IfreqFlags as usize,
            ],
        );
        if r == 0 {
            ifr.flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
            r = sys(
                libc::SYS_ioctl,
                &[
                    fd as usize,
                    SIOCSIFFLAGS,
                    &ifr as *const IfreqFlags as usize,
                ],
            );
        }
        close(fd as c_int);
        r
    }
}

/// Brings `lo` up in the current network namespace (for the namespace pool, in the Hall).
pub(crate) fn loopback_up() -> bool {
    loopback_up_raw() == 0
}

/// init's reaper loop: forward termination signals to the tree, reap everything, report the
/// worker's status when it exits, then exit (taking the PID namespace down with it).
fn init_loop(spec: &ChildSpec, worker: libc::pid_t) -> ! {
    // SAFETY: raw system calls on stack data.
    unsafe {
        loop {
            let sig = sys(
                libc::SYS_rt_sigtimedwait,
                &[&INIT_SIGNALS as *const u64 as usize, 0, 0, 8],
            );
            if sig < 0 {
                continue;
            }
            let sig = sig as c_int;
            if sig == libc::SIGCHLD {
                let mut worker_status: Option<c_int> = None;
                loop {
                    let mut st: c_int = 0;
                    let r = sys(
                        libc::SYS_wait4,
                        &[
                            -1isize as usize,
                            &mut st as *mut c_int as usize,
                            (libc::WNOHANG | libc::__WALL) as usize,
                            0,
                        ],
                    );
                    if r <= 0 {
                        break;
                    }
                    if r as libc::pid_t == worker {
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
                    sys(
                        libc::SYS_getrusage,
                        &[
                            libc::RUSAGE_SELF as usize,
                            &mut ru as *mut libc::rusage as usize,
                        ],
                    );
                    let rec = ResultRecord {
                        magic: RESULT_MAGIC,
                        kind,
                        value,
                        _pad: 0,
                        init_max_rss_kib: ru.ru_maxrss,
                    };
                    sys(
                        libc::SYS_write,
                        &[
                            FD_RESULT as usize,
                            &rec as *const ResultRecord as usize,
                            RESULT_LEN,
                        ],
                    );
                    if !spec.pid_ns {
                        // Without a PID namespace: at least the worker's process group goes.
                        sys(
                            libc::SYS_kill,
                            &[(-worker) as isize as usize, libc::SIGKILL as usize],
                        );
                    }
                    exit(0);
                }
            } else if spec.pid_ns {
                // kill(-1) from PID 1 reaches every process in the namespace but init itself.
                sys(libc::SYS_kill, &[-1isize as usize, sig as usize]);
            } else {
                sys(libc::SYS_kill, &[(-worker) as isize as usize, sig as usize]);
            }
        }
    }
}

struct WorkerArg<'a> {
    spec: &'a ChildSpec,
    init_pid: libc::pid_t,
}

unsafe extern "C" fn worker_entry(arg: usize) -> ! {
    // SAFETY: init passes a WorkerArg that outlives the vfork-style child (init is suspended).
    let arg = unsafe { &*(arg as *const WorkerArg) };
    worker_main(arg.spec, arg.init_pid)
}

/// The worker process: final stages, then exec. Never returns.
fn worker_main(spec: &ChildSpec, init_pid: libc::pid_t) -> ! {
    // SAFETY (whole function): raw system calls on prepared data; see the module docs.
    unsafe {
        let mut log = Log::new();
        let r = first_err(&[
            set_sigmask(0),
            sys(libc::SYS_close, &[FD_RESULT as usize]),
            sys(
                libc::SYS_fcntl,
                &[
                    FD_STATUS as usize,
                    libc::F_SETFD as usize,
                    libc::FD_CLOEXEC as usize,
                ],
            ),
        ]);
        log.stage(Stage::WorkerSignals, r, true);

        if !spec.pid_ns {
            log.stage(
                Stage::WorkerProcessGroup,
                sys(libc::SYS_setpgid, &[0, 0]),
                true,
            );
        }

        if let Some((uid, gid)) = spec.identity {
            let mut r = sys(libc::SYS_setgroups, &[0, 0]);
            if r == 0 {
                r = sys(
                    libc::SYS_setresgid,
                    &[gid as usize, gid as usize, gid as usize],
                );
            }
            if r == 0 {
                r = sys(
                    libc::SYS_setresuid,
                    &[uid as usize, uid as usize, uid as usize],
                );
            }
            log.stage(Stage::Identity, r, true);
        }

        // A credential change clears the parent-death signal: set it after the switch, then
        // check init is still the parent (it is PID 1 inside a PID namespace).
        let r = prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as usize);
        if r < 0 {
            log.fail(Stage::WorkerParentDeath, err(r));
        }
        let expected = if spec.pid_ns { 1 } else { init_pid };
        if sys(libc::SYS_getppid, &[]) as libc::pid_t != expected {
            log.fail(Stage::WorkerParentDeath, libc::ESRCH);
        }
        log.push(Stage::WorkerParentDeath, Outcome::Ok, 0);

        let r = sys(libc::SYS_chdir, &[spec.cwd.as_ptr() as usize]);
        log.stage(Stage::Cwd, r, true);

        log.stage(Stage::NoNewPrivs, prctl(libc::PR_SET_NO_NEW_PRIVS, 1), true);

        if spec.src_landlock >= 0 {
            let r = sys(libc::SYS_landlock_restrict_self, &[FD_LANDLOCK as usize, 0]);
            close(FD_LANDLOCK);
            log.stage(Stage::Landlock, r, spec.landlock_required);
        }

        if !spec.seccomp.is_empty() {
            let mut r = 0;
            for prog in &spec.seccomp {
                r = sys(
                    libc::SYS_seccomp,
                    &[
                        libc::SECCOMP_SET_MODE_FILTER as usize,
                        0,
                        prog as *const libc::sock_fprog as usize,
                    ],
                );
                if r != 0 {
                    break;
                }
            }
            log.stage(Stage::Seccomp, r, spec.seccomp_required);
        }

        log.push(Stage::Exec, Outcome::Ok, 0);
        log.flush();
        let r = sys(
            libc::SYS_execve,
            &[
                spec.program.as_ptr() as usize,
                spec.argv_ptrs.as_ptr() as usize,
                spec.envp_ptrs.as_ptr() as usize,
            ],
        );
        log.fail(Stage::Exec, err(r))
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
        for v in 1..=20 {
            let s = Stage::from_u8(v).unwrap();
            assert_eq!(s as u8, v);
        }
        assert_eq!(Stage::from_u8(0), None);
        assert_eq!(Stage::Rlimits.process(), "init");
        assert_eq!(Stage::Seccomp.process(), "worker");
    }
}
