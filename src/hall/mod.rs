//! The Hall daemon (`wcp-hall serve`): the only part of the crate that owns sockets, threads and
//! async. Everything it decides comes from the library (router, rules, registry, the policy
//! gate, attestation); this module adds identity from the kernel, admission control, human
//! approvals, running the worker and recording it, the HTTP API, reload and shutdown.
//!
//! It serves with [`crate::snapshot`] (the immutable configuration snapshot, its atomic reload,
//! and the peer → tenants map), which the offline CLI commands load too.
//!
//! - [`limits`]: bounded concurrency and queue (429 + Retry-After).
//! - [`conn`]: the descriptor limit and the caps on open connections (total, per uid, idle).
//! - [`approvals`]: WCP §5.8 pending approvals, persisted.
//! - [`dispatch`]: the one orchestrator of a request's steps.
//! - [`catalog`]: what a tenant may route (each capability routed, never acted on; worker input
//!   schemas), for agent hosts.
//! - [`runner`]: verify → intent receipt → bootstrap → privilege envelope → outcome receipt.
//! - [`cgroup`]: the Hall's own delegated cgroup under systemd, beside which worker runs get theirs.
//! - [`server`]: routes, handlers and the accept loop.
//! - [`lifecycle`]: socket binding or activation, signals, readiness and watchdog notification.
//! - [`metrics`], [`metrics_http`]: the Prometheus exposition, and its optional TCP listener.
//! - [`otel`]: OpenTelemetry traces of dispatches over OTLP/HTTP, when configured.

pub mod api;
pub mod approvals;
pub mod catalog;
pub mod cgroup;
pub mod conn;
pub mod dispatch;
pub mod lifecycle;
pub mod limits;
pub mod metrics;
pub mod metrics_http;
pub mod otel;
pub mod runner;
pub mod server;
pub mod warm;
pub mod wire;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::snapshot::identity::Peer;
use crate::snapshot::{Current, Loaded};
use crate::wcp::{RouteDecision, RouteInput};
use approvals::ApprovalStore;
use limits::Limits;
use metrics::Metrics;

/// An allowed, non-dry-run request to execute.
pub struct RunRequest {
    pub peer: Peer,
    pub input: RouteInput,
    pub decision: RouteDecision,
    /// The policy gate's full answer, when it was consulted (for the evidence receipt).
    pub policy: Option<crate::policy::gate::GateDecision>,
    /// The selected worker's package verification from this dispatch's routing, if the router
    /// verified it (otherwise the runner verifies).
    pub verified: Option<crate::attest::report::VerificationReport>,
    /// What the env's profile demands of the run (`None`: no profile; the envelope's defaults).
    pub run_limits: Option<(crate::envelope::Limits, crate::envelope::Minimums)>,
    pub loaded: Arc<Loaded>,
    /// The dispatch span the runner's step spans hang on (nothing when tracing is off).
    pub trace: otel::Trace,
    /// The registry service's status this dispatch used (for the receipts), when enabled.
    pub registry: Option<crate::registry_service::RegistryEvidence>,
}

/// What a run produced.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    /// The worker exited successfully with a JSON result.
    pub succeeded: bool,
    /// The worker's result (its stdout parsed as JSON), when it produced one.
    pub result: Option<Value>,
    /// The run's facts: exit status, limits hit, envelope report, receipt reference.
    pub execution: runner::RunExecution,
    /// Wall time of each phase the runner went through (`metrics::PHASES`), for the metrics.
    pub phases: Vec<(&'static str, std::time::Duration)>,
    /// The worker's WCP blast (from its record), which the chain's blast grows by when it ran.
    pub worker_blast: u32,
}

/// The daemon's shared state.
pub struct Hall {
    pub current: Current,
    /// The evidence receipt log: every run's intent and outcome and every denial, durable before
    /// the caller hears of it.
    pub receipts: Arc<crate::receipt::ReceiptLog>,
    pub limits: Limits,
    /// Open connections and their caps (see `conn`).
    pub connections: Arc<conn::Connections>,
    pub approvals: ApprovalStore,
    pub metrics: Metrics,
    pub started: Instant,
    /// WCP chain blast per correlation id (WCP §7: a chain's dispatches add up).
    pub chains: std::sync::Mutex<crate::policy::blast::ChainBlast>,
    /// Runs allowed decisions (attestation, envelope, receipts).
    pub runner: Arc<runner::HallRunner>,
    /// The uids a worker process can have: the Hall's own (a non-root Hall's workers, in a
    /// user namespace) and `[envelope] worker_user` (a root Hall's). A peer with another uid
    /// cannot be a worker (`envelope::peer`).
    pub worker_uids: Vec<u32>,
    /// The cgroup subtree the Hall may create worker cgroups in, and how it was obtained.
    pub cgroup: cgroup::Delegation,
    /// The OTLP trace exporter, when `[tracing]` (or `OTEL_EXPORTER_OTLP_*`) configures one.
    pub tracing: Option<otel::Tracing>,
    /// The worker registry service's cache and refresher, when `[registry_service]` enables it
    /// at start (`registry_service`; dispatches read its cache only).
    pub registry_service: Option<Arc<crate::registry_service::Service>>,
    stopping: AtomicBool,
}

impl Hall {
    /// Builds the shared state from a loaded snapshot.
    pub fn new(
        current: Current,
        approvals: ApprovalStore,
        receipts: Arc<crate::receipt::ReceiptLog>,
        connections: Arc<conn::Connections>,
        runner: Arc<runner::HallRunner>,
    ) -> Self {
        let server = current.get().config.server.clone();
        Hall {
            limits: Limits::new(
                server.max_concurrent,
                server.max_concurrent_per_tenant,
                server.max_queue,
                Duration::from_millis(server.queue_timeout_ms),
            ),
            current,
            receipts,
            connections,
            approvals,
            metrics: Metrics::default(),
            started: Instant::now(),
            chains: std::sync::Mutex::new(crate::policy::blast::ChainBlast::new(100_000)),
            runner,
            worker_uids: vec![nix::unistd::geteuid().as_raw()],
            cgroup: cgroup::Delegation {
                subtree: None,
                controllers: Vec::new(),
                note: "not prepared".into(),
            },
            tracing: None,
            registry_service: None,
            stopping: AtomicBool::new(false),
        }
    }

    pub fn is_shutting_down(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    pub fn begin_shutdown(&self) {
        self.stopping.store(true, Ordering::Release);
    }

    /// Reloads configuration, rules and registry; keeps the old snapshot on error.
    pub fn reload(&self) -> Result<u64, String> {
        let before = self.current.get().config.server.clone();
        let before_metrics = self.current.get().config.metrics.clone();
        match self.current.reload() {
            Ok(loaded) => {
                // The socket and the admission limits are set up once at start; say so rather
                // than pretend a changed [server] section took effect.
                if loaded.config.server != before {
                    tracing::warn!(
                        "[server] changed: socket and concurrency limits apply after a restart"
                    );
                }
                if loaded.config.metrics != before_metrics {
                    tracing::warn!(
                        "[metrics] changed: the metrics listener changes after a restart"
                    );
                }
                // Nothing started before a reload serves a request after it (keys, packages and
                // profiles may all have changed).
                if let Some(w) = &self.runner.warm {
                    w.reconfigure(loaded.config.warm.clone());
                }
                self.metrics
                    .inc("wcp_hall_reloads_total", &[("result", "ok")]);
                tracing::info!(generation = loaded.generation, "configuration reloaded");
                if self.current.probes_python() {
                    lifecycle::log_python(&loaded);
                }
                Ok(loaded.generation)
            }
            Err(e) => {
                self.metrics
                    .inc("wcp_hall_reloads_total", &[("result", "failed")]);
                tracing::error!(error = %e, "reload failed; keeping the previous configuration");
                Err(format!(
                    "reload failed, the previous configuration stays active: {e}"
                ))
            }
        }
    }
}
