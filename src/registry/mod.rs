//! The worker registry: registry records (WCP §6) and the enrolled directory.

/// PyHall's control-id filter `^ctrl\.[a-z0-9][a-z0-9._\-]*$` (Python `re.match`, so one trailing
/// newline is tolerated there; the Hall does not tolerate it).
pub fn is_pyhall_control_id(id: &str) -> bool {
    let Some(rest) = id.strip_prefix("ctrl.") else {
        return false;
    };
    let mut bytes = rest.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z' | b'0'..=b'9'))
        && bytes.all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-'))
}
