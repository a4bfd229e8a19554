//! The event catalog, maintained at ingest: event names (volume, first and last seen), the
//! property keys of each name with their JSON types, and the counted values of low-cardinality
//! keys; and the reads behind `/v1/catalog/*`.
//!
//! [`record`] runs in the write transaction of every group, so it folds the group in memory
//! ([`fold`], pure) and writes few rows with array-bound upserts: what is new at once, counters
//! at most every [`FLUSH_INTERVAL`] (see [`Memory`]). Counter rows are sharded by the
//! writing backend (`pg_backend_pid() % SHARDS`): a popular event name is one hot row, and
//! concurrent writer transactions would otherwise queue on its row lock until each one's
//! commit; reads sum the shards.

use ahash::{AHashMap as HashMap, AHashSet as HashSet};
use std::borrow::Cow;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use protocol::forward::EnrichedEvent;
use serde::Serialize;
use serde_json::Value;

use super::StoreError;
use crate::ingest::enrich::Derived;

/// Shards of each catalog row (see the module comment). Small: reads sum at most this many
/// rows per name, key or value.
pub const SHARDS: i32 = 8;

/// Most distinct values counted per key (and shard). A key that goes past it (ids, prices,
/// free text) is marked capped and its values stop being counted, so the table stays bounded.
pub const MAX_VALUES_PER_KEY: i32 = 200;

/// Longest value counted, in bytes: longer strings are free text, not values to pick from.
pub const MAX_VALUE_LEN: usize = 200;

/// Most rows a catalog read answers.
pub const MAX_LIMIT: i64 = 1000;

/// JSON type bits, as stored in `catalog_properties.types`.
const TYPE_NAMES: [(i32, &str); 6] =
    [(1, "string"), (2, "number"), (4, "bool"), (8, "object"), (16, "array"), (32, "null")];

fn type_bit(v: &Value) -> i32 {
    match v {
        Value::String(_) => 1,
        Value::Number(_) => 2,
        Value::Bool(_) => 4,
        Value::Object(_) => 8,
        Value::Array(_) => 16,
        Value::Null => 32,
    }
}

/// The type names of a bit set, in a fixed order.
pub fn type_names(bits: i32) -> Vec<&'static str> {
    TYPE_NAMES.iter().filter(|(b, _)| bits & b != 0).map(|(_, n)| *n).collect()
}

/// Text as PostgreSQL can hold it (no U+0000), as `store::events` writes it.
fn clean(s: &str) -> Cow<'_, str> {
    if s.contains('\0') {
        Cow::Owned(s.replace('\0', "\u{fffd}"))
    } else {
        Cow::Borrowed(s)
    }
}

/// The text form of a scalar value, as `properties ->> key` gives it; `None` for objects,
/// arrays, null and long strings.
fn value_text(v: &Value) -> Option<Cow<'_, str>> {
    match v {
        Value::String(s) if s.len() <= MAX_VALUE_LEN => Some(clean(s)),
        Value::Number(n) => Some(Cow::Owned(n.to_string())),
        Value::Bool(b) => Some(Cow::Borrowed(if *b { "true" } else { "false" })),
        _ => None,
    }
}

/// One event name of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameDelta {
    /// Events.
    pub volume: i64,
    /// Earliest event time.
    pub first_seen: DateTime<Utc>,
    /// Latest event time.
    pub last_seen: DateTime<Utc>,
}

/// One (event name, key) of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyDelta {
    /// JSON type bits seen.
    pub types: i32,
}

/// (project, name or key, key or value).
pub type Triple<'a> = (i64, Cow<'a, str>, Cow<'a, str>);

/// A group folded: every map sorted by its key (the order rows are locked in).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Folded<'a> {
    /// (project, name) -> delta.
    pub names: Vec<((i64, Cow<'a, str>), NameDelta)>,
    /// (project, name, key) -> delta.
    pub keys: Vec<(Triple<'a>, KeyDelta)>,
    /// (project, key, value) -> count, at most [`MAX_VALUES_PER_KEY`] values per key (the most
    /// frequent of the group), keys for which `skip` is true left out.
    pub values: Vec<(Triple<'a>, i64)>,
}

/// Folds the events of a group. `skip(project, key)` tells the keys known to be capped.
pub fn fold<'a>(events: &[(i64, &'a EnrichedEvent)], skip: impl Fn(i64, &str) -> bool) -> Folded<'a> {
    let mut names: HashMap<(i64, &'a str), NameDelta> = HashMap::default();
    let mut keys: HashMap<(i64, &'a str, &'a str), KeyDelta> = HashMap::default();
    let mut values: HashMap<(i64, &'a str), HashMap<Cow<'a, str>, i64>> = HashMap::default();
    for &(project_id, e) in events {
        let (name, t) = (e.event.name.as_str(), e.timestamp);
        names
            .entry((project_id, name))
            .and_modify(|d| {
                d.volume += 1;
                d.first_seen = d.first_seen.min(t);
                d.last_seen = d.last_seen.max(t);
            })
            .or_insert(NameDelta { volume: 1, first_seen: t, last_seen: t });
        for (key, v) in &e.event.properties {
            let bit = type_bit(v);
            keys.entry((project_id, name, key.as_str())).or_insert(KeyDelta { types: 0 }).types |= bit;
            if let Some(text) = value_text(v) {
                if !skip(project_id, key) {
                    *values.entry((project_id, key.as_str())).or_default().entry(text).or_default() += 1;
                }
            }
        }
    }
    let mut names: Vec<_> = names.into_iter().map(|((p, n), d)| ((p, clean(n)), d)).collect();
    names.sort_by(|a, b| a.0.cmp(&b.0));
    let mut keys: Vec<_> = keys.into_iter().map(|((p, n, k), d)| ((p, clean(n), clean(k)), d)).collect();
    keys.sort_by(|a, b| a.0.cmp(&b.0));
    let cap = usize::try_from(MAX_VALUES_PER_KEY).unwrap_or(usize::MAX);
    let mut out_values = Vec::new();
    for ((p, k), counts) in values {
        let mut counts: Vec<(Cow<'a, str>, i64)> = counts.into_iter().collect();
        if counts.len() > cap {
            // More distinct values in one group than the cap: keep the most frequent; the
            // database marks the key capped when its stored values reach the cap anyway.
            counts.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            counts.truncate(cap + 1);
        }
        let k = clean(k);
        out_values.extend(counts.into_iter().map(|(v, n)| ((p, k.clone(), v), n)));
    }
    out_values.sort_by(|a, b| a.0.cmp(&b.0));
    Folded { names, keys, values: out_values }
}

/// What this process remembers between groups: the catalog rows it knows are stored, the keys
/// known to be capped, and counters not yet written.
///
/// A group that brings something new (an event name, a key or type, a value) writes at once,
/// with every pending counter; otherwise counters wait in memory and are written at most every
/// [`FLUSH_INTERVAL`], by whichever write transaction comes next. Writing every group's
/// counters cost PostgreSQL several times the budget of the catalog (a few upserted rows per
/// group, on every group). *Trade-off:* counters pending when the process stops, or written in
/// a transaction that then fails to commit, are lost (at most one interval's worth); the known
/// sets are forgotten every [`KNOWN_TTL`], so a row whose write was rolled back is written again
/// soon. One process writes one database (as in production).
#[derive(Default)]
struct Memory {
    /// (project, name) stored.
    names: HashSet<(i64, String)>,
    /// (project, name, key) -> type bits stored.
    keys: HashMap<(i64, String, String), i32>,
    /// (project, key, value) stored.
    values: HashSet<(i64, String, String)>,
    /// project -> keys capped.
    capped: HashMap<i64, HashSet<String>>,
    /// Counters not yet written.
    pending: Pending,
    last_flush: Option<Instant>,
    known_since: Option<Instant>,
}

/// Counters not yet written.
#[derive(Default)]
struct Pending {
    /// (project, name) -> delta.
    names: HashMap<(i64, String), NameDelta>,
    /// (project, key, value) -> count.
    values: HashMap<(i64, String, String), i64>,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.names.is_empty() && self.values.is_empty()
    }

    fn add_name(&mut self, key: (i64, String), d: &NameDelta) {
        self.names
            .entry(key)
            .and_modify(|p| {
                p.volume += d.volume;
                p.first_seen = p.first_seen.min(d.first_seen);
                p.last_seen = p.last_seen.max(d.last_seen);
            })
            .or_insert_with(|| d.clone());
    }

    fn merge(&mut self, other: Pending) {
        for (k, d) in other.names {
            self.add_name(k, &d);
        }
        for (k, n) in other.values {
            *self.values.entry(k).or_default() += n;
        }
    }
}

static MEMORY: Mutex<Option<Memory>> = Mutex::new(None);

/// Longest a counter waits in memory.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(2);

/// How long the known sets are trusted.
const KNOWN_TTL: Duration = Duration::from_secs(60);

/// Bound on the remembered rows; past it the sets start over (the database stays authoritative).
const MAX_REMEMBERED: usize = 200_000;

const UPSERT_NAMES: &str = r#"INSERT INTO catalog_events AS c (project_id, name, shard, volume, first_seen, last_seen)
  SELECT t.p, t.n, (pg_backend_pid() % $6)::int2, t.v, t.f, t.l
  FROM unnest($1::int8[], $2::text[], $3::int8[], $4::timestamptz[], $5::timestamptz[]) AS t(p, n, v, f, l)
  ON CONFLICT (project_id, name, shard) DO UPDATE SET volume = c.volume + EXCLUDED.volume,
    first_seen = least(c.first_seen, EXCLUDED.first_seen), last_seen = greatest(c.last_seen, EXCLUDED.last_seen)"#;

const UPSERT_KEYS: &str = r#"INSERT INTO catalog_properties AS c (project_id, event_name, key, types)
  SELECT * FROM unnest($1::int8[], $2::text[], $3::text[], $4::int4[])
  ON CONFLICT (project_id, event_name, key) DO UPDATE SET types = c.types | EXCLUDED.types
  WHERE c.types | EXCLUDED.types <> c.types"#;

/// Counts the values of keys under the cap. Per key: values already stored in this shard are
/// counted; new ones are admitted (most frequent first) while the shard has room; when one
/// does not fit, the key is marked capped and none of its values are counted any more (the
/// data-modifying CTE `vals` runs although nothing reads it). The
/// state read here is the statement's snapshot, so concurrent writers may admit a few values
/// past the cap: the cap bounds the table, it is not an exact count. Answers the capped keys.
const UPSERT_VALUES: &str = r#"WITH i AS (
    SELECT * FROM unnest($1::int8[], $2::text[], $3::text[], $4::int8[]) AS t(project_id, key, value, n)
  ), sh AS (
    SELECT (pg_backend_pid() % $5)::int2 AS shard
  ), state AS (
    SELECT ck.project_id, ck.key,
      coalesce(sum(ck.distinct_values) FILTER (WHERE ck.shard = (SELECT shard FROM sh)), 0)::int AS used,
      bool_or(ck.capped) AS capped
    FROM catalog_keys ck
    WHERE (ck.project_id, ck.key) IN (SELECT DISTINCT project_id, key FROM i)
    GROUP BY 1, 2
  ), marked AS (
    SELECT i.*, coalesce(s.used, 0) AS used, coalesce(s.capped, false) AS capped,
      EXISTS (SELECT 1 FROM catalog_values c WHERE c.project_id = i.project_id AND c.key = i.key
              AND c.value = i.value AND c.shard = (SELECT shard FROM sh)) AS known
    FROM i LEFT JOIN state s USING (project_id, key)
  ), ranked AS (
    SELECT m.*, row_number() OVER (PARTITION BY m.project_id, m.key, m.known ORDER BY m.n DESC, m.value) AS r
    FROM marked m WHERE NOT m.capped
  ), per_key AS (
    SELECT project_id, key,
      (count(*) FILTER (WHERE NOT known AND r <= $6 - used))::int AS added,
      coalesce(bool_or(NOT known AND r > $6 - used), false) AS over
    FROM ranked GROUP BY 1, 2
  ), keys AS (
    INSERT INTO catalog_keys AS ck (project_id, key, shard, distinct_values, capped)
    SELECT project_id, key, (SELECT shard FROM sh), added, over FROM per_key WHERE added > 0 OR over ORDER BY 1, 2
    ON CONFLICT (project_id, key, shard) DO UPDATE SET distinct_values = ck.distinct_values + EXCLUDED.distinct_values,
      capped = ck.capped OR EXCLUDED.capped
    RETURNING project_id, key, capped
  ), vals AS (
    INSERT INTO catalog_values AS cv (project_id, key, value, shard, count)
    SELECT project_id, key, value, (SELECT shard FROM sh), n FROM ranked
    WHERE known OR r <= $6 - used
    ORDER BY 1, 2, 3
    ON CONFLICT (project_id, key, value, shard) DO UPDATE SET count = cv.count + EXCLUDED.count
  )
  SELECT project_id, key FROM keys WHERE capped
  UNION SELECT project_id, key FROM state WHERE capped"#;

/// Records the new events of a write group (sorted by project) in the catalog, inside the
/// group's transaction, as [`Memory`] says: what is new at once, counters at most every
/// [`FLUSH_INTERVAL`].
pub async fn record(
    tx: &deadpool_postgres::Transaction<'_>,
    events: &[(i64, &EnrichedEvent, &Derived)],
) -> Result<(), StoreError> {
    if events.is_empty() {
        return Ok(());
    }
    let pairs: Vec<(i64, &EnrichedEvent)> = events.iter().map(|(p, e, _)| (*p, *e)).collect();
    let now = Instant::now();
    // Everything under the lock is synchronous: the guard is gone before the first await.
    let (new_keys, flush) = {
        let mut guard = MEMORY.lock().unwrap_or_else(|p| p.into_inner());
        let mem = guard.get_or_insert_with(Memory::default);
        let remembered = mem.names.len() + mem.keys.len() + mem.values.len() + mem.capped.len();
        if mem.known_since.is_none_or(|t| now.duration_since(t) > KNOWN_TTL) || remembered > MAX_REMEMBERED {
            mem.names.clear();
            mem.keys.clear();
            mem.values.clear();
            mem.capped.clear();
            mem.known_since = Some(now);
        }
        let capped = &mem.capped;
        let folded = fold(&pairs, |p, k| capped.get(&p).is_some_and(|keys| keys.contains(k)));
        let mut fresh = false;
        for ((p, n), d) in &folded.names {
            let key = (*p, n.to_string());
            fresh |= !mem.names.contains(&key);
            mem.pending.add_name(key, d);
        }
        let new_keys: Vec<(i64, String, String, i32)> = folded
            .keys
            .iter()
            .map(|((p, n, k), d)| (*p, n.to_string(), k.to_string(), d.types))
            .filter(|(p, n, k, types)| {
                mem.keys.get(&(*p, n.clone(), k.clone())).is_none_or(|known| known | types != *known)
            })
            .collect();
        fresh |= !new_keys.is_empty();
        for ((p, k, v), n) in &folded.values {
            let key = (*p, k.to_string(), v.to_string());
            fresh |= !mem.values.contains(&key);
            *mem.pending.values.entry(key).or_default() += n;
        }
        let due = fresh || mem.last_flush.is_none_or(|t| now.duration_since(t) >= FLUSH_INTERVAL);
        let flush = (due && !mem.pending.is_empty()).then(|| {
            mem.last_flush = Some(now);
            std::mem::take(&mut mem.pending)
        });
        (new_keys, flush)
    };
    let Some(flush) = flush else { return Ok(()) };
    let written = write(tx, &new_keys, &flush).await;
    let mut guard = MEMORY.lock().unwrap_or_else(|p| p.into_inner());
    let mem = guard.get_or_insert_with(Memory::default);
    match written {
        Ok(capped) => {
            mem.names.extend(flush.names.into_keys());
            for (p, n, k, types) in new_keys {
                *mem.keys.entry((p, n, k)).or_default() |= types;
            }
            mem.values.extend(flush.values.into_keys());
            for (p, k) in capped {
                mem.capped.entry(p).or_default().insert(k);
            }
            Ok(())
        }
        Err(e) => {
            // Not written: the counters wait for the next flush.
            mem.pending.merge(flush);
            Err(e)
        }
    }
}

/// Writes the pending counters and the new keys (rows in key order, the order they are locked
/// in); returns the keys found capped.
async fn write(
    tx: &deadpool_postgres::Transaction<'_>,
    keys: &[(i64, String, String, i32)],
    pending: &Pending,
) -> Result<Vec<(i64, String)>, StoreError> {
    if !pending.names.is_empty() {
        let mut rows: Vec<(&(i64, String), &NameDelta)> = pending.names.iter().collect();
        rows.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let p: Vec<i64> = rows.iter().map(|(k, _)| k.0).collect();
        let n: Vec<&str> = rows.iter().map(|(k, _)| k.1.as_str()).collect();
        let v: Vec<i64> = rows.iter().map(|(_, d)| d.volume).collect();
        let f: Vec<DateTime<Utc>> = rows.iter().map(|(_, d)| d.first_seen).collect();
        let l: Vec<DateTime<Utc>> = rows.iter().map(|(_, d)| d.last_seen).collect();
        let stmt = tx.prepare_cached(UPSERT_NAMES).await?;
        tx.execute(&stmt, &[&p, &n, &v, &f, &l, &SHARDS]).await?;
    }
    if !keys.is_empty() {
        let mut keys: Vec<&(i64, String, String, i32)> = keys.iter().collect();
        keys.sort_unstable();
        let p: Vec<i64> = keys.iter().map(|k| k.0).collect();
        let n: Vec<&str> = keys.iter().map(|k| k.1.as_str()).collect();
        let k: Vec<&str> = keys.iter().map(|k| k.2.as_str()).collect();
        let ty: Vec<i32> = keys.iter().map(|k| k.3).collect();
        let stmt = tx.prepare_cached(UPSERT_KEYS).await?;
        tx.execute(&stmt, &[&p, &n, &k, &ty]).await?;
    }
    if pending.values.is_empty() {
        return Ok(Vec::new());
    }
    let mut rows: Vec<(&(i64, String, String), &i64)> = pending.values.iter().collect();
    rows.sort_unstable();
    let p: Vec<i64> = rows.iter().map(|(k, _)| k.0).collect();
    let k: Vec<&str> = rows.iter().map(|(k, _)| k.1.as_str()).collect();
    let v: Vec<&str> = rows.iter().map(|(k, _)| k.2.as_str()).collect();
    let c: Vec<i64> = rows.iter().map(|(_, c)| **c).collect();
    let stmt = tx.prepare_cached(UPSERT_VALUES).await?;
    let capped = tx.query(&stmt, &[&p, &k, &v, &c, &SHARDS, &MAX_VALUES_PER_KEY]).await?;
    Ok(capped.iter().map(|r| (r.get::<_, i64>(0), r.get::<_, String>(1))).collect())
}

/// An event name of the catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventEntry {
    /// The name.
    pub name: String,
    /// Events stored with it.
    pub volume: i64,
    /// Earliest event time.
    pub first_seen: DateTime<Utc>,
    /// Latest event time.
    pub last_seen: DateTime<Utc>,
}

/// The event names of a project, by volume (then name).
pub async fn events(pool: &Pool, project_id: i64, limit: i64) -> Result<Vec<EventEntry>, StoreError> {
    let client = pool.get().await?;
    let rows = client
        .query(
            "SELECT name, sum(volume)::int8, min(first_seen), max(last_seen) FROM catalog_events \
             WHERE project_id = $1 GROUP BY name ORDER BY 2 DESC, name COLLATE \"C\" LIMIT $2",
            &[&project_id, &limit],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| EventEntry { name: r.get(0), volume: r.get(1), first_seen: r.get(2), last_seen: r.get(3) })
        .collect())
}

/// A property key of an event name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PropertyEntry {
    /// The key.
    pub key: String,
    /// JSON types seen: `string`, `number`, `bool`, `object`, `array`, `null`.
    pub types: Vec<&'static str>,
}

/// The property keys of an event name, by key (bytewise); `None` when the name is unknown.
pub async fn properties(
    pool: &Pool,
    project_id: i64,
    name: &str,
    limit: i64,
) -> Result<Option<Vec<PropertyEntry>>, StoreError> {
    let client = pool.get().await?;
    let known = client
        .query_opt("SELECT 1 FROM catalog_events WHERE project_id = $1 AND name = $2 LIMIT 1", &[&project_id, &name])
        .await?;
    if known.is_none() {
        return Ok(None);
    }
    let rows = client
        .query(
            "SELECT key, types FROM catalog_properties WHERE project_id = $1 AND event_name = $2 \
             ORDER BY key COLLATE \"C\" LIMIT $3",
            &[&project_id, &name, &limit],
        )
        .await?;
    Ok(Some(rows.iter().map(|r| PropertyEntry { key: r.get(0), types: type_names(r.get(1)) }).collect()))
}

/// A counted value of a key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ValueEntry {
    /// The value in its text form (`pro`, `42`, `true`).
    pub value: String,
    /// Events that carried it.
    pub count: i64,
}

/// The top values of a key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyValues {
    /// The key.
    pub key: String,
    /// True when the key has too many distinct values to count: `values` are those counted
    /// before it reached the cap, and counts stopped growing then.
    pub capped: bool,
    /// The most frequent values, by count (then value).
    pub values: Vec<ValueEntry>,
}

/// The top `limit` values of a key over every event name; `None` when the key is unknown.
pub async fn values(pool: &Pool, project_id: i64, key: &str, limit: i64) -> Result<Option<KeyValues>, StoreError> {
    let client = pool.get().await?;
    let capped = client
        .query_opt(
            "SELECT bool_or(capped) FROM catalog_keys WHERE project_id = $1 AND key = $2 HAVING count(*) > 0",
            &[&project_id, &key],
        )
        .await?;
    let known = match capped {
        Some(row) => Some(row.get::<_, bool>(0)),
        // A key whose values were never counted (objects, arrays, long text) is still known.
        None => client
            .query_opt(
                "SELECT 1 FROM catalog_properties WHERE project_id = $1 AND key = $2 LIMIT 1",
                &[&project_id, &key],
            )
            .await?
            .map(|_| false),
    };
    let Some(capped) = known else { return Ok(None) };
    let rows = client
        .query(
            "SELECT value, sum(count)::int8 FROM catalog_values WHERE project_id = $1 AND key = $2 \
             GROUP BY value ORDER BY 2 DESC, value COLLATE \"C\" LIMIT $3",
            &[&project_id, &key, &limit],
        )
        .await?;
    Ok(Some(KeyValues {
        key: key.to_owned(),
        capped,
        values: rows.iter().map(|r| ValueEntry { value: r.get(0), count: r.get(1) }).collect(),
    }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;

    fn ev(name: &str, ts: &str, props: Value) -> EnrichedEvent {
        let raw = json!({"id": uuid::Uuid::now_v7(), "type": "track", "name": name, "timestamp": ts,
            "anonymous_id": "a", "properties": props});
        serde_json::from_value(json!({"event": raw, "received_at": ts, "timestamp": ts})).unwrap()
    }

    #[test]
    fn type_bits_name_in_fixed_order() {
        let check = |bits: i32, expected: &[&str]| assert_eq!(type_names(bits), expected, "{bits}");
        check(0, &[]);
        check(1, &["string"]);
        check(2 | 1, &["string", "number"]);
        check(63, &["string", "number", "bool", "object", "array", "null"]);
        check(16 | 4, &["bool", "array"]);
    }

    #[test]
    fn value_text_is_the_text_form_of_scalars() {
        let check = |v: Value, expected: Option<&str>| assert_eq!(value_text(&v).as_deref(), expected, "{v}");
        check(json!("pro"), Some("pro"));
        check(json!(42), Some("42"));
        check(json!(1.5), Some("1.5"));
        check(json!(true), Some("true"));
        check(json!("a\u{0}b"), Some("a\u{fffd}b"));
        check(json!(null), None);
        check(json!([1]), None);
        check(json!({"a": 1}), None);
        check(json!("x".repeat(MAX_VALUE_LEN + 1)), None);
        check(json!("x".repeat(MAX_VALUE_LEN)), Some("x".repeat(MAX_VALUE_LEN).as_str()));
    }

    #[test]
    fn fold_aggregates_names_keys_types_and_values() {
        let a = ev("signup", "2026-03-02T10:00:00Z", json!({"plan": "pro", "n": 1}));
        let b = ev("signup", "2026-03-01T10:00:00Z", json!({"plan": "free", "n": "x", "tags": [1]}));
        let c = ev("view", "2026-03-03T10:00:00Z", json!({"plan": "pro"}));
        let d = ev("view", "2026-03-03T11:00:00Z", json!({"secret": "s"}));
        let events = [(1, &a), (1, &b), (1, &c), (2, &d)];
        let f = fold(&events, |p, k| p == 2 && k == "secret");
        let t = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        assert_eq!(
            f.names,
            vec![
                (
                    (1, "signup".into()),
                    NameDelta {
                        volume: 2,
                        first_seen: t("2026-03-01T10:00:00Z"),
                        last_seen: t("2026-03-02T10:00:00Z")
                    }
                ),
                (
                    (1, "view".into()),
                    NameDelta {
                        volume: 1,
                        first_seen: t("2026-03-03T10:00:00Z"),
                        last_seen: t("2026-03-03T10:00:00Z")
                    }
                ),
                (
                    (2, "view".into()),
                    NameDelta {
                        volume: 1,
                        first_seen: t("2026-03-03T11:00:00Z"),
                        last_seen: t("2026-03-03T11:00:00Z")
                    }
                ),
            ]
        );
        let keys: Vec<(i64, &str, &str, i32)> =
            f.keys.iter().map(|((p, n, k), d)| (*p, n.as_ref(), k.as_ref(), d.types)).collect();
        assert_eq!(
            keys,
            vec![
                (1, "signup", "n", 1 | 2),
                (1, "signup", "plan", 1),
                (1, "signup", "tags", 16),
                (1, "view", "plan", 1),
                (2, "view", "secret", 1),
            ]
        );
        let values: Vec<(i64, &str, &str, i64)> =
            f.values.iter().map(|((p, k, v), n)| (*p, k.as_ref(), v.as_ref(), *n)).collect();
        // `secret` of project 2 is capped: not counted; arrays are never counted.
        assert_eq!(values, vec![(1, "n", "1", 1), (1, "n", "x", 1), (1, "plan", "free", 1), (1, "plan", "pro", 2)]);
    }

    #[test]
    fn fold_keeps_at_most_cap_plus_one_values_per_key() {
        let cap = usize::try_from(MAX_VALUES_PER_KEY).unwrap();
        let events: Vec<EnrichedEvent> =
            (0..cap + 50).map(|i| ev("e", "2026-03-02T10:00:00Z", json!({"id": i, "c": "same"}))).collect();
        let pairs: Vec<(i64, &EnrichedEvent)> = events.iter().map(|e| (1, e)).collect();
        let f = fold(&pairs, |_, _| false);
        assert_eq!(f.values.iter().filter(|((_, k, _), _)| k == "id").count(), cap + 1);
        assert_eq!(f.values.iter().find(|((_, k, _), _)| k == "c").map(|(_, n)| *n), Some((cap + 50) as i64));
    }
}
