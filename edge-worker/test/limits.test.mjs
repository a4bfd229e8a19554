// Rate limits against the built worker: the per-IP and per-key rate-limit bindings (tiny limits
// here) and the exact per-project quota in the ProjectQuota Durable Object. Over a limit the
// answer is 429 rate_limited with Retry-After, nothing reaches the origin, and a structured
// drop line is logged.

import { after, before, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { startOrigin } from './fake-origin.mjs';
import { CHROME, SECRET, call, ev, worker } from './support.mjs';

let origin;
let mf;
/** The worker's log lines (`console.log` and friends), as workerd reports them. */
const logs = [];

/** Waits (briefly: logs arrive asynchronously) for a drop line matching `want`. */
async function dropLogged(want) {
  const matches = (m) => {
    try {
      const line = JSON.parse(m);
      return line.event === 'drop' && Object.entries(want).every(([k, v]) => JSON.stringify(line[k]) === JSON.stringify(v));
    } catch {
      return false;
    }
  };
  for (let i = 0; i < 100 && !logs.some(matches); i++) await new Promise((r) => setTimeout(r, 20));
  assert.ok(logs.some(matches), `no drop line ${JSON.stringify(want)} in:\n${logs.join('\n')}`);
}

before(async () => {
  origin = await startOrigin(SECRET);
  mf = worker(
    { ORIGIN_URL: origin.url, ORIGIN_SECRET: SECRET, VISITOR_SALT: 'limits-salt', EVENTS_PER_MINUTE: '1000' },
    {
      ratelimits: { RL_IP: { simple: { limit: 3, period: 60 } }, RL_KEY: { simple: { limit: 5, period: 60 } } },
      durableObjects: { QUOTAS: { className: 'ProjectQuota', useSQLite: true } },
      handleStructuredLogs: ({ message }) => {
        logs.push(message);
      },
    },
  );
  await mf.ready;
});

after(async () => {
  await mf?.dispose();
  await origin?.close();
});

// Limits count per minute: a test that straddles a minute boundary would see its counts reset.
beforeEach(async () => {
  const intoMinute = Date.now() % 60_000;
  if (intoMinute > 50_000) await new Promise((r) => setTimeout(r, 60_500 - intoMinute));
  origin.reset();
});

function post(key, ip, events = 1, headers = {}) {
  return call(mf, 'POST', `/v1/batch?key=${key}`, {
    headers: { 'content-type': 'application/json', 'user-agent': CHROME, 'cf-connecting-ip': ip, ...headers },
    body: JSON.stringify({ batch: Array.from({ length: events }, () => ev()) }),
  });
}

function assertLimited(res, maxRetry = 60) {
  assert.equal(res.status, 429, res.text);
  assert.equal(res.json.error.code, 'rate_limited');
  const retry = Number(res.headers.get('retry-after'));
  assert.ok(Number.isInteger(retry) && retry >= 1 && retry <= maxRetry, `retry-after ${res.headers.get('retry-after')}`);
}

describe('rate limits', () => {
  test('per client IP: 429 with Retry-After after the limit, other IPs unaffected', async () => {
    for (let i = 0; i < 3; i++) assert.equal((await post('wk_valid', '198.51.100.1')).status, 200);
    const over = await post('wk_valid', '198.51.100.1', 1, { origin: 'https://shop.example' });
    assertLimited(over);
    assert.equal(over.headers.get('retry-after'), '60');
    // The browser can read the answer and its Retry-After.
    assert.equal(over.headers.get('access-control-allow-origin'), 'https://shop.example');
    assert.equal(over.headers.get('access-control-expose-headers'), 'retry-after');
    assert.equal((await post('wk_valid', '198.51.100.2')).status, 200);
    assert.equal(origin.ingests.length, 4);
    await dropLogged({ reason: 'rate_limited_ip', events: 0 });
  });

  test('per write key: 429 after the limit from any IP, other keys unaffected', async () => {
    for (let i = 0; i < 5; i++) assert.equal((await post('wk_limits', `198.51.100.${10 + i}`)).status, 200);
    assertLimited(await post('wk_limits', '198.51.100.20'));
    await dropLogged({ reason: 'rate_limited_key' });
    assert.equal((await post('wk_open', '198.51.100.21')).status, 200);
    assert.equal(origin.ingests.length, 6);
  });

  test('per project quota: exact events per minute, from the key lookup or the default', async () => {
    // wk_quota's lookup says 1500 events per minute.
    assert.equal((await post('wk_quota', '198.51.100.30', 1000)).status, 200);
    const over = await post('wk_quota', '198.51.100.31', 600);
    assertLimited(over);
    assert.equal(over.json.error.message, "the project's events-per-minute quota is used up");
    await dropLogged({ reason: 'quota_exceeded', events: 600 });
    // A refused batch is not counted: 500 more still fit exactly.
    assert.equal((await post('wk_quota', '198.51.100.32', 500)).status, 200);
    assertLimited(await post('wk_quota', '198.51.100.33', 1));
    // wk_cached has no quota of its own: the worker's default of 1000 applies, separately.
    assert.equal((await post('wk_cached', '198.51.100.34', 1000)).status, 200);
    assertLimited(await post('wk_cached', '198.51.100.35', 1));
    const forwarded = origin.ingests.flatMap((i) => i.body.events).length;
    assert.equal(forwarded, 2500);
  });

  test('refused events do not count against the quota', async () => {
    // Only valid events are counted: a batch of 1000 invalid events costs nothing (and a
    // refused key never reaches the quota).
    const bad = await call(mf, 'POST', '/v1/batch?key=wk_revoked', {
      headers: { 'content-type': 'application/json', 'cf-connecting-ip': '198.51.100.40' },
      body: JSON.stringify({ batch: [ev()] }),
    });
    assert.equal(bad.status, 403);
    const res = await call(mf, 'POST', '/v1/batch?key=wk_spare', {
      headers: { 'content-type': 'application/json', 'cf-connecting-ip': '198.51.100.41' },
      body: JSON.stringify({ batch: Array.from({ length: 1000 }, () => ({ id: 'x' })) }),
    });
    assert.equal(res.status, 200, res.text);
    assert.equal(res.json.accepted, 0);
    await dropLogged({ reason: 'rejected', events: 1000, codes: { invalid_id: 1000 } });
    assert.equal((await post('wk_spare', '198.51.100.42', 1000)).status, 200);
  });
});
