//! Prometheus text exposition for `GET /metrics` (on the Hall's socket, and on the optional TCP
//! listener of `metrics_http`).
//!
//! A handful of counter families with labels, two latency histograms, the gauges the server
//! passes in, `wcp_hall_build_info` and the standard `process_*` metrics, kept in memory; the
//! text format is small and stable, so it is rendered here rather than pulling a metrics stack.
//! Every family has `# HELP` and `# TYPE` (`promtool check metrics` passes). Label values come
//! from closed sets (endpoint names, deny codes, statuses, reasons), never from caller-chosen
//! strings, so the series count stays bounded; every known label set is present from the start
//! with 0, so a rate over a series that has not happened yet is 0, not "no data".
//! docs/metrics.md lists the families.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

/// Upper bounds (seconds) of the dispatch latency histogram buckets.
const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

#[derive(Debug, Default)]
struct Histogram {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        if self.counts.is_empty() {
            self.counts = vec![0; BUCKETS.len()];
        }
        for (i, b) in BUCKETS.iter().enumerate() {
            if seconds <= *b {
                self.counts[i] += 1;
            }
        }
        self.sum += seconds;
        self.count += 1;
    }

    /// The `_bucket`, `_sum` and `_count` lines; `labels` (`k="v"`) prefix every `le`.
    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (i, b) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {}",
                self.counts.get(i).copied().unwrap_or(0)
            );
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let braced = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braced} {}", self.sum);
        let _ = writeln!(out, "{name}_count{braced} {}", self.count);
    }
}

/// The phases of an executed dispatch the runner times (`execution.hall_phases_us`).
pub const PHASES: [&str; 4] = ["verify", "intent_receipt", "run", "outcome_receipt"];

/// `wcp_hall_requests_total`'s `endpoint` label: the endpoints that read a request body.
pub const ENDPOINTS: [&str; 4] = ["capabilities_routable", "route", "dispatch", "resolve"];

/// `wcp_hall_dispatches_total`'s `status` label: the `status` of a `POST /wcp/dispatch` answer,
/// or `error` when the request was answered with an HTTP error instead (invalid body,
/// overloaded, receipt log unavailable, shutting down, a runner failure).
pub const DISPATCH_STATUSES: [&str; 6] = [
    "completed",
    "failed",
    "denied",
    "dry_run",
    "pending_approval",
    "error",
];

/// `wcp_hall_dispatch_refused_total`'s `code` label: the Hall's own refusals of a dispatch.
pub const REFUSAL_CODES: [&str; 2] = [super::dispatch::INPUT_INVALID, "receipt_log_unavailable"];

/// `wcp_hall_connections_refused_total`'s `reason` label (`conn::Refusal::reason`, and workers).
pub const CONNECTION_REFUSALS: [&str; 4] = ["per_uid", "total", "descriptors", "peer_is_worker"];

/// `wcp_hall_connections_closed_total`'s `reason` label.
pub const CONNECTION_CLOSES: [&str; 2] = ["idle_timeout", "evicted"];

/// `wcp_hall_reloads_total`'s `result` label.
pub const RELOAD_RESULTS: [&str; 2] = ["ok", "failed"];

/// A counter family: its name, help text and every label set it can take.
pub struct Family {
    pub name: &'static str,
    pub help: &'static str,
    pub label_sets: Vec<Vec<(&'static str, &'static str)>>,
}

fn each(label: &'static str, values: &[&'static str]) -> Vec<Vec<(&'static str, &'static str)>> {
    values.iter().map(|v| vec![(label, *v)]).collect()
}

/// Every counter family the Hall increments, with its closed vocabulary of label sets.
pub fn counter_families() -> Vec<Family> {
    let mut decisions = vec![vec![("outcome", "allowed"), ("code", "")]];
    decisions.extend(
        crate::wcp::DenyCode::ALL
            .iter()
            .map(|c| vec![("outcome", "denied"), ("code", c.as_str())]),
    );
    vec![
        Family {
            name: "wcp_hall_requests_total",
            help: "API requests with a body, by endpoint (counted before the body is read).",
            label_sets: each("endpoint", &ENDPOINTS),
        },
        Family {
            name: "wcp_hall_decisions_total",
            help: "Routing decisions of POST /wcp/dispatch: allowed (code empty), or denied with the WCP deny code.",
            label_sets: decisions,
        },
        Family {
            name: "wcp_hall_dispatches_total",
            help: "POST /wcp/dispatch answers by status (completed, failed, denied, dry_run, pending_approval), or error for an HTTP error answer.",
            label_sets: each("status", &DISPATCH_STATUSES),
        },
        Family {
            name: "wcp_hall_dispatch_refused_total",
            help: "Dispatches the Hall itself refused, by code (input_invalid: the request does not match the worker's input schema; receipt_log_unavailable).",
            label_sets: each("code", &REFUSAL_CODES),
        },
        Family {
            name: "wcp_hall_connections_refused_total",
            help: "Connections refused at accept, by reason (per_uid, total, descriptors, peer_is_worker).",
            label_sets: each("reason", &CONNECTION_REFUSALS),
        },
        Family {
            name: "wcp_hall_connections_closed_total",
            help: "Connections the Hall closed, by reason (idle_timeout, or evicted to make room).",
            label_sets: each("reason", &CONNECTION_CLOSES),
        },
        Family {
            name: "wcp_hall_approval_repeats_total",
            help: "Repeated requests (same uid, tenant, capability and correlation id) answered from an existing approval instead of opening a new one.",
            label_sets: vec![vec![]],
        },
        Family {
            name: "wcp_hall_reloads_total",
            help: "Configuration reloads (SIGHUP or POST /wcp/reload), by result.",
            label_sets: each("result", &RELOAD_RESULTS),
        },
    ]
}

/// The daemon's metrics.
#[derive(Debug)]
pub struct Metrics {
    counters: Mutex<BTreeMap<(&'static str, String), u64>>,
    help: BTreeMap<&'static str, &'static str>,
    latency: Mutex<Histogram>,
    phases: Mutex<BTreeMap<&'static str, Histogram>>,
}

impl Default for Metrics {
    /// Every known counter series at 0 and every phase histogram empty.
    fn default() -> Self {
        let mut counters = BTreeMap::new();
        let mut help = BTreeMap::new();
        for family in counter_families() {
            help.insert(family.name, family.help);
            for set in &family.label_sets {
                counters.insert((family.name, labels(set)), 0);
            }
        }
        Metrics {
            counters: Mutex::new(counters),
            help,
            latency: Mutex::new(Histogram::default()),
            phases: Mutex::new(PHASES.iter().map(|p| (*p, Histogram::default())).collect()),
        }
    }
}

fn labels(pairs: &[(&str, &str)]) -> String {
    let inner: Vec<String> = pairs
        .iter()
        .map(|(k, v)| {
            format!(
                "{k}=\"{}\"",
                v.replace('\\', "\\\\")
                    .replace('"', "\\\"")
                    .replace('\n', "\\n")
            )
        })
        .collect();
    inner.join(",")
}

/// `# HELP` and `# TYPE` of one family.
fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let help = help.replace('\\', "\\\\").replace('\n', "\\n");
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// One unlabelled sample with its `# HELP` and `# TYPE`.
fn single(out: &mut String, name: &str, help: &str, kind: &str, value: f64) {
    header(out, name, help, kind);
    let _ = writeln!(out, "{name} {value}");
}

impl Metrics {
    /// Adds one to the counter `name{labels}`.
    pub fn inc(&self, name: &'static str, pairs: &[(&str, &str)]) {
        let mut c = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        *c.entry((name, labels(pairs))).or_default() += 1;
    }

    /// Records one dispatch latency.
    pub fn observe_dispatch(&self, seconds: f64) {
        let mut h = self.latency.lock().unwrap_or_else(|p| p.into_inner());
        h.observe(seconds);
    }

    /// Records how long one phase of an executed dispatch took. Phases outside [`PHASES`] are
    /// ignored (the label set stays closed).
    pub fn observe_phase(&self, phase: &str, seconds: f64) {
        let Some(name) = PHASES.iter().find(|p| **p == phase) else {
            return;
        };
        let mut m = self.phases.lock().unwrap_or_else(|p| p.into_inner());
        m.entry(name).or_default().observe(seconds);
    }

    /// Renders every family, plus the given gauges (name, help, value), the build information
    /// and the process metrics, in the Prometheus text format (version 0.0.4).
    pub fn render(&self, gauges: &[(&str, &str, f64)]) -> String {
        let mut out = String::new();
        let counters = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        let mut last = "";
        for ((name, l), v) in counters.iter() {
            if *name != last {
                let help =
                    self.help.get(name).copied().unwrap_or(
                        "A wcp-hall counter (not described in metrics::counter_families).",
                    );
                header(&mut out, name, help, "counter");
                last = name;
            }
            if l.is_empty() {
                let _ = writeln!(out, "{name} {v}");
            } else {
                let _ = writeln!(out, "{name}{{{l}}} {v}");
            }
        }
        drop(counters);
        let h = self.latency.lock().unwrap_or_else(|p| p.into_inner());
        let name = "wcp_hall_dispatch_duration_seconds";
        header(
            &mut out,
            name,
            "Wall time of POST /wcp/dispatch requests that were answered without an HTTP error.",
            "histogram",
        );
        h.render(&mut out, name, "");
        drop(h);
        let phases = self.phases.lock().unwrap_or_else(|p| p.into_inner());
        let name = "wcp_hall_execution_phase_seconds";
        header(
            &mut out,
            name,
            "Wall time of each phase of an executed dispatch (verify, intent_receipt, run, outcome_receipt).",
            "histogram",
        );
        for (phase, h) in phases.iter() {
            h.render(&mut out, name, &labels(&[("phase", phase)]));
        }
        drop(phases);
        for (name, help, v) in gauges {
            single(&mut out, name, help, "gauge", *v);
        }
        header(
            &mut out,
            "wcp_hall_build_info",
            "Always 1; the labels say which build of wcp-hall is running.",
            "gauge",
        );
        let _ = writeln!(
            out,
            "wcp_hall_build_info{{{}}} 1",
            labels(&[("version", VERSION), ("git_commit", GIT_COMMIT)])
        );
        process::render(&mut out);
        out
    }
}

/// The crate version (`Cargo.toml`).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The commit the binary was built from (`build.rs`: `$WCP_HALL_GIT_COMMIT`, else
/// `git rev-parse HEAD`, else `unknown`).
pub const GIT_COMMIT: &str = env!("WCP_HALL_GIT_COMMIT");

/// The standard process metrics (the names every Prometheus client library uses), read from
/// the kernel at each scrape: `getrusage`, `/proc/self/status`, `/proc/self/fd`, `getrlimit`
/// and `/proc/self/stat`. Only the process's own `/proc/self` is read, which systemd's
/// `ProtectProc=invisible` and `ProcSubset=pid` leave visible. A value that cannot be read is
/// left out (never reported as 0).
mod process {
    use super::single;
    use std::sync::OnceLock;

    pub fn render(out: &mut String) {
        if let Some(cpu) = cpu_seconds() {
            single(
                out,
                "process_cpu_seconds_total",
                "Total user and system CPU time spent in seconds.",
                "counter",
                cpu,
            );
        }
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        if let Some(rss) = status_kib(&status, "VmRSS:") {
            single(
                out,
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                "gauge",
                rss * 1024.0,
            );
        }
        if let Some(vsz) = status_kib(&status, "VmSize:") {
            single(
                out,
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
                "gauge",
                vsz * 1024.0,
            );
        }
        if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
            // The directory's own descriptor is among them, as in every client library.
            single(
                out,
                "process_open_fds",
                "Number of open file descriptors.",
                "gauge",
                dir.count() as f64,
            );
        }
        if let Ok((soft, _)) =
            nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        {
            single(
                out,
                "process_max_fds",
                "Maximum number of open file descriptors.",
                "gauge",
                soft as f64,
            );
        }
        if let Some(start) = start_time_seconds() {
            single(
                out,
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
                "gauge",
                start,
            );
        }
    }

    fn cpu_seconds() -> Option<f64> {
        use nix::sys::resource::{UsageWho, getrusage};
        let u = getrusage(UsageWho::RUSAGE_SELF).ok()?;
        let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
        Some(secs(u.user_time()) + secs(u.system_time()))
    }

    /// A `kB` line of `/proc/self/status`, e.g. `VmRSS:     1234 kB`.
    pub(super) fn status_kib(status: &str, key: &str) -> Option<f64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
            .map(|n| n as f64)
    }

    /// Field 22 of `/proc/self/stat` (clock ticks after boot), after the parenthesised command
    /// name, which may itself hold spaces and parentheses.
    pub(super) fn start_ticks(stat: &str) -> Option<u64> {
        let (_, rest) = stat.rsplit_once(')')?;
        rest.split_whitespace().nth(19)?.parse().ok()
    }

    /// The process start as Unix time: the boot time (now on the realtime clock minus now on
    /// the boot clock; `/proc/stat`'s `btime` is hidden under `ProcSubset=pid`) plus the start's
    /// offset from boot. Computed once.
    fn start_time_seconds() -> Option<f64> {
        static START: OnceLock<Option<f64>> = OnceLock::new();
        *START.get_or_init(|| {
            let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
            let ticks = start_ticks(&stat)?;
            let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
                .ok()
                .flatten()
                .filter(|h| *h > 0)?;
            let boot = nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME).ok()?;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .ok()?
                .as_secs_f64();
            let since_boot = boot.tv_sec() as f64 + boot.tv_nsec() as f64 / 1e9;
            let start = now - since_boot + ticks as f64 / hz as f64;
            (start.is_finite() && start > 0.0).then_some(start)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_histogram_and_gauges() {
        let m = Metrics::default();
        m.inc(
            "wcp_hall_decisions_total",
            &[("outcome", "denied"), ("code", "DENY_NO_MATCHING_RULE")],
        );
        m.inc(
            "wcp_hall_decisions_total",
            &[("outcome", "denied"), ("code", "DENY_NO_MATCHING_RULE")],
        );
        m.observe_dispatch(0.003);
        m.observe_phase("run", 0.002);
        m.observe_phase("somebody's label", 1.0);
        let text = m.render(&[("wcp_hall_in_flight", "Requests executing.", 2.0)]);
        assert!(text.contains(
            "wcp_hall_decisions_total{outcome=\"denied\",code=\"DENY_NO_MATCHING_RULE\"} 2"
        ));
        assert!(text.contains("wcp_hall_dispatch_duration_seconds_bucket{le=\"0.005\"} 1"));
        assert!(text.contains("wcp_hall_dispatch_duration_seconds_bucket{le=\"0.0025\"} 0"));
        assert!(text.contains("wcp_hall_dispatch_duration_seconds_count 1"));
        assert!(text.contains("wcp_hall_in_flight 2"));
        assert!(
            text.contains("wcp_hall_execution_phase_seconds_bucket{phase=\"run\",le=\"0.0025\"} 1")
        );
        assert!(text.contains("wcp_hall_execution_phase_seconds_count{phase=\"run\"} 1"));
        assert!(!text.contains("somebody"), "phase labels are a closed set");
    }

    #[test]
    fn every_known_series_is_there_at_zero_before_anything_happens() {
        let text = Metrics::default().render(&[]);
        for family in counter_families() {
            assert!(
                text.contains(&format!("# HELP {} {}\n", family.name, family.help)),
                "{}",
                family.name
            );
            assert!(text.contains(&format!("# TYPE {} counter\n", family.name)));
            for set in &family.label_sets {
                let line = if set.is_empty() {
                    format!("{} 0\n", family.name)
                } else {
                    format!("{}{{{}}} 0\n", family.name, labels(set))
                };
                assert!(text.contains(&line), "{line} missing");
            }
        }
        assert!(text.contains("wcp_hall_dispatches_total{status=\"pending_approval\"} 0"));
        assert!(text.contains(
            "wcp_hall_decisions_total{outcome=\"denied\",code=\"DENY_PRIVILEGE_ENVELOPE_VIOLATED\"} 0"
        ));
        assert!(text.contains("wcp_hall_decisions_total{outcome=\"allowed\",code=\"\"} 0"));
        for phase in PHASES {
            assert!(text.contains(&format!(
                "wcp_hall_execution_phase_seconds_count{{phase=\"{phase}\"}} 0"
            )));
        }
        assert!(text.contains("wcp_hall_dispatch_duration_seconds_bucket{le=\"+Inf\"} 0"));
    }

    #[test]
    fn every_family_has_help_and_type_once_and_each_sample_belongs_to_one() {
        let m = Metrics::default();
        m.inc("wcp_hall_not_in_the_table_total", &[]);
        let text = m.render(&[("wcp_hall_g", "A gauge.", 1.0)]);
        let mut helped = std::collections::BTreeSet::new();
        let mut typed = std::collections::BTreeMap::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let name = rest.split(' ').next().unwrap();
                assert!(helped.insert(name.to_owned()), "HELP twice for {name}");
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                assert!(typed.insert(name.to_owned(), kind.to_owned()).is_none());
            } else {
                let name = line.split(['{', ' ']).next().unwrap();
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| {
                        name.strip_suffix(s)
                            .filter(|f| typed.get(*f).map(String::as_str) == Some("histogram"))
                    })
                    .unwrap_or(name);
                assert!(typed.contains_key(family), "no TYPE before {line}");
                let value = line.rsplit(' ').next().unwrap();
                assert!(value.parse::<f64>().is_ok(), "{line}");
            }
        }
        assert_eq!(
            helped.iter().collect::<Vec<_>>(),
            typed.keys().collect::<Vec<_>>()
        );
        for name in [
            "wcp_hall_build_info",
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_open_fds",
            "process_max_fds",
            "process_start_time_seconds",
        ] {
            assert!(typed.contains_key(name), "{name} missing:\n{text}");
        }
        assert!(text.contains(&format!(
            "wcp_hall_build_info{{version=\"{VERSION}\",git_commit=\"{GIT_COMMIT}\"}} 1"
        )));
    }

    #[test]
    fn process_metrics_read_sane_values() {
        let text = Metrics::default().render(&[]);
        let value = |name: &str| -> f64 {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{name} ")))
                .unwrap_or_else(|| panic!("{name} missing"))
                .parse()
                .unwrap()
        };
        assert!(value("process_resident_memory_bytes") > 1024.0 * 1024.0);
        assert!(value("process_open_fds") >= 3.0);
        assert!(value("process_max_fds") >= value("process_open_fds"));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let start = value("process_start_time_seconds");
        assert!(
            start <= now + 1.0 && start > now - 24.0 * 3600.0,
            "{start} vs {now}"
        );
        assert!(value("process_cpu_seconds_total") >= 0.0);
    }

    #[test]
    fn proc_fields_parse_with_awkward_command_names() {
        let stat = "1234 (a) b) (c) S 1 1234 1234 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 4 0 98765 123456 789 18446744073709551615";
        assert_eq!(process::start_ticks(stat), Some(98765));
        assert_eq!(process::start_ticks("garbage"), None);
        assert_eq!(process::start_ticks("1 (x) S 1"), None);
        let status = "Name:\tx\nVmSize:\t  2048 kB\nVmRSS:\t   512 kB\n";
        assert_eq!(process::status_kib(status, "VmRSS:"), Some(512.0));
        assert_eq!(process::status_kib(status, "VmSize:"), Some(2048.0));
        assert_eq!(process::status_kib(status, "VmSwap:"), None);
    }
}
