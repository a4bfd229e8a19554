//! Stickiness (on how many intervals persons did something) and lifecycle (new, returning, resurrecting,
//! dormant persons per interval).
//!
//! Pure maths over each person's event times; intervals come from a function passed in (calendar periods in the
//! project's timezone, see `query::time`).
//!
//! Definitions (the oracle in the tests checks them one interval at a time):
//! * Stickiness: for `k` in `1..=periods`, the persons active on exactly `k` distinct intervals of the range
//!   (and on at least `k`).
//! * Lifecycle, for an interval `p` of the range, where active means "did the event in that interval" and the
//!   first interval is the one of the person's first event ever:
//!   new = active in `p` and first seen in `p`; returning = active in `p` and in `p - 1`;
//!   resurrecting = active in `p`, not in `p - 1`, first seen before `p`; dormant = active in `p - 1`, not in
//!   `p` (a positive count; charts usually draw it below the axis).

use std::collections::BTreeSet;

use chrono::{DateTime, Datelike, Duration, Months, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use super::filter::{Scope, SqlBuilder};
use super::funnel::{common_where, refuse_compare, stream_rows, EventSpec, PersonGroups};
use super::model::{Common, QueryError};
use super::retention::bucket_index;
use super::time::{self, Bucket, Interval};

/// The range of intervals a stickiness or lifecycle query covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Intervals {
    /// Index of the first interval (as returned by the interval function).
    pub first: i64,
    /// Number of intervals.
    pub count: usize,
}

impl Intervals {
    fn contains(&self, p: i64) -> bool {
        p >= self.first && p - self.first < self.count as i64
    }
}

/// One row of a stickiness answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StickinessRow {
    /// Number of distinct intervals.
    pub intervals: usize,
    /// Persons active on exactly that many intervals.
    pub persons: u64,
    /// Persons active on at least that many intervals.
    pub at_least: u64,
}

/// Stickiness; each item of `persons` is one person's event times (ms, any order).
pub fn stickiness(persons: &[Vec<i64>], range: Intervals, interval_of: impl Fn(i64) -> i64) -> Vec<StickinessRow> {
    let mut exactly = vec![0u64; range.count + 1];
    for events in persons {
        let active: BTreeSet<i64> = events.iter().map(|&t| interval_of(t)).filter(|&p| range.contains(p)).collect();
        exactly[active.len()] += 1;
    }
    let mut at_least = 0;
    let mut rows: Vec<StickinessRow> = (1..=range.count)
        .rev()
        .map(|k| {
            at_least += exactly[k];
            StickinessRow { intervals: k, persons: exactly[k], at_least }
        })
        .collect();
    rows.reverse();
    rows
}

/// One person's activity for a lifecycle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Activity {
    /// Time of the person's first matching event ever (ms); earlier events in `events` win over it.
    pub first_seen: i64,
    /// Event times (ms), covering at least the interval before the range and the range itself.
    pub events: Vec<i64>,
}

/// Lifecycle counts of one interval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LifecycleRow {
    /// Interval index (the HTTP answer labels intervals instead).
    #[serde(skip_serializing)]
    pub interval: i64,
    /// Active and first seen in this interval.
    pub new: u64,
    /// Active in this interval and the previous one.
    pub returning: u64,
    /// Active in this interval, not in the previous one, first seen earlier.
    pub resurrecting: u64,
    /// Active in the previous interval, not in this one.
    pub dormant: u64,
}

/// Lifecycle per interval of the range.
pub fn lifecycle(persons: &[Activity], range: Intervals, interval_of: impl Fn(i64) -> i64) -> Vec<LifecycleRow> {
    let mut rows: Vec<LifecycleRow> = (0..range.count as i64)
        .map(|i| LifecycleRow { interval: range.first + i, new: 0, returning: 0, resurrecting: 0, dormant: 0 })
        .collect();
    for person in persons {
        let first_seen = person.events.iter().copied().fold(person.first_seen, i64::min);
        let born = interval_of(first_seen);
        let active: BTreeSet<i64> = person.events.iter().map(|&t| interval_of(t)).collect();
        // Only intervals where the person is active, or was active just before, change a count.
        let touched: BTreeSet<i64> = active.iter().flat_map(|&p| [p, p + 1]).filter(|&p| range.contains(p)).collect();
        for p in touched {
            let Some(row) = usize::try_from(p - range.first).ok().and_then(|i| rows.get_mut(i)) else { continue };
            let (now, before) = (active.contains(&p), active.contains(&(p - 1)));
            match (now, before) {
                (true, _) if born == p => row.new += 1,
                (true, true) => row.returning += 1,
                (true, false) => row.resurrecting += 1,
                (false, true) => row.dormant += 1,
                (false, false) => {}
            }
        }
    }
    rows
}

// ---- The queries ----

/// Most intervals of a stickiness or lifecycle query.
pub const MAX_INTERVALS: usize = 400;

/// The part of `POST /v1/query/stickiness` and `/v1/query/lifecycle` beyond the common keys.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActivityQuery {
    /// The event that makes a person active.
    pub event: EventSpec,
}

/// The answer of `POST /v1/query/stickiness`.
#[derive(Debug, Clone, Serialize)]
pub struct StickinessResponse {
    /// Zone of the intervals.
    pub timezone: String,
    /// Interval width.
    pub interval: Interval,
    /// Intervals in the range.
    pub intervals: usize,
    /// One row per number of intervals, 1 to `intervals`.
    pub rows: Vec<StickinessRow>,
}

/// One interval of a lifecycle answer.
#[derive(Debug, Clone, Serialize)]
pub struct LifecycleBucket {
    /// The interval's label.
    pub bucket: String,
    /// Start of the interval, UTC.
    pub start: DateTime<Utc>,
    /// Counts.
    #[serde(flatten)]
    pub counts: LifecycleRow,
}

/// The answer of `POST /v1/query/lifecycle`.
#[derive(Debug, Clone, Serialize)]
pub struct LifecycleResponse {
    /// Zone of the intervals.
    pub timezone: String,
    /// Interval width.
    pub interval: Interval,
    /// One entry per interval.
    pub buckets: Vec<LifecycleBucket>,
}

fn check_common(common: &Common, kind: &str) -> Result<Vec<Bucket>, QueryError> {
    refuse_compare(common, kind)?;
    if common.breakdown.is_some() {
        return Err(QueryError::invalid("breakdown", format!("breakdown is not supported by {kind}")));
    }
    let buckets = common.buckets(&common.range)?;
    if buckets.len() > MAX_INTERVALS {
        return Err(QueryError::invalid(
            "interval",
            format!("more than {MAX_INTERVALS} intervals; choose a wider interval"),
        ));
    }
    Ok(buckets)
}

/// Start of the interval before the calendar period the range starts in (the range may start inside a period).
pub fn previous_interval_start(range_from: DateTime<Utc>, interval: Interval, tz: &Tz) -> DateTime<Utc> {
    let d = time::local_date(tz, range_from);
    let start = match interval {
        Interval::Minute => return range_from - Duration::minutes(1),
        Interval::Hour => return range_from - Duration::hours(1),
        Interval::Day => d - Duration::days(1),
        Interval::Week => d - Duration::days(i64::from(d.weekday().num_days_from_monday()) + 7),
        Interval::Month => d.with_day(1).and_then(|f| f.checked_sub_months(Months::new(1))).unwrap_or(d),
    };
    time::day_start(tz, start)
}

/// Runs stickiness: each person's matching events in the range, reduced to one per interval as they stream in.
pub async fn run_stickiness(
    pool: &deadpool_postgres::Pool,
    project_id: i64,
    common: &Common,
    q: &ActivityQuery,
) -> Result<StickinessResponse, QueryError> {
    let buckets = check_common(common, "stickiness")?;
    let mut b = SqlBuilder::new();
    let person = b.person_key(Scope::Events);
    let pid = b.bind(project_id);
    let from = b.bind(common.range.from);
    let to = b.bind(common.range.to);
    let event = q.event.sql(&mut b, "event")?;
    let tail = common_where(&mut b, common)?;
    let sql = format!(
        "SELECT {person} AS person, e.timestamp FROM events e{joins} \
         WHERE e.project_id = {pid} AND e.timestamp >= {from} AND e.timestamp < {to}{tail} AND {event} ORDER BY 1",
        joins = b.joins(Scope::Events),
    );
    let starts: Vec<i64> = buckets.iter().map(|x| x.start.timestamp_millis()).collect();
    let end = common.range.to.timestamp_millis();
    let interval_of = |ts: i64| bucket_index(&starts, end, ts);
    let range = Intervals { first: 0, count: buckets.len() };
    // One representative time per (person, interval) is all stickiness needs.
    let mut persons: Vec<Vec<i64>> = Vec::new();
    let mut groups: PersonGroups<i64> = PersonGroups::default();
    let mut done = |_person: String, times: Vec<i64>| {
        let mut seen = BTreeSet::new();
        persons.push(times.into_iter().filter(|&t| seen.insert(interval_of(t))).collect());
    };
    stream_rows(pool, &sql, &b, |row| {
        let person: &str = row.try_get(0)?;
        let ts: DateTime<Utc> = row.try_get(1)?;
        groups.push(person, ts.timestamp_millis(), &mut done);
        Ok(())
    })
    .await?;
    groups.flush(&mut done);
    Ok(StickinessResponse {
        timezone: common.timezone.clone(),
        interval: common.interval,
        intervals: buckets.len(),
        rows: stickiness(&persons, range, interval_of),
    })
}

/// Runs lifecycle: each person's matching events from the interval before the range to its end, with the time
/// of their first matching event ever.
pub async fn run_lifecycle(
    pool: &deadpool_postgres::Pool,
    project_id: i64,
    common: &Common,
    q: &ActivityQuery,
) -> Result<LifecycleResponse, QueryError> {
    let buckets = check_common(common, "lifecycle")?;
    let prev_start = previous_interval_start(common.range.from, common.interval, &common.tz);
    let mut b = SqlBuilder::new();
    let person = b.person_key(Scope::Events);
    let pid = b.bind(project_id);
    let prev = b.bind(prev_start);
    let to = b.bind(common.range.to);
    let event = q.event.sql(&mut b, "event")?;
    let tail = common_where(&mut b, common)?;
    let sql = format!(
        "SELECT person, ts, first_seen FROM (\
           SELECT person, ts, min(ts) OVER (PARTITION BY person) AS first_seen FROM (\
             SELECT {person} AS person, e.timestamp AS ts FROM events e{joins} \
             WHERE e.project_id = {pid} AND e.timestamp < {to}{tail} AND {event}) m\
         ) x WHERE ts >= {prev} ORDER BY 1",
        joins = b.joins(Scope::Events),
    );
    let starts: Vec<i64> = buckets.iter().map(|x| x.start.timestamp_millis()).collect();
    let end = common.range.to.timestamp_millis();
    let prev_ms = prev_start.timestamp_millis();
    // Before the range: -1 is the interval just before it, -2 anything older.
    let interval_of = |ts: i64| match bucket_index(&starts, end, ts) {
        -1 if ts < prev_ms => -2,
        i => i,
    };
    let range = Intervals { first: 0, count: buckets.len() };
    let mut persons: Vec<Activity> = Vec::new();
    let mut groups: PersonGroups<(i64, i64)> = PersonGroups::default();
    let mut done = |_person: String, rows: Vec<(i64, i64)>| {
        let first_seen = rows.iter().map(|r| r.1).min().unwrap_or(i64::MAX);
        let mut seen = BTreeSet::new();
        let events = rows.into_iter().map(|r| r.0).filter(|&t| seen.insert(interval_of(t))).collect();
        persons.push(Activity { first_seen, events });
    };
    stream_rows(pool, &sql, &b, |row| {
        let person: &str = row.try_get(0)?;
        let ts: DateTime<Utc> = row.try_get(1)?;
        let first: DateTime<Utc> = row.try_get(2)?;
        groups.push(person, (ts.timestamp_millis(), first.timestamp_millis()), &mut done);
        Ok(())
    })
    .await?;
    groups.flush(&mut done);
    let rows = lifecycle(&persons, range, interval_of);
    let buckets = rows
        .into_iter()
        .zip(&buckets)
        .map(|(counts, bucket)| LifecycleBucket { bucket: bucket.label.clone(), start: bucket.start, counts })
        .collect();
    Ok(LifecycleResponse { timezone: common.timezone.clone(), interval: common.interval, buckets })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const DAY: i64 = 86_400_000;

    fn day(ts: i64) -> i64 {
        ts.div_euclid(DAY)
    }

    fn days(ds: &[i64]) -> Vec<i64> {
        ds.iter().map(|d| d * DAY + 7).collect()
    }

    #[test]
    fn stickiness_cases() {
        let persons = vec![days(&[1, 1, 2]), days(&[1]), days(&[0, 5]), days(&[1, 2, 3])];
        let rows = stickiness(&persons, Intervals { first: 1, count: 3 }, day);
        let got: Vec<(usize, u64, u64)> = rows.iter().map(|r| (r.intervals, r.persons, r.at_least)).collect();
        assert_eq!(got, [(1, 1, 3), (2, 1, 2), (3, 1, 1)]);
    }

    #[test]
    fn lifecycle_cases() {
        let a = |first: i64, ds: &[i64]| Activity { first_seen: first * DAY, events: days(ds) };
        let persons = vec![
            a(0, &[0, 1, 2]), // returning on 1 and 2
            a(1, &[1, 3]),    // new on 1, dormant on 2, resurrecting on 3
            a(2, &[2]),       // new on 2, dormant on 3 (with the first person)
            a(5, &[0]),       // first_seen later than an event: the event wins; dormant on 1
        ];
        let rows = lifecycle(&persons, Intervals { first: 1, count: 3 }, day);
        let got: Vec<[u64; 4]> = rows.iter().map(|r| [r.new, r.returning, r.resurrecting, r.dormant]).collect();
        assert_eq!(got, [[1, 1, 0, 1], [1, 1, 0, 1], [0, 0, 1, 2]]);
        assert_eq!(rows[2].interval, 3);
    }

    #[test]
    fn interval_before_the_range() {
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        let t = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        let cases = [
            // the day before Berlin's 23-hour 29 March starts at midnight CET
            ("2026-03-29T22:00:00Z", Interval::Day, "2026-03-28T23:00:00Z"),
            ("2026-03-30T22:00:00Z", Interval::Day, "2026-03-29T22:00:00Z"),
            // a range starting on Wednesday 1 April: the ISO week before the one it starts in
            ("2026-03-31T22:00:00Z", Interval::Week, "2026-03-22T23:00:00Z"),
            ("2026-03-31T22:00:00Z", Interval::Month, "2026-02-28T23:00:00Z"),
            ("2026-03-31T22:00:00Z", Interval::Hour, "2026-03-31T21:00:00Z"),
        ];
        for (from, interval, want) in cases {
            assert_eq!(previous_interval_start(t(from), interval, &berlin), t(want), "{from} {interval:?}");
        }
    }

    /// Naive oracle: per interval, look at every person's raw event list.
    fn oracle(persons: &[Activity], range: Intervals) -> Vec<[u64; 4]> {
        (0..range.count as i64)
            .map(|i| {
                let p = range.first + i;
                let mut row = [0u64; 4];
                for a in persons {
                    let on = |q: i64| a.events.iter().any(|&t| day(t) == q);
                    let first = a.events.iter().map(|&t| day(t)).chain([day(a.first_seen)]).min().unwrap();
                    if on(p) && first == p {
                        row[0] += 1;
                    } else if on(p) && on(p - 1) {
                        row[1] += 1;
                    } else if on(p) && first < p {
                        row[2] += 1;
                    } else if !on(p) && on(p - 1) {
                        row[3] += 1;
                    }
                }
                row
            })
            .collect()
    }

    fn arb_activity() -> impl Strategy<Value = Vec<Activity>> {
        prop::collection::vec((0i64..12, prop::collection::vec(0i64..12, 0..6)), 0..10)
            .prop_map(|v| v.into_iter().map(|(f, ds)| Activity { first_seen: f * DAY, events: days(&ds) }).collect())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

        #[test]
        fn lifecycle_matches_oracle(persons in arb_activity(), first in 0i64..8, count in 1usize..6) {
            let range = Intervals { first, count };
            let got: Vec<[u64; 4]> = lifecycle(&persons, range, day)
                .iter().map(|r| [r.new, r.returning, r.resurrecting, r.dormant]).collect();
            prop_assert_eq!(got, oracle(&persons, range));
        }

        #[test]
        fn stickiness_matches_oracle(persons in arb_activity(), first in 0i64..8, count in 1usize..6) {
            let range = Intervals { first, count };
            let times: Vec<Vec<i64>> = persons.into_iter().map(|a| a.events).collect();
            let rows = stickiness(&times, range, day);
            prop_assert_eq!(rows.len(), count);
            for r in &rows {
                let exactly = times.iter().filter(|ts| {
                    (first..first + count as i64).filter(|&d| ts.iter().any(|&t| day(t) == d)).count() == r.intervals
                }).count() as u64;
                prop_assert_eq!(r.persons, exactly);
            }
            // at_least of 1 is every person active at all in the range
            let active = times.iter().filter(|ts| ts.iter().any(|&t| range.contains(day(t)))).count() as u64;
            prop_assert_eq!(rows[0].at_least, active);
        }
    }
}
