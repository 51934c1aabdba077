//! The registry record (WCP §6): what a worker declares about itself when it enrolls.
//!
//! Parsing is two-phase but reports in one go. [`RegistryRecord::from_value`] first checks the
//! *shape* (required keys, JSON types, no unknown keys) and then runs [`RegistryRecord::validate`]
//! for the *content* (identifier grammar, hash formats, ranges). Every problem found by either
//! phase is returned together, each naming its JSON path (`capabilities[1]`,
//! `privilege_envelope.network_egress[0]`), so an operator fixes a record in one round trip. A
//! content problem is not reported for a field whose shape was already wrong (a missing
//! `worker_id` is reported once, not also as "not in a namespace").
//!
//! # What is accepted (and why it is stricter than PyHall)
//! PyHall checks none of the spec schema and reads only six keys, so a typo such as
//! `currently_implement` silently enrolls a worker with no controls. The Hall rejects:
//! - unknown keys at any level (PyHall's example records carry a free-text `notes`, which is
//!   therefore accepted);
//! - `worker_id` outside an `org.<ns>.…` or `x.<ns>.…` namespace (WCP §3 tenant namespaces; the
//!   spec schema only knows `org.`): dot-separated segments of `a-z`, `0-9` and `-`, at least
//!   three segments, at most [`MAX_ID_CHARS`] characters. This is also what makes
//!   `<worker_id>.json` a safe file name;
//! - `worker_species_id` not of the form `wrk.<segment>[.<segment>…]`, and capabilities not of
//!   the form `cap.<segment>[…]`, with segments of `a-z`, `0-9`, `-` and `_` (underscores are
//!   accepted because PyHall's own ids use them), and an empty `capabilities` list;
//! - control ids in `required_controls` / `currently_implements` that PyHall's own filter
//!   ([`is_pyhall_control_id`]) would drop (PyHall drops them with a warning; the Hall refuses the
//!   record, because a silently dropped control is a silently weaker worker);
//! - `artifact_hash` other than `sha256:` + 64 lowercase hex digits (the spec schema), and
//!   `attestation.code_hash` other than 64 lowercase hex digits (what PyHall's router compares);
//! - blast radius dimensions outside the integers 0–5 (WCP §7);
//! - `network_egress` other than the string `"none"` or a non-empty array of `"host:port"`
//!   strings (an empty array is refused because it means the same as `"none"` and the Hall wants
//!   one spelling per meaning; the spec's "…" alternatives are not accepted until defined);
//! - control characters in any free-text string (they would end up in logs and events).
//!
//! Optional keys may be absent or `null`; both mean "not declared". Lists default to empty; an
//! empty `allowed_environments` means "every environment", as in WCP and PyHall.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use super::is_pyhall_control_id;
use crate::wcp::Env;
use crate::wcp::input::json_type;

/// The longest `worker_id` / `worker_species_id` / capability id accepted, in characters.
pub const MAX_ID_CHARS: usize = 128;

/// The largest value of a blast radius dimension (WCP §7 scores each 0–5).
pub const MAX_BLAST_DIMENSION: u8 = 5;

/// Top-level keys of a record, in the order they are written back.
pub const RECORD_FIELDS: &[&str] = &[
    "worker_id",
    "worker_species_id",
    "capabilities",
    "risk_tier",
    "idempotency",
    "determinism",
    "required_controls",
    "currently_implements",
    "allowed_environments",
    "privilege_envelope",
    "blast_radius",
    "owner",
    "contact",
    "artifact_hash",
    "catalog_version_min",
    "attestation",
    "notes",
];

/// Keys of `privilege_envelope`.
pub const ENVELOPE_FIELDS: &[&str] = &[
    "secrets_access",
    "network_egress",
    "filesystem_writes",
    "tools",
];

/// Keys of `blast_radius`.
pub const BLAST_FIELDS: &[&str] = &["data", "network", "financial", "time", "reversibility"];

/// Keys of `attestation`.
pub const ATTESTATION_FIELDS: &[&str] = &[
    "code_hash",
    "hash_method",
    "source_file",
    "attested_at",
    "attested_by",
    "package_root",
    "manifest_path",
    "package_ref",
];

/// `oci://HOST/REPO@sha256:<64 lowercase hex>`, printable ASCII without spaces (the full
/// grammar is checked by `attest::oci::OciRef` when the Hall fetches it).
fn is_pinned_oci_ref(r: &str) -> bool {
    let Some(rest) = r.strip_prefix("oci://") else {
        return false;
    };
    let Some((name, digest)) = rest.split_once('@') else {
        return false;
    };
    name.contains('/')
        && name.bytes().all(|b| b.is_ascii_graphic() && b != b'@')
        && digest.strip_prefix("sha256:").is_some_and(is_lower_hex_64)
}

/// The longest value echoed back in an error message, in characters.
const MAX_SHOWN_CHARS: usize = 80;

/// A worker's declared risk tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RiskTier {
    Low,
    Medium,
    High,
    Critical,
}

impl RiskTier {
    /// Every wire spelling, lowest tier first.
    pub const NAMES: &'static [&'static str] = &["low", "medium", "high", "critical"];

    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            RiskTier::Low => "low",
            RiskTier::Medium => "medium",
            RiskTier::High => "high",
            RiskTier::Critical => "critical",
        }
    }

    /// Parses the exact, case-sensitive wire spelling.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "low" => Some(RiskTier::Low),
            "medium" => Some(RiskTier::Medium),
            "high" => Some(RiskTier::High),
            "critical" => Some(RiskTier::Critical),
            _ => None,
        }
    }
}

impl fmt::Display for RiskTier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for RiskTier {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Where a worker may open network connections.
///
/// On the wire this is either the string `"none"` or a non-empty array of `"host:port"` strings
/// (the allowlist). Nothing else is accepted; see the module documentation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetworkEgress {
    /// `"none"`: no outbound connections.
    None,
    /// `["host:port", …]`: only these destinations.
    Allowlist(Vec<String>),
}

impl NetworkEgress {
    /// The JSON spelling of "no egress".
    pub const NONE: &'static str = "none";

    /// Whether the worker declares no egress at all.
    pub fn is_none(&self) -> bool {
        matches!(self, NetworkEgress::None)
    }
}

impl Serialize for NetworkEgress {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            NetworkEgress::None => s.serialize_str(Self::NONE),
            NetworkEgress::Allowlist(list) => list.serialize(s),
        }
    }
}

/// The privileges a worker needs (WCP §6). `network_egress` is required when the envelope is
/// declared (there is no safe default to guess); the lists default to empty.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PrivilegeEnvelope {
    pub secrets_access: Vec<String>,
    pub network_egress: NetworkEgress,
    pub filesystem_writes: Vec<String>,
    pub tools: Vec<String>,
}

/// The worker's self-assessed blast radius (WCP §7). All five keys are required when the object is
/// present: a missing dimension has no safe default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BlastRadius {
    /// 0–5.
    pub data: u8,
    /// 0–5.
    pub network: u8,
    /// 0–5.
    pub financial: u8,
    /// 0–5.
    pub time: u8,
    /// Free text, e.g. `"reversible"`.
    pub reversibility: String,
}

/// The worker's code attestation claim (WCP §5.10). Every key is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Attestation {
    /// 64 lowercase hex digits (no `sha256:` prefix): what the router compares at dispatch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code_hash: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hash_method: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attested_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attested_by: Option<String>,
    /// The worker package's source directory (absolute). The Hall verifies it against its signed
    /// manifest while copying it into the verified store, and runs only that copy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub package_root: Option<String>,
    /// The signed manifest (default: `<package_root>/manifest.sig`, else `manifest.json`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manifest_path: Option<String>,
    /// The package as an OCI artifact, pinned by digest: `oci://HOST/REPO@sha256:<hex>`
    /// (instead of `package_root`). The Hall fetches it at start and reload, never at dispatch
    /// (see `attest::oci`); `wcp-hall enroll` resolves a tag to this form.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub package_ref: Option<String>,
}

/// One worker's registry record (WCP §6). Build it with [`RegistryRecord::from_json_str`] or
/// [`RegistryRecord::from_value`], which validate; a record assembled in code should be checked
/// with [`RegistryRecord::validate`]. Serialises back to the same JSON shape (absent optionals
/// are omitted, lists are always written).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RegistryRecord {
    pub worker_id: String,
    pub worker_species_id: String,
    pub capabilities: Vec<String>,
    pub risk_tier: RiskTier,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotency: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub determinism: Option<String>,
    pub required_controls: Vec<String>,
    pub currently_implements: Vec<String>,
    /// Empty means every environment.
    pub allowed_environments: Vec<Env>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub privilege_envelope: Option<PrivilegeEnvelope>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blast_radius: Option<BlastRadius>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contact: Option<String>,
    /// `sha256:` + 64 lowercase hex digits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub artifact_hash: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub catalog_version_min: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attestation: Option<Attestation>,
    /// Free text (not in WCP §6; PyHall's example records carry it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
}

/// One problem with a registry record. Every variant names the field (a JSON path) and says what
/// is allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("record is not valid JSON: {0}")]
    Json(String),
    #[error("a registry record must be a JSON object, got {0}")]
    NotAnObject(&'static str),
    #[error("{field} is required")]
    Missing { field: String },
    #[error("{field}: expected {expected}, got {got}")]
    WrongType {
        field: String,
        expected: &'static str,
        got: &'static str,
    },
    #[error("unknown field {field}; allowed here: {}", .allowed.join(", "))]
    UnknownField {
        field: String,
        allowed: &'static [&'static str],
    },
    #[error(
        "worker_id {value:?} is not in an org.<ns> or x.<ns> namespace; example: org.acme.summarizer.1"
    )]
    WorkerIdNamespace { value: String },
    #[error(
        "worker_id {value:?} {problem}; a worker_id is at least 3 dot-separated segments of a-z, 0-9 and '-' (at most {MAX_ID_CHARS} characters); example: org.acme.summarizer.1"
    )]
    WorkerIdFormat { value: String, problem: String },
    #[error(
        "worker_species_id {value:?} {problem}; expected wrk.<segment>[.<segment>...] with segments of a-z, 0-9, '-' and '_' (at most {MAX_ID_CHARS} characters); example: wrk.doc.summarizer"
    )]
    SpeciesId { value: String, problem: String },
    #[error("capabilities must list at least one capability id; example: [\"cap.doc.summarize\"]")]
    NoCapabilities,
    #[error(
        "{field}: {value:?} {problem}; expected cap.<segment>[.<segment>...] with segments of a-z, 0-9, '-' and '_' (at most {MAX_ID_CHARS} characters); example: cap.doc.summarize"
    )]
    CapabilityId {
        field: String,
        value: String,
        problem: String,
    },
    #[error("risk_tier: {value:?} is not allowed; expected one of: {}", RiskTier::NAMES.join(", "))]
    RiskTier { value: String },
    #[error("{field}: {value:?} is not allowed; expected one of: {}", Env::NAMES.join(", "))]
    Environment { field: String, value: String },
    #[error(
        "{field}: {value:?} is not a control id; expected ctrl.<name> in lowercase a-z, 0-9, '.', '_' and '-' (starting with a letter or digit); example: ctrl.obs.audit-log-append-only"
    )]
    ControlId { field: String, value: String },
    #[error(
        "artifact_hash: {value:?} is not allowed; expected \"sha256:\" followed by 64 lowercase hex digits"
    )]
    ArtifactHash { value: String },
    #[error(
        "attestation.code_hash: {value:?} is not allowed; expected exactly 64 lowercase hex digits (no \"sha256:\" prefix)"
    )]
    CodeHash { value: String },
    #[error("{field}: {value} is out of range; blast radius dimensions are integers 0 to 5")]
    BlastDimension { field: String, value: String },
    #[error(
        "{field}: {problem}; expected \"none\" or a non-empty array of \"host:port\" strings, e.g. [\"api.example.com:443\"]"
    )]
    NetworkEgress { field: String, problem: String },
    #[error(
        "{field} contains a control character (U+{codepoint:04X}); registry strings must be printable"
    )]
    ControlCharacter { field: String, codepoint: u32 },
    #[error("{field}: {value:?} is not an absolute path")]
    RelativePath { field: String, value: String },
    #[error(
        "attestation.package_ref: {value:?} is not an OCI reference pinned by digest; expected oci://HOST/REPOSITORY@sha256:<64 hex> (`wcp-hall enroll` resolves a tag), and no package_root or manifest_path beside it"
    )]
    PackageRef { value: String },
    #[error(
        "{field}: {value:?} is not a plain relative path; a persistent write directory is named like \"out/\" or \"cache/models/\", without empty, \".\" or \"..\" components"
    )]
    WritePath { field: String, value: String },
    #[error(
        "{field}: {first:?} and {second:?} {problem}: a worker could replace the inner directory between runs and widen its own grant; declare separate directories"
    )]
    NestedWrites {
        field: String,
        first: String,
        second: String,
        problem: &'static str,
    },
}

/// The components of a relative `filesystem_writes` entry (a persistent directory,
/// `a/b/` → `a`, `b`), or `None` when it is not a plain relative path: empty, or with an empty,
/// `.` or `..` component. The one rule for record validation and for the Hall that opens the
/// directory (`envelope::grant`).
pub fn plain_relative_write(entry: &str) -> Option<Vec<&str>> {
    let clean = entry.trim_end_matches('/');
    if clean.is_empty() || clean.starts_with('/') {
        return None;
    }
    let parts: Vec<&str> = clean.split('/').collect();
    parts
        .iter()
        .all(|c| !c.is_empty() && *c != "." && *c != "..")
        .then_some(parts)
}

/// The components of a `filesystem_writes` entry (`/a//b/` → `a`, `b`).
fn write_components(entry: &str) -> impl Iterator<Item = &str> {
    entry.split('/').filter(|c| !c.is_empty() && *c != ".")
}

/// The first pair (i, j), i < j, of `filesystem_writes` entries of the same kind (both relative:
/// persistent directories; both absolute) where one names the other or a directory inside it.
/// Nested persistent directories let a worker replace the inner one with a link between runs.
pub fn overlapping_writes(entries: &[String]) -> Option<(usize, usize)> {
    for (j, b) in entries.iter().enumerate() {
        for (i, a) in entries[..j].iter().enumerate() {
            if a.starts_with('/') != b.starts_with('/') {
                continue;
            }
            let (mut x, mut y) = (write_components(a), write_components(b));
            let prefix = loop {
                match (x.next(), y.next()) {
                    (Some(p), Some(q)) if p == q => continue,
                    (Some(_), Some(_)) => break false,
                    _ => break true,
                }
            };
            if prefix {
                return Some((i, j));
            }
        }
    }
    None
}

impl RecordError {
    /// The JSON path of the offending field (`""` for whole-record problems).
    pub fn field(&self) -> &str {
        match self {
            RecordError::Json(_) | RecordError::NotAnObject(_) => "",
            RecordError::WorkerIdNamespace { .. } | RecordError::WorkerIdFormat { .. } => {
                "worker_id"
            }
            RecordError::SpeciesId { .. } => "worker_species_id",
            RecordError::NoCapabilities => "capabilities",
            RecordError::RiskTier { .. } => "risk_tier",
            RecordError::ArtifactHash { .. } => "artifact_hash",
            RecordError::CodeHash { .. } => "attestation.code_hash",
            RecordError::PackageRef { .. } => "attestation.package_ref",
            RecordError::Missing { field }
            | RecordError::WrongType { field, .. }
            | RecordError::UnknownField { field, .. }
            | RecordError::CapabilityId { field, .. }
            | RecordError::Environment { field, .. }
            | RecordError::ControlId { field, .. }
            | RecordError::BlastDimension { field, .. }
            | RecordError::NetworkEgress { field, .. }
            | RecordError::ControlCharacter { field, .. }
            | RecordError::RelativePath { field, .. }
            | RecordError::NestedWrites { field, .. }
            | RecordError::WritePath { field, .. } => field,
        }
    }
}

/// A rejected record: every problem found, ordered by field. Never empty.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct InvalidRecord {
    pub problems: Vec<RecordError>,
}

impl fmt::Display for InvalidRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.problems.as_slice() {
            [one] => write!(f, "invalid registry record: {one}"),
            many => {
                write!(f, "invalid registry record ({} problems):", many.len())?;
                for p in many {
                    write!(f, "\n  - {p}")?;
                }
                Ok(())
            }
        }
    }
}

impl RegistryRecord {
    /// Parses and validates one record from JSON text.
    pub fn from_json_str(text: &str) -> Result<Self, InvalidRecord> {
        let value: Value = crate::json::parse_str(text).map_err(|e| InvalidRecord {
            problems: vec![RecordError::Json(e.to_string())],
        })?;
        Self::from_value(&value)
    }

    /// Parses and validates one record from a JSON value, reporting every problem at once.
    pub fn from_value(value: &Value) -> Result<Self, InvalidRecord> {
        let Some(obj) = value.as_object() else {
            return Err(InvalidRecord {
                problems: vec![RecordError::NotAnObject(json_type(value))],
            });
        };
        let mut p = ShapeParser::default();
        p.unknown_keys(obj, "", RECORD_FIELDS);
        let record = RegistryRecord {
            worker_id: p.req_str(obj, "worker_id", ""),
            worker_species_id: p.req_str(obj, "worker_species_id", ""),
            capabilities: p.str_list(obj, "capabilities", "", true),
            risk_tier: p.risk_tier(obj),
            idempotency: p.opt_str(obj, "idempotency", ""),
            determinism: p.opt_str(obj, "determinism", ""),
            required_controls: p.str_list(obj, "required_controls", "", false),
            currently_implements: p.str_list(obj, "currently_implements", "", false),
            allowed_environments: p.environments(obj),
            privilege_envelope: p.envelope(obj),
            blast_radius: p.blast_radius(obj),
            owner: p.opt_str(obj, "owner", ""),
            contact: p.opt_str(obj, "contact", ""),
            artifact_hash: p.opt_str(obj, "artifact_hash", ""),
            catalog_version_min: p.opt_str(obj, "catalog_version_min", ""),
            attestation: p.attestation(obj),
            notes: p.opt_str(obj, "notes", ""),
        };
        let content = record.problems();
        let mut problems = p.problems;
        problems.extend(
            content
                .into_iter()
                .filter(|c| !p.broken.iter().any(|b| is_within(c.field(), b))),
        );
        if problems.is_empty() {
            Ok(record)
        } else {
            sort_by_field(&mut problems);
            Err(InvalidRecord { problems })
        }
    }

    /// Checks the content rules (see the module documentation) and returns every problem.
    pub fn validate(&self) -> Result<(), InvalidRecord> {
        let problems = self.problems();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(InvalidRecord { problems })
        }
    }

    /// Every content problem, in field order (empty when the record is valid).
    pub fn problems(&self) -> Vec<RecordError> {
        let mut out = Vec::new();
        if let Some(e) = check_worker_id(&self.worker_id) {
            out.push(e);
        }
        if let Some(problem) = dotted_id_problem(&self.worker_species_id, "wrk") {
            out.push(RecordError::SpeciesId {
                value: shown(&self.worker_species_id),
                problem,
            });
        }
        if self.capabilities.is_empty() {
            out.push(RecordError::NoCapabilities);
        }
        for (i, cap) in self.capabilities.iter().enumerate() {
            if let Some(problem) = dotted_id_problem(cap, "cap") {
                out.push(RecordError::CapabilityId {
                    field: format!("capabilities[{i}]"),
                    value: shown(cap),
                    problem,
                });
            }
        }
        free_text(&mut out, "idempotency", self.idempotency.as_deref());
        free_text(&mut out, "determinism", self.determinism.as_deref());
        for (key, list) in [
            ("required_controls", &self.required_controls),
            ("currently_implements", &self.currently_implements),
        ] {
            for (i, c) in list.iter().enumerate() {
                if !is_pyhall_control_id(c) {
                    out.push(RecordError::ControlId {
                        field: format!("{key}[{i}]"),
                        value: shown(c),
                    });
                }
            }
        }
        if let Some(env) = &self.privilege_envelope {
            free_text_list(
                &mut out,
                "privilege_envelope.secrets_access",
                &env.secrets_access,
            );
            if let NetworkEgress::Allowlist(list) = &env.network_egress {
                if list.is_empty() {
                    out.push(RecordError::NetworkEgress {
                        field: "privilege_envelope.network_egress".into(),
                        problem: "an empty allowlist is ambiguous; write \"none\" for no egress"
                            .into(),
                    });
                }
                for (i, dest) in list.iter().enumerate() {
                    if let Some(problem) = host_port_problem(dest) {
                        out.push(RecordError::NetworkEgress {
                            field: format!("privilege_envelope.network_egress[{i}]"),
                            problem: format!("{:?} {problem}", shown(dest)),
                        });
                    }
                }
            }
            free_text_list(
                &mut out,
                "privilege_envelope.filesystem_writes",
                &env.filesystem_writes,
            );
            for (i, w) in env.filesystem_writes.iter().enumerate() {
                if !w.starts_with('/') && plain_relative_write(w).is_none() {
                    out.push(RecordError::WritePath {
                        field: format!("privilege_envelope.filesystem_writes[{i}]"),
                        value: w.clone(),
                    });
                }
            }
            if let Some((a, b)) = overlapping_writes(&env.filesystem_writes) {
                out.push(RecordError::NestedWrites {
                    field: format!("privilege_envelope.filesystem_writes[{b}]"),
                    first: env.filesystem_writes[a].clone(),
                    second: env.filesystem_writes[b].clone(),
                    problem: if write_components(&env.filesystem_writes[a]).count()
                        == write_components(&env.filesystem_writes[b]).count()
                    {
                        "name the same directory"
                    } else {
                        "are nested"
                    },
                });
            }
            free_text_list(&mut out, "privilege_envelope.tools", &env.tools);
        }
        if let Some(b) = &self.blast_radius {
            for (key, v) in [
                ("data", b.data),
                ("network", b.network),
                ("financial", b.financial),
                ("time", b.time),
            ] {
                if v > MAX_BLAST_DIMENSION {
                    out.push(RecordError::BlastDimension {
                        field: format!("blast_radius.{key}"),
                        value: v.to_string(),
                    });
                }
            }
            free_text(
                &mut out,
                "blast_radius.reversibility",
                Some(&b.reversibility),
            );
        }
        free_text(&mut out, "owner", self.owner.as_deref());
        free_text(&mut out, "contact", self.contact.as_deref());
        if let Some(h) = &self.artifact_hash {
            let ok = h.strip_prefix("sha256:").is_some_and(is_lower_hex_64);
            if !ok {
                out.push(RecordError::ArtifactHash { value: shown(h) });
            }
        }
        free_text(
            &mut out,
            "catalog_version_min",
            self.catalog_version_min.as_deref(),
        );
        if let Some(a) = &self.attestation {
            if let Some(h) = &a.code_hash
                && !is_lower_hex_64(h)
            {
                out.push(RecordError::CodeHash { value: shown(h) });
            }
            free_text(
                &mut out,
                "attestation.hash_method",
                a.hash_method.as_deref(),
            );
            free_text(
                &mut out,
                "attestation.source_file",
                a.source_file.as_deref(),
            );
            free_text(
                &mut out,
                "attestation.attested_at",
                a.attested_at.as_deref(),
            );
            free_text(
                &mut out,
                "attestation.attested_by",
                a.attested_by.as_deref(),
            );
            for (field, value) in [
                ("attestation.package_root", &a.package_root),
                ("attestation.manifest_path", &a.manifest_path),
            ] {
                free_text(&mut out, field, value.as_deref());
                if let Some(v) = value
                    && !v.starts_with('/')
                {
                    out.push(RecordError::RelativePath {
                        field: field.to_owned(),
                        value: shown(v),
                    });
                }
            }
            if let Some(r) = &a.package_ref
                && (!is_pinned_oci_ref(r) || a.package_root.is_some() || a.manifest_path.is_some())
            {
                out.push(RecordError::PackageRef { value: shown(r) });
            }
        }
        free_text(&mut out, "notes", self.notes.as_deref());
        out
    }
}

impl<'de> Deserialize<'de> for RegistryRecord {
    /// Deserialises through [`RegistryRecord::from_value`], so the same strict rules apply when a
    /// record is embedded in another document.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(d)?;
        RegistryRecord::from_value(&value).map_err(serde::de::Error::custom)
    }
}

/// Orders problems by their top-level key in [`RECORD_FIELDS`] order, unknown keys first (a
/// misspelt key often explains a "missing" one); the sort is stable within a key.
fn sort_by_field(problems: &mut [RecordError]) {
    problems.sort_by_key(|p| {
        let top = p.field().split(['.', '[']).next().unwrap_or_default();
        match p {
            RecordError::UnknownField { .. } if !p.field().contains('.') => 0,
            _ => RECORD_FIELDS
                .iter()
                .position(|f| *f == top)
                .map_or(0, |i| i + 1),
        }
    });
}

/// `true` iff `path` is `parent` or lies under it (`parent.x`, `parent[3]`).
fn is_within(path: &str, parent: &str) -> bool {
    path.strip_prefix(parent)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('.') || rest.starts_with('['))
}

/// A value as echoed in an error message: at most [`MAX_SHOWN_CHARS`] characters.
fn shown(value: &str) -> String {
    if value.chars().count() <= MAX_SHOWN_CHARS {
        value.to_owned()
    } else {
        let mut s: String = value.chars().take(MAX_SHOWN_CHARS).collect();
        s.push('…');
        s
    }
}

/// Exactly 64 lowercase hex digits (no trailing-newline tolerance, unlike PyHall's regex).
fn is_lower_hex_64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn check_worker_id(id: &str) -> Option<RecordError> {
    let fail = |problem: &str| {
        Some(RecordError::WorkerIdFormat {
            value: shown(id),
            problem: problem.to_owned(),
        })
    };
    let first = id.split('.').next().unwrap_or_default();
    if first != "org" && first != "x" {
        return Some(RecordError::WorkerIdNamespace { value: shown(id) });
    }
    if id.chars().count() > MAX_ID_CHARS {
        return fail(&format!("is longer than {MAX_ID_CHARS} characters"));
    }
    let segments: Vec<&str> = id.split('.').collect();
    if let Some((i, _)) = segments.iter().enumerate().find(|(_, s)| s.is_empty()) {
        return fail(&format!("has an empty segment (segment {})", i + 1));
    }
    if let Some(bad) = segments.iter().find(|s| {
        !s.bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-'))
    }) {
        return fail(&format!(
            "has segment {:?} with characters outside a-z, 0-9 and '-'",
            shown(bad)
        ));
    }
    if segments.len() < 3 {
        return fail("has fewer than 3 segments (org.<ns>.<name>)");
    }
    None
}

/// Checks `<prefix>.<segment>[.<segment>…]` with segments of `a-z0-9-_`; returns the problem.
fn dotted_id_problem(id: &str, prefix: &str) -> Option<String> {
    let Some(rest) = id.strip_prefix(prefix).and_then(|r| r.strip_prefix('.')) else {
        return Some(format!("does not start with \"{prefix}.\""));
    };
    if id.chars().count() > MAX_ID_CHARS {
        return Some(format!("is longer than {MAX_ID_CHARS} characters"));
    }
    for seg in rest.split('.') {
        if seg.is_empty() {
            return Some("has an empty segment".into());
        }
        if !seg
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_'))
        {
            return Some(format!(
                "has segment {:?} with characters outside a-z, 0-9, '-' and '_'",
                shown(seg)
            ));
        }
    }
    None
}

/// Checks `host:port`: a host of ASCII letters, digits, `.`, `-`, `_` and `*` (so wildcard
/// patterns such as `*.example.com` can be declared; whether a wildcard is *allowed* is policy,
/// not syntax) or a bracketed IPv6 literal, then a decimal port 1–65535. No scheme, path or
/// user info: an allowlist entry is a destination, not a URL.
fn host_port_problem(dest: &str) -> Option<&'static str> {
    let Some((host, port)) = dest.rsplit_once(':') else {
        return Some("has no \":port\"");
    };
    let host_ok = if let Some(inner) = host.strip_prefix('[') {
        inner.strip_suffix(']').is_some_and(|v6| {
            !v6.is_empty()
                && v6
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        })
    } else {
        !host.is_empty()
            && !host.contains(':')
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'*'))
    };
    if !host_ok {
        return Some("does not have a valid host name or IP address before \":port\"");
    }
    let port_ok = !port.is_empty()
        && port.len() <= 5
        && port.bytes().all(|b| b.is_ascii_digit())
        && port.parse::<u32>().is_ok_and(|p| (1..=65535).contains(&p));
    if port_ok {
        None
    } else {
        Some("does not end in a port number 1 to 65535")
    }
}

fn control_char(s: &str) -> Option<char> {
    s.chars()
        .find(|c| c.is_control() || matches!(c, '\u{2028}' | '\u{2029}'))
}

fn free_text(out: &mut Vec<RecordError>, field: &str, value: Option<&str>) {
    if let Some(c) = value.and_then(control_char) {
        out.push(RecordError::ControlCharacter {
            field: field.to_owned(),
            codepoint: u32::from(c),
        });
    }
}

fn free_text_list(out: &mut Vec<RecordError>, field: &str, values: &[String]) {
    for (i, v) in values.iter().enumerate() {
        free_text(out, &format!("{field}[{i}]"), Some(v));
    }
}

/// Collects shape problems (missing keys, wrong JSON types, unknown keys) and remembers which
/// paths were broken so content checks on placeholders are not reported twice.
#[derive(Default)]
struct ShapeParser {
    problems: Vec<RecordError>,
    broken: BTreeSet<String>,
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

impl ShapeParser {
    fn fail(&mut self, e: RecordError) {
        self.broken.insert(e.field().to_owned());
        self.problems.push(e);
    }

    fn wrong_type(&mut self, field: String, expected: &'static str, got: &Value) {
        self.fail(RecordError::WrongType {
            field,
            expected,
            got: json_type(got),
        });
    }

    fn unknown_keys(
        &mut self,
        obj: &Map<String, Value>,
        parent: &str,
        allowed: &'static [&'static str],
    ) {
        for key in obj.keys().filter(|k| !allowed.contains(&k.as_str())) {
            // Unknown keys do not break anything else, so they are not recorded as broken paths.
            self.problems.push(RecordError::UnknownField {
                field: join(parent, key),
                allowed,
            });
        }
    }

    /// A present, non-null value, or `None` (absent and `null` both mean "not declared").
    fn get<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
        obj.get(key).filter(|v| !v.is_null())
    }

    fn req_str(&mut self, obj: &Map<String, Value>, key: &str, parent: &str) -> String {
        let field = join(parent, key);
        match Self::get(obj, key) {
            None => {
                self.fail(RecordError::Missing { field });
                String::new()
            }
            Some(Value::String(s)) => s.clone(),
            Some(other) => {
                self.wrong_type(field, "a string", other);
                String::new()
            }
        }
    }

    fn opt_str(&mut self, obj: &Map<String, Value>, key: &str, parent: &str) -> Option<String> {
        match Self::get(obj, key)? {
            Value::String(s) => Some(s.clone()),
            other => {
                self.wrong_type(join(parent, key), "a string", other);
                None
            }
        }
    }

    fn str_list(
        &mut self,
        obj: &Map<String, Value>,
        key: &str,
        parent: &str,
        required: bool,
    ) -> Vec<String> {
        let field = join(parent, key);
        let items = match Self::get(obj, key) {
            None => {
                if required {
                    self.fail(RecordError::Missing { field });
                }
                return Vec::new();
            }
            Some(Value::Array(items)) => items,
            Some(other) => {
                self.wrong_type(field, "an array of strings", other);
                return Vec::new();
            }
        };
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            match item {
                Value::String(s) => out.push(s.clone()),
                other => {
                    self.wrong_type(format!("{field}[{i}]"), "a string", other);
                    // Keep indices aligned with the document for content problems.
                    out.push(String::new());
                }
            }
        }
        out
    }

    fn risk_tier(&mut self, obj: &Map<String, Value>) -> RiskTier {
        match Self::get(obj, "risk_tier") {
            None => self.fail(RecordError::Missing {
                field: "risk_tier".into(),
            }),
            Some(Value::String(s)) => match RiskTier::parse(s) {
                Some(t) => return t,
                None => self.fail(RecordError::RiskTier { value: shown(s) }),
            },
            Some(other) => self.wrong_type("risk_tier".into(), "a string", other),
        }
        // Placeholder only: the record is rejected because a problem was recorded above.
        RiskTier::Critical
    }

    fn environments(&mut self, obj: &Map<String, Value>) -> Vec<Env> {
        let names = self.str_list(obj, "allowed_environments", "", false);
        let mut out = Vec::with_capacity(names.len());
        for (i, name) in names.iter().enumerate() {
            let field = format!("allowed_environments[{i}]");
            if self.broken.contains(&field) {
                continue;
            }
            match Env::parse(name) {
                Ok(env) => out.push(env),
                Err(_) => self.fail(RecordError::Environment {
                    field,
                    value: shown(name),
                }),
            }
        }
        out
    }

    fn object<'a>(
        &mut self,
        obj: &'a Map<String, Value>,
        key: &str,
        allowed: &'static [&'static str],
    ) -> Option<&'a Map<String, Value>> {
        match Self::get(obj, key)? {
            Value::Object(inner) => {
                self.unknown_keys(inner, key, allowed);
                Some(inner)
            }
            other => {
                self.wrong_type(key.to_owned(), "an object", other);
                None
            }
        }
    }

    fn envelope(&mut self, obj: &Map<String, Value>) -> Option<PrivilegeEnvelope> {
        const P: &str = "privilege_envelope";
        let inner = self.object(obj, P, ENVELOPE_FIELDS)?;
        let network_egress = match Self::get(inner, "network_egress") {
            None => {
                self.fail(RecordError::Missing {
                    field: format!("{P}.network_egress"),
                });
                NetworkEgress::None
            }
            Some(Value::String(s)) if s == NetworkEgress::NONE => NetworkEgress::None,
            Some(Value::String(s)) => {
                self.fail(RecordError::NetworkEgress {
                    field: format!("{P}.network_egress"),
                    problem: format!("{:?} is not allowed", shown(s)),
                });
                NetworkEgress::None
            }
            Some(Value::Array(_)) => {
                NetworkEgress::Allowlist(self.str_list(inner, "network_egress", P, true))
            }
            Some(other) => {
                self.wrong_type(
                    format!("{P}.network_egress"),
                    "\"none\" or an array of \"host:port\" strings",
                    other,
                );
                NetworkEgress::None
            }
        };
        Some(PrivilegeEnvelope {
            secrets_access: self.str_list(inner, "secrets_access", P, false),
            network_egress,
            filesystem_writes: self.str_list(inner, "filesystem_writes", P, false),
            tools: self.str_list(inner, "tools", P, false),
        })
    }

    fn blast_dimension(&mut self, obj: &Map<String, Value>, key: &str) -> u8 {
        let field = format!("blast_radius.{key}");
        match Self::get(obj, key) {
            None => self.fail(RecordError::Missing { field }),
            Some(Value::Number(n)) if n.is_i64() || n.is_u64() => {
                match n.as_u64().and_then(|v| u8::try_from(v).ok()) {
                    Some(v) => return v,
                    None => self.fail(RecordError::BlastDimension {
                        field,
                        value: n.to_string(),
                    }),
                }
            }
            Some(other) => self.wrong_type(field, "an integer 0 to 5", other),
        }
        0
    }

    fn blast_radius(&mut self, obj: &Map<String, Value>) -> Option<BlastRadius> {
        let inner = self.object(obj, "blast_radius", BLAST_FIELDS)?;
        Some(BlastRadius {
            data: self.blast_dimension(inner, "data"),
            network: self.blast_dimension(inner, "network"),
            financial: self.blast_dimension(inner, "financial"),
            time: self.blast_dimension(inner, "time"),
            reversibility: self.req_str(inner, "reversibility", "blast_radius"),
        })
    }

    fn attestation(&mut self, obj: &Map<String, Value>) -> Option<Attestation> {
        const P: &str = "attestation";
        let inner = self.object(obj, P, ATTESTATION_FIELDS)?;
        Some(Attestation {
            code_hash: self.opt_str(inner, "code_hash", P),
            hash_method: self.opt_str(inner, "hash_method", P),
            source_file: self.opt_str(inner, "source_file", P),
            attested_at: self.opt_str(inner, "attested_at", P),
            attested_by: self.opt_str(inner, "attested_by", P),
            package_root: self.opt_str(inner, "package_root", P),
            manifest_path: self.opt_str(inner, "manifest_path", P),
            package_ref: self.opt_str(inner, "package_ref", P),
        })
    }
}
