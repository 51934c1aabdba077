//! awp.v2 manifests: an in-toto Statement v1 whose subject is the package's awp.v1 digest,
//! carried in a DSSE envelope signed with Ed25519 (attestation-anchors §7.2).
//!
//! ```json
//! {"_type": "https://in-toto.io/Statement/v1",
//!  "subject": [{"name": "wrk.doc.summarizer@0.3.0",
//!               "digest": {"awpV1TreeSha256": "<awp.v1 digest>"}}],
//!  "predicateType": "https://pyhall.dev/attestation/package/v1",
//!  "predicate": {"schema_version": "awp.v2", "worker_id": "x.alice.summarizer.i-1",
//!                "worker_species_id": "wrk.doc.summarizer", "worker_version": "0.3.0",
//!                "namespace": "x.alice", "build_source": "ci", "built_at": "2026-01-02T03:04:05Z",
//!                "expires_at": null,
//!                "tree": {"algorithm": "awp.v1", "allow_symlinks": false,
//!                         "excluded_names": [".DS_Store", ".git", …], "excluded_suffixes": [".pyc"]}}}
//! ```
//!
//! The statement is serialised in the crate's canonical JSON profile and the envelope's
//! `payloadType` is `application/vnd.in-toto+json`.
//!
//! The subject digest is named [`TREE_DIGEST_ALGORITHM`] (`awpV1TreeSha256`): the awp.v1 tree
//! hash is a SHA-256 over a record encoding of the package directory, not the SHA-256 of any
//! file, so it must not be called `sha256` — in-toto consumers (cosign, `gh attestation`,
//! witness) would compare it with the SHA-256 of an artifact and never match, and a reader
//! could not tell how to recompute it. in-toto's DigestSet allows algorithms it does not list
//! ("consumers MUST ignore unrecognized algorithms"; new ones must document their encoding:
//! lowercase hex here, the algorithm is in docs/attestation.md). Statements signed before the
//! rename carry the same value as `sha256` and still verify: a DigestSet holds exactly one of
//! the two names. The envelope is written to `manifest.sig`
//! by default — one of PyHall's excluded names, so signing never changes the package digest.
//!
//! Threat model: the envelope is attacker-supplied. Signatures are checked against the trust
//! policy before the payload is parsed (DSSE order; see [`super::trust`]); the payload is then
//! parsed strictly (duplicate keys and unknown fields refused) and must describe exactly one
//! subject with the tree parameters this Hall hashes with, so a signer can never have meant a
//! different tree definition (e.g. one that follows links) than the one verified.

use serde::{Deserialize, Serialize};

use super::namespace_of;
use super::time::UtcTime;
use super::tree::{EXCLUDED_NAMES, EXCLUDED_SUFFIX};
use crate::crypto::canonical::{CanonicalError, parse_strict, to_canonical_from};
use crate::crypto::{Envelope, KeyPair};

/// The DSSE payload type of awp.v2 manifests.
pub const PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";
/// in-toto Statement v1.
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
/// The predicate type (attestation-anchors §7.2).
pub const PREDICATE_TYPE: &str = "https://pyhall.dev/attestation/package/v1";
/// `predicate.schema_version`.
pub const SCHEMA_VERSION: &str = "awp.v2";
/// `predicate.tree.algorithm`.
pub const TREE_ALGORITHM: &str = "awp.v1";
/// Where `attest sign --format v2` writes the envelope inside the package by default.
pub const DEFAULT_FILE_NAME: &str = "manifest.sig";

/// A malformed awp.v2 manifest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestV2Error {
    #[error("not a DSSE envelope: {0}")]
    Envelope(String),
    #[error("the statement is not valid: {0}")]
    Statement(String),
    #[error("the statement cannot be encoded canonically: {0}")]
    Encoding(#[from] CanonicalError),
}

/// The in-toto DigestSet name of the awp.v1 tree hash (lowercase hex).
pub const TREE_DIGEST_ALGORITHM: &str = "awpV1TreeSha256";

/// `subject[].digest`: the awp.v1 digest under [`TREE_DIGEST_ALGORITHM`], or under `sha256` in
/// statements signed before that name (accepted, never written). Exactly one is present.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DigestSet {
    #[serde(
        rename = "awpV1TreeSha256",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub awp_v1_tree_sha256: Option<String>,
    /// The legacy name of the same value (awp.v2 statements signed before `awpV1TreeSha256`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

impl DigestSet {
    /// A digest set naming the awp.v1 digest correctly.
    pub fn tree(digest: &str) -> Self {
        DigestSet {
            awp_v1_tree_sha256: Some(digest.to_owned()),
            sha256: None,
        }
    }

    /// The awp.v1 digest, under whichever name it was signed (`None` if neither or both).
    pub fn tree_digest(&self) -> Option<&str> {
        match (&self.awp_v1_tree_sha256, &self.sha256) {
            (Some(d), None) | (None, Some(d)) => Some(d),
            _ => None,
        }
    }
}

/// `subject[]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subject {
    pub name: String,
    pub digest: DigestSet,
}

/// How the subject digest was computed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TreeParams {
    pub algorithm: String,
    pub allow_symlinks: bool,
    pub excluded_names: Vec<String>,
    pub excluded_suffixes: Vec<String>,
}

impl TreeParams {
    /// The parameters of this Hall's awp.v1 hash.
    pub fn current() -> Self {
        let mut names: Vec<String> = EXCLUDED_NAMES.iter().map(|s| (*s).to_owned()).collect();
        names.sort();
        TreeParams {
            algorithm: TREE_ALGORITHM.to_owned(),
            allow_symlinks: false,
            excluded_names: names,
            excluded_suffixes: vec![EXCLUDED_SUFFIX.to_owned()],
        }
    }
}

/// The package predicate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Predicate {
    pub schema_version: String,
    pub worker_id: String,
    pub worker_species_id: String,
    pub worker_version: String,
    pub namespace: String,
    pub build_source: String,
    pub built_at: UtcTime,
    pub expires_at: Option<UtcTime>,
    pub tree: TreeParams,
}

/// An in-toto Statement v1 about one package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Statement {
    #[serde(rename = "_type")]
    pub statement_type: String,
    pub subject: Vec<Subject>,
    #[serde(rename = "predicateType")]
    pub predicate_type: String,
    pub predicate: Predicate,
}

/// What goes into a new awp.v2 statement.
#[derive(Debug, Clone)]
pub struct ManifestV2Input<'a> {
    pub worker_id: &'a str,
    pub worker_species_id: &'a str,
    pub worker_version: &'a str,
    pub package_hash: &'a str,
    pub build_source: &'a str,
    pub built_at: UtcTime,
    pub expires_at: Option<UtcTime>,
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl Statement {
    /// A statement for a package (fails if the worker id has no tenant namespace).
    pub fn new(input: &ManifestV2Input<'_>) -> Result<Self, super::NamespaceError> {
        let namespace = namespace_of(input.worker_id)?;
        Ok(Statement {
            statement_type: STATEMENT_TYPE.to_owned(),
            subject: vec![Subject {
                name: format!("{}@{}", input.worker_species_id, input.worker_version),
                digest: DigestSet::tree(input.package_hash),
            }],
            predicate_type: PREDICATE_TYPE.to_owned(),
            predicate: Predicate {
                schema_version: SCHEMA_VERSION.to_owned(),
                worker_id: input.worker_id.to_owned(),
                worker_species_id: input.worker_species_id.to_owned(),
                worker_version: input.worker_version.to_owned(),
                namespace,
                build_source: input.build_source.to_owned(),
                built_at: input.built_at,
                expires_at: input.expires_at,
                tree: TreeParams::current(),
            },
        })
    }

    /// The canonical payload bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>, ManifestV2Error> {
        Ok(to_canonical_from(self)?)
    }

    /// Signs the statement with every key (one signature each).
    pub fn sign(&self, keys: &[&KeyPair]) -> Result<Envelope, ManifestV2Error> {
        Ok(Envelope::sign(PAYLOAD_TYPE, &self.to_bytes()?, keys))
    }

    /// Parses verified payload bytes strictly and checks they describe one package the way
    /// this Hall hashes packages.
    pub fn parse(payload: &[u8]) -> Result<Self, ManifestV2Error> {
        let bad = |m: String| ManifestV2Error::Statement(m);
        let value = parse_strict(payload).map_err(|e| bad(e.to_string()))?;
        let s: Statement = serde_json::from_value(value).map_err(|e| bad(e.to_string()))?;
        if s.statement_type != STATEMENT_TYPE {
            return Err(bad(format!(
                "_type is {:?}; expected {STATEMENT_TYPE:?}",
                s.statement_type
            )));
        }
        if s.predicate_type != PREDICATE_TYPE {
            return Err(bad(format!(
                "predicateType is {:?}; expected {PREDICATE_TYPE:?}",
                s.predicate_type
            )));
        }
        if s.predicate.schema_version != SCHEMA_VERSION {
            return Err(bad(format!(
                "predicate.schema_version is {:?}; expected {SCHEMA_VERSION:?}",
                s.predicate.schema_version
            )));
        }
        let [subject] = s.subject.as_slice() else {
            return Err(bad(format!(
                "exactly one subject is required, found {}",
                s.subject.len()
            )));
        };
        let Some(digest) = subject.digest.tree_digest() else {
            return Err(bad(format!(
                "the subject digest must hold exactly one of {TREE_DIGEST_ALGORITHM:?} (or, \
                 in statements signed before it, \"sha256\"), the awp.v1 digest"
            )));
        };
        if !is_hex64(digest) {
            return Err(bad(format!(
                "subject digest {TREE_DIGEST_ALGORITHM} must be 64 lowercase hex digits"
            )));
        }
        let p = &s.predicate;
        let expected_name = format!("{}@{}", p.worker_species_id, p.worker_version);
        if subject.name != expected_name {
            return Err(bad(format!(
                "subject name {:?} does not match predicate ({expected_name:?})",
                subject.name
            )));
        }
        match namespace_of(&p.worker_id) {
            Ok(ns) if ns == p.namespace => {}
            _ => {
                return Err(bad(format!(
                    "predicate.namespace {:?} is not the namespace of worker_id {:?}",
                    p.namespace, p.worker_id
                )));
            }
        }
        if p.tree != TreeParams::current() {
            return Err(bad(format!(
                "predicate.tree {:?} is not this Hall's tree definition {:?}",
                p.tree,
                TreeParams::current()
            )));
        }
        Ok(s)
    }

    /// The signed package digest.
    pub fn package_hash(&self) -> &str {
        self.subject
            .first()
            .and_then(|s| s.digest.tree_digest())
            .unwrap_or("")
    }
}

/// Parses an envelope file strictly (duplicate keys and unknown fields refused).
pub fn parse_envelope(bytes: &[u8]) -> Result<Envelope, ManifestV2Error> {
    let value = parse_strict(bytes).map_err(|e| ManifestV2Error::Envelope(e.to_string()))?;
    serde_json::from_value(value).map_err(|e| ManifestV2Error::Envelope(e.to_string()))
}

/// The envelope file text (pretty JSON and a final newline).
pub fn envelope_to_json(envelope: &Envelope) -> String {
    let mut text = serde_json::to_string_pretty(envelope)
        .unwrap_or_else(|_| unreachable!("an envelope is strings only"));
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input() -> ManifestV2Input<'static> {
        ManifestV2Input {
            worker_id: "x.alice.summarizer.i-1",
            worker_species_id: "wrk.doc.summarizer",
            worker_version: "0.3.0",
            package_hash: "a50f9a892ef4512fff038cb39cd3c974f13ca0bff1a41accff2483b4dfdf727e",
            build_source: "ci",
            built_at: UtcTime(1_767_323_045),
            expires_at: None,
        }
    }

    #[test]
    fn statement_round_trips_canonically() {
        let s = Statement::new(&input()).unwrap();
        let bytes = s.to_bytes().unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.starts_with(r#"{"_type":"https://in-toto.io/Statement/v1","predicate":{"build_source":"ci","built_at":"2026-01-02T03:04:05Z","expires_at":null,"namespace":"x.alice","#), "{text}");
        assert!(
            text.contains(r#""digest":{"awpV1TreeSha256":"a50f9a89"#) && !text.contains("sha256\""),
            "{text}"
        );
        assert_eq!(Statement::parse(&bytes).unwrap(), s);
        assert_eq!(s.package_hash(), input().package_hash);
        let env = s.sign(&[&KeyPair::from_seed(&[1; 32])]).unwrap();
        assert_eq!(env.payload_type, PAYLOAD_TYPE);
        let again = parse_envelope(envelope_to_json(&env).as_bytes()).unwrap();
        assert_eq!(again, env);
    }

    #[test]
    fn statements_signed_with_the_legacy_sha256_name_still_parse() {
        // The exact payload shape `attest sign` wrote before `awpV1TreeSha256`.
        let mut s = Statement::new(&input()).unwrap();
        s.subject[0].digest = DigestSet {
            awp_v1_tree_sha256: None,
            sha256: Some(input().package_hash.to_owned()),
        };
        let bytes = s.to_bytes().unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.contains(r#""digest":{"sha256":"a50f9a89"#), "{text}");
        let parsed = Statement::parse(&bytes).unwrap();
        assert_eq!(parsed.package_hash(), input().package_hash);
    }

    #[test]
    fn statements_describing_anything_else_are_refused() {
        let good = Statement::new(&input()).unwrap();
        let mutate = |f: &dyn Fn(&mut Statement)| {
            let mut s = good.clone();
            f(&mut s);
            Statement::parse(&s.to_bytes().unwrap())
                .unwrap_err()
                .to_string()
        };
        assert!(mutate(&|s| s.predicate.tree.allow_symlinks = true).contains("tree"));
        assert!(
            mutate(&|s| s
                .predicate
                .tree
                .excluded_names
                .pop()
                .map(drop)
                .unwrap_or(()))
            .contains("tree")
        );
        assert!(mutate(&|s| s.predicate.namespace = "x.mallory".into()).contains("namespace"));
        assert!(mutate(&|s| s.subject.push(s.subject[0].clone())).contains("exactly one"));
        assert!(mutate(&|s| s.subject[0].name = "wrk.other@1".into()).contains("subject name"));
        assert!(mutate(&|s| s.subject[0].digest = DigestSet::tree("ABC")).contains("64"));
        // Both names, or neither: ambiguous.
        assert!(
            mutate(&|s| s.subject[0].digest.sha256 = Some("a".repeat(64))).contains("exactly one")
        );
        assert!(mutate(&|s| s.subject[0].digest.awp_v1_tree_sha256 = None).contains("exactly one"));
        assert!(mutate(&|s| s.predicate_type = "x".into()).contains("predicateType"));
        let dup = br#"{"_type":"a","_type":"b"}"#;
        assert!(Statement::parse(dup).is_err());
        assert!(
            parse_envelope(br#"{"payload":"","payloadType":"t","signatures":[],"x":1}"#).is_err()
        );
    }
}
