//! Prometheus text exposition for `GET /metrics`.
//!
//! A handful of counter families with labels and one latency histogram, kept in memory; the
//! text format is small and stable, so it is rendered here rather than pulling a metrics stack.
//! Label values come from a closed set (endpoint names, deny codes, HTTP statuses), never from
//! caller-chosen strings, so the series count stays bounded.

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

/// The daemon's metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    counters: Mutex<BTreeMap<(&'static str, String), u64>>,
    latency: Mutex<Histogram>,
    phases: Mutex<BTreeMap<&'static str, Histogram>>,
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

    /// Renders every family, plus the given gauges, in the Prometheus text format.
    pub fn render(&self, gauges: &[(&str, &str, f64)]) -> String {
        let mut out = String::new();
        let counters = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        let mut last = "";
        for ((name, l), v) in counters.iter() {
            if *name != last {
                let _ = writeln!(out, "# TYPE {name} counter");
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
        let _ = writeln!(
            out,
            "# HELP {name} Wall time of POST /wcp/dispatch requests."
        );
        let _ = writeln!(out, "# TYPE {name} histogram");
        h.render(&mut out, name, "");
        drop(h);
        let phases = self.phases.lock().unwrap_or_else(|p| p.into_inner());
        if !phases.is_empty() {
            let name = "wcp_hall_execution_phase_seconds";
            let _ = writeln!(
                out,
                "# HELP {name} Wall time of each phase of an executed dispatch (verify, intent_receipt, run, outcome_receipt)."
            );
            let _ = writeln!(out, "# TYPE {name} histogram");
            for (phase, h) in phases.iter() {
                h.render(&mut out, name, &labels(&[("phase", phase)]));
            }
        }
        for (name, help, v) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} gauge");
            let _ = writeln!(out, "{name} {v}");
        }
        out
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
}
