//! End-to-end tests of `wcp-hall serve`: a real daemon on a temporary socket, real HTTP over
//! the socket, real signals, real peer credentials (a second uid via `nobody`).

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use hyper::Method;
use serde_json::{Value, json};
use wcp_hall::client;

use crate::hall_support::{BIN, copy_dir, native_hello_package, package_key, read_record, repo};

const NOBODY: u32 = 65534;

/// Rules for the daemon tests: a dev rule for hello without a policy gate, and a prod rule
/// without one either (so the blast threshold asks for a human).
fn rules() -> Value {
    json!({"rules": [
        {"rule_id": "rr_hello_dev", "match": {"capability_id": "cap.hello.greet", "env": {"in": ["dev", "stage"]}},
         "decision": {"candidate_workers_ranked": [{"worker_species_id": "wrk.hello.greeter"}],
                      "required_controls_suggested": ["ctrl.obs.audit-log-append-only"]}},
        {"rule_id": "rr_hello_prod", "match": {"capability_id": "cap.hello.greet", "env": "prod"},
         "decision": {"candidate_workers_ranked": [{"worker_species_id": "wrk.hello.greeter"}],
                      "required_controls_suggested": ["ctrl.obs.audit-log-append-only", "ctrl.blast_radius_scoring"]}}
    ]})
}

pub(crate) struct TestHall {
    pub(crate) dir: tempfile::TempDir,
    socket: PathBuf,
    child: Option<Child>,
    runtime: tokio::runtime::Runtime,
    /// Run the Hall as this uid (and gid) instead of root: an ordinary-user Hall.
    pub(crate) as_uid: Option<u32>,
    /// Start the Hall with this `RLIMIT_NOFILE` (soft and hard).
    nofile: Option<u64>,
}

impl TestHall {
    pub(crate) fn start(extra_toml: &str) -> Self {
        Self::start_with(extra_toml, "", |_| {})
    }

    /// [`Self::start`] with more lines in `[receipts]` and a hook that runs on the test
    /// directory before the daemon starts.
    fn start_with(extra_toml: &str, receipts_toml: &str, before: impl FnOnce(&Path)) -> Self {
        let mut hall = Self::prepare_with(extra_toml, receipts_toml, before);
        hall.spawn();
        hall
    }

    /// The Hall's directory and configuration, not started yet.
    fn prepare(extra_toml: &str) -> Self {
        Self::prepare_with(extra_toml, "", |_| {})
    }

    /// [`Self::prepare`] with more lines in `[receipts]` and a hook on the test directory.
    fn prepare_with(extra_toml: &str, receipts_toml: &str, before: impl FnOnce(&Path)) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        // Traversable by other uids (the nobody tests); the socket mode is the real gate.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(dir.path().join("rules.json"), rules().to_string()).unwrap();
        let reg = dir.path().join("registry");
        std::fs::create_dir(&reg).unwrap();
        std::fs::copy(
            repo("policies/registry/org.wcp-hall.hello.1.json"),
            reg.join("org.wcp-hall.hello.1.json"),
        )
        .unwrap();
        for sub in ["profiles", "cedar"] {
            let to = dir.path().join(sub);
            std::fs::create_dir(&to).unwrap();
            for e in std::fs::read_dir(repo(&format!("policies/{sub}"))).unwrap() {
                let e = e.unwrap();
                std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
            }
        }
        std::fs::create_dir(dir.path().join("keys")).unwrap();
        wcp_hall::crypto::KeyPair::generate()
            .unwrap()
            .write(&dir.path().join("keys/receipts.key"))
            .unwrap();
        let config = format!(
            r#"[hall]
require_signatory = true
allowed_tenants = ["acme-corp", "mcp.my-app"]

[paths]
rules = "rules.json"
registry_dir = "registry"
state_dir = "state"
profiles_dir = "profiles"

[receipts]
signing_key = "keys/receipts.key"
{receipts_toml}

[identity]
operator_uids = [0]
[[identity.peers]]
uid = 0
tenants = ["acme-corp"]
[[identity.peers]]
uid = {NOBODY}
tenants = ["mcp.my-app"]

{extra_toml}
"#
        );
        std::fs::write(dir.path().join("hall.toml"), config).unwrap();
        before(dir.path());
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        TestHall {
            socket: dir.path().join("hall.sock"),
            dir,
            child: None,
            runtime,
            as_uid: None,
            nofile: None,
        }
    }

    pub(crate) fn config_path(&self) -> PathBuf {
        self.dir.path().join("hall.toml")
    }

    pub(crate) fn spawn(&mut self) {
        self.spawn_until(|code, _| code == 200);
    }

    /// Starts the daemon and waits until `/wcp/health` answers as `ready` wants.
    #[allow(unsafe_code)] // Command::pre_exec is unsafe
    fn spawn_until(&mut self, ready: impl Fn(u16, &Value) -> bool) {
        let log = std::fs::File::create(self.dir.path().join("hall.log")).unwrap();
        let mut cmd = Command::new(BIN);
        if let Some(uid) = self.as_uid {
            // Everything the Hall reads or writes becomes the ordinary user's, as after an
            // install for that user.
            chown_tree(self.dir.path(), uid);
            cmd.uid(uid).gid(uid);
        }
        if let Some(n) = self.nofile {
            // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, n, n)
                        .map_err(std::io::Error::from)
                });
            }
        }
        let child = cmd
            .args(["serve", "-c"])
            .arg(self.config_path())
            .arg("-s")
            .arg(&self.socket)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn wcp-hall serve");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok((code, body)) = self.try_call(Method::GET, "/wcp/health", None)
                && ready(code, &body)
            {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("wcp-hall serve exited early ({status}): {}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "the Hall did not come up: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("hall.log")).unwrap_or_default()
    }

    fn try_call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), client::ClientError> {
        self.runtime
            .block_on(client::call(
                &self.socket,
                method,
                path,
                body,
                Duration::from_secs(30),
            ))
            .map(|a| (a.status.as_u16(), a.body))
    }

    pub(crate) fn call(&self, method: Method, path: &str, body: Option<&Value>) -> (u16, Value) {
        self.try_call(method, path, body)
            .unwrap_or_else(|e| panic!("{e}; log: {}", self.log()))
    }

    pub(crate) fn signal(&self, sig: nix::sys::signal::Signal) {
        let pid = self.child.as_ref().expect("running").id() as i32;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig).unwrap();
    }

    /// Waits for the daemon to exit; returns its exit code.
    pub(crate) fn wait_exit(&mut self, within: Duration) -> i32 {
        let deadline = Instant::now() + within;
        let child = self.child.as_mut().expect("running");
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return status.code().unwrap_or(-1);
            }
            assert!(Instant::now() < deadline, "the Hall did not exit in time");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, exit 0, then `wcp-hall receipts verify` of the whole log with the public key:
    /// asserts it passes and returns its JSON report.
    pub(crate) fn stop_and_verify_log(&mut self) -> Value {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        assert_eq!(self.wait_exit(Duration::from_secs(20)), 0);
        let o = Command::new(BIN)
            .args(["--json", "receipts", "verify", "--log"])
            .arg(self.dir.path().join("state/receipts"))
            .arg("--pubkey")
            .arg(self.dir.path().join("keys/receipts.key.pub"))
            .output()
            .unwrap();
        let v: Value = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
        assert_eq!(
            o.status.code(),
            Some(0),
            "{v} {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert_eq!(v["failed"], 0, "{v}");
        v
    }

    /// `wcp-hall --json receipts show SEQ` on this Hall's log: the record as JSON (`Null`
    /// when it is missing, with the exit code to tell).
    pub(crate) fn show_receipt(&self, seq: u64) -> (Option<i32>, Value, String) {
        let o = Command::new(BIN)
            .args(["--json", "receipts", "show", &seq.to_string(), "--log"])
            .arg(self.dir.path().join("state/receipts"))
            .output()
            .unwrap();
        (
            o.status.code(),
            serde_json::from_slice(&o.stdout).unwrap_or(Value::Null),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    }

    fn cli(&self, args: &[&str], uid: Option<u32>) -> Output {
        let mut cmd = Command::new(BIN);
        cmd.args(args).arg("--socket").arg(&self.socket);
        cmd.env_remove("WCP_HALL_SOCKET")
            .env_remove("WCP_TENANT_ID");
        if let Some(uid) = uid {
            cmd.uid(uid).gid(NOBODY);
        }
        cmd.output().expect("run wcp-hall client")
    }
}

/// `chown -R uid:uid` without following links.
fn chown_tree(dir: &Path, uid: u32) {
    std::os::unix::fs::lchown(dir, Some(uid), Some(uid)).unwrap();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            chown_tree(&e.path(), uid);
        } else {
            std::os::unix::fs::lchown(e.path(), Some(uid), Some(uid)).unwrap();
        }
    }
}

impl Drop for TestHall {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub(crate) fn input(capability: &str, tenant: &str) -> Value {
    json!({"capability_id": capability, "env": "dev", "data_label": "PUBLIC", "tenant_risk": "low",
           "qos_class": "P2", "tenant_id": tenant, "correlation_id": uuid::Uuid::new_v4().to_string(),
           "request": {"name": "Ada"}})
}

pub(crate) fn deny_code(body: &Value) -> &str {
    body["decision"]["deny_reason_if_denied"]["code"]
        .as_str()
        .unwrap_or("")
}

#[test]
fn discovery_routing_and_dry_run_dispatch_over_the_socket() {
    let hall = TestHall::start("");
    let (s, health) = hall.call(Method::GET, "/wcp/health", None);
    assert_eq!(s, 200);
    assert_eq!(health["status"], "ok");
    assert_eq!(health["rules"], 2);
    let (s, v) = hall.call(Method::GET, "/wcp/version", None);
    assert_eq!((s, v["api_version"].as_str()), (200, Some("wcp-hall/1")));
    let (_, caps) = hall.call(Method::GET, "/wcp/capabilities", None);
    assert_eq!(caps["capabilities"][0]["capability_id"], "cap.hello.greet");
    assert_eq!(
        caps["capabilities"][0]["worker_species"][0],
        "wrk.hello.greeter"
    );
    let (_, workers) = hall.call(Method::GET, "/wcp/workers", None);
    assert_eq!(workers["workers"][0]["worker_id"], "org.wcp-hall.hello.1");

    let (s, decision) = hall.call(
        Method::POST,
        "/wcp/route",
        Some(&input("cap.hello.greet", "acme-corp")),
    );
    assert_eq!(s, 200);
    assert_eq!(decision["denied"], false);
    assert_eq!(decision["selected_worker_species_id"], "wrk.hello.greeter");

    let mut dry = input("cap.hello.greet", "acme-corp");
    dry["dry_run"] = json!(true);
    let (s, out) = hall.call(Method::POST, "/wcp/dispatch", Some(&dry));
    assert_eq!(s, 200);
    assert_eq!(out["status"], "dry_run");
    assert_eq!(out["decision"]["dry_run"], true);

    let (_, metrics) = hall.call(Method::GET, "/metrics", None);
    let text = metrics.as_str().unwrap_or("");
    assert!(
        text.contains("wcp_hall_decisions_total{outcome=\"allowed\",code=\"\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("wcp_hall_dispatch_duration_seconds_count 1"),
        "{text}"
    );

    // The CLI against the running Hall.
    let o = hall.cli(&["status"], None);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("ok at "));
    let o = hall.cli(
        &[
            "dispatch",
            "--capability",
            "cap.hello.greet",
            "--tenant-id",
            "acme-corp",
            "--dry-run",
        ],
        None,
    );
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        String::from_utf8_lossy(&o.stdout)
            .contains("dry_run: cap.hello.greet via wrk.hello.greeter")
    );
}

#[test]
fn each_deny_path_answers_with_its_code() {
    let hall = TestHall::start("");
    let cases = [
        (
            input("cap.unknown.thing", "acme-corp"),
            "DENY_NO_MATCHING_RULE",
        ),
        (
            input("cap.hello.greet", "rogue.agent"),
            "DENY_UNKNOWN_TENANT",
        ),
        (
            {
                let mut i = input("cap.hello.greet", "acme-corp");
                i["correlation_id"] = json!("  ");
                i
            },
            "DENY_MISSING_CORRELATION_ID",
        ),
        (
            {
                let mut i = input("cap.hello.greet", "acme-corp");
                i["blast_score"] = json!(101);
                i
            },
            "DENY_INVALID_INPUT",
        ),
    ];
    for (body, code) in cases {
        let (s, out) = hall.call(Method::POST, "/wcp/dispatch", Some(&body));
        assert_eq!(s, 200);
        assert_eq!(out["status"], "denied");
        assert_eq!(out["denied"], true);
        assert_eq!(deny_code(&out), code, "{out}");
    }
    let o = hall.cli(
        &[
            "dispatch",
            "--capability",
            "cap.nope",
            "--tenant-id",
            "acme-corp",
        ],
        None,
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stdout).contains("denied: DENY_NO_MATCHING_RULE"));
}

#[test]
fn requests_without_ids_are_recorded_denials_and_a_blank_capability_is_a_named_400() {
    let mut hall = TestHall::start("");
    let mut cases = Vec::new();
    let mut absent = input("cap.hello.greet", "acme-corp");
    absent.as_object_mut().unwrap().remove("correlation_id");
    cases.push((absent, "DENY_MISSING_CORRELATION_ID"));
    let mut empty = input("cap.hello.greet", "acme-corp");
    empty["correlation_id"] = json!("");
    cases.push((empty, "DENY_MISSING_CORRELATION_ID"));
    let mut no_tenant = input("cap.hello.greet", "");
    no_tenant["correlation_id"] = json!("");
    // require_signatory is on: an empty tenant is not a signatory.
    cases.push((no_tenant, "DENY_UNKNOWN_TENANT"));
    let mut seqs = Vec::new();
    for (body, code) in cases {
        let (s, out) = hall.call(Method::POST, "/wcp/dispatch", Some(&body));
        assert_eq!(s, 200, "{out}");
        assert_eq!(out["status"], "denied", "{out}");
        assert_eq!(deny_code(&out), code, "{out}");
        seqs.push(
            out["execution"]["receipt"]["seq"]
                .as_u64()
                .unwrap_or_else(|| panic!("no receipt: {out}")),
        );
    }
    // Never reaches routing: a client error naming the field, not a 503.
    for blank in ["", "  "] {
        let mut body = input(blank, "acme-corp");
        body["correlation_id"] = json!("");
        let (s, out) = hall.call(Method::POST, "/wcp/dispatch", Some(&body));
        assert_eq!(s, 400, "{out}");
        assert_eq!(out["code"], "invalid_input", "{out}");
        assert!(
            out["message"]
                .as_str()
                .unwrap()
                .contains("RouteInput.capability_id"),
            "{out}"
        );
    }
    let report = hall.stop_and_verify_log();
    assert!(
        report["records"].as_u64().unwrap() > *seqs.iter().max().unwrap(),
        "{report}"
    );
}

#[test]
fn a_peer_may_only_act_as_the_tenants_its_uid_maps_to() {
    let hall = TestHall::start("[server]\nsocket_mode = \"0666\"\n");
    // nobody claims root's tenant: denied by the kernel-verified identity.
    let o = hall.cli(
        &[
            "--json",
            "dispatch",
            "--capability",
            "cap.hello.greet",
            "--tenant-id",
            "acme-corp",
            "--dry-run",
        ],
        Some(NOBODY),
    );
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let out: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(deny_code(&out), "DENY_UNKNOWN_TENANT");
    // Its own tenant is fine.
    let o = hall.cli(
        &[
            "dispatch",
            "--capability",
            "cap.hello.greet",
            "--tenant-id",
            "mcp.my-app",
            "--dry-run",
        ],
        Some(NOBODY),
    );
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // And root may not act as nobody's tenant either.
    let (_, out) = hall.call(
        Method::POST,
        "/wcp/dispatch",
        Some(&input("cap.hello.greet", "mcp.my-app")),
    );
    assert_eq!(deny_code(&out), "DENY_UNKNOWN_TENANT");
    // Operator actions need an operator.
    let o = hall.cli(&["reload"], Some(NOBODY));
    assert_eq!(
        o.status.code(),
        Some(77),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("not an operator"));
}

#[test]
fn the_capabilities_command_lists_what_the_tenant_may_route() {
    // The socket is open to every uid; the tenant map is the gate.
    let hall = TestHall::start("[server]\nsocket_mode = \"0666\"\n");
    let text = |o: &Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };
    let o = hall.cli(&["capabilities", "--tenant-id", "acme-corp"], None);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = text(&o);
    assert!(
        out.contains("cap.hello.greet  → wrk.hello.greeter (org.wcp-hall.hello.1), rule rr_hello_dev: allowed"),
        "{out}"
    );

    // --json is the Hall's answer; at the edge no rule matches: listed as not routable, why.
    let o = hall.cli(
        &[
            "--json",
            "capabilities",
            "--tenant-id",
            "acme-corp",
            "--env",
            "edge",
        ],
        None,
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["capabilities"], json!([]), "{v}");
    assert_eq!(
        v["not_routable"][0]["capability_id"], "cap.hello.greet",
        "{v}"
    );
    assert_eq!(
        v["not_routable"][0]["deny_code"], "DENY_NO_MATCHING_RULE",
        "{v}"
    );

    // nobody may act as mcp.my-app only: asking as acme-corp is refused, with the reason.
    let o = hall.cli(&["capabilities", "--tenant-id", "acme-corp"], Some(NOBODY));
    assert_ne!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("tenant_not_allowed"), "{}", text(&o));
}

#[test]
fn the_socket_mode_keeps_other_uids_out() {
    let hall = TestHall::start("");
    let mode = std::fs::metadata(&hall.socket)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o660);
    let o = hall.cli(&["status"], Some(NOBODY));
    assert_eq!(o.status.code(), Some(69));
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot reach the Hall"));
}

fn prod_blast(tenant: &str) -> Value {
    let mut i = input("cap.hello.greet", tenant);
    i["env"] = json!("prod");
    i["blast_score"] = json!(90);
    i["dry_run"] = json!(true);
    i
}

#[test]
fn require_human_waits_for_an_operator_who_approves_or_denies() {
    let hall = TestHall::start(
        "[approvals]\nwait_ms = 200\ntimeout_ms = 600000\n[server]\nsocket_mode = \"0666\"\n",
    );
    let (s, out) = hall.call(
        Method::POST,
        "/wcp/dispatch",
        Some(&prod_blast("acme-corp")),
    );
    assert_eq!(s, 200);
    assert_eq!(out["status"], "pending_approval", "{out}");
    assert_eq!(out["denied"], false);
    assert_eq!(out["supervisor_required"], true);
    assert_eq!(out["supervisor_level"], "gatekeeper");
    let id = out["pending_approval_id"].as_str().unwrap().to_owned();
    assert!(out["approval_expires_at"].as_str().unwrap().ends_with('Z'));

    let (_, pending) = hall.call(Method::GET, "/wcp/approvals/pending", None);
    assert_eq!(pending["pending"][0]["pending_approval_id"], id.as_str());
    // A non-operator cannot resolve.
    let o = hall.cli(&["approvals", "approve", &id], Some(NOBODY));
    assert_eq!(o.status.code(), Some(77));
    // The operator approves from the CLI: the request is re-routed with the approval.
    let o = hall.cli(&["approvals", "approve", &id, "--note", "checked"], None);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stdout).contains("approved"));
    let (_, polled) = hall.call(Method::GET, &format!("/wcp/approvals/{id}"), None);
    assert_eq!(polled["approval"]["status"], "approved");
    assert_eq!(polled["response"]["status"], "dry_run");
    assert_eq!(polled["response"]["decision"]["denied"], false);
    // Approving twice is a conflict.
    let (s, err) = hall.call(
        Method::POST,
        &format!("/wcp/approvals/{id}/resolve"),
        Some(&json!({"action": "approve"})),
    );
    assert_eq!(
        (s, err["code"].as_str()),
        (409, Some("approval_not_pending"))
    );

    // Deny.
    let (_, out) = hall.call(
        Method::POST,
        "/wcp/dispatch",
        Some(&prod_blast("acme-corp")),
    );
    let id = out["pending_approval_id"].as_str().unwrap().to_owned();
    let o = hall.cli(&["approvals", "deny", &id], None);
    assert_eq!(o.status.code(), Some(0));
    let (_, polled) = hall.call(Method::GET, &format!("/wcp/approvals/{id}"), None);
    assert_eq!(polled["response"]["status"], "denied");
    assert_eq!(
        polled["response"]["decision"]["deny_reason_if_denied"]["code"],
        "DENY_REQUIRES_HUMAN"
    );
}

#[test]
fn a_waiting_caller_gets_the_approved_outcome_and_approvals_expire() {
    let hall = TestHall::start("[approvals]\nwait_ms = 20000\ntimeout_ms = 1500\n");
    // The caller waits; an operator approves meanwhile; the caller gets the final answer.
    let socket = hall.socket.clone();
    let waiter = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(client::call(
            &socket,
            Method::POST,
            "/wcp/dispatch",
            Some(&prod_blast("acme-corp")),
            Duration::from_secs(30),
        ))
        .unwrap()
        .body
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    let id = loop {
        let (_, pending) = hall.call(Method::GET, "/wcp/approvals/pending", None);
        if let Some(id) = pending["pending"][0]["pending_approval_id"].as_str() {
            break id.to_owned();
        }
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    };
    let (s, _) = hall.call(
        Method::POST,
        &format!("/wcp/approvals/{id}/resolve"),
        Some(&json!({"action": "approve"})),
    );
    assert_eq!(s, 200);
    let answer = waiter.join().unwrap();
    assert_eq!(answer["status"], "dry_run", "{answer}");

    // Nobody resolves this one: it expires (denied).
    let (_, out) = hall.call(
        Method::POST,
        "/wcp/dispatch",
        Some(&{
            let mut i = prod_blast("acme-corp");
            i["dry_run"] = json!(false);
            i
        }),
    );
    let id = out["pending_approval_id"].as_str().map(str::to_owned);
    let id = match id {
        Some(id) => id,
        // The caller waited past the expiry: the answer is already the denial.
        None => {
            assert_eq!(out["status"], "denied", "{out}");
            return;
        }
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, polled) = hall.call(Method::GET, &format!("/wcp/approvals/{id}"), None);
        if polled["approval"]["status"] == "expired" {
            assert_eq!(polled["response"]["status"], "denied");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "approval never expired: {polled}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn pending_approvals_survive_a_restart() {
    let mut hall = TestHall::start("[approvals]\nwait_ms = 100\n");
    let (_, out) = hall.call(
        Method::POST,
        "/wcp/dispatch",
        Some(&prod_blast("acme-corp")),
    );
    let id = out["pending_approval_id"].as_str().unwrap().to_owned();
    hall.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(hall.wait_exit(Duration::from_secs(20)), 0);
    hall.spawn();
    let (_, pending) = hall.call(Method::GET, "/wcp/approvals/pending", None);
    assert_eq!(pending["pending"][0]["pending_approval_id"], id.as_str());
    let o = hall.cli(&["approvals", "approve", &id], None);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn reload_swaps_good_configuration_and_keeps_the_old_one_on_error() {
    let hall = TestHall::start("");
    let (_, out) = hall.call(
        Method::POST,
        "/wcp/route",
        Some(&input("cap.doc.summarize", "acme-corp")),
    );
    assert_eq!(out["matched_rule_id"], "NO_MATCH");
    // A good change via SIGHUP.
    let mut r = rules();
    r["rules"].as_array_mut().unwrap().push(
        json!({"rule_id": "rr_sum", "match": {"capability_id": "cap.doc.summarize"},
        "decision": {"candidate_workers_ranked": [{"worker_species_id": "wrk.hello.greeter"}]}}),
    );
    std::fs::write(hall.dir.path().join("rules.json"), r.to_string()).unwrap();
    hall.signal(nix::sys::signal::Signal::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(10);
    while hall.call(Method::GET, "/wcp/health", None).1["generation"] != 2 {
        assert!(Instant::now() < deadline, "SIGHUP did not reload");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (_, out) = hall.call(
        Method::POST,
        "/wcp/route",
        Some(&input("cap.doc.summarize", "acme-corp")),
    );
    assert_eq!(out["matched_rule_id"], "rr_sum");
    // A bad change: refused with the reason, the previous rules stay active.
    std::fs::write(
        hall.dir.path().join("rules.json"),
        r#"{"rules": [{"rule_id": "x", "match": {"env": {"in": "dev"}}}]}"#,
    )
    .unwrap();
    let (s, err) = hall.call(Method::POST, "/wcp/reload", None);
    assert_eq!(s, 422);
    assert_eq!(err["code"], "reload_failed");
    // The CLI: a refused configuration is a configuration error (78), not "unreachable" (69).
    let o = hall.cli(&["reload"], None);
    assert_eq!(o.status.code(), Some(78), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("reload_failed"),
        "{o:?}"
    );
    assert!(
        err["message"].as_str().unwrap().contains("substring"),
        "{err}"
    );
    hall.signal(nix::sys::signal::Signal::SIGHUP);
    std::thread::sleep(Duration::from_millis(200));
    let (_, health) = hall.call(Method::GET, "/wcp/health", None);
    assert_eq!(health["generation"], 2);
    let (_, out) = hall.call(
        Method::POST,
        "/wcp/route",
        Some(&input("cap.doc.summarize", "acme-corp")),
    );
    assert_eq!(out["matched_rule_id"], "rr_sum");
}

#[test]
fn malformed_oversized_and_slow_requests_are_refused_cleanly() {
    let hall = TestHall::start("[server]\nmax_body_bytes = 2048\nread_timeout_ms = 500\n");
    let raw = |body: &str| {
        let mut s = std::os::unix::net::UnixStream::connect(&hall.socket).unwrap();
        write!(
            s,
            "POST /wcp/dispatch HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    };
    let out = raw("{not json");
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    assert!(out.contains("\"code\":\"invalid_json\""));
    let out = raw(r#"{"capability_id": "cap.a", "env": "production"}"#);
    assert!(
        out.contains("\"code\":\"invalid_input\"") && out.contains("RouteInput.env"),
        "{out}"
    );
    let big = format!(r#"{{"pad": "{}"}}"#, "x".repeat(4096));
    let out = raw(&big);
    assert!(out.starts_with("HTTP/1.1 413"), "{out}");
    assert!(out.contains("body_too_large"));
    let (s, err) = hall.call(Method::GET, "/wcp/nothing-here", None);
    assert_eq!((s, err["code"].as_str()), (404, Some("not_found")));

    // A slow client that never finishes its headers is cut off.
    let mut slow = std::os::unix::net::UnixStream::connect(&hall.socket).unwrap();
    slow.write_all(b"POST /wcp/route HTTP/1.1\r\nhost: x\r\n")
        .unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let started = Instant::now();
    let mut buf = Vec::new();
    let _ = slow.read_to_end(&mut buf);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the slow connection was not closed"
    );
    // The Hall is still healthy.
    assert_eq!(hall.call(Method::GET, "/wcp/health", None).0, 200);
}

/// Sends raw bytes, reads the answer to EOF: (status, JSON body or Null, the whole text).
fn raw_exchange(socket: &Path, request: &[u8]) -> (u16, Value, String) {
    let mut s = std::os::unix::net::UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .get(9..12)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .and_then(|(_, b)| serde_json::from_str(b).ok())
        .unwrap_or(Value::Null);
    (status, body, text)
}

#[test]
fn every_error_answer_is_json_with_code_and_message() {
    let hall = TestHall::start("[server]\nmax_body_bytes = 512\n");
    let many_headers: String = (0..200).map(|i| format!("x-h{i}: v\r\n")).collect();
    let cases: Vec<(Vec<u8>, u16, &str)> = vec![
        (b"GET /wcp/nothing HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n".to_vec(), 404, "not_found"),
        (b"GET /wcp/dispatch HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n".to_vec(), 405, "method_not_allowed"),
        (b"DELETE /wcp/health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n".to_vec(), 405, "method_not_allowed"),
        (
            format!("POST /wcp/route HTTP/1.1\r\nhost: x\r\ncontent-length: 1000\r\nconnection: close\r\n\r\n{}", "x".repeat(1000)).into_bytes(),
            413,
            "body_too_large",
        ),
        (format!("GET /_ping HTTP/1.1\r\nhost: x\r\n{many_headers}\r\n").into_bytes(), 431, "headers_too_large"),
        (b"POST /wcp/route HTTP/1.1\r\nhost: x\r\ncontent-length: abc\r\n\r\n".to_vec(), 400, "malformed_request"),
        (b"POST /wcp/route HTTP/1.1\r\nhost: x\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n".to_vec(), 400, "malformed_request"),
        (b"POST /wcp/route HTTP/1.1\r\nhost: x\r\ntransfer-encoding: gzip\r\n\r\n".to_vec(), 400, "malformed_request"),
        (b"GET /wcp/\xff\xfe HTTP/1.1\r\nhost: x\r\n\r\n".to_vec(), 400, "malformed_request"),
        (b"NOT HTTP AT ALL\r\n\r\n".to_vec(), 400, "malformed_request"),
        (b"GET /wcp/approvals/%FF HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n".to_vec(), 400, "bad_request"),
    ];
    for (request, status, code) in cases {
        let (s, body, text) = raw_exchange(&hall.socket, &request);
        let shown = String::from_utf8_lossy(&request);
        assert_eq!(s, status, "{shown:?} -> {text}");
        assert!(
            text.to_ascii_lowercase()
                .contains("content-type: application/json"),
            "{shown:?} -> {text}"
        );
        assert_eq!(body["code"], code, "{shown:?} -> {text}");
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{shown:?} -> {text}"
        );
    }
    // Duplicate keys are refused, naming the key: no last-one-wins `dry_run`.
    let body = r#"{"capability_id": "cap.hello.greet", "env": "dev", "data_label": "PUBLIC", "tenant_risk": "low", "qos_class": "P2", "tenant_id": "acme-corp", "dry_run": true, "dry_run": false}"#;
    let (s, body, text) = raw_exchange(
        &hall.socket,
        format!(
            "POST /wcp/dispatch HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    assert_eq!(
        (s, body["code"].as_str()),
        (400, Some("invalid_json")),
        "{text}"
    );
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("duplicate key \"dry_run\""),
        "{text}"
    );
    // The Hall is unharmed, and keep-alive answers still work after an error on another
    // connection.
    assert_eq!(hall.call(Method::GET, "/wcp/health", None).0, 200);
}

#[test]
fn two_hundred_concurrent_clients_all_get_answers() {
    let hall = TestHall::start("");
    let socket = hall.socket.clone();
    let answers = hall.runtime.block_on(async move {
        let mut tasks = Vec::new();
        for i in 0..200 {
            let socket = socket.clone();
            tasks.push(tokio::spawn(async move {
                let mut body = input("cap.hello.greet", "acme-corp");
                body["dry_run"] = json!(true);
                body["request"] = json!({"i": i});
                client::call(
                    &socket,
                    Method::POST,
                    "/wcp/dispatch",
                    Some(&body),
                    Duration::from_secs(60),
                )
                .await
            }));
        }
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    });
    let mut hashes = std::collections::BTreeSet::new();
    for a in answers {
        let a = a.expect("every client gets an answer");
        assert_eq!(a.status.as_u16(), 200, "{}", a.body);
        assert_eq!(a.body["status"], "dry_run");
        hashes.insert(
            a.body["decision"]["artifact_hash"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    assert_eq!(
        hashes.len(),
        200,
        "each request was decided on its own input"
    );
}

#[test]
fn sigterm_stops_accepting_and_exits_zero_after_in_flight_work() {
    let mut hall =
        TestHall::start("[approvals]\nwait_ms = 1500\n[server]\nshutdown_grace_ms = 5000\n");
    // A request in flight (waiting for a human) when SIGTERM arrives.
    let socket = hall.socket.clone();
    let waiter = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(client::call(
            &socket,
            Method::POST,
            "/wcp/dispatch",
            Some(&prod_blast("acme-corp")),
            Duration::from_secs(30),
        ))
    });
    std::thread::sleep(Duration::from_millis(300));
    hall.signal(nix::sys::signal::Signal::SIGTERM);
    let answer = waiter
        .join()
        .unwrap()
        .expect("the in-flight request is answered, not dropped");
    assert_eq!(answer.body["status"], "pending_approval");
    assert_eq!(hall.wait_exit(Duration::from_secs(20)), 0);
    assert!(
        hall.try_call(Method::GET, "/wcp/health", None).is_err(),
        "no longer accepting"
    );
    assert!(hall.log().contains("wcp-hall stopped"), "{}", hall.log());
}

#[test]
fn a_bad_configuration_exits_78_and_a_busy_socket_is_not_stolen() {
    let hall = TestHall::start("");
    // Another Hall on the same socket refuses to start.
    let o = Command::new(BIN)
        .args(["serve", "-c"])
        .arg(hall.config_path())
        .arg("-s")
        .arg(&hall.socket)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&o.stderr).contains("already listening"));
    assert_eq!(hall.call(Method::GET, "/wcp/health", None).0, 200);
    let bad = hall.dir.path().join("bad.toml");
    std::fs::write(&bad, "[server]\nsocket_mode = \"rwx\"\n").unwrap();
    let o = Command::new(BIN)
        .args(["serve", "-c"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&o.stderr).contains("socket_mode"));
}

#[test]
fn a_failed_start_leaves_no_socket_and_no_new_state_directory_behind() {
    let hall = TestHall::start("");
    let base = std::fs::read_to_string(hall.config_path()).unwrap();
    let serve = |config: &str, name: &str| {
        let path = hall.dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, config).unwrap();
        let socket = hall.dir.path().join(format!("{name}.sock"));
        let o = Command::new(BIN)
            .args(["serve", "-c"])
            .arg(&path)
            .arg("-s")
            .arg(&socket)
            .output()
            .unwrap();
        (o, socket)
    };
    // A missing receipt key: refused before anything is created.
    let config = base
        .replace("keys/receipts.key", "keys/missing.key")
        .replace("state_dir = \"state\"", "state_dir = \"state-missing-key\"");
    let (o, socket) = serve(&config, "missing-key");
    assert_eq!(o.status.code(), Some(78), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("missing.key"),
        "{o:?}"
    );
    assert!(!socket.exists(), "the socket is left behind");
    assert!(!hall.dir.path().join("state-missing-key").exists());
    // A receipt log that cannot open: the start fails after binding, and removes its socket
    // and the state directory it created.
    std::fs::write(hall.dir.path().join("not-a-dir"), "x").unwrap();
    let config = base
        .replace("state_dir = \"state\"", "state_dir = \"state-bad-log\"")
        .replace(
            "signing_key = \"keys/receipts.key\"",
            "signing_key = \"keys/receipts.key\"\nlog_dir = \"not-a-dir\"",
        );
    let (o, socket) = serve(&config, "bad-log");
    assert_eq!(o.status.code(), Some(78), "{o:?}");
    assert!(!socket.exists(), "the socket is left behind: {o:?}");
    assert!(!hall.dir.path().join("state-bad-log").exists(), "{o:?}");
    // The running Hall's socket (not created by those starts) is untouched.
    assert_eq!(hall.call(Method::GET, "/wcp/health", None).0, 200);
}

#[test]
fn the_cedar_gate_decides_with_reasons_and_its_level_reaches_the_approval() {
    let hall = TestHall::start(
        "[profiles]\ndev = \"prof.dev.permissive\"\nprod = \"prof.prod.strict\"\n[approvals]\nwait_ms = 100\n",
    );
    // prod is gated on every dispatch: a low-risk tenant is allowed, with the policies' reasons.
    let mut low = input("cap.hello.greet", "acme-corp");
    low["env"] = json!("prod");
    low["dry_run"] = json!(true);
    let (_, out) = hall.call(Method::POST, "/wcp/dispatch", Some(&low));
    assert_eq!(out["status"], "dry_run", "{out}");
    assert_eq!(out["policy"]["decision"], "ALLOW", "{out}");
    assert!(
        out["policy"]["policy_version"]
            .as_str()
            .unwrap()
            .starts_with("wcp-default@")
    );
    assert_eq!(out["policy"]["profile_id"], "prof.prod.strict");
    // A high-risk tenant needs a gatekeeper: a pending approval at that level.
    let mut high = low.clone();
    high["tenant_risk"] = json!("high");
    let (_, out) = hall.call(Method::POST, "/wcp/dispatch", Some(&high));
    assert_eq!(out["status"], "pending_approval", "{out}");
    assert_eq!(out["supervisor_level"], "gatekeeper");
    assert_eq!(out["policy"]["decision"], "REQUIRE_HUMAN");
    assert!(
        out["escalation_context"]["reason"]
            .as_str()
            .unwrap()
            .contains("pol.prod.high-risk-tenant")
    );
    // The operator approves: it re-routes with the approval and the gate's REQUIRE_HUMAN is satisfied.
    let id = out["pending_approval_id"].as_str().unwrap();
    let o = hall.cli(&["approvals", "approve", id], None);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let (_, polled) = hall.call(Method::GET, &format!("/wcp/approvals/{id}"), None);
    assert_eq!(polled["response"]["status"], "dry_run", "{polled}");
}

/// Runs the CLI as `uid` and parses its `--json` output.
fn cli_json(hall: &TestHall, args: &[&str], uid: Option<u32>) -> (Option<i32>, Value) {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let o = hall.cli(&all, uid);
    let out = serde_json::from_slice(&o.stdout)
        .or_else(|_| serde_json::from_slice(&o.stderr))
        .unwrap_or_else(|_| {
            json!({"stdout": String::from_utf8_lossy(&o.stdout), "stderr": String::from_utf8_lossy(&o.stderr)})
        });
    (o.status.code(), out)
}

#[test]
fn the_requester_collects_an_approved_result_that_the_operator_never_sees() {
    let mut hall = TestHall::start(
        "[server]\nsocket_mode = \"0666\"\n[profiles]\ndev = \"prof.dev.permissive\"\nprod = \"prof.prod.strict\"\n\
         [approvals]\nwait_ms = 100\noutcome_retention_ms = 3000\n",
    );
    restart_attested(&mut hall, |dir| {
        signed_hello(dir);
        // The dev rule asks the policy gate too.
        let mut r = rules();
        r["rules"][0]["decision"]["escalation"] = json!({"policy_gate": true});
        std::fs::write(dir.join("rules.json"), r.to_string()).unwrap();
    });
    // nobody (tenant mcp.my-app) asks for hello on RESTRICTED data: the Cedar gate wants a
    // gatekeeper (pol.nonprod.restricted-review).
    let ask = |name: &str| {
        cli_json(
            &hall,
            &[
                "dispatch",
                "--capability",
                "cap.hello.greet",
                "--data-label",
                "RESTRICTED",
                "--tenant-id",
                "mcp.my-app",
                "--correlation-id",
                "agent-call-1",
                "--input",
                &json!({"name": name}).to_string(),
            ],
            Some(NOBODY),
        )
    };
    let (code, out) = ask("Ada");
    assert_eq!(code, Some(75), "{out}");
    assert_eq!(out["status"], "pending_approval", "{out}");
    let id = out["pending_approval_id"].as_str().unwrap().to_owned();
    // The identical call again (same correlation id): the same approval, not a second one.
    let (_, again) = ask("Ada");
    assert_eq!(again["pending_approval_id"], id.as_str(), "{again}");
    let (_, pending) = hall.call(Method::GET, "/wcp/approvals/pending", None);
    assert_eq!(pending["pending"].as_array().unwrap().len(), 1, "{pending}");
    // The same key for a different request is refused: an approval covers what a human saw.
    let (code, other) = ask("Mallory");
    assert_ne!(code, Some(0), "{other}");
    let message = other["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("409): correlation_id_reused"), "{other}");

    // The operator approves: the worker runs, and the operator is told so, without its result.
    let (code, approved) = cli_json(&hall, &["approvals", "approve", &id], None);
    assert_eq!(code, Some(0), "{approved}");
    assert_eq!(approved["approval"]["status"], "approved", "{approved}");
    assert_eq!(approved["response"]["status"], "completed", "{approved}");
    assert!(approved["response"]["result"].is_null(), "{approved}");
    assert!(
        approved["response"]["result_withheld"].is_string(),
        "{approved}"
    );
    assert!(!approved.to_string().contains("Hello, Ada"), "{approved}");
    assert!(approved["approval"].get("outcome").is_none(), "{approved}");
    // Nor does the operator see it when looking later, whatever tenant it names.
    for path in [
        format!("/wcp/approvals/{id}"),
        format!("/wcp/approvals/{id}?tenant_id=mcp.my-app"),
    ] {
        let (s, seen) = hall.call(Method::GET, &path, None);
        assert_eq!(s, 200, "{seen}");
        assert_eq!(seen["response"]["status"], "completed", "{seen}");
        assert!(!seen.to_string().contains("Hello, Ada"), "{seen}");
    }
    // The requester, as the tenant it asked as, collects the result.
    let (code, mine) = cli_json(
        &hall,
        &["approvals", "show", &id, "--tenant-id", "mcp.my-app"],
        Some(NOBODY),
    );
    assert_eq!(code, Some(0), "{mine}");
    assert_eq!(
        mine["response"]["result"]["greeting"], "Hello, Ada!",
        "{mine}"
    );
    let seq = mine["response"]["execution"]["receipt"]["seq"].clone();
    assert!(seq.is_u64(), "{mine}");
    // Without naming its tenant it is nobody in particular: no such approval.
    let (code, anon) = cli_json(&hall, &["approvals", "show", &id], Some(NOBODY));
    assert_eq!(code, Some(1), "{anon}");
    let message = anon["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("404): not_found"), "{anon}");
    // Calling again with the same correlation id returns the kept outcome; nothing runs again.
    let (code, repeat) = ask("Ada");
    assert_eq!(code, Some(0), "{repeat}");
    assert_eq!(repeat["result"]["greeting"], "Hello, Ada!", "{repeat}");
    assert_eq!(repeat["execution"]["receipt"]["seq"], seq, "{repeat}");
    // A malformed query is a JSON 400, not a silent default.
    let (s, bad) = hall.call(
        Method::GET,
        &format!("/wcp/approvals/{id}?wait_ms=soon"),
        None,
    );
    assert_eq!(s, 400, "{bad}");
    assert!(bad["code"].is_string(), "{bad}");

    // After [approvals] outcome_retention_ms the outcome is gone (the receipts are not).
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (code, gone) = cli_json(
            &hall,
            &["approvals", "show", &id, "--tenant-id", "mcp.my-app"],
            Some(NOBODY),
        );
        if code != Some(0) {
            let message = gone["error"]["message"].as_str().unwrap_or_default();
            assert!(message.contains("404): not_found"), "{gone}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the outcome was never forgotten: {gone}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let (code, shown, _) = hall.show_receipt(seq.as_u64().unwrap());
    assert_eq!(code, Some(0), "{shown}");
}

/// A signed copy of the bundled hello worker, enrolled with its package, and a trust policy.
/// Signs `pkg` with `<dir>`'s package key and makes `record` the only enrolled record.
pub(crate) fn sign_and_enroll(dir: &Path, pkg: &Path, record: &Value) -> String {
    let reg = dir.join("registry");
    for e in std::fs::read_dir(&reg).unwrap() {
        std::fs::remove_file(e.unwrap().path()).unwrap();
    }
    crate::hall_support::sign_and_enroll(&package_key(dir), pkg, record, &reg)
}

/// Re-signs `pkg` (changed after enrollment) with `<dir>`'s package key.
pub(crate) fn sign_package(dir: &Path, pkg: &Path, worker_id: &str, species: &str) {
    crate::hall_support::sign_package(&package_key(dir), pkg, worker_id, species);
}

pub(crate) fn signed_hello(dir: &Path) -> (PathBuf, String) {
    let pkg = dir.join("packages/hello");
    copy_dir(&repo("workers/hello"), &pkg);
    let worker_id = sign_and_enroll(dir, &pkg, &read_record(&pkg.join("record.json")));
    (pkg, worker_id)
}

/// Stops `hall`, lets `enroll` change its directory, turns attestation on (re-verifying on every
/// dispatch) and starts it again.
pub(crate) fn restart_attested(hall: &mut TestHall, enroll: impl FnOnce(&Path)) {
    hall.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(hall.wait_exit(Duration::from_secs(20)), 0);
    enroll(hall.dir.path());
    let text = std::fs::read_to_string(hall.config_path()).unwrap();
    let text = text.replace(
        "require_signatory = true",
        "require_signatory = true\nrequire_worker_attestation = true",
    );
    std::fs::write(
        hall.config_path(),
        format!("{text}\n[attestation]\ntrust_policy = \"trust.json\"\nrecheck_seconds = 0\n"),
    )
    .unwrap();
    hall.spawn();
}

/// A Hall (as root, or as `as_uid`) running the hostile package `tests/hostile/<name>` as the
/// hello worker, attested; `writes` are its record's persistent `filesystem_writes`.
fn hostile_hall(extra_toml: &str, as_uid: Option<u32>, name: &str, writes: Value) -> TestHall {
    let mut hall = TestHall::start(extra_toml);
    hall.as_uid = as_uid;
    restart_attested(&mut hall, |dir| {
        let pkg = dir.join("packages").join(name);
        copy_dir(&repo(&format!("tests/hostile/{name}")), &pkg);
        let mut record = read_record(&repo("workers/hello/record.json"));
        record["privilege_envelope"]["filesystem_writes"] = writes;
        sign_and_enroll(dir, &pkg, &record);
    });
    hall
}

#[test]
fn an_attested_worker_runs_in_the_envelope_and_every_step_is_receipted() {
    // Start once to create the directory layout, then enroll a signed package and restart.
    let mut hall = TestHall::start("");
    let mut enrolled = None;
    restart_attested(&mut hall, |dir| enrolled = Some(signed_hello(dir)));
    let (pkg, worker_id) = enrolled.unwrap();

    let (s, out) = hall.call(
        Method::POST,
        "/wcp/dispatch",
        Some(&input("cap.hello.greet", "acme-corp")),
    );
    assert_eq!(s, 200, "{out}; {}", hall.log());
    assert_eq!(out["status"], "completed", "{out}");
    assert!(
        out["result"]["greeting"].as_str().unwrap().contains("Ada"),
        "{out}"
    );
    assert_eq!(out["decision"]["worker_attestation_checked"], true);
    assert_eq!(out["execution"]["worker_id"], worker_id.as_str());
    // One verification per dispatch: the router's, whose store copy the runner then runs
    // (recheck_seconds = 0, so nothing is reused between dispatches).
    let verifications = |hall: &TestHall| {
        let (_, metrics) = hall.call(Method::GET, "/metrics", None);
        let text = metrics.as_str().unwrap_or("").to_owned();
        text.lines()
            .find_map(|l| l.strip_prefix("wcp_hall_package_verifications "))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no wcp_hall_package_verifications: {text}"))
    };
    let before = verifications(&hall);
    for _ in 0..3 {
        let (_, again) = hall.call(
            Method::POST,
            "/wcp/dispatch",
            Some(&input("cap.hello.greet", "acme-corp")),
        );
        assert_eq!(again["status"], "completed", "{again}");
    }
    assert_eq!(
        verifications(&hall) - before,
        3,
        "one verification per dispatch"
    );
    let report = &out["execution"]["summary"]["envelope"];
    assert!(report.is_object(), "the envelope report comes back: {out}");
    // The worker ran under the Python runtime the Hall probed at start, and the report says so.
    let (_, health) = hall.call(Method::GET, "/wcp/health", None);
    let python = &health["python"];
    assert!(
        python["runtime"]
            .as_str()
            .unwrap()
            .starts_with("cpython 3."),
        "{health}"
    );
    assert_eq!(
        report["bootstrap"]["runtime"], python["runtime"],
        "{report}"
    );
    assert_eq!(report["bootstrap"]["program"], python["interpreter"]);
    let rules = report["landlock"]["fs_rules"].as_array().unwrap();
    assert!(
        rules.contains(&json!({"path": python["interpreter"], "access": "read_execute"})),
        "{rules:?}"
    );
    assert!(
        out["execution"]["package"]["store_path"]
            .as_str()
            .unwrap()
            .contains("/store/")
    );
    let run_seq = out["execution"]["receipt"]["seq"].as_u64().unwrap();

    // A denial is receipted too.
    let (_, denied) = hall.call(
        Method::POST,
        "/wcp/dispatch",
        Some(&input("cap.unknown.thing", "acme-corp")),
    );
    assert_eq!(denied["status"], "denied");
    assert!(denied["execution"]["receipt"]["seq"].as_u64().unwrap() > run_seq);

    // Editing the enrolled source after signing: refused, nothing runs.
    let logic = pkg.join("code/worker_logic.py");
    let mut text = std::fs::read_to_string(&logic).unwrap();
    text.push_str("\n# tampered\n");
    std::fs::write(&logic, text).unwrap();
    let (_, tampered) = hall.call(
        Method::POST,
        "/wcp/dispatch",
        Some(&input("cap.hello.greet", "acme-corp")),
    );
    assert_eq!(tampered["status"], "denied", "{tampered}");
    let code = deny_code(&tampered);
    assert!(
        code == "DENY_WORKER_TAMPERED" || code == "DENY_WORKER_HASH_UNAVAILABLE",
        "{tampered}"
    );

    // Stop, then verify the whole log offline with the public key.
    let v = hall.stop_and_verify_log();
    assert!(
        v["passed"].as_u64().unwrap() >= 4,
        "intent, outcome and two denials: {v}"
    );
}

/// A signed package whose input schema the Hall cannot use is refused, never run unchecked.
#[test]
fn a_package_with_an_unusable_input_schema_runs_nothing() {
    let mut hall = TestHall::start("");
    restart_attested(&mut hall, |dir| {
        let pkg = dir.join("packages/hello");
        copy_dir(&repo("workers/hello"), &pkg);
        std::fs::write(pkg.join("config.schema.json"), r#"{"type": "nonsense"}"#).unwrap();
        sign_and_enroll(dir, &pkg, &read_record(&pkg.join("record.json")));
    });
    let mut i = input("cap.hello.greet", "acme-corp");
    i["request"] = json!({"name": "Ada"});
    let (s, out) = hall.call(Method::POST, "/wcp/dispatch", Some(&i));
    assert_eq!(s, 200, "{out}");
    assert_eq!(deny_code(&out), "DENY_INVALID_INPUT", "{out}");
    assert!(
        out["decision"]["deny_reason_if_denied"]["message"]
            .as_str()
            .unwrap()
            .contains("cannot be used"),
        "{out}"
    );
    assert!(out.get("result").is_none(), "{out}");
}

#[test]
fn a_request_the_workers_schema_refuses_is_a_receipted_denial_and_nothing_runs() {
    let mut hall = TestHall::start("");
    let mut enrolled = None;
    restart_attested(&mut hall, |dir| enrolled = Some(signed_hello(dir)));
    let (_, worker_id) = enrolled.unwrap();
    let dispatch = |request: Value| {
        let mut i = input("cap.hello.greet", "acme-corp");
        i["request"] = request;
        let (s, out) = hall.call(Method::POST, "/wcp/dispatch", Some(&i));
        assert_eq!(s, 200, "{out}");
        out
    };

    // hello's config.schema.json requires "name" and allows nothing else.
    let out = dispatch(json!({"nam": "Ada"}));
    assert_eq!(out["status"], "denied", "{out}");
    assert_eq!(out["denied"], true);
    assert_eq!(deny_code(&out), "DENY_INVALID_INPUT", "{out}");
    let reason = &out["decision"]["deny_reason_if_denied"];
    let message = reason["message"].as_str().unwrap();
    assert!(
        message.contains("\"name\" is a required property") && message.contains("'nam'"),
        "{out}"
    );
    assert_eq!(reason["hall_code"], "input_invalid", "{out}");
    assert_eq!(
        reason["input_errors"].as_array().unwrap().len(),
        2,
        "{reason}"
    );
    // Nothing ran: no worker, no envelope, no result; only the denial's receipt.
    assert!(out.get("result").is_none(), "{out}");
    assert_eq!(
        out["execution"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        ["receipt"],
        "{out}"
    );
    let refused = out["execution"]["receipt"]["seq"].as_u64().unwrap();

    // A value of the wrong type: the field is named by its JSON Pointer.
    // The caller is told its value; the receipt keeps the field and the rule, never the value.
    let out = dispatch(json!({"name": 424242}));
    assert_eq!(deny_code(&out), "DENY_INVALID_INPUT", "{out}");
    let message = out["decision"]["deny_reason_if_denied"]["message"]
        .as_str()
        .unwrap();
    assert!(message.contains("/name: 424242 is not of type"), "{out}");
    let typed = out["execution"]["receipt"]["seq"].as_u64().unwrap();
    assert_eq!(
        typed,
        refused + 1,
        "no intent was written for the first refusal"
    );

    // Both refusals are counted by the Hall's code.
    let (_, metrics) = hall.call(Method::GET, "/metrics", None);
    let metrics = metrics.as_str().unwrap_or_default().to_owned();
    assert_eq!(
        metric(
            &metrics,
            "wcp_hall_dispatch_refused_total{code=\"input_invalid\"}"
        ),
        2.0,
        "{metrics}"
    );

    // A valid request still runs: its intent directly follows the refusals.
    let out = dispatch(json!({"name": "Ada"}));
    assert_eq!(out["status"], "completed", "{out}");
    let outcome = out["execution"]["receipt"]["seq"].as_u64().unwrap();
    assert_eq!(outcome, typed + 2, "intent then outcome: {out}");

    hall.stop_and_verify_log();
    let (_, shown, _) = hall.show_receipt(refused);
    let payload = &shown["payload"];
    assert_eq!(payload["kind"], "denied", "{shown}");
    let d = &payload["dispatch"];
    assert_eq!(d["decision"]["deny_code"], "DENY_INVALID_INPUT", "{shown}");
    assert!(
        d["decision"]["deny_detail"]
            .as_str()
            .unwrap()
            .starts_with("input_invalid: "),
        "{shown}"
    );
    assert_eq!(d["worker_id"], worker_id.as_str(), "{shown}");
    assert!(d["envelope"].is_null(), "{shown}");
    let (_, shown, _) = hall.show_receipt(typed);
    let detail = shown["payload"]["dispatch"]["decision"]["deny_detail"]
        .as_str()
        .unwrap();
    assert!(
        detail.contains("/name") && !shown.to_string().contains("424242"),
        "{shown}"
    );
}

/// The failure kinds a worker can cause, the request that causes each (tests/hostile/misbehave)
/// and the code every answer must carry.
const MISBEHAVIOURS: [(&str, &str); 7] = [
    ("not_json", "not_json"),
    ("two_values", "not_json"),
    ("big", "truncated"),
    ("sleep", "timed_out"),
    ("sigkill", "killed_by_signal"),
    ("sigsegv", "killed_by_signal"),
    ("exit3", "exit_status"),
];

#[test]
fn every_failed_run_says_why_in_the_answer_the_cli_and_the_receipt() {
    // A profile with a short wall clock and a small output cap, so each failure is quick.
    let mut hall = TestHall::start("");
    restart_attested(&mut hall, |dir| {
        let pkg = dir.join("packages/misbehave");
        copy_dir(&repo("tests/hostile/misbehave"), &pkg);
        sign_and_enroll(dir, &pkg, &read_record(&pkg.join("record.json")));
        let profile = std::fs::read_to_string(dir.join("profiles/prof.dev.permissive.toml"))
            .unwrap()
            .replace("prof.dev.permissive", "prof.test.failing")
            .replace("wall_timeout_ms = 120000", "wall_timeout_ms = 1500")
            .replace("max_output_bytes = 16777216", "max_output_bytes = 65536");
        std::fs::write(dir.join("profiles/prof.test.failing.toml"), profile).unwrap();
        let config = std::fs::read_to_string(dir.join("hall.toml")).unwrap();
        std::fs::write(
            dir.join("hall.toml"),
            format!("{config}\n[profiles]\ndev = \"prof.test.failing\"\n"),
        )
        .unwrap();
    });
    let dispatch = |what: &str| {
        let mut body = input("cap.hello.greet", "acme-corp");
        body["request"] = json!({"do": what});
        let (s, out) = hall.call(Method::POST, "/wcp/dispatch", Some(&body));
        assert_eq!(s, 200, "{what}: {out}; {}", hall.log());
        out
    };

    // A run that works has no error, and its receipt no failure.
    let ok = dispatch("ok");
    assert_eq!(ok["status"], "completed", "{ok}");
    assert!(ok["execution"].get("error").is_none(), "{ok}");
    // The run summary says what its memory figures are: a bound with its scope, and a peak that
    // is the whole tree's only with the cgroup.
    let summary = &ok["execution"]["summary"];
    let scope = summary["envelope"]["memory"]["scope"].as_str().unwrap();
    let source = summary["peak_memory_source"].as_str().unwrap();
    assert!(
        (scope, source) == ("run", "cgroup") || source == "largest_process_rss",
        "{summary}"
    );
    let mut outcomes = vec![(ok["execution"]["receipt"]["seq"].as_u64().unwrap(), None)];

    for (what, code) in MISBEHAVIOURS {
        // HTTP: status failed, and execution.error {code, message} beside the old fields.
        let out = dispatch(what);
        assert_eq!(out["status"], "failed", "{what}: {out}");
        let error = &out["execution"]["error"];
        assert_eq!(error["code"], code, "{what}: {out}");
        let message = error["message"].as_str().unwrap();
        assert!(!message.is_empty(), "{what}: {out}");
        assert!(out["execution"]["summary"]["exit"].is_object(), "{out}");
        assert!(out["execution"]["receipt"]["seq"].is_u64(), "{out}");
        match what {
            "two_values" => assert!(
                message.contains("follows the first JSON value"),
                "{message}"
            ),
            "big" => {
                assert_eq!(out["execution"]["summary"]["stdout_truncated"], true);
                assert!(message.contains("over the output limit"), "{message}");
            }
            "sleep" => assert_eq!(out["execution"]["summary"]["timed_out"], true),
            "sigkill" => assert!(message.contains("SIGKILL (9)"), "{message}"),
            "sigsegv" => assert!(message.contains("SIGSEGV (11)"), "{message}"),
            "exit3" => {
                assert!(
                    message.contains("status 3: misbehaved: asked to exit 3"),
                    "{message}"
                );
                // The worker's own error object still comes back as the result.
                assert_eq!(out["result"]["error"]["code"], "misbehaved", "{out}");
            }
            _ => {}
        }
        outcomes.push((
            out["execution"]["receipt"]["seq"].as_u64().unwrap(),
            Some(code),
        ));

        // The CLI: exit 1 (as for any run that did not complete), the code, message and hint.
        let o = hall.cli(
            &[
                "dispatch",
                "--capability",
                "cap.hello.greet",
                "--tenant-id",
                "acme-corp",
                "--input",
                &json!({"do": what}).to_string(),
            ],
            None,
        );
        let stdout = String::from_utf8_lossy(&o.stdout);
        assert_eq!(o.status.code(), Some(1), "{what}: {stdout}");
        assert!(
            stdout.starts_with("failed: cap.hello.greet via wrk.hello.greeter"),
            "{stdout}"
        );
        assert!(stdout.contains(&format!("\nerror: {code}: ")), "{stdout}");
        assert!(stdout.contains("\nhint: "), "{stdout}");
        assert!(
            stdout.contains(&format!("stderr: \"misbehave: {what}\"")),
            "{stdout}"
        );
        if code == "not_json" {
            assert!(
                stdout.contains("exactly one JSON object on stdout"),
                "{stdout}"
            );
        }
    }
    // --json: the whole answer, error included.
    let o = hall.cli(
        &[
            "--json",
            "dispatch",
            "--capability",
            "cap.hello.greet",
            "--tenant-id",
            "acme-corp",
            "--input",
            r#"{"do": "not_json"}"#,
        ],
        None,
    );
    assert_eq!(o.status.code(), Some(1));
    let answer: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(answer["execution"]["error"]["code"], "not_json", "{answer}");

    // The outcome receipts name the same codes, and the log (old shape and new) verifies.
    hall.stop_and_verify_log();
    for (seq, code) in outcomes {
        let (status, shown, err) = hall.show_receipt(seq);
        assert_eq!(status, Some(0), "{err}");
        let payload = &shown["payload"];
        assert_eq!(payload["kind"], "executed", "{shown}");
        match code {
            Some(code) => assert_eq!(payload["execution"]["failure"], code, "{shown}"),
            None => assert!(payload["execution"].get("failure").is_none(), "{shown}"),
        }
    }
}

#[test]
fn the_python_runtime_is_configured_resolved_probed_and_kept_on_a_bad_reload() {
    // /usr/bin/python3 is a symlink on Debian: the Hall resolves it, probes the real binary and
    // grants Landlock rules on that file.
    let real = std::fs::canonicalize("/usr/bin/python3").expect("/usr/bin/python3 exists");
    let mut hall = TestHall::start("[envelope]\npython = \"/usr/bin/python3\"\n");
    restart_attested(&mut hall, |dir| {
        signed_hello(dir);
    });
    let (_, health) = hall.call(Method::GET, "/wcp/health", None);
    assert_eq!(health["python"]["interpreter"], json!(real), "{health}");
    let dispatch = |hall: &TestHall| {
        let (s, out) = hall.call(
            Method::POST,
            "/wcp/dispatch",
            Some(&input("cap.hello.greet", "acme-corp")),
        );
        assert_eq!(s, 200, "{out}; {}", hall.log());
        assert_eq!(out["status"], "completed", "{out}");
        out["execution"]["summary"]["envelope"]["bootstrap"].clone()
    };
    let bootstrap = dispatch(&hall);
    assert_eq!(bootstrap["program"], json!(real), "{bootstrap}");
    assert_eq!(bootstrap["runtime"], health["python"]["runtime"]);

    // A reload naming an interpreter that does not exist is refused with the reason; the
    // previous configuration and runtime stay, and workers still run.
    let good = std::fs::read_to_string(hall.config_path()).unwrap();
    let bad = good.replace("\"/usr/bin/python3\"", "\"/nonexistent/python3\"");
    assert_ne!(good, bad);
    std::fs::write(hall.config_path(), &bad).unwrap();
    let (s, err) = hall.call(Method::POST, "/wcp/reload", None);
    assert_eq!(s, 422, "{err}");
    let message = err["message"].as_str().unwrap();
    assert!(
        message.contains("[envelope] python") && message.contains("/nonexistent/python3"),
        "{err}"
    );
    let (_, after) = hall.call(Method::GET, "/wcp/health", None);
    assert_eq!(after["generation"], health["generation"]);
    assert_eq!(after["python"], health["python"]);
    assert_eq!(dispatch(&hall)["program"], json!(real));

    // The same configuration refuses to start: exit 78 (EX_CONFIG), naming the setting.
    let o = Command::new(BIN)
        .args(["serve", "-c"])
        .arg(hall.config_path())
        .arg("-s")
        .arg(hall.dir.path().join("other.sock"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("[envelope] python") && stderr.contains("does not exist"),
        "{stderr}"
    );
    // So does `config check`, the same way.
    let o = Command::new(BIN)
        .args(["config", "check", "-c"])
        .arg(hall.config_path())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&o.stderr).contains("[envelope] python"));
}

/// Rules that route `cap.hello.greet` in dev to the native hello worker.
pub(crate) fn native_rules() -> Value {
    json!({"rules": [
        {"rule_id": "rr_hello_native", "match": {"capability_id": "cap.hello.greet", "env": "dev"},
         "decision": {"candidate_workers_ranked": [{"worker_species_id": "wrk.hello.native"}],
                      "required_controls_suggested": ["ctrl.obs.audit-log-append-only"]}}]})
}

#[test]
fn a_native_worker_runs_from_its_store_copy_and_odd_entrypoints_are_refused() {
    let mut hall = TestHall::start("");
    let native_rules = native_rules();
    let mut enrolled = None;
    restart_attested(&mut hall, |dir| {
        std::fs::write(dir.join("rules.json"), native_rules.to_string()).unwrap();
        let (pkg, record) = native_hello_package(dir);
        let worker_id = sign_and_enroll(dir, &pkg, &record);
        enrolled = Some((pkg, worker_id));
    });
    let (pkg, worker_id) = enrolled.unwrap();
    let dir = hall.dir.path().to_owned();

    let body = input("cap.hello.greet", "acme-corp");
    let (s, out) = hall.call(Method::POST, "/wcp/dispatch", Some(&body));
    assert_eq!(s, 200, "{out}; {}", hall.log());
    assert_eq!(out["status"], "completed", "{out}");
    assert_eq!(out["result"]["greeting"], "Hello, Ada!", "{out}");
    assert_eq!(out["result"]["correlation_id"], body["correlation_id"]);
    assert_eq!(out["execution"]["worker_id"], worker_id.as_str());
    // It ran the store copy, in which only the entrypoint is executable.
    let store = PathBuf::from(out["execution"]["package"]["store_path"].as_str().unwrap());
    assert!(store.starts_with(dir.join("state")), "{}", store.display());
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(&store.join("code/bootstrap")), 0o555);
    assert_eq!(mode(&store.join("config.schema.json")), 0o444);
    let envelope = &out["execution"]["summary"]["envelope"];
    assert_eq!(
        envelope["bootstrap"]["program"],
        store.join("code/bootstrap").display().to_string(),
        "{envelope}"
    );
    assert_eq!(out["execution"]["summary"]["exit"]["code"], 0, "{out}");
    // Each phase is in the answer and in the metrics.
    for phase in ["verify", "intent_receipt", "run", "outcome_receipt"] {
        assert!(out["execution"]["hall_phases_us"][phase].is_u64(), "{out}");
    }
    let metrics = hall.runtime.block_on(async {
        client::call(
            &hall.socket,
            Method::GET,
            "/metrics",
            None,
            Duration::from_secs(5),
        )
        .await
        .unwrap()
        .body
    });
    let text = metrics.as_str().map(str::to_owned).unwrap_or_default();
    assert!(
        text.contains("wcp_hall_execution_phase_seconds_count{phase=\"run\"} 1"),
        "{text}"
    );

    // A request the package's schema refuses is the Hall's refusal: nothing starts.
    let mut bad = input("cap.hello.greet", "acme-corp");
    bad["request"] = json!({"name": "Ada", "extra": 1});
    let (_, out) = hall.call(Method::POST, "/wcp/dispatch", Some(&bad));
    assert_eq!(out["status"], "denied", "{out}");
    assert_eq!(deny_code(&out), "DENY_INVALID_INPUT", "{out}");
    // One the schema allows but the logic refuses (a blank name) is the worker's own refusal
    // (exit 2).
    bad["request"] = json!({"name": "   "});
    let (_, out) = hall.call(Method::POST, "/wcp/dispatch", Some(&bad));
    assert_eq!(out["status"], "failed", "{out}");
    assert_eq!(out["result"]["error"]["code"], "invalid_request", "{out}");

    // Attack: a signed package with both entrypoints. Which one runs would be a guess: refused
    // before anything starts, and the intent ends `aborted` in the receipt log.
    std::fs::copy(
        repo("workers/hello/code/bootstrap.py"),
        pkg.join("code/bootstrap.py"),
    )
    .unwrap();
    sign_package(&dir, &pkg, &worker_id, "wrk.hello.native");
    let (_, out) = hall.call(Method::POST, "/wcp/dispatch", Some(&body));
    assert_eq!(out["status"], "failed", "{out}");
    assert_eq!(
        out["execution"]["error"]["code"], "package_ambiguous",
        "{out}"
    );
    assert!(out["execution"]["receipt"]["seq"].is_u64(), "{out}");

    // Attack: a signed `#!` script as the native entrypoint (it would start an interpreter the
    // envelope never granted): refused.
    std::fs::remove_file(pkg.join("code/bootstrap.py")).unwrap();
    std::fs::remove_file(pkg.join("code/bootstrap")).unwrap();
    std::fs::write(pkg.join("code/bootstrap"), "#!/bin/sh\necho '{}'\n").unwrap();
    std::fs::set_permissions(
        pkg.join("code/bootstrap"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    sign_package(&dir, &pkg, &worker_id, "wrk.hello.native");
    let (_, out) = hall.call(Method::POST, "/wcp/dispatch", Some(&body));
    assert_eq!(out["status"], "failed", "{out}");
    assert_eq!(
        out["execution"]["error"]["code"], "package_not_elf",
        "{out}"
    );

    // Attack: the binary changed after signing: the attestation refuses it, nothing runs.
    std::fs::remove_file(pkg.join("code/bootstrap")).unwrap();
    let mut binary = std::fs::read(env!("CARGO_BIN_EXE_wcp-hello-native")).unwrap();
    std::fs::write(pkg.join("code/bootstrap"), &binary).unwrap();
    sign_package(&dir, &pkg, &worker_id, "wrk.hello.native");
    let (_, out) = hall.call(Method::POST, "/wcp/dispatch", Some(&body));
    assert_eq!(
        out["status"], "completed",
        "re-signed original binary runs again: {out}"
    );
    binary.extend_from_slice(b"\0tampered");
    std::fs::write(pkg.join("code/bootstrap"), &binary).unwrap();
    let (_, out) = hall.call(Method::POST, "/wcp/dispatch", Some(&body));
    assert_eq!(out["status"], "denied", "{out}");
    assert_eq!(deny_code(&out), "DENY_WORKER_TAMPERED", "{out}");

    // Every step is in the log, and it verifies.
    hall.stop_and_verify_log();
}

#[test]
fn kill_9_mid_stream_loses_no_acknowledged_receipt() {
    let mut hall = TestHall::start("");
    // Clients stream denied dispatches (each answer names its durable receipt's seq).
    let socket = hall.socket.clone();
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u64>::new()));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for c in 0..4 {
        let (socket, acked, stop) = (socket.clone(), acked.clone(), stop.clone());
        clients.push(std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                i += 1;
                let body = input(&format!("cap.crash.c{c}"), "acme-corp");
                match rt.block_on(client::call(
                    &socket,
                    Method::POST,
                    "/wcp/dispatch",
                    Some(&body),
                    Duration::from_secs(5),
                )) {
                    Ok(a) if a.status.as_u16() == 200 => {
                        if let Some(seq) = a.body["execution"]["receipt"]["seq"].as_u64() {
                            acked.lock().unwrap().push(seq);
                        }
                    }
                    _ => std::thread::sleep(Duration::from_millis(5)),
                }
                if i > 100_000 {
                    break;
                }
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while acked.lock().unwrap().len() < 50 {
        assert!(
            Instant::now() < deadline,
            "the stream did not start: {}",
            hall.log()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    hall.signal(nix::sys::signal::Signal::SIGKILL);
    let _ = hall.wait_exit(Duration::from_secs(10));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    // Restart: the log is recovered (a torn tail cut and recorded) and everything verifies.
    hall.spawn();
    hall.stop_and_verify_log();
    // Every receipt a client was told about is in the log, as the denial it acknowledged.
    for seq in &acked {
        let (status, shown, err) = hall.show_receipt(*seq);
        assert_eq!(
            status,
            Some(0),
            "acknowledged receipt {seq} is missing: {err}"
        );
        assert!(
            shown.to_string().contains("DENY_NO_MATCHING_RULE"),
            "receipt {seq}: {shown}"
        );
    }
    assert!(acked.len() >= 50);
}

#[test]
fn overload_answers_429_with_retry_after_and_health_stays_responsive() {
    // One execution slot, no queue: while a worker runs, the next dispatch is refused at once.
    let mut hall = TestHall::start(
        "[server]\nmax_concurrent = 1\nmax_concurrent_per_tenant = 1\nmax_queue = 0\n",
    );
    restart_attested(&mut hall, |dir| {
        signed_hello(dir);
    });
    // Two clients dispatch concurrently for a while; with one slot and no queue, some requests
    // must be refused at once with 429 while the other one's worker runs.
    let busy: Vec<_> = (0..2)
        .map(|_| {
            let socket = hall.socket.clone();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                let until = Instant::now() + Duration::from_secs(3);
                let mut statuses = Vec::new();
                while Instant::now() < until {
                    let a = rt.block_on(client::call(
                        &socket,
                        Method::POST,
                        "/wcp/dispatch",
                        Some(&input("cap.hello.greet", "acme-corp")),
                        Duration::from_secs(60),
                    ));
                    statuses.push(
                        a.map(|a| (a.status.as_u16(), a.body["code"].clone()))
                            .unwrap_or((0, Value::Null)),
                    );
                }
                statuses
            })
        })
        .collect();
    // Meanwhile health answers promptly: it never queues behind work. The capability listing
    // (a route per capability, possibly re-verifying packages) takes a slot like a dispatch, so
    // while the slot is busy it is refused with 429 too.
    let context = json!({"tenant_id": "acme-corp", "env": "dev", "data_label": "PUBLIC",
                         "tenant_risk": "low", "qos_class": "P2"});
    let mut listing = Vec::new();
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        let t = Instant::now();
        assert_eq!(hall.call(Method::GET, "/wcp/health", None).0, 200);
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "health must not queue behind work"
        );
        let (status, body) = hall.call(Method::POST, "/wcp/capabilities/routable", Some(&context));
        listing.push((status, body["code"].clone()));
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        listing.iter().all(|(s, _)| *s == 200 || *s == 429),
        "{listing:?}"
    );
    assert!(
        listing
            .iter()
            .any(|(s, code)| *s == 429 && code == "overloaded"),
        "the listing waits its turn like a dispatch: {listing:?}"
    );
    let statuses: Vec<(u16, Value)> = busy.into_iter().flat_map(|b| b.join().unwrap()).collect();
    assert!(
        statuses.iter().all(|(s, _)| *s == 200 || *s == 429),
        "{statuses:?}"
    );
    assert!(
        statuses.iter().any(|(s, _)| *s == 200),
        "work was done: {statuses:?}"
    );
    assert!(
        statuses
            .iter()
            .any(|(s, code)| *s == 429 && code == "overloaded"),
        "a full Hall answers 429 overloaded: {statuses:?}"
    );
}

/// `n` denied dispatches (each a durable receipt), then an orderly stop (exit 0).
fn denials_then_stop(hall: &mut TestHall, n: usize) {
    for i in 0..n {
        let (code, _) = hall.call(
            Method::POST,
            "/wcp/dispatch",
            Some(&input(&format!("cap.unknown.c{i}"), "acme-corp")),
        );
        assert_eq!(code, 200);
    }
    hall.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(hall.wait_exit(Duration::from_secs(20)), 0);
}

#[test]
fn tampering_found_by_the_background_check_fails_the_running_hall() {
    let mut hall = TestHall::start("");
    // An orderly stop writes the final checkpoint and its resume snapshot.
    denials_then_stop(&mut hall, 6);
    let seg = hall
        .dir
        .path()
        .join("state/receipts/receipts-00000000000000000000.jsonl");
    assert!(hall.dir.path().join("state/receipts/resume").exists());
    let data = std::fs::read(&seg).unwrap();
    // Change one byte in the middle of the second record's line.
    let starts: Vec<usize> = std::iter::once(0)
        .chain(
            data.iter()
                .enumerate()
                .filter(|(_, b)| **b == b'\n')
                .map(|(i, _)| i + 1),
        )
        .collect();
    let mut tampered = data.clone();
    let at = (starts[1] + starts[2]) / 2;
    tampered[at] = if tampered[at] == b'A' { b'B' } else { b'A' };
    std::fs::write(&seg, tampered).unwrap();

    // The fast open does not read that record: the Hall starts; the background check finds it.
    hall.spawn_until(|code, body| code == 503 && body["status"] == "failed");
    let (_, health) = hall.call(Method::GET, "/wcp/health", None);
    assert_eq!(health["receipts"]["background_check"], "failed", "{health}");
    let problem = health["receipts"]["background_check_problem"]
        .as_str()
        .unwrap_or_default();
    assert!(problem.contains("seq 1"), "{health}");
    let (code, out) = hall.call(
        Method::POST,
        "/wcp/dispatch",
        Some(&input("cap.unknown.after", "acme-corp")),
    );
    assert_eq!(code, 503, "{out}");
    assert_eq!(out["code"], "receipt_log_unavailable", "{out}");
    let (_, metrics) = hall.runtime.block_on(async {
        let a = client::call(
            &hall.socket,
            Method::GET,
            "/metrics",
            None,
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        (a.status, a.body)
    });
    let text = metrics
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| metrics.to_string());
    assert!(
        text.contains("wcp_hall_receipt_background_check_failed 1"),
        "{text}"
    );
    assert!(
        hall.log()
            .contains("background verification found a problem")
    );
    // `wcp-hall status` says so and exits 70 (failed; 69 would mean unreachable).
    let o = hall.cli(&["status"], None);
    assert_eq!(o.status.code(), Some(70));
    assert!(String::from_utf8_lossy(&o.stdout).contains("FAILED"));
}

#[test]
fn a_start_without_a_resume_snapshot_saves_one_at_once() {
    let mut hall = TestHall::start("");
    denials_then_stop(&mut hall, 3);
    // No snapshot (lost, or never written because the Hall kept crashing before a checkpoint):
    // this start reads the whole log, and saves a checkpoint and snapshot right away, so the
    // next start is fast even if this Hall never reaches a periodic checkpoint.
    let resume = hall.dir.path().join("state/receipts/resume");
    std::fs::remove_file(&resume).unwrap();
    hall.spawn();
    assert!(
        resume.exists(),
        "a fresh snapshot right after a full-scan start: {}",
        hall.log()
    );
    let (code, _) = hall.call(
        Method::POST,
        "/wcp/dispatch",
        Some(&input("cap.unknown.after", "acme-corp")),
    );
    assert_eq!(code, 200);
    // The extra checkpoint is an ordinary one: the log verifies offline, and the next start
    // resumes from the snapshot.
    hall.stop_and_verify_log();
    hall.spawn();
    assert!(
        hall.log().contains("resumed_at: Some("),
        "the next start reads only the tail: {}",
        hall.log()
    );
}

/// A package of the hostile `persist` worker enrolled as the hello worker, with `writes` as its
/// persistent write directories; the Hall is (re)loaded.
fn enroll_persist(dir: &Path, writes: Value) -> String {
    let pkg = dir.join("packages/persist");
    if !pkg.exists() {
        copy_dir(&repo("tests/hostile/persist"), &pkg);
    }
    let mut record = read_record(&repo("workers/hello/record.json"));
    record["privilege_envelope"]["filesystem_writes"] = writes;
    sign_and_enroll(dir, &pkg, &record)
}

fn persist_request(req: Value) -> Value {
    let mut v = input("cap.hello.greet", "acme-corp");
    v["request"] = req;
    v
}

/// The two-dispatch attack on persistent write directories (issue: a worker widens its own
/// grant). Run 1 plants a symlink (and tries a hard link to a Hall file) in its write directory;
/// the operator then enrolls a record whose write directory is that symlink. Run 2 must be
/// refused with `write_dir_unsafe` and an aborted receipt, and the symlink's target — the
/// Hall's own key directory — must be untouched: not chowned, not granted, nothing written.
fn symlink_trap_across_two_dispatches(as_uid: Option<u32>) {
    let mut hall = TestHall::start("");
    hall.as_uid = as_uid;
    let mut worker_id = None;
    restart_attested(&mut hall, |dir| {
        worker_id = Some(enroll_persist(dir, json!(["out/"])));
    });
    let worker_id = worker_id.unwrap();
    let keys = hall.dir.path().join("keys");
    let key = keys.join("receipts.key");
    let before = std::fs::metadata(&keys).unwrap();
    let listing = |d: &Path| {
        let mut names: Vec<_> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    };
    let keys_before = listing(&keys);
    let data = hall.dir.path().join("state/data").join(&worker_id);

    // Run 1: the trap.
    let (s, out) = hall.call(
        Method::POST,
        "/wcp/dispatch",
        Some(&persist_request(json!({
            "symlink": {"name": "x", "to": keys.display().to_string()},
            "hardlink": {"name": "stolen-key", "from": key.display().to_string()},
            "rename": {"from": key.display().to_string(), "name": "moved-key"},
        }))),
    );
    assert_eq!(s, 200, "{out}; {}", hall.log());
    assert_eq!(out["status"], "completed", "{out}");
    assert_eq!(out["result"]["symlink"]["ok"], true, "{out}");
    // No hard link to a Hall file: Landlock refuses links from outside the grant (EXDEV), and
    // for a root Hall's worker (another uid) protected_hardlinks refuses first (EPERM).
    assert_eq!(out["result"]["hardlink"]["ok"], false, "{out}");
    let errno = out["result"]["hardlink"]["errno"].as_i64().unwrap();
    assert!(errno == 18 || (as_uid.is_none() && errno == 1), "{out}");
    // Nor a rename of a Hall file into the grant (Landlock: no right to remove it from its
    // directory, EACCES, or to reparent it, EXDEV).
    assert_eq!(out["result"]["rename"]["ok"], false, "{out}");
    let errno = out["result"]["rename"]["errno"].as_i64().unwrap();
    assert!(errno == 18 || errno == 13, "{out}");
    assert!(key.exists());
    // The grant is named by what the Hall opened.
    let w = &out["execution"]["summary"]["envelope"]["filesystem"]["writes"][0];
    let meta = std::fs::metadata(data.join("out")).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(w["persistent"], true, "{w}");
    assert_eq!(w["ino"], meta.ino(), "{w}");
    assert_eq!(w["dev"], meta.dev(), "{w}");
    assert_eq!(w["granted"], data.join("out").display().to_string());
    assert_eq!(meta.uid(), as_uid.unwrap_or(NOBODY));

    // Nested entries are refused when the record is loaded; the old configuration stays.
    enroll_persist(hall.dir.path(), json!(["out/", "out/x/"]));
    if let Some(uid) = as_uid {
        chown_tree(hall.dir.path(), uid);
    }
    let (s, err) = hall.call(Method::POST, "/wcp/reload", None);
    assert_eq!(s, 422, "{err}");
    assert!(
        err["message"].as_str().unwrap().contains("are nested"),
        "{err}"
    );

    // Run 2 under a record whose write directory is the planted symlink.
    enroll_persist(hall.dir.path(), json!(["out/x/"]));
    if let Some(uid) = as_uid {
        chown_tree(hall.dir.path(), uid);
    }
    let (s, out) = hall.call(Method::POST, "/wcp/reload", None);
    assert_eq!(s, 200, "{out}");
    let (s, out) = hall.call(
        Method::POST,
        "/wcp/dispatch",
        Some(&persist_request(json!({}))),
    );
    assert_eq!(s, 200, "{out}; {}", hall.log());
    assert_eq!(out["status"], "failed", "{out}");
    assert_eq!(
        out["execution"]["error"]["code"], "write_dir_unsafe",
        "{out}"
    );
    assert!(out["execution"]["receipt"]["seq"].is_u64(), "{out}");
    let after = std::fs::metadata(&keys).unwrap();
    assert_eq!(
        (after.uid(), after.gid(), after.mode()),
        (before.uid(), before.gid(), before.mode()),
        "the symlink's target was changed"
    );
    assert_eq!(listing(&keys), keys_before, "nothing written into keys/");
    let v = hall.stop_and_verify_log();
    let (_, shown, err) = hall.show_receipt(out["execution"]["receipt"]["seq"].as_u64().unwrap());
    let shown = shown.to_string();
    assert!(
        shown.contains("aborted") && shown.contains("write_dir_unsafe"),
        "{v} {shown} {err}"
    );
}

#[test]
fn a_root_halls_worker_cannot_widen_its_grant_through_a_planted_symlink() {
    symlink_trap_across_two_dispatches(None);
}

#[test]
fn an_ordinary_users_worker_cannot_widen_its_grant_through_a_planted_symlink() {
    symlink_trap_across_two_dispatches(Some(NOBODY));
}

/// A worker calling its own Hall (issue: an ordinary-user Hall's worker reloaded the Hall and
/// dispatched recursively). The socket is made reachable by the worker's uid on purpose (mode
/// 0666). Two layers stop it: the socket's path is covered in the worker's mount namespace
/// (connect fails), and through a second name the mount namespace does not know (a hard link
/// to the socket) the Hall itself refuses the peer as one of its workers.
fn worker_calls_its_hall(as_uid: Option<u32>) {
    let mut hall = hostile_hall(
        "[server]\nsocket_mode = \"0666\"\n",
        as_uid,
        "hall_client",
        json!([]),
    );
    let (_, health) = hall.call(Method::GET, "/wcp/health", None);
    let generation = health["generation"].clone();
    let alias = hall.dir.path().join("alias.sock");
    std::fs::hard_link(&hall.socket, &alias).unwrap();
    let calls = json!([
        ["POST", "/wcp/reload", null],
        [
            "POST",
            "/wcp/dispatch",
            input("cap.hello.greet", "acme-corp")
        ],
        ["GET", "/wcp/health", null]
    ]);
    for (socket, hidden) in [(&hall.socket, true), (&alias, false)] {
        let mut req = input("cap.hello.greet", "acme-corp");
        req["request"] = json!({"socket": socket.display().to_string(), "calls": calls});
        let (s, out) = hall.call(Method::POST, "/wcp/dispatch", Some(&req));
        assert_eq!(s, 200, "{out}; {}", hall.log());
        assert_eq!(out["status"], "completed", "{out}");
        let ns = &out["execution"]["summary"]["envelope"]["namespaces"];
        assert_eq!(ns["mount"], true, "{ns}");
        assert!(
            ns["mount_reason"]
                .as_str()
                .unwrap()
                .contains(hall.socket.to_str().unwrap()),
            "{ns}"
        );
        for call in out["result"]["calls"].as_array().unwrap() {
            if hidden {
                // An empty mode-0 file covers the socket: EACCES.
                assert_eq!(call["connected"], false, "{call}");
                assert_eq!(call["errno"], 13, "{call}");
            } else {
                assert_eq!(call["connected"], true, "{call}");
                assert_eq!(call["status"], 403, "{call}");
                assert_eq!(call["body"]["code"], "peer_is_worker", "{call}");
            }
        }
    }
    // Nothing happened on the worker's behalf: no reload, and only the outer dispatch ran.
    let (_, health) = hall.call(Method::GET, "/wcp/health", None);
    assert_eq!(health["generation"], generation);
    assert!(hall.log().contains("connection refused"), "{}", hall.log());
    let v = hall.stop_and_verify_log();
    let kinds: Vec<String> = (0..v["records"].as_u64().unwrap())
        .map(|seq| {
            let (_, shown, _) = hall.show_receipt(seq);
            shown["payload"]["kind"]
                .as_str()
                .unwrap_or_else(|| panic!("{shown}"))
                .to_owned()
        })
        .filter(|k| k != "checkpoint")
        .collect();
    assert_eq!(
        kinds,
        ["intent", "executed", "intent", "executed"],
        "only the outer dispatches: {v}"
    );
}

#[test]
fn a_root_halls_worker_cannot_call_the_hall() {
    worker_calls_its_hall(None);
}

#[test]
fn an_ordinary_users_worker_cannot_call_the_hall() {
    worker_calls_its_hall(Some(NOBODY));
}

/// A worker that fills the disk (issue: 512 MiB in under a second, kept after the run, on the
/// receipt log's filesystem). Scratch is a size-limited tmpfs (root Hall: ENOSPC at the bound;
/// an ordinary-user Hall cannot mount one and the report says so), and a worker at or over its
/// persistent quota is refused before it runs again, while the Hall goes on writing receipts.
fn disk_filling_worker(as_uid: Option<u32>) {
    let mut hall = hostile_hall(
        "[envelope]\nscratch_bytes = 4194304\ndata_quota_bytes = 3145728\n",
        as_uid,
        "disk_filler",
        json!(["keep/"]),
    );
    let fill = |scratch: u64, persistent: u64| {
        let mut req = input("cap.hello.greet", "acme-corp");
        // Paced (2 ms a MiB), so even a very fast disk cannot outrun the 100 ms guard.
        req["request"] = json!({"scratch": scratch, "persistent": persistent, "sync": true,
                                "pace_ms": 2});
        let (s, out) = hall.call(Method::POST, "/wcp/dispatch", Some(&req));
        assert_eq!(s, 200, "{out}; {}", hall.log());
        out
    };
    // Run 1: 16 MiB of scratch and 2 MiB kept.
    let out = fill(16 << 20, 2 << 20);
    assert_eq!(out["status"], "completed", "{out}");
    let fs = &out["execution"]["summary"]["envelope"]["filesystem"];
    let scratch = &out["result"]["scratch"];
    if as_uid.is_none() {
        assert_eq!(fs["scratch"]["effective"], "enforced", "{fs}");
        assert_eq!(fs["scratch"]["bytes"], 4 << 20, "{fs}");
        assert_eq!(scratch["errno"], 28, "ENOSPC at the tmpfs bound: {scratch}");
        assert!(scratch["written"].as_u64().unwrap() <= 4 << 20, "{scratch}");
    } else {
        assert_eq!(fs["scratch"]["effective"], "not_enforced", "{fs}");
        assert!(
            fs["scratch"]["how"].as_str().unwrap().contains("not root"),
            "{fs}"
        );
        assert_eq!(scratch["written"], 16 << 20, "{scratch}");
    }
    assert_eq!(out["result"]["persistent"]["written"], 2 << 20, "{out}");
    let w = &fs["writes"][0];
    assert_eq!(w["quota_bytes"], 3 << 20, "{w}");
    assert!(w["used_bytes_before"].as_u64().unwrap() < 1 << 20, "{w}");

    // Run 2 writes 256 MiB: killed while it runs, once past the quota (measured every 100 ms).
    let out = fill(0, 256 << 20);
    assert_eq!(out["status"], "failed", "{out}");
    assert_eq!(
        out["execution"]["error"]["code"], "write_quota_exceeded",
        "{out}"
    );
    let keep = hall.dir.path().join("state/data/org.wcp-hall.hello.1/keep");
    let kept: u64 = std::fs::read_dir(&keep)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert!(
        kept < 128 << 20,
        "the guard stopped it early: {kept} bytes kept"
    );

    // Run 3: over the quota, refused before it starts, with a receipt.
    let out = fill(0, 1 << 20);
    assert_eq!(out["status"], "failed", "{out}");
    assert_eq!(
        out["execution"]["error"]["code"], "write_quota_exceeded",
        "{out}"
    );
    assert!(
        out["execution"]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("data_quota_bytes"),
        "{out}"
    );
    // The Hall is healthy and still records: a denial gets its receipt.
    let (s, health) = hall.call(Method::GET, "/wcp/health", None);
    assert_eq!(s, 200, "{health}");
    let (_, denied) = hall.call(
        Method::POST,
        "/wcp/dispatch",
        Some(&input("cap.unknown.thing", "acme-corp")),
    );
    assert!(denied["execution"]["receipt"]["seq"].is_u64(), "{denied}");
    // Nothing of the runs' scratch is left behind.
    let runs = hall.dir.path().join("state/runs");
    assert_eq!(std::fs::read_dir(&runs).unwrap().count(), 0);
    hall.stop_and_verify_log();
}

#[test]
fn a_root_halls_disk_filling_worker_is_bounded() {
    disk_filling_worker(None);
}

#[test]
fn an_ordinary_users_disk_filling_worker_is_bounded() {
    disk_filling_worker(Some(NOBODY));
}

/// An attestation denial names its real cause (issue: a FIFO added to an enrolled package was
/// denied as `DENY_WORKER_ATTESTATION_MISSING`, "no registered code hash", and the
/// `ATTEST_TREE_UNSAFE` finding appeared nowhere): in the answer, the receipt and the log.
#[test]
fn an_attestation_denial_carries_the_attestation_code_everywhere() {
    let mut hall = TestHall::start("");
    let mut enrolled = None;
    restart_attested(&mut hall, |dir| enrolled = Some(signed_hello(dir)));
    let (pkg, _) = enrolled.unwrap();
    nix::unistd::mkfifo(
        &pkg.join("code/pipe"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    let (s, out) = hall.call(
        Method::POST,
        "/wcp/dispatch",
        Some(&input("cap.hello.greet", "acme-corp")),
    );
    assert_eq!(s, 200, "{out}");
    assert_eq!(out["status"], "denied", "{out}");
    let reason = &out["decision"]["deny_reason_if_denied"];
    assert_eq!(reason["attestation_code"], "ATTEST_TREE_UNSAFE", "{reason}");
    assert!(
        reason["attestation_reason"]
            .as_str()
            .unwrap()
            .contains("code/pipe"),
        "{reason}"
    );
    let seq = out["execution"]["receipt"]["seq"].as_u64().unwrap();
    hall.stop_and_verify_log();
    let (_, shown, _) = hall.show_receipt(seq);
    let detail = shown["payload"]["dispatch"]["decision"]["deny_detail"]
        .as_str()
        .unwrap_or_else(|| panic!("{shown}"));
    assert!(
        detail.starts_with("ATTEST_TREE_UNSAFE: ") && detail.contains("code/pipe"),
        "{shown}"
    );
    let log = hall.log();
    assert!(
        log.contains("package verification failed") && log.contains("ATTEST_TREE_UNSAFE"),
        "{log}"
    );
}

/// Opens `n` connections to the socket and says what each got, then holds the admitted ones
/// silently (never sending a byte) for `hold` seconds. One JSON line on stdout once classified:
/// `{"admitted": k, "refused": {"<status> <code>": count}, "other": [...]}`.
const FLOODER: &str = r#"
import json, resource, socket, sys, time
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
path, n, hold = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
started = time.monotonic()
conns, other = [], []
for _ in range(n):
    c = socket.socket(socket.AF_UNIX)
    c.settimeout(5)
    try:
        c.connect(path)
        conns.append(c)
    except OSError as e:
        other.append("connect: %s" % e)
time.sleep(0.4)
admitted, refused, held = 0, {}, []
for c in conns:
    c.setblocking(False)
    try:
        data = c.recv(65536)
    except BlockingIOError:
        admitted += 1
        held.append(c)
        continue
    text = data.decode("utf-8", "replace")
    head, _, body = text.partition("\r\n\r\n")
    try:
        status = head.split(" ")[1]
        body = json.loads(body)
        ok = ("retry-after: 1" in head.lower() and "application/json" in head.lower()
              and body["message"])
        key = "%s %s" % (status, body["code"]) if ok else "bad " + text
    except Exception:
        key = "unparsable " + text
    refused[key] = refused.get(key, 0) + 1
print(json.dumps({"admitted": admitted, "refused": refused, "other": other}), flush=True)
time.sleep(max(0.0, hold - (time.monotonic() - started)))
"#;

fn flooder(socket: &Path, uid: u32, n: usize, hold: Duration) -> Child {
    Command::new("/usr/bin/python3")
        .args(["-c", FLOODER])
        .arg(socket)
        .arg(n.to_string())
        .arg(format!("{}", hold.as_secs_f64()))
        .uid(uid)
        .gid(NOBODY)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start a flooder")
}

fn flooder_report(child: &mut Child) -> Value {
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"))
}

/// A keep-alive exchange on an open connection: writes a GET, reads exactly one answer.
fn keep_alive_get(s: &mut std::os::unix::net::UnixStream, path: &str) -> u16 {
    write!(s, "GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf).unwrap();
        assert!(
            n > 0,
            "closed mid-answer: {}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            if body.len() >= len {
                return head[9..12].parse().unwrap();
            }
        }
    }
}

fn metric(text: &str, line_prefix: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(line_prefix)
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap_or(0.0)
}

#[test]
fn a_connection_flood_is_refused_with_json_and_never_starves_health_or_the_receipt_log() {
    // 256 descriptors in all: the reserve (64 + 16 per execution slot + the operators' share +
    // lingering refusals = 136) leaves 120 connections, 30 per uid.
    let mut hall = TestHall::prepare(
        "[server]\nsocket_mode = \"0666\"\nmax_concurrent = 2\nidle_timeout_ms = 3000\n",
    );
    // A checkpoint every second.
    let config = std::fs::read_to_string(hall.config_path())
        .unwrap()
        .replace("[receipts]\n", "[receipts]\ncheckpoint_interval_secs = 1\n");
    std::fs::write(hall.config_path(), config).unwrap();
    hall.nofile = Some(256);
    hall.spawn();
    let (_, health) = hall.call(Method::GET, "/wcp/health", None);
    assert_eq!(health["connections"]["max"], 120, "{health}");
    assert_eq!(health["connections"]["max_per_uid"], 30, "{health}");
    assert!(hall.log().contains("descriptor limit"), "{}", hall.log());

    // Three of root's keep-alive connections, idle between requests: the first to make room.
    let mut idle: Vec<_> = (0..3)
        .map(|_| {
            let mut s = std::os::unix::net::UnixStream::connect(&hall.socket).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            assert_eq!(keep_alive_get(&mut s, "/_ping"), 200);
            s
        })
        .collect();

    // Five uids without a tenant (65534 has one, the others none) hold 100 connections each:
    // 500 in all, far beyond the 256 descriptors, for three checkpoint intervals.
    let checkpoint = hall.dir.path().join("state/receipts/checkpoint");
    let flood_started = std::time::SystemTime::now();
    let hold = Duration::from_millis(3500);
    let mut flooders = Vec::new();
    let mut reports = Vec::new();
    for uid in [NOBODY, 65533, 65532, 65531, 65530] {
        let mut f = flooder(&hall.socket, uid, 100, hold);
        reports.push(flooder_report(&mut f));
        flooders.push(f);
    }
    let flood_over = Instant::now() + hold - Duration::from_millis(300);
    // Meanwhile health answers within 100 ms (root is an operator: it has a reserved share),
    // and root's denied dispatches append receipts the checkpoints must cover.
    let mut probes = 0;
    while Instant::now() < flood_over {
        let t = Instant::now();
        let (code, body) = hall.call(Method::GET, "/wcp/health", None);
        let took = t.elapsed();
        assert_eq!((code, body["status"].as_str()), (200, Some("ok")), "{body}");
        assert!(
            took < Duration::from_millis(100),
            "health took {took:?} during the flood"
        );
        probes += 1;
        if probes % 5 == 0 {
            let (code, body) = hall.call(
                Method::POST,
                "/wcp/dispatch",
                Some(&input(&format!("cap.unknown.flood{probes}"), "acme-corp")),
            );
            assert_eq!(code, 200, "{body}");
            assert_eq!(deny_code(&body), "DENY_NO_MATCHING_RULE");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // Per uid: 30 admitted, the rest 429; once the Hall holds 120, root's idle connections make
    // room, then 503.
    let admitted: u64 = reports
        .iter()
        .map(|r| r["admitted"].as_u64().unwrap())
        .sum();
    assert_eq!(admitted, 120, "{reports:?}");
    for r in &reports[..4] {
        assert_eq!(r["admitted"], 30, "{r}");
        assert_eq!(r["refused"]["429 too_many_connections"], 70, "{r}");
    }
    assert_eq!(reports[4]["admitted"], 0, "{}", reports[4]);
    assert_eq!(
        reports[4]["refused"]["503 connections_full"], 100,
        "{}",
        reports[4]
    );
    assert!(
        reports.iter().all(|r| r["other"] == json!([])
            && r["refused"]
                .as_object()
                .unwrap()
                .keys()
                .all(|k| k.starts_with("429 ") || k.starts_with("503 "))),
        "{reports:?}"
    );
    for s in &mut idle {
        let mut buf = [0u8; 16];
        assert_eq!(s.read(&mut buf).unwrap(), 0, "an idle connection made room");
    }
    for mut f in flooders {
        assert!(f.wait().unwrap().success());
    }
    // The checkpoints during the flood were written: the receipt log is not poisoned.
    let written = std::fs::metadata(&checkpoint).unwrap().modified().unwrap();
    assert!(
        written > flood_started,
        "a checkpoint was saved during the flood"
    );
    let log = hall.log();
    assert!(!log.contains("Too many open files"), "{log}");
    // 380 refusals in a few seconds: their WARNs are rate-limited (one per 10 s).
    let warned = log.matches("over the connection limit").count();
    assert!((1..=2).contains(&warned), "{warned} warnings: {log}");
    assert!(log.contains("connection limits"), "{log}");

    // After the flood: a tenant's dispatch is recorded, health is ok, the metrics tell.
    let (code, body) = hall.call(
        Method::POST,
        "/wcp/dispatch",
        Some(&input("cap.unknown.after", "acme-corp")),
    );
    assert_eq!(
        (code, deny_code(&body)),
        (200, "DENY_NO_MATCHING_RULE"),
        "{body}"
    );
    let (code, health) = hall.call(Method::GET, "/wcp/health", None);
    assert_eq!(
        (code, health["status"].as_str()),
        (200, Some("ok")),
        "{health}"
    );
    assert_eq!(health["receipts"]["failed"], Value::Null);
    let (_, metrics) = hall.call(Method::GET, "/metrics", None);
    let metrics = metrics.as_str().unwrap_or_default().to_owned();
    assert_eq!(
        metric(
            &metrics,
            "wcp_hall_connections_refused_total{reason=\"per_uid\"}"
        ),
        280.0
    );
    assert_eq!(
        metric(
            &metrics,
            "wcp_hall_connections_refused_total{reason=\"total\"}"
        ),
        100.0
    );
    assert_eq!(
        metric(
            &metrics,
            "wcp_hall_connections_closed_total{reason=\"evicted\"}"
        ),
        3.0
    );
    assert!(metric(&metrics, "wcp_hall_connections_open") >= 1.0);

    // An idle keep-alive connection is closed after idle_timeout_ms.
    let mut s = std::os::unix::net::UnixStream::connect(&hall.socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(6))).unwrap();
    assert_eq!(keep_alive_get(&mut s, "/_ping"), 200);
    let t = Instant::now();
    let mut buf = [0u8; 16];
    assert_eq!(s.read(&mut buf).unwrap(), 0);
    assert!(
        t.elapsed() >= Duration::from_millis(2500) && t.elapsed() < Duration::from_millis(4500),
        "closed after {:?}",
        t.elapsed()
    );
    hall.stop_and_verify_log();
}

#[test]
#[allow(unsafe_code)] // Command::pre_exec is unsafe
fn connection_caps_that_do_not_fit_the_descriptor_limit_stop_the_start() {
    for (extra, says) in [
        ("[server]\nmax_connections = 500\n", "max_connections = 500"),
        // 64 + 16 × 64 execution slots + 8 + 32 reserved: nothing left under 256.
        ("", "descriptor limit is too low"),
    ] {
        let hall = TestHall::prepare(extra);
        // SAFETY: the pre_exec closure only calls setrlimit, which is async-signal-safe.
        let o = unsafe {
            Command::new(BIN)
                .args(["serve", "-c"])
                .arg(hall.config_path())
                .arg("-s")
                .arg(&hall.socket)
                // SAFETY: setrlimit is async-signal-safe.
                .pre_exec(|| {
                    nix::sys::resource::setrlimit(
                        nix::sys::resource::Resource::RLIMIT_NOFILE,
                        256,
                        256,
                    )
                    .map_err(std::io::Error::from)
                })
                .output()
                .unwrap()
        };
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(78), "{stderr}");
        assert!(
            stderr.contains(says) && stderr.contains("RLIMIT_NOFILE is 256"),
            "{stderr}"
        );
        assert!(!hall.socket.exists(), "no socket left behind");
    }
}

/// A size-limited tmpfs, lazily unmounted when dropped (the Hall may still hold files on it).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Self {
        std::fs::create_dir_all(at).unwrap();
        let o = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(at)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        Tmpfs(at.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Writes `path` until the filesystem is full.
fn fill(path: &Path) {
    let mut f = std::fs::File::create(path).unwrap();
    for chunk in [1 << 20, 4096, 64] {
        let buf = vec![0xa5u8; chunk];
        while f.write_all(&buf).is_ok() {}
    }
    let _ = f.sync_all();
}

#[test]
fn a_full_receipt_disk_refuses_work_and_the_hall_recovers_by_itself_when_space_returns() {
    let state = std::cell::RefCell::new(None);
    let mut hall = TestHall::start_with("", "reserve_bytes = 262144", |dir| {
        let state_dir = dir.join("state");
        std::fs::create_dir(&state_dir).unwrap();
        std::fs::set_permissions(&state_dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        *state.borrow_mut() = Some(Tmpfs::mount(&state_dir.join("receipts"), "4m"));
    });
    let mount = state.into_inner().unwrap();
    let log_dir = mount.0.clone();
    assert!(log_dir.join("reserve").exists(), "{}", hall.log());
    let deny = |hall: &TestHall| {
        hall.call(
            Method::POST,
            "/wcp/dispatch",
            Some(&input("cap.none.here", "acme-corp")),
        )
    };
    let mut acked = Vec::new();
    for _ in 0..5 {
        let (s, out) = deny(&hall);
        assert_eq!(s, 200, "{out}");
        acked.push(out["execution"]["receipt"]["seq"].as_u64().unwrap());
    }
    // The disk fills up (not through a worker): the next receipt hits ENOSPC. A denial is a
    // receipt the log owes: the reserve is given up to write it, the log is degraded.
    // (The segment's last page may still hold a few lines.)
    fill(&log_dir.join("fill-1"));
    let (mut s, mut health) = (200, Value::Null);
    for _ in 0..50 {
        let (code, out) = deny(&hall);
        assert_eq!(code, 200, "owed receipts use the reserve: {out}");
        acked.push(out["execution"]["receipt"]["seq"].as_u64().unwrap());
        (s, health) = hall.call(Method::GET, "/wcp/health", None);
        if s != 200 {
            break;
        }
    }
    assert_eq!(s, 503, "{health}");
    assert_eq!(health["status"], "degraded", "{health}");
    assert_eq!(health["receipts"]["state"], "degraded", "{health}");
    assert_eq!(health["receipts"]["cause"], "resource", "{health}");
    assert_eq!(health["receipts"]["errno"], "ENOSPC", "{health}");
    assert!(health["receipts"]["since"].is_string(), "{health}");
    assert_eq!(health["receipts"]["reserve_bytes"], 0, "{health}");
    // The reserve's space is taken too: now nothing can be recorded, and nothing is answered
    // as if it had been.
    fill(&log_dir.join("fill-2"));
    let mut refused = 0;
    for _ in 0..20 {
        let (s, out) = deny(&hall);
        if s == 200 {
            acked.push(out["execution"]["receipt"]["seq"].as_u64().unwrap());
        } else {
            assert_eq!(s, 503, "{out}");
            assert_eq!(out["code"], "receipt_log_unavailable", "{out}");
            refused += 1;
        }
    }
    assert!(refused >= 15, "{refused} refused");
    let (_, metrics) = hall.call(Method::GET, "/metrics", None);
    let text = metrics.as_str().unwrap_or("");
    assert!(text.contains("wcp_hall_receipt_log_degraded 1"), "{text}");
    assert!(
        text.contains("wcp_hall_dispatch_refused_total{code=\"receipt_log_unavailable\"}"),
        "{text}"
    );
    // Space returns: the Hall serves again by itself, within seconds.
    std::fs::remove_file(log_dir.join("fill-1")).unwrap();
    std::fs::remove_file(log_dir.join("fill-2")).unwrap();
    let freed = Instant::now();
    loop {
        let (s, health) = hall.call(Method::GET, "/wcp/health", None);
        if s == 200 {
            assert_eq!(health["receipts"]["state"], "ok", "{health}");
            assert_eq!(health["receipts"]["reserve_bytes"], 262144, "{health}");
            break;
        }
        assert!(
            freed.elapsed() < Duration::from_secs(5),
            "not recovered: {health}\n{}",
            hall.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    for _ in 0..5 {
        let (s, out) = deny(&hall);
        assert_eq!(s, 200, "{out}");
        acked.push(out["execution"]["receipt"]["seq"].as_u64().unwrap());
    }
    // Each state change was logged once, with its reason.
    let log = hall.log();
    assert_eq!(log.matches("DEGRADED (resource)").count(), 1, "{log}");
    assert!(log.contains("No space left on device"), "{log}");
    assert_eq!(log.matches("RECOVERED").count(), 1, "{log}");
    assert!(
        log.matches("cut back to the last durable record").count() <= 1,
        "{log}"
    );
    if std::env::var_os("WCP_SHOW_LOG").is_some() {
        eprintln!("{log}");
    }
    assert!(log.contains("refusing appends"), "{log}");
    // Nothing acknowledged was lost, and the log verifies.
    hall.stop_and_verify_log();
    for seq in &acked {
        let o = Command::new(BIN)
            .args(["--json", "receipts", "show", &seq.to_string(), "--log"])
            .arg(&log_dir)
            .output()
            .unwrap();
        assert_eq!(
            o.status.code(),
            Some(0),
            "acknowledged receipt {seq} is missing: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(String::from_utf8_lossy(&o.stdout).contains("DENY_NO_MATCHING_RULE"));
    }
    drop(mount);
}

#[test]
fn records_removed_from_the_end_after_a_clean_stop_are_found_by_verify_and_at_start() {
    let mut hall = TestHall::start("");
    // An orderly stop ends the log with its final checkpoint record.
    denials_then_stop(&mut hall, 6);
    let log = hall.dir.path().join("state/receipts");
    let seg = log.join("receipts-00000000000000000000.jsonl");
    let data = std::fs::read(&seg).unwrap();
    // Remove the final record(s): only the last line (the checkpoint record), then three.
    for remove in [1, 3] {
        let mut lines: Vec<&[u8]> = data.split_inclusive(|b| *b == b'\n').collect();
        lines.truncate(lines.len() - remove);
        std::fs::write(&seg, lines.concat()).unwrap();
        let o = Command::new(BIN)
            .args(["receipts", "verify", "--log"])
            .arg(&log)
            .arg("--pubkey")
            .arg(hall.dir.path().join("keys/receipts.key.pub"))
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&o.stdout);
        assert_eq!(o.status.code(), Some(1), "removed {remove}: {out}");
        assert!(out.contains("missing"), "removed {remove}: {out}");
        assert!(
            out.lines().last().unwrap_or("").starts_with("FAILED"),
            "{out}"
        );
        // The Hall does not start on it.
        let mut child = Command::new(BIN)
            .args(["serve", "-c"])
            .arg(hall.config_path())
            .arg("-s")
            .arg(&hall.socket)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("the Hall started on a truncated log");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        assert_eq!(status.code(), Some(78), "{err}");
        assert!(err.contains("sev1") && err.contains("missing"), "{err}");
    }
}

/// A worker that forks and allocates in every child (issue: six children held 448 MiB each
/// under a 512 MiB limit and the report said 480 MB). Through a real Hall, as root and as an
/// ordinary user: the run's memory bound in the answer's envelope report is the true one —
/// `memory.max` for the whole run where the cgroup enforces it, otherwise per process with the
/// run's bound stated as RLIMIT_AS × the process limit — and the peak is never passed off as
/// the run's total.
fn fork_and_allocate(as_uid: Option<u32>) {
    let mut hall = hostile_hall("", as_uid, "memory_fork", json!([]));
    let mut req = input("cap.hello.greet", "acme-corp");
    req["request"] = json!({"children": 3, "each_mib": 64});
    let (s, out) = hall.call(Method::POST, "/wcp/dispatch", Some(&req));
    assert_eq!(s, 200, "{out}; {}", hall.log());
    assert_eq!(out["status"], "completed", "{out}");
    assert_eq!(out["result"]["holding"], 3, "{out}");
    let summary = &out["execution"]["summary"];
    let report = &summary["envelope"];
    let m = &report["memory"];
    let per_process = m["per_process_bytes"].as_u64().unwrap();
    let held = 3 * (64u64 << 20);
    if m["scope"] == "run" {
        assert_eq!(m["run_bound_bytes"], report["cgroup"]["memory_max"], "{m}");
        assert_eq!(summary["peak_memory_source"], "cgroup", "{summary}");
    } else {
        assert_eq!(m["scope"], "per_process", "{m}");
        assert_eq!(m["enforced"], "per_process_only", "{m}");
        let processes = m["processes_max"].as_u64().unwrap();
        assert_eq!(
            m["run_bound_bytes"].as_u64(),
            Some(per_process * processes),
            "{m}"
        );
        assert!(per_process * processes > held, "{m}");
        assert!(!m["reason"].as_str().unwrap().is_empty(), "{m}");
        // The peak is one process's, and says so.
        assert_eq!(
            summary["peak_memory_source"], "largest_process_rss",
            "{summary}"
        );
    }
    hall.stop_and_verify_log();
}

#[test]
fn a_root_halls_fork_and_allocate_worker_is_reported_with_its_true_bound() {
    fork_and_allocate(None);
}

#[test]
fn an_ordinary_users_fork_and_allocate_worker_is_reported_with_its_true_bound() {
    fork_and_allocate(Some(NOBODY));
}

/// `GET /wcp/checkpoint`: the latest saved checkpoint as signed-note text, to any peer.
#[test]
fn the_latest_signed_checkpoint_is_served_as_text_to_any_peer() {
    use wcp_hall::crypto::PublicKey;
    use wcp_hall::receipt::checkpoint;
    let mut hall = TestHall::start("[server]\nsocket_mode = \"0666\"\n");
    let socket = hall.socket.clone();
    let get = || {
        raw_exchange(
            &socket,
            b"GET /wcp/checkpoint HTTP/1.1\r\nHost: hall\r\nConnection: close\r\n\r\n",
        )
    };
    let saved = hall.dir.path().join("state/receipts/checkpoint");
    if !saved.exists() {
        let (status, body, _) = get();
        assert_eq!(
            (status, body["code"].as_str()),
            (404, Some("no_checkpoint"))
        );
    }
    // A receipt (a denial), then a clean stop, which always saves a checkpoint.
    let (_, denied) = hall.call(
        Method::POST,
        "/wcp/dispatch",
        Some(&input("cap.unknown.thing", "acme-corp")),
    );
    assert_eq!(denied["status"], "denied", "{denied}");
    hall.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(hall.wait_exit(Duration::from_secs(20)), 0);
    hall.spawn();
    let (status, _, raw) = get();
    assert_eq!(status, 200, "{raw}");
    let (head, note) = raw.split_once("\r\n\r\n").unwrap();
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; charset=utf-8"),
        "{head}"
    );
    assert_eq!(note, std::fs::read_to_string(&saved).unwrap());
    let key = PublicKey::read(&hall.dir.path().join("keys/receipts.key.pub")).unwrap();
    let opened = checkpoint::open_checkpoint(note, None, std::slice::from_ref(&key)).unwrap();
    assert!(opened.checkpoint.size > 0);
    // What is served is what was signed: one changed byte of the root no longer verifies.
    let lines: Vec<&str> = note.lines().collect();
    let mut root = lines[2].to_owned().into_bytes();
    root[0] = if root[0] == b'A' { b'B' } else { b'A' };
    let forged = note.replacen(lines[2], std::str::from_utf8(&root).unwrap(), 1);
    assert!(checkpoint::open_checkpoint(&forged, None, &[key]).is_err());
    // Any peer may read it: a uid with no tenant and no operator rights (nobody).
    let o = Command::new("curl")
        .args(["-sS", "--fail", "--unix-socket"])
        .arg(&hall.socket)
        .arg("http://hall/wcp/checkpoint")
        .uid(65534)
        .gid(65534)
        .output()
        .expect("curl must be installed");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(String::from_utf8_lossy(&o.stdout), note);
}

/// A worker whose record names its package by an OCI reference: the Hall fetches it when it
/// starts (the local copy is gone), dispatches run from the store, and with the registry down a
/// reload keeps it and dispatches go on (docs/oci.md).
#[test]
fn a_worker_named_by_an_oci_reference_runs_and_keeps_running_while_the_registry_is_down() {
    let mut registry = crate::oci::Registry::start();
    let mut hall = TestHall::start("");
    hall.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(hall.wait_exit(Duration::from_secs(20)), 0);
    let dir = hall.dir.path().to_owned();
    let pkg = dir.join("packages/hello");
    copy_dir(&repo("workers/hello"), &pkg);
    let mut record = read_record(&pkg.join("record.json"));
    let worker_id = record["worker_id"].as_str().unwrap().to_owned();
    sign_package(
        &dir,
        &pkg,
        &worker_id,
        record["worker_species_id"].as_str().unwrap(),
    );
    let (reference, _) = crate::oci::push(&pkg, &format!("{}/wcp/hello:1", registry.host()));
    std::fs::remove_dir_all(&pkg).unwrap();
    for e in std::fs::read_dir(dir.join("registry")).unwrap() {
        std::fs::remove_file(e.unwrap().path()).unwrap();
    }
    record["attestation"] = json!({"package_ref": reference});
    std::fs::write(
        dir.join(format!("registry/{worker_id}.json")),
        record.to_string(),
    )
    .unwrap();
    let text = std::fs::read_to_string(hall.config_path())
        .unwrap()
        .replace(
            "require_signatory = true",
            "require_signatory = true\nrequire_worker_attestation = true",
        );
    std::fs::write(
        hall.config_path(),
        format!(
            "{text}\n[attestation]\ntrust_policy = \"trust.json\"\nrecheck_seconds = 0\noci_plain_http = [\"{}\"]\n",
            registry.host()
        ),
    )
    .unwrap();
    hall.spawn();
    let dispatch = |hall: &TestHall| {
        let (s, out) = hall.call(
            Method::POST,
            "/wcp/dispatch",
            Some(&input("cap.hello.greet", "acme-corp")),
        );
        assert_eq!(s, 200, "{out}; {}", hall.log());
        assert_eq!(out["status"], "completed", "{out}");
        assert_eq!(out["execution"]["worker_id"], worker_id.as_str());
        out
    };
    let out = dispatch(&hall);
    assert!(
        out["execution"]["package"]["store_path"]
            .as_str()
            .unwrap()
            .contains("/store/"),
        "{out}"
    );
    registry.stop();
    let (s, reloaded) = hall.call(Method::POST, "/wcp/reload", None);
    assert_eq!(s, 200, "{reloaded}; {}", hall.log());
    dispatch(&hall);
    dispatch(&hall);
}
