//! Spawn-and-reap of a trivial native bootstrap (`/bin/true`) with the full privilege envelope
//! against a plain spawn, in the same run (`cargo bench --bench envelope`).
//!
//! Self-contained harness (std::time only). Each configuration is warmed up, then timed one run
//! at a time; the table shows the median and p90 in milliseconds. What one envelope run covers:
//! planning, the per-run directory (created and removed), the Landlock ruleset, the cgroup leaf
//! (created, killed, removed), the sealed stdin memfd and pipes, the hand-off to the spawner
//! thread, `clone3` of init with the namespaces, the staged apply, the worker's fork and exec,
//! the `/proc` observation, supervision until both processes are gone, and the report.
//! A last table starts full envelopes (and plain spawns) from 1, 2, 4 and 8 threads at once for
//! 2 s each: runs per second, the ceiling for a Hall executing workers on this machine
//! (`cargo bench --bench envelope -- throughput` runs only that table).
//! Results and their interpretation live in BENCHMARKS.md.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use wcp_hall::envelope::{Bootstrap, Envelope, HostConfig, Limits, Minimum, Minimums, RunRequest};
use wcp_hall::registry::{NetworkEgress, PrivilegeEnvelope};

const WARMUP: usize = 30;
const RUNS: usize = 400;
const TARGET_MS: f64 = 1.5;

fn stats(mut v: Vec<Duration>) -> (f64, f64, f64) {
    v.sort_unstable();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    (
        ms(v[v.len() / 2]),
        ms(v[v.len() * 9 / 10]),
        ms(v[v.len() * 99 / 100]),
    )
}

fn time(mut f: impl FnMut()) -> Vec<Duration> {
    for _ in 0..WARMUP {
        f();
    }
    (0..RUNS)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect()
}

fn off() -> Minimums {
    Minimums {
        landlock: Minimum::Off,
        network_isolation: Minimum::Off,
        seccomp: Minimum::Off,
        pid_namespace: Minimum::Off,
        cgroup: Minimum::Off,
        unprivileged_user: Minimum::Off,
    }
}

fn main() {
    let filter = std::env::args().nth(1).filter(|a| !a.starts_with('-'));
    let root = tempfile::Builder::new()
        .prefix("wcp-env-bench-")
        .tempdir()
        .expect("tempdir");
    let pkg = root.path().join("pkg");
    std::fs::create_dir(&pkg).expect("pkg");
    use std::os::unix::fs::PermissionsExt;
    for p in [root.path(), pkg.as_path()] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let cg = wcp_hall::envelope::cgroup::v2_mount().map(|m| m.join("wcp-hall-bench"));
    if let Some(cg) = &cg {
        let _ = std::fs::create_dir_all(cg);
    }
    let host_at = |runs: PathBuf| {
        let mut host = HostConfig::new(runs);
        host.cgroup_parent = cg.clone();
        Envelope::new(host).expect("envelope")
    };
    // Per-run directories on the disk (ext4 here) and on tmpfs (where /run/wcp-hall would be).
    let env = host_at(root.path().join("runs"));
    let shm = tempfile::Builder::new()
        .prefix("wcp-env-bench-")
        .tempdir_in("/dev/shm")
        .ok();
    let env_tmpfs = shm.as_ref().map(|d| host_at(d.path().join("runs")));
    let probe = env.probe();
    // What the daemon adds per run: a mount namespace hiding its socket, and (root) a
    // size-limited tmpfs on the run directory.
    let socket = root.path().join("hall.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).expect("socket");
    let daemon_like = |scratch: Option<u64>| {
        let mut host = HostConfig::new(root.path().join("runs-daemon"));
        host.cgroup_parent = cg.clone();
        host.hidden_paths = vec![socket.clone()];
        host.scratch_bytes = scratch;
        Envelope::new(host).expect("envelope")
    };
    let env_hidden = daemon_like(None);
    let env_daemon = daemon_like(Some(256 << 20));

    let req = |minimums: Minimums| RunRequest {
        package_dir: pkg.clone(),
        package_digest: None,
        privilege_envelope: PrivilegeEnvelope {
            secrets_access: vec![],
            network_egress: NetworkEgress::None,
            filesystem_writes: vec!["out".into()],
            tools: vec![],
        },
        limits: Limits::default(),
        minimums,
        bootstrap: Bootstrap::Native {
            program: PathBuf::from("/bin/true"),
            args: vec![],
        },
        runtime: wcp_hall::envelope::native::runtime_for(std::path::Path::new("/bin/true"))
            .expect("/bin/true's loader"),
        payload: b"{}".to_vec(),
        protocol: wcp_hall::envelope::WorkerProtocol::V1,
        correlation_id: "bench".into(),
        traceparent: None,
        identity: None,
        allow_absolute_writes: false,
        opened_writes: Vec::new(),
        data_quota_bytes: None,
    };
    let mut hygiene = off();
    hygiene.unprivileged_user = Minimum::Required;
    let mut confined = hygiene;
    confined.landlock = Minimum::Required;
    confined.seccomp = Minimum::Required;
    let mut with_ns = confined;
    with_ns.pid_namespace = Minimum::Required;
    let mut full = with_ns;
    full.network_isolation = Minimum::Required;
    full.cgroup = Minimum::BestEffort;
    // The levels run with per-run directories on tmpfs (where a deployment puts them, e.g.
    // /run/wcp-hall); the last row repeats the full envelope with them on the disk.
    let lvl = env_tmpfs.as_ref().unwrap_or(&env);
    let mut off_no_cg = off();
    off_no_cg.cgroup = Minimum::Off;
    let mut full_no_cg = full;
    full_no_cg.cgroup = Minimum::Off;
    let configs: Vec<(&str, Option<(RunRequest, &Envelope)>)> = vec![
        ("plain std::process::Command", None),
        (
            "envelope: structure only (all minimums off)",
            Some((req(off_no_cg), lvl)),
        ),
        ("  + uid drop (nobody)", Some((req(hygiene), lvl))),
        ("  + Landlock + seccomp", Some((req(confined), lvl))),
        ("  + PID/IPC/UTS namespaces", Some((req(with_ns), lvl))),
        ("  + network namespace", Some((req(full_no_cg), lvl))),
        (
            "  + cgroup v2 leaf = full envelope (full/tmpfs)",
            Some((req(full), lvl)),
        ),
        (
            "full envelope, per-run dirs on the disk (full/disk)",
            Some((req(full), &env)),
        ),
        (
            "  + mount namespace hiding the Hall's socket (disk)",
            Some((req(full), &env_hidden)),
        ),
        (
            "  + scratch tmpfs = what the daemon runs (daemon)",
            Some((req(full), &env_daemon)),
        ),
    ];
    let configs: Vec<_> = configs
        .into_iter()
        .filter(|(label, _)| filter.as_ref().is_none_or(|f| label.contains(f.as_str())))
        .collect();
    println!(
        "envelope bench: kernel {}, Landlock ABI {}, cgroup leaf {}; {} rounds after {} warm-up, \
         configurations interleaved round-robin so load changes hit them all alike",
        probe.kernel_release,
        probe.landlock.kernel_abi,
        if probe.cgroup.leaf_ok { "yes" } else { "no" },
        RUNS,
        WARMUP
    );
    // Check once that each really works before timing it.
    for (_, r) in &configs {
        if let Some((r, env)) = r {
            let out = env.run(r).expect("envelope run");
            assert!(out.success(), "{:?}", out.exit);
        }
    }
    let mut samples: Vec<Vec<Duration>> = vec![Vec::with_capacity(RUNS); configs.len()];
    let mut pooled = 0usize;
    let mut full_runs = 0usize;
    for round in 0..WARMUP + RUNS {
        for (i, (label, r)) in configs.iter().enumerate() {
            let t = Instant::now();
            match r {
                None => {
                    let s = Command::new("/bin/true").status().expect("spawn");
                    assert!(s.success());
                }
                Some((r, env)) => {
                    let out = env.run(r).expect("envelope run");
                    assert!(out.success());
                    if round >= WARMUP && label.contains("(full/") {
                        full_runs += 1;
                        if out.report.namespaces.net_source.as_deref() == Some("pooled") {
                            pooled += 1;
                        }
                    }
                }
            }
            if round >= WARMUP {
                samples[i].push(t.elapsed());
            }
        }
    }
    println!();
    println!("| configuration | median ms | p90 ms | p99 ms |");
    println!("|---|---|---|---|");
    let mut plain_median = None;
    let mut full_median = None;
    let mut tmpfs_median = None;
    for ((label, r), s) in configs.iter().zip(samples) {
        let (med, p90, p99) = stats(s);
        if r.is_none() {
            plain_median = Some(med);
        }
        if label.contains("(full/disk)") {
            full_median = Some(med);
        }
        if label.contains("(full/tmpfs)") {
            tmpfs_median = Some(med);
        }
        println!("| {label} | {med:.3} | {p90:.3} | {p99:.3} |");
    }
    let ctx_req = req(full);
    let plan_samples = time(|| {
        let _ = env.plan(&ctx_req).expect("plan");
    });
    let (pm, _, _) = stats(plan_samples);
    println!("| (planning alone, full) | {pm:.3} | | |");
    println!();
    if full_runs > 0 {
        println!(
            "network namespaces joined from the pool: {pooled} of {full_runs} full runs (the rest created by clone3)"
        );
    }
    for (what, m) in [
        ("runs dir on tmpfs", tmpfs_median),
        ("runs dir on disk", full_median),
    ] {
        let Some(full) = m else { continue };
        println!(
            "target: full envelope ({what}) ≤ {TARGET_MS} ms median: {full:.3} ms → {}{}",
            if full <= TARGET_MS { "PASS" } else { "MISS" },
            plain_median
                .map(|p| format!(" (plain spawn {p:.3} ms, overhead {:.3} ms)", full - p))
                .unwrap_or_default()
        );
    }
    // Throughput: full envelopes (runs dir on tmpfs) started from several threads at once,
    // against plain spawns from as many threads: the ceiling a Hall executing workers meets on
    // this machine before it does any work of its own (BENCHMARKS.md, "Daemon").
    if filter.as_deref().is_none_or(|f| f == "throughput") {
        let full_req = req(full);
        let mut no_net = full;
        no_net.network_isolation = Minimum::Off;
        let no_net_req = req(no_net);
        println!();
        println!(
            "| threads | plain spawns/s | full envelopes/s | full without network namespace/s |"
        );
        println!("|---|---|---|---|");
        for threads in [1usize, 2, 4, 8] {
            let rate = |one: &(dyn Fn() + Sync)| {
                let window = Duration::from_secs(2);
                let started = Instant::now();
                let done: usize = std::thread::scope(|s| {
                    let workers: Vec<_> = (0..threads)
                        .map(|_| {
                            s.spawn(|| {
                                let mut n = 0usize;
                                while started.elapsed() < window {
                                    one();
                                    n += 1;
                                }
                                n
                            })
                        })
                        .collect();
                    workers.into_iter().map(|w| w.join().expect("thread")).sum()
                });
                done as f64 / started.elapsed().as_secs_f64()
            };
            let plain = rate(&|| {
                assert!(Command::new("/bin/true").status().expect("spawn").success());
            });
            let enveloped = rate(&|| {
                let out = lvl.run(&full_req).expect("envelope run");
                assert!(out.success());
            });
            let without_net = rate(&|| {
                let out = lvl.run(&no_net_req).expect("envelope run");
                assert!(out.success());
            });
            println!("| {threads} | {plain:.0} | {enveloped:.0} | {without_net:.0} |");
        }
    }
    if let Some(cg) = cg {
        let _ = std::fs::remove_dir(cg);
    }
}
