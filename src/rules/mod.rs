//! Routing rules: PyHall's `rules.json`, validated at load and compiled into an index.
//!
//! A rule set is loaded once ([`RuleSet::from_json_str`]); loading validates every rule, computes
//! the shadow report ([`shadow`]) and builds the first-match index ([`index`]). Afterwards a
//! lookup is a hash probe plus an array read whatever the rule count, and PyHall's
//! per-request O(n²) shadow scan becomes a precomputed list.
//!
//! # Deliberate divergences from PyHall (documented in docs/pyhall-compat.md)
//! A condition must be an exact string, `{"in": [strings]}` (non-empty), `{"any": true}`, or the
//! key must be absent. PyHall silently accepts forms that do something nobody meant, and each
//! of these is a load error here, naming the rule and the JSON path:
//! - `{"in": "a string"}` (PyHall: substring test, `{"in": "development"}` matches `dev`);
//! - `{"eq": …}`, `{"any": false}`, `{}`, or any other object (PyHall: never matches);
//! - `null` (PyHall: wildcard; write `{"any": true}` or omit the key);
//! - a match key other than the five routed fields (PyHall ignores it, so `{"tenant_id": "x"}`
//!   quietly matches every tenant);
//! - an `env`/`data_label`/`tenant_risk`/`qos_class` value outside WCP's vocabulary (it could
//!   never match);
//! - duplicate `rule_id`s, unknown keys in a rule, its decision, escalation or preconditions,
//!   and wrongly typed decision fields (PyHall raises from inside a decision instead).
//!
//! Pure: parsing takes text, not paths; the caller does the I/O.

pub mod index;
pub mod shadow;

use std::collections::HashMap;
use std::fmt;

use serde_json::{Map, Value};

use crate::wcp::enums::{DataLabel, Env, QosClass, TenantRisk};
use crate::wcp::input::json_type;
use crate::wcp::{Escalation, Preconditions, RouteInput};

pub use index::RuleIndex;
pub use shadow::ShadowWarning;

/// The five RouteInput fields a rule may match on, in PyHall's order.
pub const MATCH_KEYS: [&str; 5] = [
    "capability_id",
    "env",
    "data_label",
    "tenant_risk",
    "qos_class",
];

/// One match condition. An absent key is `None` in [`RuleMatch`] and matches anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// `"value"`: equal to this string.
    Exact(String),
    /// `{"in": [..]}`: one of these strings (list order kept: shadow detection compares lists).
    In(Vec<String>),
    /// `{"any": true}`.
    Any,
}

impl Condition {
    /// Whether `value` satisfies the condition.
    pub fn accepts(&self, value: &str) -> bool {
        match self {
            Condition::Exact(s) => s == value,
            Condition::In(list) => list.iter().any(|s| s == value),
            Condition::Any => true,
        }
    }
}

/// A rule's `match` object: one optional condition per routed field, indexed like [`MATCH_KEYS`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleMatch {
    pub conditions: [Option<Condition>; 5],
}

impl RuleMatch {
    /// The routed field values of an input, in [`MATCH_KEYS`] order.
    pub fn input_values(input: &RouteInput) -> [&str; 5] {
        [
            input.capability_id.as_str(),
            input.env.as_str(),
            input.data_label.as_str(),
            input.tenant_risk.as_str(),
            input.qos_class.as_str(),
        ]
    }

    /// Straightforward matching, field by field. The index is tested against this.
    pub fn matches(&self, input: &RouteInput) -> bool {
        let values = Self::input_values(input);
        self.conditions
            .iter()
            .zip(values)
            .all(|(c, v)| c.as_ref().is_none_or(|c| c.accepts(v)))
    }
}

/// A ranked candidate as written in a rule.
#[derive(Debug, Clone, PartialEq)]
pub struct CandidateSpec {
    pub worker_species_id: String,
    pub score_hint: Option<f64>,
}

/// A rule's `decision` object.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RuleDecision {
    pub candidate_workers_ranked: Vec<CandidateSpec>,
    /// `required_controls_suggested`, sorted and deduplicated (PyHall treats it as a set).
    pub required_controls: Vec<String>,
    pub recommended_profiles: Vec<Value>,
    pub escalation: Escalation,
    pub preconditions: Preconditions,
}

/// One routing rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub rule_id: String,
    pub matcher: RuleMatch,
    pub decision: RuleDecision,
}

/// A validated, compiled rule set.
#[derive(Debug, Clone)]
pub struct RuleSet {
    rules: Vec<Rule>,
    shadows: Vec<ShadowWarning>,
    index: RuleIndex,
}

/// One problem in a rules file, located by rule and JSON path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleIssue {
    /// JSON path, e.g. `$.rules[3].match.env`.
    pub path: String,
    /// The rule's id when it has a readable one.
    pub rule_id: Option<String>,
    pub problem: String,
}

impl fmt::Display for RuleIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.rule_id {
            Some(id) => write!(f, "rule {id:?} at {}: {}", self.path, self.problem),
            None => write!(f, "{}: {}", self.path, self.problem),
        }
    }
}

/// Why a rules file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    #[error("rules file is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("rules file has {} problem(s):\n{}", .0.len(), .0.iter().map(|i| format!("  - {i}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<RuleIssue>),
}

impl RuleSet {
    /// Parses, validates and compiles a rules file's text.
    pub fn from_json_str(text: &str) -> Result<Self, RulesError> {
        let value: Value = crate::json::parse_str(text)?;
        Self::from_value(&value)
    }

    /// Validates and compiles an already parsed rules document (`{"rules": [...]}`).
    pub fn from_value(value: &Value) -> Result<Self, RulesError> {
        let mut issues = Vec::new();
        let rules = parse_document(value, &mut issues);
        if !issues.is_empty() {
            return Err(RulesError::Invalid(issues));
        }
        Ok(Self::compile(rules))
    }

    /// Compiles already valid rules: shadow report and index.
    pub fn compile(rules: Vec<Rule>) -> Self {
        let shadows = shadow::detect(&rules);
        let index = RuleIndex::build(&rules);
        RuleSet {
            rules,
            shadows,
            index,
        }
    }

    /// The rules in file order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// PyHall's shadow warnings, computed once at load, in PyHall's order.
    pub fn shadows(&self) -> &[ShadowWarning] {
        &self.shadows
    }

    /// The first rule matching `input` (PyHall's first-match semantics), via the index.
    pub fn first_match(&self, input: &RouteInput) -> Option<&Rule> {
        self.index
            .first_match(
                &input.capability_id,
                input.env,
                input.data_label,
                input.tenant_risk,
                input.qos_class,
            )
            .map(|i| &self.rules[i])
    }

    /// The first matching rule by a linear scan (reference semantics; used by tests and `validate`).
    pub fn first_match_linear(&self, input: &RouteInput) -> Option<&Rule> {
        self.rules.iter().find(|r| r.matcher.matches(input))
    }
}

// ---------------------------------------------------------------------------------------------
// Parsing and validation. Every function pushes issues and keeps going, so one run reports all.

struct Ctx<'a> {
    issues: &'a mut Vec<RuleIssue>,
    rule_id: Option<String>,
}

impl Ctx<'_> {
    fn issue(&mut self, path: &str, problem: impl Into<String>) {
        self.issues.push(RuleIssue {
            path: path.to_owned(),
            rule_id: self.rule_id.clone(),
            problem: problem.into(),
        });
    }

    fn unknown_keys(&mut self, path: &str, obj: &Map<String, Value>, allowed: &[&str]) {
        for key in obj.keys().filter(|k| !allowed.contains(&k.as_str())) {
            self.issue(
                &format!("{path}.{key}"),
                format!("unknown key {key:?}; allowed keys: {}", allowed.join(", ")),
            );
        }
    }

    fn bool_field(&mut self, path: &str, v: &Value) -> Option<bool> {
        match v {
            Value::Bool(b) => Some(*b),
            other => {
                self.issue(
                    path,
                    format!("expected true or false, got {}", json_type(other)),
                );
                None
            }
        }
    }

    fn string_list(&mut self, path: &str, v: &Value) -> Vec<String> {
        match v {
            Value::Array(items) => items
                .iter()
                .enumerate()
                .filter_map(|(i, item)| match item {
                    Value::String(s) => Some(s.clone()),
                    other => {
                        self.issue(
                            &format!("{path}[{i}]"),
                            format!("expected a string, got {}", json_type(other)),
                        );
                        None
                    }
                })
                .collect(),
            other => {
                self.issue(
                    path,
                    format!("expected an array of strings, got {}", json_type(other)),
                );
                Vec::new()
            }
        }
    }
}

fn parse_document(value: &Value, issues: &mut Vec<RuleIssue>) -> Vec<Rule> {
    let mut ctx = Ctx {
        issues,
        rule_id: None,
    };
    let Some(doc) = value.as_object() else {
        ctx.issue(
            "$",
            format!(
                "expected an object with a \"rules\" array, got {}",
                json_type(value)
            ),
        );
        return Vec::new();
    };
    ctx.unknown_keys("$", doc, &["rules", "description", "version"]);
    let rules_value = match doc.get("rules") {
        Some(Value::Array(items)) => items,
        Some(other) => {
            ctx.issue(
                "$.rules",
                format!("expected an array of rules, got {}", json_type(other)),
            );
            return Vec::new();
        }
        None => {
            ctx.issue("$", "missing the \"rules\" array");
            return Vec::new();
        }
    };
    let mut rules = Vec::with_capacity(rules_value.len());
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (i, rv) in rules_value.iter().enumerate() {
        let path = format!("$.rules[{i}]");
        let rule = parse_rule(&path, rv, &mut ctx);
        // The duplicate check uses the id even when the rule has other problems, so one run
        // reports every problem (ctx.rule_id is the id parse_rule read, if readable).
        if let Some(id) = ctx.rule_id.clone()
            && let Some(first) = seen.insert(id, i)
        {
            ctx.issue(
                &format!("{path}.rule_id"),
                format!(
                    "duplicate rule_id, already used by $.rules[{first}]; rule ids must be unique"
                ),
            );
        }
        rules.extend(rule);
    }
    rules
}

fn parse_rule(path: &str, value: &Value, ctx: &mut Ctx<'_>) -> Option<Rule> {
    ctx.rule_id = None;
    let Some(obj) = value.as_object() else {
        ctx.issue(
            path,
            format!("expected a rule object, got {}", json_type(value)),
        );
        return None;
    };
    let rule_id = match obj.get("rule_id") {
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s.clone()),
        Some(Value::String(_)) => {
            ctx.issue(&format!("{path}.rule_id"), "rule_id must not be empty");
            None
        }
        Some(other) => {
            ctx.issue(
                &format!("{path}.rule_id"),
                format!("expected a string, got {}", json_type(other)),
            );
            None
        }
        None => {
            ctx.issue(path, "missing \"rule_id\"");
            None
        }
    };
    ctx.rule_id = rule_id.clone();
    ctx.unknown_keys(path, obj, &["rule_id", "match", "decision", "description"]);
    let before = ctx.issues.len();
    let matcher = match obj.get("match") {
        None => RuleMatch::default(),
        Some(m) => parse_match(&format!("{path}.match"), m, ctx),
    };
    let decision = match obj.get("decision") {
        None => RuleDecision::default(),
        Some(d) => parse_decision(&format!("{path}.decision"), d, ctx),
    };
    let ok = ctx.issues.len() == before;
    Some(Rule {
        rule_id: rule_id?,
        matcher,
        decision,
    })
    .filter(|_| ok)
}

fn vocabulary(key: &str) -> Option<&'static [&'static str]> {
    match key {
        "env" => Some(Env::NAMES),
        "data_label" => Some(DataLabel::NAMES),
        "tenant_risk" => Some(TenantRisk::NAMES),
        "qos_class" => Some(QosClass::NAMES),
        _ => None,
    }
}

fn parse_match(path: &str, value: &Value, ctx: &mut Ctx<'_>) -> RuleMatch {
    let mut matcher = RuleMatch::default();
    let Some(obj) = value.as_object() else {
        ctx.issue(
            path,
            format!("expected an object of conditions, got {}", json_type(value)),
        );
        return matcher;
    };
    for (key, cond) in obj {
        let cpath = format!("{path}.{key}");
        let Some(slot) = MATCH_KEYS.iter().position(|k| k == key) else {
            ctx.issue(
                &cpath,
                format!(
                    "match key {key:?} is not routed on (PyHall silently ignores it, so the rule would match every value); allowed keys: {}",
                    MATCH_KEYS.join(", ")
                ),
            );
            continue;
        };
        let parsed = parse_condition(&cpath, cond, ctx);
        if let (Some(c), Some(allowed)) = (&parsed, vocabulary(key)) {
            let values: &[String] = match c {
                Condition::Exact(s) => std::slice::from_ref(s),
                Condition::In(list) => list,
                Condition::Any => &[],
            };
            for v in values.iter().filter(|v| !allowed.contains(&v.as_str())) {
                ctx.issue(
                    &cpath,
                    format!(
                        "{v:?} can never match: {key} is one of {}",
                        allowed.join(", ")
                    ),
                );
            }
        }
        matcher.conditions[slot] = parsed;
    }
    matcher
}

const CONDITION_FORMS: &str = "a condition must be an exact string, {\"in\": [\"a\", \"b\"]}, {\"any\": true}, or the key left out";

fn parse_condition(path: &str, value: &Value, ctx: &mut Ctx<'_>) -> Option<Condition> {
    match value {
        Value::String(s) => Some(Condition::Exact(s.clone())),
        Value::Null => {
            ctx.issue(
                path,
                format!("null is ambiguous (PyHall treats it as a wildcard); {CONDITION_FORMS}"),
            );
            None
        }
        Value::Object(o) if o.len() == 1 && o.get("any") == Some(&Value::Bool(true)) => {
            Some(Condition::Any)
        }
        Value::Object(o) if o.len() == 1 && o.contains_key("in") => match &o["in"] {
            Value::Array(items) if items.is_empty() => {
                ctx.issue(
                    path,
                    "{\"in\": []} can never match; list at least one value",
                );
                None
            }
            Value::Array(items) => {
                let mut list = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    match item {
                        Value::String(s) => list.push(s.clone()),
                        other => ctx.issue(
                            &format!("{path}.in[{i}]"),
                            format!("expected a string, got {}", json_type(other)),
                        ),
                    }
                }
                Some(Condition::In(list))
            }
            Value::String(s) => {
                ctx.issue(
                    &format!("{path}.in"),
                    format!(
                        "{{\"in\": {s:?}}} is a string, which PyHall treats as a substring test; write {{\"in\": [{s:?}]}} or an exact string"
                    ),
                );
                None
            }
            other => {
                ctx.issue(
                    &format!("{path}.in"),
                    format!("expected an array of strings, got {}", json_type(other)),
                );
                None
            }
        },
        Value::Object(o) => {
            let keys: Vec<&str> = o.keys().map(String::as_str).collect();
            ctx.issue(
                path,
                format!(
                    "object with keys {keys:?} never matches in PyHall (only {{\"in\": [...]}} and {{\"any\": true}} are conditions); {CONDITION_FORMS}"
                ),
            );
            None
        }
        other => {
            ctx.issue(
                path,
                format!("{} is not a condition; {CONDITION_FORMS}", json_type(other)),
            );
            None
        }
    }
}

fn parse_decision(path: &str, value: &Value, ctx: &mut Ctx<'_>) -> RuleDecision {
    let mut d = RuleDecision::default();
    let Some(obj) = value.as_object() else {
        ctx.issue(
            path,
            format!("expected a decision object, got {}", json_type(value)),
        );
        return d;
    };
    ctx.unknown_keys(
        path,
        obj,
        &[
            "candidate_workers_ranked",
            "required_controls_suggested",
            "recommended_profiles",
            "escalation",
            "preconditions",
        ],
    );
    if let Some(v) = obj.get("candidate_workers_ranked") {
        let cpath = format!("{path}.candidate_workers_ranked");
        match v {
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    if let Some(c) = parse_candidate(&format!("{cpath}[{i}]"), item, ctx) {
                        d.candidate_workers_ranked.push(c);
                    }
                }
            }
            other => ctx.issue(
                &cpath,
                format!("expected an array of candidates, got {}", json_type(other)),
            ),
        }
    }
    if let Some(v) = obj.get("required_controls_suggested") {
        let mut controls = ctx.string_list(&format!("{path}.required_controls_suggested"), v);
        controls.sort();
        controls.dedup();
        d.required_controls = controls;
    }
    match obj.get("recommended_profiles") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                if item.is_object() {
                    d.recommended_profiles.push(item.clone());
                } else {
                    ctx.issue(
                        &format!("{path}.recommended_profiles[{i}]"),
                        format!("expected a profile object, got {}", json_type(item)),
                    );
                }
            }
        }
        Some(other) => ctx.issue(
            &format!("{path}.recommended_profiles"),
            format!(
                "expected an array of profile objects, got {}",
                json_type(other)
            ),
        ),
    }
    if let Some(v) = obj.get("escalation") {
        d.escalation = parse_escalation(&format!("{path}.escalation"), v, ctx);
    }
    if let Some(v) = obj.get("preconditions") {
        let ppath = format!("{path}.preconditions");
        match v {
            Value::Object(flags) => {
                for (name, flag) in flags {
                    let fpath = format!("{ppath}.{name}");
                    if !Preconditions::NAMES.contains(&name.as_str()) {
                        ctx.issue(
                            &fpath,
                            format!(
                                "unknown precondition; allowed: {}",
                                Preconditions::NAMES.join(", ")
                            ),
                        );
                    } else if let Some(b) = ctx.bool_field(&fpath, flag) {
                        d.preconditions.set(name, b);
                    }
                }
            }
            other => ctx.issue(
                &ppath,
                format!("expected an object of flags, got {}", json_type(other)),
            ),
        }
    }
    d
}

fn parse_candidate(path: &str, value: &Value, ctx: &mut Ctx<'_>) -> Option<CandidateSpec> {
    let Some(obj) = value.as_object() else {
        ctx.issue(
            path,
            format!("expected a candidate object, got {}", json_type(value)),
        );
        return None;
    };
    ctx.unknown_keys(path, obj, &["worker_species_id", "score_hint"]);
    let score_hint = match obj.get("score_hint") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => n.as_f64(),
        Some(other) => {
            ctx.issue(
                &format!("{path}.score_hint"),
                format!("expected a number, got {}", json_type(other)),
            );
            None
        }
    };
    match obj.get("worker_species_id") {
        Some(Value::String(s)) if !s.is_empty() => Some(CandidateSpec {
            worker_species_id: s.clone(),
            score_hint,
        }),
        Some(Value::String(_)) | None => {
            ctx.issue(path, "a candidate needs a non-empty \"worker_species_id\"");
            None
        }
        Some(other) => {
            ctx.issue(
                &format!("{path}.worker_species_id"),
                format!("expected a string, got {}", json_type(other)),
            );
            None
        }
    }
}

fn parse_escalation(path: &str, value: &Value, ctx: &mut Ctx<'_>) -> Escalation {
    let mut e = Escalation::default();
    let Some(obj) = value.as_object() else {
        ctx.issue(
            path,
            format!("expected an object, got {}", json_type(value)),
        );
        return e;
    };
    ctx.unknown_keys(
        path,
        obj,
        &[
            "policy_gate",
            "msavx_step_up",
            "human_required_default",
            "human_required_if",
            "rationale",
        ],
    );
    for (key, v) in obj {
        let fpath = format!("{path}.{key}");
        match key.as_str() {
            "policy_gate" => e.policy_gate = ctx.bool_field(&fpath, v).unwrap_or_default(),
            "msavx_step_up" => e.msavx_step_up = ctx.bool_field(&fpath, v).unwrap_or_default(),
            "human_required_default" => {
                e.human_required_default = ctx.bool_field(&fpath, v).unwrap_or_default()
            }
            "human_required_if" => e.human_required_if = ctx.string_list(&fpath, v),
            "rationale" => match v {
                Value::Null => {}
                Value::String(s) => e.rationale = Some(s.clone()),
                other => ctx.issue(
                    &fpath,
                    format!("expected a string or null, got {}", json_type(other)),
                ),
            },
            _ => {}
        }
    }
    e
}

#[cfg(test)]
mod tests;
