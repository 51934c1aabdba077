//! Helpers shared by the tests that drive a real Hall (and by `benches/daemon.rs`): repository
//! paths, copying worker packages, a package-signing key trusted for `org.wcp-hall`, and signing
//! and enrolling a package through the real CLI (`wcp-hall keygen`, `wcp-hall attest sign`).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

/// The `wcp-hall` binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_wcp-hall");

/// A path in the repository.
pub fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Copies a directory tree, leaving out `__pycache__` (a bundled package must be hashed as
/// committed, not with whatever a local Python run left behind).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let name = e.file_name();
        if name == "__pycache__" {
            continue;
        }
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(&name));
        } else {
            std::fs::copy(e.path(), to.join(&name)).unwrap();
        }
    }
}

/// `<dir>/keys/package.key`, created with `wcp-hall keygen` on first use and trusted (threshold
/// 1) for the `org.wcp-hall` namespace in `<dir>/trust.json`.
pub fn package_key(dir: &Path) -> PathBuf {
    let key = dir.join("keys/package.key");
    if !key.exists() {
        std::fs::create_dir_all(dir.join("keys")).unwrap();
        let o = Command::new(BIN).arg("keygen").arg(&key).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let public = std::fs::read_to_string(key.with_extension("key.pub")).unwrap();
        let public = public.split_whitespace().nth(1).unwrap().to_owned();
        let trust = json!({"schema": "wcp-hall-trust/1", "version": 1,
            "namespaces": {"org.wcp-hall": {"threshold": 1, "keys": [{"public_key": public}]}}});
        std::fs::write(dir.join("trust.json"), trust.to_string()).unwrap();
    }
    key
}

/// Signs the package at `pkg` (awp.v2, version 1.0.0) with `key`.
pub fn sign_package(key: &Path, pkg: &Path, worker_id: &str, species: &str) {
    let o = Command::new(BIN)
        .args([
            "attest",
            "sign",
            "--worker-id",
            worker_id,
            "--species",
            species,
        ])
        .args(["--worker-version", "1.0.0", "--key"])
        .arg(key)
        .arg(pkg)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// Signs `pkg` with `key` as `record` says and writes the enrolled record (the template plus
/// `attestation.package_root`) into `registry`. Returns the worker id.
pub fn sign_and_enroll(key: &Path, pkg: &Path, record: &Value, registry: &Path) -> String {
    let worker_id = record["worker_id"].as_str().unwrap().to_owned();
    let species = record["worker_species_id"].as_str().unwrap();
    sign_package(key, pkg, &worker_id, species);
    let mut enrolled = record.clone();
    enrolled["attestation"] = json!({"package_root": pkg.display().to_string()});
    std::fs::write(
        registry.join(format!("{worker_id}.json")),
        enrolled.to_string(),
    )
    .unwrap();
    worker_id
}

/// A package's record template (`<pkg>/record.json` or any record file).
pub fn read_record(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// A native package: the `wcp-hello-native` binary as `code/bootstrap`, with its schema and its
/// declaration of worker protocol 2.
/// Returns the package directory and its record template.
pub fn native_hello_package(dir: &Path) -> (PathBuf, Value) {
    let pkg = dir.join("packages/hello-native");
    std::fs::create_dir_all(pkg.join("code")).unwrap();
    std::fs::copy(
        env!("CARGO_BIN_EXE_wcp-hello-native"),
        pkg.join("code/bootstrap"),
    )
    .unwrap();
    for file in ["config.schema.json", "wcp-worker.json"] {
        std::fs::copy(repo("workers/hello_native").join(file), pkg.join(file)).unwrap();
    }
    (pkg, read_record(&repo("workers/hello_native/record.json")))
}
