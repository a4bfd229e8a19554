//! What the edge forwards to the origin: enriched events, signed (see [`crate::signing`]).
//!
//! The raw client IP is not in here by design: the edge turns it into a visitor hash (and geo)
//! and drops it, so it never reaches storage.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::event::Event;
use crate::skew::corrected_timestamp;

/// Path of the signed origin endpoint the edge posts [`ForwardBatch`]es to.
pub const INGEST_PATH: &str = "/internal/v1/ingest";
/// Path of the signed origin endpoint that resolves a write key ([`KeyLookupRequest`]).
pub const KEY_LOOKUP_PATH: &str = "/internal/v1/keys/lookup";

/// Geography of the client, as far as it is known. Every field may be absent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Geo {
    /// ISO 3166-1 alpha-2 country code (`DE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    /// Region (state) name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// ISO 3166-2 region code (`BE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region_code: Option<String>,
    /// City name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub city: Option<String>,
    /// Postal code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postal_code: Option<String>,
    /// Continent code (`EU`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub continent: Option<String>,
    /// IANA timezone of the client's location.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// Latitude in degrees.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latitude: Option<f64>,
    /// Longitude in degrees.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub longitude: Option<f64>,
    /// Autonomous system number of the client's network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asn: Option<u32>,
    /// Organisation of that autonomous system.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub as_org: Option<String>,
    /// Cloudflare data centre that took the request (`FRA`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub colo: Option<String>,
}

/// An accepted event with what the receiving tier knows about it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnrichedEvent {
    /// The event as validated, client timestamp untouched.
    pub event: Event,
    /// When the first server (edge, or origin for direct ingest) received the batch.
    pub received_at: DateTime<Utc>,
    /// The batch's `sent_at`, when the client gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_at: Option<DateTime<Utc>>,
    /// The skew-corrected event time: `timestamp + (received_at - sent_at)`.
    pub timestamp: DateTime<Utc>,
    /// Where the client is.
    #[serde(default)]
    pub geo: Geo,
    /// `hash(daily salt, project, ip, user agent)`: counts visitors without storing the IP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visitor_hash: Option<String>,
    /// True when the user agent (or the edge's bot score) says this is not a person.
    #[serde(default)]
    pub bot: bool,
    /// The client's user agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
}

/// What the receiving tier knows about the request, shared by every event in it.
#[derive(Debug, Clone, Default)]
pub struct RequestContext {
    /// Receipt time on the server's clock.
    pub received_at: DateTime<Utc>,
    /// The batch's `sent_at`.
    pub sent_at: Option<DateTime<Utc>>,
    /// Client geography.
    pub geo: Geo,
    /// Visitor hash of the request.
    pub visitor_hash: Option<String>,
    /// Bot verdict of the request.
    pub bot: bool,
    /// User agent of the request.
    pub user_agent: Option<String>,
}

/// Enriches one validated event with the request's context, correcting its clock skew.
pub fn enrich(event: Event, ctx: &RequestContext) -> EnrichedEvent {
    let timestamp = corrected_timestamp(event.timestamp, ctx.sent_at, ctx.received_at);
    EnrichedEvent {
        event,
        received_at: ctx.received_at,
        sent_at: ctx.sent_at,
        timestamp,
        geo: ctx.geo.clone(),
        visitor_hash: ctx.visitor_hash.clone(),
        bot: ctx.bot,
        user_agent: ctx.user_agent.clone(),
    }
}

/// The signed body the edge posts to [`INGEST_PATH`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ForwardBatch {
    /// The write key the client used; the origin checks it again.
    pub write_key: String,
    /// The events the edge accepted, in batch order.
    pub events: Vec<EnrichedEvent>,
}

/// The signed body the edge posts to [`KEY_LOOKUP_PATH`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyLookupRequest {
    /// The write key to resolve.
    pub write_key: String,
}

/// The origin's answer to a key lookup (404 with `invalid_key` when unknown).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyLookupResponse {
    /// Project the key belongs to.
    pub project_id: i64,
    /// True when the key was revoked.
    pub revoked: bool,
    /// Origins allowed to send from a browser (CORS); empty means any origin.
    pub allowed_origins: Vec<String>,
}

impl KeyLookupResponse {
    /// True when a browser request from `origin` may send events to this project.
    pub fn allows_origin(&self, origin: &str) -> bool {
        allows_origin(&self.allowed_origins, origin)
    }
}

/// True when a browser request from `origin` may send to a project with these allowed origins
/// (empty means any; `*` means any).
pub fn allows_origin(allowed_origins: &[String], origin: &str) -> bool {
    allowed_origins.is_empty() || allowed_origins.iter().any(|o| o == "*" || o.eq_ignore_ascii_case(origin))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn origins() {
        let mut k = KeyLookupResponse { project_id: 1, revoked: false, allowed_origins: vec![] };
        assert!(k.allows_origin("https://a.test"));
        k.allowed_origins = vec!["https://a.test".into()];
        assert!(k.allows_origin("https://A.test"));
        assert!(!k.allows_origin("https://b.test"));
        k.allowed_origins.push("*".into());
        assert!(k.allows_origin("https://b.test"));
    }

    #[test]
    fn enrich_corrects_skew_and_has_no_ip_field() {
        let ev: Event = serde_json::from_value(serde_json::json!({
            "id": "0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", "type": "track", "name": "a",
            "anonymous_id": "x", "timestamp": "2026-12-01T09:00:00Z"
        }))
        .unwrap();
        let ctx = RequestContext {
            received_at: "2026-12-01T10:00:00Z".parse().unwrap(),
            sent_at: Some("2026-12-01T09:00:00Z".parse().unwrap()),
            geo: Geo { country: Some("DE".into()), ..Geo::default() },
            ..RequestContext::default()
        };
        let e = enrich(ev, &ctx);
        assert_eq!(e.timestamp, ctx.received_at);
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["geo"]["country"], "DE");
        assert!(!json.to_string().contains("\"ip\""));
    }
}
