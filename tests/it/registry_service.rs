//! The worker registry service (docs/registry-service.md) end to end, against a service that
//! implements exactly PyHall's documented `RegistryClient` API (`registry_service/
//! fake_registry.py`, on 127.0.0.1; the public service is not reachable from the tests): the
//! `wcp-hall registry` commands with their tokens and exit codes, the attacks of a hostile or
//! failing service, a real Hall denying from its cache what the service says (a ban reaching
//! it within the refresh interval, a dispatch never waiting on the service, fail closed in prod
//! and a warning in dev when the service is down), and PyHall's own `RegistryClient` (PyPI
//! `pyhall-wcp`) against the same server, answering what our client answers.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use hyper::Method;
use serde_json::{Value, json};

use crate::daemon::{TestHall, deny_code, input, signed_hello};
use crate::hall_support::{BIN, repo};

const SESSION: &str = "sess-0123456789-secret";
const BEARER: &str = "bear-9876543210-secret";

/// The fake service: a Python child serving on an ephemeral port, controlled by its state file.
struct FakeRegistry {
    child: Child,
    url: String,
    state: PathBuf,
    log: PathBuf,
    dir: tempfile::TempDir,
}

impl FakeRegistry {
    fn start(state: Value) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (state_path, log) = (dir.path().join("state.json"), dir.path().join("log.jsonl"));
        let mut fake = FakeRegistry {
            child: Command::new("true").spawn().unwrap(),
            url: String::new(),
            state: state_path,
            log,
            dir,
        };
        fake.set(state);
        fake.spawn();
        fake
    }

    /// Starts the server, on the port it had before if any (a service coming back).
    fn spawn(&mut self) {
        let _ = self.child.wait();
        let port = self.url.rsplit(':').next().unwrap_or("0").to_owned();
        let mut child = Command::new("python3")
            .arg(repo("tests/it/registry_service/fake_registry.py"))
            .arg(&self.state)
            .arg(&self.log)
            .arg(if port.is_empty() { "0" } else { &port })
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the fake registry service");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port: u16 = line.trim().parse().expect("the fake prints its port");
        self.child = child;
        self.url = format!("http://127.0.0.1:{port}");
    }

    /// Replaces the state (tokens added), atomically.
    fn set(&self, mut state: Value) {
        state["session"] = json!(SESSION);
        state["bearer"] = json!(BEARER);
        let tmp = self.dir.path().join("state.tmp");
        std::fs::write(&tmp, state.to_string()).unwrap();
        std::fs::rename(&tmp, &self.state).unwrap();
    }

    fn state(&self) -> Value {
        serde_json::from_str(&std::fs::read_to_string(&self.state).unwrap()).unwrap()
    }

    fn requests(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// A file holding `token`, for `--*-token-file`.
    fn token_file(&self, name: &str, token: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, format!("{token}\n")).unwrap();
        p
    }
}

impl Drop for FakeRegistry {
    fn drop(&mut self) {
        self.kill();
    }
}

fn active(hash: &str) -> Value {
    json!({"status": "active", "current_hash": hash, "banned": false, "ban_reason": null,
           "attested_at": "2026-12-01T10:00:00Z", "ai_generated": true, "ai_service": "svc",
           "ai_model": "model-x", "ai_session_fingerprint": "fp-1"})
}

fn ban(hash: &str) -> Value {
    json!({"sha256": hash, "reason": "credential stealer", "reported_at": "2026-12-02T00:00:00Z",
           "source": "community", "review_status": "confirmed"})
}

const H1: &str = "1111111111111111111111111111111111111111111111111111111111111111";
const H2: &str = "2222222222222222222222222222222222222222222222222222222222222222";

/// `wcp-hall --json registry ARGS --url URL` with no hall.toml, PYHALL_TOKEN or credentials.
fn registry_cli(url: &str, args: &[&str]) -> (Option<i32>, Value, String, Duration) {
    let started = Instant::now();
    let o: Output = Command::new(BIN)
        .args(["--json", "registry"])
        .args(args)
        .args(["--url", url, "--config", "/nonexistent/hall.toml"])
        .env_remove("PYHALL_TOKEN")
        .env_remove("PYHALL_REGISTRY_URL")
        .env_remove("CREDENTIALS_DIRECTORY")
        .output()
        .unwrap();
    let took = started.elapsed();
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    let v = serde_json::from_str(stdout.trim())
        .or_else(|_| serde_json::from_str(stderr.trim()))
        .unwrap_or(Value::Null);
    (o.status.code(), v, format!("{stdout}{stderr}"), took)
}

#[test]
fn the_cli_speaks_the_documented_api_with_its_tokens_and_exit_codes() {
    let fake = FakeRegistry::start(json!({
        "workers": {"org.acme.good.1": active(H1),
                    "org.acme.gone.1": {"status": "revoked"}},
        "bans": [ban(H2)],
    }));
    let url = fake.url.as_str();
    let (code, v, out, _) = registry_cli(url, &["verify", "org.acme.good.1"]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(v["status"], "active");
    assert_eq!(v["current_hash"], H1);
    assert_eq!(v["ai_model"], "model-x");
    let (code, v, _, _) = registry_cli(url, &["verify", "org.acme.gone.1"]);
    assert_eq!((code, v["status"].as_str()), (Some(1), Some("revoked")));
    // 404 is "unknown", as in PyHall.
    let (code, v, _, _) = registry_cli(url, &["verify", "org.acme.nobody.1"]);
    assert_eq!((code, v["status"].as_str()), (Some(1), Some("unknown")));
    let (code, v, _, _) = registry_cli(url, &["ban-list", "--limit", "10"]);
    assert_eq!(code, Some(0));
    assert_eq!(v["entries"][0]["sha256"], H2);
    assert_eq!(v["entries"][0]["reason"], "credential stealer");
    let (code, v, _, _) = registry_cli(url, &["health"]);
    assert_eq!((code, v["ok"].as_bool()), (Some(0), Some(true)));

    // A report needs the session token (PyHall's pyhall_session cookie)...
    let (code, v, _, _) = registry_cli(url, &["report", H1, "--reason", "phones home"]);
    assert_eq!(code, Some(78), "{v}");
    assert_eq!(v["error"]["code"], "registry_token_missing");
    let session = fake.token_file("session", SESSION);
    let session = session.to_str().unwrap();
    let (code, v, out, _) = registry_cli(
        url,
        &[
            "report",
            &format!("sha256:{}", H1.to_uppercase()),
            "--reason",
            "phones home",
            "--evidence-url",
            "https://example.org/e",
            "--session-token-file",
            session,
        ],
    );
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(v["reported"], H1);
    assert_eq!(
        fake.state()["reports"][0],
        json!({"sha256": H1, "reason": "phones home", "evidence_url": "https://example.org/e"})
    );
    // ... and an attestation the bearer token; a wrong one is refused (77), never echoed.
    let wrong = fake.token_file("wrong", "not-the-token-XYZ");
    let (code, v, out, _) = registry_cli(
        url,
        &[
            "attest",
            "org.acme.new.1",
            "--sha256",
            H2,
            "--bearer-token-file",
            wrong.to_str().unwrap(),
        ],
    );
    assert_eq!(code, Some(77), "{out}");
    assert_eq!(v["error"]["code"], "registry_unauthorized");
    assert!(!out.contains("not-the-token-XYZ"), "{out}");
    let bearer = fake.token_file("bearer", BEARER);
    let (code, v, out, _) = registry_cli(
        url,
        &[
            "attest",
            "org.acme.new.1",
            "--sha256",
            H2,
            "--label",
            "v1",
            "--ai-generated",
            "--ai-service",
            "svc",
            "--ai-model",
            "m",
            "--ai-session-id",
            "s-1",
            "--bearer-token-file",
            bearer.to_str().unwrap(),
        ],
    );
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(v["answer"]["status"], "active");
    let (code, v, _, _) = registry_cli(url, &["verify", "org.acme.new.1"]);
    assert_eq!((code, v["current_hash"].as_str()), (Some(0), Some(H2)));
    assert_eq!(v["ai_session_fingerprint"], "s-1");
    // What went over the wire: the documented paths and bodies, each token only where needed.
    let reqs = fake.requests();
    let put = reqs.iter().rev().find(|r| r["method"] == "PUT").unwrap();
    assert_eq!(put["path"], "/api/v1/workers/org.acme.new.1/attest");
    assert_eq!(
        put["body"],
        json!({"sha256": H2, "label": "v1", "ai_generated": true, "ai_service": "svc",
               "ai_model": "m", "ai_session_id": "s-1"})
    );
    assert_eq!(
        (put["bearer"].as_bool(), put["cookie"].as_bool()),
        (Some(true), Some(false))
    );
    assert!(
        reqs.iter()
            .any(|r| r["path"] == "/api/v1/ban-list?limit=10")
    );
    assert!(
        reqs.iter()
            .all(|r| r["user_agent"].as_str().unwrap().starts_with("wcp-hall/")),
        "{reqs:?}"
    );
    // A bad hash is a usage error before anything is sent.
    let (code, _, _, _) = registry_cli(url, &["report", "abc", "--reason", "x"]);
    assert_eq!(code, Some(2));
}

#[test]
fn hostile_or_failing_services_get_typed_errors_within_bounds() {
    let fake = FakeRegistry::start(json!({"workers": {"org.acme.good.1": active(H1)}}));
    let url = fake.url.as_str();
    let bearer = fake.token_file("bearer", BEARER);
    let bearer = bearer.to_str().unwrap();
    let verify = ["verify", "org.acme.good.1", "--bearer-token-file", bearer];
    for (mode, exit, code) in [
        ("ratelimit", 75, "registry_rate_limited"),
        ("error", 69, "registry_error"),
        ("huge", 65, "registry_answer_too_large"),
        ("redirect", 65, "registry_redirect"),
        ("garbage", 65, "registry_answer_malformed"),
        ("dupkey", 65, "registry_answer_malformed"),
    ] {
        fake.set(json!({"mode": mode}));
        let (got, v, out, took) = registry_cli(url, &verify);
        assert_eq!(got, Some(exit), "{mode}: {out}");
        assert_eq!(v["error"]["code"], code, "{mode}: {v}");
        assert!(!out.contains(BEARER), "{mode}: the token leaked: {out}");
        assert!(took < Duration::from_secs(10), "{mode} took {took:?}");
    }
    // A redirect is an error, not an answer from elsewhere (nothing listens on its target, so
    // following it could not have given 65); a duplicate key is named.
    let dup = registry_cli(url, &verify).1;
    assert!(
        dup["error"]["message"]
            .as_str()
            .unwrap()
            .contains("duplicate key"),
        "{dup}"
    );

    // A slow service is cut off by the timeout of [registry_service] (here 1 s).
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("hall.toml");
    std::fs::write(&config, "[registry_service]\ntimeout_ms = 1000\n").unwrap();
    fake.set(json!({"mode": "slow"}));
    let started = Instant::now();
    let o = Command::new(BIN)
        .args([
            "--json",
            "registry",
            "verify",
            "org.acme.good.1",
            "--url",
            url,
            "--config",
        ])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(69),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("within 1000 ms"));
    assert!(started.elapsed() < Duration::from_secs(10));

    // A URL with credentials in it is refused before anything is sent, without echoing them.
    let (code, v, out, _) = registry_cli(
        "http://admin:hunter2@127.0.0.1:1",
        &["verify", "org.acme.good.1"],
    );
    assert_eq!(code, Some(78), "{out}");
    assert_eq!(v["error"]["code"], "registry_url_invalid");
    assert!(!out.contains("hunter2"), "{out}");
}

/// Stops `hall`, enrolls the signed hello worker, turns attestation and the registry service
/// (at `url`, refreshing every second, stale after 3 s) on and starts it again. Returns the
/// worker id and its package digest.
fn restart_with_registry(
    hall: &mut TestHall,
    url: &str,
    before_start: impl FnOnce(&str, &str, &std::path::Path),
) {
    hall.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(hall.wait_exit(Duration::from_secs(20)), 0);
    let (pkg, worker_id) = signed_hello(hall.dir.path());
    let o = Command::new(BIN)
        .args(["attest", "hash"])
        .arg(&pkg)
        .output()
        .unwrap();
    let digest = String::from_utf8_lossy(&o.stdout).trim().to_owned();
    assert_eq!(digest.len(), 64, "{digest}");
    before_start(&worker_id, &digest, &pkg);
    let text = std::fs::read_to_string(hall.config_path())
        .unwrap()
        .replace(
            "require_signatory = true",
            "require_signatory = true\nrequire_worker_attestation = true",
        );
    std::fs::write(
        hall.config_path(),
        format!(
            "{text}\n[attestation]\ntrust_policy = \"trust.json\"\nrecheck_seconds = 0\n\n\
             [registry_service]\nenabled = true\nurl = \"{url}\"\nrefresh_seconds = 1\n\
             max_staleness_seconds = 3\ntimeout_ms = 1000\nsend_decision_counts = true\n"
        ),
    )
    .unwrap();
    hall.spawn();
}

fn dispatch(hall: &TestHall, env: &str) -> (Value, Duration) {
    let mut req = input("cap.hello.greet", "acme-corp");
    req["env"] = json!(env);
    let started = Instant::now();
    let (_, out) = hall.call(Method::POST, "/wcp/dispatch", Some(&req));
    (out, started.elapsed())
}

/// Dispatches in `env` until the answer's deny code is `want` ("" for not denied), at most
/// `within`; returns the answer and how long it took.
fn until(hall: &TestHall, env: &str, want: &str, within: Duration) -> (Value, Duration) {
    let started = Instant::now();
    loop {
        let (out, _) = dispatch(hall, env);
        if deny_code(&out) == want {
            return (out, started.elapsed());
        }
        assert!(
            started.elapsed() < within,
            "no {want:?} within {within:?}: {out}; {}",
            hall.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn receipt(hall: &TestHall, out: &Value) -> Value {
    let seq = out["execution"]["receipt"]["seq"].as_u64().unwrap();
    let (code, shown, err) = hall.show_receipt(seq);
    assert_eq!(code, Some(0), "{err}");
    shown["payload"]["dispatch"].clone()
}

#[test]
fn a_running_hall_denies_from_its_cache_what_the_registry_says() {
    let mut fake = FakeRegistry::start(json!({}));
    let mut hall = TestHall::start("");
    let mut ids = (String::new(), String::new());
    let url = fake.url.clone();
    restart_with_registry(&mut hall, &url, |worker_id, digest, pkg| {
        // As CI would after signing: attest the package's digest at the service.
        let bearer = fake.token_file("bearer", BEARER);
        let (code, v, out, _) = registry_cli(
            &url,
            &[
                "attest",
                worker_id,
                "--package",
                pkg.to_str().unwrap(),
                "--bearer-token-file",
                bearer.to_str().unwrap(),
            ],
        );
        assert_eq!(code, Some(0), "{out}");
        assert_eq!(v["sha256"], digest);
        ids = (worker_id.to_owned(), digest.to_owned());
    });
    let (worker_id, digest) = ids;
    let refresh = Duration::from_secs(1);

    // Before the first refresh, dev proceeds with a warning (nothing fetched yet) and prod
    // would deny; then, active with the verified digest: it runs, and the status used is in the
    // answer and the receipt.
    let started = Instant::now();
    let ok = loop {
        let (out, _) = dispatch(&hall, "dev");
        if out["registry_service"]["status"] == "active" {
            break out;
        }
        assert_eq!(out["status"], "completed", "{out}");
        assert!(started.elapsed() < Duration::from_secs(10), "{out}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(ok["status"], "completed", "{ok}");
    assert_eq!(ok["registry_service"]["status"], "active", "{ok}");
    let r = receipt(&hall, &ok);
    assert_eq!(r["registry_service"]["status"], "active", "{r}");
    assert!(
        r["registry_service"]["status_fetched_at"].is_string(),
        "{r}"
    );

    // A ban of the package's hash reaches the running Hall within the refresh interval.
    fake.set(json!({"workers": {&worker_id: active(&digest)}, "bans": [ban(&digest)]}));
    let (banned, took) = until(&hall, "dev", "DENY_WORKER_BANNED", Duration::from_secs(10));
    assert!(
        took <= refresh + Duration::from_secs(2),
        "the ban took {took:?}"
    );
    let reason = &banned["decision"]["deny_reason_if_denied"];
    assert!(
        reason["message"]
            .as_str()
            .unwrap()
            .contains("credential stealer"),
        "{reason}"
    );
    let r = receipt(&hall, &banned);
    assert_eq!(r["decision"]["deny_code"], "DENY_WORKER_BANNED", "{r}");
    assert_eq!(r["worker_id"], worker_id.as_str(), "{r}");
    assert_eq!(r["registry_service"]["status"], "active", "{r}");
    // A garbled answer does not lift the ban, nor does its age: the list stays until a
    // complete, valid one replaces it.
    fake.set(json!({"mode": "garbage"}));
    std::thread::sleep(refresh * 4);
    let (still, _) = dispatch(&hall, "dev");
    assert_eq!(deny_code(&still), "DENY_WORKER_BANNED", "{still}");

    // A banned worker, a revoked one, one the registry does not know, another hash.
    let mut flagged = active(&digest);
    flagged["status"] = json!("banned");
    flagged["ban_reason"] = json!("abuse");
    for (status, want) in [
        (flagged, "DENY_WORKER_BANNED"),
        (json!({"status": "revoked"}), "DENY_WORKER_REVOKED"),
        (active(H2), "DENY_WORKER_TAMPERED"),
    ] {
        fake.set(json!({"workers": {&worker_id: status}}));
        let (out, _) = until(&hall, "dev", want, Duration::from_secs(10));
        assert_eq!(
            out["decision"]["deny_reason_if_denied"]["worker_species_id"],
            "wrk.hello.greeter"
        );
    }
    fake.set(json!({"workers": {}}));
    until(
        &hall,
        "dev",
        "DENY_WORKER_ATTESTATION_MISSING",
        Duration::from_secs(10),
    );

    // Back to active; then the service hangs: dispatches answer from the cache at once.
    fake.set(json!({"workers": {&worker_id: active(&digest)}}));
    until(&hall, "prod", "", Duration::from_secs(10));
    fake.set(json!({"workers": {&worker_id: active(&digest)}, "mode": "slow"}));
    std::thread::sleep(refresh + Duration::from_millis(200));
    let (out, took) = dispatch(&hall, "prod");
    assert_eq!(out["status"], "completed", "{out}");
    assert!(
        took < Duration::from_secs(5),
        "a dispatch waited on the service: {took:?}"
    );

    // The service is down: once its data is older than max_staleness_seconds, prod fails
    // closed and dev proceeds with a warning in the answer and the receipt.
    fake.kill();
    let (stale, _) = until(
        &hall,
        "prod",
        "DENY_REGISTRY_STATUS_STALE",
        Duration::from_secs(15),
    );
    assert!(
        stale["decision"]["deny_reason_if_denied"]["message"]
            .as_str()
            .unwrap()
            .contains("Failing closed"),
        "{stale}"
    );
    let (_, health) = hall.call(Method::GET, "/wcp/health", None);
    let cache = &health["registry_service"]["cache"];
    assert!(
        cache["last_error"]
            .as_str()
            .unwrap()
            .contains("cannot be reached"),
        "{health}"
    );
    assert_eq!(health["registry_service"]["url"], fake.url.as_str());
    let (warned, _) = dispatch(&hall, "dev");
    assert_eq!(warned["status"], "completed", "{warned}");
    let warning = warned["registry_service"]["warning"].as_str().unwrap();
    assert!(warning.contains("stale"), "{warning}");
    assert_eq!(
        receipt(&hall, &warned)["registry_service"]["warning"],
        warning
    );

    // The service comes back: prod runs again within the refresh interval.
    fake.set(json!({"workers": {&worker_id: active(&digest)}}));
    fake.spawn();
    let (_, took) = until(&hall, "prod", "", Duration::from_secs(10));
    assert!(
        took <= refresh + Duration::from_secs(3),
        "recovery took {took:?}"
    );

    // Allowed dispatches were counted and sent (send_decision_counts = true).
    let sent: Vec<Value> = fake
        .requests()
        .into_iter()
        .filter(|r| r["path"] == "/api/v1/telemetry/decisions")
        .collect();
    assert!(!sent.is_empty(), "decision counts are sent when enabled");
    assert_eq!(
        sent[0]["body"]["decisions"][0]["worker_id"],
        worker_id.as_str()
    );
    assert!(sent[0]["body"]["decisions"][0]["count"].as_u64().unwrap() >= 1);
    // The token-free refresher never sent credentials it does not have (only the CLI's
    // attestation carried one).
    assert!(
        fake.requests()
            .iter()
            .filter(|r| r["method"] != "PUT")
            .all(|r| r["cookie"] == false && r["bearer"] == false)
    );

    // Every receipt, with its registry_service record, verifies offline.
    hall.stop_and_verify_log();
}

/// PyHall's own client (PyPI `pyhall-wcp`) against the same server answers what ours does.
#[test]
fn pyhalls_own_registry_client_speaks_the_same_api() {
    let venv = crate::venv::python_venv(
        "pyhall-wcp",
        "pyhall-wcp==0.2.2\n",
        "from pyhall.registry_client import RegistryClient",
    );
    // A service sends every field (PyHall's client reads an absent boolean as None, ours as
    // false: both falsy, see docs/registry-service.md).
    let mut revoked = active(H1);
    revoked["status"] = json!("revoked");
    revoked["current_hash"] = Value::Null;
    let fake = FakeRegistry::start(json!({
        "workers": {"org.acme.good.1": active(H1), "org.acme.gone.1": revoked},
        "bans": [ban(H2)],
    }));
    let script = format!(
        r#"
import dataclasses, json, sys
from pyhall.registry_client import RegistryClient, RegistryRateLimitError
c = RegistryClient(base_url=sys.argv[1], session_token={SESSION:?})
out = {{}}
out["good"] = dataclasses.asdict(c.verify("org.acme.good.1"))
out["gone"] = dataclasses.asdict(c.verify("org.acme.gone.1"))
out["nobody"] = dataclasses.asdict(c.verify("org.acme.nobody.1"))
out["bans"] = [dataclasses.asdict(e) for e in c.get_ban_list(limit=10)]
out["h2_banned"] = c.is_hash_banned({H2:?})
out["h1_banned"] = c.is_hash_banned({H1:?})
out["health"] = c.health()
out["hash_good"] = c.get_worker_hash("org.acme.good.1")
out["hash_gone"] = c.get_worker_hash("org.acme.gone.1")
c.report_hash({H1:?}, "phones home", "https://example.org/e")
print(json.dumps(out))
"#
    );
    let o = Command::new(venv.join("bin/python"))
        .args(["-c", &script, &fake.url])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let py: Value = serde_json::from_slice(&o.stdout).unwrap();
    // Field for field, PyHall's VerifyResponse is what `wcp-hall registry verify` prints.
    for id in ["good", "gone", "nobody"] {
        let (_, ours, out, _) = registry_cli(&fake.url, &["verify", &format!("org.acme.{id}.1")]);
        assert_eq!(py[id], ours, "{id}: {out}");
    }
    let (_, ours, _, _) = registry_cli(&fake.url, &["ban-list", "--limit", "10"]);
    assert_eq!(py["bans"], ours["entries"]);
    assert_eq!(
        (py["h2_banned"].as_bool(), py["h1_banned"].as_bool()),
        (Some(true), Some(false))
    );
    assert_eq!(py["health"], registry_cli(&fake.url, &["health"]).1);
    assert_eq!(
        (py["hash_good"].as_str(), &py["hash_gone"]),
        (Some(H1), &Value::Null)
    );
    // PyHall's report went through with its session cookie, in the body shape ours sends.
    assert_eq!(
        fake.state()["reports"][0],
        json!({"sha256": H1, "reason": "phones home", "evidence_url": "https://example.org/e"})
    );
    let reqs = fake.requests();
    let paths: Vec<&str> = reqs.iter().map(|r| r["path"].as_str().unwrap()).collect();
    assert!(
        paths.contains(&"/api/v1/verify/org.acme.good.1"),
        "{paths:?}"
    );
    assert!(paths.contains(&"/api/v1/ban-list?limit=10"), "{paths:?}");

    // A 429 is PyHall's RegistryRateLimitError, and ours exits 75.
    fake.set(json!({"mode": "ratelimit"}));
    let o = Command::new(venv.join("bin/python"))
        .args([
            "-c",
            "import sys\nfrom pyhall.registry_client import RegistryClient, RegistryRateLimitError\n\
             try:\n    RegistryClient(base_url=sys.argv[1]).verify('org.acme.x.1')\nexcept RegistryRateLimitError:\n    print('rate-limited')",
            &fake.url,
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "rate-limited");
    assert_eq!(
        registry_cli(&fake.url, &["verify", "org.acme.x.1"]).0,
        Some(75)
    );
}
