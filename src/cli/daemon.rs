//! `wcp-hall serve` and the client commands that talk to a running Hall:
//! `status`, `dispatch`, `approvals`, `reload`.

use std::path::PathBuf;
use std::time::Duration;

use hyper::{Method, StatusCode};
use serde_json::{Value, json};

use super::{CliError, Out, exit, read_input};
use crate::client::{self, Answer, DEFAULT_SOCKET};
use crate::hall::lifecycle::{self, ServeOptions};

/// Where to find a running Hall.
#[derive(Debug, Clone, clap::Args)]
pub struct SocketArg {
    /// The Hall's Unix socket.
    #[arg(long, short = 's', env = "WCP_HALL_SOCKET", default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Path to hall.toml (default: $CONFIGURATION_DIRECTORY/hall.toml under systemd, else
    /// /etc/wcp-hall/hall.toml).
    #[arg(long, short = 'c', env = "WCP_HALL_CONFIG")]
    pub config: Option<PathBuf>,
    /// Listen on this socket instead of [server] socket (ignored under socket activation).
    #[arg(long, short = 's')]
    pub socket: Option<PathBuf>,
    /// Log format on stderr: text or json.
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
}

pub fn serve(args: ServeArgs) -> Result<u8, CliError> {
    lifecycle::run(ServeOptions {
        config: args
            .config
            .unwrap_or_else(crate::config::default_config_path),
        socket: args.socket,
        log_format: args.log_format,
    })
    .map(|()| exit::OK)
    .map_err(|e| CliError::new(start_exit(e.kind), "startup_failed", e.message))
}

fn call(
    socket: &SocketArg,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> Result<Answer, CliError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::new(exit::IOERR, "runtime", e.to_string()))?;
    runtime
        .block_on(client::call(
            &socket.socket,
            method,
            path,
            body,
            Duration::from_secs(socket.timeout),
        ))
        .map_err(|e| CliError::new(exit::UNAVAILABLE, "hall_unreachable", e.to_string()))
}

/// Turns an error answer into a CliError carrying the Hall's code and message.
fn api_error(answer: &Answer) -> CliError {
    let code = answer.body["code"].as_str().unwrap_or("error").to_owned();
    let message = answer.body["message"]
        .as_str()
        .map_or_else(|| answer.body.to_string(), str::to_owned);
    // 69 (unreachable) is only for a Hall that did not answer: an answer maps to what it says.
    let exit = match answer.status {
        StatusCode::FORBIDDEN => exit::NOPERM,
        StatusCode::UNPROCESSABLE_ENTITY if code == "reload_failed" => exit::CONFIG,
        StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => exit::TEMPFAIL,
        StatusCode::NOT_FOUND | StatusCode::CONFLICT => exit::DENIED,
        s if s.is_client_error() => exit::DATAERR,
        _ => exit::SOFTWARE,
    };
    CliError::new(
        exit,
        "hall_error",
        format!(
            "the Hall refused ({}): {code}: {message}",
            answer.status.as_u16()
        ),
    )
}

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub socket: SocketArg,
}

/// `wcp-hall status`: the running Hall's health; exit 0 when healthy.
pub fn status(args: StatusArgs, out: &mut Out) -> Result<u8, CliError> {
    let answer = call(&args.socket, Method::GET, "/wcp/health", None)?;
    let b = &answer.body;
    if out.json {
        out.json_line(b)?;
    } else {
        out.line(format!(
            "{} at {}: generation {}, {} rules ({} shadowed), {} workers, {} in flight, {} queued, {} approvals pending, runner {}",
            b["status"].as_str().unwrap_or("unknown"),
            args.socket.socket.display(),
            b["generation"],
            b["rules"],
            b["shadowed_rules"],
            b["workers"],
            b["in_flight"],
            b["queue_waiting"],
            b["approvals_pending"],
            if b["runner"] == true { "ready" } else { "absent (routing and dry runs only)" },
        ))?;
        let r = &b["receipts"];
        out.line(format!(
            "receipt log: {} records, background check {}{}",
            r["records"],
            r["background_check"].as_str().unwrap_or("unknown"),
            match (r["failed"].as_str(), r["state"].as_str()) {
                (Some(why), _) => format!("; FAILED (integrity), refusing every append: {why}"),
                (None, Some("degraded")) => format!(
                    "; DEGRADED (resource: {}) since {}, refusing new dispatches until it \
                     recovers: {}",
                    r["errno"].as_str().unwrap_or("-"),
                    r["since"].as_str().unwrap_or("?"),
                    r["reason"].as_str().unwrap_or("")
                ),
                _ => String::new(),
            }
        ))?;
        let you = &b["you"];
        if you.is_object() {
            let tenants: Vec<&str> = you["tenants"]
                .as_array()
                .map(|t| t.iter().filter_map(|x| x.as_str()).collect())
                .unwrap_or_default();
            out.line(format!(
                "you: uid {} (groups {}) may act as {}{}",
                you["uid"],
                you["groups"]
                    .as_array()
                    .map(|g| g
                        .iter()
                        .map(|x| x.to_string())
                        .collect::<Vec<_>>()
                        .join(", "))
                    .unwrap_or_default(),
                if tenants.is_empty() {
                    "no tenant (map your uid or a group of yours in [identity])".to_owned()
                } else {
                    tenants.join(", ")
                },
                if you["operator"] == true {
                    "; operator"
                } else {
                    ""
                }
            ))?;
        }
    }
    // Reached: 69 would say otherwise. A failed receipt log needs an operator (70); a Hall
    // that is stopping or degraded will be back, or replaced (75).
    Ok(if answer.status.is_success() {
        exit::OK
    } else if b["status"] == "failed" {
        exit::SOFTWARE
    } else {
        exit::TEMPFAIL
    })
}

/// The route context of a request: everything but the capability and the payload.
#[derive(Debug, clap::Args)]
pub struct RouteContextArgs {
    /// The environment: dev, stage, prod or edge.
    #[arg(long, default_value = "dev")]
    pub env: String,
    /// The data label: PUBLIC, INTERNAL or RESTRICTED.
    #[arg(long, default_value = "PUBLIC")]
    pub data_label: String,
    /// The tenant's risk: low, medium or high.
    #[arg(long, default_value = "low")]
    pub tenant_risk: String,
    /// The quality-of-service class: P0 … P3.
    #[arg(long, default_value = "P2")]
    pub qos_class: String,
    /// The tenant to act as (must be one the Hall maps to your uid or gid).
    #[arg(long, env = "WCP_TENANT_ID")]
    pub tenant_id: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct CapabilitiesArgs {
    #[command(flatten)]
    pub socket: SocketArg,
    #[command(flatten)]
    pub context: RouteContextArgs,
}

/// `wcp-hall capabilities`: what the running Hall lets this uid route as a tenant, in a route
/// context (`POST /wcp/capabilities/routable`): each capability with its worker and whether it
/// needs a human, then what is not routable and why. Exit 0 when the Hall answered.
pub fn capabilities(args: CapabilitiesArgs, out: &mut Out) -> Result<u8, CliError> {
    let c = &args.context;
    let body = json!({
        "tenant_id": c.tenant_id.clone().unwrap_or_default(),
        "env": c.env,
        "data_label": c.data_label,
        "tenant_risk": c.tenant_risk,
        "qos_class": c.qos_class,
    });
    let answer = call(
        &args.socket,
        Method::POST,
        "/wcp/capabilities/routable",
        Some(&body),
    )?;
    if !answer.status.is_success() {
        return Err(api_error(&answer));
    }
    let b = &answer.body;
    if out.json {
        out.json_line(b)?;
        return Ok(exit::OK);
    }
    let text = |v: &Value| v.as_str().unwrap_or("?").to_owned();
    let listed = b["capabilities"].as_array().cloned().unwrap_or_default();
    out.line(format!(
        "{} may route {} capabilit{} as {} in {} ({} data, {} risk, {}):",
        args.socket.socket.display(),
        listed.len(),
        if listed.len() == 1 { "y" } else { "ies" },
        text(&b["context"]["tenant_id"]),
        text(&b["context"]["env"]),
        text(&b["context"]["data_label"]),
        text(&b["context"]["tenant_risk"]),
        text(&b["context"]["qos_class"]),
    ))?;
    for cap in &listed {
        let how = match cap["routing"].as_str() {
            Some("requires_human") => format!(
                "needs a human ({}: {})",
                text(&cap["supervisor_level"]),
                text(&cap["approval_reason"])
            ),
            other => other.unwrap_or("?").to_owned(),
        };
        out.line(format!(
            "  {}  → {} ({}), rule {}: {how}",
            text(&cap["capability_id"]),
            text(&cap["worker_species_id"]),
            text(&cap["worker_id"]),
            text(&cap["matched_rule_id"]),
        ))?;
    }
    let refused = b["not_routable"].as_array().cloned().unwrap_or_default();
    if !refused.is_empty() {
        out.line("not routable in this context:")?;
        for cap in &refused {
            out.line(format!(
                "  {}  {}: {}",
                text(&cap["capability_id"]),
                text(&cap["deny_code"]),
                text(&cap["deny_message"]),
            ))?;
        }
    }
    Ok(exit::OK)
}

#[derive(Debug, clap::Args)]
pub struct DispatchArgs {
    #[command(flatten)]
    pub socket: SocketArg,
    /// The capability to dispatch (cap.*).
    #[arg(long)]
    pub capability: Option<String>,
    /// The worker's request payload: a JSON object, `@FILE`, or `-` for stdin.
    #[arg(long, default_value = "{}")]
    pub input: String,
    /// A complete RouteInput JSON file (instead of --capability and the flags below).
    #[arg(long, conflicts_with = "capability")]
    pub route_input: Option<PathBuf>,
    #[command(flatten)]
    pub context: RouteContextArgs,
    /// Correlation id (default: a fresh UUIDv4).
    #[arg(long)]
    pub correlation_id: Option<String>,
    /// Decide fully but execute nothing.
    #[arg(long)]
    pub dry_run: bool,
}

fn payload(spec: &str) -> Result<Value, CliError> {
    let text = if spec == "-" {
        read_input(std::path::Path::new("-"))?
    } else if let Some(path) = spec.strip_prefix('@') {
        read_input(std::path::Path::new(path))?
    } else {
        spec.to_owned()
    };
    let v: Value = crate::json::parse_str(&text).map_err(|e| {
        CliError::new(
            exit::DATAERR,
            "invalid_input",
            format!("--input is not valid JSON: {e}"),
        )
    })?;
    if !v.is_object() {
        return Err(CliError::new(
            exit::DATAERR,
            "invalid_input",
            "--input must be a JSON object",
        ));
    }
    Ok(v)
}

/// `wcp-hall dispatch`: route and run one request on the running Hall.
pub fn dispatch(args: DispatchArgs, out: &mut Out) -> Result<u8, CliError> {
    let body = match &args.route_input {
        Some(path) => crate::json::parse_str(&read_input(path)?).map_err(|e| {
            CliError::new(
                exit::DATAERR,
                "invalid_input",
                format!("{}: {e}", path.display()),
            )
        })?,
        None => {
            let capability = args.capability.clone().ok_or_else(|| {
                CliError::new(
                    exit::USAGE,
                    "usage",
                    "give --capability cap.… (or --route-input FILE)",
                )
            })?;
            let c = &args.context;
            json!({
                "capability_id": capability,
                "env": c.env,
                "data_label": c.data_label,
                "tenant_risk": c.tenant_risk,
                "qos_class": c.qos_class,
                "tenant_id": c.tenant_id.clone().unwrap_or_default(),
                "correlation_id": args.correlation_id.clone().unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
                "request": payload(&args.input)?,
                "dry_run": args.dry_run,
            })
        }
    };
    let answer = call(&args.socket, Method::POST, "/wcp/dispatch", Some(&body))?;
    if !answer.status.is_success() {
        return Err(api_error(&answer));
    }
    let b = &answer.body;
    if out.json {
        out.json_line(b)?;
    } else {
        let status = b["status"].as_str().unwrap_or("unknown");
        match status {
            "pending_approval" => out.line(format!(
                "pending approval {} (supervisor level {}, expires {}); an operator runs `wcp-hall approvals approve {}`",
                b["pending_approval_id"].as_str().unwrap_or("?"),
                b["supervisor_level"].as_str().unwrap_or("?"),
                b["approval_expires_at"].as_str().unwrap_or("?"),
                b["pending_approval_id"].as_str().unwrap_or("?"),
            ))?,
            "denied" => {
                let reason = &b["decision"]["deny_reason_if_denied"];
                out.line(format!(
                    "denied: {}: {}",
                    reason["code"].as_str().unwrap_or("?"),
                    reason["message"].as_str().unwrap_or("")
                ))?;
            }
            _ => {
                out.line(format!(
                    "{status}: {} via {} ({})",
                    b["decision"]["capability_id"].as_str().unwrap_or("?"),
                    b["decision"]["selected_worker_species_id"].as_str().unwrap_or("?"),
                    b["decision"]["matched_rule_id"].as_str().unwrap_or("?"),
                ))?;
                if let Some(result) = b.get("result") {
                    out.line(format!("result: {result}"))?;
                }
                // Why a run failed: the Hall's code and message (worker failures and aborted
                // runs alike), and what to do about it when there is something to say.
                let error = &b["execution"]["error"];
                if let Some(code) = error["code"].as_str() {
                    out.line(format!(
                        "error: {code}: {}",
                        error["message"].as_str().unwrap_or("")
                    ))?;
                    if let Some(last) = b["execution"]["stderr_tail"]
                        .as_str()
                        .and_then(|t| t.lines().rev().find(|l| !l.trim().is_empty()))
                    {
                        // Quoted: the worker's bytes never reach the terminal raw.
                        out.line(format!("stderr: {last:?}"))?;
                    }
                    if let Some(hint) = crate::envelope::RunFailure::hint_for(code) {
                        out.line(format!("hint: {hint}"))?;
                    }
                }
                if let Some(receipt) = b["execution"].get("receipt") {
                    out.line(format!("receipt: {receipt}"))?;
                }
            }
        }
    }
    Ok(match b["status"].as_str() {
        Some("completed" | "dry_run") => exit::OK,
        Some("pending_approval") => exit::TEMPFAIL,
        _ => exit::DENIED,
    })
}

#[derive(Debug, clap::Subcommand)]
pub enum ApprovalsCommand {
    /// Pending approvals (all of them for an operator, your own otherwise).
    List(ApprovalsListArgs),
    /// Show one approval and its outcome. The requester (your uid, `--tenant-id` the tenant you
    /// dispatched as) sees the approved run's result; an operator sees everything but the result.
    Show(ApprovalShowArgs),
    /// Approve: the request is re-routed with the approval and runs (operators only).
    Approve(ApprovalIdArgs),
    /// Deny: the request is denied with a receipt (operators only).
    Deny(ApprovalIdArgs),
    /// Escalate to a higher supervisor level (operators only).
    Escalate(ApprovalEscalateArgs),
}

#[derive(Debug, clap::Args)]
pub struct ApprovalsListArgs {
    #[command(flatten)]
    pub socket: SocketArg,
}

#[derive(Debug, clap::Args)]
pub struct ApprovalIdArgs {
    #[command(flatten)]
    pub socket: SocketArg,
    /// The pending_approval_id.
    pub id: String,
    /// A note recorded with the resolution.
    #[arg(long)]
    pub note: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct ApprovalShowArgs {
    #[command(flatten)]
    pub socket: SocketArg,
    /// The pending_approval_id.
    pub id: String,
    /// The tenant the request was dispatched as (needed to see the result; also
    /// `WCP_TENANT_ID`).
    #[arg(long, env = "WCP_TENANT_ID")]
    pub tenant_id: Option<String>,
    /// Wait up to this many seconds (at most 60) for an operator to act.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=60))]
    pub wait: u64,
}

#[derive(Debug, clap::Args)]
pub struct ApprovalEscalateArgs {
    #[command(flatten)]
    pub socket: SocketArg,
    pub id: String,
    /// advisory, gatekeeper, executor or incident_commander (default: the next level up).
    #[arg(long)]
    pub level: Option<String>,
    #[arg(long)]
    pub note: Option<String>,
}

pub fn approvals(cmd: ApprovalsCommand, out: &mut Out) -> Result<u8, CliError> {
    let answer = match &cmd {
        ApprovalsCommand::List(a) => call(&a.socket, Method::GET, "/wcp/approvals/pending", None)?,
        ApprovalsCommand::Show(a) => {
            let mut path = format!("/wcp/approvals/{}?wait_ms={}", a.id, a.wait * 1000);
            if let Some(t) = &a.tenant_id {
                path.push_str("&tenant_id=");
                path.extend(form_urlencoded::byte_serialize(t.as_bytes()));
            }
            call(&a.socket, Method::GET, &path, None)?
        }
        ApprovalsCommand::Approve(a) | ApprovalsCommand::Deny(a) => {
            let action = if matches!(cmd, ApprovalsCommand::Approve(_)) {
                "approve"
            } else {
                "deny"
            };
            let body = json!({"action": action, "note": a.note});
            call(
                &a.socket,
                Method::POST,
                &format!("/wcp/approvals/{}/resolve", a.id),
                Some(&body),
            )?
        }
        ApprovalsCommand::Escalate(a) => {
            let body = json!({"action": "escalate", "level": a.level, "note": a.note});
            call(
                &a.socket,
                Method::POST,
                &format!("/wcp/approvals/{}/resolve", a.id),
                Some(&body),
            )?
        }
    };
    if !answer.status.is_success() {
        return Err(api_error(&answer));
    }
    if out.json {
        out.json_line(&answer.body)?;
        return Ok(exit::OK);
    }
    match cmd {
        ApprovalsCommand::List(_) => {
            let list = answer.body["pending"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if list.is_empty() {
                out.line("no pending approvals")?;
            }
            for a in list {
                out.line(format!(
                    "{}  {}  {} for {} ({}), expires {}: {}",
                    a["pending_approval_id"].as_str().unwrap_or("?"),
                    a["supervisor_level"].as_str().unwrap_or("?"),
                    a["capability_id"].as_str().unwrap_or("?"),
                    a["tenant_id"].as_str().unwrap_or("?"),
                    a["deny_code"].as_str().unwrap_or("?"),
                    a["approval_expires_at"].as_str().unwrap_or("?"),
                    a["reason"].as_str().unwrap_or(""),
                ))?;
            }
        }
        _ => {
            let a = &answer.body["approval"];
            out.line(format!(
                "approval {}: {} (level {})",
                a["id"].as_str().unwrap_or("?"),
                a["status"].as_str().unwrap_or("?"),
                a["supervisor_level"].as_str().unwrap_or("?")
            ))?;
            if let Some(r) = answer.body.get("response") {
                out.line(format!("outcome: {}", r["status"].as_str().unwrap_or("?")))?;
                if let Some(result) = r.get("result").filter(|v| !v.is_null()) {
                    out.line(format!("result: {result}"))?;
                } else if r.get("result_withheld").is_some() {
                    out.line(
                        "result: withheld (it goes to the requester: `wcp-hall approvals show \
                         ID --tenant-id TENANT` as the uid that dispatched)",
                    )?;
                }
            }
        }
    }
    Ok(exit::OK)
}

#[derive(Debug, clap::Args)]
pub struct ReloadArgs {
    #[command(flatten)]
    pub socket: SocketArg,
}

/// `wcp-hall reload`: ask the running Hall to reload (operators only); same as SIGHUP.
pub fn reload(args: ReloadArgs, out: &mut Out) -> Result<u8, CliError> {
    let answer = call(&args.socket, Method::POST, "/wcp/reload", None)?;
    if !answer.status.is_success() {
        return Err(api_error(&answer));
    }
    if out.json {
        out.json_line(&answer.body)?;
    } else {
        out.line(format!(
            "reloaded: generation {}",
            answer.body["generation"]
        ))?;
    }
    Ok(exit::OK)
}

/// The exit code of a failed start (78: the configuration; 74: the host refused a resource).
fn start_exit(kind: crate::hall::lifecycle::StartFailure) -> u8 {
    use crate::hall::lifecycle::StartFailure;
    match kind {
        StartFailure::Config => exit::CONFIG,
        StartFailure::Io => exit::IOERR,
    }
}
