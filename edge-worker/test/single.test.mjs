// The one-event routes against the built worker: `POST /v1/track` (one event, the batch's body
// rules) and the `GET /v1/p.gif` pixel (a page view made at the edge from query parameters, always
// answered with a GIF). Both run the batch pipeline, so the fake origin gets ordinary forwards.
// Also the counts: one `ingest` log line per request, and the same counts as Workers Analytics
// Engine data points (miniflare's own EVENTS_AE simulator discards writes, so a recording
// stand-in with the same `writeDataPoint` interface is bound for the assertions).

import { after, before, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { gzipSync } from 'node:zlib';

import { KEYS, ORIGIN_REJECTS, startOrigin } from './fake-origin.mjs';
import { Miniflare } from 'miniflare';

import { BARE_CF, CHROME, SCRIPT, SECRET, call, ev, worker } from './support.mjs';

const GIF = Buffer.from('R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAICRAEAOw==', 'base64');
const UUID_V7 = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
const DE = {
  ...BARE_CF, country: 'DE', region: 'Berlin', city: 'Berlin', continent: 'EU', timezone: 'Europe/Berlin',
  latitude: '52.52000', longitude: '13.40500', asn: 3320, asOrganization: 'Deutsche Telekom AG', colo: 'FRA',
};
const DE_GEO = {
  country: 'DE', region: 'Berlin', city: 'Berlin', continent: 'EU', timezone: 'Europe/Berlin',
  latitude: 52.52, longitude: 13.405, asn: 3320, as_org: 'Deutsche Telekom AG', colo: 'FRA',
};

// A stand-in Analytics Engine dataset: each data point becomes a log line the test can read.
const RECORDER = `export default function () {
  return { writeDataPoint(point) { console.log(JSON.stringify({ ae: point })); } };
}`;

let origin;
let mf;
/** Log lines of the worker (and of the recording dataset), parsed when JSON. */
const logs = [];

before(async () => {
  origin = await startOrigin(SECRET);
  mf = new Miniflare({
    handleStructuredLogs: ({ message }) => {
      try {
        logs.push(JSON.parse(message));
      } catch {
        // not one of ours
      }
    },
    workers: [
      {
        name: 'edge',
        modules: true,
        scriptPath: SCRIPT,
        modulesRules: [{ type: 'CompiledWasm', include: ['**/*.wasm'] }],
        compatibilityDate: '2026-04-01',
        bindings: { ORIGIN_URL: origin.url, ORIGIN_SECRET: SECRET, VISITOR_SALT: 'single-salt' },
        wrappedBindings: { EVENTS_AE: { scriptName: 'ae-recorder' } },
      },
      { name: 'ae-recorder', modules: true, script: RECORDER },
    ],
  });
  await mf.ready;
});

after(async () => {
  await mf?.dispose();
  await origin?.close();
});

beforeEach(async () => {
  // Log lines arrive asynchronously: let the previous test's settle before forgetting them.
  await new Promise((r) => setTimeout(r, 100));
  origin.reset();
  logs.length = 0;
});

function track(body, { key = 'wk_valid', query = '', headers = {}, cf = BARE_CF } = {}) {
  const q = [key ? `key=${encodeURIComponent(key)}` : '', query].filter(Boolean).join('&');
  return call(mf, 'POST', `/v1/track${q ? '?' + q : ''}`, {
    headers: { 'content-type': 'application/json', 'user-agent': CHROME, ...headers },
    body: typeof body === 'string' || Buffer.isBuffer(body) ? body : JSON.stringify(body),
    cf,
  });
}

async function pixel(params, { headers = {}, cf = BARE_CF } = {}) {
  const res = await mf.dispatchFetch(`http://edge.test/v1/p.gif?${new URLSearchParams(params)}`, {
    headers: { 'user-agent': CHROME, ...headers },
    cf,
  });
  return { status: res.status, headers: res.headers, bytes: Buffer.from(await res.arrayBuffer()) };
}

function forwardedEvents() {
  return origin.ingests.flatMap((i) => i.body.events);
}

/** Waits for log lines matching `pred` (logs arrive asynchronously). */
async function logged(pred, count = 1) {
  for (let i = 0; i < 100 && logs.filter(pred).length < count; i++) await new Promise((r) => setTimeout(r, 20));
  return logs.filter(pred);
}

const ingestLines = (route) => logged((l) => l.event === 'ingest' && l.route === route);

describe('POST /v1/track', () => {
  test('one event is stored at the origin with geo; the answer is its outcome', async () => {
    const event = ev({ name: 'signup', properties: { plan: 'pro' } });
    const res = await track(event, { cf: DE });
    assert.equal(res.status, 200, res.text);
    assert.deepEqual(res.json, { accepted: 1, rejected: [] });
    assert.equal(origin.ingests.length, 1);
    assert.equal(origin.ingests[0].body.write_key, 'wk_valid');
    const [e] = forwardedEvents();
    assert.equal(e.event.id, event.id);
    assert.equal(e.event.name, 'signup');
    assert.deepEqual(e.event.properties, { plan: 'pro' });
    assert.deepEqual(e.geo, DE_GEO);
    assert.equal(e.bot, false);
    assert.match(e.visitor_hash, /^[0-9a-f]{32}$/);
    assert.equal(origin.badSignatures, 0);
  });

  test('sent_at beside the event corrects the clock and is not forwarded as a field', async () => {
    const hour = 3600 * 1000;
    const now = Date.now();
    const event = ev({ timestamp: new Date(now - hour - 5000).toISOString() });
    const res = await track({ ...event, sent_at: new Date(now - hour).toISOString() });
    assert.equal(res.status, 200, res.text);
    const [e] = forwardedEvents();
    assert.equal(e.event.sent_at, undefined);
    assert.ok(Math.abs(Date.parse(e.timestamp) - (Date.parse(e.received_at) - 5000)) < 5, e.timestamp);
  });

  test('a bad event is a 200 with its rejection; an origin rejection is mapped to index 0', async () => {
    const bad = await track(ev({ id: 'nope' }));
    assert.equal(bad.status, 200);
    assert.deepEqual(bad.json, { accepted: 0, rejected: [{ index: 0, code: 'invalid_id', field: 'id' }] });
    assert.equal(origin.ingests.length, 0);
    const refused = await track(ev({ name: ORIGIN_REJECTS }));
    assert.deepEqual(refused.json, { accepted: 0, rejected: [{ index: 0, code: 'invalid_field', field: 'properties' }] });
  });

  test('gzip, text/plain, the key header, 415 and the key errors work as on /v1/batch', async () => {
    const zipped = await track(gzipSync(JSON.stringify(ev({ name: 'zipped' }))), {
      query: 'compression=gzip',
      headers: { 'content-type': 'text/plain;charset=UTF-8' },
    });
    assert.deepEqual(zipped.json, { accepted: 1, rejected: [] });
    const header = await track(ev({ name: 'header' }), { key: null, headers: { 'x-nexus-key': 'wk_open' } });
    assert.deepEqual(header.json, { accepted: 1, rejected: [] });
    assert.deepEqual(forwardedEvents().map((e) => e.event.name), ['zipped', 'header']);
    const html = await track(ev(), { headers: { 'content-type': 'text/html' } });
    assert.equal(html.status, 415);
    assert.equal(html.json.error.code, 'unsupported_media_type');
    const noKey = await track(ev(), { key: null });
    assert.equal(noKey.status, 401);
    assert.equal(noKey.json.error.code, 'missing_key');
    const revoked = await track(ev(), { key: 'wk_revoked' });
    assert.equal(revoked.status, 403);
    assert.equal(revoked.json.error.code, 'revoked_key');
    const batchBody = await track({ batch: [ev()] });
    assert.deepEqual(batchBody.json, { accepted: 0, rejected: [{ index: 0, code: 'missing_id', field: 'id' }] });
  });

  test('CORS: preflight for a listed origin, refused for another; answers carry the header', async () => {
    const preflight = (o) => call(mf, 'OPTIONS', '/v1/track?key=wk_valid', {
      headers: { origin: o, 'access-control-request-method': 'POST', 'access-control-request-headers': 'content-type' },
    });
    const allowed = await preflight('https://shop.example');
    assert.equal(allowed.status, 204);
    assert.equal(allowed.headers.get('access-control-allow-origin'), 'https://shop.example');
    assert.equal(allowed.headers.get('access-control-allow-methods'), 'POST, OPTIONS');
    const refused = await preflight('https://evil.example');
    assert.equal(refused.status, 403);
    assert.equal(refused.json.error.code, 'origin_not_allowed');
    const res = await track(ev(), { headers: { origin: 'https://shop.example' } });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('access-control-allow-origin'), 'https://shop.example');
    const wrong = await call(mf, 'GET', '/v1/track?key=wk_valid');
    assert.equal(wrong.status, 405);
    assert.equal(wrong.headers.get('allow'), 'POST, OPTIONS');
  });
});

describe('GET /v1/p.gif', () => {
  test('a page view with a UUID v7 id and the url, referrer and title given', async () => {
    const before = Date.now();
    const res = await pixel(
      { k: 'wk_valid', u: 'https://shop.example/pricing?utm_source=news', r: 'https://www.google.com/', t: 'Pricing & plans' },
      { cf: DE },
    );
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('content-type'), 'image/gif');
    assert.equal(res.headers.get('cache-control'), 'no-store');
    assert.equal(res.headers.get('x-nexus-outcome'), 'accepted');
    assert.deepEqual(res.bytes, GIF);
    assert.equal(origin.ingests.length, 1);
    const [e] = forwardedEvents();
    assert.match(e.event.id, UUID_V7);
    // The id's first 48 bits are the edge's clock in milliseconds.
    const idMs = parseInt(e.event.id.replace(/-/g, '').slice(0, 12), 16);
    assert.ok(idMs >= before - 1000 && idMs <= Date.now() + 1000, `id time ${idMs}`);
    assert.equal(e.event.type, 'page');
    assert.equal(e.event.name, '$pageview');
    assert.deepEqual(e.event.context, {
      url: 'https://shop.example/pricing?utm_source=news',
      path: '/pricing',
      referrer: 'https://www.google.com/',
      title: 'Pricing & plans',
    });
    assert.equal(e.event.anonymous_id, undefined);
    assert.ok(Math.abs(Date.parse(e.event.timestamp) - Date.now()) < 10_000, e.event.timestamp);
    assert.equal(Date.parse(e.timestamp), Date.parse(e.event.timestamp));
    assert.deepEqual(e.geo, DE_GEO);
    assert.match(e.visitor_hash, /^[0-9a-f]{32}$/);
    assert.equal(e.bot, false);
  });

  test('every view gets its own id; `key` works as well as `k`; bots are marked, not dropped', async () => {
    await pixel({ k: 'wk_valid', u: 'https://shop.example/' });
    await pixel({ key: 'wk_open', u: 'https://shop.example/' });
    await pixel({ k: 'wk_valid' }, { headers: { 'user-agent': 'Googlebot/2.1 (+http://www.google.com/bot.html)' } });
    const events = forwardedEvents();
    assert.equal(events.length, 3);
    assert.equal(new Set(events.map((e) => e.event.id)).size, 3);
    assert.deepEqual(origin.ingests.map((i) => i.body.write_key), ['wk_valid', 'wk_open', 'wk_valid']);
    assert.deepEqual(events.map((e) => e.bot), [false, false, true]);
  });

  test('without u, the Referer header is the page URL', async () => {
    const res = await pixel({ k: 'wk_valid', t: 'Static' }, { headers: { referer: 'https://shop.example/static/page.html?a=1' } });
    assert.equal(res.headers.get('x-nexus-outcome'), 'accepted');
    assert.deepEqual(forwardedEvents()[0].event.context, {
      url: 'https://shop.example/static/page.html?a=1',
      path: '/static/page.html',
      title: 'Static',
    });
  });

  test('a bad key still gets the GIF, and nothing is forwarded', async () => {
    for (const [params, outcome] of [
      [{ k: 'wk_nope', u: 'https://shop.example/' }, 'invalid_key'],
      [{ k: 'wk_revoked' }, 'revoked_key'],
      [{ u: 'https://shop.example/' }, 'missing_key'],
      [{ k: 'not a key \u00e9' }, 'invalid_key'],
    ]) {
      const res = await pixel(params);
      assert.equal(res.status, 200, JSON.stringify(params));
      assert.equal(res.headers.get('content-type'), 'image/gif');
      assert.equal(res.headers.get('cache-control'), 'no-store');
      assert.equal(res.headers.get('x-nexus-outcome'), outcome);
      assert.deepEqual(res.bytes, GIF);
    }
    assert.equal(origin.ingests.length, 0);
  });

  test('an origin failure still gets the GIF; the drop is counted with the origin code', async () => {
    origin.failNext = { status: 503, body: { error: { code: 'unavailable', message: 'down' } } };
    const res = await pixel({ k: 'wk_valid' });
    assert.equal(res.status, 200);
    assert.deepEqual(res.bytes, GIF);
    assert.equal(res.headers.get('x-nexus-outcome'), 'unavailable');
    const [line] = await ingestLines('pixel');
    assert.deepEqual(line.refused, { reason: 'unavailable', events: 1 });
  });
});

describe('counts', () => {
  test('a mixed batch: one ingest line and data points for accepted and each rejection code', async () => {
    const batch = [ev(), ev({ id: 'x' }), ev({ id: 'y' }), ev({ type: 'nope' }), ev({ name: ORIGIN_REJECTS }), ev()];
    const res = await call(mf, 'POST', '/v1/batch?key=wk_valid', {
      headers: { 'content-type': 'application/json', 'user-agent': CHROME },
      body: JSON.stringify({ batch }),
    });
    assert.equal(res.json.accepted, 2, res.text);
    const [line] = await ingestLines('batch');
    assert.deepEqual(line, {
      event: 'ingest', route: 'batch', status: 200, project_id: KEYS.wk_valid.project_id, accepted: 2,
      rejected: { invalid_field: 1, invalid_id: 2, invalid_type: 1 }, refused: null,
    });
    const points = (await logged((l) => l.ae, 4)).map((l) => l.ae);
    assert.deepEqual(points, [
      { indexes: ['42'], blobs: ['batch', 'accepted', ''], doubles: [2] },
      { indexes: ['42'], blobs: ['batch', 'rejected', 'invalid_field'], doubles: [1] },
      { indexes: ['42'], blobs: ['batch', 'rejected', 'invalid_id'], doubles: [2] },
      { indexes: ['42'], blobs: ['batch', 'rejected', 'invalid_type'], doubles: [1] },
    ]);
  });

  test('refused requests are counted with their code: track with a bad key, a refused pixel', async () => {
    await track(ev(), { key: 'wk_nope' });
    await pixel({ k: 'wk_revoked' });
    await track('{', {});
    const lines = await logged((l) => l.event === 'ingest', 3);
    assert.deepEqual(lines.map((l) => [l.route, l.status, l.project_id, l.refused]), [
      ['track', 401, null, { reason: 'invalid_key', events: 0 }],
      // The pipeline's status: the pixel itself answers 200 with the GIF.
      ['pixel', 403, KEYS.wk_revoked.project_id, { reason: 'revoked_key', events: 1 }],
      ['track', 400, KEYS.wk_valid.project_id, { reason: 'malformed_json', events: 0 }],
    ]);
    const points = (await logged((l) => l.ae, 3)).map((l) => l.ae);
    assert.deepEqual(points, [
      { indexes: [''], blobs: ['track', 'refused', 'invalid_key'], doubles: [0] },
      { indexes: ['45'], blobs: ['pixel', 'refused', 'revoked_key'], doubles: [1] },
      { indexes: ['42'], blobs: ['track', 'refused', 'malformed_json'], doubles: [0] },
    ]);
  });

  test('a pixel view and a track are counted as accepted', async () => {
    await pixel({ k: 'wk_open' });
    await track(ev());
    const points = (await logged((l) => l.ae, 2)).map((l) => l.ae);
    assert.deepEqual(points, [
      { indexes: ['43'], blobs: ['pixel', 'accepted', ''], doubles: [1] },
      { indexes: ['42'], blobs: ['track', 'accepted', ''], doubles: [1] },
    ]);
  });
});

describe('deployment with the real Analytics Engine binding', () => {
  test("miniflare's EVENTS_AE simulator takes the writes; the routes answer as usual", async () => {
    const real = worker(
      { ORIGIN_URL: origin.url, ORIGIN_SECRET: SECRET, VISITOR_SALT: 'single-salt' },
      { analyticsEngineDatasets: { EVENTS_AE: { dataset: 'nexus_edge_events' } } },
    );
    try {
      const res = await call(real, 'POST', '/v1/track?key=wk_valid', {
        headers: { 'content-type': 'application/json', 'user-agent': CHROME },
        body: JSON.stringify(ev()),
      });
      assert.deepEqual(res.json, { accepted: 1, rejected: [] });
      const gif = await real.dispatchFetch('http://edge.test/v1/p.gif?k=wk_nope');
      assert.equal(gif.headers.get('x-nexus-outcome'), 'invalid_key');
      assert.deepEqual(Buffer.from(await gif.arrayBuffer()), GIF);
    } finally {
      await real.dispose();
    }
  });
});
