//! The functions exported to JavaScript: `init`, `track`, `page`, `identify`, `flush`,
//! `optIn`, `optOut`, `reset`, `tick` (the page's moments, told by the loader), and `adopt` (the
//! loader's hand-over of a closed tab's queue). `alias`, `group` and the super properties are
//! the loader's, on top of these (see npm/src/index.js): every export costs wasm that every app
//! downloads, while loader code an app does not call is dropped by its bundler.
//!
//! Argument mistakes throw a real JS `Error` (`js_sys::Error`) with a `nexus:` prefix, so they
//! show up with a stack in the developer's console. Delivery problems never throw: they are
//! outcomes of the queue. With `debug: true` the console shows each body as it is sent (fetch
//! or beacon): what leaves the page, after `beforeSend`.
//!
//! Events are built as JS objects and serialised by the browser's own `JSON.stringify`: user
//! properties are JS values already, and serde would cost more than the rest of the SDK.
//!
//! These exports are the npm loader's back end, not the public API: `flush` takes a callback
//! and the loader (npm/src/index.js) turns it into the Promise users see, which keeps a Rust
//! future executor out of the wasm.

use std::cell::{Cell, OnceCell, RefCell};
use std::rc::Rc;

use js_sys::{Error, Function, Object, JSON};
use protocol::limits::{MAX_EVENTS_PER_BATCH, MAX_EVENT_BYTES};
use protocol::{EventType, BATCH_PATH, KEY_PARAM};
use wasm_bindgen::prelude::*;

use super::context::{self, get, global, put, Statics};
use super::platform::{new_id, DateClock, Fetch, LocalStore};
use crate::consent::{Consent, CONSENT_KEY, GRANTED};
use crate::identity::{Identity, Storage};
use crate::queue::{Clock, Config, Queue, Sender, QUEUE_KEY};
use crate::wire::{rfc3339_ms, sampled, valid_id, valid_name};

type WebSender = Sender<Fetch, DateClock, LocalStore>;

/// Messages are short on purpose: each byte ships in the wasm. The npm types document the rules.
const PROPS_ERROR: &str = "nexus: properties must be a plain object";
/// One message for every mistake in the required options, one for the numbers.
const INIT_ERROR: &str = "nexus: init() needs { key: string, endpoint?: string }";
const FLUSH_ERROR: &str = "nexus: bad flushAt or flushIntervalMs";

/// `localStorage` key of the super properties the loader's `register` stores (removed here too,
/// when consent is withdrawn at init by a privacy signal).
pub const PROPS_KEY: &str = "nexus_props";

#[wasm_bindgen]
extern "C" {
    /// Runs the queue's write after the current task's synchronous code (see `Sender::push`).
    #[wasm_bindgen(js_name = queueMicrotask)]
    fn queue_microtask(task: &JsValue);
}

/// Everything `init` sets up.
struct Sdk {
    sender: Rc<WebSender>,
    identity: RefCell<Identity>,
    consent: Cell<Consent>,
    statics: Statics,
    /// No persistent identifiers: nothing stored, no anonymous id sent (init `cookieless`).
    cookieless: bool,
    /// Share of persons recorded, decided by their anonymous id (init `sampleRate`).
    sample_rate: f64,
    /// The page's hook that may edit or drop each event (init `beforeSend`).
    before_send: Option<Function>,
    /// What `queueMicrotask` runs to store the queue: the loader's `() => tick(3)`.
    persist_task: JsValue,
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

/// `undefined`/`null` as `None`; a plain object (not an array) as itself; anything else throws.
fn object_arg(value: JsValue, message: &str) -> Result<Option<JsValue>, Error> {
    if value.is_undefined() || value.is_null() {
        Ok(None)
    } else if value.is_object() && !js_sys::Array::is_array(&value) {
        Ok(Some(value))
    } else {
        Err(Error::new(message))
    }
}

/// Starts the SDK. Options: `key` (write key, required), `endpoint` (collector origin, default
/// the page's own origin), `flushAt` (1..=1000, default 20), `flushIntervalMs` (default 5000),
/// `debug`. A second call is ignored, so frameworks that mount twice do no harm.
///
/// `tab` is set by the loader when the browser has Web Locks: the queue is then stored under
/// `nexus_queue:<tab>`, this tab's alone, and the loader hands over the queues of closed tabs
/// with [`adopt`]. Without it, the one `nexus_queue` key is used and loaded here.
///
/// `persist_task` is the function the loader gives for storing the queue after a task that
/// tracked (it calls [`tick`] with `3`); it must be a function. The loader also runs the
/// interval of `flushIntervalMs` and the page listeners (see [`tick`]).
#[wasm_bindgen]
pub fn init(options: JsValue, tab: Option<String>, persist_task: JsValue) -> Result<(), Error> {
    if sdk().is_ok() {
        return Ok(());
    }
    if !options.is_object() {
        return Err(Error::new(INIT_ERROR));
    }
    let key = get(&options, "key").as_string().filter(|k| !k.is_empty()).ok_or_else(|| Error::new(INIT_ERROR))?;
    let endpoint = match get(&options, "endpoint") {
        v if v.is_undefined() || v.is_null() => String::new(),
        v => v.as_string().ok_or_else(|| Error::new(INIT_ERROR))?,
    };
    let flush_at = int_option(&options, "flushAt", 20, MAX_EVENTS_PER_BATCH as u32)?;
    let interval = int_option(&options, "flushIntervalMs", 5000, 86_400_000)?;
    let debug = get(&options, "debug").is_truthy();
    let cookieless = get(&options, "cookieless").is_truthy();
    // Outside 0..=1 (or not a number) samples everyone: the npm types say what is allowed, and
    // each error message costs wasm bytes.
    let sample_rate = get(&options, "sampleRate").as_f64().filter(|r| (0.0..1.0).contains(r)).unwrap_or(1.0);
    let before_send = get(&options, "beforeSend").dyn_into::<Function>().ok();

    // `<endpoint without trailing slashes>/v1/batch?key=<key>`
    let mut end = endpoint.len();
    while end > 0 && endpoint.as_bytes().get(end - 1) == Some(&b'/') {
        end -= 1;
    }
    let mut url = String::with_capacity(end + key.len() + 16);
    url.push_str(endpoint.get(..end).unwrap_or_default());
    url.push_str(BATCH_PATH);
    url.push('?');
    url.push_str(KEY_PARAM);
    url.push('=');
    url.push_str(&String::from(js_sys::encode_uri_component(&key)));

    let config = Config { flush_at: flush_at as usize, retry_base_ms: u64::from(interval), ..Config::default() };
    // Takes in what earlier pages left unsent; the first tick sends it.
    let mut key = String::from(QUEUE_KEY);
    if let Some(tab) = tab {
        key.push(':');
        key.push_str(&tab);
    }
    // Cookieless: a storage that holds nothing, so ids, the session and the queue live in
    // memory for the page's life only, and what earlier pages stored is not read either.
    let storage = if cookieless { LocalStore::memory() } else { LocalStore::open() };
    let sender = Sender::new(Queue::new(config), Fetch::new(url, debug), DateClock, storage, key);

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
        statics: Statics::collect(),
        cookieless,
        sample_rate,
        before_send,
        persist_task,
    };
    if consent == Consent::Denied {
        sdk.deny(); // a privacy signal: also clears what earlier pages stored
    }
    SDK.with(|cell| cell.set(Rc::new(sdk)).ok()).unwrap_or_default();
    Ok(())
}

/// Records a named action with optional properties. `at` (Unix ms) is set by the npm loader
/// for calls it queued before the wasm was ready, so they keep the time they were made.
///
/// `edit`, set by the loader's `alias` and `group`, is a function that gets the finished event
/// before `beforeSend` does and returns it with its own fields (`type`, `user_id`,
/// `previous_id`, `group_type`, `group_key`, ...): those events need no export of their own.
#[wasm_bindgen]
pub fn track(name: JsValue, properties: JsValue, at: Option<f64>, edit: JsValue) -> Result<(), Error> {
    let sdk = sdk()?;
    let name = name
        .as_string()
        .filter(|n| valid_name(n))
        .ok_or_else(|| Error::new("nexus: track() needs a name (1..200 bytes)"))?;
    let properties = object_arg(properties, PROPS_ERROR)?;
    sdk.record(EventType::Track, Some(&name), properties, at, None, edit)
}

/// Records a page view of the current page (stored as `$pageview`). `referrer` is set by the
/// loader for the page views of single-page-app navigations: the previous SPA URL, in place of
/// `document.referrer`, which the history API leaves as it was at the load.
#[wasm_bindgen]
pub fn page(properties: JsValue, at: Option<f64>, referrer: JsValue) -> Result<(), Error> {
    let sdk = sdk()?;
    let properties = object_arg(properties, PROPS_ERROR)?;
    sdk.record(EventType::Page, None, properties, at, referrer.as_string(), JsValue::UNDEFINED)
}

/// Ties this device to `user_id` (kept for later events and page loads) and sets person
/// properties from `traits`.
#[wasm_bindgen]
pub fn identify(user_id: JsValue, traits: JsValue, at: Option<f64>) -> Result<(), Error> {
    let sdk = sdk()?;
    let user_id = user_id
        .as_string()
        .filter(|u| valid_id(u))
        .ok_or_else(|| Error::new("nexus: identify() needs a user id (1..200 bytes)"))?;
    let traits = object_arg(traits, PROPS_ERROR)?;
    sdk.identity.borrow_mut().set_user_id(&sdk.sender.storage, &user_id);
    sdk.record(EventType::Identify, None, traits, at, None, JsValue::UNDEFINED)
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

    /// Records one event. `properties` are the event's, or for `identify` the person
    /// properties to set (sent as `set`).
    fn record(
        &self,
        kind: EventType,
        name: Option<&str>,
        properties: Option<JsValue>,
        at: Option<f64>,
        referrer: Option<String>,
        edit: JsValue,
    ) -> Result<(), Error> {
        if !self.consent.get().records() {
            return Ok(()); // denied: not an error of the caller's, just nothing to do
        }
        let now = DateClock.now_ms();
        let at = at.filter(|t| t.is_finite() && *t > 0.0).map_or(now, |t| t as u64);
        if self.sample_rate < 1.0 {
            // By person (the anonymous id, in memory only when cookieless), not by event.
            let id = self.identity.borrow_mut().anonymous_id(&self.sender.storage, || new_id(at));
            if !sampled(&id, self.sample_rate) {
                return Ok(());
            }
        }
        let Some(json) = self.build(kind, name, properties, at, referrer, edit)? else {
            return Ok(()); // not in the sample, or dropped by `beforeSend`: not the caller's error
        };
        if json.len() > MAX_EVENT_BYTES {
            return Err(Error::new("nexus: event over 32 KiB"));
        }
        let pushed = self.sender.push(json);
        if pushed.persist {
            queue_microtask(&self.persist_task);
        }
        if pushed.due {
            flush_in_background(&self.sender);
        }
        Ok(())
    }

    fn build(
        &self,
        kind: EventType,
        name: Option<&str>,
        properties: Option<JsValue>,
        at: u64,
        referrer: Option<String>,
        edit: JsValue,
    ) -> Result<Option<String>, Error> {
        let event = Object::new();
        put(&event, "id", &JsValue::from_str(&new_id(at)));
        put(&event, "type", &JsValue::from_str(kind.as_str()));
        if let Some(name) = name {
            put(&event, "name", &JsValue::from_str(name));
        }
        {
            let mut identity = self.identity.borrow_mut();
            let storage = &self.sender.storage;
            // Cookieless: the collector's daily visitor hash stands in for the person.
            if !self.cookieless {
                let anonymous_id = identity.anonymous_id(storage, || new_id(at));
                put(&event, "anonymous_id", &JsValue::from_str(&anonymous_id));
            }
            if let Some(user_id) = identity.user_id(storage) {
                put(&event, "user_id", &JsValue::from_str(&user_id));
            }
            let session_id = identity.session_id(storage, at, || new_id(at));
            put(&event, "session_id", &JsValue::from_str(&session_id));
        } // released before JSON.stringify, which may run user `toJSON` code that calls us again
        put(&event, "timestamp", &JsValue::from_str(&rfc3339_ms(at)));
        if let Some(properties) = properties {
            put(&event, if kind == EventType::Identify { "set" } else { "properties" }, &properties);
        }
        let ctx = context::collect(&self.statics, referrer);
        // Events the queue gave up on since the last event (full queue, refused, retries used
        // up) are reported on this one as `context.dropped`, so the loss shows in the data, not
        // only in a console. In the context, not the properties: those are the caller's object.
        let dropped = self.sender.queue.borrow_mut().unreported_drops();
        if dropped > 0 {
            put(&ctx, "dropped", &JsValue::from(dropped));
        }
        put(&event, "context", &ctx);
        let mut event = JsValue::from(event);
        // The loader's edit first, then the page's `beforeSend`, which sees the event as sent.
        // A hook's own exception is thrown to the caller as it is: a hook that scrubs personal
        // data and fails must not let the unscrubbed event through.
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
/// `sendBeacon`), `3` the microtask after `track` (store the queue).
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
        3 => sender.persist_pending(),
        _ => {}
    }
    Ok(sender.storage.stores())
}
