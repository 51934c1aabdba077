//! The decision pipeline: PyHall's `make_decision`, step for step (pyhall-spec §1).
//!
//! [`route`] is a pure function of the RouteInput, the compiled [`RuleSet`], a registry view,
//! the [`RouterConfig`] floors, the policy gate, the worker-hash lookups, the privilege check and
//! a [`DecisionContext`] carrying the id and timestamp the caller minted. It does no I/O, reads no
//! clock and takes no locks; collaborators come in as traits so the daemon, the CLI and the
//! conformance runner plug in their own (the daemon: the live registry, the Cedar gate
//! `policy::gate::RequestGate` and the verified packages `attest::AttestedWorkers`, which do
//! take locks and, for attestation, file I/O; the conformance runner: fixed vector answers).
//!
//! Step order (first failure returns): signatory tenant → tenant id → blast score range → shadow
//! rules (prod/edge) → rule match → correlation id → required controls → blast gate → policy gate
//! → candidate selection → worker attestation → privilege envelope → allow.

pub mod blast;

use std::collections::BTreeSet;

pub use crate::common::hex;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::pyjson;
use crate::rules::{Rule, RuleSet};
use crate::wcp::decision::{
    CandidateWorker, DenyCode, DenyReason, Escalation, NO_MATCH, PRE_ROUTING,
};
use crate::wcp::telemetry::{EventContext, TelemetryEvent, sanitize};
use crate::wcp::{DataLabel, Env, QosClass, RouteDecision, RouteInput, SkipReason, TenantRisk};

/// Control id that makes the blast gate run on a rule in any env.
pub const CTRL_BLAST_RADIUS_SCORING: &str = "ctrl.blast_radius_scoring";
/// Control id that makes the privilege envelope check run on a rule.
pub const CTRL_PRIVILEGE_ENVELOPES_REQUIRED: &str = "ctrl.privilege_envelopes_required";
/// The policy version reported when no gate answered.
pub const DEFAULT_POLICY_VERSION: &str = "policy.v0";
/// Blast score at or above which prod/edge requests need a human.
pub const BLAST_HUMAN_THRESHOLD: i64 = 85;

/// The HallConfig floors PyHall's router consults. `Default` is PyHall's `HallConfig()` (and
/// its behaviour when no config is passed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterConfig {
    pub require_signatory: bool,
    pub allowed_tenants: BTreeSet<String>,
    pub require_worker_attestation: bool,
    pub enforce_correlation_id: bool,
    pub enforce_required_controls: bool,
    pub enforce_blast_scoring_in_prod: bool,
    pub enforce_privilege_envelopes: bool,
    /// The Hall's profile may demand the policy gate for every dispatch, not only for rules with
    /// `escalation.policy_gate` (PyHall: never).
    pub gate_every_dispatch: bool,
    /// Controls the profile requires on top of each rule's (PyHall: none). They join
    /// `required_controls_effective` and the missing-controls check.
    pub profile_controls: Vec<String>,
}

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig {
            require_signatory: false,
            allowed_tenants: BTreeSet::new(),
            require_worker_attestation: false,
            enforce_correlation_id: true,
            enforce_required_controls: true,
            enforce_blast_scoring_in_prod: true,
            enforce_privilege_envelopes: false,
            gate_every_dispatch: false,
            profile_controls: Vec::new(),
        }
    }
}

/// Whether a ranked candidate can be selected, as the registry sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CandidateStatus {
    Available,
    Unavailable,
    /// Per-worker control scope: the worker does not implement the rule's required controls.
    MissingControls,
    /// Per-worker control scope: the worker's `allowed_environments` excludes the env.
    EnvNotAllowed,
}

/// What the router needs from the registry.
pub trait RegistryView {
    /// Whether the control is in the set of controls present (PyHall: one global set).
    fn has_control(&self, control_id: &str) -> bool;
    /// Whether `species` may be selected for `rule` in `env`.
    fn candidate_status(&self, species: &str, rule: &Rule, env: Env) -> CandidateStatus;
}

/// What the policy gate is asked (PyHall's context dict; `policy_version` is always "policy.v0").
#[derive(Debug, Clone, serde::Serialize)]
pub struct GateContext<'a> {
    pub capability_id: &'a str,
    pub tenant_id: &'a str,
    pub env: Env,
    pub data_label: DataLabel,
    pub tenant_risk: TenantRisk,
    pub qos_class: QosClass,
    pub policy_version: &'a str,
    /// The Hall's additions (PyHall's gate sees none of these): the candidate the router would
    /// select (the gate runs after selection is computed, so policies can look at the worker),
    /// the step-4 blast score when it ran, and whether this is a dry run.
    pub selected_worker_species: Option<&'a str>,
    pub pyhall_blast_score: Option<i64>,
    pub dry_run: bool,
}

/// The gate's answer: `(decision, policy_version, reason)`. `decision` stays a string so an
/// unrecognised answer is denied as `DENY_POLICY_GATE_INVALID_RESPONSE`, as in PyHall.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct GateAnswer {
    pub decision: String,
    pub policy_version: String,
    pub reason: String,
    /// For REQUIRE_HUMAN: the WCP supervisor level the gate asks for (PyHall's gate has none;
    /// when set it is added to the denial's extras as `supervisor_level`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supervisor_level: Option<String>,
}

/// A gate that failed to answer (PyHall: the callable raised).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("policy gate failed: {0}")]
pub struct GateError(pub String);

/// The policy gate, consulted for rules with `escalation.policy_gate: true`.
pub trait PolicyGate {
    fn evaluate(&self, ctx: &GateContext<'_>) -> Result<GateAnswer, GateError>;
}

/// Registered and current code hashes of worker species (attestation step 6.5).
pub trait WorkerHashes {
    fn registered_hash(&self, species: &str) -> Option<String>;
    fn current_hash(&self, species: &str) -> Option<String>;
    /// Why the last verification of `species` failed: its own code (`ATTEST_*`) and reason.
    /// An attestation denial carries them as `attestation_code` / `attestation_reason`, so the
    /// real cause (an unsafe tree entry, a bad manifest) is never hidden behind PyHall's
    /// generic messages. `None` (the default, and PyHall's behaviour): nothing to add.
    fn attestation_failure(&self, _species: &str) -> Option<(String, String)> {
        None
    }
}

/// The privilege envelope check (step 6.7). `Err` is PyHall's "raised".
pub trait PrivilegeCheck {
    fn envelope(&self, species: &str) -> Result<Option<Value>, String>;
    /// `(allowed, reason)`.
    fn allows(
        &self,
        env: Env,
        label: DataLabel,
        envelope: Option<&Value>,
    ) -> Result<(bool, String), String>;
}

/// The impure inputs of a decision, minted by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecisionContext {
    pub decision_id: String,
    /// Python `datetime.isoformat()` style, e.g. `2026-11-24T19:36:01.274627+00:00`.
    pub timestamp: String,
    pub task_id: String,
}

/// Everything [`route`] consults besides the input.
pub struct Router<'a> {
    pub rules: &'a RuleSet,
    pub registry: &'a dyn RegistryView,
    pub config: &'a RouterConfig,
    pub gate: Option<&'a dyn PolicyGate>,
    pub hashes: Option<&'a dyn WorkerHashes>,
    pub privilege: Option<&'a dyn PrivilegeCheck>,
    /// Set when a human approved this request (WCP §5.8): the two "a human must decide" steps —
    /// the prod/edge blast threshold (step 4) and a gate answering REQUIRE_HUMAN (step 5) — are
    /// satisfied by the approval instead of denying. Every other step runs again unchanged.
    /// PyHall has no approval path, so this is `None` wherever PyHall parity matters.
    pub human_approval: Option<&'a str>,
}

/// `true` iff `s` is what PyHall's `re.match('^[0-9a-f]{64}$', s)` accepts (including its one
/// trailing newline quirk).
pub fn is_pyhall_sha256(s: &str) -> bool {
    let hex = s.strip_suffix('\n').unwrap_or(s);
    hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// PyHall's `artifact_hash`: lowercase hex SHA-256 of `json.dumps(model_dump(), sort_keys=True)`.
pub fn artifact_hash(input: &RouteInput) -> String {
    let mut text = String::with_capacity(512);
    input.write_pyhall_json(&mut text);
    hex(&Sha256::digest(text.as_bytes()))
}

/// A denial under construction.
struct Deny {
    code: DenyCode,
    message: String,
    extra: Map<String, Value>,
    escalation: Escalation,
    candidates: Vec<CandidateWorker>,
    attestation_checked: bool,
    attestation_valid: Option<bool>,
}

impl Deny {
    fn new(code: DenyCode, message: impl Into<String>) -> Self {
        Deny {
            code,
            message: message.into(),
            extra: Map::new(),
            escalation: Escalation::default(),
            candidates: Vec::new(),
            attestation_checked: false,
            attestation_valid: None,
        }
    }
    fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.extra.insert(key.to_owned(), value.into());
        self
    }
    fn escalation(mut self, e: Escalation) -> Self {
        self.escalation = e;
        self
    }
}

/// Routes one request. See the module documentation for the step order.
pub fn route(router: &Router<'_>, input: &RouteInput, ctx: &DecisionContext) -> RouteDecision {
    let events = EventContext {
        timestamp: ctx.timestamp.clone(),
        correlation_id: sanitize(&input.correlation_id),
        tenant_id: sanitize(&input.tenant_id),
        capability_id: sanitize(&input.capability_id),
        dry_run: input.dry_run,
    };
    let cfg = router.config;
    // The rule's controls plus the profile's, sorted and deduplicated (just the rule's when no
    // profile adds any, which is PyHall's case).
    let effective_controls = |rule: &Rule| -> Vec<String> {
        let mut v = rule.decision.required_controls.clone();
        if !cfg.profile_controls.is_empty() {
            v.extend(cfg.profile_controls.iter().cloned());
            v.sort();
            v.dedup();
        }
        v
    };
    let base = |matched: &str, rule: Option<&Rule>| RouteDecision {
        decision_id: ctx.decision_id.clone(),
        timestamp: ctx.timestamp.clone(),
        correlation_id: input.correlation_id.clone(),
        tenant_id: input.tenant_id.clone(),
        capability_id: input.capability_id.clone(),
        matched_rule_id: matched.to_owned(),
        env: input.env,
        data_label: input.data_label,
        tenant_risk: input.tenant_risk,
        qos_class: input.qos_class,
        denied: true,
        deny_reason_if_denied: None,
        selected_worker_species_id: None,
        candidate_workers_ranked: Vec::new(),
        required_controls_effective: rule.map(effective_controls).unwrap_or_default(),
        recommended_profiles_effective: Vec::new(),
        escalation_effective: Escalation::default(),
        preconditions_checked: rule.map(|r| r.decision.preconditions).unwrap_or_default(),
        artifact_hash: None,
        worker_attestation_checked: false,
        worker_attestation_valid: None,
        dry_run: input.dry_run,
        telemetry_envelopes: Vec::new(),
    };
    let deny = |matched: &str, rule: Option<&Rule>, d: Deny| {
        let mut out = base(matched, rule);
        out.telemetry_envelopes = vec![TelemetryEvent::task_denied(
            &events, d.code, &d.message, matched,
        )];
        out.deny_reason_if_denied = Some(DenyReason {
            code: d.code,
            message: d.message,
            extra: d.extra,
        });
        out.escalation_effective = d.escalation;
        out.candidate_workers_ranked = d.candidates;
        out.worker_attestation_checked = d.attestation_checked;
        out.worker_attestation_valid = d.attestation_valid;
        out
    };

    // Step 0: signatory tenants.
    if cfg.require_signatory && !cfg.allowed_tenants.contains(&input.tenant_id) {
        return deny(
            PRE_ROUTING,
            None,
            Deny::new(
                DenyCode::DenyUnknownTenant,
                "Tenant is not registered as a signatory. Register via the Hall configuration before dispatching workers.",
            )
            .with("tenant_id", input.tenant_id.clone()),
        );
    }
    // Step 0.1: tenant id present.
    if pyjson::py_is_blank(&input.tenant_id) {
        return deny(
            PRE_ROUTING,
            None,
            Deny::new(
                DenyCode::DenyMissingTenantId,
                "tenant_id is required and must not be empty or whitespace.",
            ),
        );
    }
    // Step 0.25: caller blast score in range.
    if let Some(score) = input.blast_score.filter(|s| !(0..=100).contains(s)) {
        return deny(
            PRE_ROUTING,
            None,
            Deny::new(
                DenyCode::DenyInvalidInput,
                "blast_score must be in [0, 100]",
            )
            .with("blast_score", score),
        );
    }
    // Step 0.5: shadow rules in prod/edge (precomputed at load).
    let shadows = router.rules.shadows();
    if input.env.is_production() && !shadows.is_empty() {
        let ids: Vec<Value> = shadows
            .iter()
            .map(|w| Value::from(w.shadowed.clone()))
            .collect();
        return deny(
            NO_MATCH,
            None,
            Deny::new(
                DenyCode::DenyShadowRulesDetected,
                "Rule set contains shadow rules in prod/edge environment. Fix rule ordering before deploying to production.",
            )
            .with("shadowed_rule_ids", ids)
            .with("shadow_count", shadows.len()),
        );
    }
    // Step 1: first matching rule.
    let Some(rule) = router.rules.first_match(input) else {
        return deny(
            NO_MATCH,
            None,
            Deny::new(
                DenyCode::DenyNoMatchingRule,
                "No routing rule matched. Fail-closed per WCP spec section 5.1.",
            ),
        );
    };
    let rid = rule.rule_id.as_str();
    let decision = &rule.decision;
    let pre = decision.preconditions;
    let rule_escalation = decision.escalation.clone();

    // Step 2: correlation id.
    if (pre.must_have_correlation_id || cfg.enforce_correlation_id)
        && pyjson::py_is_blank(&input.correlation_id)
    {
        return deny(
            rid,
            Some(rule),
            Deny::new(
                DenyCode::DenyMissingCorrelationId,
                "correlation_id is required but absent or empty.",
            ),
        );
    }
    // Step 3: required controls (sorted, from the sorted rule list).
    let controls = effective_controls(rule);
    let missing: Vec<&String> = controls
        .iter()
        .filter(|c| !router.registry.has_control(c))
        .collect();
    if !missing.is_empty()
        && (pre.deny_if_missing_required_controls || cfg.enforce_required_controls)
    {
        return deny(
            rid,
            Some(rule),
            Deny::new(
                DenyCode::DenyMissingRequiredControls,
                "Required controls not present in registry.",
            )
            .with("missing", json!(missing)),
        );
    }
    // Step 4: blast gate.
    let has_ctrl = |c: &str| controls.binary_search_by(|x| x.as_str().cmp(c)).is_ok();
    let blast_ran = has_ctrl(CTRL_BLAST_RADIUS_SCORING)
        || (input.env.is_production() && cfg.enforce_blast_scoring_in_prod);
    let mut blast_score = None;
    if blast_ran {
        let score = blast::score(input);
        if input.env.is_production()
            && score >= BLAST_HUMAN_THRESHOLD
            && router.human_approval.is_none()
        {
            return deny(
                rid,
                Some(rule),
                Deny::new(
                    DenyCode::DenyRequiresHuman,
                    "Blast radius too high for autonomous execution.",
                )
                .with("blast_score", score)
                .with("reason", "REQUIRE_HUMAN_HIGH_BLAST")
                .escalation(Escalation {
                    human_required_default: true,
                    rationale: Some("REQUIRE_HUMAN_HIGH_BLAST".into()),
                    ..rule_escalation.clone()
                }),
            );
        }
        blast_score = Some(score);
    }
    // Step 6 (computed before the gate, denied after it, as PyHall orders the denials):
    // candidate selection, first available in rule order. Computing it first is pure and lets
    // the gate see the worker it is deciding about.
    let mut candidates = Vec::with_capacity(decision.candidate_workers_ranked.len());
    let mut selected: Option<&str> = None;
    for c in &decision.candidate_workers_ranked {
        let status = router
            .registry
            .candidate_status(&c.worker_species_id, rule, input.env);
        let skip_reason = match (status, selected) {
            (CandidateStatus::Available, None) => {
                selected = Some(&c.worker_species_id);
                None
            }
            (CandidateStatus::Available, Some(_)) => Some(SkipReason::AlreadySelected),
            (CandidateStatus::Unavailable, _) => Some(SkipReason::Unavailable),
            (CandidateStatus::MissingControls, _) => Some(SkipReason::MissingControls),
            (CandidateStatus::EnvNotAllowed, _) => Some(SkipReason::EnvNotAllowed),
        };
        candidates.push(CandidateWorker {
            worker_species_id: c.worker_species_id.clone(),
            score_hint: c.score_hint,
            requires_controls_minimum: None,
            skip_reason,
        });
    }
    // Step 5: policy gate.
    let mut policy_version = DEFAULT_POLICY_VERSION.to_owned();
    let mut gate_reason = "no_gate_required";
    if rule_escalation.policy_gate || cfg.gate_every_dispatch {
        let Some(gate) = router.gate else {
            return deny(
                rid,
                Some(rule),
                Deny::new(
                    DenyCode::DenyPolicyGateUnconfigured,
                    "policy_gate_eval is required when escalation.policy_gate is True. Pass a PolicyGate instance's .evaluate method.",
                )
                .escalation(rule_escalation),
            );
        };
        let gate_ctx = GateContext {
            capability_id: &input.capability_id,
            tenant_id: &input.tenant_id,
            env: input.env,
            data_label: input.data_label,
            tenant_risk: input.tenant_risk,
            qos_class: input.qos_class,
            policy_version: DEFAULT_POLICY_VERSION,
            selected_worker_species: selected,
            pyhall_blast_score: blast_score,
            dry_run: input.dry_run,
        };
        let answer = match gate.evaluate(&gate_ctx) {
            Ok(a) => a,
            Err(_) => {
                return deny(
                    rid,
                    Some(rule),
                    Deny::new(
                        DenyCode::DenyInternalError,
                        "policy_gate_eval raised an exception. See server logs for details.",
                    )
                    .escalation(rule_escalation),
                );
            }
        };
        match answer.decision.as_str() {
            "ALLOW" => {}
            "DENY" => {
                return deny(
                    rid,
                    Some(rule),
                    Deny::new(DenyCode::DenyPolicyGate, "Policy gate denied.")
                        .with("reason", answer.reason.clone())
                        .with("policy_version", answer.policy_version)
                        .escalation(Escalation {
                            rationale: Some(answer.reason),
                            ..rule_escalation
                        }),
                );
            }
            "REQUIRE_HUMAN" if router.human_approval.is_some() => {}
            "REQUIRE_HUMAN" => {
                let mut d = Deny::new(
                    DenyCode::DenyRequiresHumanApproval,
                    "Policy gate requires human approval before this worker can be dispatched. Submit the pending approval via wcp.approval.resolve.",
                )
                .with("reason", answer.reason.clone())
                .with("policy_version", answer.policy_version)
                .with("supervisor_required", true);
                if let Some(level) = answer.supervisor_level {
                    d = d.with("supervisor_level", level);
                }
                return deny(
                    rid,
                    Some(rule),
                    d.escalation(Escalation {
                        human_required_default: true,
                        rationale: Some(answer.reason),
                        ..rule_escalation
                    }),
                );
            }
            other => {
                return deny(
                    rid,
                    Some(rule),
                    Deny::new(
                        DenyCode::DenyPolicyGateInvalidResponse,
                        format!(
                            "policy_gate_eval returned unrecognized decision: {}. Expected 'ALLOW', 'DENY', or 'REQUIRE_HUMAN'. Failing closed.",
                            pyjson::str_repr(other)
                        ),
                    )
                    .escalation(Escalation {
                        rationale: Some("invalid_gate_response".into()),
                        ..rule_escalation
                    }),
                );
            }
        }
        gate_reason = if answer.decision == "REQUIRE_HUMAN" {
            "human_approved"
        } else {
            "policy_gate_allow"
        };
        policy_version = answer.policy_version;
    }
    let Some(sel) = selected else {
        let mut d = Deny::new(
            DenyCode::DenyNoAvailableWorker,
            "No available worker candidates. Route to review queue.",
        )
        .escalation(rule_escalation);
        d.candidates = candidates;
        return deny(rid, Some(rule), d);
    };
    // Step 6.5: worker attestation.
    let mut attestation = (false, None);
    if cfg.require_worker_attestation {
        let Some(hashes) = router.hashes else {
            return deny(
                rid,
                Some(rule),
                Deny::new(
                    DenyCode::DenyAttestationUnconfigured,
                    "require_worker_attestation is True but hash callables were not provided. Pass registry_get_worker_hash and get_current_worker_hash to make_decision().",
                )
                .escalation(rule_escalation),
            );
        };
        let why = |d: Deny| match hashes.attestation_failure(sel) {
            Some((code, reason)) => d
                .with("attestation_code", code)
                .with("attestation_reason", reason),
            None => d,
        };
        let attest_deny = |code, message: String| {
            deny(
                rid,
                Some(rule),
                why(Deny::new(code, message).escalation(rule_escalation.clone())),
            )
        };
        let Some(registered) = hashes.registered_hash(sel) else {
            return attest_deny(
                DenyCode::DenyWorkerAttestationMissing,
                format!(
                    "Worker '{sel}' has no registered code hash. Register the worker with an attestation hash before enabling require_worker_attestation."
                ),
            );
        };
        if !is_pyhall_sha256(&registered) {
            return attest_deny(
                DenyCode::DenyWorkerAttestationInvalidHash,
                format!(
                    "Worker '{sel}' registered hash is not a valid SHA-256 digest. Re-register with a 64-character lowercase hex SHA-256 hash."
                ),
            );
        }
        let current = hashes.current_hash(sel).filter(|h| is_pyhall_sha256(h));
        let Some(current) = current else {
            return attest_deny(
                DenyCode::DenyWorkerHashUnavailable,
                format!(
                    "Worker '{sel}' current code hash could not be retrieved or is invalid. Verify the get_current_worker_hash implementation."
                ),
            );
        };
        if current != registered {
            let mut d = Deny::new(
                DenyCode::DenyWorkerTampered,
                format!("Worker '{sel}' code hash mismatch. Worker may have been modified after attestation. Re-attest the worker or investigate for tampering."),
            )
            .with("worker_species_id", sel)
            .escalation(rule_escalation);
            d = why(d);
            d.attestation_checked = true;
            d.attestation_valid = Some(false);
            return deny(rid, Some(rule), d);
        }
        attestation = (true, Some(true));
    }
    // Step 6.7: privilege envelope.
    let privilege_ran =
        has_ctrl(CTRL_PRIVILEGE_ENVELOPES_REQUIRED) || cfg.enforce_privilege_envelopes;
    if privilege_ran {
        let Some(check) = router.privilege else {
            return deny(
                rid,
                Some(rule),
                Deny::new(
                    DenyCode::DenyPrivilegeEnvelopeUnconfigured,
                    "ctrl.privilege_envelopes_required is set but privilege envelope callables were not provided. Pass registry_get_privilege_envelope and registry_policy_allows_privilege to make_decision().",
                )
                .escalation(rule_escalation),
            );
        };
        let verdict = check
            .envelope(sel)
            .and_then(|env| check.allows(input.env, input.data_label, env.as_ref()));
        match verdict {
            Err(_) => {
                return deny(
                    rid,
                    Some(rule),
                    Deny::new(
                        DenyCode::DenyInternalError,
                        "Privilege envelope check raised an exception.",
                    )
                    .escalation(rule_escalation),
                );
            }
            Ok((false, reason)) => {
                return deny(
                    rid,
                    Some(rule),
                    Deny::new(
                        DenyCode::DenyPrivilegeEnvelopeViolated,
                        format!(
                            "Worker privilege envelope denied for {}/{}: {reason}",
                            input.env, input.data_label
                        ),
                    )
                    .with("reason", reason)
                    .with("worker_species_id", sel)
                    .escalation(rule_escalation),
                );
            }
            Ok((true, _)) => {}
        }
    }

    // Allow: telemetry in PyHall's order.
    let dry_run = input.dry_run;
    let mut telemetry = Vec::with_capacity(6);
    if let Some(score) = blast_score {
        telemetry.push(TelemetryEvent::BlastScored {
            event_id: "evt.gov.blast_scored",
            timestamp: ctx.timestamp.clone(),
            correlation_id: events.correlation_id.clone(),
            tenant_id: events.tenant_id.clone(),
            env: input.env,
            data_label: input.data_label,
            policy_version: policy_version.clone(),
            blast_score: score,
            decision: "ALLOW",
            dry_run,
        });
    }
    if privilege_ran {
        telemetry.push(TelemetryEvent::PrivilegeEnvelopeChecked {
            event_id: "evt.gov.privilege_envelope.checked",
            timestamp: ctx.timestamp.clone(),
            correlation_id: events.correlation_id.clone(),
            tenant_id: events.tenant_id.clone(),
            env: input.env,
            data_label: input.data_label,
            policy_version: policy_version.clone(),
            worker_species_id: sel.to_owned(),
            decision: "ALLOW",
            dry_run,
        });
    }
    if !attestation.0 && input.env.is_production() {
        telemetry.push(TelemetryEvent::AttestationSkipped {
            event_id: "evt.os.worker.attestation_skipped",
            correlation_id: events.correlation_id.clone(),
            worker_species_id: sel.to_owned(),
            env: input.env,
            reason: "require_worker_attestation=False or hall_config=None",
            severity: "warn",
            dry_run,
        });
    }
    telemetry.push(TelemetryEvent::TaskRouted {
        event_id: "evt.os.task.routed",
        timestamp: ctx.timestamp.clone(),
        correlation_id: events.correlation_id.clone(),
        tenant_id: events.tenant_id.clone(),
        task_id: ctx.task_id.clone(),
        capability_id: events.capability_id.clone(),
        matched_rule_id: rid.to_owned(),
        selected_worker_species_id: sel.to_owned(),
        policy_version: policy_version.clone(),
        qos_class: input.qos_class,
        dry_run,
    });
    telemetry.push(TelemetryEvent::WorkerSelected {
        event_id: "evt.os.worker.selected",
        timestamp: ctx.timestamp.clone(),
        correlation_id: events.correlation_id.clone(),
        tenant_id: events.tenant_id.clone(),
        capability_id: events.capability_id.clone(),
        selected_worker_species_id: sel.to_owned(),
        reason: "first_available_candidate",
        dry_run,
    });
    telemetry.push(TelemetryEvent::PolicyGated {
        event_id: "evt.os.policy.gated",
        timestamp: ctx.timestamp.clone(),
        correlation_id: events.correlation_id,
        tenant_id: events.tenant_id,
        capability_id: events.capability_id,
        decision: "ALLOW",
        policy_version,
        reason: gate_reason,
        dry_run,
    });

    let mut out = base(rid, Some(rule));
    out.denied = false;
    out.selected_worker_species_id = Some(sel.to_owned());
    out.candidate_workers_ranked = candidates;
    out.recommended_profiles_effective = decision.recommended_profiles.clone();
    out.escalation_effective = rule_escalation;
    out.artifact_hash = Some(artifact_hash(input));
    out.worker_attestation_checked = attestation.0;
    out.worker_attestation_valid = attestation.1;
    out.telemetry_envelopes = telemetry;
    out
}

#[cfg(test)]
mod tests;
