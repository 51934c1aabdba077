//! The log scan shared by recovery and audit: parallel per-line checks, then one sequential
//! pass (seq, chain, keys, tree, intents), optionally resumed from a snapshot's state.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;

use crate::common::hex;
use crate::crypto::{Envelope, KeyId, PublicKey};
use crate::receipt::checkpoint::{self};
use crate::receipt::merkle::{self, Frontier, Hash};
use crate::receipt::model::{
    self, Dispatch, Kind, LogLine, PAYLOAD_TYPE, ReceiptPayload, hash_string, parse_hash_string,
    receipt_hash,
};
use crate::receipt::store::{self, Segment};

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
    pub(super) fn fail(&mut self, f: Failure) {
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
pub(super) fn signature_problem(envelope: &Envelope, payload: &ReceiptPayload) -> Option<String> {
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
