//! HTTP/1.1 + JSON over the Hall's Unix socket: routes, handlers and the accept loop.
//!
//! Each accepted connection carries the peer's kernel credentials (`SO_PEERCRED`) into every
//! request as an extension; handlers never look at a client-supplied identity. Connections get a
//! header read timeout (slow-loris guard) and bodies are read with a size limit and a deadline.
//! Graceful shutdown stops accepting, lets in-flight requests finish within the grace period,
//! then drops what is left.

use std::io::Write as _;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::AsyncReadExt as _;
use tower::ServiceExt as _;

use super::Hall;
use super::api::{API_VERSION, ApiError};
use super::approvals::{Approval, ApprovalError, ApprovalStatus};
use super::catalog;
use super::conn;
use super::dispatch;
use crate::snapshot::identity::Peer;
use crate::wcp::RouteInput;

/// The API's routes.
pub fn app(hall: Arc<Hall>) -> Router {
    Router::new()
        .route("/_ping", get(ping))
        .route("/wcp/version", get(version))
        .route("/wcp/health", get(health))
        .route("/wcp/checkpoint", get(checkpoint))
        .route("/wcp/capabilities", get(capabilities))
        .route("/wcp/capabilities/routable", post(routable_capabilities))
        .route("/wcp/workers", get(workers))
        .route("/wcp/route", post(route))
        .route("/wcp/dispatch", post(dispatch_handler))
        .route("/wcp/approvals/pending", get(pending_approvals))
        .route("/wcp/approvals/{id}", get(get_approval))
        .route("/wcp/approvals/{id}/resolve", post(resolve_approval))
        .route("/wcp/reload", post(reload))
        .route("/metrics", get(metrics))
        .fallback(|| async { ApiError::not_found("no such endpoint; see GET /wcp/version") })
        .layer(axum::middleware::map_response(super::wire::json_errors))
        .with_state(hall)
}

/// Every request on a refused connection answers 403 `peer_is_worker` with the reason.
fn refusal(why: String) -> Router {
    let why: Arc<str> = why.into();
    Router::new().fallback(move || {
        let why = why.clone();
        async move { ApiError::new(StatusCode::FORBIDDEN, "peer_is_worker", why.to_string()) }
    })
}

fn versioned(mut resp: Response) -> Response {
    resp.headers_mut()
        .insert("api-version", HeaderValue::from_static(API_VERSION));
    resp
}

async fn ping() -> Response {
    versioned("OK".into_response())
}

async fn version() -> Response {
    versioned(
        Json(json!({
            "name": "wcp-hall",
            "version": env!("CARGO_PKG_VERSION"),
            "api_version": API_VERSION,
            "wcp_version": "0.1",
        }))
        .into_response(),
    )
}

/// `GET /wcp/checkpoint`: the receipt log's latest saved checkpoint (`<log_dir>/checkpoint`, a
/// C2SP signed note, written atomically), as `text/plain`, to any peer: it is public by design
/// (auditors and witnesses compare it with what they hold). 404 `no_checkpoint` before the
/// first one is saved.
async fn checkpoint(State(hall): State<Arc<Hall>>) -> Response {
    use crate::receipt::{checkpoint::MAX_NOTE_BYTES, store};
    let path = hall.receipts.options().dir.join(store::CHECKPOINT_FILE);
    let read =
        tokio::task::spawn_blocking(move || store::read_small(&path, MAX_NOTE_BYTES as u64)).await;
    match read {
        Ok(Ok(Some(note))) => {
            versioned(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], note).into_response())
        }
        Ok(Ok(None)) => ApiError::new(
            StatusCode::NOT_FOUND,
            "no_checkpoint",
            "the receipt log has no saved checkpoint yet",
        )
        .into_response(),
        Ok(Err(e)) => {
            ApiError::internal(format!("cannot read the saved checkpoint: {e}")).into_response()
        }
        Err(e) => ApiError::internal(format!("reading the checkpoint failed: {e}")).into_response(),
    }
}

async fn health(State(hall): State<Arc<Hall>>, Extension(peer): Extension<Peer>) -> Response {
    let loaded = hall.current.get();
    // Who the caller is to this Hall: the kernel's uid and primary gid, the groups the group
    // database adds, and what [identity] grants them.
    let you = json!({
        "uid": peer.uid,
        "gid": peer.gid,
        "groups": loaded.identity.groups_of(&peer),
        "tenants": loaded.identity.tenants_for(&peer),
        "operator": loaded.identity.is_operator(&peer),
    });
    let shutting_down = hall.is_shutting_down();
    let log = hall.receipts.status();
    let check = &log.background_check;
    // A log that failed its integrity (a record or checkpoint that does not verify, found by a
    // repair or the background verification) refuses every append until a human restarts
    // the Hall; a degraded one (a resource is missing: disk space, descriptors, an I/O error)
    // refuses new dispatches and recovers by itself.
    use crate::receipt::LogState;
    let status = match &log.state {
        LogState::Failed { .. } => "failed",
        _ if shutting_down => "stopping",
        LogState::Degraded { .. } => "degraded",
        LogState::Ok => "ok",
    };
    let (cause, reason, errno, since) = match &log.state {
        LogState::Ok => (None, None, None, None),
        LogState::Degraded {
            reason,
            errno,
            since,
        } => (
            Some("resource"),
            Some(reason.clone()),
            errno.clone(),
            Some(crate::receipt::model::rfc3339_millis(*since)),
        ),
        LogState::Failed { reason } => (Some("integrity"), Some(reason.clone()), None, None),
    };
    let body = json!({
        "status": status,
        "receipts": {
            "state": log.state.name(),
            "cause": cause,
            "reason": reason,
            "errno": errno,
            "since": since,
            "refused": log.refusals,
            "reserve_bytes": log.reserve_bytes,
            "records": log.records,
            "last_checkpoint_size": log.last_checkpoint,
            "failed": log.failed,
            "background_check": check.name(),
            "unverified_records": check.unverified(),
            "background_check_problem": match check {
                crate::receipt::BackgroundCheck::Failed { reason, .. } => Some(reason.clone()),
                _ => None,
            },
        },
        "generation": loaded.generation,
        "uptime_ms": hall.started.elapsed().as_millis() as u64,
        "in_flight": hall.limits.in_flight(loaded.config.server.max_concurrent),
        "queue_waiting": hall.limits.waiting(),
        "connections": {
            "open": hall.connections.open(),
            "max": hall.connections.limits().max_connections,
            "max_per_uid": hall.connections.limits().max_connections_per_uid,
            "operator_share": hall.connections.limits().operator_connections,
        },
        "approvals_pending": hall.approvals.pending().len(),
        "rules": loaded.rules.rules().len(),
        "shadowed_rules": loaded.rules.shadows().len(),
        "workers": loaded.registry.records().len(),
        // Every serving Hall runs workers (kept for clients that read it).
        "runner": true,
        "python": loaded.python.as_ref().map(|p| json!({
            "interpreter": p.interpreter,
            "runtime": p.describe(),
        })),
        "cgroup": hall.cgroup,
        // The worker registry service's cache: what was fetched when, the last failure.
        "registry_service": hall.registry_service.as_ref().map(|s| json!({
            "url": s.base_url(),
            "cache": s.state(),
        })),
        "you": you,
    });
    let code = if shutting_down || log.state != LogState::Ok {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    versioned((code, Json(body)).into_response())
}

async fn capabilities(State(hall): State<Arc<Hall>>) -> Json<Value> {
    let loaded = hall.current.get();
    let summary = loaded.registry.summary();
    let mut caps: std::collections::BTreeMap<String, Value> = std::collections::BTreeMap::new();
    for rule in loaded.rules.rules() {
        let names: Vec<String> = match &rule.matcher.conditions[0] {
            Some(crate::rules::Condition::Exact(c)) => vec![c.clone()],
            Some(crate::rules::Condition::In(list)) => list.clone(),
            _ => continue,
        };
        for name in names {
            let entry = caps.entry(name.clone()).or_insert_with(|| {
                json!({
                    "capability_id": name,
                    "worker_species": summary.capabilities_mapped.get(&name).cloned().unwrap_or_default(),
                    "rules": [],
                })
            });
            if let Some(rules) = entry["rules"].as_array_mut() {
                rules.push(Value::from(rule.rule_id.clone()));
            }
        }
    }
    Json(json!({"capabilities": caps.into_values().collect::<Vec<_>>()}))
}

/// `POST /wcp/capabilities/routable`: the capabilities the peer, acting as the body's tenant in
/// its route context, may dispatch, each with its worker's input schema (see `catalog`).
async fn routable_capabilities(
    State(hall): State<Arc<Hall>>,
    Extension(peer): Extension<Peer>,
    body: Body,
) -> Result<Response, ApiError> {
    hall.metrics.inc(
        "wcp_hall_requests_total",
        &[("endpoint", "capabilities_routable")],
    );
    let raw = read_json(&hall, body).await?;
    let template = catalog::parse_context(&raw)?;
    let loaded = hall.current.get();
    catalog::check_tenant(&loaded, &peer, &template.tenant_id)?;
    // A listing routes every capability (and may re-verify packages): it takes an execution
    // slot like a dispatch, so a flood of listings meets the same bounded queue and 429.
    let _permit = hall
        .limits
        .admit(&dispatch::admission_key(
            &loaded,
            &peer,
            &template.tenant_id,
        ))
        .await
        .map_err(|e| ApiError::overloaded(e.to_string()))?;
    let listing =
        tokio::task::spawn_blocking(move || catalog::routable(&hall, &loaded, &peer, &template))
            .await
            .map_err(|e| ApiError::internal(format!("capability listing panicked: {e}")))?;
    Ok(Json(listing).into_response())
}

async fn workers(State(hall): State<Arc<Hall>>) -> Json<Value> {
    let loaded = hall.current.get();
    let workers: Vec<Value> = loaded
        .registry
        .records()
        .iter()
        .map(|r| {
            json!({
                "worker_id": r.worker_id,
                "worker_species_id": r.worker_species_id,
                "capabilities": r.capabilities,
                "risk_tier": r.risk_tier,
                "allowed_environments": r.allowed_environments,
                "currently_implements": r.currently_implements,
                "privilege_envelope": r.privilege_envelope,
                "blast_radius": r.blast_radius,
            })
        })
        .collect();
    Json(json!({"workers": workers}))
}

/// Reads a JSON body with the configured size limit and deadline.
async fn read_json(hall: &Hall, body: Body) -> Result<Value, ApiError> {
    let server = hall.current.get().config.server.clone();
    let collect = Limited::new(body, server.max_body_bytes).collect();
    let collected = tokio::time::timeout(Duration::from_millis(server.read_timeout_ms), collect)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                format!(
                    "the request body did not arrive within {} ms",
                    server.read_timeout_ms
                ),
            )
        })?
        .map_err(|e| {
            if e.downcast_ref::<LengthLimitError>().is_some() {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body_too_large",
                    format!("request body exceeds {} bytes", server.max_body_bytes),
                )
            } else {
                ApiError::bad_request(
                    "body_unreadable",
                    format!("cannot read the request body: {e}"),
                )
            }
        })?;
    crate::json::parse_slice(&collected.to_bytes()).map_err(|e| {
        ApiError::bad_request(
            "invalid_json",
            format!("request body is not valid JSON: {e}"),
        )
    })
}

async fn read_input(hall: &Hall, body: Body) -> Result<(RouteInput, Value), ApiError> {
    let raw = read_json(hall, body).await?;
    let input = RouteInput::from_value(&raw)
        .map_err(|e| ApiError::bad_request("invalid_input", e.to_string()))?;
    Ok((input, raw))
}

async fn route(
    State(hall): State<Arc<Hall>>,
    Extension(peer): Extension<Peer>,
    body: Body,
) -> Result<Response, ApiError> {
    hall.metrics
        .inc("wcp_hall_requests_total", &[("endpoint", "route")]);
    let (input, _) = read_input(&hall, body).await?;
    let loaded = hall.current.get();
    let routed = dispatch::route(&hall, &loaded, &peer, &input, None);
    let mut body =
        serde_json::to_value(&routed.decision).map_err(|e| ApiError::internal(e.to_string()))?;
    if let (Some(policy), Value::Object(map)) = (routed.policy, &mut body) {
        map.insert(
            "policy".into(),
            serde_json::to_value(policy).unwrap_or(Value::Null),
        );
    }
    Ok(Json(body).into_response())
}

/// `POST /wcp/dispatch` query parameters.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DispatchQuery {
    /// Wait at most this long for a human's resolution (never more than `[approvals] wait_ms`).
    approval_wait_ms: Option<u64>,
}

async fn dispatch_handler(
    State(hall): State<Arc<Hall>>,
    Extension(peer): Extension<Peer>,
    Query(query): Query<DispatchQuery>,
    headers: axum::http::HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    hall.metrics
        .inc("wcp_hall_requests_total", &[("endpoint", "dispatch")]);
    // The caller's W3C trace context: the dispatch span continues its trace (an invalid
    // traceparent is ignored, as W3C Trace Context says: the dispatch starts a new trace).
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let incoming = super::otel::Incoming {
        traceparent: header("traceparent"),
        tracestate: header("tracestate"),
    };
    // Every answer is counted once in wcp_hall_dispatches_total, by its status or as an error.
    let answered = dispatch_answer(&hall, peer, body, query.approval_wait_ms, incoming).await;
    let status = answered.as_ref().map_or("error", |out| out.status);
    hall.metrics
        .inc("wcp_hall_dispatches_total", &[("status", status)]);
    Ok(dispatch_body(&answered?))
}

/// The answer's JSON, written once into a buffer sized for it: its pre-serialised parts (the
/// decision, the execution with the envelope report) are most of it.
fn dispatch_body(r: &dispatch::DispatchResponse) -> Response {
    let raw = |v: Option<&dispatch::RawJson>| v.map_or(0, |v| v.get().len());
    let hint = 1024
        + raw(Some(&r.decision))
        + raw(r.policy.as_ref())
        + raw(r.execution.as_ref())
        + r.result.as_ref().map_or(0, |_| 1024);
    let mut body = Vec::with_capacity(hint);
    match serde_json::to_writer(&mut body, r) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body,
        )
            .into_response(),
        Err(e) => {
            ApiError::internal(format!("the answer could not be encoded: {e}")).into_response()
        }
    }
}

async fn dispatch_answer(
    hall: &Arc<Hall>,
    peer: Peer,
    body: Body,
    approval_wait_ms: Option<u64>,
    incoming: super::otel::Incoming,
) -> Result<dispatch::DispatchResponse, ApiError> {
    if hall.is_shutting_down() {
        return Err(ApiError::unavailable(
            "shutting_down",
            "the Hall is shutting down",
        ));
    }
    let (input, raw) = read_input(hall, body).await?;
    dispatch::dispatch(hall.clone(), peer, input, raw, approval_wait_ms, incoming)
        .await
        .inspect_err(|e| {
            if e.code == "receipt_log_unavailable" {
                hall.metrics.inc(
                    "wcp_hall_dispatch_refused_total",
                    &[("code", "receipt_log_unavailable")],
                );
            }
        })
}

/// Who is asking about an approval, and so what they may see of it.
///
/// Threat model: an approved run's result belongs to the agent that asked for it, not to the
/// operator who approved it and not to another tenant on the same uid. The requester is the
/// approval's uid acting as its tenant (`?tenant_id=`, a tenant `[identity]` still grants that
/// peer); it sees the outcome with the worker's result. An operator sees the approval and the
/// outcome's status, decision and receipt, never the result. Anybody else is told there is no
/// such approval (404), so ids cannot be probed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ApprovalView {
    Requester,
    Operator,
}

fn approval_view(
    hall: &Hall,
    peer: &Peer,
    approval: &Approval,
    tenant_id: Option<&str>,
) -> Option<ApprovalView> {
    let identity = &hall.current.get().identity;
    if peer.uid == approval.peer.uid
        && tenant_id == Some(approval.tenant_id.as_str())
        && identity.tenants_for(peer).contains(&approval.tenant_id)
    {
        Some(ApprovalView::Requester)
    } else if identity.is_operator(peer) {
        Some(ApprovalView::Operator)
    } else {
        None
    }
}

/// An approval as JSON without its stored outcome (the answer's `response` carries it).
fn approval_json(approval: &Approval) -> Value {
    let mut v = serde_json::to_value(approval).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        m.remove("outcome");
    }
    v
}

/// A dispatch answer with the worker's result withheld (what an operator sees).
fn without_result(response: Value) -> Value {
    let mut response = response;
    if let Value::Object(m) = &mut response
        && m.get("result").is_some_and(|r| !r.is_null())
    {
        m.insert("result".into(), Value::Null);
        m.insert(
            "result_withheld".into(),
            Value::from("the worker's result goes to the requesting peer and tenant only"),
        );
    }
    response
}

async fn pending_approvals(
    State(hall): State<Arc<Hall>>,
    Extension(peer): Extension<Peer>,
) -> Json<Value> {
    let operator = hall.current.get().identity.is_operator(&peer);
    let list: Vec<Value> = hall
        .approvals
        .pending()
        .into_iter()
        .filter(|a| operator || a.peer.uid == peer.uid)
        .map(|a| {
            json!({
                "pending_approval_id": a.id,
                "supervisor_level": a.supervisor_level,
                "created_at": a.created_at,
                "approval_expires_at": a.expires_at,
                "tenant_id": a.tenant_id,
                "capability_id": a.capability_id,
                "correlation_id": a.correlation_id,
                "reason": a.reason,
                "deny_code": a.deny_code,
                "requested_by": a.peer,
            })
        })
        .collect();
    Json(json!({"pending": list}))
}

/// `GET /wcp/approvals/{id}` query parameters.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApprovalQuery {
    /// The tenant the requester asked as; needed to see the outcome's result.
    tenant_id: Option<String>,
    /// Long poll: wait up to this long (at most [`MAX_APPROVAL_POLL_MS`]) for the outcome.
    wait_ms: Option<u64>,
}

/// The longest `GET /wcp/approvals/{id}?wait_ms=` waits.
pub const MAX_APPROVAL_POLL_MS: u64 = 60_000;

async fn get_approval(
    State(hall): State<Arc<Hall>>,
    Extension(peer): Extension<Peer>,
    Path(id): Path<String>,
    Query(query): Query<ApprovalQuery>,
) -> Result<Response, ApiError> {
    let not_found = || {
        ApiError::not_found(format!(
            "no approval with id {id:?} for this peer; hint: the requester asks with \
             ?tenant_id= (the tenant it dispatched as); outcomes are kept [approvals] \
             outcome_retention_ms after the resolution"
        ))
    };
    let a = hall.approvals.get(&id).ok_or_else(not_found)?;
    let view = approval_view(&hall, &peer, &a, query.tenant_id.as_deref()).ok_or_else(not_found)?;
    let wait = Duration::from_millis(query.wait_ms.unwrap_or(0).min(MAX_APPROVAL_POLL_MS));
    let response = dispatch::wait_for(&hall, a, wait).await;
    let a = hall.approvals.get(&id).ok_or_else(not_found)?;
    let response =
        serde_json::to_value(&response).map_err(|e| ApiError::internal(e.to_string()))?;
    let response = match view {
        ApprovalView::Requester => response,
        ApprovalView::Operator => without_result(response),
    };
    Ok(Json(json!({"approval": approval_json(&a), "response": response})).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResolveBody {
    action: String,
    #[serde(default)]
    level: Option<String>,
    #[serde(default)]
    note: Option<String>,
}

async fn resolve_approval(
    State(hall): State<Arc<Hall>>,
    Extension(peer): Extension<Peer>,
    Path(id): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    hall.metrics
        .inc("wcp_hall_requests_total", &[("endpoint", "resolve")]);
    if !hall.current.get().identity.is_operator(&peer) {
        return Err(ApiError::forbidden(format!(
            "uid {} is not an operator; add it to [identity] operator_uids (or its group to operator_gids)",
            peer.uid
        )));
    }
    let raw = read_json(&hall, body).await?;
    let body: ResolveBody = serde_json::from_value(raw).map_err(|e| {
        ApiError::bad_request(
            "invalid_resolution",
            format!("expected {{\"action\": \"approve\"|\"deny\"|\"escalate\", \"level\"?, \"note\"?}}: {e}"),
        )
    })?;
    let map_err = |e: ApprovalError| match e {
        ApprovalError::NotFound(_) => ApiError::not_found(e.to_string()),
        ApprovalError::NotPending { .. } => {
            ApiError::new(StatusCode::CONFLICT, "approval_not_pending", e.to_string())
        }
        ApprovalError::Level(_) => ApiError::bad_request("invalid_level", e.to_string()),
        other => ApiError::unavailable("approvals_unavailable", other.to_string()),
    };
    let approval = match body.action.as_str() {
        "approve" => hall
            .approvals
            .resolve(&id, true, &peer, body.note)
            .map_err(map_err)?,
        "deny" => hall
            .approvals
            .resolve(&id, false, &peer, body.note)
            .map_err(map_err)?,
        "escalate" => {
            let a = hall
                .approvals
                .escalate(&id, body.level.as_deref(), &peer, body.note)
                .map_err(map_err)?;
            return Ok(Json(json!({"approval": a})).into_response());
        }
        other => {
            return Err(ApiError::bad_request(
                "invalid_resolution",
                format!("action {other:?} is not one of approve, deny, escalate"),
            ));
        }
    };
    debug_assert_ne!(approval.status, ApprovalStatus::Pending);
    let response = dispatch::complete_approval(hall.clone(), approval.clone()).await?;
    // The operator learns what happened, not the worker's result: that goes to the requester.
    let approval = hall.approvals.get(&id).unwrap_or(approval);
    Ok(
        Json(json!({"approval": approval_json(&approval), "response": without_result(response)}))
            .into_response(),
    )
}

async fn reload(
    State(hall): State<Arc<Hall>>,
    Extension(peer): Extension<Peer>,
) -> Result<Response, ApiError> {
    if !hall.current.get().identity.is_operator(&peer) {
        return Err(ApiError::forbidden(format!(
            "uid {} is not an operator",
            peer.uid
        )));
    }
    // A reload reads files and probes the Python runtime: off the async workers.
    let h = hall.clone();
    let reloaded = tokio::task::spawn_blocking(move || h.reload())
        .await
        .map_err(|e| ApiError::internal(format!("the reload task failed: {e}")))?;
    match reloaded {
        Ok(generation) => {
            Ok(Json(json!({"reloaded": true, "generation": generation})).into_response())
        }
        Err(message) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "reload_failed",
            message,
        )),
    }
}

/// `GET /metrics`, on the Hall's socket and on the optional TCP listener (`metrics_http`).
pub(super) async fn metrics(State(hall): State<Arc<Hall>>) -> Response {
    let loaded = hall.current.get();
    let log = hall.receipts.status();
    let warm = hall.runner.warm.as_ref();
    let warm_sizes = warm.map(|w| w.sizes()).unwrap_or_default();
    let warm_count = |f: fn(&super::warm::WarmStats) -> &std::sync::atomic::AtomicU64| {
        warm.map_or(0.0, |w| {
            f(&w.stats).load(std::sync::atomic::Ordering::Relaxed) as f64
        })
    };
    let text = hall.metrics.render(&[
        (
            "wcp_hall_warm_hits",
            "Executed dispatches served by a warm instance since start (a count).",
            warm_count(|s| &s.hits),
        ),
        (
            "wcp_hall_warm_misses",
            "Executed dispatches of a [warm] worker, or of any worker, that ran cold since start (a count: the pool was empty, the worker is not configured or cannot run warm).",
            warm_count(|s| &s.misses),
        ),
        (
            "wcp_hall_warm_discards",
            "Warm instances stopped unused since start (a count: reload, package or plan change, failed verification, changed while idle, idle too long, over the memory budget).",
            warm_count(|s| &s.discards),
        ),
        (
            "wcp_hall_warm_start_failures",
            "Warm instances that did not reach their exec since start (a count).",
            warm_count(|s| &s.start_failures),
        ),
        (
            "wcp_hall_warm_idle",
            "Warm instances idle now.",
            warm_sizes.idle as f64,
        ),
        (
            "wcp_hall_warm_settled",
            "Idle warm instances that used no CPU between the pool's last two looks (loaded, waiting for their request).",
            warm_sizes.settled as f64,
        ),
        (
            "wcp_hall_warm_starting",
            "Warm instances being started now.",
            warm_sizes.starting as f64,
        ),
        (
            "wcp_hall_warm_idle_memory_bytes",
            "Memory the idle warm instances hold, as measured at the pool's last look.",
            warm_sizes.memory_bytes as f64,
        ),
        (
            "wcp_hall_in_flight",
            "Requests holding an execution slot.",
            hall.limits.in_flight(loaded.config.server.max_concurrent) as f64,
        ),
        (
            "wcp_hall_queue_waiting",
            "Requests waiting for a slot.",
            hall.limits.waiting() as f64,
        ),
        (
            "wcp_hall_connections_open",
            "Connections open now (the operators' share included).",
            hall.connections.open() as f64,
        ),
        (
            "wcp_hall_connections_max",
            "The total connection cap ([server] max_connections, or derived from RLIMIT_NOFILE).",
            hall.connections.limits().max_connections as f64,
        ),
        (
            "wcp_hall_approvals_pending",
            "Pending human approvals.",
            hall.approvals.pending().len() as f64,
        ),
        (
            "wcp_hall_package_verifications",
            "Worker package verifications run since the configuration was last loaded (one per executed dispatch at most; none when a report is reused within [attestation] recheck_seconds).",
            loaded
                .attested
                .as_ref()
                .map_or(0.0, |a| a.verifications() as f64),
        ),
        (
            "wcp_hall_trace_spans_exported",
            "Spans exported over OTLP since start (0 when [tracing] is off; a count).",
            hall.tracing
                .as_ref()
                .map_or(0.0, |t| t.stats.exported.load(std::sync::atomic::Ordering::Relaxed) as f64),
        ),
        (
            "wcp_hall_trace_spans_dropped",
            "Spans dropped because the export queue ([tracing] max_queue) was full (a count).",
            hall.tracing
                .as_ref()
                .map_or(0.0, |t| t.stats.dropped.load(std::sync::atomic::Ordering::Relaxed) as f64),
        ),
        (
            "wcp_hall_trace_spans_export_failed",
            "Spans lost because their OTLP export failed (receiver down, refused, timed out; a count).",
            hall.tracing
                .as_ref()
                .map_or(0.0, |t| t.stats.failed.load(std::sync::atomic::Ordering::Relaxed) as f64),
        ),
        (
            "wcp_hall_config_generation",
            "Generation of the loaded configuration.",
            loaded.generation as f64,
        ),
        (
            "wcp_hall_receipt_log_failed",
            "1 when the receipt log failed its integrity and refuses every append (nothing can run until restart).",
            if log.failed.is_some() { 1.0 } else { 0.0 },
        ),
        (
            "wcp_hall_receipt_log_degraded",
            "1 while a resource the receipt log needs is missing (new dispatches are refused; it recovers by itself).",
            if matches!(log.state, crate::receipt::LogState::Degraded { .. }) {
                1.0
            } else {
                0.0
            },
        ),
        (
            "wcp_hall_receipt_appends_refused",
            "Receipt appends refused or failed since start because the log was degraded or failed (a count).",
            log.refusals as f64,
        ),
        (
            "wcp_hall_receipt_records",
            "Records in the receipt log (a count, exposed as a gauge).",
            log.records as f64,
        ),
        (
            "wcp_hall_receipt_fdatasyncs",
            "fdatasync calls the receipt log made since start: concurrent appends share one, so fewer than records when dispatches overlap (a count, exposed as a gauge).",
            log.fdatasyncs as f64,
        ),
        (
            "wcp_hall_receipt_reserve_bytes",
            "Bytes held in the receipt log's space reserve (0 while it is given up).",
            log.reserve_bytes as f64,
        ),
        (
            "wcp_hall_receipt_background_check_failed",
            "1 when the background verification of the records covered by the resume snapshot found a problem.",
            if matches!(log.background_check, crate::receipt::BackgroundCheck::Failed { .. }) {
                1.0
            } else {
                0.0
            },
        ),
        (
            "wcp_hall_receipt_unverified_records",
            "Records covered by the resume snapshot not yet re-verified in the background.",
            log.background_check.unverified() as f64,
        ),
    ]);
    let mut resp = text.into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    resp
}

/// Serves connections from `listener` until `shutdown` resolves, then drains in-flight
/// requests for at most `grace`.
///
/// Every accepted connection passes `conn::Connections::admit` (per-uid cap, total cap,
/// operators' share, idle eviction) before anything else is done for it; a refused one gets its
/// JSON answer at once (`refuse`). When `accept` itself fails for lack of descriptors, the spare
/// descriptor is given up to accept one pending connection, answer it 503 and close it (the
/// classic trick), so the backlog drains instead of the loop spinning or sleeping.
pub async fn serve(
    hall: Arc<Hall>,
    listener: tokio::net::UnixListener,
    shutdown: impl std::future::Future<Output = ()>,
    grace: Duration,
) {
    let app = app(hall.clone());
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let connections = hall.connections.clone();
    // A second handle on the listening socket, for the out-of-descriptors path (accepting
    // without the reactor), and the spare descriptor that path gives up.
    let (listener, fallback) = match listener.into_std() {
        Ok(std) => {
            let fallback = std.try_clone().ok();
            match tokio::net::UnixListener::from_std(std) {
                Ok(l) => (l, fallback),
                Err(e) => {
                    tracing::error!(error = %e, "cannot register the socket");
                    return;
                }
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot take the socket from the reactor");
            return;
        }
    };
    let mut spare = open_spare();
    let mut accept_warn = conn::RateLimitedWarn::new(Duration::from_secs(10));
    let mut refuse_warn = conn::RateLimitedWarn::new(Duration::from_secs(10));
    let lingering = Arc::new(AtomicUsize::new(0));
    let sweeper = {
        let connections = connections.clone();
        let hall = hall.clone();
        let every = (connections.limits().idle_timeout / 4)
            .clamp(Duration::from_millis(10), Duration::from_secs(1));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                for _ in 0..connections.close_idle(std::time::Instant::now()) {
                    hall.metrics.inc(
                        "wcp_hall_connections_closed_total",
                        &[("reason", "idle_timeout")],
                    );
                }
            }
        })
    };
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        let out_of_fds = matches!(e.raw_os_error(), Some(nix::libc::EMFILE | nix::libc::ENFILE));
                        let answered = out_of_fds && refuse_one_without_descriptors(fallback.as_ref(), &mut spare);
                        if answered {
                            hall.metrics.inc("wcp_hall_connections_refused_total", &[("reason", "descriptors")]);
                        }
                        if let Some(held_back) = accept_warn.due(std::time::Instant::now()) {
                            tracing::warn!(
                                error = %e,
                                answered_503 = answered,
                                similar_since_last_warning = held_back,
                                "accept failed"
                            );
                        }
                        if !answered {
                            // Not a descriptor problem (or nothing could be answered): a short
                            // pause, never a spin.
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                        continue;
                    }
                };
                let Ok(cred) = stream.peer_cred() else {
                    tracing::warn!("peer credentials unavailable; connection refused");
                    continue;
                };
                let peer = Peer { uid: cred.uid(), gid: cred.gid(), pid: cred.pid() };
                let operator = hall.current.get().identity.is_operator(&peer);
                let (conn, how) = match connections.admit(peer.uid, operator) {
                    Ok(admitted) => admitted,
                    Err(refusal) => {
                        hall.metrics.inc("wcp_hall_connections_refused_total", &[("reason", refusal.reason())]);
                        if let Some(held_back) = refuse_warn.due(std::time::Instant::now()) {
                            tracing::warn!(
                                uid = peer.uid,
                                pid = ?peer.pid,
                                reason = refusal.reason(),
                                open = connections.open(),
                                similar_since_last_warning = held_back,
                                "connection refused: over the connection limit"
                            );
                        }
                        refuse(stream, &refusal, &lingering);
                        continue;
                    }
                };
                if how == conn::Admitted::Evicted {
                    hall.metrics.inc("wcp_hall_connections_closed_total", &[("reason", "evicted")]);
                }
                // A worker must never reach its Hall (envelope::peer has the threat model).
                let base = match crate::envelope::peer::origin(
                    stream.as_fd(),
                    cred.uid(),
                    cred.pid(),
                    &hall.worker_uids,
                ) {
                    crate::envelope::peer::PeerOrigin::Outside => app.clone(),
                    refused => {
                        let why = match refused {
                            crate::envelope::peer::PeerOrigin::Worker { pid } => format!(
                                "process {pid} is one of this Hall's workers: workers never reach the Hall's API"
                            ),
                            crate::envelope::peer::PeerOrigin::Unknown(why) => format!(
                                "the connecting process cannot be told apart from a worker ({why})"
                            ),
                            crate::envelope::peer::PeerOrigin::Outside => unreachable!(),
                        };
                        tracing::warn!(uid = peer.uid, pid = ?peer.pid, "connection refused: {why}");
                        hall.metrics.inc("wcp_hall_connections_refused_total", &[("reason", "peer_is_worker")]);
                        refusal(why)
                    }
                };
                let conn = Arc::new(conn);
                let (begun, ended) = (conn.clone(), conn.clone());
                let svc = base
                    .map_request(move |mut req: Request<hyper::body::Incoming>| {
                        begun.begin();
                        req.extensions_mut().insert(peer);
                        req
                    })
                    .map_response(move |resp: Response| {
                        // The connection is idle again once hyper has written the whole answer
                        // and dropped its body.
                        let done = EndOnDrop(ended.clone());
                        resp.map(|body| {
                            Body::new(body.map_frame(move |frame| {
                                let _ = &done;
                                frame
                            }))
                        })
                    });
                let header_timeout = Duration::from_millis(hall.current.get().config.server.read_timeout_ms);
                let serving = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(header_timeout)
                    .serve_connection(
                        TokioIo::new(super::wire::JsonParseErrors::new(stream)),
                        TowerToHyperService::new(svc),
                    );
                let serving = graceful.watch(serving);
                tokio::spawn(async move {
                    tokio::select! {
                        ended = serving => {
                            if let Err(e) = ended {
                                tracing::debug!(error = %e, "connection ended with an error");
                            }
                        }
                        () = conn.closed() => {
                            tracing::debug!("idle connection closed (idle timeout, or room for another)");
                        }
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    drop(fallback);
    sweeper.abort();
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(grace) => {
            tracing::warn!("grace period over: closing the remaining connections");
        }
    }
}

/// Marks the connection idle when dropped (with the response body).
struct EndOnDrop(Arc<conn::Conn>);

impl Drop for EndOnDrop {
    fn drop(&mut self) {
        self.0.end();
    }
}

/// The descriptor kept in reserve for answering when `accept` fails with EMFILE.
fn open_spare() -> Option<std::fs::File> {
    std::fs::File::open("/dev/null").ok()
}

/// Gives up the spare descriptor, accepts one pending connection with it, answers it 503
/// `out_of_descriptors` and closes it, then takes the spare again. True if one was answered.
fn refuse_one_without_descriptors(
    fallback: Option<&std::os::unix::net::UnixListener>,
    spare: &mut Option<std::fs::File>,
) -> bool {
    let Some(listener) = fallback else {
        return false;
    };
    drop(spare.take());
    let answered = match listener.accept() {
        Ok((mut stream, _)) => {
            // A fresh socket's send buffer takes the whole answer; it is non-blocking (the
            // listener is), so this never waits.
            let _ = stream.write(&conn::Refusal::Descriptors.answer());
            true
        }
        Err(_) => false,
    };
    *spare = open_spare();
    answered
}

/// Answers a refused connection at once, without reading its request, and closes it. The
/// answer goes out with one non-blocking write (a fresh socket's buffer takes it); then, while
/// fewer than `conn::MAX_LINGERING` refusals linger, the connection stays open for at most
/// `conn::LINGER` so a peer that has not sent its request yet can do so and read the answer
/// instead of meeting EPIPE.
fn refuse(stream: tokio::net::UnixStream, refusal: &conn::Refusal, lingering: &Arc<AtomicUsize>) {
    let Ok(mut std) = stream.into_std() else {
        return;
    };
    let _ = std.write(&refusal.answer());
    let _ = std.shutdown(std::net::Shutdown::Write);
    if lingering.fetch_add(1, Ordering::AcqRel) >= conn::MAX_LINGERING {
        lingering.fetch_sub(1, Ordering::AcqRel);
        return;
    }
    let lingering = lingering.clone();
    tokio::spawn(async move {
        if let Ok(mut stream) = tokio::net::UnixStream::from_std(std) {
            let mut buf = [0u8; 4096];
            let _ = tokio::time::timeout(conn::LINGER, async {
                while let Ok(n) = stream.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                }
            })
            .await;
        }
        lingering.fetch_sub(1, Ordering::AcqRel);
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read as _;

    #[test]
    fn out_of_descriptors_the_spare_answers_one_waiting_connection() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        listener.set_nonblocking(true).unwrap();
        let mut spare = open_spare();
        // Nothing waiting: nothing answered, the spare is back.
        assert!(!refuse_one_without_descriptors(Some(&listener), &mut spare));
        assert!(spare.is_some());
        let mut client = std::os::unix::net::UnixStream::connect(&path).unwrap();
        assert!(refuse_one_without_descriptors(Some(&listener), &mut spare));
        assert!(spare.is_some(), "the spare is taken again");
        let mut got = String::new();
        client.read_to_string(&mut got).unwrap();
        assert!(got.starts_with("HTTP/1.1 503 "), "{got}");
        assert!(got.contains("\"code\":\"out_of_descriptors\""), "{got}");
        assert!(!refuse_one_without_descriptors(None, &mut spare));
    }
}
