//! Persons: GDPR deletion.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use protocol::codes::EnvelopeCode;
use protocol::envelope::EnvelopeError;

use super::auth::authorize_admin;
use super::{AppError, AppState};
use crate::store;

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
