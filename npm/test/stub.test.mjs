// The queue-before-load snippet (src/stub.js, shipped minified as dist/stub.min.js) and pages
// where WebAssembly cannot load: calls made before the SDK is there arrive in order with their
// own time; a strict CSP or a blocked file gives one console warning, and page code never throws.
// Needs the built package (`cargo xtask build-sdk`); run with `node --test npm/test/*.test.mjs`.

import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { after, before, describe, test } from 'node:test';
import { launchBrowser, sleep, startServers, waitFor } from './harness.mjs';

const STUB = await readFile(new URL('../dist/stub.min.js', import.meta.url), 'utf8');
const NONCE = 'n0nce4test';
/** script-src without 'wasm-unsafe-eval': the page's scripts run, WebAssembly may not compile. */
const STRICT_CSP = { 'content-security-policy': `script-src 'self' 'nonce-${NONCE}'; object-src 'none'; base-uri 'none'` };

let browser;
before(async () => {
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
});

/** A page with the snippet inline (loading `src`), then `calls` in a classic script. */
function stubPage(calls, src = '/dist/nexus.js') {
  return `<!doctype html><html><head><meta charset="utf-8"><title>stub</title>
<script nonce="${NONCE}">${STUB.replace("'/dist/nexus.js'", JSON.stringify(src)).replace('"/dist/nexus.js"', JSON.stringify(src))}</script>
</head><body><script nonce="${NONCE}">${calls}</script></body></html>`;
}

/** Opens `url` in a fresh context; collects uncaught errors and console messages. */
async function open(url) {
  const context = await browser.newContext();
  const page = await context.newPage();
  const errors = [];
  const logs = [];
  page.on('pageerror', (e) => errors.push(e.message));
  page.on('console', (m) => logs.push({ type: m.type(), text: m.text() }));
  await page.goto(url);
  return { context, page, errors, logs };
}

describe('stub snippet', () => {
  test('the snippet is a few hundred bytes', () => {
    assert.ok(STUB.length < 700, `${STUB.length} B`);
  });

  test('calls made before the SDK loads are replayed in order, with their own time', async () => {
    const calls = `
      window.calledAt = Date.now();
      nexus.init({ key: 'wk_test', endpoint: 'COLLECTOR', flushAt: 100, flushIntervalMs: 60000 });
      nexus.register({ via: 'stub' });
      nexus.track('first', { n: 1 });
      nexus.page({ n: 2 });
      nexus.identify('u-1', { plan: 'free' });
      nexus.group('company', 'acme');
      nexus.track('last', { n: 5 });
      window.stubbed = typeof nexus.q;
      window.flushed = nexus.flush().then(() => Date.now());`;
    const servers = await startServers({ wasmDelayMs: 400, pages: { '/early.html': stubPage(calls) } });
    try {
      const { page, context, errors } = await open(`${servers.siteOrigin}/early.html`);
      const flushedAt = await page.evaluate(() => window.flushed);
      const calledAt = await page.evaluate(() => window.calledAt);
      assert.equal(await page.evaluate(() => window.stubbed), 'object', 'the calls went to the stub');
      assert.ok(flushedAt - calledAt >= 350, 'the wasm really arrived later');
      const events = servers.accepted();
      assert.deepEqual(events.map((e) => [e.type, e.name ?? null, e.properties?.n ?? null]), [
        ['track', 'first', 1],
        ['page', null, 2],
        ['identify', null, null],
        ['group', null, null],
        ['track', 'last', 5],
      ]);
      assert.equal(events[0].properties.via, 'stub', 'register was replayed first');
      assert.equal(events[4].user_id, 'u-1');
      for (const e of events) {
        const t = Date.parse(e.timestamp);
        assert.ok(t >= calledAt && t < calledAt + 300, `timestamp ${e.timestamp} is when the call was made`);
      }
      // The real functions replaced the stub's, on the same object.
      const after = await page.evaluate(async () => {
        window.nexus.track('after_load');
        await window.nexus.flush();
        return { q: window.nexus.q, track: typeof window.nexus.track };
      });
      assert.deepEqual(after, { q: undefined, track: 'function' });
      await waitFor(() => servers.accepted().some((e) => e.name === 'after_load'), 5000, 'a call after load');
      assert.deepEqual(errors, []);
      await context.close();
    } finally {
      await servers.close();
    }
  });

  test('the script build takes autocapture as init options', async () => {
    const calls = `window.nexusReady = nexus.init({ key: 'wk_test', endpoint: 'COLLECTOR', flushAt: 100, outboundLinks: true, webVitals: true });`;
    const html = stubPage(calls).replace('</body>', '<a id="out" href="COLLECTOR/landing">out</a></body>');
    const servers = await startServers({ pages: { '/auto.html': html } });
    try {
      const { page, context, errors } = await open(`${servers.siteOrigin}/auto.html`);
      await page.evaluate(() => window.nexusReady);
      assert.equal(await page.evaluate(() => 'q' in window.nexus), false, 'the real functions are in place');
      await Promise.all([page.waitForURL(`${servers.collectorOrigin}/landing`, { waitUntil: 'commit' }), page.click('#out')]);
      await waitFor(() => servers.accepted().length >= 1, 5000, 'the outbound click');
      await sleep(300);
      // The click, and the vitals of the page it left (its LCP at least), both by beacon.
      const names = servers.accepted().map((e) => e.name).sort();
      assert.deepEqual(names, ['$outbound_click', '$web_vitals']);
      assert.deepEqual(errors, []);
      await context.close();
    } finally {
      await servers.close();
    }
  });

  // Each page calls the API before and after the failure, awaits init and flush, and records
  // whether anything threw.
  const pageCode = `
    window.outcome = (async () => {
      const n = window.nexus;
      n.init({ key: 'wk_test', endpoint: 'COLLECTOR', flushAt: 1 });
      n.track('before_failure');
      await n.flush();
      await new Promise((r) => setTimeout(r, 300));
      n.track('after_failure');
      n.page();
      n.identify('u');
      await n.init({ key: 'wk_test', endpoint: 'COLLECTOR' });
      await n.flush();
      return 'no throw';
    })().catch((e) => 'threw: ' + e);`;

  const cases = [
    ['a strict CSP (no wasm-unsafe-eval), with the snippet', () => ({ html: stubPage(pageCode), headers: STRICT_CSP })],
    [
      'a strict CSP (no wasm-unsafe-eval), with the ES module',
      () => ({
        html: `<!doctype html><body><script type="module" nonce="${NONCE}">
          import * as nexus from '/dist/index.js'; window.nexus = nexus; ${pageCode}</script></body>`,
        headers: STRICT_CSP,
      }),
    ],
    ['a blocked SDK file, with the snippet', () => stubPage(pageCode, '/dist/blocked-by-an-extension.js')],
  ];
  for (const [name, make] of cases) {
    test(`${name}: one warning, and page code never throws`, async () => {
      const servers = await startServers({ pages: { '/p.html': make() } });
      try {
        const { page, context, errors, logs } = await open(`${servers.siteOrigin}/p.html`);
        assert.equal(await page.evaluate(() => window.outcome), 'no throw');
        await sleep(200);
        assert.deepEqual(errors, [], 'no uncaught error or unhandled rejection');
        const warnings = logs.filter((l) => l.text.startsWith('nexus:'));
        assert.equal(warnings.length, 1, JSON.stringify(logs));
        assert.equal(warnings[0].type, 'warning');
        assert.match(warnings[0].text, /could not be loaded/);
        assert.equal(servers.requests.length, 0, 'nothing sent');
        await context.close();
      } finally {
        await servers.close();
      }
    });
  }
});
