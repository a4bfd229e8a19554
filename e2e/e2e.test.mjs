// End to end: headless Chromium opens a page that uses the npm package, tracks three events and
// navigates away; the events go through the Rust worker running in workerd (miniflare) to the
// origin (embedded PostgreSQL) and must be rows, each exactly once, with the country from the
// test's `cf` and a skew-corrected timestamp; the origin's read endpoint must count them.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, existsSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Miniflare } from 'miniflare';
import { chromium } from 'playwright-core';
import { serveStatic } from './static-server.mjs';

const ROOT = new URL('..', import.meta.url).pathname;
const ORIGIN_BIN = process.env.NEXUS_ORIGIN_BIN ?? join(ROOT, 'target/debug/nexus-origin');
const WORKER_DIR = join(ROOT, 'edge-worker/build');
const SECRET = 'e2e-edge-secret';
const CHROME_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];

let dataDir, origin, originUrl, keys, mf, edgeUrl, web, webUrl, browser;

const freePort = () => new Promise((ok) => {
  const s = createServer().listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => ok(p)); });
});

async function waitFor(what, fn, timeoutMs = 30000) {
  const deadline = Date.now() + timeoutMs;
  let last;
  while (Date.now() < deadline) {
    try { last = await fn(); if (last) return last; } catch (e) { last = e; }
    await new Promise((r) => setTimeout(r, 150));
  }
  throw new Error(`timed out waiting for ${what} (last: ${last})`);
}

function sql(query) {
  const out = execFileSync('psql', ['-h', join(dataDir, 'run'), '-p', '5432', '-U', 'postgres', '-d', 'nexus',
    '-At', '-F', '|', '-c', query], { encoding: 'utf8' });
  return out.trim() === '' ? [] : out.trim().split('\n').map((l) => l.split('|'));
}

function findWorkerScript() {
  for (const p of ['index.js', 'worker/shim.mjs', 'index.mjs']) {
    if (existsSync(join(WORKER_DIR, p))) return join(WORKER_DIR, p);
  }
  throw new Error(`no built worker in ${WORKER_DIR}: run cargo xtask build-edge`);
}

before(async () => {
  dataDir = mkdtempSync(join(tmpdir(), 'nexus-e2e-'));
  const originPort = await freePort();
  originUrl = `http://127.0.0.1:${originPort}`;
  origin = spawn(ORIGIN_BIN, ['serve', '--demo', '--unsafe-no-fsync', '--data-dir', dataDir,
    '--listen', `127.0.0.1:${originPort}`, '--edge-secret', SECRET], { stdio: ['ignore', 'ignore', 'inherit'],
    env: Object.fromEntries(Object.entries(process.env).filter(([k]) => k !== 'DATABASE_URL')) });
  await waitFor('origin /ready', async () => (await fetch(`${originUrl}/ready`)).ok, 60000);
  keys = JSON.parse(readFileSync(join(dataDir, 'demo-keys.json'), 'utf8'));

  const edgePort = await freePort();
  mf = new Miniflare({
    scriptPath: findWorkerScript(),
    modules: true,
    modulesRules: [{ type: 'CompiledWasm', include: ['**/*.wasm'] }],
    compatibilityDate: '2025-01-01',
    bindings: { ORIGIN_URL: originUrl, ORIGIN_SECRET: SECRET, VISITOR_SALT: 'e2e-salt', PATH_PREFIX: '' },
    // Every request the browser makes gets this `cf` object, as Cloudflare would attach it.
    cf: { country: 'DE', city: 'Berlin', continent: 'EU', timezone: 'Europe/Berlin', colo: 'FRA', asn: 3320 },
    host: '127.0.0.1',
    port: edgePort,
  });
  edgeUrl = (await mf.ready).toString().replace(/\/$/, '');

  web = await serveStatic(ROOT, 0);
  webUrl = `http://127.0.0.1:${web.address().port}`;
  browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: CHROME_ARGS });
});

after(async () => {
  await browser?.close();
  await mf?.dispose();
  web?.close();
  if (origin && origin.exitCode === null) {
    const exited = new Promise((ok) => origin.once('exit', ok));
    origin.kill('SIGTERM');
    await exited;
  }
  if (dataDir) rmSync(dataDir, { recursive: true, force: true });
});

test('three events from a real page become three rows, once each, geo-tagged and skew-corrected', async () => {
  const page = await browser.newPage();
  // The device clock is an hour slow: the stored timestamp must be corrected by the edge.
  const skewMs = 3600 * 1000;
  await page.clock.install({ time: new Date(Date.now() - skewMs) });
  await page.clock.resume();
  await page.goto(`${webUrl}/e2e/page.html?endpoint=${encodeURIComponent(edgeUrl)}&key=${keys.write_key}`);
  await page.waitForFunction(() => window.nexusLoaded === true);
  await page.evaluate(() => {
    window.nexus.track('signup_clicked', { plan: 'pro', price: 49 });
    window.nexus.track('added_to_cart', { sku: 'A-1' });
    window.nexus.page();
  });
  // Navigating away fires pagehide: the SDK sends what it holds with sendBeacon.
  await page.click('#away');
  await page.waitForURL('**/away.html');

  const rows = await waitFor('3 rows in postgres', () => {
    const r = sql(`SELECT event_id, name, country,
        extract(epoch FROM ("timestamp" - client_timestamp))::int,
        abs(extract(epoch FROM ("timestamp" - received_at)))::int
      FROM events WHERE project_id = ${keys.project_id} ORDER BY name`);
    return r.length >= 3 ? r : null;
  });
  // Give any duplicate delivery time to arrive before asserting "exactly once".
  await new Promise((r) => setTimeout(r, 1000));
  const all = sql(`SELECT count(*), count(DISTINCT event_id) FROM events WHERE project_id = ${keys.project_id}`);
  assert.deepEqual(all, [['3', '3']], 'exactly three rows, three distinct ids');
  assert.deepEqual(rows.map((r) => r[1]), ['$pageview', 'added_to_cart', 'signup_clicked']);
  for (const [id, name, country, shift, offset] of rows) {
    assert.match(id, /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/, `uuid v7 for ${name}`);
    assert.equal(country, 'DE', `country of ${name}`);
    assert.ok(Math.abs(Number(shift) - 3600) < 120, `${name} shifted by ~1 h, got ${shift} s`);
    assert.ok(Number(offset) < 120, `${name} corrected to about received_at, off by ${offset} s`);
  }
  const props = sql(`SELECT properties->>'plan', path FROM events WHERE name = 'signup_clicked'`);
  assert.deepEqual(props, [['pro', '/e2e/page.html']]);
  const noIp = sql(`SELECT count(*) FROM events WHERE geo::text LIKE '%127.0.0.1%' OR context::text LIKE '%127.0.0.1%'`);
  assert.deepEqual(noIp, [['0']], 'no raw ip stored');

  const today = new Date().toISOString().slice(0, 10);
  const res = await fetch(`${originUrl}/v1/stats/events-per-day?from=${today}&to=${today}&include_bots=true`,
    { headers: { authorization: `Bearer ${keys.read_key}` } });
  assert.equal(res.status, 200);
  const body = await res.json();
  assert.equal(body.days.reduce((n, d) => n + d.events, 0), 3, JSON.stringify(body));
  await page.close();
});
