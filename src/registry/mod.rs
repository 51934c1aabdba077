//! The worker registry: registry records (WCP §6), the enrolled directory and the routing
//! snapshot the router consults.
//!
//! - [`record`]: [`RegistryRecord`], parsed strictly and validated with every problem reported
//!   at once ([`InvalidRecord`] of [`RecordError`]s naming JSON paths).
//! - [`store`]: [`RegistryDir`], a directory of `<worker_id>.json` files that loads fail-closed
//!   (one bad file refuses the whole directory, naming it), and [`enroll`], which validates and
//!   writes a record atomically.
//! - [`snapshot`]: [`Registry`], an immutable snapshot implementing the router's
//!   [`RegistryView`](crate::router::RegistryView), [`WorkerHashes`](crate::router::WorkerHashes)
//!   and [`PrivilegeCheck`](crate::router::PrivilegeCheck).
//!
//! # Controls scope: per-worker by default
//! PyHall keeps one global set of controls: if *any* enrolled worker claims
//! `ctrl.obs.audit-log-append-only`, every rule requiring it passes, and then *any* candidate is
//! selected, including one that implements nothing. That is [`ControlsScope::Global`], kept for
//! parity (the conformance vectors describe registries that way).
//!
//! The Hall's default is [`ControlsScope::PerWorker`]: the required-controls step still checks
//! the global union (so a control the whole fleet lacks is still reported as
//! `DENY_MISSING_REQUIRED_CONTROLS`), and candidate selection additionally requires that a record
//! of the candidate species itself implements every control the rule requires and, when its
//! `allowed_environments` is non-empty, lists the request's env. A candidate failing that is
//! skipped with `missing_controls` or `env_not_allowed` (the latter when some record of the
//! species implements the controls but excludes the env), and if no candidate is left the request
//! is denied with `DENY_NO_AVAILABLE_WORKER`.
//!
//! # Attestation and privileges
//! [`Registry`] reports the registered code hash of a species from its record's
//! `attestation.code_hash` but has no *current* hash of its own (alone it denies with
//! `DENY_WORKER_HASH_UNAVAILABLE`, fail closed). With `[attestation]` configured, which
//! `require_worker_attestation` demands, the daemon and `route` use
//! [`crate::attest::workers::AttestedWorkers`] instead: it verifies the package each record names
//! in `attestation.package_root`. Its privilege check is small but real (see
//! [`Registry`]'s [`PrivilegeCheck`](crate::router::PrivilegeCheck) impl), unlike PyHall's stub.

pub mod record;
pub mod snapshot;
pub mod store;

pub use record::{
    Attestation, BlastRadius, InvalidRecord, NetworkEgress, PrivilegeEnvelope, RecordError,
    RegistryRecord, RiskTier,
};
pub use snapshot::{ControlsScope, Registry, RegistrySummary};
pub use store::{
    BadFile, EnrollAction, EnrollError, EnrollOutcome, FileProblem, LoadedRecord, RegistryDir,
    RegistryDirError, enroll, enroll_record, record_file_name,
};

/// PyHall's control-id filter `^ctrl\.[a-z0-9][a-z0-9._\-]*$` (Python `re.match`, so one trailing
/// newline is tolerated there; the Hall does not tolerate it).
pub fn is_pyhall_control_id(id: &str) -> bool {
    let Some(rest) = id.strip_prefix("ctrl.") else {
        return false;
    };
    let mut bytes = rest.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z' | b'0'..=b'9'))
        && bytes.all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod tests;
