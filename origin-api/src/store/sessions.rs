//! Sessions, pre-aggregated on ingest: start, end, counts, entry and exit page, attribution.
//!
//! Each batch's new events are folded per session in memory ([`fold`], pure), then merged into
//! the stored row by one upsert whose rules hold whatever order events arrive in: the earliest
//! event decides attribution and the entry page, the latest page view the exit page, and counts
//! add up (only new events reach here, so a re-delivery never counts twice).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use protocol::forward::EnrichedEvent;
use protocol::EventType;

use super::StoreError;
use crate::ingest::enrich::Derived;

/// One session's share of a batch.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionDelta {
    /// Session id from the SDK.
    pub session_id: String,
    /// Person of the earliest event.
    pub distinct_id: String,
    /// Earliest event time.
    pub started_at: DateTime<Utc>,
    /// Latest event time.
    pub ended_at: DateTime<Utc>,
    /// Page views in the batch.
    pub pageviews: i32,
    /// Events in the batch.
    pub events: i32,
    /// Earliest page view: time and path.
    pub entry: Option<(DateTime<Utc>, Option<String>)>,
    /// Latest page view: time and path.
    pub exit: Option<(DateTime<Utc>, Option<String>)>,
    /// Attribution of the earliest event.
    pub first: Attribution,
}

/// Where the session came from (from its earliest event).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Attribution {
    /// Raw referrer.
    pub referrer: Option<String>,
    /// Referrer host.
    pub referrer_domain: Option<String>,
    /// Channel grouping.
    pub channel: Option<String>,
    /// UTM source, medium, campaign, term, content.
    pub utm: [Option<String>; 5],
    /// Country.
    pub country: Option<String>,
    /// Browser.
    pub browser: Option<String>,
    /// Operating system.
    pub os: Option<String>,
    /// Device type.
    pub device_type: Option<String>,
}

fn attribution(e: &EnrichedEvent, d: &Derived) -> Attribution {
    Attribution {
        referrer: e.event.context.referrer.clone(),
        referrer_domain: d.referrer_domain.clone(),
        channel: d.channel.map(str::to_owned),
        utm: d.utm.clone(),
        country: e.geo.country.clone(),
        browser: d.browser.clone(),
        os: d.os.clone(),
        device_type: d.device_type.map(str::to_owned),
    }
}

/// Folds a batch's new events into one delta per session (events without a session are skipped).
pub fn fold(events: &[(&EnrichedEvent, &Derived)]) -> Vec<SessionDelta> {
    let mut out: BTreeMap<&str, SessionDelta> = BTreeMap::new();
    for (e, d) in events {
        let Some(sid) = e.event.session_id.as_deref() else { continue };
        let t = e.timestamp;
        let is_page = e.event.kind == EventType::Page;
        let path = &e.event.context.path;
        let s = out.entry(sid).or_insert_with(|| SessionDelta {
            session_id: sid.to_owned(),
            distinct_id: e.event.distinct_id().or(e.visitor_hash.as_deref()).unwrap_or_default().to_owned(),
            started_at: t,
            ended_at: t,
            pageviews: 0,
            events: 0,
            entry: None,
            exit: None,
            first: attribution(e, d),
        });
        if t < s.started_at {
            s.started_at = t;
            s.first = attribution(e, d);
            s.distinct_id = e.event.distinct_id().or(e.visitor_hash.as_deref()).unwrap_or_default().to_owned();
        }
        s.ended_at = s.ended_at.max(t);
        s.events += 1;
        if is_page {
            s.pageviews += 1;
            if s.entry.as_ref().is_none_or(|(at, _)| t < *at) {
                s.entry = Some((t, path.clone()));
            }
            if s.exit.as_ref().is_none_or(|(at, _)| t >= *at) {
                s.exit = Some((t, path.clone()));
            }
        }
    }
    out.into_values().collect()
}

/// Merges the new events' deltas into `sessions` (rows locked in (project, session) order).
/// `events` are sorted by project.
pub async fn upsert(
    tx: &deadpool_postgres::Transaction<'_>,
    events: &[(i64, &EnrichedEvent, &Derived)],
) -> Result<(), StoreError> {
    let mut projects: Vec<i64> = Vec::new();
    let mut deltas: Vec<SessionDelta> = Vec::new();
    for chunk in events.chunk_by(|a, b| a.0 == b.0) {
        let folded = fold(&chunk.iter().map(|(_, e, d)| (*e, *d)).collect::<Vec<_>>());
        projects.extend(std::iter::repeat_n(chunk[0].0, folded.len()));
        deltas.extend(folded);
    }
    if deltas.is_empty() {
        return Ok(());
    }
    let col = |f: &dyn Fn(&SessionDelta) -> Option<String>| deltas.iter().map(f).collect::<Vec<Option<String>>>();
    let sid: Vec<&str> = deltas.iter().map(|d| d.session_id.as_str()).collect();
    let did: Vec<&str> = deltas.iter().map(|d| d.distinct_id.as_str()).collect();
    let started: Vec<DateTime<Utc>> = deltas.iter().map(|d| d.started_at).collect();
    let ended: Vec<DateTime<Utc>> = deltas.iter().map(|d| d.ended_at).collect();
    let pageviews: Vec<i32> = deltas.iter().map(|d| d.pageviews).collect();
    let counts: Vec<i32> = deltas.iter().map(|d| d.events).collect();
    let entry_at: Vec<Option<DateTime<Utc>>> = deltas.iter().map(|d| d.entry.as_ref().map(|e| e.0)).collect();
    let exit_at: Vec<Option<DateTime<Utc>>> = deltas.iter().map(|d| d.exit.as_ref().map(|e| e.0)).collect();
    let entry_path = col(&|d| d.entry.as_ref().and_then(|e| e.1.clone()));
    let exit_path = col(&|d| d.exit.as_ref().and_then(|e| e.1.clone()));
    let referrer = col(&|d| d.first.referrer.clone());
    let referrer_domain = col(&|d| d.first.referrer_domain.clone());
    let channel = col(&|d| d.first.channel.clone());
    let utm: Vec<Vec<Option<String>>> = (0..5).map(|i| col(&|d| d.first.utm[i].clone())).collect();
    let country = col(&|d| d.first.country.clone());
    let browser = col(&|d| d.first.browser.clone());
    let os = col(&|d| d.first.os.clone());
    let device = col(&|d| d.first.device_type.clone());
    let stmt = tx.prepare_cached(&UPSERT).await?;
    tx.execute(
        &stmt,
        &[
            &projects,
            &sid,
            &did,
            &started,
            &ended,
            &pageviews,
            &counts,
            &entry_at,
            &entry_path,
            &exit_at,
            &exit_path,
            &referrer,
            &referrer_domain,
            &channel,
            &utm[0],
            &utm[1],
            &utm[2],
            &utm[3],
            &utm[4],
            &country,
            &browser,
            &os,
            &device,
        ],
    )
    .await?;
    Ok(())
}

/// In `DO UPDATE SET` every expression sees the row as it was, so the CASEs can compare old and
/// new start times while both are being replaced.
const UPSERT_HEAD: &str = r#"INSERT INTO sessions AS s (project_id, session_id, distinct_id, started_at, ended_at,
      pageviews, events, entry_at, entry_path, exit_at, exit_path, referrer, referrer_domain, channel,
      utm_source, utm_medium, utm_campaign, utm_term, utm_content, country, browser, os, device_type)
    SELECT * FROM unnest($1::int8[], $2::text[], $3::text[], $4::timestamptz[], $5::timestamptz[], $6::int4[],
      $7::int4[], $8::timestamptz[], $9::text[], $10::timestamptz[], $11::text[], $12::text[], $13::text[],
      $14::text[], $15::text[], $16::text[], $17::text[], $18::text[], $19::text[], $20::text[], $21::text[],
      $22::text[], $23::text[])
    ON CONFLICT (project_id, session_id) DO UPDATE SET
      started_at = least(s.started_at, EXCLUDED.started_at),
      ended_at = greatest(s.ended_at, EXCLUDED.ended_at),
      pageviews = s.pageviews + EXCLUDED.pageviews,
      events = s.events + EXCLUDED.events,
      entry_at = CASE WHEN EXCLUDED.entry_at < s.entry_at OR s.entry_at IS NULL THEN EXCLUDED.entry_at ELSE s.entry_at END,
      entry_path = CASE WHEN EXCLUDED.entry_at < s.entry_at OR s.entry_at IS NULL THEN EXCLUDED.entry_path ELSE s.entry_path END,
      exit_at = CASE WHEN EXCLUDED.exit_at >= s.exit_at OR s.exit_at IS NULL THEN EXCLUDED.exit_at ELSE s.exit_at END,
      exit_path = CASE WHEN EXCLUDED.exit_at >= s.exit_at OR s.exit_at IS NULL THEN EXCLUDED.exit_path ELSE s.exit_path END"#;

/// Columns that come from the session's earliest event (attribution and who it was).
const FROM_FIRST_EVENT: [&str; 13] = [
    "distinct_id",
    "referrer",
    "referrer_domain",
    "channel",
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "utm_term",
    "utm_content",
    "country",
    "browser",
    "os",
    "device_type",
];

/// The full upsert: [`UPSERT_HEAD`] plus one "take it from the earlier event" rule per column.
static UPSERT: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let rules: Vec<String> = FROM_FIRST_EVENT
        .iter()
        .map(|c| format!("{c} = CASE WHEN EXCLUDED.started_at < s.started_at THEN EXCLUDED.{c} ELSE s.{c} END"))
        .collect();
    format!("{UPSERT_HEAD}, {}", rules.join(", "))
});
