//! `wcp-hall demo`: the whole mission in one command, on a fresh machine, in seconds.
//!
//! In a temporary directory (on tmpfs when there is one) the demo does what an operator does,
//! with the same library calls the other commands use: it generates the package-signing and the
//! receipt-signing key, writes a trust policy trusting that key for `org.wcp-hall`, copies each
//! bundled worker package, signs it (awp.v2) and enrolls its record with
//! `attestation.package_root` / `manifest_path`, copies the bundled rules (`policies/rules.json`,
//! the same file `policies/hall.toml` routes with) and writes a `hall.toml`, and starts
//! a real Hall (`wcp-hall serve`, this same executable) on a private socket. Then, as a client
//! of the Hall's HTTP API, it runs the five-worker research pipeline under one correlation id,
//! shows a tampered package refused, an unknown capability failing closed and a REQUIRE_HUMAN
//! request approved through `wcp-hall approvals approve` (a subprocess: the CLI path an operator
//! uses), stops the Hall with SIGTERM and verifies the evidence receipt log offline.
//!
//! Nothing is simulated: if the Hall refuses or a worker fails, the demo stops at that step
//! with the Hall's own code and message and exits 1. Every child is killed and the directory
//! removed on the way out, unless `--keep` — also when the demo is interrupted (Ctrl-C,
//! SIGTERM, SIGHUP: exit 130).
//!
//! Threat model: none beyond the Hall's own. The demo's directory is created fresh (0711 so an
//! unprivileged worker uid can reach the store copies; nothing in it is listable by others, the
//! keys are 0600), the socket is 0600, and the fixture HTTP server listens on 127.0.0.1 only
//! and serves exactly one document.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hyper::{Method, StatusCode};
use serde_json::{Value, json};

use super::{CliError, Out, exit};
use crate::attest::manifest_v2;
use crate::attest::sign::{self, SignRequest};
use crate::attest::{TreeLimits, UtcTime};
use crate::client;
use crate::crypto::KeyPair;
use crate::envelope::{HostConfig, Probe, REPORT_SCHEMA};
use crate::policy::WcpBlast;
use crate::receipt::{Kind, ReceiptPayload, VerifyOptions, verify_log};
use crate::registry::RegistryRecord;

/// The tenant the demo acts as (mapped to the caller's uid in `[identity]`).
pub const TENANT: &str = "demo";
/// The signer namespace of the bundled workers.
pub const NAMESPACE: &str = "org.wcp-hall";
/// The port the fetcher's record allows; another free port is used (and the enrolled record
/// rewritten) when it is busy.
pub const FIXTURE_PORT: u16 = 18080;
/// The bundled packages, in enrolment order.
pub const PACKAGES: [&str; 6] = [
    "hello",
    "web_fetcher",
    "doc_chunker",
    "embedder",
    "doc_hasher",
    "research_registrar",
];
/// The package the demo tampers with after the pipeline ran.
const TAMPERED: &str = "doc_chunker";
/// A capability no rule mentions.
const UNKNOWN_CAPABILITY: &str = "cap.demo.teleport";
/// The rules the demo's Hall routes with, in the policies directory: the bundled pipeline rules
/// (`policies/rules.json`), the same file `policies/hall.toml` uses. The demo's requests need
/// their dev rules, which ask the policy gate (the bundled Cedar set under `prof.dev.permissive`):
/// `pol.nonprod.allow` allows the pipeline, and `pol.nonprod.restricted-review` answers
/// REQUIRE_HUMAN (gatekeeper) for hello on RESTRICTED data (`rr_hello_restricted_dev`).
pub const RULES_FILE: &str = "rules.json";

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Keep the demo directory (keys, hall.toml, registry, receipt log, knowledge store,
    /// hall.log) instead of removing it.
    #[arg(long)]
    pub keep: bool,
    /// The bundled workers directory (default: workers/ of the source tree this binary was
    /// built from). The rules, profiles and Cedar policies are taken from ../policies next to it.
    #[arg(long, value_name = "DIR")]
    pub workers: Option<PathBuf>,
}

/// Why the demo stopped: the step, what happened, and how to look further.
#[derive(Debug)]
struct Failed {
    step: &'static str,
    message: String,
    hint: Option<String>,
}

fn failed(step: &'static str, message: impl Into<String>) -> Failed {
    Failed {
        step,
        message: message.into(),
        hint: None,
    }
}

impl Failed {
    fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

type Step<T> = Result<T, Failed>;

/// Prints steps as they happen: human lines, or one JSON object per step.
struct Printer<'a> {
    out: &'a mut Out,
}

impl Printer<'_> {
    fn step(&mut self, step: &str, human: &str, data: Value) -> Step<()> {
        let result = if self.out.json {
            let mut obj = serde_json::Map::new();
            obj.insert("step".into(), json!(step));
            obj.insert("ok".into(), json!(true));
            if let Value::Object(m) = data {
                obj.extend(m);
            }
            self.out.json_line(&Value::Object(obj))
        } else {
            self.out.line(human)
        };
        result.map_err(|e| failed("output", e.message))
    }

    /// A human-only line (headings); nothing in JSON mode.
    fn text(&mut self, human: &str) -> Step<()> {
        if self.out.json {
            return Ok(());
        }
        self.out
            .line(human)
            .map_err(|e| failed("output", e.message))
    }
}

/// Short form of a hex digest for display.
fn short(hex: &str) -> String {
    let h = hex.strip_prefix("sha256:").unwrap_or(hex);
    if h.len() > 16 {
        format!("{}…", &h[..12])
    } else {
        h.to_owned()
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

// ---- the demo directory ---------------------------------------------------------------------

/// Where the demo directory goes: tmpfs (`/dev/shm`, or `$XDG_RUNTIME_DIR` for an ordinary
/// user, whose runtime directory an unprivileged worker uid cannot enter anyway) when writable,
/// else the system temporary directory.
fn create_workspace() -> Step<(PathBuf, bool)> {
    let root = nix::unistd::geteuid().is_root();
    let mut candidates = vec![PathBuf::from("/dev/shm")];
    if !root && let Some(d) = std::env::var_os("XDG_RUNTIME_DIR") {
        candidates.push(PathBuf::from(d));
    }
    let tmpfs = |p: &Path| {
        nix::sys::statfs::statfs(p)
            .map(|s| s.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC)
            .unwrap_or(false)
    };
    candidates.retain(|c| c.is_absolute() && c.is_dir() && tmpfs(c));
    candidates.push(std::env::temp_dir());
    let mut last_error = None;
    for base in candidates {
        match tempfile::Builder::new()
            .prefix("wcp-hall-demo-")
            .tempdir_in(&base)
        {
            Ok(dir) => {
                let path = dir.keep();
                // Reachable (not listable) by the unprivileged uid workers run as.
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o711)).map_err(
                    |e| failed("workspace", format!("cannot chmod {}: {e}", path.display())),
                )?;
                let on_tmpfs = tmpfs(&path);
                return Ok((path, on_tmpfs));
            }
            Err(e) => last_error = Some(format!("{}: {e}", base.display())),
        }
    }
    Err(failed(
        "workspace",
        format!(
            "cannot create a temporary directory ({})",
            last_error.unwrap_or_default()
        ),
    )
    .hint("set TMPDIR to a writable directory"))
}

/// Removes a tree the demo created, including the read-only copies of the package store
/// (directories 0555 must be made writable again before their entries can be unlinked by a
/// non-root owner).
fn remove_tree(path: &Path) -> std::io::Result<()> {
    fn open_up(dir: &Path, uid: u32) {
        if let Ok(meta) = std::fs::symlink_metadata(dir)
            && meta.is_dir()
        {
            if meta.uid() == uid && meta.mode() & 0o700 != 0o700 {
                let _ = std::fs::set_permissions(
                    dir,
                    std::fs::Permissions::from_mode((meta.mode() & 0o7777) | 0o700),
                );
            }
            if let Ok(entries) = std::fs::read_dir(dir) {
                for e in entries.flatten() {
                    if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                        open_up(&e.path(), uid);
                    }
                }
            }
        }
    }
    open_up(path, nix::unistd::geteuid().as_raw());
    match std::fs::remove_dir_all(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Copies a worker package, leaving out what is never part of one (`__pycache__`, `*.pyc`,
/// old manifests). A link or special file is refused: signing would refuse it anyway.
fn copy_package(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let name = entry.file_name();
        let name_str = name.to_string_lossy();
        let kind = entry.file_type()?;
        if name_str == "__pycache__"
            || name_str.ends_with(".pyc")
            || matches!(
                name_str.as_ref(),
                "manifest.sig" | "manifest.json" | "manifest.tmp"
            )
        {
            continue;
        }
        let (src, dst) = (entry.path(), to.join(&name));
        if kind.is_dir() {
            copy_package(&src, &dst)?;
        } else if kind.is_file() {
            std::fs::copy(&src, &dst)?;
        } else {
            return Err(std::io::Error::other(format!(
                "{} is a link or special file; worker packages hold only regular files and directories",
                src.display()
            )));
        }
    }
    Ok(())
}

fn copy_flat_dir(from: &Path, to: &Path) -> std::io::Result<usize> {
    std::fs::create_dir_all(to)?;
    let mut n = 0;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name()))?;
            n += 1;
        }
    }
    Ok(n)
}

/// Finds files named `name` under `dir` (for "where everything is").
fn find_file(dir: &Path, name: &str, depth: usize) -> Option<PathBuf> {
    if depth == 0 {
        return None;
    }
    let entries = std::fs::read_dir(dir).ok()?;
    let mut dirs = Vec::new();
    for e in entries.flatten() {
        let p = e.path();
        match e.file_type() {
            Ok(t) if t.is_file() && e.file_name() == name => return Some(p),
            Ok(t) if t.is_dir() => dirs.push(p),
            _ => {}
        }
    }
    dirs.iter().find_map(|d| find_file(d, name, depth - 1))
}

// ---- the fixture HTTP server ----------------------------------------------------------------

/// A one-document HTTP/1.1 server on 127.0.0.1 (a thread of the demo process): what the
/// fetcher's allowlist lets it reach.
struct FixtureServer {
    port: u16,
    stop: Arc<AtomicBool>,
    hits: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl FixtureServer {
    fn start(body: Vec<u8>) -> std::io::Result<Self> {
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

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/document.txt", self.port)
    }

    fn hits(&self) -> u64 {
        self.hits.load(Ordering::Acquire)
    }

    fn shutdown(&mut self) {
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

fn serve_one(mut stream: TcpStream, body: &[u8], hits: &AtomicU64) {
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

/// Children start with an empty signal mask (the demo blocks SIGINT/SIGTERM/SIGHUP in all its
/// threads for its own cleanup, and the mask is inherited across exec) and, for the Hall, with
/// a parent-death signal so it stops if the demo dies without cleaning up.
#[allow(unsafe_code)] // Command::pre_exec is unsafe
fn child_defaults(cmd: &mut Command, parent_death: bool) {
    // SAFETY: the closure runs in the forked child before exec and makes only
    // async-signal-safe system calls (sigprocmask, prctl), touching no memory of the parent.
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::signal::SigSet::empty()
                .thread_set_mask()
                .map_err(std::io::Error::from)?;
            if parent_death {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)
                    .map_err(std::io::Error::from)?;
            }
            Ok(())
        });
    }
}

// ---- the Hall process -----------------------------------------------------------------------

/// The Hall child and a client for its socket.
struct HallProcess {
    child: Child,
    socket: PathBuf,
    log: PathBuf,
    runtime: tokio::runtime::Runtime,
}

impl HallProcess {
    fn start(exe: &Path, config: &Path, socket: &Path, log: &Path) -> Step<Self> {
        let log_file = std::fs::File::create(log)
            .map_err(|e| failed("hall", format!("cannot create {}: {e}", log.display())))?;
        let mut cmd = Command::new(exe);
        cmd.arg("serve")
            .arg("--config")
            .arg(config)
            .arg("--socket")
            .arg(socket)
            .arg("--log-format")
            .arg("json")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file);
        // This Hall is the demo's, not systemd's: no activation, notification or credentials.
        for var in [
            "LISTEN_FDS",
            "LISTEN_PID",
            "LISTEN_FDNAMES",
            "NOTIFY_SOCKET",
            "WATCHDOG_USEC",
            "WATCHDOG_PID",
            "WCP_HALL_CONFIG",
            "WCP_HALL_SOCKET",
            "STATE_DIRECTORY",
            "RUNTIME_DIRECTORY",
            "CONFIGURATION_DIRECTORY",
            "CREDENTIALS_DIRECTORY",
        ] {
            cmd.env_remove(var);
        }
        child_defaults(&mut cmd, true);
        let child = cmd
            .spawn()
            .map_err(|e| failed("hall", format!("cannot start {} serve: {e}", exe.display())))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| failed("hall", format!("cannot start an async runtime: {e}")))?;
        Ok(HallProcess {
            child,
            socket: socket.to_owned(),
            log: log.to_owned(),
            runtime,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(12)..].join("\n")
    }

    fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<client::Answer, String> {
        self.runtime
            .block_on(client::call(
                &self.socket,
                method,
                path,
                body,
                Duration::from_secs(60),
            ))
            .map_err(|e| e.to_string())
    }

    /// Waits until `/wcp/health` answers 200 (or the Hall exits).
    fn wait_healthy(&mut self, within: Duration) -> Step<Value> {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(failed(
                    "hall",
                    format!(
                        "wcp-hall serve exited during start-up ({status}); its log says:\n{}",
                        self.log_tail()
                    ),
                ));
            }
            if self.socket.exists()
                && let Ok(a) = self.call(Method::GET, "/wcp/health", None)
                && a.status == StatusCode::OK
            {
                return Ok(a.body);
            }
            if Instant::now() > deadline {
                return Err(failed(
                    "hall",
                    format!(
                        "the Hall did not become healthy within {} s; its log says:\n{}",
                        within.as_secs(),
                        self.log_tail()
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(15));
        }
    }

    /// SIGTERM, then waits for the exit status.
    fn stop(&mut self, within: Duration) -> Step<std::process::ExitStatus> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return Ok(status);
        }
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.pid()).unwrap_or(i32::MAX));
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)
            .map_err(|e| failed("hall_stopped", format!("cannot signal the Hall: {e}")))?;
        let deadline = Instant::now() + within;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Ok(status),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                Ok(None) => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return Err(failed(
                        "hall_stopped",
                        format!(
                            "the Hall did not stop within {} s of SIGTERM and was killed",
                            within.as_secs()
                        ),
                    ));
                }
                Err(e) => return Err(failed("hall_stopped", format!("waiting for the Hall: {e}"))),
            }
        }
    }
}

impl Drop for HallProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// ---- talking to the Hall --------------------------------------------------------------------

/// One dispatch's answer and how long the round trip took.
struct Dispatched {
    body: Value,
    elapsed: Duration,
}

impl Dispatched {
    fn status(&self) -> &str {
        self.body["status"].as_str().unwrap_or("unknown")
    }
    fn deny_code(&self) -> Option<&str> {
        self.body["decision"]["deny_reason_if_denied"]["code"].as_str()
    }
    fn deny_message(&self) -> &str {
        self.body["decision"]["deny_reason_if_denied"]["message"]
            .as_str()
            .unwrap_or("")
    }
    fn rule(&self) -> &str {
        self.body["decision"]["matched_rule_id"]
            .as_str()
            .unwrap_or("?")
    }
}

/// The ids of the Cedar policies that determined a gate answer.
fn policy_ids(body: &Value) -> Vec<String> {
    body["policy"]["reasons"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|r| r["source"] == "policy")
                .filter_map(|r| r["id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn route_input(cap: &str, label: &str, cid: &str, request: Value) -> Value {
    json!({
        "capability_id": cap,
        "env": "dev",
        "data_label": label,
        "tenant_risk": "low",
        "qos_class": "P2",
        "tenant_id": TENANT,
        "correlation_id": cid,
        "request": request,
        "dry_run": false,
    })
}

fn dispatch(hall: &HallProcess, step: &'static str, body: &Value) -> Step<Dispatched> {
    let started = Instant::now();
    let answer = hall
        .call(Method::POST, "/wcp/dispatch", Some(body))
        .map_err(|e| failed(step, e))?;
    let elapsed = started.elapsed();
    if !answer.status.is_success() {
        let code = answer.body["code"].as_str().unwrap_or("error");
        let message = answer.body["message"]
            .as_str()
            .map_or_else(|| answer.body.to_string(), str::to_owned);
        let mut f = failed(
            step,
            format!(
                "the Hall answered {} {code}: {message}",
                answer.status.as_u16()
            ),
        );
        if code == "execution_unavailable" {
            f = f.hint(
                "this build's Hall routes but cannot execute workers yet (no worker runner is wired into `wcp-hall serve`)",
            );
        }
        return Err(f);
    }
    Ok(Dispatched {
        body: answer.body,
        elapsed,
    })
}

/// The envelope report (`wcp-hall.envelope-report/1`) anywhere in an answer.
fn find_report(v: &Value) -> Option<&Value> {
    match v {
        Value::Object(m) => {
            if m.get("schema").and_then(Value::as_str) == Some(REPORT_SCHEMA) {
                Some(v)
            } else {
                m.values().find_map(find_report)
            }
        }
        Value::Array(a) => a.iter().find_map(find_report),
        _ => None,
    }
}

/// What the envelope enforced, in one line, and the same as JSON. Write paths under `base`
/// are shown relative to it.
fn envelope_summary(r: &Value, base: &Path) -> (String, Value) {
    let eff = |v: &Value| v["effective"].as_str().unwrap_or("unknown").to_owned();
    let net = &r["network"];
    let network = match net["mode"].as_str() {
        Some("namespace") => "private netns, no egress".to_owned(),
        Some("landlock_tcp_ports") => {
            let ports: Vec<String> = r["landlock"]["tcp_connect_ports"]
                .as_array()
                .map(|a| a.iter().map(|p| p.to_string()).collect())
                .unwrap_or_default();
            format!("tcp connect to port {} only", ports.join(","))
        }
        Some(m) => m.to_owned(),
        None => "?".to_owned(),
    };
    let writes: Vec<String> = r["filesystem"]["writes"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|w| w["granted"].as_str().or(w["declared"].as_str()))
                .map(|w| {
                    Path::new(w)
                        .strip_prefix(base)
                        .map(|p| p.display().to_string())
                        .unwrap_or_else(|_| w.to_owned())
                })
                .collect()
        })
        .unwrap_or_default();
    let mut parts = vec![
        format!(
            "landlock {} (ABI {})",
            eff(&r["landlock"]),
            r["landlock"]["abi_effective"]
        ),
        format!("network {} ({network})", eff(net)),
        format!("seccomp {}", eff(&r["seccomp"])),
        format!("pid ns {}", eff(&r["pid_namespace"])),
        format!("cgroup {}", eff(&r["cgroup"])),
        format!("uid {}", r["identity"]["uid"]),
    ];
    if !writes.is_empty() {
        parts.push(format!("writes only {}", writes.join(", ")));
    }
    let degraded: Vec<Value> = r["degraded"].as_array().cloned().unwrap_or_default();
    let data = json!({
        "landlock": eff(&r["landlock"]),
        "landlock_abi": r["landlock"]["abi_effective"],
        "network": eff(net),
        "network_mode": net["mode"],
        "tcp_connect_ports": r["landlock"]["tcp_connect_ports"],
        "seccomp": eff(&r["seccomp"]),
        "pid_namespace": eff(&r["pid_namespace"]),
        "cgroup": eff(&r["cgroup"]),
        "unprivileged_user": eff(&r["identity"]),
        "uid": r["identity"]["uid"],
        "writes": writes,
        "degraded": degraded,
    });
    (parts.join(" · "), data)
}

/// Explains a run that did not complete, naming the envelope when it was the envelope.
fn not_completed(step: &'static str, d: &Dispatched) -> Failed {
    match d.status() {
        "denied" => {
            let code = d.deny_code().unwrap_or("?");
            let f = failed(
                step,
                format!("the Hall denied it: {code}: {}", d.deny_message()),
            );
            if code.starts_with("DENY_ENVELOPE") {
                let stage = find_report(&d.body).and_then(|r| {
                    r["stages"]
                        .as_array()?
                        .iter()
                        .find(|s| s["outcome"] == "failed")
                        .map(|s| {
                            format!(
                                "stage {} failed: {}",
                                s["stage"].as_str().unwrap_or("?"),
                                s["detail"].as_str().unwrap_or("")
                            )
                        })
                });
                f.hint(format!(
                    "the privilege envelope cannot run workers on this host{}; `wcp-hall envelope probe` shows what this kernel can enforce",
                    stage.map(|s| format!(" ({s})")).unwrap_or_default()
                ))
            } else {
                f
            }
        }
        "failed" => {
            let err = &d.body["result"]["error"];
            let exec_err = &d.body["execution"]["error"];
            let why = if err.is_object() {
                format!(
                    "the worker failed: {}: {}",
                    err["code"].as_str().unwrap_or("?"),
                    err["message"].as_str().unwrap_or("")
                )
            } else if exec_err.is_object() {
                format!(
                    "the run failed: {}: {}",
                    exec_err["code"].as_str().unwrap_or("?"),
                    exec_err["message"].as_str().unwrap_or("")
                )
            } else {
                let exit = &d.body["execution"]["summary"]["exit"];
                let last = d.body["execution"]["stderr_tail"]
                    .as_str()
                    .and_then(|t| t.lines().rev().find(|l| !l.trim().is_empty()))
                    .unwrap_or("")
                    .to_owned();
                format!(
                    "the worker ended ({} {}) without a result; its last log line: {last}",
                    exit["kind"].as_str().unwrap_or("?"),
                    exit["code"]
                )
            };
            let code = exec_err["code"].as_str().unwrap_or("");
            if code.starts_with("DENY_ENVELOPE") {
                let stage = find_report(&d.body).and_then(|r| {
                    r["stages"]
                        .as_array()?
                        .iter()
                        .find(|s| s["outcome"] == "failed")
                        .map(|s| {
                            format!(
                                "stage {} failed: {}",
                                s["stage"].as_str().unwrap_or("?"),
                                s["detail"].as_str().unwrap_or("")
                            )
                        })
                });
                return failed(step, why).hint(format!(
                    "the privilege envelope cannot run workers on this host{}; `wcp-hall envelope probe` shows what this kernel can enforce",
                    stage.map(|s| format!(" ({s})")).unwrap_or_default()
                ));
            }
            let f = failed(step, why);
            match find_report(&d.body) {
                Some(r) if r["degraded"].as_array().is_some_and(|a| !a.is_empty()) => {
                    f.hint(format!(
                        "the envelope reports it could not enforce: {}",
                        r["degraded"]
                    ))
                }
                _ => f,
            }
        }
        other => failed(
            step,
            format!("unexpected dispatch status {other:?}: {}", d.body),
        ),
    }
}

// ---- interruption ---------------------------------------------------------------------------

/// What an interrupted demo must clean up: its directory (unless kept) and its Hall.
struct Interruptible {
    dir: Option<PathBuf>,
    keep: bool,
    hall_pid: Option<u32>,
}

/// Set by the signal thread before it cleans up and exits 130.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

static INTERRUPT: std::sync::Mutex<Interruptible> = std::sync::Mutex::new(Interruptible {
    dir: None,
    keep: false,
    hall_pid: None,
});

fn interruptible(update: impl FnOnce(&mut Interruptible)) {
    let mut g = INTERRUPT.lock().unwrap_or_else(|p| p.into_inner());
    update(&mut g);
}

/// Ctrl-C (SIGINT), SIGTERM and SIGHUP must not leave a Hall running or a directory on tmpfs:
/// they are blocked in every thread of the demo and taken by one thread with `sigwait`, which
/// kills the Hall, removes the directory (unless `--keep`) and exits 130. Children start with
/// an empty signal mask (std resets it), so the Hall still stops on its own signals.
fn guard_interrupts() {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        set.add(sig);
    }
    if set.thread_block().is_err() {
        return;
    }
    let _ = std::thread::Builder::new()
        .name("demo-signals".into())
        .spawn(move || {
            let Ok(sig) = set.wait() else { return };
            INTERRUPTED.store(true, Ordering::Release);
            // Held until the process exits: the main thread waits on it (see `run`).
            let g = INTERRUPT.lock().unwrap_or_else(|p| p.into_inner());
            let (dir, keep, pid) = (g.dir.clone(), g.keep, g.hall_pid);
            if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
                let pid = nix::unistd::Pid::from_raw(pid);
                let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
                let _ = nix::sys::wait::waitpid(pid, None);
            }
            let what = match (&dir, keep) {
                (Some(d), false) => match remove_tree(d) {
                    Ok(()) => format!("removed {}", d.display()),
                    Err(e) => format!("could not remove {}: {e}", d.display()),
                },
                (Some(d), true) => format!("kept {}", d.display()),
                (None, _) => "nothing to clean up".to_owned(),
            };
            eprintln!("wcp-hall demo: interrupted by {sig}; the Hall was stopped; {what}");
            std::process::exit(130);
        });
}

// ---- the demo itself ------------------------------------------------------------------------

/// One enrolled worker.
struct Enrolled {
    package: &'static str,
    worker_id: String,
    species: String,
    source: PathBuf,
    blast: u32,
    /// Declares relative `filesystem_writes` (persistent directories under `state/data`).
    writes: bool,
}

/// Everything the demo owns; dropping it stops the children and removes the directory.
struct Session {
    dir: PathBuf,
    keep: bool,
    hall: Option<HallProcess>,
    server: Option<FixtureServer>,
}

impl Session {
    /// Stops the children; removes the directory unless kept. Returns whether it is gone.
    fn close(&mut self) -> std::io::Result<bool> {
        self.hall = None;
        if let Some(mut s) = self.server.take() {
            s.shutdown();
        }
        if self.keep {
            return Ok(false);
        }
        remove_tree(&self.dir)?;
        Ok(!self.dir.exists())
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

/// Finds the bundled workers and policies.
fn locate_sources(args: &DemoArgs) -> Result<(PathBuf, PathBuf), CliError> {
    let workers = match &args.workers {
        Some(w) => w.clone(),
        None => {
            let built = Path::new(env!("CARGO_MANIFEST_DIR")).join("workers");
            if !built.is_dir() {
                return Err(CliError::new(
                    exit::NOINPUT,
                    "workers_not_found",
                    format!(
                        "the bundled workers are not at {} (this binary was built elsewhere)",
                        built.display()
                    ),
                )
                .hint("pass --workers DIR (the workers/ directory of a wcp-hall source tree)"));
            }
            built
        }
    };
    let workers = std::path::absolute(&workers).unwrap_or(workers);
    for p in PACKAGES {
        if !workers.join(p).join("record.json").is_file() {
            return Err(CliError::new(
                exit::NOINPUT,
                "workers_not_found",
                format!(
                    "{} has no {p}/record.json: not the bundled workers directory",
                    workers.display()
                ),
            )
            .hint("pass --workers DIR (the workers/ directory of a wcp-hall source tree)"));
        }
    }
    let policies = workers
        .parent()
        .map(|p| p.join("policies"))
        .filter(|p| {
            p.join(RULES_FILE).is_file() && p.join("profiles").is_dir() && p.join("cedar").is_dir()
        })
        .ok_or_else(|| {
            CliError::new(
                exit::NOINPUT,
                "policies_not_found",
                format!(
                    "no policies/{RULES_FILE}, policies/profiles and policies/cedar next to {}",
                    workers.display()
                ),
            )
            .hint("run the demo from a wcp-hall source tree (policies/ sits beside workers/)")
        })?;
    Ok((workers, policies))
}

/// The Python runtime the Hall will run workers with, probed exactly as `serve` probes it (the
/// demo's `hall.toml` leaves `[envelope] python` at its default; as the worker uid when root),
/// checked before anything starts: without it every run would be refused.
fn preflight_python() -> Step<(PathBuf, String)> {
    let section = crate::config::EnvelopeSection::default();
    let worker = crate::hall::lifecycle::worker_identity(&section.worker_user)
        .map_err(|e| failed("preflight", e.message))?;
    let python = crate::envelope::PythonRuntime::probe(section.python.as_deref(), Some(worker))
        .map_err(|e| {
            failed(
                "preflight",
                format!("the Hall runs Python workers with [envelope] python: {e}"),
            )
            .hint("install Python 3.8 or later as /usr/bin/python3 (Debian 12 / Ubuntu: apt-get install python3)")
        })?;
    Ok((python.interpreter.clone(), python.version.clone()))
}

fn hall_toml(uid: u32) -> String {
    format!(
        r#"# Written by `wcp-hall demo`: a complete Hall in one directory. Relative paths are relative
# to this file.

[hall]
require_signatory = true
allowed_tenants = ["{TENANT}"]
# Every worker package is verified against its awp.v2 signature and the trust policy on every
# dispatch, and runs from the verified read-only copy in the store.
require_worker_attestation = true
enforce_correlation_id = true
enforce_required_controls = true
enforce_blast_scoring_in_prod = true
enforce_privilege_envelopes = true

[paths]
rules = "rules.json"
registry_dir = "registry"
state_dir = "state"
profiles_dir = "policies/profiles"

[profiles]
dev = "prof.dev.permissive"

[server]
socket = "hall.sock"
socket_mode = "0600"
shutdown_grace_ms = 5000

[identity]
operator_uids = [{uid}]

[[identity.peers]]
uid = {uid}
tenants = ["{TENANT}"]

[approvals]
# Answer "pending" at once: the demo approves through `wcp-hall approvals approve`.
wait_ms = 0
timeout_ms = 600000

[attestation]
trust_policy = "trust.json"
store_dir = "state/store"
recheck_seconds = 0

[receipts]
log_dir = "state/receipts"
signing_key = "keys/receipts.key"
checkpoint_every = 1000
checkpoint_interval_secs = 0

[envelope]
runs_dir = "state/runs"
data_dir = "state/data"
"#
    )
}

/// Runs every step; `session` is filled in as things start so the caller can clean up.
fn run_steps(
    args: &DemoArgs,
    workers_dir: &Path,
    policies_dir: &Path,
    session: &mut Option<Session>,
    pr: &mut Printer<'_>,
) -> Step<()> {
    let started = Instant::now();
    let exe = std::env::current_exe()
        .map_err(|e| failed("preflight", format!("cannot find this executable: {e}")))?;
    let (python, py_version) = preflight_python()?;
    pr.text("wcp-hall demo: the WCP research pipeline, governed end to end")?;

    // The directory.
    let (dir, on_tmpfs) = create_workspace()?;
    interruptible(|g| {
        g.dir = Some(dir.clone());
        g.keep = args.keep;
    });
    let s = session.insert(Session {
        dir: dir.clone(),
        keep: args.keep,
        hall: None,
        server: None,
    });
    let socket = dir.join("hall.sock");
    if socket.as_os_str().len() > 100 {
        return Err(failed(
            "workspace",
            format!(
                "the socket path {} is too long for a Unix socket",
                socket.display()
            ),
        )
        .hint("set TMPDIR to a shorter directory"));
    }
    pr.step(
        "workspace",
        &format!(
            "  workspace     {}{}",
            dir.display(),
            if on_tmpfs { " (tmpfs)" } else { "" }
        ),
        json!({"dir": dir, "tmpfs": on_tmpfs, "python": python, "python_version": py_version}),
    )?;

    // What this kernel can enforce (the Hall probes again at start; this is for the reader).
    let uid = nix::unistd::geteuid().as_raw();
    let probe = Probe::run(&HostConfig::new(dir.join("state/probe")));
    let ns = &probe.namespaces;
    let ns_list: Vec<&str> = [
        ("user", ns.user),
        ("pid", ns.pid),
        ("net", ns.net),
        ("ipc", ns.ipc),
        ("uts", ns.uts),
    ]
    .iter()
    .filter(|(_, y)| *y)
    .map(|(n, _)| *n)
    .collect();
    let worker_uid = if uid == 0 {
        "workers run as nobody".to_owned()
    } else {
        format!("workers run as uid {uid} in a user namespace")
    };
    pr.step(
        "kernel",
        &format!(
            "  kernel        {}: Landlock ABI {}, seccomp {}, namespaces {}; {worker_uid}; python {py_version}",
            probe.kernel_release,
            probe.landlock.kernel_abi,
            if probe.seccomp.filter { "yes" } else { "no" },
            if ns_list.is_empty() { "none".to_owned() } else { ns_list.join("/") },
        ),
        json!({"probe": probe}),
    )?;

    // Keys.
    let keys = dir.join("keys");
    std::fs::create_dir(&keys)
        .and_then(|()| std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o700)))
        .map_err(|e| failed("keys", format!("cannot create {}: {e}", keys.display())))?;
    let package_key = KeyPair::generate().map_err(|e| failed("keys", e.to_string()))?;
    package_key
        .write(&keys.join("packages.key"))
        .map_err(|e| failed("keys", e.to_string()))?;
    let receipt_key = KeyPair::generate().map_err(|e| failed("keys", e.to_string()))?;
    receipt_key
        .write(&keys.join("receipts.key"))
        .map_err(|e| failed("keys", e.to_string()))?;
    pr.step(
        "keys",
        &format!(
            "  keys          package signing {}, receipt signing {} (Ed25519, mode 0600)",
            short(&package_key.id().0),
            short(&receipt_key.id().0)
        ),
        json!({
            "package_key": keys.join("packages.key"), "package_key_id": package_key.id(),
            "receipt_key": keys.join("receipts.key"), "receipt_key_id": receipt_key.id(),
        }),
    )?;

    // Trust policy.
    let trust = json!({
        "schema": crate::attest::trust::SCHEMA,
        "version": 1,
        "namespaces": {
            NAMESPACE: {
                "threshold": 1,
                "keys": [{
                    "public_key": package_key.public().to_base64(),
                    "key_id": package_key.id(),
                    "comment": "wcp-hall demo package signing key",
                }],
            }
        },
    });
    let trust_path = dir.join("trust.json");
    std::fs::write(&trust_path, format!("{trust:#}\n"))
        .map_err(|e| failed("trust_policy", format!("{}: {e}", trust_path.display())))?;
    crate::attest::TrustPolicy::load(&trust_path)
        .map_err(|e| failed("trust_policy", e.to_string()))?;
    pr.step(
        "trust_policy",
        &format!(
            "  trust policy  {NAMESPACE} → key {} (threshold 1)",
            short(&package_key.id().0)
        ),
        json!({"path": trust_path, "namespace": NAMESPACE, "key_id": package_key.id()}),
    )?;

    // The fixture server first: the fetcher's enrolled record names its port.
    let document = std::fs::read(workers_dir.join("sample/document.txt")).map_err(|e| {
        failed(
            "document",
            format!(
                "cannot read {}: {e}",
                workers_dir.join("sample/document.txt").display()
            ),
        )
    })?;
    let server = FixtureServer::start(document.clone())
        .map_err(|e| failed("document", format!("cannot listen on 127.0.0.1: {e}")))?;
    let port = server.port;
    let url = server.url();
    s.server = Some(server);

    // Packages: copy, sign, enroll.
    let registry = dir.join("registry");
    std::fs::create_dir(&registry).map_err(|e| {
        failed(
            "enroll",
            format!("cannot create {}: {e}", registry.display()),
        )
    })?;
    let mut enrolled: Vec<Enrolled> = Vec::new();
    for package in PACKAGES {
        let source = dir.join(format!("packages/{package}"));
        copy_package(&workers_dir.join(package), &source)
            .map_err(|e| failed("enroll", format!("copying {package}: {e}")))?;
        let template_text = std::fs::read_to_string(source.join("record.json"))
            .map_err(|e| failed("enroll", format!("{package}/record.json: {e}")))?;
        let mut record: Value = serde_json::from_str(&template_text)
            .map_err(|e| failed("enroll", format!("{package}/record.json: {e}")))?;
        let worker_id = record["worker_id"].as_str().unwrap_or_default().to_owned();
        let species = record["worker_species_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let (tree, _statement, envelope) = sign::sign_v2(
            &SignRequest {
                package_root: &source,
                worker_id: &worker_id,
                worker_species_id: &species,
                worker_version: env!("CARGO_PKG_VERSION"),
                build_source: "local",
                built_at: UtcTime::now(),
                expires_at: None,
                limits: TreeLimits::default(),
            },
            &[&package_key],
        )
        .map_err(|e| failed("enroll", format!("signing {package}: {e}")))?;
        let manifest = source.join(manifest_v2::DEFAULT_FILE_NAME);
        sign::write_manifest(&manifest, &sign::envelope_text(&envelope))
            .map_err(|e| failed("enroll", format!("{}: {e}", manifest.display())))?;
        // The enrolled copy (never the template, which is part of the signed package).
        record["attestation"] = json!({
            "code_hash": tree.digest,
            "hash_method": "awp.v1 package tree (sha256), signed as awp.v2",
            "attested_at": UtcTime::now().to_string(),
            "attested_by": package_key.id(),
            "package_root": source,
            "manifest_path": manifest,
        });
        let mut egress_note = String::new();
        if let Some(list) = record["privilege_envelope"]["network_egress"].as_array_mut() {
            for item in list.iter_mut() {
                if item.as_str() == Some(&format!("127.0.0.1:{FIXTURE_PORT}"))
                    && port != FIXTURE_PORT
                {
                    *item = json!(format!("127.0.0.1:{port}"));
                }
            }
            egress_note = format!(
                ", egress {}",
                list.iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(",")
            );
        }
        let parsed = RegistryRecord::from_value(&record)
            .map_err(|e| failed("enroll", format!("{package}: {e}")))?;
        crate::registry::enroll_record(&registry, &parsed)
            .map_err(|e| failed("enroll", format!("{package}: {e}")))?;
        let blast = parsed
            .blast_radius
            .as_ref()
            .map(|b| WcpBlast::from_radius(b).total())
            .unwrap_or(0);
        pr.step(
            "enroll",
            &format!(
                "  enrolled      {worker_id:<34} awp.v2 {}, blast {blast}{egress_note}",
                short(&tree.digest)
            ),
            json!({
                "package": package, "worker_id": worker_id, "worker_species_id": species,
                "package_hash": tree.digest, "manifest": manifest, "blast": blast,
                "network_egress": record["privilege_envelope"]["network_egress"],
            }),
        )?;
        enrolled.push(Enrolled {
            package,
            worker_id,
            species,
            source,
            blast,
            writes: parsed
                .privilege_envelope
                .as_ref()
                .is_some_and(|p| p.filesystem_writes.iter().any(|w| !w.starts_with('/'))),
        });
    }

    // The state directory, laid out so the unprivileged worker uid can reach what the runner
    // hands it: `state/data/<worker_id>/<dir>` for a worker's persistent writable directories
    // (the runner creates and chowns the leaf; every directory above it must be traversable).
    let mut traversable = vec![dir.join("state"), dir.join("state/data")];
    for e in &enrolled {
        if e.writes {
            traversable.push(dir.join("state/data").join(&e.worker_id));
        }
    }
    for d in &traversable {
        std::fs::create_dir_all(d)
            .and_then(|()| std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o711)))
            .map_err(|e| failed("config", format!("cannot create {}: {e}", d.display())))?;
    }

    // Rules, policies, hall.toml; checked as the Hall will load them.
    std::fs::copy(policies_dir.join(RULES_FILE), dir.join("rules.json")).map_err(|e| {
        failed(
            "config",
            format!("copying {}: {e}", policies_dir.join(RULES_FILE).display()),
        )
    })?;
    for sub in ["profiles", "cedar"] {
        copy_flat_dir(
            &policies_dir.join(sub),
            &dir.join(format!("policies/{sub}")),
        )
        .map_err(|e| failed("config", format!("copying policies/{sub}: {e}")))?;
    }
    let config_path = dir.join("hall.toml");
    std::fs::write(&config_path, hall_toml(uid))
        .map_err(|e| failed("config", format!("{}: {e}", config_path.display())))?;
    let loaded = crate::hall::state::Loaded::load(&config_path, 1)
        .map_err(|e| failed("config", e.to_string()))?;
    pr.step(
        "config",
        &format!(
            "  hall.toml     dev → prof.dev.permissive, worker attestation required, {} rules ({} shadowed), {} workers",
            loaded.rules.rules().len(),
            loaded.rules.shadows().len(),
            loaded.registry.records().len()
        ),
        json!({
            "config": config_path, "rules": loaded.rules.rules().len(),
            "shadowed_rules": loaded.rules.shadows().len(),
            "workers": loaded.registry.records().len(), "profile_dev": "prof.dev.permissive",
        }),
    )?;
    drop(loaded);
    pr.step(
        "document",
        &format!(
            "  document      {url} ({} bytes, served by the demo)",
            document.len()
        ),
        json!({"url": url, "bytes": document.len(), "port": port, "preferred_port": port == FIXTURE_PORT}),
    )?;

    // The Hall.
    let t = Instant::now();
    let mut hall = HallProcess::start(&exe, &config_path, &socket, &dir.join("hall.log"))?;
    let pid = hall.pid();
    interruptible(|g| g.hall_pid = Some(pid));
    let health = hall.wait_healthy(Duration::from_secs(20))?;
    let startup = t.elapsed();
    pr.step(
        "hall_started",
        &format!(
            "  hall          pid {} on {} (ready in {} ms)",
            hall.pid(),
            socket.display(),
            ms(startup)
        ),
        json!({"pid": hall.pid(), "socket": socket, "startup_ms": ms(startup), "health": health}),
    )?;
    let hall = &*s.hall.insert(hall);

    // The pipeline.
    let cid = uuid::Uuid::new_v4().to_string();
    pr.text("")?;
    pr.text(&format!("Research pipeline, one correlation id {cid}:"))?;
    let by_package = |p: &str| enrolled.iter().find(|e| e.package == p);
    let mut chain = 0u32;
    let mut results: Vec<Value> = Vec::new();
    let steps: [(&str, &str); 5] = [
        ("cap.web.fetch", "web_fetcher"),
        ("cap.doc.chunk", "doc_chunker"),
        ("cap.ml.embed", "embedder"),
        ("cap.doc.hash", "doc_hasher"),
        ("cap.research.register", "research_registrar"),
    ];
    for (i, (cap, package)) in steps.iter().enumerate() {
        let f = results.first().cloned().unwrap_or(Value::Null);
        let c = results.get(1).cloned().unwrap_or(Value::Null);
        let e = results.get(2).cloned().unwrap_or(Value::Null);
        let h = results.get(3).cloned().unwrap_or(Value::Null);
        // The mapping of workers/README.md: every field is a copy of an earlier result's field.
        let request = match i {
            0 => json!({"url": url}),
            1 => json!({"text": f["text"], "max_chars": 400, "overlap": 80}),
            2 => json!({"chunks": c["chunks"]}),
            3 => json!({"text": f["text"], "chunks": c["chunks"]}),
            _ => json!({
                "title": f["title"], "source_url": f["url"],
                "doc_sha256": h["document_sha256"], "merkle_root": h["merkle_root"],
                "chunks": c["chunks"], "embeddings": e["embeddings"],
            }),
        };
        let d = dispatch(hall, "pipeline", &route_input(cap, "PUBLIC", &cid, request))?;
        if d.status() != "completed" {
            return Err(not_completed("pipeline", &d).hint(format!(
                "step {}/5 ({cap}); the Hall's log is {}",
                i + 1,
                hall.log.display()
            )));
        }
        let result = d.body["result"].clone();
        if result["correlation_id"] != json!(cid) {
            return Err(failed(
                "pipeline",
                format!(
                    "{cap}: the result carries correlation id {} instead of {cid}",
                    result["correlation_id"]
                ),
            ));
        }
        let report = find_report(&d.body).ok_or_else(|| {
            failed(
                "pipeline",
                format!("{cap}: the Hall's answer carries no envelope report, so the demo cannot show what was enforced"),
            )
        })?;
        let (env_line, env_json) = envelope_summary(report, &dir);
        let worker =
            by_package(package).ok_or_else(|| failed("pipeline", "worker not enrolled"))?;
        chain += worker.blast;
        let what = match i {
            0 => {
                let served = s.server.as_ref().map_or(0, FixtureServer::hits);
                format!(
                    "fetched {} bytes ({}), sha256 {}; the demo's server saw {served} request{}",
                    result["bytes"],
                    result["content_type"].as_str().unwrap_or("?"),
                    short(result["sha256"].as_str().unwrap_or("")),
                    if served == 1 { "" } else { "s" }
                )
            }
            1 => format!(
                "{} chunks (max 400 characters, overlap 80)",
                result["count"]
            ),
            2 => format!(
                "{} embeddings × {} dimensions ({})",
                result["count"],
                result["dimensions"],
                result["method"].as_str().unwrap_or("?")
            ),
            3 => {
                if result["document_sha256"] != f["sha256"] {
                    return Err(failed(
                        "pipeline",
                        "the document hash differs from the fetched body's hash",
                    ));
                }
                format!(
                    "Merkle root {} over {} chunks; document sha256 matches the fetch",
                    short(result["merkle_root"].as_str().unwrap_or("")),
                    result["chunk_count"]
                )
            }
            _ => format!(
                "{} {} in {} (documents in the store: {})",
                result["record_id"].as_str().unwrap_or("?"),
                if result["created"] == true {
                    "registered"
                } else {
                    "already registered"
                },
                result["store_path"].as_str().unwrap_or("?"),
                result["records_total"]
            ),
        };
        // The Hall's own blast accounting when the gate spoke (WCP §7: the chain adds up).
        let gate_blast = &d.body["policy"]["blast"];
        let blast = gate_blast["worker"]
            .as_u64()
            .unwrap_or(u64::from(worker.blast));
        let chain_total = gate_blast["total"].as_u64().unwrap_or(u64::from(chain));
        let policies = policy_ids(&d.body);
        let worker_ms = d.body["execution"]["summary"]["duration_ms"].as_u64();
        let mut human = format!(
            "  [{}/5] {cap} → {} ({})\n        decision  allowed: rule {}{}; blast {blast} (chain {chain_total})\n        envelope  {env_line}",
            i + 1,
            worker.species,
            worker.worker_id,
            d.rule(),
            if policies.is_empty() {
                String::new()
            } else {
                format!(", policy {}", policies.join(", "))
            },
        );
        if let Some(deg) = env_json["degraded"].as_array().filter(|a| !a.is_empty()) {
            for line in deg {
                human.push_str(&format!(
                    "\n        not enforced on this host: {}",
                    line.as_str().unwrap_or("?")
                ));
            }
        }
        human.push_str(&format!(
            "\n        result    {what}\n        took      {} ms",
            ms(d.elapsed)
        ));
        if let Some(w) = worker_ms {
            human.push_str(&format!(" (worker {w} ms)"));
        }
        if let Some(r) = d.body["execution"].get("receipt") {
            human.push_str(&format!(", receipt seq {}", r["seq"]));
        }
        pr.step(
            "pipeline",
            &human,
            json!({
                "index": i + 1, "capability_id": cap, "worker_id": worker.worker_id,
                "worker_species_id": worker.species, "status": d.status(), "decision": "allowed",
                "matched_rule_id": d.rule(), "policies": policies, "blast": blast,
                "chain_blast": chain_total, "chain_blast_expected": chain,
                "correlation_id": result["correlation_id"], "envelope": env_json,
                "duration_ms": ms(d.elapsed), "worker_duration_ms": worker_ms, "summary": what,
                "receipt": d.body["execution"].get("receipt"),
            }),
        )?;
        results.push(result);
    }

    // Governance.
    pr.text("")?;
    pr.text("Governance:")?;

    // (a) A tampered package.
    let victim = by_package(TAMPERED).ok_or_else(|| failed("tampered_worker", "not enrolled"))?;
    let edited = victim.source.join("code/worker_logic.py");
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&edited)
        .map_err(|e| failed("tampered_worker", format!("{}: {e}", edited.display())))?;
    f.write_all(b"\n# edited after signing by wcp-hall demo: this package must no longer run\n")
        .map_err(|e| failed("tampered_worker", format!("{}: {e}", edited.display())))?;
    drop(f);
    let tamper_cid = uuid::Uuid::new_v4().to_string();
    let d = dispatch(
        hall,
        "tampered_worker",
        &route_input(
            "cap.doc.chunk",
            "PUBLIC",
            &tamper_cid,
            json!({"text": results[0]["text"]}),
        ),
    )?;
    let code = d.deny_code().unwrap_or("").to_owned();
    if d.status() != "denied" || !code.starts_with("DENY_WORKER_") || d.body.get("result").is_some()
    {
        return Err(failed(
            "tampered_worker",
            format!(
                "a package edited after signing was not refused: status {}, {}",
                d.status(),
                if code.is_empty() {
                    "no deny code".to_owned()
                } else {
                    code
                }
            ),
        ));
    }
    pr.step(
        "tampered_worker",
        &format!(
            "  tampered worker     {} edited after signing → denied {code}; nothing ran",
            edited.strip_prefix(&dir).unwrap_or(&edited).display()
        ),
        json!({
            "worker_id": victim.worker_id, "edited": edited, "status": d.status(),
            "deny_code": code, "message": d.deny_message(), "correlation_id": tamper_cid,
            "ran": false, "duration_ms": ms(d.elapsed),
        }),
    )?;

    // (b) An unknown capability.
    let unknown_cid = uuid::Uuid::new_v4().to_string();
    let d = dispatch(
        hall,
        "unknown_capability",
        &route_input(UNKNOWN_CAPABILITY, "PUBLIC", &unknown_cid, json!({})),
    )?;
    if d.status() != "denied" || d.deny_code() != Some("DENY_NO_MATCHING_RULE") {
        return Err(failed(
            "unknown_capability",
            format!(
                "{UNKNOWN_CAPABILITY} was not denied with DENY_NO_MATCHING_RULE: status {}, {:?}",
                d.status(),
                d.deny_code()
            ),
        ));
    }
    pr.step(
        "unknown_capability",
        &format!("  unknown capability  {UNKNOWN_CAPABILITY} → denied DENY_NO_MATCHING_RULE (fail closed)"),
        json!({
            "capability_id": UNKNOWN_CAPABILITY, "status": d.status(),
            "deny_code": "DENY_NO_MATCHING_RULE", "correlation_id": unknown_cid,
            "duration_ms": ms(d.elapsed),
        }),
    )?;

    // (c) A human in the loop.
    let human_cid = uuid::Uuid::new_v4().to_string();
    let d = dispatch(
        hall,
        "require_human",
        &route_input(
            "cap.hello.greet",
            "RESTRICTED",
            &human_cid,
            json!({"name": "Ada"}),
        ),
    )?;
    let approval_id = d.body["pending_approval_id"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    if d.status() != "pending_approval" || approval_id.is_empty() {
        return Err(failed(
            "require_human",
            format!(
                "hello on RESTRICTED data did not wait for a human: status {}, {:?}: {}",
                d.status(),
                d.deny_code(),
                d.deny_message()
            ),
        ));
    }
    let level = d.body["supervisor_level"]
        .as_str()
        .unwrap_or("?")
        .to_owned();
    let policies = policy_ids(&d.body);
    pr.step(
        "require_human",
        &format!(
            "  human approval      cap.hello.greet on RESTRICTED data → REQUIRE_HUMAN ({level}{}), pending {approval_id}",
            if policies.is_empty() { String::new() } else { format!(", {}", policies.join(", ")) }
        ),
        json!({
            "capability_id": "cap.hello.greet", "data_label": "RESTRICTED", "status": d.status(),
            "supervisor_level": level, "policies": policies, "pending_approval_id": approval_id,
            "matched_rule_id": d.rule(), "correlation_id": human_cid,
        }),
    )?;
    let t = Instant::now();
    let mut approve = Command::new(&exe);
    child_defaults(&mut approve, false);
    let approve = approve
        .args(["--json", "approvals", "approve"])
        .arg(&approval_id)
        .arg("--socket")
        .arg(&socket)
        .args(["--note", "approved by wcp-hall demo"])
        .env_remove("WCP_HALL_SOCKET")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            failed(
                "approved",
                format!("cannot run wcp-hall approvals approve: {e}"),
            )
        })?;
    let elapsed = t.elapsed();
    if !approve.status.success() {
        return Err(failed(
            "approved",
            format!(
                "`wcp-hall approvals approve {approval_id}` exited {}: {}",
                approve.status.code().unwrap_or(-1),
                String::from_utf8_lossy(&approve.stderr).trim()
            ),
        ));
    }
    let answer: Value = serde_json::from_slice(&approve.stdout).map_err(|e| {
        failed(
            "approved",
            format!("`approvals approve --json` printed no JSON: {e}"),
        )
    })?;
    // The operator's answer says what happened, never the worker's result: that belongs to the
    // agent that asked, which collects it as the requester (its uid, its tenant).
    if answer["approval"]["status"] != "approved" || answer["response"]["status"] != "completed" {
        let d = Dispatched {
            body: answer["response"].clone(),
            elapsed,
        };
        return Err(not_completed("approved", &d));
    }
    let collected = hall
        .call(
            Method::GET,
            &format!("/wcp/approvals/{approval_id}?tenant_id={TENANT}&wait_ms=10000"),
            None,
        )
        .map_err(|e| failed("approved", e))?;
    let elapsed = t.elapsed();
    let response = &collected.body["response"];
    let greeting = response["result"]["greeting"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    if !collected.status.is_success() || response["status"] != "completed" || greeting.is_empty() {
        let d = Dispatched {
            body: response.clone(),
            elapsed,
        };
        return Err(not_completed("approved", &d));
    }
    pr.step(
        "approved",
        &format!(
            "                      `wcp-hall approvals approve {approval_id}` → approved; the agent collected: {greeting:?}"
        ),
        json!({
            "pending_approval_id": approval_id, "approval_status": answer["approval"]["status"],
            "status": response["status"], "greeting": greeting,
            "correlation_id": response["result"]["correlation_id"],
            "duration_ms": ms(elapsed),
        }),
    )?;

    // Stop the Hall, then verify what it wrote, offline.
    pr.text("")?;
    pr.text("Evidence:")?;
    let status = s
        .hall
        .as_mut()
        .map(|h| h.stop(Duration::from_secs(15)))
        .transpose()?
        .ok_or_else(|| failed("hall_stopped", "the Hall is not running"))?;
    s.hall = None;
    interruptible(|g| g.hall_pid = None);
    if !status.success() {
        return Err(failed(
            "hall_stopped",
            format!(
                "the Hall exited with {status} after SIGTERM{}",
                status
                    .signal()
                    .map(|s| format!(" (signal {s})"))
                    .unwrap_or_default()
            ),
        ));
    }
    pr.step(
        "hall_stopped",
        "  hall stopped        SIGTERM, exit 0",
        json!({"exit_code": status.code()}),
    )?;
    let log_dir = dir.join("state/receipts");
    if !log_dir.is_dir() {
        return Err(failed(
            "receipts_verified",
            format!("the Hall wrote no receipt log at {}", log_dir.display()),
        ));
    }
    let t = Instant::now();
    let report = verify_log(
        &log_dir,
        &VerifyOptions {
            anchors: vec![receipt_key.public()],
            checkpoints: Vec::new(),
        },
    )
    .map_err(|e| failed("receipts_verified", format!("{}: {e}", log_dir.display())))?;
    let verify_time = t.elapsed();
    if !report.ok() {
        return Err(failed(
            "receipts_verified",
            format!(
                "the receipt log does not verify: {} problem(s), first: {}",
                report.failure_count,
                report
                    .first_failure
                    .as_ref()
                    .map(|f| format!("seq {:?}: {}", f.seq, f.reason))
                    .unwrap_or_default()
            ),
        ));
    }
    let kinds = receipt_kinds(&log_dir).map_err(|e| {
        failed(
            "receipts_verified",
            format!("reading {}: {e}", log_dir.display()),
        )
    })?;
    let count =
        |cid: &str, kind: Kind| kinds.iter().filter(|(c, k)| c == cid && *k == kind).count();
    let pipeline_executed = count(&cid, Kind::Executed);
    let tamper_ran = count(&tamper_cid, Kind::Intent) + count(&tamper_cid, Kind::Executed);
    let tamper_denied = count(&tamper_cid, Kind::Denied);
    if pipeline_executed != 5 || tamper_ran != 0 || tamper_denied == 0 {
        return Err(failed(
            "receipts_verified",
            format!(
                "the receipts do not tell the story: {pipeline_executed} executed receipt(s) for the pipeline (expected 5), {tamper_denied} denied and {tamper_ran} intent/executed for the tampered dispatch (expected at least 1 and 0)"
            ),
        ));
    }
    let checkpoints_ok = report.checkpoints.iter().filter(|c| c.ok).count();
    pr.step(
        "receipts_verified",
        &format!(
            "  {} receipts verified (Ed25519 signatures, hash chain, Merkle tree, {checkpoints_ok} signed checkpoints) in {} ms\n                      pipeline: 5 executed under {cid}; tampered dispatch: denied, nothing executed",
            report.records,
            ms(verify_time)
        ),
        json!({
            "records": report.records, "passed": report.passed,
            "signatures_checked": report.signatures_checked, "root": report.root,
            "checkpoints_ok": checkpoints_ok, "pipeline_executed": pipeline_executed,
            "tampered_denied": tamper_denied, "tampered_executed": tamper_ran,
            "log_dir": log_dir, "duration_ms": ms(verify_time),
        }),
    )?;

    // Where everything is.
    let knowledge = find_file(&dir.join("state"), "research.sqlite3", 6);
    pr.text("")?;
    pr.text(&format!(
        "Where everything is, in {}{}:",
        dir.display(),
        if args.keep {
            ""
        } else {
            " (removed on exit; --keep keeps it)"
        }
    ))?;
    let rows: Vec<(&str, PathBuf, &str)> = vec![
        ("config", config_path.clone(), ""),
        ("rules", dir.join("rules.json"), ""),
        ("registry", registry.clone(), ""),
        ("trust policy", trust_path.clone(), ""),
        ("package key", keys.join("packages.key"), " (+ .pub)"),
        ("receipt key", keys.join("receipts.key"), " (+ .pub)"),
        ("signed packages", dir.join("packages"), ""),
        ("package store", dir.join("state/store"), ""),
        ("receipt log", log_dir.clone(), ""),
        ("knowledge store", knowledge.clone().unwrap_or_default(), ""),
        ("hall log", dir.join("hall.log"), ""),
    ];
    let mut human = String::new();
    for (i, (k, v, note)) in rows.iter().enumerate() {
        if i > 0 {
            human.push('\n');
        }
        let shown = if v.as_os_str().is_empty() {
            "(not found)".to_owned()
        } else {
            v.strip_prefix(&dir)
                .map(|r| r.display().to_string())
                .unwrap_or_else(|_| v.display().to_string())
        };
        human.push_str(&format!("  {k:<18}{shown}{note}"));
    }
    if args.keep {
        human.push_str(&format!(
            "\n  verify again      wcp-hall receipts verify --log {} --pubkey {}",
            log_dir.display(),
            keys.join("receipts.key.pub").display()
        ));
    }
    let mut locations: serde_json::Map<String, Value> = rows
        .iter()
        .map(|(k, v, _)| (k.replace(' ', "_"), json!(v)))
        .collect();
    locations.insert("directory".into(), json!(dir));
    pr.step("locations", &human, json!({"locations": locations}))?;
    pr.text("")?;
    pr.text(&format!(
        "Done in {:.1} s.",
        started.elapsed().as_secs_f64()
    ))?;
    Ok(())
}

/// (correlation id, kind) of every dispatch receipt in a log directory.
fn receipt_kinds(dir: &Path) -> std::io::Result<Vec<(String, Kind)>> {
    use crate::receipt::model::LogLine;
    use crate::receipt::store;
    let mut out = Vec::new();
    for seg in store::list_segments(dir)? {
        let data = store::read_segment(&seg.path)?;
        let (lines, _) = store::split_lines(&data);
        for l in lines {
            let Ok(line) = LogLine::parse(l.bytes) else {
                continue;
            };
            let Ok(bytes) = line.payload_bytes() else {
                continue;
            };
            if let Ok(p) = ReceiptPayload::decode(&bytes)
                && let Some(d) = &p.dispatch
            {
                out.push((d.correlation_id.clone(), p.kind));
            }
        }
    }
    Ok(out)
}

/// `wcp-hall demo`.
pub fn run(args: DemoArgs, out: &mut Out) -> Result<u8, CliError> {
    let (workers_dir, policies_dir) = locate_sources(&args)?;
    guard_interrupts();
    let mut session: Option<Session> = None;
    let json = out.json;
    let mut pr = Printer { out };
    let outcome = run_steps(&args, &workers_dir, &policies_dir, &mut session, &mut pr);
    if INTERRUPTED.load(Ordering::Acquire) {
        // The signal thread is cleaning up and will exit 130; a step failing because its Hall
        // was killed is not the story to tell.
        let _wait = INTERRUPT.lock();
        loop {
            std::thread::park();
        }
    }
    let dir = session.as_ref().map(|s| s.dir.clone());
    let removed = match session.as_mut() {
        Some(s) => s.close(),
        None => Ok(false),
    };
    if let Err(f) = outcome {
        if f.step == "output" {
            return Err(CliError::new(exit::IOERR, "output_error", f.message));
        }
        if json {
            let _ = pr.out.json_line(&json!({
                "step": f.step, "ok": false, "error": f.message, "hint": f.hint,
                "dir": dir, "kept": args.keep,
            }));
        }
        let mut e = CliError::new(
            exit::DENIED,
            "demo_failed",
            format!("demo step {:?} failed: {}", f.step, f.message),
        );
        let keep_hint = if args.keep {
            dir.map(|d| format!("everything is kept in {}", d.display()))
        } else {
            Some("rerun with --keep to inspect the directory (hall.log, state/)".to_owned())
        };
        let hint = [f.hint, keep_hint]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>();
        if !hint.is_empty() {
            e = e.hint(hint.join("; "));
        }
        return Err(e);
    }
    let dir = dir.unwrap_or_default();
    match removed {
        Ok(true) => pr.step(
            "cleanup",
            &format!("Removed {}.", dir.display()),
            json!({"dir": dir, "removed": true, "kept": false}),
        ),
        Ok(false) => pr.step(
            "cleanup",
            &format!("Kept {}.", dir.display()),
            json!({"dir": dir, "removed": false, "kept": true}),
        ),
        Err(e) => {
            return Err(CliError::new(
                exit::IOERR,
                "cleanup_failed",
                format!("cannot remove {}: {e}", dir.display()),
            ));
        }
    }
    .map_err(|f| CliError::new(exit::IOERR, "output_error", f.message))?;
    Ok(exit::OK)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::mint_context;
    use crate::conformance::FixedGate;
    use crate::registry::{ControlsScope, Registry};
    use crate::router::{self, GateAnswer, Router, RouterConfig};
    use crate::rules::RuleSet;
    use crate::wcp::RouteInput;

    /// The rules the demo copies: the bundled `policies/rules.json`.
    fn rules() -> RuleSet {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("policies")
            .join(RULES_FILE);
        RuleSet::from_json_str(&std::fs::read_to_string(path).unwrap())
            .expect("the bundled rules load")
    }

    #[test]
    fn the_bundled_rules_load_without_shadows() {
        let r = rules();
        assert_eq!(r.rules().len(), 19);
        assert!(r.shadows().is_empty(), "{:?}", r.shadows());
    }

    fn bundled_registry() -> Registry {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("workers");
        let records = PACKAGES
            .iter()
            .map(|p| {
                let text = std::fs::read_to_string(dir.join(p).join("record.json")).unwrap();
                RegistryRecord::from_json_str(&text).unwrap()
            })
            .collect();
        Registry::new(records, ControlsScope::PerWorker)
    }

    /// Every request the demo sends routes to the intended rule and worker with the bundled
    /// records (a gate that allows; the Hall's real gate is exercised by tests/demo.rs).
    #[test]
    fn demo_requests_route_to_the_intended_rules_and_workers() {
        let rules = rules();
        let registry = bundled_registry();
        let config = RouterConfig {
            require_signatory: true,
            allowed_tenants: [TENANT.to_owned()].into_iter().collect(),
            enforce_privilege_envelopes: true,
            ..RouterConfig::default()
        };
        let gate = FixedGate(GateAnswer {
            decision: "ALLOW".into(),
            policy_version: "test".into(),
            reason: "test".into(),
            supervisor_level: None,
        });
        let router = Router {
            rules: &rules,
            registry: &registry,
            config: &config,
            gate: Some(&gate),
            hashes: None,
            privilege: Some(&registry),
            human_approval: None,
        };
        for (cap, label, rule, species) in [
            (
                "cap.web.fetch",
                "PUBLIC",
                "rr_fetch_dev",
                Some("wrk.web.fetcher"),
            ),
            (
                "cap.doc.chunk",
                "PUBLIC",
                "rr_chunk_dev",
                Some("wrk.doc.chunker"),
            ),
            (
                "cap.ml.embed",
                "PUBLIC",
                "rr_embed_dev",
                Some("wrk.ml.embedder"),
            ),
            (
                "cap.doc.hash",
                "PUBLIC",
                "rr_hash_dev",
                Some("wrk.doc.hasher"),
            ),
            (
                "cap.research.register",
                "PUBLIC",
                "rr_register_dev",
                Some("wrk.research.registrar"),
            ),
            (
                "cap.hello.greet",
                "PUBLIC",
                "rr_hello_dev",
                Some("wrk.hello.greeter"),
            ),
            (
                "cap.hello.greet",
                "RESTRICTED",
                "rr_hello_restricted_dev",
                Some("wrk.hello.greeter"),
            ),
            (UNKNOWN_CAPABILITY, "PUBLIC", "NO_MATCH", None),
        ] {
            let input =
                RouteInput::from_value(&route_input(cap, label, "cid-1", json!({}))).unwrap();
            let d = router::route(&router, &input, &mint_context("t"));
            assert_eq!(
                d.matched_rule_id, rule,
                "{cap} {label}: {:?}",
                d.deny_reason_if_denied
            );
            assert_eq!(d.selected_worker_species_id.as_deref(), species, "{cap}");
            assert_eq!(
                d.denied,
                species.is_none(),
                "{cap}: {:?}",
                d.deny_reason_if_denied
            );
        }
    }

    #[test]
    fn the_envelope_summary_names_what_was_enforced() {
        let r = json!({
            "schema": REPORT_SCHEMA,
            "landlock": {"effective": "enforced", "abi_effective": 6, "tcp_connect_ports": [18080]},
            "network": {"effective": "enforced", "mode": "landlock_tcp_ports"},
            "seccomp": {"effective": "enforced"},
            "pid_namespace": {"effective": "enforced"},
            "cgroup": {"effective": "off"},
            "identity": {"effective": "enforced", "uid": 65534},
            "filesystem": {"writes": [{"declared": "knowledge/", "granted": "/w/state/data/x/knowledge"}]},
            "degraded": [],
        });
        let wrapped = json!({"execution": {"summary": {"envelope": r}}});
        let found = find_report(&wrapped).expect("found anywhere in the answer");
        let (line, data) = envelope_summary(found, Path::new("/w"));
        assert_eq!(
            line,
            "landlock enforced (ABI 6) · network enforced (tcp connect to port 18080 only) · seccomp enforced · pid ns enforced · cgroup off · uid 65534 · writes only state/data/x/knowledge"
        );
        assert_eq!(data["uid"], 65534);
        assert!(find_report(&json!({"execution": {}})).is_none());
    }

    #[test]
    fn the_fixture_server_serves_one_document_and_counts() {
        let mut s = FixtureServer::start(b"hello document\n".to_vec()).unwrap();
        let get = |path: &str| {
            let mut c = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
            write!(c, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
            let mut text = String::new();
            c.read_to_string(&mut text).unwrap();
            text
        };
        let ok = get("/document.txt");
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains("Content-Type: text/plain; charset=utf-8"));
        assert!(ok.ends_with("\r\n\r\nhello document\n"));
        assert!(get("/etc/passwd").starts_with("HTTP/1.1 404"));
        assert_eq!(s.hits(), 1);
        s.shutdown();
    }

    #[test]
    fn remove_tree_removes_read_only_store_copies() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("w");
        let ro = root.join("store/sha256-x/code");
        std::fs::create_dir_all(&ro).unwrap();
        std::fs::write(ro.join("f.py"), "x").unwrap();
        for d in [&ro, &root.join("store/sha256-x")] {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o555)).unwrap();
        }
        remove_tree(&root).unwrap();
        assert!(!root.exists());
        remove_tree(&root).unwrap();
    }
}
