//! Signing a package: hash its tree (refusing what verification would refuse), build the
//! manifest of either format, and write it atomically.
//!
//! Threat model: the signer's package directory may hold a planted link at the manifest path;
//! the manifest is written to `manifest.tmp` (created exclusively, never through a link) and
//! renamed over the target, which replaces a link instead of following it.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::manifest_v1::{HmacKey, ManifestV1, ManifestV1Input};
use super::manifest_v2::{self, ManifestV2Error, ManifestV2Input, Statement};
use super::time::UtcTime;
use super::tree::{TreeDigest, TreeError, TreeLimits, hash_tree};
use super::{NamespaceError, namespace_of};
use crate::crypto::{Envelope, KeyPair};

/// What a manifest says about the package (the digest is computed).
#[derive(Debug, Clone)]
pub struct SignRequest<'a> {
    pub package_root: &'a Path,
    pub worker_id: &'a str,
    pub worker_species_id: &'a str,
    pub worker_version: &'a str,
    pub build_source: &'a str,
    pub built_at: UtcTime,
    /// awp.v2 only.
    pub expires_at: Option<UtcTime>,
    pub limits: TreeLimits,
}

/// Why a package could not be signed.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error(transparent)]
    Tree(#[from] TreeError),
    #[error(transparent)]
    Namespace(#[from] NamespaceError),
    #[error(transparent)]
    Encoding(#[from] ManifestV2Error),
    #[error("awp.v2 needs at least one signing key")]
    NoKeys,
}

/// An awp.v1 manifest for the package (PyHall's `build_manifest`).
pub fn sign_v1(
    req: &SignRequest<'_>,
    key: &HmacKey,
) -> Result<(TreeDigest, ManifestV1), SignError> {
    // PyHall derives the namespace before hashing: fail fast on a bad worker id.
    namespace_of(req.worker_id)?;
    let tree = hash_tree(req.package_root, &req.limits)?;
    let manifest = ManifestV1::build(
        &ManifestV1Input {
            worker_id: req.worker_id,
            worker_species_id: req.worker_species_id,
            worker_version: req.worker_version,
            package_hash: &tree.digest,
            build_source: req.build_source,
            at: req.built_at,
        },
        key,
    )?;
    Ok((tree, manifest))
}

/// An awp.v2 envelope for the package, one Ed25519 signature per key.
pub fn sign_v2(
    req: &SignRequest<'_>,
    keys: &[&KeyPair],
) -> Result<(TreeDigest, Statement, Envelope), SignError> {
    if keys.is_empty() {
        return Err(SignError::NoKeys);
    }
    namespace_of(req.worker_id)?;
    let tree = hash_tree(req.package_root, &req.limits)?;
    let statement = Statement::new(&ManifestV2Input {
        worker_id: req.worker_id,
        worker_species_id: req.worker_species_id,
        worker_version: req.worker_version,
        package_hash: &tree.digest,
        build_source: req.build_source,
        built_at: req.built_at,
        expires_at: req.expires_at,
    })?;
    let envelope = statement.sign(keys)?;
    Ok((tree, statement, envelope))
}

/// The awp.v2 envelope file text.
pub fn envelope_text(envelope: &Envelope) -> String {
    manifest_v2::envelope_to_json(envelope)
}

/// Writes `text` to `path` atomically through a sibling `manifest.tmp` (excluded from the
/// package hash), never following a link at either name.
pub fn write_manifest(path: &Path, text: &str) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = dir.join("manifest.tmp");
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}
