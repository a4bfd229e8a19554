//! The functions exported to JavaScript: `init`, `run` (the recording calls of one task:
//! `track`, `page`, `identify`, in call order), `flush`, `optIn`, `optOut`, `reset`, `tick` (the
//! page's moments, told by the loader), `answer` (the loader's transport reporting a request's
//! outcome) and `adopt` (the loader's hand-over of a closed tab's queue). `alias`, `group` and
//! the super properties are the loader's, on top of these (see npm/src/index.js): every export
//! costs wasm that every app downloads, while loader code an app does not call is dropped by
//! its bundler.
//!
//! The loader checks the arguments of `track`, `page` and `identify` when they are called (a
//! real JS `Error` thrown to the caller) and hands the calls of a task here in one `run`, after
//! the caller's code is done: what can only fail here (`beforeSend` throwing, properties that
//! `JSON.stringify` refuses) comes back from `run` as `Error`s, which the loader logs. Delivery
//! problems never throw: they are outcomes of the queue.
//!
//! Events are built as JS objects and serialised by the browser's own `JSON.stringify`: user
//! properties are JS values already, and serde would cost more than the rest of the SDK.
//!
//! These exports are the npm loader's back end, not the public API: `flush` takes a callback
//! and the loader (npm/src/index.js) turns it into the Promise users see, which keeps a Rust
//! future executor out of the wasm.

use std::cell::{Cell, OnceCell, RefCell};
use std::rc::Rc;

use js_sys::{Array, Error, Function, Object, Reflect, JSON};
use protocol::limits::{MAX_EVENTS_PER_BATCH, MAX_EVENT_BYTES};
use protocol::retry::should_retry;
use protocol::EventType;
use wasm_bindgen::prelude::*;

use super::context::{get, global, put};
use super::platform::{new_id, DateClock, Fetch, LocalStore};
use crate::consent::{Consent, CONSENT_KEY, GRANTED};
use crate::identity::{Identity, Storage};
use crate::queue::{Clock, Config, Outcome, Queue, Sender, QUEUE_KEY};
use crate::wire::{rfc3339_ms, sampled};

type WebSender = Sender<Fetch, DateClock, LocalStore>;

/// Messages are short on purpose: each byte ships in the wasm. The npm types document the rules.
/// One message for every mistake in the required options, one for the numbers.
const INIT_ERROR: &str = "nexus: init() needs { key: string, endpoint?: string }";
const FLUSH_ERROR: &str = "nexus: bad flushAt or flushIntervalMs";

/// `localStorage` key of the super properties the loader's `register` stores (removed here too,
/// when consent is withdrawn at init by a privacy signal).
pub const PROPS_KEY: &str = "nexus_props";

/// JS strings made once: copying a string out of wasm decodes it (about 0.3 µs in Chromium), and
/// every event has a dozen property names and as many values that rarely change (type, ids).
#[derive(Default)]
struct Strings(RefCell<Vec<(String, JsValue)>>);

impl Strings {
    /// `s` as a JS string, from the cache when it is there. At most 32 are kept: property names
    /// and the ids of a page's life fit, and a page that identifies many users gets no leak.
    fn get(&self, s: &str) -> JsValue {
        let mut cache = self.0.borrow_mut();
        if let Some((_, value)) = cache.iter().find(|(k, _)| k == s) {
            return value.clone();
        }
        let value = JsValue::from_str(s);
        if cache.len() < 32 {
            cache.push((s.to_owned(), value.clone()));
        }
        value
    }
}

/// Everything `init` sets up.
struct Sdk {
    sender: Rc<WebSender>,
    identity: RefCell<Identity>,
    consent: Cell<Consent>,
    /// No persistent identifiers: nothing stored, no anonymous id sent (init `cookieless`).
    cookieless: bool,
    /// Share of persons recorded, decided by their anonymous id (init `sampleRate`).
    sample_rate: f64,
    /// The page's hook that may edit or drop each event (init `beforeSend`).
    before_send: Option<Function>,
    strings: Strings,
}

thread_local! {
    // wasm32 without threads: a plain global, set once by `init`.
    static SDK: OnceCell<Rc<Sdk>> = const { OnceCell::new() };
}

/// The SDK, or a thrown error when `init` has not run. One non-generic accessor: every
/// `thread_local` access is a separate copy of its code.
fn sdk() -> Result<Rc<Sdk>, Error> {
    SDK.with(|cell| cell.get().cloned()).ok_or_else(|| Error::new("nexus: call init() first"))
}

/// An integer option within `1..=max`, `default` when absent.
fn int_option(options: &JsValue, key: &str, default: u32, max: u32) -> Result<u32, Error> {
    let value = get(options, key);
    if value.is_undefined() {
        return Ok(default);
    }
    match value.as_f64() {
        Some(n) if n.fract() == 0.0 && n >= 1.0 && n <= f64::from(max) => Ok(n as u32),
        _ => Err(Error::new(FLUSH_ERROR)),
    }
}

/// Starts the SDK. Options: `key` (write key, required), `endpoint` (collector origin, default
/// the page's own origin), `flushAt` (1..=1000, default 20), `flushIntervalMs` (default 5000).
/// A second call is ignored, so frameworks that mount twice do no harm.
///
/// `tab` is the page's own queue key, `nexus_queue:<id>`, set by the loader: the queue is stored
/// in chunks under `<tab>.<n>`, this page's alone, and the loader hands over what closed tabs and
/// earlier pages left with [`adopt`]. Without it, `nexus_queue`.
///
/// `send` is the loader's transport (see [`Fetch`]): the loader builds the URL, compresses and
/// posts; the decisions (what goes in a batch, when to retry, what to drop) stay here. The loader
/// also runs the interval of `flushIntervalMs` and the page listeners (see [`tick`]).
#[wasm_bindgen]
pub fn init(options: JsValue, tab: Option<String>, send: Function) -> Result<(), Error> {
    if sdk().is_ok() {
        return Ok(());
    }
    if !options.is_object() || get(&options, "key").as_string().is_none_or(|k| k.is_empty()) {
        return Err(Error::new(INIT_ERROR));
    }
    let endpoint = get(&options, "endpoint");
    if !(endpoint.is_undefined() || endpoint.is_null() || endpoint.is_string()) {
        return Err(Error::new(INIT_ERROR));
    }
    let flush_at = int_option(&options, "flushAt", 20, MAX_EVENTS_PER_BATCH as u32)?;
    let interval = int_option(&options, "flushIntervalMs", 5000, 86_400_000)?;
    let cookieless = get(&options, "cookieless").is_truthy();
    // Outside 0..=1 (or not a number) samples everyone: the npm types say what is allowed, and
    // each error message costs wasm bytes.
    let sample_rate = get(&options, "sampleRate").as_f64().filter(|r| (0.0..1.0).contains(r)).unwrap_or(1.0);
    let before_send = get(&options, "beforeSend").dyn_into::<Function>().ok();

    let config = Config { flush_at: flush_at as usize, retry_base_ms: u64::from(interval), ..Config::default() };
    let key = tab.unwrap_or_else(|| String::from(QUEUE_KEY));
    // Cookieless: a storage that holds nothing, so ids, the session and the queue live in
    // memory for the page's life only, and what earlier pages stored is not read either.
    let storage = if cookieless { LocalStore::memory() } else { LocalStore::open() };
    let sender = Sender::new(Queue::new(config), Fetch::new(send), DateClock, storage, key);

    // Consent: `consent: "pending"` holds events in memory until `optIn`, unless an earlier
    // page stored a grant; `respectDnt: true` denies when the browser sends Do-Not-Track or
    // Global Privacy Control.
    let navigator = global("navigator");
    let signal = get(&options, "respectDnt").is_truthy()
        && (get(&navigator, "doNotTrack").as_string().as_deref() == Some("1")
            || get(&navigator, "globalPrivacyControl").is_truthy());
    let wait = get(&options, "consent").as_string().as_deref() == Some("pending");
    let consent = Consent::initial(wait, sender.storage.get(CONSENT_KEY).as_deref(), signal);
    sender.storage.writes.set(consent.granted());
    sender.sending.set(consent.granted());
    let sdk = Sdk {
        sender,
        identity: RefCell::new(Identity::new()),
        consent: Cell::new(consent),
        cookieless,
        sample_rate,
        before_send,
        strings: Strings::default(),
    };
    if consent == Consent::Denied {
        sdk.deny(); // a privacy signal: also clears what earlier pages stored
    }
    SDK.with(|cell| cell.set(Rc::new(sdk)).ok()).unwrap_or_default();
    Ok(())
}

/// `entry[i]`.
fn at_index(entry: &JsValue, i: u32) -> JsValue {
    Reflect::get_u32(entry, i).unwrap_or(JsValue::UNDEFINED)
}

/// Records the calls the loader queued in one task, in order: each `[kind, at, a, b, c, ctx]`
/// with `at` the time of the call (Unix ms, also the time in the event's UUID v7), `ctx` the
/// event's `context` object (page, campaign, device, library: made by the loader, with the
/// page's URL at the time of the call; a fresh object per event), and by kind
/// - `0` track: `a` the name, `b` the properties; `3` the same with `c` the loader's edit
///   (`alias`, `group`: a function that gets the finished event before `beforeSend` does and
///   returns it with its own fields, so those events need no export of their own);
/// - `1` page view: `b` the properties (`c`, the referrer of a single-page-app navigation, is
///   already in `ctx`);
/// - `2` identify: `a` the user id (kept for later events and page loads), `b` the person
///   properties to set.
///
/// The loader checked names, ids and that properties are plain objects when the call was made.
/// The queue is stored once, after all of them, and a send starts if one is due. Returns the
/// errors of the calls that failed (a `beforeSend` that threw, properties `JSON.stringify`
/// refuses, an event over 32 KiB): the loader logs them, since their callers are gone.
#[wasm_bindgen]
pub fn run(calls: Array) -> Array {
    let errors = Array::new();
    match sdk() {
        Ok(sdk) => {
            let mut due = false;
            for entry in calls.iter() {
                match sdk.call(&entry) {
                    Ok(pushed) => due |= pushed,
                    Err(error) => {
                        errors.push(&error);
                    }
                }
            }
            sdk.sender.persist_pending();
            if due {
                flush_in_background(&sdk.sender);
            }
        }
        Err(error) => {
            errors.push(&error);
        }
    }
    errors
}

/// Consent given: stores and sends what was held, and everything after. Remembered for the
/// next pages.
#[wasm_bindgen(js_name = optIn)]
pub fn opt_in() -> Result<(), Error> {
    let sdk = sdk()?;
    sdk.consent.set(Consent::Granted);
    let sender = &sdk.sender;
    sender.storage.writes.set(true);
    sender.storage.set(CONSENT_KEY, GRANTED);
    sdk.identity.borrow().persist(&sender.storage);
    sender.persist();
    sender.sending.set(true);
    flush_in_background(sender);
    Ok(())
}

/// Consent refused or withdrawn: forgets every event and id, removes everything the SDK
/// stored, and records nothing more until `optIn`.
#[wasm_bindgen(js_name = optOut)]
pub fn opt_out() -> Result<(), Error> {
    sdk()?.deny();
    Ok(())
}

/// Logout: forgets the user id, and starts a new anonymous id and a new session for the events
/// that follow, so they cannot be tied to the ones before. Events already queued are sent as
/// they were recorded.
#[wasm_bindgen]
pub fn reset() -> Result<(), Error> {
    let sdk = sdk()?;
    sdk.identity.borrow_mut().forget(&sdk.sender.storage);
    Ok(())
}

/// Takes over the stored queue of a tab that is gone (the loader checked, under that tab's
/// lock, that it is). Its events are sent with this tab's next batch.
#[wasm_bindgen]
pub fn adopt(saved: String) -> Result<(), Error> {
    sdk()?.sender.adopt(&saved);
    Ok(())
}

/// Sends everything queued now and calls `done` (when a function) once the requests have been
/// answered. A failed send keeps its events for the next attempt; `done` is called all the same,
/// and at once while a retry delay runs (the collector asked for the wait, or is down).
#[wasm_bindgen]
pub fn flush(done: JsValue) -> Result<(), Error> {
    let sdk = sdk()?;
    sdk.sender.flush(move |_| {
        if let Some(done) = done.dyn_ref::<Function>() {
            let _ = done.call0(&JsValue::UNDEFINED);
        }
    });
    Ok(())
}

/// The outcome of request `n` (see [`Fetch`]), reported by the loader's transport: `status` the
/// HTTP status, or 0 when no answer came (offline, CORS, abort); `retry_after` the
/// `Retry-After` header in seconds (0 when absent).
#[wasm_bindgen]
pub fn answer(n: u32, status: u16, retry_after: u32) -> Result<(), Error> {
    let sdk = sdk()?;
    let outcome = match status {
        0 => Outcome::Network,
        s if retry_after > 0 && should_retry(s) => {
            Outcome::Later((u64::from(retry_after) * 1000).min(crate::queue::MAX_BACKOFF_MS))
        }
        s => Outcome::Status(s),
    };
    sdk.sender.transport.answer(n, outcome);
    Ok(())
}

impl Sdk {
    fn deny(&self) {
        self.consent.set(Consent::Denied);
        let sender = &self.sender;
        sender.sending.set(false);
        sender.storage.writes.set(false);
        sender.forget();
        self.identity.borrow_mut().forget(&sender.storage);
        sender.storage.remove(CONSENT_KEY);
        sender.storage.remove(PROPS_KEY);
    }

    /// One entry of [`run`]; true when a send is due.
    fn call(&self, entry: &JsValue) -> Result<bool, Error> {
        let kind = match at_index(entry, 0).as_f64().unwrap_or_default() as u8 {
            1 => EventType::Page,
            2 => EventType::Identify,
            _ => EventType::Track,
        };
        let at = at_index(entry, 1).as_f64();
        let name = at_index(entry, 2);
        if let (EventType::Identify, Some(user_id)) = (kind, name.as_string()) {
            self.identity.borrow_mut().set_user_id(&self.sender.storage, &user_id);
        }
        let properties = Some(at_index(entry, 3)).filter(|p| p.is_object());
        let extra = at_index(entry, 4);
        // A page view's `c` is its referrer, already in the context the loader made.
        let edit = if kind == EventType::Page { JsValue::UNDEFINED } else { extra };
        // The name stays a JS string: it is only passed on.
        let name = if kind == EventType::Track { Some(name) } else { None };
        let ctx = at_index(entry, 5);
        let ctx = if ctx.is_object() { ctx.unchecked_into() } else { Object::new() };
        self.record(kind, name, properties, at, ctx, edit)
    }

    /// Records one event. `properties` are the event's, or for `identify` the person
    /// properties to set (sent as `set`).
    fn record(
        &self,
        kind: EventType,
        name: Option<JsValue>,
        properties: Option<JsValue>,
        at: Option<f64>,
        ctx: Object,
        edit: JsValue,
    ) -> Result<bool, Error> {
        if !self.consent.get().records() {
            return Ok(false); // denied: not an error of the caller's, just nothing to do
        }
        let now = DateClock.now_ms();
        let at = at.filter(|t| t.is_finite() && *t > 0.0).map_or(now, |t| t as u64);
        if self.sample_rate < 1.0 {
            // By person (the anonymous id, in memory only when cookieless), not by event.
            let id = self.identity.borrow_mut().anonymous_id(&self.sender.storage, || new_id(at));
            if !sampled(&id, self.sample_rate) {
                return Ok(false);
            }
        }
        let Some(json) = self.build(kind, name, properties, at, ctx, edit)? else {
            return Ok(false); // dropped by `beforeSend`: not the caller's error
        };
        if json.len() > MAX_EVENT_BYTES {
            return Err(Error::new("nexus: event over 32 KiB"));
        }
        Ok(self.sender.push(json).due)
    }

    fn build(
        &self,
        kind: EventType,
        name: Option<JsValue>,
        properties: Option<JsValue>,
        at: u64,
        ctx: Object,
        edit: JsValue,
    ) -> Result<Option<String>, Error> {
        let event = Object::new();
        let strings = &self.strings;
        let set = |key: &str, value: &JsValue| {
            let _ = Reflect::set(&event, &strings.get(key), value);
        };
        set("id", &JsValue::from_str(&new_id(at)));
        set("type", &strings.get(kind.as_str()));
        if let Some(name) = name {
            set("name", &name);
        }
        {
            let mut identity = self.identity.borrow_mut();
            let storage = &self.sender.storage;
            // Cookieless: the collector's daily visitor hash stands in for the person.
            if !self.cookieless {
                set("anonymous_id", &strings.get(&identity.anonymous_id(storage, || new_id(at))));
            }
            if let Some(user_id) = identity.user_id(storage) {
                set("user_id", &strings.get(&user_id));
            }
            set("session_id", &strings.get(&identity.session_id(storage, at, || new_id(at))));
        } // released before JSON.stringify, which may run user `toJSON` code that calls us again
        set("timestamp", &JsValue::from_str(&rfc3339_ms(at)));
        if let Some(properties) = properties {
            set(if kind == EventType::Identify { "set" } else { "properties" }, &properties);
        }
        // Events the queue gave up on since the last event (full queue, refused, retries used
        // up) are reported on this one as `context.dropped`, so the loss shows in the data, not
        // only in a console. In the context, not the properties: those are the caller's object.
        let dropped = self.sender.queue.borrow_mut().unreported_drops();
        if dropped > 0 {
            put(&ctx, "dropped", &JsValue::from(dropped));
        }
        set("context", &ctx);
        let mut event = JsValue::from(event);
        // The loader's edit first, then the page's `beforeSend`, which sees the event as sent.
        // A hook's own exception drops the event and goes back, as it is, to `run`'s errors: a
        // hook that scrubs personal data and fails must not let the unscrubbed event through.
        for hook in [edit.dyn_ref::<Function>(), self.before_send.as_ref()].into_iter().flatten() {
            event = hook.call1(&JsValue::UNDEFINED, &event).map_err(JsCast::unchecked_into::<Error>)?;
            if !event.is_object() {
                return Ok(None);
            }
        }
        JSON::stringify(&event)
            .map(|json| Some(String::from(json)))
            .map_err(|_| Error::new("nexus: properties must be JSON"))
    }
}

fn flush_in_background(sender: &Rc<WebSender>) {
    sender.flush(|_| {});
}

/// The page's moments, told by the loader (npm/src/index.js), which owns the timer and the
/// listeners: `0` the periodic flush (which also sends retries once their backoff is over), `1`
/// back online (the backoff grew while offline, but the network is there now), `2` the page is
/// hidden or going away (`visibilitychange` to hidden, `pagehide`: hand everything to
/// `sendBeacon`).
///
/// In JavaScript rather than as wasm closures: each `Closure` costs its own shims in the wasm
/// and the listeners are one line each in the loader.
///
/// Returns whether the SDK may write to `localStorage` now (consent granted, not cookieless):
/// the loader keeps the super properties of `register` and stores them only then (`4` asks
/// just that).
#[wasm_bindgen]
pub fn tick(moment: u8) -> Result<bool, Error> {
    let sender = sdk()?.sender.clone();
    match moment {
        0 => flush_in_background(&sender),
        1 => {
            sender.queue.borrow_mut().retry_now();
            flush_in_background(&sender);
        }
        // `pagehide` is the last event a leaving page reliably gets (also on mobile and into
        // the back/forward cache); hidden covers a tab switched away that may never come back.
        2 => {
            sender.flush_beacon();
        }
        _ => {}
    }
    Ok(sender.storage.stores())
}
