//! Rate limits: the Cloudflare rate-limit bindings (per client IP, per write key) and the exact
//! per-project event quota kept by the `ProjectQuota` Durable Object.
//!
//! The bindings are cheap and approximate (counted per Cloudflare location) and only answer
//! yes or no; the quota is exact (one object per project sees every batch) and counts events,
//! not requests. The window arithmetic lives here, with the time passed in.

use serde::{Deserialize, Serialize};

/// Rate-limit binding keyed by client IP (wrangler.toml `[[ratelimits]]`).
pub const IP_LIMITER: &str = "RL_IP";
/// Rate-limit binding keyed by write key.
pub const KEY_LIMITER: &str = "RL_KEY";
/// The period of both bindings, in seconds; must equal their `simple.period` in wrangler.toml.
/// The binding does not say when its window ends, so a refused sender waits a whole period.
pub const BINDING_PERIOD_SECS: u32 = 60;
/// Length of a quota window, in milliseconds.
pub const QUOTA_WINDOW_MS: i64 = 60_000;
/// Smallest quota honoured: one full batch must always fit in a window, or a sender whose
/// batch is larger than the quota would retry it for ever.
pub const MIN_QUOTA: u64 = protocol::limits::MAX_EVENTS_PER_BATCH as u64;

/// Which limit refused a request (the `reason` of its log line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// The per-IP binding.
    Ip,
    /// The per-write-key binding.
    Key,
    /// The project's events-per-minute quota.
    Quota,
}

impl Limit {
    /// The reason logged for a request this limit refused.
    pub fn reason(self) -> &'static str {
        match self {
            Limit::Ip => "rate_limited_ip",
            Limit::Key => "rate_limited_key",
            Limit::Quota => "quota_exceeded",
        }
    }
}

/// The quota of a project: the key lookup's value, else the worker's default, never below
/// [`MIN_QUOTA`]. `None` means no quota is enforced.
pub fn effective_quota(from_key: Option<u64>, default: Option<u64>) -> Option<u64> {
    from_key.or(default).map(|q| q.max(MIN_QUOTA))
}

/// A project's current window: which minute and how many events it took so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    /// Start of the window (ms since the epoch, a multiple of [`QUOTA_WINDOW_MS`]).
    pub start_ms: i64,
    /// Events taken in the window.
    pub used: u64,
}

/// The quota object's answer to "may this project send `events` more events now?".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaAnswer {
    /// True when the events fit and were counted.
    pub allowed: bool,
    /// Seconds until the window ends (the `Retry-After` of a refusal), at least 1.
    pub retry_after_secs: u32,
}

/// Counts `events` against `limit` in the window of `now_ms`: they are taken in full or not at
/// all (a refused batch is retried whole, so taking part of it would count events twice).
pub fn take(window: &mut Window, now_ms: i64, events: u64, limit: u64) -> QuotaAnswer {
    let start = now_ms.div_euclid(QUOTA_WINDOW_MS).saturating_mul(QUOTA_WINDOW_MS);
    if window.start_ms != start {
        *window = Window { start_ms: start, used: 0 };
    }
    let left_ms = start.saturating_add(QUOTA_WINDOW_MS).saturating_sub(now_ms);
    let retry_after_secs = u32::try_from(left_ms.saturating_add(999) / 1000).unwrap_or(u32::MAX).max(1);
    let allowed = window.used.saturating_add(events) <= limit;
    if allowed {
        window.used += events;
    }
    QuotaAnswer { allowed, retry_after_secs }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(window: &mut Window, now_ms: i64, events: u64, expected: (bool, u32, u64)) {
        let got = take(window, now_ms, events, 1000);
        assert_eq!((got.allowed, got.retry_after_secs, window.used), expected, "at {now_ms} take {events}");
    }

    #[test]
    fn fixed_minute_windows() {
        let mut w = Window::default();
        let t = 1_764_583_200_000; // a whole minute
        check(&mut w, t, 600, (true, 60, 600));
        check(&mut w, t + 1, 400, (true, 60, 1000));
        check(&mut w, t + 30_500, 1, (false, 30, 1000));
        check(&mut w, t + 59_999, 0, (true, 1, 1000));
        // A new minute starts from zero.
        check(&mut w, t + 60_000, 1000, (true, 60, 1000));
        check(&mut w, t + 60_000, 1, (false, 60, 1000));
        // A refused batch is not counted: a smaller one still fits.
        let mut w = Window::default();
        check(&mut w, t, 900, (true, 60, 900));
        check(&mut w, t, 200, (false, 60, 900));
        check(&mut w, t, 100, (true, 60, 1000));
        // Time going backwards (another object's clock) starts a fresh window, never panics.
        check(&mut w, t - 120_000, 5, (true, 60, 5));
        check(&mut w, i64::MIN, 5, (true, 60, 5));
        check(&mut w, i64::MAX, u64::MAX, (false, 1, 0));
    }

    #[test]
    fn quotas() {
        let cases = [
            (None, None, None),
            (Some(5000), None, Some(5000)),
            (Some(5000), Some(100_000), Some(5000)),
            (None, Some(100_000), Some(100_000)),
            (Some(10), None, Some(MIN_QUOTA)),
            (Some(0), Some(100_000), Some(MIN_QUOTA)),
        ];
        for (key, default, expected) in cases {
            assert_eq!(effective_quota(key, default), expected, "{key:?} {default:?}");
        }
        assert_eq!(Limit::Quota.reason(), "quota_exceeded");
    }
}
