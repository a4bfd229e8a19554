//! Hand-written wire formatting: UUID v7, RFC 3339 timestamps, integers and argument checks.
//!
//! Everything here avoids `core::fmt` on purpose: `format!` and friends cost about 10 KiB of
//! gzipped wasm (see shared/toolchain.md), half of the SDK's budget, for a few fixed layouts that
//! take twenty lines each to write by hand.

use protocol::limits::MAX_ID_LEN;

const HEX: &[u8; 16] = b"0123456789abcdef";

/// A UUID version 7 (RFC 9562) from a Unix time in milliseconds and 10 random bytes.
///
/// Written by hand rather than with the `uuid` crate: the crate and its `getrandom` JS shim
/// bring formatting code and extra imports into the wasm, while the layout is 48 bits of time,
/// 4 version bits, 2 variant bits and 74 random bits. The time prefix makes ids sort by creation
/// time, which keeps the origin's index on ids append-mostly.
pub fn uuid_v7(unix_ms: u64, random: &[u8; 10]) -> String {
    let ms = unix_ms.to_be_bytes();
    let [_, _, t0, t1, t2, t3, t4, t5] = ms;
    let [r0, r1, r2, r3, r4, r5, r6, r7, r8, r9] = *random;
    // Built as one array literal: `copy_from_slice` keeps a length-mismatch panic whose message
    // needs `core::fmt`.
    let b = [
        t0,
        t1,
        t2,
        t3,
        t4,
        t5,
        0x70 | (r0 & 0x0f), // version 7
        r1,
        0x80 | (r2 & 0x3f), // variant 0b10
        r3,
        r4,
        r5,
        r6,
        r7,
        r8,
        r9,
    ];
    let mut out = String::with_capacity(36);
    for (i, byte) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out.push('-');
        }
        out.push(char::from(HEX[usize::from(byte >> 4)]));
        out.push(char::from(HEX[usize::from(byte & 0x0f)]));
    }
    out
}

/// Formats a Unix time in milliseconds as RFC 3339 UTC with milliseconds:
/// `2026-12-01T10:00:00.000Z` (the shape of JavaScript's `Date.prototype.toISOString`).
pub fn rfc3339_ms(unix_ms: u64) -> String {
    let days = unix_ms / 86_400_000;
    let ms_of_day = unix_ms % 86_400_000;
    let (year, month, day) = civil_from_days(days);
    let mut out = String::with_capacity(24);
    push_padded(&mut out, year, 4);
    out.push('-');
    push_padded(&mut out, month, 2);
    out.push('-');
    push_padded(&mut out, day, 2);
    out.push('T');
    push_padded(&mut out, ms_of_day / 3_600_000, 2);
    out.push(':');
    push_padded(&mut out, ms_of_day / 60_000 % 60, 2);
    out.push(':');
    push_padded(&mut out, ms_of_day / 1000 % 60, 2);
    out.push('.');
    push_padded(&mut out, ms_of_day % 1000, 3);
    out.push('Z');
    out
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's `civil_from_days`, restricted to dates after the epoch).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// Appends `n` in decimal, left-padded with zeros to at least `width` digits.
pub fn push_padded(out: &mut String, mut n: u64, width: usize) {
    let mut digits = [0u8; 20];
    let mut len = 0;
    while n > 0 || len < width.max(1) {
        digits[len] = b'0' + (n % 10) as u8;
        n /= 10;
        len += 1;
        if len == digits.len() {
            break;
        }
    }
    for d in digits[..len].iter().rev() {
        out.push(*d as char);
    }
}

/// Parses a non-empty run of ASCII digits (at most 19, so no overflow). Works on bytes so
/// callers can cut their input with `get` instead of `&s[..]`/`split_once`, whose
/// char-boundary panic message pulls in `core::fmt` (about 2 KiB, see the module comment).
pub fn parse_u64(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 19 {
        return None;
    }
    let mut n: u64 = 0;
    for &b in s {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n * 10 + u64::from(b - b'0');
    }
    Some(n)
}

/// True for an id the protocol accepts (`anonymous_id`, `user_id`, `session_id`): non-empty and
/// at most [`MAX_ID_LEN`] bytes.
pub fn valid_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_ID_LEN
}

/// Whether the person with anonymous id `id` is in a sample of `rate` (0 to 1) of all persons.
///
/// Decided by a hash of the id, not by chance per event: the same person is always in or always
/// out, on every page and in every tab, so a sampled person's funnels and sessions stay whole.
/// FNV-1a (32 bits) rather than a crate: five lines, and spread evenly enough for a threshold.
pub fn sampled(id: &str, rate: f64) -> bool {
    let mut hash: u32 = 0x811c_9dc5;
    for b in id.bytes() {
        hash = (hash ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    f64::from(hash) < rate * 4_294_967_296.0
}

#[cfg(all(test, not(target_arch = "wasm32")))]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn uuid_v7_layout() {
        let check = |ms: u64, random: [u8; 10], expected: &str| {
            let id = uuid_v7(ms, &random);
            assert_eq!(id, expected);
            // The server's parser agrees that it is a UUID.
            let raw = format!(
                r#"{{"id":"{id}","type":"track","name":"x","anonymous_id":"a","timestamp":"2026-01-01T00:00:00Z"}}"#
            );
            assert!(protocol::validate::validate_event_json(&raw).is_ok(), "{id}");
        };
        check(0, [0; 10], "00000000-0000-7000-8000-000000000000");
        check(0, [0xff; 10], "00000000-0000-7fff-bfff-ffffffffffff");
        check(
            0x0193_a1b2_c3d4,
            [0x1e, 0x5f, 0x0a, 0x9b, 0x0c, 0x1d, 0x2e, 0x3f, 0x4a, 0x5b],
            "0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",
        );
        // Only 48 bits of time fit; the rest is cut, never spilled into the version nibble.
        check(u64::MAX, [0; 10], "ffffffff-ffff-7000-8000-000000000000");
    }

    #[test]
    fn rfc3339_table() {
        let check = |ms: u64, expected: &str| {
            assert_eq!(rfc3339_ms(ms), expected);
            let parsed = protocol::validate::parse_timestamp(expected).unwrap();
            assert_eq!(parsed.timestamp_millis() as u64, ms, "{expected}");
        };
        check(0, "1970-01-01T00:00:00.000Z");
        check(1, "1970-01-01T00:00:00.001Z");
        check(951_782_400_000, "2000-02-29T00:00:00.000Z"); // leap day of a /400 year
        check(1_709_164_800_000, "2024-02-29T00:00:00.000Z");
        check(1_735_689_599_999, "2024-12-31T23:59:59.999Z");
        check(1_796_119_200_123, "2026-12-01T10:00:00.123Z");
        check(4_107_542_400_000, "2100-03-01T00:00:00.000Z"); // 2100 is not a leap year
        check(253_402_300_799_999, "9999-12-31T23:59:59.999Z");
    }

    #[test]
    fn padded_numbers() {
        let check = |n: u64, width: usize, expected: &str| {
            let mut s = String::new();
            push_padded(&mut s, n, width);
            assert_eq!(s, expected);
        };
        check(0, 0, "0");
        check(0, 3, "000");
        check(7, 2, "07");
        check(1234, 2, "1234");
        check(u64::MAX, 1, "18446744073709551615");
    }

    #[test]
    fn parse_numbers() {
        let check = |s: &str, expected: Option<u64>| assert_eq!(parse_u64(s.as_bytes()), expected, "{s:?}");
        check("0", Some(0));
        check("1796119200123", Some(1_796_119_200_123));
        check("9999999999999999999", Some(9_999_999_999_999_999_999));
        check("99999999999999999999", None); // 20 digits could overflow: refused
        check("", None);
        check("12a", None);
        check("-1", None);
        check(" 1", None);
    }

    #[test]
    fn ids_and_names() {
        assert!(valid_id("u1"));
        assert!(!valid_id(""));
        assert!(valid_id(&"x".repeat(MAX_ID_LEN)));
        assert!(!valid_id(&"x".repeat(MAX_ID_LEN + 1)));
    }

    #[test]
    fn sampling_table() {
        let ids: Vec<String> = (0..10_000).map(|n| format!("0193a1b2-c3d4-7e5f-8a9b-{n:012x}")).collect();
        // (rate, share of the 10,000 ids kept, within 1.5 percentage points)
        for (rate, low, high) in [(0.0, 0, 0), (0.1, 850, 1150), (0.5, 4850, 5150), (1.0, 10_000, 10_000)] {
            let kept = ids.iter().filter(|id| sampled(id, rate)).count();
            assert!((low..=high).contains(&kept), "rate {rate}: kept {kept}");
        }
        // The same id always gets the same answer, and a larger rate keeps a superset.
        for id in &ids[..100] {
            assert_eq!(sampled(id, 0.3), sampled(id, 0.3));
            assert!(!sampled(id, 0.3) || sampled(id, 0.6), "{id}");
        }
    }
}
