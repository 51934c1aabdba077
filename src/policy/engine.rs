//! The [`PolicyEngine`] trait and its Cedar implementation.
//!
//! # From Cedar's answer to a WCP verdict
//! Cedar answers Allow or Deny with the ids of the *determining* policies (default deny, forbid
//! overrides permit). The Hall maps that to three outcomes with the `@require_human(level)`
//! annotation convention (ecosystem.md §5.3):
//! - any policy evaluation error → **DENY** (fail closed: Cedar skips an erroring policy, which
//!   for a `forbid` would mean allowing);
//! - Deny → **DENY**, with the forbids that determined it, or "no permit matched (default deny)";
//! - Allow where a determining permit carries `@require_human` → **REQUIRE_HUMAN** at the highest
//!   level any of them asks for (another permit matching too does not waive the review);
//! - any other Allow → **ALLOW**.
//!
//! A human approval can never override a `forbid`: forbids win before annotations are looked at.
//!
//! # Cost
//! Cedar evaluates every policy it is given, so the engine gives it only those that can apply
//! to the request's (env, data_label, tenant_risk, qos_class) cell, decided once at load from the
//! policies' leading tests ([`super::partition`] explains why that cannot change a verdict).
//! Per request the engine builds a Cedar context of scalars and entity references from typed
//! values (no JSON), and looks up the entity store (the capability with its prefix groups, the
//! selected worker with its registry facts) in a bounded cache keyed by worker facts and
//! capability; the tenant entity is not materialised (it has no attributes). Requests are not
//! re-validated against the schema per call: the schema was checked at load to accept exactly
//! what the engine builds (`source::probe_schema`). See BENCHMARKS.md.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, RwLock};

use cedar_policy::{
    Authorizer, Context, Decision, Entities, Entity, EntityId, EntityTypeName, EntityUid,
    PolicySet, Request, RestrictedExpression,
};
use serde::Serialize;

use super::SupervisorLevel;
use super::golden::{self, GoldenReport};
use super::partition::{Partition, cell};
use super::request::{EnvelopeSummary, PolicyRequest, WorkerFacts};
use super::source::{
    ACTION_TYPE, CAPABILITY_GROUP_TYPE, CAPABILITY_TYPE, CompiledPolicySet, DISPATCH_ACTION,
    PolicyLoadError, PolicySetSources, TENANT_TYPE, compile, read_sources,
};

/// The reason given when no permit matched.
pub const DEFAULT_DENY_REASON: &str = "no permit matched (default deny)";

/// At most this many capability groups are derived from one capability id (WCP ids have at
/// most 4 segments, so 2 groups; the bound only stops hostile ids).
pub const MAX_CAPABILITY_GROUPS: usize = 8;

/// At most this many capabilities keep a cached entity store; beyond it stores are built per
/// request (correct, only slower).
pub const ENTITY_CACHE_CAPACITY: usize = 4096;

/// A policy's effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Effect {
    Permit,
    Forbid,
}

/// The gate's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    Allow,
    Deny,
    RequireHuman(SupervisorLevel),
}

impl Outcome {
    /// `"ALLOW"`, `"DENY"` or `"REQUIRE_HUMAN"`: the router's `GateAnswer::decision`.
    pub fn decision(self) -> &'static str {
        match self {
            Outcome::Allow => "ALLOW",
            Outcome::Deny => "DENY",
            Outcome::RequireHuman(_) => "REQUIRE_HUMAN",
        }
    }

    /// The supervisor level of a REQUIRE_HUMAN.
    pub fn supervisor_level(self) -> Option<SupervisorLevel> {
        match self {
            Outcome::RequireHuman(l) => Some(l),
            _ => None,
        }
    }

    /// Combines two independent answers: DENY dominates, then REQUIRE_HUMAN at the higher level,
    /// then ALLOW.
    pub fn combine(self, other: Outcome) -> Outcome {
        match (self, other) {
            (Outcome::Deny, _) | (_, Outcome::Deny) => Outcome::Deny,
            (Outcome::RequireHuman(a), Outcome::RequireHuman(b)) => Outcome::RequireHuman(a.max(b)),
            (Outcome::RequireHuman(a), _) | (_, Outcome::RequireHuman(a)) => {
                Outcome::RequireHuman(a)
            }
            (Outcome::Allow, Outcome::Allow) => Outcome::Allow,
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::RequireHuman(l) => write!(f, "REQUIRE_HUMAN({l})"),
            o => f.write_str(o.decision()),
        }
    }
}

impl Serialize for Outcome {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("Outcome", 2)?;
        st.serialize_field("decision", self.decision())?;
        st.serialize_field("supervisor_level", &self.supervisor_level())?;
        st.end()
    }
}

/// A policy that determined the answer, with its own annotations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Determining {
    pub policy_id: String,
    pub effect: Effect,
    pub reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub require_human: Option<SupervisorLevel>,
}

/// The engine's answer to one request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    #[serde(flatten)]
    pub outcome: Outcome,
    /// The policy set's version (`<name>@<version>+<hash>`).
    pub policy_version: String,
    /// The determining policies, sorted by id. Empty for a default deny.
    pub determining: Vec<Determining>,
    /// Policy evaluation errors (any makes the outcome DENY).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

impl Verdict {
    /// One line for `GateAnswer::reason`, logs and receipts: the policies that explain the
    /// outcome with their `@reason`s.
    pub fn summary(&self) -> String {
        if !self.errors.is_empty() {
            return format!(
                "policy evaluation failed, denying (fail closed): {}",
                self.errors.join("; ")
            );
        }
        let explain = |d: &Determining| format!("{}: {}", d.policy_id, d.reason);
        match self.outcome {
            Outcome::Deny if self.determining.is_empty() => DEFAULT_DENY_REASON.to_owned(),
            Outcome::RequireHuman(level) => format!(
                "{level} review required by {}",
                self.determining
                    .iter()
                    .filter(|d| d.require_human.is_some())
                    .map(explain)
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
            _ => self
                .determining
                .iter()
                .map(explain)
                .collect::<Vec<_>>()
                .join("; "),
        }
    }

    /// The determining policy ids.
    pub fn policy_ids(&self) -> Vec<&str> {
        self.determining
            .iter()
            .map(|d| d.policy_id.as_str())
            .collect()
    }
}

/// A request the engine could not put to Cedar.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvalError {
    #[error("cannot build the policy request: {0}")]
    Request(String),
}

/// A policy engine: answers one dispatch at a time. Implementations are pure (no I/O) and
/// thread-safe; the same request and policy set always give the same verdict.
pub trait PolicyEngine: Send + Sync {
    /// Decides one dispatch.
    fn evaluate(&self, request: &PolicyRequest) -> Result<Verdict, EvalError>;
    /// The version of the policy set that would answer now.
    fn policy_version(&self) -> String;
}

/// The Cedar entity type names used in contexts, parsed once.
#[derive(Debug, Clone)]
pub(crate) struct ContextTypes {
    env: EntityTypeName,
    data_label: EntityTypeName,
    tenant_risk: EntityTypeName,
    qos_class: EntityTypeName,
    risk_tier: EntityTypeName,
    worker: EntityTypeName,
}

impl ContextTypes {
    pub(crate) fn new() -> Result<Self, EvalError> {
        let t =
            |s: &str| EntityTypeName::from_str(s).map_err(|e| EvalError::Request(e.to_string()));
        Ok(ContextTypes {
            env: t("Wcp::Env")?,
            data_label: t("Wcp::DataLabel")?,
            tenant_risk: t("Wcp::TenantRisk")?,
            qos_class: t("Wcp::QosClass")?,
            risk_tier: t("Wcp::RiskTier")?,
            worker: t("Wcp::Worker")?,
        })
    }
}

fn enum_value(ty: &EntityTypeName, value: &str) -> RestrictedExpression {
    RestrictedExpression::new_entity_uid(EntityUid::from_type_name_and_id(
        ty.clone(),
        EntityId::new(value),
    ))
}

fn long(v: impl Into<i64>) -> RestrictedExpression {
    RestrictedExpression::new_long(v.into())
}

fn strings(list: &[String]) -> RestrictedExpression {
    RestrictedExpression::new_set(
        list.iter()
            .map(|s| RestrictedExpression::new_string(s.clone())),
    )
}

fn record(
    pairs: impl IntoIterator<Item = (&'static str, RestrictedExpression)>,
) -> Result<RestrictedExpression, EvalError> {
    RestrictedExpression::new_record(pairs.into_iter().map(|(k, v)| (k.to_owned(), v)))
        .map_err(|e| EvalError::Request(e.to_string()))
}

fn envelope(e: &EnvelopeSummary) -> Result<RestrictedExpression, EvalError> {
    record([
        (
            "network_egress",
            RestrictedExpression::new_bool(e.network_egress),
        ),
        ("egress_hosts", strings(&e.egress_hosts)),
        ("secrets_access", strings(&e.secrets_access)),
        ("filesystem_writes", strings(&e.filesystem_writes)),
        ("tools", strings(&e.tools)),
    ])
}

/// Builds the Cedar context of a request, in the shape `wcp.cedarschema` declares.
pub(crate) fn build_context(req: &PolicyRequest, t: &ContextTypes) -> Result<Context, EvalError> {
    let mut pairs: Vec<(&'static str, RestrictedExpression)> = Vec::with_capacity(10);
    pairs.push(("env", enum_value(&t.env, req.env.as_str())));
    pairs.push((
        "data_label",
        enum_value(&t.data_label, req.data_label.as_str()),
    ));
    pairs.push((
        "tenant_risk",
        enum_value(&t.tenant_risk, req.tenant_risk.as_str()),
    ));
    pairs.push((
        "qos_class",
        enum_value(&t.qos_class, req.qos_class.as_str()),
    ));
    pairs.push(("dry_run", RestrictedExpression::new_bool(req.dry_run)));
    pairs.push(("chain_blast_prior", long(req.chain_blast_prior)));
    if let Some(c) = &req.caller {
        pairs.push((
            "caller",
            record([
                ("uid", long(c.uid)),
                ("gid", long(c.gid)),
                ("pid", long(c.pid)),
            ])?,
        ));
    }
    if let Some(score) = req.pyhall_blast_score {
        pairs.push(("pyhall_blast_score", long(score)));
    }
    if let Some(total) = req.chain_blast_total() {
        pairs.push(("chain_blast_total", long(total)));
    }
    if let Some(w) = &req.worker {
        pairs.push((
            "worker",
            RestrictedExpression::new_entity_uid(worker_uid(t, &w.species)),
        ));
    }
    Context::from_pairs(pairs.into_iter().map(|(k, v)| (k.to_owned(), v)))
        .map_err(|e| EvalError::Request(e.to_string()))
}

/// The capability entity: `Wcp::Capability::"<id>"` in each proper prefix group of two or more
/// segments (`cap.doc.pdf.extract` is in `cap.doc` and `cap.doc.pdf`), at most
/// [`MAX_CAPABILITY_GROUPS`].
pub(crate) fn capability_entity(
    cap_type: &EntityTypeName,
    group_type: &EntityTypeName,
    capability_id: &str,
) -> Entity {
    let ends: Vec<usize> = capability_id
        .match_indices('.')
        .map(|(i, _)| i)
        .skip(1)
        .take(MAX_CAPABILITY_GROUPS)
        .collect();
    let parents: HashSet<EntityUid> = ends
        .into_iter()
        .map(|end| {
            EntityUid::from_type_name_and_id(
                group_type.clone(),
                EntityId::new(&capability_id[..end]),
            )
        })
        .collect();
    Entity::new_no_attrs(
        EntityUid::from_type_name_and_id(cap_type.clone(), EntityId::new(capability_id)),
        parents,
    )
}

fn worker_uid(t: &ContextTypes, species: &str) -> EntityUid {
    EntityUid::from_type_name_and_id(t.worker.clone(), EntityId::new(species))
}

/// The worker entity: `Wcp::Worker::"<species>"` with the registry facts as attributes.
pub(crate) fn worker_entity(t: &ContextTypes, w: &WorkerFacts) -> Result<Entity, EvalError> {
    let mut attrs: HashMap<String, RestrictedExpression> = HashMap::with_capacity(4);
    attrs.insert(
        "species".into(),
        RestrictedExpression::new_string(w.species.clone()),
    );
    attrs.insert(
        "risk_tier".into(),
        enum_value(&t.risk_tier, w.risk_tier.as_str()),
    );
    if let Some(e) = &w.envelope {
        attrs.insert("envelope".into(), envelope(e)?);
    }
    if let Some(b) = &w.blast {
        attrs.insert(
            "blast".into(),
            record([
                ("data", long(b.data)),
                ("network", long(b.network)),
                ("financial", long(b.financial)),
                ("time", long(b.time)),
                ("reversibility", long(b.reversibility)),
                ("total", long(b.total())),
            ])?,
        );
    }
    Entity::new(worker_uid(t, &w.species), attrs, HashSet::new())
        .map_err(|e| EvalError::Request(e.to_string()))
}

/// The entity store of a request: the capability (with its groups) and the selected worker.
pub(crate) fn request_entities(
    t: &ContextTypes,
    cap_type: &EntityTypeName,
    group_type: &EntityTypeName,
    capability_id: &str,
    worker: Option<&WorkerFacts>,
    schema: Option<&cedar_policy::Schema>,
) -> Result<Entities, EvalError> {
    let mut list = vec![capability_entity(cap_type, group_type, capability_id)];
    if let Some(w) = worker {
        list.push(worker_entity(t, w)?);
    }
    Entities::from_entities(list, schema).map_err(|e| EvalError::Request(e.to_string()))
}

/// Entity stores by capability, and by worker facts and capability. Bounded in total.
#[derive(Debug, Default)]
struct EntityCache {
    plain: HashMap<String, Arc<Entities>>,
    with_worker: HashMap<WorkerFacts, HashMap<String, Arc<Entities>>>,
    len: usize,
}

impl EntityCache {
    fn get(&self, capability_id: &str, worker: Option<&WorkerFacts>) -> Option<&Arc<Entities>> {
        match worker {
            None => self.plain.get(capability_id),
            Some(w) => self.with_worker.get(w)?.get(capability_id),
        }
    }

    fn insert(&mut self, capability_id: &str, worker: Option<&WorkerFacts>, e: Arc<Entities>) {
        if self.len >= ENTITY_CACHE_CAPACITY || self.get(capability_id, worker).is_some() {
            return;
        }
        match worker {
            None => self.plain.insert(capability_id.to_owned(), e),
            Some(w) => self
                .with_worker
                .entry(w.clone())
                .or_default()
                .insert(capability_id.to_owned(), e),
        };
        self.len += 1;
    }
}

/// A compiled Cedar policy set, ready to answer.
#[derive(Debug)]
pub struct CedarEngine {
    set: CompiledPolicySet,
    types: ContextTypes,
    tenant_type: EntityTypeName,
    cap_type: EntityTypeName,
    group_type: EntityTypeName,
    action: EntityUid,
    authorizer: Authorizer,
    partition: Partition,
    cache: RwLock<EntityCache>,
}

impl CedarEngine {
    /// Wraps a compiled set.
    pub fn new(set: CompiledPolicySet) -> Result<Self, EvalError> {
        let t =
            |s: &str| EntityTypeName::from_str(s).map_err(|e| EvalError::Request(e.to_string()));
        Ok(CedarEngine {
            types: ContextTypes::new()?,
            tenant_type: t(TENANT_TYPE)?,
            cap_type: t(CAPABILITY_TYPE)?,
            group_type: t(CAPABILITY_GROUP_TYPE)?,
            action: EntityUid::from_type_name_and_id(
                t(ACTION_TYPE)?,
                EntityId::new(DISPATCH_ACTION),
            ),
            partition: Partition::new(&set.policies),
            set,
            authorizer: Authorizer::new(),
            cache: RwLock::new(EntityCache::default()),
        })
    }

    /// Compiles `sources` and, when they name a golden file, runs it: the engine is returned
    /// only if every golden decision is reproduced. Pure.
    pub fn from_sources(
        sources: &PolicySetSources,
    ) -> Result<(Self, Option<GoldenReport>), PolicyLoadError> {
        let set = compile(sources)?;
        let engine = CedarEngine::new(set).map_err(|e| {
            PolicyLoadError::Invalid(vec![super::source::Diagnostic::at(
                super::source::DiagnosticKind::Schema,
                &sources.schema.display,
                "",
                0,
                e.to_string(),
            )])
        })?;
        let report = match &sources.golden {
            None => None,
            Some(file) => {
                let suite = golden::parse(&file.text, &file.display)?;
                let report = golden::run(&engine, &suite, Some(engine.policy_set()));
                let failures = report.failure_diagnostics();
                if !failures.is_empty() {
                    return Err(PolicyLoadError::Invalid(failures));
                }
                Some(report)
            }
        };
        Ok((engine, report))
    }

    /// Reads a policy set from disk (manifest or its directory) and builds the engine, golden
    /// decisions included.
    pub fn load(path: &Path) -> Result<(Self, Option<GoldenReport>), PolicyLoadError> {
        CedarEngine::from_sources(&read_sources(path)?)
    }

    /// The compiled set.
    pub fn policy_set(&self) -> &CompiledPolicySet {
        &self.set
    }

    fn entities_for(
        &self,
        capability_id: &str,
        worker: Option<&WorkerFacts>,
    ) -> Result<Arc<Entities>, EvalError> {
        let cache = self.cache.read().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = cache.get(capability_id, worker) {
            return Ok(Arc::clone(e));
        }
        let full = cache.len >= ENTITY_CACHE_CAPACITY;
        drop(cache);
        // Built without the schema: the schema was probed at load with the same construction.
        let entities = Arc::new(request_entities(
            &self.types,
            &self.cap_type,
            &self.group_type,
            capability_id,
            worker,
            None,
        )?);
        if !full {
            let mut cache = self.cache.write().unwrap_or_else(|e| e.into_inner());
            cache.insert(capability_id, worker, Arc::clone(&entities));
        }
        Ok(entities)
    }

    fn determining(&self, id: &str) -> Determining {
        match self.set.policy(id) {
            Some(m) => Determining {
                policy_id: m.id.clone(),
                effect: m.effect,
                reason: m.reason.clone(),
                require_human: m.require_human,
            },
            // Every policy in the Cedar set has metadata; this only guards the invariant.
            None => Determining {
                policy_id: id.to_owned(),
                effect: Effect::Forbid,
                reason: "unknown policy".to_owned(),
                require_human: None,
            },
        }
    }
}

impl CedarEngine {
    /// Evaluates against `policies` (the request's cell of the partition, or the whole set).
    fn evaluate_in(&self, req: &PolicyRequest, policies: &PolicySet) -> Result<Verdict, EvalError> {
        let context = build_context(req, &self.types)?;
        let request = Request::new(
            EntityUid::from_type_name_and_id(
                self.tenant_type.clone(),
                EntityId::new(&req.tenant_id),
            ),
            self.action.clone(),
            EntityUid::from_type_name_and_id(
                self.cap_type.clone(),
                EntityId::new(&req.capability_id),
            ),
            context,
            None,
        )
        .map_err(|e| EvalError::Request(e.to_string()))?;
        let entities = self.entities_for(&req.capability_id, req.worker.as_ref())?;
        let response = self.authorizer.is_authorized(&request, policies, &entities);
        let diagnostics = response.diagnostics();
        let mut determining: Vec<Determining> = diagnostics
            .reason()
            .map(|id| self.determining(id.as_ref()))
            .collect();
        determining.sort_by(|a, b| a.policy_id.cmp(&b.policy_id));
        let mut errors: Vec<String> = diagnostics.errors().map(|e| e.to_string()).collect();
        errors.sort();
        let outcome = if !errors.is_empty() {
            Outcome::Deny
        } else {
            match response.decision() {
                Decision::Deny => Outcome::Deny,
                Decision::Allow => determining
                    .iter()
                    .filter_map(|d| d.require_human)
                    .max()
                    .map_or(Outcome::Allow, Outcome::RequireHuman),
            }
        };
        Ok(Verdict {
            outcome,
            policy_version: self.set.policy_version().to_owned(),
            determining,
            errors,
        })
    }

    /// Evaluates against the whole set, without the cell partition. Same verdict as
    /// [`PolicyEngine::evaluate`], only slower; tests and the benchmark compare the two.
    pub fn evaluate_unpartitioned(&self, req: &PolicyRequest) -> Result<Verdict, EvalError> {
        self.evaluate_in(req, &self.set.policies)
    }

    /// How many policies Cedar evaluates for a request in this cell (see [`Partition`]).
    pub fn policies_evaluated(&self, req: &PolicyRequest) -> usize {
        self.partition.size(cell(
            req.env,
            req.data_label,
            req.tenant_risk,
            req.qos_class,
        ))
    }
}

impl PolicyEngine for CedarEngine {
    fn evaluate(&self, req: &PolicyRequest) -> Result<Verdict, EvalError> {
        let cell = cell(req.env, req.data_label, req.tenant_risk, req.qos_class);
        self.evaluate_in(req, self.partition.for_cell(cell))
    }

    fn policy_version(&self) -> String {
        self.set.policy_version().to_owned()
    }
}

/// What a successful reload changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReloadReport {
    pub previous_version: String,
    pub version: String,
    /// Golden decisions passed by the new set, when it has a golden file.
    pub golden_passed: Option<usize>,
}

/// The active policy set behind an atomic swap: evaluation takes a snapshot (`Arc`) and never
/// waits for a reload; a reload that fails leaves the previous set active.
#[derive(Debug)]
pub struct PolicyStore {
    current: RwLock<Arc<CedarEngine>>,
    source: Option<PathBuf>,
}

impl PolicyStore {
    /// A store holding `engine`, with no file to reload from.
    pub fn new(engine: CedarEngine) -> Self {
        PolicyStore {
            current: RwLock::new(Arc::new(engine)),
            source: None,
        }
    }

    /// Loads the policy set at `path` (manifest or directory); [`PolicyStore::reload`] reads the
    /// same path again.
    pub fn open(path: &Path) -> Result<Self, PolicyLoadError> {
        let (engine, _) = CedarEngine::load(path)?;
        Ok(PolicyStore {
            current: RwLock::new(Arc::new(engine)),
            source: Some(path.to_owned()),
        })
    }

    /// The path the store reloads from.
    pub fn source(&self) -> Option<&Path> {
        self.source.as_deref()
    }

    /// A snapshot of the active engine.
    pub fn current(&self) -> Arc<CedarEngine> {
        Arc::clone(&self.current.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Re-reads the source path. On any error (unreadable, syntax, schema, annotations, golden
    /// decisions) the previous set stays active and the error says why.
    pub fn reload(&self) -> Result<ReloadReport, PolicyLoadError> {
        let Some(path) = &self.source else {
            return Err(PolicyLoadError::Invalid(vec![super::source::Diagnostic {
                kind: super::source::DiagnosticKind::Manifest,
                file: String::new(),
                line: 1,
                column: 1,
                message: "this policy store was built in memory and has no file to reload".into(),
                help: Some("use PolicyStore::open(path) or replace_with".into()),
                policy_id: None,
            }]));
        };
        self.replace_with(&read_sources(path)?)
    }

    /// Compiles `sources` and activates them if they are valid and pass their golden decisions.
    pub fn replace_with(
        &self,
        sources: &PolicySetSources,
    ) -> Result<ReloadReport, PolicyLoadError> {
        let (engine, golden) = CedarEngine::from_sources(sources)?;
        let version = engine.policy_version();
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        let previous_version = current.policy_version();
        *current = Arc::new(engine);
        Ok(ReloadReport {
            previous_version,
            version,
            golden_passed: golden.map(|g| g.passed()),
        })
    }
}

impl PolicyEngine for PolicyStore {
    fn evaluate(&self, request: &PolicyRequest) -> Result<Verdict, EvalError> {
        self.current().evaluate(request)
    }
    fn policy_version(&self) -> String {
        self.current().policy_version()
    }
}

#[cfg(test)]
mod tests;
