//! [`Registry`]: an immutable routing snapshot of the enrolled records, and the router traits it
//! answers ([`RegistryView`], [`WorkerHashes`], [`PrivilegeCheck`]).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::is_pyhall_control_id;
use super::record::RegistryRecord;
use crate::router::{CandidateStatus, PrivilegeCheck, RegistryView, WorkerHashes};
use crate::rules::Rule;
use crate::wcp::{DataLabel, Env};

/// Whose controls satisfy a rule's `required_controls` when a candidate is selected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ControlsScope {
    /// PyHall: one global set of controls; any enrolled worker's claim satisfies any rule, and a
    /// species is selectable whenever any record of it is enrolled.
    Global,
    /// The Hall's default: the selected worker's own record must implement the rule's controls
    /// and allow the request's env.
    #[default]
    PerWorker,
}

/// Reason reported by [`PrivilegeCheck::allows`] when the species declares no envelope.
pub const REASON_NO_ENVELOPE: &str = "no_privilege_envelope_declared";
/// Reason reported when a worker with egress is asked to handle RESTRICTED data in prod/edge.
pub const REASON_RESTRICTED_EGRESS: &str = "egress_not_allowed_for_restricted_in_production";
/// Reason reported when the envelope is acceptable.
pub const REASON_ENVELOPE_DECLARED: &str = "envelope_declared";

/// An immutable view of the enrolled records for routing. Records keep the order they were given
/// in (file name order when built by [`super::RegistryDir::snapshot`]); "the record of a species"
/// below means its first record in that order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registry {
    scope: ControlsScope,
    records: Vec<RegistryRecord>,
    /// Union of every record's valid `currently_implements`.
    controls: BTreeSet<String>,
    /// Species → indices into `records`, in record order.
    species: BTreeMap<String, Vec<usize>>,
}

/// What is enrolled, for display and health checks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistrySummary {
    /// Number of enrolled records.
    pub enrolled_workers: usize,
    /// Sorted, deduplicated species with at least one record.
    pub available_species: Vec<String>,
    /// Sorted union of the controls implemented by any record.
    pub controls_present: Vec<String>,
    /// Capability → sorted, deduplicated species declaring it.
    pub capabilities_mapped: BTreeMap<String, Vec<String>>,
}

impl Registry {
    /// Builds a snapshot. Records are taken as given: build them with
    /// [`RegistryRecord::from_json_str`] (or load a [`super::RegistryDir`]) so they are
    /// validated. Control ids failing [`is_pyhall_control_id`] are ignored regardless.
    pub fn new(records: Vec<RegistryRecord>, scope: ControlsScope) -> Self {
        let mut controls = BTreeSet::new();
        let mut species: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (i, r) in records.iter().enumerate() {
            controls.extend(
                r.currently_implements
                    .iter()
                    .filter(|c| is_pyhall_control_id(c))
                    .cloned(),
            );
            species
                .entry(r.worker_species_id.clone())
                .or_default()
                .push(i);
        }
        Registry {
            scope,
            records,
            controls,
            species,
        }
    }

    /// The controls scope this snapshot routes with.
    pub fn scope(&self) -> ControlsScope {
        self.scope
    }

    /// Every record, in the order given.
    pub fn records(&self) -> &[RegistryRecord] {
        &self.records
    }

    /// The union of every record's (valid) `currently_implements`.
    pub fn controls_present(&self) -> &BTreeSet<String> {
        &self.controls
    }

    /// The records of one species, in order.
    pub fn records_of<'a>(
        &'a self,
        species: &str,
    ) -> impl Iterator<Item = &'a RegistryRecord> + 'a {
        self.species
            .get(species)
            .into_iter()
            .flatten()
            .filter_map(|&i| self.records.get(i))
    }

    fn first_of(&self, species: &str) -> Option<&RegistryRecord> {
        self.records_of(species).next()
    }

    /// What is enrolled.
    pub fn summary(&self) -> RegistrySummary {
        let mut caps: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for r in &self.records {
            for c in &r.capabilities {
                caps.entry(c.clone())
                    .or_default()
                    .insert(r.worker_species_id.clone());
            }
        }
        RegistrySummary {
            enrolled_workers: self.records.len(),
            available_species: self.species.keys().cloned().collect(),
            controls_present: self.controls.iter().cloned().collect(),
            capabilities_mapped: caps
                .into_iter()
                .map(|(c, s)| (c, s.into_iter().collect()))
                .collect(),
        }
    }
}

/// Whether `record` implements every control in `required`.
fn implements_all(record: &RegistryRecord, required: &[String]) -> bool {
    required.iter().all(|c| {
        is_pyhall_control_id(c) && record.currently_implements.iter().any(|have| have == c)
    })
}

/// Whether `record` may run in `env` (an empty list allows every env).
fn allows_env(record: &RegistryRecord, env: Env) -> bool {
    record.allowed_environments.is_empty() || record.allowed_environments.contains(&env)
}

impl RegistryView for Registry {
    /// The global union in both scopes, so the router's required-controls step still reports
    /// controls that no enrolled worker implements (`DENY_MISSING_REQUIRED_CONTROLS`).
    fn has_control(&self, control_id: &str) -> bool {
        self.controls.contains(control_id)
    }

    fn candidate_status(&self, species: &str, rule: &Rule, env: Env) -> CandidateStatus {
        let mut records = self.records_of(species).peekable();
        if records.peek().is_none() {
            return CandidateStatus::Unavailable;
        }
        match self.scope {
            ControlsScope::Global => CandidateStatus::Available,
            ControlsScope::PerWorker => {
                let required = &rule.decision.required_controls;
                let mut env_excluded = false;
                for r in records {
                    if !implements_all(r, required) {
                        continue;
                    }
                    if allows_env(r, env) {
                        return CandidateStatus::Available;
                    }
                    env_excluded = true;
                }
                if env_excluded {
                    CandidateStatus::EnvNotAllowed
                } else {
                    CandidateStatus::MissingControls
                }
            }
        }
    }
}

impl WorkerHashes for Registry {
    /// `attestation.code_hash` of the species' first record.
    fn registered_hash(&self, species: &str) -> Option<String> {
        self.first_of(species)?
            .attestation
            .as_ref()?
            .code_hash
            .clone()
    }

    /// Always `None` until package hashing exists (the attestation work): with
    /// `require_worker_attestation` every dispatch is then denied with
    /// `DENY_WORKER_HASH_UNAVAILABLE` (or `DENY_WORKER_ATTESTATION_MISSING` for a worker without
    /// a registered hash), i.e. the Hall fails closed rather than trusting an unchecked worker.
    fn current_hash(&self, _species: &str) -> Option<String> {
        None
    }
}

impl PrivilegeCheck for Registry {
    /// The species' first record's `privilege_envelope`, as JSON (`None` when not declared or the
    /// species is unknown).
    fn envelope(&self, species: &str) -> Result<Option<Value>, String> {
        let Some(envelope) = self
            .first_of(species)
            .and_then(|r| r.privilege_envelope.as_ref())
        else {
            return Ok(None);
        };
        serde_json::to_value(envelope)
            .map(Some)
            .map_err(|e| format!("cannot serialise privilege envelope of {species}: {e}"))
    }

    /// A real but deliberately small policy (PyHall's is a stub that allows nearly everything):
    /// - no envelope declared → deny ([`REASON_NO_ENVELOPE`]): a worker that does not say what it
    ///   touches cannot be checked;
    /// - prod/edge with RESTRICTED data and any `network_egress` other than `"none"` → deny
    ///   ([`REASON_RESTRICTED_EGRESS`]): restricted production data must not leave through a
    ///   worker that can open connections;
    /// - otherwise allow ([`REASON_ENVELOPE_DECLARED`]).
    ///
    /// An envelope that is not a JSON object is an error (the router denies with
    /// `DENY_INTERNAL_ERROR`); `null` counts as "not declared".
    fn allows(
        &self,
        env: Env,
        label: DataLabel,
        envelope: Option<&Value>,
    ) -> Result<(bool, String), String> {
        let obj = match envelope {
            None | Some(Value::Null) => return Ok((false, REASON_NO_ENVELOPE.to_owned())),
            Some(Value::Object(obj)) => obj,
            Some(_) => return Err("privilege envelope is not a JSON object".to_owned()),
        };
        let no_egress = obj
            .get("network_egress")
            .and_then(Value::as_str)
            .is_some_and(|s| s == super::NetworkEgress::NONE);
        if env.is_production() && label == DataLabel::Restricted && !no_egress {
            return Ok((false, REASON_RESTRICTED_EGRESS.to_owned()));
        }
        Ok((true, REASON_ENVELOPE_DECLARED.to_owned()))
    }
}
