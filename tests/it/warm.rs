//! Warm instances from the outside (issue #19): a Hall with `[warm]`, real dispatches over its
//! socket, hostile protocol 2 workers, the receipts and `/metrics`. Each attack a warm instance
//! adds over a cold run has a test here; the cold hostile suite (`tests/envelope`,
//! `tests/it/daemon.rs`) applies unchanged because a warm run is supervised by the same code.

use std::time::{Duration, Instant};

use hyper::Method;
use serde_json::{Value, json};

use crate::daemon::{TestHall, input, restart_attested, sign_and_enroll, signed_hello};
use crate::hall_support::{copy_dir, read_record, repo};

const NOBODY: u32 = 65534;

fn warm_toml(extra: &str) -> String {
    format!("[warm]\nworkers = [\"wrk.hello.greeter\"]\n{extra}\n")
}

/// A gauge from `/metrics`.
fn gauge(hall: &TestHall, name: &str) -> f64 {
    let (_, metrics) = hall.call(Method::GET, "/metrics", None);
    let text = metrics.as_str().unwrap_or("").to_owned();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics: {text}"))
}

/// Waits until `wcp_hall_warm_idle` reaches `n`.
fn wait_idle(hall: &TestHall, n: f64) {
    wait_gauge(hall, "wcp_hall_warm_idle", n);
}

/// Waits until the gauge `name` reaches `n`.
fn wait_gauge(hall: &TestHall, name: &str, n: f64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while gauge(hall, name) < n {
        assert!(
            Instant::now() < deadline,
            "{name} never reached {n}: {}",
            hall.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn dispatch(hall: &TestHall, request: Value) -> Value {
    let mut body = input("cap.hello.greet", "acme-corp");
    body["request"] = request;
    let (s, out) = hall.call(Method::POST, "/wcp/dispatch", Some(&body));
    assert_eq!(s, 200, "{out}; {}", hall.log());
    out
}

fn instance(out: &Value) -> &Value {
    &out["execution"]["summary"]["envelope"]["instance"]
}

fn secret() -> String {
    format!("SECRET-{}", uuid::Uuid::new_v4())
}

/// The parts of an envelope report that say what was enforced (not run ids, paths or times).
fn enforced(report: &Value) -> Value {
    let stages: Vec<Value> = report["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| json!([s["stage"], s["process"], s["outcome"]]))
        .collect();
    let mut namespaces = report["namespaces"].clone();
    // A fresh network namespace comes from the pool or from clone3: both are new and empty.
    namespaces.as_object_mut().unwrap().remove("net_source");
    // How stdin is described differs (a sealed memfd, or the warm instance's pipe).
    let mut process = report["process"].clone();
    process.as_object_mut().unwrap().remove("stdin");
    let o = &report["observed"];
    json!({
        "stages": stages,
        "landlock": report["landlock"]["effective"], "ruleset": report["landlock"]["ruleset"],
        "seccomp": report["seccomp"]["effective"], "network": report["network"]["effective"],
        "pid_namespace": report["pid_namespace"], "namespaces": namespaces,
        "cgroup": report["cgroup"]["effective"], "identity": report["identity"],
        "rlimits": report["rlimits"], "memory": report["memory"]["scope"],
        "environment": report["environment"], "process": process,
        "degraded": report["degraded"], "bootstrap": report["bootstrap"]["protocol"],
        "observed": [o["no_new_privs"], o["seccomp"], o["seccomp_filters"], o["uid"], o["gid"], o["cap_eff"]],
    })
}

/// A Hall keeping two instances of the hostile package `tests/hostile/<name>` warm.
fn hostile_warm_hall(as_uid: Option<u32>, name: &str) -> TestHall {
    hostile_warm_hall_with(as_uid, name, "per_worker = 2")
}

/// [`hostile_warm_hall`] with these `[warm]` settings.
fn hostile_warm_hall_with(as_uid: Option<u32>, name: &str, warm: &str) -> TestHall {
    let mut hall = TestHall::start(&warm_toml(warm));
    hall.as_uid = as_uid;
    restart_attested(&mut hall, |dir| {
        let pkg = dir.join("packages").join(name);
        copy_dir(&repo(&format!("tests/hostile/{name}")), &pkg);
        std::fs::copy(repo("workers/bootstrap.py"), pkg.join("code/bootstrap.py")).unwrap();
        sign_and_enroll(dir, &pkg, &read_record(&repo("workers/hello/record.json")));
    });
    hall
}

/// Threat: a request's data reaching a later request through an instance that was already
/// waiting while it ran, and a request killing the instances that wait beside it.
fn warm_instances_share_nothing(as_uid: Option<u32>) {
    let mut hall = hostile_warm_hall(as_uid, "warm_snoop");
    // The first dispatch teaches the pool its key and runs cold.
    let s0 = secret();
    let cold = dispatch(&hall, json!({"secret": s0}));
    assert_eq!(cold["status"], "completed", "{cold}");
    assert_eq!(instance(&cold)["kind"], "cold", "{cold}");
    assert_eq!(instance(&cold)["idle_ms"], 0, "{cold}");

    // Two instances wait; the next request goes to one while the other waits beside it.
    wait_idle(&hall, 2.0);
    let s1 = secret();
    let first = dispatch(&hall, json!({"secret": s1, "kill_all": true}));
    assert_eq!(first["status"], "completed", "{first}");
    assert_eq!(instance(&first)["kind"], "warm", "{first}");
    assert!(instance(&first)["idle_ms"].as_u64().unwrap() > 0, "{first}");
    assert_eq!(first["result"]["found"], json!([]), "{first}");
    // The kill was tried: nothing outside its own namespace could be signalled (ESRCH).
    assert!(first["result"]["killed"].is_string(), "{first}");
    // The correlation id came in the frame, not from an environment set at the instance's start.
    assert_eq!(
        first["result"]["correlation_id"], first["decision"]["correlation_id"],
        "{first}"
    );

    // The instance that waited beside it survived the kill and knows nothing of either request.
    let s2 = secret();
    let second = dispatch(&hall, json!({"secret": s2}));
    assert_eq!(second["status"], "completed", "{second}");
    assert_eq!(instance(&second)["kind"], "warm", "{second}");
    assert_eq!(second["result"]["found"], json!([]), "{second}");

    // A frame far larger than a pipe's buffer reaches the instance whole (the Hall writes it as
    // the worker reads, never blocking on it).
    wait_idle(&hall, 1.0);
    let big = dispatch(
        &hall,
        json!({"secret": secret(), "padding": "x".repeat(512 << 10)}),
    );
    assert_eq!(
        big["status"],
        "completed",
        "{}",
        &big.to_string()[..2000.min(big.to_string().len())]
    );
    assert_eq!(instance(&big)["kind"], "warm");

    // Exactly the cold run's envelope, stage by stage.
    let report = |out: &Value| out["execution"]["summary"]["envelope"].clone();
    assert_eq!(enforced(&report(&cold)), enforced(&report(&second)));
    assert_eq!(report(&second)["bootstrap"]["protocol"], 2);
    // Nothing about the request is in a warm worker's environment.
    let keys = report(&second)["environment"]["keys"].clone();
    assert!(
        !keys
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k == "WCP_CORRELATION_ID" || k == "TRACEPARENT"),
        "{keys}"
    );
    assert!(
        keys.as_array()
            .unwrap()
            .iter()
            .any(|k| k == "WCP_WORKER_PROTOCOL"),
        "{keys}"
    );
    assert!(gauge(&hall, "wcp_hall_warm_hits") >= 2.0);

    // The receipts record warm and cold, and the log verifies.
    let v = hall.stop_and_verify_log();
    let mut kinds = Vec::new();
    for seq in 0..v["records"].as_u64().unwrap() {
        let (_, shown, _) = hall.show_receipt(seq);
        let payload = &shown["payload"];
        if payload["kind"] == "executed" {
            let env = &payload["dispatch"]["envelope"]["instance"];
            assert!(
                env["started_at"].as_str().unwrap().ends_with('Z'),
                "{shown}"
            );
            kinds.push(env["kind"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(kinds, ["cold", "warm", "warm", "warm"], "{v}");
}

#[test]
fn a_root_halls_warm_instances_share_nothing() {
    warm_instances_share_nothing(None);
}

#[test]
fn an_ordinary_users_warm_instances_share_nothing() {
    warm_instances_share_nothing(Some(NOBODY));
}

/// Threat: code that changed after the instance started running a request. An edit of the
/// enrolled package is refused as for a cold run (`DENY_WORKER_TAMPERED`), the pool is emptied,
/// and a re-signed package gets new instances (its digest is a new key).
#[test]
fn a_package_edit_empties_the_pool_and_nothing_stale_runs() {
    let mut hall = TestHall::start(&warm_toml("per_worker = 2"));
    let mut enrolled = None;
    restart_attested(&mut hall, |dir| enrolled = Some(signed_hello(dir)));
    let (pkg, worker_id) = enrolled.unwrap();
    let greet = |hall: &TestHall| dispatch(hall, json!({"name": "Ada"}));
    assert_eq!(instance(&greet(&hall))["kind"], "cold");
    wait_idle(&hall, 2.0);

    let logic = pkg.join("code/worker_logic.py");
    let original = std::fs::read_to_string(&logic).unwrap();
    std::fs::write(&logic, original.replace("Hello, ", "Pwned, ")).unwrap();
    let out = greet(&hall);
    assert_eq!(out["status"], "denied", "{out}");
    assert_eq!(
        crate::daemon::deny_code(&out),
        "DENY_WORKER_TAMPERED",
        "{out}"
    );

    // Re-signed: a new digest, so a new key; what waited for the old one never runs.
    crate::daemon::sign_package(hall.dir.path(), &pkg, &worker_id, "wrk.hello.greeter");
    let out = greet(&hall);
    assert_eq!(out["status"], "completed", "{out}");
    assert_eq!(out["result"]["greeting"], "Pwned, Ada!", "{out}");
    assert_eq!(
        instance(&out)["kind"],
        "cold",
        "the old instances were not used: {out}"
    );
    wait_idle(&hall, 2.0);
    let out = greet(&hall);
    assert_eq!(instance(&out)["kind"], "warm", "{out}");
    assert_eq!(out["result"]["greeting"], "Pwned, Ada!", "{out}");
    assert!(gauge(&hall, "wcp_hall_warm_discards") >= 2.0);
    hall.stop_and_verify_log();
}

/// An empty pool is a cold run, never a wait; a reload empties the pool; the memory budget
/// bounds what idle instances hold.
#[test]
fn an_empty_pool_runs_cold_and_the_bounds_hold() {
    let mut hall = TestHall::start(&warm_toml("per_worker = 1"));
    restart_attested(&mut hall, |dir| {
        signed_hello(dir);
    });
    let greet = |hall: &TestHall| dispatch(hall, json!({"name": "Ada"}));
    assert_eq!(instance(&greet(&hall))["kind"], "cold");
    wait_idle(&hall, 1.0);
    // Once it has loaded and blocks on its request, the instance is counted as settled.
    wait_gauge(&hall, "wcp_hall_warm_settled", 1.0);
    assert_eq!(gauge(&hall, "wcp_hall_warm_idle"), 1.0);
    // Four at once against one idle instance: all complete, and those that found the pool
    // empty ran cold rather than waiting for a refill.
    let outs: Vec<Value> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4).map(|_| s.spawn(|| greet(&hall))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let cold = outs
        .iter()
        .filter(|o| instance(o)["kind"] == "cold")
        .count();
    assert!(cold >= 1, "{outs:?}");
    for o in &outs {
        assert_eq!(o["status"], "completed", "{o}");
    }

    // A reload stops what waits; the next dispatch is cold.
    wait_idle(&hall, 1.0);
    let (s, _) = hall.call(Method::POST, "/wcp/reload", None);
    assert_eq!(s, 200);
    assert_eq!(gauge(&hall, "wcp_hall_warm_idle"), 0.0);
    assert_eq!(instance(&greet(&hall))["kind"], "cold");

    // A budget smaller than one instance: instances start and are stopped, none is kept.
    let text = std::fs::read_to_string(hall.config_path()).unwrap();
    std::fs::write(
        hall.config_path(),
        text.replace(
            "per_worker = 1",
            "per_worker = 1\nmemory_budget_bytes = 4096",
        ),
    )
    .unwrap();
    let (s, _) = hall.call(Method::POST, "/wcp/reload", None);
    assert_eq!(s, 200);
    let before = gauge(&hall, "wcp_hall_warm_discards");
    assert_eq!(instance(&greet(&hall))["kind"], "cold");
    let deadline = Instant::now() + Duration::from_secs(30);
    while gauge(&hall, "wcp_hall_warm_discards") <= before {
        assert!(
            Instant::now() < deadline,
            "no instance was started: {}",
            hall.log()
        );
        assert_eq!(gauge(&hall, "wcp_hall_warm_idle"), 0.0);
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(gauge(&hall, "wcp_hall_warm_idle"), 0.0);
    assert!(gauge(&hall, "wcp_hall_warm_idle_memory_bytes") <= 4096.0);
    assert_eq!(instance(&greet(&hall))["kind"], "cold");

    // A budget for one loaded instance (a Python hello holds ~11.5 MiB once its modules are
    // in): an instance is small at its exec and grows, so the pool measures again and stops
    // what goes over; four are allowed by per_worker, at most two are ever seen (the one kept
    // and a new one before it has grown).
    let budget = 15u64 << 20;
    std::fs::write(
        hall.config_path(),
        text.replace(
            "per_worker = 1",
            &format!("per_worker = 4\nmemory_budget_bytes = {budget}"),
        ),
    )
    .unwrap();
    let (s, _) = hall.call(Method::POST, "/wcp/reload", None);
    assert_eq!(s, 200);
    assert_eq!(instance(&greet(&hall))["kind"], "cold");
    wait_idle(&hall, 1.0);
    let mut most = 0.0f64;
    let deadline = Instant::now() + Duration::from_secs(4);
    while Instant::now() < deadline {
        most = most.max(gauge(&hall, "wcp_hall_warm_idle"));
        assert!(gauge(&hall, "wcp_hall_warm_idle_memory_bytes") <= budget as f64);
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(most <= 2.0, "{most} instances idle within a budget for one");
    assert!(gauge(&hall, "wcp_hall_warm_idle") >= 1.0);
    assert_eq!(instance(&greet(&hall))["kind"], "warm");
}

/// A native protocol 2 worker is served warm too, with its result and correlation id; the same
/// package without its declaration (protocol 1) always runs cold: its context would have been
/// fixed at exec.
#[test]
fn a_native_worker_runs_warm_and_a_protocol_1_package_never_does() {
    let mut hall = TestHall::start("[warm]\nworkers = [\"wrk.hello.native\"]\nper_worker = 1\n");
    let native_rules = crate::daemon::native_rules();
    let mut enrolled = None;
    restart_attested(&mut hall, |dir| {
        std::fs::write(dir.join("rules.json"), native_rules.to_string()).unwrap();
        let (pkg, record) = crate::hall_support::native_hello_package(dir);
        let worker_id = sign_and_enroll(dir, &pkg, &record);
        enrolled = Some((pkg, worker_id));
    });
    let (pkg, worker_id) = enrolled.unwrap();
    let greet = |hall: &TestHall| dispatch(hall, json!({"name": "Ada"}));
    assert_eq!(instance(&greet(&hall))["kind"], "cold");
    wait_idle(&hall, 1.0);
    let out = greet(&hall);
    assert_eq!(out["status"], "completed", "{out}");
    assert_eq!(instance(&out)["kind"], "warm", "{out}");
    assert_eq!(out["result"]["greeting"], "Hello, Ada!", "{out}");
    assert_eq!(
        out["result"]["correlation_id"], out["decision"]["correlation_id"],
        "{out}"
    );
    assert_eq!(
        out["execution"]["summary"]["envelope"]["bootstrap"]["protocol"],
        2
    );

    // Protocol 1: re-signed without wcp-worker.json; configured warm, it still runs cold.
    std::fs::remove_file(pkg.join("wcp-worker.json")).unwrap();
    crate::daemon::sign_package(hall.dir.path(), &pkg, &worker_id, "wrk.hello.native");
    for _ in 0..3 {
        let out = greet(&hall);
        assert_eq!(out["status"], "completed", "{out}");
        assert_eq!(instance(&out)["kind"], "cold", "{out}");
        assert_eq!(
            out["execution"]["summary"]["envelope"]["bootstrap"]["protocol"],
            1
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(gauge(&hall, "wcp_hall_warm_idle"), 0.0);
    hall.stop_and_verify_log();
}

/// Threat: an instance that changed while it waited (here: it wrote a result before any
/// request existed) being handed a request, whose answer it could then forge. The claim checks
/// each instance; this one is stopped and the dispatch runs cold (and fails as a cold run of
/// this package does: two JSON values on stdout).
#[test]
fn an_instance_that_answers_before_its_request_is_never_claimed() {
    let hall = hostile_warm_hall(None, "warm_early");
    let first = dispatch(&hall, json!({"name": "Ada"}));
    assert_eq!(instance(&first)["kind"], "cold", "{first}");
    assert_eq!(first["execution"]["error"]["code"], "not_json", "{first}");
    wait_idle(&hall, 2.0);
    let before = gauge(&hall, "wcp_hall_warm_discards");
    // Give the instances time to load their package (and so to write).
    std::thread::sleep(Duration::from_millis(700));
    let second = dispatch(&hall, json!({"name": "Ada"}));
    assert_eq!(instance(&second)["kind"], "cold", "{second}");
    assert_eq!(second["execution"]["error"]["code"], "not_json", "{second}");
    // Stopped by the pool thread or at the claim, never claimed.
    let after = gauge(&hall, "wcp_hall_warm_discards");
    assert!(after >= before + 2.0, "{before} → {after}");
    assert_eq!(gauge(&hall, "wcp_hall_warm_hits"), 0.0);
    // And not restarted back to back: the worker rests before its next instance.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(gauge(&hall, "wcp_hall_warm_discards"), after);
    assert_eq!(gauge(&hall, "wcp_hall_warm_idle"), 0.0);
}

/// Threat: a package that works while nobody asked it to (here: it spins as soon as it sees no
/// request on stdin) turning the pool into a way to burn the host's CPU without any request.
/// The spinning is done by a child, so the whole tree must be measured (the cgroup leaf of a
/// root Hall; every process below init for an ordinary user's, which has no leaf). The pool
/// stops an instance past `start_cpu_ms` and starts no other for that worker for a minute;
/// dispatches run cold meanwhile.
fn spinning_instance(as_uid: Option<u32>) {
    let hall = hostile_warm_hall_with(as_uid, "warm_spin", "per_worker = 1\nstart_cpu_ms = 300");
    let first = dispatch(&hall, json!({"name": "Ada"}));
    assert_eq!(first["status"], "completed", "{first}");
    assert_eq!(instance(&first)["kind"], "cold", "{first}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen_idle = false;
    while gauge(&hall, "wcp_hall_warm_discards") < 1.0 {
        assert!(
            Instant::now() < deadline,
            "the spinning instance was never stopped: {}",
            hall.log()
        );
        // Busy while it waits: never taken for a loaded, settled instance.
        seen_idle |= gauge(&hall, "wcp_hall_warm_idle") > 0.0;
        assert_eq!(gauge(&hall, "wcp_hall_warm_settled"), 0.0);
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(seen_idle, "the spinning instance was never seen idle");
    assert!(hall.log().contains("start_cpu_ms"), "{}", hall.log());
    // No new instance for that worker for a while: the pool does not keep feeding it CPU.
    for _ in 0..20 {
        assert_eq!(gauge(&hall, "wcp_hall_warm_idle"), 0.0);
        assert_eq!(gauge(&hall, "wcp_hall_warm_starting"), 0.0);
        std::thread::sleep(Duration::from_millis(100));
    }
    let again = dispatch(&hall, json!({"name": "Ada"}));
    assert_eq!(again["status"], "completed", "{again}");
    assert_eq!(instance(&again)["kind"], "cold", "{again}");
}

#[test]
fn a_root_halls_instance_that_spins_while_it_waits_is_stopped() {
    spinning_instance(None);
}

#[test]
fn an_ordinary_users_instance_that_spins_while_it_waits_is_stopped() {
    spinning_instance(Some(NOBODY));
}
