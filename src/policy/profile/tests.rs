use super::*;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/policies/profiles");

const MINIMAL: &str = r#"id = "prof.test.one"
policy_set = "../cedar"
gate_every_dispatch = true
[blast]
max = { dev = 25, stage = 15, prod = 10, edge = 6 }
over_max = "deny"
undeclared = { require_human = "executor" }
[envelope]
landlock = "required"
network_isolation = "best_effort"
seccomp = "off"
pid_namespace = "required"
cgroup = "required"
unprivileged_user = "required"
[limits]
wall_timeout_ms = 1
cpu_seconds = 1
memory_bytes = 1
max_processes = 1
max_open_files = 1
max_file_size_bytes = 1
max_output_bytes = 1
"#;

fn parse(text: &str) -> Result<Profile, PolicyLoadError> {
    Profile::from_toml_str(text, "p.toml", Path::new("/etc/wcp-hall/profiles"), None)
}

fn first_error(text: &str) -> Diagnostic {
    match parse(text) {
        Ok(p) => panic!("accepted: {p:?}"),
        Err(e) => e.diagnostics()[0].clone(),
    }
}

#[test]
fn the_bundled_profiles_load() {
    let set = ProfileSet::load_dir(Path::new(DIR)).unwrap();
    let ids: Vec<&str> = set.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(
        ids,
        vec![
            "prof.dev.permissive",
            "prof.edge.isolated",
            "prof.prod.strict"
        ]
    );
    let strict = set.get("prof.prod.strict").unwrap();
    assert!(strict.gate_every_dispatch);
    assert_eq!(strict.blast.max.get(Env::Prod), 10);
    assert_eq!(
        strict.blast.over_max,
        OverMaxAction::RequireHuman(SupervisorLevel::Gatekeeper)
    );
    assert_eq!(strict.blast.undeclared, UndeclaredAction::Deny);
    assert_eq!(strict.envelope.landlock, Requirement::Required);
    assert_eq!(strict.limits.memory_bytes, 512 * 1024 * 1024);
    assert!(
        strict
            .required_controls
            .contains(&"ctrl.privilege_envelopes_required".to_owned())
    );
    assert!(strict.policy_set.ends_with("profiles/../cedar"));
    assert_eq!(strict.digest.len(), 16);
    let permissive = set.get("prof.dev.permissive").unwrap();
    assert!(!permissive.gate_every_dispatch);
    assert_eq!(permissive.envelope.cgroup, Requirement::Off);
    assert_eq!(
        set.get("prof.edge.isolated").unwrap().blast.over_max,
        OverMaxAction::Deny
    );
}

#[test]
fn a_minimal_profile_parses_and_resolves_its_policy_set() {
    let p = parse(MINIMAL).unwrap();
    assert_eq!(p.id, "prof.test.one");
    assert_eq!(p.policy_set, Path::new("/etc/wcp-hall/profiles/../cedar"));
    assert!(p.required_controls.is_empty());
    assert_eq!(
        p.blast.undeclared,
        UndeclaredAction::RequireHuman(SupervisorLevel::Executor)
    );
    let json = serde_json::to_value(&p).unwrap();
    assert_eq!(json["blast"]["over_max"], "deny");
    assert_eq!(json["blast"]["undeclared"]["require_human"], "executor");
    assert_eq!(json["envelope"]["network_isolation"], "best_effort");
}

#[test]
fn profile_errors_point_at_line_and_column() {
    // Unknown key.
    let d =
        first_error(&MINIMAL.replace("gate_every_dispatch = true", "gate_every_dispatchh = true"));
    assert_eq!((d.line, d.column), (3, 1), "{d}");
    assert!(d.message.contains("gate_every_dispatchh"), "{d}");
    assert_eq!(d.kind, DiagnosticKind::Profile);
    // Bad requirement value.
    let d = first_error(&MINIMAL.replace("seccomp = \"off\"", "seccomp = \"maybe\""));
    assert_eq!(d.line, 11, "{d}");
    assert!(d.message.contains("maybe"), "{d}");
    // Bad supervisor level inside the action table.
    let d = first_error(&MINIMAL.replace("\"executor\"", "\"boss\""));
    assert_eq!(d.line, 7, "{d}");
    assert!(d.message.contains("gatekeeper"), "lists the levels: {d}");
    // allow is not an over_max action.
    let d = first_error(&MINIMAL.replace("over_max = \"deny\"", "over_max = \"allow\""));
    assert_eq!(d.line, 6, "{d}");
    // A zero limit.
    let d = first_error(&MINIMAL.replace("max_processes = 1", "max_processes = 0"));
    assert_eq!(d.line, 19, "{d}");
    assert!(d.message.contains("greater than 0"), "{d}");
    // A missing env in the maxima and a missing table.
    let d = first_error(&MINIMAL.replace(", edge = 6", ""));
    assert!(d.message.contains("edge"), "{d}");
    let d = first_error(&MINIMAL.replace("[limits]", "[limitz]"));
    assert!(d.message.contains("limitz"), "{d}");
    // Semantic checks keep spans too.
    let d = first_error(&MINIMAL.replace("prof.test.one", "prof.Test_one"));
    assert_eq!((d.line, d.column), (1, 6), "{d}");
    let d = first_error(&MINIMAL.replace(
        "gate_every_dispatch = true",
        "gate_every_dispatch = true\nrequired_controls = [\"ctrl.ok\", \"audit\"]",
    ));
    assert_eq!((d.line, d.column), (4, 33), "{d}");
}

#[test]
fn the_file_name_must_match_the_id() {
    let err = Profile::from_toml_str(MINIMAL, "x.toml", Path::new("."), Some("prof.test.two"))
        .unwrap_err();
    assert!(
        err.to_string().contains("does not match the file name"),
        "{err}"
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("prof.test.two.toml"), MINIMAL).unwrap();
    std::fs::write(
        dir.path().join("prof.test.three.toml"),
        MINIMAL
            .replace("prof.test.one", "prof.test.three")
            .replace("cpu_seconds = 1", "cpu_seconds = -1"),
    )
    .unwrap();
    std::fs::write(dir.path().join("notes.txt"), "ignored").unwrap();
    let err = ProfileSet::load_dir(dir.path()).unwrap_err();
    assert_eq!(
        err.diagnostics().len(),
        2,
        "every bad file is reported: {err}"
    );
    let empty = tempfile::tempdir().unwrap();
    assert!(ProfileSet::load_dir(empty.path()).is_err());
    assert!(matches!(
        ProfileSet::load_dir(&empty.path().join("missing")),
        Err(PolicyLoadError::Read { .. })
    ));
}

#[test]
fn environments_select_profiles_by_id() {
    let set = ProfileSet::load_dir(Path::new(DIR)).unwrap();
    let sel = EnvProfiles::select(
        &set,
        [
            (Env::Dev, "prof.dev.permissive"),
            (Env::Stage, "prof.dev.permissive"),
            (Env::Prod, "prof.prod.strict"),
        ],
    )
    .unwrap();
    assert_eq!(sel.get(Env::Prod).unwrap().id, "prof.prod.strict");
    assert_eq!(sel.get(Env::Stage).unwrap().id, "prof.dev.permissive");
    assert!(sel.get(Env::Edge).is_none());
    assert_eq!(sel.iter().count(), 3);
    let err = EnvProfiles::select(&set, [(Env::Edge, "prof.edge.isolatd")]).unwrap_err();
    assert_eq!(err.env, Env::Edge);
    assert!(err.to_string().contains("prof.edge.isolated"), "{err}");
}
