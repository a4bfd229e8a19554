// Test harness for the npm package in a real browser: two local HTTP servers and a Chromium.
//
// - the site (http://127.0.0.1:A) serves the package folder (npm/) and in-memory test pages;
// - the collector (http://127.0.0.1:B, a different origin, as in production) records every
//   request to /v1/batch and answers with scripted statuses, CORS included.
// Only loopback addresses are used.

import http from 'node:http';
import { readFile } from 'node:fs/promises';
import { extname, join, normalize } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gunzipSync } from 'node:zlib';
import { chromium } from 'playwright-core';

const PACKAGE_DIR = fileURLToPath(new URL('..', import.meta.url));

const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.wasm': 'application/wasm',
  '.json': 'application/json',
  '.ts': 'text/plain; charset=utf-8',
};

/** Chromium flags that keep a headless run offline and quiet (see shared/toolchain.md). */
export const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

export function launchBrowser() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM_PATH ?? '/usr/bin/chromium',
    args: CHROMIUM_ARGS,
    headless: true,
  });
}

function listen(server) {
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(`http://127.0.0.1:${server.address().port}`)));
}

/**
 * Starts the site and the collector.
 * @param {object} options
 * @param {Array<number | { status: number, retryAfter?: number }>} [options.statuses] answers to
 *   successive batch requests (then 200); `retryAfter` (seconds) adds a `Retry-After` header
 * @param {number} [options.wasmDelayMs] delay before serving the .wasm (to test calls made before load)
 * @param {Record<string, string | { html: string, headers?: Record<string, string> }>} [options.pages] extra
 *   pages: path -> HTML, or HTML with extra response headers (a CSP); `COLLECTOR` in it is replaced
 * @param {string} [options.root] the folder the site serves (default: the package folder, npm/)
 */
export async function startServers({ statuses = [], wasmDelayMs = 0, pages = {}, root = PACKAGE_DIR } = {}) {
  const script = [...statuses];
  /** Every POST to /v1/batch: { status, key, contentType, mode, gzip, bytes, body, ids, at } */
  const requests = [];
  /** Every OPTIONS request: a preflight the SDK should never cause. */
  const preflights = [];
  let collectorOrigin = '';

  const collector = http.createServer((req, res) => {
    // Retry-After is not a CORS-safelisted response header: the collector must expose it.
    const cors = { 'access-control-allow-origin': '*', 'access-control-expose-headers': 'retry-after' };
    if (req.method === 'OPTIONS') {
      preflights.push(req.url);
      res.writeHead(204, { ...cors, 'access-control-allow-methods': 'POST', 'access-control-allow-headers': '*' });
      res.end();
      return;
    }
    const url = new URL(req.url, collectorOrigin);
    if (req.method === 'GET' && url.pathname.startsWith('/landing')) {
      // Another site for outbound links to go to (autocapture tests).
      res.writeHead(200, { 'content-type': TYPES['.html'] });
      res.end('<!doctype html><title>landing</title>');
      return;
    }
    if (req.method !== 'POST' || url.pathname !== '/v1/batch') {
      res.writeHead(404, cors);
      res.end();
      return;
    }
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      // As the edge does: `?compression=gzip` (or the header) says the body is gzip.
      const raw = Buffer.concat(chunks);
      const gzip = url.searchParams.get('compression') === 'gzip' || req.headers['content-encoding'] === 'gzip';
      let text;
      try {
        text = (gzip ? gunzipSync(raw) : raw).toString('utf8');
      } catch {
        text = '';
      }
      let body;
      try {
        body = JSON.parse(text);
      } catch {
        body = { unparsable: text };
      }
      const next = script.length ? script.shift() : 200;
      const { status, retryAfter } = typeof next === 'number' ? { status: next } : next;
      const events = Array.isArray(body.batch) ? body.batch : [];
      requests.push({
        status,
        key: url.searchParams.get('key'),
        contentType: req.headers['content-type'],
        // `no-cors` for sendBeacon, `cors` for the SDK's fetch: tells the two routes apart.
        mode: req.headers['sec-fetch-mode'],
        gzip,
        /** Bytes on the wire (the body as sent). */
        bytes: raw.length,
        body,
        ids: events.map((e) => e.id),
        at: Date.now(),
      });
      const answer =
        status === 200
          ? { accepted: events.length, rejected: [] }
          : { error: { code: status >= 500 ? 'unavailable' : 'malformed_json', message: 'scripted answer' } };
      const headers = { ...cors, 'content-type': 'application/json' };
      if (retryAfter !== undefined) headers['retry-after'] = String(retryAfter);
      res.writeHead(status, headers);
      res.end(JSON.stringify(answer));
    });
  });
  collectorOrigin = await listen(collector);

  const site = http.createServer(async (req, res) => {
    const path = new URL(req.url, 'http://site').pathname;
    if (path === '/favicon.ico') {
      res.writeHead(204);
      res.end();
      return;
    }
    if (pages[path] !== undefined) {
      const { html, headers = {} } = typeof pages[path] === 'string' ? { html: pages[path] } : pages[path];
      res.writeHead(200, { 'content-type': TYPES['.html'], ...headers });
      res.end(html.replaceAll('COLLECTOR', collectorOrigin));
      return;
    }
    const file = normalize(join(root, path.endsWith('/') ? `${path}index.html` : path));
    if (!file.startsWith(root)) {
      res.writeHead(403);
      res.end();
      return;
    }
    try {
      const data = await readFile(file);
      if (extname(file) === '.wasm' && wasmDelayMs) await new Promise((r) => setTimeout(r, wasmDelayMs));
      res.writeHead(200, { 'content-type': TYPES[extname(file)] ?? 'application/octet-stream', 'cache-control': 'no-store' });
      res.end(data);
    } catch {
      res.writeHead(404);
      res.end();
    }
  });
  const siteOrigin = await listen(site);

  return {
    siteOrigin,
    collectorOrigin,
    requests,
    preflights,
    /** Distinct ids of the events the collector accepted: what a collector that dedups keeps. */
    acceptedIds() {
      return new Set(requests.filter((r) => r.status === 200).flatMap((r) => r.ids));
    },
    /** Events the collector accepted (answered 200), in arrival order. */
    accepted() {
      return requests.filter((r) => r.status === 200).flatMap((r) => r.body.batch ?? []);
    },
    close() {
      site.closeAllConnections?.();
      collector.closeAllConnections?.();
      return Promise.all([new Promise((r) => site.close(r)), new Promise((r) => collector.close(r))]);
    },
  };
}

/** Polls `check` until it returns true, failing after `timeoutMs`. */
export async function waitFor(check, timeoutMs = 5000, what = 'condition') {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * A test page that loads the package from the site and initialises it against the collector.
 * `entry` is the shipped bundle by default; `/src/index.js` is the unbundled loader.
 */
export function testPage(initOptions, extraScript = '', entry = '/dist/index.js') {
  return `<!doctype html><html><head><meta charset="utf-8"><title>Nexus test page</title></head><body>
<script type="module">
import * as nexus from '${entry}';
window.nexus = nexus;
${initOptions ? `window.nexusReady = nexus.init(${JSON.stringify({ key: 'wk_test', endpoint: 'COLLECTOR', ...initOptions })});` : ''}
${extraScript}
</script></body></html>`;
}

const UUID_V7 = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

/** True for a lowercase UUID version 7 with the RFC 9562 variant. */
export function isUuidV7(id) {
  return typeof id === 'string' && UUID_V7.test(id);
}
