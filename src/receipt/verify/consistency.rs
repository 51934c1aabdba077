//! Consistency proofs between two checkpoints (C2SP tlog-witness body format).

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Serialize;

use super::inclusion::ProofFailure;
use super::tree::{ProveError, checked_checkpoint, read_tree};
use crate::common::hex;
use crate::crypto::PublicKey;
use crate::receipt::checkpoint::{self};
use crate::receipt::merkle::{self, Hash};

/// A proof that the tree of an older checkpoint is a prefix of a newer one, in the body format
/// of a C2SP tlog-witness `add-checkpoint` request: `old <size>`, one base64 hash per line, a
/// blank line, the newer signed checkpoint. Anyone holding the old checkpoint can check it
/// without the log (a witness, an auditor, the second checkpoint location).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsistencyProof {
    pub old_size: u64,
    pub hashes: Vec<Hash>,
    pub checkpoint_note: String,
}

impl ConsistencyProof {
    pub fn to_text(&self) -> String {
        let mut out = format!("old {}\n", self.old_size);
        for h in &self.hashes {
            out.push_str(&STANDARD.encode(h));
            out.push('\n');
        }
        out.push('\n');
        out.push_str(&self.checkpoint_note);
        out
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let (head, note) = text
            .split_once("\n\n")
            .ok_or("no blank line between the proof and the checkpoint")?;
        let mut lines = head.split('\n');
        let old = lines
            .next()
            .and_then(|l| l.strip_prefix("old "))
            .ok_or("does not start with \"old <size>\"")?;
        if old.is_empty()
            || (old.len() > 1 && old.starts_with('0'))
            || !old.bytes().all(|b| b.is_ascii_digit())
        {
            return Err("old size is not a decimal number without leading zeros".into());
        }
        let old_size = old.parse().map_err(|_| "old size out of range")?;
        let mut hashes = Vec::new();
        for l in lines {
            if hashes.len() == merkle::MAX_PROOF_HASHES {
                return Err("too many proof hashes".into());
            }
            hashes.push(
                STANDARD
                    .decode(l)
                    .ok()
                    .and_then(|b| b.try_into().ok())
                    .ok_or("a proof line is not base64 of 32 bytes")?,
            );
        }
        Ok(ConsistencyProof {
            old_size,
            hashes,
            checkpoint_note: note.to_owned(),
        })
    }
}

/// Proves that the log's newest checkpoint extends `old_note` (which must match the log).
pub fn prove_consistency(dir: &Path, old_note: &str) -> Result<ConsistencyProof, ProveError> {
    let t = read_tree(dir, None)?;
    let old = checked_checkpoint(&t.leaves, old_note)?;
    let Some((new_size, note)) = t.checkpoints.last().cloned() else {
        return Err(ProveError::NotCovered {
            seq: old.size,
            covered: 0,
        });
    };
    if new_size < old.size {
        return Err(ProveError::NotCovered {
            seq: old.size,
            covered: new_size,
        });
    }
    checked_checkpoint(&t.leaves, &note)?;
    let hashes =
        merkle::consistency_proof(&t.leaves[..new_size as usize], old.size).map_err(|e| {
            ProveError::Damaged {
                seq: old.size,
                reason: e.to_string(),
            }
        })?;
    Ok(ConsistencyProof {
        old_size: old.size,
        hashes,
        checkpoint_note: note,
    })
}

/// What a verified consistency proof shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConsistencyReport {
    pub log: String,
    pub old_size: u64,
    pub new_size: u64,
    pub new_root: String,
}

/// Checks offline that the checkpoint in `proof` extends `old_note`: both signed by a trusted
/// key (`anchors`: the log's keys, e.g. before and after a rotation), same origin, and the
/// RFC 6962 consistency proof between their roots.
pub fn verify_consistency_proof(
    old_note: &str,
    proof: &ConsistencyProof,
    anchors: &[PublicKey],
) -> Result<ConsistencyReport, ProofFailure> {
    let old = checkpoint::open_checkpoint(old_note, None, anchors)
        .map_err(|e| ProofFailure(format!("old checkpoint: {e}")))?
        .checkpoint;
    let new = checkpoint::open_checkpoint(&proof.checkpoint_note, Some(&old.origin), anchors)
        .map_err(|e| ProofFailure(format!("new checkpoint: {e}")))?
        .checkpoint;
    if proof.old_size != old.size {
        return Err(ProofFailure(format!(
            "the proof starts at size {}, the old checkpoint has {}",
            proof.old_size, old.size
        )));
    }
    merkle::verify_consistency(old.size, new.size, &old.root, &new.root, &proof.hashes).map_err(
        |e| {
            ProofFailure(format!(
                "the checkpoint of {} records does not extend the one of {} records: {e} \
                 (the log was rewritten, rolled back or forked)",
                new.size, old.size
            ))
        },
    )?;
    Ok(ConsistencyReport {
        log: old.origin,
        old_size: old.size,
        new_size: new.size,
        new_root: hex(&new.root),
    })
}
