//! The receipt log writer: durable appends with group commit, recovery at open, checkpoints,
//! key rotation. Blocking std code (threads, mutex, condvar); the daemon calls it from a
//! blocking-capable context (`tokio::task::spawn_blocking` or a dedicated thread).
//!
//! **Durability.** [`ReceiptLog::append_intent`] returns only once the intent record is on
//! disk (`fdatasync`), so a worker never starts unrecorded; [`ReceiptLog::append_outcome`]
//! returns only once the outcome receipt is on disk, so a caller never gets an answer the log
//! could lose. Each record is one `write(2)` of one line on an `O_APPEND` descriptor.
//!
//! **Group commit.** Appenders serialise only for building, signing and writing their line
//! (tens of microseconds under the mutex). Then each waits until a sync covers its record: the
//! first waiter becomes the *leader*, releases the lock and calls `fdatasync`; appenders
//! arriving meanwhile write their lines and wait; when the leader finishes, everything written
//! before its sync started is durable and the next waiter leads the next sync. With one
//! `fdatasync` costing ≈ 2.5 ms here, N concurrent appenders share one sync instead of paying
//! N (see `benches/receipts.rs`).
//!
//! **Fail closed.** Every error an append returns means "this was not recorded: run nothing,
//! answer with an error".
//!
//! **Resource failures degrade; integrity failures stop.** After a write or sync error (or a
//! checkpoint that cannot be saved) the log is *degraded* ([`LogState::Degraded`]): new intents
//! are refused, the receipts the log owes (outcomes, denials, aborts, checkpoints) are still
//! attempted, giving up the space reserve (`<dir>/reserve`) on `ENOSPC`. What reached the disk
//! is unknown (a failed `fdatasync` may have dropped dirty pages, and a second `fdatasync` can
//! report success for them), so no waiter is told "durable" and nothing is appended until
//! the writer has *repaired*: cut the segment back to the last record it made durable, synced
//! the cut, re-read that record's line from a fresh descriptor and found it byte for byte as
//! written; then the in-memory chain head, frontier and open intents return to that record.
//! The checkpoint thread retries with backoff until the tail is repaired, the checkpoint
//! saved and the reserve re-created, and returns the log to [`LogState::Ok`]. A tail that does
//! not verify, like a problem found by the background check, *poisons* the log
//! ([`LogState::Failed`]): every later append fails until the Hall restarts.
//!
//! **Recovery at open.** The log is scanned (see [`super::verify`]): a torn final line (bytes
//! after the last newline of the last segment: a crash mid-write, never acknowledged) is saved
//! under `broken/`, cut, and a `recovery` receipt records its offset, length and hash; each
//! intent without an outcome gets an `aborted` receipt; committed bytes are never rewritten.
//! Any other damage, a log shorter than or inconsistent with a saved checkpoint (the log
//! directory's `checkpoint` file and the configured second copy), or a signing key that is not
//! the log's current key, stops the open with an error and nothing is written.
//! Signatures are verified for records after the newest saved checkpoint (and for every key
//! rotation); records before it are covered by the checkpoint's signed Merkle root.
//!
//! **Fast open.** Every saved checkpoint is accompanied by a signed resume snapshot (see
//! [`super::resume`], which states its threat model). When the snapshot verifies under the
//! configured key, matches every saved checkpoint (size and root) and the line ending at its
//! offset hashes to its chain head, the open reads only the records after it, with all the
//! checks above; anything wrong with the snapshot, or any problem in that tail, falls back to
//! the full scan (with a warning saying why). The records the snapshot covered are then
//! re-verified by [`ReceiptLog::start_background_check`] (the daemon starts it once it is
//! ready): until it finishes the log appends; if it finds a problem, the log is poisoned and
//! every later append fails, exactly as after a write error.
//!
//! **Concurrency across processes.** One writer per directory: `LOCK` is held with `flock(2)`
//! for the life of the [`ReceiptLog`]; a second Hall (or `keys rotate` while the Hall runs)
//! gets [`OpenError::Locked`].

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use sha2::{Digest, Sha256};

use super::checkpoint::{self, Checkpoint};
use super::merkle::{self, Frontier, Hash};
use super::model::{
    self, Approval, Body, CheckpointRecord, Dispatch, Execution, HallInfo, Header, ModelError,
    Recovery, Rotation, hash_string,
};
use super::resume;
use super::store;
use super::verify::{self, KeyEpoch, ResumeFrom, Scan, ScanOptions, ScanProgress};
use crate::common::hex;
use crate::crypto::{KeyId, KeyPair, PublicKey};

/// How often a long scan at open reports progress by default (log line and callback).
pub const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// Default segment size before a new one is started.
pub const DEFAULT_SEGMENT_MAX_BYTES: u64 = 64 * 1024 * 1024;

/// Default size of the space reserve kept in the log directory.
pub const DEFAULT_RESERVE_BYTES: u64 = 16 * 1024 * 1024;

/// The reserve file's name in the log directory.
pub const RESERVE_FILE: &str = "reserve";

/// The file the recovery allocates (and removes) to see whether the resource is back.
const PROBE_FILE: &str = ".space-probe";

/// How much the recovery's probe allocates beyond the reserve.
const PROBE_BYTES: u64 = 256 * 1024;

/// How long the log waits between attempts to recover from a resource failure, at most.
const RECOVERY_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// How often refused appends are reported in the log, at most.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

/// Attempts at writing a receipt the log owes (an outcome, a denial, a checkpoint) before
/// giving up on it.
const OWED_ATTEMPTS: usize = 3;

/// Why an append failed, and the body it was given when it can still be appended again.
type Unappended = (LogError, Option<Body>);

/// How the writer is set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogOptions {
    /// The log directory (created, mode 0700, if missing).
    pub dir: PathBuf,
    /// The log's origin: first line of its checkpoints and their key name.
    pub origin: String,
    pub host_id: String,
    pub hall_version: String,
    /// Write a checkpoint after this many records (0: never by count).
    pub checkpoint_every: u64,
    /// Write a checkpoint when records are this old without one (`None`: never by time).
    pub checkpoint_interval: Option<Duration>,
    /// Where the last checkpoint is also saved (a different disk, mount or host).
    pub checkpoint_copy: Option<PathBuf>,
    pub segment_max_bytes: u64,
    /// How often a long scan at open reports progress ([`ReceiptLog::open_with_progress`]).
    pub progress_every: Duration,
    /// Size of the preallocated `reserve` file kept in the log directory and given up on
    /// `ENOSPC` so the receipts the log owes can still be written (0: no reserve).
    pub reserve_bytes: u64,
}

impl LogOptions {
    /// Defaults: origin `hall.<host_id>/receipts`, a checkpoint every 1000 records or 60 s,
    /// 64 MiB segments, no second checkpoint location.
    pub fn new(dir: impl Into<PathBuf>, host_id: &str) -> Self {
        LogOptions {
            dir: dir.into(),
            origin: default_origin(host_id),
            host_id: host_id.to_owned(),
            hall_version: env!("CARGO_PKG_VERSION").to_owned(),
            checkpoint_every: 1000,
            checkpoint_interval: Some(Duration::from_secs(60)),
            checkpoint_copy: None,
            segment_max_bytes: DEFAULT_SEGMENT_MAX_BYTES,
            progress_every: PROGRESS_EVERY,
            reserve_bytes: DEFAULT_RESERVE_BYTES,
        }
    }
}

/// `hall.<host id>/receipts`.
pub fn default_origin(host_id: &str) -> String {
    format!("hall.{host_id}/receipts")
}

/// Why the log could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("receipt log: cannot use {}: {source}", .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "receipt log {} is in use by another process (a running Hall holds {}/LOCK)",
        .dir.display(), .dir.display()
    )]
    Locked { dir: PathBuf },
    #[error(
        "sev1 integrity event in the receipt log: {reason}. The Hall will not start. Investigate \
         with `wcp-hall receipts verify`; do not delete the log or its checkpoints to get past this"
    )]
    Sev1 { reason: String },
    #[error(
        "the signing key {configured} is {} the receipt log's current key is {current}. Change \
         keys only with `wcp-hall keys rotate` (if a rotation was interrupted, run it again to \
         finish it)",
        if *.retired { "a retired key:" } else { "not this log's key:" }
    )]
    KeyMismatch {
        configured: KeyId,
        current: KeyId,
        retired: bool,
    },
    #[error("the receipt log's origin is {found:?} but the configuration says {configured:?}")]
    Origin { found: String, configured: String },
    #[error("receipt log options: {0}")]
    Options(String),
}

/// Why an append failed. Every variant means: nothing was recorded, run nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogError {
    #[error(
        "the receipt log has failed and refuses to append (fail closed: run nothing): {reason}"
    )]
    Failed { reason: String },
    #[error("invalid receipt: {0}")]
    Invalid(#[from] ModelError),
    #[error("seq {seq} is not an open intent (it already has an outcome, or is not an intent)")]
    UnknownIntent { seq: u64 },
    #[error("{0}")]
    Usage(String),
    #[error(
        "the receipt log cannot record now (a resource it needs is missing; it recovers by \
         itself when the resource returns): {reason}"
    )]
    Unavailable { reason: String },
}

/// The log's state, as health reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogState {
    Ok,
    /// A resource the log needs is missing (disk space, descriptors, memory, an I/O error):
    /// new intents are refused, the receipts the log owes are still attempted, and the log
    /// returns to `Ok` by itself once it has re-read and verified its tail and the resource
    /// is back.
    Degraded {
        reason: String,
        /// `ENOSPC`, `EMFILE`, … when the cause was a system call's error.
        errno: Option<String>,
        since: SystemTime,
    },
    /// An integrity failure (a record or checkpoint that does not verify): every append is
    /// refused until a human has looked and the Hall is restarted.
    Failed {
        reason: String,
    },
}

impl LogState {
    /// `ok`, `degraded`, `failed`.
    pub fn name(&self) -> &'static str {
        match self {
            LogState::Ok => "ok",
            LogState::Degraded { .. } => "degraded",
            LogState::Failed { .. } => "failed",
        }
    }
}

/// The errno name of an I/O error (`ENOSPC`), if it has one.
fn errno_name(e: &std::io::Error) -> Option<String> {
    e.raw_os_error()
        .map(|n| format!("{:?}", nix::errno::Errno::from_raw(n)))
}

/// Whether giving up the space reserve can help.
fn is_out_of_space(e: &std::io::Error) -> bool {
    use nix::libc;
    matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
}

/// Where the test seam can inject an error ([`ReceiptLog::inject_fault`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultPoint {
    /// The record's `write(2)` (half the line is written first, as a short write would).
    Write,
    /// The group `fdatasync`.
    Sync,
    /// Saving the checkpoint note.
    SaveCheckpoint,
    /// Re-creating the reserve (also the recovery's probe for space).
    Reserve,
}

/// A record on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub seq: u64,
    pub receipt_id: uuid::Uuid,
    pub receipt_hash: Hash,
}

impl Appended {
    /// `sha256:<hex>`, as callers are given it.
    pub fn receipt_hash_string(&self) -> String {
        hash_string(&self.receipt_hash)
    }
}

/// A durable intent that still needs its outcome ([`ReceiptLog::append_outcome`]). Dropping it
/// leaves the intent open: it gets an `aborted` receipt at shutdown or at the next start.
#[must_use = "an intent needs an outcome: pass it to ReceiptLog::append_outcome"]
#[derive(Debug)]
pub struct IntentHandle {
    appended: Appended,
    dispatch: Dispatch,
}

impl IntentHandle {
    pub fn seq(&self) -> u64 {
        self.appended.seq
    }
    pub fn appended(&self) -> Appended {
        self.appended
    }
    pub fn dispatch(&self) -> &Dispatch {
        &self.dispatch
    }
    /// Lets the caller complete the dispatch before the outcome (e.g. the envelope's effective
    /// report); the correlation id must not change.
    pub fn dispatch_mut(&mut self) -> &mut Dispatch {
        &mut self.dispatch
    }
}

/// How a dispatch with an intent ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Executed(Execution),
    Aborted { reason: String },
}

/// A checkpoint that was written to the log and saved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedCheckpoint {
    /// Tree size (also the seq of its checkpoint record).
    pub size: u64,
    pub root: Hash,
    /// The note in the checkpoint record.
    pub note: String,
    /// What was saved to `<dir>/checkpoint` and the copy: a checkpoint of the tree that
    /// includes the checkpoint record itself (`size + 1` records), so that removing that
    /// record, or any before it, makes the log shorter than its saved checkpoint.
    pub saved_size: u64,
    pub saved_note: String,
}

/// What the open found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenReport {
    /// Records in the log before anything was appended by this open.
    pub records: u64,
    pub signatures_checked: u64,
    /// The recovery receipt's seq and content, if a torn tail was cut.
    pub recovered: Option<(u64, Recovery)>,
    /// (intent seq, aborted receipt seq) for every intent that had no outcome.
    pub aborted: Vec<(u64, u64)>,
    /// Saved checkpoints checked: (where, tree size).
    pub saved_checkpoints: Vec<(PathBuf, u64)>,
    pub key_id: KeyId,
    /// The resume snapshot's size when the open read only the records after it (the records
    /// before it are left to [`ReceiptLog::start_background_check`]).
    pub resumed_at: Option<u64>,
    /// Why a resume snapshot that was present could not be used (the open read everything).
    pub resume_refused: Option<String>,
    /// Records the open's scan read and hashed.
    pub records_read: u64,
    /// How long the scan and checks took.
    pub scan_millis: u64,
}

/// Progress of a long scan at open (every few seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenProgress {
    pub records: u64,
    pub bytes: u64,
    pub total_bytes: u64,
    pub elapsed: Duration,
    /// Whether this is the full scan (no usable resume snapshot).
    pub full_scan: bool,
}

/// The background re-verification of the records a resume snapshot let the open skip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackgroundCheck {
    /// The open read the whole log: nothing is left to verify.
    NotNeeded,
    /// Records `0..records` are not verified yet; the check has not been started.
    Pending {
        records: u64,
    },
    Running {
        records: u64,
    },
    Passed {
        records: u64,
        millis: u64,
    },
    /// A problem was found: the log is poisoned.
    Failed {
        records: u64,
        reason: String,
    },
    /// The log was closed before the check finished.
    Cancelled {
        records: u64,
    },
}

impl BackgroundCheck {
    /// Records covered by the snapshot that are not (yet) known to be good.
    pub fn unverified(&self) -> u64 {
        match self {
            BackgroundCheck::NotNeeded | BackgroundCheck::Passed { .. } => 0,
            BackgroundCheck::Pending { records }
            | BackgroundCheck::Running { records }
            | BackgroundCheck::Failed { records, .. }
            | BackgroundCheck::Cancelled { records } => *records,
        }
    }

    /// `not_needed`, `pending`, `running`, `passed`, `failed`, `cancelled`.
    pub fn name(&self) -> &'static str {
        match self {
            BackgroundCheck::NotNeeded => "not_needed",
            BackgroundCheck::Pending { .. } => "pending",
            BackgroundCheck::Running { .. } => "running",
            BackgroundCheck::Passed { .. } => "passed",
            BackgroundCheck::Failed { .. } => "failed",
            BackgroundCheck::Cancelled { .. } => "cancelled",
        }
    }
}

/// What the background check compares the full scan with.
struct PendingCheck {
    expected: ResumeFrom,
    last_checkpoint: Option<u64>,
    /// The saved checkpoints the open checked: (where, note).
    saved: Vec<(PathBuf, String)>,
    /// The key the log was opened with.
    key: PublicKey,
}

/// A snapshot of the writer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogStatus {
    pub records: u64,
    pub durable: u64,
    pub open_intents: usize,
    pub key_id: KeyId,
    /// Seq (= tree size) of the newest checkpoint record.
    pub last_checkpoint: Option<u64>,
    pub fdatasyncs: u64,
    /// The integrity failure, if any (same as `state` = `Failed`).
    pub failed: Option<String>,
    pub state: LogState,
    /// Appends refused because the log was degraded or failed, since open.
    pub refusals: u64,
    /// Bytes held in the reserve file (0 while it is given up or not configured).
    pub reserve_bytes: u64,
    pub background_check: BackgroundCheck,
}

/// What a failed append or sync leaves behind: the state at the last durable record, to
/// which the writer returns after truncating whatever came after it.
#[derive(Debug, Clone)]
struct Mark {
    next_seq: u64,
    prev_hash: Option<Hash>,
    frontier: Frontier,
    segment_len: u64,
    segment_first_seq: u64,
    open_intents: BTreeMap<u64, Dispatch>,
    last_checkpoint: Option<u64>,
    epochs: usize,
    /// Offset and SHA-256 of the segment's last line (`None`: the segment is empty).
    last_line: Option<(u64, [u8; 32])>,
}

/// A resource failure in progress.
#[derive(Debug, Clone)]
struct Degraded {
    reason: String,
    errno: Option<String>,
    since: SystemTime,
    started: Instant,
    /// Appends refused since it began.
    refused: u64,
    /// Repairs of the tail since it began (the first is logged, the others counted).
    repairs: u64,
}

struct State {
    key: KeyPair,
    next_seq: u64,
    prev_hash: Option<Hash>,
    frontier: Frontier,
    file: Arc<File>,
    segment_len: u64,
    /// Records written to the file (== next_seq after a successful write).
    written: u64,
    /// Records known durable.
    synced: u64,
    syncing: bool,
    failed: Option<String>,
    degraded: Option<Degraded>,
    /// A write or sync failed: the file may hold bytes after `mark` (a partial line, records
    /// never acknowledged); nothing is appended before [`Inner::repair`] has cut them.
    needs_repair: bool,
    /// The state at the last durable record.
    mark: Mark,
    /// Offset and SHA-256 of the current segment's last line.
    last_line: Option<(u64, [u8; 32])>,
    /// For each repair so far, the record count it returned to (a waiter uses it to know
    /// whether its record was kept).
    repair_floors: Vec<u64>,
    /// A checkpoint recorded in the log whose note could not be saved yet.
    unsaved: Option<(u64, String, Option<Vec<u8>>)>,
    refusals: u64,
    refusals_logged: u64,
    last_refusal_log: Option<Instant>,
    reserve_held: u64,
    /// The last I/O error was `ENOSPC`/`EDQUOT` (giving up the reserve can help).
    out_of_space: bool,
    open_intents: BTreeMap<u64, Dispatch>,
    last_checkpoint: Option<u64>,
    last_checkpoint_time: Instant,
    checkpoint_wanted: bool,
    stopping: bool,
    fdatasyncs: u64,
    /// The log's key epochs (for resume snapshots).
    epochs: Vec<KeyEpoch>,
    /// First seq of the segment being appended to.
    segment_first_seq: u64,
}

impl State {
    fn since_checkpoint(&self) -> u64 {
        self.next_seq - self.last_checkpoint.map_or(0, |c| c + 1)
    }

    fn mark_now(&self) -> Mark {
        Mark {
            next_seq: self.next_seq,
            prev_hash: self.prev_hash,
            frontier: self.frontier.clone(),
            segment_len: self.segment_len,
            segment_first_seq: self.segment_first_seq,
            open_intents: self.open_intents.clone(),
            last_checkpoint: self.last_checkpoint,
            epochs: self.epochs.len(),
            last_line: self.last_line,
        }
    }

    fn state(&self) -> LogState {
        match (&self.failed, &self.degraded) {
            (Some(reason), _) => LogState::Failed {
                reason: reason.clone(),
            },
            (None, Some(d)) => LogState::Degraded {
                reason: d.reason.clone(),
                errno: d.errno.clone(),
                since: d.since,
            },
            (None, None) => LogState::Ok,
        }
    }
}

/// Creates (or keeps) `path` with `bytes` allocated from offset 0, synced.
#[allow(unsafe_code)] // fallocate(2) is not in std or nix in the form needed
fn allocate(path: &Path, bytes: u64) -> std::io::Result<File> {
    use std::os::fd::AsRawFd as _;
    let f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)?;
    // SAFETY: fallocate on a descriptor we own; no pointers.
    let r = unsafe { nix::libc::fallocate(f.as_raw_fd(), 0, 0, bytes as nix::libc::off_t) };
    if r != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(nix::libc::EOPNOTSUPP) {
            return Err(e);
        }
        // A filesystem without fallocate: the same space, written.
        use std::os::unix::fs::FileExt as _;
        let zeros = vec![0u8; 64 * 1024];
        let mut at = 0;
        while at < bytes {
            let n = zeros.len().min((bytes - at) as usize);
            f.write_all_at(&zeros[..n], at)?;
            at += n as u64;
        }
    }
    f.sync_all()?;
    Ok(f)
}

/// Where a segment's last line starts, and its SHA-256.
type LineMark = (u64, [u8; 32]);

/// Offset and SHA-256 of the last line of the first `len` bytes of `file` (`None` when
/// `len` is 0). The bytes must end with a newline.
fn last_line_of(file: &File, len: u64) -> std::io::Result<Option<(u64, [u8; 32])>> {
    use std::os::unix::fs::FileExt as _;
    if len == 0 {
        return Ok(None);
    }
    let mut end_byte = [0u8; 1];
    file.read_exact_at(&mut end_byte, len - 1)?;
    if end_byte[0] != b'\n' {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("the segment does not end with a newline at {len}"),
        ));
    }
    // Back from the final newline to the one before it.
    let mut start = 0;
    let mut pos = len - 1;
    let mut buf = vec![0u8; 64 * 1024];
    'find: while pos > 0 {
        let from = pos.saturating_sub(buf.len() as u64);
        let chunk = &mut buf[..(pos - from) as usize];
        file.read_exact_at(chunk, from)?;
        if let Some(i) = chunk.iter().rposition(|b| *b == b'\n') {
            start = from + i as u64 + 1;
            break 'find;
        }
        pos = from;
    }
    let mut line = vec![0u8; (len - start) as usize];
    file.read_exact_at(&mut line, start)?;
    Ok(Some((start, Sha256::digest(&line).into())))
}

struct Inner {
    opts: LogOptions,
    state: Mutex<State>,
    durable: Condvar,
    tick: Condvar,
    /// Tree size of the checkpoint last saved to the files.
    saved: Mutex<u64>,
    check: Mutex<BackgroundCheck>,
    pending: Mutex<Option<PendingCheck>>,
    cancel: AtomicBool,
    /// Test seam: errors to return at the next matching [`FaultPoint`] (empty in production).
    faults: Mutex<Vec<(FaultPoint, i32)>>,
    _lock: File,
}

/// The append-only receipt log. `Sync`: share it (`Arc<ReceiptLog>`, or by reference from
/// scoped threads) between all the threads that dispatch.
pub struct ReceiptLog {
    inner: Arc<Inner>,
    ticker: Option<JoinHandle<()>>,
    checker: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for ReceiptLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ReceiptLog({})", self.inner.opts.dir.display())
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> OpenError + '_ {
    move |source| OpenError::Io {
        path: path.to_owned(),
        source,
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// The open's scan (whole, or from a resume snapshot) and every check that stops the Hall:
/// problems in what was read, origin, key, key chain, the saved checkpoints.
fn scan_and_check(
    dir: &Path,
    opts: &LogOptions,
    key: &KeyPair,
    saved: &[(PathBuf, String, u64)],
    newest_saved: u64,
    resume: Option<ResumeFrom>,
    progress: &dyn Fn(ScanProgress),
) -> Result<(Scan, Vec<(PathBuf, u64)>), OpenError> {
    let mut scan = verify::scan(
        dir,
        &ScanOptions {
            signatures_from: newest_saved,
            roots_at: saved.iter().map(|s| s.2).collect(),
            resume,
            progress: Some(progress),
            ..ScanOptions::default()
        },
    )
    .map_err(io_err(dir))?;
    if let Some(first) = scan.first_failure() {
        return Err(OpenError::Sev1 {
            reason: format!(
                "{} problem(s) in the committed log; the first: {first}",
                scan.failure_count
            ),
        });
    }
    if let Some(found) = &scan.origin
        && *found != opts.origin
    {
        return Err(OpenError::Origin {
            found: found.clone(),
            configured: opts.origin.clone(),
        });
    }
    if let Some(current) = scan.keys.last()
        && current.key.id() != key.id()
    {
        return Err(OpenError::KeyMismatch {
            configured: key.id().clone(),
            current: current.key.id().clone(),
            retired: scan.keys.iter().any(|e| e.key.id() == key.id()),
        });
    }
    scan.apply_anchors(&[key.public()]);
    if let Some(first) = scan.first_failure() {
        return Err(OpenError::Sev1 {
            reason: format!("key chain: {first}"),
        });
    }
    let trusted = scan.trusted_epochs(&[key.public()]);
    let mut saved_report = Vec::new();
    for (path, note, size) in saved {
        verify::check_checkpoint_against(&scan, &trusted, note).map_err(|(_, why)| {
            OpenError::Sev1 {
                reason: format!("saved checkpoint {}: {why}", path.display()),
            }
        })?;
        saved_report.push((path.clone(), *size));
    }
    Ok((scan, saved_report))
}

/// Puts the calling thread (and the scan threads it starts, which inherit it) in
/// `SCHED_IDLE`, or at least at nice 19: the background check must not slow dispatches.
#[allow(unsafe_code)] // sched_setscheduler/setpriority are not in std or nix
fn lower_priority() {
    use nix::libc;
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: plain syscalls on the calling thread (pid 0 = this thread); `param` outlives
    // the call and is only read.
    let idle = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
    if idle != 0 {
        // SAFETY: as above; `setpriority(PRIO_PROCESS, 0)` changes the calling thread only.
        let _ = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 19) };
    }
}

impl ReceiptLog {
    /// Opens (or creates) the log, recovering from a crash; see the module documentation.
    pub fn open(opts: LogOptions, key: KeyPair) -> Result<(ReceiptLog, OpenReport), OpenError> {
        Self::open_with_progress(opts, key, &|_| {})
    }

    /// [`ReceiptLog::open`], calling `progress` every few seconds while the log is read (the
    /// daemon extends its systemd start timeout from it).
    pub fn open_with_progress(
        opts: LogOptions,
        key: KeyPair,
        progress: &dyn Fn(&OpenProgress),
    ) -> Result<(ReceiptLog, OpenReport), OpenError> {
        checkpoint::check_key_name(&opts.origin)
            .map_err(|e| OpenError::Options(format!("origin: {e}")))?;
        if opts.segment_max_bytes < 4096 {
            return Err(OpenError::Options(
                "segment_max_bytes must be at least 4096".into(),
            ));
        }
        if let Some(copy) = &opts.checkpoint_copy {
            let parent = copy.parent().filter(|p| !p.as_os_str().is_empty());
            if parent.is_some_and(|p| !p.is_dir()) {
                return Err(OpenError::Options(format!(
                    "checkpoint_copy {}: its directory does not exist",
                    copy.display()
                )));
            }
        }
        let dir = opts.dir.clone();
        if !dir.exists() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .map_err(io_err(&dir))?;
        }
        let lock_path = dir.join(store::LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(io_err(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(OpenError::Locked { dir }),
            Err(std::fs::TryLockError::Error(e)) => return Err(io_err(&lock_path)(e)),
        }

        // Saved checkpoints first: they decide which signatures the scan may skip.
        let mut saved: Vec<(PathBuf, String, u64)> = Vec::new();
        let mut saved_roots: Vec<resume::SavedRoot> = Vec::new();
        let sources =
            std::iter::once(dir.join(store::CHECKPOINT_FILE)).chain(opts.checkpoint_copy.clone());
        for path in sources {
            let note =
                store::read_small(&path, checkpoint::MAX_NOTE_BYTES as u64).map_err(|e| {
                    OpenError::Sev1 {
                        reason: format!(
                            "the saved checkpoint {} is unreadable: {e}",
                            path.display()
                        ),
                    }
                })?;
            let Some(note) = note else { continue };
            let parsed = checkpoint::SignedNote::parse(&note)
                .and_then(|n| Checkpoint::parse_text(&n.text))
                .map_err(|e| OpenError::Sev1 {
                    reason: format!("the saved checkpoint {} is corrupt: {e}", path.display()),
                })?;
            saved_roots.push((parsed.size, parsed.root));
            saved.push((path, note, parsed.size));
        }
        let newest_saved = saved.iter().map(|s| s.2).max().unwrap_or(0);

        // The resume snapshot, if it can be trusted to skip the records it covers.
        let public = key.public();
        let mut resume_refused = None;
        let resume = match resume::load(&dir, &public).and_then(|snap| {
            snap.map(|snap| {
                resume::validate(&dir, &snap, &opts.origin, &public, &saved_roots)
                    .map(|r| (r, snap.last_checkpoint))
            })
            .transpose()
        }) {
            Ok(r) => r,
            Err(why) => {
                resume_refused = Some(why);
                None
            }
        };
        if let Some(why) = &resume_refused {
            tracing::warn!(
                dir = %dir.display(),
                reason = %why,
                "receipt log: the resume snapshot cannot be used; reading the whole log"
            );
        }

        let started = Instant::now();
        let attempt = |from: Option<&ResumeFrom>| {
            let last = std::cell::Cell::new(Instant::now());
            let full_scan = from.is_none();
            let report = |p: ScanProgress| {
                if last.get().elapsed() < opts.progress_every {
                    return;
                }
                last.set(Instant::now());
                let op = OpenProgress {
                    records: p.records,
                    bytes: p.bytes,
                    total_bytes: p.total_bytes,
                    elapsed: started.elapsed(),
                    full_scan,
                };
                tracing::info!(
                    records = op.records,
                    mib_read = op.bytes >> 20,
                    mib_total = op.total_bytes >> 20,
                    seconds = op.elapsed.as_secs(),
                    full_scan,
                    "receipt log: checking the log at open"
                );
                progress(&op);
            };
            scan_and_check(
                &dir,
                &opts,
                &key,
                &saved,
                newest_saved,
                from.cloned(),
                &report,
            )
        };
        let (mut scan, saved_report, resumed) = match resume {
            Some((from, last_checkpoint)) => match attempt(Some(&from)) {
                Ok((scan, saved_report)) => (scan, saved_report, Some((from, last_checkpoint))),
                Err(e) => {
                    let why = format!("the records after it did not check out: {e}");
                    tracing::warn!(
                        dir = %dir.display(),
                        reason = %why,
                        "receipt log: the resume snapshot cannot be used; reading the whole log"
                    );
                    resume_refused = Some(why);
                    let (scan, saved_report) = attempt(None)?;
                    (scan, saved_report, None)
                }
            },
            None => {
                let (scan, saved_report) = attempt(None)?;
                (scan, saved_report, None)
            }
        };
        let scan_millis = started.elapsed().as_millis() as u64;

        // Recovery of a torn tail: keep the bytes, cut them, make the cut durable.
        let mut recovery = None;
        if let Some(t) = &scan.torn_tail {
            let broken = dir.join(store::BROKEN_DIR);
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&broken)
                .map_err(io_err(&broken))?;
            // A crash while writing the recovery receipt can tear the same offset again:
            // never overwrite an earlier torn tail.
            let mut saved_as = format!("{}.{}.broken", t.segment.name, t.offset);
            let mut n = 1;
            while broken.join(&saved_as).exists() {
                saved_as = format!("{}.{}.{n}.broken", t.segment.name, t.offset);
                n += 1;
            }
            store::write_atomic(&broken.join(&saved_as), &t.bytes, 0o600)
                .map_err(io_err(&broken))?;
            store::sync_dir(&dir).map_err(io_err(&dir))?;
            let f = OpenOptions::new()
                .write(true)
                .open(&t.segment.path)
                .map_err(io_err(&t.segment.path))?;
            f.set_len(t.offset).map_err(io_err(&t.segment.path))?;
            f.sync_all().map_err(io_err(&t.segment.path))?;
            recovery = Some(Recovery {
                segment: t.segment.name.clone(),
                offset: t.offset,
                discarded_bytes: t.bytes.len() as u64,
                discarded_sha256: sha256_hex(&t.bytes),
                saved_as,
            });
        }

        // The segment to append to.
        let (seg_path, seg_len) = match scan.segments.last() {
            Some(s) => (s.path.clone(), scan.last_segment_len),
            None => (dir.join(store::segment_name(0)), 0),
        };
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o640)
            .open(&seg_path)
            .map_err(io_err(&seg_path))?;
        if scan.segments.is_empty() {
            store::sync_dir(&dir).map_err(io_err(&dir))?;
        }

        let key_id = key.id().clone();
        let records = scan.size;
        let epochs = if scan.keys.is_empty() {
            vec![KeyEpoch {
                key: key.public(),
                from_seq: scan.size,
                rotated_at: None,
                rotation_ok: false,
                records_ok: 0,
            }]
        } else {
            scan.keys.clone()
        };
        let last_checkpoint = scan
            .checkpoints
            .last()
            .map(|c| c.seq)
            .or(resumed.as_ref().and_then(|r| r.1));
        // The segment's last line, which a repair after a failed write re-reads from disk.
        let last_line = last_line_of(&file, seg_len).map_err(io_err(&seg_path))?;
        let mut state = State {
            key,
            next_seq: scan.size,
            prev_hash: scan.last_hash,
            frontier: scan.frontier.clone(),
            file: Arc::new(file),
            segment_len: seg_len,
            written: scan.size,
            synced: scan.size,
            syncing: false,
            failed: None,
            degraded: None,
            needs_repair: false,
            mark: Mark {
                next_seq: 0,
                prev_hash: None,
                frontier: Frontier::default(),
                segment_len: 0,
                segment_first_seq: 0,
                open_intents: BTreeMap::new(),
                last_checkpoint: None,
                epochs: 0,
                last_line: None,
            },
            last_line,
            repair_floors: Vec::new(),
            unsaved: None,
            refusals: 0,
            refusals_logged: 0,
            last_refusal_log: None,
            reserve_held: 0,
            out_of_space: false,
            open_intents: scan
                .open_intents
                .iter()
                .map(|(seq, o)| (*seq, o.dispatch.clone()))
                .collect(),
            last_checkpoint,
            last_checkpoint_time: Instant::now(),
            checkpoint_wanted: false,
            stopping: false,
            fdatasyncs: 0,
            epochs,
            segment_first_seq: scan.segments.last().map_or(0, |s| s.first_seq),
        };
        state.mark = state.mark_now();
        let (check, pending) = match resumed {
            Some((expected, last_checkpoint)) => (
                BackgroundCheck::Pending {
                    records: expected.size,
                },
                Some(PendingCheck {
                    expected,
                    last_checkpoint,
                    saved: saved
                        .iter()
                        .map(|(p, n, _)| (p.clone(), n.clone()))
                        .collect(),
                    key: public.clone(),
                }),
            ),
            None => (BackgroundCheck::NotNeeded, None),
        };
        let inner = Arc::new(Inner {
            opts,
            state: Mutex::new(state),
            durable: Condvar::new(),
            tick: Condvar::new(),
            saved: Mutex::new(newest_saved),
            check: Mutex::new(check),
            pending: Mutex::new(pending),
            cancel: AtomicBool::new(false),
            faults: Mutex::new(Vec::new()),
            _lock: lock,
        });
        // The space reserve. Not getting it is a resource failure, not a reason to stop:
        // the log starts degraded (refusing new work) and takes it when the space returns.
        if let Err(e) = inner.ensure_reserve() {
            let mut st = inner.lock().map_err(|e| OpenError::Io {
                path: dir.clone(),
                source: std::io::Error::other(e.to_string()),
            })?;
            inner.degrade(
                &mut st,
                format!("cannot preallocate the space reserve: {e}"),
                errno_name(&e),
            );
        }
        let mut report = OpenReport {
            records,
            signatures_checked: scan.signatures_checked,
            recovered: None,
            aborted: Vec::new(),
            saved_checkpoints: saved_report,
            key_id,
            resumed_at: (scan.resumed_at > 0).then_some(scan.resumed_at),
            resume_refused,
            records_read: scan.records_read,
            scan_millis,
        };
        let recover_err = |e: LogError| OpenError::Io {
            path: dir.clone(),
            source: std::io::Error::other(format!("writing recovery receipts: {e}")),
        };
        if let Some(r) = recovery {
            let a = inner
                .append(Body::Recovery(r.clone()), None)
                .map_err(recover_err)?;
            report.recovered = Some((a.seq, r));
        }
        for (seq, open) in std::mem::take(&mut scan.open_intents) {
            let a = inner
                .append(
                    Body::Aborted {
                        intent_seq: Some(seq),
                        dispatch: open.dispatch,
                        reason: "the Hall stopped before the outcome was recorded (found at \
                                 recovery)"
                            .into(),
                    },
                    None,
                )
                .map_err(recover_err)?;
            report.aborted.push((seq, a.seq));
        }
        // Checkpoints by count and time, and recovery from resource failures.
        let ticker = {
            let i = Arc::clone(&inner);
            Some(
                std::thread::Builder::new()
                    .name("receipt-checkpoints".into())
                    .spawn(move || i.ticker())
                    .map_err(io_err(&dir))?,
            )
        };
        Ok((
            ReceiptLog {
                inner,
                ticker,
                checker: Mutex::new(None),
            },
            report,
        ))
    }

    /// Starts re-verifying, on a low-priority thread, the records a resume snapshot let the
    /// open skip: the same full scan a slow open does, limited to those records, whose end
    /// state must equal the snapshot's (chain head, tree, key epochs, open intents). A problem
    /// poisons the log (every later append fails), is logged at error level and shows in
    /// [`LogStatus::background_check`]. Returns `false` when there is nothing to verify (the
    /// open read everything) or the check was already started.
    pub fn start_background_check(&self) -> bool {
        let pending = match self.inner.pending.lock() {
            Ok(mut g) => g.take(),
            Err(_) => None,
        };
        let Some(pending) = pending else {
            return false;
        };
        let records = pending.expected.size;
        self.inner.set_check(BackgroundCheck::Running { records });
        let inner = Arc::clone(&self.inner);
        let spawned = std::thread::Builder::new()
            .name("receipt-verify".into())
            .spawn(move || inner.background_check(pending));
        match spawned {
            Ok(handle) => {
                if let Ok(mut g) = self.checker.lock() {
                    *g = Some(handle);
                }
            }
            Err(e) => {
                // Unverified records cannot be left unverified: fail closed.
                let reason = format!("cannot start the background verification: {e}");
                tracing::error!(reason = %reason, "receipt log: background verification");
                self.inner.fail_check(records, reason);
            }
        }
        true
    }

    /// Verifies now, on the calling thread and at its priority, what
    /// [`Self::start_background_check`] would verify at idle priority: for tools that must not
    /// go on before it (key rotation), where an idle-priority thread could wait indefinitely on
    /// a busy machine. Returns the result (`NotNeeded` when the open read everything).
    pub fn check_skipped_now(&self) -> BackgroundCheck {
        let pending = match self.inner.pending.lock() {
            Ok(mut g) => g.take(),
            Err(_) => None,
        };
        if let Some(pending) = pending {
            self.inner.set_check(BackgroundCheck::Running {
                records: pending.expected.size,
            });
            self.inner.check_skipped(pending);
        }
        self.wait_background_check()
    }

    /// Waits for the background check (if one was started) and returns its result.
    pub fn wait_background_check(&self) -> BackgroundCheck {
        let handle = match self.checker.lock() {
            Ok(mut g) => g.take(),
            Err(_) => None,
        };
        if let Some(h) = handle {
            let _ = h.join();
        }
        self.background_check()
    }

    /// The background check's state.
    pub fn background_check(&self) -> BackgroundCheck {
        self.inner.check_state()
    }

    /// Records that a worker is about to start. Durable when it returns; on any error the
    /// worker must not start.
    pub fn append_intent(&self, dispatch: Dispatch) -> Result<IntentHandle, LogError> {
        // The dispatch comes back from the append: the handle keeps it for the outcome.
        match self.inner.append_returning(Body::Intent(dispatch), None)? {
            (appended, Some(Body::Intent(dispatch))) => Ok(IntentHandle { appended, dispatch }),
            (appended, _) => Err(LogError::Usage(format!(
                "intent {} was recorded but its dispatch was not returned",
                appended.seq
            ))),
        }
    }

    /// Records how an intent ended. Durable when it returns; on any error the caller must not
    /// report success (the intent stays open and is aborted at shutdown or the next start).
    pub fn append_outcome(
        &self,
        intent: IntentHandle,
        outcome: Outcome,
    ) -> Result<Appended, LogError> {
        let intent_seq = intent.appended.seq;
        let dispatch = intent.dispatch;
        let body = match outcome {
            Outcome::Executed(execution) => Body::Executed {
                intent_seq,
                dispatch,
                execution,
            },
            Outcome::Aborted { reason } => Body::Aborted {
                intent_seq: Some(intent_seq),
                dispatch,
                reason,
            },
        };
        self.inner.append(body, None)
    }

    /// Records a denied dispatch (nothing ran). Durable when it returns.
    pub fn append_denied(&self, dispatch: Dispatch) -> Result<Appended, LogError> {
        self.inner.append(Body::Denied(dispatch), None)
    }

    /// Records a human approval that expired (nothing ran). Durable when it returns.
    pub fn append_expired_approval(
        &self,
        dispatch: Dispatch,
        approval: Approval,
    ) -> Result<Appended, LogError> {
        self.inner
            .append(Body::ExpiredApproval { dispatch, approval }, None)
    }

    /// Records a dispatch aborted before any intent was written.
    pub fn append_aborted(&self, dispatch: Dispatch, reason: String) -> Result<Appended, LogError> {
        self.inner.append(
            Body::Aborted {
                intent_seq: None,
                dispatch,
                reason,
            },
            None,
        )
    }

    /// Writes a checkpoint of everything so far (a `checkpoint` record, then the signed note
    /// saved atomically to `<dir>/checkpoint` and the configured copy). `None` if nothing was
    /// appended since the last one.
    pub fn checkpoint_now(&self) -> Result<Option<SavedCheckpoint>, LogError> {
        self.inner.checkpoint(false)
    }

    /// Like [`Self::checkpoint_now`], but also when the last record is itself a checkpoint:
    /// after an open that had to read the whole log (no usable resume snapshot), this saves a
    /// checkpoint with a fresh snapshot, so the next open reads only the tail.
    pub fn checkpoint_for_resume(&self) -> Result<Option<SavedCheckpoint>, LogError> {
        self.inner.checkpoint(true)
    }

    /// Rotates the signing key: a `key_rotation` record signed by the current and the new
    /// key, after which the new key signs. Durable when it returns.
    pub fn rotate_key(&self, new: KeyPair) -> Result<Appended, LogError> {
        let inner = &self.inner;
        let mut st = inner.ready(inner.lock()?)?;
        if st.degraded.is_some() {
            return Err(inner.refuse(&mut st));
        }
        if st.key.id() == new.id() {
            return Err(LogError::Usage(
                "the new key is the current key; generate a fresh one".into(),
            ));
        }
        let rotation = Rotation::new(&st.key.public(), &new.public());
        let appended = inner.append_locked(&mut st, Body::KeyRotation(rotation), Some(&new))?;
        if let Some(e) = st.epochs.last_mut() {
            e.rotated_at = Some(appended.seq);
            e.rotation_ok = true;
        }
        st.epochs.push(KeyEpoch {
            key: new.public(),
            from_seq: appended.seq + 1,
            rotated_at: None,
            rotation_ok: false,
            records_ok: 0,
        });
        st.key = new;
        let _st = inner.wait_durable(st, appended.seq + 1)?;
        Ok(appended)
    }

    /// The writer's current state.
    pub fn status(&self) -> LogStatus {
        let st = match self.inner.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        LogStatus {
            records: st.next_seq,
            durable: st.synced,
            open_intents: st.open_intents.len(),
            key_id: st.key.id().clone(),
            last_checkpoint: st.last_checkpoint,
            fdatasyncs: st.fdatasyncs,
            failed: st.failed.clone(),
            state: st.state(),
            refusals: st.refusals,
            reserve_bytes: st.reserve_held,
            background_check: self.inner.check_state(),
        }
    }

    /// Test seam: the next operation at `point` fails with `errno` (once per call).
    #[cfg(test)]
    pub(crate) fn inject_fault(&self, point: FaultPoint, errno: i32) {
        if let Ok(mut f) = self.inner.faults.lock() {
            f.push((point, errno));
        }
    }

    /// Test seam: forgets the injected errors not consumed yet.
    #[cfg(test)]
    pub(crate) fn clear_faults(&self) {
        if let Ok(mut f) = self.inner.faults.lock() {
            f.clear();
        }
    }

    /// Runs one recovery attempt now (what the checkpoint thread does while degraded).
    /// `true` when the log is `Ok` afterwards.
    pub fn try_recover(&self) -> bool {
        self.inner.recover()
    }

    /// The tree size of the newest checkpoint saved to `<dir>/checkpoint` (and the copy);
    /// `None` before the first. Echoed in every answer's receipt info, so clients can hold the
    /// smallest size the log may ever have again (see docs/receipts.md, "Truncation").
    pub fn saved_checkpoint_size(&self) -> Option<u64> {
        let saved = match self.inner.saved.lock() {
            Ok(g) => *g,
            Err(p) => *p.into_inner(),
        };
        (saved > 0).then_some(saved)
    }

    /// The options the log was opened with.
    pub fn options(&self) -> &LogOptions {
        &self.inner.opts
    }

    /// Orderly shutdown: open intents get `aborted` receipts, a final checkpoint is written
    /// and saved, the checkpoint thread stops. Returns the final checkpoint, if one was needed.
    pub fn shutdown(mut self) -> Result<Option<SavedCheckpoint>, LogError> {
        let open: Vec<(u64, Dispatch)> = {
            let st = self.inner.lock()?;
            st.open_intents
                .iter()
                .map(|(s, d)| (*s, d.clone()))
                .collect()
        };
        for (seq, dispatch) in open {
            self.inner.append(
                Body::Aborted {
                    intent_seq: Some(seq),
                    dispatch,
                    reason: "the Hall shut down before the outcome was recorded".into(),
                },
                None,
            )?;
        }
        // The thread first, so the final checkpoint is this call's (and reported).
        self.stop_ticker();
        self.inner.checkpoint(false)
    }

    fn stop_ticker(&mut self) {
        if let Ok(mut st) = self.inner.state.lock() {
            st.stopping = true;
        }
        self.inner.tick.notify_all();
        if let Some(t) = self.ticker.take() {
            let _ = t.join();
        }
        self.inner.cancel.store(true, Ordering::Relaxed);
        let checker = match self.checker.get_mut() {
            Ok(g) => g.take(),
            Err(p) => p.into_inner().take(),
        };
        if let Some(t) = checker {
            let _ = t.join();
        }
    }
}

impl Drop for ReceiptLog {
    fn drop(&mut self) {
        self.stop_ticker();
    }
}

impl Inner {
    fn check_state(&self) -> BackgroundCheck {
        match self.check.lock() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    fn set_check(&self, state: BackgroundCheck) {
        match self.check.lock() {
            Ok(mut g) => *g = state,
            Err(p) => *p.into_inner() = state,
        }
    }

    /// Records a failed background check and poisons the log.
    fn fail_check(&self, records: u64, reason: String) {
        let poisoned = format!(
            "sev1 integrity event found by the background verification of the receipt log: \
             {reason}. Investigate with `wcp-hall receipts verify`"
        );
        // The check's state first: whoever sees the log poisoned then also sees why.
        self.set_check(BackgroundCheck::Failed { records, reason });
        match self.state.lock() {
            Ok(mut st) => {
                let _ = self.poison(&mut st, poisoned);
            }
            Err(p) => {
                let mut st = p.into_inner();
                let _ = self.poison(&mut st, poisoned);
            }
        }
    }

    /// The background check's thread.
    fn background_check(&self, pending: PendingCheck) {
        lower_priority();
        self.check_skipped(pending);
    }

    /// Verifies the records the open skipped (see [`ReceiptLog::start_background_check`]).
    fn check_skipped(&self, pending: PendingCheck) {
        let records = pending.expected.size;
        let started = Instant::now();
        tracing::info!(
            records,
            "receipt log: verifying the records covered by the resume snapshot in the background"
        );
        match self.full_check(&pending) {
            Ok(()) => {
                let millis = started.elapsed().as_millis() as u64;
                tracing::info!(
                    records,
                    millis,
                    "receipt log: background verification passed"
                );
                self.set_check(BackgroundCheck::Passed { records, millis });
            }
            Err(None) => {
                tracing::info!(records, "receipt log: background verification cancelled");
                self.set_check(BackgroundCheck::Cancelled { records });
            }
            Err(Some(reason)) => {
                tracing::error!(
                    records,
                    reason = %reason,
                    "receipt log: SEV1: the background verification found a problem; the log \
                     refuses every append from now on"
                );
                self.fail_check(records, reason);
            }
        }
    }

    /// The full scan of records `0..n`, compared with what the snapshot said. `Err(None)`:
    /// cancelled.
    fn full_check(&self, p: &PendingCheck) -> Result<(), Option<String>> {
        let n = p.expected.size;
        let mut scan = verify::scan(
            &self.opts.dir,
            &ScanOptions {
                signatures_from: n,
                roots_at: vec![n],
                limit: Some(n),
                cancel: Some(&self.cancel),
                ..ScanOptions::default()
            },
        )
        .map_err(|e| {
            (e.kind() != std::io::ErrorKind::Interrupted)
                .then(|| format!("cannot read the log: {e}"))
        })?;
        if let Some(first) = scan.first_failure() {
            return Err(Some(format!(
                "{} problem(s) in the records before seq {n}; the first: {first}",
                scan.failure_count
            )));
        }
        if scan.size != n {
            return Err(Some(format!(
                "the log holds {} records before the resume point, the snapshot covers {n}",
                scan.size
            )));
        }
        if scan.origin.as_deref() != Some(p.expected.origin.as_str()) {
            return Err(Some(format!(
                "the records belong to log {:?}, the snapshot to {:?}",
                scan.origin, p.expected.origin
            )));
        }
        let epochs = |keys: &[KeyEpoch]| -> Vec<(KeyId, u64, Option<u64>)> {
            keys.iter()
                .map(|e| (e.key.id().clone(), e.from_seq, e.rotated_at))
                .collect()
        };
        if epochs(&scan.keys) != epochs(&p.expected.keys) {
            return Err(Some(
                "the log's key rotations differ from the snapshot's".into(),
            ));
        }
        scan.apply_anchors(std::slice::from_ref(&p.key));
        if let Some(first) = scan.first_failure() {
            return Err(Some(format!("key chain: {first}")));
        }
        let trusted = scan.trusted_epochs(std::slice::from_ref(&p.key));
        for (path, note) in &p.saved {
            verify::check_checkpoint_against(&scan, &trusted, note)
                .map_err(|(_, why)| Some(format!("saved checkpoint {}: {why}", path.display())))?;
        }
        if scan.last_hash != Some(p.expected.last_hash) {
            return Err(Some(format!(
                "the chain head at seq {} differs from the snapshot's",
                n - 1
            )));
        }
        if scan.frontier != p.expected.frontier {
            return Err(Some(format!(
                "the Merkle tree of the first {n} records differs from the snapshot's"
            )));
        }
        if scan.open_intents != p.expected.open_intents {
            return Err(Some(format!(
                "the open intents at seq {n} ({:?}) differ from the snapshot's ({:?})",
                scan.open_intents.keys().collect::<Vec<_>>(),
                p.expected.open_intents.keys().collect::<Vec<_>>()
            )));
        }
        if scan.checkpoints.last().map(|c| c.seq) != p.last_checkpoint {
            return Err(Some(
                "the last checkpoint before the snapshot differs from the snapshot's".into(),
            ));
        }
        Ok(())
    }

    fn lock(&self) -> Result<MutexGuard<'_, State>, LogError> {
        self.state.lock().map_err(|_| LogError::Failed {
            reason: "a thread panicked while appending".into(),
        })
    }

    /// The test seam: an injected error for `point`, if one is queued.
    fn fault(&self, point: FaultPoint) -> std::io::Result<()> {
        let mut f = match self.faults.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        match f.iter().position(|(p, _)| *p == point) {
            Some(i) => {
                let (_, errno) = f.remove(i);
                Err(std::io::Error::from_raw_os_error(errno))
            }
            None => Ok(()),
        }
    }

    /// Appends one record and waits until it is durable. A receipt the log owes (anything
    /// but an intent) is attempted even while the log is degraded, giving up the space reserve
    /// on `ENOSPC`; a new intent is refused then.
    fn append(&self, body: Body, extra_key: Option<&KeyPair>) -> Result<Appended, LogError> {
        self.append_returning(body, extra_key).map(|(a, _)| a)
    }

    /// [`Inner::append`], giving the body back once it is durable.
    fn append_returning(
        &self,
        body: Body,
        extra_key: Option<&KeyPair>,
    ) -> Result<(Appended, Option<Body>), LogError> {
        let owed = !matches!(body, Body::Intent(_));
        let mut st = self.lock()?;
        if !owed && st.degraded.is_some() && st.failed.is_none() {
            return Err(self.refuse(&mut st));
        }
        let mut attempts = if owed { OWED_ATTEMPTS } else { 1 };
        let mut body = Some(body);
        loop {
            attempts -= 1;
            let Some(this) = body.take() else {
                return Err(LogError::Usage("no receipt to append".into()));
            };
            // The body comes back from every attempt that can be retried (not copied up front).
            let result = match self.ready(st) {
                Err(e) => {
                    body = Some(this);
                    Err(e)
                }
                Ok(mut g) => match self.append_locked_returning(&mut g, this, extra_key) {
                    Err(failed) => {
                        let (e, back) = *failed;
                        body = back;
                        Err(e)
                    }
                    Ok((a, back)) => {
                        body = back;
                        self.wait_durable(g, a.seq + 1).map(|g| (g, a))
                    }
                },
            };
            match result {
                Ok((_g, a)) => return Ok((a, body)),
                // Retried after the repair (by this thread, or the recovery meanwhile).
                Err(LogError::Unavailable { .. }) if attempts > 0 => {
                    st = self.lock()?;
                    if st.reserve_held > 0 && st.out_of_space {
                        self.release_reserve(&mut st);
                    }
                }
                Err(e) => {
                    if matches!(e, LogError::Failed { .. } | LogError::Unavailable { .. }) {
                        let mut st = self.lock()?;
                        self.refuse(&mut st);
                    }
                    return Err(e);
                }
            }
        }
    }

    /// Waits for a sync in flight and repairs the file when a write or sync failed, so the
    /// next append starts from a verified tail.
    fn ready<'a>(
        &'a self,
        mut st: MutexGuard<'a, State>,
    ) -> Result<MutexGuard<'a, State>, LogError> {
        loop {
            if let Some(reason) = &st.failed {
                return Err(LogError::Failed {
                    reason: reason.clone(),
                });
            }
            if !st.needs_repair {
                return Ok(st);
            }
            if st.syncing {
                st = self.durable.wait(st).map_err(|_| LogError::Failed {
                    reason: "a thread panicked while appending".into(),
                })?;
                continue;
            }
            self.repair(&mut st)?;
        }
    }

    /// Integrity failure: every later append fails until restart.
    fn poison(&self, st: &mut State, reason: String) -> LogError {
        if st.failed.is_none() {
            tracing::error!(
                reason = %reason,
                "receipt log: FAILED (integrity): every append is refused until the log is \
                 investigated (`wcp-hall receipts verify`) and the Hall restarted"
            );
            st.failed = Some(reason);
        }
        self.durable.notify_all();
        self.tick.notify_all();
        LogError::Failed {
            reason: st.failed.clone().unwrap_or_default(),
        }
    }

    /// Resource failure: new work is refused until the recovery (on the checkpoint thread)
    /// finds the resource back. Logged once per episode.
    fn degrade(&self, st: &mut State, reason: String, errno: Option<String>) -> LogError {
        if st.failed.is_none() && st.degraded.is_none() {
            tracing::error!(
                reason = %reason,
                errno = errno.as_deref().unwrap_or("-"),
                "receipt log: DEGRADED (resource): new dispatches are refused until the log \
                 recovers; it retries by itself"
            );
            st.degraded = Some(Degraded {
                reason: reason.clone(),
                errno,
                since: SystemTime::now(),
                started: Instant::now(),
                refused: 0,
                repairs: 0,
            });
        }
        self.durable.notify_all();
        self.tick.notify_all();
        LogError::Unavailable { reason }
    }

    /// An I/O error while appending: the file may now hold bytes after the mark.
    fn io_failed(&self, st: &mut State, what: &str, e: &std::io::Error) -> LogError {
        st.needs_repair = true;
        st.out_of_space = is_out_of_space(e);
        self.degrade(st, format!("{what}: {e}"), errno_name(e))
    }

    /// Counts a refused append (and reports refusals, at most every ten seconds).
    fn refuse(&self, st: &mut State) -> LogError {
        st.refusals += 1;
        if let Some(d) = &mut st.degraded {
            d.refused += 1;
        }
        let due = st
            .last_refusal_log
            .is_none_or(|t| t.elapsed() >= REFUSAL_LOG_EVERY);
        if due {
            tracing::warn!(
                refused = st.refusals - st.refusals_logged,
                total = st.refusals,
                state = st.state().name(),
                "receipt log: refusing appends (reported at most every 10 s)"
            );
            st.refusals_logged = st.refusals;
            st.last_refusal_log = Some(Instant::now());
        }
        match (&st.failed, &st.degraded) {
            (Some(reason), _) => LogError::Failed {
                reason: reason.clone(),
            },
            (None, Some(d)) => LogError::Unavailable {
                reason: d.reason.clone(),
            },
            (None, None) => LogError::Unavailable {
                reason: "a write or sync failed; the log is recovering".into(),
            },
        }
    }

    /// Returns the writer to the last durable record: cuts what follows it in the segment
    /// (a partial line, records never acknowledged), syncs the cut, re-reads the segment's
    /// last line from a fresh descriptor and checks it is the one the writer last made
    /// durable. A mismatch is an integrity failure; an I/O error leaves the repair pending.
    fn repair(&self, st: &mut State) -> Result<(), LogError> {
        let m = st.mark.clone();
        if st.epochs.len() != m.epochs {
            return Err(self.poison(
                st,
                "a key rotation could not be made durable; restart the Hall to recover".into(),
            ));
        }
        let path = self.opts.dir.join(store::segment_name(m.segment_first_seq));
        let attempt = || -> std::io::Result<(File, Option<LineMark>)> {
            let f = OpenOptions::new().read(true).append(true).open(&path)?;
            f.set_len(m.segment_len)?;
            f.sync_all()?;
            let len = f.metadata()?.len();
            if len != m.segment_len {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!(
                        "the segment is {len} bytes after the cut to {}",
                        m.segment_len
                    ),
                ));
            }
            let last = last_line_of(&f, len)?;
            Ok((f, last))
        };
        match attempt() {
            Ok((f, last)) if last == m.last_line => {
                let dropped = st.next_seq - m.next_seq;
                st.file = Arc::new(f);
                st.next_seq = m.next_seq;
                st.written = m.next_seq;
                st.synced = m.next_seq;
                st.prev_hash = m.prev_hash;
                st.frontier = m.frontier;
                st.segment_len = m.segment_len;
                st.segment_first_seq = m.segment_first_seq;
                st.open_intents = m.open_intents;
                st.last_checkpoint = m.last_checkpoint;
                st.last_line = m.last_line;
                st.checkpoint_wanted = false;
                st.needs_repair = false;
                st.repair_floors.push(m.next_seq);
                let first = st.degraded.as_mut().is_none_or(|d| {
                    d.repairs += 1;
                    d.repairs == 1
                });
                if first {
                    tracing::warn!(
                        records = m.next_seq,
                        dropped_unacknowledged = dropped,
                        segment = %path.display(),
                        bytes = m.segment_len,
                        "receipt log: cut back to the last durable record and verified its \
                         tail from disk (further repairs until it recovers are counted, not \
                         logged)"
                    );
                } else {
                    tracing::debug!(
                        records = m.next_seq,
                        dropped_unacknowledged = dropped,
                        "receipt log: tail repaired again"
                    );
                }
                self.durable.notify_all();
                Ok(())
            }
            Ok(_) => Err(self.poison(
                st,
                format!(
                    "after a failed write, the last line of {} is not the last record made \
                     durable (seq {})",
                    path.display(),
                    m.next_seq.saturating_sub(1)
                ),
            )),
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                Err(self.poison(st, format!("after a failed write, {}: {e}", path.display())))
            }
            Err(e) => Err(self.degrade(
                st,
                format!("cannot repair {} after a failed write: {e}", path.display()),
                errno_name(&e),
            )),
        }
    }

    /// Checks that the resource is back and takes the reserve: a probe file is created,
    /// allocated (`fallocate`), synced and removed in the log directory (a descriptor, space
    /// past the reserve, a working sync), then the reserve file is created or completed unless
    /// it is held already.
    fn ensure_reserve(&self) -> std::io::Result<()> {
        self.fault(FaultPoint::Reserve)?;
        let probe = self.opts.dir.join(PROBE_FILE);
        let probed = allocate(&probe, PROBE_BYTES);
        let _ = fs::remove_file(&probe);
        probed?;
        let want = self.opts.reserve_bytes;
        let held = {
            let st = self
                .state
                .lock()
                .map_err(|_| std::io::Error::other("poisoned"))?;
            st.reserve_held
        };
        if want == 0 || held >= want {
            return Ok(());
        }
        let path = self.opts.dir.join(RESERVE_FILE);
        let f = match allocate(&path, want) {
            Ok(f) => f,
            Err(e) => {
                let _ = fs::remove_file(&path);
                return Err(e);
            }
        };
        let mut st = self
            .state
            .lock()
            .map_err(|_| std::io::Error::other("poisoned"))?;
        // An appender may have given the reserve up (unlinked it) meanwhile: only a file
        // still in place is held.
        use std::os::unix::fs::MetadataExt as _;
        let ours = f.metadata()?.ino();
        if fs::metadata(&path).is_ok_and(|m| m.ino() == ours) {
            st.reserve_held = want;
            Ok(())
        } else {
            Err(std::io::Error::other(
                "the reserve was released while it was made",
            ))
        }
    }

    /// Gives the reserve's space back to the filesystem, so owed receipts can be written.
    fn release_reserve(&self, st: &mut State) {
        let path = self.opts.dir.join(RESERVE_FILE);
        match fs::remove_file(&path) {
            Ok(()) => tracing::warn!(
                bytes = st.reserve_held,
                "receipt log: out of space; released the reserve to write the receipts the log \
                 owes"
            ),
            Err(e) => tracing::warn!(error = %e, "receipt log: cannot release the reserve"),
        }
        st.reserve_held = 0;
    }

    /// One recovery attempt (checkpoint thread, while degraded): repair, save the checkpoint
    /// that could not be saved, take the reserve back. `true` when the log is `Ok` again.
    fn recover(&self) -> bool {
        let Ok(st) = self.lock() else { return false };
        if st.failed.is_some() {
            return false;
        }
        let st = match self.ready(st) {
            Ok(g) => g,
            Err(_) => return false,
        };
        let unsaved = st.unsaved.clone();
        drop(st);
        if let Some((size, note, snapshot)) = unsaved
            && self
                .save_checkpoint(size, &note, snapshot.as_deref())
                .is_err()
        {
            return false;
        }
        if let Err(e) = self.ensure_reserve() {
            tracing::debug!(error = %e, "receipt log: the resource is still missing");
            return false;
        }
        let Ok(mut st) = self.lock() else {
            return false;
        };
        if st.failed.is_some() || st.needs_repair || st.unsaved.is_some() {
            return false;
        }
        if let Some(d) = st.degraded.take() {
            tracing::warn!(
                after_ms = d.started.elapsed().as_millis() as u64,
                refused = d.refused,
                repairs = d.repairs,
                reason = %d.reason,
                "receipt log: RECOVERED: the resource is back, the tail verified; accepting \
                 new dispatches"
            );
            // Records may have piled up without a checkpoint meanwhile.
            if self.opts.checkpoint_every > 0 && st.since_checkpoint() >= self.opts.checkpoint_every
            {
                st.checkpoint_wanted = true;
            }
        }
        true
    }

    /// Builds, signs and writes one record (not yet durable).
    fn append_locked(
        &self,
        st: &mut State,
        body: Body,
        extra_key: Option<&KeyPair>,
    ) -> Result<Appended, LogError> {
        self.append_locked_returning(st, body, extra_key)
            .map(|(a, _)| a)
            .map_err(|b| b.0)
    }

    /// [`Inner::append_locked`], giving the body back (when it still has it) for a retry.
    /// A failure is boxed: it is rare, and a [`Body`] is large.
    fn append_locked_returning(
        &self,
        st: &mut State,
        body: Body,
        extra_key: Option<&KeyPair>,
    ) -> Result<(Appended, Option<Body>), Box<Unappended>> {
        if let Some(reason) = &st.failed {
            let e = LogError::Failed {
                reason: reason.clone(),
            };
            return Err(Box::new((e, Some(body))));
        }
        if st.needs_repair {
            let e = LogError::Unavailable {
                reason: "a write or sync failed; the log is recovering".into(),
            };
            return Err(Box::new((e, Some(body))));
        }
        // Intent bookkeeping is checked before anything is written.
        let closes = match &body {
            Body::Executed {
                intent_seq,
                dispatch,
                ..
            }
            | Body::Aborted {
                intent_seq: Some(intent_seq),
                dispatch,
                ..
            } => {
                let Some(open) = st.open_intents.get(intent_seq) else {
                    return Err(Box::new((
                        LogError::UnknownIntent { seq: *intent_seq },
                        None,
                    )));
                };
                if open.correlation_id != dispatch.correlation_id {
                    let e = LogError::Usage(format!(
                        "the outcome's correlation_id {:?} differs from intent {intent_seq}'s {:?}",
                        dispatch.correlation_id, open.correlation_id
                    ));
                    return Err(Box::new((e, None)));
                }
                Some(*intent_seq)
            }
            _ => None,
        };
        let opens = match &body {
            Body::Intent(d) => Some(d.clone()),
            _ => None,
        };
        let seq = st.next_seq;
        let receipt_id = uuid::Uuid::now_v7();
        let header = Header {
            log: self.opts.origin.clone(),
            seq,
            receipt_id: receipt_id.hyphenated().to_string(),
            prev_receipt_hash: st.prev_hash,
            signing_key: st.key.public(),
            time: model::rfc3339_millis(SystemTime::now()),
            hall: HallInfo {
                version: self.opts.hall_version.clone(),
                host_id: self.opts.host_id.clone(),
            },
        };
        let sealed = match extra_key {
            Some(k) => model::seal_new(&header, body, &[&st.key, k]),
            None => model::seal_new(&header, body, &[&st.key]),
        }
        .map_err(|e| Box::new((e.into(), None)))?;
        if st.segment_len > 0
            && st.segment_len + sealed.line.len() as u64 > self.opts.segment_max_bytes
            && let Err(e) = self.new_segment(st, seq)
        {
            return Err(Box::new((e, sealed.payload.into_body().ok())));
        }
        let written = self.fault(FaultPoint::Write).inspect_err(|_| {
            // As a short write would: part of the line reaches the file.
            let _ = (&*st.file).write_all(&sealed.line[..sealed.line.len() / 2]);
        });
        if let Err(e) = written.and_then(|()| (&*st.file).write_all(&sealed.line)) {
            let e = self.io_failed(st, "cannot write the receipt log", &e);
            return Err(Box::new((e, sealed.payload.into_body().ok())));
        }
        st.last_line = Some((st.segment_len, Sha256::digest(&sealed.line).into()));
        st.segment_len += sealed.line.len() as u64;
        st.next_seq += 1;
        st.written = st.next_seq;
        st.prev_hash = Some(sealed.hash);
        st.frontier.push(merkle::leaf_hash(&sealed.payload_bytes));
        if let Some(i) = closes {
            st.open_intents.remove(&i);
        }
        if let Some(d) = opens {
            st.open_intents.insert(seq, d);
        }
        if self.opts.checkpoint_every > 0
            && st.since_checkpoint() >= self.opts.checkpoint_every
            && !st.checkpoint_wanted
        {
            st.checkpoint_wanted = true;
            self.tick.notify_all();
        }
        let appended = Appended {
            seq,
            receipt_id,
            receipt_hash: sealed.hash,
        };
        Ok((appended, sealed.payload.into_body().ok()))
    }

    /// Starts segment `first_seq`: the old one is synced first, the directory after.
    fn new_segment(&self, st: &mut State, first_seq: u64) -> Result<(), LogError> {
        if let Err(e) = self
            .fault(FaultPoint::Sync)
            .and_then(|()| st.file.sync_data())
        {
            return Err(self.io_failed(st, "cannot sync the receipt log", &e));
        }
        st.fdatasyncs += 1;
        st.synced = st.written;
        st.mark = st.mark_now();
        let path = self.opts.dir.join(store::segment_name(first_seq));
        let file = OpenOptions::new()
            .append(true)
            .create_new(true)
            .mode(0o640)
            .open(&path)
            .and_then(|f| store::sync_dir(&self.opts.dir).map(|()| f));
        match file {
            Ok(f) => {
                st.file = Arc::new(f);
                st.segment_len = 0;
                st.segment_first_seq = first_seq;
                st.last_line = None;
                st.mark = st.mark_now();
                self.durable.notify_all();
                Ok(())
            }
            Err(e) => {
                // A segment file that was created but not made durable stays empty; the
                // writer keeps appending to the old one after the repair.
                let _ = fs::remove_file(&path);
                Err(self.io_failed(st, &format!("cannot start segment {}", path.display()), &e))
            }
        }
    }

    /// Waits until the first `target` records are durable, leading a group `fdatasync` when no
    /// other thread is syncing.
    fn wait_durable<'a>(
        &'a self,
        mut st: MutexGuard<'a, State>,
        target: u64,
    ) -> Result<MutexGuard<'a, State>, LogError> {
        // A repair after this point cuts the log back to its floor: a record past it was
        // not kept, even if another record with the same seq becomes durable later.
        let repairs = st.repair_floors.len();
        loop {
            if let Some(&floor) = st.repair_floors.get(repairs) {
                if target <= floor {
                    return Ok(st);
                }
                return Err(LogError::Unavailable {
                    reason: "a write or sync failed before this record was durable".into(),
                });
            }
            if st.synced >= target {
                return Ok(st);
            }
            if let Some(reason) = &st.failed {
                return Err(LogError::Failed {
                    reason: reason.clone(),
                });
            }
            if st.syncing {
                st = self.durable.wait(st).map_err(|_| LogError::Failed {
                    reason: "a thread panicked while appending".into(),
                })?;
                continue;
            }
            // After a failed write or sync, a new fdatasync can report success for pages the
            // kernel already dropped: only the repair can tell what is on disk.
            if st.needs_repair {
                return Err(LogError::Unavailable {
                    reason: st.degraded.as_ref().map_or_else(
                        || "a write or sync failed; the log is recovering".into(),
                        |d| d.reason.clone(),
                    ),
                });
            }
            st.syncing = true;
            let file = Arc::clone(&st.file);
            let upto = st.written;
            let candidate = st.mark_now();
            drop(st);
            let result = self.fault(FaultPoint::Sync).and_then(|()| file.sync_data());
            st = self.lock()?;
            st.syncing = false;
            st.fdatasyncs += 1;
            match result {
                Ok(()) => {
                    st.synced = st.synced.max(upto);
                    if candidate.next_seq >= st.mark.next_seq
                        && candidate.segment_first_seq == st.segment_first_seq
                    {
                        st.mark = candidate;
                    }
                }
                Err(e) => {
                    let err = self.io_failed(&mut st, "cannot sync the receipt log", &e);
                    self.durable.notify_all();
                    return Err(err);
                }
            }
            self.durable.notify_all();
        }
    }

    /// A checkpoint of everything so far; with `even_if_current`, also when nothing but the
    /// last checkpoint record was appended since the last one (never on an empty log).
    /// A checkpoint is a receipt the log owes: attempted while degraded, retried after a
    /// repair, with the reserve given up on `ENOSPC`.
    fn checkpoint(&self, even_if_current: bool) -> Result<Option<SavedCheckpoint>, LogError> {
        let mut attempts = OWED_ATTEMPTS;
        loop {
            attempts -= 1;
            match self.checkpoint_once(even_if_current) {
                Err(LogError::Unavailable { .. }) if attempts > 0 => {
                    let mut st = self.lock()?;
                    if st.reserve_held > 0 && st.out_of_space {
                        self.release_reserve(&mut st);
                    }
                }
                other => return other,
            }
        }
    }

    fn checkpoint_once(&self, even_if_current: bool) -> Result<Option<SavedCheckpoint>, LogError> {
        let mut st = self.ready(self.lock()?)?;
        // A checkpoint recorded earlier whose note could not be saved: save it first.
        if let Some((size, note, snapshot)) = st.unsaved.clone() {
            drop(st);
            self.save_checkpoint(size, &note, snapshot.as_deref())?;
            st = self.ready(self.lock()?)?;
        }
        if st.since_checkpoint() == 0 && !(even_if_current && st.next_seq > 0) {
            st.checkpoint_wanted = false;
            return Ok(None);
        }
        let size = st.next_seq;
        let root = st.frontier.root();
        let note = Checkpoint::new(&self.opts.origin, size, root)
            .sign(&st.key)
            .map_err(|e| LogError::Usage(e.to_string()))?;
        let record = CheckpointRecord {
            size,
            root: hex(&root),
            note: note.clone(),
        };
        let appended = self.append_locked(&mut st, Body::Checkpoint(record), None)?;
        st.last_checkpoint = Some(appended.seq);
        st.last_checkpoint_time = Instant::now();
        st.checkpoint_wanted = false;
        // What is saved covers the checkpoint record too: the log's last record after a clean
        // shutdown is then inside the saved tree, and cannot be removed unnoticed.
        let saved_size = st.next_seq;
        let saved_note = Checkpoint::new(&self.opts.origin, saved_size, st.frontier.root())
            .sign(&st.key)
            .map_err(|e| LogError::Usage(e.to_string()))?;
        // The resume snapshot at that size, signed now (with the key that signs the note).
        let snapshot = st.prev_hash.and_then(|head| {
            let snap = resume::Snapshot::new(
                &self.opts.origin,
                &head,
                &st.frontier,
                &st.epochs,
                &st.open_intents,
                store::segment_name(st.segment_first_seq),
                st.segment_len,
                st.last_checkpoint,
            );
            match resume::seal(&snap, &st.key) {
                Ok(bytes) => Some(bytes),
                Err(e) => {
                    tracing::warn!(error = %e, "receipt log: cannot encode the resume snapshot");
                    None
                }
            }
        });
        drop(self.wait_durable(st, appended.seq + 1)?);
        self.save_checkpoint(saved_size, &saved_note, snapshot.as_deref())?;
        Ok(Some(SavedCheckpoint {
            size,
            root,
            note,
            saved_size,
            saved_note,
        }))
    }

    /// Saves a checkpoint note to both locations, never replacing a newer one, then its resume
    /// snapshot (an accelerator: failing to write it only costs the next start a full scan).
    fn save_checkpoint(
        &self,
        size: u64,
        note: &str,
        snapshot: Option<&[u8]>,
    ) -> Result<(), LogError> {
        let mut saved = self.saved.lock().map_err(|_| LogError::Failed {
            reason: "a thread panicked while saving a checkpoint".into(),
        })?;
        if *saved >= size && size > 0 {
            return Ok(());
        }
        let targets = std::iter::once(self.opts.dir.join(store::CHECKPOINT_FILE))
            .chain(self.opts.checkpoint_copy.clone());
        for path in targets {
            let written = self
                .fault(FaultPoint::SaveCheckpoint)
                .and_then(|()| store::write_atomic(&path, note.as_bytes(), 0o644));
            if let Err(e) = written {
                // The checkpoint is in the log; its note is saved again by the recovery.
                // Until then new work is refused, as without saved checkpoints a truncation
                // of the log could not be noticed.
                let mut st = self.lock()?;
                st.out_of_space = is_out_of_space(&e);
                if st.unsaved.as_ref().is_none_or(|u| u.0 < size) {
                    st.unsaved = Some((size, note.to_owned(), snapshot.map(<[u8]>::to_vec)));
                }
                return Err(self.degrade(
                    &mut st,
                    format!("cannot save the checkpoint to {}: {e}", path.display()),
                    errno_name(&e),
                ));
            }
        }
        *saved = size;
        if let Ok(mut st) = self.lock()
            && st.unsaved.as_ref().is_some_and(|u| u.0 <= size)
        {
            st.unsaved = None;
        }
        let resume_path = self.opts.dir.join(store::RESUME_FILE);
        let written = match snapshot {
            Some(bytes) => store::write_atomic(&resume_path, bytes, 0o600),
            // No snapshot for this checkpoint: a stale one would be refused anyway, but
            // removing it keeps the directory honest.
            None => resume::remove(&self.opts.dir),
        };
        if let Err(e) = written {
            tracing::warn!(
                path = %resume_path.display(),
                error = %e,
                "receipt log: cannot write the resume snapshot; the next start reads the whole log"
            );
        }
        Ok(())
    }

    /// The checkpoint thread: every `checkpoint_every` records (woken by the appender that
    /// crosses the count) or `checkpoint_interval` after the last checkpoint if records
    /// arrived since.
    fn ticker(&self) {
        let Ok(mut st) = self.state.lock() else {
            return;
        };
        let mut backoff = Duration::from_millis(25);
        loop {
            if st.stopping || st.failed.is_some() {
                return;
            }
            // Degraded: try to recover, with a growing pause (checkpoints wait for it).
            if st.degraded.is_some() {
                backoff = (backoff * 2).min(RECOVERY_BACKOFF_MAX);
                st = match self.tick.wait_timeout(st, backoff) {
                    Ok((g, _)) => g,
                    Err(_) => return,
                };
                if st.stopping || st.failed.is_some() {
                    return;
                }
                drop(st);
                self.recover();
                st = match self.state.lock() {
                    Ok(g) => g,
                    Err(_) => return,
                };
                continue;
            }
            backoff = Duration::from_millis(25);
            let pending = st.since_checkpoint() > 0;
            let deadline = self
                .opts
                .checkpoint_interval
                .map(|i| st.last_checkpoint_time + i);
            let now = Instant::now();
            let due = st.checkpoint_wanted || (pending && deadline.is_some_and(|d| now >= d));
            if due {
                drop(st);
                // An error poisons or degrades the log (appenders see it, the recovery
                // above takes over).
                let _ = self.checkpoint(false);
                st = match self.state.lock() {
                    Ok(g) => g,
                    Err(_) => return,
                };
                continue;
            }
            let wait = match (deadline, self.opts.checkpoint_interval) {
                (Some(d), _) if pending => d.saturating_duration_since(now),
                (_, Some(i)) => i,
                _ => Duration::from_secs(3600),
            };
            st = match self
                .tick
                .wait_timeout(st, wait.max(Duration::from_millis(1)))
            {
                Ok((g, _)) => g,
                Err(_) => return,
            };
        }
    }
}

#[cfg(test)]
mod tests;
