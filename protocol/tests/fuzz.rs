//! Property-based fuzzing of the parser and validator of untrusted input (`parse_batch`,
//! `validate_event_json`, `decode_body`) with proptest, run by the normal `cargo test`.
//!
//! cargo-fuzz needs nightly, which CI may not have; proptest runs on stable and shrinks a
//! failure to a small input. Every property runs a bounded number of cases by default (a few
//! seconds in a debug build). For a longer campaign set `NEXUS_FUZZ_SECS` (the total budget,
//! split between the properties); each property then prints how many inputs it ran:
//!
//! ```sh
//! NEXUS_FUZZ_SECS=300 cargo test --release -p nexus-protocol --features server --test fuzz -- --nocapture
//! ```
#![cfg(feature = "server")]
#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed property

use std::io::Write;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestRunner};
use protocol::envelope::{decode_body, parse_batch};
use protocol::limits::{MAX_BATCH_BYTES, MAX_EVENTS_PER_BATCH, MAX_EVENT_BYTES};
use protocol::validate::{check_typed, validate_event_json};
use serde_json::{json, Map, Value};

/// Number of properties below (the time budget is split between them).
const PROPERTIES: u32 = 7;

/// Runs `test` over `strategy`: `cases` cases (sized so the whole file takes a few seconds in a
/// debug build), or for `NEXUS_FUZZ_SECS / PROPERTIES` seconds when that variable is set.
/// Panics with the shrunk input on a failure.
fn fuzz<S: Strategy>(name: &str, cases: u32, strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S::Value: std::fmt::Debug,
{
    let budget = std::env::var("NEXUS_FUZZ_SECS").ok().and_then(|s| s.parse::<u64>().ok());
    // No regression files: a failure prints its shrunk input, which goes into a table test.
    let config = |cases| Config { cases, failure_persistence: None, ..Config::default() };
    let Some(secs) = budget else {
        TestRunner::new(config(cases)).run(&strategy, &test).unwrap();
        return;
    };
    let deadline = Instant::now() + Duration::from_secs(secs) / PROPERTIES;
    let base = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    let executions = std::cell::Cell::new(0u64);
    let counted = |v: S::Value| {
        executions.set(executions.get() + 1);
        test(v)
    };
    // A fresh runner per round (a runner that finished its cases does nothing more), each with
    // its own seed, printed so that a failing round can be replayed.
    let mut round = 0u64;
    while Instant::now() < deadline {
        let seed = base.wrapping_add(round);
        let config = Config { rng_seed: RngSeed::Fixed(seed), ..config(500) };
        if let Err(e) = TestRunner::new(config).run(&strategy, counted) {
            panic!("fuzz {name}: seed {seed}: {e}");
        }
        round += 1;
    }
    let executions = executions.get();
    println!("fuzz {name}: {executions} executions in {secs}/{PROPERTIES} s");
}

const ID: &str = "0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b";

/// Strings an attacker would try: escapes, prototype keys, injections, odd unicode, long runs.
fn hostile_string() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,24}",
        "[\\x00-\\x1f\"\\\\]{0,8}",
        Just("__proto__".to_owned()),
        Just("constructor".to_owned()),
        Just("prototype".to_owned()),
        Just("'; DROP TABLE events; --".to_owned()),
        Just("\u{feff}\u{202e}\u{0}\u{ffff}".to_owned()),
        Just("\u{1F600}".repeat(3)),
        (0usize..10_000).prop_map(|n| "x".repeat(n)),
        Just(ID.to_owned()),
        Just("2026-12-01T10:00:00Z".to_owned()),
        Just("+10000-01-01T00:00:00Z".to_owned()),
    ]
}

/// Numbers at the edges of f64 and i64 (NaN and infinities have no JSON form).
fn hostile_number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| json!(f)),
        Just(json!(f64::MAX)),
        Just(json!(f64::MIN_POSITIVE)),
        Just(json!(-0.0)),
    ]
}

/// Any JSON value, nested up to 12 levels, with keys the validator cares about.
fn hostile_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        hostile_number(),
        hostile_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(12, 128, 6, |inner| {
        let key = prop_oneof![
            prop::sample::select(vec![
                "id",
                "type",
                "name",
                "timestamp",
                "anonymous_id",
                "user_id",
                "session_id",
                "previous_id",
                "group_type",
                "group_key",
                "properties",
                "set",
                "set_once",
                "context",
                "screen",
                "utm",
                "library",
                "url",
                "__proto__",
            ])
            .prop_map(str::to_owned),
            hostile_string(),
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(key, inner, 0..8).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A valid event, built within every limit: the validator must accept all of these.
fn valid_event() -> impl Strategy<Value = Value> {
    let id = any::<u128>().prop_map(|n| uuid::Uuid::from_u128(n).to_string());
    let kind = prop::sample::select(vec!["track", "page", "identify", "alias", "group"]);
    let text =
        |max: usize| prop::collection::vec(any::<char>(), 1..max).prop_map(|c| c.into_iter().collect::<String>());
    // Bytes, not chars, are limited: keep ids and names short enough in any encoding.
    let short = text(50);
    let timestamp = (0i64..253_402_300_799).prop_map(|s| chrono::DateTime::from_timestamp(s, 0).unwrap().to_rfc3339());
    let shallow = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        hostile_number(),
        text(200).prop_map(Value::String)
    ]
    .prop_recursive(7, 32, 4, |inner| prop::collection::vec(inner, 0..4).prop_map(Value::Array));
    let properties = prop::collection::btree_map(text(50), shallow, 0..20);
    (id, kind, short.clone(), short.clone(), short, timestamp, properties).prop_map(
        |(id, kind, name, distinct, other, timestamp, props)| {
            let mut ev = json!({
                "id": id, "type": kind, "name": name, "anonymous_id": distinct, "timestamp": timestamp,
                "properties": props.into_iter().collect::<Map<String, Value>>(),
                "context": {"url": "https://shop.example/", "screen": {"width": 1280, "height": 720}},
            });
            let obj = ev.as_object_mut().unwrap();
            match kind {
                "identify" => drop(obj.insert("user_id".into(), json!(other))),
                "alias" => drop(obj.insert("previous_id".into(), json!(other))),
                "group" => {
                    obj.insert("group_type".into(), json!("company"));
                    obj.insert("group_key".into(), json!(other));
                }
                _ => {}
            }
            ev
        },
    )
}

/// One entry of a batch: mostly valid events, some with one field replaced by hostile JSON, some
/// pure noise.
fn batch_entry() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => valid_event(),
        3 => (valid_event(), prop::sample::select(vec!["id", "type", "name", "timestamp", "anonymous_id", "properties", "context", "__proto__"]), hostile_json())
            .prop_map(|(mut ev, field, v)| {
                ev[field] = v;
                ev
            }),
        1 => hostile_json(),
    ]
}

/// Damage done to a serialised body before it is parsed.
#[derive(Debug, Clone)]
enum Mutation {
    None,
    Truncate(usize),
    Flip(usize, u8),
    Insert(usize, Vec<u8>),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => Just(Mutation::None),
        1 => any::<usize>().prop_map(Mutation::Truncate),
        1 => (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Flip(i, b)),
        1 => (any::<usize>(), prop::sample::select(vec![
            b"[".to_vec(), b"{".to_vec(), b"\"".to_vec(), b"\\".to_vec(), b",".to_vec(), vec![0xff], vec![0xc0, 0xaf],
            b"NaN".to_vec(), b"1e999".to_vec(), b"\\ud800".to_vec(), b"\xef\xbb\xbf".to_vec(),
        ])).prop_map(|(i, b)| Mutation::Insert(i, b)),
    ]
}

fn apply(mut body: Vec<u8>, m: &Mutation) -> Vec<u8> {
    let at = |i: usize, len: usize| if len == 0 { 0 } else { i % (len + 1) };
    match m {
        Mutation::None => {}
        Mutation::Truncate(i) => body.truncate(at(*i, body.len())),
        Mutation::Flip(i, b) => {
            if !body.is_empty() {
                let i = i % body.len();
                body[i] ^= b | 1;
            }
        }
        Mutation::Insert(i, bytes) => {
            let i = at(*i, body.len());
            body.splice(i..i, bytes.iter().copied());
        }
    }
    body
}

/// The invariants of a parsed batch, checked on every body, hostile or not.
fn check_batch(body: &[u8]) -> Result<(), TestCaseError> {
    let parsed = match parse_batch(body) {
        Err(e) => {
            let status = e.code.status();
            prop_assert!((400..500).contains(&status), "envelope error {} has status {status}", e.code);
            prop_assert!(!e.message.is_empty());
            return Ok(());
        }
        Ok(p) => p,
    };
    let len = parsed.events.len();
    prop_assert!((1..=MAX_EVENTS_PER_BATCH).contains(&len));
    let rejected = parsed.rejected();
    let accepted = parsed.events.iter().filter(|e| e.is_ok()).count();
    prop_assert_eq!(accepted + rejected.len(), len);
    prop_assert!(rejected.windows(2).all(|w| w[0].index < w[1].index), "rejections out of order");
    prop_assert!(rejected.iter().all(|r| r.index < len));
    for event in parsed.events.into_iter().flatten() {
        prop_assert!(check_typed(&event).is_ok(), "accepted event fails the typed checks: {event:?}");
        // What the edge forwards is the re-serialised event: it must pass validation again and
        // come back identical (the origin re-checks, and storage must see what the edge saw).
        let text = serde_json::to_string(&event).unwrap();
        let again = validate_event_json(&text);
        let Ok(again) = again else {
            return Err(TestCaseError::fail(format!("re-serialised event refused: {text} -> {again:?}")));
        };
        prop_assert!(same_event(&again, &event), "re-serialised event changed: {text} -> {again:?}");
    }
    Ok(())
}

/// Equality of two events up to float rounding. serde_json (without its `float_roundtrip`
/// feature, as the workspace builds it) may parse a float 1 ULP away from the value it printed,
/// so a float property can drift by one ULP per edge -> origin hop; everything else must be
/// identical.
fn same_event(a: &protocol::event::Event, b: &protocol::event::Event) -> bool {
    same_json(&serde_json::to_value(a).unwrap(), &serde_json::to_value(b).unwrap())
}

fn same_json(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            let (x, y) = (x.as_f64().unwrap_or(f64::NAN), y.as_f64().unwrap_or(f64::NAN));
            x == y || (x - y).abs() <= f64::EPSILON * 4.0 * x.abs().max(y.abs())
        }
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_json(x, y)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same_json(v, w)))
        }
        _ => a == b,
    }
}

fn body_of(sent_at: &Option<Value>, events: &[Value]) -> Vec<u8> {
    let mut envelope = Map::new();
    if let Some(s) = sent_at {
        envelope.insert("sent_at".into(), s.clone());
    }
    envelope.insert("batch".into(), Value::Array(events.to_vec()));
    serde_json::to_vec(&envelope).unwrap()
}

#[test]
fn raw_bytes_never_panic() {
    fuzz("raw bytes", 2000, prop::collection::vec(any::<u8>(), 0..2048), |bytes| {
        check_batch(&bytes)?;
        let _ = validate_event_json(&String::from_utf8_lossy(&bytes));
        Ok(())
    });
}

#[test]
fn structured_hostile_batches_keep_the_invariants() {
    let sent_at =
        prop::option::of(prop_oneof![Just(json!("2026-12-01T10:00:00Z")), Just(Value::Null), hostile_json(),]);
    let strategy = (sent_at, prop::collection::vec(batch_entry(), 0..12), mutation());
    fuzz("structured batches", 120, strategy, |(sent_at, events, m)| {
        let body = apply(body_of(&sent_at, &events), &m);
        check_batch(&body)?;
        // Without damage, a batch is judged event by event: each verdict equals the verdict of
        // the event on its own (no event can affect another).
        if matches!(m, Mutation::None) {
            if let Ok(parsed) = parse_batch(&body) {
                for (i, verdict) in parsed.events.iter().enumerate() {
                    let alone = validate_event_json(&serde_json::to_string(&events[i]).unwrap());
                    prop_assert_eq!(verdict, &alone, "event {}", i);
                }
            }
        }
        Ok(())
    });
}

/// An event with its context damaged in one place: the typed fast path of the validator must
/// agree with the value path on every one of these, as on any other input.
fn context_variant() -> impl Strategy<Value = Value> {
    let field = prop::sample::select(vec![
        "url", "path", "title", "referrer", "locale", "timezone", "utm", "screen", "library", "extra",
    ]);
    let odd = prop_oneof![
        Just(Value::Null),
        Just(json!({})),
        Just(json!([])),
        Just(json!([1280, 720])),
        Just(json!(["nexus-js", "0.1.0"])),
        Just(json!({"source": "news", "medium": null})),
        Just(json!({"source": "x".repeat(9000)})),
        Just(json!({"width": 1280, "height": 720, "dpr": 2})),
        Just(json!({"width": 1280.0, "height": 720})),
        Just(json!({"width": -1, "height": 720})),
        Just(json!({"name": "nexus-js", "version": "0.1.0"})),
        Just(json!({"name": "nexus-js", "version": "0.1.0", "build": "x".repeat(9000)})),
        Just(json!({"name": "nexus-js"})),
        Just(json!("x".repeat(9000))),
        hostile_json(),
    ];
    (valid_event(), field, odd).prop_map(|(mut ev, field, v)| {
        ev["context"][field] = v;
        ev
    })
}

#[test]
fn the_typed_fast_path_agrees_with_the_value_path() {
    // Whole events as arrays, too: a derived struct would read `[id, type, ...]` in field order.
    let as_array = valid_event().prop_map(|ev| Value::Array(ev.as_object().unwrap().values().cloned().collect()));
    let input = prop_oneof![3 => batch_entry(), 2 => context_variant(), 1 => as_array];
    fuzz("fast path", 400, input, |event| {
        let raw = serde_json::to_string(&event).unwrap();
        // The size limit applies to the text before either path runs.
        if raw.len() > MAX_EVENT_BYTES {
            return Ok(());
        }
        let slow = protocol::validate::validate_event(event);
        prop_assert_eq!(validate_event_json(&raw), slow, "{}", raw);
        Ok(())
    });
}

#[test]
fn valid_events_are_always_accepted() {
    fuzz("valid events", 60, prop::collection::vec(valid_event(), 1..20), |events| {
        let parsed = parse_batch(&body_of(&None, &events)).unwrap();
        for (i, verdict) in parsed.events.iter().enumerate() {
            prop_assert!(verdict.is_ok(), "event {} refused: {:?}\n{}", i, verdict, events[i]);
        }
        check_batch(&body_of(&Some(json!("2026-12-01T10:00:00Z")), &events))
    });
}

#[test]
fn events_near_the_size_limit() {
    // Padding lands the raw event just under, at, or just over MAX_EVENT_BYTES; the verdict on
    // size must be exact, and an accepted event must still fit once re-serialised.
    let strategy = (valid_event(), 0usize..64, prop::bool::ANY);
    fuzz("size limit", 150, strategy, |(mut ev, slack, pad_in_extra)| {
        let field = if pad_in_extra { "future_field" } else { "name" };
        ev.as_object_mut().unwrap().insert(field.into(), json!(""));
        let base = serde_json::to_string(&ev).unwrap().len();
        let target = (MAX_EVENT_BYTES + 32).saturating_sub(slack);
        let pad = target.saturating_sub(base);
        ev[field] = json!("p".repeat(pad));
        let text = serde_json::to_string(&ev).unwrap();
        let verdict = validate_event_json(&text);
        if text.len() > MAX_EVENT_BYTES {
            prop_assert_eq!(verdict.map_err(|r| r.code), Err(protocol::RejectCode::EventTooLarge));
        } else if let Ok(event) = verdict {
            let again = serde_json::to_string(&event).unwrap();
            prop_assert!(
                again.len() <= MAX_EVENT_BYTES,
                "{} bytes in, {} bytes re-serialised",
                text.len(),
                again.len()
            );
            prop_assert!(validate_event_json(&again).is_ok_and(|e| same_event(&e, &event)));
        }
        Ok(())
    });
}

#[test]
fn gzip_decoding_never_panics_and_round_trips() {
    let strategy = (prop::collection::vec(any::<u8>(), 0..4096), mutation(), 0usize..8192);
    fuzz("gzip", 800, strategy, |(data, m, limit)| {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&data).unwrap();
        let zipped = enc.finish().unwrap();
        match decode_body(&zipped, true, limit) {
            Ok(out) => prop_assert_eq!(&out, &data),
            Err(e) => prop_assert!(data.len() > limit, "{} bytes under a {} limit refused: {}", data.len(), limit, e),
        }
        let damaged = apply(zipped, &m);
        if let Ok(out) = decode_body(&damaged, true, limit) {
            prop_assert!(out.len() <= limit);
        }
        let _ = decode_body(&data, false, limit);
        Ok(())
    });
}

#[test]
fn deep_and_wide_bodies_are_refused_without_panic() {
    // Nesting far past serde_json's recursion limit, in the envelope or in one event, and
    // bodies around the size cap.
    let shape = prop_oneof![
        (1usize..200_000).prop_map(|n| format!("{}{}", "[".repeat(n), "]".repeat(n)).into_bytes()),
        (1usize..50_000)
            .prop_map(|n| format!("{{\"batch\": [{}{}]}}", "{\"a\":".repeat(n), "}".repeat(n)).into_bytes()),
        (1usize..50_000).prop_map(|n| format!("{{\"batch\": [{}", "[".repeat(n)).into_bytes()),
        (MAX_BATCH_BYTES - 64..MAX_BATCH_BYTES + 64).prop_map(|n| {
            let mut b = b"{\"batch\": [{\"p\": \"".to_vec();
            b.resize(n, b'x');
            b
        }),
    ];
    fuzz("deep and wide", 100, shape, |body| check_batch(&body));
}
