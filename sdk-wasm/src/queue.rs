//! The batching queue and its send/retry rules, independent of the browser.
//!
//! Events enter as finished JSON text (built in the browser by `JSON.stringify`), so the queue
//! never parses or re-serialises them: an event keeps its `id` byte for byte across retries, and
//! the server's dedup on that id makes a retried batch harmless. The network and the clock are
//! the [`Transport`] and [`Clock`] traits: native unit tests drive everything below with fakes.
//!
//! Sending is callback-based rather than `async`: a Rust executor in the wasm
//! (wasm-bindgen-futures) costs about 2 KiB gzipped, a tenth of the budget, for one loop.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

use protocol::limits::{MAX_BATCH_BYTES, MAX_EVENTS_PER_BATCH};
use protocol::retry::should_retry;

use crate::wire::rfc3339_ms;

/// Largest body handed to `navigator.sendBeacon` or to a `keepalive` fetch. Browsers cap the
/// bytes of all such requests in flight at 64 KiB per page; the margin leaves room for others.
pub const BEACON_MAX_BYTES: usize = 60 * 1024;

/// What became of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The server answered with this HTTP status.
    Status(u16),
    /// No answer: offline, DNS, CORS, aborted. Always worth retrying.
    Network,
}

impl Outcome {
    fn delivered(self) -> bool {
        matches!(self, Outcome::Status(200..=299))
    }

    fn retryable(self) -> bool {
        match self {
            Outcome::Status(status) => should_retry(status),
            Outcome::Network => true,
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

/// The wall clock, in Unix milliseconds.
pub trait Clock {
    /// Now, in Unix milliseconds.
    fn now_ms(&self) -> u64;
}

/// Why the queue gave up on events. A drop is an outcome, counted, never an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The queue was full; the oldest event made room for a new one.
    QueueFull,
    /// The server refused the batch with a 4xx other than 408/429: resending cannot help.
    Refused,
    /// Still failing after [`Config::max_attempts`] retryable failures.
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
}

/// Queue settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Send as soon as this many events wait.
    pub flush_at: usize,
    /// Most events kept in memory; beyond it the oldest are dropped.
    pub max_queued: usize,
    /// Attempts per event before it is dropped (the first send counts).
    pub max_attempts: u8,
    /// After a retryable failure, reaching `flush_at` does not send again before this delay;
    /// the periodic flush and an explicit `flush()` still do. Stops a tight retry loop when a
    /// busy page keeps filling the queue while the collector is down.
    pub retry_delay_ms: u64,
}

impl Default for Config {
    fn default() -> Config {
        Config { flush_at: 20, max_queued: 1000, max_attempts: 5, retry_delay_ms: 5000 }
    }
}

#[derive(Debug)]
struct Pending {
    json: String,
    attempts: u8,
}

/// Events taken out of the queue for one request; they come back through [`Queue::settle`].
#[derive(Debug)]
pub struct Batch {
    /// The request body.
    pub body: String,
    events: Vec<Pending>,
}

impl Batch {
    /// Number of events in the batch.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// True when the batch has no events (never the case for one made by [`Queue::take_batch`]).
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }
}

/// What [`Queue::settle`] did with a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// The server took it (per-event rejections are final and not retried).
    Delivered(usize),
    /// Put back at the front of the queue for a later attempt; some may have been dropped.
    Requeued(usize),
    /// Given up on.
    Dropped(usize, DropReason),
}

/// The in-memory queue of serialised events.
#[derive(Debug)]
pub struct Queue {
    config: Config,
    events: VecDeque<Pending>,
    retry_at: u64,
    delivered: u32,
    drops: Drops,
}

impl Queue {
    /// An empty queue.
    pub fn new(config: Config) -> Queue {
        Queue { config, events: VecDeque::new(), retry_at: 0, delivered: 0, drops: Drops::default() }
    }

    /// Events waiting (not counting those in flight).
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Events the server took so far (beacons count when the browser accepted them).
    pub fn delivered(&self) -> u32 {
        self.delivered
    }

    /// Events dropped so far, by reason.
    pub fn drops(&self) -> Drops {
        self.drops
    }

    /// Adds one event; `true` when a flush is due (the queue reached `flush_at` and no retry
    /// delay is running).
    pub fn push(&mut self, json: String, now: u64) -> bool {
        if self.events.len() >= self.config.max_queued {
            self.events.pop_front();
            self.drops.add(DropReason::QueueFull, 1);
        }
        self.events.push_back(Pending { json, attempts: 0 });
        self.events.len() >= self.config.flush_at && now >= self.retry_at
    }

    /// Takes the oldest events that fit in one body of at most `max_bytes` (and at most
    /// [`MAX_EVENTS_PER_BATCH`] events); `None` when the queue is empty. A single event larger
    /// than `max_bytes` still goes alone: the server, not the queue, judges its size.
    pub fn take_batch(&mut self, max_bytes: usize, now: u64) -> Option<Batch> {
        if self.events.is_empty() {
            return None;
        }
        let sent_at = rfc3339_ms(now);
        // `{"sent_at":"…","batch":[` + `]}`
        let mut size = 24 + sent_at.len() + 2;
        let mut events = Vec::new();
        while let Some(next) = self.events.front() {
            let add = next.json.len() + usize::from(!events.is_empty());
            if events.len() == MAX_EVENTS_PER_BATCH || (!events.is_empty() && size + add > max_bytes) {
                break;
            }
            size += add;
            events.extend(self.events.pop_front());
        }
        let mut body = String::with_capacity(size);
        body.push_str("{\"sent_at\":\"");
        body.push_str(&sent_at);
        body.push_str("\",\"batch\":[");
        for (i, event) in events.iter().enumerate() {
            if i > 0 {
                body.push(',');
            }
            body.push_str(&event.json);
        }
        body.push_str("]}");
        Some(Batch { body, events })
    }

    /// Applies the outcome of sending `batch`: delivered events are forgotten, refused ones
    /// dropped, retryable ones put back at the front in their original order (same JSON, same
    /// ids) unless they used up their attempts.
    pub fn settle(&mut self, batch: Batch, outcome: Outcome, now: u64) -> Settled {
        let n = batch.events.len();
        if outcome.delivered() {
            self.delivered = self.delivered.saturating_add(n as u32);
            return Settled::Delivered(n);
        }
        if !outcome.retryable() {
            self.drops.add(DropReason::Refused, n as u32);
            return Settled::Dropped(n, DropReason::Refused);
        }
        self.retry_at = now.saturating_add(self.config.retry_delay_ms);
        let mut requeued = 0;
        for mut event in batch.events.into_iter().rev() {
            event.attempts = event.attempts.saturating_add(1);
            if event.attempts >= self.config.max_attempts {
                self.drops.add(DropReason::Exhausted, 1);
            } else {
                self.events.push_front(event);
                requeued += 1;
            }
        }
        // Events queued while the batch was in flight may now overflow the queue.
        while self.events.len() > self.config.max_queued {
            self.events.pop_front();
            self.drops.add(DropReason::QueueFull, 1);
        }
        if requeued == 0 {
            Settled::Dropped(n, DropReason::Exhausted)
        } else {
            Settled::Requeued(requeued)
        }
    }

    /// Puts a batch back untouched (a beacon the browser refused was never an attempt).
    pub fn restore(&mut self, batch: Batch) {
        for event in batch.events.into_iter().rev() {
            self.events.push_front(event);
        }
    }

    fn beacon_sent(&mut self, n: usize) {
        self.delivered = self.delivered.saturating_add(n as u32);
    }
}

/// What one [`flush`] did.
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

/// The queue with its transport and clock, shared (`Rc`) by everything that may send: `track`,
/// the page's timer and listeners, and the callbacks of requests in flight.
#[derive(Debug)]
pub struct Sender<T, C> {
    /// The events waiting. Every borrow ends before any call out to the transport or to user
    /// code, so borrows never overlap.
    pub queue: RefCell<Queue>,
    /// How batches leave.
    pub transport: T,
    /// Time for `sent_at` and retry delays.
    pub clock: C,
}

impl<T: Transport + 'static, C: Clock + 'static> Sender<T, C> {
    /// A sender for `queue`.
    pub fn new(queue: Queue, transport: T, clock: C) -> Rc<Self> {
        Rc::new(Sender { queue: RefCell::new(queue), transport, clock })
    }

    /// Sends everything queued, one batch at a time, until the queue is empty or a send fails
    /// in a retryable way (then the events wait for the next flush: no tight retry loop), and
    /// then calls `done`.
    ///
    /// The queue is borrowed only while a batch is taken or settled, so `track` can add events
    /// while a request is in flight, and two flushes running at once never send the same
    /// event: each takes its own.
    pub fn flush(self: &Rc<Self>, done: impl FnOnce(Flushed) + 'static) {
        self.send_next(Flushed::default(), Box::new(done));
    }

    fn send_next(self: &Rc<Self>, mut report: Flushed, done: Box<dyn FnOnce(Flushed)>) {
        let batch = self.queue.borrow_mut().take_batch(MAX_BATCH_BYTES, self.clock.now_ms());
        let Some(mut batch) = batch else { return done(report) };
        report.requests += 1;
        let body = std::mem::take(&mut batch.body);
        let this = Rc::clone(self);
        let on_answer = move |outcome| {
            let settled = this.queue.borrow_mut().settle(batch, outcome, this.clock.now_ms());
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

    /// Hands everything queued to the browser as beacons, for a page that is going away. Stops
    /// at the first beacon the browser refuses; those events stay queued.
    pub fn flush_beacon(&self) -> usize {
        let mut sent = 0;
        loop {
            let batch = self.queue.borrow_mut().take_batch(BEACON_MAX_BYTES, self.clock.now_ms());
            let Some(batch) = batch else { break };
            if self.transport.beacon(&batch.body) {
                sent += batch.len();
                self.queue.borrow_mut().beacon_sent(batch.len());
            } else {
                self.queue.borrow_mut().restore(batch);
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
    use std::cell::Cell;
    use std::collections::HashSet;

    use protocol::envelope::parse_batch;

    struct FakeClock(Cell<u64>);

    impl Clock for FakeClock {
        fn now_ms(&self) -> u64 {
            self.0.get()
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

    type TestSender = Rc<Sender<FakeTransport, FakeClock>>;

    fn sender(config: Config, transport: FakeTransport) -> TestSender {
        Sender::new(Queue::new(config), transport, FakeClock(Cell::new(1_796_119_200_000)))
    }

    /// Runs a flush whose requests the fake answers at once; returns its report.
    fn flush_now(s: &TestSender) -> Flushed {
        let out = Rc::new(Cell::new(None));
        let slot = Rc::clone(&out);
        s.flush(move |report| slot.set(Some(report)));
        out.get().expect("the fake transport answers synchronously")
    }

    fn push(s: &TestSender, n: usize) -> bool {
        s.queue.borrow_mut().push(event(n), s.clock.now_ms())
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

    const S503: Outcome = Outcome::Status(503);
    const S200: Outcome = Outcome::Status(200);

    /// One row of [`retry_table`]: (script, flushes, delivered requests, accepted events,
    /// dropped by reason, left queued).
    type RetryCase = (&'static [Outcome], usize, usize, usize, Drops, usize);

    /// Table: a script of outcomes for successive flushes, and what must come of 5 events.
    #[test]
    fn retry_table() {
        use Outcome::*;
        let cases: &[RetryCase] = &[
            (&[S200], 1, 1, 5, Drops::default(), 0),
            (&[S503], 1, 0, 0, Drops::default(), 5),
            (&[S503], 2, 1, 5, Drops::default(), 0),
            (&[Network, Status(429), Status(500), Status(408)], 5, 1, 5, Drops::default(), 0),
            (&[Status(400)], 1, 0, 0, Drops { refused: 5, ..Drops::default() }, 0),
            (&[Status(401)], 3, 0, 0, Drops { refused: 5, ..Drops::default() }, 0),
            (&[Status(413)], 1, 0, 0, Drops { refused: 5, ..Drops::default() }, 0),
            (&[S503, S503, S503, S503, S503], 6, 0, 0, Drops { exhausted: 5, ..Drops::default() }, 0),
            (&[S503, S503, S503, S503], 5, 1, 5, Drops::default(), 0),
        ];
        for (i, &(script, flushes, ok_requests, accepted, drops, left)) in cases.iter().enumerate() {
            let s = sender(Config { flush_at: 100, ..Config::default() }, FakeTransport::scripted(script));
            for n in 0..5 {
                push(&s, n);
            }
            for _ in 0..flushes {
                flush_now(&s);
                s.clock.0.set(s.clock.0.get() + 10_000);
            }
            let posts = s.transport.posts.borrow();
            assert_eq!(posts.iter().filter(|(_, o)| o.delivered()).count(), ok_requests, "case {i}");
            assert_eq!(s.transport.accepted_ids().len(), accepted, "case {i}");
            assert_eq!(s.queue.borrow().drops(), drops, "case {i}");
            assert_eq!(s.queue.borrow().len(), left, "case {i}");
            // Every attempt carried the same events with the same ids, in order.
            for (body, _) in posts.iter() {
                assert_eq!(ids(body), expected_ids(0..5), "case {i}");
            }
        }
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
        // Batches of 3: the first goes, the second fails and is put back; count-triggered flushes
        // pause for the retry delay, so events 6..9 join the queue behind the failed ones.
        assert_eq!(due, [false, false, true, false, false, true, false, false, false]);
        assert_eq!(s.queue.borrow().len(), 6);
        s.clock.0.set(s.clock.0.get() + Config::default().retry_delay_ms);
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
        let (body, done) = s.transport.held.borrow_mut().remove(0);
        assert_eq!(ids(&body), expected_ids(0..2));
        done(S503);
        assert_eq!(report.get(), Some(Flushed { requests: 1, delivered: 0, requeued: 2, dropped: 0 }));
        // The failed events are back in front of the newer one, in their order.
        s.transport.hold.set(false);
        flush_now(&s);
        assert_eq!(s.transport.accepted_ids(), expected_ids(0..3));
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
        // events come back; then everything is sent, each event once.
        let mut held = held.into_iter();
        let (_, first) = held.next().unwrap();
        let (_, second) = held.next().unwrap();
        second(S200);
        first(S503);
        assert_eq!(s.queue.borrow().len(), 50);
        s.transport.hold.set(false);
        flush_now(&s);
        assert_eq!(s.queue.borrow().delivered(), 51);
        assert!(s.queue.borrow().is_empty());
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
    fn full_queue_drops_the_oldest() {
        let mut q = Queue::new(Config { flush_at: 100, max_queued: 3, ..Config::default() });
        for n in 0..5 {
            q.push(event(n), 0);
        }
        assert_eq!(q.drops().queue_full, 2);
        let batch = q.take_batch(MAX_BATCH_BYTES, 0).unwrap();
        assert_eq!(ids(&batch.body), expected_ids(2..5));
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
        // Nothing queued: no beacon at all.
        assert_eq!(s.flush_beacon(), 0);
        assert_eq!(s.transport.beacons.borrow().len(), 1);
    }
}
