//! The HTTP client of the worker registry service: PyHall's `RegistryClient` API
//! (`pyhall/registry_client.py`), blocking, with a timeout on every request, a size bound on
//! every answer, no redirects, and tokens that never reach a log line or an error message.
//!
//! Blocking on purpose: the Hall calls it only from its refresher thread and the CLI, never
//! from a dispatch (which reads [`super::cache::Cache`] alone).
//!
//! Threat model: see [`super`]. Here: a slow service is cut off by the total timeout
//! (connect + headers + body); a huge body is refused at `max_body_bytes` (the `Content-Length`
//! is checked first, then the read is capped, so a lying length does not help); a redirect is
//! an error, never followed (a token must not be replayed to another host, and the service's
//! answers must come from the configured URL); wrong JSON is a typed error, never a partial
//! answer; a token is a header marked sensitive, kept in a [`Secret`] whose `Debug` is
//! redacted, and no error message is built from a request's headers.

use std::io::Read;
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, COOKIE, HeaderMap, HeaderValue};
use serde::Serialize;
use serde_json::Value;

use super::model::{
    self, AttestRequest, BanEntry, DecisionCount, ModelError, ReportRequest, VerifyResponse,
};

/// PyHall's default service.
pub const DEFAULT_URL: &str = "https://api.pyhall.dev";

/// A credential: zeroed on drop, redacted in `Debug`, never `Display`ed.
#[derive(Clone)]
pub struct Secret(zeroize::Zeroizing<String>);

impl Secret {
    /// Checks that `token` can be sent in a header (visible ASCII, no `;` or `,`, which would
    /// let a token smuggle another cookie). The error never contains the token.
    pub fn new(token: &str) -> Result<Secret, String> {
        let token = token.trim();
        if token.is_empty() {
            return Err("the token is empty".into());
        }
        if !token
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b';' && b != b',')
        {
            return Err("the token has characters a header cannot carry (only visible ASCII without ';' or ',')".into());
        }
        Ok(Secret(zeroize::Zeroizing::new(token.to_owned())))
    }

    fn header(&self, prefix: &str) -> HeaderValue {
        let mut v = HeaderValue::from_str(&format!("{prefix}{}", self.0.as_str()))
            .expect("checked by Secret::new");
        v.set_sensitive(true);
        v
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// How to reach the service.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    /// `http(s)://host[:port][/prefix]`, without a trailing `/`.
    pub base_url: String,
    /// Sent as PyHall's session cookie `pyhall_session` (reports, and every request when set).
    pub session_token: Option<Secret>,
    /// Sent as `Authorization: Bearer …` (attestations; other requests when no session).
    pub bearer_token: Option<Secret>,
    /// The whole request, connect to last byte.
    pub timeout: Duration,
    /// The largest answer read.
    pub max_body_bytes: usize,
}

/// Why a call to the service did not give an answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceError {
    #[error("registry service URL {url:?} is not usable: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("the registry service at {base} cannot be reached ({what}): {reason}")]
    Unreachable {
        base: String,
        what: String,
        reason: String,
    },
    #[error("the registry service rate-limited {what} (HTTP 429)")]
    RateLimited { what: String },
    #[error(
        "the registry service answered {what} with a redirect (HTTP {status}); redirects are not followed"
    )]
    Redirect { what: String, status: u16 },
    #[error("the registry service refused the credentials for {what} (HTTP {status})")]
    Unauthorized { what: String, status: u16 },
    #[error("{what} needs a {token}, and none is configured")]
    MissingToken { what: String, token: &'static str },
    #[error("the registry service answered {what} with HTTP {status}")]
    Status { what: String, status: u16 },
    #[error("the registry service's answer to {what} is larger than {limit} bytes")]
    TooLarge { what: String, limit: usize },
    #[error("the registry service's answer to {what} is malformed: {source}")]
    Malformed { what: String, source: ModelError },
}

impl ServiceError {
    /// What to do about it.
    pub fn hint(&self) -> Option<&'static str> {
        Some(match self {
            ServiceError::InvalidUrl { .. } => {
                "set [registry_service] url (or --url, PYHALL_REGISTRY_URL) to http(s)://host[:port], without user:password@ (tokens come from credential files)"
            }
            ServiceError::Unreachable { .. } => {
                "check the URL and the network path (firewall, DNS); the Hall keeps using cached statuses until they are older than max_staleness_seconds"
            }
            ServiceError::RateLimited { .. } => "retry later; raise refresh_seconds",
            ServiceError::Redirect { .. } => {
                "configure the final URL of the service; the Hall never follows a redirect with a token"
            }
            ServiceError::Unauthorized { .. } | ServiceError::MissingToken { .. } => {
                "check the token files ([registry_service] session_token_file / bearer_token_file, or the systemd credentials registry-session / registry-bearer)"
            }
            ServiceError::TooLarge { .. } => {
                "raise [registry_service] max_response_bytes if the service is trusted to send that much"
            }
            ServiceError::Status { .. } | ServiceError::Malformed { .. } => return None,
        })
    }

    /// A short stable code for `--json` and logs.
    pub fn code(&self) -> &'static str {
        match self {
            ServiceError::InvalidUrl { .. } => "registry_url_invalid",
            ServiceError::Unreachable { .. } => "registry_unreachable",
            ServiceError::RateLimited { .. } => "registry_rate_limited",
            ServiceError::Redirect { .. } => "registry_redirect",
            ServiceError::Unauthorized { .. } => "registry_unauthorized",
            ServiceError::MissingToken { .. } => "registry_token_missing",
            ServiceError::Status { .. } => "registry_error",
            ServiceError::TooLarge { .. } => "registry_answer_too_large",
            ServiceError::Malformed { .. } => "registry_answer_malformed",
        }
    }
}

/// Checks a base URL: http or https, a host, no user information, query or fragment.
/// Returns it without a trailing `/`.
pub fn check_url(url: &str) -> Result<String, ServiceError> {
    let bad = |reason: &str| ServiceError::InvalidUrl {
        // The URL is shown without anything after a '@' in its authority (no secrets).
        url: redact_userinfo(url),
        reason: reason.to_owned(),
    };
    let parsed = reqwest::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(bad("only http and https are supported"));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(bad("there is no host"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(bad(
            "user information in the URL is refused: it would be sent and logged",
        ));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(bad("a query or fragment is not allowed"));
    }
    Ok(url.trim_end_matches('/').to_owned())
}

fn redact_userinfo(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://…@{}", &url[..s], &url[at + 1..]),
        _ => url.to_owned(),
    }
}

/// Python's `urllib.parse.quote(s, safe="")`: every byte but `A-Za-z0-9_.-~` percent-encoded.
pub fn quote_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Which credential a request carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Auth {
    /// The session cookie when configured, else the bearer token, else nothing.
    Any,
    /// The session cookie, required (PyHall: `report_hash` "requires session_token").
    Session,
    /// The bearer token, required (PyHall: `attest submit --bearer-token`).
    Bearer,
}

/// The registry service client.
#[derive(Debug, Clone)]
pub struct Client {
    settings: ClientSettings,
    http: reqwest::blocking::Client,
}

impl Client {
    /// Builds the client (no connection is made yet).
    pub fn new(mut settings: ClientSettings) -> Result<Client, ServiceError> {
        settings.base_url = check_url(&settings.base_url)?;
        crate::common::install_tls_provider();
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        let http = reqwest::blocking::Client::builder()
            .user_agent(concat!("wcp-hall/", env!("CARGO_PKG_VERSION")))
            .default_headers(headers)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            .no_proxy()
            .build()
            .map_err(|e| ServiceError::Unreachable {
                base: settings.base_url.clone(),
                what: "client set-up".into(),
                reason: root_cause(&e),
            })?;
        Ok(Client { settings, http })
    }

    pub fn base_url(&self) -> &str {
        &self.settings.base_url
    }

    /// `GET /api/v1/verify/{id}`; 404 is `unknown` (as in PyHall).
    pub fn verify(&self, worker_id: &str) -> Result<VerifyResponse, ServiceError> {
        let path = format!("/api/v1/verify/{}", quote_segment(worker_id));
        let what = format!("GET {path}");
        match self.send(reqwest::Method::GET, &path, None::<&()>, Auth::Any, &what)? {
            Answer::NotFound => Ok(VerifyResponse::unknown(worker_id)),
            Answer::Body(bytes) => VerifyResponse::parse(worker_id, &bytes)
                .map_err(|source| ServiceError::Malformed { what, source }),
        }
    }

    /// `GET /api/v1/ban-list?limit=N`.
    pub fn ban_list(&self, limit: u32) -> Result<Vec<BanEntry>, ServiceError> {
        let path = format!("/api/v1/ban-list?limit={limit}");
        let what = format!("GET {path}");
        let bytes = self
            .send(reqwest::Method::GET, &path, None::<&()>, Auth::Any, &what)?
            .body(&what)?;
        model::parse_ban_list(&bytes).map_err(|source| ServiceError::Malformed { what, source })
    }

    /// `GET /health`.
    pub fn health(&self) -> Result<Value, ServiceError> {
        let what = "GET /health".to_owned();
        let bytes = self
            .send(
                reqwest::Method::GET,
                "/health",
                None::<&()>,
                Auth::Any,
                &what,
            )?
            .body(&what)?;
        model::parse_health(&bytes).map_err(|source| ServiceError::Malformed { what, source })
    }

    /// `POST /api/v1/ban-list/report` with the session token.
    pub fn report(&self, report: &ReportRequest) -> Result<Value, ServiceError> {
        let path = "/api/v1/ban-list/report";
        let what = format!("POST {path}");
        let bytes = self
            .send(
                reqwest::Method::POST,
                path,
                Some(report),
                Auth::Session,
                &what,
            )?
            .body(&what)?;
        model::parse_any(&bytes).map_err(|source| ServiceError::Malformed { what, source })
    }

    /// `PUT /api/v1/workers/{id}/attest` with the bearer token.
    pub fn attest(&self, worker_id: &str, req: &AttestRequest) -> Result<Value, ServiceError> {
        let path = format!("/api/v1/workers/{}/attest", quote_segment(worker_id));
        let what = format!("PUT {path}");
        let bytes = self
            .send(reqwest::Method::PUT, &path, Some(req), Auth::Bearer, &what)?
            .body(&what)?;
        model::parse_any(&bytes).map_err(|source| ServiceError::Malformed { what, source })
    }

    /// `POST /api/v1/telemetry/decisions`.
    pub fn send_decisions(&self, decisions: &[DecisionCount]) -> Result<(), ServiceError> {
        #[derive(Serialize)]
        struct Body<'a> {
            decisions: &'a [DecisionCount],
        }
        let path = "/api/v1/telemetry/decisions";
        let what = format!("POST {path}");
        self.send(
            reqwest::Method::POST,
            path,
            Some(&Body { decisions }),
            Auth::Any,
            &what,
        )?
        .body(&what)?;
        Ok(())
    }

    fn send<B: Serialize>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&B>,
        auth: Auth,
        what: &str,
    ) -> Result<Answer, ServiceError> {
        let s = &self.settings;
        let mut req = self.http.request(method, format!("{}{path}", s.base_url));
        let missing = |token| ServiceError::MissingToken {
            what: what.to_owned(),
            token,
        };
        match (auth, &s.session_token, &s.bearer_token) {
            (Auth::Session, Some(t), _) | (Auth::Any, Some(t), _) => {
                req = req.header(COOKIE, t.header("pyhall_session="));
            }
            (Auth::Bearer, _, Some(t)) | (Auth::Any, None, Some(t)) => {
                req = req.header(AUTHORIZATION, t.header("Bearer "));
            }
            (Auth::Session, None, _) => return Err(missing("session token")),
            (Auth::Bearer, _, None) => return Err(missing("bearer token")),
            (Auth::Any, None, None) => {}
        }
        if let Some(b) = body {
            let bytes = serde_json::to_vec(b).map_err(|e| ServiceError::Malformed {
                what: what.to_owned(),
                source: ModelError::Shape(e.to_string()),
            })?;
            req = req
                .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
                .body(bytes);
        }
        let unreachable = |e: &reqwest::Error| ServiceError::Unreachable {
            base: s.base_url.clone(),
            what: what.to_owned(),
            reason: if e.is_timeout() {
                format!("no complete answer within {} ms", s.timeout.as_millis())
            } else {
                root_cause(e)
            },
        };
        let mut resp = req.send().map_err(|e| unreachable(&e))?;
        let status = resp.status();
        let what = what.to_owned();
        if status == StatusCode::NOT_FOUND {
            return Ok(Answer::NotFound);
        }
        if status == StatusCode::TOO_MANY_REQUESTS {
            return Err(ServiceError::RateLimited { what });
        }
        if status.is_redirection() {
            return Err(ServiceError::Redirect {
                what,
                status: status.as_u16(),
            });
        }
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(ServiceError::Unauthorized {
                what,
                status: status.as_u16(),
            });
        }
        if !status.is_success() {
            return Err(ServiceError::Status {
                what,
                status: status.as_u16(),
            });
        }
        let limit = s.max_body_bytes;
        let too_large = || ServiceError::TooLarge {
            what: what.clone(),
            limit,
        };
        if resp.content_length().is_some_and(|n| n > limit as u64) {
            return Err(too_large());
        }
        let mut bytes = Vec::new();
        (&mut resp)
            .take(limit as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| ServiceError::Unreachable {
                base: s.base_url.clone(),
                what: what.clone(),
                reason: format!("the answer was cut off: {e}"),
            })?;
        if bytes.len() > limit {
            return Err(too_large());
        }
        Ok(Answer::Body(bytes))
    }
}

enum Answer {
    NotFound,
    Body(Vec<u8>),
}

impl Answer {
    fn body(self, what: &str) -> Result<Vec<u8>, ServiceError> {
        match self {
            Answer::Body(b) => Ok(b),
            Answer::NotFound => Err(ServiceError::Status {
                what: what.to_owned(),
                status: 404,
            }),
        }
    }
}

/// The innermost cause of an HTTP error (e.g. "Connection refused (os error 111)"): reqwest's
/// own message repeats the URL, which is already in ours.
fn root_cause(e: &reqwest::Error) -> String {
    let mut cause: &dyn std::error::Error = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_with_credentials_queries_or_other_schemes_are_refused_without_echoing_secrets() {
        assert_eq!(
            check_url("https://api.pyhall.dev/").unwrap(),
            "https://api.pyhall.dev"
        );
        assert!(check_url("http://127.0.0.1:8080/prefix").is_ok());
        let e = check_url("https://user:hunter2@example.org").unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
        for bad in ["ftp://example.org", "https://example.org/?a=1", "not a url"] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tokens_are_redacted_and_cannot_smuggle_headers_or_cookies() {
        let t = Secret::new("s3cr3t-token").unwrap();
        assert!(!format!("{t:?}").contains("s3cr3t"));
        for bad in ["a;b=c", "a\r\nX: y", "a b", ""] {
            let e = Secret::new(bad).unwrap_err();
            assert!(!e.contains(bad) || bad.is_empty(), "{e}");
        }
    }

    #[test]
    fn worker_ids_are_quoted_like_pythons_quote_with_nothing_safe() {
        assert_eq!(quote_segment("org.x.y-1_~"), "org.x.y-1_~");
        assert_eq!(quote_segment("a/b?c d"), "a%2Fb%3Fc%20d");
    }
}
