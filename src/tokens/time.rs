//! The stored time form, shared by both store backends and the registry:
//! whole milliseconds since the Unix epoch in a signed 64-bit integer.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the epoch (0 before it, saturating far in the future).
pub fn to_millis(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The inverse of [`to_millis`]; negative values read as the epoch.
pub fn from_millis(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// `t` truncated to whole milliseconds, the stored precision, so a record
/// kept in memory is exactly the one read back from the store.
pub fn truncate_millis(t: SystemTime) -> SystemTime {
    from_millis(to_millis(t))
}

/// Now, at the stored precision.
pub fn now_millis() -> SystemTime {
    truncate_millis(SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_at_millisecond_precision() {
        let t = UNIX_EPOCH + Duration::from_micros(1_234_567_891);
        assert_eq!(to_millis(t), 1_234_567);
        assert_eq!(from_millis(to_millis(t)), truncate_millis(t));
        assert_eq!(from_millis(-5), UNIX_EPOCH);
        assert_eq!(to_millis(UNIX_EPOCH - Duration::from_secs(1)), 0);
    }
}
