//! Process lifecycle: socket (systemd-activated or bound), readiness, signals, watchdog.
//!
//! Order matters: the activated socket is taken from `LISTEN_FDS` before the async runtime
//! starts (the environment is read while the process is single-threaded), configuration and
//! state are loaded before the socket accepts, and `READY=1` is sent only when the Hall can
//! answer. SIGTERM/SIGINT stop accepting, let in-flight requests finish within the grace period
//! and exit 0; SIGHUP reloads (`RELOADING=1` … `READY=1`, the systemd 252 way) and keeps the old
//! configuration if the new one is invalid. All notifications are no-ops without `NOTIFY_SOCKET`.

use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sd_notify::NotifyState;

use super::approvals::{ApprovalStore, now_ms};
use super::{Hall, dispatch};
use crate::snapshot::{Current, Loaded};

/// How `serve` was asked to run.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub config: PathBuf,
    /// Overrides `[server] socket`.
    pub socket: Option<PathBuf>,
    /// `json` for JSON-lines logs on stderr; anything else is human text.
    pub log_format: String,
}

/// What kind of startup failure it was; the command layer maps kinds to exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartFailure {
    /// The configuration, or what it names, cannot be used (fix it and start again).
    Config,
    /// The host refused a resource the Hall needs (a runtime, a descriptor, a thread).
    Io,
}

/// A startup failure: its kind and message.
#[derive(Debug)]
pub struct StartError {
    pub kind: StartFailure,
    pub message: String,
}

fn fail(kind: StartFailure, message: impl Into<String>) -> StartError {
    StartError {
        kind,
        message: message.into(),
    }
}

fn notify(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!(error = %e, "sd_notify failed");
    }
}

/// Logging: native journald fields when stderr is the journal (`$JOURNAL_STREAM` names
/// stderr's device and inode, as systemd sets it), JSON lines on request, plain text otherwise,
/// with colours only on a terminal.
fn init_logging(format: &str) {
    use std::io::IsTerminal;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = || {
        tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
    };
    if format != "json"
        && stderr_is_journal()
        && let Ok(journald) = tracing_journald::layer()
    {
        let _ = tracing_subscriber::registry()
            .with(filter())
            .with(journald.with_syslog_identifier("wcp-hall".into()))
            .try_init();
        return;
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter())
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = if format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// `$JOURNAL_STREAM` is `<dev>:<ino>` of the journal stream systemd connected stderr to.
fn stderr_is_journal() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some(v) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = v.to_str().and_then(|s| s.split_once(':')) else {
        return false;
    };
    let Ok(meta) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    dev.parse::<u64>().ok() == Some(meta.dev()) && ino.parse::<u64>().ok() == Some(meta.ino())
}

/// Binds the Hall's socket at `path` with `mode` (and `group`), refusing to replace a socket
/// another process is listening on. The socket is created with a restrictive umask so no other
/// user can connect before its mode is set.
pub fn bind_socket(
    path: &Path,
    mode: u32,
    group: Option<&str>,
) -> Result<std::os::unix::net::UnixListener, StartError> {
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
        && !dir.exists()
    {
        std::fs::create_dir_all(dir).map_err(|e| {
            fail(
                StartFailure::Config,
                format!("cannot create socket directory {}: {e}", dir.display()),
            )
        })?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(fail(
                    StartFailure::Config,
                    format!(
                        "another process is already listening on {}; stop it or choose another --socket",
                        path.display()
                    ),
                ));
            }
            std::fs::remove_file(path).map_err(|e| {
                fail(
                    StartFailure::Config,
                    format!("cannot remove stale socket {}: {e}", path.display()),
                )
            })?;
        }
        Ok(_) => {
            return Err(fail(
                StartFailure::Config,
                format!(
                    "{} exists and is not a socket; refusing to replace it",
                    path.display()
                ),
            ));
        }
        Err(_) => {}
    }
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let bound = std::os::unix::net::UnixListener::bind(path);
    nix::sys::stat::umask(old);
    let listener = bound.map_err(|e| {
        fail(
            StartFailure::Config,
            format!("cannot bind {}: {e}", path.display()),
        )
    })?;
    if let Some(group) = group {
        let gid = match group.parse::<u32>() {
            Ok(g) => nix::unistd::Gid::from_raw(g),
            Err(_) => nix::unistd::Group::from_name(group)
                .ok()
                .flatten()
                .map(|g| g.gid)
                .ok_or_else(|| {
                    fail(
                        StartFailure::Config,
                        format!("[server] socket_group {group:?} does not exist"),
                    )
                })?,
        };
        nix::unistd::chown(path, None, Some(gid)).map_err(|e| {
            fail(
                StartFailure::Config,
                format!("cannot give {} to group {group}: {e}", path.display()),
            )
        })?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(|e| {
        fail(
            StartFailure::Config,
            format!("cannot set mode of {}: {e}", path.display()),
        )
    })?;
    Ok(listener)
}

/// The socket a start bound. Dropped while still armed (the start failed), it removes the
/// socket, but only while the path is still the very socket it bound (same device and inode):
/// never one another process created.
struct BoundSocket {
    path: PathBuf,
    dev: u64,
    ino: u64,
    armed: bool,
}

impl BoundSocket {
    fn new(path: &Path) -> Option<Self> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::symlink_metadata(path).ok()?;
        Some(BoundSocket {
            path: path.to_owned(),
            dev: m.dev(),
            ino: m.ino(),
            armed: true,
        })
    }

    fn keep(mut self) {
        self.armed = false;
    }
}

impl Drop for BoundSocket {
    fn drop(&mut self) {
        use std::os::unix::fs::MetadataExt;
        if !self.armed {
            return;
        }
        if let Ok(m) = std::fs::symlink_metadata(&self.path)
            && m.file_type().is_socket()
            && (m.dev(), m.ino()) == (self.dev, self.ino)
        {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// A directory a start is about to create. Dropped (the start failed), it removes the directory
/// again if this start created it and it is still empty; forgotten once the Hall serves.
struct CreatedDir(Option<PathBuf>);

impl CreatedDir {
    fn before_creating(path: &Path) -> Self {
        CreatedDir((!path.exists()).then(|| path.to_owned()))
    }

    fn keep(mut self) {
        self.0 = None;
    }
}

impl Drop for CreatedDir {
    fn drop(&mut self) {
        if let Some(p) = &self.0 {
            // Fails (and keeps it) unless it is empty.
            let _ = std::fs::remove_dir(p);
        }
    }
}

/// Runs the daemon in the foreground until SIGTERM/SIGINT. Returns the process exit code.
pub fn run(options: ServeOptions) -> Result<(), StartError> {
    init_logging(&options.log_format);
    // Descriptors: every connection is one, and a Hall out of them cannot checkpoint its receipt
    // log or start a worker. Raised to the hard limit first; the caps derive from it (conn).
    let nofile = match super::conn::raise_nofile_limit() {
        Ok(l) => {
            tracing::info!(
                soft_before = l.soft_before,
                soft = l.soft,
                hard = l.hard,
                "descriptor limit (RLIMIT_NOFILE)"
            );
            l.soft
        }
        Err(e) => {
            let soft = super::conn::nofile_soft();
            tracing::warn!(error = %e, soft, "cannot raise the descriptor limit (RLIMIT_NOFILE)");
            soft
        }
    };
    // Taken first, while single-threaded: systemd socket activation. The API socket, and the
    // metrics socket when wcp-hall-metrics.socket passes one too (named "metrics").
    let mut fds = listenfd::ListenFd::from_env();
    let names = std::env::var("LISTEN_FDNAMES").ok();
    let (api_fd, metrics_fd) = activation_roles(names.as_deref(), fds.len());
    let activated = match api_fd {
        Some(i) => fds.take_unix_listener(i).map_err(|e| {
            fail(
                StartFailure::Config,
                format!(
                    "LISTEN_FDS is set but fd {} is not a Unix socket: {e}",
                    3 + i
                ),
            )
        })?,
        None => None,
    };
    let activated_metrics = match metrics_fd {
        Some(i) => fds.take_tcp_listener(i).map_err(|e| {
            fail(
                StartFailure::Config,
                format!(
                    "the socket systemd passed as \"metrics\" (fd {}) is not a TCP socket: {e}\n\
                     hint: ListenStream= in wcp-hall-metrics.socket must be an IP address and port, e.g. 127.0.0.1:9464",
                    3 + i
                ),
            )
        })?,
        None => None,
    };
    let cgroup = super::cgroup::prepare_at_startup();
    let mut loaded =
        Loaded::load(&options.config, 1).map_err(|e| fail(StartFailure::Config, e.to_string()))?;
    let conn_limits = super::conn::ConnLimits::derive(&loaded.config.server, nofile)
        .map_err(|e| fail(StartFailure::Config, e))?;
    tracing::info!(
        max_connections = conn_limits.max_connections,
        max_connections_per_uid = conn_limits.max_connections_per_uid,
        operator_connections = conn_limits.operator_connections,
        idle_timeout_ms = conn_limits.idle_timeout.as_millis() as u64,
        reserved_descriptors = conn_limits.reserve,
        "connection limits"
    );
    // The Python runtime, probed as the worker uid (see envelope::python): a configured
    // interpreter that cannot run workers is a configuration error like any other.
    let worker = crate::snapshot::worker_identity(&loaded.config.envelope.worker_user)
        .map_err(|e| fail(StartFailure::Config, e.to_string()))?;
    loaded
        .probe_python(Some(worker))
        .map_err(|e| fail(StartFailure::Config, e.to_string()))?;
    log_python(&loaded);
    // The receipt signing key, read (and its mode checked) before anything is created, so a
    // missing or unsafe key leaves no state directory and no socket behind.
    let key = loaded.config.receipts.load_key().map_err(|e| {
        fail(
            StartFailure::Config,
            format!("{e}; create the receipt signing key with `wcp-hall keys generate` (see [receipts] signing_key)"),
        )
    })?;
    let state_dir = loaded.config.state_dir();
    let created_state_dir = CreatedDir::before_creating(&state_dir);
    // 0711: workers (another uid) must traverse it to reach their run directory and the
    // read-only package store inside; nobody else can list it.
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o711)
        .create(&state_dir)
        .map_err(|e| {
            fail(
                StartFailure::Config,
                format!(
                    "cannot create the state directory {}: {e}",
                    state_dir.display()
                ),
            )
        })?;
    let (approvals, expired_while_down) =
        ApprovalStore::open(&state_dir).map_err(|e| fail(StartFailure::Config, e.to_string()))?;
    let server = loaded.config.server.clone();
    // A socket bound here is removed again if the start fails after this point.
    let mut bound = None;
    let (listener, socket_desc) = match activated {
        Some(l) => (l, "systemd-activated socket".to_owned()),
        None => {
            let path = options
                .socket
                .clone()
                .unwrap_or_else(|| server.socket_path());
            let mode = server.mode().unwrap_or(0o660);
            let l = bind_socket(&path, mode, server.socket_group.as_deref())?;
            bound = BoundSocket::new(&path);
            (l, path.display().to_string())
        }
    };
    listener.set_nonblocking(true).map_err(|e| {
        fail(
            StartFailure::Io,
            format!("cannot configure the socket: {e}"),
        )
    })?;
    // The optional TCP listener for Prometheus, bound (or taken from systemd) before READY.
    let metrics_listener = super::metrics_http::open(&loaded.config.metrics, activated_metrics)
        .map_err(|e| fail(StartFailure::Config, e))?;
    // The receipt log: opened (and recovered) before anything can run; a sev1 finding stops the
    // Hall here with exit 78 so systemd does not restart it in a loop.
    // A full scan of a large log can outlast TimeoutStartSec: each progress report (every few
    // seconds) extends the start timeout and says how far it got.
    let progress = |p: &crate::receipt::OpenProgress| {
        let status = format!(
            "checking the receipt log: {} records, {} of {} MiB ({} s){}",
            p.records,
            p.bytes >> 20,
            p.total_bytes >> 20,
            p.elapsed.as_secs(),
            if p.full_scan { ", full scan" } else { "" }
        );
        notify(&[
            NotifyState::ExtendTimeoutUsec(30_000_000),
            NotifyState::Status(&status),
        ]);
    };
    notify(&[NotifyState::Status("opening the receipt log")]);
    let (receipts, opened) = crate::receipt::ReceiptLog::open_with_progress(
        loaded.config.receipts.log_options(),
        key,
        &progress,
    )
    .map_err(|e| fail(StartFailure::Config, e.to_string()))?;
    tracing::info!(report = ?opened, "receipt log open");
    // A start that had to read the whole log (no usable resume snapshot) saves a checkpoint,
    // and with it a fresh snapshot, at once: a Hall restarted again before its first periodic
    // checkpoint (a crash loop) then opens from the tail instead of paying the scan again.
    if opened.resumed_at.is_none() && opened.records_read > 0 {
        match receipts.checkpoint_for_resume() {
            Ok(_) => tracing::info!(
                records_read = opened.records_read,
                "checkpoint and resume snapshot saved after a full scan"
            ),
            Err(e) => tracing::warn!(error = %e, "could not save a checkpoint after a full scan"),
        }
    }
    let receipts = Arc::new(receipts);
    // Workers must not reach the Hall's socket by its name (envelope::peer refuses them anyway).
    let hidden: Vec<PathBuf> = listener
        .local_addr()
        .ok()
        .and_then(|a| a.as_pathname().map(Path::to_path_buf))
        .into_iter()
        .collect();
    let runner = build_runner(&loaded.config, worker, &cgroup, receipts.clone(), hidden)?;
    let mut hall = Hall::new(
        Current::new(options.config.clone(), loaded).probing_python(Some(worker)),
        approvals,
        receipts.clone(),
        super::conn::Connections::new(conn_limits),
        runner,
    );
    tracing::info!(cgroup = %cgroup.note, "cgroup");
    hall.cgroup = cgroup;
    hall.worker_uids.push(worker.uid);
    // Traces: off unless an OTLP endpoint is configured; started before the async runtime (the
    // exporter has its own thread and HTTP client).
    let otel = super::otel::Settings::resolve(&hall.current.get().config.tracing, |k| {
        std::env::var(k).ok()
    })
    .map_err(|e| fail(StartFailure::Config, format!("[tracing]: {e}")))?;
    if let Some(settings) = otel {
        let t = super::otel::Tracing::start(&settings)
            .map_err(|e| fail(StartFailure::Config, format!("[tracing]: {e}")))?;
        tracing::info!(endpoint = %t.endpoint, sampler = ?settings.sampler, "OTLP traces on");
        hall.tracing = Some(t);
    }
    // The worker registry service: its client now (a bad URL or token file stops the start),
    // its refresher once the Hall is shared (it reads the enrolled worker ids of the snapshot
    // current at each refresh).
    let registry_service = hall.current.get().config.registry_service.clone();
    if registry_service.enabled {
        let service = crate::registry_service::Service::new(&registry_service)
            .map_err(|e| fail(StartFailure::Config, format!("[registry_service]: {e}")))?;
        tracing::info!(url = %service.base_url(), refresh_seconds = registry_service.refresh_seconds, "registry service on");
        hall.registry_service = Some(Arc::new(service));
    }
    let hall = Arc::new(hall);
    if let Some(service) = &hall.registry_service {
        let weak = Arc::downgrade(&hall);
        service
            .start(move || {
                weak.upgrade()
                    .map(|h| {
                        h.current
                            .get()
                            .registry
                            .records()
                            .iter()
                            .map(|r| r.worker_id.clone())
                            .collect()
                    })
                    .unwrap_or_default()
            })
            .map_err(|e| {
                fail(
                    StartFailure::Io,
                    format!("cannot start the registry service refresher: {e}"),
                )
            })?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            fail(
                StartFailure::Io,
                format!("cannot start the async runtime: {e}"),
            )
        })?;
    let grace = Duration::from_millis(server.shutdown_grace_ms);
    let result = runtime.block_on(async {
        let listener = tokio::net::UnixListener::from_std(listener)
            .map_err(|e| fail(StartFailure::Io, format!("cannot register the socket: {e}")))?;
        for approval in expired_while_down {
            let hall = hall.clone();
            tokio::spawn(async move {
                let _ = dispatch::complete_approval(hall, approval).await;
            });
        }
        tokio::spawn(expire_approvals(hall.clone()));
        if let Some(interval) = sd_notify::watchdog_enabled() {
            tokio::spawn(watchdog(hall.clone(), interval / 2));
        }
        let metrics_task = match metrics_listener {
            Some(m) => {
                let l = tokio::net::TcpListener::from_std(m.listener).map_err(|e| {
                    fail(
                        StartFailure::Io,
                        format!("cannot register the metrics listener: {e}"),
                    )
                })?;
                tracing::info!(listen = %m.describe, "metrics listener: GET /metrics only");
                Some(tokio::spawn(super::metrics_http::serve(hall.clone(), l)))
            }
            None => None,
        };
        let shutdown = signals(hall.clone());
        // Started: from here on the socket is the serving Hall's.
        if let Some(b) = bound.take() {
            b.keep();
        }
        created_state_dir.keep();
        tracing::info!(socket = %socket_desc, "wcp-hall serving");
        notify(&[NotifyState::Ready, NotifyState::Status("serving")]);
        // The records a fast open skipped are verified now, at idle priority; a problem found
        // poisons the log (dispatches fail with receipt_log_unavailable) and shows in health.
        hall.receipts.start_background_check();
        super::server::serve(hall.clone(), listener, shutdown, grace).await;
        if let Some(task) = metrics_task {
            task.abort();
        }
        notify(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
        // Idle warm instances are stopped and their run directories removed (their scratch
        // tmpfs unmounted), rather than left to die with the Hall's threads.
        if let Some(w) = &hall.runner.warm {
            w.shutdown();
        }
        // A final checkpoint, so the log's last state is signed and saved.
        if let Err(e) = hall.receipts.checkpoint_now() {
            tracing::error!(error = %e, "final receipt checkpoint failed");
        }
        tracing::info!("wcp-hall stopped");
        Ok::<(), StartError>(())
    });
    runtime.shutdown_timeout(grace);
    if let Some(t) = &hall.tracing {
        t.shutdown(Duration::from_secs(2));
    }
    result
}

/// Which inherited descriptor is which, by index: (the API socket, the metrics socket). With
/// `LISTEN_FDNAMES` (one name per descriptor, `:`-separated, in order), the one named `metrics`
/// is the metrics socket and the first other one the API socket, whatever order systemd passes
/// them in; without names (or with a count that does not match), the first is the API socket.
fn activation_roles(names: Option<&str>, count: usize) -> (Option<usize>, Option<usize>) {
    if count == 0 {
        return (None, None);
    }
    let names: Vec<&str> = names.map(|n| n.split(':').collect()).unwrap_or_default();
    if names.len() != count {
        return (Some(0), None);
    }
    let metrics = names.iter().position(|n| *n == "metrics");
    let api = (0..count).find(|i| Some(*i) != metrics);
    (api, metrics)
}

/// Says which Python runtime workers get (and what its grant lets through).
pub(crate) fn log_python(loaded: &Loaded) {
    match &loaded.python {
        Some(p) => {
            tracing::info!(
                interpreter = %p.interpreter.display(),
                requested = %p.requested.display(),
                runtime = %p.describe(),
                read = p.paths.read.len(),
                "python runtime probed"
            );
            for note in &p.notes {
                tracing::warn!(note = %note, "python runtime");
            }
        }
        None => tracing::warn!(
            "no Python interpreter at {}: Python packages will be refused; set [envelope] python",
            crate::envelope::python::DEFAULT_CANDIDATES.join(" or ")
        ),
    }
}

/// The envelope and the runner around it.
fn build_runner(
    config: &crate::config::Config,
    worker: crate::envelope::Identity,
    cgroup: &super::cgroup::Delegation,
    receipts: Arc<crate::receipt::ReceiptLog>,
    hidden_paths: Vec<PathBuf>,
) -> Result<Arc<super::runner::HallRunner>, StartError> {
    let e = &config.envelope;
    let runs_dir = e.runs_dir.clone().unwrap_or_else(|| {
        std::env::var_os("RUNTIME_DIRECTORY")
            .and_then(|v| {
                v.to_str()
                    .and_then(|s| s.split(':').next())
                    .map(std::path::PathBuf::from)
            })
            .map(|d| d.join("runs"))
            .unwrap_or_else(|| config.state_dir().join("runs"))
    });
    let mut host = crate::envelope::HostConfig::new(runs_dir);
    host.secrets_dir = e.secrets_dir.clone();
    host.worker_identity = worker;
    host.cgroup_parent = cgroup.subtree.clone();
    host.kill_grace_ms = e.kill_grace_ms;
    host.drain_timeout_ms = e.drain_timeout_ms;
    host.hidden_paths = hidden_paths;
    host.scratch_bytes = (e.scratch_bytes > 0).then_some(e.scratch_bytes);
    let envelope = crate::envelope::Envelope::new(host)
        .map(Arc::new)
        .map_err(|err| fail(StartFailure::Config, format!("privilege envelope: {err}")))?;
    let swept = envelope.sweep_stale();
    if swept > 0 {
        tracing::warn!(swept, "cleared runs a previous Hall left behind");
    }
    let warm =
        super::warm::WarmPool::start(envelope.clone(), config.warm.clone()).map_err(|err| {
            fail(
                StartFailure::Config,
                format!("the warm pool's thread: {err}"),
            )
        })?;
    Ok(Arc::new(super::runner::HallRunner {
        envelope,
        warm: Some(warm),
        receipts,
        data_dir: e
            .data_dir
            .clone()
            .unwrap_or_else(|| config.state_dir().join("data")),
        worker,
        data_quota_bytes: e.data_quota_bytes,
    }))
}

/// Resolves on SIGTERM or SIGINT; handles SIGHUP reloads meanwhile.
///
/// The handlers are installed here, before the first connection is accepted (not when the
/// returned future is first polled): a client that saw the Hall answer may signal it at once,
/// and a signal arriving before the handlers exist would kill the Hall with its default action.
fn signals(hall: Arc<Hall>) -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let handlers = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    );
    async move { wait_for_signals(hall, handlers).await }
}

type Handlers = (
    std::io::Result<tokio::signal::unix::Signal>,
    std::io::Result<tokio::signal::unix::Signal>,
    std::io::Result<tokio::signal::unix::Signal>,
);

async fn wait_for_signals(hall: Arc<Hall>, handlers: Handlers) {
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = handlers else {
        tracing::error!("cannot install signal handlers; stop the Hall with SIGKILL");
        return std::future::pending().await;
    };
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                let mut states = vec![NotifyState::Reloading];
                if let Ok(m) = NotifyState::monotonic_usec_now() {
                    states.push(m);
                }
                notify(&states);
                // A reload reads files and probes the Python runtime: off the async workers.
                let h = hall.clone();
                let _ = tokio::task::spawn_blocking(move || h.reload()).await;
                notify(&[NotifyState::Ready]);
            }
        }
    }
    tracing::info!("shutdown requested: no new connections, finishing in-flight requests");
    hall.begin_shutdown();
}

/// Expires due approvals every second and records their denial; forgets closed approvals
/// whose outcome was kept `[approvals] outcome_retention_ms`.
async fn expire_approvals(hall: Arc<Hall>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        match hall.approvals.expire_due(now_ms()) {
            Ok(expired) => {
                for approval in expired {
                    tracing::info!(id = %approval.id, "approval expired");
                    if let Err(e) = dispatch::complete_approval(hall.clone(), approval).await {
                        tracing::error!(error = %e.message, "recording an expired approval failed");
                    }
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot expire approvals"),
        }
        let retention = hall.current.get().config.approvals.outcome_retention_ms;
        match hall.approvals.prune_closed(now_ms(), retention) {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                approvals = n,
                "forgot closed approvals past [approvals] outcome_retention_ms"
            ),
            Err(e) => tracing::error!(error = %e, "cannot prune closed approvals"),
        }
    }
}

/// Pings the systemd watchdog while the Hall's state is usable.
async fn watchdog(hall: Arc<Hall>, every: Duration) {
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(100)));
    loop {
        tick.tick().await;
        // Liveness: the snapshot lock and the approvals table answer.
        let _ = hall.current.get();
        let _ = hall.approvals.pending();
        notify(&[NotifyState::Watchdog]);
    }
}

#[cfg(test)]
mod tests {
    use super::activation_roles;

    #[test]
    fn inherited_sockets_are_told_apart_by_name_in_any_order() {
        assert_eq!(activation_roles(None, 0), (None, None));
        assert_eq!(activation_roles(None, 1), (Some(0), None));
        assert_eq!(activation_roles(Some("hall"), 1), (Some(0), None));
        assert_eq!(
            activation_roles(Some("wcp-hall.socket:metrics"), 2),
            (Some(0), Some(1))
        );
        assert_eq!(
            activation_roles(Some("metrics:wcp-hall.socket"), 2),
            (Some(1), Some(0))
        );
        // Only the metrics socket: no API socket inherited (the Hall binds its path).
        assert_eq!(activation_roles(Some("metrics"), 1), (None, Some(0)));
        // Names that do not match the count are not trusted.
        assert_eq!(activation_roles(Some("metrics"), 2), (Some(0), None));
    }
}
