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
//! between clone and exec only raw system calls are made, each through its own wrapper in
//! [`super::rawcall`] (over [`super::rawsys`]), on the children's own stacks, reading data the
//! Hall prepared in [`ChildSpec`] and keeps alive until init is reaped. No allocation, no
//! locks, no panics, no libc wrappers (they would write `errno` into the Hall thread's TLS),
//! nothing written outside the children's stacks.
//!
//! This module owns the order of the stages, what a failure of each means (fatal, or degraded
//! for a best-effort stage) and the records that say so. Between clone and exec it must not
//! make a system call except through `rawcall` (the clone of the worker is the one `rawsys`
//! call), and its `unsafe` is limited to the entry points, the clone, the `execve` and seccomp
//! calls on the spec's raw pointers, the record byte views, the `Stacks` mapping (made in the
//! Hall) and the `Send`/`Sync` promises of `ChildSpec` and `Stacks`.

#![allow(unsafe_code)] // entry points, the worker's clone, execve/seccomp on raw pointers, stacks

use std::ffi::{CStr, CString};

use nix::libc::{self, c_int};

use super::rawcall::{self as raw, Errno, IfreqFlags};
use super::rawsys::{clone_on_stack, err, sigset};

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

    /// The records as the bytes written to the status pipe.
    fn as_bytes(records: &[Record]) -> &[u8] {
        // SAFETY: `Record` is `repr(C)` plain integers without padding (4 + 1 + 1 + 2 + 4 + 4
        // bytes), so every byte of the slice is initialised; the view borrows `records`.
        unsafe {
            std::slice::from_raw_parts(
                records.as_ptr().cast::<u8>(),
                std::mem::size_of_val(records),
            )
        }
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
    /// The record as the bytes written to the result pipe.
    fn as_bytes(&self) -> &[u8] {
        // SAFETY: `ResultRecord` is `repr(C)` plain integers without padding (4 + 4 + 4 + 4 + 8
        // bytes, the `i64` 8-aligned), so every byte is initialised; the view borrows `self`.
        unsafe {
            std::slice::from_raw_parts((self as *const ResultRecord).cast::<u8>(), RESULT_LEN)
        }
    }

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
// SAFETY: as for `Send`: nothing mutates the spec once built, so shared reads are sound.
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
        let Some(batch) = self.buf.get(..self.n) else {
            return false;
        };
        self.n = 0;
        let bytes = Record::as_bytes(batch);
        raw::write(FD_STATUS, bytes) == Ok(bytes.len())
    }

    /// Reports a fatal stage failure and exits.
    fn fail(&mut self, stage: Stage, errno: Errno) -> ! {
        self.push(stage, Outcome::Failed, errno.0);
        self.flush();
        raw::exit_group(EXIT_STAGE_FAILED)
    }

    /// Records a system call's result: ok, degraded (best effort) or fatal.
    fn stage<T>(&mut self, stage: Stage, result: Result<T, Errno>, required: bool) {
        match result {
            Ok(_) => self.push(stage, Outcome::Ok, 0),
            Err(e) if required => self.fail(stage, e),
            Err(e) => self.push(stage, Outcome::Degraded, e.0),
        }
    }
}

/// Writes `data` to the file at `path` in one `write`; a short write is `EIO`.
fn write_file(path: &CStr, data: &CStr) -> Result<(), Errno> {
    let fd = raw::open_write_only(path)?;
    let bytes = data.to_bytes();
    let n = raw::write(fd, bytes);
    let _ = raw::close(fd);
    if n? != bytes.len() {
        return Err(Errno(libc::EIO));
    }
    Ok(())
}

/// Signals init waits for (blocked, taken with `rt_sigtimedwait`).
const INIT_SIGNALS: u64 = sigset(&[
    libc::SIGCHLD,
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGQUIT,
]);

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
    // ---- fds: move the sources above every one of them, then into place -------------------
    if arrange_fds(spec).is_err() {
        raw::exit_group(EXIT_FDS_FAILED);
    }
    let mut log = Log::new();
    log.push(Stage::Fds, Outcome::Ok, 0);

    // ---- session ----------------------------------------------------------------------------
    log.stage(Stage::Session, raw::setsid(), true);

    // ---- parent death: SIGKILL when the forking thread dies; then prove the Hall is still
    // there (a write to the status pipe fails with EPIPE once its reader is gone).
    if let Err(e) = raw::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as usize) {
        log.fail(Stage::ParentDeath, e);
    }
    log.push(Stage::ParentDeath, Outcome::Ok, 0);
    if !log.flush() {
        raw::exit_group(EXIT_STAGE_FAILED);
    }

    // ---- user namespace maps (non-root Hall) ------------------------------------------------
    if let Some((uid_map, gid_map)) = &spec.user_maps {
        let r = write_file(c"/proc/self/setgroups", c"deny")
            .and_then(|()| write_file(c"/proc/self/uid_map", uid_map))
            .and_then(|()| write_file(c"/proc/self/gid_map", gid_map));
        log.stage(Stage::UserNamespace, r, true);
    }

    // ---- mount namespace: nothing propagates back to the host, then each hidden path is
    // covered by the empty file (a path that is gone needs no cover) -------------------------
    if let Some((cover, paths)) = &spec.hide {
        log.stage(Stage::MountNamespace, hide_paths(cover, paths), true);
    }

    // ---- network namespace from the pool ----------------------------------------------------
    if spec.src_netns >= 0 {
        let r = raw::setns(FD_NETNS, libc::CLONE_NEWNET);
        let _ = raw::close(FD_NETNS);
        log.stage(Stage::NetNamespace, r, spec.netns_required);
    }

    // ---- signals: default dispositions (ignored ones survive exec), init's set blocked ------
    log.stage(Stage::Signals, reset_signals(INIT_SIGNALS), true);

    // ---- loopback and hostname in the new namespaces ----------------------------------------
    if spec.loopback {
        log.stage(Stage::Loopback, loopback_up_raw(), false);
    }
    if let Some(name) = &spec.hostname {
        log.stage(Stage::Hostname, raw::sethostname(name.to_bytes()), false);
    }

    // ---- rlimits (inherited by the whole tree) ----------------------------------------------
    log.stage(Stage::Rlimits, set_rlimits(&spec.rlimits), true);

    if !spec.pid_ns {
        let r = raw::prctl(libc::PR_SET_CHILD_SUBREAPER, 1);
        log.stage(Stage::Subreaper, r, true);
    }

    // ---- the worker -------------------------------------------------------------------------
    let init_pid = raw::getpid();
    // Flush first so the worker starts with an empty batch of its own.
    log.flush();
    let w = match start_worker(spec, init_pid) {
        Ok(w) => w,
        Err(e) => log.fail(Stage::Fork, e),
    };

    // init keeps only the result pipe.
    for fd in [0, 1, 2, FD_STATUS, FD_LANDLOCK, FD_NETNS] {
        let _ = raw::close(fd);
    }
    init_loop(spec, w)
}

/// Moves the Hall's descriptors to 0–6 (an unused slot is closed) and closes every other
/// inherited one. Any failure here leaves no status pipe to report on.
fn arrange_fds(spec: &ChildSpec) -> Result<(), Errno> {
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
    for (t, s) in tmp.iter_mut().zip(srcs) {
        if s >= 0 {
            *t = raw::dup_cloexec_from(s, base)?;
        }
    }
    for (target, t) in (0..).zip(tmp) {
        if t >= 0 {
            // dup3 without O_CLOEXEC: the targets must survive into init.
            raw::dup3(t, target)?;
        } else {
            // An unused slot may still hold an inherited descriptor.
            let _ = raw::close(target);
        }
    }
    let first_free = FD_NETNS + 1;
    if raw::close_from(first_free).is_err() {
        // Pre-5.9 kernels: close one by one up to the descriptor limit.
        let cur = raw::get_rlimit(libc::RLIMIT_NOFILE as c_int).map_or(0, |l| l.rlim_cur);
        let max = cur.clamp(1024, 1 << 20) as c_int;
        for fd in first_free..max {
            let _ = raw::close(fd);
        }
    }
    Ok(())
}

/// Every catchable signal back to its default disposition, then the signal mask `mask`; the
/// first failure, after trying them all.
fn reset_signals(mask: u64) -> Result<(), Errno> {
    let mut r = Ok(());
    for sig in 1..=64 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        let x = raw::set_default_action(sig);
        if r.is_ok() {
            r = x;
        }
    }
    let m = raw::set_sigmask(mask);
    r.and(m)
}

/// Sets the rlimits in order, stopping at the first failure.
fn set_rlimits(rlimits: &[RawRlimit]) -> Result<(), Errno> {
    for l in rlimits {
        raw::set_rlimit(l.resource, l.soft, l.hard)?;
    }
    Ok(())
}

/// Starts the worker with vfork semantics (as posix_spawn): it runs on its own stack in the
/// shared address space until it execs or exits, and init waits meanwhile. Its pid.
fn start_worker(spec: &ChildSpec, init_pid: libc::pid_t) -> Result<libc::pid_t, Errno> {
    let arg = WorkerArg { spec, init_pid };
    let mut args = super::sys::CloneArgs {
        flags: (libc::CLONE_VM | libc::CLONE_VFORK) as u64,
        exit_signal: libc::SIGCHLD as u64,
        stack: (spec.worker_stack_top - WORKER_STACK) as u64,
        stack_size: WORKER_STACK as u64,
        ..Default::default()
    };
    // SAFETY: the worker's stack is the upper half of `Stacks` (16-byte aligned top, a guard
    // page below), mapped until init is reaped; `worker_entry` never returns; `arg` lives on
    // init's stack, which stays put while the vfork-style child runs (init is suspended until
    // the worker execs or exits).
    let w = unsafe { clone_on_stack(&mut args, worker_entry, &arg as *const WorkerArg as usize) };
    match err(w) {
        0 => Ok(w as libc::pid_t),
        e => Err(Errno(e)),
    }
}

/// In init's new mount namespace: makes every mount private (so nothing done here reaches the
/// host), then binds `cover` over each of `paths`. The first failure.
fn hide_paths(cover: &CStr, paths: &[CString]) -> Result<(), Errno> {
    raw::make_private_recursive(c"/")?;
    for p in paths {
        match raw::bind_mount(cover, p) {
            Err(e) if e.0 != libc::ENOENT => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

/// Brings `lo` up in the current network namespace (SIOCGIFFLAGS / SIOCSIFFLAGS).
fn loopback_up_raw() -> Result<(), Errno> {
    let fd = raw::inet_dgram_socket()?;
    let mut ifr = IfreqFlags::named(b"lo");
    let r = raw::get_if_flags(fd, &mut ifr).and_then(|()| {
        ifr.flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        raw::set_if_flags(fd, &ifr)
    });
    let _ = raw::close(fd);
    r
}

/// Brings `lo` up in the current network namespace (for the namespace pool, in the Hall).
pub(crate) fn loopback_up() -> bool {
    loopback_up_raw().is_ok()
}

/// init's reaper loop: forward termination signals to the tree, reap everything, report the
/// worker's status when it exits, then exit (taking the PID namespace down with it).
fn init_loop(spec: &ChildSpec, worker: libc::pid_t) -> ! {
    loop {
        let Ok(sig) = raw::sigwait(&INIT_SIGNALS) else {
            continue;
        };
        if sig == libc::SIGCHLD {
            let mut worker_status: Option<c_int> = None;
            while let Ok(Some((pid, st))) = raw::reap_any() {
                if pid == worker {
                    worker_status = Some(st);
                }
            }
            if let Some(st) = worker_status {
                report_and_exit(spec, worker, st);
            }
        } else if spec.pid_ns {
            // kill(-1) from PID 1 reaches every process in the namespace but init itself.
            let _ = raw::kill(-1, sig);
        } else {
            let _ = raw::kill(-worker, sig);
        }
    }
}

/// Writes the worker's exit status (and init's peak RSS) on the result pipe and exits.
fn report_and_exit(spec: &ChildSpec, worker: libc::pid_t, st: c_int) -> ! {
    let (kind, value) = if libc::WIFSIGNALED(st) {
        (2u32, libc::WTERMSIG(st))
    } else {
        (1u32, libc::WEXITSTATUS(st))
    };
    let rec = ResultRecord {
        magic: RESULT_MAGIC,
        kind,
        value,
        _pad: 0,
        init_max_rss_kib: raw::max_rss_kib().unwrap_or(0),
    };
    let _ = raw::write(FD_RESULT, rec.as_bytes());
    if !spec.pid_ns {
        // Without a PID namespace: at least the worker's process group goes.
        let _ = raw::kill(-worker, libc::SIGKILL);
    }
    raw::exit_group(0)
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
    let mut log = Log::new();
    let mask = raw::set_sigmask(0);
    let result = raw::close(FD_RESULT);
    let status = raw::set_cloexec(FD_STATUS);
    log.stage(Stage::WorkerSignals, mask.and(result).and(status), true);

    if !spec.pid_ns {
        log.stage(Stage::WorkerProcessGroup, raw::setpgid_self(), true);
    }

    if let Some((uid, gid)) = spec.identity {
        let r = raw::clear_groups()
            .and_then(|()| raw::setresgid(gid))
            .and_then(|()| raw::setresuid(uid));
        log.stage(Stage::Identity, r, true);
    }

    // A credential change clears the parent-death signal: set it after the switch, then
    // check init is still the parent (it is PID 1 inside a PID namespace).
    if let Err(e) = raw::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as usize) {
        log.fail(Stage::WorkerParentDeath, e);
    }
    let expected = if spec.pid_ns { 1 } else { init_pid };
    if raw::getppid() != expected {
        log.fail(Stage::WorkerParentDeath, Errno(libc::ESRCH));
    }
    log.push(Stage::WorkerParentDeath, Outcome::Ok, 0);

    log.stage(Stage::Cwd, raw::chdir(&spec.cwd), true);

    log.stage(
        Stage::NoNewPrivs,
        raw::prctl(libc::PR_SET_NO_NEW_PRIVS, 1),
        true,
    );

    if spec.src_landlock >= 0 {
        let r = raw::landlock_restrict_self(FD_LANDLOCK);
        let _ = raw::close(FD_LANDLOCK);
        log.stage(Stage::Landlock, r, spec.landlock_required);
    }

    if !spec.seccomp.is_empty() {
        log.stage(
            Stage::Seccomp,
            install_seccomp(&spec.seccomp),
            spec.seccomp_required,
        );
    }

    log.push(Stage::Exec, Outcome::Ok, 0);
    log.flush();
    // SAFETY: `argv_ptrs` and `envp_ptrs` are null-terminated arrays of pointers into
    // `spec._strings`, which the spec owns and the Hall keeps alive until init is reaped.
    let e = unsafe {
        raw::execve(
            &spec.program,
            spec.argv_ptrs.as_ptr(),
            spec.envp_ptrs.as_ptr(),
        )
    };
    log.fail(Stage::Exec, e)
}

/// Installs the seccomp programs in order, stopping at the first failure.
fn install_seccomp(programs: &[libc::sock_fprog]) -> Result<(), Errno> {
    for prog in programs {
        // SAFETY: each program points into `ChildSpec::_bpf`, which the spec owns and the Hall
        // keeps alive until init is reaped.
        unsafe { raw::seccomp_set_filter(prog) }?;
    }
    Ok(())
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
        let bytes = Record::as_bytes(std::slice::from_ref(&rec));
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
