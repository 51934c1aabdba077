//! The MCP bridge: `wcp-hall mcp` offers every capability a running Hall routes as an MCP tool.
//!
//! Agent hosts (Claude Desktop, Claude Code, Codex, …) launch MCP servers as child processes and
//! talk JSON-RPC 2.0 over their stdin/stdout. This bridge is such a server, built on rmcp (the
//! official Rust MCP SDK). It holds no authority of its own: every call becomes one HTTP request
//! to the Hall's Unix socket, and the Hall identifies the caller by `SO_PEERCRED`, which is this
//! process's uid/gid, inherited from the host that launched it.
//!
//! - `tools/list`: one tool per capability of `GET /wcp/capabilities`. Its input schema is the
//!   worker package's `config.schema.json` (found through [`SchemaIndex`], because the Hall does
//!   not serve schemas yet); a capability without one gets the permissive `{"type": "object"}`.
//!   When the peer is an operator (probed, see [`HallBridge::probe_operator`]) the WCP §5.8
//!   approval tools are listed too.
//! - `tools/call`: the arguments are the RouteInput's `request`; the route context (tenant, env,
//!   data label, tenant risk, QoS class) comes from the command line; the correlation id is fresh
//!   (UUIDv4) unless the call's `_meta` carries one (see [`correlation_from_meta`]).
//!   [`outcome_to_result`] turns the Hall's answer into the tool result.
//!
//! Threat model. The MCP host is the principal: it is trusted exactly as far as the Hall trusts
//! its uid, and the bridge cannot widen that (the tenant it claims is checked by the Hall against
//! the kernel identity). What the bridge must not trust: the tool arguments and `_meta` from the
//! model (passed through as data, correlation ids validated), the Hall's answers and the worker's
//! results (parsed defensively, never `unwrap`ped, capped at `max_result_bytes` so a huge result
//! cannot flood the host), and the Hall's availability (unreachable, restarting or slow Halls give
//! MCP errors, never a crash). stdout carries only protocol messages; logs go to stderr.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::Method;
use rmcp::model::{
    CallToolRequestParams, CallToolResult, ContentBlock, ErrorData, Implementation,
    InitializeResult, JsonObject, ServerCapabilities, Tool, ToolAnnotations,
};
use serde_json::{Map, Value, json};
use tokio::io::AsyncReadExt;

use crate::client::{self, ClientError};

/// WCP §5.8's names for the operator tools (used as-is with `--dotted-names`).
pub const TOOL_APPROVALS_LIST: &str = "wcp.approvals.list";
pub const TOOL_APPROVAL_RESOLVE: &str = "wcp.approval.resolve";
pub const TOOL_APPROVAL_ESCALATE: &str = "wcp.approval.escalate";

/// Default cap on the bytes of a worker result passed back to the host (1 MiB).
pub const DEFAULT_MAX_RESULT_BYTES: usize = 1024 * 1024;

/// Why the bridge could not start.
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    #[error("cannot read the schema directory {}: {source}", .dir.display())]
    SchemaDir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {message}", .path.display())]
    SchemaFile { path: PathBuf, message: String },
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
    /// Input schemas per capability.
    pub schemas: SchemaIndex,
    /// Per-request timeout for calls to the Hall (a dispatch may wait for a worker).
    pub timeout: Duration,
    /// Worker results larger than this (as JSON text) are replaced by a notice.
    pub max_result_bytes: usize,
    /// Keep dotted names (`cap.hello.greet`, `wcp.approvals.list`) instead of portable ones
    /// (`cap_hello_greet`). MCP allows dots; several model APIs do not.
    pub dotted_names: bool,
}

/// Capability id → the input schema of the worker package that serves it.
///
/// Built from a directory of worker packages (`<dir>/*/record.json` names the capabilities,
/// `<dir>/*/config.schema.json` is the schema), such as the bundled `workers/`.
#[derive(Debug, Clone, Default)]
pub struct SchemaIndex {
    schemas: BTreeMap<String, JsonObject>,
}

impl SchemaIndex {
    /// Reads every package directory under `dir`. Directories without a `record.json` are
    /// skipped; a malformed `record.json` or `config.schema.json` is an error naming the file.
    pub fn load(dir: &Path) -> Result<Self, BridgeError> {
        let entries = std::fs::read_dir(dir).map_err(|source| BridgeError::SchemaDir {
            dir: dir.to_owned(),
            source,
        })?;
        let mut paths: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.join("record.json").is_file())
            .collect();
        paths.sort();
        let mut schemas = BTreeMap::new();
        for pkg in paths {
            let record = read_json_object(&pkg.join("record.json"))?;
            let schema_path = pkg.join("config.schema.json");
            if !schema_path.is_file() {
                continue;
            }
            let schema = read_json_object(&schema_path)?;
            let caps = record
                .get("capabilities")
                .and_then(Value::as_array)
                .ok_or_else(|| BridgeError::SchemaFile {
                    path: pkg.join("record.json"),
                    message: "has no \"capabilities\" list".into(),
                })?;
            for cap in caps.iter().filter_map(Value::as_str) {
                schemas.insert(cap.to_owned(), schema.clone());
            }
        }
        Ok(SchemaIndex { schemas })
    }

    /// The schema for `capability_id`, or the permissive `{"type": "object"}`.
    pub fn get(&self, capability_id: &str) -> JsonObject {
        self.schemas.get(capability_id).cloned().unwrap_or_else(|| {
            let mut m = JsonObject::new();
            m.insert("type".into(), Value::from("object"));
            m
        })
    }

    /// How many capabilities have a schema.
    pub fn len(&self) -> usize {
        self.schemas.len()
    }

    pub fn is_empty(&self) -> bool {
        self.schemas.is_empty()
    }
}

fn read_json_object(path: &Path) -> Result<JsonObject, BridgeError> {
    let text = std::fs::read_to_string(path).map_err(|e| BridgeError::SchemaFile {
        path: path.to_owned(),
        message: format!("cannot read: {e}"),
    })?;
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(BridgeError::SchemaFile {
            path: path.to_owned(),
            message: "is not a JSON object".into(),
        }),
        Err(e) => Err(BridgeError::SchemaFile {
            path: path.to_owned(),
            message: format!("is not valid JSON: {e}"),
        }),
    }
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
/// `wcp/correlation_id`) when it is 1–128 printable ASCII characters without spaces, else the
/// trace id of a well-formed W3C `traceparent`, so the Hall's receipts join the host's trace.
pub fn correlation_from_meta(meta: &JsonObject) -> Option<String> {
    for key in ["correlation_id", "wcp/correlation_id"] {
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

/// Turns the Hall's answer to `POST /wcp/dispatch` (HTTP 200) into an MCP tool result.
///
/// `completed`: the worker's result as JSON text (or a notice when it exceeds `max_bytes`);
/// `pending_approval`: not an error, the approval id, level and expiry; `denied` and `failed`:
/// a tool error with the WCP deny code and message (or the worker's error). Structured content
/// always holds `{status, capability_id, correlation_id, receipt, decision}`.
pub fn outcome_to_result(
    body: &Value,
    capability_id: &str,
    correlation_id: &str,
    max_bytes: usize,
) -> CallToolResult {
    let status = body["status"].as_str().unwrap_or("unknown").to_owned();
    let mut structured = json!({
        "status": status,
        "capability_id": capability_id,
        "correlation_id": correlation_id,
        "receipt": body["execution"].get("receipt"),
        "decision": decision_summary(body),
    });
    let decision = &body["decision"];
    let (text, is_error) = match status.as_str() {
        "completed" | "dry_run" => {
            let value = body.get("result").cloned().unwrap_or(Value::Null);
            let text = value.to_string();
            if text.len() > max_bytes {
                structured["truncated"] = json!({"result_bytes": text.len(), "limit": max_bytes});
                (
                    format!(
                        "the worker's result is {} bytes, over this bridge's limit of {max_bytes} \
                         (wcp-hall mcp --max-result-bytes); it was not passed on. Correlation id \
                         {correlation_id}; the evidence receipt records the run.",
                        text.len()
                    ),
                    false,
                )
            } else {
                (text, false)
            }
        }
        "pending_approval" => {
            let pending = json!({
                "pending_approval_id": body.get("pending_approval_id"),
                "supervisor_level": body.get("supervisor_level"),
                "approval_expires_at": body.get("approval_expires_at"),
            });
            structured["pending_approval"] = pending.clone();
            (
                format!(
                    "{capability_id} needs human approval ({}): approval {} at level {}, expires {}. \
                     An operator approves or denies it (wcp-hall approvals approve ID, or the \
                     wcp.approval.resolve tool); call again after that.",
                    decision["deny_reason_if_denied"]["message"]
                        .as_str()
                        .unwrap_or("REQUIRE_HUMAN"),
                    pending["pending_approval_id"].as_str().unwrap_or("?"),
                    pending["supervisor_level"].as_str().unwrap_or("?"),
                    pending["approval_expires_at"].as_str().unwrap_or("?"),
                ),
                false,
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
            let detail = body
                .get("result")
                .filter(|v| !v.is_null())
                .or_else(|| body["execution"].get("error"))
                .map(Value::to_string)
                .unwrap_or_else(|| "the worker failed".into());
            let mut detail = detail;
            if detail.len() > max_bytes {
                detail = format!("(worker error of {} bytes omitted)", detail.len());
            }
            (format!("the worker failed: {detail}"), true)
        }
        other => (format!("the Hall answered with status {other:?}"), true),
    };
    let mut r = if is_error {
        CallToolResult::error(vec![ContentBlock::text(text)])
    } else {
        CallToolResult::success(vec![ContentBlock::text(text)])
    };
    r.structured_content = Some(structured);
    r
}

/// A tool error (isError: true) with a text and a `{status: "error", code, message}` structure.
fn tool_error(code: &str, message: impl Into<String>) -> CallToolResult {
    let message = message.into();
    let mut r = CallToolResult::error(vec![ContentBlock::text(format!("{code}: {message}"))]);
    r.structured_content = Some(json!({"status": "error", "code": code, "message": message}));
    r
}

/// A tool error for an HTTP error answer of the Hall (`{code, message}` bodies).
fn http_error(status: u16, body: &Value) -> CallToolResult {
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

/// The MCP server: one per stdio session.
#[derive(Debug)]
pub struct HallBridge {
    cfg: Arc<BridgeConfig>,
    /// Tool name → capability id, from the last `tools/list` (refreshed on a miss).
    names: Mutex<BTreeMap<String, String>>,
}

/// What a tool name stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Capability(String),
    ApprovalsList,
    ApprovalResolve,
    ApprovalEscalate,
}

impl HallBridge {
    pub fn new(cfg: BridgeConfig) -> Self {
        HallBridge {
            cfg: Arc::new(cfg),
            names: Mutex::new(BTreeMap::new()),
        }
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<client::Answer, ClientError> {
        client::call(&self.cfg.socket, method, path, body, self.cfg.timeout).await
    }

    /// Whether the Hall treats this process's uid as an operator. Probed with a resolve request
    /// whose body is empty: the Hall checks operator-ness first (403 for everyone else) and then
    /// refuses the empty body (400), so the probe can never resolve anything.
    pub async fn probe_operator(&self) -> bool {
        match self
            .call(
                Method::POST,
                "/wcp/approvals/wcp-mcp-operator-probe/resolve",
                Some(&json!({})),
            )
            .await
        {
            Ok(a) => a.status.as_u16() != 403 && a.status.as_u16() != 401,
            Err(_) => false,
        }
    }

    /// The capability tools (and the name table) from `GET /wcp/capabilities`.
    async fn capability_tools(&self) -> Result<Vec<Tool>, ErrorData> {
        let answer = self
            .call(Method::GET, "/wcp/capabilities", None)
            .await
            .map_err(|e| ErrorData::internal_error(e.to_string(), None))?;
        if !answer.status.is_success() {
            return Err(ErrorData::internal_error(
                format!(
                    "GET /wcp/capabilities answered HTTP {}: {}",
                    answer.status, answer.body
                ),
                None,
            ));
        }
        let caps = answer.body["capabilities"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let mut names = BTreeMap::new();
        let mut tools = Vec::new();
        for cap in &caps {
            let Some(id) = cap["capability_id"].as_str() else {
                continue;
            };
            let mut name = tool_name(id, self.cfg.dotted_names);
            if names.contains_key(&name) {
                // Two ids that map to one name (cap.a_b, cap.a.b): keep both, distinctly.
                name = format!("{}_{}", name, names.len());
            }
            let species: Vec<&str> = cap["worker_species"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let schema = self.cfg.schemas.get(id);
            let what = schema
                .get("description")
                .and_then(Value::as_str)
                .map(|d| format!(" {d}"))
                .unwrap_or_default();
            let description = format!(
                "WCP capability {id}, served by worker species {} and governed by the Hall: each \
                 call is routed under the Hall's rules and policy, runs in an attested worker's \
                 privilege envelope and is recorded in a signed evidence receipt; it may be \
                 denied (tool error with the WCP deny code) or wait for human approval.{what}",
                if species.is_empty() {
                    "(none enrolled)".to_owned()
                } else {
                    species.join(", ")
                },
            );
            let tool = Tool::new(name.clone(), description, schema).with_title(id.to_owned());
            names.insert(name, id.to_owned());
            tools.push(tool);
        }
        if let Ok(mut table) = self.names.lock() {
            *table = names;
        }
        Ok(tools)
    }

    fn operator_tools(&self) -> Vec<Tool> {
        let obj = |v: Value| match v {
            Value::Object(m) => m,
            _ => JsonObject::new(),
        };
        let d = self.cfg.dotted_names;
        vec![
            Tool::new(
                tool_name(TOOL_APPROVALS_LIST, d),
                "WCP §5.8 wcp.approvals.list: the pending human approvals of the Hall \
                 (id, capability, tenant, supervisor level, expiry, reason).",
                obj(json!({"type": "object", "properties": {}, "additionalProperties": false})),
            )
            .annotate(ToolAnnotations::new().read_only(true)),
            Tool::new(
                tool_name(TOOL_APPROVAL_RESOLVE, d),
                "WCP §5.8 wcp.approval.resolve: approve or deny a pending approval (operators \
                 only). Approving re-routes the stored request; every other check runs again.",
                obj(json!({"type": "object",
                    "properties": {
                        "id": {"type": "string", "description": "the pending_approval_id"},
                        "action": {"type": "string", "enum": ["approve", "deny"]},
                        "note": {"type": "string", "description": "recorded with the resolution"}},
                    "required": ["id", "action"], "additionalProperties": false})),
            )
            .annotate(ToolAnnotations::new().destructive(true)),
            Tool::new(
                tool_name(TOOL_APPROVAL_ESCALATE, d),
                "WCP §5.8 wcp.approval.escalate: hand a pending approval to a higher \
                 supervisor level (operators only).",
                obj(json!({"type": "object",
                    "properties": {
                        "id": {"type": "string", "description": "the pending_approval_id"},
                        "level": {"type": "string", "description": "the supervisor level to escalate to"},
                        "note": {"type": "string"}},
                    "required": ["id", "level"], "additionalProperties": false})),
            ),
        ]
    }

    fn target_of(&self, name: &str) -> Option<Target> {
        let d = self.cfg.dotted_names;
        if name == tool_name(TOOL_APPROVALS_LIST, d) {
            return Some(Target::ApprovalsList);
        }
        if name == tool_name(TOOL_APPROVAL_RESOLVE, d) {
            return Some(Target::ApprovalResolve);
        }
        if name == tool_name(TOOL_APPROVAL_ESCALATE, d) {
            return Some(Target::ApprovalEscalate);
        }
        self.names
            .lock()
            .ok()
            .and_then(|t| t.get(name).cloned())
            .map(Target::Capability)
    }

    async fn dispatch(
        &self,
        capability_id: &str,
        arguments: JsonObject,
        meta: &JsonObject,
    ) -> CallToolResult {
        let correlation_id =
            correlation_from_meta(meta).unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let input = route_input(
            &self.cfg.defaults,
            capability_id,
            &correlation_id,
            arguments,
        );
        tracing::info!(capability_id, correlation_id, "dispatching");
        match self.call(Method::POST, "/wcp/dispatch", Some(&input)).await {
            Ok(a) if a.status.is_success() => outcome_to_result(
                &a.body,
                capability_id,
                &correlation_id,
                self.cfg.max_result_bytes,
            ),
            Ok(a) => http_error(a.status.as_u16(), &a.body),
            Err(e) => tool_error(client_error_code(&e), e.to_string()),
        }
    }

    async fn approvals(&self, target: Target, args: &JsonObject) -> CallToolResult {
        let text = |k: &str| args.get(k).and_then(Value::as_str).map(str::to_owned);
        let (method, path, body) = match target {
            Target::ApprovalsList => (Method::GET, "/wcp/approvals/pending".to_owned(), None),
            Target::ApprovalResolve | Target::ApprovalEscalate => {
                let Some(id) = text("id").filter(|id| {
                    !id.is_empty()
                        && id
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                }) else {
                    return tool_error(
                        "invalid_arguments",
                        "\"id\" must be a pending_approval_id (letters, digits, '-', '_')",
                    );
                };
                let mut body = Map::new();
                if target == Target::ApprovalResolve {
                    match text("action").as_deref() {
                        Some(a @ ("approve" | "deny")) => {
                            body.insert("action".into(), Value::from(a));
                        }
                        _ => {
                            return tool_error(
                                "invalid_arguments",
                                "\"action\" must be \"approve\" or \"deny\"",
                            );
                        }
                    }
                } else {
                    let Some(level) = text("level").filter(|l| !l.is_empty()) else {
                        return tool_error("invalid_arguments", "\"level\" is required");
                    };
                    body.insert("action".into(), Value::from("escalate"));
                    body.insert("level".into(), Value::from(level));
                }
                if let Some(note) = text("note") {
                    body.insert("note".into(), Value::from(note));
                }
                (
                    Method::POST,
                    format!("/wcp/approvals/{id}/resolve"),
                    Some(Value::Object(body)),
                )
            }
            Target::Capability(_) => return tool_error("internal", "not an approval tool"),
        };
        match self.call(method, &path, body.as_ref()).await {
            Ok(a) if a.status.is_success() => {
                let text = a.body.to_string();
                let mut r = CallToolResult::success(vec![ContentBlock::text(text)]);
                r.structured_content = Some(a.body);
                r
            }
            Ok(a) => http_error(a.status.as_u16(), &a.body),
            Err(e) => tool_error(client_error_code(&e), e.to_string()),
        }
    }
}

fn client_error_code(e: &ClientError) -> &'static str {
    match e {
        ClientError::Unreachable { .. } => "hall_unreachable",
        ClientError::Timeout { .. } => "hall_timeout",
        ClientError::Http(_) => "hall_http_error",
        ClientError::NotJson(_) => "hall_bad_answer",
    }
}

impl HallBridge {
    fn server_info(&self) -> InitializeResult {
        InitializeResult::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(
                Implementation::new("wcp-hall", env!("CARGO_PKG_VERSION")).with_title("WCP Hall"),
            )
            .with_instructions(
                "Each tool is a WCP capability governed by the Hall: calls are routed under its \
                 rules and policy, run attested workers in privilege envelopes and are receipted. \
                 A denial is a tool error carrying the WCP deny code; a call needing a human \
                 returns status pending_approval with the approval id.",
            )
    }

    async fn list_tools(&self) -> Result<Value, ErrorData> {
        let mut tools = self.capability_tools().await?;
        if self.probe_operator().await {
            tools.extend(self.operator_tools());
        }
        Ok(json!({"tools": tools}))
    }

    async fn call_tool(&self, params: Value) -> Result<Value, ErrorData> {
        let request: CallToolRequestParams = serde_json::from_value(params)
            .map_err(|e| ErrorData::invalid_params(format!("bad tools/call params: {e}"), None))?;
        let name = request.name.clone();
        let mut target = self.target_of(&name);
        if target.is_none() {
            // The Hall may have reloaded since the last tools/list (or the host never listed).
            let _ = self.capability_tools().await?;
            target = self.target_of(&name);
        }
        let Some(target) = target else {
            return Err(ErrorData::invalid_params(
                format!(
                    "unknown tool {name:?}; call tools/list for the capabilities this Hall routes"
                ),
                None,
            ));
        };
        let args = request.arguments.clone().unwrap_or_default();
        let meta = request.meta.map(|m| m.0.0).unwrap_or_default();
        let mut result = match target {
            Target::Capability(cap) => self.dispatch(&cap, args, &meta).await,
            other => self.approvals(other, &args).await,
        };
        // Older protocol versions do not know the result type discriminator.
        result.result_type = None;
        serde_json::to_value(result).map_err(|e| ErrorData::internal_error(e.to_string(), None))
    }

    /// Answers one JSON-RPC message; `None` for notifications.
    pub async fn handle(&self, message: &str) -> Option<Value> {
        let parsed: Value = match serde_json::from_str(message) {
            Ok(v) => v,
            Err(e) => {
                return Some(json!({"jsonrpc": "2.0", "id": null,
                    "error": {"code": -32700, "message": format!("parse error: {e}")}}));
            }
        };
        let id = parsed.get("id").cloned();
        let method = parsed.get("method").and_then(Value::as_str);
        let (Some(id), Some(method)) = (id, method) else {
            // A notification (initialized, cancelled, …) or a response: nothing to answer.
            return None;
        };
        let params = parsed.get("params").cloned().unwrap_or(Value::Null);
        let outcome: Result<Value, ErrorData> = match method {
            "initialize" => {
                let requested = params["protocolVersion"].as_str().unwrap_or("");
                let version = if SUPPORTED_VERSIONS.contains(&requested) {
                    requested.to_owned()
                } else {
                    SUPPORTED_VERSIONS[0].to_owned()
                };
                let mut info = serde_json::to_value(self.server_info()).unwrap_or(Value::Null);
                info["protocolVersion"] = Value::from(version);
                Ok(info)
            }
            "ping" => Ok(json!({})),
            "tools/list" => self.list_tools().await,
            "tools/call" => self.call_tool(params).await,
            other => Err(ErrorData::new(
                rmcp::model::ErrorCode::METHOD_NOT_FOUND,
                format!("method {other:?} is not supported by wcp-hall mcp"),
                None,
            )),
        };
        Some(match outcome {
            Ok(result) => json!({"jsonrpc": "2.0", "id": id, "result": result}),
            Err(e) => json!({"jsonrpc": "2.0", "id": id, "error": e}),
        })
    }
}

/// Protocol versions the bridge answers `initialize` with (the client's when listed here).
pub const SUPPORTED_VERSIONS: [&str; 4] = ["2025-06-18", "2025-11-25", "2025-03-26", "2024-11-05"];

/// Largest incoming message (one line) the bridge reads.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// Runs the bridge on stdin/stdout (newline-delimited JSON-RPC 2.0) until the host closes stdin.
///
/// rmcp provides the MCP model types (tools, results, errors); the loop itself is small and
/// explicit: one message per line, at most [`MAX_MESSAGE_BYTES`], answered one at a time in order,
/// notifications ignored, unknown methods answered with -32601.
pub async fn serve_stdio(cfg: BridgeConfig) -> Result<(), BridgeError> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let bridge = HallBridge::new(cfg);
    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin());
    let mut stdout = tokio::io::stdout();
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = (&mut stdin)
            .take(MAX_MESSAGE_BYTES as u64 + 1)
            .read_until(b'\n', &mut line)
            .await
            .map_err(|e| BridgeError::Transport(e.to_string()))?;
        if n == 0 {
            return Ok(());
        }
        let answer = if line.len() > MAX_MESSAGE_BYTES && !line.ends_with(b"\n") {
            // Skip the rest of the oversized line before answering.
            let mut rest = Vec::new();
            let _ = stdin.read_until(b'\n', &mut rest).await;
            Some(
                json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32600,
                "message": format!("message over {MAX_MESSAGE_BYTES} bytes")}}),
            )
        } else {
            let text = String::from_utf8_lossy(&line);
            if text.trim().is_empty() {
                continue;
            }
            bridge.handle(text.trim()).await
        };
        if let Some(answer) = answer {
            let mut bytes = answer.to_string().into_bytes();
            bytes.push(b'\n');
            stdout
                .write_all(&bytes)
                .await
                .map_err(|e| BridgeError::Transport(e.to_string()))?;
            stdout
                .flush()
                .await
                .map_err(|e| BridgeError::Transport(e.to_string()))?;
        }
    }
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

    #[test]
    fn a_completed_dispatch_is_the_result_with_receipt_and_decision() {
        let r = outcome_to_result(
            &completed(json!({"greeting": "Hello, Ada!"})),
            "cap.x",
            "c1",
            1000,
        );
        assert_eq!(r.is_error, Some(false));
        let s = r.structured_content.unwrap();
        assert_eq!(s["status"], "completed");
        assert_eq!(s["receipt"]["seq"], 3);
        assert_eq!(s["decision"]["matched_rule_id"], "rr");
        assert_eq!(s["decision"]["worker_id"], "org.x.1");
        let text = serde_json::to_value(&r.content[0]).unwrap();
        assert_eq!(text["text"], r#"{"greeting":"Hello, Ada!"}"#);
    }

    #[test]
    fn an_oversized_result_is_replaced_by_a_notice() {
        let big = json!({"blob": "x".repeat(5000)});
        let r = outcome_to_result(&completed(big), "cap.x", "c1", 1000);
        let s = r.structured_content.unwrap();
        assert_eq!(s["truncated"]["limit"], 1000);
        let text = serde_json::to_value(&r.content[0]).unwrap();
        assert!(
            text["text"]
                .as_str()
                .unwrap()
                .contains("over this bridge's limit")
        );
        assert!(text["text"].as_str().unwrap().len() < 1000);
    }

    #[test]
    fn a_denial_is_a_tool_error_with_the_deny_code() {
        let body = json!({"status": "denied", "denied": true, "supervisor_required": false,
            "decision": {"matched_rule_id": "NO_MATCH", "deny_reason_if_denied":
                {"code": "DENY_NO_MATCHING_RULE", "message": "no rule"}},
            "execution": {"receipt": {"seq": 1, "receipt_hash": "h"}}});
        let r = outcome_to_result(&body, "cap.y", "c1", 1000);
        assert_eq!(r.is_error, Some(true));
        let s = r.structured_content.unwrap();
        assert_eq!(s["decision"]["deny_code"], "DENY_NO_MATCHING_RULE");
        let text = serde_json::to_value(&r.content[0]).unwrap();
        assert_eq!(text["text"], "DENY_NO_MATCHING_RULE: no rule");
    }

    #[test]
    fn a_pending_approval_is_not_an_error() {
        let body = json!({"status": "pending_approval", "denied": false, "supervisor_required": true,
            "supervisor_level": "L2", "pending_approval_id": "ap-1", "approval_expires_at": "2030-01-01T00:00:00Z",
            "decision": {"deny_reason_if_denied": {"code": "DENY_REQUIRES_HUMAN", "message": "blast"}}});
        let r = outcome_to_result(&body, "cap.y", "c1", 1000);
        assert_eq!(r.is_error, Some(false));
        let s = r.structured_content.unwrap();
        assert_eq!(s["status"], "pending_approval");
        assert_eq!(s["pending_approval"]["pending_approval_id"], "ap-1");
        assert_eq!(s["pending_approval"]["supervisor_level"], "L2");
    }

    #[test]
    fn garbage_from_the_hall_is_an_error_not_a_panic() {
        for body in [
            json!(null),
            json!("text"),
            json!({"status": 5}),
            json!([1, 2]),
        ] {
            let r = outcome_to_result(&body, "cap.y", "c1", 1000);
            assert_eq!(r.is_error, Some(true), "{body}");
        }
    }

    #[test]
    fn schemas_are_read_from_worker_packages() {
        let idx =
            SchemaIndex::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("workers")).unwrap();
        assert_eq!(idx.get("cap.hello.greet")["required"], json!(["name"]));
        assert_eq!(idx.get("cap.doc.chunk")["required"], json!(["text"]));
        assert_eq!(
            Value::Object(idx.get("cap.none")),
            json!({"type": "object"})
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("bad")).unwrap();
        std::fs::write(dir.path().join("bad/record.json"), "{not json").unwrap();
        let e = SchemaIndex::load(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("record.json") && e.contains("not valid JSON"),
            "{e}"
        );
    }
}
