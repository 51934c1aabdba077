//! `wcp-hall demo`: the whole mission in one command, on a fresh machine, in seconds.
//!
//! In a temporary directory (on tmpfs when there is one) the demo does what an operator does,
//! with the same library calls the other commands use: it generates the package-signing and the
//! receipt-signing key, writes a trust policy trusting that key for `org.wcp-hall`, copies each
//! bundled worker package, signs it (awp.v2) and enrolls its record with
//! `attestation.package_root` / `manifest_path`, copies the bundled rules (`policies/rules.json`,
//! the same file `policies/hall.toml` routes with) and writes a `hall.toml`, and starts
//! a real Hall (`wcp-hall serve`, this same executable) on a private socket. Then, as a client
//! of the Hall's HTTP API, it runs the five-worker research pipeline under one correlation id,
//! shows a tampered package refused, an unknown capability failing closed and a REQUIRE_HUMAN
//! request approved through `wcp-hall approvals approve` (a subprocess: the CLI path an operator
//! uses), stops the Hall with SIGTERM and verifies the evidence receipt log offline.
//!
//! Nothing is simulated: if the Hall refuses or a worker fails, the demo stops at that step
//! with the Hall's own code and message and exits 1. Every child is killed and the directory
//! removed on the way out, unless `--keep` — also when the demo is interrupted (Ctrl-C,
//! SIGTERM, SIGHUP: exit 130).
//!
//! Threat model: none beyond the Hall's own. The demo's directory is created fresh (0711 so an
//! unprivileged worker uid can reach the store copies; nothing in it is listable by others, the
//! keys are 0600), the socket is 0600, and the fixture HTTP server listens on 127.0.0.1 only
//! and serves exactly one document.
//!
//! Layout: this module owns the command (`run`), the order of the steps (`run_steps`) and what
//! they share; each step is one function in `setup` (the directory, keys, packages, config,
//! the Hall started), `pipeline` (the research pipeline), `governance` (the refusals and the
//! human approval) or `evidence` (the Hall stopped, the receipts verified, where everything
//! is). `hall` runs the Hall and reads its answers, `fixture` serves the document, `print`
//! prints, `workspace` manages the directory and `interrupt` cleans up after a signal. No step
//! prints except through `Printer`, and none may report a step as done that did not happen.

mod evidence;
mod fixture;
mod governance;
mod hall;
mod interrupt;
mod pipeline;
mod print;
mod setup;
mod workspace;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::json;

use super::{CliError, Out, exit};
use fixture::FixtureServer;
use hall::HallProcess;
use interrupt::{INTERRUPT, INTERRUPTED, guard_interrupts};
use print::Printer;
use workspace::remove_tree;

/// The tenant the demo acts as (mapped to the caller's uid in `[identity]`).
pub const TENANT: &str = "demo";
/// The signer namespace of the bundled workers.
pub const NAMESPACE: &str = "org.wcp-hall";
/// The port the fetcher's record allows; another free port is used (and the enrolled record
/// rewritten) when it is busy.
pub const FIXTURE_PORT: u16 = 18080;
/// The bundled packages, in enrolment order.
pub const PACKAGES: [&str; 6] = [
    "hello",
    "web_fetcher",
    "doc_chunker",
    "embedder",
    "doc_hasher",
    "research_registrar",
];
/// The package the demo tampers with after the pipeline ran.
const TAMPERED: &str = "doc_chunker";
/// A capability no rule mentions.
const UNKNOWN_CAPABILITY: &str = "cap.demo.teleport";
/// The rules the demo's Hall routes with, in the policies directory: the bundled pipeline rules
/// (`policies/rules.json`), the same file `policies/hall.toml` uses. The demo's requests need
/// their dev rules, which ask the policy gate (the bundled Cedar set under `prof.dev.permissive`):
/// `pol.nonprod.allow` allows the pipeline, and `pol.nonprod.restricted-review` answers
/// REQUIRE_HUMAN (gatekeeper) for hello on RESTRICTED data (`rr_hello_restricted_dev`).
pub const RULES_FILE: &str = "rules.json";

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Keep the demo directory (keys, hall.toml, registry, receipt log, knowledge store,
    /// hall.log) instead of removing it.
    #[arg(long)]
    pub keep: bool,
    /// The bundled workers directory (default: workers/ of the source tree this binary was
    /// built from). The rules, profiles and Cedar policies are taken from ../policies next to it.
    #[arg(long, value_name = "DIR")]
    pub workers: Option<PathBuf>,
}

/// Why the demo stopped: the step, what happened, and how to look further.
#[derive(Debug)]
struct Failed {
    step: &'static str,
    message: String,
    hint: Option<String>,
}

fn failed(step: &'static str, message: impl Into<String>) -> Failed {
    Failed {
        step,
        message: message.into(),
        hint: None,
    }
}

impl Failed {
    fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

type Step<T> = Result<T, Failed>;

/// Short form of a hex digest for display.
fn short(hex: &str) -> String {
    let h = hex.strip_prefix("sha256:").unwrap_or(hex);
    if h.len() > 16 {
        format!("{}…", &h[..12])
    } else {
        h.to_owned()
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// One enrolled worker.
struct Enrolled {
    package: &'static str,
    worker_id: String,
    species: String,
    source: PathBuf,
    blast: u32,
    /// Declares relative `filesystem_writes` (persistent directories under `state/data`).
    writes: bool,
}

/// Everything the demo owns; dropping it stops the children and removes the directory.
struct Session {
    dir: PathBuf,
    keep: bool,
    hall: Option<HallProcess>,
    server: Option<FixtureServer>,
}

impl Session {
    /// Stops the children; removes the directory unless kept. Returns whether it is gone.
    fn close(&mut self) -> std::io::Result<bool> {
        self.hall = None;
        if let Some(mut s) = self.server.take() {
            s.shutdown();
        }
        if self.keep {
            return Ok(false);
        }
        remove_tree(&self.dir)?;
        Ok(!self.dir.exists())
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

/// Finds the bundled workers and policies.
fn locate_sources(args: &DemoArgs) -> Result<(PathBuf, PathBuf), CliError> {
    let workers = match &args.workers {
        Some(w) => w.clone(),
        None => {
            let built = Path::new(env!("CARGO_MANIFEST_DIR")).join("workers");
            if !built.is_dir() {
                return Err(CliError::new(
                    exit::NOINPUT,
                    "workers_not_found",
                    format!(
                        "the bundled workers are not at {} (this binary was built elsewhere)",
                        built.display()
                    ),
                )
                .hint("pass --workers DIR (the workers/ directory of a wcp-hall source tree)"));
            }
            built
        }
    };
    let workers = std::path::absolute(&workers).unwrap_or(workers);
    for p in PACKAGES {
        if !workers.join(p).join("record.json").is_file() {
            return Err(CliError::new(
                exit::NOINPUT,
                "workers_not_found",
                format!(
                    "{} has no {p}/record.json: not the bundled workers directory",
                    workers.display()
                ),
            )
            .hint("pass --workers DIR (the workers/ directory of a wcp-hall source tree)"));
        }
    }
    let policies = workers
        .parent()
        .map(|p| p.join("policies"))
        .filter(|p| {
            p.join(RULES_FILE).is_file() && p.join("profiles").is_dir() && p.join("cedar").is_dir()
        })
        .ok_or_else(|| {
            CliError::new(
                exit::NOINPUT,
                "policies_not_found",
                format!(
                    "no policies/{RULES_FILE}, policies/profiles and policies/cedar next to {}",
                    workers.display()
                ),
            )
            .hint("run the demo from a wcp-hall source tree (policies/ sits beside workers/)")
        })?;
    Ok((workers, policies))
}

/// The enrolled worker of a bundled package.
fn by_package<'a>(enrolled: &'a [Enrolled], package: &str) -> Option<&'a Enrolled> {
    enrolled.iter().find(|e| e.package == package)
}

/// Runs every step, in the order the demo tells its story; `session` is filled in as things
/// start so the caller can clean up.
fn run_steps(
    args: &DemoArgs,
    workers_dir: &Path,
    policies_dir: &Path,
    session: &mut Option<Session>,
    pr: &mut Printer<'_>,
) -> Step<()> {
    let started = Instant::now();
    let exe = std::env::current_exe()
        .map_err(|e| failed("preflight", format!("cannot find this executable: {e}")))?;
    let (python, py_version) = setup::preflight_python()?;
    pr.text("wcp-hall demo: the WCP research pipeline, governed end to end")?;

    // Setup: what an operator does once.
    let (s, socket) = setup::workspace(args, session, &python, &py_version, pr)?;
    let dir = s.dir.clone();
    let uid = nix::unistd::geteuid().as_raw();
    setup::kernel(&dir, uid, &py_version, pr)?;
    let keys = setup::keys(&dir, pr)?;
    let trust_path = setup::trust_policy(&dir, &keys.package, pr)?;
    let document = setup::serve_document(workers_dir, s)?;
    let (registry, enrolled) = setup::enroll(&dir, workers_dir, &keys.package, document.port, pr)?;
    setup::state_dirs(&dir, &enrolled)?;
    let config_path = setup::config(&dir, policies_dir, uid, pr)?;
    setup::document(&document, pr)?;
    let hall = setup::start_hall(&exe, &config_path, &socket, &dir, pr)?;
    let hall = &*s.hall.insert(hall);

    // The pipeline.
    let cid = uuid::Uuid::new_v4().to_string();
    pr.text("")?;
    pr.text(&format!("Research pipeline, one correlation id {cid}:"))?;
    let pipeline_started = Instant::now();
    let results = pipeline::run(
        hall,
        &enrolled,
        &document.url,
        &cid,
        &dir,
        s.server.as_ref(),
        pr,
    )?;
    pipeline::again_warm(hall, &document.url, pipeline_started.elapsed(), pr)?;

    // Governance.
    pr.text("")?;
    pr.text("Governance:")?;
    let tamper_cid = governance::tampered_worker(hall, &enrolled, &dir, &results[0], pr)?;
    governance::unknown_capability(hall, pr)?;
    let approval_id = governance::require_human(hall, pr)?;
    governance::approved(hall, &exe, &socket, &approval_id, pr)?;

    // Stop the Hall, then verify what it wrote, offline.
    pr.text("")?;
    pr.text("Evidence:")?;
    evidence::stop_hall(s, pr)?;
    let log_dir = evidence::verify_receipts(&dir, &keys.receipt, &cid, &tamper_cid, pr)?;
    let files = evidence::Files {
        config: &config_path,
        registry: &registry,
        trust: &trust_path,
        keys: &keys.dir,
        log: &log_dir,
    };
    evidence::locations(args.keep, &dir, &files, pr)?;
    pr.text("")?;
    pr.text(&format!(
        "Done in {:.1} s.",
        started.elapsed().as_secs_f64()
    ))?;
    Ok(())
}

/// `wcp-hall demo`.
pub fn run(args: DemoArgs, out: &mut Out) -> Result<u8, CliError> {
    let (workers_dir, policies_dir) = locate_sources(&args)?;
    guard_interrupts();
    let mut session: Option<Session> = None;
    let json = out.json;
    let mut pr = Printer { out };
    let outcome = run_steps(&args, &workers_dir, &policies_dir, &mut session, &mut pr);
    if INTERRUPTED.load(Ordering::Acquire) {
        // The signal thread is cleaning up and will exit 130; a step failing because its Hall
        // was killed is not the story to tell.
        let _wait = INTERRUPT.lock();
        loop {
            std::thread::park();
        }
    }
    let dir = session.as_ref().map(|s| s.dir.clone());
    let removed = match session.as_mut() {
        Some(s) => s.close(),
        None => Ok(false),
    };
    if let Err(f) = outcome {
        if f.step == "output" {
            return Err(CliError::new(exit::IOERR, "output_error", f.message));
        }
        if json {
            let _ = pr.out.json_line(&json!({
                "step": f.step, "ok": false, "error": f.message, "hint": f.hint,
                "dir": dir, "kept": args.keep,
            }));
        }
        let mut e = CliError::new(
            exit::DENIED,
            "demo_failed",
            format!("demo step {:?} failed: {}", f.step, f.message),
        );
        let keep_hint = if args.keep {
            dir.map(|d| format!("everything is kept in {}", d.display()))
        } else {
            Some("rerun with --keep to inspect the directory (hall.log, state/)".to_owned())
        };
        let hint = [f.hint, keep_hint]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>();
        if !hint.is_empty() {
            e = e.hint(hint.join("; "));
        }
        return Err(e);
    }
    let dir = dir.unwrap_or_default();
    match removed {
        Ok(true) => pr.step(
            "cleanup",
            &format!("Removed {}.", dir.display()),
            json!({"dir": dir, "removed": true, "kept": false}),
        ),
        Ok(false) => pr.step(
            "cleanup",
            &format!("Kept {}.", dir.display()),
            json!({"dir": dir, "removed": false, "kept": true}),
        ),
        Err(e) => {
            return Err(CliError::new(
                exit::IOERR,
                "cleanup_failed",
                format!("cannot remove {}: {e}", dir.display()),
            ));
        }
    }
    .map_err(|f| CliError::new(exit::IOERR, "output_error", f.message))?;
    Ok(exit::OK)
}

#[cfg(test)]
mod tests {
    //! Unit tests of the demo: the bundled rules and records it routes with, the envelope summary,
    //! the fixture server and the directory removal.

    use super::hall::{envelope_summary, find_report, route_input};
    use crate::envelope::REPORT_SCHEMA;
    use crate::registry::RegistryRecord;
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::clock::mint_context;
    use crate::conformance::FixedGate;
    use crate::registry::{ControlsScope, Registry};
    use crate::router::{self, GateAnswer, Router, RouterConfig};
    use crate::rules::RuleSet;
    use crate::wcp::RouteInput;

    /// The rules the demo copies: the bundled `policies/rules.json`.
    fn rules() -> RuleSet {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("policies")
            .join(RULES_FILE);
        RuleSet::from_json_str(&std::fs::read_to_string(path).unwrap())
            .expect("the bundled rules load")
    }

    #[test]
    fn the_bundled_rules_load_without_shadows() {
        let r = rules();
        assert_eq!(r.rules().len(), 19);
        assert!(r.shadows().is_empty(), "{:?}", r.shadows());
    }

    fn bundled_registry() -> Registry {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("workers");
        let records = PACKAGES
            .iter()
            .map(|p| {
                let text = std::fs::read_to_string(dir.join(p).join("record.json")).unwrap();
                RegistryRecord::from_json_str(&text).unwrap()
            })
            .collect();
        Registry::new(records, ControlsScope::PerWorker)
    }

    /// Every request the demo sends routes to the intended rule and worker with the bundled
    /// records (a gate that allows; the Hall's real gate is exercised by tests/demo.rs).
    #[test]
    fn demo_requests_route_to_the_intended_rules_and_workers() {
        let rules = rules();
        let registry = bundled_registry();
        let config = RouterConfig {
            require_signatory: true,
            allowed_tenants: [TENANT.to_owned()].into_iter().collect(),
            enforce_privilege_envelopes: true,
            ..RouterConfig::default()
        };
        let gate = FixedGate(GateAnswer {
            decision: "ALLOW".into(),
            policy_version: "test".into(),
            reason: "test".into(),
            supervisor_level: None,
        });
        let router = Router {
            rules: &rules,
            registry: &registry,
            config: &config,
            gate: Some(&gate),
            hashes: None,
            privilege: Some(&registry),
            human_approval: None,
        };
        for (cap, label, rule, species) in [
            (
                "cap.web.fetch",
                "PUBLIC",
                "rr_fetch_dev",
                Some("wrk.web.fetcher"),
            ),
            (
                "cap.doc.chunk",
                "PUBLIC",
                "rr_chunk_dev",
                Some("wrk.doc.chunker"),
            ),
            (
                "cap.ml.embed",
                "PUBLIC",
                "rr_embed_dev",
                Some("wrk.ml.embedder"),
            ),
            (
                "cap.doc.hash",
                "PUBLIC",
                "rr_hash_dev",
                Some("wrk.doc.hasher"),
            ),
            (
                "cap.research.register",
                "PUBLIC",
                "rr_register_dev",
                Some("wrk.research.registrar"),
            ),
            (
                "cap.hello.greet",
                "PUBLIC",
                "rr_hello_dev",
                Some("wrk.hello.greeter"),
            ),
            (
                "cap.hello.greet",
                "RESTRICTED",
                "rr_hello_restricted_dev",
                Some("wrk.hello.greeter"),
            ),
            (UNKNOWN_CAPABILITY, "PUBLIC", "NO_MATCH", None),
        ] {
            let input =
                RouteInput::from_value(&route_input(cap, label, "cid-1", json!({}))).unwrap();
            let d = router::route(&router, &input, &mint_context("t"));
            assert_eq!(
                d.matched_rule_id, rule,
                "{cap} {label}: {:?}",
                d.deny_reason_if_denied
            );
            assert_eq!(d.selected_worker_species_id.as_deref(), species, "{cap}");
            assert_eq!(
                d.denied,
                species.is_none(),
                "{cap}: {:?}",
                d.deny_reason_if_denied
            );
        }
    }

    #[test]
    fn the_envelope_summary_names_what_was_enforced() {
        let r = json!({
            "schema": REPORT_SCHEMA,
            "landlock": {"effective": "enforced", "abi_effective": 6, "tcp_connect_ports": [18080]},
            "network": {"effective": "enforced", "mode": "landlock_tcp_ports"},
            "seccomp": {"effective": "enforced"},
            "pid_namespace": {"effective": "enforced"},
            "cgroup": {"effective": "off"},
            "identity": {"effective": "enforced", "uid": 65534},
            "filesystem": {"writes": [{"declared": "knowledge/", "granted": "/w/state/data/x/knowledge"}]},
            "degraded": [],
        });
        let wrapped = json!({"execution": {"summary": {"envelope": r}}});
        let found = find_report(&wrapped).expect("found anywhere in the answer");
        let (line, data) = envelope_summary(found, Path::new("/w"));
        assert_eq!(
            line,
            "landlock enforced (ABI 6) · network enforced (tcp connect to port 18080 only) · seccomp enforced · pid ns enforced · cgroup off · uid 65534 · writes only state/data/x/knowledge"
        );
        assert_eq!(data["uid"], 65534);
        assert!(find_report(&json!({"execution": {}})).is_none());
    }

    #[test]
    fn the_fixture_server_serves_one_document_and_counts() {
        let mut s = FixtureServer::start(b"hello document\n".to_vec()).unwrap();
        let get = |path: &str| {
            let mut c = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
            write!(c, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
            let mut text = String::new();
            c.read_to_string(&mut text).unwrap();
            text
        };
        let ok = get("/document.txt");
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains("Content-Type: text/plain; charset=utf-8"));
        assert!(ok.ends_with("\r\n\r\nhello document\n"));
        assert!(get("/etc/passwd").starts_with("HTTP/1.1 404"));
        assert_eq!(s.hits(), 1);
        s.shutdown();
    }

    #[test]
    fn remove_tree_removes_read_only_store_copies() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("w");
        let ro = root.join("store/sha256-x/code");
        std::fs::create_dir_all(&ro).unwrap();
        std::fs::write(ro.join("f.py"), "x").unwrap();
        for d in [&ro, &root.join("store/sha256-x")] {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o555)).unwrap();
        }
        remove_tree(&root).unwrap();
        assert!(!root.exists());
        remove_tree(&root).unwrap();
    }
}
