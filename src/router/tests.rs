//! Unit tests of the decision pipeline: every deny code with its exact message, extras,
//! matched rule and escalation; the allow path's telemetry; the blast table; candidate selection;
//! the artifact hash; and the serialised shape of a decision.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};

use serde_json::{Map, Value, json};

use super::*;
use crate::conformance::{FixedGate, FixedHashes, SnapshotRegistry};
use crate::wcp::telemetry::sanitize;
use crate::wcp::{CandidateWorker, Preconditions};

// ---------------------------------------------------------------------------------------------
// Fixture

const TS: &str = "2026-01-02T03:04:05.123456+00:00";
const DECISION_ID: &str = "11111111-2222-4333-8444-555555555555";
const TASK_ID: &str = "task-7";

const CTRL_AUDIT: &str = "ctrl.obs.audit";
const WRK_A: &str = "wrk.doc.a";
const WRK_B: &str = "wrk.doc.b";

/// One rule per capability, so there are no shadows and prod routing works.
fn rules_doc() -> Value {
    json!({"rules": [
        {"rule_id": "rr_doc", "match": {"capability_id": "cap.doc.summarize"},
         "decision": {
            "candidate_workers_ranked": [
                {"worker_species_id": WRK_A, "score_hint": 1.0},
                {"worker_species_id": WRK_B, "score_hint": 0.5}
            ],
            "required_controls_suggested": [CTRL_AUDIT],
            "recommended_profiles": [{"profile_id": "p.fast"}],
            "escalation": {"msavx_step_up": true, "human_required_if": ["tenant_risk=high"],
                           "rationale": "doc-rationale"},
            "preconditions": {"deny_if_no_attestation_in_prod": true}}},
        {"rule_id": "rr_gated", "match": {"capability_id": "cap.gated"},
         "decision": {
            "candidate_workers_ranked": [{"worker_species_id": WRK_A}],
            "escalation": {"policy_gate": true, "msavx_step_up": true,
                           "rationale": "gate-rationale"}}},
        {"rule_id": "rr_priv", "match": {"capability_id": "cap.priv"},
         "decision": {
            "candidate_workers_ranked": [{"worker_species_id": WRK_A}],
            "required_controls_suggested": [CTRL_PRIVILEGE_ENVELOPES_REQUIRED],
            "escalation": {"human_required_if": ["always"]}}},
        {"rule_id": "rr_full", "match": {"capability_id": "cap.full"},
         "decision": {
            "candidate_workers_ranked": [
                {"worker_species_id": WRK_B}, {"worker_species_id": WRK_A, "score_hint": 3}
            ],
            "required_controls_suggested": [CTRL_PRIVILEGE_ENVELOPES_REQUIRED, CTRL_AUDIT],
            "escalation": {"policy_gate": true}}},
        {"rule_id": "rr_blast", "match": {"capability_id": "cap.blast"},
         "decision": {
            "candidate_workers_ranked": [{"worker_species_id": WRK_A}],
            "required_controls_suggested": [CTRL_BLAST_RADIUS_SCORING],
            "escalation": {"msavx_step_up": true, "rationale": "blast-rule"}}},
        {"rule_id": "rr_none", "match": {"capability_id": "cap.none"},
         "decision": {
            "candidate_workers_ranked": [
                {"worker_species_id": "wrk.missing.x", "score_hint": 2.5},
                {"worker_species_id": "wrk.missing.y"}
            ],
            "escalation": {"rationale": "none-rule"}}},
        {"rule_id": "rr_empty", "match": {"capability_id": "cap.empty"},
         "decision": {"candidate_workers_ranked": []}},
        {"rule_id": "rr_lax", "match": {"capability_id": "cap.lax"},
         "decision": {
            "candidate_workers_ranked": [{"worker_species_id": WRK_A}],
            "required_controls_suggested": ["ctrl.zz.absent", "ctrl.aa.absent"],
            "preconditions": {"must_have_correlation_id": false,
                              "deny_if_missing_required_controls": false}}},
        {"rule_id": "rr_many", "match": {"capability_id": "cap.many"},
         "decision": {"candidate_workers_ranked": [
            {"worker_species_id": "w.missing_controls"},
            {"worker_species_id": "w.env_not_allowed"},
            {"worker_species_id": "w.unavailable"},
            {"worker_species_id": "w.ok"},
            {"worker_species_id": "w.later_ok"},
            {"worker_species_id": "w.later_missing_controls"}
         ]}},
        {"rule_id": "rr_inject", "match": {"capability_id": "cap.doc.summarize\nevt.injected fake-entry"},
         "decision": {"candidate_workers_ranked": [{"worker_species_id": WRK_A}]}}
    ]})
}

fn strings(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// Collaborators beyond the rule set, registry and config.
#[derive(Default, Clone, Copy)]
struct With<'a> {
    registry: Option<&'a dyn RegistryView>,
    gate: Option<&'a dyn PolicyGate>,
    hashes: Option<&'a dyn WorkerHashes>,
    privilege: Option<&'a dyn PrivilegeCheck>,
    human_approval: Option<&'a str>,
}

struct Hall {
    rules: RuleSet,
    registry: SnapshotRegistry,
    config: RouterConfig,
}

impl Hall {
    fn new() -> Self {
        Self::with_rules(rules_doc())
    }

    fn with_rules(doc: Value) -> Self {
        Hall {
            rules: RuleSet::from_value(&doc).expect("test rules load"),
            registry: SnapshotRegistry {
                controls: strings(&[
                    CTRL_AUDIT,
                    CTRL_PRIVILEGE_ENVELOPES_REQUIRED,
                    CTRL_BLAST_RADIUS_SCORING,
                ]),
                workers: strings(&[WRK_A, WRK_B]),
            },
            config: RouterConfig::default(),
        }
    }

    fn route(&self, input: &RouteInput) -> RouteDecision {
        self.route_with(input, With::default())
    }

    fn route_with(&self, input: &RouteInput, with: With<'_>) -> RouteDecision {
        let router = Router {
            rules: &self.rules,
            registry: with.registry.unwrap_or(&self.registry),
            config: &self.config,
            gate: with.gate,
            hashes: with.hashes,
            privilege: with.privilege,
            human_approval: with.human_approval,
        };
        let ctx = DecisionContext {
            decision_id: DECISION_ID.into(),
            timestamp: TS.into(),
            task_id: TASK_ID.into(),
        };
        route(&router, input, &ctx)
    }

    fn rule(&self, id: &str) -> &Rule {
        self.rules
            .rules()
            .iter()
            .find(|r| r.rule_id == id)
            .unwrap_or_else(|| panic!("no rule {id}"))
    }
}

/// A dev/INTERNAL/low/P2 input from tenant-1 with correlation corr-1. Built directly (as a
/// library caller may), so identifiers can carry characters the JSON parser refuses.
fn input(cap: &str) -> RouteInput {
    RouteInput {
        capability_id: cap.to_owned(),
        env: Env::Dev,
        data_label: DataLabel::Internal,
        tenant_risk: TenantRisk::Low,
        qos_class: QosClass::P2,
        tenant_id: "tenant-1".into(),
        correlation_id: "corr-1".into(),
        request: Map::new(),
        blast_radius: None,
        blast_score: None,
        privilege_context: None,
        dry_run: false,
        tenant_credential: None,
        policy_version: None,
    }
}

fn input_at(cap: &str, env: Env, label: DataLabel, qos: QosClass) -> RouteInput {
    let mut i = input(cap);
    i.env = env;
    i.data_label = label;
    i.qos_class = qos;
    i
}

fn gate_answer(decision: &str, version: &str, reason: &str) -> FixedGate {
    FixedGate(GateAnswer {
        decision: decision.into(),
        policy_version: version.into(),
        reason: reason.into(),
        supervisor_level: None,
    })
}

fn allow_gate() -> FixedGate {
    gate_answer("ALLOW", "policy.v9", "ok")
}

const HASH_1: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const HASH_2: &str = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210";

fn hashes(registered: &[(&str, &str)], current: &[(&str, &str)]) -> FixedHashes {
    let map = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    };
    FixedHashes {
        registered: map(registered),
        current: map(current),
    }
}

/// A gate that fails to answer (PyHall: the callable raised).
struct FailingGate;

impl PolicyGate for FailingGate {
    fn evaluate(&self, _ctx: &GateContext<'_>) -> Result<GateAnswer, GateError> {
        Err(GateError("connection refused".into()))
    }
}

/// A gate that records every context it is asked about.
struct RecordingGate {
    answer: GateAnswer,
    seen: RefCell<Vec<Value>>,
}

impl PolicyGate for RecordingGate {
    fn evaluate(&self, ctx: &GateContext<'_>) -> Result<GateAnswer, GateError> {
        self.seen
            .borrow_mut()
            .push(serde_json::to_value(ctx).expect("gate context serialises"));
        Ok(self.answer.clone())
    }
}

/// A privilege check with fixed answers that records its calls.
struct StubPrivilege {
    envelope: Result<Option<Value>, String>,
    allows: Result<(bool, String), String>,
    envelope_calls: RefCell<Vec<String>>,
    allows_calls: RefCell<Vec<(Env, DataLabel, Option<Value>)>>,
}

impl StubPrivilege {
    fn new(
        envelope: Result<Option<Value>, String>,
        allows: Result<(bool, String), String>,
    ) -> Self {
        StubPrivilege {
            envelope,
            allows,
            envelope_calls: RefCell::new(Vec::new()),
            allows_calls: RefCell::new(Vec::new()),
        }
    }

    fn allowing() -> Self {
        Self::new(Ok(None), Ok((true, "stub_allow".into())))
    }
}

impl PrivilegeCheck for StubPrivilege {
    fn envelope(&self, species: &str) -> Result<Option<Value>, String> {
        self.envelope_calls.borrow_mut().push(species.to_owned());
        self.envelope.clone()
    }
    fn allows(
        &self,
        env: Env,
        label: DataLabel,
        envelope: Option<&Value>,
    ) -> Result<(bool, String), String> {
        self.allows_calls
            .borrow_mut()
            .push((env, label, envelope.cloned()));
        self.allows.clone()
    }
}

/// A registry whose per-worker status is a table; records every status question.
struct StatusRegistry {
    controls: BTreeSet<String>,
    status: HashMap<&'static str, CandidateStatus>,
    asked: RefCell<Vec<(String, String, Env)>>,
}

impl RegistryView for StatusRegistry {
    fn has_control(&self, control_id: &str) -> bool {
        self.controls.contains(control_id)
    }
    fn candidate_status(&self, species: &str, rule: &Rule, env: Env) -> CandidateStatus {
        self.asked
            .borrow_mut()
            .push((species.to_owned(), rule.rule_id.clone(), env));
        self.status
            .get(species)
            .copied()
            .unwrap_or(CandidateStatus::Unavailable)
    }
}

fn escalation(f: impl FnOnce(&mut Escalation)) -> Escalation {
    let mut e = Escalation::default();
    f(&mut e);
    e
}

/// rr_doc's escalation as written in the rules.
fn doc_escalation() -> Escalation {
    escalation(|e| {
        e.msavx_step_up = true;
        e.human_required_if = vec!["tenant_risk=high".into()];
        e.rationale = Some("doc-rationale".into());
    })
}

/// rr_gated's escalation as written in the rules.
fn gated_escalation() -> Escalation {
    escalation(|e| {
        e.policy_gate = true;
        e.msavx_step_up = true;
        e.rationale = Some("gate-rationale".into());
    })
}

fn to_json<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).expect("serialises")
}

/// `serde_json::to_string`, which keeps key order, for order-sensitive comparisons.
fn text<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("serialises")
}

/// What a denial must look like.
struct Denied<'a> {
    code: DenyCode,
    message: &'a str,
    extra: Value,
    matched: &'a str,
    escalation: Escalation,
}

/// Asserts every field of a denied decision (PyHall §1.2), including its single telemetry event.
#[track_caller]
fn assert_denied(hall: &Hall, input: &RouteInput, d: &RouteDecision, want: Denied<'_>) {
    assert!(d.denied, "expected a denial, got {}", text(d));
    let reason = d.deny_reason_if_denied.as_ref().expect("a deny reason");
    assert_eq!(reason.code, want.code, "code; decision {}", text(d));
    assert_eq!(reason.message, want.message, "message");
    assert_eq!(
        text(&reason.extra),
        text(&want.extra),
        "extras (order-sensitive)"
    );
    assert_eq!(d.matched_rule_id, want.matched, "matched_rule_id");
    assert_eq!(
        d.escalation_effective, want.escalation,
        "escalation_effective"
    );
    assert_eq!(d.selected_worker_species_id, None);
    assert_eq!(d.artifact_hash, None);
    assert!(d.recommended_profiles_effective.is_empty());
    assert_eq!(d.dry_run, input.dry_run);
    assert_eq!(d.decision_id, DECISION_ID);
    assert_eq!(d.timestamp, TS);
    assert_eq!(d.correlation_id, input.correlation_id);
    assert_eq!(d.tenant_id, input.tenant_id);
    assert_eq!(d.capability_id, input.capability_id);
    assert_eq!(
        (d.env, d.data_label, d.tenant_risk, d.qos_class),
        (
            input.env,
            input.data_label,
            input.tenant_risk,
            input.qos_class
        )
    );
    if want.matched == PRE_ROUTING || want.matched == NO_MATCH {
        assert!(d.required_controls_effective.is_empty());
        assert_eq!(d.preconditions_checked, Preconditions::default());
    } else {
        let rule = hall.rule(want.matched);
        assert_eq!(
            d.required_controls_effective,
            rule.decision.required_controls
        );
        assert_eq!(d.preconditions_checked, rule.decision.preconditions);
    }
    if want.code != DenyCode::DenyNoAvailableWorker {
        assert!(d.candidate_workers_ranked.is_empty());
    }
    let attestation = if want.code == DenyCode::DenyWorkerTampered {
        (true, Some(false))
    } else {
        (false, None)
    };
    assert_eq!(
        (d.worker_attestation_checked, d.worker_attestation_valid),
        attestation
    );
    let mut event = json!({
        "event_id": "evt.os.task.denied",
        "timestamp": TS,
        "correlation_id": sanitize(&input.correlation_id),
        "tenant_id": sanitize(&input.tenant_id),
        "capability_id": sanitize(&input.capability_id),
        "deny_code": want.code.as_str(),
        "deny_message": want.message,
        "matched_rule_id": want.matched,
    });
    if input.dry_run {
        event["dry_run"] = json!(true);
    }
    assert_eq!(
        text(&d.telemetry_envelopes),
        text(&json!([event])),
        "telemetry"
    );
}

/// Asserts an allowed decision and returns its events as JSON.
#[track_caller]
fn assert_allowed(d: &RouteDecision, rule: &str, worker: &str) -> Vec<Value> {
    assert!(!d.denied, "expected an allow, got {}", text(d));
    assert_eq!(d.deny_reason_if_denied, None);
    assert_eq!(d.matched_rule_id, rule);
    assert_eq!(d.selected_worker_species_id.as_deref(), Some(worker));
    d.telemetry_envelopes.iter().map(to_json).collect()
}

fn event_ids(events: &[Value]) -> Vec<&str> {
    events
        .iter()
        .map(|e| e["event_id"].as_str().expect("event_id"))
        .collect()
}

fn blast_event_score(events: &[Value]) -> Option<i64> {
    events
        .iter()
        .find(|e| e["event_id"] == "evt.gov.blast_scored")
        .map(|e| e["blast_score"].as_i64().expect("integer blast_score"))
}

#[test]
fn the_test_rule_set_has_no_shadows() {
    assert!(Hall::new().rules.shadows().is_empty());
}

// ---------------------------------------------------------------------------------------------
// Step 0: signatory tenants

#[test]
fn deny_unknown_tenant_when_signatory_required() {
    let mut hall = Hall::new();
    hall.config.require_signatory = true;
    hall.config.allowed_tenants = strings(&["mcp.my-app", "tenant-1"]);
    let mut i = input("cap.doc.summarize");
    i.tenant_id = "rogue.agent".into();
    let d = hall.route(&i);
    assert_denied(
        &hall,
        &i,
        &d,
        Denied {
            code: DenyCode::DenyUnknownTenant,
            message: "Tenant is not registered as a signatory. Register via the Hall \
                      configuration before dispatching workers.",
            extra: json!({"tenant_id": "rogue.agent"}),
            matched: PRE_ROUTING,
            escalation: Escalation::default(),
        },
    );

    // Exact comparison: case and surrounding spaces matter.
    for tenant in ["Tenant-1", " tenant-1", ""] {
        let mut i = input("cap.doc.summarize");
        i.tenant_id = tenant.into();
        let d = hall.route(&i);
        assert_eq!(
            d.deny_code(),
            Some(DenyCode::DenyUnknownTenant),
            "{tenant:?}"
        );
    }

    // A listed tenant routes normally.
    let d = hall.route(&input("cap.doc.summarize"));
    assert_allowed(&d, "rr_doc", WRK_A);

    // The allowlist is not consulted unless signatories are required.
    hall.config.require_signatory = false;
    let d = hall.route(&i);
    assert_allowed(&d, "rr_doc", WRK_A);
}

// ---------------------------------------------------------------------------------------------
// Step 0.1: tenant id

#[test]
fn deny_missing_tenant_id_for_python_whitespace() {
    let hall = Hall::new();
    for tenant in [
        "", " ", "   ", "\t\n", "\u{1c} ", "\u{1f}", "\u{85}", "\u{3000}",
    ] {
        let mut i = input("cap.doc.summarize");
        i.tenant_id = tenant.into();
        let d = hall.route(&i);
        assert_denied(
            &hall,
            &i,
            &d,
            Denied {
                code: DenyCode::DenyMissingTenantId,
                message: "tenant_id is required and must not be empty or whitespace.",
                extra: json!({}),
                matched: PRE_ROUTING,
                escalation: Escalation::default(),
            },
        );
    }
    for tenant in ["\u{1c}x", " t ", "\u{200b}", "\u{180e}", "\u{feff}"] {
        let mut i = input("cap.doc.summarize");
        i.tenant_id = tenant.into();
        assert!(!hall.route(&i).denied, "{tenant:?} is not blank");
    }
    // Every character CPython 3.11's str.isspace() accepts, alone, is a blank tenant id.
    let python_whitespace = [
        0x9, 0xa, 0xb, 0xc, 0xd, 0x1c, 0x1d, 0x1e, 0x1f, 0x20, 0x85, 0xa0, 0x1680, 0x2000, 0x2001,
        0x2002, 0x2003, 0x2004, 0x2005, 0x2006, 0x2007, 0x2008, 0x2009, 0x200a, 0x2028, 0x2029,
        0x202f, 0x205f, 0x3000,
    ];
    for cp in python_whitespace {
        let mut i = input("cap.doc.summarize");
        i.tenant_id = char::from_u32(cp).expect("scalar").to_string();
        assert_eq!(
            hall.route(&i).deny_code(),
            Some(DenyCode::DenyMissingTenantId),
            "U+{cp:04X}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Step 0.25: blast score range

#[test]
fn deny_invalid_input_for_blast_score_out_of_range() {
    let hall = Hall::new();
    for score in [-1, 101, i64::MIN, i64::MAX] {
        let mut i = input("cap.doc.summarize");
        i.blast_score = Some(score);
        let d = hall.route(&i);
        assert_denied(
            &hall,
            &i,
            &d,
            Denied {
                code: DenyCode::DenyInvalidInput,
                message: "blast_score must be in [0, 100]",
                extra: json!({ "blast_score": score }),
                matched: PRE_ROUTING,
                escalation: Escalation::default(),
            },
        );
    }
    for score in [0, 100] {
        let mut i = input("cap.doc.summarize");
        i.blast_score = Some(score);
        assert_allowed(&hall.route(&i), "rr_doc", WRK_A);
    }
}

// ---------------------------------------------------------------------------------------------
// Step 0.5: shadow rules

fn shadow_hall() -> Hall {
    Hall::with_rules(json!({"rules": [
        {"rule_id": "rr_broad_any", "match": {"capability_id": {"any": true}},
         "decision": {"candidate_workers_ranked": [{"worker_species_id": WRK_A}]}},
        {"rule_id": "rr_specific_prod", "match": {"capability_id": {"any": true}, "env": "prod"},
         "decision": {"candidate_workers_ranked": [{"worker_species_id": WRK_B}]}}
    ]}))
}

#[test]
fn deny_shadow_rules_detected_in_prod_and_edge_only() {
    let hall = shadow_hall();
    for env in [Env::Prod, Env::Edge] {
        let i = input_at("cap.any", env, DataLabel::Public, QosClass::P2);
        let d = hall.route(&i);
        assert_denied(
            &hall,
            &i,
            &d,
            Denied {
                code: DenyCode::DenyShadowRulesDetected,
                message: "Rule set contains shadow rules in prod/edge environment. Fix rule \
                          ordering before deploying to production.",
                extra: json!({"shadowed_rule_ids": ["rr_specific_prod"], "shadow_count": 1}),
                matched: NO_MATCH,
                escalation: Escalation::default(),
            },
        );
    }
    for env in [Env::Dev, Env::Stage] {
        let i = input_at("cap.any", env, DataLabel::Public, QosClass::P2);
        assert_allowed(&hall.route(&i), "rr_broad_any", WRK_A);
    }
}

#[test]
fn shadowed_rule_ids_repeat_in_warning_order() {
    let hall = Hall::with_rules(json!({"rules": [
        {"rule_id": "a_any", "match": {"capability_id": {"any": true}}},
        {"rule_id": "b_cap", "match": {"capability_id": "cap.x"}},
        {"rule_id": "c_cap_dev", "match": {"capability_id": "cap.x", "env": "dev"}}
    ]}));
    let i = input_at("cap.x", Env::Edge, DataLabel::Public, QosClass::P2);
    let d = hall.route(&i);
    let reason = d.deny_reason_if_denied.expect("denied");
    assert_eq!(reason.code, DenyCode::DenyShadowRulesDetected);
    assert_eq!(
        text(&reason.extra),
        text(&json!({"shadowed_rule_ids": ["b_cap", "c_cap_dev", "c_cap_dev"], "shadow_count": 3}))
    );
}

#[test]
fn disjoint_dev_stage_and_prod_rules_route_in_prod() {
    let hall = Hall::with_rules(json!({"rules": [
        {"rule_id": "rr_dev_stage", "match": {"capability_id": "cap.x", "env": {"in": ["dev", "stage"]}},
         "decision": {"candidate_workers_ranked": [{"worker_species_id": WRK_A}]}},
        {"rule_id": "rr_prod_only", "match": {"capability_id": "cap.x", "env": "prod"},
         "decision": {"candidate_workers_ranked": [{"worker_species_id": WRK_B}]}}
    ]}));
    let i = input_at("cap.x", Env::Prod, DataLabel::Public, QosClass::P2);
    assert_allowed(&hall.route(&i), "rr_prod_only", WRK_B);
    let i = input_at("cap.x", Env::Stage, DataLabel::Public, QosClass::P2);
    assert_allowed(&hall.route(&i), "rr_dev_stage", WRK_A);
}

// ---------------------------------------------------------------------------------------------
// Step 1: rule match

#[test]
fn deny_no_matching_rule() {
    let hall = Hall::new();
    for env in [Env::Dev, Env::Prod] {
        let i = input_at("cap.unknown", env, DataLabel::Public, QosClass::P2);
        let d = hall.route(&i);
        assert_denied(
            &hall,
            &i,
            &d,
            Denied {
                code: DenyCode::DenyNoMatchingRule,
                message: "No routing rule matched. Fail-closed per WCP spec section 5.1.",
                extra: json!({}),
                matched: NO_MATCH,
                escalation: Escalation::default(),
            },
        );
    }
    let empty = Hall::with_rules(json!({"rules": []}));
    let d = empty.route(&input("cap.doc.summarize"));
    assert_eq!(d.deny_code(), Some(DenyCode::DenyNoMatchingRule));
}

// ---------------------------------------------------------------------------------------------
// Step 2: correlation id

#[test]
fn deny_missing_correlation_id_with_default_escalation_after_a_match() {
    let hall = Hall::new();
    for corr in ["", "   ", "\u{1c}", "\t\r\n"] {
        let mut i = input("cap.doc.summarize");
        i.correlation_id = corr.into();
        let d = hall.route(&i);
        assert_denied(
            &hall,
            &i,
            &d,
            Denied {
                code: DenyCode::DenyMissingCorrelationId,
                message: "correlation_id is required but absent or empty.",
                extra: json!({}),
                matched: "rr_doc",
                // PyHall reports the default escalation for steps 0-3, even after a match.
                escalation: Escalation::default(),
            },
        );
        assert_eq!(d.required_controls_effective, vec![CTRL_AUDIT]);
        assert!(d.preconditions_checked.deny_if_no_attestation_in_prod);
    }
}

#[test]
fn correlation_id_is_required_by_the_rule_or_the_floor() {
    let mut i = input("cap.doc.summarize");
    i.correlation_id = String::new();
    let mut lax = input("cap.lax");
    lax.correlation_id = " ".into();

    let mut hall = Hall::new();
    // Floor on (default): even a rule that does not ask for it denies.
    assert_eq!(
        hall.route(&lax).deny_code(),
        Some(DenyCode::DenyMissingCorrelationId)
    );
    // Floor off: the rule's precondition still applies.
    hall.config.enforce_correlation_id = false;
    assert_eq!(
        hall.route(&i).deny_code(),
        Some(DenyCode::DenyMissingCorrelationId)
    );
    // Floor off and precondition off: routed (with the controls floor off too, since rr_lax's
    // controls are missing).
    hall.config.enforce_required_controls = false;
    let events = assert_allowed(&hall.route(&lax), "rr_lax", WRK_A);
    assert_eq!(events[0]["correlation_id"], " ");
}

// ---------------------------------------------------------------------------------------------
// Step 3: required controls

#[test]
fn deny_missing_required_controls_lists_them_sorted() {
    let mut hall = Hall::new();
    hall.registry.controls = strings(&[CTRL_BLAST_RADIUS_SCORING]);
    let i = input("cap.full");
    let d = hall.route(&i);
    assert_denied(
        &hall,
        &i,
        &d,
        Denied {
            code: DenyCode::DenyMissingRequiredControls,
            message: "Required controls not present in registry.",
            extra: json!({"missing": [CTRL_AUDIT, CTRL_PRIVILEGE_ENVELOPES_REQUIRED]}),
            matched: "rr_full",
            escalation: Escalation::default(),
        },
    );

    hall.registry.controls = strings(&[CTRL_PRIVILEGE_ENVELOPES_REQUIRED]);
    let d = hall.route(&i);
    assert_eq!(
        text(&d.deny_reason_if_denied.unwrap().extra),
        text(&json!({ "missing": [CTRL_AUDIT] }))
    );
}

#[test]
fn missing_controls_are_waived_only_when_rule_and_floor_both_allow_it() {
    let mut hall = Hall::new();
    let lax = input("cap.lax");
    let d = hall.route(&lax);
    assert_denied(
        &hall,
        &lax,
        &d,
        Denied {
            code: DenyCode::DenyMissingRequiredControls,
            message: "Required controls not present in registry.",
            extra: json!({"missing": ["ctrl.aa.absent", "ctrl.zz.absent"]}),
            matched: "rr_lax",
            escalation: Escalation::default(),
        },
    );
    hall.config.enforce_required_controls = false;
    let d = hall.route(&lax);
    assert_allowed(&d, "rr_lax", WRK_A);
    assert_eq!(
        d.required_controls_effective,
        vec!["ctrl.aa.absent", "ctrl.zz.absent"]
    );
    // A rule that keeps its precondition still denies with the floor off.
    hall.registry.controls.clear();
    assert_eq!(
        hall.route(&input("cap.doc.summarize")).deny_code(),
        Some(DenyCode::DenyMissingRequiredControls)
    );
}

// ---------------------------------------------------------------------------------------------
// Step 4: blast gate (pyhall-spec §1.4)

fn blast_input(cap: &str, env: Env, label: DataLabel) -> RouteInput {
    let mut i = input_at(cap, env, label, QosClass::P0);
    i.request = json!({"writes": "false"})
        .as_object()
        .expect("object")
        .clone();
    i
}

#[test]
fn blast_table_p0_with_writes_false() {
    // (env, label, score); prod/edge deny at >= 85.
    let table = [
        (Env::Dev, DataLabel::Public, 35),
        (Env::Dev, DataLabel::Internal, 55),
        (Env::Dev, DataLabel::Restricted, 75),
        (Env::Stage, DataLabel::Restricted, 75),
        (Env::Prod, DataLabel::Public, 50),
        (Env::Prod, DataLabel::Internal, 70),
        (Env::Prod, DataLabel::Restricted, 90),
        (Env::Edge, DataLabel::Public, 50),
        (Env::Edge, DataLabel::Internal, 70),
        (Env::Edge, DataLabel::Restricted, 90),
    ];
    let hall = Hall::new();
    for (env, label, score) in table {
        let i = blast_input("cap.blast", env, label);
        assert_eq!(blast::score(&i), score, "{env}/{label}");
        let d = hall.route(&i);
        if score >= 85 {
            assert_denied(
                &hall,
                &i,
                &d,
                Denied {
                    code: DenyCode::DenyRequiresHuman,
                    message: "Blast radius too high for autonomous execution.",
                    extra: json!({"blast_score": score, "reason": "REQUIRE_HUMAN_HIGH_BLAST"}),
                    matched: "rr_blast",
                    escalation: escalation(|e| {
                        e.msavx_step_up = true;
                        e.human_required_default = true;
                        e.rationale = Some("REQUIRE_HUMAN_HIGH_BLAST".into());
                    }),
                },
            );
        } else {
            let events = assert_allowed(&d, "rr_blast", WRK_A);
            assert_eq!(blast_event_score(&events), Some(score), "{env}/{label}");
        }
    }
}

#[test]
fn blast_floor_applies_in_prod_without_the_control_and_can_be_turned_off() {
    let mut hall = Hall::new();
    let i = blast_input("cap.doc.summarize", Env::Prod, DataLabel::Restricted);
    let d = hall.route(&i);
    assert_denied(
        &hall,
        &i,
        &d,
        Denied {
            code: DenyCode::DenyRequiresHuman,
            message: "Blast radius too high for autonomous execution.",
            extra: json!({"blast_score": 90, "reason": "REQUIRE_HUMAN_HIGH_BLAST"}),
            matched: "rr_doc",
            escalation: escalation(|e| {
                e.msavx_step_up = true;
                e.human_required_if = vec!["tenant_risk=high".into()];
                e.human_required_default = true;
                e.rationale = Some("REQUIRE_HUMAN_HIGH_BLAST".into());
            }),
        },
    );
    // In dev a rule without the control is not scored at all.
    let dev = blast_input("cap.doc.summarize", Env::Dev, DataLabel::Restricted);
    let events = assert_allowed(&hall.route(&dev), "rr_doc", WRK_A);
    assert_eq!(blast_event_score(&events), None);

    hall.config.enforce_blast_scoring_in_prod = false;
    let events = assert_allowed(&hall.route(&i), "rr_doc", WRK_A);
    assert_eq!(blast_event_score(&events), None);
    // The rule's own control still scores (and gates) with the floor off.
    let i = blast_input("cap.blast", Env::Prod, DataLabel::Restricted);
    assert_eq!(
        hall.route(&i).deny_code(),
        Some(DenyCode::DenyRequiresHuman)
    );
}

#[test]
fn high_blast_in_dev_is_scored_but_not_denied() {
    let hall = Hall::new();
    let mut i = input_at("cap.blast", Env::Dev, DataLabel::Restricted, QosClass::P0);
    i.request = json!({"egress": true, "writes": true})
        .as_object()
        .expect("object")
        .clone();
    let events = assert_allowed(&hall.route(&i), "rr_blast", WRK_A);
    assert_eq!(blast_event_score(&events), Some(90));
}

#[test]
fn caller_blast_score_only_raises_the_computed_score() {
    // (env, label, caller score, effective score)
    let table = [
        (Env::Dev, DataLabel::Public, 0, 35),
        (Env::Dev, DataLabel::Public, 20, 35),
        (Env::Dev, DataLabel::Public, 35, 35),
        (Env::Dev, DataLabel::Public, 60, 60),
        (Env::Dev, DataLabel::Public, 100, 100),
        (Env::Prod, DataLabel::Public, 10, 50),
        (Env::Prod, DataLabel::Public, 84, 84),
        (Env::Prod, DataLabel::Public, 85, 85),
        (Env::Prod, DataLabel::Restricted, 0, 90),
    ];
    let hall = Hall::new();
    for (env, label, caller, effective) in table {
        let mut i = blast_input("cap.blast", env, label);
        i.blast_score = Some(caller);
        assert_eq!(blast::score(&i), effective, "{env}/{label} caller {caller}");
        let d = hall.route(&i);
        if env.is_production() && effective >= BLAST_HUMAN_THRESHOLD {
            assert_eq!(d.deny_code(), Some(DenyCode::DenyRequiresHuman));
            assert_eq!(
                d.deny_reason_if_denied.unwrap().extra["blast_score"],
                effective
            );
        } else {
            let events = assert_allowed(&d, "rr_blast", WRK_A);
            assert_eq!(blast_event_score(&events), Some(effective));
        }
    }
}

#[test]
fn blast_flags_use_python_truthiness_and_the_score_is_capped() {
    // dev/PUBLIC/P2 scores 10 before flags.
    let cases = [
        (json!({}), 10),
        (json!({"writes": false}), 10),
        (json!({"writes": "false"}), 25),
        (json!({"writes": 0}), 10),
        (json!({"writes": 0.0}), 10),
        (json!({"writes": -0.0}), 10),
        (json!({"writes": ""}), 10),
        (json!({"writes": []}), 10),
        (json!({"writes": {}}), 10),
        (json!({"writes": null}), 10),
        (json!({"writes": 1}), 25),
        (json!({"writes": 0.5}), 25),
        (json!({"writes": [0]}), 25),
        (json!({"writes": {"x": null}}), 25),
        (json!({"Writes": true}), 10),
        (json!({"mutates_state": true}), 25),
        (json!({"writes": true, "mutates_state": true}), 25),
        (json!({"egress": true}), 25),
        (json!({"external_call": "no"}), 25),
        (json!({"egress": 1, "external_call": 1}), 25),
        (json!({"egress": true, "writes": true}), 40),
        (
            json!({"egress": true, "external_call": true, "writes": true, "mutates_state": true}),
            40,
        ),
    ];
    for (request, want) in cases {
        let mut i = input_at("cap.blast", Env::Dev, DataLabel::Public, QosClass::P2);
        i.request = request.as_object().expect("object").clone();
        assert_eq!(blast::score(&i), want, "{request}");
    }
    // blast_radius is ignored.
    let mut i = input_at("cap.blast", Env::Dev, DataLabel::Public, QosClass::P2);
    i.blast_radius = json!({"data": 5, "network": 5}).as_object().cloned();
    assert_eq!(blast::score(&i), 10);
    // 10 + 40 + 15 + 10 + 15 + 15 = 105, capped.
    let mut i = input_at("cap.blast", Env::Prod, DataLabel::Restricted, QosClass::P0);
    i.request = json!({"egress": true, "writes": true})
        .as_object()
        .expect("object")
        .clone();
    assert_eq!(blast::score(&i), 100);
    i.blast_score = Some(0);
    assert_eq!(blast::score(&i), 100);
}

// ---------------------------------------------------------------------------------------------
// Step 5: policy gate

#[test]
fn deny_policy_gate_unconfigured() {
    let hall = Hall::new();
    let i = input("cap.gated");
    let d = hall.route(&i);
    assert_denied(
        &hall,
        &i,
        &d,
        Denied {
            code: DenyCode::DenyPolicyGateUnconfigured,
            message: "policy_gate_eval is required when escalation.policy_gate is True. Pass a \
                      PolicyGate instance's .evaluate method.",
            extra: json!({}),
            matched: "rr_gated",
            escalation: gated_escalation(),
        },
    );
}

#[test]
fn deny_internal_error_when_the_gate_fails() {
    let hall = Hall::new();
    let i = input("cap.gated");
    let d = hall.route_with(
        &i,
        With {
            gate: Some(&FailingGate),
            ..With::default()
        },
    );
    assert_denied(
        &hall,
        &i,
        &d,
        Denied {
            code: DenyCode::DenyInternalError,
            message: "policy_gate_eval raised an exception. See server logs for details.",
            extra: json!({}),
            matched: "rr_gated",
            escalation: gated_escalation(),
        },
    );
}

#[test]
fn deny_policy_gate_when_the_gate_denies() {
    let hall = Hall::new();
    let gate = gate_answer("DENY", "policy.v3", "tenant blocked");
    let i = input("cap.gated");
    let d = hall.route_with(
        &i,
        With {
            gate: Some(&gate),
            ..With::default()
        },
    );
    assert_denied(
        &hall,
        &i,
        &d,
        Denied {
            code: DenyCode::DenyPolicyGate,
            message: "Policy gate denied.",
            extra: json!({"reason": "tenant blocked", "policy_version": "policy.v3"}),
            matched: "rr_gated",
            escalation: escalation(|e| {
                e.policy_gate = true;
                e.msavx_step_up = true;
                e.rationale = Some("tenant blocked".into());
            }),
        },
    );
}

#[test]
fn deny_requires_human_approval_when_the_gate_asks_for_a_human() {
    let hall = Hall::new();
    let gate = gate_answer("REQUIRE_HUMAN", "policy.v4", "needs supervisor");
    let i = input("cap.gated");
    let d = hall.route_with(
        &i,
        With {
            gate: Some(&gate),
            ..With::default()
        },
    );
    assert_denied(
        &hall,
        &i,
        &d,
        Denied {
            code: DenyCode::DenyRequiresHumanApproval,
            message: "Policy gate requires human approval before this worker can be \
                      dispatched. Submit the pending approval via wcp.approval.resolve.",
            extra: json!({"reason": "needs supervisor", "policy_version": "policy.v4",
                          "supervisor_required": true}),
            matched: "rr_gated",
            escalation: escalation(|e| {
                e.policy_gate = true;
                e.msavx_step_up = true;
                e.human_required_default = true;
                e.rationale = Some("needs supervisor".into());
            }),
        },
    );
}

#[test]
fn deny_policy_gate_invalid_response_for_any_other_decision() {
    let hall = Hall::new();
    // (gate decision, Python repr in the message)
    let cases = [
        ("allow", "'allow'"),
        ("OK", "'OK'"),
        ("", "''"),
        ("ALLOW ", "'ALLOW '"),
        ("Deny", "'Deny'"),
        ("it's", "\"it's\""),
        ("a\nb", "'a\\nb'"),
    ];
    for (answer, repr) in cases {
        let gate = gate_answer(answer, "policy.v5", "whatever");
        let i = input("cap.gated");
        let d = hall.route_with(
            &i,
            With {
                gate: Some(&gate),
                ..With::default()
            },
        );
        let message = format!(
            "policy_gate_eval returned unrecognized decision: {repr}. Expected 'ALLOW', \
             'DENY', or 'REQUIRE_HUMAN'. Failing closed."
        );
        assert_denied(
            &hall,
            &i,
            &d,
            Denied {
                code: DenyCode::DenyPolicyGateInvalidResponse,
                message: &message,
                extra: json!({}),
                matched: "rr_gated",
                escalation: escalation(|e| {
                    e.policy_gate = true;
                    e.msavx_step_up = true;
                    e.rationale = Some("invalid_gate_response".into());
                }),
            },
        );
    }
    let d = hall.route_with(
        &input("cap.gated"),
        With {
            gate: Some(&gate_answer("allow", "v", "r")),
            ..With::default()
        },
    );
    assert_eq!(
        d.deny_reason_if_denied.unwrap().message,
        "policy_gate_eval returned unrecognized decision: 'allow'. Expected 'ALLOW', 'DENY', \
         or 'REQUIRE_HUMAN'. Failing closed."
    );
}

#[test]
fn gate_is_asked_with_the_request_context_and_only_for_gated_rules() {
    let hall = Hall::new();
    let gate = RecordingGate {
        answer: GateAnswer {
            decision: "ALLOW".into(),
            policy_version: "policy.v9".into(),
            reason: "ok".into(),
            supervisor_level: None,
        },
        seen: RefCell::new(Vec::new()),
    };
    let with = With {
        gate: Some(&gate),
        ..With::default()
    };
    let mut i = input_at("cap.gated", Env::Stage, DataLabel::Public, QosClass::P1);
    i.tenant_risk = TenantRisk::High;
    i.policy_version = Some("policy.caller".into());
    assert_allowed(&hall.route_with(&i, with), "rr_gated", WRK_A);
    assert_eq!(
        text(&*gate.seen.borrow()),
        text(&json!([{
            "capability_id": "cap.gated", "tenant_id": "tenant-1", "env": "stage",
            "data_label": "PUBLIC", "tenant_risk": "high", "qos_class": "P1",
            "policy_version": "policy.v0",
            // The Hall's additions: the gate sees the worker the router would select.
            "selected_worker_species": WRK_A, "pyhall_blast_score": null, "dry_run": false
        }]))
    );
    // An ungated rule never consults the gate, and reports the default policy version.
    let events = assert_allowed(
        &hall.route_with(&input("cap.doc.summarize"), with),
        "rr_doc",
        WRK_A,
    );
    assert_eq!(gate.seen.borrow().len(), 1);
    assert!(
        events
            .iter()
            .filter(|e| e.get("policy_version").is_some())
            .all(|e| e["policy_version"] == DEFAULT_POLICY_VERSION)
    );
    let gated = events.last().expect("events");
    assert_eq!(gated["event_id"], "evt.os.policy.gated");
    assert_eq!(gated["reason"], "no_gate_required");
}

// ---------------------------------------------------------------------------------------------
// Step 6: candidate selection

fn candidate(species: &str, hint: Option<f64>, skip: Option<SkipReason>) -> CandidateWorker {
    CandidateWorker {
        worker_species_id: species.into(),
        score_hint: hint,
        requires_controls_minimum: None,
        skip_reason: skip,
    }
}

#[test]
fn deny_no_available_worker_lists_the_evaluated_candidates() {
    let hall = Hall::new();
    let i = input("cap.none");
    let d = hall.route(&i);
    assert_denied(
        &hall,
        &i,
        &d,
        Denied {
            code: DenyCode::DenyNoAvailableWorker,
            message: "No available worker candidates. Route to review queue.",
            extra: json!({}),
            matched: "rr_none",
            escalation: escalation(|e| e.rationale = Some("none-rule".into())),
        },
    );
    assert_eq!(
        d.candidate_workers_ranked,
        vec![
            candidate("wrk.missing.x", Some(2.5), Some(SkipReason::Unavailable)),
            candidate("wrk.missing.y", None, Some(SkipReason::Unavailable)),
        ]
    );

    let i = input("cap.empty");
    let d = hall.route(&i);
    assert_denied(
        &hall,
        &i,
        &d,
        Denied {
            code: DenyCode::DenyNoAvailableWorker,
            message: "No available worker candidates. Route to review queue.",
            extra: json!({}),
            matched: "rr_empty",
            escalation: Escalation::default(),
        },
    );
    assert!(d.candidate_workers_ranked.is_empty());
}

#[test]
fn candidates_unavailable_then_selected_then_already_selected() {
    let mut hall = Hall::new();
    hall.registry.workers = strings(&[WRK_B]);
    let d = hall.route(&input("cap.doc.summarize"));
    assert_allowed(&d, "rr_doc", WRK_B);
    assert_eq!(
        d.candidate_workers_ranked,
        vec![
            candidate(WRK_A, Some(1.0), Some(SkipReason::Unavailable)),
            candidate(WRK_B, Some(0.5), None),
        ]
    );

    hall.registry.workers = strings(&[WRK_A, WRK_B]);
    let d = hall.route(&input("cap.doc.summarize"));
    assert_allowed(&d, "rr_doc", WRK_A);
    assert_eq!(
        d.candidate_workers_ranked,
        vec![
            candidate(WRK_A, Some(1.0), None),
            candidate(WRK_B, Some(0.5), Some(SkipReason::AlreadySelected)),
        ]
    );
    // score_hint never reorders: rr_full lists b (no hint) before a (hint 3).
    let d = hall.route_with(
        &input("cap.full"),
        With {
            gate: Some(&allow_gate()),
            privilege: Some(&StubPrivilege::allowing()),
            ..With::default()
        },
    );
    assert_allowed(&d, "rr_full", WRK_B);
    assert_eq!(
        d.candidate_workers_ranked,
        vec![
            candidate(WRK_B, None, None),
            candidate(WRK_A, Some(3.0), Some(SkipReason::AlreadySelected)),
        ]
    );
}

#[test]
fn per_worker_skip_reasons_come_from_the_registry_view() {
    let registry = StatusRegistry {
        controls: BTreeSet::new(),
        status: HashMap::from([
            ("w.missing_controls", CandidateStatus::MissingControls),
            ("w.env_not_allowed", CandidateStatus::EnvNotAllowed),
            ("w.unavailable", CandidateStatus::Unavailable),
            ("w.ok", CandidateStatus::Available),
            ("w.later_ok", CandidateStatus::Available),
            ("w.later_missing_controls", CandidateStatus::MissingControls),
        ]),
        asked: RefCell::new(Vec::new()),
    };
    let hall = Hall::new();
    let i = input_at("cap.many", Env::Stage, DataLabel::Public, QosClass::P2);
    let d = hall.route_with(
        &i,
        With {
            registry: Some(&registry),
            ..With::default()
        },
    );
    assert_allowed(&d, "rr_many", "w.ok");
    assert_eq!(
        d.candidate_workers_ranked,
        vec![
            candidate(
                "w.missing_controls",
                None,
                Some(SkipReason::MissingControls)
            ),
            candidate("w.env_not_allowed", None, Some(SkipReason::EnvNotAllowed)),
            candidate("w.unavailable", None, Some(SkipReason::Unavailable)),
            candidate("w.ok", None, None),
            candidate("w.later_ok", None, Some(SkipReason::AlreadySelected)),
            candidate(
                "w.later_missing_controls",
                None,
                Some(SkipReason::MissingControls)
            ),
        ]
    );
    // Every candidate is evaluated, in rule order, with the matched rule and the env.
    let asked: Vec<(String, String, Env)> = registry.asked.borrow().clone();
    let species: Vec<&str> = asked.iter().map(|(s, _, _)| s.as_str()).collect();
    assert_eq!(
        species,
        vec![
            "w.missing_controls",
            "w.env_not_allowed",
            "w.unavailable",
            "w.ok",
            "w.later_ok",
            "w.later_missing_controls"
        ]
    );
    assert!(
        asked
            .iter()
            .all(|(_, rule, env)| rule == "rr_many" && *env == Env::Stage)
    );
    // Serialised skip reasons are PyHall-style snake case.
    assert_eq!(
        to_json(&d.candidate_workers_ranked)
            .as_array()
            .expect("array")
            .iter()
            .map(|c| c["skip_reason"].clone())
            .collect::<Vec<_>>(),
        vec![
            json!("missing_controls"),
            json!("env_not_allowed"),
            json!("unavailable"),
            Value::Null,
            json!("already_selected"),
            json!("missing_controls")
        ]
    );

    // Nobody available: denied, every per-worker reason kept.
    let registry = StatusRegistry {
        controls: BTreeSet::new(),
        status: HashMap::from([
            ("w.missing_controls", CandidateStatus::MissingControls),
            ("w.env_not_allowed", CandidateStatus::EnvNotAllowed),
        ]),
        asked: RefCell::new(Vec::new()),
    };
    let d = hall.route_with(
        &i,
        With {
            registry: Some(&registry),
            ..With::default()
        },
    );
    assert_eq!(d.deny_code(), Some(DenyCode::DenyNoAvailableWorker));
    let reasons: Vec<Option<SkipReason>> = d
        .candidate_workers_ranked
        .iter()
        .map(|c| c.skip_reason)
        .collect();
    assert_eq!(
        reasons,
        vec![
            Some(SkipReason::MissingControls),
            Some(SkipReason::EnvNotAllowed),
            Some(SkipReason::Unavailable),
            Some(SkipReason::Unavailable),
            Some(SkipReason::Unavailable),
            Some(SkipReason::Unavailable),
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// Step 6.5: worker attestation

fn attesting_hall() -> Hall {
    let mut hall = Hall::new();
    hall.config.require_worker_attestation = true;
    hall
}

fn attest(hall: &Hall, i: &RouteInput, h: &FixedHashes) -> RouteDecision {
    hall.route_with(
        i,
        With {
            hashes: Some(h),
            ..With::default()
        },
    )
}

#[test]
fn deny_attestation_unconfigured_without_hash_lookups() {
    let hall = attesting_hall();
    let i = input("cap.doc.summarize");
    let d = hall.route(&i);
    assert_denied(
        &hall,
        &i,
        &d,
        Denied {
            code: DenyCode::DenyAttestationUnconfigured,
            message: "require_worker_attestation is True but hash callables were not \
                      provided. Pass registry_get_worker_hash and get_current_worker_hash to \
                      make_decision().",
            extra: json!({}),
            matched: "rr_doc",
            escalation: doc_escalation(),
        },
    );
}

#[test]
fn deny_worker_attestation_missing_for_the_selected_worker() {
    let hall = attesting_hall();
    let i = input("cap.doc.summarize");
    // Only the non-selected worker has a hash.
    let h = hashes(&[(WRK_B, HASH_1)], &[(WRK_A, HASH_1), (WRK_B, HASH_1)]);
    let d = attest(&hall, &i, &h);
    assert_denied(
        &hall,
        &i,
        &d,
        Denied {
            code: DenyCode::DenyWorkerAttestationMissing,
            message: "Worker 'wrk.doc.a' has no registered code hash. Register the worker with \
                      an attestation hash before enabling require_worker_attestation.",
            extra: json!({}),
            matched: "rr_doc",
            escalation: doc_escalation(),
        },
    );
}

#[test]
fn deny_worker_attestation_invalid_hash() {
    let hall = attesting_hall();
    let i = input("cap.doc.summarize");
    let upper = HASH_1.to_uppercase();
    let prefixed = format!("sha256:{HASH_1}");
    let short = &HASH_1[..63];
    let long = format!("{HASH_1}0");
    let two_newlines = format!("{HASH_1}\n\n");
    let leading_space = format!(" {HASH_1}");
    let non_hex = HASH_1.replace('a', "g");
    for registered in [
        upper.as_str(),
        prefixed.as_str(),
        short,
        long.as_str(),
        two_newlines.as_str(),
        leading_space.as_str(),
        non_hex.as_str(),
        "",
    ] {
        let h = hashes(&[(WRK_A, registered)], &[(WRK_A, HASH_1)]);
        let d = attest(&hall, &i, &h);
        assert_denied(
            &hall,
            &i,
            &d,
            Denied {
                code: DenyCode::DenyWorkerAttestationInvalidHash,
                message: "Worker 'wrk.doc.a' registered hash is not a valid SHA-256 digest. \
                          Re-register with a 64-character lowercase hex SHA-256 hash.",
                extra: json!({}),
                matched: "rr_doc",
                escalation: doc_escalation(),
            },
        );
    }
}

#[test]
fn deny_worker_hash_unavailable() {
    let hall = attesting_hall();
    let i = input("cap.doc.summarize");
    let upper = HASH_1.to_uppercase();
    let prefixed = format!("sha256:{HASH_1}");
    let currents: [Option<&str>; 4] = [None, Some(&upper), Some(&prefixed), Some("")];
    for current in currents {
        let current_pairs: Vec<(&str, &str)> = current.map(|c| (WRK_A, c)).into_iter().collect();
        let h = hashes(&[(WRK_A, HASH_1)], &current_pairs);
        let d = attest(&hall, &i, &h);
        assert_denied(
            &hall,
            &i,
            &d,
            Denied {
                code: DenyCode::DenyWorkerHashUnavailable,
                message: "Worker 'wrk.doc.a' current code hash could not be retrieved or is \
                          invalid. Verify the get_current_worker_hash implementation.",
                extra: json!({}),
                matched: "rr_doc",
                escalation: doc_escalation(),
            },
        );
    }
}

#[test]
fn deny_worker_tampered_reports_attestation_checked_and_invalid() {
    let hall = attesting_hall();
    let i = input("cap.doc.summarize");
    let with_newline = format!("{HASH_1}\n");
    for (registered, current) in [(HASH_1, HASH_2), (with_newline.as_str(), HASH_1)] {
        let h = hashes(&[(WRK_A, registered)], &[(WRK_A, current)]);
        let d = attest(&hall, &i, &h);
        assert_denied(
            &hall,
            &i,
            &d,
            Denied {
                code: DenyCode::DenyWorkerTampered,
                message: "Worker 'wrk.doc.a' code hash mismatch. Worker may have been modified \
                          after attestation. Re-attest the worker or investigate for tampering.",
                extra: json!({"worker_species_id": WRK_A}),
                matched: "rr_doc",
                escalation: doc_escalation(),
            },
        );
        // The hashes themselves are never returned.
        let serialised = text(&d);
        assert!(!serialised.contains(HASH_1) && !serialised.contains(HASH_2));
    }
}

#[test]
fn matching_attestation_allows_and_suppresses_the_skipped_warning() {
    let hall = attesting_hall();
    let with_newline = format!("{HASH_1}\n");
    // PyHall's `$` accepts one trailing newline on both sides.
    for hash in [HASH_1, with_newline.as_str()] {
        let h = hashes(&[(WRK_A, hash)], &[(WRK_A, hash)]);
        let i = input_at(
            "cap.doc.summarize",
            Env::Prod,
            DataLabel::Public,
            QosClass::P2,
        );
        let d = attest(&hall, &i, &h);
        let events = assert_allowed(&d, "rr_doc", WRK_A);
        assert_eq!(
            (d.worker_attestation_checked, d.worker_attestation_valid),
            (true, Some(true))
        );
        assert_eq!(
            event_ids(&events),
            vec![
                "evt.gov.blast_scored",
                "evt.os.task.routed",
                "evt.os.worker.selected",
                "evt.os.policy.gated"
            ]
        );
    }
}

#[test]
fn pyhall_sha256_check() {
    assert!(is_pyhall_sha256(HASH_1));
    assert!(is_pyhall_sha256(&format!("{HASH_1}\n")));
    assert!(!is_pyhall_sha256(&format!("{HASH_1}\r\n")));
    assert!(!is_pyhall_sha256(&format!("{HASH_1}\n\n")));
    assert!(!is_pyhall_sha256(&HASH_1.to_uppercase()));
    assert!(!is_pyhall_sha256(&format!("sha256:{HASH_1}")));
    assert!(!is_pyhall_sha256(&HASH_1[1..]));
    assert!(!is_pyhall_sha256(""));
    // 64 bytes but not 64 hex digits.
    assert!(!is_pyhall_sha256(&format!("é{}", &HASH_1[2..])));
    assert_eq!(hex(&[0x00, 0x0f, 0xa0, 0xff]), "000fa0ff");
}

// ---------------------------------------------------------------------------------------------
// Step 6.7: privilege envelope

const PRIVILEGE_UNCONFIGURED: &str = "ctrl.privilege_envelopes_required is set but privilege \
    envelope callables were not provided. Pass registry_get_privilege_envelope and \
    registry_policy_allows_privilege to make_decision().";

#[test]
fn deny_privilege_envelope_unconfigured_via_the_rule_control() {
    let hall = Hall::new();
    let i = input("cap.priv");
    let d = hall.route(&i);
    assert_denied(
        &hall,
        &i,
        &d,
        Denied {
            code: DenyCode::DenyPrivilegeEnvelopeUnconfigured,
            message: PRIVILEGE_UNCONFIGURED,
            extra: json!({}),
            matched: "rr_priv",
            escalation: escalation(|e| e.human_required_if = vec!["always".into()]),
        },
    );
}

#[test]
fn deny_privilege_envelope_unconfigured_via_the_config_floor() {
    let mut hall = Hall::new();
    let i = input("cap.doc.summarize");
    assert_allowed(&hall.route(&i), "rr_doc", WRK_A);
    hall.config.enforce_privilege_envelopes = true;
    let d = hall.route(&i);
    assert_denied(
        &hall,
        &i,
        &d,
        Denied {
            code: DenyCode::DenyPrivilegeEnvelopeUnconfigured,
            message: PRIVILEGE_UNCONFIGURED,
            extra: json!({}),
            matched: "rr_doc",
            escalation: doc_escalation(),
        },
    );
}

#[test]
fn deny_internal_error_when_the_privilege_check_fails() {
    let hall = Hall::new();
    let i = input("cap.priv");
    let stubs = [
        StubPrivilege::new(Err("lookup failed".into()), Ok((true, "stub_allow".into()))),
        StubPrivilege::new(Ok(None), Err("'str' object has no attribute 'get'".into())),
    ];
    for stub in &stubs {
        let d = hall.route_with(
            &i,
            With {
                privilege: Some(stub),
                ..With::default()
            },
        );
        assert_denied(
            &hall,
            &i,
            &d,
            Denied {
                code: DenyCode::DenyInternalError,
                message: "Privilege envelope check raised an exception.",
                extra: json!({}),
                matched: "rr_priv",
                escalation: escalation(|e| e.human_required_if = vec!["always".into()]),
            },
        );
    }
    // A failed envelope lookup never reaches `allows`.
    assert!(stubs[0].allows_calls.borrow().is_empty());
    assert_eq!(stubs[1].allows_calls.borrow().len(), 1);
}

#[test]
fn deny_privilege_envelope_violated() {
    let hall = Hall::new();
    let envelope = json!({"egress": {"allowlist": ["api.example.com"]}});
    let stub = StubPrivilege::new(
        Ok(Some(envelope.clone())),
        Ok((false, "egress_not_allowlisted:api.example.com".into())),
    );
    let i = input_at("cap.priv", Env::Prod, DataLabel::Restricted, QosClass::P2);
    let d = hall.route_with(
        &i,
        With {
            privilege: Some(&stub),
            ..With::default()
        },
    );
    assert_denied(
        &hall,
        &i,
        &d,
        Denied {
            code: DenyCode::DenyPrivilegeEnvelopeViolated,
            message: "Worker privilege envelope denied for prod/RESTRICTED: \
                      egress_not_allowlisted:api.example.com",
            extra: json!({"reason": "egress_not_allowlisted:api.example.com",
                          "worker_species_id": WRK_A}),
            matched: "rr_priv",
            escalation: escalation(|e| e.human_required_if = vec!["always".into()]),
        },
    );
    assert_eq!(*stub.envelope_calls.borrow(), vec![WRK_A.to_owned()]);
    assert_eq!(
        *stub.allows_calls.borrow(),
        vec![(Env::Prod, DataLabel::Restricted, Some(envelope))]
    );
}

#[test]
fn privilege_check_runs_only_when_required() {
    let hall = Hall::new();
    let stub = StubPrivilege::new(Ok(None), Ok((false, "would deny".into())));
    let with = With {
        privilege: Some(&stub),
        ..With::default()
    };
    let events = assert_allowed(
        &hall.route_with(&input("cap.doc.summarize"), with),
        "rr_doc",
        WRK_A,
    );
    assert!(stub.envelope_calls.borrow().is_empty());
    assert!(
        !event_ids(&events).contains(&"evt.gov.privilege_envelope.checked"),
        "{events:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Step order: the first failing step decides

#[test]
fn the_first_failing_step_decides() {
    let gate_deny = gate_answer("DENY", "policy.v3", "no");
    let high_blast = |cap: &str| blast_input(cap, Env::Prod, DataLabel::Restricted);

    // Signatory before blank tenant.
    let mut hall = Hall::new();
    hall.config.require_signatory = true;
    let mut i = input("cap.doc.summarize");
    i.tenant_id = " ".into();
    assert_eq!(
        hall.route(&i).deny_code(),
        Some(DenyCode::DenyUnknownTenant)
    );

    // Blank tenant before blast range.
    let hall = Hall::new();
    i.blast_score = Some(-1);
    assert_eq!(
        hall.route(&i).deny_code(),
        Some(DenyCode::DenyMissingTenantId)
    );

    // Blast range before shadow rules; shadow rules before rule match.
    let shadows = shadow_hall();
    let mut i = input_at("cap.any", Env::Prod, DataLabel::Public, QosClass::P2);
    i.blast_score = Some(101);
    assert_eq!(
        shadows.route(&i).deny_code(),
        Some(DenyCode::DenyInvalidInput)
    );
    let shadows_only_specific = Hall::with_rules(json!({"rules": [
        {"rule_id": "a", "match": {"capability_id": "cap.x"}},
        {"rule_id": "b", "match": {"capability_id": "cap.x", "env": "prod"}}
    ]}));
    let i = input_at("cap.unmatched", Env::Prod, DataLabel::Public, QosClass::P2);
    assert_eq!(
        shadows_only_specific.route(&i).deny_code(),
        Some(DenyCode::DenyShadowRulesDetected)
    );

    // Correlation before controls; controls before blast.
    let mut hall = Hall::new();
    hall.registry.controls.clear();
    let mut i = high_blast("cap.doc.summarize");
    i.correlation_id = String::new();
    assert_eq!(
        hall.route(&i).deny_code(),
        Some(DenyCode::DenyMissingCorrelationId)
    );
    let i = high_blast("cap.doc.summarize");
    assert_eq!(
        hall.route(&i).deny_code(),
        Some(DenyCode::DenyMissingRequiredControls)
    );

    // Blast before the gate; the gate before candidate selection.
    let mut hall = Hall::new();
    assert_eq!(
        hall.route(&high_blast("cap.gated")).deny_code(),
        Some(DenyCode::DenyRequiresHuman)
    );
    hall.registry.workers.clear();
    let d = hall.route_with(
        &input("cap.gated"),
        With {
            gate: Some(&gate_deny),
            ..With::default()
        },
    );
    assert_eq!(d.deny_code(), Some(DenyCode::DenyPolicyGate));

    // Candidates before attestation; attestation before privilege.
    let hall = attesting_hall();
    assert_eq!(
        hall.route(&input("cap.none")).deny_code(),
        Some(DenyCode::DenyNoAvailableWorker)
    );
    assert_eq!(
        hall.route(&input("cap.priv")).deny_code(),
        Some(DenyCode::DenyAttestationUnconfigured)
    );
    let h = hashes(&[(WRK_A, HASH_1)], &[(WRK_A, HASH_1)]);
    assert_eq!(
        attest(&hall, &input("cap.priv"), &h).deny_code(),
        Some(DenyCode::DenyPrivilegeEnvelopeUnconfigured)
    );
}

// ---------------------------------------------------------------------------------------------
// Allow path

fn full_prod_events(policy_version: &str) -> Value {
    json!([
        {"event_id": "evt.gov.blast_scored", "timestamp": TS, "correlation_id": "corr-1",
         "tenant_id": "tenant-1", "env": "prod", "data_label": "INTERNAL",
         "policy_version": policy_version, "blast_score": 45, "decision": "ALLOW"},
        {"event_id": "evt.gov.privilege_envelope.checked", "timestamp": TS,
         "correlation_id": "corr-1", "tenant_id": "tenant-1", "env": "prod",
         "data_label": "INTERNAL", "policy_version": policy_version,
         "worker_species_id": WRK_B, "decision": "ALLOW"},
        {"event_id": "evt.os.worker.attestation_skipped", "correlation_id": "corr-1",
         "worker_species_id": WRK_B, "env": "prod",
         "reason": "require_worker_attestation=False or hall_config=None", "severity": "warn"},
        {"event_id": "evt.os.task.routed", "timestamp": TS, "correlation_id": "corr-1",
         "tenant_id": "tenant-1", "task_id": TASK_ID, "capability_id": "cap.full",
         "matched_rule_id": "rr_full", "selected_worker_species_id": WRK_B,
         "policy_version": policy_version, "qos_class": "P2"},
        {"event_id": "evt.os.worker.selected", "timestamp": TS, "correlation_id": "corr-1",
         "tenant_id": "tenant-1", "capability_id": "cap.full",
         "selected_worker_species_id": WRK_B, "reason": "first_available_candidate"},
        {"event_id": "evt.os.policy.gated", "timestamp": TS, "correlation_id": "corr-1",
         "tenant_id": "tenant-1", "capability_id": "cap.full", "decision": "ALLOW",
         "policy_version": policy_version, "reason": "policy_gate_allow"}
    ])
}

fn route_full_prod(hall: &Hall, dry_run: bool) -> (RouteInput, RouteDecision) {
    let mut i = input_at("cap.full", Env::Prod, DataLabel::Internal, QosClass::P2);
    i.dry_run = dry_run;
    let gate = allow_gate();
    let privilege = StubPrivilege::allowing();
    let d = hall.route_with(
        &i,
        With {
            gate: Some(&gate),
            privilege: Some(&privilege),
            ..With::default()
        },
    );
    (i, d)
}

#[test]
fn allow_path_in_prod_emits_every_event_in_pyhall_order() {
    let hall = Hall::new();
    let (i, d) = route_full_prod(&hall, false);
    assert_allowed(&d, "rr_full", WRK_B);
    // Gate's policy_version reaches every event that carries one.
    assert_eq!(
        text(&d.telemetry_envelopes),
        text(&full_prod_events("policy.v9"))
    );
    assert_eq!(d.decision_id, DECISION_ID);
    assert_eq!(d.timestamp, TS);
    assert_eq!(
        d.required_controls_effective,
        vec![CTRL_AUDIT, CTRL_PRIVILEGE_ENVELOPES_REQUIRED]
    );
    assert_eq!(d.escalation_effective, escalation(|e| e.policy_gate = true));
    assert!(d.recommended_profiles_effective.is_empty());
    assert_eq!(d.preconditions_checked, Preconditions::default());
    assert_eq!(
        (d.worker_attestation_checked, d.worker_attestation_valid),
        (false, None)
    );
    assert!(!d.dry_run);
    assert_eq!(d.artifact_hash.as_deref(), Some(artifact_hash(&i).as_str()));
}

#[test]
fn allow_path_in_dev_has_only_the_three_routing_events() {
    let hall = Hall::new();
    let i = input("cap.doc.summarize");
    let d = hall.route(&i);
    let events = assert_allowed(&d, "rr_doc", WRK_A);
    assert_eq!(
        text(&events),
        text(&json!([
            {"event_id": "evt.os.task.routed", "timestamp": TS, "correlation_id": "corr-1",
             "tenant_id": "tenant-1", "task_id": TASK_ID, "capability_id": "cap.doc.summarize",
             "matched_rule_id": "rr_doc", "selected_worker_species_id": WRK_A,
             "policy_version": "policy.v0", "qos_class": "P2"},
            {"event_id": "evt.os.worker.selected", "timestamp": TS, "correlation_id": "corr-1",
             "tenant_id": "tenant-1", "capability_id": "cap.doc.summarize",
             "selected_worker_species_id": WRK_A, "reason": "first_available_candidate"},
            {"event_id": "evt.os.policy.gated", "timestamp": TS, "correlation_id": "corr-1",
             "tenant_id": "tenant-1", "capability_id": "cap.doc.summarize", "decision": "ALLOW",
             "policy_version": "policy.v0", "reason": "no_gate_required"}
        ]))
    );
    // The rule's decision is echoed on allow.
    assert_eq!(d.escalation_effective, doc_escalation());
    assert_eq!(
        d.recommended_profiles_effective,
        vec![json!({"profile_id": "p.fast"})]
    );
    assert_eq!(d.required_controls_effective, vec![CTRL_AUDIT]);
    assert!(d.preconditions_checked.deny_if_no_attestation_in_prod);
}

#[test]
fn attestation_skipped_warning_appears_once_in_prod_and_edge_only() {
    let hall = Hall::new();
    for (env, expected) in [
        (Env::Dev, 0),
        (Env::Stage, 0),
        (Env::Prod, 1),
        (Env::Edge, 1),
    ] {
        let i = input_at("cap.doc.summarize", env, DataLabel::Public, QosClass::P2);
        let events = assert_allowed(&hall.route(&i), "rr_doc", WRK_A);
        let skipped = event_ids(&events)
            .iter()
            .filter(|id| **id == "evt.os.worker.attestation_skipped")
            .count();
        assert_eq!(skipped, expected, "{env}");
    }
}

#[test]
fn dry_run_tags_every_event_last_and_changes_nothing_else() {
    let hall = Hall::new();
    let (_, real) = route_full_prod(&hall, false);
    let (i, dry) = route_full_prod(&hall, true);
    assert!(dry.dry_run);
    let mut want = full_prod_events("policy.v9");
    for e in want.as_array_mut().expect("array") {
        e["dry_run"] = json!(true);
    }
    assert_eq!(text(&dry.telemetry_envelopes), text(&want));
    assert_eq!(
        dry.selected_worker_species_id,
        real.selected_worker_species_id
    );
    assert_eq!(dry.candidate_workers_ranked, real.candidate_workers_ranked);
    // dry_run is part of the hashed input.
    assert_eq!(
        dry.artifact_hash.as_deref(),
        Some(artifact_hash(&i).as_str())
    );
    assert_ne!(dry.artifact_hash, real.artifact_hash);

    // Deny path: the single event is tagged too (assert_denied checks it).
    let mut i = input_at("cap.unknown", Env::Prod, DataLabel::Public, QosClass::P2);
    i.dry_run = true;
    let d = hall.route(&i);
    assert!(d.dry_run);
    assert_denied(
        &hall,
        &i,
        &d,
        Denied {
            code: DenyCode::DenyNoMatchingRule,
            message: "No routing rule matched. Fail-closed per WCP spec section 5.1.",
            extra: json!({}),
            matched: NO_MATCH,
            escalation: Escalation::default(),
        },
    );
    assert!(text(&d.telemetry_envelopes).ends_with(",\"dry_run\":true}]"));
}

#[test]
fn events_sanitise_control_characters_but_the_decision_keeps_raw_values() {
    let hall = Hall::new();
    // Library callers can build a RouteInput directly, bypassing input validation.
    let mut i = input("cap.doc.summarize\nevt.injected fake-entry");
    i.correlation_id = "corr\n\u{7f}-1\u{1b}[31m\u{85}\u{2028}".into();
    i.tenant_id = "tenant\r-1\u{0}".into();
    let d = hall.route(&i);
    let events = assert_allowed(&d, "rr_inject", WRK_A);
    assert_eq!(d.correlation_id, "corr\n\u{7f}-1\u{1b}[31m\u{85}\u{2028}");
    assert_eq!(d.tenant_id, "tenant\r-1\u{0}");
    assert_eq!(
        d.capability_id,
        "cap.doc.summarize\nevt.injected fake-entry"
    );
    assert_eq!(events.len(), 3);
    for e in &events {
        // C0 and DEL are deleted; U+0085 and U+2028 are kept, as in PyHall.
        assert_eq!(e["correlation_id"], "corr-1[31m\u{85}\u{2028}", "{e}");
        assert_eq!(e["tenant_id"], "tenant-1", "{e}");
        assert_eq!(
            e["capability_id"], "cap.doc.summarizeevt.injected fake-entry",
            "{e}"
        );
    }
    // The artifact hash is over the raw input.
    assert_eq!(d.artifact_hash.as_deref(), Some(artifact_hash(&i).as_str()));
    let mut clean = i.clone();
    clean.correlation_id = "corr-1[31m\u{85}\u{2028}".into();
    assert_ne!(artifact_hash(&clean), artifact_hash(&i));

    // Deny path (assert_denied compares the sanitised event fields).
    let mut i = input("cap.nothing\nevt.fake");
    i.correlation_id = "c\u{1f}1".into();
    let d = hall.route(&i);
    assert_denied(
        &hall,
        &i,
        &d,
        Denied {
            code: DenyCode::DenyNoMatchingRule,
            message: "No routing rule matched. Fail-closed per WCP spec section 5.1.",
            extra: json!({}),
            matched: NO_MATCH,
            escalation: Escalation::default(),
        },
    );
    assert_eq!(
        to_json(&d.telemetry_envelopes[0])["capability_id"],
        "cap.nothingevt.fake"
    );
    assert_eq!(to_json(&d.telemetry_envelopes[0])["correlation_id"], "c1");
}

// ---------------------------------------------------------------------------------------------
// Artifact hash

#[test]
fn artifact_hash_matches_pyhall_cv_011() {
    let hall = Hall::new();
    let i = RouteInput::from_value(&json!({
        "capability_id": "cap.doc.summarize", "correlation_id": "test-corr-cv011",
        "data_label": "INTERNAL", "env": "dev", "qos_class": "P2", "request": {},
        "tenant_id": "tenant-1", "tenant_risk": "low"
    }))
    .expect("valid");
    const CV_011: &str = "8a48a9d0f6f5a872b91562ebc30178ba52d715b2fde1f89d3d9a415b7917cd43";
    assert_eq!(artifact_hash(&i), CV_011);
    let d = hall.route(&i);
    assert_allowed(&d, "rr_doc", WRK_A);
    assert_eq!(d.artifact_hash.as_deref(), Some(CV_011));

    let i = RouteInput::from_value(&json!({
        "capability_id": "cap.doc.summarize", "correlation_id": "test-corr-cv011",
        "data_label": "INTERNAL", "env": "dev", "qos_class": "P2",
        "request": {"b": [1, 2.5, true, null], "a": "é"}, "blast_score": 0,
        "tenant_id": "tenant-1", "tenant_risk": "low"
    }))
    .expect("valid");
    const NESTED: &str = "372f86b5fa9310a6d47384994f6d4f49233dab8aac5c00261dccff5a989e0835";
    assert_eq!(artifact_hash(&i), NESTED);
    assert_eq!(hall.route(&i).artifact_hash.as_deref(), Some(NESTED));
}

#[test]
fn artifact_hash_ignores_policy_version_but_covers_model_fields() {
    let base = input("cap.doc.summarize");
    let h = artifact_hash(&base);
    assert_eq!(h.len(), 64);
    assert!(h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')));
    let mut v = base.clone();
    v.policy_version = Some("policy.v2".into());
    assert_eq!(
        artifact_hash(&v),
        h,
        "policy_version is not in PyHall's model"
    );
    let mut v = base.clone();
    v.tenant_credential = Some("cred".into());
    assert_ne!(artifact_hash(&v), h);
    let mut v = base;
    v.qos_class = QosClass::P3;
    assert_ne!(artifact_hash(&v), h);
}

// ---------------------------------------------------------------------------------------------
// Serialised shape

fn keys(v: &Value) -> Vec<&str> {
    v.as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect()
}

const DECISION_KEYS: [&str; 23] = [
    "decision_id",
    "timestamp",
    "correlation_id",
    "tenant_id",
    "capability_id",
    "matched_rule_id",
    "env",
    "data_label",
    "tenant_risk",
    "qos_class",
    "denied",
    "deny_reason_if_denied",
    "selected_worker_species_id",
    "candidate_workers_ranked",
    "required_controls_effective",
    "recommended_profiles_effective",
    "escalation_effective",
    "preconditions_checked",
    "artifact_hash",
    "worker_attestation_checked",
    "worker_attestation_valid",
    "dry_run",
    "telemetry_envelopes",
];

#[test]
fn decision_serialises_with_keys_in_pyhall_order() {
    let hall = Hall::new();
    let allowed = hall.route(&input("cap.doc.summarize"));
    let v: Value = serde_json::from_str(&text(&allowed)).expect("round trip");
    assert_eq!(keys(&v), DECISION_KEYS);
    assert_eq!(v["deny_reason_if_denied"], Value::Null);
    assert_eq!(v["worker_attestation_valid"], Value::Null);
    assert_eq!(v["env"], "dev");
    assert_eq!(v["data_label"], "INTERNAL");
    assert_eq!(
        keys(&v["candidate_workers_ranked"][0]),
        [
            "worker_species_id",
            "score_hint",
            "requires_controls_minimum",
            "skip_reason"
        ]
    );
    assert_eq!(v["candidate_workers_ranked"][0]["score_hint"], json!(1.0));
    assert_eq!(
        keys(&v["escalation_effective"]),
        [
            "policy_gate",
            "msavx_step_up",
            "human_required_default",
            "human_required_if",
            "rationale"
        ]
    );
    assert_eq!(
        keys(&v["preconditions_checked"]),
        [
            "must_have_correlation_id",
            "must_attach_policy_version",
            "must_record_artifact_hash_if_executes",
            "deny_if_missing_required_controls",
            "deny_if_unsigned_artifact_in_prod",
            "deny_if_no_attestation_in_prod"
        ]
    );

    let gate = gate_answer("REQUIRE_HUMAN", "policy.v4", "needs supervisor");
    let denied = hall.route_with(
        &input("cap.gated"),
        With {
            gate: Some(&gate),
            ..With::default()
        },
    );
    let text = text(&denied);
    let v: Value = serde_json::from_str(&text).expect("round trip");
    assert_eq!(keys(&v), DECISION_KEYS);
    assert_eq!(
        keys(&v["deny_reason_if_denied"]),
        [
            "code",
            "message",
            "reason",
            "policy_version",
            "supervisor_required"
        ]
    );
    assert_eq!(
        v["deny_reason_if_denied"]["code"],
        "DENY_REQUIRES_HUMAN_APPROVAL"
    );
    assert!(text.starts_with(&format!(
        "{{\"decision_id\":\"{DECISION_ID}\",\"timestamp\":\"{TS}\",\"correlation_id\":\"corr-1\""
    )));
    assert!(text.ends_with(
        "\"worker_attestation_checked\":false,\"worker_attestation_valid\":null,\
         \"dry_run\":false,\"telemetry_envelopes\":[{\"event_id\":\"evt.os.task.denied\",\
         \"timestamp\":\"2026-01-02T03:04:05.123456+00:00\",\"correlation_id\":\"corr-1\",\
         \"tenant_id\":\"tenant-1\",\"capability_id\":\"cap.gated\",\
         \"deny_code\":\"DENY_REQUIRES_HUMAN_APPROVAL\",\"deny_message\":\"Policy gate requires \
         human approval before this worker can be dispatched. Submit the pending approval via \
         wcp.approval.resolve.\",\"matched_rule_id\":\"rr_gated\"}]}"
    ));
}

#[test]
fn every_deny_code_serialises_to_its_pyhall_string() {
    let codes = [
        (DenyCode::DenyUnknownTenant, "DENY_UNKNOWN_TENANT"),
        (DenyCode::DenyMissingTenantId, "DENY_MISSING_TENANT_ID"),
        (DenyCode::DenyInvalidInput, "DENY_INVALID_INPUT"),
        (
            DenyCode::DenyShadowRulesDetected,
            "DENY_SHADOW_RULES_DETECTED",
        ),
        (DenyCode::DenyNoMatchingRule, "DENY_NO_MATCHING_RULE"),
        (
            DenyCode::DenyMissingCorrelationId,
            "DENY_MISSING_CORRELATION_ID",
        ),
        (
            DenyCode::DenyMissingRequiredControls,
            "DENY_MISSING_REQUIRED_CONTROLS",
        ),
        (DenyCode::DenyRequiresHuman, "DENY_REQUIRES_HUMAN"),
        (
            DenyCode::DenyPolicyGateUnconfigured,
            "DENY_POLICY_GATE_UNCONFIGURED",
        ),
        (DenyCode::DenyInternalError, "DENY_INTERNAL_ERROR"),
        (DenyCode::DenyPolicyGate, "DENY_POLICY_GATE"),
        (
            DenyCode::DenyRequiresHumanApproval,
            "DENY_REQUIRES_HUMAN_APPROVAL",
        ),
        (
            DenyCode::DenyPolicyGateInvalidResponse,
            "DENY_POLICY_GATE_INVALID_RESPONSE",
        ),
        (DenyCode::DenyNoAvailableWorker, "DENY_NO_AVAILABLE_WORKER"),
        (
            DenyCode::DenyAttestationUnconfigured,
            "DENY_ATTESTATION_UNCONFIGURED",
        ),
        (
            DenyCode::DenyWorkerAttestationMissing,
            "DENY_WORKER_ATTESTATION_MISSING",
        ),
        (
            DenyCode::DenyWorkerAttestationInvalidHash,
            "DENY_WORKER_ATTESTATION_INVALID_HASH",
        ),
        (
            DenyCode::DenyWorkerHashUnavailable,
            "DENY_WORKER_HASH_UNAVAILABLE",
        ),
        (DenyCode::DenyWorkerTampered, "DENY_WORKER_TAMPERED"),
        (
            DenyCode::DenyPrivilegeEnvelopeUnconfigured,
            "DENY_PRIVILEGE_ENVELOPE_UNCONFIGURED",
        ),
        (
            DenyCode::DenyPrivilegeEnvelopeViolated,
            "DENY_PRIVILEGE_ENVELOPE_VIOLATED",
        ),
    ];
    for (code, wire) in codes {
        assert_eq!(code.as_str(), wire);
        assert_eq!(code.to_string(), wire);
        assert_eq!(to_json(&code), json!(wire));
    }
}

#[test]
fn router_config_default_is_pyhall_hall_config() {
    let c = RouterConfig::default();
    assert!(!c.require_signatory);
    assert!(c.allowed_tenants.is_empty());
    assert!(!c.require_worker_attestation);
    assert!(c.enforce_correlation_id);
    assert!(c.enforce_required_controls);
    assert!(c.enforce_blast_scoring_in_prod);
    assert!(!c.enforce_privilege_envelopes);
}

#[test]
fn deny_reason_extras_flatten_after_code_and_message() {
    let mut extra = Map::new();
    extra.insert("missing".into(), json!(["ctrl.a"]));
    let reason = crate::wcp::DenyReason {
        code: DenyCode::DenyMissingRequiredControls,
        message: "m".into(),
        extra,
    };
    assert_eq!(
        text(&reason),
        "{\"code\":\"DENY_MISSING_REQUIRED_CONTROLS\",\"message\":\"m\",\"missing\":[\"ctrl.a\"]}"
    );
}

#[test]
fn a_human_approval_satisfies_the_blast_threshold_and_a_require_human_gate_only() {
    let hall = Hall::new();
    // Blast 90 in prod needs a human; with an approval the same request is allowed.
    let mut i = input("cap.blast");
    i.env = Env::Prod;
    i.blast_score = Some(90);
    assert_eq!(
        hall.route(&i).deny_code(),
        Some(DenyCode::DenyRequiresHuman)
    );
    let approved = With {
        human_approval: Some("approval-1"),
        ..With::default()
    };
    let d = hall.route_with(&i, approved);
    assert!(!d.denied, "{:?}", d.deny_reason_if_denied);

    // A gate answering REQUIRE_HUMAN is satisfied by the approval and says so in telemetry.
    let gate = gate_answer("REQUIRE_HUMAN", "policy.v4", "needs supervisor");
    let i = input("cap.gated");
    let d = hall.route_with(
        &i,
        With {
            gate: Some(&gate),
            human_approval: Some("approval-1"),
            ..With::default()
        },
    );
    assert!(!d.denied);
    let gated = serde_json::to_value(d.telemetry_envelopes.last().unwrap()).unwrap();
    assert_eq!(gated["reason"], "human_approved");
    assert_eq!(gated["policy_version"], "policy.v4");

    // A DENY from the gate is never overridden by an approval.
    let deny = gate_answer("DENY", "policy.v4", "no");
    let d = hall.route_with(
        &i,
        With {
            gate: Some(&deny),
            human_approval: Some("approval-1"),
            ..With::default()
        },
    );
    assert_eq!(d.deny_code(), Some(DenyCode::DenyPolicyGate));
}
