//! `hall.toml`: the Hall's configuration.
//!
//! ```toml
//! [hall]                      # PyHall's HallConfig, same names and defaults
//! require_signatory = true
//! allowed_tenants = ["acme-corp"]
//! require_worker_attestation = false
//! enforce_correlation_id = true
//! enforce_required_controls = true
//! enforce_blast_scoring_in_prod = true
//! enforce_privilege_envelopes = false
//!
//! [paths]                     # relative paths are relative to this file's directory
//! rules = "rules.json"
//! registry_dir = "registry"
//!
//! [routing]
//! controls_scope = "per_worker"   # or "global" (PyHall's single global controls set)
//! ```
//!
//! Every table rejects unknown keys, and errors carry the line and column (a misspelt
//! `requre_signatory` must not silently leave signatory checks off). Parsing is pure
//! ([`Config::from_toml_str`]); [`Config::load`] adds the file read and path resolution.
//! A bad configuration exits with 78 (EX_CONFIG) so a supervisor such as systemd can stop
//! restarting a Hall that cannot start.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::registry::ControlsScope;
use crate::router::RouterConfig;

/// The parsed `hall.toml`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub hall: HallSection,
    #[serde(default)]
    pub paths: PathsSection,
    #[serde(default)]
    pub routing: RoutingSection,
    #[serde(default)]
    pub server: ServerSection,
    #[serde(default)]
    pub identity: IdentitySection,
    #[serde(default)]
    pub approvals: ApprovalsSection,
    #[serde(default)]
    pub profiles: ProfilesSection,
    #[serde(default)]
    pub attestation: AttestationSection,
    #[serde(default)]
    pub receipts: crate::receipt::ReceiptsSection,
    #[serde(default)]
    pub envelope: EnvelopeSection,
    /// The optional TCP listener for Prometheus (docs/metrics.md).
    #[serde(default)]
    pub metrics: MetricsSection,
    /// OpenTelemetry traces over OTLP/HTTP (docs/configuration.md); off unless an endpoint is
    /// set here or in `OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT`.
    #[serde(default)]
    pub tracing: TracingSection,
    /// The worker registry service (PyHall's `RegistryClient` API), off by default
    /// (docs/registry-service.md).
    #[serde(default)]
    pub registry_service: crate::registry_service::RegistryServiceSection,
    /// Warm instances of protocol 2 workers (docs/configuration.md, "Warm workers"); off unless
    /// `workers` names some.
    #[serde(default)]
    pub warm: WarmSection,
}

/// `[warm]`: which workers the Hall starts ahead of their requests, and how many.
///
/// A warm instance has exactly a cold run's envelope and serves one request; an empty pool is
/// a cold run, never a wait (ARCHITECTURE.md, "Warm instances").
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WarmSection {
    /// Worker species kept warm (`wrk.*`). Empty: no warm instances.
    pub workers: Vec<String>,
    /// Idle instances per worker.
    pub per_worker: usize,
    /// Idle instances in total.
    pub max_instances: usize,
    /// What idle instances may hold in total (their cgroup `memory.current`, or the worker's
    /// resident set): an instance that would go over is stopped.
    pub memory_budget_bytes: u64,
    /// An instance idle this long is stopped (and replaced).
    pub max_idle_seconds: u64,
    /// How long an instance may take to reach its exec before the start counts as failed.
    pub start_timeout_ms: u64,
    /// The CPU time an instance may use before its request (its start-up: an interpreter and
    /// its imports); one that uses more is stopped, and its worker gets no new instance for a
    /// minute.
    pub start_cpu_ms: u64,
}

impl Default for WarmSection {
    fn default() -> Self {
        WarmSection {
            workers: Vec::new(),
            per_worker: 2,
            max_instances: 8,
            memory_budget_bytes: 512 << 20,
            max_idle_seconds: 600,
            start_timeout_ms: 10_000,
            start_cpu_ms: 5_000,
        }
    }
}

impl WarmSection {
    /// The configuration check: species ids, and bounds that keep the pool small.
    pub fn check(&self) -> Result<(), String> {
        for w in &self.workers {
            if !w.starts_with("wrk.") || w.len() > 200 {
                return Err(format!(
                    "[warm] workers: {w:?} is not a worker species id\n\
                     hint: list species like \"wrk.hello.greeter\" (the record's worker_species_id)"
                ));
            }
        }
        if self.per_worker == 0 || self.per_worker > 64 {
            return Err("[warm] per_worker must be 1 to 64".into());
        }
        if self.max_instances == 0 || self.max_instances > 1024 {
            return Err("[warm] max_instances must be 1 to 1024".into());
        }
        if self.max_idle_seconds == 0 || self.start_timeout_ms == 0 || self.start_cpu_ms == 0 {
            return Err(
                "[warm] max_idle_seconds, start_timeout_ms and start_cpu_ms must be at least 1"
                    .into(),
            );
        }
        Ok(())
    }
}

/// `[tracing]`: where the Hall sends its dispatch spans (OTLP over HTTP, protobuf). Every key
/// is optional; an unset key falls back to the standard `OTEL_*` variable (see
/// `hall::otel::Settings::resolve`).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TracingSection {
    /// The OTLP/HTTP traces URL, used as is (e.g. `"http://127.0.0.1:4318/v1/traces"`).
    pub endpoint: Option<String>,
    /// Extra HTTP headers sent with every export (e.g. an authorisation token).
    pub headers: std::collections::BTreeMap<String, String>,
    /// The share of new traces recorded, 0.0–1.0; a caller's sampled flag is followed
    /// (parent-based). Unset: `OTEL_TRACES_SAMPLER(_ARG)`, else every trace.
    pub sampling_ratio: Option<f64>,
    /// The `service.name` of the spans (unset: `OTEL_SERVICE_NAME`, else `wcp-hall`).
    pub service_name: Option<String>,
    /// Spans waiting for export at most; more are dropped and counted (default 2048).
    pub max_queue: Option<usize>,
}

/// `HOST:PORT` (or `HOST`) naming a loopback address or `localhost`: what
/// `[attestation] oci_plain_http` may list.
fn is_loopback_host_port(h: &str) -> bool {
    let host = match h.rsplit_once(':') {
        Some((host, port)) if port.parse::<u16>().is_ok() && !host.ends_with(':') => host,
        _ => h,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// `[attestation]`: where verified package copies live and who is trusted to sign packages.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AttestationSection {
    /// The verified, read-only, content-addressed package store (default: `<state_dir>/store`;
    /// tmpfs such as `/run/wcp-hall/store` is fastest).
    pub store_dir: Option<PathBuf>,
    /// The namespace trust policy (`wcp-hall-trust/1`): which keys may sign packages for which
    /// `org.<ns>` / `x.<ns>`. Required when `[hall] require_worker_attestation = true`.
    pub trust_policy: Option<PathBuf>,
    /// Legacy awp.v1 (PyHall HMAC) manifests only: the shared key file (mode 0600).
    pub hmac_key_file: Option<PathBuf>,
    /// Re-verify a cached package at most every N seconds (0: on every dispatch).
    pub recheck_seconds: u64,
    /// OCI registries (`HOST:PORT`) the Hall may speak plain HTTP to when fetching a record's
    /// `package_ref`; only loopback addresses are honoured (see docs/oci.md). Default: none.
    pub oci_plain_http: Vec<String>,
}

/// `[envelope]`: how the Hall runs workers (see docs/envelope.md and docs/configuration.md).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EnvelopeSection {
    /// Hall-owned directory with one private directory per run (tmpfs is fastest; default:
    /// `$RUNTIME_DIRECTORY/runs`, else `<state_dir>/runs`).
    pub runs_dir: Option<PathBuf>,
    /// Where workers' persistent writable directories live (default: `<state_dir>/data`): a
    /// worker's relative `filesystem_writes` entry `knowledge/` becomes
    /// `<data_dir>/<worker_id>/knowledge`, kept across dispatches.
    pub data_dir: Option<PathBuf>,
    /// Hall-owned directory of secret files a worker may be given (`secrets_access`).
    pub secrets_dir: Option<PathBuf>,
    /// The unprivileged user workers run as when the Hall runs as root (name or numeric uid).
    pub worker_user: String,
    /// Time between SIGTERM and killing the worker's whole tree.
    pub kill_grace_ms: u64,
    /// How long output is still read after the worker's tree is gone.
    pub drain_timeout_ms: u64,
    /// The Python interpreter Python workers (`code/bootstrap.py`) run with: an absolute path,
    /// resolved through symlinks (default: the first of `/usr/bin/python3.11`,
    /// `/usr/bin/python3` that exists). The Hall probes it at start and at every reload, as the
    /// worker uid, and grants workers what it needs (see `envelope::python`).
    pub python: Option<PathBuf>,
    /// A run's scratch space (its private tmp and the write directories mapped under the run
    /// directory), in bytes: a Hall running as root mounts a tmpfs of this size on each run
    /// directory. 0 turns it off (scratch is then bounded per file only, by RLIMIT_FSIZE).
    pub scratch_bytes: u64,
    /// What a worker may keep in its persistent write directories, in bytes: checked before
    /// every run (a worker at or over it is refused with `write_quota_exceeded`). 0: unbounded.
    pub data_quota_bytes: u64,
}

impl Default for EnvelopeSection {
    fn default() -> Self {
        EnvelopeSection {
            runs_dir: None,
            data_dir: None,
            secrets_dir: None,
            worker_user: "nobody".into(),
            kill_grace_ms: 500,
            drain_timeout_ms: 2_000,
            python: None,
            scratch_bytes: 256 << 20,
            data_quota_bytes: 1 << 30,
        }
    }
}

/// `[profiles]`: the WCP profile (`prof.*`) each environment runs under. A profile sets the
/// policy set the gate evaluates, extra required controls, whether every dispatch is gated,
/// the envelope minimums and limits, and the blast maxima. An environment without a profile
/// has no policy gate (rules that demand one are denied, fail closed).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ProfilesSection {
    pub dev: Option<String>,
    pub stage: Option<String>,
    pub prod: Option<String>,
    pub edge: Option<String>,
}

impl ProfilesSection {
    /// The selection as (env, profile id) pairs.
    pub fn selection(&self) -> Vec<(crate::wcp::Env, &str)> {
        use crate::wcp::Env;
        [
            (Env::Dev, &self.dev),
            (Env::Stage, &self.stage),
            (Env::Prod, &self.prod),
            (Env::Edge, &self.edge),
        ]
        .into_iter()
        .filter_map(|(e, p)| p.as_deref().map(|p| (e, p)))
        .collect()
    }
}

/// `[hall]`: PyHall's HallConfig fields and defaults.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HallSection {
    pub require_signatory: bool,
    pub allowed_tenants: Vec<String>,
    pub require_worker_attestation: bool,
    pub enforce_correlation_id: bool,
    pub enforce_required_controls: bool,
    pub enforce_blast_scoring_in_prod: bool,
    pub enforce_privilege_envelopes: bool,
}

impl Default for HallSection {
    fn default() -> Self {
        let d = RouterConfig::default();
        HallSection {
            require_signatory: d.require_signatory,
            allowed_tenants: Vec::new(),
            require_worker_attestation: d.require_worker_attestation,
            enforce_correlation_id: d.enforce_correlation_id,
            enforce_required_controls: d.enforce_required_controls,
            enforce_blast_scoring_in_prod: d.enforce_blast_scoring_in_prod,
            enforce_privilege_envelopes: d.enforce_privilege_envelopes,
        }
    }
}

/// `[paths]`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PathsSection {
    pub rules: PathBuf,
    pub registry_dir: PathBuf,
    /// Where the daemon keeps durable state (pending approvals, receipts, the package store).
    /// Unset: `$STATE_DIRECTORY` (systemd's `StateDirectory=`), else `/var/lib/wcp-hall`.
    pub state_dir: Option<PathBuf>,
    /// The directory of profile files (`prof.*.toml`), needed when `[profiles]` selects any.
    pub profiles_dir: Option<PathBuf>,
}

impl Default for PathsSection {
    fn default() -> Self {
        PathsSection {
            rules: PathBuf::from("rules.json"),
            registry_dir: PathBuf::from("registry"),
            state_dir: None,
            profiles_dir: None,
        }
    }
}

/// `[server]`: the daemon's socket and its limits (backpressure).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    /// The Unix socket path (`serve --socket` overrides it). Unset: `$RUNTIME_DIRECTORY/hall.sock`
    /// (systemd's `RuntimeDirectory=`), else `/run/wcp-hall/hall.sock`.
    pub socket: Option<PathBuf>,
    /// Socket file mode, octal string (e.g. "0660"). The socket is created inside its directory
    /// with this mode before anyone can connect.
    pub socket_mode: String,
    /// Optional group name or numeric gid to own the socket (membership grants what the Hall grants).
    pub socket_group: Option<String>,
    /// Requests executing at once, all tenants together.
    pub max_concurrent: usize,
    /// Requests executing at once for one tenant.
    pub max_concurrent_per_tenant: usize,
    /// Requests allowed to wait for a slot; beyond it the Hall answers 429 with Retry-After.
    pub max_queue: usize,
    /// How long a queued request waits for a slot before 429.
    pub queue_timeout_ms: u64,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// A whole request (headers and body) must arrive within this time (slow-client guard).
    pub read_timeout_ms: u64,
    /// On SIGTERM: how long in-flight work may take to finish before it is stopped.
    pub shutdown_grace_ms: u64,
    /// Connections open at once, all peers together; beyond it a new connection closes the
    /// oldest idle one or is answered 503 `connections_full`. Unset: derived at start from the
    /// descriptor limit (what `RLIMIT_NOFILE` leaves after the reserve, at most 4096).
    pub max_connections: Option<usize>,
    /// Connections one peer uid may hold at once; beyond it 429 `too_many_connections`.
    /// Unset: a quarter of `max_connections`.
    pub max_connections_per_uid: Option<usize>,
    /// Connections operators (`[identity]`) may open beyond `max_connections`, so health and
    /// operator actions stay reachable while other uids fill the Hall.
    pub operator_connections: usize,
    /// A keep-alive connection with no request in progress is closed after this long.
    pub idle_timeout_ms: u64,
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            socket: None,
            socket_mode: "0660".into(),
            socket_group: None,
            max_concurrent: 64,
            max_concurrent_per_tenant: 16,
            max_queue: 256,
            queue_timeout_ms: 2_000,
            max_body_bytes: 1024 * 1024,
            read_timeout_ms: 10_000,
            shutdown_grace_ms: 10_000,
            max_connections: None,
            max_connections_per_uid: None,
            operator_connections: 8,
            idle_timeout_ms: 5_000,
        }
    }
}

/// The first directory of a systemd `*_DIRECTORY` variable (they may list several, `:`-separated).
fn systemd_dir(var: &str) -> Option<PathBuf> {
    std::env::var_os(var)
        .and_then(|v| {
            v.to_str()
                .and_then(|s| s.split(':').next())
                .map(PathBuf::from)
        })
        .filter(|p| p.is_absolute())
}

/// The default configuration file: `$CONFIGURATION_DIRECTORY/hall.toml` under systemd's
/// `ConfigurationDirectory=`, else `/etc/wcp-hall/hall.toml`.
pub fn default_config_path() -> PathBuf {
    systemd_dir("CONFIGURATION_DIRECTORY")
        .map(|d| d.join("hall.toml"))
        .unwrap_or_else(|| PathBuf::from("/etc/wcp-hall/hall.toml"))
}

/// A credential systemd passed with `LoadCredential=NAME:…` (`$CREDENTIALS_DIRECTORY/NAME`),
/// if there is one; it takes precedence over a configured key path.
pub fn credential(name: &str) -> Option<PathBuf> {
    let path = systemd_dir("CREDENTIALS_DIRECTORY")?.join(name);
    path.is_file().then_some(path)
}

impl ServerSection {
    /// The socket path: configured, else `$RUNTIME_DIRECTORY/hall.sock`, else the FHS default.
    pub fn socket_path(&self) -> PathBuf {
        self.socket.clone().unwrap_or_else(|| {
            systemd_dir("RUNTIME_DIRECTORY")
                .map(|d| d.join("hall.sock"))
                .unwrap_or_else(|| PathBuf::from("/run/wcp-hall/hall.sock"))
        })
    }

    /// The socket mode as a number.
    pub fn mode(&self) -> Option<u32> {
        u32::from_str_radix(self.socket_mode.trim_start_matches("0o"), 8)
            .ok()
            .filter(|m| *m <= 0o777)
    }
}

/// `[identity]`: which kernel-verified peers may act as which tenants, and who is an operator.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct IdentitySection {
    /// uids allowed operator actions (resolving approvals, reloading).
    pub operator_uids: Vec<u32>,
    /// gids (primary group of the peer) allowed operator actions.
    pub operator_gids: Vec<u32>,
    /// Peer → tenants mappings; a peer may act as the union of every matching entry's tenants.
    pub peers: Vec<PeerMapping>,
}

/// One `[[identity.peers]]` entry: a uid or a gid (exactly one) and its tenants.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PeerMapping {
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub tenants: Vec<String>,
}

/// `[approvals]`: human-in-the-loop settings (WCP §5.8).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ApprovalsSection {
    /// How long a pending approval stays open before it expires (denied, with a receipt).
    pub timeout_ms: u64,
    /// How long `POST /wcp/dispatch` waits for a resolution before answering "pending" (the
    /// caller then polls `GET /wcp/approvals/{id}`). A caller may ask for less with
    /// `?approval_wait_ms=`.
    pub wait_ms: u64,
    /// How long the outcome of a closed approval (the approved run's result, or the denial) is
    /// kept for the requester to collect, counted from the resolution or expiry. The receipts
    /// stay in the log regardless.
    pub outcome_retention_ms: u64,
}

impl Default for ApprovalsSection {
    fn default() -> Self {
        ApprovalsSection {
            timeout_ms: 15 * 60 * 1000,
            wait_ms: 30_000,
            outcome_retention_ms: 24 * 60 * 60 * 1000,
        }
    }
}

/// `[routing]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RoutingSection {
    pub controls_scope: ControlsScope,
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid config {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

impl Config {
    /// Parses and checks `hall.toml` text. `origin` names the file in errors.
    pub fn from_toml_str(text: &str, origin: &Path) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        config.check(origin)?;
        Ok(config)
    }

    /// Reads `path`, parses it and resolves relative `[paths]` against its directory.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut config = Self::from_toml_str(&text, path)?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.paths.rules = base.join(&config.paths.rules);
        config.paths.registry_dir = base.join(&config.paths.registry_dir);
        config.paths.state_dir = config.paths.state_dir.map(|p| base.join(p));
        config.paths.profiles_dir = config.paths.profiles_dir.map(|p| base.join(p));
        let a = &mut config.attestation;
        for p in [&mut a.store_dir, &mut a.trust_policy, &mut a.hmac_key_file] {
            *p = p.take().map(|p| base.join(p));
        }
        let e = &mut config.envelope;
        for p in [&mut e.runs_dir, &mut e.data_dir, &mut e.secrets_dir] {
            *p = p.take().map(|p| base.join(p));
        }
        let default_log = crate::receipt::ReceiptsSection::default().log_dir;
        config.receipts.resolve_paths(base);
        if config.receipts.log_dir == default_log {
            // Unset: the receipt log lives in the state directory.
            config.receipts.log_dir = config.state_dir().join("receipts");
        }
        config.server.socket = config.server.socket.map(|p| base.join(p));
        config.registry_service.resolve_paths(base);
        Ok(config)
    }

    fn check(&self, origin: &Path) -> Result<(), ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            path: origin.to_owned(),
            message,
        };
        if self.hall.require_signatory && self.hall.allowed_tenants.is_empty() {
            return Err(invalid(
                "[hall] require_signatory = true with an empty allowed_tenants would deny every request; list the signatory tenants or set require_signatory = false".into(),
            ));
        }
        if self.server.mode().is_none() {
            return Err(invalid(format!(
                "[server] socket_mode {:?} is not an octal file mode such as \"0660\"",
                self.server.socket_mode
            )));
        }
        if self.server.max_concurrent == 0 || self.server.max_concurrent_per_tenant == 0 {
            return Err(invalid(
                "[server] max_concurrent and max_concurrent_per_tenant must be at least 1".into(),
            ));
        }
        if self.server.max_body_bytes == 0 {
            return Err(invalid(
                "[server] max_body_bytes = 0 would refuse every POST with 413; set a limit of at least 1 (the default is 1048576)".into(),
            ));
        }
        let s = &self.server;
        if s.max_connections == Some(0) || s.max_connections_per_uid == Some(0) {
            return Err(invalid(
                "[server] max_connections and max_connections_per_uid must be at least 1 (leave them unset to derive them from the descriptor limit)".into(),
            ));
        }
        if let (Some(max), Some(per_uid)) = (s.max_connections, s.max_connections_per_uid)
            && per_uid > max
        {
            return Err(invalid(format!(
                "[server] max_connections_per_uid = {per_uid} is more than max_connections = {max}; one uid cannot hold more connections than the Hall"
            )));
        }
        if s.idle_timeout_ms == 0 {
            return Err(invalid(
                "[server] idle_timeout_ms = 0 would close keep-alive connections at once; set at least 1 (the default is 5000)".into(),
            ));
        }
        for (i, p) in self.identity.peers.iter().enumerate() {
            if p.uid.is_some() == p.gid.is_some() {
                return Err(invalid(format!(
                    "[[identity.peers]] entry {} must name exactly one of uid or gid",
                    i + 1
                )));
            }
        }
        if self.hall.require_worker_attestation && self.attestation.trust_policy.is_none() {
            return Err(invalid(
                "[hall] require_worker_attestation = true needs [attestation] trust_policy: without it no package can be verified and every dispatch would be denied DENY_WORKER_HASH_UNAVAILABLE".into(),
            ));
        }
        self.registry_service
            .check(self.hall.require_worker_attestation)
            .map_err(invalid)?;
        if let Some(h) = self
            .attestation
            .oci_plain_http
            .iter()
            .find(|h| !is_loopback_host_port(h))
        {
            return Err(invalid(format!(
                "[attestation] oci_plain_http {h:?} is not a loopback registry: plain HTTP is allowed only for 127.0.0.0/8, [::1] or localhost, as HOST:PORT (use TLS for any other registry)"
            )));
        }
        if !self.profiles.selection().is_empty() && self.paths.profiles_dir.is_none() {
            return Err(invalid(
                "[profiles] selects profiles but [paths] profiles_dir is not set; point it at the directory of prof.*.toml files".into(),
            ));
        }
        if let Some(p) = &self.envelope.python
            && !p.is_absolute()
        {
            return Err(invalid(format!(
                "[envelope] python {:?} must be an absolute path (e.g. \"/usr/bin/python3.11\")",
                p.display().to_string()
            )));
        }
        if let Some(t) = self
            .hall
            .allowed_tenants
            .iter()
            .find(|t| t.trim().is_empty())
        {
            return Err(invalid(format!(
                "[hall] allowed_tenants contains a blank tenant id {t:?}"
            )));
        }
        self.metrics.check().map_err(invalid)?;
        self.warm.check().map_err(invalid)?;
        if let Some(r) = self.tracing.sampling_ratio
            && !(0.0..=1.0).contains(&r)
        {
            return Err(invalid(format!(
                "[tracing] sampling_ratio = {r} is not between 0.0 and 1.0 (1.0 records every trace)"
            )));
        }
        if self.tracing.max_queue == Some(0) {
            return Err(invalid(
                "[tracing] max_queue must be at least 1 (the default is 2048)".into(),
            ));
        }
        if let Some(e) = &self.tracing.endpoint
            && !e.starts_with("http://")
        {
            return Err(invalid(format!(
                "[tracing] endpoint {e:?} is not an http:// URL such as \"http://127.0.0.1:4318/v1/traces\"\nhint: the Hall exports without TLS; send to a local OpenTelemetry Collector and let it forward over TLS"
            )));
        }
        Ok(())
    }

    /// The state directory: configured, else `$STATE_DIRECTORY`, else `/var/lib/wcp-hall`.
    pub fn state_dir(&self) -> PathBuf {
        self.paths
            .state_dir
            .clone()
            .or_else(|| systemd_dir("STATE_DIRECTORY"))
            .unwrap_or_else(|| PathBuf::from("/var/lib/wcp-hall"))
    }

    /// The router's view of the floors.
    pub fn router_config(&self) -> RouterConfig {
        let h = &self.hall;
        RouterConfig {
            require_signatory: h.require_signatory,
            allowed_tenants: h.allowed_tenants.iter().cloned().collect::<BTreeSet<_>>(),
            require_worker_attestation: h.require_worker_attestation,
            enforce_correlation_id: h.enforce_correlation_id,
            enforce_required_controls: h.enforce_required_controls,
            enforce_blast_scoring_in_prod: h.enforce_blast_scoring_in_prod,
            enforce_privilege_envelopes: h.enforce_privilege_envelopes,
            ..RouterConfig::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml_str(text, Path::new("hall.toml"))
    }

    #[test]
    fn defaults_are_pyhall_defaults_and_per_worker_scope() {
        let c = parse("").unwrap();
        assert_eq!(c.router_config(), RouterConfig::default());
        assert_eq!(c.routing.controls_scope, ControlsScope::PerWorker);
    }

    #[test]
    fn reads_every_section() {
        let c = parse(
            "[hall]\nrequire_signatory = true\nallowed_tenants = [\"acme\"]\nenforce_privilege_envelopes = true\n\
             [paths]\nrules = \"r.json\"\n[routing]\ncontrols_scope = \"global\"\n",
        )
        .unwrap();
        let r = c.router_config();
        assert!(r.require_signatory && r.enforce_privilege_envelopes);
        assert!(r.allowed_tenants.contains("acme"));
        assert_eq!(c.paths.rules, PathBuf::from("r.json"));
        assert_eq!(c.routing.controls_scope, ControlsScope::Global);
    }

    #[test]
    fn unknown_keys_are_errors_with_line_numbers() {
        let err = parse("[hall]\nrequire_signatory = false\nrequre_signatory = true\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 3"), "{err}");
        assert!(err.contains("requre_signatory"), "{err}");
        let err = parse("[hal]\n").unwrap_err().to_string();
        assert!(err.contains("unknown field `hal`"), "{err}");
        let err = parse("[routing]\ncontrols_scope = \"everyone\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2"), "{err}");
    }

    #[test]
    fn wrong_types_and_contradictions_are_refused() {
        let err = parse("[hall]\nrequire_signatory = \"yes\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2") && err.contains("bool"), "{err}");
        let err = parse("[hall]\nrequire_signatory = true\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("would deny every request"), "{err}");
        assert!(parse("[hall]\nallowed_tenants = [\" \"]\n").is_err());
    }

    #[test]
    fn server_and_identity_sections_are_checked() {
        let err = parse("[server]\nsocket_mode = \"rwx\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("socket_mode"), "{err}");
        assert!(parse("[server]\nsocket_mode = \"0660\"\nmax_concurrent = 4\n").is_ok());
        let err = parse("[server]\nmax_concurrent = 0\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("at least 1"), "{err}");
        let err = parse("[server]\nmax_body_bytes = 0\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_body_bytes = 0"), "{err}");
        assert!(parse("[server]\nmax_body_bytes = 1\n").is_ok());
        let err = parse("[server]\nmax_connections = 0\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("max_connections") && err.contains("at least 1"),
            "{err}"
        );
        let err = parse("[server]\nmax_connections = 10\nmax_connections_per_uid = 20\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_connections_per_uid = 20"), "{err}");
        let err = parse("[server]\nidle_timeout_ms = 0\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("idle_timeout_ms = 0"), "{err}");
        let c = parse("[server]\nmax_connections = 100\nmax_connections_per_uid = 10\noperator_connections = 2\nidle_timeout_ms = 1500\n").unwrap();
        assert_eq!(
            (c.server.max_connections, c.server.max_connections_per_uid),
            (Some(100), Some(10))
        );
        let err = parse("[[identity.peers]]\nuid = 1\ngid = 2\ntenants = []\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("exactly one of uid or gid"), "{err}");
        let err = parse("[identity]\noperator_uid = [0]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("operator_uid"), "{err}");
    }

    #[test]
    fn plain_http_registries_must_be_loopback() {
        assert!(
            parse("[attestation]\noci_plain_http = [\"127.0.0.1:5000\", \"localhost:5000\", \"[::1]:5000\"]\n")
                .is_ok()
        );
        for bad in [
            "registry.example.org:5000",
            "10.0.0.1:5000",
            "127.0.0.1.evil.example:80",
        ] {
            let err = parse(&format!("[attestation]\noci_plain_http = [\"{bad}\"]\n"))
                .unwrap_err()
                .to_string();
            assert!(err.contains("not a loopback registry"), "{bad}: {err}");
        }
    }

    #[test]
    fn required_attestation_needs_a_trust_policy() {
        let err = parse("[hall]\nrequire_worker_attestation = true\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("[attestation] trust_policy"), "{err}");
        assert!(parse("[hall]\nrequire_worker_attestation = true\n[attestation]\ntrust_policy = \"trust.json\"\n").is_ok());
    }

    #[test]
    fn tracing_is_off_by_default_and_checked() {
        assert_eq!(parse("").unwrap().tracing, TracingSection::default());
        let on = parse(
            "[tracing]\nendpoint = \"http://127.0.0.1:4318/v1/traces\"\nsampling_ratio = 0.5\n\
             headers = { authorization = \"Bearer x\" }\n",
        )
        .unwrap();
        assert_eq!(on.tracing.sampling_ratio, Some(0.5));
        assert_eq!(on.tracing.headers["authorization"], "Bearer x");
        for (bad, says) in [
            ("sampling_ratio = 1.5", "sampling_ratio"),
            ("max_queue = 0", "max_queue"),
            ("endpoint = \"https://x/v1/traces\"", "http://"),
            ("endpont = \"http://x\"", "endpont"),
        ] {
            let e = parse(&format!("[tracing]\n{bad}\n"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn envelope_python_is_an_absolute_path() {
        assert_eq!(parse("").unwrap().envelope.python, None);
        let c = parse("[envelope]\npython = \"/opt/py/bin/python3.12\"\n").unwrap();
        assert_eq!(
            c.envelope.python,
            Some(PathBuf::from("/opt/py/bin/python3.12"))
        );
        let err = parse("[envelope]\npython = \"python3\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("[envelope] python") && err.contains("absolute"),
            "{err}"
        );
        let err = parse("[envelope]\npyhton = \"/usr/bin/python3\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("pyhton") && err.contains("line 2"), "{err}");
    }

    #[test]
    fn load_resolves_paths_next_to_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hall.toml");
        std::fs::write(&path, "[paths]\nrules = \"policies/rules.json\"\n").unwrap();
        let c = Config::load(&path).unwrap();
        assert_eq!(c.paths.rules, dir.path().join("policies/rules.json"));
        assert_eq!(c.paths.registry_dir, dir.path().join("registry"));
        assert!(matches!(
            Config::load(&dir.path().join("missing.toml")),
            Err(ConfigError::Read { .. })
        ));
    }
}

/// `[metrics]`: the optional TCP listener serving `GET /metrics` only.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSection {
    /// Serve the metrics on TCP. Unset: on exactly when `listen` is set.
    pub enabled: Option<bool>,
    /// An IP address and port, e.g. `"127.0.0.1:9464"` or `"[::1]:9464"` (default
    /// 127.0.0.1:9464). Host names are not resolved.
    pub listen: Option<String>,
    /// Allow an address other than loopback (the metrics are then readable from other hosts).
    pub allow_remote: bool,
}

impl MetricsSection {
    /// Whether the Hall binds a TCP listener itself.
    pub fn is_on(&self) -> bool {
        self.enabled.unwrap_or(self.listen.is_some())
    }

    /// The configured address (the default when none is set).
    pub fn address(&self) -> Result<std::net::SocketAddr, String> {
        let Some(text) = &self.listen else {
            return Ok(DEFAULT_METRICS_LISTEN);
        };
        text.trim().parse().map_err(|_| {
            format!(
                "[metrics] listen = {text:?} is not an IP address and port\n\
                 hint: write it like \"127.0.0.1:9464\" or \"[::1]:9464\" (host names are not resolved)"
            )
        })
    }

    /// The configuration check (`Config::check`): the address parses, and it is loopback unless
    /// remote scrapes are explicitly allowed.
    pub fn check(&self) -> Result<(), String> {
        let addr = self.address()?;
        if self.is_on() {
            self.check_reach(&addr, "[metrics] listen")?;
        }
        Ok(())
    }

    /// Refuses an address other hosts can reach unless `allow_remote = true`.
    pub(crate) fn check_reach(
        &self,
        addr: &std::net::SocketAddr,
        what: &str,
    ) -> Result<(), String> {
        if self.allow_remote || addr.ip().to_canonical().is_loopback() {
            return Ok(());
        }
        Err(format!(
            "{what} {addr} is not a loopback address: the metrics would be readable from other hosts\n\
             hint: listen on 127.0.0.1 or [::1] and let Prometheus scrape locally, or set [metrics] allow_remote = true to expose them on purpose (and restrict who can connect with a firewall)"
        ))
    }
}

/// Where the listener goes when `[metrics] enabled = true` names no address.
pub const DEFAULT_METRICS_LISTEN: std::net::SocketAddr =
    std::net::SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9464);
