//! WCP profiles (`prof.*`, spec §2.5): named postures that set the required controls, the policy
//! set, the privilege-envelope minimums and limits, and the blast maxima. The Hall selects one per
//! environment (`[profiles]` in `hall.toml`), so the same worker fleet runs under
//! `prof.dev.permissive` or `prof.prod.strict` without code changes.
//!
//! One profile per file, `<id>.toml`, every table closed (`deny_unknown_fields`), every error
//! located at its line and column:
//!
//! ```toml
//! id = "prof.prod.strict"
//! description = "Production: every control enforced, every dispatch gated."
//! policy_set = "../cedar"            # a policy set manifest or its directory, relative to this file
//! gate_every_dispatch = true         # run the policy gate even for rules without escalation.policy_gate
//! required_controls = ["ctrl.obs.audit-log-append-only"]
//!
//! [blast]                            # WCP §7 five-dimension score, chain total per correlation id
//! max = { dev = 25, stage = 15, prod = 10, edge = 6 }
//! over_max = { require_human = "gatekeeper" }   # or "deny"
//! undeclared = "deny"                # worker declares no blast_radius: "allow" | "deny" | { require_human = "<level>" }
//!
//! [envelope]                         # minimums: "required" | "best_effort" | "off"
//! landlock = "required"
//! network_isolation = "required"
//! seccomp = "required"
//! pid_namespace = "required"
//! cgroup = "required"
//! unprivileged_user = "required"
//!
//! [limits]                           # all required, all > 0
//! wall_timeout_ms = 30000
//! cpu_seconds = 10
//! memory_bytes = 536870912
//! max_processes = 32
//! max_open_files = 256
//! max_file_size_bytes = 67108864
//! max_output_bytes = 1048576
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize};
use sha2::{Digest, Sha256};

use super::source::{Diagnostic, DiagnosticKind, PolicyLoadError};
use super::{SupervisorLevel, is_wcp_id};
use crate::registry::is_pyhall_control_id;
use crate::wcp::Env;

/// What to do when a chain's blast total exceeds the maximum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OverMaxAction {
    Deny,
    RequireHuman(SupervisorLevel),
}

/// What to do when the selected worker declares no blast radius.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UndeclaredAction {
    Allow,
    Deny,
    RequireHuman(SupervisorLevel),
}

/// The largest chain blast total allowed per environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PerEnvMax {
    pub dev: u32,
    pub stage: u32,
    pub prod: u32,
    pub edge: u32,
}

impl PerEnvMax {
    /// The maximum for `env`.
    pub fn get(&self, env: Env) -> u32 {
        match env {
            Env::Dev => self.dev,
            Env::Stage => self.stage,
            Env::Prod => self.prod,
            Env::Edge => self.edge,
        }
    }
}

/// `[blast]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlastPolicy {
    pub max: PerEnvMax,
    pub over_max: OverMaxAction,
    pub undeclared: UndeclaredAction,
}

/// How strongly an envelope mechanism is demanded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Requirement {
    /// The dispatch is refused if the mechanism cannot be enforced.
    Required,
    /// Enforced when the kernel allows it; its absence is reported, not fatal.
    BestEffort,
    /// Not applied.
    Off,
}

/// `[envelope]`: the minimum privilege envelope a profile demands of every run. The envelope
/// uses this very type (`envelope::Minimums`; its constructors and defaults live there).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvelopeMinimums {
    /// Landlock filesystem (and TCP, and scope) confinement, fully enforced at the pinned ABI.
    pub landlock: Requirement,
    /// `network_egress: "none"` → a private network namespace; an allowlist → Landlock TCP ports
    /// plus a seccomp UDP/raw-socket ban.
    pub network_isolation: Requirement,
    /// The seccomp deny-list filter.
    pub seccomp: Requirement,
    /// A PID namespace whose init is the Hall's own reaper: the whole tree dies with it.
    pub pid_namespace: Requirement,
    /// A per-run cgroup v2 leaf with `cgroup.kill`, `memory.max` and `pids.max`.
    pub cgroup: Requirement,
    /// The worker runs under a uid/gid without privileges (never as root).
    pub unprivileged_user: Requirement,
}

/// `[limits]`: resource limits for a worker run. Every limit is mandatory (there is no
/// "unlimited"): a worker without a bound is a worker that can take the host down. All values
/// are integers so they embed in the canonical receipt profile unchanged. The envelope uses
/// this very type (`envelope::Limits`; its default and range checks live there).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Wall-clock budget; then SIGTERM, a grace period, and a kill of the whole tree.
    #[serde(deserialize_with = "positive")]
    pub wall_timeout_ms: u64,
    /// `RLIMIT_CPU` per process (soft; the hard limit is one second more): SIGXCPU then SIGKILL.
    #[serde(deserialize_with = "positive")]
    pub cpu_seconds: u64,
    /// `RLIMIT_AS` per process and, when the cgroup memory controller is delegated, `memory.max`
    /// for the whole tree.
    #[serde(deserialize_with = "positive")]
    pub memory_bytes: u64,
    /// `RLIMIT_NPROC` (counted per uid: give concurrent workers distinct uids) and `pids.max`.
    #[serde(deserialize_with = "positive")]
    pub max_processes: u64,
    /// `RLIMIT_NOFILE`.
    #[serde(deserialize_with = "positive")]
    pub max_open_files: u64,
    /// `RLIMIT_FSIZE`: the largest file the worker may write.
    #[serde(deserialize_with = "positive")]
    pub max_file_size_bytes: u64,
    /// Bytes of stdout and, separately, of stderr kept; the rest is drained and counted.
    #[serde(deserialize_with = "positive")]
    pub max_output_bytes: u64,
}

fn positive<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let v = u64::deserialize(d)?;
    if v == 0 {
        return Err(serde::de::Error::custom(
            "must be greater than 0 (a zero limit would make every run fail)",
        ));
    }
    Ok(v)
}

/// The file form.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileSpec {
    id: toml::Spanned<String>,
    #[serde(default)]
    description: String,
    policy_set: String,
    gate_every_dispatch: bool,
    #[serde(default)]
    required_controls: Vec<toml::Spanned<String>>,
    blast: BlastPolicy,
    envelope: EnvelopeMinimums,
    limits: Limits,
}

/// A loaded profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Profile {
    /// `prof.<domain>.<name>`.
    pub id: String,
    pub description: String,
    /// The policy set (manifest or directory), resolved against the profile file's directory.
    pub policy_set: PathBuf,
    /// Whether the policy gate runs for every dispatch, not only rules with
    /// `escalation.policy_gate`.
    pub gate_every_dispatch: bool,
    /// Controls every dispatch under this profile needs, besides the rule's own.
    pub required_controls: Vec<String>,
    pub blast: BlastPolicy,
    pub envelope: EnvelopeMinimums,
    pub limits: Limits,
    /// The file it came from.
    pub file: String,
    /// First 16 hex digits of the SHA-256 of the file text (for decisions and receipts).
    pub digest: String,
}

impl Profile {
    /// Parses one profile. `file` names it in errors; a relative `policy_set` is resolved
    /// against `base`. With `expected_id` (the file stem), the id must match it. Pure.
    pub fn from_toml_str(
        text: &str,
        file: &str,
        base: &Path,
        expected_id: Option<&str>,
    ) -> Result<Self, PolicyLoadError> {
        let spec: ProfileSpec = toml::from_str(text).map_err(|e| {
            PolicyLoadError::Invalid(vec![Diagnostic::from_toml(
                DiagnosticKind::Profile,
                file,
                text,
                &e,
            )])
        })?;
        let at = |offset: usize, msg: String| {
            Diagnostic::at(DiagnosticKind::Profile, file, text, offset, msg)
        };
        let mut problems = Vec::new();
        let id = spec.id.get_ref();
        if !is_wcp_id(id, "prof") {
            problems.push(at(spec.id.span().start, format!("id {id:?} is not a WCP profile id")).help(
                "prof. followed by 1-3 dot-separated segments of a-z, 0-9 and '-'; example: prof.prod.strict",
            ));
        } else if let Some(stem) = expected_id
            && stem != id
        {
            problems.push(
                at(
                    spec.id.span().start,
                    format!("id {id:?} does not match the file name {stem:?}.toml"),
                )
                .help("name each profile file <id>.toml"),
            );
        }
        for c in &spec.required_controls {
            if !is_pyhall_control_id(c.get_ref()) {
                problems.push(at(
                    c.span().start,
                    format!(
                        "{:?} is not a control id; expected ctrl.<name> in lowercase a-z, 0-9, '.', '_' and '-'",
                        c.get_ref()
                    ),
                ));
            }
        }
        if !problems.is_empty() {
            return Err(PolicyLoadError::Invalid(problems));
        }
        let mut controls: Vec<String> = spec
            .required_controls
            .into_iter()
            .map(toml::Spanned::into_inner)
            .collect();
        controls.sort();
        controls.dedup();
        Ok(Profile {
            id: spec.id.into_inner(),
            description: spec.description,
            policy_set: base.join(&spec.policy_set),
            gate_every_dispatch: spec.gate_every_dispatch,
            required_controls: controls,
            blast: spec.blast,
            envelope: spec.envelope,
            limits: spec.limits,
            file: file.to_owned(),
            digest: crate::common::hex(&Sha256::digest(text.as_bytes()))[..16].to_owned(),
        })
    }

    /// Reads one profile file; its id must equal the file stem.
    pub fn load(path: &Path) -> Result<Self, PolicyLoadError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyLoadError::Read {
            path: path.to_owned(),
            source,
        })?;
        let stem = path.file_stem().and_then(|s| s.to_str());
        Profile::from_toml_str(
            &text,
            &path.display().to_string(),
            path.parent().unwrap_or(Path::new(".")),
            stem,
        )
    }
}

/// Every profile of a directory, by id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProfileSet {
    profiles: BTreeMap<String, Arc<Profile>>,
}

impl ProfileSet {
    /// Loads every `*.toml` file in `dir` (sorted by name). Every bad file is reported.
    pub fn load_dir(dir: &Path) -> Result<Self, PolicyLoadError> {
        let entries = std::fs::read_dir(dir).map_err(|source| PolicyLoadError::Read {
            path: dir.to_owned(),
            source,
        })?;
        let mut paths = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| PolicyLoadError::Read {
                path: dir.to_owned(),
                source,
            })?;
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "toml") && path.is_file() {
                paths.push(path);
            }
        }
        paths.sort();
        let mut set = ProfileSet::default();
        let mut problems = Vec::new();
        for path in paths {
            match Profile::load(&path) {
                Ok(p) => {
                    set.profiles.insert(p.id.clone(), Arc::new(p));
                }
                Err(PolicyLoadError::Invalid(d)) => problems.extend(d),
                Err(e) => return Err(e),
            }
        }
        if set.profiles.is_empty() && problems.is_empty() {
            problems.push(Diagnostic {
                kind: DiagnosticKind::Profile,
                file: dir.display().to_string(),
                line: 1,
                column: 1,
                message: "the profile directory holds no <id>.toml profile".into(),
                help: None,
                policy_id: None,
            });
        }
        if problems.is_empty() {
            Ok(set)
        } else {
            Err(PolicyLoadError::Invalid(problems))
        }
    }

    /// A set from already loaded profiles (later ids replace earlier ones).
    pub fn from_profiles(profiles: impl IntoIterator<Item = Profile>) -> Self {
        ProfileSet {
            profiles: profiles
                .into_iter()
                .map(|p| (p.id.clone(), Arc::new(p)))
                .collect(),
        }
    }

    /// A profile by id.
    pub fn get(&self, id: &str) -> Option<&Arc<Profile>> {
        self.profiles.get(id)
    }

    /// Every profile, by id.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Profile>> {
        self.profiles.values()
    }

    /// Number of profiles.
    pub fn len(&self) -> usize {
        self.profiles.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.profiles.is_empty()
    }
}

/// A `[profiles]` entry naming a profile that does not exist.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("[profiles] {env} = {id:?}: no such profile; known profiles: {}", .known.join(", "))]
pub struct SelectionError {
    pub env: Env,
    pub id: String,
    pub known: Vec<String>,
}

/// The profile selected for each environment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvProfiles {
    by_env: [Option<Arc<Profile>>; 4],
}

impl EnvProfiles {
    /// Resolves an env → profile id selection (the `[profiles]` table of `hall.toml`).
    pub fn select<'a>(
        set: &ProfileSet,
        selection: impl IntoIterator<Item = (Env, &'a str)>,
    ) -> Result<Self, SelectionError> {
        let mut out = EnvProfiles::default();
        for (env, id) in selection {
            let p = set.get(id).ok_or_else(|| SelectionError {
                env,
                id: id.to_owned(),
                known: set.profiles.keys().cloned().collect(),
            })?;
            out.by_env[env.index()] = Some(Arc::clone(p));
        }
        Ok(out)
    }

    /// The profile for `env`, if one is selected.
    pub fn get(&self, env: Env) -> Option<&Arc<Profile>> {
        self.by_env[env.index()].as_ref()
    }

    /// Each environment with its profile.
    pub fn iter(&self) -> impl Iterator<Item = (Env, &Arc<Profile>)> {
        Env::ALL.iter().filter_map(|&e| self.get(e).map(|p| (e, p)))
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Requirement::Required => "required",
            Requirement::BestEffort => "best_effort",
            Requirement::Off => "off",
        })
    }
}

#[cfg(test)]
mod tests {
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
        let d = first_error(
            &MINIMAL.replace("gate_every_dispatch = true", "gate_every_dispatchh = true"),
        );
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
}
