//! Cost of the policy gate: one Cedar evaluation, the whole gate (profile blast check + Cedar),
//! and a whole `router::route` with the gate on, plus loading a policy set.
//!
//! Self-contained harness (no criterion): `cargo bench --bench policy [-- FILTER]`, FILTER being a
//! substring of a configuration label. Results and their interpretation live in BENCHMARKS.md
//! ("## Policy gate").
//!
//! What is timed, per configuration:
//! - `cedar/*`: `CedarEngine::evaluate` on an already built `PolicyRequest` with the bundled
//!   `wcp-default` set (15 policies): building the Cedar context, the entity-store lookup,
//!   Cedar's authorizer, mapping the answer to a `Verdict` (ids and reasons cloned), dropping it.
//! - `gate/*`: `HallGate::decide` (blast assessment against the profile + the above + combining
//!   reasons and the summary line).
//! - `route/*`: `router::route` on a parsed `RouteInput` with the bundled rules, through to the
//!   `RouteDecision`, once with `HallGate` as the policy gate and once with a fixed ALLOW gate.
//!
//! Not timed: parsing requests, reading files, minting decision ids.

use std::collections::BTreeSet;
use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;
use wcp_hall::conformance::{FixedGate, SnapshotRegistry};
use wcp_hall::policy::golden;
use wcp_hall::policy::source::{compile, read_sources};
use wcp_hall::policy::{
    CedarEngine, EnvProfiles, HallGate, Outcome, PolicyEngine, PolicyRequest, ProfileSet,
};
use wcp_hall::router::{self, DecisionContext, GateAnswer, PolicyGate, Router, RouterConfig};
use wcp_hall::rules::RuleSet;
use wcp_hall::wcp::{Env, RouteInput};

/// Calls per timed sample.
const BATCH: usize = 100;
const MIN_SAMPLES: usize = 1_000;
const MIN_TIME: Duration = Duration::from_millis(1_000);
const WARMUP: Duration = Duration::from_millis(300);
const SINGLE_MAX: usize = 50_000;
const SINGLE_TIME: Duration = Duration::from_millis(400);
const LOADS: usize = 30;

struct Stats {
    median_us: f64,
    p99_us: f64,
    mean_us: f64,
    single_p50_us: f64,
    single_p99_us: f64,
    samples: usize,
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i]
}

/// Times `f(i)` for i = 0, 1, 2, …: in batches (median/p99/mean per call) and one by one.
fn measure(mut f: impl FnMut(usize)) -> Stats {
    let mut i = 0usize;
    let warm = Instant::now();
    while warm.elapsed() < WARMUP {
        for _ in 0..BATCH {
            f(i);
            i += 1;
        }
    }
    let mut samples = Vec::with_capacity(MIN_SAMPLES * 4);
    let started = Instant::now();
    while samples.len() < MIN_SAMPLES || started.elapsed() < MIN_TIME {
        let t = Instant::now();
        for _ in 0..BATCH {
            f(i);
            i += 1;
        }
        samples.push(t.elapsed().as_nanos() as f64 / BATCH as f64);
    }
    let mut single = Vec::with_capacity(SINGLE_MAX);
    let started = Instant::now();
    while single.len() < SINGLE_MAX && started.elapsed() < SINGLE_TIME {
        let t = Instant::now();
        f(i);
        single.push(t.elapsed().as_nanos() as f64);
        i += 1;
    }
    let mean = samples.iter().sum::<f64>() / samples.len() as f64;
    samples.sort_by(f64::total_cmp);
    single.sort_by(f64::total_cmp);
    Stats {
        median_us: percentile(&samples, 0.5) / 1e3,
        p99_us: percentile(&samples, 0.99) / 1e3,
        mean_us: mean / 1e3,
        single_p50_us: percentile(&single, 0.5) / 1e3,
        single_p99_us: percentile(&single, 0.99) / 1e3,
        samples: samples.len(),
    }
}

fn repo(p: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

fn hello(env: &str, label: &str, risk: &str, qos: &str, n: usize) -> RouteInput {
    RouteInput::from_value(&json!({
        "correlation_id": format!("6f1c4b1e-2d55-4a55-9a39-{n:012}"),
        "tenant_id": "acme-corp",
        "env": env,
        "data_label": label,
        "tenant_risk": risk,
        "qos_class": qos,
        "capability_id": "cap.hello.greet",
        "request": {"name": "Ada", "lang": "en"},
    }))
    .unwrap()
}

fn main() {
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let wanted = |label: &str| filter.as_deref().is_none_or(|f| label.contains(f));

    // The bundled policy set, profiles and rules.
    let sources = read_sources(&repo("policies/cedar")).unwrap();
    let (engine, report) = CedarEngine::from_sources(&sources).unwrap();
    let report = report.unwrap();
    assert_eq!(report.failed(), 0);
    let golden_file = sources.golden.as_ref().unwrap();
    let suite = golden::parse(&golden_file.text, &golden_file.display).unwrap();
    let requests: Vec<PolicyRequest> = suite.cases.iter().map(|c| c.request.clone()).collect();
    let profiles = ProfileSet::load_dir(&repo("policies/profiles")).unwrap();
    let selection = EnvProfiles::select(
        &profiles,
        [
            (Env::Dev, "prof.dev.permissive"),
            (Env::Stage, "prof.dev.permissive"),
            (Env::Prod, "prof.prod.strict"),
            (Env::Edge, "prof.edge.isolated"),
        ],
    )
    .unwrap();
    let gate = HallGate::load(&selection).unwrap();
    let rules =
        RuleSet::from_json_str(&std::fs::read_to_string(repo("policies/rules.json")).unwrap())
            .unwrap();
    let mut registry = SnapshotRegistry::default();
    for rule in rules.rules() {
        registry
            .controls
            .extend(rule.decision.required_controls.iter().cloned());
        registry.workers.extend(
            rule.decision
                .candidate_workers_ranked
                .iter()
                .map(|c| c.worker_species_id.clone()),
        );
    }
    // The bundled records answer the privilege-envelope check (rr_hello_prod requires
    // ctrl.privilege_envelopes_required), so the allowed inputs below are really allowed.
    let bundled = wcp_hall::snapshot::Loaded::load(&repo("policies/hall.toml"), 1)
        .expect("policies/hall.toml loads");
    let config = RouterConfig::default();
    let fixed = FixedGate(GateAnswer {
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
    // Route inputs on the gated rule rr_hello_prod: 3 allowed, 1 REQUIRE_HUMAN, 1 DENY (edge).
    let route_inputs: Vec<RouteInput> = [
        ("prod", "INTERNAL", "low", "P2"),
        ("prod", "PUBLIC", "medium", "P1"),
        ("edge", "PUBLIC", "low", "P3"),
        ("prod", "INTERNAL", "high", "P2"),
        ("edge", "INTERNAL", "high", "P2"),
    ]
    .iter()
    .enumerate()
    .map(|(n, (e, l, r, q))| hello(e, l, r, q, n))
    .collect();
    let outcomes: BTreeSet<String> = requests
        .iter()
        .map(|r| engine.evaluate(r).unwrap().outcome.to_string())
        .collect();
    // requests[0]: dev, no worker (2 policies evaluated); the same with 65,536 capabilities,
    // beyond the entity cache's 4,096.
    let simple = requests[0].clone();
    let distinct_caps: Vec<PolicyRequest> = (0..65_536)
        .map(|i| {
            let mut r = simple.clone();
            r.capability_id = format!("cap.bench.c{i:05}");
            r
        })
        .collect();
    let routine = requests
        .iter()
        .find(|r| r.worker.is_some() && engine.evaluate(r).unwrap().outcome == Outcome::Allow)
        .unwrap()
        .clone();

    println!("wcp-hall policy gate benchmark (release, single thread)");
    let evaluated: Vec<usize> = requests
        .iter()
        .map(|r| engine.policies_evaluated(r))
        .collect();
    println!(
        "  policy set {} ({} policies); {} golden requests cycled, outcomes: {}",
        engine.policy_version(),
        engine.policy_set().len(),
        requests.len(),
        outcomes.into_iter().collect::<Vec<_>>().join(", ")
    );
    println!(
        "  policies Cedar evaluates per golden request after the cell partition: {:.1} on average (min {}, max {}); prod-routine-worker: {}",
        evaluated.iter().sum::<usize>() as f64 / evaluated.len() as f64,
        evaluated.iter().min().unwrap(),
        evaluated.iter().max().unwrap(),
        engine.policies_evaluated(&routine)
    );
    println!(
        "  {BATCH} calls per sample, >= {MIN_SAMPLES} samples and >= {:.1} s per configuration after {} ms warm-up",
        MIN_TIME.as_secs_f64(),
        WARMUP.as_millis()
    );
    println!();

    let mut rows: Vec<(&str, Stats)> = Vec::new();
    let n = requests.len();
    if wanted("cedar/golden-mix") {
        rows.push((
            "cedar/golden-mix",
            measure(|i| {
                black_box(engine.evaluate(black_box(&requests[i % n])).unwrap());
            }),
        ));
    }
    if wanted("cedar/golden-mix-unpartitioned") {
        rows.push((
            "cedar/golden-mix-unpartitioned",
            measure(|i| {
                black_box(
                    engine
                        .evaluate_unpartitioned(black_box(&requests[i % n]))
                        .unwrap(),
                );
            }),
        ));
    }
    if wanted("cedar/prod-routine-worker") {
        rows.push((
            "cedar/prod-routine-worker",
            measure(|_| {
                black_box(engine.evaluate(black_box(&routine)).unwrap());
            }),
        ));
    }
    if wanted("cedar/dev-no-worker") {
        rows.push((
            "cedar/dev-no-worker",
            measure(|_| {
                black_box(engine.evaluate(black_box(&simple)).unwrap());
            }),
        ));
    }
    if wanted("cedar/dev-no-worker-uncached") {
        rows.push((
            "cedar/dev-no-worker-uncached",
            measure(|i| {
                black_box(
                    engine
                        .evaluate(black_box(&distinct_caps[i % distinct_caps.len()]))
                        .unwrap(),
                );
            }),
        ));
    }
    if wanted("gate/golden-mix") {
        rows.push((
            "gate/golden-mix",
            measure(|i| {
                black_box(gate.decide(black_box(&requests[i % n])).unwrap());
            }),
        ));
    }
    let m = route_inputs.len();
    let route_with = |g: &dyn PolicyGate| {
        let router = Router {
            rules: &rules,
            registry: &registry,
            config: &config,
            gate: Some(g),
            hashes: None,
            privilege: Some(&bundled.registry),
            human_approval: None,
        };
        measure(|i| {
            black_box(router::route(
                black_box(&router),
                black_box(&route_inputs[i % m]),
                &ctx,
            ));
        })
    };
    // The mix the rows claim (3 allowed, 1 REQUIRE_HUMAN, 1 denied), printed before timing it.
    {
        let router = Router {
            rules: &rules,
            registry: &registry,
            config: &config,
            gate: Some(&gate),
            hashes: None,
            privilege: Some(&bundled.registry),
            human_approval: None,
        };
        let mix: Vec<String> = route_inputs
            .iter()
            .map(|input| {
                let d = router::route(&router, input, &ctx);
                d.deny_code().map_or("ALLOW", |c| c.as_str()).to_owned()
            })
            .collect();
        println!("route inputs decide: {}", mix.join(", "));
    }
    if wanted("route/hall-gate") {
        rows.push(("route/hall-gate", route_with(&gate)));
    }
    if wanted("route/fixed-allow-gate") {
        rows.push(("route/fixed-allow-gate", route_with(&fixed)));
    }

    println!(
        "{:<28}  {:>9}  {:>9}  {:>9}  {:>10}  {:>10}  {:>12}  {:>7}",
        "configuration",
        "median µs",
        "p99 µs",
        "mean µs",
        "1x p50 µs",
        "1x p99 µs",
        "calls/s",
        "samples"
    );
    for (label, s) in &rows {
        println!(
            "{:<28}  {:>9.2}  {:>9.2}  {:>9.2}  {:>10.2}  {:>10.2}  {:>12.0}  {:>7}",
            label,
            s.median_us,
            s.p99_us,
            s.mean_us,
            s.single_p50_us,
            s.single_p99_us,
            1e6 / s.mean_us,
            s.samples
        );
    }
    println!();
    println!(
        "median/p99/mean: per call, over samples of {BATCH} calls; 1x: calls timed one by one (includes timer cost)"
    );

    if wanted("load") {
        let mut compile_ms = Vec::new();
        let mut full_ms = Vec::new();
        for _ in 0..LOADS {
            let t = Instant::now();
            black_box(compile(black_box(&sources)).unwrap());
            compile_ms.push(t.elapsed().as_secs_f64() * 1e3);
            let t = Instant::now();
            black_box(CedarEngine::from_sources(black_box(&sources)).unwrap());
            full_ms.push(t.elapsed().as_secs_f64() * 1e3);
        }
        compile_ms.sort_by(f64::total_cmp);
        full_ms.sort_by(f64::total_cmp);
        println!(
            "load (median of {LOADS}): compile + validate {:.2} ms; compile + validate + {} golden decisions {:.2} ms",
            percentile(&compile_ms, 0.5),
            requests.len(),
            percentile(&full_ms, 0.5)
        );
    }

    println!("targets:");
    for (label, limit, what) in [
        (
            "cedar/golden-mix",
            6.9,
            "reference: 6.9 µs for a small Cedar set (ecosystem.md §5.1)",
        ),
        ("route/hall-gate", 20.0, "whole decision with the gate on"),
    ] {
        if let Some((_, s)) = rows.iter().find(|(l, _)| *l == label) {
            let verdict = if s.median_us <= limit { "PASS" } else { "MISS" };
            println!(
                "  {label:<22} median <= {limit:>4.1} µs: {:>6.2} µs  {verdict}  ({what})",
                s.median_us
            );
        }
    }
}
