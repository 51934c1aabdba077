//! The setup steps, what an operator does once, with the library calls the other commands use:
//! the workspace, what the kernel can enforce, the keys, the trust policy, the document server,
//! the signed and enrolled packages, the state directories, the configuration checked as the
//! Hall loads it, and the Hall started.
//!
//! Owns the files of the demo's Hall; it must not talk to the Hall's API (the later steps do)
//! and must not print except through [`Printer`].

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::fixture::FixtureServer;
use super::hall::HallProcess;
use super::interrupt::interruptible;
use super::print::Printer;
use super::workspace::{copy_flat_dir, copy_package, create_workspace};
use super::{
    DemoArgs, Enrolled, FIXTURE_PORT, NAMESPACE, PACKAGES, RULES_FILE, Session, Step, TENANT,
    failed, ms, short,
};
use crate::attest::manifest_v2;
use crate::attest::sign::{self, SignRequest};
use crate::attest::{TreeLimits, UtcTime};
use crate::crypto::KeyPair;
use crate::envelope::{HostConfig, Probe};
use crate::policy::WcpBlast;
use crate::registry::RegistryRecord;

/// The Python runtime the Hall will run workers with, probed exactly as `serve` probes it (the
/// demo's `hall.toml` leaves `[envelope] python` at its default; as the worker uid when root),
/// checked before anything starts: without it every run would be refused.
pub(super) fn preflight_python() -> Step<(PathBuf, String)> {
    let section = crate::config::EnvelopeSection::default();
    let worker = crate::snapshot::worker_identity(&section.worker_user)
        .map_err(|e| failed("preflight", e.to_string()))?;
    let python = crate::envelope::PythonRuntime::probe(section.python.as_deref(), Some(worker))
        .map_err(|e| {
            failed(
                "preflight",
                format!("the Hall runs Python workers with [envelope] python: {e}"),
            )
            .hint("install Python 3.8 or later as /usr/bin/python3 (Debian 12 / Ubuntu: apt-get install python3)")
        })?;
    Ok((python.interpreter.clone(), python.version.clone()))
}

/// The `workspace` step: creates the directory, hands it to the session (and to the interrupt
/// handler) for cleanup, and checks the Hall's socket path fits a Unix socket. The session
/// and the socket path.
pub(super) fn workspace<'s>(
    args: &DemoArgs,
    session: &'s mut Option<Session>,
    python: &Path,
    py_version: &str,
    pr: &mut Printer<'_>,
) -> Step<(&'s mut Session, PathBuf)> {
    let (dir, on_tmpfs) = create_workspace()?;
    interruptible(|g| {
        g.dir = Some(dir.clone());
        g.keep = args.keep;
    });
    let s = session.insert(Session {
        dir: dir.clone(),
        keep: args.keep,
        hall: None,
        server: None,
    });
    let socket = dir.join("hall.sock");
    if socket.as_os_str().len() > 100 {
        return Err(failed(
            "workspace",
            format!(
                "the socket path {} is too long for a Unix socket",
                socket.display()
            ),
        )
        .hint("set TMPDIR to a shorter directory"));
    }
    pr.step(
        "workspace",
        &format!(
            "  workspace     {}{}",
            dir.display(),
            if on_tmpfs { " (tmpfs)" } else { "" }
        ),
        json!({"dir": dir, "tmpfs": on_tmpfs, "python": python, "python_version": py_version}),
    )?;
    Ok((s, socket))
}

/// The `kernel` step: what this kernel can enforce, for the reader (the Hall probes again at
/// start).
pub(super) fn kernel(dir: &Path, uid: u32, py_version: &str, pr: &mut Printer<'_>) -> Step<()> {
    let probe = Probe::run(&HostConfig::new(dir.join("state/probe")));
    let ns = &probe.namespaces;
    let ns_list: Vec<&str> = [
        ("user", ns.user),
        ("pid", ns.pid),
        ("net", ns.net),
        ("ipc", ns.ipc),
        ("uts", ns.uts),
    ]
    .iter()
    .filter(|(_, y)| *y)
    .map(|(n, _)| *n)
    .collect();
    let worker_uid = if uid == 0 {
        "workers run as nobody".to_owned()
    } else {
        format!("workers run as uid {uid} in a user namespace")
    };
    pr.step(
        "kernel",
        &format!(
            "  kernel        {}: Landlock ABI {}, seccomp {}, namespaces {}; {worker_uid}; python {py_version}",
            probe.kernel_release,
            probe.landlock.kernel_abi,
            if probe.seccomp.filter { "yes" } else { "no" },
            if ns_list.is_empty() { "none".to_owned() } else { ns_list.join("/") },
        ),
        json!({"probe": probe}),
    )
}

/// The demo's two signing keys, in `keys/` (0700).
pub(super) struct Keys {
    pub(super) dir: PathBuf,
    pub(super) package: KeyPair,
    pub(super) receipt: KeyPair,
}

/// The `keys` step: generates the package-signing and the receipt-signing key (mode 0600).
pub(super) fn keys(dir: &Path, pr: &mut Printer<'_>) -> Step<Keys> {
    let keys = dir.join("keys");
    std::fs::create_dir(&keys)
        .and_then(|()| std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o700)))
        .map_err(|e| failed("keys", format!("cannot create {}: {e}", keys.display())))?;
    let package_key = KeyPair::generate().map_err(|e| failed("keys", e.to_string()))?;
    package_key
        .write(&keys.join("packages.key"))
        .map_err(|e| failed("keys", e.to_string()))?;
    let receipt_key = KeyPair::generate().map_err(|e| failed("keys", e.to_string()))?;
    receipt_key
        .write(&keys.join("receipts.key"))
        .map_err(|e| failed("keys", e.to_string()))?;
    pr.step(
        "keys",
        &format!(
            "  keys          package signing {}, receipt signing {} (Ed25519, mode 0600)",
            short(&package_key.id().0),
            short(&receipt_key.id().0)
        ),
        json!({
            "package_key": keys.join("packages.key"), "package_key_id": package_key.id(),
            "receipt_key": keys.join("receipts.key"), "receipt_key_id": receipt_key.id(),
        }),
    )?;
    Ok(Keys {
        dir: keys,
        package: package_key,
        receipt: receipt_key,
    })
}

/// The `trust_policy` step: trusts the package key for the bundled workers' namespace, and
/// loads the file as the Hall will. Its path.
pub(super) fn trust_policy(
    dir: &Path,
    package_key: &KeyPair,
    pr: &mut Printer<'_>,
) -> Step<PathBuf> {
    let trust = json!({
        "schema": crate::attest::trust::SCHEMA,
        "version": 1,
        "namespaces": {
            NAMESPACE: {
                "threshold": 1,
                "keys": [{
                    "public_key": package_key.public().to_base64(),
                    "key_id": package_key.id(),
                    "comment": "wcp-hall demo package signing key",
                }],
            }
        },
    });
    let trust_path = dir.join("trust.json");
    std::fs::write(&trust_path, format!("{trust:#}\n"))
        .map_err(|e| failed("trust_policy", format!("{}: {e}", trust_path.display())))?;
    crate::attest::TrustPolicy::load(&trust_path)
        .map_err(|e| failed("trust_policy", e.to_string()))?;
    pr.step(
        "trust_policy",
        &format!(
            "  trust policy  {NAMESPACE} → key {} (threshold 1)",
            short(&package_key.id().0)
        ),
        json!({"path": trust_path, "namespace": NAMESPACE, "key_id": package_key.id()}),
    )?;
    Ok(trust_path)
}

/// The document the fetcher fetches, as served.
pub(super) struct Document {
    pub(super) len: usize,
    pub(super) url: String,
    pub(super) port: u16,
}

/// Starts the fixture server with the sample document (before enrolment: the fetcher's
/// enrolled record names its port) and hands it to the session.
pub(super) fn serve_document(workers_dir: &Path, s: &mut Session) -> Step<Document> {
    let document = std::fs::read(workers_dir.join("sample/document.txt")).map_err(|e| {
        failed(
            "document",
            format!(
                "cannot read {}: {e}",
                workers_dir.join("sample/document.txt").display()
            ),
        )
    })?;
    let server = FixtureServer::start(document.clone())
        .map_err(|e| failed("document", format!("cannot listen on 127.0.0.1: {e}")))?;
    let port = server.port;
    let url = server.url();
    s.server = Some(server);
    Ok(Document {
        len: document.len(),
        url,
        port,
    })
}

/// The `enroll` steps: every bundled package copied, signed (awp.v2) and enrolled, one step
/// each. The registry directory and the enrolled workers.
pub(super) fn enroll(
    dir: &Path,
    workers_dir: &Path,
    package_key: &KeyPair,
    port: u16,
    pr: &mut Printer<'_>,
) -> Step<(PathBuf, Vec<Enrolled>)> {
    let registry = dir.join("registry");
    std::fs::create_dir(&registry).map_err(|e| {
        failed(
            "enroll",
            format!("cannot create {}: {e}", registry.display()),
        )
    })?;
    let mut enrolled: Vec<Enrolled> = Vec::new();
    for package in PACKAGES {
        enrolled.push(enroll_package(
            dir,
            workers_dir,
            &registry,
            package,
            package_key,
            port,
            pr,
        )?);
    }
    Ok((registry, enrolled))
}

/// One `enroll` step: copies the package, signs it, and enrolls its record with the package
/// root and manifest (and the fixture's actual port when the preferred one was busy).
fn enroll_package(
    dir: &Path,
    workers_dir: &Path,
    registry: &Path,
    package: &'static str,
    package_key: &KeyPair,
    port: u16,
    pr: &mut Printer<'_>,
) -> Step<Enrolled> {
    let source = dir.join(format!("packages/{package}"));
    copy_package(&workers_dir.join(package), &source)
        .map_err(|e| failed("enroll", format!("copying {package}: {e}")))?;
    let template_text = std::fs::read_to_string(source.join("record.json"))
        .map_err(|e| failed("enroll", format!("{package}/record.json: {e}")))?;
    let mut record: Value = serde_json::from_str(&template_text)
        .map_err(|e| failed("enroll", format!("{package}/record.json: {e}")))?;
    let worker_id = record["worker_id"].as_str().unwrap_or_default().to_owned();
    let species = record["worker_species_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let (tree, _statement, envelope) = sign::sign_v2(
        &SignRequest {
            package_root: &source,
            worker_id: &worker_id,
            worker_species_id: &species,
            worker_version: env!("CARGO_PKG_VERSION"),
            build_source: "local",
            built_at: UtcTime::now(),
            expires_at: None,
            limits: TreeLimits::default(),
        },
        &[package_key],
    )
    .map_err(|e| failed("enroll", format!("signing {package}: {e}")))?;
    let manifest = source.join(manifest_v2::DEFAULT_FILE_NAME);
    sign::write_manifest(&manifest, &sign::envelope_text(&envelope))
        .map_err(|e| failed("enroll", format!("{}: {e}", manifest.display())))?;
    // The enrolled copy (never the template, which is part of the signed package).
    record["attestation"] = json!({
        "code_hash": tree.digest,
        "hash_method": "awp.v1 package tree (sha256), signed as awp.v2",
        "attested_at": UtcTime::now().to_string(),
        "attested_by": package_key.id(),
        "package_root": source,
        "manifest_path": manifest,
    });
    let mut egress_note = String::new();
    if let Some(list) = record["privilege_envelope"]["network_egress"].as_array_mut() {
        for item in list.iter_mut() {
            if item.as_str() == Some(&format!("127.0.0.1:{FIXTURE_PORT}")) && port != FIXTURE_PORT {
                *item = json!(format!("127.0.0.1:{port}"));
            }
        }
        egress_note = format!(
            ", egress {}",
            list.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(",")
        );
    }
    let parsed = RegistryRecord::from_value(&record)
        .map_err(|e| failed("enroll", format!("{package}: {e}")))?;
    crate::registry::enroll_record(registry, &parsed)
        .map_err(|e| failed("enroll", format!("{package}: {e}")))?;
    let blast = parsed
        .blast_radius
        .as_ref()
        .map(|b| WcpBlast::from_radius(b).total())
        .unwrap_or(0);
    pr.step(
        "enroll",
        &format!(
            "  enrolled      {worker_id:<34} awp.v2 {}, blast {blast}{egress_note}",
            short(&tree.digest)
        ),
        json!({
            "package": package, "worker_id": worker_id, "worker_species_id": species,
            "package_hash": tree.digest, "manifest": manifest, "blast": blast,
            "network_egress": record["privilege_envelope"]["network_egress"],
        }),
    )?;
    Ok(Enrolled {
        package,
        worker_id,
        species,
        source,
        blast,
        writes: parsed
            .privilege_envelope
            .as_ref()
            .is_some_and(|p| p.filesystem_writes.iter().any(|w| !w.starts_with('/'))),
    })
}

/// The state directory, laid out so the unprivileged worker uid can reach what the runner
/// hands it: `state/data/<worker_id>/<dir>` for a worker's persistent writable directories
/// (the runner creates and chowns the leaf; every directory above it must be traversable).
pub(super) fn state_dirs(dir: &Path, enrolled: &[Enrolled]) -> Step<()> {
    let mut traversable = vec![dir.join("state"), dir.join("state/data")];
    for e in enrolled {
        if e.writes {
            traversable.push(dir.join("state/data").join(&e.worker_id));
        }
    }
    for d in &traversable {
        std::fs::create_dir_all(d)
            .and_then(|()| std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o711)))
            .map_err(|e| failed("config", format!("cannot create {}: {e}", d.display())))?;
    }
    Ok(())
}

/// The `config` step: the rules, profiles, Cedar policies and `hall.toml`, checked as the Hall
/// will load them. The path of `hall.toml`.
pub(super) fn config(
    dir: &Path,
    policies_dir: &Path,
    uid: u32,
    pr: &mut Printer<'_>,
) -> Step<PathBuf> {
    std::fs::copy(policies_dir.join(RULES_FILE), dir.join("rules.json")).map_err(|e| {
        failed(
            "config",
            format!("copying {}: {e}", policies_dir.join(RULES_FILE).display()),
        )
    })?;
    for sub in ["profiles", "cedar"] {
        copy_flat_dir(
            &policies_dir.join(sub),
            &dir.join(format!("policies/{sub}")),
        )
        .map_err(|e| failed("config", format!("copying policies/{sub}: {e}")))?;
    }
    let config_path = dir.join("hall.toml");
    std::fs::write(&config_path, hall_toml(uid))
        .map_err(|e| failed("config", format!("{}: {e}", config_path.display())))?;
    let loaded = crate::snapshot::Loaded::load(&config_path, 1)
        .map_err(|e| failed("config", e.to_string()))?;
    pr.step(
        "config",
        &format!(
            "  hall.toml     dev → prof.dev.permissive, worker attestation required, {} rules ({} shadowed), {} workers",
            loaded.rules.rules().len(),
            loaded.rules.shadows().len(),
            loaded.registry.records().len()
        ),
        json!({
            "config": config_path, "rules": loaded.rules.rules().len(),
            "shadowed_rules": loaded.rules.shadows().len(),
            "workers": loaded.registry.records().len(), "profile_dev": "prof.dev.permissive",
        }),
    )?;
    drop(loaded);
    Ok(config_path)
}

/// The `document` step: where the fetcher will find the document.
pub(super) fn document(doc: &Document, pr: &mut Printer<'_>) -> Step<()> {
    let (url, port) = (&doc.url, doc.port);
    pr.step(
        "document",
        &format!(
            "  document      {url} ({} bytes, served by the demo)",
            doc.len
        ),
        json!({"url": url, "bytes": doc.len, "port": port, "preferred_port": port == FIXTURE_PORT}),
    )
}

/// The `hall_started` step: `wcp-hall serve` (this executable) on the private socket, healthy.
pub(super) fn start_hall(
    exe: &Path,
    config_path: &Path,
    socket: &Path,
    dir: &Path,
    pr: &mut Printer<'_>,
) -> Step<HallProcess> {
    let t = Instant::now();
    let mut hall = HallProcess::start(exe, config_path, socket, &dir.join("hall.log"))?;
    let pid = hall.pid();
    interruptible(|g| g.hall_pid = Some(pid));
    let health = hall.wait_healthy(Duration::from_secs(20))?;
    let startup = t.elapsed();
    pr.step(
        "hall_started",
        &format!(
            "  hall          pid {} on {} (ready in {} ms)",
            hall.pid(),
            socket.display(),
            ms(startup)
        ),
        json!({"pid": hall.pid(), "socket": socket, "startup_ms": ms(startup), "health": health}),
    )?;
    Ok(hall)
}

/// The demo's `hall.toml`: a complete Hall in one directory, routing for the calling uid.
fn hall_toml(uid: u32) -> String {
    format!(
        r#"# Written by `wcp-hall demo`: a complete Hall in one directory. Relative paths are relative
# to this file.

[hall]
require_signatory = true
allowed_tenants = ["{TENANT}"]
# Every worker package is verified against its awp.v2 signature and the trust policy on every
# dispatch, and runs from the verified read-only copy in the store.
require_worker_attestation = true
enforce_correlation_id = true
enforce_required_controls = true
enforce_blast_scoring_in_prod = true
enforce_privilege_envelopes = true

[paths]
rules = "rules.json"
registry_dir = "registry"
state_dir = "state"
profiles_dir = "policies/profiles"

[profiles]
dev = "prof.dev.permissive"

[server]
socket = "hall.sock"
socket_mode = "0600"
shutdown_grace_ms = 5000

[identity]
operator_uids = [{uid}]

[[identity.peers]]
uid = {uid}
tenants = ["{TENANT}"]

[approvals]
# Answer "pending" at once: the demo approves through `wcp-hall approvals approve`.
wait_ms = 0
timeout_ms = 600000

[attestation]
trust_policy = "trust.json"
store_dir = "state/store"
recheck_seconds = 0

[receipts]
log_dir = "state/receipts"
signing_key = "keys/receipts.key"
checkpoint_every = 1000
checkpoint_interval_secs = 0

[envelope]
runs_dir = "state/runs"
data_dir = "state/data"

[warm]
# The pipeline's workers are started ahead of their requests, in the same envelope as a cold
# run, one request per process: the demo's second pass shows what that saves.
workers = ["wrk.web.fetcher", "wrk.doc.chunker", "wrk.ml.embedder", "wrk.doc.hasher", "wrk.research.registrar"]
per_worker = 1
"#
    )
}
