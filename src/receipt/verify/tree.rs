//! The log read that proofs are built from: leaf hashes, rotations, checkpoints.

use std::path::Path;

use crate::receipt::checkpoint::{self, Checkpoint, SignedNote};
use crate::receipt::merkle::{self, Hash};
use crate::receipt::model::{Kind, LogLine, ReceiptPayload, parse_hash_string, receipt_hash};
use crate::receipt::store::{self};

/// Why a proof could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ProveError {
    #[error("cannot read the log: {0}")]
    Io(#[from] std::io::Error),
    #[error("seq {seq} is not in the log (it holds {size} records)")]
    NoSuchRecord { seq: u64, size: u64 },
    #[error(
        "seq {seq} is not covered by a checkpoint yet (the latest covers {covered} records); the \
         Hall writes one every N receipts or T seconds and at shutdown"
    )]
    NotCovered { seq: u64, covered: u64 },
    #[error("the log is damaged at seq {seq}: {reason}; run `wcp-hall receipts verify`")]
    Damaged { seq: u64, reason: String },
    #[error(
        "the log ({held} records) is inconsistent with the checkpoint of {size} records: it was \
         truncated, rewritten or forked; run `wcp-hall receipts verify --checkpoint`"
    )]
    Inconsistent { size: u64, held: u64 },
}

/// A log read for building proofs: leaf hashes, and the records proofs need. Hashes, seq and
/// payloads are checked; signatures are not (the verifier of the proof checks them).
pub(super) struct TreeRead {
    pub(super) leaves: Vec<Hash>,
    pub(super) origin: String,
    pub(super) rotations: Vec<LogLine>,
    /// (tree size, signed note) of every checkpoint record, in order.
    pub(super) checkpoints: Vec<(u64, String)>,
    pub(super) target: Option<LogLine>,
}

pub(super) fn read_tree(dir: &Path, target: Option<u64>) -> Result<TreeRead, ProveError> {
    let mut t = TreeRead {
        leaves: Vec::new(),
        origin: String::new(),
        rotations: Vec::new(),
        checkpoints: Vec::new(),
        target: None,
    };
    for seg in &store::list_segments(dir)? {
        let data = store::read_segment(&seg.path)?;
        let (lines, _) = store::split_lines(&data);
        for l in lines {
            let position = t.leaves.len() as u64;
            let damaged = |reason: String| ProveError::Damaged {
                seq: position,
                reason,
            };
            let line = LogLine::parse(l.bytes).map_err(|e| damaged(e.to_string()))?;
            let bytes = line.payload_bytes().map_err(|e| damaged(e.to_string()))?;
            if parse_hash_string(&line.receipt_hash) != Some(receipt_hash(&bytes)) {
                return Err(damaged("receipt_hash does not match the payload".into()));
            }
            let payload = ReceiptPayload::decode(&bytes).map_err(|e| damaged(e.to_string()))?;
            if payload.seq != position {
                return Err(damaged(format!(
                    "found seq {} at this position",
                    payload.seq
                )));
            }
            t.origin.clone_from(&payload.log);
            match (&payload.kind, &payload.checkpoint) {
                (Kind::KeyRotation, _) => t.rotations.push(line.clone()),
                (Kind::Checkpoint, Some(cp)) => t.checkpoints.push((cp.size, cp.note.clone())),
                _ => {}
            }
            if target == Some(position) {
                t.target = Some(line);
            }
            t.leaves.push(merkle::leaf_hash(&bytes));
        }
    }
    Ok(t)
}

/// The checkpoint a note holds, and a check that `leaves` (the log) has its root.
pub(super) fn checked_checkpoint(leaves: &[Hash], note: &str) -> Result<Checkpoint, ProveError> {
    let cp = SignedNote::parse(note)
        .and_then(|n| Checkpoint::parse_text(&n.text))
        .map_err(|e| ProveError::Damaged {
            seq: 0,
            reason: e.to_string(),
        })?;
    if cp.size > leaves.len() as u64 || merkle::root(&leaves[..cp.size as usize]) != cp.root {
        return Err(ProveError::Inconsistent {
            size: cp.size,
            held: leaves.len() as u64,
        });
    }
    Ok(cp)
}

pub(super) fn saved_size(dir: &Path) -> Result<u64, ProveError> {
    Ok(store::read_small(
        &dir.join(store::CHECKPOINT_FILE),
        checkpoint::MAX_NOTE_BYTES as u64,
    )?
    .and_then(|n| SignedNote::parse(&n).ok())
    .and_then(|n| Checkpoint::parse_text(&n.text).ok())
    .map_or(0, |c| c.size))
}
