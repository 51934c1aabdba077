//! Shared cryptography: Ed25519 keys and key ids, DSSE envelopes, canonical JSON.
//!
//! Used by package attestation (awp.v2 manifests) and evidence receipts, so both sign the same
//! way: Ed25519 over DSSE PAE with a specific `payloadType`, keys identified by
//! `hex(SHA-256(0x01 ‖ pubkey))`, signed JSON in one canonical profile. Pure apart from reading
//! and writing key files.

pub mod canonical;
pub mod dsse;
pub mod export;
pub mod keys;

pub use dsse::{DsseError, Envelope, Verified, pae};
pub use keys::{KeyError, KeyId, KeyPair, PublicKey};
