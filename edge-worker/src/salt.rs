//! The daily visitor salt: UTC days, which stored salts have expired, and an isolate cache.
//!
//! The salt itself is random bytes made and kept by the `SaltStore` Durable Object (see
//! `durable.rs`): one salt per UTC day, shared by every isolate, never derived from a secret or
//! the date, and deleted once it is more than a day old, so that a visitor hash of one day cannot
//! be linked to another day's, nor reversed by hashing every IPv4 address with a leaked salt.
//! Everything here takes the time as an argument so it tests natively.

use chrono::NaiveDate;

/// Milliseconds in a UTC day.
pub const DAY_MS: i64 = 86_400_000;
/// Random bytes in a salt (hex-encoded on the wire between the worker and the object).
pub const SALT_BYTES: usize = 32;
/// Header that sets the day (`2026-12-05`) of a request, honoured only in test mode.
pub const TEST_DAY_HEADER: &str = "x-nexus-test-day";

/// A UTC day, counted from 1970-01-01.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Day(pub i64);

impl Day {
    /// The day of a JS `Date.now()` value (day 0 for NaN, saturating far out of range).
    pub fn from_millis(ms: f64) -> Day {
        // f64 -> i64 saturates and maps NaN to 0.
        Day((ms as i64).div_euclid(DAY_MS))
    }

    /// Parses `YYYY-MM-DD`.
    pub fn parse(s: &str) -> Option<Day> {
        let mut parts = s.trim().splitn(3, '-');
        let mut next = || parts.next().and_then(|p| p.parse::<u32>().ok());
        let (y, m, d) = (next()?, next()?, next()?);
        let date = NaiveDate::from_ymd_opt(i32::try_from(y).ok()?, m, d)?;
        let epoch = NaiveDate::from_ymd_opt(1970, 1, 1)?;
        Some(Day((date - epoch).num_days()))
    }

    /// Milliseconds at the start (00:00 UTC) of the next day: when this day's salt stops being used.
    pub fn next_midnight_ms(self) -> i64 {
        self.0.saturating_add(1).saturating_mul(DAY_MS)
    }
}

/// True when the salt of `stored` must be gone on `today`. Today's and yesterday's salts are
/// kept (a request that started before midnight may still finish with yesterday's); a salt is
/// deleted on the second day after its own, so it never lives more than 48 hours.
pub fn expired(stored: Day, today: Day) -> bool {
    stored.0 < today.0.saturating_sub(1)
}

/// True when a `NEXUS_TEST_MODE` value turns test mode on (`1`, `true`, `yes`).
pub fn test_mode(var: Option<&str>) -> bool {
    matches!(var.map(|v| v.trim().to_ascii_lowercase()).as_deref(), Some("1" | "true" | "yes"))
}

/// The day a request belongs to: the clock's, or in test mode the [`TEST_DAY_HEADER`]'s, so
/// tests can move across days. Outside test mode the header is ignored: a sender must not be
/// able to pick its salt.
pub fn request_day(now_ms: f64, test_mode: bool, header: Option<&str>) -> Day {
    let clock = Day::from_millis(now_ms);
    if !test_mode {
        return clock;
    }
    header.and_then(Day::parse).unwrap_or(clock)
}

/// Lower-case hex of `bytes`.
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

/// True when `s` looks like a salt the object made (hex of [`SALT_BYTES`] bytes): anything else
/// is refused rather than hashed with.
pub fn valid_salt(s: &str) -> bool {
    s.len() == SALT_BYTES * 2 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The current day's salt, per isolate: one object round trip per isolate and day.
#[derive(Debug, Default)]
pub struct SaltCache {
    entry: Option<(Day, String)>,
}

impl SaltCache {
    /// The cached salt of `day`, if that is the day cached.
    pub fn get(&self, day: Day) -> Option<&str> {
        self.entry.as_ref().filter(|(d, _)| *d == day).map(|(_, s)| s.as_str())
    }

    /// Replaces the cached salt (only one day is ever held: the old salt leaves memory too).
    pub fn set(&mut self, day: Day, salt: String) {
        self.entry = Some((day, salt));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn days() {
        let cases = [
            (0.0, 0),
            (DAY_MS as f64 - 1.0, 0),
            (DAY_MS as f64, 1),
            (-1.0, -1),
            (f64::NAN, 0),
            (1_764_583_200_000.0, 20_423), // 2025-12-01T10:00:00Z
        ];
        for (ms, day) in cases {
            assert_eq!(Day::from_millis(ms), Day(day), "{ms}");
        }
        assert_eq!(Day::from_millis(f64::INFINITY), Day(i64::MAX.div_euclid(DAY_MS)));
        assert_eq!(Day(20_423).next_midnight_ms(), 20_424 * DAY_MS);
    }

    #[test]
    fn parsing() {
        let cases = [
            ("1970-01-01", Some(0)),
            ("2025-12-01", Some(20_423)),
            (" 2025-12-02 ", Some(20_424)),
            ("2024-02-29", Some(19_782)),
            ("2025-02-29", None),
            ("2025-13-01", None),
            ("2025-12", None),
            ("tomorrow", None),
            ("-1-01-01", None),
            ("", None),
        ];
        for (s, day) in cases {
            assert_eq!(Day::parse(s), day.map(Day), "{s:?}");
        }
    }

    #[test]
    fn expiry_keeps_today_and_yesterday() {
        let today = Day(100);
        let cases = [(Day(101), false), (Day(100), false), (Day(99), false), (Day(98), true), (Day(0), true)];
        for (stored, gone) in cases {
            assert_eq!(expired(stored, today), gone, "{stored:?}");
        }
        assert!(!expired(Day(i64::MIN), Day(i64::MIN)));
    }

    #[test]
    fn test_day_only_in_test_mode() {
        let now = 1_764_583_200_000.0;
        assert_eq!(request_day(now, false, Some("2030-01-01")), Day(20_423));
        assert_eq!(request_day(now, true, Some("2025-12-03")), Day(20_425));
        assert_eq!(request_day(now, true, Some("garbage")), Day(20_423));
        assert_eq!(request_day(now, true, None), Day(20_423));
        let modes = [(None, false), (Some(""), false), (Some("0"), false), (Some("1"), true), (Some(" TRUE "), true)];
        for (var, on) in modes {
            assert_eq!(test_mode(var), on, "{var:?}");
        }
    }

    #[test]
    fn hex_and_validation() {
        assert_eq!(to_hex(&[0x00, 0x0f, 0xab, 0xff]), "000fabff");
        let salt = to_hex(&[7; SALT_BYTES]);
        assert!(valid_salt(&salt));
        assert!(!valid_salt(&salt[1..]));
        assert!(!valid_salt(&salt.replace('0', "g")));
        assert!(!valid_salt(""));
    }

    #[test]
    fn cache_holds_one_day() {
        let mut c = SaltCache::default();
        assert_eq!(c.get(Day(1)), None);
        c.set(Day(1), "a".into());
        assert_eq!(c.get(Day(1)), Some("a"));
        assert_eq!(c.get(Day(2)), None);
        c.set(Day(2), "b".into());
        assert_eq!((c.get(Day(1)), c.get(Day(2))), (None, Some("b")));
    }
}
