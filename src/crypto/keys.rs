//! Ed25519 keys: generation, files, key ids.
//!
//! Threat model: a private key is only as safe as its file. The Hall refuses a private key whose
//! mode lets anyone but the owner read it (a world-readable signing key means anyone on the host
//! can forge manifests or receipts), never reads keys from the environment (a spawned worker
//! would inherit it), and keeps the seed in zeroizing memory. Key ids are derived from the
//! public key (`hex(SHA-256(0x01 ‖ pubkey))`), so an id can never name a different key; an id
//! is still only a hint for lookup — trust comes from the trust policy holding the key itself.
//!
//! File formats (one line, trailing newline):
//! - private: `wcp-ed25519-private-v1 <base64 32-byte seed>`
//! - public:  `wcp-ed25519-public-v1 <base64 32-byte key>`

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

const PRIVATE_TAG: &str = "wcp-ed25519-private-v1";
const PUBLIC_TAG: &str = "wcp-ed25519-public-v1";

/// Why a key could not be generated, read or parsed.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read key {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write key {}: {source}", .path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "refusing private key {}: mode {mode:04o} lets group or others access it; run `chmod 600 {}`",
        .path.display(), .path.display()
    )]
    InsecureMode { path: PathBuf, mode: u32 },
    #[error("{}: not a {expected} key file (expected one line \"{expected} <base64>\")", .path.display())]
    Format {
        path: PathBuf,
        expected: &'static str,
    },
    #[error("{}: the key is not a valid Ed25519 {what}", .path.display())]
    Invalid { path: PathBuf, what: &'static str },
    #[error("cannot get randomness from the operating system: {0}")]
    Random(String),
}

/// A key id: lowercase hex of `SHA-256(0x01 ‖ public key)`.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct KeyId(pub String);

impl KeyId {
    /// The id of a public key.
    pub fn of(key: &VerifyingKey) -> Self {
        let mut h = Sha256::new();
        h.update([0x01]);
        h.update(key.as_bytes());
        KeyId(crate::common::hex(&h.finalize()))
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An Ed25519 signing key with its id. The seed is zeroized on drop (ed25519-dalek `zeroize`).
pub struct KeyPair {
    signing: SigningKey,
    id: KeyId,
}

impl fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyPair({})", self.id)
    }
}

impl KeyPair {
    /// A fresh key from the operating system's CSPRNG.
    pub fn generate() -> Result<Self, KeyError> {
        let mut seed = zeroize::Zeroizing::new([0u8; 32]);
        getrandom::fill(seed.as_mut()).map_err(|e| KeyError::Random(e.to_string()))?;
        Ok(Self::from_seed(&seed))
    }

    /// The key for a 32-byte seed (tests and fixed vectors).
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        let signing = SigningKey::from_bytes(seed);
        let id = KeyId::of(&signing.verifying_key());
        KeyPair { signing, id }
    }

    pub fn id(&self) -> &KeyId {
        &self.id
    }

    pub fn public(&self) -> PublicKey {
        PublicKey::new(self.signing.verifying_key())
    }

    /// The 32-byte seed (for exporting the key in another format; see [`super::export`]).
    pub fn seed(&self) -> zeroize::Zeroizing<[u8; 32]> {
        zeroize::Zeroizing::new(self.signing.to_bytes())
    }

    /// Signs `message` (callers sign DSSE PAE bytes, never bare hashes).
    pub fn sign(&self, message: &[u8]) -> Signature {
        self.signing.sign(message)
    }

    /// Reads a private key file, refusing one that group or others can access.
    pub fn read(path: &Path) -> Result<Self, KeyError> {
        let meta = fs::metadata(path).map_err(|source| KeyError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mode = meta.mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(KeyError::InsecureMode {
                path: path.to_owned(),
                mode,
            });
        }
        let text =
            zeroize::Zeroizing::new(fs::read_to_string(path).map_err(|source| KeyError::Read {
                path: path.to_owned(),
                source,
            })?);
        let bytes = decode_line(&text, PRIVATE_TAG, path)?;
        let seed: zeroize::Zeroizing<[u8; 32]> =
            zeroize::Zeroizing::new(bytes.as_slice().try_into().map_err(|_| {
                KeyError::Invalid {
                    path: path.to_owned(),
                    what: "private key (32-byte seed)",
                }
            })?);
        Ok(Self::from_seed(&seed))
    }

    /// Writes the private key (mode 0600, never overwriting) and, beside it, `<path>.pub`.
    pub fn write(&self, path: &Path) -> Result<PathBuf, KeyError> {
        let err = |p: &Path| {
            let p = p.to_owned();
            move |source| KeyError::Write { path: p, source }
        };
        let line = zeroize::Zeroizing::new(format!(
            "{PRIVATE_TAG} {}\n",
            STANDARD.encode(self.signing.to_bytes())
        ));
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(err(path))?;
        f.write_all(line.as_bytes()).map_err(err(path))?;
        f.sync_all().map_err(err(path))?;
        let pub_path = public_path_for(path);
        self.public().write(&pub_path)?;
        Ok(pub_path)
    }
}

/// `<private>.pub`.
pub fn public_path_for(private: &Path) -> PathBuf {
    let mut name = private.as_os_str().to_owned();
    name.push(".pub");
    PathBuf::from(name)
}

/// An Ed25519 public key with its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    key: VerifyingKey,
    id: KeyId,
}

impl PublicKey {
    pub fn new(key: VerifyingKey) -> Self {
        let id = KeyId::of(&key);
        PublicKey { key, id }
    }

    /// Parses 32 raw bytes.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let arr: [u8; 32] = bytes.try_into().ok()?;
        VerifyingKey::from_bytes(&arr).ok().map(Self::new)
    }

    /// Parses the base64 form used in key files and trust policies.
    pub fn from_base64(text: &str) -> Option<Self> {
        STANDARD
            .decode(text.trim())
            .ok()
            .and_then(|b| Self::from_bytes(&b))
    }

    pub fn id(&self) -> &KeyId {
        &self.id
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        self.key.as_bytes()
    }

    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.key.as_bytes())
    }

    /// Strict verification (`verify_strict`: rejects small-order keys and malleable signatures).
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        Signature::from_slice(signature)
            .map(|sig| self.key.verify_strict(message, &sig).is_ok())
            .unwrap_or(false)
    }

    /// Reads a public key file.
    pub fn read(path: &Path) -> Result<Self, KeyError> {
        let text = fs::read_to_string(path).map_err(|source| KeyError::Read {
            path: path.to_owned(),
            source,
        })?;
        let bytes = decode_line(&text, PUBLIC_TAG, path)?;
        Self::from_bytes(&bytes).ok_or_else(|| KeyError::Invalid {
            path: path.to_owned(),
            what: "public key",
        })
    }

    /// Writes the public key file (mode 0644, replacing).
    pub fn write(&self, path: &Path) -> Result<(), KeyError> {
        fs::write(path, format!("{PUBLIC_TAG} {}\n", self.to_base64())).map_err(|source| {
            KeyError::Write {
                path: path.to_owned(),
                source,
            }
        })
    }
}

/// What a key file holds, from its tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyFileKind {
    Private,
    Public,
}

/// Tells a private key file from a public one by its tag, reading only the tag (a private
/// key's mode is checked when it is read with [`KeyPair::read`]).
pub fn key_file_kind(path: &Path) -> Result<KeyFileKind, KeyError> {
    use std::io::Read as _;
    let mut head = [0u8; 23];
    let mut f = fs::File::open(path).map_err(|source| KeyError::Read {
        path: path.to_owned(),
        source,
    })?;
    let mut n = 0;
    while n < head.len() {
        match f.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(source) => {
                return Err(KeyError::Read {
                    path: path.to_owned(),
                    source,
                });
            }
        }
    }
    let head = &head[..n];
    if head.starts_with(format!("{PRIVATE_TAG} ").as_bytes()) {
        Ok(KeyFileKind::Private)
    } else if head.starts_with(format!("{PUBLIC_TAG} ").as_bytes()) {
        Ok(KeyFileKind::Public)
    } else {
        Err(KeyError::Format {
            path: path.to_owned(),
            expected: "wcp-ed25519-private-v1 or wcp-ed25519-public-v1",
        })
    }
}

fn decode_line(text: &str, tag: &'static str, path: &Path) -> Result<Vec<u8>, KeyError> {
    let format = || KeyError::Format {
        path: path.to_owned(),
        expected: tag,
    };
    let line = text.trim_end_matches('\n');
    let (found_tag, b64) = line.split_once(' ').ok_or_else(format)?;
    if found_tag != tag || line.contains('\n') {
        return Err(format());
    }
    STANDARD.decode(b64).map_err(|_| format())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn key_files_round_trip_and_ids_are_derived() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hall.key");
        let key = KeyPair::generate().unwrap();
        let pub_path = key.write(&path).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        let again = KeyPair::read(&path).unwrap();
        assert_eq!(again.id(), key.id());
        let public = PublicKey::read(&pub_path).unwrap();
        assert_eq!(public.id(), key.id());
        assert_eq!(key.id().0.len(), 64);
        let sig = key.sign(b"message");
        assert!(public.verify(b"message", &sig.to_bytes()));
        assert!(!public.verify(b"messagf", &sig.to_bytes()));
        assert!(!public.verify(b"message", &[0u8; 10]));
        // Never overwrite an existing key.
        assert!(matches!(key.write(&path), Err(KeyError::Write { .. })));
    }

    #[test]
    fn readable_private_keys_and_malformed_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        KeyPair::from_seed(&[7; 32]).write(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        let err = KeyPair::read(&path).unwrap_err();
        assert!(
            matches!(err, KeyError::InsecureMode { mode: 0o640, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("chmod 600"));

        let bad = dir.path().join("bad");
        fs::write(&bad, "wcp-ed25519-public-v1 AAAA\n").unwrap();
        fs::set_permissions(&bad, fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(KeyPair::read(&bad), Err(KeyError::Format { .. })));
        fs::write(&bad, "wcp-ed25519-private-v1 AAAA\n").unwrap();
        assert!(matches!(KeyPair::read(&bad), Err(KeyError::Invalid { .. })));
    }

    #[test]
    fn key_id_is_sha256_of_0x01_and_the_key() {
        let key = KeyPair::from_seed(&[1; 32]);
        let mut h = Sha256::new();
        h.update([1u8]);
        h.update(key.public().as_bytes());
        assert_eq!(key.id().0, crate::common::hex(&h.finalize()));
    }
}
