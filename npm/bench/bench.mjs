// `cargo xtask bench-sdk`: the main-thread cost of track() in headless Chromium, for this SDK and
// for posthog-js (from npm, the baseline) in the same run, against local collectors.
//
// For each SDK, in a fresh browser context: the time from init to ready; 10,000 track() calls in
// one task (a burst), timed in chunks of 100 (the page is cross-origin isolated, so
// performance.now() ticks in 5 µs, not 100 µs), the median per call; the main-thread time per
// event including the deferred work (building, serialising, storing, compressing, sending),
// from Chromium's TaskDuration metric between the first call and 5 s after the flush that
// follows the burst; the bytes on the wire per event delivered (request bodies as sent,
// compressed or not, of the requests that carried measured events); and how many of the
// 10,000 events the collector received.
//
// Usage: node npm/bench/bench.mjs <dir holding node_modules/posthog-js>

import http from 'node:http';
import { readFile } from 'node:fs/promises';
import { extname, join, normalize } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gunzipSync } from 'node:zlib';
import { launchBrowser } from '../test/harness.mjs';

const PACKAGE_DIR = fileURLToPath(new URL('..', import.meta.url));
const POSTHOG_DIR = join(process.argv[2] ?? '.', 'node_modules/posthog-js/dist');
const CALLS = 10_000;
const CHUNK = 100;
const SETTLE_MS = 5000;
/** Cross-origin isolation (COOP + COEP): performance.now() ticks in 5 µs instead of 100 µs. */
const ISOLATED = {
  'cross-origin-opener-policy': 'same-origin',
  'cross-origin-embedder-policy': 'require-corp',
  'cross-origin-resource-policy': 'same-origin',
};
const TYPES = { '.html': 'text/html', '.js': 'text/javascript', '.wasm': 'application/wasm' };

/** Serves npm/ at / and posthog-js's dist/ at /posthog/; records every POST elsewhere. */
async function server() {
  const posts = [];
  const srv = http.createServer((req, res) => {
    const url = new URL(req.url, 'http://x');
    const cors = {
      'access-control-allow-origin': req.headers.origin ?? '*',
      'access-control-allow-credentials': 'true',
      'access-control-allow-headers': '*',
    };
    if (req.method === 'OPTIONS') {
      res.writeHead(204, { ...cors, 'access-control-allow-methods': 'POST, GET' });
      return res.end();
    }
    if (req.method === 'POST') {
      const chunks = [];
      req.on('data', (c) => chunks.push(c));
      req.on('end', () => {
        posts.push({ path: url.pathname, search: url.search, body: Buffer.concat(chunks) });
        res.writeHead(200, { ...cors, 'content-type': 'application/json' });
        res.end(url.pathname === '/v1/batch' ? '{"accepted":0,"rejected":[]}' : '{"status":1}');
      });
      return;
    }
    const [root, rest] = url.pathname.startsWith('/posthog/')
      ? [POSTHOG_DIR, url.pathname.slice('/posthog/'.length)]
      : [PACKAGE_DIR, url.pathname];
    const file = normalize(join(root, rest));
    readFile(file).then(
      (data) => {
        res.writeHead(200, { ...cors, ...ISOLATED, 'content-type': TYPES[extname(file)] ?? 'application/octet-stream' });
        res.end(data);
      },
      () => {
        res.writeHead(url.pathname.endsWith('.html') ? 404 : 200, { ...cors, 'content-type': 'application/json' });
        res.end('{}');
      },
    );
  });
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  return { origin: `http://127.0.0.1:${srv.address().port}`, posts, close: () => new Promise((r) => srv.close(r)) };
}

/** Events in a posthog-js request body: JSON, gzip, or a `data=` form field (base64). */
function posthogEvents(post) {
  let raw = post.body;
  if (raw[0] === 0x1f && raw[1] === 0x8b) raw = gunzipSync(raw);
  let text = raw.toString('utf8');
  if (text.startsWith('data=')) text = Buffer.from(decodeURIComponent(text.slice(5)), 'base64').toString('utf8');
  try {
    const parsed = JSON.parse(text);
    const list = Array.isArray(parsed) ? parsed : (parsed.batch ?? [parsed]);
    return list.filter((e) => e.event === 'bench' && e.properties?.i >= 0); // not the warm-up
  } catch {
    return [];
  }
}

/** Measured events in a nexus request body: JSON, gzipped when the URL says so. */
function nexusEvents(post) {
  if (post.path !== '/v1/batch') return [];
  const body = post.search.includes('compression=gzip') ? gunzipSync(post.body) : post.body;
  return JSON.parse(body).batch.filter((e) => e.properties?.i >= 0); // not the warm-up
}

const SDKS = {
  nexus: {
    page: () => `<!doctype html><body><script type="module">
      import * as nexus from '/dist/index.js';
      window.sdkInit = () => nexus.init({ key: 'wk_bench', endpoint: location.origin });
      window.sdkTrack = (i) => nexus.track('bench', { i, plan: 'pro' });
      window.sdkFlush = () => nexus.flush();
      window.sdkLoaded = true;
    </script></body>`,
    events: (posts) => posts.flatMap((p) => nexusEvents(p).map((e) => e.id)),
    bytes: (posts) => posts.filter((p) => nexusEvents(p).length).reduce((n, p) => n + p.body.length, 0),
  },
  'posthog-js': {
    page: () => `<!doctype html><body><script src="/posthog/array.js"></script><script>
      window.sdkInit = () => new Promise((resolve) => posthog.init('phc_bench', {
        api_host: location.origin, autocapture: false, capture_pageview: false, capture_pageleave: false,
        disable_session_recording: true, advanced_disable_flags: true, persistence: 'localStorage',
        opt_out_useragent_filter: true, // headless Chromium's user agent would count as a bot
        loaded: () => resolve(),
      }));
      window.sdkTrack = (i) => posthog.capture('bench', { i, plan: 'pro' });
      window.sdkFlush = () => {};
      window.sdkLoaded = true;
    </script></body>`,
    events: (posts) => posts.filter((p) => !p.path.startsWith('/v1/')).flatMap((p) => posthogEvents(p).map((e) => e.uuid)),
    bytes: (posts) => posts.filter((p) => posthogEvents(p).length).reduce((n, p) => n + p.body.length, 0),
  },
};

async function measure(browser, name) {
  const sdk = SDKS[name];
  const srv = await server();
  const context = await browser.newContext();
  try {
    const page = await context.newPage();
    await page.route('**/bench.html', (route) =>
      route.fulfill({ contentType: 'text/html', body: sdk.page(), headers: ISOLATED }),
    );
    await page.goto(`${srv.origin}/bench.html`);
    await page.waitForFunction(() => window.sdkLoaded);
    const initMs = await page.evaluate(async () => {
      const t0 = performance.now();
      await window.sdkInit();
      return performance.now() - t0;
    });
    await page.evaluate(() => {
      for (let i = 0; i < 50; i++) window.sdkTrack(-1); // warm-up (JIT), not counted below
    });
    await page.waitForTimeout(SETTLE_MS);
    const cdp = await context.newCDPSession(page);
    await cdp.send('Performance.enable');
    const taskTime = async () =>
      (await cdp.send('Performance.getMetrics')).metrics.find((m) => m.name === 'TaskDuration').value;
    const before = await taskTime();
    const chunks = await page.evaluate(
      ({ calls, chunk }) => {
        const times = [];
        for (let i = 0; i < calls; i += chunk) {
          const t0 = performance.now();
          for (let j = i; j < i + chunk; j++) window.sdkTrack(j);
          times.push(performance.now() - t0);
        }
        return times;
      },
      { calls: CALLS, chunk: CHUNK },
    );
    await page.evaluate(() => window.sdkFlush());
    await page.waitForTimeout(SETTLE_MS);
    const after = await taskTime();
    const ids = new Set(sdk.events(srv.posts));
    const benchIds = ids.size;
    const sorted = [...chunks].sort((a, b) => a - b);
    return {
      name,
      initMs,
      medianUs: (sorted[sorted.length >> 1] / CHUNK) * 1000,
      syncUs: (chunks.reduce((a, b) => a + b, 0) / CALLS) * 1000,
      withDeferredUs: ((after - before) / CALLS) * 1e6,
      bytesPerEvent: benchIds ? sdk.bytes(srv.posts) / benchIds : NaN,
      delivered: benchIds,
      requests: srv.posts.length,
    };
  } finally {
    await context.close();
    await srv.close();
  }
}

const browser = await launchBrowser();
try {
  const rows = [];
  for (const name of Object.keys(SDKS)) rows.push(await measure(browser, name));
  const [ours, base] = rows;
  const fmt = (n, d = 1) => (Number.isFinite(n) ? n.toFixed(d) : 'n/a');
  console.log(`\nSDK main-thread cost, headless Chromium, ${CALLS} track() calls in one task (chunks of ${CHUNK})\n`);
  console.log('| SDK | init -> ready ms | median track() µs | sync mean µs | with deferred work µs/event | bytes/event on the wire | delivered of 10,000 | requests |');
  console.log('| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |');
  for (const r of rows) {
    console.log(
      `| ${r.name} | ${fmt(r.initMs)} | ${fmt(r.medianUs, 2)} | ${fmt(r.syncUs, 2)} | ${fmt(r.withDeferredUs, 1)} | ${fmt(r.bytesPerEvent, 0)} | ${r.delivered} | ${r.requests} |`,
    );
  }
  console.log(
    `\nratios (nexus / posthog-js): median track() ${fmt(ours.medianUs / base.medianUs, 3)} (target <= 1/50 = 0.020), ` +
      `with deferred work ${fmt(ours.withDeferredUs / base.withDeferredUs, 3)} (target <= 0.333)`,
  );
} finally {
  await browser.close();
}
