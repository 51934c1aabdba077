//! Hostile workers (tests/hostile/*): each tries to break out of its privilege envelope and each
//! test asserts *how* it was stopped: the errno the worker got, the report, the exit status,
//! and the host side (nothing received, no process left). Where a test can run twice, it does:
//! cold and as a warm instance ([`cold_and_warm`]), with the same assertions.

use std::fs;
use std::io::Read;
use std::net::{TcpListener, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;

use crate::envelope_support::*;
use serde_json::{Value, json};
use wcp_hall::envelope::{Effective, Minimum, RunOutcome, RunRequest};
use wcp_hall::registry::NetworkEgress;

const UID_BASE: u32 = 62000;
const EACCES: i64 = 13;
const EPERM: i64 = 1;
const EBADF: i64 = 9;
const EFBIG: i64 = 27;

fn payload(req: &mut RunRequest, v: Value) {
    req.payload = serde_json::to_vec(&v).unwrap();
}

fn result(out: &RunOutcome) -> Value {
    out.result_json().unwrap_or_else(|e| {
        panic!(
            "{e}; exit {:?}; stderr: {}",
            out.exit,
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn denied(v: &Value, errno: i64) {
    assert_eq!(v["ok"], false, "{v}");
    assert_eq!(v["errno"], errno, "{v}");
}

/// Writes a world-readable file outside every grant (so only Landlock can stop a read).
fn outside_file(fx: &Fixture, name: &str, text: &str) -> String {
    let dir = fx.root.path().join("outside");
    fs::create_dir_all(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    let p = dir.join(name);
    fs::write(&p, text).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
    p.display().to_string()
}

fn read_secrets_case(unprivileged: Minimum) {
    let fx = fixture();
    let pkg = fx.hostile("read_secrets");
    // A Hall key that is even world-readable: DAC would allow it, Landlock must not.
    let key = outside_file(&fx, "hall-signing.key", "ed25519 seed");
    let other = fx.package("other-worker", "print('mine')\n");
    std::os::unix::fs::symlink(&key, pkg.join("code/leak")).unwrap();
    let mut req = request(
        &pkg,
        declared(&[], NetworkEgress::None, &[]),
        "{}",
        UID_BASE,
    );
    req.minimums.unprivileged_user = unprivileged;
    payload(
        &mut req,
        json!({"paths": {
            "shadow": "/etc/shadow",
            "hall_key": key,
            "other_store_entry": other.join("code/bootstrap.py"),
            "symlink_out": pkg.join("code/leak"),
            "hall_environ": format!("/proc/{}/environ", std::process::id()),
            "proc_self": "/proc/self/status",
            "own_package": pkg.join("code/bootstrap.py"),
        }}),
    );
    let env = fx.envelope();
    for (kind, out) in cold_and_warm(&env, &req) {
        eprintln!("{kind} run");
        let r = result(&out);
        for label in [
            "shadow",
            "hall_key",
            "other_store_entry",
            "symlink_out",
            "hall_environ",
            "proc_self",
        ] {
            denied(&r[label], EACCES);
        }
        // Its own package stays readable: the denials are the envelope's, not a broken worker.
        assert_eq!(r["own_package"]["ok"], true);
        assert_eq!(out.report.landlock.effective, Effective::Enforced);
        assert_eq!(out.report.landlock.ruleset, "fully_enforced");
    }
}

#[test]
fn reading_shadow_keys_other_entries_and_symlinks_is_denied() {
    read_secrets_case(Minimum::Required);
}

#[test]
fn landlock_alone_stops_reads_even_for_a_root_worker() {
    // unprivileged_user off: the worker is uid 0 with every capability; only Landlock is left.
    read_secrets_case(Minimum::Off);
}

#[test]
fn writes_outside_declared_dirs_are_denied() {
    let fx = fixture();
    let pkg = fx.hostile("write_outside");
    let outside = outside_file(&fx, "victim.txt", "original");
    let mut req = request(
        &pkg,
        declared(&["out/"], NetworkEgress::None, &[]),
        "{}",
        UID_BASE,
    );
    req.minimums.unprivileged_user = Minimum::Off; // prove Landlock, not file modes
    let env = fx.envelope();
    payload(&mut req, json!({"package": pkg, "outside": outside}));
    for (kind, out) in cold_and_warm(&env, &req) {
        eprintln!("{kind} run");
        let r = result(&out);
        assert_eq!(r["declared"]["ok"], true, "{r}");
        assert_eq!(r["private_tmp"]["ok"], true, "{r}");
        for label in [
            "own_package",
            "own_package_new_file",
            "tmp",
            "outside",
            "work_dir_root",
            "via_symlink",
            "rename_out",
        ] {
            denied(&r[label], EACCES);
        }
        // RLIMIT_FSIZE: Python ignores SIGXFSZ, so the write fails with EFBIG.
        denied(&r["huge_file"], EFBIG);
        assert_eq!(fs::read_to_string(&outside).unwrap(), "original");
        assert!(!Path::new("/tmp/wcp-hostile-write").exists());
        assert!(
            fs::read_to_string(pkg.join("code/bootstrap.py"))
                .unwrap()
                .contains("Hostile")
        );
        let writes = &out.report.filesystem.writes;
        assert_eq!(writes.len(), 1);
        assert!(writes[0].granted.ends_with("/work/out"));
    }
}

#[test]
fn tcp_and_udp_to_the_host_loopback_never_arrive() {
    let fx = fixture();
    let pkg = fx.hostile("network");
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    tcp.set_nonblocking(true).unwrap();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_nonblocking(true).unwrap();
    let tcp_port = tcp.local_addr().unwrap().port();
    let udp_port = udp.local_addr().unwrap().port();
    let env = fx.envelope();
    // Both ways of getting the namespace must isolate: created by clone3 (the pool is still
    // filling at first) and joined from the pool of pre-created ones.
    let mut sources = std::collections::BTreeSet::new();
    for _ in 0..20 {
        let mut req = request(
            &pkg,
            declared(&[], NetworkEgress::None, &[]),
            "{}",
            UID_BASE,
        );
        payload(&mut req, json!({"tcp": [tcp_port], "udp": udp_port}));
        let out = env.run(&req).unwrap();
        let r = result(&out);
        // Landlock denies TCP connect before routing even happens.
        denied(&r["tcp"][tcp_port.to_string()], EACCES);
        // UDP "succeeds" inside: it goes to the sandbox's own loopback, not the host's.
        assert!(tcp.accept().is_err(), "a connection reached the host");
        let mut buf = [0u8; 64];
        assert!(
            udp.recv_from(&mut buf).is_err(),
            "a datagram reached the host"
        );
        assert_eq!(out.report.network.mode, "namespace");
        assert!(out.report.network.namespace && out.report.namespaces.net);
        assert_eq!(out.report.network.effective, Effective::Enforced);
        sources.insert(out.report.namespaces.net_source.clone().unwrap());
        if sources.contains("pooled") {
            break;
        }
    }
    assert!(
        sources.contains("pooled"),
        "the pool never delivered: {sources:?}"
    );
}

#[test]
fn allowlist_lets_only_listed_tcp_ports_through_and_denies_udp() {
    let fx = fixture();
    let pkg = fx.hostile("network");
    let allowed = TcpListener::bind("127.0.0.1:0").unwrap();
    let other = TcpListener::bind("127.0.0.1:0").unwrap();
    other.set_nonblocking(true).unwrap();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_nonblocking(true).unwrap();
    let (ap, op, up) = (
        allowed.local_addr().unwrap().port(),
        other.local_addr().unwrap().port(),
        udp.local_addr().unwrap().port(),
    );
    let egress = NetworkEgress::Allowlist(vec![format!("127.0.0.1:{ap}")]);
    let mut req = request(&pkg, declared(&[], egress, &[]), "{}", UID_BASE);
    payload(&mut req, json!({"tcp": [ap, op], "udp": up}));
    let env = fx.envelope();
    let reader = std::thread::spawn(move || {
        let (mut s, _) = allowed.accept().unwrap();
        let mut got = String::new();
        s.read_to_string(&mut got).unwrap();
        got
    });
    let out = env.run(&req).unwrap();
    let r = result(&out);
    assert_eq!(r["tcp"][ap.to_string()]["ok"], true, "{r}");
    assert_eq!(reader.join().unwrap(), "hello from the sandbox");
    denied(&r["tcp"][op.to_string()], EACCES);
    denied(&r["udp"], EPERM); // socket(AF_INET, SOCK_DGRAM) refused by seccomp
    assert!(other.accept().is_err());
    let mut buf = [0u8; 64];
    assert!(udp.recv_from(&mut buf).is_err());
    let net = &out.report.network;
    assert_eq!(net.mode, "landlock_tcp_ports");
    assert!(!net.hosts_enforced);
    assert_eq!(out.report.landlock.tcp_connect_ports, Some(vec![ap]));
    assert_eq!(
        out.report.seccomp.mode,
        Some(wcp_hall::envelope::seccomp::SeccompMode::NoUdp)
    );
}

#[test]
fn fork_bomb_is_contained_and_leaves_nothing_behind() {
    let fx = fixture();
    let pkg = fx.hostile("fork_bomb");
    let mut req = request(
        &pkg,
        declared(&[], NetworkEgress::None, &[]),
        "{}",
        UID_BASE,
    );
    req.limits.max_processes = 16;
    req.limits.wall_timeout_ms = 1000;
    let uid = req.identity.unwrap().uid;
    let env = fx.envelope();
    for (kind, out) in cold_and_warm(&env, &req) {
        eprintln!("{kind} run");
        assert!(out.timed_out);
        assert!(!out.success());
        assert!(
            processes_of(uid).is_empty(),
            "survivors: {:?}",
            processes_of(uid)
        );
        assert!(out.report.namespaces.pid);
        let nproc = out
            .report
            .rlimits
            .iter()
            .find(|r| r.resource == "nproc")
            .unwrap();
        assert_eq!(nproc.soft, Some(16));
    }
}

#[test]
fn unbounded_allocation_hits_the_address_space_limit() {
    let fx = fixture();
    let pkg = fx.hostile("memory_hog");
    let mut req = request(
        &pkg,
        declared(&[], NetworkEgress::None, &[]),
        "{}",
        UID_BASE,
    );
    req.limits.memory_bytes = 256 << 20;
    let env = fx.envelope();
    for (kind, out) in cold_and_warm(&env, &req) {
        eprintln!("{kind} run");
        let r = result(&out);
        assert_eq!(r["memory_error"], true);
        assert!(r["allocated_mib"].as_u64().unwrap() < 256);
        assert!(out.success());
        let asl = out
            .report
            .rlimits
            .iter()
            .find(|r| r.resource == "as")
            .unwrap();
        assert_eq!(asl.soft, Some(256 << 20));
    }
}

#[test]
fn memory_spread_over_processes_is_reported_as_a_per_process_bound() {
    // Without the cgroup memory controller (off here, whatever the host offers) RLIMIT_AS is per
    // process: three children each hold 96 MiB under a 192 MiB limit, 288 MiB in all. The report
    // must not pass that off as a run bound, nor the largest process as the run's peak.
    let fx = fixture();
    let pkg = fx.hostile("memory_fork");
    let mut req = request(
        &pkg,
        declared(&[], NetworkEgress::None, &[]),
        r#"{"children": 3, "each_mib": 96}"#,
        UID_BASE,
    );
    req.limits.memory_bytes = 192 << 20;
    req.minimums.cgroup = Minimum::Off;
    let env = fx.envelope();
    for (kind, out) in cold_and_warm(&env, &req) {
        eprintln!("{kind} run");
        let r = result(&out);
        assert_eq!(r["holding"], 3, "every child held its share at once: {r}");
        assert!(out.success());

        let m = &out.report.memory;
        assert_eq!(m.scope, "per_process", "{m:?}");
        assert_eq!(m.source, "RLIMIT_AS");
        assert_eq!(m.enforced, "per_process_only");
        assert_eq!(m.per_process_bytes, 192 << 20);
        assert_eq!(m.processes_max, Some(req.limits.max_processes));
        assert_eq!(
            m.run_bound_bytes,
            Some((192 << 20) * req.limits.max_processes)
        );
        assert!(
            m.run_bound_bytes.unwrap() > 3 * (96 << 20),
            "the stated bound covers what the run really held"
        );
        assert!(
            m.reason.as_deref().unwrap().contains("per-process"),
            "{m:?}"
        );
        // The receipt's JSON says the same.
        let json = serde_json::to_value(out.summary()).unwrap();
        assert_eq!(json["envelope"]["memory"]["scope"], "per_process");
        assert_eq!(json["peak_memory_source"], "largest_process_rss");
        // Peak memory is the largest single process (one child's share plus the interpreter), not
        // the 288 MiB the run held together.
        assert_eq!(out.peak_memory_source, "largest_process_rss");
        let peak = out.peak_memory_bytes.unwrap();
        assert!(peak >= 96 << 20, "{peak}");
        assert!(peak < 2 * (96 << 20), "{peak}");
    }
}

#[test]
fn spinning_forever_is_stopped_by_the_cpu_limit() {
    let fx = fixture();
    let pkg = fx.hostile("spin");
    let mut req = request(
        &pkg,
        declared(&[], NetworkEgress::None, &[]),
        "{}",
        UID_BASE,
    );
    req.limits.cpu_seconds = 1;
    req.limits.wall_timeout_ms = 30_000;
    let env = fx.envelope();
    for (kind, out) in cold_and_warm(&env, &req) {
        eprintln!("{kind} run");
        assert!(out.cpu_limit_exceeded, "{:?}", out.exit);
        assert_eq!(out.exit.signal_name.as_deref(), Some("SIGXCPU"));
        assert!(!out.timed_out);
        // RLIMIT_CPU counts scheduler ticks, the cgroup counts exactly: both saw real CPU burnt.
        assert!(out.cpu_time_ms.unwrap() >= 500, "{:?}", out.cpu_time_ms);
    }
}

#[test]
fn sleeping_past_the_timeout_gets_sigterm() {
    let fx = fixture();
    let pkg = fx.hostile("sleeper");
    let mut req = request(
        &pkg,
        declared(&[], NetworkEgress::None, &[]),
        "{}",
        UID_BASE,
    );
    req.limits.wall_timeout_ms = 300;
    let env = fx.envelope();
    for (kind, out) in cold_and_warm(&env, &req) {
        eprintln!("{kind} run");
        assert!(out.timed_out);
        assert_eq!(out.exit.kind, "signaled");
        assert_eq!(out.exit.signal_name.as_deref(), Some("SIGTERM"));
    }
}

#[test]
fn ignoring_sigterm_gets_the_whole_tree_killed_after_the_grace() {
    let fx = fixture();
    let pkg = fx.hostile("sleeper");
    let mut req = request(
        &pkg,
        declared(&[], NetworkEgress::None, &[]),
        "{}",
        UID_BASE,
    );
    payload(&mut req, json!({"ignore_sigterm": true}));
    req.limits.wall_timeout_ms = 300;
    let uid = req.identity.unwrap().uid;
    let env = fx.envelope();
    for (kind, out) in cold_and_warm(&env, &req) {
        eprintln!("{kind} run");
        assert!(out.timed_out);
        assert_eq!(out.exit.kind, "killed");
        assert_eq!(out.exit.signal_name.as_deref(), Some("SIGKILL"));
        assert_eq!(String::from_utf8_lossy(&out.stdout), "sleeping\n");
        assert!(processes_of(uid).is_empty());
    }
}

#[test]
fn a_gigabyte_of_output_is_drained_but_not_kept() {
    let fx = fixture();
    let pkg = fx.hostile("big_output");
    let mut req = request(
        &pkg,
        declared(&[], NetworkEgress::None, &[]),
        "{}",
        UID_BASE,
    );
    req.limits.max_output_bytes = 64 << 10;
    req.limits.wall_timeout_ms = 60_000;
    let env = fx.envelope();
    for (kind, out) in cold_and_warm(&env, &req) {
        eprintln!("{kind} run");
        assert!(out.success(), "{:?}", out.exit);
        assert!(out.stdout_truncated);
        assert_eq!(out.stdout.len(), 64 << 10);
        assert_eq!(out.stdout_bytes, 1 << 30);
        assert!(matches!(
            out.result_json(),
            Err(wcp_hall::envelope::ResultError::Truncated { .. })
        ));
    }
}

fn escape_case(pid_namespace: Minimum) -> RunOutcome {
    let fx = fixture();
    let pkg = fx.hostile("escape_daemon");
    let mut req = request(
        &pkg,
        declared(&[], NetworkEgress::None, &[]),
        "{}",
        UID_BASE,
    );
    req.minimums.pid_namespace = pid_namespace;
    let uid = req.identity.unwrap().uid;
    let mut last = None;
    for (kind, out) in cold_and_warm(&fx.envelope(), &req) {
        eprintln!("{kind} run");
        assert_eq!(result(&out)["daemonised"], true);
        assert!(
            processes_of(uid).is_empty(),
            "survivors: {:?}",
            processes_of(uid)
        );
        last = Some(out);
    }
    last.expect("two runs")
}

#[test]
fn setsid_double_fork_dies_with_the_pid_namespace() {
    let out = escape_case(Minimum::Required);
    assert!(out.report.namespaces.pid);
    assert_eq!(out.report.observed.ns_pid.as_ref().map(Vec::len), Some(2));
}

#[test]
fn control_without_namespace_or_cgroup_the_daemon_survives() {
    // The negative control for the two tests around it: with neither a PID namespace nor a
    // cgroup the setsid'd grandchild escapes the process-group kill, and the scan sees it.
    let fx = fixture();
    let pkg = fx.hostile("escape_daemon");
    let mut req = request(
        &pkg,
        declared(&[], NetworkEgress::None, &[]),
        "{}",
        UID_BASE,
    );
    req.minimums.pid_namespace = Minimum::Off;
    req.minimums.cgroup = Minimum::Off;
    let uid = req.identity.unwrap().uid;
    let out = fx.envelope().run(&req).unwrap();
    let survivors = processes_of(uid);
    for pid in &survivors {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(*pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    assert_eq!(result(&out)["daemonised"], true);
    assert_eq!(survivors.len(), 1, "expected exactly the escaped daemon");
    assert_eq!(out.report.pid_namespace.effective, Effective::Off);
    assert_eq!(out.report.cgroup.effective, Effective::Off);
}

#[test]
fn setsid_double_fork_without_pid_namespace_is_caught_by_cgroup_kill() {
    let out = escape_case(Minimum::Off);
    assert!(!out.report.namespaces.pid);
    assert!(out.report.cgroup.kill, "{:?}", out.report.cgroup);
    assert!(out.report.cgroup.born_in_leaf);
}

#[test]
fn ptrace_process_vm_unshare_and_mount_are_refused_by_seccomp() {
    let fx = fixture();
    let pkg = fx.hostile("ptrace");
    let mut req = request(
        &pkg,
        declared(&[], NetworkEgress::None, &[]),
        "{}",
        UID_BASE,
    );
    payload(&mut req, json!({"target": null}));
    let env = fx.envelope();
    for (kind, out) in cold_and_warm(&env, &req) {
        eprintln!("{kind} run");
        let r = result(&out);
        for label in [
            "ptrace_own_child",
            "ptrace_init",
            "process_vm_readv",
            "unshare_user",
            "mount",
        ] {
            denied(&r[label], EPERM);
        }
        assert_eq!(out.report.observed.seccomp, Some(2));
        assert_eq!(out.report.observed.no_new_privs, Some(1));
        assert!(out.report.seccomp.digest.is_some());
    }
}

#[test]
fn a_same_uid_process_outside_cannot_be_traced_or_signalled() {
    let fx = fixture();
    let pkg = fx.hostile("ptrace");
    let mut req = request(
        &pkg,
        declared(&[], NetworkEgress::None, &[]),
        "{}",
        UID_BASE,
    );
    // No PID namespace, so the target is visible; it runs under the worker's own uid.
    req.minimums.pid_namespace = Minimum::Off;
    let id = req.identity.unwrap();
    let mut target = std::process::Command::new("/bin/sleep")
        .arg("30")
        .uid(id.uid)
        .gid(id.gid)
        .spawn()
        .unwrap();
    payload(&mut req, json!({"target": target.id()}));
    let out = fx.envelope().run(&req).unwrap();
    let alive = target.try_wait().unwrap().is_none();
    let _ = target.kill();
    let _ = target.wait();
    let r = result(&out);
    denied(&r["ptrace_target"], EPERM); // seccomp
    denied(&r["kill_target"], EPERM); // Landlock signal scope (ABI 6)
    assert!(alive, "the worker killed a process outside its envelope");
    assert!(out.report.landlock.scopes.contains(&"signal".to_owned()));
}

#[test]
#[allow(unsafe_code)] // a descriptor opened without O_CLOEXEC on purpose, through libc
fn inherited_descriptors_are_closed() {
    let fx = fixture();
    let pkg = fx.hostile("inherited_fd");
    let key = outside_file(&fx, "hall.key", "secret key material");
    let path = std::ffi::CString::new(key).unwrap();
    // Deliberately without O_CLOEXEC, as careless daemon code might.
    // SAFETY: open(2) on a live NUL-terminated path.
    let fd = unsafe { nix::libc::open(path.as_ptr(), nix::libc::O_RDONLY) };
    assert!(fd > 2);
    let mut req = request(
        &pkg,
        declared(&[], NetworkEgress::None, &[]),
        "{}",
        UID_BASE,
    );
    payload(&mut req, json!({"fd": fd}));
    let outs = std::panic::catch_unwind(|| cold_and_warm(&fx.envelope(), &req));
    // SAFETY: closing the descriptor this test opened above and nothing else uses.
    unsafe { nix::libc::close(fd) };
    for (kind, out) in outs.expect("both runs") {
        eprintln!("{kind} run");
        let r = result(&out);
        assert_eq!(r["open_fds"], json!([]), "{r}");
        denied(&r["target"], EBADF);
        assert!(out.report.process.inherited_fds_closed);
    }
}

#[test]
fn the_environment_holds_only_the_allowlist_and_declared_secrets() {
    let fx = fixture();
    let pkg = fx.hostile("env_secrets");
    for (name, value) in [("api_token", "tok-123\n"), ("undeclared", "nope")] {
        let p = fx.secrets.join(name);
        fs::write(&p, value).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
    }
    let req = request(
        &pkg,
        declared(&[], NetworkEgress::None, &["api_token"]),
        "{}",
        UID_BASE,
    );
    let out = fx.envelope().run(&req).unwrap();
    let r = result(&out);
    let environ = r["environ"].as_object().unwrap();
    let mut keys: Vec<String> = environ.keys().cloned().collect();
    keys.sort();
    assert_eq!(keys, out.report.environment.keys);
    assert_eq!(environ["WCP_SECRET_API_TOKEN"], "tok-123");
    assert!(!environ.contains_key("WCP_SECRET_UNDECLARED"));
    // Nothing of the Hall's own environment (cargo sets plenty for this test process): a
    // name the Hall also has is either absent or one of the allowlist's, with its own value.
    for (k, v) in std::env::vars() {
        if out.report.environment.keys.contains(&k) {
            continue;
        }
        assert!(!environ.contains_key(&k), "{k}={v} leaked");
    }
    assert!(!environ.contains_key("CARGO_MANIFEST_DIR"));
    assert_eq!(environ["WCP_CORRELATION_ID"], "corr-test-1");
    assert!(environ["TRACEPARENT"].as_str().unwrap().starts_with("00-"));
    assert_eq!(out.report.environment.secrets, vec!["api_token"]);
    // The report names the secret, never its value.
    let report = String::from_utf8(out.report.to_canonical().unwrap()).unwrap();
    assert!(!report.contains("tok-123"));
}

#[test]
fn a_planted_pyc_is_never_executed() {
    let fx = fixture();
    let pkg = fx.hostile("planted_pyc");
    let logic = pkg.join("code/worker_logic.py");
    let good = fs::read_to_string(&logic).unwrap();
    // An evil source of exactly the same length and mtime, compiled into __pycache__.
    let evil = good.replace("attested source", "PLANTED PYC!!!!");
    assert_eq!(evil.len(), good.len());
    let evil_src = fx.root.path().join("evil_logic.py");
    fs::write(&evil_src, &evil).unwrap();
    let mtime = fs::metadata(&logic).unwrap().modified().unwrap();
    fs::File::options()
        .write(true)
        .open(&evil_src)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    let cache = pkg.join("code/__pycache__");
    fs::create_dir_all(&cache).unwrap();
    fs::set_permissions(&cache, fs::Permissions::from_mode(0o755)).unwrap();
    let pyc = cache.join("worker_logic.cpython-311.pyc");
    let status = std::process::Command::new("/usr/bin/python3.11")
        .args(["-c", "import py_compile,sys; py_compile.compile(sys.argv[1], cfile=sys.argv[2], doraise=True)"])
        .arg(&evil_src)
        .arg(&pyc)
        .status()
        .unwrap();
    assert!(status.success());
    fs::set_permissions(&pyc, fs::Permissions::from_mode(0o644)).unwrap();
    // Sanity: outside the envelope the planted pyc wins (this is the attack).
    let plain = std::process::Command::new("/usr/bin/python3.11")
        .arg("-B")
        .arg(pkg.join("code/bootstrap.py"))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&plain.stdout).contains("PLANTED"));
    let req = request(
        &pkg,
        declared(&[], NetworkEgress::None, &[]),
        "{}",
        UID_BASE,
    );
    let env = fx.envelope();
    for (kind, out) in cold_and_warm(&env, &req) {
        eprintln!("{kind} run");
        assert_eq!(result(&out)["ran"], "attested source");
        assert!(
            out.report
                .bootstrap
                .argv
                .iter()
                .any(|a| a.starts_with("pycache_prefix="))
        );
    }
}
