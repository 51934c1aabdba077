//! docs/verify.md, run for real: the operator block with `wcp-hall`, then every auditor block
//! with openssl, curl and Python (securesystemslib from PyPI in a venv cached under target/)
//! and no `wcp-hall` on the PATH, on the evidence of a real Hall run (`wcp-hall demo --keep`,
//! then `serve` on its directory). Then again on tampered evidence, which must fail.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::hall_support::{BIN, repo};
use serde_json::Value;

/// The text between `<!-- NAME:begin -->` and `<!-- NAME:end -->`.
fn between<'a>(doc: &'a str, name: &str) -> &'a str {
    let begin = format!("<!-- {name}:begin -->");
    let end = format!("<!-- {name}:end -->");
    let start = doc.find(&begin).unwrap_or_else(|| panic!("{begin}")) + begin.len();
    let stop = start + doc[start..].find(&end).unwrap_or_else(|| panic!("{end}"));
    &doc[start..stop]
}

/// The bodies of the fenced blocks with `lang` in `text`, in order.
fn blocks(text: &str, lang: &str) -> Vec<String> {
    let fence = format!("```{lang}\n");
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find(&fence) {
        let body = &rest[i + fence.len()..];
        let j = body.find("\n```").expect("closing fence");
        out.push(body[..j + 1].to_owned());
        rest = &body[j + 4..];
    }
    out
}

fn doc(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap()
}

/// A venv with the requirements of docs/verify.md (see `python_venv`).
fn venv(requirements: &str) -> PathBuf {
    crate::venv::python_venv(
        "verify-doc",
        requirements,
        "import securesystemslib.dsse, securesystemslib.signer, cryptography",
    )
}

fn bash(script: &str, cwd: &Path, env: &[(&str, &Path)], path: &str) -> Output {
    let mut cmd = Command::new("bash");
    cmd.args(["-euo", "pipefail", "-c", script])
        .current_dir(cwd)
        .env_clear()
        .env("PATH", path)
        .env("HOME", cwd)
        .env("LANG", "C.UTF-8")
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let o = cmd.output().expect("run bash");
    eprintln!(
        "--- exit {:?}\n{}{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

/// `wcp-hall serve` on a demo directory, stopped on drop.
struct Serve(Child);

impl Serve {
    fn start(dir: &Path) -> Self {
        let child = Command::new(BIN)
            .args(["serve", "--config"])
            .arg(dir.join("hall.toml"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn wcp-hall serve");
        let socket = dir.join("hall.sock");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(mut s) = std::os::unix::net::UnixStream::connect(&socket) {
                let _ = s.write_all(b"GET /_ping HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n");
                let mut out = String::new();
                let _ = s.read_to_string(&mut out);
                if out.starts_with("HTTP/1.1 200") {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "the Hall did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Serve(child)
    }

    fn stop(mut self) {
        self.terminate();
    }

    /// One dispatch the router denies (an unknown capability): a receipt, so the log grows.
    fn dispatch_denied(&self, dir: &Path) {
        let body = serde_json::json!({"capability_id": "cap.unknown.thing", "env": "dev",
            "data_label": "PUBLIC", "tenant_risk": "low", "qos_class": "P2", "tenant_id": "demo",
            "correlation_id": "7d1c2a52-5a4f-4a55-9a7e-0d7f1c1e2b3a", "request": {}})
        .to_string();
        let mut s = std::os::unix::net::UnixStream::connect(dir.join("hall.sock")).unwrap();
        write!(
            s,
            "POST /wcp/dispatch HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        assert!(out.contains("\"denied\""), "{out}");
    }

    fn terminate(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = self.0.wait();
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            self.terminate();
        }
    }
}

#[test]
fn the_auditor_walkthrough_verifies_a_real_halls_evidence_without_the_binary() {
    let verify_md = doc("docs/verify.md");
    let requirements = blocks(between(&verify_md, "verify-requirements"), "text").concat();
    assert!(requirements.contains("securesystemslib"), "{requirements}");
    let venv = venv(&requirements);

    // A real Hall run: the demo dispatches real workers and keeps its directory.
    let o = Command::new(BIN)
        .args(["--json", "demo", "--keep"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let hall_dir = String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["step"] == "cleanup")
        .and_then(|v| v["dir"].as_str().map(PathBuf::from))
        .expect("the demo's directory");
    let _cleanup = scopeguard(hall_dir.clone());

    let tmp = tempfile::tempdir().unwrap();
    let evidence = tmp.path().join("evidence");
    std::fs::create_dir(&evidence).unwrap();
    // The auditor kept the checkpoint of the demo's end; the Hall then ran on (a start, one
    // more receipt, a clean stop, which checkpoints again) and runs now.
    std::fs::copy(
        hall_dir.join("state/receipts/checkpoint"),
        evidence.join("old-checkpoint.txt"),
    )
    .unwrap();
    let first = Serve::start(&hall_dir);
    first.dispatch_denied(&hall_dir);
    first.stop();
    let serve = Serve::start(&hall_dir);

    let system_path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
    let bin_dir = Path::new(BIN).parent().unwrap();
    let operator = blocks(between(&verify_md, "verify-operator"), "sh").concat();
    let o = bash(
        &operator,
        tmp.path(),
        &[("HALL_DIR", &hall_dir), ("EVIDENCE", &evidence)],
        &format!("{}:{system_path}", bin_dir.display()),
    );
    assert!(o.status.success(), "the operator block failed");

    // The auditor: the awp.v1 reference from attestation.md, the venv, no wcp-hall.
    let reference = blocks(
        between(&doc("docs/attestation.md"), "awp-v1-reference"),
        "python",
    )
    .concat();
    std::fs::write(evidence.join("awp_v1.py"), reference).unwrap();
    let auditor = blocks(between(&verify_md, "verify"), "sh").concat();
    let auditor_path = format!("{}:{system_path}", venv.join("bin").display());
    let socket = hall_dir.join("hall.sock");
    let audit = |dir: &Path| {
        bash(
            &auditor,
            tmp.path(),
            &[("EVIDENCE", dir), ("HALL_SOCKET", &socket)],
            &auditor_path,
        )
    };
    assert!(
        !Command::new("bash")
            .args(["-c", "command -v wcp-hall"])
            .env_clear()
            .env("PATH", &auditor_path)
            .status()
            .unwrap()
            .success(),
        "the auditor must not have wcp-hall"
    );
    let o = audit(&evidence);
    assert!(
        o.status.success(),
        "the walkthrough failed on genuine evidence"
    );
    let out = String::from_utf8_lossy(&o.stdout);
    for expected in [
        "ED25519 Public-Key",
        "package OK:",
        "receipt OK: seq 1",
        "Signature Verified Successfully",
        "inclusion OK: seq 1",
        "consistency OK:",
    ] {
        assert!(out.contains(expected), "{expected:?} missing from:\n{out}");
    }

    // Tampered evidence: each copy has one change, and the walkthrough must fail.
    let tampered = |name: &str, change: &dyn Fn(&Path)| {
        let dir = tmp.path().join(format!("tampered-{name}"));
        copy_tree(&evidence, &dir);
        change(&dir);
        let o = audit(&dir);
        assert!(
            !o.status.success(),
            "tampered evidence ({name}) passed the walkthrough"
        );
        String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr)
    };
    let out = tampered("package", &|d| {
        let f = d.join("package/code/worker_logic.py");
        let mut text = std::fs::read_to_string(&f).unwrap();
        text.push('\n');
        std::fs::write(f, text).unwrap();
    });
    assert!(out.contains("differs from the signed one"), "{out}");
    let out = tampered("receipt", &|d| {
        let f = d.join("receipt.json");
        let mut line: Value = serde_json::from_slice(&std::fs::read(&f).unwrap()).unwrap();
        let sig = line["envelope"]["signatures"][0]["sig"]
            .as_str()
            .unwrap()
            .to_owned();
        let flipped = flip_base64(&sig);
        line["envelope"]["signatures"][0]["sig"] = Value::from(flipped);
        std::fs::write(f, line.to_string()).unwrap();
    });
    assert!(!out.contains("receipt OK"), "{out}");
    let out = tampered("inclusion", &|d| {
        let f = d.join("inclusion.tlog");
        let text = std::fs::read_to_string(&f).unwrap();
        let hash = text.lines().nth(2).unwrap().to_owned();
        std::fs::write(&f, text.replacen(&hash, &flip_base64(&hash), 1)).unwrap();
    });
    assert!(
        out.contains("receipt OK") && !out.contains("inclusion OK"),
        "{out}"
    );
    let out = tampered("old-checkpoint", &|d| {
        // A checkpoint of another history: same size, another root, so unsigned.
        let f = d.join("old-checkpoint.txt");
        let text = std::fs::read_to_string(&f).unwrap();
        let root = text.lines().nth(2).unwrap().to_owned();
        std::fs::write(&f, text.replacen(&root, &flip_base64(&root), 1)).unwrap();
    });
    assert!(
        out.contains("inclusion OK") && !out.contains("consistency OK"),
        "{out}"
    );
    let out = tampered("consistency", &|d| {
        // Genuine, signed checkpoints; one flipped bit in the proof between them.
        let f = d.join("consistency.txt");
        let text = std::fs::read_to_string(&f).unwrap();
        let hash = text
            .lines()
            .nth(1)
            .filter(|l| !l.is_empty())
            .unwrap()
            .to_owned();
        std::fs::write(&f, text.replacen(&hash, &flip_base64(&hash), 1)).unwrap();
    });
    assert!(out.contains("the log did not just grow"), "{out}");
    drop(serve);
}

/// Flips one bit of the first byte a base64 string encodes.
fn flip_base64(text: &str) -> String {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    let mut raw = STANDARD.decode(text).unwrap();
    raw[0] ^= 1;
    STANDARD.encode(raw)
}

fn copy_tree(from: &Path, to: &Path) {
    let o = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .output()
        .unwrap();
    assert!(o.status.success());
}

/// Removes the demo's directory when the test ends, passed or not.
fn scopeguard(dir: PathBuf) -> impl Drop {
    struct Guard(PathBuf);
    impl Drop for Guard {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    Guard(dir)
}
