//! Package attestation: the Hall runs a worker package only if its exact bytes were signed by
//! keys the namespace trust policy trusts for the worker's namespace, and what it verified is
//! exactly what runs.
//!
//! The pieces, one concept per module:
//! - [`tree`]: the awp.v1 package hash (PyHall's `canonical_package_hash`, byte-compatible),
//!   refusing links, special files and ambiguous names; optionally copying while hashing.
//! - [`manifest_v1`]: PyHall's HMAC-signed `manifest.json` (legacy; symmetric key from a file).
//! - [`manifest_v2`]: awp.v2, an in-toto Statement in a DSSE envelope signed with Ed25519.
//! - [`trust`]: the namespace trust policy — keys, threshold and validity per `org.<ns>` /
//!   `x.<ns>`, revoked keys, banned package digests.
//! - [`store`]: the verified package store — a Hall-owned, content-addressed, read-only copy
//!   written in the same pass that hashes it; workers run from there only.
//! - [`verify`]: the verification of one package against its manifest, in a fixed order of
//!   checks, producing a [`VerificationReport`] with its `ATTEST_*` code and the protections
//!   that applied.
//! - [`workers`]: [`AttestedWorkers`], the router's `WorkerHashes` backed by real files.
//! - [`scaffold`]: PyHall's package layout for new workers.
//! - [`oci`]: packages as OCI artifacts: push, and the bounded pull into the store.
//!
//! Threat model in one line: the package directory, its manifest and whoever writes them are
//! untrusted; the trust policy file, the HMAC key file, the Hall's private keys and the store
//! directory are the Hall's (root-owned, not writable by workers). Each module states its part.

pub mod manifest_v1;
pub mod manifest_v2;
pub mod oci;
pub mod report;
pub mod scaffold;
pub mod sign;
pub mod store;
pub mod time;
pub mod tree;
pub mod trust;
pub mod verify;
mod watch;
pub mod workers;

pub use manifest_v1::{HmacKey, HmacKeyError, ManifestV1};
pub use report::{AttestCode, ManifestFormat, Protection, ProtectionStatus, VerificationReport};
pub use sign::{SignError, SignRequest};
pub use store::{PackageStore, StoreError};
pub use time::UtcTime;
pub use tree::{TreeDigest, TreeError, TreeLimits, UnsafeKind, hash_tree};
pub use trust::{TrustError, TrustPolicy};
pub use verify::{VerifyRequest, verify_package};
pub use workers::{AttestedWorkers, RecheckPolicy, SpeciesPackage};

/// A worker id outside a tenant namespace.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "worker_id {worker_id:?} is not in a tenant namespace: it must begin with 'org.<name>.' or 'x.<name>.' (wrk./cap. prefixes are not signer namespaces)"
)]
pub struct NamespaceError {
    pub worker_id: String,
}

/// The signer namespace of a worker id, as PyHall derives it: `org.<name>.…` → `org.<name>`,
/// `x.<name>.…` → `x.<name>`. Stricter than PyHall: `<name>` must be non-empty and free of
/// control characters (PyHall turns `x..w` into the namespace `x.`).
pub fn namespace_of(worker_id: &str) -> Result<String, NamespaceError> {
    let err = || NamespaceError {
        worker_id: worker_id.chars().take(120).collect(),
    };
    let mut parts = worker_id.split('.');
    let prefix = parts.next().ok_or_else(err)?;
    let name = parts.next().ok_or_else(err)?;
    if !matches!(prefix, "org" | "x") || name.is_empty() || name.chars().any(char::is_control) {
        return Err(err());
    }
    Ok(format!("{prefix}.{name}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_come_from_the_worker_id_prefix() {
        assert_eq!(namespace_of("x.alice.summarizer.i-1").unwrap(), "x.alice");
        assert_eq!(namespace_of("org.acme.invoicer.i-2").unwrap(), "org.acme");
        assert_eq!(namespace_of("org.acme").unwrap(), "org.acme");
        for bad in [
            "wrk.doc.summarizer",
            "x..w",
            "x",
            "org",
            "",
            "xorg.a.b",
            "x.a\nb.c",
        ] {
            assert!(namespace_of(bad).is_err(), "{bad:?}");
        }
    }
}
