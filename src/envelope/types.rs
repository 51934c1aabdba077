//! The envelope's inputs: what the dispatch layer hands over for one run, and the Hall-wide
//! settings that do not change between runs.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::crypto::canonical::MAX_SAFE_INTEGER;
use crate::registry::PrivilegeEnvelope;

use super::error::EnvelopeError;

// The profile's types are the envelope's: one definition of what a profile demands of a run
// (`policy::profile`), used as-is here, so nothing converts between two look-alikes.
pub use crate::policy::profile::{EnvelopeMinimums as Minimums, Limits, Requirement as Minimum};

// How strongly a profile insists on one protection ([`Minimum`], `policy::profile::Requirement`).
//
// `Required`: the run is refused (a typed [`EnvelopeError::RequirementUnmet`]) when the kernel
// or host cannot give it. `BestEffort`: applied when possible; a shortfall is recorded in the
// report (`effective` and `reason`) and in [`super::EnvelopeReport::degraded`]. `Off`: not
// applied, and the report says so.
impl Minimum {
    pub fn as_str(self) -> &'static str {
        match self {
            Minimum::Required => "required",
            Minimum::BestEffort => "best_effort",
            Minimum::Off => "off",
        }
    }

    /// Parses the serde spelling (`required`, `best_effort`, `off`).
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "required" => Some(Minimum::Required),
            "best_effort" => Some(Minimum::BestEffort),
            "off" => Some(Minimum::Off),
            _ => None,
        }
    }
}

impl Minimums {
    /// What a production profile asks for: everything required except the cgroup, which needs a
    /// delegated cgroup v2 subtree that many hosts (including hybrid v1/v2 ones) cannot offer.
    pub fn production() -> Self {
        Minimums {
            landlock: Minimum::Required,
            network_isolation: Minimum::Required,
            seccomp: Minimum::Required,
            pid_namespace: Minimum::Required,
            cgroup: Minimum::BestEffort,
            unprivileged_user: Minimum::Required,
        }
    }

    /// Everything best effort: apply what the host can, report the rest.
    pub fn best_effort() -> Self {
        Minimums {
            landlock: Minimum::BestEffort,
            network_isolation: Minimum::BestEffort,
            seccomp: Minimum::BestEffort,
            pid_namespace: Minimum::BestEffort,
            cgroup: Minimum::BestEffort,
            unprivileged_user: Minimum::BestEffort,
        }
    }
}

impl Default for Minimums {
    fn default() -> Self {
        Minimums::production()
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            wall_timeout_ms: 30_000,
            cpu_seconds: 30,
            memory_bytes: 1 << 30,
            max_processes: 64,
            max_open_files: 256,
            max_file_size_bytes: 64 << 20,
            max_output_bytes: 1 << 20,
        }
    }
}

/// The largest wall-clock budget accepted (one day).
pub const MAX_WALL_TIMEOUT_MS: u64 = 24 * 3600 * 1000;
/// The largest output cap accepted per stream: output is held in the Hall's memory.
pub const MAX_OUTPUT_CAP: u64 = 256 << 20;

impl Limits {
    /// Checks every limit is positive, within the canonical integer range and sane.
    pub fn validate(&self) -> Result<(), EnvelopeError> {
        let fields: [(&str, u64); 7] = [
            ("wall_timeout_ms", self.wall_timeout_ms),
            ("cpu_seconds", self.cpu_seconds),
            ("memory_bytes", self.memory_bytes),
            ("max_processes", self.max_processes),
            ("max_open_files", self.max_open_files),
            ("max_file_size_bytes", self.max_file_size_bytes),
            ("max_output_bytes", self.max_output_bytes),
        ];
        for (name, value) in fields {
            if value == 0 {
                return Err(EnvelopeError::invalid(
                    format!("limits.{name}"),
                    "must be at least 1 (there is no \"unlimited\")",
                ));
            }
            if value > MAX_SAFE_INTEGER {
                return Err(EnvelopeError::invalid(
                    format!("limits.{name}"),
                    format!("{value} is above 2^53-1, which signed receipts cannot carry"),
                ));
            }
        }
        if self.wall_timeout_ms > MAX_WALL_TIMEOUT_MS {
            return Err(EnvelopeError::invalid(
                "limits.wall_timeout_ms",
                format!("{} ms is more than one day", self.wall_timeout_ms),
            ));
        }
        if self.max_output_bytes > MAX_OUTPUT_CAP {
            return Err(EnvelopeError::invalid(
                "limits.max_output_bytes",
                format!(
                    "{} is above {MAX_OUTPUT_CAP} (output is held in the Hall's memory)",
                    self.max_output_bytes
                ),
            ));
        }
        if self.max_open_files < 8 {
            return Err(EnvelopeError::invalid(
                "limits.max_open_files",
                "must be at least 8 (stdio, the interpreter and its libraries need a few)",
            ));
        }
        Ok(())
    }
}

/// What is executed inside the envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bootstrap {
    /// A PyHall package: `INTERPRETER -E -s -B -X pycache_prefix=<empty dir> <pkg>/code/bootstrap.py`.
    ///
    /// Why not `-I`: `-I` implies `-P`, which keeps `code/` off `sys.path`, so PyHall's own
    /// bootstrap (`from worker_logic import run`) fails with ModuleNotFoundError (measured on
    /// Python 3.11). `-E -s` keep the other two halves of `-I` (no `PYTHON*` variables, no user
    /// site). `-E` also makes Python ignore `PYTHONPYCACHEPREFIX`, so the pycache prefix is set
    /// with `-X`: a planted `__pycache__/*.pyc` next to the attested source is then never read.
    Python {
        /// The interpreter, resolved to the real binary (`[envelope] python`, probed by
        /// [`super::python::PythonRuntime::probe`]; it must be executable by the worker uid: a
        /// pyenv build under `/root` is not).
        interpreter: PathBuf,
        /// What the probe found it to be (`cpython 3.11.2`), reported as `bootstrap.runtime`.
        runtime: String,
    },
    /// A native program and its arguments (tools, benchmarks). The program gets read+execute.
    Native { program: PathBuf, args: Vec<String> },
}

/// How a worker receives its request and context: declared by its signed package
/// (`wcp-worker.json`, [`crate::hall::runner::package_bootstrap`]), never by what arrives on
/// stdin.
///
/// - `V1`: stdin is the request JSON (a sealed memfd); the correlation id and trace context are
///   `WCP_CORRELATION_ID` and `TRACEPARENT` in the environment at exec.
/// - `V2`: the environment names no request (`WCP_WORKER_PROTOCOL=2` instead), and stdin
///   carries one frame, `{"protocol":2,"context":{…},"request":{…}}`, ending at end-of-file
///   ([`super::protocol`]). Only a `V2` worker can be started before its request exists (a
///   warm instance, [`super::warm`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum WorkerProtocol {
    #[default]
    V1,
    V2,
}

impl WorkerProtocol {
    /// The number in `wcp-worker.json`, the report and `WCP_WORKER_PROTOCOL`.
    pub fn number(self) -> u8 {
        match self {
            WorkerProtocol::V1 => 1,
            WorkerProtocol::V2 => 2,
        }
    }
}

impl Serialize for WorkerProtocol {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(self.number())
    }
}

/// Read-only runtime paths a bootstrap needs (interpreter libraries, certificates, locale):
/// `read` gets read access, `execute` additionally execute (the interpreter, the dynamic loader).
/// For Python they are derived from a probe of the interpreter
/// ([`super::python::PythonRuntime`]), never assumed from a distribution's layout.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct RuntimePaths {
    pub read: Vec<PathBuf>,
    pub execute: Vec<PathBuf>,
}

/// A uid/gid pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
}

impl Identity {
    /// Debian's `nobody:nogroup`.
    pub const NOBODY: Identity = Identity {
        uid: 65534,
        gid: 65534,
    };
}

/// One run: everything the dispatch layer knows about the worker and this request.
#[derive(Debug, Clone)]
pub struct RunRequest {
    /// The package directory (the attested store copy). Must be absolute and readable by the
    /// worker uid (world-readable files, world-searchable directories).
    pub package_dir: PathBuf,
    /// The digest of what is executed (e.g. `sha256:…` of the package), copied into the report.
    pub package_digest: Option<String>,
    /// The registry record's declared privilege envelope.
    pub privilege_envelope: PrivilegeEnvelope,
    pub limits: Limits,
    pub minimums: Minimums,
    pub bootstrap: Bootstrap,
    pub runtime: RuntimePaths,
    /// The request JSON: stdin itself (protocol 1) or the frame's `request` (protocol 2).
    pub payload: Vec<u8>,
    /// How the worker receives `payload` and its context.
    pub protocol: WorkerProtocol,
    /// Becomes `WCP_CORRELATION_ID`; printable ASCII, at most 128 characters.
    pub correlation_id: String,
    /// An incoming W3C `traceparent` to hand on as it is (the Hall's: its run span); when absent
    /// one is derived from the correlation id (a UUID's 32 hex digits, otherwise a SHA-256
    /// prefix) with a fresh span id.
    pub traceparent: Option<String>,
    /// Overrides [`HostConfig::worker_identity`] for this run (e.g. one uid per concurrent run
    /// from a pool, so `RLIMIT_NPROC` is per run).
    pub identity: Option<Identity>,
    /// Policy lets absolute `filesystem_writes` be granted in place; otherwise they are mapped
    /// under the per-run work directory (and the report says where).
    pub allow_absolute_writes: bool,
    /// Write directories the Hall already opened and checked (persistent directories,
    /// [`super::grant::open_persistent`]); a `filesystem_writes` entry equal to one's
    /// `declared` is granted from its descriptor, in place, never by path.
    pub opened_writes: Vec<std::sync::Arc<super::grant::OpenedWrite>>,
    /// The quota the opened writes were checked against (for the report).
    pub data_quota_bytes: Option<u64>,
}

impl RunRequest {
    /// A request with the production minimums and default limits that runs the package's
    /// `code/bootstrap.py` under a probed Python runtime.
    pub fn python(
        package_dir: impl Into<PathBuf>,
        privilege_envelope: PrivilegeEnvelope,
        payload: Vec<u8>,
        correlation_id: impl Into<String>,
        python: &super::python::PythonRuntime,
    ) -> Self {
        RunRequest {
            package_dir: package_dir.into(),
            package_digest: None,
            privilege_envelope,
            limits: Limits::default(),
            minimums: Minimums::default(),
            bootstrap: python.bootstrap(),
            runtime: python.paths.clone(),
            payload,
            protocol: WorkerProtocol::V1,
            correlation_id: correlation_id.into(),
            traceparent: None,
            identity: None,
            allow_absolute_writes: false,
            opened_writes: Vec::new(),
            data_quota_bytes: None,
        }
    }
}

/// Hall-wide envelope settings (from `hall.toml`; they do not change per run).
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// Hall-owned directory holding one private directory per run (`<runs_dir>/<run id>/`, with
    /// `work/` for declared writes, `tmp/` and an empty pycache prefix). Created if missing.
    pub runs_dir: PathBuf,
    /// Hall-owned directory of secret files (`<secrets_dir>/<name>`, owned by the Hall's uid,
    /// mode 0600 or stricter). `None`: a worker declaring `secrets_access` is refused.
    pub secrets_dir: Option<PathBuf>,
    /// The uid/gid workers run as when the Hall runs as root. Never root.
    pub worker_identity: Identity,
    /// A delegated cgroup v2 directory under which per-run leaves are created. `None`: the
    /// Hall's own cgroup v2 directory (found in `/proc/self/cgroup`), if writable.
    pub cgroup_parent: Option<PathBuf>,
    /// Time between SIGTERM and the kill of the whole tree.
    pub kill_grace_ms: u64,
    /// How long to keep reading stdout/stderr after the worker's tree is gone.
    pub drain_timeout_ms: u64,
    /// Keep per-run directories after the run (debugging, tests).
    pub keep_run_dirs: bool,
    /// Paths a worker must not reach by name: the Hall's own sockets. Each run gets a mount
    /// namespace in which an empty, unreadable file is bound over each of them (where the host
    /// can create mount namespaces; the report says so either way).
    pub hidden_paths: Vec<PathBuf>,
    /// Bytes of scratch per run: a tmpfs of this size is mounted on each run directory when
    /// the Hall can mount (root). `None`: no tmpfs (scratch bounded per file only).
    pub scratch_bytes: Option<u64>,
}

impl HostConfig {
    /// The name prefix of this Hall's per-run cgroup leaves: `wcp-` and 8 hex digits of the
    /// SHA-256 of the runs directory, then `-` (the run id follows). The runs directory names one
    /// Hall across restarts and differs between Halls, so Halls that share a cgroup parent (no
    /// delegation, or tests) each sweep only their own stale leaves: a starting Hall never removes
    /// another's leaf between its creation and the clone into it.
    pub fn leaf_prefix(&self) -> String {
        use sha2::Digest as _;
        let digest = sha2::Sha256::digest(self.runs_dir.as_os_str().as_encoded_bytes());
        format!("wcp-{}-", crate::common::hex(&digest[..4]))
    }

    pub fn new(runs_dir: impl Into<PathBuf>) -> Self {
        HostConfig {
            runs_dir: runs_dir.into(),
            secrets_dir: None,
            worker_identity: Identity::NOBODY,
            cgroup_parent: None,
            kill_grace_ms: 500,
            drain_timeout_ms: 2_000,
            keep_run_dirs: false,
            hidden_paths: Vec::new(),
            scratch_bytes: None,
        }
    }
}

/// Secret values read for one run, keyed by the declared name (never logged or reported).
pub(crate) type SecretValues = BTreeMap<String, zeroize::Zeroizing<String>>;
