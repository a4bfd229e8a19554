//! The Nexus edge collector: a Cloudflare Worker that validates, enriches and forwards events.
//!
//! A browser (or any sender) posts a batch to `POST /v1/batch` (or one event to `POST /v1/track`,
//! or loads the `GET /v1/p.gif` pixel, whose page view is made at the edge: [`single`]; all three
//! share one pipeline); the worker checks the envelope and every event with the shared
//! [`protocol`] crate, resolves the write key at the origin (cached in the isolate), adds
//! geography, a visitor hash and a bot verdict, and forwards the valid events to the origin over a
//! signed request. The client gets one answer that lists the
//! refused events by their index in its batch. See `edge-worker/README.md` for configuration.
//!
//! Daily visitor salts and per-project quotas live in two Durable Objects (`durable`); the
//! per-IP and per-key limits use Cloudflare's rate-limit binding.
//!
//! With `DELIVERY_MODE = "queue"` the valid events go onto a Cloudflare Queue instead, and this
//! worker's queue consumer forwards them, retries origin outages and dead-letters what the origin
//! refuses ([`delivery`]); dead letters wait in a third object until an admin re-drive.
//!
//! Accepted and dropped events are counted per request ([`metrics`]) in the optional Workers
//! Analytics Engine binding and in a structured log line.
//!
//! Everything but `handler`, `durable` (and the entry point below) is plain Rust that compiles and tests
//! natively; the workers-rs glue only exists on `wasm32`.

pub mod config;
pub mod context;
pub mod cors;
pub mod delivery;
pub mod geo;
pub mod keys;
pub mod limits;
pub mod merge;
pub mod metrics;
pub mod outbound;
pub mod routes;
pub mod salt;
pub mod single;

#[cfg(target_arch = "wasm32")]
pub mod durable;
#[cfg(target_arch = "wasm32")]
mod handler;

/// The Worker's `fetch` entry point: routing, the batch pipeline and every answer live in
/// `handler`; an `Err` here would be a workerd 500, so the handler turns every failure into a
/// JSON answer first.
#[cfg(target_arch = "wasm32")]
#[worker::event(fetch)]
async fn fetch(req: worker::Request, env: worker::Env, _ctx: worker::Context) -> worker::Result<worker::Response> {
    handler::fetch(req, env).await
}

/// The Worker's `queue` entry point: the delivery queue's consumer (forward to the origin) and
/// the dead-letter queue's (keep for a re-drive); see `handler::consume`.
#[cfg(target_arch = "wasm32")]
#[worker::event(queue)]
async fn queue(
    batch: worker::MessageBatch<wasm_bindgen::JsValue>,
    env: worker::Env,
    _ctx: worker::Context,
) -> worker::Result<()> {
    handler::consume(batch, env).await
}
