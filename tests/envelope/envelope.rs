//! The envelope end to end: real processes, real kernel enforcement, real reports.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use crate::envelope_support::*;
use wcp_hall::crypto::canonical;
use wcp_hall::envelope::{Bootstrap, Effective, EnvelopeError, Feature, Minimum, RuntimePaths};
use wcp_hall::registry::NetworkEgress;

const UID_BASE: u32 = 61000;

const HELLO: &str = "import json, sys, os\n\
req = json.load(sys.stdin)\n\
print(json.dumps({'greeting': 'hello ' + req['name'], 'corr': os.environ['WCP_CORRELATION_ID'], 'cwd': os.getcwd()}))\n";

#[test]
fn hello_worker_reads_request_and_writes_result() {
    let fx = fixture();
    let pkg = fx.package("hello", HELLO);
    let req = request(
        &pkg,
        declared(&[], NetworkEgress::None, &[]),
        r#"{"name":"hall"}"#,
        UID_BASE,
    );
    let out = fx.envelope().run(&req).unwrap();
    assert!(
        out.success(),
        "{:?} {}",
        out.exit,
        String::from_utf8_lossy(&out.stderr)
    );
    let v = out.result_json().unwrap();
    assert_eq!(v["greeting"], "hello hall");
    assert_eq!(v["corr"], "corr-test-1");
    assert_eq!(v["cwd"].as_str().unwrap(), out.report.filesystem.work_dir);
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.stdout_truncated);
}

#[test]
fn the_report_shows_what_the_kernel_enforced_and_is_canonical() {
    let fx = fixture();
    let pkg = fx.package("hello", HELLO);
    let mut req = request(
        &pkg,
        declared(&["out"], NetworkEgress::None, &[]),
        r#"{"name":"x"}"#,
        UID_BASE,
    );
    req.package_digest = Some("sha256:".to_owned() + &"ab".repeat(32));
    let uid = req.identity.unwrap().uid;
    let out = fx.envelope().run(&req).unwrap();
    let r = &out.report;
    assert_eq!(r.schema, "wcp-hall.envelope-report/1");
    assert_eq!(r.package.digest, req.package_digest);
    // What /proc/<worker>/status showed while it ran.
    assert_eq!(r.observed.no_new_privs, Some(1));
    assert_eq!(r.observed.seccomp, Some(2));
    assert_eq!(r.observed.seccomp_filters, Some(1));
    assert_eq!(r.observed.uid, Some(vec![uid; 4]));
    assert_eq!(r.observed.cap_eff.as_deref(), Some("0000000000000000"));
    let ns_pid = r.observed.ns_pid.clone().unwrap();
    assert_eq!(ns_pid.len(), 2, "a PID namespace");
    assert_eq!(ns_pid[1], 2, "the worker is PID 2 under the Hall's init");
    assert_eq!(r.landlock.effective, Effective::Enforced);
    assert_eq!(r.landlock.abi_requested, 6);
    assert!(r.landlock.abi_kernel >= 6);
    assert_eq!(r.seccomp.effective, Effective::Enforced);
    assert!(r.namespaces.pid && r.namespaces.net && r.namespaces.ipc && r.namespaces.uts);
    // Every stage, in order, ok.
    let stages: Vec<&str> = r.stages.iter().map(|s| s.stage.as_str()).collect();
    // A pre-created namespace is joined (setns) with its loopback already up; a new one is
    // created by clone3 and its loopback brought up by init.
    let pooled = r.namespaces.net_source.as_deref() == Some("pooled");
    let mut expected = vec![
        "run_dir",
        "landlock_ruleset",
        "cgroup",
        "clone",
        "fds",
        "session",
        "parent_death",
    ];
    if pooled {
        expected.extend(["net_namespace", "signals"]);
    } else {
        expected.extend(["signals", "loopback"]);
    }
    expected.extend([
        "hostname",
        "rlimits",
        "worker_signals",
        "identity",
        "worker_parent_death",
        "cwd",
        "no_new_privs",
        "landlock",
        "seccomp",
        "exec",
    ]);
    assert_eq!(stages, expected);
    assert!(r.stages.iter().all(|s| s.outcome == "ok"), "{:?}", r.stages);
    // The report and the summary fit the canonical profile of signed receipts.
    let bytes = r.to_canonical().unwrap();
    assert!(canonical::is_canonical(&bytes));
    let summary = canonical::to_canonical_from(&out.summary()).unwrap();
    assert!(canonical::is_canonical(&summary));
    let text = String::from_utf8(summary).unwrap();
    assert!(text.contains("\"stdout_sha256\":\"sha256:"));
}

#[test]
fn cgroup_requirement_matches_what_this_host_delegates() {
    let fx = fixture();
    let pkg = fx.package("hello", HELLO);
    let env = fx.envelope();
    let mut req = request(
        &pkg,
        declared(&[], NetworkEgress::None, &[]),
        r#"{"name":"x"}"#,
        UID_BASE,
    );
    req.minimums.cgroup = Minimum::Required;
    let probe = env.probe().cgroup.clone();
    match env.run(&req) {
        Ok(out) => {
            assert!(probe.memory && probe.pids && probe.kill);
            assert_eq!(out.report.cgroup.effective, Effective::Enforced);
            assert_eq!(out.report.cgroup.memory_max, Some(req.limits.memory_bytes));
            assert_eq!(out.peak_memory_source, "cgroup");
        }
        Err(e) => {
            // This machine: memory and pids are bound to cgroup v1, so it must refuse.
            assert!(!(probe.memory && probe.pids && probe.kill), "{e}");
            assert_eq!(e.code(), "DENY_ENVELOPE_REQUIREMENT_UNMET");
            assert!(matches!(
                e,
                EnvelopeError::RequirementUnmet {
                    feature: Feature::Cgroup,
                    ..
                }
            ));
            assert!(e.to_string().contains("controller"), "{e}");
        }
    }
}

#[test]
fn best_effort_cgroup_says_why_limits_are_not_enforced() {
    let fx = fixture();
    let pkg = fx.package("hello", HELLO);
    let env = fx.envelope();
    let req = request(
        &pkg,
        declared(&[], NetworkEgress::None, &[]),
        r#"{"name":"x"}"#,
        UID_BASE,
    );
    let out = env.run(&req).unwrap();
    let cg = &out.report.cgroup;
    assert_eq!(cg.requested, Minimum::BestEffort);
    let p = &env.probe().cgroup;
    if p.memory && p.pids && p.kill {
        assert_eq!(cg.effective, Effective::Enforced);
    } else if p.leaf_ok {
        assert_eq!(cg.effective, Effective::Partial);
        assert!(cg.kill && cg.born_in_leaf);
        assert_eq!(cg.memory_max, None);
        let why = cg.memory_reason.as_deref().unwrap();
        if p.v1_controllers.iter().any(|c| c == "memory") {
            assert!(why.contains("cgroup v1"), "{why}");
        }
        assert!(out.report.degraded.iter().any(|d| d.starts_with("cgroup:")));
        // CPU time still comes from the leaf's cpu.stat.
        assert_eq!(out.cpu_time_source, "cgroup");
    } else {
        assert_eq!(cg.effective, Effective::NotEnforced);
    }
}

#[test]
fn a_failing_stage_is_named_with_its_errno() {
    let fx = fixture();
    let pkg = fx.package("native", "unused\n");
    let mut req = request(
        &pkg,
        declared(&[], NetworkEgress::None, &[]),
        "{}",
        UID_BASE,
    );
    // /bin/true needs the dynamic loader, which this runtime does not grant: exec fails.
    req.bootstrap = Bootstrap::Native {
        program: "/bin/true".into(),
        args: vec![],
    };
    req.runtime = RuntimePaths::default();
    let e = fx.envelope().run(&req).unwrap_err();
    match &e {
        EnvelopeError::StageFailed {
            stage,
            errno,
            report,
            ..
        } => {
            assert_eq!(stage, "exec");
            assert_eq!(*errno, nix::libc::EACCES);
            let last = report.stages.last().unwrap();
            assert_eq!(
                (last.stage.as_str(), last.outcome.as_str()),
                ("exec", "failed")
            );
            assert_eq!(last.process, "worker");
            assert!(
                report
                    .stages
                    .iter()
                    .any(|s| s.stage == "landlock" && s.outcome == "ok")
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(e.code(), "DENY_ENVELOPE_STAGE_FAILED");
}

#[test]
fn a_trivial_native_bootstrap_runs_with_the_full_envelope() {
    let fx = fixture();
    let pkg = fx.package("native", "unused\n");
    let mut req = request(
        &pkg,
        declared(&[], NetworkEgress::None, &[]),
        "{}",
        UID_BASE,
    );
    req.bootstrap = Bootstrap::Native {
        program: "/bin/true".into(),
        args: vec![],
    };
    req.runtime = wcp_hall::envelope::native::runtime_for(std::path::Path::new("/bin/true"))
        .expect("/bin/true's loader");
    let out = fx.envelope().run(&req).unwrap();
    assert!(out.success(), "{:?}", out.exit);
    assert!(out.report.degraded.iter().all(|d| d.starts_with("cgroup:")));
}

#[test]
fn declared_writes_land_in_the_run_dir_owned_by_the_worker() {
    let fx = fixture();
    let pkg = fx.package(
        "writer",
        "import os\nd = os.environ['WCP_WRITE_DIRS'].split(':')[0]\n\
open(os.path.join(d, 'result.txt'), 'w').write('written')\nprint('{}')\n",
    );
    let mut host = fx.host();
    host.keep_run_dirs = true;
    let env = wcp_hall::envelope::Envelope::new(host).unwrap();
    let req = request(
        &pkg,
        declared(&["out/"], NetworkEgress::None, &[]),
        "{}",
        UID_BASE,
    );
    let uid = req.identity.unwrap().uid;
    let out = env.run(&req).unwrap();
    assert!(out.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let granted = &out.report.filesystem.writes[0].granted;
    let file = std::path::Path::new(granted).join("result.txt");
    assert_eq!(fs::read_to_string(&file).unwrap(), "written");
    assert_eq!(fs::metadata(&file).unwrap().uid(), uid);
    let meta = fs::metadata(granted).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o700);

    // Without keep_run_dirs the run directory is gone afterwards.
    let out = fx.envelope().run(&req).unwrap();
    assert!(!std::path::Path::new(&out.report.filesystem.work_dir).exists());
}

#[test]
fn the_request_on_stdin_cannot_be_rewritten() {
    let fx = fixture();
    let pkg = fx.package(
        "stdin-writer",
        "import json, os, sys\ntry:\n    os.pwrite(0, b'tampered', 0)\n    r = 'written'\n\
except OSError as e:\n    r = e.errno\nprint(json.dumps({'write': r, 'req': json.load(sys.stdin)}))\n",
    );
    let req = request(
        &pkg,
        declared(&[], NetworkEgress::None, &[]),
        r#"{"a":1}"#,
        UID_BASE,
    );
    let out = fx.envelope().run(&req).unwrap();
    let v = out.result_json().unwrap();
    assert_eq!(v["write"], nix::libc::EPERM, "sealed memfd: {v}");
    assert_eq!(v["req"]["a"], 1);
}

#[test]
fn secrets_must_be_hall_owned_private_files() {
    let fx = fixture();
    let pkg = fx.package("hello", HELLO);
    let env = fx.envelope();
    let req = request(
        &pkg,
        declared(&[], NetworkEgress::None, &["db"]),
        "{}",
        UID_BASE,
    );
    // Missing.
    let e = env.run(&req).unwrap_err();
    assert_eq!(e.code(), "DENY_ENVELOPE_SECRET_UNAVAILABLE", "{e}");
    // World-readable.
    let p = fx.secrets.join("db");
    fs::write(&p, "pw").unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
    let e = env.run(&req).unwrap_err();
    assert!(e.to_string().contains("chmod 600"), "{e}");
    // A symlink to a private file is refused too (O_NOFOLLOW).
    fs::remove_file(&p).unwrap();
    let real = fx.secrets.join("real");
    fs::write(&real, "pw").unwrap();
    fs::set_permissions(&real, fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::symlink(&real, &p).unwrap();
    assert_eq!(
        env.run(&req).unwrap_err().code(),
        "DENY_ENVELOPE_SECRET_UNAVAILABLE"
    );
}

#[test]
fn concurrent_runs_from_several_threads_stay_apart() {
    let fx = fixture();
    let pkg = fx.package("hello", HELLO);
    let env = fx.envelope();
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let env = env.clone();
            let req = request(
                &pkg,
                declared(&["out"], NetworkEgress::None, &[]),
                &format!(r#"{{"name":"n{i}"}}"#),
                UID_BASE,
            );
            std::thread::spawn(move || env.run(&req).unwrap())
        })
        .collect();
    let mut run_ids = std::collections::BTreeSet::new();
    for (i, h) in handles.into_iter().enumerate() {
        let out = h.join().unwrap();
        assert_eq!(
            out.result_json().unwrap()["greeting"],
            format!("hello n{i}")
        );
        run_ids.insert(out.report.run_id.clone());
    }
    assert_eq!(run_ids.len(), 4);
}

#[test]
fn a_missing_package_or_bootstrap_is_an_invalid_request() {
    let fx = fixture();
    let env = fx.envelope();
    let missing = fx.store.join("nope");
    let req = request(
        &missing,
        declared(&[], NetworkEgress::None, &[]),
        "{}",
        UID_BASE,
    );
    assert_eq!(
        env.run(&req).unwrap_err().code(),
        "DENY_ENVELOPE_INVALID_REQUEST"
    );
    let empty = fx.store.join("empty");
    fs::create_dir(&empty).unwrap();
    let req = request(
        &empty,
        declared(&[], NetworkEgress::None, &[]),
        "{}",
        UID_BASE,
    );
    let e = env.run(&req).unwrap_err();
    assert!(e.to_string().contains("code/bootstrap.py"), "{e}");
}

#[test]
fn best_effort_off_features_are_reported_off() {
    let fx = fixture();
    let pkg = fx.package("hello", HELLO);
    let mut req = request(
        &pkg,
        declared(&[], NetworkEgress::None, &[]),
        r#"{"name":"x"}"#,
        UID_BASE,
    );
    req.minimums.seccomp = Minimum::Off;
    req.minimums.landlock = Minimum::Off;
    let out = fx.envelope().run(&req).unwrap();
    assert!(out.success());
    assert_eq!(out.report.seccomp.effective, Effective::Off);
    assert_eq!(out.report.landlock.effective, Effective::Off);
    assert_eq!(
        out.report.observed.seccomp,
        Some(0),
        "the kernel agrees: no filter"
    );
    assert!(!out.report.stages.iter().any(|s| s.stage == "seccomp"));
}

#[test]
fn a_runs_directory_someone_else_controls_is_refused() {
    let fx = fixture();
    let pkg = fx.package("hello", HELLO);
    // Group- and world-writable, as if pre-created in a shared directory.
    fs::create_dir(&fx.runs).unwrap();
    fs::set_permissions(&fx.runs, fs::Permissions::from_mode(0o777)).unwrap();
    let req = request(
        &pkg,
        declared(&[], NetworkEgress::None, &[]),
        r#"{"name":"x"}"#,
        UID_BASE,
    );
    let e = fx.envelope().run(&req).unwrap_err();
    assert_eq!(e.code(), "DENY_ENVELOPE_INTERNAL");
    assert!(e.to_string().contains("writable by no one else"), "{e}");
    // Owned by another uid.
    fs::set_permissions(&fx.runs, fs::Permissions::from_mode(0o711)).unwrap();
    std::os::unix::fs::chown(&fx.runs, Some(65534), None).unwrap();
    assert!(fx.envelope().run(&req).is_err());
    std::os::unix::fs::chown(&fx.runs, Some(0), None).unwrap();
    assert!(fx.envelope().run(&req).unwrap().success());
}

#[test]
#[allow(unsafe_code)] // prctl(PR_GET_DUMPABLE) through libc
fn the_hall_ends_up_non_dumpable_after_a_uid_switch() {
    // The worker switches uid while it still shares the Hall's address space (vfork-style), and
    // the kernel marks that address space non-dumpable (as hardened daemons do on purpose):
    // non-root processes can then never ptrace or read the Hall's memory.
    let fx = fixture();
    let pkg = fx.package("hello", HELLO);
    let req = request(
        &pkg,
        declared(&[], NetworkEgress::None, &[]),
        r#"{"name":"x"}"#,
        UID_BASE,
    );
    assert!(fx.envelope().run(&req).unwrap().success());
    // SAFETY: an integer-argument prctl that only reads this process's flag.
    let dumpable = unsafe { nix::libc::prctl(nix::libc::PR_GET_DUMPABLE) };
    assert_eq!(dumpable, 0);
}

#[test]
fn threads_work_while_clone3_answers_enosys() {
    // clone3's flags sit behind a pointer seccomp cannot read, so it gets ENOSYS and glibc falls
    // back to clone, whose namespace flags the filter can check: threads must still work.
    let fx = fixture();
    let pkg = fx.package(
        "threads",
        "import ctypes, json, threading\n\
libc = ctypes.CDLL(None, use_errno=True)\n\
r = libc.syscall(435, None, 0)\n\
err = ctypes.get_errno()\n\
out = []\n\
t = threading.Thread(target=lambda: out.append('thread ran'))\n\
t.start(); t.join()\n\
print(json.dumps({'clone3': [r, err], 'thread': out}))\n",
    );
    let req = request(
        &pkg,
        declared(&[], NetworkEgress::None, &[]),
        "{}",
        UID_BASE,
    );
    let out = fx.envelope().run(&req).unwrap();
    let v = out
        .result_json()
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(v["clone3"], serde_json::json!([-1, nix::libc::ENOSYS]));
    assert_eq!(v["thread"], serde_json::json!(["thread ran"]));
}

#[test]
fn stale_run_directories_and_empty_leaves_are_swept_at_start_up() {
    let fx = fixture();
    // Its own cgroup parent: sweeping the shared test parent could remove another test's leaf
    // in the instant between its creation and the clone into it.
    let mut host = fx.host();
    host.cgroup_parent = cgroup_parent().map(|p| {
        let own = p.join(format!("sweep-{}", std::process::id()));
        fs::create_dir_all(&own).unwrap();
        own
    });
    let own_parent = host.cgroup_parent.clone();
    let env = wcp_hall::envelope::Envelope::new(host).unwrap();
    // What a Hall that died mid-run leaves: a run directory with a worker's file in it, and an
    // empty cgroup leaf.
    let stale = fx.runs.join("01900000-0000-7000-8000-000000000000");
    fs::create_dir_all(stale.join("work/out")).unwrap();
    fs::write(stale.join("work/out/partial.txt"), "x").unwrap();
    let parent = env.probe().cgroup.parent.clone();
    let leaf = parent.as_ref().map(|p| {
        std::path::Path::new(p).join(format!(
            "{}01900000-0000-7000-8000-000000000000",
            env.host().leaf_prefix()
        ))
    });
    if let Some(l) = &leaf {
        fs::create_dir(l).unwrap();
    }
    // Another Hall's leaf under the same parent (its runs directory differs), created an
    // instant before its clone: never this Hall's to remove.
    let other_host = wcp_hall::envelope::HostConfig::new("/var/lib/another-hall/runs");
    assert_ne!(other_host.leaf_prefix(), env.host().leaf_prefix());
    let foreign = parent.as_ref().map(|p| {
        std::path::Path::new(p).join(format!(
            "{}01900000-0000-7000-8000-000000000001",
            other_host.leaf_prefix()
        ))
    });
    if let Some(l) = &foreign {
        fs::create_dir(l).unwrap();
    }
    let removed = env.sweep_stale();
    assert!(!stale.exists());
    if let Some(l) = &leaf {
        assert!(!l.exists());
    }
    if let Some(l) = &foreign {
        assert!(l.exists(), "another Hall's leaf was removed");
        fs::remove_dir(l).unwrap();
    }
    assert_eq!(removed, 1 + usize::from(leaf.is_some()));
    if let Some(p) = own_parent {
        let _ = fs::remove_dir(p);
    }
}
