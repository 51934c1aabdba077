//! The one orchestrator of a governed request: identity → admission → route → (approval) →
//! run → answer. Only this module decides the order of the steps; the router, the approvals
//! store and the runner never call each other.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{Value, json};
use tracing::Instrument as _;

pub use super::api::RawJson;
use super::api::{ApiError, raw_json};
use super::approvals::{Approval, ApprovalStatus, now_ms, rfc3339_ms};
use super::otel;
use super::runner;
use super::{Hall, RunRequest};
use crate::clock::DEFAULT_TASK_ID;
use crate::policy::gate::GateDecision;
use crate::policy::request::CallerIdentity;
use crate::receipt::Dispatch;
use crate::receipt::model::{Approval as ReceiptApproval, DecisionSummary};
use crate::registry_service::{RegistryEvidence, Verdict, gate as registry_gate};
use crate::snapshot::Loaded;
use crate::snapshot::identity::Peer;
use crate::wcp::{DenyCode, DenyReason, RouteDecision, RouteInput};

/// The answer to `POST /wcp/dispatch` (and to a poll of a resolved approval).
#[derive(Debug, Clone, Serialize)]
pub struct DispatchResponse {
    /// `denied`, `dry_run`, `completed`, `failed` or `pending_approval`.
    pub status: &'static str,
    pub denied: bool,
    pub supervisor_required: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub supervisor_level: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending_approval_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval_expires_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub escalation_context: Option<Value>,
    /// The RouteDecision this answer rests on.
    pub decision: RawJson,
    /// The policy gate's full answer (outcome, supervisor level, policy version, the
    /// determining policies and their reasons, profile, WCP blast assessment), when consulted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<RawJson>,
    /// The worker registry service's status used, when `[registry_service]` is enabled (its
    /// `warning` says when a dispatch proceeded on stale data).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registry_service: Option<RegistryEvidence>,
    /// The worker's result (its stdout as JSON) when it ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// What the runner reports about the run (exit, limits, envelope report, receipt).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub execution: Option<RawJson>,
    /// The seq of the receipt `execution` names, for logs and spans (not part of the JSON).
    #[serde(skip)]
    pub receipt_seq: Option<u64>,
}

/// `raw` as a `Value` (for what is stored, not sent: an approval's final outcome).
fn raw_to_value(raw: &RawJson) -> Value {
    serde_json::from_str(raw.get()).unwrap_or(Value::Null)
}

impl DispatchResponse {
    /// Carries a receipt reference (`{seq, receipt_hash, ...}`) as its `execution`.
    fn with_receipt(mut self, receipt: &Value) -> Self {
        self.receipt_seq = receipt["seq"].as_u64();
        self.execution = Some(raw_json(&json!({ "receipt": receipt })));
        self
    }
}

/// Whether a denial is one a human may overturn (WCP §5.8).
pub fn needs_human(decision: &RouteDecision) -> bool {
    matches!(
        decision.deny_code(),
        Some(DenyCode::DenyRequiresHumanApproval | DenyCode::DenyRequiresHuman)
    )
}

/// What a decision that needs a human asks for: (reason, supervisor level), from the deny
/// reason's extras, defaulting to `REQUIRE_HUMAN` and `gatekeeper`.
pub fn human_request(decision: &RouteDecision) -> (&str, &str) {
    let extra = decision.deny_reason_if_denied.as_ref().map(|r| &r.extra);
    let text = |k: &str| extra.and_then(|e| e.get(k)).and_then(Value::as_str);
    (
        text("reason").unwrap_or("REQUIRE_HUMAN"),
        text("supervisor_level").unwrap_or(crate::policy::SupervisorLevel::Gatekeeper.as_str()),
    )
}

/// The key the per-tenant limit uses: the tenant when the peer may act as it, else the uid.
pub fn admission_key(loaded: &Loaded, peer: &Peer, tenant_id: &str) -> String {
    if loaded.identity.tenants_for(peer).contains(tenant_id) {
        format!("tenant:{tenant_id}")
    } else {
        format!("uid:{}", peer.uid)
    }
}

/// A decision and, when the policy gate was consulted, its full answer.
#[derive(Debug, Clone, Serialize)]
pub struct Routed {
    pub decision: RouteDecision,
    pub policy: Option<GateDecision>,
    /// The selected worker's package verification from routing, when the router verified it:
    /// the runner runs its store copy without verifying again.
    #[serde(skip)]
    pub verified: Option<crate::attest::report::VerificationReport>,
    /// What the env's profile demands of a run, resolved with the decision.
    #[serde(skip)]
    pub run_limits: Option<(crate::envelope::Limits, crate::envelope::Minimums)>,
    /// The registry service's check of the selected worker (worker id, what was used), when
    /// `[registry_service]` is enabled.
    #[serde(skip)]
    pub registry: Option<(String, RegistryEvidence)>,
}

/// Routes `input` for `peer` on the snapshot `loaded` (pure apart from minting ids): the peer's
/// tenants, the env's profile (extra controls, gate on every dispatch) and the policy gate with
/// the caller's identity and the chain's blast so far.
pub fn route(
    hall: &Hall,
    loaded: &Loaded,
    peer: &Peer,
    input: &RouteInput,
    approval: Option<&str>,
) -> Routed {
    let config = loaded
        .identity
        .router_config_for(&loaded.router_config, peer);
    let caller = CallerIdentity {
        uid: peer.uid,
        gid: peer.gid,
        pid: peer.pid.and_then(|p| u32::try_from(p).ok()).unwrap_or(0),
    };
    let prior = hall
        .chains
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .prior(&input.correlation_id);
    let routed = loaded.route(
        input,
        config,
        Some(caller),
        prior,
        approval,
        DEFAULT_TASK_ID,
    );
    let mut routed = Routed {
        decision: routed.decision,
        policy: routed.policy,
        verified: routed.verified,
        run_limits: routed.run_limits,
        registry: None,
    };
    check_registry(hall, loaded, &mut routed);
    routed
}

/// The registry service gate (`registry_service::gate`), after routing allowed a worker: from
/// the cache alone, never a network call. A refusal turns the decision into a denial with the
/// gate's code (`DENY_WORKER_BANNED`, `DENY_WORKER_REVOKED`, `DENY_REGISTRY_STATUS_STALE`,
/// `DENY_WORKER_ATTESTATION_MISSING`, `DENY_WORKER_TAMPERED`); the status used is kept for
/// the answer and the receipts either way. The gate only ever denies.
fn check_registry(hall: &Hall, loaded: &Loaded, routed: &mut Routed) {
    let section = &loaded.config.registry_service;
    if !section.enabled || routed.decision.denied {
        return;
    }
    let Some(species) = routed.decision.selected_worker_species_id.clone() else {
        return;
    };
    let report = routed.verified.as_ref().filter(|r| r.ok);
    let worker_id = report.map(|r| r.worker_id.clone()).or_else(|| {
        loaded
            .registry
            .records_of(&species)
            .next()
            .map(|r| r.worker_id.clone())
    });
    let hash = report.and_then(|r| r.package_hash.clone());
    let policy = registry_gate::Policy {
        max_staleness_ms: section.max_staleness_seconds.saturating_mul(1000),
        on_stale: section.on_stale.for_env(routed.decision.env),
    };
    let unavailable = |code: DenyCode, message: String| Verdict::Deny {
        code,
        message,
        evidence: RegistryEvidence::unavailable(),
    };
    let verdict = match (&hall.registry_service, &worker_id, &hash) {
        (Some(service), Some(w), Some(h)) => service.check(w, h, policy, now_ms()),
        (None, _, _) => unavailable(
            DenyCode::DenyRegistryStatusStale,
            "[registry_service] was enabled by a reload; the registry service starts with the Hall: restart it. Failing closed.".into(),
        ),
        _ => unavailable(
            DenyCode::DenyWorkerHashUnavailable,
            format!(
                "Worker '{species}' has no verified package digest to check against the registry service."
            ),
        ),
    };
    let worker_id = worker_id.unwrap_or_default();
    match verdict {
        Verdict::Pass(evidence) => routed.registry = Some((worker_id, evidence)),
        Verdict::Deny {
            code,
            message,
            evidence,
        } => {
            let d = &mut routed.decision;
            d.denied = true;
            if code == DenyCode::DenyWorkerTampered {
                d.worker_attestation_checked = true;
                d.worker_attestation_valid = Some(false);
            }
            let mut extra = serde_json::Map::new();
            extra.insert("worker_species_id".into(), Value::from(species));
            extra.insert(
                "registry_status".into(),
                Value::from(evidence.status.clone()),
            );
            d.deny_reason_if_denied = Some(DenyReason {
                code,
                message,
                extra,
            });
            routed.verified = None;
            routed.run_limits = None;
            routed.registry = Some((worker_id, evidence));
        }
    }
}

fn record_decision(hall: &Hall, decision: &RouteDecision) {
    match decision.deny_code() {
        Some(code) => hall.metrics.inc(
            "wcp_hall_decisions_total",
            &[("outcome", "denied"), ("code", code.as_str())],
        ),
        None => hall.metrics.inc(
            "wcp_hall_decisions_total",
            &[("outcome", "allowed"), ("code", "")],
        ),
    }
}

fn response(status: &'static str, routed: Routed) -> DispatchResponse {
    let Routed {
        decision,
        policy,
        registry,
        ..
    } = routed;
    answer(status, &decision, policy.as_ref(), registry.map(|(_, e)| e))
}

/// The answer for `decision` (and the policy gate's answer, the registry service's evidence).
fn answer(
    status: &'static str,
    decision: &RouteDecision,
    policy: Option<&GateDecision>,
    registry: Option<RegistryEvidence>,
) -> DispatchResponse {
    DispatchResponse {
        status,
        denied: decision.denied,
        decision: raw_json(decision),
        policy: policy.map(raw_json),
        supervisor_required: false,
        supervisor_level: None,
        pending_approval_id: None,
        approval_expires_at: None,
        escalation_context: None,
        registry_service: registry,
        result: None,
        execution: None,
        receipt_seq: None,
    }
}

/// `POST /wcp/dispatch`: the whole governed request.
///
/// `approval_wait_ms` (the caller's `?approval_wait_ms=`) shortens how long a request that
/// needs a human waits for the resolution before answering `pending_approval`; it never
/// lengthens `[approvals] wait_ms`.
pub async fn dispatch(
    hall: Arc<Hall>,
    peer: Peer,
    input: RouteInput,
    raw: Value,
    approval_wait_ms: Option<u64>,
    incoming: otel::Incoming,
) -> Result<DispatchResponse, ApiError> {
    let span = otel::DispatchSpan::start(
        hall.tracing.as_ref(),
        &incoming,
        vec![
            otel::kv("wcp.capability_id", input.capability_id.clone()),
            otel::kv("wcp.tenant_id", input.tenant_id.clone()),
            otel::kv("wcp.correlation_id", input.correlation_id.clone()),
            otel::kv("wcp.env", input.env.as_str()),
            otel::kv("wcp.dry_run", input.dry_run),
        ],
    );
    let trace = span.trace();
    let log_span = request_log_span(&input.correlation_id, &trace);
    let out = dispatch_steps(hall, peer, input, raw, approval_wait_ms, &trace)
        .instrument(log_span.clone())
        .await;
    let _entered = log_span.enter();
    match &out {
        Ok(r) => tracing::debug!(status = r.status, receipt_seq = r.receipt_seq, "answered"),
        Err(e) => tracing::debug!(code = e.code, "answered with an error"),
    }
    match &out {
        Ok(r) => {
            trace.set(vec![otel::kv("wcp.status", r.status)]);
            if let Some(seq) = r.receipt_seq {
                trace.set(vec![otel::kv("wcp.receipt_seq", seq as i64)]);
            }
        }
        Err(e) => trace.error(e.code),
    }
    out
}

/// The log span of one request: every log line about it carries its correlation id and, when
/// it has one, its trace id (journald: `F_CORRELATION_ID`, `F_TRACE_ID`; JSON: the `span`
/// object; text: the `request{…}` prefix). Blocking steps enter it on their thread.
fn request_log_span(correlation_id: &str, trace: &otel::Trace) -> tracing::Span {
    let span = tracing::info_span!(
        "request",
        correlation_id = %correlation_id,
        trace_id = tracing::field::Empty
    );
    if let Some(ids) = trace.ids() {
        span.record("trace_id", ids.trace_id.as_str());
    }
    span
}

/// Runs `f` on a blocking thread inside the current log span.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, tokio::task::JoinError> {
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || span.in_scope(f)).await
}

async fn dispatch_steps(
    hall: Arc<Hall>,
    peer: Peer,
    input: RouteInput,
    raw: Value,
    approval_wait_ms: Option<u64>,
    trace: &otel::Trace,
) -> Result<DispatchResponse, ApiError> {
    let started = Instant::now();
    let loaded = hall.current.get();
    let admitting = otel::now();
    let permit = hall
        .limits
        .admit(&admission_key(&loaded, &peer, &input.tenant_id))
        .await
        .inspect_err(|_| {
            trace.step(
                "wcp.admission",
                admitting,
                vec![otel::kv("wcp.admitted", false)],
            )
        })
        .map_err(|e| ApiError::overloaded(e.to_string()))?;
    trace.step(
        "wcp.admission",
        admitting,
        vec![otel::kv("wcp.admitted", true)],
    );
    let routing = otel::now();
    let routed = route(&hall, &loaded, &peer, &input, None);
    trace.step("wcp.route", routing, route_attributes(&routed));
    trace.set(route_attributes(&routed));
    record_decision(&hall, &routed.decision);
    if let (Some(service), Some((worker_id, _)), false) = (
        &hall.registry_service,
        &routed.registry,
        routed.decision.denied,
    ) {
        service.count_decision(worker_id);
    }
    let out = if needs_human(&routed.decision) {
        // Waiting for a human must not hold an execution slot.
        drop(permit);
        let wait = loaded
            .config
            .approvals
            .wait_ms
            .min(approval_wait_ms.unwrap_or(u64::MAX));
        request_approval(
            &hall,
            &loaded,
            Asked { peer, input, raw },
            routed,
            wait,
            trace,
        )
        .await?
    } else if routed.decision.denied {
        let receipting = otel::now();
        let receipt = receipt_denial(&hall, &peer, &routed, trace).await?;
        trace.step(
            "wcp.denial_receipt",
            receipting,
            receipt_seq_attributes(&receipt),
        );
        response("denied", routed).with_receipt(&receipt)
    } else if input.dry_run {
        response("dry_run", routed)
    } else {
        run(&hall, &loaded, peer, input, routed, trace.clone()).await?
    };
    hall.metrics
        .observe_dispatch(started.elapsed().as_secs_f64());
    Ok(out)
}

/// A receipt reference's sequence number, for the span of the step that appended it.
fn receipt_seq_attributes(receipt: &Value) -> Vec<opentelemetry::KeyValue> {
    receipt["seq"]
        .as_u64()
        .map(|seq| vec![otel::kv("wcp.receipt_seq", seq as i64)])
        .unwrap_or_default()
}

/// A routing decision in WCP's words, for its span.
fn route_attributes(routed: &Routed) -> Vec<opentelemetry::KeyValue> {
    let d = &routed.decision;
    let mut attrs = vec![
        otel::kv("wcp.denied", d.denied),
        otel::kv("wcp.decision_id", d.decision_id.clone()),
    ];
    if let Some(s) = &d.selected_worker_species_id {
        attrs.push(otel::kv("wcp.worker_species_id", s.clone()));
    }
    if let Some(code) = d.deny_code() {
        attrs.push(otel::kv("wcp.deny_code", code.as_str()));
    }
    if !d.matched_rule_id.is_empty() {
        attrs.push(otel::kv("wcp.matched_rule_id", d.matched_rule_id.clone()));
    }
    if let Some(p) = &routed.policy {
        attrs.push(otel::kv("wcp.policy_version", p.policy_version.clone()));
    }
    attrs
}

/// Runs an allowed decision through the runner on a blocking thread.
async fn run(
    hall: &Arc<Hall>,
    loaded: &Arc<Loaded>,
    peer: Peer,
    input: RouteInput,
    routed: Routed,
    trace: otel::Trace,
) -> Result<DispatchResponse, ApiError> {
    let runner = hall.runner.clone();
    // The request must match the verified package's config.schema.json before anything runs
    // (and before the intent receipt): a mismatch is a receipted DENY_INVALID_INPUT.
    if let Some(species) = routed.decision.selected_worker_species_id.clone()
        && loaded.attested.is_some()
    {
        let (l, request) = (loaded.clone(), input.request.clone());
        let store = routed
            .verified
            .as_ref()
            .filter(|r| r.ok)
            .and_then(|r| r.store_path.clone());
        let checked = blocking(move || {
            super::catalog::check_request(&l, &species, &request, store.as_deref())
                .map_err(|m| (species, m))
        })
        .await
        .map_err(|e| ApiError::internal(format!("input validation panicked: {e}")))?;
        if let Err((species, mismatch)) = checked {
            return refuse_input(hall, loaded, &peer, routed, &species, &mismatch, &trace).await;
        }
    }
    // The answer's decision and policy are serialised now, so the runner takes the typed
    // values without a copy.
    let Routed {
        decision,
        policy,
        verified,
        run_limits,
        registry,
    } = routed;
    let evidence = registry.map(|(_, e)| e);
    let mut r = answer("completed", &decision, policy.as_ref(), evidence.clone());
    let correlation_id = decision.correlation_id.clone();
    let request = RunRequest {
        peer,
        input,
        decision,
        policy,
        verified,
        run_limits,
        loaded: loaded.clone(),
        trace,
        registry: evidence,
    };
    let outcome = blocking(move || runner.run(request))
        .await
        .map_err(|e| ApiError::internal(format!("worker runner panicked: {e}")))?;
    match outcome {
        Ok(done) => {
            for (phase, took) in &done.phases {
                hall.metrics.observe_phase(phase, took.as_secs_f64());
            }
            // WCP §7: the chain's blast grows by each worker that actually ran.
            if let Err(e) = hall
                .chains
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .record(&correlation_id, done.worker_blast, now_ms())
            {
                tracing::warn!(error = %e, "chain blast not recorded");
            }
            if !done.succeeded {
                r.status = "failed";
            }
            r.result = done.result;
            r.receipt_seq = Some(done.execution.receipt_seq());
            r.execution = Some(
                serde_json::value::to_raw_value(&done.execution)
                    .map_err(|e| ApiError::internal(e.to_string()))?,
            );
            Ok(r)
        }
        Err(e) => Err(run_error(e)),
    }
}

/// The HTTP answer for a run that could not produce an outcome (the one place a
/// [`runner::RunError`] becomes an [`ApiError`]): a refusal is 422 with its code; a receipt
/// the model refuses is the Hall's own bug (every request that reaches routing is validated so
/// that its receipts are valid): 500 `receipt_invalid`, nothing retried; a log that cannot
/// record now is 503 `receipt_log_unavailable` (with `Retry-After`); a broken invariant is 500.
fn run_error(e: runner::RunError) -> ApiError {
    use runner::RunError;
    let code = e.code();
    match e {
        RunError::Refused { message, .. } => {
            ApiError::new(axum::http::StatusCode::UNPROCESSABLE_ENTITY, code, message)
        }
        RunError::Receipt { what, source } => receipt_error(source, what),
        RunError::Internal(message) => ApiError::internal(message),
    }
}

/// The answer when a receipt could not be appended (see [`run_error`]).
pub fn receipt_error(e: crate::receipt::LogError, what: &str) -> ApiError {
    match e {
        crate::receipt::LogError::Invalid(_) => ApiError::new(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "receipt_invalid",
            format!("{what}: the Hall built a receipt it cannot record (a bug): {e}"),
        ),
        other => ApiError::unavailable("receipt_log_unavailable", format!("{what}: {other}")),
    }
}

/// The Hall code of a request refused by its worker's input schema (in the receipt's
/// `deny_detail` and the deny reason's `hall_code`).
pub const INPUT_INVALID: &str = "input_invalid";

/// Refuses an allowed decision whose request does not match the worker's input schema: the
/// decision becomes a `DENY_INVALID_INPUT` denial naming the fields, receipted like a routing
/// denial (no intent, nothing runs), with `deny_detail` `input_invalid: …`.
async fn refuse_input(
    hall: &Arc<Hall>,
    loaded: &Arc<Loaded>,
    peer: &Peer,
    routed: Routed,
    species: &str,
    mismatch: &super::catalog::InputMismatch,
    trace: &otel::Trace,
) -> Result<DispatchResponse, ApiError> {
    // Routing allowed it (and counted it so in wcp_hall_decisions_total); the Hall then refused
    // it before anything ran: counted here, by the Hall's code.
    hall.metrics.inc(
        "wcp_hall_dispatch_refused_total",
        &[("code", INPUT_INVALID)],
    );
    let summary = mismatch.summary();
    let mut decision = routed.decision;
    decision.denied = true;
    let mut extra = serde_json::Map::new();
    extra.insert("hall_code".into(), Value::from(INPUT_INVALID));
    extra.insert(
        "input_errors".into(),
        Value::Array(
            mismatch
                .errors
                .iter()
                .map(|(field, message)| json!({"field": field, "message": message}))
                .collect(),
        ),
    );
    decision.deny_reason_if_denied = Some(DenyReason {
        code: DenyCode::DenyInvalidInput,
        message: format!(
            "the request does not match {species}'s {}: {summary}",
            super::catalog::SCHEMA_FILE
        ),
        extra,
    });
    let routed = Routed {
        decision,
        policy: routed.policy,
        verified: None,
        run_limits: None,
        registry: routed.registry,
    };
    let worker_id = loaded
        .registry
        .records_of(species)
        .next()
        .map(|r| r.worker_id.clone());
    let receipt = receipt_denial_detailed(
        hall,
        peer,
        &routed,
        worker_id,
        // The receipt keeps which fields failed and why, never the request's values.
        Some(format!("{INPUT_INVALID}: {}", mismatch.masked_summary())),
        trace,
    )
    .await?;
    Ok(response("denied", routed).with_receipt(&receipt))
}

/// Who asked for what: the request as parsed and exactly as received.
struct Asked {
    peer: Peer,
    input: RouteInput,
    raw: Value,
}

/// Creates a pending approval and waits (up to `wait_ms`) for its resolution.
///
/// A repeat of a request that already has an approval — same requesting uid, tenant,
/// capability and correlation id (the caller's idempotency key) — opens no new one: it answers
/// with that approval (pending, or its kept outcome: the approved run's result or the denial),
/// so an agent that calls again after an operator acted collects its result instead of asking
/// for a second approval. The same key with a different request is refused (409
/// `correlation_id_reused`): an approval covers exactly the request a human saw.
async fn request_approval(
    hall: &Arc<Hall>,
    loaded: &Arc<Loaded>,
    asked: Asked,
    routed: Routed,
    wait_ms: u64,
    trace: &otel::Trace,
) -> Result<DispatchResponse, ApiError> {
    let Asked { peer, input, raw } = asked;
    let wait = Duration::from_millis(wait_ms);
    if let Some(existing) = hall.approvals.find_repeat(
        peer.uid,
        &input.tenant_id,
        &input.capability_id,
        &input.correlation_id,
    ) {
        if existing.input != raw {
            return Err(ApiError::new(
                axum::http::StatusCode::CONFLICT,
                "correlation_id_reused",
                format!(
                    "correlation id {:?} already names approval {} for a different request of \
                     {}; hint: send a fresh correlation id for a new request",
                    input.correlation_id, existing.id, input.capability_id
                ),
            ));
        }
        hall.metrics.inc("wcp_hall_approval_repeats_total", &[]);
        return Ok(wait_for(hall, existing, wait).await);
    }
    let decision = &routed.decision;
    let (reason, level) = human_request(decision);
    let (reason, level) = (reason.to_owned(), level.to_owned());
    let now = now_ms();
    let expires = now + loaded.config.approvals.timeout_ms;
    let approval = Approval {
        id: uuid::Uuid::new_v4().to_string(),
        status: ApprovalStatus::Pending,
        supervisor_level: level,
        created_at: rfc3339_ms(now),
        expires_at: rfc3339_ms(expires),
        expires_at_ms: expires,
        tenant_id: input.tenant_id.clone(),
        capability_id: input.capability_id.clone(),
        correlation_id: input.correlation_id.clone(),
        reason,
        deny_code: decision
            .deny_code()
            .map(|c| c.as_str().to_owned())
            .unwrap_or_default(),
        input: raw,
        decision: serde_json::to_value(decision).unwrap_or(Value::Null),
        policy: routed
            .policy
            .as_ref()
            .and_then(|p| serde_json::to_value(p).ok()),
        peer,
        resolutions: Vec::new(),
        outcome: None,
        closed_at_ms: None,
        traceparent: trace.traceparent(),
    };
    let approval = hall
        .approvals
        .create(approval)
        .map_err(|e| ApiError::unavailable("approvals_unavailable", e.to_string()))?;
    Ok(wait_for(hall, approval, wait).await)
}

/// The approval's final answer if it has one within `wait`, else the pending answer.
pub async fn wait_for(hall: &Hall, approval: Approval, wait: Duration) -> DispatchResponse {
    if approval.outcome.is_some() {
        return pending_or_final(&approval, approval.outcome.clone());
    }
    if !wait.is_zero()
        && let Some(done) = hall.approvals.wait_outcome(&approval.id, wait).await
        && let Some(outcome) = done.outcome.clone()
    {
        return pending_or_final(&done, Some(outcome));
    }
    // The latest state (an escalation may have raised the level meanwhile).
    let current = hall.approvals.get(&approval.id).unwrap_or(approval);
    let outcome = current.outcome.clone();
    pending_or_final(&current, outcome)
}

/// The pending answer, or the final one when the approval's outcome is known.
pub fn pending_or_final(approval: &Approval, outcome: Option<Value>) -> DispatchResponse {
    if let Some(v) = outcome
        && let Ok(final_response) = serde_json::from_value::<FinalOutcome>(v)
    {
        return final_response.into_response();
    }
    DispatchResponse {
        status: "pending_approval",
        denied: false,
        supervisor_required: true,
        supervisor_level: Some(approval.supervisor_level.clone()),
        pending_approval_id: Some(approval.id.clone()),
        approval_expires_at: Some(approval.expires_at.clone()),
        escalation_context: Some(json!({
            "reason": approval.reason,
            "deny_code": approval.deny_code,
            "tenant_id": approval.tenant_id,
            "capability_id": approval.capability_id,
            "correlation_id": approval.correlation_id,
        })),
        decision: raw_json(&approval.decision),
        policy: approval.policy.as_ref().map(raw_json),
        registry_service: None,
        result: None,
        execution: None,
        receipt_seq: None,
    }
}

/// What is stored as an approval's outcome once it is final.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct FinalOutcome {
    pub status: String,
    pub denied: bool,
    pub decision: Value,
    #[serde(default)]
    pub policy: Option<Value>,
    pub result: Option<Value>,
    pub execution: Option<Value>,
    /// For a closed approval's denial: `{approval_status, reason}` (absent in older files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalation_context: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_approval_id: Option<String>,
}

impl FinalOutcome {
    fn into_response(self) -> DispatchResponse {
        let status = match self.status.as_str() {
            "completed" => "completed",
            "failed" => "failed",
            "dry_run" => "dry_run",
            _ => "denied",
        };
        DispatchResponse {
            status,
            denied: self.denied,
            supervisor_required: false,
            supervisor_level: None,
            pending_approval_id: self.pending_approval_id,
            approval_expires_at: None,
            escalation_context: self.escalation_context,
            decision: raw_json(&self.decision),
            policy: self.policy.as_ref().map(raw_json),
            registry_service: None,
            result: self.result,
            receipt_seq: self
                .execution
                .as_ref()
                .and_then(|e| e["receipt"]["seq"].as_u64()),
            execution: self.execution.as_ref().map(raw_json),
        }
    }

    fn from_response(r: &DispatchResponse) -> Self {
        FinalOutcome {
            status: r.status.to_owned(),
            denied: r.denied,
            decision: raw_to_value(&r.decision),
            policy: r.policy.as_ref().map(raw_to_value),
            result: r.result.clone(),
            execution: r.execution.as_ref().map(raw_to_value),
            escalation_context: r.escalation_context.clone(),
            pending_approval_id: r.pending_approval_id.clone(),
        }
    }
}

/// Carries out an operator's resolution: approve re-routes the stored request with the
/// approval (every other check runs again on the current rules) and runs it; deny and expiry
/// store a denial. The outcome is persisted on the approval and wakes any waiting caller.
pub async fn complete_approval(hall: Arc<Hall>, approval: Approval) -> Result<Value, ApiError> {
    // Its own span in the trace of the dispatch that asked for the approval (that dispatch's
    // span has ended by now when the caller stopped waiting).
    let span = otel::DispatchSpan::start_named(
        "wcp.approval.complete",
        otel::SpanKind::Internal,
        hall.tracing.as_ref(),
        &otel::Incoming {
            traceparent: approval.traceparent.clone(),
            tracestate: None,
        },
        vec![
            otel::kv("wcp.pending_approval_id", approval.id.clone()),
            otel::kv("wcp.approval_status", approval.status.as_str()),
            otel::kv("wcp.capability_id", approval.capability_id.clone()),
            otel::kv("wcp.tenant_id", approval.tenant_id.clone()),
            otel::kv("wcp.correlation_id", approval.correlation_id.clone()),
        ],
    );
    let trace = span.trace();
    let log_span = request_log_span(&approval.correlation_id, &trace);
    let out = complete_approval_steps(&hall, approval, &trace)
        .instrument(log_span)
        .await;
    match &out {
        Ok(v) => {
            if let Some(status) = v["status"].as_str() {
                trace.set(vec![otel::kv("wcp.status", status.to_owned())]);
            }
        }
        Err(e) => trace.error(e.code),
    }
    out
}

async fn complete_approval_steps(
    hall: &Arc<Hall>,
    approval: Approval,
    trace: &otel::Trace,
) -> Result<Value, ApiError> {
    let loaded = hall.current.get();
    let input = RouteInput::from_value(&approval.input)
        .map_err(|e| ApiError::internal(format!("stored approval input no longer parses: {e}")))?;
    let response = match approval.status {
        ApprovalStatus::Approved => {
            let routing = otel::now();
            let routed = route(hall, &loaded, &approval.peer, &input, Some(&approval.id));
            trace.step("wcp.route", routing, route_attributes(&routed));
            record_decision(hall, &routed.decision);
            if routed.decision.denied {
                response("denied", routed)
            } else if input.dry_run {
                response("dry_run", routed)
            } else {
                match run(
                    hall,
                    &loaded,
                    approval.peer,
                    input,
                    routed.clone(),
                    trace.clone(),
                )
                .await
                {
                    Ok(r) => r,
                    Err(e) => {
                        let mut r = response("failed", routed);
                        r.execution = Some(raw_json(
                            &json!({"error": {"code": e.code, "message": e.message}}),
                        ));
                        r
                    }
                }
            }
        }
        ApprovalStatus::Denied | ApprovalStatus::Expired => {
            // The decision that asked for a human stands, whatever the rules say now; its
            // denial (or expiry) is receipted like any other.
            let receipting = otel::now();
            let receipt = receipt_closed_approval(hall, &approval, trace).await?;
            trace.step(
                "wcp.denial_receipt",
                receipting,
                receipt_seq_attributes(&receipt),
            );
            DispatchResponse {
                status: "denied",
                denied: true,
                supervisor_required: false,
                supervisor_level: Some(approval.supervisor_level.clone()),
                pending_approval_id: Some(approval.id.clone()),
                approval_expires_at: Some(approval.expires_at.clone()),
                escalation_context: Some(
                    json!({"approval_status": approval.status, "reason": approval.reason}),
                ),
                decision: raw_json(&approval.decision),
                policy: approval.policy.as_ref().map(raw_json),
                registry_service: None,
                result: None,
                execution: None,
                receipt_seq: None,
            }
            .with_receipt(&receipt)
        }
        ApprovalStatus::Pending => return Err(ApiError::internal("approval is still pending")),
    };
    let outcome = serde_json::to_value(FinalOutcome::from_response(&response))
        .map_err(|e| ApiError::internal(e.to_string()))?;
    hall.approvals
        .set_outcome(&approval.id, outcome.clone())
        .map_err(|e| ApiError::unavailable("approvals_unavailable", e.to_string()))?;
    Ok(serde_json::to_value(&response).unwrap_or(outcome))
}

/// Receipts a denial (durable before the caller is answered); the answer carries its reference.
async fn receipt_denial(
    hall: &Arc<Hall>,
    peer: &Peer,
    routed: &Routed,
    trace: &otel::Trace,
) -> Result<Value, ApiError> {
    receipt_denial_detailed(hall, peer, routed, None, None, trace).await
}

/// [`receipt_denial`] with the worker that was selected and the Hall's own detail (at most
/// 1,000 bytes), when the Hall refused after routing.
async fn receipt_denial_detailed(
    hall: &Arc<Hall>,
    peer: &Peer,
    routed: &Routed,
    worker_id: Option<String>,
    detail: Option<String>,
    trace: &otel::Trace,
) -> Result<Value, ApiError> {
    let mut d = Dispatch::from_decision(
        &routed.decision,
        worker_id,
        runner::caller(peer),
        rfc3339_ms(now_ms()),
    );
    d.trace = trace.ids();
    d.decision.policy_version = routed.policy.as_ref().map(|p| p.policy_version.clone());
    if let Some((registry_worker, evidence)) = &routed.registry {
        if d.worker_id.is_none() && !registry_worker.is_empty() {
            d.worker_id = Some(registry_worker.clone());
        }
        d.registry_service = Some(evidence.clone());
    }
    if let Some(mut detail) = detail {
        if detail.len() > 1000 {
            let mut end = 1000;
            while !detail.is_char_boundary(end) {
                end -= 1;
            }
            detail.truncate(end);
        }
        d.decision.deny_detail = Some(detail);
    }
    append(hall, d, None).await
}

/// Receipts an approval a human denied or nobody resolved in time, from its stored decision.
async fn receipt_closed_approval(
    hall: &Arc<Hall>,
    approval: &Approval,
    trace: &otel::Trace,
) -> Result<Value, ApiError> {
    let v = approval.stored_decision().map_err(ApiError::internal)?;
    let policy_version = approval
        .stored_policy_version()
        .map_err(ApiError::internal)?;
    let d = Dispatch {
        artifact_hash: None,
        caller: runner::caller(&approval.peer),
        capability_id: v.capability_id,
        controls_verified: Vec::new(),
        correlation_id: v.correlation_id,
        decision: DecisionSummary {
            decision_id: v.decision_id,
            denied: true,
            deny_code: v.deny_reason_if_denied.map(|r| r.code.as_str().to_owned()),
            deny_detail: None,
            matched_rule_id: v.matched_rule_id,
            policy_version,
        },
        dispatched_at: rfc3339_ms(now_ms()),
        env: v.env.as_str().to_owned(),
        envelope: None,
        package: None,
        policy_decision: "REQUIRE_HUMAN".into(),
        tenant_id: v.tenant_id,
        worker_id: None,
        worker_species_id: None,
        registry_service: None,
        trace: trace.ids(),
    };
    append(hall, d, Some(approval)).await
}

async fn append(
    hall: &Arc<Hall>,
    d: Dispatch,
    approval: Option<&Approval>,
) -> Result<Value, ApiError> {
    let receipts = hall.receipts.clone();
    let expired = approval
        .filter(|a| a.status == ApprovalStatus::Expired)
        .map(|a| ReceiptApproval {
            approval_expires_at: a.expires_at.clone(),
            pending_approval_id: a.id.clone(),
            supervisor_level: Some(a.supervisor_level.clone()),
        });
    let appended = blocking(move || match expired {
        Some(a) => receipts.append_expired_approval(d, a),
        None => receipts.append_denied(d),
    })
    .await
    .map_err(|e| ApiError::internal(format!("receipt writer panicked: {e}")))?
    .map_err(|e| receipt_error(e, "the denial could not be recorded"))?;
    Ok(json!({
        "seq": appended.seq,
        "receipt_hash": appended.receipt_hash_string(),
        "checkpoint_size": hall.receipts.saved_checkpoint_size(),
    }))
}
