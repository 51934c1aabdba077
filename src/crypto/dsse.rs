//! DSSE v1 envelopes (secure-systems-lab/dsse protocol v1.0.0), signed with Ed25519.
//!
//! Threat model: a signature must commit to the exact payload bytes *and* their type, so a
//! signed receipt can never be replayed as a manifest (or the other way round), and a verifier
//! must not parse attacker-controlled JSON before the signature is checked. DSSE gives both:
//! signatures are over `PAE(payloadType, payload)`, verification decodes and checks signatures
//! first, then rejects an unexpected `payloadType`, and only then hands the payload bytes back.
//! `keyid` in an envelope is a lookup hint only: a signature counts only if a key the *caller*
//! trusts verifies it, and each trusted key counts once toward the threshold.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
use serde::{Deserialize, Serialize};

use super::keys::{KeyId, KeyPair, PublicKey};

/// DSSE's pre-authentication encoding:
/// `"DSSEv1" SP LEN(type) SP type SP LEN(body) SP body`, lengths in ASCII decimal.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + payload_type.len() + 32);
    out.extend_from_slice(b"DSSEv1 ");
    out.extend_from_slice(payload_type.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload_type.as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload);
    out
}

/// One signature of an envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvelopeSignature {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keyid: Option<String>,
    pub sig: String,
}

/// A DSSE envelope as stored and exchanged (`payload` and `sig` in standard base64).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    pub payload: String,
    #[serde(rename = "payloadType")]
    pub payload_type: String,
    pub signatures: Vec<EnvelopeSignature>,
}

/// Why an envelope did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DsseError {
    #[error("envelope payload is not valid base64")]
    PayloadEncoding,
    #[error("envelope has no signatures")]
    Unsigned,
    #[error("signature threshold not met: {valid} trusted key(s) verified, {threshold} required")]
    ThresholdNotMet { valid: usize, threshold: usize },
    #[error("payloadType is {found:?}, expected {expected:?}")]
    PayloadType { found: String, expected: String },
}

/// A verified envelope: the exact payload bytes and the trusted keys that signed them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub payload: Vec<u8>,
    pub payload_type: String,
    pub key_ids: Vec<KeyId>,
}

fn decode_b64(text: &str) -> Option<Vec<u8>> {
    STANDARD
        .decode(text)
        .or_else(|_| URL_SAFE.decode(text))
        .or_else(|_| URL_SAFE_NO_PAD.decode(text))
        .ok()
}

impl Envelope {
    /// Signs `payload` as `payload_type` with every key given.
    pub fn sign(payload_type: &str, payload: &[u8], keys: &[&KeyPair]) -> Self {
        let message = pae(payload_type, payload);
        Envelope {
            payload: STANDARD.encode(payload),
            payload_type: payload_type.to_owned(),
            signatures: keys
                .iter()
                .map(|k| EnvelopeSignature {
                    keyid: Some(k.id().0.clone()),
                    sig: STANDARD.encode(k.sign(&message).to_bytes()),
                })
                .collect(),
        }
    }

    /// Verifies against `trusted` keys: at least `threshold` distinct trusted keys must have
    /// signed; then the payload type must be `expected_type`. Returns the payload bytes.
    pub fn verify(
        &self,
        expected_type: &str,
        trusted: &[PublicKey],
        threshold: usize,
    ) -> Result<Verified, DsseError> {
        let payload = decode_b64(&self.payload).ok_or(DsseError::PayloadEncoding)?;
        if self.signatures.is_empty() {
            return Err(DsseError::Unsigned);
        }
        let message = pae(&self.payload_type, &payload);
        let mut key_ids: Vec<KeyId> = Vec::new();
        for key in trusted {
            if key_ids.contains(key.id()) {
                continue;
            }
            let signed = self
                .signatures
                .iter()
                .filter_map(|s| decode_b64(&s.sig))
                .any(|sig| key.verify(&message, &sig));
            if signed {
                key_ids.push(key.id().clone());
            }
        }
        let threshold = threshold.max(1);
        if key_ids.len() < threshold {
            return Err(DsseError::ThresholdNotMet {
                valid: key_ids.len(),
                threshold,
            });
        }
        if self.payload_type != expected_type {
            return Err(DsseError::PayloadType {
                found: self.payload_type.clone(),
                expected: expected_type.to_owned(),
            });
        }
        Ok(Verified {
            payload,
            payload_type: self.payload_type.clone(),
            key_ids,
        })
    }

    /// Key ids claimed by the signatures (hints only; never a trust decision).
    pub fn claimed_key_ids(&self) -> impl Iterator<Item = &str> {
        self.signatures.iter().filter_map(|s| s.keyid.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pae_matches_the_spec_test_vector() {
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world".to_vec()
        );
        assert_eq!(pae("", b""), b"DSSEv1 0  0 ".to_vec());
    }

    #[test]
    fn sign_verify_threshold_and_type() {
        let (a, b, c) = (
            KeyPair::from_seed(&[1; 32]),
            KeyPair::from_seed(&[2; 32]),
            KeyPair::from_seed(&[3; 32]),
        );
        let env = Envelope::sign("application/x.test", b"{\"x\":1}", &[&a, &b]);
        let v = env
            .verify("application/x.test", &[a.public(), b.public()], 2)
            .unwrap();
        assert_eq!(v.payload, b"{\"x\":1}");
        assert_eq!(v.key_ids.len(), 2);
        // A key that did not sign does not count; duplicates count once.
        assert_eq!(
            env.verify(
                "application/x.test",
                &[a.public(), a.public(), c.public()],
                2
            ),
            Err(DsseError::ThresholdNotMet {
                valid: 1,
                threshold: 2
            })
        );
        // The payload type is part of what was signed and is checked.
        assert!(matches!(
            env.verify("application/other", &[a.public()], 1),
            Err(DsseError::PayloadType { .. })
        ));
        let mut retyped = env.clone();
        retyped.payload_type = "application/other".into();
        assert!(matches!(
            retyped.verify("application/other", &[a.public()], 1),
            Err(DsseError::ThresholdNotMet { valid: 0, .. })
        ));
        // A flipped payload byte breaks every signature.
        let mut tampered = env.clone();
        tampered.payload = STANDARD.encode(b"{\"x\":2}");
        assert!(matches!(
            tampered.verify("application/x.test", &[a.public()], 1),
            Err(DsseError::ThresholdNotMet { .. })
        ));
        // keyid is a hint only: lying about it changes nothing.
        let mut relabelled = env.clone();
        relabelled.signatures[0].keyid = Some(c.id().0.clone());
        assert!(
            relabelled
                .verify("application/x.test", &[a.public()], 1)
                .is_ok()
        );
        // URL-safe base64 is accepted.
        let mut url = env.clone();
        url.payload = URL_SAFE_NO_PAD.encode(b"{\"x\":1}");
        assert!(url.verify("application/x.test", &[a.public()], 1).is_ok());
        let unsigned = Envelope {
            signatures: vec![],
            ..env
        };
        assert_eq!(
            unsigned.verify("application/x.test", &[a.public()], 1),
            Err(DsseError::Unsigned)
        );
    }
}
