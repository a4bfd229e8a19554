// Autocapture in headless Chromium: outbound link clicks (sent at once as beacons, the
// navigation untouched, target=_blank included) and Web Vitals (LCP, CLS, INP).
// Needs the built package (`cargo xtask build-sdk`); run with `node --test npm/test/*.test.mjs`.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { launchBrowser, sleep, startServers, waitFor } from './harness.mjs';

let browser;
before(async () => {
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
});

/** A page importing the package, turning `capture` on before init (with `options`), then `body`. */
function page(capture, options, body) {
  return `<!doctype html><html><head><meta charset="utf-8"><title>capture</title></head><body>${body}
<script type="module">
import * as nexus from '/dist/index.js';
window.nexus = nexus;
nexus.${capture}();
window.nexusReady = nexus.init(${JSON.stringify({ key: 'wk_test', endpoint: 'COLLECTOR', ...options })});
</script></body></html>`;
}

describe('autocapture', () => {
  test('outbound link clicks are sent at once, and every navigation goes ahead', async () => {
    const links = `
      <a id="internal" href="#section">same page</a>
      <a id="blank" target="_blank" href="COLLECTOR/landing-blank">new tab</a>
      <a id="out" href="COLLECTOR/landing"><span id="inner">away</span></a>`;
    const servers = await startServers({
      pages: { '/links': page('captureOutboundLinks', { flushAt: 100, flushIntervalMs: 600_000 }, links) },
    });
    const context = await browser.newContext();
    try {
      const tab = await context.newPage();
      const errors = [];
      tab.on('pageerror', (e) => errors.push(e.message));
      await tab.goto(`${servers.siteOrigin}/links`);
      await tab.evaluate(() => window.nexusReady);

      await tab.click('#internal'); // same host: nothing recorded
      const [popup] = await Promise.all([context.waitForEvent('page'), tab.click('#blank')]);
      await popup.waitForURL(`${servers.collectorOrigin}/landing-blank`, { waitUntil: 'commit' });
      await waitFor(() => servers.accepted().length >= 1, 5000, 'the _blank click');
      assert.equal(tab.url(), `${servers.siteOrigin}/links#section`, 'target=_blank: this page stays');

      // A click on an element inside the link; the page navigates away at once.
      const clickedAt = Date.now();
      await Promise.all([tab.waitForURL(`${servers.collectorOrigin}/landing`, { waitUntil: 'commit' }), tab.click('#inner')]);
      const navigated = Date.now() - clickedAt;
      await waitFor(() => servers.accepted().length >= 2, 5000, 'the outbound click');
      await sleep(300); // a duplicate (the pagehide beacon too) would arrive meanwhile

      const events = servers.accepted();
      assert.deepEqual(
        events.map((e) => [e.name, e.properties]),
        [
          ['$outbound_click', { url: `${servers.collectorOrigin}/landing-blank`, target: '_blank' }],
          ['$outbound_click', { url: `${servers.collectorOrigin}/landing` }],
        ],
      );
      // Sent at the click, as beacons (`no-cors`), each in its own request.
      assert.deepEqual(servers.requests.map((r) => [r.mode, r.ids.length]), [['no-cors', 1], ['no-cors', 1]]);
      assert.ok(navigated < 2000, `the navigation was not held up (${navigated} ms)`);
      assert.deepEqual(errors, []);
    } finally {
      await context.close();
      await servers.close();
    }
  });

  test('Web Vitals (LCP, CLS, INP) are sent once when the page is left', async () => {
    const body = `
      <h1 style="font-size:64px">The largest paint of this page</h1>
      <div id="content"><p>Text that moves down when the banner appears.</p></div>
      <button id="slow" style="margin-top:40px">slow</button>
      <script>
        // A layout shift without input: a banner pushed in above the content.
        setTimeout(() => {
          const banner = document.createElement('div');
          banner.style.height = '200px';
          banner.textContent = 'banner';
          document.getElementById('content').before(banner);
        }, 150);
        // A slow interaction: the click handler blocks the main thread for 150 ms.
        document.getElementById('slow').addEventListener('click', () => {
          const end = performance.now() + 150;
          while (performance.now() < end);
        });
      </script>`;
    const servers = await startServers({
      pages: {
        '/vitals': page('captureWebVitals', { flushAt: 100, flushIntervalMs: 600_000 }, body),
        '/away': '<!doctype html><title>away</title>',
      },
    });
    const context = await browser.newContext();
    try {
      const tab = await context.newPage();
      const errors = [];
      tab.on('pageerror', (e) => errors.push(e.message));
      await tab.goto(`${servers.siteOrigin}/vitals`);
      await tab.evaluate(() => window.nexusReady);
      await sleep(700); // the shift happened, and is older than any input
      await tab.click('#slow');
      await sleep(300);
      await tab.goto(`${servers.siteOrigin}/away`);
      await waitFor(() => servers.accepted().length >= 1, 5000, 'the vitals');
      await sleep(300);

      const events = servers.accepted();
      assert.deepEqual(events.map((e) => e.name), ['$web_vitals'], 'once');
      const { lcp, cls, inp } = events[0].properties;
      assert.ok(lcp > 0 && lcp < 10_000, `lcp ${lcp}`);
      assert.ok(cls > 0 && cls < 1, `cls ${cls}`);
      assert.ok(inp >= 140, `inp ${inp} covers the 150 ms handler`);
      assert.deepEqual(errors, []);
    } finally {
      await context.close();
      await servers.close();
    }
  });
});
