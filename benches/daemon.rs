//! End-to-end dispatch through a real `wcp-hall serve` on a Unix socket: latency p50/p99 and
//! throughput at 1, 8 and 32 concurrent clients, each answer carrying a durable receipt.
//!
//! Three workloads: `denied` (routing, the policy floor, a durable denial receipt: the Hall's own
//! overhead per governed request); `native` (the trivial worker of the issue's target: the
//! signed native hello package, verified from the store and run inside the full privilege
//! envelope, with durable intent and outcome receipts); `hello` (the same for the Python hello
//! worker, whose cost is CPython's start-up).
//! `cargo bench --bench daemon [-- FILTER]`. Figures go to BENCHMARKS.md; nothing is asserted.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::Method;
use serde_json::{Value, json};
use wcp_hall::client;

#[path = "../tests/it/hall_support.rs"]
mod hall_support;
use hall_support::{BIN, copy_dir, native_hello_package, package_key, read_record, repo};

/// A Hall directory with the signed, enrolled hello workers; returns (dir, config path).
fn setup() -> (tempfile::TempDir, PathBuf) {
    // State and the receipt log on disk (so fdatasync is real); run directories on tmpfs when
    // there is one, as the envelope recommends.
    let dir = tempfile::Builder::new()
        .prefix("wcp-bench-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let d = dir.path();
    let runs = if Path::new("/dev/shm").is_dir() {
        format!("/dev/shm/wcp-bench-runs-{}", std::process::id())
    } else {
        d.join("runs").display().to_string()
    };
    std::fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::create_dir_all(d.join("keys")).unwrap();
    std::fs::create_dir_all(d.join("registry")).unwrap();
    wcp_hall::crypto::KeyPair::generate()
        .unwrap()
        .write(&d.join("keys/receipts.key"))
        .unwrap();
    // The Python hello worker, and the same worker compiled (a native package: the
    // `wcp-hello-native` binary as code/bootstrap).
    let key = package_key(d);
    let registry = d.join("registry");
    let hello = d.join("packages/hello");
    copy_dir(&repo("workers/hello"), &hello);
    let record = read_record(&repo("workers/hello/record.json"));
    hall_support::sign_and_enroll(&key, &hello, &record, &registry);
    let (native, record) = native_hello_package(d);
    hall_support::sign_and_enroll(&key, &native, &record, &registry);
    // dev routes to the Python worker, stage to the native one.
    let rule = |id: &str, env: &str, species: &str| {
        json!({"rule_id": id, "match": {"capability_id": "cap.hello.greet", "env": env},
               "decision": {"candidate_workers_ranked": [{"worker_species_id": species}]}})
    };
    std::fs::write(
        d.join("rules.json"),
        json!({"rules": [rule("rr_hello", "dev", "wrk.hello.greeter"),
                         rule("rr_hello_native", "stage", "wrk.hello.native")]})
        .to_string(),
    )
    .unwrap();
    let config = d.join("hall.toml");
    std::fs::write(
        &config,
        r#"[hall]
require_signatory = true
allowed_tenants = ["bench"]
require_worker_attestation = true
[paths]
rules = "rules.json"
registry_dir = "registry"
state_dir = "state"
[server]
max_concurrent = 64
max_concurrent_per_tenant = 64
max_queue = 1024
queue_timeout_ms = 60000
[identity]
[[identity.peers]]
uid = 0
tenants = ["bench"]
[attestation]
trust_policy = "trust.json"
recheck_seconds = 5
[receipts]
signing_key = "keys/receipts.key"
[envelope]
runs_dir = "RUNS"
"#
        .replace("RUNS", &runs),
    )
    .unwrap();
    (dir, config)
}

struct Hall(Child);
impl Drop for Hall {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn input(cap: &str, env: &str, i: usize) -> Value {
    json!({"capability_id": cap, "env": env, "data_label": "PUBLIC", "tenant_risk": "low",
           "qos_class": "P2", "tenant_id": "bench", "correlation_id": format!("bench-{i}"),
           "request": {"name": "Ada"}})
}

/// "verify 0.05 · intent_receipt 0.31 · …": the median of each phase the runner reports (ms).
fn phase_medians(answers: &[(f64, Value)]) -> String {
    let Some(first) = answers.iter().find_map(|(_, p)| p.as_object()) else {
        return String::new();
    };
    first
        .keys()
        .map(|phase| {
            let mut v: Vec<f64> = answers
                .iter()
                .filter_map(|(_, p)| p[phase.as_str()].as_f64())
                .map(|us| us / 1000.0)
                .collect();
            v.sort_by(|a, b| a.total_cmp(b));
            format!("{phase} {:.2}", pct(&v, 0.5))
        })
        .collect::<Vec<_>>()
        .join(" · ")
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    if std::env::var_os("WCP_BENCH_SKIP").is_some() {
        return;
    }
    let (dir, config) = setup();
    let socket = dir.path().join("hall.sock");
    let log = std::fs::File::create(dir.path().join("hall.log")).unwrap();
    let _hall = Hall(
        Command::new(BIN)
            .args(["serve", "-c"])
            .arg(&config)
            .arg("-s")
            .arg(&socket)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let socket = Arc::new(socket);
    let deadline = Instant::now() + Duration::from_secs(30);
    while rt
        .block_on(client::call(
            &socket,
            Method::GET,
            "/wcp/health",
            None,
            Duration::from_secs(5),
        ))
        .is_err()
    {
        assert!(
            Instant::now() < deadline,
            "the Hall did not start: {}",
            std::fs::read_to_string(dir.path().join("hall.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    println!(
        "\n{:>8} {:>8} {:>10} {:>10} {:>12} {:>8}   Hall phases, median ms",
        "workload", "clients", "p50 ms", "p99 ms", "per second", "n"
    );
    for (workload, cap, env, expect, total) in [
        ("denied", "cap.unknown.thing", "dev", "denied", 600usize),
        ("native", "cap.hello.greet", "stage", "completed", 1200usize),
        ("hello", "cap.hello.greet", "dev", "completed", 96usize),
    ] {
        for clients in [1usize, 8, 32] {
            let label = format!("{workload}/{clients}");
            if filter.as_ref().is_some_and(|f| !label.contains(f.as_str())) {
                continue;
            }
            // WCP_BENCH_SCALE=N runs N times as many dispatches (for profiling a steady state).
            let scale: usize = std::env::var("WCP_BENCH_SCALE")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(1);
            let per_client = (total * scale / clients).max(2);
            let started = Instant::now();
            let answers: Vec<(f64, Value)> = rt.block_on(async {
                let mut tasks = Vec::new();
                for c in 0..clients {
                    let socket = socket.clone();
                    tasks.push(tokio::spawn(async move {
                        let mut v = Vec::new();
                        for i in 0..per_client {
                            let body = input(cap, env, c * 100_000 + i);
                            let t = Instant::now();
                            let a = client::call(
                                &socket,
                                Method::POST,
                                "/wcp/dispatch",
                                Some(&body),
                                Duration::from_secs(120),
                            )
                            .await
                            .expect("answer");
                            assert_eq!(a.body["status"], expect, "{}", a.body);
                            assert!(
                                a.body["execution"]["receipt"]["seq"].is_u64(),
                                "durable receipt: {}",
                                a.body
                            );
                            let phases = a.body["execution"]["hall_phases_us"].clone();
                            if i == 0
                                && c == 0
                                && let Some(path) = std::env::var_os("WCP_BENCH_DUMP")
                            {
                                // One full answer per workload, for looking into (not a figure).
                                let _ = std::fs::write(
                                    Path::new(&path).join(format!("{workload}-{clients}.json")),
                                    format!("{:#}", a.body),
                                );
                            }
                            v.push((t.elapsed().as_secs_f64() * 1000.0, phases));
                        }
                        v
                    }));
                }
                let mut all = Vec::new();
                for t in tasks {
                    all.extend(t.await.unwrap());
                }
                all
            });
            let wall = started.elapsed().as_secs_f64();
            let mut lat: Vec<f64> = answers.iter().map(|(ms, _)| *ms).collect();
            lat.sort_by(|a, b| a.total_cmp(b));
            println!(
                "{:>8} {:>8} {:>10.2} {:>10.2} {:>12.0} {:>8}   {}",
                workload,
                clients,
                pct(&lat, 0.5),
                pct(&lat, 0.99),
                lat.len() as f64 / wall,
                lat.len(),
                phase_medians(&answers)
            );
        }
    }
    println!(
        "\ntargets (issue): p50 <= 4 ms, >= 800 dispatches/s at 32 clients (trivial worker, durable receipt)"
    );
}
