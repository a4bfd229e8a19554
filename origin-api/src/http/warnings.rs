//! Ingestion warnings: the project's dropped events by day and reason.

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::Json;
use protocol::codes::EnvelopeCode;
use protocol::envelope::EnvelopeError;
use serde::Deserialize;

use super::auth::authorize_read;
use super::{AppError, AppState};
use crate::store;

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
