//! Event sequences per UTC day: one narrow row per (project, day) rebuilt from the raw events, and the reader that
//! hands funnels, retention and paths each person's events in the order the raw queries walk them.
//!
//! Exactness: a day is read from `day_sequences` only when its row exists and the day is not marked dirty
//! (`rollup_dirty`); every other day of the range is aggregated from `events`, all in one snapshot, so the reader
//! always sees what the raw events say. Distinct ids are mapped to persons at read time (a distinct id without a
//! mapping is its own person), so identity merges need no rebuild. One array holds a whole day sorted by time
//! then event id, and days are read in order, so appending each event to its person's list keeps every person's
//! events sorted exactly as `ORDER BY timestamp, event_id`, however many distinct ids the person has.

use std::collections::HashMap;

use chrono::{DateTime, NaiveDate, Utc};
use futures_util::StreamExt;
use uuid::Uuid;

use super::idmap::{IdMap, Overlay, Owner, NONE};
use super::StoreError;

/// Midnight UTC starting `day`.
fn day_start(day: NaiveDate) -> DateTime<Utc> {
    day.and_time(chrono::NaiveTime::MIN).and_utc()
}

/// Numbers the values `select` yields (one text column, `$1` the project, `$2`/`$3` the day bounds) that have
/// no number yet, in table `table` (distinct ids) or `sequence_values` of `kind`.
pub(super) async fn number(
    tx: &deadpool_postgres::Transaction<'_>,
    project_id: i64,
    kind: Option<&str>,
    select: &str,
    bounds: (DateTime<Utc>, DateTime<Utc>),
) -> Result<(), StoreError> {
    let sql = match kind {
        None => format!(
            "INSERT INTO sequence_distinct_ids (project_id, distinct_id, num) \
             SELECT $1, v, (SELECT coalesce(max(num), 0) FROM sequence_distinct_ids WHERE project_id = $1) \
                    + row_number() OVER (ORDER BY v) \
             FROM ({select}) x(v) \
             WHERE v IS NOT NULL AND NOT EXISTS (\
               SELECT 1 FROM sequence_distinct_ids s WHERE s.project_id = $1 AND s.distinct_id = x.v)"
        ),
        Some(k) => format!(
            "INSERT INTO sequence_values (project_id, kind, value, num) \
             SELECT $1, '{k}', v, (SELECT coalesce(max(num), 0) FROM sequence_values WHERE project_id = $1 AND kind = '{k}') \
                    + row_number() OVER (ORDER BY v) \
             FROM ({select}) x(v) \
             WHERE v IS NOT NULL AND NOT EXISTS (\
               SELECT 1 FROM sequence_values s WHERE s.project_id = $1 AND s.kind = '{k}' AND s.value = x.v)"
        ),
    };
    tx.execute(&sql, &[&project_id, &bounds.0, &bounds.1]).await?;
    Ok(())
}

/// Numbers are handed out as max + 1: two numberings of one project (two replicas, or the
/// rollup sets and the sequences) must take turns. Held to commit, so numbers become visible in
/// the order they were handed out (the in-memory mapping relies on it: `store::idmap`).
pub(super) async fn lock_numbers(tx: &deadpool_postgres::Transaction<'_>, project_id: i64) -> Result<(), StoreError> {
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended('nexus_sequences:' || $1::int8::text, 0))",
        &[&project_id],
    )
    .await?;
    Ok(())
}

/// Rebuilds the sequences of `utc_day` of a project from the raw events (called by the rollup
/// job for every dirty day, inside its transaction).
pub async fn rebuild_day(
    tx: &deadpool_postgres::Transaction<'_>,
    project_id: i64,
    utc_day: NaiveDate,
) -> Result<(), StoreError> {
    let bounds = (day_start(utc_day), day_start(utc_day + chrono::Days::new(1)));
    lock_numbers(tx, project_id).await?;
    let day = "FROM events e WHERE e.project_id = $1 AND e.timestamp >= $2 AND e.timestamp < $3";
    number(tx, project_id, None, &format!("SELECT DISTINCT e.distinct_id {day}"), bounds).await?;
    number(tx, project_id, Some("n"), &format!("SELECT DISTINCT e.name {day}"), bounds).await?;
    number(tx, project_id, Some("p"), &format!("SELECT DISTINCT e.path {day} AND e.event_type = 'page'"), bounds)
        .await?;
    let order = "ORDER BY e.timestamp, e.event_id";
    tx.execute(
        &format!(
            "INSERT INTO day_sequences (project_id, utc_day, ts, dids, names, paths, bots) \
             SELECT $1, $4, \
               coalesce(string_agg(int8send((extract(epoch FROM e.timestamp) * 1000000)::int8), ''::bytea {order}), ''::bytea), \
               coalesce(string_agg(int4send(d.num), ''::bytea {order}), ''::bytea), \
               coalesce(string_agg(int4send(n.num), ''::bytea {order}), ''::bytea), \
               coalesce(string_agg(int4send(coalesce(p.num, 0)), ''::bytea {order}), ''::bytea), \
               coalesce(string_agg(CASE WHEN e.is_bot THEN '\\x01'::bytea ELSE '\\x00'::bytea END, ''::bytea {order}), ''::bytea) \
             FROM events e \
             JOIN sequence_distinct_ids d ON d.project_id = $1 AND d.distinct_id = e.distinct_id \
             JOIN sequence_values n ON n.project_id = $1 AND n.kind = 'n' AND n.value = e.name \
             LEFT JOIN sequence_values p ON p.project_id = $1 AND p.kind = 'p' AND p.value = e.path \
               AND e.event_type = 'page' \
             WHERE e.project_id = $1 AND e.timestamp >= $2 AND e.timestamp < $3 \
             ON CONFLICT (project_id, utc_day) DO UPDATE SET ts = EXCLUDED.ts, dids = EXCLUDED.dids, \
               names = EXCLUDED.names, paths = EXCLUDED.paths, bots = EXCLUDED.bots"
        ),
        &[&project_id, &bounds.0, &bounds.1, &utc_day],
    )
    .await?;
    Ok(())
}

/// What to read: the events of `[from, until)`, and with `earlier` also the earlier days (first-time retention
/// needs to know who did the start event before the range; the caller keeps what it needs of them).
#[derive(Debug, Clone)]
pub struct Scan {
    /// The project.
    pub project_id: i64,
    /// First instant of interest.
    pub from: DateTime<Utc>,
    /// End of the instants of interest (exclusive).
    pub until: DateTime<Utc>,
    /// Also read the days before `from`; of a raw day, only the events of this name.
    pub earlier: Option<String>,
    /// Read page paths (else they arrive as `None`).
    pub paths: bool,
}

/// One event as the analyses see it.
#[derive(Debug, Clone, Copy)]
pub struct SeqEvent<'a> {
    /// Epoch microseconds.
    pub ts_us: i64,
    /// Event name.
    pub name: &'a str,
    /// The name's number in the project (`sequence_values`), 0 for an event of a raw day: what
    /// [`NameCache`] keys on, so a scan compares each name once, not once per event.
    pub name_num: u32,
    /// The page path of a page event (when the scan reads paths).
    pub path: Option<&'a str>,
    /// The path's number in the project, 0 for none or an event of a raw day (as `name_num`).
    pub path_num: u32,
    /// Flagged as a bot.
    pub bot: bool,
}

/// What a scan's `keep` derives from an event's name (or path), computed once per number
/// (values without a number, from raw days, are derived each time).
#[derive(Debug)]
pub struct NameCache<T> {
    by_num: Vec<Option<T>>,
}

impl<T: Clone> Default for NameCache<T> {
    fn default() -> Self {
        NameCache { by_num: Vec::new() }
    }
}

impl<T: Clone> NameCache<T> {
    /// `derive(e.name)`, from the cache when the name has a number.
    pub fn get(&mut self, e: &SeqEvent<'_>, derive: impl FnOnce(&str) -> T) -> T {
        self.of(e.name_num, e.name, derive)
    }

    /// `derive(value)` for the value numbered `num` (0: no number, derived each time).
    pub fn of(&mut self, num: u32, value: &str, derive: impl FnOnce(&str) -> T) -> T {
        if num == 0 {
            return derive(value);
        }
        let i = num as usize;
        if self.by_num.len() <= i {
            self.by_num.resize(i + 1, None);
        }
        self.by_num[i].get_or_insert_with(|| derive(value)).clone()
    }
}

/// Persons met so far and their kept events, by person number ([`Overlay`]: the mapping's
/// numbers, then numbers of their own for persons of raw days the mapping has not met).
struct People<'m, T> {
    overlay: Overlay<'m>,
    events: Vec<Vec<(i64, T)>>,
    /// Person numbers in the order their first event was kept (the order `done` gets them).
    order: Vec<u32>,
}

impl<'m, T> People<'m, T> {
    fn new(map: &'m IdMap) -> Self {
        let mut events = Vec::new();
        events.resize_with(map.n_persons() as usize, Vec::new);
        People { overlay: Overlay::new(map), events, order: Vec::new() }
    }

    fn push(&mut self, p: u32, item: (i64, T)) {
        let i = p as usize;
        if i >= self.events.len() && p < self.overlay.n_persons() {
            self.events.resize_with(i + 1, Vec::new);
        }
        if let Some(list) = self.events.get_mut(i) {
            if list.is_empty() {
                self.order.push(p);
            }
            list.push(item);
        }
    }
}

/// A per-project number table loaded as a vector indexed by number.
fn by_number(rows: &[tokio_postgres::Row]) -> Result<Vec<Option<String>>, StoreError> {
    let mut out: Vec<Option<String>> = Vec::new();
    for r in rows {
        let num: i32 = r.try_get(0)?;
        let value: String = r.try_get(1)?;
        let i = usize::try_from(num).unwrap_or(0);
        if out.len() <= i {
            out.resize(i + 1, None);
        }
        out[i] = Some(value);
    }
    Ok(out)
}

/// Reads a scan in `tx` (which should be REPEATABLE READ, so every statement sees one snapshot): `keep` turns
/// each event into a payload (or drops it), `done` gets each person with kept events and those events sorted by
/// time then event id, exactly as `ORDER BY timestamp, event_id` over the raw events would.
pub async fn scan<T>(
    tx: &deadpool_postgres::Transaction<'_>,
    s: &Scan,
    map: &IdMap,
    mut keep: impl FnMut(SeqEvent<'_>) -> Option<T>,
    mut done: impl FnMut(String, Vec<(i64, T)>),
) -> Result<(), StoreError> {
    let pid = s.project_id;
    let first_day = s.from.date_naive();
    let last_day = (s.until - chrono::Duration::microseconds(1)).date_naive();
    let with_dirty: bool = tx.query_one("SELECT to_regclass('rollup_dirty') IS NOT NULL", &[]).await?.try_get(0)?;
    let dirty = if with_dirty {
        "AND NOT EXISTS (SELECT 1 FROM rollup_dirty r WHERE r.project_id = $1 AND r.utc_day = g.d::date)"
    } else {
        // Without the dirty marks (migration V8) a built day is trusted: only the rollup job builds days.
        ""
    };
    let lo = if s.earlier.is_some() {
        "least((SELECT (min(e.timestamp) AT TIME ZONE 'UTC')::date FROM events e WHERE e.project_id = $1), $2::date)"
    } else {
        "$2::date"
    };
    let days = tx
        .query(
            &format!(
                "SELECT g.d::date, EXISTS (SELECT 1 FROM day_sequences q WHERE q.project_id = $1 AND q.utc_day = g.d::date) {dirty} \
                 FROM generate_series(({lo})::timestamp, $3::date::timestamp, interval '1 day') g(d) ORDER BY 1"
            ),
            &[&pid, &first_day, &last_day],
        )
        .await?;
    let days: Vec<(NaiveDate, bool)> =
        days.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect::<Result<_, StoreError>>()?;

    let mut persons: People<'_, T> = People::new(map);
    let clean_days: Vec<NaiveDate> = days.iter().filter(|d| d.1).map(|d| d.0).collect();
    if !clean_days.is_empty() {
        // The value numbers, asked for together (pipelined on the connection); distinct-id numbers map to
        // persons through `map`, exact for this transaction's snapshot.
        let values =
            |kind: &str| format!("SELECT num, value FROM sequence_values WHERE project_id = $1 AND kind = '{kind}'");
        let (name_sql, path_sql) = (values("n"), values("p"));
        let by_project: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&pid];
        let (name_rows, path_rows) = tokio::try_join!(tx.query(&name_sql, &by_project), async {
            match s.paths {
                true => tx.query(&path_sql, &by_project).await,
                false => Ok(Vec::new()),
            }
        },)?;
        let names = by_number(&name_rows)?;
        let paths = by_number(&path_rows)?;
        // All stored days in one statement, in day order, decoded as they arrive.
        let sql = format!(
            "SELECT ts, dids, names, {}, bots FROM day_sequences WHERE project_id = $1 AND utc_day = ANY($2) \
             ORDER BY utc_day",
            if s.paths { "paths" } else { "NULL::bytea" }
        );
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&pid, &clean_days];
        let rows = tx.query_raw(&sql, params).await?;
        let mut rows = std::pin::pin!(rows);
        while let Some(row) = rows.next().await {
            let row = row?;
            let ts: &[u8] = row.try_get(0)?;
            let dids: &[u8] = row.try_get(1)?;
            let nums: &[u8] = row.try_get(2)?;
            let pnums: Option<&[u8]> = row.try_get(3)?;
            let bots: &[u8] = row.try_get(4)?;
            let int4 = |b: &[u8], i: usize| -> Option<usize> {
                let v = i32::from_be_bytes(b.get(4 * i..4 * i + 4)?.try_into().ok()?);
                usize::try_from(v).ok()
            };
            for (i, chunk) in ts.chunks_exact(8).enumerate() {
                let Ok(bytes) = chunk.try_into() else { continue };
                let ts_us = i64::from_be_bytes(bytes);
                let name_num = int4(nums, i).unwrap_or(0);
                let name = names.get(name_num).and_then(Option::as_deref).unwrap_or("");
                let path_num = pnums.and_then(|v| int4(v, i)).unwrap_or(0);
                let path = paths.get(path_num).and_then(Option::as_deref);
                let path_num = if path.is_some() { u32::try_from(path_num).unwrap_or(0) } else { 0 };
                let name_num = u32::try_from(name_num).unwrap_or(0);
                let bot = bots.get(i).is_some_and(|&b| b != 0);
                let ev = SeqEvent { ts_us, name, name_num, path, path_num, bot };
                // The person only for kept events: the mapping is large, its reads miss the cache.
                if let Some(t) = keep(ev) {
                    let p = int4(dids, i).and_then(|d| u32::try_from(d).ok()).map_or(NONE, |d| map.person_of(d));
                    if p != NONE {
                        persons.push(p, (ts_us, t));
                    }
                }
            }
        }
    }

    let order = "ORDER BY e.timestamp, e.event_id";
    let raw = tx
        .prepare(&format!(
            "SELECT array_agg((extract(epoch FROM e.timestamp) * 1000000)::int8 {order}), array_agg(e.distinct_id {order}), \
                    array_agg(e.name {order}), array_agg(CASE WHEN e.event_type = 'page' THEN e.path END {order}), \
                    array_agg(e.is_bot {order}), array_agg(pd.person_id {order}), array_agg(sd.num {order}) \
             FROM events e LEFT JOIN person_distinct_ids pd \
               ON pd.project_id = e.project_id AND pd.distinct_id = e.distinct_id \
             LEFT JOIN sequence_distinct_ids sd ON sd.project_id = e.project_id AND sd.distinct_id = e.distinct_id \
             WHERE e.project_id = $1 AND e.timestamp >= $2 AND e.timestamp < $3 \
               AND (e.timestamp >= $4 OR e.name = $5::text)"
        ))
        .await?;
    let mut mixed = false;
    for day in days.iter().filter(|d| !d.1).map(|d| d.0) {
        // Of a raw day only what `keep` could want: the range, and before it the `earlier` events.
        let start = if s.earlier.is_some() { day_start(day) } else { day_start(day).max(s.from) };
        let end = day_start(day + chrono::Days::new(1)).min(s.until);
        let row = tx.query_one(&raw, &[&pid, &start, &end, &s.from, &s.earlier]).await?;
        let ts: Option<Vec<i64>> = row.try_get(0)?;
        let dids: Option<Vec<&str>> = row.try_get(1)?;
        let nms: Option<Vec<&str>> = row.try_get(2)?;
        let pths: Option<Vec<Option<&str>>> = row.try_get(3)?;
        let bots: Option<Vec<bool>> = row.try_get(4)?;
        let pids: Option<Vec<Option<Uuid>>> = row.try_get(5)?;
        let nums: Option<Vec<Option<i32>>> = row.try_get(6)?;
        let (Some(ts), Some(dids), Some(nms), Some(pths), Some(bots), Some(pids), Some(nums)) =
            (ts, dids, nms, pths, bots, pids, nums)
        else {
            continue;
        };
        mixed |= !clean_days.is_empty();
        for (i, &ts_us) in ts.iter().enumerate() {
            let p = persons.overlay.person(
                pids.get(i).copied().flatten(),
                nums.get(i).copied().flatten(),
                dids.get(i).copied().unwrap_or(""),
            );
            let ev = SeqEvent {
                ts_us,
                name_num: 0,
                path_num: 0,
                name: nms.get(i).copied().unwrap_or(""),
                path: if s.paths { pths.get(i).copied().flatten() } else { None },
                bot: bots.get(i).copied().unwrap_or(false),
            };
            if let Some(t) = keep(ev) {
                persons.push(p, (ts_us, t));
            }
        }
    }
    if mixed {
        // Stored and raw days were appended apart. Events of two days never tie on time, and a day's events came
        // from one array in order, so a stable sort by time restores (time, event id) order.
        for &p in &persons.order {
            if let Some(list) = persons.events.get_mut(p as usize) {
                list.sort_by_key(|e| e.0);
            }
        }
    }
    // The spelling of the raw queries' person key; distinct ids that are their own person are
    // looked up by number, only for the persons handed over.
    let n_mapped = map.n_persons();
    let own: Vec<i32> = persons
        .order
        .iter()
        .filter(|&&p| p < n_mapped)
        .filter_map(|&p| match map.owner(p) {
            Some(Owner::Did(num)) => Some(num),
            _ => None,
        })
        .collect();
    let mut did_names: HashMap<i32, String> = HashMap::new();
    if !own.is_empty() {
        let rows = tx
            .query(
                "SELECT num, distinct_id FROM sequence_distinct_ids WHERE project_id = $1 AND num = ANY($2)",
                &[&pid, &own],
            )
            .await?;
        for r in rows {
            did_names.insert(r.try_get(0)?, r.try_get(1)?);
        }
    }
    let People { mut events, order, overlay } = persons;
    for p in order {
        let key = if p < n_mapped {
            match map.owner(p) {
                Some(Owner::Person(id)) => format!("p:{id}"),
                Some(Owner::Did(num)) => format!("d:{}", did_names.get(&num).map_or("", String::as_str)),
                None => continue,
            }
        } else {
            match overlay.extra_key(p) {
                Some(k) => k.to_owned(),
                None => continue,
            }
        };
        if let Some(list) = events.get_mut(p as usize) {
            done(key, std::mem::take(list));
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn persons_are_listed_in_the_order_first_kept() {
        let map = IdMap::from_pairs(&[(1, None), (2, None)]);
        let mut people: People<'_, ()> = People::new(&map);
        let extra = people.overlay.person(None, None, "new");
        for p in [extra, map.person_of(2), extra, map.person_of(1)] {
            people.push(p, (0, ()));
        }
        assert_eq!(people.order, [extra, map.person_of(2), map.person_of(1)]);
        assert_eq!(people.events[extra as usize].len(), 2);
    }

    #[test]
    fn names_are_derived_once_per_number() {
        let mut cache: NameCache<usize> = NameCache::default();
        let mut calls = 0;
        let ev = |name: &'static str, name_num: u32| SeqEvent {
            ts_us: 0,
            name,
            name_num,
            path: None,
            path_num: 0,
            bot: false,
        };
        for (name, num, want) in [("a", 3, 1), ("a", 3, 1), ("bb", 1, 2), ("a", 3, 1), ("ccc", 0, 3), ("ccc", 0, 3)] {
            assert_eq!(
                cache.get(&ev(name, num), |n| {
                    calls += 1;
                    n.len()
                }),
                want
            );
        }
        assert_eq!(calls, 4, "a and bb once each, the unnumbered name every time");
    }

    #[test]
    fn day_starts_at_utc_midnight() {
        for (d, want) in [((2026, 3, 29), "2026-03-29T00:00:00+00:00"), ((2026, 1, 1), "2026-01-01T00:00:00+00:00")] {
            let day = NaiveDate::from_ymd_opt(d.0, d.1, d.2).unwrap();
            assert_eq!(day_start(day).to_rfc3339(), want);
        }
    }
}
