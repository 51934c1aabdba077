//! `wcp-hall registry verify|ban-list|report|attest|health`: the worker registry service
//! (PyHall's `RegistryClient` API) for operators and CI. The URL and tokens come from the
//! options, else `[registry_service]` of `--config` when that file exists, else
//! `PYHALL_REGISTRY_URL` and PyHall's default URL.

use std::path::PathBuf;

use serde_json::json;

use super::{CliError, Out, exit, load_config};
use crate::registry_service::RegistryServiceSection;
use crate::registry_service::client::{Client, ClientSettings, Secret, ServiceError};
use crate::registry_service::model::{AttestRequest, ReportRequest, WorkerStatus, is_sha256_hex};

#[derive(Debug, clap::Subcommand)]
pub enum RegistryCommand {
    /// A worker's status at the service (`GET /api/v1/verify/ID`). Exit 0 when active, 1 when
    /// revoked, banned or unknown.
    Verify {
        worker_id: String,
        #[command(flatten)]
        service: ServiceArgs,
    },
    /// The confirmed ban list (`GET /api/v1/ban-list?limit=N`).
    BanList {
        #[arg(long, default_value_t = 500)]
        limit: u32,
        #[command(flatten)]
        service: ServiceArgs,
    },
    /// Report a package hash for the ban list (`POST /api/v1/ban-list/report`; session token).
    Report {
        /// The package's SHA-256 (64 hex digits, e.g. from `wcp-hall attest hash`).
        sha256: String,
        #[arg(long)]
        reason: String,
        #[arg(long)]
        evidence_url: Option<String>,
        #[command(flatten)]
        service: ServiceArgs,
    },
    /// Attest a worker's package hash (`PUT /api/v1/workers/ID/attest`; bearer token).
    Attest {
        worker_id: String,
        /// The package's SHA-256 (64 hex digits, e.g. from `wcp-hall attest hash`).
        #[arg(long, required_unless_present = "package", conflicts_with = "package")]
        sha256: Option<String>,
        /// The package directory: its awp.v1 digest (as `wcp-hall attest hash DIR`) is attested.
        #[arg(long)]
        package: Option<PathBuf>,
        #[arg(long)]
        label: Option<String>,
        /// The package was written with an AI system.
        #[arg(long)]
        ai_generated: bool,
        #[arg(long)]
        ai_service: Option<String>,
        #[arg(long)]
        ai_model: Option<String>,
        #[arg(long)]
        ai_session_id: Option<String>,
        #[command(flatten)]
        service: ServiceArgs,
    },
    /// The service's health (`GET /health`).
    Health {
        #[command(flatten)]
        service: ServiceArgs,
    },
}

/// Where the service is and how to authenticate.
#[derive(Debug, Clone, clap::Args)]
pub struct ServiceArgs {
    /// The service's base URL (default: [registry_service] url, else $PYHALL_REGISTRY_URL,
    /// else https://api.pyhall.dev).
    #[arg(long)]
    pub url: Option<String>,
    /// A file holding the session token (sent as the pyhall_session cookie).
    #[arg(long)]
    pub session_token_file: Option<PathBuf>,
    /// A file holding the bearer token (default: $PYHALL_TOKEN, as PyHall's `attest submit`).
    #[arg(long)]
    pub bearer_token_file: Option<PathBuf>,
    /// hall.toml, for its [registry_service] (used when it exists).
    #[arg(
        long,
        short = 'c',
        env = "WCP_HALL_CONFIG",
        default_value = "/etc/wcp-hall/hall.toml"
    )]
    pub config: PathBuf,
}

fn service_error(e: ServiceError) -> CliError {
    let code = match e {
        ServiceError::InvalidUrl { .. } | ServiceError::MissingToken { .. } => exit::CONFIG,
        ServiceError::Unreachable { .. } | ServiceError::Status { .. } => exit::UNAVAILABLE,
        ServiceError::RateLimited { .. } => exit::TEMPFAIL,
        ServiceError::Unauthorized { .. } => exit::NOPERM,
        ServiceError::Redirect { .. }
        | ServiceError::TooLarge { .. }
        | ServiceError::Malformed { .. } => exit::DATAERR,
    };
    let hint = e.hint();
    let err = CliError::new(code, e.code(), e.to_string());
    match hint {
        Some(h) => err.hint(h),
        None => err,
    }
}

fn client(args: &ServiceArgs) -> Result<Client, CliError> {
    let section = if args.config.exists() {
        load_config(&args.config)?.registry_service
    } else {
        RegistryServiceSection::default()
    };
    let mut settings: ClientSettings = section
        .client_settings()
        .map_err(|m| CliError::new(exit::CONFIG, "registry_token_unreadable", m))?;
    if let Some(url) = &args.url {
        settings.base_url = url.clone();
    }
    let read = |path: &PathBuf| -> Result<Secret, CliError> {
        let text = zeroize::Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
            CliError::new(
                exit::NOINPUT,
                "registry_token_unreadable",
                format!("cannot read the token file {}: {e}", path.display()),
            )
        })?);
        Secret::new(&text).map_err(|m| {
            CliError::new(
                exit::DATAERR,
                "registry_token_invalid",
                format!("the token file {}: {m}", path.display()),
            )
        })
    };
    if let Some(p) = &args.session_token_file {
        settings.session_token = Some(read(p)?);
    }
    if let Some(p) = &args.bearer_token_file {
        settings.bearer_token = Some(read(p)?);
    } else if settings.bearer_token.is_none()
        && let Ok(t) = std::env::var("PYHALL_TOKEN")
        && !t.is_empty()
    {
        settings.bearer_token = Some(Secret::new(&t).map_err(|m| {
            CliError::new(
                exit::DATAERR,
                "registry_token_invalid",
                format!("$PYHALL_TOKEN: {m}"),
            )
        })?);
    }
    Client::new(settings).map_err(service_error)
}

fn check_hash(sha256: &str) -> Result<String, CliError> {
    let h = sha256
        .strip_prefix("sha256:")
        .unwrap_or(sha256)
        .to_ascii_lowercase();
    if !is_sha256_hex(&h) {
        return Err(CliError::new(
            exit::USAGE,
            "sha256_invalid",
            format!("{sha256:?} is not a SHA-256 of 64 hex digits"),
        )
        .hint("wcp-hall attest hash PACKAGE_DIR prints a package's digest"));
    }
    Ok(h)
}

pub fn run(cmd: RegistryCommand, out: &mut Out) -> Result<u8, CliError> {
    match cmd {
        RegistryCommand::Verify { worker_id, service } => {
            let r = client(&service)?
                .verify(&worker_id)
                .map_err(service_error)?;
            if out.json {
                out.json_line(&r)?;
            } else {
                out.line(format!("{} {}", r.worker_id, r.status.as_str()))?;
                if let Some(h) = &r.current_hash {
                    out.line(format!("  current_hash {h}"))?;
                }
                if let Some(reason) = &r.ban_reason {
                    out.line(format!("  ban_reason {reason}"))?;
                }
                if let Some(at) = &r.attested_at {
                    out.line(format!("  attested_at {at}"))?;
                }
                if r.ai_generated {
                    out.line(format!(
                        "  ai_generated by {} {}",
                        r.ai_service.as_deref().unwrap_or("?"),
                        r.ai_model.as_deref().unwrap_or("?")
                    ))?;
                }
            }
            Ok(if r.status == WorkerStatus::Active && !r.is_banned() {
                exit::OK
            } else {
                exit::DENIED
            })
        }
        RegistryCommand::BanList { limit, service } => {
            let list = client(&service)?.ban_list(limit).map_err(service_error)?;
            if out.json {
                out.json_line(&json!({"entries": list}))?;
            } else {
                for e in &list {
                    out.line(format!(
                        "{} {} ({}, {})",
                        e.sha256,
                        e.reason.as_deref().unwrap_or("-"),
                        e.source.as_deref().unwrap_or("-"),
                        e.reported_at.as_deref().unwrap_or("-")
                    ))?;
                }
                out.line(format!("{} banned hashes", list.len()))?;
            }
            Ok(exit::OK)
        }
        RegistryCommand::Report {
            sha256,
            reason,
            evidence_url,
            service,
        } => {
            let req = ReportRequest {
                sha256: check_hash(&sha256)?,
                reason,
                evidence_url,
            };
            let answer = client(&service)?.report(&req).map_err(service_error)?;
            if out.json {
                out.json_line(&json!({"reported": req.sha256, "answer": answer}))?;
            } else {
                out.line(format!("reported {}", req.sha256))?;
            }
            Ok(exit::OK)
        }
        RegistryCommand::Attest {
            worker_id,
            sha256,
            package,
            label,
            ai_generated,
            ai_service,
            ai_model,
            ai_session_id,
            service,
        } => {
            let sha256 = match (sha256, package) {
                (Some(h), _) => check_hash(&h)?,
                (None, Some(dir)) => {
                    crate::attest::hash_tree(&dir, &crate::attest::TreeLimits::default())
                        .map_err(|e| super::attest::tree_error(&dir, e))?
                        .digest
                }
                (None, None) => unreachable!("clap requires --sha256 or --package"),
            };
            let req = AttestRequest {
                sha256,
                label,
                ai_generated,
                ai_service,
                ai_model,
                ai_session_id,
            };
            let answer = client(&service)?
                .attest(&worker_id, &req)
                .map_err(service_error)?;
            if out.json {
                out.json_line(
                    &json!({"attested": worker_id, "sha256": req.sha256, "answer": answer}),
                )?;
            } else {
                out.line(format!("attested {worker_id} {}", req.sha256))?;
            }
            Ok(exit::OK)
        }
        RegistryCommand::Health { service } => {
            let h = client(&service)?.health().map_err(service_error)?;
            if out.json {
                out.json_line(&h)?;
            } else {
                out.line(h.to_string())?;
            }
            Ok(if h["ok"] == json!(true) {
                exit::OK
            } else {
                exit::UNAVAILABLE
            })
        }
    }
}
