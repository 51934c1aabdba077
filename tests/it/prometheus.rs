//! The metrics against the real tools, end to end: a real Hall with its TCP metrics listener on
//! an ephemeral loopback port, a dispatch through its Unix socket, `promtool check metrics` on
//! what the listener serves, and a real Prometheus scraping it every second until its query API
//! answers `wcp_hall_dispatches_total`. `.ci/run` installs both tools (Debian package
//! `prometheus`); without them these tests fail, they never skip.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hyper::Method;
use serde_json::{Value, json};

use crate::hall_support::{BIN, repo};

/// The path of an installed tool, or a loud failure saying how to get it.
fn tool(name: &str) -> PathBuf {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/bin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "{name} is not installed: these tests need promtool and prometheus (Debian: \
                 apt-get install --no-install-recommends prometheus; .ci/run installs them)"
            )
        })
}

/// A free TCP port on 127.0.0.1 (bound, read, released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One HTTP/1.0 GET on 127.0.0.1:`port`: (status, body).
fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// Kills and reaps a child when dropped.
struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A Hall in a temporary directory: hello routed in dev without a policy gate, the caller's uid
/// acting as acme-corp, and `metrics_toml` appended.
struct Hall {
    dir: tempfile::TempDir,
    socket: PathBuf,
    child: Option<Killed>,
}

impl Hall {
    fn prepare(metrics_toml: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let rules = json!({"rules": [
            {"rule_id": "rr_hello_dev", "match": {"capability_id": "cap.hello.greet", "env": "dev"},
             "decision": {"candidate_workers_ranked": [{"worker_species_id": "wrk.hello.greeter"}],
                          "required_controls_suggested": ["ctrl.obs.audit-log-append-only"]}}
        ]});
        std::fs::write(dir.path().join("rules.json"), rules.to_string()).unwrap();
        let reg = dir.path().join("registry");
        std::fs::create_dir(&reg).unwrap();
        std::fs::copy(
            repo("policies/registry/org.wcp-hall.hello.1.json"),
            reg.join("org.wcp-hall.hello.1.json"),
        )
        .unwrap();
        wcp_hall::crypto::KeyPair::generate()
            .unwrap()
            .write(&dir.path().join("receipts.key"))
            .unwrap();
        let uid = nix::unistd::getuid().as_raw();
        let config = format!(
            r#"[hall]
require_signatory = true
allowed_tenants = ["acme-corp"]

[paths]
rules = "rules.json"
registry_dir = "registry"
state_dir = "{state}"

[receipts]
signing_key = "receipts.key"

[identity]
operator_uids = [{uid}]
[[identity.peers]]
uid = {uid}
tenants = ["acme-corp"]

{metrics_toml}
"#,
            state = dir.path().join("state").display()
        );
        std::fs::write(dir.path().join("hall.toml"), config).unwrap();
        Hall {
            socket: dir.path().join("hall.sock"),
            dir,
            child: None,
        }
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", "-c"])
            .arg(self.dir.path().join("hall.toml"))
            .arg("-s")
            .arg(&self.socket)
            .stdout(Stdio::null());
        cmd
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("hall.log")).unwrap_or_default()
    }

    fn start(mut self) -> Self {
        let log = std::fs::File::create(self.dir.path().join("hall.log")).unwrap();
        let child = self.command().stderr(log).spawn().unwrap();
        self.child = Some(Killed(child));
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.call(Method::GET, "/wcp/health", None).is_err() {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.0.try_wait()) {
                panic!("wcp-hall serve exited early ({status}): {}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "the Hall did not come up: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        self
    }

    fn call(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Value, String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(wcp_hall::client::call(
            &self.socket,
            method,
            path,
            body,
            Duration::from_secs(30),
        ))
        .map(|a| a.body)
        .map_err(|e| e.to_string())
    }
}

fn dispatch_input(capability: &str, dry_run: bool) -> Value {
    json!({"capability_id": capability, "env": "dev", "data_label": "PUBLIC", "tenant_risk": "low",
           "qos_class": "P2", "tenant_id": "acme-corp", "correlation_id": uuid::Uuid::new_v4().to_string(),
           "request": {"name": "Ada"}, "dry_run": dry_run})
}

/// `promtool check metrics` on `text`: (exit code, everything it said).
fn promtool_check(text: &str) -> (Option<i32>, String) {
    let mut child = Command::new(tool("promtool"))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The value of the sample `series` (name and labels exactly as exposed).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn promtool_accepts_the_exposition_and_a_real_prometheus_scrapes_the_tcp_listener() {
    let promtool = tool("promtool");
    let prometheus = tool("prometheus");
    let metrics_port = free_port();
    let hall = Hall::prepare(&format!(
        "[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n"
    ))
    .start();

    // (a) One dry run and one denial through the Unix socket.
    let out = hall
        .call(
            Method::POST,
            "/wcp/dispatch",
            Some(&dispatch_input("cap.hello.greet", true)),
        )
        .unwrap();
    assert_eq!(out["status"], "dry_run", "{out}");
    let out = hall
        .call(
            Method::POST,
            "/wcp/dispatch",
            Some(&dispatch_input("cap.nothing.routes.this", false)),
        )
        .unwrap();
    assert_eq!(out["status"], "denied", "{out}");

    // The TCP listener: /metrics, and 404 for everything else.
    let (status, text) = http_get(metrics_port, "/metrics").unwrap();
    assert_eq!(status, 200, "{text}");
    for path in ["/wcp/health", "/wcp/version", "/_ping", "/", "/metrics/x"] {
        assert_eq!(http_get(metrics_port, path).unwrap().0, 404, "{path}");
    }
    assert_eq!(
        sample(&text, "wcp_hall_dispatches_total{status=\"dry_run\"}"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "wcp_hall_dispatches_total{status=\"denied\"}"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "wcp_hall_dispatches_total{status=\"completed\"}"),
        Some(0.0),
        "known series are there at 0: {text}"
    );
    assert_eq!(
        sample(
            &text,
            "wcp_hall_decisions_total{outcome=\"denied\",code=\"DENY_NO_MATCHING_RULE\"}"
        ),
        Some(1.0),
        "{text}"
    );
    // The denial is the log's one record, made durable by (at least) one fdatasync.
    let records = sample(&text, "wcp_hall_receipt_records").unwrap_or_default();
    let syncs = sample(&text, "wcp_hall_receipt_fdatasyncs").unwrap_or_default();
    assert!(
        records >= 1.0 && (1.0..=records).contains(&syncs),
        "records {records}, fdatasyncs {syncs}: {text}"
    );
    assert_eq!(
        sample(&text, "wcp_hall_requests_total{endpoint=\"resolve\"}"),
        Some(0.0),
        "{text}"
    );
    for family in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "process_start_time_seconds",
    ] {
        assert!(
            text.contains(&format!("# TYPE {family} ")),
            "{family}: {text}"
        );
    }
    let build = format!(
        "wcp_hall_build_info{{version=\"{}\",git_commit=\"",
        env!("CARGO_PKG_VERSION")
    );
    assert!(text.contains(&build), "{text}");
    // The Unix socket serves the same families.
    let unix = hall.call(Method::GET, "/metrics", None).unwrap();
    assert!(
        unix.as_str()
            .unwrap_or_default()
            .contains("# HELP wcp_hall_dispatches_total "),
        "{unix}"
    );

    // (b) promtool: it catches a family without help (what the Hall served before), and has
    // nothing to say about the Hall's exposition.
    let (code, said) = promtool_check("# TYPE x_total counter\nx_total 1\n");
    assert_ne!(
        code,
        Some(0),
        "promtool must reject a family without help: {said}"
    );
    assert!(said.contains("no help text"), "{said}");
    let (code, said) = promtool_check(&text);
    assert_eq!(
        code,
        Some(0),
        "{} check metrics failed:\n{said}\n--- exposition ---\n{text}",
        promtool.display()
    );
    assert!(said.trim().is_empty(), "promtool said: {said}");

    // (c) A real Prometheus scraping the listener every second.
    let dir = tempfile::tempdir().unwrap();
    let web_port = free_port();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: wcp-hall\n    scrape_interval: 1s\n    scrape_timeout: 1s\n\
             \x20   static_configs:\n      - targets: ['127.0.0.1:{metrics_port}']\n"
        ),
    )
    .unwrap();
    let check = Command::new(&promtool)
        .args(["check", "config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "promtool check config: {}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    let log_path = dir.path().join("prometheus.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let child = Command::new(&prometheus)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{web_port}"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("prometheus starts");
    let mut prometheus_child = Killed(child);
    let prometheus_log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut last = String::new();
    let result = loop {
        if let Ok(Some(status)) = prometheus_child.0.try_wait() {
            panic!("prometheus exited ({status}):\n{}", prometheus_log());
        }
        if let Ok((200, body)) = http_get(web_port, "/api/v1/query?query=wcp_hall_dispatches_total")
        {
            let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            if v["status"] == "success"
                && v["data"]["result"]
                    .as_array()
                    .is_some_and(|r| !r.is_empty())
            {
                break v["data"]["result"].as_array().unwrap().clone();
            }
            last = body;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never had wcp_hall_dispatches_total; last answer: {last}\nprometheus log:\n{}\nhall log:\n{}",
            prometheus_log(),
            hall.log()
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    // Every status is a series; the dry run and the denial are counted once each.
    let value = |status: &str| -> Option<String> {
        result
            .iter()
            .find(|s| s["metric"]["status"] == status)
            .and_then(|s| s["value"][1].as_str())
            .map(str::to_owned)
    };
    for status in [
        "completed",
        "failed",
        "denied",
        "dry_run",
        "pending_approval",
        "error",
    ] {
        assert!(value(status).is_some(), "no {status} series in {result:?}");
    }
    assert_eq!(value("dry_run").as_deref(), Some("1"), "{result:?}");
    assert_eq!(value("denied").as_deref(), Some("1"), "{result:?}");
    assert_eq!(value("completed").as_deref(), Some("0"), "{result:?}");
    assert!(
        result.iter().all(|s| s["metric"]["job"] == "wcp-hall"),
        "{result:?}"
    );
    // Prometheus's own view of the target: up, and scraped without errors.
    let (_, up) = http_get(web_port, "/api/v1/query?query=up").unwrap();
    let up: Value = serde_json::from_str(&up).unwrap();
    assert_eq!(up["data"]["result"][0]["value"][1], "1", "{up}");
    prometheus_child.0.kill().unwrap();
    let _ = prometheus_child.0.wait();
}

#[test]
fn a_non_loopback_metrics_address_is_a_configuration_error_with_a_hint() {
    let hall = Hall::prepare("[metrics]\nlisten = \"0.0.0.0:9464\"\n");
    let out = hall.command().output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(
        stderr.contains("[metrics] listen 0.0.0.0:9464 is not a loopback address"),
        "{stderr}"
    );
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with("hint: ") && l.contains("allow_remote = true")),
        "{stderr}"
    );
    assert!(!Path::new(&hall.socket).exists(), "nothing was bound");
    // A port another process holds: the start fails and says so.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let hall = Hall::prepare(&format!("[metrics]\nlisten = \"127.0.0.1:{port}\"\n"));
    let out = hall.command().output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(stderr.contains("another process listens"), "{stderr}");
    assert!(
        !Path::new(&hall.socket).exists(),
        "the API socket bound before the metrics listener failed is removed again"
    );
}
