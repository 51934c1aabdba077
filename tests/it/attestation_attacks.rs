//! One test per attack on package attestation, each on real files, real signatures and the
//! real store, each asserting its documented `ATTEST_*` code (docs/attestation.md), plus the
//! store's guarantees and the property that the hash ignores file creation order.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::attestation_support::*;
use serde_json::json;
use wcp_hall::attest::sign::{self, SignRequest};
use wcp_hall::attest::tree::{self, TreeError, UnsafeKind};
use wcp_hall::attest::{
    AttestCode, HmacKey, PackageStore, ProtectionStatus, TreeLimits, TrustPolicy, UtcTime,
    VerificationReport, VerifyRequest, hash_tree, verify_package,
};
use wcp_hall::crypto::KeyPair;

const WID: &str = "org.example.summarizer.i-1";
const SID: &str = "wrk.doc.summarizer";

fn now() -> UtcTime {
    UtcTime::parse("2026-06-01T00:00:00Z").unwrap()
}

struct Fixture {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    store_dir: PathBuf,
    store: PackageStore,
}

impl Fixture {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("pkg");
        sample_package(&root);
        let store_dir = tmp.path().join("store");
        let store = PackageStore::open(&store_dir).unwrap();
        Fixture {
            _tmp: tmp,
            root,
            store_dir,
            store,
        }
    }

    fn manifest(&self) -> PathBuf {
        self.root.join("manifest.sig")
    }

    /// Signs the package as awp.v2 for `worker_id` with `keys`.
    fn sign(&self, worker_id: &str, keys: &[&KeyPair], expires_at: Option<UtcTime>) -> String {
        let (tree, _, env) = sign::sign_v2(
            &SignRequest {
                package_root: &self.root,
                worker_id,
                worker_species_id: SID,
                worker_version: "1.0.0",
                build_source: "ci",
                built_at: UtcTime::parse("2026-01-02T03:04:05Z").unwrap(),
                expires_at,
                limits: TreeLimits::default(),
            },
            keys,
        )
        .unwrap();
        sign::write_manifest(&self.manifest(), &sign::envelope_text(&env)).unwrap();
        tree.digest
    }

    fn verify(&self, policy: &TrustPolicy) -> VerificationReport {
        self.verify_at(policy, now())
    }

    fn verify_at(&self, policy: &TrustPolicy, at: UtcTime) -> VerificationReport {
        verify_package(&VerifyRequest {
            package_root: &self.root,
            manifest_path: &self.manifest(),
            worker_id: WID,
            worker_species_id: SID,
            trust: Some(policy),
            hmac_key: None,
            store: Some(&self.store),
            limits: TreeLimits::default(),
            now: at,
        })
    }

    /// Names in the store directory (entries, seals; never staging leftovers).
    fn store_names(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.store_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

fn one_key_policy(k: &KeyPair) -> TrustPolicy {
    policy(&[("org.example", 1, vec![key_entry(k)], false)], "")
}

fn assert_denied(report: &VerificationReport, code: AttestCode) {
    assert!(!report.ok, "expected {code}, got ok: {report:#?}");
    assert_eq!(report.code, Some(code), "{}", report.message);
    assert!(report.store_path.is_none());
}

#[test]
fn a_well_signed_package_verifies_into_a_read_only_store_copy() {
    use std::os::unix::fs::PermissionsExt;
    let fx = Fixture::new();
    let k = key(1);
    let digest = fx.sign(WID, &[&k], None);
    let report = fx.verify(&one_key_policy(&k));
    assert!(report.ok, "{report:#?}");
    assert_eq!(report.code, None);
    assert_eq!(report.package_hash.as_deref(), Some(digest.as_str()));
    assert_eq!(report.signer_key_ids, vec![k.id().clone()]);
    assert_eq!(report.namespace.as_deref(), Some("org.example"));
    let copy = report.store_path.clone().unwrap();
    assert_eq!(copy, fx.store.entry_path(&digest));
    let meta = std::fs::metadata(copy.join("code/worker_logic.py")).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o444);
    assert_eq!(
        std::fs::metadata(copy.join("code"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o555
    );
    let applied: Vec<&str> = report
        .protections
        .iter()
        .filter(|p| p.status == ProtectionStatus::Applied)
        .map(|p| p.id)
        .collect();
    for id in [
        "no_links",
        "regular_files_only",
        "unambiguous_names",
        "verified_copy",
        "excluded_not_copied",
        "read_only_copy",
        "signature",
        "namespace_binding",
        "revocation_and_bans",
        "key_validity",
    ] {
        assert!(applied.contains(&id), "{id} not applied: {applied:?}");
    }
    // fs-verity is reported, never assumed.
    assert!(
        report
            .protections
            .iter()
            .any(|p| p.id == "fs_verity" && p.status == ProtectionStatus::NotApplied)
    );
}

// --- Attack: a file edited or added after signing ----------------------------------------

#[test]
fn attack_file_edited_after_signing_is_hash_mismatch() {
    let fx = Fixture::new();
    let k = key(1);
    let signed = fx.sign(WID, &[&k], None);
    put(
        &fx.root,
        "code/worker_logic.py",
        b"def run():\n    return 666\n",
    );
    let report = fx.verify(&one_key_policy(&k));
    assert_denied(&report, AttestCode::HashMismatch);
    assert_eq!(report.meta["expected_hash"], json!(signed));
    assert_ne!(report.package_hash.as_deref(), Some(signed.as_str()));
    assert!(fx.store_names().is_empty(), "{:?}", fx.store_names());
}

#[test]
fn attack_file_added_after_signing_is_hash_mismatch() {
    let fx = Fixture::new();
    let k = key(1);
    fx.sign(WID, &[&k], None);
    put(&fx.root, "code/sitecustomize.py", b"import os\n");
    assert_denied(&fx.verify(&one_key_policy(&k)), AttestCode::HashMismatch);
    assert!(fx.store_names().is_empty());
}

#[test]
fn attack_file_edited_after_signing_awp_v1_is_pyhalls_hash_mismatch() {
    let fx = Fixture::new();
    let (_, key) = hmac_key_file(fx._tmp.path(), "test-secret-key");
    let (_, m) = sign::sign_v1(
        &SignRequest {
            package_root: &fx.root,
            worker_id: WID,
            worker_species_id: SID,
            worker_version: "1.0.0",
            build_source: "local",
            built_at: UtcTime::parse("2026-01-02T03:04:05Z").unwrap(),
            expires_at: None,
            limits: TreeLimits::default(),
        },
        &key,
    )
    .unwrap();
    let manifest = fx.root.join("manifest.json");
    sign::write_manifest(&manifest, &m.to_json()).unwrap();
    let verify = |key: Option<&HmacKey>| {
        verify_package(&VerifyRequest {
            package_root: &fx.root,
            manifest_path: &manifest,
            worker_id: WID,
            worker_species_id: SID,
            trust: None,
            hmac_key: key,
            store: Some(&fx.store),
            limits: TreeLimits::default(),
            now: now(),
        })
    };
    assert!(verify(Some(&key)).ok);
    // PyHall's other codes, in PyHall's order.
    assert_denied(&verify(None), AttestCode::SignatureMissing);
    assert_denied(
        &verify(Some(&HmacKey::from_secret("wrong"))),
        AttestCode::SigInvalid,
    );
    put(
        &fx.root,
        "code/worker_logic.py",
        b"def run():\n    return 666\n",
    );
    // The hash is checked before the signature, as in PyHall.
    assert_denied(&verify(None), AttestCode::HashMismatch);
    assert_denied(&verify(Some(&key)), AttestCode::HashMismatch);
}

// --- Attack: a planted __pycache__/*.pyc --------------------------------------------------

/// PyHall excludes `__pycache__` from the hash, so a planted pyc does not change the digest and
/// Python runs it instead of the attested source (attestation-anchors §0, measured even with
/// `-B`). The Hall's answer: the verification still passes (the digest is PyHall's), the pyc is
/// reported as excluded, and it never enters the store copy — so running from the copy runs
/// the attested source.
#[test]
fn attack_planted_pyc_never_reaches_the_copy_that_runs() {
    let fx = Fixture::new();
    let k = key(1);
    let digest = fx.sign(WID, &[&k], None);
    // Plant a bytecode file compiled from different source, with hash-based "unchecked"
    // invalidation so Python never compares it with the .py.
    let evil = fx._tmp.path().join("evil.py");
    std::fs::write(&evil, "def run():\n    return 666\n").unwrap();
    let plant = Command::new("python3")
        .arg("-c")
        .arg(
            "import sys, py_compile, importlib.util as u\n\
             src, evil = sys.argv[1], sys.argv[2]\n\
             py_compile.compile(evil, cfile=u.cache_from_source(src), doraise=True,\n\
                 invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)\n\
             print(u.cache_from_source(src))",
        )
        .arg(fx.root.join("code/worker_logic.py"))
        .arg(&evil)
        .output()
        .expect("python3 is required by the test suite");
    assert!(plant.status.success(), "{plant:?}");
    let planted = PathBuf::from(String::from_utf8(plant.stdout).unwrap().trim());
    assert!(planted.starts_with(fx.root.join("code/__pycache__")));

    // The bypass is real: run from the source directory, Python executes the planted pyc.
    let run = |dir: &Path| {
        let out = Command::new("python3")
            .arg("-B")
            .arg("code/bootstrap.py")
            .current_dir(dir)
            .env_remove("PYTHONPYCACHEPREFIX")
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(
        run(&fx.root),
        "666\n",
        "the planted pyc did not run: test is void"
    );

    let report = fx.verify(&one_key_policy(&k));
    assert!(report.ok, "{report:#?}");
    assert_eq!(report.package_hash.as_deref(), Some(digest.as_str()));
    assert_eq!(report.excluded, vec!["code/__pycache__", "manifest.sig"]);
    let copy = report.store_path.unwrap();
    assert!(!copy.join("code/__pycache__").exists());
    assert_eq!(run(&copy), "42\n");
    // Running did not change the copy.
    assert_eq!(
        hash_tree(&copy, &TreeLimits::default()).unwrap().digest,
        digest
    );
    assert!(!copy.join("code/__pycache__").exists());
}

// --- Attack: links ------------------------------------------------------------------------

#[test]
fn attack_symlink_to_etc_passwd_is_tree_unsafe() {
    let fx = Fixture::new();
    let k = key(1);
    fx.sign(WID, &[&k], None);
    std::os::unix::fs::symlink("/etc/passwd", fx.root.join("code/users.txt")).unwrap();
    let report = fx.verify(&one_key_policy(&k));
    assert_denied(&report, AttestCode::TreeUnsafe);
    assert!(
        report.message.contains("code/users.txt"),
        "{}",
        report.message
    );
    assert!(report.message.contains("/etc/passwd"), "{}", report.message);
    assert!(
        fx.store_names().is_empty(),
        "no partial entry: {:?}",
        fx.store_names()
    );
    // Signing refuses it too.
    match hash_tree(&fx.root, &TreeLimits::default()) {
        Err(TreeError::Unsafe {
            kind: UnsafeKind::Symlink { target },
            ..
        }) => assert_eq!(target.as_deref(), Some("/etc/passwd")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn attack_symlinked_directory_is_tree_unsafe() {
    let fx = Fixture::new();
    let k = key(1);
    fx.sign(WID, &[&k], None);
    let outside = fx._tmp.path().join("outside");
    put(&outside, "evil.py", b"raise SystemExit('pwned')\n");
    std::os::unix::fs::symlink(&outside, fx.root.join("code/lib")).unwrap();
    let report = fx.verify(&one_key_policy(&k));
    assert_denied(&report, AttestCode::TreeUnsafe);
    assert!(report.message.contains("code/lib"), "{}", report.message);
    assert!(fx.store_names().is_empty());
}

#[test]
fn a_linked_package_root_and_special_files_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let real = tmp.path().join("real");
    sample_package(&real);
    let link = tmp.path().join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    assert!(matches!(
        hash_tree(&link, &TreeLimits::default()),
        Err(TreeError::Unsafe {
            kind: UnsafeKind::Symlink { .. },
            ..
        })
    ));
    nix::unistd::mkfifo(
        &real.join("pipe"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    assert!(matches!(
        hash_tree(&real, &TreeLimits::default()),
        Err(TreeError::Unsafe { kind: UnsafeKind::Special("FIFO"), path }) if path == "pipe"
    ));
    std::fs::remove_file(real.join("pipe")).unwrap();
    let bad = std::ffi::OsStr::from_encoded_bytes_unchecked_safe(b"bad\xffname");
    std::fs::write(real.join(bad), b"x").unwrap();
    assert!(matches!(
        hash_tree(&real, &TreeLimits::default()),
        Err(TreeError::Unsafe {
            kind: UnsafeKind::NonUtf8Name,
            ..
        })
    ));
}

/// `OsStr` from raw bytes without `unsafe` (Unix only).
trait FromBytes {
    fn from_encoded_bytes_unchecked_safe(b: &[u8]) -> &std::ffi::OsStr;
}
impl FromBytes for std::ffi::OsStr {
    fn from_encoded_bytes_unchecked_safe(b: &[u8]) -> &std::ffi::OsStr {
        std::os::unix::ffi::OsStrExt::from_bytes(b)
    }
}

#[test]
fn size_and_count_bombs_hit_the_limits() {
    let tmp = tempfile::tempdir().unwrap();
    for i in 0..20 {
        put(tmp.path(), &format!("f{i}"), b"0123456789");
    }
    let small = TreeLimits {
        max_entries: 10,
        ..TreeLimits::default()
    };
    assert!(matches!(
        hash_tree(tmp.path(), &small),
        Err(TreeError::Limit { limit: 10, .. })
    ));
    let bytes = TreeLimits {
        max_total_bytes: 100,
        ..TreeLimits::default()
    };
    assert!(matches!(
        hash_tree(tmp.path(), &bytes),
        Err(TreeError::Limit { limit: 100, .. })
    ));
    // A flood of excluded names is bounded too (listed names ≤ 2 × max_entries).
    let flood = tmp.path().join("flood");
    for i in 0..25 {
        put(&flood, &format!("planted{i}.pyc"), b"");
    }
    assert!(matches!(
        hash_tree(&flood, &small),
        Err(TreeError::Limit { limit: 20, .. })
    ));
    std::fs::remove_dir_all(&flood).unwrap();
    put(tmp.path(), "a/b/c/d/e", b"");
    let shallow = TreeLimits {
        max_depth: 3,
        ..TreeLimits::default()
    };
    assert!(matches!(
        hash_tree(tmp.path(), &shallow),
        Err(TreeError::Limit { limit: 3, .. })
    ));
}

// --- Attack: the source swapped between verification and run ------------------------------

#[test]
fn attack_source_swapped_after_verification_does_not_change_what_runs() {
    let fx = Fixture::new();
    let k = key(1);
    let digest = fx.sign(WID, &[&k], None);
    let report = fx.verify(&one_key_policy(&k));
    assert!(report.ok);
    let copy = report.store_path.unwrap();
    // Swap the whole source: new contents, even a replaced directory.
    std::fs::remove_dir_all(fx.root.join("code")).unwrap();
    put(&fx.root, "code/bootstrap.py", b"print('swapped')\n");
    put(
        &fx.root,
        "code/worker_logic.py",
        b"def run():\n    return 666\n",
    );
    // What runs is the copy: unchanged, byte for byte.
    assert_eq!(
        hash_tree(&copy, &TreeLimits::default()).unwrap().digest,
        digest
    );
    assert_eq!(
        std::fs::read_to_string(copy.join("code/worker_logic.py")).unwrap(),
        "def run():\n    return 42\n"
    );
    let out = Command::new("python3")
        .args(["-B", "code/bootstrap.py"])
        .current_dir(&copy)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "42\n");
    // And the next verification notices the swap.
    assert_denied(&fx.verify(&one_key_policy(&k)), AttestCode::HashMismatch);
}

// --- Attacks on keys and the trust policy -------------------------------------------------

#[test]
fn attack_wrong_key_is_key_untrusted() {
    let fx = Fixture::new();
    let (trusted, mallory) = (key(1), key(66));
    fx.sign(WID, &[&mallory], None);
    let report = fx.verify(&one_key_policy(&trusted));
    assert_denied(&report, AttestCode::KeyUntrusted);
    // Nothing was read or copied for an untrusted manifest.
    assert!(report.package_hash.is_none());
    assert!(fx.store_names().is_empty());
}

#[test]
fn attack_key_trusted_for_another_namespace_is_key_untrusted() {
    // Mallory owns x.mallory and signs a manifest for org.example's worker: trust is looked up
    // by the worker id being verified, never by the key or the manifest.
    let fx = Fixture::new();
    let (example, mallory) = (key(1), key(66));
    fx.sign(WID, &[&mallory], None);
    let p = policy(
        &[
            ("org.example", 1, vec![key_entry(&example)], false),
            ("x.mallory", 1, vec![key_entry(&mallory)], false),
        ],
        "",
    );
    assert_denied(&fx.verify(&p), AttestCode::KeyUntrusted);
}

#[test]
fn attack_tampered_signature_or_payload_is_sig_invalid() {
    let fx = Fixture::new();
    let k = key(1);
    fx.sign(WID, &[&k], None);
    let text = std::fs::read_to_string(fx.manifest()).unwrap();
    let mut env: serde_json::Value = serde_json::from_str(&text).unwrap();
    // Re-point the statement at another digest, keeping the signature.
    let payload = env["payload"].as_str().unwrap().to_owned();
    let mut stmt: serde_json::Value = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::STANDARD, payload).unwrap(),
    )
    .unwrap();
    stmt["subject"][0]["digest"]["awpV1TreeSha256"] = json!("0".repeat(64));
    env["payload"] = json!(base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        serde_json::to_vec(&stmt).unwrap()
    ));
    std::fs::write(fx.manifest(), env.to_string()).unwrap();
    assert_denied(&fx.verify(&one_key_policy(&k)), AttestCode::SigInvalid);
}

#[test]
fn attack_revoked_key_is_key_revoked() {
    let fx = Fixture::new();
    let (a, b) = (key(1), key(2));
    fx.sign(WID, &[&a, &b], None);
    let extra = format!(
        r#","revoked_keys":[{{"key_id":"{}","reason":"laptop stolen"}}]"#,
        b.id()
    );
    let p = policy(
        &[("org.example", 1, vec![key_entry(&a), key_entry(&b)], false)],
        &extra,
    );
    // Fail closed even though key a alone would meet the threshold.
    let report = fx.verify(&p);
    assert_denied(&report, AttestCode::KeyRevoked);
    assert!(report.message.contains("laptop stolen"));
    fx.sign(WID, &[&b], None);
    assert_denied(&fx.verify(&p), AttestCode::KeyRevoked);
}

#[test]
fn attack_banned_digest_is_digest_banned() {
    let fx = Fixture::new();
    let k = key(1);
    let digest = fx.sign(WID, &[&k], None);
    let extra = format!(r#","banned_digests":[{{"sha256":"{digest}","reason":"CVE-2026-0001"}}]"#);
    let p = policy(&[("org.example", 1, vec![key_entry(&k)], false)], &extra);
    let report = fx.verify(&p);
    assert_denied(&report, AttestCode::DigestBanned);
    assert!(report.message.contains("CVE-2026-0001"));
    assert!(fx.store_names().is_empty());
}

#[test]
fn attack_threshold_not_met() {
    let fx = Fixture::new();
    let (a, b, c) = (key(1), key(2), key(3));
    let p = policy(
        &[(
            "org.example",
            2,
            vec![key_entry(&a), key_entry(&b), key_entry(&c)],
            false,
        )],
        "",
    );
    fx.sign(WID, &[&a], None);
    let report = fx.verify(&p);
    assert_denied(&report, AttestCode::ThresholdNotMet);
    // The same key twice still counts once.
    fx.sign(WID, &[&a, &a], None);
    assert_denied(&fx.verify(&p), AttestCode::ThresholdNotMet);
    fx.sign(WID, &[&a, &c], None);
    let ok = fx.verify(&p);
    assert!(ok.ok, "{ok:#?}");
    assert_eq!(ok.threshold, Some(2));
    assert_eq!(ok.signer_key_ids.len(), 2);
}

#[test]
fn attack_expired_key_is_key_expired() {
    let fx = Fixture::new();
    let k = key(1);
    fx.sign(WID, &[&k], None);
    let entry = json!({
        "public_key": k.public().to_base64(),
        "not_before": "2025-01-01T00:00:00Z",
        "not_after": "2025-12-31T23:59:59Z",
    });
    let p = policy(&[("org.example", 1, vec![entry], false)], "");
    assert_denied(&fx.verify(&p), AttestCode::KeyExpired);
    assert!(
        fx.verify_at(&p, UtcTime::parse("2025-06-01T00:00:00Z").unwrap())
            .ok
    );
}

#[test]
fn expired_manifest_and_expired_policy() {
    let fx = Fixture::new();
    let k = key(1);
    fx.sign(
        WID,
        &[&k],
        Some(UtcTime::parse("2026-03-01T00:00:00Z").unwrap()),
    );
    assert_denied(&fx.verify(&one_key_policy(&k)), AttestCode::ManifestExpired);
    fx.sign(WID, &[&k], None);
    let p = TrustPolicy::from_json_bytes(
        policy_text(
            &[("org.example", 1, vec![key_entry(&k)], false)],
            r#","expires_at":"2026-05-01T00:00:00Z""#,
        )
        .as_bytes(),
    )
    .unwrap();
    assert_denied(&fx.verify(&p), AttestCode::TrustPolicyExpired);
}

#[test]
fn attack_manifest_for_another_worker_id_is_id_mismatch() {
    let fx = Fixture::new();
    let k = key(1);
    // Validly signed by the namespace's key, but for a sibling worker.
    fx.sign("org.example.other-worker.i-9", &[&k], None);
    let report = fx.verify(&one_key_policy(&k));
    assert_denied(&report, AttestCode::ManifestIdMismatch);
    assert_eq!(
        report.meta["manifest_worker_id"],
        "org.example.other-worker.i-9"
    );
    assert_eq!(report.meta["expected_worker_id"], WID);
}

#[test]
fn unknown_namespace_and_legacy_format_policy() {
    let fx = Fixture::new();
    let k = key(1);
    fx.sign(WID, &[&k], None);
    let other = policy(&[("org.elsewhere", 1, vec![key_entry(&k)], false)], "");
    assert_denied(&fx.verify(&other), AttestCode::NamespaceUntrusted);

    // awp.v1 under a trust policy needs accept_awp_v1 for the namespace.
    let (_, hkey) = hmac_key_file(fx._tmp.path(), "s3cret");
    let (_, m) = sign::sign_v1(
        &SignRequest {
            package_root: &fx.root,
            worker_id: WID,
            worker_species_id: SID,
            worker_version: "1.0.0",
            build_source: "local",
            built_at: now(),
            expires_at: None,
            limits: TreeLimits::default(),
        },
        &hkey,
    )
    .unwrap();
    let manifest = fx.root.join("manifest.json");
    sign::write_manifest(&manifest, &m.to_json()).unwrap();
    let verify = |p: &TrustPolicy| {
        verify_package(&VerifyRequest {
            package_root: &fx.root,
            manifest_path: &manifest,
            worker_id: WID,
            worker_species_id: SID,
            trust: Some(p),
            hmac_key: Some(&hkey),
            store: Some(&fx.store),
            limits: TreeLimits::default(),
            now: now(),
        })
    };
    assert_denied(&verify(&one_key_policy(&k)), AttestCode::NamespaceUntrusted);
    let legacy = policy(&[("org.example", 1, vec![key_entry(&k)], true)], "");
    let ok = verify(&legacy);
    assert!(ok.ok, "{ok:#?}");
    let banned = policy(
        &[("org.example", 1, vec![key_entry(&k)], true)],
        &format!(r#","banned_digests":[{{"sha256":"{}"}}]"#, m.package_hash),
    );
    assert_denied(&verify(&banned), AttestCode::DigestBanned);
}

#[test]
fn missing_and_malformed_manifests() {
    let fx = Fixture::new();
    let k = key(1);
    let p = one_key_policy(&k);
    assert_denied(&fx.verify(&p), AttestCode::ManifestMissing);
    std::fs::write(fx.manifest(), "{not json").unwrap();
    let r = fx.verify(&p);
    assert_denied(&r, AttestCode::ManifestMissing);
    assert!(r.meta.contains_key("error"));
    std::fs::write(fx.manifest(), "[1,2]").unwrap();
    assert_denied(&fx.verify(&p), AttestCode::ManifestMissing);
    std::fs::write(
        fx.manifest(),
        r#"{"payload":"e30=","payloadType":"application/vnd.in-toto+json","signatures":[],"extra":1}"#,
    )
    .unwrap();
    assert_denied(&fx.verify(&p), AttestCode::ManifestInvalid);
    // A correctly signed envelope of the wrong payload type.
    let env = wcp_hall::crypto::Envelope::sign("application/json", b"{}", &[&k]);
    std::fs::write(fx.manifest(), serde_json::to_string(&env).unwrap()).unwrap();
    assert_denied(&fx.verify(&p), AttestCode::ManifestInvalid);
}

// --- The store ----------------------------------------------------------------------------

#[test]
fn a_failed_verification_never_leaves_a_partial_entry() {
    let fx = Fixture::new();
    let k = key(1);
    fx.sign(WID, &[&k], None);
    // Fails after the copy was staged: the tree hashes, but differently.
    put(&fx.root, "extra.txt", &vec![b'x'; 3 << 20]);
    assert_denied(&fx.verify(&one_key_policy(&k)), AttestCode::HashMismatch);
    // Fails in the middle of copying: an unreadable file after others were copied.
    std::fs::remove_file(fx.root.join("extra.txt")).unwrap();
    let p = one_key_policy(&k);
    fx.sign(WID, &[&k], None);
    nix::unistd::mkfifo(
        &fx.root.join("zz-fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    assert_denied(&fx.verify(&p), AttestCode::TreeUnsafe);
    assert!(fx.store_names().is_empty(), "{:?}", fx.store_names());
    // Staging left by a crashed process is removed when the store opens; staging of a live
    // process sharing the store is not.
    let mut child = Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let crashed = format!(".staging-{dead}-0123");
    std::fs::create_dir(fx.store_dir.join(&crashed)).unwrap();
    std::fs::write(fx.store_dir.join(&crashed).join("half"), b"x").unwrap();
    let live = format!(".staging-{}-4567", std::process::id());
    std::fs::create_dir(fx.store_dir.join(&live)).unwrap();
    PackageStore::open(&fx.store_dir).unwrap();
    assert_eq!(fx.store_names(), vec![live]);
}

#[test]
fn cached_reverify_skips_rereading_until_the_source_changes() {
    let fx = Fixture::new();
    let k = key(1);
    let p = one_key_policy(&k);
    let digest = fx.sign(WID, &[&k], None);
    wait_past_racy_margin();
    let first = fx.verify(&p);
    assert!(first.ok && !first.cached, "{first:#?}");
    let second = fx.verify(&p);
    assert!(second.ok && second.cached, "{second:#?}");
    assert_eq!(second.store_path, first.store_path);
    // Signatures and policy are still checked on a cached verification.
    assert_denied(
        &fx.verify(&one_key_policy(&key(9))),
        AttestCode::KeyUntrusted,
    );
    // A changed source is re-read (content change keeping the size).
    put(
        &fx.root,
        "code/worker_logic.py",
        b"def run():\n    return 43\n",
    );
    let changed = fx.verify(&p);
    assert_denied(&changed, AttestCode::HashMismatch);
    assert!(!changed.cached);
    // Restored: verified again against the existing entry.
    put(
        &fx.root,
        "code/worker_logic.py",
        b"def run():\n    return 42\n",
    );
    let back = fx.verify(&p);
    assert!(back.ok);
    assert_eq!(back.package_hash.as_deref(), Some(digest.as_str()));
    assert_eq!(
        fx.store_names(),
        vec![format!("sha256-{digest}"), format!("sha256-{digest}.seal")]
    );
}

#[test]
fn an_entry_sealed_in_another_boot_is_rehashed_and_replaced_if_corrupt() {
    use std::os::unix::fs::PermissionsExt;
    let fx = Fixture::new();
    let k = key(1);
    let p = one_key_policy(&k);
    let digest = fx.sign(WID, &[&k], None);
    let copy = fx.verify(&p).store_path.unwrap();
    // Simulate a crash that lost data, discovered after a reboot.
    let seal = fx.store_dir.join(format!("sha256-{digest}.seal"));
    let mut s: serde_json::Value = serde_json::from_slice(&std::fs::read(&seal).unwrap()).unwrap();
    s["boot_id"] = json!("previous-boot");
    std::fs::write(&seal, s.to_string()).unwrap();
    let file = copy.join("code/worker_logic.py");
    std::fs::set_permissions(copy.join("code"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(&file, b"").unwrap();
    let fresh = PackageStore::open(&fx.store_dir).unwrap();
    assert!(!fresh.contains(&digest).unwrap(), "corrupt entry kept");
    let report = verify_package(&VerifyRequest {
        package_root: &fx.root,
        manifest_path: &fx.manifest(),
        worker_id: WID,
        worker_species_id: SID,
        trust: Some(&p),
        hmac_key: None,
        store: Some(&fresh),
        limits: TreeLimits::default(),
        now: now(),
    });
    assert!(report.ok);
    assert_eq!(
        hash_tree(&report.store_path.unwrap(), &TreeLimits::default())
            .unwrap()
            .digest,
        digest
    );
}

#[test]
fn store_root_must_be_private_to_the_hall() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let err = PackageStore::open(&dir).unwrap_err();
    assert!(err.to_string().contains("chmod go-w"), "{err}");
    let link = tmp.path().join("link");
    std::os::unix::fs::symlink(&dir, &link).unwrap();
    assert!(PackageStore::open(&link).is_err());
}

// --- Property: the hash does not depend on file creation order ----------------------------

/// SplitMix64: a deterministic PRNG, so failures reproduce.
struct SplitMix(u64);
impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn property_hash_is_independent_of_creation_order() {
    const PARTS: [&str; 10] = [
        "a",
        "a-b",
        "a.b",
        "B",
        "é",
        "z",
        "x y",
        "a_b",
        "0",
        "__pycache__",
    ];
    let tmp = tempfile::tempdir().unwrap();
    let mut rng = SplitMix(0x05EE_D0A7_7E57);
    for case in 0..40 {
        // A random tree: up to 12 files at depth 1–3, random contents.
        let mut files: Vec<(String, Vec<u8>)> = Vec::new();
        for _ in 0..(1 + rng.below(12)) {
            let depth = 1 + rng.below(3);
            let path: Vec<&str> = (0..depth).map(|_| PARTS[rng.below(PARTS.len())]).collect();
            let mut rel = path.join("/");
            if rng.below(4) == 0 {
                rel.push_str(".pyc");
            }
            let content: Vec<u8> = (0..rng.below(64)).map(|_| rng.next() as u8).collect();
            // Skip paths that collide with a file/directory already planned.
            let clash = files.iter().any(|(other, _)| {
                other == &rel
                    || other.starts_with(&format!("{rel}/"))
                    || rel.starts_with(&format!("{other}/"))
            });
            if !clash {
                files.push((rel, content));
            }
        }
        let mut digests = Vec::new();
        for order in 0..4 {
            let mut shuffled = files.clone();
            for i in (1..shuffled.len()).rev() {
                let j = rng.below(i + 1);
                shuffled.swap(i, j);
            }
            let root = tmp.path().join(format!("case{case}-order{order}"));
            std::fs::create_dir(&root).unwrap();
            for (rel, content) in &shuffled {
                put(&root, rel, content);
            }
            digests.push(hash_tree(&root, &TreeLimits::default()).unwrap().digest);
        }
        assert!(
            digests.windows(2).all(|w| w[0] == w[1]),
            "case {case}: {files:?} → {digests:?}"
        );
        // And it equals the pure definition: records in component order.
        let mut expected: Vec<&(String, Vec<u8>)> = files
            .iter()
            .filter(|(rel, _)| {
                !rel.ends_with(".pyc") && !rel.split('/').any(|c| tree::EXCLUDED_NAMES.contains(&c))
            })
            .collect();
        expected.sort_by(|a, b| tree::component_order(&a.0, &b.0));
        let mut h = tree::Awp1Hasher::new();
        for (rel, content) in expected {
            use sha2::Digest;
            h.add(
                rel,
                content.len() as u64,
                &sha2::Sha256::digest(content).into(),
            );
        }
        assert_eq!(h.finish(), digests[0], "case {case}");
    }
}

// --- Router integration -------------------------------------------------------------------

#[test]
fn router_denies_from_real_files_and_signatures() {
    use std::sync::Arc;
    use wcp_hall::attest::{AttestedWorkers, SpeciesPackage};
    use wcp_hall::conformance::SnapshotRegistry;
    use wcp_hall::router::{self, Router, RouterConfig, WorkerHashes};
    use wcp_hall::rules::RuleSet;
    use wcp_hall::wcp::RouteInput;

    let fx = Fixture::new();
    let k = key(1);
    let digest = fx.sign(WID, &[&k], None);
    let store = Arc::new(PackageStore::open(&fx.store_dir).unwrap());
    let mut workers = AttestedWorkers::new(store, Arc::new(one_key_policy(&k)), None);
    workers.add(SpeciesPackage {
        worker_species_id: SID.into(),
        worker_id: WID.into(),
        package_root: fx.root.clone(),
        manifest_path: fx.manifest(),
        registered_hash: Some(digest.clone()),
    });
    let rules = RuleSet::from_json_str(&format!(
        r#"{{"rules":[{{"rule_id":"rr_sum","match":{{"capability_id":"cap.doc.summarize"}},"decision":{{"candidate_workers_ranked":[{{"worker_species_id":"{SID}","score_hint":1.0}}],"required_controls_suggested":[],"escalation":{{"policy_gate":false}},"preconditions":{{}}}}}}]}}"#
    ))
    .unwrap();
    let mut registry = SnapshotRegistry::default();
    registry.workers.insert(SID.into());
    let config = RouterConfig {
        require_worker_attestation: true,
        ..RouterConfig::default()
    };
    let input = RouteInput::from_value(&json!({
        "capability_id": "cap.doc.summarize", "env": "dev", "data_label": "INTERNAL",
        "tenant_risk": "low", "qos_class": "P2", "tenant_id": "acme",
        "correlation_id": "6f1c2a7e-3b1d-4c8e-9f2a-1d2e3f4a5b6c", "request": {}
    }))
    .unwrap();
    // Each decision asks through its own per-dispatch view (one verification per decision).
    let decide = |w: &AttestedWorkers| {
        let view = w.dispatch();
        let r = Router {
            rules: &rules,
            registry: &registry,
            config: &config,
            gate: None,
            hashes: Some(&view),
            privilege: None,
            human_approval: None,
        };
        router::route(&r, &input, &wcp_hall::clock::mint_context("t"))
    };
    let allowed = decide(&workers);
    assert!(!allowed.denied, "{allowed:?}");
    assert!(allowed.worker_attestation_checked);
    let run_root = workers.run_root(SID).unwrap();
    assert_eq!(run_root, fx.store_dir.join(format!("sha256-{digest}")));
    assert!(workers.last_report(SID).unwrap().ok);

    // Edited after signing → DENY_WORKER_TAMPERED, with ATTEST_HASH_MISMATCH in the report.
    put(
        &fx.root,
        "code/worker_logic.py",
        b"def run():\n    return 666\n",
    );
    let tampered = decide(&workers);
    assert_eq!(
        tampered.deny_code().map(|c| c.to_string()).as_deref(),
        Some("DENY_WORKER_TAMPERED")
    );
    assert_eq!(
        workers.last_report(SID).unwrap().code,
        Some(AttestCode::HashMismatch)
    );
    assert!(workers.run_root(SID).is_none());
    // The copy verified earlier is untouched.
    assert_eq!(
        hash_tree(&run_root, &TreeLimits::default()).unwrap().digest,
        digest
    );

    // Signed by an untrusted key → no current hash → DENY_WORKER_HASH_UNAVAILABLE.
    put(
        &fx.root,
        "code/worker_logic.py",
        b"def run():\n    return 42\n",
    );
    fx.sign(WID, &[&key(66)], None);
    let untrusted = decide(&workers);
    assert_eq!(
        untrusted.deny_code().map(|c| c.to_string()).as_deref(),
        Some("DENY_WORKER_HASH_UNAVAILABLE")
    );
    assert_eq!(
        workers.last_report(SID).unwrap().code,
        Some(AttestCode::KeyUntrusted)
    );
    // A failed verification never yields the registered hash as "current".
    assert_eq!(workers.dispatch().current_hash(SID), None);

    // Without a registered hash, the signed manifest's digest is the registered one.
    fx.sign(WID, &[&k], None);
    let mut no_record = AttestedWorkers::new(
        Arc::new(PackageStore::open(&fx.store_dir).unwrap()),
        Arc::new(one_key_policy(&k)),
        None,
    );
    no_record.add(SpeciesPackage {
        registered_hash: None,
        ..workers.package(SID).unwrap().clone()
    });
    assert_eq!(
        no_record.dispatch().registered_hash(SID).as_deref(),
        Some(digest.as_str())
    );
    assert!(!decide(&no_record).denied);
    // A legitimate new release (changed and re-signed) is allowed at the very next decision:
    // registered and current hash come from one verification.
    put(
        &fx.root,
        "code/worker_logic.py",
        b"def run():\n    return 43\n",
    );
    let release = fx.sign(WID, &[&k], None);
    let next = decide(&no_record);
    assert!(!next.denied, "{next:?}");
    assert_eq!(
        no_record.last_report(SID).unwrap().package_hash.as_deref(),
        Some(release.as_str())
    );
    // Edited without re-signing → tampered.
    put(
        &fx.root,
        "code/worker_logic.py",
        b"def run():\n    return 44\n",
    );
    assert_eq!(
        decide(&no_record)
            .deny_code()
            .map(|c| c.to_string())
            .as_deref(),
        Some("DENY_WORKER_TAMPERED")
    );
    assert_eq!(no_record.dispatch().registered_hash("wrk.unknown"), None);
    assert_eq!(no_record.dispatch().current_hash("wrk.unknown"), None);
}

#[test]
fn watched_sources_recheck_without_a_scan_and_every_change_is_seen() {
    use std::os::unix::fs::PermissionsExt;
    let fx = Fixture::new();
    assert!(
        fx.store.watching(),
        "inotify is available on the reference kernel"
    );
    let k = key(1);
    let p = one_key_policy(&k);
    let digest = fx.sign(WID, &[&k], None);
    // No wait for the racy margin: inotify events are exact.
    let first = fx.verify(&p);
    assert!(first.ok && !first.cached);
    assert!(fx.verify(&p).cached);
    put(&fx.root, "deep/er/still/data.txt", b"x");
    // (The tree no longer matches its manifest; a mismatch is cached like a match.)
    assert_denied(&fx.verify(&p), AttestCode::HashMismatch);
    // Each change below is seen: the tree is re-read (cached = false) the next time.
    type Change<'a> = (&'a str, Box<dyn Fn() + 'a>);
    let changes: Vec<Change> = vec![
        (
            "edit deep file",
            Box::new(|| put(&fx.root, "deep/er/still/data.txt", b"y")),
        ),
        (
            "chmod",
            Box::new(|| {
                std::fs::set_permissions(
                    fx.root.join("code/bootstrap.py"),
                    std::fs::Permissions::from_mode(0o600),
                )
                .unwrap()
            }),
        ),
        (
            "new empty dir",
            Box::new(|| std::fs::create_dir(fx.root.join("deep/new")).unwrap()),
        ),
        (
            "remove file",
            Box::new(|| std::fs::remove_file(fx.root.join("deep/er/still/data.txt")).unwrap()),
        ),
        (
            "rename dir",
            Box::new(|| {
                std::fs::rename(fx.root.join("deep/new"), fx.root.join("deep/new2")).unwrap()
            }),
        ),
    ];
    for (what, change) in &changes {
        let before = fx.verify(&p);
        assert!(
            before.cached,
            "{what}: should start from a cached state: {before:#?}"
        );
        change();
        let after = fx.verify(&p);
        assert!(!after.cached, "{what}: change not seen");
    }
    // The root path re-pointed at another directory (a rename of the package dir).
    let moved = fx._tmp.path().join("pkg-old");
    assert!(fx.verify(&p).cached);
    std::fs::rename(&fx.root, &moved).unwrap();
    sample_package(&fx.root);
    put(
        &fx.root,
        "code/worker_logic.py",
        b"def run():\n    return 7\n",
    );
    std::fs::copy(moved.join("manifest.sig"), fx.manifest()).unwrap();
    let swapped = fx.verify(&p);
    assert_denied(&swapped, AttestCode::HashMismatch);
    assert!(!swapped.cached);
    // Back to the signed content: verified against the existing entry.
    put(
        &fx.root,
        "code/worker_logic.py",
        b"def run():\n    return 42\n",
    );
    std::fs::remove_dir_all(fx.root.join("deep")).ok();
    let back = fx.verify(&p);
    assert!(back.ok, "{back:#?}");
    assert_eq!(back.package_hash.as_deref(), Some(digest.as_str()));
}

#[test]
fn without_inotify_the_metadata_fingerprint_decides_and_restored_mtimes_do_not_fool_it() {
    let mut fx = Fixture::new();
    fx.store.set_watching(false);
    assert!(!fx.store.watching());
    let k = key(1);
    let p = one_key_policy(&k);
    fx.sign(WID, &[&k], None);
    wait_past_racy_margin();
    assert!(!fx.verify(&p).cached);
    assert!(
        fx.verify(&p).cached,
        "unchanged metadata must hit the cache"
    );
    // Edit with the same size, then restore the old mtime: ctime still moves.
    let file = fx.root.join("code/worker_logic.py");
    let before = std::fs::metadata(&file).unwrap().modified().unwrap();
    std::fs::write(&file, b"def run():\n    return 66\n").unwrap();
    std::fs::File::options()
        .write(true)
        .open(&file)
        .unwrap()
        .set_modified(before)
        .unwrap();
    wait_past_racy_margin();
    let edited = fx.verify(&p);
    assert_denied(&edited, AttestCode::HashMismatch);
    assert!(!edited.cached);
    // A change within the racy margin is never vouched for by its fingerprint.
    std::fs::write(&file, b"def run():\n    return 42\n").unwrap();
    assert!(
        !tree::plan(&fx.root, &TreeLimits::default()).unwrap().stable,
        "a scan right after a change is racy: its fingerprint is never trusted"
    );
    let fresh = fx.verify(&p);
    assert!(fresh.ok && !fresh.cached);
    wait_past_racy_margin();
    fx.verify(&p); // re-read once more if the previous scan was racy
    assert!(fx.verify(&p).cached);
}
