//! The impure inputs of a decision: the wall clock and random ids.
//!
//! Kept apart from the router so the router stays a pure function: callers mint a
//! [`DecisionContext`] here and pass it in.

use std::time::SystemTime;

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

pub use crate::common::python_isoformat;

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

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
