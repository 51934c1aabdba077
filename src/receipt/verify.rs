//! Offline verification: the log scan shared with recovery, `receipts verify`, inclusion proof
//! bundles for one receipt, consistency proofs between two checkpoints.
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

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

use super::checkpoint::{self, Checkpoint, SignedNote};
use super::merkle::{self, Frontier, Hash};
use super::model::{
    self, Dispatch, Kind, LogLine, PAYLOAD_TYPE, ReceiptPayload, hash_string, parse_hash_string,
    receipt_hash,
};
use super::store::{self, Segment};
use crate::common::hex;
use crate::crypto::{Envelope, KeyId, PublicKey};

/// Failures kept in a report (the count is always exact).
pub const MAX_REPORTED_FAILURES: usize = 100;
/// Lines checked per parallel batch.
const CHUNK: usize = 4096;

/// One problem, located.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Failure {
    /// The seq the problem is about (the expected seq when the record is unreadable).
    pub seq: Option<u64>,
    /// Segment file name (or the checkpoint's source).
    pub segment: String,
    /// 1-based line number in the segment (0 when not about one line).
    pub line: u64,
    /// Byte offset of the line in the segment.
    pub offset: u64,
    pub reason: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.seq {
            Some(s) => write!(f, "seq {s}")?,
            None => write!(f, "log")?,
        }
        if self.line > 0 {
            write!(
                f,
                " ({} line {}, offset {})",
                self.segment, self.line, self.offset
            )?;
        } else if !self.segment.is_empty() {
            write!(f, " ({})", self.segment)?;
        }
        write!(f, ": {}", self.reason)
    }
}

/// A span of records signed by one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyEpoch {
    pub key: PublicKey,
    pub from_seq: u64,
    /// Seq of the rotation record that retired this key.
    pub rotated_at: Option<u64>,
    /// Whether that rotation record verified (signed by both keys, no other problem).
    pub rotation_ok: bool,
    /// Records in this epoch with no problem of their own.
    pub records_ok: u64,
}

/// An intent with no outcome yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenIntent {
    pub correlation_id: String,
    pub dispatch: Dispatch,
}

/// A checkpoint record found in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogCheckpoint {
    pub seq: u64,
    pub root: Hash,
    pub note: String,
    pub ok: bool,
}

/// An unterminated final line (a crash interrupted a write).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    pub segment: Segment,
    pub offset: u64,
    pub bytes: Vec<u8>,
}

/// What to check in a scan.
#[derive(Clone, Default)]
pub struct ScanOptions<'a> {
    /// Verify signatures of records with `seq >= signatures_from` (rotation records are always
    /// verified). Recovery skips records covered by a verified saved checkpoint; audits use 0.
    pub signatures_from: u64,
    /// Tree sizes whose root the caller wants (saved or external checkpoints).
    pub roots_at: Vec<u64>,
    /// Start after the records a resume snapshot covers instead of at seq 0 (the Hall's fast
    /// open; see [`super::resume`]). Offline verification never sets this.
    pub resume: Option<ResumeFrom>,
    /// Stop after this many records (the rest of the log, a torn tail included, is not read).
    pub limit: Option<u64>,
    /// Called after each batch of lines.
    pub progress: Option<&'a dyn Fn(ScanProgress)>,
    /// Checked between batches: when set, the scan stops with `ErrorKind::Interrupted`.
    pub cancel: Option<&'a AtomicBool>,
}

impl fmt::Debug for ScanOptions<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScanOptions")
            .field("signatures_from", &self.signatures_from)
            .field("roots_at", &self.roots_at)
            .field(
                "resume",
                &self.resume.as_ref().map(|r| (&r.segment, r.offset, r.size)),
            )
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}

/// How far a scan got (for progress reports).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanProgress {
    /// Records read so far by this scan.
    pub records: u64,
    /// Segment bytes read so far by this scan.
    pub bytes: u64,
    /// Segment bytes this scan will read in all (the segments' sizes when it started).
    pub total_bytes: u64,
}

/// The state of a scan after its first `size` records, taken from a verified resume snapshot:
/// the scan continues from there as if it had read them.
#[derive(Debug, Clone)]
pub struct ResumeFrom {
    /// The segment holding the end of record `size - 1`, and the offset just after it.
    pub segment: String,
    pub offset: u64,
    pub size: u64,
    pub origin: String,
    pub last_hash: Hash,
    pub frontier: Frontier,
    pub keys: Vec<KeyEpoch>,
    pub open_intents: BTreeMap<u64, OpenIntent>,
}

/// The result of one pass over the log.
#[derive(Debug, Clone, Default)]
pub struct Scan {
    pub segments: Vec<Segment>,
    /// The log origin (from the first readable record).
    pub origin: Option<String>,
    /// Records (complete lines) read; also the tree size.
    pub size: u64,
    pub failed_records: u64,
    pub failure_count: u64,
    pub failures: Vec<Failure>,
    pub keys: Vec<KeyEpoch>,
    pub checkpoints: Vec<LogCheckpoint>,
    pub open_intents: BTreeMap<u64, OpenIntent>,
    pub torn_tail: Option<TornTail>,
    /// `receipt_hash` of the last record.
    pub last_hash: Option<Hash>,
    pub frontier: Frontier,
    pub roots: BTreeMap<u64, Hash>,
    pub signatures_checked: u64,
    /// Length of the last segment's complete lines (where the writer appends).
    pub last_segment_len: u64,
    /// Records this scan actually read and hashed (`size` minus what a resume skipped).
    pub records_read: u64,
    /// The seq the scan started at (non-zero when resumed from a snapshot).
    pub resumed_at: u64,
}

impl Scan {
    fn fail(&mut self, f: Failure) {
        self.failure_count += 1;
        if self.failures.len() < MAX_REPORTED_FAILURES {
            self.failures.push(f);
        }
    }

    /// The failure with the lowest seq.
    pub fn first_failure(&self) -> Option<&Failure> {
        self.failures
            .iter()
            .min_by_key(|f| (f.seq.unwrap_or(u64::MAX), f.line))
    }

    /// The key that signs at `seq` according to the log's rotation chain (the last key for a
    /// seq beyond the end).
    pub fn key_at(&self, seq: u64) -> Option<&PublicKey> {
        self.keys
            .iter()
            .rev()
            .find(|e| e.from_seq <= seq)
            .map(|e| &e.key)
    }

    /// Which epochs chain to an anchor: an epoch is trusted if its key is an anchor or it is
    /// linked to a trusted epoch by a verified rotation (each rotation is signed by both keys,
    /// so trust flows both ways along an intact link).
    pub fn trusted_epochs(&self, anchors: &[PublicKey]) -> Vec<bool> {
        let n = self.keys.len();
        let mut trusted: Vec<bool> = self
            .keys
            .iter()
            .map(|e| anchors.iter().any(|a| a.id() == e.key.id()))
            .collect();
        for _ in 0..n {
            let mut changed = false;
            for i in 0..n.saturating_sub(1) {
                if self.keys[i].rotation_ok && trusted[i] != trusted[i + 1] {
                    trusted[i] = true;
                    trusted[i + 1] = true;
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
        trusted
    }

    /// Marks records of epochs that do not chain to an anchor as failed.
    pub fn apply_anchors(&mut self, anchors: &[PublicKey]) {
        let trusted = self.trusted_epochs(anchors);
        let anchor_ids: Vec<String> = anchors.iter().map(|a| short(a.id())).collect();
        for (i, ok) in trusted.iter().enumerate() {
            if *ok {
                continue;
            }
            let e = self.keys[i].clone();
            let to = e.rotated_at.unwrap_or_else(|| self.size.saturating_sub(1));
            self.failed_records += e.records_ok;
            self.keys[i].records_ok = 0;
            self.fail(Failure {
                seq: Some(e.from_seq),
                segment: String::new(),
                line: 0,
                offset: 0,
                reason: format!(
                    "seq {}..={to} are signed by key {} which is not a trusted key ({}) and is not \
                     linked to one by a rotation signed by both keys",
                    e.from_seq,
                    short(e.key.id()),
                    if anchor_ids.is_empty() {
                        "none given".to_owned()
                    } else {
                        anchor_ids.join(", ")
                    }
                ),
            });
        }
    }

    /// Records that passed every check (after [`Scan::apply_anchors`]).
    pub fn passed(&self) -> u64 {
        self.keys.iter().map(|e| e.records_ok).sum()
    }
}

/// The first 16 hex digits of a key id (enough to tell keys apart in messages).
pub fn short(id: &KeyId) -> String {
    id.0.chars().take(16).collect()
}

/// The outcome of the per-line checks that need no context (run in parallel).
struct Checked {
    stored_hash: Option<Hash>,
    /// SHA-256 of the payload bytes, when they decode.
    hash: Option<Hash>,
    leaf: Hash,
    payload: Option<Box<ReceiptPayload>>,
    problems: Vec<String>,
    signature_checked: bool,
}

fn check_line(bytes: &[u8], signatures_from: u64) -> Checked {
    let mut c = Checked {
        stored_hash: None,
        hash: None,
        leaf: merkle::leaf_hash(bytes),
        payload: None,
        problems: Vec::new(),
        signature_checked: false,
    };
    let line = match LogLine::parse(bytes) {
        Ok(l) => l,
        Err(e) => {
            c.problems.push(e.to_string());
            return c;
        }
    };
    c.stored_hash = parse_hash_string(&line.receipt_hash);
    if c.stored_hash.is_none() {
        c.problems
            .push("receipt_hash is not sha256:<64 lowercase hex>".into());
    }
    let payload_bytes = match line.payload_bytes() {
        Ok(b) => b,
        Err(e) => {
            c.problems.push(e.to_string());
            return c;
        }
    };
    c.leaf = merkle::leaf_hash(&payload_bytes);
    let hash = receipt_hash(&payload_bytes);
    c.hash = Some(hash);
    if c.stored_hash.is_some_and(|h| h != hash) {
        c.problems.push(format!(
            "receipt_hash {} does not match the payload bytes (their SHA-256 is {}): the payload or \
             the hash was changed",
            line.receipt_hash,
            hash_string(&hash)
        ));
    }
    let payload = match ReceiptPayload::decode(&payload_bytes) {
        Ok(p) => p,
        Err(e) => {
            c.problems.push(format!("invalid payload: {e}"));
            return c;
        }
    };
    if payload.seq != line.seq {
        c.problems.push(format!(
            "the line says seq {} but its signed payload says {}",
            line.seq, payload.seq
        ));
    }
    if payload.seq >= signatures_from || payload.kind == Kind::KeyRotation {
        c.signature_checked = true;
        if let Some(p) = signature_problem(&line.envelope, &payload) {
            c.problems.push(p);
        }
    }
    c.payload = Some(Box::new(payload));
    c
}

/// Checks the envelope's signatures against the key the payload names (and, for a rotation,
/// the new key too). Whether that key is *trusted* is decided later, from the key chain.
fn signature_problem(envelope: &Envelope, payload: &ReceiptPayload) -> Option<String> {
    // Decompressing a key costs as much as a hash of the whole record: consecutive records
    // share their signer, so each thread keeps the last one.
    thread_local! {
        static LAST_KEY: std::cell::RefCell<Option<(String, PublicKey)>> =
            const { std::cell::RefCell::new(None) };
    }
    let cached = LAST_KEY.with(|c| {
        c.borrow()
            .as_ref()
            .filter(|(b64, _)| *b64 == payload.signing_public_key)
            .map(|(_, k)| k.clone())
    });
    let signer = match cached {
        Some(k) => k,
        None => match payload.signing_key() {
            Ok(k) => {
                LAST_KEY.with(|c| {
                    *c.borrow_mut() = Some((payload.signing_public_key.clone(), k.clone()))
                });
                k
            }
            Err(e) => return Some(e.to_string()),
        },
    };
    let mut keys = vec![signer.clone()];
    if let Some((_, new)) = payload.rotation_keys() {
        keys.push(new);
    }
    match envelope.verify(PAYLOAD_TYPE, &keys, keys.len()) {
        Ok(_) => None,
        Err(e) if keys.len() == 2 => Some(format!(
            "key rotation is not signed by both the old key {} and the new key {}: {e}",
            short(signer.id()),
            short(keys[1].id())
        )),
        Err(e) => Some(format!(
            "signature does not verify with the signing key {}: {e}",
            short(signer.id())
        )),
    }
}

fn check_parallel(lines: &[store::Line<'_>], signatures_from: u64) -> Vec<Checked> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 8);
    if threads == 1 || lines.len() < 64 {
        return lines
            .iter()
            .map(|l| check_line(l.bytes, signatures_from))
            .collect();
    }
    let per = lines.len().div_ceil(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = lines
            .chunks(per)
            .map(|part| {
                s.spawn(move || {
                    part.iter()
                        .map(|l| check_line(l.bytes, signatures_from))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    })
}

/// Reads and checks every segment of `dir` in one pass (or, with [`ScanOptions::resume`], the
/// segments from the snapshot's offset on).
pub fn scan(dir: &Path, opts: &ScanOptions<'_>) -> std::io::Result<Scan> {
    let segments = store::list_segments(dir)?;
    let mut scan = Scan {
        segments: segments.clone(),
        ..Scan::default()
    };
    let mut st = SeqState::default();
    // Where reading starts: (segment index, byte offset, line number before it).
    let mut start = (0usize, 0u64, 0u64);
    if let Some(r) = &opts.resume {
        let Some(i) = segments.iter().position(|s| s.name == r.segment) else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("resume segment {} is not in the log", r.segment),
            ));
        };
        if segments[i].first_seq > r.size {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("resume segment {} starts after seq {}", r.segment, r.size),
            ));
        }
        start = (i, r.offset, r.size - segments[i].first_seq);
        scan.origin = Some(r.origin.clone());
        scan.size = r.size;
        scan.resumed_at = r.size;
        scan.keys = r.keys.clone();
        scan.open_intents = r.open_intents.clone();
        scan.last_hash = Some(r.last_hash);
        scan.frontier = r.frontier.clone();
        st.expected = r.size;
    }
    let total_bytes: u64 = segments[start.0.min(segments.len())..]
        .iter()
        .filter_map(|s| std::fs::metadata(&s.path).ok())
        .map(|m| m.len())
        .sum::<u64>()
        .saturating_sub(start.1);
    let mut bytes_done = 0u64;
    let nsegs = segments.len();
    'segments: for (si, seg) in segments.iter().enumerate().skip(start.0) {
        if opts.limit.is_some_and(|l| scan.size >= l) {
            break;
        }
        let is_last = si + 1 == nsegs;
        let resumed_here = opts.resume.is_some() && si == start.0;
        let (base, base_line) = if resumed_here {
            (start.1, start.2)
        } else {
            (0, 0)
        };
        let data = store::read_segment_from(&seg.path, base)?;
        let (mut lines, tail) = store::split_lines(&data);
        for l in &mut lines {
            l.offset += base;
            l.number += base_line;
        }
        if !resumed_here && seg.first_seq != scan.size {
            scan.fail(Failure {
                seq: Some(scan.size),
                segment: seg.name.clone(),
                line: 0,
                offset: 0,
                reason: format!(
                    "the segment's name says it starts at seq {}, but it follows {} records: a \
                     segment was deleted, added or renamed",
                    seg.first_seq, scan.size
                ),
            });
        }
        if data.is_empty() && !is_last && !resumed_here {
            scan.fail(Failure {
                seq: Some(scan.size),
                segment: seg.name.clone(),
                line: 0,
                offset: 0,
                reason: "an empty segment before the last one".into(),
            });
        }
        let mut consumed = 0usize;
        for chunk in lines.chunks(CHUNK) {
            if opts
                .cancel
                .as_ref()
                .is_some_and(|c| c.load(Ordering::Relaxed))
            {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::Interrupted,
                    "the scan was cancelled",
                ));
            }
            let chunk = match opts.limit {
                Some(limit) => {
                    let room = limit.saturating_sub(scan.size) as usize;
                    &chunk[..chunk.len().min(room)]
                }
                None => chunk,
            };
            let checked = check_parallel(chunk, opts.signatures_from);
            for (line, c) in chunk.iter().zip(checked) {
                sequential(&mut scan, &mut st, seg, line, c, opts);
                scan.records_read += 1;
                consumed = (line.offset - base) as usize + line.bytes.len() + 1;
            }
            if let Some(p) = &opts.progress {
                p(ScanProgress {
                    records: scan.records_read,
                    bytes: bytes_done + consumed as u64,
                    total_bytes,
                });
            }
            if opts.limit.is_some_and(|l| scan.size >= l) {
                break 'segments;
            }
        }
        bytes_done += data.len() as u64;
        if !tail.is_empty() {
            let offset = base + (data.len() - tail.len()) as u64;
            if is_last {
                scan.torn_tail = Some(TornTail {
                    segment: seg.clone(),
                    offset,
                    bytes: tail.to_vec(),
                });
            } else {
                scan.fail(Failure {
                    seq: Some(scan.size),
                    segment: seg.name.clone(),
                    line: base_line + lines.len() as u64 + 1,
                    offset,
                    reason: "a segment before the last one ends inside a line (corruption)".into(),
                });
            }
        }
        if is_last {
            scan.last_segment_len = base + (data.len() - tail.len()) as u64;
        }
    }
    if opts.roots_at.contains(&scan.size) {
        scan.roots.insert(scan.size, scan.frontier.root());
    }
    Ok(scan)
}

#[derive(Default)]
struct SeqState {
    /// The seq the next record should carry.
    expected: u64,
    /// The previous line could not be read: its own failure says so, and the chain check of
    /// the next record is skipped rather than reported twice.
    prev_unreadable: bool,
}

fn sequential(
    scan: &mut Scan,
    st: &mut SeqState,
    seg: &Segment,
    line: &store::Line<'_>,
    c: Checked,
    opts: &ScanOptions<'_>,
) {
    let position = scan.size;
    if opts.roots_at.contains(&position) {
        scan.roots.insert(position, scan.frontier.root());
    }
    let at = |seq: u64, reason: String| Failure {
        seq: Some(seq),
        segment: seg.name.clone(),
        line: line.number,
        offset: line.offset,
        reason,
    };
    let mut problems = c.problems;
    // An unreadable record is reported at the seq expected here, never at a number read from
    // its (possibly corrupted) line: one damaged line must not derail the rest of the scan.
    let seq = c.payload.as_ref().map_or(st.expected, |p| p.seq);
    if c.signature_checked {
        scan.signatures_checked += 1;
    }
    if let Some(p) = &c.payload {
        match &scan.origin {
            None => scan.origin = Some(p.log.clone()),
            Some(o) if *o != p.log => {
                problems.push(format!("belongs to log {:?}, not {o:?}", p.log));
            }
            Some(_) => {}
        }
        if p.seq > st.expected {
            let missing = p.seq - st.expected;
            scan.failed_records += missing;
            scan.fail(at(
                st.expected,
                format!(
                    "{} missing: the record after seq {} is seq {} (deleted, or lines reordered)",
                    if missing == 1 {
                        format!("seq {}", st.expected)
                    } else {
                        format!("seq {}..={}", st.expected, p.seq - 1)
                    },
                    st.expected as i128 - 1,
                    p.seq
                ),
            ));
        } else if p.seq < st.expected {
            problems.push(format!(
                "out of order: seq {} appears where seq {} was expected (duplicated or reordered \
                 line)",
                p.seq, st.expected
            ));
        }
        if !st.prev_unreadable && p.prev_hash() != scan.last_hash {
            problems.push(match scan.last_hash {
                Some(h) => format!(
                    "prev_receipt_hash does not match the previous line's receipt_hash {} (the \
                     chain is broken here)",
                    hash_string(&h)
                ),
                None => "prev_receipt_hash is set, but this is the first record of the log".into(),
            });
        }
        // Keys: the first record names the first key; afterwards only rotations change it.
        if scan.keys.is_empty() {
            if let Ok(k) = p.signing_key() {
                scan.keys.push(KeyEpoch {
                    key: k,
                    from_seq: seq,
                    rotated_at: None,
                    rotation_ok: false,
                    records_ok: 0,
                });
            }
        } else if let Some(current) = scan.keys.last()
            && current.key.id().0 != p.signing_key_id
        {
            problems.push(format!(
                "signed by key {}, but the log's key at this seq is {} (a retired or foreign key)",
                &p.signing_key_id[..16.min(p.signing_key_id.len())],
                short(current.key.id())
            ));
        }
        match p.kind {
            Kind::Checkpoint => {
                if let Some(cp) = &p.checkpoint {
                    let root = scan.frontier.root();
                    let mut ok = true;
                    if cp.size != position {
                        ok = false;
                        problems.push(format!(
                            "checkpoint claims tree size {} at position {position}",
                            cp.size
                        ));
                    }
                    if model::parse_hex32(&cp.root) != Some(root) {
                        ok = false;
                        problems.push(format!(
                            "checkpoint root {} is not the root of the records before it ({})",
                            cp.root,
                            hex(&root)
                        ));
                    }
                    let key = scan.keys.last().map(|e| e.key.clone());
                    match key.map(|k| checkpoint::open_checkpoint(&cp.note, Some(&p.log), &[k])) {
                        Some(Ok(opened)) => {
                            if opened.checkpoint.size != cp.size
                                || hex(&opened.checkpoint.root) != cp.root
                            {
                                ok = false;
                                problems.push(
                                    "the signed note's size or root differs from the record's"
                                        .into(),
                                );
                            }
                        }
                        Some(Err(e)) => {
                            ok = false;
                            problems.push(format!("checkpoint note: {e}"));
                        }
                        None => ok = false,
                    }
                    scan.checkpoints.push(LogCheckpoint {
                        seq,
                        root,
                        note: cp.note.clone(),
                        ok: ok && problems.is_empty(),
                    });
                }
            }
            Kind::Intent => {
                if let Some(d) = &p.dispatch {
                    scan.open_intents.insert(
                        seq,
                        OpenIntent {
                            correlation_id: d.correlation_id.clone(),
                            dispatch: d.clone(),
                        },
                    );
                }
            }
            Kind::Executed | Kind::Aborted => {
                if let Some(i) = p.intent_seq {
                    match scan.open_intents.remove(&i) {
                        None => problems.push(format!(
                            "intent_seq {i} is not an open intent (no such intent, or it already \
                             has an outcome)"
                        )),
                        Some(open) => {
                            let cid = p.dispatch.as_ref().map(|d| d.correlation_id.as_str());
                            if cid != Some(open.correlation_id.as_str()) {
                                problems.push(format!(
                                    "outcome's correlation_id differs from intent {i}'s ({:?})",
                                    open.correlation_id
                                ));
                            }
                        }
                    }
                }
            }
            _ => {}
        }
    }
    scan.frontier.push(c.leaf);
    // Chain on the stored hash, so one changed payload fails only its own record.
    let link = c.stored_hash.or(c.hash);
    st.prev_unreadable = link.is_none();
    scan.last_hash = link;
    scan.size += 1;
    st.expected = st.expected.max(seq.saturating_add(1));
    let clean = problems.is_empty();
    if clean {
        if let Some(e) = scan.keys.last_mut() {
            e.records_ok += 1;
        }
    } else {
        scan.failed_records += 1;
        let reason = problems.join("; ");
        scan.fail(at(seq, reason));
    }
    // A rotation takes effect after its own record, if it verified.
    if let Some(p) = &c.payload
        && p.kind == Kind::KeyRotation
        && let Some((_, new)) = p.rotation_keys()
        && let Some(current) = scan.keys.last_mut()
        && current.key.id().0 == p.signing_key_id
    {
        current.rotated_at = Some(seq);
        current.rotation_ok = clean;
        scan.keys.push(KeyEpoch {
            key: new,
            from_seq: seq + 1,
            rotated_at: None,
            rotation_ok: false,
            records_ok: 0,
        });
    }
}

// ---- whole-log verification ---------------------------------------------------------------

/// A checkpoint from outside the log (a file), to check the log against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalCheckpoint {
    /// Where it came from (shown in reports).
    pub source: String,
    pub note: String,
}

/// What `verify_log` trusts.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// Trusted public keys (at least one must be in the log's key chain).
    pub anchors: Vec<PublicKey>,
    /// Checkpoints saved elsewhere; the log directory's own `checkpoint` file is always added.
    pub checkpoints: Vec<ExternalCheckpoint>,
}

/// One checked checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckpointReport {
    pub source: String,
    pub size: Option<u64>,
    pub ok: bool,
    pub problem: Option<String>,
}

/// One key of the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyReport {
    pub key_id: String,
    pub from_seq: u64,
    pub rotated_at: Option<u64>,
    pub trusted: bool,
}

/// The result of `verify_log`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    pub log_dir: String,
    pub origin: Option<String>,
    pub records: u64,
    pub passed: u64,
    pub failed: u64,
    pub signatures_checked: u64,
    pub tree_size: u64,
    pub root: String,
    pub keys: Vec<KeyReport>,
    pub checkpoints: Vec<CheckpointReport>,
    pub open_intents: Vec<u64>,
    pub failure_count: u64,
    pub first_failure: Option<Failure>,
    pub failures: Vec<Failure>,
}

impl VerifyReport {
    /// True when nothing failed.
    pub fn ok(&self) -> bool {
        self.failure_count == 0
    }
}

/// Checks a signed checkpoint against a scan: signature by the log key current at its size,
/// origin, size within the log, root equal to the computed one. `Err` says what is wrong and,
/// for a truncation, the first missing seq (`None` when the checkpoint itself is at fault or
/// the disagreement cannot be pinned to one record).
pub fn check_checkpoint_against(
    scan: &Scan,
    trusted: &[bool],
    note: &str,
) -> Result<Checkpoint, (Option<u64>, String)> {
    let parsed = SignedNote::parse(note)
        .and_then(|n| Checkpoint::parse_text(&n.text))
        .map_err(|e| (None, e.to_string()))?;
    let size = parsed.size;
    if let Some(origin) = &scan.origin
        && parsed.origin != *origin
    {
        return Err((
            Some(size),
            format!("checkpoint is for log {:?}, not {origin:?}", parsed.origin),
        ));
    }
    if scan.keys.is_empty() && size > 0 {
        return Err((
            Some(0),
            format!(
                "the checkpoint covers {size} records but the log holds none: seq 0..={} are \
                 missing (the log was deleted, truncated or replaced)",
                size - 1
            ),
        ));
    }
    // The key that signed the checkpoint record at seq `size` (the last key if the log is
    // shorter); it must be a trusted key of the chain.
    let idx = scan.keys.iter().rposition(|e| e.from_seq <= size);
    let key = idx.and_then(|i| {
        trusted
            .get(i)
            .copied()
            .unwrap_or(false)
            .then_some(&scan.keys[i].key)
    });
    let Some(key) = key else {
        return Err((
            None,
            "no trusted log key to check the checkpoint's signature with".into(),
        ));
    };
    checkpoint::open_checkpoint(note, Some(&parsed.origin), std::slice::from_ref(key)).map_err(
        |e| {
            (
                None,
                format!(
                    "checkpoint signature: {e} (expected the log key {} current at seq {size}): \
                     forged or from another log",
                    short(key.id())
                ),
            )
        },
    )?;
    if size > scan.size {
        return Err((
            Some(scan.size),
            format!(
                "the checkpoint covers {size} records but the log holds {}: seq {}..={} are \
                 missing (the log was truncated or rolled back)",
                scan.size,
                scan.size,
                size - 1
            ),
        ));
    }
    match scan.roots.get(&size) {
        Some(root) if *root == parsed.root => Ok(parsed),
        Some(root) => Err((
            None,
            format!(
                "the log is inconsistent with this checkpoint: its first {size} records hash to \
                 {}, the checkpoint says {} (records before seq {size} were changed, or the log \
                 was rolled back and rewritten, or forked)",
                hex(root),
                hex(&parsed.root)
            ),
        )),
        None => Err((Some(size), "no root computed for this size".into())),
    }
}

/// Verifies a whole log directory offline.
pub fn verify_log(dir: &Path, opts: &VerifyOptions) -> std::io::Result<VerifyReport> {
    let mut external = opts.checkpoints.clone();
    let own = dir.join(store::CHECKPOINT_FILE);
    if let Some(note) = store::read_small(&own, checkpoint::MAX_NOTE_BYTES as u64)? {
        external.insert(
            0,
            ExternalCheckpoint {
                source: own.display().to_string(),
                note,
            },
        );
    }
    let roots_at: Vec<u64> = external
        .iter()
        .filter_map(|c| {
            SignedNote::parse(&c.note)
                .ok()
                .and_then(|n| Checkpoint::parse_text(&n.text).ok())
                .map(|cp| cp.size)
        })
        .collect();
    let mut scan = scan(
        dir,
        &ScanOptions {
            signatures_from: 0,
            roots_at,
            ..ScanOptions::default()
        },
    )?;
    if scan.segments.is_empty() {
        scan.fail(Failure {
            seq: None,
            segment: dir.display().to_string(),
            line: 0,
            offset: 0,
            reason: "no receipt segments (receipts-*.jsonl) in this directory".into(),
        });
    }
    if let Some(t) = scan.torn_tail.clone() {
        scan.fail(Failure {
            seq: Some(scan.size),
            segment: t.segment.name.clone(),
            line: 0,
            offset: t.offset,
            reason: format!(
                "torn final line: {} bytes without a newline (a crash interrupted a write; the \
                 Hall cuts it and writes a recovery receipt at its next start)",
                t.bytes.len()
            ),
        });
    }
    scan.apply_anchors(&opts.anchors);
    let trusted = scan.trusted_epochs(&opts.anchors);
    let mut checkpoints: Vec<CheckpointReport> = scan
        .checkpoints
        .iter()
        .map(|c| CheckpointReport {
            source: format!("log seq {}", c.seq),
            size: Some(c.seq),
            ok: c.ok,
            problem: (!c.ok).then(|| "see the failure at this seq".to_owned()),
        })
        .collect();
    for ext in &external {
        match check_checkpoint_against(&scan, &trusted, &ext.note) {
            Ok(cp) => checkpoints.push(CheckpointReport {
                source: ext.source.clone(),
                size: Some(cp.size),
                ok: true,
                problem: None,
            }),
            Err((seq, why)) => {
                scan.fail(Failure {
                    seq,
                    segment: ext.source.clone(),
                    line: 0,
                    offset: 0,
                    reason: why.clone(),
                });
                checkpoints.push(CheckpointReport {
                    source: ext.source.clone(),
                    size: None,
                    ok: false,
                    problem: Some(why),
                });
            }
        }
    }
    let keys = scan
        .keys
        .iter()
        .zip(&trusted)
        .map(|(e, t)| KeyReport {
            key_id: e.key.id().0.clone(),
            from_seq: e.from_seq,
            rotated_at: e.rotated_at,
            trusted: *t,
        })
        .collect();
    let mut failures = scan.failures.clone();
    failures.sort_by_key(|f| (f.seq.unwrap_or(u64::MAX), f.line));
    Ok(VerifyReport {
        log_dir: dir.display().to_string(),
        origin: scan.origin.clone(),
        records: scan.size,
        passed: scan.passed(),
        failed: scan.failed_records,
        signatures_checked: scan.signatures_checked,
        tree_size: scan.size,
        root: hex(&scan.frontier.root()),
        keys,
        checkpoints,
        open_intents: scan.open_intents.keys().copied().collect(),
        failure_count: scan.failure_count,
        first_failure: failures.first().cloned(),
        failures,
    })
}

// ---- finding one record -------------------------------------------------------------------

/// Which record to find.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    Seq(u64),
    ReceiptId(String),
}

impl Selector {
    /// `123` → seq; anything else → receipt id.
    pub fn parse(text: &str) -> Self {
        match text.parse::<u64>() {
            Ok(n) => Selector::Seq(n),
            Err(_) => Selector::ReceiptId(text.to_ascii_lowercase()),
        }
    }
}

/// A record as stored, with the result of its context-free checks.
#[derive(Debug, Clone)]
pub struct FoundRecord {
    pub segment: String,
    pub line_number: u64,
    pub offset: u64,
    pub line: LogLine,
    pub payload_bytes: Vec<u8>,
    pub payload: Result<ReceiptPayload, String>,
    /// Whether the stored `receipt_hash` matches the payload bytes.
    pub hash_ok: bool,
}

/// Finds one record by seq or receipt id. `Ok(None)` if there is none.
pub fn find_record(dir: &Path, which: &Selector) -> std::io::Result<Option<FoundRecord>> {
    let segments = store::list_segments(dir)?;
    // For a seq, only the segment whose range holds it is read.
    let candidates: Vec<&Segment> = match which {
        Selector::Seq(n) => segments
            .iter()
            .rev()
            .find(|s| s.first_seq <= *n)
            .into_iter()
            .collect(),
        Selector::ReceiptId(_) => segments.iter().collect(),
    };
    for seg in candidates {
        let data = store::read_segment(&seg.path)?;
        let (lines, _) = store::split_lines(&data);
        for l in lines {
            let Ok(line) = LogLine::parse(l.bytes) else {
                continue;
            };
            let hit = match which {
                Selector::Seq(n) => line.seq == *n,
                Selector::ReceiptId(_) => true,
            };
            if !hit {
                continue;
            }
            let payload_bytes = line.payload_bytes().unwrap_or_default();
            let payload = ReceiptPayload::decode(&payload_bytes).map_err(|e| e.to_string());
            if let Selector::ReceiptId(id) = which
                && payload.as_ref().map(|p| &p.receipt_id) != Ok(id)
            {
                continue;
            }
            let hash_ok =
                parse_hash_string(&line.receipt_hash) == Some(receipt_hash(&payload_bytes));
            return Ok(Some(FoundRecord {
                segment: seg.name.clone(),
                line_number: l.number,
                offset: l.offset,
                line,
                payload_bytes,
                payload,
                hash_ok,
            }));
        }
    }
    Ok(None)
}

// ---- proof bundles --------------------------------------------------------------------------

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
struct TreeRead {
    leaves: Vec<Hash>,
    origin: String,
    rotations: Vec<LogLine>,
    /// (tree size, signed note) of every checkpoint record, in order.
    checkpoints: Vec<(u64, String)>,
    target: Option<LogLine>,
}

fn read_tree(dir: &Path, target: Option<u64>) -> Result<TreeRead, ProveError> {
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
fn checked_checkpoint(leaves: &[Hash], note: &str) -> Result<Checkpoint, ProveError> {
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

fn saved_size(dir: &Path) -> Result<u64, ProveError> {
    Ok(store::read_small(
        &dir.join(store::CHECKPOINT_FILE),
        checkpoint::MAX_NOTE_BYTES as u64,
    )?
    .and_then(|n| SignedNote::parse(&n).ok())
    .and_then(|n| Checkpoint::parse_text(&n.text).ok())
    .map_or(0, |c| c.size))
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

// ---- consistency between two checkpoints ------------------------------------------------------

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
