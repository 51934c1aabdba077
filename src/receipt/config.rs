//! `[receipts]` in `hall.toml`: where the log lives, which key signs, how often to checkpoint.
//!
//! ```toml
//! [receipts]
//! log_dir = "/var/lib/wcp-hall/receipts"      # relative paths: relative to hall.toml
//! signing_key = "/etc/wcp-hall/receipts.key"  # or "credential:receipts.key" (systemd LoadCredential=)
//! checkpoint_every = 1000                     # records; 0 = only by time and at shutdown
//! checkpoint_interval_secs = 60               # 0 = only by count and at shutdown
//! checkpoint_copy = "/var/lib/wcp-hall-witness/receipts.checkpoint"   # second location
//! # origin = "hall.<host id>/receipts"        # default from the host id
//! # host_id = "…"                             # default: /etc/machine-id, else the hostname
//! segment_max_bytes = 67108864
//! reserve_bytes = 16777216                    # space kept for the receipts the log owes; 0 = none
//! ```
//!
//! The private key is read from a file (never from the environment) and refused if group or
//! others may read it; `credential:NAME` reads `$CREDENTIALS_DIRECTORY/NAME`, the file systemd
//! places for `LoadCredential=`/`LoadCredentialEncrypted=` (the variable holds a directory, not
//! key material).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::log::{DEFAULT_RESERVE_BYTES, DEFAULT_SEGMENT_MAX_BYTES, LogOptions, default_origin};
use crate::crypto::{KeyError, KeyPair};

/// The `[receipts]` table.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ReceiptsSection {
    pub log_dir: PathBuf,
    /// A path, or `credential:NAME`.
    pub signing_key: String,
    pub checkpoint_every: u64,
    pub checkpoint_interval_secs: u64,
    pub checkpoint_copy: Option<PathBuf>,
    pub origin: Option<String>,
    pub host_id: Option<String>,
    pub segment_max_bytes: u64,
    /// Bytes kept preallocated in `<log_dir>/reserve` and given up on `ENOSPC` so the
    /// receipts the log owes can still be written (0: no reserve).
    pub reserve_bytes: u64,
}

impl Default for ReceiptsSection {
    fn default() -> Self {
        ReceiptsSection {
            log_dir: PathBuf::from("/var/lib/wcp-hall/receipts"),
            signing_key: "/etc/wcp-hall/receipts.key".into(),
            checkpoint_every: 1000,
            checkpoint_interval_secs: 60,
            checkpoint_copy: None,
            origin: None,
            host_id: None,
            segment_max_bytes: DEFAULT_SEGMENT_MAX_BYTES,
            reserve_bytes: DEFAULT_RESERVE_BYTES,
        }
    }
}

/// Prefix of a systemd credential name in `signing_key`.
pub const CREDENTIAL_PREFIX: &str = "credential:";

/// Why the `[receipts]` configuration is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ReceiptsConfigError {
    #[error("cannot read {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config {}: {message}", .path.display())]
    Invalid { path: PathBuf, message: String },
    #[error(
        "[receipts] signing_key = {0:?} names a systemd credential but $CREDENTIALS_DIRECTORY is \
         not set (run under systemd with LoadCredential=, or give a file path)"
    )]
    NoCredentialsDirectory(String),
    #[error("{0}")]
    Key(#[from] KeyError),
}

impl ReceiptsSection {
    /// Resolves relative paths against `base` (the directory of hall.toml).
    pub fn resolve_paths(&mut self, base: &Path) {
        self.log_dir = base.join(&self.log_dir);
        if let Some(c) = &self.checkpoint_copy {
            self.checkpoint_copy = Some(base.join(c));
        }
        if !self.signing_key.starts_with(CREDENTIAL_PREFIX) {
            self.signing_key = base.join(&self.signing_key).display().to_string();
        }
    }

    /// The `[receipts]` table of a hall.toml exactly as `serve` sees it: the file is loaded by
    /// [`crate::config::Config::load`], so relative paths and the log directory (when unset,
    /// `<state_dir>/receipts`) resolve the same way. Used by the `receipts` commands.
    pub fn from_hall_toml(path: &Path) -> Result<Self, ReceiptsConfigError> {
        use crate::config::{Config, ConfigError};
        Config::load(path).map(|c| c.receipts).map_err(|e| match e {
            ConfigError::Read { path, source } => ReceiptsConfigError::Read { path, source },
            ConfigError::Parse { path, message } | ConfigError::Invalid { path, message } => {
                ReceiptsConfigError::Invalid { path, message }
            }
        })
    }

    /// The private key file (a credential resolves through `$CREDENTIALS_DIRECTORY`).
    pub fn key_path(&self) -> Result<PathBuf, ReceiptsConfigError> {
        match self.signing_key.strip_prefix(CREDENTIAL_PREFIX) {
            Some(name) => {
                let dir = std::env::var_os("CREDENTIALS_DIRECTORY").ok_or_else(|| {
                    ReceiptsConfigError::NoCredentialsDirectory(self.signing_key.clone())
                })?;
                Ok(Path::new(&dir).join(name))
            }
            None => Ok(PathBuf::from(&self.signing_key)),
        }
    }

    /// Whether the key is a systemd credential (read-only: it cannot be rotated in place).
    pub fn key_is_credential(&self) -> bool {
        self.signing_key.starts_with(CREDENTIAL_PREFIX)
    }

    /// Reads the signing key (refusing a group- or world-readable file).
    pub fn load_key(&self) -> Result<KeyPair, ReceiptsConfigError> {
        Ok(KeyPair::read(&self.key_path()?)?)
    }

    /// The writer's options.
    pub fn log_options(&self) -> LogOptions {
        let host = self.host_id.clone().unwrap_or_else(host_id);
        let mut o = LogOptions::new(&self.log_dir, &host);
        if let Some(origin) = &self.origin {
            o.origin.clone_from(origin);
        } else {
            o.origin = default_origin(&host);
        }
        o.checkpoint_every = self.checkpoint_every;
        o.checkpoint_interval = (self.checkpoint_interval_secs > 0)
            .then(|| Duration::from_secs(self.checkpoint_interval_secs));
        o.checkpoint_copy.clone_from(&self.checkpoint_copy);
        o.segment_max_bytes = self.segment_max_bytes;
        o.reserve_bytes = self.reserve_bytes;
        o
    }
}

/// This machine's id for receipts: `/etc/machine-id`, else the hostname; reduced to
/// `[A-Za-z0-9._-]` so it can be part of a log origin.
pub fn host_id() -> String {
    let raw = std::fs::read_to_string("/etc/machine-id")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .or_else(|| {
            nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
        })
        .unwrap_or_else(|| "unknown-host".into());
    let clean: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '-'
            }
        })
        .take(128)
        .collect();
    if clean.is_empty() {
        "unknown-host".into()
    } else {
        clean
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_receipts_table_with_defaults_and_relative_paths() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("hall.toml");
        std::fs::write(
            &cfg,
            "[hall]\nrequire_signatory = false\n[receipts]\nlog_dir = \"state/receipts\"\n\
             checkpoint_every = 10\ncheckpoint_interval_secs = 0\ncheckpoint_copy = \"/mnt/copy\"\n\
             host_id = \"h1\"\n",
        )
        .unwrap();
        let s = ReceiptsSection::from_hall_toml(&cfg).unwrap();
        assert_eq!(s.log_dir, dir.path().join("state/receipts"));
        assert_eq!(s.signing_key, "/etc/wcp-hall/receipts.key");
        let o = s.log_options();
        assert_eq!(o.origin, "hall.h1/receipts");
        assert_eq!(o.checkpoint_every, 10);
        assert_eq!(o.checkpoint_interval, None);
        assert_eq!(o.checkpoint_copy, Some(PathBuf::from("/mnt/copy")));
        std::fs::write(&cfg, "[receipts]\ncheckpoint_evry = 1\n").unwrap();
        let err = ReceiptsSection::from_hall_toml(&cfg)
            .unwrap_err()
            .to_string();
        assert!(err.contains("checkpoint_evry"), "{err}");
        std::fs::write(&cfg, "[hall]\n").unwrap();
        assert_eq!(
            ReceiptsSection::from_hall_toml(&cfg)
                .unwrap()
                .checkpoint_every,
            1000
        );
        // Unset, the log lives where `serve` writes it: `<state_dir>/receipts`.
        std::fs::write(&cfg, "[paths]\nstate_dir = \"st\"\n").unwrap();
        assert_eq!(
            ReceiptsSection::from_hall_toml(&cfg).unwrap().log_dir,
            dir.path().join("st/receipts")
        );
    }

    #[test]
    fn credentials_resolve_through_the_credentials_directory() {
        let s = ReceiptsSection {
            signing_key: "credential:receipts.key".into(),
            ..ReceiptsSection::default()
        };
        assert!(s.key_is_credential());
        // The variable is process-global; only read it here, never set it.
        match std::env::var_os("CREDENTIALS_DIRECTORY") {
            Some(d) => assert_eq!(s.key_path().unwrap(), Path::new(&d).join("receipts.key")),
            None => assert!(matches!(
                s.key_path(),
                Err(ReceiptsConfigError::NoCredentialsDirectory(_))
            )),
        }
    }

    #[test]
    fn host_ids_fit_in_an_origin() {
        let h = host_id();
        assert!(!h.is_empty());
        assert!(super::super::checkpoint::check_key_name(&default_origin(&h)).is_ok());
    }
}
