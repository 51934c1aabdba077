//! `wcp-hall policy` subcommands: `check` (policy sets against the schema, golden decisions,
//! profiles) and `eval` (decide one request).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::{CliError, Out, exit, read_input};
use crate::policy::engine::{CedarEngine, PolicyEngine};
use crate::policy::gate::HallGate;
use crate::policy::golden::{self, GoldenReport};
use crate::policy::profile::{EnvProfiles, Profile, ProfileSet};
use crate::policy::request::PolicyRequest;
use crate::policy::source::{
    Diagnostic, DiagnosticKind, PolicyLoadError, compile, manifest_path, read_sources,
};
use crate::policy::{Effect, Outcome};
use crate::wcp::Env;

#[derive(Debug, clap::Subcommand)]
pub enum PolicyCommand {
    /// Validate policy sets against the WCP schema, replay their golden decisions and check
    /// profiles. Errors point at file:line:column.
    ///
    /// Exit 0 when everything is valid and every golden decision is reproduced; 1 when a policy,
    /// manifest or profile is invalid or a golden decision differs; 65 when a golden file is
    /// malformed; 66 when a file cannot be read.
    Check(CheckArgs),
    /// Decide one PolicyRequest (JSON or TOML) with a policy set, or with a profile (its policy
    /// set plus its blast maxima). Prints the verdict and the policies that decided.
    ///
    /// Exit 0 ALLOW, 1 DENY or REQUIRE_HUMAN, 65 malformed request, 66 unreadable file.
    Eval(EvalArgs),
}

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Policy set manifests (policyset.toml) or the directories holding them.
    pub sets: Vec<PathBuf>,
    /// A golden decision file to replay instead of the one the manifest names (one set only).
    #[arg(long)]
    pub golden: Option<PathBuf>,
    /// A profile directory (prof.*.toml) to check; each profile's policy set is checked too.
    #[arg(long)]
    pub profiles: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    /// The policy set (manifest or directory). Ignored with --profile.
    #[arg(long, required_unless_present = "profile")]
    pub set: Option<PathBuf>,
    /// A profile file (prof.*.toml): decide as the Hall does, blast maxima included.
    #[arg(long)]
    pub profile: Option<PathBuf>,
    /// The request: a PolicyRequest as JSON or TOML, or `-` for stdin.
    #[arg(default_value = "-")]
    pub request: PathBuf,
}

pub fn run(cmd: PolicyCommand, out: &mut Out) -> Result<u8, CliError> {
    match cmd {
        PolicyCommand::Check(args) => check(args, out),
        PolicyCommand::Eval(args) => eval(args, out),
    }
}

fn unreadable(e: PolicyLoadError) -> CliError {
    match e {
        PolicyLoadError::Read { path, source } => CliError::new(
            exit::NOINPUT,
            "input_unreadable",
            format!("cannot read {}: {source}", path.display()),
        )
        .hint(
            "pass a policy set directory holding policyset.toml, e.g. wcp-hall policy check policies/cedar",
        ),
        PolicyLoadError::Invalid(d) => CliError::new(
            exit::DENIED,
            "policy_invalid",
            d.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("\n"),
        ),
    }
}

/// The outcome of checking one policy set.
struct SetCheck {
    manifest: String,
    version: Option<String>,
    counts: Option<(usize, usize)>,
    diagnostics: Vec<Diagnostic>,
    golden: Option<GoldenReport>,
    golden_malformed: bool,
}

fn check_set(path: &Path, golden_override: Option<&Path>) -> Result<SetCheck, CliError> {
    let manifest = manifest_path(path).display().to_string();
    let mut result = SetCheck {
        manifest,
        version: None,
        counts: None,
        diagnostics: Vec::new(),
        golden: None,
        golden_malformed: false,
    };
    let mut sources = match read_sources(path) {
        Ok(s) => s,
        Err(PolicyLoadError::Invalid(d)) => {
            result.diagnostics = d;
            return Ok(result);
        }
        Err(e) => return Err(unreadable(e)),
    };
    if let Some(g) = golden_override {
        let text = read_input(g)?;
        sources.golden = Some(crate::policy::source::SourceFile {
            rel: g.display().to_string(),
            display: g.display().to_string(),
            text,
        });
    }
    let set = match compile(&sources) {
        Ok(s) => s,
        Err(e) => {
            result.diagnostics = e.diagnostics().to_vec();
            return Ok(result);
        }
    };
    result.version = Some(set.policy_version().to_owned());
    let permits = set
        .policies()
        .filter(|p| p.effect == Effect::Permit)
        .count();
    result.counts = Some((permits, set.len() - permits));
    let engine = CedarEngine::new(set)
        .map_err(|e| CliError::new(exit::DENIED, "policy_invalid", e.to_string()))?;
    if let Some(file) = &sources.golden {
        match golden::parse(&file.text, &file.display) {
            Ok(suite) => {
                result.golden = Some(golden::run(&engine, &suite, Some(engine.policy_set())));
            }
            Err(e) => {
                result.golden_malformed = true;
                result.diagnostics.extend(e.diagnostics().iter().cloned());
            }
        }
    }
    Ok(result)
}

fn diagnostics_json(list: &[Diagnostic]) -> Vec<Value> {
    list.iter()
        .map(|d| serde_json::to_value(d).unwrap_or(Value::Null))
        .collect()
}

fn check(args: CheckArgs, out: &mut Out) -> Result<u8, CliError> {
    if args.sets.is_empty() && args.profiles.is_none() {
        return Err(CliError::new(
            exit::USAGE,
            "usage",
            "nothing to check: name a policy set or --profiles DIR",
        )
        .hint("wcp-hall policy check policies/cedar --profiles policies/profiles"));
    }
    if args.golden.is_some() && args.sets.len() != 1 {
        return Err(CliError::new(
            exit::USAGE,
            "usage",
            "--golden replays one file against one policy set; name exactly one set",
        ));
    }
    // Profiles first: they name more policy sets to check.
    let mut profile_report = None;
    let mut sets: Vec<PathBuf> = args.sets.clone();
    if let Some(dir) = &args.profiles {
        match ProfileSet::load_dir(dir) {
            Ok(set) => {
                for p in set.iter() {
                    sets.push(p.policy_set.clone());
                }
                profile_report = Some((dir.clone(), Some(set), Vec::new()));
            }
            Err(PolicyLoadError::Invalid(d)) => profile_report = Some((dir.clone(), None, d)),
            Err(e) => return Err(unreadable(e)),
        }
    }
    // Each distinct set once (by canonical manifest path when it resolves).
    let mut seen = BTreeSet::new();
    let mut checks = Vec::new();
    for (i, path) in sets.iter().enumerate() {
        let key =
            std::fs::canonicalize(manifest_path(path)).unwrap_or_else(|_| manifest_path(path));
        if !seen.insert(key) {
            continue;
        }
        let golden = if i == 0 { args.golden.as_deref() } else { None };
        checks.push(check_set(path, golden)?);
    }

    let set_ok = |c: &SetCheck| {
        c.diagnostics.is_empty() && c.golden.as_ref().is_none_or(|g| g.failed() == 0)
    };
    let profiles_ok = profile_report.as_ref().is_none_or(|(_, _, d)| d.is_empty());
    let ok = checks.iter().all(set_ok) && profiles_ok;
    let malformed = checks.iter().any(|c| c.golden_malformed);

    if out.json {
        let sets_json: Vec<Value> = checks
            .iter()
            .map(|c| {
                json!({
                    "manifest": c.manifest,
                    "valid": c.version.is_some() && !c.golden_malformed,
                    "policy_version": c.version,
                    "permits": c.counts.map(|x| x.0),
                    "forbids": c.counts.map(|x| x.1),
                    "diagnostics": diagnostics_json(&c.diagnostics),
                    "golden": c.golden.as_ref().map(|g| json!({
                        "file": g.file,
                        "passed": g.passed(),
                        "failed": g.failed(),
                        "results": g.results,
                    })),
                })
            })
            .collect();
        let profiles_json = profile_report.as_ref().map(|(dir, set, d)| {
            json!({
                "dir": dir.display().to_string(),
                "valid": d.is_empty(),
                "profiles": set.as_ref().map(|s| s.iter().map(|p| p.id.clone()).collect::<Vec<_>>()),
                "diagnostics": diagnostics_json(d),
            })
        });
        out.json_line(&json!({"ok": ok, "sets": sets_json, "profiles": profiles_json}))?;
    } else {
        for c in &checks {
            for d in &c.diagnostics {
                out.line(d.to_string())?;
            }
            match (&c.version, c.counts) {
                (Some(v), Some((permits, forbids))) => out.line(format!(
                    "{}: {v}: {} policies ({permits} permit, {forbids} forbid), valid against the schema",
                    c.manifest,
                    permits + forbids
                ))?,
                _ => out.line(format!(
                    "{}: INVALID ({} problem{})",
                    c.manifest,
                    c.diagnostics.len(),
                    if c.diagnostics.len() == 1 { "" } else { "s" }
                ))?,
            }
            if let Some(g) = &c.golden {
                for r in g.results.iter().filter(|r| !r.passed) {
                    out.line(format!(
                        "  FAIL {}:{}:{} {:?}: {}",
                        g.file,
                        r.line,
                        r.column,
                        r.name,
                        r.problem.as_deref().unwrap_or("")
                    ))?;
                }
                out.line(format!(
                    "golden {}: {} passed, {} failed",
                    g.file,
                    g.passed(),
                    g.failed()
                ))?;
            }
        }
        if let Some((dir, set, d)) = &profile_report {
            for x in d {
                out.line(x.to_string())?;
            }
            match set {
                Some(s) => out.line(format!(
                    "profiles {}: {} valid ({})",
                    dir.display(),
                    s.len(),
                    s.iter()
                        .map(|p| p.id.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))?,
                None => out.line(format!("profiles {}: INVALID", dir.display()))?,
            }
        }
        out.line(if ok { "ok" } else { "FAILED" })?;
    }
    Ok(if malformed {
        exit::DATAERR
    } else if ok {
        exit::OK
    } else {
        exit::DENIED
    })
}

/// Reads a PolicyRequest from JSON (when the text starts with `{`) or TOML.
fn parse_request(text: &str, origin: &str) -> Result<PolicyRequest, CliError> {
    let bad = |msg: String| {
        CliError::new(exit::DATAERR, "request_invalid", msg).hint(
            "a PolicyRequest has tenant_id, capability_id, env, data_label, tenant_risk, qos_class and optionally dry_run, caller, pyhall_blast_score, chain_blast_prior, worker",
        )
    };
    if text.trim_start().starts_with('{') {
        crate::json::from_str(text).map_err(|e| bad(format!("{origin}: {e}")))
    } else {
        toml::from_str(text).map_err(|e| {
            let d = Diagnostic::from_toml(DiagnosticKind::Golden, origin, text, &e);
            bad(format!("{}:{}:{}: {}", d.file, d.line, d.column, d.message))
        })
    }
}

fn eval(args: EvalArgs, out: &mut Out) -> Result<u8, CliError> {
    let origin = args.request.display().to_string();
    let request = parse_request(&read_input(&args.request)?, &origin)?;
    let (outcome, value, human) = if let Some(profile_path) = &args.profile {
        let profile = Profile::load(profile_path).map_err(unreadable)?;
        let id = profile.id.clone();
        let set = ProfileSet::from_profiles([profile]);
        let selection = EnvProfiles::select(&set, Env::ALL.iter().map(|&e| (e, id.as_str())))
            .map_err(|e| CliError::new(exit::CONFIG, "profile_invalid", e.to_string()))?;
        let gate = HallGate::load(&selection).map_err(unreadable)?;
        let d = gate
            .decide(&request)
            .map_err(|e| CliError::new(exit::DATAERR, "request_invalid", e.to_string()))?;
        let human = format!(
            "{} ({}; profile {})\n{}",
            d.outcome, d.policy_version, id, d.summary
        );
        (
            d.outcome,
            serde_json::to_value(&d).unwrap_or(Value::Null),
            human,
        )
    } else {
        let set = args.set.as_deref().unwrap_or(Path::new("."));
        let (engine, _) = CedarEngine::load(set).map_err(unreadable)?;
        let v = engine
            .evaluate(&request)
            .map_err(|e| CliError::new(exit::DATAERR, "request_invalid", e.to_string()))?;
        let human = format!("{} ({})\n{}", v.outcome, v.policy_version, v.summary());
        (
            v.outcome,
            serde_json::to_value(&v).unwrap_or(Value::Null),
            human,
        )
    };
    if out.json {
        out.json_line(&value)?;
    } else {
        out.line(human)?;
    }
    Ok(if outcome == Outcome::Allow {
        exit::OK
    } else {
        exit::DENIED
    })
}
