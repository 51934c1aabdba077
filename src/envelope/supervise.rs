//! Supervision in the Hall: stage records, output, the wall clock, the tree kill, the exit
//! status and the accounting.
//!
//! One `poll` loop over the status pipe, stdout, stderr, the result pipe and init's pidfd:
//! - stdout/stderr are read to the end but only `max_output_bytes` of each are kept
//!   (`truncated`), so a worker printing a gigabyte never blocks and never fills the Hall;
//! - at the wall-clock deadline init gets SIGTERM (it forwards it to every process of the
//!   tree); after the grace period init gets SIGKILL and the cgroup leaf `cgroup.kill`: init's
//!   death takes the PID namespace down, the leaf catches anything that left its session;
//! - after init is gone, output is drained for at most `drain_timeout_ms` (a descendant outside
//!   both the namespace and the cgroup could otherwise hold the pipes open forever);
//! - the moment the exec is confirmed (the status pipe closes), `/proc/<worker>/status` is read
//!   so the report shows what the kernel says (`NoNewPrivs`, `Seccomp`, uids, `NSpid`).

use std::fs;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::libc;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use super::child::{RESULT_LEN, Record, ResultRecord};
use super::report::ObservedReport;
use super::sys;

/// The read buffer for the worker's pipes.
const READ_BUF: usize = 32 * 1024;

/// What supervision collected.
#[derive(Debug, Default)]
pub(crate) struct Collected {
    pub records: Vec<Record>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub stdout_total: u64,
    pub stderr_total: u64,
    pub result: Option<ResultRecord>,
    /// init's wait status (from wait4).
    pub init_status: Option<libc::c_int>,
    pub rusage_cpu_us: Option<u64>,
    pub rusage_max_rss_kib: Option<u64>,
    pub timed_out: bool,
    pub term_sent: bool,
    pub kill_sent: bool,
    pub drain_timed_out: bool,
    /// The status pipe reached end-of-file: every pre-exec process has exec'd or exited.
    pub status_eof: bool,
    pub observed: ObservedReport,
    pub duration: Duration,
    /// The persistent directories' usage when the disk guard killed the tree.
    pub quota_exceeded: Option<u64>,
}

/// Watches a run's persistent write directories against their quota while it runs.
///
/// Threat model: one run writing its persistent directories full (each file is bounded by
/// RLIMIT_FSIZE, their number is not). Every [`DiskGuard::every`] the directories are measured
/// (no links followed) and a tree over the quota is killed at once, so a run overshoots by at
/// most what it writes in one interval.
pub(crate) struct DiskGuard<'a> {
    pub dirs: &'a [std::sync::Arc<super::grant::OpenedWrite>],
    pub quota: u64,
    pub every: Duration,
}

impl DiskGuard<'_> {
    /// `Some(usage)` when over the quota.
    fn over(&self) -> Option<u64> {
        let mut total: u64 = 0;
        for d in self.dirs {
            // Unmeasurable (an error, or too many entries) counts as over.
            let used = super::grant::usage(&d.dir)
                .ok()
                .flatten()
                .unwrap_or(u64::MAX);
            total = total.saturating_add(used);
        }
        (total > self.quota).then_some(total)
    }
}

/// What a warm instance's start already collected: its stage records up to the exec (the status
/// pipe is at end-of-file) and what `/proc` showed of the worker then.
#[derive(Debug, Clone, Default)]
pub(crate) struct ExecSeen {
    pub records: Vec<Record>,
    pub observed: ObservedReport,
}

/// A frame still to be written to the worker's stdin pipe, then closed (protocol 2).
pub(crate) struct StdinFrame {
    pub fd: OwnedFd,
    pub bytes: Vec<u8>,
    pub written: usize,
}

impl StdinFrame {
    /// Writes what the pipe takes now (the descriptor is non-blocking); `true` when the frame
    /// is complete or the worker closed its end (nothing more will ever be written).
    #[allow(unsafe_code)] // write(2) from our own buffer
    fn pump(&mut self) -> bool {
        while self.written < self.bytes.len() {
            let rest = &self.bytes[self.written..];
            // SAFETY: writing from a valid buffer to a descriptor we own.
            let n = unsafe {
                libc::write(
                    self.fd.as_raw_fd(),
                    rest.as_ptr() as *const libc::c_void,
                    rest.len(),
                )
            };
            if n > 0 {
                self.written += n as usize;
                continue;
            }
            let e = std::io::Error::last_os_error();
            match e.kind() {
                std::io::ErrorKind::Interrupted => continue,
                std::io::ErrorKind::WouldBlock => return false,
                // EPIPE: the worker closed stdin (or died); it gets no more of the frame.
                _ => return true,
            }
        }
        true
    }
}

pub(crate) struct Supervision<'a> {
    pub pid: libc::pid_t,
    pub pidfd: &'a OwnedFd,
    /// `None` when a warm start already read it to the end ([`Supervision::exec_seen`]).
    pub status_r: Option<OwnedFd>,
    pub exec_seen: Option<ExecSeen>,
    /// The protocol 2 frame for a warm instance's stdin pipe.
    pub stdin: Option<StdinFrame>,
    pub stdout_r: OwnedFd,
    pub stderr_r: OwnedFd,
    pub result_r: OwnedFd,
    pub timeout: Duration,
    pub grace: Duration,
    pub drain: Duration,
    pub max_output: usize,
    pub leaf: Option<&'a super::cgroup::Leaf>,
    pub started: Instant,
    pub guard: Option<DiskGuard<'a>>,
}

#[allow(unsafe_code)] // read(2) into the caller's buffer
pub(crate) fn read_some(fd: &OwnedFd, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        // SAFETY: reading into a valid buffer.
        let n = unsafe {
            libc::read(
                fd.as_raw_fd(),
                buf.as_mut_ptr() as *mut libc::c_void,
                buf.len(),
            )
        };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

impl Supervision<'_> {
    #[allow(unsafe_code)] // wait4 with rusage, not offered by nix
    pub(crate) fn run(self) -> Collected {
        let mut c = Collected::default();
        // Below glibc's FASTBIN_CONSOLIDATION_THRESHOLD (64 KiB): freeing a buffer of that size
        // or more consolidates the whole heap's fast bins, once per run (measured: malloc's
        // consolidation was ~5 % of the Hall's user-space CPU per executed dispatch).
        let mut buf = vec![0u8; READ_BUF];
        let mut status_bytes = Vec::new();
        let mut result_bytes = Vec::new();
        let deadline = self.started + self.timeout;
        let mut kill_at: Option<Instant> = None;
        let mut exited_at: Option<Instant> = None;
        let (mut status_open, mut stdout_open, mut stderr_open, mut result_open) =
            (self.status_r.is_some(), true, true, true);
        let mut observed_done = false;
        if let Some(seen) = self.exec_seen {
            c.records = seen.records;
            c.observed = seen.observed;
            c.status_eof = true;
            status_open = false;
            observed_done = true;
        }
        let mut stdin = self.stdin;
        if let Some(f) = &mut stdin {
            sys::set_nonblocking(&f.fd);
            if f.pump() {
                stdin = None;
            }
        }
        let mut next_guard = self.guard.as_ref().map(|g| self.started + g.every);

        loop {
            let now = Instant::now();
            // ---- the disk guard ----
            if exited_at.is_none()
                && !c.kill_sent
                && let (Some(g), Some(at)) = (&self.guard, next_guard)
                && now >= at
            {
                if let Some(used) = g.over() {
                    c.quota_exceeded = Some(used);
                    c.term_sent = true;
                    c.kill_sent = true;
                    let _ = sys::pidfd_send_signal(self.pidfd.as_raw_fd(), libc::SIGKILL);
                    if let Some(leaf) = self.leaf {
                        let _ = leaf.kill();
                    }
                    next_guard = None;
                } else {
                    next_guard = Some(now + g.every);
                }
            }
            // ---- deadlines ----
            if exited_at.is_none() {
                if !c.term_sent && now >= deadline {
                    c.timed_out = true;
                    c.term_sent = true;
                    let _ = sys::pidfd_send_signal(self.pidfd.as_raw_fd(), libc::SIGTERM);
                    kill_at = Some(now + self.grace);
                }
                if let Some(k) = kill_at
                    && !c.kill_sent
                    && now >= k
                {
                    c.kill_sent = true;
                    let _ = sys::pidfd_send_signal(self.pidfd.as_raw_fd(), libc::SIGKILL);
                    if let Some(leaf) = self.leaf {
                        let _ = leaf.kill();
                    }
                }
            }
            let outputs_open = stdout_open || stderr_open;
            if let Some(t) = exited_at {
                let pipes_done = !status_open && !result_open && !outputs_open;
                if pipes_done {
                    break;
                }
                if now >= t + self.drain {
                    c.drain_timed_out = outputs_open;
                    break;
                }
            }

            // ---- poll ----
            let next = match (exited_at, kill_at, c.term_sent) {
                (Some(t), _, _) => t + self.drain,
                (None, Some(k), _) if !c.kill_sent => k,
                (None, _, false) => deadline,
                // Killed already: wait for the pidfd.
                _ => now + Duration::from_millis(100),
            };
            let next = match next_guard {
                Some(g) if exited_at.is_none() && g < next => g,
                _ => next,
            };
            let wait_ms = next.saturating_duration_since(now).as_millis().min(60_000) as u16;
            let wait_ms = wait_ms.max(1);
            let mut fds = Vec::with_capacity(6);
            let mut which = Vec::with_capacity(6);
            let flags = PollFlags::POLLIN;
            if status_open && let Some(fd) = &self.status_r {
                fds.push(PollFd::new(fd.as_fd(), flags));
                which.push(0);
            }
            if exited_at.is_none()
                && let Some(f) = &stdin
            {
                fds.push(PollFd::new(f.fd.as_fd(), PollFlags::POLLOUT));
                which.push(5);
            }
            if stdout_open {
                fds.push(PollFd::new(self.stdout_r.as_fd(), flags));
                which.push(1);
            }
            if stderr_open {
                fds.push(PollFd::new(self.stderr_r.as_fd(), flags));
                which.push(2);
            }
            // The result pipe is read once init has exited (its write end is then closed):
            // polling it would only add a wake-up per run.
            if exited_at.is_none() {
                fds.push(PollFd::new(self.pidfd.as_fd(), flags));
                which.push(4);
            }
            match poll(&mut fds, PollTimeout::from(wait_ms)) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => std::thread::sleep(Duration::from_millis(1)),
            }
            let ready: Vec<usize> = fds
                .iter()
                .zip(which.iter())
                .filter(|(f, _)| f.revents().is_some_and(|r| !r.is_empty()))
                .map(|(_, w)| *w)
                .collect();
            drop(fds);
            for w in ready {
                match w {
                    5 => {
                        if stdin.as_mut().is_some_and(StdinFrame::pump) {
                            stdin = None;
                        }
                    }
                    0 => match self.status_r.as_ref().map(|fd| read_some(fd, &mut buf)) {
                        Some(Ok(0)) | None => {
                            status_open = false;
                            c.status_eof = true;
                            c.records = Record::parse_all(&status_bytes);
                        }
                        Some(Err(_)) => {
                            status_open = false;
                            c.records = Record::parse_all(&status_bytes);
                        }
                        Some(Ok(n)) => status_bytes.extend_from_slice(&buf[..n]),
                    },
                    1 | 2 => {
                        let (fd, keep, total) = if w == 1 {
                            (&self.stdout_r, &mut c.stdout, &mut c.stdout_total)
                        } else {
                            (&self.stderr_r, &mut c.stderr, &mut c.stderr_total)
                        };
                        match read_some(fd, &mut buf) {
                            Ok(0) | Err(_) => {
                                if w == 1 {
                                    stdout_open = false
                                } else {
                                    stderr_open = false
                                }
                            }
                            Ok(n) => {
                                *total += n as u64;
                                let room = self.max_output.saturating_sub(keep.len());
                                keep.extend_from_slice(&buf[..n.min(room)]);
                            }
                        }
                    }
                    _ => {
                        exited_at = Some(Instant::now());
                        stdin = None;
                        drain_result(&self.result_r, &mut buf, &mut result_bytes);
                        result_open = false;
                        c.result = ResultRecord::parse(&result_bytes);
                        // Anything that escaped the namespace but not the leaf goes now.
                        if let Some(leaf) = self.leaf {
                            let _ = leaf.kill();
                        }
                    }
                }
            }
            if !status_open && !observed_done {
                observed_done = true;
                if exec_confirmed(&c.records) {
                    c.observed = observe(self.pid);
                } else {
                    c.observed.reason = Some("the worker never reached exec".into());
                }
            }
        }
        c.duration = self.started.elapsed();
        if status_open {
            c.records = Record::parse_all(&status_bytes);
        }
        if result_open {
            c.result = ResultRecord::parse(&result_bytes);
        }
        // ---- reap init ----
        let mut status: libc::c_int = 0;
        // SAFETY: a zeroed rusage is a valid out-parameter.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: init is our child; its pidfd said it exited (or we wait for the kill).
        let r = unsafe { libc::wait4(self.pid, &mut status, libc::__WALL, &mut ru) };
        if r == self.pid {
            c.init_status = Some(status);
            let us = |t: libc::timeval| (t.tv_sec as u64) * 1_000_000 + t.tv_usec as u64;
            c.rusage_cpu_us = Some(us(ru.ru_utime) + us(ru.ru_stime));
            c.rusage_max_rss_kib = Some(ru.ru_maxrss.max(0) as u64);
        }
        c
    }
}

/// Reads whatever init wrote to the result pipe. Init is gone; non-blocking anyway, in case
/// anything else still held the write end.
fn drain_result(fd: &OwnedFd, buf: &mut [u8], out: &mut Vec<u8>) {
    sys::set_nonblocking(fd);
    while let Ok(n) = read_some(fd, buf) {
        if n == 0 {
            break;
        }
        if out.len() < RESULT_LEN * 2 {
            out.extend_from_slice(&buf[..n]);
        }
    }
}

pub(crate) fn exec_confirmed(records: &[Record]) -> bool {
    use super::child::{Outcome, Stage};
    let failed = records.iter().any(|r| r.outcome() == Some(Outcome::Failed));
    let attempted = records
        .iter()
        .any(|r| Stage::from_u8(r.stage) == Some(Stage::Exec));
    attempted && !failed
}

/// Reads the worker's `/proc/<pid>/status` (the first child of init).
pub(crate) fn observe(init_pid: libc::pid_t) -> ObservedReport {
    let children = fs::read_to_string(format!("/proc/{init_pid}/task/{init_pid}/children"))
        .unwrap_or_default();
    let Some(pid) = children.split_whitespace().next() else {
        return ObservedReport {
            reason: Some("the worker had already exited when the Hall looked".into()),
            ..ObservedReport::default()
        };
    };
    let source = format!("/proc/{pid}/status");
    // The status pipe reports "exec" when execve closes it, which the kernel does a moment
    // before it commits the new credentials (a capability set still full inside a user
    // namespace). Read again briefly until the exec's credentials are visible, so the report
    // shows what the worker runs with, not the instant before; a worker that really keeps
    // capabilities is reported as it is after the short wait.
    let mut last = None;
    for _ in 0..25 {
        let Ok(text) = fs::read_to_string(&source) else {
            break;
        };
        let observed = parse_status(&text, source.clone());
        let settled = observed.cap_eff.as_deref() == Some("0000000000000000");
        last = Some(observed);
        if settled {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    last.unwrap_or_else(|| ObservedReport {
        reason: Some("the worker had already exited when the Hall looked".into()),
        ..ObservedReport::default()
    })
}

pub(crate) fn parse_status(text: &str, source: String) -> ObservedReport {
    let field = |name: &str| -> Option<&str> {
        text.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k == name).then(|| v.trim())
        })
    };
    let num = |name: &str| field(name).and_then(|v| v.parse::<u32>().ok());
    let list = |name: &str| -> Option<Vec<u32>> {
        field(name).map(|v| {
            v.split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect()
        })
    };
    ObservedReport {
        source: Some(source),
        no_new_privs: num("NoNewPrivs"),
        seccomp: num("Seccomp"),
        seccomp_filters: num("Seccomp_filters"),
        uid: list("Uid"),
        gid: list("Gid"),
        cap_eff: field("CapEff").map(str::to_owned),
        ns_pid: list("NSpid"),
        reason: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_status() {
        let text = "Name:\tpython3.11\nUid:\t65534\t65534\t65534\t65534\nGid:\t65534\t65534\t65534\t65534\n\
                    NSpid:\t4242\t2\nCapEff:\t0000000000000000\nNoNewPrivs:\t1\nSeccomp:\t2\nSeccomp_filters:\t2\n";
        let o = parse_status(text, "/proc/4242/status".into());
        assert_eq!(o.no_new_privs, Some(1));
        assert_eq!(o.seccomp, Some(2));
        assert_eq!(o.seccomp_filters, Some(2));
        assert_eq!(o.uid, Some(vec![65534; 4]));
        assert_eq!(o.ns_pid, Some(vec![4242, 2]));
        assert_eq!(o.cap_eff.as_deref(), Some("0000000000000000"));
    }
}
