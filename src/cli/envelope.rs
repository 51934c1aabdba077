//! `wcp-hall envelope` subcommands: what this host can enforce, and running a package's
//! bootstrap under the privilege envelope (for operators and tests; the daemon calls the same
//! library).

use std::path::PathBuf;

use serde_json::json;

use super::{CliError, Out, exit, read_input};
use crate::envelope::{
    Bootstrap, Effective, Envelope, EnvelopeError, EnvelopeReport, HostConfig, Identity, Minimum,
    Minimums, Probe, PythonRuntime, RunOutcome, RunRequest,
};
use crate::registry::{NetworkEgress, PrivilegeEnvelope, RegistryRecord};

#[derive(Debug, clap::Subcommand)]
pub enum EnvelopeCommand {
    /// Show what this kernel and host can enforce (Landlock ABI, seccomp, namespaces, cgroup v2).
    Probe(ProbeArgs),
    /// Run a package directory's bootstrap (code/bootstrap.py) under the envelope and print the
    /// outcome and the requested-versus-effective report.
    ///
    /// Exit 0 when the worker exits 0; 1 when it fails, times out, or the run is refused (a
    /// required protection is unavailable, a stage failed); 65 for an invalid request; 66 for a
    /// missing request file; 78 for an unusable secret or Python interpreter.
    Run(Box<RunArgs>),
}

#[derive(Debug, Clone, clap::Args)]
pub struct HostArgs {
    /// Hall-owned directory for per-run directories (prefer tmpfs) [default:
    /// $XDG_RUNTIME_DIR/wcp-hall/runs, /run/wcp-hall/runs as root, else <tmp>/wcp-hall-runs-<uid>].
    #[arg(long)]
    pub runs_dir: Option<PathBuf>,
    /// Delegated cgroup v2 directory for per-run leaves [default: the Hall's own cgroup].
    #[arg(long)]
    pub cgroup_parent: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct ProbeArgs {
    #[command(flatten)]
    pub host: HostArgs,
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The package directory (code/bootstrap.py inside), e.g. the attested store copy.
    pub dir: PathBuf,
    /// The request JSON given to the worker on stdin (a file, or - for stdin) [default: {}].
    #[arg(long)]
    pub request: Option<PathBuf>,
    /// Take the privilege envelope from this registry record (WCP §6) instead of the flags.
    #[arg(long)]
    pub record: Option<PathBuf>,
    /// A declared write directory (repeatable); relative paths live under the run's work dir.
    #[arg(long = "write")]
    pub writes: Vec<String>,
    /// Network egress: `none`, or comma-separated host:port entries.
    #[arg(long, default_value = "none")]
    pub egress: String,
    /// A declared secret name (repeatable), read from --secrets-dir.
    #[arg(long = "secret")]
    pub secrets: Vec<String>,
    /// A declared tool (repeatable): a program name in /usr/bin or an absolute path.
    #[arg(long = "tool")]
    pub tools: Vec<String>,
    /// Directory of Hall-owned secret files (mode 0600).
    #[arg(long)]
    pub secrets_dir: Option<PathBuf>,
    /// `production` (everything required except the cgroup) or `best-effort`.
    #[arg(long, default_value = "production")]
    pub minimums: String,
    /// Override one minimum: FEATURE=required|best_effort|off (repeatable), e.g. cgroup=required.
    #[arg(long = "min")]
    pub min: Vec<String>,
    #[arg(long, default_value_t = 30_000)]
    pub timeout_ms: u64,
    #[arg(long, default_value_t = 30)]
    pub cpu_seconds: u64,
    #[arg(long, default_value_t = 1 << 30)]
    pub memory_bytes: u64,
    #[arg(long, default_value_t = 64)]
    pub max_processes: u64,
    #[arg(long, default_value_t = 256)]
    pub max_open_files: u64,
    #[arg(long, default_value_t = 64 << 20)]
    pub max_file_size: u64,
    #[arg(long, default_value_t = 1 << 20)]
    pub max_output_bytes: u64,
    /// Worker uid (with --gid) when the Hall runs as root [default: 65534].
    #[arg(long, requires = "gid")]
    pub uid: Option<u32>,
    #[arg(long, requires = "uid")]
    pub gid: Option<u32>,
    #[arg(long, default_value = "wcp-hall-envelope-run")]
    pub correlation_id: String,
    /// The package digest to record in the report (e.g. sha256:…).
    #[arg(long)]
    pub digest: Option<String>,
    /// Python interpreter for code/bootstrap.py (absolute; probed as the worker uid, as the
    /// Hall does with `[envelope] python`) [default: /usr/bin/python3.11, else /usr/bin/python3].
    #[arg(long)]
    pub interpreter: Option<PathBuf>,
    /// Run this native program instead of the Python bootstrap (arguments after --).
    #[arg(long)]
    pub native: Option<PathBuf>,
    /// Extra read-only runtime path (repeatable).
    #[arg(long = "runtime-read")]
    pub runtime_read: Vec<PathBuf>,
    /// Keep the per-run directory afterwards (its path is in the report).
    #[arg(long)]
    pub keep_run_dir: bool,
    #[command(flatten)]
    pub host: HostArgs,
    /// Arguments for --native.
    #[arg(last = true)]
    pub args: Vec<String>,
}

fn host_config(args: &HostArgs) -> HostConfig {
    let runs = args.runs_dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("wcp-hall-runs-{}", nix::unistd::geteuid().as_raw()))
    });
    let runs = if runs.is_absolute() {
        runs
    } else {
        std::env::current_dir()
            .map(|d| d.join(&runs))
            .unwrap_or(runs)
    };
    let mut host = HostConfig::new(runs);
    host.cgroup_parent = args.cgroup_parent.clone();
    host
}

pub fn run(cmd: EnvelopeCommand, out: &mut Out) -> Result<u8, CliError> {
    match cmd {
        EnvelopeCommand::Probe(args) => probe(args, out),
        EnvelopeCommand::Run(args) => run_package(*args, out),
    }
}

fn yes(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

fn probe(args: ProbeArgs, out: &mut Out) -> Result<u8, CliError> {
    let host = host_config(&args.host);
    let p = Probe::run(&host);
    let memory = p.memory_bound();
    if out.json {
        // The probe, plus whether a run's memory can be bounded as a whole here.
        let mut v = serde_json::to_value(&p).unwrap_or_default();
        v["memory_bound"] = serde_json::to_value(&memory).unwrap_or_default();
        v["run_limits"] = run_limits_json(&p);
        return out.json_line(&v).map(|_| exit::OK);
    }
    out.line(format!(
        "kernel {}; the Hall runs as uid {} gid {}",
        p.kernel_release, p.hall_uid, p.hall_gid
    ))?;
    out.line(format!(
        "landlock          ABI {} ({}); the envelope pins ABI {}",
        p.landlock.kernel_abi, p.landlock.status, p.landlock_abi_requested
    ))?;
    out.line(format!(
        "seccomp           filters {}{}",
        yes(p.seccomp.filter),
        p.seccomp
            .reason
            .as_deref()
            .map(|r| format!(" ({r})"))
            .unwrap_or_default()
    ))?;
    let ns = &p.namespaces;
    out.line(format!(
        "namespaces        user {} pid {} net {} ipc {} uts {}",
        yes(ns.user),
        yes(ns.pid),
        yes(ns.net),
        yes(ns.ipc),
        yes(ns.uts)
    ))?;
    for (name, err) in &ns.errors {
        out.line(format!("  {name}: {err}"))?;
    }
    let cg = &p.cgroup;
    out.line(format!(
        "cgroup v2         mount {}; parent {}",
        cg.v2_mount.as_deref().unwrap_or("none"),
        cg.parent.as_deref().unwrap_or("none")
    ))?;
    out.line(format!(
        "  leaf {}  cgroup.kill {}  clone-into-cgroup {}  memory.max {}  pids.max {}",
        yes(cg.leaf_ok),
        yes(cg.kill),
        yes(cg.clone_into_cgroup),
        yes(cg.memory),
        yes(cg.pids)
    ))?;
    if !cg.v1_controllers.is_empty() {
        out.line(format!(
            "  controllers on cgroup v1 (hybrid): {}",
            cg.v1_controllers.join(", ")
        ))?;
    }
    if let Some(r) = &cg.reason {
        out.line(format!("  {r}"))?;
    }
    out.line(memory_line(&memory))?;
    for (what, line) in run_limits(&p) {
        out.line(format!("{what:<17} {line}"))?;
    }
    Ok(exit::OK)
}

/// What this host lets the Hall enforce per run beyond the kernel features above: hiding the
/// Hall's socket from workers, bounding a run's scratch space, telling its own workers apart
/// as peers, and whether workers inherit supplementary groups.
pub(crate) fn run_limits(p: &Probe) -> Vec<(&'static str, String)> {
    let root = p.hall_uid == 0;
    let mnt = p.namespaces.mnt && (root || p.namespaces.user);
    vec![
        (
            "hall socket",
            if mnt {
                "hidden from workers by a mount namespace per run; the Hall also refuses its own \
                 workers as peers"
                    .into()
            } else {
                "NOT hidden (no mount namespace here): reachable by path; the Hall still refuses \
                 its own workers as peers"
                    .into()
            },
        ),
        (
            "scratch",
            if root {
                "a size-limited tmpfs on each run directory ([envelope] scratch_bytes)".into()
            } else {
                "NOT bounded in total (a size-limited tmpfs needs root): per file only \
                 (RLIMIT_FSIZE)"
                    .into()
            },
        ),
        (
            "persistent data",
            "[envelope] data_quota_bytes, checked before each run and every 100 ms during it"
                .into(),
        ),
        (
            "groups",
            if root || p.hall_groups.is_empty() {
                "workers have no supplementary groups".into()
            } else {
                format!(
                    "workers inherit the Hall's supplementary groups {:?}: unprivileged_user is \
                     not met (refused when required)",
                    p.hall_groups
                )
            },
        ),
    ]
}

pub(crate) fn run_limits_json(p: &Probe) -> serde_json::Value {
    serde_json::Value::Object(
        run_limits(p)
            .into_iter()
            .map(|(k, v)| (k.replace(' ', "_"), serde_json::Value::String(v)))
            .collect(),
    )
}

/// The probe's answer on memory, in one line (also used by `config show`).
pub fn memory_line(m: &crate::envelope::probe::MemoryBoundProbe) -> String {
    if m.per_run {
        "memory bound      per run (cgroup memory.max on each run's leaf)".into()
    } else {
        format!(
            "memory bound      per process only (RLIMIT_AS; a run can hold that much in each of \
             its processes): {}; profiles with cgroup = \"required\" are refused here",
            m.reason.as_deref().unwrap_or("no cgroup memory controller")
        )
    }
}

fn parse_minimums(args: &RunArgs) -> Result<Minimums, CliError> {
    let usage = |m: String| CliError::new(exit::USAGE, "usage", m);
    let mut m = match args.minimums.as_str() {
        "production" => Minimums::production(),
        "best-effort" | "best_effort" => Minimums::best_effort(),
        other => {
            return Err(usage(format!(
                "--minimums {other:?}: expected production or best-effort"
            )));
        }
    };
    for spec in &args.min {
        let (feature, level) = spec.split_once('=').ok_or_else(|| {
            usage(format!(
                "--min {spec:?}: expected FEATURE=required|best_effort|off"
            ))
        })?;
        let level = Minimum::parse(level).ok_or_else(|| {
            usage(format!(
                "--min {spec:?}: the level is required, best_effort or off"
            ))
        })?;
        let slot = match feature {
            "landlock" => &mut m.landlock,
            "network_isolation" => &mut m.network_isolation,
            "seccomp" => &mut m.seccomp,
            "pid_namespace" => &mut m.pid_namespace,
            "cgroup" => &mut m.cgroup,
            "unprivileged_user" => &mut m.unprivileged_user,
            other => {
                return Err(usage(format!(
                    "--min {other:?}: features are landlock, network_isolation, seccomp, pid_namespace, cgroup, unprivileged_user"
                )));
            }
        };
        *slot = level;
    }
    Ok(m)
}

fn declared_envelope(args: &RunArgs) -> Result<PrivilegeEnvelope, CliError> {
    if let Some(path) = &args.record {
        let text = read_input(path)?;
        let record = RegistryRecord::from_json_str(&text).map_err(|e| {
            CliError::new(
                exit::DATAERR,
                "record_invalid",
                format!("{}: {e}", path.display()),
            )
        })?;
        return record.privilege_envelope.ok_or_else(|| {
            CliError::new(
                exit::DATAERR,
                "record_invalid",
                format!(
                    "{}: the record declares no privilege_envelope",
                    path.display()
                ),
            )
        });
    }
    let egress = if args.egress == "none" {
        NetworkEgress::None
    } else {
        NetworkEgress::Allowlist(
            args.egress
                .split(',')
                .map(|s| s.trim().to_owned())
                .collect(),
        )
    };
    Ok(PrivilegeEnvelope {
        secrets_access: args.secrets.clone(),
        network_egress: egress,
        filesystem_writes: args.writes.clone(),
        tools: args.tools.clone(),
    })
}

fn envelope_error(e: EnvelopeError, out: &mut Out) -> Result<u8, CliError> {
    let (code, kind) = match &e {
        EnvelopeError::InvalidRequest { .. } => (exit::DATAERR, "invalid_request"),
        EnvelopeError::Secret { .. } => (exit::CONFIG, "secret_unavailable"),
        EnvelopeError::RequirementUnmet { .. } => (exit::DENIED, "requirement_unmet"),
        EnvelopeError::StageFailed { .. } => (exit::DENIED, "stage_failed"),
        EnvelopeError::Io { .. } => (exit::DENIED, "envelope_internal"),
    };
    if let Some(report) = e.report() {
        // A stage failure still has a report: print it (stdout), the error goes to stderr.
        if out.json {
            out.json_line(
                &json!({"deny_code": e.code(), "error": e.to_string(), "report": report}),
            )?;
        } else {
            print_report(out, report)?;
        }
    }
    let mut err = CliError::new(code, kind, format!("{} ({})", e, e.code()));
    if let Some(h) = e.hint() {
        err = err.hint(h);
    }
    Err(err)
}

fn run_package(args: RunArgs, out: &mut Out) -> Result<u8, CliError> {
    let mut host = host_config(&args.host);
    host.secrets_dir = args.secrets_dir.clone();
    host.keep_run_dirs = args.keep_run_dir;
    let minimums = parse_minimums(&args)?;
    let privilege_envelope = declared_envelope(&args)?;
    let payload = match &args.request {
        Some(p) => read_input(p)?.into_bytes(),
        None => b"{}".to_vec(),
    };
    let dir = if args.dir.is_absolute() {
        args.dir.clone()
    } else {
        std::env::current_dir()
            .map(|d| d.join(&args.dir))
            .unwrap_or(args.dir.clone())
    };
    if !dir.is_dir() {
        return Err(CliError::new(
            exit::NOINPUT,
            "input_unreadable",
            format!("{} is not a directory", dir.display()),
        )
        .hint("pass a package directory containing code/bootstrap.py"));
    }
    let (bootstrap, mut runtime) = match &args.native {
        Some(program) => (
            Bootstrap::Native {
                program: program.clone(),
                args: args.args.clone(),
            },
            crate::envelope::native::runtime_for(program).map_err(|why| {
                CliError::new(exit::DATAERR, "native_program_unusable", why).hint(
                    "--native takes a compiled (ELF) program; scripts run as code/bootstrap.py",
                )
            })?,
        ),
        None => {
            // Probed as the uid the worker will run as (what the Hall does at start).
            let run_as = args
                .uid
                .zip(args.gid)
                .map(|(uid, gid)| Identity { uid, gid })
                .unwrap_or(host.worker_identity);
            let python =
                PythonRuntime::probe(args.interpreter.as_deref(), Some(run_as)).map_err(|e| {
                    let flag = if args.interpreter.is_some() {
                        "--interpreter"
                    } else {
                        "the default interpreter"
                    };
                    CliError::new(exit::CONFIG, "python_unusable", format!("{flag}: {e}"))
                        .hint("pass --interpreter with an absolute path to a Python 3.8+ binary")
                })?;
            (python.bootstrap(), python.paths)
        }
    };
    runtime.read.extend(args.runtime_read.iter().cloned());
    let req = RunRequest {
        package_dir: dir,
        package_digest: args.digest.clone(),
        privilege_envelope,
        limits: crate::envelope::Limits {
            wall_timeout_ms: args.timeout_ms,
            cpu_seconds: args.cpu_seconds,
            memory_bytes: args.memory_bytes,
            max_processes: args.max_processes,
            max_open_files: args.max_open_files,
            max_file_size_bytes: args.max_file_size,
            max_output_bytes: args.max_output_bytes,
        },
        minimums,
        bootstrap,
        runtime,
        payload,
        protocol: crate::envelope::WorkerProtocol::V1,
        correlation_id: args.correlation_id.clone(),
        traceparent: None,
        identity: args
            .uid
            .zip(args.gid)
            .map(|(uid, gid)| Identity { uid, gid }),
        allow_absolute_writes: false,
        opened_writes: Vec::new(),
        data_quota_bytes: None,
    };
    let envelope = match Envelope::new(host) {
        Ok(e) => e,
        Err(e) => return envelope_error(e, out),
    };
    let outcome = match envelope.run(&req) {
        Ok(o) => o,
        Err(e) => return envelope_error(e, out),
    };
    if out.json {
        let summary = outcome.summary();
        out.json_line(&json!({
            "outcome": summary,
            // Why it failed (`null` when it produced a result): the Hall's dispatch codes.
            "error": outcome.failure().map(|f| json!({"code": f.code(), "message": f.message()})),
            "stdout": String::from_utf8_lossy(&outcome.stdout),
            "stderr": String::from_utf8_lossy(&outcome.stderr),
        }))?;
    } else {
        print_outcome(out, &outcome)?;
        print_report(out, &outcome.report)?;
    }
    Ok(if outcome.success() {
        exit::OK
    } else {
        exit::DENIED
    })
}

fn print_outcome(out: &mut Out, o: &RunOutcome) -> Result<(), CliError> {
    let how = match (o.exit.kind.as_str(), o.exit.code, &o.exit.signal_name) {
        ("exited", Some(c), _) => format!("exited {c}"),
        ("signaled", _, Some(s)) => format!("killed by {s}"),
        (_, _, Some(s)) => format!("killed by the Hall ({s}); no status from the tree"),
        _ => "ended".into(),
    };
    let mut extra = Vec::new();
    if o.timed_out {
        extra.push("TIMED OUT".to_owned());
    }
    if o.cpu_limit_exceeded {
        extra.push("CPU LIMIT".to_owned());
    }
    out.line(format!(
        "worker {how} after {} ms{}",
        o.duration_ms,
        if extra.is_empty() {
            String::new()
        } else {
            format!(" [{}]", extra.join(", "))
        }
    ))?;
    if let Some(f) = o.failure() {
        // The same code and message a Hall dispatch answers with.
        out.line(format!("failed: {}: {}", f.code(), f.message()))?;
    }
    let m = &o.report.memory;
    out.line(format!(
        "memory bound {} ({}){}",
        m.run_bound_bytes
            .map(|b| format!("{} MiB for the run", b >> 20))
            .unwrap_or_else(|| "none for the run".into()),
        m.source,
        if m.scope == "per_process" {
            format!(
                ", {} MiB per process × at most {} processes",
                m.per_process_bytes >> 20,
                m.processes_max
                    .map(|n| n.to_string())
                    .unwrap_or_else(|| "unbounded".into())
            )
        } else {
            String::new()
        }
    ))?;
    out.line(format!(
        "cpu {} ms ({}); peak memory {} ({})",
        o.cpu_time_ms.map(|v| v.to_string()).unwrap_or("?".into()),
        o.cpu_time_source,
        o.peak_memory_bytes
            .map(|b| format!("{} KiB", b / 1024))
            .unwrap_or("?".into()),
        o.peak_memory_source
    ))?;
    for (name, kept, total, truncated) in [
        ("stdout", &o.stdout, o.stdout_bytes, o.stdout_truncated),
        ("stderr", &o.stderr, o.stderr_bytes, o.stderr_truncated),
    ] {
        out.line(format!(
            "--- {name}: {total} bytes{}",
            if truncated {
                format!(" (TRUNCATED to {})", kept.len())
            } else {
                String::new()
            }
        ))?;
        if !kept.is_empty() {
            let text = String::from_utf8_lossy(kept);
            out.line(text.trim_end_matches('\n'))?;
        }
    }
    Ok(())
}

fn print_report(out: &mut Out, r: &EnvelopeReport) -> Result<(), CliError> {
    let row = |name: &str, req: Minimum, eff: Effective, detail: String| {
        format!(
            "  {name:<18}{:<13}{:<14}{detail}",
            req.as_str(),
            eff.as_str()
        )
    };
    out.line(format!("--- envelope (run {})", r.run_id))?;
    if let Some(runtime) = &r.bootstrap.runtime {
        out.line(format!("  runtime {runtime} ({})", r.bootstrap.program))?;
    }
    out.line(format!(
        "  {:<18}{:<13}{:<14}detail",
        "feature", "requested", "effective"
    ))?;
    let ll = &r.landlock;
    out.line(row(
        "landlock",
        ll.requested,
        ll.effective,
        format!(
            "ABI {} (kernel {}, pinned {}), {}, {} path rules{}",
            ll.abi_effective,
            ll.abi_kernel,
            ll.abi_requested,
            ll.ruleset,
            ll.fs_rules.len(),
            ll.reason
                .as_ref()
                .map(|s| format!("; {s}"))
                .unwrap_or_default()
        ),
    ))?;
    let n = &r.network;
    out.line(row(
        "network_isolation",
        n.requested,
        n.effective,
        format!("{}; tcp: {}; udp: {}", n.mode, n.tcp, n.udp),
    ))?;
    let s = &r.seccomp;
    out.line(row(
        "seccomp",
        s.requested,
        s.effective,
        s.digest.clone().or(s.reason.clone()).unwrap_or_default(),
    ))?;
    out.line(row(
        "pid_namespace",
        r.pid_namespace.requested,
        r.pid_namespace.effective,
        r.pid_namespace.reason.clone().unwrap_or_default(),
    ))?;
    let c = &r.cgroup;
    out.line(row(
        "cgroup",
        c.requested,
        c.effective,
        [c.path.clone(), c.reason.clone()]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join("; "),
    ))?;
    let i = &r.identity;
    out.line(row(
        "unprivileged_user",
        i.requested,
        i.effective,
        format!(
            "uid {} gid {}{}",
            i.uid,
            i.gid,
            i.reason
                .as_ref()
                .map(|s| format!("; {s}"))
                .unwrap_or_default()
        ),
    ))?;
    let o = &r.observed;
    match &o.source {
        Some(src) => out.line(format!(
            "  observed ({src}): NoNewPrivs {} Seccomp {} ({} filters) Uid {:?} NSpid {:?} CapEff {}",
            o.no_new_privs.map(|v| v.to_string()).unwrap_or("?".into()),
            o.seccomp.map(|v| v.to_string()).unwrap_or("?".into()),
            o.seccomp_filters.map(|v| v.to_string()).unwrap_or("?".into()),
            o.uid.clone().unwrap_or_default(),
            o.ns_pid.clone().unwrap_or_default(),
            o.cap_eff.clone().unwrap_or_default()
        ))?,
        None => out.line(format!(
            "  observed: {}",
            o.reason.clone().unwrap_or_default()
        ))?,
    }
    if let Some(failed) = r.stages.iter().find(|s| s.outcome == "failed") {
        out.line(format!(
            "  FAILED stage {} ({}): {}",
            failed.stage,
            failed.process,
            failed.detail.clone().unwrap_or_default()
        ))?;
    }
    if !r.degraded.is_empty() {
        out.line("  degraded:")?;
        for d in &r.degraded {
            out.line(format!("    - {d}"))?;
        }
    }
    Ok(())
}
