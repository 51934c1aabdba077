//! End-to-end dispatch through a real `wcp-hall serve` on a Unix socket: latency p50/p99 and
//! throughput at 1, 8 and 32 concurrent clients, each answer carrying a durable receipt.
//!
//! Three workloads: `denied` (routing, the policy floor, a durable denial receipt: the Hall's own
//! overhead per governed request); `native` (the trivial worker of the issue's target: the
//! signed native hello package, verified from the store and run inside the full privilege
//! envelope, with durable intent and outcome receipts); `hello` (the same for the Python hello
//! worker, whose cost is CPython's start-up). Then the cost of traces: the `native` workload
//! on a second Hall with `[tracing]` on (every dispatch sampled, spans exported over OTLP/HTTP
//! to a sink in this process) against the first, in alternating rounds. Then warm instances
//! (`warmcost`): a Hall with `[warm]` against a cold one, in alternating rounds.
//! `cargo bench --bench daemon [-- FILTER]`: FILTER is a comma-separated list of label prefixes
//! (`native/1,denied`, `warmcost/native`, `tracecost`). Figures go to BENCHMARKS.md; nothing is
//! asserted.
//! `WCP_BENCH_BIN=PATH` measures another build of `wcp-hall` (the client side stays this one).

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
/// `extra` is appended to `hall.toml`.
fn setup(extra: &str) -> (tempfile::TempDir, PathBuf) {
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
        .replace("RUNS", &runs)
            + extra,
    )
    .unwrap();
    (dir, config)
}

/// A running Hall: the child, its directory and its socket.
struct Hall {
    child: Child,
    dir: tempfile::TempDir,
    socket: Arc<PathBuf>,
    /// Answers whose envelope report says a warm instance served them.
    warm_seen: Arc<std::sync::atomic::AtomicUsize>,
}

impl Drop for Hall {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Hall {
    /// Starts `wcp-hall serve` on a fresh directory (see [`setup`]) and waits for its health.
    fn start(rt: &tokio::runtime::Runtime, extra_toml: &str) -> Hall {
        let (dir, config) = setup(extra_toml);
        let socket = dir.path().join("hall.sock");
        let log = std::fs::File::create(dir.path().join("hall.log")).unwrap();
        // WCP_BENCH_BIN: another build of the Hall (e.g. of an earlier commit), for a
        // before/after comparison on the same machine and day.
        let bin = std::env::var("WCP_BENCH_BIN").unwrap_or_else(|_| BIN.to_owned());
        let child = Command::new(bin)
            .args(["serve", "-c"])
            .arg(&config)
            .arg("-s")
            .arg(&socket)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let hall = Hall {
            child,
            dir,
            socket: Arc::new(socket),
            warm_seen: Arc::default(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while hall.get(rt, "/wcp/health").is_err() {
            assert!(
                Instant::now() < deadline,
                "the Hall did not start: {}",
                std::fs::read_to_string(hall.dir.path().join("hall.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        hall
    }

    /// The CPU time (user + system) the Hall process used so far, in ms (clock-tick resolution).
    fn cpu_ms(&self) -> f64 {
        let (user, system) = self.cpu_split_ms();
        user + system
    }

    /// `GET path` on the Hall.
    fn get(
        &self,
        rt: &tokio::runtime::Runtime,
        path: &str,
    ) -> Result<client::Answer, client::ClientError> {
        rt.block_on(client::call(
            &self.socket,
            Method::GET,
            path,
            None,
            Duration::from_secs(5),
        ))
    }

    /// The receipt log's (records, fdatasyncs) so far, from `/metrics`.
    fn log_counts(&self, rt: &tokio::runtime::Runtime) -> (f64, f64) {
        let text = self
            .get(rt, "/metrics")
            .map(|a| a.body.as_str().unwrap_or_default().to_owned())
            .unwrap_or_default();
        let sample = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
                .unwrap_or(f64::NAN)
        };
        (
            sample("wcp_hall_receipt_records"),
            sample("wcp_hall_receipt_fdatasyncs"),
        )
    }

    /// The Hall process's (user, system) CPU time so far, in ms.
    fn cpu_split_ms(&self) -> (f64, f64) {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap();
        // Fields after the command name (which may hold spaces): utime is the 14th field of the
        // line, stime the 15th, so the 12th and 13th after the closing parenthesis.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let f: Vec<&str> = rest.split(' ').collect();
        // USER_HZ (sysconf(_SC_CLK_TCK)) is 100 on Linux for every architecture.
        let ms = |i: usize| f[i].parse::<f64>().unwrap() * 10.0;
        (ms(11), ms(12))
    }

    /// `per_client` dispatches from each of `clients` concurrent clients, each answer checked
    /// for `expect` and its durable receipt. Returns (latency ms, Hall phases) per dispatch and
    /// the wall time in seconds.
    fn drive(
        &self,
        rt: &tokio::runtime::Runtime,
        (cap, env, expect): (&'static str, &'static str, &'static str),
        clients: usize,
        per_client: usize,
        dump: Option<String>,
    ) -> (Vec<(f64, Value)>, f64) {
        let started = Instant::now();
        let answers = rt.block_on(async {
            let mut tasks = Vec::new();
            for c in 0..clients {
                let socket = self.socket.clone();
                let dump = dump.clone();
                let warm_seen = self.warm_seen.clone();
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
                        if a.body["execution"]["summary"]["envelope"]["instance"]["kind"] == "warm"
                        {
                            warm_seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        if i == 0
                            && c == 0
                            && let (Some(path), Some(name)) =
                                (std::env::var_os("WCP_BENCH_DUMP"), dump.as_ref())
                        {
                            // One full answer per workload, for looking into (not a figure).
                            let _ = std::fs::write(
                                Path::new(&path).join(format!("{name}.json")),
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
        (answers, started.elapsed().as_secs_f64())
    }
}

/// An OTLP/HTTP receiver that accepts every export (HTTP/1.1, keep-alive) and counts the
/// requests and bytes: the cheapest possible collector, so the figures are the Hall's cost.
fn otlp_sink() -> (u16, Arc<std::sync::atomic::AtomicU64>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let exports = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = exports.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let counter = counter.clone();
            std::thread::spawn(move || {
                let mut out = stream.try_clone().unwrap();
                let mut reader = BufReader::new(stream);
                loop {
                    let mut length = 0usize;
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let l = line.trim_end();
                        if l.is_empty() {
                            break;
                        }
                        if let Some((k, v)) = l.split_once(':')
                            && k.eq_ignore_ascii_case("content-length")
                        {
                            length = v.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0; length];
                    if reader.read_exact(&mut body).is_err() {
                        return;
                    }
                    counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let ok = b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
                    if out.write_all(ok).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, exports)
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
    let selected = |label: &str| {
        filter
            .as_ref()
            .is_none_or(|f| f.split(',').any(|p| label.starts_with(p)))
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let hall = Hall::start(&rt, "");
    println!(
        "\n{:>8} {:>8} {:>10} {:>10} {:>12} {:>8} {:>9} {:>9} {:>10}   Hall phases, median ms",
        "workload",
        "clients",
        "p50 ms",
        "p99 ms",
        "per second",
        "n",
        "user ms",
        "sys ms",
        "syncs/rec"
    );
    for (workload, cap, env, expect, total) in [
        ("denied", "cap.unknown.thing", "dev", "denied", 600usize),
        ("native", "cap.hello.greet", "stage", "completed", 1200usize),
        ("hello", "cap.hello.greet", "dev", "completed", 96usize),
    ] {
        for clients in [1usize, 8, 32] {
            let label = format!("{workload}/{clients}");
            if !selected(&label) {
                continue;
            }
            // WCP_BENCH_SCALE=N runs N times as many dispatches (for profiling a steady state).
            let scale: usize = std::env::var("WCP_BENCH_SCALE")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(1);
            let per_client = (total * scale / clients).max(2);
            let (user0, sys0) = hall.cpu_split_ms();
            let (records0, syncs0) = hall.log_counts(&rt);
            let (answers, wall) = hall.drive(
                &rt,
                (cap, env, expect),
                clients,
                per_client,
                Some(format!("{workload}-{clients}")),
            );
            let (user1, sys1) = hall.cpu_split_ms();
            let (records1, syncs1) = hall.log_counts(&rt);
            let mut lat: Vec<f64> = answers.iter().map(|(ms, _)| *ms).collect();
            lat.sort_by(|a, b| a.total_cmp(b));
            let n = lat.len() as f64;
            println!(
                "{:>8} {:>8} {:>10.2} {:>10.2} {:>12.0} {:>8} {:>9.3} {:>9.3} {:>10.2}   {}",
                workload,
                clients,
                pct(&lat, 0.5),
                pct(&lat, 0.99),
                n / wall,
                lat.len(),
                (user1 - user0) / n,
                (sys1 - sys0) / n,
                (syncs1 - syncs0) / (records1 - records0),
                phase_medians(&answers)
            );
        }
    }
    println!(
        "\ntargets (issue): p50 <= 4 ms, >= 800 dispatches/s at 32 clients (trivial worker, durable receipt)"
    );
    drop(hall);
    traces_cost(&rt, &selected);
    warm_cost(&rt, &selected);
}

/// Warm instances against cold runs: two fresh Halls, alike but for `[warm]`, in alternating
/// rounds. `paced` rows leave `gap` between one client's dispatches (an agent that thinks
/// between calls); the others are closed loops (the next dispatch as soon as the answer is in).
fn warm_cost(rt: &tokio::runtime::Runtime, selected: &dyn Fn(&str) -> bool) {
    let rows: Vec<(&str, &'static str, usize, Option<u64>)> = vec![
        ("hello", "dev", 1, Some(150)),
        ("hello", "dev", 1, None),
        ("hello", "dev", 32, None),
        ("native", "stage", 1, Some(50)),
        ("native", "stage", 1, None),
        ("native", "stage", 32, None),
    ]
    .into_iter()
    .filter(|(w, _, c, gap)| {
        selected(&format!(
            "warmcost/{w}/{c}{}",
            if gap.is_some() { "/paced" } else { "" }
        ))
    })
    .collect();
    if rows.is_empty() {
        return;
    }
    let cold = Hall::start(rt, "");
    let warm = Hall::start(
        rt,
        "[warm]\nworkers = [\"wrk.hello.greeter\", \"wrk.hello.native\"]\nper_worker = 4\n",
    );
    println!("\nwarm instances: cold Hall vs [warm] Hall (per_worker = 4), alternating rounds");
    println!(
        "{:>8} {:>8} {:>7} {:>11} {:>11} {:>10} {:>10} {:>7} {:>11} {:>11} {:>6}",
        "workload",
        "clients",
        "gap ms",
        "p50 cold",
        "p50 warm",
        "/s cold",
        "/s warm",
        "warm %",
        "user cold",
        "user warm",
        "n each"
    );
    const ROUNDS: usize = 3;
    for (workload, env, clients, gap) in rows {
        let work = ("cap.hello.greet", env, "completed");
        let per_round = if workload == "hello" { 24 } else { 120 };
        let per_client = (per_round / clients).max(2);
        // One warm-up round each: the warm Hall learns its key from the first dispatch.
        for h in [&cold, &warm] {
            h.drive(rt, work, clients.min(2), 2, None);
        }
        std::thread::sleep(Duration::from_millis(500));
        let mut lat = [Vec::new(), Vec::new()];
        let mut wall = [0.0f64; 2];
        let mut cpu = [0.0f64; 2];
        let mut warm_hits = 0;
        let mut warm_answers = Vec::new();
        for round in 0..ROUNDS {
            let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
            for i in order {
                let h = if i == 0 { &cold } else { &warm };
                let before_cpu = h.cpu_split_ms().0;
                let before_warm = h.warm_seen.load(std::sync::atomic::Ordering::Relaxed);
                let started = Instant::now();
                let answers = match gap {
                    Some(ms) => (0..per_client)
                        .flat_map(|_| {
                            std::thread::sleep(Duration::from_millis(ms));
                            h.drive(rt, work, 1, 1, None).0
                        })
                        .collect::<Vec<_>>(),
                    None => h.drive(rt, work, clients, per_client, None).0,
                };
                wall[i] += started.elapsed().as_secs_f64()
                    - gap.map_or(0.0, |ms| (ms * per_client as u64) as f64 / 1000.0);
                cpu[i] += h.cpu_split_ms().0 - before_cpu;
                if i == 1 {
                    warm_hits +=
                        h.warm_seen.load(std::sync::atomic::Ordering::Relaxed) - before_warm;
                }
                lat[i].extend(answers.iter().map(|(ms, _)| *ms));
                if i == 1 {
                    warm_answers.extend(answers);
                }
            }
        }
        for l in &mut lat {
            l.sort_by(|a, b| a.total_cmp(b));
        }
        let n = lat[0].len() as f64;
        println!(
            "{:>8} {:>8} {:>7} {:>8.2} ms {:>8.2} ms {:>10.1} {:>10.1} {:>6.0}% {:>8.3} ms {:>8.3} ms {:>6}",
            workload,
            clients,
            gap.map_or("-".to_owned(), |g| g.to_string()),
            pct(&lat[0], 0.5),
            pct(&lat[1], 0.5),
            n / wall[0],
            lat[1].len() as f64 / wall[1],
            warm_hits as f64 * 100.0 / lat[1].len() as f64,
            cpu[0] / n,
            cpu[1] / lat[1].len() as f64,
            lat[0].len()
        );
        println!("{:>27} warm: {}", "", phase_medians(&warm_answers));
    }
    println!(
        "user: the Hall process's user-space CPU per dispatch (warm instances' start-up is the \
         workers' CPU, not the Hall's); paced rows: throughput excludes the gaps"
    );
}

/// The `native` workload on two fresh Halls, traces off and on (every dispatch sampled,
/// exported to [`otlp_sink`]), in alternating rounds so drift hits both.
fn traces_cost(rt: &tokio::runtime::Runtime, selected: &dyn Fn(&str) -> bool) {
    let rows: Vec<usize> = [1usize, 8]
        .into_iter()
        .filter(|c| selected(&format!("tracecost/{c}")))
        .collect();
    if rows.is_empty() {
        return;
    }
    let (port, exports) = otlp_sink();
    // Two fresh Halls, alike but for [tracing], so neither has a longer receipt log.
    let off = Hall::start(rt, "");
    let on = Hall::start(
        rt,
        &format!(
            "[tracing]\nendpoint = \"http://127.0.0.1:{port}/v1/traces\"\nsampling_ratio = 1.0\n"
        ),
    );
    println!(
        "\ntraces: native worker, off vs on (every dispatch sampled, 8 spans each, OTLP/HTTP export)"
    );
    println!(
        "{:>8} {:>11} {:>11} {:>7} {:>13} {:>13} {:>7} {:>7}",
        "clients",
        "p50 off ms",
        "p50 on ms",
        "p50 Δ",
        "Hall CPU off",
        "Hall CPU on",
        "CPU Δ",
        "n each"
    );
    const ROUNDS: usize = 6;
    let work = ("cap.hello.greet", "stage", "completed");
    for clients in rows {
        let per_client = (240 / clients).max(2);
        let (mut lat_off, mut lat_on) = (Vec::new(), Vec::new());
        let (mut cpu_off, mut cpu_on) = (0.0, 0.0);
        // One warm-up round each (not counted).
        on.drive(rt, work, clients, per_client, None);
        off.drive(rt, work, clients, per_client, None);
        for round in 0..ROUNDS {
            // Alternate which goes first, so drift hits both alike.
            let order: [(&Hall, bool); 2] = if round % 2 == 0 {
                [(&off, false), (&on, true)]
            } else {
                [(&on, true), (&off, false)]
            };
            for (hall, traced) in order {
                let before = hall.cpu_ms();
                let (a, _) = hall.drive(rt, work, clients, per_client, None);
                let used = hall.cpu_ms() - before;
                let lat = a.into_iter().map(|(ms, _)| ms);
                if traced {
                    lat_on.extend(lat);
                    cpu_on += used;
                } else {
                    lat_off.extend(lat);
                    cpu_off += used;
                }
            }
        }
        lat_off.sort_by(|a, b| a.total_cmp(b));
        lat_on.sort_by(|a, b| a.total_cmp(b));
        let (p_off, p_on) = (pct(&lat_off, 0.5), pct(&lat_on, 0.5));
        let n = lat_off.len() as f64;
        println!(
            "{:>8} {:>11.2} {:>11.2} {:>6.1}% {:>10.3} ms {:>10.3} ms {:>6.1}% {:>7}",
            clients,
            p_off,
            p_on,
            (p_on / p_off - 1.0) * 100.0,
            cpu_off / n,
            cpu_on / n,
            (cpu_on / cpu_off - 1.0) * 100.0,
            lat_off.len()
        );
    }
    // The exporter batches at least every second: wait for the last batch.
    std::thread::sleep(Duration::from_millis(1500));
    println!(
        "export requests received by the sink: {}; Hall CPU is per dispatch, the Hall process \
         only (target: p50 with traces on within 5 % of off)",
        exports.load(std::sync::atomic::Ordering::Relaxed)
    );
}
