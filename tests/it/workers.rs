//! The bundled worker packages (`workers/`), tested the way the Hall runs them: real Python
//! processes with an empty environment, a read-only package directory, private writable
//! directories, a real loopback HTTP server for the fetcher, and the registry's own validation of
//! every record.
//!
//! Read-only package: every run copies the package to a temporary directory and makes it
//! read-only (mode bits; as root additionally a read-only bind mount in a private mount
//! namespace, because root ignores mode bits). Every run also compares a before/after snapshot
//! of the package tree (paths, sizes, SHA-256, modes), so a write is caught even where the kernel
//! protection is unavailable; `package_protection_catches_a_write` shows the check can fail.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::Duration;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use wcp_hall::registry::{
    ControlsScope, NetworkEgress, RegistryDir, RegistryRecord, enroll, record_file_name,
};

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// What each bundled worker must declare (WCP §9 for the pipeline).
struct Expect {
    dir: &'static str,
    worker_id: &'static str,
    species: &'static str,
    capability: &'static str,
    blast: u32,
    egress: Option<&'static str>,
    writes: &'static [&'static str],
}

const WORKERS: &[Expect] = &[
    Expect {
        dir: "hello",
        worker_id: "org.wcp-hall.hello.1",
        species: "wrk.hello.greeter",
        capability: "cap.hello.greet",
        blast: 0,
        egress: None,
        writes: &[],
    },
    Expect {
        dir: "web_fetcher",
        worker_id: "org.wcp-hall.web-fetcher.1",
        species: "wrk.web.fetcher",
        capability: "cap.web.fetch",
        blast: 1,
        egress: Some("127.0.0.1:18080"),
        writes: &[],
    },
    Expect {
        dir: "doc_chunker",
        worker_id: "org.wcp-hall.doc-chunker.1",
        species: "wrk.doc.chunker",
        capability: "cap.doc.chunk",
        blast: 0,
        egress: None,
        writes: &[],
    },
    Expect {
        dir: "embedder",
        worker_id: "org.wcp-hall.embedder.1",
        species: "wrk.ml.embedder",
        capability: "cap.ml.embed",
        blast: 1,
        egress: None,
        writes: &[],
    },
    Expect {
        dir: "doc_hasher",
        worker_id: "org.wcp-hall.doc-hasher.1",
        species: "wrk.doc.hasher",
        capability: "cap.doc.hash",
        blast: 0,
        egress: None,
        writes: &[],
    },
    Expect {
        dir: "research_registrar",
        worker_id: "org.wcp-hall.research-registrar.1",
        species: "wrk.research.registrar",
        capability: "cap.research.register",
        blast: 2,
        egress: None,
        writes: &["knowledge/"],
    },
];

const PIPELINE: &[&str] = &[
    "web_fetcher",
    "doc_chunker",
    "embedder",
    "doc_hasher",
    "research_registrar",
];

fn workers_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("workers")
}

/// Debian's interpreter when present (what the Hall runs), otherwise the first `python3` on PATH.
fn python() -> PathBuf {
    let system = PathBuf::from("/usr/bin/python3");
    if system.exists() {
        return system;
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join("python3"))
                .find(|p| p.is_file())
        })
        .expect("python3 is needed for the worker tests (install Python 3.11)")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

// ---- packages, read-only ---------------------------------------------------------------------

/// A worker package copied to a temporary directory and made read-only.
struct Package {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    before: BTreeMap<PathBuf, (u64, String, u32)>,
}

impl Package {
    fn new(name: &str) -> Package {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join(name);
        copy_tree(&workers_dir().join(name), &root);
        set_read_only(&root);
        let before = snapshot(&root);
        Package {
            _tmp: tmp,
            root,
            before,
        }
    }

    /// Panics if anything in the package changed since it was copied.
    fn assert_untouched(&self, what: &str) {
        let after = snapshot(&self.root);
        assert_eq!(
            after,
            self.before,
            "{what} changed its package directory {}",
            self.root.display()
        );
    }
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        let name = entry.file_name();
        if name == "__pycache__" {
            continue;
        }
        let target = to.join(&name);
        if entry.file_type().expect("file type").is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

fn set_read_only(dir: &Path) {
    for entry in std::fs::read_dir(dir).expect("read_dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            set_read_only(&path);
        } else {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o444)).expect("chmod");
        }
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o555)).expect("chmod");
}

fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (u64, String, u32)> {
    fn walk(dir: &Path, root: &Path, out: &mut BTreeMap<PathBuf, (u64, String, u32)>) {
        for entry in std::fs::read_dir(dir).expect("read_dir") {
            let entry = entry.expect("entry");
            let path = entry.path();
            let meta = std::fs::symlink_metadata(&path).expect("stat");
            let rel = path.strip_prefix(root).expect("prefix").to_path_buf();
            if meta.is_dir() {
                out.insert(rel, (0, "dir".into(), meta.permissions().mode()));
                walk(&path, root, out);
            } else {
                let data = std::fs::read(&path).unwrap_or_default();
                out.insert(
                    rel,
                    (meta.len(), sha256_hex(&data), meta.permissions().mode()),
                );
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Makes `dir` a read-only bind mount in a private mount namespace of the calling (forked,
/// single-threaded) child, then changes into `cwd` again: std has already changed directory
/// before this runs, and a working directory opened before the mount would still be the
/// writable one underneath. Only syscalls on pre-built C strings: safe between fork and exec.
fn read_only_mount(dir: &CString, cwd: Option<&CString>) -> std::io::Result<()> {
    use nix::mount::{MsFlags, mount};
    use nix::sched::{CloneFlags, unshare};
    let none: Option<&std::ffi::CStr> = None;
    let errno = |e: nix::errno::Errno| std::io::Error::from_raw_os_error(e as i32);
    unshare(CloneFlags::CLONE_NEWNS).map_err(errno)?;
    mount(
        none,
        c"/",
        none,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        none,
    )
    .map_err(errno)?;
    mount(
        Some(dir.as_c_str()),
        dir.as_c_str(),
        none,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        none,
    )
    .map_err(errno)?;
    mount(
        none,
        dir.as_c_str(),
        none,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
        none,
    )
    .map_err(errno)?;
    if let Some(cwd) = cwd {
        nix::unistd::chdir(cwd.as_c_str()).map_err(errno)?;
    }
    Ok(())
}

/// Whether read-only bind mounts work here (root with CAP_SYS_ADMIN). Probed once; when they do
/// not, the mode bits (effective for non-root) and the snapshot comparison remain, and a note
/// says so.
#[allow(unsafe_code)] // Command::pre_exec is unsafe
fn mount_protection() -> bool {
    static PROBE: OnceLock<bool> = OnceLock::new();
    *PROBE.get_or_init(|| {
        if !is_root() {
            eprintln!("note: not root: the package is protected by its mode bits");
            return false;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let c = CString::new(dir.path().as_os_str().as_bytes()).expect("path");
        let mut cmd = Command::new("/bin/sh");
        cmd.args(["-c", "true"]);
        // SAFETY: read_only_mount only makes syscalls on memory prepared before the fork.
        unsafe {
            cmd.pre_exec(move || read_only_mount(&c, None));
        }
        match cmd.status() {
            Ok(s) if s.success() => true,
            other => {
                eprintln!(
                    "note: root without mount namespaces ({other:?}): mode bits do not bind root, \
                     so the package is only checked by the before/after snapshot"
                );
                false
            }
        }
    })
}

// ---- running a worker ------------------------------------------------------------------------

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    /// The single JSON object on stdout (panics if there is not exactly one line of JSON).
    fn json(&self) -> Value {
        let lines: Vec<&str> = self.stdout.lines().collect();
        assert_eq!(
            lines.len(),
            1,
            "expected exactly one line on stdout, got {:?}\nstderr: {}",
            self.stdout,
            self.stderr
        );
        serde_json::from_str(lines[0])
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", lines[0]))
    }

    fn ok(&self) -> Value {
        assert_eq!(
            self.code, 0,
            "worker failed: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self.json()
    }

    /// Every stderr line is a JSON log record carrying the correlation id.
    fn assert_logs(&self, correlation_id: &str) {
        let mut n = 0;
        for line in self.stderr.lines() {
            let rec: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("stderr line is not a JSON log record ({e}): {line}"));
            assert_eq!(rec["correlation_id"], correlation_id, "log record: {line}");
            assert!(rec["msg"].is_string(), "log record without msg: {line}");
            n += 1;
        }
        assert!(n > 0, "the worker logged nothing to stderr");
    }
}

/// Private directories of one run: HOME/TMPDIR, the work dir and the writable dirs.
struct RunDirs {
    _tmp: tempfile::TempDir,
    home: PathBuf,
    work: PathBuf,
    writes: Vec<PathBuf>,
}

impl RunDirs {
    fn new(writable: usize) -> RunDirs {
        let tmp = tempfile::tempdir().expect("tempdir");
        let home = tmp.path().join("home");
        let work = tmp.path().join("work");
        std::fs::create_dir(&home).expect("mkdir");
        std::fs::create_dir(&work).expect("mkdir");
        let writes: Vec<PathBuf> = (0..writable)
            .map(|i| {
                let d = tmp.path().join(format!("write{i}"));
                std::fs::create_dir(&d).expect("mkdir");
                d
            })
            .collect();
        RunDirs {
            _tmp: tmp,
            home,
            work,
            writes,
        }
    }

    fn write_dirs(&self) -> String {
        self.writes
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(":")
    }
}

/// Runs `python3 -I -B code/bootstrap.py` in the package exactly like the Hall: cwd = package
/// root, an empty environment except PATH, LANG, HOME, TMPDIR and the WCP_* variables.
fn run_worker(pkg: &Package, dirs: &RunDirs, correlation_id: Option<&str>, stdin: &[u8]) -> Run {
    let mut cmd = Command::new(python());
    cmd.args(["-I", "-B", "code/bootstrap.py"])
        .current_dir(&pkg.root)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("LANG", "C.UTF-8")
        .env("HOME", &dirs.home)
        .env("TMPDIR", &dirs.home)
        .env("TRACEPARENT", TRACEPARENT)
        .env("WCP_WORK_DIR", &dirs.work)
        .env("WCP_WRITE_DIRS", dirs.write_dirs());
    if let Some(cid) = correlation_id {
        cmd.env("WCP_CORRELATION_ID", cid);
    }
    let run = spawn(cmd, pkg, stdin);
    pkg.assert_untouched("the worker");
    run
}

#[allow(unsafe_code)] // Command::pre_exec is unsafe
fn spawn(mut cmd: Command, pkg: &Package, stdin: &[u8]) -> Run {
    if mount_protection() {
        let c = CString::new(pkg.root.as_os_str().as_bytes()).expect("path");
        let cwd = cmd
            .get_current_dir()
            .map(|d| CString::new(d.as_os_str().as_bytes()).expect("path"));
        // SAFETY: read_only_mount only makes syscalls on memory prepared before the fork.
        unsafe {
            cmd.pre_exec(move || read_only_mount(&c, cwd.as_ref()));
        }
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn python3");
    let mut input = child.stdin.take().expect("stdin");
    let data = stdin.to_vec();
    // Written from a thread: a worker may answer (and exit) before reading a large request.
    let writer = thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let out = child.wait_with_output().expect("wait");
    let _ = writer.join();
    Run {
        code: out.status.code().expect("exited normally, not by a signal"),
        stdout: String::from_utf8(out.stdout).expect("stdout is UTF-8"),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn example(name: &str) -> Value {
    serde_json::from_str(&read(
        &workers_dir().join(name).join("example.request.json"),
    ))
    .expect("example.request.json is JSON")
}

// ---- a tiny loopback HTTP server -----------------------------------------------------------

/// Serves `/document.txt` (the bundled sample) on an ephemeral loopback port; records the
/// request heads it saw. Everything else is 404.
struct DocServer {
    port: u16,
    seen: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl DocServer {
    fn start(document: Vec<u8>) -> DocServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("addr").port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (seen2, stop2) = (seen.clone(), stop.clone());
        thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut conn) = conn else { continue };
                let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
                let mut reader = BufReader::new(conn.try_clone().expect("clone"));
                let mut head = String::new();
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    head.push_str(&line);
                }
                let path = head.split_whitespace().nth(1).unwrap_or("").to_owned();
                seen2.lock().expect("lock").push(head);
                let (status, body): (&str, &[u8]) = if path == "/document.txt" {
                    ("200 OK", &document)
                } else {
                    ("404 Not Found", b"not found")
                };
                let _ = write!(
                    conn,
                    "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = conn.write_all(body);
            }
        });
        DocServer { port, seen, stop }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for DocServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port)); // wake the accept loop
    }
}

// ---- tests -----------------------------------------------------------------------------------

#[test]
fn python_unit_tests_pass_for_every_worker() {
    let children: Vec<(&str, std::process::Child, tempfile::TempDir)> = WORKERS
        .iter()
        .map(|w| {
            let home = tempfile::tempdir().expect("tempdir");
            let child = Command::new(python())
                .args(["-B", "-m", "unittest", "discover", "-s", "tests", "-v"])
                .current_dir(workers_dir().join(w.dir))
                .env_clear()
                .env("PATH", "/usr/bin:/bin")
                .env("LANG", "C.UTF-8")
                .env("HOME", home.path())
                .env("TMPDIR", home.path())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn python3 -m unittest");
            (w.dir, child, home)
        })
        .collect();
    for (dir, child, _home) in children {
        let out = child.wait_with_output().expect("wait");
        let report = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "{dir}: Python unit tests failed\n{report}"
        );
        let ran = report
            .lines()
            .find_map(|l| {
                l.strip_prefix("Ran ")?
                    .split_whitespace()
                    .next()?
                    .parse::<u32>()
                    .ok()
            })
            .unwrap_or(0);
        assert!(ran >= 4, "{dir}: only {ran} unit tests ran\n{report}");
    }
}

/// Set to regenerate every bundled Python package's `code/bootstrap.py` from the one source,
/// `workers/bootstrap.py`, instead of failing on a copy that differs.
const REGENERATE: &str = "WCP_HALL_REGENERATE_BOOTSTRAP";

#[test]
fn every_package_has_the_pyhall_layout() {
    // One source for the bootstrap every Python package carries (each package is signed on its
    // own, so each keeps its own copy).
    let canonical = workers_dir().join("bootstrap.py");
    let bootstrap = read(&canonical);
    if std::env::var_os(REGENERATE).is_some() {
        for w in WORKERS {
            let copy = workers_dir().join(w.dir).join("code/bootstrap.py");
            std::fs::write(&copy, &bootstrap)
                .unwrap_or_else(|e| panic!("cannot write {}: {e}", copy.display()));
        }
    }
    for w in WORKERS {
        let dir = workers_dir().join(w.dir);
        for file in [
            "code/bootstrap.py",
            "code/worker_logic.py",
            "requirements.lock",
            "config.schema.json",
            "record.json",
            "example.request.json",
            "tests/test_logic.py",
            "wcp-worker.json",
        ] {
            assert!(dir.join(file).is_file(), "{}: {file} is missing", w.dir);
        }
        // Every bundled worker speaks protocol 2 (it can be started warm).
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&read(&dir.join("wcp-worker.json"))).unwrap(),
            serde_json::json!({"worker_protocol": 2}),
            "{}",
            w.dir
        );
        assert!(
            read(&dir.join("code/bootstrap.py")) == bootstrap,
            "{}: code/bootstrap.py differs from workers/bootstrap.py, its one source: edit that \
             file, then copy it into every package with \
             `{REGENERATE}=1 cargo test --test it workers::every_package_has_the_pyhall_layout`",
            w.dir
        );
        assert_eq!(
            read(&dir.join("requirements.lock")),
            "",
            "{}: requirements.lock must be empty (standard library only)",
            w.dir
        );
        let logic = read(&dir.join("code/worker_logic.py"));
        assert!(
            logic.contains(&format!("WORKER_SPECIES = \"{}\"", w.species)),
            "{}: worker_logic.WORKER_SPECIES must be {}",
            w.dir,
            w.species
        );
        let schema: Value = serde_json::from_str(&read(&dir.join("config.schema.json")))
            .expect("config.schema.json is JSON");
        assert_eq!(schema["type"], "object", "{}", w.dir);
        assert_eq!(schema["additionalProperties"], false, "{}", w.dir);
        assert!(schema["description"].is_string(), "{}", w.dir);
        let props = schema["properties"].as_object().expect("properties");
        for (key, prop) in props {
            assert!(
                prop["description"].as_str().is_some_and(|d| d.len() > 10),
                "{}: property {key} needs a description (it becomes the MCP tool's input schema)",
                w.dir
            );
        }
        for key in schema["required"].as_array().expect("required") {
            assert!(
                props.contains_key(key.as_str().expect("string")),
                "{}",
                w.dir
            );
        }
    }
}

#[test]
fn every_record_passes_registry_validation_and_enrolls() {
    let registry = tempfile::tempdir().expect("tempdir");
    for w in WORKERS {
        let text = read(&workers_dir().join(w.dir).join("record.json"));
        let record = RegistryRecord::from_json_str(&text)
            .unwrap_or_else(|e| panic!("{}/record.json: {e}", w.dir));
        record.validate().expect("validate");
        assert_eq!(record.worker_id, w.worker_id);
        assert_eq!(record.worker_species_id, w.species);
        assert_eq!(record.capabilities, vec![w.capability.to_owned()]);
        assert!(
            record
                .currently_implements
                .iter()
                .any(|c| c == "ctrl.obs.audit-log-append-only"),
            "{}: must implement ctrl.obs.audit-log-append-only",
            w.dir
        );
        for c in &record.required_controls {
            assert!(
                record.currently_implements.contains(c),
                "{}: requires {c} but does not implement it",
                w.dir
            );
        }
        assert!(!record.allowed_environments.is_empty(), "{}", w.dir);
        let blast = record.blast_radius.as_ref().expect("blast_radius");
        assert_eq!(
            u32::from(blast.data)
                + u32::from(blast.network)
                + u32::from(blast.financial)
                + u32::from(blast.time),
            w.blast,
            "{}: blast radius (WCP §9)",
            w.dir
        );
        assert!(!blast.reversibility.is_empty());
        let env = record.privilege_envelope.as_ref().expect("envelope");
        match w.egress {
            None => assert_eq!(env.network_egress, NetworkEgress::None, "{}", w.dir),
            Some(dest) => {
                assert_eq!(
                    env.network_egress,
                    NetworkEgress::Allowlist(vec![dest.to_owned()]),
                    "{}",
                    w.dir
                );
                assert!(
                    record
                        .currently_implements
                        .iter()
                        .any(|c| c == "ctrl.privilege_envelopes_required")
                );
            }
        }
        assert_eq!(env.filesystem_writes, w.writes, "{}", w.dir);
        assert!(env.secrets_access.is_empty() && env.tools.is_empty());
        assert!(
            record.attestation.is_none() && record.artifact_hash.is_none(),
            "{}: attestation is added when the package is signed, not in the template",
            w.dir
        );
        enroll(registry.path(), &text).unwrap_or_else(|e| panic!("{}: enroll refused: {e}", w.dir));
        assert!(
            registry
                .path()
                .join(record_file_name(w.worker_id).expect("file name"))
                .is_file()
        );
    }
    let loaded = RegistryDir::open(registry.path()).expect("the enrolled registry loads");
    assert_eq!(loaded.records().len(), WORKERS.len());
    let snapshot = loaded.snapshot(ControlsScope::PerWorker);
    assert_eq!(snapshot.records().len(), WORKERS.len());

    // WCP §9: the chain's blast score is 4.
    let chain: u32 = WORKERS
        .iter()
        .filter(|w| PIPELINE.contains(&w.dir))
        .map(|w| w.blast)
        .sum();
    assert_eq!(chain, 4);
}

#[test]
fn example_requests_run_through_real_processes() {
    let sample = std::fs::read(workers_dir().join("sample/document.txt")).expect("sample");
    let server = DocServer::start(sample.clone());
    for w in WORKERS {
        let pkg = Package::new(w.dir);
        let dirs = RunDirs::new(w.writes.len());
        let mut request = example(w.dir);
        if w.dir == "web_fetcher" {
            // The record's allowlist names 18080 (the demo's server); here an ephemeral port.
            assert_eq!(request["url"], "http://127.0.0.1:18080/document.txt");
            request["url"] = json!(server.url("/document.txt"));
        }
        let cid = format!("cid-example-{}", w.dir);
        let run = run_worker(&pkg, &dirs, Some(&cid), request.to_string().as_bytes());
        let out = run.ok();
        run.assert_logs(&cid);
        assert_eq!(out["correlation_id"], cid.as_str(), "{}", w.dir);
        // A package that declares its result's shape (output.schema.json) keeps to it.
        let output_schema = workers_dir().join(w.dir).join("output.schema.json");
        if output_schema.is_file() {
            let schema: Value =
                serde_json::from_str(&read(&output_schema)).expect("output.schema.json is JSON");
            let validator = jsonschema::validator_for(&schema).expect("a valid JSON Schema");
            let errors: Vec<String> = validator.iter_errors(&out).map(|e| e.to_string()).collect();
            assert!(errors.is_empty(), "{}: {errors:?} in {out}", w.dir);
        }
        match w.dir {
            "hello" => assert_eq!(out["greeting"], "Hello, Ada!"),
            "web_fetcher" => {
                assert_eq!(out["status"], 200);
                assert_eq!(out["sha256"], sha256_hex(&sample));
                assert_eq!(out["bytes"], sample.len());
            }
            "doc_chunker" => assert_eq!(out["count"], 2),
            "embedder" => {
                assert_eq!(out["dimensions"], 64);
                assert_eq!(out["embeddings"].as_array().expect("array").len(), 2);
            }
            "doc_hasher" => assert_eq!(out["chunk_count"], 2),
            "research_registrar" => {
                assert_eq!(out["created"], true);
                assert_eq!(out["records_total"], 1);
                assert!(dirs.writes[0].join("research.sqlite3").is_file());
            }
            other => panic!("unexpected worker {other}"),
        }
    }
}

#[test]
fn pipeline_end_to_end_on_the_sample_document() {
    let sample = std::fs::read(workers_dir().join("sample/document.txt")).expect("sample");
    let sample_text = String::from_utf8(sample.clone()).expect("the sample is UTF-8");
    let server = DocServer::start(sample.clone());
    let cid = "6f1d2c3b-4a59-4e68-8f7a-9b0c1d2e3f40";
    let pkgs: BTreeMap<&str, Package> = PIPELINE.iter().map(|n| (*n, Package::new(n))).collect();
    let step = |name: &str, request: &Value, dirs: &RunDirs| -> Value {
        let run = run_worker(&pkgs[name], dirs, Some(cid), request.to_string().as_bytes());
        let out = run.ok();
        run.assert_logs(cid);
        assert_eq!(out["correlation_id"], cid, "{name}");
        out
    };
    let none = RunDirs::new(0);

    // 1. cap.web.fetch
    let fetched = step(
        "web_fetcher",
        &json!({"url": server.url("/document.txt")}),
        &none,
    );
    assert_eq!(fetched["text"], sample_text.as_str());
    assert_eq!(fetched["sha256"], sha256_hex(&sample));
    assert_eq!(fetched["content_type"], "text/plain");
    let seen = server.seen.lock().expect("lock").join("");
    assert!(
        seen.to_ascii_lowercase()
            .contains(&format!("traceparent: {TRACEPARENT}")),
        "the fetcher forwards the trace context: {seen}"
    );

    // 2. cap.doc.chunk: {text: fetch.text}
    let chunked = step(
        "doc_chunker",
        &json!({"text": fetched["text"], "max_chars": 400, "overlap": 80}),
        &none,
    );
    let chunks = chunked["chunks"].as_array().expect("chunks").clone();
    assert!(chunks.len() >= 4, "the sample gives several chunks");
    let chars: Vec<char> = sample_text.chars().collect();
    for (chunk, span) in chunks
        .iter()
        .zip(chunked["spans"].as_array().expect("spans"))
    {
        let (s, e) = (
            span["start"].as_u64().expect("start") as usize,
            span["end"].as_u64().expect("end") as usize,
        );
        assert_eq!(
            chunk.as_str(),
            Some(chars[s..e].iter().collect::<String>().as_str())
        );
        assert!(e - s <= 400);
    }

    // 3. cap.ml.embed: {chunks: chunk.chunks}
    let embedded = step("embedder", &json!({"chunks": chunks}), &none);
    let embeddings = embedded["embeddings"].as_array().expect("embeddings");
    assert_eq!(embeddings.len(), chunks.len());
    for v in embeddings {
        let v = v.as_array().expect("vector");
        assert_eq!(v.len(), 64);
        let norm: f64 = v.iter().map(|x| x.as_f64().expect("number").powi(2)).sum();
        assert!((norm - 1.0).abs() < 1e-4, "unit length, got {norm}");
    }

    // 4. cap.doc.hash: {text: fetch.text, chunks: chunk.chunks}
    let hashed = step(
        "doc_hasher",
        &json!({"text": fetched["text"], "chunks": chunks}),
        &none,
    );
    assert_eq!(
        hashed["document_sha256"], fetched["sha256"],
        "UTF-8 text/plain: the text hash is the body hash"
    );
    assert_eq!(hashed["chunk_count"], chunks.len());

    // 5. cap.research.register
    let knowledge = RunDirs::new(2);
    let register = json!({
        "title": fetched["title"],
        "source_url": fetched["url"],
        "doc_sha256": hashed["document_sha256"],
        "merkle_root": hashed["merkle_root"],
        "chunks": chunks,
        "embeddings": embedded["embeddings"],
    });
    let registered = step("research_registrar", &register, &knowledge);
    assert_eq!(registered["created"], true);
    assert_eq!(registered["records_total"], 1);
    assert_eq!(registered["store_path"], "research.sqlite3");
    assert_eq!(registered["merkle_root"], hashed["merkle_root"]);
    assert!(knowledge.writes[0].join("research.sqlite3").is_file());
    assert_eq!(
        std::fs::read_dir(&knowledge.writes[1]).expect("ls").count(),
        0,
        "only the first writable directory is used"
    );

    // Idempotent: the same content is stored once, under the same record id.
    let again = step("research_registrar", &register, &knowledge);
    assert_eq!(again["record_id"], registered["record_id"]);
    assert_eq!(again["created"], false);
    assert_eq!(again["records_total"], 1);

    // Tampered chunks no longer match the hasher's Merkle root: refused, nothing stored.
    let mut tampered = register.clone();
    tampered["chunks"][0] = json!("Injected text.");
    let run = run_worker(
        &pkgs["research_registrar"],
        &knowledge,
        Some(cid),
        tampered.to_string().as_bytes(),
    );
    assert_eq!(run.code, 2, "{}", run.stdout);
    assert_eq!(run.json()["error"]["code"], "merkle_root_mismatch");

    // The store holds exactly what was registered (read back with Python's sqlite3).
    let db = knowledge.writes[0].join("research.sqlite3");
    let out = Command::new(python())
        .args([
            "-I",
            "-c",
            "import json, sqlite3, sys\n\
             db = sqlite3.connect(sys.argv[1])\n\
             print(json.dumps([db.execute('select count(*) from documents').fetchone()[0],\n\
                               db.execute('select count(*) from chunks').fetchone()[0],\n\
                               db.execute('select correlation_id from documents').fetchone()[0]]))",
        ])
        .arg(&db)
        .output()
        .expect("python3 sqlite3");
    let counts: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(counts, json!([1, chunks.len(), cid]));
}

#[test]
fn malformed_requests_get_a_json_error_and_exit_2() {
    // The protocol's corner cases (duplicate keys, NaN, bad UTF-8, deep nesting, oversize) are
    // unit-tested in-process in hello/tests/test_bootstrap.py; bootstrap.py is byte-identical in
    // every package. Here every worker's real process shows the contract.
    thread::scope(|scope| {
        for w in WORKERS {
            scope.spawn(move || {
                let pkg = Package::new(w.dir);
                let dirs = RunDirs::new(w.writes.len());
                for (stdin, code) in [
                    (&b"not json"[..], "invalid_json"),
                    (b"{\"a\": 1, \"a\": 2}", "invalid_json"),
                    (b"[1, 2]", "invalid_request"),
                    (b"{}", "invalid_request"),
                    (b"{\"unknown_field\": true}", "invalid_request"),
                ] {
                    let run = run_worker(&pkg, &dirs, Some("cid-bad"), stdin);
                    assert_eq!(
                        run.code,
                        2,
                        "{}: {:?} should exit 2, got {}: {}",
                        w.dir,
                        String::from_utf8_lossy(stdin),
                        run.code,
                        run.stderr
                    );
                    let out = run.json();
                    assert_eq!(out["error"]["code"], code, "{}: {out}", w.dir);
                    assert!(
                        out["error"]["message"]
                            .as_str()
                            .is_some_and(|m| !m.is_empty())
                    );
                    assert_eq!(out["correlation_id"], "cid-bad");
                    assert!(!run.stdout.contains("Traceback"), "{}", w.dir);
                    run.assert_logs("cid-bad");
                }
                // Without a correlation id the Hall did not start it properly: refused, still JSON.
                let run = run_worker(&pkg, &dirs, None, example(w.dir).to_string().as_bytes());
                assert_eq!(run.code, 2, "{}", w.dir);
                assert_eq!(run.json()["error"]["code"], "missing_correlation_id");
            });
        }
    });
}

#[test]
fn web_fetcher_refuses_urls_off_loopback_before_connecting() {
    let pkg = Package::new("web_fetcher");
    let dirs = RunDirs::new(0);
    // Every spelling is unit-tested in web_fetcher/tests/test_logic.py; these are the classics.
    for url in [
        "http://example.com/",
        "file:///etc/passwd",
        "http://localhost:18080/",
        "http://127.0.0.1:0/",
    ] {
        let run = run_worker(
            &pkg,
            &dirs,
            Some("cid-url"),
            json!({"url": url}).to_string().as_bytes(),
        );
        assert_eq!(run.code, 2, "{url}: {}", run.stdout);
        let code = run.json()["error"]["code"].clone();
        assert!(
            code == "url_not_allowed" || code == "invalid_request",
            "{url}: {code}"
        );
    }
    // An allowed URL with nothing listening is a failed fetch (exit 1), not a bad request.
    let port = TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port(); // bound and dropped: nothing listens there now
    let run = run_worker(
        &pkg,
        &dirs,
        Some("cid-url"),
        json!({"url": format!("http://127.0.0.1:{port}/x"), "timeout_seconds": 2})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert_eq!(run.json()["error"]["code"], "fetch_failed");
}

#[test]
fn a_404_is_a_failed_fetch() {
    let server = DocServer::start(b"x".to_vec());
    let pkg = Package::new("web_fetcher");
    let run = run_worker(
        &pkg,
        &RunDirs::new(0),
        Some("cid-404"),
        json!({"url": server.url("/missing")})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(run.code, 1);
    assert_eq!(run.json()["error"]["code"], "http_status");
}

#[test]
fn registrar_without_a_writable_dir_fails_cleanly() {
    let pkg = Package::new("research_registrar");
    let run = run_worker(
        &pkg,
        &RunDirs::new(0),
        Some("cid-nowrite"),
        example("research_registrar").to_string().as_bytes(),
    );
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert_eq!(run.json()["error"]["code"], "no_writable_dir");
}

#[test]
fn bootstrap_runs_the_way_the_envelope_runs_it() {
    // The envelope's spelling: -E -s -B -X pycache_prefix=DIR /abs/code/bootstrap.py, with the
    // per-run work directory as cwd (not the package root).
    let pkg = Package::new("hello");
    let dirs = RunDirs::new(0);
    let mut cmd = Command::new(python());
    cmd.arg("-E")
        .arg("-s")
        .arg("-B")
        .arg("-X")
        .arg(format!(
            "pycache_prefix={}",
            dirs.home.join("pycache").display()
        ))
        .arg(pkg.root.join("code/bootstrap.py"))
        .current_dir(&dirs.work)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("LANG", "C.UTF-8")
        .env("LC_ALL", "C.UTF-8")
        .env("HOME", &dirs.work)
        .env("TMPDIR", &dirs.home)
        .env("WCP_CORRELATION_ID", "cid-envelope")
        .env("TRACEPARENT", TRACEPARENT)
        .env("WCP_WORK_DIR", &dirs.work)
        .env("WCP_WRITE_DIRS", "");
    let run = spawn(cmd, &pkg, br#"{"name": "Hall"}"#);
    pkg.assert_untouched("hello");
    assert_eq!(
        run.ok(),
        json!({"greeting": "Hello, Hall!", "correlation_id": "cid-envelope"})
    );
    assert_eq!(
        std::fs::read_dir(&dirs.work).expect("ls").count(),
        0,
        "nothing written to the work directory either"
    );
}

#[test]
fn package_protection_catches_a_write() {
    // The protection used above must be able to fail: a process that writes into the package is
    // stopped by the read-only mount (or mode bits), and if it were not, the snapshot sees it.
    let pkg = Package::new("hello");
    let mut cmd = Command::new(python());
    cmd.args([
        "-I",
        "-c",
        "import sys\ntry:\n    open('planted.txt', 'w').write('x')\nexcept OSError:\n    sys.exit(3)\n",
    ])
    .current_dir(&pkg.root)
    .env_clear()
    .env("PATH", "/usr/bin:/bin");
    let run = spawn(cmd, &pkg, b"");
    if mount_protection() || !is_root() {
        assert_eq!(run.code, 3, "the write must be refused by the kernel");
        pkg.assert_untouched("the refused write");
    } else {
        assert_eq!(run.code, 0);
        let caught = std::panic::catch_unwind(|| pkg.assert_untouched("the write"));
        assert!(
            caught.is_err(),
            "the snapshot comparison must notice the planted file"
        );
    }
}

#[test]
fn sample_document_is_a_few_paragraphs_of_utf8() {
    let text = read(&workers_dir().join("sample/document.txt"));
    let paragraphs = text.split("\n\n").filter(|p| !p.trim().is_empty()).count();
    assert!((3..=10).contains(&paragraphs), "{paragraphs} paragraphs");
    assert!(text.len() < 8 * 1024, "keep the sample short");
}

/// The native hello worker (workers/hello_native) speaks the same protocol as the Python
/// bootstrap: result or error object on stdout with the correlation id, exit 0/2.
#[test]
fn the_native_hello_worker_speaks_the_worker_protocol() {
    let run = |stdin: &[u8], cid: Option<&str>| -> (i32, Value, String) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_wcp-hello-native"));
        cmd.env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(cid) = cid {
            cmd.env("WCP_CORRELATION_ID", cid);
        }
        let mut child = cmd.spawn().expect("spawn wcp-hello-native");
        // The worker may answer and exit before reading stdin (a missing correlation id is
        // checked first): a broken pipe here is its answer arriving early, not a failure.
        if let Err(e) = child.stdin.take().unwrap().write_all(stdin) {
            assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{e}");
        }
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8(out.stdout).unwrap();
        assert!(stdout.ends_with('\n'), "one JSON line: {stdout:?}");
        (
            out.status.code().unwrap_or(-1),
            serde_json::from_str(&stdout).expect("stdout is one JSON object"),
            String::from_utf8(out.stderr).unwrap(),
        )
    };
    let (code, out, log) = run(br#"{"name": "  Ada   Lovelace "}"#, Some("cid-1"));
    assert_eq!(code, 0, "{out} {log}");
    assert_eq!(
        out,
        json!({"greeting": "Hello, Ada Lovelace!", "correlation_id": "cid-1"})
    );
    let record: Value = serde_json::from_str(log.lines().next().unwrap()).unwrap();
    assert_eq!(record["worker"], "wrk.hello.native");
    assert_eq!(record["correlation_id"], "cid-1");
    assert!(record["ts"].as_str().unwrap().ends_with('Z'), "{record}");

    for (stdin, code) in [
        (&br#"{"name": "Ada", "extra": 1}"#[..], "invalid_request"),
        (br#"{"name": "Ada", "name": "Bob"}"#, "invalid_request"),
        (br#"{"name": "   "}"#, "invalid_request"),
        (br#"{"name": "A\u0007"}"#, "invalid_request"),
        (br#"{"name": 5}"#, "invalid_request"),
        (br#"[1]"#, "invalid_request"),
        (br#"{"name": "#, "invalid_json"),
        (b"", "invalid_json"),
        (b"\xff", "invalid_json"),
    ] {
        let (exit, out, _) = run(stdin, Some("cid-2"));
        assert_eq!(exit, 2, "{}: {out}", String::from_utf8_lossy(stdin));
        assert_eq!(
            out["error"]["code"],
            code,
            "{}: {out}",
            String::from_utf8_lossy(stdin)
        );
        assert_eq!(out["correlation_id"], "cid-2");
    }
    let long = format!(r#"{{"name": "{}"}}"#, "x".repeat(101));
    assert_eq!(
        run(long.as_bytes(), Some("c")).1["error"]["code"],
        "invalid_request"
    );
    let (exit, out, _) = run(br#"{"name": "Ada"}"#, None);
    assert_eq!(
        (exit, &out["error"]["code"]),
        (2, &json!("missing_correlation_id"))
    );
    assert_eq!(out["correlation_id"], Value::Null);
    let (exit, out, _) = run(br#"{"name": "Ada"}"#, Some("has space"));
    assert_eq!(
        (exit, &out["error"]["code"]),
        (2, &json!("invalid_correlation_id"))
    );
}
