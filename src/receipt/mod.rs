//! Evidence receipts: the Hall's proof of what actually ran (WCP §5.7).
//!
//! One receipt per dispatch — `executed`, `denied`, `expired_approval` or `aborted` — plus an
//! `intent` record written before a worker starts, and the log's own `recovery`,
//! `key_rotation` and `checkpoint` records. Each is a DSSE envelope (Ed25519,
//! `application/vnd.wcp.receipt.v1+json`) over canonical JSON, chained by
//! `prev_receipt_hash`, appended as one line of an append-only segment, and a leaf of an
//! RFC 6962 Merkle tree whose signed C2SP checkpoints are written every N records or T seconds
//! and at shutdown, into the log and to two files.
//!
//! Threat model. The adversary can read and write the log directory (a compromised worker that
//! escaped its envelope, an operator covering tracks, a disk that corrupts data), but not the
//! Hall's private key while it is in use, nor every copy of the saved checkpoint, nor the
//! checkpoints auditors kept. Against that:
//! - changing, inserting, deleting, reordering or re-signing records is detected and located
//!   by [`verify`] (signatures over the stored bytes, the hash chain, seq, the key chain);
//! - truncating or rolling the log back is detected against any checkpoint of a larger tree
//!   (the saved copies, a witness, an auditor's), and stops the Hall at start ([`log`]);
//! - a crash loses nothing that was acknowledged: intents and outcomes are `fdatasync`ed before
//!   the call returns, a torn tail is cut and recorded, intents without outcome are aborted;
//! - when the log cannot be written, appends fail and the Hall runs nothing (fail closed);
//! - a stolen *retired* key cannot extend the log: after a rotation only the new key may sign,
//!   and `keys rotate` destroys the old private key by default.
//!
//! What it cannot do alone: detect a truncation when every checkpoint of the larger tree is
//! also gone (keep a checkpoint copy off the host), or stop someone holding the *current* key
//! from appending false receipts (protect the key; rotate it).
//!
//! Modules: [`model`] (payload, canonical encoding, log line; pure), [`merkle`] (RFC 6962;
//! pure), [`checkpoint`] (C2SP signed notes; pure), [`store`] (files), [`verify`] (the scan,
//! offline verification, proof bundles), [`log`] (the writer), [`resume`] (the signed resume
//! snapshot that lets the writer open without reading the whole log; the records it covers are
//! re-verified in the background), [`rotate`] (key rotation), [`config`] (`[receipts]` in
//! hall.toml).

pub mod checkpoint;
pub mod config;
pub mod log;
pub mod merkle;
pub mod model;
pub mod resume;
pub mod rotate;
pub mod store;
pub mod verify;

pub use config::ReceiptsSection;
pub use log::{
    Appended, IntentHandle, LogError, LogOptions, OpenError, OpenReport, Outcome, ReceiptLog,
    SavedCheckpoint,
};
pub use log::{BackgroundCheck, FaultPoint, LogState, OpenProgress};
pub use model::{
    Approval, Body, Caller, DecisionSummary, Dispatch, Execution, Kind, PAYLOAD_TYPE, PackageRef,
    ReceiptPayload, Timings,
};
pub use verify::{ProofBundle, VerifyOptions, VerifyReport, prove, verify_log, verify_proof};
