// The plumbing of the API in headless Chromium against the fake collector: alias, group, super
// properties (register/unregister, kept under the consent rules), beforeSend, debug logging,
// cookieless mode, deterministic sampling, and the batched writes of the stored queue.
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

/** The SDK's keys in the page's localStorage, with their values. */
function stored(page) {
  return page.evaluate(() => Object.fromEntries(Object.entries(localStorage).filter(([k]) => k.startsWith('nexus'))));
}

/** A fresh context and page collecting uncaught errors and the console. */
async function open() {
  const context = await browser.newContext();
  const page = await context.newPage();
  const errors = [];
  const logs = [];
  page.on('pageerror', (e) => errors.push(e.message));
  page.on('console', (m) => logs.push({ type: m.type(), text: m.text() }));
  return { context, page, errors, logs };
}

/** FNV-1a of a string's UTF-8 bytes: the SDK's sampling hash (sdk-wasm/src/wire.rs), re-done here. */
function fnv1a(text) {
  let hash = 0x811c9dc5;
  for (const b of Buffer.from(text, 'utf8')) hash = Math.imul(hash ^ b, 0x01000193) >>> 0;
  return hash;
}

describe('api', () => {
  test('alias, group, super properties, beforeSend and debug shape what is sent', async () => {
    const script = `
      window.nexusReady = nexus.init({
        key: 'wk_test', endpoint: 'COLLECTOR', flushAt: 100, flushIntervalMs: 60000, debug: true,
        beforeSend(e) {
          if (e.name === 'secret') return null;
          if (e.name === 'boom') throw new Error('scrubber failed');
          if (e.properties?.email) e.properties.email = '[redacted]';
          return e;
        },
      });`;
    const servers = await startServers({ pages: { '/app': testPage(null, script), '/next': testPage(null, script) } });
    const { context, page, errors, logs } = await open();
    try {
      await page.goto(`${servers.siteOrigin}/app`);
      await page.evaluate(() => window.nexusReady);
      const thrown = await page.evaluate(async () => {
        const n = window.nexus;
        n.register({ plan: 'pro', app: 'web' });
        n.track('a', { app: 'override' });
        n.unregister('app');
        n.identify('user-1');
        n.alias('user-1-new');
        n.alias('x', 'y');
        n.group('company', 'acme', { seats: 3 });
        n.track('secret');
        n.track('boom');
        n.track('b', { email: 'a@example.com' });
        const out = [];
        for (const bad of [() => n.alias(''), () => n.group('company'), () => n.register([1])]) {
          try {
            bad();
          } catch (e) {
            out.push(`${e instanceof Error}:${e.message}`);
          }
        }
        await n.flush();
        return out;
      });
      assert.deepEqual(thrown, [
        'true:nexus: alias() needs ids (1..200 bytes)',
        'true:nexus: group() needs ids (1..200 bytes)',
        'true:nexus: properties must be a plain object',
      ]);
      const events = servers.accepted();
      assert.deepEqual(
        events.map((e) => [e.type, e.name ?? null]),
        [
          ['track', 'a'],
          ['identify', null],
          ['alias', null],
          ['alias', null],
          ['group', null],
          ['track', 'b'],
        ],
        'the event dropped by beforeSend is never sent',
      );
      const [a, identify, alias1, alias2, group, b] = events;
      assert.deepEqual(a.properties, { plan: 'pro', app: 'override' }, 'super properties, the event’s own win');
      assert.equal(identify.user_id, 'user-1');
      assert.equal(alias1.user_id, 'user-1-new');
      assert.equal(alias1.previous_id, 'user-1', 'previous id defaults to the current user id');
      assert.equal(alias1.anonymous_id, a.anonymous_id);
      assert.deepEqual([alias2.user_id, alias2.previous_id], ['x', 'y']);
      assert.deepEqual([group.group_type, group.group_key, group.properties], ['company', 'acme', { seats: 3 }]);
      assert.deepEqual(b.properties, { plan: 'pro', email: '[redacted]' }, 'beforeSend edited it; app unregistered');
      for (const e of events) assert.ok(isUuidV7(e.id));
      assert.equal(new Set(events.map((e) => e.id)).size, 6);

      // A hook that throws drops its event, and its error is on the console (its caller is gone).
      assert.ok(logs.some((l) => l.type === 'error' && l.text.includes('scrubber failed')), 'the hook error is logged');

      // debug: the body of every request is on the console, after beforeSend.
      const sent = logs.filter((l) => l.text.startsWith('nexus: send '));
      assert.equal(sent.length, 1);
      for (const e of events) assert.ok(sent[0].text.includes(e.id), 'each sent id is logged');
      assert.ok(!sent[0].text.includes('a@example.com') && !sent[0].text.includes('"secret"'));

      // Super properties persist (consent is granted by default) and reach the next page.
      assert.deepEqual(JSON.parse((await stored(page)).nexus_props), { plan: 'pro' });
      await page.goto(`${servers.siteOrigin}/next`);
      await page.evaluate(() => window.nexusReady);
      await page.evaluate(async () => {
        window.nexus.track('c');
        window.nexus.reset(); // logout: super properties go too
        window.nexus.track('d');
        await window.nexus.flush();
      });
      await waitFor(() => servers.accepted().some((e) => e.name === 'd'), 5000, 'the events of the next page');
      const next = servers.accepted().filter((e) => ['c', 'd'].includes(e.name));
      assert.deepEqual(next.map((e) => e.properties), [{ plan: 'pro' }, undefined]);
      assert.equal((await stored(page)).nexus_props, undefined);
      assert.deepEqual(errors, []);
    } finally {
      await context.close();
      await servers.close();
    }
  });

  test('super properties wait for consent: stored on optIn, removed on optOut', async () => {
    const servers = await startServers({
      pages: { '/p': testPage({ consent: 'pending', flushAt: 100, flushIntervalMs: 60_000 }) },
    });
    const { context, page, errors } = await open();
    try {
      await page.goto(`${servers.siteOrigin}/p`);
      await page.evaluate(() => window.nexusReady);
      await page.evaluate(() => window.nexus.register({ tier: 'gold' }));
      assert.deepEqual(await stored(page), {}, 'nothing stored while pending');
      await page.evaluate(() => window.nexus.optIn());
      assert.deepEqual(JSON.parse((await stored(page)).nexus_props), { tier: 'gold' });
      await page.evaluate(() => window.nexus.optOut());
      assert.deepEqual(await stored(page), {}, 'denied: nothing left');
      assert.deepEqual(errors, []);
    } finally {
      await context.close();
      await servers.close();
    }
  });

  test('cookieless: no anonymous id, nothing in localStorage, the session in memory only', async () => {
    const servers = await startServers({
      pages: {
        '/c': testPage({ cookieless: true, flushAt: 100, flushIntervalMs: 60_000 }),
        '/away': '<!doctype html><title>away</title>',
      },
    });
    const { context, page, errors } = await open();
    try {
      for (const round of [1, 2]) {
        await page.goto(`${servers.siteOrigin}/c`);
        await page.evaluate(() => window.nexusReady);
        await page.evaluate((round) => {
          window.nexus.register({ round }); // super properties live in memory too
          window.nexus.page();
          window.nexus.track('clicked');
          window.nexus.identify('user-9');
        }, round);
        await sleep(50);
        assert.deepEqual(await stored(page), {}, `round ${round}: nothing stored`);
        await page.goto(`${servers.siteOrigin}/away`); // the beacon carries them
        await waitFor(() => servers.accepted().length >= 3 * round, 5000, `round ${round}`);
      }
      const events = servers.accepted();
      assert.equal(events.length, 6);
      for (const e of events) {
        assert.equal(e.anonymous_id, undefined, 'no anonymous id');
        assert.ok(isUuidV7(e.session_id));
      }
      assert.equal(new Set(events.slice(0, 3).map((e) => e.session_id)).size, 1, 'one session per page');
      assert.notEqual(events[0].session_id, events[3].session_id, 'a new page: a new session, nothing was kept');
      assert.equal(events[2].user_id, 'user-9', 'an explicit identify still names the user');
      assert.deepEqual(events[1].properties, { round: 1 });
      assert.deepEqual(errors, []);
    } finally {
      await context.close();
      await servers.close();
    }
  });

  test('sampling is decided by the anonymous id: the same person always in or always out', async () => {
    const servers = await startServers({
      pages: { '/s': testPage({ sampleRate: 0.5, flushAt: 100, flushIntervalMs: 60_000 }) },
    });
    try {
      const people = [];
      for (let i = 0; i < 12; i++) {
        const { context, page, errors } = await open();
        for (const load of [0, 1]) {
          await page.goto(`${servers.siteOrigin}/s`);
          await page.evaluate(() => window.nexusReady);
          await page.evaluate(async (tag) => {
            window.nexus.track('e', { tag });
            window.nexus.track('e', { tag });
            await window.nexus.flush();
          }, `${i}-${load}`);
        }
        const anon = (await stored(page)).nexus_anon_id;
        people.push({ i, anon });
        assert.deepEqual(errors, []);
        await context.close();
      }
      await sleep(200);
      const got = servers.accepted();
      let inSample = 0;
      for (const { i, anon } of people) {
        const mine = got.filter((e) => e.properties.tag.startsWith(`${i}-`));
        const expected = fnv1a(anon) < 0.5 * 2 ** 32;
        // Two page loads, two events each: all four or none.
        assert.equal(mine.length, expected ? 4 : 0, `person ${i} (${anon}) in the sample: ${expected}`);
        if (expected) assert.ok(mine.every((e) => e.anonymous_id === anon));
        inSample += expected ? 1 : 0;
      }
      assert.ok(inSample > 0 && inSample < 12, `a sample, not everyone or no one: ${inSample} of 12`);
    } finally {
      await servers.close();
    }
  });

  test('in a hidden page the events of a task are built and stored on a microtask, not a timer', async () => {
    const servers = await startServers({ pages: { '/h': testPage({ flushAt: 1000, flushIntervalMs: 600_000 }) } });
    const { context, page, errors } = await open();
    try {
      // A background tab: timers may be throttled, and the page frozen or discarded before one fires.
      await context.addInitScript(() => Object.defineProperty(document, 'hidden', { get: () => true }));
      await page.goto(`${servers.siteOrigin}/h`);
      await page.evaluate(() => window.nexusReady);
      const stored = await page.evaluate(async () => {
        const lines = () =>
          Object.keys(localStorage)
            .filter((k) => k.startsWith('nexus_queue'))
            .flatMap((k) => localStorage.getItem(k).split('\n'));
        window.nexus.track('in_background');
        const sync = lines().length;
        await Promise.resolve();
        return { sync, microtask: lines().filter((l) => l.includes('in_background')).length };
      });
      assert.deepEqual(stored, { sync: 0, microtask: 1 });
      assert.deepEqual(errors, []);
    } finally {
      await context.close();
      await servers.close();
    }
  });

  test('track() only queues; the events of a task are built and stored once, after it, and still before the page goes', async () => {
    const servers = await startServers({
      pages: {
        '/q': testPage(
          { flushAt: 1000, flushIntervalMs: 600_000 },
          `document.body.insertAdjacentHTML('beforeend', '<button id="leave">leave</button>');
           document.getElementById('leave').onclick = () => {
             nexus.track('last_words');
             location.href = '/away';
           };`,
        ),
        '/away': '<!doctype html><title>away</title>',
      },
    });
    const { context, page, errors } = await open();
    try {
      // Counts writes (and characters written) of the queue's keys, from the page's first script on.
      await context.addInitScript(() => {
        window.queueWrites = 0;
        window.queueChars = 0;
        const setItem = Storage.prototype.setItem;
        Storage.prototype.setItem = function (key, value) {
          if (key.startsWith('nexus_queue')) {
            window.queueWrites++;
            window.queueChars += value.length;
          }
          return setItem.call(this, key, value);
        };
      });
      await page.goto(`${servers.siteOrigin}/q`);
      await page.evaluate(() => window.nexusReady);
      const counts = await page.evaluate(async () => {
        const before = window.queueWrites;
        const props = { i: 0 };
        for (let i = 0; i < 500; i++) window.nexus.track('burst', { i });
        // Properties are read at the end of the task: a change made in it is what is sent.
        window.nexus.track('mutated', props);
        props.i = 1;
        await Promise.resolve();
        const microtask = window.queueWrites - before;
        await new Promise((r) => setTimeout(r));
        const keys = Object.keys(localStorage).filter((k) => k.startsWith('nexus_queue'));
        const lines = keys.map((k) => localStorage.getItem(k).split('\n')).flat();
        const chars = lines.reduce((n, l) => n + l.length + 1, 0);
        return { microtask, writes: window.queueWrites - before, chunks: keys.length, lines: lines.length, once: window.queueChars <= chars };
      });
      assert.equal(counts.microtask, 0, 'nothing done in the task that tracked, nor on its microtask');
      assert.equal(counts.lines, 501);
      assert.equal(counts.writes, counts.chunks, 'each chunk written once, after the task');
      assert.ok(counts.once, 'each event written once');

      await page.evaluate(() => window.nexus.flush());
      await waitFor(() => servers.acceptedIds().size >= 501, 5000, 'the burst');
      assert.equal(servers.accepted().find((e) => e.name === 'mutated').properties.i, 1);
      // A page that tracks and leaves in the same task (a click handler): the pagehide beacon
      // still carries the event.
      await Promise.all([page.waitForURL(`${servers.siteOrigin}/away`, { waitUntil: 'commit' }), page.click('#leave')]);
      await waitFor(() => servers.accepted().some((e) => e.name === 'last_words'), 5000, 'the last event');
      assert.equal(servers.acceptedIds().size, 502);
      assert.deepEqual(errors, []);
    } finally {
      await context.close();
      await servers.close();
    }
  });
});
