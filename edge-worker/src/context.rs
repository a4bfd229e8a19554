//! What the edge knows about a request besides its body: client IP (for hashing only), user
//! agent, bot verdict, receipt time.
//!
//! The IP is read here and goes straight into [`visitor_hash`]; nothing returned by this module
//! keeps it, so it cannot reach a forwarded event or a log line.

use chrono::{DateTime, Utc};
use protocol::bot::is_bot_user_agent;
use protocol::forward::{Geo, RequestContext};
use protocol::visitor::visitor_hash;

use crate::geo::truncate;

/// A Bot Management score below this marks the request as a bot (Cloudflare: 1-29 "likely bot").
pub const BOT_SCORE_THRESHOLD: f64 = 30.0;
/// Longest user agent kept, in bytes: real ones are far shorter; the cap bounds forward size.
pub const MAX_USER_AGENT_LEN: usize = 1024;

/// The client IP: `CF-Connecting-IP`, else the first `X-Forwarded-For` entry, else `""`.
pub fn client_ip<'a>(cf_connecting_ip: Option<&'a str>, forwarded_for: Option<&'a str>) -> &'a str {
    let first = |v: Option<&'a str>| v.and_then(|s| s.split(',').next()).map(str::trim).filter(|s| !s.is_empty());
    first(cf_connecting_ip).or_else(|| first(forwarded_for)).unwrap_or("")
}

/// The user agent as forwarded: trimmed, capped at [`MAX_USER_AGENT_LEN`], `None` when empty.
pub fn user_agent(header: Option<&str>) -> Option<String> {
    header.map(|s| truncate(s.trim(), MAX_USER_AGENT_LEN)).filter(|s| !s.is_empty()).map(str::to_owned)
}

/// Bot verdict: a bot-like user agent, or a Bot Management score below the threshold.
pub fn is_bot(user_agent: Option<&str>, bot_score: Option<f64>) -> bool {
    is_bot_user_agent(user_agent) || bot_score.is_some_and(|s| s < BOT_SCORE_THRESHOLD)
}

/// Receipt time from JS `Date.now()` milliseconds (the Unix epoch if out of range).
pub fn time_from_millis(ms: f64) -> DateTime<Utc> {
    // f64 -> i64 saturates; NaN becomes 0.
    DateTime::from_timestamp_millis(ms as i64).unwrap_or_default()
}

/// Everything about the request that goes into [`protocol::forward::enrich`].
#[derive(Debug)]
pub struct RequestFacts<'a> {
    /// Receipt time on the edge's clock.
    pub received_at: DateTime<Utc>,
    /// The batch's `sent_at`.
    pub sent_at: Option<DateTime<Utc>>,
    /// Geography from `request.cf`.
    pub geo: Geo,
    /// `User-Agent` header.
    pub user_agent: Option<&'a str>,
    /// Client IP (see [`client_ip`]); only hashed.
    pub ip: &'a str,
    /// Project of the write key.
    pub project_id: i64,
    /// Visitor salt; `None` means no visitor hash.
    pub salt: Option<&'a [u8]>,
    /// Bot Management score, when present.
    pub bot_score: Option<f64>,
}

/// Builds the enrichment context; the IP is consumed by the hash and kept nowhere.
pub fn request_context(facts: RequestFacts<'_>) -> RequestContext {
    let user_agent = user_agent(facts.user_agent);
    let visitor_hash =
        facts.salt.map(|salt| visitor_hash(salt, facts.project_id, facts.ip, user_agent.as_deref().unwrap_or("")));
    RequestContext {
        received_at: facts.received_at,
        sent_at: facts.sent_at,
        geo: facts.geo,
        visitor_hash,
        bot: is_bot(user_agent.as_deref(), facts.bot_score),
        user_agent,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const CHROME: &str =
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";

    #[test]
    fn ips() {
        let cases = [
            (Some("203.0.113.5"), Some("10.0.0.1"), "203.0.113.5"),
            (None, Some("198.51.100.7, 10.0.0.1"), "198.51.100.7"),
            (Some(" "), Some(" 198.51.100.7 "), "198.51.100.7"),
            (None, Some(""), ""),
            (None, None, ""),
            (Some("2001:db8::1"), None, "2001:db8::1"),
        ];
        for (cf, xff, expected) in cases {
            assert_eq!(client_ip(cf, xff), expected, "{cf:?} {xff:?}");
        }
    }

    #[test]
    fn bots() {
        let cases = [
            (Some(CHROME), None, false),
            (Some(CHROME), Some(29.0), true),
            (Some(CHROME), Some(30.0), false),
            (Some(CHROME), Some(99.0), false),
            (Some("curl/8.5.0"), Some(99.0), true),
            (None, None, true),
        ];
        for (ua, score, expected) in cases {
            assert_eq!(is_bot(ua, score), expected, "{ua:?} {score:?}");
        }
    }

    #[test]
    fn context_hashes_the_ip_and_keeps_it_nowhere() {
        let facts = |salt: Option<&'static [u8]>, ua: Option<&'static str>| RequestFacts {
            received_at: time_from_millis(1_764_583_200_000.0),
            sent_at: None,
            geo: Geo::default(),
            user_agent: ua,
            ip: "203.0.113.5",
            project_id: 7,
            salt,
            bot_score: None,
        };
        let ctx = request_context(facts(Some(b"salt"), Some(CHROME)));
        assert_eq!(ctx.visitor_hash.as_deref(), Some(visitor_hash(b"salt", 7, "203.0.113.5", CHROME).as_str()));
        assert!(!ctx.bot);
        assert_eq!(ctx.user_agent.as_deref(), Some(CHROME));
        assert_eq!(ctx.received_at.to_rfc3339(), "2025-12-01T10:00:00+00:00");
        assert!(!format!("{ctx:?}").contains("203.0.113.5"));
        let ctx = request_context(facts(None, Some("  ")));
        assert_eq!((ctx.visitor_hash, ctx.user_agent, ctx.bot), (None, None, true));
        let long = "a".repeat(5000);
        assert_eq!(user_agent(Some(&long)).unwrap().len(), MAX_USER_AGENT_LEN);
    }

    #[test]
    fn times() {
        assert_eq!(time_from_millis(0.0).timestamp(), 0);
        assert_eq!(time_from_millis(f64::NAN).timestamp(), 0);
        assert_eq!(time_from_millis(1_764_583_200_123.0).timestamp_millis(), 1_764_583_200_123);
        assert_eq!(time_from_millis(f64::INFINITY), DateTime::<Utc>::default());
    }
}
