//! `wcp-hall attest …` (package hashes, signing, verification), and the `keygen` and `scaffold`
//! commands (public [`KeygenArgs`]/[`run_keygen`] and [`ScaffoldArgs`]/[`run_scaffold`], also
//! reachable as `attest keygen` / `attest scaffold`).

use std::path::{Path, PathBuf};

use serde_json::json;

use super::{CliError, Out, exit};
use crate::attest::manifest_v2;
use crate::attest::scaffold::{self, ScaffoldError};
use crate::attest::sign::{self, SignError, SignRequest};
use crate::attest::{
    HmacKey, HmacKeyError, PackageStore, ProtectionStatus, StoreError, TreeError, TreeLimits,
    TrustPolicy, UtcTime, VerifyRequest, hash_tree, verify_package,
};
use crate::crypto::{KeyError, KeyPair};

#[derive(Debug, clap::Subcommand)]
pub enum AttestCommand {
    /// Print the awp.v1 package digest of DIR (PyHall's canonical_package_hash) and nothing
    /// else. Exit 2 if the package holds links, special files or unsafe names.
    Hash(HashArgs),
    /// Sign the package in DIR: awp.v2 (Ed25519, DSSE, in-toto; default) or awp.v1 (PyHall's
    /// HMAC manifest.json).
    Sign(SignArgs),
    /// Verify the package in DIR against its manifest (either format). Exit 1 if denied.
    Verify(VerifyArgs),
    /// Generate an Ed25519 signing key (same as `wcp-hall keygen`).
    Keygen(KeygenArgs),
    /// Create PyHall's worker package layout (same as `wcp-hall scaffold`).
    Scaffold(ScaffoldArgs),
    /// Check a namespace trust policy file and show what it trusts.
    CheckTrust(CheckTrustArgs),
}

#[derive(Debug, clap::Args)]
pub struct HashArgs {
    /// The package directory.
    pub dir: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// in-toto Statement in a DSSE envelope, Ed25519 (written to DIR/manifest.sig).
    V2,
    /// PyHall's HMAC-SHA256 manifest.json (legacy: any verifier can forge).
    V1,
}

#[derive(Debug, clap::Args)]
pub struct SignArgs {
    /// The package directory.
    pub dir: PathBuf,
    /// The worker id (org.<ns>.… or x.<ns>.…): its namespace is what verifiers trust.
    #[arg(long)]
    pub worker_id: String,
    /// The worker species id (wrk.…).
    #[arg(long)]
    pub species: String,
    /// The worker version.
    #[arg(long = "worker-version", value_name = "VERSION")]
    pub worker_version: String,
    /// Origin label: local, ci or agent.
    #[arg(long, default_value = "local")]
    pub build_source: String,
    #[arg(long, value_enum, default_value_t = Format::V2)]
    pub format: Format,
    /// Ed25519 private key file(s) for awp.v2 (repeat for threshold signing).
    #[arg(long = "key", value_name = "FILE")]
    pub keys: Vec<PathBuf>,
    /// HMAC key file for awp.v1 (mode 0600; never read from the environment).
    #[arg(long, value_name = "FILE")]
    pub hmac_key_file: Option<PathBuf>,
    /// Where to write the manifest (default DIR/manifest.sig for v2, DIR/manifest.json for v1).
    #[arg(long, short = 'o')]
    pub out: Option<PathBuf>,
    /// Build time, YYYY-MM-DDTHH:MM:SSZ (default: now).
    #[arg(long)]
    pub built_at: Option<String>,
    /// awp.v2 only: the manifest stops verifying after this time (YYYY-MM-DDTHH:MM:SSZ).
    #[arg(long)]
    pub expires_at: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// The package directory.
    pub dir: PathBuf,
    /// The worker id the package must be for (from the registry, not from the manifest).
    #[arg(long)]
    pub worker_id: String,
    /// The worker species id the package must be for.
    #[arg(long)]
    pub species: String,
    /// The manifest (default: DIR/manifest.sig if it exists, else DIR/manifest.json).
    #[arg(long)]
    pub manifest: Option<PathBuf>,
    /// Namespace trust policy file (required for awp.v2; for awp.v1 adds namespace, ban and
    /// expiry checks).
    #[arg(long, value_name = "FILE")]
    pub trust: Option<PathBuf>,
    /// HMAC key file for awp.v1 manifests.
    #[arg(long, value_name = "FILE")]
    pub hmac_key_file: Option<PathBuf>,
    /// Copy the verified package into this store (read-only, content-addressed) and print the
    /// path to run it from. Without it the source is only hashed in place.
    #[arg(long, value_name = "DIR")]
    pub store: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct KeygenArgs {
    /// Where to write the private key (mode 0600; never overwritten). The public key goes to
    /// PATH.pub.
    pub path: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct ScaffoldArgs {
    /// The package directory to create.
    pub dir: PathBuf,
    /// Use this file as code/worker_logic.py instead of the stub.
    #[arg(long, value_name = "FILE")]
    pub logic: Option<PathBuf>,
    /// Replace an existing code/worker_logic.py.
    #[arg(long)]
    pub overwrite: bool,
}

#[derive(Debug, clap::Args)]
pub struct CheckTrustArgs {
    /// The trust policy file (schema wcp-hall-trust/1).
    pub file: PathBuf,
}

pub fn run(cmd: AttestCommand, out: &mut Out) -> Result<u8, CliError> {
    match cmd {
        AttestCommand::Hash(a) => run_hash(a, out),
        AttestCommand::Sign(a) => run_sign(a, out),
        AttestCommand::Verify(a) => run_verify(a, out),
        AttestCommand::Keygen(a) => run_keygen(a, out),
        AttestCommand::Scaffold(a) => run_scaffold(a, out),
        AttestCommand::CheckTrust(a) => run_check_trust(a, out),
    }
}

pub(super) fn tree_error(dir: &Path, e: TreeError) -> CliError {
    match e {
        TreeError::Unsafe { .. } | TreeError::Limit { .. } => {
            CliError::new(exit::USAGE, "package_unsafe", format!("{}: {e}", dir.display())).hint(
                "the Hall refuses links, FIFOs, sockets, devices and names with control characters or invalid UTF-8; fix the package and retry",
            )
        }
        TreeError::NotADirectory { .. } => {
            CliError::new(exit::USAGE, "not_a_directory", e.to_string())
                .hint("pass the package directory (the one holding code/)")
        }
        TreeError::Io { .. } | TreeError::Copy { .. } => {
            CliError::new(exit::NOINPUT, "package_unreadable", format!("{}: {e}", dir.display()))
        }
    }
}

fn parse_time(flag: &str, text: &str) -> Result<UtcTime, CliError> {
    UtcTime::parse(text)
        .map_err(|e| CliError::new(exit::USAGE, "bad_time", format!("--{flag}: {e}")))
}

fn key_error(e: KeyError) -> CliError {
    match e {
        KeyError::Read { .. } => CliError::new(exit::NOINPUT, "key_unreadable", e.to_string()),
        KeyError::Write { .. } => CliError::new(exit::IOERR, "key_write_failed", e.to_string())
            .hint(super::key_write_hint(&e)),
        KeyError::Random(_) => CliError::new(exit::IOERR, "no_randomness", e.to_string()),
        _ => CliError::new(exit::DATAERR, "key_invalid", e.to_string()),
    }
}

fn hmac_error(e: HmacKeyError) -> CliError {
    match e {
        HmacKeyError::Read { .. } => {
            CliError::new(exit::NOINPUT, "hmac_key_unreadable", e.to_string())
        }
        _ => CliError::new(exit::DATAERR, "hmac_key_invalid", e.to_string()),
    }
}

fn run_hash(args: HashArgs, out: &mut Out) -> Result<u8, CliError> {
    let tree =
        hash_tree(&args.dir, &TreeLimits::default()).map_err(|e| tree_error(&args.dir, e))?;
    if out.json {
        out.json_line(&tree)?;
    } else {
        out.line(&tree.digest)?;
    }
    Ok(exit::OK)
}

fn run_sign(args: SignArgs, out: &mut Out) -> Result<u8, CliError> {
    let built_at = match &args.built_at {
        Some(t) => parse_time("built-at", t)?,
        None => UtcTime::now(),
    };
    let expires_at = args
        .expires_at
        .as_deref()
        .map(|t| parse_time("expires-at", t))
        .transpose()?;
    let req = SignRequest {
        package_root: &args.dir,
        worker_id: &args.worker_id,
        worker_species_id: &args.species,
        worker_version: &args.worker_version,
        build_source: &args.build_source,
        built_at,
        expires_at,
        limits: TreeLimits::default(),
    };
    let sign_error = |e: SignError| match e {
        SignError::Tree(t) => tree_error(&args.dir, t),
        SignError::Namespace(n) => CliError::new(exit::USAGE, "bad_worker_id", n.to_string()),
        SignError::NoKeys => CliError::new(exit::USAGE, "no_keys", e.to_string())
            .hint("pass --key FILE (create one with `wcp-hall keygen FILE`)"),
        SignError::Encoding(_) => CliError::new(exit::DATAERR, "bad_manifest", e.to_string()),
    };
    let (path, digest, text, signers) = match args.format {
        Format::V1 => {
            if !args.keys.is_empty() || expires_at.is_some() {
                return Err(CliError::new(
                    exit::USAGE,
                    "bad_usage",
                    "--key and --expires-at are awp.v2 options; awp.v1 takes --hmac-key-file",
                ));
            }
            let key_path = args.hmac_key_file.as_deref().ok_or_else(|| {
                CliError::new(
                    exit::USAGE,
                    "no_hmac_key",
                    "awp.v1 needs --hmac-key-file FILE",
                )
                .hint("the key is read from a file (mode 0600), never from the environment")
            })?;
            let key = HmacKey::read(key_path).map_err(hmac_error)?;
            if key.is_empty() {
                return Err(CliError::new(
                    exit::DATAERR,
                    "hmac_key_invalid",
                    format!("{} is empty", key_path.display()),
                ));
            }
            let (tree, m) = sign::sign_v1(&req, &key).map_err(sign_error)?;
            let path = args
                .out
                .clone()
                .unwrap_or_else(|| args.dir.join("manifest.json"));
            (path, tree.digest, m.to_json(), Vec::new())
        }
        Format::V2 => {
            if args.hmac_key_file.is_some() {
                return Err(CliError::new(
                    exit::USAGE,
                    "bad_usage",
                    "--hmac-key-file is for --format v1; awp.v2 takes --key FILE",
                ));
            }
            let keys = args
                .keys
                .iter()
                .map(|p| KeyPair::read(p))
                .collect::<Result<Vec<_>, _>>()
                .map_err(key_error)?;
            let refs: Vec<&KeyPair> = keys.iter().collect();
            let (tree, _, env) = sign::sign_v2(&req, &refs).map_err(sign_error)?;
            let path = args
                .out
                .clone()
                .unwrap_or_else(|| args.dir.join(manifest_v2::DEFAULT_FILE_NAME));
            let ids = keys.iter().map(|k| k.id().0.clone()).collect();
            (path, tree.digest, sign::envelope_text(&env), ids)
        }
    };
    sign::write_manifest(&path, &text).map_err(|e| {
        CliError::new(
            exit::IOERR,
            "manifest_write_failed",
            format!("cannot write {}: {e}", path.display()),
        )
    })?;
    let format = match args.format {
        Format::V1 => "awp.v1",
        Format::V2 => "awp.v2",
    };
    if out.json {
        out.json_line(&json!({
            "format": format,
            "manifest": path,
            "package_hash": digest,
            "worker_id": args.worker_id,
            "signer_key_ids": signers,
        }))?;
    } else {
        out.line(format!("signed {format} {digest} -> {}", path.display()))?;
        for id in signers {
            out.line(format!("  key {id}"))?;
        }
    }
    Ok(exit::OK)
}

fn run_verify(args: VerifyArgs, out: &mut Out) -> Result<u8, CliError> {
    let manifest = args.manifest.clone().unwrap_or_else(|| {
        let v2 = args.dir.join(manifest_v2::DEFAULT_FILE_NAME);
        if v2.exists() {
            v2
        } else {
            args.dir.join("manifest.json")
        }
    });
    let trust = args
        .trust
        .as_deref()
        .map(|p| {
            TrustPolicy::load(p).map_err(|e| {
                CliError::new(
                    exit::CONFIG,
                    "trust_policy_invalid",
                    format!("{}: {e}", p.display()),
                )
            })
        })
        .transpose()?;
    let hmac_key = args
        .hmac_key_file
        .as_deref()
        .map(HmacKey::read)
        .transpose()
        .map_err(hmac_error)?;
    let store = args
        .store
        .as_deref()
        .map(PackageStore::open)
        .transpose()
        .map_err(|e| match e {
            StoreError::Root { .. } => CliError::new(exit::CONFIG, "store_invalid", e.to_string()),
            _ => CliError::new(exit::IOERR, "store_failed", e.to_string()),
        })?;
    let report = verify_package(&VerifyRequest {
        package_root: &args.dir,
        manifest_path: &manifest,
        worker_id: &args.worker_id,
        worker_species_id: &args.species,
        trust: trust.as_ref(),
        hmac_key: hmac_key.as_ref(),
        store: store.as_ref(),
        limits: TreeLimits::default(),
        now: UtcTime::now(),
    });
    if out.json {
        out.json_line(&report)?;
    } else if report.ok {
        out.line(format!("ok: {}", report.message))?;
        if let Some(p) = &report.store_path {
            out.line(format!("  run from: {}", p.display()))?;
        }
        if report.excluded_count > 0 {
            let more = report.excluded_count - report.excluded.len();
            out.line(format!(
                "  excluded (not hashed, not copied): {}{}",
                report.excluded.join(", "),
                if more > 0 {
                    format!(" and {more} more")
                } else {
                    String::new()
                }
            ))?;
        }
        for p in &report.protections {
            let status = match p.status {
                ProtectionStatus::Applied => "applied",
                ProtectionStatus::NotApplied => "NOT applied",
                ProtectionStatus::NotApplicable => "n/a",
            };
            out.line(format!("  {:<20} {status}: {}", p.id, p.detail))?;
        }
    } else {
        out.line(format!(
            "denied: {}: {}",
            report.code_str().unwrap_or("ATTEST_UNKNOWN"),
            report.message
        ))?;
    }
    Ok(if report.ok { exit::OK } else { exit::DENIED })
}

/// `wcp-hall keygen PATH`: a fresh Ed25519 key (private mode 0600, public at PATH.pub) and the
/// trust-policy entry for it.
pub fn run_keygen(args: KeygenArgs, out: &mut Out) -> Result<u8, CliError> {
    let key = KeyPair::generate().map_err(key_error)?;
    let public_path = key.write(&args.path).map_err(key_error)?;
    let entry = json!({"public_key": key.public().to_base64(), "key_id": key.id()});
    if out.json {
        out.json_line(&json!({
            "private_key": args.path,
            "public_key_file": public_path,
            "key_id": key.id(),
            "trust_policy_entry": entry,
        }))?;
    } else {
        out.line(format!(
            "wrote {} (private, mode 0600) and {}",
            args.path.display(),
            public_path.display()
        ))?;
        out.line(format!("key id: {}", key.id()))?;
        out.line(format!("trust policy entry: {entry}"))?;
    }
    Ok(exit::OK)
}

/// `wcp-hall scaffold DIR`: PyHall's package layout.
pub fn run_scaffold(args: ScaffoldArgs, out: &mut Out) -> Result<u8, CliError> {
    let outcome = scaffold::scaffold(&args.dir, args.logic.as_deref(), args.overwrite).map_err(
        |e| match e {
            ScaffoldError::Logic { .. } => {
                CliError::new(exit::NOINPUT, "logic_unreadable", e.to_string())
            }
            ScaffoldError::LogicExists(_) => {
                CliError::new(exit::IOERR, "would_overwrite", e.to_string())
            }
            _ => CliError::new(exit::IOERR, "scaffold_failed", e.to_string()),
        },
    )?;
    let digest = hash_tree(&args.dir, &TreeLimits::default())
        .map(|t| t.digest)
        .map_err(|e| tree_error(&args.dir, e))?;
    if out.json {
        out.json_line(&json!({"scaffold": outcome, "package_hash": digest}))?;
    } else {
        out.line(format!("scaffolded {}", args.dir.display()))?;
        for w in &outcome.written {
            out.line(format!("  wrote {w}"))?;
        }
        for k in &outcome.kept {
            out.line(format!("  kept  {k}"))?;
        }
        out.line(format!("package hash: {digest}"))?;
    }
    Ok(exit::OK)
}

fn run_check_trust(args: CheckTrustArgs, out: &mut Out) -> Result<u8, CliError> {
    let p = TrustPolicy::load(&args.file).map_err(|e| match e {
        crate::attest::TrustError::Read { .. } => {
            CliError::new(exit::NOINPUT, "trust_policy_unreadable", e.to_string())
        }
        _ => CliError::new(
            exit::DATAERR,
            "trust_policy_invalid",
            format!("{}: {e}", args.file.display()),
        ),
    })?;
    let namespaces: Vec<_> = p
        .namespaces
        .iter()
        .map(|(ns, n)| {
            json!({
                "namespace": ns,
                "threshold": n.threshold,
                "accept_awp_v1": n.accept_awp_v1,
                "keys": n.keys.iter().map(|k| json!({
                    "key_id": k.key.id(),
                    "not_before": k.not_before,
                    "not_after": k.not_after,
                    "revoked": p.revoked.contains_key(k.key.id()),
                    "comment": k.comment,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    if out.json {
        out.json_line(&json!({
            "version": p.version,
            "sha256": p.sha256,
            "expires_at": p.expires_at,
            "namespaces": namespaces,
            "revoked_keys": p.revoked.keys().collect::<Vec<_>>(),
            "banned_digests": p.banned.keys().collect::<Vec<_>>(),
        }))?;
    } else {
        out.line(format!(
            "trust policy version {} (sha256 {}){}",
            p.version,
            p.sha256,
            p.expires_at
                .map(|t| format!(", expires {t}"))
                .unwrap_or_default()
        ))?;
        for (ns, n) in &p.namespaces {
            out.line(format!(
                "  {ns}: {} of {} key(s){}",
                n.threshold,
                n.keys.len(),
                if n.accept_awp_v1 {
                    ", accepts awp.v1 (HMAC)"
                } else {
                    ""
                }
            ))?;
            for k in &n.keys {
                let revoked = if p.revoked.contains_key(k.key.id()) {
                    " REVOKED"
                } else {
                    ""
                };
                out.line(format!(
                    "    {} [{} .. {}]{revoked}",
                    k.key.id(),
                    k.not_before
                        .map(|t| t.to_string())
                        .unwrap_or_else(|| "-".into()),
                    k.not_after
                        .map(|t| t.to_string())
                        .unwrap_or_else(|| "-".into()),
                ))?;
            }
        }
        out.line(format!(
            "  {} revoked key(s), {} banned digest(s)",
            p.revoked.len(),
            p.banned.len()
        ))?;
    }
    Ok(exit::OK)
}
