//! Offline verification: the log scan shared with recovery ([`scan`]), `receipts verify`
//! ([`audit`]), finding one record ([`find`]), inclusion proof bundles for one receipt
//! ([`inclusion`], built on the log read of [`tree`]), consistency proofs between two
//! checkpoints ([`consistency`]).
//!
//! Threat model: the verifier trusts nothing in the log directory. It holds one or more
//! *anchor* public keys obtained out of band (`--pubkey`) and optionally checkpoints saved
//! outside the attacker's reach (`--checkpoint`). Against those it detects, and locates by seq:
//! - a changed byte anywhere in a record (the stored `receipt_hash`, the signature and the
//!   canonical-encoding check each catch it);
//! - a deleted, duplicated or reordered line (the seq sequence and `prev_receipt_hash` chain);
//! - records re-signed with another key (every record must be signed by the key the *log's own
//!   rotation chain* says is current at its seq, and that chain must reach an anchor through
//!   rotations signed by both keys);
//! - a truncated or rolled-back log (a saved checkpoint covers more records than remain, or
//!   its root differs from the tree of the first `size` records);
//! - a forged checkpoint (its signature must verify with the log key current at its size, and
//!   its root must equal the tree the verifier computes itself).
//!
//! A truncation at a line boundary is invisible without a checkpoint from outside: a prefix of
//! a valid log is a valid log. That is why the Hall saves its checkpoint to a second location
//! and why auditors should keep the checkpoints they have seen.
//!
//! Verification works on the stored bytes only: hashes and signatures are computed over the
//! base64-decoded payload exactly as stored; the payload is parsed only to read its fields.
//! Signature checks (≈ 45 µs each) dominate, so lines are checked on all cores in chunks, then
//! the order-dependent checks (seq, chain, keys, tree, intents) run in one sequential pass.

mod audit;
mod consistency;
mod find;
mod inclusion;
mod scan;
mod tree;

pub use audit::{
    CheckpointReport, ExternalCheckpoint, KeyReport, VerifyOptions, VerifyReport,
    check_checkpoint_against, verify_log,
};
pub use consistency::{
    ConsistencyProof, ConsistencyReport, prove_consistency, verify_consistency_proof,
};
pub use find::{FoundRecord, Selector, find_record};
pub use inclusion::{
    PROOF_FORMAT, ProofBundle, ProofFailure, ProofReport, TLOG_PROOF_HEADER, TlogProof,
    parse_tlog_proof, prove, verify_proof, verify_tlog_proof,
};
pub use scan::{
    Failure, KeyEpoch, LogCheckpoint, MAX_REPORTED_FAILURES, OpenIntent, ResumeFrom, Scan,
    ScanOptions, ScanProgress, TornTail, scan, short,
};
pub use tree::ProveError;
