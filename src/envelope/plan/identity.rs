//! Planning step: the uid, gid and groups the worker runs with.
//!
//! Owns the `unprivileged_user` minimum and the identity half of the report. A root Hall
//! switches to the configured (or requested) worker identity, never uid or gid 0; a Hall without
//! root keeps its own uid and cannot drop its supplementary groups. It must not weaken the
//! identity to make a run possible: an unmet `Required` is a refusal.

use super::super::error::{EnvelopeError, Feature};
use super::super::probe::Probe;
use super::super::report::{Effective, IdentityReport};
use super::super::types::{HostConfig, Identity, Minimum, RunRequest};
use super::{Degraded, refuse};

/// Who the worker is.
pub(super) struct WorkerIdentity {
    /// `None`: keep the Hall's uid (root only when `unprivileged_user` is off).
    pub identity: Option<Identity>,
    pub uid: u32,
    pub report: IdentityReport,
}

/// Decides the worker's identity: as root, the request's or the host's worker identity (or root
/// itself when `unprivileged_user` is off); without root, the Hall's own uid, which meets the
/// minimum only when the Hall has no supplementary groups.
pub(super) fn decide(
    req: &RunRequest,
    host: &HostConfig,
    probe: &Probe,
    degraded: &mut Degraded,
) -> Result<WorkerIdentity, EnvelopeError> {
    let m = req.minimums;
    let (identity, worker_uid, worker_gid, id_effective, id_reason) = if probe.hall_uid == 0 {
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
    let report = IdentityReport {
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
    };
    Ok(WorkerIdentity {
        identity,
        uid: worker_uid,
        report,
    })
}
