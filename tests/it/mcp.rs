//! End-to-end tests of `wcp-hall mcp`: a real Hall with signed, enrolled hello and doc_chunker
//! packages, driven through the bridge by the official MCP Python SDK client (`mcp` from PyPI,
//! installed into a virtual environment cached under target/); the Hall's tenant-scoped listing
//! (`POST /wcp/capabilities/routable`) over its socket; and the bridge's concurrency and
//! cancellation against a scripted Hall whose answers wait for each other.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::hall_support::{BIN, copy_dir, package_key, read_record, repo};

/// The MCP Python SDK, in a venv under target/ (see `python_venv`).
fn mcp_python() -> PathBuf {
    crate::venv::python_venv("mcp", "mcp>=1.10\n", "import mcp.client.stdio").join("bin/python")
}

/// Copies a bundled worker package, signs it with `key` and enrolls it (attestation.package_root).
fn sign_and_enroll(dir: &Path, package: &str, key: &Path) {
    sign_and_enroll_as(dir, package, package, key, |_| {});
}

/// Like [`sign_and_enroll`], into `packages/<name>`, after `edit` changed the copy (before it is
/// signed, so the change is part of the signed package).
fn sign_and_enroll_as(dir: &Path, package: &str, name: &str, key: &Path, edit: impl FnOnce(&Path)) {
    let pkg = dir.join("packages").join(name);
    copy_dir(&repo(&format!("workers/{package}")), &pkg);
    edit(&pkg);
    let record = read_record(&pkg.join("record.json"));
    crate::hall_support::sign_and_enroll(key, &pkg, &record, &dir.join("registry"));
}

struct Hall {
    dir: tempfile::TempDir,
    socket: PathBuf,
    child: Child,
}

impl Hall {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let rules = json!({"rules": [
            {"rule_id": "rr_hello", "match": {"capability_id": "cap.hello.greet", "env": {"in": ["dev", "stage"]}},
             "decision": {"candidate_workers_ranked": [{"worker_species_id": "wrk.hello.greeter"}],
                          "required_controls_suggested": ["ctrl.obs.audit-log-append-only"],
                          "escalation": {"policy_gate": true}}},
            {"rule_id": "rr_chunk", "match": {"capability_id": "cap.doc.chunk", "env": {"in": ["dev", "stage"]}},
             "decision": {"candidate_workers_ranked": [{"worker_species_id": "wrk.doc.chunker"}],
                          "required_controls_suggested": ["ctrl.obs.audit-log-append-only"]}},
            {"rule_id": "rr_broken", "match": {"capability_id": "cap.hello.broken", "env": "dev"},
             "decision": {"candidate_workers_ranked": [{"worker_species_id": "wrk.hello.broken-schema"}],
                          "required_controls_suggested": ["ctrl.obs.audit-log-append-only"]}},
            {"rule_id": "rr_register_prod_only", "match": {"capability_id": "cap.research.register", "env": "prod"},
             "decision": {"candidate_workers_ranked": [{"worker_species_id": "wrk.research.registrar"}]}}
        ]});
        std::fs::write(d.join("rules.json"), rules.to_string()).unwrap();
        std::fs::create_dir(d.join("registry")).unwrap();
        for sub in ["profiles", "cedar"] {
            let to = d.join(sub);
            std::fs::create_dir(&to).unwrap();
            for e in std::fs::read_dir(repo(&format!("policies/{sub}"))).unwrap() {
                let e = e.unwrap();
                std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
            }
        }
        std::fs::create_dir(d.join("keys")).unwrap();
        wcp_hall::crypto::KeyPair::generate()
            .unwrap()
            .write(&d.join("keys/receipts.key"))
            .unwrap();
        let key = package_key(d);
        sign_and_enroll(d, "hello", &key);
        sign_and_enroll(d, "doc_chunker", &key);
        // A signed package whose config.schema.json is broken: listed with a permissive schema.
        sign_and_enroll_as(d, "hello", "hello_broken_schema", &key, |pkg| {
            let path = pkg.join("record.json");
            let mut record: Value =
                serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            record["worker_id"] = json!("org.wcp-hall.hello-broken.1");
            record["worker_species_id"] = json!("wrk.hello.broken-schema");
            record["capabilities"] = json!(["cap.hello.broken"]);
            std::fs::write(&path, record.to_string()).unwrap();
            std::fs::write(pkg.join("config.schema.json"), "{not json").unwrap();
        });
        let config = r#"[hall]
require_signatory = true
allowed_tenants = ["acme-corp"]
require_worker_attestation = true

[paths]
rules = "rules.json"
registry_dir = "registry"
state_dir = "state"
profiles_dir = "profiles"

[receipts]
signing_key = "keys/receipts.key"

[attestation]
trust_policy = "trust.json"

[profiles]
dev = "prof.dev.permissive"

[approvals]
wait_ms = 200

[identity]
operator_uids = [0]
[[identity.peers]]
uid = 0
tenants = ["acme-corp"]
"#;
        std::fs::write(d.join("hall.toml"), config).unwrap();
        let socket = d.join("hall.sock");
        let child = Hall::spawn(d, &socket);
        let mut hall = Hall { dir, socket, child };
        hall.wait_ready();
        hall
    }

    fn spawn(dir: &Path, socket: &Path) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("hall.log"))
            .unwrap();
        Command::new(BIN)
            .args(["serve", "-c"])
            .arg(dir.join("hall.toml"))
            .arg("-s")
            .arg(socket)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap()
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let o = Command::new(BIN)
                .args(["status", "-s"])
                .arg(&self.socket)
                .output()
                .unwrap();
            if o.status.success() {
                return;
            }
            if let Ok(Some(s)) = self.child.try_wait() {
                panic!("wcp-hall serve exited early ({s}): {}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "the Hall did not come up: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the Hall (SIGTERM, as systemd would) and starts it again on the same state.
    fn restart(&mut self) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let status = self.child.wait().unwrap();
        assert!(
            status.success(),
            "the Hall stopped with {status}: {}",
            self.log()
        );
        self.child = Hall::spawn(self.dir.path(), &self.socket);
        self.wait_ready();
    }

    /// Runs the CLI against this Hall as root (an operator).
    fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(BIN)
            .args(args)
            .arg("--socket")
            .arg(&self.socket)
            .output()
            .unwrap()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("hall.log")).unwrap_or_default()
    }
}

impl Drop for Hall {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_python_mcp_sdk_lists_calls_and_is_denied_through_the_bridge() {
    let python = mcp_python();
    let mut hall = Hall::start();
    let tamper = hall
        .dir
        .path()
        .join("packages/doc_chunker/code/worker_logic.py");
    // `timeout` turns a hung bridge into a failure instead of a stuck test.
    let mut client = Command::new("timeout")
        .arg("300")
        .arg(&python)
        .arg(repo("tests/mcp_client.py"))
        .arg(BIN)
        .arg(&hall.socket)
        .arg("acme-corp")
        .arg(&tamper)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr_pipe = client.stderr.take().unwrap();
    let stderr_reader = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut { stderr_pipe }, &mut s).unwrap();
        s
    });
    // The script asks for a Hall restart mid-call (`RESTART <approval id>`): restart it, then
    // approve, while the bridge keeps the agent's call open.
    let mut last = String::new();
    let mut restarted = Vec::new();
    for line in std::io::BufRead::lines(std::io::BufReader::new(client.stdout.take().unwrap())) {
        let line = line.unwrap();
        if let Some(id) = line.strip_prefix("RESTART ") {
            hall.restart();
            let o = hall.cli(&["approvals", "approve", id]);
            assert!(
                o.status.success(),
                "approve after the restart: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            restarted.push(id.to_owned());
        } else {
            last = line;
        }
    }
    let status = client.wait().unwrap();
    let stderr = stderr_reader.join().unwrap();
    assert!(
        status.success(),
        "the MCP client failed: {stderr}\nHall log: {}",
        hall.log()
    );
    let out: Value =
        serde_json::from_str(&last).unwrap_or_else(|e| panic!("{e}: {last}\n{stderr}"));
    assert_eq!(
        restarted.len(),
        1,
        "the script asked for one restart: {out}"
    );

    // initialize
    assert_eq!(out["server_name"], "wcp-hall");
    assert_eq!(out["has_tools_capability"], true);

    // tools/list: what acme-corp may route in dev/PUBLIC, with the schema the Hall read from the
    // verified package; operator tools for uid 0.
    let tools = &out["tools"];
    let hello = &tools["cap_hello_greet"];
    assert_eq!(hello["title"], "cap.hello.greet");
    assert_eq!(hello["inputSchema"]["required"], json!(["name"]));
    // hello's package declares its result's shape (output.schema.json); the chunker's does not.
    assert_eq!(
        hello["outputSchema"]["required"],
        json!(["greeting", "correlation_id"]),
        "{hello}"
    );
    assert!(tools["cap_doc_chunk"]["outputSchema"].is_null(), "{tools}");
    assert_eq!(hello["meta"]["wcp/routing"], "allowed", "{hello}");
    assert_eq!(hello["meta"]["wcp/input_schema_source"], "verified_package");
    assert_eq!(hello["meta"]["wcp/worker_id"], "org.wcp-hall.hello.1");
    assert!(
        hello["description"]
            .as_str()
            .unwrap()
            .contains("wrk.hello.greeter")
    );
    assert_eq!(
        tools["cap_doc_chunk"]["inputSchema"]["required"],
        json!(["text"])
    );
    // cap.research.register has a rule, but only for prod: not offered in dev.
    assert!(tools.get("cap_research_register").is_none(), "{tools}");
    for t in [
        "wcp_approvals_list",
        "wcp_approval_resolve",
        "wcp_approval_escalate",
    ] {
        assert!(tools[t].is_object(), "operator tool {t} listed: {tools}");
    }

    // The hello worker ran, attested: structuredContent is the worker's result (its greeting
    // object), the text block exactly its serialisation, and the Hall's receipt and decision
    // summary are in the result's _meta.
    let h = &out["hello"];
    assert_eq!(h["is_error"], false, "{h}");
    let result = &h["structured"];
    assert_eq!(result["greeting"], "Hello, Ada!", "{h}");
    let mut keys: Vec<_> = result.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ["correlation_id", "greeting"], "{h}");
    assert_eq!(h["text_is_structured"], true, "{h}");
    let text: Value = serde_json::from_str(h["text"][0].as_str().unwrap()).unwrap();
    assert_eq!(&text, result, "{h}");
    let s = &h["meta"]["wcp-hall/dispatch"];
    assert_eq!(s["status"], "completed", "{h}");
    assert_eq!(s["decision"]["matched_rule_id"], "rr_hello");
    assert_eq!(
        s["decision"]["selected_worker_species_id"],
        "wrk.hello.greeter"
    );
    assert_eq!(s["decision"]["worker_id"], "org.wcp-hall.hello.1");
    assert!(s["receipt"]["seq"].is_u64(), "{s}");
    assert!(s["receipt"]["receipt_hash"].is_string(), "{s}");
    assert_eq!(result["correlation_id"], s["correlation_id"]);
    uuid::Uuid::parse_str(s["correlation_id"].as_str().unwrap()).expect("fresh UUIDv4");

    // A correlation id from _meta is used.
    let hm = &out["hello_meta"];
    assert_eq!(
        hm["meta"]["wcp-hall/dispatch"]["correlation_id"], "mcp-test-corr-1",
        "{hm}"
    );
    let result = &hm["structured"];
    assert_eq!(result["greeting"], "Hello, Grace!");
    assert_eq!(result["correlation_id"], "mcp-test-corr-1");

    // The host's _meta.traceparent went on to the Hall: the receipt records the host's trace and
    // span (the Hall exports no traces here, so it passes the context through), and the
    // correlation id defaults to the trace id.
    let ht = &out["hello_traced"];
    let d = &ht["meta"]["wcp-hall/dispatch"];
    assert_eq!(d["status"], "completed", "{ht}");
    assert_eq!(
        d["correlation_id"], "5c3f6a0e9d2b4f718a6e2c1d0b9a8f7e",
        "{ht}"
    );
    let o = Command::new(BIN)
        .args([
            "--json",
            "receipts",
            "show",
            &d["receipt"]["seq"].to_string(),
            "--log",
        ])
        .arg(hall.dir.path().join("state/receipts"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let receipt: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        receipt["payload"]["dispatch"]["trace"],
        json!({"trace_id": "5c3f6a0e9d2b4f718a6e2c1d0b9a8f7e", "span_id": "a1b2c3d4e5f60718"}),
        "{receipt}"
    );

    // The pipeline's chunker ran.
    let c = &out["chunk"];
    assert_eq!(c["is_error"], false, "{c}");
    assert_eq!(c["text_is_structured"], true, "{c}");
    let result = &c["structured"];
    assert!(result["count"].as_u64().unwrap() >= 2, "{result}");
    assert_eq!(
        result["chunks"][0],
        "First paragraph. It has two sentences."
    );
    assert_eq!(
        c["meta"]["wcp-hall/dispatch"]["decision"]["worker_id"],
        "org.wcp-hall.doc-chunker.1"
    );

    // The chunker's package was modified after it was listed: the call is denied, a tool error
    // carrying the WCP deny code; receipted.
    let d = &out["chunk_tampered"];
    assert_eq!(d["is_error"], true, "{d}");
    assert!(d["structured"].is_null(), "{d}");
    let dm = &d["meta"]["wcp-hall/dispatch"];
    assert_eq!(dm["status"], "denied");
    assert_eq!(dm["decision"]["deny_code"], "DENY_WORKER_TAMPERED");
    assert!(
        d["text"][0]
            .as_str()
            .unwrap()
            .starts_with("DENY_WORKER_TAMPERED: "),
        "{d}"
    );
    assert!(dm["receipt"]["seq"].is_u64(), "{d}");

    // A request the worker's schema refuses ({"nam": "Ada"}; hello requires "name") is refused
    // by the Hall before anything runs: a receipted DENY_INVALID_INPUT naming the fields, no run
    // error, a tool error.
    let bad = &out["invalid_request"];
    assert_eq!(bad["is_error"], true, "{bad}");
    let bm = &bad["meta"]["wcp-hall/dispatch"];
    assert_eq!(bm["status"], "denied", "{bad}");
    assert_eq!(bm["decision"]["deny_code"], "DENY_INVALID_INPUT", "{bad}");
    assert!(bm.get("error").is_none(), "nothing ran: {bad}");
    assert!(bm["receipt"]["seq"].is_u64(), "{bad}");
    let text = bad["text"][0].as_str().unwrap();
    assert!(text.starts_with("DENY_INVALID_INPUT: "), "{bad}");
    assert!(
        text.contains("\"name\" is a required property") && text.contains("'nam'"),
        "{bad}"
    );

    // Operator tools reach the approval endpoints.
    let a = &out["approvals"];
    assert_eq!(a["is_error"], false, "{a}");
    assert_eq!(a["structured"]["pending"], json!([]));
    let r = &out["resolve_missing"];
    assert_eq!(r["is_error"], true, "{r}");
    assert!(r["text"][0].as_str().unwrap().contains("HTTP 404"), "{r}");

    // A tool that was not offered is a JSON-RPC error; the session goes on.
    assert!(
        out["unknown_tool"].as_str().unwrap().starts_with("error:"),
        "{out}"
    );
    assert!(
        out["unknown_tool"]
            .as_str()
            .unwrap()
            .contains("unknown tool")
    );
    assert_eq!(out["ping_after"], true);

    // RESTRICTED data in dev: hello is offered as needing a gatekeeper.
    let rt = &out["restricted_tools"];
    let rh = &rt["cap_hello_greet"];
    assert_eq!(rh["meta"]["wcp/routing"], "requires_human", "{rt}");
    assert_eq!(rh["meta"]["wcp/supervisor_level"], "gatekeeper");
    assert!(
        rh["description"]
            .as_str()
            .unwrap()
            .contains("needs human approval"),
        "{rh}"
    );
    assert_eq!(rh["inputSchema"]["required"], json!(["name"]));
    assert!(rt["wcp_approval_outcome"].is_object(), "{rt}");
    // The tampered chunker is not offered any more.
    assert!(rt.get("cap_doc_chunk").is_none(), "{rt}");
    // With --approval-wait 0 the call answers at once. Nothing ran, so it is not the tool's
    // output: a tool error naming pending_approval, the approval id and the outcome tool
    // exactly as it is listed.
    let p = &out["restricted_hello"];
    assert_eq!(p["is_error"], true, "{p}");
    let pm = &p["meta"]["wcp-hall/dispatch"];
    assert_eq!(pm["status"], "pending_approval", "{p}");
    assert_eq!(pm["correlation_id"], "mcp-approval-1", "{p}");
    let ptext = p["text"][0].as_str().unwrap();
    assert!(ptext.starts_with("pending_approval: "), "{p}");
    assert!(ptext.contains("call the wcp_approval_outcome tool"), "{p}");
    assert!(!ptext.contains("wcp.approval"), "{p}");
    let pending = &pm["pending_approval"];
    assert_eq!(pending["supervisor_level"], "gatekeeper");
    let approval_id = pending["pending_approval_id"].as_str().unwrap();
    uuid::Uuid::parse_str(approval_id).expect("an approval id");
    assert!(ptext.contains(approval_id), "{p}");
    // Before a decision: the outcome tool says it is still pending; the same call again is the
    // same approval, not a second one.
    let before = &out["outcome_before"];
    assert_eq!(before["is_error"], true, "{before}");
    assert!(
        before["text"][0]
            .as_str()
            .unwrap()
            .starts_with("pending_approval: "),
        "{before}"
    );
    let repeat = &out["restricted_repeat"];
    assert_eq!(
        repeat["meta"]["wcp-hall/dispatch"]["pending_approval"]["pending_approval_id"], approval_id,
        "{repeat}"
    );
    let listed = &out["restricted_approvals"]["structured"]["pending"];
    let mine: Vec<&Value> = listed
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["correlation_id"] == "mcp-approval-1")
        .collect();
    assert_eq!(
        mine.len(),
        1,
        "one approval for the repeated call: {listed}"
    );
    assert_eq!(mine[0]["pending_approval_id"], approval_id);
    // The operator approves; its answer says the worker ran, without the worker's result.
    let resolved = &out["restricted_resolve"];
    assert_eq!(resolved["is_error"], false, "{resolved}");
    let rs = &resolved["structured"];
    assert_eq!(rs["approval"]["status"], "approved", "{rs}");
    assert_eq!(rs["response"]["status"], "completed", "{rs}");
    assert!(rs["response"]["result"].is_null(), "{rs}");
    assert!(!rs.to_string().contains("Hello, Lin"), "{rs}");
    // The agent receives it: from the outcome tool, and by repeating its call (nothing runs
    // twice: the same receipt).
    let after = &out["outcome_after"];
    assert_eq!(after["is_error"], false, "{after}");
    assert_eq!(after["structured"]["greeting"], "Hello, Lin!", "{after}");
    assert_eq!(after["text_is_structured"], true, "{after}");
    let am = &after["meta"]["wcp-hall/dispatch"];
    assert_eq!(am["status"], "completed", "{after}");
    assert_eq!(am["correlation_id"], "mcp-approval-1", "{after}");
    let again = &out["repeat_after"];
    assert_eq!(again["structured"]["greeting"], "Hello, Lin!", "{again}");
    assert_eq!(
        again["meta"]["wcp-hall/dispatch"]["receipt"], am["receipt"],
        "{again}"
    );

    // With --approval-wait the call stays open, with progress notifications naming the
    // approval, and answers with the worker's result once the operator approved.
    let w = &out["waited"];
    assert_eq!(w["is_error"], false, "{w}");
    assert_eq!(w["structured"]["greeting"], "Hello, Wu!", "{w}");
    let progress = out["waited_progress"].as_array().unwrap();
    assert!(!progress.is_empty(), "{out}");
    assert!(
        progress[0]["message"]
            .as_str()
            .unwrap()
            .contains("waiting for a human to decide approval"),
        "{progress:?}"
    );
    // A denial reaches the agent as a denial.
    let d = &out["waited_denied"];
    assert_eq!(d["is_error"], true, "{d}");
    let dtext = d["text"][0].as_str().unwrap();
    assert!(dtext.starts_with("approval_denied: "), "{d}");
    assert!(dtext.contains("an operator denied it"), "{d}");
    assert_eq!(d["meta"]["wcp-hall/dispatch"]["status"], "denied", "{d}");
    assert!(
        d["meta"]["wcp-hall/dispatch"]["receipt"]["seq"].is_u64(),
        "{d}"
    );
    // The Hall restarted while the call waited; approved after the restart, the result still
    // reached the waiting call.
    let r = &out["restarted"];
    assert_eq!(r["is_error"], false, "{r}");
    assert_eq!(r["structured"]["greeting"], "Hello, Kim!", "{r}");

    // The current protocol revision, negotiated by the SDK's default client (server/discover).
    assert_eq!(out["modern_version"], "2026-07-28", "{out}");
    assert_eq!(
        out["modern_tools"]["cap_hello_greet"]["outputSchema"]["required"],
        json!(["greeting", "correlation_id"])
    );
    let m = &out["modern_hello"];
    assert_eq!(m["is_error"], false, "{m}");
    assert_eq!(m["structured"]["greeting"], "Hello, Mo!", "{m}");

    // A tenant this uid may not act as: tools/list is an MCP error naming the Hall's code.
    let wt = out["wrong_tenant_list"].as_str().unwrap();
    assert!(
        wt.starts_with("error:") && wt.contains("tenant_not_allowed"),
        "{wt}"
    );

    // No Hall behind the socket: MCP errors, never a crash.
    let down = out["down_list"].as_str().unwrap();
    assert!(
        down.starts_with("error:") && down.contains("cannot reach the Hall"),
        "{down}"
    );
    let dc = &out["down_call"];
    assert_eq!(dc["is_error"], true);
    assert_eq!(
        dc["meta"]["wcp-hall/error"]["code"], "hall_unreachable",
        "{dc}"
    );
    assert_eq!(out["down_ping"], true);

    // stdout carried only protocol (the SDK parsed it); the bridge logged on stderr.
    assert!(stderr.contains("wcp-hall MCP bridge on stdio"), "{stderr}");
}

/// Calls the Hall at `socket` as this process (uid 0).
fn hall_call(
    socket: &Path,
    method: hyper::Method,
    path: &str,
    body: Option<&Value>,
) -> (u16, Value) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let a = rt
        .block_on(wcp_hall::client::call(
            socket,
            method,
            path,
            body,
            Duration::from_secs(60),
        ))
        .expect("the Hall answers");
    (a.status.as_u16(), a.body)
}

fn context(tenant: &str, data_label: &str) -> Value {
    json!({"tenant_id": tenant, "env": "dev", "data_label": data_label,
           "tenant_risk": "low", "qos_class": "P2"})
}

#[test]
fn the_hall_lists_what_a_tenant_may_route_with_schemas_from_verified_packages() {
    let hall = Hall::start();
    let routable = |body: &Value| {
        hall_call(
            &hall.socket,
            hyper::Method::POST,
            "/wcp/capabilities/routable",
            Some(body),
        )
    };
    let by_id = |list: &Value, id: &str| -> Value {
        list.as_array()
            .unwrap()
            .iter()
            .find(|c| c["capability_id"] == id)
            .cloned()
            .unwrap_or(Value::Null)
    };

    let (status, out) = routable(&context("acme-corp", "PUBLIC"));
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["context"]["tenant_id"], "acme-corp");
    let caps = &out["capabilities"];
    let hello = by_id(caps, "cap.hello.greet");
    assert_eq!(hello["routing"], "allowed", "{out}");
    assert_eq!(hello["matched_rule_id"], "rr_hello");
    assert_eq!(hello["worker_species_id"], "wrk.hello.greeter");
    assert_eq!(hello["worker_id"], "org.wcp-hall.hello.1");
    assert_eq!(hello["input_schema_source"], "verified_package");
    assert_eq!(hello["input_schema"]["required"], json!(["name"]));
    assert!(hello.get("input_schema_note").is_none(), "{hello}");
    // hello's package declares its result's shape; the chunker's does not (nothing is listed).
    assert_eq!(
        hello["output_schema"]["required"],
        json!(["greeting", "correlation_id"]),
        "{hello}"
    );
    let chunk = by_id(caps, "cap.doc.chunk");
    assert!(chunk.get("output_schema").is_none(), "{chunk}");
    assert!(chunk.get("output_schema_note").is_none(), "{chunk}");
    assert_eq!(
        by_id(caps, "cap.doc.chunk")["input_schema"]["required"],
        json!(["text"])
    );
    // A broken schema does not break the listing: permissive schema and a note.
    let broken = by_id(caps, "cap.hello.broken");
    assert_eq!(broken["routing"], "allowed", "{out}");
    assert_eq!(broken["input_schema"], json!({"type": "object"}));
    assert!(
        broken["input_schema_note"]
            .as_str()
            .unwrap()
            .contains("not valid JSON"),
        "{broken}"
    );
    // Routed only in prod: not listed, and the reason is given.
    assert!(by_id(caps, "cap.research.register").is_null());
    let register = by_id(&out["not_routable"], "cap.research.register");
    assert_eq!(register["deny_code"], "DENY_NO_MATCHING_RULE", "{out}");

    // RESTRICTED in dev: the Cedar gate wants a gatekeeper; listed as needing a human, and no
    // approval is created by listing.
    let (status, out) = routable(&context("acme-corp", "RESTRICTED"));
    assert_eq!(status, 200, "{out}");
    let hello = by_id(&out["capabilities"], "cap.hello.greet");
    assert_eq!(hello["routing"], "requires_human", "{out}");
    assert_eq!(hello["supervisor_level"], "gatekeeper");
    assert_eq!(hello["deny_code"], "DENY_REQUIRES_HUMAN_APPROVAL");
    assert!(
        hello["approval_reason"]
            .as_str()
            .unwrap()
            .contains("pol.nonprod.restricted-review"),
        "{hello}"
    );
    assert_eq!(hello["input_schema"]["required"], json!(["name"]));
    // The chunker's rule has no policy gate: allowed on RESTRICTED data too.
    assert_eq!(
        by_id(&out["capabilities"], "cap.doc.chunk")["routing"],
        "allowed"
    );
    let (_, pending) = hall_call(
        &hall.socket,
        hyper::Method::GET,
        "/wcp/approvals/pending",
        None,
    );
    assert_eq!(pending["pending"], json!([]), "listing created an approval");

    // A tenant this uid may not act as, and malformed contexts.
    let (status, out) = routable(&context("globex", "PUBLIC"));
    assert_eq!(status, 403, "{out}");
    assert_eq!(out["code"], "tenant_not_allowed");
    assert!(
        out["message"].as_str().unwrap().contains("acme-corp"),
        "{out}"
    );
    let mut bad = context("acme-corp", "PUBLIC");
    bad["env"] = json!("production");
    let (status, out) = routable(&bad);
    assert_eq!(
        (status, out["code"].as_str()),
        (400, Some("invalid_context"))
    );
    let mut extra = context("acme-corp", "PUBLIC");
    extra["capability_id"] = json!("cap.hello.greet");
    let (status, out) = routable(&extra);
    assert_eq!(
        (status, out["code"].as_str()),
        (400, Some("invalid_context")),
        "{out}"
    );
}

/// A scripted Hall on a Unix socket (plain HTTP/1.1, one thread per connection) for the
/// bridge's concurrency tests. `cap.test.echo` dispatches behave by their `request.name`:
/// - `slow` waits until `fast` has been answered;
/// - `fast` waits until `slow` has arrived, then answers;
/// - `block` records its arrival and never answers on its own (until the test ends).
///
/// A bridge that handled one call at a time would leave `slow` waiting for a `fast` that never
/// comes: the answers below only happen in the asserted order if the calls overlap.
struct ScriptedHall {
    _dir: tempfile::TempDir,
    socket: PathBuf,
    state: std::sync::Arc<(std::sync::Mutex<Script>, std::sync::Condvar)>,
}

#[derive(Default)]
struct Script {
    arrived: Vec<String>,
    answered: Vec<String>,
}

impl ScriptedHall {
    fn start() -> Self {
        use std::io::{BufRead, BufReader, Read, Write};
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("scripted.sock");
        let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        let state: std::sync::Arc<(std::sync::Mutex<Script>, std::sync::Condvar)> =
            Default::default();
        let shared = state.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let state = shared.clone();
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    let mut request_line = String::new();
                    if reader.read_line(&mut request_line).is_err() {
                        return;
                    }
                    let mut length = 0;
                    loop {
                        let mut header = String::new();
                        if reader.read_line(&mut header).unwrap_or(0) == 0 || header == "\r\n" {
                            break;
                        }
                        let lower = header.to_ascii_lowercase();
                        if let Some(v) = lower.strip_prefix("content-length:") {
                            length = v.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0; length];
                    if reader.read_exact(&mut body).is_err() {
                        return;
                    }
                    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    // The target may be absolute (http://localhost/…): keep the path.
                    let target = request_line.split(' ').nth(1).unwrap_or("");
                    let path = match target.find("://") {
                        Some(i) => target[i + 3..]
                            .find('/')
                            .map_or("/", |j| &target[i + 3 + j..]),
                        None => target,
                    };
                    // The query (`?approval_wait_ms=0`) is not part of the route.
                    let path = path.split('?').next().unwrap_or(path).to_owned();
                    let (status, answer) = ScriptedHall::answer(&state, &path, &body);
                    let text = answer.to_string();
                    let _ = write!(
                        stream,
                        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
                        text.len()
                    );
                    let _ = stream.flush();
                    if path == "/wcp/dispatch" {
                        let name = body["request"]["name"].as_str().unwrap_or("").to_owned();
                        let (lock, cv) = &*state;
                        lock.lock().unwrap().answered.push(name);
                        cv.notify_all();
                    }
                });
            }
        });
        ScriptedHall {
            _dir: dir,
            socket,
            state,
        }
    }

    fn answer(
        state: &(std::sync::Mutex<Script>, std::sync::Condvar),
        path: &str,
        body: &Value,
    ) -> (u16, Value) {
        let (lock, cv) = state;
        // Waits (at most 60 s, so a broken bridge fails instead of hanging) for `ready`.
        let wait_for = |ready: &dyn Fn(&Script) -> bool| {
            let guard = lock.lock().unwrap();
            let (_guard, timeout) = cv
                .wait_timeout_while(guard, Duration::from_secs(60), |s| !ready(s))
                .unwrap();
            !timeout.timed_out()
        };
        match path {
            "/wcp/capabilities/routable" => (
                200,
                json!({"capabilities": [{"capability_id": "cap.test.echo", "routing": "allowed",
                    "worker_species_id": "wrk.test.echo", "input_schema": {"type": "object"},
                    "output_schema": {"type": "object", "required": ["echo"]}}],
                    "not_routable": []}),
            ),
            "/wcp/dispatch" => {
                let name = body["request"]["name"].as_str().unwrap_or("").to_owned();
                lock.lock().unwrap().arrived.push(name.clone());
                cv.notify_all();
                let ok = match name.as_str() {
                    "slow" => wait_for(&|s| s.answered.iter().any(|n| n == "fast")),
                    "fast" => wait_for(&|s| s.arrived.iter().any(|n| n == "slow")),
                    _ => wait_for(&|_| false),
                };
                if !ok {
                    return (
                        503,
                        json!({"code": "scripted_timeout", "message": format!("{name} waited in vain")}),
                    );
                }
                (
                    200,
                    json!({"status": "completed", "denied": false, "supervisor_required": false,
                        "decision": {"decision_id": "d", "matched_rule_id": "rr_echo",
                                     "selected_worker_species_id": "wrk.test.echo",
                                     "deny_reason_if_denied": null},
                        "result": {"echo": name},
                        "execution": {"worker_id": "org.test.echo.1",
                                      "receipt": {"seq": 1, "receipt_hash": "h"}}}),
                )
            }
            _ => (
                403,
                json!({"code": "forbidden", "message": "not an operator"}),
            ),
        }
    }

    /// Waits until a dispatch for `name` has arrived.
    fn wait_arrival(&self, name: &str) {
        let (lock, cv) = &*self.state;
        let guard = lock.lock().unwrap();
        let (_g, timeout) = cv
            .wait_timeout_while(guard, Duration::from_secs(60), |s| {
                !s.arrived.iter().any(|n| n == name)
            })
            .unwrap();
        assert!(!timeout.timed_out(), "no dispatch {name} reached the Hall");
    }
}

/// `wcp-hall mcp` as a child speaking raw newline-delimited JSON-RPC.
struct RawBridge {
    child: Child,
    stdin: Option<std::process::ChildStdin>,
    lines: std::sync::mpsc::Receiver<String>,
}

impl RawBridge {
    fn start(socket: &Path) -> Self {
        use std::io::BufRead;
        let mut child = Command::new(BIN)
            .args([
                "mcp",
                "--tenant-id",
                "acme-corp",
                "--timeout",
                "120",
                "--socket",
            ])
            .arg(socket)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        RawBridge {
            child,
            stdin,
            lines,
        }
    }

    fn send(&mut self, message: Value) {
        use std::io::Write;
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{message}").unwrap();
        stdin.flush().unwrap();
    }

    fn send_raw(&mut self, line: &str) {
        use std::io::Write;
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    /// The next message the bridge writes (each must be one JSON object on one line).
    fn next(&self) -> Value {
        let line = self
            .lines
            .recv_timeout(Duration::from_secs(90))
            .expect("the bridge answers");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: not one JSON line: {line}"))
    }

    fn call(id: u64, name: &str) -> Value {
        json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
               "params": {"name": "cap_test_echo", "arguments": {"name": name}}})
    }
}

impl Drop for RawBridge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_bridge_works_on_calls_concurrently_and_honours_cancellation() {
    let hall = ScriptedHall::start();
    let mut bridge = RawBridge::start(&hall.socket);
    bridge.send(json!({"jsonrpc": "2.0", "id": 0, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                   "clientInfo": {"name": "raw", "version": "0"}}}));
    assert_eq!(bridge.next()["id"], 0);
    bridge.send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
    bridge.send(json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}));
    let list = bridge.next();
    assert_eq!(list["id"], 1, "{list}");
    assert_eq!(
        list["result"]["tools"][0]["name"], "cap_test_echo",
        "{list}"
    );

    // Two calls whose Hall answers depend on each other: `slow` is answered only after `fast`,
    // and `fast` only once `slow` is in flight. Handled one at a time, `slow` would wait in vain
    // (a scripted 503) and `fast` would never reach the Hall before it; so both succeeding is
    // the proof of overlap. (The order of the two answers on stdout is not asserted: once the
    // Hall has answered both, which task writes first is the scheduler's choice.)
    bridge.send(RawBridge::call(2, "slow"));
    bridge.send(RawBridge::call(3, "fast"));
    let mut answers = [bridge.next(), bridge.next()];
    answers.sort_by_key(|a| a["id"].as_u64());
    assert_eq!(
        (&answers[0]["id"], &answers[1]["id"]),
        (&json!(2), &json!(3)),
        "{answers:?}"
    );
    let [slow, fast] = &answers;
    for (answer, name) in [(fast, "fast"), (slow, "slow")] {
        assert_eq!(answer["result"]["isError"], false, "{answer}");
        assert_eq!(
            answer["result"]["_meta"]["wcp-hall/dispatch"]["status"], "completed",
            "{answer}"
        );
        assert_eq!(answer["result"]["structuredContent"]["echo"], name);
        let text = answer["result"]["content"][0]["text"].as_str().unwrap();
        assert_eq!(serde_json::from_str::<Value>(text).unwrap()["echo"], name);
    }

    // A call in flight at the Hall is cancelled: the bridge keeps answering (ping) and never
    // answers the cancelled request, not even when the host closes stdin.
    bridge.send(RawBridge::call(4, "block"));
    hall.wait_arrival("block");
    bridge.send(
        json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
        "params": {"requestId": 4, "reason": "test"}}),
    );
    bridge.send(json!({"jsonrpc": "2.0", "id": 5, "method": "ping"}));
    let pong = bridge.next();
    assert_eq!(pong, json!({"jsonrpc": "2.0", "id": 5, "result": {}}));
    // A request sent before stdin closes is still answered after it closed.
    bridge.send(json!({"jsonrpc": "2.0", "id": 6, "method": "tools/list"}));
    drop(bridge.stdin.take());
    let mut rest = Vec::new();
    while let Ok(line) = bridge.lines.recv_timeout(Duration::from_secs(90)) {
        rest.push(serde_json::from_str::<Value>(&line).unwrap());
    }
    let ids: Vec<&Value> = rest.iter().map(|m| &m["id"]).collect();
    assert_eq!(ids, [&json!(6)], "{rest:?}");
    let status = bridge.child.wait().unwrap();
    assert!(status.success(), "{status}");
}

#[test]
fn each_protocol_version_gets_only_its_fields_and_bad_input_is_answered_not_fatal() {
    let hall = ScriptedHall::start();
    let init = |version: &str| {
        json!({"jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {"protocolVersion": version, "capabilities": {},
                       "clientInfo": {"name": "raw", "version": "0"}}})
    };
    // 2024-11-05: no tool title, output schema, _meta or annotations; no structuredContent
    // (the text block carries the result).
    let mut old = RawBridge::start(&hall.socket);
    old.send(init("2024-11-05"));
    let answer = old.next();
    assert_eq!(
        answer["result"]["protocolVersion"], "2024-11-05",
        "{answer}"
    );
    assert!(
        answer["result"]["serverInfo"].get("title").is_none(),
        "{answer}"
    );
    old.send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
    old.send(json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}));
    let list = old.next();
    let tools = list["result"]["tools"].as_array().unwrap();
    assert!(!tools.is_empty(), "{list}");
    for tool in tools {
        for key in ["title", "outputSchema", "_meta", "annotations", "icons"] {
            assert!(
                tool.get(key).is_none(),
                "{key} sent to a 2024-11-05 client: {tool}"
            );
        }
    }
    assert!(list["result"].get("resultType").is_none(), "{list}");
    old.send(RawBridge::call(2, "fast"));
    // (`fast` waits for `slow`; send `slow` too so both answer.)
    old.send(RawBridge::call(3, "slow"));
    for _ in 0..2 {
        let call = old.next();
        assert!(call["result"].get("structuredContent").is_none(), "{call}");
        assert!(call["result"].get("resultType").is_none(), "{call}");
        let text = call["result"]["content"][0]["text"].as_str().unwrap();
        assert!(serde_json::from_str::<Value>(text).unwrap()["echo"].is_string());
    }

    // 2025-06-18: the same tool with its title, output schema and _meta.
    let mut new = RawBridge::start(&hall.socket);
    new.send(init("2025-06-18"));
    assert_eq!(new.next()["result"]["protocolVersion"], "2025-06-18");
    new.send(json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}));
    let list = new.next();
    let echo = &list["result"]["tools"][0];
    assert_eq!(echo["name"], "cap_test_echo", "{list}");
    assert_eq!(echo["title"], "cap.test.echo", "{echo}");
    assert_eq!(echo["outputSchema"]["required"], json!(["echo"]), "{echo}");
    // An unknown revision is answered with a version the bridge speaks.
    let mut future = RawBridge::start(&hall.socket);
    future.send(init("2099-01-01"));
    assert_eq!(future.next()["result"]["protocolVersion"], "2025-11-25");

    // What is not a message is answered, and the session goes on: a duplicate key (one strict
    // reading), a line that is not JSON, a JSON value that is not JSON-RPC, an unknown method.
    new.send_raw(r#"{"jsonrpc": "2.0", "id": 7, "method": "ping", "method": "tools/list"}"#);
    let dup = new.next();
    assert_eq!(dup["error"]["code"], -32700, "{dup}");
    assert!(
        dup["error"]["message"]
            .as_str()
            .unwrap()
            .contains("duplicate"),
        "{dup}"
    );
    new.send_raw("not json");
    assert_eq!(new.next()["error"]["code"], -32700);
    new.send_raw("[1, 2]");
    assert_eq!(new.next()["error"]["code"], -32600);
    new.send(json!({"jsonrpc": "2.0", "id": 8, "method": "no/such"}));
    let unknown = new.next();
    assert_eq!(
        (&unknown["id"], &unknown["error"]["code"]),
        (&json!(8), &json!(-32601)),
        "{unknown}"
    );
    new.send(json!({"jsonrpc": "2.0", "id": 9, "method": "ping"}));
    assert_eq!(new.next(), json!({"jsonrpc": "2.0", "id": 9, "result": {}}));
}

/// The official MCP Inspector's CLI (npm `@modelcontextprotocol/inspector`, pinned in
/// tests/mcp-inspector), installed once into target/mcp-inspector. Fails loudly (never skips)
/// when it cannot be installed, e.g. without Node.js or the npm registry.
fn inspector() -> PathBuf {
    let o = Command::new("bash")
        .arg(repo("tests/mcp-inspector/install"))
        .output()
        .expect("bash runs tests/mcp-inspector/install");
    assert!(
        o.status.success(),
        "cannot install the MCP Inspector (tests/mcp-inspector/install; needs Node.js, npm and \
         the npm registry; .ci/run installs them): {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    repo("target/mcp-inspector/node_modules/.bin/mcp-inspector")
}

/// The Inspector CLI against `wcp-hall mcp` on `hall`: `bridge` are extra bridge arguments,
/// `method` the Inspector's (`--method …`). Returns the exit code and the JSON it printed.
fn inspect(
    cli: &Path,
    hall: &Hall,
    tenant: &str,
    bridge: &[&str],
    method: &[&str],
) -> (Option<i32>, Value) {
    inspect_command(cli, hall, tenant, bridge, method)
        .output()
        .map(|o| inspected(&o))
        .unwrap()
}

fn inspect_command(
    cli: &Path,
    hall: &Hall,
    tenant: &str,
    bridge: &[&str],
    method: &[&str],
) -> Command {
    let mut c = Command::new("timeout");
    c.arg("120")
        .arg(cli)
        .arg("--cli")
        .args(["-e", "RUST_LOG=error"])
        .arg(BIN)
        .args(["mcp", "--timeout", "30", "--tenant-id", tenant, "--socket"])
        .arg(&hall.socket)
        .args(bridge)
        .args(method)
        // The Inspector keeps a catalog under $HOME; keep it in the test's directory.
        .env("HOME", hall.dir.path())
        .stdin(Stdio::null());
    c
}

fn inspected(o: &std::process::Output) -> (Option<i32>, Value) {
    let stdout = String::from_utf8_lossy(&o.stdout);
    // The Inspector prints one (pretty) JSON document; errors go to stderr as one.
    let value = serde_json::from_str::<Value>(&stdout)
        .ok()
        .or_else(|| serde_json::from_slice(&o.stderr).ok())
        .or_else(|| {
            let stderr = String::from_utf8_lossy(&o.stderr);
            stderr
                .lines()
                .rev()
                .find_map(|l| serde_json::from_str::<Value>(l).ok())
        })
        .unwrap_or_else(|| json!({"stdout": stdout, "stderr": String::from_utf8_lossy(&o.stderr)}));
    (o.status.code(), value)
}

/// The text of a tool result's first content block.
fn first_text(result: &Value) -> &str {
    result["content"][0]["text"].as_str().unwrap_or("")
}

#[test]
fn the_mcp_inspector_cli_gets_governed_results_and_approvals_through_the_bridge() {
    let cli = inspector();
    let mut hall = Hall::start();
    fn call(tool: &str) -> Vec<&str> {
        vec!["--method", "tools/call", "--tool-name", tool]
    }

    // List: the capabilities acme-corp may route in dev, with the schemas of the verified
    // packages, and the outcome tool.
    let (code, list) = inspect(&cli, &hall, "acme-corp", &[], &["--method", "tools/list"]);
    assert_eq!(code, Some(0), "{list}");
    let tools = list["tools"].as_array().unwrap_or_else(|| panic!("{list}"));
    let hello = tools
        .iter()
        .find(|t| t["name"] == "cap_hello_greet")
        .unwrap_or_else(|| panic!("{list}"));
    assert_eq!(hello["inputSchema"]["required"], json!(["name"]), "{hello}");
    assert_eq!(
        hello["outputSchema"]["required"],
        json!(["greeting", "correlation_id"])
    );
    assert!(
        tools.iter().any(|t| t["name"] == "wcp_approval_outcome"),
        "{list}"
    );

    // A call that completes: structuredContent is the worker's result.
    let mut args = call("cap_hello_greet");
    args.extend(["--tool-arg", "name=Ada"]);
    let (code, done) = inspect(&cli, &hall, "acme-corp", &[], &args);
    assert_eq!(code, Some(0), "{done}");
    assert_eq!(done["isError"], false, "{done}");
    assert_eq!(
        done["structuredContent"]["greeting"], "Hello, Ada!",
        "{done}"
    );
    let text: Value = serde_json::from_str(first_text(&done)).unwrap();
    assert_eq!(text, done["structuredContent"], "{done}");
    assert_eq!(done["_meta"]["wcp-hall/dispatch"]["status"], "completed");

    // Bad arguments: refused by the Hall before anything runs (a receipted denial).
    let mut args = call("cap_hello_greet");
    args.extend(["--tool-arg", "nam=Ada"]);
    let (_, bad) = inspect(&cli, &hall, "acme-corp", &[], &args);
    assert_eq!(bad["isError"], true, "{bad}");
    assert!(
        first_text(&bad).starts_with("DENY_INVALID_INPUT: "),
        "{bad}"
    );
    let m = &bad["_meta"]["wcp-hall/dispatch"];
    assert_eq!(m["status"], "denied", "{bad}");
    assert!(m.get("error").is_none(), "nothing ran: {bad}");
    assert!(m["receipt"]["seq"].is_u64(), "{bad}");

    // REQUIRE_HUMAN (RESTRICTED data): the call answers pending with the approval id; an
    // operator approves; the agent collects the worker's result with the outcome tool.
    let restricted = ["--data-label", "RESTRICTED", "--approval-wait", "0"];
    let mut args = call("cap_hello_greet");
    args.extend(["--tool-arg", "name=Lin"]);
    let (_, pending) = inspect(&cli, &hall, "acme-corp", &restricted, &args);
    assert_eq!(pending["isError"], true, "{pending}");
    assert!(
        first_text(&pending).starts_with("pending_approval: "),
        "{pending}"
    );
    let id = pending["_meta"]["wcp-hall/dispatch"]["pending_approval"]["pending_approval_id"]
        .as_str()
        .unwrap_or_else(|| panic!("{pending}"))
        .to_owned();
    let o = hall.cli(&["approvals", "approve", &id]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let outcome_id = format!("id={id}");
    let mut args = call("wcp_approval_outcome");
    args.extend(["--tool-arg", &outcome_id]);
    let (_, collected) = inspect(&cli, &hall, "acme-corp", &restricted, &args);
    assert_eq!(collected["isError"], false, "{collected}");
    assert_eq!(
        collected["structuredContent"]["greeting"], "Hello, Lin!",
        "{collected}"
    );

    // A denied approval: the agent sees it denied.
    let mut args = call("cap_hello_greet");
    args.extend(["--tool-arg", "name=Eve"]);
    let (_, pending) = inspect(&cli, &hall, "acme-corp", &restricted, &args);
    let id = pending["_meta"]["wcp-hall/dispatch"]["pending_approval"]["pending_approval_id"]
        .as_str()
        .unwrap_or_else(|| panic!("{pending}"))
        .to_owned();
    let o = hall.cli(&["approvals", "deny", &id]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let outcome_id = format!("id={id}");
    let mut args = call("wcp_approval_outcome");
    args.extend(["--tool-arg", &outcome_id]);
    let (_, denied) = inspect(&cli, &hall, "acme-corp", &restricted, &args);
    assert_eq!(denied["isError"], true, "{denied}");
    assert!(
        first_text(&denied).starts_with("approval_denied: "),
        "{denied}"
    );

    // A wrong tenant: the listing is refused with the Hall's code.
    let (code, wrong) = inspect(&cli, &hall, "globex", &[], &["--method", "tools/list"]);
    assert_ne!(code, Some(0), "{wrong}");
    assert!(wrong.to_string().contains("tenant_not_allowed"), "{wrong}");

    // The Hall restarts while the Inspector's call waits for a human: approved after the
    // restart, the result reaches the same call.
    let mut args = call("cap_hello_greet");
    args.extend(["--tool-arg", "name=Kim"]);
    let waiting = inspect_command(
        &cli,
        &hall,
        "acme-corp",
        &["--data-label", "RESTRICTED", "--approval-wait", "45"],
        &args,
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let id = loop {
        let o = hall.cli(&["--json", "approvals", "list"]);
        let listed: Value = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
        let mine = listed["pending"].as_array().and_then(|p| {
            p.iter()
                .find(|a| a["capability_id"] == "cap.hello.greet")
                .and_then(|a| a["pending_approval_id"].as_str())
                .map(str::to_owned)
        });
        if let Some(id) = mine {
            break id;
        }
        assert!(
            Instant::now() < deadline,
            "no approval was asked for: {listed}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    hall.restart();
    let o = hall.cli(&["approvals", "approve", &id]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (code, result) = inspected(&waiting.wait_with_output().unwrap());
    assert_eq!(code, Some(0), "{result}");
    assert_eq!(result["isError"], false, "{result}");
    assert_eq!(
        result["structuredContent"]["greeting"], "Hello, Kim!",
        "{result}"
    );
}
