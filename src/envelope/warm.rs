//! Warm instances: a protocol 2 worker started ahead of its request, in exactly the envelope a
//! cold run gets, blocked in `read(0)` until its one frame arrives.
//!
//! Lifecycle: [`Envelope::start_warm`] plans, prepares and clones as a cold run does, with a
//! stdin *pipe* instead of the sealed memfd, and waits until the status pipe says every
//! pre-exec stage is done and the exec happened (the report's stages are then those of a cold
//! run). The instance then idles. [`WarmInstance::run`] consumes it: the frame is written and
//! stdin closed, the wall clock starts, and supervision, the report and the clean-up are the
//! cold run's own ([`Envelope::finish`]). Dropping an unclaimed instance kills its tree and
//! removes its leaf and run directory.
//!
//! # Threat model
//! The worker is as hostile as any, and so is the request that will reach it. What is new
//! compared with a cold run, and what stops it:
//! - *One request's data reaching another*: an instance serves one request, then dies
//!   (`run` consumes it; the frame ends at end-of-file, nothing writes a second one). Each
//!   instance has its own run directory, PID/network/IPC/UTS namespaces, Landlock domain and
//!   cgroup leaf, exactly as a cold run; siblings cannot see or signal each other.
//! - *Context forged or left over*: nothing about the request is in the environment at exec
//!   (protocol 2); the Hall alone writes the frame, after the claim.
//! - *Code that was not verified for this dispatch*: the pool key holds the verified package
//!   digest and store path, and the Hall verifies before it claims, as before a cold run.
//! - *An instance that changed while idle* (it exited, or printed before its request):
//!   [`WarmInstance::usable`] is checked at the claim; such an instance is dropped and the
//!   dispatch runs cold.
//! - *Stale secrets*: a worker declaring secrets is never started warm ([`Ineligible`]): a
//!   secret is read right before each cold run.
//! - *Persistent directories swapped or filled while it waited*: the key holds the device and
//!   inode of each persistent directory, and the Hall opens and measures them again (quota)
//!   right before the claim; an instance granted another directory has another key. The disk
//!   guard watches the run as a cold one.
//!
//! Init's parent-death signal follows the thread that cloned it: call [`Envelope::start_warm`]
//! only on a thread that lives as long as the instances it starts (the Hall's pool thread). The
//! instance itself may be claimed and finished on any thread.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::libc;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use sha2::{Digest, Sha256};

use super::child::Record;
use super::plan::Plan;
use super::report::{InstanceReport, ObservedReport};
use super::supervise::{self, ExecSeen};
use super::{
    Envelope, EnvelopeError, EnvelopeReport, RunOutcome, RunRequest, Started, WorkerProtocol,
    new_context, plan, prepare, protocol, sys,
};

/// Why a request cannot be served by a warm instance (it runs cold).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ineligible {
    /// The package speaks protocol 1: its context is in the environment at exec.
    Protocol1,
    /// Secrets are read when the instance starts; a rotated secret would not reach it.
    Secrets,
}

impl Ineligible {
    pub fn as_str(self) -> &'static str {
        match self {
            Ineligible::Protocol1 => "protocol_1",
            Ineligible::Secrets => "secrets",
        }
    }
}

/// The pool key of a request: a digest of everything the plan is made from except the request
/// and its context (package directory and digest, declared envelope, limits, minimums,
/// bootstrap, runtime paths, identity, and the device and inode of each persistent directory). Two requests with one key get the same plan, so an
/// instance started for one serves the other exactly as a cold run would. The digest is of the
/// values' `Debug` form: it never leaves the process, and it only has to be equal for equal
/// values.
pub fn warm_key(req: &RunRequest) -> Result<String, Ineligible> {
    if req.protocol != WorkerProtocol::V2 {
        return Err(Ineligible::Protocol1);
    }
    if !req.privilege_envelope.secrets_access.is_empty() {
        return Err(Ineligible::Secrets);
    }
    let material = format!(
        "{:?}",
        (
            &req.package_dir,
            &req.package_digest,
            &req.privilege_envelope,
            &req.limits,
            &req.minimums,
            &req.bootstrap,
            &req.runtime,
            &req.identity,
            req.allow_absolute_writes,
            req.data_quota_bytes,
            req.opened_writes
                .iter()
                .map(|w| (&w.declared, w.dir.dev, w.dir.ino))
                .collect::<Vec<_>>(),
        )
    );
    Ok(crate::common::hex(&Sha256::digest(material.as_bytes())))
}

/// Why a warm instance could not be started.
#[derive(Debug, thiserror::Error)]
pub enum WarmStartError {
    #[error("this request cannot be served warm: {}", .0.as_str())]
    Ineligible(Ineligible),
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    /// The instance did not reach its exec in time, or died before it.
    #[error("the instance did not become ready: {0}")]
    NotReady(String),
}

/// A started, idle instance. Claim it with [`WarmInstance::run`]; dropping it discards it.
pub struct WarmInstance {
    started: Option<Started>,
    plan: Plan,
    report: EnvelopeReport,
    exec_seen: ExecSeen,
    key: String,
    started_at: Instant,
    keep_run_dir: bool,
}

impl std::fmt::Debug for WarmInstance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WarmInstance")
            .field("run_id", &self.plan.run_id)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl Envelope {
    /// Starts `req`'s worker ahead of its request (`req.payload` and `req.correlation_id` are
    /// not used) and waits up to `ready_within` for its exec. Blocking; see the module's note
    /// on which thread may call it.
    pub fn start_warm(
        &self,
        req: &RunRequest,
        ready_within: Duration,
    ) -> Result<WarmInstance, WarmStartError> {
        let key = warm_key(req).map_err(WarmStartError::Ineligible)?;
        let (plan, mut report) = plan::plan(req, &self.host, &self.probe, &new_context())?;
        let keep_run_dir = self.host.keep_run_dirs;
        let remove_dir = |plan: &Plan| {
            if !keep_run_dir {
                let _ = prepare::remove_run_dir(&plan.run_dir);
            }
        };
        report.process.stdin = "a pipe: the Hall writes the protocol 2 frame when the request \
            arrives, then closes it (a warm instance serves one request)"
            .into();
        let started_at = Instant::now();
        let mut s = match self.start(&plan, &mut report, req, prepare::StdinSource::Pipe) {
            Ok(s) => s,
            Err(e) => {
                remove_dir(&plan);
                return Err(e.into());
            }
        };
        let seen = s
            .status_r
            .as_ref()
            .and_then(|fd| read_to_exec(fd, &s.running.pidfd, started_at + ready_within));
        match seen {
            Some(records) if supervise::exec_confirmed(&records) => {
                // Every pre-exec process is gone: the status pipe has done its work.
                s.status_r = None;
                let observed = supervise::observe(s.running.pid);
                Ok(WarmInstance {
                    started: Some(s),
                    plan,
                    report,
                    exec_seen: ExecSeen { records, observed },
                    key,
                    started_at,
                    keep_run_dir,
                })
            }
            other => {
                // A stage failed, the instance died, or it was too slow: stop it and let the
                // cold run's own path say why (a failed stage is a typed error with its report).
                let _ = sys::pidfd_send_signal(s.running.pidfd.as_raw_fd(), libc::SIGKILL);
                if let Some(leaf) = &s.leaf {
                    let _ = leaf.kill();
                }
                let why = match &other {
                    Some(_) => "it stopped before its exec",
                    None => "it was not at its exec in time",
                };
                // The records read so far are the stages' own: a failed one becomes the typed
                // StageFailed error, as in a cold run (the pipe is at end-of-file when read).
                let exec_seen = other.map(|records| {
                    s.status_r = None;
                    ExecSeen {
                        records,
                        observed: ObservedReport {
                            reason: Some("the worker never reached exec".into()),
                            ..ObservedReport::default()
                        },
                    }
                });
                let r = self.finish(s, report, req, Instant::now(), exec_seen, None);
                remove_dir(&plan);
                match r {
                    Err(e) => Err(e.into()),
                    Ok(_) => Err(WarmStartError::NotReady(why.into())),
                }
            }
        }
    }
}

/// Reads the status pipe until end-of-file (`Some(records)`); `None` when init exits first
/// or `deadline` passes.
fn read_to_exec(status: &OwnedFd, pidfd: &OwnedFd, deadline: Instant) -> Option<Vec<Record>> {
    let mut bytes = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        let ms = left.as_millis().clamp(1, 60_000) as u16;
        let mut fds = [
            PollFd::new(status.as_fd(), PollFlags::POLLIN),
            PollFd::new(pidfd.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return None,
        }
        let ready = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
        let (status_ready, init_gone) = (ready(&fds[0]), ready(&fds[1]));
        if status_ready {
            match supervise::read_some(status, &mut buf) {
                Ok(0) => return Some(Record::parse_all(&bytes)),
                Ok(n) => bytes.extend_from_slice(&buf[..n]),
                Err(_) => return None,
            }
        } else if init_gone {
            return None;
        }
    }
}

impl WarmInstance {
    /// The pool key it was started for ([`warm_key`]).
    pub fn key(&self) -> &str {
        &self.key
    }

    /// How long ago it was started.
    pub fn age(&self) -> Duration {
        self.started_at.elapsed()
    }

    /// Whether it is still as it was started: init alive and nothing on stdout. A worker that
    /// exits or answers before its request is never claimed.
    pub fn usable(&self) -> bool {
        let Some(s) = &self.started else {
            return false;
        };
        let mut fds = [
            PollFd::new(s.running.pidfd.as_fd(), PollFlags::POLLIN),
            PollFd::new(s.stdout_r.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::ZERO) {
            Ok(0) => true,
            Ok(_) => false,
            Err(_) => false,
        }
    }

    /// What it has used so far, measured over its whole process tree in one look.
    ///
    /// CPU: its cgroup leaf's `cpu.stat` when it has one, else the sum over init and every
    /// process below it of their own and their reaped children's time (`/proc/<pid>/stat`), so
    /// a process it forked, or one that escaped its session and was reparented to init, is
    /// counted too. Memory: the leaf's `memory.current` when it has the memory controller, else
    /// the resident sets of every process below init added up (shared pages counted once per
    /// process: never less than the truth; init shares the Hall's memory and is not counted).
    pub fn usage(&self) -> Usage {
        let Some(s) = self.started.as_ref() else {
            return Usage::default();
        };
        let leaf_cpu = s.leaf.as_ref().and_then(|l| l.stats().cpu_usage_usec);
        let leaf_memory = s.leaf.as_ref().and_then(|l| l.memory_current());
        // The tree is walked once, and only for what the leaf cannot say.
        let procs = if leaf_cpu.is_none() || leaf_memory.is_none() {
            tree(s.running.pid)
        } else {
            Vec::new()
        };
        let cpu_ms = leaf_cpu.map(|us| us / 1000).unwrap_or_else(|| {
            let ticks: u64 = procs
                .iter()
                .filter_map(|pid| {
                    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
                    // utime, stime, cutime and cstime: fields 14 to 17.
                    let f = super::sys::stat_fields(&stat)?.skip(11).take(4);
                    Some(f.filter_map(|v| v.parse::<u64>().ok()).sum::<u64>())
                })
                .sum();
            // USER_HZ is 100 on Linux.
            ticks * 10
        });
        let memory_bytes = leaf_memory.unwrap_or_else(|| {
            let pages: u64 = procs
                .iter()
                .filter(|pid| **pid != s.running.pid)
                .filter_map(|pid| {
                    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
                    statm.split_whitespace().nth(1)?.parse::<u64>().ok()
                })
                .sum();
            pages * page_size()
        });
        Usage {
            cpu_ms: Some(cpu_ms),
            memory_bytes: Some(memory_bytes),
        }
    }

    /// Delivers `req` (whose [`warm_key`] must equal this instance's) and supervises the run to
    /// its end, exactly as a cold run; the wall clock starts now. Consumes the instance: no
    /// process ever sees a second request.
    pub fn run(
        mut self,
        envelope: &Envelope,
        req: &RunRequest,
    ) -> Result<RunOutcome, EnvelopeError> {
        if warm_key(req).ok().as_deref() != Some(self.key.as_str()) {
            return Err(EnvelopeError::invalid(
                "warm instance",
                "the request's plan differs from the one the instance was started with",
            ));
        }
        let claimed = Instant::now();
        let traceparent = plan::traceparent_for(req, new_context().span_id);
        let frame = protocol::frame(
            &req.payload,
            protocol::FrameContext {
                correlation_id: &req.correlation_id,
                traceparent: &traceparent,
                timeout_ms: req.limits.wall_timeout_ms,
            },
        )?;
        let Some(started) = self.started.take() else {
            return Err(EnvelopeError::invalid("warm instance", "already claimed"));
        };
        let mut report = self.report.clone();
        report.instance = InstanceReport {
            kind: "warm".into(),
            started_at: crate::common::rfc3339_ms(started.started_ms),
            idle_ms: claimed.duration_since(self.started_at).as_millis() as u64,
        };
        let exec_seen = std::mem::take(&mut self.exec_seen);
        let result = envelope.finish(started, report, req, claimed, Some(exec_seen), Some(frame));
        if !self.keep_run_dir {
            let _ = prepare::remove_run_dir(&self.plan.run_dir);
        }
        result
    }
}

impl Drop for WarmInstance {
    /// An unclaimed instance is discarded: its tree killed, init reaped, its leaf and run
    /// directory removed.
    fn drop(&mut self) {
        let Some(s) = self.started.take() else {
            return;
        };
        if let Some(leaf) = &s.leaf {
            let _ = leaf.kill();
        }
        let Started { running, leaf, .. } = s;
        running.kill_settled();
        if let Some(l) = leaf {
            let _ = l.remove();
        }
        if !self.keep_run_dir {
            let _ = prepare::remove_run_dir(&self.plan.run_dir);
        }
    }
}

/// What a waiting instance has used ([`WarmInstance::usage`]); `None` once it was claimed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// CPU time since it started, in ms.
    pub cpu_ms: Option<u64>,
    /// Memory it holds, in bytes.
    pub memory_bytes: Option<u64>,
}

/// The most processes [`tree`] lists (RLIMIT_NPROC bounds an instance far below this).
const MAX_TREE: usize = 4096;

/// `init` and every process below it, from `/proc/<pid>/task/<tid>/children`.
fn tree(init: libc::pid_t) -> Vec<libc::pid_t> {
    let mut out = vec![init];
    let mut i = 0;
    while i < out.len() && out.len() < MAX_TREE {
        let pid = out[i];
        i += 1;
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for t in tasks.flatten() {
            let children = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
            out.extend(
                children
                    .split_whitespace()
                    .filter_map(|c| c.parse::<libc::pid_t>().ok()),
            );
        }
    }
    out.truncate(MAX_TREE);
    out
}

fn page_size() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .map_or(4096, |v| v as u64)
}
