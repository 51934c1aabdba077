//! Unit tests of rule loading, the first-match index and shadow detection.

use serde_json::{Map, Value, json};

use super::*;
use crate::wcp::enums::{DataLabel, Env, QosClass, TenantRisk};

// ---------------------------------------------------------------------------------------------
// Helpers

fn input(cap: &str, env: Env, label: DataLabel, risk: TenantRisk, qos: QosClass) -> RouteInput {
    RouteInput {
        capability_id: cap.to_owned(),
        env,
        data_label: label,
        tenant_risk: risk,
        qos_class: qos,
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

/// The issues of a document that must fail validation.
fn issues_of(doc: &Value) -> Vec<RuleIssue> {
    match RuleSet::from_value(doc) {
        Ok(set) => panic!(
            "expected a load error for {doc}, but {} rule(s) loaded",
            set.rules().len()
        ),
        Err(RulesError::Invalid(issues)) => issues,
        Err(other) => panic!("expected RulesError::Invalid for {doc}, got {other}"),
    }
}

/// `{"rules": [{"rule_id": "r1", "match": m}]}`.
fn with_match(m: Value) -> Value {
    json!({"rules": [{"rule_id": "r1", "match": m}]})
}

/// `{"rules": [{"rule_id": "r1", "match": {"capability_id": "cap.a"}, "decision": d}]}`.
fn with_decision(d: Value) -> Value {
    json!({"rules": [{"rule_id": "r1", "match": {"capability_id": "cap.a"}, "decision": d}]})
}

fn load(doc: Value) -> RuleSet {
    RuleSet::from_value(&doc).unwrap_or_else(|e| panic!("{doc} should load: {e}"))
}

/// `(shadower, shadowed)` pairs of a rule set.
fn shadow_pairs(set: &RuleSet) -> Vec<(&str, &str)> {
    set.shadows()
        .iter()
        .map(|w| (w.shadower.as_str(), w.shadowed.as_str()))
        .collect()
}

fn rules_with_matches(matches: &[(&str, Value)]) -> RuleSet {
    let rules: Vec<Value> = matches
        .iter()
        .map(|(id, m)| json!({"rule_id": id, "match": m}))
        .collect();
    load(json!({ "rules": rules }))
}

// ---------------------------------------------------------------------------------------------
// Load errors

struct ErrorCase {
    name: &'static str,
    doc: Value,
    path: &'static str,
    rule_id: Option<&'static str>,
    /// A substring of the problem text.
    problem: &'static str,
}

fn error_cases() -> Vec<ErrorCase> {
    vec![
        ErrorCase {
            name: "in with a string (PyHall substring test)",
            doc: with_match(json!({"env": {"in": "dev"}})),
            path: "$.rules[0].match.env.in",
            rule_id: Some("r1"),
            problem: "{\"in\": \"dev\"} is a string, which PyHall treats as a substring test",
        },
        ErrorCase {
            name: "eq object",
            doc: with_match(json!({"capability_id": {"eq": "x"}})),
            path: "$.rules[0].match.capability_id",
            rule_id: Some("r1"),
            problem: "object with keys [\"eq\"] never matches in PyHall",
        },
        ErrorCase {
            name: "any false",
            doc: with_match(json!({"capability_id": {"any": false}})),
            path: "$.rules[0].match.capability_id",
            rule_id: Some("r1"),
            problem: "object with keys [\"any\"] never matches in PyHall",
        },
        ErrorCase {
            name: "any with an extra key",
            doc: with_match(json!({"env": {"any": true, "in": ["dev"]}})),
            path: "$.rules[0].match.env",
            rule_id: Some("r1"),
            problem: "object with keys [\"any\", \"in\"] never matches in PyHall",
        },
        ErrorCase {
            name: "empty object",
            doc: with_match(json!({"data_label": {}})),
            path: "$.rules[0].match.data_label",
            rule_id: Some("r1"),
            problem: "object with keys [] never matches in PyHall",
        },
        ErrorCase {
            name: "null condition",
            doc: with_match(json!({"tenant_risk": null})),
            path: "$.rules[0].match.tenant_risk",
            rule_id: Some("r1"),
            problem: "null is ambiguous (PyHall treats it as a wildcard)",
        },
        ErrorCase {
            name: "number condition",
            doc: with_match(json!({"qos_class": 5})),
            path: "$.rules[0].match.qos_class",
            rule_id: Some("r1"),
            problem: "an integer is not a condition",
        },
        ErrorCase {
            name: "boolean condition",
            doc: with_match(json!({"capability_id": true})),
            path: "$.rules[0].match.capability_id",
            rule_id: Some("r1"),
            problem: "a boolean is not a condition",
        },
        ErrorCase {
            name: "bare array condition",
            doc: with_match(json!({"env": ["dev"]})),
            path: "$.rules[0].match.env",
            rule_id: Some("r1"),
            problem: "an array is not a condition",
        },
        ErrorCase {
            name: "unknown match key",
            doc: with_match(json!({"capability_id": "cap.a", "tenant_id": "t1"})),
            path: "$.rules[0].match.tenant_id",
            rule_id: Some("r1"),
            problem: "match key \"tenant_id\" is not routed on",
        },
        ErrorCase {
            name: "env outside the vocabulary",
            doc: with_match(json!({"env": "production"})),
            path: "$.rules[0].match.env",
            rule_id: Some("r1"),
            problem: "\"production\" can never match: env is one of dev, stage, prod, edge",
        },
        ErrorCase {
            name: "env outside the vocabulary inside an in list",
            doc: with_match(json!({"env": {"in": ["dev", "Prod"]}})),
            path: "$.rules[0].match.env",
            rule_id: Some("r1"),
            problem: "\"Prod\" can never match: env is one of dev, stage, prod, edge",
        },
        ErrorCase {
            name: "data_label in lowercase",
            doc: with_match(json!({"data_label": "public"})),
            path: "$.rules[0].match.data_label",
            rule_id: Some("r1"),
            problem: "\"public\" can never match: data_label is one of PUBLIC, INTERNAL, RESTRICTED",
        },
        ErrorCase {
            name: "tenant_risk outside the vocabulary",
            doc: with_match(json!({"tenant_risk": "critical"})),
            path: "$.rules[0].match.tenant_risk",
            rule_id: Some("r1"),
            problem: "\"critical\" can never match: tenant_risk is one of low, medium, high",
        },
        ErrorCase {
            name: "qos_class outside the vocabulary",
            doc: with_match(json!({"qos_class": "P4"})),
            path: "$.rules[0].match.qos_class",
            rule_id: Some("r1"),
            problem: "\"P4\" can never match: qos_class is one of P0, P1, P2, P3",
        },
        ErrorCase {
            name: "empty in list",
            doc: with_match(json!({"env": {"in": []}})),
            path: "$.rules[0].match.env",
            rule_id: Some("r1"),
            problem: "{\"in\": []} can never match",
        },
        ErrorCase {
            name: "non-string member of in",
            doc: with_match(json!({"env": {"in": ["dev", 3]}})),
            path: "$.rules[0].match.env.in[1]",
            rule_id: Some("r1"),
            problem: "expected a string, got an integer",
        },
        ErrorCase {
            name: "in with an object",
            doc: with_match(json!({"env": {"in": {"dev": true}}})),
            path: "$.rules[0].match.env.in",
            rule_id: Some("r1"),
            problem: "expected an array of strings, got an object",
        },
        ErrorCase {
            name: "match is not an object",
            doc: with_match(json!(["cap.a"])),
            path: "$.rules[0].match",
            rule_id: Some("r1"),
            problem: "expected an object of conditions, got an array",
        },
        ErrorCase {
            name: "duplicate rule_id",
            doc: json!({"rules": [
                {"rule_id": "dup", "match": {"capability_id": "cap.a"}},
                {"rule_id": "other", "match": {"capability_id": "cap.b"}},
                {"rule_id": "dup", "match": {"capability_id": "cap.c"}}
            ]}),
            path: "$.rules[2].rule_id",
            rule_id: Some("dup"),
            problem: "duplicate rule_id, already used by $.rules[0]",
        },
        ErrorCase {
            name: "missing rule_id",
            doc: json!({"rules": [{"match": {"capability_id": "cap.a"}}]}),
            path: "$.rules[0]",
            rule_id: None,
            problem: "missing \"rule_id\"",
        },
        ErrorCase {
            name: "blank rule_id",
            doc: json!({"rules": [{"rule_id": "  ", "match": {}}]}),
            path: "$.rules[0].rule_id",
            rule_id: None,
            problem: "rule_id must not be empty",
        },
        ErrorCase {
            name: "numeric rule_id",
            doc: json!({"rules": [{"rule_id": 7}]}),
            path: "$.rules[0].rule_id",
            rule_id: None,
            problem: "expected a string, got an integer",
        },
        ErrorCase {
            name: "rule is not an object",
            doc: json!({"rules": ["r1"]}),
            path: "$.rules[0]",
            rule_id: None,
            problem: "expected a rule object, got a string",
        },
        ErrorCase {
            name: "unknown key in a rule",
            doc: json!({"rules": [{"rule_id": "r1", "priority": 1}]}),
            path: "$.rules[0].priority",
            rule_id: Some("r1"),
            problem: "unknown key \"priority\"; allowed keys: rule_id, match, decision, description",
        },
        ErrorCase {
            name: "unknown key in a decision",
            doc: with_decision(json!({"candidates": []})),
            path: "$.rules[0].decision.candidates",
            rule_id: Some("r1"),
            problem: "unknown key \"candidates\"",
        },
        ErrorCase {
            name: "decision is not an object",
            doc: with_decision(json!("allow")),
            path: "$.rules[0].decision",
            rule_id: Some("r1"),
            problem: "expected a decision object, got a string",
        },
        ErrorCase {
            name: "unknown key in escalation",
            doc: with_decision(json!({"escalation": {"policy_gates": true}})),
            path: "$.rules[0].decision.escalation.policy_gates",
            rule_id: Some("r1"),
            problem: "unknown key \"policy_gates\"",
        },
        ErrorCase {
            name: "escalation is not an object",
            doc: with_decision(json!({"escalation": true})),
            path: "$.rules[0].decision.escalation",
            rule_id: Some("r1"),
            problem: "expected an object, got a boolean",
        },
        ErrorCase {
            name: "unknown precondition",
            doc: with_decision(json!({"preconditions": {"must_be_signed": true}})),
            path: "$.rules[0].decision.preconditions.must_be_signed",
            rule_id: Some("r1"),
            problem: "unknown precondition; allowed: must_have_correlation_id",
        },
        ErrorCase {
            name: "precondition flag not a boolean",
            doc: with_decision(json!({"preconditions": {"must_have_correlation_id": "yes"}})),
            path: "$.rules[0].decision.preconditions.must_have_correlation_id",
            rule_id: Some("r1"),
            problem: "expected true or false, got a string",
        },
        ErrorCase {
            name: "preconditions is not an object",
            doc: with_decision(json!({"preconditions": []})),
            path: "$.rules[0].decision.preconditions",
            rule_id: Some("r1"),
            problem: "expected an object of flags, got an array",
        },
        ErrorCase {
            name: "policy_gate \"maybe\"",
            doc: with_decision(json!({"escalation": {"policy_gate": "maybe"}})),
            path: "$.rules[0].decision.escalation.policy_gate",
            rule_id: Some("r1"),
            problem: "expected true or false, got a string",
        },
        ErrorCase {
            name: "msavx_step_up as a number",
            doc: with_decision(json!({"escalation": {"msavx_step_up": 1}})),
            path: "$.rules[0].decision.escalation.msavx_step_up",
            rule_id: Some("r1"),
            problem: "expected true or false, got an integer",
        },
        ErrorCase {
            name: "human_required_default null",
            doc: with_decision(json!({"escalation": {"human_required_default": null}})),
            path: "$.rules[0].decision.escalation.human_required_default",
            rule_id: Some("r1"),
            problem: "expected true or false, got null",
        },
        ErrorCase {
            name: "human_required_if not a list",
            doc: with_decision(json!({"escalation": {"human_required_if": "always"}})),
            path: "$.rules[0].decision.escalation.human_required_if",
            rule_id: Some("r1"),
            problem: "expected an array of strings, got a string",
        },
        ErrorCase {
            name: "rationale as a number",
            doc: with_decision(json!({"escalation": {"rationale": 3.5}})),
            path: "$.rules[0].decision.escalation.rationale",
            rule_id: Some("r1"),
            problem: "expected a string or null, got a number with a fraction or exponent",
        },
        ErrorCase {
            name: "candidate without worker_species_id",
            doc: with_decision(json!({"candidate_workers_ranked": [
                {"worker_species_id": "wrk.a"}, {"score_hint": 1.0}
            ]})),
            path: "$.rules[0].decision.candidate_workers_ranked[1]",
            rule_id: Some("r1"),
            problem: "a candidate needs a non-empty \"worker_species_id\"",
        },
        ErrorCase {
            name: "candidate with an empty worker_species_id",
            doc: with_decision(json!({"candidate_workers_ranked": [{"worker_species_id": ""}]})),
            path: "$.rules[0].decision.candidate_workers_ranked[0]",
            rule_id: Some("r1"),
            problem: "a candidate needs a non-empty \"worker_species_id\"",
        },
        ErrorCase {
            name: "candidate with a numeric worker_species_id",
            doc: with_decision(json!({"candidate_workers_ranked": [{"worker_species_id": 5}]})),
            path: "$.rules[0].decision.candidate_workers_ranked[0].worker_species_id",
            rule_id: Some("r1"),
            problem: "expected a string, got an integer",
        },
        ErrorCase {
            name: "candidate that is a bare string",
            doc: with_decision(json!({"candidate_workers_ranked": ["wrk.a"]})),
            path: "$.rules[0].decision.candidate_workers_ranked[0]",
            rule_id: Some("r1"),
            problem: "expected a candidate object, got a string",
        },
        ErrorCase {
            name: "candidate with an unknown key",
            doc: with_decision(
                json!({"candidate_workers_ranked": [{"worker_species_id": "wrk.a", "weight": 2}]}),
            ),
            path: "$.rules[0].decision.candidate_workers_ranked[0].weight",
            rule_id: Some("r1"),
            problem: "unknown key \"weight\"; allowed keys: worker_species_id, score_hint",
        },
        ErrorCase {
            name: "score_hint as a string",
            doc: with_decision(json!({"candidate_workers_ranked": [
                {"worker_species_id": "wrk.a", "score_hint": "high"}
            ]})),
            path: "$.rules[0].decision.candidate_workers_ranked[0].score_hint",
            rule_id: Some("r1"),
            problem: "expected a number, got a string",
        },
        ErrorCase {
            name: "candidate list is an object",
            doc: with_decision(json!({"candidate_workers_ranked": {"worker_species_id": "wrk.a"}})),
            path: "$.rules[0].decision.candidate_workers_ranked",
            rule_id: Some("r1"),
            problem: "expected an array of candidates, got an object",
        },
        ErrorCase {
            name: "non-object recommended_profiles entry",
            doc: with_decision(json!({"recommended_profiles": [{"profile_id": "p"}, "p.fast"]})),
            path: "$.rules[0].decision.recommended_profiles[1]",
            rule_id: Some("r1"),
            problem: "expected a profile object, got a string",
        },
        ErrorCase {
            name: "recommended_profiles is an object",
            doc: with_decision(json!({"recommended_profiles": {"profile_id": "p"}})),
            path: "$.rules[0].decision.recommended_profiles",
            rule_id: Some("r1"),
            problem: "expected an array of profile objects, got an object",
        },
        ErrorCase {
            name: "non-string required control",
            doc: with_decision(json!({"required_controls_suggested": ["ctrl.a", null]})),
            path: "$.rules[0].decision.required_controls_suggested[1]",
            rule_id: Some("r1"),
            problem: "expected a string, got null",
        },
        ErrorCase {
            name: "required controls as a string",
            doc: with_decision(json!({"required_controls_suggested": "ctrl.a"})),
            path: "$.rules[0].decision.required_controls_suggested",
            rule_id: Some("r1"),
            problem: "expected an array of strings, got a string",
        },
        ErrorCase {
            name: "top level is an array",
            doc: json!([{"rule_id": "r1"}]),
            path: "$",
            rule_id: None,
            problem: "expected an object with a \"rules\" array, got an array",
        },
        ErrorCase {
            name: "top level is a string",
            doc: json!("rules"),
            path: "$",
            rule_id: None,
            problem: "expected an object with a \"rules\" array, got a string",
        },
        ErrorCase {
            name: "missing rules array",
            doc: json!({"description": "no rules here"}),
            path: "$",
            rule_id: None,
            problem: "missing the \"rules\" array",
        },
        ErrorCase {
            name: "rules is an object",
            doc: json!({"rules": {"r1": {}}}),
            path: "$.rules",
            rule_id: None,
            problem: "expected an array of rules, got an object",
        },
    ]
}

#[test]
fn every_load_error_form_names_the_rule_and_the_json_path() {
    for case in error_cases() {
        let issues = issues_of(&case.doc);
        assert_eq!(
            issues.len(),
            1,
            "{}: expected exactly one issue, got {issues:#?}",
            case.name
        );
        let issue = &issues[0];
        assert_eq!(issue.path, case.path, "{}: path", case.name);
        assert_eq!(
            issue.rule_id.as_deref(),
            case.rule_id,
            "{}: rule id",
            case.name
        );
        assert!(
            issue.problem.contains(case.problem),
            "{}: problem {:?} should contain {:?}",
            case.name,
            issue.problem,
            case.problem
        );
    }
}

#[test]
fn unknown_top_level_key_is_reported_next_to_a_valid_rule() {
    let issues = issues_of(&json!({"rules": [{"rule_id": "r1"}], "rulez": []}));
    assert_eq!(
        issues,
        vec![RuleIssue {
            path: "$.rulez".into(),
            rule_id: None,
            problem: "unknown key \"rulez\"; allowed keys: rules, description, version".into(),
        }]
    );
}

#[test]
fn issue_display_is_exact() {
    let issues = issues_of(&with_match(json!({"env": {"in": "dev"}})));
    assert_eq!(
        issues[0].to_string(),
        "rule \"r1\" at $.rules[0].match.env.in: {\"in\": \"dev\"} is a string, which PyHall \
         treats as a substring test; write {\"in\": [\"dev\"]} or an exact string"
    );

    let issues = issues_of(&with_match(json!({"qos_class": "P9"})));
    assert_eq!(
        issues[0].to_string(),
        "rule \"r1\" at $.rules[0].match.qos_class: \"P9\" can never match: qos_class is one of \
         P0, P1, P2, P3"
    );

    let issues = issues_of(&json!({"rules": [{"match": {}}]}));
    assert_eq!(issues[0].to_string(), "$.rules[0]: missing \"rule_id\"");

    let issues = issues_of(&with_match(json!({"env": null})));
    assert_eq!(
        issues[0].to_string(),
        "rule \"r1\" at $.rules[0].match.env: null is ambiguous (PyHall treats it as a \
         wildcard); a condition must be an exact string, {\"in\": [\"a\", \"b\"]}, \
         {\"any\": true}, or the key left out"
    );
}

#[test]
fn several_problems_are_all_reported_in_file_order() {
    let doc = json!({"rules": [
        {"rule_id": "ok", "match": {"capability_id": "cap.a"}},
        {"rule_id": "bad1", "match": {"env": {"in": "dev"}, "qos_class": "P9"}},
        {"match": {"capability_id": "cap.b"}},
        {"rule_id": "bad2", "decision": {"colour": 1, "escalation": {"policy_gate": "maybe"}}},
        {"rule_id": "ok", "match": {"capability_id": "cap.c"}},
        42
    ]});
    let issues = issues_of(&doc);
    let got: Vec<(&str, Option<&str>)> = issues
        .iter()
        .map(|i| (i.path.as_str(), i.rule_id.as_deref()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("$.rules[1].match.env.in", Some("bad1")),
            ("$.rules[1].match.qos_class", Some("bad1")),
            ("$.rules[2]", None),
            ("$.rules[3].decision.colour", Some("bad2")),
            ("$.rules[3].decision.escalation.policy_gate", Some("bad2")),
            ("$.rules[4].rule_id", Some("ok")),
            ("$.rules[5]", None),
        ]
    );

    let err = RuleSet::from_value(&doc).unwrap_err();
    assert!(matches!(&err, RulesError::Invalid(v) if v.len() == 7));
    let text = err.to_string();
    assert!(
        text.starts_with(
            "rules file has 7 problem(s):\n  - rule \"bad1\" at $.rules[1].match.env.in: "
        ),
        "{text}"
    );
    assert_eq!(text.lines().count(), 8, "{text}");
    assert!(text.ends_with("  - $.rules[5]: expected a rule object, got an integer"));
}

#[test]
fn invalid_json_text_is_a_json_error() {
    assert!(matches!(
        RuleSet::from_json_str("{\"rules\": ["),
        Err(RulesError::Json(_))
    ));
    let err = RuleSet::from_json_str(
        "{\"rules\": [{\"rule_id\": \"r1\", \"match\": {\"env\": \"staging\"}}]}",
    )
    .unwrap_err();
    assert!(matches!(err, RulesError::Invalid(ref v) if v.len() == 1));
}

// ---------------------------------------------------------------------------------------------
// Valid forms

#[test]
fn valid_forms_load_with_their_meaning() {
    let set = load(json!({
        "description": "all forms",
        "version": "1",
        "rules": [{
            "rule_id": "rr_all",
            "description": "every condition form",
            "match": {
                "capability_id": "cap.doc.summarize",
                "env": {"in": ["stage", "dev"]},
                "data_label": {"any": true},
                "qos_class": {"in": ["P1"]}
            },
            "decision": {
                "candidate_workers_ranked": [
                    {"worker_species_id": "wrk.a", "score_hint": 0.5},
                    {"worker_species_id": "wrk.b", "score_hint": null},
                    {"worker_species_id": "wrk.c", "score_hint": 2}
                ],
                "required_controls_suggested": ["ctrl.z", "ctrl.a", "ctrl.m", "ctrl.a", "ctrl.z"],
                "recommended_profiles": [{"profile_id": "p.fast", "n": 1}],
                "escalation": {
                    "policy_gate": true,
                    "msavx_step_up": false,
                    "human_required_default": true,
                    "human_required_if": ["tenant_risk=high"],
                    "rationale": "why"
                },
                "preconditions": {
                    "must_have_correlation_id": false,
                    "deny_if_no_attestation_in_prod": true
                }
            }
        }, {
            "rule_id": "rr_bare"
        }]
    }));
    assert_eq!(set.rules().len(), 2);
    let r = &set.rules()[0];
    assert_eq!(r.rule_id, "rr_all");
    assert_eq!(
        r.matcher.conditions,
        [
            Some(Condition::Exact("cap.doc.summarize".into())),
            Some(Condition::In(vec!["stage".into(), "dev".into()])),
            Some(Condition::Any),
            None,
            Some(Condition::In(vec!["P1".into()])),
        ]
    );
    let d = &r.decision;
    assert_eq!(
        d.candidate_workers_ranked,
        vec![
            CandidateSpec {
                worker_species_id: "wrk.a".into(),
                score_hint: Some(0.5)
            },
            CandidateSpec {
                worker_species_id: "wrk.b".into(),
                score_hint: None
            },
            CandidateSpec {
                worker_species_id: "wrk.c".into(),
                score_hint: Some(2.0)
            },
        ]
    );
    assert_eq!(d.required_controls, vec!["ctrl.a", "ctrl.m", "ctrl.z"]);
    assert_eq!(
        d.recommended_profiles,
        vec![json!({"profile_id": "p.fast", "n": 1})]
    );
    assert_eq!(
        d.escalation,
        Escalation {
            policy_gate: true,
            msavx_step_up: false,
            human_required_default: true,
            human_required_if: vec!["tenant_risk=high".into()],
            rationale: Some("why".into()),
        }
    );
    assert_eq!(
        d.preconditions,
        Preconditions {
            must_have_correlation_id: false,
            deny_if_no_attestation_in_prod: true,
            ..Preconditions::default()
        }
    );

    // A rule with neither match nor decision: wildcard everything, PyHall defaults.
    let bare = &set.rules()[1];
    assert_eq!(bare.matcher, RuleMatch::default());
    assert_eq!(bare.decision, RuleDecision::default());
    assert!(bare.decision.preconditions.must_have_correlation_id);
    assert!(
        bare.decision
            .preconditions
            .deny_if_missing_required_controls
    );
    assert!(
        !bare
            .decision
            .preconditions
            .deny_if_unsigned_artifact_in_prod
    );

    // Matching semantics of the loaded rule.
    let hit = input(
        "cap.doc.summarize",
        Env::Dev,
        DataLabel::Restricted,
        TenantRisk::High,
        QosClass::P1,
    );
    assert_eq!(set.first_match(&hit).unwrap().rule_id, "rr_all");
    let mut miss = hit.clone();
    miss.env = Env::Prod;
    assert_eq!(set.first_match(&miss).unwrap().rule_id, "rr_bare");
    let mut miss = hit.clone();
    miss.qos_class = QosClass::P2;
    assert_eq!(set.first_match(&miss).unwrap().rule_id, "rr_bare");
    let mut miss = hit;
    miss.capability_id = "cap.doc.summarize ".into();
    assert_eq!(set.first_match(&miss).unwrap().rule_id, "rr_bare");
}

#[test]
fn recommended_profiles_null_or_absent_is_empty_and_rationale_null_is_none() {
    for decision in [
        json!({"recommended_profiles": null, "escalation": {"rationale": null}}),
        json!({"recommended_profiles": []}),
        json!({}),
    ] {
        let set = load(with_decision(decision.clone()));
        let d = &set.rules()[0].decision;
        assert!(d.recommended_profiles.is_empty(), "{decision}");
        assert_eq!(d.escalation.rationale, None, "{decision}");
        assert!(d.required_controls.is_empty(), "{decision}");
    }
}

#[test]
fn required_controls_are_sorted_by_code_point_and_deduplicated() {
    let set = load(with_decision(json!({"required_controls_suggested": [
        "ctrl.b", "ctrl.B", "ctrl.a-x", "ctrl.a.x", "ctrl.b", "ctrl.a"
    ]})));
    assert_eq!(
        set.rules()[0].decision.required_controls,
        vec!["ctrl.B", "ctrl.a", "ctrl.a-x", "ctrl.a.x", "ctrl.b"]
    );
}

#[test]
fn capability_ids_are_free_form_and_in_lists_keep_their_order() {
    let set = load(with_match(json!({
        "capability_id": {"in": ["cap.z", "", "cap.a", "cap.z"]},
        "env": {"in": ["prod", "dev", "prod"]}
    })));
    assert_eq!(
        set.rules()[0].matcher.conditions[0],
        Some(Condition::In(vec![
            "cap.z".into(),
            "".into(),
            "cap.a".into(),
            "cap.z".into()
        ]))
    );
    for cap in ["cap.z", "", "cap.a"] {
        let i = input(
            cap,
            Env::Prod,
            DataLabel::Public,
            TenantRisk::Low,
            QosClass::P0,
        );
        assert!(set.first_match(&i).is_some(), "{cap:?}");
        assert!(set.first_match_linear(&i).is_some(), "{cap:?}");
    }
    let i = input(
        "cap.b",
        Env::Prod,
        DataLabel::Public,
        TenantRisk::Low,
        QosClass::P0,
    );
    assert!(set.first_match(&i).is_none());
    let i = input(
        "cap.a",
        Env::Stage,
        DataLabel::Public,
        TenantRisk::Low,
        QosClass::P0,
    );
    assert!(set.first_match(&i).is_none());
}

#[test]
fn condition_accepts_and_rule_match_matches() {
    assert!(Condition::Exact("dev".into()).accepts("dev"));
    assert!(!Condition::Exact("dev".into()).accepts("development"));
    assert!(!Condition::Exact("dev".into()).accepts("Dev"));
    // No substring semantics for `in`.
    let in_list = Condition::In(vec!["development".into(), "prod".into()]);
    assert!(!in_list.accepts("dev"));
    assert!(in_list.accepts("prod"));
    assert!(Condition::Any.accepts(""));

    let m = RuleMatch {
        conditions: [
            Some(Condition::Exact("cap.a".into())),
            None,
            Some(Condition::In(vec!["RESTRICTED".into()])),
            Some(Condition::Any),
            None,
        ],
    };
    let yes = input(
        "cap.a",
        Env::Edge,
        DataLabel::Restricted,
        TenantRisk::Medium,
        QosClass::P3,
    );
    assert!(m.matches(&yes));
    let mut no = yes.clone();
    no.data_label = DataLabel::Internal;
    assert!(!m.matches(&no));
    assert!(RuleMatch::default().matches(&no));
    assert_eq!(
        RuleMatch::input_values(&yes),
        ["cap.a", "edge", "RESTRICTED", "medium", "P3"]
    );
}

// ---------------------------------------------------------------------------------------------
// Index vs linear scan

/// xorshift64*: tiny, deterministic, good enough to generate rule sets.
struct Rng(u64);

impl Rng {
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
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

const CAPS: &[&str] = &["cap.a", "cap.b", "cap.c", "cap.d"];
const UNKNOWN_CAP: &str = "cap.unknown";

/// A random condition over `alphabet`: absent, any, exact or a non-empty `in` list (possibly with
/// repeats, in any order). Absent and any are less likely so rules stay selective.
fn random_condition(rng: &mut Rng, alphabet: &[&str]) -> Option<Value> {
    match rng.below(8) {
        0 | 1 => None,
        2 => Some(json!({"any": true})),
        3..=5 => Some(json!(rng.pick(alphabet))),
        _ => {
            let len = 1 + rng.below(alphabet.len() + 1);
            let list: Vec<&str> = (0..len).map(|_| rng.pick(alphabet)).collect();
            Some(json!({ "in": list }))
        }
    }
}

fn random_rule_set(rng: &mut Rng) -> RuleSet {
    let n = 1 + rng.below(60);
    let alphabets: [&[&str]; 5] = [
        CAPS,
        Env::NAMES,
        DataLabel::NAMES,
        TenantRisk::NAMES,
        QosClass::NAMES,
    ];
    let rules: Vec<Value> = (0..n)
        .map(|i| {
            let mut m = Map::new();
            for (key, alphabet) in MATCH_KEYS.iter().zip(alphabets) {
                if let Some(c) = random_condition(rng, alphabet) {
                    m.insert((*key).to_owned(), c);
                }
            }
            json!({"rule_id": format!("r{i}"), "match": m})
        })
        .collect();
    load(json!({ "rules": rules }))
}

fn position(set: &RuleSet, rule: Option<&Rule>) -> Option<usize> {
    rule.map(|r| {
        set.rules()
            .iter()
            .position(|x| std::ptr::eq(x, r))
            .expect("a returned rule belongs to the set")
    })
}

#[test]
fn index_agrees_with_linear_scan_on_random_rule_sets() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut caps: Vec<&str> = CAPS.to_vec();
    caps.push(UNKNOWN_CAP);
    let (mut hits, mut misses, mut later_hits) = (0usize, 0usize, 0usize);
    for set_no in 0..300 {
        let set = random_rule_set(&mut rng);
        for &cap in &caps {
            for &env in Env::ALL {
                for &label in DataLabel::ALL {
                    for &risk in TenantRisk::ALL {
                        for &qos in QosClass::ALL {
                            let i = input(cap, env, label, risk, qos);
                            let fast = position(&set, set.first_match(&i));
                            let slow = position(&set, set.first_match_linear(&i));
                            assert_eq!(
                                fast,
                                slow,
                                "set #{set_no} ({} rules) disagrees for {:?}: {:#?}",
                                set.rules().len(),
                                RuleMatch::input_values(&i),
                                set.rules()
                            );
                            match fast {
                                None => misses += 1,
                                Some(0) => hits += 1,
                                Some(_) => {
                                    hits += 1;
                                    later_hits += 1;
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    // The generator must exercise hits, misses and first matches beyond the first rule.
    assert!(hits > 10_000 && misses > 10_000 && later_hits > 10_000);
    assert_eq!(hits + misses, 300 * 5 * 144);
}

#[test]
fn index_agrees_with_linear_scan_on_compiled_rules_outside_the_vocabulary() {
    // `compile` takes already built rules, bypassing validation; values that can never match must
    // still behave like the linear scan (never match) instead of corrupting the tables.
    let rule = |id: &str, conds: [Option<Condition>; 5]| Rule {
        rule_id: id.into(),
        matcher: RuleMatch { conditions: conds },
        decision: RuleDecision::default(),
    };
    let set = RuleSet::compile(vec![
        rule(
            "bogus_env",
            [
                None,
                Some(Condition::Exact("production".into())),
                None,
                None,
                None,
            ],
        ),
        rule(
            "empty_in",
            [Some(Condition::In(vec![])), None, None, None, None],
        ),
        rule(
            "mixed_in",
            [
                Some(Condition::In(vec!["cap.a".into(), "cap.a".into()])),
                Some(Condition::In(vec!["PROD".into(), "edge".into()])),
                None,
                None,
                None,
            ],
        ),
        rule("catch_all", [None, None, None, None, None]),
    ]);
    for cap in ["cap.a", "cap.b"] {
        for &env in Env::ALL {
            let i = input(cap, env, DataLabel::Public, TenantRisk::Low, QosClass::P0);
            let want = if cap == "cap.a" && env == Env::Edge {
                "mixed_in"
            } else {
                "catch_all"
            };
            assert_eq!(set.first_match(&i).unwrap().rule_id, want, "{cap} {env}");
            assert_eq!(set.first_match_linear(&i).unwrap().rule_id, want);
        }
    }
}

#[test]
fn empty_rule_set_matches_nothing() {
    let set = load(json!({"rules": []}));
    let i = input(
        "cap.a",
        Env::Dev,
        DataLabel::Public,
        TenantRisk::Low,
        QosClass::P0,
    );
    assert!(set.first_match(&i).is_none());
    assert!(set.first_match_linear(&i).is_none());
    assert!(set.shadows().is_empty());
}

#[test]
fn first_match_wins_over_a_later_more_specific_rule() {
    let set = rules_with_matches(&[
        ("dev_only", json!({"capability_id": "cap.a", "env": "dev"})),
        ("any_cap", json!({"capability_id": {"any": true}})),
        ("specific", json!({"capability_id": "cap.a", "env": "prod"})),
    ]);
    let at = |env| {
        let i = input(
            "cap.a",
            env,
            DataLabel::Public,
            TenantRisk::Low,
            QosClass::P0,
        );
        set.first_match(&i).map(|r| r.rule_id.clone())
    };
    assert_eq!(at(Env::Dev).as_deref(), Some("dev_only"));
    assert_eq!(at(Env::Prod).as_deref(), Some("any_cap"));
}

// ---------------------------------------------------------------------------------------------
// Shadow detection

#[test]
fn patch_py_005_broad_any_shadows_specific_prod() {
    let set = rules_with_matches(&[
        ("rr_broad_any", json!({"capability_id": {"any": true}})),
        (
            "rr_specific_prod",
            json!({"capability_id": {"any": true}, "env": "prod"}),
        ),
    ]);
    assert_eq!(
        set.shadows(),
        &[ShadowWarning {
            shadower: "rr_broad_any".into(),
            shadowed: "rr_specific_prod".into(),
            reason: "every request the later rule matches is matched by the earlier rule first"
                .into(),
        }]
    );
}

#[test]
fn identical_matches_with_different_ids_are_shadowed() {
    let set = rules_with_matches(&[
        (
            "first",
            json!({"capability_id": "cap.a", "env": {"in": ["dev", "stage"]}}),
        ),
        (
            "second",
            json!({"capability_id": "cap.a", "env": {"in": ["dev", "stage"]}}),
        ),
    ]);
    assert_eq!(
        set.shadows(),
        &[ShadowWarning {
            shadower: "first".into(),
            shadowed: "second".into(),
            reason: "identical match conditions".into(),
        }]
    );
}

#[test]
fn identical_matches_with_the_same_id_are_not_a_shadow() {
    // Only reachable through `compile` (duplicate ids are a load error), as in PyHall's check.
    let m = RuleMatch {
        conditions: [
            Some(Condition::Exact("cap.a".into())),
            None,
            None,
            None,
            None,
        ],
    };
    let r = Rule {
        rule_id: "same".into(),
        matcher: m,
        decision: RuleDecision::default(),
    };
    assert!(!shadow::shadows(&r, &r.clone()));
    assert!(shadow::detect(&[r.clone(), r]).is_empty());
}

#[test]
fn shadow_table() {
    struct Case {
        name: &'static str,
        early: Value,
        late: Value,
        /// Whether `early` shadows `late`.
        shadowed: bool,
        /// Whether `late` would shadow `early` were the order reversed.
        reverse: bool,
    }
    let cases = [
        Case {
            name: "in superset shadows an in subset",
            early: json!({"capability_id": "cap.a", "env": {"in": ["dev", "stage", "prod"]}}),
            late: json!({"capability_id": "cap.a", "env": {"in": ["stage", "dev"]}}),
            shadowed: true,
            reverse: false,
        },
        Case {
            name: "in list shadows one of its members",
            early: json!({"capability_id": "cap.a", "env": {"in": ["dev", "prod"]}}),
            late: json!({"capability_id": "cap.a", "env": "prod"}),
            shadowed: true,
            reverse: false,
        },
        Case {
            name: "in list with the same members in another order",
            early: json!({"capability_id": "cap.a", "env": {"in": ["prod", "dev"]}}),
            late: json!({"capability_id": "cap.a", "env": {"in": ["dev", "prod"]}}),
            shadowed: true,
            reverse: true,
        },
        Case {
            name: "later broader in list is not shadowed",
            early: json!({"capability_id": "cap.a", "env": {"in": ["dev"]}}),
            late: json!({"capability_id": "cap.a", "env": {"in": ["dev", "stage"]}}),
            shadowed: false,
            reverse: true,
        },
        Case {
            name: "later rule without the env condition is broader",
            early: json!({"capability_id": "cap.a", "env": "prod"}),
            late: json!({"capability_id": "cap.a"}),
            shadowed: false,
            reverse: true,
        },
        Case {
            name: "later any is broader than an earlier exact",
            early: json!({"capability_id": "cap.a"}),
            late: json!({"capability_id": {"any": true}}),
            shadowed: false,
            reverse: true,
        },
        Case {
            name: "exact does not cover an in list even of one equal member",
            early: json!({"capability_id": "cap.a", "env": "dev"}),
            late: json!({"capability_id": "cap.a", "env": {"in": ["dev"]}}),
            shadowed: false,
            reverse: true,
        },
        Case {
            name: "in list does not cover any",
            early: json!({"env": {"in": ["dev", "stage", "prod", "edge"]}}),
            late: json!({"env": {"any": true}}),
            shadowed: false,
            reverse: true,
        },
        Case {
            name: "disjoint dev/stage and prod rules",
            early: json!({"capability_id": "cap.a", "env": {"in": ["dev", "stage"]}}),
            late: json!({"capability_id": "cap.a", "env": "prod"}),
            shadowed: false,
            reverse: false,
        },
        Case {
            name: "different capabilities",
            early: json!({"capability_id": "cap.a"}),
            late: json!({"capability_id": "cap.b", "env": "prod"}),
            shadowed: false,
            reverse: false,
        },
        Case {
            name: "absent covers any",
            early: json!({"capability_id": "cap.a"}),
            late: json!({"capability_id": "cap.a", "env": {"any": true}}),
            shadowed: true,
            reverse: true,
        },
        Case {
            name: "any covers absent",
            early: json!({"capability_id": "cap.a", "env": {"any": true}}),
            late: json!({"capability_id": "cap.a"}),
            shadowed: true,
            reverse: true,
        },
        Case {
            name: "empty match shadows everything",
            early: json!({}),
            late: json!({"capability_id": "cap.a", "env": "dev", "data_label": "PUBLIC",
                         "tenant_risk": "low", "qos_class": "P0"}),
            shadowed: true,
            reverse: false,
        },
        Case {
            name: "narrower on every key",
            early: json!({"capability_id": {"in": ["cap.a", "cap.b"]}, "qos_class": {"in": ["P0", "P1"]}}),
            late: json!({"capability_id": "cap.b", "data_label": "PUBLIC", "qos_class": "P1"}),
            shadowed: true,
            reverse: false,
        },
        Case {
            name: "narrower on all keys but one",
            early: json!({"capability_id": {"in": ["cap.a", "cap.b"]}, "qos_class": {"in": ["P0", "P1"]}}),
            late: json!({"capability_id": "cap.b", "data_label": "PUBLIC", "qos_class": "P2"}),
            shadowed: false,
            reverse: false,
        },
    ];
    for case in cases {
        let set = rules_with_matches(&[("early", case.early), ("late", case.late)]);
        let want: Vec<(&str, &str)> = if case.shadowed {
            vec![("early", "late")]
        } else {
            vec![]
        };
        assert_eq!(shadow_pairs(&set), want, "{}", case.name);
        let (early, late) = (&set.rules()[0], &set.rules()[1]);
        assert_eq!(shadow::shadows(early, late), case.shadowed, "{}", case.name);
        assert_eq!(
            shadow::shadows(late, early),
            case.reverse,
            "{}: reversed order",
            case.name
        );
    }
}

#[test]
fn a_rule_shadowed_by_two_earlier_rules_appears_twice_in_pair_order() {
    let set = rules_with_matches(&[
        ("a_any", json!({"capability_id": {"any": true}})),
        ("b_cap", json!({"capability_id": "cap.x"})),
        ("c_cap_dev", json!({"capability_id": "cap.x", "env": "dev"})),
        ("d_other", json!({"capability_id": "cap.y", "env": "prod"})),
    ]);
    assert_eq!(
        shadow_pairs(&set),
        vec![
            ("a_any", "b_cap"),
            ("a_any", "c_cap_dev"),
            ("a_any", "d_other"),
            ("b_cap", "c_cap_dev"),
        ]
    );
    let shadowed: Vec<&str> = set.shadows().iter().map(|w| w.shadowed.as_str()).collect();
    assert_eq!(
        shadowed.iter().filter(|s| **s == "c_cap_dev").count(),
        2,
        "{shadowed:?}"
    );
}

#[test]
fn disjoint_rules_have_no_shadows() {
    let set = rules_with_matches(&[
        (
            "rr_dev_stage",
            json!({"capability_id": "cap.a", "env": {"in": ["dev", "stage"]}}),
        ),
        (
            "rr_prod_only",
            json!({"capability_id": "cap.a", "env": "prod"}),
        ),
        (
            "rr_edge_internal",
            json!({"capability_id": "cap.a", "env": "edge", "data_label": "INTERNAL"}),
        ),
        ("rr_catch_all", json!({"capability_id": {"any": true}})),
    ]);
    assert!(set.shadows().is_empty(), "{:?}", set.shadows());
}

#[test]
fn a_duplicate_id_is_reported_even_when_a_copy_has_other_problems() {
    for doc in [
        json!({"rules": [{"rule_id": "x", "match": {"env": "bogus"}}, {"rule_id": "x"}]}),
        json!({"rules": [{"rule_id": "x"}, {"rule_id": "x", "match": {"env": "bogus"}}]}),
    ] {
        let issues = issues_of(&doc);
        assert_eq!(issues.len(), 2, "{issues:?}");
        assert!(
            issues
                .iter()
                .any(|i| i.path == "$.rules[1].rule_id" && i.problem.contains("duplicate rule_id"))
        );
        assert!(issues.iter().any(|i| i.problem.contains("can never match")));
    }
}

#[test]
fn bucketed_shadow_detection_equals_the_all_pairs_scan() {
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    let mut total_pairs = 0;
    for set_no in 0..500 {
        let set = random_rule_set(&mut rng);
        let want: Vec<(String, String)> = super::shadow::detect_all_pairs(set.rules())
            .into_iter()
            .map(|(i, j)| {
                (
                    set.rules()[i].rule_id.clone(),
                    set.rules()[j].rule_id.clone(),
                )
            })
            .collect();
        let got: Vec<(String, String)> = set
            .shadows()
            .iter()
            .map(|w| (w.shadower.clone(), w.shadowed.clone()))
            .collect();
        assert_eq!(got, want, "set #{set_no}: {:#?}", set.rules());
        total_pairs += want.len();
    }
    assert!(
        total_pairs > 1_000,
        "the generator must produce shadows ({total_pairs})"
    );
}
