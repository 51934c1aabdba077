//! The policy gate inside the real router: the bundled rules, registry records, profiles and
//! Cedar policy set, decisions routed end to end through `router::route` with `HallGate` as the
//! `PolicyGate`.

use std::path::Path;

use serde_json::{Value, json};
use wcp_hall::policy::{EnvProfiles, HallGate, ProfileSet};
use wcp_hall::registry::{ControlsScope, RegistryDir};
use wcp_hall::router::{self, DecisionContext, Router, RouterConfig};
use wcp_hall::rules::RuleSet;
use wcp_hall::wcp::{Env, RouteDecision, RouteInput};

fn repo(p: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

fn gate() -> HallGate {
    let set = ProfileSet::load_dir(&repo("policies/profiles")).unwrap();
    let sel = EnvProfiles::select(
        &set,
        [
            (Env::Dev, "prof.dev.permissive"),
            (Env::Stage, "prof.dev.permissive"),
            (Env::Prod, "prof.prod.strict"),
            (Env::Edge, "prof.edge.isolated"),
        ],
    )
    .unwrap();
    HallGate::load(&sel).unwrap()
}

fn bundled_rules() -> String {
    std::fs::read_to_string(repo("policies/rules.json")).unwrap()
}

fn route(gate: &HallGate, input: Value) -> RouteDecision {
    route_with(&bundled_rules(), gate, input)
}

/// Routes with `rules_json`, the bundled registry records (per-worker controls scope; also the
/// privilege envelope check) and the Cedar gate.
fn route_with(rules_json: &str, gate: &HallGate, input: Value) -> RouteDecision {
    let rules = RuleSet::from_json_str(rules_json).unwrap();
    let registry = RegistryDir::open(repo("policies/registry"))
        .unwrap()
        .snapshot(ControlsScope::PerWorker);
    let config = RouterConfig::default();
    let router = Router {
        rules: &rules,
        registry: &registry,
        config: &config,
        gate: Some(gate),
        hashes: None,
        privilege: Some(&registry),
        human_approval: None,
    };
    let input = RouteInput::from_value(&input).unwrap();
    router::route(
        &router,
        &input,
        &DecisionContext {
            decision_id: "d".into(),
            timestamp: "2026-11-24T00:00:00+00:00".into(),
            task_id: "t".into(),
        },
    )
}

fn hello(env: &str, label: &str, risk: &str, qos: &str) -> Value {
    json!({
        "correlation_id": "6f1c4b1e-2d55-4a55-9a39-6a3a3f2b7c10",
        "tenant_id": "acme-corp",
        "env": env,
        "data_label": label,
        "tenant_risk": risk,
        "qos_class": qos,
        "capability_id": "cap.hello.greet",
        "request": {"name": "Ada"},
    })
}

fn gated_version(d: &RouteDecision) -> String {
    let v = serde_json::to_value(d).unwrap();
    v["telemetry_envelopes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event_id"] == "evt.os.policy.gated")
        .map(|e| e["policy_version"].as_str().unwrap().to_owned())
        .unwrap()
}

#[test]
fn a_gated_rule_is_allowed_by_the_cedar_set_and_reports_its_version() {
    let g = gate();
    let d = route(&g, hello("prod", "INTERNAL", "low", "P2"));
    assert!(!d.denied, "{:?}", d.deny_reason_if_denied);
    assert_eq!(d.matched_rule_id, "rr_hello_prod");
    let v = gated_version(&d);
    assert!(v.starts_with("wcp-default@1.0.0+"), "{v}");
}

#[test]
fn a_high_risk_tenant_in_prod_waits_for_a_gatekeeper() {
    let g = gate();
    let d = route(&g, hello("prod", "INTERNAL", "high", "P2"));
    assert!(d.denied);
    let reason = serde_json::to_value(d.deny_reason_if_denied.as_ref().unwrap()).unwrap();
    assert_eq!(reason["code"], "DENY_REQUIRES_HUMAN_APPROVAL");
    assert_eq!(reason["supervisor_required"], true);
    assert!(
        reason["reason"]
            .as_str()
            .unwrap()
            .starts_with("gatekeeper review required by pol.prod.high-risk-tenant:"),
        "{reason}"
    );
    assert!(
        reason["policy_version"]
            .as_str()
            .unwrap()
            .starts_with("wcp-default@")
    );
    // P0 raises the level to an incident commander.
    let d = route(&g, hello("prod", "INTERNAL", "high", "P0"));
    let reason = serde_json::to_value(d.deny_reason_if_denied.as_ref().unwrap()).unwrap();
    assert!(
        reason["reason"]
            .as_str()
            .unwrap()
            .starts_with("incident_commander review required by"),
        "{reason}"
    );
}

#[test]
fn no_permit_at_the_edge_is_a_policy_gate_denial_with_the_reason() {
    let g = gate();
    let d = route(&g, hello("edge", "PUBLIC", "high", "P2"));
    assert!(d.denied);
    let reason = serde_json::to_value(d.deny_reason_if_denied.as_ref().unwrap()).unwrap();
    assert_eq!(reason["code"], "DENY_POLICY_GATE");
    assert_eq!(reason["reason"], "no permit matched (default deny)");
}

#[test]
fn restricted_data_in_dev_waits_for_a_gatekeeper() {
    let g = gate();
    let d = route(&g, hello("dev", "RESTRICTED", "low", "P2"));
    assert_eq!(d.matched_rule_id, "rr_hello_restricted_dev");
    let reason = serde_json::to_value(d.deny_reason_if_denied.as_ref().unwrap()).unwrap();
    assert_eq!(reason["code"], "DENY_REQUIRES_HUMAN_APPROVAL");
    assert_eq!(reason["supervisor_level"], "gatekeeper");
    assert!(
        reason["reason"]
            .as_str()
            .unwrap()
            .starts_with("gatekeeper review required by pol.nonprod.restricted-review:"),
        "{reason}"
    );
}

#[test]
fn rules_without_policy_gate_do_not_consult_it() {
    let g = gate();
    // The same rule with the gate turned off: the Cedar set (which asks for a gatekeeper on
    // RESTRICTED data) is not consulted, because the profile does not gate every dispatch in dev.
    let bundled = bundled_rules();
    let mut rules: Value = serde_json::from_str(&bundled).unwrap();
    let rule = rules["rules"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|r| r["rule_id"] == "rr_hello_restricted_dev")
        .unwrap();
    assert_eq!(rule["decision"]["escalation"]["policy_gate"], true);
    rule["decision"]["escalation"]["policy_gate"] = json!(false);
    let d = route_with(
        &rules.to_string(),
        &g,
        hello("dev", "RESTRICTED", "high", "P2"),
    );
    assert!(!d.denied, "{:?}", d.deny_reason_if_denied);
    assert_eq!(gated_version(&d), router::DEFAULT_POLICY_VERSION);
    // But the profile says whether it should be: the router integration uses this.
    assert!(!g.gates_every_dispatch(Env::Dev));
    assert!(g.gates_every_dispatch(Env::Prod));
}
