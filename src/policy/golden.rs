//! Golden decisions: requests and the outcome a policy set must give them (WCP §5.2 determinism,
//! enforced in CI by `wcp-hall policy check` and at every reload).
//!
//! ```toml
//! [[case]]
//! name = "prod: a high-risk tenant needs a gatekeeper"
//! expect = "REQUIRE_HUMAN"              # ALLOW | DENY | REQUIRE_HUMAN
//! level = "gatekeeper"                  # with REQUIRE_HUMAN, and only then
//! policies = ["pol.prod.high-risk-tenant"]  # optional: exactly the determining policies
//! [case.request]                        # a PolicyRequest; unknown fields are errors
//! tenant_id = "acme-corp"
//! capability_id = "cap.doc.summarize"
//! env = "prod"
//! data_label = "INTERNAL"
//! tenant_risk = "high"
//! qos_class = "P2"
//! ```
//!
//! `policies = []` asserts that nothing determined the answer (a default deny). Parsing and
//! running are pure; failures are located at the case's line.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use super::SupervisorLevel;
use super::engine::{Outcome, PolicyEngine};
use super::line_col;
use super::request::PolicyRequest;
use super::source::{CompiledPolicySet, Diagnostic, DiagnosticKind, PolicyLoadError};

/// An expected decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Expect {
    #[serde(rename = "ALLOW")]
    Allow,
    #[serde(rename = "DENY")]
    Deny,
    #[serde(rename = "REQUIRE_HUMAN")]
    RequireHuman,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GoldenFile {
    #[serde(rename = "case")]
    cases: Vec<toml::Spanned<CaseSpec>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseSpec {
    name: String,
    #[serde(default)]
    description: Option<String>,
    expect: Expect,
    #[serde(default)]
    level: Option<SupervisorLevel>,
    #[serde(default)]
    policies: Option<Vec<String>>,
    request: PolicyRequest,
}

/// One golden case.
#[derive(Debug, Clone, PartialEq)]
pub struct GoldenCase {
    pub name: String,
    pub description: Option<String>,
    pub expect: Outcome,
    /// The exact set of determining policy ids, when the case pins it.
    pub policies: Option<Vec<String>>,
    pub request: PolicyRequest,
    pub line: usize,
    pub column: usize,
}

/// A parsed golden file.
#[derive(Debug, Clone, PartialEq)]
pub struct GoldenSuite {
    pub file: String,
    pub cases: Vec<GoldenCase>,
}

/// Parses a golden file. Every malformed case is reported with its location.
pub fn parse(text: &str, file: &str) -> Result<GoldenSuite, PolicyLoadError> {
    let parsed: GoldenFile = toml::from_str(text).map_err(|e| {
        PolicyLoadError::Invalid(vec![Diagnostic::from_toml(
            DiagnosticKind::Golden,
            file,
            text,
            &e,
        )])
    })?;
    let mut problems = Vec::new();
    let mut names = HashSet::new();
    let mut cases = Vec::with_capacity(parsed.cases.len());
    for spanned in parsed.cases {
        let start = spanned.span().start;
        let spec = spanned.into_inner();
        let at = |msg: String| Diagnostic::at(DiagnosticKind::Golden, file, text, start, msg);
        if !names.insert(spec.name.clone()) {
            problems.push(at(format!("case name {:?} is used twice", spec.name)));
        }
        let expect = match (spec.expect, spec.level) {
            (Expect::Allow, None) => Outcome::Allow,
            (Expect::Deny, None) => Outcome::Deny,
            (Expect::RequireHuman, Some(l)) => Outcome::RequireHuman(l),
            (Expect::RequireHuman, None) => {
                problems.push(
                    at(format!(
                        "case {:?} expects REQUIRE_HUMAN without a level",
                        spec.name
                    ))
                    .help(format!(
                        "add level = one of {}",
                        SupervisorLevel::NAMES.join(", ")
                    )),
                );
                continue;
            }
            (_, Some(_)) => {
                problems.push(at(format!(
                    "case {:?}: level only goes with expect = \"REQUIRE_HUMAN\"",
                    spec.name
                )));
                continue;
            }
        };
        let (line, column) = line_col(text, start);
        cases.push(GoldenCase {
            name: spec.name,
            description: spec.description,
            expect,
            policies: spec.policies.map(|mut p| {
                p.sort();
                p
            }),
            request: spec.request,
            line,
            column,
        });
    }
    if cases.is_empty() && problems.is_empty() {
        problems.push(Diagnostic::at(
            DiagnosticKind::Golden,
            file,
            text,
            0,
            "the golden file holds no [[case]]",
        ));
    }
    if problems.is_empty() {
        Ok(GoldenSuite {
            file: file.to_owned(),
            cases,
        })
    } else {
        Err(PolicyLoadError::Invalid(problems))
    }
}

/// The result of one case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CaseResult {
    pub name: String,
    pub line: usize,
    pub column: usize,
    pub passed: bool,
    pub expected: String,
    pub actual: String,
    pub expected_policies: Option<Vec<String>>,
    pub actual_policies: Vec<String>,
    /// What differed, for a failed case.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// The result of a golden file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GoldenReport {
    pub file: String,
    pub policy_version: String,
    pub results: Vec<CaseResult>,
}

impl GoldenReport {
    /// Cases that passed.
    pub fn passed(&self) -> usize {
        self.results.iter().filter(|r| r.passed).count()
    }
    /// Cases that failed.
    pub fn failed(&self) -> usize {
        self.results.len() - self.passed()
    }
    /// One located diagnostic per failed case.
    pub fn failure_diagnostics(&self) -> Vec<Diagnostic> {
        self.results
            .iter()
            .filter(|r| !r.passed)
            .map(|r| Diagnostic {
                kind: DiagnosticKind::Golden,
                file: self.file.clone(),
                line: r.line,
                column: r.column,
                message: format!(
                    "golden case {:?} failed: {}",
                    r.name,
                    r.problem.as_deref().unwrap_or("mismatch")
                ),
                help: Some(
                    "fix the policies, or update the case if the new decision is intended".into(),
                ),
                policy_id: None,
            })
            .collect()
    }
}

/// Runs every case through `engine`. With `set`, a case naming a policy id the set does not hold
/// fails with that explanation (a renamed policy must not make a case vacuous).
pub fn run(
    engine: &dyn PolicyEngine,
    suite: &GoldenSuite,
    set: Option<&CompiledPolicySet>,
) -> GoldenReport {
    let results = suite
        .cases
        .iter()
        .map(|case| {
            let mut problems = Vec::new();
            if let (Some(set), Some(ids)) = (set, &case.policies) {
                for id in ids {
                    if set.policy(id).is_none() {
                        problems.push(format!("{id} is not a policy of this set"));
                    }
                }
            }
            let (actual, actual_policies) = match engine.evaluate(&case.request) {
                Ok(v) => {
                    if !v.errors.is_empty() {
                        problems.push(format!("evaluation errors: {}", v.errors.join("; ")));
                    }
                    (
                        v.outcome.to_string(),
                        v.policy_ids().into_iter().map(str::to_owned).collect(),
                    )
                }
                Err(e) => {
                    problems.push(e.to_string());
                    ("ERROR".to_owned(), Vec::new())
                }
            };
            let expected = case.expect.to_string();
            if actual != expected {
                problems.push(format!("expected {expected}, got {actual}"));
            }
            if let Some(ids) = &case.policies
                && *ids != actual_policies
            {
                problems.push(format!(
                    "expected determining policies [{}], got [{}]",
                    ids.join(", "),
                    actual_policies.join(", ")
                ));
            }
            CaseResult {
                name: case.name.clone(),
                line: case.line,
                column: case.column,
                passed: problems.is_empty(),
                expected,
                actual,
                expected_policies: case.policies.clone(),
                actual_policies,
                problem: (!problems.is_empty()).then(|| problems.join("; ")),
            }
        })
        .collect();
    GoldenReport {
        file: suite.file.clone(),
        policy_version: engine.policy_version(),
        results,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REQ: &str = "[case.request]\ntenant_id = \"a\"\ncapability_id = \"cap.x.y\"\nenv = \"dev\"\ndata_label = \"PUBLIC\"\ntenant_risk = \"low\"\nqos_class = \"P2\"\n";

    fn case(head: &str) -> String {
        format!("[[case]]\n{head}\n{REQ}")
    }

    fn errors(text: &str) -> Vec<Diagnostic> {
        match parse(text, "g.toml") {
            Ok(s) => panic!("accepted: {s:?}"),
            Err(e) => e.diagnostics().to_vec(),
        }
    }

    #[test]
    fn cases_parse_with_their_positions() {
        let text = format!(
            "{}\n{}",
            case("name = \"a\"\nexpect = \"ALLOW\"\npolicies = [\"pol.z\", \"pol.a\"]"),
            case("name = \"b\"\nexpect = \"REQUIRE_HUMAN\"\nlevel = \"executor\"")
        );
        let suite = parse(&text, "g.toml").unwrap();
        assert_eq!(suite.cases.len(), 2);
        assert_eq!(suite.cases[0].expect, Outcome::Allow);
        assert_eq!(
            suite.cases[0].policies.as_deref(),
            Some(&["pol.a".to_owned(), "pol.z".to_owned()][..]),
            "sorted for comparison"
        );
        assert_eq!(
            suite.cases[1].expect,
            Outcome::RequireHuman(SupervisorLevel::Executor)
        );
        assert_eq!(suite.cases[0].line, 1, "the [[case]] header");
        assert!(suite.cases[1].line > 10);
    }

    #[test]
    fn malformed_cases_are_located() {
        let d = errors(&case("name = \"a\"\nexpect = \"REQUIRE_HUMAN\""));
        assert!(d[0].message.contains("without a level"), "{}", d[0]);
        assert_eq!(d[0].line, 1);
        let d = errors(&case(
            "name = \"a\"\nexpect = \"DENY\"\nlevel = \"advisory\"",
        ));
        assert!(d[0].message.contains("only goes with"), "{}", d[0]);
        let d = errors(&format!(
            "{}\n{}",
            case("name = \"a\"\nexpect = \"DENY\""),
            case("name = \"a\"\nexpect = \"DENY\"")
        ));
        assert!(d[0].message.contains("used twice"), "{}", d[0]);
        let d = errors(&case("name = \"a\"\nexpect = \"MAYBE\""));
        assert_eq!(d[0].line, 3, "{}", d[0]);
        let d = errors(&case("name = \"a\"\nexpect = \"DENY\"\nwhy = 1"));
        assert_eq!(d[0].line, 4, "{}", d[0]);
        assert!(d[0].message.contains("why"), "{}", d[0]);
        let d = errors("# nothing\ncase = []\n");
        assert!(d[0].message.contains("no [[case]]"), "{}", d[0]);
    }
}
