//! Daily rollups: dirty marks written at ingest and deletion, and the job that recomputes the
//! marked days from the raw events (safe with several replicas).
//!
//! A mark is a UTC day (cheap to compute at ingest, independent of the project's zone); the job
//! turns it into the project-local days it overlaps. Local day boundaries come from
//! [`crate::query::time::day_start`], the same function the raw queries bucket with, so a rollup
//! row's day and a raw query's bucket can never disagree (DST days included).

use std::collections::BTreeSet;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use chrono_tz::Tz;
use deadpool_postgres::Pool;
use protocol::forward::EnrichedEvent;

use super::StoreError;
use crate::ingest::enrich::Derived;
use crate::query::time::{day_start, local_date};

/// Dirty UTC days taken per job transaction: small, so each transaction (and the advisory locks
/// of the local days it rebuilds) is short; ingest never waits on it, as marks are appended.
pub const CHUNK: i64 = 4;

/// Appends marks (a log, V13): no row is shared between writers, so marking never waits.
const MARK: &str = "INSERT INTO rollup_dirty (project_id, utc_day)
  SELECT * FROM unnest($1::int8[], $2::date[])";

/// The distinct (project, UTC day) pairs of some events, sorted (so concurrent writers lock the
/// marks in one order and never deadlock on them).
pub fn utc_days(events: impl Iterator<Item = (i64, DateTime<Utc>)>) -> (Vec<i64>, Vec<NaiveDate>) {
    let pairs: BTreeSet<(i64, NaiveDate)> = events.map(|(p, t)| (p, t.date_naive())).collect();
    pairs.into_iter().unzip()
}

/// Marks the UTC days of the new events of a write group dirty, inside the group's transaction
/// (so a committed event always has its mark): one statement for the handful of days a group has.
pub async fn mark_dirty(
    tx: &deadpool_postgres::Transaction<'_>,
    events: &[(i64, &EnrichedEvent, &Derived)],
) -> Result<(), StoreError> {
    let (projects, days) = utc_days(events.iter().map(|(p, e, _)| (*p, e.timestamp)));
    if projects.is_empty() {
        return Ok(());
    }
    let stmt = tx.prepare_cached(MARK).await?;
    tx.execute(&stmt, &[&projects, &days]).await?;
    Ok(())
}

/// Marks every UTC day of `[from, to)` dirty for a project: for writers that bypass the ingest
/// path (bulk loads straight into `events`), and after a project's timezone changes.
pub async fn mark_range_dirty(
    client: &impl deadpool_postgres::GenericClient,
    project_id: i64,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<(), StoreError> {
    let mut days = Vec::new();
    let mut d = from.date_naive();
    while d <= to.date_naive() {
        days.push(d);
        d += Duration::days(1);
    }
    let projects = vec![project_id; days.len()];
    client.execute(MARK, &[&projects, &days]).await?;
    Ok(())
}

/// The local calendar days (in `tz`) that overlap the UTC day `utc_day`: one or two.
pub fn local_days(tz: &Tz, utc_day: NaiveDate) -> Vec<NaiveDate> {
    let start = utc_day.and_time(chrono::NaiveTime::MIN).and_utc();
    let last = start + Duration::days(1) - Duration::nanoseconds(1);
    let (a, b) = (local_date(tz, start), local_date(tz, last));
    let mut out = vec![a];
    let mut d = a;
    while d < b {
        d += Duration::days(1);
        out.push(d);
    }
    out
}

/// Recomputes R1 and R2 of one local day from the raw events of `[day_start(day), day_start(day + 1))`.
async fn recompute_day(
    tx: &deadpool_postgres::Transaction<'_>,
    project_id: i64,
    tz: &Tz,
    day: NaiveDate,
) -> Result<(), StoreError> {
    // Two jobs whose dirty UTC days overlap one local day must not rebuild it at once (their
    // DELETE + INSERT would interleave); different keys than the person locks (text hash).
    tx.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", &[&format!("nexus_rollup:{project_id}:{day}")])
        .await?;
    let from = day_start(tz, day);
    let to = day_start(tz, day + Duration::days(1));
    tx.execute("DELETE FROM rollup_daily_counts WHERE project_id = $1 AND day = $2", &[&project_id, &day]).await?;
    tx.execute("DELETE FROM rollup_daily_persons WHERE project_id = $1 AND day = $2", &[&project_id, &day]).await?;
    tx.execute(
        r#"INSERT INTO rollup_daily_counts (project_id, day, name, event_type, path, country, channel, device_type,
             browser, os, utm_source, is_bot, events)
           SELECT $1, $2::date, name, event_type, path, country, channel, device_type, browser, os, utm_source, is_bot,
             count(*)
           FROM events WHERE project_id = $1 AND "timestamp" >= $3 AND "timestamp" < $4
           GROUP BY name, event_type, path, country, channel, device_type, browser, os, utm_source, is_bot"#,
        &[&project_id, &day, &from, &to],
    )
    .await?;
    tx.execute(
        r#"INSERT INTO rollup_daily_persons (project_id, day, distinct_id, country, is_bot, events)
           SELECT $1, $2::date, distinct_id, country, is_bot, count(*)
           FROM events WHERE project_id = $1 AND "timestamp" >= $3 AND "timestamp" < $4
           GROUP BY distinct_id, country, is_bot"#,
        &[&project_id, &day, &from, &to],
    )
    .await?;
    recompute_sets(tx, project_id, day, (from, to)).await?;
    Ok(())
}

/// The event columns the rollup sets keep, one dimension at a time (V15).
pub const SET_DIMS: &[&str] =
    &["path", "country", "channel", "device_type", "browser", "os", "utm_source", "referrer_domain"];

/// One rollup-set row being built: events and distinct-id numbers.
type SetRows = ahash::AHashMap<(String, &'static str, Option<String>), (i64, roaring::RoaringBitmap)>;

/// Adds `events` events of distinct-id number `num` to every row they belong to: each selector
/// (every event, the event's type, its name) with no dimension and with each of [`SET_DIMS`].
fn add_to_sets(rows: &mut SetRows, num: u32, name: &str, event_type: &str, dims: &[Option<String>], events: i64) {
    for sel in [String::new(), format!("t:{event_type}"), format!("n:{name}")] {
        let keys = std::iter::once(("", None)).chain(SET_DIMS.iter().copied().zip(dims.iter().cloned()));
        for (dim, value) in keys {
            let row = rows.entry((sel.clone(), dim, value)).or_default();
            row.0 += events;
            row.1.insert(num);
        }
    }
}

/// Rebuilds the rollup sets of one local day (`[from, to)`), bots left out; the distinct ids
/// of the day are numbered first.
async fn recompute_sets(
    tx: &deadpool_postgres::Transaction<'_>,
    project_id: i64,
    day: NaiveDate,
    bounds: (DateTime<Utc>, DateTime<Utc>),
) -> Result<(), StoreError> {
    super::sequences::lock_numbers(tx, project_id).await?;
    let of_day = "FROM events e WHERE e.project_id = $1 AND e.timestamp >= $2 AND e.timestamp < $3";
    super::sequences::number(tx, project_id, None, &format!("SELECT DISTINCT e.distinct_id {of_day}"), bounds).await?;
    tx.execute("DELETE FROM rollup_daily_sets WHERE project_id = $1 AND day = $2", &[&project_id, &day]).await?;
    let dims: String = SET_DIMS.iter().map(|d| format!(", e.{d}")).collect();
    let source = tx
        .query(
            &format!(
                "SELECT d.num, e.name, e.event_type{dims}, count(*) FROM events e                  JOIN sequence_distinct_ids d ON d.project_id = e.project_id AND d.distinct_id = e.distinct_id                  WHERE e.project_id = $1 AND e.timestamp >= $2 AND e.timestamp < $3 AND NOT e.is_bot                  GROUP BY d.num, e.name, e.event_type{dims}"
            ),
            &[&project_id, &bounds.0, &bounds.1],
        )
        .await?;
    let mut rows = SetRows::default();
    for r in &source {
        let num: i32 = r.try_get(0)?;
        let dims: Vec<Option<String>> = (0..SET_DIMS.len()).map(|i| r.try_get(3 + i)).collect::<Result<_, _>>()?;
        let events: i64 = r.try_get(3 + SET_DIMS.len())?;
        add_to_sets(&mut rows, u32::try_from(num).unwrap_or(0), r.try_get(1)?, r.try_get(2)?, &dims, events);
    }
    let n = rows.len();
    let (mut sels, mut dim_names, mut values, mut counts, mut sets) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for ((sel, dim, value), (events, set)) in rows {
        let mut bytes = Vec::with_capacity(set.serialized_size());
        // Writing into a Vec cannot fail.
        let _ = set.serialize_into(&mut bytes);
        sels.push(sel);
        dim_names.push(dim);
        values.push(value);
        counts.push(events);
        sets.push(bytes);
    }
    tx.execute(
        "INSERT INTO rollup_daily_sets (project_id, day, sel, dim, value, events, dids)
         SELECT $1, $2, * FROM unnest($3::text[], $4::text[], $5::text[], $6::int8[], $7::bytea[])",
        &[&project_id, &day, &sels, &dim_names, &values, &counts, &sets],
    )
    .await?;
    Ok(())
}

/// Takes up to [`CHUNK`] dirty days (marked no later than `max_seq`) with every mark of theirs
/// no other replica holds, recomputes their local days and deletes exactly the marks it read, in
/// one transaction. A mark committed after that read is not deleted: its events may be missing
/// from the recompute, so its day stays dirty. Returns the distinct days done.
async fn run_chunk(pool: &Pool, max_seq: i64) -> Result<usize, StoreError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let rows = tx
        .query(
            "WITH days AS (SELECT DISTINCT project_id, utc_day FROM rollup_dirty WHERE seq <= $1
                           ORDER BY project_id, utc_day LIMIT $2)
             SELECT d.project_id, d.utc_day, d.seq, p.timezone FROM rollup_dirty d
             JOIN days ON days.project_id = d.project_id AND days.utc_day = d.utc_day
             LEFT JOIN projects p ON p.project_id = d.project_id
             ORDER BY d.project_id, d.seq FOR UPDATE OF d SKIP LOCKED",
            &[&max_seq, &CHUNK],
        )
        .await?;
    if rows.is_empty() {
        tx.commit().await?;
        return Ok(0);
    }
    let mut marks: Vec<(i64, NaiveDate, i64)> = Vec::with_capacity(rows.len());
    // Sorted: advisory locks are always taken in one order across jobs.
    let mut days: BTreeSet<(i64, NaiveDate, String)> = BTreeSet::new();
    for r in &rows {
        let (project_id, utc_day, seq): (i64, NaiveDate, i64) = (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?);
        let zone: Option<String> = r.try_get(3)?;
        marks.push((project_id, utc_day, seq));
        // A project that is gone has nothing to roll up; its mark is just cleared.
        if let Some(zone) = zone {
            let tz: Tz = zone.parse().unwrap_or(Tz::UTC);
            for d in local_days(&tz, utc_day) {
                days.insert((project_id, d, zone.clone()));
            }
        }
    }
    for (project_id, day, zone) in &days {
        let tz: Tz = zone.parse().unwrap_or(Tz::UTC);
        recompute_day(&tx, *project_id, &tz, *day).await?;
    }
    let utc_days: BTreeSet<(i64, NaiveDate)> = marks.iter().map(|(p, d, _)| (*p, *d)).collect();
    for (project_id, utc_day) in &utc_days {
        super::sequences::rebuild_day(&tx, *project_id, *utc_day).await?;
    }
    let (projects, seqs): (Vec<i64>, Vec<i64>) = marks.iter().map(|(p, _, s)| (*p, *s)).unzip();
    // Exactly the marks read above: a mark appended since then stays, and its day with it.
    tx.execute(
        "DELETE FROM rollup_dirty d USING unnest($1::int8[], $2::int8[]) AS m(p, s)
         WHERE d.project_id = m.p AND d.seq = m.s",
        &[&projects, &seqs],
    )
    .await?;
    tx.commit().await?;
    Ok(utc_days.len())
}

/// Brings the rollups up to date with every mark present when it starts, in chunks of
/// [`CHUNK`] marks per transaction; marks other replicas hold are skipped (they do them).
/// Returns the marks this call processed.
pub async fn run_pending(pool: &Pool) -> Result<usize, StoreError> {
    // Marks set after this point wait for the next run: a steady ingest re-marking today must
    // not keep one run going forever.
    let max_seq: i64 =
        pool.get().await?.query_one("SELECT coalesce(max(seq), 0)::int8 FROM rollup_dirty", &[]).await?.try_get(0)?;
    let mut done = 0;
    loop {
        let n = run_chunk(pool, max_seq).await?;
        if n == 0 {
            return Ok(done);
        }
        done += n;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn check(zone: &str, utc_day: &str, expected: &[&str]) {
        let tz: Tz = zone.parse().unwrap();
        let got: Vec<String> = local_days(&tz, utc_day.parse().unwrap()).iter().map(|d| d.to_string()).collect();
        assert_eq!(got, expected, "{zone} {utc_day}");
    }

    #[test]
    fn local_days_of_a_utc_day() {
        check("UTC", "2026-03-29", &["2026-03-29"]);
        check("Europe/Berlin", "2026-03-29", &["2026-03-29", "2026-03-30"]);
        check("America/New_York", "2026-03-08", &["2026-03-07", "2026-03-08"]);
        check("Asia/Kolkata", "2026-01-01", &["2026-01-01", "2026-01-02"]);
        check("Pacific/Kiritimati", "2026-01-01", &["2026-01-01", "2026-01-02"]);
        check("Pacific/Pago_Pago", "2026-01-01", &["2025-12-31", "2026-01-01"]);
    }

    #[test]
    fn utc_days_are_distinct_and_sorted() {
        let t = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        let (p, d) = utc_days(
            [(2, t("2026-03-29T23:59:59Z")), (1, t("2026-03-30T00:00:00Z")), (2, t("2026-03-29T00:00:00Z"))]
                .into_iter(),
        );
        assert_eq!(p, vec![1, 2]);
        assert_eq!(d.iter().map(|d| d.to_string()).collect::<Vec<_>>(), vec!["2026-03-30", "2026-03-29"]);
    }
}
