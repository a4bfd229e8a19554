// The npm package in headless Chromium against a fake collector: what leaves the page when it
// is closed, reset, calls made before the wasm has loaded, errors, the demo (retries and the
// persisted queue are in delivery.test.mjs, SPA page views in spa.test.mjs).
// Needs the built package (`cargo xtask build-sdk`); run with `node --test npm/test/*.test.mjs`.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { isUuidV7, launchBrowser, sleep, startServers, testPage, waitFor } from './harness.mjs';

let browser;
before(async () => {
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
});

/**
 * Opens a page in a fresh context (its own localStorage) and collects its errors: uncaught
 * exceptions and console errors, except the browser's own "Failed to load resource" lines
 * that scripted 4xx/5xx answers cause.
 */
async function open(url) {
  const context = await browser.newContext();
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  page.on('console', (m) => {
    if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) errors.push(m.text());
  });
  await page.goto(url);
  return { page, context, errors };
}

describe('@nexus-analytics/browser', () => {
  for (const entry of ['/dist/index.js', '/src/index.js']) {
  test(`the events of a page that navigates away reach the collector, exactly once (${entry})`, async () => {
    const servers = await startServers({
      pages: {
        '/shop/cart.html': testPage({ flushAt: 20, flushIntervalMs: 60_000 }, '', entry),
        '/elsewhere.html': '<!doctype html><title>elsewhere</title>',
      },
    });
    try {
      const { page, context, errors } = await open(`${servers.siteOrigin}/shop/cart.html?utm_source=news&ref=1`);
      await page.evaluate(() => window.nexusReady);
      await page.evaluate(async () => {
        await window.nexus.init({ key: 'ignored', endpoint: 'http://127.0.0.1:9' }); // second call: no-op
        window.nexus.track('signup_clicked', { plan: 'pro', seats: 3 });
        window.nexus.page();
        window.nexus.identify('user-42', { email: 'a@example.com' });
      });
      assert.equal(servers.requests.length, 0, 'nothing sent before flushAt, the interval or leaving');
      await page.goto(`${servers.siteOrigin}/elsewhere.html`);
      await waitFor(() => servers.accepted().length >= 3, 5000, 'the 3 events');
      await sleep(300); // a duplicate (beacon and fetch both) would arrive meanwhile

      const events = servers.accepted();
      assert.equal(events.length, 3, 'exactly the 3 events');
      assert.deepEqual(events.map((e) => [e.type, e.name]), [
        ['track', 'signup_clicked'],
        ['page', undefined],
        ['identify', undefined],
      ]);
      assert.equal(new Set(events.map((e) => e.id)).size, 3);
      for (const e of events) {
        assert.ok(isUuidV7(e.id), e.id);
        assert.ok(isUuidV7(e.anonymous_id), e.anonymous_id);
        assert.ok(isUuidV7(e.session_id), e.session_id);
        assert.match(e.timestamp, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
        assert.equal(e.context.url, `${servers.siteOrigin}/shop/cart.html?utm_source=news&ref=1`);
        assert.equal(e.context.path, '/shop/cart.html');
        assert.equal(e.context.title, 'Nexus test page');
        assert.deepEqual(e.context.utm, { source: 'news' });
        assert.deepEqual(e.context.library, { name: 'nexus-js', version: '0.1.0' });
        assert.ok(e.context.screen.width > 0 && e.context.screen.height > 0);
        assert.equal(typeof e.context.timezone, 'string');
      }
      assert.equal(new Set(events.map((e) => e.anonymous_id)).size, 1);
      assert.deepEqual(events[0].properties, { plan: 'pro', seats: 3 });
      assert.equal(events[0].user_id, undefined);
      assert.equal(events[2].user_id, 'user-42');
      assert.deepEqual(events[2].set, { email: 'a@example.com' });

      assert.deepEqual(servers.requests.map((r) => r.mode), ['no-cors'], 'one beacon, no fetch');
      for (const r of servers.requests) {
        assert.equal(r.key, 'wk_test');
        assert.equal(r.contentType.toLowerCase(), 'text/plain;charset=utf-8'); // a Blob's type is lowercased
        assert.match(r.body.sent_at, /Z$/);
      }
      assert.deepEqual(servers.preflights, [], 'CORS-simple requests: no preflight');
      assert.deepEqual(errors, []);
      await context.close();
    } finally {
      await servers.close();
    }
  });
  }

  test('reset() at logout: no user id, a new anonymous id and a new session for later events', async () => {
    const servers = await startServers({
      pages: { '/account': testPage({ flushAt: 100, flushIntervalMs: 60_000 }) },
    });
    try {
      const { page, context, errors } = await open(`${servers.siteOrigin}/account`);
      await page.evaluate(() => window.nexusReady);
      const stored = await page.evaluate(async () => {
        window.nexus.identify('user-7');
        window.nexus.track('before');
        window.nexus.reset();
        window.nexus.track('after');
        await window.nexus.flush();
        return { anon: localStorage.getItem('nexus_anon_id'), user: localStorage.getItem('nexus_user_id') };
      });
      await waitFor(() => servers.accepted().length >= 3, 5000, 'the 3 events');
      const [, before, after] = servers.accepted();
      assert.equal(before.name, 'before');
      assert.equal(before.user_id, 'user-7');
      assert.equal(after.name, 'after');
      assert.equal(after.user_id, undefined, 'the user id is forgotten');
      assert.notEqual(after.anonymous_id, before.anonymous_id, 'a new anonymous id');
      assert.notEqual(after.session_id, before.session_id, 'a new session');
      assert.deepEqual(stored, { anon: after.anonymous_id, user: null }, 'the new id is the stored one');
      assert.deepEqual(errors, []);
      await context.close();
    } finally {
      await servers.close();
    }
  });

  test('calls made before the wasm has loaded are replayed in order, with their own time', async () => {
    const calls = `
      window.calledAt = Date.now();
      nexus.init({ key: 'wk_test', endpoint: 'COLLECTOR', flushAt: 100, flushIntervalMs: 60000 });
      nexus.track('first', { n: 1 });
      nexus.page({ n: 2 });
      nexus.identify('u-1', { plan: 'free' });
      nexus.track('last', { n: 4 });
      window.flushed = nexus.flush().then(() => Date.now());`;
    const servers = await startServers({ wasmDelayMs: 400, pages: { '/early.html': testPage(null, calls) } });
    try {
      const { page, context, errors } = await open(`${servers.siteOrigin}/early.html`);
      const flushedAt = await page.evaluate(() => window.flushed);
      const calledAt = await page.evaluate(() => window.calledAt);
      assert.ok(flushedAt - calledAt >= 350, 'the wasm really arrived later');
      const events = servers.accepted();
      assert.deepEqual(events.map((e) => [e.type, e.name ?? null, e.properties?.n ?? null]), [
        ['track', 'first', 1],
        ['page', null, 2],
        ['identify', null, null],
        ['track', 'last', 4],
      ]);
      assert.equal(events[0].user_id, undefined);
      assert.equal(events[3].user_id, 'u-1');
      for (const e of events) {
        const t = Date.parse(e.timestamp);
        assert.ok(t >= calledAt && t < calledAt + 300, `timestamp ${e.timestamp} is when the call was made`);
      }
      const times = events.map((e) => Date.parse(e.timestamp));
      assert.deepEqual(times, [...times].sort((a, b) => a - b));
      assert.deepEqual(errors, []);
      await context.close();
    } finally {
      await servers.close();
    }
  });

  test('invalid calls throw real Errors once loaded; flush without init rejects', async () => {
    const servers = await startServers({ pages: { '/errors.html': testPage(null) } });
    try {
      const { page, context } = await open(`${servers.siteOrigin}/errors.html`);
      const result = await page.evaluate(async () => {
        const out = {};
        out.flush = await window.nexus.flush().then(() => 'resolved', (e) => `${e instanceof Error}:${e.message}`);
        out.init = await window.nexus.init({ endpoint: 'x' }).then(() => 'resolved', (e) => `${e instanceof Error}:${e.message}`);
        await window.nexus.init({ key: 'wk_test', endpoint: 'http://127.0.0.1:9' });
        try {
          window.nexus.track('', {});
        } catch (e) {
          out.track = `${e instanceof Error}:${e.message}`;
        }
        try {
          window.nexus.identify(42);
        } catch (e) {
          out.identify = `${e instanceof Error}:${e.message}`;
        }
        return out;
      });
      assert.match(result.flush, /^true:nexus: call init\(\) first/);
      assert.match(result.init, /^true:nexus: init\(\) needs/);
      assert.match(result.track, /^true:nexus: track\(\) needs a name/);
      assert.match(result.identify, /^true:nexus: identify\(\) needs a user id/);
      assert.equal(servers.requests.length, 0);
      await context.close();
    } finally {
      await servers.close();
    }
  });

  test('the demo page sends what its buttons record', async () => {
    const servers = await startServers();
    try {
      const url = `${servers.siteOrigin}/demo/index.html?endpoint=${encodeURIComponent(servers.collectorOrigin)}&key=wk_demo`;
      const { page, context, errors } = await open(url);
      await page.waitForFunction(() => document.getElementById('log').textContent.includes('ready'));
      await page.click('#track');
      await page.click('#identify');
      await page.click('#flush');
      await waitFor(() => servers.accepted().length >= 3, 5000, 'the demo events');
      const events = servers.accepted();
      assert.deepEqual(events.map((e) => e.type), ['page', 'track', 'identify']);
      assert.equal(events[1].name, 'button_clicked');
      assert.equal(events[2].user_id, 'user-42');
      assert.ok(servers.requests.every((r) => r.key === 'wk_demo'));
      assert.deepEqual(errors, []);
      await context.close();
    } finally {
      await servers.close();
    }
  });
});
