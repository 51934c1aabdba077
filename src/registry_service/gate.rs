//! The dispatch gate of the registry service: what the cached status of the selected worker
//! and the cached ban list say about the verified package. Pure: the cache's observation, the
//! package digest, the policy and the time are passed in; nothing here waits on anything.
//!
//! The order (first match decides):
//! 1. the package digest is on the ban list → `DENY_WORKER_BANNED` (a known ban denies even
//!    when the list is stale: staleness never makes a ban go away);
//! 2. the worker is banned (`status` or the `banned` flag) → `DENY_WORKER_BANNED`;
//! 3. the worker is revoked → `DENY_WORKER_REVOKED`;
//! 4. the status or the ban list is missing or older than `max_staleness` → per environment,
//!    `DENY_REGISTRY_STATUS_STALE` (fail closed) or a warning and the rest of the checks on
//!    what is known;
//! 5. the worker is `unknown` to the registry, or active without a `current_hash` →
//!    `DENY_WORKER_ATTESTATION_MISSING` (PyHall: `registry_get_worker_hash` is `None`);
//! 6. `current_hash` differs from the verified package's digest → `DENY_WORKER_TAMPERED`.

use serde::{Deserialize, Serialize};

use super::config::OnStale;
use super::model::{BanEntry, VerifyResponse, WorkerStatus};
use crate::wcp::DenyCode;

/// What the cache knows for one dispatch.
#[derive(Debug, Clone, Copy)]
pub struct Observation<'a> {
    /// The worker's last status and when it was fetched (ms since the epoch).
    pub worker: Option<(&'a VerifyResponse, u64)>,
    /// The ban-list entry for the package digest, if any.
    pub ban: Option<&'a BanEntry>,
    /// When the ban list was last fetched (ms since the epoch), if ever.
    pub ban_list_at: Option<u64>,
}

/// The rule for one dispatch's environment.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub max_staleness_ms: u64,
    pub on_stale: OnStale,
}

/// What the receipt records of the registry service for one dispatch
/// (`registry_service` in the dispatch receipt).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryEvidence {
    /// When the ban list was last fetched (RFC 3339, UTC). Fields are in byte order of their
    /// names: receipts are encoded canonically.
    pub ban_list_fetched_at: Option<String>,
    /// The worker's status used: `active`, `revoked`, `banned`, `unknown`, or `unavailable`
    /// (never fetched).
    pub status: String,
    /// When that status was fetched.
    pub status_fetched_at: Option<String>,
    /// Why the dispatch proceeded on stale data (environments whose `on_stale` is `warn`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

impl RegistryEvidence {
    /// Nothing could be checked: no status was ever fetched for this dispatch.
    pub fn unavailable() -> Self {
        RegistryEvidence {
            ban_list_fetched_at: None,
            status: "unavailable".into(),
            status_fetched_at: None,
            warning: None,
        }
    }
}

/// The gate's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Pass(RegistryEvidence),
    Deny {
        code: DenyCode,
        message: String,
        evidence: RegistryEvidence,
    },
}

impl Verdict {
    pub fn evidence(&self) -> &RegistryEvidence {
        match self {
            Verdict::Pass(e) | Verdict::Deny { evidence: e, .. } => e,
        }
    }
}

/// Decides one dispatch of `worker_id` whose verified package has digest `package_hash`.
pub fn check(
    worker_id: &str,
    package_hash: &str,
    seen: Observation<'_>,
    policy: Policy,
    now_ms: u64,
) -> Verdict {
    let mut evidence = RegistryEvidence {
        status: seen
            .worker
            .map_or("unavailable", |(r, _)| r.status.as_str())
            .to_owned(),
        status_fetched_at: seen.worker.map(|(_, at)| crate::common::rfc3339_ms(at)),
        ban_list_fetched_at: seen.ban_list_at.map(crate::common::rfc3339_ms),
        warning: None,
    };
    let deny = |code, message: String, evidence| Verdict::Deny {
        code,
        message,
        evidence,
    };
    if let Some(ban) = seen.ban {
        let reason = ban.reason.as_deref().unwrap_or("no reason given");
        return deny(
            DenyCode::DenyWorkerBanned,
            format!(
                "Worker '{worker_id}' package {package_hash} is on the registry service's ban list: {reason}"
            ),
            evidence,
        );
    }
    if let Some((r, _)) = seen.worker {
        if r.is_banned() {
            let reason = r.ban_reason.as_deref().unwrap_or("no reason given");
            return deny(
                DenyCode::DenyWorkerBanned,
                format!("Worker '{worker_id}' is banned at the registry service: {reason}"),
                evidence,
            );
        }
        if r.status == WorkerStatus::Revoked {
            return deny(
                DenyCode::DenyWorkerRevoked,
                format!(
                    "Worker '{worker_id}' is revoked at the registry service; re-attest it before dispatching"
                ),
                evidence,
            );
        }
    }
    let age = |at: Option<u64>| at.map(|at| now_ms.saturating_sub(at));
    let stale = |a: Option<u64>| a.is_none_or(|a| a > policy.max_staleness_ms);
    let (status_age, bans_age) = (age(seen.worker.map(|(_, at)| at)), age(seen.ban_list_at));
    if stale(status_age) || stale(bans_age) {
        let describe = |what: &str, a: Option<u64>| match a {
            None => format!("{what} was never fetched"),
            Some(a) => format!("{what} is {} s old", a / 1000),
        };
        let why = format!(
            "{}, {} (max_staleness_seconds = {})",
            describe("the worker's registry status", status_age),
            describe("the ban list", bans_age),
            policy.max_staleness_ms / 1000
        );
        match policy.on_stale {
            OnStale::Deny => {
                return deny(
                    DenyCode::DenyRegistryStatusStale,
                    format!(
                        "Worker '{worker_id}' cannot be checked against the registry service: {why}. Failing closed."
                    ),
                    evidence,
                );
            }
            OnStale::Warn => {
                evidence.warning = Some(format!("registry service data is stale: {why}"))
            }
        }
    }
    let Some((r, _)) = seen.worker else {
        // Warned above: nothing is known, and this environment proceeds.
        return Verdict::Pass(evidence);
    };
    let current = match (r.status, &r.current_hash) {
        (WorkerStatus::Active, Some(h)) => h,
        _ => {
            return deny(
                DenyCode::DenyWorkerAttestationMissing,
                format!(
                    "Worker '{worker_id}' has no attested hash at the registry service (status {}). Attest it there (wcp-hall registry attest) before dispatching.",
                    r.status.as_str()
                ),
                evidence,
            );
        }
    };
    if !current.eq_ignore_ascii_case(package_hash) {
        return deny(
            DenyCode::DenyWorkerTampered,
            format!(
                "Worker '{worker_id}' package digest differs from the registry service's current_hash. Worker may have been modified after attestation. Re-attest the worker or investigate for tampering."
            ),
            evidence,
        );
    }
    Verdict::Pass(evidence)
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: &str = "1111111111111111111111111111111111111111111111111111111111111111";
    const OTHER: &str = "2222222222222222222222222222222222222222222222222222222222222222";
    const NOW: u64 = 1_800_000_000_000;
    const DENY: Policy = Policy {
        max_staleness_ms: 300_000,
        on_stale: OnStale::Deny,
    };
    const WARN: Policy = Policy {
        max_staleness_ms: 300_000,
        on_stale: OnStale::Warn,
    };

    fn worker(status: WorkerStatus, hash: Option<&str>) -> VerifyResponse {
        let mut r = VerifyResponse::unknown("org.x.w.1");
        r.status = status;
        r.current_hash = hash.map(str::to_owned);
        r
    }

    fn ban() -> BanEntry {
        BanEntry {
            sha256: H.into(),
            reason: Some("malware".into()),
            reported_at: None,
            source: None,
            review_status: None,
        }
    }

    fn code(v: &Verdict) -> Option<DenyCode> {
        match v {
            Verdict::Pass(_) => None,
            Verdict::Deny { code, .. } => Some(*code),
        }
    }

    fn fresh(r: &VerifyResponse) -> Observation<'_> {
        Observation {
            worker: Some((r, NOW - 1_000)),
            ban: None,
            ban_list_at: Some(NOW - 1_000),
        }
    }

    #[test]
    fn an_active_worker_with_the_verified_digest_passes_and_the_status_is_recorded() {
        let r = worker(WorkerStatus::Active, Some(H));
        let v = check("org.x.w.1", H, fresh(&r), DENY, NOW);
        assert_eq!(code(&v), None);
        assert_eq!(v.evidence().status, "active");
        assert!(v.evidence().status_fetched_at.is_some());
        assert_eq!(v.evidence().warning, None);
    }

    #[test]
    fn each_registry_refusal_has_its_code() {
        let active_other = worker(WorkerStatus::Active, Some(OTHER));
        let cases = [
            (
                worker(WorkerStatus::Banned, Some(H)),
                DenyCode::DenyWorkerBanned,
            ),
            (
                worker(WorkerStatus::Revoked, Some(H)),
                DenyCode::DenyWorkerRevoked,
            ),
            (
                worker(WorkerStatus::Unknown, None),
                DenyCode::DenyWorkerAttestationMissing,
            ),
            (
                worker(WorkerStatus::Active, None),
                DenyCode::DenyWorkerAttestationMissing,
            ),
            (active_other, DenyCode::DenyWorkerTampered),
        ];
        for (r, want) in cases {
            assert_eq!(
                code(&check("org.x.w.1", H, fresh(&r), DENY, NOW)),
                Some(want),
                "{r:?}"
            );
        }
        let mut flagged = worker(WorkerStatus::Active, Some(H));
        flagged.banned = true;
        assert_eq!(
            code(&check("org.x.w.1", H, fresh(&flagged), DENY, NOW)),
            Some(DenyCode::DenyWorkerBanned)
        );
    }

    #[test]
    fn a_banned_hash_is_denied_even_when_everything_is_stale_and_the_env_only_warns() {
        let r = worker(WorkerStatus::Active, Some(H));
        let b = ban();
        let seen = Observation {
            worker: Some((&r, 0)),
            ban: Some(&b),
            ban_list_at: Some(0),
        };
        let v = check("org.x.w.1", H, seen, WARN, NOW);
        assert_eq!(code(&v), Some(DenyCode::DenyWorkerBanned));
        let Verdict::Deny { message, .. } = v else {
            unreachable!()
        };
        assert!(message.contains("malware"), "{message}");
    }

    #[test]
    fn stale_or_missing_data_denies_where_configured_and_warns_elsewhere() {
        let r = worker(WorkerStatus::Active, Some(H));
        let old = Observation {
            worker: Some((&r, NOW - 301_000)),
            ban: None,
            ban_list_at: Some(NOW - 1_000),
        };
        let never = Observation {
            worker: None,
            ban: None,
            ban_list_at: None,
        };
        for seen in [old, never] {
            assert_eq!(
                code(&check("org.x.w.1", H, seen, DENY, NOW)),
                Some(DenyCode::DenyRegistryStatusStale)
            );
            let v = check("org.x.w.1", H, seen, WARN, NOW);
            assert_eq!(code(&v), None);
            assert!(v.evidence().warning.as_deref().unwrap().contains("stale"));
        }
        assert_eq!(
            check("org.x.w.1", H, never, WARN, NOW).evidence().status,
            "unavailable"
        );
        // Stale data still decides what it knows: a stale mismatch is still tampering.
        let other = worker(WorkerStatus::Active, Some(OTHER));
        let seen = Observation {
            worker: Some((&other, 0)),
            ban: None,
            ban_list_at: Some(0),
        };
        assert_eq!(
            code(&check("org.x.w.1", H, seen, WARN, NOW)),
            Some(DenyCode::DenyWorkerTampered)
        );
    }
}
