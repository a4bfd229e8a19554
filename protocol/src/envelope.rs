//! The request envelope: content type, encoding, body size, the batch object, and the answers.
//!
//! Envelope errors refuse the whole request (a 4xx with an [`EnvelopeCode`]); everything inside a
//! readable batch is judged per event, so one bad event never costs the good ones.

use std::io::Read;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::codes::EnvelopeCode;
use crate::event::Event;
use crate::limits::{MAX_BATCH_BYTES, MAX_EVENTS_PER_BATCH};
use crate::validate::{parse_timestamp, validate_event_json, Rejection};

/// A refused request: the stable code and a human-readable message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct EnvelopeError {
    /// The stable code; its HTTP status is [`EnvelopeCode::status`].
    pub code: EnvelopeCode,
    /// Lowercase, no trailing period; safe to show to the sender.
    pub message: String,
}

impl EnvelopeError {
    /// Builds an error from a code and a message.
    pub fn new(code: EnvelopeCode, message: impl Into<String>) -> Self {
        EnvelopeError { code, message: message.into() }
    }

    /// The JSON body sent with the 4xx.
    pub fn body(&self) -> ErrorBody {
        ErrorBody { error: ErrorDetail { code: self.code, message: self.message.clone() } }
    }
}

/// `{"error": {"code": "...", "message": "..."}}`: the body of every refused request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// The inside of an [`ErrorBody`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// Stable code to branch on.
    pub code: EnvelopeCode,
    /// Human-readable explanation.
    pub message: String,
}

/// One refused event in a [`BatchResponse`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejected {
    /// Position of the event in the batch the sender sent.
    pub index: usize,
    /// Why it was refused.
    pub code: crate::codes::RejectCode,
    /// The field at fault, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// The 200 answer to a readable batch.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchResponse {
    /// Events accepted (stored, or already stored: a duplicate counts as accepted).
    pub accepted: usize,
    /// Events refused, by index.
    pub rejected: Vec<Rejected>,
}

/// Checks the `Content-Type` header: `application/json` or `text/plain` (what `sendBeacon` sends
/// without a preflight), with any parameters (`; charset=UTF-8`).
pub fn check_content_type(header: Option<&str>) -> Result<(), EnvelopeError> {
    let essence = header.and_then(|h| h.split(';').next()).map(|s| s.trim().to_ascii_lowercase());
    match essence.as_deref() {
        Some("application/json") | Some("text/plain") => Ok(()),
        other => Err(EnvelopeError::new(
            EnvelopeCode::UnsupportedMediaType,
            format!("content type {} is not supported; send application/json or text/plain", other.unwrap_or("(none)")),
        )),
    }
}

/// Decides whether the body is gzip from the `Content-Encoding` header or the
/// `?compression=gzip` query parameter (beacons cannot set headers).
pub fn is_gzip(content_encoding: Option<&str>, compression_param: Option<&str>) -> Result<bool, EnvelopeError> {
    let pick = |v: Option<&str>| v.map(|s| s.trim().to_ascii_lowercase()).filter(|s| !s.is_empty());
    match (pick(content_encoding).as_deref(), pick(compression_param).as_deref()) {
        (None | Some("identity"), None) => Ok(false),
        (Some("gzip") | Some("x-gzip"), _) | (None | Some("identity"), Some("gzip")) => Ok(true),
        (enc, param) => Err(EnvelopeError::new(
            EnvelopeCode::UnsupportedEncoding,
            format!("encoding {} is not supported; use gzip", enc.or(param).unwrap_or("?")),
        )),
    }
}

/// Returns the body bytes, gunzipped when `gzip`, refusing anything over `limit` bytes. A gzip
/// bomb is cut off after `limit + 1` decoded bytes, never inflated in full.
pub fn decode_body(body: &[u8], gzip: bool, limit: usize) -> Result<Vec<u8>, EnvelopeError> {
    let too_large = || EnvelopeError::new(EnvelopeCode::PayloadTooLarge, format!("body is larger than {limit} bytes"));
    if !gzip {
        if body.len() > limit {
            return Err(too_large());
        }
        return Ok(body.to_vec());
    }
    let mut out = Vec::with_capacity(body.len().saturating_mul(4).min(limit + 1));
    let decoder = flate2::read::GzDecoder::new(body);
    decoder
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|_| EnvelopeError::new(EnvelopeCode::InvalidEncoding, "body is not valid gzip"))?;
    if out.len() > limit {
        return Err(too_large());
    }
    Ok(out)
}

#[derive(Deserialize)]
struct RawBatch<'a> {
    #[serde(default)]
    sent_at: Option<&'a RawValue>,
    #[serde(borrow)]
    batch: Vec<&'a RawValue>,
}

/// A readable batch: `sent_at` and each event's verdict, in order.
#[derive(Debug)]
pub struct ParsedBatch {
    /// When the client sent the batch (by its clock), used for skew correction.
    pub sent_at: Option<DateTime<Utc>>,
    /// One verdict per event, in batch order.
    pub events: Vec<Result<Event, Rejection>>,
}

impl ParsedBatch {
    /// The rejections as they go into a [`BatchResponse`].
    pub fn rejected(&self) -> Vec<Rejected> {
        self.events
            .iter()
            .enumerate()
            .filter_map(|(index, r)| r.as_ref().err().map(|rej| rejected(index, *rej)))
            .collect()
    }
}

/// Converts a [`Rejection`] at `index` into its wire form.
pub fn rejected(index: usize, rej: Rejection) -> Rejected {
    Rejected { index, code: rej.code, field: rej.field.map(str::to_owned) }
}

/// A decoded body as text: within the batch size limit and valid UTF-8 (every ingest route's
/// first check of what it was sent).
pub fn body_text(body: &[u8]) -> Result<&str, EnvelopeError> {
    if body.len() > MAX_BATCH_BYTES {
        return Err(EnvelopeError::new(
            EnvelopeCode::PayloadTooLarge,
            format!("body is larger than {MAX_BATCH_BYTES} bytes"),
        ));
    }
    std::str::from_utf8(body).map_err(|e| {
        EnvelopeError::new(EnvelopeCode::InvalidUtf8, format!("body is not utf-8 (at byte {})", e.valid_up_to()))
    })
}

/// Parses a decoded body (at most [`MAX_BATCH_BYTES`]) into a batch and validates every event.
pub fn parse_batch(body: &[u8]) -> Result<ParsedBatch, EnvelopeError> {
    let text = body_text(body)?;
    let raw: RawBatch<'_> = serde_json::from_str(text).map_err(|e| {
        EnvelopeError::new(
            EnvelopeCode::MalformedJson,
            format!("body is not a batch object {{\"batch\": [...]}}: {}", lowercase_first(&e.to_string())),
        )
    })?;
    if raw.batch.is_empty() {
        return Err(EnvelopeError::new(EnvelopeCode::EmptyBatch, "batch has no events"));
    }
    if raw.batch.len() > MAX_EVENTS_PER_BATCH {
        return Err(EnvelopeError::new(
            EnvelopeCode::TooManyEvents,
            format!("batch has {} events; the limit is {MAX_EVENTS_PER_BATCH}", raw.batch.len()),
        ));
    }
    let sent_at = match raw.sent_at.map(|r| serde_json::from_str::<Option<String>>(r.get())) {
        None | Some(Ok(None)) => None,
        Some(Ok(Some(s))) => Some(parse_timestamp(&s).ok_or_else(invalid_sent_at)?),
        Some(Err(_)) => return Err(invalid_sent_at()),
    };
    let events = raw.batch.iter().map(|r| validate_event_json(r.get())).collect();
    Ok(ParsedBatch { sent_at, events })
}

fn invalid_sent_at() -> EnvelopeError {
    EnvelopeError::new(EnvelopeCode::InvalidSentAt, "sent_at is not an rfc 3339 timestamp")
}

fn lowercase_first(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::codes::RejectCode;
    use std::io::Write;

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    #[test]
    fn content_types() {
        let cases = [
            (Some("application/json"), true),
            (Some("application/json; charset=utf-8"), true),
            (Some("text/plain;charset=UTF-8"), true),
            (Some("Application/JSON"), true),
            (Some("application/x-www-form-urlencoded"), false),
            (Some("multipart/form-data; boundary=x"), false),
            (None, false),
        ];
        for (h, ok) in cases {
            assert_eq!(check_content_type(h).is_ok(), ok, "{h:?}");
        }
        assert_eq!(check_content_type(Some("text/html")).unwrap_err().code, EnvelopeCode::UnsupportedMediaType);
    }

    #[test]
    fn encodings() {
        let cases = [
            (None, None, Ok(false)),
            (Some("gzip"), None, Ok(true)),
            (None, Some("gzip"), Ok(true)),
            (Some("identity"), None, Ok(false)),
            (Some("br"), None, Err(EnvelopeCode::UnsupportedEncoding)),
            (None, Some("zstd"), Err(EnvelopeCode::UnsupportedEncoding)),
        ];
        for (h, q, expected) in cases {
            assert_eq!(is_gzip(h, q).map_err(|e| e.code), expected, "{h:?} {q:?}");
        }
    }

    #[test]
    fn gzip_bomb_is_cut_off() {
        let bomb = gz(&vec![b' '; 50 * 1024 * 1024]);
        assert!(bomb.len() < 100 * 1024);
        assert_eq!(decode_body(&bomb, true, 1024).unwrap_err().code, EnvelopeCode::PayloadTooLarge);
        assert_eq!(decode_body(b"not gzip", true, 1024).unwrap_err().code, EnvelopeCode::InvalidEncoding);
        assert_eq!(decode_body(&gz(b"{}"), true, 1024).unwrap(), b"{}");
        assert_eq!(decode_body(&[0u8; 2048], false, 1024).unwrap_err().code, EnvelopeCode::PayloadTooLarge);
    }

    fn code_of(body: &[u8]) -> Option<EnvelopeCode> {
        parse_batch(body).err().map(|e| e.code)
    }

    #[test]
    fn envelope_table() {
        use EnvelopeCode::*;
        assert_eq!(code_of(b"{"), Some(MalformedJson));
        assert_eq!(code_of(b"[]"), Some(MalformedJson));
        assert_eq!(code_of(b"{\"batch\": 3}"), Some(MalformedJson));
        assert_eq!(code_of(b"{\"batch\": []}"), Some(EmptyBatch));
        assert_eq!(code_of(b"{\"batch\": [{}], \"sent_at\": \"noon\"}"), Some(InvalidSentAt));
        assert_eq!(code_of(b"{\"batch\": [{}], \"sent_at\": 5}"), Some(InvalidSentAt));
        assert_eq!(code_of(b"{\"batch\": [\"\xff\"]}"), Some(InvalidUtf8));
        // Nesting deeper than serde_json's limit costs only that event, not the batch.
        let deep = format!("{{\"batch\": [{}{}]}}", "[".repeat(200), "]".repeat(200));
        let parsed = parse_batch(deep.as_bytes()).unwrap();
        assert_eq!(parsed.events[0].as_ref().unwrap_err().code, RejectCode::PropertiesTooDeep);
        let many = format!("{{\"batch\": [{}]}}", vec!["{}"; MAX_EVENTS_PER_BATCH + 1].join(","));
        assert_eq!(code_of(many.as_bytes()), Some(TooManyEvents));
        assert_eq!(code_of(&vec![b' '; MAX_BATCH_BYTES + 1]), Some(PayloadTooLarge));
        assert_eq!(code_of(b"{\"batch\": [{}], \"sent_at\": null}"), None);
    }

    #[test]
    fn mixed_batch_keeps_the_good_events() {
        let body = br#"{"sent_at": "2026-12-01T10:00:01Z", "batch": [
            {"id": "0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", "type": "track", "name": "a", "anonymous_id": "x", "timestamp": "2026-12-01T10:00:00Z"},
            {"id": "nope", "type": "track", "name": "b", "anonymous_id": "x", "timestamp": "2026-12-01T10:00:00Z"},
            {"id": "0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5c", "type": "page", "anonymous_id": "x", "timestamp": "2026-12-01T10:00:00Z"},
            {"id": "0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5d", "type": "track", "name": "c", "anonymous_id": "x", "timestamp": "soon"}
        ]}"#;
        let parsed = parse_batch(body).unwrap();
        assert_eq!(parsed.events.iter().filter(|e| e.is_ok()).count(), 2);
        let rej = parsed.rejected();
        assert_eq!(
            rej,
            vec![
                Rejected { index: 1, code: RejectCode::InvalidId, field: Some("id".into()) },
                Rejected { index: 3, code: RejectCode::InvalidTimestamp, field: Some("timestamp".into()) },
            ]
        );
        assert!(parsed.sent_at.is_some());
    }
}
