//! End-to-end test of `wcp-hall mcp`: a real Hall with signed, enrolled hello and doc_chunker
//! packages, driven through the bridge by the official MCP Python SDK client (`mcp` from PyPI,
//! installed into a virtual environment cached under target/).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_wcp-hall");

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// A virtual environment with the MCP Python SDK, created once under target/ and reused.
/// Fails loudly (never skips) when it cannot be built, e.g. without access to PyPI.
fn mcp_python() -> PathBuf {
    let venv = repo("target/mcp-venv");
    let python = venv.join("bin/python");
    let ready = |p: &Path| {
        Command::new(p)
            .args(["-c", "import mcp.client.stdio"])
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    if ready(&python) {
        return python;
    }
    let o = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .output()
        .expect("python3 must be installed for the MCP test");
    assert!(
        o.status.success(),
        "python3 -m venv failed (install python3-venv): {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = Command::new(venv.join("bin/pip"))
        .args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "mcp>=1.10",
        ])
        .output()
        .expect("run pip");
    assert!(
        o.status.success() && ready(&python),
        "cannot install the MCP Python SDK (`pip install mcp`) into {}: is PyPI reachable?\n{}{}",
        venv.display(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    python
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let name = e.file_name();
        if name == "__pycache__" {
            continue;
        }
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(&name));
        } else {
            std::fs::copy(e.path(), to.join(&name)).unwrap();
        }
    }
}

/// Copies a bundled worker package, signs it with `key` and enrolls it (attestation.package_root).
fn sign_and_enroll(dir: &Path, package: &str, species: &str, key: &Path) {
    let pkg = dir.join("packages").join(package);
    copy_dir(&repo(&format!("workers/{package}")), &pkg);
    let record: Value =
        serde_json::from_str(&std::fs::read_to_string(pkg.join("record.json")).unwrap()).unwrap();
    let worker_id = record["worker_id"].as_str().unwrap().to_owned();
    let o = Command::new(BIN)
        .args([
            "attest",
            "sign",
            "--worker-id",
            &worker_id,
            "--species",
            species,
        ])
        .args(["--worker-version", "1.0.0", "--key"])
        .arg(key)
        .arg(&pkg)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut enrolled = record.clone();
    enrolled["attestation"] = json!({"package_root": pkg.display().to_string()});
    std::fs::write(
        dir.join("registry").join(format!("{worker_id}.json")),
        enrolled.to_string(),
    )
    .unwrap();
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
                          "required_controls_suggested": ["ctrl.obs.audit-log-append-only"]}},
            {"rule_id": "rr_chunk", "match": {"capability_id": "cap.doc.chunk", "env": {"in": ["dev", "stage"]}},
             "decision": {"candidate_workers_ranked": [{"worker_species_id": "wrk.doc.chunker"}],
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
        let key = d.join("keys/package.key");
        let o = Command::new(BIN).arg("keygen").arg(&key).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let public = std::fs::read_to_string(key.with_extension("key.pub")).unwrap();
        let public = public.split_whitespace().nth(1).unwrap().to_owned();
        let trust = json!({"schema": "wcp-hall-trust/1", "version": 1,
            "namespaces": {"org.wcp-hall": {"threshold": 1, "keys": [{"public_key": public}]}}});
        std::fs::write(d.join("trust.json"), trust.to_string()).unwrap();
        sign_and_enroll(d, "hello", "wrk.hello.greeter", &key);
        sign_and_enroll(d, "doc_chunker", "wrk.doc.chunker", &key);
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

[identity]
operator_uids = [0]
[[identity.peers]]
uid = 0
tenants = ["acme-corp"]
"#;
        std::fs::write(d.join("hall.toml"), config).unwrap();
        let socket = d.join("hall.sock");
        let log = std::fs::File::create(d.join("hall.log")).unwrap();
        let child = Command::new(BIN)
            .args(["serve", "-c"])
            .arg(d.join("hall.toml"))
            .arg("-s")
            .arg(&socket)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut hall = Hall { dir, socket, child };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let o = Command::new(BIN)
                .args(["status", "-s"])
                .arg(&hall.socket)
                .output()
                .unwrap();
            if o.status.success() {
                return hall;
            }
            if let Ok(Some(s)) = hall.child.try_wait() {
                panic!("wcp-hall serve exited early ({s}): {}", hall.log());
            }
            assert!(
                Instant::now() < deadline,
                "the Hall did not come up: {}",
                hall.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
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
    let hall = Hall::start();
    // `timeout` turns a hung bridge into a failure instead of a stuck test.
    let o = Command::new("timeout")
        .arg("300")
        .arg(&python)
        .arg(repo("tests/mcp_client.py"))
        .arg(BIN)
        .arg(&hall.socket)
        .arg("acme-corp")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.success(),
        "the MCP client failed: {stderr}\nHall log: {}",
        hall.log()
    );
    let out: Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stdout)));

    // initialize
    assert_eq!(out["server_name"], "wcp-hall");
    assert_eq!(out["has_tools_capability"], true);

    // tools/list: one tool per capability, with the worker's schema; operator tools for uid 0.
    let tools = &out["tools"];
    let hello = &tools["cap_hello_greet"];
    assert_eq!(hello["title"], "cap.hello.greet");
    assert_eq!(hello["inputSchema"]["required"], json!(["name"]));
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
    // No package in the schema directory is enrolled for it here, but workers/ has its schema.
    assert!(tools["cap_research_register"]["inputSchema"].is_object());
    for t in [
        "wcp_approvals_list",
        "wcp_approval_resolve",
        "wcp_approval_escalate",
    ] {
        assert!(tools[t].is_object(), "operator tool {t} listed: {tools}");
    }

    // The hello worker ran, attested, with a receipt and the decision summary.
    let h = &out["hello"];
    assert_eq!(h["is_error"], false, "{h}");
    let result: Value = serde_json::from_str(h["text"][0].as_str().unwrap()).unwrap();
    assert_eq!(result["greeting"], "Hello, Ada!", "{h}");
    let s = &h["structured"];
    assert_eq!(s["status"], "completed");
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
        hm["structured"]["correlation_id"], "mcp-test-corr-1",
        "{hm}"
    );
    let result: Value = serde_json::from_str(hm["text"][0].as_str().unwrap()).unwrap();
    assert_eq!(result["greeting"], "Hello, Grace!");
    assert_eq!(result["correlation_id"], "mcp-test-corr-1");

    // The pipeline's chunker ran.
    let c = &out["chunk"];
    assert_eq!(c["is_error"], false, "{c}");
    let result: Value = serde_json::from_str(c["text"][0].as_str().unwrap()).unwrap();
    assert!(result["count"].as_u64().unwrap() >= 2, "{result}");
    assert_eq!(
        result["chunks"][0],
        "First paragraph. It has two sentences."
    );
    assert_eq!(
        c["structured"]["decision"]["worker_id"],
        "org.wcp-hall.doc-chunker.1"
    );

    // A denied capability: a tool error carrying the WCP deny code; receipted.
    let d = &out["denied"];
    assert_eq!(d["is_error"], true, "{d}");
    assert_eq!(d["structured"]["status"], "denied");
    assert_eq!(
        d["structured"]["decision"]["deny_code"],
        "DENY_NO_MATCHING_RULE"
    );
    assert!(
        d["text"][0]
            .as_str()
            .unwrap()
            .starts_with("DENY_NO_MATCHING_RULE: ")
    );
    assert!(d["structured"]["receipt"]["seq"].is_u64(), "{d}");

    // A request the worker's schema refuses is an error result, not a crash.
    assert_eq!(
        out["invalid_request"]["is_error"], true,
        "{}",
        out["invalid_request"]
    );

    // Operator tools reach the approval endpoints.
    let a = &out["approvals"];
    assert_eq!(a["is_error"], false, "{a}");
    assert_eq!(a["structured"]["pending"], json!([]));
    let r = &out["resolve_missing"];
    assert_eq!(r["is_error"], true, "{r}");
    assert!(r["text"][0].as_str().unwrap().contains("HTTP 404"), "{r}");

    // An unknown tool is a JSON-RPC error; the session goes on.
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

    // No Hall behind the socket: MCP errors, never a crash.
    let down = out["down_list"].as_str().unwrap();
    assert!(
        down.starts_with("error:") && down.contains("cannot reach the Hall"),
        "{down}"
    );
    let dc = &out["down_call"];
    assert_eq!(dc["is_error"], true);
    assert_eq!(dc["structured"]["code"], "hall_unreachable", "{dc}");
    assert_eq!(out["down_ping"], true);

    // stdout carried only protocol (the SDK parsed it); the bridge logged on stderr.
    assert!(stderr.contains("wcp-hall MCP bridge on stdio"), "{stderr}");
}
