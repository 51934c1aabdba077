//! The Hall the demo runs: `wcp-hall serve` as a child on a private socket, the HTTP client
//! for its API, and reading its answers (dispatch status, deny codes, the envelope report).
//!
//! Owns the child process (started with an empty signal mask and a parent-death signal,
//! stopped with SIGTERM, killed on drop); it must not decide the demo's steps, only report
//! what the Hall answered.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hyper::{Method, StatusCode};
use serde_json::{Value, json};

use super::{Failed, Step, TENANT, failed};
use crate::client;
use crate::envelope::REPORT_SCHEMA;

/// Children start with an empty signal mask (the demo blocks SIGINT/SIGTERM/SIGHUP in all its
/// threads for its own cleanup, and the mask is inherited across exec) and, for the Hall, with
/// a parent-death signal so it stops if the demo dies without cleaning up.
#[allow(unsafe_code)] // Command::pre_exec is unsafe
pub(super) fn child_defaults(cmd: &mut Command, parent_death: bool) {
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

/// The Hall child and a client for its socket.
pub(super) struct HallProcess {
    pub(super) child: Child,
    pub(super) socket: PathBuf,
    pub(super) log: PathBuf,
    pub(super) runtime: tokio::runtime::Runtime,
}

impl HallProcess {
    pub(super) fn start(exe: &Path, config: &Path, socket: &Path, log: &Path) -> Step<Self> {
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

    pub(super) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(super) fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(12)..].join("\n")
    }

    pub(super) fn call(
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
    pub(super) fn wait_healthy(&mut self, within: Duration) -> Step<Value> {
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
    pub(super) fn stop(&mut self, within: Duration) -> Step<std::process::ExitStatus> {
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
    /// A Hall the demo leaves early (a failed step) is stopped as an operator would stop it
    /// (SIGTERM: it stops its warm instances and unmounts their scratch), killed only if it
    /// does not stop within 5 s.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait()
            && self.stop(Duration::from_secs(5)).is_err()
        {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One dispatch's answer and how long the round trip took.
pub(super) struct Dispatched {
    pub(super) body: Value,
    pub(super) elapsed: Duration,
}

impl Dispatched {
    pub(super) fn status(&self) -> &str {
        self.body["status"].as_str().unwrap_or("unknown")
    }
    pub(super) fn deny_code(&self) -> Option<&str> {
        self.body["decision"]["deny_reason_if_denied"]["code"].as_str()
    }
    pub(super) fn deny_message(&self) -> &str {
        self.body["decision"]["deny_reason_if_denied"]["message"]
            .as_str()
            .unwrap_or("")
    }
    pub(super) fn rule(&self) -> &str {
        self.body["decision"]["matched_rule_id"]
            .as_str()
            .unwrap_or("?")
    }
}

/// The ids of the Cedar policies that determined a gate answer.
pub(super) fn policy_ids(body: &Value) -> Vec<String> {
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

pub(super) fn route_input(cap: &str, label: &str, cid: &str, request: Value) -> Value {
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

pub(super) fn dispatch(hall: &HallProcess, step: &'static str, body: &Value) -> Step<Dispatched> {
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
        return Err(failed(
            step,
            format!(
                "the Hall answered {} {code}: {message}",
                answer.status.as_u16()
            ),
        ));
    }
    Ok(Dispatched {
        body: answer.body,
        elapsed,
    })
}

/// The envelope report (`wcp-hall.envelope-report/1`) anywhere in an answer.
pub(super) fn find_report(v: &Value) -> Option<&Value> {
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
pub(super) fn envelope_summary(r: &Value, base: &Path) -> (String, Value) {
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
pub(super) fn not_completed(step: &'static str, d: &Dispatched) -> Failed {
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
