//! Event rows: the idempotent bulk insert, daily counts, and the daily visitor salts.

use std::collections::HashSet;

use chrono::NaiveDate;
use deadpool_postgres::Pool;
use protocol::forward::EnrichedEvent;
use rand::RngCore;
use serde_json::{json, Value};
use uuid::Uuid;

use super::StoreError;

/// One row for `jsonb_to_recordset`, built from an enriched event.
fn row(e: &EnrichedEvent) -> Value {
    let ev = &e.event;
    let ctx = &ev.context;
    // Everything of the context that has no column of its own stays queryable in jsonb.
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
    json!({
        "event_id": ev.id,
        "event_type": ev.kind.as_str(),
        "name": ev.name,
        "distinct_id": ev.distinct_id().or(e.visitor_hash.as_deref()).unwrap_or_default(),
        "anonymous_id": ev.anonymous_id,
        "user_id": ev.user_id,
        "session_id": ev.session_id,
        "timestamp": e.timestamp,
        "client_timestamp": ev.timestamp,
        "received_at": e.received_at,
        "url": ctx.url,
        "path": ctx.path,
        "title": ctx.title,
        "referrer": ctx.referrer,
        "properties": properties,
        "person_set": ev.set,
        "person_set_once": ev.set_once,
        "context": context,
        "group_type": ev.group_type,
        "group_key": ev.group_key,
        "previous_id": ev.previous_id,
        "country": e.geo.country,
        "region": e.geo.region,
        "city": e.geo.city,
        "continent": e.geo.continent,
        "geo": e.geo,
        "visitor_hash": e.visitor_hash,
        "is_bot": e.bot,
        "user_agent": e.user_agent,
    })
}

/// PostgreSQL text and jsonb cannot hold U+0000; JSON can. Replace it (with U+FFFD) rather than
/// fail the whole batch on one hostile string.
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

/// Inserts the events of one project in one statement; an event whose id is already stored is
/// skipped (`ON CONFLICT DO NOTHING`). Returns the ids that were new.
///
/// One jsonb parameter carries the whole batch (`jsonb_to_recordset`): a single round trip and
/// a single plan, whatever the batch size.
pub async fn insert(pool: &Pool, project_id: i64, events: &[EnrichedEvent]) -> Result<HashSet<Uuid>, StoreError> {
    if events.is_empty() {
        return Ok(HashSet::new());
    }
    let mut rows = Value::Array(events.iter().map(row).collect());
    strip_nul(&mut rows);
    let client = pool.get().await?;
    let stmt = client
        .prepare_cached(
            r#"INSERT INTO events (project_id, event_id, event_type, name, distinct_id, anonymous_id,
                 user_id, session_id, "timestamp", client_timestamp, received_at, url, path, title,
                 referrer, properties, person_set, person_set_once, context, group_type, group_key,
                 previous_id, country, region, city, continent, geo, visitor_hash, is_bot, user_agent)
               SELECT $1, r.event_id, r.event_type, r.name, r.distinct_id, r.anonymous_id,
                 r.user_id, r.session_id, r."timestamp", r.client_timestamp, r.received_at, r.url,
                 r.path, r.title, r.referrer, r.properties, r.person_set, r.person_set_once,
                 r.context, r.group_type, r.group_key, r.previous_id, r.country, r.region, r.city,
                 r.continent, r.geo, r.visitor_hash, r.is_bot, r.user_agent
               FROM jsonb_to_recordset($2::jsonb) AS r(event_id uuid, event_type text, name text,
                 distinct_id text, anonymous_id text, user_id text, session_id text,
                 "timestamp" timestamptz, client_timestamp timestamptz, received_at timestamptz,
                 url text, path text, title text, referrer text, properties jsonb,
                 person_set jsonb, person_set_once jsonb, context jsonb, group_type text,
                 group_key text, previous_id text, country text, region text, city text,
                 continent text, geo jsonb, visitor_hash text, is_bot boolean, user_agent text)
               ON CONFLICT (project_id, event_id) DO NOTHING
               RETURNING event_id"#,
        )
        .await?;
    let inserted = client.query(&stmt, &[&project_id, &rows]).await?;
    Ok(inserted.iter().map(|r| r.get::<_, Uuid>(0)).collect())
}

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

/// The random salt of `day` for visitor hashes, made on first use by whichever replica asks
/// first (`ON CONFLICT DO NOTHING` makes the race harmless).
pub async fn daily_salt(pool: &Pool, day: NaiveDate) -> Result<Vec<u8>, StoreError> {
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
