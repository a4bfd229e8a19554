//! The browser half (wasm32 only): web-sys implementations of the pure traits, the page
//! context, the event builder and the functions exported to JavaScript.
//!
//! Kept apart from the pure modules so that `cargo test` on the host never needs a browser, and
//! so that everything here can be checked in one place against the size budget: prefer one
//! `Reflect` call to a new web-sys binding when both work, since every import adds JS glue.

pub mod api;
pub mod context;
pub mod platform;
