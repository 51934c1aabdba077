//! Planning step: the Landlock ruleset, pinned to ABI [`LANDLOCK_ABI_REQUESTED`].
//!
//! Owns the `landlock` minimum, the path rules (the package read-only, the program, the
//! runtime, the tools, the granted writes, the private tmp, two devices) and the Landlock half
//! of the report. It decides in two parts: whether Landlock is enabled (before the grants), and
//! the ruleset over the grants. It must not grant a path the other steps did not decide on, nor
//! claim rights a lower kernel ABI cannot handle.

use std::path::Path;

use super::super::error::{EnvelopeError, Feature};
use super::super::probe::{LANDLOCK_ABI_REQUESTED, Probe};
use super::super::report::{Effective, FsRuleReport, LandlockReport};
use super::super::types::{Minimum, Minimums, RunRequest};
use super::grants::Grants;
use super::{Degraded, FsAccess, FsRule, LandlockPlan, RunDirs, refuse, s};

/// The ABI whose rights are handled: the kernel's, at most the pinned one; 0 when off.
pub(super) fn abi(m: Minimums, probe: &Probe) -> u32 {
    match m.landlock {
        Minimum::Off => 0,
        _ => probe.landlock.kernel_abi.min(LANDLOCK_ABI_REQUESTED),
    }
}

/// Whether Landlock is applied, and its report before the ruleset is known.
pub(super) struct Landlock {
    enabled: bool,
    abi: u32,
    required: bool,
    report: LandlockReport,
}

/// Decides whether Landlock is applied: refused when required but below the pinned ABI,
/// not enforced when the kernel has none, partial below the pinned ABI.
pub(super) fn availability(
    m: Minimums,
    probe: &Probe,
    abi: u32,
    degraded: &mut Degraded,
) -> Result<Landlock, EnvelopeError> {
    let kernel_abi = probe.landlock.kernel_abi;
    let ll_abi = abi;
    let mut ll_report = LandlockReport {
        requested: m.landlock,
        effective: Effective::Off,
        reason: None,
        abi_requested: LANDLOCK_ABI_REQUESTED,
        abi_kernel: kernel_abi,
        abi_effective: 0,
        ruleset: "not_enforced".into(),
        fs_rules: Vec::new(),
        tcp_connect_ports: None,
        tcp_bind: "not_handled".into(),
        scopes: Vec::new(),
    };
    let landlock_enabled = match m.landlock {
        Minimum::Off => {
            ll_report.reason =
                Some("landlock is off: the worker sees the whole filesystem its uid can".into());
            false
        }
        Minimum::Required if kernel_abi < LANDLOCK_ABI_REQUESTED => {
            return Err(refuse(
                Feature::Landlock,
                if kernel_abi == 0 {
                    format!("Landlock is {} on this kernel", probe.landlock.status)
                } else {
                    format!(
                        "the kernel offers Landlock ABI {kernel_abi}, the profile requires ABI {LANDLOCK_ABI_REQUESTED} fully enforced"
                    )
                },
                "use a kernel with Landlock ABI 6 (Linux 6.12+) booted with lsm=…,landlock, or set landlock = \"best_effort\"",
            ));
        }
        Minimum::BestEffort if kernel_abi == 0 => {
            let r = format!("Landlock is {} on this kernel", probe.landlock.status);
            degraded.add("landlock", &r);
            ll_report.effective = Effective::NotEnforced;
            ll_report.reason = Some(r);
            false
        }
        _ => {
            ll_report.abi_effective = ll_abi;
            if ll_abi < LANDLOCK_ABI_REQUESTED {
                let r = format!(
                    "kernel ABI {kernel_abi} < {LANDLOCK_ABI_REQUESTED}: rights of later ABIs (truncate 3, TCP 4, ioctl on devices 5, scopes 6) are not handled"
                );
                degraded.add("landlock", &r);
                ll_report.effective = Effective::Partial;
                ll_report.ruleset = "partially_enforced".into();
                ll_report.reason = Some(r);
            } else {
                ll_report.effective = Effective::Enforced;
                ll_report.ruleset = "fully_enforced".into();
            }
            true
        }
    };
    Ok(Landlock {
        enabled: landlock_enabled,
        abi: ll_abi,
        required: m.landlock == Minimum::Required,
        report: ll_report,
    })
}

impl Landlock {
    /// Decides the ruleset over the grants: one rule per path and right (no duplicates), the
    /// TCP ports the network step chose (from ABI 4) and the scopes (from ABI 6). `None` when
    /// Landlock is not applied.
    pub(super) fn ruleset(
        self,
        req: &RunRequest,
        program: &Path,
        grants: &Grants,
        dirs: &RunDirs,
        tcp: Option<Vec<u16>>,
    ) -> (Option<LandlockPlan>, LandlockReport) {
        let Landlock {
            enabled: landlock_enabled,
            abi: ll_abi,
            required,
            report: mut ll_report,
        } = self;
        let mut ll_tcp = tcp;
        let mut fs_rules = Vec::new();
        let mut rule = |path: &Path, access: FsAccess, opened: Option<usize>| {
            if !fs_rules
                .iter()
                .any(|r: &FsRule| r.path == path && r.access == access && r.opened == opened)
            {
                fs_rules.push(FsRule {
                    path: path.to_path_buf(),
                    access,
                    opened,
                });
            }
        };
        rule(&req.package_dir, FsAccess::Read, None);
        rule(program, FsAccess::ReadExecute, None);
        for p in &req.runtime.execute {
            rule(p, FsAccess::ReadExecute, None);
        }
        for p in &req.runtime.read {
            rule(p, FsAccess::Read, None);
        }
        for t in &grants.tools {
            rule(t, FsAccess::ReadExecute, None);
        }
        for w in &grants.writes {
            rule(&w.path, FsAccess::ReadWrite, w.opened);
        }
        rule(&dirs.tmp, FsAccess::ReadWrite, None);
        rule(Path::new("/dev/null"), FsAccess::DeviceReadWrite, None);
        rule(Path::new("/dev/urandom"), FsAccess::DeviceRead, None);
        if landlock_enabled {
            ll_report.fs_rules = fs_rules
                .iter()
                .map(|r| {
                    let opened = r.opened.map(|i| &req.opened_writes[i].dir);
                    FsRuleReport {
                        path: s(&r.path),
                        access: r.access.as_str().into(),
                        dev: opened.map(|o| o.dev),
                        ino: opened.map(|o| o.ino),
                    }
                })
                .collect();
            if ll_abi >= 4 {
                if let Some(ports) = &ll_tcp {
                    ll_report.tcp_connect_ports = Some(ports.clone());
                    ll_report.tcp_bind = "denied".into();
                }
            } else {
                ll_tcp = None;
            }
            if ll_abi >= 6 {
                ll_report.scopes = vec!["abstract_unix_socket".into(), "signal".into()];
            }
        } else {
            ll_tcp = None;
        }
        let landlock = landlock_enabled.then_some(LandlockPlan {
            abi: ll_abi,
            required,
            fs_rules,
            tcp: ll_tcp,
            scopes: ll_abi >= 6,
        });
        (landlock, ll_report)
    }
}
