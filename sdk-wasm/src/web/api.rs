//! The functions exported to JavaScript: `init`, `track`, `page`, `identify`, `flush`.
//!
//! Argument mistakes throw a real JS `Error` (`js_sys::Error`) with a `nexus:` prefix, so they
//! show up with a stack in the developer's console. Delivery problems never throw: they are
//! outcomes of the queue, logged with `debug: true`.
//!
//! Events are built as JS objects and serialised by the browser's own `JSON.stringify`: user
//! properties are JS values already, and serde would cost more than the rest of the SDK.
//!
//! These exports are the npm loader's back end, not the public API: `flush` takes a callback
//! and the loader (npm/src/index.js) turns it into the Promise users see, which keeps a Rust
//! future executor out of the wasm.

use std::cell::{OnceCell, RefCell};
use std::rc::Rc;

use gloo_timers::callback::Interval;
use js_sys::{Error, Function, Object, JSON};
use protocol::limits::{MAX_EVENTS_PER_BATCH, MAX_EVENT_BYTES};
use protocol::{EventType, BATCH_PATH, KEY_PARAM};
use wasm_bindgen::prelude::*;
use web_sys::EventTarget;

use super::context::{self, get, global, put, with_global, Statics};
use super::platform::{log, new_id, DateClock, Fetch, LocalStore};
use crate::identity::Identity;
use crate::queue::{Clock, Config, Flushed, Queue, Sender, QUEUE_KEY};
use crate::wire::{rfc3339_ms, valid_id, valid_name};

type WebSender = Sender<Fetch, DateClock, LocalStore>;

/// Messages are short on purpose: each byte ships in the wasm. The npm types document the rules.
const PROPS_ERROR: &str = "nexus: properties must be a plain object";

/// Everything `init` sets up.
struct Sdk {
    sender: Rc<WebSender>,
    identity: RefCell<Identity>,
    statics: Statics,
    debug: bool,
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

/// An integer option within `min..=max`, `default` when absent.
fn int_option(options: &JsValue, key: &str, default: u32, min: u32, max: u32, message: &str) -> Result<u32, Error> {
    let value = get(options, key);
    if value.is_undefined() {
        return Ok(default);
    }
    match value.as_f64() {
        Some(n) if n.fract() == 0.0 && n >= f64::from(min) && n <= f64::from(max) => Ok(n as u32),
        _ => Err(Error::new(message)),
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
#[wasm_bindgen]
pub fn init(options: JsValue, tab: Option<String>) -> Result<(), Error> {
    if sdk().is_ok() {
        return Ok(());
    }
    if !options.is_object() {
        return Err(Error::new("nexus: init() takes { key, endpoint }"));
    }
    let key = get(&options, "key")
        .as_string()
        .filter(|k| !k.is_empty())
        .ok_or_else(|| Error::new("nexus: init() needs the write key"))?;
    let endpoint = match get(&options, "endpoint") {
        v if v.is_undefined() || v.is_null() => String::new(),
        v => v.as_string().ok_or_else(|| Error::new("nexus: endpoint must be a string"))?,
    };
    let flush_at =
        int_option(&options, "flushAt", 20, 1, MAX_EVENTS_PER_BATCH as u32, "nexus: flushAt must be 1..1000")?;
    let interval =
        int_option(&options, "flushIntervalMs", 5000, 1, 86_400_000, "nexus: flushIntervalMs must be 1..86400000")?;
    let debug = get(&options, "debug").is_truthy();

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
    if debug {
        // The key in the URL is the public write key: fine to show.
        log("ready, sending to", &JsValue::from_str(&url));
    }
    // Takes in what earlier pages left unsent; the first tick sends it.
    let mut key = String::from(QUEUE_KEY);
    if let Some(tab) = tab {
        key.push(':');
        key.push_str(&tab);
    }
    let sender = Sender::new(Queue::new(config), Fetch::new(url), DateClock, LocalStore::open(), key);
    watch_page(&sender, interval, debug);
    let sdk = Sdk { sender, identity: RefCell::new(Identity::new()), statics: Statics::collect(), debug };
    SDK.with(|cell| cell.set(Rc::new(sdk)).ok()).unwrap_or_default();
    Ok(())
}

/// Records a named action with optional properties. `at` (Unix ms) is set by the npm loader
/// for calls it queued before the wasm was ready, so they keep the time they were made.
#[wasm_bindgen]
pub fn track(name: JsValue, properties: JsValue, at: Option<f64>) -> Result<(), Error> {
    let sdk = sdk()?;
    let name = name
        .as_string()
        .filter(|n| valid_name(n))
        .ok_or_else(|| Error::new("nexus: track() needs a name (1..200 bytes)"))?;
    let properties = object_arg(properties, PROPS_ERROR)?;
    sdk.record(EventType::Track, Some(&name), properties, None, at)
}

/// Records a page view of the current page (stored as `$pageview`).
#[wasm_bindgen]
pub fn page(properties: JsValue, at: Option<f64>) -> Result<(), Error> {
    let sdk = sdk()?;
    let properties = object_arg(properties, PROPS_ERROR)?;
    sdk.record(EventType::Page, None, properties, None, at)
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
    sdk.record(EventType::Identify, None, None, traits, at)
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
    let debug = sdk.debug;
    sdk.sender.flush(move |report| {
        if debug {
            log_report(report);
        }
        if let Some(done) = done.dyn_ref::<Function>() {
            let _ = done.call0(&JsValue::UNDEFINED);
        }
    });
    Ok(())
}

impl Sdk {
    fn record(
        &self,
        kind: EventType,
        name: Option<&str>,
        properties: Option<JsValue>,
        set: Option<JsValue>,
        at: Option<f64>,
    ) -> Result<(), Error> {
        let now = DateClock.now_ms();
        let at = at.filter(|t| t.is_finite() && *t > 0.0).map_or(now, |t| t as u64);
        // Events the queue gave up on since the last event (full queue, refused, retries used
        // up) are reported on this one, so the loss shows in the data, not only in a console.
        let dropped = self.sender.queue.borrow_mut().unreported_drops();
        let properties = match (dropped, properties) {
            (0, properties) => properties,
            (n, properties) => {
                if self.debug {
                    log("dropped", &JsValue::from(n));
                }
                // A copy: the caller's object is theirs.
                let copy =
                    Object::assign(&Object::new(), properties.as_ref().map_or(&Object::new(), |p| p.unchecked_ref()));
                put(&copy, "$dropped", &JsValue::from(n));
                Some(copy.into())
            }
        };
        let json = self.build(kind, name, properties, set, at)?;
        if json.len() > MAX_EVENT_BYTES {
            return Err(Error::new("nexus: event over 32 KiB"));
        }
        if self.debug {
            log("queued", &JsValue::from_str(&json));
        }
        let due = self.sender.push(json);
        if due {
            flush_in_background(&self.sender, self.debug);
        }
        Ok(())
    }

    fn build(
        &self,
        kind: EventType,
        name: Option<&str>,
        properties: Option<JsValue>,
        set: Option<JsValue>,
        at: u64,
    ) -> Result<String, Error> {
        let event = Object::new();
        put(&event, "id", &JsValue::from_str(&new_id(at)));
        put(&event, "type", &JsValue::from_str(kind.as_str()));
        if let Some(name) = name {
            put(&event, "name", &JsValue::from_str(name));
        }
        {
            let mut identity = self.identity.borrow_mut();
            let storage = &self.sender.storage;
            let anonymous_id = identity.anonymous_id(storage, || new_id(at));
            put(&event, "anonymous_id", &JsValue::from_str(&anonymous_id));
            if let Some(user_id) = identity.user_id(storage) {
                put(&event, "user_id", &JsValue::from_str(&user_id));
            }
            let session_id = identity.session_id(storage, at, || new_id(at));
            put(&event, "session_id", &JsValue::from_str(&session_id));
        } // released before JSON.stringify, which may run user `toJSON` code that calls us again
        put(&event, "timestamp", &JsValue::from_str(&rfc3339_ms(at)));
        if let Some(properties) = properties {
            put(&event, "properties", &properties);
        }
        if let Some(set) = set {
            put(&event, "set", &set);
        }
        put(&event, "context", &context::collect(&self.statics));
        JSON::stringify(&event)
            .map(String::from)
            .map_err(|_| Error::new("nexus: properties must be JSON (no BigInt, no cycles)"))
    }
}

fn flush_in_background(sender: &Rc<WebSender>, debug: bool) {
    sender.flush(move |report| {
        if debug {
            log_report(report);
        }
    });
}

fn log_report(report: Flushed) {
    if report.requests > 0 {
        log("sent", &JsValue::from(report.delivered as u32));
    }
    if report.requeued > 0 {
        log("kept for retry", &JsValue::from(report.requeued as u32));
    }
    if report.dropped > 0 {
        log("dropped", &JsValue::from(report.dropped as u32));
    }
}

/// The periodic flush, a flush when the browser is back online, and beacons when the page
/// goes away.
///
/// `pagehide` is the last event a leaving page reliably gets (also on mobile and into the
/// back/forward cache); `visibilitychange` to hidden covers a tab switched away that may never
/// come back. The closures live as long as the page, hence `forget`.
fn watch_page(sender: &Rc<WebSender>, interval: u32, debug: bool) {
    let timer = Rc::clone(sender);
    // The interval also sends retries, once their backoff is over (`Sender::flush` checks).
    Interval::new(interval, move || flush_in_background(&timer, debug)).forget();

    // Back online: the backoff grew while offline, but the network is there now.
    let on_online = {
        let sender = Rc::clone(sender);
        Closure::<dyn FnMut()>::new(move || {
            sender.queue.borrow_mut().retry_now();
            flush_in_background(&sender, debug);
        })
    };
    with_global(|window| listen(window, "online", on_online));

    let on_pagehide = {
        let sender = Rc::clone(sender);
        Closure::<dyn FnMut()>::new(move || beacon(&sender, debug))
    };
    with_global(|window| listen(window, "pagehide", on_pagehide));
    let document = global("document");
    let on_visibility = {
        let sender = Rc::clone(sender);
        let document = document.clone();
        Closure::<dyn FnMut()>::new(move || {
            if get(&document, "visibilityState").as_string().as_deref() == Some("hidden") {
                beacon(&sender, debug);
            }
        })
    };
    listen(&document, "visibilitychange", on_visibility);
}

/// Hands everything queued to `sendBeacon`, which the browser delivers after the page is gone.
fn beacon(sender: &WebSender, debug: bool) {
    let sent = sender.flush_beacon();
    if debug && sent > 0 {
        log("beacon", &JsValue::from(sent as u32));
    }
}

fn listen(target: &JsValue, event: &str, listener: Closure<dyn FnMut()>) {
    if target.is_object() {
        let target: &EventTarget = target.unchecked_ref();
        let _ = target.add_event_listener_with_callback(event, listener.as_ref().unchecked_ref());
    }
    listener.forget();
}
