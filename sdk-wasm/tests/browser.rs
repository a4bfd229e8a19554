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
use nexus_sdk::web::{api, context, platform};
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

#[wasm_bindgen_test]
fn context_fields_are_collected() {
    let window: JsValue = web_sys::window().unwrap().into();
    let history = get(&window, "history");
    let replace: Function = get(&history, "replaceState").dyn_into().unwrap();
    let original = get_str(&window, "location.href").unwrap();
    replace
        .call3(&history, &JsValue::NULL, &"".into(), &"/ctx/path?utm_source=news&utm_medium=email&x=1".into())
        .unwrap();
    let document = get(&window, "document");
    let original_title = get(&document, "title");
    Reflect::set(&document, &"title".into(), &"Nexus context test".into()).unwrap();

    let ctx: JsValue = context::collect(&context::Statics::collect(), None).into();

    let url = get_str(&ctx, "url").unwrap();
    assert!(url.ends_with("/ctx/path?utm_source=news&utm_medium=email&x=1"), "{url}");
    assert!(url.starts_with("http"), "{url}");
    assert_eq!(get_str(&ctx, "path").as_deref(), Some("/ctx/path"));
    assert_eq!(get_str(&ctx, "title").as_deref(), Some("Nexus context test"));
    assert_eq!(get_str(&ctx, "utm.source").as_deref(), Some("news"));
    assert_eq!(get_str(&ctx, "utm.medium").as_deref(), Some("email"));
    assert!(get(&ctx, "utm.campaign").is_undefined(), "absent parameters are left out");
    assert!(get(&ctx, "screen.width").as_f64().unwrap() > 0.0);
    assert!(get(&ctx, "screen.height").as_f64().unwrap() > 0.0);
    assert!(!get_str(&ctx, "locale").unwrap().is_empty());
    assert!(get_str(&ctx, "timezone").unwrap().contains(|c: char| c.is_ascii_alphabetic()));
    assert_eq!(get_str(&ctx, "library.name").as_deref(), Some("nexus-js"));
    assert_eq!(get_str(&ctx, "library.version").as_deref(), Some(env!("CARGO_PKG_VERSION")));
    // The referrer of the test page is empty: an empty field is left out, not sent as "".
    assert!(get(&ctx, "referrer").is_undefined() || !get_str(&ctx, "referrer").unwrap().is_empty());

    // A title longer than the protocol allows is cut, not sent (the edge would reject the event).
    let long = "é".repeat(5000); // 10 000 bytes
    Reflect::set(&document, &"title".into(), &long.as_str().into()).unwrap();
    let ctx: JsValue = context::collect(&context::Statics::collect(), None).into();
    let title = get_str(&ctx, "title").unwrap();
    assert_eq!(title.len(), protocol_limit());
    assert!(title.chars().all(|c| c == 'é'));
    // No campaign parameters: no `utm` object at all.
    replace.call3(&history, &JsValue::NULL, &"".into(), &original.into()).unwrap();
    // An SPA page view's referrer (the previous SPA URL) replaces `document.referrer`.
    let ctx: JsValue = context::collect(&context::Statics::collect(), Some("https://a.test/prev".into())).into();
    assert!(get(&ctx, "utm").is_undefined());
    assert_eq!(get_str(&ctx, "referrer").as_deref(), Some("https://a.test/prev"));
    Reflect::set(&document, &"title".into(), &original_title).unwrap();
}

/// 8 KiB rounded down to a whole number of two-byte `é`.
fn protocol_limit() -> usize {
    8 * 1024
}

/// Replaces `fetch` with a recorder that answers 200 and keeps `[url, init]` pairs.
fn record_fetches() -> Array {
    let calls = Array::new();
    Reflect::set(&js_sys::global(), &"__nexusCalls".into(), &calls).unwrap();
    let fake = Function::new_with_args(
        "url, init",
        "globalThis.__nexusCalls.push([url, init]); \
         return Promise.resolve(new Response('{\"accepted\":3,\"rejected\":[]}', {status: 200}));",
    );
    Reflect::set(&js_sys::global(), &"fetch".into(), &fake).unwrap();
    calls
}

/// What the npm loader does around the wasm `flush(done)`.
async fn flush() {
    let promise = Promise::new(&mut |resolve, _| api::flush(resolve.into()).unwrap());
    JsFuture::from(promise).await.unwrap();
}

fn error_message(e: js_sys::Error) -> String {
    assert!(e.is_instance_of::<js_sys::Error>());
    e.message().into()
}

#[wasm_bindgen_test]
async fn events_go_out_through_the_exports() {
    // Before init: a real Error, nothing queued.
    let err = api::track("x".into(), JsValue::UNDEFINED, None, JsValue::UNDEFINED).unwrap_err();
    assert!(error_message(err).contains("init()"));
    // Bad options are refused, and refusing does not count as initialised.
    assert!(api::init(JsValue::UNDEFINED, None, JsValue::UNDEFINED).is_err());
    let bad = JSON::parse(r#"{"key":"wk_test","flushAt":0}"#).unwrap();
    assert!(error_message(api::init(bad, None, JsValue::UNDEFINED).unwrap_err()).contains("flushAt"));
    assert!(api::init(JSON::parse(r#"{"endpoint":"https://c.test"}"#).unwrap(), None, JsValue::UNDEFINED).is_err());

    // Nothing left over from an earlier run: the first flush below sends exactly 3 events.
    local_storage().remove_item(QUEUE_KEY).unwrap();
    let calls = record_fetches();
    let options = JSON::parse(
        r#"{"key":"wk test/1","endpoint":"https://collector.test/","flushAt":100,"flushIntervalMs":600000}"#,
    )
    .unwrap();
    // The loader's persist task: `tick(3)` on a microtask.
    let persist = Closure::<dyn FnMut()>::new(|| assert!(api::tick(3).unwrap(), "granted: may store")).into_js_value();
    api::init(options.clone(), None, persist.clone()).unwrap();
    api::init(options, None, persist).unwrap(); // a second call is ignored

    // Argument errors are Errors with a `nexus:` message.
    assert!(error_message(api::track("".into(), JsValue::UNDEFINED, None, JsValue::UNDEFINED).unwrap_err())
        .starts_with("nexus:"));
    assert!(api::track("x".into(), JSON::parse("[1]").unwrap(), None, JsValue::UNDEFINED).is_err());
    assert!(api::track("x".into(), "props".into(), None, JsValue::UNDEFINED).is_err());
    assert!(api::identify(JsValue::UNDEFINED, JsValue::UNDEFINED, None).is_err());

    let t0 = now();
    api::track("signup_clicked".into(), JSON::parse(r#"{"plan":"pro","n":3}"#).unwrap(), None, JsValue::UNDEFINED)
        .unwrap();
    api::identify("user-42".into(), JSON::parse(r#"{"email":"a@example.com"}"#).unwrap(), None).unwrap();
    api::page(JsValue::UNDEFINED, Some(t0 as f64 - 5000.0), JsValue::UNDEFINED).unwrap();
    assert_eq!(calls.length(), 0, "nothing is sent before flushAt or flush()");
    // The queue is written once for the task's three events, on a microtask, not per event.
    assert_eq!(local_storage().get_item(QUEUE_KEY).unwrap(), None, "not yet written");
    JsFuture::from(Promise::resolve(&JsValue::UNDEFINED)).await.unwrap();
    let stored = local_storage().get_item(QUEUE_KEY).unwrap().unwrap();
    assert_eq!(stored.split('\n').count(), 3, "stored after the task: {stored}");
    flush().await;
    assert_eq!(local_storage().get_item(QUEUE_KEY).unwrap().as_deref(), Some(""), "acknowledged: forgotten");

    assert_eq!(calls.length(), 1);
    let call = calls.get(0);
    let url = get(&call, "0").as_string().unwrap();
    assert_eq!(url, "https://collector.test/v1/batch?key=wk%20test%2F1");
    let init = get(&call, "1");
    assert_eq!(get_str(&init, "method").as_deref(), Some("POST"));
    assert_eq!(get_str(&init, "credentials").as_deref(), Some("omit"));
    assert_eq!(get(&init, "keepalive").as_bool(), Some(true));
    assert!(get(&init, "headers").is_undefined(), "no custom header: a CORS-simple request");
    let body = JSON::parse(&get_str(&init, "body").unwrap()).unwrap();
    assert!(get_str(&body, "sent_at").unwrap().ends_with('Z'));
    let batch: Array = get(&body, "batch").dyn_into().unwrap();
    assert_eq!(batch.length(), 3);
    let (track, identify, page) = (batch.get(0), batch.get(1), batch.get(2));

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
        assert_eq!(get_str(event, "context.library.name").as_deref(), Some("nexus-js"));
        let ts = get_str(event, "timestamp").unwrap();
        assert_eq!(ts.len(), 24, "{ts}");
        assert!(ts.ends_with('Z'), "{ts}");
    }
    // `at` keeps the time a queued call was made: the page view is 5 s older.
    let ts = Date::parse(&get_str(&page, "timestamp").unwrap()) as u64;
    assert_eq!(ts, t0 - 5000);
    assert_eq!(ids[2], t0 - 5000, "the id's time is the event's time");

    // Nothing left: a second flush sends nothing.
    flush().await;
    assert_eq!(calls.length(), 1);
}
