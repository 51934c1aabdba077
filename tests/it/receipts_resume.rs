//! The resume snapshot: a fast open reads only the records after it, a bad snapshot falls back
//! to the full scan, and what the fast open skipped is re-verified in the background (a problem
//! found there poisons the log).

use std::fs;
use std::path::Path;

use crate::receipts_common::*;
use wcp_hall::receipt::resume::{self, Snapshot};
use wcp_hall::receipt::{
    BackgroundCheck, LogError, LogOptions, OpenReport, Outcome, ReceiptLog, store,
};

fn open(opts: LogOptions, seed: u8) -> (ReceiptLog, OpenReport) {
    ReceiptLog::open(opts, key(seed)).expect("open")
}

/// 100 dispatches (175 records + checkpoints every 25 dispatches and at shutdown).
fn built() -> (tempfile::TempDir, u64) {
    let dir = tempfile::tempdir().unwrap();
    build_log(dir.path(), key(1), 100, 25);
    let records = store::list_segments(dir.path())
        .unwrap()
        .iter()
        .map(|s| {
            fs::read(&s.path)
                .unwrap()
                .iter()
                .filter(|&&b| b == b'\n')
                .count() as u64
        })
        .sum();
    (dir, records)
}

fn snapshot(dir: &Path) -> Snapshot {
    resume::load(dir, &key(1).public())
        .expect("the snapshot verifies")
        .expect("a snapshot exists")
}

/// Asserts the open read everything because the snapshot was refused, and that the log is
/// fine and appendable.
fn assert_full_scan_fallback(dir: &Path, records: u64, why: &str) {
    let (log, report) = open(options(dir), 1);
    assert_eq!(
        report.resumed_at, None,
        "{why}: the snapshot must not be used"
    );
    let refused = report.resume_refused.clone().expect("a reason is reported");
    assert!(!refused.is_empty());
    assert_eq!(report.records_read, records, "{why}: the whole log is read");
    assert_eq!(report.records, records);
    assert_eq!(log.background_check(), BackgroundCheck::NotNeeded);
    log.append_denied(denied("after")).expect("append");
    log.shutdown().unwrap();
    let r = verify(dir, &[key(1).public()], &[]);
    assert!(r.ok(), "{why}: {:?}", r.failures);
    eprintln!("{why}: refused because {refused}");
}

#[test]
fn a_fast_open_reads_only_the_records_after_the_snapshot() {
    let (dir, records) = built();
    let snap = snapshot(dir.path());
    // The shutdown checkpoint is the last record; the snapshot (like the saved checkpoint) covers it.
    assert_eq!(snap.size, records);
    assert_eq!(snap.format, resume::FORMAT);
    let (log, report) = open(options(dir.path()), 1);
    assert_eq!(report.resumed_at, Some(records));
    assert_eq!(report.resume_refused, None);
    assert_eq!(report.records, records);
    assert_eq!(report.records_read, 0, "nothing after the snapshot to read");
    assert_eq!(log.background_check(), BackgroundCheck::Pending { records });
    // Appends continue the chain and the tree; then a crash (no shutdown checkpoint).
    for i in 0..5 {
        let h = log.append_intent(dispatch(&format!("n-{i}"))).unwrap();
        log.append_outcome(h, Outcome::Executed(execution(i)))
            .unwrap();
    }
    let open_intent = log.append_intent(dispatch("left-open")).unwrap();
    assert!(log.start_background_check());
    assert!(!log.start_background_check(), "started once");
    match log.wait_background_check() {
        BackgroundCheck::Passed { records: n, .. } => assert_eq!(n, records),
        other => panic!("{other:?}"),
    }
    assert_eq!(log.status().background_check.unverified(), 0);
    drop(log);

    let (log, report) = open(options(dir.path()), 1);
    assert_eq!(report.resumed_at, Some(records));
    assert_eq!(report.records_read, 11);
    assert_eq!(report.aborted, vec![(open_intent.seq(), records + 11)]);
    log.start_background_check();
    assert!(matches!(
        log.wait_background_check(),
        BackgroundCheck::Passed { .. }
    ));
    log.shutdown().unwrap();
    let r = verify(dir.path(), &[key(1).public()], &[]);
    assert!(r.ok(), "{:?}", r.failures);
    assert!(r.open_intents.is_empty());

    // The same log without the snapshot: everything is read.
    fs::remove_file(dir.path().join(store::RESUME_FILE)).unwrap();
    let (_log, report) = open(options(dir.path()), 1);
    assert_eq!(report.resumed_at, None);
    assert_eq!(report.resume_refused, None, "no snapshot is not a refusal");
    assert_eq!(report.records_read, report.records);
}

#[test]
fn open_intents_in_the_snapshot_are_aborted_at_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(options(dir.path()), 1);
    let a = log.append_intent(dispatch("a")).unwrap();
    let b = log.append_intent(dispatch("b")).unwrap();
    log.append_outcome(b, Outcome::Executed(execution(1)))
        .unwrap();
    log.checkpoint_now().unwrap();
    drop(log); // crash: intent a is open, inside the snapshot
    let snap = snapshot(dir.path());
    assert_eq!(
        snap.open_intents.iter().map(|i| i.seq).collect::<Vec<_>>(),
        [a.seq()]
    );
    // A torn write after the snapshot is cut and recorded, as with a full scan.
    let seg = segment0(dir.path());
    let mut data = fs::read(&seg).unwrap();
    data.extend_from_slice(b"{\"envelope\":{\"pay");
    fs::write(&seg, data).unwrap();
    let (log, report) = open(options(dir.path()), 1);
    assert_eq!(report.resumed_at, Some(4));
    assert_eq!(report.records_read, 0);
    assert_eq!(report.recovered.as_ref().map(|r| r.0), Some(4));
    assert_eq!(report.aborted, vec![(a.seq(), 5)]);
    log.start_background_check();
    assert!(matches!(
        log.wait_background_check(),
        BackgroundCheck::Passed { .. }
    ));
    log.shutdown().unwrap();
    let r = verify(dir.path(), &[key(1).public()], &[]);
    assert!(r.ok() && r.open_intents.is_empty(), "{:?}", r.failures);
}

#[test]
fn a_snapshot_signed_by_another_key_is_refused() {
    let (dir, records) = built();
    let snap = snapshot(dir.path());
    resume::write(dir.path(), &snap, &key(66)).unwrap();
    assert_full_scan_fallback(dir.path(), records, "another key");
}

#[test]
fn a_changed_byte_in_the_snapshot_is_refused() {
    let (dir, records) = built();
    let path = dir.path().join(store::RESUME_FILE);
    let mut bytes = fs::read(&path).unwrap();
    let at = bytes.len() / 3;
    bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
    fs::write(&path, bytes).unwrap();
    assert_full_scan_fallback(dir.path(), records, "changed byte");
}

/// Correctly signed snapshots that lie are refused by the binding and log checks.
#[test]
fn signed_but_inconsistent_snapshots_are_refused() {
    type Mutation = fn(&mut Snapshot);
    let cases: &[(&str, Mutation)] = &[
        ("wrong root", |s| s.root = "11".repeat(32)),
        ("wrong offset (short)", |s| s.offset -= 1),
        ("wrong offset (into the next record)", |s| s.offset += 10),
        ("wrong chain head", |s| {
            s.chain_head = format!("sha256:{}", "22".repeat(32))
        }),
        ("missing segment", |s| s.segment = store::segment_name(7)),
        ("wrong size", |s| s.size -= 1),
        ("wrong origin", |s| s.origin = "hall.other/receipts".into()),
        ("frontier of another size", |s| {
            s.frontier.pop();
        }),
        (
            "another tree of the same size (frontier and root agree)",
            |s| {
                s.frontier[0] = "33".repeat(32);
                let nodes = s
                    .frontier
                    .iter()
                    .map(|h| wcp_hall::receipt::model::parse_hex32(h).unwrap())
                    .collect();
                let f = wcp_hall::receipt::merkle::Frontier::from_parts(s.size, nodes).unwrap();
                s.root = wcp_hall::router::hex(&f.root());
            },
        ),
    ];
    for (why, mutate) in cases {
        let (dir, records) = built();
        let mut snap = snapshot(dir.path());
        mutate(&mut snap);
        resume::write(dir.path(), &snap, &key(1)).unwrap();
        assert_full_scan_fallback(dir.path(), records, why);
    }
}

#[test]
fn a_stale_snapshot_is_refused() {
    let (dir, records) = built();
    let old = fs::read(dir.path().join(store::RESUME_FILE)).unwrap();
    let (log, _) = open(options(dir.path()), 1);
    log.append_denied(denied("x")).unwrap();
    log.shutdown().unwrap();
    fs::write(dir.path().join(store::RESUME_FILE), old).unwrap();
    assert_full_scan_fallback(dir.path(), records + 2, "stale");
}

#[test]
fn a_truncated_log_is_still_a_sev1_with_a_snapshot_present() {
    let (dir, _) = built();
    let all = lines(dir.path());
    write_lines(dir.path(), &all[..all.len() - 5]);
    match ReceiptLog::open(options(dir.path()), key(1)) {
        Err(wcp_hall::receipt::OpenError::Sev1 { reason }) => {
            assert!(reason.contains("truncated"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn tampering_before_the_snapshot_is_caught_in_the_background_and_stops_appends() {
    let (dir, records) = built();
    let mut all = lines(dir.path());
    let at = all[3].len() / 2;
    all[3][at] ^= 0x01;
    write_lines(dir.path(), &all);
    // Not seen at the fast open: the Hall starts and appends.
    let (log, report) = open(options(dir.path()), 1);
    assert_eq!(report.resumed_at, Some(records));
    log.append_denied(denied("before the check")).unwrap();
    assert!(log.start_background_check());
    match log.wait_background_check() {
        BackgroundCheck::Failed { reason, .. } => assert!(reason.contains("seq 3"), "{reason}"),
        other => panic!("{other:?}"),
    }
    let failed = log.status().failed.expect("the log is poisoned");
    assert!(failed.contains("background verification"), "{failed}");
    match log.append_denied(denied("after the check")) {
        Err(LogError::Failed { reason }) => assert!(reason.contains("seq 3"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert!(log.append_intent(dispatch("never runs")).is_err());
    drop(log);
    // Restarting does not hide it: with the snapshot refused or not, the full scan finds it.
    fs::remove_file(dir.path().join(store::RESUME_FILE)).unwrap();
    assert!(matches!(
        ReceiptLog::open(options(dir.path()), key(1)),
        Err(wcp_hall::receipt::OpenError::Sev1 { .. })
    ));
}

#[test]
fn a_snapshot_that_lies_about_open_intents_is_caught_in_the_background() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(options(dir.path()), 1);
    let _a = log.append_intent(dispatch("a")).unwrap();
    log.checkpoint_now().unwrap();
    drop(log);
    // Signed with the right key, consistent with the log's end, but hiding the open intent
    // (only someone holding the key could do this; the full check still notices).
    let mut snap = snapshot(dir.path());
    snap.open_intents.clear();
    resume::write(dir.path(), &snap, &key(1)).unwrap();
    let (log, report) = open(options(dir.path()), 1);
    assert_eq!(report.resumed_at, Some(2));
    assert!(report.aborted.is_empty());
    log.start_background_check();
    match log.wait_background_check() {
        BackgroundCheck::Failed { reason, .. } => {
            assert!(reason.contains("open intents"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    assert!(log.append_denied(denied("x")).is_err());
}

#[test]
fn key_rotations_before_and_after_a_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(options(dir.path()), 1);
    log.append_denied(denied("a")).unwrap();
    log.rotate_key(key(2)).unwrap();
    log.append_denied(denied("b")).unwrap();
    log.checkpoint_now().unwrap();
    drop(log);
    // The snapshot is signed by the new key and carries both epochs.
    assert!(resume::load(dir.path(), &key(1).public()).is_err());
    let snap = resume::load(dir.path(), &key(2).public()).unwrap().unwrap();
    assert_eq!(snap.keys.len(), 2);
    assert_eq!(snap.keys[0].rotated_at, Some(1));
    // The retired key still cannot open the log.
    match ReceiptLog::open(options(dir.path()), key(1)) {
        Err(wcp_hall::receipt::OpenError::KeyMismatch { retired: true, .. }) => {}
        other => panic!("{other:?}"),
    }
    let (log, report) = open(options(dir.path()), 2);
    assert_eq!(report.resumed_at, Some(4));
    log.start_background_check();
    assert!(matches!(
        log.wait_background_check(),
        BackgroundCheck::Passed { .. }
    ));
    // A rotation after the snapshot: the tail scan follows it.
    log.rotate_key(key(3)).unwrap();
    log.append_denied(denied("c")).unwrap();
    drop(log); // crash: the snapshot is still the one signed by key 2
    match ReceiptLog::open(options(dir.path()), key(3)) {
        Ok((log, report)) => {
            // Signed by key 2, the snapshot does not verify under key 3: full scan.
            assert_eq!(report.resumed_at, None);
            assert!(report.resume_refused.is_some());
            log.shutdown().unwrap();
        }
        Err(e) => panic!("{e}"),
    }
    let (log, report) = open(options(dir.path()), 3);
    assert!(report.resumed_at.is_some());
    log.start_background_check();
    assert!(matches!(
        log.wait_background_check(),
        BackgroundCheck::Passed { .. }
    ));
    drop(log);
    for anchor in [key(1), key(2), key(3)] {
        let r = verify(dir.path(), &[anchor.public()], &[]);
        assert!(r.ok(), "{:?}", r.failures);
    }
}

#[test]
fn snapshots_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = options(dir.path());
    o.segment_max_bytes = 4096;
    let mut log = open(o.clone(), 1).0;
    for round in 0..6u64 {
        for i in 0..7 {
            let h = log
                .append_intent(dispatch(&format!("c-{round}-{i}")))
                .unwrap();
            log.append_outcome(h, Outcome::Executed(execution(i)))
                .unwrap();
        }
        log.checkpoint_now().unwrap();
        drop(log);
        let (next, report) = open(o.clone(), 1);
        let snap = snapshot(dir.path());
        assert_eq!(report.resumed_at, Some(snap.size), "round {round}");
        assert_eq!(report.records_read, 0, "round {round}");
        next.start_background_check();
        assert!(
            matches!(next.wait_background_check(), BackgroundCheck::Passed { .. }),
            "round {round}"
        );
        log = next;
    }
    drop(log);
    assert!(store::list_segments(dir.path()).unwrap().len() > 3);
    let r = verify(dir.path(), &[key(1).public()], &[]);
    assert!(r.ok(), "{:?}", r.failures);
}

#[test]
fn a_tool_can_check_the_skipped_records_itself_at_its_own_priority() {
    // Clean: the records the fast open skipped pass, on the calling thread.
    let (dir, records) = built();
    let (log, report) = open(options(dir.path()), 1);
    assert_eq!(report.resumed_at, Some(records));
    assert!(
        matches!(log.check_skipped_now(), BackgroundCheck::Passed { .. }),
        "{:?}",
        log.background_check()
    );
    assert!(
        !log.start_background_check(),
        "nothing left for the background"
    );
    drop(log);

    // Tampered before the snapshot: found, and the log refuses appends (key rotation relies
    // on this to refuse rotating over a damaged log).
    let mut all = lines(dir.path());
    let at = all[2].len() / 2;
    all[2][at] ^= 0x01;
    write_lines(dir.path(), &all);
    let (log, report) = open(options(dir.path()), 1);
    assert!(report.resumed_at.is_some());
    match log.check_skipped_now() {
        BackgroundCheck::Failed { reason, .. } => assert!(reason.contains("seq 2"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert!(log.append_denied(denied("after")).is_err());
}

#[test]
fn a_long_read_at_open_reports_progress() {
    let (dir, records) = built();
    let progress_of = |with_snapshot: bool| {
        if !with_snapshot {
            let _ = fs::remove_file(dir.path().join(store::RESUME_FILE));
        }
        let mut o = options(dir.path());
        o.progress_every = std::time::Duration::ZERO;
        let seen = std::cell::RefCell::new(Vec::new());
        let (log, report) =
            ReceiptLog::open_with_progress(o, key(1), &|p| seen.borrow_mut().push(*p)).unwrap();
        log.checkpoint_for_resume().unwrap();
        drop(log);
        (report, seen.into_inner())
    };
    // No snapshot: the whole log is read, and the reports (what the daemon turns into
    // STATUS= and EXTEND_TIMEOUT_USEC) say so and count up to it.
    let (report, seen) = progress_of(false);
    assert!(report.resumed_at.is_none());
    let last = seen.last().expect("at least one progress report");
    assert!(seen.iter().all(|p| p.full_scan), "{seen:?}");
    assert_eq!(last.records, records, "{seen:?}");
    assert_eq!(last.bytes, last.total_bytes, "{seen:?}");
    assert!(seen.windows(2).all(|w| w[0].records <= w[1].records));
    // With the snapshot that open saved: only the tail is read, not reported as a full scan.
    let (report, seen) = progress_of(true);
    assert!(report.resumed_at.is_some(), "{report:?}");
    assert!(seen.iter().all(|p| !p.full_scan), "{seen:?}");
}
