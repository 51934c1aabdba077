//! The impure inputs of a decision: the wall clock and random ids.
//!
//! Kept apart from the router so the router stays a pure function: callers mint a
//! [`DecisionContext`] here and pass it in.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::router::DecisionContext;

/// PyHall's default task id.
pub const DEFAULT_TASK_ID: &str = "task_default";

/// A fresh context: UUIDv4 decision id and the current UTC time in PyHall's format.
pub fn mint_context(task_id: &str) -> DecisionContext {
    DecisionContext {
        decision_id: uuid::Uuid::new_v4().to_string(),
        timestamp: python_isoformat(SystemTime::now()),
        task_id: task_id.to_owned(),
    }
}

/// `datetime.now(timezone.utc).isoformat()`: `2026-11-24T19:36:01.274627+00:00`, the fraction
/// omitted when the microseconds are zero. Times before 1970 are clamped to the epoch.
pub fn python_isoformat(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let micros = d.subsec_micros();
    let (y, m, day) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    let (hh, mm, ss) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    let mut out = format!("{y:04}-{m:02}-{day:02}T{hh:02}:{mm:02}:{ss:02}");
    if micros != 0 {
        out.push_str(&format!(".{micros:06}"));
    }
    out.push_str("+00:00");
    out
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day) (H. Hinnant's algorithm).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn formats_like_python_isoformat() {
        let t = UNIX_EPOCH + Duration::from_micros(1_795_548_961_274_627);
        assert_eq!(python_isoformat(t), "2026-11-24T19:36:01.274627+00:00");
        let t = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29 (leap day)
        assert_eq!(python_isoformat(t), "2000-02-29T00:00:00+00:00");
        assert_eq!(python_isoformat(UNIX_EPOCH), "1970-01-01T00:00:00+00:00");
    }

    #[test]
    fn minted_ids_are_fresh_uuids() {
        let a = mint_context(DEFAULT_TASK_ID);
        let b = mint_context(DEFAULT_TASK_ID);
        assert_ne!(a.decision_id, b.decision_id);
        assert_eq!(
            uuid::Uuid::parse_str(&a.decision_id).map(|u| u.get_version_num()),
            Ok(4)
        );
    }
}
