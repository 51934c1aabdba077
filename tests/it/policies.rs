//! The bundled policies (`policies/`): the pipeline's rules, registry records, profiles and the
//! default `hall.toml`, checked together the way the Hall uses them.
//!
//! - the records in `policies/registry/` are the workers' record templates, byte for byte, and
//!   pass enrollment validation;
//! - the rules load without shadows, and every rule is satisfiable: routed exactly as
//!   `wcp-hall route` does (the real registry, per-worker controls scope, the profiles' controls
//!   and the Cedar gate), every (env, data label, tenant risk, QoS) cell a rule matches is either
//!   allowed to the rule's worker or decided by the policy gate, never refused for a registry
//!   reason; every cell no rule matches fails closed;
//! - `policies/rules.tests.json` names every rule, and its expectations hold under the default
//!   configuration too.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use wcp_hall::registry::{RegistryDir, RegistryRecord, enroll_record};
use wcp_hall::snapshot::Loaded;
use wcp_hall::wcp::{DataLabel, Env, QosClass, RouteDecision, RouteInput, TenantRisk};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// The bundled worker packages: every directory of workers/ with a record template.
fn packages() -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(repo("workers"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("record.json").is_file())
        .map(|p| p.file_name().unwrap().to_str().unwrap().to_owned())
        .collect();
    out.sort();
    assert!(out.len() >= 6, "{out:?}");
    out
}

fn loaded() -> Loaded {
    Loaded::load(&repo("policies/hall.toml"), 1).expect("policies/hall.toml loads")
}

/// The pipeline's capabilities and hello, with the species that serves each.
const CAPABILITIES: [(&str, &str); 6] = [
    ("cap.web.fetch", "wrk.web.fetcher"),
    ("cap.doc.chunk", "wrk.doc.chunker"),
    ("cap.ml.embed", "wrk.ml.embedder"),
    ("cap.doc.hash", "wrk.doc.hasher"),
    ("cap.research.register", "wrk.research.registrar"),
    ("cap.hello.greet", "wrk.hello.greeter"),
];

fn input(cap: &str, env: &str, label: &str, risk: &str, qos: &str) -> RouteInput {
    RouteInput::from_value(&json!({
        "capability_id": cap, "env": env, "data_label": label, "tenant_risk": risk,
        "qos_class": qos, "tenant_id": "acme-corp",
        "correlation_id": "6f1c2a7e-3b1d-4c8e-9f2a-1d2e3f4a5b6c", "request": {},
    }))
    .unwrap()
}

fn code(d: &RouteDecision) -> &'static str {
    d.deny_code().map_or("", |c| c.as_str())
}

/// Every (capability, env, label, risk, QoS) cell, routed under the default configuration.
fn every_cell(hall: &Loaded, caps: &[&str]) -> Vec<(String, RouteDecision)> {
    let mut out = Vec::new();
    for cap in caps {
        for env in Env::NAMES {
            for label in DataLabel::NAMES {
                for risk in TenantRisk::NAMES {
                    for qos in QosClass::NAMES {
                        let cell = format!("{cap} {env} {label} {risk} {qos}");
                        let d = hall.route_offline(&input(cap, env, label, risk, qos), "t");
                        out.push((cell, d));
                    }
                }
            }
        }
    }
    out
}

#[test]
fn the_registry_records_are_the_workers_record_templates() {
    let mut expected = BTreeSet::new();
    for package in packages() {
        let template = std::fs::read(repo(&format!("workers/{package}/record.json"))).unwrap();
        let record: Value = serde_json::from_slice(&template).unwrap();
        let name = format!("{}.json", record["worker_id"].as_str().unwrap());
        let bundled = std::fs::read(repo("policies/registry").join(&name))
            .unwrap_or_else(|e| panic!("policies/registry/{name} ({package}): {e}"));
        assert!(
            bundled == template,
            "policies/registry/{name} differs from workers/{package}/record.json: copy the template (`cp workers/{package}/record.json policies/registry/{name}`)"
        );
        expected.insert(name);
    }
    let present: BTreeSet<String> = std::fs::read_dir(repo("policies/registry"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(
        present, expected,
        "policies/registry holds exactly the bundled workers' records"
    );
}

#[test]
fn every_bundled_record_passes_enrollment_validation() {
    let dir = tempfile::tempdir().unwrap();
    let bundled = RegistryDir::open(repo("policies/registry")).expect("policies/registry loads");
    assert_eq!(bundled.records().len(), packages().len());
    for loaded in bundled.records() {
        let text =
            std::fs::read_to_string(repo("policies/registry").join(&loaded.file_name)).unwrap();
        let record = RegistryRecord::from_json_str(&text)
            .unwrap_or_else(|e| panic!("{}: {e}", loaded.file_name));
        record
            .validate()
            .unwrap_or_else(|e| panic!("{}: {e}", loaded.file_name));
        // Templates carry no attestation: signing produces the enrolled copy.
        assert!(record.attestation.is_none(), "{}", loaded.file_name);
        let outcome = enroll_record(dir.path(), &record)
            .unwrap_or_else(|e| panic!("{}: {e}", loaded.file_name));
        assert_eq!(
            outcome.path.file_name().unwrap().to_str().unwrap(),
            loaded.file_name
        );
    }
    // What enrollment wrote loads back as the same records.
    let enrolled = RegistryDir::open(dir.path()).unwrap();
    let a: Vec<_> = enrolled.records().iter().map(|r| &r.record).collect();
    let b: Vec<_> = bundled.records().iter().map(|r| &r.record).collect();
    assert_eq!(a, b);
}

#[test]
fn the_default_config_routes_the_pipeline_under_every_profile() {
    let hall = loaded();
    assert!(
        hall.rules.shadows().is_empty(),
        "shadowed rules deny every prod/edge request: {:?}",
        hall.rules.shadows()
    );
    assert_eq!(hall.registry.records().len(), packages().len());
    let gate = hall
        .gate
        .as_ref()
        .expect("the default config selects profiles");
    for (env, profile) in [
        (Env::Dev, "prof.dev.permissive"),
        (Env::Stage, "prof.dev.permissive"),
        (Env::Prod, "prof.prod.strict"),
        (Env::Edge, "prof.edge.isolated"),
    ] {
        assert_eq!(gate.profile(env).map(|p| p.id.as_str()), Some(profile));
    }
    // Each capability of the pipeline has a dev, a stage and a prod rule that allows routine work
    // (a low-risk tenant's PUBLIC request), with the worker that serves it.
    for (cap, species) in CAPABILITIES {
        for env in ["dev", "stage", "prod"] {
            let d = hall.route_offline(&input(cap, env, "PUBLIC", "low", "P2"), "t");
            assert!(!d.denied, "{cap} {env}: {:?}", d.deny_reason_if_denied);
            assert!(
                d.matched_rule_id.ends_with(&format!("_{env}")),
                "{cap} {env}: {}",
                d.matched_rule_id
            );
            assert_eq!(d.selected_worker_species_id.as_deref(), Some(species));
        }
    }
}

#[test]
fn every_rule_is_satisfiable_and_every_other_cell_fails_closed() {
    let hall = loaded();
    let gate = hall.gate.as_ref().unwrap();
    let mut caps: Vec<&str> = CAPABILITIES.iter().map(|(c, _)| *c).collect();
    caps.push("cap.shell.exec");
    let mut allowed_by_rule: BTreeMap<String, usize> = BTreeMap::new();
    let mut gate_answers: BTreeMap<&'static str, usize> = BTreeMap::new();
    for (cell, d) in every_cell(&hall, &caps) {
        if d.matched_rule_id == "NO_MATCH" {
            assert_eq!(code(&d), "DENY_NO_MATCHING_RULE", "{cell}");
            continue;
        }
        let rule = hall
            .rules
            .rules()
            .iter()
            .find(|r| r.rule_id == d.matched_rule_id)
            .unwrap();
        let species = &rule.decision.candidate_workers_ranked[0].worker_species_id;
        if !d.denied {
            assert_eq!(
                d.selected_worker_species_id.as_ref(),
                Some(species),
                "{cell}"
            );
            // The worker itself implements what the rule and the env's profile require (the
            // router checks the profile's controls across the registry; this is per worker).
            let record = hall.registry.records_of(species).next().unwrap();
            let profile = gate.profile(d.env).unwrap();
            for c in rule
                .decision
                .required_controls
                .iter()
                .chain(&profile.required_controls)
            {
                assert!(
                    record.currently_implements.contains(c),
                    "{cell}: {} does not implement {c}",
                    record.worker_id
                );
            }
            assert!(record.allowed_environments.contains(&d.env), "{cell}");
            *allowed_by_rule
                .entry(d.matched_rule_id.clone())
                .or_default() += 1;
            continue;
        }
        // A matched rule is refused only by the policy gate (Cedar under the env's profile),
        // never for a registry reason (controls, availability, environment, envelope).
        let c = code(&d);
        assert!(
            matches!(c, "DENY_POLICY_GATE" | "DENY_REQUIRES_HUMAN_APPROVAL"),
            "{cell}: rule {} denied {c}: {:?}",
            d.matched_rule_id,
            d.deny_reason_if_denied
        );
        *gate_answers.entry(c).or_default() += 1;
        // Routine work is never held up: a low-risk tenant's request on a rule's own labels is
        // allowed, except RESTRICTED hello in dev, which waits for a gatekeeper.
        if d.tenant_risk == TenantRisk::Low {
            assert_eq!(d.matched_rule_id, "rr_hello_restricted_dev", "{cell}: {c}");
            assert_eq!(c, "DENY_REQUIRES_HUMAN_APPROVAL", "{cell}");
            let extra = &d.deny_reason_if_denied.as_ref().unwrap().extra;
            assert_eq!(extra["supervisor_level"], "gatekeeper", "{cell}");
            assert!(
                extra["reason"]
                    .as_str()
                    .unwrap()
                    .contains("pol.nonprod.restricted-review"),
                "{cell}: {extra:?}"
            );
        }
    }
    // Every rule but the RESTRICTED one allows something; none is dead.
    for rule in hall.rules.rules() {
        if rule.rule_id == "rr_hello_restricted_dev" {
            continue;
        }
        assert!(
            allowed_by_rule.contains_key(&rule.rule_id),
            "{} allows no request under the default configuration",
            rule.rule_id
        );
    }
    assert!(gate_answers.contains_key("DENY_REQUIRES_HUMAN_APPROVAL"));
    assert!(gate_answers.contains_key("DENY_POLICY_GATE"));
}

#[test]
fn a_worker_missing_a_control_or_the_env_is_not_selected() {
    let mut hall = loaded();
    let records: Vec<RegistryRecord> = hall.registry.records().to_vec();
    let scope = hall.registry.scope();
    // The fetcher stops implementing blast scoring: stage and prod ask for it, dev does not.
    let mut edited = records.clone();
    for r in &mut edited {
        if r.worker_species_id == "wrk.web.fetcher" {
            r.currently_implements
                .retain(|c| c != "ctrl.blast_radius_scoring");
        }
    }
    hall.registry = wcp_hall::registry::Registry::new(edited, scope);
    let d = hall.route_offline(&input("cap.web.fetch", "dev", "PUBLIC", "low", "P2"), "t");
    assert!(!d.denied, "{:?}", d.deny_reason_if_denied);
    for env in ["stage", "prod"] {
        let d = hall.route_offline(&input("cap.web.fetch", env, "PUBLIC", "low", "P2"), "t");
        assert_eq!(code(&d), "DENY_NO_AVAILABLE_WORKER", "{env}");
        assert_eq!(
            serde_json::to_value(&d.candidate_workers_ranked[0]).unwrap()["skip_reason"],
            "missing_controls"
        );
    }
    // The registrar's record no longer allows prod.
    let mut edited = records.clone();
    for r in &mut edited {
        if r.worker_species_id == "wrk.research.registrar" {
            r.allowed_environments.retain(|e| *e != Env::Prod);
        }
    }
    hall.registry = wcp_hall::registry::Registry::new(edited, scope);
    let d = hall.route_offline(
        &input("cap.research.register", "prod", "PUBLIC", "low", "P2"),
        "t",
    );
    assert_eq!(code(&d), "DENY_NO_AVAILABLE_WORKER");
    assert_eq!(
        serde_json::to_value(&d.candidate_workers_ranked[0]).unwrap()["skip_reason"],
        "env_not_allowed"
    );
    // No record at all: the capability's rules still match, and deny.
    let edited: Vec<RegistryRecord> = records
        .into_iter()
        .filter(|r| r.worker_species_id != "wrk.doc.chunker")
        .collect();
    hall.registry = wcp_hall::registry::Registry::new(edited, scope);
    let d = hall.route_offline(&input("cap.doc.chunk", "dev", "PUBLIC", "low", "P2"), "t");
    assert_eq!(d.matched_rule_id, "rr_chunk_dev");
    assert_eq!(code(&d), "DENY_NO_AVAILABLE_WORKER");
}

#[test]
fn the_routing_tests_name_every_rule_and_hold_under_the_default_config() {
    let hall = loaded();
    let tests: Value =
        serde_json::from_str(&std::fs::read_to_string(repo("policies/rules.tests.json")).unwrap())
            .unwrap();
    let mut named = BTreeSet::new();
    for t in tests["tests"].as_array().unwrap() {
        let want = t["expect"]["expected_rule_id"].as_str().unwrap();
        named.insert(want.to_owned());
        let d = hall.route_offline(&RouteInput::from_value(&t["input"]).unwrap(), "t");
        assert_eq!(d.matched_rule_id, want, "{}", t["test_id"]);
    }
    for rule in hall.rules.rules() {
        assert!(
            named.contains(&rule.rule_id),
            "no test in policies/rules.tests.json expects {}",
            rule.rule_id
        );
    }
    assert!(named.contains("NO_MATCH"));
}
