//! Connection admission: the descriptor limit, caps on open connections in total and per peer
//! uid, idle shedding, and the answers refused connections get.
//!
//! Threat model: anyone who may open the socket (no tenant needed) can hold connections. Each
//! one is a descriptor, and a Hall out of descriptors cannot checkpoint its receipt log (which
//! poisons it), start a worker or answer health. So:
//!
//! - at start the Hall raises its `RLIMIT_NOFILE` soft limit to the hard limit
//!   ([`raise_nofile_limit`]) and derives its caps from it ([`ConnLimits::derive`]), keeping a
//!   **reserve** of descriptors that connections never use: the receipt log and its checkpoints,
//!   the approvals store, the runtime, [`FDS_PER_RUN`] per execution slot (pipes, pidfd, memfd,
//!   Landlock ruleset, cgroup, namespaces, package verification), the operators' share and the
//!   refusals in flight;
//! - a connection over the per-uid cap is answered 429 `too_many_connections`, over the total
//!   cap 503 `connections_full`, each with a JSON body and `Retry-After`, written at once without
//!   reading the request, then closed: a refusal never waits for the peer;
//! - before refusing, the oldest **idle** keep-alive connection (a response completed, no
//!   request in progress) is closed to make room: of the same uid at the per-uid cap, of anyone
//!   at the total cap. A connection that has not yet sent a whole request head is never evicted
//!   (it may be a client about to write); hyper's header read timeout (`read_timeout_ms`) cuts it;
//! - idle keep-alive connections are closed after `idle_timeout_ms`;
//! - operators (`[identity]` operator uids and gids) may open `operator_connections` more than the
//!   total cap, so health and operator actions stay reachable while other uids fill the Hall.
//!   The per-uid cap applies to operators too: a flood from an operator uid crowds out only
//!   that uid.
//!
//! Pure parts (limits, the registry's bookkeeping) are unit tested; the accept loop in
//! `server::serve` wires them to sockets.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::config::ServerSection;

/// Descriptors one execution slot may use at once: the worker's pipes, pidfd, stdin memfd,
/// Landlock ruleset, cgroup directory, namespace handles and the package verification's open
/// files. An estimate with headroom (a run measured about ten).
pub const FDS_PER_RUN: u64 = 16;

/// Descriptors the Hall needs whatever it serves: standard streams, the listener, the async
/// runtime's epoll and wakeups, signal handling, the receipt log (segment, lock, directory,
/// checkpoint and snapshot files being written), the approvals store, the Python probe and the
/// spare descriptor kept for refusing when accept fails with EMFILE.
pub const FDS_BASE: u64 = 64;

/// Refusals that may wait at once for their peer to read the answer (each holds a descriptor
/// for at most [`LINGER`]); beyond that a refusal is written and closed at once.
pub const MAX_LINGERING: usize = 32;

/// How long a refused connection stays open for its peer to send its request and read the
/// answer (a peer that has not written yet would otherwise see EPIPE instead of the answer).
pub const LINGER: Duration = Duration::from_millis(250);

/// The largest derived `max_connections`: beyond it, memory rather than descriptors is the
/// bound. Set `[server] max_connections` explicitly to go higher.
pub const DEFAULT_MAX_CONNECTIONS: u64 = 4096;

/// The descriptor limit before and after [`raise_nofile_limit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct NofileLimit {
    pub soft_before: u64,
    pub soft: u64,
    pub hard: u64,
}

/// Raises the `RLIMIT_NOFILE` soft limit to the hard limit (the systemd-recommended way for a
/// daemon that needs many descriptors; workers get their own limit from the envelope).
pub fn raise_nofile_limit() -> std::io::Result<NofileLimit> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    let mut now = soft;
    if soft < hard {
        match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => now = hard,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(NofileLimit {
        soft_before: soft,
        soft: now,
        hard,
    })
}

/// The current soft `RLIMIT_NOFILE`.
pub fn nofile_soft() -> u64 {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(s, _)| s)
        .unwrap_or(1024)
}

/// The connection caps in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct ConnLimits {
    /// Connections at once, all peers (operators may exceed it by `operator_connections`).
    pub max_connections: usize,
    pub max_connections_per_uid: usize,
    pub operator_connections: usize,
    #[serde(skip)]
    pub idle_timeout: Duration,
    /// Descriptors kept out of the connections' reach.
    pub reserve: u64,
    /// The soft `RLIMIT_NOFILE` they were derived from.
    pub nofile: u64,
}

impl ConnLimits {
    /// Descriptors never given to connections, for `server`'s execution slots.
    pub fn reserve(server: &ServerSection) -> u64 {
        FDS_BASE
            + FDS_PER_RUN * server.max_concurrent as u64
            + server.operator_connections as u64
            + MAX_LINGERING as u64
    }

    /// The caps for `server` under a soft descriptor limit of `nofile`: configured values are
    /// checked against it, unset ones derived from it (`max_connections`: what the limit leaves
    /// after the reserve, at most [`DEFAULT_MAX_CONNECTIONS`]; per uid: a quarter of that).
    pub fn derive(server: &ServerSection, nofile: u64) -> Result<Self, String> {
        let reserve = Self::reserve(server);
        let available = nofile.saturating_sub(reserve);
        let max = match server.max_connections {
            Some(n) if n as u64 > available => {
                return Err(format!(
                    "[server] max_connections = {n} does not fit the descriptor limit: \
                     RLIMIT_NOFILE is {nofile} and {reserve} descriptors are reserved \
                     ({FDS_BASE} for the Hall and its receipt log, {FDS_PER_RUN} for each of \
                     max_concurrent = {} execution slots, operator_connections = {}, \
                     {MAX_LINGERING} for refusals), which leaves {available}; lower it or raise \
                     the limit (systemd: LimitNOFILE=)",
                    server.max_concurrent, server.operator_connections
                ));
            }
            Some(n) => n,
            None if available < 16 => {
                return Err(format!(
                    "the descriptor limit is too low to serve: RLIMIT_NOFILE is {nofile} and \
                     {reserve} descriptors are reserved ({FDS_BASE} for the Hall and its receipt \
                     log, {FDS_PER_RUN} for each of max_concurrent = {} execution slots, \
                     operator_connections = {}, {MAX_LINGERING} for refusals), which leaves \
                     {available} for connections (at least 16 needed); raise the limit \
                     (systemd: LimitNOFILE=) or lower [server] max_concurrent",
                    server.max_concurrent, server.operator_connections
                ));
            }
            None => available.min(DEFAULT_MAX_CONNECTIONS) as usize,
        };
        let per_uid = match server.max_connections_per_uid {
            Some(n) if n > max => {
                return Err(format!(
                    "[server] max_connections_per_uid = {n} is more than max_connections = {max}"
                ));
            }
            Some(n) => n,
            None => (max / 4).max(1),
        };
        Ok(ConnLimits {
            max_connections: max,
            max_connections_per_uid: per_uid,
            operator_connections: server.operator_connections,
            idle_timeout: Duration::from_millis(server.idle_timeout_ms),
            reserve,
            nofile,
        })
    }
}

/// Why a connection was refused; the metric label and the answer follow from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The peer's uid holds `max_connections_per_uid` busy connections.
    PerUid { uid: u32, limit: usize },
    /// The Hall holds `max_connections` connections and none is idle.
    Total { limit: usize },
    /// `accept` failed for lack of descriptors; answered through the spare descriptor.
    Descriptors,
}

impl Refusal {
    /// The `reason` label of `wcp_hall_connections_refused_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::PerUid { .. } => "per_uid",
            Refusal::Total { .. } => "total",
            Refusal::Descriptors => "descriptors",
        }
    }

    /// The whole HTTP answer: status, JSON `{"code", "message"}`, `Retry-After`, then close.
    pub fn answer(&self) -> Vec<u8> {
        let (status, code, message) = match self {
            Refusal::PerUid { uid, limit } => (
                "429 Too Many Requests",
                "too_many_connections",
                format!(
                    "uid {uid} already holds {limit} connections to the Hall, the most one uid \
                     may hold ([server] max_connections_per_uid); reuse or close connections and \
                     retry later"
                ),
            ),
            Refusal::Total { limit } => (
                "503 Service Unavailable",
                "connections_full",
                format!(
                    "the Hall holds its maximum of {limit} connections ([server] \
                     max_connections) and none is idle; retry later"
                ),
            ),
            Refusal::Descriptors => (
                "503 Service Unavailable",
                "out_of_descriptors",
                "the Hall has no file descriptor left for another connection; retry later"
                    .to_owned(),
            ),
        };
        let body = serde_json::json!({"code": code, "message": message}).to_string();
        format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
             retry-after: 1\r\napi-version: {}\r\nconnection: close\r\n\r\n{body}",
            body.len(),
            super::api::API_VERSION,
        )
        .into_bytes()
    }
}

#[derive(Debug)]
struct Entry {
    uid: u32,
    /// Requests in progress (HTTP/1.1 without pipelining: 0 or 1).
    busy: u32,
    /// Since when the connection is idle between requests; `None` before its first request
    /// completed or while one is in progress.
    idle_since: Option<Instant>,
    /// Counted beyond `max_connections` (an operator's reserved share).
    operator_slot: bool,
    close: Arc<Notify>,
}

#[derive(Debug, Default)]
struct Registry {
    open: HashMap<u64, Entry>,
    per_uid: HashMap<u32, usize>,
    /// Connections counted against `max_connections`.
    total: usize,
    /// Operator connections beyond it.
    operator_extra: usize,
}

impl Registry {
    /// Forgets `id` (closing or closed); true if it was still counted.
    fn remove(&mut self, id: u64) -> bool {
        let Some(e) = self.open.remove(&id) else {
            return false;
        };
        if let Some(n) = self.per_uid.get_mut(&e.uid) {
            *n -= 1;
            if *n == 0 {
                self.per_uid.remove(&e.uid);
            }
        }
        if e.operator_slot {
            self.operator_extra -= 1;
        } else {
            self.total -= 1;
        }
        true
    }

    /// Closes the connection idle the longest (of `uid`, when given); true if there was one.
    fn evict_oldest_idle(&mut self, uid: Option<u32>) -> bool {
        let victim = self
            .open
            .iter()
            .filter(|(_, e)| e.busy == 0 && uid.is_none_or(|u| e.uid == u))
            .filter_map(|(id, e)| e.idle_since.map(|t| (t, *id)))
            .min()
            .map(|(_, id)| id);
        match victim {
            Some(id) => {
                if let Some(e) = self.open.get(&id) {
                    e.close.notify_one();
                }
                self.remove(id)
            }
            None => false,
        }
    }
}

/// Counts (and closes on demand) the Hall's open connections.
#[derive(Debug)]
pub struct Connections {
    limits: ConnLimits,
    registry: Mutex<Registry>,
    next_id: AtomicU64,
    /// Connections closed to admit others, and closed for idling.
    evicted: AtomicU64,
    idled_out: AtomicU64,
}

/// What `admit` did besides admitting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admitted {
    Plain,
    /// An idle connection was closed to make room.
    Evicted,
    /// Beyond `max_connections`, in the operators' share.
    OperatorShare,
}

impl Connections {
    pub fn new(limits: ConnLimits) -> Arc<Self> {
        Arc::new(Connections {
            limits,
            registry: Mutex::new(Registry::default()),
            next_id: AtomicU64::new(1),
            evicted: AtomicU64::new(0),
            idled_out: AtomicU64::new(0),
        })
    }

    pub fn limits(&self) -> &ConnLimits {
        &self.limits
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Admits a new connection from `uid`, or says why not. Never waits.
    pub fn admit(self: &Arc<Self>, uid: u32, operator: bool) -> Result<(Conn, Admitted), Refusal> {
        let l = &self.limits;
        let mut r = self.lock();
        let mut how = Admitted::Plain;
        if r.per_uid.get(&uid).copied().unwrap_or(0) >= l.max_connections_per_uid {
            if !r.evict_oldest_idle(Some(uid)) {
                return Err(Refusal::PerUid {
                    uid,
                    limit: l.max_connections_per_uid,
                });
            }
            self.evicted.fetch_add(1, Ordering::Relaxed);
            how = Admitted::Evicted;
        }
        let mut operator_slot = false;
        if r.total >= l.max_connections {
            if operator && r.operator_extra < l.operator_connections {
                operator_slot = true;
                how = Admitted::OperatorShare;
            } else if r.evict_oldest_idle(None) {
                self.evicted.fetch_add(1, Ordering::Relaxed);
                how = Admitted::Evicted;
            } else {
                return Err(Refusal::Total {
                    limit: l.max_connections,
                });
            }
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let close = Arc::new(Notify::new());
        r.open.insert(
            id,
            Entry {
                uid,
                busy: 0,
                idle_since: None,
                operator_slot,
                close: close.clone(),
            },
        );
        *r.per_uid.entry(uid).or_default() += 1;
        if operator_slot {
            r.operator_extra += 1;
        } else {
            r.total += 1;
        }
        Ok((
            Conn {
                id,
                connections: self.clone(),
                close,
            },
            how,
        ))
    }

    /// Closes connections idle for longer than `idle_timeout`; returns how many.
    pub fn close_idle(&self, now: Instant) -> usize {
        let timeout = self.limits.idle_timeout;
        let mut r = self.lock();
        let due: Vec<u64> = r
            .open
            .iter()
            .filter(|(_, e)| {
                e.busy == 0
                    && e.idle_since
                        .is_some_and(|t| now.saturating_duration_since(t) >= timeout)
            })
            .map(|(id, _)| *id)
            .collect();
        for id in &due {
            if let Some(e) = r.open.get(id) {
                e.close.notify_one();
            }
            r.remove(*id);
        }
        self.idled_out
            .fetch_add(due.len() as u64, Ordering::Relaxed);
        due.len()
    }

    /// Open connections now (operators' share included).
    pub fn open(&self) -> usize {
        let r = self.lock();
        r.total + r.operator_extra
    }

    /// Connections closed to admit others, and closed after idling, since start.
    pub fn closed_counts(&self) -> (u64, u64) {
        (
            self.evicted.load(Ordering::Relaxed),
            self.idled_out.load(Ordering::Relaxed),
        )
    }
}

/// One admitted connection; dropping it (the connection task ended) frees its place.
#[derive(Debug)]
pub struct Conn {
    id: u64,
    connections: Arc<Connections>,
    close: Arc<Notify>,
}

impl Conn {
    /// Resolves when the Hall wants this connection closed (evicted or idle too long).
    pub async fn closed(&self) {
        self.close.notified().await;
    }

    /// A request started on this connection.
    pub fn begin(&self) {
        let mut r = self.connections.lock();
        if let Some(e) = r.open.get_mut(&self.id) {
            e.busy += 1;
            e.idle_since = None;
        }
    }

    /// A response has been written in full (its body dropped).
    pub fn end(&self) {
        let mut r = self.connections.lock();
        if let Some(e) = r.open.get_mut(&self.id) {
            e.busy = e.busy.saturating_sub(1);
            if e.busy == 0 {
                e.idle_since = Some(Instant::now());
            }
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.connections.lock().remove(self.id);
    }
}

/// Logs at most one WARN per `every`, counting what it held back.
#[derive(Debug)]
pub struct RateLimitedWarn {
    every: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimitedWarn {
    pub fn new(every: Duration) -> Self {
        RateLimitedWarn {
            every,
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(n)` when a WARN is due now (`n` = occurrences held back since the last one).
    pub fn due(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(t) if now.saturating_duration_since(t) < self.every => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max: usize, per_uid: usize, operators: usize) -> ConnLimits {
        ConnLimits {
            max_connections: max,
            max_connections_per_uid: per_uid,
            operator_connections: operators,
            idle_timeout: Duration::from_millis(100),
            reserve: 0,
            nofile: 1024,
        }
    }

    #[test]
    fn caps_are_derived_from_the_descriptor_limit_and_checked() {
        let server = ServerSection {
            max_concurrent: 4,
            ..ServerSection::default()
        };
        let reserve = ConnLimits::reserve(&server);
        assert_eq!(reserve, 64 + 4 * 16 + 8 + 32);
        let l = ConnLimits::derive(&server, 1024).unwrap();
        assert_eq!(l.max_connections, 1024 - reserve as usize);
        assert_eq!(l.max_connections_per_uid, l.max_connections / 4);
        let l = ConnLimits::derive(&server, 1 << 20).unwrap();
        assert_eq!(l.max_connections, DEFAULT_MAX_CONNECTIONS as usize);
        let err = ConnLimits::derive(&server, 100).unwrap_err();
        assert!(
            err.contains("RLIMIT_NOFILE is 100") && err.contains("LimitNOFILE="),
            "{err}"
        );
        let big = ServerSection {
            max_connections: Some(5000),
            ..server.clone()
        };
        let err = ConnLimits::derive(&big, 1024).unwrap_err();
        assert!(err.contains("max_connections = 5000"), "{err}");
        assert_eq!(
            ConnLimits::derive(&big, 1 << 16).unwrap().max_connections,
            5000
        );
        let odd = ServerSection {
            max_connections: Some(10),
            max_connections_per_uid: Some(11),
            ..server
        };
        let err = ConnLimits::derive(&odd, 1024).unwrap_err();
        assert!(err.contains("max_connections_per_uid = 11"), "{err}");
    }

    #[test]
    fn per_uid_then_total_caps_with_an_operator_share() {
        let c = Connections::new(limits(3, 2, 1));
        let a1 = c.admit(1, false).unwrap().0;
        let _a2 = c.admit(1, false).unwrap().0;
        assert_eq!(
            c.admit(1, false).unwrap_err(),
            Refusal::PerUid { uid: 1, limit: 2 }
        );
        let _b1 = c.admit(2, false).unwrap().0;
        assert_eq!(c.admit(3, false).unwrap_err(), Refusal::Total { limit: 3 });
        // An operator gets the reserved share, once.
        let (op, how) = c.admit(0, true).unwrap();
        assert_eq!(how, Admitted::OperatorShare);
        assert_eq!(c.open(), 4);
        assert_eq!(c.admit(0, true).unwrap_err(), Refusal::Total { limit: 3 });
        drop(op);
        drop(a1);
        assert_eq!(c.open(), 2);
        assert!(c.admit(3, false).is_ok());
    }

    #[tokio::test]
    async fn idle_connections_make_room_and_time_out_busy_ones_never() {
        let c = Connections::new(limits(2, 2, 0));
        let (a, _) = c.admit(1, false).unwrap();
        let (b, _) = c.admit(2, false).unwrap();
        // Neither has completed a request: nothing to evict.
        assert!(c.admit(3, false).is_err());
        a.begin();
        a.end();
        b.begin();
        let (_c3, how) = c.admit(3, false).unwrap();
        assert_eq!(how, Admitted::Evicted);
        // a was told to close (the permit is stored), b (busy) was not.
        tokio::time::timeout(Duration::from_millis(100), a.closed())
            .await
            .expect("the idle connection is closed");
        assert!(
            tokio::time::timeout(Duration::from_millis(20), b.closed())
                .await
                .is_err()
        );
        drop(a);
        assert_eq!(c.open(), 2, "an evicted connection is not counted twice");
        // Idle timeout: only idle connections, only once due.
        b.end();
        assert_eq!(c.close_idle(Instant::now()), 0);
        assert_eq!(c.close_idle(Instant::now() + Duration::from_millis(150)), 1);
        assert_eq!(c.open(), 1);
        assert_eq!(c.closed_counts(), (1, 1));
    }

    #[test]
    fn refusals_are_complete_json_answers() {
        for (r, status, code) in [
            (
                Refusal::PerUid { uid: 7, limit: 2 },
                "429",
                "too_many_connections",
            ),
            (Refusal::Total { limit: 9 }, "503", "connections_full"),
            (Refusal::Descriptors, "503", "out_of_descriptors"),
        ] {
            let text = String::from_utf8(r.answer()).unwrap();
            assert!(text.starts_with(&format!("HTTP/1.1 {status} ")), "{text}");
            assert!(text.contains("retry-after: 1\r\n"), "{text}");
            let (head, body) = text.split_once("\r\n\r\n").unwrap();
            assert!(head.contains(&format!("content-length: {}", body.len())));
            let v: serde_json::Value = serde_json::from_str(body).unwrap();
            assert_eq!(v["code"], code);
            assert!(v["message"].as_str().unwrap().contains("retry"));
        }
    }

    #[test]
    fn warnings_are_rate_limited() {
        let mut w = RateLimitedWarn::new(Duration::from_secs(10));
        let t = Instant::now();
        assert_eq!(w.due(t), Some(0));
        assert_eq!(w.due(t + Duration::from_secs(1)), None);
        assert_eq!(w.due(t + Duration::from_secs(2)), None);
        assert_eq!(w.due(t + Duration::from_secs(11)), Some(2));
    }
}
