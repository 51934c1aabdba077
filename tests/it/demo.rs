//! End-to-end tests of `wcp-hall demo` and `wcp-hall init`: the real binary, a real Hall
//! child, real worker processes under the privilege envelope, real signatures and receipts.
//!
//! The demo tests run one at a time (a lock): the first holds 127.0.0.1:18080 itself, so the
//! demo must move the fetcher's allowlist to another port; the others find it free.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;

use serde_json::Value;

use crate::hall_support::{BIN, copy_dir, repo};
static DEMO: Mutex<()> = Mutex::new(());

fn wcp(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("WCP_HALL_CONFIG")
        .env_remove("WCP_HALL_SOCKET")
        .env_remove("STATE_DIRECTORY")
        .stdin(Stdio::null())
        .output()
        .expect("run wcp-hall")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The demo's JSON lines, and each step's objects by step name (in order).
fn steps(o: &Output) -> (Vec<Value>, BTreeMap<String, Vec<Value>>) {
    let lines: Vec<Value> = text(&o.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("not one JSON object per line ({e}): {l}"))
        })
        .collect();
    let mut by: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for l in &lines {
        let step = l["step"].as_str().expect("every line names its step");
        by.entry(step.to_owned()).or_default().push(l.clone());
    }
    (lines, by)
}

fn one<'a>(by: &'a BTreeMap<String, Vec<Value>>, step: &str) -> &'a Value {
    let v = by
        .get(step)
        .unwrap_or_else(|| panic!("no {step:?} step in {:?}", by.keys()));
    assert_eq!(v.len(), 1, "{step}: {v:?}");
    &v[0]
}

/// Removes a kept demo directory (its store copies are read-only).
fn remove(dir: &Path) {
    fn open_up(p: &Path) {
        if let Ok(m) = std::fs::symlink_metadata(p)
            && m.is_dir()
        {
            let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755));
            for e in std::fs::read_dir(p).into_iter().flatten().flatten() {
                open_up(&e.path());
            }
        }
    }
    open_up(dir);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn demo_runs_the_governed_pipeline_and_cleans_up() {
    let _serial = DEMO.lock().unwrap_or_else(|p| p.into_inner());
    // Hold the port the fetcher's record names: the demo must pick another and rewrite the
    // enrolled record (if something else holds it already, the same is true).
    let held = TcpListener::bind(("127.0.0.1", 18080)).ok();
    let o = wcp(&["--json", "demo"]);
    let (lines, by) = steps(&o);
    assert_eq!(o.status.code(), Some(0), "stderr: {}", text(&o.stderr));
    assert!(lines.iter().all(|l| l["ok"] == true), "{lines:#?}");

    let dir = PathBuf::from(one(&by, "workspace")["dir"].as_str().unwrap());
    assert!(dir.is_absolute());

    // Six packages signed and enrolled; the rules load without shadows.
    let enrolled = &by["enroll"];
    assert_eq!(enrolled.len(), 6);
    for e in enrolled {
        assert_eq!(e["package_hash"].as_str().unwrap().len(), 64, "{e}");
        assert!(
            e["worker_id"]
                .as_str()
                .unwrap()
                .starts_with("org.wcp-hall.")
        );
    }
    // The rules are the bundled policies/rules.json.
    let bundled: Value =
        serde_json::from_str(&std::fs::read_to_string(repo("policies/rules.json")).unwrap())
            .unwrap();
    let config = one(&by, "config");
    assert_eq!(config["rules"], bundled["rules"].as_array().unwrap().len());
    assert_eq!(config["shadowed_rules"], 0);
    assert_eq!(config["workers"], 6);

    // The fixture server moved off a busy 18080, and the fetcher's enrolled allowlist with it.
    let document = one(&by, "document");
    let port = document["port"].as_u64().unwrap();
    if held.is_some() {
        assert_ne!(port, 18080);
        assert_eq!(document["preferred_port"], false);
    }
    let fetcher = enrolled
        .iter()
        .find(|e| e["package"] == "web_fetcher")
        .unwrap();
    assert_eq!(
        fetcher["network_egress"],
        serde_json::json!([format!("127.0.0.1:{port}")])
    );

    // The pipeline: five dispatches, one correlation id, all completed, in order.
    let pipeline = &by["pipeline"];
    let caps: Vec<&str> = pipeline
        .iter()
        .map(|p| p["capability_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        caps,
        [
            "cap.web.fetch",
            "cap.doc.chunk",
            "cap.ml.embed",
            "cap.doc.hash",
            "cap.research.register"
        ]
    );
    let cid = pipeline[0]["correlation_id"].as_str().unwrap();
    assert!(!cid.is_empty());
    let mut chain = 0;
    for (i, p) in pipeline.iter().enumerate() {
        assert_eq!(p["index"], i + 1);
        assert_eq!(p["status"], "completed", "{p}");
        assert_eq!(p["decision"], "allowed");
        assert_eq!(
            p["correlation_id"], cid,
            "one correlation id through all five"
        );
        assert!(p["matched_rule_id"].as_str().unwrap().starts_with("rr_"));
        assert_eq!(p["policies"], serde_json::json!(["pol.nonprod.allow"]));
        // The envelope report came back and the worker never ran as root.
        let env = &p["envelope"];
        assert!(env["landlock"].is_string(), "{p}");
        assert_ne!(env["uid"], 0, "{p}");
        // The Hall's blast accounting adds up along the chain.
        chain += p["blast"].as_u64().unwrap();
        assert_eq!(p["chain_blast"], chain, "{p}");
        assert!(p["receipt"]["seq"].is_u64(), "{p}");
    }
    // The second pass: every worker was started ahead of its request ([warm]) and served it.
    let warm = &by["warm"][0];
    assert_eq!(warm["warm_steps"], 5, "{warm}");
    assert_ne!(warm["correlation_id"], cid, "{warm}");
    for step in warm["each"].as_array().unwrap() {
        assert_eq!(step["instance"]["kind"], "warm", "{step}");
        assert!(step["instance"]["idle_ms"].as_u64().unwrap() > 0, "{step}");
    }
    // The fetcher's envelope allowed exactly the fixture's port.
    let fetch_env = &pipeline[0]["envelope"];
    if fetch_env["network_mode"] == "landlock_tcp_ports" {
        assert_eq!(fetch_env["tcp_connect_ports"], serde_json::json!([port]));
    }
    assert_eq!(pipeline[1]["envelope"]["network_mode"], "namespace");
    assert_eq!(
        pipeline[4]["envelope"]["writes"].as_array().unwrap().len(),
        1,
        "the registrar writes its knowledge directory only"
    );

    // Governance.
    let t = one(&by, "tampered_worker");
    assert_eq!(t["status"], "denied");
    assert_eq!(t["deny_code"], "DENY_WORKER_TAMPERED");
    assert_eq!(t["ran"], false);
    let u = one(&by, "unknown_capability");
    assert_eq!(u["deny_code"], "DENY_NO_MATCHING_RULE");
    let h = one(&by, "require_human");
    assert_eq!(h["status"], "pending_approval");
    assert_eq!(h["supervisor_level"], "gatekeeper");
    assert_eq!(
        h["policies"],
        serde_json::json!(["pol.nonprod.restricted-review"])
    );
    let a = one(&by, "approved");
    assert_eq!(a["approval_status"], "approved");
    assert_eq!(a["status"], "completed");
    assert_eq!(a["greeting"], "Hello, Ada!");

    // Evidence.
    assert_eq!(one(&by, "hall_stopped")["exit_code"], 0);
    let r = one(&by, "receipts_verified");
    // 5 × (intent + executed), 2 denials, the approved run's intent + executed, a checkpoint.
    assert!(r["records"].as_u64().unwrap() >= 14, "{r}");
    assert_eq!(r["passed"], r["records"]);
    assert_eq!(r["pipeline_executed"], 5);
    assert_eq!(r["tampered_executed"], 0);
    assert!(r["tampered_denied"].as_u64().unwrap() >= 1);
    assert!(r["checkpoints_ok"].as_u64().unwrap() >= 1);

    // Cleaned up.
    let c = one(&by, "cleanup");
    assert_eq!(c["removed"], true);
    assert!(!dir.exists(), "{} is still there", dir.display());
    assert_eq!(lines.last().unwrap()["step"], "cleanup");
    drop(held);
}

#[test]
fn demo_keep_keeps_a_directory_whose_receipt_log_verifies_again() {
    let _serial = DEMO.lock().unwrap_or_else(|p| p.into_inner());
    let o = wcp(&["--json", "demo", "--keep"]);
    assert_eq!(o.status.code(), Some(0), "stderr: {}", text(&o.stderr));
    let (_, by) = steps(&o);
    let dir = PathBuf::from(one(&by, "workspace")["dir"].as_str().unwrap());
    assert_eq!(one(&by, "cleanup")["kept"], true);
    assert!(dir.join("hall.toml").is_file());
    // The Hall routed with the bundled rules, byte for byte.
    assert_eq!(
        std::fs::read(dir.join("rules.json")).unwrap(),
        std::fs::read(repo("policies/rules.json")).unwrap()
    );
    for key in ["keys/packages.key", "keys/receipts.key"] {
        let mode = std::fs::metadata(dir.join(key))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{key}");
    }
    let knowledge = one(&by, "locations")["locations"]["knowledge_store"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(Path::new(&knowledge).is_file(), "{knowledge}");
    // Verified again, offline, by the CLI an auditor uses.
    let log = dir.join("state/receipts");
    let pubkey = dir.join("keys/receipts.key.pub");
    let v = wcp(&[
        "receipts",
        "verify",
        "--log",
        log.to_str().unwrap(),
        "--pubkey",
        pubkey.to_str().unwrap(),
    ]);
    assert_eq!(
        v.status.code(),
        Some(0),
        "{}{}",
        text(&v.stdout),
        text(&v.stderr)
    );
    // A key the log was not signed with is not trusted.
    let other = dir.join("keys/packages.key.pub");
    let v = wcp(&[
        "receipts",
        "verify",
        "--log",
        log.to_str().unwrap(),
        "--pubkey",
        other.to_str().unwrap(),
    ]);
    assert_ne!(v.status.code(), Some(0));
    remove(&dir);
}

/// Whether every ancestor of `p` lets others through (an ordinary user must reach the binary
/// and the bundled workers).
fn world_traversable(p: &Path) -> bool {
    p.ancestors().skip(1).all(|a| {
        a.as_os_str().is_empty()
            || std::fs::metadata(a).is_ok_and(|m| m.permissions().mode() & 0o001 != 0)
    })
}

#[test]
fn demo_runs_as_an_ordinary_user() {
    let _serial = DEMO.lock().unwrap_or_else(|p| p.into_inner());
    let setpriv = Path::new("/usr/bin/setpriv");
    if !nix::unistd::geteuid().is_root()
        || !setpriv.exists()
        || !world_traversable(Path::new(BIN))
        || !world_traversable(&repo("workers/hello/record.json"))
    {
        // Already an ordinary user (the other tests are this test), or no way to become one.
        eprintln!(
            "SKIPPED: needs root, setpriv and a world-readable checkout to drop to uid 65534"
        );
        return;
    }
    let o = Command::new(setpriv)
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(BIN)
        .args(["--json", "demo"])
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", "/tmp")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "stderr: {}", text(&o.stderr));
    let (_, by) = steps(&o);
    let dir = PathBuf::from(one(&by, "workspace")["dir"].as_str().unwrap());
    // The Hall ran as the ordinary user, and so did its workers (in a user namespace).
    assert_eq!(one(&by, "kernel")["probe"]["hall_uid"], 65534);
    for p in &by["pipeline"] {
        assert_eq!(p["status"], "completed");
        assert_eq!(p["envelope"]["uid"], 65534, "{p}");
    }
    assert_eq!(one(&by, "approved")["greeting"], "Hello, Ada!");
    // Its read-only store copies were removed by their owner, who is not root.
    assert_eq!(one(&by, "cleanup")["removed"], true);
    assert!(!dir.exists());
}

#[test]
fn demo_stops_at_a_failing_step_with_the_reason_and_cleans_up() {
    let _serial = DEMO.lock().unwrap_or_else(|p| p.into_inner());
    let tree = tempfile::tempdir().unwrap();
    copy_dir(&repo("workers"), &tree.path().join("workers"));
    copy_dir(&repo("policies"), &tree.path().join("policies"));
    // A worker whose logic crashes: the run fails and the demo must say so, not carry on.
    let logic = tree.path().join("workers/doc_hasher/code/worker_logic.py");
    let mut broken = std::fs::read_to_string(&logic).unwrap();
    broken.push_str("\n\ndef run(request, ctx):\n    raise RuntimeError('broken on purpose')\n");
    std::fs::write(&logic, broken).unwrap();
    let workers = tree.path().join("workers");
    let o = wcp(&["--json", "demo", "--workers", workers.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "stdout: {}", text(&o.stdout));
    let (lines, by) = steps(&o);
    let last = lines.last().unwrap();
    assert_eq!(last["step"], "pipeline");
    assert_eq!(last["ok"], false);
    assert!(
        last["error"].as_str().unwrap().contains("internal_error"),
        "{last}"
    );
    assert_eq!(
        by["pipeline"].len(),
        4,
        "steps 1-3 completed, step 4 failed"
    );
    let err: Value = serde_json::from_str(text(&o.stderr).trim()).unwrap();
    assert_eq!(err["error"]["code"], "demo_failed");
    let dir = PathBuf::from(one(&by, "workspace")["dir"].as_str().unwrap());
    assert!(!dir.exists(), "removed after a failure too");
}

#[test]
fn an_interrupted_demo_stops_its_hall_and_removes_its_directory() {
    use std::io::BufRead;
    let _serial = DEMO.lock().unwrap_or_else(|p| p.into_inner());
    let mut child = Command::new(BIN)
        .args(["--json", "demo"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut dir = None;
    let mut hall_pid = None;
    for line in std::io::BufReader::new(stdout).lines() {
        let v: Value = serde_json::from_str(&line.unwrap()).unwrap();
        match v["step"].as_str() {
            Some("workspace") => dir = v["dir"].as_str().map(PathBuf::from),
            Some("hall_started") => {
                hall_pid = v["pid"].as_i64();
                break;
            }
            _ => {}
        }
    }
    let (dir, hall_pid) = (dir.unwrap(), hall_pid.unwrap());
    assert!(dir.exists());
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap()),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(130), "stderr: {}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("interrupted by SIGINT"),
        "{}",
        text(&o.stderr)
    );
    assert!(!dir.exists(), "{} is still there", dir.display());
    assert!(
        !Path::new(&format!("/proc/{hall_pid}")).exists(),
        "the Hall (pid {hall_pid}) outlived the demo"
    );
}

#[test]
fn demo_without_its_workers_says_where_to_point_it() {
    let o = wcp(&["demo", "--workers", "/nonexistent/workers"]);
    assert_eq!(o.status.code(), Some(66));
    let err = text(&o.stderr);
    assert!(
        err.contains("record.json") && err.contains("--workers"),
        "{err}"
    );
}

// ---- init -----------------------------------------------------------------------------------

fn init(dir: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["--json", "init", "--dir", dir.to_str().unwrap()];
    args.extend_from_slice(extra);
    wcp(&args)
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn init_creates_a_usable_state_directory_with_private_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    let o = init(&dir, &["--namespace", "org.acme"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["changed"], true);
    assert_eq!(v["tenant"], "acme");
    assert!(v["kept"].as_array().unwrap().is_empty(), "{v}");
    for f in ["hall.toml", "rules.json", "trust.json"] {
        assert!(dir.join(f).is_file(), "{f}");
    }
    for d in ["registry", "store", "receipts", "profiles", "cedar"] {
        assert!(dir.join(d).is_dir(), "{d}");
    }
    assert_eq!(mode(&dir), 0o711);
    assert_eq!(mode(&dir.join("keys")), 0o700);
    assert_eq!(mode(&dir.join("receipts")), 0o700);
    for key in ["signing.key", "receipts.key"] {
        assert_eq!(mode(&dir.join("keys").join(key)), 0o600, "{key}");
        assert!(dir.join("keys").join(format!("{key}.pub")).is_file());
    }
    // The trust policy trusts the new key for the namespace.
    let t = wcp(&[
        "--json",
        "attest",
        "check-trust",
        dir.join("trust.json").to_str().unwrap(),
    ]);
    assert_eq!(t.status.code(), Some(0), "{}", text(&t.stderr));
    let t: Value = serde_json::from_slice(&t.stdout).unwrap();
    assert_eq!(t["namespaces"][0]["namespace"], "org.acme");
    assert_eq!(t["namespaces"][0]["keys"][0]["key_id"], v["signing_key_id"]);
    // The configuration is what `serve` would load.
    let c = wcp(&[
        "config",
        "check",
        "-c",
        dir.join("hall.toml").to_str().unwrap(),
    ]);
    assert_eq!(
        c.status.code(),
        Some(0),
        "{}{}",
        text(&c.stdout),
        text(&c.stderr)
    );
    // A package signed with the key verifies under the trust policy.
    let pkg = tmp.path().join("pkg");
    copy_dir(&repo("workers/hello"), &pkg);
    let key = dir.join("keys/signing.key");
    let s = wcp(&[
        "attest",
        "sign",
        pkg.to_str().unwrap(),
        "--worker-id",
        "org.acme.hello.1",
        "--species",
        "wrk.hello.greeter",
        "--worker-version",
        "1",
        "--key",
        key.to_str().unwrap(),
    ]);
    assert_eq!(s.status.code(), Some(0), "{}", text(&s.stderr));
    let check = wcp(&[
        "attest",
        "verify",
        pkg.to_str().unwrap(),
        "--worker-id",
        "org.acme.hello.1",
        "--species",
        "wrk.hello.greeter",
        "--trust",
        dir.join("trust.json").to_str().unwrap(),
    ]);
    assert_eq!(check.status.code(), Some(0), "{}", text(&check.stdout));
}

#[test]
fn init_twice_creates_nothing_new() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    assert_eq!(init(&dir, &[]).status.code(), Some(0));
    let before: Vec<Vec<u8>> = [
        "keys/signing.key",
        "keys/receipts.key",
        "trust.json",
        "hall.toml",
    ]
    .iter()
    .map(|f| std::fs::read(dir.join(f)).unwrap())
    .collect();
    let o = init(&dir, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["changed"], false);
    assert!(v["created"].as_array().unwrap().is_empty(), "{v}");
    assert!(v["kept"].as_array().unwrap().len() >= 12, "{v}");
    let after: Vec<Vec<u8>> = [
        "keys/signing.key",
        "keys/receipts.key",
        "trust.json",
        "hall.toml",
    ]
    .iter()
    .map(|f| std::fs::read(dir.join(f)).unwrap())
    .collect();
    assert_eq!(before, after);
    // Human output says so.
    let o = wcp(&["init", "--dir", dir.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0));
    assert!(
        text(&o.stdout).contains("nothing new"),
        "{}",
        text(&o.stdout)
    );
}

#[test]
fn init_refuses_to_overwrite_a_key() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    std::fs::create_dir_all(dir.join("keys")).unwrap();
    let key = dir.join("keys/signing.key");
    // Not a key at all.
    std::fs::write(&key, "my precious\n").unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let o = init(&dir, &[]);
    assert_eq!(o.status.code(), Some(74), "{}", text(&o.stdout));
    let err = text(&o.stderr);
    assert!(
        err.contains("signing.key") && err.contains("never overwrites"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&key).unwrap(), "my precious\n");
    assert!(
        !dir.join("trust.json").exists(),
        "nothing after the refusal was written"
    );

    // A real key that others may read: refused, not "fixed".
    std::fs::remove_file(&key).unwrap();
    let g = wcp(&["keygen", key.to_str().unwrap()]);
    assert_eq!(g.status.code(), Some(0));
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = init(&dir, &[]);
    assert_eq!(o.status.code(), Some(74));
    assert!(text(&o.stderr).contains("chmod 600"), "{}", text(&o.stderr));
    assert_eq!(mode(&key), 0o644);

    // Fixed by its owner: kept (not regenerated), and trusted.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let bytes = std::fs::read(&key).unwrap();
    let o = init(&dir, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(std::fs::read(&key).unwrap(), bytes);

    // A public key that does not belong to its private key.
    let other = tmp.path().join("other.key");
    assert_eq!(
        wcp(&["keygen", other.to_str().unwrap()]).status.code(),
        Some(0)
    );
    std::fs::copy(
        tmp.path().join("other.key.pub"),
        dir.join("keys/signing.key.pub"),
    )
    .unwrap();
    let o = init(&dir, &[]);
    assert_eq!(o.status.code(), Some(74));
    assert!(
        text(&o.stderr).contains("not the public key"),
        "{}",
        text(&o.stderr)
    );
}

#[test]
fn init_checks_what_it_keeps() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    assert_eq!(init(&dir, &[]).status.code(), Some(0));
    // The existing trust policy does not trust the key for another namespace: say so.
    let o = init(&dir, &["--namespace", "org.other"]);
    assert_eq!(o.status.code(), Some(78));
    assert!(
        text(&o.stderr).contains("does not trust"),
        "{}",
        text(&o.stderr)
    );
    // A bad namespace is a usage error.
    let o = init(&dir, &["--namespace", "acme"]);
    assert_eq!(o.status.code(), Some(2));
    // A broken hall.toml is reported, never rewritten.
    std::fs::write(dir.join("hall.toml"), "[hal]\n").unwrap();
    let o = init(&dir, &[]);
    assert_eq!(o.status.code(), Some(78));
    assert_eq!(
        std::fs::read_to_string(dir.join("hall.toml")).unwrap(),
        "[hal]\n"
    );
}

#[test]
fn init_defaults_to_the_systemd_state_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("from-systemd");
    let o = Command::new(BIN)
        .args(["--json", "init"])
        .env("STATE_DIRECTORY", &dir)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["dir"], dir.to_str().unwrap());
    assert!(dir.join("keys/signing.key").is_file());
}
