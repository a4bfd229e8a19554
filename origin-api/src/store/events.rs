//! Event rows: the idempotent bulk insert, daily counts, and the daily visitor salts.

use std::collections::{BTreeMap, BTreeSet};

use ahash::AHashSet as HashSet;
use std::sync::Mutex;

use bytes::{BufMut, BytesMut};
use chrono::{DateTime, Datelike, NaiveDate, Utc};
use deadpool_postgres::Pool;
use protocol::event::Utm;
use protocol::forward::EnrichedEvent;
use rand::RngCore;
use serde::Serialize;
use serde_json::{Map, Value};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{to_sql_checked, IsNull, ToSql, Type};
use uuid::Uuid;

use super::StoreError;
use crate::ingest::enrich::{derive_all, Derived};

/// Text for PostgreSQL, which cannot hold U+0000 in `text` (JSON can): replaced with U+FFFD as
/// it is written, rather than failing the whole batch on one hostile string. Written straight
/// from the event's own string, without a copy.
#[derive(Debug, Clone, Copy)]
struct Text<'a>(&'a str);

impl ToSql for Text<'_> {
    fn to_sql(&self, _: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        // Almost every string has no NUL: one vectorised scan, then one copy.
        if !self.0.as_bytes().contains(&0) {
            out.put_slice(self.0.as_bytes());
            return Ok(IsNull::No);
        }
        let mut parts = self.0.split('\0');
        out.put_slice(parts.next().unwrap_or_default().as_bytes());
        for part in parts {
            out.put_slice("\u{fffd}".as_bytes());
            out.put_slice(part.as_bytes());
        }
        Ok(IsNull::No)
    }
    fn accepts(ty: &Type) -> bool {
        *ty == Type::TEXT
    }
    to_sql_checked!();
}

fn text(s: &Option<String>) -> Option<Text<'_>> {
    s.as_deref().map(Text)
}

/// A value serialised straight into jsonb's binary form (a version byte, then JSON text), with
/// no `serde_json::Value` built in between: that tree was most of the origin's cost per event.
#[derive(Debug)]
struct Jsonb<T>(T);

impl<T: Serialize + std::fmt::Debug> ToSql for Jsonb<T> {
    fn to_sql(&self, _: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        out.put_u8(1);
        let start = out.len();
        let mut w = out.writer();
        serde_json::to_writer(&mut w, &self.0)?;
        unescape_nul(&mut out[start..]);
        Ok(IsNull::No)
    }
    fn accepts(ty: &Type) -> bool {
        *ty == Type::JSONB
    }
    to_sql_checked!();
}

/// jsonb cannot hold U+0000 either: serde_json writes it as `\u0000`, which is rewritten in
/// place to `\ufffd` (same length). An escape is one only after an even run of backslashes
/// (`\\u0000` is a literal backslash followed by the text `u0000`, and stays).
fn unescape_nul(json: &mut [u8]) {
    const NUL: &[u8] = b"\\u0000";
    // Most documents have no escape at all: one word-at-a-time scan instead of the loop below.
    if !json.contains(&b'\\') {
        return;
    }
    let mut i = 0;
    while i + NUL.len() <= json.len() {
        if &json[i..i + NUL.len()] == NUL {
            let run = json[..i].iter().rev().take_while(|&&b| b == b'\\').count();
            if run % 2 == 0 {
                json[i + 2..i + 6].copy_from_slice(b"fffd");
            }
            i += NUL.len();
        } else {
            i += 1;
        }
    }
}

/// The context without the fields that have columns of their own.
#[derive(Debug, Serialize)]
struct ContextRest<'a> {
    #[serde(skip_serializing_if = "no_utm")]
    utm: &'a Utm,
    #[serde(skip_serializing_if = "none")]
    screen: &'a Option<protocol::event::Screen>,
    #[serde(skip_serializing_if = "none")]
    locale: &'a Option<String>,
    #[serde(skip_serializing_if = "none")]
    timezone: &'a Option<String>,
    #[serde(skip_serializing_if = "none")]
    library: &'a Option<protocol::event::Library>,
    #[serde(flatten)]
    extra: &'a Map<String, Value>,
}

/// Event properties, plus unknown top-level fields of a newer protocol version under a reserved
/// key, so that nothing the sender sent is lost.
#[derive(Debug, Serialize)]
struct Properties<'a> {
    #[serde(flatten)]
    properties: &'a Map<String, Value>,
    #[serde(rename = "$extra", skip_serializing_if = "no_fields")]
    extra: &'a Map<String, Value>,
}

fn no_utm(u: &&Utm) -> bool {
    u.is_empty()
}

fn none<T>(o: &&Option<T>) -> bool {
    o.is_none()
}

fn no_fields(m: &&Map<String, Value>) -> bool {
    m.is_empty()
}

/// The columns of `events`, in the order of [`COPY_EVENTS`] and [`COLUMN_TYPES`].
const COPY_EVENTS: &str = r#"COPY events (project_id, event_id, event_type, name, distinct_id, anonymous_id,
    user_id, session_id, "timestamp", client_timestamp, received_at, url, path, title, referrer,
    properties, person_set, person_set_once, context, group_type, group_key, previous_id, country,
    region, city, continent, geo, visitor_hash, is_bot, user_agent, host, referrer_domain, channel,
    utm_source, utm_medium, utm_campaign, utm_term, utm_content, browser, os, device_type)
  FROM STDIN (FORMAT binary)"#;

const COLUMN_TYPES: [Type; 41] = {
    use Type as T;
    [
        T::INT8,
        T::UUID,
        T::TEXT,
        T::TEXT,
        T::TEXT,
        T::TEXT,
        T::TEXT,
        T::TEXT,
        T::TIMESTAMPTZ,
        T::TIMESTAMPTZ,
        T::TIMESTAMPTZ,
        T::TEXT,
        T::TEXT,
        T::TEXT,
        T::TEXT,
        T::JSONB,
        T::JSONB,
        T::JSONB,
        T::JSONB,
        T::TEXT,
        T::TEXT,
        T::TEXT,
        T::TEXT,
        T::TEXT,
        T::TEXT,
        T::TEXT,
        T::JSONB,
        T::TEXT,
        T::BOOL,
        T::TEXT,
        T::TEXT,
        T::TEXT,
        T::TEXT,
        T::TEXT,
        T::TEXT,
        T::TEXT,
        T::TEXT,
        T::TEXT,
        T::TEXT,
        T::TEXT,
        T::TEXT,
    ]
};

/// Binds `$values` to the 41 values of one event's row (in the order of [`COPY_EVENTS`] and
/// [`COLUMN_TYPES`]) for `$body`: shared by the in-memory encoder and the streaming writer.
macro_rules! with_row_values {
    ($project_id:expr, $e:expr, $d:expr, |$values:ident| $body:expr) => {{
        let (project_id, e, d): (&i64, &EnrichedEvent, &Derived) = (&$project_id, $e, $d);
        let ev = &e.event;
        let ctx = &ev.context;
        let distinct_id = Text(ev.distinct_id().or(e.visitor_hash.as_deref()).unwrap_or_default());
        let context = Jsonb(ContextRest {
            utm: &ctx.utm,
            screen: &ctx.screen,
            locale: &ctx.locale,
            timezone: &ctx.timezone,
            library: &ctx.library,
            extra: &ctx.extra,
        });
        let properties = Jsonb(Properties { properties: &ev.properties, extra: &ev.extra });
        let utm: [Option<Text<'_>>; 5] =
            [text(&d.utm[0]), text(&d.utm[1]), text(&d.utm[2]), text(&d.utm[3]), text(&d.utm[4])];
        let $values: [&(dyn ToSql + Sync); 41] = [
            project_id,
            &ev.id,
            &ev.kind.as_str(),
            &Text(&ev.name),
            &distinct_id,
            &text(&ev.anonymous_id),
            &text(&ev.user_id),
            &text(&ev.session_id),
            &e.timestamp,
            &ev.timestamp,
            &e.received_at,
            &text(&ctx.url),
            &text(&ctx.path),
            &text(&ctx.title),
            &text(&ctx.referrer),
            &properties,
            &Jsonb(&ev.set),
            &Jsonb(&ev.set_once),
            &context,
            &text(&ev.group_type),
            &text(&ev.group_key),
            &text(&ev.previous_id),
            &text(&e.geo.country),
            &text(&e.geo.region),
            &text(&e.geo.city),
            &text(&e.geo.continent),
            &Jsonb(&e.geo),
            &text(&e.visitor_hash),
            &e.bot,
            &text(&e.user_agent),
            &text(&d.host),
            &text(&d.referrer_domain),
            &d.channel,
            &utm[0],
            &utm[1],
            &utm[2],
            &utm[3],
            &utm[4],
            &text(&d.browser),
            &text(&d.os),
            &d.device_type,
        ];
        $body
    }};
}

/// Writes one event as one binary COPY row through tokio-postgres's streaming writer: the
/// fallback of [`BinaryCopy`], which reports an encoding error as a database error.
async fn copy_row(
    w: std::pin::Pin<&mut BinaryCopyInWriter>,
    project_id: i64,
    e: &EnrichedEvent,
    d: &Derived,
) -> Result<(), tokio_postgres::Error> {
    with_row_values!(project_id, e, d, |values| w.write(&values).await)
}

/// The bytes a binary COPY sends, built in memory before any is sent.
///
/// tokio-postgres's `BinaryCopyInWriter` hands every 4 KiB (about four event rows) to the
/// connection task as its own message: a task wake-up, often a thread wake-up, per few rows.
/// Encoding the whole group first (synchronously) and sending it in 64 KiB pieces cut that.
/// A value that fails to encode (none of ours can, short of a bug in a `Serialize`) is left to
/// the caller, which then writes the group through `BinaryCopyInWriter` so that the failure
/// surfaces as the driver's error.
struct BinaryCopy {
    buf: BytesMut,
    types: &'static [Type],
    failed: bool,
}

/// Bytes per message of a [`BinaryCopy`].
const COPY_CHUNK: usize = 64 * 1024;

impl BinaryCopy {
    fn new(types: &'static [Type], capacity: usize) -> BinaryCopy {
        let mut buf = BytesMut::with_capacity(capacity + 32);
        // Signature, flags, header extension length (PostgreSQL's binary COPY format).
        buf.put_slice(b"PGCOPY\n\xff\r\n\0");
        buf.put_i32(0);
        buf.put_i32(0);
        BinaryCopy { buf, types, failed: false }
    }

    /// Appends one row; on a value that does not encode, marks the copy failed.
    fn write(&mut self, values: &[&(dyn ToSql + Sync)]) {
        if self.failed || values.len() != self.types.len() {
            self.failed = true;
            return;
        }
        let row_start = self.buf.len();
        self.buf.put_i16(values.len() as i16);
        for (value, ty) in values.iter().zip(self.types) {
            let at = self.buf.len();
            self.buf.put_i32(0);
            let len = match value.to_sql_checked(ty, &mut self.buf) {
                Ok(IsNull::Yes) => -1,
                Ok(IsNull::No) => match i32::try_from(self.buf.len() - at - 4) {
                    Ok(n) => n,
                    Err(_) => {
                        self.failed = true;
                        self.buf.truncate(row_start);
                        return;
                    }
                },
                Err(_) => {
                    self.failed = true;
                    self.buf.truncate(row_start);
                    return;
                }
            };
            self.buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
        }
    }

    /// Sends the rows (the copy must not have failed). Returns the rows stored.
    async fn send(mut self, tx: &deadpool_postgres::Transaction<'_>, sql: &str) -> Result<u64, StoreError> {
        self.buf.put_i16(-1);
        let stmt = tx.prepare_cached(sql).await?;
        let sink = tx.copy_in::<_, bytes::Bytes>(&stmt).await?;
        futures_util::pin_mut!(sink);
        while !self.buf.is_empty() {
            let n = self.buf.len().min(COPY_CHUNK);
            futures_util::SinkExt::send(&mut sink, self.buf.split_to(n).freeze()).await?;
        }
        Ok(sink.finish().await?)
    }
}

/// Months (UTC) that already have a partition, as seen by this process. A miss costs one
/// idempotent `nexus_ensure_event_partition` call; the background job creates months ahead.
static KNOWN_PARTITIONS: Mutex<BTreeSet<(i32, u32)>> = Mutex::new(BTreeSet::new());

/// Makes sure every month of `timestamps` has a partition, so that an event with any valid
/// timestamp (late, historical, imported) is stored, never refused for lack of a partition.
pub async fn ensure_partitions(pool: &Pool, timestamps: impl Iterator<Item = DateTime<Utc>>) -> Result<(), StoreError> {
    let months: BTreeSet<(i32, u32, DateTime<Utc>)> = timestamps.map(|t| (t.year(), t.month(), t)).collect();
    let missing: Vec<DateTime<Utc>> = {
        let known = KNOWN_PARTITIONS.lock().unwrap_or_else(|p| p.into_inner());
        let mut seen = BTreeSet::new();
        months
            .into_iter()
            .filter(|(y, m, _)| !known.contains(&(*y, *m)) && seen.insert((*y, *m)))
            .map(|(_, _, t)| t)
            .collect()
    };
    if missing.is_empty() {
        return Ok(());
    }
    let client = pool.get().await?;
    for t in missing {
        client.execute("SELECT nexus_ensure_event_partition($1)", &[&t]).await?;
        KNOWN_PARTITIONS.lock().unwrap_or_else(|p| p.into_inner()).insert((t.year(), t.month()));
    }
    Ok(())
}

/// Forgets the partitions this process knows (after a retention job dropped some).
pub fn forget_partitions() {
    KNOWN_PARTITIONS.lock().unwrap_or_else(|p| p.into_inner()).clear();
}

/// The events of one project, as one request brought them.
pub type ProjectEvents<'a> = (i64, &'a [EnrichedEvent]);

/// Inserts the events of several requests (of any projects) in one transaction, deduplicated
/// on (project_id, event_id) across all partitions through `event_ids`. Returns the
/// (project, id) pairs that were new.
pub async fn insert(pool: &Pool, batches: &[ProjectEvents<'_>]) -> Result<HashSet<(i64, Uuid)>, StoreError> {
    if batches.iter().all(|(_, events)| events.is_empty()) {
        return Ok(HashSet::default());
    }
    // Collected, not a lazy iterator: a borrowing closure held across an await is not `Send`.
    let times: Vec<DateTime<Utc>> = batches.iter().flat_map(|(_, events)| events.iter().map(|e| e.timestamp)).collect();
    ensure_partitions(pool, times.iter().copied()).await?;
    let first = match insert_once(pool, batches, Claim::Copy).await {
        // The partition cache was wrong (a partition dropped, or a different database behind
        // the same process): forget it, make sure again, and retry once.
        Err(StoreError::Db(e)) if e.code() == Some(&tokio_postgres::error::SqlState::CHECK_VIOLATION) => {
            tracing::warn!(error = %e, "missing partition despite the cache; re-checking partitions");
            forget_partitions();
            ensure_partitions(pool, times.iter().copied()).await?;
            insert_once(pool, batches, Claim::Copy).await
        }
        other => other,
    };
    match first {
        // One of the ids was stored already (a retried request) or by a concurrent transaction
        // meanwhile: this transaction rolled back; write the group again with the claim that
        // skips stored ids.
        Err(StoreError::Db(e)) if is_claim_race(&e) => {
            tracing::debug!(error = %e, "an event id of the group is stored already; writing it again skipping stored ids");
            insert_once(pool, batches, Claim::OnConflict).await
        }
        other => other,
    }
}

/// How a transaction claims its ids in `event_ids`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Claim {
    /// Binary-COPY every id, expecting all to be new (almost always true: a duplicate is a
    /// retried request whose first delivery was stored but not acknowledged). PostgreSQL writes
    /// a COPY's heap rows several to a WAL record, where `ON CONFLICT` writes three records per
    /// row (speculative insert, index entry, confirmation): in the ingest benchmark PostgreSQL
    /// spent 3-5 ms less per 1,000 events. An id that is already stored (or being stored by a
    /// concurrent transaction, which it waits for) makes the COPY fail with a unique violation,
    /// never a second row; [`insert`] then rolls back and writes the group again with
    /// [`Claim::OnConflict`]. The failed attempt costs only the ids copied before the duplicate
    /// (no event row was written yet) and an `ERROR` line in the server's log.
    /// (Looking the ids up first was tried: the look-up's cached generic plan, made while
    /// `event_ids` was small, kept scanning the whole table.)
    Copy,
    /// `INSERT ... ON CONFLICT DO NOTHING RETURNING`: waits for a concurrent claimer of the same
    /// id and then skips it; never fails on a duplicate.
    OnConflict,
}

/// True when a statement failed because another transaction stored one of the same ids.
fn is_claim_race(e: &tokio_postgres::Error) -> bool {
    e.as_db_error().is_some_and(|d| {
        *d.code() == tokio_postgres::error::SqlState::UNIQUE_VIOLATION && d.constraint() == Some("event_ids_pkey")
    })
}

/// Writes rows through tokio-postgres's streaming writer (see [`BinaryCopy`]).
async fn copy_streaming(
    tx: &deadpool_postgres::Transaction<'_>,
    rows: &[(i64, &EnrichedEvent, &Derived)],
) -> Result<(), StoreError> {
    let copy = tx.prepare_cached(COPY_EVENTS).await?;
    let sink = tx.copy_in(&copy).await?;
    let writer = BinaryCopyInWriter::new(sink, &COLUMN_TYPES);
    futures_util::pin_mut!(writer);
    // Indexes, not an iterator held across the awaits: the borrowing iterator makes the
    // future fail the higher-ranked `Send` check that `tokio::spawn` needs.
    #[allow(clippy::needless_range_loop)]
    for i in 0..rows.len() {
        let (project_id, e, d) = rows[i];
        copy_row(writer.as_mut(), project_id, e, d).await?;
    }
    writer.finish().await?;
    Ok(())
}

async fn insert_once(
    pool: &Pool,
    batches: &[ProjectEvents<'_>],
    claim: Claim,
) -> Result<HashSet<(i64, Uuid)>, StoreError> {
    // Every event with its project and derived columns, in one fixed order (project, id) for the
    // key rows this transaction locks: two transactions that share ids can then never wait on
    // each other in a cycle. Of several copies of one id in the group the first is the one
    // stored (the sort is stable), the others are duplicates.
    let mut rows: Vec<(i64, &EnrichedEvent, std::sync::Arc<Derived>)> = Vec::new();
    for (project_id, events) in batches {
        rows.extend(events.iter().zip(derive_all(events)).map(|(e, d)| (*project_id, e, d)));
    }
    rows.sort_by_key(|(p, e, _)| (*p, e.event.id));
    rows.dedup_by(|later, first| later.0 == first.0 && later.1.event.id == first.1.event.id);
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    // Step "dedupe": claim the ids. A concurrent transaction claiming the same id waits for this
    // one (its index entry is locked until we commit); an id claimed by a rolled-back
    // transaction is free again.
    let mut ids = BinaryCopy::new(&ID_TYPES, rows.len() * 46);
    if claim == Claim::Copy {
        for (project_id, e, _) in &rows {
            ids.write(&[project_id, &e.event.id, &e.timestamp]);
        }
    }
    let is_new: Vec<bool> = if claim == Claim::Copy && !ids.failed {
        ids.send(&tx, COPY_IDS).await?;
        vec![true; rows.len()]
    } else {
        let projects: Vec<i64> = rows.iter().map(|r| r.0).collect();
        let ids: Vec<Uuid> = rows.iter().map(|r| r.1.event.id).collect();
        let times: Vec<DateTime<Utc>> = rows.iter().map(|r| r.1.timestamp).collect();
        let stmt = tx.prepare_cached(CLAIM_IDS).await?;
        let claimed: HashSet<(i64, Uuid)> =
            tx.query(&stmt, &[&projects, &ids, &times]).await?.iter().map(|r| (r.get(0), r.get(1))).collect();
        rows.iter().map(|r| claimed.contains(&(r.0, r.1.event.id))).collect()
    };
    // Step "write": the new rows by binary COPY, which PostgreSQL writes several rows per page
    // and WAL record at a time (a row-at-a-time INSERT ... SELECT cost about twice as much).
    let fresh: Vec<(i64, &EnrichedEvent, &Derived)> =
        rows.iter().zip(&is_new).filter(|(_, n)| **n).map(|((p, e, d), _)| (*p, *e, &**d)).collect();
    if !fresh.is_empty() {
        let mut copy = BinaryCopy::new(&COLUMN_TYPES, fresh.len() * 1024);
        for (project_id, e, d) in &fresh {
            with_row_values!(*project_id, e, d, |values| copy.write(&values));
        }
        if copy.failed {
            copy_streaming(&tx, &fresh).await?;
        } else {
            copy.send(&tx, COPY_EVENTS).await?;
        }
    }
    // Sessions grow only by the events that were new, in the same transaction: a crash between
    // the two would otherwise leave stored events that a retry (now all duplicates) never counts.
    // Rollups learn which days changed, in the same transaction (see store/rollups.rs). The two
    // statements are sent together (tokio-postgres pipelines the queries of one connection that
    // are awaited together): one round trip instead of two. Their order on the server does not
    // matter: the marks are an append-only log without a unique key, so they never wait on
    // another transaction and cannot take part in a deadlock with the session rows.
    tokio::try_join!(super::sessions::upsert(&tx, &fresh), super::rollups::mark_dirty(&tx, &fresh))?;
    // Persons, one project at a time in ascending order (the advisory locks stay sorted).
    let mut by_project: BTreeMap<i64, Vec<&EnrichedEvent>> = BTreeMap::new();
    for (project_id, e, _) in &fresh {
        by_project.entry(*project_id).or_default().push(*e);
    }
    let mut mapped = Vec::new();
    for (project_id, events) in by_project {
        mapped.push((project_id, super::persons::resolve(&tx, project_id, &events).await?));
    }
    // The catalog (event names, property keys and values) learns from the same new events.
    super::catalog::record(&tx, &fresh).await?;
    tx.commit().await?;
    for (project_id, ids) in mapped {
        super::persons::remember(project_id, ids);
    }
    Ok(fresh.iter().map(|(p, e, _)| (*p, e.event.id)).collect())
}

/// Column types of [`COPY_IDS`].
const ID_TYPES: [Type; 3] = [Type::INT8, Type::UUID, Type::TIMESTAMPTZ];

const COPY_IDS: &str = r#"COPY event_ids (project_id, event_id, "timestamp") FROM STDIN (FORMAT binary)"#;

const CLAIM_IDS: &str = r#"INSERT INTO event_ids (project_id, event_id, "timestamp")
  SELECT * FROM unnest($1::int8[], $2::uuid[], $3::timestamptz[])
  ON CONFLICT (project_id, event_id) DO NOTHING
  RETURNING project_id, event_id"#;

/// One day of [`events_per_day`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DayCount {
    /// Calendar day in the project's timezone.
    pub day: NaiveDate,
    /// Events on that day.
    pub events: i64,
}

/// Events per calendar day (in `timezone`) between `from` and `to` inclusive.
pub async fn events_per_day(
    pool: &Pool,
    project_id: i64,
    timezone: &str,
    from: NaiveDate,
    to: NaiveDate,
    include_bots: bool,
) -> Result<Vec<DayCount>, StoreError> {
    let client = pool.get().await?;
    // The day boundaries are converted to UTC instants in the project's zone, so the index on
    // (project_id, timestamp) serves the range and DST days have their real 23 or 25 hours.
    let rows = client
        .query(
            r#"SELECT ("timestamp" AT TIME ZONE $2)::date AS day, count(*)
               FROM events
               WHERE project_id = $1
                 AND "timestamp" >= ($3::date::timestamp AT TIME ZONE $2)
                 AND "timestamp" < (($4::date + 1)::timestamp AT TIME ZONE $2)
                 AND ($5 OR NOT is_bot)
               GROUP BY 1 ORDER BY 1"#,
            &[&project_id, &timezone, &from, &to, &include_bots],
        )
        .await?;
    Ok(rows.iter().map(|r| DayCount { day: r.get(0), events: r.get(1) }).collect())
}

/// Today's salt, cached in the process: it changes once a day, and asking the database on every
/// request cost three statements per batch.
static SALT: Mutex<Option<(NaiveDate, Vec<u8>)>> = Mutex::new(None);

/// The random salt of `day` for visitor hashes, made on first use by whichever replica asks
/// first (`ON CONFLICT DO NOTHING` makes the race harmless, so every replica hashes alike).
pub async fn daily_salt(pool: &Pool, day: NaiveDate) -> Result<Vec<u8>, StoreError> {
    if let Some((d, salt)) = SALT.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
        if *d == day {
            return Ok(salt.clone());
        }
    }
    let salt = load_salt(pool, day).await?;
    *SALT.lock().unwrap_or_else(|p| p.into_inner()) = Some((day, salt.clone()));
    Ok(salt)
}

async fn load_salt(pool: &Pool, day: NaiveDate) -> Result<Vec<u8>, StoreError> {
    let client = pool.get().await?;
    let mut salt = vec![0u8; 32];
    rand::rng().fill_bytes(&mut salt);
    client
        .execute("INSERT INTO visitor_salts (day, salt) VALUES ($1, $2) ON CONFLICT (day) DO NOTHING", &[&day, &salt])
        .await?;
    // Salts older than yesterday are deleted: a visitor hash cannot be recomputed after that.
    client.execute("DELETE FROM visitor_salts WHERE day < $1::date - 1", &[&day]).await?;
    let row = client.query_one("SELECT salt FROM visitor_salts WHERE day = $1", &[&day]).await?;
    Ok(row.get(0))
}

/// Event count of a project (tests and the demo).
pub async fn count(pool: &Pool, project_id: i64) -> Result<i64, StoreError> {
    let client = pool.get().await?;
    Ok(client.query_one("SELECT count(*) FROM events WHERE project_id = $1", &[&project_id]).await?.get(0))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::unescape_nul;

    fn check(input: &str, expected: &str) {
        let mut bytes = input.as_bytes().to_vec();
        unescape_nul(&mut bytes);
        assert_eq!(String::from_utf8(bytes).unwrap(), expected, "{input}");
    }

    #[test]
    fn escaped_nul_is_replaced_in_place() {
        check(r#""a\u0000b""#, r#""a\ufffdb""#);
        check(r#"{"k\u0000":"\u0000"}"#, r#"{"k\ufffd":"\ufffd"}"#);
        // A literal backslash followed by the text u0000 is not an escape.
        check(r#""\\u0000""#, r#""\\u0000""#);
        check(r#""\\\u0000""#, r#""\\\ufffd""#);
        check(r#""plain""#, r#""plain""#);
        check(r#"\u000"#, r#"\u000"#);
    }

    #[test]
    fn serialised_nul_round_trips_as_replacement() {
        let json = serde_json::to_vec(&serde_json::json!({"a\u{0}": ["x\u{0}y", {"k": "\u{0}"}], "n": 1})).unwrap();
        let mut bytes = json;
        unescape_nul(&mut bytes);
        let back: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(back, serde_json::json!({"a\u{fffd}": ["x\u{fffd}y", {"k": "\u{fffd}"}], "n": 1}));
    }
}
