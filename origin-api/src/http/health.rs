//! `/health` (the process is up), `/ready` (database reachable, migrations current), `/metrics`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde_json::json;

use super::AppState;
use crate::store;

/// Always 200 while the process serves requests.
pub async fn health() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

/// 200 when the database answers and every migration is applied, else 503.
pub async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    match store::migrations_current(&state.pool).await {
        Ok(true) => (StatusCode::OK, Json(json!({"status": "ready"}))),
        Ok(false) => (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "migrations_pending"}))),
        Err(e) => {
            tracing::warn!(error = %e, "not ready");
            (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "database_unavailable"})))
        }
    }
}

/// Prometheus text format. Pool usage is sampled at scrape time.
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let status = state.pool.status();
    let in_use = status.size.saturating_sub(status.available);
    metrics::gauge!("nexus_origin_db_pool_connections", "state" => "in_use").set(in_use as f64);
    metrics::gauge!("nexus_origin_db_pool_connections", "state" => "idle").set(status.available as f64);
    metrics::gauge!("nexus_origin_db_pool_connections", "state" => "max").set(status.max_size as f64);
    metrics::gauge!("nexus_origin_db_pool_waiting").set(status.waiting as f64);
    state.metrics.as_ref().map(|h| h.render()).unwrap_or_default()
}
