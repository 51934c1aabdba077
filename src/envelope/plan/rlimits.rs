//! Planning step: the per-process resource limits, from the request's `Limits`.
//!
//! Owns the rlimits and their report notes (what each one bounds, and that `nproc` counts per
//! uid). It must not refuse: the limits were validated with the request.

use nix::libc;

use super::super::report::RlimitReport;
use super::super::types::Limits;
use super::RlimitPlan;

/// The rlimits to set and their report lines.
pub(super) struct Rlimits {
    pub plan: Vec<RlimitPlan>,
    pub reports: Vec<RlimitReport>,
}

fn rlim(v: u64) -> Option<u64> {
    (v != libc::RLIM_INFINITY).then_some(v)
}

/// Decides the rlimits: CPU seconds (hard one above soft), address space, processes, open
/// files, file size, and no core dumps; `worker_uid` is for the `nproc` note.
pub(super) fn decide(l: &Limits, worker_uid: u32) -> Rlimits {
    let rlimits = vec![
        RlimitPlan {
            name: "cpu",
            resource: libc::RLIMIT_CPU as libc::c_int,
            soft: l.cpu_seconds,
            hard: l.cpu_seconds.saturating_add(1),
        },
        RlimitPlan {
            name: "as",
            resource: libc::RLIMIT_AS as libc::c_int,
            soft: l.memory_bytes,
            hard: l.memory_bytes,
        },
        RlimitPlan {
            name: "nproc",
            resource: libc::RLIMIT_NPROC as libc::c_int,
            soft: l.max_processes,
            hard: l.max_processes,
        },
        RlimitPlan {
            name: "nofile",
            resource: libc::RLIMIT_NOFILE as libc::c_int,
            soft: l.max_open_files,
            hard: l.max_open_files,
        },
        RlimitPlan {
            name: "fsize",
            resource: libc::RLIMIT_FSIZE as libc::c_int,
            soft: l.max_file_size_bytes,
            hard: l.max_file_size_bytes,
        },
        RlimitPlan {
            name: "core",
            resource: libc::RLIMIT_CORE as libc::c_int,
            soft: 0,
            hard: 0,
        },
    ];
    let reports = rlimits
        .iter()
        .map(|r| RlimitReport {
            resource: r.name.into(),
            soft: rlim(r.soft),
            hard: rlim(r.hard),
            note: match r.name {
                "nproc" if worker_uid == 0 => {
                    Some("not enforced: the worker is root (CAP_SYS_RESOURCE)".into())
                }
                "nproc" => Some(format!(
                    "counted per uid: every process of uid {worker_uid} on the host counts"
                )),
                "cpu" => Some("per process: SIGXCPU at soft, SIGKILL at hard".into()),
                "as" => Some("per process address space".into()),
                _ => None,
            },
        })
        .collect();
    Rlimits {
        plan: rlimits,
        reports,
    }
}
