//! Planning step: the per-run cgroup v2 leaf the worker is born in (`CLONE_INTO_CGROUP`), and
//! its memory and process bounds.
//!
//! Owns the `cgroup` minimum and the cgroup half of the report. It must say plainly when only
//! the per-process `RLIMIT_AS` bounds memory, and it creates nothing (`prepare` does).

use std::path::PathBuf;

use super::super::error::{EnvelopeError, Feature};
use super::super::probe::Probe;
use super::super::report::{CgroupReport, Effective};
use super::super::types::{Minimum, RunRequest};
use super::{CgroupPlan, Degraded, PlanContext, refuse, s};

/// The leaf to create and its report.
pub(super) struct Cgroup {
    pub plan: Option<CgroupPlan>,
    pub report: CgroupReport,
}

/// Decides the leaf: under the probed parent when leaves and `CLONE_INTO_CGROUP` work there
/// (enforced with `cgroup.kill`, memory and pids; partial without one of them), refused when
/// required and not fully available.
pub(super) fn decide(
    req: &RunRequest,
    probe: &Probe,
    ctx: &PlanContext,
    leaf_prefix: &str,
    degraded: &mut Degraded,
) -> Result<Cgroup, EnvelopeError> {
    let m = req.minimums;
    let cg = &probe.cgroup;
    let mut cg_report = CgroupReport {
        requested: m.cgroup,
        effective: Effective::Off,
        reason: None,
        path: None,
        born_in_leaf: false,
        kill: false,
        memory_max: None,
        pids_max: None,
        memory_reason: None,
        pids_reason: None,
    };
    let leaf_name = format!("{leaf_prefix}{}", ctx.run_id);
    let cgroup = match (m.cgroup, &cg.parent) {
        (Minimum::Off, _) => {
            cg_report.reason = Some("cgroup is off in the profile".into());
            None
        }
        (minimum, Some(parent)) if cg.leaf_ok && cg.clone_into_cgroup => {
            let full = cg.kill && cg.memory && cg.pids;
            let mut why = cg.reason.clone().unwrap_or_default();
            if !cg.memory {
                // A required cgroup is the profile asking for a per-run memory bound: say
                // plainly that RLIMIT_AS (per process) would be all there is.
                why = format!(
                    "no per-run memory bound: memory.max cannot be set in a leaf here, so only \
                     the per-process RLIMIT_AS applies{}",
                    if why.is_empty() {
                        String::new()
                    } else {
                        format!(" ({why})")
                    }
                );
            }
            if !full && minimum == Minimum::Required {
                return Err(refuse(
                    Feature::Cgroup,
                    why,
                    "delegate a cgroup v2 subtree with memory and pids enabled in cgroup.subtree_control (systemd Delegate=yes) and set cgroup_parent",
                ));
            }
            let parent = PathBuf::from(parent);
            cg_report.path = Some(s(&parent.join(&leaf_name)));
            cg_report.born_in_leaf = true;
            cg_report.kill = cg.kill;
            if full {
                cg_report.effective = Effective::Enforced;
                cg_report.memory_max = Some(req.limits.memory_bytes);
                cg_report.pids_max = Some(req.limits.max_processes);
            } else {
                cg_report.effective = Effective::Partial;
                cg_report.reason = Some(why.clone());
                if cg.memory {
                    cg_report.memory_max = Some(req.limits.memory_bytes);
                }
                if cg.pids {
                    cg_report.pids_max = Some(req.limits.max_processes);
                }
                degraded.add("cgroup", &why);
            }
            Some(CgroupPlan {
                parent,
                leaf_name,
                required: minimum == Minimum::Required,
                memory_max: req.limits.memory_bytes,
                pids_max: req.limits.max_processes,
            })
        }
        (minimum, _) => {
            let why = cg
                .reason
                .clone()
                .unwrap_or_else(|| "no usable cgroup v2 parent directory".into());
            if minimum == Minimum::Required {
                return Err(refuse(
                    Feature::Cgroup,
                    why,
                    "delegate a cgroup v2 subtree to the Hall (systemd Delegate=yes) and set cgroup_parent",
                ));
            }
            degraded.add("cgroup", &why);
            cg_report.effective = Effective::NotEnforced;
            cg_report.reason = Some(why);
            None
        }
    };
    Ok(Cgroup {
        plan: cgroup,
        report: cg_report,
    })
}
