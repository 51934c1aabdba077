//! A small client for a running Hall: HTTP/1.1 over its Unix socket (one connection per call).

use std::path::{Path, PathBuf};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;

/// The default socket of a system Hall.
pub const DEFAULT_SOCKET: &str = "/run/wcp-hall/hall.sock";

/// Why a call to the Hall failed before an HTTP answer arrived.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "cannot reach the Hall at {}: {source}; is `wcp-hall serve` running? (socket from --socket, WCP_HALL_SOCKET, or {DEFAULT_SOCKET})",
        .socket.display()
    )]
    Unreachable {
        socket: PathBuf,
        source: std::io::Error,
    },
    #[error("the Hall at {} did not answer within {timeout:?}", .socket.display())]
    Timeout { socket: PathBuf, timeout: Duration },
    #[error("HTTP error talking to the Hall: {0}")]
    Http(String),
    #[error("the Hall answered with something that is not JSON: {0}")]
    NotJson(String),
}

/// One HTTP answer: status and JSON body.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: StatusCode,
    pub body: Value,
}

/// Calls `method path` on the Hall at `socket` with an optional JSON body.
pub async fn call(
    socket: &Path,
    method: Method,
    path: &str,
    body: Option<&Value>,
    timeout: Duration,
) -> Result<Answer, ClientError> {
    call_with_headers(socket, method, path, body, timeout, &[]).await
}

/// [`call`] with extra request headers (e.g. the W3C `traceparent` an MCP call carried).
pub async fn call_with_headers(
    socket: &Path,
    method: Method,
    path: &str,
    body: Option<&Value>,
    timeout: Duration,
    headers: &[(&str, String)],
) -> Result<Answer, ClientError> {
    let work = async {
        let stream = tokio::net::UnixStream::connect(socket)
            .await
            .map_err(|source| ClientError::Unreachable {
                socket: socket.to_owned(),
                source,
            })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ClientError::Http(e.to_string()))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let bytes = body.map(|b| b.to_string()).unwrap_or_default();
        let mut req = Request::builder()
            .method(method)
            .uri(format!("http://localhost{path}"))
            .header("host", "localhost")
            .header("content-type", "application/json");
        for (name, value) in headers {
            req = req.header(*name, value.as_str());
        }
        let req = req
            .body(Full::new(Bytes::from(bytes)))
            .map_err(|e| ClientError::Http(e.to_string()))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| ClientError::Http(e.to_string()))?;
        let status = resp.status();
        let collected = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| ClientError::Http(e.to_string()))?
            .to_bytes();
        let body = if collected.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&collected).or_else(|_| {
                std::str::from_utf8(&collected)
                    .map(|t| Value::String(t.to_owned()))
                    .map_err(|e| ClientError::NotJson(e.to_string()))
            })?
        };
        Ok(Answer { status, body })
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| ClientError::Timeout {
            socket: socket.to_owned(),
            timeout,
        })?
}
