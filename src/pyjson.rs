//! Python-compatible JSON text: byte-for-byte what CPython's `json.dumps(obj, sort_keys=True)` writes.
//!
//! PyHall hashes and signs Python `json.dumps` output (the RouteDecision `artifact_hash`, the awp.v1
//! signing payload), so agreeing with it means reproducing CPython's encoder exactly:
//! `ensure_ascii` escaping (lowercase `\uXXXX`, surrogate pairs above the BMP, DEL escaped), keys
//! sorted by code point, CPython's float `repr` (shortest round-trip digits, exponent form below
//! 1e-4 and from 1e16 on), and either the default (`", "`, `": "`) or compact (`","`, `":"`)
//! separators. Pure: no I/O, no allocation beyond the output string.

use std::fmt::Write as _;

use serde_json::Value;

/// Item and key separators, as Python's `separators=` argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Separators {
    /// Python's default `(", ", ": ")`.
    Default,
    /// `(",", ":")`.
    Compact,
}

impl Separators {
    fn item(self) -> &'static str {
        match self {
            Separators::Default => ", ",
            Separators::Compact => ",",
        }
    }
    fn key(self) -> &'static str {
        match self {
            Separators::Default => ": ",
            Separators::Compact => ":",
        }
    }
}

/// `json.dumps(value, sort_keys=True, ensure_ascii=True, separators=...)`.
pub fn dumps_sorted(value: &Value, separators: Separators) -> String {
    let mut out = String::with_capacity(128);
    write_value(&mut out, value, separators);
    out
}

/// Appends `value` as `json.dumps(value, sort_keys=True)` would write it.
pub fn write_value(out: &mut String, value: &Value, sep: Separators) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                let _ = write!(out, "{i}");
            } else if let Some(u) = n.as_u64() {
                let _ = write!(out, "{u}");
            } else if let Some(f) = n.as_f64() {
                out.push_str(&float_repr(f));
            }
        }
        Value::String(s) => write_str(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(sep.item());
                }
                write_value(out, item, sep);
            }
            out.push(']');
        }
        Value::Object(map) => {
            // Rust's `str` ordering is byte order of UTF-8, which equals code point order:
            // the same order as Python's `sorted()` on `str` keys.
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push_str(sep.item());
                }
                write_str(out, k);
                out.push_str(sep.key());
                write_value(out, v, sep);
            }
            out.push('}');
        }
    }
}

/// Writes a JSON string literal with Python's `ensure_ascii=True` escaping.
pub fn write_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            _ => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
        }
    }
    out.push('"');
}

/// CPython's `repr(float)`: shortest round-trip digits; exponent form when the decimal exponent
/// is below -4 or at least 16, with a signed, at-least-two-digit exponent; `.0` on integral values.
pub fn float_repr(f: f64) -> String {
    if f.is_nan() {
        return "NaN".to_owned();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Infinity" } else { "-Infinity" }.to_owned();
    }
    // Rust's `{:e}` prints the shortest digits that round-trip, e.g. "-2.5e-7".
    let sci = format!("{:e}", f.abs());
    let (mantissa, exponent) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    // Position of the decimal point relative to the start of `digits`.
    let decpt = exponent + 1;
    let mut out = String::new();
    if f.is_sign_negative() {
        out.push('-');
    }
    if !(-4 < decpt && decpt <= 16) {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let sign = if exponent < 0 { '-' } else { '+' };
        let _ = write!(out, "e{sign}{:02}", exponent.abs());
    } else if decpt <= 0 {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', (-decpt) as usize));
        out.push_str(&digits);
    } else {
        let decpt = decpt as usize;
        if decpt >= digits.len() {
            out.push_str(&digits);
            out.extend(std::iter::repeat_n('0', decpt - digits.len()));
            out.push_str(".0");
        } else {
            out.push_str(&digits[..decpt]);
            out.push('.');
            out.push_str(&digits[decpt..]);
        }
    }
    out
}

/// CPython's `repr(str)`, used where PyHall embeds a value in a message (`'OK'`).
pub fn str_repr(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if !py_isprintable(c) => {
                let n = c as u32;
                let _ = match n {
                    0..=0xff => write!(out, "\\x{n:02x}"),
                    0x100..=0xffff => write!(out, "\\u{n:04x}"),
                    _ => write!(out, "\\U{n:08x}"),
                };
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// Python's `str.isprintable()` for one character: false for categories Cc, Cf, Co, Zs (except
/// the space), Zl, Zp and the noncharacters. Python also escapes *unassigned* code points (Cn),
/// which would need the Unicode tables; those are rendered raw here, the one known difference.
pub fn py_isprintable(c: char) -> bool {
    let n = c as u32;
    let format_char = matches!(
        n,
        0xad | 0x600..=0x605 | 0x61c | 0x6dd | 0x70f | 0x8e2 | 0x180e | 0x200b..=0x200f
            | 0x202a..=0x202e | 0x2060..=0x2064 | 0x2066..=0x206f | 0xfeff | 0xfff9..=0xfffb
            | 0x110bd | 0x110cd | 0x13430..=0x1343f | 0x1bca0..=0x1bca3 | 0x1d173..=0x1d17a
            | 0xe0001 | 0xe0020..=0xe007f
    );
    let private_use = matches!(n, 0xe000..=0xf8ff | 0xf0000..=0xffffd | 0x100000..=0x10fffd);
    let noncharacter = matches!(n, 0xfdd0..=0xfdef) || (n & 0xfffe) == 0xfffe;
    !(c.is_control()
        || (c.is_whitespace() && c != ' ')
        || format_char
        || private_use
        || noncharacter)
}

/// Python's `str.isspace()` for one character: Unicode White_Space plus the four ASCII
/// separators U+001C..U+001F, which Python counts as whitespace and Rust does not.
pub fn py_isspace(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// `not s.strip()` in Python: empty or only Python whitespace.
pub fn py_is_blank(s: &str) -> bool {
    s.chars().all(py_isspace)
}

/// Python truthiness of a JSON value: null, false, 0, 0.0, "", [] and {} are falsy.
pub fn py_truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn float_repr_matches_cpython() {
        let cases = [
            (1.0, "1.0"),
            (2.5, "2.5"),
            (0.1, "0.1"),
            (-0.0, "-0.0"),
            (0.0, "0.0"),
            (1e16, "1e+16"),
            (1e15, "1000000000000000.0"),
            (1.5e16, "1.5e+16"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1.2345e-7, "1.2345e-07"),
            (123.456, "123.456"),
            (1e100, "1e+100"),
            (-3.25, "-3.25"),
            (5e-324, "5e-324"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
            (9007199254740993.0, "9007199254740992.0"),
        ];
        for (f, want) in cases {
            assert_eq!(float_repr(f), want, "repr({f:?})");
        }
    }

    #[test]
    fn dumps_matches_cpython_default_separators() {
        // json.dumps({"b":[1,2.5,True,None],"a":"é"}, sort_keys=True)
        let v = json!({"b": [1, 2.5, true, null], "a": "é", "c": {"z": 1, "y": {}} , "d": []});
        assert_eq!(
            dumps_sorted(&v, Separators::Default),
            r#"{"a": "\u00e9", "b": [1, 2.5, true, null], "c": {"y": {}, "z": 1}, "d": []}"#
        );
        assert_eq!(
            dumps_sorted(&v, Separators::Compact),
            r#"{"a":"\u00e9","b":[1,2.5,true,null],"c":{"y":{},"z":1},"d":[]}"#
        );
    }

    #[test]
    fn escapes_like_ensure_ascii() {
        let v = json!("q\"b\\n\n\t\r\u{8}\u{c}\u{1}\u{7f}/☃😀");
        assert_eq!(
            dumps_sorted(&v, Separators::Default),
            r#""q\"b\\n\n\t\r\b\f\u0001\u007f/\u2603\ud83d\ude00""#
        );
    }

    #[test]
    fn str_repr_matches_cpython() {
        assert_eq!(str_repr("OK"), "'OK'");
        assert_eq!(str_repr("it's"), "\"it's\"");
        assert_eq!(str_repr("a'\"b"), "'a\\'\"b'");
        assert_eq!(str_repr("x\ny\u{1}"), "'x\\ny\\x01'");
        // Values checked against CPython 3.11's repr().
        assert_eq!(str_repr("ALLOW\u{a0}"), "'ALLOW\\xa0'");
        assert_eq!(
            str_repr("a\u{2028}\u{feff}\u{ad}"),
            "'a\\u2028\\ufeff\\xad'"
        );
        assert_eq!(str_repr("\u{10ffff}é☃"), "'\\U0010ffffé☃'");
    }

    #[test]
    fn python_whitespace_and_truthiness() {
        assert!(py_is_blank(""));
        assert!(py_is_blank(" \t\n\u{1c}\u{85}\u{3000}"));
        assert!(!py_is_blank(" a "));
        assert!(py_truthy(&json!("false")));
        assert!(!py_truthy(&json!(0.0)));
        assert!(!py_truthy(&json!({})));
        assert!(py_truthy(&json!([0])));
    }
}
