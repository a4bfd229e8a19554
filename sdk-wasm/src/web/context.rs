//! Property access on JS objects and globals, in as few imports as possible.
//!
//! The `context` object of an event (page, campaign, device, library) is built by the loader
//! (npm/src/index.js), where it is a few lines of JavaScript: here each field was a `Reflect`
//! call, a string copied across, and bytes of wasm that every app downloads.

use js_sys::{Object, Reflect};
use wasm_bindgen::prelude::*;

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

/// Sets `obj[key] = value`. Setting a property on a fresh plain object cannot fail.
pub fn put(obj: &Object, key: &str, value: &JsValue) {
    let _ = Reflect::set(obj, &JsValue::from_str(key), value);
}
