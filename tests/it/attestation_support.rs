//! Helpers shared by the attestation tests: materialising vector packages, keys, policies.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde_json::Value;
use wcp_hall::attest::{HmacKey, TrustPolicy, UtcTime};
use wcp_hall::crypto::KeyPair;

pub const VECTORS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/vectors/attestation.json"
);

/// The fixed time of the vectors.
pub fn vector_time() -> UtcTime {
    UtcTime::parse("2026-01-02T03:04:05Z").unwrap()
}

pub fn load_vectors() -> Value {
    let text = std::fs::read_to_string(VECTORS).expect("read attestation vectors");
    let v: Value = serde_json::from_str(&text).expect("vectors are JSON");
    assert_eq!(v["format"], "wcp-attestation-vectors/1");
    v
}

/// The bytes of one vector file entry.
pub fn file_bytes(f: &Value) -> Vec<u8> {
    if let Some(t) = f.get("text") {
        t.as_str().unwrap().as_bytes().to_vec()
    } else if let Some(b) = f.get("b64") {
        base64::engine::general_purpose::STANDARD
            .decode(b.as_str().unwrap())
            .unwrap()
    } else {
        let unit = f["repeat"].as_str().unwrap();
        unit.repeat(f["times"].as_u64().unwrap() as usize)
            .into_bytes()
    }
}

/// Writes `files` (vector format) under `root`.
pub fn materialise(root: &Path, files: &[Value]) {
    std::fs::create_dir_all(root).unwrap();
    for f in files {
        let path = root.join(f["path"].as_str().unwrap());
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, file_bytes(f)).unwrap();
    }
}

/// Writes a file, creating parents.
pub fn put(root: &Path, rel: &str, content: &[u8]) {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
}

/// A small worker package: V2's files (pyhall-spec §4).
pub fn sample_package(root: &Path) {
    put(root, "code/worker_logic.py", b"def run():\n    return 42\n");
    put(
        root,
        "code/bootstrap.py",
        b"from worker_logic import run\nprint(run())\n",
    );
    put(root, "requirements.lock", b"");
    put(root, "config.schema.json", b"{\"type\":\"object\"}\n");
}

pub fn key(seed: u8) -> KeyPair {
    KeyPair::from_seed(&[seed; 32])
}

/// A key file readable only by its owner.
pub fn hmac_key_file(dir: &Path, secret: &str) -> (PathBuf, HmacKey) {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("hmac.key");
    std::fs::write(&path, format!("{secret}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let key = HmacKey::read(&path).unwrap();
    (path, key)
}

/// Policy JSON text: `namespaces` is a list of (namespace, threshold, keys JSON list, accept_v1).
pub fn policy_text(namespaces: &[(&str, usize, Vec<Value>, bool)], extra: &str) -> String {
    let ns: Vec<String> = namespaces
        .iter()
        .map(|(name, threshold, keys, v1)| {
            format!(
                r#""{name}":{{"threshold":{threshold},"keys":{},"accept_awp_v1":{v1}}}"#,
                Value::Array(keys.clone())
            )
        })
        .collect();
    format!(
        r#"{{"schema":"wcp-hall-trust/1","version":7,"namespaces":{{{}}}{extra}}}"#,
        ns.join(",")
    )
}

pub fn key_entry(k: &KeyPair) -> Value {
    serde_json::json!({"public_key": k.public().to_base64()})
}

pub fn policy(namespaces: &[(&str, usize, Vec<Value>, bool)], extra: &str) -> TrustPolicy {
    TrustPolicy::from_json_bytes(policy_text(namespaces, extra).as_bytes()).unwrap()
}

/// Sets a file's mtime and atime to `secs` ago is impossible for ctime, so tests that need a
/// stable fingerprint wait past the racy margin instead.
pub fn wait_past_racy_margin() {
    std::thread::sleep(wcp_hall::attest::tree::RACY_MARGIN + std::time::Duration::from_millis(50));
}
