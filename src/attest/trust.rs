//! The namespace trust policy: which Ed25519 keys may sign packages for which tenant namespace,
//! how many must sign, until when, and what is revoked or banned.
//!
//! ```json
//! {
//!   "schema": "wcp-hall-trust/1",
//!   "version": 3,
//!   "expires_at": "2027-06-30T00:00:00Z",
//!   "namespaces": {
//!     "org.example": {
//!       "threshold": 1,
//!       "keys": [{"public_key": "<base64 32 bytes>", "key_id": "<optional hex, checked>",
//!                 "not_before": "2026-01-01T00:00:00Z", "not_after": "2027-01-01T00:00:00Z",
//!                 "comment": "release key 2026"}],
//!       "accept_awp_v1": false
//!     }
//!   },
//!   "revoked_keys": [{"key_id": "<hex>", "public_key": "<optional base64>", "reason": "laptop stolen"}],
//!   "banned_digests": [{"sha256": "<awp.v1 digest>", "reason": "CVE-…"}]
//! }
//! ```
//!
//! Threat model: manifests, envelopes and the key ids inside them are attacker-controlled; this
//! file is the Hall's (root-owned). So trust is looked up **only** by the namespace derived from
//! the worker id being verified — never from a key, key id or namespace a manifest names — and a
//! DSSE `keyid` is used for nothing but choosing a more precise deny code. Each key counts once.
//! Fail closed everywhere: an unknown namespace, an expired policy, a revoked key that signed
//! (even alongside good keys: a package touched by a compromised key is suspect), a banned
//! digest — each denies with its own code. Revocation is total (no "revoked after" time):
//! signing times inside a manifest are chosen by the signer, so a thief could backdate them.
//! Parsing is strict (duplicate JSON keys and unknown fields are errors); evaluation is pure.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::report::{AttestCode, PolicyRef};
use super::time::UtcTime;
use crate::common::hex;
use crate::crypto::canonical::parse_strict;
use crate::crypto::{Envelope, KeyId, PublicKey, pae};

/// The `schema` value of trust policy files.
pub const SCHEMA: &str = "wcp-hall-trust/1";
const MAX_POLICY_BYTES: u64 = 4 << 20;
/// More signatures than this on one envelope are refused: each may cost one Ed25519
/// verification per trusted key, so an unbounded list is a denial of service.
pub const MAX_SIGNATURES: usize = 16;

/// A trust policy file that cannot be used. Every variant names the place and the fix.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("cannot read trust policy {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("trust policy is larger than 4 MiB")]
    TooLarge,
    #[error("trust policy is not valid JSON for {SCHEMA}: {0}")]
    Json(String),
    #[error("trust policy schema is {0:?}; expected {SCHEMA:?}")]
    Schema(String),
    #[error(
        "namespaces.{0:?}: a namespace is 'org.<name>' or 'x.<name>' (one label of a-z, 0-9, '-')"
    )]
    NamespaceName(String),
    #[error("namespaces.{ns}: {problem}")]
    Namespace { ns: String, problem: String },
    #[error("namespaces.{ns}.keys[{index}]: {problem}")]
    Key {
        ns: String,
        index: usize,
        problem: String,
    },
    #[error("revoked_keys[{index}]: {problem}")]
    Revoked { index: usize, problem: String },
    #[error("banned_digests[{index}]: {problem}")]
    Banned { index: usize, problem: String },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    schema: String,
    version: u64,
    #[serde(default)]
    expires_at: Option<UtcTime>,
    namespaces: BTreeMap<String, NamespaceFile>,
    #[serde(default)]
    revoked_keys: Vec<RevokedFile>,
    #[serde(default)]
    banned_digests: Vec<BannedFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NamespaceFile {
    threshold: usize,
    keys: Vec<KeyFile>,
    #[serde(default)]
    accept_awp_v1: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    public_key: String,
    #[serde(default)]
    key_id: Option<String>,
    #[serde(default)]
    not_before: Option<UtcTime>,
    #[serde(default)]
    not_after: Option<UtcTime>,
    #[serde(default)]
    comment: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokedFile {
    key_id: String,
    #[serde(default)]
    public_key: Option<String>,
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BannedFile {
    sha256: String,
    #[serde(default)]
    reason: Option<String>,
}

/// A key trusted for a namespace, with its validity window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedKey {
    pub key: PublicKey,
    pub not_before: Option<UtcTime>,
    pub not_after: Option<UtcTime>,
    pub comment: Option<String>,
}

impl TrustedKey {
    /// Whether `now` is inside `[not_before, not_after]`.
    pub fn valid_at(&self, now: UtcTime) -> bool {
        self.not_before.is_none_or(|t| now >= t) && self.not_after.is_none_or(|t| now <= t)
    }
}

/// What one namespace trusts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceTrust {
    pub keys: Vec<TrustedKey>,
    pub threshold: usize,
    /// Whether PyHall's HMAC manifests are accepted for this namespace (legacy; any verifier
    /// can forge them).
    pub accept_awp_v1: bool,
}

/// A revoked key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokedKey {
    pub key_id: KeyId,
    pub key: Option<PublicKey>,
    pub reason: Option<String>,
}

/// The loaded, validated trust policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustPolicy {
    pub version: u64,
    pub expires_at: Option<UtcTime>,
    pub namespaces: BTreeMap<String, NamespaceTrust>,
    pub revoked: BTreeMap<KeyId, RevokedKey>,
    /// Banned awp.v1 digest → reason.
    pub banned: BTreeMap<String, Option<String>>,
    /// SHA-256 of the file bytes.
    pub sha256: String,
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn valid_namespace_name(ns: &str) -> bool {
    let Some((prefix, label)) = ns.split_once('.') else {
        return false;
    };
    matches!(prefix, "org" | "x")
        && !label.is_empty()
        && label.len() <= 63
        && label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

impl TrustPolicy {
    /// Reads and validates a policy file.
    pub fn load(path: &Path) -> Result<Self, TrustError> {
        let read = |source| TrustError::Read {
            path: path.display().to_string(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(read)?;
        if meta.len() > MAX_POLICY_BYTES {
            return Err(TrustError::TooLarge);
        }
        let bytes = std::fs::read(path).map_err(read)?;
        Self::from_json_bytes(&bytes)
    }

    /// Parses and validates policy JSON.
    pub fn from_json_bytes(bytes: &[u8]) -> Result<Self, TrustError> {
        if bytes.len() as u64 > MAX_POLICY_BYTES {
            return Err(TrustError::TooLarge);
        }
        // Strict first: duplicate keys would let two readers see two different policies.
        let value = parse_strict(bytes).map_err(|e| TrustError::Json(e.to_string()))?;
        let file: PolicyFile =
            serde_json::from_value(value).map_err(|e| TrustError::Json(e.to_string()))?;
        if file.schema != SCHEMA {
            return Err(TrustError::Schema(file.schema));
        }
        let mut namespaces = BTreeMap::new();
        for (ns, n) in file.namespaces {
            if !valid_namespace_name(&ns) {
                return Err(TrustError::NamespaceName(ns));
            }
            let nerr = |problem: String| TrustError::Namespace {
                ns: ns.clone(),
                problem,
            };
            if n.keys.is_empty() {
                return Err(nerr("has no keys; list at least one public key".into()));
            }
            if n.threshold == 0 || n.threshold > n.keys.len() {
                return Err(nerr(format!(
                    "threshold {} must be between 1 and the number of keys ({})",
                    n.threshold,
                    n.keys.len()
                )));
            }
            let mut keys: Vec<TrustedKey> = Vec::new();
            for (index, k) in n.keys.into_iter().enumerate() {
                let kerr = |problem: String| TrustError::Key {
                    ns: ns.clone(),
                    index,
                    problem,
                };
                let key = PublicKey::from_base64(&k.public_key).ok_or_else(|| {
                    kerr("public_key is not a base64 Ed25519 public key (32 bytes)".into())
                })?;
                if let Some(id) = &k.key_id
                    && id != &key.id().0
                {
                    return Err(kerr(format!(
                        "key_id {id:?} is not the id of this public key ({}); key ids are derived, remove it or correct it",
                        key.id()
                    )));
                }
                if let (Some(a), Some(b)) = (k.not_before, k.not_after)
                    && a > b
                {
                    return Err(kerr(format!("not_before {a} is after not_after {b}")));
                }
                if keys.iter().any(|t| t.key.id() == key.id()) {
                    return Err(kerr(format!(
                        "key {} is listed twice; a key counts once toward the threshold",
                        key.id()
                    )));
                }
                keys.push(TrustedKey {
                    key,
                    not_before: k.not_before,
                    not_after: k.not_after,
                    comment: k.comment,
                });
            }
            namespaces.insert(
                ns.clone(),
                NamespaceTrust {
                    keys,
                    threshold: n.threshold,
                    accept_awp_v1: n.accept_awp_v1,
                },
            );
        }
        let mut revoked = BTreeMap::new();
        for (index, r) in file.revoked_keys.into_iter().enumerate() {
            if !is_hex64(&r.key_id) {
                return Err(TrustError::Revoked {
                    index,
                    problem: "key_id must be 64 lowercase hex digits".into(),
                });
            }
            let key = match &r.public_key {
                None => None,
                Some(text) => {
                    let key = PublicKey::from_base64(text).ok_or(TrustError::Revoked {
                        index,
                        problem: "public_key is not a base64 Ed25519 public key".into(),
                    })?;
                    if key.id().0 != r.key_id {
                        return Err(TrustError::Revoked {
                            index,
                            problem: "public_key does not match key_id".into(),
                        });
                    }
                    Some(key)
                }
            };
            let key_id = KeyId(r.key_id);
            revoked.insert(
                key_id.clone(),
                RevokedKey {
                    key_id,
                    key,
                    reason: r.reason,
                },
            );
        }
        let mut banned = BTreeMap::new();
        for (index, b) in file.banned_digests.into_iter().enumerate() {
            if !is_hex64(&b.sha256) {
                return Err(TrustError::Banned {
                    index,
                    problem: "sha256 must be 64 lowercase hex digits (an awp.v1 package digest)"
                        .into(),
                });
            }
            banned.insert(b.sha256, b.reason);
        }
        Ok(TrustPolicy {
            version: file.version,
            expires_at: file.expires_at,
            namespaces,
            revoked,
            banned,
            sha256: hex(&Sha256::digest(bytes)),
        })
    }

    /// The reference recorded in reports.
    pub fn reference(&self) -> PolicyRef {
        PolicyRef {
            version: self.version,
            sha256: self.sha256.clone(),
        }
    }

    pub fn namespace(&self, ns: &str) -> Option<&NamespaceTrust> {
        self.namespaces.get(ns)
    }

    /// The ban reason if `digest` is banned (`Some(None)`: banned without a reason).
    pub fn banned(&self, digest: &str) -> Option<&Option<String>> {
        self.banned.get(digest)
    }

    /// Fails if the policy itself has expired (TUF's freeze protection: a stale policy may
    /// still trust keys that were revoked since).
    pub fn check_fresh(&self, now: UtcTime) -> Result<(), TrustFailure> {
        match self.expires_at {
            Some(t) if now > t => Err(TrustFailure::PolicyExpired { expires_at: t }),
            _ => Ok(()),
        }
    }

    /// Decides whether `envelope` is signed well enough for `namespace` at `now`, using only
    /// this policy's keys. Signatures are verified over `PAE(envelope.payloadType, payload)`
    /// before anything in the payload is looked at (DSSE order).
    pub fn check_envelope(
        &self,
        namespace: &str,
        envelope: &Envelope,
        now: UtcTime,
    ) -> Result<SignatureCheck, TrustFailure> {
        self.check_fresh(now)?;
        let ns = self
            .namespace(namespace)
            .ok_or_else(|| TrustFailure::NamespaceUntrusted {
                namespace: namespace.to_owned(),
            })?;
        if envelope.signatures.is_empty() {
            return Err(TrustFailure::SignatureMissing);
        }
        if envelope.signatures.len() > MAX_SIGNATURES {
            return Err(TrustFailure::Malformed(format!(
                "the envelope carries {} signatures; at most {MAX_SIGNATURES} are accepted",
                envelope.signatures.len()
            )));
        }
        let payload = decode_b64(&envelope.payload).ok_or(TrustFailure::Malformed(
            "envelope payload is not valid base64".into(),
        ))?;
        let message = pae(&envelope.payload_type, &payload);
        let sigs: Vec<Vec<u8>> = envelope
            .signatures
            .iter()
            .filter_map(|s| decode_b64(&s.sig))
            .collect();
        let signed = |key: &PublicKey| sigs.iter().any(|s| key.verify(&message, s));

        // Revoked keys that signed: from the namespace's list or the revocation list itself.
        let mut revoked_signers: BTreeSet<&KeyId> = BTreeSet::new();
        for t in &ns.keys {
            if self.revoked.contains_key(t.key.id()) && signed(&t.key) {
                revoked_signers.insert(t.key.id());
            }
        }
        for r in self.revoked.values() {
            if let Some(k) = &r.key
                && signed(k)
            {
                revoked_signers.insert(&r.key_id);
            }
        }
        if let Some(id) = revoked_signers.into_iter().next() {
            return Err(TrustFailure::KeyRevoked {
                key_id: id.clone(),
                reason: self.revoked.get(id).and_then(|r| r.reason.clone()),
            });
        }
        let mut good: Vec<KeyId> = Vec::new();
        let mut expired: Vec<(KeyId, Option<UtcTime>, Option<UtcTime>)> = Vec::new();
        for t in &ns.keys {
            if !signed(&t.key) {
                continue;
            }
            if t.valid_at(now) {
                good.push(t.key.id().clone());
            } else {
                expired.push((t.key.id().clone(), t.not_before, t.not_after));
            }
        }
        if good.len() >= ns.threshold {
            return Ok(SignatureCheck {
                signer_key_ids: good,
                threshold: ns.threshold,
                payload,
                outside_validity: expired.into_iter().map(|e| e.0).collect(),
            });
        }
        if !good.is_empty() {
            return Err(TrustFailure::ThresholdNotMet {
                valid: good.len(),
                threshold: ns.threshold,
            });
        }
        if let Some((key_id, not_before, not_after)) = expired.into_iter().next() {
            return Err(TrustFailure::KeyExpired {
                key_id,
                not_before,
                not_after,
            });
        }
        // Nothing trusted verified. The key id hints only pick the most useful code.
        let claimed: Vec<&str> = envelope.claimed_key_ids().collect();
        if let Some(id) = claimed
            .iter()
            .find(|id| self.revoked.contains_key(&KeyId((**id).to_owned())))
        {
            return Err(TrustFailure::KeyRevoked {
                key_id: KeyId((*id).to_owned()),
                reason: self
                    .revoked
                    .get(&KeyId((*id).to_owned()))
                    .and_then(|r| r.reason.clone()),
            });
        }
        if claimed
            .iter()
            .any(|id| ns.keys.iter().any(|t| t.key.id().0 == *id))
        {
            return Err(TrustFailure::SigInvalid);
        }
        Err(TrustFailure::KeyUntrusted {
            namespace: namespace.to_owned(),
            claimed: claimed
                .iter()
                .map(|s| s.chars().take(64).collect())
                .collect(),
        })
    }
}

fn decode_b64(text: &str) -> Option<Vec<u8>> {
    STANDARD
        .decode(text)
        .or_else(|_| URL_SAFE.decode(text))
        .or_else(|_| URL_SAFE_NO_PAD.decode(text))
        .ok()
}

/// A sufficiently signed envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureCheck {
    /// The distinct trusted, valid, unrevoked keys whose signatures verified.
    pub signer_key_ids: Vec<KeyId>,
    pub threshold: usize,
    /// The payload bytes the signatures cover (not yet parsed: DSSE order).
    pub payload: Vec<u8>,
    /// Keys that signed but are outside their validity window (ignored).
    pub outside_validity: Vec<KeyId>,
}

/// Why the trust policy refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrustFailure {
    #[error("the trust policy expired at {expires_at}; publish a fresh policy")]
    PolicyExpired { expires_at: UtcTime },
    #[error(
        "the trust policy has no entry for namespace {namespace:?}; add its keys to the policy"
    )]
    NamespaceUntrusted { namespace: String },
    #[error("the envelope has no signatures")]
    SignatureMissing,
    #[error("{0}")]
    Malformed(String),
    #[error("signed by revoked key {key_id}{}", .reason.as_ref().map(|r| format!(" ({r})")).unwrap_or_default())]
    KeyRevoked {
        key_id: KeyId,
        reason: Option<String>,
    },
    #[error("the only valid signatures are by key {key_id}, outside its validity window [{}, {}]; re-sign with a current key", .not_before.map(|t| t.to_string()).unwrap_or_else(|| "-".into()), .not_after.map(|t| t.to_string()).unwrap_or_else(|| "-".into()))]
    KeyExpired {
        key_id: KeyId,
        not_before: Option<UtcTime>,
        not_after: Option<UtcTime>,
    },
    #[error(
        "a signature claims a key trusted for this namespace but does not verify (payload or signature altered)"
    )]
    SigInvalid,
    #[error(
        "no signature is by a key the policy trusts for {namespace:?} (signatures claim key ids {claimed:?})"
    )]
    KeyUntrusted {
        namespace: String,
        claimed: Vec<String>,
    },
    #[error("{valid} trusted key(s) signed; namespace threshold is {threshold}")]
    ThresholdNotMet { valid: usize, threshold: usize },
}

impl TrustFailure {
    pub fn code(&self) -> AttestCode {
        match self {
            TrustFailure::PolicyExpired { .. } => AttestCode::TrustPolicyExpired,
            TrustFailure::NamespaceUntrusted { .. } => AttestCode::NamespaceUntrusted,
            TrustFailure::SignatureMissing => AttestCode::SignatureMissing,
            TrustFailure::Malformed(_) => AttestCode::ManifestInvalid,
            TrustFailure::KeyRevoked { .. } => AttestCode::KeyRevoked,
            TrustFailure::KeyExpired { .. } => AttestCode::KeyExpired,
            TrustFailure::SigInvalid => AttestCode::SigInvalid,
            TrustFailure::KeyUntrusted { .. } => AttestCode::KeyUntrusted,
            TrustFailure::ThresholdNotMet { .. } => AttestCode::ThresholdNotMet,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::KeyPair;

    fn key(seed: u8) -> KeyPair {
        KeyPair::from_seed(&[seed; 32])
    }

    fn policy(extra: &str, threshold: usize, keys: &[&KeyPair]) -> TrustPolicy {
        let keys: Vec<String> = keys
            .iter()
            .map(|k| format!(r#"{{"public_key":"{}"}}"#, k.public().to_base64()))
            .collect();
        let text = format!(
            r#"{{"schema":"wcp-hall-trust/1","version":1,"namespaces":{{"org.example":{{"threshold":{threshold},"keys":[{}]}}}}{extra}}}"#,
            keys.join(",")
        );
        TrustPolicy::from_json_bytes(text.as_bytes()).unwrap()
    }

    fn env(keys: &[&KeyPair]) -> Envelope {
        Envelope::sign("application/vnd.in-toto+json", b"{}", keys)
    }

    const NOW: UtcTime = UtcTime(1_800_000_000);

    #[test]
    fn threshold_counts_distinct_trusted_keys() {
        let (a, b, c) = (key(1), key(2), key(3));
        let p = policy("", 2, &[&a, &b]);
        let ok = p
            .check_envelope("org.example", &env(&[&a, &b]), NOW)
            .unwrap();
        assert_eq!(ok.signer_key_ids.len(), 2);
        assert_eq!(
            p.check_envelope("org.example", &env(&[&a, &a, &c]), NOW),
            Err(TrustFailure::ThresholdNotMet {
                valid: 1,
                threshold: 2
            })
        );
        assert!(matches!(
            p.check_envelope("org.example", &env(&[&c]), NOW),
            Err(TrustFailure::KeyUntrusted { .. })
        ));
        assert!(matches!(
            p.check_envelope("org.other", &env(&[&a, &b]), NOW),
            Err(TrustFailure::NamespaceUntrusted { .. })
        ));
        assert_eq!(
            p.check_envelope("org.example", &env(&[]), NOW),
            Err(TrustFailure::SignatureMissing)
        );
    }

    #[test]
    fn a_forged_keyid_hint_never_helps() {
        let (a, c) = (key(1), key(3));
        let p = policy("", 1, &[&a]);
        let mut e = env(&[&c]);
        e.signatures[0].keyid = Some(a.id().0.clone());
        assert_eq!(
            p.check_envelope("org.example", &e, NOW),
            Err(TrustFailure::SigInvalid)
        );
    }

    #[test]
    fn revoked_keys_fail_closed_even_with_enough_good_signatures() {
        let (a, b) = (key(1), key(2));
        let extra = format!(
            r#","revoked_keys":[{{"key_id":"{}","reason":"stolen"}}]"#,
            b.id()
        );
        let p = policy(&extra, 1, &[&a, &b]);
        assert!(matches!(
            p.check_envelope("org.example", &env(&[&a, &b]), NOW),
            Err(TrustFailure::KeyRevoked { reason: Some(r), .. }) if r == "stolen"
        ));
        assert!(p.check_envelope("org.example", &env(&[&a]), NOW).is_ok());
        // A revoked key removed from the namespace but listed with its public key still counts
        // as revoked.
        let extra = format!(
            r#","revoked_keys":[{{"key_id":"{}","public_key":"{}"}}]"#,
            b.id(),
            b.public().to_base64()
        );
        let p = policy(&extra, 1, &[&a]);
        assert!(matches!(
            p.check_envelope("org.example", &env(&[&a, &b]), NOW),
            Err(TrustFailure::KeyRevoked { .. })
        ));
    }

    #[test]
    fn validity_windows_and_policy_expiry() {
        let a = key(1);
        let text = format!(
            r#"{{"schema":"wcp-hall-trust/1","version":2,"expires_at":"2030-01-01T00:00:00Z","namespaces":{{"x.alice":{{"threshold":1,"keys":[{{"public_key":"{}","not_before":"2026-01-01T00:00:00Z","not_after":"2026-12-31T23:59:59Z"}}]}}}}}}"#,
            a.public().to_base64()
        );
        let p = TrustPolicy::from_json_bytes(text.as_bytes()).unwrap();
        let inside = UtcTime::parse("2026-06-01T00:00:00Z").unwrap();
        let after = UtcTime::parse("2027-01-01T00:00:00Z").unwrap();
        let before = UtcTime::parse("2025-12-31T00:00:00Z").unwrap();
        assert!(p.check_envelope("x.alice", &env(&[&a]), inside).is_ok());
        assert!(matches!(
            p.check_envelope("x.alice", &env(&[&a]), after),
            Err(TrustFailure::KeyExpired { .. })
        ));
        assert!(matches!(
            p.check_envelope("x.alice", &env(&[&a]), before),
            Err(TrustFailure::KeyExpired { .. })
        ));
        let late = UtcTime::parse("2030-01-02T00:00:00Z").unwrap();
        assert!(matches!(
            p.check_envelope("x.alice", &env(&[&a]), late),
            Err(TrustFailure::PolicyExpired { .. })
        ));
    }

    #[test]
    fn malformed_policies_are_refused_with_their_place() {
        let a = key(1).public().to_base64();
        let cases = [
            (r#"{"schema":"other","version":1,"namespaces":{}}"#.to_owned(), "schema"),
            (
                r#"{"schema":"wcp-hall-trust/1","version":1,"namespaces":{},"namespaces":{}}"#
                    .to_owned(),
                "duplicate",
            ),
            (
                r#"{"schema":"wcp-hall-trust/1","version":1,"namespaces":{},"extra":1}"#
                    .to_owned(),
                "unknown field",
            ),
            (
                format!(
                    r#"{{"schema":"wcp-hall-trust/1","version":1,"namespaces":{{"wrk.x":{{"threshold":1,"keys":[{{"public_key":"{a}"}}]}}}}}}"#
                ),
                "wrk.x",
            ),
            (
                format!(
                    r#"{{"schema":"wcp-hall-trust/1","version":1,"namespaces":{{"org.a":{{"threshold":2,"keys":[{{"public_key":"{a}"}}]}}}}}}"#
                ),
                "threshold 2",
            ),
            (
                format!(
                    r#"{{"schema":"wcp-hall-trust/1","version":1,"namespaces":{{"org.a":{{"threshold":1,"keys":[{{"public_key":"{a}","key_id":"00"}}]}}}}}}"#
                ),
                "key_id",
            ),
            (
                format!(
                    r#"{{"schema":"wcp-hall-trust/1","version":1,"namespaces":{{"org.a":{{"threshold":1,"keys":[{{"public_key":"{a}"}},{{"public_key":"{a}"}}]}}}}}}"#
                ),
                "listed twice",
            ),
            (
                r#"{"schema":"wcp-hall-trust/1","version":1,"namespaces":{},"banned_digests":[{"sha256":"ABC"}]}"#
                    .to_owned(),
                "banned_digests[0]",
            ),
            (
                r#"{"schema":"wcp-hall-trust/1","version":1,"namespaces":{},"expires_at":"tomorrow"}"#
                    .to_owned(),
                "UTC timestamp",
            ),
        ];
        for (text, needle) in cases {
            let err = TrustPolicy::from_json_bytes(text.as_bytes()).unwrap_err();
            assert!(err.to_string().contains(needle), "{needle}: {err}");
        }
    }
}
