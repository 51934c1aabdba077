//! The research pipeline: five dispatches under one correlation id (fetch, chunk, embed, hash,
//! register), each request built from the earlier results as `workers/README.md` maps them.
//!
//! Owns the pipeline's requests and what each step shows (the decision, the envelope, the
//! result, the receipt); it must not accept a result that does not carry the correlation id or
//! a run whose envelope report is missing.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::fixture::FixtureServer;
use super::hall::{
    HallProcess, dispatch, envelope_summary, find_report, not_completed, policy_ids, route_input,
};
use super::print::Printer;
use super::{Enrolled, Step, by_package, failed, ms, short};

/// The pipeline's capabilities and the packages that serve them, in order.
const STEPS: [(&str, &str); 5] = [
    ("cap.web.fetch", "web_fetcher"),
    ("cap.doc.chunk", "doc_chunker"),
    ("cap.ml.embed", "embedder"),
    ("cap.doc.hash", "doc_hasher"),
    ("cap.research.register", "research_registrar"),
];

/// The `pipeline` steps: runs the five dispatches, one step each. Their results, in order.
pub(super) fn run(
    hall: &HallProcess,
    enrolled: &[Enrolled],
    url: &str,
    cid: &str,
    dir: &Path,
    server: Option<&FixtureServer>,
    pr: &mut Printer<'_>,
) -> Step<Vec<Value>> {
    let mut chain = 0u32;
    let mut results: Vec<Value> = Vec::new();
    for (i, (cap, package)) in STEPS.iter().enumerate() {
        let request = request(i, url, &results);
        let d = dispatch(hall, "pipeline", &route_input(cap, "PUBLIC", cid, request))?;
        if d.status() != "completed" {
            return Err(not_completed("pipeline", &d).hint(format!(
                "step {}/5 ({cap}); the Hall's log is {}",
                i + 1,
                hall.log.display()
            )));
        }
        let result = d.body["result"].clone();
        if result["correlation_id"] != json!(cid) {
            return Err(failed(
                "pipeline",
                format!(
                    "{cap}: the result carries correlation id {} instead of {cid}",
                    result["correlation_id"]
                ),
            ));
        }
        let report = find_report(&d.body).ok_or_else(|| {
            failed(
                "pipeline",
                format!("{cap}: the Hall's answer carries no envelope report, so the demo cannot show what was enforced"),
            )
        })?;
        let (env_line, env_json) = envelope_summary(report, dir);
        let worker = by_package(enrolled, package)
            .ok_or_else(|| failed("pipeline", "worker not enrolled"))?;
        chain += worker.blast;
        let what = outcome(i, &result, &results, server)?;
        // The Hall's own blast accounting when the gate spoke (WCP §7: the chain adds up).
        let gate_blast = &d.body["policy"]["blast"];
        let blast = gate_blast["worker"]
            .as_u64()
            .unwrap_or(u64::from(worker.blast));
        let chain_total = gate_blast["total"].as_u64().unwrap_or(u64::from(chain));
        let policies = policy_ids(&d.body);
        let worker_ms = d.body["execution"]["summary"]["duration_ms"].as_u64();
        let mut human = format!(
            "  [{}/5] {cap} → {} ({})\n        decision  allowed: rule {}{}; blast {blast} (chain {chain_total})\n        envelope  {env_line}",
            i + 1,
            worker.species,
            worker.worker_id,
            d.rule(),
            if policies.is_empty() {
                String::new()
            } else {
                format!(", policy {}", policies.join(", "))
            },
        );
        if let Some(deg) = env_json["degraded"].as_array().filter(|a| !a.is_empty()) {
            for line in deg {
                human.push_str(&format!(
                    "\n        not enforced on this host: {}",
                    line.as_str().unwrap_or("?")
                ));
            }
        }
        human.push_str(&format!(
            "\n        result    {what}\n        took      {} ms",
            ms(d.elapsed)
        ));
        if let Some(w) = worker_ms {
            human.push_str(&format!(" (worker {w} ms)"));
        }
        if let Some(r) = d.body["execution"].get("receipt") {
            human.push_str(&format!(", receipt seq {}", r["seq"]));
        }
        pr.step(
            "pipeline",
            &human,
            json!({
                "index": i + 1, "capability_id": cap, "worker_id": worker.worker_id,
                "worker_species_id": worker.species, "status": d.status(), "decision": "allowed",
                "matched_rule_id": d.rule(), "policies": policies, "blast": blast,
                "chain_blast": chain_total, "chain_blast_expected": chain,
                "correlation_id": result["correlation_id"], "envelope": env_json,
                "duration_ms": ms(d.elapsed), "worker_duration_ms": worker_ms, "summary": what,
                "receipt": d.body["execution"].get("receipt"),
            }),
        )?;
        results.push(result);
    }
    Ok(results)
}

/// The `warm` step: the five dispatches again under a new correlation id, once `[warm]` has an
/// instance of each worker loaded and waiting (`wcp_hall_warm_settled`; the demo's `hall.toml`
/// keeps each of them warm): the same governed pipeline without five interpreter start-ups.
/// `cold` is the first pass's time.
pub(super) fn again_warm(
    hall: &HallProcess,
    url: &str,
    cold: Duration,
    pr: &mut Printer<'_>,
) -> Step<()> {
    // The first pass taught the pool each worker's key; its instances start in the background.
    let deadline = Instant::now() + Duration::from_secs(20);
    let settled = |hall: &HallProcess| -> f64 {
        hall.call(hyper::Method::GET, "/metrics", None)
            .ok()
            .and_then(|a| {
                a.body
                    .as_str()?
                    .lines()
                    .find_map(|l| l.strip_prefix("wcp_hall_warm_settled "))?
                    .parse()
                    .ok()
            })
            .unwrap_or(0.0)
    };
    while settled(hall) < STEPS.len() as f64 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let cid = uuid::Uuid::new_v4().to_string();
    let mut results: Vec<Value> = Vec::new();
    let mut warm = 0;
    let mut each = Vec::new();
    let started = Instant::now();
    for (i, (cap, _)) in STEPS.iter().enumerate() {
        let d = dispatch(
            hall,
            "warm",
            &route_input(cap, "PUBLIC", &cid, request(i, url, &results)),
        )?;
        if d.status() != "completed" {
            return Err(not_completed("warm", &d));
        }
        let report = find_report(&d.body);
        if report.is_some_and(|r| r["instance"]["kind"] == "warm") {
            warm += 1;
        }
        each.push(json!({
            "capability_id": cap, "duration_ms": ms(d.elapsed),
            "worker_duration_ms": d.body["execution"]["summary"]["duration_ms"],
            "instance": report.map(|r| r["instance"].clone()),
            "hall_phases_us": d.body["execution"]["hall_phases_us"],
        }));
        results.push(d.body["result"].clone());
    }
    let took = started.elapsed();
    pr.step(
        "warm",
        &format!(
            "  Again, correlation id {cid}, with each worker started ahead of its request\n  \
             ([warm]: the same envelope, one request per process): {warm} of 5 steps warm, \
             {} ms for all five (the first pass: {} ms)",
            ms(took),
            ms(cold)
        ),
        json!({
            "correlation_id": cid, "steps": STEPS.len(), "warm_steps": warm,
            "duration_ms": ms(took), "cold_duration_ms": ms(cold), "each": each,
        }),
    )
}

/// The request of step `i`: the mapping of workers/README.md, every field a copy of an earlier
/// result's field.
fn request(i: usize, url: &str, results: &[Value]) -> Value {
    let f = results.first().cloned().unwrap_or(Value::Null);
    let c = results.get(1).cloned().unwrap_or(Value::Null);
    let e = results.get(2).cloned().unwrap_or(Value::Null);
    let h = results.get(3).cloned().unwrap_or(Value::Null);
    match i {
        0 => json!({"url": url}),
        1 => json!({"text": f["text"], "max_chars": 400, "overlap": 80}),
        2 => json!({"chunks": c["chunks"]}),
        3 => json!({"text": f["text"], "chunks": c["chunks"]}),
        _ => json!({
            "title": f["title"], "source_url": f["url"],
            "doc_sha256": h["document_sha256"], "merkle_root": h["merkle_root"],
            "chunks": c["chunks"], "embeddings": e["embeddings"],
        }),
    }
}

/// What step `i` produced, in one line; the hash step must agree with the fetch.
fn outcome(
    i: usize,
    result: &Value,
    results: &[Value],
    server: Option<&FixtureServer>,
) -> Step<String> {
    let f = results.first().cloned().unwrap_or(Value::Null);
    Ok(match i {
        0 => {
            let served = server.map_or(0, FixtureServer::hits);
            format!(
                "fetched {} bytes ({}), sha256 {}; the demo's server saw {served} request{}",
                result["bytes"],
                result["content_type"].as_str().unwrap_or("?"),
                short(result["sha256"].as_str().unwrap_or("")),
                if served == 1 { "" } else { "s" }
            )
        }
        1 => format!(
            "{} chunks (max 400 characters, overlap 80)",
            result["count"]
        ),
        2 => format!(
            "{} embeddings × {} dimensions ({})",
            result["count"],
            result["dimensions"],
            result["method"].as_str().unwrap_or("?")
        ),
        3 => {
            if result["document_sha256"] != f["sha256"] {
                return Err(failed(
                    "pipeline",
                    "the document hash differs from the fetched body's hash",
                ));
            }
            format!(
                "Merkle root {} over {} chunks; document sha256 matches the fetch",
                short(result["merkle_root"].as_str().unwrap_or("")),
                result["chunk_count"]
            )
        }
        _ => format!(
            "{} {} in {} (documents in the store: {})",
            result["record_id"].as_str().unwrap_or("?"),
            if result["created"] == true {
                "registered"
            } else {
                "already registered"
            },
            result["store_path"].as_str().unwrap_or("?"),
            result["records_total"]
        ),
    })
}
