//! C2SP checkpoints as signed notes (c2sp.org/signed-note, c2sp.org/tlog-checkpoint). Pure.
//!
//! A checkpoint is the text `<origin>\n<tree size>\n<base64 root>\n` followed by a blank line
//! and one or more signature lines `— <key name> <base64(key hash(4) ‖ signature)>`. The key
//! name is the log's origin; the Ed25519 key hash is `SHA-256(name ‖ 0x0A ‖ 0x01 ‖ pubkey)[:4]`
//! and the signature is Ed25519 over the note text exactly as written. This is the format
//! witnesses (C2SP tlog-witness) and other transparency-log tooling understand, so a Hall
//! checkpoint can be cosigned without translation; the tests pin the Go `sumdb/note` vector.
//!
//! Threat model: a checkpoint is what lets anyone holding an old one detect truncation,
//! rollback or a forked log later. So: the text is parsed strictly (one encoding of the size,
//! a 32-byte root, no control characters), a signature counts only if a key the *caller*
//! trusts verifies it (the 4-byte key hash only selects candidates), unknown signature lines
//! are ignored (witness cosignatures may be appended), and a note signed by nobody trusted is
//! an error. The same Ed25519 key signs DSSE receipts; the two message formats cannot be
//! confused because DSSE signs `DSSEv1 …` PAE bytes and an origin may not start with `DSSEv1`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha256};

use super::merkle::Hash;
use crate::crypto::{KeyId, KeyPair, PublicKey};

/// The signature-line prefix: U+2014 EM DASH and a space.
const SIG_PREFIX: &str = "\u{2014} ";
/// Ed25519 signature type byte of signed-note keys.
const ALG_ED25519: u8 = 0x01;
/// More signature lines than this is a hostile note (Go's `sumdb/note` uses the same bound).
const MAX_SIGNATURES: usize = 100;
/// Longest note accepted (a checkpoint with a handful of cosignatures is under 1 KiB).
pub const MAX_NOTE_BYTES: usize = 64 * 1024;

/// Why a note or checkpoint was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    #[error("malformed signed note: {0}")]
    Malformed(String),
    #[error("malformed checkpoint: {0}")]
    Checkpoint(String),
    #[error("invalid key name {0:?}: it must be non-empty printable ASCII without spaces or '+'")]
    KeyName(String),
    #[error("checkpoint origin is {found:?}, expected {expected:?}")]
    Origin { found: String, expected: String },
    #[error("no trusted key signed this note (signature lines from: {names})")]
    Untrusted { names: String },
    #[error("malformed verifier key {0:?} (expected name+hash+base64)")]
    VerifierKey(String),
}

/// Checks that `name` can be a note key name (and hence a log origin).
pub fn check_key_name(name: &str) -> Result<(), NoteError> {
    let ok = !name.is_empty()
        && name.len() <= 256
        && name.bytes().all(|b| b.is_ascii_graphic() && b != b'+')
        && !name.starts_with("DSSEv1");
    if ok {
        Ok(())
    } else {
        Err(NoteError::KeyName(name.to_owned()))
    }
}

/// The 4-byte signed-note key hash of an Ed25519 key: `SHA-256(name ‖ "\n" ‖ 0x01 ‖ key)[:4]`.
pub fn key_hash(name: &str, key: &PublicKey) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update(b"\n");
    h.update([ALG_ED25519]);
    h.update(key.as_bytes());
    let d = h.finalize();
    [d[0], d[1], d[2], d[3]]
}

/// The C2SP verifier key string `name+hex(key hash)+base64(0x01 ‖ key)`, the form witnesses and
/// note tooling take on their command line.
pub fn verifier_key(name: &str, key: &PublicKey) -> String {
    let mut raw = vec![ALG_ED25519];
    raw.extend_from_slice(key.as_bytes());
    format!(
        "{name}+{}+{}",
        crate::common::hex(&key_hash(name, key)),
        STANDARD.encode(raw)
    )
}

/// Parses a verifier key string, checking its hash against its name and key.
pub fn parse_verifier_key(text: &str) -> Result<(String, PublicKey), NoteError> {
    let bad = || NoteError::VerifierKey(text.to_owned());
    // The base64 part may itself contain '+': split only twice.
    let mut parts = text.trim().splitn(3, '+');
    let (name, hash, b64) = match (parts.next(), parts.next(), parts.next()) {
        (Some(n), Some(h), Some(b)) => (n, h, b),
        _ => return Err(bad()),
    };
    check_key_name(name).map_err(|_| bad())?;
    let raw = STANDARD.decode(b64).map_err(|_| bad())?;
    if raw.len() != 33 || raw[0] != ALG_ED25519 {
        return Err(bad());
    }
    let key = PublicKey::from_bytes(&raw[1..]).ok_or_else(bad)?;
    if crate::common::hex(&key_hash(name, &key)) != hash {
        return Err(bad());
    }
    Ok((name.to_owned(), key))
}

/// One signature line of a note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteSignature {
    pub name: String,
    pub key_hash: [u8; 4],
    pub signature: Vec<u8>,
}

/// A parsed signed note: the signed text (ending in a newline) and its signature lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedNote {
    pub text: String,
    pub signatures: Vec<NoteSignature>,
}

impl SignedNote {
    /// Parses a signed note strictly.
    pub fn parse(note: &str) -> Result<Self, NoteError> {
        let bad = |m: &str| NoteError::Malformed(m.to_owned());
        if note.len() > MAX_NOTE_BYTES {
            return Err(bad("longer than 64 KiB"));
        }
        if note
            .chars()
            .any(|c| c.is_control() && c != '\n' || c == '\u{feff}')
        {
            return Err(bad("control characters other than newline"));
        }
        let split = note
            .rfind("\n\n")
            .ok_or_else(|| bad("no blank line before the signatures"))?;
        let text = &note[..split + 1];
        let sigs = &note[split + 2..];
        if !sigs.ends_with('\n') {
            return Err(bad("the last signature line does not end with a newline"));
        }
        let mut signatures = Vec::new();
        for line in sigs[..sigs.len() - 1].split('\n') {
            if signatures.len() == MAX_SIGNATURES {
                return Err(bad("more than 100 signature lines"));
            }
            let rest = line
                .strip_prefix(SIG_PREFIX)
                .ok_or_else(|| bad("a signature line does not start with \"— \""))?;
            let (name, b64) = rest
                .split_once(' ')
                .ok_or_else(|| bad("a signature line has no space between name and signature"))?;
            check_key_name(name).map_err(|_| bad("a signature line has an invalid key name"))?;
            let raw = STANDARD
                .decode(b64)
                .map_err(|_| bad("a signature is not valid base64"))?;
            if raw.len() < 5 {
                return Err(bad("a signature is shorter than its key hash"));
            }
            signatures.push(NoteSignature {
                name: name.to_owned(),
                key_hash: [raw[0], raw[1], raw[2], raw[3]],
                signature: raw[4..].to_vec(),
            });
        }
        if signatures.is_empty() {
            return Err(bad("no signature lines"));
        }
        Ok(SignedNote {
            text: text.to_owned(),
            signatures,
        })
    }

    /// The trusted keys (by name) whose signature verifies, in the order given. Lines from
    /// unknown keys are ignored.
    pub fn verified_by<'a>(&self, trusted: &'a [(String, PublicKey)]) -> Vec<&'a PublicKey> {
        let mut out: Vec<&PublicKey> = Vec::new();
        for (name, key) in trusted {
            let hash = key_hash(name, key);
            let ok = self.signatures.iter().any(|s| {
                s.name == *name
                    && s.key_hash == hash
                    && key.verify(self.text.as_bytes(), &s.signature)
            });
            if ok && !out.iter().any(|k| k.id() == key.id()) {
                out.push(key);
            }
        }
        out
    }
}

/// Signs `text` (which must end with a newline) as key `name`, returning the full note.
pub fn sign_note(text: &str, name: &str, key: &KeyPair) -> Result<String, NoteError> {
    check_key_name(name)?;
    if !text.ends_with('\n') || text.ends_with("\n\n") {
        return Err(NoteError::Malformed(
            "note text must end with exactly one newline".into(),
        ));
    }
    let mut raw = key_hash(name, &key.public()).to_vec();
    raw.extend_from_slice(&key.sign(text.as_bytes()).to_bytes());
    Ok(format!(
        "{text}\n{SIG_PREFIX}{name} {}\n",
        STANDARD.encode(raw)
    ))
}

/// A checkpoint body (c2sp.org/tlog-checkpoint).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub origin: String,
    pub size: u64,
    pub root: Hash,
    /// Extension lines after the root (none are written by the Hall; accepted when reading).
    pub extensions: Vec<String>,
}

impl Checkpoint {
    pub fn new(origin: &str, size: u64, root: Hash) -> Self {
        Checkpoint {
            origin: origin.to_owned(),
            size,
            root,
            extensions: Vec::new(),
        }
    }

    /// The note text: `origin\nsize\nbase64(root)\n` plus extension lines.
    pub fn text(&self) -> String {
        let mut out = format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            STANDARD.encode(self.root)
        );
        for e in &self.extensions {
            out.push_str(e);
            out.push('\n');
        }
        out
    }

    /// Parses a checkpoint body strictly.
    pub fn parse_text(text: &str) -> Result<Self, NoteError> {
        let bad = |m: &str| NoteError::Checkpoint(m.to_owned());
        let body = text
            .strip_suffix('\n')
            .ok_or_else(|| bad("does not end with a newline"))?;
        let mut lines = body.split('\n');
        let origin = lines.next().unwrap_or_default();
        if origin.is_empty() {
            return Err(bad("empty origin line"));
        }
        let size_text = lines.next().ok_or_else(|| bad("no tree size line"))?;
        let canonical = size_text == "0"
            || (!size_text.starts_with('0') && size_text.bytes().all(|b| b.is_ascii_digit()));
        let size: u64 = if canonical && !size_text.is_empty() {
            size_text
                .parse()
                .map_err(|_| bad("tree size is out of range"))?
        } else {
            return Err(bad(
                "tree size is not a decimal number without leading zeros",
            ));
        };
        let root_text = lines.next().ok_or_else(|| bad("no root hash line"))?;
        let root: Hash = STANDARD
            .decode(root_text)
            .ok()
            .and_then(|r| r.try_into().ok())
            .ok_or_else(|| bad("root hash is not base64 of 32 bytes"))?;
        let extensions: Vec<String> = lines.map(str::to_owned).collect();
        if extensions.iter().any(String::is_empty) {
            return Err(bad("empty extension line"));
        }
        Ok(Checkpoint {
            origin: origin.to_owned(),
            size,
            root,
            extensions,
        })
    }

    /// Signs the checkpoint with the log key (key name = origin) and returns the note.
    pub fn sign(&self, key: &KeyPair) -> Result<String, NoteError> {
        sign_note(&self.text(), &self.origin, key)
    }
}

/// A checkpoint whose signature has been verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenedCheckpoint {
    pub checkpoint: Checkpoint,
    /// The trusted key that signed it.
    pub key_id: KeyId,
    /// The note exactly as read.
    pub note: String,
}

/// Parses a signed checkpoint, checks its origin and that one of `keys` (as key name
/// `expected_origin`) signed it. `expected_origin` of `None` takes the origin from the text.
pub fn open_checkpoint(
    note: &str,
    expected_origin: Option<&str>,
    keys: &[PublicKey],
) -> Result<OpenedCheckpoint, NoteError> {
    let parsed = SignedNote::parse(note)?;
    let checkpoint = Checkpoint::parse_text(&parsed.text)?;
    if let Some(expected) = expected_origin
        && checkpoint.origin != expected
    {
        return Err(NoteError::Origin {
            found: checkpoint.origin,
            expected: expected.to_owned(),
        });
    }
    let trusted: Vec<(String, PublicKey)> = keys
        .iter()
        .map(|k| (checkpoint.origin.clone(), k.clone()))
        .collect();
    let key_id = parsed
        .verified_by(&trusted)
        .first()
        .map(|k| k.id().clone())
        .ok_or_else(|| NoteError::Untrusted {
            names: parsed
                .signatures
                .iter()
                .map(|s| format!("{} ({})", s.name, crate::common::hex(&s.key_hash)))
                .collect::<Vec<_>>()
                .join(", "),
        })?;
    Ok(OpenedCheckpoint {
        checkpoint,
        key_id,
        note: note.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// golang.org/x/mod/sumdb/note's documented example key and note.
    const GO_SKEY: &str =
        "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
    const GO_VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
    const GO_TEXT: &str = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n";
    const GO_SIG: &str = "\u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";

    fn go_key() -> KeyPair {
        // The base64 itself contains a '+': take everything after the 4th '+'.
        let b64 = GO_SKEY.splitn(5, '+').nth(4).unwrap();
        let raw = STANDARD.decode(b64).unwrap();
        assert_eq!(raw[0], 1);
        KeyPair::from_seed(&raw[1..].try_into().unwrap())
    }

    #[test]
    fn reproduces_the_go_sumdb_note_vector() {
        let key = go_key();
        assert_eq!(verifier_key("PeterNeumann", &key.public()), GO_VKEY);
        let (name, public) = parse_verifier_key(GO_VKEY).unwrap();
        assert_eq!(name, "PeterNeumann");
        assert_eq!(public, key.public());
        let note = sign_note(GO_TEXT, "PeterNeumann", &key).unwrap();
        assert_eq!(note, format!("{GO_TEXT}\n{GO_SIG}"));
        let parsed = SignedNote::parse(&note).unwrap();
        assert_eq!(parsed.text, GO_TEXT);
        assert_eq!(
            parsed.verified_by(&[(name.clone(), public.clone())]).len(),
            1
        );
        // One changed letter in the text and the signature no longer verifies.
        let forged = SignedNote::parse(&note.replace("cryptography", "cryptographY")).unwrap();
        assert!(forged.verified_by(&[(name, public)]).is_empty());
    }

    #[test]
    fn verifier_keys_with_a_wrong_hash_or_shape_are_refused() {
        assert!(parse_verifier_key(&GO_VKEY.replace("c74f20a3", "c74f20a4")).is_err());
        assert!(parse_verifier_key("PeterNeumann+c74f20a3").is_err());
        assert!(parse_verifier_key(&GO_VKEY.replace("PeterNeumann", "Peter")).is_err());
    }

    #[test]
    fn checkpoints_round_trip_and_verify_only_with_trusted_keys() {
        let key = KeyPair::from_seed(&[9; 32]);
        let other = KeyPair::from_seed(&[10; 32]);
        let cp = Checkpoint::new("hall.test/receipts", 42, [7; 32]);
        let note = cp.sign(&key).unwrap();
        assert!(note.starts_with("hall.test/receipts\n42\nBwcH"));
        let opened = open_checkpoint(&note, Some("hall.test/receipts"), &[key.public()]).unwrap();
        assert_eq!(opened.checkpoint, cp);
        assert_eq!(&opened.key_id, key.id());
        // The wrong key, the wrong origin, a changed size: refused.
        assert!(matches!(
            open_checkpoint(&note, None, &[other.public()]),
            Err(NoteError::Untrusted { .. })
        ));
        assert!(matches!(
            open_checkpoint(&note, Some("hall.other/receipts"), &[key.public()]),
            Err(NoteError::Origin { .. })
        ));
        let forged = note.replacen("\n42\n", "\n43\n", 1);
        assert!(open_checkpoint(&forged, None, &[key.public()]).is_err());
        // An extra (cosignature) line from an unknown key is ignored.
        let cosigned = format!(
            "{note}{}",
            sign_note(&cp.text(), "witness.example", &other)
                .unwrap()
                .split("\n\n")
                .nth(1)
                .unwrap()
        );
        let opened = open_checkpoint(&cosigned, None, &[key.public()]).unwrap();
        assert_eq!(opened.checkpoint.size, 42);
    }

    #[test]
    fn malformed_checkpoints_and_notes_are_refused() {
        for text in [
            "o\n042\nBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=\n",
            "o\n-1\nBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=\n",
            "o\n1\nBwcH\n",
            "o\n1\n",
            "\n1\nBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=\n",
            "o\n1\nBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=",
            "o\n99999999999999999999999\nBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=\n",
        ] {
            assert!(Checkpoint::parse_text(text).is_err(), "{text:?}");
        }
        let ok = "o\n1\nBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=\next\n";
        assert_eq!(Checkpoint::parse_text(ok).unwrap().extensions, ["ext"]);
        for note in [
            "text\n",
            "text\n\n",
            "text\n\n\u{2014} name AAAAAAAA\n\n",
            "text\n\n- name AAAAAAAAAA==\n",
            "text\n\n\u{2014} name !!!\n",
            "te\u{1}xt\n\n\u{2014} name AAAAAAAAAA==\n",
            "text\n\n\u{2014} na+me AAAAAAAAAA==\n",
        ] {
            assert!(SignedNote::parse(note).is_err(), "{note:?}");
        }
        assert!(check_key_name("DSSEv1 x").is_err());
        assert!(check_key_name("DSSEv1").is_err());
        assert!(check_key_name("hall.example/receipts").is_ok());
    }
}
