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
  /** Log every event and send to the console. Default false. */
  debug?: boolean;
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

/**
 * Event properties or person traits: a plain object serialisable with `JSON.stringify`
 * (at most 200 keys, nesting depth 8, strings up to 8 KiB; the whole event up to 32 KiB).
 */
export type Properties = Record<string, unknown>;

/**
 * Starts the SDK and loads its wasm core. Resolves when ready; rejects on invalid options.
 * A second call is ignored.
 */
export function init(options: InitOptions): Promise<void>;

/**
 * Records a named action (`name`: 1 to 200 bytes). Calls made before the SDK has loaded are
 * queued and replayed in order with their original time; once loaded, invalid arguments throw
 * an `Error` (before that, they are reported on the console).
 */
export function track(name: string, properties?: Properties): void;

/** Records a view of the current page (stored as `$pageview`); URL, title and referrer are added. */
export function page(properties?: Properties): void;

/**
 * Ties this browser to a known user id (1 to 200 bytes), kept for later events and visits, and
 * sets person properties from `traits`.
 */
export function identify(userId: string, traits?: Properties): void;

/**
 * Logout: forgets the user id set by {@link identify} and starts a new anonymous id and a new
 * session, so the events that follow are not tied to the ones before.
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
