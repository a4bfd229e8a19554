//! web-sys implementations of the pure traits: `fetch`/`sendBeacon` transport, `Date.now`
//! clock (with `crypto.getRandomValues` for jitter), `localStorage` storage, and ids.

use std::cell::Cell;

use js_sys::{Date, Function, Object};
use protocol::retry::should_retry;
use wasm_bindgen::prelude::*;
use web_sys::{Crypto, Navigator, Window};

use super::context::{get, global, put, with_global};
use crate::identity::Storage;
use crate::queue::{Clock, Outcome, Transport, BEACON_MAX_BYTES, MAX_BACKOFF_MS};
use crate::wire::{parse_u64, uuid_v7};

#[wasm_bindgen]
extern "C" {
    /// A promise seen only through `then`.
    type Thenable;
    /// `promise.then(f, f)`: one callback for both outcomes, so one closure per request
    /// (js-sys's `then2` wants two `Closure`s that would have to be kept and freed by hand).
    #[wasm_bindgen(method, js_name = then)]
    fn then_both(this: &Thenable, on_fulfilled: &JsValue, on_rejected: &JsValue) -> JsValue;
}

/// Sends batches to `<endpoint>/v1/batch?key=<write key>`.
///
/// The body is a plain string, which fetch and `sendBeacon` both send as
/// `text/plain;charset=UTF-8`: with no custom header, the request is CORS-simple and costs no
/// preflight, and the key travels in the URL because a beacon cannot carry headers.
#[derive(Debug)]
pub struct Fetch {
    url: String,
    /// Logs every body sent to the console (init `debug`).
    debug: bool,
}

impl Fetch {
    /// A transport posting to `url` (already carrying the key).
    pub fn new(url: String, debug: bool) -> Fetch {
        Fetch { url, debug }
    }

    fn show(&self, how: &str, body: &str) {
        if self.debug {
            log(how, &JsValue::from_str(body));
        }
    }

    /// The batch URL, key included.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Transport for Fetch {
    fn post(&self, body: &str, done: Box<dyn FnOnce(Outcome)>) {
        self.show("send", body);
        // The init dictionary as a plain object: one `Reflect.set` import instead of a typed
        // setter (and JS glue function) per field.
        let init = Object::new();
        put(&init, "method", &JsValue::from_str("POST"));
        put(&init, "body", &JsValue::from_str(body));
        // No cookies: the write key authenticates, and `omit` lets the collector answer with
        // `Access-Control-Allow-Origin: *`.
        put(&init, "credentials", &JsValue::from_str("omit"));
        // keepalive lets a request started just before the page unloads finish; browsers refuse
        // keepalive bodies past 64 KiB, so large batches go without it.
        if body.len() <= BEACON_MAX_BYTES {
            put(&init, "keepalive", &JsValue::TRUE);
        }
        // `globalThis` is the Window in a page; unchecked because `instanceof Window` costs an
        // import and the SDK only runs in pages.
        let request =
            with_global(|g| g.unchecked_ref::<Window>().fetch_with_str_and_init(&self.url, init.unchecked_ref()));
        // Fulfilled: a Response with its status. Rejected: a TypeError without one, meaning no
        // HTTP answer arrived (offline, CORS, abort). `once_into_js` frees the closure after
        // its one call, so nothing leaks per request.
        let on_answer = Closure::once_into_js(move |answer: JsValue| {
            done(match get(&answer, "status").as_f64() {
                Some(status) if status >= 100.0 => match retry_after(&answer) {
                    Some(ms) if should_retry(status as u16) => Outcome::Later(ms),
                    _ => Outcome::Status(status as u16),
                },
                _ => Outcome::Network,
            })
        });
        request.unchecked_ref::<Thenable>().then_both(&on_answer, &on_answer);
    }

    fn beacon(&self, body: &str) -> bool {
        self.show("beacon", body);
        let navigator = global("navigator");
        navigator.is_object()
            && navigator.unchecked_into::<Navigator>().send_beacon_with_opt_str(&self.url, Some(body)).unwrap_or(false)
    }
}

/// `Retry-After` in seconds (the collector's form), as milliseconds (`Headers.get` has trimmed
/// it already). The HTTP-date form is
/// ignored: the backoff applies then. Readable cross-origin because the collector lists it in
/// `Access-Control-Expose-Headers`.
fn retry_after(response: &JsValue) -> Option<u64> {
    let headers = get(response, "headers");
    let value = get(&headers, "get").dyn_ref::<Function>()?.call1(&headers, &"retry-after".into()).ok()?;
    Some(parse_u64(value.as_string()?.as_bytes())?.min(MAX_BACKOFF_MS / 1000) * 1000)
}

/// `Date.now()`, and `crypto.getRandomValues` for retry jitter.
#[derive(Debug, Clone, Copy)]
pub struct DateClock;

impl Clock for DateClock {
    fn now_ms(&self) -> u64 {
        Date::now() as u64
    }

    fn random(&self) -> u32 {
        let mut bytes = [0u8; 4];
        random_bytes(&mut bytes);
        u32::from_le_bytes(bytes)
    }
}

/// `window.localStorage`, or nothing when the browser refuses it (then ids live in memory only).
///
/// `writes` is off while consent is pending or denied: then every value lives in memory only,
/// and nothing reaches the disk.
#[derive(Debug)]
pub struct LocalStore {
    inner: Option<web_sys::Storage>,
    /// Whether `set` writes (see above).
    pub writes: Cell<bool>,
}

impl LocalStore {
    /// Opens `localStorage`; never fails (reading the property itself can throw a SecurityError).
    pub fn open() -> LocalStore {
        let storage = global("localStorage");
        LocalStore { inner: storage.is_object().then(|| storage.unchecked_into()), writes: Cell::new(true) }
    }

    /// True when `set` writes to `localStorage` (there is one, and writes are on).
    pub fn stores(&self) -> bool {
        self.inner.is_some() && self.writes.get()
    }

    /// A storage that keeps nothing (cookieless mode): every value lives in memory only.
    pub fn memory() -> LocalStore {
        LocalStore { inner: None, writes: Cell::new(false) }
    }
}

impl Storage for LocalStore {
    fn get(&self, key: &str) -> Option<String> {
        self.inner.as_ref()?.get_item(key).ok().flatten()
    }

    fn set(&self, key: &str, value: &str) {
        if let Some(storage) = self.inner.as_ref().filter(|_| self.writes.get()) {
            // A full quota or disabled storage must not break tracking: the value stays in memory.
            let _ = storage.set_item(key, value);
        }
    }

    fn remove(&self, key: &str) {
        if let Some(storage) = &self.inner {
            let _ = storage.remove_item(key);
        }
    }
}

/// A new UUID v7 for the time `unix_ms`, its random part from `crypto.getRandomValues`.
///
/// No `Math.random` fallback: every browser that runs wasm has `getRandomValues`, also on
/// plain http (only `randomUUID` and `subtle` need a secure context).
pub fn new_id(unix_ms: u64) -> String {
    let mut random = [0u8; 10];
    random_bytes(&mut random);
    uuid_v7(unix_ms, &random)
}

/// Fills `out` from `crypto.getRandomValues` (left zero in the impossible case it is missing).
fn random_bytes(out: &mut [u8]) {
    let crypto = global("crypto");
    if crypto.is_object() {
        let _ = crypto.unchecked_into::<Crypto>().get_random_values_with_u8_array(out);
    }
}

/// `console.log("nexus:", what, value)`, used only with `debug: true`.
pub fn log(what: &str, value: &JsValue) {
    web_sys::console::log_3(&JsValue::from_str("nexus:"), &JsValue::from_str(what), value);
}
