// Helpers shared by the workerd suites: a miniflare instance of the built worker, requests, and
// a valid event. Not a test file (only `*.test.mjs` run).

import { randomUUID } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { Miniflare } from 'miniflare';

export const SCRIPT = fileURLToPath(new URL('../build/index.js', import.meta.url));
export const SECRET = 'test-origin-secret';
export const CHROME =
  'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36';
export const MAX_BATCH_BYTES = 512 * 1024;

/** The geo fields of miniflare's default `cf`; set to undefined they vanish from the blob. */
const CF_GEO_KEYS = [
  'asOrganization', 'asn', 'colo', 'city', 'region', 'regionCode', 'metroCode', 'postalCode',
  'country', 'continent', 'timezone', 'latitude', 'longitude', 'botManagement',
];
export const BARE_CF = Object.fromEntries(CF_GEO_KEYS.map((k) => [k, undefined]));

/** The worker's log lines, printed as miniflare would, except the one `ingest` line per request
 * (single.test.mjs asserts those; printed, they would bury everything else). */
function printLogs({ level, message }) {
  if (message.includes('"event":"ingest"')) return;
  (level === 'error' || level === 'warn' ? console.error : console.log)(message);
}

/** The built worker in miniflare; `extra` adds options (durableObjects, ratelimits, ...). */
export function worker(bindings, extra = {}) {
  return new Miniflare({
    modules: true,
    scriptPath: SCRIPT,
    modulesRules: [{ type: 'CompiledWasm', include: ['**/*.wasm'] }],
    compatibilityDate: '2026-04-01',
    bindings,
    handleStructuredLogs: printLogs,
    ...extra,
  });
}

/** A valid track event; `over` replaces fields. */
export function ev(over = {}) {
  return {
    id: randomUUID(),
    type: 'track',
    name: 'clicked',
    anonymous_id: 'anon-1',
    timestamp: new Date().toISOString(),
    ...over,
  };
}

/** One request to the worker; the answer with its body read and parsed when it is JSON. */
export async function call(mf, method, path, { headers = {}, body, cf = BARE_CF, duplex } = {}) {
  const init = { method, headers, body, cf };
  if (duplex) init.duplex = duplex;
  const res = await mf.dispatchFetch(`http://edge.test${path}`, init);
  const text = await res.text();
  let json;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: res.status, headers: res.headers, json, text };
}
