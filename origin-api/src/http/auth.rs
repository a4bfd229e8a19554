//! Read and admin authentication: `Authorization: Bearer <key>` resolved to a project.

use axum::http::HeaderMap;
use protocol::codes::EnvelopeCode;
use protocol::envelope::EnvelopeError;

use super::{header_str, AppError, AppState};
use crate::store::{self, projects::ResolvedKey};

/// Resolves `Authorization: Bearer <key>` to a project, requiring the read (or admin) scope.
pub async fn authorize_read(state: &AppState, headers: &HeaderMap) -> Result<ResolvedKey, AppError> {
    let key = header_str(headers, "authorization").and_then(|h| h.strip_prefix("Bearer ")).map(str::trim).ok_or_else(
        || EnvelopeError::new(EnvelopeCode::MissingKey, "send the read key as authorization: bearer <key>"),
    )?;
    match store::projects::resolve_key(&state.pool, key).await? {
        None => Err(EnvelopeError::new(EnvelopeCode::InvalidKey, "unknown key").into()),
        Some(k) if k.revoked => Err(EnvelopeError::new(EnvelopeCode::RevokedKey, "this key was revoked").into()),
        Some(k) if k.scope == "write" => {
            Err(EnvelopeError::new(EnvelopeCode::InsufficientScope, "this endpoint needs a read key").into())
        }
        Some(k) => Ok(k),
    }
}

/// Resolves `Authorization: Bearer <key>` to a project, requiring the admin scope.
pub async fn authorize_admin(state: &AppState, headers: &HeaderMap) -> Result<ResolvedKey, AppError> {
    let key = authorize_read(state, headers).await?;
    if key.scope != "admin" {
        return Err(EnvelopeError::new(EnvelopeCode::InsufficientScope, "this endpoint needs the admin key").into());
    }
    Ok(key)
}
