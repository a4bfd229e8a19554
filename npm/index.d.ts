// Types of @nexus-analytics/browser (the loader in src/index.js).

/** Options of {@link init}. */
export interface InitOptions {
  /** The project's write key (public: it only allows sending events). */
  key: string;
  /** Origin of the collector, e.g. `https://collect.example.com`. Default: the page's own origin. */
  endpoint?: string;
  /** Send as soon as this many events are queued (1 to 1000). Default 20. */
  flushAt?: number;
  /**
   * Also send every this many milliseconds. Also the base of the retry backoff: after the n-th
   * failure in a row the next try waits a random time up to `flushIntervalMs × 2^(n−1)` (at most
   * 5 minutes), or the collector's `Retry-After` when longer. Default 5000.
   */
  flushIntervalMs?: number;
  /** Log the body of every request to the console, as sent (after `beforeSend`). Default false. */
  debug?: boolean;
  /**
   * Gets every finished event, as it will be sent, and returns it (edited or not), or `null` /
   * `undefined` to drop it: a dropped event is never sent. It runs when the event is built,
   * after the task that tracked it: an exception drops the event and is logged to the console.
   */
  beforeSend?: (event: SentEvent) => SentEvent | null | undefined;
  /**
   * No persistent identifiers: nothing in `localStorage`, no anonymous id sent (the collector's
   * daily visitor hash stands in), the session and the queue in memory only. Default false.
   */
  cookieless?: boolean;
  /**
   * Share of persons recorded, 0 to 1, decided by a hash of the anonymous id (the same person
   * is always in or always out). Default 1.
   */
  sampleRate?: number;
  /**
   * `'pending'`: hold events in memory (nothing stored, nothing sent) until {@link optIn};
   * {@link optOut} drops them. A grant is remembered for later pages. Default: granted.
   */
  consent?: 'pending' | 'granted';
  /** Treat Do-Not-Track or Global Privacy Control as a refusal (as {@link optOut}). Default false. */
  respectDnt?: boolean;
  /**
   * Single-page apps: record a page view whenever `history.pushState`, `replaceState` or the
   * back/forward buttons change the URL (fragment ignored), with the previous URL as its
   * referrer. Call {@link page} yourself only for the first page. Default false.
   */
  spa?: boolean;
}

/** An event as sent (see docs/protocol.md); `beforeSend` may edit it. */
export interface SentEvent {
  id: string;
  type: 'track' | 'page' | 'identify' | 'alias' | 'group';
  name?: string;
  anonymous_id?: string;
  user_id?: string;
  session_id?: string;
  timestamp: string;
  properties?: Properties;
  set?: Properties;
  previous_id?: string;
  group_type?: string;
  group_key?: string;
  context: Record<string, unknown>;
  [field: string]: unknown;
}

/**
 * Event properties or person traits: a plain object serialisable with `JSON.stringify`
 * (at most 200 keys, nesting depth 8, strings up to 8 KiB; the whole event up to 32 KiB).
 */
export type Properties = Record<string, unknown>;

/**
 * Starts the SDK and loads its wasm core. Resolves when ready; rejects on invalid options.
 * A second call is ignored. If the wasm cannot load (a blocked file, a CSP without
 * `'wasm-unsafe-eval'`), the console says so once, this resolves, and every call is a no-op.
 */
export function init(options: InitOptions): Promise<void>;

/**
 * Records a named action (`name`: 1 to 200 bytes). Throws an `Error` on an invalid name or
 * properties that are not a plain object. Only queues the call, with its time and the page's
 * URL: the event is built after the current task (at once if the page is hidden, or when
 * another SDK function is called), so `properties` are read (copied) then. Do not mutate the
 * object you passed later in the same synchronous code. What fails only then (a `beforeSend`
 * that throws, properties `JSON.stringify` refuses) is reported on the console.
 */
export function track(name: string, properties?: Properties): void;

/**
 * Records a view of the current page (stored as `$pageview`); URL, title and referrer are added
 * (the URL as it is at the call, the title when the event is built). Queued as {@link track}.
 */
export function page(properties?: Properties): void;

/**
 * Ties this browser to a known user id (1 to 200 bytes), kept for later events and visits, and
 * sets person properties from `traits`. Throws on an invalid id; queued as {@link track}.
 */
export function identify(userId: string, traits?: Properties): void;

/**
 * Logout: forgets the user id set by {@link identify} and the super properties, and starts a new
 * anonymous id and a new session, so the events that follow are not tied to the ones before.
 */
export function reset(): void;

/** Consent given: stores and sends the events held while it was pending, and all later ones. */
export function optIn(): void;

/**
 * Consent refused or withdrawn: forgets held and queued events and ids, removes what the SDK
 * stored in `localStorage`, and records nothing until {@link optIn}.
 */
export function optOut(): void;

/**
 * Sends everything queued now. Resolves once the collector answered; a failed send keeps its
 * events (in `localStorage`) for the next attempt and resolves too. While a retry delay runs
 * (backoff or `Retry-After`), sends nothing and resolves at once. Rejects when {@link init} was
 * not called.
 */
export function flush(): Promise<void>;

/**
 * Joins `userId` to `previousId` (default: the current user id, else the anonymous id) as one
 * person. Throws on ids that are not 1 to 200 bytes.
 */
export function alias(userId: string, previousId?: string): void;

/** Associates the person with a group (`group('company', 'acme', { seats: 5 })`). */
export function group(groupType: string, groupKey: string, traits?: Properties): void;

/**
 * Super properties: added to every later `track` and `page` event (the event's own properties
 * win), kept in `localStorage` under the consent rules; `reset` and `optOut` remove them.
 */
export function register(properties: Properties): void;

/** Removes one super property. */
export function unregister(name: string): void;

/**
 * Records clicks on links to other hosts as `$outbound_click` (`url`, `target`), handed to
 * `sendBeacon` at once; the click and its navigation are left untouched.
 */
export function captureOutboundLinks(): void;

/**
 * Records LCP, CLS and INP as one `$web_vitals` event when the page is hidden or left. Call it
 * before `init` resolves.
 */
export function captureWebVitals(): void;
