//! The registry service's answers as typed values, parsed from the bytes a (possibly hostile)
//! service sent: strict JSON (`crate::json`: a duplicate key is an error), strict types, and
//! tolerant of fields the service may add later (PyHall's client reads the fields it knows with
//! `data.get(k)` and ignores the rest; so do we). A missing optional field is `null`/`false`, as
//! in PyHall. Pure: no I/O.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A worker's status at the registry (`GET /api/v1/verify/{id}`); a 404 is `unknown`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkerStatus {
    Active,
    Revoked,
    Banned,
    Unknown,
}

impl WorkerStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerStatus::Active => "active",
            WorkerStatus::Revoked => "revoked",
            WorkerStatus::Banned => "banned",
            WorkerStatus::Unknown => "unknown",
        }
    }
}

/// `GET /api/v1/verify/{worker_id}`: PyHall's `VerifyResponse`, field for field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyResponse {
    pub worker_id: String,
    pub status: WorkerStatus,
    /// The package hash the registry attests for an active worker (PyHall's
    /// `registry_get_worker_hash`): the verified package must have this digest.
    pub current_hash: Option<String>,
    pub banned: bool,
    pub ban_reason: Option<String>,
    pub attested_at: Option<String>,
    pub ai_generated: bool,
    pub ai_service: Option<String>,
    pub ai_model: Option<String>,
    pub ai_session_fingerprint: Option<String>,
}

/// The wire form: every field optional (PyHall's `data.get(k)`), unknown fields ignored.
#[derive(Deserialize)]
struct VerifyWire {
    #[serde(default)]
    worker_id: Option<String>,
    status: WorkerStatus,
    #[serde(default)]
    current_hash: Option<String>,
    #[serde(default)]
    banned: Option<bool>,
    #[serde(default)]
    ban_reason: Option<String>,
    #[serde(default)]
    attested_at: Option<String>,
    #[serde(default)]
    ai_generated: Option<bool>,
    #[serde(default)]
    ai_service: Option<String>,
    #[serde(default)]
    ai_model: Option<String>,
    #[serde(default)]
    ai_session_fingerprint: Option<String>,
}

/// Why an answer of the service was not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    #[error("not valid JSON: {0}")]
    Json(String),
    #[error("unexpected shape: {0}")]
    Shape(String),
    #[error("answered for worker {answered:?}, but {asked:?} was asked for")]
    WrongWorker { asked: String, answered: String },
    #[error("ban-list entry {index}: sha256 {value:?} is not 64 hex digits")]
    BadBanHash { index: usize, value: String },
}

/// Strict JSON first (duplicate keys refused), then the typed view.
fn typed<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ModelError> {
    let v = crate::json::parse_slice(bytes).map_err(|e| ModelError::Json(e.to_string()))?;
    serde_json::from_value(v).map_err(|e| ModelError::Shape(e.to_string()))
}

impl VerifyResponse {
    /// PyHall's answer for a 404 (the service does not say whether an id exists: IDOR-safe).
    pub fn unknown(worker_id: &str) -> Self {
        VerifyResponse {
            worker_id: worker_id.to_owned(),
            status: WorkerStatus::Unknown,
            current_hash: None,
            banned: false,
            ban_reason: None,
            attested_at: None,
            ai_generated: false,
            ai_service: None,
            ai_model: None,
            ai_session_fingerprint: None,
        }
    }

    /// Parses the 200 answer for `asked`. An answer about another worker is refused: a service
    /// (or a cache in front of it) must not make one worker's status pass for another's.
    pub fn parse(asked: &str, bytes: &[u8]) -> Result<Self, ModelError> {
        let v = crate::json::parse_slice(bytes).map_err(|e| ModelError::Json(e.to_string()))?;
        if !v.is_object() {
            return Err(ModelError::Shape("expected a JSON object".into()));
        }
        let w: VerifyWire =
            serde_json::from_value(v).map_err(|e| ModelError::Shape(e.to_string()))?;
        let worker_id = w.worker_id.unwrap_or_else(|| asked.to_owned());
        if worker_id != asked {
            return Err(ModelError::WrongWorker {
                asked: asked.to_owned(),
                answered: worker_id,
            });
        }
        Ok(VerifyResponse {
            worker_id,
            status: w.status,
            current_hash: w.current_hash,
            banned: w.banned.unwrap_or(false),
            ban_reason: w.ban_reason,
            attested_at: w.attested_at,
            ai_generated: w.ai_generated.unwrap_or(false),
            ai_service: w.ai_service,
            ai_model: w.ai_model,
            ai_session_fingerprint: w.ai_session_fingerprint,
        })
    }

    /// Banned either way the service says it (`status` or the `banned` flag).
    pub fn is_banned(&self) -> bool {
        self.status == WorkerStatus::Banned || self.banned
    }
}

/// One `GET /api/v1/ban-list` entry: a package hash no Hall may run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BanEntry {
    /// Lowercase hex (normalised on parsing).
    pub sha256: String,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub reported_at: Option<String>,
    #[serde(default)]
    pub source: Option<String>,
    #[serde(default)]
    pub review_status: Option<String>,
}

/// Parses the ban list (a JSON array of entries, as PyHall's client reads it). A hash that is
/// not 64 hex digits is refused rather than skipped: a garbled list is not a shorter list.
pub fn parse_ban_list(bytes: &[u8]) -> Result<Vec<BanEntry>, ModelError> {
    let mut entries: Vec<BanEntry> = typed(bytes)?;
    for (index, e) in entries.iter_mut().enumerate() {
        if e.sha256.len() != 64 || !e.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ModelError::BadBanHash {
                index,
                value: e.sha256.chars().take(80).collect(),
            });
        }
        e.sha256.make_ascii_lowercase();
    }
    Ok(entries)
}

/// `GET /health`: `{"ok": bool, "version": str}` (other fields kept).
pub fn parse_health(bytes: &[u8]) -> Result<Value, ModelError> {
    let v = crate::json::parse_slice(bytes).map_err(|e| ModelError::Json(e.to_string()))?;
    if !v.is_object() {
        return Err(ModelError::Shape("expected a JSON object".into()));
    }
    Ok(v)
}

/// Any other JSON answer (a report's or an attestation's acknowledgement), strictly parsed.
pub fn parse_any(bytes: &[u8]) -> Result<Value, ModelError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    crate::json::parse_slice(bytes).map_err(|e| ModelError::Json(e.to_string()))
}

/// `PUT /api/v1/workers/{id}/attest`'s body (PyHall's `attest submit`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AttestRequest {
    pub sha256: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    pub ai_generated: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ai_service: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ai_model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ai_session_id: Option<String>,
}

/// `POST /api/v1/ban-list/report`'s body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReportRequest {
    pub sha256: String,
    pub reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub evidence_url: Option<String>,
}

/// One `POST /api/v1/telemetry/decisions` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DecisionCount {
    pub worker_id: String,
    pub count: u64,
}

/// True for 64 lowercase hex digits (the package digests the Hall computes).
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

    #[test]
    fn verify_reads_pyhalls_fields_and_ignores_new_ones() {
        let body = format!(
            r#"{{"worker_id":"x.a.b","status":"active","current_hash":"{H}","banned":false,
               "ban_reason":null,"attested_at":"2026-01-01T00:00:00Z","ai_generated":true,
               "ai_service":"svc","ai_model":"m","ai_session_fingerprint":"fp","new_field":[1]}}"#
        );
        let r = VerifyResponse::parse("x.a.b", body.as_bytes()).unwrap();
        assert_eq!(r.status, WorkerStatus::Active);
        assert_eq!(r.current_hash.as_deref(), Some(H));
        assert!(r.ai_generated);
        // Missing fields are PyHall's None/False.
        let r = VerifyResponse::parse("x.a.b", br#"{"status":"revoked"}"#).unwrap();
        assert_eq!(r.worker_id, "x.a.b");
        assert!(!r.banned && r.current_hash.is_none());
    }

    #[test]
    fn verify_refuses_duplicates_wrong_types_unknown_statuses_and_other_workers() {
        for (body, want) in [
            (r#"{"status":"active","status":"banned"}"#, "duplicate key"),
            (r#"{"status":"suspended"}"#, "unknown variant"),
            (r#"{"status":"active","banned":"no"}"#, "invalid type"),
            (r#"[]"#, "expected a JSON object"),
            (r#"{"status":"active"} x"#, "trailing"),
        ] {
            let e = VerifyResponse::parse("x.a.b", body.as_bytes()).unwrap_err();
            assert!(e.to_string().contains(want), "{body}: {e}");
        }
        let e = VerifyResponse::parse("x.a.b", br#"{"worker_id":"x.other","status":"active"}"#)
            .unwrap_err();
        assert!(matches!(e, ModelError::WrongWorker { .. }), "{e}");
    }

    #[test]
    fn ban_list_is_normalised_and_garbled_hashes_refuse_the_whole_list() {
        let upper = H.to_uppercase();
        let body = format!(
            r#"[{{"sha256":"{upper}","reason":"malware","reported_at":"t","source":"s","extra":1}}]"#
        );
        let list = parse_ban_list(body.as_bytes()).unwrap();
        assert_eq!(list[0].sha256, H);
        assert_eq!(list[0].review_status, None);
        let e = parse_ban_list(br#"[{"sha256":"sha256:abc"}]"#).unwrap_err();
        assert!(matches!(e, ModelError::BadBanHash { index: 0, .. }));
        assert!(parse_ban_list(br#"{"entries":[]}"#).is_err());
    }

    #[test]
    fn request_bodies_have_pyhalls_field_names() {
        let a = AttestRequest {
            sha256: H.into(),
            label: Some("l".into()),
            ai_generated: true,
            ai_service: None,
            ai_model: Some("m".into()),
            ai_session_id: None,
        };
        assert_eq!(
            serde_json::to_value(&a).unwrap(),
            serde_json::json!({"sha256": H, "label": "l", "ai_generated": true, "ai_model": "m"})
        );
    }
}
