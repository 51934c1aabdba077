//! The resume snapshot (`<log dir>/resume`, `wcp-hall-receipt-resume/1`): what
//! [`super::log::ReceiptLog::open`] needs to continue appending at tree size `n` without reading
//! records `< n`. Written atomically next to every saved checkpoint, at the checkpoint's size.
//!
//! The file is a DSSE envelope (payload type [`PAYLOAD_TYPE`], Ed25519 with the log key current
//! at the checkpoint) over the canonical JSON of a [`Snapshot`]: the size and root of the
//! checkpoint it accompanies, the chain head (`receipt_hash` of record `n - 1`), the Merkle
//! frontier at `n`, the key epochs, the open intents, where record `n - 1` ends (segment and
//! offset) and the seq of the previous checkpoint record.
//!
//! It is a **Hall-private accelerator**: never an input to offline verification
//! (`receipts verify`, proofs), which always reads the whole log.
//!
//! Threat model. Whoever can write the log directory (the adversary of [`super`]) can delete,
//! replace or roll back this file, but cannot sign one without the current private key.
//! - A *forged* snapshot (any byte changed, another key, another log) fails the signature check
//!   under the configured key, or the origin check: the Hall falls back to the full scan.
//! - A *stale* snapshot (genuine, from an earlier checkpoint) does not match the newest saved
//!   checkpoint (size and root), which the open requires: full scan. A rolled-back pair of
//!   snapshot and `checkpoint` file is caught by the second checkpoint location as today
//!   (every saved checkpoint must equal the snapshot's), and by the background check.
//! - A genuine snapshot over a log whose records `< n` were *changed afterwards*: the open
//!   checks that the segment is long enough and that the line ending at the snapshot's offset
//!   hashes to the snapshot's chain head, which catches a replaced, truncated or forked log
//!   cheaply; a change further back is not seen at open. The background full scan
//!   ([`super::log::ReceiptLog::start_background_check`]) re-verifies every record `< n` and
//!   compares its end state with the snapshot; a difference poisons the log (every later
//!   append fails). So the guarantee weakens from "refused before the first append" to
//!   "appends stop once the background check finds it".
//! - Records `>= n` are checked at open exactly as by the full scan (signatures, chain from the
//!   snapshot's head, tree extending its frontier, intents, torn tail).
//! - Holding the current private key already allows appending false receipts; the snapshot
//!   adds nothing to that.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::merkle::{Frontier, Hash};
use super::model::{Dispatch, LogLine, hash_string, parse_hash_string, parse_hex32, receipt_hash};
use super::store;
use super::verify::{KeyEpoch, OpenIntent, ResumeFrom};
use crate::common::hex;
use crate::crypto::canonical;
use crate::crypto::{Envelope, KeyPair, PublicKey};

/// The snapshot's `format`.
pub const FORMAT: &str = "wcp-hall-receipt-resume/1";
/// The DSSE payload type of the resume file.
pub const PAYLOAD_TYPE: &str = "application/vnd.wcp.receipt-resume.v1+json";
/// The resume file is refused beyond this size (open intents are bounded by concurrency).
pub const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// One key epoch: the key signing from `from_seq`, retired by the rotation at `rotated_at`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotKey {
    /// Standard base64 of the Ed25519 public key.
    pub public_key: String,
    pub from_seq: u64,
    pub rotated_at: Option<u64>,
}

/// An intent without an outcome at the snapshot's size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotIntent {
    pub seq: u64,
    pub dispatch: Dispatch,
}

/// The signed content of the resume file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Snapshot {
    pub format: String,
    pub origin: String,
    /// Tree size `n`: records `0..n` are covered (the checkpoint's size).
    pub size: u64,
    /// Lowercase hex Merkle root at `n` (the checkpoint's root).
    pub root: String,
    /// `sha256:<hex>`: the `receipt_hash` of record `n - 1`.
    pub chain_head: String,
    /// The frontier at `n`: lowercase hex perfect-subtree hashes, largest first.
    pub frontier: Vec<String>,
    pub keys: Vec<SnapshotKey>,
    pub open_intents: Vec<SnapshotIntent>,
    /// The segment holding record `n - 1`, and the byte offset just after its newline (where
    /// record `n` starts unless a new segment was started for it).
    pub segment: String,
    pub offset: u64,
    /// Seq of the newest checkpoint record before `n`.
    pub last_checkpoint: Option<u64>,
}

impl Snapshot {
    /// The writer's state at size `frontier.size()`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        origin: &str,
        chain_head: &Hash,
        frontier: &Frontier,
        keys: &[KeyEpoch],
        open_intents: &BTreeMap<u64, Dispatch>,
        segment: String,
        offset: u64,
        last_checkpoint: Option<u64>,
    ) -> Snapshot {
        Snapshot {
            format: FORMAT.into(),
            origin: origin.into(),
            size: frontier.size(),
            root: hex(&frontier.root()),
            chain_head: hash_string(chain_head),
            frontier: frontier.nodes().iter().map(|h| hex(h)).collect(),
            keys: keys
                .iter()
                .map(|e| SnapshotKey {
                    public_key: e.key.to_base64(),
                    from_seq: e.from_seq,
                    rotated_at: e.rotated_at,
                })
                .collect(),
            open_intents: open_intents
                .iter()
                .map(|(seq, d)| SnapshotIntent {
                    seq: *seq,
                    dispatch: d.clone(),
                })
                .collect(),
            segment,
            offset,
            last_checkpoint,
        }
    }
}

/// The resume file's bytes: the snapshot signed with `key` (a DSSE envelope and a newline).
pub fn seal(snapshot: &Snapshot, key: &KeyPair) -> std::io::Result<Vec<u8>> {
    let payload = canonical::to_canonical_from(snapshot)
        .map_err(|e| std::io::Error::other(format!("resume snapshot encoding: {e}")))?;
    let envelope = Envelope::sign(PAYLOAD_TYPE, &payload, &[key]);
    let mut bytes = serde_json::to_vec(&envelope)
        .map_err(|e| std::io::Error::other(format!("resume snapshot encoding: {e}")))?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// Signs the snapshot with `key` and writes it atomically to `<dir>/resume` (mode 0600).
pub fn write(dir: &Path, snapshot: &Snapshot, key: &KeyPair) -> std::io::Result<()> {
    store::write_atomic(&dir.join(store::RESUME_FILE), &seal(snapshot, key)?, 0o600)
}

/// Removes `<dir>/resume` (missing is fine).
pub fn remove(dir: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(dir.join(store::RESUME_FILE)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Reads `<dir>/resume` and checks its signature with `key`. `Ok(None)`: there is none;
/// `Err`: why it cannot be used.
pub fn load(dir: &Path, key: &PublicKey) -> Result<Option<Snapshot>, String> {
    let path = dir.join(store::RESUME_FILE);
    let text = match store::read_small(&path, MAX_FILE_BYTES) {
        Ok(None) => return Ok(None),
        Ok(Some(t)) => t,
        Err(e) => return Err(format!("unreadable: {e}")),
    };
    let envelope: Envelope =
        crate::json::from_str(text.trim_end()).map_err(|e| format!("not a DSSE envelope: {e}"))?;
    if envelope.payload_type != PAYLOAD_TYPE {
        return Err(format!("payload type {:?}", envelope.payload_type));
    }
    let verified = envelope
        .verify(PAYLOAD_TYPE, std::slice::from_ref(key), 1)
        .map_err(|e| format!("signature does not verify with the configured key: {e}"))?;
    if !canonical::is_canonical(&verified.payload) {
        return Err("payload is not canonical JSON".into());
    }
    let snapshot: Snapshot =
        serde_json::from_slice(&verified.payload).map_err(|e| format!("payload: {e}"))?;
    if snapshot.format != FORMAT {
        return Err(format!("format {:?}, expected {FORMAT:?}", snapshot.format));
    }
    Ok(Some(snapshot))
}

/// A saved checkpoint as the open read it: (size, root).
pub type SavedRoot = (u64, Hash);

/// Checks a verified snapshot against the configuration, the saved checkpoints and the log
/// itself (the segment's length and the chain head: one line read), and turns it into the
/// scan's starting state. `Err` says why it cannot be used.
pub fn validate(
    dir: &Path,
    snapshot: &Snapshot,
    origin: &str,
    key: &PublicKey,
    saved: &[SavedRoot],
) -> Result<ResumeFrom, String> {
    let n = snapshot.size;
    if snapshot.origin != origin {
        return Err(format!(
            "it is for log {:?}, not {origin:?}",
            snapshot.origin
        ));
    }
    if n == 0 {
        return Err("it covers no records".into());
    }
    let root = parse_hex32(&snapshot.root).ok_or("its root is not 64 hex digits")?;
    let chain_head =
        parse_hash_string(&snapshot.chain_head).ok_or("its chain head is not sha256:<hex>")?;
    let nodes: Option<Vec<Hash>> = snapshot.frontier.iter().map(|h| parse_hex32(h)).collect();
    let frontier = nodes
        .and_then(|nodes| Frontier::from_parts(n, nodes))
        .ok_or("its frontier does not fit its size")?;
    if frontier.root() != root {
        return Err("its frontier does not hash to its root".into());
    }
    // Bound to the saved checkpoints: every one must be this snapshot's (size and root).
    if saved.is_empty() {
        return Err("there is no saved checkpoint to bind it to".into());
    }
    for (size, saved_root) in saved {
        if *size != n || *saved_root != root {
            return Err(format!(
                "it is at size {n}, but a saved checkpoint is at size {size}{}",
                if *size == n { " with another root" } else { "" }
            ));
        }
    }
    // Key epochs: in order, the last one the configured key.
    let mut keys = Vec::new();
    for (i, k) in snapshot.keys.iter().enumerate() {
        let public =
            PublicKey::from_base64(&k.public_key).ok_or("a key epoch has an invalid key")?;
        let last = i + 1 == snapshot.keys.len();
        let ordered = match keys.last() {
            None => k.from_seq == 0,
            Some(prev) => {
                let prev: &KeyEpoch = prev;
                prev.rotated_at.is_some_and(|r| r + 1 == k.from_seq)
            }
        };
        if !ordered || k.from_seq > n || last != k.rotated_at.is_none() {
            return Err("its key epochs are not a rotation chain".into());
        }
        keys.push(KeyEpoch {
            key: public,
            from_seq: k.from_seq,
            rotated_at: k.rotated_at,
            rotation_ok: k.rotated_at.is_some(),
            records_ok: 0,
        });
    }
    match keys.last() {
        Some(e) if e.key.id() == key.id() => {}
        _ => return Err("its current key is not the configured key".into()),
    }
    let mut open_intents = BTreeMap::new();
    for i in &snapshot.open_intents {
        if i.seq >= n {
            return Err(format!("open intent {} is not below its size", i.seq));
        }
        open_intents.insert(
            i.seq,
            OpenIntent {
                correlation_id: i.dispatch.correlation_id.clone(),
                dispatch: i.dispatch.clone(),
            },
        );
    }
    if snapshot.last_checkpoint.is_some_and(|c| c >= n) {
        return Err("its last checkpoint is not below its size".into());
    }
    // The log: the segment exists, is long enough, and its line ending at `offset` is record
    // n - 1 with the snapshot's chain head.
    let first_seq =
        store::parse_segment_name(&snapshot.segment).ok_or("its segment is not a segment name")?;
    if first_seq >= n {
        return Err(format!(
            "segment {} cannot hold record {}",
            snapshot.segment,
            n - 1
        ));
    }
    let path = dir.join(&snapshot.segment);
    let len = std::fs::metadata(&path)
        .map_err(|e| format!("segment {}: {e}", snapshot.segment))?
        .len();
    if len < snapshot.offset {
        return Err(format!(
            "segment {} is {len} bytes, shorter than the snapshot's offset {}",
            snapshot.segment, snapshot.offset
        ));
    }
    let line = store::read_line_before(&path, snapshot.offset, super::model::MAX_LINE_BYTES as u64)
        .map_err(|e| format!("segment {}: {e}", snapshot.segment))?
        .ok_or_else(|| {
            format!(
                "segment {} has no line ending at offset {}",
                snapshot.segment, snapshot.offset
            )
        })?;
    let parsed = LogLine::parse(&line).map_err(|e| format!("record {}: {e}", n - 1))?;
    let payload = parsed
        .payload_bytes()
        .map_err(|e| format!("record {}: {e}", n - 1))?;
    if parsed.seq != n - 1
        || receipt_hash(&payload) != chain_head
        || parse_hash_string(&parsed.receipt_hash) != Some(chain_head)
    {
        return Err(format!(
            "the record before offset {} of {} is not seq {} with the snapshot's chain head \
             (the log was replaced, rewritten or truncated)",
            snapshot.offset,
            snapshot.segment,
            n - 1
        ));
    }
    Ok(ResumeFrom {
        segment: snapshot.segment.clone(),
        offset: snapshot.offset,
        size: n,
        origin: snapshot.origin.clone(),
        last_hash: chain_head,
        frontier,
        keys,
        open_intents,
    })
}
