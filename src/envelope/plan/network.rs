//! Planning step: what the worker can reach over the network, for `network_egress` (`none` or
//! an allowlist) under the `network_isolation` minimum.
//!
//! Owns the network half of the report and the choices it implies for the other stages: a
//! network namespace, the TCP ports Landlock lets `connect` reach, the seccomp mode, and
//! whether names resolve over TCP. Host names are never claimed as enforced (Landlock sees
//! ports only); this module must not report more than the chosen mechanisms enforce.

use std::collections::BTreeSet;

use crate::registry::NetworkEgress;

use super::super::error::{EnvelopeError, Feature};
use super::super::probe::Probe;
use super::super::report::{Effective, NetworkReport};
use super::super::seccomp::SeccompMode;
use super::super::types::{Minimum, RunRequest};
use super::namespaces::{Namespaces, creatable, why_not};
use super::{Degraded, refuse};

/// The network decision and what it asks of the other stages.
pub(super) struct Network {
    pub report: NetworkReport,
    /// Landlock TCP handling: `Some(ports)` = handle bind and connect, allow connect to `ports`.
    pub landlock_tcp: Option<Vec<u16>>,
    pub seccomp_mode: SeccompMode,
    /// Set `RES_OPTIONS=use-vc` (names resolve over TCP).
    pub res_options: bool,
}

/// Parses an allowlist entry `host:port` / `[v6]:port` into (host, port).
pub fn parse_destination(dest: &str) -> Result<(String, u16), EnvelopeError> {
    let bad = || {
        EnvelopeError::invalid(
            "privilege_envelope.network_egress",
            format!("{dest:?} is not host:port with a port 1-65535"),
        )
    };
    let (host, port) = dest.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    if port == 0 || host.is_empty() {
        return Err(bad());
    }
    Ok((
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned(),
        port,
    ))
}

fn is_ip_literal(host: &str) -> bool {
    host.parse::<std::net::IpAddr>().is_ok()
}

/// Decides the network confinement: `none` is a private network namespace, or failing that
/// seccomp's IPv4/IPv6 socket ban, or Landlock's TCP denial; an allowlist is Landlock's TCP
/// ports plus seccomp's UDP and raw-socket ban. `landlock_abi` is the Landlock ABI the Landlock
/// step will use (0 when it is off).
pub(super) fn decide(
    req: &RunRequest,
    probe: &Probe,
    landlock_abi: u32,
    namespaces: &mut Namespaces,
    degraded: &mut Degraded,
) -> Result<Network, EnvelopeError> {
    let m = req.minimums;
    let kernel_abi = probe.landlock.kernel_abi;
    let ll_abi = landlock_abi;
    let seccomp_possible = m.seccomp != Minimum::Off && probe.seccomp.filter;
    let ns = &probe.namespaces;
    let needs_user = namespaces.needs_user;
    let egress = req.privilege_envelope.network_egress.clone();
    let mut net_report = NetworkReport {
        requested: m.network_isolation,
        effective: Effective::Off,
        reason: None,
        egress: egress.clone(),
        mode: "host".into(),
        namespace: false,
        tcp: "host network, unrestricted".into(),
        udp: "host network, unrestricted".into(),
        hosts_enforced: false,
        dns: None,
    };
    let mut ll_tcp: Option<Vec<u16>> = None;
    let mut seccomp_mode = SeccompMode::Base;
    let mut res_options = false;
    match (&egress, m.network_isolation) {
        (_, Minimum::Off) => {
            net_report.reason =
                Some("network_isolation is off: the host network is reachable".into());
        }
        (NetworkEgress::None, minimum) => {
            if creatable(ns, needs_user, ns.net) {
                namespaces.plan.net = true;
                net_report.mode = "namespace".into();
                net_report.namespace = true;
                net_report.effective = Effective::Enforced;
                net_report.tcp = "private network namespace: only its own loopback".into();
                net_report.udp = "private network namespace: only its own loopback".into();
                if ll_abi >= 4 {
                    ll_tcp = Some(Vec::new());
                    net_report
                        .tcp
                        .push_str("; Landlock also denies TCP bind and connect");
                }
            } else {
                let why = why_not(ns, needs_user, "net");
                if minimum == Minimum::Required {
                    return Err(refuse(
                        Feature::NetworkIsolation,
                        why,
                        "network_egress \"none\" needs a network namespace: run the Hall as root or allow user namespaces",
                    ));
                }
                if seccomp_possible {
                    seccomp_mode = SeccompMode::NoInet;
                    net_report.mode = "seccomp_no_inet".into();
                    net_report.effective = Effective::Partial;
                    net_report.tcp = "IPv4/IPv6 sockets denied by seccomp".into();
                    net_report.udp = "IPv4/IPv6 sockets denied by seccomp".into();
                    let r = format!(
                        "{why}; fell back to denying IPv4/IPv6 sockets with seccomp (the host's Unix sockets stay reachable)"
                    );
                    degraded.add("network_isolation", &r);
                    net_report.reason = Some(r);
                } else if ll_abi >= 4 {
                    ll_tcp = Some(Vec::new());
                    net_report.mode = "landlock_tcp_deny".into();
                    net_report.effective = Effective::Partial;
                    net_report.tcp = "TCP bind and connect denied by Landlock".into();
                    net_report.udp = "open: Landlock below ABI 10 does not see UDP".into();
                    let r = format!("{why}; only TCP is denied (Landlock), UDP stays open");
                    degraded.add("network_isolation", &r);
                    net_report.reason = Some(r);
                } else {
                    net_report.effective = Effective::NotEnforced;
                    let r = format!("{why}; neither seccomp nor Landlock TCP rules are available");
                    degraded.add("network_isolation", &r);
                    net_report.reason = Some(r);
                }
            }
        }
        (NetworkEgress::Allowlist(list), minimum) => {
            let mut ports = BTreeSet::new();
            let mut names = false;
            for dest in list {
                let (h, p) = parse_destination(dest)?;
                ports.insert(p);
                names |= !is_ip_literal(&h);
            }
            if names {
                ports.insert(53);
                res_options = true;
                net_report.dns = Some(
                    "TCP port 53 allowed and RES_OPTIONS=use-vc set: names resolve over TCP (UDP is denied)"
                        .into(),
                );
            }
            let ports: Vec<u16> = ports.into_iter().collect();
            let ll_ok = ll_abi >= 4;
            let mut missing = Vec::new();
            if !ll_ok {
                missing.push(if m.landlock == Minimum::Off {
                    "Landlock is off in the profile, so TCP ports cannot be limited".to_owned()
                } else {
                    format!("Landlock ABI {kernel_abi} < 4 cannot limit TCP ports")
                });
            }
            if !seccomp_possible {
                missing.push(if m.seccomp == Minimum::Off {
                    "seccomp is off in the profile, so UDP cannot be denied".to_owned()
                } else {
                    "seccomp filters are unavailable, so UDP cannot be denied".to_owned()
                });
            }
            if !missing.is_empty() && minimum == Minimum::Required {
                return Err(refuse(
                    Feature::NetworkIsolation,
                    missing.join("; "),
                    "an egress allowlist needs Landlock ABI 4+ and seccomp enabled in the profile",
                ));
            }
            net_report.mode = "landlock_tcp_ports".into();
            net_report.hosts_enforced = false;
            if ll_ok {
                net_report.tcp = format!(
                    "connect only to TCP ports {ports:?} (any host); bind denied (Landlock)"
                );
                ll_tcp = Some(ports);
            }
            if seccomp_possible {
                seccomp_mode = SeccompMode::NoUdp;
                net_report.udp = "UDP and raw IPv4/IPv6 sockets denied (seccomp)".into();
            }
            if missing.is_empty() {
                net_report.effective = Effective::Enforced;
                net_report.reason = Some(
                    "ports are enforced, host names are not (Landlock sees ports only)".into(),
                );
            } else {
                net_report.effective = if ll_ok || seccomp_possible {
                    Effective::Partial
                } else {
                    Effective::NotEnforced
                };
                let r = missing.join("; ");
                degraded.add("network_isolation", &r);
                net_report.reason = Some(r);
            }
        }
    }
    Ok(Network {
        report: net_report,
        landlock_tcp: ll_tcp,
        seccomp_mode,
        res_options,
    })
}
