//! Shared fixtures for the envelope tests: a world-readable temporary "store" of packages, a
//! Hall-owned runs directory, a cgroup v2 parent, and requests with small limits.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use wcp_hall::envelope::{
    Envelope, HostConfig, Identity, Limits, Minimums, PythonRuntime, RunRequest,
};
use wcp_hall::registry::{NetworkEgress, PrivilegeEnvelope};

pub struct Fixture {
    pub root: tempfile::TempDir,
    pub store: PathBuf,
    pub runs: PathBuf,
    pub secrets: PathBuf,
}

pub fn fixture() -> Fixture {
    let root = tempfile::Builder::new()
        .prefix("wcp-env-")
        .tempdir()
        .unwrap();
    fs::set_permissions(root.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let store = root.path().join("store");
    let runs = root.path().join("runs");
    let secrets = root.path().join("secrets");
    fs::create_dir(&store).unwrap();
    fs::set_permissions(&store, fs::Permissions::from_mode(0o755)).unwrap();
    fs::create_dir(&secrets).unwrap();
    fs::set_permissions(&secrets, fs::Permissions::from_mode(0o700)).unwrap();
    Fixture {
        root,
        store,
        runs,
        secrets,
    }
}

/// The cgroup v2 directory the tests create leaves in.
pub fn cgroup_parent() -> Option<PathBuf> {
    let mount = wcp_hall::envelope::cgroup::v2_mount()?;
    let dir = mount.join("wcp-hall-tests");
    fs::create_dir_all(&dir).ok()?;
    Some(dir)
}

impl Fixture {
    pub fn host(&self) -> HostConfig {
        let mut host = HostConfig::new(&self.runs);
        host.secrets_dir = Some(self.secrets.clone());
        host.cgroup_parent = cgroup_parent();
        host.kill_grace_ms = 200;
        host.drain_timeout_ms = 1000;
        host
    }

    pub fn envelope(&self) -> Envelope {
        Envelope::new(self.host()).unwrap()
    }

    /// A package `name` whose code/bootstrap.py is `source` (plus extra files).
    pub fn package(&self, name: &str, source: &str) -> PathBuf {
        let dir = self.store.join(name);
        write_tree(&dir, &[("code/bootstrap.py", source)]);
        dir
    }

    /// Copies tests/hostile/<name> into the store.
    pub fn hostile(&self, name: &str) -> PathBuf {
        let src = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/hostile")
            .join(name);
        let dst = self.store.join(name);
        copy_tree(&src, &dst);
        dst
    }
}

pub fn write_tree(dir: &Path, files: &[(&str, &str)]) {
    for (rel, text) in files {
        let path = dir.join(rel);
        let mut p = path.parent().unwrap().to_path_buf();
        fs::create_dir_all(&p).unwrap();
        while p.starts_with(dir) {
            fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
            if !p.pop() {
                break;
            }
        }
        fs::write(&path, text).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    }
}

pub fn copy_tree(src: &Path, dst: &Path) {
    fs::create_dir_all(dst).unwrap();
    fs::set_permissions(dst, fs::Permissions::from_mode(0o755)).unwrap();
    for entry in fs::read_dir(src).unwrap() {
        let entry = entry.unwrap();
        let to = dst.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &to);
        } else {
            fs::copy(entry.path(), &to).unwrap();
            fs::set_permissions(&to, fs::Permissions::from_mode(0o644)).unwrap();
        }
    }
}

/// A distinct unprivileged uid per run, so RLIMIT_NPROC and process scans are per test.
pub fn next_identity(base: u32) -> Identity {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    Identity {
        uid: base + n,
        gid: base + n,
    }
}

pub fn small_limits() -> Limits {
    Limits {
        wall_timeout_ms: 10_000,
        cpu_seconds: 10,
        memory_bytes: 512 << 20,
        max_processes: 32,
        max_open_files: 64,
        max_file_size_bytes: 1 << 20,
        max_output_bytes: 64 << 10,
    }
}

pub fn declared(writes: &[&str], egress: NetworkEgress, secrets: &[&str]) -> PrivilegeEnvelope {
    PrivilegeEnvelope {
        secrets_access: secrets.iter().map(|s| s.to_string()).collect(),
        network_egress: egress,
        filesystem_writes: writes.iter().map(|s| s.to_string()).collect(),
        tools: Vec::new(),
    }
}

/// This machine's default Python runtime, probed once as `nobody` (what the Hall does).
pub fn python() -> &'static PythonRuntime {
    static PYTHON: std::sync::OnceLock<PythonRuntime> = std::sync::OnceLock::new();
    PYTHON.get_or_init(|| {
        PythonRuntime::probe(None, Some(Identity::NOBODY)).expect("a Python runtime to probe")
    })
}

pub fn request(
    pkg: &Path,
    envelope: PrivilegeEnvelope,
    payload: &str,
    uid_base: u32,
) -> RunRequest {
    let mut req = RunRequest::python(
        pkg,
        envelope,
        payload.as_bytes().to_vec(),
        "corr-test-1",
        python(),
    );
    req.limits = small_limits();
    req.minimums = Minimums::production();
    req.identity = Some(next_identity(uid_base));
    req
}

/// Runs `req` twice, as the Hall can: cold (protocol 1, started when the request arrives) and
/// warm (protocol 2: started ahead of its request, which then arrives in its frame). The
/// hostile-worker tests assert the same of both: a warm instance has exactly a cold run's
/// envelope. The hostile packages read their request from the frame under protocol 2.
pub fn cold_and_warm(
    env: &Envelope,
    req: &RunRequest,
) -> Vec<(&'static str, wcp_hall::envelope::RunOutcome)> {
    let cold = env.run(req).expect("the cold run");
    assert_eq!(cold.report.instance.kind, "cold");
    let mut warm_req = req.clone();
    warm_req.protocol = wcp_hall::envelope::WorkerProtocol::V2;
    let instance = env
        .start_warm(&warm_req, std::time::Duration::from_secs(10))
        .expect("the warm instance starts");
    // It waits for its request a moment, as in the Hall's pool.
    std::thread::sleep(std::time::Duration::from_millis(50));
    let warm = instance.run(env, &warm_req).expect("the warm run");
    assert_eq!(warm.report.instance.kind, "warm");
    vec![("cold", cold), ("warm", warm)]
}

/// Pids of live (non-zombie) processes owned by `uid`.
pub fn processes_of(uid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(status) = fs::read_to_string(format!("/proc/{pid}/status")) else {
            continue;
        };
        let uid_line = status.lines().find(|l| l.starts_with("Uid:"));
        let state = status
            .lines()
            .find(|l| l.starts_with("State:"))
            .unwrap_or("");
        if state.contains("Z (zombie)") {
            continue;
        }
        if let Some(l) = uid_line
            && l.split_whitespace().nth(1) == Some(&uid.to_string())
        {
            out.push(pid);
        }
    }
    out
}
