//! The fixture HTTP server: one document on 127.0.0.1, served from a thread of the demo.
//!
//! Owns the listener and its thread; it must serve nothing but that one document and must not
//! listen beyond the loopback address.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use super::FIXTURE_PORT;

/// A one-document HTTP/1.1 server on 127.0.0.1 (a thread of the demo process): what the
/// fetcher's allowlist lets it reach.
pub(super) struct FixtureServer {
    pub(super) port: u16,
    pub(super) stop: Arc<AtomicBool>,
    pub(super) hits: Arc<AtomicU64>,
    pub(super) thread: Option<JoinHandle<()>>,
}

impl FixtureServer {
    pub(super) fn start(body: Vec<u8>) -> std::io::Result<Self> {
        let listener = match TcpListener::bind(("127.0.0.1", FIXTURE_PORT)) {
            Ok(l) => l,
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                TcpListener::bind(("127.0.0.1", 0))?
            }
            Err(e) => return Err(e),
        };
        let port = listener.local_addr()?.port();
        let stop = Arc::new(AtomicBool::new(false));
        let hits = Arc::new(AtomicU64::new(0));
        let (s, h) = (stop.clone(), hits.clone());
        let thread = std::thread::Builder::new()
            .name("demo-http".into())
            .spawn(move || {
                loop {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            if s.load(Ordering::Acquire) {
                                break;
                            }
                            serve_one(stream, &body, &h);
                        }
                        Err(_) if s.load(Ordering::Acquire) => break,
                        Err(_) => std::thread::sleep(Duration::from_millis(10)),
                    }
                }
            })?;
        Ok(FixtureServer {
            port,
            stop,
            hits,
            thread: Some(thread),
        })
    }

    pub(super) fn url(&self) -> String {
        format!("http://127.0.0.1:{}/document.txt", self.port)
    }

    pub(super) fn hits(&self) -> u64 {
        self.hits.load(Ordering::Acquire)
    }

    pub(super) fn shutdown(&mut self) {
        if let Some(t) = self.thread.take() {
            self.stop.store(true, Ordering::Release);
            // Wake the blocking accept.
            let _ = TcpStream::connect_timeout(
                &std::net::SocketAddr::from(([127, 0, 0, 1], self.port)),
                Duration::from_secs(1),
            );
            let _ = t.join();
        }
    }
}

impl Drop for FixtureServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

pub(super) fn serve_one(mut stream: TcpStream, body: &[u8], hits: &AtomicU64) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
    let mut head = Vec::new();
    let mut buf = [0u8; 2048];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&head);
    let mut first = text.lines().next().unwrap_or("").split_whitespace();
    let (method, path) = (first.next().unwrap_or(""), first.next().unwrap_or(""));
    let (status, ctype, payload): (&str, &str, &[u8]) =
        if method == "GET" && path == "/document.txt" {
            hits.fetch_add(1, Ordering::AcqRel);
            ("200 OK", "text/plain; charset=utf-8", body)
        } else {
            ("404 Not Found", "text/plain; charset=utf-8", b"not found\n")
        };
    let header = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        payload.len()
    );
    let _ = stream.write_all(header.as_bytes());
    let _ = stream.write_all(payload);
    let _ = stream.flush();
}
