//! Canonical JSON for everything the Hall signs (in-toto statements, receipts).
//!
//! A restricted profile on which serde_json, RFC 8785 (JCS) and Python
//! `json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False)` produce the same bytes
//! (attestation-anchors §3.4): values are strings, booleans, null, integers within ±(2^53−1),
//! arrays and objects with ASCII keys; no floats. Keys are sorted here, explicitly, so the
//! output never depends on serde_json's `preserve_order` feature (which this crate enables).
//! Strings escape `"`, `\`, `\b \f \n \r \t` and other controls below U+0020 as `\u00xx`;
//! everything else is raw UTF-8.
//!
//! Threat model: verifiers check signatures over the *stored* bytes and never re-serialise, so
//! canonical form is a producer property; the strict parser additionally rejects duplicate keys
//! (serde_json silently keeps the last one, so `{"a":1,"a":2}` could show a reader a different
//! value than a signer intended) and [`is_canonical`] lets a verifier insist on one encoding.

use std::fmt;

use serde_json::{Number, Value};

/// The largest integer magnitude the profile allows (2^53 − 1).
pub const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// A value outside the canonical profile, or bytes that are not strict JSON.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CanonicalError {
    #[error(
        "{path}: floating-point numbers are not allowed in signed JSON (use integers: ms, bytes)"
    )]
    Float { path: String },
    #[error("{path}: integer {value} is outside ±(2^53−1)")]
    IntegerRange { path: String, value: String },
    #[error("{path}: object key {key:?} is not ASCII")]
    NonAsciiKey { path: String, key: String },
    #[error("not strict JSON: {0}")]
    Parse(String),
}

/// Encodes `value` canonically, or says which part is outside the profile.
pub fn to_canonical(value: &Value) -> Result<Vec<u8>, CanonicalError> {
    let mut out = Vec::with_capacity(256);
    write(&mut out, value, &mut String::from("$"))?;
    Ok(out)
}

/// Encodes any serialisable value canonically.
pub fn to_canonical_from<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, CanonicalError> {
    let v = serde_json::to_value(value).map_err(|e| CanonicalError::Parse(e.to_string()))?;
    to_canonical(&v)
}

fn write(out: &mut Vec<u8>, value: &Value, path: &mut String) -> Result<(), CanonicalError> {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Number(n) => write_number(out, n, path)?,
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                let len = path.len();
                // Infallible: writing into a String.
                let _ = fmt::Write::write_fmt(path, format_args!("[{i}]"));
                write(out, item, path)?;
                path.truncate(len);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push(b'{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if !k.is_ascii() {
                    return Err(CanonicalError::NonAsciiKey {
                        path: path.clone(),
                        key: k.clone(),
                    });
                }
                if i > 0 {
                    out.push(b',');
                }
                write_string(out, k);
                out.push(b':');
                let len = path.len();
                path.push('.');
                path.push_str(k);
                write(out, v, path)?;
                path.truncate(len);
            }
            out.push(b'}');
        }
    }
    Ok(())
}

/// An integer within ±(2^53−1), else the error at `path`.
fn check_number(n: &Number, path: &str) -> Result<(), CanonicalError> {
    let range = || CanonicalError::IntegerRange {
        path: path.to_owned(),
        value: n.to_string(),
    };
    if let Some(i) = n.as_i64() {
        if i.unsigned_abs() > MAX_SAFE_INTEGER {
            return Err(range());
        }
    } else if let Some(u) = n.as_u64() {
        if u > MAX_SAFE_INTEGER {
            return Err(range());
        }
    } else {
        return Err(CanonicalError::Float {
            path: path.to_owned(),
        });
    }
    Ok(())
}

fn write_number(out: &mut Vec<u8>, n: &Number, path: &str) -> Result<(), CanonicalError> {
    check_number(n, path)?;
    // An integer in range: serde_json writes it as its decimal digits.
    out.extend_from_slice(n.to_string().as_bytes());
    Ok(())
}

fn write_string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    for c in s.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            '\u{8}' => out.extend_from_slice(b"\\b"),
            '\u{c}' => out.extend_from_slice(b"\\f"),
            c if (c as u32) < 0x20 => {
                out.extend_from_slice(format!("\\u{:04x}", c as u32).as_bytes())
            }
            c => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    out.push(b'"');
}

/// Checks that `value` is inside the profile (what [`to_canonical`] would accept) without
/// encoding it: no output buffer, and the error's path is built only when there is an error.
pub fn check(value: &Value) -> Result<(), CanonicalError> {
    check_rel(value).map_err(|e| e.prefixed("$"))
}

/// Checks `value` ([`check`]) and sorts every object's keys in place, so that
/// `serde_json::to_vec` of it (insertion order, with this crate's `preserve_order`) is exactly
/// its canonical encoding — without encoding and re-parsing it.
pub fn canonicalize(value: &mut Value) -> Result<(), CanonicalError> {
    check(value)?;
    // `String`'s order is its bytes' order, the canonical key order.
    value.sort_all_objects();
    Ok(())
}

fn check_rel(value: &Value) -> Result<(), CanonicalError> {
    match value {
        Value::Null | Value::Bool(_) | Value::String(_) => Ok(()),
        Value::Number(n) => check_number(n, ""),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .try_for_each(|(i, item)| check_rel(item).map_err(|e| e.prefixed(&format!("[{i}]")))),
        Value::Object(map) => map.iter().try_for_each(|(k, v)| {
            if !k.is_ascii() {
                return Err(CanonicalError::NonAsciiKey {
                    path: String::new(),
                    key: k.clone(),
                });
            }
            check_rel(v).map_err(|e| e.prefixed(&format!(".{k}")))
        }),
    }
}

impl CanonicalError {
    /// The same error with `prefix` put in front of its path.
    fn prefixed(mut self, prefix: &str) -> Self {
        match &mut self {
            CanonicalError::Float { path }
            | CanonicalError::IntegerRange { path, .. }
            | CanonicalError::NonAsciiKey { path, .. } => path.insert_str(0, prefix),
            CanonicalError::Parse(_) => {}
        }
        self
    }
}

/// Parses JSON strictly: duplicate object keys are an error (see [`crate::json`]).
pub fn parse_strict(bytes: &[u8]) -> Result<Value, CanonicalError> {
    crate::json::parse_slice(bytes).map_err(|e| CanonicalError::Parse(e.to_string()))
}

/// Whether `bytes` are exactly the canonical encoding of the JSON they hold.
pub fn is_canonical(bytes: &[u8]) -> bool {
    parse_strict(bytes)
        .ok()
        .and_then(|v| to_canonical(&v).ok())
        .is_some_and(|c| c == bytes)
}

#[cfg(test)]
mod tests {
    #[test]
    fn check_and_canonicalize_agree_with_to_canonical() {
        use serde_json::json;
        let mut v = json!({"b": [1, {"z": null, "a": "x\n"}], "a": true, "c": {"k": -5}});
        check(&v).unwrap();
        canonicalize(&mut v).unwrap();
        assert_eq!(serde_json::to_vec(&v).unwrap(), to_canonical(&v).unwrap());
        assert_eq!(
            String::from_utf8(serde_json::to_vec(&v).unwrap()).unwrap(),
            r#"{"a":true,"b":[1,{"a":"x\n","z":null}],"c":{"k":-5}}"#
        );
        // The same errors, with the same paths, as the encoder.
        for bad in [
            json!({"a": [0, {"f": 1.5}]}),
            json!({"a": {"n": 9007199254740992u64}}),
            json!([{"é": 1}]),
        ] {
            let expected = to_canonical(&bad).unwrap_err();
            assert_eq!(check(&bad).unwrap_err(), expected);
            assert_eq!(canonicalize(&mut bad.clone()).unwrap_err(), expected);
        }
    }

    use super::*;
    use serde_json::json;

    #[test]
    fn encodes_sorted_compact_raw_utf8() {
        let v = json!({"b": [1, -2, true, null], "a": "é\n\u{1f}\u{2028}😀", "c": {"z": "", "y": 9007199254740991u64}});
        let out = String::from_utf8(to_canonical(&v).unwrap()).unwrap();
        assert_eq!(
            out,
            "{\"a\":\"é\\n\\u001f\u{2028}😀\",\"b\":[1,-2,true,null],\"c\":{\"y\":9007199254740991,\"z\":\"\"}}"
        );
        assert!(is_canonical(out.as_bytes()));
        assert!(!is_canonical(b"{\"b\":1, \"a\":2}"));
    }

    #[test]
    fn python_json_dumps_agrees() {
        // python3 -c 'import json;print(json.dumps({"k":"é\x01","n":-5,"l":[True,None]},sort_keys=True,separators=(",",":"),ensure_ascii=False))'
        let v = json!({"k": "é\u{1}", "n": -5, "l": [true, null]});
        assert_eq!(
            to_canonical(&v).unwrap(),
            "{\"k\":\"é\\u0001\",\"l\":[true,null],\"n\":-5}".as_bytes()
        );
    }

    #[test]
    fn refuses_values_outside_the_profile() {
        assert_eq!(
            to_canonical(&json!({"a": [1.5]})),
            Err(CanonicalError::Float {
                path: "$.a[0]".into()
            })
        );
        assert!(matches!(
            to_canonical(&json!(9007199254740992u64)),
            Err(CanonicalError::IntegerRange { .. })
        ));
        assert!(matches!(
            to_canonical(&json!(-9007199254740992i64)),
            Err(CanonicalError::IntegerRange { .. })
        ));
        assert!(matches!(
            to_canonical(&json!({"é": 1})),
            Err(CanonicalError::NonAsciiKey { .. })
        ));
    }

    #[test]
    fn strict_parse_rejects_duplicate_keys_and_trailing_data() {
        let err = parse_strict(br#"{"a":1,"b":{"c":1,"c":2}}"#).unwrap_err();
        assert!(err.to_string().contains("duplicate key \"c\""), "{err}");
        assert!(parse_strict(br#"{"a":1} x"#).is_err());
        assert_eq!(
            parse_strict(br#"{"a":[1,"x",null]}"#).unwrap(),
            json!({"a": [1, "x", null]})
        );
    }
}
