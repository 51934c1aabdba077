//! `wcp-hall receipts …` and `wcp-hall keys rotate` as a user runs them: real binary, real
//! files, exit codes and output.

use std::fs;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::receipts_common::*;
use serde_json::Value;
use wcp_hall::crypto::{KeyPair, PublicKey};
use wcp_hall::receipt::store;

const BIN: &str = env!("CARGO_BIN_EXE_wcp-hall");

fn run(args: &[&str]) -> Output {
    let out = Command::new(BIN)
        .args(args)
        .env_remove("WCP_HALL_CONFIG")
        .env_remove("CREDENTIALS_DIRECTORY")
        .stdin(Stdio::null())
        .output()
        .expect("run wcp-hall");
    eprintln!(
        "$ wcp-hall {}\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
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

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A log signed by key 1, and its public key file.
fn setup() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let base = tempfile::tempdir().unwrap();
    let log = base.path().join("receipts");
    build_log(&log, key(1), 12, 4);
    let pubkey = base.path().join("receipts.key.pub");
    key(1).public().write(&pubkey).unwrap();
    (base, log, pubkey)
}

#[test]
fn verify_reports_passes_and_failures_with_the_first_bad_seq() {
    let (_base, log, pubkey) = setup();
    let ok = run(&[
        "receipts",
        "verify",
        "--log",
        s(&log),
        "--pubkey",
        s(&pubkey),
    ]);
    assert_eq!(code(&ok), 0);
    assert!(
        stdout(&ok).contains("records: 24 passed, 0 failed"),
        "{}",
        stdout(&ok)
    );
    assert!(stdout(&ok).contains("checkpoints: 4 checked: 4 verified, 0 failed"));
    assert!(
        stdout(&ok)
            .trim_end()
            .ends_with("OK: 24 records and 4 checkpoints verified"),
        "{}",
        stdout(&ok)
    );

    let json = run(&[
        "--json",
        "receipts",
        "verify",
        "--log",
        s(&log),
        "--pubkey",
        s(&pubkey),
    ]);
    let v: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(v["passed"], 24);
    assert_eq!(v["keys"][0]["trusted"], true);

    // Tamper: flip a byte of seq 5's payload.
    let mut all = lines(&log);
    let at = all[5].len() / 3;
    all[5][at] ^= 0x01;
    write_lines(&log, &all);
    let bad = run(&[
        "receipts",
        "verify",
        "--log",
        s(&log),
        "--pubkey",
        s(&pubkey),
    ]);
    assert_eq!(code(&bad), 1);
    let text = stdout(&bad);
    assert!(
        text.contains("FAIL seq 5 (receipts-00000000000000000000.jsonl line 6"),
        "{text}"
    );
    assert!(text.contains("first bad: seq 5"), "{text}");
    assert!(text.contains(" failed"), "{text}");
    let json = run(&[
        "--json",
        "receipts",
        "verify",
        "--log",
        s(&log),
        "--pubkey",
        s(&pubkey),
    ]);
    assert_eq!(code(&json), 1);
    let v: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["first_failure"]["seq"], 5);
}

#[test]
fn verify_with_a_key_that_is_not_the_logs_passes_nothing() {
    let (base, log, _) = setup();
    let other = base.path().join("other.pub");
    key(2).public().write(&other).unwrap();
    let wrong = run(&[
        "receipts",
        "verify",
        "--log",
        s(&log),
        "--pubkey",
        s(&other),
    ]);
    assert_eq!(code(&wrong), 1);
    let text = stdout(&wrong);
    assert!(text.contains("NOT trusted"), "{text}");
    assert!(text.contains("records: 0 passed, 24 failed"), "{text}");
    assert!(text.contains("first bad: seq 0"), "{text}");
}

#[test]
fn verify_checks_external_checkpoints_and_the_configured_copy() {
    let (base, log, pubkey) = setup();
    let saved = base.path().join("kept.checkpoint");
    fs::copy(log.join(store::CHECKPOINT_FILE), &saved).unwrap();
    // Roll back: truncate and remove the log's own checkpoint.
    let all = lines(&log);
    write_lines(&log, &all[..10]);
    fs::remove_file(log.join(store::CHECKPOINT_FILE)).unwrap();
    let quiet = run(&[
        "receipts",
        "verify",
        "--log",
        s(&log),
        "--pubkey",
        s(&pubkey),
    ]);
    assert_eq!(code(&quiet), 0, "a prefix alone looks valid");
    let caught = run(&[
        "receipts",
        "verify",
        "--log",
        s(&log),
        "--pubkey",
        s(&pubkey),
        "--checkpoint",
        s(&saved),
    ]);
    assert_eq!(code(&caught), 1);
    assert!(
        stdout(&caught).contains("first bad: seq 10"),
        "{}",
        stdout(&caught)
    );
    assert!(stdout(&caught).contains("truncated or rolled back"));
    // Every record present passed, but the log fails: the summary says so, last.
    let text = stdout(&caught);
    assert!(text.contains("records: 10 passed, 0 failed"), "{text}");
    assert!(
        text.contains(&format!("checkpoint FAILED: {}", saved.display())),
        "{text}"
    );
    let verdict = text.trim_end().lines().last().unwrap();
    assert!(
        verdict.starts_with("FAILED: 1 problem(s): 0 bad record(s), 1 bad checkpoint(s)"),
        "{text}"
    );

    // Only the last line is bad (a torn write): not a pass either.
    let mut half = all[10].clone();
    half.truncate(half.len() / 2);
    let mut data = fs::read(segment0(&log)).unwrap();
    data.extend_from_slice(&half);
    fs::write(segment0(&log), data).unwrap();
    let o = run(&[
        "receipts",
        "verify",
        "--log",
        s(&log),
        "--pubkey",
        s(&pubkey),
    ]);
    assert_eq!(code(&o), 1);
    let text = stdout(&o);
    assert!(text.contains("torn final line"), "{text}");
    let verdict = text.trim_end().lines().last().unwrap();
    assert!(
        verdict.starts_with(
            "FAILED: 1 problem(s): 0 bad record(s), 0 bad checkpoint(s), and problems outside"
        ),
        "{text}"
    );
    write_lines(&log, &all[..10]);

    // From hall.toml: log_dir, signing_key's .pub as the anchor, checkpoint_copy checked.
    let key_path = base.path().join("receipts.key");
    let cfg = base.path().join("hall.toml");
    fs::write(
        &cfg,
        format!(
            "[receipts]\nlog_dir = \"receipts\"\nsigning_key = \"{}\"\ncheckpoint_copy = \"kept.checkpoint\"\n",
            key_path.display()
        ),
    )
    .unwrap();
    let from_cfg = run(&["receipts", "verify", "--config", s(&cfg)]);
    assert_eq!(code(&from_cfg), 1);
    assert!(stdout(&from_cfg).contains("first bad: seq 10"));
}

#[test]
fn verify_from_a_config_without_log_dir_reads_where_serve_writes() {
    let (base, log, _pubkey) = setup();
    // `serve` writes to <state_dir>/receipts when [receipts] log_dir is unset.
    fs::create_dir(base.path().join("st")).unwrap();
    fs::rename(&log, base.path().join("st/receipts")).unwrap();
    let cfg = base.path().join("hall.toml");
    fs::write(
        &cfg,
        "[paths]\nstate_dir = \"st\"\n[receipts]\nsigning_key = \"receipts.key\"\n",
    )
    .unwrap();
    let o = run(&["receipts", "verify", "--config", s(&cfg)]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("st/receipts"), "{}", stdout(&o));
}

#[test]
fn usage_errors_have_their_exit_codes() {
    let (base, log, pubkey) = setup();
    let missing = run(&[
        "receipts",
        "verify",
        "--log",
        "/nonexistent/receipts",
        "--pubkey",
        s(&pubkey),
    ]);
    assert_eq!(code(&missing), 66);
    assert!(stderr(&missing).contains("hint:"));
    let no_key = run(&["receipts", "verify", "--log", s(&log)]);
    assert_eq!(code(&no_key), 2);
    assert!(stderr(&no_key).contains("--pubkey"), "{}", stderr(&no_key));
    let bad_key = base.path().join("bad.pub");
    fs::write(&bad_key, "not a key\n").unwrap();
    let bad = run(&[
        "receipts",
        "verify",
        "--log",
        s(&log),
        "--pubkey",
        s(&bad_key),
    ]);
    assert_eq!(code(&bad), 65);
    let json = run(&["--json", "receipts", "verify", "--log", s(&log)]);
    let err: Value = serde_json::from_slice(&json.stderr).unwrap();
    assert_eq!(err["error"]["code"], "no_trusted_key");
}

#[test]
fn show_finds_records_by_seq_and_by_receipt_id() {
    let (_base, log, _) = setup();
    let by_seq = run(&["--json", "receipts", "show", "5", "--log", s(&log)]);
    assert_eq!(code(&by_seq), 0);
    let v: Value = serde_json::from_slice(&by_seq.stdout).unwrap();
    assert_eq!(v["seq"], 5);
    assert_eq!(v["hash_ok"], true);
    assert_eq!(v["payload"]["kind"], "executed");
    assert_eq!(v["payload"]["dispatch"]["correlation_id"], "c-2");
    let id = v["payload"]["receipt_id"].as_str().unwrap().to_owned();
    let by_id = run(&["receipts", "show", &id, "--log", s(&log)]);
    assert_eq!(code(&by_id), 0);
    let text = stdout(&by_id);
    assert!(text.starts_with("seq 5 ("), "{text}");
    assert!(text.contains("matches the payload bytes"));
    assert!(text.contains("\"correlation_id\": \"c-2\""));
    let none = run(&["receipts", "show", "999", "--log", s(&log)]);
    assert_eq!(code(&none), 1);
}

#[test]
fn prove_and_verify_proof_round_trip_offline() {
    let (base, log, pubkey) = setup();
    let proof = base.path().join("proof.json");
    let made = run(&["receipts", "prove", "5", "--log", s(&log), "-o", s(&proof)]);
    assert_eq!(code(&made), 0);
    assert!(stdout(&made).contains("checkpoint of 23 records"));
    // The log is not needed any more.
    fs::remove_dir_all(&log).unwrap();
    let ok = run(&[
        "receipts",
        "verify-proof",
        s(&proof),
        "--pubkey",
        s(&pubkey),
    ]);
    assert_eq!(code(&ok), 0);
    assert!(stdout(&ok).contains("proof OK: seq 5 (executed, correlation_id c-2)"));
    let other = base.path().join("other.pub");
    key(2).public().write(&other).unwrap();
    let wrong = run(&["receipts", "verify-proof", s(&proof), "--pubkey", s(&other)]);
    assert_eq!(code(&wrong), 1);
    assert!(stdout(&wrong).contains("proof FAILED"));
    // A tampered bundle.
    let mut v: Value = serde_json::from_str(&fs::read_to_string(&proof).unwrap()).unwrap();
    v["seq"] = Value::from(6);
    fs::write(&proof, v.to_string()).unwrap();
    let bad = run(&[
        "--json",
        "receipts",
        "verify-proof",
        s(&proof),
        "--pubkey",
        s(&pubkey),
    ]);
    assert_eq!(code(&bad), 1);
    let out: Value = serde_json::from_slice(&bad.stdout).unwrap();
    assert_eq!(out["ok"], false);
    fs::write(&proof, "{\"format\": 1}").unwrap();
    let malformed = run(&[
        "receipts",
        "verify-proof",
        s(&proof),
        "--pubkey",
        s(&pubkey),
    ]);
    assert_eq!(code(&malformed), 65);
}

#[test]
fn prove_refuses_a_receipt_no_checkpoint_covers() {
    let base = tempfile::tempdir().unwrap();
    let log = base.path().join("receipts");
    let (l, _) = wcp_hall::receipt::ReceiptLog::open(options(&log), key(1)).unwrap();
    l.append_denied(denied("c")).unwrap();
    drop(l);
    let out = run(&["receipts", "prove", "0", "--log", s(&log)]);
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("not covered by a checkpoint"));
}

#[test]
fn keys_rotate_hands_over_to_a_new_key() {
    let (base, log, _) = setup();
    let key_path = base.path().join("receipts.key");
    // setup() wrote only the public key; the private key goes beside it.
    fs::remove_file(base.path().join("receipts.key.pub")).unwrap();
    key(1).write(&key_path).unwrap();
    let kept = base.path().join("old.key");
    let out = run(&[
        "keys",
        "rotate",
        "--log",
        s(&log),
        "--key",
        s(&key_path),
        "--keep-old",
        s(&kept),
    ]);
    assert_eq!(code(&out), 0);
    assert!(stdout(&out).contains("receipt signing key rotated"));
    let new = KeyPair::read(&key_path).unwrap();
    assert_ne!(new.id(), key(1).id());
    assert_eq!(KeyPair::read(&kept).unwrap().id(), key(1).id());
    let new_pub = PublicKey::read(&base.path().join("receipts.key.pub")).unwrap();
    assert_eq!(new_pub.id(), new.id());
    for anchor in ["receipts.key.pub", "old.pub"] {
        let p = base.path().join(anchor);
        if anchor == "old.pub" {
            key(1).public().write(&p).unwrap();
        }
        let v = run(&["receipts", "verify", "--log", s(&log), "--pubkey", s(&p)]);
        assert_eq!(code(&v), 0, "anchored at {anchor}");
    }
}

#[test]
fn consistency_and_verify_consistency_round_trip() {
    let (base, log, pubkey) = setup();
    // Keep today's checkpoint, let the log grow, then prove the new one extends it.
    let old = base.path().join("old.checkpoint");
    fs::copy(log.join(store::CHECKPOINT_FILE), &old).unwrap();
    let (l, _) = wcp_hall::receipt::ReceiptLog::open(options(&log), key(1)).unwrap();
    l.append_denied(denied("later")).unwrap();
    l.shutdown().unwrap();
    let proof = base.path().join("consistency.txt");
    let made = run(&[
        "receipts",
        "consistency",
        s(&old),
        "--log",
        s(&log),
        "-o",
        s(&proof),
    ]);
    assert_eq!(code(&made), 0);
    assert!(fs::read_to_string(&proof).unwrap().starts_with("old 24\n"));
    let ok = run(&[
        "receipts",
        "verify-consistency",
        s(&old),
        s(&proof),
        "--pubkey",
        s(&pubkey),
    ]);
    assert_eq!(code(&ok), 0);
    assert!(
        stdout(&ok).contains("grew from 24 to 25 records"),
        "{}",
        stdout(&ok)
    );
    let text = fs::read_to_string(&proof)
        .unwrap()
        .replacen("old 24", "old 22", 1);
    fs::write(&proof, text).unwrap();
    let bad = run(&[
        "receipts",
        "verify-consistency",
        s(&old),
        s(&proof),
        "--pubkey",
        s(&pubkey),
    ]);
    assert_eq!(code(&bad), 1);
    assert!(stdout(&bad).contains("consistency FAILED"));
}

#[test]
fn keys_generate_writes_a_private_key_and_its_public_key() {
    let base = tempfile::tempdir().unwrap();
    let path = base.path().join("receipts.key");
    let out = run(&[
        "keys",
        "generate",
        s(&path),
        "--origin",
        "hall.test/receipts",
    ]);
    assert_eq!(code(&out), 0);
    assert!(stdout(&out).contains("hall.test/receipts+"));
    let key = KeyPair::read(&path).unwrap();
    let public = PublicKey::read(&base.path().join("receipts.key.pub")).unwrap();
    assert_eq!(public.id(), key.id());
    // Never overwritten.
    let again = run(&["keys", "generate", s(&path)]);
    assert_ne!(code(&again), 0);
    assert!(
        stderr(&again).contains("never overwritten"),
        "{}",
        stderr(&again)
    );
    let nowhere = base.path().join("missing/receipts.key");
    let o = run(&["keys", "generate", s(&nowhere)]);
    assert_eq!(code(&o), 74);
    assert!(
        stderr(&o).contains("does not exist; create it first"),
        "{}",
        stderr(&o)
    );
    assert_eq!(KeyPair::read(&path).unwrap().id(), key.id());
}

fn tool(program: &str, args: &[&str]) -> Output {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{program} must be installed (.ci/run installs it): {e}"));
    eprintln!(
        "$ {program} {}\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn keys_export_writes_what_openssl_ssh_keygen_and_note_verifiers_read() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // Both kinds of key the Hall has: a receipt signing key and a package signing key.
    let receipt_key = dir.join("receipts.key");
    let o = run(&[
        "--json",
        "keys",
        "generate",
        s(&receipt_key),
        "--origin",
        "hall.test/receipts",
    ]);
    assert_eq!(code(&o), 0);
    let generated: Value = serde_json::from_str(&stdout(&o)).unwrap();
    let package_key = dir.join("release.key");
    assert_eq!(code(&run(&["keygen", s(&package_key)])), 0);
    for key in [&receipt_key, &package_key] {
        let name = key.file_name().unwrap().to_str().unwrap();
        let export = |extra: &[&str]| {
            let mut args = vec!["keys", "export", s(key)];
            args.extend_from_slice(extra);
            let o = run(&args);
            assert_eq!(code(&o), 0, "{}", stderr(&o));
            stdout(&o)
        };
        let write = |file: &str, text: &str| {
            let p = dir.join(format!("{name}.{file}"));
            fs::write(&p, text).unwrap();
            p
        };
        // PEM: openssl derives from the private key the public key the Hall exports, and
        // reads the public key alone; a flipped byte in the private key's DER is refused.
        let private_pem = export(&["--format", "pem"]);
        let public_pem = export(&["--format", "pem", "--public"]);
        let pem_path = write("pem", &private_pem);
        let o = tool("openssl", &["pkey", "-in", s(&pem_path), "-pubout"]);
        assert!(o.status.success());
        assert_eq!(stdout(&o), public_pem);
        let pub_pem_path = write("pub.pem", &public_pem);
        let o = tool(
            "openssl",
            &["pkey", "-pubin", "-in", s(&pub_pem_path), "-noout", "-text"],
        );
        assert!(
            o.status.success() && stdout(&o).contains("ED25519"),
            "{}",
            stdout(&o)
        );
        // The .pub file gives the same public key.
        let pub_file = dir.join(format!("{name}.pub"));
        assert_eq!(
            stdout(&run(&[
                "keys",
                "export",
                s(&pub_file),
                "--format",
                "pem",
                "--public"
            ])),
            public_pem
        );
        let mut lines: Vec<String> = private_pem.lines().map(str::to_owned).collect();
        // The algorithm identifier 1.3.101.112 (Ed25519) becomes 1.3.101.113 (Ed448): 32 bytes do
        // not make an Ed448 key.
        lines[1] = lines[1].replacen("K2VwBCIE", "K2VxBCIE", 1);
        assert_ne!(lines.join("\n") + "\n", private_pem);
        let broken = write("broken.pem", &(lines.join("\n") + "\n"));
        assert!(
            !tool("openssl", &["pkey", "-in", s(&broken), "-noout"])
                .status
                .success()
        );
        // OpenSSH: ssh-keygen fingerprints the public key and derives it from the private one.
        let ssh_pub = export(&["--format", "openssh", "--public", "--comment", "auditor"]);
        let ssh_pub_path = write("ssh.pub", &ssh_pub);
        let o = tool("ssh-keygen", &["-l", "-f", s(&ssh_pub_path)]);
        assert!(
            o.status.success() && stdout(&o).contains("(ED25519)"),
            "{}",
            stdout(&o)
        );
        let ssh_priv_path = dir.join(format!("{name}.ssh"));
        let o = run(&[
            "keys",
            "export",
            s(key),
            "--format",
            "openssh",
            "--comment",
            "auditor",
            "-o",
            s(&ssh_priv_path),
        ]);
        assert_eq!(code(&o), 0);
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(
            fs::metadata(&ssh_priv_path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let o = tool("ssh-keygen", &["-y", "-f", s(&ssh_priv_path)]);
        assert!(o.status.success());
        assert_eq!(
            stdout(&o).split_whitespace().take(2).collect::<Vec<_>>(),
            ssh_pub.split_whitespace().take(2).collect::<Vec<_>>()
        );
        // Never overwritten.
        let o = run(&[
            "keys",
            "export",
            s(key),
            "--format",
            "pem",
            "-o",
            s(&ssh_priv_path),
        ]);
        assert_eq!(code(&o), 74);
        assert!(stderr(&o).contains("hint:"), "{}", stderr(&o));
        // C2SP: the verifier key parses and names this key.
        let vkey = export(&[
            "--format",
            "c2sp",
            "--public",
            "--name",
            "hall.test/receipts",
        ]);
        let (vname, vpub) = wcp_hall::receipt::checkpoint::parse_verifier_key(vkey.trim()).unwrap();
        assert_eq!(vname, "hall.test/receipts");
        assert_eq!(vpub, PublicKey::read(&pub_file).unwrap());
        if key == &receipt_key {
            assert_eq!(vkey.trim(), generated["verifier_key"]);
        }
        let skey = export(&["--format", "c2sp", "--name", "hall.test/receipts"]);
        assert!(
            skey.starts_with("PRIVATE+KEY+hall.test/receipts+"),
            "{skey}"
        );
    }
    // JSON output, and the errors with their exit codes and hints.
    let o = run(&[
        "--json",
        "keys",
        "export",
        s(&receipt_key),
        "--format",
        "c2sp",
        "--public",
    ]);
    assert_eq!(code(&o), 0);
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["public"], true);
    assert_eq!(v["format"], "c2sp");
    assert_eq!(v["key_id"], generated["key_id"]);
    assert!(v["text"].as_str().unwrap().contains('+'));
    let pub_file = dir.join("receipts.key.pub");
    let o = run(&["keys", "export", s(&pub_file), "--format", "pem"]);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("hint: pass --public"), "{}", stderr(&o));
    let o = run(&["keys", "export", s(&dir.join("missing")), "--format", "pem"]);
    assert_eq!(code(&o), 66);
    let junk = dir.join("junk");
    fs::write(&junk, "not a key\n").unwrap();
    let o = run(&["--json", "keys", "export", s(&junk), "--format", "pem"]);
    assert_eq!(code(&o), 65);
    let err: Value = serde_json::from_str(stderr(&o).lines().last().unwrap()).unwrap();
    assert!(err["error"]["hint"].as_str().unwrap().contains("keygen"));
    use std::os::unix::fs::PermissionsExt as _;
    fs::set_permissions(&receipt_key, fs::Permissions::from_mode(0o644)).unwrap();
    let o = run(&["keys", "export", s(&receipt_key), "--format", "pem"]);
    assert_eq!(code(&o), 78);
    assert!(stderr(&o).contains("chmod 600"), "{}", stderr(&o));
    let o = run(&[
        "keys",
        "export",
        s(&pub_file),
        "--format",
        "c2sp",
        "--public",
        "--name",
        "a+b",
    ]);
    assert_eq!(code(&o), 2);
}

#[test]
fn prove_as_a_c2sp_tlog_proof_and_verify_it_with_the_receipt() {
    let (base, log, pubkey) = setup();
    let proof = base.path().join("proof.tlog");
    let o = run(&[
        "receipts",
        "prove",
        "5",
        "--log",
        s(&log),
        "--format",
        "tlog-proof",
        "-o",
        s(&proof),
    ]);
    assert_eq!(code(&o), 0);
    let text = fs::read_to_string(&proof).unwrap();
    let (head, note) = text.split_once("\n\n").unwrap();
    let mut lines = head.lines();
    assert_eq!(lines.next(), Some("c2sp.org/tlog-proof@v1"));
    assert_eq!(lines.next(), Some("index 5"));
    assert!(lines.count() >= 1);
    assert!(note.contains("\n\u{2014} "), "{note}");
    // The receipt: its line of the segment, exactly as stored.
    let line = stdout(&run(&["--json", "receipts", "show", "5", "--log", s(&log)]));
    let shown: Value = serde_json::from_str(&line).unwrap();
    let receipt = base.path().join("receipt.json");
    let segment = fs::read_dir(&log)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".jsonl"))
        .unwrap();
    let stored = fs::read_to_string(&segment).unwrap();
    let line5 = stored
        .lines()
        .find(|l| l.ends_with("\"seq\":5}"))
        .expect("the line of seq 5");
    fs::write(&receipt, line5).unwrap();
    let verify = |receipt: &Path| {
        run(&[
            "--json",
            "receipts",
            "verify-proof",
            s(&proof),
            "--receipt",
            s(receipt),
            "--pubkey",
            s(&pubkey),
        ])
    };
    let o = verify(&receipt);
    assert_eq!(code(&o), 0, "{}", stdout(&o));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["proof"]["seq"], 5);
    assert_eq!(v["proof"]["receipt_id"], shown["payload"]["receipt_id"]);
    // The bare envelope works too; another receipt, a flipped proof hash, a wrong key fail.
    let env_only = base.path().join("envelope.json");
    let line_value: Value = serde_json::from_str(line5).unwrap();
    fs::write(&env_only, line_value["envelope"].to_string()).unwrap();
    assert_eq!(code(&verify(&env_only)), 0);
    let line6 = stored.lines().find(|l| l.ends_with("\"seq\":6}")).unwrap();
    let other = base.path().join("other.json");
    fs::write(&other, line6).unwrap();
    let o = verify(&other);
    assert_eq!(code(&o), 1);
    assert!(stdout(&o).contains("index 5"), "{}", stdout(&o));
    let hash_line = head.lines().nth(2).unwrap();
    let mut raw =
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, hash_line).unwrap();
    raw[0] ^= 1;
    let flipped = text.replacen(
        hash_line,
        &base64::Engine::encode(&base64::engine::general_purpose::STANDARD, raw),
        1,
    );
    fs::write(&proof, &flipped).unwrap();
    let o = verify(&receipt);
    assert_eq!(code(&o), 1);
    assert!(stdout(&o).contains("inclusion proof"), "{}", stdout(&o));
    fs::write(&proof, &text).unwrap();
    let wrong = base.path().join("wrong.pub");
    key(2).public().write(&wrong).unwrap();
    let o = run(&[
        "receipts",
        "verify-proof",
        s(&proof),
        "--receipt",
        s(&receipt),
        "--pubkey",
        s(&wrong),
    ]);
    assert_eq!(code(&o), 1);
    // Without the receipt: a usage error that says what to pass.
    let o = run(&[
        "receipts",
        "verify-proof",
        s(&proof),
        "--pubkey",
        s(&pubkey),
    ]);
    assert_eq!(code(&o), 2);
    assert!(
        stderr(&o).contains("hint: pass --receipt"),
        "{}",
        stderr(&o)
    );
    fs::write(&other, "[1,2").unwrap();
    assert_eq!(code(&verify(&other)), 65);
}
