//! End-to-end tests of the `wcp-hall` binary: real processes, real files, exit codes and output.

use std::process::{Command, Output, Stdio};

use serde_json::Value;

use crate::hall_support::{BIN, copy_dir, repo};

fn run(args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args).env_remove("WCP_HALL_CONFIG");
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn wcp-hall");
    if let Some(text) = stdin {
        use std::io::Write;
        // The Hall may exit before reading stdin (e.g. on a bad config): a broken pipe is fine.
        let _ = child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes());
    }
    child.wait_with_output().expect("wait for wcp-hall")
}

fn code(o: &Output) -> i32 {
    o.status.code().expect("exited normally, not by a signal")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A copy of policies/ in a temporary directory, so tests can break it.
fn policies_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    copy_dir(&repo("policies"), dir.path());
    dir
}

/// The pipeline's first step in dev (policies/examples/fetch.json on one line).
const FETCH: &str = r#"{"capability_id": "cap.web.fetch", "env": "dev", "data_label": "PUBLIC",
  "tenant_risk": "low", "qos_class": "P2", "tenant_id": "acme-corp",
  "correlation_id": "6f1c2a7e-3b1d-4c8e-9f2a-1d2e3f4a5b6c", "request": {"url": "http://127.0.0.1:18080/document.txt"}}"#;

#[test]
fn route_allows_the_readme_example_and_exits_0() {
    let cfg = repo("policies/hall.toml");
    let o = run(
        &[
            "route",
            "--config",
            cfg.to_str().unwrap(),
            repo("policies/examples/fetch.json").to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(code(&o), 0, "stderr: {}", stderr(&o));
    let d: Value = serde_json::from_str(&stdout(&o)).expect("decision is JSON");
    assert_eq!(d["denied"], false);
    assert_eq!(d["matched_rule_id"], "rr_fetch_dev");
    assert_eq!(d["selected_worker_species_id"], "wrk.web.fetcher");
    assert_eq!(d["artifact_hash"].as_str().map(str::len), Some(64));
    // The rule asks the Cedar gate, which allows dev work on PUBLIC data.
    let gated = d["telemetry_envelopes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event_id"] == "evt.os.policy.gated")
        .expect("a policy.gated event");
    assert_eq!(gated["reason"], "policy_gate_allow");

    // A species ranked first that nobody enrolled is skipped as unavailable; the next is chosen.
    let dir = policies_copy();
    let rules = dir.path().join("rules.json");
    let text = std::fs::read_to_string(&rules).unwrap();
    let first = r#""candidate_workers_ranked": [{"worker_species_id": "wrk.web.fetcher", "score_hint": 1.0}]"#;
    assert!(text.contains(first));
    std::fs::write(
        &rules,
        text.replace(
            first,
            r#""candidate_workers_ranked": [{"worker_species_id": "wrk.web.mirror", "score_hint": 1.0}, {"worker_species_id": "wrk.web.fetcher", "score_hint": 0.5}]"#,
        ),
    )
    .unwrap();
    let o = run(
        &[
            "route",
            "-c",
            dir.path().join("hall.toml").to_str().unwrap(),
        ],
        Some(FETCH),
    );
    assert_eq!(code(&o), 0, "stderr: {}", stderr(&o));
    let d: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(d["selected_worker_species_id"], "wrk.web.fetcher");
    assert_eq!(
        d["candidate_workers_ranked"][0]["skip_reason"],
        "unavailable"
    );
}

#[test]
fn route_denies_with_exit_1_and_fails_closed_without_a_policy_gate() {
    // With the bundled profiles, prod runs the Cedar gate on every dispatch; a high-risk
    // tenant's RESTRICTED-free prod request needs a human (the production policy set).
    let cfg = repo("policies/hall.toml");
    let hello = |risk: &str| {
        format!(
            r#"{{"capability_id": "cap.hello.greet", "env": "prod", "data_label": "PUBLIC",
                "tenant_risk": "{risk}", "qos_class": "P2", "tenant_id": "acme-corp",
                "correlation_id": "c-1", "request": {{"name": "Ada"}}}}"#
        )
    };
    let o = run(
        &["route", "-c", cfg.to_str().unwrap(), "-"],
        Some(&hello("low")),
    );
    let d: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(code(&o), 0, "{d}");
    assert_eq!(
        d["telemetry_envelopes"].as_array().unwrap().last().unwrap()["reason"],
        "policy_gate_allow"
    );
    let o = run(
        &["route", "-c", cfg.to_str().unwrap(), "-"],
        Some(&hello("high")),
    );
    let d: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(code(&o), 1, "{d}");
    let reason = &d["deny_reason_if_denied"];
    assert_eq!(reason["code"], "DENY_REQUIRES_HUMAN_APPROVAL");
    assert_eq!(reason["supervisor_level"], "gatekeeper");
    assert!(
        reason["reason"]
            .as_str()
            .unwrap()
            .contains("pol.prod.high-risk-tenant"),
        "{reason}"
    );
    assert!(
        reason["policy_version"]
            .as_str()
            .unwrap()
            .starts_with("wcp-default@")
    );

    // Without any profile there is no gate: a rule that demands one is denied, never waved
    // through by a stub.
    let dir = policies_copy();
    let hall = dir.path().join("hall.toml");
    let text = std::fs::read_to_string(&hall).unwrap();
    let cut = text
        .find("[profiles]")
        .expect("the bundled config selects profiles");
    let end = text[cut..].find("\n\n").map_or(text.len(), |e| cut + e);
    std::fs::write(&hall, format!("{}{}", &text[..cut], &text[end..])).unwrap();
    let prod = FETCH.replace("\"dev\"", "\"prod\"");
    let o = run(&["route", "-c", hall.to_str().unwrap(), "-"], Some(&prod));
    assert_eq!(code(&o), 1);
    let d: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(
        d["deny_reason_if_denied"]["code"],
        "DENY_POLICY_GATE_UNCONFIGURED"
    );

    let rogue = FETCH.replace("acme-corp", "rogue.agent");
    let o = run(&["route", "-c", cfg.to_str().unwrap()], Some(&rogue));
    assert_eq!(code(&o), 1);
    let d: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(d["deny_reason_if_denied"]["code"], "DENY_UNKNOWN_TENANT");
}

#[test]
fn per_worker_scope_skips_a_worker_whose_record_excludes_the_env() {
    // The chunker's record allows dev, stage and prod, not edge (only hello's does). A rule that
    // routes chunking at the edge too finds no worker there; under the global scope PyHall would
    // select it anyway.
    let dir = policies_copy();
    let rules = dir.path().join("rules.json");
    let text = std::fs::read_to_string(&rules).unwrap();
    let dev = r#""capability_id": "cap.doc.chunk", "env": "dev""#;
    assert!(text.contains(dev));
    std::fs::write(
        &rules,
        text.replace(
            dev,
            r#""capability_id": "cap.doc.chunk", "env": {"in": ["dev", "edge"]}"#,
        ),
    )
    .unwrap();
    let cfg = dir.path().join("hall.toml");
    let edge = FETCH
        .replace("cap.web.fetch", "cap.doc.chunk")
        .replace("\"dev\"", "\"edge\"");
    let o = run(&["route", "-c", cfg.to_str().unwrap()], Some(&edge));
    assert_eq!(code(&o), 1, "{}", stdout(&o));
    let d: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(
        d["deny_reason_if_denied"]["code"],
        "DENY_NO_AVAILABLE_WORKER"
    );
    assert_eq!(
        d["candidate_workers_ranked"][0]["skip_reason"],
        "env_not_allowed"
    );

    let global = std::fs::read_to_string(&cfg).unwrap().replace(
        "controls_scope = \"per_worker\"",
        "controls_scope = \"global\"",
    );
    std::fs::write(&cfg, global).unwrap();
    let o = run(&["route", "-c", cfg.to_str().unwrap()], Some(&edge));
    assert_eq!(code(&o), 0, "{}", stdout(&o));
}

#[test]
fn route_json_lines_reports_a_bad_line_and_still_routes_the_others() {
    let cfg = repo("policies/hall.toml");
    let good = FETCH.replace('\n', " ");
    let input =
        format!("{good}\n{{\"capability_id\": \"cap.x\", \"env\": \"production\"}}\n{good}\n");
    let o = run(&["route", "-c", cfg.to_str().unwrap()], Some(&input));
    assert_eq!(code(&o), 65);
    let lines: Vec<Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["denied"], false);
    assert_eq!(lines[1]["error"]["line"], 2);
    assert!(
        lines[1]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("RouteInput.env")
    );
    assert_eq!(lines[2]["denied"], false);
}

#[test]
fn malformed_inputs_exit_65_with_a_message_naming_the_field() {
    let cfg = repo("policies/hall.toml");
    let cases = [
        ("not json", "not valid JSON"),
        (
            r#"{"capability_id": "cap.a", "env": "dev"}"#,
            "RouteInput.data_label is required",
        ),
        (
            &FETCH.replace("\"P2\"", "\"P9\""),
            "qos_class: \"P9\" is not allowed; expected one of: P0, P1, P2, P3",
        ),
        (
            &FETCH.replace("\"request\"", "\"reqest\""),
            "unknown field \"reqest\"",
        ),
        (
            &FETCH.replace("\"env\": \"dev\"", "\"env\": \"prod\", \"env\": \"dev\""),
            "duplicate key \"env\"",
        ),
    ];
    for (input, want) in cases {
        let o = run(&["route", "-c", cfg.to_str().unwrap()], Some(input));
        assert_eq!(code(&o), 65, "input {input:?}");
        assert!(
            stderr(&o).contains(want),
            "{:?} should mention {want:?}",
            stderr(&o)
        );
        assert!(stdout(&o).is_empty());
    }
    let o = run(
        &["--json", "route", "-c", cfg.to_str().unwrap()],
        Some("[]"),
    );
    assert_eq!(code(&o), 65);
    let e: Value = serde_json::from_str(stderr(&o).trim()).expect("--json errors are JSON");
    assert_eq!(e["error"]["code"], "invalid_input");
}

#[test]
fn missing_files_exit_66_and_bad_configuration_exits_78() {
    let cfg = repo("policies/hall.toml");
    let o = run(
        &[
            "route",
            "-c",
            cfg.to_str().unwrap(),
            "/nonexistent/input.json",
        ],
        None,
    );
    assert_eq!(code(&o), 66);
    assert!(stderr(&o).contains("/nonexistent/input.json"));

    let o = run(&["route", "-c", "/nonexistent/hall.toml"], Some(FETCH));
    assert_eq!(code(&o), 78);
    assert!(stderr(&o).contains("hint:"));

    let dir = policies_copy();
    let hall = dir.path().join("hall.toml");
    let text = std::fs::read_to_string(&hall)
        .unwrap()
        .replace("require_signatory", "requre_signatory");
    std::fs::write(&hall, text).unwrap();
    let o = run(&["route", "-c", hall.to_str().unwrap()], Some(FETCH));
    assert_eq!(code(&o), 78);
    assert!(stderr(&o).contains("line 6"), "{}", stderr(&o));
    assert!(stderr(&o).contains("requre_signatory"), "{}", stderr(&o));
}

#[test]
fn ambiguous_rules_are_refused_by_validate_and_by_route() {
    let dir = policies_copy();
    let rules = dir.path().join("rules.json");
    let text = std::fs::read_to_string(&rules)
        .unwrap()
        .replace(r#""env": "prod""#, r#""env": {"in": "production"}"#);
    std::fs::write(&rules, text).unwrap();

    let o = run(&["validate", rules.to_str().unwrap()], None);
    assert_eq!(code(&o), 1);
    let out = stdout(&o);
    assert!(out.contains("INVALID"), "{out}");
    assert!(
        out.contains("rule \"rr_fetch_prod\" at $.rules[2].match.env.in"),
        "{out}"
    );
    assert!(out.contains("substring"), "{out}");

    let o = run(&["--json", "validate", rules.to_str().unwrap()], None);
    assert_eq!(code(&o), 1);
    let v: Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(v["valid"], false);
    assert_eq!(v["issues"][0]["rule_id"], "rr_fetch_prod");

    let hall = dir.path().join("hall.toml");
    let o = run(&["route", "-c", hall.to_str().unwrap()], Some(FETCH));
    assert_eq!(code(&o), 78);
    assert!(stderr(&o).contains("wcp-hall validate"), "{}", stderr(&o));
}

#[test]
fn duplicate_json_keys_are_refused_in_rules_and_records() {
    let dir = policies_copy();
    let rules = dir.path().join("rules.json");
    let text = std::fs::read_to_string(&rules).unwrap().replacen(
        r#""rules": ["#,
        r#""rules": [], "rules": ["#,
        1,
    );
    std::fs::write(&rules, text).unwrap();
    let o = run(&["validate", rules.to_str().unwrap()], None);
    assert_ne!(code(&o), 0);
    let all = stdout(&o) + &stderr(&o);
    assert!(all.contains("duplicate key \"rules\" at line"), "{all}");

    let record = std::fs::read_to_string(repo("policies/registry/org.wcp-hall.hello.1.json"))
        .unwrap()
        .replacen('{', r#"{"risk_tier": "low", "#, 1);
    let reg = dir.path().join("fresh-registry");
    let o = run(
        &["enroll", "--registry-dir", reg.to_str().unwrap(), "-"],
        Some(&record),
    );
    assert_eq!(code(&o), 65, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("duplicate key \"risk_tier\""),
        "{}",
        stderr(&o)
    );
}

#[test]
fn validate_reports_shadows_and_failing_tests() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.json");
    std::fs::write(
        &rules,
        r#"{"rules": [
            {"rule_id": "rr_broad_any", "match": {"capability_id": {"any": true}},
             "decision": {"candidate_workers_ranked": [{"worker_species_id": "wrk.a.b"}]}},
            {"rule_id": "rr_specific_prod", "match": {"capability_id": {"any": true}, "env": "prod"}}]}"#,
    )
    .unwrap();
    let o = run(&["validate", rules.to_str().unwrap()], None);
    assert_eq!(code(&o), 1);
    assert!(stdout(&o).contains("rr_specific_prod is shadowed by earlier rule rr_broad_any"));
    let o = run(
        &["validate", "--allow-shadows", rules.to_str().unwrap()],
        None,
    );
    assert_eq!(code(&o), 0);

    let tests = dir.path().join("tests.json");
    let input = FETCH;
    std::fs::write(
        &tests,
        format!(
            r#"{{"tests": [{{"test_id": "t1", "input": {input}, "expect": {{"expected_rule_id": "rr_broad_any"}}}},
                         {{"test_id": "t2", "input": {input}, "expect": {{"expected_rule_id": "rr_specific_prod"}}}}]}}"#
        ),
    )
    .unwrap();
    let o = run(
        &[
            "validate",
            "--allow-shadows",
            rules.to_str().unwrap(),
            tests.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(code(&o), 1);
    let out = stdout(&o);
    assert!(
        out.contains("FAIL t2: expected rule \"rr_specific_prod\", routed to \"rr_broad_any\""),
        "{out}"
    );
    assert!(out.contains("tests: 1 passed, 1 failed"), "{out}");

    std::fs::write(&tests, r#"{"tests": [{"test_id": "t1"}]}"#).unwrap();
    let o = run(
        &["validate", rules.to_str().unwrap(), tests.to_str().unwrap()],
        None,
    );
    assert_eq!(code(&o), 65);
}

#[test]
fn bundled_policies_validate_with_their_tests() {
    let o = run(
        &[
            "validate",
            repo("policies/rules.json").to_str().unwrap(),
            repo("policies/rules.tests.json").to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("19 rules, structure valid"), "{out}");
    assert!(out.contains("no shadowed rules"), "{out}");
    assert!(out.contains("tests: 44 passed, 0 failed"), "{out}");
}

#[test]
fn enroll_writes_a_valid_record_and_refuses_a_bad_one_without_writing() {
    let dir = tempfile::tempdir().unwrap();
    let reg = dir.path().join("registry");
    let record = repo("policies/registry/org.wcp-hall.hello.1.json");
    let o = run(
        &[
            "enroll",
            "--registry-dir",
            reg.to_str().unwrap(),
            record.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).contains("enrolled org.wcp-hall.hello.1"));
    assert!(reg.join("org.wcp-hall.hello.1.json").is_file());

    let o = run(
        &[
            "--json",
            "enroll",
            "--registry-dir",
            reg.to_str().unwrap(),
            record.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(code(&o), 0);
    let v: Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(v["enrolled"]["action"], "replaced");

    let bad = r#"{"worker_id": "foo", "worker_species_id": "summarizer", "capabilities": [], "risk_tier": "extreme"}"#;
    let o = run(
        &["enroll", "--registry-dir", reg.to_str().unwrap(), "-"],
        Some(bad),
    );
    assert_eq!(code(&o), 65);
    let err = stderr(&o);
    for field in ["worker_id", "worker_species_id", "capabilities"] {
        assert!(err.contains(field), "{err} should name {field}");
    }
    let files: Vec<_> = std::fs::read_dir(&reg).unwrap().collect();
    assert_eq!(files.len(), 1, "nothing but the first record was written");
}

#[test]
fn config_show_and_check_describe_the_configured_hall() {
    let cfg = repo("policies/hall.toml");
    let o = run(
        &["--json", "config", "show", "-c", cfg.to_str().unwrap()],
        None,
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v: Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(v["rules"]["count"], 19);
    assert_eq!(v["registry"]["summary"]["enrolled_workers"], 7);
    assert_eq!(v["controls_scope"], "per_worker");
    // The Python runtime workers would get, probed: the interpreter and what it grants.
    let python = &v["python"];
    assert!(python["version"].as_str().unwrap().starts_with("3."), "{v}");
    let interpreter = python["interpreter"].as_str().unwrap();
    assert!(
        python["paths"]["execute"]
            .as_array()
            .unwrap()
            .contains(&Value::from(interpreter)),
        "{python}"
    );
    // Whether a per-run memory bound is enforceable on this host.
    let per_run = v["memory_bound"]["per_run"].as_bool().unwrap();
    assert_eq!(v["memory_bound"]["reason"].is_null(), per_run, "{v}");
    // And what else it can bound per run: the Hall's socket, scratch, persistent data, groups.
    for key in ["hall_socket", "scratch", "persistent_data", "groups"] {
        assert!(v["run_limits"][key].is_string(), "{key}: {v}");
    }
    let human = run(&["config", "show", "-c", cfg.to_str().unwrap()], None);
    assert!(
        stdout(&human).contains("python:    cpython 3."),
        "{}",
        stdout(&human)
    );
    assert!(
        stdout(&human).contains(if per_run {
            "memory:    per run"
        } else {
            "memory:    per process only"
        }),
        "{}",
        stdout(&human)
    );

    assert!(
        stdout(&human).contains("warm:      off"),
        "{}",
        stdout(&human)
    );
    // [warm]: what is kept warm, and a species nobody enrolled (a typo) is pointed out.
    let warm = policies_copy();
    let toml = warm.path().join("hall.toml");
    let text = std::fs::read_to_string(&toml).unwrap();
    std::fs::write(
        &toml,
        format!("{text}\n[warm]\nworkers = [\"wrk.hello.greeter\", \"wrk.helo.greeter\"]\n"),
    )
    .unwrap();
    let o = run(
        &["--json", "config", "show", "-c", toml.to_str().unwrap()],
        None,
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v: Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(
        v["warm"]["not_enrolled"],
        serde_json::json!(["wrk.helo.greeter"]),
        "{v}"
    );
    assert_eq!(v["warm"]["config"]["per_worker"], 2, "{v}");
    let human = stdout(&run(
        &["config", "show", "-c", toml.to_str().unwrap()],
        None,
    ));
    assert!(
        human.contains("warm:      wrk.hello.greeter, wrk.helo.greeter"),
        "{human}"
    );
    assert!(
        human.contains("note: wrk.helo.greeter is not enrolled"),
        "{human}"
    );
    std::fs::write(&toml, format!("{text}\n[warm]\nworkers = [\"hello\"]\n")).unwrap();
    let o = run(&["config", "check", "-c", toml.to_str().unwrap()], None);
    assert_eq!(code(&o), 78, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("hint: list species like"),
        "{}",
        stderr(&o)
    );

    let dir = policies_copy();
    std::fs::write(dir.path().join("registry/broken.json"), "{").unwrap();
    let o = run(
        &[
            "config",
            "check",
            "-c",
            dir.path().join("hall.toml").to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(code(&o), 78);
    assert!(stderr(&o).contains("broken.json"), "{}", stderr(&o));
}

#[test]
fn config_check_reads_the_receipt_key_as_serve_does_and_creates_nothing() {
    use std::os::unix::fs::PermissionsExt;
    let dir = policies_copy();
    let hall = dir.path().join("hall.toml");
    let mut text = std::fs::read_to_string(&hall).unwrap();
    text.push_str("\n[receipts]\nsigning_key = \"r.key\"\n");
    std::fs::write(&hall, text).unwrap();
    let listing = || {
        let mut v: Vec<_> = walk(dir.path());
        v.sort();
        v
    };
    fn walk(p: &std::path::Path) -> Vec<std::path::PathBuf> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(p).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                out.extend(walk(&p));
            }
            out.push(p);
        }
        out
    }
    let check = || run(&["config", "check", "-c", hall.to_str().unwrap()], None);
    let before = listing();
    let o = check();
    assert_eq!(code(&o), 78, "a missing key: {}", stderr(&o));
    assert!(stderr(&o).contains("r.key"), "{}", stderr(&o));
    assert!(stderr(&o).contains("keys generate"), "{}", stderr(&o));
    assert_eq!(listing(), before, "config check created something");

    let key = dir.path().join("r.key");
    let o = run(&["keys", "generate", key.to_str().unwrap()], None);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let o = check();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(!stdout(&o).contains("would not start"), "{}", stdout(&o));

    // Connection caps that no descriptor limit fits are noted (the service's own limit is its
    // unit's LimitNOFILE=, so not a failure here).
    let text = std::fs::read_to_string(&hall).unwrap();
    std::fs::write(
        &hall,
        format!("{text}\n[server]\nmax_connections = 1000000000000\n"),
    )
    .unwrap();
    let o = check();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(
        stdout(&o).contains("would not start") && stdout(&o).contains("max_connections"),
        "{}",
        stdout(&o)
    );
    std::fs::write(&hall, text).unwrap();

    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = check();
    assert_eq!(code(&o), 78, "a key readable by others: {}", stderr(&o));

    std::fs::write(&key, "garbage\n").unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let o = check();
    assert_eq!(code(&o), 78, "a garbage key: {}", stderr(&o));
}

#[test]
fn conformance_passes_on_pyhall_vectors_and_fails_on_a_tampered_expectation() {
    let vectors = repo("tests/vectors/routing.json");
    let dir = tempfile::tempdir().unwrap();
    let emit = dir.path().join("out.jsonl");
    let o = run(
        &[
            "conformance",
            "routing",
            vectors.to_str().unwrap(),
            "--emit",
            emit.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(code(&o), 0, "{}", stdout(&o));
    assert!(stdout(&o).contains("600 passed, 0 failed"));
    let lines: Vec<Value> = std::fs::read_to_string(&emit)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 600);
    assert_eq!(lines[0]["id"], "R0001");
    assert!(lines[0]["actual"]["telemetry"].is_array());

    let mut doc: Value = serde_json::from_str(&std::fs::read_to_string(&vectors).unwrap()).unwrap();
    doc["cases"][0]["expect"]["deny_code"] = "DENY_NO_MATCHING_RULE".into();
    let tampered = dir.path().join("tampered.json");
    std::fs::write(&tampered, doc.to_string()).unwrap();
    let o = run(
        &[
            "--json",
            "conformance",
            "routing",
            tampered.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(code(&o), 1);
    let v: Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(v["failed"], 1);
    assert_eq!(v["failures"][0]["id"], "R0001");

    std::fs::write(
        &tampered,
        r#"{"format": "other/1", "rule_sets": {}, "cases": []}"#,
    )
    .unwrap();
    let o = run(
        &["conformance", "routing", tampered.to_str().unwrap()],
        None,
    );
    assert_eq!(code(&o), 65);
}

#[test]
fn help_and_usage_errors() {
    let o = run(&["--help"], None);
    assert_eq!(code(&o), 0);
    for word in [
        "route",
        "validate",
        "enroll",
        "status",
        "conformance",
        "Exit codes",
    ] {
        assert!(stdout(&o).contains(word), "--help should mention {word}");
    }
    let o = run(&["route", "--bogus"], None);
    assert_eq!(code(&o), 2);
    let o = run(&["--json", "version"], None);
    let v: Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
}
