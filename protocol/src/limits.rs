//! Every size and count limit of protocol version 1, in one place.
//!
//! The SDK sizes its batches with these, the edge and the origin enforce them: the three tiers
//! cannot disagree about what fits.

/// Largest accepted request body, after gzip decoding (a gzip bomb is cut off here).
pub const MAX_BATCH_BYTES: usize = 512 * 1024;
/// Most events in one batch.
pub const MAX_EVENTS_PER_BATCH: usize = 1000;
/// Largest single event, as serialised JSON.
pub const MAX_EVENT_BYTES: usize = 32 * 1024;
/// Longest event name, in bytes.
pub const MAX_NAME_LEN: usize = 200;
/// Longest anonymous id, user id, session id, group key or alias id, in bytes.
pub const MAX_ID_LEN: usize = 200;
/// Most top-level keys in `properties` (and in each of `set` / `set_once`).
pub const MAX_PROPERTIES: usize = 200;
/// Deepest nesting inside a property value (`{"a":{"b":1}}` has depth 2).
pub const MAX_PROPERTY_DEPTH: usize = 8;
/// Longest property key, in bytes.
pub const MAX_PROPERTY_KEY_LEN: usize = 200;
/// Longest string property value, in bytes.
pub const MAX_PROPERTY_VALUE_LEN: usize = 8 * 1024;
/// Longest context string (url, referrer, title, ...), in bytes.
pub const MAX_CONTEXT_STRING_LEN: usize = 8 * 1024;
/// Largest body the edge may forward to the origin: a full public batch plus enrichment.
pub const MAX_FORWARD_BYTES: usize = 4 * MAX_BATCH_BYTES;
/// How far a signed edge request's timestamp may be from the origin's clock, in seconds.
pub const SIGNATURE_WINDOW_SECS: i64 = 300;
/// Client timestamps later than `received_at` by more than this (after skew correction) are
/// replaced by `received_at`: a wrong device clock must not put events in the future.
pub const MAX_FUTURE_SKEW_SECS: i64 = 60;
