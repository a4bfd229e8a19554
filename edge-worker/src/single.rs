//! The one-event routes: a `POST /v1/track` body and a `GET /v1/p.gif` query, each turned into a
//! [`ParsedBatch`] of one event so that they run through the batch pipeline unchanged.
//!
//! Validation stays the protocol's ([`validate_event_json`], [`validate_event`]): this module only
//! decides the envelope of a single event, and builds the pixel's event from query parameters
//! with an id and a timestamp made at the edge (an `<img>` cannot run the SDK).

use chrono::{DateTime, SecondsFormat, Utc};
use protocol::envelope::{EnvelopeError, ParsedBatch};
use protocol::validate::{parse_timestamp, validate_event, validate_event_json};
use protocol::EnvelopeCode;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::routes::query_param;

/// A 1x1 transparent GIF (GIF89a, one transparent palette entry): the pixel's only answer.
pub const PIXEL_GIF: [u8; 43] = [
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff,
    0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x02,
    0x02, 0x44, 0x01, 0x00, 0x3b,
];

/// The write key parameters of the pixel, in order of preference (`k` keeps pixel URLs short).
pub const PIXEL_KEY_PARAMS: [&str; 2] = ["k", protocol::KEY_PARAM];

/// `sent_at` of a track body, read beside the event (unknown fields are ignored here; the event's
/// own validation sees them).
#[derive(Deserialize)]
struct SentAt<'a> {
    #[serde(default, borrow)]
    sent_at: Option<&'a RawValue>,
}

/// Parses a decoded `POST /v1/track` body: one event object, optionally with a top-level
/// `sent_at` (the sender's clock when sending, for skew correction, as in a batch). A body that
/// is not one JSON object is refused whole (`malformed_json`, like a batch that is not
/// `{"batch": [...]}`); the event itself is judged like a batch's event, at index 0.
pub fn parse_track(body: &[u8]) -> Result<ParsedBatch, EnvelopeError> {
    let text = protocol::envelope::body_text(body)?;
    let not_an_event = || EnvelopeError::new(EnvelopeCode::MalformedJson, "body is not one event object {...}");
    // RawValue checks the syntax of the whole text (trailing garbage included) without building
    // a tree; the depth of what is inside is the validator's business, as in a batch.
    let raw: &RawValue = serde_json::from_str(text).map_err(|_| not_an_event())?;
    if !raw.get().starts_with('{') {
        return Err(not_an_event());
    }
    let sent_at = match serde_json::from_str::<SentAt<'_>>(raw.get()).map(|s| s.sent_at) {
        Ok(None) => None,
        Ok(Some(r)) => match serde_json::from_str::<Option<String>>(r.get()) {
            Ok(None) => None,
            Ok(Some(s)) => Some(parse_timestamp(&s).ok_or_else(invalid_sent_at)?),
            Err(_) => return Err(invalid_sent_at()),
        },
        // A duplicate `sent_at`, or nesting past serde_json's limit: the second is the event's
        // problem (properties_too_deep), the first an unreadable envelope.
        Err(e) if e.to_string().contains("recursion limit") => None,
        Err(_) => return Err(not_an_event()),
    };
    let event = validate_event_json(raw.get()).map(|mut event| {
        // It was the envelope's field: forwarding it as an unknown event field would store it.
        event.extra.remove("sent_at");
        event
    });
    Ok(ParsedBatch { sent_at, events: vec![event] })
}

fn invalid_sent_at() -> EnvelopeError {
    EnvelopeError::new(EnvelopeCode::InvalidSentAt, "sent_at is not an rfc 3339 timestamp")
}

/// The pixel's write key: `?k=`, else `?key=` (trimmed; empty counts as absent).
pub fn pixel_key(url: &str) -> Option<String> {
    PIXEL_KEY_PARAMS
        .iter()
        .find_map(|name| query_param(url, name).map(|k| k.trim().to_owned()).filter(|k| !k.is_empty()))
}

/// A UUID v7 from the edge's clock and 10 random bytes (the caller's CSPRNG), as the SDK makes
/// them: time-ordered, so storage indexes stay append-mostly.
pub fn uuid_v7(now_ms: u64, random: &[u8; 10]) -> Uuid {
    uuid::Builder::from_unix_timestamp_millis(now_ms, random).into_uuid()
}

/// The page view of a `GET /v1/p.gif?k=<key>&u=<url>&r=<referrer>&t=<title>[&p=<path>]`:
/// type `page`, the given `id` and `now` as its time (the edge is its clock, so no skew
/// correction), the page fields in `context` (the path taken from the URL unless `p` is given).
/// Without `u`, the request's `Referer` header is the page URL: that is the page the `<img>`
/// is on, and a static page cannot write its own URL into the tag.
/// No anonymous id: the event is cookieless and the visitor hash stands in for the person.
/// The event goes through the protocol's validator like any other (an 8 KiB+ URL is refused).
pub fn pixel_event(url: &str, referer: Option<&str>, id: Uuid, now: DateTime<Utc>) -> ParsedBatch {
    let mut context = Map::new();
    let param = |name: &str| query_param(url, name).filter(|v| !v.is_empty());
    let page_url = param("u").or_else(|| referer.map(str::trim).filter(|r| !r.is_empty()).map(str::to_owned));
    let path = param("p").or_else(|| page_url.as_deref().and_then(url_path).map(str::to_owned));
    for (field, value) in [("url", page_url), ("path", path), ("referrer", param("r")), ("title", param("t"))] {
        if let Some(v) = value {
            context.insert(field.to_owned(), Value::String(v));
        }
    }
    let mut event = Map::new();
    event.insert("id".into(), Value::String(id.to_string()));
    event.insert("type".into(), Value::String("page".into()));
    event.insert("timestamp".into(), Value::String(now.to_rfc3339_opts(SecondsFormat::Millis, true)));
    if !context.is_empty() {
        event.insert("context".into(), Value::Object(context));
    }
    ParsedBatch { sent_at: None, events: vec![validate_event(Value::Object(event))] }
}

/// The path of an absolute URL (`https://h/a/b?q#f` -> `/a/b`, `https://h` -> `/`); `None` when
/// it is not `scheme://...`.
fn url_path(url: &str) -> Option<&str> {
    let rest = &url[url.find("://")? + 3..];
    let rest = &rest[..rest.find(['?', '#']).unwrap_or(rest.len())];
    Some(rest.find('/').map_or("/", |slash| &rest[slash..]))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use protocol::limits::MAX_BATCH_BYTES;
    use protocol::RejectCode;

    const ID: &str = "0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b";

    fn event(extra: &str) -> String {
        format!(
            r#"{{"id": "{ID}", "type": "track", "name": "n", "anonymous_id": "a", "timestamp": "2026-12-01T10:00:00Z"{extra}}}"#
        )
    }

    /// `Ok(Ok(sent_at?))` for an accepted event, `Ok(Err(code))` for a rejected one, `Err(code)`
    /// for a refused body.
    fn check(body: &str, expected: Result<Result<Option<&str>, RejectCode>, EnvelopeCode>) {
        let got = parse_track(body.as_bytes()).map(|p| {
            assert_eq!(p.events.len(), 1, "{body}");
            p.events[0].as_ref().map(|_| p.sent_at.map(|t| t.to_rfc3339())).map_err(|r| r.code)
        });
        let expected = expected.map(|r| r.map(|s| s.map(str::to_owned)));
        assert_eq!(got.map_err(|e| e.code), expected, "{body}");
    }

    #[test]
    fn track_bodies() {
        use EnvelopeCode::*;
        let sent = r#", "sent_at": "2026-12-01T10:00:05Z""#;
        check(&event(""), Ok(Ok(None)));
        check(&event(sent), Ok(Ok(Some("2026-12-01T10:00:05+00:00"))));
        check(&event(r#", "sent_at": null"#), Ok(Ok(None)));
        check(&format!(" \n{}\n ", event("")), Ok(Ok(None)));
        check(&event(r#", "sent_at": "noon""#), Err(InvalidSentAt));
        check(&event(r#", "sent_at": 5"#), Err(InvalidSentAt));
        check(&event(r#", "sent_at": "2026-12-01T10:00:05Z", "sent_at": null"#), Err(MalformedJson));
        check("", Err(MalformedJson));
        check("{", Err(MalformedJson));
        check("null", Err(MalformedJson));
        check("[]", Err(MalformedJson));
        check(&format!("[{}]", event("")), Err(MalformedJson));
        check(r#""text""#, Err(MalformedJson));
        check(&format!("{}{}", event(""), event("")), Err(MalformedJson));
        check(&format!("{} x", event("")), Err(MalformedJson));
        check("{}", Ok(Err(RejectCode::MissingId)));
        check(&event("").replace("track", "nope"), Ok(Err(RejectCode::InvalidType)));
        check(&event(r#", "properties": {"n": 1e999}"#), Ok(Err(RejectCode::NotAnObject)));
        let deep = format!(r#", "properties": {}1{}"#, "[".repeat(300), "]".repeat(300));
        check(&event(&deep), Ok(Err(RejectCode::PropertiesTooDeep)));
        let big = format!(r#", "properties": {{"a": "{}"}}"#, "x".repeat(40_000));
        check(&event(&big), Ok(Err(RejectCode::EventTooLarge)));
        assert_eq!(parse_track(b"{\"a\": \"\xff\"}").unwrap_err().code, InvalidUtf8);
        assert_eq!(parse_track(&vec![b' '; MAX_BATCH_BYTES + 1]).unwrap_err().code, PayloadTooLarge);
    }

    #[test]
    fn sent_at_is_not_forwarded_as_an_event_field() {
        let parsed = parse_track(event(r#", "sent_at": "2026-12-01T10:00:05Z", "x": 1"#).as_bytes()).unwrap();
        let e = parsed.events[0].as_ref().unwrap();
        assert!(!e.extra.contains_key("sent_at"));
        assert_eq!(e.extra.get("x"), Some(&Value::from(1)));
    }

    #[test]
    fn pixel_keys() {
        let cases = [
            ("https://e.test/v1/p.gif?k=wk_1", Some("wk_1")),
            ("https://e.test/v1/p.gif?key=wk_2", Some("wk_2")),
            ("https://e.test/v1/p.gif?key=wk_2&k=wk_1", Some("wk_1")),
            ("https://e.test/v1/p.gif?k=&key=wk_2", Some("wk_2")),
            ("https://e.test/v1/p.gif?k=%20", None),
            ("https://e.test/v1/p.gif", None),
        ];
        for (url, expected) in cases {
            assert_eq!(pixel_key(url).as_deref(), expected, "{url}");
        }
    }

    #[test]
    fn pixel_events() {
        let id = uuid_v7(1_764_583_205_000, &[7; 10]);
        let now = DateTime::from_timestamp_millis(1_764_583_205_123).unwrap();
        let context = |url: &str, referer: Option<&str>| {
            let parsed = pixel_event(url, referer, id, now);
            assert!(parsed.sent_at.is_none());
            let e = parsed.events.into_iter().next().unwrap().unwrap();
            assert_eq!((e.id, e.kind, e.name.as_str(), e.timestamp), (id, protocol::EventType::Page, "$pageview", now));
            assert_eq!((e.anonymous_id, e.user_id), (None, None));
            let c = e.context;
            (c.url, c.path, c.referrer, c.title)
        };
        let s = |v: &str| Some(v.to_owned());
        let shop = Some("https://shop.example/from/referer?x=1");
        let cases = [
            (
                "https://e.test/v1/p.gif?k=wk&u=https%3A%2F%2Fshop.example%2Fa%2Fb%3Fq%3D1&r=https%3A%2F%2Fgoogle.com%2F&t=Hello+world",
                None,
                (s("https://shop.example/a/b?q=1"), s("/a/b"), s("https://google.com/"), s("Hello world")),
            ),
            ("https://e.test/v1/p.gif?k=wk&u=https://shop.example", None, (s("https://shop.example"), s("/"), None, None)),
            ("https://e.test/v1/p.gif?k=wk&u=https://shop.example/x&p=/y", None, (s("https://shop.example/x"), s("/y"), None, None)),
            ("https://e.test/v1/p.gif?k=wk&u=not-a-url&t=", None, (s("not-a-url"), None, None, None)),
            ("https://e.test/v1/p.gif?k=wk", None, (None, None, None, None)),
            ("https://e.test/v1/p.gif?k=wk", shop, (s("https://shop.example/from/referer?x=1"), s("/from/referer"), None, None)),
            ("https://e.test/v1/p.gif?k=wk&u=", shop, (s("https://shop.example/from/referer?x=1"), s("/from/referer"), None, None)),
            ("https://e.test/v1/p.gif?k=wk&u=https://shop.example/u", shop, (s("https://shop.example/u"), s("/u"), None, None)),
            ("https://e.test/v1/p.gif?k=wk", Some(" "), (None, None, None, None)),
        ];
        for (url, referer, expected) in cases {
            assert_eq!(context(url, referer), expected, "{url} {referer:?}");
        }
        let long = format!("https://e.test/v1/p.gif?k=wk&u=https://x/{}", "a".repeat(9000));
        assert_eq!(pixel_event(&long, None, id, now).events[0].as_ref().unwrap_err().code, RejectCode::InvalidContext);
    }

    #[test]
    fn v7_ids() {
        let id = uuid_v7(1_764_583_205_000, &[0xab; 10]);
        assert_eq!(id.get_version_num(), 7);
        assert_eq!(id.get_variant(), uuid::Variant::RFC4122);
        assert_eq!(id.to_string()[..13], *"019ad95a-e888");
        assert!(uuid_v7(1_764_583_205_001, &[0; 10]) > id);
    }

    #[test]
    fn the_gif_is_a_gif() {
        assert_eq!(&PIXEL_GIF[..6], b"GIF89a");
        assert_eq!((PIXEL_GIF[6], PIXEL_GIF[8]), (1, 1));
        assert_eq!(PIXEL_GIF.last(), Some(&0x3b));
    }
}
