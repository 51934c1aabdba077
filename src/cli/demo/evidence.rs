//! The evidence steps: the Hall stopped with SIGTERM, its receipt log verified offline
//! (signatures, hash chain, Merkle tree, checkpoints) and checked to tell the demo's story, and
//! where everything is.
//!
//! Owns the offline check; it must not accept a log that does not verify or whose receipts do
//! not match what the demo did (5 executed for the pipeline, nothing executed when tampered).

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::interrupt::interruptible;
use super::print::Printer;
use super::workspace::find_file;
use super::{Session, Step, failed, ms};
use crate::crypto::KeyPair;
use crate::receipt::{Kind, ReceiptPayload, VerifyOptions, verify_log};

/// The `hall_stopped` step: SIGTERM, and the Hall must exit 0.
pub(super) fn stop_hall(s: &mut Session, pr: &mut Printer<'_>) -> Step<()> {
    let status = s
        .hall
        .as_mut()
        .map(|h| h.stop(Duration::from_secs(15)))
        .transpose()?
        .ok_or_else(|| failed("hall_stopped", "the Hall is not running"))?;
    s.hall = None;
    interruptible(|g| g.hall_pid = None);
    if !status.success() {
        return Err(failed(
            "hall_stopped",
            format!(
                "the Hall exited with {status} after SIGTERM{}",
                status
                    .signal()
                    .map(|s| format!(" (signal {s})"))
                    .unwrap_or_default()
            ),
        ));
    }
    pr.step(
        "hall_stopped",
        "  hall stopped        SIGTERM, exit 0",
        json!({"exit_code": status.code()}),
    )
}

/// The `receipts_verified` step: verifies the log against the receipt key and checks the
/// receipts of the pipeline (`cid`) and of the tampered dispatch (`tamper_cid`). The log's
/// directory.
pub(super) fn verify_receipts(
    dir: &Path,
    receipt_key: &KeyPair,
    cid: &str,
    tamper_cid: &str,
    pr: &mut Printer<'_>,
) -> Step<PathBuf> {
    let log_dir = dir.join("state/receipts");
    if !log_dir.is_dir() {
        return Err(failed(
            "receipts_verified",
            format!("the Hall wrote no receipt log at {}", log_dir.display()),
        ));
    }
    let t = Instant::now();
    let report = verify_log(
        &log_dir,
        &VerifyOptions {
            anchors: vec![receipt_key.public()],
            checkpoints: Vec::new(),
        },
    )
    .map_err(|e| failed("receipts_verified", format!("{}: {e}", log_dir.display())))?;
    let verify_time = t.elapsed();
    if !report.ok() {
        return Err(failed(
            "receipts_verified",
            format!(
                "the receipt log does not verify: {} problem(s), first: {}",
                report.failure_count,
                report
                    .first_failure
                    .as_ref()
                    .map(|f| format!("seq {:?}: {}", f.seq, f.reason))
                    .unwrap_or_default()
            ),
        ));
    }
    let kinds = receipt_kinds(&log_dir).map_err(|e| {
        failed(
            "receipts_verified",
            format!("reading {}: {e}", log_dir.display()),
        )
    })?;
    let count =
        |cid: &str, kind: Kind| kinds.iter().filter(|(c, k)| c == cid && *k == kind).count();
    let pipeline_executed = count(cid, Kind::Executed);
    let tamper_ran = count(tamper_cid, Kind::Intent) + count(tamper_cid, Kind::Executed);
    let tamper_denied = count(tamper_cid, Kind::Denied);
    if pipeline_executed != 5 || tamper_ran != 0 || tamper_denied == 0 {
        return Err(failed(
            "receipts_verified",
            format!(
                "the receipts do not tell the story: {pipeline_executed} executed receipt(s) for the pipeline (expected 5), {tamper_denied} denied and {tamper_ran} intent/executed for the tampered dispatch (expected at least 1 and 0)"
            ),
        ));
    }
    let checkpoints_ok = report.checkpoints.iter().filter(|c| c.ok).count();
    pr.step(
        "receipts_verified",
        &format!(
            "  {} receipts verified (Ed25519 signatures, hash chain, Merkle tree, {checkpoints_ok} signed checkpoints) in {} ms\n                      pipeline: 5 executed under {cid}; tampered dispatch: denied, nothing executed",
            report.records,
            ms(verify_time)
        ),
        json!({
            "records": report.records, "passed": report.passed,
            "signatures_checked": report.signatures_checked, "root": report.root,
            "checkpoints_ok": checkpoints_ok, "pipeline_executed": pipeline_executed,
            "tampered_denied": tamper_denied, "tampered_executed": tamper_ran,
            "log_dir": log_dir, "duration_ms": ms(verify_time),
        }),
    )?;
    Ok(log_dir)
}

/// (correlation id, kind) of every dispatch receipt in a log directory.
fn receipt_kinds(dir: &Path) -> std::io::Result<Vec<(String, Kind)>> {
    use crate::receipt::model::LogLine;
    use crate::receipt::store;
    let mut out = Vec::new();
    for seg in store::list_segments(dir)? {
        let data = store::read_segment(&seg.path)?;
        let (lines, _) = store::split_lines(&data);
        for l in lines {
            let Ok(line) = LogLine::parse(l.bytes) else {
                continue;
            };
            let Ok(bytes) = line.payload_bytes() else {
                continue;
            };
            if let Ok(p) = ReceiptPayload::decode(&bytes)
                && let Some(d) = &p.dispatch
            {
                out.push((d.correlation_id.clone(), p.kind));
            }
        }
    }
    Ok(out)
}

/// The files the `locations` step lists besides the fixed layout.
pub(super) struct Files<'a> {
    pub(super) config: &'a Path,
    pub(super) registry: &'a Path,
    pub(super) trust: &'a Path,
    pub(super) keys: &'a Path,
    pub(super) log: &'a Path,
}

/// The `locations` step: where everything is (and how to verify again when kept).
pub(super) fn locations(
    keep: bool,
    dir: &Path,
    files: &Files<'_>,
    pr: &mut Printer<'_>,
) -> Step<()> {
    let knowledge = find_file(&dir.join("state"), "research.sqlite3", 6);
    pr.text("")?;
    pr.text(&format!(
        "Where everything is, in {}{}:",
        dir.display(),
        if keep {
            ""
        } else {
            " (removed on exit; --keep keeps it)"
        }
    ))?;
    let rows: Vec<(&str, PathBuf, &str)> = vec![
        ("config", files.config.to_path_buf(), ""),
        ("rules", dir.join("rules.json"), ""),
        ("registry", files.registry.to_path_buf(), ""),
        ("trust policy", files.trust.to_path_buf(), ""),
        ("package key", files.keys.join("packages.key"), " (+ .pub)"),
        ("receipt key", files.keys.join("receipts.key"), " (+ .pub)"),
        ("signed packages", dir.join("packages"), ""),
        ("package store", dir.join("state/store"), ""),
        ("receipt log", files.log.to_path_buf(), ""),
        ("knowledge store", knowledge.clone().unwrap_or_default(), ""),
        ("hall log", dir.join("hall.log"), ""),
    ];
    let mut human = String::new();
    for (i, (k, v, note)) in rows.iter().enumerate() {
        if i > 0 {
            human.push('\n');
        }
        let shown = if v.as_os_str().is_empty() {
            "(not found)".to_owned()
        } else {
            v.strip_prefix(dir)
                .map(|r| r.display().to_string())
                .unwrap_or_else(|_| v.display().to_string())
        };
        human.push_str(&format!("  {k:<18}{shown}{note}"));
    }
    if keep {
        human.push_str(&format!(
            "\n  verify again      wcp-hall receipts verify --log {} --pubkey {}",
            files.log.display(),
            files.keys.join("receipts.key.pub").display()
        ));
    }
    let mut locations: serde_json::Map<String, Value> = rows
        .iter()
        .map(|(k, v, _)| (k.replace(' ', "_"), json!(v)))
        .collect();
    locations.insert("directory".into(), json!(dir));
    pr.step("locations", &human, json!({"locations": locations}))
}
