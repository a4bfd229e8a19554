//! Saved cohorts: `POST /v1/cohorts` and `DELETE /v1/cohorts/{id}` (admin key),
//! `POST /v1/cohorts/{id}/refresh` (admin key), `GET /v1/cohorts` and `GET /v1/cohorts/{id}`
//! (read key). The project always comes from the key: another project's cohort is not found.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use protocol::codes::EnvelopeCode;
use protocol::envelope::EnvelopeError;
use serde_json::{json, Value};

use super::auth::{authorize_admin, authorize_read};
use super::{AppError, AppState};
use crate::query::cohorts::{parse_name, parse_rule};
use crate::query::model::QueryError;
use crate::store::cohorts::{self, Cohort, RefreshError};

fn not_found() -> AppError {
    EnvelopeError::new(EnvelopeCode::NotFound, "no such cohort").into()
}

/// A cohort id from the path; anything else names no cohort.
fn cohort_id(raw: &str) -> Result<i64, AppError> {
    raw.parse::<i64>().ok().filter(|id| *id > 0).ok_or_else(not_found)
}

impl From<RefreshError> for AppError {
    fn from(e: RefreshError) -> Self {
        match e {
            // Only reachable when a stored definition stops validating; the request is not at fault.
            RefreshError::Definition(..) => {
                tracing::error!(error = %e, "cohort definition failed");
                EnvelopeError::new(EnvelopeCode::Internal, "internal error").into()
            }
            RefreshError::Store(e) => AppError::Store(e),
        }
    }
}

/// `POST /v1/cohorts` with `{"name", "definition"}`: validates, saves, computes the members, and
/// answers 201 with the cohort (its `members` already counted).
pub async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<Cohort>), AppError> {
    let key = authorize_admin(&state, &headers).await?;
    let value = super::json_body(&body)?;
    let obj = value.as_object().ok_or_else(|| QueryError::invalid("", "the cohort is a json object"))?;
    if let Some(k) = obj.keys().find(|k| !matches!(k.as_str(), "name" | "definition")) {
        return Err(
            QueryError::invalid(k.as_str(), format!("unknown field {k:?}; a cohort has name and definition")).into()
        );
    }
    let name = parse_name(obj.get("name"))?;
    let definition =
        obj.get("definition").ok_or_else(|| QueryError::invalid("definition", "definition is required"))?;
    let rule = parse_rule(definition, "definition")?;
    let cohort = cohorts::create(&state.pool, key.project_id, &name, definition, &rule, chrono::Utc::now()).await?;
    Ok((StatusCode::CREATED, Json(cohort)))
}

/// `GET /v1/cohorts`: the project's cohorts.
pub async fn list(State(state): State<AppState>, headers: HeaderMap) -> Result<Json<Value>, AppError> {
    let key = authorize_read(&state, &headers).await?;
    Ok(Json(json!({ "cohorts": cohorts::list(&state.pool, key.project_id).await? })))
}

/// `GET /v1/cohorts/{id}`.
pub async fn get(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Cohort>, AppError> {
    let key = authorize_read(&state, &headers).await?;
    let id = cohort_id(&id)?;
    cohorts::get(&state.pool, key.project_id, id).await?.map(Json).ok_or_else(not_found)
}

/// `DELETE /v1/cohorts/{id}`: 204, or 404 when the project has no such cohort.
pub async fn delete(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, AppError> {
    let key = authorize_admin(&state, &headers).await?;
    let id = cohort_id(&id)?;
    if cohorts::delete(&state.pool, key.project_id, id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(not_found())
    }
}

/// `POST /v1/cohorts/{id}/refresh`: recomputes the members now and answers the cohort.
pub async fn refresh(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Cohort>, AppError> {
    let key = authorize_admin(&state, &headers).await?;
    let id = cohort_id(&id)?;
    if !cohorts::refresh_one(&state.pool, key.project_id, id).await? {
        // Absent, or being refreshed by another replica right now: either way, not done here.
        return Err(match cohorts::get(&state.pool, key.project_id, id).await? {
            None => not_found(),
            Some(_) => {
                EnvelopeError::new(EnvelopeCode::Unavailable, "the cohort is being refreshed; retry later").into()
            }
        });
    }
    cohorts::get(&state.pool, key.project_id, id).await?.map(Json).ok_or_else(not_found)
}
