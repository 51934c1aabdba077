//! Strict JSON: the one parser for every JSON document the Hall accepts from outside (request
//! bodies, JSON-RPC messages from an MCP host, rules, registry records, package manifests and
//! schemas, trust policies, persisted approvals, proof bundles, routing tests and vectors).
//!
//! serde_json keeps the last of duplicate object keys, so `{"dry_run": false, "dry_run": true}`
//! could show a reviewer or a log one value while the Hall acts on another. Here a duplicate key
//! anywhere in the document is an error naming the key, with its line and column: `duplicate
//! key "dry_run" at line 1 column 36`. Everything else is plain serde_json.

use std::fmt;

use serde::de::{self, DeserializeOwned, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Number, Value};

/// Parses one JSON value (and nothing after it but whitespace), refusing duplicate keys.
pub fn parse_slice(bytes: &[u8]) -> Result<Value, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let StrictValue(v) = StrictValue::deserialize(&mut de)?;
    de.end()?;
    Ok(v)
}

/// [`parse_slice`] for text.
pub fn parse_str(text: &str) -> Result<Value, serde_json::Error> {
    parse_slice(text.as_bytes())
}

/// Deserializes a `T` from JSON bytes after checking them with [`parse_slice`], so errors about
/// the shape of `T` keep serde_json's line and column.
pub fn from_slice<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, serde_json::Error> {
    parse_slice(bytes)?;
    serde_json::from_slice(bytes)
}

/// [`from_slice`] for text.
pub fn from_str<T: DeserializeOwned>(text: &str) -> Result<T, serde_json::Error> {
    from_slice(text.as_bytes())
}

/// A `Value` whose objects never had a key twice.
struct StrictValue(Value);

impl<'de> Deserialize<'de> for StrictValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(StrictValue)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("non-finite number"))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(StrictValue(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let StrictValue(v) = map.next_value()?;
            if out.contains_key(&key) {
                return Err(de::Error::custom(format!("duplicate key {key:?}")));
            }
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn duplicate_keys_are_refused_anywhere_with_their_name_and_position() {
        let err = parse_str(r#"{"a":1,"b":{"c":1,"c":2}}"#).unwrap_err();
        assert_eq!(err.to_string(), "duplicate key \"c\" at line 1 column 24");
        let err = parse_str("[{\"k\": 1},\n {\"k\": 1, \"k\": 1}]").unwrap_err();
        assert!(
            err.to_string().contains("duplicate key \"k\" at line 2"),
            "{err}"
        );
        assert!(parse_str(r#"{"a":1} x"#).is_err());
        assert_eq!(
            parse_str(r#"{"a":[1,"x",null,1.5,{"a":2}],"b":{"a":true}}"#).unwrap(),
            json!({"a": [1, "x", null, 1.5, {"a": 2}], "b": {"a": true}})
        );
        #[derive(serde::Deserialize, Debug)]
        struct T {
            #[allow(dead_code)]
            a: u8,
        }
        assert!(
            from_str::<T>(r#"{"a":1,"a":2}"#)
                .unwrap_err()
                .to_string()
                .contains("duplicate key \"a\"")
        );
        let err = from_str::<T>("{\n\"a\": \"x\"}").unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
    }
}
