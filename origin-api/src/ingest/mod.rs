//! The ingest pipeline: ordered, named steps from a request body to committed rows.
//!
//! Direct:    authenticate -> decode -> parse & validate -> enrich at origin -> write
//! Forwarded: verify signature -> authenticate -> decode -> re-check -> write
//! Write ([`writer`], a group commit of concurrent requests): drop deleted persons -> dedupe ->
//!            enrich columns -> copy rows -> update sessions -> resolve persons -> commit
//!
//! Every event leaves with an outcome: accepted (new or a harmless duplicate) or dropped with a
//! [`DropReason`]; every drop is counted in `nexus_origin_events_dropped_total{reason}`.
//! An event is acknowledged only after its transaction committed.

pub mod channel;
pub mod client;
pub mod enrich;
pub mod geoip;
pub mod identity;
pub mod writer;

use chrono::{DateTime, Utc};
use protocol::codes::{EnvelopeCode, RejectCode};
use protocol::envelope::{self, BatchResponse, EnvelopeError};
use protocol::forward::{self, EnrichedEvent, ForwardBatch, RequestContext};
use protocol::validate::check_typed;

use crate::store::{self, projects::ResolvedKey, StoreError};
use writer::Writer;

/// Why an event did not become a new row. A closed set: metrics and dashboards rely on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The event failed validation (the code says how).
    Invalid(RejectCode),
    /// An event with the same id was already stored: accepted, not stored again.
    Duplicate,
    /// The person was deleted (GDPR): a late or retried event must not bring them back.
    PersonDeleted,
}

impl DropReason {
    /// Metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Invalid(code) => code.as_str(),
            DropReason::Duplicate => "duplicate",
            DropReason::PersonDeleted => "person_deleted",
        }
    }
}

/// Errors of a whole ingest request.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The request itself is refused (4xx).
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    /// Storage failed: 503 when unavailable, else 500.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Step "authenticate": the key must exist, not be revoked, and carry the write scope.
pub fn authorize_write(key: Option<ResolvedKey>) -> Result<ResolvedKey, EnvelopeError> {
    match key {
        None => Err(EnvelopeError::new(EnvelopeCode::InvalidKey, "unknown write key")),
        Some(k) if k.revoked => Err(EnvelopeError::new(EnvelopeCode::RevokedKey, "this key was revoked")),
        Some(k) if k.scope != "write" => {
            Err(EnvelopeError::new(EnvelopeCode::InsufficientScope, "this endpoint needs a write key"))
        }
        Some(k) => Ok(k),
    }
}

/// Step "decode": content type, encoding and size of a public batch body.
pub fn decode(
    content_type: Option<&str>,
    content_encoding: Option<&str>,
    compression: Option<&str>,
    body: &[u8],
) -> Result<Vec<u8>, EnvelopeError> {
    envelope::check_content_type(content_type)?;
    let gzip = envelope::is_gzip(content_encoding, compression)?;
    envelope::decode_body(body, gzip, protocol::limits::MAX_BATCH_BYTES)
}

/// What the origin knows about a direct request.
#[derive(Debug, Clone)]
pub struct DirectRequest {
    /// Receipt time.
    pub received_at: DateTime<Utc>,
    /// Client IP (used for the visitor hash and geo only, never stored).
    pub ip: String,
    /// Geo of the client IP, when a database is configured.
    pub geo: forward::Geo,
    /// User agent.
    pub user_agent: Option<String>,
}

/// Direct ingest (no edge): parse, validate, enrich at the origin, write.
pub async fn ingest_direct(
    writer: &Writer,
    project: &ResolvedKey,
    req: &DirectRequest,
    body: &[u8],
) -> Result<BatchResponse, IngestError> {
    // Step "parse & validate".
    let parsed = envelope::parse_batch(body)?;
    let rejected = parsed.rejected();
    // Step "enrich at origin": skew, visitor hash, bot flag, geo (looked up by the caller).
    let salt = store::events::daily_salt(writer.pool(), req.received_at.date_naive()).await?;
    let ua = req.user_agent.as_deref().unwrap_or("");
    let ctx = RequestContext {
        received_at: req.received_at,
        sent_at: parsed.sent_at,
        geo: req.geo.clone(),
        visitor_hash: Some(protocol::visitor::visitor_hash(&salt, project.project_id, &req.ip, ua)),
        bot: protocol::bot::is_bot_user_agent(req.user_agent.as_deref()),
        user_agent: req.user_agent.clone(),
    };
    let events: Vec<EnrichedEvent> = parsed.events.into_iter().flatten().map(|ev| forward::enrich(ev, &ctx)).collect();
    let drops = rejected.iter().map(|r| invalid_drop(r.code, r.field.clone())).collect();
    let accepted = writer.write(project.project_id, events, drops).await?;
    Ok(BatchResponse { accepted, rejected })
}

/// Forwarded ingest (signed by the edge): re-check, write. Indexes in the answer refer to
/// `batch.events`.
pub async fn ingest_forwarded(
    writer: &Writer,
    project: &ResolvedKey,
    batch: ForwardBatch,
) -> Result<BatchResponse, IngestError> {
    let mut rejected = Vec::new();
    let mut drops = Vec::new();
    let mut events: Vec<EnrichedEvent> = Vec::with_capacity(batch.events.len());
    for (index, e) in batch.events.into_iter().enumerate() {
        // Step "re-check": the edge validated already; a bug or bypass there stops here.
        match check_typed(&e.event) {
            Ok(()) => events.push(e),
            Err(rej) => {
                drops.push(store::warnings::DroppedEvent {
                    reason: DropReason::Invalid(rej.code),
                    field: rej.field.map(str::to_owned),
                    event_id: Some(e.event.id.to_string()),
                    name: Some(e.event.name.clone()),
                });
                rejected.push(envelope::rejected(index, rej));
            }
        }
    }
    let accepted = writer.write(project.project_id, events, drops).await?;
    Ok(BatchResponse { accepted, rejected })
}

/// Import: events of historical NDJSON lines, already validated, written through the same
/// write step (dedup, deleted persons, sessions, persons, warnings). Returns (accepted, rejected).
pub async fn ingest_import(
    writer: &Writer,
    project: &ResolvedKey,
    lines: Vec<Result<protocol::event::Event, protocol::validate::Rejection>>,
    received_at: DateTime<Utc>,
) -> Result<(usize, usize), IngestError> {
    // Historical events are taken at their own timestamps: there is no send time to correct by.
    let ctx = RequestContext { received_at, ..RequestContext::default() };
    let mut events = Vec::with_capacity(lines.len());
    let mut drops = Vec::new();
    for line in lines {
        match line {
            Ok(ev) => events.push(forward::enrich(ev, &ctx)),
            Err(rej) => drops.push(invalid_drop(rej.code, rej.field.map(str::to_owned))),
        }
    }
    let rejected = drops.len();
    let accepted = writer.write(project.project_id, events, drops).await?;
    Ok((accepted, rejected))
}

fn invalid_drop(code: RejectCode, field: Option<String>) -> store::warnings::DroppedEvent {
    store::warnings::DroppedEvent { reason: DropReason::Invalid(code), field, event_id: None, name: None }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(scope: &'static str, revoked: bool) -> Option<ResolvedKey> {
        Some(ResolvedKey { project_id: 1, scope, revoked, allowed_origins: vec![], timezone: "UTC".into() })
    }

    #[test]
    fn authorize_table() {
        let cases = [
            (None, Err(EnvelopeCode::InvalidKey)),
            (key("write", true), Err(EnvelopeCode::RevokedKey)),
            (key("read", false), Err(EnvelopeCode::InsufficientScope)),
            (key("write", false), Ok(1)),
        ];
        for (k, expected) in cases {
            assert_eq!(authorize_write(k).map(|k| k.project_id).map_err(|e| e.code), expected);
        }
    }

    #[test]
    fn drop_reasons_have_labels() {
        assert_eq!(DropReason::Duplicate.as_str(), "duplicate");
        assert_eq!(DropReason::Invalid(RejectCode::NameTooLong).as_str(), "name_too_long");
    }
}
