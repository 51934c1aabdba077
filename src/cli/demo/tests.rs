//! Unit tests of the demo: the bundled rules and records it routes with, the envelope summary,
//! the fixture server and the directory removal.

use super::hall::{envelope_summary, find_report, route_input};
use crate::envelope::REPORT_SCHEMA;
use crate::registry::RegistryRecord;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;

use super::*;
use crate::clock::mint_context;
use crate::conformance::FixedGate;
use crate::registry::{ControlsScope, Registry};
use crate::router::{self, GateAnswer, Router, RouterConfig};
use crate::rules::RuleSet;
use crate::wcp::RouteInput;

/// The rules the demo copies: the bundled `policies/rules.json`.
fn rules() -> RuleSet {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("policies")
        .join(RULES_FILE);
    RuleSet::from_json_str(&std::fs::read_to_string(path).unwrap()).expect("the bundled rules load")
}

#[test]
fn the_bundled_rules_load_without_shadows() {
    let r = rules();
    assert_eq!(r.rules().len(), 19);
    assert!(r.shadows().is_empty(), "{:?}", r.shadows());
}

fn bundled_registry() -> Registry {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("workers");
    let records = PACKAGES
        .iter()
        .map(|p| {
            let text = std::fs::read_to_string(dir.join(p).join("record.json")).unwrap();
            RegistryRecord::from_json_str(&text).unwrap()
        })
        .collect();
    Registry::new(records, ControlsScope::PerWorker)
}

/// Every request the demo sends routes to the intended rule and worker with the bundled
/// records (a gate that allows; the Hall's real gate is exercised by tests/demo.rs).
#[test]
fn demo_requests_route_to_the_intended_rules_and_workers() {
    let rules = rules();
    let registry = bundled_registry();
    let config = RouterConfig {
        require_signatory: true,
        allowed_tenants: [TENANT.to_owned()].into_iter().collect(),
        enforce_privilege_envelopes: true,
        ..RouterConfig::default()
    };
    let gate = FixedGate(GateAnswer {
        decision: "ALLOW".into(),
        policy_version: "test".into(),
        reason: "test".into(),
        supervisor_level: None,
    });
    let router = Router {
        rules: &rules,
        registry: &registry,
        config: &config,
        gate: Some(&gate),
        hashes: None,
        privilege: Some(&registry),
        human_approval: None,
    };
    for (cap, label, rule, species) in [
        (
            "cap.web.fetch",
            "PUBLIC",
            "rr_fetch_dev",
            Some("wrk.web.fetcher"),
        ),
        (
            "cap.doc.chunk",
            "PUBLIC",
            "rr_chunk_dev",
            Some("wrk.doc.chunker"),
        ),
        (
            "cap.ml.embed",
            "PUBLIC",
            "rr_embed_dev",
            Some("wrk.ml.embedder"),
        ),
        (
            "cap.doc.hash",
            "PUBLIC",
            "rr_hash_dev",
            Some("wrk.doc.hasher"),
        ),
        (
            "cap.research.register",
            "PUBLIC",
            "rr_register_dev",
            Some("wrk.research.registrar"),
        ),
        (
            "cap.hello.greet",
            "PUBLIC",
            "rr_hello_dev",
            Some("wrk.hello.greeter"),
        ),
        (
            "cap.hello.greet",
            "RESTRICTED",
            "rr_hello_restricted_dev",
            Some("wrk.hello.greeter"),
        ),
        (UNKNOWN_CAPABILITY, "PUBLIC", "NO_MATCH", None),
    ] {
        let input = RouteInput::from_value(&route_input(cap, label, "cid-1", json!({}))).unwrap();
        let d = router::route(&router, &input, &mint_context("t"));
        assert_eq!(
            d.matched_rule_id, rule,
            "{cap} {label}: {:?}",
            d.deny_reason_if_denied
        );
        assert_eq!(d.selected_worker_species_id.as_deref(), species, "{cap}");
        assert_eq!(
            d.denied,
            species.is_none(),
            "{cap}: {:?}",
            d.deny_reason_if_denied
        );
    }
}

#[test]
fn the_envelope_summary_names_what_was_enforced() {
    let r = json!({
        "schema": REPORT_SCHEMA,
        "landlock": {"effective": "enforced", "abi_effective": 6, "tcp_connect_ports": [18080]},
        "network": {"effective": "enforced", "mode": "landlock_tcp_ports"},
        "seccomp": {"effective": "enforced"},
        "pid_namespace": {"effective": "enforced"},
        "cgroup": {"effective": "off"},
        "identity": {"effective": "enforced", "uid": 65534},
        "filesystem": {"writes": [{"declared": "knowledge/", "granted": "/w/state/data/x/knowledge"}]},
        "degraded": [],
    });
    let wrapped = json!({"execution": {"summary": {"envelope": r}}});
    let found = find_report(&wrapped).expect("found anywhere in the answer");
    let (line, data) = envelope_summary(found, Path::new("/w"));
    assert_eq!(
        line,
        "landlock enforced (ABI 6) · network enforced (tcp connect to port 18080 only) · seccomp enforced · pid ns enforced · cgroup off · uid 65534 · writes only state/data/x/knowledge"
    );
    assert_eq!(data["uid"], 65534);
    assert!(find_report(&json!({"execution": {}})).is_none());
}

#[test]
fn the_fixture_server_serves_one_document_and_counts() {
    let mut s = FixtureServer::start(b"hello document\n".to_vec()).unwrap();
    let get = |path: &str| {
        let mut c = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
        write!(c, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut text = String::new();
        c.read_to_string(&mut text).unwrap();
        text
    };
    let ok = get("/document.txt");
    assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
    assert!(ok.contains("Content-Type: text/plain; charset=utf-8"));
    assert!(ok.ends_with("\r\n\r\nhello document\n"));
    assert!(get("/etc/passwd").starts_with("HTTP/1.1 404"));
    assert_eq!(s.hits(), 1);
    s.shutdown();
}

#[test]
fn remove_tree_removes_read_only_store_copies() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("w");
    let ro = root.join("store/sha256-x/code");
    std::fs::create_dir_all(&ro).unwrap();
    std::fs::write(ro.join("f.py"), "x").unwrap();
    for d in [&ro, &root.join("store/sha256-x")] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o555)).unwrap();
    }
    remove_tree(&root).unwrap();
    assert!(!root.exists());
    remove_tree(&root).unwrap();
}
