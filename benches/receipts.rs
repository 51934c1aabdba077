//! Evidence receipts: durable append throughput with group commit, offline verification rate,
//! proof verification latency.
//!
//! Self-contained harness (no criterion): `cargo bench --bench receipts [-- FILTER]` where
//! FILTER is `append`, `verify`, `open` or `proof`. Results and their interpretation live in
//! BENCHMARKS.md ("Evidence receipts").
//!
//! - **append/N**: N threads each append `denied` receipts to one log (each call returns only
//!   once its record is `fdatasync`ed) for `APPEND_TIME`; durable receipts per second, the
//!   per-call latency, and how many records each `fdatasync` covered. Checkpoints at the
//!   defaults (every 1,000 records or 60 s). The log lives under `CARGO_TARGET_TMPDIR` (the
//!   project's disk), never on tmpfs, where `fdatasync` would be free.
//! - **verify**: `verify_log` (every signature, chain, tree, checkpoints) over a log of
//!   `VERIFY_RECORDS` realistic dispatch receipts (intent + executed, every 4th denied; a
//!   checkpoint every 1,000), all cores; also the recovery scan of `ReceiptLog::open`.
//! - **open**: `ReceiptLog::open` of a log of `OPEN_RECORDS` receipts with the resume snapshot
//!   (reads only the records after it) and without it (the full scan), and the background
//!   re-verification the fast open leaves (`start_background_check`, at idle priority).
//! - **proof**: `verify_proof` of one bundle (two Ed25519 signatures, the key chain, the
//!   inclusion proof), one thread; and `prove` (which reads the whole log).

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use wcp_hall::crypto::KeyPair;
use wcp_hall::receipt::checkpoint::Checkpoint;
use wcp_hall::receipt::merkle::{Frontier, leaf_hash};
use wcp_hall::receipt::model::{
    Body, CheckpointRecord, HallInfo, Header, ReceiptPayload, rfc3339_millis, seal,
};
use wcp_hall::receipt::verify::{VerifyOptions, prove, verify_log, verify_proof};
use wcp_hall::receipt::{
    BackgroundCheck, Caller, DecisionSummary, Dispatch, Execution, LogOptions, PackageRef,
    ReceiptLog, Timings, store,
};

const WRITERS: [usize; 3] = [1, 8, 32];
const APPEND_TIME: Duration = Duration::from_secs(4);
const VERIFY_RECORDS: u64 = 20_000;
const VERIFY_RUNS: usize = 5;
const OPEN_RECORDS: u64 = 200_000;
const PROOF_ITERATIONS: usize = 2_000;
const ORIGIN: &str = "hall.bench/receipts";

fn dispatch(cid: &str, denied: bool) -> Dispatch {
    Dispatch {
        correlation_id: cid.to_owned(),
        dispatched_at: "2026-11-24T19:36:01.274Z".into(),
        tenant_id: "acme-corp".into(),
        env: "prod".into(),
        capability_id: "cap.doc.summarize".into(),
        worker_id: (!denied).then(|| "org.example.summarizer".into()),
        worker_species_id: Some("wrk.doc.summarizer".into()),
        policy_decision: if denied { "DENY" } else { "ALLOW" }.into(),
        controls_verified: if denied {
            vec![]
        } else {
            vec!["ctrl.obs.audit-log-append-only".into()]
        },
        artifact_hash: Some("ab".repeat(32)),
        decision: DecisionSummary {
            decision_id: format!("d-{cid}"),
            matched_rule_id: "rr_doc_summarize".into(),
            denied,
            deny_code: denied.then(|| "DENY_MISSING_REQUIRED_CONTROLS".into()),
            deny_detail: None,
            policy_version: Some("policy.v1".into()),
        },
        caller: Caller {
            uid: 1000,
            gid: 1000,
            pid: 4242,
        },
        package: (!denied).then(|| PackageRef {
            digest: format!("sha256:{}", "cd".repeat(32)),
            manifest_digest: Some(format!("sha256:{}", "ee".repeat(32))),
            signer_key_ids: vec!["ef".repeat(32)],
        }),
        registry_service: None,
        envelope: (!denied).then(|| {
            serde_json::json!({
                "network": {"requested": "none", "effective": "none"},
                "memory_bytes": {"requested": 268435456, "effective": 268435456},
                "landlock": {"requested": true, "effective": "abi-7"},
            })
        }),
        trace: None,
    }
}

fn execution() -> Execution {
    Execution {
        exit_code: Some(0),
        failure: None,
        signal: None,
        timed_out: false,
        truncated: false,
        stdout_sha256: "01".repeat(32),
        stderr_sha256: "02".repeat(32),
        stdout_bytes: 812,
        stderr_bytes: 0,
        timings: Timings {
            started_at: "2026-11-24T19:36:01.300Z".into(),
            wall_ms: 25,
            cpu_user_ms: Some(3),
            cpu_system_ms: Some(1),
        },
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn verdict(ok: bool) -> &'static str {
    if ok { "PASS" } else { "MISS" }
}

struct AppendRow {
    writers: usize,
    records: u64,
    per_sec: f64,
    p50_ms: f64,
    mean_ms: f64,
    p99_ms: f64,
    per_sync: f64,
}

fn bench_append(base: &Path, writers: usize) -> AppendRow {
    let dir = tempfile::tempdir_in(base).expect("bench dir");
    let mut opts = LogOptions::new(dir.path(), "bench");
    opts.origin = ORIGIN.into();
    let (log, _) = ReceiptLog::open(opts, KeyPair::from_seed(&[1; 32])).expect("open");
    // Warm-up: create the segment, fault in the page cache.
    for i in 0..20 {
        log.append_denied(dispatch(&format!("w-{i}"), true))
            .expect("append");
    }
    let before = log.status();
    let start = Instant::now();
    let latencies: Vec<f64> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..writers)
            .map(|t| {
                let log = &log;
                s.spawn(move || {
                    let mut lat = Vec::new();
                    let mut i = 0u64;
                    while start.elapsed() < APPEND_TIME {
                        let d = dispatch(&format!("c-{t}-{i}"), true);
                        let t0 = Instant::now();
                        log.append_denied(d).expect("append");
                        lat.push(t0.elapsed().as_secs_f64() * 1e3);
                        i += 1;
                    }
                    lat
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("writer"))
            .collect()
    });
    let elapsed = start.elapsed().as_secs_f64();
    let after = log.status();
    drop(log);
    let mut lat = latencies;
    let records = lat.len() as u64;
    let syncs = (after.fdatasyncs - before.fdatasyncs).max(1);
    AppendRow {
        writers,
        records,
        per_sec: records as f64 / elapsed,
        mean_ms: lat.iter().sum::<f64>() / lat.len().max(1) as f64,
        p50_ms: median(&mut lat),
        p99_ms: percentile(&mut lat, 0.99),
        per_sync: (after.records - before.records) as f64 / syncs as f64,
    }
}

/// Writes a realistic log directly (sealing without fsync): dispatches as intent + executed,
/// every 4th denied, a checkpoint record every 1,000 records and the saved checkpoint file.
fn build_log(dir: &Path, key: &KeyPair, records: u64) {
    let mut lines = Vec::with_capacity(records as usize * 1400);
    let mut prev = None;
    let mut frontier = Frontier::new();
    let mut open_intent: Option<(u64, Dispatch)> = None;
    let mut last_note = None;
    let mut i = 0u64;
    for seq in 0..records {
        let header = Header {
            log: ORIGIN.into(),
            seq,
            receipt_id: uuid::Uuid::now_v7().to_string(),
            prev_receipt_hash: prev,
            signing_key: key.public(),
            time: rfc3339_millis(std::time::SystemTime::now()),
            hall: HallInfo {
                version: "0.1.0".into(),
                host_id: "bench".into(),
            },
        };
        let body = if seq > 0 && seq % 1000 == 0 {
            let root = frontier.root();
            let note = Checkpoint::new(ORIGIN, seq, root).sign(key).expect("note");
            last_note = Some(note.clone());
            Body::Checkpoint(CheckpointRecord {
                size: seq,
                root: wcp_hall::router::hex(&root),
                note,
            })
        } else if let Some((intent_seq, d)) = open_intent.take() {
            Body::Executed {
                intent_seq,
                dispatch: d,
                execution: execution(),
            }
        } else {
            i += 1;
            if i.is_multiple_of(4) {
                Body::Denied(dispatch(&format!("c-{i}"), true))
            } else {
                let d = dispatch(&format!("c-{i}"), false);
                open_intent = Some((seq, d.clone()));
                Body::Intent(d)
            }
        };
        let payload = ReceiptPayload::new(&header, body).expect("payload");
        let sealed = seal(payload, &[key]).expect("seal");
        prev = Some(sealed.hash);
        frontier.push(leaf_hash(&sealed.payload_bytes));
        lines.extend_from_slice(&sealed.line);
    }
    std::fs::write(dir.join(store::segment_name(0)), &lines).expect("write log");
    if let Some(note) = last_note {
        std::fs::write(dir.join(store::CHECKPOINT_FILE), note).expect("write checkpoint");
    }
}

fn open_options(dir: &Path) -> LogOptions {
    let mut o = LogOptions::new(dir, "bench");
    o.origin = ORIGIN.into();
    o.checkpoint_every = 0;
    o.checkpoint_interval = None;
    o
}

/// Opening a large log with and without the resume snapshot, and the background check.
fn bench_open(base: &Path, targets: &mut Vec<(String, String, bool)>) {
    let key = || KeyPair::from_seed(&[3; 32]);
    let dir = tempfile::tempdir_in(base).expect("bench dir");
    let t = Instant::now();
    build_log(dir.path(), &key(), OPEN_RECORDS);
    println!(
        "log of {OPEN_RECORDS} records built in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    // One open (full scan: build_log writes no snapshot) and an orderly shutdown, whose
    // checkpoint writes the resume snapshot.
    let (log, report) = ReceiptLog::open(open_options(dir.path()), key()).expect("open");
    assert_eq!(report.resumed_at, None);
    log.append_denied(dispatch("bench-open", true))
        .expect("append");
    log.shutdown().expect("shutdown");
    let resume = dir.path().join(store::RESUME_FILE);
    assert!(resume.exists(), "the shutdown checkpoint wrote a snapshot");

    let mut fast = Vec::new();
    let mut read = 0;
    for _ in 0..5 {
        let t = Instant::now();
        let (log, report) = ReceiptLog::open(open_options(dir.path()), key()).expect("open");
        fast.push(t.elapsed().as_secs_f64());
        assert!(report.resumed_at.is_some(), "{:?}", report.resume_refused);
        read = report.records_read;
        drop(log);
    }
    let fast_ms = median(&mut fast) * 1e3;

    let (log, _) = ReceiptLog::open(open_options(dir.path()), key()).expect("open");
    let t = Instant::now();
    log.start_background_check();
    let check = log.wait_background_check();
    let check_s = t.elapsed().as_secs_f64();
    assert!(matches!(check, BackgroundCheck::Passed { .. }), "{check:?}");
    drop(log);

    let aside = dir.path().join("resume.aside");
    std::fs::rename(&resume, &aside).expect("move the snapshot aside");
    let mut full = Vec::new();
    for _ in 0..2 {
        let t = Instant::now();
        let (log, report) = ReceiptLog::open(open_options(dir.path()), key()).expect("open");
        full.push(t.elapsed().as_secs_f64());
        assert_eq!(report.records_read, report.records);
        drop(log);
    }
    std::fs::rename(&aside, &resume).expect("restore the snapshot");
    let full_s = median(&mut full);
    println!(
        "open of {OPEN_RECORDS} records: with the resume snapshot median {fast_ms:.1} ms ({read} record(s) read); without it (full scan) median {full_s:.2} s ({:.1} µs/record)",
        full_s * 1e6 / OPEN_RECORDS as f64
    );
    println!(
        "background re-verification of the {OPEN_RECORDS} records (SCHED_IDLE, wall clock): {check_s:.2} s"
    );
    targets.push((
        format!("open of {OPEN_RECORDS} receipts with the resume snapshot < 100 ms"),
        format!("{fast_ms:.1} ms (full scan {full_s:.2} s)"),
        fast_ms < 100.0,
    ));
}

/// CPU time of the calling thread (user + system), immune to other processes' load.
fn thread_cpu() -> Duration {
    use nix::sys::resource::{UsageWho, getrusage};
    getrusage(UsageWho::RUSAGE_THREAD)
        .map(|u| {
            let t = |tv: nix::sys::time::TimeVal| {
                Duration::new(tv.tv_sec() as u64, tv.tv_usec() as u32 * 1000)
            };
            t(u.user_time()) + t(u.system_time())
        })
        .unwrap_or_default()
}

/// CPU time of the whole process (all threads).
fn process_cpu() -> Duration {
    use nix::sys::resource::{UsageWho, getrusage};
    getrusage(UsageWho::RUSAGE_SELF)
        .map(|u| {
            let t = |tv: nix::sys::time::TimeVal| {
                Duration::new(tv.tv_sec() as u64, tv.tv_usec() as u32 * 1000)
            };
            t(u.user_time()) + t(u.system_time())
        })
        .unwrap_or_default()
}

/// The raw cost of one durable append on this disk: a 2.6 KiB `write` + `fdatasync`, no
/// receipt logic (the floor a single writer pays per receipt).
fn raw_fdatasync_ms(base: &Path) -> (f64, f64, f64) {
    use std::io::Write as _;
    let dir = tempfile::tempdir_in(base).expect("bench dir");
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(dir.path().join("raw"))
        .expect("raw file");
    let line = vec![b'x'; 2624];
    let mut v = Vec::new();
    for _ in 0..200 {
        let t = Instant::now();
        f.write_all(&line).expect("write");
        f.sync_data().expect("fdatasync");
        v.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    (median(&mut v), mean, percentile(&mut v, 0.99))
}

/// Per-record CPU cost of each verification step, one thread.
fn breakdown(dir: &Path, key: &KeyPair) {
    use wcp_hall::receipt::model::{LogLine, PAYLOAD_TYPE, receipt_hash};
    let data = std::fs::read(dir.join(store::segment_name(0))).expect("log");
    let (lines, _) = store::split_lines(&data);
    let lines = &lines[..lines.len().min(4000)];
    let n = lines.len() as f64;
    let step = |name: &str, f: &dyn Fn(&[u8])| {
        let t = thread_cpu();
        for l in lines {
            f(black_box(l.bytes));
        }
        let us = (thread_cpu() - t).as_secs_f64() * 1e6 / n;
        println!("  {name:<44} {us:>7.1} µs/record (thread CPU)");
    };
    println!(
        "per-record CPU cost of verification steps ({} records, one thread):",
        lines.len()
    );
    step("LogLine::parse (JSON line + envelope)", &|b| {
        black_box(LogLine::parse(b).expect("line"));
    });
    step("+ base64-decode the payload", &|b| {
        black_box(
            LogLine::parse(b)
                .expect("line")
                .payload_bytes()
                .expect("b64"),
        );
    });
    step("+ SHA-256 (receipt_hash)", &|b| {
        let p = LogLine::parse(b)
            .expect("line")
            .payload_bytes()
            .expect("b64");
        black_box(receipt_hash(&p));
    });
    step("+ ReceiptPayload::decode (+ canonical check)", &|b| {
        let p = LogLine::parse(b)
            .expect("line")
            .payload_bytes()
            .expect("b64");
        black_box(receipt_hash(&p));
        black_box(ReceiptPayload::decode(&p).expect("payload"));
    });
    step("+ Ed25519 verify_strict over DSSE PAE", &|b| {
        let line = LogLine::parse(b).expect("line");
        let p = line.payload_bytes().expect("b64");
        black_box(receipt_hash(&p));
        black_box(ReceiptPayload::decode(&p).expect("payload"));
        line.envelope
            .verify(PAYLOAD_TYPE, &[key.public()], 1)
            .expect("signature");
    });
}

fn main() {
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let wanted = |label: &str| filter.as_deref().is_none_or(|f| label.contains(f));
    let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "wcp-hall receipts benchmark (release; {threads} CPUs; load average {}; logs under {})",
        std::fs::read_to_string("/proc/loadavg")
            .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .unwrap_or_default(),
        base.display()
    );
    println!();
    let mut targets: Vec<(String, String, bool)> = Vec::new();

    if wanted("append") {
        println!(
            "durable appends: N threads append `denied` receipts for {} s each; every call returns after fdatasync",
            APPEND_TIME.as_secs()
        );
        let (p50, mean, p99) = raw_fdatasync_ms(base);
        println!(
            "raw write + fdatasync of one 2.6 KiB line on this disk (200 runs): median {p50:.2} ms, mean {mean:.2} ms, p99 {p99:.2} ms"
        );
        println!(
            "| writers | receipts | durable receipts/s | call p50 | call mean | call p99 | records per fdatasync |"
        );
        println!(
            "|--------:|---------:|-------------------:|---------:|----------:|---------:|----------------------:|"
        );
        let mut rows = Vec::new();
        for &w in &WRITERS {
            let r = bench_append(base, w);
            println!(
                "| {:>7} | {:>8} | {:>18.0} | {:>6.2} ms | {:>7.2} ms | {:>6.2} ms | {:>21.1} |",
                r.writers, r.records, r.per_sec, r.p50_ms, r.mean_ms, r.p99_ms, r.per_sync
            );
            rows.push(r);
        }
        if let (Some(one), Some(many)) = (rows.first(), rows.last()) {
            targets.push((
                "group commit: ≥ 8 records share each fdatasync at 32 writers".into(),
                format!(
                    "{:.1} per fdatasync; {:.1}× one writer's receipts/s",
                    many.per_sync,
                    many.per_sec / one.per_sec
                ),
                many.per_sync >= 8.0,
            ));
        }
        println!();
    }

    if wanted("verify") || wanted("proof") || wanted("breakdown") {
        let key = KeyPair::from_seed(&[2; 32]);
        let dir = tempfile::tempdir_in(base).expect("bench dir");
        let t = Instant::now();
        build_log(dir.path(), &key, VERIFY_RECORDS);
        let size = std::fs::metadata(dir.path().join(store::segment_name(0)))
            .expect("log")
            .len();
        println!(
            "log of {VERIFY_RECORDS} records ({:.1} MiB, {} bytes/record) sealed in {:.2} s ({:.1} µs/record: canonical JSON + SHA-256 + Ed25519 sign)",
            size as f64 / 1048576.0,
            size / VERIFY_RECORDS,
            t.elapsed().as_secs_f64(),
            t.elapsed().as_secs_f64() * 1e6 / VERIFY_RECORDS as f64
        );

        if wanted("verify") {
            let opts = VerifyOptions {
                anchors: vec![key.public()],
                checkpoints: vec![],
            };
            let mut runs = Vec::new();
            let mut cpu = Vec::new();
            for _ in 0..VERIFY_RUNS {
                let (t, c) = (Instant::now(), process_cpu());
                let r = verify_log(dir.path(), &opts).expect("verify");
                runs.push(t.elapsed().as_secs_f64());
                cpu.push((process_cpu() - c).as_secs_f64());
                assert!(r.ok(), "{:?}", r.first_failure);
                assert_eq!(r.passed, VERIFY_RECORDS);
            }
            let secs = median(&mut runs);
            let rate = VERIFY_RECORDS as f64 / secs;
            let cpu_rate = VERIFY_RECORDS as f64 / median(&mut cpu);
            println!(
                "offline verification (verify_log, {threads} threads): median {:.0} ms of {VERIFY_RUNS} runs → {rate:.0} receipts/s wall clock",
                secs * 1e3
            );
            println!(
                "  CPU cost: {:.1} µs/receipt → {cpu_rate:.0} receipts per CPU-second, {:.0}/s on {threads} idle CPUs",
                1e6 / cpu_rate,
                cpu_rate * threads as f64
            );
            targets.push((
                "offline verification ≥ 20,000 receipts/s".into(),
                format!(
                    "{rate:.0}/s wall ({:.0}/s CPU capacity on {threads} CPUs)",
                    cpu_rate * threads as f64
                ),
                rate >= 20_000.0,
            ));
            let mut opens = Vec::new();
            for _ in 0..3 {
                let mut o = LogOptions::new(dir.path(), "bench");
                o.origin = ORIGIN.into();
                o.checkpoint_every = 0;
                o.checkpoint_interval = None;
                let t = Instant::now();
                let (log, report) =
                    ReceiptLog::open(o, KeyPair::from_seed(&[2; 32])).expect("open");
                opens.push(t.elapsed().as_secs_f64());
                black_box(report);
                drop(log);
            }
            println!(
                "recovery scan at start (ReceiptLog::open; signatures only after the saved checkpoint): median {:.0} ms",
                median(&mut opens) * 1e3
            );
        }

        if wanted("breakdown") {
            breakdown(dir.path(), &key);
        }

        if wanted("proof") {
            let seqs = [1u64, VERIFY_RECORDS / 2 + 1, VERIFY_RECORDS - 1500];
            let t = Instant::now();
            let bundles: Vec<_> = seqs
                .iter()
                .map(|&s| prove(dir.path(), s).expect("prove"))
                .collect();
            let prove_ms = t.elapsed().as_secs_f64() * 1e3 / seqs.len() as f64;
            let anchors = [key.public()];
            let mut samples = Vec::with_capacity(PROOF_ITERATIONS);
            let cpu0 = thread_cpu();
            for i in 0..PROOF_ITERATIONS {
                let b = &bundles[i % bundles.len()];
                let t = Instant::now();
                let r = verify_proof(black_box(b), &anchors).expect("proof");
                samples.push(t.elapsed().as_secs_f64() * 1e6);
                black_box(r);
            }
            let cpu_us = (thread_cpu() - cpu0).as_secs_f64() * 1e6 / PROOF_ITERATIONS as f64;
            let p50 = median(&mut samples);
            let p99 = percentile(&mut samples, 0.99);
            println!(
                "proof verification (verify_proof, one thread, {PROOF_ITERATIONS} runs): median {p50:.0} µs, p99 {p99:.0} µs wall, {cpu_us:.0} µs CPU each; prove (reads the whole log): {prove_ms:.0} ms"
            );
            targets.push((
                "proof verification < 1 ms".into(),
                format!("median {p50:.0} µs (p99 {p99:.0} µs wall, {cpu_us:.0} µs CPU)"),
                p50 < 1000.0,
            ));
        }
        println!();
    }

    if wanted("open") {
        bench_open(base, &mut targets);
    }

    println!("| target | measured | verdict |");
    println!("|---|---|---|");
    for (t, m, ok) in &targets {
        println!("| {t} | {m} | {} |", verdict(*ok));
    }
}
