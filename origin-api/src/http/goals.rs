//! Goals: `POST /v1/goals` and `DELETE /v1/goals/{id}` (admin key), `GET /v1/goals` and
//! `POST /v1/query/goals` (read key). The project comes from the key alone.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use protocol::codes::EnvelopeCode;
use protocol::envelope::EnvelopeError;
use serde::Serialize;

use super::auth::{authorize_admin, authorize_read};
use super::{AppError, AppState};
use crate::query::goals::{self, GoalsQuery, GoalsResponse, SavedGoal};

/// `POST /v1/goals`: saves a goal, answers it with its id (201).
pub async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<SavedGoal>), AppError> {
    let key = authorize_admin(&state, &headers).await?;
    let body = super::json_body(&body)?;
    Ok((StatusCode::CREATED, Json(goals::create(&state.pool, key.project_id, &body).await?)))
}

/// The answer of `GET /v1/goals`.
#[derive(Debug, Serialize)]
pub struct GoalList {
    /// The saved goals, by id.
    pub goals: Vec<SavedGoal>,
}

/// `GET /v1/goals`.
pub async fn list(State(state): State<AppState>, headers: HeaderMap) -> Result<Json<GoalList>, AppError> {
    let key = authorize_read(&state, &headers).await?;
    Ok(Json(GoalList { goals: goals::list(&state.pool, key.project_id).await? }))
}

/// `DELETE /v1/goals/{id}`: 204, or 404 when the project has no such goal.
pub async fn delete(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, AppError> {
    let key = authorize_admin(&state, &headers).await?;
    let deleted = match id.parse::<i64>() {
        Ok(id) => goals::delete(&state.pool, key.project_id, id).await?,
        Err(_) => false,
    };
    if deleted {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(EnvelopeError::new(EnvelopeCode::NotFound, "no such goal").into())
    }
}

/// `POST /v1/query/goals`.
pub async fn query(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<GoalsResponse>, AppError> {
    let (key, common, q) = super::query::prepare::<GoalsQuery>(&state, &headers, &body).await?;
    Ok(Json(goals::run(&state.pool, key.project_id, &common, &q).await?))
}
