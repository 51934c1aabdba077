//! Every PyHall attestation vector (tests/vectors/attestation.json): the awp.v1 package hash of
//! real files, the signing payload bytes, the HMAC signature, the trust statement and the
//! manifest.json bytes — and the Hall then verifies each signed package end to end (hash while
//! copying into the store, HMAC in constant time). Plus pyhall-spec §4's named vectors (V3
//! scaffold signature, V4 newline ambiguity, which the Hall deliberately refuses).

use crate::attestation_support::*;
use serde_json::Value;
use wcp_hall::attest::manifest_v1::{ManifestV1, ManifestV1Input};
use wcp_hall::attest::tree::{TreeError, UnsafeKind};
use wcp_hall::attest::{
    HmacKey, PackageStore, TreeLimits, VerifyRequest, hash_tree, scaffold, verify_package,
};

#[test]
fn every_vector_matches_pyhall_byte_for_byte() {
    let vectors = load_vectors();
    let packages = vectors["packages"].as_array().unwrap();
    assert_eq!(packages.len(), 46);
    let tmp = tempfile::tempdir().unwrap();
    let store = PackageStore::open(&tmp.path().join("store")).unwrap();
    for (i, p) in packages.iter().enumerate() {
        let name = p["name"].as_str().unwrap();
        let root = tmp.path().join(format!("pkg-{i}"));
        materialise(&root, p["files"].as_array().unwrap());
        let expected_hash = p["package_hash"].as_str().unwrap();

        // 1. The package hash of the real files.
        let tree = hash_tree(&root, &TreeLimits::default()).unwrap();
        assert_eq!(tree.digest, expected_hash, "{name}: package hash");

        // 2. The manifest: payload, signature, trust statement, file bytes.
        let m = &p["manifest"];
        let s = |k: &str| m[k].as_str().unwrap();
        let key = HmacKey::from_secret(s("hmac_key"));
        let manifest = ManifestV1::build(
            &ManifestV1Input {
                worker_id: s("worker_id"),
                worker_species_id: s("worker_species_id"),
                worker_version: s("worker_version"),
                package_hash: &tree.digest,
                build_source: s("build_source"),
                at: wcp_hall::attest::UtcTime::parse(s("built_at_utc")).unwrap(),
            },
            &key,
        )
        .unwrap();
        assert_eq!(
            manifest.signing_payload(),
            s("signing_payload"),
            "{name}: payload"
        );
        assert_eq!(
            manifest.signature_hmac_sha256,
            s("signature_hmac_sha256"),
            "{name}: signature"
        );
        assert_eq!(manifest.trust_statement, s("trust_statement"), "{name}");
        assert_eq!(
            manifest.to_json(),
            s("manifest_json"),
            "{name}: manifest.json"
        );

        // 3. The Hall verifies PyHall's manifest file against the real files, copying them.
        std::fs::write(root.join("manifest.json"), s("manifest_json")).unwrap();
        let report = verify_package(&VerifyRequest {
            package_root: &root,
            manifest_path: &root.join("manifest.json"),
            worker_id: s("worker_id"),
            worker_species_id: s("worker_species_id"),
            trust: None,
            hmac_key: Some(&key),
            store: Some(&store),
            limits: TreeLimits::default(),
            now: vector_time(),
        });
        assert!(report.ok, "{name}: {report:?}");
        assert_eq!(report.package_hash.as_deref(), Some(expected_hash));
        assert_eq!(report.meta["trust_statement"], s("trust_statement"));
        // The copy hashes the same and holds none of the excluded entries.
        let copy = report.store_path.clone().unwrap();
        assert_eq!(
            hash_tree(&copy, &TreeLimits::default()).unwrap().digest,
            expected_hash
        );
        let copied = walk(&copy);
        assert!(
            copied.iter().all(|rel| !rel.ends_with(".pyc")
                && !rel
                    .split('/')
                    .any(|c| wcp_hall::attest::tree::EXCLUDED_NAMES.contains(&c))),
            "{name}: excluded entries were copied: {copied:?}"
        );
        assert_eq!(copied.len() as u64, tree.files, "{name}");
    }
}

fn walk(root: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    fn go(root: &std::path::Path, dir: &std::path::Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                go(root, &e.path(), out);
            } else {
                out.push(
                    e.path()
                        .strip_prefix(root)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
    }
    go(root, root, &mut out);
    out
}

#[test]
fn v2_record_order_and_exclusions() {
    // pyhall-spec §4 V2, including the excluded entries and an empty directory.
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    put(root, "code/worker_logic.py", b"def run():\n    return 42\n");
    put(
        root,
        "code/bootstrap.py",
        b"from worker_logic import run\nrun()\n",
    );
    put(root, "requirements.lock", b"");
    put(root, "config.schema.json", b"{\"type\":\"object\"}\n");
    put(root, "a-b.txt", b"dash\n");
    put(root, "a/b.txt", b"slash\n");
    put(root, ".hidden", b"h");
    put(root, "__pycache__/x.cpython-311.pyc", b"\x00bytecode");
    put(root, "stale.pyc", b"\x00");
    put(root, "code/manifest.json", b"{}");
    std::fs::create_dir(root.join("empty_dir")).unwrap();
    let tree = hash_tree(root, &TreeLimits::default()).unwrap();
    assert_eq!(
        tree.digest,
        "f14a7ccf05248017e3cc4ed23dbbf5450b58d31916f30819bcf4ed6b729be4ff"
    );
    assert_eq!(tree.files, 7);
    assert_eq!(
        tree.excluded,
        vec!["__pycache__", "code/manifest.json", "stale.pyc"]
    );
}

#[test]
fn v3_default_scaffold_signature() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("pkg");
    scaffold::scaffold(&root, None, false).unwrap();
    let tree = hash_tree(&root, &TreeLimits::default()).unwrap();
    assert_eq!(tree.digest, scaffold::DEFAULT_DIGEST);
    let m = ManifestV1::build(
        &ManifestV1Input {
            worker_id: "org.example.my-worker.instance-1",
            worker_species_id: "wrk.example.my-worker",
            worker_version: "1.0.0",
            package_hash: &tree.digest,
            build_source: "local",
            at: vector_time(),
        },
        &HmacKey::from_secret("test-secret-key"),
    )
    .unwrap();
    assert_eq!(
        m.signature_hmac_sha256,
        "87c3d78d38968f0a1abaadcf8188c5eca49e38edc104b6e41f00aa07ebbc3116"
    );
}

#[test]
fn v1_variants_from_the_spec() {
    let tmp = tempfile::tempdir().unwrap();
    put(
        tmp.path(),
        "code/worker_logic.py",
        b"def run():\n    return 42\n",
    );
    put(tmp.path(), "requirements.lock", b"");
    let hash = hash_tree(tmp.path(), &TreeLimits::default())
        .unwrap()
        .digest;
    let build = |wid: &str, sid: &str, ver: &str, src: &str, key: &str| {
        ManifestV1::build(
            &ManifestV1Input {
                worker_id: wid,
                worker_species_id: sid,
                worker_version: ver,
                package_hash: &hash,
                build_source: src,
                at: vector_time(),
            },
            &HmacKey::from_secret(key),
        )
        .unwrap()
    };
    let x = build(
        "x.alice.summarizer.i-1",
        "wrk.doc.summarizer",
        "0.3.0",
        "ci",
        "k",
    );
    assert_eq!(
        x.signature_hmac_sha256,
        "a5c8ebfe83004aa7c98d5429b0b8ee763280d704b6b914906959c4617db6aa40"
    );
    assert!(
        x.trust_statement
            .starts_with("Package attested by namespace x.alice at")
    );
    let e = build(
        "org.example.my-worker.instance-1",
        "wrk.example.my-worker",
        "1.0.0-é",
        "local",
        "test-secret-key",
    );
    assert!(
        e.signing_payload()
            .ends_with(r#""worker_version":"1.0.0-\u00e9"}"#)
    );
    assert_eq!(
        e.signature_hmac_sha256,
        "03cda3c9705b01fd2d48e6bd056be4150dc558cafcee5a4225c6ac2720e2d452"
    );
}

/// pyhall-spec §4 V4: PyHall hashes dir A {a_guard.py, b_main.py} and dir B {one file whose name
/// embeds a forged record} identically, so B silently drops A's guard. Deliberate divergence:
/// the Hall refuses B's name (a control character) and A still hashes as PyHall does.
#[test]
fn v4_newline_ambiguity_is_refused() {
    use sha2::{Digest, Sha256};
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("A");
    put(&a, "a_guard.py", b"GUARD = True\n");
    put(&a, "b_main.py", b"print(\"main\")\n");
    assert_eq!(
        hash_tree(&a, &TreeLimits::default()).unwrap().digest,
        "30a87ccc6654e02ce0bdaac5daaa07d3d212a3706dd5323eb05882270bcedacd"
    );
    let b = tmp.path().join("B");
    let guard_hash = wcp_hall::router::hex(&Sha256::digest(b"GUARD = True\n"));
    put(
        &b,
        &format!("a_guard.py\n13\n{guard_hash}\nb_main.py"),
        b"print(\"main\")\n",
    );
    match hash_tree(&b, &TreeLimits::default()) {
        Err(TreeError::Unsafe {
            kind: UnsafeKind::ControlCharacter(0x0a),
            path,
        }) => assert!(path.starts_with("a_guard.py\\n13"), "{path}"),
        other => panic!("expected a control-character refusal, got {other:?}"),
    }
}

#[test]
fn vector_file_is_the_documented_format() {
    let v = load_vectors();
    for p in v["packages"].as_array().unwrap() {
        for f in p["files"].as_array().unwrap() {
            let path = f["path"].as_str().unwrap();
            assert!(!path.starts_with('/') && !path.split('/').any(|c| c.is_empty() || c == ".."));
            assert!(
                f.get("text").is_some()
                    || f.get("b64").is_some()
                    || (f.get("repeat").is_some() && f.get("times").is_some()),
                "{f}"
            );
        }
        assert!(matches!(p["manifest"]["manifest_json"], Value::String(_)));
    }
}
