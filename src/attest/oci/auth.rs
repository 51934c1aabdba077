//! Registry credentials, from where operators already keep them: a systemd credential
//! (`$CREDENTIALS_DIRECTORY/oci-auth.json`), else the Docker client configuration
//! (`$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`): `credHelpers` for this host,
//! then `credsStore`, then a static `auths` entry. No credentials is anonymous access.
//!
//! Threat model: the configuration files are the operator's; a credential helper is a program
//! the operator installed (`docker-credential-<name>` on `PATH`); its name comes from that file
//! and is refused unless it is a plain name (no `/`, no leading `-`). Its answer is bounded
//! (64 KiB, 30 s) and parsed strictly. Secrets never appear in messages or `Debug` output.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use oci_client::secrets::RegistryAuth;
use serde_json::Value;

/// Why credentials could not be read.
#[derive(Debug, thiserror::Error)]
#[error("registry credentials for {host} from {source_name}: {problem}")]
pub struct AuthError {
    pub host: String,
    pub source_name: String,
    pub problem: String,
}

/// The systemd credential name the Hall reads (a Docker `config.json`).
pub const SYSTEMD_CREDENTIAL: &str = "oci-auth.json";

const HELPER_OUTPUT_LIMIT: u64 = 64 << 10;
const HELPER_TIMEOUT: Duration = Duration::from_secs(30);

fn config_paths() -> Vec<(PathBuf, &'static str)> {
    let mut out = Vec::new();
    if let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") {
        out.push((
            Path::new(&dir).join(SYSTEMD_CREDENTIAL),
            "systemd credential",
        ));
    }
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG") {
        out.push((Path::new(&dir).join("config.json"), "docker config"));
    } else if let Some(home) = std::env::var_os("HOME") {
        out.push((
            Path::new(&home).join(".docker/config.json"),
            "docker config",
        ));
    }
    out
}

/// The credentials for `host` (`HOST[:PORT]`), anonymous when none are configured.
pub fn for_host(host: &str) -> Result<RegistryAuth, AuthError> {
    for (path, what) in config_paths() {
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(AuthError {
                    host: host.to_owned(),
                    source_name: path.display().to_string(),
                    problem: e.to_string(),
                });
            }
        };
        let err = |problem: String| AuthError {
            host: host.to_owned(),
            source_name: format!("{what} {}", path.display()),
            problem,
        };
        let config = crate::json::parse_slice(&text).map_err(|e| err(e.to_string()))?;
        if let Some(auth) = from_config(&config, host).map_err(err)? {
            return Ok(auth);
        }
    }
    Ok(RegistryAuth::Anonymous)
}

/// The credentials a Docker `config.json` gives `host`, if any.
pub fn from_config(config: &Value, host: &str) -> Result<Option<RegistryAuth>, String> {
    let helper = config
        .get("credHelpers")
        .and_then(|h| h.get(host))
        .or_else(|| config.get("credsStore"));
    if let Some(helper) = helper {
        let name = helper
            .as_str()
            .ok_or("credHelpers/credsStore must name a helper")?;
        return run_helper(name, host).map(Some);
    }
    let Some(entry) = config.get("auths").and_then(|a| a.get(host)) else {
        return Ok(None);
    };
    if let Some(token) = entry.get("identitytoken").and_then(Value::as_str) {
        return Ok(Some(RegistryAuth::Bearer(token.to_owned())));
    }
    let Some(b64) = entry.get("auth").and_then(Value::as_str) else {
        return Ok(None);
    };
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| format!("auths.{host}.auth is not base64"))?;
    let text = String::from_utf8(raw).map_err(|_| format!("auths.{host}.auth is not UTF-8"))?;
    let (user, pass) = text
        .split_once(':')
        .ok_or_else(|| format!("auths.{host}.auth is not USER:PASSWORD"))?;
    Ok(Some(RegistryAuth::Basic(user.to_owned(), pass.to_owned())))
}

fn run_helper(name: &str, host: &str) -> Result<RegistryAuth, String> {
    if name.is_empty() || name.contains('/') || name.starts_with('-') {
        return Err(format!(
            "credential helper name {name:?} is not a plain name"
        ));
    }
    let program = format!("docker-credential-{name}");
    let mut child = Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(host.as_bytes());
    }
    let mut out = Vec::new();
    if let Some(stdout) = child.stdout.take() {
        stdout
            .take(HELPER_OUTPUT_LIMIT)
            .read_to_end(&mut out)
            .map_err(|e| format!("{program}: {e}"))?;
    }
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().map_err(|e| e.to_string())? {
            break s;
        }
        if started.elapsed() > HELPER_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("{program} did not answer within 30 s"));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    if !status.success() {
        return Err(format!("{program} get failed ({status}) for {host}"));
    }
    let v = crate::json::parse_slice(&out).map_err(|e| format!("{program}: {e}"))?;
    let user = v.get("Username").and_then(Value::as_str).unwrap_or("");
    let secret = v
        .get("Secret")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("{program} gave no Secret"))?;
    Ok(if user == "<token>" {
        RegistryAuth::Bearer(secret.to_owned())
    } else {
        RegistryAuth::Basic(user.to_owned(), secret.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_auths_are_read_and_secrets_not_shown() {
        let b64 = base64::engine::general_purpose::STANDARD.encode("alice:s3cret");
        let cfg = crate::json::parse_str(&format!(
            r#"{{"auths": {{"reg.example:5000": {{"auth": "{b64}"}}}}}}"#
        ))
        .unwrap();
        let auth = from_config(&cfg, "reg.example:5000").unwrap().unwrap();
        assert_eq!(auth, RegistryAuth::Basic("alice".into(), "s3cret".into()));
        assert!(!format!("{auth:?}").contains("s3cret"));
        assert_eq!(from_config(&cfg, "other").unwrap(), None);
    }

    #[test]
    fn a_helper_name_with_a_path_is_refused() {
        let cfg = crate::json::parse_str(r#"{"credsStore": "../../bin/sh"}"#).unwrap();
        assert!(from_config(&cfg, "h").unwrap_err().contains("plain name"));
    }
}
