//! Python virtual environments the tests drive real outside tools with (the MCP SDK, PyPI
//! `opentelemetry-proto`, securesystemslib), made once under target/.

use std::path::PathBuf;
use std::process::Command;

use crate::hall_support::repo;

/// A Python virtual environment under target/ with `requirements` (pip requirement lines)
/// installed, made once and reused while the requirements stay the same (the directory is
/// `target/<name>-venv-<hash of the requirements>`); `probe` is Python code that must run in it.
/// Fails loudly, never skips, when it cannot be built, e.g. without PyPI. Safe to call from
/// tests running at once: one builds, the others wait for it.
pub fn python_venv(name: &str, requirements: &str, probe: &str) -> PathBuf {
    use sha2::{Digest, Sha256};
    let tag = wcp_hall::common::hex(&Sha256::digest(requirements.as_bytes()))[..16].to_owned();
    let venv = repo(&format!("target/{name}-venv-{tag}"));
    let python = venv.join("bin/python");
    let ready = || {
        Command::new(&python)
            .args(["-c", probe])
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if ready() {
        return venv;
    }
    // Tests run in parallel: the first one builds the venv while the others wait on its lock,
    // then find it ready (without the lock, one would run pip in a venv another is creating).
    let lock = std::fs::File::create(repo(&format!("target/{name}-venv-{tag}.lock")))
        .expect("create the venv's lock file under target/");
    let _lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .expect("lock the venv's lock file");
    if ready() {
        return venv;
    }
    let o = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .output()
        .expect("python3 must be installed (.ci/run installs it)");
    assert!(
        o.status.success(),
        "python3 -m venv failed (install python3-venv): {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let req = venv.join("requirements.txt");
    std::fs::write(&req, requirements).unwrap();
    let o = Command::new(venv.join("bin/pip"))
        .args(["install", "--quiet", "--disable-pip-version-check", "-r"])
        .arg(&req)
        .output()
        .expect("run pip");
    assert!(
        o.status.success() && ready(),
        "cannot install {requirements:?} into {}: is PyPI reachable?\n{}{}",
        venv.display(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    venv
}
