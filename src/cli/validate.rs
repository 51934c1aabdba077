//! `wcp-hall validate RULES [TESTS]`: rules structure, shadow report and routing tests.

use std::path::PathBuf;

use serde::Deserialize;
use serde_json::{Value, json};

use super::{CliError, Out, exit, read_input};
use crate::clock::mint_context;
use crate::conformance::{FixedGate, SnapshotRegistry};
use crate::router::{self, GateAnswer, Router, RouterConfig};
use crate::rules::{RuleSet, RulesError};
use crate::wcp::RouteInput;

#[derive(Debug, clap::Args)]
pub struct ValidateArgs {
    /// The rules.json file to check.
    pub rules: PathBuf,
    /// Optional routing tests: {"tests": [{"test_id", "input": RouteInput, "expect": {"expected_rule_id"}}]}.
    pub tests: Option<PathBuf>,
    /// Do not fail when rules are shadowed (they still deny every prod/edge request).
    #[arg(long)]
    pub allow_shadows: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestFile {
    tests: Vec<TestCase>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestCase {
    test_id: String,
    input: Value,
    expect: TestExpect,
    /// Free text for the reader; accepted so fixtures can explain themselves.
    #[serde(default)]
    #[allow(dead_code)]
    description: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestExpect {
    expected_rule_id: String,
}

/// Runs PyHall-format routing tests: every candidate of every rule is available and every
/// required control present (PyHall's `validate` semantics), the policy gate allows, so a test
/// checks which rule routes the input.
fn run_tests(
    rules: &RuleSet,
    text: &str,
    origin: &str,
) -> Result<Vec<(String, Option<String>)>, CliError> {
    let file: TestFile = crate::json::from_str(text)
        .map_err(|e| CliError::new(exit::DATAERR, "tests_invalid", format!("{origin}: {e}")))?;
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
    let gate = FixedGate(GateAnswer {
        decision: "ALLOW".into(),
        policy_version: "policy.v0".into(),
        reason: "validate".into(),
        supervisor_level: None,
    });
    let config = RouterConfig::default();
    let router = Router {
        rules,
        registry: &registry,
        config: &config,
        gate: Some(&gate),
        hashes: None,
        privilege: None,
        human_approval: None,
    };
    let mut failures = Vec::new();
    for case in &file.tests {
        let input = RouteInput::from_value(&case.input).map_err(|e| {
            CliError::new(
                exit::DATAERR,
                "tests_invalid",
                format!("{origin}: test {:?}: {e}", case.test_id),
            )
        })?;
        let decision = router::route(&router, &input, &mint_context("validate"));
        if decision.matched_rule_id != case.expect.expected_rule_id {
            let why = decision
                .deny_code()
                .map(|c| format!(" ({c})"))
                .unwrap_or_default();
            failures.push((
                case.test_id.clone(),
                Some(format!(
                    "expected rule {:?}, routed to {:?}{why}",
                    case.expect.expected_rule_id, decision.matched_rule_id
                )),
            ));
        } else {
            failures.push((case.test_id.clone(), None));
        }
    }
    Ok(failures)
}

pub fn run(args: ValidateArgs, out: &mut Out) -> Result<u8, CliError> {
    let origin = args.rules.display().to_string();
    let text = read_input(&args.rules)?;
    let rules = match RuleSet::from_json_str(&text) {
        Ok(r) => r,
        Err(e) => {
            let issues: Vec<Value> = match &e {
                RulesError::Invalid(list) => list
                    .iter()
                    .map(|i| json!({"path": i.path, "rule_id": i.rule_id, "problem": i.problem}))
                    .collect(),
                RulesError::Json(j) => {
                    vec![json!({"path": "$", "rule_id": null, "problem": j.to_string()})]
                }
            };
            if out.json {
                out.json_line(&json!({"rules_file": origin, "valid": false, "issues": issues}))?;
            } else {
                out.line(format!("{origin}: INVALID"))?;
                out.line(e.to_string())?;
            }
            return Ok(exit::DENIED);
        }
    };
    let tests = match &args.tests {
        Some(path) => Some(run_tests(
            &rules,
            &read_input(path)?,
            &path.display().to_string(),
        )?),
        None => None,
    };
    let shadows = rules.shadows();
    let failed_tests = tests.iter().flatten().filter(|(_, f)| f.is_some()).count();
    let ok = (shadows.is_empty() || args.allow_shadows) && failed_tests == 0;
    if out.json {
        let tests_json = tests.as_ref().map(|t| {
            json!({
                "passed": t.len() - failed_tests,
                "failed": failed_tests,
                "failures": t.iter().filter_map(|(id, f)| f.as_ref().map(|f| json!({"test_id": id, "problem": f}))).collect::<Vec<_>>(),
            })
        });
        out.json_line(&json!({
            "rules_file": origin, "valid": true, "rule_count": rules.rules().len(),
            "shadows": shadows, "tests": tests_json, "ok": ok,
        }))?;
    } else {
        out.line(format!(
            "{origin}: {} rules, structure valid",
            rules.rules().len()
        ))?;
        if shadows.is_empty() {
            out.line("no shadowed rules")?;
        } else {
            out.line(format!(
                "{} shadow warning(s): while they exist every prod/edge request is denied with DENY_SHADOW_RULES_DETECTED",
                shadows.len()
            ))?;
            for w in shadows {
                out.line(format!(
                    "  {} is shadowed by earlier rule {} ({})",
                    w.shadowed, w.shadower, w.reason
                ))?;
            }
        }
        if let Some(t) = &tests {
            for (id, f) in t {
                if let Some(f) = f {
                    out.line(format!("  FAIL {id}: {f}"))?;
                }
            }
            out.line(format!(
                "tests: {} passed, {failed_tests} failed",
                t.len() - failed_tests
            ))?;
        }
    }
    Ok(if ok { exit::OK } else { exit::DENIED })
}
