//! Ingestion warnings: every dropped event counted per project, day and reason, with examples.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use deadpool_postgres::Pool;
use serde::Serialize;
use serde_json::{json, Value};

use super::StoreError;
use crate::ingest::DropReason;

/// One dropped event, as remembered for the project.
#[derive(Debug, Clone)]
pub struct DroppedEvent {
    /// Why (the closed set of the ingest pipeline).
    pub reason: DropReason,
    /// Field at fault, if known.
    pub field: Option<String>,
    /// Event id, if it had a readable one.
    pub event_id: Option<String>,
    /// Event name, if readable.
    pub name: Option<String>,
}

/// Examples kept per (day, reason).
const EXAMPLES: usize = 5;

/// Records a batch's drops: one upsert per reason.
pub async fn record(pool: &Pool, project_id: i64, at: DateTime<Utc>, drops: &[DroppedEvent]) -> Result<(), StoreError> {
    if drops.is_empty() {
        return Ok(());
    }
    let mut by_reason: BTreeMap<&str, (i64, Vec<Value>)> = BTreeMap::new();
    for d in drops {
        let entry = by_reason.entry(d.reason.as_str()).or_default();
        entry.0 += 1;
        if entry.1.len() < EXAMPLES {
            // Names and ids are cut: an example is a hint, not a copy of hostile input.
            let cut = |s: &Option<String>| s.as_ref().map(|v| v.chars().take(120).collect::<String>());
            entry.1.push(json!({"at": at, "field": d.field, "event_id": cut(&d.event_id), "name": cut(&d.name)}));
        }
    }
    let reasons: Vec<&str> = by_reason.keys().copied().collect();
    let counts: Vec<i64> = by_reason.values().map(|v| v.0).collect();
    let examples: Vec<Value> = by_reason.values().map(|v| Value::Array(v.1.clone())).collect();
    let client = pool.get().await?;
    client
        .execute(
            "INSERT INTO ingestion_warnings AS w (project_id, day, reason, count, last_seen, examples)
             SELECT $1, $2::timestamptz::date, r, c, $2, e FROM unnest($3::text[], $4::int8[], $5::jsonb[]) AS u(r, c, e)
             ON CONFLICT (project_id, day, reason) DO UPDATE SET
               count = w.count + EXCLUDED.count,
               last_seen = greatest(w.last_seen, EXCLUDED.last_seen),
               examples = jsonb_path_query_array(EXCLUDED.examples || w.examples, '$[0 to 4]')",
            &[&project_id, &at, &reasons, &counts, &examples],
        )
        .await?;
    Ok(())
}

/// One row of the warnings endpoint.
#[derive(Debug, Clone, Serialize)]
pub struct Warning {
    /// Day (UTC).
    pub day: NaiveDate,
    /// Reason.
    pub reason: String,
    /// Dropped events that day.
    pub count: i64,
    /// Last drop.
    pub last_seen: DateTime<Utc>,
    /// Recent examples.
    pub examples: Value,
}

/// Warnings of the last `days` days, newest first.
pub async fn list(pool: &Pool, project_id: i64, days: i32) -> Result<Vec<Warning>, StoreError> {
    let client = pool.get().await?;
    let rows = client
        .query(
            "SELECT day, reason, count, last_seen, examples FROM ingestion_warnings
             WHERE project_id = $1 AND day >= current_date - $2::int ORDER BY day DESC, count DESC",
            &[&project_id, &days],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| Warning { day: r.get(0), reason: r.get(1), count: r.get(2), last_seen: r.get(3), examples: r.get(4) })
        .collect())
}
