//! Time rules shared by every query: relative ranges, calendar buckets in the project's timezone.
//!
//! Pure functions: `now` and the zone are arguments. Day, week (ISO, Monday) and month buckets are
//! calendar periods in the zone, found by converting local boundaries to UTC, so a DST day lasts
//! 23 or 25 hours. Minute and hour buckets start where the local clock shows :00 (an hour repeated
//! by a DST change is two buckets, told apart by their offsets). Ranges are half-open `[from, to)`.

use chrono::{DateTime, Datelike, Duration, Months, NaiveDate, NaiveDateTime, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

/// Most buckets one query may ask for (per period; a comparison doubles it).
pub const MAX_BUCKETS: usize = 1500;

/// Longest range a query may cover: ten years and a bit.
pub const MAX_RANGE_DAYS: i64 = 3700;

/// Width of a bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Interval {
    /// One clock minute.
    Minute,
    /// One clock hour (elapsed: a repeated local hour is two buckets).
    Hour,
    /// One calendar day in the zone (23, 24 or 25 hours).
    Day,
    /// One ISO week, Monday to Sunday, in the zone.
    Week,
    /// One calendar month in the zone.
    Month,
}

/// Named ranges relative to `now` in the zone; the current period ends at the end of today.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Relative {
    /// Today (00:00 to 24:00 local).
    Today,
    /// Yesterday.
    Yesterday,
    /// The 24 clock hours up to and including the current one.
    #[serde(rename = "last_24_hours")]
    Last24Hours,
    /// The 7 calendar days ending today (today included).
    #[serde(rename = "last_7_days")]
    Last7Days,
    /// The 14 calendar days ending today.
    #[serde(rename = "last_14_days")]
    Last14Days,
    /// The 30 calendar days ending today.
    #[serde(rename = "last_30_days")]
    Last30Days,
    /// The 90 calendar days ending today.
    #[serde(rename = "last_90_days")]
    Last90Days,
    /// From this week's Monday to the end of today.
    ThisWeek,
    /// The previous ISO week, Monday to Sunday.
    LastWeek,
    /// From the first of this month to the end of today.
    ThisMonth,
    /// The previous calendar month.
    LastMonth,
    /// The 12 calendar months ending with this one (this month up to the end of today).
    #[serde(rename = "last_12_months")]
    Last12Months,
    /// From 1 January to the end of today.
    ThisYear,
    /// The previous calendar year.
    LastYear,
}

impl Relative {
    /// Every relative range with its wire spelling (for error messages and docs).
    pub const NAMES: &'static str = "today, yesterday, last_24_hours, last_7_days, last_14_days, last_30_days, \
         last_90_days, this_week, last_week, this_month, last_month, last_12_months, this_year, last_year";
}

/// What the query asked for, before it is resolved against `now` and the zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeSpec {
    /// A named relative range.
    Relative(Relative),
    /// Whole local days, both inclusive.
    Dates {
        /// First day.
        from: NaiveDate,
        /// Last day (inclusive).
        to: NaiveDate,
    },
    /// Instants, `to` exclusive.
    Instants {
        /// Start (inclusive).
        from: DateTime<Utc>,
        /// End (exclusive).
        to: DateTime<Utc>,
    },
}

/// A resolved range: the instants `[from, to)`, and the local days it spans when it is made of
/// whole days (which decides how the previous period is found).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    /// Start (inclusive).
    pub from: DateTime<Utc>,
    /// End (exclusive).
    pub to: DateTime<Utc>,
    /// `(first day, day after the last)` in the zone, for ranges of whole days.
    pub days: Option<(NaiveDate, NaiveDate)>,
}

/// One bucket of a series: `[start, end)` and its label.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Bucket {
    /// Start (inclusive), UTC.
    pub start: DateTime<Utc>,
    /// End (exclusive), UTC.
    pub end: DateTime<Utc>,
    /// The local period: `2026-03-29` for day, week (its Monday) and month (its first day);
    /// RFC 3339 with the local offset for minute and hour.
    pub label: String,
}

/// Why a range cannot be resolved or bucketed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimeError {
    /// `to` is before `from` (or equal, for instants).
    #[error("to must not be before from")]
    Reversed,
    /// The range is longer than [`MAX_RANGE_DAYS`].
    #[error("the range is longer than {MAX_RANGE_DAYS} days")]
    TooLong,
    /// More buckets than [`MAX_BUCKETS`].
    #[error("the range has more than {MAX_BUCKETS} buckets at this interval; choose a wider interval")]
    TooManyBuckets,
    /// A date out of chrono's range.
    #[error("date out of range")]
    OutOfRange,
}

/// The instant a local date-time happens in `tz`. An ambiguous time (a repeated hour) is its
/// first occurrence; a time in a DST gap is the first instant after the gap.
pub fn local_to_utc(tz: &Tz, local: NaiveDateTime) -> DateTime<Utc> {
    let mut t = local;
    // Gaps are at most a few hours; minutes keep the answer exact for 30/45-minute offsets.
    for _ in 0..=(4 * 60) {
        if let Some(x) = tz.from_local_datetime(&t).earliest() {
            return x.with_timezone(&Utc);
        }
        t += Duration::minutes(1);
    }
    // Unreachable with real zone data; fall back to reading the clock as UTC.
    Utc.from_utc_datetime(&local)
}

/// The instant the local day `date` begins in `tz`.
pub fn day_start(tz: &Tz, date: NaiveDate) -> DateTime<Utc> {
    local_to_utc(tz, date.and_time(chrono::NaiveTime::MIN))
}

/// The local date of an instant.
pub fn local_date(tz: &Tz, t: DateTime<Utc>) -> NaiveDate {
    t.with_timezone(tz).date_naive()
}

fn days_range(tz: &Tz, from: NaiveDate, to_exclusive: NaiveDate) -> Result<Range, TimeError> {
    if to_exclusive <= from {
        return Err(TimeError::Reversed);
    }
    if (to_exclusive - from).num_days() > MAX_RANGE_DAYS {
        return Err(TimeError::TooLong);
    }
    Ok(Range { from: day_start(tz, from), to: day_start(tz, to_exclusive), days: Some((from, to_exclusive)) })
}

fn monday(d: NaiveDate) -> NaiveDate {
    d - Duration::days(i64::from(d.weekday().num_days_from_monday()))
}

fn first_of_month(d: NaiveDate) -> NaiveDate {
    d.with_day(1).unwrap_or(d)
}

fn add_days(d: NaiveDate, n: i64) -> Result<NaiveDate, TimeError> {
    d.checked_add_signed(Duration::days(n)).ok_or(TimeError::OutOfRange)
}

fn sub_months(d: NaiveDate, n: u32) -> Result<NaiveDate, TimeError> {
    d.checked_sub_months(Months::new(n)).ok_or(TimeError::OutOfRange)
}

/// Resolves a range against `now` in `tz`.
pub fn resolve(spec: RangeSpec, now: DateTime<Utc>, tz: &Tz) -> Result<Range, TimeError> {
    let today = local_date(tz, now);
    let tomorrow = add_days(today, 1)?;
    let last_days = |n: i64| -> Result<Range, TimeError> { days_range(tz, add_days(today, 1 - n)?, tomorrow) };
    match spec {
        RangeSpec::Relative(r) => match r {
            Relative::Today => days_range(tz, today, tomorrow),
            Relative::Yesterday => days_range(tz, add_days(today, -1)?, today),
            Relative::Last24Hours => {
                let local = now.with_timezone(tz).naive_local();
                let hour = local.with_minute(0).and_then(|t| t.with_second(0)).and_then(|t| t.with_nanosecond(0));
                let start_of_hour = local_to_utc(tz, hour.unwrap_or(local));
                let to = start_of_hour + Duration::hours(1);
                Ok(Range { from: to - Duration::hours(24), to, days: None })
            }
            Relative::Last7Days => last_days(7),
            Relative::Last14Days => last_days(14),
            Relative::Last30Days => last_days(30),
            Relative::Last90Days => last_days(90),
            Relative::ThisWeek => days_range(tz, monday(today), tomorrow),
            Relative::LastWeek => {
                let m = monday(today);
                days_range(tz, add_days(m, -7)?, m)
            }
            Relative::ThisMonth => days_range(tz, first_of_month(today), tomorrow),
            Relative::LastMonth => {
                let first = first_of_month(today);
                days_range(tz, sub_months(first, 1)?, first)
            }
            Relative::Last12Months => days_range(tz, sub_months(first_of_month(today), 11)?, tomorrow),
            Relative::ThisYear => {
                let jan1 = NaiveDate::from_ymd_opt(today.year(), 1, 1).ok_or(TimeError::OutOfRange)?;
                days_range(tz, jan1, tomorrow)
            }
            Relative::LastYear => {
                let jan1 = NaiveDate::from_ymd_opt(today.year(), 1, 1).ok_or(TimeError::OutOfRange)?;
                let prev = NaiveDate::from_ymd_opt(today.year() - 1, 1, 1).ok_or(TimeError::OutOfRange)?;
                days_range(tz, prev, jan1)
            }
        },
        RangeSpec::Dates { from, to } => {
            if to < from {
                return Err(TimeError::Reversed);
            }
            days_range(tz, from, add_days(to, 1)?)
        }
        RangeSpec::Instants { from, to } => {
            if to <= from {
                return Err(TimeError::Reversed);
            }
            if (to - from).num_days() > MAX_RANGE_DAYS {
                return Err(TimeError::TooLong);
            }
            Ok(Range { from, to, days: None })
        }
    }
}

/// The period just before `range`, for comparisons: as many calendar days before it for ranges of
/// whole days (so a DST week compares with a 7-day week), else the same elapsed time before it.
pub fn previous_period(range: &Range, tz: &Tz) -> Result<Range, TimeError> {
    match range.days {
        Some((from, to)) => {
            let n = (to - from).num_days();
            days_range(tz, add_days(from, -n)?, from)
        }
        None => Ok(Range { from: range.from - (range.to - range.from), to: range.from, days: None }),
    }
}

/// The start of the calendar period containing the local date `d`.
fn period_start(interval: Interval, d: NaiveDate) -> NaiveDate {
    match interval {
        Interval::Week => monday(d),
        Interval::Month => first_of_month(d),
        _ => d,
    }
}

fn next_period(interval: Interval, d: NaiveDate) -> Option<NaiveDate> {
    match interval {
        Interval::Week => d.checked_add_signed(Duration::days(7)),
        Interval::Month => d.checked_add_months(Months::new(1)),
        _ => d.checked_add_signed(Duration::days(1)),
    }
}

fn clock_label(tz: &Tz, t: DateTime<Utc>) -> String {
    t.with_timezone(tz).to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
}

/// The buckets covering `range` at `interval` in `tz`, in order, the first starting at
/// `range.from` and the last ending at `range.to` (a range that does not start on a boundary has
/// a clipped first bucket). Every instant of the range is in exactly one bucket.
pub fn buckets(range: &Range, interval: Interval, tz: &Tz) -> Result<Vec<Bucket>, TimeError> {
    let mut starts: Vec<(DateTime<Utc>, String)> = Vec::new();
    match interval {
        Interval::Minute | Interval::Hour => {
            // Offsets are whole quarter hours, so every local :00 falls on a UTC quarter hour.
            let step = Duration::minutes(if interval == Interval::Minute { 1 } else { 15 });
            let secs = range.from.timestamp();
            let step_secs = step.num_seconds();
            let mut t =
                DateTime::<Utc>::from_timestamp(secs - secs.rem_euclid(step_secs), 0).ok_or(TimeError::OutOfRange)?;
            starts.push((range.from, clock_label(tz, range.from)));
            while t < range.to {
                if t > range.from && (interval == Interval::Minute || t.with_timezone(tz).minute() == 0) {
                    if starts.len() >= MAX_BUCKETS {
                        return Err(TimeError::TooManyBuckets);
                    }
                    starts.push((t, clock_label(tz, t)));
                }
                t += step;
            }
        }
        Interval::Day | Interval::Week | Interval::Month => {
            let mut period = period_start(interval, local_date(tz, range.from));
            starts.push((range.from, period.to_string()));
            loop {
                period = next_period(interval, period).ok_or(TimeError::OutOfRange)?;
                let t = day_start(tz, period);
                if t >= range.to {
                    break;
                }
                if t > range.from {
                    if starts.len() >= MAX_BUCKETS {
                        return Err(TimeError::TooManyBuckets);
                    }
                    starts.push((t, period.to_string()));
                }
            }
        }
    }
    let ends: Vec<DateTime<Utc>> = starts.iter().skip(1).map(|(t, _)| *t).chain(std::iter::once(range.to)).collect();
    Ok(starts.into_iter().zip(ends).map(|((start, label), end)| Bucket { start, end, label }).collect())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn tz(s: &str) -> Tz {
        s.parse().unwrap()
    }
    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }
    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    fn check_resolve(r: Relative, now: &str, zone: &str, from: &str, to: &str) {
        let got = resolve(RangeSpec::Relative(r), t(now), &tz(zone)).unwrap();
        assert_eq!((got.from, got.to), (t(from), t(to)), "{r:?} at {now} in {zone}");
    }

    #[test]
    fn relative_ranges() {
        let now = "2026-03-29T22:30:00Z"; // 00:30 on 30 March in Berlin (CEST), 29 March in UTC
        check_resolve(Relative::Today, now, "UTC", "2026-03-29T00:00:00Z", "2026-03-30T00:00:00Z");
        check_resolve(Relative::Today, now, "Europe/Berlin", "2026-03-30T00:00:00+02:00", "2026-03-31T00:00:00+02:00");
        // Yesterday in Berlin was the 23-hour DST day.
        check_resolve(
            Relative::Yesterday,
            now,
            "Europe/Berlin",
            "2026-03-29T00:00:00+01:00",
            "2026-03-30T00:00:00+02:00",
        );
        check_resolve(Relative::Last7Days, now, "UTC", "2026-03-23T00:00:00Z", "2026-03-30T00:00:00Z");
        check_resolve(
            Relative::Last7Days,
            now,
            "Europe/Berlin",
            "2026-03-24T00:00:00+01:00",
            "2026-03-31T00:00:00+02:00",
        );
        check_resolve(Relative::Last30Days, now, "UTC", "2026-02-28T00:00:00Z", "2026-03-30T00:00:00Z");
        check_resolve(Relative::ThisWeek, now, "UTC", "2026-03-23T00:00:00Z", "2026-03-30T00:00:00Z");
        check_resolve(Relative::LastWeek, now, "UTC", "2026-03-16T00:00:00Z", "2026-03-23T00:00:00Z");
        check_resolve(Relative::ThisMonth, now, "UTC", "2026-03-01T00:00:00Z", "2026-03-30T00:00:00Z");
        check_resolve(Relative::LastMonth, now, "UTC", "2026-02-01T00:00:00Z", "2026-03-01T00:00:00Z");
        check_resolve(
            Relative::LastMonth,
            "2026-01-15T12:00:00Z",
            "UTC",
            "2025-12-01T00:00:00Z",
            "2026-01-01T00:00:00Z",
        );
        check_resolve(Relative::Last12Months, now, "UTC", "2025-04-01T00:00:00Z", "2026-03-30T00:00:00Z");
        check_resolve(Relative::ThisYear, now, "UTC", "2026-01-01T00:00:00Z", "2026-03-30T00:00:00Z");
        check_resolve(Relative::LastYear, now, "UTC", "2025-01-01T00:00:00Z", "2026-01-01T00:00:00Z");
        check_resolve(Relative::Last24Hours, now, "UTC", "2026-03-28T23:00:00Z", "2026-03-29T23:00:00Z");
        // India is +05:30: hours start at :30 UTC.
        check_resolve(Relative::Last24Hours, now, "Asia/Kolkata", "2026-03-28T23:30:00Z", "2026-03-29T23:30:00Z");
    }

    #[test]
    fn wire_names() {
        for name in Relative::NAMES.split(", ") {
            let r: Relative = serde_json::from_value(serde_json::Value::String(name.to_owned())).unwrap();
            assert_eq!(serde_json::to_value(r).unwrap(), name, "{name}");
        }
    }

    #[test]
    fn absolute_ranges_and_errors() {
        let berlin = tz("Europe/Berlin");
        let r = resolve(
            RangeSpec::Dates { from: d("2026-10-25"), to: d("2026-10-25") },
            t("2026-12-01T00:00:00Z"),
            &berlin,
        )
        .unwrap();
        assert_eq!((r.from, r.to), (t("2026-10-25T00:00:00+02:00"), t("2026-10-26T00:00:00+01:00")));
        assert_eq!((r.to - r.from).num_hours(), 25);
        let now = t("2026-12-01T00:00:00Z");
        assert_eq!(
            resolve(RangeSpec::Dates { from: d("2026-03-02"), to: d("2026-03-01") }, now, &berlin),
            Err(TimeError::Reversed)
        );
        let i = |a: &str, b: &str| RangeSpec::Instants { from: t(a), to: t(b) };
        assert_eq!(resolve(i("2026-03-02T00:00:00Z", "2026-03-02T00:00:00Z"), now, &berlin), Err(TimeError::Reversed));
        assert_eq!(resolve(i("2000-01-01T00:00:00Z", "2026-03-02T00:00:00Z"), now, &berlin), Err(TimeError::TooLong));
        assert_eq!(
            resolve(RangeSpec::Dates { from: d("2000-01-01"), to: d("2026-03-01") }, now, &berlin),
            Err(TimeError::TooLong)
        );
    }

    fn check_buckets(zone: &str, from: &str, to: &str, interval: Interval, expected: &[(&str, i64)]) {
        let z = tz(zone);
        let r = resolve(RangeSpec::Dates { from: d(from), to: d(to) }, t("2027-01-01T00:00:00Z"), &z).unwrap();
        let got: Vec<(String, i64)> =
            buckets(&r, interval, &z).unwrap().into_iter().map(|b| (b.label, (b.end - b.start).num_hours())).collect();
        let want: Vec<(String, i64)> = expected.iter().map(|(l, h)| ((*l).to_owned(), *h)).collect();
        assert_eq!(got, want, "{zone} {from}..{to} {interval:?}");
    }

    #[test]
    fn calendar_buckets_across_dst() {
        use Interval::*;
        let berlin = "Europe/Berlin";
        check_buckets(
            berlin,
            "2026-03-28",
            "2026-03-30",
            Day,
            &[("2026-03-28", 24), ("2026-03-29", 23), ("2026-03-30", 24)],
        );
        check_buckets(
            berlin,
            "2026-10-24",
            "2026-10-26",
            Day,
            &[("2026-10-24", 24), ("2026-10-25", 25), ("2026-10-26", 24)],
        );
        check_buckets("UTC", "2026-03-28", "2026-03-29", Day, &[("2026-03-28", 24), ("2026-03-29", 24)]);
        // New York springs forward on 8 March 2026.
        check_buckets("America/New_York", "2026-03-08", "2026-03-08", Day, &[("2026-03-08", 23)]);
        // Weeks: ISO Mondays; the range starts on a Wednesday so the first week is clipped.
        check_buckets(berlin, "2026-03-25", "2026-04-05", Week, &[("2026-03-23", 5 * 24 - 1), ("2026-03-30", 7 * 24)]);
        check_buckets(berlin, "2026-10-19", "2026-10-25", Week, &[("2026-10-19", 7 * 24 + 1)]);
        check_buckets(
            berlin,
            "2026-02-15",
            "2026-04-30",
            Month,
            &[("2026-02-01", 14 * 24), ("2026-03-01", 31 * 24 - 1), ("2026-04-01", 30 * 24)],
        );
        check_buckets("UTC", "2024-02-01", "2024-02-29", Month, &[("2024-02-01", 29 * 24)]);
    }

    #[test]
    fn hour_buckets_across_dst() {
        let berlin = tz("Europe/Berlin");
        let r = resolve(
            RangeSpec::Dates { from: d("2026-03-29"), to: d("2026-03-29") },
            t("2027-01-01T00:00:00Z"),
            &berlin,
        )
        .unwrap();
        let b = buckets(&r, Interval::Hour, &berlin).unwrap();
        assert_eq!(b.len(), 23);
        assert_eq!(b[1].label, "2026-03-29T01:00:00+01:00");
        assert_eq!(b[2].label, "2026-03-29T03:00:00+02:00", "02:00 does not exist");
        let r = resolve(
            RangeSpec::Dates { from: d("2026-10-25"), to: d("2026-10-25") },
            t("2027-01-01T00:00:00Z"),
            &berlin,
        )
        .unwrap();
        let b = buckets(&r, Interval::Hour, &berlin).unwrap();
        assert_eq!(b.len(), 25);
        assert_eq!(b[2].label, "2026-10-25T02:00:00+02:00");
        assert_eq!(b[3].label, "2026-10-25T02:00:00+01:00", "02:00 happens twice");
        assert!(b.iter().all(|x| x.end - x.start == Duration::hours(1)));
        // A +05:30 zone: local hours start at :30 UTC.
        let kolkata = tz("Asia/Kolkata");
        let r = Range { from: t("2026-03-01T00:00:00Z"), to: t("2026-03-01T02:00:00Z"), days: None };
        let b = buckets(&r, Interval::Hour, &kolkata).unwrap();
        let starts: Vec<_> = b.iter().map(|x| x.start).collect();
        assert_eq!(starts, vec![t("2026-03-01T00:00:00Z"), t("2026-03-01T00:30:00Z"), t("2026-03-01T01:30:00Z")]);
        let m = buckets(
            &Range { from: t("2026-03-01T00:00:30Z"), to: t("2026-03-01T00:03:00Z"), days: None },
            Interval::Minute,
            &kolkata,
        )
        .unwrap();
        assert_eq!(m.len(), 3);
    }

    #[test]
    fn bucket_limit_and_previous_period() {
        let utc = tz("UTC");
        let r = resolve(RangeSpec::Relative(Relative::Last30Days), t("2026-03-10T00:00:00Z"), &utc).unwrap();
        assert_eq!(buckets(&r, Interval::Minute, &utc), Err(TimeError::TooManyBuckets));
        assert_eq!(buckets(&r, Interval::Hour, &utc).unwrap().len(), 720);
        let berlin = tz("Europe/Berlin");
        let r = resolve(
            RangeSpec::Dates { from: d("2026-03-30"), to: d("2026-04-05") },
            t("2027-01-01T00:00:00Z"),
            &berlin,
        )
        .unwrap();
        let p = previous_period(&r, &berlin).unwrap();
        assert_eq!((p.from, p.to), (t("2026-03-23T00:00:00+01:00"), t("2026-03-30T00:00:00+02:00")));
        assert_eq!((p.to - p.from).num_hours(), 7 * 24 - 1, "the previous week had the DST change");
        let i = Range { from: t("2026-03-01T10:00:00Z"), to: t("2026-03-01T12:00:00Z"), days: None };
        let p = previous_period(&i, &berlin).unwrap();
        assert_eq!((p.from, p.to), (t("2026-03-01T08:00:00Z"), t("2026-03-01T10:00:00Z")));
    }

    #[test]
    fn gaps_and_repeats() {
        // Santiago's clocks go from 24:00 to 01:00 on 6 September 2026: the day starts at 01:00.
        let santiago = tz("America/Santiago");
        assert_eq!(day_start(&santiago, d("2026-09-06")), t("2026-09-06T01:00:00-03:00"));
        let berlin = tz("Europe/Berlin");
        let repeated = d("2026-10-25").and_hms_opt(2, 30, 0).unwrap();
        assert_eq!(local_to_utc(&berlin, repeated), t("2026-10-25T02:30:00+02:00"), "the first of the two");
    }
}
