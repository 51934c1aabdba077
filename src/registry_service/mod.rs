//! The worker registry service: PyHall's `RegistryClient` API (`GET /api/v1/verify/{id}`,
//! the ban list, reports, attestations, decision counts), consulted by the Hall when
//! `[registry_service] enabled = true` and by `wcp-hall registry …`.
//!
//! - [`model`]: the answers, strictly parsed and tolerant of added fields (pure).
//! - [`client`]: the blocking HTTP client: timeouts, size bounds, no redirects, secret tokens.
//! - [`cache`]: what was last fetched, read by dispatches.
//! - [`gate`]: the dispatch check from the cache (pure).
//! - [`config`]: the `[registry_service]` section of `hall.toml`.
//! - [`Service`]: the cache and its refresher thread in the daemon.
//!
//! Threat model. The service is remote and may be down, slow or hostile (or impersonated on
//! the path when plain http is configured).
//! - *Down or slow*: a dispatch never waits on it. Dispatches read [`cache::Cache`] only; one
//!   background thread fetches, each request bounded by `timeout_ms`. When the data grows older
//!   than `max_staleness_seconds` (or was never fetched), the environment's `on_stale` decides:
//!   `deny` fails closed with `DENY_REGISTRY_STATUS_STALE`, `warn` proceeds on what is known and
//!   says so in the answer and the receipt.
//! - *Hostile answers*: bodies are capped at `max_response_bytes`; JSON is parsed strictly
//!   (duplicate keys, wrong types, unknown statuses and garbled ban hashes are errors, which
//!   leave the previous data in place to age); an answer about another worker id is refused; a
//!   redirect is an error, never followed. A failed fetch never clears a ban: bans are only
//!   replaced by a complete, valid list.
//! - *What the service can do*: deny (ban, revoke, report an unknown worker or another hash).
//!   It can never make a dispatch pass that the Hall's own checks refuse: the gate runs after
//!   routing and package verification allowed it, and only ever turns an allow into a denial.
//! - *Tokens*: read from files or systemd credentials, held in [`client::Secret`] (redacted
//!   `Debug`, zeroed on drop), sent as sensitive headers, never in a URL (a URL with user
//!   information is refused), never in an error message or a log line.
//! - Out of scope: a service that answers `active` with the hash of a package the Hall's trust
//!   policy accepts; the service is a deny-list and a second opinion, not the root of trust.

pub mod cache;
pub mod client;
pub mod config;
pub mod gate;
pub mod model;

use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

pub use config::{OnStale, RegistryServiceSection};
pub use gate::{RegistryEvidence, Verdict};

/// The daemon's registry service: the client, the cache and the refresher thread.
pub struct Service {
    shared: Arc<Shared>,
}

struct Shared {
    client: client::Client,
    cache: cache::Cache,
    refresh: Duration,
    ban_list_limit: u32,
    send_counts: bool,
    /// Allowed dispatches per worker id since the last flush.
    counts: Mutex<BTreeMap<String, u64>>,
    /// Set on drop: the refresher stops at its next wake-up.
    stop: (Mutex<bool>, Condvar),
}

impl Service {
    /// Builds the client from `[registry_service]` (reading the token files). Nothing is
    /// fetched until [`Service::start`].
    pub fn new(section: &RegistryServiceSection) -> Result<Service, String> {
        let settings = section.client_settings()?;
        let client = client::Client::new(settings).map_err(|e| e.to_string())?;
        Ok(Service {
            shared: Arc::new(Shared {
                client,
                cache: cache::Cache::default(),
                refresh: Duration::from_secs(section.refresh_seconds),
                ban_list_limit: section.ban_list_limit,
                send_counts: section.send_decision_counts,
                counts: Mutex::new(BTreeMap::new()),
                stop: (Mutex::new(false), Condvar::new()),
            }),
        })
    }

    pub fn base_url(&self) -> &str {
        self.shared.client.base_url()
    }

    /// Starts the refresher thread: at once, then every `refresh_seconds`, it fetches the ban
    /// list and the status of every worker id `enrolled` returns (the current snapshot's).
    pub fn start(
        &self,
        enrolled: impl Fn() -> Vec<String> + Send + 'static,
    ) -> std::io::Result<()> {
        let shared = self.shared.clone();
        std::thread::Builder::new()
            .name("registry-refresh".into())
            .spawn(move || {
                loop {
                    shared.refresh_once(&enrolled());
                    let (lock, cv) = &shared.stop;
                    let stopped = lock.lock().unwrap_or_else(|p| p.into_inner());
                    let (stopped, _) = cv
                        .wait_timeout_while(stopped, shared.refresh, |s| !*s)
                        .unwrap_or_else(|p| p.into_inner());
                    if *stopped {
                        return;
                    }
                }
            })
            .map(|_| ())
    }

    /// The dispatch gate, from the cache alone.
    pub fn check(
        &self,
        worker_id: &str,
        package_hash: &str,
        policy: gate::Policy,
        now_ms: u64,
    ) -> Verdict {
        self.shared
            .cache
            .check(worker_id, package_hash, policy, now_ms)
    }

    /// Counts one allowed dispatch of `worker_id` (sent only when `send_decision_counts`).
    pub fn count_decision(&self, worker_id: &str) {
        if self.shared.send_counts {
            *self
                .shared
                .counts
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry(worker_id.to_owned())
                .or_default() += 1;
        }
    }

    pub fn state(&self) -> cache::CacheState {
        self.shared.cache.state()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let (lock, cv) = &self.shared.stop;
        *lock.lock().unwrap_or_else(|p| p.into_inner()) = true;
        cv.notify_all();
    }
}

impl Shared {
    fn refresh_once(&self, enrolled: &[String]) {
        let now = crate::common::now_ms;
        let fail = |e: client::ServiceError| {
            tracing::warn!(code = e.code(), error = %e, "registry service refresh failed");
            self.cache.set_error(e.to_string(), now());
        };
        match self.client.ban_list(self.ban_list_limit) {
            Ok(list) => self.cache.set_ban_list(list, now()),
            Err(e) => fail(e),
        }
        self.cache.retain_workers(enrolled);
        for id in enrolled {
            match self.client.verify(id) {
                Ok(status) => self.cache.set_worker(status, now()),
                Err(e) => {
                    let rate_limited = matches!(e, client::ServiceError::RateLimited { .. });
                    fail(e);
                    if rate_limited {
                        // PyHall's prefetch stops at a 429 too; the rest waits for next time.
                        break;
                    }
                }
            }
        }
        if self.send_counts {
            let counts =
                std::mem::take(&mut *self.counts.lock().unwrap_or_else(|p| p.into_inner()));
            if !counts.is_empty() {
                let decisions: Vec<model::DecisionCount> = counts
                    .iter()
                    .map(|(worker_id, &count)| model::DecisionCount {
                        worker_id: worker_id.clone(),
                        count,
                    })
                    .collect();
                if let Err(e) = self.client.send_decisions(&decisions) {
                    // Counts are telemetry: kept for the next try, never blocking anything.
                    let mut kept = self.counts.lock().unwrap_or_else(|p| p.into_inner());
                    for (id, n) in counts {
                        *kept.entry(id).or_default() += n;
                    }
                    drop(kept);
                    fail(e);
                }
            }
        }
    }
}
