// A stand-in for origin-api: verifies the edge's HMAC signature exactly as the protocol says
// (hex HMAC-SHA256 over `${timestamp}.` + body, header `v1=<hex>`), resolves a few known keys and
// records every ForwardBatch it is sent.

import { createServer } from 'node:http';
import { createHmac, timingSafeEqual } from 'node:crypto';

export const KEYS = {
  wk_valid: { project_id: 42, revoked: false, allowed_origins: ['https://shop.example'] },
  wk_open: { project_id: 43, revoked: false, allowed_origins: [] },
  wk_cached: { project_id: 44, revoked: false, allowed_origins: [] },
  wk_revoked: { project_id: 45, revoked: true, allowed_origins: ['https://shop.example'] },
  // A project with its own quota (the lookup's optional events_per_minute).
  wk_quota: { project_id: 46, revoked: false, allowed_origins: [], events_per_minute: 1500 },
  wk_limits: { project_id: 47, revoked: false, allowed_origins: ['https://shop.example'] },
  wk_spare: { project_id: 48, revoked: false, allowed_origins: [] },
};

/** Events with this name are refused by the fake origin (to test index remapping). */
export const ORIGIN_REJECTS = 'origin_rejects_me';

export function sign(secret, ts, body) {
  return 'v1=' + createHmac('sha256', secret).update(`${ts}.`).update(body).digest('hex');
}

function verify(secret, headers, body) {
  const ts = headers['x-nexus-timestamp'];
  const sig = headers['x-nexus-signature'];
  if (!ts || !sig || !/^\d+$/.test(ts)) return false;
  if (Math.abs(Date.now() / 1000 - Number(ts)) > 300) return false;
  const expected = Buffer.from(sign(secret, ts, body));
  const got = Buffer.from(sig);
  return expected.length === got.length && timingSafeEqual(expected, got);
}

function send(res, status, json, headers = {}) {
  res.writeHead(status, { 'content-type': 'application/json', ...headers });
  res.end(JSON.stringify(json));
}

/** Starts the fake origin on 127.0.0.1 (random port). */
export async function startOrigin(secret) {
  const state = {
    url: '',
    ingests: [], // { headers, raw: Buffer, body: ForwardBatch }
    lookups: [], // { headers, raw: Buffer, body: KeyLookupRequest }
    badSignatures: 0,
    failNext: null, // { status, body, headers } answered to the next ingest
    respond: null, // (ForwardBatch) => { status, body, headers } | null: answers ingests while set
    reset() {
      this.respond = null;
      this.ingests = [];
      this.lookups = [];
      this.badSignatures = 0;
      this.failNext = null;
    },
  };
  const server = createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const raw = Buffer.concat(chunks);
      if (req.method !== 'POST') return send(res, 405, { error: { code: 'method_not_allowed', message: '' } });
      if (!verify(secret, req.headers, raw)) {
        state.badSignatures++;
        return send(res, 401, { error: { code: 'invalid_signature', message: 'signature does not match' } });
      }
      const body = JSON.parse(raw.toString('utf8'));
      if (req.url === '/internal/v1/keys/lookup') {
        state.lookups.push({ headers: req.headers, raw, body });
        const key = KEYS[body.write_key];
        return key ? send(res, 200, key) : send(res, 404, { error: { code: 'invalid_key', message: 'unknown key' } });
      }
      if (req.url === '/internal/v1/ingest') {
        state.ingests.push({ headers: req.headers, raw, body });
        if (state.failNext) {
          const { status, body: json, headers } = state.failNext;
          state.failNext = null;
          return send(res, status, json, headers);
        }
        const custom = state.respond?.(body);
        if (custom) return send(res, custom.status, custom.body, custom.headers);
        const rejected = [];
        body.events.forEach((e, index) => {
          if (e.event.name === ORIGIN_REJECTS) rejected.push({ index, code: 'invalid_field', field: 'properties' });
        });
        return send(res, 200, { accepted: body.events.length - rejected.length, rejected });
      }
      send(res, 404, { error: { code: 'not_found', message: '' } });
    });
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  state.url = `http://127.0.0.1:${server.address().port}`;
  state.close = () => new Promise((resolve) => server.close(resolve));
  return state;
}
