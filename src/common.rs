//! Small helpers every layer may use, and which depend on no other module of the crate:
//! lowercase hex, and UTC time in the forms the Hall writes.
//!
//! Calendar arithmetic is jiff's (a maintained date-time crate) rather than our own; no time
//! zone database is read: every time the Hall writes is UTC. Times before 1970 are clamped to
//! the epoch (a clock that far back is wrong, and nothing the Hall records predates it).

use std::time::{SystemTime, UNIX_EPOCH};

use jiff::Timestamp;

/// Lowercase hex encoding.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// `t` as a jiff timestamp, clamped to jiff's range (years 1970 … 9999 here).
pub fn timestamp(t: SystemTime) -> Timestamp {
    let t = t.max(UNIX_EPOCH);
    Timestamp::try_from(t).unwrap_or(Timestamp::MAX)
}

/// `2026-11-24T19:36:01.274Z`: RFC 3339 in UTC with milliseconds (the receipts' form).
pub fn rfc3339_millis(t: SystemTime) -> String {
    timestamp(t).strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// [`rfc3339_millis`] of milliseconds since the epoch.
pub fn rfc3339_ms(ms: u64) -> String {
    rfc3339_millis(UNIX_EPOCH + std::time::Duration::from_millis(ms))
}

/// `datetime.now(timezone.utc).isoformat()`: `2026-11-24T19:36:01.274627+00:00`, the fraction
/// omitted when the microseconds are zero (PyHall's decision timestamps).
pub fn python_isoformat(t: SystemTime) -> String {
    let ts = timestamp(t);
    let micros = ts.subsec_microsecond();
    let mut out = ts.strftime("%Y-%m-%dT%H:%M:%S").to_string();
    if micros != 0 {
        out.push_str(&format!(".{micros:06}"));
    }
    out.push_str("+00:00");
    out
}

/// Seconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ` (attestation's form); outside jiff's
/// range, the nearest end of it.
pub fn utc_seconds(seconds: i64) -> String {
    let ts = Timestamp::from_second(seconds).unwrap_or(if seconds < 0 {
        Timestamp::MIN
    } else {
        Timestamp::MAX
    });
    ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// `YYYY-MM-DD HH:MM:SS` (UTC, a valid calendar date and time) → seconds since the epoch.
pub fn utc_civil_seconds(y: i16, mo: i8, d: i8, h: i8, mi: i8, s: i8) -> Option<i64> {
    let dt = jiff::civil::DateTime::new(y, mo, d, h, mi, s, 0).ok()?;
    jiff::tz::TimeZone::UTC
        .to_timestamp(dt)
        .ok()
        .map(|t| t.as_second())
}

/// Installs the process's TLS provider (rustls with ring) once; every HTTP client of the Hall
/// (the registry service, OCI registries, the OTLP exporter) builds on it. Idempotent.
pub fn install_tls_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Err: another provider was installed first; that one is used.
        // ring, not aws-lc-rs: no C/cmake build of aws-lc in every build of the Hall. rustls
        // 0.23.48 deprecates ring's provider for lacking post-quantum key exchange; what the
        // Hall fetches is public or signed and content-addressed (docs/registry-service.md,
        // docs/oci.md).
        #[allow(deprecated)]
        let provider = rustls::crypto::ring::default_provider();
        let _ = provider.install_default();
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn hex_is_lowercase_and_complete() {
        assert_eq!(hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
        assert_eq!(hex(&[]), "");
    }

    #[test]
    fn times_are_written_as_the_hall_always_wrote_them() {
        let t = UNIX_EPOCH + Duration::from_micros(1_795_548_961_274_627);
        assert_eq!(rfc3339_millis(t), "2026-11-24T19:36:01.274Z");
        assert_eq!(rfc3339_ms(1_795_548_961_274), "2026-11-24T19:36:01.274Z");
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(python_isoformat(t), "2026-11-24T19:36:01.274627+00:00");
        let whole = UNIX_EPOCH + Duration::from_secs(1_795_548_961);
        assert_eq!(python_isoformat(whole), "2026-11-24T19:36:01+00:00");
        // Before the epoch: clamped.
        let before = UNIX_EPOCH - Duration::from_secs(10);
        assert_eq!(rfc3339_millis(before), "1970-01-01T00:00:00.000Z");
        // Leap day and the end of a year.
        assert_eq!(utc_seconds(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc_seconds(1_798_761_599), "2026-12-31T23:59:59Z");
        assert_eq!(utc_civil_seconds(2000, 2, 29, 0, 0, 0), Some(951_782_400));
        assert_eq!(utc_civil_seconds(2001, 2, 29, 0, 0, 0), None);
        assert_eq!(
            utc_civil_seconds(2026, 12, 31, 23, 59, 59),
            Some(1_798_761_599)
        );
    }
}
