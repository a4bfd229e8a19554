// The edge benchmark (`cargo xtask bench-edge`, or `node edge-worker/bench/bench.mjs` after
// `cargo xtask build-edge`). Everything runs on 127.0.0.1 in one process tree:
//
// 1. throughput: 20-event batches over keep-alive connections at a fixed concurrency for a fixed
//    time, through `wrangler dev` (workerd) for the built Rust worker (wrangler.bench.toml: the
//    shipped bindings, limits raised) and for a pass-through JavaScript worker (the floor:
//    read the body, forward it, pass the answer back); requests/s, latency, and their ratio;
// 2. queue delivery: the Rust worker with DELIVERY_MODE=queue at a steady request rate; per
//    event, the time from the sender's 200 to its arrival at the origin (p50, p95);
// 3. size: the built wasm and the bundle (wasm + JS glue), raw and gzip -9.
//
// The origin is a stand-in in this process that answers at once (it does not check signatures:
// the floor sends none, and the origin's cost is not what is measured).

import http from 'node:http';
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { gzipSync, constants as zlib } from 'node:zlib';

const BENCH = fileURLToPath(new URL('.', import.meta.url));
const EDGE = join(BENCH, '..');
const WRANGLER = join(EDGE, '..', 'node_modules', '.bin', 'wrangler');
const SECRET = 'bench-origin-secret';
const KEY = 'wk_bench';
const EVENTS = 20;
const UA = 'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36';

const { values: opts } = parseArgs({
  options: {
    seconds: { type: 'string', default: '12' },
    warmup: { type: 'string', default: '3' },
    concurrency: { type: 'string', default: '8' },
    rounds: { type: 'string', default: '4' },
    'queue-rate': { type: 'string', default: '20' },
    'queue-seconds': { type: 'string', default: '10' },
    'skip-queue': { type: 'boolean', default: false },
    // Experiments: `--edge-var EVENTS_PER_MINUTE:` (no quota object call), repeatable.
    'edge-var': { type: 'string', multiple: true, default: [] },
    // Experiments: another wrangler config for the Rust worker (relative to edge-worker/bench/).
    'edge-config': { type: 'string', default: 'wrangler.bench.toml' },
  },
});
const SECONDS = Number(opts.seconds);
const WARMUP = Number(opts.warmup);
const CONCURRENCY = Number(opts.concurrency);
const ROUNDS = Math.max(1, Number(opts.rounds));
const QUEUE_RATE = Number(opts['queue-rate']);
const QUEUE_SECONDS = Number(opts['queue-seconds']);

// --- the batch ------------------------------------------------------------------------------

const PAGES = ['/', '/pricing', '/docs/getting-started', '/blog/edge-analytics', '/signup'];

/** A realistic 20-event batch (page views and tracks with properties and context), fresh ids. */
function batch() {
  const anon = randomUUID();
  const session = randomUUID();
  const now = Date.now();
  const events = Array.from({ length: EVENTS }, (_, i) => {
    const path = PAGES[i % PAGES.length];
    const page = i % 3 === 0;
    return {
      id: randomUUID(),
      type: page ? 'page' : 'track',
      ...(page ? {} : { name: i % 2 ? 'button_clicked' : 'plan_selected' }),
      anonymous_id: anon,
      session_id: session,
      timestamp: new Date(now - (EVENTS - i) * 1000).toISOString(),
      properties: page ? {} : { plan: 'pro', price: 49, position: i, experiment: { id: 'exp-12', arm: 'b' } },
      context: {
        url: `https://shop.example${path}?utm_source=newsletter&utm_medium=email`,
        path,
        title: 'Shop example - ' + path,
        referrer: 'https://www.google.com/',
        utm: { source: 'newsletter', medium: 'email', campaign: 'dec' },
        screen: { width: 1440, height: 900 },
        locale: 'de-DE',
        timezone: 'Europe/Berlin',
        library: { name: 'nexus-js', version: '0.1.0' },
      },
    };
  });
  return { ids: events.map((e) => e.id), body: JSON.stringify({ sent_at: new Date(now).toISOString(), batch: events }) };
}

// --- the stand-in origin ----------------------------------------------------------------------

/** Starts the origin; `arrivals` (event id -> performance.now()) is filled while `record` is on. */
async function startOrigin() {
  const state = { record: false, arrivals: new Map(), ingests: 0 };
  const accepted = JSON.stringify({ accepted: EVENTS, rejected: [] });
  const lookup = JSON.stringify({ project_id: 1, revoked: false, allowed_origins: [] });
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      res.setHeader('content-type', 'application/json');
      if (req.url === '/internal/v1/keys/lookup') return res.end(lookup);
      state.ingests++;
      if (!state.record) return res.end(accepted);
      const at = performance.now();
      const body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
      for (const e of body.events) if (!state.arrivals.has(e.event.id)) state.arrivals.set(e.event.id, at);
      res.end(JSON.stringify({ accepted: body.events.length, rejected: [] }));
    });
  });
  server.keepAliveTimeout = 60_000;
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  state.url = `http://127.0.0.1:${server.address().port}`;
  state.close = () => new Promise((r) => server.close(r));
  return state;
}

// --- wrangler dev -----------------------------------------------------------------------------

/** `wrangler dev` for `config` on `port`, in its own process group; resolves once it answers. */
async function startWrangler(name, config, port, vars) {
  const persist = mkdtempSync(join(tmpdir(), `nexus-bench-${name}-`));
  const args = ['dev', '--config', config, '--ip', '127.0.0.1', '--port', String(port)];
  args.push('--inspector-port', String(port + 1000), '--persist-to', persist, '--show-interactive-dev-session=false');
  for (const [k, v] of Object.entries(vars)) args.push('--var', `${k}:${v}`);
  const child = spawn(WRANGLER, args, {
    cwd: BENCH,
    detached: true,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, WRANGLER_SEND_METRICS: 'false', CLOUDFLARE_CF_FETCH_ENABLED: 'false', NO_COLOR: '1' },
  });
  let output = '';
  const keep = (d) => {
    output = (output + d).slice(-4000);
  };
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  const exited = new Promise((r) => child.on('exit', r));
  const stop = async () => {
    try {
      process.kill(-child.pid, 'SIGTERM');
    } catch {
      return;
    }
    const done = await Promise.race([exited.then(() => true), new Promise((r) => setTimeout(() => r(false), 10_000))]);
    if (!done) {
      try {
        process.kill(-child.pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    rmSync(persist, { recursive: true, force: true });
  };
  const deadline = Date.now() + 120_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`wrangler dev (${name}) exited:\n${output}`);
    try {
      const res = await fetch(`http://127.0.0.1:${port}/health`);
      await res.arrayBuffer();
      if (res.status < 500) return { stop, output: () => output };
    } catch {
      // not up yet
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  await stop();
  throw new Error(`wrangler dev (${name}) did not answer in 120 s:\n${output}`);
}

// --- load -------------------------------------------------------------------------------------

const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });

/** One POST; resolves to [status, body text]. */
function post(port, path, body) {
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        host: '127.0.0.1',
        port,
        path,
        method: 'POST',
        agent,
        headers: { 'content-type': 'text/plain;charset=UTF-8', 'content-length': Buffer.byteLength(body), 'user-agent': UA },
      },
      (res) => {
        const chunks = [];
        res.on('data', (c) => chunks.push(c));
        res.on('end', () => resolve([res.statusCode, Buffer.concat(chunks).toString('utf8')]));
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

/** `CONCURRENCY` closed loops of requests for `seconds`, added to `acc` (a fresh one if none). */
async function load(port, path, seconds, acc = { latencies: [], errors: {}, seconds: 0 }) {
  const { latencies, errors } = acc;
  const start = performance.now();
  const end = start + seconds * 1000;
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (performance.now() < end) {
        const { body } = batch();
        const t0 = performance.now();
        let outcome;
        try {
          const [status] = await post(port, path, body);
          if (status === 200) latencies.push(performance.now() - t0);
          else outcome = status;
        } catch (e) {
          outcome = e.code ?? 'error';
        }
        if (outcome !== undefined) errors[outcome] = (errors[outcome] ?? 0) + 1;
      }
    }),
  );
  acc.seconds += (performance.now() - start) / 1000;
  return acc;
}

/** Requests/s and latency percentiles of an accumulated load. */
function summary({ latencies, errors, seconds }) {
  latencies.sort((a, b) => a - b);
  const failed = Object.values(errors).reduce((a, b) => a + b, 0);
  const why = Object.entries(errors).map(([k, n]) => `${n}x ${k}`).join(', ');
  return { rps: latencies.length / seconds, p50: pct(latencies, 0.5), p95: pct(latencies, 0.95), errors: failed ? `${failed} (${why})` : '0' };
}

function pct(sorted, q) {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

/** Queue mode: a steady `QUEUE_RATE` requests/s for `QUEUE_SECONDS`; accepted -> arrival per event. */
async function queueLatency(origin, port) {
  origin.record = true;
  const accepted = new Map();
  let refused = 0;
  const sends = [];
  const start = performance.now();
  for (let i = 0; i < QUEUE_RATE * QUEUE_SECONDS; i++) {
    const due = start + (i * 1000) / QUEUE_RATE;
    const wait = due - performance.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    const { ids, body } = batch();
    sends.push(
      post(port, `/v1/batch?key=${KEY}`, body).then(
        ([status]) => {
          if (status !== 200) return refused++;
          const at = performance.now();
          for (const id of ids) accepted.set(id, at);
        },
        () => refused++,
      ),
    );
  }
  await Promise.all(sends);
  const deadline = performance.now() + 60_000;
  while (performance.now() < deadline && [...accepted.keys()].some((id) => !origin.arrivals.has(id))) {
    await new Promise((r) => setTimeout(r, 100));
  }
  const delays = [...accepted].filter(([id]) => origin.arrivals.has(id)).map(([id, at]) => Math.max(0, origin.arrivals.get(id) - at));
  delays.sort((a, b) => a - b);
  origin.record = false;
  return { events: accepted.size, arrived: delays.length, refused, p50: pct(delays, 0.5), p95: pct(delays, 0.95) };
}

// --- sizes ------------------------------------------------------------------------------------

function sizes() {
  const wasm = readFileSync(join(EDGE, 'build', 'index_bg.wasm'));
  const js = readFileSync(join(EDGE, 'build', 'index.js'));
  const gz = (b) => gzipSync(b, { level: zlib.Z_BEST_COMPRESSION }).length;
  return { wasm: wasm.length, wasmGz: gz(wasm), bundle: wasm.length + js.length, bundleGz: gz(wasm) + gz(js) };
}

// --- main -------------------------------------------------------------------------------------

const kib = (n) => (n / 1024).toFixed(1);
const ms = (n) => n.toFixed(2);

async function main() {
  const size = sizes();
  const origin = await startOrigin();
  const common = { ORIGIN_URL: origin.url };
  const edgeVars = { ...common, ORIGIN_SECRET: SECRET, DELIVERY_MODE: 'direct' };
  for (const kv of opts['edge-var']) {
    const at = kv.indexOf(':');
    edgeVars[kv.slice(0, at)] = kv.slice(at + 1);
  }
  const path = `/v1/batch?key=${KEY}`;

  console.error('starting wrangler dev: the Rust worker (:8791) and the pass-through floor (:8792)');
  const edge = await startWrangler('edge', opts['edge-config'], 8791, edgeVars);
  const floor = await startWrangler('floor', 'passthrough.toml', 8792, common);
  let rows;
  try {
    console.error(`warm-up ${WARMUP} s each, then ${SECONDS} s each in ${ROUNDS} alternating rounds, ${CONCURRENCY} connections`);
    await load(8791, path, WARMUP);
    await load(8792, path, WARMUP);
    // Alternating slices: a neighbour's burst of CPU (2 shared cores) hits both sides alike.
    const [rust, js] = [undefined, undefined].map(() => ({ latencies: [], errors: {}, seconds: 0 }));
    for (let round = 0; round < ROUNDS; round++) {
      await load(8791, path, SECONDS / ROUNDS, rust);
      await load(8792, path, SECONDS / ROUNDS, js);
    }
    rows = { rust: summary(rust), js: summary(js) };
  } finally {
    await edge.stop();
    await floor.stop();
  }

  let queue = null;
  if (!opts['skip-queue']) {
    console.error(`queue delivery: ${QUEUE_RATE} requests/s for ${QUEUE_SECONDS} s (DELIVERY_MODE=queue)`);
    const queued = await startWrangler('queue', 'wrangler.bench.toml', 8793, { ...edgeVars, DELIVERY_MODE: 'queue' });
    try {
      await post(8793, path, batch().body); // first request: key lookup, salt, quota object
      queue = await queueLatency(origin, 8793);
    } finally {
      await queued.stop();
    }
  }
  await origin.close();
  agent.destroy();

  const { rust, js } = rows;
  const line = (name, r) =>
    `| ${name} | ${Math.round(r.rps)} | ${Math.round(r.rps * EVENTS)} | ${ms(r.p50)} | ${ms(r.p95)} | ${r.errors} |`;
  const out = [
    `Edge benchmark: ${EVENTS}-event batches, ${CONCURRENCY} keep-alive connections, ${SECONDS} s per side ` +
      `(${ROUNDS} alternating rounds), wrangler dev on 127.0.0.1`,
    '',
    '| worker | requests/s | events/s | median ms | p95 ms | errors |',
    '| --- | ---: | ---: | ---: | ---: | ---: |',
    line('nexus-edge (Rust, direct mode)', rust),
    line('pass-through JS worker (floor)', js),
    `| ratio edge / floor | ${((rust.rps / js.rps) * 100).toFixed(1)}% | | ${(rust.p50 / js.p50).toFixed(2)}x | ${(rust.p95 / js.p95).toFixed(2)}x | |`,
    '',
  ];
  if (queue) {
    out.push(
      `Queue delivery (${QUEUE_RATE} requests/s for ${QUEUE_SECONDS} s, max_batch_size 10, max_batch_timeout 5 s): ` +
        `accepted -> at the origin p50 ${ms(queue.p50)} ms, p95 ${ms(queue.p95)} ms ` +
        `(${queue.arrived} of ${queue.events} events arrived, ${queue.refused} requests refused)`,
      '',
    );
  }
  out.push(
    `Size: wasm ${kib(size.wasm)} KiB, gzip -9 ${kib(size.wasmGz)} KiB; ` +
      `bundle (wasm + index.js) ${kib(size.bundle)} KiB, gzip -9 ${kib(size.bundleGz)} KiB (free plan: 3 MB compressed)`,
  );
  console.log(out.join('\n'));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
