//! The `context` object of an event: page (url, path, title, referrer, utm), device (screen,
//! locale, timezone) and library.
//!
//! Page fields are read for every event, since single-page apps change the URL without a load;
//! they are plain property reads. Device fields barely change during a page's life and one of
//! them (`Intl.DateTimeFormat`) is slow to make, so [`Statics`] reads them once, at `init`.

use js_sys::{Function, Object, Reflect};
use protocol::limits::MAX_CONTEXT_STRING_LEN;
use wasm_bindgen::prelude::*;
use web_sys::UrlSearchParams;

use crate::wire::truncate;
use crate::{LIBRARY_NAME, LIBRARY_VERSION};

/// The campaign parameters, as query parameter and as `context.utm` field.
const UTM: [(&str, &str); 5] = [
    ("utm_source", "source"),
    ("utm_medium", "medium"),
    ("utm_campaign", "campaign"),
    ("utm_term", "term"),
    ("utm_content", "content"),
];

/// `obj[key]`, or `undefined` when `obj` is not an object or the getter throws.
///
/// Plain property reads go through this one `Reflect.get` import rather than a typed web-sys
/// getter each: every web-sys method is one more JS glue function and wasm import, and a dozen
/// of them cost more bytes than the SDK's whole context logic.
pub fn get(obj: &JsValue, key: &str) -> JsValue {
    Reflect::get(obj, &JsValue::from_str(key)).unwrap_or(JsValue::UNDEFINED)
}

#[wasm_bindgen]
extern "C" {
    /// `globalThis` directly: `js_sys::global()` probes four names (`globalThis`, `self`,
    /// `window`, `global`) with an import each, for runtimes this page SDK never runs in.
    #[wasm_bindgen(thread_local_v2, js_name = globalThis)]
    static GLOBAL_THIS: JsValue;
}

/// Runs `f` with `globalThis` (the page's `window`).
pub fn with_global<R>(f: impl FnOnce(&JsValue) -> R) -> R {
    GLOBAL_THIS.with(f)
}

/// `globalThis[name]` (`location`, `document`, `navigator`, ...).
pub fn global(name: &str) -> JsValue {
    with_global(|g| get(g, name))
}

/// Calls `f` (when it is a function) with `this`; `undefined` when it is not or it throws.
fn call(f: &JsValue, this: &JsValue) -> JsValue {
    f.dyn_ref::<Function>().and_then(|f| f.call0(this).ok()).unwrap_or(JsValue::UNDEFINED)
}

/// Sets `obj[key] = value`. Setting a property on a fresh plain object cannot fail.
pub fn put(obj: &Object, key: &str, value: &JsValue) {
    let _ = Reflect::set(obj, &JsValue::from_str(key), value);
}

/// Sets a string field unless it is absent or empty, cut to the protocol's context limit (a
/// too-long string would get the whole event rejected).
fn put_str(obj: &Object, key: &str, value: Option<String>) {
    if let Some(mut value) = value.filter(|v| !v.is_empty()) {
        truncate(&mut value, MAX_CONTEXT_STRING_LEN);
        put(obj, key, &JsValue::from_str(&value));
    }
}

/// Device context read once.
#[derive(Debug, Clone, Default)]
pub struct Statics {
    screen: Option<(JsValue, JsValue)>,
    locale: Option<String>,
    timezone: Option<String>,
}

impl Statics {
    /// Reads screen size, `navigator.language` and the IANA timezone.
    pub fn collect() -> Statics {
        let screen = global("screen");
        let (width, height) = (get(&screen, "width"), get(&screen, "height"));
        let screen = (width.as_f64().is_some() && height.as_f64().is_some()).then_some((width, height));
        // `Intl.DateTimeFormat().resolvedOptions()` through `Reflect.get` and `Function.call`
        // (both imported anyway) rather than three typed bindings.
        let format = call(&get(&global("Intl"), "DateTimeFormat"), &JsValue::UNDEFINED);
        let options = call(&get(&format, "resolvedOptions"), &format);
        Statics {
            screen,
            locale: get(&global("navigator"), "language").as_string(),
            timezone: get(&options, "timeZone").as_string(),
        }
    }
}

/// Builds the `context` object for an event happening now; `referrer` replaces
/// `document.referrer` (SPA page views).
pub fn collect(statics: &Statics, referrer: Option<String>) -> Object {
    let ctx = Object::new();
    let location = global("location");
    put_str(&ctx, "url", get(&location, "href").as_string());
    put_str(&ctx, "path", get(&location, "pathname").as_string());
    if let Some(search) = get(&location, "search").as_string() {
        // Most pages have no campaign parameters: skip URLSearchParams for them.
        // (A byte scan, not `str::contains`: the substring searcher costs 2 KiB of wasm.)
        if search.as_bytes().windows(4).any(|w| w == b"utm_") {
            put_utm(&ctx, &search);
        }
    }
    let document = global("document");
    put_str(&ctx, "title", get(&document, "title").as_string());
    put_str(&ctx, "referrer", referrer.or_else(|| get(&document, "referrer").as_string()));
    if let Some((width, height)) = &statics.screen {
        let screen = Object::new();
        put(&screen, "width", width);
        put(&screen, "height", height);
        put(&ctx, "screen", &screen);
    }
    put_str(&ctx, "locale", statics.locale.clone());
    put_str(&ctx, "timezone", statics.timezone.clone());
    let library = Object::new();
    put(&library, "name", &JsValue::from_str(LIBRARY_NAME));
    put(&library, "version", &JsValue::from_str(LIBRARY_VERSION));
    put(&ctx, "library", &library);
    ctx
}

fn put_utm(ctx: &Object, search: &str) {
    let Ok(params) = UrlSearchParams::new_with_str(search) else { return };
    let utm = Object::new();
    let mut any = false;
    for (param, field) in UTM {
        let value = params.get(param);
        any |= value.as_deref().is_some_and(|v| !v.is_empty());
        put_str(&utm, field, value);
    }
    if any {
        put(ctx, "utm", &utm);
    }
}
