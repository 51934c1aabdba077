//! What a tenant may route: `POST /wcp/capabilities/routable`.
//!
//! `GET /wcp/capabilities` lists every capability the rules name. Agent hosts (the MCP bridge)
//! need something narrower: the capabilities *this caller*, acting as one tenant in one route
//! context (env, data label, tenant risk, QoS class), would actually be allowed to dispatch, and
//! the input schema of the worker that would serve each one.
//!
//! How a capability is decided: by the real router with the real collaborators, exactly as a
//! dispatch is routed ([`dispatch::route`]: the peer's tenants from `SO_PEERCRED`, the env's
//! profile, the Cedar gate with the caller's identity, package attestation, the privilege
//! check), on a RouteInput with the given context, a fresh correlation id, an empty `request`
//! and `dry_run: false` (so policies that treat dry runs differently answer as for a real call).
//! A capability is listed when that decision allows it (`routing: "allowed"`), or when it needs a
//! human (`DENY_REQUIRES_HUMAN[_APPROVAL]`) *and* the same request, routed again as if a human had
//! approved it, would be allowed (`routing: "requires_human"`, with the supervisor level): a
//! capability that no approval could unlock is not offered. Every other capability goes to
//! `not_routable` with its deny code, so an operator can see why a tool is missing.
//!
//! What a listing does *not* do: run a worker, create an approval, write a receipt, count in
//! the decision metrics or add to a chain's blast. It decides nothing anyone acts on; the
//! dispatch that follows is routed again (the rules may have been reloaded meanwhile) and that
//! decision is the one receipted. Receipting every listing would put N unused decisions in the
//! evidence log each time an agent host starts. Because the request is empty, the listing cannot
//! foresee what a request's contents change: PyHall's blast heuristic scores request flags
//! (`egress`, `writes`, …), so in prod/edge a particular call may still need a human.
//!
//! Threat model. The caller learns nothing it could not learn by dry-run dispatching each
//! capability itself, and only for a tenant it may act as (`403 tenant_not_allowed` otherwise,
//! before anything is routed). Schemas are read by the Hall from the package it would run: with
//! `[attestation]`, the verified read-only store copy (never the mutable source); without it,
//! the enrolled `attestation.package_root` (labelled unverified). The file is opened without
//! following symbolic links and without blocking (a FIFO cannot stall the Hall), must be a
//! regular file of at most [`MAX_SCHEMA_BYTES`], and must be a JSON object whose `type`, if
//! present, is `"object"`. Anything else yields the permissive `{"type": "object"}` and a note,
//! never a failed listing. Package verification may hash a changed package, so the listing runs
//! on a blocking thread.

use std::collections::BTreeSet;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::http::StatusCode;
use serde_json::{Map, Value, json};

use super::Hall;
use super::api::ApiError;
use super::dispatch;
use crate::rules::Condition;
use crate::snapshot::Loaded;
use crate::snapshot::identity::Peer;
use crate::wcp::RouteInput;

/// The route-context fields the request body must carry (all strings, all required).
pub const CONTEXT_FIELDS: [&str; 5] =
    ["tenant_id", "env", "data_label", "tenant_risk", "qos_class"];

/// The largest `config.schema.json` the Hall reads.
pub const MAX_SCHEMA_BYTES: u64 = 256 * 1024;

/// The schema file name in a worker package (PyHall layout).
pub const SCHEMA_FILE: &str = "config.schema.json";

/// The optional output schema file of a worker package: the JSON Schema of the object the
/// worker prints on success (served as the MCP tool's `outputSchema`).
pub const OUTPUT_SCHEMA_FILE: &str = "output.schema.json";

/// The marker the second, "as if approved" route carries (the router only tests its presence).
const LISTING_APPROVAL: &str = "capability-listing";

/// Parses the request body: exactly the [`CONTEXT_FIELDS`], validated as a RouteInput would be
/// (vocabularies, identifier rules). Returns a RouteInput template without a capability.
pub fn parse_context(raw: &Value) -> Result<RouteInput, ApiError> {
    let invalid = |m: String| ApiError::bad_request("invalid_context", m);
    let expected = || {
        format!(
            "expected a JSON object with the string fields {}",
            CONTEXT_FIELDS.join(", ")
        )
    };
    let Some(obj) = raw.as_object() else {
        return Err(invalid(expected()));
    };
    if let Some(unknown) = obj.keys().find(|k| !CONTEXT_FIELDS.contains(&k.as_str())) {
        return Err(invalid(format!(
            "unknown field {unknown:?}; {}",
            expected()
        )));
    }
    let mut input = Map::new();
    for field in CONTEXT_FIELDS {
        match obj.get(field) {
            Some(Value::String(s)) => {
                input.insert(field.into(), Value::from(s.clone()));
            }
            Some(_) => return Err(invalid(format!("{field} must be a string; {}", expected()))),
            None => return Err(invalid(format!("{field} is required; {}", expected()))),
        }
    }
    if obj["tenant_id"]
        .as_str()
        .is_some_and(|t| t.trim().is_empty())
    {
        return Err(invalid("tenant_id must not be empty".into()));
    }
    // A placeholder capability: only the context is validated here.
    input.insert("capability_id".into(), Value::from("cap.listing"));
    RouteInput::from_value(&Value::Object(input)).map_err(|e| {
        invalid(
            e.to_string()
                .replacen("RouteInput.", "route context field ", 1),
        )
    })
}

/// Refuses a peer that may not act as `tenant_id` (its `[identity]` mapping, intersected with
/// `[hall] allowed_tenants` when signatories are required — the router's own tenant check).
pub fn check_tenant(loaded: &Loaded, peer: &Peer, tenant_id: &str) -> Result<(), ApiError> {
    let allowed = loaded
        .identity
        .router_config_for(&loaded.router_config, peer)
        .allowed_tenants;
    if allowed.contains(tenant_id) {
        return Ok(());
    }
    let may = if allowed.is_empty() {
        "none: map its uid or gid to a tenant in [identity] peers".to_owned()
    } else {
        allowed.into_iter().collect::<Vec<_>>().join(", ")
    };
    Err(ApiError::new(
        StatusCode::FORBIDDEN,
        "tenant_not_allowed",
        format!(
            "uid {} (gid {}) may not act as tenant {tenant_id:?}; tenants it may act as: {may}",
            peer.uid, peer.gid
        ),
    ))
}

/// Every capability a rule names explicitly, plus every capability an enrolled record declares
/// (a rule matching any capability can route those).
pub fn candidate_capabilities(loaded: &Loaded) -> BTreeSet<String> {
    let mut caps: BTreeSet<String> = loaded
        .registry
        .summary()
        .capabilities_mapped
        .into_keys()
        .collect();
    for rule in loaded.rules.rules() {
        match &rule.matcher.conditions[0] {
            Some(Condition::Exact(c)) => {
                caps.insert(c.clone());
            }
            Some(Condition::In(list)) => caps.extend(list.iter().cloned()),
            _ => {}
        }
    }
    caps
}

/// The listing for `template`'s context (see the module documentation). Blocking: package
/// verification may read and hash files.
pub fn routable(hall: &Hall, loaded: &Loaded, peer: &Peer, template: &RouteInput) -> Value {
    let mut listed = Vec::new();
    let mut not_routable = Vec::new();
    for capability_id in candidate_capabilities(loaded) {
        let input = RouteInput {
            capability_id: capability_id.clone(),
            correlation_id: format!("capability-listing-{}", uuid::Uuid::new_v4()),
            ..template.clone()
        };
        let first = dispatch::route(hall, loaded, peer, &input, None).decision;
        let (decision, human) = if !first.denied {
            (first, None)
        } else if dispatch::needs_human(&first) {
            let approved = dispatch::route(hall, loaded, peer, &input, Some(LISTING_APPROVAL));
            (approved.decision, Some(first))
        } else {
            (first, None)
        };
        if decision.denied {
            not_routable.push(json!({
                "capability_id": capability_id,
                "matched_rule_id": decision.matched_rule_id,
                "deny_code": decision.deny_code().map(|c| c.as_str()),
                "deny_message": decision.deny_reason_if_denied.as_ref().map(|r| r.message.clone()),
                "after_human_approval": human.is_some(),
            }));
            continue;
        }
        let species = decision.selected_worker_species_id.clone();
        let worker_id = species
            .as_deref()
            .and_then(|s| loaded.registry.records_of(s).next())
            .map(|r| r.worker_id.clone());
        let (schema, output) = match species.as_deref() {
            Some(s) => (schema_for(loaded, s), output_schema_for(loaded, s)),
            None => (
                InputSchema::permissive("none", "no worker species was selected"),
                OutputSchema::default(),
            ),
        };
        let mut entry = json!({
            "capability_id": capability_id,
            "routing": if human.is_some() { "requires_human" } else { "allowed" },
            "matched_rule_id": decision.matched_rule_id,
            "worker_species_id": species,
            "worker_id": worker_id,
            "input_schema": schema.schema,
            "input_schema_source": schema.source,
        });
        if let Some(note) = schema.note {
            entry["input_schema_note"] = Value::from(note);
        }
        if let Some(output_schema) = output.schema {
            entry["output_schema"] = Value::Object(output_schema);
        }
        if let Some(note) = output.note {
            entry["output_schema_note"] = Value::from(note);
        }
        if let Some(h) = &human {
            // What a pending approval would record (the same reading as request_approval's).
            let (reason, level) = dispatch::human_request(h);
            entry["supervisor_level"] = Value::from(level);
            entry["approval_reason"] = Value::from(reason);
            entry["deny_code"] = Value::from(h.deny_code().map(|c| c.as_str()));
        }
        listed.push(entry);
    }
    json!({
        "context": {
            "tenant_id": template.tenant_id,
            "env": template.env,
            "data_label": template.data_label,
            "tenant_risk": template.tenant_risk,
            "qos_class": template.qos_class,
        },
        "generation": loaded.generation,
        "capabilities": listed,
        "not_routable": not_routable,
    })
}

/// A capability's input schema and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct InputSchema {
    pub schema: Map<String, Value>,
    /// `verified_package` (the attested store copy), `package_root` (the enrolled source,
    /// unverified: no `[attestation]`) or `none`.
    pub source: &'static str,
    /// Why the permissive schema was used, or a caveat.
    pub note: Option<String>,
}

impl InputSchema {
    fn permissive(source: &'static str, note: impl Into<String>) -> Self {
        let mut schema = Map::new();
        schema.insert("type".into(), Value::from("object"));
        InputSchema {
            schema,
            source,
            note: Some(note.into()),
        }
    }
}

/// The package directory the Hall would run for `species` and its source label
/// (`verified_package` or `package_root`, see [`InputSchema::source`]), or why there is none.
fn package_dir(loaded: &Loaded, species: &str) -> Result<(PathBuf, &'static str), String> {
    let Some(attested) = &loaded.attested else {
        let root = loaded
            .registry
            .records_of(species)
            .next()
            .and_then(|r| r.attestation.as_ref())
            .and_then(|a| a.package_root.as_deref());
        return match root {
            Some(root) => Ok((PathBuf::from(root), "package_root")),
            None => Err(format!(
                "{species} has no enrolled package (attestation.package_root)"
            )),
        };
    };
    // The copy of the last successful verification (the route just verified it when
    // require_worker_attestation is on); otherwise verify now, as the runner would.
    match attested.run_root(species) {
        Some(dir) => Ok((dir, "verified_package")),
        None => match attested.verify(species) {
            None => Err(format!(
                "{species} has no enrolled package (attestation.package_root)"
            )),
            Some(r) => match (&r.store_path, r.ok) {
                (Some(p), true) => Ok((p.clone(), "verified_package")),
                _ => Err(format!(
                    "{species}'s package failed verification ({}): {}",
                    r.code.map(|c| c.as_str().to_owned()).unwrap_or_default(),
                    r.message
                )),
            },
        },
    }
}

/// The input schema of the package the Hall would run for `species`.
pub fn schema_for(loaded: &Loaded, species: &str) -> InputSchema {
    match package_dir(loaded, species) {
        Ok((dir, "package_root")) => {
            let mut s = read_schema(&dir, "package_root");
            if s.note.is_none() {
                s.note = Some(
                    "read from the enrolled package_root, unverified: [attestation] is not configured"
                        .into(),
                );
            }
            s
        }
        Ok((dir, source)) => read_schema(&dir, source),
        Err(note) => InputSchema::permissive("none", note),
    }
}

/// Why a request does not match its worker's `config.schema.json`: one entry per mismatch
/// (at most [`MAX_INPUT_ERRORS`]), each naming the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputMismatch {
    /// `(field, message)`: `field` is the JSON Pointer of the offending value in the request
    /// (`/name`; empty for the request object itself, e.g. a missing required property).
    /// Messages may quote the caller's values: they go back to the caller only.
    pub errors: Vec<(String, String)>,
    /// The same mismatches without the request's values (`masked`), for the evidence receipt:
    /// a request may carry data the log must not keep.
    pub masked: Vec<(String, String)>,
}

/// At most this many mismatches are reported (and each message at most 300 bytes).
pub const MAX_INPUT_ERRORS: usize = 8;

impl InputMismatch {
    /// `"name" is a required property; /name: 5 is not of type "string"` and so on.
    pub fn summary(&self) -> String {
        Self::join(&self.errors)
    }

    /// [`Self::summary`] without the request's values (what the receipt records).
    pub fn masked_summary(&self) -> String {
        Self::join(&self.masked)
    }

    fn join(errors: &[(String, String)]) -> String {
        errors
            .iter()
            .map(|(field, message)| {
                if field.is_empty() {
                    message.clone()
                } else {
                    format!("{field}: {message}")
                }
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Validates `request` against the `config.schema.json` of the verified package the Hall would
/// run for `species`, before anything runs. Only a schema read from the verified store copy
/// is applied; without one (no schema file, or no attestation) the request is passed on and
/// the worker's own bootstrap validates it. A verified package whose schema is present but
/// unusable (too large, not JSON, not an object) or does not compile is refused: fail closed,
/// the package must be fixed and signed again. References are never fetched (the crate is
/// built without its HTTP and file resolvers). Blocking: the package may be verified.
///
/// `verified_store` is the store copy this dispatch's routing verified, when it did: the schema
/// is then read from exactly the copy that will run.
pub fn check_request(
    loaded: &Loaded,
    species: &str,
    request: &Map<String, Value>,
    verified_store: Option<&Path>,
) -> Result<(), InputMismatch> {
    let dir = match verified_store {
        Some(dir) => dir.to_path_buf(),
        None => match package_dir(loaded, species) {
            Ok((dir, "verified_package")) => dir,
            _ => return Ok(()),
        },
    };
    let unusable = |why: String| {
        let e = vec![(
            String::new(),
            format!(
                "the package's {SCHEMA_FILE} cannot be used ({why}): nothing runs until it is \
                 fixed and the package signed again"
            ),
        )];
        InputMismatch {
            errors: e.clone(),
            masked: e,
        }
    };
    let validator = match loaded.input_schemas.get(&dir) {
        Some(compiled) => compiled,
        None => {
            let compiled = match read_object_schema(&dir, SCHEMA_FILE) {
                Ok(Some(schema)) => jsonschema::validator_for(&Value::Object(schema))
                    .map(|v| Some(Arc::new(v)))
                    .map_err(|e| e.to_string()),
                Ok(None) => Ok(None),
                Err(why) => Err(why),
            };
            loaded.input_schemas.put(dir.clone(), compiled.clone());
            compiled
        }
    }
    .map_err(unusable)?;
    // No schema: the package accepts any object, and its bootstrap validates.
    let Some(validator) = validator else {
        return Ok(());
    };
    let instance = Value::Object(request.clone());
    let bounded = |mut message: String| {
        if message.len() > 300 {
            let mut end = 297;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
            message.push_str("...");
        }
        message
    };
    let (errors, masked): (Vec<_>, Vec<_>) = validator
        .iter_errors(&instance)
        .take(MAX_INPUT_ERRORS)
        .map(|e| {
            let field = e.instance_path().to_string();
            (
                (field.clone(), bounded(e.to_string())),
                (field, bounded(e.masked().to_string())),
            )
        })
        .unzip();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(InputMismatch { errors, masked })
    }
}

/// A package's optional output schema (`output.schema.json`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OutputSchema {
    /// The schema, when the package has a usable one.
    pub schema: Option<Map<String, Value>>,
    /// Why a present file was not used (a missing file is not noted: the schema is optional).
    pub note: Option<String>,
}

/// The output schema of the package the Hall would run for `species`, read like the input
/// schema (same source, same limits and checks).
pub fn output_schema_for(loaded: &Loaded, species: &str) -> OutputSchema {
    match package_dir(loaded, species) {
        Ok((dir, _)) => read_output_schema(&dir),
        Err(_) => OutputSchema::default(),
    }
}

/// Reads `<dir>/output.schema.json` defensively (as [`read_schema`]); absent is not an error.
pub fn read_output_schema(dir: &Path) -> OutputSchema {
    match read_object_schema(dir, OUTPUT_SCHEMA_FILE) {
        Ok(Some(schema)) => OutputSchema {
            schema: Some(schema),
            note: None,
        },
        Ok(None) => OutputSchema::default(),
        Err(why) => OutputSchema {
            schema: None,
            note: Some(why),
        },
    }
}

/// Reads `<dir>/config.schema.json` defensively (see the module's threat model).
pub fn read_schema(dir: &Path, source: &'static str) -> InputSchema {
    match read_object_schema(dir, SCHEMA_FILE) {
        Ok(Some(schema)) => InputSchema {
            schema,
            source,
            note: None,
        },
        Ok(None) => InputSchema::permissive(
            source,
            format!("the package has no {SCHEMA_FILE}; any JSON object is passed on"),
        ),
        Err(why) => InputSchema::permissive(source, why),
    }
}

/// Reads `<dir>/<file>` as a JSON Schema for a JSON object: `Ok(None)` when absent, `Err` (a
/// note naming the file) when it cannot be used. Opened without following symbolic links and
/// without blocking; a regular file of at most [`MAX_SCHEMA_BYTES`]; a JSON object whose
/// `type`, if present, is `"object"`.
fn read_object_schema(dir: &Path, file_name: &str) -> Result<Option<Map<String, Value>>, String> {
    let path = dir.join(file_name);
    let fail = |why: String| format!("{}: {why}", path.display());
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(&path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(fail(format!("cannot open: {e}"))),
    };
    let meta = file
        .metadata()
        .map_err(|e| fail(format!("cannot stat: {e}")))?;
    if !meta.is_file() {
        return Err(fail("not a regular file".into()));
    }
    if meta.len() > MAX_SCHEMA_BYTES {
        return Err(fail(format!(
            "{} bytes, over the {MAX_SCHEMA_BYTES}-byte limit",
            meta.len()
        )));
    }
    let mut bytes = Vec::new();
    if let Err(e) = file.take(MAX_SCHEMA_BYTES + 1).read_to_end(&mut bytes) {
        return Err(fail(format!("cannot read: {e}")));
    }
    if bytes.len() as u64 > MAX_SCHEMA_BYTES {
        return Err(fail(format!("over the {MAX_SCHEMA_BYTES}-byte limit")));
    }
    match crate::json::parse_slice(&bytes) {
        Ok(Value::Object(schema)) => match schema.get("type") {
            None => Ok(Some(schema)),
            Some(Value::String(t)) if t == "object" => Ok(Some(schema)),
            Some(other) => Err(fail(format!(
                "its top-level \"type\" is {other}, but a request or result is a JSON object"
            ))),
        },
        Ok(_) => Err(fail("not a JSON object".into())),
        Err(e) => Err(fail(format!("not valid JSON: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundled(worker: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("workers")
            .join(worker)
    }

    #[test]
    fn a_package_schema_is_read_as_is() {
        let s = read_schema(&bundled("hello"), "verified_package");
        assert_eq!(s.note, None);
        assert_eq!(s.source, "verified_package");
        assert_eq!(s.schema["required"], json!(["name"]));
    }

    #[test]
    fn bad_or_missing_schemas_become_permissive_with_a_note() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let note = |s: &InputSchema| s.note.clone().unwrap_or_default();
        let permissive = json!({"type": "object"});

        let s = read_schema(d, "package_root");
        assert_eq!(Value::Object(s.schema.clone()), permissive);
        assert!(note(&s).contains("has no config.schema.json"), "{s:?}");

        for (text, why) in [
            ("{not json", "not valid JSON"),
            ("[1, 2]", "not a JSON object"),
            (r#"{"type": "array"}"#, "top-level \"type\""),
        ] {
            std::fs::write(d.join(SCHEMA_FILE), text).unwrap();
            let s = read_schema(d, "package_root");
            assert_eq!(Value::Object(s.schema.clone()), permissive, "{text}");
            assert!(note(&s).contains(why), "{text}: {s:?}");
        }

        let big = format!(
            r#"{{"type": "object", "description": "{}"}}"#,
            "x".repeat(MAX_SCHEMA_BYTES as usize)
        );
        std::fs::write(d.join(SCHEMA_FILE), big).unwrap();
        assert!(note(&read_schema(d, "package_root")).contains("limit"));

        // A symbolic link is not followed; a FIFO does not block the Hall.
        std::fs::remove_file(d.join(SCHEMA_FILE)).unwrap();
        std::os::unix::fs::symlink(bundled("hello").join(SCHEMA_FILE), d.join(SCHEMA_FILE))
            .unwrap();
        let s = read_schema(d, "package_root");
        assert_eq!(Value::Object(s.schema.clone()), permissive);
        assert!(note(&s).contains("cannot open"), "{s:?}");
        std::fs::remove_file(d.join(SCHEMA_FILE)).unwrap();
        nix::unistd::mkfifo(
            &d.join(SCHEMA_FILE),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        let s = read_schema(d, "package_root");
        assert!(note(&s).contains("not a regular file"), "{s:?}");
    }

    #[test]
    fn an_output_schema_is_optional_and_read_like_the_input_schema() {
        let s = read_output_schema(&bundled("hello"));
        assert_eq!(s.note, None);
        assert_eq!(
            s.schema.unwrap()["required"],
            json!(["greeting", "correlation_id"])
        );
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_output_schema(dir.path()), OutputSchema::default());
        std::fs::write(dir.path().join(OUTPUT_SCHEMA_FILE), r#"{"type": "string"}"#).unwrap();
        let s = read_output_schema(dir.path());
        assert_eq!(s.schema, None);
        assert!(s.note.unwrap().contains("top-level"));
    }

    #[test]
    fn an_input_mismatch_names_the_fields() {
        let m = InputMismatch {
            errors: vec![
                (String::new(), "\"name\" is a required property".into()),
                ("/name".into(), "5 is not of type \"string\"".into()),
            ],
            masked: vec![
                (String::new(), "\"name\" is a required property".into()),
                ("/name".into(), "value is not of type \"string\"".into()),
            ],
        };
        assert_eq!(
            m.masked_summary(),
            "\"name\" is a required property; /name: value is not of type \"string\""
        );
        assert_eq!(
            m.summary(),
            "\"name\" is a required property; /name: 5 is not of type \"string\""
        );
    }

    #[test]
    fn the_context_is_exactly_five_validated_strings() {
        let ok = json!({"tenant_id": "acme-corp", "env": "dev", "data_label": "PUBLIC",
                        "tenant_risk": "low", "qos_class": "P2"});
        let t = parse_context(&ok).unwrap();
        assert_eq!(t.tenant_id, "acme-corp");
        let err = |v: Value| parse_context(&v).unwrap_err();
        let mut extra = ok.clone();
        extra["dry_run"] = json!(true);
        let e = err(extra);
        assert_eq!((e.status.as_u16(), e.code), (400, "invalid_context"));
        assert!(
            e.message.contains("unknown field \"dry_run\""),
            "{}",
            e.message
        );
        let mut missing = ok.clone();
        missing.as_object_mut().unwrap().remove("qos_class");
        assert!(err(missing).message.contains("qos_class is required"));
        let mut bad = ok.clone();
        bad["env"] = json!("production");
        let e = err(bad);
        assert!(e.message.contains("env"), "{}", e.message);
        let mut blank = ok.clone();
        blank["tenant_id"] = json!("  ");
        assert!(err(blank).message.contains("tenant_id"));
        let mut ctl = ok;
        ctl["tenant_id"] = json!("acme\u{7}");
        assert!(err(ctl).message.contains("control character"));
        assert!(err(json!([1])).message.contains("expected a JSON object"));
    }
}
