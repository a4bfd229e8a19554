//! Queue delivery (plain Rust): the delivery mode, what the consumer does with the origin's
//! answer, and the dead-letter record. The workers-rs glue is in `handler` (producer, consumer)
//! and `durable` (the `DeadLetterStore` object).
//!
//! In `queue` mode the batch route puts the enriched events on the `DELIVERY` queue as
//! `ForwardBatch` JSON texts (each under [`QUEUE_MESSAGE_BYTES`]) and answers at once; the queue
//! consumer signs and posts each message to the origin, retries what may succeed later and
//! dead-letters what never will.

use serde::{Deserialize, Serialize};

/// How accepted events reach the origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeliveryMode {
    /// A synchronous, signed forward; the origin's answer goes back to the sender.
    #[default]
    Direct,
    /// Onto the `DELIVERY` queue; the queue consumer forwards.
    Queue,
}

impl DeliveryMode {
    /// Parses the `DELIVERY_MODE` var (`direct`, `queue`; unset or empty: `direct`).
    pub fn parse(raw: Option<&str>) -> Option<DeliveryMode> {
        match raw.map(str::trim).unwrap_or("") {
            "" | "direct" => Some(DeliveryMode::Direct),
            "queue" => Some(DeliveryMode::Queue),
            _ => None,
        }
    }
}

/// Largest queue message body the edge sends: Cloudflare's limit is 128 KB per message, this
/// leaves room for the queue's own metadata.
pub const QUEUE_MESSAGE_BYTES: usize = 120 * 1024;

/// Default delay before a failed delivery is tried again, in seconds (`RETRY_DELAY_SECS`).
pub const DEFAULT_RETRY_DELAY_SECS: u32 = 300;
/// Longest delay a queue accepts for a retry (12 hours).
pub const MAX_RETRY_DELAY_SECS: u32 = 43_200;

/// What the consumer does with one message after a delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The origin took it (its per-event rejections are final): ack.
    Delivered,
    /// Try again after this many seconds (5xx, 429, network error, timeout).
    Retry { delay_secs: u32 },
    /// Never going to succeed as it is: to the dead-letter queue with this reason, then ack.
    DeadLetter { reason: &'static str },
}

/// Reason of a message the origin refused with a 4xx other than 429.
pub const REASON_REFUSED: &str = "origin_refused";
/// Reason of a message that is not a readable `ForwardBatch`.
pub const REASON_UNREADABLE: &str = "unreadable_message";
/// Reason of a message whose retries ran out (the queue moved it to the dead-letter queue).
pub const REASON_RETRIES_EXHAUSTED: &str = "retries_exhausted";

/// The verdict on an origin answer: `status` is `None` when the origin could not be reached or
/// timed out. `retry_after` is the origin's `Retry-After` header, honoured when longer than
/// `delay_secs` (capped at [`MAX_RETRY_DELAY_SECS`]).
pub fn classify(status: Option<u16>, retry_after: Option<&str>, delay_secs: u32) -> Outcome {
    let retry = || {
        let asked = retry_after.and_then(|v| v.trim().parse::<u32>().ok()).unwrap_or(0);
        Outcome::Retry { delay_secs: delay_secs.max(asked).min(MAX_RETRY_DELAY_SECS) }
    };
    match status {
        None => retry(),
        Some(200..=299) => Outcome::Delivered,
        Some(429) | Some(500..=599) => retry(),
        // Other 4xx (a wrong signature or secret, a revoked key, a body the origin refuses) and
        // anything else unexpected: retrying cannot help until someone fixes the cause.
        Some(_) => Outcome::DeadLetter { reason: REASON_REFUSED },
    }
}

/// The shape a delivery message must have (checked without parsing every event).
#[derive(Deserialize)]
struct ForwardShape {
    write_key: String,
    events: Vec<serde::de::IgnoredAny>,
}

/// The number of events of a readable delivery message, `None` for an unreadable one (not
/// JSON, not a `ForwardBatch`, no key or no events).
pub fn readable_batch(text: &str) -> Option<usize> {
    let shape: ForwardShape = serde_json::from_str(text).ok()?;
    (!shape.write_key.is_empty() && !shape.events.is_empty()).then_some(shape.events.len())
}

/// A dead-lettered message: what the dead-letter queue carries for a message the consumer
/// refused, and what the `DeadLetterStore` keeps until a re-drive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Why it was dead-lettered ([`REASON_REFUSED`], [`REASON_UNREADABLE`], [`REASON_RETRIES_EXHAUSTED`]).
    pub reason: String,
    /// The origin's status, when it answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// The origin's answer (cut at [`DETAIL_BYTES`]) or what was wrong with the message.
    #[serde(default)]
    pub detail: String,
    /// When it was dead-lettered, in milliseconds since the epoch.
    pub at_ms: u64,
    /// The original message body (a `ForwardBatch` JSON text), `None` when it was not a string.
    pub batch: Option<String>,
}

/// How much of the origin's answer a dead letter keeps.
pub const DETAIL_BYTES: usize = 1024;

/// What a message on the dead-letter queue means: a [`DeadLetter`] the consumer wrote, or (any
/// other text) an original delivery message whose retries ran out.
pub fn dead_letter_of(text: Option<String>, now_ms: u64) -> DeadLetter {
    if let Some(t) = &text {
        if let Ok(letter) = serde_json::from_str::<DeadLetter>(t) {
            return letter;
        }
    }
    DeadLetter {
        reason: REASON_RETRIES_EXHAUSTED.to_owned(),
        status: None,
        detail: String::new(),
        at_ms: now_ms,
        batch: text,
    }
}

/// Constant-time comparison of an `Authorization: Bearer` value with the admin secret.
pub fn admin_authorised(header: Option<&str>, secret: &str) -> bool {
    let Some(given) = header.and_then(|h| h.trim().strip_prefix("Bearer ")).map(str::trim) else {
        return false;
    };
    if secret.is_empty() || given.len() != secret.len() {
        return false;
    }
    given.bytes().zip(secret.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn modes() {
        assert_eq!(DeliveryMode::parse(None), Some(DeliveryMode::Direct));
        assert_eq!(DeliveryMode::parse(Some(" ")), Some(DeliveryMode::Direct));
        assert_eq!(DeliveryMode::parse(Some("direct")), Some(DeliveryMode::Direct));
        assert_eq!(DeliveryMode::parse(Some(" queue ")), Some(DeliveryMode::Queue));
        assert_eq!(DeliveryMode::parse(Some("Queue")), None);
    }

    #[test]
    fn verdicts() {
        let retry = |d| Outcome::Retry { delay_secs: d };
        assert_eq!(classify(Some(200), None, 60), Outcome::Delivered);
        assert_eq!(classify(Some(204), None, 60), Outcome::Delivered);
        assert_eq!(classify(None, None, 60), retry(60));
        assert_eq!(classify(Some(503), None, 60), retry(60));
        assert_eq!(classify(Some(500), Some("120"), 60), retry(120));
        assert_eq!(classify(Some(429), Some("5"), 60), retry(60));
        assert_eq!(classify(Some(429), Some("999999"), 60), retry(MAX_RETRY_DELAY_SECS));
        assert_eq!(classify(Some(429), Some("soon"), 60), retry(60));
        for s in [400, 401, 403, 404, 413, 422, 301] {
            assert_eq!(classify(Some(s), None, 60), Outcome::DeadLetter { reason: REASON_REFUSED }, "{s}");
        }
    }

    #[test]
    fn readable() {
        assert_eq!(readable_batch(r#"{"write_key":"wk","events":[{},{}]}"#), Some(2));
        for bad in [
            "",
            "{",
            "null",
            "[]",
            r#"{"write_key":"wk","events":[]}"#,
            r#"{"write_key":"","events":[1]}"#,
            r#"{"events":[1]}"#,
        ] {
            assert_eq!(readable_batch(bad), None, "{bad}");
        }
    }

    #[test]
    fn dead_letters_round_trip() {
        let letter = DeadLetter {
            reason: REASON_REFUSED.into(),
            status: Some(400),
            detail: "bad".into(),
            at_ms: 5,
            batch: Some("{}".into()),
        };
        let text = serde_json::to_string(&letter).unwrap();
        assert_eq!(dead_letter_of(Some(text), 9), letter);
        let raw = r#"{"write_key":"wk","events":[{}]}"#.to_owned();
        let exhausted = dead_letter_of(Some(raw.clone()), 9);
        assert_eq!((exhausted.reason.as_str(), exhausted.at_ms), (REASON_RETRIES_EXHAUSTED, 9));
        assert_eq!(exhausted.batch, Some(raw));
        assert_eq!(dead_letter_of(None, 1).batch, None);
    }

    #[test]
    fn admin_secret() {
        assert!(admin_authorised(Some("Bearer s3cret"), "s3cret"));
        assert!(!admin_authorised(Some("Bearer s3cre"), "s3cret"));
        assert!(!admin_authorised(Some("s3cret"), "s3cret"));
        assert!(!admin_authorised(None, "s3cret"));
        assert!(!admin_authorised(Some("Bearer "), ""));
    }
}
