//! `[registry_service]` in `hall.toml`: the worker registry service (PyHall's `RegistryClient`
//! API), off by default. Parsing and checks are pure; [`RegistryServiceSection::client_settings`]
//! reads the token files.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::client::{self, ClientSettings, Secret};
use crate::wcp::Env;

/// What a dispatch does when the worker's registry status (or the ban list) is older than
/// `max_staleness_seconds`, or was never fetched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnStale {
    /// Fail closed: `DENY_REGISTRY_STATUS_STALE`.
    Deny,
    /// Proceed on what is known, with a warning in the answer and the receipt.
    Warn,
}

/// `[registry_service.on_stale]`: per environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct OnStalePerEnv {
    pub dev: OnStale,
    pub stage: OnStale,
    pub prod: OnStale,
    pub edge: OnStale,
}

impl Default for OnStalePerEnv {
    fn default() -> Self {
        OnStalePerEnv {
            dev: OnStale::Warn,
            stage: OnStale::Deny,
            prod: OnStale::Deny,
            edge: OnStale::Deny,
        }
    }
}

impl OnStalePerEnv {
    pub fn for_env(&self, env: Env) -> OnStale {
        match env {
            Env::Dev => self.dev,
            Env::Stage => self.stage,
            Env::Prod => self.prod,
            Env::Edge => self.edge,
        }
    }
}

/// `[registry_service]`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RegistryServiceSection {
    /// Consult the service at all (default false).
    pub enabled: bool,
    /// The service's base URL. Unset: `PYHALL_REGISTRY_URL`, else `https://api.pyhall.dev`.
    pub url: Option<String>,
    /// A file holding PyHall's session token (sent as the `pyhall_session` cookie). The
    /// systemd credential `registry-session` takes precedence.
    pub session_token_file: Option<PathBuf>,
    /// A file holding a bearer token (`Authorization: Bearer`). The systemd credential
    /// `registry-bearer` takes precedence.
    pub bearer_token_file: Option<PathBuf>,
    /// How often the background refresher fetches the ban list and every enrolled worker's
    /// status: the cache's TTL, and how long a ban takes to reach the Hall at most.
    pub refresh_seconds: u64,
    /// One request, connect to last byte.
    pub timeout_ms: u64,
    /// The largest answer read from the service.
    pub max_response_bytes: usize,
    /// `GET /api/v1/ban-list?limit=N`.
    pub ban_list_limit: u32,
    /// A status or ban list older than this is stale (see `on_stale`).
    pub max_staleness_seconds: u64,
    /// What a stale or missing status does, per environment (default: dev warns, the others
    /// deny).
    pub on_stale: OnStalePerEnv,
    /// Send the count of allowed dispatches per worker id to
    /// `POST /api/v1/telemetry/decisions` on every refresh (default false: nothing about the
    /// Hall's traffic leaves it unless asked).
    pub send_decision_counts: bool,
}

impl Default for RegistryServiceSection {
    fn default() -> Self {
        RegistryServiceSection {
            enabled: false,
            url: None,
            session_token_file: None,
            bearer_token_file: None,
            refresh_seconds: 60,
            timeout_ms: 5_000,
            max_response_bytes: 4 << 20,
            ban_list_limit: 500,
            max_staleness_seconds: 300,
            on_stale: OnStalePerEnv::default(),
            send_decision_counts: false,
        }
    }
}

/// The environment variable PyHall reads the service URL from.
pub const URL_ENV: &str = "PYHALL_REGISTRY_URL";

impl RegistryServiceSection {
    /// The configuration checks (pure): a message for `ConfigError::Invalid`.
    pub fn check(&self, require_worker_attestation: bool) -> Result<(), String> {
        if !self.enabled {
            return Ok(());
        }
        if !require_worker_attestation {
            return Err("[registry_service] enabled = true needs [hall] require_worker_attestation = true: the registry's current_hash and the ban list are compared with the verified package's digest, and without attestation there is none".into());
        }
        if let Some(url) = &self.url {
            client::check_url(url).map_err(|e| format!("[registry_service] url: {e}"))?;
        }
        if self.refresh_seconds == 0 || self.timeout_ms == 0 || self.max_response_bytes == 0 {
            return Err("[registry_service] refresh_seconds, timeout_ms and max_response_bytes must be at least 1".into());
        }
        if self.max_staleness_seconds < self.refresh_seconds {
            return Err(format!(
                "[registry_service] max_staleness_seconds = {} is less than refresh_seconds = {}: every status would be stale before its refresh; use at least twice refresh_seconds",
                self.max_staleness_seconds, self.refresh_seconds
            ));
        }
        Ok(())
    }

    /// Resolves the token file paths against the configuration file's directory.
    pub fn resolve_paths(&mut self, base: &Path) {
        for p in [&mut self.session_token_file, &mut self.bearer_token_file] {
            *p = p.take().map(|p| base.join(p));
        }
    }

    /// The URL to use: configured, else `PYHALL_REGISTRY_URL`, else PyHall's default.
    pub fn url(&self) -> String {
        self.url
            .clone()
            .or_else(|| std::env::var(URL_ENV).ok().filter(|u| !u.is_empty()))
            .unwrap_or_else(|| client::DEFAULT_URL.to_owned())
    }

    /// The client's settings, reading the tokens (systemd credentials first). The error names
    /// the file, never its content.
    pub fn client_settings(&self) -> Result<ClientSettings, String> {
        let read = |credential: &str, file: &Option<PathBuf>| -> Result<Option<Secret>, String> {
            let Some(path) = crate::config::credential(credential).or_else(|| file.clone()) else {
                return Ok(None);
            };
            let text = zeroize::Zeroizing::new(
                std::fs::read_to_string(&path)
                    .map_err(|e| format!("cannot read the token file {}: {e}", path.display()))?,
            );
            Secret::new(&text)
                .map(Some)
                .map_err(|e| format!("the token file {}: {e}", path.display()))
        };
        Ok(ClientSettings {
            base_url: self.url(),
            session_token: read("registry-session", &self.session_token_file)?,
            bearer_token: read("registry-bearer", &self.bearer_token_file)?,
            timeout: Duration::from_millis(self.timeout_ms),
            max_body_bytes: self.max_response_bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<RegistryServiceSection, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    #[test]
    fn off_by_default_and_unknown_keys_are_refused() {
        let d = parse("").unwrap();
        assert!(!d.enabled && !d.send_decision_counts);
        assert_eq!(d.on_stale.for_env(Env::Dev), OnStale::Warn);
        assert_eq!(d.on_stale.for_env(Env::Prod), OnStale::Deny);
        assert!(parse("enable = true").is_err());
        assert!(parse("[on_stale]\nprod = \"allow\"").is_err());
    }

    #[test]
    fn checks_fail_closed() {
        let on = parse("enabled = true").unwrap();
        assert!(
            on.check(false)
                .unwrap_err()
                .contains("require_worker_attestation")
        );
        assert!(on.check(true).is_ok());
        let creds = parse("enabled = true\nurl = \"https://u:p@h\"").unwrap();
        assert!(!creds.check(true).unwrap_err().contains(":p@"));
        let stale =
            parse("enabled = true\nrefresh_seconds = 60\nmax_staleness_seconds = 30").unwrap();
        assert!(stale.check(true).is_err());
    }
}
