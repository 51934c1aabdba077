//! Worker protocol 2: the request and its context as one frame on stdin.
//!
//! ```text
//! {"protocol":2,"context":{"correlation_id":"…","traceparent":"00-…-…-01","timeout_ms":30000},"request":{…}}
//! ```
//!
//! The frame ends at end-of-file: the Hall writes it once and closes stdin, so an instance can
//! never receive a second request. The Hall selects protocol 2 by the signed package's
//! declaration and tells the bootstrap so in `WCP_WORKER_PROTOCOL` at exec; a worker never
//! guesses it from what arrives on stdin (a protocol 1 request is the agent's own JSON, and an
//! agent must not be able to pass off a frame with another correlation id or trace).

use serde::Serialize;
use serde_json::value::RawValue;

use super::error::EnvelopeError;

#[derive(Serialize)]
struct Frame<'a> {
    protocol: u8,
    context: FrameContext<'a>,
    request: &'a RawValue,
}

/// The per-request context a protocol 2 worker receives in its frame.
#[derive(Debug, Clone, Serialize)]
pub struct FrameContext<'a> {
    pub correlation_id: &'a str,
    pub traceparent: &'a str,
    /// The wall-clock budget, counted from the delivery of this frame.
    pub timeout_ms: u64,
}

/// The frame for `request` (which must be one JSON value: the Hall's request object).
pub fn frame(request: &[u8], context: FrameContext<'_>) -> Result<Vec<u8>, EnvelopeError> {
    let request: &RawValue = serde_json::from_slice(request).map_err(|e| {
        EnvelopeError::invalid(
            "payload",
            format!("a protocol 2 request must be one JSON value: {e}"),
        )
    })?;
    serde_json::to_vec(&Frame {
        protocol: 2,
        context,
        request,
    })
    .map_err(|e| EnvelopeError::invalid("payload", e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_carries_the_request_verbatim_and_its_context() {
        let ctx = FrameContext {
            correlation_id: "c-1",
            traceparent: "00-0190a5b27c3d7e4f8a9b0c1d2e3f4a5b-0102030405060708-01",
            timeout_ms: 500,
        };
        let f = frame(br#"{"name": "Ada", "n": 1.50}"#, ctx.clone()).unwrap();
        assert_eq!(
            String::from_utf8(f).unwrap(),
            r#"{"protocol":2,"context":{"correlation_id":"c-1","traceparent":"00-0190a5b27c3d7e4f8a9b0c1d2e3f4a5b-0102030405060708-01","timeout_ms":500},"request":{"name": "Ada", "n": 1.50}}"#
        );
        // Not one JSON value: refused, never wrapped.
        for bad in [&b"{} {}"[..], b"", b"{\"a\":", b"\xff"] {
            let e = frame(bad, ctx.clone()).unwrap_err();
            assert_eq!(e.code(), "DENY_ENVELOPE_INVALID_REQUEST", "{bad:?}");
        }
    }
}
