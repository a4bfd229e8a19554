//! The event catalog: `GET /v1/catalog/events`, `GET /v1/catalog/events/{name}/properties` and
//! `GET /v1/catalog/properties/{key}/values`, authenticated with the project's read key (which
//! sees that project only). `?limit=` bounds the rows (1 to 1000).

use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::Json;
use protocol::codes::EnvelopeCode;
use protocol::envelope::EnvelopeError;
use serde::Serialize;

use super::auth::authorize_read;
use super::{AppError, AppState};
use crate::query::model::QueryError;
use crate::store::catalog::{self, EventEntry, KeyValues, PropertyEntry, MAX_LIMIT};

/// `?limit=` of a catalog read, `default` when absent.
fn limit(query: Option<&str>, default: i64) -> Result<i64, AppError> {
    let raw = url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .find(|(k, _)| k == "limit")
        .map(|(_, v)| v.into_owned());
    match raw {
        None => Ok(default),
        Some(v) => match v.parse::<i64>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
            _ => Err(QueryError::invalid("limit", format!("limit is 1 to {MAX_LIMIT}")).into()),
        },
    }
}

/// The answer of `GET /v1/catalog/events`.
#[derive(Debug, Serialize)]
pub struct EventsResponse {
    /// Event names by volume.
    pub events: Vec<EventEntry>,
}

/// `GET /v1/catalog/events`.
pub async fn events(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Json<EventsResponse>, AppError> {
    let key = authorize_read(&state, &headers).await?;
    let limit = limit(query.as_deref(), MAX_LIMIT)?;
    Ok(Json(EventsResponse { events: catalog::events(&state.pool, key.project_id, limit).await? }))
}

/// The answer of `GET /v1/catalog/events/{name}/properties`.
#[derive(Debug, Serialize)]
pub struct PropertiesResponse {
    /// The event name.
    pub event: String,
    /// Its property keys by volume.
    pub properties: Vec<PropertyEntry>,
}

/// `GET /v1/catalog/events/{name}/properties`.
pub async fn properties(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<PropertiesResponse>, AppError> {
    let key = authorize_read(&state, &headers).await?;
    let limit = limit(query.as_deref(), MAX_LIMIT)?;
    match catalog::properties(&state.pool, key.project_id, &name, limit).await? {
        Some(properties) => Ok(Json(PropertiesResponse { event: name, properties })),
        None => Err(EnvelopeError::new(EnvelopeCode::NotFound, "no such event name in the catalog").into()),
    }
}

/// `GET /v1/catalog/properties/{key}/values`.
pub async fn values(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(property): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<KeyValues>, AppError> {
    let key = authorize_read(&state, &headers).await?;
    let limit = limit(query.as_deref(), 20)?;
    match catalog::values(&state.pool, key.project_id, &property, limit).await? {
        Some(v) => Ok(Json(v)),
        None => Err(EnvelopeError::new(EnvelopeCode::NotFound, "no such property key in the catalog").into()),
    }
}
