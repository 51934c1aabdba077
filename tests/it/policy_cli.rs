//! `wcp-hall policy check` and `wcp-hall policy eval` as a CI job or an operator runs them: the
//! real binary on real files, exit codes, located errors, `--json`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_wcp-hall");

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run wcp-hall")
}

fn code(o: &Output) -> i32 {
    o.status.code().expect("exited normally")
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

/// A copy of the bundled policy set in a temporary directory, to break.
fn bundled_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(repo("policies/cedar")).unwrap() {
        let p = entry.unwrap().path();
        std::fs::copy(&p, dir.path().join(p.file_name().unwrap())).unwrap();
    }
    dir
}

fn edit(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{from:?}");
    std::fs::write(path, text.replacen(from, to, 1)).unwrap();
}

#[test]
fn the_bundled_policies_and_profiles_pass() {
    let set = repo("policies/cedar");
    let profiles = repo("policies/profiles");
    let o = run(&[
        "policy",
        "check",
        set.to_str().unwrap(),
        "--profiles",
        profiles.to_str().unwrap(),
    ]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("wcp-default@1.0.0+"), "{out}");
    assert!(out.contains("valid against the schema"), "{out}");
    assert!(out.contains(" passed, 0 failed"), "{out}");
    assert!(
        out.contains("3 valid (prof.dev.permissive, prof.edge.isolated, prof.prod.strict)"),
        "{out}"
    );
    assert!(out.trim_end().ends_with("ok"), "{out}");
    // The set is named once even though the three profiles point at it too.
    assert_eq!(out.matches("policyset.toml:").count(), 1, "{out}");
}

#[test]
fn json_output_carries_versions_counts_and_golden_results() {
    let set = repo("policies/cedar");
    let o = run(&["--json", "policy", "check", set.to_str().unwrap()]);
    assert_eq!(code(&o), 0);
    let v: Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(v["ok"], true);
    let s = &v["sets"][0];
    assert_eq!(s["valid"], true);
    assert!(s["permits"].as_u64().unwrap() > 0 && s["forbids"].as_u64().unwrap() > 0);
    assert_eq!(s["golden"]["failed"], 0);
    assert!(s["golden"]["results"][0]["line"].as_u64().unwrap() > 1);
    assert!(v["profiles"].is_null());
}

#[test]
fn a_syntax_error_fails_with_file_line_and_column() {
    let dir = bundled_copy();
    edit(
        &dir.path().join("nonprod.cedar"),
        "context.data_label != Wcp::DataLabel::\"RESTRICTED\"\n};",
        "context.data_label != \n};",
    );
    let o = run(&["policy", "check", dir.path().to_str().unwrap()]);
    assert_eq!(code(&o), 1, "{}", stdout(&o));
    let out = stdout(&o);
    let file = dir.path().join("nonprod.cedar");
    let expected = format!(
        "{}:9:1: syntax error: unexpected token `}}`",
        file.display()
    );
    assert!(out.contains(&expected), "{out}");
    assert!(out.contains("INVALID (1 problem)"), "{out}");
    assert!(out.trim_end().ends_with("FAILED"), "{out}");
}

#[test]
fn a_schema_violation_fails_with_the_policy_id_and_a_hint() {
    let dir = bundled_copy();
    edit(
        &dir.path().join("production.cedar"),
        "context.worker.risk_tier == Wcp::RiskTier::\"critical\"\n};",
        "context.worker.risk_tier == Wcp::RiskTier::\"severe\"\n};",
    );
    let o = run(&["--json", "policy", "check", dir.path().to_str().unwrap()]);
    assert_eq!(code(&o), 1);
    let v: Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    let d = &v["sets"][0]["diagnostics"][0];
    assert_eq!(d["kind"], "validation");
    assert_eq!(d["policy_id"], "pol.prod.critical-worker");
    assert!(d["file"].as_str().unwrap().ends_with("production.cedar"));
    assert!(d["line"].as_u64().unwrap() > 40, "{d}");
    assert!(d["help"].as_str().unwrap().contains("\"critical\""), "{d}");
    assert_eq!(v["ok"], false);
}

#[test]
fn a_changed_decision_fails_the_golden_replay() {
    let dir = bundled_copy();
    // Turn the executor review of critical workers into an incident commander.
    edit(
        &dir.path().join("production.cedar"),
        "@require_human(\"executor\")",
        "@require_human(\"incident_commander\")",
    );
    let o = run(&["policy", "check", dir.path().to_str().unwrap()]);
    assert_eq!(code(&o), 1);
    let out = stdout(&o);
    assert!(
        out.contains("expected REQUIRE_HUMAN(executor), got REQUIRE_HUMAN(incident_commander)"),
        "{out}"
    );
    assert!(out.contains(" 1 failed"), "{out}");
    // --golden replays another file against the same set.
    let g = dir.path().join("other.toml");
    std::fs::write(
        &g,
        "[[case]]\nname = \"x\"\nexpect = \"ALLOW\"\n[case.request]\ntenant_id = \"a\"\ncapability_id = \"cap.x.y\"\nenv = \"dev\"\ndata_label = \"PUBLIC\"\ntenant_risk = \"low\"\nqos_class = \"P2\"\n",
    )
    .unwrap();
    let o = run(&[
        "policy",
        "check",
        dir.path().to_str().unwrap(),
        "--golden",
        g.to_str().unwrap(),
    ]);
    assert_eq!(code(&o), 0, "{}", stdout(&o));
    assert!(stdout(&o).contains("1 passed, 0 failed"));
}

#[test]
fn malformed_golden_missing_files_and_usage_have_their_exit_codes() {
    let dir = bundled_copy();
    edit(
        &dir.path().join("golden.toml"),
        "expect = \"ALLOW\"",
        "expect = \"OK\"",
    );
    let o = run(&["policy", "check", dir.path().to_str().unwrap()]);
    assert_eq!(code(&o), 65, "{}", stdout(&o));
    assert!(
        stdout(&o).contains("golden.toml:9:10: golden error: unknown variant `OK`"),
        "{}",
        stdout(&o)
    );
    let o = run(&["policy", "check", "/nonexistent/policies"]);
    assert_eq!(code(&o), 66);
    assert!(stderr(&o).contains("hint:"), "{}", stderr(&o));
    let o = run(&["policy", "check"]);
    assert_eq!(code(&o), 2);
    let o = run(&["--json", "policy", "check"]);
    let e: Value = serde_json::from_str(stderr(&o).trim()).unwrap();
    assert_eq!(e["error"]["code"], "usage");
}

#[test]
fn a_bad_profile_fails_the_check_with_its_location() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(repo("policies/profiles/prof.prod.strict.toml")).unwrap();
    std::fs::write(
        dir.path().join("prof.prod.strict.toml"),
        text.replace("../cedar", &repo("policies/cedar").display().to_string())
            .replace("seccomp = \"required\"", "seccomp = \"mandatory\""),
    )
    .unwrap();
    let o = run(&[
        "policy",
        "check",
        "--profiles",
        dir.path().to_str().unwrap(),
    ]);
    assert_eq!(code(&o), 1, "{}", stdout(&o));
    let out = stdout(&o);
    assert!(
        out.contains("prof.prod.strict.toml:21:11: profile error: unknown variant `mandatory`"),
        "{out}"
    );
    assert!(out.contains("INVALID"), "{out}");
}

#[test]
fn eval_decides_one_request_with_a_set_or_a_profile() {
    let dir = tempfile::tempdir().unwrap();
    let req = dir.path().join("req.toml");
    std::fs::write(
        &req,
        "tenant_id = \"acme\"\ncapability_id = \"cap.doc.summarize\"\nenv = \"prod\"\ndata_label = \"INTERNAL\"\ntenant_risk = \"low\"\nqos_class = \"P2\"\nchain_blast_prior = 9\n[worker]\nspecies = \"wrk.doc.summarizer\"\nrisk_tier = \"low\"\nenvelope = {}\nblast = { data = 2, network = 0, financial = 0, time = 0, reversibility = \"reversible\" }\n",
    )
    .unwrap();
    let set = repo("policies/cedar");
    let o = run(&[
        "policy",
        "eval",
        "--set",
        set.to_str().unwrap(),
        req.to_str().unwrap(),
    ]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).starts_with("ALLOW (wcp-default@1.0.0+"),
        "{}",
        stdout(&o)
    );
    let profile = repo("policies/profiles/prof.prod.strict.toml");
    let o = run(&[
        "--json",
        "policy",
        "eval",
        "--profile",
        profile.to_str().unwrap(),
        req.to_str().unwrap(),
    ]);
    assert_eq!(code(&o), 1);
    let v: Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(v["decision"], "REQUIRE_HUMAN");
    assert_eq!(v["supervisor_level"], "gatekeeper");
    assert_eq!(v["blast"]["result"], "over_max");
    assert_eq!(v["blast"]["total"], 11);
    assert_eq!(v["profile_id"], "prof.prod.strict");
    // JSON input, and a malformed request.
    let json_req = dir.path().join("req.json");
    std::fs::write(
        &json_req,
        r#"{"tenant_id": "acme", "capability_id": "cap.doc.summarize", "env": "edge", "data_label": "INTERNAL", "tenant_risk": "high", "qos_class": "P2"}"#,
    )
    .unwrap();
    let o = run(&[
        "policy",
        "eval",
        "--set",
        set.to_str().unwrap(),
        json_req.to_str().unwrap(),
    ]);
    assert_eq!(code(&o), 1);
    assert!(
        stdout(&o).contains("no permit matched (default deny)"),
        "{}",
        stdout(&o)
    );
    std::fs::write(&req, "tenant_id = \"acme\"\nenv = \"staging\"\n").unwrap();
    let o = run(&[
        "policy",
        "eval",
        "--set",
        set.to_str().unwrap(),
        req.to_str().unwrap(),
    ]);
    assert_eq!(code(&o), 65);
    assert!(stderr(&o).contains("req.toml:2:7"), "{}", stderr(&o));
}
