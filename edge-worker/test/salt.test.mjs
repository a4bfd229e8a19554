// The daily visitor salt in the SaltStore Durable Object: stable within a day, different the
// next day, random per deployment, and deleted on the second day after its own. The day is moved
// with the test-only x-nexus-test-day header (honoured only with NEXUS_TEST_MODE=1); the days
// used are in the future so that the object's own midnight alarm never touches them.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { startOrigin } from './fake-origin.mjs';
import { CHROME, SECRET, call, ev, worker } from './support.mjs';

const DAY_MS = 86_400_000;
const IP = '203.0.113.9';
const SALTS = { SALTS: { className: 'SaltStore', useSQLite: true } };

/** `YYYY-MM-DD` of today + `offset` days (UTC), and its day number. */
const isoDay = (offset) => new Date(Date.now() + offset * DAY_MS).toISOString().slice(0, 10);
const dayNumber = (iso) => Math.floor(Date.parse(`${iso}T00:00:00Z`) / DAY_MS);

let origin;
let mf;

before(async () => {
  origin = await startOrigin(SECRET);
  mf = worker({ ORIGIN_URL: origin.url, ORIGIN_SECRET: SECRET, NEXUS_TEST_MODE: '1' }, { durableObjects: SALTS });
  await mf.ready;
});

after(async () => {
  await mf?.dispose();
  await origin?.close();
});

/** The visitor hash the worker gave one event from `ip` with `ua` on `day` (a header value). */
async function hashOf(instance, day, { ip = IP, ua = CHROME } = {}) {
  origin.reset();
  const headers = { 'content-type': 'application/json', 'user-agent': ua, 'cf-connecting-ip': ip };
  if (day) headers['x-nexus-test-day'] = day;
  const res = await call(instance, 'POST', '/v1/batch?key=wk_valid', { headers, body: JSON.stringify({ batch: [ev()] }) });
  assert.equal(res.status, 200, res.text);
  const [e] = origin.ingests[0].body.events;
  assert.match(e.visitor_hash, /^[0-9a-f]{32}$/);
  return e.visitor_hash;
}

/** The days whose salts the object holds (it never shows the salts themselves). */
async function storedDays(instance) {
  const ns = await instance.getDurableObjectNamespace('SALTS');
  const res = await ns.get(ns.idFromName('visitor-salts')).fetch('https://salts/days');
  return res.json();
}

describe('daily visitor salt', () => {
  test('the same visitor hashes the same within a day and differently the next day', async () => {
    const [d1, d2] = [isoDay(10), isoDay(11)];
    const first = await hashOf(mf, d1);
    assert.equal(await hashOf(mf, d1), first, 'stable within the day');
    assert.notEqual(await hashOf(mf, d1, { ip: '203.0.113.10' }), first, 'another IP is another visitor');
    assert.notEqual(await hashOf(mf, d1, { ua: CHROME + ' Edg/131' }), first, 'another browser is another visitor');
    const next = await hashOf(mf, d2);
    assert.notEqual(next, first, 'a new day has a new salt');
    assert.equal(await hashOf(mf, d2), next);
    // Yesterday's salt is still kept (not yet 48 h old): the isolate cache holds only today's,
    // so this goes to the object and finds the same salt.
    assert.equal(await hashOf(mf, d1), first);
  });

  test('salts older than 48 hours are deleted', async () => {
    const [d1, d2, d3] = [isoDay(20), isoDay(21), isoDay(22)];
    const old = await hashOf(mf, d1);
    await hashOf(mf, d2);
    let days = await storedDays(mf);
    assert.ok(days.includes(dayNumber(d1)) && days.includes(dayNumber(d2)), `${days}`);
    await hashOf(mf, d3);
    days = await storedDays(mf);
    assert.ok(!days.includes(dayNumber(d1)), `day ${d1} is still stored: ${days}`);
    assert.ok(days.includes(dayNumber(d2)) && days.includes(dayNumber(d3)), `${days}`);
    assert.ok(days.every((d) => d >= dayNumber(d3) - 1), `only today and yesterday remain: ${days}`);
    // The deleted salt is gone for good: asking for that day again makes a new one.
    assert.notEqual(await hashOf(mf, d1), old);
  });

  test('each deployment draws its own random salt', async () => {
    const other = worker({ ORIGIN_URL: origin.url, ORIGIN_SECRET: SECRET, NEXUS_TEST_MODE: '1' }, { durableObjects: SALTS });
    try {
      const day = isoDay(30);
      assert.notEqual(await hashOf(other, day), await hashOf(mf, day));
    } finally {
      await other.dispose();
    }
  });

  test('without test mode the day header is ignored', async () => {
    const prod = worker({ ORIGIN_URL: origin.url, ORIGIN_SECRET: SECRET }, { durableObjects: SALTS });
    try {
      const today = await hashOf(prod, null);
      assert.equal(await hashOf(prod, isoDay(40)), today);
      assert.equal(await hashOf(prod, isoDay(41)), today);
      assert.deepEqual(await storedDays(prod), [dayNumber(isoDay(0))]);
    } finally {
      await prod.dispose();
    }
  });
});
