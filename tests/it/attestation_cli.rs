//! The `wcp-hall attest` commands end to end: the real binary, real files, exit codes, stdout.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use crate::attestation_support::*;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_wcp-hall");

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("WCP_HALL_CONFIG")
        .env("WCP_ATTEST_HMAC_KEY", "must-never-be-used")
        .output()
        .expect("spawn wcp-hall")
}

fn code(o: &Output) -> i32 {
    o.status.code().expect("exited normally")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn scaffold_then_hash_prints_pyhalls_digest_and_nothing_else() {
    let tmp = tempfile::tempdir().unwrap();
    let pkg = tmp.path().join("pkg");
    let o = run(&["attest", "scaffold", p(&pkg)]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(
        stdout(&o).contains("a6eeb3dd3aafc410838802130e3675527dcceadf6d2b1e817e2b97f62abf3bb6")
    );
    let o = run(&["attest", "hash", p(&pkg)]);
    assert_eq!(code(&o), 0);
    assert_eq!(
        stdout(&o),
        "a6eeb3dd3aafc410838802130e3675527dcceadf6d2b1e817e2b97f62abf3bb6\n"
    );
    assert_eq!(stderr(&o), "");
    let o = run(&["--json", "attest", "hash", p(&pkg)]);
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["files"], 4);
    // Scaffolding again would replace the logic: refused.
    let o = run(&["attest", "scaffold", p(&pkg)]);
    assert_eq!(code(&o), 74);
    assert!(stderr(&o).contains("--overwrite"));
}

#[test]
fn hash_of_an_unsafe_tree_exits_2_with_a_clear_message() {
    let tmp = tempfile::tempdir().unwrap();
    sample_package(tmp.path());
    std::os::unix::fs::symlink("/etc/passwd", tmp.path().join("code/passwd")).unwrap();
    let o = run(&["attest", "hash", p(tmp.path())]);
    assert_eq!(code(&o), 2);
    assert_eq!(stdout(&o), "");
    let err = stderr(&o);
    assert!(
        err.contains("code/passwd") && err.contains("symbolic link"),
        "{err}"
    );
    assert!(err.contains("hint:"), "{err}");
    let o = run(&["attest", "hash", p(&tmp.path().join("missing"))]);
    assert_eq!(code(&o), 66, "{}", stderr(&o));
    let o = run(&["attest", "hash", "/etc/passwd"]);
    assert_eq!(code(&o), 2);
}

#[test]
fn keygen_sign_verify_awp_v2_with_a_store() {
    let tmp = tempfile::tempdir().unwrap();
    let pkg = tmp.path().join("pkg");
    sample_package(&pkg);
    let key = tmp.path().join("release.key");
    let o = run(&["--json", "keygen-via-attest-placeholder"]);
    assert_eq!(code(&o), 2, "unknown commands are usage errors");
    let o = run(&["--json", "attest", "keygen", p(&key)]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let kg: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // Never overwritten.
    let o = run(&["attest", "keygen", p(&key)]);
    assert_eq!(code(&o), 74);
    assert!(stderr(&o).contains("never overwritten"), "{}", stderr(&o));
    // A missing directory is said to be missing, not "choose a new path".
    let nowhere = tmp.path().join("no-such-dir/release.key");
    let o = run(&["keygen", p(&nowhere)]);
    assert_eq!(code(&o), 74);
    assert!(
        stderr(&o).contains("does not exist; create it first"),
        "{}",
        stderr(&o)
    );
    assert!(!stderr(&o).contains("never overwritten"), "{}", stderr(&o));

    let trust = tmp.path().join("trust.json");
    std::fs::write(
        &trust,
        serde_json::json!({
            "schema": "wcp-hall-trust/1", "version": 1,
            "namespaces": {"org.example": {"threshold": 1, "keys": [kg["trust_policy_entry"]]}}
        })
        .to_string(),
    )
    .unwrap();
    let o = run(&["attest", "check-trust", p(&trust)]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).contains("org.example: 1 of 1 key(s)"));

    let o = run(&[
        "attest",
        "sign",
        p(&pkg),
        "--worker-id",
        "org.example.sum.i-1",
        "--species",
        "wrk.doc.summarizer",
        "--worker-version",
        "1.2.0",
        "--key",
        p(&key),
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(pkg.join("manifest.sig").exists());
    let digest = stdout(&run(&["attest", "hash", p(&pkg)])).trim().to_owned();
    assert!(stdout(&o).contains(&digest));

    let store = tmp.path().join("store");
    let verify = |extra: &[&str]| {
        let mut args = vec![
            "attest",
            "verify",
            p(&pkg),
            "--worker-id",
            "org.example.sum.i-1",
            "--species",
            "wrk.doc.summarizer",
            "--trust",
            p(&trust),
            "--store",
            p(&store),
        ];
        args.extend_from_slice(extra);
        run(&args)
    };
    let o = verify(&[]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains(&format!(
        "run from: {}",
        store.join(format!("sha256-{digest}")).display()
    )));
    let o = run(&[
        "--json",
        "attest",
        "verify",
        p(&pkg),
        "--worker-id",
        "org.example.sum.i-1",
        "--species",
        "wrk.doc.summarizer",
        "--trust",
        p(&trust),
    ]);
    let report: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(report["ok"], true);
    assert_eq!(report["format"], "awp.v2");
    assert_eq!(report["signer_key_ids"][0], kg["key_id"]);
    assert!(
        report["protections"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["id"] == "verified_copy" && p["status"] == "not_applied")
    );

    // Another worker id, a changed file: denied with exit 1 and the code.
    let o = run(&[
        "attest",
        "verify",
        p(&pkg),
        "--worker-id",
        "org.example.other.i-1",
        "--species",
        "wrk.doc.summarizer",
        "--trust",
        p(&trust),
    ]);
    assert_eq!(code(&o), 1);
    assert!(
        stdout(&o).starts_with("denied: ATTEST_MANIFEST_ID_MISMATCH"),
        "{}",
        stdout(&o)
    );
    put(&pkg, "code/worker_logic.py", b"def run():\n    return 0\n");
    let o = verify(&["--json"]);
    assert_eq!(code(&o), 1);
    let report: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(report["code"], "ATTEST_HASH_MISMATCH");
    assert_eq!(report["meta"]["expected_hash"], digest.as_str());

    // A broken trust policy is a configuration error.
    std::fs::write(&trust, "{}").unwrap();
    assert_eq!(code(&verify(&[])), 78);
}

#[test]
fn sign_and_verify_awp_v1_with_a_key_file_never_the_environment() {
    let tmp = tempfile::tempdir().unwrap();
    let pkg = tmp.path().join("pkg");
    sample_package(&pkg);
    let (key, _) = hmac_key_file(tmp.path(), "test-secret-key");
    let o = run(&[
        "attest",
        "sign",
        p(&pkg),
        "--format",
        "v1",
        "--worker-id",
        "org.example.my-worker.instance-1",
        "--species",
        "wrk.example.my-worker",
        "--worker-version",
        "1.0.0",
        "--hmac-key-file",
        p(&key),
        "--built-at",
        "2026-01-02T03:04:05Z",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(pkg.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["schema_version"], "awp.v1");
    assert_eq!(manifest["built_at_utc"], "2026-01-02T03:04:05Z");
    let verify = |extra: &[&str]| {
        let mut args = vec![
            "attest",
            "verify",
            p(&pkg),
            "--worker-id",
            "org.example.my-worker.instance-1",
            "--species",
            "wrk.example.my-worker",
        ];
        args.extend_from_slice(extra);
        run(&args)
    };
    assert_eq!(code(&verify(&["--hmac-key-file", p(&key)])), 0);
    // WCP_ATTEST_HMAC_KEY is set in the environment of every run: it is never used.
    let o = verify(&[]);
    assert_eq!(code(&o), 1);
    assert!(
        stdout(&o).contains("ATTEST_SIGNATURE_MISSING"),
        "{}",
        stdout(&o)
    );
    // A key file others can read is refused.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = verify(&["--hmac-key-file", p(&key)]);
    assert_eq!(code(&o), 65);
    assert!(stderr(&o).contains("chmod 600"));
}

#[test]
fn sign_refuses_bad_inputs_with_usage_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let pkg = tmp.path().join("pkg");
    sample_package(&pkg);
    let base = [
        "attest",
        "sign",
        p(&pkg),
        "--species",
        "wrk.x.y",
        "--worker-version",
        "1",
    ];
    let with = |extra: &[&str]| {
        let mut a = base.to_vec();
        a.extend_from_slice(extra);
        run(&a)
    };
    let o = with(&["--worker-id", "org.example.w.1"]);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("keygen"), "{}", stderr(&o));
    let o = with(&["--worker-id", "wrk.example.w", "--key", "/nonexistent"]);
    assert_eq!(code(&o), 66, "{}", stderr(&o));
    let o = with(&["--worker-id", "org.example.w.1", "--built-at", "yesterday"]);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("YYYY-MM-DDTHH:MM:SSZ"));
}

/// The fenced block between `<!-- NAME:begin -->` and `<!-- NAME:end -->` of a document.
fn doc_block(doc: &str, name: &str) -> String {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(doc)).unwrap();
    let begin = format!("<!-- {name}:begin -->");
    let end = format!("<!-- {name}:end -->");
    let start = text.find(&begin).expect("begin marker") + begin.len();
    let stop = start + text[start..].find(&end).expect("end marker");
    let block = &text[start..stop];
    let body = block.split_once("```python\n").expect("a python block").1;
    body.rsplit_once("```").expect("closing fence").0.to_owned()
}

#[test]
fn the_documented_awp_v1_reference_hash_equals_the_halls() {
    let tmp = tempfile::tempdir().unwrap();
    let script = tmp.path().join("awp_v1.py");
    std::fs::write(
        &script,
        doc_block("docs/attestation.md", "awp-v1-reference"),
    )
    .unwrap();
    let reference = |pkg: &Path| {
        let o = Command::new("python3")
            .arg(&script)
            .arg(pkg)
            .output()
            .expect("python3 runs");
        assert!(o.status.success(), "{}", stderr(&o));
        stdout(&o).trim().to_owned()
    };
    let hall = |pkg: &Path| {
        let o = run(&["attest", "hash", p(pkg)]);
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        stdout(&o).trim().to_owned()
    };
    // A real bundled worker package, and one with every ordering and exclusion rule in it.
    let bundled = Path::new(env!("CARGO_MANIFEST_DIR")).join("workers/doc_chunker");
    assert!(bundled.is_dir(), "{}", bundled.display());
    assert_eq!(reference(&bundled), hall(&bundled));
    let pkg = tmp.path().join("pkg");
    sample_package(&pkg);
    put(&pkg, "a/b.txt", b"1");
    put(&pkg, "a-b.txt", b"2");
    put(&pkg, "a.txt", b"3");
    put(&pkg, "Z/\u{e9}t\u{e9}.txt", "é".as_bytes());
    put(&pkg, "code/__pycache__/x.cpython-311.pyc", b"planted");
    put(&pkg, "code/y.pyc", b"planted");
    put(&pkg, "sub/.git/config", b"x");
    put(&pkg, "sub/manifest.json", b"{}");
    put(&pkg, "dir.pyc/kept.txt", b"kept");
    std::fs::create_dir_all(pkg.join("empty")).unwrap();
    let digest = hall(&pkg);
    assert_eq!(reference(&pkg), digest);
    // The comparison can fail: one changed byte changes both, and they still agree.
    put(&pkg, "a/b.txt", b"9");
    assert_ne!(hall(&pkg), digest);
    assert_eq!(reference(&pkg), hall(&pkg));
}

#[test]
fn awp_v2_names_its_digest_and_manifests_signed_with_the_old_sha256_name_still_verify() {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    let tmp = tempfile::tempdir().unwrap();
    let pkg = tmp.path().join("pkg");
    sample_package(&pkg);
    let key = tmp.path().join("release.key");
    let o = run(&["--json", "keygen", p(&key)]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let kg: Value = serde_json::from_str(&stdout(&o)).unwrap();
    let trust = tmp.path().join("trust.json");
    std::fs::write(
        &trust,
        serde_json::json!({
            "schema": "wcp-hall-trust/1", "version": 1,
            "namespaces": {"org.example": {"threshold": 1, "keys": [kg["trust_policy_entry"]]}}
        })
        .to_string(),
    )
    .unwrap();
    let (wid, species) = ("org.example.sum.i-1", "wrk.doc.summarizer");
    let o = run(&[
        "attest",
        "sign",
        p(&pkg),
        "--worker-id",
        wid,
        "--species",
        species,
        "--worker-version",
        "1.0.0",
        "--key",
        p(&key),
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let digest = stdout(&run(&["attest", "hash", p(&pkg)])).trim().to_owned();
    let manifest = pkg.join("manifest.sig");
    let env: Value = serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
    let payload = STANDARD.decode(env["payload"].as_str().unwrap()).unwrap();
    let statement: Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(
        statement["subject"][0]["digest"],
        serde_json::json!({"awpV1TreeSha256": digest})
    );
    let verify = || {
        run(&[
            "attest",
            "verify",
            p(&pkg),
            "--worker-id",
            wid,
            "--species",
            species,
            "--trust",
            p(&trust),
        ])
    };
    assert_eq!(code(&verify()), 0);
    // The same statement as the Hall signed it before the rename, signed by the same key.
    let resign = |payload: &[u8]| {
        let pair = wcp_hall::crypto::KeyPair::read(&key).unwrap();
        let env = wcp_hall::crypto::Envelope::sign(
            wcp_hall::attest::manifest_v2::PAYLOAD_TYPE,
            payload,
            &[&pair],
        );
        std::fs::write(&manifest, serde_json::to_vec(&env).unwrap()).unwrap();
    };
    let text = String::from_utf8(payload).unwrap();
    let legacy = text.replace("\"awpV1TreeSha256\":", "\"sha256\":");
    assert_ne!(legacy, text);
    resign(legacy.as_bytes());
    let o = verify();
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    // Both names at once are refused (which one would the signer have meant?).
    let both = text.replace(
        "{\"awpV1TreeSha256\":",
        &format!("{{\"awpV1TreeSha256\":\"{digest}\",\"sha256\":"),
    );
    assert_ne!(both, text);
    resign(both.as_bytes());
    let o = verify();
    assert_eq!(code(&o), 1, "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains("ATTEST_MANIFEST_INVALID"),
        "{}",
        stdout(&o)
    );
}
