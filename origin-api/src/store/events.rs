//! Event rows: the idempotent bulk insert, daily counts, and the daily visitor salts.

use std::collections::{BTreeSet, HashSet};
use std::sync::Mutex;

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use deadpool_postgres::Pool;
use protocol::forward::EnrichedEvent;
use rand::RngCore;
use serde_json::{json, Value};
use uuid::Uuid;

use super::StoreError;
use crate::ingest::enrich::{derive_all, Derived};

/// The batch as one array per column, for `unnest`: the whole batch travels as 30 binary
/// parameters and is written by one statement with one plan, whatever its size.
#[derive(Default)]
struct Columns {
    event_id: Vec<Uuid>,
    event_type: Vec<&'static str>,
    name: Vec<String>,
    distinct_id: Vec<String>,
    anonymous_id: Vec<Option<String>>,
    user_id: Vec<Option<String>>,
    session_id: Vec<Option<String>>,
    timestamp: Vec<DateTime<Utc>>,
    client_timestamp: Vec<DateTime<Utc>>,
    received_at: Vec<DateTime<Utc>>,
    url: Vec<Option<String>>,
    path: Vec<Option<String>>,
    title: Vec<Option<String>>,
    referrer: Vec<Option<String>>,
    properties: Vec<Value>,
    person_set: Vec<Value>,
    person_set_once: Vec<Value>,
    context: Vec<Value>,
    group_type: Vec<Option<String>>,
    group_key: Vec<Option<String>>,
    previous_id: Vec<Option<String>>,
    country: Vec<Option<String>>,
    region: Vec<Option<String>>,
    city: Vec<Option<String>>,
    continent: Vec<Option<String>>,
    geo: Vec<Value>,
    visitor_hash: Vec<Option<String>>,
    is_bot: Vec<bool>,
    user_agent: Vec<Option<String>>,
    host: Vec<Option<String>>,
    referrer_domain: Vec<Option<String>>,
    channel: Vec<Option<&'static str>>,
    utm: [Vec<Option<String>>; 5],
    browser: Vec<Option<String>>,
    os: Vec<Option<String>>,
    device_type: Vec<Option<&'static str>>,
}

/// PostgreSQL text and jsonb cannot hold U+0000; JSON can. Replaced (with U+FFFD) rather than
/// failing the whole batch on one hostile string.
fn clean(s: &str) -> String {
    if s.contains('\0') {
        s.replace('\0', "\u{fffd}")
    } else {
        s.to_owned()
    }
}

fn clean_opt(s: &Option<String>) -> Option<String> {
    s.as_deref().map(clean)
}

impl Columns {
    fn push(&mut self, e: &EnrichedEvent, d: &Derived) {
        let ev = &e.event;
        let ctx = &ev.context;
        // Everything of the context without a column of its own stays queryable in jsonb.
        let mut context = serde_json::to_value(ctx).unwrap_or_else(|_| json!({}));
        if let Some(map) = context.as_object_mut() {
            for k in ["url", "path", "title", "referrer"] {
                map.remove(k);
            }
        }
        let mut properties = Value::Object(ev.properties.clone());
        if !ev.extra.is_empty() {
            // Unknown top-level fields of a newer protocol version are kept, under a reserved key.
            properties["$extra"] = Value::Object(ev.extra.clone());
        }
        let json = |mut v: Value| {
            strip_nul(&mut v);
            v
        };
        self.event_id.push(ev.id);
        self.event_type.push(ev.kind.as_str());
        self.name.push(clean(&ev.name));
        self.distinct_id.push(clean(ev.distinct_id().or(e.visitor_hash.as_deref()).unwrap_or_default()));
        self.anonymous_id.push(clean_opt(&ev.anonymous_id));
        self.user_id.push(clean_opt(&ev.user_id));
        self.session_id.push(clean_opt(&ev.session_id));
        self.timestamp.push(e.timestamp);
        self.client_timestamp.push(ev.timestamp);
        self.received_at.push(e.received_at);
        self.url.push(clean_opt(&ctx.url));
        self.path.push(clean_opt(&ctx.path));
        self.title.push(clean_opt(&ctx.title));
        self.referrer.push(clean_opt(&ctx.referrer));
        self.properties.push(json(properties));
        self.person_set.push(json(Value::Object(ev.set.clone())));
        self.person_set_once.push(json(Value::Object(ev.set_once.clone())));
        self.context.push(json(context));
        self.group_type.push(clean_opt(&ev.group_type));
        self.group_key.push(clean_opt(&ev.group_key));
        self.previous_id.push(clean_opt(&ev.previous_id));
        self.country.push(clean_opt(&e.geo.country));
        self.region.push(clean_opt(&e.geo.region));
        self.city.push(clean_opt(&e.geo.city));
        self.continent.push(clean_opt(&e.geo.continent));
        self.geo.push(json(serde_json::to_value(&e.geo).unwrap_or_else(|_| json!({}))));
        self.visitor_hash.push(clean_opt(&e.visitor_hash));
        self.is_bot.push(e.bot);
        self.user_agent.push(clean_opt(&e.user_agent));
        self.host.push(clean_opt(&d.host));
        self.referrer_domain.push(clean_opt(&d.referrer_domain));
        self.channel.push(d.channel);
        for (col, v) in self.utm.iter_mut().zip(&d.utm) {
            col.push(clean_opt(v));
        }
        self.browser.push(clean_opt(&d.browser));
        self.os.push(clean_opt(&d.os));
        self.device_type.push(d.device_type);
    }
}

/// Replaces U+0000 everywhere in a JSON value (strings and keys).
fn strip_nul(v: &mut Value) {
    match v {
        Value::String(s) if s.contains('\0') => *s = s.replace('\0', "\u{fffd}"),
        Value::Array(items) => items.iter_mut().for_each(strip_nul),
        Value::Object(map) => {
            if map.keys().any(|k| k.contains('\0')) {
                let old = std::mem::take(map);
                map.extend(old.into_iter().map(|(k, v)| (k.replace('\0', "\u{fffd}"), v)));
            }
            map.values_mut().for_each(strip_nul);
        }
        _ => {}
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

/// Inserts the events of one project in one statement, deduplicated on (project_id, event_id)
/// across all partitions through `event_ids`. Returns the ids that were new.
pub async fn insert(pool: &Pool, project_id: i64, events: &[EnrichedEvent]) -> Result<HashSet<Uuid>, StoreError> {
    if events.is_empty() {
        return Ok(HashSet::new());
    }
    ensure_partitions(pool, events.iter().map(|e| e.timestamp)).await?;
    match insert_once(pool, project_id, events).await {
        // The partition cache was wrong (a partition dropped, or a different database behind
        // the same process): forget it, make sure again, and retry once.
        Err(StoreError::Db(e)) if e.code() == Some(&tokio_postgres::error::SqlState::CHECK_VIOLATION) => {
            tracing::warn!(error = %e, "missing partition despite the cache; re-checking partitions");
            forget_partitions();
            ensure_partitions(pool, events.iter().map(|e| e.timestamp)).await?;
            insert_once(pool, project_id, events).await
        }
        other => other,
    }
}

async fn insert_once(pool: &Pool, project_id: i64, events: &[EnrichedEvent]) -> Result<HashSet<Uuid>, StoreError> {
    // A fixed order (by id) for the rows this statement locks: two batches that share ids can
    // then never wait on each other in a cycle.
    let mut order: Vec<usize> = (0..events.len()).collect();
    order.sort_by_key(|&i| events[i].event.id);
    let derived: Vec<Derived> = derive_all(events);
    let mut c = Columns::default();
    for &i in &order {
        c.push(&events[i], &derived[i]);
    }
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let stmt = tx.prepare_cached(INSERT_EVENTS).await?;
    let inserted = tx
        .query(
            &stmt,
            &[
                &project_id,
                &c.event_id,
                &c.event_type,
                &c.name,
                &c.distinct_id,
                &c.anonymous_id,
                &c.user_id,
                &c.session_id,
                &c.timestamp,
                &c.client_timestamp,
                &c.received_at,
                &c.url,
                &c.path,
                &c.title,
                &c.referrer,
                &c.properties,
                &c.person_set,
                &c.person_set_once,
                &c.context,
                &c.group_type,
                &c.group_key,
                &c.previous_id,
                &c.country,
                &c.region,
                &c.city,
                &c.continent,
                &c.geo,
                &c.visitor_hash,
                &c.is_bot,
                &c.user_agent,
                &c.host,
                &c.referrer_domain,
                &c.channel,
                &c.utm[0],
                &c.utm[1],
                &c.utm[2],
                &c.utm[3],
                &c.utm[4],
                &c.browser,
                &c.os,
                &c.device_type,
            ],
        )
        .await?;
    let new: HashSet<Uuid> = inserted.iter().map(|r| r.get::<_, Uuid>(0)).collect();
    // Sessions grow only by the events that were new, in the same transaction: a crash between
    // the two would otherwise leave stored events that a retry (now all duplicates) never counts.
    let fresh: Vec<(&EnrichedEvent, &Derived)> =
        events.iter().zip(&derived).filter(|(e, _)| new.contains(&e.event.id)).collect();
    super::sessions::upsert(&tx, project_id, &fresh).await?;
    let fresh_events: Vec<&EnrichedEvent> = fresh.iter().map(|(e, _)| *e).collect();
    let mapped = super::persons::resolve(&tx, project_id, &fresh_events).await?;
    tx.commit().await?;
    super::persons::remember(project_id, mapped);
    Ok(new)
}

const INSERT_EVENTS: &str = r#"WITH input AS (
    SELECT * FROM unnest($2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[],
      $7::text[], $8::text[], $9::timestamptz[], $10::timestamptz[], $11::timestamptz[],
      $12::text[], $13::text[], $14::text[], $15::text[], $16::jsonb[], $17::jsonb[],
      $18::jsonb[], $19::jsonb[], $20::text[], $21::text[], $22::text[], $23::text[],
      $24::text[], $25::text[], $26::text[], $27::jsonb[], $28::text[], $29::bool[],
      $30::text[], $31::text[], $32::text[], $33::text[], $34::text[], $35::text[], $36::text[],
      $37::text[], $38::text[], $39::text[], $40::text[], $41::text[])
    AS t(event_id, event_type, name, distinct_id, anonymous_id, user_id, session_id,
      ts, client_timestamp, received_at, url, path, title, referrer, properties,
      person_set, person_set_once, context, group_type, group_key, previous_id,
      country, region, city, continent, geo, visitor_hash, is_bot, user_agent,
      host, referrer_domain, channel, utm_source, utm_medium, utm_campaign, utm_term,
      utm_content, browser, os, device_type)
  ),
  new_ids AS (
    INSERT INTO event_ids (project_id, event_id, "timestamp")
    SELECT $1, event_id, ts FROM input
    ON CONFLICT (project_id, event_id) DO NOTHING
    RETURNING event_id
  )
  INSERT INTO events (project_id, event_id, event_type, name, distinct_id, anonymous_id,
    user_id, session_id, "timestamp", client_timestamp, received_at, url, path, title,
    referrer, properties, person_set, person_set_once, context, group_type, group_key,
    previous_id, country, region, city, continent, geo, visitor_hash, is_bot, user_agent,
    host, referrer_domain, channel, utm_source, utm_medium, utm_campaign, utm_term,
    utm_content, browser, os, device_type)
  SELECT DISTINCT ON (i.event_id) $1, i.event_id, i.event_type, i.name, i.distinct_id,
    i.anonymous_id, i.user_id, i.session_id, i.ts, i.client_timestamp, i.received_at,
    i.url, i.path, i.title, i.referrer, i.properties, i.person_set, i.person_set_once,
    i.context, i.group_type, i.group_key, i.previous_id, i.country, i.region, i.city,
    i.continent, i.geo, i.visitor_hash, i.is_bot, i.user_agent, i.host, i.referrer_domain,
    i.channel, i.utm_source, i.utm_medium, i.utm_campaign, i.utm_term, i.utm_content,
    i.browser, i.os, i.device_type
  FROM input i JOIN new_ids n ON n.event_id = i.event_id
  RETURNING event_id"#;

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
mod tests {
    use super::strip_nul;
    use serde_json::json;

    #[test]
    fn nul_is_replaced_everywhere() {
        let mut v = json!({"a\u{0}": ["x\u{0}y", {"k": "\u{0}"}], "n": 1});
        strip_nul(&mut v);
        assert_eq!(v, json!({"a\u{fffd}": ["x\u{fffd}y", {"k": "\u{fffd}"}], "n": 1}));
    }
}
