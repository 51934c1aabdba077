//! Planning step: the worker's environment, an explicit allowlist (paths, locale, Python's
//! isolation variables, the correlation id, the W3C trace context, the granted write
//! directories), and the environment keys of its declared secrets.
//!
//! Owns the environment half of the report (the keys, never the values) and the secret-name
//! rules. It must not read a secret (`prepare` does) nor pass anything of the Hall's own
//! environment through.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use super::super::error::EnvelopeError;
use super::super::report::EnvironmentReport;
use super::super::types::{HostConfig, RunRequest, WorkerProtocol};
use super::{PlanContext, RunDirs, SecretPlan, WriteGrant, s};

/// The worker's environment and secrets.
pub(super) struct Environment {
    /// Without secrets (added when read).
    pub env: Vec<(String, String)>,
    pub secrets: Vec<SecretPlan>,
    pub report: EnvironmentReport,
    /// The run's trace context (in the environment for protocol 1, in the frame for 2).
    pub traceparent: String,
}

/// The trace id for a correlation id: a UUID's 32 hex digits, otherwise the first 16 bytes of
/// its SHA-256 (so one correlation id always maps to one trace).
pub fn trace_id_for(correlation_id: &str) -> String {
    let hex: String = correlation_id
        .chars()
        .filter(|c| *c != '-')
        .map(|c| c.to_ascii_lowercase())
        .collect();
    if hex.len() == 32
        && hex.bytes().all(|b| b.is_ascii_hexdigit())
        && hex.bytes().any(|b| b != b'0')
    {
        return hex;
    }
    crate::common::hex(&Sha256::digest(correlation_id.as_bytes())[..16])
}

/// The environment variable for a declared secret: `WCP_SECRET_` + the name upper-cased with
/// `.` and `-` as `_`. Names are `[A-Za-z0-9][A-Za-z0-9_.-]{0,63}`.
pub fn secret_env_key(name: &str) -> Result<String, EnvelopeError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if !ok {
        return Err(EnvelopeError::invalid(
            format!("privilege_envelope.secrets_access[{name:?}]"),
            "secret names are 1-64 characters of A-Z a-z 0-9 _ . - starting with a letter or digit",
        ));
    }
    Ok(format!(
        "WCP_SECRET_{}",
        name.to_ascii_uppercase().replace(['.', '-'], "_")
    ))
}

/// Decides the environment: the fixed allowlist, a `TRACEPARENT` (the incoming one as it is, or
/// one derived from the correlation id with this run's span), `RES_OPTIONS=use-vc` when the
/// network step asks for it, and one key per declared secret (two names must not map to one
/// key, and secrets need the Hall's secrets directory).
pub(super) fn decide(
    req: &RunRequest,
    host: &HostConfig,
    ctx: &PlanContext,
    dirs: &RunDirs,
    writes: &[WriteGrant],
    res_options: bool,
) -> Result<Environment, EnvelopeError> {
    let traceparent = traceparent_for(req, ctx.span_id);
    let write_dirs: Vec<String> = writes.iter().map(|w| s(&w.path)).collect();
    let mut env: Vec<(String, String)> = vec![
        ("PATH".into(), "/usr/bin:/bin".into()),
        ("LANG".into(), "C.UTF-8".into()),
        ("LC_ALL".into(), "C.UTF-8".into()),
        ("HOME".into(), s(&dirs.work)),
        ("TMPDIR".into(), s(&dirs.tmp)),
        ("PYTHONDONTWRITEBYTECODE".into(), "1".into()),
        ("PYTHONPYCACHEPREFIX".into(), s(&dirs.pycache)),
        ("PYTHONIOENCODING".into(), "utf-8".into()),
        ("WCP_WORK_DIR".into(), s(&dirs.work)),
        ("WCP_WRITE_DIRS".into(), write_dirs.join(":")),
    ];
    match req.protocol {
        // Protocol 1: the request's context is in the environment at exec.
        WorkerProtocol::V1 => {
            env.push(("WCP_CORRELATION_ID".into(), req.correlation_id.clone()));
            env.push(("TRACEPARENT".into(), traceparent.clone()));
        }
        // Protocol 2: nothing about the request; it comes in the frame on stdin. The Hall, not
        // the payload, tells the bootstrap which protocol it speaks.
        WorkerProtocol::V2 => env.push(("WCP_WORKER_PROTOCOL".into(), "2".into())),
    }
    if res_options {
        env.push(("RES_OPTIONS".into(), "use-vc".into()));
    }
    let mut secrets = Vec::new();
    let mut secret_keys: BTreeMap<String, String> = BTreeMap::new();
    for name in &req.privilege_envelope.secrets_access {
        let key = secret_env_key(name)?;
        if let Some(other) = secret_keys.insert(key.clone(), name.clone())
            && other != *name
        {
            return Err(EnvelopeError::invalid(
                "privilege_envelope.secrets_access",
                format!("secrets {other:?} and {name:?} would both become {key}"),
            ));
        }
        if !secrets.iter().any(|s: &SecretPlan| s.name == *name) {
            secrets.push(SecretPlan {
                name: name.clone(),
                env_key: key,
            });
        }
    }
    if !secrets.is_empty() && host.secrets_dir.is_none() {
        return Err(EnvelopeError::Secret {
            name: secrets[0].name.clone(),
            problem: "the worker declares secrets but the Hall has no secrets directory configured"
                .into(),
        });
    }
    let mut env_keys: Vec<String> = env.iter().map(|(k, _)| k.clone()).collect();
    env_keys.extend(secrets.iter().map(|s| s.env_key.clone()));
    env_keys.sort();
    let report = EnvironmentReport {
        keys: env_keys,
        secrets: secrets.iter().map(|s| s.name.clone()).collect(),
    };
    Ok(Environment {
        env,
        secrets,
        report,
        traceparent,
    })
}

/// The run's W3C `traceparent`: an incoming one (the Hall's run span, already checked) as it
/// is, so the worker's own spans become children of that span and its sampled flag holds;
/// otherwise one derived from the correlation id with this run's span id.
pub fn traceparent_for(req: &RunRequest, span_id: [u8; 8]) -> String {
    match &req.traceparent {
        Some(tp) => tp.clone(),
        None => {
            let mut span = span_id;
            if span == [0; 8] {
                span[7] = 1;
            }
            format!(
                "00-{}-{}-01",
                trace_id_for(&req.correlation_id),
                crate::common::hex(&span)
            )
        }
    }
}
