// The built Rust worker (edge-worker/build/) running in workerd through miniflare, against a
// fake origin on 127.0.0.1. Run with `cargo xtask test-edge` (after `cargo xtask build-edge`).

import { after, before, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { gzipSync } from 'node:zlib';

import { KEYS, ORIGIN_REJECTS, startOrigin } from './fake-origin.mjs';
import { BARE_CF, CHROME, MAX_BATCH_BYTES, SECRET, call, ev, worker } from './support.mjs';

const SALT = 'test-visitor-salt';
const CLIENT_IP = '203.0.113.77';

/** The protocol's visitor hash: sha256 over length-prefixed (u64 BE) parts, first 16 bytes, hex. */
function visitorHash(salt, projectId, ip, ua) {
  const h = createHash('sha256');
  for (const part of [salt, String(projectId), ip, ua].map((s) => Buffer.from(s))) {
    const len = Buffer.alloc(8);
    len.writeBigUInt64BE(BigInt(part.length));
    h.update(len).update(part);
  }
  return h.digest().subarray(0, 16).toString('hex');
}

let origin;
let mf;


/** POSTs a batch (an array of events, an object, or a raw string/Buffer body). */
function post(batch, { key = 'wk_valid', query = '', headers = {}, cf = BARE_CF, raw } = {}) {
  const body = raw ?? JSON.stringify(Array.isArray(batch) ? { batch } : batch);
  const q = [key ? `key=${encodeURIComponent(key)}` : '', query].filter(Boolean).join('&');
  return call(mf, 'POST', `/v1/batch${q ? '?' + q : ''}`, {
    headers: { 'content-type': 'application/json', 'user-agent': CHROME, ...headers },
    body,
    cf,
  });
}

function forwardedEvents() {
  return origin.ingests.flatMap((i) => i.body.events);
}

before(async () => {
  origin = await startOrigin(SECRET);
  mf = worker({ ORIGIN_URL: origin.url, ORIGIN_SECRET: SECRET, VISITOR_SALT: SALT });
  await mf.ready;
});

after(async () => {
  await mf?.dispose();
  await origin?.close();
});

beforeEach(() => origin.reset());

describe('routes', () => {
  test('health, unknown route, wrong method', async () => {
    const health = await call(mf, 'GET', '/health');
    assert.equal(health.status, 200);
    assert.deepEqual(health.json, { status: 'ok' });
    const missing = await call(mf, 'GET', '/v1/events');
    assert.equal(missing.status, 404);
    assert.equal(missing.json.error.code, 'not_found');
    const wrong = await call(mf, 'GET', '/v1/batch?key=wk_valid');
    assert.equal(wrong.status, 405);
    assert.equal(wrong.json.error.code, 'method_not_allowed');
    assert.equal(wrong.headers.get('allow'), 'POST, OPTIONS');
    const odd = await call(mf, 'PROPFIND', '/health');
    assert.equal(odd.status, 405);
  });
});

describe('envelope', () => {
  test('missing key is 401 missing_key; key in x-nexus-key header works', async () => {
    const res = await post([ev()], { key: null });
    assert.equal(res.status, 401);
    assert.equal(res.json.error.code, 'missing_key');
    const viaHeader = await post([ev()], { key: null, headers: { 'x-nexus-key': 'wk_valid' } });
    assert.equal(viaHeader.status, 200, viaHeader.text);
    assert.equal(viaHeader.json.accepted, 1);
  });

  test('unknown key is 401 invalid_key, revoked key is 403 revoked_key', async () => {
    const unknown = await post([ev()], { key: 'wk_nope' });
    assert.equal(unknown.status, 401);
    assert.equal(unknown.json.error.code, 'invalid_key');
    const junk = await post([ev()], { key: 'not a key \u00e9' });
    assert.equal(junk.status, 401);
    assert.equal(junk.json.error.code, 'invalid_key');
    const revoked = await post([ev()], { key: 'wk_revoked' });
    assert.equal(revoked.status, 403);
    assert.equal(revoked.json.error.code, 'revoked_key');
    assert.equal(origin.ingests.length, 0);
  });

  test('key answers are cached in the isolate', async () => {
    for (let i = 0; i < 3; i++) assert.equal((await post([ev()], { key: 'wk_cached' })).status, 200);
    assert.equal(origin.lookups.filter((l) => l.body.write_key === 'wk_cached').length, 1);
    assert.equal(origin.ingests.length, 3);
  });

  test('wrong content type is 415', async () => {
    const res = await post([ev()], { headers: { 'content-type': 'application/x-www-form-urlencoded' } });
    assert.equal(res.status, 415);
    assert.equal(res.json.error.code, 'unsupported_media_type');
    const br = await post([ev()], { headers: { 'content-encoding': 'br' } });
    assert.equal(br.status, 415);
    assert.equal(br.json.error.code, 'unsupported_encoding');
  });

  test('malformed JSON is 400 malformed_json, empty batch 400 empty_batch', async () => {
    const res = await post(null, { raw: '{"batch": [' });
    assert.equal(res.status, 400);
    assert.equal(res.json.error.code, 'malformed_json');
    const empty = await post([]);
    assert.equal(empty.status, 400);
    assert.equal(empty.json.error.code, 'empty_batch');
    assert.equal(origin.ingests.length, 0);
  });

  test('a 2 MB body is 413 payload_too_large', async () => {
    const res = await post(null, { raw: '{"batch": [' + ' '.repeat(2 * 1024 * 1024) + ']}' });
    assert.equal(res.status, 413);
    assert.equal(res.json.error.code, 'payload_too_large');
  });

  test('gzip via ?compression=gzip (beacon style) and Content-Encoding is accepted', async () => {
    const body = gzipSync(JSON.stringify({ batch: [ev({ name: 'zipped' })] }));
    const beacon = await post(null, {
      raw: body,
      query: 'compression=gzip',
      headers: { 'content-type': 'text/plain;charset=UTF-8' },
    });
    assert.equal(beacon.status, 200, beacon.text);
    assert.deepEqual(beacon.json, { accepted: 1, rejected: [] });
    const header = await post(null, { raw: body, headers: { 'content-encoding': 'gzip' } });
    assert.equal(header.status, 200, header.text);
    assert.deepEqual(forwardedEvents().map((e) => e.event.name), ['zipped', 'zipped']);
    const notGzip = await post([ev()], { query: 'compression=gzip' });
    assert.equal(notGzip.status, 400);
    assert.equal(notGzip.json.error.code, 'invalid_encoding');
  });

  test('a gzip bomb is refused with 413', async () => {
    const bomb = gzipSync(Buffer.alloc(50 * 1024 * 1024, 0x20), { level: 9 });
    assert.ok(bomb.length < MAX_BATCH_BYTES);
    const res = await post(null, { raw: bomb, query: 'compression=gzip' });
    assert.equal(res.status, 413);
    assert.equal(res.json.error.code, 'payload_too_large');
    assert.equal(origin.ingests.length, 0);
  });
});

describe('batches', () => {
  test('mixed batch: 2 valid + 2 invalid -> 200 with the bad indexes, only 2 forwarded', async () => {
    const batch = [ev({ name: 'a' }), ev({ id: 'not-a-uuid' }), ev({ name: 'b' }), ev({ timestamp: 'soon' })];
    const res = await post(batch);
    assert.equal(res.status, 200, res.text);
    assert.deepEqual(res.json, {
      accepted: 2,
      rejected: [
        { index: 1, code: 'invalid_id', field: 'id' },
        { index: 3, code: 'invalid_timestamp', field: 'timestamp' },
      ],
    });
    assert.equal(origin.ingests.length, 1);
    assert.deepEqual(forwardedEvents().map((e) => e.event.name), ['a', 'b']);
    assert.equal(origin.ingests[0].body.write_key, 'wk_valid');
  });

  test('origin rejections are remapped to client indexes and merged in order', async () => {
    const batch = [
      ev({ type: 'nope' }), // 0: edge rejects
      ev({ name: 'ok' }), // 1 -> forwarded 0
      ev({ name: ORIGIN_REJECTS }), // 2 -> forwarded 1, origin rejects
      ev({ timestamp: 'soon' }), // 3: edge rejects
      ev({ name: ORIGIN_REJECTS }), // 4 -> forwarded 2, origin rejects
      ev({ name: 'ok' }), // 5 -> forwarded 3
    ];
    const res = await post(batch);
    assert.equal(res.status, 200, res.text);
    assert.deepEqual(res.json, {
      accepted: 2,
      rejected: [
        { index: 0, code: 'invalid_type', field: 'type' },
        { index: 2, code: 'invalid_field', field: 'properties' },
        { index: 3, code: 'invalid_timestamp', field: 'timestamp' },
        { index: 4, code: 'invalid_field', field: 'properties' },
      ],
    });
    assert.equal(forwardedEvents().length, 4);
  });

  test('no valid event: 200 with accepted 0 and no origin call', async () => {
    const res = await post([ev({ id: 'x' }), 'not an object']);
    assert.equal(res.status, 200);
    assert.deepEqual(res.json, {
      accepted: 0,
      rejected: [
        { index: 0, code: 'invalid_id', field: 'id' },
        { index: 1, code: 'not_an_object' },
      ],
    });
    assert.equal(origin.ingests.length, 0);
  });

  test('a forward larger than the origin limit is split; indexes stay right', async () => {
    // 1000 small events (~150 KB) with long geo strings and user agent: ~3.5 MB of enriched
    // JSON, over the 2 MiB forward limit.
    const long = 'x'.repeat(256);
    const geoKeys = ['country', 'region', 'regionCode', 'city', 'postalCode', 'continent', 'timezone', 'asOrganization', 'colo'];
    const cf = { ...BARE_CF, ...Object.fromEntries(geoKeys.map((k) => [k, long])) };
    const batch = Array.from({ length: 1000 }, (_, i) => ev({ name: i === 900 ? ORIGIN_REJECTS : `e${i}` }));
    const res = await post(batch, { cf, headers: { 'user-agent': CHROME + ' '.repeat(10) + 'y'.repeat(1000) } });
    assert.equal(res.status, 200, res.text);
    assert.deepEqual(res.json, { accepted: 999, rejected: [{ index: 900, code: 'invalid_field', field: 'properties' }] });
    assert.ok(origin.ingests.length >= 2, `${origin.ingests.length} requests`);
    for (const i of origin.ingests) assert.ok(i.raw.length <= 4 * MAX_BATCH_BYTES, `${i.raw.length} bytes`);
    assert.deepEqual(forwardedEvents().map((e) => e.event.name), batch.map((e) => e.name));
    assert.equal(origin.badSignatures, 0);
  });
});

describe('enrichment', () => {
  test('geo from request.cf lands in the forwarded event', async () => {
    const cf = {
      country: 'DE', region: 'Berlin', regionCode: 'BE', city: 'Berlin', postalCode: '10115',
      continent: 'EU', timezone: 'Europe/Berlin', latitude: '52.52000', longitude: '13.40500',
      asn: 3320, asOrganization: 'Deutsche Telekom AG', colo: 'FRA',
    };
    const res = await post([ev()], { cf });
    assert.equal(res.status, 200, res.text);
    const [e] = forwardedEvents();
    assert.deepEqual(e.geo, {
      country: 'DE', region: 'Berlin', region_code: 'BE', city: 'Berlin', postal_code: '10115',
      continent: 'EU', timezone: 'Europe/Berlin', latitude: 52.52, longitude: 13.405,
      asn: 3320, as_org: 'Deutsche Telekom AG', colo: 'FRA',
    });
    assert.equal(e.bot, false);
  });

  test('a cf object missing most fields works: the fields are absent', async () => {
    const res = await post([ev()], { cf: { ...BARE_CF, colo: 'AMS' } });
    assert.equal(res.status, 200, res.text);
    assert.deepEqual(forwardedEvents()[0].geo, { colo: 'AMS' });
    const none = await post([ev()], { cf: BARE_CF });
    assert.equal(none.status, 200, none.text);
    assert.deepEqual(forwardedEvents()[1].geo, {});
    const odd = await post([ev()], { cf: { ...BARE_CF, latitude: 'north', asn: 'many', country: 49 } });
    assert.equal(odd.status, 200, odd.text);
    assert.deepEqual(forwardedEvents()[2].geo, {});
  });

  test('bot verdict from the user agent and from the bot management score', async () => {
    await post([ev()], { headers: { 'user-agent': 'curl/8.5.0' } });
    await post([ev()], { cf: { ...BARE_CF, botManagement: { score: 5 } } });
    await post([ev()], { cf: { ...BARE_CF, botManagement: { score: 90 } } });
    assert.deepEqual(forwardedEvents().map((e) => e.bot), [true, true, false]);
    assert.equal(forwardedEvents()[0].user_agent, 'curl/8.5.0');
  });

  test('skew correction: sent_at 1 h behind shifts the forwarded timestamp', async () => {
    const hour = 3600 * 1000;
    const now = Date.now();
    const clientTime = new Date(now - hour - 5000).toISOString(); // happened 5 s before sending
    const sentAt = new Date(now - hour).toISOString();
    const res = await post({ sent_at: sentAt, batch: [ev({ timestamp: clientTime })] });
    assert.equal(res.status, 200, res.text);
    const [e] = forwardedEvents();
    assert.equal(Date.parse(e.event.timestamp), Date.parse(clientTime)); // the client's time, untouched
    assert.equal(Date.parse(e.sent_at), Date.parse(sentAt));
    const corrected = Date.parse(e.timestamp);
    const received = Date.parse(e.received_at);
    assert.ok(Math.abs(received - now) < 10_000, `received_at ${e.received_at}`);
    assert.ok(Math.abs(corrected - (received - 5000)) < 5, `timestamp ${e.timestamp} received ${e.received_at}`);
  });

  test('the forward is signed, hashes the visitor and carries no IP anywhere', async () => {
    const res = await post([ev({ properties: { note: 'hello' } })], {
      headers: { 'cf-connecting-ip': CLIENT_IP, 'x-forwarded-for': `${CLIENT_IP}, 10.0.0.1` },
    });
    assert.equal(res.status, 200, res.text);
    assert.equal(origin.badSignatures, 0);
    assert.equal(origin.ingests.length, 1);
    const [ingest] = origin.ingests;
    assert.match(ingest.headers['x-nexus-signature'], /^v1=[0-9a-f]{64}$/);
    assert.ok(Math.abs(Number(ingest.headers['x-nexus-timestamp']) - Date.now() / 1000) < 60);
    assert.equal(ingest.headers['content-type'], 'application/json');
    const everything = ingest.raw.toString('utf8') + JSON.stringify(ingest.headers) +
      origin.lookups.map((l) => l.raw.toString('utf8') + JSON.stringify(l.headers)).join('');
    assert.ok(!everything.includes(CLIENT_IP), 'the client IP leaked into the forward');
    assert.ok(!everything.includes('10.0.0.1'), 'the forwarded-for chain leaked into the forward');
    const [e] = ingest.body.events;
    assert.equal(e.visitor_hash, visitorHash(SALT, KEYS.wk_valid.project_id, CLIENT_IP, CHROME));
    assert.equal(e.user_agent, CHROME);
    assert.deepEqual(e.event.properties, { note: 'hello' });
  });
});

describe('cors', () => {
  const preflight = (key, originHeader) =>
    call(mf, 'OPTIONS', `/v1/batch?key=${key}`, {
      headers: {
        origin: originHeader,
        'access-control-request-method': 'POST',
        'access-control-request-headers': 'content-type',
      },
    });

  test('preflight is allowed for a listed origin', async () => {
    const res = await preflight('wk_valid', 'https://shop.example');
    assert.equal(res.status, 204);
    assert.equal(res.headers.get('access-control-allow-origin'), 'https://shop.example');
    assert.equal(res.headers.get('access-control-allow-methods'), 'POST, OPTIONS');
    assert.equal(res.headers.get('access-control-allow-headers'), 'content-type, content-encoding, x-nexus-key');
    assert.equal(res.headers.get('access-control-max-age'), '86400');
    assert.equal(res.headers.get('vary'), 'Origin');
    const open = await preflight('wk_open', 'https://anyone.example');
    assert.equal(open.status, 204);
    assert.equal(open.headers.get('access-control-allow-origin'), 'https://anyone.example');
  });

  test('preflight is refused for another origin or a bad key', async () => {
    const res = await preflight('wk_valid', 'https://evil.example');
    assert.equal(res.status, 403);
    assert.equal(res.json.error.code, 'origin_not_allowed');
    assert.equal(res.headers.get('access-control-allow-origin'), null);
    const unknown = await preflight('wk_nope', 'https://shop.example');
    assert.equal(unknown.status, 401);
    assert.equal(unknown.json.error.code, 'invalid_key');
    assert.equal(unknown.headers.get('access-control-allow-origin'), null);
  });

  test('POST answers carry CORS headers for an allowed origin only', async () => {
    const ok = await post([ev()], { headers: { origin: 'https://shop.example' } });
    assert.equal(ok.status, 200);
    assert.equal(ok.headers.get('access-control-allow-origin'), 'https://shop.example');
    assert.equal(ok.headers.get('vary'), 'Origin');
    const error = await post(null, { raw: '{', headers: { origin: 'https://shop.example' } });
    assert.equal(error.status, 400);
    assert.equal(error.headers.get('access-control-allow-origin'), 'https://shop.example');
    const early = await post([ev()], { headers: { origin: 'https://shop.example', 'content-type': 'text/html' } });
    assert.equal(early.status, 415);
    assert.equal(early.headers.get('access-control-allow-origin'), 'https://shop.example');
    const refused = await post([ev()], { headers: { origin: 'https://evil.example' } });
    assert.equal(refused.status, 403);
    assert.equal(refused.json.error.code, 'origin_not_allowed');
    assert.equal(refused.headers.get('access-control-allow-origin'), null);
    const noOrigin = await post([ev()]);
    assert.equal(noOrigin.headers.get('access-control-allow-origin'), null);
    assert.equal(origin.ingests.length, 2);
  });
});

describe('origin failures', () => {
  test('origin 503 is passed through with Retry-After (the SDK retries)', async () => {
    origin.failNext = {
      status: 503,
      body: { error: { code: 'unavailable', message: 'storage is down' } },
      headers: { 'retry-after': '7' },
    };
    const res = await post([ev()], { headers: { origin: 'https://shop.example' } });
    assert.equal(res.status, 503);
    assert.deepEqual(res.json, { error: { code: 'unavailable', message: 'storage is down' } });
    assert.equal(res.headers.get('retry-after'), '7');
    assert.equal(res.headers.get('access-control-allow-origin'), 'https://shop.example');
  });

  test('origin 429 passes through; a refused signature becomes a retryable 502', async () => {
    origin.failNext = { status: 429, body: { error: { code: 'rate_limited', message: 'slow down' } }, headers: { 'retry-after': '30' } };
    const limited = await post([ev()]);
    assert.equal(limited.status, 429);
    assert.equal(limited.headers.get('retry-after'), '30');
    origin.failNext = { status: 401, body: { error: { code: 'invalid_signature', message: 'no' } } };
    const refused = await post([ev()]);
    assert.equal(refused.status, 502);
    assert.equal(refused.json.error.code, 'upstream_error');
  });
});

// The malformed-request corpus lives in hostile.test.mjs.
describe('hostile input', () => {
  test('SQL-injection strings are plain data, forwarded byte for byte', async () => {
    const evil = "'; DROP TABLE events; --";
    const event = ev({
      name: evil,
      anonymous_id: "1' OR '1'='1",
      user_id: 'robert"); DELETE FROM persons; --',
      properties: { [evil]: evil, "a'b": '${jndi:ldap://x}', nested: { q: 'UNION SELECT * FROM keys' } },
      context: { url: "https://shop.example/?q=' OR 1=1 --", title: '<script>alert(1)</script>' },
    });
    const res = await post([event]);
    assert.equal(res.status, 200, res.text);
    assert.deepEqual(res.json, { accepted: 1, rejected: [] });
    const [e] = forwardedEvents();
    assert.equal(e.event.name, evil);
    assert.equal(e.event.anonymous_id, event.anonymous_id);
    assert.equal(e.event.user_id, event.user_id);
    assert.deepEqual(e.event.properties, event.properties);
    assert.equal(e.event.context.url, event.context.url);
    assert.equal(e.event.context.title, event.context.title);
  });
});

describe('deployment variants', () => {
  test('PATH_PREFIX is stripped; a wrong ORIGIN_SECRET is a retryable 502', async () => {
    const prefixed = worker({ ORIGIN_URL: origin.url, ORIGIN_SECRET: 'wrong-secret', VISITOR_SALT: SALT, PATH_PREFIX: '/nx' });
    try {
      assert.equal((await call(prefixed, 'GET', '/nx/health')).status, 200);
      assert.equal((await call(prefixed, 'GET', '/health')).status, 404);
      const res = await call(prefixed, 'POST', '/nx/v1/batch?key=wk_valid', {
        headers: { 'content-type': 'application/json', 'user-agent': CHROME },
        body: JSON.stringify({ batch: [ev()] }),
      });
      assert.equal(res.status, 502, res.text);
      assert.equal(res.json.error.code, 'upstream_error');
      assert.ok(origin.badSignatures >= 1);
    } finally {
      await prefixed.dispose();
    }
  });

  test('an unreachable origin is 502 upstream_error; missing config is 500 internal', async () => {
    const unreachable = worker({ ORIGIN_URL: 'http://127.0.0.1:9', ORIGIN_SECRET: SECRET, VISITOR_SALT: SALT });
    const unconfigured = worker({});
    try {
      const body = JSON.stringify({ batch: [ev()] });
      const headers = { 'content-type': 'application/json', 'user-agent': CHROME };
      const res = await call(unreachable, 'POST', '/v1/batch?key=wk_valid', { headers, body });
      assert.equal(res.status, 502, res.text);
      assert.equal(res.json.error.code, 'upstream_error');
      const broken = await call(unconfigured, 'POST', '/v1/batch?key=wk_valid', { headers, body });
      assert.equal(broken.status, 500, broken.text);
      assert.deepEqual(broken.json, { error: { code: 'internal', message: 'internal error' } });
      assert.equal((await call(unconfigured, 'GET', '/health')).status, 200);
    } finally {
      await Promise.all([unreachable.dispose(), unconfigured.dispose()]);
    }
  });
});
