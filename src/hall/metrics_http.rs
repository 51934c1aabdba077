//! The optional TCP listener for Prometheus: `GET /metrics` and nothing else (every other path
//! answers 404), so a scraper never needs access to the Hall's API socket.
//!
//! Off by default. `[metrics] listen` (or `enabled = true`, which listens on 127.0.0.1:9464)
//! turns it on; an address that is not loopback is refused unless `allow_remote = true`. Under
//! systemd the socket comes from `wcp-hall-metrics.socket` instead (`FileDescriptorName=metrics`
//! in `LISTEN_FDNAMES`, taken in `lifecycle`), which works although the service has
//! `PrivateNetwork=yes` and `RestrictAddressFamilies=AF_UNIX`: a passed socket stays in the
//! network namespace it was created in, and only creating sockets is restricted. The same
//! loopback rule applies to it. See docs/metrics.md.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;

use super::Hall;

pub use crate::config::DEFAULT_METRICS_LISTEN as DEFAULT_LISTEN;

/// Scrape connections open at once; more are closed at once (a scraper needs one).
pub const MAX_CONNECTIONS: usize = 8;

/// A scrape request's headers must arrive within this time.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// A keep-alive connection is closed gracefully (after its request in progress) this long after
/// it was accepted, so idle connections cannot hold the slots forever.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);

pub use crate::config::MetricsSection;

/// The listener to serve, and how to name it in the log.
pub struct Opened {
    pub listener: std::net::TcpListener,
    pub describe: String,
}

/// The metrics listener: the socket systemd passed (`activated`), else the configured one bound
/// now, else none. Errors carry a `hint:` line.
pub fn open(
    section: &MetricsSection,
    activated: Option<std::net::TcpListener>,
) -> Result<Option<Opened>, String> {
    if let Some(listener) = activated {
        let addr = listener.local_addr().map_err(|e| {
            format!("cannot read the address of the metrics socket systemd passed: {e}")
        })?;
        section.check_reach(&addr, "the metrics socket systemd passed listens on")?;
        if section.enabled == Some(false) {
            tracing::warn!(
                "[metrics] enabled = false, but systemd passed the metrics socket: serving it; disable wcp-hall-metrics.socket to turn the listener off"
            );
        } else if section.listen.is_some() {
            tracing::info!(
                "[metrics] listen is ignored: systemd passed the metrics socket (wcp-hall-metrics.socket)"
            );
        }
        listener.set_nonblocking(true).map_err(|e| {
            format!("cannot configure the metrics socket systemd passed ({addr}): {e}")
        })?;
        return Ok(Some(Opened {
            listener,
            describe: format!("{addr} (systemd-activated)"),
        }));
    }
    if !section.is_on() {
        return Ok(None);
    }
    let addr = section.address()?;
    section.check_reach(&addr, "[metrics] listen")?;
    let listener = std::net::TcpListener::bind(addr).map_err(|e| {
        let hint = match e.raw_os_error() {
            Some(nix::libc::EAFNOSUPPORT | nix::libc::EPERM | nix::libc::EACCES) => {
                "this process may not create TCP sockets (the shipped wcp-hall.service has \
                 RestrictAddressFamilies=AF_UNIX and PrivateNetwork=yes): under systemd enable \
                 wcp-hall-metrics.socket instead and leave [metrics] listen unset"
            }
            Some(nix::libc::EADDRINUSE) => {
                "another process listens on that port: stop it or choose another [metrics] listen port"
            }
            Some(nix::libc::EADDRNOTAVAIL) => {
                "no interface of this host has that address: choose one it has (127.0.0.1 for local scrapes)"
            }
            _ => "check [metrics] listen (see docs/metrics.md)",
        };
        format!("cannot listen on {addr} for the metrics: {e}\nhint: {hint}")
    })?;
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("cannot configure the metrics listener on {addr}: {e}"))?;
    let bound = listener.local_addr().unwrap_or(addr);
    Ok(Some(Opened {
        listener,
        describe: bound.to_string(),
    }))
}

/// `GET /metrics`, and 404 for everything else.
pub fn app(hall: Arc<Hall>) -> Router {
    Router::new()
        .route("/metrics", get(super::server::metrics))
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                "not found: this listener serves only GET /metrics\n",
            )
                .into_response()
        })
        .with_state(hall)
}

/// Serves scrapes on `listener` until the task is aborted.
pub async fn serve(hall: Arc<Hall>, listener: tokio::net::TcpListener) {
    let app = app(hall);
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let mut accept_warn = super::conn::RateLimitedWarn::new(Duration::from_secs(10));
    let mut full_warn = super::conn::RateLimitedWarn::new(Duration::from_secs(10));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                if let Some(held_back) = accept_warn.due(std::time::Instant::now()) {
                    tracing::warn!(error = %e, similar_since_last_warning = held_back, "metrics listener: accept failed");
                }
                // Out of descriptors, most likely: a short pause, never a spin.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            if let Some(held_back) = full_warn.due(std::time::Instant::now()) {
                tracing::warn!(%peer, max = MAX_CONNECTIONS, similar_since_last_warning = held_back, "metrics listener: too many scrape connections; closed one");
            }
            drop(stream);
            continue;
        };
        let svc = TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), svc);
            tokio::pin!(conn);
            tokio::select! {
                ended = conn.as_mut() => {
                    if let Err(e) = ended {
                        tracing::debug!(error = %e, %peer, "metrics connection ended with an error");
                    }
                }
                () = tokio::time::sleep(CONNECTION_LIFETIME) => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(HEADER_TIMEOUT, conn).await;
                }
            }
            drop(slot);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(text: &str) -> Result<MetricsSection, String> {
        let s: MetricsSection = toml::from_str(text).map_err(|e| e.to_string())?;
        s.check()?;
        Ok(s)
    }

    #[test]
    fn off_by_default_and_loopback_by_default_when_on() {
        let s = section("").unwrap();
        assert!(!s.is_on());
        let s = section("enabled = true").unwrap();
        assert!(s.is_on());
        assert_eq!(s.address().unwrap(), DEFAULT_LISTEN);
        let s = section("listen = \"[::1]:9500\"").unwrap();
        assert!(s.is_on(), "listen alone turns it on");
        let s = section("enabled = false\nlisten = \"0.0.0.0:9464\"").unwrap();
        assert!(
            !s.is_on(),
            "enabled = false keeps it off (and unchecked for reach)"
        );
    }

    #[test]
    fn remote_addresses_need_allow_remote_and_bad_ones_are_refused_with_a_hint() {
        for addr in [
            "0.0.0.0:9464",
            "192.0.2.7:9464",
            "[::]:9464",
            "[2001:db8::1]:1",
        ] {
            let err = section(&format!("listen = \"{addr}\"")).unwrap_err();
            assert!(err.contains("not a loopback address"), "{err}");
            assert!(
                err.contains("\nhint: ") && err.contains("allow_remote"),
                "{err}"
            );
            assert!(section(&format!("listen = \"{addr}\"\nallow_remote = true")).is_ok());
        }
        assert!(section("listen = \"[::ffff:127.0.0.1]:9464\"").is_ok());
        for bad in ["localhost:9464", "127.0.0.1", "9464", "", "127.0.0.1:99999"] {
            let err = section(&format!("listen = \"{bad}\"")).unwrap_err();
            assert!(err.contains("is not an IP address and port"), "{err}");
            assert!(err.contains("\nhint: "), "{err}");
        }
        let err = section("listne = \"127.0.0.1:1\"").unwrap_err();
        assert!(err.contains("listne"), "{err}");
    }

    #[test]
    fn a_passed_socket_is_served_only_when_loopback_or_allowed() {
        let local = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let got = open(&MetricsSection::default(), Some(local))
            .unwrap()
            .unwrap();
        assert!(got.describe.ends_with("(systemd-activated)"));
        let any = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
        let err = open(&MetricsSection::default(), Some(any))
            .err()
            .expect("refused");
        assert!(
            err.contains("not a loopback address") && err.contains("hint:"),
            "{err}"
        );
        let any = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
        let allowed = MetricsSection {
            allow_remote: true,
            ..Default::default()
        };
        assert!(open(&allowed, Some(any)).unwrap().is_some());
        assert!(open(&MetricsSection::default(), None).unwrap().is_none());
    }

    #[test]
    fn a_port_in_use_is_a_startup_error_with_a_hint() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let s = MetricsSection {
            listen: Some(taken.local_addr().unwrap().to_string()),
            ..Default::default()
        };
        let err = open(&s, None).err().expect("in use");
        assert!(err.contains("another process listens"), "{err}");
        let s = MetricsSection {
            listen: Some("127.0.0.1:0".into()),
            ..Default::default()
        };
        let got = open(&s, None).unwrap().unwrap();
        assert_ne!(got.listener.local_addr().unwrap().port(), 0);
    }
}
