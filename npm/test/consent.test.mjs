// Consent as a state machine in a real page: pending holds events in memory (nothing stored,
// nothing sent), optIn sends what was held, optOut (or a honoured privacy signal) sends nothing
// and leaves nothing in localStorage.

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

/** The SDK's keys in the page's localStorage, with their values. */
function stored(page) {
  return page.evaluate(() => Object.fromEntries(Object.entries(localStorage).filter(([k]) => k.startsWith('nexus'))));
}

describe('consent', () => {
  test('pending holds events in memory only; optIn sends them and is remembered', async () => {
    const servers = await startServers({
      pages: { '/pending.html': testPage({ consent: 'pending', flushAt: 2, flushIntervalMs: 100 }) },
    });
    const context = await browser.newContext();
    try {
      const page = await context.newPage();
      await page.goto(`${servers.siteOrigin}/pending.html`);
      await page.evaluate(() => window.nexusReady);
      await page.evaluate(() => {
        window.nexus.track('held_1');
        window.nexus.page();
        window.nexus.identify('user-1');
      });
      await sleep(400); // flushAt passed, several ticks
      assert.equal(servers.requests.length, 0, 'nothing sent while pending');
      assert.deepEqual(await stored(page), {}, 'nothing stored while pending');

      await page.evaluate(() => window.nexus.optIn());
      await waitFor(() => servers.accepted().length >= 3, 5000, 'the held events');
      const held = servers.accepted();
      assert.deepEqual(held.map((e) => e.name ?? e.type), ['held_1', 'page', 'identify']);
      assert.equal(new Set(held.map((e) => e.anonymous_id)).size, 1);
      const keys = await stored(page);
      assert.equal(keys.nexus_consent, 'granted');
      assert.equal(keys.nexus_anon_id, held[0].anonymous_id, 'the id made while pending is kept');

      // The next page starts granted, as the same person.
      await page.reload();
      await page.evaluate(() => window.nexusReady);
      await page.evaluate(() => window.nexus.track('after_reload'));
      await waitFor(() => servers.accepted().length >= 4, 5000, 'the event after the reload');
      const last = servers.accepted()[3];
      assert.equal(last.name, 'after_reload');
      assert.equal(last.anonymous_id, held[0].anonymous_id);
    } finally {
      await context.close();
      await servers.close();
    }
  });

  test('optOut sends nothing and leaves nothing in storage, also after consent was given', async () => {
    const servers = await startServers({
      pages: {
        '/pending.html': testPage({ consent: 'pending', flushAt: 1, flushIntervalMs: 100 }),
        '/granted.html': testPage({ flushAt: 100, flushIntervalMs: 600_000 }),
      },
    });
    const context = await browser.newContext();
    try {
      // Pending, then denied: the held events are dropped.
      const page = await context.newPage();
      await page.goto(`${servers.siteOrigin}/pending.html`);
      await page.evaluate(() => window.nexusReady);
      await page.evaluate(() => {
        window.nexus.track('never_1');
        window.nexus.optOut();
        window.nexus.track('never_2');
      });
      await sleep(400);
      assert.deepEqual(await stored(page), {});

      // Granted with a queue and ids stored, then withdrawn: everything goes.
      const other = await context.newPage();
      await other.goto(`${servers.siteOrigin}/granted.html`);
      await other.evaluate(() => window.nexusReady);
      await other.evaluate(() => window.nexus.track('queued_then_withdrawn'));
      assert.ok(Object.keys(await stored(other)).length >= 3, 'ids and queue stored while granted');
      await other.evaluate(() => {
        window.nexus.optOut();
        window.nexus.track('after_opt_out');
      });
      await other.close({ runBeforeUnload: true }); // no beacon either
      await sleep(400);
      assert.deepEqual(await stored(page), {}, 'nothing left in localStorage');
      assert.equal(servers.requests.length, 0, 'nothing sent');
    } finally {
      await context.close();
      await servers.close();
    }
  });

  test('respectDnt: Global Privacy Control denies', async () => {
    const servers = await startServers({
      pages: { '/gpc.html': testPage({ respectDnt: true, flushAt: 1, flushIntervalMs: 100 }) },
    });
    const context = await browser.newContext();
    await context.addInitScript(() => {
      Object.defineProperty(Navigator.prototype, 'globalPrivacyControl', { get: () => true });
    });
    try {
      const page = await context.newPage();
      await page.goto(`${servers.siteOrigin}/gpc.html`);
      await page.evaluate(() => window.nexusReady);
      await page.evaluate(() => window.nexus.track('not_sent'));
      await sleep(400);
      assert.equal(servers.requests.length, 0);
      assert.deepEqual(await stored(page), {});
    } finally {
      await context.close();
      await servers.close();
    }
  });
});
