//! Planning step, the first: the request's own checks (limits, run id, paths, ids, payload size),
//! and the text and path rules the other steps apply to what they read.
//!
//! Owns only refusing malformed input with [`EnvelopeError::InvalidRequest`]; it must not decide
//! anything about the host or weaken a check for a host that cannot enforce something.

use std::path::{Component, Path};

use super::super::error::EnvelopeError;
use super::super::types::{HostConfig, RunRequest};
use super::{MAX_PAYLOAD_BYTES, PlanContext};

/// Decides whether the request is well-formed: its limits, the run id, the absolute paths, the
/// correlation id and traceparent, the package digest, the payload size, and that the package
/// and the runs directory do not contain one another.
pub(super) fn request(
    req: &RunRequest,
    host: &HostConfig,
    ctx: &PlanContext,
) -> Result<(), EnvelopeError> {
    req.limits.validate()?;
    if ctx.run_id.is_empty()
        || ctx.run_id.len() > 64
        || !ctx
            .run_id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(EnvelopeError::invalid(
            "run_id",
            "must be 1-64 of a-z 0-9 -",
        ));
    }
    check_abs("package_dir", &req.package_dir)?;
    check_abs("host.runs_dir", &host.runs_dir)?;
    check_correlation_id(&req.correlation_id)?;
    if let Some(tp) = &req.traceparent {
        check_traceparent(tp)?;
    }
    if let Some(d) = &req.package_digest {
        check_text("package_digest", d, 200)?;
    }
    if req.payload.len() > MAX_PAYLOAD_BYTES {
        return Err(EnvelopeError::invalid(
            "payload",
            format!(
                "{} bytes is more than {MAX_PAYLOAD_BYTES}",
                req.payload.len()
            ),
        ));
    }
    for (i, p) in req.runtime.read.iter().enumerate() {
        check_abs(&format!("runtime.read[{i}]"), p)?;
    }
    for (i, p) in req.runtime.execute.iter().enumerate() {
        check_abs(&format!("runtime.execute[{i}]"), p)?;
    }
    if host.runs_dir.starts_with(&req.package_dir) || req.package_dir.starts_with(&host.runs_dir) {
        return Err(EnvelopeError::invalid(
            "package_dir",
            "the package and the runs directory must not contain one another",
        ));
    }
    Ok(())
}

/// A text field: not empty, at most `max` bytes, no control characters.
pub(super) fn check_text(field: &str, value: &str, max: usize) -> Result<(), EnvelopeError> {
    if value.is_empty() {
        return Err(EnvelopeError::invalid(field, "is empty"));
    }
    if value.len() > max {
        return Err(EnvelopeError::invalid(
            field,
            format!("is {} bytes long; at most {max}", value.len()),
        ));
    }
    if let Some(c) = value.chars().find(|c| c.is_control()) {
        return Err(EnvelopeError::invalid(
            field,
            format!("contains the control character U+{:04X}", u32::from(c)),
        ));
    }
    Ok(())
}

/// A path field: UTF-8 text, absolute, without `.` or `..` components.
pub(super) fn check_abs(field: &str, path: &Path) -> Result<(), EnvelopeError> {
    let text = path.to_str().ok_or_else(|| {
        EnvelopeError::invalid(field, format!("{} is not valid UTF-8", path.display()))
    })?;
    check_text(field, text, 4096)?;
    if !path.is_absolute() {
        return Err(EnvelopeError::invalid(
            field,
            format!("{text:?} must be an absolute path"),
        ));
    }
    if path
        .components()
        .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
    {
        return Err(EnvelopeError::invalid(
            field,
            format!("{text:?} must not contain \".\" or \"..\" components"),
        ));
    }
    Ok(())
}

/// The correlation id becomes an environment variable: printable ASCII without spaces.
pub fn check_correlation_id(id: &str) -> Result<(), EnvelopeError> {
    if id.is_empty() || id.len() > 128 || !id.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        return Err(EnvelopeError::invalid(
            "correlation_id",
            "must be 1 to 128 printable ASCII characters without spaces",
        ));
    }
    Ok(())
}

/// A W3C `traceparent` (version 00): `00-<32 hex>-<16 hex>-<2 hex>`, lowercase, ids non-zero.
pub fn check_traceparent(tp: &str) -> Result<(), EnvelopeError> {
    let parts: Vec<&str> = tp.split('-').collect();
    let hex = |p: &str, n: usize| {
        p.len() == n
            && p.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let ok = parts.len() == 4
        && parts[0] == "00"
        && hex(parts[1], 32)
        && hex(parts[2], 16)
        && hex(parts[3], 2)
        && parts[1].bytes().any(|b| b != b'0')
        && parts[2].bytes().any(|b| b != b'0');
    if ok {
        Ok(())
    } else {
        Err(EnvelopeError::invalid(
            "traceparent",
            "must be a W3C traceparent: 00-<32 lowercase hex>-<16 lowercase hex>-<2 hex>, ids not all zero",
        ))
    }
}
