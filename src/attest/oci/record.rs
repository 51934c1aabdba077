//! Records that name `package_ref = "oci://HOST/REPO@sha256:…"`: the Hall fetches the package
//! when it loads its registry (start and reload), never on the dispatch path, and dispatches
//! verify from the kept source as for any `package_root`.
//!
//! What happens when a piece is down (docs/oci.md): a source already kept is verified again
//! from disk, without the registry; a registry that is down, or serves something refused, for a
//! package not yet kept leaves the worker without a source, so its dispatches are denied with
//! the attestation code (`ATTEST_MANIFEST_MISSING`) until a reload fetches it. The reason is
//! logged; loading never fails because of a registry.

use std::path::PathBuf;
use std::time::Duration;

use super::{OciRef, PullOptions, pull};
use crate::attest::{HmacKey, PackageStore, TrustPolicy, UtcTime};

/// The largest package layer a Hall fetches for a record (1 GiB).
pub const RECORD_MAX_LAYER_BYTES: u64 = 1 << 30;

/// What the Hall fetches records' packages with.
pub struct RecordFetch<'a> {
    pub trust: &'a TrustPolicy,
    pub hmac_key: Option<&'a HmacKey>,
    pub store: &'a PackageStore,
    /// `<state_dir>/oci`.
    pub sources_dir: PathBuf,
    /// `[attestation] oci_plain_http`: loopback registries spoken to without TLS.
    pub plain_http: &'a [String],
}

impl RecordFetch<'_> {
    /// The package root and manifest a record's `package_ref` is verified from; fetched now if
    /// not kept yet. When the fetch fails, the path returned does not exist (so the worker's
    /// dispatches are denied) and the reason is logged.
    pub fn source(&self, package_ref: &str, worker_id: &str, species: &str) -> (PathBuf, PathBuf) {
        let missing = |name: &str| {
            let root = self.sources_dir.join(name);
            let manifest = root.join(crate::attest::manifest_v2::DEFAULT_FILE_NAME);
            (root, manifest)
        };
        let r = match OciRef::parse(package_ref) {
            Ok(r) if r.digest.is_some() => r,
            _ => {
                tracing::warn!(
                    worker_id,
                    package_ref,
                    "package_ref is not pinned by digest"
                );
                return missing("invalid-reference");
            }
        };
        let entry = r.digest.clone().unwrap_or_default().replace(':', "-");
        // Progress of a long fetch in the journal: one line per quarter of the layer.
        let quarter = std::sync::atomic::AtomicU64::new(0);
        let progress = |got: u64, total: u64| {
            let q = (got.saturating_mul(4)).checked_div(total).unwrap_or(4);
            if quarter.fetch_max(q, std::sync::atomic::Ordering::Relaxed) < q {
                tracing::info!(
                    worker_id,
                    package_ref,
                    bytes = got,
                    total,
                    "fetching the package"
                );
            }
        };
        let opts = PullOptions {
            plain_http: self.plain_http.contains(&r.host),
            trust: self.trust,
            hmac_key: self.hmac_key,
            store: self.store,
            sources_dir: &self.sources_dir,
            worker_id: Some(worker_id),
            worker_species_id: Some(species),
            max_layer_bytes: RECORD_MAX_LAYER_BYTES,
            timeout: Duration::from_secs(60),
            progress: Some(&progress),
            now: UtcTime::now(),
        };
        match pull(package_ref, &opts) {
            Ok(p) => {
                if !p.reused {
                    tracing::info!(worker_id, package_ref, "fetched and verified the package");
                }
                (p.package_root, p.manifest_path)
            }
            Err(e) => {
                tracing::warn!(
                    worker_id,
                    package_ref,
                    code = e.code().map(|c| c.as_str()),
                    "package not available: {e}"
                );
                missing(&entry)
            }
        }
    }
}
