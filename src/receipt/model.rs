//! The receipt payload: what a receipt says, its one canonical encoding, and the log line that
//! carries it. Pure: no I/O, no clock (times and ids come in through [`Header`]).
//!
//! Every line of the log is one DSSE envelope (`payloadType`
//! `application/vnd.wcp.receipt.v1+json`) over a payload of this shape, with the payload's
//! SHA-256 (`receipt_hash`) beside it:
//!
//! ```text
//! {"envelope":{"payload":"<b64>","payloadType":"…","signatures":[…]},"receipt_hash":"sha256:<hex>","seq":N}
//! ```
//!
//! The payload is canonical JSON in the restricted profile of [`crate::crypto::canonical`]
//! (strings, integers within ±(2^53−1), booleans, null; sorted ASCII keys; no floats), so every
//! encoder produces the same bytes. Absent optional sections are written as `null`, never
//! omitted (two exceptions, added later: `execution.failure` and `dispatch.trace` are omitted
//! when absent so older receipts keep their bytes; they are never `null`), so there is exactly
//! one encoding of a
//! payload: [`ReceiptPayload::decode`] re-encodes
//! what it parsed and refuses bytes that differ (which also refuses duplicate keys, floats and
//! unknown fields). Verification still works on the stored bytes only: the hash and the
//! signature are computed over them, never over a re-serialisation.
//!
//! Encoding is fast because it is plain `serde_json` output: every struct here declares its
//! fields in byte order of their names and the envelope report's objects are sorted when the
//! payload is built, so the compact serialisation *is* the canonical one (a test pins it to
//! [`crate::crypto::canonical`] for every type, and [`ReceiptPayload::encode`] falls back to the
//! canonical encoder for a hand-built payload whose report is unsorted).
//!
//! Kinds of record (`kind`) and the sections each carries:
//!
//! | kind | sections | written |
//! |---|---|---|
//! | `intent` | `dispatch` | durable before a worker starts |
//! | `executed` | `dispatch`, `intent_seq`, `execution` | durable before the caller's answer |
//! | `denied` | `dispatch` | a denied dispatch (nothing ran) |
//! | `expired_approval` | `dispatch`, `approval` | a human approval that expired (nothing ran) |
//! | `aborted` | `dispatch`, `abort`, `intent_seq` (or null) | an intent that will get no outcome |
//! | `recovery` | `recovery` | a torn final line was cut at start |
//! | `key_rotation` | `rotation` | signed by the old *and* the new key |
//! | `checkpoint` | `checkpoint` | the signed C2SP checkpoint of the tree before it |

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::merkle::Hash;
use crate::crypto::canonical::{self, CanonicalError, MAX_SAFE_INTEGER};
use crate::crypto::{Envelope, KeyId, KeyPair, PublicKey};
use crate::wcp::RouteDecision;

/// DSSE `payloadType` of every receipt.
pub const PAYLOAD_TYPE: &str = "application/vnd.wcp.receipt.v1+json";
/// `schema` of every payload.
pub const SCHEMA: &str = "wcp.receipt.v1";
/// Largest payload the Hall writes or accepts (an envelope report larger than this is a bug).
pub const MAX_PAYLOAD_BYTES: usize = 64 * 1024;
/// Largest log line accepted when reading (base64 payload + signatures + framing).
pub const MAX_LINE_BYTES: usize = 128 * 1024;

/// What a record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Intent,
    Executed,
    Denied,
    ExpiredApproval,
    Aborted,
    Recovery,
    KeyRotation,
    Checkpoint,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Intent => "intent",
            Kind::Executed => "executed",
            Kind::Denied => "denied",
            Kind::ExpiredApproval => "expired_approval",
            Kind::Aborted => "aborted",
            Kind::Recovery => "recovery",
            Kind::KeyRotation => "key_rotation",
            Kind::Checkpoint => "checkpoint",
        }
    }
}

/// The caller's kernel identity (from `SO_PEERCRED` on the daemon's socket).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Caller {
    pub gid: u32,
    pub pid: u32,
    pub uid: u32,
}

/// The worker package that ran: its digest, its manifest's digest and the keys that signed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackageRef {
    pub digest: String,
    pub manifest_digest: Option<String>,
    pub signer_key_ids: Vec<String>,
}

/// The routing decision in brief.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionSummary {
    pub decision_id: String,
    pub denied: bool,
    /// The WCP deny code (`DENY_*`), when denied.
    pub deny_code: Option<String>,
    /// What lies under a generic deny code, when the Hall knows more: an attestation denial's
    /// own `ATTEST_*` code and reason (`ATTEST_TREE_UNSAFE: code/x is a FIFO …`), at most 1,000
    /// bytes. Absent otherwise (older receipts never have it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deny_detail: Option<String>,
    pub matched_rule_id: String,
    pub policy_version: Option<String>,
}

/// One dispatch: WCP §5.7's fields plus who asked, what ran and under which envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dispatch {
    /// Lowercase hex SHA-256 of the request (the router's `artifact_hash`).
    pub artifact_hash: Option<String>,
    pub caller: Caller,
    pub capability_id: String,
    pub controls_verified: Vec<String>,
    pub correlation_id: String,
    pub decision: DecisionSummary,
    /// When the Hall dispatched (or decided, for denials): RFC 3339, UTC.
    pub dispatched_at: String,
    pub env: String,
    /// The privilege envelope's requested-vs-effective report (canonical-profile JSON).
    pub envelope: Option<Value>,
    pub package: Option<PackageRef>,
    /// `ALLOW`, `DENY` or `REQUIRE_HUMAN`.
    pub policy_decision: String,
    /// The worker registry service's status the Hall used (`[registry_service]`), when it is
    /// enabled: the status, when it and the ban list were fetched, and any staleness warning.
    /// Absent otherwise (older receipts never have it). Fields in byte order, as every field
    /// here (the canonical encoding).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry_service: Option<crate::registry_service::RegistryEvidence>,
    pub tenant_id: String,
    /// The W3C trace this dispatch belongs to, when there is one: the Hall's own dispatch span
    /// when it exports traces, else the caller's span from its `traceparent`. Absent (and then
    /// not encoded, so older receipts keep their bytes) without a trace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<TraceRef>,
    /// The enrolled worker id (`org.<ns>.*` / `x.<ns>.*`), when one was selected.
    pub worker_id: Option<String>,
    pub worker_species_id: Option<String>,
}

/// A span in a W3C trace: lowercase hex ids (`trace_id` 32 digits, `span_id` 16).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraceRef {
    pub span_id: String,
    pub trace_id: String,
}

impl Dispatch {
    /// The dispatch fields of a routing decision. `policy_decision` is `DENY` for a denied
    /// decision and `ALLOW` otherwise; `controls_verified` are the required controls the router
    /// checked (none when denied). Package and envelope are filled in by the caller.
    pub fn from_decision(
        decision: &RouteDecision,
        worker_id: Option<String>,
        caller: Caller,
        dispatched_at: String,
    ) -> Self {
        Dispatch {
            correlation_id: decision.correlation_id.clone(),
            dispatched_at,
            tenant_id: decision.tenant_id.clone(),
            env: decision.env.as_str().to_owned(),
            capability_id: decision.capability_id.clone(),
            worker_id,
            worker_species_id: decision.selected_worker_species_id.clone(),
            policy_decision: if decision.denied { "DENY" } else { "ALLOW" }.to_owned(),
            controls_verified: if decision.denied {
                Vec::new()
            } else {
                decision.required_controls_effective.clone()
            },
            artifact_hash: decision.artifact_hash.clone(),
            decision: DecisionSummary {
                decision_id: decision.decision_id.clone(),
                matched_rule_id: decision.matched_rule_id.clone(),
                denied: decision.denied,
                deny_code: decision.deny_code().map(|c| c.as_str().to_owned()),
                deny_detail: decision.deny_reason_if_denied.as_ref().and_then(|r| {
                    let code = r.extra.get("attestation_code")?.as_str()?;
                    let reason = r
                        .extra
                        .get("attestation_reason")
                        .and_then(|v| v.as_str())
                        .unwrap_or("");
                    let mut s = format!("{code}: {reason}");
                    if s.len() > 1000 {
                        let mut end = 1000;
                        while !s.is_char_boundary(end) {
                            end -= 1;
                        }
                        s.truncate(end);
                    }
                    Some(s)
                }),
                policy_version: None,
            },
            caller,
            package: None,
            envelope: None,
            registry_service: None,
            trace: None,
        }
    }
}

/// Timings of one execution, in integer milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timings {
    pub cpu_system_ms: Option<u64>,
    pub cpu_user_ms: Option<u64>,
    /// When the worker process started: RFC 3339, UTC.
    pub started_at: String,
    pub wall_ms: u64,
}

/// How an execution ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Execution {
    /// Exit code, when the worker exited.
    pub exit_code: Option<i64>,
    /// Why the run failed: one of [`crate::envelope::RunFailure::CODES`] (`not_json`,
    /// `timed_out`, …); absent when it produced a result. The one field written only when set:
    /// receipts from before it existed have no such key and must keep their exact bytes, so
    /// `null` is never written (and a payload with `"failure":null` is not canonical).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    /// Terminating signal, when it was killed.
    pub signal: Option<i64>,
    pub stderr_bytes: u64,
    pub stderr_sha256: String,
    pub stdout_bytes: u64,
    /// Lowercase hex SHA-256 of the bytes captured.
    pub stdout_sha256: String,
    pub timed_out: bool,
    pub timings: Timings,
    /// Output was cut at the envelope's limit.
    pub truncated: bool,
}

/// A human approval that expired before anyone resolved it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Approval {
    pub approval_expires_at: String,
    pub pending_approval_id: String,
    pub supervisor_level: Option<String>,
}

/// Why a dispatch will get no outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Abort {
    pub reason: String,
}

/// A torn final line cut at start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recovery {
    pub discarded_bytes: u64,
    /// Lowercase hex SHA-256 of the discarded bytes.
    pub discarded_sha256: String,
    /// Byte offset where the torn line began (the segment's new length).
    pub offset: u64,
    /// Where the discarded bytes were saved (file name in the log's `broken/` directory).
    pub saved_as: String,
    /// Segment file name.
    pub segment: String,
}

/// A signing-key rotation; the record is signed by both keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rotation {
    pub new_key_id: String,
    pub new_public_key: String,
    pub old_key_id: String,
    /// Standard base64 of the 32-byte Ed25519 key.
    pub old_public_key: String,
}

impl Rotation {
    pub fn new(old: &PublicKey, new: &PublicKey) -> Self {
        Rotation {
            old_key_id: old.id().0.clone(),
            old_public_key: old.to_base64(),
            new_key_id: new.id().0.clone(),
            new_public_key: new.to_base64(),
        }
    }
}

/// A checkpoint of the tree of every record before this one (`size` = this record's `seq`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointRecord {
    /// The C2SP signed note, exactly as saved.
    pub note: String,
    /// Lowercase hex Merkle root.
    pub root: String,
    pub size: u64,
}

/// The Hall that wrote a record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HallInfo {
    pub host_id: String,
    pub version: String,
}

/// What a record says, by kind (the public, type-checked view of a payload).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    Intent(Dispatch),
    Executed {
        intent_seq: u64,
        dispatch: Dispatch,
        execution: Execution,
    },
    Denied(Dispatch),
    ExpiredApproval {
        dispatch: Dispatch,
        approval: Approval,
    },
    Aborted {
        intent_seq: Option<u64>,
        dispatch: Dispatch,
        reason: String,
    },
    Recovery(Recovery),
    KeyRotation(Rotation),
    Checkpoint(CheckpointRecord),
}

impl Body {
    pub fn kind(&self) -> Kind {
        match self {
            Body::Intent(_) => Kind::Intent,
            Body::Executed { .. } => Kind::Executed,
            Body::Denied(_) => Kind::Denied,
            Body::ExpiredApproval { .. } => Kind::ExpiredApproval,
            Body::Aborted { .. } => Kind::Aborted,
            Body::Recovery(_) => Kind::Recovery,
            Body::KeyRotation(_) => Kind::KeyRotation,
            Body::Checkpoint(_) => Kind::Checkpoint,
        }
    }

    /// The dispatch this record is about, if any.
    pub fn dispatch(&self) -> Option<&Dispatch> {
        match self {
            Body::Intent(d) | Body::Denied(d) => Some(d),
            Body::Executed { dispatch, .. }
            | Body::ExpiredApproval { dispatch, .. }
            | Body::Aborted { dispatch, .. } => Some(dispatch),
            _ => None,
        }
    }
}

/// The fields every record carries, minted by the log writer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The log's origin (also the checkpoint key name), e.g. `hall.<host-id>/receipts`.
    pub log: String,
    pub seq: u64,
    /// A UUIDv7.
    pub receipt_id: String,
    /// `None` for seq 0 only.
    pub prev_receipt_hash: Option<Hash>,
    pub signing_key: PublicKey,
    /// When the record was written: RFC 3339, UTC, milliseconds.
    pub time: String,
    pub hall: HallInfo,
}

/// A receipt payload as encoded (the wire form: every section present, `null` when unused).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiptPayload {
    pub abort: Option<Abort>,
    pub approval: Option<Approval>,
    pub checkpoint: Option<CheckpointRecord>,
    pub dispatch: Option<Dispatch>,
    pub execution: Option<Execution>,
    pub hall: HallInfo,
    pub intent_seq: Option<u64>,
    pub kind: Kind,
    pub log: String,
    /// `sha256:<hex>` of the previous record's payload bytes; `null` for seq 0.
    pub prev_receipt_hash: Option<String>,
    pub receipt_id: String,
    pub recovery: Option<Recovery>,
    pub rotation: Option<Rotation>,
    pub schema: String,
    pub seq: u64,
    pub signing_key_id: String,
    /// Standard base64 of the signer's Ed25519 key (a hint: trust comes from the verifier's key
    /// history, and the id must match it).
    pub signing_public_key: String,
    pub time: String,
}

/// A payload or line that is not a valid receipt.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    #[error("{field}: {problem}")]
    Invalid { field: String, problem: String },
    #[error("{0}")]
    Canonical(#[from] CanonicalError),
    #[error("not a receipt payload: {0}")]
    Json(String),
    #[error("not a receipt log line: {0}")]
    Line(String),
    #[error("payload is {size} bytes; the limit is {max}")]
    TooLarge { size: usize, max: usize },
    #[error("payload bytes are not the canonical encoding of the receipt they hold")]
    NotCanonical,
}

fn invalid(field: &str, problem: impl Into<String>) -> ModelError {
    ModelError::Invalid {
        field: field.to_owned(),
        problem: problem.into(),
    }
}

/// Whether every object in `v` has its keys in byte order (so serde_json writes it canonically).
fn keys_sorted(v: &Value) -> bool {
    match v {
        Value::Object(m) => {
            m.keys()
                .zip(m.keys().skip(1))
                .all(|(a, b)| a.as_bytes() < b.as_bytes())
                && m.values().all(keys_sorted)
        }
        Value::Array(a) => a.iter().all(keys_sorted),
        _ => true,
    }
}

/// `sha256:<lowercase hex>`.
pub fn hash_string(h: &Hash) -> String {
    format!("sha256:{}", crate::common::hex(h))
}

/// Parses `sha256:<64 lowercase hex>`.
pub fn parse_hash_string(s: &str) -> Option<Hash> {
    s.strip_prefix("sha256:").and_then(parse_hex32)
}

/// Parses 64 lowercase hex digits.
pub fn parse_hex32(s: &str) -> Option<Hash> {
    let b = s.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = digit(b[2 * i])? << 4 | digit(b[2 * i + 1])?;
    }
    Some(out)
}

/// SHA-256 of the payload bytes: the `receipt_hash`.
pub fn receipt_hash(payload: &[u8]) -> Hash {
    Sha256::digest(payload).into()
}

pub use crate::common::rfc3339_millis;

// ---- field checks -------------------------------------------------------------------------

fn text(field: &str, v: &str, max: usize) -> Result<(), ModelError> {
    if v.is_empty() {
        return Err(invalid(field, "is empty"));
    }
    text_or_empty(field, v, max)
}

fn text_or_empty(field: &str, v: &str, max: usize) -> Result<(), ModelError> {
    if v.len() > max {
        return Err(invalid(field, format!("is longer than {max} bytes")));
    }
    if v.chars().any(char::is_control) {
        return Err(invalid(field, "contains control characters"));
    }
    Ok(())
}

fn opt_text(field: &str, v: &Option<String>, max: usize) -> Result<(), ModelError> {
    v.as_deref().map_or(Ok(()), |v| text(field, v, max))
}

fn hex64(field: &str, v: &str) -> Result<(), ModelError> {
    parse_hex32(v)
        .map(|_| ())
        .ok_or_else(|| invalid(field, "is not 64 lowercase hex digits"))
}

fn timestamp(field: &str, v: &str) -> Result<(), ModelError> {
    // RFC 3339 date-time, UTC or with an offset: checked for shape, not calendar validity.
    let b = v.as_bytes();
    let shape = b.len() >= 20
        && b.len() <= 40
        && b[4] == b'-'
        && b[7] == b'-'
        && (b[10] == b'T')
        && b[13] == b':'
        && b[16] == b':'
        && [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18]
            .iter()
            .all(|&i| b[i].is_ascii_digit())
        && b[19..]
            .iter()
            .all(|c| c.is_ascii_digit() || matches!(c, b'.' | b'Z' | b'+' | b'-' | b':'))
        && (v.ends_with('Z') || b[b.len() - 6] == b'+' || b[b.len() - 6] == b'-');
    if shape {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!("{v:?} is not an RFC 3339 date-time (e.g. 2026-11-24T19:36:01.274Z)"),
        ))
    }
}

/// The key id of a base64 public key, checking only its encoding (32 bytes, standard padded
/// base64): cheap, no curve-point decompression. Whether the bytes are a valid Ed25519 key is
/// decided when a signature is checked against them.
fn key_id_b64(field: &str, v: &str) -> Result<String, ModelError> {
    let raw = STANDARD
        .decode(v)
        .ok()
        .filter(|r| r.len() == 32)
        .ok_or_else(|| invalid(field, "is not base64 of a 32-byte Ed25519 public key"))?;
    if STANDARD.encode(&raw) != v {
        return Err(invalid(field, "is not in standard padded base64"));
    }
    let mut h = Sha256::new();
    h.update([0x01]);
    h.update(&raw);
    Ok(crate::common::hex(&h.finalize()))
}

fn public_key(field: &str, v: &str) -> Result<PublicKey, ModelError> {
    let key = PublicKey::from_base64(v)
        .ok_or_else(|| invalid(field, "is not base64 of a valid Ed25519 public key"))?;
    if key.to_base64() != v {
        return Err(invalid(field, "is not in standard padded base64"));
    }
    Ok(key)
}

fn safe_int(field: &str, v: u64) -> Result<(), ModelError> {
    if v > MAX_SAFE_INTEGER {
        return Err(invalid(field, "is larger than 2^53-1"));
    }
    Ok(())
}

impl Dispatch {
    fn validate(&self) -> Result<(), ModelError> {
        // Empty when the caller sent none: such a request is still routed (and denied with
        // DENY_MISSING_CORRELATION_ID, or allowed when nothing requires one) and recorded.
        text_or_empty("dispatch.correlation_id", &self.correlation_id, 256)?;
        timestamp("dispatch.dispatched_at", &self.dispatched_at)?;
        text_or_empty("dispatch.tenant_id", &self.tenant_id, 256)?;
        text("dispatch.env", &self.env, 32)?;
        text("dispatch.capability_id", &self.capability_id, 256)?;
        opt_text("dispatch.worker_id", &self.worker_id, 256)?;
        opt_text("dispatch.worker_species_id", &self.worker_species_id, 256)?;
        text("dispatch.policy_decision", &self.policy_decision, 64)?;
        if self.controls_verified.len() > 256 {
            return Err(invalid(
                "dispatch.controls_verified",
                "has more than 256 controls",
            ));
        }
        for c in &self.controls_verified {
            text("dispatch.controls_verified[]", c, 256)?;
        }
        if let Some(h) = &self.artifact_hash {
            hex64("dispatch.artifact_hash", h)?;
        }
        let d = &self.decision;
        text_or_empty("dispatch.decision.decision_id", &d.decision_id, 256)?;
        text_or_empty("dispatch.decision.matched_rule_id", &d.matched_rule_id, 256)?;
        opt_text("dispatch.decision.deny_code", &d.deny_code, 128)?;
        opt_text("dispatch.decision.policy_version", &d.policy_version, 256)?;
        if d.denied != d.deny_code.is_some() {
            return Err(invalid(
                "dispatch.decision.deny_code",
                "must be set exactly when the decision is denied",
            ));
        }
        if let Some(p) = &self.package {
            text("dispatch.package.digest", &p.digest, 256)?;
            opt_text("dispatch.package.manifest_digest", &p.manifest_digest, 256)?;
            if p.signer_key_ids.len() > 64 {
                return Err(invalid(
                    "dispatch.package.signer_key_ids",
                    "has more than 64 keys",
                ));
            }
            for k in &p.signer_key_ids {
                text("dispatch.package.signer_key_ids[]", k, 256)?;
            }
        }
        if let Some(e) = &self.envelope {
            canonical::check(e).map_err(|e| invalid("dispatch.envelope", e.to_string()))?;
        }
        if let Some(t) = &self.trace {
            w3c_id("dispatch.trace.trace_id", &t.trace_id, 32)?;
            w3c_id("dispatch.trace.span_id", &t.span_id, 16)?;
        }
        Ok(())
    }
}

/// A W3C Trace Context id: `len` lowercase hex digits, not all zero.
fn w3c_id(field: &'static str, s: &str, len: usize) -> Result<(), ModelError> {
    let hex = s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if !hex || s.bytes().all(|b| b == b'0') {
        return Err(invalid(
            field,
            format!("must be {len} lowercase hex digits, not all zero"),
        ));
    }
    Ok(())
}

impl Execution {
    fn validate(&self) -> Result<(), ModelError> {
        if let Some(c) = self.exit_code
            && !(0..=255).contains(&c)
        {
            return Err(invalid("execution.exit_code", "must be 0..=255"));
        }
        if let Some(s) = self.signal
            && !(1..=64).contains(&s)
        {
            return Err(invalid(
                "execution.signal",
                "must be a signal number 1..=64",
            ));
        }
        if let Some(f) = &self.failure
            && !crate::envelope::RunFailure::CODES.contains(&f.as_str())
        {
            return Err(invalid(
                "execution.failure",
                format!(
                    "is {f:?}, not one of {}",
                    crate::envelope::RunFailure::CODES.join(", ")
                ),
            ));
        }
        hex64("execution.stdout_sha256", &self.stdout_sha256)?;
        hex64("execution.stderr_sha256", &self.stderr_sha256)?;
        safe_int("execution.stdout_bytes", self.stdout_bytes)?;
        safe_int("execution.stderr_bytes", self.stderr_bytes)?;
        timestamp("execution.timings.started_at", &self.timings.started_at)?;
        safe_int("execution.timings.wall_ms", self.timings.wall_ms)?;
        for (f, v) in [
            ("execution.timings.cpu_user_ms", self.timings.cpu_user_ms),
            (
                "execution.timings.cpu_system_ms",
                self.timings.cpu_system_ms,
            ),
        ] {
            if let Some(v) = v {
                safe_int(f, v)?;
            }
        }
        Ok(())
    }
}

impl ReceiptPayload {
    /// Assembles and validates a payload.
    pub fn new(header: &Header, body: Body) -> Result<Self, ModelError> {
        let mut p = ReceiptPayload {
            schema: SCHEMA.to_owned(),
            log: header.log.clone(),
            seq: header.seq,
            receipt_id: header.receipt_id.clone(),
            prev_receipt_hash: header.prev_receipt_hash.as_ref().map(hash_string),
            signing_key_id: header.signing_key.id().0.clone(),
            signing_public_key: header.signing_key.to_base64(),
            time: header.time.clone(),
            hall: header.hall.clone(),
            kind: body.kind(),
            dispatch: None,
            intent_seq: None,
            execution: None,
            approval: None,
            abort: None,
            recovery: None,
            rotation: None,
            checkpoint: None,
        };
        match body {
            Body::Intent(d) | Body::Denied(d) => p.dispatch = Some(d),
            Body::Executed {
                intent_seq,
                dispatch,
                execution,
            } => {
                p.intent_seq = Some(intent_seq);
                p.dispatch = Some(dispatch);
                p.execution = Some(execution);
            }
            Body::ExpiredApproval { dispatch, approval } => {
                p.dispatch = Some(dispatch);
                p.approval = Some(approval);
            }
            Body::Aborted {
                intent_seq,
                dispatch,
                reason,
            } => {
                p.intent_seq = intent_seq;
                p.dispatch = Some(dispatch);
                p.abort = Some(Abort { reason });
            }
            Body::Recovery(r) => p.recovery = Some(r),
            Body::KeyRotation(r) => p.rotation = Some(r),
            Body::Checkpoint(c) => p.checkpoint = Some(c),
        }
        if let Some(e) = p.dispatch.as_mut().and_then(|d| d.envelope.as_mut()) {
            canonical::canonicalize(e)?;
        }
        p.validate()?;
        Ok(p)
    }

    /// The canonical bytes (validated, size-checked).
    pub fn encode(&self) -> Result<Vec<u8>, ModelError> {
        self.validate()?;
        self.encode_valid()
    }

    /// [`ReceiptPayload::encode`] for a payload [`ReceiptPayload::new`] just validated (the
    /// checks walk the whole envelope report, and are not repeated).
    fn encode_valid(&self) -> Result<Vec<u8>, ModelError> {
        let sorted = self
            .dispatch
            .as_ref()
            .and_then(|d| d.envelope.as_ref())
            .is_none_or(keys_sorted);
        let bytes = if sorted {
            // Sized for an outcome with its envelope report, so it is written without regrowing.
            let mut out = Vec::with_capacity(16 * 1024);
            serde_json::to_writer(&mut out, self).map_err(|e| ModelError::Json(e.to_string()))?;
            out
        } else {
            canonical::to_canonical_from(self)?
        };
        debug_assert_eq!(bytes, canonical::to_canonical_from(self)?);
        if bytes.len() > MAX_PAYLOAD_BYTES {
            return Err(ModelError::TooLarge {
                size: bytes.len(),
                max: MAX_PAYLOAD_BYTES,
            });
        }
        Ok(bytes)
    }

    /// Parses payload bytes, insisting they are the one canonical encoding of a valid receipt.
    pub fn decode(bytes: &[u8]) -> Result<Self, ModelError> {
        if bytes.len() > MAX_PAYLOAD_BYTES {
            return Err(ModelError::TooLarge {
                size: bytes.len(),
                max: MAX_PAYLOAD_BYTES,
            });
        }
        let p: ReceiptPayload =
            serde_json::from_slice(bytes).map_err(|e| ModelError::Json(e.to_string()))?;
        p.validate()?;
        // Re-encoding what was parsed must give the same bytes: one encoding per receipt
        // (this also refuses duplicate keys, escapes that are not minimal, whitespace and
        // unsorted keys, including inside the envelope report).
        if serde_json::to_vec(&p).map_err(|e| ModelError::Json(e.to_string()))? != bytes {
            return Err(ModelError::NotCanonical);
        }
        Ok(p)
    }

    /// The signer's key (validated against `signing_key_id`).
    pub fn signing_key(&self) -> Result<PublicKey, ModelError> {
        let key = public_key("signing_public_key", &self.signing_public_key)?;
        if key.id().0 != self.signing_key_id {
            return Err(invalid(
                "signing_key_id",
                "is not the id of signing_public_key",
            ));
        }
        Ok(key)
    }

    /// The previous record's hash, parsed.
    pub fn prev_hash(&self) -> Option<Hash> {
        self.prev_receipt_hash
            .as_deref()
            .and_then(parse_hash_string)
    }

    /// The typed view of the sections.
    pub fn body(&self) -> Result<Body, ModelError> {
        self.clone().into_body()
    }

    /// The typed sections, taken out of the payload (the inverse of [`ReceiptPayload::new`]:
    /// the log appends an owed record again after a failed write without copying it first).
    pub fn into_body(self) -> Result<Body, ModelError> {
        let kind = self.kind;
        let missing =
            move |f: &'static str| invalid(f, format!("is required for kind {}", kind.as_str()));
        let dispatch = self.dispatch.ok_or_else(|| missing("dispatch"));
        Ok(match kind {
            Kind::Intent => Body::Intent(dispatch?),
            Kind::Denied => Body::Denied(dispatch?),
            Kind::Executed => {
                let intent_seq = self.intent_seq.ok_or_else(|| missing("intent_seq"))?;
                let execution = self.execution.ok_or_else(|| missing("execution"))?;
                Body::Executed {
                    intent_seq,
                    dispatch: dispatch?,
                    execution,
                }
            }
            Kind::ExpiredApproval => Body::ExpiredApproval {
                approval: self.approval.ok_or_else(|| missing("approval"))?,
                dispatch: dispatch?,
            },
            Kind::Aborted => Body::Aborted {
                intent_seq: self.intent_seq,
                reason: self.abort.ok_or_else(|| missing("abort"))?.reason,
                dispatch: dispatch?,
            },
            Kind::Recovery => Body::Recovery(self.recovery.ok_or_else(|| missing("recovery"))?),
            Kind::KeyRotation => {
                Body::KeyRotation(self.rotation.ok_or_else(|| missing("rotation"))?)
            }
            Kind::Checkpoint => {
                Body::Checkpoint(self.checkpoint.ok_or_else(|| missing("checkpoint"))?)
            }
        })
    }

    /// Checks every field and that exactly the sections of `kind` are present.
    pub fn validate(&self) -> Result<(), ModelError> {
        if self.schema != SCHEMA {
            return Err(invalid(
                "schema",
                format!("is {:?}, expected {SCHEMA:?}", self.schema),
            ));
        }
        super::checkpoint::check_key_name(&self.log)
            .map_err(|_| invalid("log", "is not a valid log origin"))?;
        safe_int("seq", self.seq)?;
        let id = uuid::Uuid::parse_str(&self.receipt_id)
            .map_err(|_| invalid("receipt_id", "is not a UUID"))?;
        if id.get_version_num() != 7 || id.hyphenated().to_string() != self.receipt_id {
            return Err(invalid(
                "receipt_id",
                "is not a lowercase hyphenated UUIDv7",
            ));
        }
        match (&self.prev_receipt_hash, self.seq) {
            (None, 0) => {}
            (Some(_), 0) => return Err(invalid("prev_receipt_hash", "must be null at seq 0")),
            (None, _) => return Err(invalid("prev_receipt_hash", "is null after seq 0")),
            (Some(h), _) => {
                if parse_hash_string(h).is_none() {
                    return Err(invalid(
                        "prev_receipt_hash",
                        "is not sha256:<64 lowercase hex>",
                    ));
                }
            }
        }
        if key_id_b64("signing_public_key", &self.signing_public_key)? != self.signing_key_id {
            return Err(invalid(
                "signing_key_id",
                "is not the id of signing_public_key",
            ));
        }
        timestamp("time", &self.time)?;
        text("hall.version", &self.hall.version, 64)?;
        text("hall.host_id", &self.hall.host_id, 256)?;

        let present = [
            ("dispatch", self.dispatch.is_some()),
            ("intent_seq", self.intent_seq.is_some()),
            ("execution", self.execution.is_some()),
            ("approval", self.approval.is_some()),
            ("abort", self.abort.is_some()),
            ("recovery", self.recovery.is_some()),
            ("rotation", self.rotation.is_some()),
            ("checkpoint", self.checkpoint.is_some()),
        ];
        let (required, optional): (&[&str], &[&str]) = match self.kind {
            Kind::Intent | Kind::Denied => (&["dispatch"], &[]),
            Kind::Executed => (&["dispatch", "intent_seq", "execution"], &[]),
            Kind::ExpiredApproval => (&["dispatch", "approval"], &[]),
            Kind::Aborted => (&["dispatch", "abort"], &["intent_seq"]),
            Kind::Recovery => (&["recovery"], &[]),
            Kind::KeyRotation => (&["rotation"], &[]),
            Kind::Checkpoint => (&["checkpoint"], &[]),
        };
        for (name, is) in present {
            let allowed = required.contains(&name) || optional.contains(&name);
            if required.contains(&name) && !is {
                return Err(invalid(
                    name,
                    format!("is required for kind {}", self.kind.as_str()),
                ));
            }
            if is && !allowed {
                return Err(invalid(
                    name,
                    format!("must be null for kind {}", self.kind.as_str()),
                ));
            }
        }
        if let Some(d) = &self.dispatch {
            d.validate()?;
            if self.kind == Kind::Denied && !d.decision.denied {
                return Err(invalid(
                    "dispatch.decision.denied",
                    "must be true for kind denied",
                ));
            }
            if matches!(self.kind, Kind::Intent | Kind::Executed) && d.decision.denied {
                return Err(invalid(
                    "dispatch.decision.denied",
                    "a denied decision cannot have an intent or an execution",
                ));
            }
        }
        if let Some(i) = self.intent_seq
            && i >= self.seq
        {
            return Err(invalid("intent_seq", "must name an earlier record"));
        }
        if let Some(e) = &self.execution {
            e.validate()?;
        }
        if let Some(a) = &self.approval {
            text("approval.pending_approval_id", &a.pending_approval_id, 256)?;
            timestamp("approval.approval_expires_at", &a.approval_expires_at)?;
            opt_text("approval.supervisor_level", &a.supervisor_level, 64)?;
        }
        if let Some(a) = &self.abort {
            text("abort.reason", &a.reason, 1024)?;
        }
        if let Some(r) = &self.recovery {
            text("recovery.segment", &r.segment, 256)?;
            safe_int("recovery.offset", r.offset)?;
            safe_int("recovery.discarded_bytes", r.discarded_bytes)?;
            hex64("recovery.discarded_sha256", &r.discarded_sha256)?;
            text("recovery.saved_as", &r.saved_as, 256)?;
        }
        if let Some(r) = &self.rotation {
            let old = key_id_b64("rotation.old_public_key", &r.old_public_key)?;
            let new = key_id_b64("rotation.new_public_key", &r.new_public_key)?;
            if old != r.old_key_id || new != r.new_key_id {
                return Err(invalid(
                    "rotation",
                    "a key id does not match its public key",
                ));
            }
            if old == new {
                return Err(invalid("rotation", "old and new key are the same"));
            }
            if r.old_key_id != self.signing_key_id {
                return Err(invalid(
                    "rotation.old_key_id",
                    "a rotation must be signed (signing_key_id) by the key it retires",
                ));
            }
        }
        if let Some(c) = &self.checkpoint {
            if c.size != self.seq {
                return Err(invalid(
                    "checkpoint.size",
                    "must equal the record's seq (the tree of every record before it)",
                ));
            }
            hex64("checkpoint.root", &c.root)?;
            if c.note.is_empty() || c.note.len() > super::checkpoint::MAX_NOTE_BYTES {
                return Err(invalid("checkpoint.note", "is empty or longer than 64 KiB"));
            }
        }
        Ok(())
    }

    /// The rotation's keys (old, new), for a `key_rotation` record.
    pub fn rotation_keys(&self) -> Option<(PublicKey, PublicKey)> {
        let r = self.rotation.as_ref()?;
        Some((
            PublicKey::from_base64(&r.old_public_key)?,
            PublicKey::from_base64(&r.new_public_key)?,
        ))
    }
}

/// One line of a log segment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogLine {
    pub envelope: Envelope,
    /// `sha256:<hex>` of the payload bytes.
    pub receipt_hash: String,
    pub seq: u64,
}

impl LogLine {
    /// Parses one line (without its newline).
    pub fn parse(bytes: &[u8]) -> Result<Self, ModelError> {
        if bytes.len() > MAX_LINE_BYTES {
            return Err(ModelError::TooLarge {
                size: bytes.len(),
                max: MAX_LINE_BYTES,
            });
        }
        serde_json::from_slice(bytes).map_err(|e| ModelError::Line(e.to_string()))
    }

    /// The line's bytes, newline included (canonical JSON: the envelope's fields are declared
    /// in byte order too).
    pub fn encode(&self) -> Result<Vec<u8>, ModelError> {
        let mut out = serde_json::to_vec(self).map_err(|e| ModelError::Line(e.to_string()))?;
        debug_assert_eq!(out, canonical::to_canonical_from(self)?);
        out.push(b'\n');
        Ok(out)
    }

    /// The payload bytes (base64-decoded), without verifying anything.
    pub fn payload_bytes(&self) -> Result<Vec<u8>, ModelError> {
        STANDARD
            .decode(&self.envelope.payload)
            .map_err(|_| invalid("envelope.payload", "is not standard base64"))
    }
}

/// A record signed and ready to append.
#[derive(Debug, Clone)]
pub struct Sealed {
    pub payload: ReceiptPayload,
    pub payload_bytes: Vec<u8>,
    pub hash: Hash,
    /// The encoded line, newline included.
    pub line: Vec<u8>,
}

/// Encodes `payload`, signs it with `keys` (the header's signing key first; a rotation adds the
/// new key) and frames the log line.
pub fn seal(payload: ReceiptPayload, keys: &[&KeyPair]) -> Result<Sealed, ModelError> {
    let payload_bytes = payload.encode()?;
    seal_encoded(payload, payload_bytes, keys)
}

/// Assembles a payload from `header` and `body` ([`ReceiptPayload::new`]: validated, its
/// envelope report canonicalised) and [`seal`]s it, validating it once.
pub fn seal_new(header: &Header, body: Body, keys: &[&KeyPair]) -> Result<Sealed, ModelError> {
    let payload = ReceiptPayload::new(header, body)?;
    let payload_bytes = payload.encode_valid()?;
    seal_encoded(payload, payload_bytes, keys)
}

fn seal_encoded(
    payload: ReceiptPayload,
    payload_bytes: Vec<u8>,
    keys: &[&KeyPair],
) -> Result<Sealed, ModelError> {
    let hash = receipt_hash(&payload_bytes);
    let envelope = Envelope::sign(PAYLOAD_TYPE, &payload_bytes, keys);
    let line = LogLine {
        envelope,
        receipt_hash: hash_string(&hash),
        seq: payload.seq,
    }
    .encode()?;
    Ok(Sealed {
        payload,
        payload_bytes,
        hash,
        line,
    })
}

/// The key ids a key history must contain, for a reader that wants to show them.
pub fn key_id_of(b64: &str) -> Option<KeyId> {
    PublicKey::from_base64(b64).map(|k| k.id().clone())
}

#[cfg(test)]
pub(crate) mod tests;
