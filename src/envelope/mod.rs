//! The privilege envelope (issue 4): plan in the parent, apply in the child, supervise, report.
//!
//! A worker's bootstrap runs in a fresh process tree that the Hall builds with `clone3`
//! (new PID, network, IPC and UTS namespaces, born inside a per-run cgroup v2 leaf), confines
//! in a fixed stage order between fork and exec (descriptors, session, parent-death signal,
//! rlimits, identity, `no_new_privs`, Landlock, seccomp last), supervises (wall clock → SIGTERM
//! → grace → kill of the whole tree; capped but drained output) and describes in an
//! [`EnvelopeReport`]: per feature, what the profile requested and what the kernel enforced.
//!
//! # Threat model
//! The worker's code is hostile. It may try to read what is not its own (`/etc/shadow`, the
//! Hall's keys, other workers' store entries and run directories, the Hall's environment,
//! inherited descriptors), write outside its declared directories (including its own package
//! copy, and through symlinks), reach the network (TCP and UDP, including the host's loopback),
//! exhaust the host (fork bombs, memory, CPU, output, disk via huge files), outlive its run
//! (setsid, double fork, daemonising), or attack other processes and the kernel (ptrace,
//! `process_vm_*`, io_uring, bpf, namespaces, mount). Each is stopped by a named mechanism and
//! has a test in `tests/envelope_hostile.rs`. Out of scope: kernel exploits through the
//! system calls that remain allowed, and side channels.
//!
//! Trust boundary: everything in this module runs in the Hall or in the two pre-exec processes
//! forked from it (`child.rs`); the worker's code only ever runs after its exec, fully confined.
//! Requirements are never silently weakened: a `Required` minimum the host cannot meet refuses
//! the run ([`EnvelopeError::RequirementUnmet`]), a `BestEffort` shortfall is in the report.
//!
//! # Using it
//! Build one [`Envelope`] at start-up (it probes the kernel once), then call [`Envelope::run`]
//! from any thread (it blocks: it clones on the calling thread and supervises there until init
//! is reaped, so no dedicated spawner thread is needed; see `spawner`).

pub mod cgroup;
mod child;
pub mod elf;
pub mod error;
pub mod grant;
pub mod native;
mod netns;
pub mod peer;
pub mod plan;
mod prepare;
pub mod probe;
pub mod protocol;
pub mod python;
mod rawcall;
mod rawsys;
pub mod report;
pub mod seccomp;
mod spawner;
mod supervise;
mod sys;
pub mod types;
pub mod warm;

use std::time::{Duration, Instant};

use nix::libc;
use serde::Serialize;
use sha2::{Digest, Sha256};

pub use error::{EnvelopeError, Feature};
pub use plan::{Plan, PlanContext};
pub use prepare::read_secret;
pub use probe::{LANDLOCK_ABI_REQUESTED, Probe};
pub use python::{PythonError, PythonRuntime};
pub use report::{Effective, EnvelopeReport, MemoryReport, REPORT_SCHEMA};
pub use types::{
    Bootstrap, HostConfig, Identity, Limits, Minimum, Minimums, RunRequest, RuntimePaths,
    WorkerProtocol,
};

use child::{EXIT_FDS_FAILED, Outcome, Stage};
use prepare::hall_stage;
use report::StageReport;

/// How the worker ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WorkerExit {
    /// `exited`, `signaled`, or `killed` (the Hall killed the tree; no status was reported).
    pub kind: String,
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub signal_name: Option<String>,
}

/// The outcome of one run: the worker's exit, its output and the envelope report.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    pub exit: WorkerExit,
    /// The wall-clock timeout fired (SIGTERM was sent to the tree).
    pub timed_out: bool,
    /// The worker died of SIGXCPU (`RLIMIT_CPU`).
    pub cpu_limit_exceeded: bool,
    /// The request JSON is on stdin; the result JSON is expected here.
    pub stdout: Vec<u8>,
    /// Logs.
    pub stderr: Vec<u8>,
    pub stdout_bytes: u64,
    pub stderr_bytes: u64,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    /// Output was still open when the drain deadline passed.
    pub drain_timed_out: bool,
    pub cpu_time_ms: Option<u64>,
    /// `cgroup` (`cpu.stat` of the leaf) or `rusage` (init and everything it reaped).
    pub cpu_time_source: String,
    pub peak_memory_bytes: Option<u64>,
    /// `cgroup` (`memory.peak` of the whole tree) or `largest_process_rss` (the largest
    /// `ru_maxrss` of any single process: *not* the run's total, which can be up to
    /// `report.memory.run_bound_bytes`; every process starts as a copy of the Hall, so values up
    /// to `pre_exec_rss_bytes` may be that copy).
    pub peak_memory_source: String,
    pub pre_exec_rss_bytes: Option<u64>,
    pub oom_kills: Option<u64>,
    /// The run was killed because its persistent directories grew past their quota (their
    /// usage then, in bytes).
    pub write_quota_exceeded: Option<u64>,
    pub duration_ms: u64,
    pub report: EnvelopeReport,
}

/// How often a running worker's persistent directories are measured against their quota.
pub const DISK_GUARD_INTERVAL_MS: u64 = 100;

/// The canonical-JSON part of an outcome for the evidence receipt (no output bytes: digests).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunSummary<'a> {
    pub exit: &'a WorkerExit,
    pub timed_out: bool,
    pub cpu_limit_exceeded: bool,
    pub stdout_bytes: u64,
    pub stderr_bytes: u64,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    pub stdout_sha256: String,
    pub stderr_sha256: String,
    pub cpu_time_ms: Option<u64>,
    pub cpu_time_source: &'a str,
    pub peak_memory_bytes: Option<u64>,
    pub peak_memory_source: &'a str,
    pub duration_ms: u64,
    pub envelope: &'a EnvelopeReport,
}

/// Why the worker's stdout is not a usable result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResultError {
    #[error("the worker's output was truncated at {kept} of {total} bytes")]
    Truncated { kept: u64, total: u64 },
    #[error("the worker's stdout is not one JSON value: {0}")]
    NotJson(String),
}

/// Why a run that started did not produce a result: a small, closed set of stable codes (the
/// answer's `execution.error.code`, the outcome receipt's `execution.failure`).
///
/// | code | when |
/// |---|---|
/// | `timed_out` | the wall-clock limit fired (SIGTERM, grace, SIGKILL of the tree) |
/// | `cpu_limit_exceeded` | the worker died of SIGXCPU (`RLIMIT_CPU`) |
/// | `memory_limit_exceeded` | the cgroup's `memory.max` OOM-killed a process and the worker died of a signal |
/// | `killed_by_signal` | the worker died of any other signal (or the Hall killed the tree) |
/// | `exit_status` | the worker exited with a non-zero status |
/// | `truncated` | it exited 0 but its stdout went past the output limit |
/// | `not_json` | it exited 0 but its stdout is not exactly one JSON value (empty, text, two values) |
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunFailure {
    TimedOut { duration_ms: u64 },
    WriteQuotaExceeded { used: u64 },
    CpuLimitExceeded,
    MemoryLimitExceeded { oom_kills: u64 },
    KilledBySignal { signal: Option<i32>, name: String },
    ExitStatus { code: i32, detail: Option<String> },
    Truncated { kept: u64, total: u64 },
    NotJson(String),
}

impl RunFailure {
    /// Every code, in classification order (documentation and tests).
    pub const CODES: [&'static str; 8] = [
        "timed_out",
        "write_quota_exceeded",
        "cpu_limit_exceeded",
        "memory_limit_exceeded",
        "killed_by_signal",
        "exit_status",
        "truncated",
        "not_json",
    ];

    /// The stable code.
    pub fn code(&self) -> &'static str {
        match self {
            RunFailure::TimedOut { .. } => "timed_out",
            RunFailure::WriteQuotaExceeded { .. } => "write_quota_exceeded",
            RunFailure::CpuLimitExceeded => "cpu_limit_exceeded",
            RunFailure::MemoryLimitExceeded { .. } => "memory_limit_exceeded",
            RunFailure::KilledBySignal { .. } => "killed_by_signal",
            RunFailure::ExitStatus { .. } => "exit_status",
            RunFailure::Truncated { .. } => "truncated",
            RunFailure::NotJson(_) => "not_json",
        }
    }

    /// A sentence for humans (it may change between versions; match on [`RunFailure::code`]).
    pub fn message(&self) -> String {
        match self {
            RunFailure::TimedOut { duration_ms } => format!(
                "the worker did not finish within its wall-clock limit and was stopped after \
                {duration_ms} ms (SIGTERM, then SIGKILL of the whole tree)"
            ),
            RunFailure::WriteQuotaExceeded { used } => format!(
                "the worker's persistent directories grew to {used} bytes, past their quota, \
                and the run was killed"
            ),
            RunFailure::CpuLimitExceeded => {
                "the worker used up its CPU-time limit (RLIMIT_CPU) and was killed by SIGXCPU"
                    .into()
            }
            RunFailure::MemoryLimitExceeded { oom_kills } => format!(
                "the run reached its memory limit (cgroup memory.max): {oom_kills} process(es) \
                OOM-killed"
            ),
            RunFailure::KilledBySignal {
                signal: Some(s),
                name,
            } => format!("the worker was killed by signal {name} ({s})"),
            RunFailure::KilledBySignal { signal: None, name } => {
                format!("the worker was killed ({name})")
            }
            RunFailure::ExitStatus { code, detail } => match detail {
                Some(d) => format!("the worker exited with status {code}: {d}"),
                None => format!("the worker exited with status {code}"),
            },
            RunFailure::Truncated { kept, total } => format!(
                "the worker printed {total} bytes on stdout, over the output limit; only {kept} \
                were kept, so there is no result"
            ),
            RunFailure::NotJson(why) => {
                format!("the worker's stdout is not exactly one JSON value: {why}")
            }
        }
    }

    /// What to do about it, for a code (the CLI's `hint:` line), when there is something to say.
    pub fn hint_for(code: &str) -> Option<&'static str> {
        Some(match code {
            "not_json" => {
                "a worker must print exactly one JSON object on stdout (logs go to stderr); see \
                execution.stderr_tail"
            }
            "truncated" => {
                "the result is larger than the profile's limits.max_output_bytes: return less, \
                or raise the limit"
            }
            "timed_out" => "the profile's limits.wall_timeout_ms bounds every run",
            "write_quota_exceeded" => {
                "[envelope] data_quota_bytes bounds what a worker keeps in its persistent \
                directories; remove data there or raise it"
            }
            "cpu_limit_exceeded" => "the profile's limits.cpu_seconds bounds each process",
            "memory_limit_exceeded" => "the profile's limits.memory_bytes bounds the run",
            "exit_status" | "killed_by_signal" => {
                "execution.stderr_tail has the worker's last log lines"
            }
            _ => return None,
        })
    }

    /// Classifies a finished run: `None` when it succeeded (exit 0, not timed out, stdout is
    /// exactly one JSON value). Order: timed out, CPU limit, OOM kill, other signal, non-zero
    /// exit, truncated stdout, not one JSON value. Pure.
    pub fn classify(o: &RunOutcome) -> Option<RunFailure> {
        if o.timed_out {
            return Some(RunFailure::TimedOut {
                duration_ms: o.duration_ms,
            });
        }
        if let Some(used) = o.write_quota_exceeded {
            return Some(RunFailure::WriteQuotaExceeded { used });
        }
        if o.cpu_limit_exceeded || o.exit.signal == Some(libc::SIGXCPU) {
            return Some(RunFailure::CpuLimitExceeded);
        }
        if o.exit.kind != "exited" {
            if let Some(n) = o.oom_kills.filter(|n| *n > 0) {
                return Some(RunFailure::MemoryLimitExceeded { oom_kills: n });
            }
            return Some(RunFailure::KilledBySignal {
                signal: o.exit.signal,
                name: o
                    .exit
                    .signal_name
                    .clone()
                    .unwrap_or_else(|| o.exit.kind.clone()),
            });
        }
        match o.exit.code {
            Some(0) => {}
            code => {
                // A protocol-abiding worker says why in its one JSON object.
                let detail = o.result_json().ok().and_then(|v| {
                    let e = v.get("error")?;
                    let text = format!(
                        "{}: {}",
                        e.get("code")?.as_str()?,
                        e.get("message").and_then(|m| m.as_str()).unwrap_or("")
                    );
                    // The worker's words are bounded and control characters escaped: they reach
                    // answers, logs and terminals.
                    let text: String = text
                        .chars()
                        .flat_map(|c| {
                            let escaped: Vec<char> = if c.is_control() {
                                c.escape_default().collect()
                            } else {
                                vec![c]
                            };
                            escaped
                        })
                        .collect();
                    Some(match text.char_indices().nth(300) {
                        Some((cut, _)) => format!("{}…", &text[..cut]),
                        None => text,
                    })
                });
                return Some(RunFailure::ExitStatus {
                    code: code.unwrap_or(-1),
                    detail,
                });
            }
        }
        match o.result_json() {
            Ok(_) => None,
            Err(ResultError::Truncated { kept, total }) => {
                Some(RunFailure::Truncated { kept, total })
            }
            Err(ResultError::NotJson(why)) => Some(RunFailure::NotJson(why)),
        }
    }
}

impl RunOutcome {
    /// Why the run failed, or `None` when it produced a result ([`RunFailure::classify`]).
    pub fn failure(&self) -> Option<RunFailure> {
        RunFailure::classify(self)
    }

    /// Whether the worker exited 0 on its own.
    pub fn success(&self) -> bool {
        self.exit.kind == "exited" && self.exit.code == Some(0) && !self.timed_out
    }

    /// Parses stdout as the result JSON (the worker protocol).
    pub fn result_json(&self) -> Result<serde_json::Value, ResultError> {
        if self.stdout_truncated {
            return Err(ResultError::Truncated {
                kept: self.stdout.len() as u64,
                total: self.stdout_bytes,
            });
        }
        if self.stdout.iter().all(u8::is_ascii_whitespace) {
            return Err(ResultError::NotJson("stdout is empty".into()));
        }
        serde_json::from_slice(&self.stdout).map_err(|e| {
            let text = e.to_string();
            ResultError::NotJson(if text.starts_with("trailing characters") {
                format!("something follows the first JSON value ({text})")
            } else {
                text
            })
        })
    }

    /// The receipt-ready summary.
    pub fn summary(&self) -> RunSummary<'_> {
        let sha = |b: &[u8]| format!("sha256:{}", crate::common::hex(&Sha256::digest(b)));
        RunSummary {
            exit: &self.exit,
            timed_out: self.timed_out,
            cpu_limit_exceeded: self.cpu_limit_exceeded,
            stdout_bytes: self.stdout_bytes,
            stderr_bytes: self.stderr_bytes,
            stdout_truncated: self.stdout_truncated,
            stderr_truncated: self.stderr_truncated,
            stdout_sha256: sha(&self.stdout),
            stderr_sha256: sha(&self.stderr),
            cpu_time_ms: self.cpu_time_ms,
            cpu_time_source: &self.cpu_time_source,
            peak_memory_bytes: self.peak_memory_bytes,
            peak_memory_source: &self.peak_memory_source,
            duration_ms: self.duration_ms,
            envelope: &self.report,
        }
    }
}

/// A signal's name (`SIGKILL`), for reports.
pub fn signal_name(sig: i32) -> String {
    nix::sys::signal::Signal::try_from(sig)
        .map(|s| s.as_str().to_owned())
        .unwrap_or_else(|_| format!("SIG{sig}"))
}

/// The Hall's envelope: host settings plus what the kernel can enforce.
#[derive(Debug, Clone)]
pub struct Envelope {
    host: HostConfig,
    probe: Probe,
}

impl Envelope {
    /// Probes the host (once) and checks the settings.
    pub fn new(host: HostConfig) -> Result<Envelope, EnvelopeError> {
        let probe = Probe::run(&host);
        Envelope::with_probe(host, probe)
    }

    /// Uses a given probe (tests, or a probe shared between instances).
    pub fn with_probe(host: HostConfig, probe: Probe) -> Result<Envelope, EnvelopeError> {
        if !host.runs_dir.is_absolute() {
            return Err(EnvelopeError::invalid(
                "host.runs_dir",
                "must be an absolute path",
            ));
        }
        if host.worker_identity.uid == 0 || host.worker_identity.gid == 0 {
            return Err(EnvelopeError::invalid(
                "host.worker_identity",
                "must not be uid 0 or gid 0",
            ));
        }
        if probe.hall_uid == 0 && probe.namespaces.net {
            netns::start();
        }
        Ok(Envelope { host, probe })
    }

    pub fn probe(&self) -> &Probe {
        &self.probe
    }

    /// Removes what a previous Hall process left behind when it died mid-run: every entry of
    /// the runs directory, and the empty leaves with this Hall's name prefix
    /// ([`HostConfig::leaf_prefix`]) under the cgroup parent (a populated leaf is never removed;
    /// `rmdir` refuses it; another Hall's leaves are never touched). Its workers died with it (parent-death
    /// signal); their directories did not. Call once at start-up, before the first run: it
    /// would also remove the directories of runs in flight. Returns how many entries went.
    pub fn sweep_stale(&self) -> usize {
        let mut removed = 0;
        if let Ok(entries) = std::fs::read_dir(&self.host.runs_dir) {
            for e in entries.flatten() {
                let path = e.path();
                let gone = match e.file_type() {
                    Ok(t) if t.is_dir() => prepare::remove_run_dir(&path).is_ok(),
                    Ok(_) => std::fs::remove_file(&path).is_ok(),
                    Err(_) => false,
                };
                removed += usize::from(gone);
            }
        }
        if let Some(parent) = &self.probe.cgroup.parent
            && let Ok(entries) = std::fs::read_dir(parent)
        {
            let prefix = self.host.leaf_prefix();
            for e in entries.flatten() {
                let name = e.file_name();
                let is_leaf = name.to_string_lossy().starts_with(&prefix)
                    && e.file_type().is_ok_and(|t| t.is_dir());
                if is_leaf && std::fs::remove_dir(e.path()).is_ok() {
                    removed += 1;
                }
            }
        }
        removed
    }

    pub fn host(&self) -> &HostConfig {
        &self.host
    }

    /// Plans a run without starting anything (a fresh run id and span id are minted).
    pub fn plan(&self, req: &RunRequest) -> Result<(Plan, EnvelopeReport), EnvelopeError> {
        plan::plan(req, &self.host, &self.probe, &new_context())
    }

    /// Runs the request's bootstrap inside the envelope and waits for it. Blocking.
    ///
    /// `Ok` whenever the worker was started (whatever its exit); `Err` when the run was refused
    /// or a stage before exec failed (the error names the stage and carries the report).
    pub fn run(&self, req: &RunRequest) -> Result<RunOutcome, EnvelopeError> {
        let started = Instant::now();
        let (plan, report) = plan::plan(req, &self.host, &self.probe, &new_context())?;
        let result = self.run_cold(&plan, report, req, started);
        if !self.host.keep_run_dirs {
            let _ = prepare::remove_run_dir(&plan.run_dir);
        }
        result
    }

    fn run_cold(
        &self,
        plan: &Plan,
        mut report: EnvelopeReport,
        req: &RunRequest,
        started: Instant,
    ) -> Result<RunOutcome, EnvelopeError> {
        let frame;
        let stdin = match req.protocol {
            WorkerProtocol::V1 => prepare::StdinSource::Sealed(&req.payload),
            WorkerProtocol::V2 => {
                frame = protocol::frame(
                    &req.payload,
                    protocol::FrameContext {
                        correlation_id: &req.correlation_id,
                        traceparent: &plan.traceparent,
                        timeout_ms: req.limits.wall_timeout_ms,
                    },
                )?;
                prepare::StdinSource::Sealed(&frame)
            }
        };
        let s = self.start(plan, &mut report, req, stdin)?;
        self.finish(s, report, req, started, None, None)
    }

    /// Prepares and clones a planned run (the `clone` stage is the last one here).
    fn start(
        &self,
        plan: &Plan,
        report: &mut EnvelopeReport,
        req: &RunRequest,
        stdin: prepare::StdinSource<'_>,
    ) -> Result<Started, EnvelopeError> {
        let prepared = prepare::prepare(
            plan,
            report,
            &self.host,
            stdin,
            &req.opened_writes,
            self.probe.hall_uid,
            self.probe.hall_gid,
        )?;
        let prepare::Prepared {
            spec,
            stacks,
            clone_flags,
            leaf,
            stdout_r,
            stderr_r,
            status_r,
            result_r,
            stdin_w,
            child_fds,
        } = prepared;

        let started_ms = crate::common::now_ms();
        let running = spawner::spawn(spec, stacks, clone_flags, leaf.as_ref());
        drop(child_fds);
        let running = match running {
            Err(e) => {
                cleanup_leaf(leaf);
                let errno = e.raw_os_error().unwrap_or(0);
                let message = format!(
                    "clone3 with the planned namespaces failed: {}",
                    sys::errno_text(errno)
                );
                let mut report = report.clone();
                hall_stage(&mut report, "clone", "failed", Some(message.clone()));
                return Err(EnvelopeError::StageFailed {
                    stage: "clone".into(),
                    errno,
                    message,
                    report: Box::new(report),
                });
            }
            Ok(r) => r,
        };
        hall_stage(report, "clone", "ok", None);
        report.instance = report::InstanceReport::cold(started_ms);
        Ok(Started {
            running,
            leaf,
            stdout_r,
            stderr_r,
            status_r: Some(status_r),
            result_r,
            stdin_w,
            started_ms,
        })
    }

    /// Supervises a started run to its end and describes it. `started` is when its wall clock
    /// began (a warm instance: the delivery of its request); `exec_seen` what a warm start
    /// already read of the status pipe; `frame` the protocol 2 frame for a stdin pipe (none:
    /// the pipe is closed, the worker reads end-of-file).
    fn finish(
        &self,
        s: Started,
        mut report: EnvelopeReport,
        req: &RunRequest,
        started: Instant,
        exec_seen: Option<supervise::ExecSeen>,
        frame: Option<Vec<u8>>,
    ) -> Result<RunOutcome, EnvelopeError> {
        let Started {
            running,
            leaf,
            stdout_r,
            stderr_r,
            status_r,
            result_r,
            stdin_w,
            started_ms: _,
        } = s;
        let stdin = match (stdin_w, frame) {
            (Some(fd), Some(bytes)) => Some(supervise::StdinFrame {
                fd,
                bytes,
                written: 0,
            }),
            _ => None,
        };
        let sup = supervise::Supervision {
            pid: running.pid,
            pidfd: &running.pidfd,
            status_r,
            exec_seen,
            stdin,
            stdout_r,
            stderr_r,
            result_r,
            timeout: Duration::from_millis(req.limits.wall_timeout_ms),
            grace: Duration::from_millis(self.host.kill_grace_ms),
            drain: Duration::from_millis(self.host.drain_timeout_ms),
            max_output: req.limits.max_output_bytes as usize,
            leaf: leaf.as_ref(),
            started,
            guard: req
                .data_quota_bytes
                .filter(|_| !req.opened_writes.is_empty())
                .map(|quota| supervise::DiskGuard {
                    dirs: &req.opened_writes,
                    quota,
                    every: Duration::from_millis(DISK_GUARD_INTERVAL_MS),
                }),
        };
        let c = sup.run();
        if c.status_eof && c.init_status.is_some() {
            running.settle();
        } else {
            // A pre-exec process might still be using the shared memory: leak it (see
            // spawner::Running). Only reachable if the drain deadline passed before exec.
            drop(running);
        }
        let stats = leaf.as_ref().map(|l| l.stats());
        cleanup_leaf(leaf);

        // ---- stages ----
        let mut failed: Option<(Stage, i32)> = None;
        for r in &c.records {
            let Some(stage) = Stage::from_u8(r.stage) else {
                continue;
            };
            let outcome = r.outcome();
            let (text, errno) = match outcome {
                Some(Outcome::Ok) => ("ok", None),
                Some(Outcome::Degraded) => ("degraded", Some(r.errno)),
                Some(Outcome::Failed) | None => ("failed", Some(r.errno)),
            };
            report.stages.push(StageReport {
                stage: stage.name().into(),
                process: stage.process().into(),
                outcome: text.into(),
                errno,
                detail: errno.map(sys::errno_text),
            });
            if outcome == Some(Outcome::Degraded) {
                degrade_stage(&mut report, stage, r.errno);
            }
            if outcome != Some(Outcome::Ok)
                && outcome != Some(Outcome::Degraded)
                && failed.is_none()
            {
                failed = Some((stage, r.errno));
            }
        }
        if failed.is_none()
            && c.records.is_empty()
            && let Some(st) = c.init_status
            && libc::WIFEXITED(st)
            && libc::WEXITSTATUS(st) == EXIT_FDS_FAILED
        {
            failed = Some((Stage::Fds, 0));
        }
        report.observed = c.observed.clone();
        if let Some((stage, errno)) = failed {
            let message = format!(
                "{} ({} process): {}",
                stage.name(),
                stage.process(),
                sys::errno_text(errno)
            );
            return Err(EnvelopeError::StageFailed {
                stage: stage.name().into(),
                errno,
                message,
                report: Box::new(report),
            });
        }

        // ---- exit ----
        let exit = match c.result {
            Some(r) if r.kind == 1 => WorkerExit {
                kind: "exited".into(),
                code: Some(r.value),
                signal: None,
                signal_name: None,
            },
            Some(r) => WorkerExit {
                kind: "signaled".into(),
                code: None,
                signal: Some(r.value),
                signal_name: Some(signal_name(r.value)),
            },
            None => WorkerExit {
                kind: "killed".into(),
                code: None,
                signal: Some(libc::SIGKILL),
                signal_name: Some(signal_name(libc::SIGKILL)),
            },
        };
        let cpu_limit_exceeded = exit.signal == Some(libc::SIGXCPU);
        let (cpu_time_ms, cpu_time_source) = match stats.and_then(|s| s.cpu_usage_usec) {
            Some(us) => (Some(us / 1000), "cgroup".to_owned()),
            None => (c.rusage_cpu_us.map(|us| us / 1000), "rusage".to_owned()),
        };
        let (peak_memory_bytes, peak_memory_source) = match stats.and_then(|s| s.memory_peak_bytes)
        {
            Some(b) => (Some(b), "cgroup".to_owned()),
            None => (
                c.rusage_max_rss_kib.map(|k| k * 1024),
                "largest_process_rss".to_owned(),
            ),
        };
        let max = req.limits.max_output_bytes;
        Ok(RunOutcome {
            exit,
            timed_out: c.timed_out,
            cpu_limit_exceeded,
            stdout_truncated: c.stdout_total > max,
            stderr_truncated: c.stderr_total > max,
            stdout: c.stdout,
            stderr: c.stderr,
            stdout_bytes: c.stdout_total,
            stderr_bytes: c.stderr_total,
            drain_timed_out: c.drain_timed_out,
            cpu_time_ms,
            cpu_time_source,
            peak_memory_bytes,
            peak_memory_source,
            pre_exec_rss_bytes: c.result.map(|r| r.init_max_rss_kib.max(0) as u64 * 1024),
            oom_kills: stats.and_then(|s| s.oom_kills),
            write_quota_exceeded: c.quota_exceeded,
            duration_ms: started.elapsed().as_millis() as u64,
            report,
        })
    }
}

/// A cloned run: init and the Hall's ends of its pipes, until [`Envelope::finish`].
pub(crate) struct Started {
    running: spawner::Running,
    leaf: Option<cgroup::Leaf>,
    stdout_r: std::os::fd::OwnedFd,
    stderr_r: std::os::fd::OwnedFd,
    /// Taken by a warm start, which reads it to the exec.
    status_r: Option<std::os::fd::OwnedFd>,
    result_r: std::os::fd::OwnedFd,
    stdin_w: Option<std::os::fd::OwnedFd>,
    /// When `clone3` returned (Unix ms).
    started_ms: u64,
}

/// A best-effort stage failed in the child: the report must say the feature is not enforced.
fn degrade_stage(report: &mut EnvelopeReport, stage: Stage, errno: i32) {
    let why = format!(
        "{} failed at run time: {}",
        stage.name(),
        sys::errno_text(errno)
    );
    match stage {
        Stage::Landlock => {
            report.landlock.effective = Effective::NotEnforced;
            report.landlock.ruleset = "not_enforced".into();
            report.landlock.reason = Some(why.clone());
            report.degrade(format!("landlock: {why}"));
        }
        Stage::NetNamespace => {
            report.network.effective = Effective::NotEnforced;
            report.network.namespace = false;
            report.namespaces.net = false;
            report.network.reason = Some(why.clone());
            report.degrade(format!("network_isolation: {why}"));
        }
        Stage::Seccomp => {
            report.seccomp.effective = Effective::NotEnforced;
            report.seccomp.reason = Some(why.clone());
            report.degrade(format!("seccomp: {why}"));
        }
        _ => report.degrade(format!("{}: {why}", stage.name())),
    }
}

fn cleanup_leaf(leaf: Option<cgroup::Leaf>) {
    if let Some(l) = leaf {
        let _ = l.remove();
    }
}

fn new_context() -> PlanContext {
    let mut span = [0u8; 8];
    let _ = getrandom::fill(&mut span);
    PlanContext {
        run_id: uuid::Uuid::now_v7().to_string(),
        span_id: span,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(kind: &str, code: Option<i32>, signal: Option<i32>, stdout: &[u8]) -> RunOutcome {
        let (_, report) =
            plan::tests::run(&plan::tests::req(), &plan::tests::full_probe()).expect("plan");
        RunOutcome {
            exit: WorkerExit {
                kind: kind.into(),
                code,
                signal,
                signal_name: signal.map(signal_name),
            },
            timed_out: false,
            cpu_limit_exceeded: false,
            stdout: stdout.to_vec(),
            stderr: Vec::new(),
            stdout_bytes: stdout.len() as u64,
            stderr_bytes: 0,
            stdout_truncated: false,
            stderr_truncated: false,
            drain_timed_out: false,
            cpu_time_ms: None,
            cpu_time_source: "rusage".into(),
            peak_memory_bytes: None,
            peak_memory_source: "largest_process_rss".into(),
            pre_exec_rss_bytes: None,
            oom_kills: None,
            write_quota_exceeded: None,
            duration_ms: 1234,
            report,
        }
    }

    fn code(o: &RunOutcome) -> Option<&'static str> {
        RunFailure::classify(o).map(|f| f.code())
    }

    #[test]
    fn a_finished_run_is_classified_in_a_fixed_order() {
        let ok = outcome("exited", Some(0), None, b"{\"greeting\": \"hi\"}\n");
        assert_eq!(RunFailure::classify(&ok), None);
        assert!(ok.failure().is_none());

        // Not exactly one JSON value: text, empty, two values.
        let text = outcome("exited", Some(0), None, b"hello\n");
        assert_eq!(code(&text), Some("not_json"));
        let empty = outcome("exited", Some(0), None, b" \n");
        let f = RunFailure::classify(&empty).unwrap();
        assert!(f.message().contains("stdout is empty"), "{}", f.message());
        let two = outcome("exited", Some(0), None, b"{} {}");
        let f = RunFailure::classify(&two).unwrap();
        assert_eq!(f.code(), "not_json");
        assert!(
            f.message().contains("follows the first JSON value"),
            "{}",
            f.message()
        );

        // Truncated comes before not_json (a cut JSON value does not parse either).
        let mut cut = outcome("exited", Some(0), None, b"{\"a\": \"xxxx");
        cut.stdout_truncated = true;
        cut.stdout_bytes = 1 << 20;
        let f = RunFailure::classify(&cut).unwrap();
        assert_eq!(
            f,
            RunFailure::Truncated {
                kept: 11,
                total: 1 << 20
            }
        );

        // A non-zero exit comes before the output; a protocol error object is quoted.
        let mut three = outcome(
            "exited",
            Some(3),
            None,
            b"{\"error\": {\"code\": \"bad_input\", \"message\": \"no name\"}}",
        );
        three.stdout_truncated = true;
        assert_eq!(code(&three), Some("exit_status"));
        three.stdout_truncated = false;
        let f = RunFailure::classify(&three).unwrap();
        assert_eq!(
            f.message(),
            "the worker exited with status 3: bad_input: no name"
        );
        let hostile = outcome(
            "exited",
            Some(2),
            None,
            format!(
                "{{\"error\": {{\"code\": \"x\", \"message\": \"\\u001b[2J{}\"}}}}",
                "y".repeat(1000)
            )
            .as_bytes(),
        );
        let m = RunFailure::classify(&hostile).unwrap().message();
        assert!(!m.contains('\u{1b}') && m.contains("\\u{1b}[2J"), "{m}");
        assert!(m.len() < 400 && m.ends_with('…'), "{m}");
        assert_eq!(
            RunFailure::classify(&outcome("exited", Some(1), None, b"junk")).map(|f| f.message()),
            Some("the worker exited with status 1".to_owned())
        );

        // Signals: SIGXCPU is the CPU limit, an OOM kill the memory limit, the rest by name.
        let segv = outcome("signaled", None, Some(libc::SIGSEGV), b"");
        let f = RunFailure::classify(&segv).unwrap();
        assert_eq!(f.code(), "killed_by_signal");
        assert!(f.message().contains("SIGSEGV (11)"), "{}", f.message());
        let mut xcpu = outcome("signaled", None, Some(libc::SIGXCPU), b"");
        assert_eq!(code(&xcpu), Some("cpu_limit_exceeded"));
        xcpu.cpu_limit_exceeded = true;
        assert_eq!(code(&xcpu), Some("cpu_limit_exceeded"));
        let mut oom = outcome("signaled", None, Some(libc::SIGKILL), b"");
        oom.oom_kills = Some(0);
        assert_eq!(code(&oom), Some("killed_by_signal"));
        oom.oom_kills = Some(2);
        assert_eq!(code(&oom), Some("memory_limit_exceeded"));
        assert_eq!(
            code(&outcome("killed", None, Some(9), b"")),
            Some("killed_by_signal")
        );

        // A timeout wins over everything (the tree was killed because of it).
        let mut late = outcome("killed", None, Some(libc::SIGKILL), b"");
        late.timed_out = true;
        late.oom_kills = Some(1);
        let f = RunFailure::classify(&late).unwrap();
        assert_eq!(f.code(), "timed_out");
        assert!(f.message().contains("1234 ms"), "{}", f.message());
        let mut late_ok = outcome("exited", Some(0), None, b"{}");
        late_ok.timed_out = true;
        assert_eq!(code(&late_ok), Some("timed_out"));

        // Every code is listed, and the hints are there for the ones a caller can act on.
        for c in RunFailure::CODES {
            assert!(RunFailure::hint_for(c).is_some(), "{c}");
        }
        assert!(RunFailure::hint_for("DENY_ENVELOPE_STAGE_FAILED").is_none());
    }
}
