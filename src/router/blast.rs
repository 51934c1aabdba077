//! PyHall's 0–100 blast heuristic (pyhall-spec §1.4), kept for decision compatibility.
//!
//! It scores the *request* from its labels and four payload flags; it is unrelated to WCP §7's
//! five-dimension 0–5 worker score (that one is `policy::blast::WcpBlast`). Flags use Python
//! truthiness: `"false"` is truthy, `0`, `""`, `[]`, `{}` and `null` are not.

use crate::pyjson::py_truthy;
use crate::wcp::{DataLabel, QosClass, RouteInput};

/// The computed score, raised (never lowered) by the caller's `blast_score`, capped at 100.
pub fn score(input: &RouteInput) -> i64 {
    let flag = |key: &str| input.request.get(key).is_some_and(py_truthy);
    let mut s: i64 = 10;
    s += match input.data_label {
        DataLabel::Public => 0,
        DataLabel::Internal => 20,
        DataLabel::Restricted => 40,
    };
    if input.env.is_production() {
        s += 15;
    }
    if input.qos_class == QosClass::P0 {
        s += 10;
    }
    if flag("egress") || flag("external_call") {
        s += 15;
    }
    if flag("writes") || flag("mutates_state") {
        s += 15;
    }
    let computed = s.min(100);
    input
        .blast_score
        .map_or(computed, |caller| computed.max(caller))
}
