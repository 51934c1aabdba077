//! What the Hall last heard from the registry service: each enrolled worker's status and the
//! ban list, with the time each was fetched. Written by the refresher thread only, read by
//! dispatches: a read lock held for two map look-ups, never a network call.

use std::collections::HashMap;
use std::sync::RwLock;

use super::gate::{self, Observation, Policy, Verdict};
use super::model::{BanEntry, VerifyResponse};

#[derive(Debug, Default)]
struct Inner {
    workers: HashMap<String, (VerifyResponse, u64)>,
    bans: HashMap<String, BanEntry>,
    ban_list_at: Option<u64>,
    last_error: Option<(u64, String)>,
    last_success: Option<u64>,
}

/// The cache (see the module documentation).
#[derive(Debug, Default)]
pub struct Cache {
    inner: RwLock<Inner>,
}

/// The cache's state for `/wcp/health` and logs.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CacheState {
    pub workers: usize,
    pub banned_hashes: usize,
    pub ban_list_fetched_at: Option<String>,
    pub last_success_at: Option<String>,
    pub last_error: Option<String>,
    pub last_error_at: Option<String>,
}

impl Cache {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Replaces the ban list (fetched at `at_ms`).
    pub fn set_ban_list(&self, entries: Vec<BanEntry>, at_ms: u64) {
        let bans = entries.into_iter().map(|e| (e.sha256.clone(), e)).collect();
        let mut w = self.write();
        w.bans = bans;
        w.ban_list_at = Some(at_ms);
        w.last_success = Some(at_ms);
    }

    /// Records a worker's status (fetched at `at_ms`).
    pub fn set_worker(&self, status: VerifyResponse, at_ms: u64) {
        let mut w = self.write();
        w.workers.insert(status.worker_id.clone(), (status, at_ms));
        w.last_success = Some(at_ms);
    }

    /// Forgets workers no longer enrolled.
    pub fn retain_workers(&self, enrolled: &[String]) {
        self.write()
            .workers
            .retain(|id, _| enrolled.iter().any(|e| e == id));
    }

    /// Remembers the last failure (its message never holds a token: see `client`).
    pub fn set_error(&self, message: String, at_ms: u64) {
        self.write().last_error = Some((at_ms, message));
    }

    /// The gate for one dispatch, from the cache alone.
    pub fn check(
        &self,
        worker_id: &str,
        package_hash: &str,
        policy: Policy,
        now_ms: u64,
    ) -> Verdict {
        let r = self.read();
        let seen = Observation {
            worker: r.workers.get(worker_id).map(|(s, at)| (s, *at)),
            ban: r.bans.get(&package_hash.to_ascii_lowercase()),
            ban_list_at: r.ban_list_at,
        };
        gate::check(worker_id, package_hash, seen, policy, now_ms)
    }

    pub fn state(&self) -> CacheState {
        let r = self.read();
        let t = crate::common::rfc3339_ms;
        CacheState {
            workers: r.workers.len(),
            banned_hashes: r.bans.len(),
            ban_list_fetched_at: r.ban_list_at.map(t),
            last_success_at: r.last_success.map(t),
            last_error: r.last_error.as_ref().map(|(_, m)| m.clone()),
            last_error_at: r.last_error.as_ref().map(|(at, _)| t(*at)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry_service::config::OnStale;
    use crate::registry_service::model::WorkerStatus;
    use crate::wcp::DenyCode;

    const H: &str = "abababababababababababababababababababababababababababababababab";
    const POLICY: Policy = Policy {
        max_staleness_ms: 300_000,
        on_stale: OnStale::Deny,
    };

    fn active(id: &str) -> VerifyResponse {
        let mut r = VerifyResponse::unknown(id);
        r.status = WorkerStatus::Active;
        r.current_hash = Some(H.into());
        r
    }

    #[test]
    fn a_ban_matches_whatever_the_case_and_workers_no_longer_enrolled_are_forgotten() {
        let cache = Cache::default();
        cache.set_worker(active("org.x.a.1"), 1_000);
        cache.set_worker(active("org.x.b.1"), 1_000);
        cache.set_ban_list(Vec::new(), 1_000);
        let v = cache.check("org.x.a.1", &H.to_uppercase(), POLICY, 2_000);
        assert!(matches!(v, Verdict::Pass(_)), "{v:?}");
        let entry = BanEntry {
            sha256: H.into(),
            reason: None,
            reported_at: None,
            source: None,
            review_status: None,
        };
        cache.set_ban_list(vec![entry], 1_500);
        assert!(matches!(
            cache.check("org.x.a.1", &H.to_uppercase(), POLICY, 2_000),
            Verdict::Deny {
                code: DenyCode::DenyWorkerBanned,
                ..
            }
        ));
        cache.retain_workers(&["org.x.a.1".to_owned()]);
        assert_eq!(cache.state().workers, 1);
        // A worker the cache never saw: nothing fetched, fail closed where configured.
        assert!(matches!(
            cache.check("org.x.b.1", &"cd".repeat(32), POLICY, 2_000),
            Verdict::Deny {
                code: DenyCode::DenyRegistryStatusStale,
                ..
            }
        ));
        cache.set_error("down".into(), 3_000);
        let s = cache.state();
        assert_eq!(
            (s.banned_hashes, s.last_error.as_deref()),
            (1, Some("down"))
        );
    }
}
