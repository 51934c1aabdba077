//! Ed25519 keys in the formats standard tools read: PKCS#8 / SPKI PEM (RFC 8410; `openssl
//! pkey`), OpenSSH (`ssh-keygen`, `ssh-keygen -Y verify`) and C2SP signed-note keys (Go's
//! `sumdb/note`, witnesses). Pure: text in, text out.
//!
//! The DER of an Ed25519 key is fixed: a constant prefix (RFC 8410 §7 and §10.3 give both
//! verbatim) followed by the 32-byte seed or public key, so no ASN.1 library is needed and the
//! output is checked against `openssl` and `ssh-keygen` by the tests.
//!
//! Threat model: exporting a private key copies the secret out of its 0600 file. The text is
//! kept in zeroizing memory here; where it goes (stdout, a new 0600 file) is the caller's
//! choice, and the CLI refuses to overwrite a file.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use zeroize::Zeroizing;

use super::{KeyPair, PublicKey};
use crate::receipt::checkpoint;

/// `PrivateKeyInfo` (version 0, algorithm id-Ed25519 1.3.101.112) up to the 32-byte seed.
const PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];
/// `SubjectPublicKeyInfo` (id-Ed25519) up to the 32-byte public key.
const SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];
const SSH_KEY_TYPE: &str = "ssh-ed25519";

fn pem(label: &str, der: &[u8], width: usize) -> Zeroizing<String> {
    let b64 = Zeroizing::new(STANDARD.encode(der));
    let mut out = Zeroizing::new(format!("-----BEGIN {label}-----\n"));
    for chunk in b64.as_bytes().chunks(width) {
        // Base64 is ASCII, so every chunk is valid UTF-8.
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// PKCS#8 PEM of the private key (`openssl pkey -in FILE` reads it).
pub fn private_pem(key: &KeyPair) -> Zeroizing<String> {
    let mut der = Zeroizing::new(PKCS8_PREFIX.to_vec());
    der.extend_from_slice(key.seed().as_ref());
    pem("PRIVATE KEY", &der, 64)
}

/// SPKI PEM of a public key (`openssl pkey -pubin -in FILE` reads it).
pub fn public_pem(key: &PublicKey) -> String {
    let mut der = SPKI_PREFIX.to_vec();
    der.extend_from_slice(key.as_bytes());
    pem("PUBLIC KEY", &der, 64).to_string()
}

/// Appends an SSH wire-format `string` (u32 big-endian length, bytes).
fn ssh_string(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

fn ssh_public_blob(key: &PublicKey) -> Vec<u8> {
    let mut blob = Vec::with_capacity(51);
    ssh_string(&mut blob, SSH_KEY_TYPE.as_bytes());
    ssh_string(&mut blob, key.as_bytes());
    blob
}

/// The OpenSSH public key line `ssh-ed25519 <base64> <comment>` (authorized_keys format).
pub fn public_openssh(key: &PublicKey, comment: &str) -> String {
    format!(
        "{SSH_KEY_TYPE} {} {comment}\n",
        STANDARD.encode(ssh_public_blob(key))
    )
}

/// An unencrypted `openssh-key-v1` private key (PROTOCOL.key in OpenSSH's source), as
/// `ssh-keygen` writes it with `-N ''`. The two check integers are derived from the key id, so
/// the export is reproducible (they only detect a wrong passphrase, and there is none).
pub fn private_openssh(key: &KeyPair, comment: &str) -> Zeroizing<String> {
    let public = key.public();
    let blob = ssh_public_blob(&public);
    let check = u32::from_str_radix(&key.id().0[..8], 16).unwrap_or(0);
    let mut private = Zeroizing::new(Vec::new());
    private.extend_from_slice(&check.to_be_bytes());
    private.extend_from_slice(&check.to_be_bytes());
    ssh_string(&mut private, SSH_KEY_TYPE.as_bytes());
    ssh_string(&mut private, public.as_bytes());
    let mut secret = Zeroizing::new(key.seed().to_vec());
    secret.extend_from_slice(public.as_bytes());
    ssh_string(&mut private, &secret);
    ssh_string(&mut private, comment.as_bytes());
    let mut pad = 1u8;
    while private.len() % 8 != 0 {
        private.push(pad);
        pad += 1;
    }
    let mut out = Zeroizing::new(b"openssh-key-v1\0".to_vec());
    ssh_string(&mut out, b"none");
    ssh_string(&mut out, b"none");
    ssh_string(&mut out, b"");
    out.extend_from_slice(&1u32.to_be_bytes());
    ssh_string(&mut out, &blob);
    ssh_string(&mut out, &private);
    pem("OPENSSH PRIVATE KEY", &out, 70)
}

/// The C2SP verifier key `name+hash+base64(0x01 ‖ key)`.
pub fn public_c2sp(key: &PublicKey, name: &str) -> Result<String, checkpoint::NoteError> {
    checkpoint::check_key_name(name)?;
    Ok(format!("{}\n", checkpoint::verifier_key(name, key)))
}

/// The C2SP signer key `PRIVATE+KEY+name+hash+base64(0x01 ‖ seed)` (Go's `note.NewSigner`).
pub fn private_c2sp(key: &KeyPair, name: &str) -> Result<Zeroizing<String>, checkpoint::NoteError> {
    checkpoint::check_key_name(name)?;
    let hash = crate::common::hex(&checkpoint::key_hash(name, &key.public()));
    let mut raw = Zeroizing::new(vec![0x01u8]);
    raw.extend_from_slice(key.seed().as_ref());
    Ok(Zeroizing::new(format!(
        "PRIVATE+KEY+{name}+{hash}+{}\n",
        Zeroizing::new(STANDARD.encode(&*raw)).as_str()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_8410_example_keys_encode_byte_for_byte() {
        // RFC 8410 §10.3: the private key example and its public key (§10.1).
        let der = STANDARD
            .decode("MC4CAQAwBQYDK2VwBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhC")
            .unwrap();
        let seed: [u8; 32] = der[16..].try_into().unwrap();
        let key = KeyPair::from_seed(&seed);
        assert_eq!(
            *private_pem(&key),
            "-----BEGIN PRIVATE KEY-----\n\
             MC4CAQAwBQYDK2VwBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhC\n\
             -----END PRIVATE KEY-----\n"
        );
        assert_eq!(
            public_pem(&key.public()),
            "-----BEGIN PUBLIC KEY-----\n\
             MCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n\
             -----END PUBLIC KEY-----\n"
        );
    }

    #[test]
    fn openssh_and_c2sp_forms_carry_the_key() {
        let key = KeyPair::from_seed(&[3; 32]);
        let line = public_openssh(&key.public(), "wcp-hall");
        let b64 = line.split(' ').nth(1).unwrap();
        let blob = STANDARD.decode(b64).unwrap();
        assert_eq!(&blob[..4], &[0, 0, 0, 11]);
        assert_eq!(&blob[4..15], b"ssh-ed25519");
        assert_eq!(&blob[19..], key.public().as_bytes());
        let text = private_openssh(&key, "c");
        assert!(text.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----\n"));
        let vkey = public_c2sp(&key.public(), "hall.h/receipts").unwrap();
        let (name, parsed) = checkpoint::parse_verifier_key(vkey.trim()).unwrap();
        assert_eq!((name.as_str(), &parsed), ("hall.h/receipts", &key.public()));
        let skey = private_c2sp(&key, "hall.h/receipts").unwrap();
        assert!(skey.starts_with("PRIVATE+KEY+hall.h/receipts+"));
        assert_eq!(
            skey.rsplit('+').next().unwrap().trim(),
            STANDARD.encode([&[1u8][..], &[3u8; 32][..]].concat())
        );
        assert!(public_c2sp(&key.public(), "a b").is_err());
    }
}
