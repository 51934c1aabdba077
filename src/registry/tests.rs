//! Registry tests: record validation, the enrolled directory, and the routing snapshot.

use std::fs;
use std::path::Path;

use serde_json::{Value, json};

use super::*;
use crate::router::{
    self, CandidateStatus, DecisionContext, PrivilegeCheck, RegistryView, Router, RouterConfig,
    WorkerHashes,
};
use crate::rules::{Rule, RuleSet};
use crate::wcp::{DataLabel, DenyCode, Env, RouteInput, SkipReason};

const HASH: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// PyHall's hello-worker example record (with its `notes`), plus an attestation.
fn sample() -> Value {
    json!({
        "worker_id": "org.example.hello-greeter",
        "worker_species_id": "wrk.hello.greeter",
        "capabilities": ["cap.hello.greet"],
        "risk_tier": "low",
        "idempotency": "full",
        "determinism": "deterministic",
        "required_controls": ["ctrl.obs.audit-log-append-only"],
        "currently_implements": ["ctrl.obs.audit-log-append-only", "ctrl.blast_radius_scoring"],
        "allowed_environments": ["dev", "stage", "prod"],
        "blast_radius": {"data": 0, "network": 0, "financial": 0, "time": 0, "reversibility": "reversible"},
        "privilege_envelope": {"secrets_access": [], "network_egress": "none", "filesystem_writes": [], "tools": []},
        "owner": "org.example",
        "contact": "you@example.com",
        "artifact_hash": format!("sha256:{HASH}"),
        "catalog_version_min": "1.0.0",
        "attestation": {"code_hash": HASH, "hash_method": "sha256-file", "source_file": "worker.py",
                         "attested_at": "2026-01-01T00:00:00Z", "attested_by": "org.example"},
        "notes": "Minimal greeting worker."
    })
}

fn with(mut v: Value, path: &[&str], new: Value) -> Value {
    let mut cur = &mut v;
    for key in &path[..path.len() - 1] {
        cur = &mut cur[*key];
    }
    let last = path[path.len() - 1];
    match (new, cur.as_object_mut()) {
        (Value::Null, Some(obj)) if last.starts_with('-') => {
            obj.shift_remove(&last[1..]);
        }
        (new, Some(obj)) => {
            obj.insert(last.to_owned(), new);
        }
        (_, None) => panic!("not an object at {path:?}"),
    }
    v
}

fn problems(v: &Value) -> Vec<RecordError> {
    RegistryRecord::from_value(v)
        .expect_err("record should be rejected")
        .problems
}

/// Asserts exactly one problem, at `field`, whose message contains `needle`.
fn one_problem(v: Value, field: &str, needle: &str) -> RecordError {
    let ps = problems(&v);
    assert_eq!(ps.len(), 1, "expected one problem, got {ps:#?}");
    let p = ps.into_iter().next().expect("one problem");
    assert_eq!(p.field(), field, "{p}");
    assert!(
        p.to_string().contains(needle),
        "{p:?} lacks {needle:?}: {p}"
    );
    p
}

fn record(v: Value) -> RegistryRecord {
    RegistryRecord::from_value(&v).unwrap_or_else(|e| panic!("{e}"))
}

mod record_tests {
    use super::*;

    #[test]
    fn sample_parses_and_round_trips() {
        let r = record(sample());
        assert_eq!(r.risk_tier, RiskTier::Low);
        assert_eq!(
            r.allowed_environments,
            vec![Env::Dev, Env::Stage, Env::Prod]
        );
        assert_eq!(
            r.privilege_envelope.as_ref().map(|e| &e.network_egress),
            Some(&NetworkEgress::None)
        );
        assert!(r.validate().is_ok());
        let text = serde_json::to_string(&r).expect("serialises");
        assert_eq!(RegistryRecord::from_json_str(&text), Ok(r.clone()));
        // The written shape is the input shape (every key of the sample, same values).
        assert_eq!(serde_json::to_value(&r).expect("serialises"), sample());
    }

    #[test]
    fn minimal_record_and_nulls_mean_absent() {
        let r = record(json!({
            "worker_id": "x.team.w",
            "worker_species_id": "wrk.a",
            "capabilities": ["cap.a"],
            "risk_tier": "critical",
            "owner": null,
            "allowed_environments": null
        }));
        assert_eq!(r.owner, None);
        assert!(r.allowed_environments.is_empty());
        assert!(r.required_controls.is_empty());
    }

    #[test]
    fn worker_id_namespace() {
        let e = one_problem(
            with(sample(), &["worker_id"], json!("foo")),
            "worker_id",
            "",
        );
        assert_eq!(
            e.to_string(),
            "worker_id \"foo\" is not in an org.<ns> or x.<ns> namespace; example: org.acme.summarizer.1"
        );
        one_problem(
            with(sample(), &["worker_id"], json!("wrk.acme.x")),
            "worker_id",
            "namespace",
        );
    }

    #[test]
    fn worker_id_format() {
        for (id, needle) in [
            ("org.acme", "fewer than 3 segments"),
            ("org..x", "empty segment"),
            ("org.Acme.x", "characters outside a-z, 0-9 and '-'"),
            ("org.acme.my_worker", "characters outside a-z, 0-9 and '-'"),
            ("org.acme.x/y", "characters outside"),
        ] {
            one_problem(
                with(sample(), &["worker_id"], json!(id)),
                "worker_id",
                needle,
            );
        }
        let long = format!("org.acme.{}", "a".repeat(120));
        one_problem(
            with(sample(), &["worker_id"], json!(long)),
            "worker_id",
            "longer than 128",
        );
        record(with(
            sample(),
            &["worker_id"],
            json!("org.acme.summarizer.1"),
        ));
        record(with(sample(), &["worker_id"], json!("x.acme.a-b.c")));
    }

    #[test]
    fn species_id() {
        for (id, needle) in [
            ("wrk", "does not start with \"wrk.\""),
            ("wrk.", "empty segment"),
            ("doc.summarizer", "does not start with"),
            ("wrk.Doc", "outside a-z"),
        ] {
            one_problem(
                with(sample(), &["worker_species_id"], json!(id)),
                "worker_species_id",
                needle,
            );
        }
        record(with(
            sample(),
            &["worker_species_id"],
            json!("wrk.doc_x.y-z"),
        ));
    }

    #[test]
    fn capabilities() {
        one_problem(
            with(sample(), &["capabilities"], json!([])),
            "capabilities",
            "at least one capability",
        );
        one_problem(
            with(sample(), &["capabilities"], json!(["cap.a", "summarize"])),
            "capabilities[1]",
            "\"summarize\" does not start with \"cap.\"",
        );
        one_problem(
            with(sample(), &["capabilities"], json!(["cap.a", 7])),
            "capabilities[1]",
            "expected a string, got an integer",
        );
    }

    #[test]
    fn risk_tier() {
        let e = one_problem(
            with(sample(), &["risk_tier"], json!("extreme")),
            "risk_tier",
            "",
        );
        assert_eq!(
            e.to_string(),
            "risk_tier: \"extreme\" is not allowed; expected one of: low, medium, high, critical"
        );
        one_problem(
            with(sample(), &["risk_tier"], json!("Low")),
            "risk_tier",
            "not allowed",
        );
    }

    #[test]
    fn artifact_hash() {
        for bad in [
            HASH.to_owned(),
            format!("sha256:{}", HASH.to_uppercase()),
            format!("sha256:{HASH}\n"),
            format!("sha256:{}", &HASH[1..]),
        ] {
            one_problem(
                with(sample(), &["artifact_hash"], json!(bad)),
                "artifact_hash",
                "\"sha256:\" followed by 64 lowercase hex digits",
            );
        }
    }

    #[test]
    fn control_ids() {
        one_problem(
            with(
                sample(),
                &["currently_implements"],
                json!(["ctrl.ok", "ctrl.Bad"]),
            ),
            "currently_implements[1]",
            "is not a control id",
        );
        one_problem(
            with(sample(), &["required_controls"], json!(["ctrl."])),
            "required_controls[0]",
            "is not a control id",
        );
        // Underscores stay accepted, as in PyHall.
        let r = record(with(
            sample(),
            &["required_controls"],
            json!([
                "ctrl.blast_radius_scoring",
                "ctrl.privilege_envelopes_required"
            ]),
        ));
        assert_eq!(r.required_controls.len(), 2);
    }

    #[test]
    fn code_hash() {
        one_problem(
            with(
                sample(),
                &["attestation", "code_hash"],
                json!(format!("sha256:{HASH}")),
            ),
            "attestation.code_hash",
            "exactly 64 lowercase hex digits",
        );
    }

    #[test]
    fn blast_dimensions() {
        one_problem(
            with(sample(), &["blast_radius", "data"], json!(6)),
            "blast_radius.data",
            "6 is out of range",
        );
        one_problem(
            with(sample(), &["blast_radius", "time"], json!(-1)),
            "blast_radius.time",
            "-1 is out of range",
        );
        one_problem(
            with(sample(), &["blast_radius", "network"], json!(100000)),
            "blast_radius.network",
            "out of range",
        );
        one_problem(
            with(sample(), &["blast_radius", "financial"], json!(1.5)),
            "blast_radius.financial",
            "expected an integer 0 to 5",
        );
        one_problem(
            with(sample(), &["blast_radius", "-reversibility"], Value::Null),
            "blast_radius.reversibility",
            "is required",
        );
        // A record built in code is checked by validate().
        let mut r = record(sample());
        if let Some(b) = r.blast_radius.as_mut() {
            b.financial = 9;
        }
        let err = r.validate().expect_err("9 is out of range");
        assert_eq!(err.problems.len(), 1);
        assert_eq!(err.problems[0].field(), "blast_radius.financial");
    }

    #[test]
    fn nested_or_repeated_write_directories_are_refused() {
        let writes = ["privilege_envelope", "filesystem_writes"];
        one_problem(
            with(sample(), &writes, json!(["out/", "out/x/"])),
            "privilege_envelope.filesystem_writes[1]",
            "\"out/\" and \"out/x/\" are nested",
        );
        one_problem(
            with(sample(), &writes, json!(["a/b", "log/", "a/b/"])),
            "privilege_envelope.filesystem_writes[2]",
            "name the same directory",
        );
        // What the Hall would refuse at dispatch is refused when the record loads.
        for bad in ["a//b/", "./out", "out/../etc", ""] {
            let ps = problems(&with(sample(), &writes, json!(["log/", bad])));
            assert!(
                ps.iter()
                    .any(|p| p.field() == "privilege_envelope.filesystem_writes[1]"
                        && p.to_string().contains("plain relative path")),
                "{bad}: {ps:#?}"
            );
        }
        // Separate directories, and a relative and an absolute entry, are fine.
        RegistryRecord::from_value(&with(sample(), &writes, json!(["out/", "outx/", "/out/x"])))
            .expect("separate directories");
    }

    #[test]
    fn network_egress() {
        let egress = ["privilege_envelope", "network_egress"];
        one_problem(
            with(sample(), &egress, json!("any")),
            "privilege_envelope.network_egress",
            "\"any\" is not allowed",
        );
        one_problem(
            with(sample(), &egress, json!([])),
            "privilege_envelope.network_egress",
            "write \"none\"",
        );
        one_problem(
            with(
                sample(),
                &egress,
                json!(["api.example.com:443", "example.com"]),
            ),
            "privilege_envelope.network_egress[1]",
            "has no \":port\"",
        );
        one_problem(
            with(sample(), &egress, json!(["example.com:0"])),
            "privilege_envelope.network_egress[0]",
            "port number 1 to 65535",
        );
        one_problem(
            with(sample(), &egress, json!(true)),
            "privilege_envelope.network_egress",
            "expected \"none\" or an array",
        );
        one_problem(
            with(
                sample(),
                &["privilege_envelope", "-network_egress"],
                Value::Null,
            ),
            "privilege_envelope.network_egress",
            "is required",
        );
        let r = record(with(
            sample(),
            &egress,
            json!(["api.example.com:443", "10.0.0.1:8080", "[::1]:9000"]),
        ));
        assert_eq!(
            r.privilege_envelope.map(|e| e.network_egress),
            Some(NetworkEgress::Allowlist(vec![
                "api.example.com:443".into(),
                "10.0.0.1:8080".into(),
                "[::1]:9000".into()
            ]))
        );
    }

    #[test]
    fn environments() {
        one_problem(
            with(
                sample(),
                &["allowed_environments"],
                json!(["dev", "production"]),
            ),
            "allowed_environments[1]",
            "\"production\" is not allowed; expected one of: dev, stage, prod, edge",
        );
    }

    #[test]
    fn unknown_missing_wrong_type_and_control_chars() {
        one_problem(
            with(sample(), &["currently_implement"], json!([])),
            "currently_implement",
            "unknown field currently_implement; allowed here: worker_id",
        );
        one_problem(
            with(sample(), &["privilege_envelope", "egress"], json!({})),
            "privilege_envelope.egress",
            "unknown field",
        );
        one_problem(
            with(sample(), &["-worker_id"], Value::Null),
            "worker_id",
            "worker_id is required",
        );
        one_problem(
            with(sample(), &["owner"], json!(3)),
            "owner",
            "expected a string, got an integer",
        );
        one_problem(
            with(sample(), &["attestation"], json!("yes")),
            "attestation",
            "expected an object, got a string",
        );
        one_problem(
            with(sample(), &["contact"], json!("a\nb")),
            "contact",
            "control character (U+000A)",
        );
    }

    #[test]
    fn every_problem_is_reported_once() {
        let v = json!({
            "worker_species_id": "species",
            "capabilities": ["summarize", 1],
            "risk_tier": "extreme",
            "currently_implements": ["CTRL.X"],
            "blast_radius": {"data": 9, "network": 0, "financial": 0, "time": 0, "reversibility": "r"},
            "surprise": true
        });
        let fields: Vec<String> = problems(&v).iter().map(|p| p.field().to_owned()).collect();
        assert_eq!(
            fields,
            [
                "surprise",
                "worker_id",
                "worker_species_id",
                "capabilities[1]",
                "capabilities[0]",
                "risk_tier",
                "currently_implements[0]",
                "blast_radius.data",
            ]
        );
    }

    #[test]
    fn not_json_or_not_an_object() {
        let e = RegistryRecord::from_json_str("{\"worker_id\": ").expect_err("truncated");
        assert!(
            e.to_string()
                .starts_with("invalid registry record: record is not valid JSON"),
            "{e}"
        );
        let e = RegistryRecord::from_json_str("[1]").expect_err("array");
        assert_eq!(e.problems, vec![RecordError::NotAnObject("an array")]);
    }

    #[test]
    fn deserialize_applies_the_same_rules() {
        let ok: Result<RegistryRecord, _> = serde_json::from_value(sample());
        assert!(ok.is_ok());
        let bad: Result<RegistryRecord, _> =
            serde_json::from_value(with(sample(), &["worker_id"], json!("foo")));
        let msg = bad.expect_err("rejected").to_string();
        assert!(msg.contains("namespace"), "{msg}");
    }
}

mod store_tests {
    use super::*;

    fn text(v: &Value) -> String {
        serde_json::to_string(v).expect("serialises")
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut n: Vec<String> = fs::read_dir(dir)
            .expect("dir readable")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        n.sort();
        n
    }

    #[test]
    fn enroll_writes_reloads_and_replaces() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("enrolled");
        let out = enroll(&dir, &text(&sample())).expect("enrolls");
        assert_eq!(out.action, EnrollAction::Created);
        assert_eq!(out.worker_id, "org.example.hello-greeter");
        assert_eq!(out.path, dir.join("org.example.hello-greeter.json"));
        assert_eq!(names(&dir), ["org.example.hello-greeter.json"]);

        let written = fs::read_to_string(&out.path).expect("readable");
        assert!(written.ends_with("}\n"), "trailing newline: {written:?}");
        assert!(
            written.starts_with("{\n  \"worker_id\""),
            "pretty: {written:?}"
        );

        let loaded = RegistryDir::open(&dir).expect("loads");
        assert_eq!(loaded.records().len(), 1);
        assert_eq!(loaded.records()[0].record, record(sample()));
        assert_eq!(
            loaded.records()[0].file_name,
            "org.example.hello-greeter.json"
        );

        let changed = with(sample(), &["risk_tier"], json!("high"));
        let out = enroll(&dir, &text(&changed)).expect("re-enrolls");
        assert_eq!(out.action, EnrollAction::Replaced);
        assert_eq!(names(&dir), ["org.example.hello-greeter.json"]);
        let loaded = RegistryDir::open(&dir).expect("loads");
        assert_eq!(loaded.records().len(), 1);
        assert_eq!(loaded.records()[0].record.risk_tier, RiskTier::High);
    }

    #[cfg(unix)]
    #[test]
    fn enroll_creates_the_directory_0750_and_file_0640() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("a").join("enrolled");
        let out = enroll(&dir, &text(&sample())).expect("enrolls");
        let dir_mode = fs::metadata(&dir).expect("exists").permissions().mode() & 0o777;
        assert_eq!(dir_mode & !0o750, 0, "dir mode {dir_mode:o}");
        assert_ne!(dir_mode & 0o700, 0, "owner can use it: {dir_mode:o}");
        let file_mode = fs::metadata(&out.path)
            .expect("exists")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(file_mode, 0o640);

        // In a world-readable directory (an install's /etc/wcp-hall/registry) the record is
        // world-readable too, and root's enrollment gives it the directory's group, so the
        // Hall's own user can read what `sudo wcp-hall enroll` wrote.
        use std::os::unix::fs::MetadataExt;
        let open = tmp.path().join("open");
        fs::create_dir(&open).expect("mkdir");
        fs::set_permissions(&open, fs::Permissions::from_mode(0o755)).expect("chmod");
        if nix::unistd::geteuid().is_root() {
            std::os::unix::fs::chown(&open, None, Some(65534)).expect("chgrp");
        }
        let out = enroll(&open, &text(&sample())).expect("enrolls");
        let meta = fs::metadata(&out.path).expect("exists");
        assert_eq!(meta.permissions().mode() & 0o777, 0o644);
        assert_eq!(meta.gid(), fs::metadata(&open).expect("dir").gid());
    }

    #[test]
    fn invalid_record_writes_nothing() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("enrolled");
        let bad = with(sample(), &["worker_id"], json!("foo"));
        let err = enroll(&dir, &text(&bad)).expect_err("rejected");
        assert!(matches!(err, EnrollError::Invalid(_)), "{err}");
        assert!(err.to_string().contains("nothing was written"), "{err}");
        assert!(!dir.exists(), "directory must not be created");

        fs::create_dir(&dir).expect("mkdir");
        enroll(&dir, &text(&sample())).expect("enrolls");
        let err = enroll(&dir, "{not json").expect_err("rejected");
        assert!(matches!(err, EnrollError::Invalid(_)), "{err}");
        assert_eq!(names(&dir), ["org.example.hello-greeter.json"]);
        // The earlier record is untouched.
        let loaded = RegistryDir::open(&dir).expect("loads");
        assert_eq!(loaded.records()[0].record, record(sample()));
    }

    #[test]
    fn enroll_record_validates_and_refuses_unsafe_names() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut r = record(sample());
        r.worker_id = "../org.evil.x".into();
        let err = enroll_record(tmp.path(), &r).expect_err("rejected");
        assert!(matches!(err, EnrollError::Invalid(_)), "{err}");
        assert!(names(tmp.path()).is_empty());

        assert_eq!(record_file_name("../x"), None);
        assert_eq!(record_file_name(".hidden"), None);
        assert_eq!(record_file_name("a/b"), None);
        assert_eq!(record_file_name(""), None);
        assert_eq!(record_file_name("org.a.b").as_deref(), Some("org.a.b.json"));
    }

    #[test]
    fn enroll_into_a_file_path_fails() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let file = tmp.path().join("not-a-dir");
        fs::write(&file, "x").expect("write");
        let err = enroll(&file, &text(&sample())).expect_err("not a dir");
        assert!(matches!(err, EnrollError::NotADirectory { .. }), "{err}");
    }

    #[test]
    fn missing_directory_is_an_error_with_a_hint() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let err = RegistryDir::open(tmp.path().join("nope")).expect_err("missing");
        assert!(matches!(err, RegistryDirError::Missing { .. }), "{err}");
        assert!(err.to_string().contains("wcp-hall enroll"), "{err}");
    }

    #[test]
    fn open_loads_in_file_name_order_and_ignores_other_entries() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path();
        for id in ["org.b.worker", "org.a.worker", "x.c.worker"] {
            enroll(dir, &text(&with(sample(), &["worker_id"], json!(id)))).expect("enrolls");
        }
        fs::write(dir.join("README.md"), "not a record").expect("write");
        fs::write(dir.join(".org.z.worker.json.tmp"), "{").expect("write");
        fs::write(dir.join(".hidden.json"), "{").expect("write");
        let loaded = RegistryDir::open(dir).expect("loads");
        let ids: Vec<&str> = loaded
            .records()
            .iter()
            .map(|l| l.record.worker_id.as_str())
            .collect();
        assert_eq!(ids, ["org.a.worker", "org.b.worker", "x.c.worker"]);
    }

    #[test]
    fn bad_files_fail_the_whole_directory_naming_each() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path();
        enroll(dir, &text(&sample())).expect("enrolls");
        fs::write(dir.join("org.broken.json.json"), "{ nope").expect("write");
        fs::write(
            dir.join("renamed.json"),
            text(&with(sample(), &["worker_id"], json!("org.other.w"))),
        )
        .expect("write");
        fs::write(
            dir.join("org.bad.w.json"),
            text(&with(
                with(sample(), &["worker_id"], json!("org.bad.w")),
                &["risk_tier"],
                json!("extreme"),
            )),
        )
        .expect("write");
        fs::create_dir(dir.join("org.sub.dir.json")).expect("mkdir");

        let err = RegistryDir::open(dir).expect_err("must fail closed");
        let RegistryDirError::BadFiles { files, .. } = &err else {
            panic!("unexpected error {err}");
        };
        let bad: Vec<String> = files
            .iter()
            .map(|f| {
                f.file
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            })
            .collect();
        assert_eq!(
            bad,
            [
                "org.bad.w.json",
                "org.broken.json.json",
                "org.sub.dir.json",
                "renamed.json"
            ]
        );
        assert!(matches!(files[0].problem, FileProblem::Invalid(_)));
        assert!(matches!(files[1].problem, FileProblem::Invalid(_)));
        assert!(matches!(files[2].problem, FileProblem::NotAFile));
        assert!(matches!(
            files[3].problem,
            FileProblem::NameMismatch { ref expected, .. } if expected == "org.other.w.json"
        ));
        let msg = err.to_string();
        assert!(msg.contains("4 unusable record file(s)"), "{msg}");
        assert!(
            msg.contains("org.broken.json.json: invalid registry record: record is not valid JSON"),
            "{msg}"
        );
        assert!(
            msg.contains("risk_tier: \"extreme\" is not allowed"),
            "{msg}"
        );
    }

    #[test]
    fn oversized_file_is_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let big = " ".repeat(usize::try_from(MAX_RECORD_BYTES).expect("fits") + 1);
        fs::write(tmp.path().join("org.big.w.json"), big).expect("write");
        let err = RegistryDir::open(tmp.path()).expect_err("too large");
        assert!(err.to_string().contains("larger than"), "{err}");
    }

    use crate::registry::store::MAX_RECORD_BYTES;
}

mod snapshot_tests {
    use super::*;

    const AUDIT: &str = "ctrl.obs.audit-log-append-only";

    fn worker(id: &str, species: &str, controls: &[&str], envs: &[&str]) -> RegistryRecord {
        record(json!({
            "worker_id": id,
            "worker_species_id": species,
            "capabilities": ["cap.doc.summarize"],
            "risk_tier": "low",
            "currently_implements": controls,
            "allowed_environments": envs,
        }))
    }

    fn rule(controls: &[&str]) -> Rule {
        let doc = json!({"rules": [{
            "rule_id": "rr_1",
            "match": {"capability_id": "cap.doc.summarize"},
            "decision": {
                "candidate_workers_ranked": [{"worker_species_id": "wrk.doc.a"}, {"worker_species_id": "wrk.doc.b"}],
                "required_controls_suggested": controls,
                "escalation": {},
                "preconditions": {}
            }
        }]});
        let set = RuleSet::from_value(&doc).unwrap_or_else(|e| panic!("{e}"));
        set.rules()[0].clone()
    }

    #[test]
    fn scope_serde_and_default() {
        assert_eq!(ControlsScope::default(), ControlsScope::PerWorker);
        assert_eq!(
            serde_json::to_value(ControlsScope::PerWorker).expect("ser"),
            json!("per_worker")
        );
        assert_eq!(
            serde_json::from_value::<ControlsScope>(json!("global")).expect("de"),
            ControlsScope::Global
        );
        assert!(serde_json::from_value::<ControlsScope>(json!("Global")).is_err());
    }

    #[test]
    fn has_control_is_the_global_union_in_both_scopes() {
        let records = vec![
            worker("org.a.one", "wrk.doc.a", &[AUDIT], &[]),
            worker(
                "org.a.two",
                "wrk.doc.b",
                &["ctrl.blast_radius_scoring"],
                &[],
            ),
        ];
        for scope in [ControlsScope::Global, ControlsScope::PerWorker] {
            let reg = Registry::new(records.clone(), scope);
            assert!(reg.has_control(AUDIT));
            assert!(reg.has_control("ctrl.blast_radius_scoring"));
            assert!(!reg.has_control("ctrl.other"));
        }
    }

    #[test]
    fn global_scope_is_pyhall() {
        let reg = Registry::new(
            vec![worker("org.a.one", "wrk.doc.a", &[], &["dev"])],
            ControlsScope::Global,
        );
        let r = rule(&[AUDIT]);
        // Lacks the control and excludes prod, yet available: PyHall semantics.
        assert_eq!(
            reg.candidate_status("wrk.doc.a", &r, Env::Prod),
            CandidateStatus::Available
        );
        assert_eq!(
            reg.candidate_status("wrk.doc.b", &r, Env::Dev),
            CandidateStatus::Unavailable
        );
    }

    #[test]
    fn per_worker_scope() {
        let r = rule(&[AUDIT]);
        let status = |records: Vec<RegistryRecord>, species: &str, env: Env| {
            Registry::new(records, ControlsScope::PerWorker).candidate_status(species, &r, env)
        };
        let ok = worker("org.a.ok", "wrk.doc.a", &[AUDIT], &["dev", "prod"]);
        let no_ctrl = worker("org.a.none", "wrk.doc.a", &["ctrl.other"], &[]);
        let dev_only = worker("org.a.dev", "wrk.doc.a", &[AUDIT], &["dev"]);
        let any_env = worker("org.a.any", "wrk.doc.a", &[AUDIT], &[]);

        assert_eq!(
            status(vec![ok.clone()], "wrk.doc.a", Env::Prod),
            CandidateStatus::Available
        );
        assert_eq!(
            status(vec![any_env], "wrk.doc.a", Env::Edge),
            CandidateStatus::Available
        );
        assert_eq!(
            status(vec![no_ctrl.clone()], "wrk.doc.a", Env::Dev),
            CandidateStatus::MissingControls
        );
        assert_eq!(
            status(vec![dev_only.clone()], "wrk.doc.a", Env::Prod),
            CandidateStatus::EnvNotAllowed
        );
        // Mixed: one record lacks controls, one excludes the env → env is the reason.
        assert_eq!(
            status(
                vec![no_ctrl.clone(), dev_only.clone()],
                "wrk.doc.a",
                Env::Prod
            ),
            CandidateStatus::EnvNotAllowed
        );
        // Any qualifying record of the species makes it available.
        assert_eq!(
            status(vec![no_ctrl, dev_only, ok], "wrk.doc.a", Env::Prod),
            CandidateStatus::Available
        );
        assert_eq!(
            status(vec![], "wrk.doc.a", Env::Dev),
            CandidateStatus::Unavailable
        );
        // A rule without required controls only needs the env.
        let reg = Registry::new(
            vec![worker("org.a.x", "wrk.doc.a", &[], &["stage"])],
            ControlsScope::PerWorker,
        );
        assert_eq!(
            reg.candidate_status("wrk.doc.a", &rule(&[]), Env::Stage),
            CandidateStatus::Available
        );
        assert_eq!(
            reg.candidate_status("wrk.doc.a", &rule(&[]), Env::Dev),
            CandidateStatus::EnvNotAllowed
        );
    }

    fn input(env: &str, label: &str) -> RouteInput {
        RouteInput::from_value(&json!({
            "capability_id": "cap.doc.summarize", "env": env, "data_label": label,
            "tenant_risk": "low", "qos_class": "P2", "tenant_id": "t",
            "correlation_id": "c", "request": {}
        }))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn ctx() -> DecisionContext {
        DecisionContext {
            decision_id: "d".into(),
            timestamp: "1970-01-01T00:00:00+00:00".into(),
            task_id: "t".into(),
        }
    }

    #[test]
    fn per_worker_scope_through_the_router() {
        let doc = json!({"rules": [{
            "rule_id": "rr_1",
            "match": {"capability_id": "cap.doc.summarize"},
            "decision": {
                "candidate_workers_ranked": [{"worker_species_id": "wrk.doc.a"}, {"worker_species_id": "wrk.doc.b"}],
                "required_controls_suggested": [AUDIT],
                "escalation": {}, "preconditions": {}
            }
        }]});
        let rules = RuleSet::from_value(&doc).unwrap_or_else(|e| panic!("{e}"));
        let records = vec![
            worker("org.a.one", "wrk.doc.a", &[], &[]),
            worker("org.a.two", "wrk.doc.b", &[AUDIT], &[]),
        ];
        let config = RouterConfig::default();
        let decide = |scope| {
            let reg = Registry::new(records.clone(), scope);
            let router = Router {
                rules: &rules,
                registry: &reg,
                config: &config,
                gate: None,
                hashes: None,
                privilege: None,
                human_approval: None,
            };
            router::route(&router, &input("dev", "PUBLIC"), &ctx())
        };
        let global = decide(ControlsScope::Global);
        assert_eq!(
            global.selected_worker_species_id.as_deref(),
            Some("wrk.doc.a")
        );
        let per_worker = decide(ControlsScope::PerWorker);
        assert_eq!(
            per_worker.selected_worker_species_id.as_deref(),
            Some("wrk.doc.b")
        );
        assert_eq!(
            per_worker.candidate_workers_ranked[0].skip_reason,
            Some(SkipReason::MissingControls)
        );
    }

    #[test]
    fn hashes_first_record_and_no_current_hash() {
        let mut first = worker("org.a.one", "wrk.doc.a", &[], &[]);
        first.attestation = Some(Attestation {
            code_hash: Some(HASH.into()),
            ..Attestation::default()
        });
        let mut second = worker("org.a.two", "wrk.doc.a", &[], &[]);
        second.attestation = Some(Attestation {
            code_hash: Some("f".repeat(64)),
            ..Attestation::default()
        });
        let bare = worker("org.b.one", "wrk.doc.b", &[], &[]);
        let reg = Registry::new(vec![first, second, bare], ControlsScope::PerWorker);
        assert_eq!(reg.registered_hash("wrk.doc.a").as_deref(), Some(HASH));
        assert_eq!(reg.registered_hash("wrk.doc.b"), None);
        assert_eq!(reg.registered_hash("wrk.unknown"), None);
        assert_eq!(reg.current_hash("wrk.doc.a"), None);

        // require_worker_attestation therefore fails closed.
        let doc = json!({"rules": [{
            "rule_id": "rr_1", "match": {"capability_id": "cap.doc.summarize"},
            "decision": {"candidate_workers_ranked": [{"worker_species_id": "wrk.doc.a"}],
                         "required_controls_suggested": [], "escalation": {}, "preconditions": {}}
        }]});
        let rules = RuleSet::from_value(&doc).unwrap_or_else(|e| panic!("{e}"));
        let config = RouterConfig {
            require_worker_attestation: true,
            ..RouterConfig::default()
        };
        let router = Router {
            rules: &rules,
            registry: &reg,
            config: &config,
            gate: None,
            hashes: Some(&reg),
            privilege: None,
            human_approval: None,
        };
        let d = router::route(&router, &input("dev", "PUBLIC"), &ctx());
        assert_eq!(
            d.deny_reason_if_denied.map(|r| r.code),
            Some(DenyCode::DenyWorkerHashUnavailable)
        );
    }

    #[test]
    fn privilege_check() {
        let mut none = worker("org.a.none", "wrk.doc.a", &[], &[]);
        none.privilege_envelope = Some(PrivilegeEnvelope {
            secrets_access: vec![],
            network_egress: NetworkEgress::None,
            filesystem_writes: vec![],
            tools: vec![],
        });
        let mut egress = worker("org.b.net", "wrk.doc.b", &[], &[]);
        egress.privilege_envelope = Some(PrivilegeEnvelope {
            secrets_access: vec![],
            network_egress: NetworkEgress::Allowlist(vec!["api.example.com:443".into()]),
            filesystem_writes: vec![],
            tools: vec![],
        });
        let bare = worker("org.c.bare", "wrk.doc.c", &[], &[]);
        let reg = Registry::new(vec![none, egress, bare], ControlsScope::PerWorker);

        let env_a = reg.envelope("wrk.doc.a").expect("ok").expect("declared");
        assert_eq!(env_a["network_egress"], json!("none"));
        let env_b = reg.envelope("wrk.doc.b").expect("ok").expect("declared");
        assert_eq!(env_b["network_egress"], json!(["api.example.com:443"]));
        assert_eq!(reg.envelope("wrk.doc.c"), Ok(None));
        assert_eq!(reg.envelope("wrk.unknown"), Ok(None));

        let allows = |env, label, e: Option<&Value>| reg.allows(env, label, e).expect("answers");
        assert_eq!(
            allows(Env::Dev, DataLabel::Public, None),
            (false, "no_privilege_envelope_declared".to_owned())
        );
        for env in [Env::Prod, Env::Edge] {
            assert_eq!(
                allows(env, DataLabel::Restricted, Some(&env_b)),
                (
                    false,
                    "egress_not_allowed_for_restricted_in_production".to_owned()
                )
            );
            assert_eq!(
                allows(env, DataLabel::Restricted, Some(&env_a)),
                (true, "envelope_declared".to_owned())
            );
            assert_eq!(
                allows(env, DataLabel::Internal, Some(&env_b)),
                (true, "envelope_declared".to_owned())
            );
        }
        assert_eq!(
            allows(Env::Stage, DataLabel::Restricted, Some(&env_b)),
            (true, "envelope_declared".to_owned())
        );
        // An envelope without network_egress is treated as having egress.
        assert!(!allows(Env::Prod, DataLabel::Restricted, Some(&json!({}))).0);
        assert!(
            reg.allows(Env::Dev, DataLabel::Public, Some(&json!("x")))
                .is_err()
        );
    }

    #[test]
    fn summary() {
        let mut two = worker("org.a.two", "wrk.doc.b", &["ctrl.b", AUDIT], &[]);
        two.capabilities = vec!["cap.doc.summarize".into(), "cap.doc.chunk".into()];
        let reg = Registry::new(
            vec![
                worker("org.a.one", "wrk.doc.a", &[AUDIT], &[]),
                two,
                worker("org.a.three", "wrk.doc.a", &[], &[]),
            ],
            ControlsScope::Global,
        );
        let s = reg.summary();
        assert_eq!(s.enrolled_workers, 3);
        assert_eq!(s.available_species, ["wrk.doc.a", "wrk.doc.b"]);
        assert_eq!(s.controls_present, ["ctrl.b", AUDIT]);
        assert_eq!(
            serde_json::to_value(&s.capabilities_mapped).expect("ser"),
            json!({"cap.doc.chunk": ["wrk.doc.b"], "cap.doc.summarize": ["wrk.doc.a", "wrk.doc.b"]})
        );
    }

    #[test]
    fn snapshot_from_dir_keeps_file_order() {
        let tmp = tempfile::tempdir().expect("tempdir");
        for (id, hash) in [("org.b.w", "b"), ("org.a.w", "a")] {
            let mut r = worker(id, "wrk.doc.a", &[], &[]);
            r.attestation = Some(Attestation {
                code_hash: Some(hash.repeat(64)),
                ..Attestation::default()
            });
            enroll_record(tmp.path(), &r).expect("enrolls");
        }
        let reg = RegistryDir::open(tmp.path())
            .expect("loads")
            .snapshot(ControlsScope::PerWorker);
        assert_eq!(reg.registered_hash("wrk.doc.a"), Some("a".repeat(64)));
    }
}

#[test]
fn a_package_ref_must_be_an_oci_reference_pinned_by_digest_and_alone() {
    let base = |attestation: serde_json::Value| {
        serde_json::json!({
            "worker_id": "org.acme.w.1", "worker_species_id": "wrk.doc.summarizer",
            "capabilities": ["cap.doc.summarize"], "risk_tier": "low",
            "attestation": attestation,
        })
        .to_string()
    };
    let pinned = format!("oci://reg.example:5000/wcp/w@sha256:{}", "a".repeat(64));
    let ok = RegistryRecord::from_json_str(&base(serde_json::json!({"package_ref": pinned})));
    assert_eq!(
        ok.unwrap().attestation.unwrap().package_ref.as_deref(),
        Some(pinned.as_str())
    );
    for bad in [
        serde_json::json!({"package_ref": "oci://reg.example/wcp/w:latest"}),
        serde_json::json!({"package_ref": format!("https://reg.example/wcp/w@sha256:{}", "a".repeat(64))}),
        serde_json::json!({"package_ref": "oci://reg.example/wcp/w@sha256:abc"}),
        serde_json::json!({"package_ref": pinned, "package_root": "/srv/w"}),
    ] {
        let err = RegistryRecord::from_json_str(&base(bad.clone())).unwrap_err();
        assert!(
            err.to_string().contains("attestation.package_ref"),
            "{bad}: {err}"
        );
    }
}
