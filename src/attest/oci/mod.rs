//! Worker packages as OCI artifacts: `push` a signed package to an OCI registry, `pull` one into
//! the verified store.
//!
//! The artifact (see docs/oci.md):
//! - the **package manifest**: an OCI image manifest with `artifactType`
//!   [`PACKAGE_ARTIFACT_TYPE`], the empty config, and one layer, the package tree as a
//!   reproducible tar ([`layer::pack`], media type [`PACKAGE_LAYER_TYPE`]); its annotations name
//!   the worker, the species, the manifest format and the awp.v1 tree digest (informative only);
//! - the **signature**: a second manifest whose `subject` is the package manifest, with
//!   `artifactType` [`SIGNATURE_ARTIFACT_TYPE_V2`] (a DSSE envelope, awp.v2) or
//!   [`SIGNATURE_ARTIFACT_TYPE_V1`] (PyHall's HMAC `manifest.json`), its one layer the signed
//!   manifest's exact bytes; listed by the OCI 1.1 referrers API and, for registries without
//!   it, by the referrers tag scheme (an image index tagged `sha256-<hex>`), which the push
//!   maintains.
//!
//! Threat model: the registry, the network path to it and everything they serve are hostile; a
//! registry may answer any request with any bytes, stall, or close mid-transfer. Before the
//! signature is checked, the only trusted input is the digest in the reference (pinned in the
//! record, or printed by a tag resolution the operator asked for).
//! - **Content addressing.** The package manifest must hash to the pinned digest; the layer and
//!   every signature blob must hash to the digests and sizes their manifests give. A tampered
//!   blob or a swapped manifest is `ATTEST_HASH_MISMATCH` before anything is unpacked.
//! - **Bounds.** Manifests and referrer indexes (4 MiB), signature blobs (1 MiB) and the layer
//!   have size limits, checked against the descriptor before a download and against the bytes
//!   while streaming (a registry that sends more than it announced is cut off); at most
//!   [`MAX_SIGNATURES`] signatures are tried; the unpacked tree is bounded by
//!   [`TreeLimits`](crate::attest::TreeLimits).
//!   Every download has a read timeout.
//! - **Staging.** Downloads and the unpacked tree live in a private staging directory that is
//!   removed whatever happens; only after `verify_package` accepted the tree against the trust
//!   policy (signature, namespace, ids, expiry, bans, tree digest) is the copy published to the
//!   store (by the store's atomic rename) and the unpacked source moved to its content-addressed
//!   place. A refusal or an interrupted pull leaves nothing half-stored.
//! - **The tar** is refused entry by entry as `layer` describes (traversal, links, devices,
//!   duplicates, excluded names, bombs).
//! - **Transport.** TLS always, except plain HTTP to a loopback registry the operator listed
//!   ([`PullOptions::plain_http`]); TLS does not replace the signature check, it keeps
//!   credentials private.
//!
//! Manifests and referrer indexes are read with our own bounded GET (oci-client reads those
//! bodies whole), authenticated with the token oci-client obtained; blobs stream through
//! oci-client with our byte count and hash.
//!
//! Out of scope: availability (a registry that refuses to serve leaves the stored copy in use,
//! never a newer one).

pub mod auth;
pub mod layer;
mod record;
mod registry;

pub use record::{RECORD_MAX_LAYER_BYTES, RecordFetch};
pub use registry::{
    PullError, PullOptions, Pulled, PushError, PushOptions, Pushed, pull, push, resolve,
};

/// The `artifactType` of a worker package.
pub const PACKAGE_ARTIFACT_TYPE: &str = "application/vnd.wcp-hall.worker-package.v1";
/// The media type of the package layer (an uncompressed, reproducible tar).
pub const PACKAGE_LAYER_TYPE: &str = "application/vnd.wcp-hall.worker-package.layer.v1.tar";
/// The `artifactType` (and layer media type) of an awp.v2 signature: the DSSE envelope.
pub const SIGNATURE_ARTIFACT_TYPE_V2: &str = "application/vnd.dsse.envelope.v1+json";
/// The `artifactType` (and layer media type) of an awp.v1 signature: PyHall's manifest.json.
pub const SIGNATURE_ARTIFACT_TYPE_V1: &str = "application/vnd.wcp-hall.manifest.awp-v1+json";
/// OCI 1.1's empty descriptor, the config of both manifests.
pub const EMPTY_CONFIG_TYPE: &str = "application/vnd.oci.empty.v1+json";
pub const EMPTY_CONFIG: &[u8] = b"{}";
pub const OCI_MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX_TYPE: &str = "application/vnd.oci.image.index.v1+json";

/// Annotations of the package manifest (informative; never trusted over the signature).
pub const ANNOTATION_WORKER_ID: &str = "dev.wcp-hall.worker-id";
pub const ANNOTATION_SPECIES: &str = "dev.wcp-hall.worker-species-id";
pub const ANNOTATION_TREE_DIGEST: &str = "dev.wcp-hall.tree-digest";
pub const ANNOTATION_FORMAT: &str = "dev.wcp-hall.manifest-format";

/// At most this many signature referrers are looked at.
pub const MAX_SIGNATURES: usize = 16;
/// Largest manifest or index accepted.
pub const MAX_MANIFEST_BYTES: u64 = 4 << 20;

/// An `oci://HOST[:PORT]/REPO[:TAG][@sha256:HEX]` reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OciRef {
    pub host: String,
    pub repository: String,
    pub tag: Option<String>,
    /// `sha256:<64 hex>`.
    pub digest: Option<String>,
}

/// A reference that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reference:?} is not an OCI reference: {problem}")]
pub struct RefError {
    pub reference: String,
    pub problem: String,
}

pub(crate) fn is_sha256_digest(d: &str) -> bool {
    d.strip_prefix("sha256:")
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
}

impl OciRef {
    /// Parses `oci://HOST/REPO…` or, for the CLI, the same without the scheme. The host must be
    /// explicit (a name with a dot or port, or `localhost`): there is no default registry.
    pub fn parse(text: &str) -> Result<Self, RefError> {
        let err = |problem: &str| RefError {
            reference: text.chars().take(200).collect(),
            problem: problem.to_owned(),
        };
        let rest = text.strip_prefix("oci://").unwrap_or(text);
        if rest.is_empty() || rest.len() > 1024 || rest.chars().any(|c| c.is_control() || c == ' ')
        {
            return Err(err("empty, too long, or with spaces or control characters"));
        }
        let (rest, digest) = match rest.split_once('@') {
            Some((r, d)) => {
                if !is_sha256_digest(d) {
                    return Err(err(
                        "the digest must be sha256: and 64 lowercase hex digits",
                    ));
                }
                (r, Some(d.to_owned()))
            }
            None => (rest, None),
        };
        let (host, path) = rest
            .split_once('/')
            .ok_or_else(|| err("expected HOST/REPOSITORY"))?;
        if host.is_empty()
            || !(host.contains('.') || host.contains(':') || host == "localhost")
            || !host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
        {
            return Err(err(
                "the registry host must be explicit (a domain name, an address or HOST:PORT)",
            ));
        }
        let (repository, tag) = match path.rsplit_once(':') {
            Some((r, t)) if !t.contains('/') => (r, Some(t.to_owned())),
            _ => (path, None),
        };
        let repo_ok = !repository.is_empty()
            && repository.split('/').all(|c| {
                !c.is_empty()
                    && c.bytes().all(|b| {
                        b.is_ascii_lowercase()
                            || b.is_ascii_digit()
                            || matches!(b, b'.' | b'_' | b'-')
                    })
                    && c.as_bytes()[0].is_ascii_alphanumeric()
            });
        if !repo_ok {
            return Err(err(
                "the repository must be lowercase letters, digits, '.', '_', '-' in '/'-separated parts",
            ));
        }
        if let Some(t) = &tag
            && (t.is_empty()
                || t.len() > 128
                || !t
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')))
        {
            return Err(err("a tag is 1-128 letters, digits, '.', '_', '-'"));
        }
        Ok(OciRef {
            host: host.to_owned(),
            repository: repository.to_owned(),
            tag,
            digest,
        })
    }

    /// This reference pinned to `digest` (the tag dropped).
    pub fn pinned(&self, digest: &str) -> OciRef {
        OciRef {
            tag: None,
            digest: Some(digest.to_owned()),
            ..self.clone()
        }
    }

    /// Whether the host is a loopback address or `localhost` (the only hosts plain HTTP may
    /// be allowed for).
    pub fn is_loopback(&self) -> bool {
        let name = match self.host.rsplit_once(':') {
            Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) && !h.ends_with(':') => h,
            _ => self.host.as_str(),
        };
        let name = name.trim_start_matches('[').trim_end_matches(']');
        name == "localhost"
            || name
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }

    pub(crate) fn to_client_ref(&self) -> oci_client::Reference {
        match (&self.tag, &self.digest) {
            (_, Some(d)) => oci_client::Reference::with_digest(
                self.host.clone(),
                self.repository.clone(),
                d.clone(),
            ),
            (Some(t), None) => oci_client::Reference::with_tag(
                self.host.clone(),
                self.repository.clone(),
                t.clone(),
            ),
            (None, None) => oci_client::Reference::with_tag(
                self.host.clone(),
                self.repository.clone(),
                "latest".into(),
            ),
        }
    }
}

impl std::fmt::Display for OciRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "oci://{}/{}", self.host, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_parse_strictly() {
        let d = format!("sha256:{}", "a".repeat(64));
        let r = OciRef::parse(&format!("oci://127.0.0.1:5000/wcp/hello@{d}")).unwrap();
        assert_eq!(r.host, "127.0.0.1:5000");
        assert_eq!(r.repository, "wcp/hello");
        assert_eq!(r.digest.as_deref(), Some(d.as_str()));
        assert!(r.is_loopback());
        let r = OciRef::parse("ghcr.io/acme/worker:v1").unwrap();
        assert_eq!(r.tag.as_deref(), Some("v1"));
        assert!(!r.is_loopback());
        assert_eq!(r.to_string(), "oci://ghcr.io/acme/worker:v1");
        assert!(OciRef::parse("[::1]:5000/a").unwrap().is_loopback());
        assert!(
            !OciRef::parse("127.0.0.1.evil.example/a")
                .unwrap()
                .is_loopback()
        );
        for bad in [
            "oci://",
            "busybox",
            "library/busybox",
            "oci://h.io/UPPER",
            "oci://h.io/a@sha256:abc",
            "oci://h.io/a@md5:00",
            "oci://h.io/../x",
            "oci://h.io/a:b c",
            "oci://h.io//a",
        ] {
            assert!(OciRef::parse(bad).is_err(), "{bad}");
        }
    }
}
