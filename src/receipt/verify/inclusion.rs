//! Inclusion proof bundles for one receipt (`receipts prove` / `verify-proof`).

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

use super::scan::{short, signature_problem};
use super::tree::{ProveError, TreeRead, checked_checkpoint, read_tree, saved_size};
use crate::common::hex;
use crate::crypto::{Envelope, PublicKey};
use crate::receipt::checkpoint::{self, Checkpoint, SignedNote};
use crate::receipt::merkle::{self, Hash};
use crate::receipt::model::{
    self, Kind, LogLine, PAYLOAD_TYPE, ReceiptPayload, parse_hash_string, receipt_hash,
};

/// `format` of a proof bundle.
pub const PROOF_FORMAT: &str = "wcp-receipt-proof/1";
/// First line of a C2SP tlog-proof.
pub const TLOG_PROOF_HEADER: &str = "c2sp.org/tlog-proof@v1";

/// Everything needed to check one receipt offline: the record, a C2SP tlog-proof (inclusion
/// proof + signed checkpoint) and the log's key rotations up to the checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProofBundle {
    pub format: String,
    pub log: String,
    pub seq: u64,
    pub receipt_hash: String,
    pub envelope: Envelope,
    /// `c2sp.org/tlog-proof@v1`, `index N`, base64 hashes, a blank line, the checkpoint.
    pub tlog_proof: String,
    /// Every `key_rotation` record of the log before the checkpoint, as stored.
    pub key_history: Vec<LogLine>,
}

/// Builds the proof bundle for `seq` against the latest checkpoint in the log that covers it.
pub fn prove(dir: &Path, seq: u64) -> Result<ProofBundle, ProveError> {
    let TreeRead {
        leaves,
        origin,
        mut rotations,
        checkpoints,
        target,
    } = read_tree(dir, Some(seq))?;
    let size = leaves.len() as u64;
    let Some(line) = target else {
        return Err(ProveError::NoSuchRecord { seq, size });
    };
    let Some((cp_size, note)) = checkpoints.into_iter().rev().find(|(s, _)| *s > seq) else {
        return Err(ProveError::NotCovered {
            seq,
            covered: saved_size(dir)?,
        });
    };
    checked_checkpoint(&leaves, &note)?;
    let tree = &leaves[..cp_size as usize];
    let path = merkle::inclusion_proof(tree, seq).map_err(|e| ProveError::Damaged {
        seq,
        reason: e.to_string(),
    })?;
    let mut tlog = format!("{TLOG_PROOF_HEADER}\nindex {seq}\n");
    for h in &path {
        tlog.push_str(&STANDARD.encode(h));
        tlog.push('\n');
    }
    tlog.push('\n');
    tlog.push_str(&note);
    rotations.retain(|r| r.seq < cp_size);
    Ok(ProofBundle {
        format: PROOF_FORMAT.to_owned(),
        log: origin,
        seq,
        receipt_hash: line.receipt_hash.clone(),
        envelope: line.envelope,
        tlog_proof: tlog,
        key_history: rotations,
    })
}

/// A parsed C2SP tlog-proof.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlogProof {
    pub index: u64,
    pub hashes: Vec<Hash>,
    pub checkpoint_note: String,
}

/// Parses `c2sp.org/tlog-proof@v1` text.
pub fn parse_tlog_proof(text: &str) -> Result<TlogProof, String> {
    let (head, note) = text
        .split_once("\n\n")
        .ok_or("no blank line between the proof and the checkpoint")?;
    let mut lines = head.split('\n');
    if lines.next() != Some(TLOG_PROOF_HEADER) {
        return Err(format!("does not start with {TLOG_PROOF_HEADER:?}"));
    }
    let mut next = lines.next().ok_or("no index line")?;
    if next.starts_with("extra ") {
        next = lines.next().ok_or("no index line")?;
    }
    let index_text = next.strip_prefix("index ").ok_or("no index line")?;
    if index_text.is_empty()
        || (index_text.len() > 1 && index_text.starts_with('0'))
        || !index_text.bytes().all(|b| b.is_ascii_digit())
    {
        return Err("index is not a decimal number without leading zeros".into());
    }
    let index: u64 = index_text.parse().map_err(|_| "index out of range")?;
    let mut hashes = Vec::new();
    for l in lines {
        if hashes.len() == merkle::MAX_PROOF_HASHES {
            return Err("too many proof hashes".into());
        }
        let h: Hash = STANDARD
            .decode(l)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or("a proof line is not base64 of 32 bytes")?;
        hashes.push(h);
    }
    Ok(TlogProof {
        index,
        hashes,
        checkpoint_note: note.to_owned(),
    })
}

/// What a verified proof shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProofReport {
    pub log: String,
    pub seq: u64,
    pub kind: String,
    pub receipt_id: String,
    pub receipt_hash: String,
    pub correlation_id: Option<String>,
    pub signing_key_id: String,
    pub checkpoint_size: u64,
    pub checkpoint_root: String,
}

/// Why a proof bundle was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ProofFailure(pub String);

/// Verifies a proof bundle with the trusted `anchors`, fully offline.
pub fn verify_proof(
    bundle: &ProofBundle,
    anchors: &[PublicKey],
) -> Result<ProofReport, ProofFailure> {
    let fail = |m: String| Err(ProofFailure(m));
    if bundle.format != PROOF_FORMAT {
        return fail(format!(
            "format is {:?}, expected {PROOF_FORMAT:?}",
            bundle.format
        ));
    }
    // 1. The key chain: every rotation signed by both keys, each retiring the previous new key.
    let mut epochs: Vec<(u64, PublicKey)> = Vec::new();
    let mut last_seq: Option<u64> = None;
    for (i, line) in bundle.key_history.iter().enumerate() {
        let bytes = line
            .payload_bytes()
            .map_err(|e| ProofFailure(format!("key_history[{i}]: {e}")))?;
        let p = ReceiptPayload::decode(&bytes)
            .map_err(|e| ProofFailure(format!("key_history[{i}]: {e}")))?;
        if p.kind != Kind::KeyRotation || p.log != bundle.log || p.seq != line.seq {
            return fail(format!(
                "key_history[{i}] is not a key rotation record of log {:?}",
                bundle.log
            ));
        }
        if last_seq.is_some_and(|s| s >= p.seq) {
            return fail(format!("key_history[{i}] is out of order"));
        }
        last_seq = Some(p.seq);
        if let Some(problem) = signature_problem(&line.envelope, &p) {
            return fail(format!("key_history[{i}] (seq {}): {problem}", p.seq));
        }
        let (old, new) = p
            .rotation_keys()
            .ok_or_else(|| ProofFailure(format!("key_history[{i}]: bad rotation keys")))?;
        match epochs.last() {
            None => epochs.push((0, old)),
            Some((_, cur)) if cur.id() != old.id() => {
                return fail(format!(
                    "key_history[{i}] retires key {} but the chain's key is {}",
                    short(old.id()),
                    short(cur.id())
                ));
            }
            Some(_) => {}
        }
        epochs.push((p.seq + 1, new));
    }
    // 2. The receipt, with the key its seq belongs to.
    let bytes = STANDARD
        .decode(&bundle.envelope.payload)
        .map_err(|_| ProofFailure("envelope payload is not base64".into()))?;
    let payload =
        ReceiptPayload::decode(&bytes).map_err(|e| ProofFailure(format!("receipt: {e}")))?;
    if epochs.is_empty() {
        let k = payload
            .signing_key()
            .map_err(|e| ProofFailure(e.to_string()))?;
        epochs.push((0, k));
    }
    let key_at = |seq: u64| {
        epochs
            .iter()
            .rev()
            .find(|(from, _)| *from <= seq)
            .map(|(_, k)| k.clone())
    };
    if !epochs
        .iter()
        .any(|(_, k)| anchors.iter().any(|a| a.id() == k.id()))
    {
        return fail(format!(
            "none of the log's keys ({}) is a trusted key; pass the Hall's receipt public key \
             with --pubkey",
            epochs
                .iter()
                .map(|(_, k)| short(k.id()))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if payload.seq != bundle.seq || payload.log != bundle.log {
        return fail("the receipt's seq or log differs from the bundle's".into());
    }
    if parse_hash_string(&bundle.receipt_hash) != Some(receipt_hash(&bytes)) {
        return fail("receipt_hash does not match the payload bytes".into());
    }
    let key = key_at(payload.seq).ok_or_else(|| ProofFailure("no key for this seq".into()))?;
    if key.id().0 != payload.signing_key_id {
        return fail(format!(
            "the receipt is signed by key {} but the log's key at seq {} is {}",
            &payload.signing_key_id[..16],
            payload.seq,
            short(key.id())
        ));
    }
    bundle
        .envelope
        .verify(PAYLOAD_TYPE, std::slice::from_ref(&key), 1)
        .map_err(|e| ProofFailure(format!("receipt signature: {e}")))?;
    // 3. The checkpoint and the inclusion proof.
    let tlog = parse_tlog_proof(&bundle.tlog_proof)
        .map_err(|e| ProofFailure(format!("tlog_proof: {e}")))?;
    if tlog.index != bundle.seq {
        return fail(format!(
            "tlog_proof is for index {}, the receipt is seq {}",
            tlog.index, bundle.seq
        ));
    }
    let parsed = SignedNote::parse(&tlog.checkpoint_note)
        .and_then(|n| Checkpoint::parse_text(&n.text))
        .map_err(|e| ProofFailure(format!("checkpoint: {e}")))?;
    let cp_key =
        key_at(parsed.size).ok_or_else(|| ProofFailure("no key for the checkpoint".into()))?;
    let opened = checkpoint::open_checkpoint(
        &tlog.checkpoint_note,
        Some(&bundle.log),
        std::slice::from_ref(&cp_key),
    )
    .map_err(|e| ProofFailure(format!("checkpoint: {e}")))?;
    let cp = opened.checkpoint;
    merkle::verify_inclusion(
        &merkle::leaf_hash(&bytes),
        bundle.seq,
        cp.size,
        &tlog.hashes,
        &cp.root,
    )
    .map_err(|e| ProofFailure(format!("inclusion proof: {e}")))?;
    Ok(ProofReport {
        log: bundle.log.clone(),
        seq: bundle.seq,
        kind: payload.kind.as_str().to_owned(),
        receipt_id: payload.receipt_id.clone(),
        receipt_hash: bundle.receipt_hash.clone(),
        correlation_id: payload.dispatch.as_ref().map(|d| d.correlation_id.clone()),
        signing_key_id: payload.signing_key_id.clone(),
        checkpoint_size: cp.size,
        checkpoint_root: hex(&cp.root),
    })
}

/// Verifies a bare C2SP tlog-proof (what `receipts prove --format tlog-proof` writes) for the
/// receipt `envelope`, offline: the receipt's DSSE signature and the checkpoint's signature by
/// a trusted key (`anchors`: give every key of the log across a rotation, as the text carries
/// no key history), its index equal to the receipt's seq, and the RFC 6962 inclusion of the
/// leaf `SHA-256(0x00 ‖ payload)` in the checkpoint's tree.
pub fn verify_tlog_proof(
    text: &str,
    envelope: &Envelope,
    anchors: &[PublicKey],
) -> Result<ProofReport, ProofFailure> {
    let fail = |m: String| ProofFailure(m);
    let tlog = parse_tlog_proof(text).map_err(|e| fail(format!("tlog-proof: {e}")))?;
    let bytes = STANDARD
        .decode(&envelope.payload)
        .map_err(|_| fail("envelope payload is not base64".into()))?;
    let payload = ReceiptPayload::decode(&bytes).map_err(|e| fail(format!("receipt: {e}")))?;
    let Some(key) = anchors.iter().find(|a| a.id().0 == payload.signing_key_id) else {
        return Err(fail(format!(
            "the receipt is signed by key {}, which is not a trusted key; pass the log's receipt \
             public key(s) with --pubkey",
            &payload.signing_key_id[..16.min(payload.signing_key_id.len())]
        )));
    };
    envelope
        .verify(PAYLOAD_TYPE, std::slice::from_ref(key), 1)
        .map_err(|e| fail(format!("receipt signature: {e}")))?;
    if tlog.index != payload.seq {
        return Err(fail(format!(
            "the proof is for index {}, the receipt is seq {}",
            tlog.index, payload.seq
        )));
    }
    let cp = checkpoint::open_checkpoint(&tlog.checkpoint_note, Some(&payload.log), anchors)
        .map_err(|e| fail(format!("checkpoint: {e}")))?
        .checkpoint;
    merkle::verify_inclusion(
        &merkle::leaf_hash(&bytes),
        payload.seq,
        cp.size,
        &tlog.hashes,
        &cp.root,
    )
    .map_err(|e| fail(format!("inclusion proof: {e}")))?;
    Ok(ProofReport {
        log: payload.log.clone(),
        seq: payload.seq,
        kind: payload.kind.as_str().to_owned(),
        receipt_id: payload.receipt_id.clone(),
        receipt_hash: model::hash_string(&receipt_hash(&bytes)),
        correlation_id: payload.dispatch.as_ref().map(|d| d.correlation_id.clone()),
        signing_key_id: payload.signing_key_id.clone(),
        checkpoint_size: cp.size,
        checkpoint_root: hex(&cp.root),
    })
}
