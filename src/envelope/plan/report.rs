//! Planning step, the last: the requested half of the envelope report, assembled from what the
//! other steps decided (the stages and observations are filled in while the run happens).
//!
//! Owns only the assembly and the parts no single step decides (package, bootstrap, filesystem
//! and process sections, the memory summary). It must not decide anything: every value comes
//! from a step, the request or the probe.

use super::super::report::*;
use super::super::types::RunRequest;
use super::bootstrap::Program;
use super::grants::Grants;
use super::namespaces::Namespaces;
use super::{Degraded, PlanContext, RunDirs, s};

/// What the steps decided, as the report needs it.
pub(super) struct Parts<'a> {
    pub req: &'a RunRequest,
    pub ctx: &'a PlanContext,
    pub dirs: &'a RunDirs,
    pub program: &'a Program,
    pub identity: IdentityReport,
    pub namespaces: &'a Namespaces,
    pub network: NetworkReport,
    pub landlock: LandlockReport,
    pub seccomp: SeccompReport,
    pub cgroup: CgroupReport,
    pub rlimits: Vec<RlimitReport>,
    pub grants: &'a Grants,
    pub environment: EnvironmentReport,
    pub degraded: Degraded,
}

/// Assembles the report before anything is started.
pub(super) fn assemble(parts: Parts<'_>) -> EnvelopeReport {
    let Parts {
        req,
        ctx,
        dirs,
        program,
        identity,
        namespaces,
        network,
        landlock,
        seccomp,
        cgroup,
        rlimits,
        grants,
        environment,
        degraded,
    } = parts;
    let ns = &namespaces.plan;
    let mut report = EnvelopeReport {
        schema: REPORT_SCHEMA.into(),
        run_id: ctx.run_id.clone(),
        package: PackageReport {
            dir: s(&req.package_dir),
            digest: req.package_digest.clone(),
        },
        bootstrap: BootstrapReport {
            program: s(&program.path),
            argv: program.argv.clone(),
            cwd: s(&dirs.work),
            runtime: program.runtime.clone(),
            protocol: req.protocol,
        },
        minimums: req.minimums,
        landlock,
        network,
        seccomp,
        pid_namespace: namespaces.pid.clone(),
        namespaces: NamespacesReport {
            user: ns.user,
            pid: ns.pid,
            net: ns.net,
            ipc: ns.ipc,
            uts: ns.uts,
            net_source: None,
            mount: ns.mnt,
            mount_reason: namespaces.mount_reason.clone(),
        },
        cgroup,
        identity,
        rlimits,
        memory: MemoryReport {
            scope: String::new(),
            source: String::new(),
            enforced: String::new(),
            per_process_bytes: 0,
            processes_max: None,
            run_bound_bytes: None,
            reason: None,
        },
        filesystem: FilesystemReport {
            package: s(&req.package_dir),
            work_dir: s(&dirs.work),
            tmp_dir: s(&dirs.tmp),
            pycache_prefix: s(&dirs.pycache),
            writes: grants
                .writes
                .iter()
                .map(|w| {
                    let opened = w.opened.map(|i| &req.opened_writes[i]);
                    WriteReport {
                        declared: w.declared.clone(),
                        granted: s(&w.path),
                        mapped: w.mapped,
                        persistent: opened.is_some(),
                        dev: opened.map(|o| o.dir.dev),
                        ino: opened.map(|o| o.dir.ino),
                        used_bytes_before: opened.and_then(|o| o.used_bytes),
                        quota_bytes: opened.and(req.data_quota_bytes),
                    }
                })
                .collect(),
            tools: grants.tools.iter().map(|t| s(t)).collect(),
            scratch: grants.scratch.clone(),
        },
        environment,
        process: ProcessReport {
            new_session: true,
            parent_death_signal: "SIGKILL".into(),
            inherited_fds_closed: true,
            stdin: match req.protocol {
                super::super::types::WorkerProtocol::V1 => "sealed memfd holding the request",
                super::super::types::WorkerProtocol::V2 => {
                    "sealed memfd holding the protocol 2 frame (request and context)"
                }
            }
            .into(),
            no_new_privs: true,
            init: if ns.pid {
                "the Hall's reaper is PID 1 of the namespace: when it exits every process in it is killed"
                    .into()
            } else {
                "the Hall's reaper is a child subreaper; the tree is killed by process group and cgroup"
                    .into()
            },
        },
        stages: Vec::new(),
        observed: ObservedReport::default(),
        degraded: degraded.0,
        instance: InstanceReport::planned(),
    };
    report.refresh_memory();
    report
}
