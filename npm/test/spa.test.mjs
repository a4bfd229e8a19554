// Single-page apps (`init({ spa: true })`) in headless Chromium: one page view per route, the
// previous route as its referrer, and never two for one navigation.
// Needs the built package (`cargo xtask build-sdk`); run with `node --test npm/test/*.test.mjs`.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { launchBrowser, startServers, testPage, waitFor } from './harness.mjs';

let browser;
before(async () => {
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
});

for (const entry of ['/dist/index.js', '/src/index.js']) {
  test(`SPA navigation gives exactly one page view per route, with the previous route as referrer (${entry})`, async () => {
    const servers = await startServers({
      pages: { '/app/home': testPage({ flushAt: 100, flushIntervalMs: 60_000, spa: true }, 'nexus.page();', entry) },
    });
    try {
      const context = await browser.newContext();
      const page = await context.newPage();
      const errors = [];
      page.on('pageerror', (e) => errors.push(e.message));
      await page.goto(`${servers.siteOrigin}/app/home`);
      await page.evaluate(() => window.nexusReady);
      await page.evaluate(async () => {
        await window.nexus.init({ key: 'wk_test', endpoint: 'http://127.0.0.1:9', spa: true }); // no second patch
        history.pushState({}, '', '/app/products?x=1'); // a route: one page view
        history.replaceState({ step: 1 }, '', '/app/products?x=1'); // same URL: none
        history.pushState({}, '', '/app/products?x=1#details'); // fragment only: none
        history.pushState({}, '', '/app/cart#top'); // a route
        window.nexus.track('in_cart');
      });
      // Back to the products entry: a `popstate`, and a page view with the cart as referrer.
      await page.evaluate(
        () =>
          new Promise((resolve) => {
            addEventListener('popstate', () => resolve(), { once: true });
            history.back();
          }),
      );
      await page.evaluate(() => window.nexus.flush());
      await waitFor(() => servers.accepted().length >= 5, 5000, 'the 5 events');

      const origin = servers.siteOrigin;
      const events = servers.accepted();
      assert.deepEqual(
        events.map((e) => [e.type, e.name ?? null, e.context.path, e.context.referrer ?? null]),
        [
          ['page', null, '/app/home', null], // the page's own view: document.referrer (none here)
          ['page', null, '/app/products', `${origin}/app/home`],
          ['page', null, '/app/cart', `${origin}/app/products?x=1`],
          ['track', 'in_cart', '/app/cart', null], // other events keep document.referrer
          ['page', null, '/app/products', `${origin}/app/cart`],
        ],
      );
      assert.equal(new Set(events.map((e) => e.id)).size, 5);
      assert.deepEqual(errors, []);
      await context.close();
    } finally {
      await servers.close();
    }
  });
}
