//! The Hall's runner: what happens to an allowed, non-dry-run decision.
//!
//! verify the package → intent receipt (durable) → pick the bootstrap from the package's layout
//! (Python or native, [`package_bootstrap`]) → run the store copy under the privilege envelope →
//! outcome receipt (durable) → answer. Threat model: nothing runs that was not
//! verified against its signed manifest immediately before the run, and it runs from the
//! read-only store copy, never the enrolled source; nothing runs unless its intent is durable in
//! the receipt log (the Hall fails closed when the log cannot be written); an envelope the
//! profile requires but the kernel cannot give refuses the run; every run, successful or not,
//! ends with an outcome receipt (or, after a crash, the log's recovery writes `aborted`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;
use serde_json::{Value, json};

use super::approvals::{now_ms, rfc3339_ms};
use super::otel;
use super::{RunOutcome, RunRequest};
use crate::envelope::{self, Envelope, Identity};
use crate::receipt::model::{Caller, Execution, PackageRef, Timings};
use crate::receipt::{Dispatch, Outcome, ReceiptLog};
use crate::registry::{PrivilegeEnvelope, RegistryRecord};

/// Runs workers for the daemon.
pub struct HallRunner {
    pub envelope: Arc<Envelope>,
    /// Warm instances of `[warm] workers` (`None`: every run is cold).
    pub warm: Option<Arc<super::warm::WarmPool>>,
    pub receipts: Arc<ReceiptLog>,
    /// `<data_dir>/<worker_id>/<dir>` holds workers' persistent writable directories.
    pub data_dir: PathBuf,
    /// The uid/gid workers run as (when the Hall is root).
    pub worker: Identity,
    /// What a worker may keep in its persistent directories, checked before each run (0: no
    /// quota).
    pub data_quota_bytes: u64,
}

/// The envelope's stages, in order, as `wcp.envelope.stage` events of the run's span: the
/// stage and its process, and its outcome and errno only when it did not simply succeed (a
/// run has about twenty stages; the events are most of what a traced dispatch exports).
fn stage_events(span: &otel::Child, stages: &[envelope::report::StageReport]) {
    if !span.trace().is_recording() {
        return;
    }
    for s in stages {
        let mut attrs = vec![
            otel::kv("wcp.stage", s.stage.clone()),
            otel::kv("wcp.stage.process", s.process.clone()),
        ];
        if s.outcome != "ok" {
            attrs.push(otel::kv("wcp.stage.outcome", s.outcome.clone()));
        }
        if let Some(errno) = s.errno {
            attrs.push(otel::kv("wcp.stage.errno", i64::from(errno)));
        }
        span.event("wcp.envelope.stage", attrs);
    }
}

/// The receipt's caller from the kernel-verified peer.
pub fn caller(peer: &crate::snapshot::identity::Peer) -> Caller {
    Caller {
        uid: peer.uid,
        gid: peer.gid,
        pid: peer.pid.and_then(|p| u32::try_from(p).ok()).unwrap_or(0),
    }
}

/// Why the runner could not produce a [`RunOutcome`]. Only `hall::dispatch` turns it into an
/// HTTP answer; [`RunError::code`] is the stable code every client sees.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Refused before anything ran: the package cannot be verified or has no usable
    /// entrypoint, a persistent write directory is unsafe, … (`code` says which). Before the
    /// intent receipt the caller gets it as an error; after it, the run ends `aborted` with it.
    #[error("{message}")]
    Refused { code: &'static str, message: String },
    /// The receipt log cannot record the intent or the outcome (`what` says which).
    #[error("{what}: {source}")]
    Receipt {
        what: &'static str,
        source: crate::receipt::LogError,
    },
    /// A state the Hall's own checks should have made impossible (a bug).
    #[error("{0}")]
    Internal(String),
}

impl RunError {
    /// The stable code: the refusal's own, `receipt_invalid` (the Hall built a receipt its model
    /// refuses: a bug), `receipt_log_unavailable`, or `internal_error`.
    pub fn code(&self) -> &'static str {
        match self {
            RunError::Refused { code, .. } => code,
            RunError::Receipt {
                source: crate::receipt::LogError::Invalid(_),
                ..
            } => "receipt_invalid",
            RunError::Receipt { .. } => "receipt_log_unavailable",
            RunError::Internal(_) => "internal_error",
        }
    }
}

fn failure(code: &'static str, message: impl Into<String>) -> RunError {
    RunError::Refused {
        code,
        message: message.into(),
    }
}

fn receipt_error(source: crate::receipt::LogError, what: &'static str) -> RunError {
    RunError::Receipt { what, source }
}

impl HallRunner {
    /// Opens each relative `filesystem_writes` entry as a persistent directory of this worker
    /// (`<data_dir>/<worker_id>/<entry>`), without following links, created for and owned by
    /// the worker's uid ([`envelope::grant::open_persistent`], which states the threat model).
    /// The envelope grants these from the descriptors opened here. Absolute entries are not
    /// persistent: the envelope maps them under the run directory.
    fn persistent_writes(
        &self,
        record: &RegistryRecord,
        declared: &PrivilegeEnvelope,
    ) -> Result<Vec<Arc<envelope::grant::OpenedWrite>>, RunError> {
        let relative: Vec<String> = declared
            .filesystem_writes
            .iter()
            .filter(|e| !Path::new(e.as_str()).is_absolute())
            .cloned()
            .collect();
        let hall_uid = nix::unistd::geteuid().as_raw();
        let owners = envelope::grant::Owners {
            hall_uid,
            worker_uid: if hall_uid == 0 {
                self.worker.uid
            } else {
                hall_uid
            },
            worker_gid: if hall_uid == 0 {
                self.worker.gid
            } else {
                nix::unistd::getegid().as_raw()
            },
        };
        envelope::grant::open_persistent(&self.data_dir, &record.worker_id, &relative, owners)
            .and_then(|v| self.check_quota(&record.worker_id, v))
            .map(|v| v.into_iter().map(Arc::new).collect())
            .map_err(|e| {
                let message = format!("{}: {e}", record.worker_id);
                match e {
                    envelope::grant::GrantError::Io { .. } => {
                        tracing::error!(worker_id = %record.worker_id, "{message}");
                        failure(e.code(), message)
                    }
                    _ => {
                        tracing::warn!(worker_id = %record.worker_id, "refused: {message}");
                        failure(e.code(), message)
                    }
                }
            })
    }
}

impl HallRunner {
    /// Threat model: a worker that fills its persistent directories run after run until the
    /// disk the receipt log lives on is full. Before each run its usage is measured
    /// ([`envelope::grant::usage`]) and a worker at or over `data_quota_bytes` is refused with
    /// `write_quota_exceeded`. Within one run its writes are bounded per file (RLIMIT_FSIZE),
    /// not in total: the report says so.
    fn check_quota(
        &self,
        worker_id: &str,
        mut opened: Vec<envelope::grant::OpenedWrite>,
    ) -> Result<Vec<envelope::grant::OpenedWrite>, envelope::grant::GrantError> {
        if self.data_quota_bytes == 0 || opened.is_empty() {
            return Ok(opened);
        }
        let mut total: u64 = 0;
        for o in &mut opened {
            let used = envelope::grant::usage(&o.dir)?.unwrap_or(u64::MAX);
            o.used_bytes = Some(used);
            total = total.saturating_add(used);
        }
        if total >= self.data_quota_bytes {
            return Err(envelope::grant::GrantError::Quota(format!(
                "{worker_id} keeps {total} bytes in its persistent directories ({}), at or over \
                 its quota of {} bytes: remove data there or raise [envelope] data_quota_bytes",
                opened
                    .iter()
                    .map(|o| o.dir.path.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                self.data_quota_bytes
            )));
        }
        Ok(opened)
    }
}

impl HallRunner {
    /// Verifies, receipts and runs one allowed, non-dry-run request. Blocking: called on a
    /// blocking thread.
    pub fn run(&self, request: RunRequest) -> Result<RunOutcome, RunError> {
        let RunRequest {
            peer,
            input,
            decision,
            policy,
            verified,
            run_limits,
            loaded,
            trace,
            registry,
        } = request;
        let species = decision.selected_worker_species_id.clone().ok_or_else(|| {
            RunError::Internal("an allowed decision without a selected worker".into())
        })?;
        let record = loaded
            .registry
            .records_of(&species)
            .next()
            .cloned()
            .ok_or_else(|| RunError::Internal(format!("no enrolled record for {species}")))?;
        let worker_blast = record.blast_radius.as_ref().map_or(0, |b| {
            crate::policy::blast::WcpBlast::from_radius(b).total()
        });

        // Where the Hall's time goes, per phase (µs), returned with the execution.
        let mut phases = Phases::start(trace);
        // 1. Verify the package now, and run only its read-only store copy.
        let attested = loaded.attested.as_ref().ok_or_else(|| {
            failure(
                "attestation_unconfigured",
                "workers run only from verified packages: set [attestation] trust_policy in hall.toml",
            )
        })?;
        // This dispatch's verification (from routing), or one now: never two.
        let report = verified
            .or_else(|| attested.verify(&species))
            .ok_or_else(|| {
                failure(
                    "package_unknown",
                    format!(
                        "{} has no package to run: enroll its record with attestation.package_root",
                        record.worker_id
                    ),
                )
            })?;
        let store_path = match (&report.store_path, report.ok) {
            (Some(p), true) => p.clone(),
            _ => {
                // Nothing started from an earlier verification of this worker serves again.
                if let Some(w) = &self.warm {
                    w.discard_worker(&species);
                }
                return Err(failure(
                    "attestation_failed",
                    format!(
                        "{}: {}",
                        report
                            .code
                            .map(|c| c.as_str().to_owned())
                            .unwrap_or_default(),
                        report.message
                    ),
                ));
            }
        };
        let package = PackageRef {
            digest: report
                .package_hash
                .clone()
                .map(|h| format!("sha256:{h}"))
                .unwrap_or_default(),
            manifest_digest: report
                .manifest_sha256
                .clone()
                .map(|h| format!("sha256:{h}")),
            signer_key_ids: report.signer_key_ids.iter().map(|k| k.0.clone()).collect(),
        };

        phases.mark_with(
            "verify",
            vec![
                otel::kv("wcp.worker_id", record.worker_id.clone()),
                otel::kv("wcp.worker_species_id", species.clone()),
                otel::kv("wcp.package_digest", package.digest.clone()),
                otel::kv("wcp.attestation_cached", report.cached),
            ],
        );
        // 2. The intent, durable before anything starts.
        let mut dispatch = Dispatch::from_decision(
            &decision,
            Some(record.worker_id.clone()),
            caller(&peer),
            rfc3339_ms(now_ms()),
        );
        dispatch.package = Some(package.clone());
        dispatch.trace = phases.trace.ids();
        dispatch.decision.policy_version = policy.as_ref().map(|p| p.policy_version.clone());
        dispatch.registry_service = registry;
        let mut intent = self.receipts.append_intent(dispatch).map_err(|e| {
            receipt_error(
                e,
                "the receipt log cannot record the intent, so nothing ran",
            )
        })?;

        phases.mark_with(
            "intent_receipt",
            vec![otel::kv("wcp.receipt_seq", intent.seq() as i64)],
        );
        // The run's span is open while the worker runs; the worker's TRACEPARENT names it.
        let run_span = phases.trace.child("wcp.envelope_run");
        // 3. Run under the envelope the profile asks for.
        // The profile's own types, resolved with the decision: nothing to convert.
        let (limits, minimums) =
            run_limits.unwrap_or((envelope::Limits::default(), envelope::Minimums::default()));
        // No declared envelope: the narrowest one (no egress, no writes, no secrets, no tools).
        let declared = record
            .privilege_envelope
            .clone()
            .unwrap_or(PrivilegeEnvelope {
                secrets_access: Vec::new(),
                network_egress: crate::registry::NetworkEgress::None,
                filesystem_writes: Vec::new(),
                tools: Vec::new(),
            });
        let writes = self
            .persistent_writes(&record, &declared)
            .map_err(|e| (e, None));
        let run = writes.and_then(|opened_writes| {
            let (bootstrap, runtime) =
                package_bootstrap(&store_path, loaded.python.as_deref()).map_err(|e| (e, None))?;
            let protocol = package_protocol(&store_path).map_err(|e| (e, None))?;
            let payload = serde_json::to_vec(&input.request)
                .map_err(|e| (RunError::Internal(e.to_string()), None))?;
            let req = envelope::RunRequest {
                package_dir: store_path.clone(),
                package_digest: Some(package.digest.clone()),
                privilege_envelope: declared.clone(),
                limits,
                minimums,
                bootstrap,
                runtime,
                payload,
                protocol,
                correlation_id: input.correlation_id.clone(),
                traceparent: run_span.trace().traceparent(),
                identity: None,
                // A record is the package author's: an absolute entry never reaches the host's
                // tree, it is mapped under the run directory.
                allow_absolute_writes: false,
                opened_writes,
                data_quota_bytes: (self.data_quota_bytes > 0).then_some(self.data_quota_bytes),
            };
            // Counted in flight for the pool thread, which refills only while the Hall is not
            // busy.
            let _in_flight = self.warm.as_ref().map(|w| w.running());
            let claim = match &self.warm {
                Some(w) => w.claim(&species, &req),
                None => super::warm::Claim::Cold("not_configured"),
            };
            match claim {
                super::warm::Claim::Warm(instance) => (*instance).run(&self.envelope, &req),
                super::warm::Claim::Cold(_) => self.envelope.run(&req),
            }
            .map_err(|e| {
                if let Some(r) = e.report() {
                    stage_events(&run_span, &r.stages);
                }
                let report = e
                    .report()
                    .and_then(|r| serde_json::to_value(r).ok())
                    .map(Box::new);
                (failure(e.code(), e.to_string()), report)
            })
        });

        phases.mark_untraced("run");
        if let Ok(o) = &run {
            stage_events(&run_span, &o.report.stages);
        }
        run_span.end(match &run {
            Ok(o) => vec![
                otel::kv("wcp.exit_code", o.exit.code.map_or(-1, i64::from)),
                otel::kv("wcp.timed_out", o.timed_out),
            ],
            Err((e, _)) => vec![otel::kv("wcp.error_code", e.code())],
        });
        // 4. The outcome, durable before the answer.
        let outcome = match run {
            Ok(outcome) => outcome,
            Err((e, envelope_report)) => {
                if let Some(r) = &envelope_report {
                    intent.dispatch_mut().envelope = Some(Value::clone(r));
                }
                let (code, message) = (e.code(), e.to_string());
                let appended = self
                    .receipts
                    .append_outcome(
                        intent,
                        Outcome::Aborted {
                            reason: bounded(&format!("{code}: {message}"), 1000),
                        },
                    )
                    .map_err(|le| receipt_error(le, "the outcome could not be recorded"))?;
                let (phases, phases_json) = phases.finish(
                    "outcome_receipt",
                    vec![otel::kv("wcp.receipt_seq", appended.seq as i64)],
                );
                return Ok(RunOutcome {
                    succeeded: false,
                    result: None,
                    execution: RunExecution::Aborted(AbortedRun {
                        error: ErrorBody {
                            code: code.to_owned(),
                            message,
                        },
                        envelope: envelope_report.map(|r| *r),
                        receipt: self.receipt_ref(&appended),
                        package: PackageJson::new(&package, &report.store_path),
                        hall_phases_us: phases_json,
                    }),
                    phases,
                    worker_blast,
                });
            }
        };
        let summary = outcome.summary();
        // The answer's summary is serialised straight to its bytes; the receipt takes the report
        // as a value (it is canonicalised there).
        let summary_json = super::api::raw_json(&summary);
        intent.dispatch_mut().envelope =
            Some(serde_json::to_value(&outcome.report).unwrap_or(Value::Null));
        let exit_code = outcome.exit.code.map(i64::from);
        let signal = outcome.exit.signal.map(i64::from);
        // Why it failed, once: the receipt records the code, the answer the code and message.
        let failure = outcome.failure();
        let execution = Execution {
            exit_code,
            failure: failure.as_ref().map(|f| f.code().to_owned()),
            signal,
            stderr_bytes: outcome.stderr_bytes,
            stderr_sha256: bare_hex(&summary.stderr_sha256),
            stdout_bytes: outcome.stdout_bytes,
            stdout_sha256: bare_hex(&summary.stdout_sha256),
            timed_out: outcome.timed_out,
            timings: Timings {
                cpu_system_ms: None,
                cpu_user_ms: outcome.cpu_time_ms,
                started_at: rfc3339_ms(now_ms().saturating_sub(outcome.duration_ms)),
                wall_ms: outcome.duration_ms,
            },
            truncated: outcome.stdout_truncated || outcome.stderr_truncated,
        };
        let appended = self
            .receipts
            .append_outcome(intent, Outcome::Executed(execution))
            .map_err(|e| receipt_error(e, "the outcome could not be recorded"))?;
        // A worker that failed may still have printed one JSON value (its own error object):
        // it is passed on as the result, beside the Hall's `error`.
        let result = outcome.result_json().ok();
        let succeeded = failure.is_none();
        let (phases, phases_json) = phases.finish(
            "outcome_receipt",
            vec![otel::kv("wcp.receipt_seq", appended.seq as i64)],
        );
        let execution = RunExecution::Executed(ExecutedRun {
            worker_id: record.worker_id.clone(),
            summary: summary_json,
            receipt: self.receipt_ref(&appended),
            package: PackageJson::new(&package, &report.store_path),
            attestation: AttestationRef {
                code: report.code.map(|c| c.as_str()),
                cached: report.cached,
                protections: report.protections.clone(),
            },
            stderr_tail: String::from_utf8_lossy(
                &outcome.stderr[outcome.stderr.len().saturating_sub(2048)..],
            )
            .into_owned(),
            hall_phases_us: phases_json,
            // The same place and shape as an aborted run's error.
            error: failure.as_ref().map(|f| ErrorBody {
                code: f.code().to_owned(),
                message: f.message(),
            }),
        });
        Ok(RunOutcome {
            succeeded,
            result,
            execution,
            phases,
            worker_blast,
        })
    }
}

/// How a verified package runs, read from its read-only store copy.
///
/// A PyHall package has `code/bootstrap.py` and runs under the probed Python runtime
/// (`[envelope] python`, [`crate::envelope::PythonRuntime`]; `None`: the Hall has none, and the
/// package is refused with `python_runtime_unavailable`). A native
/// package has `code/bootstrap` instead: an ELF executable, the only file the store copy makes
/// executable (`attest::tree::copy_mode`), run directly with the dynamic loader its header names
/// and that loader's library directory readable (`envelope::native`).
///
/// Threat model: the layout is part of the signed tree, so the signer decides how a package
/// runs, and a worker never runs anything the envelope was not told about. Refused, before the
/// worker starts (the intent receipt then ends `aborted` with the reason): a package with both
/// entrypoints (which one runs would be a guess), with neither, a native entrypoint that is not
/// an ELF file (a `#!` script would start an interpreter the envelope never granted), and a
/// store copy whose entrypoint is not executable (an entry made before native packages
/// existed: remove it from the store and the next dispatch re-verifies it).
pub fn package_bootstrap(
    package: &Path,
    python_runtime: Option<&envelope::PythonRuntime>,
) -> Result<(envelope::Bootstrap, envelope::RuntimePaths), RunError> {
    use std::os::unix::fs::PermissionsExt;

    let python = package.join(crate::attest::tree::PYTHON_BOOTSTRAP);
    let native = package.join(crate::attest::tree::NATIVE_BOOTSTRAP);
    let exists = |p: &Path| std::fs::symlink_metadata(p).ok();
    match (exists(&python), exists(&native)) {
        (Some(_), Some(_)) => Err(failure(
            "package_ambiguous",
            format!(
                "{} has both code/bootstrap.py (a Python package) and code/bootstrap (a native \
                 package); remove one and sign the package again",
                package.display()
            ),
        )),
        (None, None) => Err(failure(
            "package_no_bootstrap",
            format!(
                "{} has no entrypoint: a Python package needs code/bootstrap.py, a native one \
                 code/bootstrap (an ELF executable)",
                package.display()
            ),
        )),
        (Some(_), None) => {
            let runtime = python_runtime.ok_or_else(|| {
                failure(
                    "python_runtime_unavailable",
                    format!(
                        "{} is a Python package but this Hall has no Python runtime: none of {} \
                         exists and [envelope] python is not set",
                        package.display(),
                        envelope::python::DEFAULT_CANDIDATES.join(", ")
                    ),
                )
            })?;
            Ok((runtime.bootstrap(), runtime.paths.clone()))
        }
        (None, Some(meta)) => {
            if !meta.is_file() {
                return Err(failure(
                    "package_not_elf",
                    format!("{} is not a regular file", native.display()),
                ));
            }
            if meta.permissions().mode() & 0o111 != 0o111 {
                return Err(failure(
                    "package_not_executable",
                    format!(
                        "{} is not executable (mode {:04o}): the store entry predates native \
                         packages; remove {} and dispatch again to re-verify it",
                        native.display(),
                        meta.permissions().mode() & 0o7777,
                        package.display()
                    ),
                ));
            }
            // An ELF file (a script is refused), with the loader its header names and that
            // loader's library directory.
            let runtime = envelope::native::runtime_for(&native)
                .map_err(|why| failure("package_not_elf", why))?;
            Ok((
                envelope::Bootstrap::Native {
                    program: native,
                    args: Vec::new(),
                },
                runtime,
            ))
        }
    }
}

/// The worker protocol a verified package declares in its signed tree
/// ([`crate::attest::tree::WORKER_DECLARATION`], `{"worker_protocol": 1|2}`); absent: 1.
///
/// Threat model: the declaration is signed with the rest of the package, so only its signer
/// decides that a worker receives its request in a frame (and may be started warm); a record,
/// a caller or a payload cannot. Anything else in the file, a second key, another number, a
/// non-regular file or more than 4 KiB, refuses the package (`package_declaration_invalid`):
/// a declaration the Hall does not understand is never guessed at.
pub fn package_protocol(package: &Path) -> Result<envelope::WorkerProtocol, RunError> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Declaration {
        worker_protocol: u8,
    }
    const MAX_BYTES: u64 = 4096;
    let path = package.join(crate::attest::tree::WORKER_DECLARATION);
    let invalid = |why: String| {
        failure(
            "package_declaration_invalid",
            format!(
                "{}: {why}; it must be {{\"worker_protocol\": 1}} or {{\"worker_protocol\": 2}} \
                 (sign the package again after fixing it)",
                path.display()
            ),
        )
    };
    let meta = match std::fs::symlink_metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(envelope::WorkerProtocol::V1);
        }
        Err(e) => return Err(invalid(format!("cannot be read: {e}"))),
    };
    if !meta.is_file() || meta.len() > MAX_BYTES {
        return Err(invalid(format!(
            "is not a regular file of at most {MAX_BYTES} bytes"
        )));
    }
    let bytes = std::fs::read(&path).map_err(|e| invalid(format!("cannot be read: {e}")))?;
    // An object only (serde would also take a struct from an array), each key once.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(invalid("is not a JSON object".into()));
    }
    let d: Declaration = serde_json::from_slice(&bytes).map_err(|e| invalid(e.to_string()))?;
    match d.worker_protocol {
        1 => Ok(envelope::WorkerProtocol::V1),
        2 => Ok(envelope::WorkerProtocol::V2),
        n => Err(invalid(format!("protocol {n} is not one this Hall speaks"))),
    }
}

/// Wall-clock time per phase of a run, for the answer (operators see where time went), and
/// each phase as a child span of the dispatch's when tracing is on.
struct Phases {
    last: std::time::Instant,
    last_wall: std::time::SystemTime,
    done: Vec<(&'static str, std::time::Duration)>,
    trace: otel::Trace,
}

/// The span name of each phase.
fn span_name(phase: &'static str) -> &'static str {
    match phase {
        "verify" => "wcp.verify",
        "intent_receipt" => "wcp.intent_receipt",
        "run" => "wcp.envelope_run",
        "outcome_receipt" => "wcp.outcome_receipt",
        other => other,
    }
}

impl Phases {
    fn start(trace: otel::Trace) -> Self {
        Phases {
            last: std::time::Instant::now(),
            last_wall: otel::now(),
            done: Vec::new(),
            trace,
        }
    }

    /// Ends a phase whose span was recorded separately (or not at all).
    fn mark_untraced(&mut self, phase: &'static str) {
        let now = std::time::Instant::now();
        self.done.push((phase, now.duration_since(self.last)));
        self.last = now;
        self.last_wall = otel::now();
    }

    /// Ends a phase and records its span with these attributes.
    fn mark_with(&mut self, phase: &'static str, attrs: Vec<opentelemetry::KeyValue>) {
        self.trace.step(span_name(phase), self.last_wall, attrs);
        self.mark_untraced(phase);
    }

    /// Marks the last phase; returns the phases and their JSON (`{phase: µs}`) for the answer.
    fn finish(
        mut self,
        phase: &'static str,
        attrs: Vec<opentelemetry::KeyValue>,
    ) -> (Vec<(&'static str, std::time::Duration)>, Value) {
        self.mark_with(phase, attrs);
        let json = self
            .done
            .iter()
            .map(|(p, d)| {
                let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
                ((*p).to_owned(), json!(us))
            })
            .collect::<serde_json::Map<String, Value>>();
        (self.done, Value::Object(json))
    }
}

/// The facts of a run as the answer carries them (`execution`): the JSON shape, key order
/// included, is the API's.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum RunExecution {
    /// Refused after its intent was recorded: the worker never started (or was stopped before
    /// it could), and the outcome receipt says `aborted`.
    Aborted(AbortedRun),
    /// The worker ran; `error` says why it failed, if it did.
    Executed(ExecutedRun),
}

impl RunExecution {
    /// The seq of the run's outcome receipt.
    pub fn receipt_seq(&self) -> u64 {
        match self {
            RunExecution::Aborted(a) => a.receipt.seq,
            RunExecution::Executed(e) => e.receipt.seq,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct AbortedRun {
    pub error: ErrorBody,
    /// The envelope's report as far as it got (always present, `null` when none).
    pub envelope: Option<Value>,
    pub receipt: ReceiptRef,
    pub package: PackageJson,
    pub hall_phases_us: Value,
}

#[derive(Debug, Clone, Serialize)]
pub struct ExecutedRun {
    pub worker_id: String,
    /// The run summary with the envelope report (`envelope::RunSummary`).
    pub summary: super::api::RawJson,
    pub receipt: ReceiptRef,
    pub package: PackageJson,
    pub attestation: AttestationRef,
    /// The last 2 KiB of the worker's stderr.
    pub stderr_tail: String,
    pub hall_phases_us: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

/// `{code, message}`: why a run failed (a `RunFailure` or a refusal's code).
#[derive(Debug, Clone, Serialize)]
pub struct ErrorBody {
    pub code: String,
    pub message: String,
}

/// Where the run's outcome receipt is: its seq and hash, and the newest saved checkpoint's size.
#[derive(Debug, Clone, Serialize)]
pub struct ReceiptRef {
    pub seq: u64,
    pub receipt_hash: String,
    pub checkpoint_size: Option<u64>,
}

/// The verified package that ran.
#[derive(Debug, Clone, Serialize)]
pub struct PackageJson {
    pub digest: String,
    pub manifest_digest: Option<String>,
    pub signer_key_ids: Vec<String>,
    pub store_path: Option<PathBuf>,
}

impl PackageJson {
    fn new(package: &PackageRef, store_path: &Option<PathBuf>) -> Self {
        PackageJson {
            digest: package.digest.clone(),
            manifest_digest: package.manifest_digest.clone(),
            signer_key_ids: package.signer_key_ids.clone(),
            store_path: store_path.clone(),
        }
    }
}

/// How the package's verification went (`ATTEST_*` code, whether the store's cache answered,
/// the protections the store copy got).
#[derive(Debug, Clone, Serialize)]
pub struct AttestationRef {
    pub code: Option<&'static str>,
    pub cached: bool,
    pub protections: Vec<crate::attest::report::Protection>,
}

impl HallRunner {
    fn receipt_ref(&self, appended: &crate::receipt::Appended) -> ReceiptRef {
        ReceiptRef {
            seq: appended.seq,
            receipt_hash: appended.receipt_hash_string(),
            checkpoint_size: self.receipts.saved_checkpoint_size(),
        }
    }
}

/// At most `max` bytes of `s`, cut at a character boundary.
fn bounded(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// `sha256:<hex>` → `<hex>` (the receipt schema stores bare lowercase hex).
fn bare_hex(s: &str) -> String {
    s.strip_prefix("sha256:").unwrap_or(s).to_owned()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::{package_bootstrap, package_protocol};
    use crate::envelope::Bootstrap;

    fn package(files: &[(&str, &[u8], u32)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("code")).unwrap();
        for (name, bytes, mode) in files {
            let p = dir.path().join(name);
            std::fs::write(&p, bytes).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode)).unwrap();
        }
        dir
    }

    fn code(files: &[(&str, &[u8], u32)]) -> &'static str {
        let dir = package(files);
        let python = crate::envelope::python::debian_fixture();
        package_bootstrap(dir.path(), Some(&python))
            .expect_err("refused")
            .code()
    }

    const ELF: &[u8] = b"\x7fELF\x02\x01\x01\0rest";

    #[test]
    fn the_layout_decides_how_a_package_runs() {
        let python = crate::envelope::python::debian_fixture();
        let py = package(&[("code/bootstrap.py", b"print()", 0o444)]);
        let (b, runtime) = package_bootstrap(py.path(), Some(&python)).unwrap();
        assert_eq!(b, python.bootstrap());
        assert_eq!(runtime, python.paths);
        // Without a Python runtime a Python package is refused; a native one still runs.
        let err = package_bootstrap(py.path(), None).expect_err("no runtime");
        assert_eq!(err.code(), "python_runtime_unavailable");
        assert!(err.to_string().contains("[envelope] python"), "{err}");

        // A real program: it runs with the loader its ELF header names.
        let true_bin = std::fs::read("/bin/true").unwrap();
        let native = package(&[("code/bootstrap", &true_bin, 0o555)]);
        let (b, runtime) = package_bootstrap(native.path(), None).unwrap();
        assert_eq!(
            b,
            Bootstrap::Native {
                program: native.path().join("code/bootstrap"),
                args: vec![]
            }
        );
        assert_eq!(
            runtime,
            crate::envelope::native::runtime_for(std::path::Path::new("/bin/true")).unwrap()
        );
        assert_eq!(runtime.execute.len(), 1, "{runtime:?}");

        // ELF magic but no valid header: refused, not guessed at.
        let broken = package(&[("code/bootstrap", ELF, 0o555)]);
        let err = package_bootstrap(broken.path(), None).expect_err("broken ELF");
        assert_eq!(err.code(), "package_not_elf", "{err}");
    }

    #[test]
    fn odd_entrypoints_are_refused_with_their_own_codes() {
        assert_eq!(
            code(&[
                ("code/bootstrap", ELF, 0o555),
                ("code/bootstrap.py", b"", 0o444)
            ]),
            "package_ambiguous"
        );
        assert_eq!(code(&[]), "package_no_bootstrap");
        assert_eq!(
            code(&[("code/bootstrap", b"#!/bin/sh\necho {}\n", 0o555)]),
            "package_not_elf"
        );
        assert_eq!(
            code(&[("code/bootstrap", b"\x7fE", 0o555)]),
            "package_not_elf"
        );
        assert_eq!(
            code(&[("code/bootstrap", ELF, 0o444)]),
            "package_not_executable"
        );
        let dir = package(&[]);
        std::fs::create_dir(dir.path().join("code/bootstrap")).unwrap();
        assert_eq!(
            package_bootstrap(dir.path(), None).err().unwrap().code(),
            "package_not_elf"
        );
    }

    #[test]
    fn the_package_declares_its_protocol_and_nothing_else() {
        use crate::envelope::WorkerProtocol;
        let dir = tempfile::tempdir().unwrap();
        let decl = dir.path().join("wcp-worker.json");
        assert_eq!(package_protocol(dir.path()).unwrap(), WorkerProtocol::V1);
        for (text, expected) in [
            (r#"{"worker_protocol": 1}"#, WorkerProtocol::V1),
            (r#"{"worker_protocol": 2}"#, WorkerProtocol::V2),
        ] {
            std::fs::write(&decl, text).unwrap();
            assert_eq!(package_protocol(dir.path()).unwrap(), expected);
        }
        for bad in [
            r#"{"worker_protocol": 3}"#,
            r#"{"worker_protocol": 2, "warm": true}"#,
            r#"{"worker_protocol": "2"}"#,
            r#"{"worker_protocol": 2, "worker_protocol": 1}"#,
            "[2]",
            "",
        ] {
            std::fs::write(&decl, bad).unwrap();
            let e = package_protocol(dir.path()).expect_err(bad);
            assert_eq!(e.code(), "package_declaration_invalid", "{bad}");
            assert!(e.to_string().contains("sign the package again"), "{e}");
        }
        std::fs::write(&decl, " ".repeat(5000)).unwrap();
        assert!(package_protocol(dir.path()).is_err());
        std::fs::remove_file(&decl).unwrap();
        std::fs::create_dir(&decl).unwrap();
        assert!(package_protocol(dir.path()).is_err());
    }
}
