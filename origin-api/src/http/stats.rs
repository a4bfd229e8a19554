//! The first read endpoint: events per day of the read key's project.

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::Json;
use chrono::NaiveDate;
use protocol::codes::EnvelopeCode;
use protocol::envelope::EnvelopeError;
use serde::{Deserialize, Serialize};

use super::{header_str, AppError, AppState};
use crate::store::{self, events::DayCount, projects::ResolvedKey};

/// Query string of `/v1/stats/events-per-day`.
#[derive(Debug, Deserialize)]
pub struct DailyQuery {
    from: Option<String>,
    to: Option<String>,
    #[serde(default)]
    include_bots: Option<String>,
}

/// Answer of `/v1/stats/events-per-day`.
#[derive(Debug, Serialize)]
pub struct DailyResponse {
    project_id: i64,
    timezone: String,
    days: Vec<DayCount>,
}

/// Resolves `Authorization: Bearer <key>` to a project, requiring the read (or admin) scope.
pub async fn authorize_read(state: &AppState, headers: &HeaderMap) -> Result<ResolvedKey, AppError> {
    let key = header_str(headers, "authorization").and_then(|h| h.strip_prefix("Bearer ")).map(str::trim).ok_or_else(
        || EnvelopeError::new(EnvelopeCode::MissingKey, "send the read key as authorization: bearer <key>"),
    )?;
    match store::projects::resolve_key(&state.pool, key).await? {
        None => Err(EnvelopeError::new(EnvelopeCode::InvalidKey, "unknown key").into()),
        Some(k) if k.revoked => Err(EnvelopeError::new(EnvelopeCode::RevokedKey, "this key was revoked").into()),
        Some(k) if k.scope == "write" => {
            Err(EnvelopeError::new(EnvelopeCode::InsufficientScope, "this endpoint needs a read key").into())
        }
        Some(k) => Ok(k),
    }
}

/// Resolves `Authorization: Bearer <key>` to a project, requiring the admin scope.
pub async fn authorize_admin(state: &AppState, headers: &HeaderMap) -> Result<ResolvedKey, AppError> {
    let key = authorize_read(state, headers).await?;
    if key.scope != "admin" {
        return Err(EnvelopeError::new(EnvelopeCode::InsufficientScope, "this endpoint needs the admin key").into());
    }
    Ok(key)
}

/// `DELETE /v1/persons/{distinct_id}` (admin key): deletes the person of that id with all their
/// events and sessions, and tombstones their ids so late events never bring them back.
pub async fn delete_person(
    State(state): State<AppState>,
    headers: HeaderMap,
    axum::extract::Path(distinct_id): axum::extract::Path<String>,
) -> Result<Json<store::persons::Deleted>, AppError> {
    let key = authorize_admin(&state, &headers).await?;
    if distinct_id.is_empty() || distinct_id.len() > protocol::limits::MAX_ID_LEN {
        return Err(EnvelopeError::new(EnvelopeCode::InvalidQuery, "distinct id must be 1 to 200 bytes").into());
    }
    let deleted = store::persons::delete_person(&state.pool, key.project_id, &distinct_id).await?;
    tracing::info!(
        project_id = key.project_id,
        ids = deleted.distinct_ids.len(),
        events = deleted.events,
        "person deleted"
    );
    Ok(Json(deleted))
}

fn date(field: &str, v: Option<&str>) -> Result<NaiveDate, EnvelopeError> {
    let v =
        v.ok_or_else(|| EnvelopeError::new(EnvelopeCode::InvalidQuery, format!("{field} is required (yyyy-mm-dd)")))?;
    v.parse().map_err(|_| EnvelopeError::new(EnvelopeCode::InvalidQuery, format!("{field} is not a date (yyyy-mm-dd)")))
}

/// `GET /v1/stats/events-per-day?from=2026-12-01&to=2026-12-07[&include_bots=true]`.
pub async fn events_per_day(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<DailyQuery>,
) -> Result<Json<DailyResponse>, AppError> {
    let key = authorize_read(&state, &headers).await?;
    let from = date("from", q.from.as_deref())?;
    let to = date("to", q.to.as_deref())?;
    if to < from || (to - from).num_days() > 3660 {
        return Err(EnvelopeError::new(
            EnvelopeCode::InvalidQuery,
            "to must be on or after from, at most 10 years apart",
        )
        .into());
    }
    let include_bots = match q.include_bots.as_deref() {
        None | Some("false") | Some("0") => false,
        Some("true") | Some("1") => true,
        Some(_) => {
            return Err(EnvelopeError::new(EnvelopeCode::InvalidQuery, "include_bots must be true or false").into())
        }
    };
    let days =
        store::events::events_per_day(&state.pool, key.project_id, &key.timezone, from, to, include_bots).await?;
    Ok(Json(DailyResponse { project_id: key.project_id, timezone: key.timezone, days }))
}

/// Query string of `/v1/ingestion/warnings`.
#[derive(Debug, Deserialize)]
pub struct WarningsQuery {
    days: Option<i32>,
}

/// `GET /v1/ingestion/warnings?days=7`: dropped events by day and reason, with examples.
pub async fn ingestion_warnings(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<WarningsQuery>,
) -> Result<Json<serde_json::Value>, AppError> {
    let key = authorize_read(&state, &headers).await?;
    let days = q.days.unwrap_or(7);
    if !(0..=90).contains(&days) {
        return Err(EnvelopeError::new(EnvelopeCode::InvalidQuery, "days must be between 0 and 90").into());
    }
    let warnings = store::warnings::list(&state.pool, key.project_id, days).await?;
    Ok(Json(serde_json::json!({"project_id": key.project_id, "warnings": warnings})))
}
