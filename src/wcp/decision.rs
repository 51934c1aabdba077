//! RouteDecision (WCP §4.2) and its parts, shaped and ordered exactly as PyHall emits them.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::enums::{DataLabel, Env, QosClass, TenantRisk};
use super::telemetry::TelemetryEvent;

/// Declares [`DenyCode`] from one list: the variants, their wire strings, [`DenyCode::ALL`]
/// and [`DenyCode::index`] cannot drift apart.
macro_rules! deny_codes {
    ($($variant:ident => $wire:literal,)+) => {
        /// Every reason the Hall denies a request, serialised to PyHall's strings.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum DenyCode {
            $(#[serde(rename = $wire)] $variant,)+
        }

        impl DenyCode {
            /// Every code, in declaration order: the closed vocabulary (the Hall's metrics count
            /// each one from zero).
            pub const ALL: &'static [DenyCode] = &[$(DenyCode::$variant,)+];

            /// The code's position in [`DenyCode::ALL`].
            pub const fn index(self) -> usize {
                self as usize
            }

            /// The wire string, e.g. `DENY_NO_MATCHING_RULE`.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(DenyCode::$variant => $wire,)+
                }
            }
        }
    };
}

deny_codes! {
    DenyUnknownTenant => "DENY_UNKNOWN_TENANT",
    DenyMissingTenantId => "DENY_MISSING_TENANT_ID",
    DenyInvalidInput => "DENY_INVALID_INPUT",
    DenyShadowRulesDetected => "DENY_SHADOW_RULES_DETECTED",
    DenyNoMatchingRule => "DENY_NO_MATCHING_RULE",
    DenyMissingCorrelationId => "DENY_MISSING_CORRELATION_ID",
    DenyMissingRequiredControls => "DENY_MISSING_REQUIRED_CONTROLS",
    DenyRequiresHuman => "DENY_REQUIRES_HUMAN",
    DenyPolicyGateUnconfigured => "DENY_POLICY_GATE_UNCONFIGURED",
    DenyInternalError => "DENY_INTERNAL_ERROR",
    DenyPolicyGate => "DENY_POLICY_GATE",
    DenyRequiresHumanApproval => "DENY_REQUIRES_HUMAN_APPROVAL",
    DenyPolicyGateInvalidResponse => "DENY_POLICY_GATE_INVALID_RESPONSE",
    DenyNoAvailableWorker => "DENY_NO_AVAILABLE_WORKER",
    DenyAttestationUnconfigured => "DENY_ATTESTATION_UNCONFIGURED",
    DenyWorkerAttestationMissing => "DENY_WORKER_ATTESTATION_MISSING",
    DenyWorkerAttestationInvalidHash => "DENY_WORKER_ATTESTATION_INVALID_HASH",
    DenyWorkerHashUnavailable => "DENY_WORKER_HASH_UNAVAILABLE",
    DenyWorkerTampered => "DENY_WORKER_TAMPERED",
    DenyPrivilegeEnvelopeUnconfigured => "DENY_PRIVILEGE_ENVELOPE_UNCONFIGURED",
    DenyPrivilegeEnvelopeViolated => "DENY_PRIVILEGE_ENVELOPE_VIOLATED",
    // The registry service gate (docs/registry-service.md); never produced by the router.
    DenyWorkerBanned => "DENY_WORKER_BANNED",
    DenyWorkerRevoked => "DENY_WORKER_REVOKED",
    DenyRegistryStatusStale => "DENY_REGISTRY_STATUS_STALE",
}

impl std::fmt::Display for DenyCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `deny_reason_if_denied`: `{code, message, …extras}` with the extras flattened in, as PyHall does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DenyReason {
    pub code: DenyCode,
    pub message: String,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `escalation_effective`, with PyHall's defaults for absent keys.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Escalation {
    pub policy_gate: bool,
    pub msavx_step_up: bool,
    pub human_required_default: bool,
    pub human_required_if: Vec<String>,
    pub rationale: Option<String>,
}

/// `preconditions_checked`, with PyHall's defaults. Only `must_have_correlation_id` and
/// `deny_if_missing_required_controls` change a decision; the rest are echoed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Preconditions {
    pub must_have_correlation_id: bool,
    pub must_attach_policy_version: bool,
    pub must_record_artifact_hash_if_executes: bool,
    pub deny_if_missing_required_controls: bool,
    pub deny_if_unsigned_artifact_in_prod: bool,
    pub deny_if_no_attestation_in_prod: bool,
}

impl Preconditions {
    /// The names of the six flags, for validation messages.
    pub const NAMES: &'static [&'static str] = &[
        "must_have_correlation_id",
        "must_attach_policy_version",
        "must_record_artifact_hash_if_executes",
        "deny_if_missing_required_controls",
        "deny_if_unsigned_artifact_in_prod",
        "deny_if_no_attestation_in_prod",
    ];

    /// Sets one flag by name; false if the name is unknown.
    pub fn set(&mut self, name: &str, value: bool) -> bool {
        let slot = match name {
            "must_have_correlation_id" => &mut self.must_have_correlation_id,
            "must_attach_policy_version" => &mut self.must_attach_policy_version,
            "must_record_artifact_hash_if_executes" => {
                &mut self.must_record_artifact_hash_if_executes
            }
            "deny_if_missing_required_controls" => &mut self.deny_if_missing_required_controls,
            "deny_if_unsigned_artifact_in_prod" => &mut self.deny_if_unsigned_artifact_in_prod,
            "deny_if_no_attestation_in_prod" => &mut self.deny_if_no_attestation_in_prod,
            _ => return false,
        };
        *slot = value;
        true
    }
}

impl Default for Preconditions {
    fn default() -> Self {
        Preconditions {
            must_have_correlation_id: true,
            must_attach_policy_version: true,
            must_record_artifact_hash_if_executes: true,
            deny_if_missing_required_controls: true,
            deny_if_unsigned_artifact_in_prod: false,
            deny_if_no_attestation_in_prod: false,
        }
    }
}

/// Why a ranked candidate was not selected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// Not enrolled / not available (PyHall's only "not available" reason).
    Unavailable,
    /// An earlier candidate was selected.
    AlreadySelected,
    /// Per-worker control scope only: the worker's record does not implement the rule's controls.
    MissingControls,
    /// Per-worker control scope only: the worker's record does not allow this env.
    EnvNotAllowed,
}

/// One evaluated entry of `candidate_workers_ranked`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CandidateWorker {
    pub worker_species_id: String,
    pub score_hint: Option<f64>,
    /// Always null: PyHall carries the field but never fills it.
    pub requires_controls_minimum: Option<Vec<String>>,
    pub skip_reason: Option<SkipReason>,
}

/// The PRE_ROUTING / NO_MATCH pseudo rule ids PyHall uses before a rule matched.
pub const PRE_ROUTING: &str = "PRE_ROUTING";
/// See [`PRE_ROUTING`].
pub const NO_MATCH: &str = "NO_MATCH";

/// The router's answer, field for field and in PyHall's key order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RouteDecision {
    pub decision_id: String,
    pub timestamp: String,
    pub correlation_id: String,
    pub tenant_id: String,
    pub capability_id: String,
    pub matched_rule_id: String,
    pub env: Env,
    pub data_label: DataLabel,
    pub tenant_risk: TenantRisk,
    pub qos_class: QosClass,
    pub denied: bool,
    pub deny_reason_if_denied: Option<DenyReason>,
    pub selected_worker_species_id: Option<String>,
    pub candidate_workers_ranked: Vec<CandidateWorker>,
    pub required_controls_effective: Vec<String>,
    pub recommended_profiles_effective: Vec<Value>,
    pub escalation_effective: Escalation,
    pub preconditions_checked: Preconditions,
    pub artifact_hash: Option<String>,
    pub worker_attestation_checked: bool,
    pub worker_attestation_valid: Option<bool>,
    pub dry_run: bool,
    pub telemetry_envelopes: Vec<TelemetryEvent>,
}

impl RouteDecision {
    /// The deny code, if denied.
    pub fn deny_code(&self) -> Option<DenyCode> {
        self.deny_reason_if_denied.as_ref().map(|r| r.code)
    }
}

#[cfg(test)]
mod tests {
    use super::DenyCode;

    #[test]
    fn all_lists_every_code_once_at_its_index() {
        for (i, code) in DenyCode::ALL.iter().enumerate() {
            assert_eq!(code.index(), i, "{code}");
        }
        let wire: std::collections::BTreeSet<&str> =
            DenyCode::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(wire.len(), DenyCode::ALL.len());
        // The serde name is the wire string.
        for code in DenyCode::ALL {
            assert_eq!(
                serde_json::to_value(code).unwrap(),
                serde_json::Value::from(code.as_str())
            );
        }
    }
}
