//! The web-sys half in a real (headless Chromium) page: storage, ids, page context, and one
//! event end to end through the exported functions with `fetch` replaced by a recorder.
//!
//! Run with `cargo test -p nexus-sdk --target wasm32-unknown-unknown` (the runner is set in
//! .cargo/config.toml; Chrome flags are in sdk-wasm/webdriver.json).
#![cfg(target_arch = "wasm32")]
#![allow(clippy::unwrap_used)] // tests fail loudly

use js_sys::{Array, Date, Function, Promise, Reflect, JSON};
use nexus_sdk::identity::{Identity, Storage, ANON_KEY, SESSION_KEY, SESSION_TIMEOUT_MS};
use nexus_sdk::queue::QUEUE_KEY;
use nexus_sdk::web::{api, platform};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

fn get(obj: &JsValue, path: &str) -> JsValue {
    path.split('.').fold(obj.clone(), |o, key| Reflect::get(&o, &key.into()).unwrap_or(JsValue::UNDEFINED))
}

fn get_str(obj: &JsValue, path: &str) -> Option<String> {
    get(obj, path).as_string()
}

fn local_storage() -> web_sys::Storage {
    web_sys::window().unwrap().local_storage().unwrap().unwrap()
}

fn now() -> u64 {
    Date::now() as u64
}

/// Checks the text layout and version/variant bits of a UUID v7; returns its millisecond time.
fn check_uuid_v7(id: &str) -> u64 {
    assert_eq!(id.len(), 36, "{id}");
    for (i, c) in id.chars().enumerate() {
        if matches!(i, 8 | 13 | 18 | 23) {
            assert_eq!(c, '-', "{id}");
        } else {
            assert!(c.is_ascii_digit() || ('a'..='f').contains(&c), "{id}");
        }
    }
    assert_eq!(&id[14..15], "7", "version nibble of {id}");
    assert!(matches!(&id[19..20], "8" | "9" | "a" | "b"), "variant bits of {id}");
    let hex: String = id[..13].chars().filter(|&c| c != '-').collect();
    u64::from_str_radix(&hex, 16).unwrap()
}

#[wasm_bindgen_test]
fn anonymous_id_is_persisted_in_local_storage() {
    local_storage().remove_item(ANON_KEY).unwrap();
    let storage = platform::LocalStore::open();
    let first = Identity::new().anonymous_id(&storage, || platform::new_id(now()));
    check_uuid_v7(&first);
    assert_eq!(local_storage().get_item(ANON_KEY).unwrap().as_deref(), Some(first.as_str()));
    // The next page load (a new Identity over the same storage) finds it and makes none.
    let again = Identity::new().anonymous_id(&platform::LocalStore::open(), || unreachable!());
    assert_eq!(again, first);
}

#[wasm_bindgen_test]
fn session_rotates_after_thirty_minutes_of_inactivity() {
    let storage = platform::LocalStore::open();
    let t = now();
    let stale = format!("old-session|{}", t - SESSION_TIMEOUT_MS - 1);
    storage.set(SESSION_KEY, &stale);
    let id = Identity::new().session_id(&storage, t, || "fresh".to_owned());
    assert_eq!(id, "fresh");
    assert_eq!(local_storage().get_item(SESSION_KEY).unwrap(), Some(format!("fresh|{t}")));
    // Activity within the window keeps it.
    let id = Identity::new().session_id(&storage, t + 60_000, || "other".to_owned());
    assert_eq!(id, "fresh");
}

#[wasm_bindgen_test]
fn uuid_v7_format_version_bits_and_time() {
    let before = now();
    let ids: Vec<String> = (0..200).map(|_| platform::new_id(now())).collect();
    let after = now();
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), ids.len(), "ids must be unique");
    for id in &ids {
        let ms = check_uuid_v7(id);
        assert!((before..=after).contains(&ms), "{id}: time {ms} not in {before}..={after}");
    }
}

/// The loader's transport (`send(body, n)`) replaced by a recorder of `[body, n]` pairs that
/// takes every beacon; fetch outcomes are reported by the test with `api::answer`.
fn record_sends() -> (Array, Function) {
    let sent = Array::new();
    Reflect::set(&js_sys::global(), &"__nexusSent".into(), &sent).unwrap();
    let send = Function::new_with_args("body, n", "globalThis.__nexusSent.push([body, n]); return true;");
    (sent, send)
}

/// What the npm loader does around the wasm `flush(done)`: a Promise settled by `done`.
fn start_flush() -> JsFuture {
    JsFuture::from(Promise::new(&mut |resolve, _| api::flush(resolve.into()).unwrap()))
}

fn error_message(e: js_sys::Error) -> String {
    assert!(e.is_instance_of::<js_sys::Error>());
    e.message().into()
}

/// One loader call queue entry: `[kind, at, a, b, c, ctx]`, with a context as the loader makes
/// it (trimmed).
fn entry(kind: u32, at: Option<f64>, a: &JsValue, b: &JsValue) -> JsValue {
    let at = at.map_or(JsValue::UNDEFINED, JsValue::from);
    let ctx = JSON::parse(r#"{"path":"/t","library":{"name":"nexus-js"}}"#).unwrap();
    let entry = Array::of5(&kind.into(), &at, a, b, &JsValue::UNDEFINED);
    entry.push(&ctx);
    entry.into()
}

#[wasm_bindgen_test]
async fn events_go_out_through_the_exports() {
    let (sent, send) = record_sends();
    // Before init: a real Error, returned for the loader to log, nothing queued.
    let errors = api::run(Array::of1(&entry(0, None, &"x".into(), &JsValue::UNDEFINED)));
    assert_eq!(errors.length(), 1);
    assert!(error_message(errors.get(0).into()).contains("init()"));
    // Bad options are refused, and refusing does not count as initialised.
    assert!(api::init(JsValue::UNDEFINED, None, send.clone()).is_err());
    let bad = JSON::parse(r#"{"key":"wk_test","flushAt":0}"#).unwrap();
    assert!(error_message(api::init(bad, None, send.clone()).unwrap_err()).contains("flushAt"));
    assert!(api::init(JSON::parse(r#"{"endpoint":"https://c.test"}"#).unwrap(), None, send.clone()).is_err());

    // Nothing left over from an earlier run: the first flush below sends exactly 4 events.
    let chunk = format!("{QUEUE_KEY}.0"); // without a tab id, the queue's first chunk
    local_storage().remove_item(&chunk).unwrap();
    let options = JSON::parse(r#"{"key":"wk_test","flushAt":100,"flushIntervalMs":600000}"#).unwrap();
    api::init(options.clone(), None, send.clone()).unwrap();
    api::init(options, None, send).unwrap(); // a second call is ignored

    let t0 = now();
    let calls = Array::of3(
        &entry(0, None, &"signup_clicked".into(), &JSON::parse(r#"{"plan":"pro","n":3}"#).unwrap()),
        &entry(2, None, &"user-42".into(), &JSON::parse(r#"{"email":"a@example.com"}"#).unwrap()),
        &entry(1, Some(t0 as f64 - 5000.0), &JsValue::UNDEFINED, &JsValue::UNDEFINED),
    );
    assert_eq!(api::run(calls).length(), 0, "no errors");
    assert_eq!(sent.length(), 0, "nothing is sent before flushAt or flush()");
    // The queue is written once for the run's three events, at its end.
    let stored = local_storage().get_item(&chunk).unwrap().unwrap();
    assert_eq!(stored.split('\n').count(), 3, "stored after the run: {stored}");

    // What JSON.stringify refuses is an Error of that call alone, returned for the loader to log.
    let cyclic = Function::new_no_args("const o = {}; o.self = o; return o;").call0(&JsValue::NULL).unwrap();
    let errors = api::run(Array::of2(
        &entry(0, None, &"bad".into(), &cyclic),
        &entry(0, None, &"fine".into(), &JsValue::UNDEFINED),
    ));
    assert_eq!(errors.length(), 1);
    assert!(error_message(errors.get(0).into()).starts_with("nexus:"));

    let flushed = start_flush();
    assert_eq!(sent.length(), 1, "one request for the four events");
    assert_eq!(get(&sent.get(0), "1").as_f64(), Some(1.0), "request number 1, a fetch");
    api::answer(1, 200, 0).unwrap();
    flushed.await.unwrap();
    assert_eq!(local_storage().get_item(&chunk).unwrap(), None, "acknowledged: forgotten");

    // The body comes as UTF-8 bytes.
    let decode = Function::new_with_args("bytes", "return new TextDecoder().decode(bytes)");
    let body = decode.call1(&JsValue::NULL, &get(&sent.get(0), "0")).unwrap();
    let body = JSON::parse(&body.as_string().unwrap()).unwrap();
    assert!(get_str(&body, "sent_at").unwrap().ends_with('Z'));
    let batch: Array = get(&body, "batch").dyn_into().unwrap();
    assert_eq!(batch.length(), 4);
    let (track, identify, page) = (batch.get(0), batch.get(1), batch.get(2));
    assert_eq!(get_str(&batch.get(3), "name").as_deref(), Some("fine"));

    assert_eq!(get_str(&track, "type").as_deref(), Some("track"));
    assert_eq!(get_str(&track, "name").as_deref(), Some("signup_clicked"));
    assert_eq!(get_str(&track, "properties.plan").as_deref(), Some("pro"));
    assert!(get(&track, "user_id").is_undefined(), "not identified yet");
    assert_eq!(get_str(&identify, "type").as_deref(), Some("identify"));
    assert_eq!(get_str(&identify, "user_id").as_deref(), Some("user-42"));
    assert_eq!(get_str(&identify, "set.email").as_deref(), Some("a@example.com"));
    assert!(get(&identify, "name").is_undefined(), "the server names it $identify");
    assert_eq!(get_str(&page, "type").as_deref(), Some("page"));
    assert!(get(&page, "name").is_undefined(), "the server names it $pageview");
    assert_eq!(get_str(&page, "user_id").as_deref(), Some("user-42"), "identify sticks");

    let anon = local_storage().get_item(ANON_KEY).unwrap().unwrap();
    let mut ids = Vec::new();
    for event in [&track, &identify, &page] {
        ids.push(check_uuid_v7(&get_str(event, "id").unwrap()));
        assert_eq!(get_str(event, "anonymous_id").as_deref(), Some(anon.as_str()));
        assert_eq!(get_str(event, "session_id"), get_str(&track, "session_id"));
        assert_eq!(get_str(event, "context.path").as_deref(), Some("/t"), "the loader's context");
        assert_eq!(get_str(event, "context.library.name").as_deref(), Some("nexus-js"));
        let ts = get_str(event, "timestamp").unwrap();
        assert_eq!(ts.len(), 24, "{ts}");
        assert!(ts.ends_with('Z'), "{ts}");
    }
    // `at` is the time the call was made: the page view is 5 s older.
    let ts = Date::parse(&get_str(&page, "timestamp").unwrap()) as u64;
    assert_eq!(ts, t0 - 5000);
    assert_eq!(ids[2], t0 - 5000, "the id's time is the event's time");

    // Nothing left: a second flush sends nothing.
    start_flush().await.unwrap();
    assert_eq!(sent.length(), 1);
    // A beacon (`n` 0) is handed over at once and needs no answer.
    api::run(Array::of1(&entry(0, None, &"last".into(), &JsValue::UNDEFINED)));
    api::tick(2).unwrap();
    assert_eq!(sent.length(), 2);
    assert_eq!(get(&sent.get(1), "1").as_f64(), Some(0.0));
}
