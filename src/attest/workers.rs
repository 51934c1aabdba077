//! [`AttestedWorkers`]: the router's [`WorkerHashes`] backed by real packages, real manifests
//! and real signatures, so `require_worker_attestation` denies from what is on disk. A
//! dispatch asks through a [`DispatchAttestation`], which verifies each species at most once
//! and hands the same report to the runner: one verification per dispatch.
//!
//! Per worker species the Hall knows the package source directory, its manifest, the worker id
//! the registry enrolled (its namespace selects the trusted keys) and optionally the registered
//! `attestation.code_hash`. For the router:
//! - `registered_hash(species)` is the registry's `code_hash` if the record has one, otherwise
//!   the package digest the manifest signs (once its signatures verified);
//! - `current_hash(species)` re-verifies (cheaply when nothing changed; see `store`) and returns
//!   the digest of the verified store copy. When verification fails it returns `None`
//!   (→ `DENY_WORKER_HASH_UNAVAILABLE`), except when the signed manifest is intact but the
//!   package on disk no longer matches it (`ATTEST_HASH_MISMATCH`): then it returns the digest
//!   found on disk, which differs from the registered one (→ `DENY_WORKER_TAMPERED`). A digest
//!   that would *equal* the registered hash is never returned for a failed verification.
//!
//! The last [`VerificationReport`] per species stays available for the decision and the
//! evidence receipt (`ATTEST_*` code, signer key ids, protections applied), and
//! [`AttestedWorkers::run_root`] names the store directory the dispatch must execute from.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::manifest_v1::HmacKey;
use super::report::{AttestCode, VerificationReport};
use super::store::PackageStore;
use super::time::UtcTime;
use super::trust::TrustPolicy;
use super::verify::{VerifyRequest, verify_package};
use crate::router::WorkerHashes;

/// Where one worker species' package lives and who it must be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpeciesPackage {
    pub worker_species_id: String,
    /// The enrolled worker id (its `org.<ns>` / `x.<ns>` selects the trusted keys).
    pub worker_id: String,
    /// The package source directory.
    pub package_root: PathBuf,
    /// Its manifest (awp.v1 `manifest.json` or awp.v2 `manifest.sig`).
    pub manifest_path: PathBuf,
    /// The registry record's `attestation.code_hash`, if any.
    pub registered_hash: Option<String>,
}

/// How often `current_hash` re-verifies a species.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecheckPolicy {
    /// On every call: the manifest, signatures and trust policy are checked afresh and the
    /// package tree's metadata is rescanned (its contents re-read only if it changed).
    EveryCall,
    /// Reuse a report younger than this.
    Interval(Duration),
}

#[derive(Debug, Clone)]
struct Last {
    report: VerificationReport,
    at: Instant,
}

/// The router's [`WorkerHashes`] over verified packages.
#[derive(Debug)]
pub struct AttestedWorkers {
    store: Arc<PackageStore>,
    trust: Arc<TrustPolicy>,
    hmac_key: Option<Arc<HmacKey>>,
    packages: HashMap<String, SpeciesPackage>,
    recheck: RecheckPolicy,
    last: Mutex<HashMap<String, Last>>,
    /// Verifications run (a reused report within the recheck interval is not one).
    verifications: std::sync::atomic::AtomicU64,
}

impl AttestedWorkers {
    pub fn new(
        store: Arc<PackageStore>,
        trust: Arc<TrustPolicy>,
        hmac_key: Option<Arc<HmacKey>>,
    ) -> Self {
        AttestedWorkers {
            store,
            trust,
            hmac_key,
            packages: HashMap::new(),
            recheck: RecheckPolicy::EveryCall,
            last: Mutex::new(HashMap::new()),
            verifications: std::sync::atomic::AtomicU64::new(0),
        }
    }

    pub fn with_recheck(mut self, recheck: RecheckPolicy) -> Self {
        self.recheck = recheck;
        self
    }

    /// Adds (or replaces) a species' package.
    pub fn add(&mut self, package: SpeciesPackage) {
        if let Ok(mut last) = self.last.lock() {
            last.remove(&package.worker_species_id);
        }
        self.packages
            .insert(package.worker_species_id.clone(), package);
    }

    pub fn package(&self, species: &str) -> Option<&SpeciesPackage> {
        self.packages.get(species)
    }

    /// Verifies `species` now (cached per the recheck policy) and returns the report, or
    /// `None` for an unknown species.
    pub fn verify(&self, species: &str) -> Option<VerificationReport> {
        let pkg = self.packages.get(species)?;
        if let RecheckPolicy::Interval(max_age) = self.recheck
            && let Some(last) = self.last.lock().ok().and_then(|l| l.get(species).cloned())
            && last.at.elapsed() < max_age
        {
            return Some(last.report);
        }
        self.verifications
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let report = verify_package(&VerifyRequest {
            package_root: &pkg.package_root,
            manifest_path: &pkg.manifest_path,
            worker_id: &pkg.worker_id,
            worker_species_id: &pkg.worker_species_id,
            trust: Some(&self.trust),
            hmac_key: self.hmac_key.as_deref(),
            store: Some(&self.store),
            limits: *self.store.limits(),
            now: UtcTime::now(),
        });
        if let Ok(mut last) = self.last.lock() {
            // Said once per change, not once per dispatch: a package that stops (or starts
            // again) verifying is an operator's business.
            let before = last.get(species).map(|l| (l.report.ok, l.report.code));
            if before != Some((report.ok, report.code)) {
                match report.code {
                    Some(code) if !report.ok => tracing::warn!(
                        worker_species_id = species,
                        worker_id = %pkg.worker_id,
                        code = code.as_str(),
                        "package verification failed: {}",
                        report.message
                    ),
                    _ if before.is_some() => tracing::info!(
                        worker_species_id = species,
                        worker_id = %pkg.worker_id,
                        "package verifies again"
                    ),
                    _ => {}
                }
            }
            last.insert(
                species.to_owned(),
                Last {
                    report: report.clone(),
                    at: Instant::now(),
                },
            );
        }
        Some(report)
    }

    /// How many verifications ran (not counting reports reused within the recheck interval).
    pub fn verifications(&self) -> u64 {
        self.verifications
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The last verification report of `species` (without verifying again).
    pub fn last_report(&self, species: &str) -> Option<VerificationReport> {
        self.last
            .lock()
            .ok()
            .and_then(|l| l.get(species).map(|x| x.report.clone()))
    }

    /// The store directory to execute `species` from: the copy of its last successful
    /// verification (`None` if it last failed or was never verified).
    pub fn run_root(&self, species: &str) -> Option<PathBuf> {
        self.last_report(species)
            .filter(|r| r.ok)
            .and_then(|r| r.store_path)
    }

    /// A view of these packages for one dispatch (see [`DispatchAttestation`]).
    pub fn dispatch(&self) -> DispatchAttestation<'_> {
        DispatchAttestation {
            workers: self,
            reports: Mutex::new(HashMap::new()),
        }
    }
}

/// One dispatch's view of the attested packages: each species is verified at most once, and
/// the router's questions (the registered hash, the current hash, why verification failed) and
/// the runner's store copy all come from that one verification — never from another
/// dispatch's report, and never from two verifications that a change between them could make
/// disagree.
#[derive(Debug)]
pub struct DispatchAttestation<'a> {
    workers: &'a AttestedWorkers,
    reports: Mutex<HashMap<String, Option<VerificationReport>>>,
}

impl DispatchAttestation<'_> {
    /// `species` verified for this dispatch (the first call verifies, later ones reuse it);
    /// `None` for an unknown species.
    pub fn report(&self, species: &str) -> Option<VerificationReport> {
        let mut reports = self
            .reports
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(r) = reports.get(species) {
            return r.clone();
        }
        let r = self.workers.verify(species);
        reports.insert(species.to_owned(), r.clone());
        r
    }

    /// The report of `species` if this dispatch verified it already (without verifying).
    pub fn verified(&self, species: &str) -> Option<VerificationReport> {
        self.reports
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(species)
            .cloned()
            .flatten()
    }
}

impl WorkerHashes for DispatchAttestation<'_> {
    fn registered_hash(&self, species: &str) -> Option<String> {
        let pkg = self.workers.packages.get(species)?;
        if let Some(h) = &pkg.registered_hash {
            return Some(h.clone());
        }
        // The manifest's digest is used when verification succeeded, or failed only because
        // the package no longer matches it: then `current_hash` returns a different digest, so
        // the decision is a denial either way — a digest from a manifest never makes a failed
        // package pass.
        let report = self.report(species)?;
        if report.ok || report.code == Some(AttestCode::HashMismatch) {
            report.manifest_package_hash
        } else {
            None
        }
    }

    fn attestation_failure(&self, species: &str) -> Option<(String, String)> {
        self.verified(species)
            .filter(|r| !r.ok)
            .and_then(|r| r.code.map(|c| (c.as_str().to_owned(), r.message)))
    }

    fn current_hash(&self, species: &str) -> Option<String> {
        let report = self.report(species)?;
        if report.ok {
            return report.package_hash;
        }
        if report.code == Some(AttestCode::HashMismatch) {
            let found = report.package_hash?;
            let registered = match &self.workers.packages.get(species)?.registered_hash {
                Some(h) => Some(h.clone()),
                None => report.manifest_package_hash.clone(),
            };
            if registered.as_deref() != Some(found.as_str()) {
                return Some(found);
            }
        }
        None
    }
}
