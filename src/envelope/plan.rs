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
//! - Landlock is pinned to ABI [`LANDLOCK_ABI_REQUESTED`] (never "whatever the kernel has"), so
//!   the same profile means the same rights on every host; `Required` means *fully* enforced
//!   at that ABI.
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

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};

use nix::libc;
use sha2::{Digest, Sha256};

use crate::registry::NetworkEgress;

use super::error::{EnvelopeError, Feature};
use super::probe::{LANDLOCK_ABI_REQUESTED, Probe};
use super::report::*;
use super::seccomp::SeccompMode;
use super::types::{Bootstrap, HostConfig, Identity, Minimum, RunRequest};

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

fn check_text(field: &str, value: &str, max: usize) -> Result<(), EnvelopeError> {
    if value.is_empty() {
        return Err(EnvelopeError::invalid(field, "is empty"));
    }
    if value.len() > max {
        return Err(EnvelopeError::invalid(
            field,
            format!("is {} bytes long; at most {max}", value.len()),
        ));
    }
    if let Some(c) = value.chars().find(|c| c.is_control()) {
        return Err(EnvelopeError::invalid(
            field,
            format!("contains the control character U+{:04X}", u32::from(c)),
        ));
    }
    Ok(())
}

fn check_abs(field: &str, path: &Path) -> Result<(), EnvelopeError> {
    let text = path.to_str().ok_or_else(|| {
        EnvelopeError::invalid(field, format!("{} is not valid UTF-8", path.display()))
    })?;
    check_text(field, text, 4096)?;
    if !path.is_absolute() {
        return Err(EnvelopeError::invalid(
            field,
            format!("{text:?} must be an absolute path"),
        ));
    }
    if path
        .components()
        .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
    {
        return Err(EnvelopeError::invalid(
            field,
            format!("{text:?} must not contain \".\" or \"..\" components"),
        ));
    }
    Ok(())
}

/// The correlation id becomes an environment variable: printable ASCII without spaces.
pub fn check_correlation_id(id: &str) -> Result<(), EnvelopeError> {
    if id.is_empty() || id.len() > 128 || !id.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        return Err(EnvelopeError::invalid(
            "correlation_id",
            "must be 1 to 128 printable ASCII characters without spaces",
        ));
    }
    Ok(())
}

/// A W3C `traceparent` (version 00): `00-<32 hex>-<16 hex>-<2 hex>`, lowercase, ids non-zero.
pub fn check_traceparent(tp: &str) -> Result<(), EnvelopeError> {
    let parts: Vec<&str> = tp.split('-').collect();
    let hex = |p: &str, n: usize| {
        p.len() == n
            && p.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let ok = parts.len() == 4
        && parts[0] == "00"
        && hex(parts[1], 32)
        && hex(parts[2], 16)
        && hex(parts[3], 2)
        && parts[1].bytes().any(|b| b != b'0')
        && parts[2].bytes().any(|b| b != b'0');
    if ok {
        Ok(())
    } else {
        Err(EnvelopeError::invalid(
            "traceparent",
            "must be a W3C traceparent: 00-<32 lowercase hex>-<16 lowercase hex>-<2 hex>, ids not all zero",
        ))
    }
}

/// The trace id for a correlation id: a UUID's 32 hex digits, otherwise the first 16 bytes of
/// its SHA-256 (so one correlation id always maps to one trace).
pub fn trace_id_for(correlation_id: &str) -> String {
    let hex: String = correlation_id
        .chars()
        .filter(|c| *c != '-')
        .map(|c| c.to_ascii_lowercase())
        .collect();
    if hex.len() == 32
        && hex.bytes().all(|b| b.is_ascii_hexdigit())
        && hex.bytes().any(|b| b != b'0')
    {
        return hex;
    }
    crate::common::hex(&Sha256::digest(correlation_id.as_bytes())[..16])
}

/// The environment variable for a declared secret: `WCP_SECRET_` + the name upper-cased with
/// `.` and `-` as `_`. Names are `[A-Za-z0-9][A-Za-z0-9_.-]{0,63}`.
pub fn secret_env_key(name: &str) -> Result<String, EnvelopeError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if !ok {
        return Err(EnvelopeError::invalid(
            format!("privilege_envelope.secrets_access[{name:?}]"),
            "secret names are 1-64 characters of A-Z a-z 0-9 _ . - starting with a letter or digit",
        ));
    }
    Ok(format!(
        "WCP_SECRET_{}",
        name.to_ascii_uppercase().replace(['.', '-'], "_")
    ))
}

/// Parses an allowlist entry `host:port` / `[v6]:port` into (host, port).
pub fn parse_destination(dest: &str) -> Result<(String, u16), EnvelopeError> {
    let bad = || {
        EnvelopeError::invalid(
            "privilege_envelope.network_egress",
            format!("{dest:?} is not host:port with a port 1-65535"),
        )
    };
    let (host, port) = dest.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    if port == 0 || host.is_empty() {
        return Err(bad());
    }
    Ok((
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned(),
        port,
    ))
}

fn is_ip_literal(host: &str) -> bool {
    host.parse::<std::net::IpAddr>().is_ok()
}

fn rlim(v: u64) -> Option<u64> {
    (v != libc::RLIM_INFINITY).then_some(v)
}

struct Degraded(Vec<String>);

impl Degraded {
    fn add(&mut self, feature: &str, reason: &str) {
        self.0.push(format!("{feature}: {reason}"));
    }
}

/// Plans one run. Pure: reads nothing, starts nothing.
pub fn plan(
    req: &RunRequest,
    host: &HostConfig,
    probe: &Probe,
    ctx: &PlanContext,
) -> Result<(Plan, EnvelopeReport), EnvelopeError> {
    // ---- validation -------------------------------------------------------------------
    req.limits.validate()?;
    if ctx.run_id.is_empty()
        || ctx.run_id.len() > 64
        || !ctx
            .run_id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(EnvelopeError::invalid(
            "run_id",
            "must be 1-64 of a-z 0-9 -",
        ));
    }
    check_abs("package_dir", &req.package_dir)?;
    check_abs("host.runs_dir", &host.runs_dir)?;
    check_correlation_id(&req.correlation_id)?;
    if let Some(tp) = &req.traceparent {
        check_traceparent(tp)?;
    }
    if let Some(d) = &req.package_digest {
        check_text("package_digest", d, 200)?;
    }
    if req.payload.len() > MAX_PAYLOAD_BYTES {
        return Err(EnvelopeError::invalid(
            "payload",
            format!(
                "{} bytes is more than {MAX_PAYLOAD_BYTES}",
                req.payload.len()
            ),
        ));
    }
    for (i, p) in req.runtime.read.iter().enumerate() {
        check_abs(&format!("runtime.read[{i}]"), p)?;
    }
    for (i, p) in req.runtime.execute.iter().enumerate() {
        check_abs(&format!("runtime.execute[{i}]"), p)?;
    }
    if host.runs_dir.starts_with(&req.package_dir) || req.package_dir.starts_with(&host.runs_dir) {
        return Err(EnvelopeError::invalid(
            "package_dir",
            "the package and the runs directory must not contain one another",
        ));
    }

    let run_dir = host.runs_dir.join(&ctx.run_id);
    let work_dir = run_dir.join("work");
    let tmp_dir = run_dir.join("tmp");
    let pycache_dir = run_dir.join("pycache");
    let hall_root = probe.hall_uid == 0;
    let m = req.minimums;
    let mut degraded = Degraded(Vec::new());

    // ---- bootstrap ----------------------------------------------------------------------
    let (program, argv, runtime_label) = match &req.bootstrap {
        Bootstrap::Python {
            interpreter,
            runtime,
        } => {
            check_abs("bootstrap.interpreter", interpreter)?;
            let script = req.package_dir.join("code").join("bootstrap.py");
            (
                interpreter.clone(),
                vec![
                    s(interpreter),
                    "-E".into(),
                    "-s".into(),
                    "-B".into(),
                    "-X".into(),
                    format!("pycache_prefix={}", s(&pycache_dir)),
                    s(&script),
                ],
                Some(runtime.clone()),
            )
        }
        Bootstrap::Native { program, args } => {
            check_abs("bootstrap.program", program)?;
            for (i, a) in args.iter().enumerate() {
                if a.contains('\0') {
                    return Err(EnvelopeError::invalid(
                        format!("bootstrap.args[{i}]"),
                        "contains a NUL byte",
                    ));
                }
            }
            let mut argv = vec![s(program)];
            argv.extend(args.iter().cloned());
            (program.clone(), argv, None)
        }
    };

    // ---- identity -----------------------------------------------------------------------
    let (identity, worker_uid, worker_gid, id_effective, id_reason) = if hall_root {
        if m.unprivileged_user == Minimum::Off {
            (
                None,
                0,
                0,
                Effective::Off,
                Some("the worker runs as root (uid 0): unprivileged_user is off".to_owned()),
            )
        } else {
            let id = req.identity.unwrap_or(host.worker_identity);
            if id.uid == 0 || id.gid == 0 {
                return Err(EnvelopeError::invalid(
                    "identity",
                    "the worker identity must not be uid 0 or gid 0",
                ));
            }
            (Some(id), id.uid, id.gid, Effective::Enforced, None)
        }
    } else {
        if let Some(id) = req.identity
            && id.uid != probe.hall_uid
        {
            return Err(EnvelopeError::invalid(
                "identity",
                format!(
                    "cannot switch to uid {}: the Hall runs as uid {} without root",
                    id.uid, probe.hall_uid
                ),
            ));
        }
        let own = format!(
            "the worker keeps the Hall's own unprivileged uid {} (no separate uid without root)",
            probe.hall_uid
        );
        if probe.hall_groups.is_empty() {
            (
                None,
                probe.hall_uid,
                probe.hall_gid,
                Effective::Enforced,
                Some(own),
            )
        } else if m.unprivileged_user == Minimum::Off {
            (
                None,
                probe.hall_uid,
                probe.hall_gid,
                Effective::Off,
                Some(format!("{own}, with the Hall's supplementary groups")),
            )
        } else {
            // Files those groups can reach are the worker's too: the minimum is not met.
            let why = format!(
                "{own}, and inherits its supplementary groups {:?}: an unprivileged user namespace \
                 cannot drop them",
                probe.hall_groups
            );
            if m.unprivileged_user == Minimum::Required {
                return Err(refuse(
                    Feature::UnprivilegedUser,
                    why,
                    "run the Hall as a user without supplementary groups (`id` lists them; under \
                     systemd set no SupplementaryGroups=), or as root with a worker_user",
                ));
            }
            degraded.add("unprivileged_user", &why);
            (
                None,
                probe.hall_uid,
                probe.hall_gid,
                Effective::Partial,
                Some(why),
            )
        }
    };

    // ---- namespaces ---------------------------------------------------------------------
    let needs_user = !hall_root;
    let ns = &probe.namespaces;
    let ns_ok = |avail: bool| avail && (!needs_user || ns.user);
    let ns_why = |name: &str| -> String {
        if needs_user && !ns.user {
            format!(
                "the Hall is not root and cannot create a user namespace ({})",
                ns.errors.get("user").cloned().unwrap_or_default()
            )
        } else {
            format!(
                "creating a {name} namespace failed: {}",
                ns.errors.get(name).cloned().unwrap_or_default()
            )
        }
    };
    let mut namespaces = NamespacePlan::default();
    let (pid_effective, pid_reason) = match m.pid_namespace {
        Minimum::Off => (
            Effective::Off,
            Some(
                "no PID namespace: the tree is killed by process group (and cgroup if any)".into(),
            ),
        ),
        _ if ns_ok(ns.pid) => {
            namespaces.pid = true;
            (Effective::Enforced, None)
        }
        Minimum::Required => {
            return Err(refuse(
                Feature::PidNamespace,
                ns_why("pid"),
                "run the Hall as root, or allow unprivileged user namespaces (AppArmor/sysctl)",
            ));
        }
        Minimum::BestEffort => {
            let why = ns_why("pid");
            degraded.add("pid_namespace", &why);
            (Effective::NotEnforced, Some(why))
        }
    };
    if namespaces.pid {
        namespaces.ipc = ns_ok(ns.ipc);
        namespaces.uts = ns_ok(ns.uts);
    }
    // The Hall's sockets, hidden by a mount namespace where one can be made. Defence in depth:
    // the Hall also refuses every peer that descends from it (`envelope::peer`).
    let mount_reason = if host.hidden_paths.is_empty() {
        "not needed: the filesystem view is confined by Landlock (/proc and /sys are not granted)"
            .to_owned()
    } else if ns_ok(ns.mnt) {
        namespaces.mnt = true;
        format!(
            "hides the Hall's socket(s) from the worker: {}",
            host.hidden_paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )
    } else {
        let why = format!(
            "no mount namespace on this host ({}): the Hall's socket stays reachable by path; the \
             Hall still refuses its own workers as peers",
            ns.errors
                .get("mnt")
                .map(String::as_str)
                .unwrap_or("user namespaces unavailable")
        );
        degraded.add("mount_namespace", &why);
        why
    };

    // ---- Landlock availability (needed by the network decision) --------------------------
    let kernel_abi = probe.landlock.kernel_abi;
    let ll_abi = match m.landlock {
        Minimum::Off => 0,
        _ => kernel_abi.min(LANDLOCK_ABI_REQUESTED),
    };
    let seccomp_possible = m.seccomp != Minimum::Off && probe.seccomp.filter;

    // ---- network ------------------------------------------------------------------------
    let egress = req.privilege_envelope.network_egress.clone();
    let mut net_report = NetworkReport {
        requested: m.network_isolation,
        effective: Effective::Off,
        reason: None,
        egress: egress.clone(),
        mode: "host".into(),
        namespace: false,
        tcp: "host network, unrestricted".into(),
        udp: "host network, unrestricted".into(),
        hosts_enforced: false,
        dns: None,
    };
    // Landlock TCP handling: Some(ports) = handle bind+connect, allow connect to ports.
    let mut ll_tcp: Option<Vec<u16>> = None;
    let mut seccomp_mode = SeccompMode::Base;
    let mut res_options = false;
    match (&egress, m.network_isolation) {
        (_, Minimum::Off) => {
            net_report.reason =
                Some("network_isolation is off: the host network is reachable".into());
        }
        (NetworkEgress::None, minimum) => {
            if ns_ok(ns.net) {
                namespaces.net = true;
                net_report.mode = "namespace".into();
                net_report.namespace = true;
                net_report.effective = Effective::Enforced;
                net_report.tcp = "private network namespace: only its own loopback".into();
                net_report.udp = "private network namespace: only its own loopback".into();
                if ll_abi >= 4 {
                    ll_tcp = Some(Vec::new());
                    net_report
                        .tcp
                        .push_str("; Landlock also denies TCP bind and connect");
                }
            } else {
                let why = ns_why("net");
                if minimum == Minimum::Required {
                    return Err(refuse(
                        Feature::NetworkIsolation,
                        why,
                        "network_egress \"none\" needs a network namespace: run the Hall as root or allow user namespaces",
                    ));
                }
                if seccomp_possible {
                    seccomp_mode = SeccompMode::NoInet;
                    net_report.mode = "seccomp_no_inet".into();
                    net_report.effective = Effective::Partial;
                    net_report.tcp = "IPv4/IPv6 sockets denied by seccomp".into();
                    net_report.udp = "IPv4/IPv6 sockets denied by seccomp".into();
                    let r = format!(
                        "{why}; fell back to denying IPv4/IPv6 sockets with seccomp (the host's Unix sockets stay reachable)"
                    );
                    degraded.add("network_isolation", &r);
                    net_report.reason = Some(r);
                } else if ll_abi >= 4 {
                    ll_tcp = Some(Vec::new());
                    net_report.mode = "landlock_tcp_deny".into();
                    net_report.effective = Effective::Partial;
                    net_report.tcp = "TCP bind and connect denied by Landlock".into();
                    net_report.udp = "open: Landlock below ABI 10 does not see UDP".into();
                    let r = format!("{why}; only TCP is denied (Landlock), UDP stays open");
                    degraded.add("network_isolation", &r);
                    net_report.reason = Some(r);
                } else {
                    net_report.effective = Effective::NotEnforced;
                    let r = format!("{why}; neither seccomp nor Landlock TCP rules are available");
                    degraded.add("network_isolation", &r);
                    net_report.reason = Some(r);
                }
            }
        }
        (NetworkEgress::Allowlist(list), minimum) => {
            let mut ports = BTreeSet::new();
            let mut names = false;
            for dest in list {
                let (h, p) = parse_destination(dest)?;
                ports.insert(p);
                names |= !is_ip_literal(&h);
            }
            if names {
                ports.insert(53);
                res_options = true;
                net_report.dns = Some(
                    "TCP port 53 allowed and RES_OPTIONS=use-vc set: names resolve over TCP (UDP is denied)"
                        .into(),
                );
            }
            let ports: Vec<u16> = ports.into_iter().collect();
            let ll_ok = ll_abi >= 4;
            let mut missing = Vec::new();
            if !ll_ok {
                missing.push(if m.landlock == Minimum::Off {
                    "Landlock is off in the profile, so TCP ports cannot be limited".to_owned()
                } else {
                    format!("Landlock ABI {kernel_abi} < 4 cannot limit TCP ports")
                });
            }
            if !seccomp_possible {
                missing.push(if m.seccomp == Minimum::Off {
                    "seccomp is off in the profile, so UDP cannot be denied".to_owned()
                } else {
                    "seccomp filters are unavailable, so UDP cannot be denied".to_owned()
                });
            }
            if !missing.is_empty() && minimum == Minimum::Required {
                return Err(refuse(
                    Feature::NetworkIsolation,
                    missing.join("; "),
                    "an egress allowlist needs Landlock ABI 4+ and seccomp enabled in the profile",
                ));
            }
            net_report.mode = "landlock_tcp_ports".into();
            net_report.hosts_enforced = false;
            if ll_ok {
                net_report.tcp = format!(
                    "connect only to TCP ports {ports:?} (any host); bind denied (Landlock)"
                );
                ll_tcp = Some(ports);
            }
            if seccomp_possible {
                seccomp_mode = SeccompMode::NoUdp;
                net_report.udp = "UDP and raw IPv4/IPv6 sockets denied (seccomp)".into();
            }
            if missing.is_empty() {
                net_report.effective = Effective::Enforced;
                net_report.reason = Some(
                    "ports are enforced, host names are not (Landlock sees ports only)".into(),
                );
            } else {
                net_report.effective = if ll_ok || seccomp_possible {
                    Effective::Partial
                } else {
                    Effective::NotEnforced
                };
                let r = missing.join("; ");
                degraded.add("network_isolation", &r);
                net_report.reason = Some(r);
            }
        }
    }

    // ---- Landlock -----------------------------------------------------------------------
    let mut ll_report = LandlockReport {
        requested: m.landlock,
        effective: Effective::Off,
        reason: None,
        abi_requested: LANDLOCK_ABI_REQUESTED,
        abi_kernel: kernel_abi,
        abi_effective: 0,
        ruleset: "not_enforced".into(),
        fs_rules: Vec::new(),
        tcp_connect_ports: None,
        tcp_bind: "not_handled".into(),
        scopes: Vec::new(),
    };
    let landlock_enabled = match m.landlock {
        Minimum::Off => {
            ll_report.reason =
                Some("landlock is off: the worker sees the whole filesystem its uid can".into());
            false
        }
        Minimum::Required if kernel_abi < LANDLOCK_ABI_REQUESTED => {
            return Err(refuse(
                Feature::Landlock,
                if kernel_abi == 0 {
                    format!("Landlock is {} on this kernel", probe.landlock.status)
                } else {
                    format!(
                        "the kernel offers Landlock ABI {kernel_abi}, the profile requires ABI {LANDLOCK_ABI_REQUESTED} fully enforced"
                    )
                },
                "use a kernel with Landlock ABI 6 (Linux 6.12+) booted with lsm=…,landlock, or set landlock = \"best_effort\"",
            ));
        }
        Minimum::BestEffort if kernel_abi == 0 => {
            let r = format!("Landlock is {} on this kernel", probe.landlock.status);
            degraded.add("landlock", &r);
            ll_report.effective = Effective::NotEnforced;
            ll_report.reason = Some(r);
            false
        }
        _ => {
            ll_report.abi_effective = ll_abi;
            if ll_abi < LANDLOCK_ABI_REQUESTED {
                let r = format!(
                    "kernel ABI {kernel_abi} < {LANDLOCK_ABI_REQUESTED}: rights of later ABIs (truncate 3, TCP 4, ioctl on devices 5, scopes 6) are not handled"
                );
                degraded.add("landlock", &r);
                ll_report.effective = Effective::Partial;
                ll_report.ruleset = "partially_enforced".into();
                ll_report.reason = Some(r);
            } else {
                ll_report.effective = Effective::Enforced;
                ll_report.ruleset = "fully_enforced".into();
            }
            true
        }
    };

    // ---- filesystem grants --------------------------------------------------------------
    let mut writes: Vec<WriteGrant> = Vec::new();
    for (i, declared) in req.privilege_envelope.filesystem_writes.iter().enumerate() {
        let field = format!("privilege_envelope.filesystem_writes[{i}]");
        check_text(&field, declared, 4096)?;
        let path = Path::new(declared);
        if path.components().any(|c| matches!(c, Component::ParentDir)) {
            return Err(EnvelopeError::invalid(
                field,
                format!("{declared:?} contains \"..\""),
            ));
        }
        let rel: PathBuf = path
            .components()
            .filter(|c| matches!(c, Component::Normal(_)))
            .collect();
        let opened = req
            .opened_writes
            .iter()
            .position(|o| o.declared == *declared);
        let grant = if let Some(i) = opened {
            WriteGrant {
                declared: declared.clone(),
                path: req.opened_writes[i].dir.path.clone(),
                under_run_dir: false,
                mapped: false,
                opened: Some(i),
            }
        } else if path.is_absolute() && req.allow_absolute_writes {
            if rel.as_os_str().is_empty()
                || req.package_dir.starts_with(path)
                || path.starts_with(&req.package_dir)
                || host.runs_dir.starts_with(path)
            {
                return Err(EnvelopeError::invalid(
                    field,
                    format!(
                        "{declared:?} would make the root, the package or the runs directory writable"
                    ),
                ));
            }
            WriteGrant {
                declared: declared.clone(),
                path: PathBuf::from("/").join(&rel),
                under_run_dir: false,
                mapped: false,
                opened: None,
            }
        } else {
            if rel.as_os_str().is_empty() {
                return Err(EnvelopeError::invalid(
                    field,
                    format!("{declared:?} names no directory"),
                ));
            }
            WriteGrant {
                declared: declared.clone(),
                path: work_dir.join(&rel),
                under_run_dir: true,
                mapped: path.is_absolute(),
                opened: None,
            }
        };
        if !writes.iter().any(|w| w.path == grant.path) {
            writes.push(grant);
        }
    }
    // ---- scratch: a size-limited tmpfs on the run directory, where the Hall can mount ------
    let scratch_bytes = host.scratch_bytes.filter(|_| hall_root);
    let scratch_report = match (host.scratch_bytes, hall_root) {
        (Some(b), true) => ScratchReport {
            effective: Effective::Enforced,
            bytes: Some(b),
            how: format!("a tmpfs of {b} bytes on the run directory (tmp and mapped writes)"),
        },
        (Some(_), false) => {
            let why = "the Hall is not root, so it cannot mount a size-limited tmpfs on the run \
                       directory: scratch is bounded per file only (RLIMIT_FSIZE); put runs_dir \
                       on a size-limited filesystem"
                .to_owned();
            degraded.add("scratch", &why);
            ScratchReport {
                effective: Effective::NotEnforced,
                bytes: None,
                how: why,
            }
        }
        (None, _) => ScratchReport {
            effective: Effective::Off,
            bytes: None,
            how: "off ([envelope] scratch_bytes = 0): scratch is bounded per file only \
                  (RLIMIT_FSIZE)"
                .into(),
        },
    };
    let mut tools = Vec::new();
    for (i, tool) in req.privilege_envelope.tools.iter().enumerate() {
        let field = format!("privilege_envelope.tools[{i}]");
        check_text(&field, tool, 4096)?;
        let path = if tool.starts_with('/') {
            PathBuf::from(tool)
        } else if tool.contains('/') {
            return Err(EnvelopeError::invalid(
                field,
                format!(
                    "{tool:?}: a tool is a bare program name (found in /usr/bin) or an absolute path"
                ),
            ));
        } else {
            Path::new("/usr/bin").join(tool)
        };
        check_abs(&field, &path)?;
        tools.push(path);
    }

    let mut fs_rules = Vec::new();
    let mut rule = |path: &Path, access: FsAccess, opened: Option<usize>| {
        if !fs_rules
            .iter()
            .any(|r: &FsRule| r.path == path && r.access == access && r.opened == opened)
        {
            fs_rules.push(FsRule {
                path: path.to_path_buf(),
                access,
                opened,
            });
        }
    };
    rule(&req.package_dir, FsAccess::Read, None);
    rule(&program, FsAccess::ReadExecute, None);
    for p in &req.runtime.execute {
        rule(p, FsAccess::ReadExecute, None);
    }
    for p in &req.runtime.read {
        rule(p, FsAccess::Read, None);
    }
    for t in &tools {
        rule(t, FsAccess::ReadExecute, None);
    }
    for w in &writes {
        rule(&w.path, FsAccess::ReadWrite, w.opened);
    }
    rule(&tmp_dir, FsAccess::ReadWrite, None);
    rule(Path::new("/dev/null"), FsAccess::DeviceReadWrite, None);
    rule(Path::new("/dev/urandom"), FsAccess::DeviceRead, None);
    if landlock_enabled {
        ll_report.fs_rules = fs_rules
            .iter()
            .map(|r| {
                let opened = r.opened.map(|i| &req.opened_writes[i].dir);
                FsRuleReport {
                    path: s(&r.path),
                    access: r.access.as_str().into(),
                    dev: opened.map(|o| o.dev),
                    ino: opened.map(|o| o.ino),
                }
            })
            .collect();
        if ll_abi >= 4 {
            if let Some(ports) = &ll_tcp {
                ll_report.tcp_connect_ports = Some(ports.clone());
                ll_report.tcp_bind = "denied".into();
            }
        } else {
            ll_tcp = None;
        }
        if ll_abi >= 6 {
            ll_report.scopes = vec!["abstract_unix_socket".into(), "signal".into()];
        }
    } else {
        ll_tcp = None;
    }
    let landlock = landlock_enabled.then(|| LandlockPlan {
        abi: ll_abi,
        required: m.landlock == Minimum::Required,
        fs_rules: fs_rules.clone(),
        tcp: ll_tcp.clone(),
        scopes: ll_abi >= 6,
    });

    // ---- seccomp ------------------------------------------------------------------------
    let mut sc_report = SeccompReport {
        requested: m.seccomp,
        effective: Effective::Off,
        reason: None,
        mode: None,
        digest: None,
        default_action: "allow".into(),
        denied_with: "EPERM".into(),
        denied: Vec::new(),
        conditional: Vec::new(),
        enosys: Vec::new(),
    };
    let seccomp = match m.seccomp {
        Minimum::Off => {
            sc_report.reason = Some("seccomp is off in the profile".into());
            None
        }
        minimum if !probe.seccomp.filter => {
            let why = probe
                .seccomp
                .reason
                .clone()
                .unwrap_or_else(|| "seccomp filters are unavailable".into());
            if minimum == Minimum::Required {
                return Err(refuse(
                    Feature::Seccomp,
                    why,
                    "use a kernel built with CONFIG_SECCOMP_FILTER, or set seccomp = \"best_effort\"",
                ));
            }
            degraded.add("seccomp", &why);
            sc_report.effective = Effective::NotEnforced;
            sc_report.reason = Some(why);
            None
        }
        minimum => {
            let compiled = super::seccomp::compiled(seccomp_mode).map_err(|e| {
                EnvelopeError::io("compiling the seccomp filter", std::io::Error::other(e))
            })?;
            sc_report.effective = Effective::Enforced;
            sc_report.mode = Some(seccomp_mode);
            sc_report.digest = Some(compiled.digest.clone());
            sc_report.denied = compiled.denied.iter().map(|s| (*s).to_owned()).collect();
            sc_report.conditional = compiled.conditional.clone();
            sc_report.enosys = compiled.enosys.iter().map(|s| (*s).to_owned()).collect();
            Some((seccomp_mode, minimum == Minimum::Required))
        }
    };

    // ---- cgroup -------------------------------------------------------------------------
    let cg = &probe.cgroup;
    let mut cg_report = CgroupReport {
        requested: m.cgroup,
        effective: Effective::Off,
        reason: None,
        path: None,
        born_in_leaf: false,
        kill: false,
        memory_max: None,
        pids_max: None,
        memory_reason: None,
        pids_reason: None,
    };
    let leaf_name = format!("wcp-{}", ctx.run_id);
    let cgroup = match (m.cgroup, &cg.parent) {
        (Minimum::Off, _) => {
            cg_report.reason = Some("cgroup is off in the profile".into());
            None
        }
        (minimum, Some(parent)) if cg.leaf_ok && cg.clone_into_cgroup => {
            let full = cg.kill && cg.memory && cg.pids;
            let mut why = cg.reason.clone().unwrap_or_default();
            if !cg.memory {
                // A required cgroup is the profile asking for a per-run memory bound: say
                // plainly that RLIMIT_AS (per process) would be all there is.
                why = format!(
                    "no per-run memory bound: memory.max cannot be set in a leaf here, so only \
                     the per-process RLIMIT_AS applies{}",
                    if why.is_empty() {
                        String::new()
                    } else {
                        format!(" ({why})")
                    }
                );
            }
            if !full && minimum == Minimum::Required {
                return Err(refuse(
                    Feature::Cgroup,
                    why,
                    "delegate a cgroup v2 subtree with memory and pids enabled in cgroup.subtree_control (systemd Delegate=yes) and set cgroup_parent",
                ));
            }
            let parent = PathBuf::from(parent);
            cg_report.path = Some(s(&parent.join(&leaf_name)));
            cg_report.born_in_leaf = true;
            cg_report.kill = cg.kill;
            if full {
                cg_report.effective = Effective::Enforced;
                cg_report.memory_max = Some(req.limits.memory_bytes);
                cg_report.pids_max = Some(req.limits.max_processes);
            } else {
                cg_report.effective = Effective::Partial;
                cg_report.reason = Some(why.clone());
                if cg.memory {
                    cg_report.memory_max = Some(req.limits.memory_bytes);
                }
                if cg.pids {
                    cg_report.pids_max = Some(req.limits.max_processes);
                }
                degraded.add("cgroup", &why);
            }
            Some(CgroupPlan {
                parent,
                leaf_name,
                required: minimum == Minimum::Required,
                memory_max: req.limits.memory_bytes,
                pids_max: req.limits.max_processes,
            })
        }
        (minimum, _) => {
            let why = cg
                .reason
                .clone()
                .unwrap_or_else(|| "no usable cgroup v2 parent directory".into());
            if minimum == Minimum::Required {
                return Err(refuse(
                    Feature::Cgroup,
                    why,
                    "delegate a cgroup v2 subtree to the Hall (systemd Delegate=yes) and set cgroup_parent",
                ));
            }
            degraded.add("cgroup", &why);
            cg_report.effective = Effective::NotEnforced;
            cg_report.reason = Some(why);
            None
        }
    };

    // ---- rlimits ------------------------------------------------------------------------
    let l = &req.limits;
    let rlimits = vec![
        RlimitPlan {
            name: "cpu",
            resource: libc::RLIMIT_CPU as libc::c_int,
            soft: l.cpu_seconds,
            hard: l.cpu_seconds.saturating_add(1),
        },
        RlimitPlan {
            name: "as",
            resource: libc::RLIMIT_AS as libc::c_int,
            soft: l.memory_bytes,
            hard: l.memory_bytes,
        },
        RlimitPlan {
            name: "nproc",
            resource: libc::RLIMIT_NPROC as libc::c_int,
            soft: l.max_processes,
            hard: l.max_processes,
        },
        RlimitPlan {
            name: "nofile",
            resource: libc::RLIMIT_NOFILE as libc::c_int,
            soft: l.max_open_files,
            hard: l.max_open_files,
        },
        RlimitPlan {
            name: "fsize",
            resource: libc::RLIMIT_FSIZE as libc::c_int,
            soft: l.max_file_size_bytes,
            hard: l.max_file_size_bytes,
        },
        RlimitPlan {
            name: "core",
            resource: libc::RLIMIT_CORE as libc::c_int,
            soft: 0,
            hard: 0,
        },
    ];
    let rlimit_reports = rlimits
        .iter()
        .map(|r| RlimitReport {
            resource: r.name.into(),
            soft: rlim(r.soft),
            hard: rlim(r.hard),
            note: match r.name {
                "nproc" if worker_uid == 0 => {
                    Some("not enforced: the worker is root (CAP_SYS_RESOURCE)".into())
                }
                "nproc" => Some(format!(
                    "counted per uid: every process of uid {worker_uid} on the host counts"
                )),
                "cpu" => Some("per process: SIGXCPU at soft, SIGKILL at hard".into()),
                "as" => Some("per process address space".into()),
                _ => None,
            },
        })
        .collect();

    // ---- environment --------------------------------------------------------------------
    let trace_id = req
        .traceparent
        .as_ref()
        .map(|tp| tp[3..35].to_owned())
        .unwrap_or_else(|| trace_id_for(&req.correlation_id));
    let mut span = ctx.span_id;
    if span == [0; 8] {
        span[7] = 1;
    }
    let traceparent = format!("00-{trace_id}-{}-01", crate::common::hex(&span));
    let write_dirs: Vec<String> = writes.iter().map(|w| s(&w.path)).collect();
    let mut env: Vec<(String, String)> = vec![
        ("PATH".into(), "/usr/bin:/bin".into()),
        ("LANG".into(), "C.UTF-8".into()),
        ("LC_ALL".into(), "C.UTF-8".into()),
        ("HOME".into(), s(&work_dir)),
        ("TMPDIR".into(), s(&tmp_dir)),
        ("PYTHONDONTWRITEBYTECODE".into(), "1".into()),
        ("PYTHONPYCACHEPREFIX".into(), s(&pycache_dir)),
        ("PYTHONIOENCODING".into(), "utf-8".into()),
        ("WCP_CORRELATION_ID".into(), req.correlation_id.clone()),
        ("TRACEPARENT".into(), traceparent),
        ("WCP_WORK_DIR".into(), s(&work_dir)),
        ("WCP_WRITE_DIRS".into(), write_dirs.join(":")),
    ];
    if res_options {
        env.push(("RES_OPTIONS".into(), "use-vc".into()));
    }
    let mut secrets = Vec::new();
    let mut secret_keys: BTreeMap<String, String> = BTreeMap::new();
    for name in &req.privilege_envelope.secrets_access {
        let key = secret_env_key(name)?;
        if let Some(other) = secret_keys.insert(key.clone(), name.clone())
            && other != *name
        {
            return Err(EnvelopeError::invalid(
                "privilege_envelope.secrets_access",
                format!("secrets {other:?} and {name:?} would both become {key}"),
            ));
        }
        if !secrets.iter().any(|s: &SecretPlan| s.name == *name) {
            secrets.push(SecretPlan {
                name: name.clone(),
                env_key: key,
            });
        }
    }
    if !secrets.is_empty() && host.secrets_dir.is_none() {
        return Err(EnvelopeError::Secret {
            name: secrets[0].name.clone(),
            problem: "the worker declares secrets but the Hall has no secrets directory configured"
                .into(),
        });
    }
    let mut env_keys: Vec<String> = env.iter().map(|(k, _)| k.clone()).collect();
    env_keys.extend(secrets.iter().map(|s| s.env_key.clone()));
    env_keys.sort();

    // ---- report -------------------------------------------------------------------------
    let mut report = EnvelopeReport {
        schema: REPORT_SCHEMA.into(),
        run_id: ctx.run_id.clone(),
        package: PackageReport {
            dir: s(&req.package_dir),
            digest: req.package_digest.clone(),
        },
        bootstrap: BootstrapReport {
            program: s(&program),
            argv: argv.clone(),
            cwd: s(&work_dir),
            runtime: runtime_label,
        },
        minimums: m,
        landlock: ll_report,
        network: net_report,
        seccomp: sc_report,
        pid_namespace: FeatureReport {
            requested: m.pid_namespace,
            effective: pid_effective,
            reason: pid_reason,
        },
        namespaces: NamespacesReport {
            user: needs_user && (namespaces.pid || namespaces.net || namespaces.mnt),
            pid: namespaces.pid,
            net: namespaces.net,
            ipc: namespaces.ipc,
            uts: namespaces.uts,
            net_source: None,
            mount: namespaces.mnt,
            mount_reason,
        },
        cgroup: cg_report,
        identity: IdentityReport {
            requested: m.unprivileged_user,
            effective: id_effective,
            reason: id_reason,
            hall_uid: probe.hall_uid,
            uid: worker_uid,
            gid: worker_gid,
            supplementary_groups: if identity.is_some() {
                "cleared".into()
            } else if probe.hall_groups.is_empty() {
                "none".into()
            } else {
                format!(
                    "inherited: {}",
                    probe
                        .hall_groups
                        .iter()
                        .map(u32::to_string)
                        .collect::<Vec<_>>()
                        .join(",")
                )
            },
        },
        rlimits: rlimit_reports,
        memory: MemoryReport {
            scope: String::new(),
            source: String::new(),
            enforced: String::new(),
            per_process_bytes: 0,
            processes_max: None,
            run_bound_bytes: None,
            reason: None,
        },
        filesystem: FilesystemReport {
            package: s(&req.package_dir),
            work_dir: s(&work_dir),
            tmp_dir: s(&tmp_dir),
            pycache_prefix: s(&pycache_dir),
            writes: writes
                .iter()
                .map(|w| {
                    let opened = w.opened.map(|i| &req.opened_writes[i]);
                    WriteReport {
                        declared: w.declared.clone(),
                        granted: s(&w.path),
                        mapped: w.mapped,
                        persistent: opened.is_some(),
                        dev: opened.map(|o| o.dir.dev),
                        ino: opened.map(|o| o.dir.ino),
                        used_bytes_before: opened.and_then(|o| o.used_bytes),
                        quota_bytes: opened.and(req.data_quota_bytes),
                    }
                })
                .collect(),
            tools: tools.iter().map(|t| s(t)).collect(),
            scratch: scratch_report.clone(),
        },
        environment: EnvironmentReport {
            keys: env_keys,
            secrets: secrets.iter().map(|s| s.name.clone()).collect(),
        },
        process: ProcessReport {
            new_session: true,
            parent_death_signal: "SIGKILL".into(),
            inherited_fds_closed: true,
            stdin: "sealed memfd holding the request".into(),
            no_new_privs: true,
            init: if namespaces.pid {
                "the Hall's reaper is PID 1 of the namespace: when it exits every process in it is killed"
                    .into()
            } else {
                "the Hall's reaper is a child subreaper; the tree is killed by process group and cgroup"
                    .into()
            },
        },
        stages: Vec::new(),
        observed: ObservedReport::default(),
        degraded: degraded.0,
    };
    report.refresh_memory();
    namespaces.user = needs_user && (namespaces.pid || namespaces.net || namespaces.mnt);

    let plan = Plan {
        run_id: ctx.run_id.clone(),
        run_dir,
        work_dir,
        tmp_dir,
        pycache_dir,
        package_dir: req.package_dir.clone(),
        program,
        argv,
        env,
        secrets,
        writes,
        tools,
        landlock,
        seccomp,
        namespaces,
        hidden: if namespaces.mnt {
            host.hidden_paths.clone()
        } else {
            Vec::new()
        },
        scratch_bytes,
        cgroup,
        identity,
        worker_uid,
        rlimits,
        payload_len: req.payload.len(),
    };
    Ok((plan, report))
}

#[cfg(test)]
#[path = "plan_tests.rs"]
pub(crate) mod tests;
