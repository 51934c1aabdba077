//! Newline-delimited JSON-RPC over a byte stream (stdio), for rmcp's server.
//!
//! rmcp's own stdio codec reads with serde_json, which keeps the last of two duplicate keys
//! while another reader may take the first, and buffers a line of any length. This transport
//! keeps the Hall's rules for input from outside:
//! - one message per line, at most [`MAX_MESSAGE_BYTES`]; a longer line is skipped without
//!   being buffered and answered with -32600;
//! - every message is parsed by `crate::json` (a duplicate key is a parse error, -32700); a
//!   JSON value that is not a JSON-RPC message is answered with -32600, and reading goes on;
//! - at most [`MAX_OUTSTANDING`] requests are accepted and not yet answered; beyond that the
//!   transport stops reading until one is answered (the host's writes then wait in the pipe);
//! - at the end of the input, the requests in flight are still answered (a cancelled one is
//!   not waited for) before the session ends;
//! - every message out is one `write_all` of a whole line followed by a flush, under one lock,
//!   so messages never interleave.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use rmcp::service::{RoleServer, RxJsonRpcMessage, TxJsonRpcMessage};
use serde_json::{Value, json};
use tokio::io::{
    AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt,
};

/// Largest incoming message (one line) the bridge reads.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// At most this many requests are accepted and not yet answered.
pub const MAX_OUTSTANDING: usize = 256;

/// Requests read and not yet answered (by id, as JSON text), shared by both directions.
#[derive(Debug, Default)]
struct Outstanding {
    ids: std::sync::Mutex<HashSet<String>>,
    changed: tokio::sync::Notify,
}

impl Outstanding {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.ids
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn remove(&self, id: &Value) {
        if self.lock().remove(&id.to_string()) {
            self.changed.notify_waiters();
        }
    }

    /// Waits until fewer than `limit` requests are outstanding.
    async fn below(&self, limit: usize) {
        loop {
            let notified = self.changed.notified();
            if self.lock().len() < limit {
                return;
            }
            notified.await;
        }
    }
}

/// The transport; see the module documentation.
pub struct LineTransport<R, W> {
    reader: tokio::io::BufReader<R>,
    writer: Arc<tokio::sync::Mutex<W>>,
    outstanding: Arc<Outstanding>,
    /// The line being read (kept across calls: see [`Self::next_message`]).
    line: Vec<u8>,
    /// The rest of an oversized line is being skipped.
    skipping: bool,
    /// How long the end of the input waits for requests in flight.
    drain: Duration,
}

impl<R, W> LineTransport<R, W>
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send + 'static,
{
    /// Answers what rmcp never sees (a line that is not a message) with a JSON-RPC error, from
    /// a task of its own (see [`Self::next_message`]).
    fn answer_error(&self, id: Value, code: i64, message: String) {
        let answer =
            json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}});
        let writer = self.writer.clone();
        tokio::spawn(async move {
            if let Err(e) = write_line(&writer, &answer).await {
                tracing::error!(error = %e, "cannot write to the MCP output");
            }
        });
    }

    pub fn new(input: R, output: W, drain: Duration) -> Self {
        LineTransport {
            reader: tokio::io::BufReader::new(input),
            writer: Arc::new(tokio::sync::Mutex::new(output)),
            outstanding: Arc::default(),
            line: Vec::new(),
            skipping: false,
            drain,
        }
    }

    /// The next message for rmcp, answering what cannot be one on the way.
    ///
    /// Cancel-safe, because rmcp drops this future whenever another event wins its `select!`:
    /// a partly read line stays in `self.line` and the next call goes on appending to it; a
    /// skip of an oversized line resumes through `self.skipping`; answers are written by their
    /// own task, never half-written by a dropped future.
    async fn next_message(&mut self) -> Option<RxJsonRpcMessage<RoleServer>> {
        loop {
            self.outstanding.below(MAX_OUTSTANDING).await;
            if self.skipping {
                if let Err(e) = skip_line(&mut self.reader).await {
                    tracing::error!(error = %e, "cannot read the MCP input");
                    return None;
                }
                self.skipping = false;
                continue;
            }
            let room = (MAX_MESSAGE_BYTES + 1).saturating_sub(self.line.len()) as u64;
            let n = match (&mut self.reader)
                .take(room)
                .read_until(b'\n', &mut self.line)
                .await
            {
                Ok(n) => n,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the MCP input");
                    return None;
                }
            };
            if n == 0 && self.line.is_empty() {
                // The host closed the input: answer what is in flight, then end.
                let _ = tokio::time::timeout(self.drain, self.outstanding.below(1)).await;
                return None;
            }
            let line = std::mem::take(&mut self.line);
            if line.len() > MAX_MESSAGE_BYTES && !line.ends_with(b"\n") {
                self.skipping = true;
                self.answer_error(
                    Value::Null,
                    -32600,
                    format!("message over {MAX_MESSAGE_BYTES} bytes"),
                );
                continue;
            }
            let text = String::from_utf8_lossy(&line);
            let text = text.trim();
            if text.is_empty() {
                continue;
            }
            let value = match crate::json::parse_str(text) {
                Ok(v) => v,
                Err(e) => {
                    self.answer_error(Value::Null, -32700, format!("parse error: {e}"));
                    continue;
                }
            };
            let id = value.get("id").cloned();
            let method = value
                .get("method")
                .and_then(Value::as_str)
                .map(str::to_owned);
            let method = method.as_deref();
            if method == Some("notifications/cancelled")
                && let Some(request_id) = value.pointer("/params/requestId")
            {
                self.outstanding.remove(request_id);
            }
            let is_request = method.is_some() && id.is_some();
            match serde_json::from_value::<RxJsonRpcMessage<RoleServer>>(value) {
                Ok(message) => {
                    if is_request && let Some(id) = &id {
                        self.outstanding.lock().insert(id.to_string());
                    }
                    return Some(message);
                }
                Err(e) => {
                    // Not a message rmcp knows. A request still gets an answer; anything
                    // else (a malformed notification or response) is dropped, as JSON-RPC
                    // answers no notification.
                    if let Some(id) = id.clone().filter(|_| method.is_some()) {
                        self.answer_error(id, -32600, format!("invalid request: {e}"));
                    } else if method.is_none() && id.is_none() {
                        self.answer_error(
                            Value::Null,
                            -32600,
                            format!("not a JSON-RPC message: {e}"),
                        );
                    } else {
                        tracing::warn!(error = %e, "dropped a malformed MCP message");
                    }
                }
            }
        }
    }
}

async fn write_line<W: AsyncWrite + Unpin>(
    writer: &tokio::sync::Mutex<W>,
    message: &Value,
) -> std::io::Result<()> {
    let mut bytes = serde_json::to_vec(message).map_err(std::io::Error::other)?;
    bytes.push(b'\n');
    let mut w = writer.lock().await;
    w.write_all(&bytes).await?;
    w.flush().await
}

/// Discards the rest of the current line without buffering it.
async fn skip_line<R: AsyncBufRead + Unpin>(reader: &mut R) -> std::io::Result<()> {
    loop {
        let buf = reader.fill_buf().await?;
        if buf.is_empty() {
            return Ok(());
        }
        if let Some(i) = buf.iter().position(|&b| b == b'\n') {
            reader.consume(i + 1);
            return Ok(());
        }
        let n = buf.len();
        reader.consume(n);
    }
}

impl<R, W> rmcp::transport::Transport<RoleServer> for LineTransport<R, W>
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send + 'static,
{
    type Error = std::io::Error;

    fn send(
        &mut self,
        item: TxJsonRpcMessage<RoleServer>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        let writer = self.writer.clone();
        let outstanding = self.outstanding.clone();
        async move {
            let value = serde_json::to_value(&item).map_err(std::io::Error::other)?;
            let written = write_line(&writer, &value).await;
            if (value.get("result").is_some() || value.get("error").is_some())
                && let Some(id) = value.get("id")
            {
                outstanding.remove(id);
            }
            written
        }
    }

    fn receive(&mut self) -> impl Future<Output = Option<RxJsonRpcMessage<RoleServer>>> + Send {
        self.next_message()
    }

    async fn close(&mut self) -> Result<(), Self::Error> {
        self.writer.lock().await.flush().await
    }
}
