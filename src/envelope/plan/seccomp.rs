//! Planning step: the seccomp deny-list filter, in the mode the network step chose.
//!
//! Owns the `seccomp` minimum and the seccomp half of the report (the compiled filter's digest
//! and lists). It must not pick the mode itself: that is the network step's decision.

use super::super::error::{EnvelopeError, Feature};
use super::super::probe::Probe;
use super::super::report::{Effective, SeccompReport};
use super::super::seccomp::{self as filter, SeccompMode};
use super::super::types::{Minimum, Minimums};
use super::{Degraded, refuse};

/// The filter to install and its report.
pub(super) struct Seccomp {
    /// The mode and whether a failure to install it aborts the run.
    pub plan: Option<(SeccompMode, bool)>,
    pub report: SeccompReport,
}

/// Decides whether the filter is installed: refused when required but filters are
/// unavailable, not enforced when best effort; otherwise compiled (once per mode) for the report.
pub(super) fn decide(
    m: Minimums,
    probe: &Probe,
    seccomp_mode: SeccompMode,
    degraded: &mut Degraded,
) -> Result<Seccomp, EnvelopeError> {
    let mut sc_report = SeccompReport {
        requested: m.seccomp,
        effective: Effective::Off,
        reason: None,
        mode: None,
        digest: None,
        default_action: "allow".into(),
        denied_with: "EPERM".into(),
        denied: Vec::new(),
        conditional: Vec::new(),
        enosys: Vec::new(),
    };
    let seccomp = match m.seccomp {
        Minimum::Off => {
            sc_report.reason = Some("seccomp is off in the profile".into());
            None
        }
        minimum if !probe.seccomp.filter => {
            let why = probe
                .seccomp
                .reason
                .clone()
                .unwrap_or_else(|| "seccomp filters are unavailable".into());
            if minimum == Minimum::Required {
                return Err(refuse(
                    Feature::Seccomp,
                    why,
                    "use a kernel built with CONFIG_SECCOMP_FILTER, or set seccomp = \"best_effort\"",
                ));
            }
            degraded.add("seccomp", &why);
            sc_report.effective = Effective::NotEnforced;
            sc_report.reason = Some(why);
            None
        }
        minimum => {
            let compiled = filter::compiled(seccomp_mode).map_err(|e| {
                EnvelopeError::io("compiling the seccomp filter", std::io::Error::other(e))
            })?;
            sc_report.effective = Effective::Enforced;
            sc_report.mode = Some(seccomp_mode);
            sc_report.digest = Some(compiled.digest.clone());
            sc_report.denied = compiled.denied.iter().map(|s| (*s).to_owned()).collect();
            sc_report.conditional = compiled.conditional.clone();
            sc_report.enosys = compiled.enosys.iter().map(|s| (*s).to_owned()).collect();
            Some((seccomp_mode, minimum == Minimum::Required))
        }
    };
    Ok(Seccomp {
        plan: seccomp,
        report: sc_report,
    })
}
