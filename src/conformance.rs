//! Replays `wcp-routing-vectors/1` files (PyHall's decisions) through the Hall's router.
//!
//! Each case carries a rule-set name, a registry snapshot (controls present, workers available),
//! a HallConfig, a fixed policy-gate answer, optional attestation hashes and the RouteInput; its
//! `expect` holds PyHall's decision without ids and timestamps. The runner builds the same
//! collaborators from the case, routes, projects the decision onto the `expect` keys and compares
//! every key. Pure apart from the caller reading the file.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::registry::is_pyhall_control_id;
use crate::router::{
    self, CandidateStatus, DecisionContext, GateAnswer, GateContext, GateError, PolicyGate,
    RegistryView, Router, RouterConfig, WorkerHashes,
};
use crate::rules::{Rule, RuleSet, RulesError};
use crate::wcp::{Env, RouteDecision, RouteInput};

/// The format tag this runner understands.
pub const ROUTING_FORMAT: &str = "wcp-routing-vectors/1";

#[derive(Debug, Deserialize)]
struct VectorFile {
    format: String,
    rule_sets: BTreeMap<String, Value>,
    cases: Vec<Case>,
}

#[derive(Debug, Deserialize)]
struct Case {
    id: String,
    rule_set: String,
    registry: CaseRegistry,
    hall_config: Option<Map<String, Value>>,
    policy_gate: Option<GateAnswer>,
    attestation: Option<CaseAttestation>,
    input: Value,
    expect: Map<String, Value>,
}

#[derive(Debug, Deserialize)]
struct CaseRegistry {
    controls_present: Vec<String>,
    workers_available: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct CaseAttestation {
    #[serde(default)]
    registered: HashMap<String, String>,
    #[serde(default)]
    current: HashMap<String, String>,
}

/// A vector file that could not be run at all.
#[derive(Debug, thiserror::Error)]
pub enum VectorError {
    #[error("vector file is not valid JSON or not a {ROUTING_FORMAT} file: {0}")]
    Json(#[from] serde_json::Error),
    #[error("vector file format is {0:?}; this runner understands {ROUTING_FORMAT:?}")]
    Format(String),
    #[error("rule set {name:?} in the vector file is invalid: {source}")]
    RuleSet { name: String, source: RulesError },
    #[error("case {case}: unknown rule set {rule_set:?}")]
    UnknownRuleSet { case: String, rule_set: String },
    #[error("case {case}: hall_config.{key} is not understood by this runner")]
    HallConfig { case: String, key: String },
}

/// The outcome of one case.
#[derive(Debug, Clone)]
pub struct CaseResult {
    pub id: String,
    /// The Hall's decision projected onto the case's `expect` keys.
    pub actual: Map<String, Value>,
    /// One line per differing key (empty when the case passed).
    pub mismatches: Vec<String>,
}

impl CaseResult {
    pub fn passed(&self) -> bool {
        self.mismatches.is_empty()
    }
}

/// The vector snapshot of a registry: PyHall's global controls set and available species.
#[derive(Debug, Clone, Default)]
pub struct SnapshotRegistry {
    pub controls: BTreeSet<String>,
    pub workers: BTreeSet<String>,
}

impl RegistryView for SnapshotRegistry {
    fn has_control(&self, control_id: &str) -> bool {
        self.controls.contains(control_id)
    }
    fn candidate_status(&self, species: &str, _rule: &Rule, _env: Env) -> CandidateStatus {
        if self.workers.contains(species) {
            CandidateStatus::Available
        } else {
            CandidateStatus::Unavailable
        }
    }
}

/// A gate that gives the same answer to every question.
#[derive(Debug, Clone)]
pub struct FixedGate(pub GateAnswer);

impl PolicyGate for FixedGate {
    fn evaluate(&self, _ctx: &GateContext<'_>) -> Result<GateAnswer, GateError> {
        Ok(self.0.clone())
    }
}

/// Registered/current hashes from two maps.
#[derive(Debug, Clone, Default)]
pub struct FixedHashes {
    pub registered: HashMap<String, String>,
    pub current: HashMap<String, String>,
}

impl WorkerHashes for FixedHashes {
    fn registered_hash(&self, species: &str) -> Option<String> {
        self.registered.get(species).cloned()
    }
    fn current_hash(&self, species: &str) -> Option<String> {
        self.current.get(species).cloned()
    }
}

/// Applies a PyHall `HallConfig` object (as found in vectors) over the defaults.
pub fn router_config_from_pyhall(
    case: &str,
    obj: Option<&Map<String, Value>>,
) -> Result<RouterConfig, VectorError> {
    let mut cfg = RouterConfig::default();
    for (key, value) in obj.into_iter().flatten() {
        let bad = || VectorError::HallConfig {
            case: case.to_owned(),
            key: key.clone(),
        };
        let flag = || value.as_bool().ok_or_else(bad);
        match key.as_str() {
            "require_signatory" => cfg.require_signatory = flag()?,
            "require_worker_attestation" => cfg.require_worker_attestation = flag()?,
            "enforce_correlation_id" => cfg.enforce_correlation_id = flag()?,
            "enforce_required_controls" => cfg.enforce_required_controls = flag()?,
            "enforce_blast_scoring_in_prod" => cfg.enforce_blast_scoring_in_prod = flag()?,
            "enforce_privilege_envelopes" => cfg.enforce_privilege_envelopes = flag()?,
            // Warn-only in PyHall; it never changes a decision.
            "require_credential" => {}
            "allowed_tenants" => {
                cfg.allowed_tenants = value
                    .as_array()
                    .ok_or_else(bad)?
                    .iter()
                    .map(|t| t.as_str().map(str::to_owned).ok_or_else(bad))
                    .collect::<Result<_, _>>()?;
            }
            _ => return Err(bad()),
        }
    }
    Ok(cfg)
}

/// Projects a decision onto the vector `expect` shape.
pub fn project(decision: &RouteDecision) -> Map<String, Value> {
    let mut m = Map::new();
    let reason = decision.deny_reason_if_denied.as_ref();
    m.insert("denied".into(), decision.denied.into());
    m.insert(
        "deny_code".into(),
        reason.map_or(Value::Null, |r| r.code.as_str().into()),
    );
    m.insert(
        "deny_message".into(),
        reason.map_or(Value::Null, |r| r.message.clone().into()),
    );
    m.insert(
        "deny_extra".into(),
        Value::Object(reason.map(|r| r.extra.clone()).unwrap_or_default()),
    );
    m.insert(
        "matched_rule_id".into(),
        decision.matched_rule_id.clone().into(),
    );
    m.insert(
        "selected_worker_species_id".into(),
        to_value(&decision.selected_worker_species_id),
    );
    m.insert(
        "candidate_workers_ranked".into(),
        to_value(&decision.candidate_workers_ranked),
    );
    m.insert(
        "required_controls_effective".into(),
        to_value(&decision.required_controls_effective),
    );
    m.insert(
        "recommended_profiles_effective".into(),
        to_value(&decision.recommended_profiles_effective),
    );
    m.insert(
        "escalation_effective".into(),
        to_value(&decision.escalation_effective),
    );
    m.insert(
        "worker_attestation_checked".into(),
        decision.worker_attestation_checked.into(),
    );
    m.insert(
        "worker_attestation_valid".into(),
        to_value(&decision.worker_attestation_valid),
    );
    m.insert("dry_run".into(), decision.dry_run.into());
    m.insert("artifact_hash".into(), to_value(&decision.artifact_hash));
    let telemetry = decision
        .telemetry_envelopes
        .iter()
        .map(|e| {
            let mut v = to_value(e);
            if let Value::Object(o) = &mut v {
                o.shift_remove("timestamp");
            }
            v
        })
        .collect();
    m.insert("telemetry".into(), Value::Array(telemetry));
    m
}

fn to_value<T: serde::Serialize>(v: &T) -> Value {
    // Serialising the Hall's own plain data types to a Value cannot fail (no maps with
    // non-string keys, no non-finite floats reach here); Null is a safe, visible fallback.
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// Runs every case of a vector file.
pub fn run_routing_vectors(text: &str) -> Result<Vec<CaseResult>, VectorError> {
    let file: VectorFile = crate::json::from_str(text)?;
    if file.format != ROUTING_FORMAT {
        return Err(VectorError::Format(file.format));
    }
    let mut rule_sets = HashMap::new();
    for (name, doc) in &file.rule_sets {
        let set = RuleSet::from_value(doc).map_err(|source| VectorError::RuleSet {
            name: name.clone(),
            source,
        })?;
        rule_sets.insert(name.clone(), set);
    }
    let ctx = DecisionContext {
        decision_id: "00000000-0000-4000-8000-000000000000".into(),
        timestamp: "1970-01-01T00:00:00+00:00".into(),
        task_id: "task_default".into(),
    };
    let mut results = Vec::with_capacity(file.cases.len());
    for case in &file.cases {
        let rules = rule_sets
            .get(&case.rule_set)
            .ok_or_else(|| VectorError::UnknownRuleSet {
                case: case.id.clone(),
                rule_set: case.rule_set.clone(),
            })?;
        let registry = SnapshotRegistry {
            controls: case
                .registry
                .controls_present
                .iter()
                .filter(|c| is_pyhall_control_id(c))
                .cloned()
                .collect(),
            workers: case.registry.workers_available.iter().cloned().collect(),
        };
        let config = router_config_from_pyhall(&case.id, case.hall_config.as_ref())?;
        let gate = case.policy_gate.clone().map(FixedGate);
        let hashes = case.attestation.as_ref().map(|a| FixedHashes {
            registered: a.registered.clone(),
            current: a.current.clone(),
        });
        let router = Router {
            rules,
            registry: &registry,
            config: &config,
            gate: gate.as_ref().map(|g| g as &dyn PolicyGate),
            hashes: hashes.as_ref().map(|h| h as &dyn WorkerHashes),
            privilege: None,
            human_approval: None,
        };
        let (actual, mismatches) = match RouteInput::from_value(&case.input) {
            Ok(input) => {
                let decision = router::route(&router, &input, &ctx);
                let projected = project(&decision);
                let mismatches = compare(&case.expect, &projected);
                let actual = case
                    .expect
                    .keys()
                    .map(|k| (k.clone(), projected.get(k).cloned().unwrap_or(Value::Null)))
                    .collect();
                (actual, mismatches)
            }
            Err(e) => (Map::new(), vec![format!("input rejected by the Hall: {e}")]),
        };
        results.push(CaseResult {
            id: case.id.clone(),
            actual,
            mismatches,
        });
    }
    Ok(results)
}

fn compare(expect: &Map<String, Value>, actual: &Map<String, Value>) -> Vec<String> {
    expect
        .iter()
        .filter_map(|(key, want)| {
            let got = actual.get(key).unwrap_or(&Value::Null);
            (got != want).then(|| format!("{key}: expected {want}, got {got}"))
        })
        .collect()
}
