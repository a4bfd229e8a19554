//! The first read endpoint: events per day of the read key's project.

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::Json;
use chrono::NaiveDate;
use protocol::codes::EnvelopeCode;
use protocol::envelope::EnvelopeError;
use serde::{Deserialize, Serialize};

use super::auth::authorize_read;
use super::{AppError, AppState};
use crate::store::{self, events::DayCount};

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
