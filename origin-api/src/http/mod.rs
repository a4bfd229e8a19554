//! HTTP: the router, shared state, and the one error type every handler returns.

mod analysis;
mod auth;
mod catalog;
mod cohorts;
mod goals;
mod health;
mod ingest;
mod persons;
mod query;
mod stats;
mod warnings;

use std::sync::Arc;

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use deadpool_postgres::Pool;
use metrics_exporter_prometheus::PrometheusHandle;
use protocol::codes::EnvelopeCode;
use protocol::envelope::EnvelopeError;

use crate::ingest::IngestError;
use crate::store::StoreError;

/// State shared by all handlers.
#[derive(Clone)]
pub struct AppState {
    /// Connection pool.
    pub pool: Pool,
    /// The ingest write step (group commit over `pool`).
    pub writer: crate::ingest::writer::Writer,
    /// Edge HMAC secret; `None` disables the signed endpoints.
    pub edge_secret: Option<Arc<Vec<u8>>>,
    /// Replay window of edge signatures, in seconds.
    pub signature_window_secs: i64,
    /// Renders `/metrics`.
    pub metrics: Option<PrometheusHandle>,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Arc<Vec<ipnet::IpNet>>,
    /// Geo database for direct ingest.
    pub geoip: Option<Arc<crate::ingest::geoip::GeoIp>>,
    /// The bounded ingest buffer: batches being written at once. When none frees up within
    /// [`INGEST_WAIT`], the request is answered 503 with Retry-After (senders retry later)
    /// instead of queueing without bound while PostgreSQL is slow.
    pub ingest_permits: Arc<tokio::sync::Semaphore>,
}

/// How long a batch may wait for a place in the ingest buffer.
pub const INGEST_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Takes a place in the ingest buffer, or answers 503.
pub(crate) async fn ingest_permit(state: &AppState) -> Result<tokio::sync::OwnedSemaphorePermit, AppError> {
    match tokio::time::timeout(INGEST_WAIT, state.ingest_permits.clone().acquire_owned()).await {
        Ok(Ok(permit)) => Ok(permit),
        _ => {
            metrics::counter!("nexus_origin_ingest_saturated_total").increment(1);
            Err(EnvelopeError::new(EnvelopeCode::Unavailable, "ingest is saturated; retry later").into())
        }
    }
}

/// The service's routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route(protocol::BATCH_PATH, post(ingest::direct_batch).options(ingest::preflight))
        .route(protocol::forward::INGEST_PATH, post(ingest::forwarded_batch))
        .route(protocol::forward::KEY_LOOKUP_PATH, post(ingest::key_lookup))
        .route("/v1/stats/events-per-day", get(stats::events_per_day))
        .route("/v1/ingestion/warnings", get(warnings::ingestion_warnings))
        .route("/v1/query/trends", post(query::trends))
        .route("/v1/query/top", post(query::top))
        .route("/v1/query/funnel", post(analysis::funnel))
        .route("/v1/query/retention", post(analysis::retention))
        .route("/v1/query/paths", post(analysis::paths))
        .route("/v1/query/stickiness", post(analysis::stickiness))
        .route("/v1/query/lifecycle", post(analysis::lifecycle))
        .route("/v1/cohorts", post(cohorts::create).get(cohorts::list))
        .route("/v1/cohorts/{id}", get(cohorts::get).delete(cohorts::delete))
        .route("/v1/cohorts/{id}/refresh", post(cohorts::refresh))
        .route("/v1/catalog/events", get(catalog::events))
        .route("/v1/catalog/events/{name}/properties", get(catalog::properties))
        .route("/v1/catalog/properties/{key}/values", get(catalog::values))
        .route("/v1/goals", post(goals::create).get(goals::list))
        .route("/v1/goals/{id}", axum::routing::delete(goals::delete))
        .route("/v1/query/goals", post(goals::query))
        .route("/v1/persons/{distinct_id}", axum::routing::delete(persons::delete_person))
        .route("/health", get(health::health))
        .route("/ready", get(health::ready))
        .route("/metrics", get(health::metrics))
        .fallback(|| async { AppError::from(EnvelopeError::new(EnvelopeCode::NotFound, "no such route")) })
        .method_not_allowed_fallback(|| async {
            AppError::from(EnvelopeError::new(EnvelopeCode::MethodNotAllowed, "method not allowed on this route"))
        })
        .with_state(state)
}

/// Every error a handler can answer with: JSON `{"error": {"code", "message"}}`, stable codes.
/// Internals are logged, never shown.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// A refused request (4xx, or 429/503 with `Retry-After`).
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A query was refused or failed (answered by `query::error_response`, with `details`).
    #[error(transparent)]
    Query(#[from] crate::query::model::QueryError),
}

impl From<IngestError> for AppError {
    fn from(e: IngestError) -> Self {
        match e {
            IngestError::Envelope(e) => AppError::Envelope(e),
            IngestError::Store(e) => AppError::Store(e),
        }
    }
}

impl AppError {
    fn envelope(&self) -> EnvelopeError {
        match self {
            AppError::Envelope(e) => e.clone(),
            AppError::Store(e) if e.is_unavailable() => {
                tracing::warn!(error = %e, "storage unavailable");
                EnvelopeError::new(EnvelopeCode::Unavailable, "storage is unavailable; retry later")
            }
            AppError::Store(e) => {
                tracing::error!(error = %e, "storage error");
                EnvelopeError::new(EnvelopeCode::Internal, "internal error")
            }
            AppError::Query(_) => EnvelopeError::new(EnvelopeCode::Internal, "internal error"),
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let env = match self {
            AppError::Query(e) => return query::error_response(e),
            other => other.envelope(),
        };
        let status = StatusCode::from_u16(env.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut res = (status, Json(env.body())).into_response();
        if matches!(env.code, EnvelopeCode::Unavailable | EnvelopeCode::RateLimited) {
            res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        res
    }
}

/// A JSON request body (queries, goals, cohorts), or 400 `malformed_json`.
pub(crate) fn json_body(body: &[u8]) -> Result<serde_json::Value, AppError> {
    serde_json::from_slice(body)
        .map_err(|e| EnvelopeError::new(EnvelopeCode::MalformedJson, format!("the body is not valid json: {e}")).into())
}

/// A header as text, when present and readable.
pub(crate) fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}
