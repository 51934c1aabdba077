//! Evidence receipts end to end on real files: every tamper case is detected and located, the
//! Hall refuses to start on a truncated, rolled-back or corrupted log, proofs verify offline.

use std::fs;

use crate::receipts_common::*;
use wcp_hall::crypto::KeyPair;
use wcp_hall::receipt::checkpoint::Checkpoint;
use wcp_hall::receipt::merkle::{Frontier, leaf_hash};
use wcp_hall::receipt::model::{LogLine, ReceiptPayload, hash_string, seal};
use wcp_hall::receipt::verify::{self, ProveError, Selector};
use wcp_hall::receipt::{Kind, OpenError, ReceiptLog, store};

/// 12 dispatches → 24 records; checkpoint records at seq 7, 15 and 23.
fn genuine() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    build_log(dir.path(), key(1), 12, 4);
    dir
}

fn copy_of(dir: &tempfile::TempDir) -> tempfile::TempDir {
    let c = tempfile::tempdir().unwrap();
    copy_dir(dir.path(), c.path());
    c
}

#[test]
fn a_genuine_log_verifies_completely() {
    let dir = genuine();
    let r = verify(dir.path(), &[key(1).public()], &[]);
    assert!(r.ok(), "{:?}", r.failures);
    assert_eq!((r.records, r.passed, r.failed), (24, 24, 0));
    assert_eq!(r.signatures_checked, 24);
    // Three checkpoint records plus the saved checkpoint file.
    assert_eq!(r.checkpoints.len(), 4, "{:?}", r.checkpoints);
    assert!(r.checkpoints.iter().all(|c| c.ok));
    assert!(r.open_intents.is_empty());
    let lines = lines(dir.path());
    assert_eq!(lines.len(), 24);
    // The stored line is exactly what the model writes: canonical JSON, hash beside it.
    let first = LogLine::parse(&lines[0]).unwrap();
    assert_eq!(first.encode().unwrap(), [&lines[0][..], b"\n"].concat());
}

#[test]
fn flipping_any_byte_of_a_record_is_detected_at_its_seq() {
    let genuine = genuine();
    let line5 = lines(genuine.path())[5].clone();
    let text = String::from_utf8(line5.clone()).unwrap();
    let payload_at = text.find("\"payload\":\"").unwrap() + 40;
    let sig_at = text.find("\"sig\":\"").unwrap() + 20;
    let hash_at = text.find("\"receipt_hash\":\"sha256:").unwrap() + 30;
    let seq_at = text.rfind("\"seq\":").unwrap() + 6;
    for (what, at) in [
        ("json framing", 0),
        ("payload", payload_at),
        ("signature", sig_at),
        ("receipt_hash", hash_at),
        ("seq", seq_at),
    ] {
        let dir = copy_of(&genuine);
        let mut all = lines(dir.path());
        all[5][at] ^= 0x01;
        write_lines(dir.path(), &all);
        let r = verify(dir.path(), &[key(1).public()], &[]);
        assert_eq!(first_bad(&r), 5, "{what}: {:?}", r.failures);
        let f = r.first_failure.clone().unwrap();
        assert_eq!(
            (f.line, f.offset),
            (6, offsets(&all)[5]),
            "{what}: located by line"
        );
        assert!(r.failed >= 1, "{what}");
        eprintln!("{what}: {f}");
    }
}

fn offsets(lines: &[Vec<u8>]) -> Vec<u64> {
    let mut at = 0u64;
    lines
        .iter()
        .map(|l| {
            let o = at;
            at += l.len() as u64 + 1;
            o
        })
        .collect()
}

#[test]
fn a_deleted_line_is_detected_as_a_missing_seq() {
    let dir = genuine();
    let mut all = lines(dir.path());
    all.remove(5);
    write_lines(dir.path(), &all);
    let r = verify(dir.path(), &[key(1).public()], &[]);
    assert_eq!(first_bad(&r), 5);
    let reason = &r.first_failure.as_ref().unwrap().reason;
    assert!(reason.contains("seq 5 missing"), "{reason}");
}

#[test]
fn swapped_lines_are_detected_at_the_first_displaced_seq() {
    let dir = genuine();
    let mut all = lines(dir.path());
    all.swap(5, 6);
    write_lines(dir.path(), &all);
    let r = verify(dir.path(), &[key(1).public()], &[]);
    assert_eq!(first_bad(&r), 5);
    assert!(
        r.failures.iter().any(|f| f.reason.contains("out of order")),
        "{:?}",
        r.failures
    );
}

#[test]
fn truncation_is_detected_by_any_checkpoint_of_a_larger_tree() {
    let genuine = genuine();
    let saved = fs::read_to_string(genuine.path().join(store::CHECKPOINT_FILE)).unwrap();

    // Cut at a line boundary: the log directory's own saved checkpoint catches it.
    let dir = copy_of(&genuine);
    let all = lines(dir.path());
    write_lines(dir.path(), &all[..10]);
    let r = verify(dir.path(), &[key(1).public()], &[]);
    assert_eq!(first_bad(&r), 10);
    assert!(
        r.first_failure
            .as_ref()
            .unwrap()
            .reason
            .contains("truncated"),
        "{:?}",
        r.failures
    );

    // The attacker also deletes that checkpoint: a prefix of a valid log is a valid log, so
    // only a checkpoint kept elsewhere can tell (this is why there is a second location).
    fs::remove_file(dir.path().join(store::CHECKPOINT_FILE)).unwrap();
    assert!(verify(dir.path(), &[key(1).public()], &[]).ok());
    let r = verify(dir.path(), &[key(1).public()], &[("copy", saved)]);
    assert_eq!(first_bad(&r), 10);
    assert_eq!(r.first_failure.as_ref().unwrap().segment, "copy");

    // Cut inside a line: the torn tail is reported at the seq it would have had.
    let dir = copy_of(&genuine);
    let data = fs::read(segment0(dir.path())).unwrap();
    let cut = offsets(&lines(dir.path()))[10] as usize + 100;
    fs::write(segment0(dir.path()), &data[..cut]).unwrap();
    let r = verify(dir.path(), &[key(1).public()], &[]);
    assert_eq!(first_bad(&r), 10);
    assert!(
        r.failures
            .iter()
            .any(|f| f.reason.contains("torn final line"))
    );
}

/// Re-signs every record with `attacker`, keeping the chain, tree and checkpoints
/// consistent: a perfect forgery except for the key.
fn resign(dir: &std::path::Path, attacker: &KeyPair) {
    let mut prev = None;
    let mut frontier = Frontier::new();
    let mut out = Vec::new();
    let mut last_note = None;
    for (i, l) in lines(dir).iter().enumerate() {
        let line = LogLine::parse(l).unwrap();
        let mut p = ReceiptPayload::decode(&line.payload_bytes().unwrap()).unwrap();
        p.signing_key_id = attacker.id().0.clone();
        p.signing_public_key = attacker.public().to_base64();
        p.prev_receipt_hash = prev.as_ref().map(hash_string);
        if let Some(cp) = &mut p.checkpoint {
            let root = frontier.root();
            cp.root = wcp_hall::router::hex(&root);
            cp.note = Checkpoint::new(ORIGIN, i as u64, root)
                .sign(attacker)
                .unwrap();
            last_note = Some(cp.note.clone());
        }
        let sealed = seal(p, &[attacker]).unwrap();
        prev = Some(sealed.hash);
        frontier.push(leaf_hash(&sealed.payload_bytes));
        out.push(sealed.line[..sealed.line.len() - 1].to_vec());
    }
    write_lines(dir, &out);
    fs::write(dir.join(store::CHECKPOINT_FILE), last_note.unwrap()).unwrap();
}

#[test]
fn a_log_re_signed_with_another_key_is_refused_from_seq_0() {
    let dir = genuine();
    let attacker = key(66);
    resign(dir.path(), &attacker);
    // Internally consistent (the attacker's own key verifies it)...
    let r = verify(dir.path(), &[attacker.public()], &[]);
    assert!(r.ok(), "{:?}", r.failures);
    // ...but not under the Hall's key.
    let r = verify(dir.path(), &[key(1).public()], &[]);
    assert_eq!(first_bad(&r), 0);
    assert_eq!(r.passed, 0);
    assert_eq!(r.failed, 24);
    assert!(
        r.first_failure
            .as_ref()
            .unwrap()
            .reason
            .contains("not a trusted key"),
        "{:?}",
        r.failures
    );
    assert!(!r.keys[0].trusted);
}

#[test]
fn a_forged_rotation_does_not_hand_over_the_log() {
    let dir = genuine();
    let (genuine_key, attacker) = (key(1), key(66));
    let all = lines(dir.path());
    let last = LogLine::parse(all.last().unwrap()).unwrap();
    let last_p = ReceiptPayload::decode(&last.payload_bytes().unwrap()).unwrap();
    // A rotation from the Hall's key to the attacker's, signed only by the attacker (the
    // attacker does not have the Hall's key), then a receipt signed by the attacker.
    let mut rotation = last_p.clone();
    rotation.seq = 24;
    rotation.receipt_id = uuid::Uuid::now_v7().to_string();
    rotation.prev_receipt_hash = Some(last.receipt_hash.clone());
    rotation.kind = Kind::KeyRotation;
    rotation.checkpoint = None;
    rotation.rotation = Some(wcp_hall::receipt::model::Rotation::new(
        &genuine_key.public(),
        &attacker.public(),
    ));
    let forged = seal(rotation, &[&attacker]).unwrap();
    let mut next = ReceiptPayload::decode(&forged.payload_bytes).unwrap();
    next.seq = 25;
    next.receipt_id = uuid::Uuid::now_v7().to_string();
    next.prev_receipt_hash = Some(hash_string(&forged.hash));
    next.kind = Kind::Denied;
    next.rotation = None;
    next.dispatch = Some(denied("c-forged"));
    next.signing_key_id = attacker.id().0.clone();
    next.signing_public_key = attacker.public().to_base64();
    let after = seal(next, &[&attacker]).unwrap();
    let mut all = all;
    all.push(forged.line[..forged.line.len() - 1].to_vec());
    all.push(after.line[..after.line.len() - 1].to_vec());
    write_lines(dir.path(), &all);
    let r = verify(dir.path(), &[genuine_key.public()], &[]);
    assert_eq!(first_bad(&r), 24);
    let reason = &r.first_failure.as_ref().unwrap().reason;
    assert!(reason.contains("not signed by both"), "{reason}");
    assert!(
        r.failures.iter().any(|f| f.seq == Some(25)),
        "{:?}",
        r.failures
    );
    assert_eq!(r.passed, 24);
}

#[test]
fn forged_checkpoints_are_refused_and_named() {
    let genuine = genuine();
    let saved = fs::read_to_string(genuine.path().join(store::CHECKPOINT_FILE)).unwrap();
    let real = Checkpoint::parse_text(
        saved
            .split("\n\n")
            .next()
            .map(|t| format!("{t}\n"))
            .as_deref()
            .unwrap(),
    )
    .unwrap();

    // Signed by a key that is not the log's.
    let dir = copy_of(&genuine);
    let forged = Checkpoint::new(ORIGIN, real.size, [9; 32])
        .sign(&key(66))
        .unwrap();
    fs::write(dir.path().join(store::CHECKPOINT_FILE), &forged).unwrap();
    let r = verify(dir.path(), &[key(1).public()], &[]);
    assert!(!r.ok());
    let f = r.first_failure.clone().unwrap();
    assert!(f.segment.ends_with(store::CHECKPOINT_FILE), "{f}");
    assert!(f.reason.contains("forged"), "{f}");

    // A genuine signature over another tree (a forked or rewritten log): inconsistent.
    let fork = tempfile::tempdir().unwrap();
    build_log(fork.path(), key(1), 12, 4);
    let fork_note = fs::read_to_string(fork.path().join(store::CHECKPOINT_FILE)).unwrap();
    let r = verify(genuine.path(), &[key(1).public()], &[("fork", fork_note)]);
    assert!(!r.ok());
    let f = r.first_failure.clone().unwrap();
    assert_eq!(f.segment, "fork");
    assert!(f.reason.contains("inconsistent"), "{f}");

    // A checkpoint from another log (different origin) is refused as such.
    let other = Checkpoint::new("hall.other/receipts", 3, [1; 32])
        .sign(&key(1))
        .unwrap();
    let r = verify(genuine.path(), &[key(1).public()], &[("other", other)]);
    assert!(
        r.first_failure
            .unwrap()
            .reason
            .contains("hall.other/receipts")
    );
}

// ---- the Hall refuses to start ----------------------------------------------------------------

fn open_err(dir: &std::path::Path, opts: wcp_hall::receipt::LogOptions) -> OpenError {
    let before = fs::read(segment0(dir)).unwrap();
    let err = ReceiptLog::open(opts, key(1)).expect_err("open must refuse");
    // Nothing was written: committed bytes are never touched by a refused start.
    assert_eq!(fs::read(segment0(dir)).unwrap(), before);
    err
}

#[test]
fn the_hall_refuses_a_log_shorter_than_its_saved_checkpoint() {
    let dir = genuine();
    let all = lines(dir.path());
    write_lines(dir.path(), &all[..10]);
    match open_err(dir.path(), options(dir.path())) {
        OpenError::Sev1 { reason } => assert!(reason.contains("truncated"), "{reason}"),
        other => panic!("{other}"),
    }
}

#[test]
fn the_second_checkpoint_location_catches_what_the_first_lost() {
    let dir = tempfile::tempdir().unwrap();
    let copy = tempfile::tempdir().unwrap();
    let mut opts = options(dir.path());
    opts.checkpoint_copy = Some(copy.path().join("receipts.checkpoint"));
    let (log, _) = ReceiptLog::open(opts.clone(), key(1)).unwrap();
    for i in 0..6 {
        let h = log.append_intent(dispatch(&format!("c-{i}"))).unwrap();
        log.append_outcome(h, wcp_hall::receipt::Outcome::Executed(execution(i)))
            .unwrap();
    }
    log.shutdown().unwrap();
    // Roll back: the attacker truncates the log and deletes the checkpoint beside it.
    let all = lines(dir.path());
    write_lines(dir.path(), &all[..4]);
    fs::remove_file(dir.path().join(store::CHECKPOINT_FILE)).unwrap();
    match open_err(dir.path(), opts) {
        OpenError::Sev1 { reason } => {
            assert!(reason.contains("receipts.checkpoint"), "{reason}");
            assert!(reason.contains("seq 4..=12 are missing"), "{reason}");
        }
        other => panic!("{other}"),
    }
}

#[test]
fn the_hall_refuses_a_log_inconsistent_with_its_saved_checkpoint() {
    let dir = genuine();
    let fork = tempfile::tempdir().unwrap();
    build_log(fork.path(), key(1), 12, 4);
    // The log is replaced by another one of the same length and key (a restore from a fork).
    fs::copy(segment0(fork.path()), segment0(dir.path())).unwrap();
    // Its in-log checkpoints are its own and consistent; only the saved one disagrees.
    match open_err(dir.path(), options(dir.path())) {
        OpenError::Sev1 { reason } => assert!(reason.contains("inconsistent"), "{reason}"),
        other => panic!("{other}"),
    }
}

#[test]
fn the_hall_refuses_corruption_before_the_tail() {
    // Without a resume snapshot the open reads everything. (With one, records before it are
    // checked by the background verification instead: tests/it/receipts_resume.rs.)
    let dir = genuine();
    fs::remove_file(dir.path().join(store::RESUME_FILE)).unwrap();
    let mut all = lines(dir.path());
    let at = all[3].len() / 2;
    all[3][at] ^= 0x01;
    write_lines(dir.path(), &all);
    match open_err(dir.path(), options(dir.path())) {
        OpenError::Sev1 { reason } => assert!(reason.contains("seq 3"), "{reason}"),
        other => panic!("{other}"),
    }
}

#[test]
fn the_hall_refuses_a_forged_saved_checkpoint() {
    let dir = genuine();
    let forged = Checkpoint::new(ORIGIN, 24, [9; 32]).sign(&key(66)).unwrap();
    fs::write(dir.path().join(store::CHECKPOINT_FILE), forged).unwrap();
    match open_err(dir.path(), options(dir.path())) {
        OpenError::Sev1 { reason } => assert!(reason.contains("forged"), "{reason}"),
        other => panic!("{other}"),
    }
}

#[test]
fn signatures_after_the_saved_checkpoint_are_checked_at_start() {
    // Records after the newest saved checkpoint are not covered by its root: a re-signed
    // tail must still be caught at start.
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = ReceiptLog::open(options(dir.path()), key(1)).unwrap();
    log.append_denied(denied("c-0")).unwrap();
    log.checkpoint_now().unwrap();
    log.append_denied(denied("c-1")).unwrap();
    drop(log); // a crash: no shutdown checkpoint
    let mut all = lines(dir.path());
    let line = LogLine::parse(&all[2]).unwrap();
    let mut p = ReceiptPayload::decode(&line.payload_bytes().unwrap()).unwrap();
    p.dispatch.as_mut().unwrap().tenant_id = "someone-else".into();
    let forged = seal(p, &[&key(66)]).unwrap();
    all[2] = forged.line[..forged.line.len() - 1].to_vec();
    write_lines(dir.path(), &all);
    match open_err(dir.path(), options(dir.path())) {
        OpenError::Sev1 { reason } => assert!(reason.contains("seq 2"), "{reason}"),
        other => panic!("{other}"),
    }
}

// ---- proofs -------------------------------------------------------------------------------------

#[test]
fn inclusion_proofs_verify_offline_and_tampering_fails() {
    let dir = genuine();
    for seq in [0, 5, 22] {
        let bundle = verify::prove(dir.path(), seq).unwrap();
        let report = verify::verify_proof(&bundle, &[key(1).public()]).unwrap();
        assert_eq!(report.seq, seq);
        assert_eq!(report.checkpoint_size, 23);
        assert!(
            bundle
                .tlog_proof
                .starts_with("c2sp.org/tlog-proof@v1\nindex ")
        );
    }
    let bundle = verify::prove(dir.path(), 5).unwrap();
    assert_eq!(
        verify::verify_proof(&bundle, &[key(1).public()])
            .unwrap()
            .correlation_id
            .as_deref(),
        Some("c-2")
    );
    let refuse = |b: &verify::ProofBundle, what: &str| {
        let e = verify::verify_proof(b, &[key(1).public()]).expect_err(what);
        eprintln!("{what}: {e}");
    };
    // Wrong trust anchor.
    assert!(verify::verify_proof(&bundle, &[key(2).public()]).is_err());
    // Another record's envelope under this proof.
    let mut b = bundle.clone();
    b.envelope = verify::prove(dir.path(), 4).unwrap().envelope;
    refuse(&b, "other envelope");
    // A changed proof hash.
    let mut b = bundle.clone();
    let lines: Vec<&str> = bundle.tlog_proof.split('\n').collect();
    let mut changed: Vec<String> = lines.iter().map(|s| s.to_string()).collect();
    changed[2] = changed[3].clone();
    b.tlog_proof = changed.join("\n");
    refuse(&b, "proof hash");
    // A different index.
    let mut b = bundle.clone();
    b.tlog_proof = bundle.tlog_proof.replacen("index 5", "index 4", 1);
    refuse(&b, "index");
    // A checkpoint with a changed size.
    let mut b = bundle.clone();
    b.tlog_proof = bundle.tlog_proof.replacen("\n23\n", "\n24\n", 1);
    refuse(&b, "checkpoint size");
    // Not covered yet: a record after the last checkpoint.
    let d2 = tempfile::tempdir().unwrap();
    let (log, _) = ReceiptLog::open(options(d2.path()), key(1)).unwrap();
    log.append_denied(denied("c")).unwrap();
    drop(log);
    assert!(matches!(
        verify::prove(d2.path(), 0),
        Err(ProveError::NotCovered { seq: 0, covered: 0 })
    ));
    assert!(matches!(
        verify::prove(dir.path(), 99),
        Err(ProveError::NoSuchRecord { .. })
    ));
}

#[test]
fn proofs_follow_key_rotations() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = ReceiptLog::open(options(dir.path()), key(1)).unwrap();
    log.append_denied(denied("c-0")).unwrap();
    log.rotate_key(key(2)).unwrap();
    log.append_denied(denied("c-2")).unwrap();
    log.shutdown().unwrap();
    // seq 0 is signed by the old key, the checkpoint (seq 3) by the new one.
    let bundle = verify::prove(dir.path(), 0).unwrap();
    assert_eq!(bundle.key_history.len(), 1);
    for anchor in [key(1), key(2)] {
        verify::verify_proof(&bundle, &[anchor.public()]).unwrap();
    }
    // Without the rotation record the checkpoint's key is unknown.
    let mut b = bundle.clone();
    b.key_history.clear();
    assert!(verify::verify_proof(&b, &[key(1).public()]).is_err());
    assert!(verify::verify_proof(&b, &[key(2).public()]).is_err());
    // The whole log verifies with either key as the anchor.
    for anchor in [key(1), key(2)] {
        let r = verify(dir.path(), &[anchor.public()], &[]);
        assert!(r.ok(), "{:?}", r.failures);
        assert_eq!(r.keys.len(), 2);
    }
    let found = verify::find_record(dir.path(), &Selector::Seq(1))
        .unwrap()
        .unwrap();
    assert_eq!(
        found.line.envelope.signatures.len(),
        2,
        "rotation signed by both keys"
    );
}

// ---- key rotation (the procedure behind `wcp-hall keys rotate`) -------------------------------

#[test]
fn rotation_replaces_the_key_file_and_an_interrupted_one_is_finished() {
    use wcp_hall::crypto::keys::public_path_for;
    use wcp_hall::receipt::rotate::{OldKey, next_path_for, rotate};
    let base = tempfile::tempdir().unwrap();
    let log = base.path().join("receipts");
    build_log(&log, key(1), 4, 0);
    let key_path = base.path().join("receipts.key");
    key(1).write(&key_path).unwrap();

    let r = rotate(options(&log), &key_path, None).unwrap();
    assert_eq!(r.old_key, OldKey::Destroyed);
    assert!(!r.finished_interrupted);
    let second = KeyPair::read(&key_path).unwrap();
    assert_eq!(&r.new_key_id, second.id());
    assert_ne!(second.id(), key(1).id());
    assert!(!next_path_for(&key_path).exists());
    assert_eq!(
        wcp_hall::crypto::PublicKey::read(&public_path_for(&key_path))
            .unwrap()
            .id(),
        second.id()
    );
    // The rotation receipt is signed by both keys; the old key still anchors the chain.
    let seq = r.rotation_seq.unwrap();
    let found = verify::find_record(&log, &Selector::Seq(seq))
        .unwrap()
        .unwrap();
    assert_eq!(found.payload.unwrap().kind, Kind::KeyRotation);
    assert!(verify(&log, &[key(1).public()], &[]).ok());
    assert!(r.verifier_key.starts_with("hall.test/receipts+"));

    // Interrupt the next rotation after the log changed keys but before the key file was
    // replaced: the Hall refuses the old key, and running rotate again finishes the job.
    let third = KeyPair::generate().unwrap();
    third.write(&next_path_for(&key_path)).unwrap();
    let (l, _) = ReceiptLog::open(options(&log), KeyPair::read(&key_path).unwrap()).unwrap();
    l.rotate_key(KeyPair::read(&next_path_for(&key_path)).unwrap())
        .unwrap();
    drop(l);
    assert!(matches!(
        ReceiptLog::open(options(&log), KeyPair::read(&key_path).unwrap()),
        Err(OpenError::KeyMismatch { retired: true, .. })
    ));
    let kept = base.path().join("second.key");
    let r = rotate(options(&log), &key_path, Some(&kept)).unwrap();
    assert!(r.finished_interrupted);
    assert_eq!(r.rotation_seq, None);
    assert_eq!(KeyPair::read(&key_path).unwrap().id(), third.id());
    assert_eq!(KeyPair::read(&kept).unwrap().id(), second.id());
    let (l, _) = ReceiptLog::open(options(&log), KeyPair::read(&key_path).unwrap()).unwrap();
    l.shutdown().unwrap();
    let r = verify(&log, &[third.public()], &[]);
    assert!(r.ok(), "{:?}", r.failures);
    assert_eq!(r.keys.len(), 3);
}

#[test]
fn one_garbled_line_does_not_derail_the_rest_of_the_scan() {
    let dir = genuine();
    let mut all = lines(dir.path());
    // The line's own seq says 999999 and its payload is gone.
    all[5] = br#"{"envelope":{"payload":"!!","payloadType":"x","signatures":[]},"receipt_hash":"sha256:00","seq":999999}"#.to_vec();
    write_lines(dir.path(), &all);
    let r = verify(dir.path(), &[key(1).public()], &[]);
    assert_eq!(first_bad(&r), 5);
    // Seq 5, and the checkpoints whose trees include it, fail; seq 6.. are still in order.
    let bad: Vec<u64> = r.failures.iter().filter_map(|f| f.seq).collect();
    assert_eq!(bad, [5, 7, 15, 23], "{:?}", r.failures);
}

#[test]
fn the_hall_refuses_a_deleted_log_while_a_checkpoint_remains() {
    let dir = genuine();
    for seg in store::list_segments(dir.path()).unwrap() {
        fs::remove_file(seg.path).unwrap();
    }
    match ReceiptLog::open(options(dir.path()), key(1)) {
        Err(OpenError::Sev1 { reason }) => assert!(reason.contains("holds none"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert!(
        store::list_segments(dir.path()).unwrap().is_empty(),
        "nothing was created"
    );
}

#[test]
fn a_missing_checkpoint_copy_directory_is_a_configuration_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = options(dir.path());
    o.checkpoint_copy = Some(dir.path().join("no/such/dir/copy"));
    assert!(matches!(
        ReceiptLog::open(o, key(1)),
        Err(OpenError::Options(m)) if m.contains("does not exist")
    ));
}

// ---- real routing decisions become valid receipts ----------------------------------------------

#[test]
fn real_route_decisions_become_receipts() {
    use wcp_hall::receipt::{Caller, Dispatch};
    use wcp_hall::snapshot::Loaded;
    use wcp_hall::wcp::RouteInput;

    // The default configuration: the pipeline's rules, the bundled records, the Cedar gate.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let hall = Loaded::load(&root.join("policies/hall.toml"), 1).unwrap();
    let text = fs::read_to_string(root.join("policies/examples/fetch.json")).unwrap();
    let allowed = hall.route_offline(&RouteInput::from_json_str(&text).unwrap(), "t");
    let unknown = text.replace("cap.web.fetch", "cap.web.unknown");
    let denied = hall.route_offline(&RouteInput::from_json_str(&unknown).unwrap(), "t");
    assert!(!allowed.denied, "{:?}", allowed.deny_reason_if_denied);
    assert!(denied.denied);

    let dir = tempfile::tempdir().unwrap();
    let (log, _) = ReceiptLog::open(options(dir.path()), key(1)).unwrap();
    let caller = Caller {
        uid: 1000,
        gid: 1000,
        pid: std::process::id(),
    };
    let now = wcp_hall::receipt::model::rfc3339_millis(std::time::SystemTime::now());
    let d = Dispatch::from_decision(
        &allowed,
        Some("org.wcp-hall.web-fetcher.1".into()),
        caller,
        allowed.timestamp.clone(),
    );
    assert_eq!(d.policy_decision, "ALLOW");
    assert_eq!(d.artifact_hash, allowed.artifact_hash);
    let h = log.append_intent(d).unwrap();
    let out = log
        .append_outcome(h, wcp_hall::receipt::Outcome::Executed(execution(1)))
        .unwrap();
    let d = Dispatch::from_decision(&denied, None, caller, now);
    assert_eq!(
        d.decision.deny_code.as_deref(),
        Some("DENY_NO_MATCHING_RULE")
    );
    let den = log.append_denied(d).unwrap();
    log.shutdown().unwrap();
    assert_eq!((out.seq, den.seq), (1, 2));
    let r = verify(dir.path(), &[key(1).public()], &[]);
    assert!(r.ok(), "{:?}", r.failures);
    let found = verify::find_record(dir.path(), &Selector::Seq(1))
        .unwrap()
        .unwrap();
    let p = found.payload.unwrap();
    let d = p.dispatch.unwrap();
    assert_eq!(d.correlation_id, "6f1c2a7e-3b1d-4c8e-9f2a-1d2e3f4a5b6c");
    assert_eq!(d.capability_id, "cap.web.fetch");
    assert_eq!(d.controls_verified, allowed.required_controls_effective);
}

// ---- consistency between two checkpoints --------------------------------------------------------

fn checkpoint_note_at(dir: &std::path::Path, seq: u64) -> String {
    let found = verify::find_record(dir, &Selector::Seq(seq))
        .unwrap()
        .unwrap();
    found.payload.unwrap().checkpoint.unwrap().note
}

#[test]
fn consistency_proofs_show_an_old_checkpoint_is_a_prefix_of_the_new_one() {
    let dir = genuine();
    let anchors = [key(1).public()];
    for old_seq in [7, 15, 23] {
        let old = checkpoint_note_at(dir.path(), old_seq);
        let proof = verify::prove_consistency(dir.path(), &old).unwrap();
        assert_eq!(proof.old_size, old_seq);
        // The text form (a C2SP tlog-witness body) round-trips.
        let parsed = verify::ConsistencyProof::parse(&proof.to_text()).unwrap();
        assert_eq!(parsed, proof);
        let r = verify::verify_consistency_proof(&old, &parsed, &anchors).unwrap();
        assert_eq!((r.old_size, r.new_size), (old_seq, 23));
    }
    let old = checkpoint_note_at(dir.path(), 7);
    let proof = verify::prove_consistency(dir.path(), &old).unwrap();
    // A changed hash, the wrong key, another log's old checkpoint: refused.
    let mut bad = proof.clone();
    bad.hashes[0][0] ^= 1;
    assert!(verify::verify_consistency_proof(&old, &bad, &anchors).is_err());
    assert!(verify::verify_consistency_proof(&old, &proof, &[key(2).public()]).is_err());
    let fork = tempfile::tempdir().unwrap();
    build_log(fork.path(), key(1), 12, 4);
    let forked_old = checkpoint_note_at(fork.path(), 7);
    let e = verify::verify_consistency_proof(&forked_old, &proof, &anchors).unwrap_err();
    assert!(e.0.contains("does not extend"), "{e}");
    // The prover refuses an old checkpoint the log does not contain.
    assert!(matches!(
        verify::prove_consistency(dir.path(), &forked_old),
        Err(ProveError::Inconsistent { size: 7, .. })
    ));
}

#[test]
fn consistency_across_a_key_rotation_needs_both_keys() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = ReceiptLog::open(options(dir.path()), key(1)).unwrap();
    log.append_denied(denied("c-0")).unwrap();
    let old = log.checkpoint_now().unwrap().unwrap().note;
    log.rotate_key(key(2)).unwrap();
    log.append_denied(denied("c-3")).unwrap();
    log.shutdown().unwrap();
    let proof = verify::prove_consistency(dir.path(), &old).unwrap();
    assert!(
        verify::verify_consistency_proof(&old, &proof, &[key(1).public(), key(2).public()]).is_ok()
    );
    assert!(verify::verify_consistency_proof(&old, &proof, &[key(2).public()]).is_err());
}

// ---- hostile bytes never panic ------------------------------------------------------------------

#[test]
fn mutated_logs_and_proofs_never_panic() {
    let genuine = genuine();
    let original = fs::read(segment0(genuine.path())).unwrap();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for round in 0..24 {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(genuine.path(), dir.path());
        let mut data = original.clone();
        for _ in 0..(1 + round % 5) {
            let at = (next() as usize) % data.len();
            match next() % 4 {
                0 => data[at] = (next() & 0xff) as u8,
                1 => data[at] ^= 0x80,
                2 => {
                    data.insert(at, b'\n');
                }
                _ => {
                    data.truncate(at.max(1));
                }
            }
        }
        fs::write(segment0(dir.path()), &data).unwrap();
        let r = verify(dir.path(), &[key(1).public()], &[]);
        assert!(
            !r.ok() || data == original,
            "round {round}: a mutation went unnoticed"
        );
        // Opening either refuses (sev1) or, for a cut inside the last line only, recovers.
        let _ = ReceiptLog::open(options(dir.path()), key(1));
    }
    let junk: [&[u8]; 6] = [
        b"",
        b"\xff\xfe",
        b"{\"envelope\":{}}",
        b"old 1\n\n",
        "c2sp.org/tlog-proof@v1\nindex 99999999999999999999\n\nx".as_bytes(),
        b"{\"a\":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]}",
    ];
    for j in junk {
        let text = String::from_utf8_lossy(j);
        let _ = LogLine::parse(j);
        let _ = ReceiptPayload::decode(j);
        let _ = verify::parse_tlog_proof(&text);
        let _ = verify::ConsistencyProof::parse(&text);
        let _ = wcp_hall::receipt::checkpoint::SignedNote::parse(&text);
        let _ = Checkpoint::parse_text(&text);
    }
}
