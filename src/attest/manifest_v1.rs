//! awp.v1 manifests exactly as PyHall 0.3.0 writes and checks them (pyhall-spec §4).
//!
//! A manifest is a flat JSON object; its HMAC-SHA256 signature covers the *signing payload*:
//! Python `json.dumps` of the seven keys `schema_version, worker_id, worker_species_id,
//! worker_version, package_hash, built_at_utc, build_source` (missing ones as `null`) with
//! `sort_keys=True, separators=(",", ":")` and `ensure_ascii` escaping. `attested_at_utc`,
//! `trust_statement` and any other key are not signed. The file on disk is
//! `json.dumps(manifest, indent=2, sort_keys=True) + "\n"`.
//!
//! Threat model: HMAC is symmetric — whoever can verify can forge — so awp.v1 is accepted only
//! as PyHall's legacy format. What the Hall does better than PyHall while staying compatible:
//! the key comes from a file that only its owner can read ([`HmacKey::read`]), never from the
//! environment (where every spawned worker would inherit it); the signature is compared in
//! constant time on the decoded MAC (lowercase hex only, as PyHall's `compare_digest` of hex
//! strings); and a non-string or non-ASCII signature is `ATTEST_SIG_INVALID` instead of a
//! Python `TypeError`. Everything here is pure except reading the key file.

use std::fmt::Write as _;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Map, Value};
use sha2::Sha256;
use zeroize::Zeroizing;

use super::namespace_of;
use super::time::UtcTime;
use crate::common::hex;
use crate::pyjson::{self, Separators};

/// `schema_version` of awp.v1 manifests.
pub const SCHEMA_VERSION: &str = "awp.v1";

/// The keys covered by the signature, in PyHall's list order.
pub const SIGNED_KEYS: [&str; 7] = [
    "schema_version",
    "worker_id",
    "worker_species_id",
    "worker_version",
    "package_hash",
    "built_at_utc",
    "build_source",
];

/// The largest manifest file the Hall reads.
pub const MAX_MANIFEST_BYTES: u64 = 1 << 20;

/// Why the HMAC key file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum HmacKeyError {
    #[error("cannot read HMAC key {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "refusing HMAC key {}: mode {mode:04o} lets group or others read it (anyone who can read an awp.v1 key can forge manifests); run `chmod 600 {}`",
        .path.display(), .path.display()
    )]
    InsecureMode { path: PathBuf, mode: u32 },
    #[error("HMAC key {} is larger than 4096 bytes; it should hold one secret line", .path.display())]
    TooLarge { path: PathBuf },
}

/// The awp.v1 signing secret (PyHall's `WCP_ATTEST_HMAC_KEY`), zeroized on drop.
pub struct HmacKey {
    secret: Zeroizing<Vec<u8>>,
    source: Option<PathBuf>,
}

impl std::fmt::Debug for HmacKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "HmacKey({} bytes from {:?})",
            self.secret.len(),
            self.source
        )
    }
}

impl HmacKey {
    /// The key as PyHall would use the string `secret` (its UTF-8 bytes).
    pub fn from_secret(secret: &str) -> Self {
        HmacKey {
            secret: Zeroizing::new(secret.as_bytes().to_vec()),
            source: None,
        }
    }

    /// Reads the key file: its bytes, minus one trailing newline (`\n` or `\r\n`) so that
    /// `echo "$SECRET" > key` works. Refuses a file group or others can access.
    pub fn read(path: &Path) -> Result<Self, HmacKeyError> {
        let read = |source| HmacKeyError::Read {
            path: path.to_owned(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(read)?;
        let mode = meta.mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(HmacKeyError::InsecureMode {
                path: path.to_owned(),
                mode,
            });
        }
        if meta.len() > 4096 {
            return Err(HmacKeyError::TooLarge {
                path: path.to_owned(),
            });
        }
        let mut bytes = Zeroizing::new(std::fs::read(path).map_err(read)?);
        if bytes.last() == Some(&b'\n') {
            bytes.pop();
            if bytes.last() == Some(&b'\r') {
                bytes.pop();
            }
        }
        Ok(HmacKey {
            secret: bytes,
            source: Some(path.to_owned()),
        })
    }

    /// An empty key counts as "no key" (PyHall: an empty env var → `ATTEST_SIGNATURE_MISSING`).
    pub fn is_empty(&self) -> bool {
        self.secret.is_empty()
    }

    pub fn source(&self) -> Option<&Path> {
        self.source.as_deref()
    }

    fn mac(&self, payload: &[u8]) -> Hmac<Sha256> {
        // HMAC accepts keys of any length; this cannot fail.
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.secret)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(payload);
        mac
    }

    /// Lowercase hex HMAC-SHA256 of `payload`.
    pub fn sign(&self, payload: &[u8]) -> String {
        hex(&self.mac(payload).finalize().into_bytes())
    }

    /// Constant-time check of a manifest's `signature_hmac_sha256` value. Only a string of 64
    /// lowercase hex digits can match (PyHall compares hex strings, so uppercase fails there
    /// too); the comparison of the MAC bytes is constant-time.
    pub fn verify(&self, payload: &[u8], signature: &Value) -> bool {
        let Some(sig) = signature.as_str() else {
            return false;
        };
        let Some(bytes) = decode_lower_hex(sig) else {
            return false;
        };
        self.mac(payload).verify_slice(&bytes).is_ok()
    }
}

fn decode_lower_hex(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    b.chunks(2)
        .map(|p| Some(nibble(p[0])? << 4 | nibble(p[1])?))
        .collect()
}

/// The signing payload of a manifest object (what PyHall's `_canonical_manifest_payload`
/// returns): the seven signed keys, missing ones as `null`, values of any JSON type.
pub fn signing_payload(manifest: &Map<String, Value>) -> String {
    let mut payload = Map::new();
    for key in SIGNED_KEYS {
        payload.insert(
            key.to_owned(),
            manifest.get(key).cloned().unwrap_or(Value::Null),
        );
    }
    pyjson::dumps_sorted(&Value::Object(payload), Separators::Compact)
}

/// PyHall's trust statement.
pub fn trust_statement(namespace: &str, at: &str, package_hash: &str) -> String {
    format!(
        "Package attested by namespace {namespace} at {at}; package hash sha256:{package_hash}."
    )
}

/// An awp.v1 manifest as PyHall's `build_manifest` creates it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestV1 {
    pub worker_id: String,
    pub worker_species_id: String,
    pub worker_version: String,
    pub package_hash: String,
    pub built_at_utc: String,
    pub attested_at_utc: String,
    pub build_source: String,
    pub trust_statement: String,
    pub signature_hmac_sha256: String,
}

/// What goes into a new awp.v1 manifest.
#[derive(Debug, Clone)]
pub struct ManifestV1Input<'a> {
    pub worker_id: &'a str,
    pub worker_species_id: &'a str,
    pub worker_version: &'a str,
    pub package_hash: &'a str,
    pub build_source: &'a str,
    /// `built_at_utc` and `attested_at_utc` (PyHall sets both to "now").
    pub at: UtcTime,
}

impl ManifestV1 {
    /// Builds and signs a manifest. Fails (like PyHall, before anything is signed) when the
    /// worker id has no `org.<ns>` / `x.<ns>` namespace.
    pub fn build(
        input: &ManifestV1Input<'_>,
        key: &HmacKey,
    ) -> Result<Self, super::NamespaceError> {
        let ns = namespace_of(input.worker_id)?;
        let at = input.at.to_string();
        let mut m = ManifestV1 {
            worker_id: input.worker_id.to_owned(),
            worker_species_id: input.worker_species_id.to_owned(),
            worker_version: input.worker_version.to_owned(),
            package_hash: input.package_hash.to_owned(),
            built_at_utc: at.clone(),
            trust_statement: trust_statement(&ns, &at, input.package_hash),
            attested_at_utc: at,
            build_source: input.build_source.to_owned(),
            signature_hmac_sha256: String::new(),
        };
        m.signature_hmac_sha256 = key.sign(m.signing_payload().as_bytes());
        Ok(m)
    }

    fn fields(&self) -> [(&'static str, &str); 10] {
        // Sorted by key, as `sort_keys=True` writes them.
        [
            ("attested_at_utc", &self.attested_at_utc),
            ("build_source", &self.build_source),
            ("built_at_utc", &self.built_at_utc),
            ("package_hash", &self.package_hash),
            ("schema_version", SCHEMA_VERSION),
            ("signature_hmac_sha256", &self.signature_hmac_sha256),
            ("trust_statement", &self.trust_statement),
            ("worker_id", &self.worker_id),
            ("worker_species_id", &self.worker_species_id),
            ("worker_version", &self.worker_version),
        ]
    }

    /// The manifest as a JSON object.
    pub fn to_map(&self) -> Map<String, Value> {
        self.fields()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), Value::String(v.to_owned())))
            .collect()
    }

    /// The exact signing payload bytes.
    pub fn signing_payload(&self) -> String {
        signing_payload(&self.to_map())
    }

    /// `manifest.json` as PyHall's `write_manifest` writes it:
    /// `json.dumps(m, indent=2, sort_keys=True) + "\n"`.
    pub fn to_json(&self) -> String {
        let mut out = String::from("{\n");
        let fields = self.fields();
        for (i, (k, v)) in fields.iter().enumerate() {
            out.push_str("  ");
            pyjson::write_str(&mut out, k);
            out.push_str(": ");
            pyjson::write_str(&mut out, v);
            if i + 1 < fields.len() {
                out.push(',');
            }
            out.push('\n');
        }
        let _ = writeln!(out, "}}");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v1() -> ManifestV1 {
        ManifestV1::build(
            &ManifestV1Input {
                worker_id: "org.example.my-worker.instance-1",
                worker_species_id: "wrk.example.my-worker",
                worker_version: "1.0.0",
                package_hash: "a50f9a892ef4512fff038cb39cd3c974f13ca0bff1a41accff2483b4dfdf727e",
                build_source: "local",
                at: UtcTime::parse("2026-01-02T03:04:05Z").unwrap(),
            },
            &HmacKey::from_secret("test-secret-key"),
        )
        .unwrap()
    }

    #[test]
    fn pyhall_v1_signature_and_payload() {
        let m = v1();
        assert_eq!(
            m.signing_payload(),
            r#"{"build_source":"local","built_at_utc":"2026-01-02T03:04:05Z","package_hash":"a50f9a892ef4512fff038cb39cd3c974f13ca0bff1a41accff2483b4dfdf727e","schema_version":"awp.v1","worker_id":"org.example.my-worker.instance-1","worker_species_id":"wrk.example.my-worker","worker_version":"1.0.0"}"#
        );
        assert_eq!(
            m.signature_hmac_sha256,
            "459ee35a09b771ae42e23901aae7bf525b229c5b129cbc355b56b426c1e88711"
        );
    }

    #[test]
    fn signature_check_is_strict_about_form() {
        let m = v1();
        let key = HmacKey::from_secret("test-secret-key");
        let payload = m.signing_payload();
        let sig = Value::String(m.signature_hmac_sha256.clone());
        assert!(key.verify(payload.as_bytes(), &sig));
        let upper = Value::String(m.signature_hmac_sha256.to_uppercase());
        assert!(!key.verify(payload.as_bytes(), &upper));
        assert!(!key.verify(payload.as_bytes(), &Value::Null));
        assert!(!key.verify(payload.as_bytes(), &Value::String("é".repeat(32))));
        assert!(!HmacKey::from_secret("other").verify(payload.as_bytes(), &sig));
    }

    #[test]
    fn missing_signed_keys_are_null_in_the_payload() {
        let mut m = Map::new();
        m.insert("worker_id".into(), Value::String("x".into()));
        m.insert("extra".into(), Value::Bool(true));
        assert_eq!(
            signing_payload(&m),
            r#"{"build_source":null,"built_at_utc":null,"package_hash":null,"schema_version":null,"worker_id":"x","worker_species_id":null,"worker_version":null}"#
        );
    }

    #[test]
    fn build_refuses_worker_ids_without_a_namespace() {
        let err = ManifestV1::build(
            &ManifestV1Input {
                worker_id: "wrk.example.my-worker",
                worker_species_id: "wrk.example.my-worker",
                worker_version: "1",
                package_hash: "00",
                build_source: "local",
                at: UtcTime(0),
            },
            &HmacKey::from_secret("k"),
        );
        assert!(err.is_err());
    }
}
