// The loader of @nexus-analytics/browser: a thin layer over the wasm core (built from
// sdk-wasm/ into ../wasm/ by `cargo xtask build-sdk`).
//
// Why a loader at all: the wasm module loads asynchronously, but `track()` must be callable the
// moment the page runs, and must cost the page next to nothing. Calls are queued here, with the
// time they were made, and handed to the core in order: after the task that made them once the
// wasm is ready, else once it is. The wasm starts loading on the first call, not on import, so
// importing the package costs nothing until it is used.
//
// Every export reaches the core through its own code, never by name: an app's bundler then
// drops the loader and glue code of every function the app does not call (`group`, `alias`,
// `register`, ...), which is how the size budget is measured.

import initWasm, {
  adopt,
  answer,
  flush as flushCore,
  init as initCore,
  optIn as optInCore,
  optOut as optOutCore,
  reset as resetCore,
  run,
  tick,
} from '../wasm/nexus_sdk.js';

// Outside a browser (server-side rendering) every call is a harmless no-op.
const inBrowser = typeof window !== 'undefined' && typeof WebAssembly !== 'undefined';

// A page whose wasm never loads (blocked, offline) must not grow without bound.
const MAX_PENDING = 1000;

// One queue per page, so that tabs never send the same event twice: the core stores this page's
// queue in chunks, `nexus_queue:<tab>.<n>`, and only this page sends it, while the page holds a
// Web Lock named `nexus_queue:<tab>` for its whole life. Chunks whose lock is free belong to a
// tab that is gone (closed, reloaded, crashed: the browser releases its locks); a live tab
// takes them over under that lock, so two tabs never both take the same one. Without Web Locks
// (old browsers) a page takes over every other page's chunks at init: a duplicate is then
// possible, and harmless, as the collector drops a repeated id.
const QUEUE = 'nexus_queue';
const locks = inBrowser ? navigator.locks : undefined;
const tab = `${QUEUE}:${Date.now().toString(36)}${Math.random().toString(36).slice(2)}`;
let owner = false;
/** Set once the core is initialised and the timer and page listeners below run. */
let watching = false;

/**
 * Takes over the chunks of pages that are gone (see above), once this page may store them
 * (consent granted, not cookieless): else they would live on in this page's memory only.
 */
function adoptOrphans() {
  try {
    if (!tick(4)) return;
    for (const key of Object.keys(localStorage)) {
      // `nexus_queue:<tab>.<n>`, or a whole queue as older versions stored it.
      const lock = key.split('.')[0];
      if (key.startsWith(QUEUE) && lock !== tab) {
        const take = (held) => {
          const saved = held && localStorage.getItem(key);
          // Stored as ours first, then removed: a crash in between duplicates, never loses.
          if (saved) adopt(saved);
          if (held) localStorage.removeItem(key);
        };
        locks ? locks.request(lock, { ifAvailable: true }, take) : take(1);
      }
    }
  } catch {
    // Storage blocked (private mode, a sandboxed frame): there is nothing to adopt.
  }
}

// The transport (the core's `Fetch`, sdk-wasm/src/web/platform.rs): the core decides what a
// body holds and what an outcome means; this does the I/O. A fetch body is gzipped with the
// browser's own `CompressionStream` (no bundle bytes for a compressor) and says so with
// `?compression=gzip`; `text/plain` keeps the request CORS-simple (no preflight). A beacon
// (`n` 0: the page is going away) goes as plain text: `sendBeacon` must be given its body now,
// and compressing is asynchronous, so a page that is closing would never send it.
/** `<endpoint>/v1/batch?key=<write key>`, and the `debug` option, set by `init`. */
let url;
let debug;
function send(bytes, n) {
  // The body arrives as UTF-8 bytes (one copy out of the wasm); typed `text/plain` in a Blob, it
  // is sent like a string would be, with no preflight.
  const body = new Blob([bytes], { type: TEXT });
  if (debug) console.log('nexus:', n ? 'send' : 'beacon', new TextDecoder().decode(bytes));
  if (!n) return navigator.sendBeacon(url, body);
  const post = (data, gzip) =>
    fetch(url + (gzip ? '&compression=gzip' : ''), {
      method: 'POST',
      body: data,
      // No cookies: the write key authenticates, and `omit` lets the collector answer `*`.
      credentials: 'omit',
      // Only when the page is hidden, so may be about to go: keepalive lets the request finish
      // after it. Browsers refuse keepalive requests past 64 KiB of bodies in flight (counted
      // until the response is consumed), so while the page lives, plain requests.
      keepalive: document.hidden && data.size < 61440,
    }).then(
      // No answer (offline, CORS, abort) is status 0. `Retry-After` in seconds; a date is 0.
      (response) => answer(n, response.status, +response.headers.get('retry-after') || 0),
      () => answer(n, 0, 0),
    );
  if (typeof CompressionStream != 'function') return post(body);
  new Response(body.stream().pipeThrough(new CompressionStream('gzip'))).blob().then(
    (gz) => post(new Blob([gz], { type: TEXT }), 1),
    () => post(body),
  );
}
const TEXT = 'text/plain;charset=UTF-8';

// The calls of the page, in order, waiting for the core: recording calls (`track`, `page`,
// `identify`, `alias`, `group`) as `[kind, time, a, b, c, url]` (the time and the page's URL
// are the call's: a single-page app may move on before the event is built; see `run` in
// sdk-wasm/src/web/api.rs for the kinds), and every other call as
// `[fn, resolve, reject]`. A recording call does only this push synchronously (and its
// argument checks), so `track()` costs the page about a microsecond: the core builds,
// serialises and stores the events of a whole task in one `run` afterwards.
//
// When: a task (`setTimeout`) after the call, so the work never lengthens the task that
// tracked (a click handler's, say) and the browser can paint first; in a hidden page a
// microtask instead, since a hidden page may be frozen or discarded before a timer fires.
// Leaving the page (`pagehide`, hidden) and every other call run what waits first, so
// nothing is lost or reordered. Properties are therefore read (copied by `JSON.stringify`)
// at the end of the task that tracked, or at the next call that is not a recording one.
// Before the wasm is ready, calls wait here (at most MAX_PENDING) and run once it is.
/** @type {Array<Array<any>>} */
let calls = [];
let timer = 0;
let ready = false;
/** @type {Promise<void> | undefined} */
let loading;
/** Set when the wasm failed to load: every later call is a no-op. */
let failed = false;
/** The time of the call being replayed from the stub snippet (see `replayAt`), else undefined. */
let stamp;

function load() {
  if (!loading) {
    loading = initWasm(new URL('../wasm/nexus_sdk_bg.wasm', import.meta.url)).then(
      () => {
        ready = true;
        drain();
      },
      (error) => {
        // A CSP without 'wasm-unsafe-eval', a blocked or missing file, no network: analytics
        // must never break the page, so this is said once and every call becomes a no-op
        // (promises resolve rather than reject: a page that does not catch them gets no error).
        failed = true;
        console.warn('nexus: SDK could not be loaded', error);
        for (const [fn, resolve] of calls) if (typeof fn == 'function') resolve?.();
        calls = [];
      },
    );
  }
  return loading;
}

// The `context` of an event (docs/protocol.md). The URL is the call's (a single-page app may
// have moved on since); the path and campaign are parsed once per URL; title and referrer are
// read when the event is built; the device part once per page (`Intl.DateTimeFormat` is slow
// to make). Strings are cut to the protocol's 8 KiB: a longer one would get the event refused.
const VERSION = '0.1.0'; // the package's, checked against package.json by `cargo xtask build-sdk`
let device;
let parsed = [];
/** `s` cut to 8 KiB of UTF-8 (without a broken last character); undefined when empty. */
function cut(s) {
  // Up to 2730 UTF-16 units is at most 8190 bytes: the encoder runs only for long strings.
  return s?.length > 2730 ? new TextDecoder().decode(new TextEncoder().encode(s).subarray(0, 8192)).replace(/\uFFFD$/, '') : s || undefined;
}
function context(href, referrer) {
  if (parsed[0] !== href) {
    const url = new URL(href);
    const utm = {};
    for (const field of ['source', 'medium', 'campaign', 'term', 'content']) {
      const value = cut(url.searchParams.get(`utm_${field}`));
      if (value) utm[field] = value;
    }
    parsed = [href, cut(url.pathname), Object.keys(utm).length ? utm : undefined];
  }
  device ??= {
    screen: { width: screen.width, height: screen.height },
    locale: navigator.language,
    timezone: Intl.DateTimeFormat().resolvedOptions().timeZone,
    library: { name: 'nexus-js', version: VERSION },
  };
  const [url, path, utm] = parsed;
  return { url: cut(url), path, title: cut(document.title), referrer: cut(referrer ?? document.referrer), utm, ...device };
}

/** Runs what waits, in order: recording calls go to the core in one `run` per stretch. */
function drain() {
  timer = 0;
  const list = calls;
  let batch = [];
  calls = [];
  const hand = () => {
    // Errors of recording calls go to the console: their callers are gone.
    if (batch.length) for (const error of run(batch)) console.error(error);
    batch = [];
  };
  for (const call of list) {
    if (typeof call[0] == 'function') {
      hand();
      const [fn, resolve, reject] = call;
      try {
        // `fn` returns true when it settles the call itself (flush, once the collector answered).
        if (!fn(resolve)) resolve?.();
      } catch (error) {
        if (reject) reject(error);
        else console.error(error);
      }
    } else {
      // Super properties as they are at this point of the call order (track and page only).
      if (call[0] < 2 && supers) call[3] = { ...supers, ...call[3] };
      // The call's URL becomes the event's context (a page view's `c` is its SPA referrer).
      call[5] = context(call[5], call[0] == 1 ? call[4] : undefined);
      batch.push(call);
    }
  }
  hand();
}

/** Queues a call that is not a recording one; once loaded, it runs now, after what waits. */
function enqueue(fn, resolve, reject) {
  if (!inBrowser || failed || (!ready && calls.length >= MAX_PENDING)) resolve?.();
  else {
    calls.push([fn, resolve, reject]);
    ready ? drain() : load();
  }
}

/** Queues a recording call with its time (the stub's, during a replay). */
function record(kind, a, b, c) {
  if (inBrowser && !failed && (ready || calls.length < MAX_PENDING)) {
    calls.push([kind, stamp ?? Date.now(), a, b, c, location.href]);
    if (!ready) load();
    else if (!timer) {
      timer = 1;
      document.hidden ? queueMicrotask(drain) : setTimeout(drain);
    }
  }
}

/** The page is hidden or going away: record what waits, then hand the queue to `sendBeacon`. */
function hide() {
  drain();
  tick(2);
}

/**
 * Runs `fn` as if it were called at `at` (Unix ms): the stub snippet's calls, replayed by
 * src/global.js, keep the time they were made.
 * @internal
 */
export function replayAt(at, fn) {
  stamp = at;
  try {
    return fn();
  } finally {
    stamp = undefined;
  }
}

/** An id argument as the protocol takes it: a string of 1 to 200 bytes (UTF-8). */
function checkId(value, what) {
  // Up to 66 UTF-16 units is at most 198 bytes: the encoder runs only for long strings.
  if (typeof value != 'string' || !value || (value.length > 66 && new TextEncoder().encode(value).length > 200)) {
    throw new Error(`nexus: ${what} (1..200 bytes)`);
  }
}

/** Properties as the protocol takes them: absent, or a plain object. */
function checkProps(value) {
  if (value != null && (typeof value != 'object' || Array.isArray(value))) {
    throw new Error('nexus: properties must be a plain object');
  }
}

// Single-page apps (init option `spa: true`): one patch of `history.pushState`/`replaceState`
// and one `popstate` listener record a page view when the URL changes. URLs are compared without
// their fragment, so a hash change, a `replaceState` that keeps the URL or a `popstate` after a
// push to the same URL records nothing: never a double page view. The referrer of such a page
// view is the previous page view's URL (`document.referrer` still names the page before the app).
/** The URL (without fragment) of the last page view, recorded or SPA; unset until then. */
let last;
let started = false;
const here = () => location.href.split('#')[0];

function spaView() {
  const url = here();
  if (url !== last) {
    const referrer = last;
    last = url;
    view(undefined, referrer);
  }
}

function watchHistory() {
  last ??= here();
  for (const name of ['pushState', 'replaceState']) {
    const original = history[name];
    history[name] = function (...args) {
      const result = original.apply(this, args);
      spaView();
      return result;
    };
  }
  addEventListener('popstate', spaView);
}

// Autocapture is two functions of its own rather than init options, so an app that does not
// turn it on does not download it (its bundler drops them); the script-tag build (global.js)
// also takes them as init options.

// Outbound links (`captureOutboundLinks()`): a click on a link to another host records
// `$outbound_click` and hands it at once to `sendBeacon`, the keepalive request the browser
// finishes after the page is gone. Not a keepalive `fetch`: Chromium may reject a fetch's
// promise while the page unloads although the request went out, and the SDK would then resend
// the event by beacon, a second sender of an event the collector took. Nothing is awaited and
// the click is never cancelled: the navigation goes ahead as if the SDK were not there
// (`target=_blank` and middle clicks alike), and a failure inside is swallowed.
let links = false;
/** Records clicks on links to other hosts as `$outbound_click` events, sent at once. */
export function captureOutboundLinks() {
  if (!inBrowser || links) return;
  links = true;
  const onClick = (event) => {
    try {
      const link = event.target.closest('a[href]');
      if (link && /^https?:$/.test(link.protocol) && link.host !== location.host) {
        track('$outbound_click', { url: link.href, target: link.target || undefined });
        if (ready) hide();
      }
    } catch {
      // A click on something that is not an element, or a shadow root: nothing to record.
    }
  };
  addEventListener('click', onClick, true);
  addEventListener('auxclick', onClick, true);
}

// Web Vitals (`captureWebVitals()`): LCP, CLS and INP from PerformanceObserver, sent once per
// page as `$web_vitals` when the page is hidden or left (the moment the values are final). Call
// it before `init` resolves: its listeners then come before the core's own, so the event is
// queued before the core hands the queue to `sendBeacon`. CLS is the largest session window (shifts less than
// 1 s apart, at most 5 s long) without recent input; INP is the longest interaction (the
// definition's 98th percentile is the longest below 50 interactions).
let vitalsOn = false;
/** Records LCP, CLS and INP as one `$web_vitals` event when the page is hidden or left. */
export function captureWebVitals() {
  if (!inBrowser || vitalsOn) return;
  vitalsOn = true;
  const vitals = {};
  let burst = 0;
  let first = 0;
  let previous = 0;
  const observe = (type, each, options) => {
    try {
      new PerformanceObserver((list) => list.getEntries().forEach(each)).observe({ type, buffered: true, ...options });
    } catch {
      // An entry type this browser does not know: that vital is left out.
    }
  };
  observe('largest-contentful-paint', (e) => {
    vitals.lcp = Math.round(e.startTime);
  });
  observe('layout-shift', (e) => {
    if (e.hadRecentInput) return;
    if (burst && e.startTime - previous < 1000 && e.startTime - first < 5000) burst += e.value;
    else [burst, first] = [e.value, e.startTime];
    previous = e.startTime;
    if (burst > (vitals.cls ?? 0)) vitals.cls = Math.round(burst * 1e4) / 1e4;
  });
  observe(
    'event',
    (e) => {
      if (e.interactionId && e.duration > (vitals.inp ?? -1)) vitals.inp = e.duration;
    },
    { durationThreshold: 16 },
  );
  let sent = false;
  const report = (event) => {
    if (!sent && (event.type === 'pagehide' || document.visibilityState === 'hidden') && Object.keys(vitals).length) {
      sent = true;
      track('$web_vitals', vitals);
      // Hand it to the beacon now, in case the core's own listener ran first.
      if (ready) hide();
    }
  };
  document.addEventListener('visibilitychange', report);
  addEventListener('pagehide', report);
}

// Super properties (`register`): kept here and merged into each `track` and `page` event's
// properties (which win), so that an app that never registers any pays no wasm for them. Stored
// under `nexus_props` only when the core says it may write (consent granted, not cookieless);
// `reset` and `optOut` remove them, and the core removes the key when a privacy signal denies.
// Changed in call order (as queued calls), so a `track` before a `register` never gets them.
const PROPS = 'nexus_props';
/** @type {Record<string, unknown> | undefined} */
let supers;

function saveSupers() {
  try {
    if (supers && tick(4)) localStorage.setItem(PROPS, JSON.stringify(supers));
    else localStorage.removeItem(PROPS);
  } catch {
    // Storage blocked or full: they stay in memory for this page.
  }
}

/** Starts the SDK. Resolves once it is loaded and configured; a second call is ignored. */
export function init(options) {
  // Hooks are set at the call, not once loaded: navigations during the load are not missed.
  if (inBrowser && !started) {
    started = true;
    if (options?.spa) watchHistory();
  }
  return new Promise((resolve, reject) =>
    enqueue(
      () => {
        // Cookieless: no storage, so no queue to own or orphans to adopt.
        initCore(options, tab, send); // throws on bad options: then nothing is held
        if (!watching) {
          watching = true;
          url = `${(options.endpoint ?? '').replace(/\/+$/, '')}/v1/batch?key=${encodeURIComponent(options.key)}`;
          debug = options.debug;
          if (!options.cookieless) {
            try {
              const saved = JSON.parse(localStorage.getItem(PROPS));
              if (saved && typeof saved == 'object') supers = saved;
            } catch {
              // Nothing stored, a damaged value, or storage blocked: no super properties.
            }
          }
          // The core's moments (see `tick` in sdk-wasm/src/web/api.rs): the periodic flush,
          // back online, and hidden or leaving (beacons).
          setInterval(() => tick(0), options.flushIntervalMs ?? 5000);
          addEventListener('online', () => tick(1));
          addEventListener('pagehide', hide);
          document.addEventListener('visibilitychange', () => document.hidden && hide());
        }
        if (!owner) {
          owner = true;
          // Held until the page is gone: the promise never settles. Requested before any event
          // is stored under the key, so no other tab can find the key with a free lock.
          locks?.request(tab, () => new Promise(() => {}));
          adoptOrphans();
          // A tab closed while this one lived is taken over when the user comes back here.
          if (locks) document.addEventListener('visibilitychange', () => document.hidden || adoptOrphans());
        }
      },
      resolve,
      reject,
    ),
  );
}

/**
 * Records a named action. Throws on invalid arguments; the properties are read at the end of
 * the current task (see the call queue above).
 */
export function track(name, properties) {
  checkId(name, 'track() needs a name');
  checkProps(properties);
  record(0, name, properties);
}

/** Records a view of the current page. */
export function page(properties) {
  checkProps(properties);
  if (inBrowser) last = here();
  view(properties);
}

function view(properties, referrer) {
  record(1, undefined, properties, referrer);
}

/** Ties this browser to a known user and sets person properties. */
export function identify(userId, traits) {
  checkId(userId, 'identify() needs a user id');
  checkProps(traits);
  record(2, userId, traits);
}

/** Joins `userId` to `previousId` (default: the current user id, else the anonymous id). */
export function alias(userId, previousId) {
  checkId(userId, 'alias() needs ids');
  if (previousId !== undefined) checkId(previousId, 'alias() needs ids');
  // The current distinct id (the user id, else the anonymous id) is read off the event before
  // `user_id` is replaced; cookieless without a user id has none, and the collector refuses it.
  const edit = (e) =>
    Object.assign(e, { type: 'alias', name: undefined, user_id: userId, previous_id: previousId ?? e.user_id ?? e.anonymous_id });
  record(3, '$alias', undefined, edit);
}

/** Associates the person with a group, e.g. `group('company', 'acme', { plan: 'pro' })`. */
export function group(groupType, groupKey, traits) {
  checkId(groupType, 'group() needs ids');
  checkId(groupKey, 'group() needs ids');
  checkProps(traits);
  const edit = (e) => Object.assign(e, { type: 'group', name: undefined, group_type: groupType, group_key: groupKey });
  record(3, '$group', traits, edit);
}

/** Super properties: added to every later `track` and `page` event (their own properties win). */
export function register(properties) {
  checkProps(properties || 0); // required here: 0, like any non-object, is refused
  const added = { ...properties };
  enqueue(() => {
    supers = { ...supers, ...added };
    saveSupers();
  });
}

/** Removes one super property. */
export function unregister(name) {
  enqueue(() => {
    if (supers) {
      delete supers[name];
      if (!Object.keys(supers).length) supers = undefined;
    }
    saveSupers();
  });
}

/** Logout: forgets the user id and super properties; later events get a new anonymous id and session. */
export function reset() {
  enqueue(() => {
    supers = undefined;
    resetCore();
    saveSupers();
  });
}

/** Consent given: stores and sends what was held while consent was pending, and all after. */
export function optIn() {
  enqueue(() => {
    optInCore();
    adoptOrphans();
    if (supers) saveSupers();
  });
}

/** Consent refused or withdrawn: nothing more is recorded or sent, and the SDK's storage is cleared. */
export function optOut() {
  enqueue(() => {
    supers = undefined;
    optOutCore();
    saveSupers();
  });
}

/** Sends everything queued now. Resolves when the collector answered (or the send failed and
 * the events were kept for a retry); rejects only when the SDK is not initialised. */
export function flush() {
  return new Promise((resolve, reject) =>
    enqueue(
      (done) => {
        flushCore(done);
        return true;
      },
      resolve,
      reject,
    ),
  );
}
