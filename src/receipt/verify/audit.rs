//! `receipts verify`: a whole log checked offline against trusted keys and checkpoints.

use std::path::Path;

use serde::Serialize;

use super::scan::{Failure, Scan, ScanOptions, scan, short};
use crate::common::hex;
use crate::crypto::PublicKey;
use crate::receipt::checkpoint::{self, Checkpoint, SignedNote};
use crate::receipt::store::{self};

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
