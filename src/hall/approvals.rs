//! Human-in-the-loop approvals (WCP §5.8): pending requests, their resolution and expiry.
//!
//! A REQUIRE_HUMAN decision neither runs nor is silently denied: it becomes a pending approval
//! with a supervisor level and an expiry. An operator approves, denies or escalates it; an
//! unresolved one expires (denied). Every change is written to `approvals.json` in the state
//! directory atomically (temp file, fsync, rename, fsync of the directory) *before* it is
//! acknowledged, so pending approvals survive a restart; on start, approvals that expired while
//! the Hall was down are marked expired (and the daemon records a receipt for each) — never
//! silently dropped. A file that cannot be parsed stops the Hall rather than losing approvals.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::snapshot::identity::Peer;

/// WCP §5.8 supervisor levels, lowest first (the policy gate's vocabulary).
pub const SUPERVISOR_LEVELS: &[&str] = crate::policy::SupervisorLevel::NAMES;

/// Where an approval stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalStatus {
    Pending,
    Approved,
    Denied,
    Expired,
}

impl ApprovalStatus {
    /// The name the API and the files use.
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalStatus::Pending => "pending",
            ApprovalStatus::Approved => "approved",
            ApprovalStatus::Denied => "denied",
            ApprovalStatus::Expired => "expired",
        }
    }
}

/// How an operator resolved an approval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resolution {
    pub by_uid: u32,
    pub at: String,
    pub action: String,
    pub note: Option<String>,
}

/// One approval record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Approval {
    pub id: String,
    pub status: ApprovalStatus,
    pub supervisor_level: String,
    pub created_at: String,
    pub expires_at: String,
    pub expires_at_ms: u64,
    pub tenant_id: String,
    pub capability_id: String,
    pub correlation_id: String,
    /// Why a human is needed (the gate's reason or the blast rationale) and the router's code.
    pub reason: String,
    pub deny_code: String,
    /// The RouteInput exactly as received, re-routed when approved.
    pub input: Value,
    /// The RouteDecision that asked for a human.
    pub decision: Value,
    /// The policy gate's full answer behind it, when the gate asked.
    #[serde(default)]
    pub policy: Option<Value>,
    pub peer: Peer,
    pub resolutions: Vec<Resolution>,
    /// The dispatch outcome once an approved request ran (or the final denial).
    pub outcome: Option<Value>,
    /// When the approval stopped being pending (resolved or expired), in ms since the epoch.
    /// The outcome is kept `[approvals] outcome_retention_ms` after this. (Files written before
    /// this field existed count from the expiry.)
    #[serde(default)]
    pub closed_at_ms: Option<u64>,
    /// The W3C `traceparent` of the dispatch that asked for the approval, so the run (or the
    /// denial) that closes it continues that trace. Absent without a trace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

/// The fields of a stored RouteDecision the Hall acts on once an approval closes, read through
/// one typed view that fails loudly (the decision itself is kept verbatim, in PyHall's shape with
/// its telemetry events, for the answers).
#[derive(Debug, Clone, Deserialize)]
pub struct StoredDecision {
    pub decision_id: String,
    pub correlation_id: String,
    pub tenant_id: String,
    pub capability_id: String,
    pub matched_rule_id: String,
    pub env: crate::wcp::Env,
    pub deny_reason_if_denied: Option<crate::wcp::DenyReason>,
}

/// The field of a stored policy gate answer the receipt needs.
#[derive(Debug, Clone, Deserialize)]
pub struct StoredPolicy {
    pub policy_version: String,
}

impl Approval {
    /// The stored decision's fields, typed; an error names what is wrong with it.
    pub fn stored_decision(&self) -> Result<StoredDecision, String> {
        StoredDecision::deserialize(&self.decision).map_err(|e| {
            format!(
                "approval {}: the stored decision is unreadable: {e}",
                self.id
            )
        })
    }

    /// The stored policy gate answer's version, when the gate was asked.
    pub fn stored_policy_version(&self) -> Result<Option<String>, String> {
        self.policy
            .as_ref()
            .map(|p| {
                StoredPolicy::deserialize(p)
                    .map(|p| p.policy_version)
                    .map_err(|e| {
                        format!(
                            "approval {}: the stored policy answer is unreadable: {e}",
                            self.id
                        )
                    })
            })
            .transpose()
    }

    /// When the approval closed, for retention.
    pub fn closed_at(&self) -> u64 {
        self.closed_at_ms.unwrap_or(self.expires_at_ms)
    }

    /// Whether `other` names the same request as this approval: same requesting uid, tenant,
    /// capability and correlation id (the caller's idempotency key).
    pub fn same_key(
        &self,
        uid: u32,
        tenant_id: &str,
        capability_id: &str,
        correlation_id: &str,
    ) -> bool {
        self.peer.uid == uid
            && self.tenant_id == tenant_id
            && self.capability_id == capability_id
            && self.correlation_id == correlation_id
    }
}

/// Why an approvals operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ApprovalError {
    #[error("cannot read approvals file {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "approvals file {} is corrupt ({message}); the Hall will not start and lose pending approvals: repair or move it aside",
        .path.display()
    )]
    Corrupt { path: PathBuf, message: String },
    #[error("cannot persist approvals to {}: {source}", .path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no approval with id {0:?}")]
    NotFound(String),
    #[error("approval {id} is already {status:?}")]
    NotPending { id: String, status: ApprovalStatus },
    #[error(
        "unknown supervisor level {0:?}; expected one of: advisory, gatekeeper, executor, incident_commander"
    )]
    Level(String),
}

/// The approval table, persisted on every change.
#[derive(Debug)]
pub struct ApprovalStore {
    path: PathBuf,
    inner: Mutex<BTreeMap<String, Approval>>,
    changed: tokio::sync::watch::Sender<u64>,
}

pub use crate::common::{now_ms, rfc3339_ms};

/// The outcome kept for an approved request whose run the Hall did not see finish.
fn interrupted(a: &Approval) -> Value {
    serde_json::json!({
        "status": "failed",
        "denied": false,
        "decision": a.decision,
        "policy": a.policy,
        "result": null,
        "execution": {"error": {
            "code": "interrupted",
            "message": "the Hall stopped before this approved run finished; it is not run again \
                        (an intent receipt it wrote ends aborted in the log): ask again for a new \
                        approval"
        }},
    })
}

impl ApprovalStore {
    /// Opens (or creates) the store in `state_dir`. Returns the approvals that expired while the
    /// Hall was not running, already marked expired and persisted, for the caller to receipt.
    pub fn open(state_dir: &Path) -> Result<(Self, Vec<Approval>), ApprovalError> {
        let path = state_dir.join("approvals.json");
        let mut map: BTreeMap<String, Approval> = match std::fs::read(&path) {
            Ok(bytes) => crate::json::from_slice(&bytes).map_err(|e| ApprovalError::Corrupt {
                path: path.clone(),
                message: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(source) => return Err(ApprovalError::Read { path, source }),
        };
        let now = now_ms();
        let mut expired = Vec::new();
        let mut changed = false;
        for a in map.values_mut() {
            if a.status == ApprovalStatus::Pending && a.expires_at_ms <= now {
                a.status = ApprovalStatus::Expired;
                a.closed_at_ms = Some(now);
                expired.push(a.clone());
            } else if a.outcome.is_none() {
                match a.status {
                    ApprovalStatus::Pending => {}
                    // Closed, but the Hall stopped before it recorded the denial: record it now
                    // (like an expiry while down), so the requester is not told "pending"
                    // forever.
                    ApprovalStatus::Denied | ApprovalStatus::Expired => expired.push(a.clone()),
                    // Approved, but the Hall stopped before the run's outcome was kept. It is not
                    // run again (it may have run: the receipt log's recovery ends a dangling
                    // intent `aborted`); the requester learns it was interrupted.
                    ApprovalStatus::Approved => {
                        a.outcome = Some(interrupted(a));
                        changed = true;
                    }
                }
            }
        }
        let store = ApprovalStore {
            path,
            inner: Mutex::new(map),
            changed: tokio::sync::watch::channel(0).0,
        };
        if !expired.is_empty() || changed {
            let map = store.lock();
            store.persist(&map)?;
        }
        Ok((store, expired))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Approval>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn persist(&self, map: &BTreeMap<String, Approval>) -> Result<(), ApprovalError> {
        let err = |source| ApprovalError::Write {
            path: self.path.clone(),
            source,
        };
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(err)?;
        let bytes = serde_json::to_vec_pretty(map).map_err(|e| err(std::io::Error::other(e)))?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(err)?;
        tmp.write_all(&bytes).map_err(err)?;
        tmp.as_file().sync_all().map_err(err)?;
        tmp.persist(&self.path).map_err(|e| err(e.error))?;
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(err)?;
        Ok(())
    }

    fn notify(&self) {
        self.changed.send_modify(|v| *v += 1);
    }

    /// Adds a pending approval (durable before returning).
    pub fn create(&self, approval: Approval) -> Result<Approval, ApprovalError> {
        let mut map = self.lock();
        map.insert(approval.id.clone(), approval.clone());
        if let Err(e) = self.persist(&map) {
            map.remove(&approval.id);
            return Err(e);
        }
        drop(map);
        self.notify();
        Ok(approval)
    }

    pub fn get(&self, id: &str) -> Option<Approval> {
        self.lock().get(id).cloned()
    }

    /// Every pending approval, oldest first.
    pub fn pending(&self) -> Vec<Approval> {
        let mut v: Vec<Approval> = self
            .lock()
            .values()
            .filter(|a| a.status == ApprovalStatus::Pending)
            .cloned()
            .collect();
        v.sort_by(|a, b| a.created_at.cmp(&b.created_at));
        v
    }

    /// Applies `f` to a pending approval and persists the result; the old state is kept if the
    /// write fails.
    fn update(&self, id: &str, f: impl FnOnce(&mut Approval)) -> Result<Approval, ApprovalError> {
        let mut map = self.lock();
        let current = map
            .get(id)
            .ok_or_else(|| ApprovalError::NotFound(id.to_owned()))?;
        if current.status != ApprovalStatus::Pending {
            return Err(ApprovalError::NotPending {
                id: id.to_owned(),
                status: current.status,
            });
        }
        let mut next = current.clone();
        f(&mut next);
        let previous = map.insert(id.to_owned(), next.clone());
        if let Err(e) = self.persist(&map) {
            if let Some(p) = previous {
                map.insert(id.to_owned(), p);
            }
            return Err(e);
        }
        drop(map);
        self.notify();
        Ok(next)
    }

    /// Approves or denies a pending approval.
    pub fn resolve(
        &self,
        id: &str,
        approve: bool,
        by: &Peer,
        note: Option<String>,
    ) -> Result<Approval, ApprovalError> {
        self.update(id, |a| {
            a.status = if approve {
                ApprovalStatus::Approved
            } else {
                ApprovalStatus::Denied
            };
            a.closed_at_ms = Some(now_ms());
            a.resolutions.push(Resolution {
                by_uid: by.uid,
                at: rfc3339_ms(now_ms()),
                action: if approve { "approve" } else { "deny" }.into(),
                note,
            });
        })
    }

    /// Raises the supervisor level (to `level`, or the next one); the approval stays pending.
    pub fn escalate(
        &self,
        id: &str,
        level: Option<&str>,
        by: &Peer,
        note: Option<String>,
    ) -> Result<Approval, ApprovalError> {
        let current = self
            .get(id)
            .ok_or_else(|| ApprovalError::NotFound(id.to_owned()))?;
        let next = match level {
            Some(l) if SUPERVISOR_LEVELS.contains(&l) => l.to_owned(),
            Some(l) => return Err(ApprovalError::Level(l.to_owned())),
            None => {
                let i = SUPERVISOR_LEVELS
                    .iter()
                    .position(|l| *l == current.supervisor_level)
                    .map_or(1, |i| (i + 1).min(SUPERVISOR_LEVELS.len() - 1));
                SUPERVISOR_LEVELS[i].to_owned()
            }
        };
        self.update(id, |a| {
            a.supervisor_level = next.clone();
            a.resolutions.push(Resolution {
                by_uid: by.uid,
                at: rfc3339_ms(now_ms()),
                action: format!("escalate:{next}"),
                note,
            });
        })
    }

    /// Marks every pending approval whose expiry has passed as expired; returns them.
    pub fn expire_due(&self, now: u64) -> Result<Vec<Approval>, ApprovalError> {
        let mut map = self.lock();
        let due: Vec<String> = map
            .values()
            .filter(|a| a.status == ApprovalStatus::Pending && a.expires_at_ms <= now)
            .map(|a| a.id.clone())
            .collect();
        if due.is_empty() {
            return Ok(Vec::new());
        }
        let before = map.clone();
        let mut out = Vec::new();
        for id in &due {
            if let Some(a) = map.get_mut(id) {
                a.status = ApprovalStatus::Expired;
                a.closed_at_ms = Some(now);
                out.push(a.clone());
            }
        }
        if let Err(e) = self.persist(&map) {
            *map = before;
            return Err(e);
        }
        drop(map);
        self.notify();
        Ok(out)
    }

    /// The newest approval for the same request key (see [`Approval::same_key`]), in any state.
    pub fn find_repeat(
        &self,
        uid: u32,
        tenant_id: &str,
        capability_id: &str,
        correlation_id: &str,
    ) -> Option<Approval> {
        self.lock()
            .values()
            .filter(|a| a.same_key(uid, tenant_id, capability_id, correlation_id))
            .max_by(|a, b| a.created_at.cmp(&b.created_at))
            .cloned()
    }

    /// Forgets closed approvals whose outcome is known and was kept `retention_ms` (their
    /// receipts stay in the log). Returns how many were removed.
    pub fn prune_closed(&self, now: u64, retention_ms: u64) -> Result<usize, ApprovalError> {
        let mut map = self.lock();
        let due: Vec<String> = map
            .values()
            .filter(|a| {
                a.status != ApprovalStatus::Pending
                    && a.outcome.is_some()
                    && a.closed_at().saturating_add(retention_ms) <= now
            })
            .map(|a| a.id.clone())
            .collect();
        if due.is_empty() {
            return Ok(0);
        }
        let before = map.clone();
        for id in &due {
            map.remove(id);
        }
        if let Err(e) = self.persist(&map) {
            *map = before;
            return Err(e);
        }
        Ok(due.len())
    }

    /// Records the final outcome of a resolved approval (any status but pending).
    pub fn set_outcome(&self, id: &str, outcome: Value) -> Result<(), ApprovalError> {
        let mut map = self.lock();
        let Some(a) = map.get_mut(id) else {
            return Err(ApprovalError::NotFound(id.to_owned()));
        };
        a.outcome = Some(outcome);
        self.persist(&map)?;
        drop(map);
        self.notify();
        Ok(())
    }

    /// Waits until the approval is no longer pending and has an outcome, or `timeout` passes.
    pub async fn wait_outcome(&self, id: &str, timeout: std::time::Duration) -> Option<Approval> {
        let mut rx = self.changed.subscribe();
        let wait = async {
            loop {
                if let Some(a) = self.get(id)
                    && a.status != ApprovalStatus::Pending
                    && a.outcome.is_some()
                {
                    return Some(a);
                }
                if rx.changed().await.is_err() {
                    return None;
                }
            }
        };
        tokio::time::timeout(timeout, wait).await.ok().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn approval(id: &str, expires_at_ms: u64) -> Approval {
        Approval {
            id: id.into(),
            status: ApprovalStatus::Pending,
            supervisor_level: "gatekeeper".into(),
            created_at: rfc3339_ms(now_ms()),
            expires_at: rfc3339_ms(expires_at_ms),
            expires_at_ms,
            tenant_id: "acme-corp".into(),
            capability_id: "cap.hello.greet".into(),
            correlation_id: "c".into(),
            reason: "needs_review".into(),
            deny_code: "DENY_REQUIRES_HUMAN_APPROVAL".into(),
            input: json!({}),
            decision: json!({}),
            policy: None,
            peer: Peer {
                uid: 1000,
                gid: 1000,
                pid: Some(1),
            },
            resolutions: vec![],
            outcome: None,
            closed_at_ms: None,
            traceparent: None,
        }
    }

    #[test]
    fn status_names_are_the_ones_the_files_and_the_api_use() {
        for status in [
            ApprovalStatus::Pending,
            ApprovalStatus::Approved,
            ApprovalStatus::Denied,
            ApprovalStatus::Expired,
        ] {
            assert_eq!(serde_json::to_value(status).unwrap(), status.as_str());
        }
    }

    #[test]
    fn approvals_survive_a_restart_and_expire_while_down() {
        let dir = tempfile::tempdir().unwrap();
        let (store, expired) = ApprovalStore::open(dir.path()).unwrap();
        assert!(expired.is_empty());
        store.create(approval("a", now_ms() + 3_600_000)).unwrap();
        store.create(approval("b", now_ms() + 50)).unwrap();
        drop(store);
        std::thread::sleep(std::time::Duration::from_millis(80));
        let (store, expired) = ApprovalStore::open(dir.path()).unwrap();
        assert_eq!(
            expired.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(),
            ["b"]
        );
        assert_eq!(store.pending().len(), 1);
        assert_eq!(store.get("b").unwrap().status, ApprovalStatus::Expired);
        let op = Peer {
            uid: 0,
            gid: 0,
            pid: None,
        };
        let a = store.resolve("a", true, &op, Some("ok".into())).unwrap();
        assert_eq!(a.status, ApprovalStatus::Approved);
        assert!(matches!(
            store.resolve("a", false, &op, None),
            Err(ApprovalError::NotPending { .. })
        ));
        assert!(matches!(
            store.resolve("zz", true, &op, None),
            Err(ApprovalError::NotFound(_))
        ));
    }

    #[test]
    fn escalation_raises_the_level_and_corrupt_files_stop_the_hall() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = ApprovalStore::open(dir.path()).unwrap();
        store.create(approval("a", now_ms() + 3_600_000)).unwrap();
        let op = Peer {
            uid: 0,
            gid: 0,
            pid: None,
        };
        assert_eq!(
            store
                .escalate("a", None, &op, None)
                .unwrap()
                .supervisor_level,
            "executor"
        );
        assert_eq!(
            store
                .escalate("a", Some("incident_commander"), &op, None)
                .unwrap()
                .supervisor_level,
            "incident_commander"
        );
        assert!(matches!(
            store.escalate("a", Some("boss"), &op, None),
            Err(ApprovalError::Level(_))
        ));
        std::fs::write(dir.path().join("approvals.json"), "{not json").unwrap();
        assert!(matches!(
            ApprovalStore::open(dir.path()),
            Err(ApprovalError::Corrupt { .. })
        ));
    }

    #[test]
    fn expire_due_marks_and_reports() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = ApprovalStore::open(dir.path()).unwrap();
        store.create(approval("a", 10)).unwrap();
        store.create(approval("b", u64::MAX)).unwrap();
        let out = store.expire_due(now_ms()).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(store.pending().len(), 1);
        assert_eq!(rfc3339_ms(1_795_548_961_274), "2026-11-24T19:36:01.274Z");
    }

    #[test]
    fn closed_outcomes_are_kept_for_the_retention_then_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = ApprovalStore::open(dir.path()).unwrap();
        store.create(approval("a", u64::MAX)).unwrap();
        store.create(approval("b", u64::MAX)).unwrap();
        let op = Peer {
            uid: 0,
            gid: 0,
            pid: None,
        };
        let a = store.resolve("a", true, &op, None).unwrap();
        let closed = a.closed_at_ms.expect("resolving closes");
        // No outcome yet: kept whatever the time (the run may still be going).
        assert_eq!(store.prune_closed(u64::MAX, 0).unwrap(), 0);
        store
            .set_outcome("a", json!({"status": "completed"}))
            .unwrap();
        assert_eq!(store.prune_closed(closed + 999, 1000).unwrap(), 0);
        assert!(store.get("a").is_some());
        assert_eq!(store.prune_closed(closed + 1000, 1000).unwrap(), 1);
        assert!(store.get("a").is_none());
        // Pending ones are never pruned, and the pruning is durable.
        assert!(store.get("b").is_some());
        drop(store);
        let (store, _) = ApprovalStore::open(dir.path()).unwrap();
        assert!(store.get("a").is_none() && store.get("b").is_some());
    }

    #[test]
    fn a_repeat_is_found_by_uid_tenant_capability_and_correlation_id() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = ApprovalStore::open(dir.path()).unwrap();
        store.create(approval("a", u64::MAX)).unwrap();
        let a = store.get("a").unwrap();
        let (t, c, k) = (&a.tenant_id, &a.capability_id, &a.correlation_id);
        assert_eq!(store.find_repeat(1000, t, c, k).unwrap().id, "a");
        assert!(store.find_repeat(1001, t, c, k).is_none(), "another uid");
        assert!(
            store.find_repeat(1000, "other", c, k).is_none(),
            "another tenant"
        );
        assert!(store.find_repeat(1000, t, "cap.other", k).is_none());
        assert!(store.find_repeat(1000, t, c, "other").is_none());
    }

    #[test]
    fn a_decision_the_hall_did_not_finish_recording_is_closed_on_start() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = ApprovalStore::open(dir.path()).unwrap();
        store.create(approval("ran", u64::MAX)).unwrap();
        store.create(approval("refused", u64::MAX)).unwrap();
        let op = Peer {
            uid: 0,
            gid: 0,
            pid: None,
        };
        // Resolved, and then the Hall stopped before it kept an outcome.
        store.resolve("ran", true, &op, None).unwrap();
        store.resolve("refused", false, &op, None).unwrap();
        drop(store);
        let (store, to_record) = ApprovalStore::open(dir.path()).unwrap();
        // The approved one is not run again: its outcome says it was interrupted.
        let ran = store.get("ran").unwrap();
        assert_eq!(
            ran.outcome.as_ref().unwrap()["execution"]["error"]["code"],
            "interrupted"
        );
        // The denied one is handed back to be receipted (and its outcome kept).
        assert_eq!(
            to_record.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(),
            ["refused"]
        );
        drop(store);
        let (store, _) = ApprovalStore::open(dir.path()).unwrap();
        assert!(store.get("ran").unwrap().outcome.is_some(), "kept durably");
    }
}
