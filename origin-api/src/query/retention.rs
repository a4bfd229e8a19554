//! Retention: cohorts of persons by the period of their start event, and who comes back in each later period.
//!
//! Pure maths over each person's events, walked once: the set of periods with a start event and the set with a
//! return event. Periods come from a function passed in (calendar days, ISO weeks or months in the project's
//! timezone, see `query::time`), so this module never deals with timezones.
//!
//! Definitions (the oracle in the tests loops over them directly):
//! * First time: a person belongs to the cohort of the period of their first start event ever (the caller
//!   includes the first start event even when it is older than the range); persons whose first start is outside
//!   the range are in no cohort.
//! * Recurring: a person belongs to the cohort of every period in the range in which they did the start event.
//! * A cohort member of period `p` is retained in period `p + k` (`k >= 1`) when they did the return event in
//!   that period. Column 0 is the cohort size.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::filter::{Scope, SqlBuilder};
use super::funnel::{
    common_where, refuse_compare, scan_sequences, sequences_fit, stream_rows, EventSpec, PersonGroups, Source,
};
use super::model::{Common, QueryError};
use super::time::Interval;

/// Which start events make a cohort.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RetentionMode {
    /// The first start event of the person, ever.
    #[default]
    FirstTime,
    /// Every period with a start event.
    Recurring,
}

/// One event of a person, its filters already evaluated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionEvent {
    /// Milliseconds since the Unix epoch.
    pub ts: i64,
    /// Matches the start event and its filters.
    pub is_start: bool,
    /// Matches the return event and its filters.
    pub is_return: bool,
}

/// A person's events, in any order.
#[derive(Debug, Clone, PartialEq)]
pub struct PersonEvents {
    /// The person.
    pub person: String,
    /// The events.
    pub events: Vec<RetentionEvent>,
}

/// Settings of one retention table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionConfig {
    /// Cohort rule.
    pub mode: RetentionMode,
    /// Index of the first period of the range (as returned by the period function).
    pub first_period: i64,
    /// Number of periods in the range (cohorts and columns).
    pub periods: usize,
}

/// One row of the cohort table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Cohort {
    /// Period index (from the period function).
    pub period: i64,
    /// Persons in the cohort.
    pub size: u64,
    /// Persons retained `k` periods later, for `k` from 0 (the size) to the end of the range.
    pub values: Vec<u64>,
    /// `values[k] / size * 100` (0 for an empty cohort).
    pub percentages: Vec<f64>,
}

/// The cohort table, one row per period of the range.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RetentionResult {
    /// One row per period, oldest first.
    pub cohorts: Vec<Cohort>,
}

/// A cohort table being summed up, one person at a time.
#[derive(Debug, Clone)]
pub struct Table {
    cfg: RetentionConfig,
    /// `values[c][k]`: persons of cohort `c` retained `k` periods later.
    values: Vec<Vec<u64>>,
}

impl Table {
    /// An empty table.
    pub fn new(cfg: RetentionConfig) -> Table {
        Table { cfg, values: vec![vec![0u64; cfg.periods]; cfg.periods] }
    }

    /// Adds one person's events; `period_of` maps a timestamp (ms) to its period index.
    pub fn add(&mut self, events: &[RetentionEvent], period_of: impl Fn(i64) -> i64) {
        let (first, n) = (self.cfg.first_period, self.cfg.periods);
        let offset = |p: i64| -> Option<usize> {
            let k = p.checked_sub(first)?;
            usize::try_from(k).ok().filter(|&k| k < n)
        };
        let mut starts = BTreeSet::new();
        let mut returns = BTreeSet::new();
        let mut first_start: Option<i64> = None;
        for e in events {
            if e.is_start {
                first_start = Some(first_start.map_or(e.ts, |f| f.min(e.ts)));
                if let Some(k) = offset(period_of(e.ts)) {
                    starts.insert(k);
                }
            }
            if e.is_return {
                if let Some(k) = offset(period_of(e.ts)) {
                    returns.insert(k);
                }
            }
        }
        let cohorts: Vec<usize> = match self.cfg.mode {
            RetentionMode::Recurring => starts.into_iter().collect(),
            RetentionMode::FirstTime => first_start.and_then(|ts| offset(period_of(ts))).into_iter().collect(),
        };
        for c in cohorts {
            self.values[c][0] += 1;
            for &r in returns.range(c + 1..) {
                self.values[c][r - c] += 1;
            }
        }
    }

    /// The finished table.
    pub fn finish(self) -> RetentionResult {
        let (first, n) = (self.cfg.first_period, self.cfg.periods);
        let cohorts = self
            .values
            .into_iter()
            .enumerate()
            .map(|(c, mut row)| {
                row.truncate(n - c);
                let size = row[0];
                let percentages =
                    row.iter().map(|&v| if size == 0 { 0.0 } else { v as f64 * 100.0 / size as f64 }).collect();
                Cohort { period: first + c as i64, size, values: row, percentages }
            })
            .collect();
        RetentionResult { cohorts }
    }
}

/// Computes the cohort table; `period_of` maps a timestamp (ms) to its period index.
pub fn retention(persons: &[PersonEvents], cfg: &RetentionConfig, period_of: impl Fn(i64) -> i64) -> RetentionResult {
    let mut table = Table::new(*cfg);
    for p in persons {
        table.add(&p.events, &period_of);
    }
    table.finish()
}

// ---- The query ----

/// Most periods of a retention table (cohorts and columns).
pub const MAX_PERIODS: usize = 120;

/// The retention part of `POST /v1/query/retention`; the common `interval` (day, week or month) is the period.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionQuery {
    /// The event that puts a person in a cohort.
    pub start: EventSpec,
    /// The event that counts as coming back; the start event when absent.
    #[serde(default, rename = "return")]
    pub returning: Option<EventSpec>,
    /// `first_time` (default) or `recurring`.
    #[serde(default)]
    pub mode: RetentionMode,
}

/// One cohort row of the answer.
#[derive(Debug, Clone, Serialize)]
pub struct CohortRow {
    /// The period's label (its first local day).
    pub period: String,
    /// Start of the period, UTC.
    pub start: chrono::DateTime<chrono::Utc>,
    /// Persons in the cohort.
    pub size: u64,
    /// Persons retained `k` periods later (`values[0]` is the size).
    pub values: Vec<u64>,
    /// The same as percentages of the size.
    pub percentages: Vec<f64>,
}

/// The answer of `POST /v1/query/retention`.
#[derive(Debug, Clone, Serialize)]
pub struct RetentionResponse {
    /// Zone of the periods.
    pub timezone: String,
    /// Period width.
    pub interval: Interval,
    /// Cohort rule.
    pub mode: RetentionMode,
    /// One row per period of the range.
    pub cohorts: Vec<CohortRow>,
}

/// The index of the bucket holding `ts` (ms), given the bucket starts and the range end: -1 before the range,
/// `starts.len()` at or after its end.
pub fn bucket_index(starts: &[i64], end: i64, ts: i64) -> i64 {
    if starts.first().is_none_or(|&s| ts < s) {
        return -1;
    }
    if ts >= end {
        return starts.len() as i64;
    }
    starts.partition_point(|&s| s <= ts) as i64 - 1
}

/// Runs a retention table: one statement returns each person's start and return events in the range (and, for
/// first-time cohorts, their first start event ever), ordered by person; each person is walked once. Start and
/// return events given by name alone are read from the per-person sequences.
pub async fn run(
    pool: &deadpool_postgres::Pool,
    project_id: i64,
    common: &Common,
    q: &RetentionQuery,
) -> Result<RetentionResponse, QueryError> {
    run_from(pool, project_id, common, q, Source::Auto).await
}

/// [`run`] reading from the given source.
pub async fn run_from(
    pool: &deadpool_postgres::Pool,
    project_id: i64,
    common: &Common,
    q: &RetentionQuery,
    source: Source,
) -> Result<RetentionResponse, QueryError> {
    refuse_compare(common, "retention")?;
    if common.breakdown.is_some() {
        return Err(QueryError::invalid("breakdown", "breakdown is not supported by retention"));
    }
    let buckets = common.buckets(&common.range)?;
    if buckets.len() > MAX_PERIODS {
        return Err(QueryError::invalid(
            "interval",
            format!("more than {MAX_PERIODS} periods; choose a wider interval"),
        ));
    }
    let mut b = SqlBuilder::new();
    let person = b.person_key(Scope::Events);
    let pid = b.bind(project_id);
    let from = b.bind(common.range.from);
    let to = b.bind(common.range.to);
    let start = q.start.sql(&mut b, "start")?;
    let ret = match &q.returning {
        Some(r) => r.sql(&mut b, "return")?,
        None => start.clone(),
    };
    let tail = common_where(&mut b, common)?;
    let joins = b.joins(Scope::Events);
    let mut sql = format!(
        "SELECT person, ts, is_start, is_return FROM (\
           SELECT {person} AS person, e.timestamp AS ts, {start} AS is_start, {ret} AS is_return \
           FROM events e{joins} WHERE e.project_id = {pid} AND e.timestamp >= {from} AND e.timestamp < {to}{tail}\
         ) x WHERE is_start OR is_return"
    );
    if q.mode == RetentionMode::FirstTime {
        // Whoever started before the range is in no first-time cohort: their earliest start is enough.
        sql.push_str(&format!(
            " UNION ALL SELECT {person}, min(e.timestamp), true, false FROM events e{joins} \
              WHERE e.project_id = {pid} AND e.timestamp < {from}{tail} AND {start} GROUP BY 1"
        ));
    }
    sql.push_str(" ORDER BY 1");

    let starts: Vec<i64> = buckets.iter().map(|x| x.start.timestamp_millis()).collect();
    let end = common.range.to.timestamp_millis();
    let cfg = RetentionConfig { mode: q.mode, first_period: 0, periods: buckets.len() };
    let period_of = |ts: i64| bucket_index(&starts, end, ts);
    // Rows of one person at a time, added to the table as each person ends.
    let mut table = Table::new(cfg);
    let mut groups: PersonGroups<RetentionEvent> = PersonGroups::default();
    let mut done = |_person: String, events: Vec<RetentionEvent>| table.add(&events, period_of);
    let start_name = q.start.name_only();
    let return_name = match &q.returning {
        Some(r) => r.name_only(),
        None => start_name,
    };
    if let (true, Some(start_name), Some(return_name)) = (sequences_fit(common, source), start_name, return_name) {
        let (from_us, to_us) = (common.range.from.timestamp_micros(), common.range.to.timestamp_micros());
        let first_time = q.mode == RetentionMode::FirstTime;
        let include_bots = common.include_bots;
        let scan = crate::store::sequences::Scan {
            project_id,
            from: common.range.from,
            until: common.range.to,
            earlier: first_time.then(|| start_name.to_owned()),
            paths: false,
        };
        let mut by_name = crate::store::sequences::NameCache::default();
        scan_sequences(
            pool,
            &scan,
            |e| {
                if e.bot && !include_bots || e.ts_us >= to_us {
                    return None;
                }
                let (is_start, is_return) = by_name.get(&e, |name| (name == start_name, name == return_name));
                if e.ts_us < from_us {
                    // Only a first-time cohort looks back, and only for the start event.
                    return (first_time && is_start).then_some((true, false));
                }
                (is_start || is_return).then_some((is_start, is_return))
            },
            |person, events| {
                let events: Vec<RetentionEvent> = events
                    .into_iter()
                    .map(|(ts, (is_start, is_return))| RetentionEvent { ts: ts.div_euclid(1000), is_start, is_return })
                    .collect();
                done(person, events)
            },
        )
        .await?;
        return Ok(response(common, q, table, &buckets));
    }
    stream_rows(pool, &sql, &b, |row| {
        let person: &str = row.try_get(0)?;
        let ts: chrono::DateTime<chrono::Utc> = row.try_get(1)?;
        let ev = RetentionEvent { ts: ts.timestamp_millis(), is_start: row.try_get(2)?, is_return: row.try_get(3)? };
        groups.push(person, ev, &mut done);
        Ok(())
    })
    .await?;
    groups.flush(&mut done);
    Ok(response(common, q, table, &buckets))
}

/// The answer from the finished table.
fn response(common: &Common, q: &RetentionQuery, table: Table, buckets: &[super::time::Bucket]) -> RetentionResponse {
    let cohorts = table
        .finish()
        .cohorts
        .into_iter()
        .zip(buckets)
        .map(|(c, bucket)| CohortRow {
            period: bucket.label.clone(),
            start: bucket.start,
            size: c.size,
            values: c.values,
            percentages: c.percentages,
        })
        .collect();
    RetentionResponse { timezone: common.timezone.clone(), interval: common.interval, mode: q.mode, cohorts }
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

    /// Events from `(day, start, return)`.
    fn person(id: &str, spec: &[(i64, bool, bool)]) -> PersonEvents {
        PersonEvents {
            person: id.into(),
            events: spec
                .iter()
                .map(|&(d, s, r)| RetentionEvent { ts: d * DAY + 1000, is_start: s, is_return: r })
                .collect(),
        }
    }

    fn check(persons: &[PersonEvents], mode: RetentionMode, expected: &[&[u64]]) {
        let r = retention(persons, &RetentionConfig { mode, first_period: 10, periods: expected.len() }, day);
        let got: Vec<Vec<u64>> = r.cohorts.iter().map(|c| c.values.clone()).collect();
        let want: Vec<Vec<u64>> = expected.iter().map(|v| v.to_vec()).collect();
        assert_eq!(got, want, "{mode:?}");
    }

    #[test]
    fn cohort_tables() {
        let a = person("a", &[(10, true, true), (11, false, true), (13, true, true)]);
        let b = person("b", &[(11, true, false), (12, false, true)]);
        let old = person("old", &[(3, true, false), (11, true, true), (12, false, true)]);
        let ps = [a, b, old];
        check(&ps, RetentionMode::FirstTime, &[&[1, 1, 0, 1], &[1, 1, 0], &[0, 0], &[0]]);
        check(&ps, RetentionMode::Recurring, &[&[1, 1, 0, 1], &[2, 2, 0], &[0, 0], &[1]]);
        // a return before the start does not count; returns outside the range do not count
        let c = person("c", &[(12, false, true), (13, true, false), (20, false, true)]);
        check(&[c], RetentionMode::FirstTime, &[&[0, 0, 0, 0], &[0, 0, 0], &[0, 0], &[1]]);
    }

    #[test]
    fn percentages() {
        let ps = [person("a", &[(10, true, false), (11, false, true)]), person("b", &[(10, true, false)])];
        let r = retention(&ps, &RetentionConfig { mode: RetentionMode::FirstTime, first_period: 10, periods: 2 }, day);
        assert_eq!(r.cohorts[0].percentages, [100.0, 50.0]);
        assert_eq!(r.cohorts[1].percentages, [0.0]);
        assert_eq!(r.cohorts[1].period, 11);
    }

    #[test]
    fn bucket_index_cases() {
        let starts = [10, 20, 35];
        for (ts, want) in [(9, -1), (10, 0), (19, 0), (20, 1), (34, 1), (35, 2), (49, 2), (50, 3), (99, 3)] {
            assert_eq!(bucket_index(&starts, 50, ts), want, "{ts}");
        }
        assert_eq!(bucket_index(&[], 50, 10), -1);
    }

    /// Naive oracle: for every cohort period and offset, loop over persons and events.
    fn oracle(persons: &[PersonEvents], cfg: &RetentionConfig) -> Vec<Vec<u64>> {
        let n = cfg.periods as i64;
        (0..n)
            .map(|c| {
                let p = cfg.first_period + c;
                let member = |pe: &PersonEvents| match cfg.mode {
                    RetentionMode::Recurring => pe.events.iter().any(|e| e.is_start && day(e.ts) == p),
                    RetentionMode::FirstTime => {
                        pe.events.iter().filter(|e| e.is_start).map(|e| day(e.ts)).min() == Some(p)
                    }
                };
                (0..n - c)
                    .map(|k| {
                        persons
                            .iter()
                            .filter(|pe| member(pe))
                            .filter(|pe| k == 0 || pe.events.iter().any(|e| e.is_return && day(e.ts) == p + k))
                            .count() as u64
                    })
                    .collect()
            })
            .collect()
    }

    fn arb_persons() -> impl Strategy<Value = Vec<PersonEvents>> {
        prop::collection::vec(prop::collection::vec((0i64..20, any::<bool>(), any::<bool>()), 0..8), 0..10)
            .prop_map(|ps| ps.iter().enumerate().map(|(i, spec)| person(&format!("p{i}"), spec)).collect())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

        #[test]
        fn matches_oracle(persons in arb_persons(), recurring in any::<bool>(), first in 5i64..12, periods in 1usize..8) {
            let mode = if recurring { RetentionMode::Recurring } else { RetentionMode::FirstTime };
            let cfg = RetentionConfig { mode, first_period: first, periods };
            let r = retention(&persons, &cfg, day);
            let got: Vec<Vec<u64>> = r.cohorts.iter().map(|c| c.values.clone()).collect();
            prop_assert_eq!(got, oracle(&persons, &cfg));
        }

        /// First-time cohort sizes add up to the distinct persons whose first start is in range.
        #[test]
        fn cohort_sizes_are_distinct_starters(persons in arb_persons(), first in 5i64..12, periods in 1usize..8) {
            let cfg = RetentionConfig { mode: RetentionMode::FirstTime, first_period: first, periods };
            let r = retention(&persons, &cfg, day);
            let starters = persons.iter().filter(|p| {
                p.events.iter().filter(|e| e.is_start).map(|e| day(e.ts)).min()
                    .is_some_and(|d| d >= first && d < first + periods as i64)
            }).count() as u64;
            prop_assert_eq!(r.cohorts.iter().map(|c| c.size).sum::<u64>(), starters);
            for c in &r.cohorts {
                prop_assert!(c.values.iter().all(|&v| v <= c.size));
            }
        }
    }
}
