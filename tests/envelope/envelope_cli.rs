//! `wcp-hall envelope probe|run` as a real process: output, exit codes, and the Hall's own
//! environment never reaching the worker; also the non-root Hall path (user namespace).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output};

use crate::envelope_support::*;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_wcp-hall");

fn hall(args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args).env_remove("WCP_HALL_CONFIG");
    c
}

fn json_of(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: stdout {} stderr {}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    })
}

fn host_args(fx: &Fixture) -> Vec<String> {
    let mut v = vec!["--runs-dir".to_owned(), fx.runs.display().to_string()];
    if let Some(cg) = cgroup_parent() {
        v.push("--cgroup-parent".into());
        v.push(cg.display().to_string());
    }
    v
}

fn request_file(fx: &Fixture, text: &str) -> String {
    let p = fx.root.path().join("request.json");
    fs::write(&p, text).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
    p.display().to_string()
}

#[test]
fn probe_reports_this_kernel() {
    let o = hall(&["--json", "envelope", "probe"]).output().unwrap();
    assert_eq!(o.status.code(), Some(0));
    let v = json_of(&o);
    assert!(v["landlock"]["kernel_abi"].as_u64().unwrap() >= 1);
    assert_eq!(v["landlock_abi_requested"], 6);
    assert_eq!(v["seccomp"]["filter"], true);
    assert!(v["namespaces"]["pid"].is_boolean());
    // Whether a run's memory can be bounded as a whole: only with memory.max in a leaf.
    let m = &v["memory_bound"];
    let per_run = v["cgroup"]["memory"] == true
        && v["cgroup"]["leaf_ok"] == true
        && v["cgroup"]["clone_into_cgroup"] == true;
    assert_eq!(m["per_run"], per_run, "{v}");
    assert_eq!(m["scope"], if per_run { "run" } else { "per_process" });
    assert_eq!(m["reason"].is_null(), per_run, "{m}");
    // What the host lets the Hall bound per run beyond the kernel features (tests run as root
    // on a host with mount namespaces: the socket is hidden and scratch is a tmpfs).
    let limits = &v["run_limits"];
    assert!(
        limits["hall_socket"]
            .as_str()
            .unwrap()
            .starts_with("hidden from workers"),
        "{limits}"
    );
    assert!(
        limits["scratch"].as_str().unwrap().contains("tmpfs"),
        "{limits}"
    );
    let human = hall(&["envelope", "probe"]).output().unwrap();
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(
        text.contains("landlock") && text.contains("cgroup v2"),
        "{text}"
    );
    assert!(
        text.contains(if per_run {
            "memory bound      per run"
        } else {
            "memory bound      per process only"
        }),
        "{text}"
    );
}

#[test]
fn run_prints_the_outcome_and_report() {
    let fx = fixture();
    let pkg = fx.package(
        "hello",
        "import json, sys\nprint(json.dumps({'echo': json.load(sys.stdin)}))\n",
    );
    let req = request_file(&fx, r#"{"n": 7}"#);
    let mut args = vec!["--json", "envelope", "run"];
    let pkg_s = pkg.display().to_string();
    args.extend([
        pkg_s.as_str(),
        "--request",
        req.as_str(),
        "--digest",
        "sha256:00",
    ]);
    let ha = host_args(&fx);
    args.extend(ha.iter().map(String::as_str));
    let o = hall(&args).output().unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v = json_of(&o);
    let stdout: Value = serde_json::from_str(v["stdout"].as_str().unwrap()).unwrap();
    assert_eq!(stdout["echo"]["n"], 7);
    assert_eq!(v["outcome"]["exit"]["code"], 0);
    assert_eq!(v["outcome"]["envelope"]["package"]["digest"], "sha256:00");
    assert_eq!(v["outcome"]["envelope"]["observed"]["no_new_privs"], 1);
    wcp_hall::crypto::canonical::to_canonical(&v["outcome"]).unwrap();

    // Human output names every feature.
    let mut args = vec!["envelope", "run", pkg_s.as_str(), "--request", req.as_str()];
    args.extend(ha.iter().map(String::as_str));
    let o = hall(&args).output().unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    for f in [
        "landlock",
        "network_isolation",
        "seccomp",
        "pid_namespace",
        "cgroup",
        "unprivileged_user",
        "NoNewPrivs 1",
    ] {
        assert!(text.contains(f), "{f}: {text}");
    }
}

#[test]
fn the_interpreter_is_probed_resolved_and_refused_clearly() {
    let fx = fixture();
    let pkg = fx.package("hello", "print('{}')\n");
    let pkg_s = pkg.display().to_string();
    let ha = host_args(&fx);
    let run = |interpreter: &str, json: bool| {
        let mut args = if json { vec!["--json"] } else { vec![] };
        args.extend([
            "envelope",
            "run",
            pkg_s.as_str(),
            "--interpreter",
            interpreter,
        ]);
        args.extend(ha.iter().map(String::as_str));
        hall(&args).output().unwrap()
    };
    // A symlink is resolved: the real binary runs and is the one Landlock rule that executes.
    let real = fs::canonicalize("/usr/bin/python3").unwrap();
    let o = run("/usr/bin/python3", true);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let report = &json_of(&o)["outcome"]["envelope"];
    assert_eq!(report["bootstrap"]["program"], real.display().to_string());
    let runtime = report["bootstrap"]["runtime"].as_str().unwrap();
    assert!(runtime.starts_with("cpython 3."), "{report}");
    let rules = report["landlock"]["fs_rules"].as_array().unwrap();
    assert!(
        rules
            .iter()
            .any(|r| r["path"] == report["bootstrap"]["program"] && r["access"] == "read_execute")
    );
    let text = String::from_utf8_lossy(&run("/usr/bin/python3", false).stdout).into_owned();
    assert!(text.contains(&format!("runtime {runtime}")), "{text}");

    // Unusable interpreters: exit 78 before anything runs, naming the flag and the reason.
    let shim = fx.root.path().join("python3-shim");
    fs::write(&shim, "#!/bin/sh\nexec /usr/bin/python3 \"$@\"\n").unwrap();
    fs::set_permissions(&shim, fs::Permissions::from_mode(0o755)).unwrap();
    let shim = shim.display().to_string();
    for (interpreter, reason) in [
        ("/nonexistent/python3", "does not exist"),
        ("/bin/sh", "probe failed"),
        (shim.as_str(), "not an ELF executable"),
        ("python3", "absolute"),
    ] {
        let o = run(interpreter, false);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(78), "{interpreter}: {err}");
        assert!(
            err.contains("--interpreter") && err.contains(reason),
            "{interpreter}: {err}"
        );
    }
}

#[test]
fn the_halls_own_environment_never_reaches_the_worker() {
    let fx = fixture();
    let pkg = fx.hostile("env_secrets");
    let mut args = vec![
        "--json".to_owned(),
        "envelope".into(),
        "run".into(),
        pkg.display().to_string(),
    ];
    args.extend(host_args(&fx));
    let o = hall(&args.iter().map(String::as_str).collect::<Vec<_>>())
        .env("WCP_HALL_SIGNING_KEY", "ed25519:very-secret")
        .env("AWS_SECRET_ACCESS_KEY", "hunter2")
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v = json_of(&o);
    let environ: Value = serde_json::from_str(v["stdout"].as_str().unwrap()).unwrap();
    let text = environ.to_string();
    assert!(
        !text.contains("very-secret") && !text.contains("hunter2"),
        "{text}"
    );
    assert!(environ["environ"]["WCP_HALL_SIGNING_KEY"].is_null());
}

#[test]
fn refusals_and_bad_input_have_their_exit_codes() {
    let fx = fixture();
    let pkg = fx.package("hello", "print('{}')\n");
    let pkg_s = pkg.display().to_string();
    let ha = host_args(&fx);
    let with_host = |a: Vec<&str>| {
        let mut all: Vec<&str> = a;
        all.extend(ha.iter().map(String::as_str));
        hall(&all).output().unwrap()
    };
    // Missing package directory: 66.
    let o = with_host(vec!["envelope", "run", "/nonexistent/pkg"]);
    assert_eq!(o.status.code(), Some(66));
    // Bad --min: usage, 2.
    let o = with_host(vec!["envelope", "run", &pkg_s, "--min", "landlock=maybe"]);
    assert_eq!(o.status.code(), Some(2));
    // Invalid request content (a write path with ..): 65, with the field named.
    let o = with_host(vec![
        "--json", "envelope", "run", &pkg_s, "--write", "../up",
    ]);
    assert_eq!(o.status.code(), Some(65));
    let err: Value = serde_json::from_slice(&o.stderr).unwrap();
    assert_eq!(err["error"]["code"], "invalid_request");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("filesystem_writes")
    );
    // A required cgroup on a host that cannot delegate memory/pids: refused, exit 1.
    let probe = json_of(&hall(&["--json", "envelope", "probe"]).output().unwrap());
    let o = with_host(vec![
        "--json",
        "envelope",
        "run",
        &pkg_s,
        "--min",
        "cgroup=required",
    ]);
    if cgroup_parent().is_some()
        && !(probe["cgroup"]["memory"] == true && probe["cgroup"]["pids"] == true)
    {
        assert_eq!(o.status.code(), Some(1));
        let err: Value = serde_json::from_slice(&o.stderr).unwrap();
        assert_eq!(err["error"]["code"], "requirement_unmet");
        assert!(
            err["error"]["message"]
                .as_str()
                .unwrap()
                .contains("DENY_ENVELOPE_REQUIREMENT_UNMET")
        );
        assert!(err["error"]["hint"].as_str().unwrap().contains("Delegate"));
    }
    // A worker that fails: exit 1.
    let bad = fx.package("bad", "raise SystemExit(3)\n");
    let o = with_host(vec![
        "--json",
        "envelope",
        "run",
        &bad.display().to_string(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(json_of(&o)["outcome"]["exit"]["code"], 3);
}

#[test]
fn an_unprivileged_hall_confines_workers_in_a_user_namespace() {
    let fx = fixture();
    let pkg = fx.hostile("read_secrets");
    let req = request_file(
        &fx,
        r#"{"paths": {"shadow": "/etc/shadow", "passwd": "/etc/passwd"}}"#,
    );
    let runs = fx.root.path().join("user-runs");
    fs::create_dir(&runs).unwrap();
    std::os::unix::fs::chown(&runs, Some(65534), Some(65534)).unwrap();
    let args = [
        "--json",
        "envelope",
        "run",
        pkg.to_str().unwrap(),
        "--request",
        &req,
        "--runs-dir",
        runs.to_str().unwrap(),
        "--min",
        "cgroup=off",
    ];
    let o = hall(&args).uid(65534).gid(65534).output().unwrap();
    if o.status.code() == Some(1) && String::from_utf8_lossy(&o.stderr).contains("user namespace") {
        // Hosts that forbid unprivileged user namespaces must refuse, never run unconfined.
        assert!(String::from_utf8_lossy(&o.stderr).contains("DENY_ENVELOPE_REQUIREMENT_UNMET"));
        return;
    }
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v = json_of(&o);
    let r = &v["outcome"]["envelope"];
    assert_eq!(r["namespaces"]["user"], true);
    assert_eq!(r["namespaces"]["pid"], true);
    assert_eq!(r["identity"]["hall_uid"], 65534);
    assert_eq!(r["observed"]["uid"][0], 65534);
    assert_eq!(r["observed"]["cap_eff"], "0000000000000000");
    let result: Value = serde_json::from_str(v["stdout"].as_str().unwrap()).unwrap();
    assert_eq!(result["shadow"]["errno"], 13);
    // /etc/passwd is world-readable, but not granted: Landlock denies it too.
    assert_eq!(result["passwd"]["errno"], 13);
    assert!(
        !Path::new(&runs).read_dir().unwrap().any(|_| true),
        "run dir removed"
    );
}

#[test]
fn a_run_without_a_result_names_its_failure_code() {
    // tests/hostile/misbehave fails as its request asks (also used by tests/it/daemon.rs).
    let fx = fixture();
    let pkg = fx.hostile("misbehave");
    let pkg_s = pkg.display().to_string();
    let ha = host_args(&fx);
    // The exit code stays the worker's (0 when it exited 0, whatever it printed); the output
    // names what a Hall dispatch would call the failure.
    for (what, code, exit) in [("two_values", "not_json", 0), ("exit3", "exit_status", 1)] {
        let req = request_file(&fx, &json!({"do": what}).to_string());
        let mut args = vec!["envelope", "run", pkg_s.as_str(), "--request", req.as_str()];
        args.extend(ha.iter().map(String::as_str));
        let o = hall(&args).output().unwrap();
        assert_eq!(o.status.code(), Some(exit), "{what}");
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(text.contains(&format!("\nfailed: {code}: ")), "{text}");
        let mut args = vec!["--json"];
        args.extend(["envelope", "run", pkg_s.as_str(), "--request", req.as_str()]);
        args.extend(ha.iter().map(String::as_str));
        let v = json_of(&hall(&args).output().unwrap());
        assert_eq!(v["error"]["code"], code, "{v}");
    }
    let req = request_file(&fx, r#"{"do": "ok"}"#);
    let mut args = vec![
        "--json",
        "envelope",
        "run",
        pkg_s.as_str(),
        "--request",
        req.as_str(),
    ];
    args.extend(ha.iter().map(String::as_str));
    let o = hall(&args).output().unwrap();
    assert_eq!(o.status.code(), Some(0));
    assert!(json_of(&o)["error"].is_null());
}

#[test]
fn the_tree_dies_with_the_hall() {
    // A Hall (the CLI) running a worker that would sleep for an hour is SIGKILLed: the
    // parent-death signal takes init down, and with it the worker's PID namespace.
    let fx = fixture();
    let pkg = fx.hostile("sleeper");
    let req = request_file(&fx, r#"{"ignore_sigterm": true}"#);
    let uid = next_identity(63000).uid;
    let mut args = vec![
        "envelope".to_owned(),
        "run".into(),
        pkg.display().to_string(),
        "--request".into(),
        req,
        "--timeout-ms".into(),
        "3600000".into(),
        "--uid".into(),
        uid.to_string(),
        "--gid".into(),
        uid.to_string(),
    ];
    args.extend(host_args(&fx));
    let mut hall_proc = hall(&args.iter().map(String::as_str).collect::<Vec<_>>())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait (bounded) for the worker to be running Python under its uid.
    let running_python = || {
        processes_of(uid).iter().any(|pid| {
            fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "python3.11")
        })
    };
    let mut started = false;
    for _ in 0..500 {
        if running_python() {
            started = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(started, "the worker never started");
    hall_proc.kill().unwrap();
    hall_proc.wait().unwrap();
    let mut gone = false;
    for _ in 0..500 {
        if processes_of(uid).is_empty() {
            gone = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(
        gone,
        "survivors after the Hall died: {:?}",
        processes_of(uid)
    );
}

#[test]
fn native_programs_run_with_the_loader_their_header_names() {
    let fx = fixture();
    let pkg = fx.package("native", "");
    let pkg_s = pkg.display().to_string();
    let ha = host_args(&fx);
    // /bin/true: its loader (PT_INTERP, resolved) is the one executable runtime path.
    let mut args = vec![
        "--json",
        "envelope",
        "run",
        pkg_s.as_str(),
        "--native",
        "/bin/true",
    ];
    args.extend(ha.iter().map(String::as_str));
    let o = hall(&args).output().unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v = json_of(&o);
    let loader = wcp_hall::envelope::native::runtime_for(std::path::Path::new("/bin/true"))
        .unwrap()
        .execute[0]
        .display()
        .to_string();
    let rules = v["outcome"]["envelope"]["landlock"]["fs_rules"]
        .as_array()
        .unwrap();
    assert!(
        rules
            .iter()
            .any(|r| r["path"] == loader.as_str() && r["access"] == "read_execute"),
        "{rules:?}"
    );
    // A script is not a native program: refused before anything runs, with a hint.
    let script = fx.root.path().join("script.sh");
    fs::write(&script, "#!/bin/sh\necho hi\n").unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    let script_s = script.display().to_string();
    let mut args = vec![
        "envelope",
        "run",
        pkg_s.as_str(),
        "--native",
        script_s.as_str(),
    ];
    args.extend(ha.iter().map(String::as_str));
    let o = hall(&args).output().unwrap();
    assert_eq!(
        o.status.code(),
        Some(65),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("script.sh is not an ELF executable"), "{err}");
    assert!(
        err.contains("--native takes a compiled (ELF) program"),
        "{err}"
    );
}
