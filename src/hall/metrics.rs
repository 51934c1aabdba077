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

/// The daemon's metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    counters: Mutex<BTreeMap<(&'static str, String), u64>>,
    latency: Mutex<Histogram>,
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
        if h.counts.is_empty() {
            h.counts = vec![0; BUCKETS.len()];
        }
        for (i, b) in BUCKETS.iter().enumerate() {
            if seconds <= *b {
                h.counts[i] += 1;
            }
        }
        h.sum += seconds;
        h.count += 1;
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
        for (i, b) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{b}\"}} {}",
                h.counts.get(i).copied().unwrap_or(0)
            );
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", h.count);
        let _ = writeln!(out, "{name}_sum {}", h.sum);
        let _ = writeln!(out, "{name}_count {}", h.count);
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
        let text = m.render(&[("wcp_hall_in_flight", "Requests executing.", 2.0)]);
        assert!(text.contains(
            "wcp_hall_decisions_total{outcome=\"denied\",code=\"DENY_NO_MATCHING_RULE\"} 2"
        ));
        assert!(text.contains("wcp_hall_dispatch_duration_seconds_bucket{le=\"0.005\"} 1"));
        assert!(text.contains("wcp_hall_dispatch_duration_seconds_bucket{le=\"0.0025\"} 0"));
        assert!(text.contains("wcp_hall_dispatch_duration_seconds_count 1"));
        assert!(text.contains("wcp_hall_in_flight 2"));
    }
}
