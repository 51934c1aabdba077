//! `wcp-hall push DIR REF` and `wcp-hall pull REF`: signed worker packages as OCI artifacts.

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::json;

use super::{CliError, Out, exit, load_config};
use crate::attest::oci::{self, PullError, PullOptions, PushError, PushOptions};
use crate::attest::{HmacKey, PackageStore, TreeLimits, TrustPolicy, UtcTime};

const PUSH_AFTER_HELP: &str = r#"The package is pushed as an OCI artifact (artifactType
application/vnd.wcp-hall.worker-package.v1): one reproducible tar layer (the same tree gives the
same bytes and digest) and, attached to it as an OCI 1.1 referrer, the signed manifest, with the
referrers tag scheme (tag sha256-<hex>) for registries without the referrers API. The tree must
still hash to what its manifest signs. Prints the pinned reference to put in a record's
attestation.package_ref.

Credentials: $CREDENTIALS_DIRECTORY/oci-auth.json (systemd), else $DOCKER_CONFIG/config.json or
~/.docker/config.json (auths, credHelpers, credsStore). TLS always; --plain-http only for a
loopback registry.

Exit codes: 0 pushed, 1 the tree does not match its signed manifest, 2 usage, 65 unsafe
package tree, 66 no signed manifest, 69 registry unreachable or refused the push.

Example:
  wcp-hall push workers/hello registry.example.org/wcp/hello:1.0"#;

const PULL_AFTER_HELP: &str = r#"Fetches the package manifest (a tag is resolved to its digest
first), its signatures and its layer into a staging directory with bounded sizes, verifies the
unpacked tree against the trust policy (the same checks as `attest verify`), and only then
publishes it to the verified store and keeps the source under the sources directory
(<state_dir>/oci by default). A refusal leaves nothing behind. Progress goes to stderr.

Exit codes: 0 verified and stored, 1 refused (an ATTEST_* code: digest or signature mismatch,
untrusted signer, oversized layer, unsafe tar), 2 usage, 69 registry unreachable or the pull
was interrupted, 74 the store or staging directory could not be written, 78 bad configuration.

Example:
  wcp-hall pull --config /etc/wcp-hall/hall.toml oci://registry.example.org/wcp/hello@sha256:…"#;

#[derive(Debug, clap::Args)]
#[command(after_help = PUSH_AFTER_HELP)]
pub struct PushArgs {
    /// The signed package directory.
    pub dir: PathBuf,
    /// Where to push: [oci://]HOST[:PORT]/REPOSITORY[:TAG] (without a tag, by digest only).
    pub reference: String,
    /// The signed manifest (default: DIR/manifest.sig, else DIR/manifest.json).
    #[arg(long)]
    pub manifest: Option<PathBuf>,
    /// Speak plain HTTP to the registry (only allowed for 127.0.0.0/8, ::1 and localhost).
    #[arg(long)]
    pub plain_http: bool,
    /// Per-read timeout in seconds.
    #[arg(long, default_value_t = 60)]
    pub timeout_secs: u64,
}

#[derive(Debug, clap::Args)]
#[command(after_help = PULL_AFTER_HELP)]
pub struct PullArgs {
    /// The package: [oci://]HOST[:PORT]/REPOSITORY(:TAG|@sha256:HEX).
    pub reference: String,
    /// Path to hall.toml: the trust policy, store, HMAC key and state directory come from its
    /// [attestation] and [paths] unless given below.
    #[arg(
        long,
        short = 'c',
        env = "WCP_HALL_CONFIG",
        default_value = "/etc/wcp-hall/hall.toml"
    )]
    pub config: PathBuf,
    /// The namespace trust policy (instead of the configuration's).
    #[arg(long)]
    pub trust: Option<PathBuf>,
    /// The verified package store (instead of the configuration's).
    #[arg(long)]
    pub store: Option<PathBuf>,
    /// Where pulled sources are kept (default: <state_dir>/oci, or next to --store).
    #[arg(long)]
    pub sources: Option<PathBuf>,
    /// The awp.v1 HMAC key file (legacy packages only).
    #[arg(long)]
    pub hmac_key_file: Option<PathBuf>,
    /// The worker id the package must be signed for (default: the artifact's annotation).
    #[arg(long)]
    pub worker_id: Option<String>,
    /// The worker species the package must be signed for (default: the artifact's annotation).
    #[arg(long)]
    pub species: Option<String>,
    /// Speak plain HTTP to the registry (only allowed for 127.0.0.0/8, ::1 and localhost).
    #[arg(long)]
    pub plain_http: bool,
    /// The largest package layer accepted, in bytes.
    #[arg(long, default_value_t = DEFAULT_MAX_LAYER_BYTES)]
    pub max_layer_bytes: u64,
    /// Per-read timeout in seconds.
    #[arg(long, default_value_t = 60)]
    pub timeout_secs: u64,
}

/// The default bound on a package layer (1 GiB).
pub const DEFAULT_MAX_LAYER_BYTES: u64 = 1 << 30;

fn push_error(e: PushError) -> CliError {
    let hint = e.hint();
    let (code, kind) = match &e {
        PushError::Ref(_) => (exit::USAGE, "reference_invalid"),
        PushError::Manifest { .. } => (exit::NOINPUT, "manifest_missing"),
        PushError::Layer(_) => (exit::DATAERR, "package_unsafe"),
        PushError::TreeMismatch { .. } => (exit::DENIED, "ATTEST_HASH_MISMATCH"),
        PushError::Registry { .. } => (exit::UNAVAILABLE, "registry_unavailable"),
    };
    let err = CliError::new(code, kind, e.to_string());
    match hint {
        Some(h) => err.hint(h),
        None => err,
    }
}

pub fn run_push(args: PushArgs, out: &mut Out) -> Result<u8, CliError> {
    let pushed = oci::push(
        &args.dir,
        &args.reference,
        &PushOptions {
            manifest_path: args.manifest,
            plain_http: args.plain_http,
            limits: TreeLimits::default(),
            timeout: Duration::from_secs(args.timeout_secs.max(1)),
        },
    )
    .map_err(push_error)?;
    if out.json {
        out.json_line(&json!({"pushed": pushed}))?;
    } else {
        out.line(&pushed.digest)?;
        out.line(format!(
            "pushed {} {} ({} files, {} bytes layer) as {}",
            pushed.format, pushed.worker_id, pushed.files, pushed.layer_bytes, pushed.reference
        ))?;
        out.line(format!("  signature {}", pushed.signature_digest))?;
    }
    Ok(exit::OK)
}

pub(crate) fn pull_error(e: PullError) -> CliError {
    let hint = e.hint();
    let (code, kind) = match &e {
        PullError::Ref(_) => (exit::USAGE, "reference_invalid"),
        PullError::Unavailable { .. } => (exit::UNAVAILABLE, "registry_unavailable"),
        PullError::Refused { code, .. } => (exit::DENIED, code.as_str()),
        PullError::Verification(r) => (exit::DENIED, r.code_str().unwrap_or("ATTEST_FAILED")),
        PullError::Staging { .. } => (exit::IOERR, "staging_failed"),
    };
    let err = CliError::new(code, kind, e.to_string());
    match hint {
        Some(h) => err.hint(h),
        None => err,
    }
}

/// Progress lines on stderr: at most one per 10 % of the layer.
fn progress_printer(json: bool) -> impl Fn(u64, u64) + Sync {
    let last = Mutex::new(None::<u64>);
    move |got, total| {
        let step = (got.saturating_mul(10)).checked_div(total).unwrap_or(10);
        let mut last = last.lock().unwrap_or_else(|p| p.into_inner());
        if *last == Some(step) {
            return;
        }
        *last = Some(step);
        let mut stderr = std::io::stderr().lock();
        let _ = if json {
            writeln!(
                stderr,
                "{}",
                json!({"progress": {"bytes": got, "total": total}})
            )
        } else {
            writeln!(
                stderr,
                "pulling layer: {got} / {total} bytes ({}%)",
                step * 10
            )
        };
    }
}

pub fn run_pull(args: PullArgs, out: &mut Out) -> Result<u8, CliError> {
    let config = if args.trust.is_none() || args.store.is_none() {
        Some(load_config(&args.config)?)
    } else {
        None
    };
    let att = config.as_ref().map(|c| &c.attestation);
    let trust_path = args
        .trust
        .clone()
        .or_else(|| att.and_then(|a| a.trust_policy.clone()))
        .ok_or_else(|| {
            CliError::new(
                exit::CONFIG,
                "trust_policy_missing",
                "no trust policy: a pulled package is verified before it is stored",
            )
            .hint("pass --trust FILE or set [attestation] trust_policy in hall.toml")
        })?;
    let trust = TrustPolicy::load(&trust_path).map_err(|e| {
        CliError::new(
            exit::CONFIG,
            "trust_policy_invalid",
            format!("{}: {e}", trust_path.display()),
        )
    })?;
    let store_dir = args
        .store
        .clone()
        .or_else(|| att.and_then(|a| a.store_dir.clone()))
        .or_else(|| config.as_ref().map(|c| c.state_dir().join("store")))
        .unwrap_or_else(|| PathBuf::from("store"));
    let sources = args
        .sources
        .clone()
        .or_else(|| config.as_ref().map(|c| c.state_dir().join("oci")))
        .unwrap_or_else(|| store_dir.with_file_name("oci"));
    let hmac_path = args
        .hmac_key_file
        .clone()
        .or_else(|| att.and_then(|a| a.hmac_key_file.clone()));
    let hmac = hmac_path
        .as_deref()
        .map(HmacKey::read)
        .transpose()
        .map_err(|e| CliError::new(exit::CONFIG, "hmac_key_invalid", e.to_string()))?;
    let store = PackageStore::open(&store_dir)
        .map_err(|e| CliError::new(exit::IOERR, "store_failed", e.to_string()))?;
    let progress = progress_printer(out.json);
    let pulled = oci::pull(
        &args.reference,
        &PullOptions {
            plain_http: args.plain_http,
            trust: &trust,
            hmac_key: hmac.as_ref(),
            store: &store,
            sources_dir: &sources,
            worker_id: args.worker_id.as_deref(),
            worker_species_id: args.species.as_deref(),
            max_layer_bytes: args.max_layer_bytes,
            timeout: Duration::from_secs(args.timeout_secs.max(1)),
            progress: Some(&progress),
            now: UtcTime::now(),
        },
    )
    .map_err(pull_error)?;
    if out.json {
        out.json_line(&json!({
            "pulled": {
                "reference": pulled.reference.to_string(),
                "digest": pulled.digest,
                "package_root": pulled.package_root,
                "manifest_path": pulled.manifest_path,
                "reused": pulled.reused,
                "report": pulled.report,
            }
        }))?;
    } else {
        out.line(format!(
            "ok: {} ({})",
            pulled.reference, pulled.report.message
        ))?;
        if let Some(p) = &pulled.report.store_path {
            out.line(format!("  run from: {}", p.display()))?;
        }
        out.line(format!("  source:   {}", pulled.package_root.display()))?;
    }
    Ok(exit::OK)
}

/// `wcp-hall enroll`: a record whose `attestation.package_ref` names a tag (no digest) is
/// rewritten to the digest the tag resolves to now, so the record pins what the Hall fetches.
/// Any other record text is returned unchanged (its validation is `enroll`'s).
pub(crate) fn pin_package_ref(text: String, plain_http: bool) -> Result<String, CliError> {
    let Ok(mut record) = crate::json::parse_str(&text) else {
        return Ok(text);
    };
    let Some(reference) = record
        .get("attestation")
        .and_then(|a| a.get("package_ref"))
        .and_then(serde_json::Value::as_str)
        .filter(|r| !r.contains('@'))
        .map(str::to_owned)
    else {
        return Ok(text);
    };
    let pinned =
        oci::resolve(&reference, plain_http, Duration::from_secs(60)).map_err(pull_error)?;
    record["attestation"]["package_ref"] = json!(pinned.to_string());
    eprintln!("package_ref {reference} resolved to {pinned}");
    serde_json::to_string_pretty(&record)
        .map_err(|e| CliError::new(exit::SOFTWARE, "record_encode_failed", e.to_string()))
}
