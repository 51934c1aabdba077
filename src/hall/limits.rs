//! Admission control: bounded concurrency overall and per tenant, and a bounded wait queue.
//!
//! Threat model: one tenant (or one misbehaving agent) must not be able to starve the others or
//! exhaust the host. A request takes a per-tenant slot, then a global slot; at most `max_queue`
//! requests may wait for slots, each at most `queue_timeout`; beyond that the Hall answers
//! `429 Too Many Requests` with `Retry-After` at once, so overload costs the Hall almost nothing.
//! Dispatches and capability listings (`POST /wcp/capabilities/routable`, a route per
//! capability) pass through here; health and version probes never do, so they stay responsive
//! under overload.
//! The per-tenant key is the tenant only when the peer may act as it (otherwise the peer's uid),
//! so a caller cannot grow the table by inventing tenant names.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Why a request was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    #[error("the Hall is at capacity and its wait queue is full; retry later")]
    QueueFull,
    #[error("no execution slot became free in time; retry later")]
    Timeout,
}

/// Held while a request executes; dropping it frees both slots.
#[derive(Debug)]
pub struct Permit {
    _tenant: OwnedSemaphorePermit,
    _global: OwnedSemaphorePermit,
}

/// Concurrency and queue limits shared by every connection.
#[derive(Debug)]
pub struct Limits {
    global: Arc<Semaphore>,
    per_tenant: usize,
    tenants: Mutex<HashMap<String, Arc<Semaphore>>>,
    waiting: AtomicUsize,
    max_queue: usize,
    queue_timeout: Duration,
}

/// Decrements the waiting count however the wait ends.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Limits {
    pub fn new(
        max_concurrent: usize,
        per_tenant: usize,
        max_queue: usize,
        queue_timeout: Duration,
    ) -> Self {
        Limits {
            global: Arc::new(Semaphore::new(max_concurrent.max(1))),
            per_tenant: per_tenant.max(1),
            tenants: Mutex::new(HashMap::new()),
            waiting: AtomicUsize::new(0),
            max_queue,
            queue_timeout,
        }
    }

    fn tenant_semaphore(&self, key: &str) -> Arc<Semaphore> {
        let mut map = self.tenants.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(key.to_owned())
            .or_insert_with(|| Arc::new(Semaphore::new(self.per_tenant)))
            .clone()
    }

    /// Takes a per-tenant and a global slot, waiting in the bounded queue if needed.
    pub async fn admit(&self, key: &str) -> Result<Permit, Rejected> {
        let tenant = self.tenant_semaphore(key);
        // Fast path: both slots free, no queueing.
        if let Ok(t) = tenant.clone().try_acquire_owned() {
            if let Ok(g) = self.global.clone().try_acquire_owned() {
                return Ok(Permit {
                    _tenant: t,
                    _global: g,
                });
            }
            drop(t);
        }
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.max_queue {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(Rejected::QueueFull);
        }
        let _waiting = Waiting(&self.waiting);
        let acquire = async {
            let t = tenant
                .acquire_owned()
                .await
                .map_err(|_| Rejected::Timeout)?;
            let g = self
                .global
                .clone()
                .acquire_owned()
                .await
                .map_err(|_| Rejected::Timeout)?;
            Ok(Permit {
                _tenant: t,
                _global: g,
            })
        };
        tokio::time::timeout(self.queue_timeout, acquire)
            .await
            .map_err(|_| Rejected::Timeout)?
    }

    /// Requests waiting for a slot now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }

    /// Global slots in use now.
    pub fn in_flight(&self, max_concurrent: usize) -> usize {
        max_concurrent.saturating_sub(self.global.available_permits())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn per_tenant_and_global_limits_and_a_bounded_queue() {
        let limits = Arc::new(Limits::new(2, 1, 1, Duration::from_millis(50)));
        let a = limits.admit("a").await.unwrap();
        // Tenant a is at its limit: the next request waits in the queue, then times out.
        assert_eq!(limits.admit("a").await.unwrap_err(), Rejected::Timeout);
        let b = limits.admit("b").await.unwrap();
        // Global limit (2) reached: one waiter fits in the queue, the next is refused at once.
        let l2 = limits.clone();
        let waiter = tokio::spawn(async move { l2.admit("c").await.map(|_| ()) });
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(limits.waiting(), 1);
        assert_eq!(limits.admit("d").await.unwrap_err(), Rejected::QueueFull);
        drop(a);
        assert!(
            waiter.await.unwrap().is_ok(),
            "a freed slot admits the waiter"
        );
        drop(b);
        assert_eq!(limits.waiting(), 0);
        assert!(limits.admit("a").await.is_ok());
    }
}
