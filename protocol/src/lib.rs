//! The Nexus wire contract (version 1), shared by the browser SDK, the edge worker and the origin.
//!
//! Without features this crate is only constants and small enums ([`limits`], [`codes`],
//! [`EventType`], [`retry`]): that is what the wasm SDK compiles in. The `server` feature adds the
//! typed events, validation of untrusted JSON, enrichment, body decoding and request signing.
//!
//! Nothing here reads the clock, the environment or the network: `received_at`, salts, secrets
//! and limits are arguments, so the same code runs in a browser, in workerd and in the origin.

pub mod codes;
pub mod kind;
pub mod limits;
pub mod retry;

pub use codes::{EnvelopeCode, RejectCode};
pub use kind::EventType;

#[cfg(feature = "server")]
pub mod bot;
#[cfg(feature = "server")]
pub mod envelope;
#[cfg(feature = "server")]
pub mod event;
#[cfg(feature = "server")]
pub mod forward;
#[cfg(feature = "server")]
pub mod signing;
#[cfg(feature = "server")]
pub mod skew;
#[cfg(feature = "server")]
pub mod validate;
#[cfg(feature = "server")]
pub mod visitor;

/// Version segment of every public path (`/v1/batch`).
pub const API_VERSION: &str = "v1";
/// Path of the public batch endpoint (edge and origin alike).
pub const BATCH_PATH: &str = "/v1/batch";
/// Query parameter that carries the project's write key.
pub const KEY_PARAM: &str = "key";
/// Header that may carry the write key instead of the query parameter.
pub const KEY_HEADER: &str = "x-nexus-key";
/// Query parameter that says the body is gzip-compressed where headers cannot be set (beacons).
pub const COMPRESSION_PARAM: &str = "compression";
