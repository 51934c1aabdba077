//! Table tests for planning: every minimum against hosts that can and cannot give it.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::*;
use crate::envelope::probe::{CgroupProbe, LandlockProbe, NamespaceProbe, SeccompProbe};
use crate::envelope::types::{Limits, Minimums};
use crate::registry::PrivilegeEnvelope;

pub(crate) fn full_probe() -> Probe {
    Probe {
        kernel_release: "6.18.0".into(),
        hall_uid: 0,
        hall_gid: 0,
        hall_groups: Vec::new(),
        landlock: LandlockProbe {
            kernel_abi: 7,
            status: "available".into(),
        },
        landlock_abi_requested: LANDLOCK_ABI_REQUESTED,
        seccomp: SeccompProbe {
            filter: true,
            reason: None,
        },
        namespaces: NamespaceProbe {
            user: true,
            pid: true,
            net: true,
            ipc: true,
            uts: true,
            mnt: true,
            errors: BTreeMap::new(),
        },
        cgroup: CgroupProbe {
            v2_mount: Some("/sys/fs/cgroup".into()),
            parent: Some("/sys/fs/cgroup/hall.service/runs".into()),
            leaf_ok: true,
            kill: true,
            clone_into_cgroup: true,
            memory: true,
            pids: true,
            leaf_controllers: vec!["memory".into(), "pids".into()],
            v1_controllers: vec![],
            reason: None,
        },
    }
}

/// This machine: memory and pids on cgroup v1.
fn hybrid_probe() -> Probe {
    let mut p = full_probe();
    p.cgroup.memory = false;
    p.cgroup.pids = false;
    p.cgroup.leaf_controllers = vec![];
    p.cgroup.v1_controllers = vec!["memory".into(), "pids".into()];
    p.cgroup.reason = Some("the memory controller is bound to cgroup v1".into());
    p
}

fn no_landlock() -> Probe {
    let mut p = full_probe();
    p.landlock = LandlockProbe {
        kernel_abi: 0,
        status: "disabled_at_boot".into(),
    };
    p
}

pub(crate) fn host() -> HostConfig {
    let mut h = HostConfig::new("/var/lib/wcp-hall/runs");
    h.secrets_dir = Some(PathBuf::from("/etc/wcp-hall/secrets"));
    h
}

fn envelope(writes: &[&str], egress: NetworkEgress) -> PrivilegeEnvelope {
    PrivilegeEnvelope {
        secrets_access: vec![],
        network_egress: egress,
        filesystem_writes: writes.iter().map(|s| s.to_string()).collect(),
        tools: vec![],
    }
}

pub(crate) fn req() -> RunRequest {
    RunRequest::python(
        "/var/lib/wcp-hall/store/pkg",
        envelope(&[], NetworkEgress::None),
        b"{}".to_vec(),
        "0190a5b2-7c3d-7e4f-8a9b-0c1d2e3f4a5b",
        &crate::envelope::python::debian_fixture(),
    )
}

pub(crate) fn ctx() -> PlanContext {
    PlanContext {
        run_id: "run-1".into(),
        span_id: [1, 2, 3, 4, 5, 6, 7, 8],
    }
}

pub(crate) fn run(r: &RunRequest, p: &Probe) -> Result<(Plan, EnvelopeReport), EnvelopeError> {
    plan(r, &host(), p, &ctx())
}

fn unmet(e: EnvelopeError) -> Feature {
    match e {
        EnvelopeError::RequirementUnmet { feature, .. } => feature,
        other => panic!("expected RequirementUnmet, got {other:?}"),
    }
}

#[test]
fn production_on_a_full_host_enforces_everything() {
    let (plan, report) = run(&req(), &full_probe()).unwrap();
    assert!(plan.namespaces.pid && plan.namespaces.net && plan.namespaces.ipc);
    assert!(!plan.namespaces.user, "root needs no user namespace");
    assert_eq!(plan.identity, Some(Identity::NOBODY));
    let ll = plan.landlock.as_ref().unwrap();
    assert_eq!(ll.abi, 6);
    assert_eq!(ll.tcp, Some(vec![]));
    assert!(ll.scopes);
    assert_eq!(plan.seccomp, Some((SeccompMode::Base, true)));
    assert!(plan.cgroup.is_some());
    for e in [
        report.landlock.effective,
        report.network.effective,
        report.seccomp.effective,
        report.pid_namespace.effective,
        report.cgroup.effective,
        report.identity.effective,
    ] {
        assert_eq!(e, Effective::Enforced);
    }
    assert!(report.degraded.is_empty(), "{:?}", report.degraded);
    assert_eq!(report.landlock.abi_kernel, 7);
    assert_eq!(report.landlock.abi_effective, 6);
    crate::crypto::canonical::to_canonical_from(&report).unwrap();
}

#[test]
fn every_required_minimum_refuses_when_missing() {
    let r = req();
    assert_eq!(
        unmet(run(&r, &no_landlock()).unwrap_err()),
        Feature::Landlock
    );

    let mut old = full_probe();
    old.landlock.kernel_abi = 3;
    assert_eq!(unmet(run(&r, &old).unwrap_err()), Feature::Landlock);

    let mut p = full_probe();
    p.seccomp.filter = false;
    assert_eq!(unmet(run(&r, &p).unwrap_err()), Feature::Seccomp);

    let mut p = full_probe();
    p.namespaces.pid = false;
    assert_eq!(unmet(run(&r, &p).unwrap_err()), Feature::PidNamespace);

    let mut p = full_probe();
    p.namespaces.net = false;
    assert_eq!(unmet(run(&r, &p).unwrap_err()), Feature::NetworkIsolation);

    let mut strict = req();
    strict.minimums.cgroup = Minimum::Required;
    assert_eq!(
        unmet(run(&strict, &hybrid_probe()).unwrap_err()),
        Feature::Cgroup
    );
}

#[test]
fn refusals_carry_a_stable_code_and_a_hint() {
    let e = run(&req(), &no_landlock()).unwrap_err();
    assert_eq!(e.code(), "DENY_ENVELOPE_REQUIREMENT_UNMET");
    assert!(e.to_string().contains("disabled_at_boot"), "{e}");
    assert!(e.hint().unwrap().contains("best_effort"));
}

#[test]
fn best_effort_degradations_are_reported_never_silent() {
    let mut r = req();
    r.minimums = Minimums::best_effort();
    let mut p = hybrid_probe();
    p.landlock.kernel_abi = 3;
    p.namespaces.net = false;
    let (plan, report) = run(&r, &p).unwrap();
    assert_eq!(report.landlock.effective, Effective::Partial);
    assert_eq!(report.landlock.abi_effective, 3);
    assert_eq!(
        plan.landlock.as_ref().unwrap().tcp,
        None,
        "ABI 3 has no TCP rules"
    );
    // No network namespace: fall back to a seccomp ban of IP sockets, and say so.
    assert_eq!(report.network.effective, Effective::Partial);
    assert_eq!(report.network.mode, "seccomp_no_inet");
    assert_eq!(plan.seccomp, Some((SeccompMode::NoInet, false)));
    assert_eq!(report.cgroup.effective, Effective::Partial);
    assert!(plan.cgroup.is_some(), "the leaf still gives cgroup.kill");
    let text = report.degraded.join("\n");
    for feature in ["landlock:", "network_isolation:", "cgroup:"] {
        assert!(text.contains(feature), "{text}");
    }
}

#[test]
fn best_effort_without_landlock_reports_not_enforced() {
    let mut r = req();
    r.minimums = Minimums::best_effort();
    let (plan, report) = run(&r, &no_landlock()).unwrap();
    assert!(plan.landlock.is_none());
    assert_eq!(report.landlock.effective, Effective::NotEnforced);
    assert!(report.landlock.reason.unwrap().contains("disabled_at_boot"));
}

#[test]
fn off_means_off_and_the_report_says_so() {
    let mut r = req();
    r.minimums = Minimums {
        landlock: Minimum::Off,
        network_isolation: Minimum::Off,
        seccomp: Minimum::Off,
        pid_namespace: Minimum::Off,
        cgroup: Minimum::Off,
        unprivileged_user: Minimum::Off,
    };
    let (plan, report) = run(&r, &full_probe()).unwrap();
    assert!(plan.landlock.is_none() && plan.seccomp.is_none() && plan.cgroup.is_none());
    assert_eq!(plan.namespaces, NamespacePlan::default());
    assert_eq!(plan.identity, None);
    assert_eq!(report.identity.uid, 0);
    for e in [
        report.landlock.effective,
        report.network.effective,
        report.seccomp.effective,
        report.pid_namespace.effective,
        report.cgroup.effective,
        report.identity.effective,
    ] {
        assert_eq!(e, Effective::Off);
    }
    assert!(report.degraded.is_empty());
}

#[test]
fn allowlist_is_ports_plus_a_udp_ban_and_hosts_are_not_claimed() {
    let mut r = req();
    r.privilege_envelope.network_egress =
        NetworkEgress::Allowlist(vec!["api.example.com:443".into(), "10.0.0.7:8443".into()]);
    let (plan, report) = run(&r, &full_probe()).unwrap();
    assert!(!plan.namespaces.net);
    assert_eq!(
        plan.landlock.as_ref().unwrap().tcp,
        Some(vec![53, 443, 8443]),
        "53 for DNS over TCP because a host is a name"
    );
    assert_eq!(plan.seccomp, Some((SeccompMode::NoUdp, true)));
    assert!(plan.env.contains(&("RES_OPTIONS".into(), "use-vc".into())));
    assert!(!report.network.hosts_enforced);
    assert_eq!(report.network.effective, Effective::Enforced);

    // IP literals only: no DNS port.
    r.privilege_envelope.network_egress = NetworkEgress::Allowlist(vec!["[::1]:9000".into()]);
    let (plan, _) = run(&r, &full_probe()).unwrap();
    assert_eq!(plan.landlock.unwrap().tcp, Some(vec![9000]));

    // Required but Landlock off in the profile: refuse, naming why.
    r.minimums.landlock = Minimum::Off;
    let e = run(&r, &full_probe()).unwrap_err();
    assert!(e.to_string().contains("Landlock is off"), "{e}");
}

#[test]
fn declared_writes_are_mapped_under_the_run_dir() {
    let mut r = req();
    r.privilege_envelope = envelope(
        &["out/", "/var/cache/x", "a/./b", "out"],
        NetworkEgress::None,
    );
    let (plan, report) = run(&r, &full_probe()).unwrap();
    let granted: Vec<_> = plan.writes.iter().map(|w| w.path.clone()).collect();
    let work = PathBuf::from("/var/lib/wcp-hall/runs/run-1/work");
    assert_eq!(
        granted,
        vec![work.join("out"), work.join("var/cache/x"), work.join("a/b")]
    );
    assert!(plan.writes[1].mapped);
    assert!(report.filesystem.writes[1].mapped);
    let rules = &plan.landlock.unwrap().fs_rules;
    assert!(rules.contains(&FsRule {
        path: work.join("out"),
        access: FsAccess::ReadWrite,
        opened: None,
    }));
    assert!(rules.contains(&FsRule {
        path: PathBuf::from("/var/lib/wcp-hall/store/pkg"),
        access: FsAccess::Read,
        opened: None,
    }));
    assert!(
        !rules.iter().any(|r| r.path == work),
        "the work dir itself is not writable"
    );
}

#[test]
fn absolute_writes_in_place_need_policy_and_cannot_cover_the_package() {
    let mut r = req();
    r.allow_absolute_writes = true;
    r.privilege_envelope = envelope(&["/srv/out"], NetworkEgress::None);
    let (plan, _) = run(&r, &full_probe()).unwrap();
    assert_eq!(plan.writes[0].path, PathBuf::from("/srv/out"));
    assert!(!plan.writes[0].under_run_dir);
    for bad in ["/", "/var/lib/wcp-hall", "/var/lib/wcp-hall/store/pkg/code"] {
        r.privilege_envelope = envelope(&[bad], NetworkEgress::None);
        let e = run(&r, &full_probe()).unwrap_err();
        assert_eq!(e.code(), "DENY_ENVELOPE_INVALID_REQUEST", "{bad}");
    }
}

#[test]
fn bad_requests_are_typed_errors() {
    type Mutate = Box<dyn Fn(&mut RunRequest)>;
    let cases: Vec<(&str, Mutate)> = vec![
        (
            "package_dir",
            Box::new(|r| r.package_dir = "relative/pkg".into()),
        ),
        (
            "correlation_id",
            Box::new(|r| r.correlation_id = "has space".into()),
        ),
        (
            "correlation_id",
            Box::new(|r| r.correlation_id = String::new()),
        ),
        (
            "traceparent",
            Box::new(|r| r.traceparent = Some("01-abc".into())),
        ),
        (
            "limits.wall_timeout_ms",
            Box::new(|r| r.limits.wall_timeout_ms = 0),
        ),
        (
            "limits.memory_bytes",
            Box::new(|r| r.limits.memory_bytes = 1 << 60),
        ),
        (
            "limits.max_output_bytes",
            Box::new(|r| r.limits.max_output_bytes = 1 << 40),
        ),
        (
            "privilege_envelope.filesystem_writes[0]",
            Box::new(|r| r.privilege_envelope.filesystem_writes = vec!["../escape".into()]),
        ),
        (
            "privilege_envelope.tools[0]",
            Box::new(|r| r.privilege_envelope.tools = vec!["bin/sh".into()]),
        ),
        (
            "privilege_envelope.secrets_access",
            Box::new(|r| r.privilege_envelope.secrets_access = vec!["a.b".into(), "a-b".into()]),
        ),
        (
            "identity",
            Box::new(|r| r.identity = Some(Identity { uid: 0, gid: 1 })),
        ),
        (
            "runtime.read[0]",
            Box::new(|r| r.runtime.read = vec!["lib".into()]),
        ),
    ];
    for (field, mutate) in cases {
        let mut r = req();
        mutate(&mut r);
        match run(&r, &full_probe()) {
            Err(EnvelopeError::InvalidRequest { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{field}: {other:?}"),
        }
    }
}

#[test]
fn secrets_need_a_secrets_directory() {
    let mut r = req();
    r.privilege_envelope.secrets_access = vec!["db".into()];
    let mut h = host();
    h.secrets_dir = None;
    let e = plan(&r, &h, &full_probe(), &ctx()).unwrap_err();
    assert_eq!(e.code(), "DENY_ENVELOPE_SECRET_UNAVAILABLE");
    let (plan, report) = run(&r, &full_probe()).unwrap();
    assert_eq!(plan.secrets[0].env_key, "WCP_SECRET_DB");
    assert!(
        report
            .environment
            .keys
            .contains(&"WCP_SECRET_DB".to_owned())
    );
}

#[test]
fn environment_is_an_explicit_allowlist_with_trace_context() {
    let (plan, _) = run(&req(), &full_probe()).unwrap();
    let env: BTreeMap<_, _> = plan.env.iter().cloned().collect();
    assert_eq!(
        env["TRACEPARENT"], "00-0190a5b27c3d7e4f8a9b0c1d2e3f4a5b-0102030405060708-01",
        "a UUID correlation id is the trace id"
    );
    assert_eq!(
        env["WCP_CORRELATION_ID"],
        "0190a5b2-7c3d-7e4f-8a9b-0c1d2e3f4a5b"
    );
    assert_eq!(env["TMPDIR"], "/var/lib/wcp-hall/runs/run-1/tmp");
    assert!(env["PYTHONPYCACHEPREFIX"].ends_with("/pycache"));
    let mut r = req();
    r.correlation_id = "not-a-uuid".into();
    let (plan, _) = run(&r, &full_probe()).unwrap();
    let tp = &plan.env.iter().find(|(k, _)| k == "TRACEPARENT").unwrap().1;
    assert_eq!(tp.len(), 55);
    check_traceparent(tp).unwrap();
    let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    r.traceparent = Some(incoming.into());
    let (plan, _) = run(&r, &full_probe()).unwrap();
    let tp = &plan.env.iter().find(|(k, _)| k == "TRACEPARENT").unwrap().1;
    assert_eq!(
        tp, incoming,
        "an incoming traceparent is handed on as it is"
    );
}

#[test]
fn python_bootstrap_isolates_env_and_pycache() {
    let (plan, report) = run(&req(), &full_probe()).unwrap();
    assert_eq!(
        plan.argv,
        vec![
            "/usr/bin/python3.11",
            "-E",
            "-s",
            "-B",
            "-X",
            "pycache_prefix=/var/lib/wcp-hall/runs/run-1/pycache",
            "/var/lib/wcp-hall/store/pkg/code/bootstrap.py",
        ]
    );
    assert_eq!(
        plan.work_dir,
        PathBuf::from("/var/lib/wcp-hall/runs/run-1/work")
    );
    // The report names the probed runtime; the interpreter and its loader are the only
    // executables, and every derived read path is a rule.
    assert_eq!(report.bootstrap.runtime.as_deref(), Some("cpython 3.11.2"));
    let rules = plan.landlock.unwrap().fs_rules;
    let exec: Vec<_> = rules
        .iter()
        .filter(|r| r.access == FsAccess::ReadExecute)
        .map(|r| r.path.display().to_string())
        .collect();
    assert_eq!(
        exec,
        vec![
            "/usr/bin/python3.11",
            "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
        ]
    );
    for p in &crate::envelope::python::debian_fixture().paths.read {
        assert!(
            rules
                .iter()
                .any(|r| &r.path == p && r.access == FsAccess::Read),
            "{}",
            p.display()
        );
    }
}

#[test]
fn a_non_root_hall_uses_a_user_namespace_and_keeps_its_uid() {
    let mut p = full_probe();
    p.hall_uid = 1000;
    p.hall_gid = 1000;
    let (plan, report) = run(&req(), &p).unwrap();
    assert!(plan.namespaces.user && plan.namespaces.pid && plan.namespaces.net);
    assert_eq!(plan.identity, None);
    assert_eq!(report.identity.uid, 1000);
    assert_eq!(report.identity.effective, Effective::Enforced);
    // Without user namespaces nothing else can be created.
    p.namespaces.user = false;
    p.namespaces.errors.insert("user".into(), "EPERM".into());
    assert_eq!(unmet(run(&req(), &p).unwrap_err()), Feature::PidNamespace);
    let mut r = req();
    r.identity = Some(Identity { uid: 5, gid: 5 });
    p.namespaces.user = true;
    assert_eq!(
        run(&r, &p).unwrap_err().code(),
        "DENY_ENVELOPE_INVALID_REQUEST"
    );
}

#[test]
fn rlimits_come_from_the_limits_and_core_is_zero() {
    let mut r = req();
    r.limits = Limits {
        wall_timeout_ms: 1000,
        cpu_seconds: 2,
        memory_bytes: 100 << 20,
        max_processes: 8,
        max_open_files: 32,
        max_file_size_bytes: 4096,
        max_output_bytes: 1024,
    };
    let (plan, report) = run(&r, &full_probe()).unwrap();
    let get = |n: &str| plan.rlimits.iter().find(|l| l.name == n).unwrap();
    assert_eq!((get("cpu").soft, get("cpu").hard), (2, 3));
    assert_eq!(get("as").soft, 100 << 20);
    assert_eq!(get("nproc").soft, 8);
    assert_eq!(get("nofile").soft, 32);
    assert_eq!(get("fsize").soft, 4096);
    assert_eq!((get("core").soft, get("core").hard), (0, 0));
    assert_eq!(report.rlimits.len(), 6);
}

#[test]
fn native_bootstrap_gets_execute_on_its_program_only() {
    let mut r = req();
    r.bootstrap = Bootstrap::Native {
        program: "/bin/true".into(),
        args: vec!["--x".into()],
    };
    r.runtime = crate::envelope::native::for_loader(
        std::path::Path::new("/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"),
        true,
    );
    let (plan, report) = run(&r, &full_probe()).unwrap();
    assert_eq!(plan.argv, vec!["/bin/true", "--x"]);
    assert_eq!(report.bootstrap.runtime, None);
    let rules = plan.landlock.unwrap().fs_rules;
    let exec: Vec<_> = rules
        .iter()
        .filter(|r| r.access == FsAccess::ReadExecute)
        .map(|r| r.path.display().to_string())
        .collect();
    assert_eq!(
        exec,
        vec![
            "/bin/true",
            "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
        ]
    );
}

#[test]
fn secret_names_map_to_environment_keys() {
    assert_eq!(
        secret_env_key("db.password").unwrap(),
        "WCP_SECRET_DB_PASSWORD"
    );
    assert_eq!(secret_env_key("API-key").unwrap(), "WCP_SECRET_API_KEY");
    for bad in ["", ".hidden", "a/b", "a b", &"x".repeat(65)] {
        assert!(secret_env_key(bad).is_err(), "{bad}");
    }
}

#[test]
fn a_non_root_halls_supplementary_groups_are_not_a_met_minimum() {
    let mut p = full_probe();
    p.hall_uid = 1000;
    p.hall_gid = 1000;
    p.hall_groups = vec![27, 998];
    // Required (production): refused, with the groups named.
    let mut r = req();
    r.minimums.unprivileged_user = Minimum::Required;
    let e = run(&r, &p).unwrap_err();
    assert!(e.to_string().contains("[27, 998]"), "{e}");
    assert_eq!(unmet(e), Feature::UnprivilegedUser);
    // Best effort: runs, reported partial, never "enforced".
    r.minimums.unprivileged_user = Minimum::BestEffort;
    let (_, report) = run(&r, &p).unwrap();
    assert_eq!(report.identity.effective, Effective::Partial);
    assert_eq!(report.identity.supplementary_groups, "inherited: 27,998");
    assert!(
        report
            .degraded
            .iter()
            .any(|d| d.starts_with("unprivileged_user"))
    );
    // Without supplementary groups nothing is inherited.
    p.hall_groups.clear();
    let (_, report) = run(&r, &p).unwrap();
    assert_eq!(report.identity.effective, Effective::Enforced);
    assert_eq!(report.identity.supplementary_groups, "none");
}

#[test]
fn the_halls_socket_is_hidden_by_a_mount_namespace_or_the_report_says_why_not() {
    let mut h = host();
    h.hidden_paths = vec![PathBuf::from("/run/wcp-hall/hall.sock")];
    let mut p = full_probe();
    let (pl, report) = plan(&req(), &h, &p, &ctx()).unwrap();
    assert!(pl.namespaces.mnt);
    assert_eq!(pl.hidden, h.hidden_paths);
    assert!(report.namespaces.mount);
    assert!(
        report
            .namespaces
            .mount_reason
            .contains("/run/wcp-hall/hall.sock")
    );
    // A non-root Hall makes it inside its user namespace.
    p.hall_uid = 1000;
    p.hall_gid = 1000;
    let (pl, _) = plan(&req(), &h, &p, &ctx()).unwrap();
    assert!(pl.namespaces.user && pl.namespaces.mnt);
    // No mount namespaces on this host: the run goes on, and the report says the socket is
    // reachable by path (the Hall's peer check still applies).
    p.namespaces.mnt = false;
    p.namespaces.errors.insert("mnt".into(), "EPERM".into());
    let (pl, report) = plan(&req(), &h, &p, &ctx()).unwrap();
    assert!(!pl.namespaces.mnt && pl.hidden.is_empty());
    assert!(!report.namespaces.mount);
    assert!(report.namespaces.mount_reason.contains("reachable by path"));
    assert!(
        report
            .degraded
            .iter()
            .any(|d| d.starts_with("mount_namespace"))
    );
    // Nothing to hide: no mount namespace.
    let (pl, _) = run(&req(), &full_probe()).unwrap();
    assert!(!pl.namespaces.mnt);
}

#[test]
fn the_memory_bound_is_per_run_only_with_the_cgroup_memory_controller() {
    let l = req().limits;
    // A delegated memory controller: memory.max bounds the whole run.
    let (_, r) = run(&req(), &full_probe()).unwrap();
    assert_eq!(r.memory.scope, "run");
    assert_eq!(r.memory.source, "cgroup memory.max");
    assert_eq!(r.memory.enforced, "run");
    assert_eq!(r.memory.run_bound_bytes, Some(l.memory_bytes));
    assert_eq!(r.memory.reason, None);

    // Memory on cgroup v1 (best effort): only RLIMIT_AS, per process. The run as a whole is
    // bounded by RLIMIT_AS × RLIMIT_NPROC, and the report says so instead of implying more.
    let (_, r) = run(&req(), &hybrid_probe()).unwrap();
    let m = &r.memory;
    assert_eq!(m.scope, "per_process");
    assert_eq!(m.source, "RLIMIT_AS");
    assert_eq!(m.enforced, "per_process_only");
    assert_eq!(m.per_process_bytes, l.memory_bytes);
    assert_eq!(m.processes_max, Some(l.max_processes));
    assert_eq!(m.run_bound_bytes, Some(l.memory_bytes * l.max_processes));
    assert!(m.reason.as_deref().unwrap().contains("cgroup v1"), "{m:?}");
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["memory"]["enforced"], "per_process_only");
    assert_eq!(
        json["memory"]["run_bound_bytes"],
        l.memory_bytes * l.max_processes
    );
    assert!(
        r.degraded
            .iter()
            .any(|d| d.contains("no per-run memory bound")),
        "{:?}",
        r.degraded
    );

    // pids.max without memory.max: the process count is the cgroup's, the bound still per process.
    let mut pids_only = hybrid_probe();
    pids_only.cgroup.pids = true;
    let mut small = req();
    small.limits.max_processes = 8;
    let (_, r) = run(&small, &pids_only).unwrap();
    assert_eq!(r.memory.scope, "per_process");
    assert_eq!(r.memory.processes_max, Some(8));
    assert_eq!(r.memory.run_bound_bytes, Some(l.memory_bytes * 8));

    // The cgroup off: the same honest statement.
    let mut off = req();
    off.minimums.cgroup = Minimum::Off;
    let (_, r) = run(&off, &full_probe()).unwrap();
    assert_eq!(r.memory.scope, "per_process");
    assert!(
        r.memory
            .reason
            .as_deref()
            .unwrap()
            .contains("off in the profile")
    );

    // A profile that requires the cgroup requires a per-run memory bound: refused on a host that
    // has only per-process limits, and the refusal says that is what is missing.
    let mut required = req();
    required.minimums.cgroup = Minimum::Required;
    let e = run(&required, &hybrid_probe()).unwrap_err();
    assert!(e.to_string().contains("no per-run memory bound"), "{e}");
    assert_eq!(unmet(e), Feature::Cgroup);
    let mut no_memory = full_probe();
    no_memory.cgroup.memory = false;
    no_memory.cgroup.reason = None;
    let e = run(&required, &no_memory).unwrap_err();
    assert!(
        e.to_string()
            .contains("only the per-process RLIMIT_AS applies"),
        "{e}"
    );
}
