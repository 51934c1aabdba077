//! Decision latency of the router at 10, 1,000 and 10,000 rules, in dev and in prod.
//!
//! Self-contained harness (no criterion): `cargo bench --bench routing [-- FILTER]`, where the
//! optional FILTER is a substring of a configuration label such as `10000/prod`. Results and
//! their interpretation live in BENCHMARKS.md.
//!
//! What is timed: one call of `router::route` on an already parsed `RouteInput`, including
//! building and dropping the `RouteDecision` (telemetry events, candidate list, the SHA-256
//! `artifact_hash` of allowed requests). Not timed: parsing the request JSON, minting the
//! decision id and timestamp, serialising the decision. Rule sets are generated deterministically
//! (xorshift64*), are checked to contain no shadowed rules (otherwise every prod decision would be
//! the `DENY_SHADOW_RULES_DETECTED` short-circuit) and every request's matched rule is checked
//! against the linear reference scan before anything is measured.

use std::collections::{BTreeMap, BTreeSet};
use std::hint::black_box;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use wcp_hall::conformance::{FixedGate, SnapshotRegistry};
use wcp_hall::router::{
    self, CTRL_BLAST_RADIUS_SCORING, DecisionContext, GateAnswer, PolicyGate, Router, RouterConfig,
};
use wcp_hall::rules::RuleSet;
use wcp_hall::wcp::{DataLabel, Env, QosClass, RouteInput, TenantRisk};

const SIZES: [usize; 3] = [10, 1_000, 10_000];
const ENVS: [&str; 2] = ["dev", "prod"];
/// Decisions per timed sample.
const BATCH: usize = 100;
/// Each configuration takes at least this many samples and at least `MIN_TIME`.
const MIN_SAMPLES: usize = 2_000;
const MIN_TIME: Duration = Duration::from_secs(1);
const WARMUP: Duration = Duration::from_millis(300);
/// Individually timed decisions (for a true per-decision tail), at most.
const SINGLE_MAX: usize = 100_000;
const SINGLE_TIME: Duration = Duration::from_millis(500);
/// Requests per configuration, cycled through (a power of two).
const REQUESTS: usize = 4_096;
/// Share of requests (percent) that target a specific rule; the rest name unknown capabilities.
const TARGETED_PCT: u64 = 85;
/// Worker species in the registry pool, and retired (unavailable) species.
const SPECIES: usize = 200;
const RETIRED: usize = 10;
/// Controls `ctrl.bench.k00`..`k22` are present in the registry; `k23` is not.
const CONTROLS_PRESENT: usize = 23;

/// PyHall's `make_decision` on this machine class, for the table.
fn pyhall_figure(rules: usize, env: &str) -> &'static str {
    match (rules, env) {
        (10, "dev") => "36 µs",
        (10, "prod") => "114 µs",
        (1_000, "prod") => "742 ms",
        _ => "-",
    }
}

// ---------------------------------------------------------------------------------------------
// Deterministic generation.

/// xorshift64*: tiny, deterministic, good enough to shuffle rule shapes.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn percent(&mut self, p: u64) -> bool {
        self.next() % 100 < p
    }
    /// A sorted random subset of `0..n` with `k` members.
    fn subset(&mut self, n: usize, k: usize) -> Vec<usize> {
        let mut all: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            let j = self.below(i + 1);
            all.swap(i, j);
        }
        let mut out = all[..k].to_vec();
        out.sort_unstable();
        out
    }
}

/// A condition on one closed-vocabulary field, by index into the field's `NAMES`.
#[derive(Debug, Clone)]
enum Cond {
    Absent,
    Any,
    Exact(usize),
    In(Vec<usize>),
}

impl Cond {
    fn random(rng: &mut Rng, n: usize) -> Self {
        match rng.below(100) {
            0..40 => Cond::Absent,
            40..55 => Cond::Any,
            55..80 => Cond::Exact(rng.below(n)),
            _ => {
                let k = 2 + rng.below(n - 2);
                Cond::In(rng.subset(n, k))
            }
        }
    }
    fn accepts(&self, i: usize) -> bool {
        match self {
            Cond::Absent | Cond::Any => true,
            Cond::Exact(v) => *v == i,
            Cond::In(list) => list.contains(&i),
        }
    }
    /// A value index the condition accepts.
    fn pick(&self, rng: &mut Rng, n: usize) -> usize {
        match self {
            Cond::Absent | Cond::Any => rng.below(n),
            Cond::Exact(v) => *v,
            Cond::In(list) => list[rng.below(list.len())],
        }
    }
    fn to_json(&self, names: &[&str]) -> Option<Value> {
        match self {
            Cond::Absent => None,
            Cond::Any => Some(json!({"any": true})),
            Cond::Exact(v) => Some(json!(names[*v])),
            Cond::In(list) => {
                Some(json!({"in": list.iter().map(|&i| names[i]).collect::<Vec<_>>()}))
            }
        }
    }
}

#[derive(Debug, Clone)]
enum Cap {
    Exact(String),
    In(Vec<String>),
    /// The catch-all's `{"any": true}`.
    Any,
}

/// The four closed vocabularies, in `MATCH_KEYS` order after `capability_id`.
const KEYS: [&str; 4] = ["env", "data_label", "tenant_risk", "qos_class"];
const VOCABS: [&[&str]; 4] = [
    Env::NAMES,
    DataLabel::NAMES,
    TenantRisk::NAMES,
    QosClass::NAMES,
];
const ENV: usize = 0;
const QOS: usize = 3;

#[derive(Debug, Clone)]
struct Spec {
    rule_id: String,
    cap: Cap,
    conds: [Cond; 4],
    candidates: Vec<String>,
    controls: Vec<String>,
    policy_gate: bool,
    profiles: bool,
}

impl Spec {
    fn to_json(&self) -> Value {
        let mut m = serde_json::Map::new();
        m.insert(
            "capability_id".into(),
            match &self.cap {
                Cap::Exact(c) => json!(c),
                Cap::In(list) => json!({ "in": list }),
                Cap::Any => json!({"any": true}),
            },
        );
        for (k, cond) in self.conds.iter().enumerate() {
            if let Some(v) = cond.to_json(VOCABS[k]) {
                m.insert(KEYS[k].into(), v);
            }
        }
        let candidates: Vec<Value> = self
            .candidates
            .iter()
            .enumerate()
            .map(|(i, s)| json!({"worker_species_id": s, "score_hint": 0.9 - 0.2 * i as f64}))
            .collect();
        let mut decision = json!({
            "candidate_workers_ranked": candidates,
            "required_controls_suggested": self.controls,
            "escalation": {
                "policy_gate": self.policy_gate,
                "human_required_default": false,
                "rationale": if self.policy_gate { "gated capability" } else { "routine" },
            },
            "preconditions": {
                "must_have_correlation_id": true,
                "must_attach_policy_version": true,
                "deny_if_missing_required_controls": true,
            },
        });
        if self.profiles {
            decision["recommended_profiles"] =
                json!([{"profile_id": "prof.bench.standard", "max_tokens": 4096}]);
        }
        json!({"rule_id": self.rule_id, "match": m, "decision": decision})
    }
}

/// Generates `n` rules: capability groups of 1–3 rules made disjoint by partitioning `env` or
/// `qos_class`, one final specific rule with no `env` condition (reachable from dev and prod),
/// and a dev/stage catch-all.
fn generate_rules(n: usize, rng: &mut Rng) -> Vec<Spec> {
    assert!(n >= 3);
    let mut specs = Vec::with_capacity(n);
    let decision = |rng: &mut Rng, spec: &mut Spec, index: usize| {
        let k = 1 + rng.below(3);
        spec.candidates.clear();
        for _ in 0..k {
            let species = format!("wrk.bench.s{:03}", rng.below(SPECIES));
            if !spec.candidates.contains(&species) {
                spec.candidates.push(species);
            }
        }
        if rng.percent(10) {
            let retired = format!("wrk.bench.retired.r{}", rng.below(RETIRED));
            spec.candidates.insert(0, retired);
        } else if rng.percent(2) {
            spec.candidates = vec![format!("wrk.bench.retired.r{}", rng.below(RETIRED))];
        }
        let mut controls: BTreeSet<String> = (0..rng.below(4))
            .map(|_| format!("ctrl.bench.k{:02}", rng.below(CONTROLS_PRESENT)))
            .collect();
        if rng.percent(15) {
            controls.insert(CTRL_BLAST_RADIUS_SCORING.to_owned());
        }
        if rng.percent(3) {
            controls.insert(format!("ctrl.bench.k{CONTROLS_PRESENT:02}"));
        }
        spec.controls = controls.into_iter().collect();
        // Every 20th rule (from the 4th) is policy-gated, so even the 10-rule set has one.
        spec.policy_gate = index % 20 == 3;
        spec.profiles = rng.percent(20);
    };
    let random_conds = |rng: &mut Rng| -> [Cond; 4] {
        std::array::from_fn(|k| Cond::random(rng, VOCABS[k].len()))
    };
    let mut group = 0;
    while specs.len() < n - 2 {
        let remaining = n - 2 - specs.len();
        let size = match rng.below(100) {
            0..50 => 1,
            50..85 => 2,
            _ => 3,
        }
        .min(remaining);
        let name = format!("cap.bench.c{group:05}");
        // Every 20th group (from the 2nd) names its capability with an `in` list.
        let cap = if group % 20 == 1 {
            Cap::In(vec![name.clone(), format!("{name}.v2")])
        } else {
            Cap::Exact(name)
        };
        let key = if rng.percent(70) { ENV } else { QOS };
        // Disjoint slices of env (dev, stage, prod, edge) or qos (P0..P3).
        let parts: Vec<Cond> = match size {
            1 => vec![Cond::random(rng, VOCABS[key].len())],
            2 => vec![Cond::In(vec![0, 1]), Cond::In(vec![2, 3])],
            _ => vec![Cond::Exact(0), Cond::Exact(1), Cond::In(vec![2, 3])],
        };
        for part in parts {
            let mut conds = random_conds(rng);
            conds[key] = part;
            let mut spec = Spec {
                rule_id: format!("rr.bench.r{:05}", specs.len()),
                cap: cap.clone(),
                conds,
                candidates: Vec::new(),
                controls: Vec::new(),
                policy_gate: false,
                profiles: false,
            };
            decision(rng, &mut spec, specs.len());
            specs.push(spec);
        }
        group += 1;
    }
    let mut last = Spec {
        rule_id: format!("rr.bench.r{:05}", specs.len()),
        cap: Cap::Exact(format!("cap.bench.c{group:05}")),
        conds: random_conds(rng),
        candidates: Vec::new(),
        controls: Vec::new(),
        policy_gate: false,
        profiles: false,
    };
    decision(rng, &mut last, specs.len());
    last.conds[ENV] = Cond::Absent;
    // Always allowable, so the last specific rule's decision is the full allow path.
    last.candidates = vec!["wrk.bench.s000".into()];
    let absent = format!("ctrl.bench.k{CONTROLS_PRESENT:02}");
    last.controls.retain(|c| *c != absent);
    specs.push(last);
    specs.push(Spec {
        rule_id: "rr.bench.catch_all".into(),
        cap: Cap::Any,
        conds: [
            Cond::In(vec![0, 1]),
            Cond::Absent,
            Cond::Absent,
            Cond::Absent,
        ],
        candidates: vec!["wrk.bench.sandbox".into()],
        controls: Vec::new(),
        policy_gate: false,
        profiles: false,
    });
    specs
}

fn rules_json(specs: &[Spec]) -> String {
    let rules: Vec<Value> = specs.iter().map(Spec::to_json).collect();
    let doc = json!({"description": "generated by benches/routing.rs", "rules": rules});
    serde_json::to_string_pretty(&doc).expect("serialisable")
}

/// One request to route, and the rule it must match.
struct Request {
    input: RouteInput,
    expect: Option<String>,
}

/// `REQUESTS` requests in `env`: most target a random specific rule that accepts `env` (the
/// first one targets the last specific rule), the rest name capabilities no rule names.
fn generate_requests(specs: &[Spec], env: usize, rng: &mut Rng) -> Vec<Request> {
    let specific = &specs[..specs.len() - 1];
    let catch_all = &specs[specs.len() - 1];
    let applicable: Vec<&Spec> = specific
        .iter()
        .filter(|s| s.conds[ENV].accepts(env))
        .collect();
    let last = specific.last().expect("a specific rule");
    (0..REQUESTS)
        .map(|i| {
            let target = if i == 0 {
                Some(last)
            } else if rng.percent(TARGETED_PCT) && !applicable.is_empty() {
                Some(applicable[rng.below(applicable.len())])
            } else {
                None
            };
            let (cap, values, expect) = match target {
                Some(spec) => {
                    let cap = match &spec.cap {
                        Cap::Exact(c) => c.clone(),
                        Cap::In(list) => list[rng.below(list.len())].clone(),
                        Cap::Any => unreachable!("specific rules name capabilities"),
                    };
                    let values: [usize; 4] = std::array::from_fn(|k| {
                        if k == ENV {
                            env
                        } else {
                            spec.conds[k].pick(rng, VOCABS[k].len())
                        }
                    });
                    (cap, values, Some(spec.rule_id.clone()))
                }
                None => {
                    let values: [usize; 4] = std::array::from_fn(|k| {
                        if k == ENV {
                            env
                        } else {
                            rng.below(VOCABS[k].len())
                        }
                    });
                    let expect = catch_all.conds[ENV]
                        .accepts(env)
                        .then(|| catch_all.rule_id.clone());
                    (
                        format!("cap.bench.unknown.u{:04}", rng.below(1_000)),
                        values,
                        expect,
                    )
                }
            };
            // A small payload: the artifact hash covers the whole input, so size matters.
            let value = json!({
                "capability_id": cap,
                "env": VOCABS[ENV][values[0]],
                "data_label": VOCABS[1][values[1]],
                "tenant_risk": VOCABS[2][values[2]],
                "qos_class": VOCABS[3][values[3]],
                "tenant_id": format!("tenant-{:03}", rng.below(50)),
                "correlation_id": format!("corr-{:016x}", rng.next()),
                "request": {
                    "doc_id": format!("doc-{:06}", rng.below(1_000_000)),
                    "lang": "en",
                    "pages": 1 + rng.below(40),
                    "egress": rng.percent(10),
                },
            });
            Request {
                input: RouteInput::from_value(&value).expect("generated input is valid"),
                expect,
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Measurement.

struct Stats {
    load_ms: f64,
    median_us: f64,
    p99_us: f64,
    mean_us: f64,
    single_p50_us: f64,
    single_p99_us: f64,
    samples: usize,
    allowed_pct: f64,
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// Median wall time of `RuleSet::from_json_str` over a few repetitions, in ms.
fn time_load(text: &str) -> (RuleSet, f64) {
    let mut times = Vec::new();
    let started = Instant::now();
    let mut set = None;
    while times.len() < 3 || (started.elapsed() < Duration::from_millis(300) && times.len() < 50) {
        let t = Instant::now();
        let s = RuleSet::from_json_str(black_box(text)).expect("generated rules load");
        times.push(t.elapsed().as_secs_f64() * 1e3);
        set = Some(s);
    }
    times.sort_by(f64::total_cmp);
    (set.expect("loaded"), percentile(&times, 0.5))
}

fn measure(router: &Router<'_>, requests: &[Request], ctx: &DecisionContext) -> Stats {
    let mask = requests.len() - 1;
    let mut i = 0;
    let mut next = || {
        i = (i + 1) & mask;
        &requests[i].input
    };
    let warm = Instant::now();
    while warm.elapsed() < WARMUP {
        for _ in 0..BATCH {
            black_box(router::route(black_box(router), black_box(next()), ctx));
        }
    }
    let mut samples = Vec::with_capacity(MIN_SAMPLES * 4);
    let started = Instant::now();
    while samples.len() < MIN_SAMPLES || started.elapsed() < MIN_TIME {
        let t = Instant::now();
        for _ in 0..BATCH {
            black_box(router::route(black_box(router), black_box(next()), ctx));
        }
        samples.push(t.elapsed().as_nanos() as f64 / BATCH as f64);
    }
    let mut single = Vec::with_capacity(SINGLE_MAX);
    let started = Instant::now();
    while single.len() < SINGLE_MAX && started.elapsed() < SINGLE_TIME {
        let input = next();
        let t = Instant::now();
        let d = router::route(black_box(router), black_box(input), ctx);
        let ns = t.elapsed().as_nanos() as f64;
        drop(black_box(d));
        single.push(ns);
    }
    let mean = samples.iter().sum::<f64>() / samples.len() as f64;
    samples.sort_by(f64::total_cmp);
    single.sort_by(f64::total_cmp);
    Stats {
        load_ms: 0.0,
        median_us: percentile(&samples, 0.5) / 1e3,
        p99_us: percentile(&samples, 0.99) / 1e3,
        mean_us: mean / 1e3,
        single_p50_us: percentile(&single, 0.5) / 1e3,
        single_p99_us: percentile(&single, 0.99) / 1e3,
        samples: samples.len(),
        allowed_pct: 0.0,
    }
}

/// Routes every request once (untimed), checks its matched rule against the generator and the
/// linear reference scan, and returns (allowed %, outcome counts).
fn check_outcomes(
    router: &Router<'_>,
    requests: &[Request],
    ctx: &DecisionContext,
) -> (f64, BTreeMap<&'static str, usize>) {
    let mut outcomes = BTreeMap::new();
    let mut allowed = 0;
    for r in requests {
        let indexed = router.rules.first_match(&r.input).map(|x| &x.rule_id);
        let linear = router
            .rules
            .first_match_linear(&r.input)
            .map(|x| &x.rule_id);
        assert_eq!(indexed, linear, "index and linear scan disagree");
        assert_eq!(
            indexed,
            r.expect.as_ref(),
            "request matched an unexpected rule"
        );
        let d = router::route(router, &r.input, ctx);
        match &d.deny_reason_if_denied {
            None => {
                allowed += 1;
                *outcomes.entry("ALLOW").or_insert(0) += 1;
            }
            Some(reason) => *outcomes.entry(reason.code.as_str()).or_insert(0) += 1,
        }
    }
    (100.0 * allowed as f64 / requests.len() as f64, outcomes)
}

fn timer_overhead_ns() -> f64 {
    let n = 100_000;
    let t = Instant::now();
    for _ in 0..n {
        black_box(Instant::now());
    }
    t.elapsed().as_nanos() as f64 / n as f64
}

fn main() {
    // cargo passes `--bench`; any non-flag argument is a filter on "RULES/ENV".
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let wanted = |label: &str| filter.as_deref().is_none_or(|f| label.contains(f));

    let registry = SnapshotRegistry {
        controls: (0..CONTROLS_PRESENT)
            .map(|k| format!("ctrl.bench.k{k:02}"))
            .chain([CTRL_BLAST_RADIUS_SCORING.to_owned()])
            .collect(),
        workers: (0..SPECIES)
            .map(|s| format!("wrk.bench.s{s:03}"))
            .chain(["wrk.bench.sandbox".to_owned()])
            .collect(),
    };
    let config = RouterConfig::default();
    let gate = FixedGate(GateAnswer {
        decision: "ALLOW".into(),
        policy_version: "policy.bench.v1".into(),
        reason: "bench gate allows".into(),
        supervisor_level: None,
    });
    let ctx = DecisionContext {
        decision_id: "018f6c1e-7d2a-7b3c-9d4e-5f6a7b8c9d0e".into(),
        timestamp: "2026-01-01T00:00:00.000000+00:00".into(),
        task_id: "task_default".into(),
    };

    println!("wcp-hall routing benchmark (release, single thread)");
    println!(
        "  {BATCH} decisions per sample, >= {MIN_SAMPLES} samples and >= {:.1} s per configuration after {} ms warm-up",
        MIN_TIME.as_secs_f64(),
        WARMUP.as_millis()
    );
    println!(
        "  {REQUESTS} requests per configuration, {TARGETED_PCT}% targeting a rule (the first one the last specific rule), the rest unknown capabilities"
    );
    println!(
        "  request payload: 4 fields (doc_id, lang, pages, egress), about 70 bytes; Instant::now() costs {:.0} ns",
        timer_overhead_ns()
    );
    println!();

    let mut rows = Vec::new();
    for &n in &SIZES {
        if !ENVS.iter().any(|e| wanted(&format!("{n}/{e}"))) {
            continue;
        }
        let mut rng = Rng::new(0x5EED_0000 + n as u64);
        let specs = generate_rules(n, &mut rng);
        let text = rules_json(&specs);
        let (rules, load_ms) = time_load(&text);
        assert_eq!(rules.rules().len(), n);
        assert!(
            rules.shadows().is_empty(),
            "generated rule set has shadowed rules: {:?}",
            &rules.shadows()[..rules.shadows().len().min(3)]
        );
        let caps: BTreeSet<&str> = specs
            .iter()
            .flat_map(|s| match &s.cap {
                Cap::Exact(c) => vec![c.as_str()],
                Cap::In(l) => l.iter().map(String::as_str).collect(),
                Cap::Any => vec![],
            })
            .collect();
        println!(
            "{n} rules: {} capabilities, {} rules with a capability list, {} policy-gated, {:.1} KiB JSON, no shadowed rules",
            caps.len(),
            specs.iter().filter(|s| matches!(s.cap, Cap::In(_))).count(),
            specs.iter().filter(|s| s.policy_gate).count(),
            text.len() as f64 / 1024.0
        );
        let router = Router {
            rules: &rules,
            registry: &registry,
            config: &config,
            gate: Some(&gate as &dyn PolicyGate),
            hashes: None,
            privilege: None,
            human_approval: None,
        };
        for (e, env) in ENVS.iter().enumerate() {
            let label = format!("{n}/{env}");
            if !wanted(&label) {
                continue;
            }
            let env_index = Env::NAMES.iter().position(|x| x == env).expect("known env");
            let mut rng = Rng::new(0xBE4C_0000 + (n * 10 + e) as u64);
            let requests = generate_requests(&specs, env_index, &mut rng);
            let (allowed_pct, outcomes) = check_outcomes(&router, &requests, &ctx);
            let summary: Vec<String> = outcomes.iter().map(|(k, v)| format!("{k} {v}")).collect();
            println!("  {label}: {}", summary.join(", "));
            let mut stats = measure(&router, &requests, &ctx);
            stats.load_ms = load_ms;
            stats.allowed_pct = allowed_pct;
            rows.push((n, *env, stats));
        }
    }
    if rows.is_empty() {
        println!("no configuration matches the filter {filter:?}");
        return;
    }

    println!();
    println!(
        "{:>6}  {:<4}  {:>11}  {:>9}  {:>9}  {:>9}  {:>10}  {:>10}  {:>12}  {:>7}  {:>7}  {:>8}",
        "rules",
        "env",
        "load (ms)",
        "median µs",
        "p99 µs",
        "mean µs",
        "1x p50 µs",
        "1x p99 µs",
        "decisions/s",
        "allowed",
        "samples",
        "PyHall"
    );
    for (n, env, s) in &rows {
        println!(
            "{:>6}  {:<4}  {:>11.3}  {:>9.2}  {:>9.2}  {:>9.2}  {:>10.2}  {:>10.2}  {:>12.0}  {:>6.1}%  {:>7}  {:>8}",
            n,
            env,
            s.load_ms,
            s.median_us,
            s.p99_us,
            s.mean_us,
            s.single_p50_us,
            s.single_p99_us,
            1e6 / s.mean_us,
            s.allowed_pct,
            s.samples,
            pyhall_figure(*n, env)
        );
    }
    println!();
    println!(
        "median/p99/mean: per decision, over samples of {BATCH} decisions; 1x: decisions timed one by one (includes timer cost)"
    );
    println!("targets:");
    for (n, limit) in [(10, 5.0), (10_000, 20.0)] {
        for (_, env, s) in rows.iter().filter(|(m, _, _)| *m == n) {
            let verdict = if s.median_us <= limit { "PASS" } else { "MISS" };
            println!(
                "  median <= {limit:>4.1} µs at {n:>6} rules, {env:<4}: {:>6.2} µs  {verdict}",
                s.median_us
            );
        }
    }
}
