//! `wcp-hall init`: a persistent state directory for real use.
//!
//! ```text
//! <dir>/                 0711 (an unprivileged worker uid must reach store/, nothing more)
//!   hall.toml            starter configuration pointing at everything below
//!   rules.json           no rules yet: every request is denied until you add some
//!   trust.json           wcp-hall-trust/1: the signing key is trusted for --namespace
//!   keys/                0700
//!     signing.key(.pub)  package signing key (awp.v2), 0600
//!     receipts.key(.pub) evidence receipt signing key, 0600
//!   registry/  store/  receipts/ (0700)
//!   profiles/  cedar/    the bundled WCP profiles and Cedar policy set
//! ```
//!
//! Idempotent: whatever already exists is kept and reported as kept; a second run creates
//! nothing. Keys are never overwritten or regenerated: an existing key file that is not a
//! usable private key (wrong format, group/other-readable, a link), or a public key that does
//! not belong to its private key, stops init with exit 74 and touches nothing. Every file is
//! created with `O_CREAT|O_EXCL`, so a file appearing concurrently is never clobbered either.
//!
//! Threat model: the directory is the Hall's. A pre-existing link where a key or the trust
//! policy should be is refused rather than followed; the trust policy and configuration found
//! in place are checked (they must load, and the trust policy must trust the signing key for
//! the namespace) but never rewritten.

use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::{CliError, Out, exit};
use crate::attest::TrustPolicy;
use crate::crypto::{KeyPair, PublicKey};

#[derive(Debug, clap::Args)]
pub struct InitArgs {
    /// The state directory (default: $STATE_DIRECTORY, else /var/lib/wcp-hall as root, else
    /// $XDG_STATE_HOME/wcp-hall).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// The signer namespace the new package-signing key is trusted for: org.<name> or x.<name>.
    /// Its name is also the starter tenant id.
    #[arg(long, default_value = "org.local")]
    pub namespace: String,
    /// Where the bundled profiles and Cedar policies are copied from (default: policies/ of the
    /// source tree this binary was built from).
    #[arg(long, value_name = "DIR")]
    pub policies: Option<PathBuf>,
}

/// What happened to one item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Created,
    Kept,
}

struct Item {
    path: PathBuf,
    what: String,
    action: Action,
}

struct Report {
    dir: PathBuf,
    items: Vec<Item>,
}

impl Report {
    fn add(&mut self, path: &Path, what: impl Into<String>, action: Action) {
        self.items.push(Item {
            path: path.to_owned(),
            what: what.into(),
            action,
        });
    }
    fn rel(&self, p: &Path) -> String {
        p.strip_prefix(&self.dir)
            .map(|r| r.display().to_string())
            .unwrap_or_else(|_| p.display().to_string())
    }
}

fn io_error(path: &Path, e: impl std::fmt::Display) -> CliError {
    CliError::new(
        exit::IOERR,
        "write_failed",
        format!("{}: {e}", path.display()),
    )
}

/// The first absolute directory of a systemd `*_DIRECTORY` variable.
fn env_dir(var: &str) -> Option<PathBuf> {
    let v = std::env::var_os(var)?;
    let first = v.to_str()?.split(':').next()?.to_owned();
    let p = PathBuf::from(first);
    p.is_absolute().then_some(p)
}

/// The configuration of the Debian package's systemd service.
const PACKAGED_CONFIG: &str = "/etc/wcp-hall/hall.toml";

/// `$STATE_DIRECTORY`, else `/var/lib/wcp-hall` as root, else `$XDG_STATE_HOME/wcp-hall`
/// (`~/.local/state/wcp-hall`).
pub fn default_dir() -> Option<PathBuf> {
    if let Some(d) = env_dir("STATE_DIRECTORY") {
        return Some(d);
    }
    if nix::unistd::geteuid().is_root() {
        return Some(PathBuf::from("/var/lib/wcp-hall"));
    }
    if let Some(d) = env_dir("XDG_STATE_HOME") {
        return Some(d.join("wcp-hall"));
    }
    env_dir("HOME").map(|h| h.join(".local/state/wcp-hall"))
}

/// `org.<name>` / `x.<name>` with one label of a–z, 0–9, `-` (what trust policies accept).
fn check_namespace(ns: &str) -> Result<String, CliError> {
    let bad = || {
        CliError::new(
            exit::USAGE,
            "bad_namespace",
            format!("--namespace {ns:?} is not org.<name> or x.<name>"),
        )
        .hint("one label of a-z, 0-9 and '-', e.g. --namespace org.acme")
    };
    let (prefix, name) = ns.split_once('.').ok_or_else(bad)?;
    if !matches!(prefix, "org" | "x")
        || name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(bad());
    }
    Ok(name.to_owned())
}

/// Creates `path` (mode `mode`) or keeps an existing directory.
fn ensure_dir(report: &mut Report, path: &Path, mode: u32, what: &str) -> Result<(), CliError> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => {
            report.add(path, what, Action::Kept);
            Ok(())
        }
        Ok(_) => Err(CliError::new(
            exit::IOERR,
            "not_a_directory",
            format!("{} exists and is not a directory", path.display()),
        )
        .hint("init never replaces files; move it aside")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::DirBuilder::new()
                .mode(mode)
                .create(path)
                .map_err(|e| io_error(path, e))?;
            // The umask may have narrowed it; set exactly what was asked.
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                .map_err(|e| io_error(path, e))?;
            report.add(path, what, Action::Created);
            Ok(())
        }
        Err(e) => Err(io_error(path, e)),
    }
}

/// Writes a new file exclusively (never replacing anything); `Kept` if it already exists.
fn ensure_file(
    report: &mut Report,
    path: &Path,
    mode: u32,
    contents: impl FnOnce() -> String,
    what: &str,
) -> Result<Action, CliError> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_file() => {
            report.add(path, what, Action::Kept);
            return Ok(Action::Kept);
        }
        Ok(_) => {
            return Err(CliError::new(
                exit::IOERR,
                "not_a_file",
                format!("{} exists and is not a regular file", path.display()),
            )
            .hint("init never follows or replaces links; move it aside"));
        }
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io_error(path, e)),
        Err(_) => {}
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| io_error(path, e))?;
    f.write_all(contents().as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| io_error(path, e))?;
    report.add(path, what, Action::Created);
    Ok(Action::Created)
}

fn refuse_key(path: &Path, why: impl std::fmt::Display) -> CliError {
    CliError::new(
        exit::IOERR,
        "key_refused",
        format!("{}: {why}", path.display()),
    )
    .hint("init never overwrites or regenerates a key: fix the file, or move it aside to get a new key")
}

/// Generates a key at `path` (0600, plus `.pub`) or keeps a valid existing one.
fn ensure_key(report: &mut Report, path: &Path, what: &str) -> Result<KeyPair, CliError> {
    let public = crate::crypto::keys::public_path_for(path);
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() || !m.is_file() => Err(refuse_key(
            path,
            "exists and is not a regular file (a link or a directory)",
        )),
        Ok(_) => {
            let key = KeyPair::read(path).map_err(|e| refuse_key(path, e))?;
            match std::fs::symlink_metadata(&public) {
                Ok(m) if m.is_file() => {
                    let stored = PublicKey::read(&public).map_err(|e| refuse_key(&public, e))?;
                    if stored.id() != key.id() {
                        return Err(refuse_key(
                            &public,
                            format!(
                                "is the public key {}, not the public key of {} ({})",
                                stored.id(),
                                path.display(),
                                key.id()
                            ),
                        ));
                    }
                    report.add(path, format!("{what} {} (+ .pub)", key.id()), Action::Kept);
                }
                Ok(_) => {
                    return Err(refuse_key(&public, "exists and is not a regular file"));
                }
                Err(_) => {
                    report.add(path, format!("{what} {}", key.id()), Action::Kept);
                    ensure_file(
                        report,
                        &public,
                        0o644,
                        || format!("wcp-ed25519-public-v1 {}\n", key.public().to_base64()),
                        "its public key (was missing)",
                    )?;
                }
            }
            Ok(key)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if std::fs::symlink_metadata(&public).is_ok() {
                return Err(refuse_key(
                    &public,
                    format!(
                        "a public key exists without its private key {}",
                        path.display()
                    ),
                ));
            }
            let key = KeyPair::generate().map_err(|e| io_error(path, e))?;
            key.write(path).map_err(|e| refuse_key(path, e))?;
            report.add(
                path,
                format!("{what} {} (mode 0600, + .pub)", key.id()),
                Action::Created,
            );
            Ok(key)
        }
        Err(e) => Err(io_error(path, e)),
    }
}

fn trust_policy_text(ns: &str, key: &KeyPair) -> String {
    let v = json!({
        "schema": crate::attest::trust::SCHEMA,
        "version": 1,
        "namespaces": {
            ns: {
                "threshold": 1,
                "keys": [{
                    "public_key": key.public().to_base64(),
                    "key_id": key.id(),
                    "comment": "package signing key created by wcp-hall init",
                }],
            }
        },
        "revoked_keys": [],
        "banned_digests": [],
    });
    format!("{v:#}\n")
}

fn rules_text() -> String {
    let v = json!({
        "description": "Starter rules written by `wcp-hall init`: none yet, so every request is denied (fail closed). Add one rule per capability (see policies/rules.json in the source tree), check with `wcp-hall validate rules.json`, then `wcp-hall reload`.",
        "rules": [],
    });
    format!("{v:#}\n")
}

fn config_text(tenant: &str, ns: &str, uid: u32) -> String {
    let socket = if uid == 0 {
        "# socket = \"/run/wcp-hall/hall.sock\"   # the default as root ($RUNTIME_DIRECTORY under systemd)".to_owned()
    } else {
        "socket = \"hall.sock\"".to_owned()
    };
    format!(
        r#"# wcp-hall configuration written by `wcp-hall init`. Init never rewrites this file: edit it,
# check it with `wcp-hall config check -c <this file>`, run `wcp-hall serve -c <this file>`.
# Relative paths are relative to this file.

[hall]
# Signatory tenants (WCP §5.9): only these tenant ids may dispatch.
require_signatory = true
allowed_tenants = ["{tenant}"]
# Run only packages signed by a key trust.json trusts for the worker's namespace ({ns}).
require_worker_attestation = true
enforce_correlation_id = true
enforce_required_controls = true
enforce_blast_scoring_in_prod = true
enforce_privilege_envelopes = true

[paths]
rules = "rules.json"
registry_dir = "registry"
state_dir = "."
profiles_dir = "profiles"

[profiles]
dev = "prof.dev.permissive"
stage = "prof.dev.permissive"
prod = "prof.prod.strict"
edge = "prof.edge.isolated"

[server]
{socket}
socket_mode = "0660"

[identity]
# Who may resolve approvals and reload, and which kernel-verified peers act as which tenants.
operator_uids = [{uid}]

[[identity.peers]]
uid = {uid}
tenants = ["{tenant}"]

[attestation]
trust_policy = "trust.json"
store_dir = "store"

[receipts]
log_dir = "receipts"
signing_key = "keys/receipts.key"

[envelope]
# Per-run directories and workers' persistent writable directories default to runs/ (or
# $RUNTIME_DIRECTORY/runs) and data/ here; tmpfs (e.g. runs_dir = "/run/wcp-hall/runs") is
# fastest. Python workers run with the first of /usr/bin/python3.11, /usr/bin/python3 unless
# python names another interpreter (absolute path; `wcp-hall config show` shows what it grants):
# python = "/usr/bin/python3.11"
"#
    )
}

/// Copies the files of `from` into a new directory `to` (kept if it exists).
fn ensure_copy(report: &mut Report, from: &Path, to: &Path, what: &str) -> Result<(), CliError> {
    if std::fs::symlink_metadata(to).is_ok() {
        return ensure_dir(report, to, 0o755, what);
    }
    let entries = std::fs::read_dir(from).map_err(|e| {
        CliError::new(
            exit::NOINPUT,
            "policies_not_found",
            format!("{}: {e}", from.display()),
        )
        .hint("pass --policies DIR (the policies/ directory of a wcp-hall source tree)")
    })?;
    ensure_dir(report, to, 0o755, what)?;
    for entry in entries {
        let entry = entry.map_err(|e| io_error(from, e))?;
        if !entry.file_type().map(|t| t.is_file()).unwrap_or(false) {
            continue;
        }
        let text = std::fs::read_to_string(entry.path()).map_err(|e| io_error(&entry.path(), e))?;
        let target = to.join(entry.file_name());
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&target)
            .map_err(|e| io_error(&target, e))?;
        f.write_all(text.as_bytes())
            .map_err(|e| io_error(&target, e))?;
    }
    Ok(())
}

pub fn run(args: InitArgs, out: &mut Out) -> Result<u8, CliError> {
    let tenant = check_namespace(&args.namespace)?;
    // The packaged systemd service keeps its configuration in /etc/wcp-hall and owns
    // /var/lib/wcp-hall: a self-contained directory there would be a second, conflicting Hall.
    if args.dir.is_none()
        && std::env::var_os("STATE_DIRECTORY").is_none()
        && nix::unistd::geteuid().is_root()
        && Path::new(PACKAGED_CONFIG).exists()
    {
        return Err(CliError::new(
            exit::USAGE,
            "packaged_hall",
            format!(
                "this host runs the packaged Hall ({PACKAGED_CONFIG}, state in /var/lib/wcp-hall); \
                 init sets up a separate, self-contained Hall directory"
            ),
        )
        .hint(
            "configure the packaged Hall in /etc/wcp-hall (README: \"Run a worker under the \
             installed Hall\"), or pass --dir DIR for a separate Hall",
        ));
    }
    let dir = match args.dir.clone().or_else(default_dir) {
        Some(d) => d,
        None => {
            return Err(CliError::new(
                exit::USAGE,
                "no_state_dir",
                "no state directory: $STATE_DIRECTORY, $XDG_STATE_HOME and $HOME are unset",
            )
            .hint("pass --dir DIR"));
        }
    };
    let dir = std::path::absolute(&dir).unwrap_or(dir);
    let policies = args
        .policies
        .clone()
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("policies"));
    let uid = nix::unistd::geteuid().as_raw();
    let mut report = Report {
        dir: dir.clone(),
        items: Vec::new(),
    };

    if let Some(parent) = dir.parent()
        && !parent.exists()
    {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(parent)
            .map_err(|e| io_error(parent, e))?;
    }
    ensure_dir(&mut report, &dir, 0o711, "the state directory")?;
    let keys = dir.join("keys");
    ensure_dir(&mut report, &keys, 0o700, "private keys (0700)")?;
    let signing = ensure_key(
        &mut report,
        &keys.join("signing.key"),
        "package signing key",
    )?;
    let receipts_key = ensure_key(
        &mut report,
        &keys.join("receipts.key"),
        "receipt signing key",
    )?;

    let trust_path = dir.join("trust.json");
    ensure_file(
        &mut report,
        &trust_path,
        0o644,
        || trust_policy_text(&args.namespace, &signing),
        &format!("trust policy: {} trusts {}", args.namespace, signing.id()),
    )?;
    let trust = TrustPolicy::load(&trust_path).map_err(|e| {
        CliError::new(
            exit::CONFIG,
            "trust_policy_invalid",
            format!("{}: {e}", trust_path.display()),
        )
    })?;
    let trusted = trust
        .namespace(&args.namespace)
        .is_some_and(|n| n.keys.iter().any(|k| k.key.id() == signing.id()));
    if !trusted {
        return Err(CliError::new(
            exit::CONFIG,
            "trust_policy_mismatch",
            format!(
                "{} exists and does not trust the signing key {} for {}",
                trust_path.display(),
                signing.id(),
                args.namespace
            ),
        )
        .hint(format!(
            "init never rewrites it; add {{\"public_key\": \"{}\"}} to namespaces.{:?}.keys yourself",
            signing.public().to_base64(),
            args.namespace
        )));
    }

    ensure_dir(
        &mut report,
        &dir.join("registry"),
        0o755,
        "enrolled registry records",
    )?;
    ensure_dir(
        &mut report,
        &dir.join("store"),
        0o755,
        "verified package store",
    )?;
    ensure_dir(
        &mut report,
        &dir.join("receipts"),
        0o700,
        "evidence receipt log (0700)",
    )?;
    ensure_copy(
        &mut report,
        &policies.join("profiles"),
        &dir.join("profiles"),
        "WCP profiles (dev, prod, edge)",
    )?;
    ensure_copy(
        &mut report,
        &policies.join("cedar"),
        &dir.join("cedar"),
        "Cedar policy set",
    )?;
    ensure_file(
        &mut report,
        &dir.join("rules.json"),
        0o644,
        rules_text,
        "rules (none yet: fail closed)",
    )?;
    let config = dir.join("hall.toml");
    ensure_file(
        &mut report,
        &config,
        0o644,
        || config_text(&tenant, &args.namespace, uid),
        "configuration",
    )?;
    // The directory must be usable as it stands: load everything the Hall would.
    let invalid = |e: String| {
        CliError::new(exit::CONFIG, "config_invalid", e)
            .hint("init never rewrites hall.toml: fix it (or move it aside and run init again)")
    };
    let mut loaded =
        crate::snapshot::Loaded::load(&config, 1).map_err(|e| invalid(e.to_string()))?;
    // Including the Python runtime, probed as the worker uid as `serve` will.
    let worker = crate::snapshot::worker_identity(&loaded.config.envelope.worker_user)
        .map_err(|e| invalid(e.to_string()))?;
    loaded
        .probe_python(Some(worker))
        .map_err(|e| invalid(e.to_string()))?;

    let created: Vec<&Item> = report
        .items
        .iter()
        .filter(|i| i.action == Action::Created)
        .collect();
    if out.json {
        let list = |a: Action| -> Vec<Value> {
            report
                .items
                .iter()
                .filter(|i| i.action == a)
                .map(|i| json!({"path": i.path, "what": i.what}))
                .collect()
        };
        out.json_line(&json!({
            "dir": dir,
            "namespace": args.namespace,
            "tenant": tenant,
            "config": config,
            "signing_key_id": signing.id(),
            "receipt_key_id": receipts_key.id(),
            "created": list(Action::Created),
            "kept": list(Action::Kept),
            "changed": !created.is_empty(),
            "rules": loaded.rules.rules().len(),
            "workers": loaded.registry.records().len(),
        }))?;
        return Ok(exit::OK);
    }
    let dir_action = report
        .items
        .iter()
        .find(|i| i.path == dir)
        .map_or(Action::Kept, |i| i.action);
    out.line(format!(
        "wcp-hall init: {} ({})",
        dir.display(),
        if dir_action == Action::Created {
            "created"
        } else {
            "exists"
        }
    ))?;
    for i in &report.items {
        if i.path == dir {
            continue;
        }
        let verb = match i.action {
            Action::Created => "created",
            Action::Kept => "kept   ",
        };
        let mut name = report.rel(&i.path);
        if i.path.is_dir() {
            name.push('/');
        }
        out.line(format!("  {verb}  {name:<20} {}", i.what))?;
    }
    if created.is_empty() {
        out.line("nothing new: everything was already in place (keys are never overwritten)")?;
    } else {
        out.line(format!(
            "{} created, {} kept; the configuration loads ({} rules, {} workers)",
            created.len(),
            report.items.len() - created.len(),
            loaded.rules.rules().len(),
            loaded.registry.records().len()
        ))?;
    }
    out.line(format!(
        "next: sign a package with `wcp-hall attest sign PKG --key {} --worker-id {}.<name>.1 …`, enroll it into {}, add a rule to {}, then `wcp-hall serve -c {}`",
        keys.join("signing.key").display(),
        args.namespace,
        dir.join("registry").display(),
        dir.join("rules.json").display(),
        config.display()
    ))?;
    Ok(exit::OK)
}
