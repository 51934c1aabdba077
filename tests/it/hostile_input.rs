//! Hostile input never panics: mutated rules, inputs and records each give a typed error (or a
//! valid result), deeply nested JSON is refused, and a routed decision is always a decision.

use serde_json::{Value, json};
use wcp_hall::conformance::SnapshotRegistry;
use wcp_hall::registry::RegistryRecord;
use wcp_hall::router::{Router, RouterConfig, route};
use wcp_hall::rules::RuleSet;
use wcp_hall::wcp::RouteInput;

/// Deterministic xorshift64 so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn weird(rng: &mut Rng) -> Value {
    let pool = [
        json!(null),
        json!(true),
        json!(-1),
        json!(1e308),
        json!(18446744073709551615u64),
        json!(""),
        json!("\u{0}\n\u{2028}"),
        json!("é".repeat(300)),
        json!([]),
        json!([null, {}]),
        json!({}),
        json!({"in": "dev"}),
        json!({"any": true}),
        json!({"eq": 1}),
    ];
    pool[rng.below(pool.len())].clone()
}

/// Replaces, deletes or adds one value somewhere in `v`.
fn mutate(v: &mut Value, rng: &mut Rng, depth: usize) {
    match v {
        Value::Object(map) if !map.is_empty() && depth < 6 => {
            let keys: Vec<String> = map.keys().cloned().collect();
            let key = &keys[rng.below(keys.len())];
            match rng.below(4) {
                0 => {
                    map.shift_remove(key);
                }
                1 => {
                    map.insert(format!("x_{}", rng.below(3)), weird(rng));
                }
                2 => {
                    map.insert(key.clone(), weird(rng));
                }
                _ => {
                    if let Some(inner) = map.get_mut(key) {
                        mutate(inner, rng, depth + 1);
                    }
                }
            }
        }
        Value::Array(items) if !items.is_empty() && depth < 6 => {
            let i = rng.below(items.len());
            if rng.below(3) == 0 {
                items[i] = weird(rng);
            } else {
                mutate(&mut items[i], rng, depth + 1);
            }
        }
        other => *other = weird(rng),
    }
}

fn vectors() -> Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/vectors/routing.json"
    ))
    .expect("vectors present");
    serde_json::from_str(&text).expect("vectors parse")
}

#[test]
fn mutated_rule_sets_and_inputs_never_panic_and_always_decide() {
    let doc = vectors();
    let rule_sets: Vec<Value> = doc["rule_sets"]
        .as_object()
        .unwrap()
        .values()
        .cloned()
        .collect();
    let inputs: Vec<Value> = doc["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["input"].clone())
        .collect();
    let registry = SnapshotRegistry::default();
    let config = RouterConfig::default();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let (mut rules_ok, mut rules_err, mut inputs_ok, mut inputs_err) = (0, 0, 0, 0);
    for _ in 0..3_000 {
        let mut rules_doc = rule_sets[rng.below(rule_sets.len())].clone();
        if rng.below(4) != 0 {
            mutate(&mut rules_doc, &mut rng, 0);
        }
        let Ok(rules) = RuleSet::from_value(&rules_doc) else {
            rules_err += 1;
            continue;
        };
        rules_ok += 1;
        let mut input = inputs[rng.below(inputs.len())].clone();
        if rng.below(2) == 0 {
            mutate(&mut input, &mut rng, 0);
        }
        match RouteInput::from_value(&input) {
            Ok(input) => {
                inputs_ok += 1;
                let router = Router {
                    rules: &rules,
                    registry: &registry,
                    config: &config,
                    gate: None,
                    hashes: None,
                    privilege: None,
                    human_approval: None,
                };
                let ctx = wcp_hall::clock::mint_context("t");
                let d = route(&router, &input, &ctx);
                // Every decision is either an allow with a worker or a deny with a reason.
                assert_eq!(d.denied, d.deny_reason_if_denied.is_some());
                assert_eq!(d.denied, d.selected_worker_species_id.is_none());
                assert!(!d.telemetry_envelopes.is_empty());
                serde_json::to_string(&d).expect("decisions always serialise");
            }
            Err(e) => {
                inputs_err += 1;
                assert!(e.to_string().starts_with("RouteInput"), "{e}");
            }
        }
    }
    // The mutations exercise both outcomes on both parsers.
    assert!(
        rules_ok > 100 && rules_err > 100,
        "rules ok {rules_ok}, err {rules_err}"
    );
    assert!(
        inputs_ok > 100 && inputs_err > 100,
        "inputs ok {inputs_ok}, err {inputs_err}"
    );
}

#[test]
fn mutated_registry_records_give_typed_errors() {
    let record = json!({
        "worker_id": "org.example.hello-greeter.1", "worker_species_id": "wrk.hello.greeter",
        "capabilities": ["cap.hello.greet"], "risk_tier": "low",
        "currently_implements": ["ctrl.obs.audit-log-append-only"], "allowed_environments": ["dev"],
        "privilege_envelope": {"secrets_access": [], "network_egress": "none", "filesystem_writes": [], "tools": []},
        "blast_radius": {"data": 0, "network": 0, "financial": 0, "time": 0, "reversibility": "reversible"}
    });
    assert!(RegistryRecord::from_value(&record).is_ok());
    let mut rng = Rng(42);
    let mut errors = 0;
    for _ in 0..2_000 {
        let mut r = record.clone();
        mutate(&mut r, &mut rng, 0);
        if let Err(e) = RegistryRecord::from_value(&r) {
            errors += 1;
            assert!(!e.to_string().is_empty());
        }
    }
    assert!(
        errors > 500,
        "mutations should mostly be refused, {errors} were"
    );
}

#[test]
fn deeply_nested_and_oversized_json_is_an_error_not_a_crash() {
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    assert!(RuleSet::from_json_str(&deep).is_err());
    let deep_request = format!(
        r#"{{"capability_id": "cap.a", "env": "dev", "data_label": "PUBLIC", "tenant_risk": "low",
             "qos_class": "P0", "request": {}{}}}"#,
        "{\"a\":".repeat(10_000),
        "}".repeat(10_000)
    );
    assert!(RouteInput::from_json_str(&deep_request).is_err());
    assert!(RouteInput::from_json_str(&"x".repeat(1 << 20)).is_err());
}
