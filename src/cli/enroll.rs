//! `wcp-hall enroll RECORD`: validate a registry record and write it atomically.

use std::path::PathBuf;

use serde_json::json;

use super::{CliError, Out, exit, load_config, read_input};
use crate::registry::{EnrollError, enroll};

#[derive(Debug, clap::Args)]
pub struct EnrollArgs {
    /// The registry record (WCP §6) as a JSON file, or `-` for stdin.
    pub record: PathBuf,
    /// The registry directory (default: [paths] registry_dir of the configuration).
    #[arg(long)]
    pub registry_dir: Option<PathBuf>,
    /// Path to hall.toml, used when --registry-dir is not given.
    #[arg(
        long,
        short = 'c',
        env = "WCP_HALL_CONFIG",
        default_value = "/etc/wcp-hall/hall.toml"
    )]
    pub config: PathBuf,
    /// Resolve an `attestation.package_ref` tag over plain HTTP (loopback registries only).
    #[arg(long)]
    pub plain_http: bool,
}

pub fn run(args: EnrollArgs, out: &mut Out) -> Result<u8, CliError> {
    let dir = match args.registry_dir {
        Some(d) => d,
        None => load_config(&args.config)?.paths.registry_dir,
    };
    let text = super::oci::pin_package_ref(read_input(&args.record)?, args.plain_http)?;
    let outcome = enroll(&dir, &text).map_err(|e| match e {
        EnrollError::Invalid(_) | EnrollError::UnsafeFileName(_) => CliError::new(
            exit::DATAERR,
            "record_invalid",
            format!("{}: {e}", args.record.display()),
        ),
        EnrollError::NotADirectory { .. } => {
            CliError::new(exit::CONFIG, "registry_invalid", e.to_string())
        }
        EnrollError::Io { .. } => {
            CliError::new(exit::IOERR, "registry_write_failed", e.to_string())
        }
    })?;
    if out.json {
        out.json_line(&json!({"enrolled": outcome}))?;
    } else {
        out.line(format!(
            "{} {} -> {}",
            match outcome.action {
                crate::registry::EnrollAction::Created => "enrolled",
                crate::registry::EnrollAction::Replaced => "re-enrolled (replaced)",
            },
            outcome.worker_id,
            outcome.path.display()
        ))?;
    }
    Ok(exit::OK)
}
