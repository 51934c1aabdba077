//! Every error the Hall's socket answers is `{"code", "message"}` JSON, including the ones it
//! does not write itself:
//!
//! - [`json_errors`] (axum middleware) turns any 4xx/5xx answer that is not JSON (axum's 405,
//!   its extractor rejections) into one, keeping the status and headers such as `Allow`;
//! - [`JsonParseErrors`] wraps a connection's stream. When hyper cannot parse a request head
//!   (a bad `Content-Length` or `Transfer-Encoding`, an invalid path, headers too large) it
//!   writes an automatic response with an empty body before the service is ever called, and
//!   hyper 1.x has no option to change that response. The wrapper recognises exactly that
//!   response — a head alone, status 400, 414 or 431, no `content-type` — and writes a JSON one
//!   in its place. The connection closes after it, as hyper intends.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use http_body_util::BodyExt;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The stable code for a status the Hall's handlers do not produce themselves.
pub fn code_for(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "bad_request",
        404 => "not_found",
        405 => "method_not_allowed",
        408 => "request_timeout",
        413 => "body_too_large",
        414 => "uri_too_long",
        415 => "unsupported_media_type",
        422 => "unprocessable",
        431 => "headers_too_large",
        s if s >= 500 => "internal_error",
        _ => "http_error",
    }
}

fn is_json(resp: &Response) -> bool {
    resp.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}

/// Axum middleware: a 4xx/5xx answer that is not JSON becomes `{"code", "message"}` with the
/// same status and headers; its text (if any, at most 4 KiB) becomes the message.
pub async fn json_errors(resp: Response) -> Response {
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) || is_json(&resp) {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let text = match http_body_util::Limited::new(body, 4096).collect().await {
        Ok(c) => String::from_utf8_lossy(&c.to_bytes()).trim().to_owned(),
        Err(_) => String::new(),
    };
    let message = match (status.as_u16(), text.is_empty()) {
        (405, _) => {
            let allow = parts
                .headers
                .get(header::ALLOW)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            format!("this endpoint does not accept that method; allowed: {allow}")
        }
        (_, false) => text,
        (_, true) => status
            .canonical_reason()
            .unwrap_or("request refused")
            .to_owned(),
    };
    let body = json!({"code": code_for(status), "message": message}).to_string();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, Body::from(body))
}

/// The JSON answer that replaces hyper's automatic one, or `None` when `written` is anything
/// else (it must be the whole head of a 400, 414 or 431 without a body or a `content-type`).
pub fn replace_automatic_error(written: &[u8]) -> Option<Vec<u8>> {
    let head = std::str::from_utf8(written).ok()?;
    let rest = head
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| head.strip_prefix("HTTP/1.0 "))?;
    let (status, message) = match rest.get(..4)? {
        "400 " => (
            StatusCode::BAD_REQUEST,
            "the request is not valid HTTP/1.1: its request line or headers could not be parsed \
             (for example an invalid Content-Length or Transfer-Encoding, or a path that is not \
             a valid URI)",
        ),
        "414 " => (StatusCode::URI_TOO_LONG, "the request path is too long"),
        "431 " => (
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "the request headers are too large",
        ),
        _ => return None,
    };
    let end = head.find("\r\n\r\n")?;
    if end + 4 != head.len() {
        return None;
    }
    let lines: Vec<&str> = head[..end].split("\r\n").collect();
    if lines[1..]
        .iter()
        .any(|l| l.to_ascii_lowercase().starts_with("content-type:"))
    {
        return None;
    }
    let code = match status.as_u16() {
        400 => "malformed_request",
        s => code_for(StatusCode::from_u16(s).unwrap_or(status)),
    };
    let body = json!({"code": code, "message": message}).to_string();
    let mut out = format!(
        "HTTP/1.1 {} {}\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    for l in &lines[1..] {
        let lower = l.to_ascii_lowercase();
        if !(lower.starts_with("content-length:") || lower.starts_with("connection:")) {
            out.push_str(l);
            out.push_str("\r\n");
        }
    }
    out.push_str(&format!(
        "content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    ));
    Some(out.into_bytes())
}

/// A connection stream that replaces hyper's automatic error responses (see the module
/// documentation). Writes are not vectored, so hyper hands each response head over in one
/// contiguous buffer.
pub struct JsonParseErrors<S> {
    inner: S,
    pending: Vec<u8>,
    written: usize,
}

impl<S> JsonParseErrors<S> {
    pub fn new(inner: S) -> Self {
        JsonParseErrors {
            inner,
            pending: Vec::new(),
            written: 0,
        }
    }
}

impl<S: AsyncWrite + Unpin> JsonParseErrors<S> {
    /// Writes out a pending replacement.
    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.pending.len() {
            let n =
                ready!(Pin::new(&mut self.inner).poll_write(cx, &self.pending[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.pending.clear();
        self.written = 0;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for JsonParseErrors<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for JsonParseErrors<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        ready!(this.drain(cx))?;
        if let Some(replacement) = replace_automatic_error(buf) {
            this.pending = replacement;
            // Taken over in full; what is not written now goes out on the next write, flush
            // or shutdown, which hyper always calls after a response.
            if let Poll::Ready(Err(e)) = this.drain(cx) {
                return Poll::Ready(Err(e));
            }
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.drain(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.drain(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hypers_automatic_error_heads_are_replaced() {
        let auto = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\ndate: Mon, 07 Dec 2026 00:00:00 GMT\r\n\r\n";
        let out = String::from_utf8(replace_automatic_error(auto).unwrap()).unwrap();
        assert!(out.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{out}");
        assert!(out.contains("date: Mon"), "{out}");
        assert!(out.contains("content-type: application/json\r\n"), "{out}");
        assert!(out.contains("connection: close\r\n"), "{out}");
        let (head, body) = out.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["code"], "malformed_request");
        let out = replace_automatic_error(b"HTTP/1.1 431 Request Header Fields Too Large\r\n\r\n")
            .unwrap();
        assert!(
            String::from_utf8(out)
                .unwrap()
                .contains("headers_too_large")
        );
        // Our own answers (JSON, or with a body) and other statuses pass through untouched.
        for other in [
            &b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n"[..],
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 2\r\n\r\n{}",
            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n",
            b"{\"HTTP/1.1 400 \": 1}",
        ] {
            assert_eq!(replace_automatic_error(other), None);
        }
    }
}
