// Queue delivery against the built worker (DELIVERY_MODE=queue): the batch route answers at
// once and puts the enriched events on the DELIVERY queue; the worker's own queue consumer
// forwards them signed, retries an origin outage and dead-letters what the origin refuses or
// cannot read; the dead-letter queue's consumer keeps them in the DeadLetterStore object, and
// the admin re-drive puts them back once the cause is fixed. Retry delays are 1 s here.

import { after, before, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { startOrigin } from './fake-origin.mjs';
import { CHROME, SECRET, call, ev, worker } from './support.mjs';

const ADMIN = 'admin-test-secret';
const MAX_RETRIES = 4;
let origin;
let mf;
/** Event id -> how many times the origin accepted (200) a batch holding it. */
let delivered;
/** The worker's `ingest` count lines (batch route and queue consumer). */
const counts = [];

before(async () => {
  origin = await startOrigin(SECRET);
  mf = worker(
    {
      ORIGIN_URL: origin.url,
      ORIGIN_SECRET: SECRET,
      VISITOR_SALT: 'queue-salt',
      DELIVERY_MODE: 'queue',
      RETRY_DELAY_SECS: '1',
      DEAD_LETTER_QUEUE: 'test-dlq',
      ADMIN_SECRET: ADMIN,
    },
    {
      queueProducers: { DELIVERY: 'test-delivery', DEAD_LETTERS: 'test-dlq' },
      queueConsumers: {
        'test-delivery': { maxBatchSize: 10, maxBatchTimeout: 0.05, maxRetries: MAX_RETRIES, retryDelay: 1, deadLetterQueue: 'test-dlq' },
        'test-dlq': { maxBatchSize: 10, maxBatchTimeout: 0.05, maxRetries: 5, retryDelay: 1 },
      },
      durableObjects: { DEAD_LETTER_STORE: { className: 'DeadLetterStore', useSQLite: true } },
      handleStructuredLogs: ({ message }) => {
        if (message.includes('"event":"ingest"')) counts.push(JSON.parse(message));
      },
    },
  );
  await mf.ready;
});

after(async () => {
  await mf?.dispose();
  await origin?.close();
});

beforeEach(() => {
  origin.reset();
  delivered = new Map();
  counts.length = 0;
});

/** Answers ingests with `verdict(batch)` (a status) or 200, counting accepted event ids. */
function originAnswers(verdict) {
  origin.respond = (batch) => {
    const status = verdict(batch);
    if (status && status !== 200) {
      return { status, body: { error: { code: status === 400 ? 'invalid_field' : 'unavailable', message: 'test' } } };
    }
    for (const e of batch.events) delivered.set(e.event.id, (delivered.get(e.event.id) ?? 0) + 1);
    return { status: 200, body: { accepted: batch.events.length, rejected: [] } };
  };
}

function post(events) {
  return call(mf, 'POST', '/v1/batch?key=wk_open', {
    headers: { 'content-type': 'application/json', 'user-agent': CHROME, 'cf-connecting-ip': '203.0.113.9' },
    body: JSON.stringify({ batch: events }),
  });
}

async function until(what, check, ms = 20_000) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  assert.fail(`timed out waiting for ${what}`);
}

function admin(method, path) {
  return call(mf, method, path, { headers: { authorization: `Bearer ${ADMIN}` } });
}

async function deadLetters() {
  const res = await admin('GET', '/admin/v1/dead-letters');
  assert.equal(res.status, 200, res.text);
  return res.json.dead_letters;
}

describe('queue delivery', () => {
  test('answers at once; an origin outage is retried and every event arrives exactly once', async () => {
    const downUntil = Date.now() + 2_000;
    originAnswers(() => (Date.now() < downUntil ? 503 : 200));
    const sent = [];
    for (let i = 0; i < 4; i++) {
      const events = Array.from({ length: 5 }, () => ev());
      sent.push(...events.map((e) => e.id));
      // One invalid event per batch: the edge's own rejection is still reported synchronously.
      const res = await post([...events, ev({ id: '' })]);
      assert.equal(res.status, 200, res.text);
      assert.deepEqual(res.json, { accepted: 5, rejected: [{ index: 5, code: 'invalid_id', field: 'id' }] });
    }
    await until('every event delivered', () => sent.every((id) => delivered.has(id)));
    await new Promise((r) => setTimeout(r, 1_200)); // no late duplicate
    assert.deepEqual(sent.filter((id) => delivered.get(id) !== 1), []);
    assert.equal(delivered.size, sent.length);
    // The outage was really met and retried, every attempt freshly signed (the origin checks).
    const refused = origin.ingests.length - new Set(origin.ingests.map((i) => i.raw.toString())).size;
    assert.ok(refused >= 1, 'no retried delivery');
    assert.equal(origin.badSignatures, 0);
    assert.deepEqual(await deadLetters(), []);
    // Counted twice over: queued by the batch route, then delivered by the consumer.
    const sum = (route, f) => counts.filter((c) => c.route === route).reduce((n, c) => n + f(c), 0);
    await until('the delivery counts', () => sum('queue', (c) => c.accepted) === sent.length);
    assert.equal(sum('batch', (c) => c.accepted), sent.length);
    assert.equal(sum('batch', (c) => c.rejected.invalid_id ?? 0), 4);
  });

  test('a large batch goes in several messages, each under the 128 KB limit', async () => {
    originAnswers(() => 200);
    const events = Array.from({ length: 400 }, () => ev({ properties: { blob: 'x'.repeat(1000) } }));
    const res = await post(events);
    assert.deepEqual(res.json, { accepted: 400, rejected: [] });
    await until('every event delivered', () => events.every((e) => delivered.has(e.id)));
    assert.ok(origin.ingests.length >= 4, `${origin.ingests.length} messages`);
    for (const i of origin.ingests) assert.ok(i.raw.length < 128 * 1024, `${i.raw.length} bytes`);
    assert.deepEqual(events.filter((e) => delivered.get(e.id) !== 1), []);
  });

  test('refused (400) and unreadable messages are dead-lettered with their reason; the re-drive delivers them', async () => {
    let fixed = false;
    originAnswers((batch) => (!fixed && batch.events.some((e) => e.event.name === 'poison') ? 400 : 200));
    const poison = ev({ name: 'poison' });
    const res = await post([poison]);
    assert.deepEqual(res.json, { accepted: 1, rejected: [] });
    const producer = await mf.getQueueProducer('DELIVERY');
    await producer.send('this is not a forward batch', { contentType: 'text' });

    await until('two dead letters', async () => (await deadLetters()).length === 2);
    const letters = await deadLetters();
    const refused = letters.find((l) => l.reason === 'origin_refused');
    assert.ok(refused, JSON.stringify(letters));
    assert.equal(refused.status, 400);
    assert.equal(refused.events, 1);
    assert.match(refused.detail, /invalid_field/);
    const unreadable = letters.find((l) => l.reason === 'unreadable_message');
    assert.ok(unreadable, JSON.stringify(letters));
    assert.equal(delivered.size, 0);
    const dropped = counts.filter((c) => c.route === 'queue').map((c) => c.refused).filter(Boolean);
    assert.deepEqual(
      dropped.sort((a, b) => a.reason.localeCompare(b.reason)),
      [{ reason: 'dead_letter_origin_refused', events: 1 }, { reason: 'dead_letter_unreadable_message', events: 0 }],
    );

    // The admin routes need the secret.
    assert.equal((await call(mf, 'GET', '/admin/v1/dead-letters')).status, 401);
    assert.equal((await call(mf, 'POST', '/admin/v1/redrive', { headers: { authorization: 'Bearer nope' } })).status, 401);

    fixed = true;
    const redrive = await admin('POST', '/admin/v1/redrive');
    assert.equal(redrive.status, 200, redrive.text);
    assert.deepEqual(redrive.json, { redriven: 2, failed: 0 });
    await until('the poisoned event delivered', () => delivered.has(poison.id));
    // The unreadable message is still unreadable: it is dead-lettered again, never lost.
    await until('the unreadable message back', async () => {
      const now = await deadLetters();
      return now.length === 1 && now[0].reason === 'unreadable_message';
    });
    await new Promise((r) => setTimeout(r, 500));
    assert.equal(delivered.get(poison.id), 1);
  });

  test('a message whose retries run out lands in the dead-letter queue and is re-driven', async () => {
    // Clear what the previous test left.
    for (const l of await deadLetters()) assert.equal(l.reason, 'unreadable_message');
    let up = false;
    originAnswers(() => (up ? 200 : 503));
    const doomed = ev();
    assert.equal((await post([doomed])).status, 200);
    await until('retries exhausted', async () => (await deadLetters()).some((l) => l.reason === 'retries_exhausted'));
    const letter = (await deadLetters()).find((l) => l.reason === 'retries_exhausted');
    assert.equal(letter.events, 1);
    assert.equal(origin.ingests.length, MAX_RETRIES + 1);
    up = true;
    const redrive = await admin('POST', '/admin/v1/redrive');
    assert.equal(redrive.status, 200, redrive.text);
    await until('the doomed event delivered', () => delivered.has(doomed.id));
    await new Promise((r) => setTimeout(r, 500));
    assert.equal(delivered.get(doomed.id), 1);
  });
});
