//! Build, test and bench steps of the edge tier.
//!
//! `build-edge` runs worker-build with the size-tuned `wasm-release` profile and pinned tools
//! (no GitHub downloads); `test-edge` runs the crate's native unit tests, then the node:test
//! suite in `edge-worker/test/`, which loads the built worker into workerd through miniflare;
//! `bench-edge` runs the load generator `edge-worker/bench/bench.mjs` against the build (see
//! docs/benchmarks.md).
//! Neither takes the cargo lock itself: callers that share a target directory wrap the whole
//! command (`flock /tmp/nexus-cargo.lock cargo xtask build-edge`).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use xshell::cmd;

use crate::{stage, Ctx};

/// The crate directory, relative to the workspace root.
const EDGE_DIR: &str = "edge-worker";
/// What worker-build emits, relative to [`EDGE_DIR`] (wrangler.toml's `main` and the tests use it).
const ENTRY: &str = "build/index.js";
const WASM: &str = "build/index_bg.wasm";

/// Builds the edge worker into `edge-worker/build/` and prints the wasm size.
pub fn build(ctx: &Ctx) -> Result<()> {
    let mut times = Vec::new();
    let wasm_bindgen = tool_path("WASM_BINDGEN_BIN", "wasm-bindgen");
    let wasm_opt = ctx.node_bin("wasm-opt");
    if !wasm_opt.exists() {
        bail!("{} is missing: run `npm ci` at the workspace root", wasm_opt.display());
    }
    stage(&mut times, "worker-build (wasm-release)", || {
        let _dir = ctx.sh.push_dir(EDGE_DIR);
        let mut build = cmd!(ctx.sh, "worker-build --profile wasm-release")
            .env("WASM_BINDGEN_BIN", &wasm_bindgen)
            .env("WASM_OPT_BIN", &wasm_opt);
        // esbuild ships with wrangler; without it worker-build fetches esbuild from the npm registry.
        let esbuild = ctx.node_bin("esbuild");
        if esbuild.exists() {
            build = build.env("ESBUILD_BIN", esbuild);
        }
        build.run().context("worker-build failed (is it installed? `cargo install worker-build --version 0.8.7`)")
    })?;
    let wasm = ctx.root.join(EDGE_DIR).join(WASM);
    let raw = std::fs::metadata(&wasm).with_context(|| format!("{} was not built", wasm.display()))?.len();
    let gzipped = cmd!(ctx.sh, "gzip -9 -c {wasm}").output()?.stdout.len();
    eprintln!("edge worker: {} (wasm {:.1} KiB, gzip -9 {:.1} KiB)", WASM, kib(raw as usize), kib(gzipped));
    summary(&times);
    Ok(())
}

/// Runs the native unit tests of the edge crate, then the workerd suite against the build.
pub fn test(ctx: &Ctx) -> Result<()> {
    let mut times = Vec::new();
    let entry = ctx.root.join(EDGE_DIR).join(ENTRY);
    if !entry.exists() {
        bail!("{} is missing: run `cargo xtask build-edge` first", entry.display());
    }
    stage(&mut times, "unit tests (native)", || Ok(cmd!(ctx.sh, "cargo test --quiet -p nexus-edge").run()?))?;
    // `node --test edge-worker/test/` would also run the helper modules as (empty) test files.
    let mut files: Vec<PathBuf> = std::fs::read_dir(ctx.root.join(EDGE_DIR).join("test"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(".test.mjs"))
        .collect();
    files.sort();
    stage(&mut times, "workerd tests (miniflare, node:test)", || {
        Ok(cmd!(ctx.sh, "node --test --test-concurrency=1 {files...}")
            .env("WRANGLER_SEND_METRICS", "false")
            .env("CLOUDFLARE_CF_FETCH_ENABLED", "false")
            .run()?)
    })?;
    summary(&times);
    Ok(())
}

/// Options of `cargo xtask bench-edge` (passed on to `edge-worker/bench/bench.mjs`).
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Measured seconds per side (the Rust worker, then the pass-through floor).
    #[arg(long, default_value_t = 12)]
    seconds: u32,
    /// Concurrent keep-alive connections of the load generator.
    #[arg(long, default_value_t = 8)]
    concurrency: u32,
    /// Requests per second of the queue-delivery run.
    #[arg(long, default_value_t = 20)]
    queue_rate: u32,
    /// Seconds of the queue-delivery run.
    #[arg(long, default_value_t = 10)]
    queue_seconds: u32,
}

/// Benchmarks the built worker (run `build-edge` first): throughput and latency through
/// `wrangler dev` beside a pass-through JS worker, queue delivery latency, compressed size. The
/// measuring is in node (`edge-worker/bench/bench.mjs`); this only checks and starts it.
pub fn bench(ctx: &Ctx, args: &BenchArgs) -> Result<()> {
    let entry = ctx.root.join(EDGE_DIR).join(ENTRY);
    if !entry.exists() {
        bail!("{} is missing: run `cargo xtask build-edge` first", entry.display());
    }
    if !ctx.node_bin("wrangler").exists() {
        bail!("{} is missing: run `npm ci` at the workspace root", ctx.node_bin("wrangler").display());
    }
    let [seconds, concurrency, rate, queue_seconds] =
        [args.seconds, args.concurrency, args.queue_rate, args.queue_seconds].map(|n| n.to_string());
    let script = ctx.root.join(EDGE_DIR).join("bench/bench.mjs");
    cmd!(
        ctx.sh,
        "node {script} --seconds {seconds} --concurrency {concurrency} --queue-rate {rate} --queue-seconds {queue_seconds}"
    )
    .env("WRANGLER_SEND_METRICS", "false")
    .env("CLOUDFLARE_CF_FETCH_ENABLED", "false")
    .run()?;
    Ok(())
}

/// `$VAR` if set, else `~/.cargo/bin/<name>` if it exists, else `<name>` from `PATH`.
fn tool_path(var: &str, name: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(var) {
        return PathBuf::from(p);
    }
    let cargo_bin = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .map(|home| home.join("bin").join(name));
    cargo_bin.filter(|p| p.exists()).unwrap_or_else(|| PathBuf::from(name))
}

fn kib(bytes: usize) -> f64 {
    bytes as f64 / 1024.0
}

fn summary(times: &[(String, Duration)]) {
    for (name, took) in times {
        eprintln!("    {name}: {:.1}s", took.as_secs_f64());
    }
}
