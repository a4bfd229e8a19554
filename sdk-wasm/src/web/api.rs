//! The functions exported to JavaScript: `init`, `track`, `page`, `identify`, `flush`,
//! `optIn`, `optOut`, `reset`, and `adopt` (the loader's hand-over of a closed tab's queue).
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

use std::cell::{Cell, OnceCell, RefCell};
use std::rc::Rc;

use js_sys::{Error, Function, Object, JSON};
use protocol::limits::{MAX_EVENTS_PER_BATCH, MAX_EVENT_BYTES};
use protocol::{EventType, BATCH_PATH, KEY_PARAM};
use wasm_bindgen::prelude::*;
use web_sys::EventTarget;

use super::context::{self, get, global, put, with_global, Statics};
use super::platform::{log, new_id, DateClock, Fetch, LocalStore};
use crate::consent::{Consent, CONSENT_KEY, GRANTED};
use crate::identity::{Identity, Storage};
use crate::queue::{Clock, Config, Flushed, Queue, Sender, QUEUE_KEY};
use crate::wire::{rfc3339_ms, valid_id, valid_name};

type WebSender = Sender<Fetch, DateClock, LocalStore>;

/// Messages are short on purpose: each byte ships in the wasm. The npm types document the rules.
const PROPS_ERROR: &str = "nexus: properties must be a plain object";

#[wasm_bindgen]
extern "C" {
    /// `setInterval` itself rather than gloo-timers: the SDK never clears its one timer, and
    /// gloo's `Interval` brings a `clearInterval` import and drop glue along.
    #[wasm_bindgen(js_name = setInterval)]
    fn set_interval(handler: &JsValue, ms: u32);
}

/// Everything `init` sets up.
struct Sdk {
    sender: Rc<WebSender>,
    identity: RefCell<Identity>,
    consent: Cell<Consent>,
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
    let flush_at = int_option(&options, "flushAt", 20, 1, MAX_EVENTS_PER_BATCH as u32, "nexus: bad flushAt")?;
    let interval = int_option(&options, "flushIntervalMs", 5000, 1, 86_400_000, "nexus: bad flushIntervalMs")?;
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
        log("ready", &JsValue::from_str(&url));
    }
    // Takes in what earlier pages left unsent; the first tick sends it.
    let mut key = String::from(QUEUE_KEY);
    if let Some(tab) = tab {
        key.push(':');
        key.push_str(&tab);
    }
    let sender = Sender::new(Queue::new(config), Fetch::new(url), DateClock, LocalStore::open(), key);
    watch_page(&sender, interval, debug);
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
        debug,
    };
    if consent == Consent::Denied {
        sdk.deny(); // a privacy signal: also clears what earlier pages stored
    }
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
    sdk.record(EventType::Track, Some(&name), properties, None, at, None)
}

/// Records a page view of the current page (stored as `$pageview`). `referrer` is set by the
/// loader for the page views of single-page-app navigations: the previous SPA URL, in place of
/// `document.referrer`, which the history API leaves as it was at the load.
#[wasm_bindgen]
pub fn page(properties: JsValue, at: Option<f64>, referrer: JsValue) -> Result<(), Error> {
    let sdk = sdk()?;
    let properties = object_arg(properties, PROPS_ERROR)?;
    sdk.record(EventType::Page, None, properties, None, at, referrer.as_string())
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
    sdk.record(EventType::Identify, None, None, traits, at, None)
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
    flush_in_background(sender, sdk.debug);
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
    fn deny(&self) {
        self.consent.set(Consent::Denied);
        let sender = &self.sender;
        sender.sending.set(false);
        sender.storage.writes.set(false);
        sender.forget();
        self.identity.borrow_mut().forget(&sender.storage);
        sender.storage.remove(CONSENT_KEY);
    }

    fn record(
        &self,
        kind: EventType,
        name: Option<&str>,
        properties: Option<JsValue>,
        set: Option<JsValue>,
        at: Option<f64>,
        referrer: Option<String>,
    ) -> Result<(), Error> {
        if !self.consent.get().records() {
            return Ok(()); // denied: not an error of the caller's, just nothing to do
        }
        let now = DateClock.now_ms();
        let at = at.filter(|t| t.is_finite() && *t > 0.0).map_or(now, |t| t as u64);
        let json = self.build(kind, name, properties, set, at, referrer)?;
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
        referrer: Option<String>,
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
        let ctx = context::collect(&self.statics, referrer);
        // Events the queue gave up on since the last event (full queue, refused, retries used
        // up) are reported on this one as `context.dropped`, so the loss shows in the data, not
        // only in a console. In the context, not the properties: those are the caller's object.
        let dropped = self.sender.queue.borrow_mut().unreported_drops();
        if dropped > 0 {
            put(&ctx, "dropped", &JsValue::from(dropped));
        }
        put(&event, "context", &ctx);
        JSON::stringify(&event).map(String::from).map_err(|_| Error::new("nexus: properties must be JSON"))
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
        log("retry", &JsValue::from(report.requeued as u32));
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
    let tick = Closure::<dyn FnMut()>::new(move || flush_in_background(&timer, debug));
    set_interval(tick.as_ref(), interval);
    tick.forget();

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
