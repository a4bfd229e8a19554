//! Writes the identity plan of a batch (see `ingest::identity`): persons, their distinct ids,
//! merges and properties, inside the batch's write transaction.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use protocol::forward::EnrichedEvent;
use serde_json::Value;
use uuid::Uuid;

use super::StoreError;
use crate::ingest::identity::{self, Known};

/// (project, distinct id) pairs this process has seen mapped to a person. A mapping is never
/// removed (merges re-point it, they do not delete it), so an event that only needs "this id has
/// a person" and whose id is in here needs no database work at all: that is most events. Capped
/// by clearing, which only costs a few extra lookups.
/// Person deletion (GDPR) must clear the entries of the ids it deletes.
/// Keyed by project, then id: an id is looked up as a `&str`, without a copy per event.
static MAPPED: std::sync::LazyLock<std::sync::Mutex<HashMap<i64, HashSet<String>>>> =
    std::sync::LazyLock::new(Default::default);
const MAPPED_CAP: usize = 1_000_000;

/// True when the event needs identity work beyond "its id has a person".
fn needs_identity(e: &EnrichedEvent) -> bool {
    !matches!(e.event.kind, protocol::EventType::Track | protocol::EventType::Page)
        || !e.event.set.is_empty()
        || !e.event.set_once.is_empty()
}

/// Remembers that `ids` have persons; called only after the transaction that mapped them
/// committed (a rolled-back mapping must not be skipped later).
pub fn remember(project_id: i64, ids: Vec<String>) {
    let mut mapped = MAPPED.lock().unwrap_or_else(|p| p.into_inner());
    if mapped.values().map(HashSet::len).sum::<usize>() > MAPPED_CAP {
        mapped.clear();
    }
    mapped.entry(project_id).or_default().extend(ids);
}

/// Forgets every cached mapping (after person deletions).
pub fn forget_mapped() {
    MAPPED.lock().unwrap_or_else(|p| p.into_inner()).clear();
}

/// Resolves the persons of a batch's new events. Returns the ids that now have a person (to
/// [`remember`] once the transaction committed).
pub async fn resolve(
    tx: &deadpool_postgres::Transaction<'_>,
    project_id: i64,
    events: &[&EnrichedEvent],
) -> Result<Vec<String>, StoreError> {
    let mut ordered: Vec<(&EnrichedEvent, &str)> = {
        let mapped = MAPPED.lock().unwrap_or_else(|p| p.into_inner());
        events
            .iter()
            .filter_map(|e| e.event.distinct_id().or(e.visitor_hash.as_deref()).map(|d| (*e, d)))
            .filter(|(e, d)| needs_identity(e) || !mapped.get(&project_id).is_some_and(|ids| ids.contains(*d)))
            .collect()
    };
    if ordered.is_empty() {
        return Ok(Vec::new());
    }
    ordered.sort_by_key(|(e, _)| e.timestamp);
    let ids: Vec<String> = ordered
        .iter()
        .flat_map(|(e, d)| identity::ids_of(&e.event, d))
        .map(str::to_owned)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();

    // Serialise identity work per distinct id across writers and replicas; locks are taken in
    // one sorted order, so two batches can never wait on each other in a cycle.
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended($1::text || ':' || id, 0)) FROM unnest($2::text[]) AS id",
        &[&project_id.to_string(), &ids],
    )
    .await?;
    let known: HashMap<String, Known> = tx
        .query(
            "SELECT d.distinct_id, d.person_id, p.is_identified
             FROM person_distinct_ids d JOIN persons p ON p.project_id = d.project_id AND p.person_id = d.person_id
             WHERE d.project_id = $1 AND d.distinct_id = ANY($2)",
            &[&project_id, &ids],
        )
        .await?
        .iter()
        .map(|r| (r.get::<_, String>(0), Known { person: r.get(1), identified: r.get(2) }))
        .collect();

    let plan = identity::plan(ordered.iter().map(|(e, d)| (&e.event, *d)), &known, Uuid::now_v7);

    if !plan.create.is_empty() {
        let (pids, identified): (Vec<Uuid>, Vec<bool>) = plan.create.iter().copied().unzip();
        tx.execute(
            "INSERT INTO persons (project_id, person_id, is_identified) SELECT $1, * FROM unnest($2::uuid[], $3::bool[])",
            &[&project_id, &pids, &identified],
        )
        .await?;
    }
    if !plan.map.is_empty() {
        // One row per id (the last mapping wins): an upsert may touch a row only once.
        let last: BTreeMap<&str, Uuid> = plan.map.iter().map(|(d, p)| (d.as_str(), *p)).collect();
        let (dids, pids): (Vec<&str>, Vec<Uuid>) = last.into_iter().unzip();
        tx.execute(
            "INSERT INTO person_distinct_ids (project_id, distinct_id, person_id)
             SELECT $1, * FROM unnest($2::text[], $3::uuid[])
             ON CONFLICT (project_id, distinct_id) DO UPDATE SET person_id = EXCLUDED.person_id",
            &[&project_id, &dids, &pids],
        )
        .await?;
    }
    for (from, into) in &plan.merge {
        tx.execute(
            "UPDATE person_distinct_ids SET person_id = $3 WHERE project_id = $1 AND person_id = $2",
            &[&project_id, from, into],
        )
        .await?;
        // The surviving person's own properties win over the merged one's.
        tx.execute(
            "UPDATE persons AS p SET properties = f.properties || p.properties,
                    is_identified = p.is_identified OR f.is_identified, updated_at = now()
             FROM persons AS f WHERE p.project_id = $1 AND p.person_id = $3 AND f.project_id = $1 AND f.person_id = $2",
            &[&project_id, from, into],
        )
        .await?;
        tx.execute("DELETE FROM persons WHERE project_id = $1 AND person_id = $2", &[&project_id, from]).await?;
    }
    if !plan.identify.is_empty() {
        tx.execute(
            "UPDATE persons SET is_identified = true, updated_at = now() WHERE project_id = $1 AND person_id = ANY($2)",
            &[&project_id, &plan.identify],
        )
        .await?;
    }
    if !plan.properties.is_empty() {
        let pids: Vec<Uuid> = plan.properties.iter().map(|(p, _, _)| *p).collect();
        let sets: Vec<Value> = plan.properties.iter().map(|(_, s, _)| Value::Object(s.clone())).collect();
        let onces: Vec<Value> = plan.properties.iter().map(|(_, _, o)| Value::Object(o.clone())).collect();
        // set_once fills only what is missing; set overwrites.
        tx.execute(
            "UPDATE persons AS p SET properties = (u.once || p.properties) || u.set, updated_at = now()
             FROM unnest($2::uuid[], $3::jsonb[], $4::jsonb[]) AS u(person_id, set, once)
             WHERE p.project_id = $1 AND p.person_id = u.person_id",
            &[&project_id, &pids, &sets, &onces],
        )
        .await?;
    }
    if plan.refused_merges > 0 {
        metrics::counter!("nexus_origin_identity_merges_refused_total").increment(plan.refused_merges as u64);
    }
    Ok(ids)
}

/// The person a distinct id belongs to, with its properties (tests and the person API).
pub async fn person_of(
    pool: &deadpool_postgres::Pool,
    project_id: i64,
    distinct_id: &str,
) -> Result<Option<(Uuid, Value, bool)>, StoreError> {
    let client = pool.get().await?;
    let row = client
        .query_opt(
            "SELECT p.person_id, p.properties, p.is_identified FROM person_distinct_ids d
             JOIN persons p ON p.project_id = d.project_id AND p.person_id = d.person_id
             WHERE d.project_id = $1 AND d.distinct_id = $2",
            &[&project_id, &distinct_id],
        )
        .await?;
    Ok(row.map(|r| (r.get(0), r.get(1), r.get(2))))
}

/// What a person deletion removed.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Deleted {
    /// Distinct ids tombstoned.
    pub distinct_ids: Vec<String>,
    /// Events deleted.
    pub events: u64,
    /// Sessions deleted.
    pub sessions: u64,
}

/// Deletes the person of `distinct_id` with all their events and sessions, and tombstones every
/// id of theirs. Idempotent: deleting an unknown or deleted id tombstones just that id.
pub async fn delete_person(
    pool: &deadpool_postgres::Pool,
    project_id: i64,
    distinct_id: &str,
) -> Result<Deleted, StoreError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    // Same lock as ingest takes for this id: no batch can map it to a person meanwhile.
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended($1::text || ':' || $2, 0))",
        &[&project_id.to_string(), &distinct_id],
    )
    .await?;
    let mut ids: Vec<String> = tx
        .query(
            "SELECT d2.distinct_id FROM person_distinct_ids d
             JOIN person_distinct_ids d2 ON d2.project_id = d.project_id AND d2.person_id = d.person_id
             WHERE d.project_id = $1 AND d.distinct_id = $2",
            &[&project_id, &distinct_id],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if !ids.iter().any(|i| i == distinct_id) {
        ids.push(distinct_id.to_owned());
    }
    tx.execute(
        "INSERT INTO deleted_distinct_ids (project_id, distinct_id) SELECT $1, unnest($2::text[]) ON CONFLICT DO NOTHING",
        &[&project_id, &ids],
    )
    .await?;
    let events = tx
        .execute(
            "WITH gone AS (DELETE FROM events WHERE project_id = $1 AND distinct_id = ANY($2) RETURNING event_id, \"timestamp\"),
             dirty AS (INSERT INTO rollup_dirty (project_id, utc_day)
               SELECT DISTINCT $1::bigint, (\"timestamp\" AT TIME ZONE 'UTC')::date FROM gone)
             DELETE FROM event_ids i USING gone WHERE i.project_id = $1 AND i.event_id = gone.event_id",
            &[&project_id, &ids],
        )
        .await?;
    let sessions = tx
        .execute("DELETE FROM sessions WHERE project_id = $1 AND distinct_id = ANY($2)", &[&project_id, &ids])
        .await?;
    tx.execute(
        "DELETE FROM persons WHERE project_id = $1 AND person_id IN
           (SELECT person_id FROM person_distinct_ids WHERE project_id = $1 AND distinct_id = ANY($2))",
        &[&project_id, &ids],
    )
    .await?;
    tx.execute("DELETE FROM person_distinct_ids WHERE project_id = $1 AND distinct_id = ANY($2)", &[&project_id, &ids])
        .await?;
    tx.commit().await?;
    forget_mapped();
    Ok(Deleted { distinct_ids: ids, events, sessions })
}

/// The ids among `ids` whose person was deleted.
pub async fn tombstoned(
    pool: &deadpool_postgres::Pool,
    project_id: i64,
    ids: &[&str],
) -> Result<HashSet<String>, StoreError> {
    if ids.is_empty() {
        return Ok(HashSet::new());
    }
    let client = pool.get().await?;
    let stmt = client
        .prepare_cached("SELECT distinct_id FROM deleted_distinct_ids WHERE project_id = $1 AND distinct_id = ANY($2)")
        .await?;
    Ok(client.query(&stmt, &[&project_id, &ids]).await?.iter().map(|r| r.get(0)).collect())
}
