//! The query API: `POST /v1/query/trends` and `POST /v1/query/top`, authenticated with the
//! project's read key (which sees that project only).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use protocol::codes::EnvelopeCode;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use super::auth::authorize_read;
use super::{AppError, AppState};
use crate::query::model::{parse_query, Common, QueryError};
use crate::query::trends::{self, TopQuery, TopResponse, TrendsQuery, TrendsResponse};
use crate::store::projects::ResolvedKey;

/// Authenticates, then parses the body into the common part and the kind's part. The project
/// comes from the key alone: nothing in the body can name another project. Every query route
/// (trends, top, the analyses, goals) starts with it.
pub(super) async fn prepare<K: DeserializeOwned>(
    state: &AppState,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<(ResolvedKey, Common, K), AppError> {
    let key = authorize_read(state, headers).await?;
    let (common, kind) = parse_query::<K>(super::json_body(body)?, &key.timezone, chrono::Utc::now())?;
    Ok((key, common, kind))
}

/// `POST /v1/query/trends`.
pub async fn trends(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<TrendsResponse>, AppError> {
    let (key, common, q) = prepare::<TrendsQuery>(&state, &headers, &body).await?;
    Ok(Json(trends::trends(&state.pool, key.project_id, &common, &q).await?))
}

/// `POST /v1/query/top`.
pub async fn top(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<TopResponse>, AppError> {
    let (key, common, q) = prepare::<TopQuery>(&state, &headers, &body).await?;
    Ok(Json(trends::top(&state.pool, key.project_id, &common, &q).await?))
}

/// The answer to a refused or failed query. A bad query is a 400 `invalid_query` naming the
/// field at fault in `details.field`; a query too heavy to answer is a 422 (retrying it the same
/// way would fail again, so it is not a 5xx); storage failures answer as everywhere else.
pub fn error_response(e: QueryError) -> Response {
    let body = |code: &str, message: String, details: Option<Value>| {
        let mut error = json!({"code": code, "message": message});
        if let Some(d) = details {
            error["details"] = d;
        }
        Json(json!({ "error": error }))
    };
    match e {
        QueryError::Invalid { field, message } => (
            StatusCode::BAD_REQUEST,
            body(EnvelopeCode::InvalidQuery.as_str(), message, Some(json!({ "field": field }))),
        )
            .into_response(),
        QueryError::Timeout => (
            StatusCode::UNPROCESSABLE_ENTITY,
            body("query_timeout", "the query took too long; narrow the range or the filters".into(), None),
        )
            .into_response(),
        QueryError::TooLarge(n) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            body("result_too_large", format!("the result is larger than {n} rows; lower the limits"), None),
        )
            .into_response(),
        QueryError::Store(e) => AppError::Store(e).into_response(),
    }
}
