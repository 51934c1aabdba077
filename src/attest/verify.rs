//! Verifying one package against its manifest, in a fixed order of checks, into a
//! [`VerificationReport`].
//!
//! **awp.v1** (PyHall's five codes keep PyHall's order; the Hall's checks are marked +):
//! 1. `ATTEST_MANIFEST_MISSING` — no file, unreadable, not JSON, or not a JSON object;
//! 2. `ATTEST_MANIFEST_ID_MISMATCH` — `worker_id` / `worker_species_id` differ from the expected;
//! 3. + with a trust policy: `ATTEST_TRUST_POLICY_EXPIRED`; `ATTEST_NAMESPACE_UNTRUSTED` unless
//!      the worker id's namespace is in the policy with `accept_awp_v1`; `ATTEST_DIGEST_BANNED`
//!      for a banned `package_hash`;
//! 4. + `ATTEST_TREE_UNSAFE` / `ATTEST_TREE_UNREADABLE` / `ATTEST_STORE_FAILED` while hashing,
//!      then `ATTEST_HASH_MISMATCH`;
//! 5. `ATTEST_SIGNATURE_MISSING` — no (truthy) signature, or no HMAC key;
//! 6. `ATTEST_SIG_INVALID` — constant-time HMAC comparison fails;
//! 7. + without a trust policy: `ATTEST_NAMESPACE_UNTRUSTED` when the worker id has no
//!      `org.`/`x.` namespace (PyHall raises `ValueError` here).
//!
//! **awp.v2**: `ATTEST_MANIFEST_MISSING` → `ATTEST_MANIFEST_INVALID` (not a DSSE envelope) →
//! `ATTEST_NAMESPACE_UNTRUSTED` (no policy, no namespace, namespace not in the policy) /
//! `ATTEST_TRUST_POLICY_EXPIRED` → signatures (`ATTEST_SIGNATURE_MISSING`, `ATTEST_KEY_REVOKED`,
//! `ATTEST_THRESHOLD_NOT_MET`, `ATTEST_KEY_EXPIRED`, `ATTEST_SIG_INVALID`,
//! `ATTEST_KEY_UNTRUSTED`) → `ATTEST_MANIFEST_INVALID` (payload type, statement) →
//! `ATTEST_MANIFEST_ID_MISMATCH` → `ATTEST_MANIFEST_EXPIRED` → `ATTEST_DIGEST_BANNED` → tree
//! (`ATTEST_TREE_*`, `ATTEST_STORE_FAILED`, `ATTEST_HASH_MISMATCH`).
//!
//! Cheap checks run before the package is read, so a bad signature never costs a copy. With a
//! store, the copy is published only after every check passed.

use std::io::Read as _;
use std::path::Path;

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::manifest_v1::{self, HmacKey, MAX_MANIFEST_BYTES};
use super::manifest_v2::{self, PAYLOAD_TYPE, Statement};
use super::namespace_of;
use super::report::{AttestCode, ManifestFormat, Protection, VerificationReport};
use super::store::{IngestState, PackageStore, StoreError};
use super::time::UtcTime;
use super::tree::{self, TreeDigest, TreeError, TreeLimits};
use super::trust::TrustPolicy;
use crate::common::hex;
use crate::pyjson::py_truthy;

/// What to verify and with what.
#[derive(Debug, Clone)]
pub struct VerifyRequest<'a> {
    pub package_root: &'a Path,
    pub manifest_path: &'a Path,
    /// The worker id the caller expects (from the registry record, never from the manifest):
    /// its namespace selects the trusted keys.
    pub worker_id: &'a str,
    pub worker_species_id: &'a str,
    /// Required for awp.v2; optional for awp.v1 (PyHall mode without it).
    pub trust: Option<&'a TrustPolicy>,
    /// The awp.v1 HMAC key (from a file).
    pub hmac_key: Option<&'a HmacKey>,
    /// Where verified copies go; without it the source is hashed in place (no copy).
    pub store: Option<&'a PackageStore>,
    /// Limits when no store is given (the store carries its own).
    pub limits: TreeLimits,
    pub now: UtcTime,
}

/// A denial: code, sentence, PyHall-style meta.
struct Deny(AttestCode, String, Map<String, Value>);

fn deny(code: AttestCode, message: impl Into<String>) -> Deny {
    Deny(code, message.into(), Map::new())
}

fn meta(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// What happened along the way (for the protections list).
#[derive(Default)]
struct Progress {
    tree_scanned: bool,
    copied_or_reused: bool,
    excluded_count: usize,
    signature: Option<Protection>,
    namespace_bound: Option<bool>,
    policy_checked: bool,
}

fn tree_deny(e: &TreeError) -> Deny {
    let code = match e {
        TreeError::Copy { .. } => AttestCode::StoreFailed,
        TreeError::Io { .. } => AttestCode::TreeUnreadable,
        _ => AttestCode::TreeUnsafe,
    };
    deny(code, e.to_string())
}

fn store_deny(e: &StoreError) -> Deny {
    match e {
        StoreError::Tree(t) => tree_deny(t),
        other => deny(AttestCode::StoreFailed, other.to_string()),
    }
}

/// Reads the manifest (at most 1 MiB). `Err` carries PyHall's `{"error": …}` meta, or none
/// when the file does not exist.
fn read_manifest(path: &Path) -> Result<Vec<u8>, Deny> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(deny(
                AttestCode::ManifestMissing,
                format!(
                    "manifest {} does not exist; sign the package with `wcp-hall attest sign`",
                    path.display()
                ),
            ));
        }
        Err(e) => {
            return Err(Deny(
                AttestCode::ManifestMissing,
                format!("cannot read manifest {}: {e}", path.display()),
                meta(json!({"error": e.to_string()})),
            ));
        }
    };
    let mut bytes = Vec::new();
    if let Err(e) = file.take(MAX_MANIFEST_BYTES + 1).read_to_end(&mut bytes) {
        return Err(Deny(
            AttestCode::ManifestMissing,
            format!("cannot read manifest {}: {e}", path.display()),
            meta(json!({"error": e.to_string()})),
        ));
    }
    if bytes.len() as u64 > MAX_MANIFEST_BYTES {
        return Err(Deny(
            AttestCode::ManifestMissing,
            format!("manifest {} is larger than 1 MiB", path.display()),
            meta(json!({"error": "manifest larger than 1 MiB"})),
        ));
    }
    Ok(bytes)
}

/// The outcome of hashing (and maybe copying) the package.
struct Hashed<'s> {
    tree: TreeDigest,
    cached: bool,
    state: Option<IngestState<'s>>,
}

fn hash_package<'s>(
    req: &VerifyRequest<'s>,
    claimed: &str,
    progress: &mut Progress,
) -> Result<Hashed<'s>, Deny> {
    progress.tree_scanned = true;
    match req.store {
        Some(store) => {
            let ingest = store
                .ingest(req.package_root, Some(claimed))
                .map_err(|e| store_deny(&e))?;
            progress.excluded_count = ingest.tree.excluded.len();
            Ok(Hashed {
                tree: ingest.tree,
                cached: ingest.cached,
                state: Some(ingest.state),
            })
        }
        None => {
            let tree = tree::hash_tree(req.package_root, &req.limits).map_err(|e| tree_deny(&e))?;
            progress.excluded_count = tree.excluded.len();
            Ok(Hashed {
                tree,
                cached: false,
                state: None,
            })
        }
    }
}

/// Publishes the verified copy (if a store is used) and returns its path.
fn publish(
    state: Option<IngestState<'_>>,
    progress: &mut Progress,
) -> Result<Option<std::path::PathBuf>, Deny> {
    match state {
        None => Ok(None),
        Some(IngestState::Existing(p)) => {
            progress.copied_or_reused = true;
            Ok(Some(p))
        }
        Some(IngestState::Staged(s)) => {
            let p = s.commit().map_err(|e| store_deny(&e))?;
            progress.copied_or_reused = true;
            Ok(Some(p))
        }
        Some(IngestState::Mismatch) => Err(deny(
            AttestCode::HashMismatch,
            "package digest changed during verification",
        )),
    }
}

/// Verifies a package; never panics, never returns an error: every failure is a code.
pub fn verify_package(req: &VerifyRequest<'_>) -> VerificationReport {
    let mut report = VerificationReport {
        ok: false,
        code: None,
        message: String::new(),
        format: None,
        worker_id: req.worker_id.to_owned(),
        worker_species_id: req.worker_species_id.to_owned(),
        namespace: namespace_of(req.worker_id).ok(),
        package_root: req.package_root.to_owned(),
        manifest_path: req.manifest_path.to_owned(),
        manifest_sha256: None,
        manifest_package_hash: None,
        package_hash: None,
        files: None,
        bytes: None,
        excluded: Vec::new(),
        excluded_count: 0,
        signer_key_ids: Vec::new(),
        threshold: None,
        trust_policy: req.trust.map(TrustPolicy::reference),
        store_path: None,
        cached: false,
        verified_at: req.now.to_string(),
        protections: Vec::new(),
        meta: Map::new(),
    };
    let mut progress = Progress::default();
    let outcome = run(req, &mut report, &mut progress);
    match outcome {
        Ok(message) => {
            report.ok = true;
            report.message = message;
        }
        Err(Deny(code, message, meta)) => {
            report.code = Some(code);
            report.message = message;
            report.meta = meta;
            report.store_path = None;
        }
    }
    report.protections = protections(req, &report, &progress);
    report
}

fn run(
    req: &VerifyRequest<'_>,
    report: &mut VerificationReport,
    progress: &mut Progress,
) -> Result<String, Deny> {
    let bytes = read_manifest(req.manifest_path)?;
    report.manifest_sha256 = Some(hex(&Sha256::digest(&bytes)));
    let value: Value = crate::json::parse_slice(&bytes).map_err(|e| {
        Deny(
            AttestCode::ManifestMissing,
            format!(
                "manifest {} is not valid JSON: {e}",
                req.manifest_path.display()
            ),
            meta(json!({"error": e.to_string()})),
        )
    })?;
    let Value::Object(map) = value else {
        return Err(Deny(
            AttestCode::ManifestMissing,
            format!(
                "manifest {} is not a JSON object",
                req.manifest_path.display()
            ),
            meta(json!({"error": "manifest is not a JSON object"})),
        ));
    };
    if map.contains_key("payloadType") {
        report.format = Some(ManifestFormat::AwpV2);
        run_v2(req, &bytes, report, progress)
    } else {
        report.format = Some(ManifestFormat::AwpV1);
        run_v1(req, &map, report, progress)
    }
}

fn id_mismatch(
    req: &VerifyRequest<'_>,
    manifest_worker_id: &Value,
    manifest_species: &Value,
) -> Deny {
    Deny(
        AttestCode::ManifestIdMismatch,
        format!(
            "the manifest is for worker {manifest_worker_id} / {manifest_species}, not {:?} / {:?}",
            req.worker_id, req.worker_species_id
        ),
        meta(json!({
            "manifest_worker_id": manifest_worker_id,
            "expected_worker_id": req.worker_id,
            "manifest_worker_species_id": manifest_species,
            "expected_worker_species_id": req.worker_species_id,
        })),
    )
}

fn hash_mismatch(expected: &Value, computed: &str) -> Deny {
    Deny(
        AttestCode::HashMismatch,
        format!(
            "the package hashes to {computed}, but the manifest signs {expected}: it was changed after signing (re-sign it, or investigate tampering)"
        ),
        meta(json!({"expected_hash": expected, "computed_hash": computed})),
    )
}

fn banned(policy: &TrustPolicy, digest: &str) -> Result<(), Deny> {
    match policy.banned(digest) {
        Some(reason) => Err(Deny(
            AttestCode::DigestBanned,
            format!(
                "package digest {digest} is banned by the trust policy{}",
                reason
                    .as_ref()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default()
            ),
            meta(json!({"banned_digest": digest, "reason": reason})),
        )),
        None => Ok(()),
    }
}

fn record_tree(report: &mut VerificationReport, hashed: &Hashed<'_>) {
    report.package_hash = Some(hashed.tree.digest.clone());
    report.files = Some(hashed.tree.files);
    report.bytes = Some(hashed.tree.bytes);
    report.excluded_count = hashed.tree.excluded.len();
    report.excluded = hashed
        .tree
        .excluded
        .iter()
        .take(super::report::MAX_LISTED_EXCLUDED)
        .cloned()
        .collect();
    report.cached = hashed.cached;
}

fn run_v1(
    req: &VerifyRequest<'_>,
    m: &Map<String, Value>,
    report: &mut VerificationReport,
    progress: &mut Progress,
) -> Result<String, Deny> {
    let get = |k: &str| m.get(k).cloned().unwrap_or(Value::Null);
    if m.get("worker_id").and_then(Value::as_str) != Some(req.worker_id)
        || m.get("worker_species_id").and_then(Value::as_str) != Some(req.worker_species_id)
    {
        return Err(id_mismatch(
            req,
            &get("worker_id"),
            &get("worker_species_id"),
        ));
    }
    let expected = m
        .get("package_hash")
        .cloned()
        .unwrap_or(Value::String(String::new()));
    let claimed = expected.as_str().unwrap_or("").to_owned();
    report.manifest_package_hash = expected.as_str().map(str::to_owned);
    if let Some(policy) = req.trust {
        progress.policy_checked = true;
        policy
            .check_fresh(req.now)
            .map_err(|f| deny(f.code(), f.to_string()))?;
        let ns = namespace_of(req.worker_id)
            .map_err(|e| deny(AttestCode::NamespaceUntrusted, e.to_string()))?;
        match policy.namespace(&ns) {
            Some(n) if n.accept_awp_v1 => progress.namespace_bound = Some(true),
            Some(_) => {
                return Err(deny(
                    AttestCode::NamespaceUntrusted,
                    format!(
                        "the trust policy does not accept awp.v1 (HMAC) manifests for {ns:?}; sign with awp.v2, or set accept_awp_v1 for the namespace"
                    ),
                ));
            }
            None => {
                return Err(deny(
                    AttestCode::NamespaceUntrusted,
                    format!("the trust policy has no entry for namespace {ns:?}"),
                ));
            }
        }
        banned(policy, &claimed)?;
    }
    let hashed = hash_package(req, &claimed, progress)?;
    record_tree(report, &hashed);
    if claimed.is_empty() || claimed != hashed.tree.digest {
        return Err(hash_mismatch(&expected, &hashed.tree.digest));
    }
    let sig = get("signature_hmac_sha256");
    let key = req.hmac_key.filter(|k| !k.is_empty());
    progress.signature = Some(Protection::applied(
        "signature",
        format!(
            "awp.v1 HMAC-SHA256 (symmetric: any holder of the key can forge), key from {}, constant-time comparison",
            key.and_then(HmacKey::source)
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "memory".into())
        ),
    ));
    let Some(key) = key.filter(|_| py_truthy(&sig)) else {
        return Err(Deny(
            AttestCode::SignatureMissing,
            if py_truthy(&sig) {
                "no awp.v1 HMAC key is configured; pass --hmac-key-file (the key is never read from the environment)".to_owned()
            } else {
                "the manifest has no signature_hmac_sha256".to_owned()
            },
            meta(json!({
                "signature_present": py_truthy(&sig),
                "hmac_key_set": req.hmac_key.is_some_and(|k| !k.is_empty()),
                "hmac_key_file": req.hmac_key.and_then(HmacKey::source).map(|p| p.display().to_string()),
            })),
        ));
    };
    let payload = manifest_v1::signing_payload(m);
    if !key.verify(payload.as_bytes(), &sig) {
        return Err(deny(
            AttestCode::SigInvalid,
            "the HMAC signature does not match (wrong key, or signed fields changed)",
        ));
    }
    let ns = namespace_of(req.worker_id)
        .map_err(|e| deny(AttestCode::NamespaceUntrusted, e.to_string()))?;
    report.store_path = publish(hashed.state, progress)?;
    let attested_at = m
        .get("attested_at_utc")
        .cloned()
        .unwrap_or(Value::String("unknown".into()));
    let attested_text = attested_at
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| attested_at.to_string());
    report.meta = meta(json!({
        "package_hash": hashed.tree.digest,
        "manifest_schema": get("schema_version"),
        "attested_at_utc": attested_at,
        "verified_at_utc": req.now.to_string(),
        "trust_statement": manifest_v1::trust_statement(&ns, &attested_text, &hashed.tree.digest),
    }));
    Ok(format!(
        "awp.v1 package {} verified for {} (HMAC)",
        hashed.tree.digest, req.worker_id
    ))
}

fn run_v2(
    req: &VerifyRequest<'_>,
    bytes: &[u8],
    report: &mut VerificationReport,
    progress: &mut Progress,
) -> Result<String, Deny> {
    let envelope = manifest_v2::parse_envelope(bytes)
        .map_err(|e| deny(AttestCode::ManifestInvalid, e.to_string()))?;
    let Some(policy) = req.trust else {
        return Err(deny(
            AttestCode::NamespaceUntrusted,
            "awp.v2 manifests are verified against a namespace trust policy; pass --trust FILE",
        ));
    };
    progress.policy_checked = true;
    let ns = namespace_of(req.worker_id)
        .map_err(|e| deny(AttestCode::NamespaceUntrusted, e.to_string()))?;
    let check = policy
        .check_envelope(&ns, &envelope, req.now)
        .map_err(|f| deny(f.code(), f.to_string()))?;
    progress.namespace_bound = Some(true);
    // DSSE order: signatures first (above), then the payload type, then the payload.
    if envelope.payload_type != PAYLOAD_TYPE {
        return Err(deny(
            AttestCode::ManifestInvalid,
            format!(
                "payloadType is {:?}; awp.v2 manifests are {PAYLOAD_TYPE:?}",
                envelope.payload_type
            ),
        ));
    }
    let verified = check;
    report.signer_key_ids = verified.signer_key_ids.clone();
    report.threshold = Some(verified.threshold);
    progress.signature = Some(Protection::applied(
        "signature",
        format!(
            "awp.v2 Ed25519 over DSSE PAE: {} of threshold {} keys trusted for {ns} (trust policy version {})",
            verified.signer_key_ids.len(),
            verified.threshold,
            policy.version
        ),
    ));
    let statement = Statement::parse(&verified.payload)
        .map_err(|e| deny(AttestCode::ManifestInvalid, e.to_string()))?;
    let p = &statement.predicate;
    if p.worker_id != req.worker_id || p.worker_species_id != req.worker_species_id {
        return Err(id_mismatch(
            req,
            &Value::String(p.worker_id.clone()),
            &Value::String(p.worker_species_id.clone()),
        ));
    }
    if let Some(t) = p.expires_at
        && req.now > t
    {
        return Err(Deny(
            AttestCode::ManifestExpired,
            format!("the manifest expired at {t}; re-sign the package"),
            meta(json!({"expires_at": t.to_string()})),
        ));
    }
    let claimed = statement.package_hash().to_owned();
    report.manifest_package_hash = Some(claimed.clone());
    banned(policy, &claimed)?;
    let hashed = hash_package(req, &claimed, progress)?;
    record_tree(report, &hashed);
    if claimed != hashed.tree.digest {
        return Err(hash_mismatch(&Value::String(claimed), &hashed.tree.digest));
    }
    report.store_path = publish(hashed.state, progress)?;
    report.meta = meta(json!({
        "package_hash": hashed.tree.digest,
        "manifest_schema": p.schema_version,
        "worker_version": p.worker_version,
        "built_at": p.built_at.to_string(),
        "build_source": p.build_source,
        "verified_at_utc": req.now.to_string(),
    }));
    Ok(format!(
        "awp.v2 package {} verified for {} ({} of {} trusted keys for {ns})",
        hashed.tree.digest,
        req.worker_id,
        verified.signer_key_ids.len(),
        verified.threshold
    ))
}

fn protections(
    req: &VerifyRequest<'_>,
    report: &VerificationReport,
    progress: &Progress,
) -> Vec<Protection> {
    let mut out = Vec::new();
    if progress.tree_scanned {
        let limits = req.store.map(|s| *s.limits()).unwrap_or(req.limits);
        out.push(Protection::applied(
            "no_links",
            "symbolic links of any kind refused; every entry opened with openat2(RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS|RESOLVE_NO_MAGICLINKS) and O_NOFOLLOW",
        ));
        out.push(Protection::applied(
            "regular_files_only",
            "FIFOs, sockets and devices refused",
        ));
        out.push(Protection::applied(
            "unambiguous_names",
            "non-UTF-8 names and names with control characters refused",
        ));
        out.push(Protection::applied(
            "tree_limits",
            format!(
                "at most {} entries, {} bytes, depth {}, paths of {} bytes",
                limits.max_entries, limits.max_total_bytes, limits.max_depth, limits.max_path_bytes
            ),
        ));
    }
    if req.store.is_some() {
        if progress.copied_or_reused {
            out.push(Protection::applied(
                "verified_copy",
                "hashed while copying into the Hall-owned content-addressed store; workers run from store_path only",
            ));
            out.push(Protection::applied(
                "excluded_not_copied",
                format!(
                    "{} excluded entr{} (PyHall's exclusions: __pycache__, *.pyc, nested manifest.json, …) left out of the copy",
                    progress.excluded_count,
                    if progress.excluded_count == 1 { "y" } else { "ies" }
                ),
            ));
            out.push(Protection::applied(
                "read_only_copy",
                "files 0444, directories 0555, owned by the Hall; published by an atomic rename",
            ));
        }
    } else if progress.tree_scanned {
        out.push(Protection::not_applied(
            "verified_copy",
            "no package store: the source directory was hashed in place, so running it stays open to changes after verification",
        ));
    }
    if req.store.is_some() && progress.copied_or_reused {
        out.push(Protection::not_applied(
            "fs_verity",
            "not attempted: the Hall does not enable fs-verity (unavailable on the reference kernel, attestation-anchors §4.3); the copy is protected by ownership and mode bits only",
        ));
    }
    if let Some(sig) = &progress.signature {
        out.push(sig.clone());
    }
    match (report.format, progress.namespace_bound) {
        (_, Some(true)) => out.push(Protection::applied(
            "namespace_binding",
            "keys looked up by the namespace of the expected worker_id only",
        )),
        (Some(ManifestFormat::AwpV1), _) if req.trust.is_none() => {
            out.push(Protection::not_applied(
                "namespace_binding",
                "no trust policy: the awp.v1 HMAC key is not bound to a namespace",
            ))
        }
        _ => {}
    }
    if progress.policy_checked {
        out.push(Protection::applied(
            "revocation_and_bans",
            "revoked keys and banned digests of the trust policy checked",
        ));
    } else if req.trust.is_none() && report.format == Some(ManifestFormat::AwpV1) {
        out.push(Protection::not_applied(
            "revocation_and_bans",
            "no trust policy given",
        ));
    }
    match report.format {
        Some(ManifestFormat::AwpV2) if progress.namespace_bound.is_some() => {
            out.push(Protection::applied(
                "key_validity",
                "each key's not_before/not_after checked at verification time",
            ))
        }
        Some(ManifestFormat::AwpV1) => out.push(Protection::not_applicable(
            "key_validity",
            "HMAC keys have no validity window",
        )),
        _ => {}
    }
    out
}
