// The loader of @nexus-analytics/browser: a thin layer over the wasm core (built from
// sdk-wasm/ into ../wasm/ by `cargo xtask build-sdk`).
//
// Why a loader at all: the wasm module loads asynchronously, but `track()` must be callable the
// moment the page runs. Calls made before the wasm is ready are queued here, with the time they
// were made, and replayed in order once it is. The wasm starts loading on the first call, not
// on import, so importing the package costs nothing until it is used.

import initWasm, { adopt, flush as flushCore, identify as identifyCore, init as initCore, optIn as optInCore, optOut as optOutCore, page as pageCore, reset as resetCore, track as trackCore } from '../wasm/nexus_sdk.js';

// The core's functions by name, for replaying queued calls. Named imports rather than
// `import * as core` and `core[name]`: a dynamic lookup keeps every export of the glue in the
// bundle (`initSync` and its helpers too); with names, esbuild drops what is never called.
const core = {
  adopt,
  flush: flushCore,
  identify: identifyCore,
  init: initCore,
  optIn: optInCore,
  optOut: optOutCore,
  page: pageCore,
  reset: resetCore,
  track: trackCore,
};

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

/** Takes over the queues of tabs that are gone (see above). */
function adoptOrphans() {
  try {
    for (let i = 0; i < localStorage.length; i++) {
      const key = localStorage.key(i);
      if (key !== `${QUEUE}:${tab}` && (key === QUEUE || key?.startsWith(`${QUEUE}:`))) {
        locks.request(key, { ifAvailable: true }, (lock) => {
          const saved = lock && localStorage.getItem(key);
          // Stored as ours first, then removed: a crash in between duplicates, never loses.
          if (saved) core.adopt(saved);
          if (lock) localStorage.removeItem(key);
        });
      }
    }
  } catch {
    // Storage blocked (private mode, a sandboxed frame): there is nothing to adopt.
  }
}

/** @type {Array<{ name: string, args: unknown[], resolve?: (v?: unknown) => void, reject?: (e: unknown) => void }>} */
let pending = [];
let ready = false;
/** @type {Promise<void> | undefined} */
let loading;
/** Set when the wasm failed to load: later calls fail at once instead of queueing forever. */
let failure;

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
        failure = error;
        const calls = pending;
        pending = [];
        console.error('nexus: the SDK could not be loaded', error);
        for (const call of calls) call.reject?.(error);
      },
    );
  }
  return loading;
}

/** Runs one queued call. Errors of fire-and-forget calls go to the console: their caller is gone. */
function replay({ name, args, resolve, reject }) {
  try {
    if (name === 'flush') {
      core.flush(resolve);
      return;
    }
    if (name === 'init' && locks) {
      core.init(args[0], tab); // throws on bad options: then nothing is held
      if (!owner) {
        owner = true;
        // Held until the page is gone: the promise never settles. Requested before any event
        // is stored under the key, so no other tab can find the key with a free lock.
        locks.request(`${QUEUE}:${tab}`, () => new Promise(() => {}));
        adoptOrphans();
        // A tab closed while this one lived is taken over when the user comes back here.
        document.addEventListener('visibilitychange', () => document.visibilityState === 'visible' && adoptOrphans());
      }
      resolve?.();
      return;
    }
    // @ts-ignore: the remaining names are functions of the core with these arguments
    core[name](...args);
    resolve?.();
  } catch (error) {
    if (reject) reject(error);
    else console.error(error);
  }
}

/** Queues a call for the wasm, or runs it now when the wasm is ready. */
function enqueue(name, args, settle) {
  if (!inBrowser) {
    settle?.resolve();
    return;
  }
  if (failure) {
    settle?.reject(failure);
    return;
  }
  if (ready) {
    replay({ name, args, ...settle });
    return;
  }
  if (pending.length < MAX_PENDING) {
    pending.push({ name, args, ...settle });
  } else {
    settle?.reject(new Error('nexus: too many calls before the SDK loaded'));
  }
  load();
}

// Single-page apps (init option `spa: true`): one patch of `history.pushState`/`replaceState`
// and one `popstate` listener record a page view when the URL changes. URLs are compared without
// their fragment, so a hash change, a `replaceState` that keeps the URL or a `popstate` after a
// push to the same URL records nothing: never a double page view. The referrer of such a page
// view is the previous page view's URL (`document.referrer` still names the page before the app).
/** The URL (without fragment) of the last page view, recorded or SPA; unset until then. */
let last;
let spa = false;
const here = () => location.href.split('#')[0];

function spaView() {
  const url = here();
  if (url !== last) {
    const referrer = last;
    last = url;
    view(undefined, referrer);
  }
}

/** Starts the SDK. Resolves once it is loaded and configured; a second call is ignored. */
export function init(options) {
  // Patched at the call, not once loaded: navigations during the load are not missed.
  if (inBrowser && options?.spa && !spa) {
    spa = true;
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
  return new Promise((resolve, reject) => enqueue('init', [options], { resolve, reject }));
}

/** Records a named action. Throws on invalid arguments once loaded (logged before). */
export function track(name, properties) {
  // The time is taken now: a call queued during loading keeps its real time.
  if (ready) core.track(name, properties);
  else enqueue('track', [name, properties, Date.now()]);
}

/** Records a view of the current page. */
export function page(properties) {
  if (inBrowser) last = here();
  view(properties);
}

function view(properties, referrer) {
  if (ready) core.page(properties, undefined, referrer);
  else enqueue('page', [properties, Date.now(), referrer]);
}

/** Ties this browser to a known user and sets person properties. */
export function identify(userId, traits) {
  if (ready) core.identify(userId, traits);
  else enqueue('identify', [userId, traits, Date.now()]);
}

/** Logout: forgets the user id; later events get a new anonymous id and a new session. */
export function reset() {
  enqueue('reset', []);
}

/** Consent given: stores and sends what was held while consent was pending, and all after. */
export function optIn() {
  enqueue('optIn', []);
}

/** Consent refused or withdrawn: nothing more is recorded or sent, and the SDK's storage is cleared. */
export function optOut() {
  enqueue('optOut', []);
}

/** Sends everything queued now. Resolves when the collector answered (or the send failed and
 * the events were kept for a retry); rejects only when the SDK is not initialised. */
export function flush() {
  return new Promise((resolve, reject) => enqueue('flush', [], { resolve, reject }));
}
