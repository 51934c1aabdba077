//! The configuration snapshot: what the Hall routes with, and its atomic reload.
//!
//! A [`Loaded`] snapshot (configuration, compiled rules, registry, policy gate, attested
//! packages, identity map, compiled input schemas) is immutable; requests take an `Arc` to the
//! current one and keep it for their whole life, so a reload never changes the rules under a
//! request in flight. Reload builds a complete new snapshot first and swaps it in only if every
//! part loaded; otherwise the old one stays and the error says why.
//!
//! It sits below the daemon and the CLI: `hall` serves with it, and the offline commands
//! (`route`, `status`, `init`, `demo`) load the very same snapshot, so they can never disagree
//! with `serve` about what a configuration means. [`Loaded::route`] is the one place a
//! [`Router`] is assembled. This module must not know about sockets, HTTP, JSON answers or exit
//! codes: it returns typed values and [`LoadError`]s.

pub mod identity;
pub mod schemas;

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use crate::attest::manifest_v1::HmacKey;
use crate::attest::report::VerificationReport;
use crate::attest::store::PackageStore;
use crate::attest::trust::TrustPolicy;
use crate::attest::workers::{AttestedWorkers, RecheckPolicy, SpeciesPackage};
use crate::clock::mint_context;
use crate::config::Config;
use crate::envelope::{Identity, PythonError, PythonRuntime};
use crate::policy::gate::HallGate;
use crate::policy::gate::{GateDecision, RequestGate};
use crate::policy::profile::{EnvProfiles, EnvelopeMinimums, Limits, ProfileSet};
use crate::policy::request::CallerIdentity;
use crate::registry::{Registry, RegistryDir, RegistryDirError};
use crate::router::{self, PolicyGate, Router, RouterConfig, WorkerHashes};
use crate::rules::{RuleSet, RulesError};
use crate::wcp::{RouteDecision, RouteInput};
use identity::IdentityMap;

/// Why a configuration could not be (re)loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("cannot read rules {}: {source}", .path.display())]
    RulesRead {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("rules {}: {source}", .path.display())]
    Rules { path: PathBuf, source: RulesError },
    #[error(transparent)]
    Registry(#[from] RegistryDirError),
    #[error("policy gate: {0}")]
    Policy(String),
    #[error("attestation: {0}")]
    Attestation(String),
    /// `[envelope] python` cannot run workers (missing, not executable by the worker uid, too
    /// old, or its probe failed); the message says which.
    #[error("{0}")]
    Python(String),
    /// `[envelope] worker_user` names no user, or root.
    #[error("[envelope] worker_user {0}")]
    WorkerUser(String),
}

/// One immutable, complete view of what the Hall routes with.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    pub rules: RuleSet,
    pub registry: Registry,
    pub identity: IdentityMap,
    pub router_config: RouterConfig,
    /// The policy gate (Cedar under the profiles `[profiles]` selects), when any is selected.
    pub gate: Option<HallGate>,
    /// Verified packages of the enrolled workers (`[attestation] trust_policy` set). Workers only
    /// ever run from this store's read-only copies.
    pub attested: Option<AttestedWorkers>,
    /// The Python runtime Python packages run with, probed from `[envelope] python` (see
    /// [`probe_python`]). `None` until probed (offline uses such as `wcp-hall route`), or when
    /// the setting is unset and no default interpreter exists: Python packages are then refused
    /// at dispatch, native ones still run.
    pub python: Option<Arc<PythonRuntime>>,
    /// Monotonic generation number, bumped on every successful reload.
    pub generation: u64,
    /// Input schemas compiled from verified store copies, by store path (content-addressed,
    /// read-only: a path always holds the same schema), so a dispatch does not read and compile
    /// the package's `config.schema.json` again. Dropped with the snapshot on reload.
    pub input_schemas: schemas::SchemaCache,
}

/// What [`Loaded::route`] decided, and what it learnt on the way.
#[derive(Debug)]
pub struct RouteOutcome {
    pub decision: RouteDecision,
    /// The policy gate's full answer, when it was asked.
    pub policy: Option<GateDecision>,
    /// The selected worker's package verification, when the router verified it.
    pub verified: Option<VerificationReport>,
    /// What the env's profile demands of a run (`None`: no profile is selected).
    pub run_limits: Option<(Limits, EnvelopeMinimums)>,
}

impl Loaded {
    /// Routes one request with these rules, registry and policy gate, without a caller
    /// (offline, as `wcp-hall route` does): no `[identity]` mapping applies, and the gate sees no
    /// caller identity and no chain blast. The env's profile supplies its controls and whether
    /// every dispatch is gated; without a selected profile there is no gate, and rules that
    /// require one are denied (fail closed). Nothing runs.
    pub fn route_offline(&self, input: &RouteInput, task_id: &str) -> RouteDecision {
        self.route(input, self.router_config.clone(), None, 0, None, task_id)
            .decision
    }

    /// Routes `input` on this snapshot: the one place a [`Router`] is assembled. `config` is the
    /// router configuration for the caller (the snapshot's own, or narrowed to a peer's tenants);
    /// the env's profile adds its controls and whether every dispatch is gated; the policy gate
    /// sees `caller` and the chain's blast so far (`chain_blast_prior`); `approval` is the id
    /// of a human approval this request carries. Returns the decision, the gate's full answer
    /// when it was asked, and the selected worker's package verification when the router
    /// verified it (the runner runs that very verification's store copy: one verification per
    /// dispatch). Pure apart from minting the decision id and time and verifying packages.
    pub fn route(
        &self,
        input: &RouteInput,
        mut config: RouterConfig,
        caller: Option<CallerIdentity>,
        chain_blast_prior: u32,
        approval: Option<&str>,
        task_id: &str,
    ) -> RouteOutcome {
        let attestation = self.attested.as_ref().map(AttestedWorkers::dispatch);
        // The env's profile, resolved once for the whole dispatch (routing and the run).
        let profile = self.gate.as_ref().and_then(|g| g.profile(input.env));
        if let Some(profile) = profile {
            config.gate_every_dispatch = profile.gate_every_dispatch;
            config.profile_controls = profile.required_controls.clone();
        }
        let gate = self
            .gate
            .as_ref()
            .map(|g| RequestGate::new(g, &self.registry, caller, chain_blast_prior));
        let router = Router {
            rules: &self.rules,
            registry: &self.registry,
            config: &config,
            gate: gate.as_ref().map(|g| g as &dyn PolicyGate),
            hashes: match &attestation {
                Some(a) => Some(a as &dyn WorkerHashes),
                None => Some(&self.registry),
            },
            privilege: Some(&self.registry),
            human_approval: approval,
        };
        let decision = router::route(&router, input, &mint_context(task_id));
        let verified = match (&attestation, &decision.selected_worker_species_id) {
            (Some(a), Some(species)) => a.verified(species),
            _ => None,
        };
        RouteOutcome {
            policy: gate.and_then(|g| g.decision()),
            decision,
            verified,
            run_limits: profile.map(|p| (p.limits, p.envelope)),
        }
    }

    /// Loads the configuration file and everything it names.
    pub fn load(config_path: &Path, generation: u64) -> Result<Self, LoadError> {
        let config = Config::load(config_path)?;
        Self::from_config(config, generation)
    }

    /// Loads the rules and registry an already parsed configuration names.
    pub fn from_config(config: Config, generation: u64) -> Result<Self, LoadError> {
        let path = config.paths.rules.clone();
        let text = std::fs::read_to_string(&path).map_err(|source| LoadError::RulesRead {
            path: path.clone(),
            source,
        })?;
        let rules =
            RuleSet::from_json_str(&text).map_err(|source| LoadError::Rules { path, source })?;
        let registry =
            RegistryDir::open(&config.paths.registry_dir)?.snapshot(config.routing.controls_scope);
        let gate = load_gate(&config)?;
        let attested = load_attested(&config, &registry)?;
        Ok(Loaded {
            gate,
            attested,
            identity: IdentityMap::from_config(&config.identity),
            router_config: config.router_config(),
            config,
            rules,
            registry,
            python: None,
            generation,
            input_schemas: Default::default(),
        })
    }

    /// Probes `[envelope] python` (see [`probe_python`]) and keeps the result.
    pub fn probe_python(&mut self, run_as: Option<Identity>) -> Result<(), LoadError> {
        self.python = probe_python(&self.config, run_as)?;
        Ok(())
    }
}

/// Runs the probe of `[envelope] python` (as `run_as` when the Hall is root), a few tens of
/// milliseconds, bounded by [`crate::envelope::python::PROBE_TIMEOUT`]. A configured
/// interpreter that cannot run workers is a configuration error; so is a default one that
/// exists but fails its probe. No default interpreter at all is not: the Hall then runs native
/// packages only, and says so at dispatch.
pub fn probe_python(
    config: &Config,
    run_as: Option<Identity>,
) -> Result<Option<Arc<PythonRuntime>>, LoadError> {
    let configured = config.envelope.python.as_deref();
    match PythonRuntime::probe(configured, run_as) {
        Ok(runtime) => Ok(Some(Arc::new(runtime))),
        Err(PythonError::NoDefault { .. }) if configured.is_none() => Ok(None),
        Err(e) if configured.is_some() => Err(LoadError::Python(format!("[envelope] python: {e}"))),
        Err(e) => Err(LoadError::Python(format!(
            "[envelope] python (not set, so the default): {e}; set [envelope] python to a usable interpreter"
        ))),
    }
}

/// Loads the profiles `[profiles]` selects and the policy sets they name.
pub fn load_gate(config: &Config) -> Result<Option<HallGate>, LoadError> {
    let selection = config.profiles.selection();
    if selection.is_empty() {
        return Ok(None);
    }
    let dir = config
        .paths
        .profiles_dir
        .as_ref()
        .ok_or_else(|| LoadError::Policy("[paths] profiles_dir is not set".into()))?;
    let set = ProfileSet::load_dir(dir).map_err(|e| LoadError::Policy(e.to_string()))?;
    let selected =
        EnvProfiles::select(&set, selection).map_err(|e| LoadError::Policy(e.to_string()))?;
    HallGate::load(&selected)
        .map(Some)
        .map_err(|e| LoadError::Policy(e.to_string()))
}

/// Opens the package store and trust policy `[attestation]` names, and registers the package of
/// every enrolled record that names one (`attestation.package_root`).
pub fn load_attested(
    config: &Config,
    registry: &Registry,
) -> Result<Option<AttestedWorkers>, LoadError> {
    let a = &config.attestation;
    let Some(trust_path) = &a.trust_policy else {
        return Ok(None);
    };
    let err = |e: String| LoadError::Attestation(e);
    let trust = TrustPolicy::load(trust_path).map_err(|e| err(e.to_string()))?;
    let store_dir = a
        .store_dir
        .clone()
        .unwrap_or_else(|| config.state_dir().join("store"));
    let store = PackageStore::open(&store_dir).map_err(|e| err(e.to_string()))?;
    let hmac = match &a.hmac_key_file {
        Some(p) => Some(Arc::new(HmacKey::read(p).map_err(|e| err(e.to_string()))?)),
        None => None,
    };
    let recheck = if a.recheck_seconds == 0 {
        RecheckPolicy::EveryCall
    } else {
        RecheckPolicy::Interval(std::time::Duration::from_secs(a.recheck_seconds))
    };
    let (store, trust) = (Arc::new(store), Arc::new(trust));
    // Records naming an OCI `package_ref` are fetched here (start and reload), never at dispatch.
    let oci = crate::attest::oci::RecordFetch {
        trust: &trust,
        hmac_key: hmac.as_deref(),
        store: &store,
        sources_dir: config.state_dir().join("oci"),
        plain_http: &a.oci_plain_http,
    };
    let mut workers =
        AttestedWorkers::new(store.clone(), trust.clone(), hmac.clone()).with_recheck(recheck);
    for record in registry.records() {
        let Some(att) = &record.attestation else {
            continue;
        };
        if let Some(package_ref) = &att.package_ref {
            let (root, manifest) =
                oci.source(package_ref, &record.worker_id, &record.worker_species_id);
            workers.add(SpeciesPackage {
                worker_species_id: record.worker_species_id.clone(),
                worker_id: record.worker_id.clone(),
                package_root: root,
                manifest_path: manifest,
                registered_hash: att.code_hash.clone(),
            });
            continue;
        }
        let Some(root) = &att.package_root else {
            continue;
        };
        let root = PathBuf::from(root);
        let manifest = att
            .manifest_path
            .as_ref()
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                let sig = root.join("manifest.sig");
                if sig.exists() {
                    sig
                } else {
                    root.join("manifest.json")
                }
            });
        workers.add(SpeciesPackage {
            worker_species_id: record.worker_species_id.clone(),
            worker_id: record.worker_id.clone(),
            package_root: root,
            manifest_path: manifest,
            registered_hash: att.code_hash.clone(),
        });
    }
    Ok(Some(workers))
}

/// The identity workers run as: `[envelope] worker_user` (a name or a uid) from the user
/// database. Root is refused: a worker must never hold the Hall's own privileges.
pub fn worker_identity(user: &str) -> Result<Identity, LoadError> {
    let found = match user.parse::<u32>() {
        Ok(uid) => nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
            .ok()
            .flatten(),
        Err(_) => nix::unistd::User::from_name(user).ok().flatten(),
    };
    let u = found.ok_or_else(|| LoadError::WorkerUser(format!("{user:?} does not exist")))?;
    if u.uid.is_root() {
        return Err(LoadError::WorkerUser("must not be root".into()));
    }
    Ok(Identity {
        uid: u.uid.as_raw(),
        gid: u.gid.as_raw(),
    })
}

/// The current snapshot, swappable.
#[derive(Debug)]
pub struct Current {
    config_path: PathBuf,
    inner: RwLock<Arc<Loaded>>,
    /// `Some`: every reload probes `[envelope] python` again, as this identity (when root).
    python_probe: Option<Option<Identity>>,
}

impl Current {
    pub fn new(config_path: PathBuf, loaded: Loaded) -> Self {
        Current {
            config_path,
            inner: RwLock::new(Arc::new(loaded)),
            python_probe: None,
        }
    }

    /// Makes every reload probe `[envelope] python` (as `run_as` when the Hall is root): a
    /// reload is how an operator says "look again", so an upgraded or replaced interpreter is
    /// noticed, and a broken one keeps the previous snapshot (and runtime) with the reason.
    pub fn probing_python(mut self, run_as: Option<Identity>) -> Self {
        self.python_probe = Some(run_as);
        self
    }

    /// Whether reloads probe `[envelope] python` (the daemon's snapshots do).
    pub fn probes_python(&self) -> bool {
        self.python_probe.is_some()
    }

    /// The snapshot requests should use now.
    pub fn get(&self) -> Arc<Loaded> {
        self.inner.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Loads a fresh snapshot from the configuration file and swaps it in; on error the current
    /// snapshot stays and the error is returned.
    pub fn reload(&self) -> Result<Arc<Loaded>, LoadError> {
        let next_generation = self.get().generation + 1;
        let mut loaded = Loaded::load(&self.config_path, next_generation)?;
        if let Some(run_as) = self.python_probe {
            loaded.probe_python(run_as)?;
        }
        let loaded = Arc::new(loaded);
        *self.inner.write().unwrap_or_else(|p| p.into_inner()) = loaded.clone();
        Ok(loaded)
    }
}
