// Delivery that loses nothing: the persisted queue across reloads and offline periods, retries
// with backoff and Retry-After, and refusals that are not retried. Headless Chromium against the
// fake collector of harness.mjs. "Exactly once" here means what the SDK promises: the distinct
// ids the collector accepts are the ids tracked, and no id is sent again after a fetch of it was
// acknowledged (a resend is allowed only after a beacon, which never gets an answer).

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { launchBrowser, sleep, startServers, testPage, waitFor } from './harness.mjs';

let browser;
before(async () => {
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
});

/** A fresh context (its own localStorage) and page; collects uncaught errors. */
async function open() {
  const context = await newContext();
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  return { context, page, errors };
}

/** Ids of the events in the origin's persisted queues (one per tab: `nexus_queue:<tab>`). */
function storedIds(page) {
  return page.evaluate(() =>
    queueKeys()
      .flatMap((key) => localStorage.getItem(key).split('\n'))
      .filter(Boolean)
      .map((line) => JSON.parse(line).id),
  );
}

/** Defines `queueKeys()` in every page of a context: the keys of the stored queues. */
async function newContext() {
  const context = await browser.newContext();
  await context.addInitScript(() => {
    window.queueKeys = () => Object.keys(localStorage).filter((k) => k.startsWith('nexus_queue'));
  });
  return context;
}

/** Fails when an id acknowledged to a fetch (mode `cors`, 200) arrives again later. */
function assertNoResendAfterAck(requests) {
  const acknowledged = new Set();
  for (const r of requests) {
    for (const id of r.ids) assert.ok(!acknowledged.has(id), `${id} sent again after its fetch was acknowledged`);
    if (r.status === 200 && r.mode === 'cors') for (const id of r.ids) acknowledged.add(id);
  }
}

describe('delivery', () => {
  test('collector unreachable -> reload -> back online: every event arrives, once by id', async () => {
    const servers = await startServers({
      // A long interval: only flushAt and the browser's `online` event trigger sends here.
      pages: { '/offline.html': testPage({ flushAt: 2, flushIntervalMs: 600_000 }) },
    });
    const { context, page, errors } = await open();
    try {
      // Offline for the collector only (the page itself must still reload): every request
      // to it fails like a dropped connection, beacons included.
      const offline = (route) => route.abort('internetdisconnected');
      await context.route(`${servers.collectorOrigin}/**`, offline);
      await page.goto(`${servers.siteOrigin}/offline.html`);
      await page.evaluate(() => window.nexusReady);
      await page.evaluate(() => ['a1', 'a2', 'a3'].forEach((n) => window.nexus.track(n)));
      await sleep(200); // the flush at a2 fails
      const before = await storedIds(page);
      assert.equal(before.length, 3, 'the unsent events are stored');

      const [oldKey] = await page.evaluate(() => queueKeys());
      await page.reload();
      await page.evaluate(() => window.nexusReady);
      // The reloaded page is a new tab for the SDK: it takes over the queue its predecessor
      // left (whose lock the browser released), under a key of its own.
      await page.waitForFunction((old) => queueKeys().length === 1 && queueKeys()[0] !== old, oldKey);
      await page.evaluate(() => ['b1', 'b2'].forEach((n) => window.nexus.track(n)));
      await sleep(200); // the flush at b1 (flushAt reached with the 3 reloaded) fails too
      const tracked = await storedIds(page);
      assert.equal(tracked.length, 5);
      assert.deepEqual(tracked.slice(0, 3), before, 'the reload kept them, in order, with their ids');

      await context.unroute(`${servers.collectorOrigin}/**`, offline);
      await context.setOffline(true);
      await context.setOffline(false); // the `online` event ends the backoff and sends
      await waitFor(() => servers.acceptedIds().size >= 5, 5000, 'the 5 events');
      await sleep(300); // a duplicate would arrive meanwhile

      assert.deepEqual([...servers.acceptedIds()].sort(), [...tracked].sort(), 'every tracked id, and only those');
      assertNoResendAfterAck(servers.requests);
      // Whether Chromium let the reload's beacon through the route or not, the fetches
      // delivered each event once, in order.
      const fetched = servers.requests.filter((r) => r.mode === 'cors' && r.status === 200);
      assert.deepEqual(fetched.flatMap((r) => r.body.batch.map((e) => e.name)), ['a1', 'a2', 'a3', 'b1', 'b2']);
      assert.deepEqual(await storedIds(page), [], 'acknowledged: nothing left in storage');
      assert.deepEqual(errors, []);
    } finally {
      await context.close();
      await servers.close();
    }
  });

  test('two tabs tracking at the same time: no id sent twice, every event arrives', async () => {
    const servers = await startServers({ pages: { '/tab.html': testPage({ flushAt: 5, flushIntervalMs: 100 }) } });
    const context = await newContext();
    try {
      const tabs = [await context.newPage(), await context.newPage()];
      const url = `${servers.siteOrigin}/tab.html`;
      await Promise.all(tabs.map((p) => p.goto(url)));
      await Promise.all(tabs.map((p) => p.evaluate(() => window.nexusReady)));
      // Both tabs track 30 events each over the same ~300 ms.
      await Promise.all(
        tabs.map((p, t) =>
          p.evaluate(async (t) => {
            for (let i = 0; i < 30; i++) {
              window.nexus.track(`t${t}_${i}`);
              await new Promise((r) => setTimeout(r, 10));
            }
          }, t),
        ),
      );
      await waitFor(() => servers.acceptedIds().size >= 60, 5000, 'the 60 events');
      await sleep(400); // several ticks of both tabs: a duplicate would arrive meanwhile
      const names = servers.accepted().map((e) => e.name);
      assert.equal(names.length, 60, 'no event accepted twice');
      assert.equal(servers.acceptedIds().size, 60);
      for (const t of [0, 1]) {
        // As a set: two requests of one tab may be in flight at once and arrive in either order
        // (the events' timestamps keep their real order).
        const mine = names.filter((n) => n.startsWith(`t${t}_`)).sort();
        assert.deepEqual(mine, Array.from({ length: 30 }, (_, i) => `t${t}_${i}`).sort(), `tab ${t}: all of them`);
      }

      // Tab 0 closes with events it could not send; a tab opened later takes them over and
      // sends them, while the live tab 1 keeps its own.
      const [a, b] = tabs;
      const offline = (route) => route.abort('internetdisconnected');
      await a.route(`${servers.collectorOrigin}/**`, offline);
      await a.evaluate(() => ['orphan_1', 'orphan_2'].forEach((n) => window.nexus.track(n)));
      await b.evaluate(() => window.nexus.track('live_1'));
      await sleep(300);
      await a.close({ runBeforeUnload: true });
      const c = await context.newPage();
      await c.goto(url);
      await c.evaluate(() => window.nexusReady);
      await waitFor(() => servers.acceptedIds().size >= 63, 5000, 'the orphaned events');
      await sleep(400);
      const fetched = servers.requests.filter((r) => r.mode === 'cors' && r.status === 200).flatMap((r) => r.ids);
      assert.equal(new Set(fetched).size, fetched.length, 'no id fetched twice');
      assert.equal(servers.acceptedIds().size, 63);
      assertNoResendAfterAck(servers.requests);
      assert.deepEqual(await storedIds(c), []);
    } finally {
      await context.close();
      await servers.close();
    }
  });

  test('a collector answering 503 three times then 200 gets every event once, after backoff', async () => {
    const servers = await startServers({
      statuses: [503, 503, 503],
      pages: { '/retry.html': testPage({ flushAt: 100, flushIntervalMs: 100 }) },
    });
    const { context, page, errors } = await open();
    try {
      await page.goto(`${servers.siteOrigin}/retry.html`);
      await page.evaluate(() => window.nexusReady);
      await page.evaluate(() => ['s1', 's2', 's3'].forEach((n) => window.nexus.track(n)));
      const tracked = await storedIds(page);
      await waitFor(() => servers.acceptedIds().size >= 3, 10_000, 'the retried batch');
      await sleep(500); // more ticks: nothing may be sent again
      assert.deepEqual(servers.requests.map((r) => r.status), [503, 503, 503, 200]);
      for (const r of servers.requests) assert.deepEqual(r.ids, tracked, 'every attempt carries the same ids');
      assert.deepEqual(servers.accepted().map((e) => e.name), ['s1', 's2', 's3']);
      assertNoResendAfterAck(servers.requests);
      assert.deepEqual(await storedIds(page), []);
      assert.deepEqual(errors, []);
    } finally {
      await context.close();
      await servers.close();
    }
  });

  test('Retry-After is honoured', async () => {
    const servers = await startServers({
      statuses: [{ status: 429, retryAfter: 1 }],
      pages: { '/busy.html': testPage({ flushAt: 100, flushIntervalMs: 50 }) },
    });
    const { context, page } = await open();
    try {
      await page.goto(`${servers.siteOrigin}/busy.html`);
      await page.evaluate(() => window.nexusReady);
      await page.evaluate(() => window.nexus.track('busy'));
      await waitFor(() => servers.acceptedIds().size >= 1, 5000, 'the retry');
      const [first, second] = servers.requests;
      assert.equal(first.status, 429);
      assert.ok(second.at - first.at >= 990, `retried ${second.at - first.at} ms later, asked for 1 s`);
      assert.deepEqual(second.ids, first.ids);
    } finally {
      await context.close();
      await servers.close();
    }
  });

  test('a 400 is not retried, and the loss is reported on the next event', async () => {
    const servers = await startServers({
      statuses: [400],
      pages: { '/refused.html': testPage({ flushAt: 100, flushIntervalMs: 100 }) },
    });
    const { context, page } = await open();
    try {
      await page.goto(`${servers.siteOrigin}/refused.html`);
      await page.evaluate(() => window.nexusReady);
      await page.evaluate(async () => {
        window.nexus.track('refused_event');
        await window.nexus.flush();
      });
      await sleep(500); // several intervals
      assert.deepEqual(servers.requests.map((r) => r.status), [400]);
      assert.deepEqual(await storedIds(page), [], 'a refused event is not kept');
      await page.evaluate(async () => {
        window.nexus.track('next', { plan: 'pro' });
        await window.nexus.flush();
      });
      const next = servers.accepted();
      assert.deepEqual(next.map((e) => [e.name, e.properties, e.context.dropped]), [['next', { plan: 'pro' }, 1]]);
    } finally {
      await context.close();
      await servers.close();
    }
  });

  test('a burst of 10,000 calls delivers 10,000 ids, one request at a time, none refused', async () => {
    // A long interval: the periodic flush would start a second sending while one is out.
    const servers = await startServers({ pages: { '/burst.html': testPage({ flushIntervalMs: 600_000 }) } });
    const { context, page, errors } = await open();
    const failed = [];
    page.on('requestfailed', (r) => failed.push(`${r.url()} ${r.failure()?.errorText}`));
    // Requests out at once, counted in the page: the SDK's answer callback runs after `finally`.
    await page.addInitScript(() => {
      const fetch = window.fetch;
      window.out = 0;
      window.most = 0;
      window.fetch = function (...args) {
        if (!String(args[0]).includes('/v1/batch')) return fetch.apply(this, args); // the .wasm
        window.most = Math.max(window.most, ++window.out);
        return fetch.apply(this, args).finally(() => window.out--);
      };
    });
    try {
      await page.goto(`${servers.siteOrigin}/burst.html`);
      await page.evaluate(() => window.nexusReady);
      await page.evaluate(() => {
        for (let i = 0; i < 10_000; i++) window.nexus.track('burst', { i });
      });
      await waitFor(() => servers.acceptedIds().size >= 10_000, 30_000, 'the whole burst');
      const seen = new Set(servers.accepted().map((e) => e.properties.i));
      assert.equal(servers.acceptedIds().size, 10_000);
      assert.equal(seen.size, 10_000);
      assert.deepEqual(failed, [], 'no request refused or failed');
      assert.equal(await page.evaluate(() => window.most), 1, 'one request in flight at a time');
      // The burst reaches the core in one run after the task, then goes in batches of the
      // protocol's 1,000, gzipped: on the wire, no more per event than posthog-js's 58 B.
      assert.deepEqual(servers.requests.map((r) => r.ids.length), Array(10).fill(1000));
      assert.ok(servers.requests.every((r) => r.gzip), 'every fetch body gzipped');
      const bytes = servers.requests.reduce((n, r) => n + r.bytes, 0) / 10_000;
      assert.ok(bytes <= 58, `${bytes} B per event on the wire`);
      assert.ok(servers.requests.every((r) => r.status === 200));
      assert.deepEqual(errors, []);
    } finally {
      await context.close();
      await servers.close();
    }
  });
});
