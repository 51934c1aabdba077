//! hello, native: the `hello` worker (cap.hello.greet) as a compiled program, speaking the same
//! wcp-hall worker protocol, versions 1 and 2, as the Python packages' `code/bootstrap.py`.
//!
//! Why it exists: an executed dispatch of a Python worker costs ~65 ms of CPython start-up, which
//! hides what the Hall itself costs. This worker starts in well under a millisecond, so
//! `cargo bench --bench daemon` measures the Hall's governed execution path (verify, durable
//! intent, full privilege envelope, durable outcome) rather than an interpreter. It is also the
//! reference for native packages: a package whose `code/bootstrap` is an ELF executable (and
//! which has no `code/bootstrap.py`) runs directly, with only the dynamic loader and the system
//! libraries readable besides the package (see `hall::runner::package_bootstrap`).
//!
//! Protocol (as `workers/hello/code/bootstrap.py`):
//! - stdin: one JSON object, UTF-8, at most 16 MiB: `{"name": "<1 to 100 characters, no control
//!   characters>"}`; no other keys (duplicates and unknown keys are refused).
//! - stdout: one JSON object and a newline: `{"greeting": ..., "correlation_id": ...}` or
//!   `{"error": {"code", "message"}, "correlation_id": ...}`.
//! - stderr: JSON log records, one per line.
//! - exit: 0 success, 2 the request or environment was rejected, 1 the work failed.
//! - environment: `WCP_CORRELATION_ID` (required, 1-128 printable ASCII characters, no spaces),
//!   `TRACEPARENT` (optional).
//! - version 2 (`WCP_WORKER_PROTOCOL=2`, set by the Hall because the package declares it in
//!   `wcp-worker.json`): stdin is one frame, `{"protocol": 2, "context": {"correlation_id",
//!   "traceparent", "timeout_ms"}, "request": {...}}`, and the environment names no request.
//!
//! Build it with `cargo build --release --bin wcp-hello-native`; package it as
//! `<pkg>/code/bootstrap` next to `workers/hello/config.schema.json` (workers/hello_native/README.md).

use std::io::{Read, Write};
use std::process::ExitCode;

use serde::Deserialize;
use serde_json::{Value, json};

const WORKER_SPECIES: &str = "wrk.hello.native";
const MAX_REQUEST_BYTES: u64 = 16 * 1024 * 1024;
const MAX_CORRELATION_ID_CHARS: usize = 128;
const MAX_NAME_CHARS: usize = 100;

const EXIT_OK: u8 = 0;
const EXIT_FAILED: u8 = 1;
const EXIT_BAD_REQUEST: u8 = 2;

/// A rejected request or environment (exit 2), or a failed run (exit 1).
struct Failure {
    code: &'static str,
    message: String,
    exit: u8,
}

fn bad(code: &'static str, message: impl Into<String>) -> Failure {
    Failure {
        code,
        message: message.into(),
        exit: EXIT_BAD_REQUEST,
    }
}

/// The request (config.schema.json): exactly one key, `name`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Request {
    name: String,
}

struct Context {
    correlation_id: Option<String>,
    trace_id: Option<String>,
}

impl Context {
    fn log(&self, level: &str, msg: &str, fields: Value) {
        let mut record = json!({
            "ts": utc_now(),
            "level": level,
            "worker": WORKER_SPECIES,
            "correlation_id": self.correlation_id,
            "trace_id": self.trace_id,
            "msg": msg,
        });
        if fields.as_object().is_some_and(|f| !f.is_empty()) {
            record["fields"] = fields;
        }
        // A closed stderr must not turn a good result into a failure.
        let _ = writeln!(std::io::stderr().lock(), "{record}");
    }
}

/// Now as RFC 3339 UTC with milliseconds (`2026-11-25T12:00:00.000Z`).
///
/// Written out here rather than taken from the `wcp_hall` library on purpose: a worker is a
/// separate program that must not link the Hall (linking it made this binary ~100 MB, all of it
/// hashed at signing, copied into the store and mapped at every start).
fn utc_now() -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let secs = (ms / 1000) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Days since 1970-01-01 to a Gregorian date (H. Hinnant's civil_from_days).
    let z = days + 719_468;
    let (era, doe) = (z.div_euclid(146_097), z.rem_euclid(146_097));
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

/// `00-<32 hex>-<16 hex>-<2 hex>` → the trace id.
fn trace_id(traceparent: &str) -> Option<String> {
    let parts: Vec<&str> = traceparent.split('-').collect();
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    (parts.len() == 4
        && hex(parts[0], 2)
        && hex(parts[1], 32)
        && hex(parts[2], 16)
        && hex(parts[3], 2))
    .then(|| parts[1].to_owned())
}

fn check_correlation_id(id: String, name: &str) -> Result<String, Failure> {
    if id.is_empty() {
        return Err(bad(
            "missing_correlation_id",
            format!("{name} is not set; the Hall sets it for every dispatch"),
        ));
    }
    if id.len() > MAX_CORRELATION_ID_CHARS || !id.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        return Err(bad(
            "invalid_correlation_id",
            format!(
                "{name} must be 1-{MAX_CORRELATION_ID_CHARS} printable ASCII characters without spaces"
            ),
        ));
    }
    Ok(id)
}

/// A version 2 frame: exactly these keys.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Frame<'a> {
    protocol: u8,
    context: FrameContext,
    #[serde(borrow)]
    request: &'a serde_json::value::RawValue,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FrameContext {
    #[serde(default)]
    correlation_id: String,
    traceparent: Option<String>,
    #[allow(dead_code)] // the Hall enforces the budget; a worker may read it
    timeout_ms: Option<u64>,
}

/// What stdin held, up to the limit.
fn read_stdin(limit: u64) -> Result<Vec<u8>, Failure> {
    let mut data = Vec::new();
    std::io::stdin()
        .take(limit + 1)
        .read_to_end(&mut data)
        .map_err(|e| Failure {
            code: "internal_error",
            message: format!("cannot read the request: {e}"),
            exit: EXIT_FAILED,
        })?;
    Ok(data)
}

/// Version 2: the frame on stdin sets the context and holds the request.
fn read_frame(ctx: &mut Context) -> Result<Request, Failure> {
    let data = read_stdin(MAX_REQUEST_BYTES + 4096)?;
    let frame: Frame<'_> = serde_json::from_slice(&data).map_err(|e| {
        bad(
            "invalid_frame",
            format!("stdin must be one protocol 2 frame: {e}"),
        )
    })?;
    if frame.protocol != 2 {
        return Err(bad("invalid_frame", "the frame's protocol must be 2"));
    }
    ctx.correlation_id = Some(check_correlation_id(
        frame.context.correlation_id,
        "context.correlation_id",
    )?);
    ctx.trace_id = frame.context.traceparent.as_deref().and_then(trace_id);
    parse_request(frame.request.get().as_bytes())
}

fn parse_request(data: &[u8]) -> Result<Request, Failure> {
    if data.len() as u64 > MAX_REQUEST_BYTES {
        return Err(bad(
            "request_too_large",
            format!("the request is larger than {MAX_REQUEST_BYTES} bytes"),
        ));
    }
    let text = std::str::from_utf8(data)
        .map_err(|e| bad("invalid_json", format!("the request is not UTF-8: {e}")))?;
    if text.trim().is_empty() {
        return Err(bad(
            "invalid_json",
            "the request is empty; send one JSON object on stdin",
        ));
    }
    let value: Value = serde_json::from_str(text).map_err(|e| {
        bad(
            "invalid_json",
            format!("the request is not valid JSON: {e}"),
        )
    })?;
    if !value.is_object() {
        return Err(bad("invalid_request", "the request must be a JSON object"));
    }
    // Typed a second time from the text, so a duplicated `name` is refused, not overwritten.
    let request: Request = serde_json::from_str(text).map_err(|e| {
        bad(
            "invalid_request",
            format!("the request does not match the schema: {e}"),
        )
    })?;
    let chars = request.name.chars().count();
    if !(1..=MAX_NAME_CHARS).contains(&chars) {
        return Err(bad(
            "invalid_request",
            format!("$.name must be 1 to {MAX_NAME_CHARS} characters, got {chars}"),
        ));
    }
    if request.name.chars().any(|c| c <= '\u{1f}' || c == '\u{7f}') {
        return Err(bad(
            "invalid_request",
            "$.name must not contain control characters",
        ));
    }
    Ok(request)
}

/// The greeting for `name` (runs of whitespace collapse to one space).
fn greet(name: &str) -> Result<String, Failure> {
    let name = name.split_whitespace().collect::<Vec<_>>().join(" ");
    if name.is_empty() {
        return Err(bad(
            "invalid_request",
            "name must contain a non-space character",
        ));
    }
    Ok(format!("Hello, {name}!"))
}

fn emit(value: &Value) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{value}")?;
    out.flush()
}

fn main() -> ExitCode {
    let mut ctx = Context {
        correlation_id: None,
        trace_id: None,
    };
    let answer = match std::env::var("WCP_WORKER_PROTOCOL").as_deref() {
        Ok("2") => read_frame(&mut ctx),
        Err(std::env::VarError::NotPresent) | Ok("1") => {
            ctx.trace_id = std::env::var("TRACEPARENT")
                .ok()
                .as_deref()
                .and_then(trace_id);
            check_correlation_id(
                std::env::var("WCP_CORRELATION_ID").unwrap_or_default(),
                "WCP_CORRELATION_ID",
            )
            .and_then(|id| {
                ctx.correlation_id = Some(id);
                parse_request(&read_stdin(MAX_REQUEST_BYTES)?)
            })
        }
        Ok(_) | Err(_) => Err(bad(
            "invalid_environment",
            "WCP_WORKER_PROTOCOL must be 1 or 2",
        )),
    }
    .and_then(|request| greet(&request.name));
    match answer {
        Ok(greeting) => {
            ctx.log(
                "info",
                "greeted",
                json!({"chars": greeting.chars().count()}),
            );
            let result = json!({"greeting": greeting, "correlation_id": ctx.correlation_id});
            if let Err(e) = emit(&result) {
                ctx.log(
                    "error",
                    "could not write the result",
                    json!({"error": e.to_string()}),
                );
                return ExitCode::from(EXIT_FAILED);
            }
            ExitCode::from(EXIT_OK)
        }
        Err(f) => {
            let level = if f.exit == EXIT_FAILED {
                "error"
            } else {
                "warning"
            };
            ctx.log(level, &f.message, json!({"code": f.code, "exit": f.exit}));
            let _ = emit(&json!({
                "error": {"code": f.code, "message": f.message},
                "correlation_id": ctx.correlation_id,
            }));
            ExitCode::from(f.exit)
        }
    }
}
