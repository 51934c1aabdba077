//! The systemd integration, checked without systemd as PID 1: the units verify cleanly, their
//! exposure stays at or below 2.0, socket activation serves requests on the inherited socket
//! (and metrics on a second, named one), and readiness, reload, watchdog and stopping are
//! signalled on `NOTIFY_SOCKET`.
//! `.ci/run` installs systemd's tools when a machine lacks them.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hyper::Method;

const BIN: &str = env!("CARGO_BIN_EXE_wcp-hall");

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// The shipped units with `ExecStart` pointing at the binary under test (verify checks that the
/// executable exists).
fn units(dir: &Path) -> (PathBuf, PathBuf) {
    let service = std::fs::read_to_string(repo("systemd/wcp-hall.service"))
        .unwrap()
        .replace("/usr/bin/wcp-hall", BIN);
    let s = dir.join("wcp-hall.service");
    std::fs::write(&s, service).unwrap();
    let k = dir.join("wcp-hall.socket");
    std::fs::copy(repo("systemd/wcp-hall.socket"), &k).unwrap();
    (s, k)
}

/// The optional metrics socket unit, next to the units of [`units`].
fn metrics_unit(dir: &Path) -> PathBuf {
    let m = dir.join("wcp-hall-metrics.socket");
    std::fs::copy(repo("systemd/wcp-hall-metrics.socket"), &m).unwrap();
    m
}

#[test]
fn units_verify_without_any_warning() {
    let dir = tempfile::tempdir().unwrap();
    let (service, socket) = units(dir.path());
    let metrics = metrics_unit(dir.path());
    let o = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&service)
        .arg(&socket)
        .arg(&metrics)
        .output()
        .expect("systemd-analyze is installed (.ci/run installs it)");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.success() && stderr.trim().is_empty(),
        "verify said: {stderr}"
    );
}

#[test]
fn service_exposure_is_at_most_2_0() {
    let dir = tempfile::tempdir().unwrap();
    let (service, _) = units(dir.path());
    let o = Command::new("systemd-analyze")
        .args(["security", "--offline=true"])
        .arg(&service)
        .output()
        .expect("systemd-analyze is installed");
    let text = String::from_utf8_lossy(&o.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no overall exposure line in: {text}"));
    let score: f64 = line
        .split(':')
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("cannot parse {line:?}"));
    assert!(score <= 2.0, "exposure {score} > 2.0: {line}");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// A copy of the bundled policies/ (config, rules, registry, profiles, Cedar policies).
fn test_config(dir: &Path) -> PathBuf {
    copy_dir(&repo("policies"), dir);
    wcp_hall::crypto::KeyPair::generate()
        .unwrap()
        .write(&dir.join("receipts.key"))
        .unwrap();
    let config = dir.join("hall.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        format!("{text}\n[receipts]\nsigning_key = \"receipts.key\"\n"),
    )
    .unwrap();
    config
}

fn health(socket: &Path) -> Option<serde_json::Value> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(wcp_hall::client::call(
        socket,
        Method::GET,
        "/wcp/health",
        None,
        Duration::from_secs(20),
    ))
    .ok()
    .map(|a| a.body)
}

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn socket_activation_serves_on_the_inherited_socket() {
    let dir = tempfile::tempdir().unwrap();
    let config = test_config(dir.path());
    let socket = dir.path().join("activated.sock");
    let state = dir.path().join("state");
    let child = Command::new("systemd-socket-activate")
        .arg("-l")
        .arg(&socket)
        .arg("--fdname=hall")
        .arg("-E")
        .arg(format!("STATE_DIRECTORY={}", state.display()))
        .arg(BIN)
        .args(["serve", "-c"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("systemd-socket-activate is installed");
    let _guard = Killed(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !socket.exists() {
        assert!(
            Instant::now() < deadline,
            "systemd-socket-activate did not listen"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The first connection starts the Hall with the listening socket as fd 3. (The socket file
    // appears at bind(), a moment before listen(): retry until the deadline.)
    let body = loop {
        if let Some(b) = health(&socket) {
            break b;
        }
        assert!(
            Instant::now() < deadline,
            "the activated Hall never answered on the inherited socket"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(body["status"], "ok");
    // $STATE_DIRECTORY was honoured (the config does not set state_dir).
    assert!(
        state.is_dir(),
        "the Hall creates its state directory from $STATE_DIRECTORY"
    );
}

/// The metrics socket unit passes what the Hall looks for: a loopback TCP socket named
/// "metrics" for wcp-hall.service.
#[test]
fn the_metrics_socket_unit_names_its_socket_for_the_hall() {
    let unit = std::fs::read_to_string(repo("systemd/wcp-hall-metrics.socket")).unwrap();
    let lines: Vec<&str> = unit.lines().map(str::trim).collect();
    for want in [
        "ListenStream=127.0.0.1:9464",
        "FileDescriptorName=metrics",
        "Service=wcp-hall.service",
        "Accept=no",
    ] {
        assert!(lines.contains(&want), "{want} missing from the unit");
    }
}

/// A free TCP port on 127.0.0.1 (bound, read, released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One HTTP/1.0 GET over TCP: (status, body).
fn tcp_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// systemd passes the API socket and the metrics socket (in whatever order, told apart by
/// LISTEN_FDNAMES); the Hall serves /metrics, and only that, on the inherited TCP socket even
/// from its own network namespace (what the service's PrivateNetwork=yes gives it): the socket
/// was created, and stays, in the namespace of whoever bound it.
#[test]
fn socket_activation_serves_metrics_on_a_named_tcp_socket_from_a_private_network_namespace() {
    let dir = tempfile::tempdir().unwrap();
    let config = test_config(dir.path());
    let socket = dir.path().join("activated.sock");
    let state = dir.path().join("state");
    let port = free_port();
    let unshare = Command::new("unshare")
        .args(["--net", "true"])
        .status()
        .expect("unshare (util-linux) is installed");
    assert!(
        unshare.success(),
        "`unshare --net` must work here (root, or a user namespace): it stands in for PrivateNetwork=yes"
    );
    // The metrics socket first: the Hall must not take fd 3 as its API socket.
    let child = Command::new("systemd-socket-activate")
        .arg("-l")
        .arg(format!("127.0.0.1:{port}"))
        .arg("-l")
        .arg(&socket)
        .arg("--fdname=metrics:hall")
        .arg("-E")
        .arg(format!("STATE_DIRECTORY={}", state.display()))
        .args(["unshare", "--net"])
        .arg(BIN)
        .args(["serve", "-c"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("systemd-socket-activate is installed");
    let _guard = Killed(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    // The first connection starts the Hall with both sockets.
    let (status, body) = loop {
        if let Ok((status, body)) = tcp_get(port, "/metrics")
            && status != 0
        {
            break (status, body);
        }
        assert!(
            Instant::now() < deadline,
            "the activated Hall never answered on the inherited metrics socket"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("# TYPE wcp_hall_dispatches_total counter"),
        "{body}"
    );
    assert!(body.contains("wcp_hall_build_info{"), "{body}");
    // Only /metrics there; the API is on the inherited Unix socket.
    assert_eq!(tcp_get(port, "/wcp/health").unwrap().0, 404);
    assert_eq!(tcp_get(port, "/_ping").unwrap().0, 404);
    let health = health(&socket).expect("the API answers on the inherited Unix socket");
    assert_eq!(health["status"], "ok");
}

/// Reads notify datagrams until one contains `want`.
fn await_notify(sock: &UnixDatagram, want: &str, seen: &mut Vec<String>) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        if let Ok(n) = sock.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            let hit = msg.lines().any(|l| l == want);
            seen.push(msg);
            if hit {
                return;
            }
        }
    }
    panic!("no {want} on NOTIFY_SOCKET; got {seen:?}");
}

#[test]
fn readiness_reload_watchdog_and_stopping_are_notified() {
    let dir = tempfile::tempdir().unwrap();
    let config = test_config(dir.path());
    let notify_path = dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let socket = dir.path().join("hall.sock");
    let child = Command::new(BIN)
        .args(["serve", "-c"])
        .arg(&config)
        .arg("-s")
        .arg(&socket)
        .env("NOTIFY_SOCKET", &notify_path)
        .env("WATCHDOG_USEC", "400000")
        .env("STATE_DIRECTORY", dir.path().join("state"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut child = Killed(child);
    let mut seen = Vec::new();
    await_notify(&notify, "READY=1", &mut seen);
    // READY comes only once the socket answers.
    assert!(health(&socket).is_some());
    assert!(dir.path().join("state").is_dir());
    await_notify(&notify, "WATCHDOG=1", &mut seen);
    let pid = nix::unistd::Pid::from_raw(child.0.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    await_notify(&notify, "RELOADING=1", &mut seen);
    await_notify(&notify, "READY=1", &mut seen);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    await_notify(&notify, "STOPPING=1", &mut seen);
    let status = child.0.wait().unwrap();
    assert_eq!(status.code(), Some(0));
}

/// The configuration the systemd install puts in /etc/wcp-hall is the default one plus what the
/// service needs ([receipts] from its credential, root as the operator), and stays in step.
#[test]
fn the_installed_configuration_is_the_default_one_plus_the_service_sections() {
    let default = std::fs::read_to_string(repo("policies/hall.toml")).unwrap();
    let installed = std::fs::read_to_string(repo("systemd/hall.toml")).unwrap();
    let body = installed
        .split_once('\n')
        .and_then(|(_, rest)| rest.split_once('\n'))
        .map(|(_, rest)| rest)
        .unwrap();
    assert!(
        body.starts_with(&default),
        "systemd/hall.toml must be two comment lines, policies/hall.toml, then the service's sections"
    );
    let tail = &body[default.len()..];
    assert!(tail.contains("signing_key = \"credential:receipts.key\""));
    assert!(
        std::fs::read_to_string(repo("systemd/wcp-hall.service"))
            .unwrap()
            .contains("LoadCredential=receipts.key:/etc/wcp-hall/keys/receipts.key")
    );
    let parsed = wcp_hall::config::Config::from_toml_str(&installed, &repo("systemd/hall.toml"));
    assert!(parsed.is_ok(), "{:?}", parsed.err());
}
