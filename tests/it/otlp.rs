//! OpenTelemetry traces end to end: a real Hall exports its dispatch spans over OTLP/HTTP to a
//! receiver that decodes them with the official OpenTelemetry protobuf definitions (PyPI
//! `opentelemetry-proto`, in a venv under target/); and a dispatch with no receiver listening
//! still succeeds promptly.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hyper::Method;
use serde_json::{Value, json};
use wcp_hall::client;

use crate::hall_support::{BIN, native_hello_package, package_key, repo};

/// The receiver's requirements; the venv's directory is keyed by them.
const REQUIREMENTS: &str = "opentelemetry-proto>=1.20\n";

/// A Python with `opentelemetry-proto` (a venv under target/, see `python_venv`).
fn otlp_python() -> PathBuf {
    crate::venv::python_venv(
        "otlp",
        REQUIREMENTS,
        "import opentelemetry.proto.collector.trace.v1.trace_service_pb2",
    )
    .join("bin/python")
}

/// The OTLP receiver: a child process and the file of spans it decoded.
struct Receiver {
    child: Child,
    port: u16,
    spans: PathBuf,
}

impl Receiver {
    fn start(dir: &Path) -> Self {
        let spans = dir.join("spans.jsonl");
        let mut child = Command::new(otlp_python())
            .arg(repo("tests/it/otlp/receiver.py"))
            .arg(&spans)
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the OTLP receiver");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line.trim().parse().expect("the receiver prints its port");
        Receiver { child, port, spans }
    }

    /// Waits until a span named `name` arrived; returns every span so far.
    fn wait_for(&self, name: &str) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let spans: Vec<Value> = std::fs::read_to_string(&self.spans)
                .unwrap_or_default()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            if spans.iter().any(|s| s["name"] == name) {
                return spans;
            }
            assert!(
                Instant::now() < deadline,
                "no {name} span arrived: {spans:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Hall with the native hello worker attested and `[tracing]` pointing at `port`.
struct TracedHall {
    dir: tempfile::TempDir,
    child: Child,
    runtime: tokio::runtime::Runtime,
}

impl TracedHall {
    fn start(port: u16) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let rules = json!({"rules": [
            {"rule_id": "rr_hello_native", "match": {"capability_id": "cap.hello.greet", "env": "dev"},
             "decision": {"candidate_workers_ranked": [{"worker_species_id": "wrk.hello.native"}],
                          "required_controls_suggested": ["ctrl.obs.audit-log-append-only"]}}]});
        std::fs::write(d.join("rules.json"), rules.to_string()).unwrap();
        std::fs::create_dir(d.join("registry")).unwrap();
        std::fs::create_dir(d.join("keys")).unwrap();
        wcp_hall::crypto::KeyPair::generate()
            .unwrap()
            .write(&d.join("keys/receipts.key"))
            .unwrap();
        let (pkg, record) = native_hello_package(d);
        crate::hall_support::sign_and_enroll(&package_key(d), &pkg, &record, &d.join("registry"));
        std::fs::write(
            d.join("hall.toml"),
            format!(
                r#"[hall]
require_signatory = true
allowed_tenants = ["acme-corp"]
require_worker_attestation = true

[paths]
rules = "rules.json"
registry_dir = "registry"
state_dir = "state"

[receipts]
signing_key = "keys/receipts.key"

[identity]
operator_uids = [0]
[[identity.peers]]
uid = 0
tenants = ["acme-corp"]

[attestation]
trust_policy = "trust.json"

[tracing]
endpoint = "http://127.0.0.1:{port}/v1/traces"
sampling_ratio = 1.0
headers = {{ x-test = "yes" }}
"#
            ),
        )
        .unwrap();
        let log = std::fs::File::create(d.join("hall.log")).unwrap();
        let child = Command::new(BIN)
            .args(["serve", "-c"])
            .arg(d.join("hall.toml"))
            .arg("-s")
            .arg(d.join("hall.sock"))
            .env("RUST_LOG", "info")
            .env("OTEL_SERVICE_NAME", "hall-under-test")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        let hall = TracedHall {
            dir,
            child,
            runtime,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while hall
            .dispatch_raw(Method::GET, "/wcp/health", None, &[])
            .is_err()
        {
            assert!(Instant::now() < deadline, "no Hall: {}", hall.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        hall
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("hall.log")).unwrap_or_default()
    }

    fn dispatch_raw(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, String)],
    ) -> Result<(u16, Value), client::ClientError> {
        self.runtime
            .block_on(client::call_with_headers(
                &self.dir.path().join("hall.sock"),
                method,
                path,
                body,
                Duration::from_secs(30),
                headers,
            ))
            .map(|a| (a.status.as_u16(), a.body))
    }

    fn dispatch(&self, headers: &[(&str, String)]) -> Value {
        let body = json!({"capability_id": "cap.hello.greet", "env": "dev", "data_label": "PUBLIC",
            "tenant_risk": "low", "qos_class": "P2", "tenant_id": "acme-corp",
            "correlation_id": uuid::Uuid::new_v4().to_string(), "request": {"name": "Ada"}});
        let (s, out) = self
            .dispatch_raw(Method::POST, "/wcp/dispatch", Some(&body), headers)
            .unwrap_or_else(|e| panic!("{e}: {}", self.log()));
        assert_eq!(s, 200, "{out}; {}", self.log());
        assert_eq!(out["status"], "completed", "{out}; {}", self.log());
        out
    }
}

impl Drop for TracedHall {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn dispatch_spans_reach_an_otlp_receiver_as_children_of_the_callers_span() {
    let scratch = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(scratch.path());
    let hall = TracedHall::start(receiver.port);
    let (trace_id, caller_span) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let out = hall.dispatch(&[
        ("traceparent", format!("00-{trace_id}-{caller_span}-01")),
        ("tracestate", "vendor=value".to_owned()),
    ]);
    let spans = receiver.wait_for("wcp.dispatch");
    let spans = if spans.iter().any(|s| s["name"] == "wcp.outcome_receipt") {
        spans
    } else {
        receiver.wait_for("wcp.outcome_receipt")
    };
    let dispatch = spans.iter().find(|s| s["name"] == "wcp.dispatch").unwrap();
    assert_eq!(dispatch["trace_id"], trace_id, "{dispatch}");
    assert_eq!(dispatch["parent_span_id"], caller_span, "{dispatch}");
    assert_eq!(dispatch["content_type"], "application/x-protobuf");
    assert_eq!(dispatch["x_test"], "yes", "[tracing] headers are sent");
    assert_eq!(dispatch["resource"]["service.name"], "hall-under-test");
    let a = &dispatch["attributes"];
    assert_eq!(a["wcp.capability_id"], "cap.hello.greet", "{a}");
    assert_eq!(a["wcp.tenant_id"], "acme-corp", "{a}");
    assert_eq!(a["wcp.worker_species_id"], "wrk.hello.native", "{a}");
    assert_eq!(a["wcp.status"], "completed", "{a}");
    assert_eq!(
        a["wcp.correlation_id"], out["decision"]["correlation_id"],
        "{a}"
    );
    // The receiver hands ints over as JSON numbers.
    assert_eq!(
        a["wcp.receipt_seq"], out["execution"]["receipt"]["seq"],
        "{a}"
    );
    let id = dispatch["span_id"].as_str().unwrap();
    for name in [
        "wcp.admission",
        "wcp.route",
        "wcp.verify",
        "wcp.intent_receipt",
        "wcp.envelope_run",
        "wcp.outcome_receipt",
    ] {
        let s = spans
            .iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("no {name} span: {spans:?}"));
        assert_eq!(s["parent_span_id"], id, "{s}");
        assert_eq!(s["trace_id"], trace_id, "{s}");
    }
    let route = spans.iter().find(|s| s["name"] == "wcp.route").unwrap();
    assert_eq!(
        route["attributes"]["wcp.worker_species_id"],
        "wrk.hello.native"
    );
    let intent = spans
        .iter()
        .find(|s| s["name"] == "wcp.intent_receipt")
        .unwrap();
    assert!(
        intent["attributes"]["wcp.receipt_seq"].is_number(),
        "{intent}"
    );
    // The worker got TRACEPARENT with the dispatch's trace id (it logs it on stderr).
    let run = spans
        .iter()
        .find(|s| s["name"] == "wcp.envelope_run")
        .unwrap();
    assert_eq!(run["attributes"]["wcp.exit_code"], 0, "{run}");
}

#[test]
fn a_dispatch_with_no_receiver_listening_succeeds_promptly() {
    // A port nobody listens on: bound, then closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let hall = TracedHall::start(port);
    for _ in 0..3 {
        let started = Instant::now();
        hall.dispatch(&[(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned(),
        )]);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "a dispatch took {:?} with the receiver down",
            started.elapsed()
        );
    }
}
