//! Planning step: the namespaces `clone3` creates (PID, IPC, UTS, mount; the network namespace
//! is the network step's), and which of the Hall's paths the mount namespace hides.
//!
//! Owns the `pid_namespace` minimum and the namespace half of the report. A Hall without root
//! can create a namespace only inside a new user namespace; this module must not promise one the
//! probe could not create.

use std::path::PathBuf;

use super::super::error::{EnvelopeError, Feature};
use super::super::probe::{NamespaceProbe, Probe};
use super::super::report::{Effective, FeatureReport};
use super::super::types::{HostConfig, Minimum, Minimums};
use super::{Degraded, NamespacePlan, refuse};

/// The namespaces decided so far (the network step may add `net`).
pub(super) struct Namespaces {
    pub plan: NamespacePlan,
    /// The Hall is not root: every namespace needs a user namespace around it.
    pub needs_user: bool,
    /// The `pid_namespace` minimum, as reported.
    pub pid: FeatureReport,
    /// Why there is (or is not) a mount namespace.
    pub mount_reason: String,
    /// Paths covered in the worker's mount namespace (empty without one).
    pub hidden: Vec<PathBuf>,
}

impl Namespaces {
    /// Decides the user namespace, once every other namespace is decided: there is one when
    /// the Hall is not root and any other namespace is created.
    pub(super) fn settle_user(&mut self) {
        let p = &self.plan;
        self.plan.user = self.needs_user && (p.pid || p.net || p.mnt);
    }
}

/// Whether a namespace the probe found `available` can be created for this Hall.
pub(super) fn creatable(ns: &NamespaceProbe, needs_user: bool, available: bool) -> bool {
    available && (!needs_user || ns.user)
}

/// Why the namespace `name` cannot be created, from the probe's errors.
pub(super) fn why_not(ns: &NamespaceProbe, needs_user: bool, name: &str) -> String {
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
}

/// Decides the PID namespace (with IPC and UTS alongside it) and the mount namespace that hides
/// the Hall's sockets, where the host can create them.
pub(super) fn decide(
    m: Minimums,
    host: &HostConfig,
    probe: &Probe,
    degraded: &mut Degraded,
) -> Result<Namespaces, EnvelopeError> {
    let needs_user = probe.hall_uid != 0;
    let ns = &probe.namespaces;
    let ns_ok = |avail: bool| creatable(ns, needs_user, avail);
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
                why_not(ns, needs_user, "pid"),
                "run the Hall as root, or allow unprivileged user namespaces (AppArmor/sysctl)",
            ));
        }
        Minimum::BestEffort => {
            let why = why_not(ns, needs_user, "pid");
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
    Ok(Namespaces {
        hidden: if namespaces.mnt {
            host.hidden_paths.clone()
        } else {
            Vec::new()
        },
        plan: namespaces,
        needs_user,
        pid: FeatureReport {
            requested: m.pid_namespace,
            effective: pid_effective,
            reason: pid_reason,
        },
        mount_reason,
    })
}
