//! The demo's output: one human line per step, or one JSON object per step with `--json`.
//!
//! Owns the output format only; it must not decide whether a step succeeded (a failed write is
//! the `output` step's failure, nothing else).

use serde_json::{Value, json};

use super::super::Out;
use super::{Step, failed};

/// Prints steps as they happen: human lines, or one JSON object per step.
pub(super) struct Printer<'a> {
    pub(super) out: &'a mut Out,
}

impl Printer<'_> {
    pub(super) fn step(&mut self, step: &str, human: &str, data: Value) -> Step<()> {
        let result = if self.out.json {
            let mut obj = serde_json::Map::new();
            obj.insert("step".into(), json!(step));
            obj.insert("ok".into(), json!(true));
            if let Value::Object(m) = data {
                obj.extend(m);
            }
            self.out.json_line(&Value::Object(obj))
        } else {
            self.out.line(human)
        };
        result.map_err(|e| failed("output", e.message))
    }

    /// A human-only line (headings); nothing in JSON mode.
    pub(super) fn text(&mut self, human: &str) -> Step<()> {
        if self.out.json {
            return Ok(());
        }
        self.out
            .line(human)
            .map_err(|e| failed("output", e.message))
    }
}
