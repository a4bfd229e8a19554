// The benchmark's floor (see passthrough.toml): forwards the request body to the origin's ingest
// path and passes the answer back. No validation, enrichment, key check or signature.
export default {
  async fetch(request, env) {
    const reply = await fetch(`${env.ORIGIN_URL}/internal/v1/ingest`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: await request.text(),
    });
    return new Response(await reply.text(), { status: reply.status, headers: { 'content-type': 'application/json' } });
  },
};
