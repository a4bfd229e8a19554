// Packaging: the package as published (`npm pack`: only the files package.json lists) installed
// by path into a throw-away app works from a Vite build and from a plain <script type="module">
// in headless Chromium, and its TypeScript types pass `tsc` (with misuses that must not).
// Needs the built package (`cargo xtask build-sdk`) and npm/'s devDependencies (vite,
// typescript: `npm ci` in npm/); run with `node --test npm/test/*.test.mjs`.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import { isUuidV7, launchBrowser, startServers, waitFor } from './harness.mjs';

const PACKAGE_DIR = fileURLToPath(new URL('..', import.meta.url));
const bin = (name) => join(PACKAGE_DIR, 'node_modules/.bin', name);
/** Runs a command, failing with its output (not just its status) when it fails. */
function run(command, args, cwd) {
  try {
    return execFileSync(command, args, { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (error) {
    throw new Error(`${command} ${args.join(' ')} failed:\n${error.stdout}\n${error.stderr}`);
  }
}

/** What both pages do: the calls the issue names, then a flag the test waits for. */
const APP = (from) => `import { flush, identify, init, page, track } from '${from}';
const endpoint = new URLSearchParams(location.search).get('collector');
init({ key: 'wk_pkg', endpoint }).then(() => {
  page();
  track('packaged', { via: document.title });
  identify('user-pkg');
  return flush();
}).then(() => { window.done = true; }, (e) => { window.done = String(e); });
`;

let browser;
let dir;
let app;
before(async () => {
  browser = await launchBrowser();
  dir = mkdtempSync(join(tmpdir(), 'nexus-pkg-'));
  app = join(dir, 'app');
  mkdirSync(app);
  const [packed] = JSON.parse(run('npm', ['pack', '--json', '--pack-destination', dir], PACKAGE_DIR));
  writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'pkg-app', private: true, type: 'module' }));
  run('npm', ['install', '--offline', '--no-audit', '--no-fund', '--no-package-lock', join(dir, packed.filename)], app);
  writeFileSync(join(app, 'index.html'), '<!doctype html><title>vite</title><script type="module" src="/main.js"></script>');
  writeFileSync(join(app, 'main.js'), APP('@nexus-analytics/browser'));
  // The page the browser loads as it is: the package's entry point by URL, no bundler.
  writeFileSync(
    join(app, 'plain.html'),
    `<!doctype html><title>plain</title><script type="module">${APP('./node_modules/@nexus-analytics/browser/dist/index.js')}</script>`,
  );
});
after(async () => {
  await browser?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** Loads `path` of the app folder against a fresh collector; returns the events it accepted. */
async function events(path) {
  const servers = await startServers({ root: app });
  const context = await browser.newContext();
  try {
    const page = await context.newPage();
    const errors = [];
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto(`${servers.siteOrigin}${path}?collector=${encodeURIComponent(servers.collectorOrigin)}`);
    await page.waitForFunction(() => window.done !== undefined, null, { timeout: 10_000 });
    assert.equal(await page.evaluate(() => window.done), true);
    await waitFor(() => servers.accepted().length >= 3, 5000, 'the three events');
    assert.deepEqual(errors, []);
    assert.ok(servers.requests.every((r) => r.key === 'wk_pkg'));
    return servers.accepted();
  } finally {
    await context.close();
    await servers.close();
  }
}

/** The test app's three calls arrived in order, with SDK-made ids; `via` names the page. */
function assertAppEvents(got, via) {
  assert.deepEqual(
    got.map((e) => [e.type, e.name ?? null, e.properties?.via ?? null]),
    [
      ['page', null, null],
      ['track', 'packaged', via],
      ['identify', null, null],
    ],
  );
  assert.ok(got.every((e) => isUuidV7(e.id)));
}

describe('packaging', () => {
  test('the TypeScript types check with tsc, and refuse misuse', () => {
    run(bin('tsc'), ['-p', 'test/types/tsconfig.json'], PACKAGE_DIR);
  });

  test('from a Vite app: built with vite build, the collector gets its events', async () => {
    run(bin('vite'), ['build', '--base', './', '--logLevel', 'warn'], app);
    assertAppEvents(await events('/dist/index.html'), 'vite');
  });

  test('from a plain <script type="module">: the collector gets its events', async () => {
    assertAppEvents(await events('/plain.html'), 'plain');
  });
});
