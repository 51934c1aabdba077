//! RouteInput: what a caller asks the Hall to route (WCP §4.1), parsed strictly.
//!
//! PyHall's pydantic model is lax: it ignores unknown keys, coerces `"7"` to 7 and accepts
//! control characters in identifiers. The Hall is strict by design and every rejection names
//! the field and says what is allowed:
//! - unknown keys are errors (a misspelt `dry_rum` must not silently route a real dispatch);
//! - `blast_score` must be a JSON integer (no strings, floats or booleans);
//! - `capability_id`, `tenant_id` and `correlation_id` may not contain control characters or
//!   U+2028/U+2029 (log and event injection is refused at the door, not only sanitised later);
//! - `capability_id` is required and may not be blank (empty or only whitespace): a request that
//!   names no capability is refused here, naming the field, and never reaches routing;
//! - `tenant_id` and `correlation_id` may be absent or blank: the router then denies with
//!   `DENY_MISSING_TENANT_ID` / `DENY_MISSING_CORRELATION_ID`, exactly as PyHall's router does,
//!   so such a request still yields a recorded decision (a receipt may carry an empty
//!   `tenant_id` or `correlation_id` for exactly this reason).

use serde::Serialize;
use serde_json::{Map, Value};

use super::enums::{DataLabel, Env, QosClass, TenantRisk, VocabularyError};

/// The longest identifier (`capability_id`, `tenant_id`, `correlation_id`) the Hall accepts, in bytes.
pub const MAX_ID_BYTES: usize = 256;

/// Every key a RouteInput may carry.
pub const FIELDS: &[&str] = &[
    "capability_id",
    "env",
    "data_label",
    "tenant_risk",
    "qos_class",
    "tenant_id",
    "correlation_id",
    "request",
    "blast_radius",
    "blast_score",
    "privilege_context",
    "dry_run",
    "tenant_credential",
    "policy_version",
];

/// A validated routing request.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RouteInput {
    pub capability_id: String,
    pub env: Env,
    pub data_label: DataLabel,
    pub tenant_risk: TenantRisk,
    pub qos_class: QosClass,
    pub tenant_id: String,
    pub correlation_id: String,
    /// The worker's payload, any JSON object.
    pub request: Map<String, Value>,
    pub blast_radius: Option<Map<String, Value>>,
    /// Caller's blast score; it can only raise the computed score. Range is checked by the router
    /// (PyHall step 0.25, `DENY_INVALID_INPUT`), not here, so the denial is a recorded decision.
    pub blast_score: Option<i64>,
    pub privilege_context: Option<Map<String, Value>>,
    pub dry_run: bool,
    pub tenant_credential: Option<String>,
    /// WCP §4.1 field; accepted and echoed but, as in PyHall, the policy gate reports the version.
    pub policy_version: Option<String>,
}

/// Why a RouteInput was rejected before routing.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InputError {
    #[error("RouteInput must be a JSON object, got {0}")]
    NotAnObject(&'static str),
    #[error("RouteInput.{0} is required")]
    Missing(&'static str),
    #[error(
        "RouteInput.{0} is empty or only whitespace; name the capability to route (e.g. cap.doc.summarize)"
    )]
    Blank(&'static str),
    #[error("RouteInput.{field}: expected {expected}, got {got}")]
    WrongType {
        field: &'static str,
        expected: &'static str,
        got: &'static str,
    },
    #[error("RouteInput.{0}")]
    Vocabulary(#[from] VocabularyError),
    #[error("RouteInput has unknown field {field:?}; allowed fields: {}", FIELDS.join(", "))]
    UnknownField { field: String },
    #[error(
        "RouteInput.{field} contains a control character (U+{codepoint:04X}); identifiers must be printable"
    )]
    ControlCharacter { field: &'static str, codepoint: u32 },
    #[error("RouteInput.{field} is {len} bytes long; at most {MAX_ID_BYTES} are allowed")]
    TooLong { field: &'static str, len: usize },
    #[error("RouteInput.blast_score: {0} does not fit in a 64-bit integer")]
    IntegerRange(String),
}

/// The JSON type name of a value, for error messages.
pub fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_f64() => "a number with a fraction or exponent",
        Value::Number(_) => "an integer",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl RouteInput {
    /// Parses one RouteInput from JSON text.
    pub fn from_json_str(text: &str) -> Result<Self, InputParseError> {
        let value: Value = crate::json::parse_str(text).map_err(InputParseError::Json)?;
        Ok(Self::from_value(&value)?)
    }

    /// Validates a JSON value as a RouteInput.
    pub fn from_value(value: &Value) -> Result<Self, InputError> {
        let obj = value
            .as_object()
            .ok_or_else(|| InputError::NotAnObject(json_type(value)))?;
        if let Some(unknown) = obj.keys().find(|k| !FIELDS.contains(&k.as_str())) {
            return Err(InputError::UnknownField {
                field: unknown.clone(),
            });
        }
        let vocab = |field: &'static str| -> Result<&str, InputError> {
            match obj.get(field) {
                None | Some(Value::Null) => Err(InputError::Missing(field)),
                Some(Value::String(s)) => Ok(s.as_str()),
                Some(other) => Err(InputError::WrongType {
                    field,
                    expected: "a string",
                    got: json_type(other),
                }),
            }
        };
        let capability_id =
            identifier(obj, "capability_id")?.ok_or(InputError::Missing("capability_id"))?;
        if crate::pyjson::py_is_blank(&capability_id) {
            return Err(InputError::Blank("capability_id"));
        }
        Ok(RouteInput {
            capability_id,
            env: Env::parse(vocab("env")?)?,
            data_label: DataLabel::parse(vocab("data_label")?)?,
            tenant_risk: TenantRisk::parse(vocab("tenant_risk")?)?,
            qos_class: QosClass::parse(vocab("qos_class")?)?,
            tenant_id: identifier(obj, "tenant_id")?.unwrap_or_default(),
            correlation_id: identifier(obj, "correlation_id")?.unwrap_or_default(),
            request: optional_object(obj, "request")?.unwrap_or_default(),
            blast_radius: optional_object(obj, "blast_radius")?,
            blast_score: match obj.get("blast_score") {
                None | Some(Value::Null) => None,
                Some(Value::Number(n)) if !n.is_f64() => Some(
                    n.as_i64()
                        .ok_or_else(|| InputError::IntegerRange(n.to_string()))?,
                ),
                Some(other) => {
                    return Err(InputError::WrongType {
                        field: "blast_score",
                        expected: "an integer from 0 to 100",
                        got: json_type(other),
                    });
                }
            },
            privilege_context: optional_object(obj, "privilege_context")?,
            dry_run: match obj.get("dry_run") {
                None | Some(Value::Null) => false,
                Some(Value::Bool(b)) => *b,
                Some(other) => {
                    return Err(InputError::WrongType {
                        field: "dry_run",
                        expected: "true or false",
                        got: json_type(other),
                    });
                }
            },
            tenant_credential: optional_string(obj, "tenant_credential")?,
            policy_version: optional_string(obj, "policy_version")?,
        })
    }

    /// Appends `json.dumps(self.model_dump(), sort_keys=True)` (default separators) to `out`
    /// without building the intermediate value: the 13 keys in sorted order, nested objects
    /// through the Python-compatible encoder. Equal to encoding [`RouteInput::model_dump`]
    /// (a test checks it); this is the hot path of every allowed decision.
    pub fn write_pyhall_json(&self, out: &mut String) {
        use crate::pyjson::{Separators::Default as Sep, write_str, write_value};
        let opt_obj = |out: &mut String, m: &Option<Map<String, Value>>| match m {
            Some(m) => write_object(out, m),
            None => out.push_str("null"),
        };
        fn write_object(out: &mut String, m: &Map<String, Value>) {
            let mut entries: Vec<(&String, &Value)> = m.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_str(out, k);
                out.push_str(": ");
                write_value(out, v, Sep);
            }
            out.push('}');
        }
        out.push_str("{\"blast_radius\": ");
        opt_obj(out, &self.blast_radius);
        out.push_str(", \"blast_score\": ");
        match self.blast_score {
            Some(n) => out.push_str(&n.to_string()),
            None => out.push_str("null"),
        }
        out.push_str(", \"capability_id\": ");
        write_str(out, &self.capability_id);
        out.push_str(", \"correlation_id\": ");
        write_str(out, &self.correlation_id);
        out.push_str(", \"data_label\": ");
        write_str(out, self.data_label.as_str());
        out.push_str(if self.dry_run {
            ", \"dry_run\": true"
        } else {
            ", \"dry_run\": false"
        });
        out.push_str(", \"env\": ");
        write_str(out, self.env.as_str());
        out.push_str(", \"privilege_context\": ");
        opt_obj(out, &self.privilege_context);
        out.push_str(", \"qos_class\": ");
        write_str(out, self.qos_class.as_str());
        out.push_str(", \"request\": ");
        write_object(out, &self.request);
        out.push_str(", \"tenant_credential\": ");
        match &self.tenant_credential {
            Some(c) => write_str(out, c),
            None => out.push_str("null"),
        }
        out.push_str(", \"tenant_id\": ");
        write_str(out, &self.tenant_id);
        out.push_str(", \"tenant_risk\": ");
        write_str(out, self.tenant_risk.as_str());
        out.push('}');
    }

    /// PyHall's `RouteInput.model_dump()`: the 13 model fields (not `policy_version`, which
    /// PyHall's model does not have), used for the byte-exact `artifact_hash`.
    pub fn model_dump(&self) -> Value {
        let opt_obj = |m: &Option<Map<String, Value>>| m.clone().map_or(Value::Null, Value::Object);
        let mut m = Map::new();
        m.insert("capability_id".into(), self.capability_id.clone().into());
        m.insert("env".into(), self.env.as_str().into());
        m.insert("data_label".into(), self.data_label.as_str().into());
        m.insert("tenant_risk".into(), self.tenant_risk.as_str().into());
        m.insert("qos_class".into(), self.qos_class.as_str().into());
        m.insert("tenant_id".into(), self.tenant_id.clone().into());
        m.insert("correlation_id".into(), self.correlation_id.clone().into());
        m.insert("request".into(), Value::Object(self.request.clone()));
        m.insert("blast_radius".into(), opt_obj(&self.blast_radius));
        m.insert(
            "blast_score".into(),
            self.blast_score.map_or(Value::Null, Value::from),
        );
        m.insert("privilege_context".into(), opt_obj(&self.privilege_context));
        m.insert("dry_run".into(), self.dry_run.into());
        m.insert(
            "tenant_credential".into(),
            self.tenant_credential
                .clone()
                .map_or(Value::Null, Value::from),
        );
        Value::Object(m)
    }
}

/// A RouteInput that was not valid JSON, or valid JSON that is not a valid RouteInput.
#[derive(Debug, thiserror::Error)]
pub enum InputParseError {
    #[error("RouteInput is not valid JSON: {0}")]
    Json(serde_json::Error),
    #[error(transparent)]
    Invalid(#[from] InputError),
}

fn optional_string(
    obj: &Map<String, Value>,
    field: &'static str,
) -> Result<Option<String>, InputError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(InputError::WrongType {
            field,
            expected: "a string",
            got: json_type(other),
        }),
    }
}

fn identifier(obj: &Map<String, Value>, field: &'static str) -> Result<Option<String>, InputError> {
    let Some(s) = optional_string(obj, field)? else {
        return Ok(None);
    };
    if s.len() > MAX_ID_BYTES {
        return Err(InputError::TooLong {
            field,
            len: s.len(),
        });
    }
    if let Some(c) = s.chars().find(|c| is_forbidden_in_id(*c)) {
        return Err(InputError::ControlCharacter {
            field,
            codepoint: c as u32,
        });
    }
    Ok(Some(s))
}

/// C0, DEL, C1 and the two Unicode line separators PyHall's sanitiser misses.
pub fn is_forbidden_in_id(c: char) -> bool {
    c.is_control() || c == '\u{2028}' || c == '\u{2029}'
}

fn optional_object(
    obj: &Map<String, Value>,
    field: &'static str,
) -> Result<Option<Map<String, Value>>, InputError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => Ok(Some(m.clone())),
        Some(other) => Err(InputError::WrongType {
            field,
            expected: "an object",
            got: json_type(other),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base() -> Value {
        json!({"capability_id": "cap.doc.summarize", "env": "dev", "data_label": "INTERNAL",
               "tenant_risk": "low", "qos_class": "P2", "tenant_id": "tenant-1",
               "correlation_id": "test-corr-cv011"})
    }

    fn with(key: &str, v: Value) -> Value {
        let mut b = base();
        b[key] = v;
        b
    }

    #[test]
    fn parses_a_minimal_input() {
        let i = RouteInput::from_value(&base()).unwrap();
        assert_eq!(i.env, Env::Dev);
        assert!(i.request.is_empty());
        assert!(!i.dry_run);
    }

    #[test]
    fn each_malformed_field_is_named() {
        let cases = [
            (
                with("env", json!("production")),
                "RouteInput.env: \"production\" is not allowed; expected one of: dev, stage, prod, edge",
            ),
            (
                with("qos_class", json!(2)),
                "RouteInput.qos_class: expected a string, got an integer",
            ),
            (
                with("blast_score", json!("7")),
                "RouteInput.blast_score: expected an integer from 0 to 100, got a string",
            ),
            (
                with("blast_score", json!(5.5)),
                "RouteInput.blast_score: expected an integer from 0 to 100, got a number with a fraction or exponent",
            ),
            (
                with("blast_score", json!(true)),
                "RouteInput.blast_score: expected an integer from 0 to 100, got a boolean",
            ),
            (
                with("capability_id", json!("")),
                "RouteInput.capability_id is empty or only whitespace",
            ),
            (
                with("capability_id", json!("   ")),
                "RouteInput.capability_id is empty or only whitespace",
            ),
            (
                with("dry_rum", json!(true)),
                "RouteInput has unknown field \"dry_rum\"",
            ),
            (
                with("request", json!([1])),
                "RouteInput.request: expected an object, got an array",
            ),
            (
                with("capability_id", json!("cap.a\nevt.fake")),
                "RouteInput.capability_id contains a control character (U+000A)",
            ),
            (
                with("tenant_id", json!("t\u{2028}")),
                "RouteInput.tenant_id contains a control character (U+2028)",
            ),
            (
                with("dry_run", json!("yes")),
                "RouteInput.dry_run: expected true or false, got a string",
            ),
        ];
        for (input, want) in cases {
            let err = RouteInput::from_value(&input).unwrap_err().to_string();
            assert!(err.starts_with(want), "{err:?} should start with {want:?}");
        }
        let mut missing = base();
        missing.as_object_mut().unwrap().remove("data_label");
        assert_eq!(
            RouteInput::from_value(&missing).unwrap_err(),
            InputError::Missing("data_label")
        );
        assert!(matches!(
            RouteInput::from_json_str("{\"env\": "),
            Err(InputParseError::Json(_))
        ));
        assert_eq!(
            RouteInput::from_value(&json!([])).unwrap_err(),
            InputError::NotAnObject("an array")
        );
        let long = "c".repeat(MAX_ID_BYTES + 1);
        assert!(matches!(
            RouteInput::from_value(&with("capability_id", json!(long))),
            Err(InputError::TooLong {
                field: "capability_id",
                ..
            })
        ));
    }

    #[test]
    fn direct_encoding_equals_encoding_the_model_dump() {
        let mut full = base();
        full["request"] = json!({"b": [1, 2.5, true, null], "a": "é\n", "z": {"y": 1e16, "x": {}}});
        full["blast_radius"] = json!({"data": 1});
        full["blast_score"] = json!(7);
        full["dry_run"] = json!(true);
        full["tenant_credential"] = json!("tok\u{7f}");
        full["privilege_context"] = json!({});
        for v in [base(), full] {
            let i = RouteInput::from_value(&v).unwrap();
            let mut direct = String::new();
            i.write_pyhall_json(&mut direct);
            let via_value =
                crate::pyjson::dumps_sorted(&i.model_dump(), crate::pyjson::Separators::Default);
            assert_eq!(direct, via_value);
        }
    }

    #[test]
    fn blank_tenant_and_correlation_are_left_to_the_router() {
        let mut b = base();
        b.as_object_mut().unwrap().remove("correlation_id");
        b["tenant_id"] = json!("  ");
        let i = RouteInput::from_value(&b).unwrap();
        assert_eq!(i.correlation_id, "");
        assert_eq!(i.tenant_id, "  ");
    }
}
