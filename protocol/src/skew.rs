//! Clock-skew correction: `timestamp + (received_at - sent_at)` (as PostHog and Segment do).
//!
//! The sender's clock may be wrong by hours; the difference between when it says it sent the
//! batch and when we received it measures that error (plus network time, which is small).

use chrono::{DateTime, Duration, Utc};

use crate::limits::MAX_FUTURE_SKEW_SECS;

/// The event time on the server's clock.
///
/// Without `sent_at` the client timestamp is used as is. A result more than
/// [`MAX_FUTURE_SKEW_SECS`] after `received_at` (a device clock that is simply wrong and
/// a sender that gave no `sent_at`) becomes `received_at`: an event cannot come from the future.
pub fn corrected_timestamp(
    timestamp: DateTime<Utc>,
    sent_at: Option<DateTime<Utc>>,
    received_at: DateTime<Utc>,
) -> DateTime<Utc> {
    let corrected = match sent_at {
        Some(sent) => timestamp.checked_add_signed(received_at - sent).unwrap_or(received_at),
        None => timestamp,
    };
    if corrected > received_at + Duration::seconds(MAX_FUTURE_SKEW_SECS) {
        received_at
    } else {
        corrected
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn check(ts: &str, sent: Option<&str>, recv: &str, expected: &str) {
        assert_eq!(corrected_timestamp(t(ts), sent.map(t), t(recv)), t(expected), "{ts} {sent:?} {recv}");
    }

    #[test]
    fn table() {
        // Client clock 1 h behind: shifted forward by 1 h.
        check("2026-12-01T09:00:00Z", Some("2026-12-01T09:00:05Z"), "2026-12-01T10:00:05Z", "2026-12-01T10:00:00Z");
        // Client clock 2 h ahead: shifted back.
        check("2026-12-01T12:00:00Z", Some("2026-12-01T12:00:10Z"), "2026-12-01T10:00:10Z", "2026-12-01T10:00:00Z");
        // Correct clock, event queued offline for a day: stays a day old.
        check("2026-11-30T10:00:00Z", Some("2026-12-01T10:00:00Z"), "2026-12-01T10:00:00Z", "2026-11-30T10:00:00Z");
        // No sent_at: unchanged...
        check("2026-12-01T09:00:00Z", None, "2026-12-01T10:00:00Z", "2026-12-01T09:00:00Z");
        // ...unless that lands in the future: clamped to received_at.
        check("2027-01-01T00:00:00Z", None, "2026-12-01T10:00:00Z", "2026-12-01T10:00:00Z");
        // Within the tolerance: kept.
        check("2026-12-01T10:00:30Z", None, "2026-12-01T10:00:00Z", "2026-12-01T10:00:30Z");
    }

    #[test]
    fn extreme_values_do_not_panic() {
        let max = DateTime::<Utc>::MAX_UTC;
        let min = DateTime::<Utc>::MIN_UTC;
        let now = t("2026-12-01T10:00:00Z");
        for (a, b) in [(max, Some(min)), (min, Some(max)), (max, None), (min, Some(now))] {
            let _ = corrected_timestamp(a, b, now);
        }
    }
}
