//! `wcp-hall config show|check`: what the Hall would route with, offline.

use serde_json::json;

use super::{CliError, ConfigArg, Out, exit, load_config};
use crate::config::Config;
use crate::receipt::config::ReceiptsConfigError;
use crate::snapshot::{LoadError, Loaded};

#[derive(Debug, clap::Subcommand)]
pub enum ConfigCommand {
    /// Show the floors, the rule set (and its shadows), the registry the configuration names and
    /// the Python runtime workers get (`[envelope] python`, probed).
    Show(ConfigArgs),
    /// Load everything the configuration names and probe `[envelope] python`, as `serve` would;
    /// exit 0 or 78.
    Check(ConfigArgs),
}

#[derive(Debug, clap::Args)]
pub struct ConfigArgs {
    #[command(flatten)]
    pub config: ConfigArg,
}

/// Loads everything a configuration names (rules, registry, profiles and policy sets), as
/// `serve` would. All of it is configuration: a problem with any part exits 78, because a Hall
/// must not route on a partial or ambiguous rule set.
pub fn load_hall(config: &Config) -> Result<Loaded, CliError> {
    Loaded::from_config(config.clone(), 1).map_err(|e| {
        let err = CliError::new(exit::CONFIG, "config_invalid", e.to_string());
        match e {
            LoadError::Rules { path, .. } => err.hint(format!(
                "run `wcp-hall validate {}` for the full report",
                path.display()
            )),
            LoadError::RulesRead { .. } => err
                .hint("set [paths] rules in hall.toml (relative paths are relative to hall.toml)"),
            _ => err,
        }
    })
}

pub fn run(cmd: ConfigCommand, out: &mut Out) -> Result<u8, CliError> {
    let (args, check) = match cmd {
        ConfigCommand::Show(a) => (a, false),
        ConfigCommand::Check(a) => (a, true),
    };
    let config = load_config(&args.config.config)?;
    let mut hall = load_hall(&config)?;
    // As `serve` does: probed as the worker uid (when root).
    let invalid = |m: String| CliError::new(exit::CONFIG, "config_invalid", m);
    let worker = crate::snapshot::worker_identity(&config.envelope.worker_user)
        .map_err(|e| invalid(e.to_string()))?;
    hall.probe_python(Some(worker)).map_err(|e| {
        invalid(e.to_string()).hint(
            "set [envelope] python in hall.toml to an absolute path of a Python 3.8+ interpreter the worker user can run",
        )
    })?;
    if check {
        // The receipt signing key, read and mode-checked as `serve` reads it (nothing is
        // created). A systemd credential exists only inside the service: said, not failed.
        let receipts = &config.receipts;
        let key_note = match receipts.load_key() {
            Ok(_) => None,
            Err(ReceiptsConfigError::NoCredentialsDirectory(name)) => Some(format!(
                "receipt signing key {name:?} is a systemd credential, not checked outside the service"
            )),
            Err(e) => {
                return Err(invalid(e.to_string()).hint(
                    "create the receipt signing key with `wcp-hall keys generate FILE` (mode 0600) and point [receipts] signing_key at it",
                ));
            }
        };
        // The connection caps against this process's hard descriptor limit (what `serve`
        // raises its soft limit to). The service's own limit is its unit's LimitNOFILE=, so a
        // misfit here is a note, not a failure.
        let hard = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
            .map(|(_, h)| h)
            .unwrap_or(1024);
        let conn_note = crate::hall::conn::ConnLimits::derive(&config.server, hard)
            .err()
            .map(|e| format!("`serve` with this process's descriptor limit would not start: {e}"));
        if out.json {
            out.json_line(&json!({"config": args.config.config, "ok": true, "note": key_note, "connections_note": conn_note}))?;
        } else {
            out.line(format!("{}: ok", args.config.config.display()))?;
            for n in key_note.iter().chain(conn_note.iter()) {
                out.line(format!("note: {n}"))?;
            }
        }
        return Ok(exit::OK);
    }
    let summary = hall.registry.summary();
    let shadows = hall.rules.shadows();
    // Whether this host can bound a run's memory as a whole (probed here, in this process's
    // cgroup; a Hall under systemd probes its delegated subtree: `wcp-hall envelope probe
    // --cgroup-parent DIR` asks about that one).
    let probe = crate::envelope::Probe::run(&crate::envelope::HostConfig::new(
        config.state_dir().join("runs"),
    ));
    let memory = probe.memory_bound();
    // `[warm] workers` naming a species nobody enrolled is almost always a typo.
    let warm_unknown: Vec<&String> = config
        .warm
        .workers
        .iter()
        .filter(|w| !summary.available_species.contains(w))
        .collect();
    if out.json {
        out.json_line(&json!({
            "config": args.config.config,
            "hall": config.hall,
            "controls_scope": config.routing.controls_scope,
            "rules": {"path": config.paths.rules, "count": hall.rules.rules().len(), "shadows": shadows},
            "registry": {"path": config.paths.registry_dir, "summary": summary},
            "python": hall.python,
            "memory_bound": memory,
            "run_limits": super::envelope::run_limits_json(&probe),
            "warm": {"config": config.warm, "not_enrolled": warm_unknown},
        }))?;
        return Ok(exit::OK);
    }
    let h = &config.hall;
    out.line(format!("config:    {}", args.config.config.display()))?;
    out.line(format!(
        "tenants:   {}",
        if h.require_signatory {
            format!("signatory only: {}", h.allowed_tenants.join(", "))
        } else {
            "any tenant (require_signatory = false)".to_owned()
        }
    ))?;
    out.line(format!(
        "floors:    attestation={} correlation_id={} required_controls={} blast_in_prod={} privilege_envelopes={}",
        h.require_worker_attestation,
        h.enforce_correlation_id,
        h.enforce_required_controls,
        h.enforce_blast_scoring_in_prod,
        h.enforce_privilege_envelopes
    ))?;
    out.line(format!(
        "controls:  scope {}",
        match config.routing.controls_scope {
            crate::registry::ControlsScope::Global => "global (PyHall: one fleet-wide set)",
            crate::registry::ControlsScope::PerWorker =>
                "per_worker (the selected worker must implement the rule's controls)",
        }
    ))?;
    out.line(format!(
        "rules:     {} rules from {}, {} shadow warning(s)",
        hall.rules.rules().len(),
        config.paths.rules.display(),
        shadows.len()
    ))?;
    out.line(format!(
        "registry:  {} worker(s) from {}; species: {}",
        summary.enrolled_workers,
        config.paths.registry_dir.display(),
        summary.available_species.join(", ")
    ))?;
    for (cap, species) in &summary.capabilities_mapped {
        out.line(format!("           {cap} -> {}", species.join(", ")))?;
    }
    let list = |paths: &[std::path::PathBuf]| {
        paths
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match &hall.python {
        Some(p) => {
            out.line(format!(
                "python:    {} at {} ({})",
                p.describe(),
                p.interpreter.display(),
                match &config.envelope.python {
                    Some(c) => format!("[envelope] python = {:?}", c.display().to_string()),
                    None => format!(
                        "the default; [envelope] python is not set, {} was found",
                        p.requested.display()
                    ),
                }
            ))?;
            out.line(format!("           execute: {}", list(&p.paths.execute)))?;
            out.line(format!("           read:    {}", list(&p.paths.read)))?;
            for note in &p.notes {
                out.line(format!("           note: {note}"))?;
            }
        }
        None => out.line(format!(
            "python:    none ({} do not exist; set [envelope] python): Python packages are refused",
            crate::envelope::python::DEFAULT_CANDIDATES.join(", ")
        ))?,
    }
    out.line(format!(
        "memory:    {}",
        super::envelope::memory_line(&memory)
            .trim_start_matches("memory bound")
            .trim_start()
    ))?;
    for (what, line) in super::envelope::run_limits(&probe) {
        out.line(format!("{what}: {line}"))?;
    }
    let w = &config.warm;
    if w.workers.is_empty() {
        out.line("warm:      off (every run starts its worker when the request arrives)")?;
    } else {
        out.line(format!(
            "warm:      {} (up to {} idle each, {} in all, {} MiB of idle memory; protocol 2 \
             packages only)",
            w.workers.join(", "),
            w.per_worker,
            w.max_instances,
            w.memory_budget_bytes >> 20
        ))?;
        for species in &warm_unknown {
            out.line(format!(
                "           note: {species} is not enrolled: no instance of it will ever start"
            ))?;
        }
    }
    Ok(exit::OK)
}
