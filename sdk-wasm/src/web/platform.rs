//! web-sys implementations of the pure traits: the transport (handing bodies to the loader,
//! which fetches or beacons them), `Date.now` clock (with `crypto.getRandomValues` for jitter),
//! `localStorage` storage, and ids.

use std::cell::{Cell, RefCell};

use js_sys::{Date, Function, Uint8Array};
use wasm_bindgen::prelude::*;
use web_sys::Crypto;

use super::context::global;
use crate::identity::Storage;
use crate::queue::{Clock, Outcome, Transport};
use crate::wire::uuid_v7;

/// What to do with a request's outcome.
type Done = Box<dyn FnOnce(Outcome)>;

/// The transport: the loader's `send(body, n)` function (npm/src/index.js) does the I/O.
///
/// `n > 0` asks for a `fetch` whose outcome the loader reports back with [`super::api::answer`]
/// (request `n`); `n == 0` asks for a `sendBeacon` and returns whether the browser took it. The
/// loader holds the URL (`<endpoint>/v1/batch?key=<write key>`), compresses fetch bodies with
/// the browser's `CompressionStream` and logs bodies with `debug`: in JavaScript those are a
/// few lines, where each web-sys binding, closure and promise callback would cost wasm and
/// glue that every app downloads. Which events go in a body, and what an outcome means (retry,
/// backoff, drop), is decided here, in the queue.
pub struct Fetch {
    send: Function,
    /// Requests in flight: their number and what to do with the outcome.
    waiting: RefCell<Vec<(u32, Done)>>,
    next: Cell<u32>,
}

impl Fetch {
    /// A transport calling the loader's `send`.
    pub fn new(send: Function) -> Fetch {
        Fetch { send, waiting: RefCell::new(Vec::new()), next: Cell::new(1) }
    }

    /// `send(body, n)`, the body as UTF-8 bytes (a `Uint8Array`: one copy out of wasm memory,
    /// where a string would be decoded here and encoded again by the browser); `Err` when the
    /// loader threw.
    fn call(&self, body: &str, n: u32) -> Result<JsValue, JsValue> {
        self.send.call2(&JsValue::UNDEFINED, &Uint8Array::from(body.as_bytes()), &JsValue::from(n))
    }

    /// Hands the outcome of request `n` to the queue; an unknown `n` (answered twice) is ignored.
    pub fn answer(&self, n: u32, outcome: Outcome) {
        let done = {
            let mut waiting = self.waiting.borrow_mut();
            let at = waiting.iter().position(|(m, _)| *m == n);
            at.map(|at| waiting.swap_remove(at).1)
        }; // released before `done`, which may start the next request
        if let Some(done) = done {
            done(outcome);
        }
    }
}

impl Transport for Fetch {
    fn post(&self, body: &str, done: Box<dyn FnOnce(Outcome)>) {
        let n = self.next.get();
        self.next.set(n.wrapping_add(1).max(1));
        self.waiting.borrow_mut().push((n, done));
        // A loader that throws has not sent it: then it is a network failure, retried later.
        if self.call(body, n).is_err() {
            self.answer(n, Outcome::Network);
        }
    }

    fn beacon(&self, body: &str) -> bool {
        self.call(body, 0).is_ok_and(|taken| taken.is_truthy())
    }
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

thread_local! {
    /// Random bytes drawn ahead, and how many of them are used. One `getRandomValues` call
    /// costs about 2.5 µs in Chromium, whatever its size: one per event id was the largest
    /// single cost of building an event.
    static POOL: RefCell<([u8; 256], usize)> = const { RefCell::new(([0; 256], 256)) };
}

/// Fills `out` (at most 256 bytes) from `crypto.getRandomValues`, through [`POOL`] (left zero
/// in the impossible case it is missing).
fn random_bytes(out: &mut [u8]) {
    POOL.with(|pool| {
        let (bytes, used) = &mut *pool.borrow_mut();
        if *used + out.len() > bytes.len() {
            let crypto = global("crypto");
            if crypto.is_object() {
                let _ = crypto.unchecked_into::<Crypto>().get_random_values_with_u8_array(bytes);
            }
            *used = 0;
        }
        // A zip, not `copy_from_slice`, whose length check formats a panic message.
        for (byte, fresh) in out.iter_mut().zip(bytes.iter().skip(*used)) {
            *byte = *fresh;
        }
        *used += out.len();
    });
}
