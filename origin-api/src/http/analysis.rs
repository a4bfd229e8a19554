//! The person-sequence analyses: `POST /v1/query/{funnel,retention,paths,stickiness,lifecycle}`, authenticated
//! with the project's read key (which sees that project only). Same body rules and errors as `/v1/query/trends`.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use serde::de::DeserializeOwned;

use super::{AppError, AppState};
use crate::query::funnel::{self, FunnelQuery, FunnelResponse};
use crate::query::lifecycle::{self, ActivityQuery, LifecycleResponse, StickinessResponse};
use crate::query::model::Common;
use crate::query::paths::{self, PathsQuery, PathsResponse};
use crate::query::retention::{self, RetentionQuery, RetentionResponse};

/// [`super::query::prepare`], keeping the project id of the key.
async fn prepare<K: DeserializeOwned>(
    state: &AppState,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<(i64, Common, K), AppError> {
    let (key, common, kind) = super::query::prepare(state, headers, body).await?;
    Ok((key.project_id, common, kind))
}

/// `POST /v1/query/funnel`.
pub async fn funnel(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<FunnelResponse>, AppError> {
    let (project_id, common, q) = prepare::<FunnelQuery>(&state, &headers, &body).await?;
    Ok(Json(funnel::run(&state.pool, project_id, &common, &q).await?))
}

/// `POST /v1/query/retention`.
pub async fn retention(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<RetentionResponse>, AppError> {
    let (project_id, common, q) = prepare::<RetentionQuery>(&state, &headers, &body).await?;
    Ok(Json(retention::run(&state.pool, project_id, &common, &q).await?))
}

/// `POST /v1/query/paths`.
pub async fn paths(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<PathsResponse>, AppError> {
    let (project_id, common, q) = prepare::<PathsQuery>(&state, &headers, &body).await?;
    Ok(Json(paths::run(&state.pool, project_id, &common, &q).await?))
}

/// `POST /v1/query/stickiness`.
pub async fn stickiness(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<StickinessResponse>, AppError> {
    let (project_id, common, q) = prepare::<ActivityQuery>(&state, &headers, &body).await?;
    Ok(Json(lifecycle::run_stickiness(&state.pool, project_id, &common, &q).await?))
}

/// `POST /v1/query/lifecycle`.
pub async fn lifecycle(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<LifecycleResponse>, AppError> {
    let (project_id, common, q) = prepare::<ActivityQuery>(&state, &headers, &body).await?;
    Ok(Json(lifecycle::run_lifecycle(&state.pool, project_id, &common, &q).await?))
}
