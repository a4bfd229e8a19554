//! Ingest routes: the direct `POST /v1/batch`, its CORS preflight, and the two signed routes the
//! edge calls (forwarded batches and key lookups).

use std::net::SocketAddr;

use axum::body::{to_bytes, Body, Bytes};
use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use protocol::codes::EnvelopeCode;
use protocol::envelope::{self, EnvelopeError};
use protocol::forward::{ForwardBatch, KeyLookupRequest, KeyLookupResponse};
use protocol::limits::{MAX_BATCH_BYTES, MAX_FORWARD_BYTES};
use protocol::signing::{self, SignatureError};

use super::{header_str, AppError, AppState};
use crate::ingest::{self, DirectRequest};
use crate::store::{self, projects::ResolvedKey};

/// The query parameters the batch routes read.
#[derive(Debug, Default, serde::Deserialize)]
struct BatchQuery {
    key: Option<String>,
    compression: Option<String>,
}

fn batch_query(req: &Parts) -> Result<BatchQuery, EnvelopeError> {
    match req.uri.query() {
        None => Ok(BatchQuery::default()),
        Some(_) => Query::<BatchQuery>::try_from_uri(&req.uri)
            .map(|q| q.0)
            .map_err(|_| EnvelopeError::new(EnvelopeCode::InvalidQuery, "the query string does not parse")),
    }
}

fn write_key(req: &Parts) -> Result<String, EnvelopeError> {
    batch_query(req)?
        .key
        .or_else(|| header_str(&req.headers, protocol::KEY_HEADER).map(str::to_owned))
        .filter(|k| !k.is_empty())
        .ok_or_else(|| EnvelopeError::new(EnvelopeCode::MissingKey, "send the write key as ?key=<write key>"))
}

/// The `Access-Control-Allow-Origin` value for a browser request, or an error when the project
/// does not allow that origin. `None` for non-browser requests (no `Origin` header).
fn allowed_origin(headers: &HeaderMap, key: &ResolvedKey) -> Result<Option<HeaderValue>, EnvelopeError> {
    let Some(origin) = header_str(headers, "origin") else { return Ok(None) };
    if protocol::forward::allows_origin(&key.allowed_origins, origin) {
        Ok(HeaderValue::from_str(origin).ok())
    } else {
        Err(EnvelopeError::new(EnvelopeCode::OriginNotAllowed, "this origin may not send events to the project"))
    }
}

fn with_cors(mut res: Response, allow: Option<HeaderValue>) -> Response {
    if let Some(origin) = allow {
        let h = res.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        h.insert(header::VARY, HeaderValue::from_static("Origin"));
    }
    res
}

async fn resolve_write_key(state: &AppState, key: &str) -> Result<ResolvedKey, AppError> {
    let resolved = store::projects::resolve_key_cached(&state.pool, key, std::time::Instant::now()).await?;
    Ok(ingest::authorize_write(resolved)?)
}

async fn read_body(body: Body, limit: usize) -> Result<Bytes, EnvelopeError> {
    to_bytes(body, limit)
        .await
        .map_err(|_| EnvelopeError::new(EnvelopeCode::PayloadTooLarge, format!("body is larger than {limit} bytes")))
}

/// `POST /v1/batch?key=...`: direct ingest for self-hosting without the edge.
pub async fn direct_batch(State(state): State<AppState>, req: Request) -> Response {
    let (req, body) = req.into_parts();
    // Browsers can only read an error when it carries the CORS header, so it is computed first
    // and attached to errors too.
    let mut allow = None;
    let result = async {
        let key = write_key(&req)?;
        envelope::check_content_type(header_str(&req.headers, "content-type"))?;
        let project = resolve_write_key(&state, &key).await?;
        allow = allowed_origin(&req.headers, &project)?;
        let peer = req.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
        let ip = peer
            .map(|p| ingest::client::client_ip(p, header_str(&req.headers, "x-forwarded-for"), &state.trusted_proxies));
        let direct = DirectRequest {
            received_at: Utc::now(),
            ip: ip.map(|i| i.to_string()).unwrap_or_default(),
            geo: match (&state.geoip, ip) {
                (Some(db), Some(ip)) => db.lookup(ip),
                _ => Default::default(),
            },
            user_agent: header_str(&req.headers, "user-agent").map(str::to_owned),
        };
        let content_type = header_str(&req.headers, "content-type").map(str::to_owned);
        let encoding = header_str(&req.headers, "content-encoding").map(str::to_owned);
        let compression = batch_query(&req)?.compression;
        let raw = read_body(body, MAX_BATCH_BYTES).await?;
        let body = ingest::decode(content_type.as_deref(), encoding.as_deref(), compression.as_deref(), &raw)?;
        let _permit = super::ingest_permit(&state).await?;
        let answer = ingest::ingest_direct(&state.writer, &project, &direct, &body).await?;
        Ok::<_, AppError>(Json(answer))
    }
    .await;
    with_cors(result.into_response(), allow)
}

/// `OPTIONS /v1/batch?key=...`: the CORS preflight, answered from the project's origins.
pub async fn preflight(State(state): State<AppState>, req: Request) -> Response {
    let req = req.into_parts().0;
    let result = async {
        let key = write_key(&req)?;
        let project = resolve_write_key(&state, &key).await?;
        let allow = allowed_origin(&req.headers, &project)?;
        let mut res = StatusCode::NO_CONTENT.into_response();
        let h = res.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("POST, OPTIONS"));
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("content-type, content-encoding, x-nexus-key"),
        );
        h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("86400"));
        Ok::<_, AppError>(with_cors(res, allow))
    }
    .await;
    result.into_response()
}

fn verify(state: &AppState, headers: &HeaderMap, body: &[u8]) -> Result<(), EnvelopeError> {
    let secret = state.edge_secret.as_ref().ok_or_else(|| {
        EnvelopeError::new(EnvelopeCode::InvalidSignature, "signed ingest is not configured on this origin")
    })?;
    signing::verify(
        secret,
        header_str(headers, signing::TIMESTAMP_HEADER),
        header_str(headers, signing::SIGNATURE_HEADER),
        body,
        Utc::now().timestamp(),
        state.signature_window_secs,
    )
    .map_err(|e| match e {
        SignatureError::Expired => EnvelopeError::new(EnvelopeCode::SignatureExpired, e.to_string()),
        SignatureError::Malformed | SignatureError::Mismatch => {
            EnvelopeError::new(EnvelopeCode::InvalidSignature, e.to_string())
        }
    })
}

fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, EnvelopeError> {
    serde_json::from_slice(body)
        .map_err(|e| EnvelopeError::new(EnvelopeCode::MalformedJson, format!("body does not parse: {e}")))
}

/// `POST /internal/v1/ingest`: a batch the edge validated and enriched, HMAC-signed.
pub async fn forwarded_batch(
    State(state): State<AppState>,
    req: Request,
) -> Result<Json<envelope::BatchResponse>, AppError> {
    let headers = req.headers().clone();
    let body = read_body(req.into_body(), MAX_FORWARD_BYTES).await?;
    // Step "verify signature" comes before anything looks at the body.
    verify(&state, &headers, &body)?;
    let batch: ForwardBatch = parse_json(&body)?;
    let project = resolve_write_key(&state, &batch.write_key).await?;
    let _permit = super::ingest_permit(&state).await?;
    Ok(Json(ingest::ingest_forwarded(&state.writer, &project, batch).await?))
}

/// `POST /internal/v1/keys/lookup`: the edge resolves a write key (it caches the answer).
pub async fn key_lookup(State(state): State<AppState>, req: Request) -> Result<Json<KeyLookupResponse>, AppError> {
    let headers = req.headers().clone();
    let body = read_body(req.into_body(), 4096).await?;
    verify(&state, &headers, &body)?;
    let ask: KeyLookupRequest = parse_json(&body)?;
    match store::projects::resolve_key(&state.pool, &ask.write_key).await? {
        // Only write keys are resolvable here: the edge never needs to learn about secret keys.
        Some(k) if k.scope == "write" => Ok(Json(KeyLookupResponse {
            project_id: k.project_id,
            revoked: k.revoked,
            allowed_origins: k.allowed_origins,
        })),
        _ => Err(EnvelopeError::new(EnvelopeCode::InvalidKey, "unknown write key").into()),
    }
}
