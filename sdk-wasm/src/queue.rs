//! The batching queue, its persistence and its send/retry rules, independent of the browser.
//!
//! Events enter as finished JSON text (built in the browser by `JSON.stringify`), so the queue
//! never parses or re-serialises them: an event keeps its `id` byte for byte across retries and
//! page loads, and the server's dedup on that id makes a resend harmless. The network, the clock
//! (with the randomness for jitter) and the storage are the [`Transport`], [`Clock`] and
//! [`Storage`] traits: native unit tests drive everything below with fakes.
//!
//! Delivery is at-least-once. Events stay in the queue, and in storage, until a request that
//! carried them is acknowledged with a 2xx. A beacon gets no answer, so beaconed events stay
//! stored too, and are forgotten only when a fetch taken *after* the beacon is acknowledged
//! (the collector was reachable then, and took the beacon first); a page that never sends
//! again leaves them for the next page load, which resends them. A duplicate is possible only
//! after an unacknowledged beacon, and the collector drops it by id.
//!
//! Sending is callback-based rather than `async`: a Rust executor in the wasm
//! (wasm-bindgen-futures) costs about 2 KiB gzipped, a tenth of the budget, for one loop.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;

use protocol::limits::{MAX_BATCH_BYTES, MAX_EVENTS_PER_BATCH};
use protocol::retry::should_retry;

pub use crate::identity::Storage;
use crate::wire::{push_padded, rfc3339_ms};

/// Largest body handed to `navigator.sendBeacon` or to a `keepalive` fetch. Browsers cap the
/// bytes of all such requests in flight at 64 KiB per page; the margin leaves room for others.
pub const BEACON_MAX_BYTES: usize = 60 * 1024;

/// `localStorage` key of the persisted queue, or rather the start of its keys: the queue is
/// stored in chunks, `<key>.<n>` (see [`Sender::persist_pending`]), each the JSON of its events,
/// one per line (`JSON.stringify` never writes a raw newline, so a line is always one whole
/// event).
pub const QUEUE_KEY: &str = "nexus_queue";

/// Largest stored chunk of the queue, in bytes of JSON. Storing costs what is written, and
/// `localStorage` can only write whole values: one value for the whole queue made a burst of
/// n events cost n² bytes of writes (the queue was rewritten after every answer). In chunks,
/// an event is written about once: a chunk is rewritten only while it is the newest and still
/// growing, or when some, not all, of its events are settled.
pub const CHUNK_BYTES: usize = 64 * 1024;

/// Longest wait between retries, and the most of a `Retry-After` the SDK honours (a larger one
/// is more likely a misconfiguration than a plan, and the events would wait in storage anyway).
pub const MAX_BACKOFF_MS: u64 = 5 * 60 * 1000;

/// What became of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The server answered with this HTTP status.
    Status(u16),
    /// A retryable status (429, 503, ...) with `Retry-After`, in milliseconds.
    Later(u64),
    /// No answer: offline, DNS, CORS, aborted. Always worth retrying, and never counted as an
    /// attempt: an offline period may last for days, and the queue's bounds cap what waits.
    Network,
}

impl Outcome {
    fn delivered(self) -> bool {
        matches!(self, Outcome::Status(200..=299))
    }

    fn retryable(self) -> bool {
        match self {
            Outcome::Status(status) => should_retry(status),
            Outcome::Later(_) | Outcome::Network => true,
        }
    }
}

/// Sends batch bodies (`{"sent_at":..,"batch":[..]}`) to the collector.
pub trait Transport {
    /// Starts POSTing one body; `done` gets the outcome exactly once, now or later.
    fn post(&self, body: &str, done: Box<dyn FnOnce(Outcome)>);
    /// Hands one body to the browser to send even if the page goes away (`sendBeacon`).
    /// `false` means the browser refused it (quota) and the events are still ours.
    fn beacon(&self, body: &str) -> bool;
}

/// The sources of nondeterminism the queue needs: time, and chance for retry jitter.
pub trait Clock {
    /// Now, in Unix milliseconds.
    fn now_ms(&self) -> u64;
    /// A uniformly random `u32`.
    fn random(&self) -> u32;
}

/// The delay before retry number `failures` (1 for the first): "full jitter", uniform in
/// `0..=min(cap, base * 2^(failures-1))`, with `random` as the uniform draw.
///
/// Full jitter rather than a fixed doubling: when a collector comes back after an outage, the
/// pages that waited retry spread over the whole window instead of all at once.
pub fn backoff_ms(failures: u32, base: u64, cap: u64, random: u32) -> u64 {
    // At most 2^31 ms (24 days), so `ceiling * (random + 1)` stays below 2^63: no u128
    // arithmetic (a compiler-builtins routine) in the wasm.
    let ceiling = base.saturating_mul(1 << failures.saturating_sub(1).min(31)).min(cap).min(1 << 31);
    (ceiling * (u64::from(random) + 1)) >> 32
}

/// Why the queue gave up on events. A drop is an outcome, counted, never an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The queue was full (count or bytes); the oldest event made room for a new one.
    QueueFull,
    /// The server refused the batch with a 4xx other than 408/429: resending cannot help.
    Refused,
    /// Still failing after [`Config::max_attempts`] retryable answers.
    Exhausted,
}

/// Events dropped so far, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Drops {
    /// See [`DropReason::QueueFull`].
    pub queue_full: u32,
    /// See [`DropReason::Refused`].
    pub refused: u32,
    /// See [`DropReason::Exhausted`].
    pub exhausted: u32,
}

impl Drops {
    fn add(&mut self, reason: DropReason, n: u32) {
        let slot = match reason {
            DropReason::QueueFull => &mut self.queue_full,
            DropReason::Refused => &mut self.refused,
            DropReason::Exhausted => &mut self.exhausted,
        };
        *slot = slot.saturating_add(n);
    }

    /// All drops, whatever the reason.
    pub fn total(&self) -> u32 {
        self.queue_full.saturating_add(self.refused).saturating_add(self.exhausted)
    }
}

/// Queue settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Send as soon as this many events wait.
    pub flush_at: usize,
    /// Most events kept; beyond it the oldest are dropped.
    pub max_queued: usize,
    /// Most bytes of event JSON kept; beyond it the oldest are dropped. Large enough for a
    /// burst of 10,000 events to wait whole while its batches go out one at a time (an event
    /// dropped while in flight would also let a second request start). The stored queue is the
    /// whole queue: a write `localStorage` refuses for its quota leaves the previous one stored
    /// (a bound of its own for the stored part costs wasm bytes the size budget has not got).
    pub max_bytes: usize,
    /// Answers of a retryable status an event may get before it is dropped.
    pub max_attempts: u8,
    /// The first retry waits up to this long; each failure in a row doubles the window, up to
    /// [`MAX_BACKOFF_MS`]. Until then nothing is sent, not even by an explicit flush.
    pub retry_base_ms: u64,
    /// Bytes of event JSON per stored chunk (see [`CHUNK_BYTES`]).
    pub chunk_bytes: usize,
}

impl Default for Config {
    fn default() -> Config {
        // Room for a burst of 10,000 events, whole, while its batches go out one at a time.
        Config {
            flush_at: 20,
            max_queued: 20_000,
            max_bytes: 8 << 20,
            max_attempts: 5,
            retry_base_ms: 5000,
            chunk_bytes: CHUNK_BYTES,
        }
    }
}

/// One queued event. `flight` is 0 while it waits, else the number of the batch that carries
/// it; `beaconed` marks a batch handed to `sendBeacon`, which never answers; `chunk` is the
/// stored chunk it belongs to (never decreasing along the queue).
#[derive(Debug)]
struct Pending {
    json: String,
    attempts: u8,
    flight: u32,
    beaconed: bool,
    chunk: u32,
}

/// Events taken out of the queue for one request; their fate comes back through
/// [`Queue::settle`]. They stay in the queue (and in storage) meanwhile, marked as in flight.
#[derive(Debug)]
pub struct Batch {
    /// The request body.
    pub body: String,
    flight: u32,
    len: usize,
}

impl Batch {
    /// Number of events in the batch.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the batch has no events (never the case for one made by [`Queue::take_batch`]).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// What [`Queue::settle`] did with a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// The server took it (per-event rejections are final and not retried).
    Delivered(usize),
    /// Back to waiting, in place, for a later attempt; some may have been dropped.
    Requeued(usize),
    /// Given up on.
    Dropped(usize, DropReason),
}

/// The queue of serialised events, waiting or in flight, in the order they were tracked.
#[derive(Debug)]
pub struct Queue {
    config: Config,
    events: VecDeque<Pending>,
    bytes: usize,
    next_flight: u32,
    failures: u32,
    retry_at: u64,
    delivered: u32,
    drops: Drops,
    reported: u32,
    /// The chunk new events go to, and its bytes so far.
    chunk: u32,
    chunk_bytes: usize,
    /// Chunks whose stored copy no longer matches the queue (events added or removed).
    touched: Vec<u32>,
}

impl Queue {
    /// An empty queue.
    pub fn new(config: Config) -> Queue {
        Queue {
            config,
            events: VecDeque::new(),
            bytes: 0,
            next_flight: 1,
            failures: 0,
            retry_at: 0,
            delivered: 0,
            drops: Drops::default(),
            reported: 0,
            chunk: 0,
            chunk_bytes: 0,
            touched: Vec::new(),
        }
    }

    /// Notes that chunk `chunk` changed. Neighbouring events share chunks, so checking the last
    /// one keeps the list short.
    fn touch(&mut self, chunk: u32) {
        if self.touched.last() != Some(&chunk) {
            self.touched.push(chunk);
        }
    }

    /// Marks every chunk as changed (consent granted: nothing was stored yet).
    pub fn touch_all(&mut self) {
        let chunks: Vec<u32> = self.events.iter().map(|e| e.chunk).collect();
        for chunk in chunks {
            self.touch(chunk);
        }
    }

    /// The chunks changed since the last call, each with the JSON lines of its events now
    /// (empty: nothing left, remove it), in one walk of the queue.
    ///
    /// Linear searches rather than a sort and a binary search: the list is short (a few chunks
    /// per task or answer), and the standard sort is 2 KiB of wasm.
    pub fn take_touched(&mut self) -> Vec<(u32, String)> {
        let mut out: Vec<(u32, String)> = Vec::new();
        for chunk in std::mem::take(&mut self.touched) {
            if !out.iter().any(|(c, _)| *c == chunk) {
                out.push((chunk, String::new()));
            }
        }
        for event in &self.events {
            if let Some((_, text)) = out.iter_mut().find(|(c, _)| *c == event.chunk) {
                if !text.is_empty() {
                    text.push('\n');
                }
                text.push_str(&event.json);
            }
        }
        out
    }

    /// Adds stored events (a chunk an earlier page left: JSON lines), all waiting: in-flight and
    /// beaconed ones included, since their answer never came. Lines that are not a JSON object
    /// (a damaged value) are skipped: the server would refuse them.
    pub fn load(&mut self, saved: &str) {
        // By bytes and `get`, not `str::split` or indexing: their panic paths bring `core::fmt`
        // into the wasm (see `wire::parse_u64`). `\n` is ASCII, so every cut is a char boundary.
        let mut start = 0;
        for (i, &b) in saved.as_bytes().iter().chain(b"\n").enumerate() {
            if b == b'\n' {
                if let Some(line) = saved.get(start..i) {
                    let bytes = line.as_bytes();
                    if bytes.first() == Some(&b'{') && bytes.last() == Some(&b'}') {
                        self.add(line.to_owned());
                    }
                }
                start = i + 1;
            }
        }
    }

    /// Events waiting to be sent (not counting those in flight or beaconed).
    pub fn len(&self) -> usize {
        self.events.iter().filter(|e| e.flight == 0).count()
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Events kept in all, in flight and beaconed included.
    pub fn kept(&self) -> usize {
        self.events.len()
    }

    /// True when a send may start at `now`: something waits and no retry delay is running.
    pub fn due(&self, now: u64) -> bool {
        now >= self.retry_at && !self.is_empty()
    }

    /// Forgets every event (consent withdrawn).
    pub fn clear(&mut self) {
        self.touch_all();
        self.events.clear();
        self.bytes = 0;
    }

    /// Ends the retry delay (the browser says it is back online).
    pub fn retry_now(&mut self) {
        self.retry_at = 0;
    }

    /// Events the server took so far (beacons count when the browser accepted them).
    pub fn delivered(&self) -> u32 {
        self.delivered
    }

    /// Events dropped so far, by reason.
    pub fn drops(&self) -> Drops {
        self.drops
    }

    /// Drops since the previous call: what the next event reports as `$dropped`.
    pub fn unreported_drops(&mut self) -> u32 {
        let total = self.drops.total();
        let new = total.saturating_sub(self.reported);
        self.reported = total;
        new
    }

    /// Adds one event; `true` when a flush is due (the queue reached `flush_at`, no retry
    /// delay is running, and no request is out: the oldest event is not in flight).
    ///
    /// Not while a request is out: its answer sends what waits, in batches as large as the
    /// protocol takes. Starting a request per `flush_at` events made a burst of 10,000 calls
    /// start hundreds at once, which the browser refused. The cheap tests come first: during a
    /// burst the walk of `len` is skipped.
    pub fn push(&mut self, json: String, now: u64) -> bool {
        self.add(json);
        now >= self.retry_at && self.events.front().is_some_and(|e| e.flight == 0) && self.len() >= self.config.flush_at
    }

    fn add(&mut self, json: String) {
        if self.chunk_bytes > 0 && self.chunk_bytes + json.len() > self.config.chunk_bytes {
            self.chunk += 1;
            self.chunk_bytes = 0;
        }
        self.chunk_bytes += json.len();
        self.bytes += json.len();
        let chunk = self.chunk;
        self.touch(chunk);
        self.events.push_back(Pending { json, attempts: 0, flight: 0, beaconed: false, chunk });
        // Oldest first, in flight or not: a request's answer for a dropped event finds nothing.
        while self.events.len() > self.config.max_queued || self.bytes > self.config.max_bytes {
            let Some(old) = self.events.pop_front() else { break };
            self.bytes -= old.json.len();
            self.touch(old.chunk);
            self.drops.add(DropReason::QueueFull, 1);
        }
    }

    /// Removes the events `gone` picks; returns how many. `dyn`, so the three callers share
    /// one copy of the loop in the wasm.
    ///
    /// Rebuilds the deque rather than calling `VecDeque::retain`, whose index assertions
    /// bring panic formatting into the wasm; the queue is small and this runs once per answer.
    fn remove(&mut self, gone: &dyn Fn(&Pending) -> bool) -> usize {
        let mut removed = 0;
        for event in std::mem::take(&mut self.events) {
            if gone(&event) {
                self.bytes -= event.json.len();
                self.touch(event.chunk);
                removed += 1;
            } else {
                self.events.push_back(event);
            }
        }
        removed
    }

    /// Takes the oldest waiting events that fit in one body of at most `max_bytes` (and at most
    /// [`MAX_EVENTS_PER_BATCH`] events); `None` when nothing waits. A single event larger than
    /// `max_bytes` still goes alone: the server, not the queue, judges its size.
    pub fn take_batch(&mut self, max_bytes: usize, now: u64) -> Option<Batch> {
        let flight = self.next_flight;
        let mut body = String::from("{\"sent_at\":\"");
        body.push_str(&rfc3339_ms(now));
        body.push_str("\",\"batch\":[");
        let mut len = 0;
        for event in self.events.iter_mut().filter(|e| e.flight == 0) {
            // + the comma before it and the closing `]}`
            let size = body.len() + event.json.len() + 3;
            if len == MAX_EVENTS_PER_BATCH || (len > 0 && size > max_bytes) {
                break;
            }
            if len > 0 {
                body.push(',');
            }
            body.push_str(&event.json);
            event.flight = flight;
            len += 1;
        }
        if len == 0 {
            return None;
        }
        body.push_str("]}");
        self.next_flight += 1;
        Some(Batch { body, flight, len })
    }

    /// Applies the outcome of sending `batch`: delivered events are forgotten (with the
    /// beaconed ones older than this batch), refused ones dropped, retryable ones set waiting
    /// again in place (same JSON, same ids) unless they used up their attempts, and the next
    /// send waits for the backoff (`random` draws its jitter) or the server's `Retry-After`.
    pub fn settle(&mut self, batch: Batch, outcome: Outcome, now: u64, random: u32) -> Settled {
        let flight = batch.flight;
        let n = batch.len;
        if outcome.delivered() {
            self.failures = 0;
            self.remove(&|e| e.flight == flight || (e.beaconed && e.flight < flight));
            self.delivered = self.delivered.saturating_add(n as u32);
            return Settled::Delivered(n);
        }
        if !outcome.retryable() {
            let gone = self.remove(&|e| e.flight == flight);
            self.drops.add(DropReason::Refused, gone as u32);
            return Settled::Dropped(n, DropReason::Refused);
        }
        self.failures = self.failures.saturating_add(1);
        let wait = backoff_ms(self.failures, self.config.retry_base_ms, MAX_BACKOFF_MS, random);
        let asked = if let Outcome::Later(ms) = outcome { ms.min(MAX_BACKOFF_MS) } else { 0 };
        self.retry_at = now.saturating_add(wait.max(asked));
        let counts = outcome != Outcome::Network;
        let max_attempts = self.config.max_attempts;
        for event in self.events.iter_mut().filter(|e| e.flight == flight) {
            event.flight = 0;
            event.attempts = event.attempts.saturating_add(u8::from(counts));
        }
        let exhausted = self.remove(&|e| e.flight == 0 && e.attempts >= max_attempts);
        self.drops.add(DropReason::Exhausted, exhausted as u32);
        if exhausted == n {
            Settled::Dropped(n, DropReason::Exhausted)
        } else {
            Settled::Requeued(n - exhausted)
        }
    }

    /// Sets a batch waiting again untouched (a beacon the browser refused was never an attempt).
    pub fn unsend(&mut self, batch: Batch) {
        for event in self.events.iter_mut().filter(|e| e.flight == batch.flight) {
            event.flight = 0;
        }
    }

    /// Marks a batch the browser took as a beacon: kept, but not sent again by this page.
    fn beaconed(&mut self, batch: &Batch) {
        for event in self.events.iter_mut().filter(|e| e.flight == batch.flight) {
            event.beaconed = true;
        }
        self.delivered = self.delivered.saturating_add(batch.len as u32);
    }
}

/// What one [`Sender::flush`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flushed {
    /// Requests made.
    pub requests: usize,
    /// Events the server took.
    pub delivered: usize,
    /// Events put back for a later attempt.
    pub requeued: usize,
    /// Events given up on.
    pub dropped: usize,
}

/// What [`Sender::push`] asks of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pushed {
    /// A flush is due (`flush_at` reached and no retry delay running).
    pub due: bool,
}

/// The queue with its transport, clock and storage, shared (`Rc`) by everything that may
/// send: `track`, the page's timer and listeners, and the callbacks of requests in flight.
#[derive(Debug)]
pub struct Sender<T, C, S> {
    /// The events kept. Every borrow ends before any call out to the transport or to user
    /// code, so borrows never overlap.
    pub queue: RefCell<Queue>,
    /// How batches leave.
    pub transport: T,
    /// Time for `sent_at` and retry delays.
    pub clock: C,
    /// Where the queue survives a reload.
    pub storage: S,
    /// False while consent is pending or denied: nothing is sent, not even beacons.
    pub sending: Cell<bool>,
    /// The storage key of this sender's queue, before `.<chunk>`: [`QUEUE_KEY`], or
    /// `nexus_queue:<tab>` when each tab keeps its own (see npm/src/index.js: a tab never sends
    /// another live tab's events).
    key: String,
}

impl<T: Transport + 'static, C: Clock + 'static, S: Storage + 'static> Sender<T, C, S> {
    /// A sender for `queue`, stored under `key`. What earlier pages left is not read here:
    /// the loader hands it over with [`Sender::adopt`] (npm/src/index.js finds every chunk).
    pub fn new(queue: Queue, transport: T, clock: C, storage: S, key: String) -> Rc<Self> {
        Rc::new(Sender { queue: RefCell::new(queue), transport, clock, storage, sending: Cell::new(true), key })
    }

    /// The storage key of chunk `chunk`: `<key>.<chunk>`.
    pub fn chunk_key(&self, chunk: u32) -> String {
        let mut key = String::with_capacity(self.key.len() + 6);
        key.push_str(&self.key);
        key.push('.');
        push_padded(&mut key, u64::from(chunk), 1);
        key
    }

    /// Writes every chunk (consent granted: what was held in memory is stored now).
    pub fn persist(&self) {
        self.queue.borrow_mut().touch_all();
        self.persist_pending();
    }

    /// Writes the chunks that changed since the last write, and removes those left empty.
    /// Called after the events of one task (the loader's `run`), after every answer, and
    /// before beacons; not only at unload: a tab that crashes or is killed gets no unload event.
    pub fn persist_pending(&self) {
        let touched = self.queue.borrow_mut().take_touched();
        for (chunk, text) in touched {
            let key = self.chunk_key(chunk);
            if text.is_empty() {
                self.storage.remove(&key);
            } else {
                self.storage.set(&key, &text);
            }
        }
    }

    /// Forgets every event, in memory and in storage (consent withdrawn).
    pub fn forget(&self) {
        self.queue.borrow_mut().clear();
        self.persist_pending();
    }

    /// Takes over stored events another tab or page left (the JSON lines of a chunk, or of a
    /// whole queue as older versions stored it) and stores them as ours. The caller removes the
    /// other key only after this: a crash in between duplicates, never loses.
    pub fn adopt(&self, saved: &str) {
        self.queue.borrow_mut().load(saved);
        self.persist_pending();
    }

    /// Queues one event; the queue is stored later, by [`Sender::persist_pending`]: once for
    /// all the events the loader hands over together (see `run` in web/api.rs).
    pub fn push(&self, json: String) -> Pushed {
        Pushed { due: self.queue.borrow_mut().push(json, self.clock.now_ms()) }
    }

    /// Sends everything waiting, one batch at a time, until nothing waits or a send fails in
    /// a retryable way (then the events wait for the backoff: no tight retry loop), and then
    /// calls `done`. Does nothing while a retry delay runs.
    ///
    /// The queue is borrowed only while a batch is taken or settled, so `track` can add events
    /// while a request is in flight, and two flushes running at once never send the same
    /// event: each takes its own.
    pub fn flush(self: &Rc<Self>, done: impl FnOnce(Flushed) + 'static) {
        self.send_next(Flushed::default(), Box::new(done));
    }

    fn send_next(self: &Rc<Self>, mut report: Flushed, done: Box<dyn FnOnce(Flushed)>) {
        let now = self.clock.now_ms();
        let batch = {
            let mut queue = self.queue.borrow_mut();
            if self.sending.get() && queue.due(now) {
                queue.take_batch(MAX_BATCH_BYTES, now)
            } else {
                None
            }
        };
        let Some(mut batch) = batch else { return done(report) };
        report.requests += 1;
        let body = std::mem::take(&mut batch.body);
        let this = Rc::clone(self);
        let on_answer = move |outcome| {
            let settled = this.queue.borrow_mut().settle(batch, outcome, this.clock.now_ms(), this.clock.random());
            this.persist_pending();
            match settled {
                Settled::Delivered(n) => report.delivered += n,
                // A refused batch says nothing about the next one: go on.
                Settled::Dropped(n, DropReason::Refused) => report.dropped += n,
                Settled::Dropped(n, _) => {
                    report.dropped += n;
                    return done(report);
                }
                Settled::Requeued(n) => {
                    report.requeued += n;
                    return done(report);
                }
            }
            this.send_next(report, done);
        };
        self.transport.post(&body, Box::new(on_answer));
    }

    /// Hands everything waiting to the browser as beacons, for a page that may be going away.
    /// Stops at the first beacon the browser refuses; those events stay waiting. Beaconed
    /// events stay stored (see the module comment), and events not written yet are written
    /// first: a closing page may run nothing after this.
    pub fn flush_beacon(&self) -> usize {
        self.persist_pending();
        let mut sent = 0;
        while self.sending.get() {
            let batch = self.queue.borrow_mut().take_batch(BEACON_MAX_BYTES, self.clock.now_ms());
            let Some(batch) = batch else { break };
            if self.transport.beacon(&batch.body) {
                sent += batch.len();
                self.queue.borrow_mut().beaconed(&batch);
            } else {
                self.queue.borrow_mut().unsend(batch);
                break;
            }
        }
        sent
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::collections::{HashMap, HashSet};

    use protocol::envelope::parse_batch;

    /// Time set by the test, and a fixed "random" draw (the largest by default: the whole
    /// backoff window, so a test that waits that long is never flaky).
    struct FakeClock {
        now: Cell<u64>,
        random: Cell<u32>,
    }

    impl Clock for FakeClock {
        fn now_ms(&self) -> u64 {
            self.now.get()
        }
        fn random(&self) -> u32 {
            self.random.get()
        }
    }

    /// `localStorage` as a shared map: two senders over one map are two page loads.
    #[derive(Clone, Default)]
    struct MemStorage(Rc<RefCell<HashMap<String, String>>>);

    impl Storage for MemStorage {
        fn get(&self, key: &str) -> Option<String> {
            self.0.borrow().get(key).cloned()
        }
        fn set(&self, key: &str, value: &str) {
            self.0.borrow_mut().insert(key.to_owned(), value.to_owned());
        }
        fn remove(&self, key: &str) {
            self.0.borrow_mut().remove(key);
        }
    }

    type Done = Box<dyn FnOnce(Outcome)>;

    /// Answers each post with the next scripted outcome (200 once the script is used up), at
    /// once, or holds the request until the test answers it (`hold`). Records every body.
    #[derive(Default)]
    struct FakeTransport {
        script: RefCell<VecDeque<Outcome>>,
        posts: RefCell<Vec<(String, Outcome)>>,
        hold: Cell<bool>,
        held: RefCell<Vec<(String, Done)>>,
        beacon_quota: Cell<usize>,
        beacons: RefCell<Vec<String>>,
    }

    impl FakeTransport {
        fn scripted(outcomes: &[Outcome]) -> FakeTransport {
            FakeTransport { script: RefCell::new(outcomes.iter().copied().collect()), ..FakeTransport::default() }
        }

        /// Ids of every event the server accepted (2xx), in order, with repeats.
        fn accepted_ids(&self) -> Vec<String> {
            self.posts.borrow().iter().filter(|(_, o)| o.delivered()).flat_map(|(b, _)| ids(b)).collect()
        }
    }

    impl Transport for FakeTransport {
        fn post(&self, body: &str, done: Done) {
            if self.hold.get() {
                self.held.borrow_mut().push((body.to_owned(), done));
                return;
            }
            let outcome = self.script.borrow_mut().pop_front().unwrap_or(Outcome::Status(200));
            self.posts.borrow_mut().push((body.to_owned(), outcome));
            done(outcome);
        }

        fn beacon(&self, body: &str) -> bool {
            if self.beacon_quota.get() == 0 {
                return false;
            }
            self.beacon_quota.set(self.beacon_quota.get() - 1);
            self.beacons.borrow_mut().push(body.to_owned());
            true
        }
    }

    type TestSender = Rc<Sender<FakeTransport, FakeClock, MemStorage>>;

    const T0: u64 = 1_796_119_200_000;

    fn sender(config: Config, transport: FakeTransport) -> TestSender {
        sender_on(config, transport, MemStorage::default())
    }

    thread_local! {
        static PAGES: Cell<u32> = const { Cell::new(0) };
    }

    /// The order of stored queue keys: by page (`nexus_queue:<page>`), then by chunk number.
    fn key_order(key: &str) -> (u32, u32) {
        let (queue, chunk) = key.split_once('.').unwrap_or((key, "0"));
        let page = queue.trim_start_matches(|c: char| !c.is_ascii_digit());
        (page.parse().unwrap_or(0), chunk.parse().unwrap())
    }

    /// The stored queue keys, in [`key_order`].
    fn queue_keys(storage: &MemStorage) -> Vec<String> {
        let mut keys: Vec<String> = storage.0.borrow().keys().filter(|k| k.starts_with(QUEUE_KEY)).cloned().collect();
        keys.sort_by_key(|k| key_order(k));
        keys
    }

    /// A sender over `storage`: a page load, with its own key, that takes over what earlier
    /// ones left, as the loader does (npm/src/index.js: adopt each chunk, then remove it).
    fn sender_on(config: Config, transport: FakeTransport, storage: MemStorage) -> TestSender {
        let clock = FakeClock { now: Cell::new(T0), random: Cell::new(u32::MAX) };
        let page = PAGES.with(|p| p.replace(p.get() + 1));
        let s = Sender::new(Queue::new(config), transport, clock, storage.clone(), format!("{QUEUE_KEY}:{page}"));
        for key in queue_keys(&storage) {
            s.adopt(&storage.get(&key).unwrap());
            storage.remove(&key);
        }
        s
    }

    fn advance(s: &TestSender, ms: u64) {
        s.clock.now.set(s.clock.now.get() + ms);
    }

    /// Runs a flush whose requests the fake answers at once; returns its report.
    fn flush_now(s: &TestSender) -> Flushed {
        let out = Rc::new(Cell::new(None));
        let slot = Rc::clone(&out);
        s.flush(move |report| slot.set(Some(report)));
        out.get().expect("the fake transport answers synchronously")
    }

    /// Pushes one event and stores it, as the end of the web layer's `run` does.
    fn push(s: &TestSender, n: usize) -> bool {
        let pushed = s.push(event(n));
        s.persist_pending();
        pushed.due
    }

    /// A valid event as the browser half would build it, with a recognisable id.
    fn event(n: usize) -> String {
        format!(
            r#"{{"id":"0193a1b2-c3d4-7e5f-8a9b-{n:012x}","type":"track","name":"e{n}","anonymous_id":"anon","timestamp":"2026-12-01T10:00:00.000Z","properties":{{"n":{n}}}}}"#
        )
    }

    /// The event ids of a body, checked against the server's own envelope parser and validator.
    fn ids(body: &str) -> Vec<String> {
        let parsed = parse_batch(body.as_bytes()).unwrap();
        assert!(parsed.sent_at.is_some(), "sent_at must be set");
        parsed.events.into_iter().map(|e| e.unwrap().id.to_string()).collect()
    }

    fn expected_ids(range: std::ops::Range<usize>) -> Vec<String> {
        range.map(|n| format!("0193a1b2-c3d4-7e5f-8a9b-{n:012x}")).collect()
    }

    /// Ids of the events in the stored queue, in order.
    /// Ids of every stored event, chunk after chunk.
    fn stored_ids(storage: &MemStorage) -> Vec<String> {
        let chunks: Vec<String> = queue_keys(storage).iter().map(|k| storage.get(k).unwrap()).collect();
        assert!(chunks.iter().all(|c| !c.is_empty()), "an empty chunk is removed, not stored");
        // Batches of at most 1000 lines: the protocol's parser checks each (and its limits).
        let lines: Vec<&str> = chunks.iter().flat_map(|c| c.lines()).collect();
        lines
            .chunks(1000)
            .flat_map(|part| ids(&format!(r#"{{"sent_at":"2026-12-01T10:00:00.000Z","batch":[{}]}}"#, part.join(","))))
            .collect()
    }

    const S503: Outcome = Outcome::Status(503);
    const S200: Outcome = Outcome::Status(200);
    const HOUR: u64 = 3_600_000;

    /// One row of [`retry_table`]: (script, flushes, delivered requests, accepted events,
    /// dropped by reason, left queued).
    type RetryCase = (&'static [Outcome], usize, usize, usize, Drops, usize);

    /// Table: a script of outcomes for successive flushes an hour apart (past any backoff),
    /// and what must come of 5 events.
    #[test]
    fn retry_table() {
        use Outcome::*;
        let cases: &[RetryCase] = &[
            (&[S200], 1, 1, 5, Drops::default(), 0),
            (&[S503], 1, 0, 0, Drops::default(), 5),
            (&[S503], 2, 1, 5, Drops::default(), 0),
            (&[Network, Status(429), Status(500), Status(408)], 5, 1, 5, Drops::default(), 0),
            (&[Later(1000), Later(u64::MAX)], 3, 1, 5, Drops::default(), 0),
            (&[Status(400)], 1, 0, 0, Drops { refused: 5, ..Drops::default() }, 0),
            (&[Status(401)], 3, 0, 0, Drops { refused: 5, ..Drops::default() }, 0),
            (&[Status(413)], 1, 0, 0, Drops { refused: 5, ..Drops::default() }, 0),
            (&[S503, S503, S503, S503, S503], 6, 0, 0, Drops { exhausted: 5, ..Drops::default() }, 0),
            (&[S503, S503, S503, S503], 5, 1, 5, Drops::default(), 0),
            // Network errors are not attempts: an offline week loses nothing.
            (&[Network; 12], 13, 1, 5, Drops::default(), 0),
        ];
        for (i, &(script, flushes, ok_requests, accepted, drops, left)) in cases.iter().enumerate() {
            let s = sender(Config { flush_at: 100, ..Config::default() }, FakeTransport::scripted(script));
            for n in 0..5 {
                push(&s, n);
            }
            for _ in 0..flushes {
                flush_now(&s);
                advance(&s, HOUR);
            }
            let posts = s.transport.posts.borrow();
            assert_eq!(posts.iter().filter(|(_, o)| o.delivered()).count(), ok_requests, "case {i}");
            assert_eq!(s.transport.accepted_ids().len(), accepted, "case {i}");
            assert_eq!(s.queue.borrow().drops(), drops, "case {i}");
            assert_eq!(s.queue.borrow().len(), left, "case {i}");
            assert_eq!(stored_ids(&s.storage).len(), left, "case {i}: storage follows the queue");
            // Every attempt carried the same events with the same ids, in order.
            for (body, _) in posts.iter() {
                assert_eq!(ids(body), expected_ids(0..5), "case {i}");
            }
        }
    }

    #[test]
    fn backoff_table() {
        let check = |failures: u32, base: u64, cap: u64, random: u32, expected: u64| {
            assert_eq!(backoff_ms(failures, base, cap, random), expected, "{failures} {base} {cap} {random}");
        };
        const MAX: u32 = u32::MAX;
        // The window doubles per failure in a row, from `base`, up to `cap`.
        check(1, 1000, 60_000, MAX, 1000);
        check(2, 1000, 60_000, MAX, 2000);
        check(3, 1000, 60_000, MAX, 4000);
        check(6, 1000, 60_000, MAX, 32_000);
        check(7, 1000, 60_000, MAX, 60_000);
        check(1000, 1000, 60_000, MAX, 60_000); // no overflow however long the outage
        check(0, 1000, 60_000, MAX, 1000); // called before any failure: the first window
                                           // Full jitter: anywhere in the window, uniformly.
        check(3, 1000, 60_000, 0, 0);
        check(3, 1000, 60_000, MAX / 2, 2000);
        check(3, 1000, 60_000, MAX / 4, 1000);
        check(1, u64::MAX, u64::MAX, MAX, 1 << 31); // absurd settings are clamped, not overflowed
    }

    #[test]
    fn retries_wait_for_the_backoff_and_for_retry_after() {
        let s = sender(
            Config { flush_at: 100, retry_base_ms: 1000, ..Config::default() },
            FakeTransport::scripted(&[S503, S503, Outcome::Later(30_000), S503]),
        );
        s.clock.random.set(u32::MAX / 2); // half of each window
        push(&s, 0);
        // (ms since the previous flush attempt, requests the flush made)
        let steps: &[(u64, usize)] = &[
            (0, 1),      // 503: window 1000, waits 500
            (499, 0),    // too early
            (1, 1),      // 503: window 2000, waits 1000
            (999, 0),    //
            (1, 1),      // Retry-After 30 s beats the 2000 ms jitter
            (29_999, 0), //
            (1, 1),      // 503, fourth failure in a row: window 8000, waits 4000
            (3_999, 0),  //
            (1, 1),      // 200
        ];
        for (i, &(wait, requests)) in steps.iter().enumerate() {
            advance(&s, wait);
            assert_eq!(flush_now(&s).requests, requests, "step {i}");
        }
        assert_eq!(s.transport.accepted_ids(), expected_ids(0..1));
        // Success resets the schedule: the next failure waits one base window again.
        s.transport.script.borrow_mut().push_back(S503);
        push(&s, 1);
        assert_eq!(flush_now(&s).requests, 1);
        advance(&s, 500);
        assert_eq!(flush_now(&s).requests, 1);
        // Reaching flush_at does not send during a delay either.
        let s = sender(Config { flush_at: 2, ..Config::default() }, FakeTransport::scripted(&[S503]));
        assert!(!push(&s, 0));
        assert!(push(&s, 1));
        flush_now(&s);
        assert!(!push(&s, 2), "retry delay running");
        // Back online: the delay ends at once.
        s.queue.borrow_mut().retry_now();
        assert!(s.queue.borrow().due(s.clock.now_ms()));
    }

    #[test]
    fn a_refused_batch_is_never_sent_again() {
        let s = sender(Config { flush_at: 100, ..Config::default() }, FakeTransport::scripted(&[Outcome::Status(400)]));
        for n in 0..3 {
            push(&s, n);
        }
        assert_eq!(flush_now(&s), Flushed { requests: 1, delivered: 0, requeued: 0, dropped: 3 });
        assert_eq!(flush_now(&s), Flushed::default());
        assert_eq!(s.transport.posts.borrow().len(), 1);
        assert_eq!(s.queue.borrow_mut().unreported_drops(), 3);
        assert_eq!(s.queue.borrow_mut().unreported_drops(), 0, "reported once");
    }

    #[test]
    fn failure_then_success_loses_and_duplicates_nothing() {
        let s = sender(Config { flush_at: 3, ..Config::default() }, FakeTransport::scripted(&[S200, S503, S200]));
        let mut due = Vec::new();
        for n in 0..9 {
            due.push(push(&s, n));
            if due[n] {
                flush_now(&s);
            }
        }
        // Batches of 3: the first goes, the second fails and waits in place; count-triggered
        // flushes pause for the retry delay, so events 6..9 join the queue behind the failed ones.
        assert_eq!(due, [false, false, true, false, false, true, false, false, false]);
        assert_eq!(s.queue.borrow().len(), 6);
        advance(&s, Config::default().retry_base_ms);
        assert!(push(&s, 9), "the retry delay is over: reaching flush_at sends again");
        let report = flush_now(&s);
        assert_eq!(report, Flushed { requests: 1, delivered: 7, requeued: 0, dropped: 0 });
        let accepted = s.transport.accepted_ids();
        assert_eq!(accepted, expected_ids(0..10));
        assert_eq!(accepted.iter().collect::<HashSet<_>>().len(), 10);
        // The failed request and its retry carried the same ids.
        let posts = s.transport.posts.borrow();
        assert_eq!(ids(&posts[1].0), expected_ids(3..6));
        assert_eq!(ids(&posts[2].0)[..3], expected_ids(3..6)[..]);
    }

    #[test]
    fn events_tracked_while_a_request_is_in_flight() {
        let s = sender(Config { flush_at: 100, ..Config::default() }, FakeTransport::default());
        s.transport.hold.set(true);
        push(&s, 0);
        push(&s, 1);
        let report = Rc::new(Cell::new(None));
        let slot = Rc::clone(&report);
        s.flush(move |r| slot.set(Some(r)));
        assert_eq!(report.get(), None, "still waiting for the answer");
        push(&s, 2); // tracked while the request is in flight
        assert_eq!(s.queue.borrow().len(), 1);
        assert_eq!(stored_ids(&s.storage), expected_ids(0..3), "in-flight events stay stored");
        let (body, done) = s.transport.held.borrow_mut().remove(0);
        assert_eq!(ids(&body), expected_ids(0..2));
        done(S503);
        assert_eq!(report.get(), Some(Flushed { requests: 1, delivered: 0, requeued: 2, dropped: 0 }));
        // The failed events wait in front of the newer one, in their order.
        s.transport.hold.set(false);
        advance(&s, HOUR);
        flush_now(&s);
        assert_eq!(s.transport.accepted_ids(), expected_ids(0..3));
        assert_eq!(stored_ids(&s.storage), Vec::<String>::new());
    }

    #[test]
    fn concurrent_flushes_never_send_an_event_twice() {
        let s = sender(Config { flush_at: 1000, ..Config::default() }, FakeTransport::default());
        for n in 0..50 {
            push(&s, n);
        }
        s.transport.hold.set(true);
        // Two flushes started before any answer arrives; each takes its own batch (the whole
        // queue, here), so the second finds nothing and finishes at once.
        s.flush(|_| {});
        let second = Rc::new(Cell::new(None));
        let slot = Rc::clone(&second);
        s.flush(move |r| slot.set(Some(r)));
        assert_eq!(second.get(), Some(Flushed::default()));
        push(&s, 50);
        s.flush(|_| {});
        let held: Vec<(String, Done)> = s.transport.held.borrow_mut().drain(..).collect();
        assert_eq!(held.len(), 2);
        let mut all: Vec<String> = held.iter().flat_map(|(b, _)| ids(b)).collect();
        assert_eq!(all.len(), 51);
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 51, "no event in two requests");
        // The second succeeds (its flush finds nothing more to send), the first fails and its
        // events wait again; then everything is sent, each event once.
        let mut held = held.into_iter();
        let (_, first) = held.next().unwrap();
        let (_, second) = held.next().unwrap();
        second(S200);
        first(S503);
        assert_eq!(s.queue.borrow().len(), 50);
        s.transport.hold.set(false);
        advance(&s, HOUR);
        flush_now(&s);
        assert_eq!(s.queue.borrow().delivered(), 51);
        assert_eq!(s.queue.borrow().kept(), 0);
    }

    #[test]
    fn a_burst_of_10000_goes_in_few_large_requests_one_at_a_time() {
        let s = sender(Config::default(), FakeTransport::default());
        s.transport.hold.set(true);
        let mut flushes = 0;
        for n in 0..10_000 {
            if push(&s, n) {
                flushes += 1;
                s.flush(|_| {});
            }
        }
        assert_eq!(flushes, 1, "no flush is due while a request is out");
        assert_eq!(s.queue.borrow().drops().total(), 0, "the queue holds the whole burst");
        let mut sizes = Vec::new();
        let mut accepted = Vec::new();
        loop {
            let Some((body, done)) = s.transport.held.borrow_mut().pop() else { break };
            assert!(s.transport.held.borrow().is_empty(), "never two requests out");
            assert!(body.len() <= MAX_BATCH_BYTES);
            let batch = ids(&body);
            sizes.push(batch.len());
            accepted.extend(batch);
            done(S200);
        }
        assert_eq!(accepted, expected_ids(0..10_000));
        assert_eq!(sizes.len(), 11, "{sizes:?}");
        assert_eq!(sizes[0], 20);
        assert!(sizes[1..].iter().all(|&n| n == MAX_EVENTS_PER_BATCH || n == 980), "{sizes:?}");
        assert_eq!(stored_ids(&s.storage), Vec::<String>::new());
    }

    #[test]
    fn batching_by_count() {
        // (flush_at, events pushed, pushes that report a flush as due)
        let cases: &[(usize, usize, &[usize])] = &[
            (1, 3, &[0, 1, 2]),
            (3, 7, &[2, 3, 4, 5, 6]), // due from the 3rd on while nobody flushes
            (20, 19, &[]),
            (20, 20, &[19]),
        ];
        for &(flush_at, pushed, expected) in cases {
            let mut q = Queue::new(Config { flush_at, ..Config::default() });
            let due: Vec<usize> = (0..pushed).filter(|&n| q.push(event(n), 0)).collect();
            assert_eq!(due, expected, "flush_at {flush_at}");
        }
        // Flushing at each due point sends batches of exactly flush_at.
        let s = sender(Config { flush_at: 4, ..Config::default() }, FakeTransport::default());
        for n in 0..12 {
            if push(&s, n) {
                flush_now(&s);
            }
        }
        let sizes: Vec<usize> = s.transport.posts.borrow().iter().map(|(b, _)| ids(b).len()).collect();
        assert_eq!(sizes, [4, 4, 4]);
        assert_eq!(s.transport.accepted_ids(), expected_ids(0..12));
    }

    #[test]
    fn batches_respect_byte_and_count_limits() {
        let mut q = Queue::new(Config { flush_at: 5000, max_queued: 5000, ..Config::default() });
        for n in 0..(MAX_EVENTS_PER_BATCH + 10) {
            q.push(event(n), 0);
        }
        let first = q.take_batch(MAX_BATCH_BYTES, 0).unwrap();
        assert_eq!(first.len(), MAX_EVENTS_PER_BATCH);
        assert!(first.body.len() <= MAX_BATCH_BYTES);
        assert_eq!(ids(&first.body).len(), MAX_EVENTS_PER_BATCH);
        let mut sizes = Vec::new();
        while let Some(b) = q.take_batch(1024, 0) {
            assert!(b.body.len() <= 1024, "{}", b.body.len());
            assert_eq!(ids(&b.body).len(), b.len());
            sizes.push(b.len());
        }
        assert_eq!(sizes.iter().sum::<usize>(), 10);
        assert!(sizes.len() > 1);
        // An event bigger than the limit still goes, alone.
        let mut q = Queue::new(Config::default());
        q.push(event(1), 0);
        q.push(event(2), 0);
        assert_eq!(q.take_batch(10, 0).unwrap().len(), 1);
    }

    #[test]
    fn full_queue_drops_the_oldest_by_count_and_by_bytes() {
        let mut q = Queue::new(Config { flush_at: 100, max_queued: 3, ..Config::default() });
        for n in 0..5 {
            q.push(event(n), 0);
        }
        assert_eq!(q.drops().queue_full, 2);
        let batch = q.take_batch(MAX_BATCH_BYTES, 0).unwrap();
        assert_eq!(ids(&batch.body), expected_ids(2..5));
        // Bytes: room for 2.5 events keeps the newest 2.
        let size = event(0).len();
        let mut q = Queue::new(Config { flush_at: 100, max_bytes: size * 5 / 2, ..Config::default() });
        for n in 0..6 {
            q.push(event(n), 0);
        }
        assert_eq!(q.kept(), 2);
        assert_eq!(q.unreported_drops(), 4);
        assert_eq!(ids(&q.take_batch(MAX_BATCH_BYTES, 0).unwrap().body), expected_ids(4..6));
    }

    #[test]
    fn the_queue_survives_a_reload() {
        let storage = MemStorage::default();
        let config = Config { flush_at: 100, ..Config::default() };
        // Page 1: offline. Two events fail, one more is tracked, and the three are in flight
        // when the page goes away (their answer never comes); a fourth is tracked meanwhile.
        let page1 = sender_on(config, FakeTransport::scripted(&[Outcome::Network]), storage.clone());
        push(&page1, 0);
        push(&page1, 1);
        flush_now(&page1);
        push(&page1, 2);
        page1.transport.hold.set(true);
        advance(&page1, HOUR);
        flush_now_held(&page1);
        push(&page1, 3);
        assert_eq!(stored_ids(&storage), expected_ids(0..4));
        // Page 2 finds them all, in order, and sends them with the same ids.
        let page2 = sender_on(config, FakeTransport::default(), storage.clone());
        assert_eq!(page2.queue.borrow().len(), 4);
        push(&page2, 4);
        flush_now(&page2);
        assert_eq!(page2.transport.accepted_ids(), expected_ids(0..5));
        assert_eq!(stored_ids(&storage), Vec::<String>::new(), "acknowledged: forgotten");
        // A third load sends nothing again.
        let page3 = sender_on(config, FakeTransport::default(), storage.clone());
        assert_eq!(flush_now(&page3), Flushed::default());
        // Damaged lines are skipped; whole events survive.
        storage.set(QUEUE_KEY, &format!("garbage\n{}\n\n{{\"cut", event(7)));
        let page4 = sender_on(config, FakeTransport::default(), storage);
        flush_now(&page4);
        assert_eq!(page4.transport.accepted_ids(), expected_ids(7..8));
    }

    /// Counts the writes (and bytes written): the cost `push` must not pay per event.
    #[derive(Clone, Default)]
    struct CountingStorage {
        inner: MemStorage,
        writes: Rc<Cell<usize>>,
        bytes: Rc<Cell<usize>>,
    }

    impl Storage for CountingStorage {
        fn get(&self, key: &str) -> Option<String> {
            self.inner.get(key)
        }
        fn set(&self, key: &str, value: &str) {
            self.writes.set(self.writes.get() + 1);
            self.bytes.set(self.bytes.get() + value.len());
            self.inner.set(key, value);
        }
        fn remove(&self, key: &str) {
            self.inner.remove(key);
        }
    }

    #[test]
    fn pushes_of_one_task_are_stored_once_and_before_a_beacon() {
        let storage = CountingStorage::default();
        let clock = FakeClock { now: Cell::new(T0), random: Cell::new(u32::MAX) };
        let config = Config { flush_at: 100, ..Config::default() };
        let s = Sender::new(Queue::new(config), FakeTransport::default(), clock, storage.clone(), QUEUE_KEY.into());
        // (the events of one task, handed over in one `run`)
        for n in 0..50 {
            s.push(event(n));
        }
        assert_eq!(storage.writes.get(), 0, "nothing written per event");
        s.persist_pending();
        assert_eq!(storage.writes.get(), 1, "one chunk, written once");
        assert_eq!(stored_ids(&storage.inner), expected_ids(0..50));
        s.persist_pending();
        assert_eq!(storage.writes.get(), 1, "nothing new: nothing written");
        s.push(event(50));
        // A page going away in the same task as a push: the beacon path stores it first, so an
        // unanswered beacon's events are still there for the next page.
        s.transport.beacon_quota.set(1);
        assert_eq!(s.flush_beacon(), 51);
        assert_eq!(stored_ids(&storage.inner), expected_ids(0..51));
        assert_eq!(storage.writes.get(), 2);
    }

    #[test]
    fn a_burst_is_written_about_once_in_chunks() {
        let storage = CountingStorage::default();
        let clock = FakeClock { now: Cell::new(T0), random: Cell::new(u32::MAX) };
        let size = event(0).len();
        let config = Config { flush_at: 100_000, max_queued: 100_000, chunk_bytes: size * 64, ..Config::default() };
        let s = Sender::new(Queue::new(config), FakeTransport::default(), clock, storage.clone(), QUEUE_KEY.into());
        for n in 0..3000 {
            s.push(event(n));
        }
        s.persist_pending();
        let total: usize = (0..3000).map(|n| event(n).len() + 1).sum();
        assert!(storage.bytes.get() <= total, "each event written once: {} of {total}", storage.bytes.get());
        assert_eq!(stored_ids(&storage.inner), expected_ids(0..3000));
        assert!(queue_keys(&storage.inner).len() >= 3000 / 64, "in chunks of at most 64 events");
        // Three batches of 1000: whole chunks are removed, at most the one a batch cuts through
        // is rewritten. One value for the whole queue wrote it again after each answer.
        let report = Rc::new(Cell::new(Flushed::default()));
        let slot = Rc::clone(&report);
        s.flush(move |r| slot.set(r));
        assert_eq!((report.get().requests, report.get().delivered), (3, 3000));
        assert!(storage.bytes.get() <= total + 3 * 64 * (size + 1), "{} bytes written", storage.bytes.get());
        assert_eq!(queue_keys(&storage.inner), Vec::<String>::new(), "acknowledged: every chunk removed");
    }

    #[test]
    fn tabs_keep_their_own_queues_and_adopt_orphans() {
        let storage = MemStorage::default();
        let config = Config { flush_at: 100, ..Config::default() };
        let tab = |key: &str| {
            let clock = FakeClock { now: Cell::new(T0), random: Cell::new(u32::MAX) };
            Sender::new(Queue::new(config), FakeTransport::default(), clock, storage.clone(), key.to_owned())
        };
        let a = tab("nexus_queue:a");
        let b = tab("nexus_queue:b");
        push(&a, 0);
        push(&b, 1);
        push(&a, 2);
        // Each tab writes only its keys: neither overwrites the other.
        assert_eq!(storage.get("nexus_queue:a.0").unwrap().lines().count(), 2);
        assert_eq!(storage.get("nexus_queue:b.0").unwrap().lines().count(), 1);
        // Tab a closes unsent; b adopts its queue (the loader holds a's lock meanwhile).
        let orphan = storage.get("nexus_queue:a.0").unwrap();
        b.adopt(&orphan);
        assert_eq!(storage.get("nexus_queue:b.0").unwrap().lines().count(), 3, "stored as b's first");
        flush_now(&b);
        assert_eq!(b.transport.accepted_ids(), [expected_ids(1..2), expected_ids(0..1), expected_ids(2..3)].concat());
        assert_eq!(storage.get("nexus_queue:b.0"), None, "acknowledged: removed");
    }

    #[test]
    fn nothing_leaves_while_sending_is_off_and_forget_leaves_nothing() {
        let transport = FakeTransport::default();
        transport.beacon_quota.set(10);
        let s = sender(Config { flush_at: 1, ..Config::default() }, transport);
        s.sending.set(false);
        assert!(push(&s, 0), "due by count ...");
        assert_eq!(flush_now(&s), Flushed::default(), "... but held");
        assert_eq!(s.flush_beacon(), 0);
        s.sending.set(true);
        assert_eq!(flush_now(&s).delivered, 1);
        push(&s, 1);
        s.forget();
        assert_eq!(s.queue.borrow().kept(), 0);
        assert_eq!(queue_keys(&s.storage), Vec::<String>::new());
        assert!(s.transport.beacons.borrow().is_empty());
        assert_eq!(s.transport.accepted_ids(), expected_ids(0..1));
    }

    /// Starts a flush whose request stays unanswered.
    fn flush_now_held(s: &TestSender) {
        s.flush(|_| {});
        assert_eq!(s.transport.held.borrow().len(), 1);
    }

    #[test]
    fn beaconed_events_are_kept_until_a_later_send_is_acknowledged() {
        let storage = MemStorage::default();
        let config = Config { flush_at: 100, ..Config::default() };
        let transport = FakeTransport::default();
        transport.beacon_quota.set(10);
        let s = sender_on(config, transport, storage.clone());
        for n in 0..3 {
            push(&s, n);
        }
        // A fetch taken before the beacon, still unanswered when the tab is hidden.
        s.transport.hold.set(true);
        flush_now_held(&s);
        push(&s, 3);
        push(&s, 4);
        assert_eq!(s.flush_beacon(), 2);
        assert_eq!(ids(&s.transport.beacons.borrow()[0]), expected_ids(3..5));
        assert_eq!(s.queue.borrow().len(), 0, "beaconed events are not sent again by this page");
        assert_eq!(stored_ids(&storage), expected_ids(0..5), "but they stay stored");
        // The earlier fetch's acknowledgement says nothing about the later beacon.
        let (_, done) = s.transport.held.borrow_mut().remove(0);
        done(S200);
        assert_eq!(stored_ids(&storage), expected_ids(3..5));
        // A reload now (the page was closed after the beacon) resends them: at-least-once.
        let reloaded = sender_on(config, FakeTransport::default(), storage.clone());
        flush_now(&reloaded);
        assert_eq!(reloaded.transport.accepted_ids(), expected_ids(3..5));
        // Or the page lives on: a later acknowledged fetch forgets them without resending.
        s.transport.hold.set(false);
        push(&s, 5);
        flush_now(&s);
        assert_eq!(s.transport.accepted_ids(), expected_ids(5..6));
        assert_eq!(s.queue.borrow().kept(), 0);
        assert_eq!(stored_ids(&storage), Vec::<String>::new());
    }

    #[test]
    fn beacons_stop_at_quota_and_keep_the_rest() {
        let transport = FakeTransport::default();
        transport.beacon_quota.set(1);
        let s = sender(Config { flush_at: 1000, ..Config::default() }, transport);
        // Each event is ~170 bytes: 600 of them need two beacons of 60 KiB.
        for n in 0..600 {
            push(&s, n);
        }
        let sent = s.flush_beacon();
        {
            let beacons = s.transport.beacons.borrow();
            assert_eq!(beacons.len(), 1);
            assert!(beacons[0].len() <= BEACON_MAX_BYTES);
            assert_eq!(ids(&beacons[0]).len(), sent);
        }
        assert_eq!(s.queue.borrow().len(), 600 - sent);
        // What stayed is exactly the rest, in order, ready for the next flush.
        flush_now(&s);
        let mut all: Vec<String> = ids(&s.transport.beacons.borrow()[0]);
        all.extend(s.transport.accepted_ids());
        assert_eq!(all, expected_ids(0..600));
        assert_eq!(s.queue.borrow().kept(), 0, "the acknowledged fetch also settled the beacon");
        // Nothing queued: no beacon at all.
        assert_eq!(s.flush_beacon(), 0);
        assert_eq!(s.transport.beacons.borrow().len(), 1);
    }
}
