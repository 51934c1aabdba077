//! Helpers shared by the receipt tests: real logs in temporary directories, real keys.

use std::fs;
use std::path::{Path, PathBuf};

use wcp_hall::crypto::{KeyPair, PublicKey};
use wcp_hall::receipt::store;
use wcp_hall::receipt::verify::{ExternalCheckpoint, VerifyOptions, VerifyReport, verify_log};
use wcp_hall::receipt::{
    Appended, Caller, DecisionSummary, Dispatch, Execution, LogOptions, Outcome, PackageRef,
    ReceiptLog, Timings,
};

pub const ORIGIN: &str = "hall.test/receipts";

pub fn key(seed: u8) -> KeyPair {
    KeyPair::from_seed(&[seed; 32])
}

pub fn options(dir: &Path) -> LogOptions {
    let mut o = LogOptions::new(dir, "test");
    o.origin = ORIGIN.into();
    o.checkpoint_every = 0;
    o.checkpoint_interval = None;
    o.reserve_bytes = 256 * 1024;
    o
}

pub fn dispatch(correlation: &str) -> Dispatch {
    Dispatch {
        correlation_id: correlation.to_owned(),
        dispatched_at: "2026-11-24T19:36:01.274Z".into(),
        tenant_id: "acme-corp".into(),
        env: "prod".into(),
        capability_id: "cap.doc.summarize".into(),
        worker_id: Some("org.example.summarizer".into()),
        worker_species_id: Some("wrk.doc.summarizer".into()),
        policy_decision: "ALLOW".into(),
        controls_verified: vec!["ctrl.obs.audit-log-append-only".into()],
        artifact_hash: Some("ab".repeat(32)),
        decision: DecisionSummary {
            decision_id: format!("d-{correlation}"),
            matched_rule_id: "rr_doc_summarize".into(),
            denied: false,
            deny_code: None,
            deny_detail: None,
            policy_version: Some("policy.v1".into()),
        },
        caller: Caller {
            uid: 1000,
            gid: 1000,
            pid: 4242,
        },
        package: Some(PackageRef {
            digest: format!("sha256:{}", "cd".repeat(32)),
            manifest_digest: Some(format!("sha256:{}", "ee".repeat(32))),
            signer_key_ids: vec!["ef".repeat(32)],
        }),
        registry_service: None,
        envelope: Some(serde_json::json!({
            "network": {"requested": "none", "effective": "none"},
            "memory_bytes": {"requested": 268435456, "effective": 268435456},
        })),
        trace: None,
    }
}

pub fn denied(correlation: &str) -> Dispatch {
    let mut d = dispatch(correlation);
    d.policy_decision = "DENY".into();
    d.decision.denied = true;
    d.decision.deny_code = Some("DENY_NO_MATCHING_RULE".into());
    d.controls_verified.clear();
    d.worker_id = None;
    d.package = None;
    d.envelope = None;
    d
}

pub fn execution(i: u64) -> Execution {
    Execution {
        exit_code: Some((i % 3) as i64),
        // Old receipts (no failure key) and new ones (a failure code) in the same log.
        failure: (!i.is_multiple_of(3)).then(|| "exit_status".to_owned()),
        signal: None,
        timed_out: false,
        truncated: i.is_multiple_of(7),
        stdout_sha256: "01".repeat(32),
        stderr_sha256: "02".repeat(32),
        stdout_bytes: 100 + i,
        stderr_bytes: 0,
        timings: Timings {
            started_at: "2026-11-24T19:36:01.300Z".into(),
            wall_ms: 20 + i,
            cpu_user_ms: Some(3),
            cpu_system_ms: Some(1),
        },
    }
}

/// A log of `n` dispatches (intent + executed; every 4th one denied), with a checkpoint
/// after every `every` dispatches and at shutdown. Returns the outcome receipts.
pub fn build_log(dir: &Path, k: KeyPair, n: u64, every: u64) -> Vec<Appended> {
    let (log, _) = ReceiptLog::open(options(dir), k).expect("open");
    let mut out = Vec::new();
    for i in 0..n {
        if i % 4 == 3 {
            out.push(
                log.append_denied(denied(&format!("c-{i}")))
                    .expect("denied"),
            );
        } else {
            let h = log
                .append_intent(dispatch(&format!("c-{i}")))
                .expect("intent");
            out.push(
                log.append_outcome(h, Outcome::Executed(execution(i)))
                    .expect("outcome"),
            );
        }
        if every > 0 && (i + 1) % every == 0 {
            log.checkpoint_now().expect("checkpoint");
        }
    }
    log.shutdown().expect("shutdown");
    out
}

pub fn segment0(dir: &Path) -> PathBuf {
    dir.join(store::segment_name(0))
}

/// The lines of segment 0, newline excluded.
pub fn lines(dir: &Path) -> Vec<Vec<u8>> {
    let data = fs::read(segment0(dir)).expect("read segment");
    let mut v: Vec<Vec<u8>> = data.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
    assert_eq!(
        v.pop().as_deref(),
        Some(&b""[..]),
        "segment ends with a newline"
    );
    v
}

pub fn write_lines(dir: &Path, lines: &[Vec<u8>]) {
    let mut data = Vec::new();
    for l in lines {
        data.extend_from_slice(l);
        data.push(b'\n');
    }
    fs::write(segment0(dir), data).expect("write segment");
}

pub fn verify(dir: &Path, anchors: &[PublicKey], external: &[(&str, String)]) -> VerifyReport {
    verify_log(
        dir,
        &VerifyOptions {
            anchors: anchors.to_vec(),
            checkpoints: external
                .iter()
                .map(|(s, n)| ExternalCheckpoint {
                    source: (*s).to_owned(),
                    note: n.clone(),
                })
                .collect(),
        },
    )
    .expect("verify")
}

/// The first failure's seq, asserting there is one.
pub fn first_bad(r: &VerifyReport) -> u64 {
    assert!(!r.ok(), "expected a failure");
    r.first_failure
        .as_ref()
        .and_then(|f| f.seq)
        .expect("the first failure names a seq")
}

pub fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("mkdir");
    for e in fs::read_dir(from).expect("read_dir") {
        let e = e.expect("entry");
        if e.file_type().expect("type").is_file() {
            fs::copy(e.path(), to.join(e.file_name())).expect("copy");
        }
    }
}
