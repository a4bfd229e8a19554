// The loader of @nexus-analytics/browser: a thin layer over the wasm core (built from
// sdk-wasm/ into ../wasm/ by `cargo xtask build-sdk`).
//
// Why a loader at all: the wasm module loads asynchronously, but `track()` must be callable the
// moment the page runs. Calls made before the wasm is ready are queued here, with the time they
// were made, and replayed in order once it is. The wasm starts loading on the first call, not
// on import, so importing the package costs nothing until it is used.
//
// Every export reaches the core through its own closure, never by name: an app's bundler then
// drops the loader and glue code of every function the app does not call (`group`, `alias`,
// ...), which is how the size budget is measured.

import initWasm, {
  adopt,
  flush as flushCore,
  identify as identifyCore,
  init as initCore,
  optIn as optInCore,
  optOut as optOutCore,
  page as pageCore,
  reset as resetCore,
  tick,
  track as trackCore,
} from '../wasm/nexus_sdk.js';

// Outside a browser (server-side rendering) every call is a harmless no-op.
const inBrowser = typeof window !== 'undefined' && typeof WebAssembly !== 'undefined';

// A page whose wasm never loads (blocked, offline) must not grow without bound.
const MAX_PENDING = 1000;

// One queue per tab, so that tabs never send the same event twice: the core stores this tab's
// queue under `nexus_queue:<tab>` and only this tab sends it, while the tab holds a Web Lock of
// that name for its whole life. A queue whose lock is free belongs to a tab that is gone (closed,
// reloaded, crashed: the browser releases its locks); a live tab takes it over under that lock,
// so two tabs never both take the same one. Without Web Locks (old browsers) every tab uses the
// one `nexus_queue` key, loaded at init: a duplicate is then possible, and harmless, as the
// collector drops a repeated id.
const QUEUE = 'nexus_queue';
const locks = inBrowser ? navigator.locks : undefined;
const tab = locks ? `${Date.now().toString(36)}${Math.random().toString(36).slice(2)}` : undefined;
let owner = false;
/** Set once the core is initialised and the timer and page listeners below run. */
let watching = false;
/** What the core queues as a microtask after a task that tracked: store the queue. */
const persist = () => tick(3);

/** Takes over the queues of tabs that are gone (see above). */
function adoptOrphans() {
  try {
    for (let i = 0; i < localStorage.length; i++) {
      const key = localStorage.key(i);
      if (key !== `${QUEUE}:${tab}` && (key === QUEUE || key?.startsWith(`${QUEUE}:`))) {
        locks.request(key, { ifAvailable: true }, (lock) => {
          const saved = lock && localStorage.getItem(key);
          // Stored as ours first, then removed: a crash in between duplicates, never loses.
          if (saved) adopt(saved);
          if (lock) localStorage.removeItem(key);
        });
      }
    }
  } catch {
    // Storage blocked (private mode, a sandboxed frame): there is nothing to adopt.
  }
}

/** @type {Array<{ run: (resolve?: (v?: unknown) => void) => unknown, resolve?: (v?: unknown) => void, reject?: (e: unknown) => void }>} */
let pending = [];
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
        const calls = pending;
        pending = [];
        for (const call of calls) replay(call);
      },
      (error) => {
        // A CSP without 'wasm-unsafe-eval', a blocked or missing file, no network: analytics
        // must never break the page, so this is said once and every call becomes a no-op
        // (promises resolve rather than reject: a page that does not catch them gets no error).
        failed = true;
        const calls = pending;
        pending = [];
        console.warn('nexus: SDK could not be loaded', error);
        for (const call of calls) call.resolve?.();
      },
    );
  }
  return loading;
}

/** Runs one queued call. Errors of fire-and-forget calls go to the console: their caller is gone. */
function replay({ run, resolve, reject }) {
  try {
    // `run` returns true when it settles the call itself (flush, once the collector answered).
    if (!run(resolve)) resolve?.();
  } catch (error) {
    if (reject) reject(error);
    else console.error(error);
  }
}

/** Runs `run` now when the wasm is ready, else queues it for when it is. */
function enqueue(run, settle) {
  if (!inBrowser || failed) {
    settle?.resolve();
  } else if (ready) {
    replay({ run, ...settle });
  } else {
    if (pending.length < MAX_PENDING) pending.push({ run, ...settle });
    else settle?.resolve();
    load();
  }
}

/** The time for a call queued now: the stub's time during a replay, else now. */
const now = () => stamp ?? Date.now();

/** Queues a recording call with its time, or runs it now: `call(at)` calls the core. */
function record(call) {
  if (ready) call(stamp);
  else {
    const at = now();
    enqueue(() => call(at));
  }
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
        if (ready) tick(2);
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
      if (ready) tick(2);
    }
  };
  document.addEventListener('visibilitychange', report);
  addEventListener('pagehide', report);
}

// Super properties (`register`): kept here and merged into each `track` and `page` event's
// properties (which win), so that an app that never registers any pays no wasm for them. Stored
// under `nexus_props` only when the core says it may write (consent granted, not cookieless);
// `reset` and `optOut` remove them, and the core removes the key when a privacy signal denies.
const PROPS = 'nexus_props';
/** @type {Record<string, unknown> | undefined} */
let supers;
const withSupers = (properties) => (supers ? { ...supers, ...properties } : properties);

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
    if (!options?.cookieless) {
      try {
        const saved = JSON.parse(localStorage.getItem(PROPS));
        if (saved && typeof saved === 'object') supers = saved;
      } catch {
        // Nothing stored, a damaged value, or storage blocked: no super properties.
      }
    }
    if (options?.spa) watchHistory();
  }
  return new Promise((resolve, reject) =>
    enqueue(
      () => {
        // Cookieless: no storage, so no per-tab queue to own or orphans to adopt.
        const perTab = locks && !options?.cookieless;
        initCore(options, perTab ? tab : undefined, persist); // throws on bad options: then nothing is held
        if (!watching) {
          watching = true;
          // The core's moments (see `tick` in sdk-wasm/src/web/api.rs): the periodic flush,
          // back online, and hidden or leaving (beacons).
          setInterval(() => tick(0), options.flushIntervalMs ?? 5000);
          addEventListener('online', () => tick(1));
          const hide = () => tick(2);
          addEventListener('pagehide', hide);
          document.addEventListener('visibilitychange', () => document.visibilityState === 'hidden' && hide());
        }
        if (perTab && !owner) {
          owner = true;
          // Held until the page is gone: the promise never settles. Requested before any event
          // is stored under the key, so no other tab can find the key with a free lock.
          locks.request(`${QUEUE}:${tab}`, () => new Promise(() => {}));
          adoptOrphans();
          // A tab closed while this one lived is taken over when the user comes back here.
          document.addEventListener('visibilitychange', () => document.visibilityState === 'visible' && adoptOrphans());
        }
      },
      { resolve, reject },
    ),
  );
}

/** Records a named action. Throws on invalid arguments once loaded (logged before). */
export function track(name, properties) {
  record((at) => trackCore(name, withSupers(properties), at));
}

/** Records a view of the current page. */
export function page(properties) {
  if (inBrowser) last = here();
  view(properties);
}

function view(properties, referrer) {
  record((at) => pageCore(withSupers(properties), at, referrer));
}

/** Ties this browser to a known user and sets person properties. */
export function identify(userId, traits) {
  record((at) => identifyCore(userId, traits, at));
}

/** An id argument as the protocol takes it: a string of 1 to 200 bytes. */
function checkId(value, what) {
  if (typeof value !== 'string' || !value || new TextEncoder().encode(value).length > 200) {
    throw new Error(`nexus: ${what} needs ids of 1..200 bytes`);
  }
}

/** Joins `userId` to `previousId` (default: the current user id, else the anonymous id). */
export function alias(userId, previousId) {
  checkId(userId, 'alias()');
  if (previousId !== undefined) checkId(previousId, 'alias()');
  // The current distinct id (the user id, else the anonymous id) is read off the event before
  // `user_id` is replaced; cookieless without a user id has none, and the collector refuses it.
  const edit = (e) =>
    Object.assign(e, { type: 'alias', name: undefined, user_id: userId, previous_id: previousId ?? e.user_id ?? e.anonymous_id });
  record((at) => trackCore('$alias', undefined, at, edit));
}

/** Associates the person with a group, e.g. `group('company', 'acme', { plan: 'pro' })`. */
export function group(groupType, groupKey, traits) {
  checkId(groupType, 'group()');
  checkId(groupKey, 'group()');
  const edit = (e) => Object.assign(e, { type: 'group', name: undefined, group_type: groupType, group_key: groupKey });
  record((at) => trackCore('$group', traits, at, edit));
}

/** Super properties: added to every later `track` and `page` event (their own properties win). */
export function register(properties) {
  if (!properties || typeof properties !== 'object' || Array.isArray(properties)) {
    throw new Error('nexus: properties must be a plain object');
  }
  supers = { ...supers, ...properties };
  enqueue(saveSupers);
}

/** Removes one super property. */
export function unregister(name) {
  if (supers) {
    delete supers[name];
    if (!Object.keys(supers).length) supers = undefined;
  }
  enqueue(saveSupers);
}

/** Logout: forgets the user id and super properties; later events get a new anonymous id and session. */
export function reset() {
  supers = undefined;
  enqueue(() => {
    resetCore();
    saveSupers();
  });
}

/** Consent given: stores and sends what was held while consent was pending, and all after. */
export function optIn() {
  enqueue(() => {
    optInCore();
    if (supers) saveSupers();
  });
}

/** Consent refused or withdrawn: nothing more is recorded or sent, and the SDK's storage is cleared. */
export function optOut() {
  supers = undefined;
  enqueue(() => {
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
      { resolve, reject },
    ),
  );
}
