//! What a verification says: its `ATTEST_*` code, the inputs it used and the protections that
//! actually applied (attestation-anchors §7.1 item 4: report what was checked, not just
//! pass/fail). The dispatch layer copies this into the RouteDecision and the evidence receipt.

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::crypto::KeyId;

/// Why a package was not verified. The first five are PyHall's, in PyHall's check order; the
/// rest are the Hall's additions (see docs/attestation.md for the full order per format).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttestCode {
    /// The manifest file does not exist, cannot be read, or (awp.v1) is not a JSON object.
    ManifestMissing,
    /// The manifest names another worker id or species than the one being verified.
    ManifestIdMismatch,
    /// The package on disk does not hash to the digest the manifest signs.
    HashMismatch,
    /// No signature in the manifest, or (awp.v1) no HMAC key configured.
    SignatureMissing,
    /// A signature is present but does not verify (awp.v1 HMAC; awp.v2 a signature claiming a
    /// trusted key id that does not verify).
    SigInvalid,
    /// The awp.v2 envelope or statement is malformed or of an unsupported kind.
    ManifestInvalid,
    /// The package contains a link, a special file, an unsafe name, or exceeds the limits.
    TreeUnsafe,
    /// The package could not be read (missing directory, permissions, I/O error).
    TreeUnreadable,
    /// The verified copy could not be written into the package store.
    StoreFailed,
    /// The worker id has no namespace, the trust policy has no entry for it, or the namespace
    /// does not accept awp.v1.
    NamespaceUntrusted,
    /// The trust policy itself is past its `expires_at`.
    TrustPolicyExpired,
    /// Signatures exist, but none by a key the namespace trusts ("wrong key").
    KeyUntrusted,
    /// A signature verifies under a revoked key.
    KeyRevoked,
    /// The only valid signatures are by keys outside their validity window.
    KeyExpired,
    /// Some trusted keys signed, but fewer than the namespace's threshold.
    ThresholdNotMet,
    /// The package digest is on the trust policy's ban list.
    DigestBanned,
    /// The awp.v2 statement is past its own `expires_at`.
    ManifestExpired,
}

impl AttestCode {
    pub const ALL: [AttestCode; 17] = [
        AttestCode::ManifestMissing,
        AttestCode::ManifestIdMismatch,
        AttestCode::HashMismatch,
        AttestCode::SignatureMissing,
        AttestCode::SigInvalid,
        AttestCode::ManifestInvalid,
        AttestCode::TreeUnsafe,
        AttestCode::TreeUnreadable,
        AttestCode::StoreFailed,
        AttestCode::NamespaceUntrusted,
        AttestCode::TrustPolicyExpired,
        AttestCode::KeyUntrusted,
        AttestCode::KeyRevoked,
        AttestCode::KeyExpired,
        AttestCode::ThresholdNotMet,
        AttestCode::DigestBanned,
        AttestCode::ManifestExpired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AttestCode::ManifestMissing => "ATTEST_MANIFEST_MISSING",
            AttestCode::ManifestIdMismatch => "ATTEST_MANIFEST_ID_MISMATCH",
            AttestCode::HashMismatch => "ATTEST_HASH_MISMATCH",
            AttestCode::SignatureMissing => "ATTEST_SIGNATURE_MISSING",
            AttestCode::SigInvalid => "ATTEST_SIG_INVALID",
            AttestCode::ManifestInvalid => "ATTEST_MANIFEST_INVALID",
            AttestCode::TreeUnsafe => "ATTEST_TREE_UNSAFE",
            AttestCode::TreeUnreadable => "ATTEST_TREE_UNREADABLE",
            AttestCode::StoreFailed => "ATTEST_STORE_FAILED",
            AttestCode::NamespaceUntrusted => "ATTEST_NAMESPACE_UNTRUSTED",
            AttestCode::TrustPolicyExpired => "ATTEST_TRUST_POLICY_EXPIRED",
            AttestCode::KeyUntrusted => "ATTEST_KEY_UNTRUSTED",
            AttestCode::KeyRevoked => "ATTEST_KEY_REVOKED",
            AttestCode::KeyExpired => "ATTEST_KEY_EXPIRED",
            AttestCode::ThresholdNotMet => "ATTEST_THRESHOLD_NOT_MET",
            AttestCode::DigestBanned => "ATTEST_DIGEST_BANNED",
            AttestCode::ManifestExpired => "ATTEST_MANIFEST_EXPIRED",
        }
    }
}

impl fmt::Display for AttestCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for AttestCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// The manifest format verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ManifestFormat {
    /// PyHall's HMAC-signed manifest.json (legacy).
    AwpV1,
    /// in-toto Statement in a DSSE envelope, Ed25519.
    AwpV2,
}

impl ManifestFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            ManifestFormat::AwpV1 => "awp.v1",
            ManifestFormat::AwpV2 => "awp.v2",
        }
    }
}

impl Serialize for ManifestFormat {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Whether a protection applied to this verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProtectionStatus {
    Applied,
    /// Could have applied but did not (said why in `detail`): never silent.
    NotApplied,
    /// Does not concern this verification (e.g. key validity for an HMAC manifest).
    NotApplicable,
}

/// One protection and whether it applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Protection {
    pub id: &'static str,
    pub status: ProtectionStatus,
    pub detail: String,
}

impl Protection {
    pub fn applied(id: &'static str, detail: impl Into<String>) -> Self {
        Protection {
            id,
            status: ProtectionStatus::Applied,
            detail: detail.into(),
        }
    }
    pub fn not_applied(id: &'static str, detail: impl Into<String>) -> Self {
        Protection {
            id,
            status: ProtectionStatus::NotApplied,
            detail: detail.into(),
        }
    }
    pub fn not_applicable(id: &'static str, detail: impl Into<String>) -> Self {
        Protection {
            id,
            status: ProtectionStatus::NotApplicable,
            detail: detail.into(),
        }
    }
}

/// How many excluded entries a report lists by name.
pub const MAX_LISTED_EXCLUDED: usize = 64;

/// The identity and digest of the trust policy used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyRef {
    pub version: u64,
    /// SHA-256 of the policy file's bytes.
    pub sha256: String,
}

/// The outcome of verifying one package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerificationReport {
    pub ok: bool,
    /// `None` when `ok`.
    pub code: Option<AttestCode>,
    /// One sentence for humans: what failed and how to fix it, or what was verified.
    pub message: String,
    pub format: Option<ManifestFormat>,
    pub worker_id: String,
    pub worker_species_id: String,
    pub namespace: Option<String>,
    pub package_root: PathBuf,
    pub manifest_path: PathBuf,
    /// SHA-256 of the manifest file's bytes.
    pub manifest_sha256: Option<String>,
    /// The package digest the manifest signs.
    pub manifest_package_hash: Option<String>,
    /// The awp.v1 digest the Hall computed (of the verified copy when a store is used).
    pub package_hash: Option<String>,
    pub files: Option<u64>,
    pub bytes: Option<u64>,
    /// Entries left out of the hash and never copied (PyHall's exclusions); at most
    /// [`MAX_LISTED_EXCLUDED`] are listed, `excluded_count` counts them all.
    pub excluded: Vec<String>,
    pub excluded_count: usize,
    /// Keys whose valid signatures counted toward the threshold (awp.v2).
    pub signer_key_ids: Vec<KeyId>,
    pub threshold: Option<usize>,
    pub trust_policy: Option<PolicyRef>,
    /// The read-only, content-addressed copy workers must run from (only when `ok`).
    pub store_path: Option<PathBuf>,
    /// The package tree was not re-read: its metadata fingerprint matched a previous
    /// verification (manifest, signatures and policy were still checked afresh).
    pub cached: bool,
    pub verified_at: String,
    pub protections: Vec<Protection>,
    /// PyHall-compatible detail for the code (e.g. `expected_hash` / `computed_hash`).
    pub meta: Map<String, Value>,
}

impl VerificationReport {
    /// The code as text (`"ATTEST_OK"` never appears: success has no code, as in PyHall).
    pub fn code_str(&self) -> Option<&'static str> {
        self.code.map(AttestCode::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_prefixed() {
        let mut seen = std::collections::HashSet::new();
        for c in AttestCode::ALL {
            assert!(c.as_str().starts_with("ATTEST_"));
            assert!(seen.insert(c.as_str()));
            assert_eq!(
                serde_json::to_value(c).unwrap(),
                Value::String(c.to_string())
            );
        }
    }
}
