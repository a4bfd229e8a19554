//! The Nexus browser SDK core: builds events, batches them and sends them to the collector.
//!
//! Split in two so the logic is testable without a browser:
//! - pure modules, compiled and unit-tested natively: [`queue`] (batching, retry, beacons behind
//!   the `Transport` and `Clock` traits), [`identity`] (anonymous id, user id, session behind a
//!   `Storage` trait), [`consent`] (what may be stored and sent) and [`wire`] (UUID v7,
//!   timestamps, argument checks);
//! - `web` (wasm32 only): the web-sys implementations of those traits, the event builder and
//!   the functions exported to JavaScript (`init`, `run`, `flush`, `optIn`, `optOut`, `reset`,
//!   `tick`, `answer`, `adopt`), proven by `tests/browser.rs` in headless Chromium and by the
//!   Playwright tests in npm/test.
//!
//! Cookieless mode, sampling (`wire::sampled`) and `beforeSend` live in the core; the call
//! queue, the page context, the transport (fetch, gzip, beacons), `alias`, `group`, super
//! properties, autocapture and the stub snippet live in the npm loader, where they are smaller
//! and an app's bundler drops what the app does not call (the size budget is measured that way).
//!
//! The npm package in `npm/` wraps the wasm-bindgen output with a small loader.

pub mod consent;
pub mod identity;
pub mod queue;
pub mod wire;

#[cfg(target_arch = "wasm32")]
pub mod web;

/// The SDK's heap holds a few KiB (queued events, batch bodies), for which Rust's default
/// dlmalloc is 7 KiB of wasm, a third of the budget. lol_alloc's free list keeps blocks sorted
/// and merges neighbours, so a long-lived tab does not fragment, at under 1 KiB. The locked
/// variant needs no `unsafe` (the workspace forbids it); its lock never contends in a page.
#[cfg(target_arch = "wasm32")]
#[global_allocator]
static ALLOCATOR: lol_alloc::LockedAllocator<lol_alloc::FreeListAllocator> =
    lol_alloc::LockedAllocator::new(lol_alloc::FreeListAllocator::new());
