//! Planning, in the parent and without I/O: from the run request, the Hall's settings and the
//! probe of this host, decide every stage (or refuse), and write the requested-versus-effective
//! half of the report before anything is started.
//!
//! Decision rules, per minimum: `Required` and not available → [`EnvelopeError::RequirementUnmet`]
//! naming the feature and why; `BestEffort` and not (fully) available → applied as far as
//! possible, `effective` is `partial`/`not_enforced` with a reason, and a line is added to
//! `degraded`; `Off` → not applied, `effective: off`. Nothing is ever silently weaker.
//!
//! Why these choices:
//! - Landlock is pinned to ABI [`LANDLOCK_ABI_REQUESTED`](super::probe::LANDLOCK_ABI_REQUESTED)
//!   (never "whatever the kernel has"), so the same profile means the same rights on every
//!   host; `Required` means *fully* enforced at that ABI.
//! - `network_egress: "none"` is a network namespace (only loopback inside), because Landlock's
//!   network rules below ABI 10 cover TCP only and UDP (DNS exfiltration) stays open.
//! - An allowlist is enforced by *port*: Landlock lets `connect` reach only the listed TCP
//!   ports, `bind` nothing, and seccomp denies UDP and raw IP sockets. Host names are not
//!   enforced (Landlock sees ports, not addresses) and the report says so (`hosts_enforced:
//!   false`). When a host is a name, TCP port 53 is added and `RES_OPTIONS=use-vc` makes glibc
//!   resolve over TCP.
//! - Declared writes are mapped under a Hall-owned per-run work directory unless the policy
//!   allows absolute paths; the package copy is read-only; `/proc`, `/sys`, the Hall's own
//!   files and other runs are simply not granted.
//!
//! This module owns the plan's types and [`plan`], which lists the steps in the order they are
//! decided; each concern is one submodule with one step. The order is part of the behaviour:
//! a request with several unmet minimums is refused for the first one, and `degraded` lists
//! its lines in step order. No step may read a file or the clock, start anything, or decide
//! another step's concern; what one step needs from an earlier one is passed in.

use std::path::{Path, PathBuf};

use nix::libc;

use super::error::{EnvelopeError, Feature};
use super::probe::Probe;
use super::report::*;
use super::seccomp::SeccompMode;
use super::types::{HostConfig, Identity, RunRequest};

// What `tests.rs` reaches through `use super::*`, besides what this file uses itself.
#[cfg(test)]
use {
    super::probe::LANDLOCK_ABI_REQUESTED,
    super::types::{Bootstrap, Minimum},
    crate::registry::NetworkEgress,
};

mod bootstrap;
mod cgroup;
mod environment;
mod grants;
mod identity;
mod landlock;
mod namespaces;
mod network;
mod report;
mod rlimits;
mod seccomp;
mod validate;

pub use environment::{secret_env_key, trace_id_for, traceparent_for};
pub use network::parse_destination;
pub use validate::{check_correlation_id, check_traceparent};

/// Largest request payload accepted (it is held in a sealed memfd).
pub const MAX_PAYLOAD_BYTES: usize = 64 << 20;

/// Landlock rights for one path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FsAccess {
    /// Read files and list directories.
    Read,
    /// Read plus execute (interpreters, the dynamic loader, declared tools).
    ReadExecute,
    /// Everything (declared writes, the private tmp).
    ReadWrite,
    /// A device file readable and writable (`/dev/null`).
    DeviceReadWrite,
    /// A device file readable (`/dev/urandom`).
    DeviceRead,
}

impl FsAccess {
    pub fn as_str(self) -> &'static str {
        match self {
            FsAccess::Read => "read",
            FsAccess::ReadExecute => "read_execute",
            FsAccess::ReadWrite => "read_write",
            FsAccess::DeviceReadWrite => "device_read_write",
            FsAccess::DeviceRead => "device_read",
        }
    }
}

/// One Landlock path rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsRule {
    pub path: PathBuf,
    pub access: FsAccess,
    /// Granted from the descriptor of `RunRequest::opened_writes[i]`, not by path.
    pub opened: Option<usize>,
}

/// The Landlock ruleset to build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LandlockPlan {
    /// The ABI whose rights are handled (≤ the pinned ABI, ≤ the kernel's).
    pub abi: u32,
    /// A failure to restrict aborts the run.
    pub required: bool,
    pub fs_rules: Vec<FsRule>,
    /// Handle TCP bind/connect (ABI ≥ 4) with these connect ports allowed.
    pub tcp: Option<Vec<u16>>,
    /// Scope abstract Unix sockets and signals (ABI ≥ 6).
    pub scopes: bool,
}

/// Namespaces to create with `clone3`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NamespacePlan {
    pub user: bool,
    pub pid: bool,
    pub net: bool,
    pub ipc: bool,
    pub uts: bool,
    /// A mount namespace in which `Plan::hidden` are covered.
    pub mnt: bool,
}

/// One rlimit (`None` = RLIM_INFINITY).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RlimitPlan {
    pub name: &'static str,
    pub resource: libc::c_int,
    pub soft: u64,
    pub hard: u64,
}

/// A declared write and where it is granted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteGrant {
    pub declared: String,
    pub path: PathBuf,
    /// Under the run directory (created and chowned by the Hall) rather than in place.
    pub under_run_dir: bool,
    pub mapped: bool,
    /// Index into `RunRequest::opened_writes`: a directory the Hall opened and checked.
    pub opened: Option<usize>,
}

/// A declared secret and its environment variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretPlan {
    pub name: String,
    pub env_key: String,
}

/// The per-run cgroup leaf to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupPlan {
    pub parent: PathBuf,
    pub leaf_name: String,
    pub required: bool,
    pub memory_max: u64,
    pub pids_max: u64,
}

/// Values minted at the edge (randomness), so planning stays a pure function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanContext {
    /// `[a-z0-9-]`, unique per run (a UUIDv7 in practice).
    pub run_id: String,
    /// The worker span's id in the generated `traceparent` (non-zero).
    pub span_id: [u8; 8],
}

/// Everything the Hall will do for one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub run_id: String,
    pub run_dir: PathBuf,
    pub work_dir: PathBuf,
    pub tmp_dir: PathBuf,
    pub pycache_dir: PathBuf,
    pub package_dir: PathBuf,
    pub program: PathBuf,
    pub argv: Vec<String>,
    /// Without secrets (added when read).
    pub env: Vec<(String, String)>,
    pub secrets: Vec<SecretPlan>,
    pub writes: Vec<WriteGrant>,
    pub tools: Vec<PathBuf>,
    pub landlock: Option<LandlockPlan>,
    pub seccomp: Option<(SeccompMode, bool)>,
    pub namespaces: NamespacePlan,
    /// Paths covered in the worker's mount namespace (the Hall's sockets).
    pub hidden: Vec<PathBuf>,
    /// The size of the tmpfs to mount on the run directory (root Hall).
    pub scratch_bytes: Option<u64>,
    pub cgroup: Option<CgroupPlan>,
    /// `None`: keep the Hall's uid (root only when `unprivileged_user` is off).
    pub identity: Option<Identity>,
    /// The uid the worker will have (for reports and checks).
    pub worker_uid: u32,
    pub rlimits: Vec<RlimitPlan>,
    pub payload_len: usize,
    pub protocol: super::types::WorkerProtocol,
    /// The run's W3C trace context ([`environment::traceparent_for`]).
    pub traceparent: String,
}

/// The run's directories, all under `<runs_dir>/<run_id>`.
struct RunDirs {
    run: PathBuf,
    work: PathBuf,
    tmp: PathBuf,
    pycache: PathBuf,
}

impl RunDirs {
    fn new(host: &HostConfig, ctx: &PlanContext) -> RunDirs {
        let run = host.runs_dir.join(&ctx.run_id);
        RunDirs {
            work: run.join("work"),
            tmp: run.join("tmp"),
            pycache: run.join("pycache"),
            run,
        }
    }
}

/// The `degraded` lines of the report, in the order the steps add them.
struct Degraded(Vec<String>);

impl Degraded {
    fn add(&mut self, feature: &str, reason: &str) {
        self.0.push(format!("{feature}: {reason}"));
    }
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

fn refuse(feature: Feature, reason: impl Into<String>, hint: impl Into<String>) -> EnvelopeError {
    EnvelopeError::RequirementUnmet {
        feature,
        reason: reason.into(),
        hint: hint.into(),
    }
}

/// Plans one run. Pure: reads nothing, starts nothing.
///
/// The steps, in order: the request is checked, then the program to run, the worker's identity,
/// the namespaces, the network (which needs to know what Landlock and seccomp can do), Landlock's
/// availability, the filesystem grants, the Landlock ruleset over them, seccomp, the cgroup leaf,
/// the rlimits and the environment; the report is assembled from what they decided.
pub fn plan(
    req: &RunRequest,
    host: &HostConfig,
    probe: &Probe,
    ctx: &PlanContext,
) -> Result<(Plan, EnvelopeReport), EnvelopeError> {
    validate::request(req, host, ctx)?;
    let dirs = RunDirs::new(host, ctx);
    let m = req.minimums;
    let mut degraded = Degraded(Vec::new());

    let program = bootstrap::program(req, &dirs)?;
    let identity = identity::decide(req, host, probe, &mut degraded)?;
    let mut namespaces = namespaces::decide(m, host, probe, &mut degraded)?;
    let landlock_abi = landlock::abi(m, probe);
    let network = network::decide(req, probe, landlock_abi, &mut namespaces, &mut degraded)?;
    namespaces.settle_user();
    let landlock = landlock::availability(m, probe, landlock_abi, &mut degraded)?;
    let grants = grants::decide(req, host, probe, &dirs, &mut degraded)?;
    let (landlock, landlock_report) =
        landlock.ruleset(req, &program.path, &grants, &dirs, network.landlock_tcp);
    let seccomp = seccomp::decide(m, probe, network.seccomp_mode, &mut degraded)?;
    let cgroup = cgroup::decide(req, probe, ctx, &host.leaf_prefix(), &mut degraded)?;
    let rlimits = rlimits::decide(&req.limits, identity.uid);
    let environment =
        environment::decide(req, host, ctx, &dirs, &grants.writes, network.res_options)?;

    let report = report::assemble(report::Parts {
        req,
        ctx,
        dirs: &dirs,
        program: &program,
        identity: identity.report,
        namespaces: &namespaces,
        network: network.report,
        landlock: landlock_report,
        seccomp: seccomp.report,
        cgroup: cgroup.report,
        rlimits: rlimits.reports,
        grants: &grants,
        environment: environment.report,
        degraded,
    });
    let plan = Plan {
        run_id: ctx.run_id.clone(),
        run_dir: dirs.run,
        work_dir: dirs.work,
        tmp_dir: dirs.tmp,
        pycache_dir: dirs.pycache,
        package_dir: req.package_dir.clone(),
        program: program.path,
        argv: program.argv,
        env: environment.env,
        secrets: environment.secrets,
        writes: grants.writes,
        tools: grants.tools,
        landlock,
        seccomp: seccomp.plan,
        namespaces: namespaces.plan,
        hidden: namespaces.hidden,
        scratch_bytes: grants.scratch_bytes,
        cgroup: cgroup.plan,
        identity: identity.identity,
        worker_uid: identity.uid,
        rlimits: rlimits.plan,
        payload_len: req.payload.len(),
        protocol: req.protocol,
        traceparent: environment.traceparent,
    };
    Ok((plan, report))
}

#[cfg(test)]
pub(crate) mod tests;
