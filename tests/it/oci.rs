//! Worker packages as OCI artifacts against a real registry: Debian's `docker-registry`
//! (distribution 2.8, which has no referrers API, so the tag scheme is exercised) started per
//! test on 127.0.0.1 with its own storage directory, `skopeo` as an outside client, and the
//! attacks of docs/oci.md, each refused with nothing half-stored. The tools are installed by
//! `.ci/run`; a missing one fails the test with the reason, never skips it.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::attestation_support::{put, sample_package};
use crate::hall_support::{BIN, package_key, sign_package};

const WORKER: &str = "org.wcp-hall.oci-hello.1";
const SPECIES: &str = "wrk.oci.hello";

fn tool(name: &str) -> PathBuf {
    for dir in ["/usr/bin", "/usr/local/bin", "/bin", "/usr/sbin"] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return p;
        }
    }
    panic!(
        "{name} is not installed: the OCI tests need Debian's docker-registry and skopeo (`apt-get install docker-registry skopeo`; .ci/run installs them)"
    );
}

/// A real registry on a free loopback port with a temporary storage directory, killed on drop.
pub(crate) struct Registry {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One HTTP/1.1 GET, answered with its status code (0 when nothing answered).
fn http_status(port: u16, path: &str) -> u16 {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return 0;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    );
    let mut head = [0u8; 12];
    if s.read_exact(&mut head).is_err() {
        return 0;
    }
    std::str::from_utf8(&head[9..12])
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

impl Registry {
    pub(crate) fn start() -> Registry {
        Registry::start_with("")
    }

    /// With extra top-level configuration (YAML), e.g. an `auth:` section.
    fn start_with(extra: &str) -> Registry {
        let bin = tool("docker-registry");
        for attempt in 0..5 {
            let dir = tempfile::tempdir().unwrap();
            let port = free_port();
            let config = dir.path().join("config.yml");
            std::fs::write(
                &config,
                format!(
                    "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: wcp-hall-tests\n",
                    dir.path().join("data").display()
                ) + extra,
            )
            .unwrap();
            let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
            let child = Command::new(&bin)
                .arg("serve")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap();
            let mut reg = Registry { child, port, dir };
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                // 401: up, with authentication configured.
                if matches!(http_status(port, "/v2/"), 200 | 401) {
                    return reg;
                }
                if let Ok(Some(_)) = reg.child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let log = std::fs::read_to_string(reg.dir.path().join("registry.log")).unwrap();
            assert!(attempt < 4, "docker-registry did not start: {log}");
            drop(reg);
        }
        unreachable!()
    }

    pub(crate) fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Where the registry keeps a blob (manifests are blobs too).
    fn blob_data(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        self.dir
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    pub(crate) fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What the hostile proxy does.
#[derive(Clone, Copy)]
enum Hostile {
    /// Cuts every blob response after this many body bytes and closes: a registry that stops
    /// mid-pull.
    CutBlobs(usize),
    /// Answers every manifest request with an endless body (no length): a memory bomb.
    EndlessManifests,
}

/// A proxy in front of the registry that misbehaves as `Hostile` says.
struct CutProxy {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl CutProxy {
    fn start(upstream: u16, mode: Hostile) -> CutProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let _ = conn.set_nonblocking(false);
                        let _ = proxy_one(conn, upstream, mode);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        CutProxy {
            port,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn proxy_one(mut conn: TcpStream, upstream: u16, mode: Hostile) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut req = Vec::new();
    let mut byte = [0u8; 1];
    while !req.ends_with(b"\r\n\r\n") {
        if conn.read(&mut byte)? == 0 {
            return Ok(());
        }
        req.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&req).into_owned();
    let mut lines = text.split("\r\n");
    let request_line = lines.next().unwrap_or_default().to_owned();
    if let Hostile::EndlessManifests = mode
        && request_line.starts_with("GET ")
        && request_line.contains("/manifests/")
    {
        conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nConnection: close\r\n\r\n{\"schemaVersion\": 2, \"x\": \"")?;
        let chunk = vec![b'a'; 1 << 16];
        // Until the client hangs up (at most 1 GiB).
        for _ in 0..(1 << 14) {
            conn.write_all(&chunk)?;
        }
        return Ok(());
    }
    let mut out = format!("{request_line}\r\n");
    for l in lines.filter(|l| !l.is_empty()) {
        let lower = l.to_ascii_lowercase();
        if !lower.starts_with("connection:") && !lower.starts_with("host:") {
            out.push_str(l);
            out.push_str("\r\n");
        }
    }
    out.push_str(&format!(
        "Host: 127.0.0.1:{upstream}\r\nConnection: close\r\n\r\n"
    ));
    let mut up = TcpStream::connect(("127.0.0.1", upstream))?;
    up.write_all(out.as_bytes())?;
    let mut resp = Vec::new();
    up.read_to_end(&mut resp)?;
    let split = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 4)
        .unwrap_or(resp.len());
    let (head, body) = resp.split_at(split);
    let head = String::from_utf8_lossy(head);
    let (status, rest) = head.split_once("\r\n").unwrap_or((&head, ""));
    conn.write_all(format!("{status}\r\nConnection: close\r\n{rest}").as_bytes())?;
    let is_blob = request_line.starts_with("GET ") && request_line.contains("/blobs/");
    if let Hostile::CutBlobs(cut) = mode
        && is_blob
        && body.len() > cut
    {
        conn.write_all(&body[..cut])?;
    } else {
        conn.write_all(body)?;
    }
    conn.flush()?;
    let _ = conn.shutdown(std::net::Shutdown::Both);
    Ok(())
}

/// A signed sample package (awp.v2, with the key `<dir>/keys/package.key` trusted in
/// `<dir>/trust.json`), with an extra file of `extra` bytes.
fn signed_package(dir: &Path, name: &str, extra: usize) -> PathBuf {
    let key = package_key(dir);
    let pkg = dir.join(name);
    sample_package(&pkg);
    put(
        &pkg,
        "data/payload.bin",
        &pseudo_random(extra, name.len() as u64),
    );
    sign_package(&key, &pkg, WORKER, SPECIES);
    pkg
}

fn pseudo_random(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn run(args: &[&str], extra: &[&Path]) -> Output {
    Command::new(BIN).args(args).args(extra).output().unwrap()
}

/// `wcp-hall push --plain-http PKG REF`; returns the pinned reference and the digest.
pub(crate) fn push(pkg: &Path, reference: &str) -> (String, String) {
    let o = Command::new(BIN)
        .args(["--json", "push", "--plain-http"])
        .arg(pkg)
        .arg(reference)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    (
        v["pushed"]["reference"].as_str().unwrap().to_owned(),
        v["pushed"]["digest"].as_str().unwrap().to_owned(),
    )
}

/// `wcp-hall pull` into the Hall state directory `state` (store and sources below it).
fn pull(dir: &Path, state: &Path, reference: &str, extra: &[&str]) -> Output {
    Command::new(BIN)
        .args(["--json", "pull", "--plain-http", "--worker-id", WORKER])
        .args(["--species", SPECIES, "--trust"])
        .arg(dir.join("trust.json"))
        .arg("--store")
        .arg(state.join("store"))
        .arg("--sources")
        .arg(state.join("oci"))
        .args(extra)
        .arg(reference)
        .output()
        .unwrap()
}

/// The error code of a failed `--json` command.
fn error_code(o: &Output) -> String {
    let stderr = String::from_utf8_lossy(&o.stderr);
    let line = stderr
        .lines()
        .find(|l| l.contains("\"error\""))
        .unwrap_or_else(|| panic!("no error object in {stderr}"));
    let v: Value = serde_json::from_str(line).unwrap();
    v["error"]["code"].as_str().unwrap().to_owned()
}

/// The pull exited 1 with the attestation `code`, and nothing landed in `state`.
fn assert_refused(o: &std::process::Output, code: &str, state: &Path) {
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(error_code(o), code);
    assert_nothing_stored(state);
}

/// Nothing from a refused pull is left: no store entry, no source, no staging directory.
fn assert_nothing_stored(state: &Path) {
    for sub in ["store", "oci"] {
        let d = state.join(sub);
        if !d.exists() {
            continue;
        }
        let names: Vec<String> = std::fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("sha256-") || n.starts_with(".staging"))
            .collect();
        assert!(names.is_empty(), "{}: {names:?}", d.display());
    }
}

/// Every path below `root` with its mode and content (directories: mode only).
fn tree_listing(root: &Path) -> Vec<(String, u32, Option<Vec<u8>>)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let meta = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            if meta.is_dir() {
                stack.push(p.clone());
                out.push((rel, meta.permissions().mode(), None));
            } else {
                out.push((
                    rel,
                    meta.permissions().mode(),
                    Some(std::fs::read(&p).unwrap()),
                ));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn push_prints_the_digest_and_skopeo_reads_the_artifact_and_its_signature() {
    let reg = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let pkg = signed_package(dir.path(), "pkg", 100);
    let o = run(
        &["push", "--plain-http"],
        &[&pkg, Path::new(&format!("{}/wcp/hello:1.0", reg.host()))],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8(o.stdout).unwrap();
    let digest = stdout.lines().next().unwrap().to_owned();
    assert!(
        digest.starts_with("sha256:") && digest.len() == 71,
        "{stdout}"
    );

    let skopeo = tool("skopeo");
    let inspect = |what: &str| -> Value {
        let o = Command::new(&skopeo)
            .args(["inspect", "--raw", "--tls-verify=false"])
            .arg(format!("docker://{}/wcp/hello{what}", reg.host()))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice(&o.stdout).unwrap()
    };
    // The tag and the digest name the same artifact, of the package's own type.
    let by_tag = inspect(":1.0");
    assert_eq!(by_tag, inspect(&format!("@{digest}")));
    assert_eq!(
        by_tag["artifactType"],
        "application/vnd.wcp-hall.worker-package.v1"
    );
    assert_eq!(
        by_tag["layers"][0]["mediaType"],
        "application/vnd.wcp-hall.worker-package.layer.v1.tar"
    );
    assert_eq!(by_tag["annotations"]["dev.wcp-hall.worker-id"], WORKER);
    // The signature is listed by the referrers tag scheme, and points back at the package.
    let index = inspect(&format!(":{}", digest.replace(':', "-")));
    let sig = &index["manifests"][0];
    assert_eq!(sig["artifactType"], "application/vnd.dsse.envelope.v1+json");
    let sig_manifest = inspect(&format!("@{}", sig["digest"].as_str().unwrap()));
    assert_eq!(sig_manifest["subject"]["digest"], digest.as_str());
}

#[test]
fn the_same_tree_pushes_to_the_same_digest() {
    let reg = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let pkg = signed_package(dir.path(), "pkg", 1000);
    let (_, one) = push(&pkg, &format!("{}/wcp/repro:a", reg.host()));
    // A copy of the tree with other mtimes and modes gives the same bytes.
    let copy = dir.path().join("copy");
    crate::hall_support::copy_dir(&pkg, &copy);
    std::fs::set_permissions(
        copy.join("code/bootstrap.py"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let (_, two) = push(&copy, &format!("{}/wcp/repro:b", reg.host()));
    assert_eq!(one, two);
}

#[test]
fn two_halls_pulling_the_same_ref_get_byte_identical_store_copies() {
    let reg = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let pkg = signed_package(dir.path(), "pkg", 300_000);
    let (reference, digest) = push(&pkg, &format!("{}/wcp/fleet:1", reg.host()));
    let (a, b) = (dir.path().join("hall-a"), dir.path().join("hall-b"));
    for state in [&a, &b] {
        let o = pull(dir.path(), state, &reference, &[]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v["pulled"]["digest"], digest.as_str());
        assert_eq!(v["pulled"]["report"]["ok"], true);
        // Progress went to stderr.
        assert!(String::from_utf8_lossy(&o.stderr).contains("\"progress\""));
    }
    let listing = |state: &Path| {
        let store: Vec<_> = std::fs::read_dir(state.join("store"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("sha256-") && !n.ends_with(".seal"))
            .collect();
        assert_eq!(store.len(), 1, "{store:?}");
        (
            store[0].clone(),
            tree_listing(&state.join("store").join(&store[0])),
        )
    };
    let (la, lb) = (listing(&a), listing(&b));
    assert!(!la.1.is_empty());
    assert_eq!(la, lb);
    // The store copy is the signed tree: the same files as the package, byte for byte.
    let original = pkg.join("data/payload.bin");
    assert_eq!(
        std::fs::read(a.join("store").join(&la.0).join("data/payload.bin")).unwrap(),
        std::fs::read(original).unwrap()
    );
}

#[test]
fn a_tampered_blob_is_refused_and_nothing_is_stored() {
    let reg = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let pkg = signed_package(dir.path(), "pkg", 5000);
    let (reference, digest) = push(&pkg, &format!("{}/wcp/tamper:1", reg.host()));
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(reg.blob_data(&digest)).unwrap()).unwrap();
    let layer = reg.blob_data(manifest["layers"][0]["digest"].as_str().unwrap());
    let mut bytes = std::fs::read(&layer).unwrap();
    bytes[600] ^= 0x01;
    std::fs::write(&layer, bytes).unwrap();
    let state = dir.path().join("hall");
    let o = pull(dir.path(), &state, &reference, &[]);
    assert_refused(&o, "ATTEST_HASH_MISMATCH", &state);
}

#[test]
fn a_swapped_manifest_is_refused_and_nothing_is_stored() {
    let reg = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let good = signed_package(dir.path(), "good", 10);
    let other = signed_package(dir.path(), "other", 20);
    let (reference, digest) = push(&good, &format!("{}/wcp/swap:good", reg.host()));
    let (_, other_digest) = push(&other, &format!("{}/wcp/swap:other", reg.host()));
    // The registry answers the pinned digest with another (validly signed) package.
    std::fs::copy(reg.blob_data(&other_digest), reg.blob_data(&digest)).unwrap();
    let state = dir.path().join("hall");
    let o = pull(dir.path(), &state, &reference, &[]);
    assert_refused(&o, "ATTEST_HASH_MISMATCH", &state);
}

#[test]
fn a_package_signed_by_an_untrusted_key_is_refused_and_nothing_is_stored() {
    let reg = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    package_key(dir.path()); // the trusted key and trust.json
    // Signed by a key of its own, which the trust policy does not list.
    let other = tempfile::tempdir().unwrap();
    let rogue = package_key(other.path());
    let pkg = dir.path().join("pkg");
    sample_package(&pkg);
    sign_package(&rogue, &pkg, WORKER, SPECIES);
    let (reference, _) = push(&pkg, &format!("{}/wcp/rogue:1", reg.host()));
    let state = dir.path().join("hall");
    let o = pull(dir.path(), &state, &reference, &[]);
    assert_refused(&o, "ATTEST_KEY_UNTRUSTED", &state);
}

#[test]
fn an_oversized_layer_is_refused_before_and_during_the_download() {
    let reg = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let pkg = signed_package(dir.path(), "pkg", 200_000);
    let (reference, digest) = push(&pkg, &format!("{}/wcp/big:1", reg.host()));
    // Announced larger than the limit: refused before a byte of the layer is read.
    let state = dir.path().join("hall");
    let o = pull(
        dir.path(),
        &state,
        &reference,
        &["--max-layer-bytes", "65536"],
    );
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(error_code(&o), "ATTEST_TREE_UNSAFE");
    assert!(!String::from_utf8_lossy(&o.stderr).contains("\"progress\""));
    assert_nothing_stored(&state);
    // Served larger than announced (the registry appends bytes): cut off at the announced size.
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(reg.blob_data(&digest)).unwrap()).unwrap();
    let layer = reg.blob_data(manifest["layers"][0]["digest"].as_str().unwrap());
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&layer)
        .unwrap();
    f.write_all(&vec![0u8; 1 << 20]).unwrap();
    drop(f);
    let o = pull(dir.path(), &state, &reference, &[]);
    assert_refused(&o, "ATTEST_HASH_MISMATCH", &state);
}

#[test]
fn a_registry_that_stops_mid_pull_leaves_nothing_half_stored() {
    let reg = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let pkg = signed_package(dir.path(), "pkg", 1 << 20);
    let (_, digest) = push(&pkg, &format!("{}/wcp/cut:1", reg.host()));
    let proxy = CutProxy::start(reg.port, Hostile::CutBlobs(64 << 10));
    let via_proxy = format!("oci://127.0.0.1:{}/wcp/cut@{digest}", proxy.port);
    let state = dir.path().join("hall");
    let o = pull(dir.path(), &state, &via_proxy, &[]);
    assert_eq!(
        o.status.code(),
        Some(69),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(error_code(&o), "registry_unavailable");
    assert_nothing_stored(&state);
    drop(proxy);
    // The registry itself still serves it whole.
    let o = pull(
        dir.path(),
        &state,
        &format!("oci://{}/wcp/cut@{digest}", reg.host()),
        &[],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn a_stored_pull_is_reused_while_the_registry_is_down() {
    let mut reg = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let pkg = signed_package(dir.path(), "pkg", 10);
    let (reference, _) = push(&pkg, &format!("{}/wcp/down:1", reg.host()));
    let state = dir.path().join("hall");
    let o = pull(dir.path(), &state, &reference, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    reg.stop();
    let o = pull(dir.path(), &state, &reference, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["pulled"]["reused"], true);
    // A reference not pulled before is unavailable, not refused.
    let (repo, _) = reference.split_once('@').unwrap();
    let other = format!("{repo}@sha256:{}", "f".repeat(64));
    let o = pull(dir.path(), &state, &other, &[]);
    assert_eq!(
        o.status.code(),
        Some(69),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn plain_http_is_refused_for_a_registry_that_is_not_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let pkg = signed_package(dir.path(), "pkg", 10);
    let o = Command::new(BIN)
        .args(["push", "--plain-http"])
        .arg(&pkg)
        .arg("registry.example.org/wcp/hello:1")
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("only for a loopback registry"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A Hall configuration in `dir/hall` whose registry lists `record` and which may speak plain
/// HTTP to `registry_host`; the trust policy is `dir/trust.json`.
fn hall_dir(dir: &Path, name: &str, registry_host: &str) -> PathBuf {
    let hall = dir.join(name);
    std::fs::create_dir_all(hall.join("registry")).unwrap();
    std::fs::copy(
        crate::hall_support::repo("policies/rules.json"),
        hall.join("rules.json"),
    )
    .unwrap();
    let o = run(&["keys", "generate"], &[&hall.join("receipts.key")]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    std::fs::write(
        hall.join("hall.toml"),
        format!(
            "[paths]\nrules = \"rules.json\"\nregistry_dir = \"registry\"\nstate_dir = \"state\"\n\n[attestation]\ntrust_policy = \"{}\"\noci_plain_http = [\"{registry_host}\"]\n\n[receipts]\nsigning_key = \"receipts.key\"\n",
            dir.join("trust.json").display()
        ),
    )
    .unwrap();
    hall
}

/// `wcp-hall config check`: loads everything as `serve` (and a reload) would, records' OCI
/// packages included.
fn config_check(hall: &Path) -> Output {
    run(&["config", "check", "--config"], &[&hall.join("hall.toml")])
}

#[test]
fn a_record_pins_the_tag_at_enroll_and_the_hall_fetches_at_load_and_keeps_it_when_the_registry_is_down()
 {
    let mut reg = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let pkg = signed_package(dir.path(), "pkg", 100);
    let (reference, digest) = push(&pkg, &format!("{}/wcp/record:stable", reg.host()));
    let hall = hall_dir(dir.path(), "hall", &reg.host());
    let record = serde_json::json!({
        "worker_id": WORKER, "worker_species_id": SPECIES,
        "capabilities": ["cap.hello.greet"], "risk_tier": "low",
        "attestation": {"package_ref": format!("oci://{}/wcp/record:stable", reg.host())},
    });
    let record_file = dir.path().join("record.json");
    std::fs::write(&record_file, record.to_string()).unwrap();
    let o = run(
        &["enroll", "--plain-http", "--registry-dir"],
        &[&hall.join("registry"), &record_file],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // The enrolled record pins the digest the tag named.
    let enrolled: Value = serde_json::from_slice(
        &std::fs::read(hall.join(format!("registry/{WORKER}.json"))).unwrap(),
    )
    .unwrap();
    assert_eq!(enrolled["attestation"]["package_ref"], reference.as_str());

    // Loading the configuration (start, reload) fetches and verifies it into the store.
    let o = config_check(&hall);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let kept = hall.join("state/oci").join(digest.replace(':', "-"));
    assert!(kept.join("manifest.sig").is_file());
    let verify = |state: &Path| {
        Command::new(BIN)
            .args([
                "attest",
                "verify",
                "--worker-id",
                WORKER,
                "--species",
                SPECIES,
            ])
            .arg("--trust")
            .arg(dir.path().join("trust.json"))
            .arg("--store")
            .arg(state.join("store"))
            .arg(&kept)
            .output()
            .unwrap()
    };
    let o = verify(&hall.join("state"));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));

    // The registry goes down: loading still succeeds and the kept, verified copy stays in use.
    reg.stop();
    let o = config_check(&hall);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(kept.join("manifest.sig").is_file());
    assert!(verify(&hall.join("state")).status.success());

    // A new Hall while the registry is down loads too, without the package (its dispatches
    // are denied until a reload fetches it); nothing is half-stored.
    let fresh = hall_dir(dir.path(), "fresh", &reg.host());
    std::fs::copy(
        hall.join(format!("registry/{WORKER}.json")),
        fresh.join(format!("registry/{WORKER}.json")),
    )
    .unwrap();
    let o = config_check(&fresh);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_nothing_stored(&fresh.join("state"));
}

/// One HTTP/1.1 request to the registry: status, head (lowercased names kept as sent), body.
fn http(port: u16, method: &str, path: &str, content_type: &str, body: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(body).unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).unwrap();
    let text = String::from_utf8_lossy(&resp).into_owned();
    let status = text[9..12].parse().unwrap();
    (status, text)
}

fn sha256_of(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    format!(
        "sha256:{}",
        wcp_hall::common::hex(&sha2::Sha256::digest(bytes))
    )
}

/// Uploads a blob monolithically (POST, then PUT with the digest).
fn upload_blob(reg: &Registry, repo: &str, bytes: &[u8]) -> String {
    let digest = sha256_of(bytes);
    let (status, head) = http(
        reg.port,
        "POST",
        &format!("/v2/{repo}/blobs/uploads/"),
        "application/octet-stream",
        b"",
    );
    assert_eq!(status, 202, "{head}");
    let location = head
        .lines()
        .find_map(|l| {
            l.split_once(':')
                .filter(|(k, _)| k.eq_ignore_ascii_case("location"))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap();
    let path = location
        .strip_prefix(&format!("http://127.0.0.1:{}", reg.port))
        .unwrap_or(&location)
        .to_owned();
    let sep = if path.contains('?') { '&' } else { '?' };
    let (status, head) = http(
        reg.port,
        "PUT",
        &format!("{path}{sep}digest={digest}"),
        "application/octet-stream",
        bytes,
    );
    assert_eq!(status, 201, "{head}");
    digest
}

fn put_manifest(reg: &Registry, repo: &str, reference: &str, media_type: &str, bytes: &[u8]) {
    let (status, head) = http(
        reg.port,
        "PUT",
        &format!("/v2/{repo}/manifests/{reference}"),
        media_type,
        bytes,
    );
    assert_eq!(status, 201, "{head}");
}

/// A tar whose entries are written byte for byte as given (name, type, content, link target).
/// Name bytes, entry type, content, link target.
type TarEntry<'a> = (&'a [u8], tar::EntryType, &'a [u8], Option<&'a str>);

fn hostile_tar(entries: &[TarEntry<'_>]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, kind, data, link) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(*kind);
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        if let Some(l) = link {
            h.set_link_name(l).unwrap();
        }
        h.set_cksum();
        b.append(&h, *data).unwrap();
    }
    b.into_inner().unwrap()
}

#[test]
fn a_hostile_tar_served_under_a_valid_signature_is_refused_and_nothing_lands_anywhere() {
    use tar::EntryType as T;
    let reg = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let pkg = signed_package(dir.path(), "pkg", 10);
    let repo = "wcp/hostile";
    let (_, legit) = push(&pkg, &format!("{}/{repo}:legit", reg.host()));
    // The legitimate signature blob, reused as the signature of each crafted artifact: the
    // attacker controls the registry, not the signing key.
    let index: Value = serde_json::from_slice(
        &std::fs::read(reg.blob_data(&{
            let tag_link = reg.dir.path().join(format!(
                "data/docker/registry/v2/repositories/{repo}/_manifests/tags/{}/current/link",
                legit.replace(':', "-")
            ));
            std::fs::read_to_string(tag_link).unwrap()
        }))
        .unwrap(),
    )
    .unwrap();
    let sig_manifest: Value = serde_json::from_slice(
        &std::fs::read(reg.blob_data(index["manifests"][0]["digest"].as_str().unwrap())).unwrap(),
    )
    .unwrap();
    let sig_layer = sig_manifest["layers"][0].clone();
    let empty = upload_blob(&reg, repo, b"{}");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "traversal",
            hostile_tar(&[(b"../../../evil", T::Regular, b"x", None)]),
        ),
        (
            "absolute",
            hostile_tar(&[(b"/tmp/wcp-hall-oci-test-evil", T::Regular, b"x", None)]),
        ),
        (
            "symlink",
            hostile_tar(&[(b"evil", T::Symlink, b"", Some("/etc/shadow"))]),
        ),
        (
            "hard link",
            hostile_tar(&[(b"evil", T::Link, b"", Some("/etc/shadow"))]),
        ),
        ("device", hostile_tar(&[(b"evil", T::Char, b"", None)])),
        (
            "duplicate",
            hostile_tar(&[
                (b"evil", T::Regular, b"a", None),
                (b"evil", T::Regular, b"b", None),
            ]),
        ),
        (
            "planted manifest",
            hostile_tar(&[(b"manifest.sig", T::Regular, b"{}", None)]),
        ),
    ];
    for (what, tar) in cases {
        let layer = upload_blob(&reg, repo, &tar);
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "artifactType": "application/vnd.wcp-hall.worker-package.v1",
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2},
            "layers": [{"mediaType": "application/vnd.wcp-hall.worker-package.layer.v1.tar",
                        "digest": layer, "size": tar.len()}],
        }))
        .unwrap();
        let digest = sha256_of(&manifest);
        put_manifest(
            &reg,
            repo,
            &digest,
            "application/vnd.oci.image.manifest.v1+json",
            &manifest,
        );
        let sig = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "artifactType": "application/vnd.dsse.envelope.v1+json",
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2},
            "layers": [sig_layer],
            "subject": {"mediaType": "application/vnd.oci.image.manifest.v1+json",
                        "digest": digest, "size": manifest.len()},
        }))
        .unwrap();
        let sig_digest = sha256_of(&sig);
        put_manifest(
            &reg,
            repo,
            &sig_digest,
            "application/vnd.oci.image.manifest.v1+json",
            &sig,
        );
        let index = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "digest": sig_digest, "size": sig.len(),
                           "artifactType": "application/vnd.dsse.envelope.v1+json"}],
        }))
        .unwrap();
        put_manifest(
            &reg,
            repo,
            &digest.replace(':', "-"),
            "application/vnd.oci.image.index.v1+json",
            &index,
        );
        let state = dir.path().join(format!("hall-{}", what.replace(' ', "-")));
        let o = pull(
            dir.path(),
            &state,
            &format!("oci://{}/{repo}@{digest}", reg.host()),
            &[],
        );
        assert_eq!(
            o.status.code(),
            Some(1),
            "{what}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert_eq!(error_code(&o), "ATTEST_TREE_UNSAFE", "{what}");
        assert_nothing_stored(&state);
        for escaped in [
            dir.path().join("evil"),
            state.join("evil"),
            state.join("oci/evil"),
            PathBuf::from("/tmp/wcp-hall-oci-test-evil"),
        ] {
            assert!(!escaped.exists(), "{what}: {}", escaped.display());
        }
    }
}

#[test]
fn an_endless_manifest_is_cut_off_at_the_bound() {
    let reg = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let pkg = signed_package(dir.path(), "pkg", 10);
    let (_, digest) = push(&pkg, &format!("{}/wcp/endless:1", reg.host()));
    let proxy = CutProxy::start(reg.port, Hostile::EndlessManifests);
    let state = dir.path().join("hall");
    let started = Instant::now();
    let o = pull(
        dir.path(),
        &state,
        &format!("oci://127.0.0.1:{}/wcp/endless@{digest}", proxy.port),
        &[],
    );
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(error_code(&o), "ATTEST_MANIFEST_INVALID");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("larger than"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_nothing_stored(&state);
}

#[test]
fn an_awp_v1_package_travels_with_its_hmac_manifest_and_needs_the_key_to_pull() {
    let reg = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let pkg = dir.path().join("pkg");
    sample_package(&pkg);
    let (key, _) = crate::attestation_support::hmac_key_file(dir.path(), "oci-v1-secret");
    let o = Command::new(BIN)
        .args(["attest", "sign", "--format", "v1", "--worker-id", WORKER])
        .args(["--species", SPECIES, "--worker-version", "1.0.0"])
        .arg("--hmac-key-file")
        .arg(&key)
        .arg(&pkg)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    std::fs::write(
        dir.path().join("trust.json"),
        crate::attestation_support::policy_text(
            &[(
                "org.wcp-hall",
                1,
                vec![crate::attestation_support::key_entry(
                    &crate::attestation_support::key(7),
                )],
                true,
            )],
            "",
        ),
    )
    .unwrap();
    let (reference, digest) = push(&pkg, &format!("{}/wcp/legacy:1", reg.host()));
    let skopeo_index = Command::new(tool("skopeo"))
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!(
            "docker://{}/wcp/legacy:{}",
            reg.host(),
            digest.replace(':', "-")
        ))
        .output()
        .unwrap();
    let index: Value = serde_json::from_slice(&skopeo_index.stdout).unwrap();
    assert_eq!(
        index["manifests"][0]["artifactType"],
        "application/vnd.wcp-hall.manifest.awp-v1+json"
    );
    // Without the HMAC key the signature cannot be checked: refused, nothing stored.
    let state = dir.path().join("hall");
    let o = pull(dir.path(), &state, &reference, &[]);
    assert_refused(&o, "ATTEST_SIGNATURE_MISSING", &state);
    let o = pull(
        dir.path(),
        &state,
        &reference,
        &["--hmac-key-file", key.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["pulled"]["report"]["format"], "awp.v1");
    assert!(
        v["pulled"]["manifest_path"]
            .as_str()
            .unwrap()
            .ends_with("/manifest.json")
    );
}

/// bcrypt (cost 4) of `hall-pass`, for the registry's htpasswd file.
const HTPASSWD: &str = "fleet:$2b$04$VfvanEbcx3L5yv.yEQkul.rVXsjrzw.nktY5brvXV/8lcoYa5Rqfe\n";

#[test]
fn credentials_come_from_the_docker_config_a_credential_helper_or_a_systemd_credential() {
    use base64::Engine as _;
    let dir = tempfile::tempdir().unwrap();
    let htpasswd = dir.path().join("htpasswd");
    std::fs::write(&htpasswd, HTPASSWD).unwrap();
    let reg = Registry::start_with(&format!(
        "auth:\n  htpasswd:\n    realm: wcp-hall-tests\n    path: {}\n",
        htpasswd.display()
    ));
    let host = reg.host();
    let pkg = signed_package(dir.path(), "pkg", 10);
    let config_dir = |name: &str, config: Value| {
        let d = dir.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("config.json"), config.to_string()).unwrap();
        d
    };
    let none = config_dir("none", serde_json::json!({}));
    let basic = base64::engine::general_purpose::STANDARD.encode("fleet:hall-pass");
    let auths = config_dir(
        "auths",
        serde_json::json!({"auths": {host.clone(): {"auth": basic}}}),
    );
    let helper = config_dir(
        "helper",
        serde_json::json!({"credHelpers": {host.clone(): "wcptest"}}),
    );
    let bin_dir = dir.path().join("bin");
    std::fs::create_dir_all(&bin_dir).unwrap();
    let script = bin_dir.join("docker-credential-wcptest");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nread host\n[ \"$host\" = \"{host}\" ] || exit 1\necho '{{\"ServerURL\":\"{host}\",\"Username\":\"fleet\",\"Secret\":\"hall-pass\"}}'\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let push_with = |docker_config: &Path| {
        Command::new(BIN)
            .args(["--json", "push", "--plain-http"])
            .arg(&pkg)
            .arg(format!("{host}/wcp/private:1"))
            .env("DOCKER_CONFIG", docker_config)
            .env_remove("CREDENTIALS_DIRECTORY")
            .output()
            .unwrap()
    };
    // Anonymous: the registry refuses.
    let o = push_with(&none);
    assert_eq!(
        o.status.code(),
        Some(69),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // Static `auths` of the docker config.
    let o = push_with(&auths);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let reference = v["pushed"]["reference"].as_str().unwrap().to_owned();
    let pull_with = |state: &Path, docker_config: &Path, credentials: Option<&Path>| {
        let mut c = Command::new(BIN);
        c.args(["--json", "pull", "--plain-http", "--worker-id", WORKER])
            .args(["--species", SPECIES, "--trust"])
            .arg(dir.path().join("trust.json"))
            .arg("--store")
            .arg(state.join("store"))
            .arg("--sources")
            .arg(state.join("oci"))
            .arg(&reference)
            .env("DOCKER_CONFIG", docker_config)
            .env("PATH", &path)
            .env_remove("CREDENTIALS_DIRECTORY");
        if let Some(d) = credentials {
            c.env("CREDENTIALS_DIRECTORY", d);
        }
        c.output().unwrap()
    };
    let o = pull_with(&dir.path().join("anon"), &none, None);
    assert_eq!(
        o.status.code(),
        Some(69),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_nothing_stored(&dir.path().join("anon"));
    // A credential helper named by `credHelpers` for this host.
    let o = pull_with(&dir.path().join("helper-hall"), &helper, None);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // A systemd credential `oci-auth.json` (a docker config), ahead of the docker config.
    let creds = dir.path().join("credentials");
    std::fs::create_dir_all(&creds).unwrap();
    std::fs::copy(auths.join("config.json"), creds.join("oci-auth.json")).unwrap();
    let o = pull_with(&dir.path().join("systemd-hall"), &none, Some(&creds));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}
