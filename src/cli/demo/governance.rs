//! The governance steps: a package edited after signing is refused before anything runs, an
//! unknown capability fails closed, and a REQUIRE_HUMAN request waits until an operator
//! approves it with `wcp-hall approvals approve` (a subprocess), after which the agent collects
//! the result.
//!
//! Owns these three scenarios; it must not report one as shown unless the Hall answered
//! exactly as expected.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use hyper::Method;
use serde_json::{Value, json};

use super::hall::{
    Dispatched, HallProcess, child_defaults, dispatch, not_completed, policy_ids, route_input,
};
use super::print::Printer;
use super::{Enrolled, Step, TAMPERED, TENANT, UNKNOWN_CAPABILITY, by_package, failed, ms};

/// The `tampered_worker` step: edits a signed package's code and requires the Hall to refuse
/// it (a `DENY_WORKER_*` code, no result). The dispatch's correlation id.
pub(super) fn tampered_worker(
    hall: &HallProcess,
    enrolled: &[Enrolled],
    dir: &Path,
    fetched: &Value,
    pr: &mut Printer<'_>,
) -> Step<String> {
    let victim =
        by_package(enrolled, TAMPERED).ok_or_else(|| failed("tampered_worker", "not enrolled"))?;
    let edited = victim.source.join("code/worker_logic.py");
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&edited)
        .map_err(|e| failed("tampered_worker", format!("{}: {e}", edited.display())))?;
    f.write_all(b"\n# edited after signing by wcp-hall demo: this package must no longer run\n")
        .map_err(|e| failed("tampered_worker", format!("{}: {e}", edited.display())))?;
    drop(f);
    let tamper_cid = uuid::Uuid::new_v4().to_string();
    let d = dispatch(
        hall,
        "tampered_worker",
        &route_input(
            "cap.doc.chunk",
            "PUBLIC",
            &tamper_cid,
            json!({"text": fetched["text"]}),
        ),
    )?;
    let code = d.deny_code().unwrap_or("").to_owned();
    if d.status() != "denied" || !code.starts_with("DENY_WORKER_") || d.body.get("result").is_some()
    {
        return Err(failed(
            "tampered_worker",
            format!(
                "a package edited after signing was not refused: status {}, {}",
                d.status(),
                if code.is_empty() {
                    "no deny code".to_owned()
                } else {
                    code
                }
            ),
        ));
    }
    pr.step(
        "tampered_worker",
        &format!(
            "  tampered worker     {} edited after signing → denied {code}; nothing ran",
            edited.strip_prefix(dir).unwrap_or(&edited).display()
        ),
        json!({
            "worker_id": victim.worker_id, "edited": edited, "status": d.status(),
            "deny_code": code, "message": d.deny_message(), "correlation_id": tamper_cid,
            "ran": false, "duration_ms": ms(d.elapsed),
        }),
    )?;
    Ok(tamper_cid)
}

/// The `unknown_capability` step: a capability no rule mentions is denied with
/// `DENY_NO_MATCHING_RULE`.
pub(super) fn unknown_capability(hall: &HallProcess, pr: &mut Printer<'_>) -> Step<()> {
    let unknown_cid = uuid::Uuid::new_v4().to_string();
    let d = dispatch(
        hall,
        "unknown_capability",
        &route_input(UNKNOWN_CAPABILITY, "PUBLIC", &unknown_cid, json!({})),
    )?;
    if d.status() != "denied" || d.deny_code() != Some("DENY_NO_MATCHING_RULE") {
        return Err(failed(
            "unknown_capability",
            format!(
                "{UNKNOWN_CAPABILITY} was not denied with DENY_NO_MATCHING_RULE: status {}, {:?}",
                d.status(),
                d.deny_code()
            ),
        ));
    }
    pr.step(
        "unknown_capability",
        &format!("  unknown capability  {UNKNOWN_CAPABILITY} → denied DENY_NO_MATCHING_RULE (fail closed)"),
        json!({
            "capability_id": UNKNOWN_CAPABILITY, "status": d.status(),
            "deny_code": "DENY_NO_MATCHING_RULE", "correlation_id": unknown_cid,
            "duration_ms": ms(d.elapsed),
        }),
    )
}

/// The `require_human` step: hello on RESTRICTED data waits for a human. The pending
/// approval's id.
pub(super) fn require_human(hall: &HallProcess, pr: &mut Printer<'_>) -> Step<String> {
    let human_cid = uuid::Uuid::new_v4().to_string();
    let d = dispatch(
        hall,
        "require_human",
        &route_input(
            "cap.hello.greet",
            "RESTRICTED",
            &human_cid,
            json!({"name": "Ada"}),
        ),
    )?;
    let approval_id = d.body["pending_approval_id"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    if d.status() != "pending_approval" || approval_id.is_empty() {
        return Err(failed(
            "require_human",
            format!(
                "hello on RESTRICTED data did not wait for a human: status {}, {:?}: {}",
                d.status(),
                d.deny_code(),
                d.deny_message()
            ),
        ));
    }
    let level = d.body["supervisor_level"]
        .as_str()
        .unwrap_or("?")
        .to_owned();
    let policies = policy_ids(&d.body);
    pr.step(
        "require_human",
        &format!(
            "  human approval      cap.hello.greet on RESTRICTED data → REQUIRE_HUMAN ({level}{}), pending {approval_id}",
            if policies.is_empty() { String::new() } else { format!(", {}", policies.join(", ")) }
        ),
        json!({
            "capability_id": "cap.hello.greet", "data_label": "RESTRICTED", "status": d.status(),
            "supervisor_level": level, "policies": policies, "pending_approval_id": approval_id,
            "matched_rule_id": d.rule(), "correlation_id": human_cid,
        }),
    )?;
    Ok(approval_id)
}

/// The `approved` step: `wcp-hall approvals approve` as an operator runs it, then the agent
/// collects the greeting as the requester.
pub(super) fn approved(
    hall: &HallProcess,
    exe: &Path,
    socket: &Path,
    approval_id: &str,
    pr: &mut Printer<'_>,
) -> Step<()> {
    let t = Instant::now();
    let mut approve = Command::new(exe);
    child_defaults(&mut approve, false);
    let approve = approve
        .args(["--json", "approvals", "approve"])
        .arg(approval_id)
        .arg("--socket")
        .arg(socket)
        .args(["--note", "approved by wcp-hall demo"])
        .env_remove("WCP_HALL_SOCKET")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            failed(
                "approved",
                format!("cannot run wcp-hall approvals approve: {e}"),
            )
        })?;
    let elapsed = t.elapsed();
    if !approve.status.success() {
        return Err(failed(
            "approved",
            format!(
                "`wcp-hall approvals approve {approval_id}` exited {}: {}",
                approve.status.code().unwrap_or(-1),
                String::from_utf8_lossy(&approve.stderr).trim()
            ),
        ));
    }
    let answer: Value = serde_json::from_slice(&approve.stdout).map_err(|e| {
        failed(
            "approved",
            format!("`approvals approve --json` printed no JSON: {e}"),
        )
    })?;
    // The operator's answer says what happened, never the worker's result: that belongs to the
    // agent that asked, which collects it as the requester (its uid, its tenant).
    if answer["approval"]["status"] != "approved" || answer["response"]["status"] != "completed" {
        let d = Dispatched {
            body: answer["response"].clone(),
            elapsed,
        };
        return Err(not_completed("approved", &d));
    }
    let collected = hall
        .call(
            Method::GET,
            &format!("/wcp/approvals/{approval_id}?tenant_id={TENANT}&wait_ms=10000"),
            None,
        )
        .map_err(|e| failed("approved", e))?;
    let elapsed = t.elapsed();
    let response = &collected.body["response"];
    let greeting = response["result"]["greeting"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    if !collected.status.is_success() || response["status"] != "completed" || greeting.is_empty() {
        let d = Dispatched {
            body: response.clone(),
            elapsed,
        };
        return Err(not_completed("approved", &d));
    }
    pr.step(
        "approved",
        &format!(
            "                      `wcp-hall approvals approve {approval_id}` → approved; the agent collected: {greeting:?}"
        ),
        json!({
            "pending_approval_id": approval_id, "approval_status": answer["approval"]["status"],
            "status": response["status"], "greeting": greeting,
            "correlation_id": response["result"]["correlation_id"],
            "duration_ms": ms(elapsed),
        }),
    )
}
