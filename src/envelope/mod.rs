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
//! from any thread (it blocks; the forks themselves happen on a dedicated spawner thread).

pub mod cgroup;
mod child;
pub mod error;
pub mod grant;
pub mod native;
mod netns;
pub mod peer;
pub mod plan;
mod prepare;
pub mod probe;
pub mod python;
mod rawsys;
pub mod report;
pub mod seccomp;
mod spawner;
mod supervise;
mod sys;
pub mod types;

use std::time::{Duration, Instant};

use nix::libc;
use serde::Serialize;
use sha2::{Digest, Sha256};

pub use error::{EnvelopeError, Feature};
pub use plan::{Plan, PlanContext};
pub use prepare::read_secret;
pub use probe::{LANDLOCK_ABI_REQUESTED, Probe};
pub use python::{PythonError, PythonRuntime};
pub use report::{Effective, EnvelopeReport, REPORT_SCHEMA};
pub use types::{
    Bootstrap, HostConfig, Identity, Limits, Minimum, Minimums, RunRequest, RuntimePaths,
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
    /// `cgroup` (`memory.peak`) or `rusage_max_rss` (the largest single process; every process
    /// starts as a copy of the Hall, so values up to `pre_exec_rss_bytes` may be that copy).
    pub peak_memory_source: String,
    pub pre_exec_rss_bytes: Option<u64>,
    pub oom_kills: Option<u64>,
    pub duration_ms: u64,
    pub report: EnvelopeReport,
}

/// The canonical-JSON part of an outcome for the evidence receipt (no output bytes: digests).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunSummary {
    pub exit: WorkerExit,
    pub timed_out: bool,
    pub cpu_limit_exceeded: bool,
    pub stdout_bytes: u64,
    pub stderr_bytes: u64,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    pub stdout_sha256: String,
    pub stderr_sha256: String,
    pub cpu_time_ms: Option<u64>,
    pub cpu_time_source: String,
    pub peak_memory_bytes: Option<u64>,
    pub peak_memory_source: String,
    pub duration_ms: u64,
    pub envelope: EnvelopeReport,
}

/// Why the worker's stdout is not a usable result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResultError {
    #[error("the worker's output was truncated at {kept} of {total} bytes")]
    Truncated { kept: u64, total: u64 },
    #[error("the worker's stdout is not one JSON value: {0}")]
    NotJson(String),
}

impl RunOutcome {
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
        serde_json::from_slice(&self.stdout).map_err(|e| ResultError::NotJson(e.to_string()))
    }

    /// The receipt-ready summary.
    pub fn summary(&self) -> RunSummary {
        let sha = |b: &[u8]| format!("sha256:{}", crate::router::hex(&Sha256::digest(b)));
        RunSummary {
            exit: self.exit.clone(),
            timed_out: self.timed_out,
            cpu_limit_exceeded: self.cpu_limit_exceeded,
            stdout_bytes: self.stdout_bytes,
            stderr_bytes: self.stderr_bytes,
            stdout_truncated: self.stdout_truncated,
            stderr_truncated: self.stderr_truncated,
            stdout_sha256: sha(&self.stdout),
            stderr_sha256: sha(&self.stderr),
            cpu_time_ms: self.cpu_time_ms,
            cpu_time_source: self.cpu_time_source.clone(),
            peak_memory_bytes: self.peak_memory_bytes,
            peak_memory_source: self.peak_memory_source.clone(),
            duration_ms: self.duration_ms,
            envelope: self.report.clone(),
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
    /// the runs directory, and the empty `wcp-*` leaves under the cgroup parent (a populated
    /// leaf is never removed; `rmdir` refuses it). Its workers died with it (parent-death
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
            for e in entries.flatten() {
                let name = e.file_name();
                let is_leaf = name.to_string_lossy().starts_with("wcp-")
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
        let (plan, mut report) = plan::plan(req, &self.host, &self.probe, &new_context())?;
        let result = self.run_planned(&plan, &mut report, req, started);
        if !self.host.keep_run_dirs {
            let _ = prepare::remove_run_dir(&plan.run_dir);
        }
        result
    }

    fn run_planned(
        &self,
        plan: &Plan,
        report: &mut EnvelopeReport,
        req: &RunRequest,
        started: Instant,
    ) -> Result<RunOutcome, EnvelopeError> {
        let prepared = prepare::prepare(
            plan,
            report,
            &self.host,
            &req.payload,
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
            child_fds,
        } = prepared;

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

        let sup = supervise::Supervision {
            pid: running.pid,
            pidfd: &running.pidfd,
            status_r,
            stdout_r,
            stderr_r,
            result_r,
            timeout: Duration::from_millis(req.limits.wall_timeout_ms),
            grace: Duration::from_millis(self.host.kill_grace_ms),
            drain: Duration::from_millis(self.host.drain_timeout_ms),
            max_output: req.limits.max_output_bytes as usize,
            leaf: leaf.as_ref(),
            started,
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
                degrade_stage(report, stage, r.errno);
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
                report: Box::new(report.clone()),
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
                "rusage_max_rss".to_owned(),
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
            duration_ms: started.elapsed().as_millis() as u64,
            report: report.clone(),
        })
    }
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
