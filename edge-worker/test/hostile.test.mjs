// The hostile corpus: malformed and malicious requests against the built worker (the batch and
// track routes, and the pixel's own table below), one table row per case. Each row pins the exact answer (status and code, or the per-event rejections of a
// 200); whatever the row, the worker must answer JSON, never 500, and stay alive afterwards.
// `EDGE_TEST_DEBUG=1` prints every answer.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { gzipSync } from 'node:zlib';

import { startOrigin } from './fake-origin.mjs';
import { CHROME, SECRET, call, ev, worker } from './support.mjs';

const MB = 1024 * 1024;
const json = (v) => JSON.stringify(v);
const batchOf = (...events) => json({ batch: events });
const oneEvent = (over) => batchOf(ev(over));
/** A valid event's JSON text, for hand-built bodies. */
const evText = (over) => json(ev(over));
/** An event whose JSON text is spliced in raw (for what JSON.stringify cannot produce). */
const rawEvent = (fragment) =>
  `{"batch": [{"id": "${randomUUID()}", "type": "track", "name": "n", "anonymous_id": "a", ` +
  `"timestamp": "${new Date().toISOString()}", ${fragment}}]}`;
const bytes = (...parts) => Buffer.concat(parts.map((p) => (typeof p === 'string' ? Buffer.from(p) : Buffer.from(p))));
const deep = (n) => {
  let v = 1;
  for (let i = 0; i < n; i++) v = { d: v };
  return v;
};
/** A body delivered as a stream: no Content-Length, the worker must count while reading. */
const streamOf = (total, chunk = 64 * 1024) => {
  let sent = 0;
  const piece = new Uint8Array(chunk).fill(0x20);
  return new ReadableStream({
    pull(c) {
      if (sent >= total) return c.close();
      sent += chunk;
      c.enqueue(piece);
    },
  });
};

const err = (status, code) => ({ status, code });
/** A 200 whose per-event rejections are `[index, code, field?]`. */
const ok = (accepted, ...rejected) => ({ status: 200, accepted, rejected });

// [name, request, expected]. The request defaults to a POST of JSON to /v1/batch?key=wk_valid
// with a browser user agent; `query` replaces the query string, `headers` are merged.
const CASES = [
  // --- not a batch at all ---
  ['empty body', { body: '' }, err(400, 'malformed_json')],
  ['whitespace only', { body: ' \n\t ' }, err(400, 'malformed_json')],
  ['json null', { body: 'null' }, err(400, 'malformed_json')],
  ['empty object', { body: '{}' }, err(400, 'malformed_json')],
  ['batch is null', { body: '{"batch": null}' }, err(400, 'malformed_json')],
  ['batch is a string', { body: '{"batch": "[]"}' }, err(400, 'malformed_json')],
  ['batch is an object', { body: '{"batch": {"0": {}}}' }, err(400, 'malformed_json')],
  ['top-level array', { body: '[{"batch": []}]' }, err(400, 'malformed_json')],
  ['empty batch', { body: '{"batch": []}' }, err(400, 'empty_batch')],
  ['duplicate batch key', { body: `{"batch": [${evText()}], "batch": [${evText()}]}` }, err(400, 'malformed_json')],
  // --- truncated and broken JSON ---
  ['truncated in a string', { body: '{"batch": [{"id": "' }, err(400, 'malformed_json')],
  ['truncated after an event', { body: `{"batch": [${evText()},` }, err(400, 'malformed_json')],
  ['truncated mid-key', { body: oneEvent().slice(0, 60) }, err(400, 'malformed_json')],
  ['trailing garbage', { body: oneEvent() + ' xyz' }, err(400, 'malformed_json')],
  ['two documents', { body: oneEvent() + oneEvent() }, err(400, 'malformed_json')],
  ['byte order mark', { body: '\ufeff' + oneEvent() }, err(400, 'malformed_json')],
  ['single quotes', { body: "{'batch': [{}]}" }, err(400, 'malformed_json')],
  ['comments', { body: `{"batch": [/* hi */ ${evText()}]}` }, err(400, 'malformed_json')],
  ['trailing comma', { body: `{"batch": [${evText()},]}` }, err(400, 'malformed_json')],
  // --- numbers ---
  ['NaN literal', { body: rawEvent('"properties": {"n": NaN}') }, err(400, 'malformed_json')],
  ['Infinity literal', { body: rawEvent('"properties": {"n": Infinity}') }, err(400, 'malformed_json')],
  ['-Infinity literal', { body: rawEvent('"properties": {"n": -Infinity}') }, err(400, 'malformed_json')],
  ['hex number', { body: rawEvent('"properties": {"n": 0x10}') }, err(400, 'malformed_json')],
  ['1e999 property', { body: rawEvent('"properties": {"n": 1e999}') }, ok(0, [0, 'not_an_object'])],
  ['huge integer property', { body: rawEvent('"properties": {"n": 123456789012345678901234567890}') }, ok(1)],
  ['-0 and 1e308', { body: rawEvent('"properties": {"a": -0, "b": 1e308, "c": -1e-320}') }, ok(1)],
  ['number as id', { body: rawEvent('"x": 1').replace(/"id": "[^"]+"/, '"id": 1e999') }, ok(0, [0, 'not_an_object'])],
  ['sent_at NaN', { body: `{"sent_at": NaN, "batch": [${evText()}]}` }, err(400, 'malformed_json')],
  ['sent_at a number', { body: `{"sent_at": 1733040000, "batch": [${evText()}]}` }, err(400, 'invalid_sent_at')],
  ['sent_at year 10000', { body: `{"sent_at": "+10000-01-01T00:00:00Z", "batch": [${evText()}]}` }, err(400, 'invalid_sent_at')],
  // --- nesting ---
  ['deep envelope', { body: '['.repeat(100_000) + ']'.repeat(100_000) }, err(400, 'malformed_json')],
  ['deep unclosed objects', { body: '{"batch": ' + '{"a":'.repeat(100_000) }, err(400, 'malformed_json')],
  ['deep unclosed event', { body: '{"batch": [' + '[{"a":'.repeat(80_000) }, err(400, 'malformed_json')],
  ['deep event array', { body: `{"batch": [${'['.repeat(10_000)}${']'.repeat(10_000)}]}` }, ok(0, [0, 'properties_too_deep'])],
  ['deep property', { body: oneEvent({ properties: { a: deep(100) } }) }, ok(0, [0, 'properties_too_deep', 'properties'])],
  ['deep context', { body: oneEvent({ context: { a: deep(20) } }) }, ok(0, [0, 'invalid_context', 'context'])],
  // --- sizes ---
  ['10 MB string body', { body: `{"batch": [{"name": "${'x'.repeat(10 * MB)}"}]}` }, err(413, 'payload_too_large')],
  // Streamed (no Content-Length): the worker counts while reading. Just over the cap, so the
  // whole body is read before the answer (see the 10 MB stream test below).
  ['576 KiB streamed, no length', { body: streamOf(9 * 64 * 1024), duplex: 'half' }, err(413, 'payload_too_large')],
  ['1001 events', { body: json({ batch: Array.from({ length: 1001 }, () => ({})) }) }, err(413, 'too_many_events')],
  ['40 KB event', { body: oneEvent({ properties: { a: 'x'.repeat(8000), b: 'x'.repeat(8000), c: 'x'.repeat(8000), d: 'x'.repeat(8000), e: 'x'.repeat(8000) } }) }, ok(0, [0, 'event_too_large'])],
  ['20 KB property value', { body: oneEvent({ properties: { v: 'x'.repeat(20_000) } }) }, ok(0, [0, 'property_value_too_long', 'properties'])],
  ['201-byte name', { body: oneEvent({ name: 'n'.repeat(201) }) }, ok(0, [0, 'name_too_long', 'name'])],
  ['201 properties', { body: oneEvent({ properties: Object.fromEntries(Array.from({ length: 201 }, (_, i) => [`k${i}`, i])) }) }, ok(0, [0, 'too_many_properties', 'properties'])],
  ['300-byte property key', { body: oneEvent({ properties: { ['k'.repeat(300)]: 1 } }) }, ok(0, [0, 'invalid_property_key', 'properties'])],
  ['empty property key', { body: oneEvent({ properties: { '': 1 } }) }, ok(0, [0, 'invalid_property_key', 'properties'])],
  // --- encodings of text ---
  ['invalid utf-8 byte', { body: bytes('{"batch": [{"name": "', [0xff, 0xfe], '"}]}') }, err(400, 'invalid_utf8')],
  ['overlong utf-8', { body: bytes('{"batch": [{"name": "', [0xc0, 0xaf], '"}]}') }, err(400, 'invalid_utf8')],
  ['truncated utf-8', { body: bytes('{"batch": [{"name": "', [0xe2, 0x82], '"}]}') }, err(400, 'invalid_utf8')],
  ['utf-16 body', { body: Buffer.from(oneEvent(), 'utf16le') }, err(400, 'malformed_json')],
  ['lone surrogate escape', { body: rawEvent('"properties": {"s": "\\ud800"}') }, ok(0, [0, 'not_an_object'])],
  ['bad escape', { body: rawEvent('"properties": {"s": "\\x41"}') }, err(400, 'malformed_json')],
  ['raw control character', { body: rawEvent('"properties": {"s": "a\u0001b"}') }, err(400, 'malformed_json')],
  ['escaped NUL', { body: oneEvent({ name: 'a\u0000b', properties: { '\u0000': '\u0000' } }) }, ok(1)],
  // --- wrong types ---
  ['event is a string', { body: batchOf('event') }, ok(0, [0, 'not_an_object'])],
  ['event is null', { body: batchOf(null) }, ok(0, [0, 'not_an_object'])],
  ['event is an array', { body: batchOf([ev()]) }, ok(0, [0, 'not_an_object'])],
  ['id is a number', { body: oneEvent({ id: 7 }) }, ok(0, [0, 'invalid_id', 'id'])],
  ['id is not a uuid', { body: oneEvent({ id: '../../etc/passwd' }) }, ok(0, [0, 'invalid_id', 'id'])],
  ['type is an array', { body: oneEvent({ type: ['track'] }) }, ok(0, [0, 'invalid_type', 'type'])],
  ['name is a boolean', { body: oneEvent({ name: true }) }, ok(0, [0, 'invalid_field', 'name'])],
  ['timestamp is a number', { body: oneEvent({ timestamp: 1733040000 }) }, ok(0, [0, 'invalid_timestamp', 'timestamp'])],
  ['timestamp year 0', { body: oneEvent({ timestamp: '0000-01-01T00:00:00Z' }) }, ok(0, [0, 'invalid_timestamp', 'timestamp'])],
  ['anonymous_id is an object', { body: oneEvent({ anonymous_id: { a: 1 } }) }, ok(0, [0, 'invalid_distinct_id', 'anonymous_id'])],
  ['properties is a string', { body: oneEvent({ properties: 'x' }) }, ok(0, [0, 'invalid_properties', 'properties'])],
  ['context is an array', { body: oneEvent({ context: [1] }) }, ok(0, [0, 'invalid_context', 'context'])],
  ['screen is negative', { body: oneEvent({ context: { screen: { width: -1, height: 1 } } }) }, ok(0, [0, 'invalid_context', 'context'])],
  ['mixed good and bad', { body: batchOf(ev(), 3, ev({ type: 'hack' }), ev()) }, ok(2, [1, 'not_an_object'], [2, 'invalid_type', 'type'])],
  // --- prototype pollution: plain data, forwarded as is ---
  ['__proto__ in event', { body: rawEvent('"__proto__": {"admin": true}, "constructor": {"prototype": 1}') }, ok(1)],
  ['__proto__ in properties', { body: rawEvent('"properties": {"__proto__": {"polluted": 1}}') }, ok(1)],
  ['__proto__ in envelope', { body: `{"__proto__": {"batch": []}, "batch": [${evText()}]}` }, ok(1)],
  // --- content types ---
  // A Buffer body: for a string, fetch would add text/plain itself.
  ['no content type', { headers: { 'content-type': null }, body: Buffer.from(oneEvent()) }, err(415, 'unsupported_media_type')],
  ['text/html', { headers: { 'content-type': 'text/html' }, body: oneEvent() }, err(415, 'unsupported_media_type')],
  ['form encoded', { headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: 'batch=1' }, err(415, 'unsupported_media_type')],
  ['multipart', { headers: { 'content-type': 'multipart/form-data; boundary=x' }, body: '--x--' }, err(415, 'unsupported_media_type')],
  ['json lookalike', { headers: { 'content-type': 'application/json-patch+json' }, body: oneEvent() }, err(415, 'unsupported_media_type')],
  ['two content types', { headers: { 'content-type': 'application/json, text/html' }, body: oneEvent() }, err(415, 'unsupported_media_type')],
  ['text/plain beacon', { headers: { 'content-type': 'text/plain;charset=UTF-8' }, body: oneEvent() }, ok(1)],
  // --- content encodings ---
  ['brotli', { headers: { 'content-encoding': 'br' }, body: oneEvent() }, err(415, 'unsupported_encoding')],
  ['deflate', { headers: { 'content-encoding': 'deflate' }, body: oneEvent() }, err(415, 'unsupported_encoding')],
  ['gzip twice listed', { headers: { 'content-encoding': 'gzip, gzip' }, body: gzipSync(gzipSync(oneEvent())) }, err(415, 'unsupported_encoding')],
  ['gzip claimed, plain body', { headers: { 'content-encoding': 'gzip' }, body: oneEvent() }, err(400, 'invalid_encoding')],
  ['truncated gzip', { headers: { 'content-encoding': 'gzip' }, body: gzipSync(oneEvent()).subarray(0, 30) }, err(400, 'invalid_encoding')],
  ['gzip bomb (50 MB of spaces)', { query: 'key=wk_valid&compression=gzip', body: gzipSync(Buffer.alloc(50 * MB, 0x20), { level: 9 }) }, err(413, 'payload_too_large')],
  ['gzip bomb (json prefix)', { headers: { 'content-encoding': 'gzip' }, body: gzipSync(Buffer.concat([Buffer.from('{"batch": ["'), Buffer.alloc(20 * MB, 0x61)]), { level: 9 }) }, err(413, 'payload_too_large')],
  ['gzip of broken json', { headers: { 'content-encoding': 'gzip' }, body: gzipSync('{"batch": [') }, err(400, 'malformed_json')],
  ['gzip inside gzip', { headers: { 'content-encoding': 'gzip' }, body: gzipSync(gzipSync(oneEvent())) }, err(400, 'invalid_utf8')],
  // --- query strings and keys ---
  ['no key', { query: '', body: oneEvent() }, err(401, 'missing_key')],
  ['empty key', { query: 'key=', body: oneEvent() }, err(401, 'missing_key')],
  ['blank key', { query: 'key=%20%20', body: oneEvent() }, err(401, 'missing_key')],
  ['bad percent escape', { query: 'key=%ZZ', body: oneEvent() }, err(401, 'invalid_key')],
  ['NUL in key', { query: 'key=wk%00valid', body: oneEvent() }, err(401, 'invalid_key')],
  ['10 KB key', { query: 'key=' + 'k'.repeat(10_000), body: oneEvent() }, err(401, 'invalid_key')],
  ['array-style key', { query: 'key[]=wk_valid', body: oneEvent() }, err(401, 'missing_key')],
  ['sql in key', { query: "key=wk_valid'%20OR%20'1'='1", body: oneEvent() }, err(401, 'invalid_key')],
  ['key given twice', { query: 'key=wk_valid&key=wk_evil', body: oneEvent() }, ok(1)],
  ['unknown compression', { query: 'key=wk_valid&compression=deflate', body: oneEvent() }, err(415, 'unsupported_encoding')],
  ['8 KB of junk parameters', { query: 'key=wk_valid&' + Array.from({ length: 800 }, (_, i) => `p${i}=%%`).join('&'), body: oneEvent() }, ok(1)],
  // --- methods and paths ---
  ['GET batch', { method: 'GET' }, err(405, 'method_not_allowed')],
  ['PUT batch', { method: 'PUT', body: oneEvent() }, err(405, 'method_not_allowed')],
  ['DELETE batch', { method: 'DELETE' }, err(405, 'method_not_allowed')],
  ['PATCH batch', { method: 'PATCH', body: oneEvent() }, err(405, 'method_not_allowed')],
  ['POST health', { method: 'POST', path: '/health', body: oneEvent() }, err(405, 'method_not_allowed')],
  ['upper-case path', { path: '/v1/BATCH', body: oneEvent() }, err(404, 'not_found')],
  ['double slash', { path: '//v1/batch', body: oneEvent() }, err(404, 'not_found')],
  ['dot segments', { path: '/v1/batch/../../admin', body: oneEvent() }, err(404, 'not_found')],
  ['encoded slash', { path: '/v1%2Fbatch', body: oneEvent() }, err(404, 'not_found')],
  // --- headers ---
  ['16 KB user agent', { headers: { 'user-agent': 'Mozilla/5.0 ' + 'u'.repeat(16 * 1024) }, body: oneEvent() }, ok(1)],
  ['8 KB origin', { headers: { origin: 'https://' + 'o'.repeat(8 * 1024) + '.example' }, body: oneEvent() }, err(403, 'origin_not_allowed')],
  ['origin "null"', { headers: { origin: 'null' }, body: oneEvent() }, err(403, 'origin_not_allowed')],
  ['8 KB key header', { query: '', headers: { 'x-nexus-key': 'k'.repeat(8 * 1024) }, body: oneEvent() }, err(401, 'invalid_key')],
  ['200 extra headers', { headers: Object.fromEntries(Array.from({ length: 200 }, (_, i) => [`x-junk-${i}`, 'v'.repeat(50)])), body: oneEvent() }, ok(1)],
  ['garbage client ip', { headers: { 'cf-connecting-ip': '<script>', 'x-forwarded-for': ',,,' }, body: oneEvent() }, ok(1)],
  ['8 KB forwarded-for', { headers: { 'x-forwarded-for': Array.from({ length: 800 }, () => '10.0.0.1').join(', ') }, body: oneEvent() }, ok(1)],
  // --- POST /v1/track: one event, the batch's body rules ---
  ['track: empty body', { path: '/v1/track', body: '' }, err(400, 'malformed_json')],
  ['track: json null', { path: '/v1/track', body: 'null' }, err(400, 'malformed_json')],
  ['track: a number', { path: '/v1/track', body: '42' }, err(400, 'malformed_json')],
  ['track: an array of events', { path: '/v1/track', body: json([ev()]) }, err(400, 'malformed_json')],
  ['track: truncated', { path: '/v1/track', body: evText().slice(0, 40) }, err(400, 'malformed_json')],
  ['track: trailing garbage', { path: '/v1/track', body: evText() + ' xyz' }, err(400, 'malformed_json')],
  ['track: two events', { path: '/v1/track', body: evText() + evText() }, err(400, 'malformed_json')],
  ['track: NaN property', { path: '/v1/track', body: evText().replace(/}$/, ', "properties": {"n": NaN}}') }, err(400, 'malformed_json')],
  ['track: 1e999 property', { path: '/v1/track', body: evText().replace(/}$/, ', "properties": {"n": 1e999}}') }, ok(0, [0, 'not_an_object'])],
  ['track: deep event', { path: '/v1/track', body: evText().replace(/}$/, `, "properties": {"a": ${'['.repeat(10_000)}${']'.repeat(10_000)}}}`) }, ok(0, [0, 'properties_too_deep'])],
  ['track: deep unclosed', { path: '/v1/track', body: '{"a":'.repeat(100_000) }, err(400, 'malformed_json')],
  ['track: 10 MB string', { path: '/v1/track', body: json(ev({ name: 'x'.repeat(10 * MB) })) }, err(413, 'payload_too_large')],
  ['track: 40 KB event', { path: '/v1/track', body: json(ev({ properties: { a: 'x'.repeat(8000), b: 'x'.repeat(8000), c: 'x'.repeat(8000), d: 'x'.repeat(8000), e: 'x'.repeat(8000) } })) }, ok(0, [0, 'event_too_large'])],
  ['track: invalid utf-8', { path: '/v1/track', body: bytes('{"name": "', [0xff, 0xfe], '"}') }, err(400, 'invalid_utf8')],
  ['track: sent_at a number', { path: '/v1/track', body: json({ ...ev(), sent_at: 1733040000 }) }, err(400, 'invalid_sent_at')],
  ['track: sent_at twice', { path: '/v1/track', body: evText().replace(/}$/, ', "sent_at": null, "sent_at": null}') }, err(400, 'malformed_json')],
  ['track: empty object', { path: '/v1/track', body: '{}' }, ok(0, [0, 'missing_id', 'id'])],
  ['track: a batch body', { path: '/v1/track', body: oneEvent() }, ok(0, [0, 'missing_id', 'id'])],
  ['track: wrong type', { path: '/v1/track', body: json(ev({ type: 'admin' })) }, ok(0, [0, 'invalid_type', 'type'])],
  ['track: __proto__ keys', { path: '/v1/track', body: evText().replace(/}$/, ', "__proto__": {"admin": true}, "properties": {"__proto__": {"p": 1}}}') }, ok(1)],
  ['track: form encoded', { path: '/v1/track', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: 'name=x' }, err(415, 'unsupported_media_type')],
  ['track: gzip bomb', { path: '/v1/track', headers: { 'content-encoding': 'gzip' }, body: gzipSync(Buffer.alloc(50 * MB, 0x20), { level: 9 }) }, err(413, 'payload_too_large')],
  ['track: gzip claimed, plain body', { path: '/v1/track', headers: { 'content-encoding': 'gzip' }, body: evText() }, err(400, 'invalid_encoding')],
  ['track: no key', { path: '/v1/track', query: '', body: evText() }, err(401, 'missing_key')],
  ['track: sql in key', { path: '/v1/track', query: "key=wk_valid'--", body: evText() }, err(401, 'invalid_key')],
  ['track: GET', { method: 'GET', path: '/v1/track' }, err(405, 'method_not_allowed')],
  ['track: trailing slash', { path: '/v1/track/', body: evText() }, err(404, 'not_found')],
  // --- the pixel's wrong methods (its GETs are in PIXEL_CASES: they always answer a GIF) ---
  ['pixel: POST', { path: '/v1/p.gif', body: evText() }, err(405, 'method_not_allowed')],
  ['pixel: HEAD', { method: 'HEAD', path: '/v1/p.gif' }, { status: 405 }],
];

// GET /v1/p.gif: [name, query string, headers, expected x-nexus-outcome]. Whatever the query, the
// answer is the 200 GIF with no-store; only an `accepted` view reaches the origin.
const PIXEL_CASES = [
  ['no parameters', '', {}, 'missing_key'],
  ['empty key', 'k=&u=https%3A%2F%2Fshop.example%2F', {}, 'missing_key'],
  ['unknown key', 'k=wk_nope', {}, 'invalid_key'],
  ['revoked key', 'k=wk_revoked', {}, 'revoked_key'],
  ['10 KB key', 'k=' + 'k'.repeat(10_000), {}, 'invalid_key'],
  ['NUL in key', 'k=wk%00valid', {}, 'invalid_key'],
  ['sql in key', "k=wk_valid'%20OR%20'1'='1", {}, 'invalid_key'],
  ['key twice', 'k=wk_valid&k=wk_evil', {}, 'accepted'],
  ['9 KB url', 'k=wk_valid&u=https%3A%2F%2Fx%2F' + 'a'.repeat(9000), {}, 'invalid_context'],
  ['9 KB title', 'k=wk_valid&t=' + 't'.repeat(9000), {}, 'invalid_context'],
  ['bad percent escapes', 'k=wk_valid&u=%ZZ%&t=%E0%A4', {}, 'accepted'],
  ['invalid utf-8 escapes', 'k=wk_valid&t=%FF%FE&r=%C0%AF', {}, 'accepted'],
  ['javascript: url', 'k=wk_valid&u=javascript%3Aalert(1)&r=data%3Atext%2Fhtml%2C%3Cscript%3E', {}, 'accepted'],
  ['__proto__ parameters', 'k=wk_valid&__proto__=1&constructor[prototype]=2&t=__proto__', {}, 'accepted'],
  ['800 junk parameters', 'k=wk_valid&' + Array.from({ length: 800 }, (_, i) => `p${i}=%%`).join('&'), {}, 'accepted'],
  ['fragment only', '#k=wk_valid', {}, 'missing_key'],
  ['refused origin', 'k=wk_valid', { origin: 'https://evil.example' }, 'origin_not_allowed'],
  ['bot user agent', 'k=wk_valid', { 'user-agent': 'curl/8.5.0' }, 'accepted'],
  ['no user agent', 'k=wk_valid', { 'user-agent': null }, 'accepted'],
  ['16 KB user agent', 'k=wk_valid', { 'user-agent': 'Mozilla/5.0 ' + 'u'.repeat(16 * 1024) }, 'accepted'],
];
const GIF = Buffer.from('R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAICRAEAOw==', 'base64');

let origin;
let mf;

before(async () => {
  origin = await startOrigin(SECRET);
  // Shaped like a deployment: every binding present (limits high enough not to trip here).
  mf = worker(
    { ORIGIN_URL: origin.url, ORIGIN_SECRET: SECRET, EVENTS_PER_MINUTE: '1000000' },
    {
      durableObjects: {
        SALTS: { className: 'SaltStore', useSQLite: true },
        QUOTAS: { className: 'ProjectQuota', useSQLite: true },
      },
      ratelimits: { RL_IP: { simple: { limit: 100000, period: 60 } }, RL_KEY: { simple: { limit: 100000, period: 60 } } },
    },
  );
  await mf.ready;
});

after(async () => {
  await mf?.dispose();
  await origin?.close();
});

async function send({ method = 'POST', path = '/v1/batch', query = 'key=wk_valid', headers = {}, body, duplex }) {
  const merged = { 'content-type': 'application/json', 'user-agent': CHROME, ...headers };
  for (const [k, v] of Object.entries(merged)) if (v === null) delete merged[k];
  return call(mf, method, query ? `${path}?${query}` : path, { headers: merged, body, duplex });
}

describe('hostile corpus', () => {
  test(`has at least 50 cases (${CASES.length})`, () => {
    assert.ok(CASES.length >= 50);
    assert.equal(new Set(CASES.map(([name]) => name)).size, CASES.length, 'case names are unique');
  });

  for (const [name, request, expected] of CASES) {
    test(name, async () => {
      origin.reset();
      const res = await send(request);
      if (process.env.EDGE_TEST_DEBUG) console.log(name, res.status, res.text.slice(0, 200));
      assert.notEqual(res.status, 500, `${name}: ${res.text.slice(0, 300)}`);
      assert.equal(res.status, expected.status, `${name}: ${res.text.slice(0, 300)}`);
      if (request.method === 'HEAD') return assert.equal(origin.ingests.length, 0);
      assert.ok(res.json !== undefined, `${name}: not a JSON answer: ${res.text.slice(0, 200)}`);
      if (expected.code) {
        assert.equal(res.json.error?.code, expected.code, `${name}: ${res.text.slice(0, 300)}`);
        assert.equal(typeof res.json.error.message, 'string');
        assert.equal(origin.ingests.length, 0, `${name}: a refused request reached the origin`);
      } else {
        const rejected = expected.rejected.map(([index, code, field]) => (field ? { index, code, field } : { index, code }));
        assert.deepEqual(res.json, { accepted: expected.accepted, rejected }, name);
        const forwarded = origin.ingests.flatMap((i) => i.body.events).length;
        assert.equal(forwarded, expected.accepted, `${name}: forwarded events`);
      }
    });
  }

  test(`pixel corpus has ${PIXEL_CASES.length} cases`, () => {
    assert.equal(new Set(PIXEL_CASES.map(([name]) => name)).size, PIXEL_CASES.length, 'case names are unique');
  });

  for (const [name, query, headers, outcome] of PIXEL_CASES) {
    test(`pixel: ${name}`, async () => {
      origin.reset();
      const merged = { 'user-agent': CHROME, ...headers };
      for (const [k, v] of Object.entries(merged)) if (v === null) delete merged[k];
      const res = await mf.dispatchFetch(`http://edge.test/v1/p.gif${query ? '?' + query : ''}`, { headers: merged });
      const bytes = Buffer.from(await res.arrayBuffer());
      if (process.env.EDGE_TEST_DEBUG) console.log(name, res.status, res.headers.get('x-nexus-outcome'));
      assert.equal(res.status, 200, name);
      assert.equal(res.headers.get('content-type'), 'image/gif', name);
      assert.equal(res.headers.get('cache-control'), 'no-store', name);
      assert.deepEqual(bytes, GIF, name);
      assert.equal(res.headers.get('x-nexus-outcome'), outcome, name);
      const forwarded = origin.ingests.flatMap((i) => i.body.events);
      assert.equal(forwarded.length, outcome === 'accepted' ? 1 : 0, `${name}: forwarded events`);
      if (outcome === 'accepted') assert.equal(forwarded[0].event.type, 'page');
    });
  }

  test('the worker is still alive and the origin saw only valid events', async () => {
    const res = await call(mf, 'GET', '/health');
    assert.equal(res.status, 200);
    assert.equal(origin.badSignatures, 0);
  });

  test('a 10 MB stream is cut off at the cap', async () => {
    // The worker answers 413 as soon as the cap is passed and stops reading; the client may see
    // its upload cut (undici: "fetch failed") before it reads the answer. Either way the worker
    // read at most the cap and is still alive.
    origin.reset();
    try {
      const res = await send({ body: streamOf(10 * MB), duplex: 'half' });
      assert.equal(res.status, 413, res.text);
      assert.equal(res.json.error.code, 'payload_too_large');
    } catch (e) {
      assert.equal(e.message, 'fetch failed');
    }
    assert.equal((await call(mf, 'GET', '/health')).status, 200);
    assert.equal(origin.ingests.length, 0);
  });

  test('a refused junk key never reaches the origin', async () => {
    origin.reset();
    await send({ query: 'key=' + 'k'.repeat(10_000), body: oneEvent() });
    await send({ query: 'key=wk%00valid', body: oneEvent() });
    assert.equal(origin.lookups.length, 0);
  });

  test('prototype keys are forwarded as plain data', async () => {
    origin.reset();
    const res = await send({ body: rawEvent('"__proto__": {"admin": true}, "properties": {"__proto__": {"p": 1}}') });
    assert.equal(res.status, 200, res.text);
    const raw = origin.ingests[0].raw.toString('utf8');
    assert.match(raw, /"__proto__":\{"admin":true\}/);
    assert.match(raw, /"properties":\{"__proto__":\{"p":1\}\}/);
  });

  test('forwarded events carry a visitor hash from the salt object', async () => {
    origin.reset();
    const res = await send({ body: oneEvent() });
    assert.equal(res.status, 200, res.text);
    assert.match(origin.ingests[0].body.events[0].visitor_hash, /^[0-9a-f]{32}$/);
  });
});
