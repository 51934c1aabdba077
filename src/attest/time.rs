//! UTC timestamps in the one form attestation uses: `YYYY-MM-DDTHH:MM:SSZ`.
//!
//! PyHall writes `built_at_utc` this way (`datetime.now(timezone.utc).replace(microsecond=0)
//! .isoformat()` with `+00:00` → `Z`), and the awp.v2 predicate and the trust policy use the same
//! form, so validity windows compare as plain integers. Parsing is strict (no offsets, no
//! fractions, no lowercase `t`/`z`): a policy that says `"2027-01-01"` is an error, not midnight
//! in some time zone. Pure: the current time is passed in by callers.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch, UTC, shown as `YYYY-MM-DDTHH:MM:SSZ`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UtcTime(pub i64);

/// A timestamp that is not `YYYY-MM-DDTHH:MM:SSZ`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not a UTC timestamp; write YYYY-MM-DDTHH:MM:SSZ, e.g. 2027-01-31T00:00:00Z")]
pub struct TimeError {
    pub value: String,
}

impl UtcTime {
    /// The current time (clamped to the epoch if the clock is before it).
    pub fn now() -> Self {
        Self::from_system(SystemTime::now())
    }

    pub fn from_system(t: SystemTime) -> Self {
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => UtcTime(i64::try_from(d.as_secs()).unwrap_or(i64::MAX)),
            Err(_) => UtcTime(0),
        }
    }

    /// Parses `YYYY-MM-DDTHH:MM:SSZ` exactly.
    pub fn parse(text: &str) -> Result<Self, TimeError> {
        let err = || TimeError {
            value: text.chars().take(64).collect(),
        };
        let b = text.as_bytes();
        if b.len() != 20
            || b[4] != b'-'
            || b[7] != b'-'
            || b[10] != b'T'
            || b[13] != b':'
            || b[16] != b':'
            || b[19] != b'Z'
        {
            return Err(err());
        }
        let num = |range: std::ops::Range<usize>| -> Result<i64, TimeError> {
            let digits = &b[range];
            if !digits.iter().all(u8::is_ascii_digit) {
                return Err(err());
            }
            Ok(digits
                .iter()
                .fold(0i64, |acc, d| acc * 10 + i64::from(d - b'0')))
        };
        let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
        let (h, mi, s) = (num(11..13)?, num(14..16)?, num(17..19)?);
        // The calendar (month lengths, leap years) is jiff's.
        let small = |v: i64| i8::try_from(v).map_err(|_| err());
        let year = i16::try_from(y).map_err(|_| err())?;
        crate::common::utc_civil_seconds(
            year,
            small(mo)?,
            small(d)?,
            small(h)?,
            small(mi)?,
            small(s)?,
        )
        .map(UtcTime)
        .ok_or_else(err)
    }
}

impl fmt::Display for UtcTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&crate::common::utc_seconds(self.0))
    }
}

impl serde::Serialize for UtcTime {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for UtcTime {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        UtcTime::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_matches_known_instants() {
        for (text, secs) in [
            ("1970-01-01T00:00:00Z", 0),
            ("2000-02-29T00:00:00Z", 951_782_400),
            ("2026-01-02T03:04:05Z", 1_767_323_045),
        ] {
            let t = UtcTime::parse(text).unwrap();
            assert_eq!(t.0, secs, "{text}");
            assert_eq!(t.to_string(), text);
        }
        let t = UtcTime::from_system(UNIX_EPOCH + std::time::Duration::from_secs(1_795_548_961));
        assert_eq!(t.to_string(), "2026-11-24T19:36:01Z");
    }

    #[test]
    fn refuses_every_other_form() {
        for bad in [
            "2026-01-02",
            "2026-01-02T03:04:05",
            "2026-01-02T03:04:05+00:00",
            "2026-01-02T03:04:05.1Z",
            "2026-01-02t03:04:05z",
            "2026-02-30T00:00:00Z",
            "2025-02-29T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-01-02T24:00:00Z",
            "２026-01-02T03:04:05Z",
            "",
        ] {
            assert!(UtcTime::parse(bad).is_err(), "{bad}");
        }
    }
}
