//! [`HallGate`]: the policy gate the router consults. For each environment it holds the
//! selected [`Profile`] and the [`PolicyStore`] of the profile's policy set, and decides a
//! dispatch by combining
//! 1. the WCP blast check (chain total against the profile's maximum for the env, or the
//!    profile's rule for workers that declare no blast radius), and
//! 2. the Cedar verdict of the profile's policy set,
//!
//! with [`Outcome::combine`]: DENY from either wins, then REQUIRE_HUMAN at the higher level, then
//! ALLOW. An env with no selected profile is denied (fail closed).
//!
//! Two router adapters: `HallGate` itself implements the router's `PolicyGate` from the
//! `GateContext`'s RouteInput facts alone (tenant, capability, env, label, risk, QoS, dry run,
//! PyHall's blast score): it has no registry to look up the selected worker, so there the WCP
//! blast check is "not assessed". [`RequestGate`], what the daemon routes with, adds the
//! caller's kernel identity, the selected worker's registry facts and the chain's blast so far,
//! and keeps the full [`GateDecision`] for the decision and the receipt. Both hand the
//! supervisor level to the router as `GateAnswer::supervisor_level`. [`HallGate::decide`] is
//! the full API.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;

use super::SupervisorLevel;
use super::blast::BlastAssessment;
use super::engine::{EvalError, Outcome, PolicyEngine, PolicyStore, ReloadReport, Verdict};
use super::profile::{EnvProfiles, Profile};
use super::request::PolicyRequest;
use super::source::PolicyLoadError;
use crate::router::{GateAnswer, GateContext, GateError, PolicyGate};
use crate::wcp::{Env, RouteInput};

/// The policy version reported when no policy set answered (no profile for the env).
pub const NO_POLICY_VERSION: &str = "none";

/// Where a reason comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReasonSource {
    /// A Cedar policy (`id` is its `@id`).
    Policy,
    /// The profile's blast rules (`id` is the profile id).
    Profile,
    /// The gate itself (no profile selected, evaluation errors).
    Gate,
}

/// One reason in a gate decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GateReason {
    pub source: ReasonSource,
    pub id: String,
    pub message: String,
    /// What this source alone would have answered.
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// The gate's full answer, for the RouteDecision and the evidence receipt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GateDecision {
    #[serde(flatten)]
    pub outcome: Outcome,
    pub policy_version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile_digest: Option<String>,
    /// Every source that spoke: the determining Cedar policies and the blast check.
    pub reasons: Vec<GateReason>,
    pub blast: BlastAssessment,
    /// One line explaining the outcome (what `GateAnswer::reason` carries).
    pub summary: String,
}

impl GateDecision {
    /// The router's answer type.
    ///
    /// `advisory` does not block (WCP §5.8: a human is notified and execution proceeds), so it
    /// is answered ALLOW with the advisory in the reason; the full decision, with the level,
    /// stays available to the caller for the decision and the receipt.
    pub fn to_gate_answer(&self) -> GateAnswer {
        match self.supervisor_level() {
            Some(level) if !level.blocks_execution() => GateAnswer {
                decision: "ALLOW".to_owned(),
                policy_version: self.policy_version.clone(),
                reason: format!("advisory (execution proceeds): {}", self.summary),
                supervisor_level: Some(level.as_str().to_owned()),
            },
            level => GateAnswer {
                decision: self.outcome.decision().to_owned(),
                policy_version: self.policy_version.clone(),
                reason: self.summary.clone(),
                supervisor_level: level.map(|l| l.as_str().to_owned()),
            },
        }
    }

    /// The supervisor level of a REQUIRE_HUMAN.
    pub fn supervisor_level(&self) -> Option<SupervisorLevel> {
        self.outcome.supervisor_level()
    }
}

#[derive(Debug)]
struct EnvGate {
    profile: Arc<Profile>,
    store: Arc<PolicyStore>,
}

/// The policy gate: per-env profile and policy set.
#[derive(Debug, Default)]
pub struct HallGate {
    by_env: [Option<EnvGate>; 4],
    stores: BTreeMap<PathBuf, Arc<PolicyStore>>,
}

impl HallGate {
    /// Opens the policy set of every selected profile (each distinct set once). Any set that
    /// fails to load fails the whole gate: the Hall must not start with a hole in its policy.
    pub fn load(profiles: &EnvProfiles) -> Result<Self, PolicyLoadError> {
        let mut gate = HallGate::default();
        for (env, profile) in profiles.iter() {
            let store = match gate.stores.get(&profile.policy_set) {
                Some(s) => Arc::clone(s),
                None => {
                    let s = Arc::new(PolicyStore::open(&profile.policy_set)?);
                    gate.stores
                        .insert(profile.policy_set.clone(), Arc::clone(&s));
                    s
                }
            };
            gate.by_env[env.index()] = Some(EnvGate {
                profile: Arc::clone(profile),
                store,
            });
        }
        Ok(gate)
    }

    /// A gate from parts (tests, or a daemon managing its own stores).
    pub fn from_parts(
        parts: impl IntoIterator<Item = (Env, Arc<Profile>, Arc<PolicyStore>)>,
    ) -> Self {
        let mut gate = HallGate::default();
        for (env, profile, store) in parts {
            gate.stores
                .entry(profile.policy_set.clone())
                .or_insert_with(|| Arc::clone(&store));
            gate.by_env[env.index()] = Some(EnvGate { profile, store });
        }
        gate
    }

    /// The profile selected for `env`.
    pub fn profile(&self, env: Env) -> Option<&Arc<Profile>> {
        self.by_env[env.index()].as_ref().map(|g| &g.profile)
    }

    /// Whether the profile for `env` wants the gate on every dispatch. An env without a profile
    /// answers `true`: the gate then denies, which is the fail-closed answer.
    pub fn gates_every_dispatch(&self, env: Env) -> bool {
        self.profile(env).is_none_or(|p| p.gate_every_dispatch)
    }

    /// Reloads every policy set. Each result says whether that set changed; a set that fails
    /// keeps its previous version active.
    pub fn reload(&self) -> Vec<(PathBuf, Result<ReloadReport, PolicyLoadError>)> {
        self.stores
            .iter()
            .map(|(path, store)| (path.clone(), store.reload()))
            .collect()
    }

    /// Decides one dispatch.
    pub fn decide(&self, req: &PolicyRequest) -> Result<GateDecision, EvalError> {
        let Some(g) = &self.by_env[req.env.index()] else {
            let message = format!(
                "no profile is selected for env {}; add it to [profiles] in hall.toml",
                req.env
            );
            return Ok(GateDecision {
                outcome: Outcome::Deny,
                policy_version: NO_POLICY_VERSION.to_owned(),
                profile_id: None,
                profile_digest: None,
                reasons: vec![GateReason {
                    source: ReasonSource::Gate,
                    id: "gate.no-profile".to_owned(),
                    message: message.clone(),
                    outcome: Outcome::Deny,
                }],
                blast: BlastAssessment::NotAssessed,
                summary: message,
            });
        };
        let blast = BlastAssessment::assess(
            &g.profile.blast,
            req.env,
            req.worker.as_ref().map(|w| w.blast.as_ref()),
            req.chain_blast_prior,
        );
        let verdict = g.store.evaluate(req)?;
        Ok(combine(&g.profile, req.env, verdict, blast))
    }
}

fn combine(profile: &Profile, env: Env, verdict: Verdict, blast: BlastAssessment) -> GateDecision {
    let blast_outcome = blast.outcome();
    let outcome = verdict.outcome.combine(blast_outcome);
    let mut reasons: Vec<GateReason> = verdict
        .determining
        .iter()
        .map(|d| GateReason {
            source: ReasonSource::Policy,
            id: d.policy_id.clone(),
            message: d.reason.clone(),
            outcome: match (d.effect, d.require_human) {
                (super::engine::Effect::Forbid, _) => Outcome::Deny,
                (_, Some(l)) => Outcome::RequireHuman(l),
                (_, None) => Outcome::Allow,
            },
        })
        .collect();
    if !verdict.errors.is_empty() {
        reasons.push(GateReason {
            source: ReasonSource::Gate,
            id: "gate.evaluation-error".to_owned(),
            message: verdict.summary(),
            outcome: Outcome::Deny,
        });
    }
    let blast_message = blast.message(env);
    if let Some(m) = &blast_message {
        reasons.push(GateReason {
            source: ReasonSource::Profile,
            id: profile.id.clone(),
            message: m.clone(),
            outcome: blast_outcome,
        });
    }
    let is_human = |o: Outcome| matches!(o, Outcome::RequireHuman(_));
    let verdict_speaks = match outcome {
        Outcome::Allow => true,
        Outcome::Deny => verdict.outcome == Outcome::Deny,
        Outcome::RequireHuman(_) => is_human(verdict.outcome),
    };
    let blast_speaks = blast_message.is_some()
        && match outcome {
            Outcome::Allow => false,
            Outcome::Deny => blast_outcome == Outcome::Deny,
            Outcome::RequireHuman(_) => is_human(blast_outcome),
        };
    let blast_part = blast_message
        .filter(|_| blast_speaks)
        .map(|m| format!("{}: {m}", profile.id));
    let summary = match outcome {
        Outcome::RequireHuman(level) => {
            let mut parts: Vec<String> = Vec::new();
            if verdict_speaks {
                parts.extend(
                    verdict
                        .determining
                        .iter()
                        .filter(|d| d.require_human.is_some())
                        .map(|d| format!("{}: {}", d.policy_id, d.reason)),
                );
            }
            parts.extend(blast_part);
            format!("{level} review required by {}", parts.join("; "))
        }
        _ => {
            let mut parts = Vec::new();
            if verdict_speaks {
                parts.push(verdict.summary());
            }
            parts.extend(blast_part);
            parts.join("; ")
        }
    };
    GateDecision {
        outcome,
        policy_version: verdict.policy_version,
        profile_id: Some(profile.id.clone()),
        profile_digest: Some(profile.digest.clone()),
        reasons,
        blast,
        summary,
    }
}

impl PolicyRequest {
    /// The RouteInput facts of a request (no caller, worker or chain yet; the router adds them).
    pub fn from_route_input(input: &RouteInput) -> Self {
        let mut req = PolicyRequest::new(
            input.tenant_id.clone(),
            input.capability_id.clone(),
            input.env,
            input.data_label,
            input.tenant_risk,
            input.qos_class,
        );
        req.dry_run = input.dry_run;
        req
    }

    /// The facts the router's `GateContext` carries (`RequestGate` adds the caller, the
    /// worker's registry facts and the chain's blast).
    pub fn from_gate_context(ctx: &GateContext<'_>) -> Self {
        let mut req = PolicyRequest::new(
            ctx.tenant_id,
            ctx.capability_id,
            ctx.env,
            ctx.data_label,
            ctx.tenant_risk,
            ctx.qos_class,
        );
        req.dry_run = ctx.dry_run;
        req.pyhall_blast_score = ctx.pyhall_blast_score;
        req
    }
}

impl PolicyGate for HallGate {
    fn evaluate(&self, ctx: &GateContext<'_>) -> Result<GateAnswer, GateError> {
        self.decide(&PolicyRequest::from_gate_context(ctx))
            .map(|d| d.to_gate_answer())
            .map_err(|e| GateError(e.to_string()))
    }
}

/// The router's gate for one request: the Hall's gate plus what only the caller of the router
/// knows — the caller's kernel identity, the selected worker's registry facts and the chain's
/// blast so far. It keeps the full [`GateDecision`] (reasons, level, profile, blast) so the
/// decision and the evidence receipt can carry it.
pub struct RequestGate<'a> {
    pub gate: &'a HallGate,
    pub registry: &'a crate::registry::Registry,
    pub caller: Option<super::request::CallerIdentity>,
    pub chain_blast_prior: u32,
    decision: std::sync::Mutex<Option<GateDecision>>,
}

impl<'a> RequestGate<'a> {
    pub fn new(
        gate: &'a HallGate,
        registry: &'a crate::registry::Registry,
        caller: Option<super::request::CallerIdentity>,
        chain_blast_prior: u32,
    ) -> Self {
        RequestGate {
            gate,
            registry,
            caller,
            chain_blast_prior,
            decision: std::sync::Mutex::new(None),
        }
    }

    /// The gate's full decision, if the router consulted it.
    pub fn decision(&self) -> Option<GateDecision> {
        self.decision
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl PolicyGate for RequestGate<'_> {
    fn evaluate(&self, ctx: &GateContext<'_>) -> Result<GateAnswer, GateError> {
        let mut req = PolicyRequest::from_gate_context(ctx);
        req.caller = self.caller;
        req.chain_blast_prior = self.chain_blast_prior;
        req.worker = ctx
            .selected_worker_species
            .and_then(|s| self.registry.records_of(s).next())
            .map(super::request::WorkerFacts::from_record);
        let decision = self
            .gate
            .decide(&req)
            .map_err(|e| GateError(e.to_string()))?;
        let answer = decision.to_gate_answer();
        *self.decision.lock().unwrap_or_else(|p| p.into_inner()) = Some(decision);
        Ok(answer)
    }
}

/// The router adapter for a single engine (no profile, no blast check): Cedar's verdict only.
pub struct EngineGate<E: PolicyEngine>(pub E);

impl<E: PolicyEngine> PolicyGate for EngineGate<E> {
    fn evaluate(&self, ctx: &GateContext<'_>) -> Result<GateAnswer, GateError> {
        let v = self
            .0
            .evaluate(&PolicyRequest::from_gate_context(ctx))
            .map_err(|e| GateError(e.to_string()))?;
        Ok(GateAnswer {
            decision: v.outcome.decision().to_owned(),
            reason: v.summary(),
            supervisor_level: v.outcome.supervisor_level().map(|l| l.as_str().to_owned()),
            policy_version: v.policy_version,
        })
    }
}

#[cfg(test)]
mod tests;
