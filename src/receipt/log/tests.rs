use super::*;
use crate::receipt::model::tests::dispatch;
use crate::receipt::model::{Kind, Timings};
use crate::receipt::verify::{VerifyOptions, verify_log};

fn opts(dir: &Path) -> LogOptions {
    let mut o = LogOptions::new(dir, "test");
    o.checkpoint_every = 0;
    o.checkpoint_interval = None;
    o.reserve_bytes = 64 * 1024;
    o
}

fn key() -> KeyPair {
    KeyPair::from_seed(&[5; 32])
}

fn execution() -> Execution {
    Execution {
        exit_code: Some(0),
        failure: None,
        signal: None,
        timed_out: false,
        truncated: false,
        stdout_sha256: "00".repeat(32),
        stderr_sha256: "00".repeat(32),
        stdout_bytes: 0,
        stderr_bytes: 0,
        timings: Timings {
            started_at: "2026-11-24T19:36:01.274Z".into(),
            wall_ms: 1,
            cpu_user_ms: None,
            cpu_system_ms: None,
        },
    }
}

fn verify(dir: &Path, k: &KeyPair) -> verify::VerifyReport {
    verify_log(
        dir,
        &VerifyOptions {
            anchors: vec![k.public()],
            checkpoints: vec![],
        },
    )
    .unwrap()
}

#[test]
fn intents_and_outcomes_chain_and_verify() {
    let dir = tempfile::tempdir().unwrap();
    let (log, report) = ReceiptLog::open(opts(dir.path()), key()).unwrap();
    assert_eq!(report.records, 0);
    let intent = log.append_intent(dispatch("c-1")).unwrap();
    assert_eq!(intent.seq(), 0);
    let out = log
        .append_outcome(intent, Outcome::Executed(execution()))
        .unwrap();
    assert_eq!(out.seq, 1);
    // An outcome for an intent that is closed, or never existed, is refused.
    let ghost = IntentHandle {
        appended: out,
        dispatch: dispatch("c-1"),
    };
    assert_eq!(
        log.append_outcome(ghost, Outcome::Executed(execution())),
        Err(LogError::UnknownIntent { seq: 1 })
    );
    let mut d = dispatch("c-2");
    d.decision.denied = true;
    d.decision.deny_code = Some("DENY_NO_MATCHING_RULE".into());
    log.append_denied(d).unwrap();
    let cp = log.checkpoint_now().unwrap().unwrap();
    assert_eq!(cp.size, 3);
    assert_eq!(log.checkpoint_now().unwrap(), None);
    let status = log.status();
    assert_eq!((status.records, status.durable), (4, 4));
    assert_eq!(status.last_checkpoint, Some(3));
    drop(log);
    let r = verify(dir.path(), &key());
    assert!(r.ok(), "{:?}", r.failures);
    assert_eq!((r.records, r.passed), (4, 4));
    assert_eq!(r.checkpoints.len(), 2, "{:?}", r.checkpoints);
    // Reopen: everything is found again and nothing is rewritten.
    let before = fs::read(dir.path().join(store::segment_name(0))).unwrap();
    let (log, report) = ReceiptLog::open(opts(dir.path()), key()).unwrap();
    assert_eq!(report.records, 4);
    assert!(report.recovered.is_none() && report.aborted.is_empty());
    assert_eq!(report.saved_checkpoints.len(), 1);
    drop(log);
    assert_eq!(
        fs::read(dir.path().join(store::segment_name(0))).unwrap(),
        before
    );
}

#[test]
fn a_torn_tail_is_cut_kept_and_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = ReceiptLog::open(opts(dir.path()), key()).unwrap();
    let _open = log.append_intent(dispatch("c-1")).unwrap();
    drop(log);
    let seg = dir.path().join(store::segment_name(0));
    let committed = fs::read(&seg).unwrap();
    let mut torn = committed.clone();
    let tail: &[u8] = b"{\"envelope\":{\"payload\":\"eyJh";
    torn.extend_from_slice(tail);
    fs::write(&seg, &torn).unwrap();
    let (log, report) = ReceiptLog::open(opts(dir.path()), key()).unwrap();
    let (rseq, rec) = report.recovered.clone().unwrap();
    assert_eq!(rseq, 1);
    assert_eq!(rec.offset, committed.len() as u64);
    assert_eq!(rec.discarded_bytes, tail.len() as u64);
    let kept = fs::read(dir.path().join("broken").join(&rec.saved_as)).unwrap();
    assert_eq!(kept, tail);
    assert_eq!(rec.discarded_sha256, sha256_hex(&kept));
    // The open intent got an aborted receipt after the recovery receipt.
    assert_eq!(report.aborted, vec![(0, 2)]);
    drop(log);
    let after = fs::read(&seg).unwrap();
    assert_eq!(
        &after[..committed.len()],
        &committed[..],
        "committed bytes unchanged"
    );
    let r = verify(dir.path(), &key());
    assert!(r.ok(), "{:?}", r.failures);
    assert!(r.open_intents.is_empty());
    let found = verify::find_record(dir.path(), &verify::Selector::Seq(2))
        .unwrap()
        .unwrap();
    assert_eq!(found.payload.unwrap().kind, Kind::Aborted);
}

#[test]
fn the_log_can_be_shared_between_threads() {
    fn shareable<T: Send + Sync>() {}
    shareable::<ReceiptLog>();
    shareable::<std::sync::Arc<ReceiptLog>>();
}

#[test]
fn a_second_writer_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_log, _) = ReceiptLog::open(opts(dir.path()), key()).unwrap();
    assert!(matches!(
        ReceiptLog::open(opts(dir.path()), key()),
        Err(OpenError::Locked { .. })
    ));
}

#[test]
fn segments_roll_over_and_stay_one_log() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts(dir.path());
    o.segment_max_bytes = 4096;
    let (log, _) = ReceiptLog::open(o.clone(), key()).unwrap();
    for i in 0..12 {
        let h = log.append_intent(dispatch(&format!("c-{i}"))).unwrap();
        log.append_outcome(h, Outcome::Executed(execution()))
            .unwrap();
    }
    log.checkpoint_now().unwrap();
    drop(log);
    let segs = store::list_segments(dir.path()).unwrap();
    assert!(segs.len() > 3, "{segs:?}");
    let r = verify(dir.path(), &key());
    assert!(r.ok(), "{:?}", r.failures);
    assert_eq!(r.records, 25);
    let (log, report) = ReceiptLog::open(o, key()).unwrap();
    assert_eq!(report.records, 25);
    log.append_intent(dispatch("c-x")).unwrap().seq();
}

#[test]
fn rotation_switches_keys_and_retired_keys_cannot_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = (key(), KeyPair::from_seed(&[6; 32]));
    let (log, _) = ReceiptLog::open(opts(dir.path()), key()).unwrap();
    let _ = log.append_intent(dispatch("c-1")).unwrap();
    let rot = log.rotate_key(KeyPair::from_seed(&[6; 32])).unwrap();
    assert_eq!(rot.seq, 1);
    assert_eq!(log.status().key_id, *new.id());
    log.checkpoint_now().unwrap();
    drop(log);
    // Either key anchors the whole chain (each rotation is signed by both).
    for anchor in [&old, &new] {
        let r = verify(dir.path(), anchor);
        assert!(r.ok(), "{:?}", r.failures);
        assert_eq!(r.keys.len(), 2);
    }
    match ReceiptLog::open(opts(dir.path()), KeyPair::from_seed(&[5; 32])) {
        Err(OpenError::KeyMismatch { retired: true, .. }) => {}
        other => panic!("{other:?}"),
    }
    match ReceiptLog::open(opts(dir.path()), KeyPair::from_seed(&[7; 32])) {
        Err(OpenError::KeyMismatch { retired: false, .. }) => {}
        other => panic!("{other:?}"),
    }
    let (log, report) = ReceiptLog::open(opts(dir.path()), new).unwrap();
    // The intent left open before the rotation is aborted, signed by the new key.
    assert_eq!(report.aborted, vec![(0, 3)]);
    drop(log);
    assert!(verify(dir.path(), &old).ok());
}

#[test]
fn shutdown_aborts_open_intents_and_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts(dir.path());
    o.checkpoint_copy = Some(dir.path().join("copy.checkpoint"));
    let (log, _) = ReceiptLog::open(o, key()).unwrap();
    let _h = log.append_intent(dispatch("c-1")).unwrap();
    let cp = log.shutdown().unwrap().unwrap();
    assert_eq!(cp.size, 2);
    let copy = fs::read_to_string(dir.path().join("copy.checkpoint")).unwrap();
    assert_eq!(copy, cp.saved_note);
    assert_eq!(
        cp.saved_size, 3,
        "the saved checkpoint covers its own record"
    );
    assert_eq!(
        fs::read_to_string(dir.path().join(store::CHECKPOINT_FILE)).unwrap(),
        cp.saved_note
    );
    let r = verify(dir.path(), &key());
    assert!(r.ok() && r.open_intents.is_empty(), "{:?}", r.failures);
}

#[test]
fn the_checkpoint_thread_checkpoints_by_count() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts(dir.path());
    o.checkpoint_every = 5;
    let (log, _) = ReceiptLog::open(o, key()).unwrap();
    for i in 0..5 {
        let mut d = dispatch(&format!("c-{i}"));
        d.decision.denied = true;
        d.decision.deny_code = Some("DENY_X".into());
        log.append_denied(d).unwrap();
    }
    // The fifth record wakes the checkpoint thread; wait for its checkpoint (seq 5).
    let mut waited = 0;
    while log.status().last_checkpoint != Some(5) {
        assert!(
            waited < 2000,
            "no checkpoint after 20 s: {:?}",
            log.status()
        );
        std::thread::sleep(Duration::from_millis(10));
        waited += 1;
    }
    assert_eq!(
        log.shutdown().unwrap(),
        None,
        "nothing new since the thread's checkpoint"
    );
    let r = verify(dir.path(), &key());
    assert!(r.ok());
    assert_eq!(r.records, 6);
}

#[test]
fn many_threads_share_syncs() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = ReceiptLog::open(opts(dir.path()), key()).unwrap();
    std::thread::scope(|s| {
        for t in 0..8 {
            let log = &log;
            s.spawn(move || {
                for i in 0..10 {
                    let h = log.append_intent(dispatch(&format!("c-{t}-{i}"))).unwrap();
                    log.append_outcome(h, Outcome::Executed(execution()))
                        .unwrap();
                }
            });
        }
    });
    let st = log.status();
    assert_eq!(st.records, 160);
    assert_eq!(st.durable, 160);
    drop(log);
    let r = verify(dir.path(), &key());
    assert!(r.ok(), "{:?}", r.failures);
    assert_eq!(r.passed, 160);
}

fn denied(c: &str) -> Dispatch {
    let mut d = dispatch(c);
    d.decision.denied = true;
    d.decision.deny_code = Some("DENY_X".into());
    d
}

fn wait_ok(log: &ReceiptLog) {
    for _ in 0..500 {
        if log.status().state == LogState::Ok {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("the log did not recover: {:?}", log.status());
}

#[test]
fn a_failed_write_degrades_then_recovers_with_an_intact_chain() {
    use nix::libc::{EMFILE, ENOSPC};
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = ReceiptLog::open(opts(dir.path()), key()).unwrap();
    assert_eq!(log.status().reserve_bytes, 64 * 1024);
    assert!(dir.path().join(RESERVE_FILE).exists());
    let running = log.append_intent(dispatch("c-run")).unwrap();
    // A short write of a new intent: refused, nothing runs, the log is degraded.
    log.inject_fault(FaultPoint::Write, ENOSPC);
    // Recovery must not succeed before the test looks.
    log.inject_fault(FaultPoint::Reserve, ENOSPC);
    let err = log.append_intent(dispatch("c-new")).unwrap_err();
    assert!(matches!(err, LogError::Unavailable { .. }), "{err:?}");
    let st = log.status();
    match &st.state {
        LogState::Degraded { errno, .. } => assert_eq!(errno.as_deref(), Some("ENOSPC")),
        other => panic!("{other:?}"),
    }
    // New intents are refused while degraded; the outcome the log owes is written (the
    // partial line is cut first, the reserve given up if needed).
    assert!(matches!(
        log.append_intent(dispatch("c-new2")),
        Err(LogError::Unavailable { .. })
    ));
    let out = log
        .append_outcome(running, Outcome::Executed(execution()))
        .unwrap();
    assert_eq!(out.seq, 1);
    log.append_denied(denied("c-denied")).unwrap();
    assert!(log.status().refusals >= 2);
    // A failed sync (EMFILE-like): the record it covered is cut and, being owed, written
    // again after the repair, under the same seq.
    log.inject_fault(FaultPoint::Sync, EMFILE);
    let again = log.append_denied(denied("c-owed")).unwrap();
    assert_eq!(again.seq, 3);
    assert_eq!(log.status().records, 4);
    // The space comes back: the checkpoint thread's recovery (here: called directly).
    let mut tries = 0;
    while !log.try_recover() {
        tries += 1;
        assert!(tries < 10, "{:?}", log.status());
    }
    assert_eq!(log.status().state, LogState::Ok);
    assert_eq!(log.status().reserve_bytes, 64 * 1024);
    let h = log.append_intent(dispatch("c-after")).unwrap();
    log.append_outcome(h, Outcome::Executed(execution()))
        .unwrap();
    log.checkpoint_now().unwrap().unwrap();
    let records = log.status().records;
    drop(log);
    let r = verify(dir.path(), &key());
    assert!(r.ok(), "{:?}", r.failures);
    assert_eq!(r.records, records);
    // The partial line and the unacknowledged record are gone; the reopen finds no torn
    // tail and every acknowledged record.
    let (log, report) = ReceiptLog::open(opts(dir.path()), key()).unwrap();
    assert!(report.recovered.is_none(), "{report:?}");
    assert_eq!(report.records, records);
    drop(log);
    // Each record appended again after a failure is the one its caller gave (the body comes
    // back from the failed attempt; it is not rebuilt or copied from elsewhere).
    let data = store::read_segment(&dir.path().join(store::segment_name(0))).unwrap();
    let (lines, _) = store::split_lines(&data);
    let kept: Vec<(Kind, String)> = lines
        .iter()
        .map(|l| {
            let line = model::LogLine::parse(l.bytes).unwrap();
            let p = model::ReceiptPayload::decode(&line.payload_bytes().unwrap()).unwrap();
            (
                p.kind,
                p.dispatch.map(|d| d.correlation_id).unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        kept[..4],
        [
            (Kind::Intent, "c-run".to_owned()),
            (Kind::Executed, "c-run".to_owned()),
            (Kind::Denied, "c-denied".to_owned()),
            (Kind::Denied, "c-owed".to_owned()),
        ]
    );
}

#[test]
fn a_checkpoint_that_cannot_be_saved_is_saved_by_the_recovery() {
    use nix::libc::ENOSPC;
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts(dir.path());
    o.checkpoint_copy = Some(dir.path().join("copy.checkpoint"));
    let (log, _) = ReceiptLog::open(o.clone(), key()).unwrap();
    log.append_denied(denied("c-1")).unwrap();
    // The disk stays full for a while (the recovery keeps failing too).
    for _ in 0..1000 {
        log.inject_fault(FaultPoint::SaveCheckpoint, ENOSPC);
    }
    assert!(matches!(
        log.checkpoint_now(),
        Err(LogError::Unavailable { .. })
    ));
    assert_eq!(log.status().state.name(), "degraded");
    assert!(!dir.path().join(store::CHECKPOINT_FILE).exists());
    assert!(matches!(
        log.append_intent(dispatch("c-refused")),
        Err(LogError::Unavailable { .. })
    ));
    // Space returns: the checkpoint thread recovers by itself.
    log.clear_faults();
    wait_ok(&log);
    let note = fs::read_to_string(dir.path().join(store::CHECKPOINT_FILE)).unwrap();
    assert_eq!(
        note,
        fs::read_to_string(dir.path().join("copy.checkpoint")).unwrap()
    );
    log.append_denied(denied("c-2")).unwrap();
    log.shutdown().unwrap();
    let r = verify(dir.path(), &key());
    assert!(r.ok(), "{:?}", r.failures);
    let (_log, report) = ReceiptLog::open(o, key()).unwrap();
    assert_eq!(report.saved_checkpoints.len(), 2);
}

#[test]
fn a_tail_that_changed_under_the_writer_is_an_integrity_failure() {
    use nix::libc::ENOSPC;
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = ReceiptLog::open(opts(dir.path()), key()).unwrap();
    log.append_denied(denied("c-1")).unwrap();
    log.append_denied(denied("c-2")).unwrap();
    let seg = dir.path().join(store::segment_name(0));
    let n = fs::metadata(&seg).unwrap().len() as usize;
    log.inject_fault(FaultPoint::Write, ENOSPC);
    log.inject_fault(FaultPoint::Reserve, ENOSPC);
    assert!(log.append_intent(dispatch("c-3")).is_err());
    // Someone rewrites the last durable line while the writer is degraded.
    let mut bytes = fs::read(&seg).unwrap();
    assert!(bytes.len() > n, "half a line was written");
    bytes[n - 10] ^= 1;
    fs::write(&seg, &bytes).unwrap();
    assert!(!log.try_recover());
    assert!(matches!(log.status().state, LogState::Failed { .. }));
    assert!(matches!(
        log.append_denied(denied("c-4")),
        Err(LogError::Failed { .. })
    ));
}

/// Writes `path` until the filesystem is full.
fn fill(path: &Path) {
    let mut f = File::create(path).unwrap();
    for chunk in [1 << 20, 4096, 64] {
        let buf = vec![0xa5u8; chunk];
        while f.write_all(&buf).is_ok() {}
    }
    let _ = f.sync_all();
}

#[test]
fn a_real_full_disk_refuses_intents_without_flapping_and_recovers() {
    use std::process::Command;
    let base = tempfile::tempdir().unwrap();
    let dir = base.path().join("receipts");
    fs::create_dir(&dir).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs"])
        .arg(&dir)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("skipped: cannot mount a tmpfs (not root?)");
        return;
    }
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(self.0)
                .status();
        }
    }
    let _unmount = Unmount(&dir);
    let mut o = opts(&dir);
    o.reserve_bytes = 128 * 1024;
    let (log, _) = ReceiptLog::open(o.clone(), key()).unwrap();
    let running = log.append_intent(dispatch("c-running")).unwrap();
    fill(&dir.join("fill"));
    // Intents until one hits ENOSPC (the segment's last page may hold a few lines); they
    // stay open and are aborted at shutdown.
    let mut open = Vec::new();
    let err = loop {
        match log.append_intent(dispatch(&format!("c-{}", open.len()))) {
            Ok(h) => open.push(h),
            Err(e) => break e,
        }
        assert!(open.len() < 100, "the disk never filled");
    };
    assert!(matches!(err, LogError::Unavailable { .. }), "{err:?}");
    // The reserve is still held (an intent is not owed), but the recovery's probe finds no
    // space: the log stays degraded instead of flapping back to ok.
    std::thread::sleep(Duration::from_millis(300));
    let st = log.status();
    assert!(matches!(st.state, LogState::Degraded { .. }), "{st:?}");
    assert_eq!(st.reserve_bytes, 128 * 1024);
    assert!(!log.try_recover());
    // The outcome the log owes uses the reserve.
    log.append_outcome(running, Outcome::Executed(execution()))
        .unwrap();
    assert_eq!(log.status().reserve_bytes, 0);
    assert!(log.append_intent(dispatch("c-refused")).is_err());
    // Space returns: the checkpoint thread recovers by itself, the reserve is back.
    fs::remove_file(dir.join("fill")).unwrap();
    wait_ok(&log);
    assert_eq!(log.status().reserve_bytes, 128 * 1024);
    let h = log.append_intent(dispatch("c-after")).unwrap();
    log.append_outcome(h, Outcome::Executed(execution()))
        .unwrap();
    drop(open);
    log.shutdown().unwrap();
    let r = verify(&dir, &key());
    assert!(r.ok(), "{:?}", r.failures);
    assert!(r.open_intents.is_empty());
    let (_log, report) = ReceiptLog::open(o, key()).unwrap();
    assert!(report.recovered.is_none());
}
