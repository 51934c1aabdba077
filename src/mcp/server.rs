//! The bridge as an rmcp server: rmcp runs the protocol (the `initialize` handshake and the
//! 2026-07-28 per-request lifecycle with `server/discover`, version negotiation, concurrent
//! requests, cancellation, progress); [`HallBridge`] answers `tools/list` and `tools/call` by
//! asking the Hall, and shapes every answer for the protocol version agreed (see
//! [`super::compat`]).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::Method;
use rmcp::ErrorData;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, Implementation,
    InitializeRequestParams, InitializeResult, JsonObject, ListToolsResult, PaginatedRequestParams,
    ProgressNotificationParam, ProtocolVersion, ServerCapabilities, ServerConfig, Tool,
    ToolAnnotations,
};
use rmcp::service::{RequestContext, RoleServer};
use serde_json::{Map, Value, json};

use super::{
    BridgeConfig, ROUTABLE_PATH, SUPPORTED_VERSIONS, TOOL_APPROVAL_ESCALATE, TOOL_APPROVAL_OUTCOME,
    TOOL_APPROVAL_RESOLVE, TOOL_APPROVALS_LIST, compat, correlation_from_meta, http_error,
    outcome_to_result, route_input, tool_error, tool_name, tools_from_listing,
};
use crate::client::{self, ClientError};

/// At most this many requests to the Hall (listings, dispatches, operator calls) are open at
/// once; more wait for a slot. Long polls for a human's decision are not counted.
pub const MAX_CONCURRENT_CALLS: usize = 16;

/// While a call waits for a human, the Hall is asked at most this long at a time, and the host
/// gets a progress notification (when it asked for them) after each answer.
pub const APPROVAL_POLL: Duration = Duration::from_secs(5);

/// The longest `wait_seconds` the outcome tool accepts.
pub const MAX_OUTCOME_WAIT_SECONDS: u64 = 60;

/// The MCP server: one per stdio session.
#[derive(Debug)]
pub struct HallBridge {
    cfg: Arc<BridgeConfig>,
    /// Tool name → capability id, from the last `tools/list` (refreshed on a miss).
    names: Mutex<BTreeMap<String, String>>,
    calls: Arc<tokio::sync::Semaphore>,
}

/// What a tool name stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Capability(String),
    ApprovalOutcome,
    ApprovalsList,
    ApprovalResolve,
    ApprovalEscalate,
}

/// The protocol version of the request being answered (the negotiated one, or the one a
/// 2026-07-28 request names in its `_meta`); the oldest supported one when unknown, so nothing
/// a client might not know is sent.
fn version_of(context: &RequestContext<RoleServer>) -> ProtocolVersion {
    context
        .protocol_version()
        .unwrap_or(ProtocolVersion::V_2024_11_05)
}

impl HallBridge {
    pub fn new(cfg: BridgeConfig) -> Self {
        HallBridge {
            cfg: Arc::new(cfg),
            names: Mutex::new(BTreeMap::new()),
            calls: Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_CALLS)),
        }
    }

    /// One request to the Hall, in one of the [`MAX_CONCURRENT_CALLS`] slots.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        timeout: Duration,
    ) -> Result<client::Answer, ClientError> {
        // The semaphore is never closed, so this waits for a slot.
        let _slot = self.calls.clone().acquire_owned().await.ok();
        client::call(&self.cfg.socket, method, path, body, timeout).await
    }

    /// A long poll for a human's decision: outside the slots, so calls waiting for people never
    /// hold up calls that need only the Hall (the transport still bounds requests in flight).
    async fn poll(&self, path: &str, timeout: Duration) -> Result<client::Answer, ClientError> {
        client::call(&self.cfg.socket, Method::GET, path, None, timeout).await
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
                self.cfg.timeout,
            )
            .await
        {
            Ok(a) => a.status.as_u16() != 403 && a.status.as_u16() != 401,
            Err(_) => false,
        }
    }

    /// The capability tools (and the name table) from `POST /wcp/capabilities/routable`: what
    /// the Hall says this peer, acting as the configured tenant in the configured route context,
    /// may dispatch, with each worker's input schema.
    async fn capability_tools(&self) -> Result<Vec<Tool>, ErrorData> {
        let d = &self.cfg.defaults;
        let context = json!({
            "tenant_id": d.tenant_id,
            "env": d.env,
            "data_label": d.data_label,
            "tenant_risk": d.tenant_risk,
            "qos_class": d.qos_class,
        });
        let answer = self
            .call(
                Method::POST,
                ROUTABLE_PATH,
                Some(&context),
                self.cfg.timeout,
            )
            .await
            .map_err(|e| ErrorData::internal_error(e.to_string(), None))?;
        if !answer.status.is_success() {
            let code = answer.body["code"].as_str().unwrap_or("hall_error");
            let message = answer.body["message"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| answer.body.to_string());
            return Err(ErrorData::internal_error(
                format!(
                    "the Hall refused to list capabilities (POST {ROUTABLE_PATH}, HTTP {}): \
                     {code}: {message}",
                    answer.status.as_u16()
                ),
                None,
            ));
        }
        let (tools, names) = tools_from_listing(&answer.body, self.cfg.dotted_names);
        if let Ok(mut table) = self.names.lock() {
            *table = names;
        }
        Ok(tools)
    }

    /// The tool every agent has: collect the outcome of an approval it asked for.
    fn outcome_tool(&self) -> Tool {
        let d = self.cfg.dotted_names;
        Tool::new(
            tool_name(TOOL_APPROVAL_OUTCOME, d),
            format!(
                "Collect the outcome of a call that needed human approval: give the \
                 pending_approval_id from that call's answer. Once an operator has approved, \
                 this returns the worker's result exactly as the original tool would have; a \
                 denial or expiry is a tool error saying so; while nobody has decided it is a \
                 tool error naming pending_approval. Only the agent that asked (this uid, as \
                 tenant {}) can collect it. wait_seconds (0-{MAX_OUTCOME_WAIT_SECONDS}) waits \
                 for a decision first.",
                self.cfg.defaults.tenant_id
            ),
            obj(json!({"type": "object",
                "properties": {
                    "id": {"type": "string", "description": "the pending_approval_id"},
                    "wait_seconds": {"type": "integer", "minimum": 0,
                                     "maximum": MAX_OUTCOME_WAIT_SECONDS,
                                     "description": "wait this long for a decision (default 0)"}},
                "required": ["id"], "additionalProperties": false})),
        )
        .with_title("Collect an approved result")
        .annotate(ToolAnnotations::new().read_only(true))
    }

    fn operator_tools(&self) -> Vec<Tool> {
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
                 only). Approving re-routes the stored request; every other check runs again. \
                 The answer says what happened; the worker's result goes to the agent that \
                 asked, not to the operator.",
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
        for (id, target) in [
            (TOOL_APPROVAL_OUTCOME, Target::ApprovalOutcome),
            (TOOL_APPROVALS_LIST, Target::ApprovalsList),
            (TOOL_APPROVAL_RESOLVE, Target::ApprovalResolve),
            (TOOL_APPROVAL_ESCALATE, Target::ApprovalEscalate),
        ] {
            if name == tool_name(id, d) {
                return Some(target);
            }
        }
        self.names
            .lock()
            .ok()
            .and_then(|t| t.get(name).cloned())
            .map(Target::Capability)
    }

    /// One governed call: `POST /wcp/dispatch` (the Hall answers a call that needs a human at
    /// once, `?approval_wait_ms=0`), then, for a pending approval, the wait of
    /// [`Self::await_approval`].
    async fn dispatch(
        &self,
        capability_id: &str,
        arguments: JsonObject,
        context: &RequestContext<RoleServer>,
    ) -> CallToolResult {
        let correlation_id = correlation_from_meta(&context.meta.0)
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let input = route_input(
            &self.cfg.defaults,
            capability_id,
            &correlation_id,
            arguments,
        );
        tracing::info!(capability_id, correlation_id, "dispatching");
        // The host's W3C trace context (`_meta.traceparent`, `_meta.tracestate`) goes on as the
        // HTTP headers, so the Hall's dispatch span joins the host's trace. Only printable
        // ASCII passes (anything else could not be a header); the Hall checks the rest.
        let trace_headers: Vec<(&str, String)> = ["traceparent", "tracestate"]
            .into_iter()
            .filter_map(|k| {
                let v = context.meta.0.get(k)?.as_str()?;
                (!v.is_empty() && v.len() <= 512 && v.bytes().all(|b| (0x20..0x7f).contains(&b)))
                    .then(|| (k, v.to_owned()))
            })
            .collect();
        let answer = match client::call_with_headers(
            &self.cfg.socket,
            Method::POST,
            "/wcp/dispatch?approval_wait_ms=0",
            Some(&input),
            self.cfg.timeout,
            &trace_headers,
        )
        .await
        {
            Ok(a) if a.status.is_success() => a.body,
            Ok(a) => return http_error(a.status.as_u16(), &a.body),
            Err(e) => return tool_error(client_error_code(&e), e.to_string()),
        };
        if answer["status"] == "pending_approval" && !self.cfg.approval_wait.is_zero() {
            return self
                .await_approval(answer, capability_id, &correlation_id, context)
                .await;
        }
        self.result(&answer, capability_id, &correlation_id)
    }

    fn result(&self, body: &Value, capability_id: &str, correlation_id: &str) -> CallToolResult {
        outcome_to_result(
            body,
            capability_id,
            correlation_id,
            self.cfg.max_result_bytes,
            self.cfg.dotted_names,
        )
    }

    /// Keeps a call that needs a human open for up to `--approval-wait`: asks the Hall for the
    /// approval's outcome (as the requester) in long polls of [`APPROVAL_POLL`], sends a
    /// progress notification after each when the host gave a progress token, and answers with
    /// the outcome — the worker's result, or the denial — as soon as there is one. A Hall that
    /// restarts meanwhile is asked again (approvals survive restarts). When the bound passes,
    /// the answer is the pending one, naming the outcome tool.
    async fn await_approval(
        &self,
        pending: Value,
        capability_id: &str,
        correlation_id: &str,
        context: &RequestContext<RoleServer>,
    ) -> CallToolResult {
        let Some(id) = pending["pending_approval_id"].as_str().map(str::to_owned) else {
            return self.result(&pending, capability_id, correlation_id);
        };
        let level = pending["supervisor_level"]
            .as_str()
            .unwrap_or("?")
            .to_owned();
        let bound = self.cfg.approval_wait;
        let started = Instant::now();
        let token = context.meta.get_progress_token();
        let mut last = pending;
        let mut polls: u32 = 0;
        loop {
            let left = bound.saturating_sub(started.elapsed());
            if let Some(token) = &token {
                let message = format!(
                    "waiting for a human to decide approval {id} (supervisor level {level}); \
                     {}s of at most {}s",
                    started.elapsed().as_secs(),
                    bound.as_secs()
                );
                let mut param = ProgressNotificationParam::new(token.clone(), f64::from(polls));
                param.message = Some(message);
                if let Err(e) = context.peer.notify_progress(param).await {
                    tracing::warn!(error = %e, "cannot send a progress notification");
                }
            }
            if left.is_zero() {
                break;
            }
            let poll = left.min(APPROVAL_POLL);
            match self.fetch_outcome(&id, poll).await {
                Ok(body) => {
                    let response = &body["response"];
                    if response["status"] != "pending_approval" {
                        return self.result(response, capability_id, correlation_id);
                    }
                    last = response.clone();
                }
                Err(Fetch::Refused(result)) => return result,
                Err(Fetch::Unreachable(e)) => {
                    tracing::info!(error = %e, approval = %id, "the Hall is not answering; asking again");
                    tokio::time::sleep(left.min(Duration::from_millis(500))).await;
                }
            }
            polls += 1;
        }
        self.result(&last, capability_id, correlation_id)
    }

    /// `GET /wcp/approvals/{id}` as the requester (this uid acting as the configured tenant),
    /// waiting up to `wait` for a decision.
    async fn fetch_outcome(&self, id: &str, wait: Duration) -> Result<Value, Fetch> {
        let tenant: String =
            form_urlencoded::byte_serialize(self.cfg.defaults.tenant_id.as_bytes()).collect();
        let path = format!(
            "/wcp/approvals/{id}?tenant_id={tenant}&wait_ms={}",
            wait.as_millis()
        );
        match self
            .poll(&path, wait + self.cfg.timeout.max(Duration::from_secs(5)))
            .await
        {
            Ok(a) if a.status.is_success() => Ok(a.body),
            Ok(a) => Err(Fetch::Refused(http_error(a.status.as_u16(), &a.body))),
            Err(e) => Err(Fetch::Unreachable(e)),
        }
    }

    /// The outcome tool: the approval's outcome as the original call would have answered.
    async fn approval_outcome(&self, args: &JsonObject) -> CallToolResult {
        let Some(id) = approval_id(args) else {
            return tool_error(
                "invalid_arguments",
                "\"id\" must be a pending_approval_id (letters, digits, '-', '_')",
            );
        };
        let wait = match args.get("wait_seconds") {
            None => 0,
            Some(v) => match v.as_u64().filter(|s| *s <= MAX_OUTCOME_WAIT_SECONDS) {
                Some(s) => s,
                None => {
                    return tool_error(
                        "invalid_arguments",
                        format!(
                            "\"wait_seconds\" must be a whole number from 0 to \
                             {MAX_OUTCOME_WAIT_SECONDS}"
                        ),
                    );
                }
            },
        };
        match self.fetch_outcome(&id, Duration::from_secs(wait)).await {
            Ok(body) => {
                let approval = &body["approval"];
                self.result(
                    &body["response"],
                    approval["capability_id"].as_str().unwrap_or("?"),
                    approval["correlation_id"].as_str().unwrap_or("?"),
                )
            }
            Err(Fetch::Refused(result)) => result,
            Err(Fetch::Unreachable(e)) => tool_error(client_error_code(&e), e.to_string()),
        }
    }

    async fn approvals(&self, target: Target, args: &JsonObject) -> CallToolResult {
        let text = |k: &str| args.get(k).and_then(Value::as_str).map(str::to_owned);
        let (method, path, body) = match target {
            Target::ApprovalsList => (Method::GET, "/wcp/approvals/pending".to_owned(), None),
            Target::ApprovalResolve | Target::ApprovalEscalate => {
                let Some(id) = approval_id(args) else {
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
            Target::Capability(_) | Target::ApprovalOutcome => {
                return tool_error("internal", "not an operator tool");
            }
        };
        match self
            .call(method, &path, body.as_ref(), self.cfg.timeout)
            .await
        {
            Ok(a) if a.status.is_success() => {
                let text = a.body.to_string();
                let mut r = CallToolResult::success(vec![rmcp::model::ContentBlock::text(text)]);
                r.structured_content = Some(a.body);
                r
            }
            Ok(a) => http_error(a.status.as_u16(), &a.body),
            Err(e) => tool_error(client_error_code(&e), e.to_string()),
        }
    }

    async fn call_tool_inner(
        &self,
        request: CallToolRequestParams,
        context: &RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let name = request.name.to_string();
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
        let args = request.arguments.unwrap_or_default();
        Ok(match target {
            Target::Capability(cap) => self.dispatch(&cap, args, context).await,
            Target::ApprovalOutcome => self.approval_outcome(&args).await,
            other => self.approvals(other, &args).await,
        })
    }

    /// Runs `work` until it is done or the host cancels the request; then it is abandoned (its
    /// connection to the Hall dropped). A dispatch the Hall had already started may still
    /// complete there; its receipt records it.
    async fn cancellable<T>(
        &self,
        context: &RequestContext<RoleServer>,
        work: impl Future<Output = Result<T, ErrorData>>,
    ) -> Result<T, ErrorData> {
        let cancelled = || ErrorData::internal_error("cancelled by the host", None);
        tokio::select! {
            out = work => out,
            _ = context.ct.cancelled() => {
                tracing::info!(request_id = %context.id, "request cancelled by the host");
                Err(cancelled())
            }
        }
    }
}

/// Why the requester's view of an approval could not be read.
enum Fetch {
    /// The Hall answered with an error (404: not this peer's, or forgotten): a tool error.
    Refused(CallToolResult),
    /// The Hall did not answer (restarting, gone).
    Unreachable(ClientError),
}

fn obj(v: Value) -> JsonObject {
    match v {
        Value::Object(m) => m,
        _ => JsonObject::new(),
    }
}

/// The `id` argument when it looks like an approval id (safe in a URL path).
fn approval_id(args: &JsonObject) -> Option<String> {
    args.get("id")
        .and_then(Value::as_str)
        .filter(|id| {
            !id.is_empty()
                && id.len() <= 128
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        .map(str::to_owned)
}

pub(super) fn client_error_code(e: &ClientError) -> &'static str {
    match e {
        ClientError::Unreachable { .. } => "hall_unreachable",
        ClientError::Timeout { .. } => "hall_timeout",
        ClientError::Http(_) => "hall_http_error",
        ClientError::NotJson(_) => "hall_bad_answer",
    }
}

impl rmcp::ServerHandler for HallBridge {
    fn get_info(&self) -> ServerConfig {
        InitializeResult::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(
                Implementation::new("wcp-hall", env!("CARGO_PKG_VERSION")).with_title("WCP Hall"),
            )
            .with_instructions(format!(
                "Each tool is a WCP capability governed by the Hall: calls are routed under its \
                 rules and policy, run attested workers in privilege envelopes and are receipted. \
                 A tool's result is the worker's (the Hall's receipt and decision are in the \
                 result's _meta under wcp-hall/dispatch). A denial is a tool error carrying the \
                 WCP deny code (DENY_INVALID_INPUT names the request field the worker's schema \
                 refuses). A call that needs a human approval waits for the decision (up to a \
                 bound, with progress notifications when asked for) and then answers with the \
                 result; if nobody has decided by then it is a tool error naming \
                 pending_approval and the approval id, and the {} tool collects the result \
                 later.",
                tool_name(TOOL_APPROVAL_OUTCOME, self.cfg.dotted_names)
            ))
    }

    fn supported_protocol_versions(&self) -> std::borrow::Cow<'static, [ProtocolVersion]> {
        std::borrow::Cow::Owned(
            SUPPORTED_VERSIONS
                .iter()
                .map(|v| {
                    ProtocolVersion::KNOWN_VERSIONS
                        .iter()
                        .find(|k| k.as_str() == *v)
                        .cloned()
                        .unwrap_or_default()
                })
                .collect(),
        )
    }

    async fn initialize(
        &self,
        request: InitializeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<InitializeResult, ErrorData> {
        context.peer.set_peer_info(request.clone());
        let info = self.negotiate_initialize(&request)?;
        Ok(compat::initialize_result(info))
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let version = version_of(&context);
        self.cancellable(&context, async {
            let mut tools = self.capability_tools().await?;
            tools.push(self.outcome_tool());
            if self.probe_operator().await {
                tools.extend(self.operator_tools());
            }
            let tools = tools
                .into_iter()
                .map(|t| compat::tool(&version, t))
                .collect();
            Ok(ListToolsResult::with_all_items(tools))
        })
        .await
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let version = version_of(&context);
        let result = self
            .cancellable(&context, self.call_tool_inner(request, &context))
            .await?;
        Ok(CallToolResponse::Complete(compat::call_result(
            &version, result,
        )))
    }
}
