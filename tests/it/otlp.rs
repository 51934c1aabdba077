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

/// A Hall with the native hello worker attested and `[tracing]` pointing at `port` (no
/// `[tracing]` when `None`). A `prod` dispatch of [`TracedHall::dispatch_in`] needs a human's
/// approval.
struct TracedHall {
    dir: tempfile::TempDir,
    child: Child,
    runtime: tokio::runtime::Runtime,
}

impl TracedHall {
    fn start(port: Option<u16>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let rules = json!({"rules": [
            {"rule_id": "rr_hello_native", "match": {"capability_id": "cap.hello.greet", "env": "dev"},
             "decision": {"candidate_workers_ranked": [{"worker_species_id": "wrk.hello.native"}],
                          "required_controls_suggested": ["ctrl.obs.audit-log-append-only"]}},
            {"rule_id": "rr_hello_native_prod", "match": {"capability_id": "cap.hello.greet", "env": "prod"},
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

[approvals]
wait_ms = 100
{tracing}"#,
                tracing = port
                    .map(|port| format!(
                        r#"
[tracing]
endpoint = "http://127.0.0.1:{port}/v1/traces"
sampling_ratio = 1.0
headers = {{ x-test = "yes" }}
"#
                    ))
                    .unwrap_or_default()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(d.join("hall.log")).unwrap();
        let child = Command::new(BIN)
            .args(["serve", "-c"])
            .arg(d.join("hall.toml"))
            .arg("-s")
            .arg(d.join("hall.sock"))
            .args(["--log-format", "json"])
            .env("RUST_LOG", "info,wcp_hall=debug")
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

    /// The receipt at `seq`, as `wcp-hall receipts show` prints it.
    fn receipt(&self, seq: &Value) -> Value {
        let o = Command::new(BIN)
            .args(["--json", "receipts", "show", &seq.to_string(), "--log"])
            .arg(self.dir.path().join("state/receipts"))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice(&o.stdout).unwrap()
    }

    /// The Hall's JSON log lines whose request span names `correlation_id`.
    fn log_lines_of(&self, correlation_id: &str) -> Vec<Value> {
        self.log()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|l| l["span"]["correlation_id"] == correlation_id)
            .collect()
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
        let out = self.dispatch_in("dev", headers);
        assert_eq!(out["status"], "completed", "{out}; {}", self.log());
        out
    }

    /// One dispatch of hello in `env`; asserts only that the Hall answered 200.
    fn dispatch_in(&self, env: &str, headers: &[(&str, String)]) -> Value {
        let mut body = json!({"capability_id": "cap.hello.greet", "env": env, "data_label": "PUBLIC",
            "tenant_risk": "low", "qos_class": "P2", "tenant_id": "acme-corp",
            "correlation_id": uuid::Uuid::new_v4().to_string(), "request": {"name": "Ada"}});
        if env == "prod" {
            // Past the blast threshold: the router asks for a human.
            body["blast_score"] = json!(90);
        }
        let (s, out) = self
            .dispatch_raw(Method::POST, "/wcp/dispatch", Some(&body), headers)
            .unwrap_or_else(|e| panic!("{e}: {}", self.log()));
        assert_eq!(s, 200, "{out}; {}", self.log());
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
    let hall = TracedHall::start(Some(receiver.port));
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
    // The envelope's stages are the run span's events, in order, as the report lists them.
    let stages: Vec<&str> = run["events"]
        .as_array()
        .unwrap()
        .iter()
        .inspect(|e| assert_eq!(e["name"], "wcp.envelope.stage", "{e}"))
        .map(|e| e["attributes"]["wcp.stage"].as_str().unwrap())
        .collect();
    let reported: Vec<&str> = out["execution"]["summary"]["envelope"]["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["stage"].as_str().unwrap())
        .collect();
    assert_eq!(stages, reported, "{run}");
    assert!(
        stages.contains(&"landlock")
            && stages.contains(&"seccomp")
            && stages.last() == Some(&"exec")
    );
    let worker_log = out["result"]["stderr_tail"].as_str().unwrap_or_default();
    let stderr = out["execution"]["stderr_tail"]
        .as_str()
        .unwrap_or(worker_log);
    assert!(
        stderr.contains(trace_id),
        "the worker's log names the trace: {out}"
    );
    // The receipt records the Hall's dispatch span, so an auditor can go from evidence to trace.
    let receipt = hall.receipt(&out["execution"]["receipt"]["seq"]);
    let recorded = &receipt["payload"]["dispatch"]["trace"];
    assert_eq!(recorded["trace_id"], trace_id, "{receipt}");
    assert_eq!(recorded["span_id"], id, "{receipt}");
    // Every log line about the request names its correlation id and trace id.
    let correlation = out["decision"]["correlation_id"].as_str().unwrap();
    let lines = hall.log_lines_of(correlation);
    assert!(
        lines.iter().any(|l| l["fields"]["message"] == "answered"),
        "{lines:?}\n{}",
        hall.log()
    );
    for l in &lines {
        assert_eq!(l["span"]["trace_id"], trace_id, "{l}");
    }
}

#[test]
fn a_dispatch_with_no_receiver_listening_succeeds_promptly() {
    // A port nobody listens on: bound, then closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let hall = TracedHall::start(Some(port));
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

#[test]
fn an_approved_run_continues_the_trace_of_the_dispatch_that_asked_for_it() {
    let scratch = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(scratch.path());
    let hall = TracedHall::start(Some(receiver.port));
    let trace_id = "0af7651916cd43dd8448eb211c80319c";
    let pending = hall.dispatch_in(
        "prod",
        &[("traceparent", format!("00-{trace_id}-b7ad6b7169203331-01"))],
    );
    assert_eq!(pending["status"], "pending_approval", "{pending}");
    let id = pending["pending_approval_id"].as_str().unwrap();
    let o = Command::new(BIN)
        .args(["approvals", "approve", id, "--socket"])
        .arg(hall.dir.path().join("hall.sock"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let spans = receiver.wait_for("wcp.approval.complete");
    let spans = if spans.iter().any(|s| s["name"] == "wcp.outcome_receipt") {
        spans
    } else {
        receiver.wait_for("wcp.outcome_receipt")
    };
    let dispatch = spans.iter().find(|s| s["name"] == "wcp.dispatch").unwrap();
    assert_eq!(dispatch["attributes"]["wcp.status"], "pending_approval");
    let complete = spans
        .iter()
        .find(|s| s["name"] == "wcp.approval.complete")
        .unwrap();
    assert_eq!(complete["trace_id"], trace_id, "{complete}");
    assert_eq!(
        complete["parent_span_id"], dispatch["span_id"],
        "{complete}"
    );
    let a = &complete["attributes"];
    assert_eq!(a["wcp.pending_approval_id"], id, "{a}");
    assert_eq!(a["wcp.approval_status"], "approved", "{a}");
    assert_eq!(a["wcp.status"], "completed", "{a}");
    // The run's steps hang under it, and its receipts name it.
    for name in ["wcp.route", "wcp.intent_receipt", "wcp.envelope_run"] {
        let s = spans
            .iter()
            .filter(|s| s["name"] == name)
            .find(|s| s["parent_span_id"] == complete["span_id"])
            .unwrap_or_else(|| panic!("no {name} under the completion: {spans:?}"));
        assert_eq!(s["trace_id"], trace_id, "{s}");
    }
    let run = spans
        .iter()
        .find(|s| s["name"] == "wcp.outcome_receipt" && s["parent_span_id"] == complete["span_id"])
        .unwrap();
    let receipt = hall.receipt(&run["attributes"]["wcp.receipt_seq"]);
    assert_eq!(
        receipt["payload"]["dispatch"]["trace"],
        json!({"trace_id": trace_id, "span_id": complete["span_id"]}),
        "{receipt}"
    );
}

#[test]
fn without_tracing_the_callers_trace_passes_through_to_the_worker_the_receipt_and_the_log() {
    let hall = TracedHall::start(None);
    let (trace_id, caller_span) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let out = hall.dispatch(&[("traceparent", format!("00-{trace_id}-{caller_span}-01"))]);
    let stderr = out["execution"]["stderr_tail"].as_str().unwrap_or_default();
    assert!(
        stderr.contains(trace_id),
        "the worker got TRACEPARENT: {out}"
    );
    let receipt = hall.receipt(&out["execution"]["receipt"]["seq"]);
    assert_eq!(
        receipt["payload"]["dispatch"]["trace"],
        json!({"trace_id": trace_id, "span_id": caller_span}),
        "{receipt}"
    );
    let correlation = out["decision"]["correlation_id"].as_str().unwrap();
    let lines = hall.log_lines_of(correlation);
    assert!(!lines.is_empty(), "{}", hall.log());
    for l in &lines {
        assert_eq!(l["span"]["trace_id"], trace_id, "{l}");
    }
    // An invalid traceparent is ignored (W3C Trace Context): no trace anywhere.
    for bad in [
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01".to_owned(),
        format!("00-{trace_id}-00f067aa0ba902b7"),
        "garbage".to_owned(),
    ] {
        let out = hall.dispatch(&[("traceparent", bad.clone())]);
        let receipt = hall.receipt(&out["execution"]["receipt"]["seq"]);
        assert!(
            receipt["payload"]["dispatch"].get("trace").is_none(),
            "{bad}: {receipt}"
        );
        let correlation = out["decision"]["correlation_id"].as_str().unwrap();
        for l in hall.log_lines_of(correlation) {
            assert!(l["span"].get("trace_id").is_none(), "{bad}: {l}");
        }
    }
    // Without a traceparent at all, the log lines still carry the correlation id.
    let out = hall.dispatch(&[]);
    let correlation = out["decision"]["correlation_id"].as_str().unwrap();
    assert!(!hall.log_lines_of(correlation).is_empty(), "{}", hall.log());
}
