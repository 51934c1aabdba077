//! The MCP bridge: `wcp-hall mcp` offers what a tenant may route on a Hall as MCP tools.
//!
//! Agent hosts (Claude Desktop, Claude Code, Codex, …) launch MCP servers as child processes and
//! talk JSON-RPC 2.0 over their stdin/stdout. This bridge is such a server, built on rmcp (the
//! official Rust MCP SDK), whose server runs the protocol ([`server`]) over a strict line
//! transport of our own ([`transport`]). It holds no authority of its own: every call becomes
//! HTTP requests to the Hall's Unix socket, and the Hall identifies the caller by
//! `SO_PEERCRED`, which is this process's uid/gid, inherited from the host that launched it.
//!
//! - `tools/list`: one tool per capability the Hall says this peer may route as the configured
//!   tenant in the configured context (`POST /wcp/capabilities/routable`, see
//!   `crate::hall::catalog`), with the input schema the Hall read from the worker package it would
//!   run (and its output schema when the package declares one). Capabilities that need a human
//!   approval first are listed and say so. The approval-outcome tool is listed for everyone;
//!   when the peer is an operator (probed) the WCP §5.8 approval tools are listed too.
//! - `tools/call`: the arguments are the RouteInput's `request`; the route context (tenant, env,
//!   data label, tenant risk, QoS class) comes from the command line; the correlation id is fresh
//!   (UUIDv4) unless the call's `_meta` carries one (see [`correlation_from_meta`]); a repeated
//!   call with the same correlation id is the same request to the Hall (an approval it already
//!   has is not asked for again). [`outcome_to_result`] turns the Hall's answer into the tool
//!   result.
//! - A call that needs a human stays open up to `--approval-wait` while the bridge asks the
//!   Hall, as the requester, for the approval's outcome (with progress notifications when the
//!   host asked for them), then answers with the worker's result or the denial; past the bound
//!   it answers `pending_approval` with the id, and the outcome tool collects it later.
//!
//! Threat model. The MCP host is the principal: it is trusted exactly as far as the Hall trusts
//! its uid, and the bridge cannot widen that (the tenant it claims is checked by the Hall against
//! the kernel identity; an approval's result is given only to the uid that asked, acting as the
//! tenant it asked as). What the bridge must not trust: the tool arguments and `_meta` from the
//! model (passed through as data, correlation ids and approval ids validated), the Hall's
//! answers and the worker's results (parsed defensively, never `unwrap`ped, capped at
//! `max_result_bytes` so a huge result cannot flood the host), the host's input (one strict
//! parser, bounded lines and requests in flight), and the Hall's availability (unreachable,
//! restarting or slow Halls give MCP errors, never a crash). stdout carries only protocol
//! messages; logs go to stderr.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rmcp::model::{CallToolResult, ContentBlock, JsonObject, Tool};
use serde_json::{Value, json};

pub mod compat;
pub mod server;
pub mod transport;

pub use server::HallBridge;
pub use transport::{MAX_MESSAGE_BYTES, MAX_OUTSTANDING};

/// The bridge's own tool: collect the outcome of an approval the caller asked for.
pub const TOOL_APPROVAL_OUTCOME: &str = "wcp.approval.outcome";

/// How long a call that needs a human is kept open by default (under the 60 s request timeout
/// common MCP clients default to).
pub const DEFAULT_APPROVAL_WAIT: Duration = Duration::from_secs(50);

/// WCP §5.8's names for the operator tools (used as-is with `--dotted-names`).
pub const TOOL_APPROVALS_LIST: &str = "wcp.approvals.list";
pub const TOOL_APPROVAL_RESOLVE: &str = "wcp.approval.resolve";
pub const TOOL_APPROVAL_ESCALATE: &str = "wcp.approval.escalate";

/// Default cap on the bytes of a worker result passed back to the host (1 MiB).
pub const DEFAULT_MAX_RESULT_BYTES: usize = 1024 * 1024;

/// Why the bridge could not start.
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    #[error("MCP transport error: {0}")]
    Transport(String),
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
}

/// The route context every tool call is dispatched with (RouteInput fields other than the
/// capability, the correlation id and the request). The Hall validates the values.
#[derive(Debug, Clone)]
pub struct RouteDefaults {
    pub tenant_id: String,
    pub env: String,
    pub data_label: String,
    pub tenant_risk: String,
    pub qos_class: String,
}

/// Everything the bridge needs.
#[derive(Debug, Clone)]
pub struct BridgeConfig {
    /// The running Hall's socket.
    pub socket: PathBuf,
    pub defaults: RouteDefaults,
    /// Per-request timeout for calls to the Hall (a dispatch may wait for a worker).
    pub timeout: Duration,
    /// Worker results larger than this (as JSON text) are replaced by a notice.
    pub max_result_bytes: usize,
    /// Keep dotted names (`cap.hello.greet`, `wcp.approvals.list`) instead of portable ones
    /// (`cap_hello_greet`). MCP allows dots; several model APIs do not.
    pub dotted_names: bool,
    /// How long a call that needs a human approval is kept open waiting for the decision
    /// (zero: answer `pending_approval` at once).
    pub approval_wait: Duration,
}

/// The MCP tool name for a capability (or WCP tool) id.
///
/// With `dotted`, ids are kept when they fit MCP's tool-name alphabet `[A-Za-z0-9_.-]`
/// (1–128 characters). Otherwise every character outside `[A-Za-z0-9_-]` becomes `_`:
/// `cap.hello.greet` → `cap_hello_greet`, which model APIs that refuse dots also accept.
pub fn tool_name(id: &str, dotted: bool) -> String {
    let allowed =
        |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-' || (dotted && c == '.');
    let mut name: String = id
        .chars()
        .map(|c| if allowed(c) { c } else { '_' })
        .collect();
    if name.is_empty() {
        name.push('_');
    }
    name.chars().take(128).collect()
}

/// The correlation id a call asks for in its `_meta`, if any: `correlation_id` (or
/// `wcp/correlation_id`, or an `idempotency_key`: to the Hall the correlation id is the key
/// that makes a repeated call the same request) when it is 1–128 printable ASCII characters
/// without spaces, else the
/// trace id of a well-formed W3C `traceparent`, so the Hall's receipts join the host's trace.
pub fn correlation_from_meta(meta: &JsonObject) -> Option<String> {
    for key in [
        "correlation_id",
        "wcp/correlation_id",
        "idempotency_key",
        "wcp/idempotency_key",
    ] {
        if let Some(id) = meta.get(key).and_then(Value::as_str)
            && !id.is_empty()
            && id.len() <= 128
            && id.bytes().all(|b| b.is_ascii_graphic())
        {
            return Some(id.to_owned());
        }
    }
    let tp = meta.get("traceparent").and_then(Value::as_str)?;
    let parts: Vec<&str> = tp.split('-').collect();
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    if parts.len() == 4
        && hex(parts[0], 2)
        && parts[0] != "ff"
        && hex(parts[1], 32)
        && parts[1] != "0".repeat(32)
        && hex(parts[2], 16)
        && hex(parts[3], 2)
    {
        return Some(parts[1].to_owned());
    }
    None
}

/// Builds the RouteInput for one tool call.
pub fn route_input(
    defaults: &RouteDefaults,
    capability_id: &str,
    correlation_id: &str,
    request: JsonObject,
) -> Value {
    json!({
        "capability_id": capability_id,
        "env": defaults.env,
        "data_label": defaults.data_label,
        "tenant_risk": defaults.tenant_risk,
        "qos_class": defaults.qos_class,
        "tenant_id": defaults.tenant_id,
        "correlation_id": correlation_id,
        "request": request,
    })
}

/// The decision summary carried in structured content.
fn decision_summary(body: &Value) -> Value {
    let d = &body["decision"];
    json!({
        "decision_id": d.get("decision_id"),
        "matched_rule_id": d.get("matched_rule_id"),
        "selected_worker_species_id": d.get("selected_worker_species_id"),
        "worker_id": body["execution"].get("worker_id"),
        "deny_code": d["deny_reason_if_denied"].get("code"),
        "deny_message": d["deny_reason_if_denied"].get("message"),
    })
}

/// The `_meta` key of a tool result that carries the Hall's side of a dispatch (status,
/// capability, correlation id, receipt, decision summary, and the error or pending approval).
pub const META_DISPATCH: &str = "wcp-hall/dispatch";

/// The `_meta` key of a tool error the bridge or the Hall's HTTP layer produced (`{code,
/// message}`).
pub const META_ERROR: &str = "wcp-hall/error";

/// `text` with WCP §5.8's tool names (`wcp.approval.resolve`, …, which the router's own deny
/// messages use) replaced by the names this bridge lists them under, so every message the
/// model reads names a tool it can call.
pub fn as_listed(text: &str, dotted: bool) -> String {
    let mut text = text.to_owned();
    if !dotted {
        for id in [
            TOOL_APPROVALS_LIST,
            TOOL_APPROVAL_RESOLVE,
            TOOL_APPROVAL_ESCALATE,
            TOOL_APPROVAL_OUTCOME,
        ] {
            text = text.replace(id, &tool_name(id, dotted));
        }
    }
    text
}

fn meta_with(key: &str, value: Value) -> rmcp::model::MetaObject {
    let mut m = JsonObject::new();
    m.insert(key.into(), value);
    rmcp::model::MetaObject(m)
}

/// Turns the Hall's answer to `POST /wcp/dispatch` (HTTP 200) into an MCP tool result.
///
/// The result is the worker's: on `completed`, `structuredContent` is the worker's result when
/// it is a JSON object, and the text block is exactly its JSON serialisation (MCP: the text
/// SHOULD be the serialisation of the structured content), so a client that prefers either one
/// gives the model the same answer. The Hall's metadata is in the result's `_meta` under
/// [`META_DISPATCH`]: `{status, capability_id, correlation_id, receipt, decision}` plus `error`,
/// `pending_approval` or `truncated`.
///
/// Everything else is a tool error (`isError: true`) whose text starts with a stable code and
/// carries no structured content: `denied`: the WCP deny code and message (an input the
/// worker's schema refuses is `DENY_INVALID_INPUT`, naming the field); `failed`: the Hall's
/// code (`execution.error.code`), its message and the worker's own output when it printed one
/// JSON value; `pending_approval`: the approval id, level and expiry and the approval tool as
/// listed (`dotted` as in [`tool_name`]); a result over `max_bytes`: `result_too_large`.
pub fn outcome_to_result(
    body: &Value,
    capability_id: &str,
    correlation_id: &str,
    max_bytes: usize,
    dotted: bool,
) -> CallToolResult {
    let status = body["status"].as_str().unwrap_or("unknown").to_owned();
    let mut hall = json!({
        "status": status,
        "capability_id": capability_id,
        "correlation_id": correlation_id,
        "receipt": body["execution"].get("receipt"),
        "decision": decision_summary(body),
    });
    let decision = &body["decision"];
    let mut structured = None;
    let (text, is_error) = match status.as_str() {
        "completed" | "dry_run" => {
            let value = body.get("result").cloned().unwrap_or(Value::Null);
            let text = value.to_string();
            if text.len() > max_bytes {
                hall["truncated"] = json!({"result_bytes": text.len(), "limit": max_bytes});
                (
                    format!(
                        "result_too_large: the worker's result is {} bytes, over this bridge's \
                         limit of {max_bytes} (wcp-hall mcp --max-result-bytes); it was not \
                         passed on. Correlation id {correlation_id}; the evidence receipt \
                         records the run.",
                        text.len()
                    ),
                    true,
                )
            } else {
                if value.is_object() {
                    structured = Some(value);
                }
                (text, false)
            }
        }
        "pending_approval" => {
            let pending = json!({
                "pending_approval_id": body.get("pending_approval_id"),
                "supervisor_level": body.get("supervisor_level"),
                "approval_expires_at": body.get("approval_expires_at"),
            });
            hall["pending_approval"] = pending.clone();
            let id = pending["pending_approval_id"].as_str().unwrap_or("?");
            (
                format!(
                    "pending_approval: {capability_id} needs human approval ({}): approval {id} \
                     at level {}, expires {}. Nothing has run yet. Once an operator has decided \
                     (wcp-hall approvals approve {id}), call the {} tool with {{\"id\": \"{id}\"}} \
                     to receive the result, or repeat this call with _meta.correlation_id \
                     \"{correlation_id}\".",
                    decision["deny_reason_if_denied"]["reason"]
                        .as_str()
                        .or(decision["deny_reason_if_denied"]["message"].as_str())
                        .unwrap_or("REQUIRE_HUMAN"),
                    pending["supervisor_level"].as_str().unwrap_or("?"),
                    pending["approval_expires_at"].as_str().unwrap_or("?"),
                    tool_name(TOOL_APPROVAL_OUTCOME, dotted),
                ),
                true,
            )
        }
        "denied" if closed_approval(body).is_some() => {
            // A human denied the approval, or nobody decided in time: say that, not the
            // router's "submit the pending approval" message that asked for the human.
            let (status, id) = closed_approval(body).unwrap_or_default();
            hall["approval"] = json!({"pending_approval_id": id, "status": status});
            let code = if status == "expired" {
                "approval_expired"
            } else {
                "approval_denied"
            };
            let why = if status == "expired" {
                "nobody decided it before it expired"
            } else {
                "an operator denied it"
            };
            (
                format!(
                    "{code}: {capability_id} did not run: approval {id} was not given ({why}). \
                     Nothing ran; the Hall's receipt records the denial."
                ),
                true,
            )
        }
        "denied" => {
            let code = decision["deny_reason_if_denied"]["code"]
                .as_str()
                .unwrap_or("DENY_UNKNOWN");
            let message = decision["deny_reason_if_denied"]["message"]
                .as_str()
                .unwrap_or("denied by the Hall");
            (format!("{code}: {message}"), true)
        }
        "failed" => {
            // The Hall's code and message first (`not_json`, `timed_out`, … or an aborted run's
            // code), then what the worker itself printed, if it printed one JSON value.
            let error = &body["execution"]["error"];
            let mut text = match error["code"].as_str() {
                Some(code) => format!(
                    "the run failed: {code}: {}",
                    error["message"].as_str().unwrap_or("")
                ),
                None => "the run failed (the Hall gave no reason)".to_owned(),
            };
            if error.is_object() {
                hall["error"] = error.clone();
            }
            if let Some(result) = body.get("result").filter(|v| !v.is_null()) {
                let result = result.to_string();
                if result.len() > max_bytes {
                    text.push_str(&format!(
                        "; the worker's output ({} bytes) is omitted",
                        result.len()
                    ));
                } else {
                    text.push_str(&format!("; the worker's output: {result}"));
                }
            }
            (text, true)
        }
        other => (format!("the Hall answered with status {other:?}"), true),
    };
    let mut r = if is_error {
        // Messages from the Hall (deny reasons) may name the WCP tools by their ids.
        CallToolResult::error(vec![ContentBlock::text(as_listed(&text, dotted))])
    } else {
        CallToolResult::success(vec![ContentBlock::text(text)])
    };
    r.structured_content = structured;
    r.meta = Some(meta_with(META_DISPATCH, hall));
    r
}

/// `(status, id)` of the approval a final denial closed (denied or expired), if it is one.
fn closed_approval(body: &Value) -> Option<(String, String)> {
    let status = body["escalation_context"]["approval_status"].as_str()?;
    matches!(status, "denied" | "expired").then(|| {
        (
            status.to_owned(),
            body["pending_approval_id"]
                .as_str()
                .unwrap_or("?")
                .to_owned(),
        )
    })
}

/// A tool error (isError: true): the text `code: message`, and `{code, message}` in `_meta`
/// under [`META_ERROR`].
pub(crate) fn tool_error(code: &str, message: impl Into<String>) -> CallToolResult {
    let message = message.into();
    let mut r = CallToolResult::error(vec![ContentBlock::text(format!("{code}: {message}"))]);
    r.meta = Some(meta_with(
        META_ERROR,
        json!({"status": "error", "code": code, "message": message}),
    ));
    r
}

/// A tool error for an HTTP error answer of the Hall (`{code, message}` bodies).
pub(crate) fn http_error(status: u16, body: &Value) -> CallToolResult {
    let code = body["code"].as_str().unwrap_or("hall_error");
    let message = body["message"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| body.to_string());
    let hint = match status {
        403 => " (the caller's uid is not an operator of this Hall)",
        429 => " (the Hall is overloaded; retry later)",
        503 => " (the Hall is shutting down or unhealthy; retry later)",
        _ => "",
    };
    tool_error(code, format!("HTTP {status}: {message}{hint}"))
}

/// The Hall's endpoint listing what a tenant may route.
pub const ROUTABLE_PATH: &str = "/wcp/capabilities/routable";

/// The permissive input schema: any JSON object.
fn any_object() -> JsonObject {
    let mut m = JsonObject::new();
    m.insert("type".into(), Value::from("object"));
    m
}

/// Turns the Hall's listing (`POST /wcp/capabilities/routable`) into tools and the table from
/// tool name to capability id. Entries without a `capability_id` are skipped; a missing or
/// non-object schema becomes `{"type": "object"}`. Capabilities that need a human say so in
/// their description and in `_meta` (`wcp/routing`, `wcp/supervisor_level`).
pub fn tools_from_listing(listing: &Value, dotted: bool) -> (Vec<Tool>, BTreeMap<String, String>) {
    let mut names = BTreeMap::new();
    let mut tools = Vec::new();
    let empty = Vec::new();
    for cap in listing["capabilities"].as_array().unwrap_or(&empty) {
        let Some(id) = cap["capability_id"].as_str() else {
            continue;
        };
        let mut name = tool_name(id, dotted);
        if names.contains_key(&name) {
            // Two ids that map to one name (cap.a_b, cap.a.b): keep both, distinctly.
            name = format!("{}_{}", name, names.len());
        }
        let text = |k: &str| cap[k].as_str().unwrap_or("");
        let schema = match &cap["input_schema"] {
            Value::Object(m) => m.clone(),
            _ => any_object(),
        };
        let what = schema
            .get("description")
            .and_then(Value::as_str)
            .map(|d| format!(" {d}"))
            .unwrap_or_default();
        let routing = text("routing");
        let human = if routing == "requires_human" {
            format!(
                " For this tenant and context it needs human approval first (supervisor level \
                 {}: {}): a call is a tool error naming pending_approval and the approval id, \
                 and runs once an operator approves.",
                text("supervisor_level"),
                text("approval_reason"),
            )
        } else {
            String::new()
        };
        let worker = match (cap["worker_id"].as_str(), cap["worker_species_id"].as_str()) {
            (Some(w), Some(s)) => format!("worker {w} (species {s})"),
            (None, Some(s)) => format!("worker species {s}"),
            _ => "a worker the Hall selects".to_owned(),
        };
        let description = format!(
            "WCP capability {id}, served by {worker} and governed by the Hall: each call is \
             routed under the Hall's rules and policy, runs in an attested worker's privilege \
             envelope and is recorded in a signed evidence receipt; it may be denied (tool error \
             with the WCP deny code).{human}{what}"
        );
        let mut meta = JsonObject::new();
        for (key, field) in [
            ("wcp/capability_id", "capability_id"),
            ("wcp/routing", "routing"),
            ("wcp/supervisor_level", "supervisor_level"),
            ("wcp/matched_rule_id", "matched_rule_id"),
            ("wcp/worker_id", "worker_id"),
            ("wcp/input_schema_source", "input_schema_source"),
            ("wcp/input_schema_note", "input_schema_note"),
            ("wcp/output_schema_note", "output_schema_note"),
        ] {
            if let Some(v) = cap.get(field).filter(|v| !v.is_null()) {
                meta.insert(key.into(), v.clone());
            }
        }
        let mut tool = Tool::new(name.clone(), description, schema)
            .with_title(id.to_owned())
            .with_meta(rmcp::model::MetaObject(meta));
        if let Value::Object(output) = &cap["output_schema"] {
            tool = tool.with_raw_output_schema(Arc::new(output.clone()));
        }
        names.insert(name, id.to_owned());
        tools.push(tool);
    }
    (tools, names)
}

/// Protocol versions the bridge speaks, newest first: the `initialize` handshake up to
/// 2025-11-25, and 2026-07-28's per-request lifecycle (`server/discover`). rmcp negotiates;
/// [`compat`] sends only the fields the agreed version defines.
pub const SUPPORTED_VERSIONS: [&str; 5] = [
    "2026-07-28",
    "2025-11-25",
    "2025-06-18",
    "2025-03-26",
    "2024-11-05",
];

/// Runs the bridge on stdin/stdout until the host closes stdin. See [`serve`].
pub async fn serve_stdio(cfg: BridgeConfig) -> Result<(), BridgeError> {
    serve(cfg, tokio::io::stdin(), tokio::io::stdout()).await
}

/// Runs the bridge over newline-delimited JSON-RPC 2.0 on `input`/`output` until `input` ends
/// (and the requests in flight then are answered).
///
/// rmcp's server runs the protocol over [`transport::LineTransport`]: requests are worked on
/// concurrently (at most [`server::MAX_CONCURRENT_CALLS`] talk to the Hall at once), answered
/// in any order (JSON-RPC matches answers by id), and `notifications/cancelled` abandons the
/// request (its connection to the Hall is dropped) with no answer sent, as MCP asks. Pings are
/// answered while calls are busy.
pub async fn serve<R, W>(cfg: BridgeConfig, input: R, output: W) -> Result<(), BridgeError>
where
    R: tokio::io::AsyncRead + Unpin + Send + 'static,
    W: tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use rmcp::ServiceExt;
    // The end of the input waits this long for calls in flight (a call that waits for a human
    // is bounded by --approval-wait).
    let drain = cfg.timeout + cfg.approval_wait + Duration::from_secs(5);
    let transport = transport::LineTransport::new(input, output, drain);
    let running = server::HallBridge::new(cfg)
        .serve(transport)
        .await
        .map_err(|e| BridgeError::Transport(e.to_string()))?;
    running
        .waiting()
        .await
        .map_err(|e| BridgeError::Transport(format!("the MCP session failed: {e}")))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_names_are_portable_unless_dots_are_asked_for() {
        assert_eq!(tool_name("cap.hello.greet", false), "cap_hello_greet");
        assert_eq!(tool_name("cap.hello.greet", true), "cap.hello.greet");
        assert_eq!(tool_name("wcp.approvals.list", false), "wcp_approvals_list");
        assert_eq!(tool_name("cap.a b/c", true), "cap.a_b_c");
        assert_eq!(tool_name("", false), "_");
        assert_eq!(tool_name(&"x".repeat(300), false).len(), 128);
    }

    #[test]
    fn correlation_ids_come_from_meta_only_when_well_formed() {
        let meta = |v: Value| v.as_object().cloned().unwrap();
        assert_eq!(
            correlation_from_meta(&meta(json!({"correlation_id": "abc-1"}))),
            Some("abc-1".into())
        );
        assert_eq!(
            correlation_from_meta(&meta(json!({"correlation_id": "has space"}))),
            None
        );
        assert_eq!(
            correlation_from_meta(&meta(json!({"idempotency_key": "retry-7"}))),
            Some("retry-7".into())
        );
        assert_eq!(
            correlation_from_meta(&meta(json!({"correlation_id": "x".repeat(129)}))),
            None
        );
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(
            correlation_from_meta(&meta(json!({"traceparent": tp}))),
            Some("4bf92f3577b34da6a3ce929d0e0e4736".into())
        );
        let zero = format!("00-{}-00f067aa0ba902b7-01", "0".repeat(32));
        assert_eq!(
            correlation_from_meta(&meta(json!({"traceparent": zero}))),
            None
        );
        assert_eq!(
            correlation_from_meta(&meta(json!({"traceparent": "garbage"}))),
            None
        );
    }

    fn completed(result: Value) -> Value {
        json!({"status": "completed", "denied": false, "supervisor_required": false,
               "decision": {"decision_id": "d1", "matched_rule_id": "rr", "selected_worker_species_id": "wrk.x",
                            "deny_reason_if_denied": null},
               "result": result,
               "execution": {"worker_id": "org.x.1", "receipt": {"seq": 3, "receipt_hash": "h"}}})
    }

    /// The Hall's side of a result (`_meta["wcp-hall/dispatch"]`).
    fn hall_meta(r: &CallToolResult) -> Value {
        r.meta.as_ref().unwrap().0[META_DISPATCH].clone()
    }

    fn text_of(r: &CallToolResult) -> String {
        let v = serde_json::to_value(&r.content[0]).unwrap();
        v["text"].as_str().unwrap().to_owned()
    }

    #[test]
    fn a_completed_dispatch_is_the_workers_result_with_the_hall_in_meta() {
        let r = outcome_to_result(
            &completed(json!({"greeting": "Hello, Ada!"})),
            "cap.x",
            "c1",
            1000,
            false,
        );
        assert_eq!(r.is_error, Some(false));
        let s = r.structured_content.clone().unwrap();
        assert_eq!(s, json!({"greeting": "Hello, Ada!"}));
        // The text block is exactly the serialisation of structuredContent.
        assert_eq!(text_of(&r), serde_json::to_string(&s).unwrap());
        let m = hall_meta(&r);
        assert_eq!(m["status"], "completed");
        assert_eq!(m["correlation_id"], "c1");
        assert_eq!(m["receipt"]["seq"], 3);
        assert_eq!(m["decision"]["matched_rule_id"], "rr");
        assert_eq!(m["decision"]["worker_id"], "org.x.1");
        let wire = serde_json::to_value(&r).unwrap();
        assert_eq!(wire["_meta"]["wcp-hall/dispatch"]["receipt"]["seq"], 3);
        // A result that is not an object is text only: structuredContent must be an object.
        let r = outcome_to_result(&completed(json!([1, 2])), "cap.x", "c1", 1000, false);
        assert_eq!(r.structured_content, None);
        assert_eq!(text_of(&r), "[1,2]");
    }

    #[test]
    fn an_oversized_result_is_a_tool_error_not_passed_on() {
        let big = json!({"blob": "x".repeat(5000)});
        let r = outcome_to_result(&completed(big), "cap.x", "c1", 1000, false);
        assert_eq!(r.is_error, Some(true));
        assert_eq!(r.structured_content, None);
        assert_eq!(hall_meta(&r)["truncated"]["limit"], 1000);
        let text = text_of(&r);
        assert!(text.starts_with("result_too_large: "), "{text}");
        assert!(text.contains("over this bridge's limit"));
        assert!(text.len() < 1000);
    }

    #[test]
    fn a_denial_is_a_tool_error_with_the_deny_code() {
        let body = json!({"status": "denied", "denied": true, "supervisor_required": false,
            "decision": {"matched_rule_id": "NO_MATCH", "deny_reason_if_denied":
                {"code": "DENY_NO_MATCHING_RULE", "message": "no rule"}},
            "execution": {"receipt": {"seq": 1, "receipt_hash": "h"}}});
        let r = outcome_to_result(&body, "cap.y", "c1", 1000, false);
        assert_eq!(r.is_error, Some(true));
        assert_eq!(r.structured_content, None);
        assert_eq!(
            hall_meta(&r)["decision"]["deny_code"],
            "DENY_NO_MATCHING_RULE"
        );
        assert_eq!(hall_meta(&r)["receipt"]["seq"], 1);
        assert_eq!(text_of(&r), "DENY_NO_MATCHING_RULE: no rule");
    }

    #[test]
    fn a_failed_run_is_a_tool_error_naming_the_code() {
        let body = json!({"status": "failed", "denied": false, "supervisor_required": false,
            "decision": {"matched_rule_id": "rr", "deny_reason_if_denied": null},
            "execution": {"receipt": {"seq": 4, "receipt_hash": "h"},
                          "error": {"code": "not_json", "message": "the worker's stdout is not exactly one JSON value: expected value"}}});
        let r = outcome_to_result(&body, "cap.y", "c1", 1000, false);
        assert_eq!(r.is_error, Some(true));
        assert_eq!(r.structured_content, None);
        let m = hall_meta(&r);
        assert_eq!(m["error"]["code"], "not_json");
        assert_eq!(m["receipt"]["seq"], 4);
        assert_eq!(
            text_of(&r),
            "the run failed: not_json: the worker's stdout is not exactly one JSON value: expected value"
        );
        // A worker that exited non-zero with its own error object: both are named.
        let mut body = body;
        body["execution"]["error"] = json!({"code": "exit_status", "message": "the worker exited with status 2: bad_input: no"});
        body["result"] = json!({"error": {"code": "bad_input", "message": "no"}});
        let r = outcome_to_result(&body, "cap.y", "c1", 1000, false);
        let text = text_of(&r);
        assert!(text.starts_with("the run failed: exit_status: "), "{text}");
        assert!(text.contains(r#"the worker's output: {"error""#), "{text}");
        let r = outcome_to_result(&body, "cap.y", "c1", 10, false);
        assert!(text_of(&r).contains("is omitted"));
    }

    #[test]
    fn a_pending_approval_names_the_outcome_tool_as_listed() {
        let body = json!({"status": "pending_approval", "denied": false, "supervisor_required": true,
            "supervisor_level": "L2", "pending_approval_id": "ap-1", "approval_expires_at": "2030-01-01T00:00:00Z",
            "decision": {"deny_reason_if_denied": {"code": "DENY_REQUIRES_HUMAN",
                "message": "Submit the pending approval via wcp.approval.resolve."}}});
        for dotted in [false, true] {
            let r = outcome_to_result(&body, "cap.y", "c1", 1000, dotted);
            // Not the tool's output (nothing ran), so not a success an output schema could
            // describe.
            assert_eq!(r.is_error, Some(true));
            assert_eq!(r.structured_content, None);
            let m = hall_meta(&r);
            assert_eq!(m["status"], "pending_approval");
            assert_eq!(m["pending_approval"]["pending_approval_id"], "ap-1");
            assert_eq!(m["pending_approval"]["supervisor_level"], "L2");
            let text = text_of(&r);
            assert!(text.starts_with("pending_approval: "), "{text}");
            let listed = tool_name(TOOL_APPROVAL_OUTCOME, dotted);
            assert!(text.contains(&format!("call the {listed} tool")), "{text}");
            assert!(text.contains("ap-1") && text.contains("\"c1\""), "{text}");
            if !dotted {
                // Not even where the router's own message names the WCP tool.
                assert!(!text.contains("wcp.approval"), "{text}");
            }
        }
    }

    #[test]
    fn a_closed_approval_is_a_denial_that_says_so() {
        for (status, code) in [
            ("denied", "approval_denied: "),
            ("expired", "approval_expired: "),
        ] {
            let body = json!({"status": "denied", "denied": true, "supervisor_required": false,
                "pending_approval_id": "ap-9",
                "escalation_context": {"approval_status": status, "reason": "r"},
                "decision": {"deny_reason_if_denied": {"code": "DENY_REQUIRES_HUMAN_APPROVAL",
                    "message": "Submit the pending approval via wcp.approval.resolve."}},
                "execution": {"receipt": {"seq": 5, "receipt_hash": "h"}}});
            let r = outcome_to_result(&body, "cap.y", "c1", 1000, false);
            assert_eq!(r.is_error, Some(true));
            let text = text_of(&r);
            assert!(text.starts_with(code), "{text}");
            assert!(text.contains("ap-9") && !text.contains("Submit"), "{text}");
            let m = hall_meta(&r);
            assert_eq!(m["approval"]["status"], status);
            assert_eq!(m["receipt"]["seq"], 5);
        }
    }

    #[test]
    fn a_declared_output_schema_becomes_the_tools_output_schema() {
        let listing = json!({"capabilities": [
            {"capability_id": "cap.hello.greet", "routing": "allowed",
             "input_schema": {"type": "object", "required": ["name"]},
             "output_schema": {"type": "object", "required": ["greeting"]}},
            {"capability_id": "cap.other", "routing": "allowed", "output_schema": "junk"}]});
        let (tools, _) = tools_from_listing(&listing, false);
        let wire = serde_json::to_value(&tools).unwrap();
        assert_eq!(wire[0]["outputSchema"]["required"], json!(["greeting"]));
        assert!(wire[1].get("outputSchema").is_none(), "{wire}");
    }

    #[test]
    fn garbage_from_the_hall_is_an_error_not_a_panic() {
        for body in [
            json!(null),
            json!("text"),
            json!({"status": 5}),
            json!([1, 2]),
        ] {
            let r = outcome_to_result(&body, "cap.y", "c1", 1000, false);
            assert_eq!(r.is_error, Some(true), "{body}");
        }
    }
}
