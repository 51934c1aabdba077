//! Crash safety with real processes: a child appends a stream of receipts from several threads
//! and prints every acknowledged (durable) seq; it is killed with SIGKILL mid-stream; the log is
//! reopened (recovery) and every acknowledged receipt must be there and everything must verify.
//! And fail-closed: a child whose writes start failing (RLIMIT_FSIZE: a real short write) must
//! refuse every later append, and the torn line it left is cut and recorded at the next start.
//!
//! The child is this test binary re-executed with `WCP_RECEIPTS_CHILD` set, running only
//! [`child_process_entry`]. (The daemon-level crash test — kill -9 the Hall while clients wait
//! for answers — belongs with the daemon.)

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::receipts_common::*;
use wcp_hall::receipt::model::{LogLine, ReceiptPayload};
use wcp_hall::receipt::{
    BackgroundCheck, Kind, LogError, LogOptions, LogState, Outcome, ReceiptLog, store,
};

const CHILD: &str = "WCP_RECEIPTS_CHILD";
const DIR: &str = "WCP_RECEIPTS_DIR";
const ROUND: &str = "WCP_RECEIPTS_ROUND";

fn child_options(dir: &Path) -> LogOptions {
    let mut o = options(dir);
    o.checkpoint_every = 16;
    o.checkpoint_interval = Some(std::time::Duration::from_millis(50));
    o.checkpoint_copy = Some(copy_path(dir));
    o.segment_max_bytes = 64 * 1024;
    o
}

fn copy_path(dir: &Path) -> PathBuf {
    dir.with_extension("checkpoint-copy")
}

/// Not a test of its own: the entry point of the child processes (a no-op otherwise).
#[test]
fn child_process_entry() {
    let Ok(mode) = std::env::var(CHILD) else {
        return;
    };
    let dir = PathBuf::from(std::env::var(DIR).expect("dir"));
    // The harness has printed "test …::child_process_entry ... " without a newline: end it, so
    // every line the parent parses is one of ours.
    println!();
    match mode.as_str() {
        "stream" => stream_child(&dir),
        "fsize" => fsize_child(&dir),
        other => panic!("unknown child mode {other}"),
    }
}

/// Four threads dispatch forever; each durable step is printed after the call returned.
fn stream_child(dir: &Path) {
    let round = std::env::var(ROUND).expect("round");
    let (log, _) = ReceiptLog::open(child_options(dir), key(1)).expect("child open");
    std::thread::scope(|s| {
        for t in 0..4 {
            let (log, round) = (&log, &round);
            s.spawn(move || {
                for i in 0u64.. {
                    let cid = format!("r{round}-t{t}-{i}");
                    if i % 5 == 4 {
                        let a = log.append_denied(denied(&cid)).expect("denied");
                        println!("ack {} - {cid}", a.seq);
                        continue;
                    }
                    let h = log.append_intent(dispatch(&cid)).expect("intent");
                    println!("intent {} {cid}", h.seq());
                    let intent_seq = h.seq();
                    let a = log
                        .append_outcome(h, Outcome::Executed(execution(i)))
                        .expect("outcome");
                    println!("ack {} {intent_seq} {cid}", a.seq);
                }
            });
        }
    });
}

/// Writes until the file size limit makes a write fail, shows the log refuses work while the
/// limit holds, lifts the limit and shows the log recovers by itself.
#[allow(unsafe_code)] // nix::sys::signal::signal is unsafe
fn fsize_child(dir: &Path) {
    use nix::sys::resource::{Resource, setrlimit};
    use nix::sys::signal::{SigHandler, Signal, signal};
    let mut o = options(dir);
    o.checkpoint_copy = None;
    let (log, _) = ReceiptLog::open(o, key(1)).expect("child open");
    log.append_denied(denied("before")).expect("first");
    let size = std::fs::metadata(segment0(dir)).expect("size").len();
    // SIGXFSZ would kill the process; ignored, the write fails with EFBIG instead.
    // SAFETY: SigIgn installs no handler, so no code runs in signal context.
    unsafe { signal(Signal::SIGXFSZ, SigHandler::SigIgn) }.expect("ignore SIGXFSZ");
    let limit = size + 3000;
    setrlimit(Resource::RLIMIT_FSIZE, limit, nix::libc::RLIM_INFINITY).expect("setrlimit");
    for i in 0.. {
        match log.append_denied(denied(&format!("c-{i}"))) {
            Ok(a) => println!("ack {} - c-{i}", a.seq),
            Err(e) => {
                println!("unavailable {}", matches!(e, LogError::Unavailable { .. }));
                break;
            }
        }
    }
    // While the limit holds nothing is recorded and nothing runs: fail closed, not failed.
    let again = log.append_denied(denied("after"));
    println!(
        "again {}",
        matches!(again, Err(LogError::Unavailable { .. }))
    );
    let intent = log.append_intent(dispatch("after-intent"));
    println!(
        "intent-refused {}",
        matches!(intent, Err(LogError::Unavailable { .. }))
    );
    println!(
        "status-degraded {}",
        matches!(log.status().state, LogState::Degraded { .. }) && log.status().failed.is_none()
    );
    // The resource returns: the checkpoint thread's recovery makes the log usable again.
    let inf = nix::libc::RLIM_INFINITY;
    setrlimit(Resource::RLIMIT_FSIZE, inf, inf).expect("setrlimit");
    let t = std::time::Instant::now();
    while log.status().state != LogState::Ok && t.elapsed() < std::time::Duration::from_secs(10) {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    println!("recovered {}", log.status().state == LogState::Ok);
    let a = log
        .append_denied(denied("recovered"))
        .expect("after recovery");
    println!("ack {} - recovered", a.seq);
    log.shutdown().expect("shutdown");
}

/// The harness's name of [`child_process_entry`] (`receipts_crash::child_process_entry`): its path
/// below the test crate's root.
fn child_test_name() -> String {
    let module = module_path!().split_once("::").map_or("", |(_, m)| m);
    if module.is_empty() {
        "child_process_entry".to_owned()
    } else {
        format!("{module}::child_process_entry")
    }
}

fn spawn_child(mode: &str, dir: &Path, round: u32) -> std::process::Child {
    Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            &child_test_name(),
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, mode)
        .env(DIR, dir)
        .env(ROUND, round.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn child")
}

/// Every record of the log: seq → (kind, correlation id, intent_seq).
fn records(dir: &Path) -> BTreeMap<u64, (Kind, Option<String>, Option<u64>)> {
    let mut out = BTreeMap::new();
    for seg in store::list_segments(dir).unwrap() {
        let data = std::fs::read(&seg.path).unwrap();
        let (lines, tail) = store::split_lines(&data);
        assert!(tail.is_empty(), "no torn tail after recovery");
        for l in lines {
            let line = LogLine::parse(l.bytes).unwrap();
            let p = ReceiptPayload::decode(&line.payload_bytes().unwrap()).unwrap();
            out.insert(
                p.seq,
                (p.kind, p.dispatch.map(|d| d.correlation_id), p.intent_seq),
            );
        }
    }
    out
}

#[test]
fn every_acknowledged_receipt_survives_kill_9() {
    let base = tempfile::tempdir().unwrap();
    let dir = base.path().join("receipts");
    let mut acked: Vec<(u64, Option<u64>, String)> = Vec::new();
    let mut intents: Vec<(u64, String)> = Vec::new();
    for round in 0..3u32 {
        let mut child = spawn_child("stream", &dir, round);
        let stdout = child.stdout.take().unwrap();
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let mut new_acks = 0;
        let mut killed = false;
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap() == 0 {
                break;
            }
            let parts: Vec<&str> = line.split_whitespace().collect();
            match parts.as_slice() {
                ["ack", seq, intent, cid] => {
                    acked.push((seq.parse().unwrap(), intent.parse().ok(), cid.to_string()));
                    new_acks += 1;
                }
                ["intent", seq, cid] => intents.push((seq.parse().unwrap(), cid.to_string())),
                _ => {} // the test harness's own output
            }
            if new_acks >= 60 && !killed {
                child.kill().unwrap(); // SIGKILL, mid-stream
                killed = true;
            }
        }
        let status = child.wait().unwrap();
        assert!(killed, "the child stopped on its own: {status:?}");
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9)
        );

        // Restart: recovery, then an orderly shutdown (final checkpoint).
        let (log, report) = ReceiptLog::open(child_options(&dir), key(1)).expect("reopen");
        eprintln!(
            "round {round}: {} records, {} acknowledged so far, recovered {:?}, aborted {}",
            report.records,
            acked.len(),
            report.recovered.as_ref().map(|r| r.1.discarded_bytes),
            report.aborted.len()
        );
        assert!(
            !report.saved_checkpoints.is_empty(),
            "checkpoints were saved"
        );
        // A kill between the checkpoint and its resume snapshot leaves a stale snapshot (full
        // scan); otherwise the open resumed, and the background check must agree with it.
        log.start_background_check();
        let check = log.wait_background_check();
        assert!(
            matches!(
                check,
                BackgroundCheck::Passed { .. } | BackgroundCheck::NotNeeded
            ),
            "round {round}: {check:?} (resumed at {:?}, refused: {:?})",
            report.resumed_at,
            report.resume_refused
        );
        log.shutdown().unwrap();

        let all = records(&dir);
        for (seq, intent, cid) in &acked {
            let (kind, found_cid, found_intent) = all
                .get(seq)
                .unwrap_or_else(|| panic!("acknowledged seq {seq} lost"));
            assert_eq!(found_cid.as_deref(), Some(cid.as_str()), "seq {seq}");
            assert_eq!(found_intent, intent, "seq {seq}");
            let want = if intent.is_some() {
                Kind::Executed
            } else {
                Kind::Denied
            };
            assert_eq!(*kind, want, "seq {seq}");
        }
        // Every acknowledged intent is there and has exactly one outcome (executed, or
        // aborted by recovery if the child died before its outcome).
        let mut closed: BTreeMap<u64, u64> = BTreeMap::new();
        for (seq, (kind, _, intent)) in &all {
            if matches!(kind, Kind::Executed | Kind::Aborted)
                && let Some(i) = intent
            {
                assert!(closed.insert(*i, *seq).is_none(), "intent {i} closed twice");
            }
        }
        for (seq, cid) in &intents {
            let (kind, found_cid, _) = &all[seq];
            assert_eq!(
                (*kind, found_cid.as_deref()),
                (Kind::Intent, Some(cid.as_str()))
            );
            assert!(closed.contains_key(seq), "intent {seq} has no outcome");
        }
        let open: BTreeSet<u64> = all
            .iter()
            .filter(|(s, (k, _, _))| *k == Kind::Intent && !closed.contains_key(s))
            .map(|(s, _)| *s)
            .collect();
        assert!(open.is_empty(), "intents left open: {open:?}");

        let copy = std::fs::read_to_string(copy_path(&dir)).unwrap();
        let r = verify(&dir, &[key(1).public()], &[("copy", copy)]);
        assert!(r.ok(), "round {round}: {:?}", r.failures);
        assert_eq!(r.passed, all.len() as u64);
    }
    assert!(
        store::list_segments(&dir).unwrap().len() > 1,
        "segments rolled over during the test"
    );
}

#[test]
fn a_failing_disk_degrades_the_log_which_cuts_the_torn_write_and_recovers() {
    let base = tempfile::tempdir().unwrap();
    let dir = base.path().join("receipts");
    let out = spawn_child("fsize", &dir, 0).wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let acked: Vec<u64> = text
        .lines()
        .filter_map(|l| l.strip_prefix("ack "))
        .map(|l| l.split_whitespace().next().unwrap().parse().unwrap())
        .collect();
    assert!(!acked.is_empty(), "{text}");
    for expect in [
        "unavailable true",
        "again true",
        "intent-refused true",
        "status-degraded true",
        "recovered true",
    ] {
        assert!(
            text.lines().any(|l| l == expect),
            "missing {expect:?} in:\n{text}"
        );
    }
    // The short writes were cut by the writer itself (re-reading its tail before appending
    // again): the next start finds nothing torn, and every acknowledged record.
    let data = std::fs::read(segment0(&dir)).unwrap();
    assert_eq!(data.last(), Some(&b'\n'), "no partial line is left");
    let (log, report) = ReceiptLog::open(options(&dir), key(1)).unwrap();
    assert!(report.recovered.is_none(), "{report:?}");
    log.shutdown().unwrap();
    let all = records(&dir);
    for seq in &acked {
        assert_eq!(all[seq].0, Kind::Denied);
    }
    // The acknowledged records are consecutive: nothing unacknowledged was kept between them.
    assert_eq!(*acked.last().unwrap(), acked[0] + acked.len() as u64 - 1);
    let r = verify(&dir, &[key(1).public()], &[]);
    assert!(r.ok(), "{:?}", r.failures);
}
