//! Telemetry events (`evt.*`) the router attaches to every RouteDecision.
//!
//! Shapes, key order and event ids are PyHall's (pyhall-spec §1.2–1.3). Identifiers copied into
//! events from the caller (`correlation_id`, `tenant_id`, `capability_id`) pass through
//! [`sanitize`], which deletes C0 controls and DEL as PyHall does, so a value that slipped past
//! input validation (library callers build RouteInput directly) cannot forge an event line.

use serde::Serialize;

use super::decision::DenyCode;
use super::enums::{DataLabel, Env, QosClass};

fn is_false(b: &bool) -> bool {
    !*b
}

/// PyHall's telemetry sanitiser: delete `[\x00-\x1f\x7f]`.
pub fn sanitize(s: &str) -> String {
    s.chars()
        .filter(|c| !((*c as u32) < 0x20 || *c as u32 == 0x7f))
        .collect()
}

/// The fields every event of one decision shares.
#[derive(Debug, Clone)]
pub struct EventContext {
    pub timestamp: String,
    pub correlation_id: String,
    pub tenant_id: String,
    pub capability_id: String,
    pub dry_run: bool,
}

/// One telemetry event. Serialised untagged: each variant's fields appear in PyHall's order,
/// `event_id` first, and `dry_run: true` last only on dry runs.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum TelemetryEvent {
    /// `evt.os.task.denied`: the single event of every denied decision.
    TaskDenied {
        event_id: &'static str,
        timestamp: String,
        correlation_id: String,
        tenant_id: String,
        capability_id: String,
        deny_code: DenyCode,
        deny_message: String,
        matched_rule_id: String,
        #[serde(skip_serializing_if = "is_false")]
        dry_run: bool,
    },
    /// `evt.gov.blast_scored`: the blast gate ran and passed.
    BlastScored {
        event_id: &'static str,
        timestamp: String,
        correlation_id: String,
        tenant_id: String,
        env: Env,
        data_label: DataLabel,
        policy_version: String,
        blast_score: i64,
        decision: &'static str,
        #[serde(skip_serializing_if = "is_false")]
        dry_run: bool,
    },
    /// `evt.gov.privilege_envelope.checked`: the privilege envelope check ran and passed.
    PrivilegeEnvelopeChecked {
        event_id: &'static str,
        timestamp: String,
        correlation_id: String,
        tenant_id: String,
        env: Env,
        data_label: DataLabel,
        policy_version: String,
        worker_species_id: String,
        decision: &'static str,
        #[serde(skip_serializing_if = "is_false")]
        dry_run: bool,
    },
    /// `evt.os.worker.attestation_skipped`: prod/edge allow without attestation (a warning).
    AttestationSkipped {
        event_id: &'static str,
        correlation_id: String,
        worker_species_id: String,
        env: Env,
        reason: &'static str,
        severity: &'static str,
        #[serde(skip_serializing_if = "is_false")]
        dry_run: bool,
    },
    /// `evt.os.task.routed`.
    TaskRouted {
        event_id: &'static str,
        timestamp: String,
        correlation_id: String,
        tenant_id: String,
        task_id: String,
        capability_id: String,
        matched_rule_id: String,
        selected_worker_species_id: String,
        policy_version: String,
        qos_class: QosClass,
        #[serde(skip_serializing_if = "is_false")]
        dry_run: bool,
    },
    /// `evt.os.worker.selected`.
    WorkerSelected {
        event_id: &'static str,
        timestamp: String,
        correlation_id: String,
        tenant_id: String,
        capability_id: String,
        selected_worker_species_id: String,
        reason: &'static str,
        #[serde(skip_serializing_if = "is_false")]
        dry_run: bool,
    },
    /// `evt.os.policy.gated`.
    PolicyGated {
        event_id: &'static str,
        timestamp: String,
        correlation_id: String,
        tenant_id: String,
        capability_id: String,
        decision: &'static str,
        policy_version: String,
        reason: &'static str,
        #[serde(skip_serializing_if = "is_false")]
        dry_run: bool,
    },
}

impl TelemetryEvent {
    /// The event's `evt.*` id.
    pub fn event_id(&self) -> &'static str {
        match self {
            TelemetryEvent::TaskDenied { event_id, .. }
            | TelemetryEvent::BlastScored { event_id, .. }
            | TelemetryEvent::PrivilegeEnvelopeChecked { event_id, .. }
            | TelemetryEvent::AttestationSkipped { event_id, .. }
            | TelemetryEvent::TaskRouted { event_id, .. }
            | TelemetryEvent::WorkerSelected { event_id, .. }
            | TelemetryEvent::PolicyGated { event_id, .. } => event_id,
        }
    }

    pub fn task_denied(
        ctx: &EventContext,
        code: DenyCode,
        message: &str,
        matched_rule_id: &str,
    ) -> Self {
        TelemetryEvent::TaskDenied {
            event_id: "evt.os.task.denied",
            timestamp: ctx.timestamp.clone(),
            correlation_id: ctx.correlation_id.clone(),
            tenant_id: ctx.tenant_id.clone(),
            capability_id: ctx.capability_id.clone(),
            deny_code: code,
            deny_message: message.to_owned(),
            matched_rule_id: matched_rule_id.to_owned(),
            dry_run: ctx.dry_run,
        }
    }
}
