//! The envelope report: per feature, what the profile requested and what the kernel actually
//! enforced, plus the stages applied between fork and exec and what `/proc/<pid>/status` showed
//! for the running worker. It goes into the evidence receipt, so it stays inside the canonical
//! JSON profile (`crate::crypto::canonical`): strings, booleans, null, integers below 2^53,
//! arrays and objects with ASCII keys. No floats anywhere (times are integer milliseconds,
//! sizes integer bytes; "unlimited" is `null`).

use serde::Serialize;

use crate::registry::NetworkEgress;

use super::seccomp::SeccompMode;
use super::types::{Minimum, Minimums};

/// The report's schema identifier.
pub const REPORT_SCHEMA: &str = "wcp-hall.envelope-report/1";

/// What the kernel enforced for one feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Effective {
    /// Fully enforced as requested.
    Enforced,
    /// Some of it; `reason` says what is missing.
    Partial,
    /// Requested (best effort) but not enforced on this host; `reason` says why.
    NotEnforced,
    /// The profile turned it off.
    Off,
}

impl Effective {
    pub fn as_str(self) -> &'static str {
        match self {
            Effective::Enforced => "enforced",
            Effective::Partial => "partial",
            Effective::NotEnforced => "not_enforced",
            Effective::Off => "off",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PackageReport {
    pub dir: String,
    pub digest: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BootstrapReport {
    pub program: String,
    pub argv: Vec<String>,
    pub cwd: String,
    /// The interpreter's implementation and version as probed (`cpython 3.11.2`); `null` for a
    /// native program.
    pub runtime: Option<String>,
    /// The worker protocol the signed package declares (1 or 2).
    pub protocol: super::types::WorkerProtocol,
}

/// When and how the process that served the request was started: for a cold run, as the
/// request arrived; for a warm instance ([`super::warm`]), ahead of it, with exactly the same
/// plan and stages (the report's other fields are the instance's own).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InstanceReport {
    /// `cold` or `warm`.
    pub kind: String,
    /// When `clone3` started the instance (RFC 3339, milliseconds, UTC).
    pub started_at: String,
    /// Milliseconds between the start and the delivery of the request (0 for a cold run).
    pub idle_ms: u64,
}

impl InstanceReport {
    /// What a plan says before anything started (`started_at` is filled in at the clone).
    pub(crate) fn planned() -> Self {
        InstanceReport {
            kind: "cold".into(),
            started_at: String::new(),
            idle_ms: 0,
        }
    }

    pub(crate) fn cold(started_ms: u64) -> Self {
        InstanceReport {
            kind: "cold".into(),
            started_at: crate::common::rfc3339_ms(started_ms),
            idle_ms: 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FsRuleReport {
    pub path: String,
    /// `read`, `read_execute`, `read_write`, `device_read_write`, `device_read`.
    pub access: String,
    /// For a rule granted from a descriptor the Hall opened and checked (a persistent write
    /// directory): what was opened, so the grant is named by what it is, not only by a path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dev: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ino: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LandlockReport {
    pub requested: Minimum,
    pub effective: Effective,
    pub reason: Option<String>,
    pub abi_requested: u32,
    pub abi_kernel: u32,
    pub abi_effective: u32,
    /// `fully_enforced`, `partially_enforced` or `not_enforced` (rust-landlock's words).
    pub ruleset: String,
    pub fs_rules: Vec<FsRuleReport>,
    /// TCP ports `connect` may reach; `null` when Landlock does not handle TCP here.
    pub tcp_connect_ports: Option<Vec<u16>>,
    /// `denied` (handled, no rule) or `not_handled`.
    pub tcp_bind: String,
    /// Scopes (ABI 6): `abstract_unix_socket`, `signal`.
    pub scopes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NetworkReport {
    pub requested: Minimum,
    pub effective: Effective,
    pub reason: Option<String>,
    pub egress: NetworkEgress,
    /// `namespace`, `landlock_tcp_ports`, `seccomp_no_inet`, `landlock_tcp_deny` or `host`.
    pub mode: String,
    /// A private network namespace was created (only loopback inside).
    pub namespace: bool,
    /// What happens to TCP, in words.
    pub tcp: String,
    /// What happens to UDP, in words.
    pub udp: String,
    /// Whether allowlisted *hosts* are enforced (they are not: only ports are).
    pub hosts_enforced: bool,
    pub dns: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SeccompReport {
    pub requested: Minimum,
    pub effective: Effective,
    pub reason: Option<String>,
    pub mode: Option<SeccompMode>,
    pub digest: Option<String>,
    pub default_action: String,
    pub denied_with: String,
    pub denied: Vec<String>,
    pub conditional: Vec<String>,
    pub enosys: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FeatureReport {
    pub requested: Minimum,
    pub effective: Effective,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NamespacesReport {
    pub user: bool,
    pub pid: bool,
    pub net: bool,
    pub ipc: bool,
    pub uts: bool,
    /// `created` (by clone3) or `pooled` (fresh, pre-created, loopback already up).
    pub net_source: Option<String>,
    pub mount: bool,
    pub mount_reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CgroupReport {
    pub requested: Minimum,
    pub effective: Effective,
    pub reason: Option<String>,
    pub path: Option<String>,
    /// The tree was created inside the leaf (`clone3(CLONE_INTO_CGROUP)`).
    pub born_in_leaf: bool,
    /// `cgroup.kill` available for the tree kill.
    pub kill: bool,
    pub memory_max: Option<u64>,
    pub pids_max: Option<u64>,
    pub memory_reason: Option<String>,
    pub pids_reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IdentityReport {
    pub requested: Minimum,
    pub effective: Effective,
    pub reason: Option<String>,
    pub hall_uid: u32,
    pub uid: u32,
    pub gid: u32,
    pub supplementary_groups: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RlimitReport {
    pub resource: String,
    /// `null` = unlimited.
    pub soft: Option<u64>,
    pub hard: Option<u64>,
    pub note: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WriteReport {
    pub declared: String,
    pub granted: String,
    /// The declared absolute path was mapped under the per-run work directory.
    pub mapped: bool,
    /// A persistent directory (`<data_dir>/<worker_id>/<entry>`), opened without following
    /// links and granted from that descriptor; `granted` is the path as the kernel resolved it.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub persistent: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dev: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ino: Option<u64>,
    /// A persistent directory's usage before the run and the quota it was checked against
    /// (checked between runs; within a run the worker's writes are bounded per file only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub used_bytes_before: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quota_bytes: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FilesystemReport {
    pub package: String,
    pub work_dir: String,
    pub tmp_dir: String,
    pub pycache_prefix: String,
    pub writes: Vec<WriteReport>,
    pub tools: Vec<String>,
    /// How much the run may write in total outside its persistent directories.
    pub scratch: ScratchReport,
}

/// The bound on a run's scratch space (its private tmp and mapped write directories).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScratchReport {
    pub effective: Effective,
    /// The size of the run directory's tmpfs, when one was mounted.
    pub bytes: Option<u64>,
    /// How it is bounded, or why it is not.
    pub how: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EnvironmentReport {
    /// Variable names only (never values).
    pub keys: Vec<String>,
    /// Declared secrets given to the worker (names only).
    pub secrets: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProcessReport {
    pub new_session: bool,
    pub parent_death_signal: String,
    /// Every inherited descriptor above 2 is closed before exec.
    pub inherited_fds_closed: bool,
    pub stdin: String,
    pub no_new_privs: bool,
    /// The init process that reaps the tree and forwards SIGTERM.
    pub init: String,
}

/// One stage applied between fork and exec (or by the Hall just before).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StageReport {
    pub stage: String,
    /// `hall`, `init` or `worker`.
    pub process: String,
    /// `ok`, `degraded` (best effort, continued) or `failed` (the run stopped here).
    pub outcome: String,
    pub errno: Option<i32>,
    pub detail: Option<String>,
}

/// The envelope as the kernel shows it for the running worker (`/proc/<pid>/status`, read by
/// the Hall after exec). `null` fields were not observable (e.g. the worker already exited).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ObservedReport {
    pub source: Option<String>,
    pub no_new_privs: Option<u32>,
    /// 0 none, 1 strict, 2 filter.
    pub seccomp: Option<u32>,
    pub seccomp_filters: Option<u32>,
    /// Real, effective, saved, filesystem.
    pub uid: Option<Vec<u32>>,
    pub gid: Option<Vec<u32>>,
    pub cap_eff: Option<String>,
    /// The pid in each namespace, outermost first (two entries: a PID namespace).
    pub ns_pid: Option<Vec<u32>>,
    pub reason: Option<String>,
}

/// How the run's memory is bounded, stated so that a per-process limit is never read as a
/// bound on the whole run.
///
/// `scope: "run"`: the cgroup's `memory.max` bounds every process of the tree together.
/// `scope: "per_process"`: only `RLIMIT_AS` applies, to each process on its own; the run as a
/// whole can use up to `per_process_bytes × processes_max` (`RLIMIT_NPROC`, or `pids.max` when
/// the cgroup enforces that), which is `run_bound_bytes`, and `null` when the number of
/// processes is not bounded either (a root worker ignores `RLIMIT_NPROC`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemoryReport {
    /// `run` or `per_process`.
    pub scope: String,
    /// `cgroup memory.max` or `RLIMIT_AS`.
    pub source: String,
    /// `run` or `per_process_only`.
    pub enforced: String,
    /// `RLIMIT_AS` of each process (address space, which bounds its resident memory).
    pub per_process_bytes: u64,
    /// The most processes the run can have: `pids.max`, else `RLIMIT_NPROC` (counted per uid,
    /// so this run has at most that many); `null` when neither binds.
    pub processes_max: Option<u64>,
    /// The bound on the whole run: `memory.max`, or `per_process_bytes × processes_max`;
    /// `null` when the run is not bounded as a whole.
    pub run_bound_bytes: Option<u64>,
    /// Why there is no per-run bound, when there is none.
    pub reason: Option<String>,
}

impl MemoryReport {
    /// Derives the memory bound from the rest of the report (the cgroup's limits, the `as` and
    /// `nproc` rlimits, the worker's uid), so it can never disagree with them. Pure.
    pub fn derive(report: &EnvelopeReport) -> MemoryReport {
        let rlimit = |name: &str| {
            report
                .rlimits
                .iter()
                .find(|r| r.resource == name)
                .and_then(|r| r.soft)
        };
        let per_process = rlimit("as").unwrap_or(0);
        let nproc = rlimit("nproc").filter(|_| report.identity.uid != 0);
        let processes_max = report.cgroup.pids_max.or(nproc);
        match report.cgroup.memory_max {
            Some(max) => MemoryReport {
                scope: "run".into(),
                source: "cgroup memory.max".into(),
                enforced: "run".into(),
                per_process_bytes: per_process,
                processes_max,
                run_bound_bytes: Some(max),
                reason: None,
            },
            None => {
                let product = processes_max
                    .and_then(|n| per_process.checked_mul(n))
                    .filter(|b| *b <= crate::crypto::canonical::MAX_SAFE_INTEGER);
                let why_not_run = report
                    .cgroup
                    .memory_reason
                    .clone()
                    .or_else(|| report.cgroup.reason.clone())
                    .unwrap_or_else(|| "no cgroup memory controller for this run".into());
                MemoryReport {
                    scope: "per_process".into(),
                    source: "RLIMIT_AS".into(),
                    enforced: "per_process_only".into(),
                    per_process_bytes: per_process,
                    processes_max,
                    run_bound_bytes: product,
                    reason: Some(format!(
                        "only per-process limits: {why_not_run}; the run as a whole is bounded \
                         only by RLIMIT_AS times the number of processes{}",
                        match product {
                            Some(_) => "",
                            None => ", which is not bounded here",
                        }
                    )),
                }
            }
        }
    }
}

/// Requested versus effective, per feature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EnvelopeReport {
    pub schema: String,
    pub run_id: String,
    pub package: PackageReport,
    pub bootstrap: BootstrapReport,
    pub minimums: Minimums,
    pub landlock: LandlockReport,
    pub network: NetworkReport,
    pub seccomp: SeccompReport,
    pub pid_namespace: FeatureReport,
    pub namespaces: NamespacesReport,
    pub cgroup: CgroupReport,
    pub identity: IdentityReport,
    pub rlimits: Vec<RlimitReport>,
    /// How memory is bounded: per run (cgroup) or per process only ([`MemoryReport`]).
    pub memory: MemoryReport,
    pub filesystem: FilesystemReport,
    pub environment: EnvironmentReport,
    pub process: ProcessReport,
    pub stages: Vec<StageReport>,
    pub observed: ObservedReport,
    /// One line per best-effort shortfall (empty when everything requested was enforced).
    pub degraded: Vec<String>,
    /// Cold or warm, and when the instance started.
    pub instance: InstanceReport,
}

impl EnvelopeReport {
    /// The report in canonical JSON bytes (what a receipt embeds).
    pub fn to_canonical(&self) -> Result<Vec<u8>, crate::crypto::canonical::CanonicalError> {
        crate::crypto::canonical::to_canonical_from(self)
    }

    /// Re-derives [`EnvelopeReport::memory`] after the cgroup or rlimits part changed.
    pub(crate) fn refresh_memory(&mut self) {
        self.memory = MemoryReport::derive(self);
    }

    /// Marks a feature as degraded at run time (a best-effort stage failed in the child).
    pub(crate) fn degrade(&mut self, line: String) {
        if !self.degraded.contains(&line) {
            self.degraded.push(line);
        }
    }
}
