//! `cargo xtask test`: every test of every tier, with the time of each stage.
//!
//! Each target/profile is built once: `cargo test` builds the native workspace (debug), whose
//! origin binary the end-to-end test reuses; the SDK and the worker are built once for wasm32.

use std::time::{Duration, Instant};

use anyhow::Result;
use xshell::cmd;

use crate::{e2e, edge, sdk, setup, stage, Ctx};

/// Runs every stage; stops at the first failure but always prints the table.
pub fn test(ctx: &Ctx) -> Result<()> {
    let started = Instant::now();
    let mut times: Vec<(String, Duration)> = Vec::new();
    let result = run_stages(ctx, &mut times);
    eprintln!("\n{:<34} {:>9}", "stage", "seconds");
    eprintln!("{}", "-".repeat(44));
    for (name, took) in &times {
        eprintln!("{:<34} {:>9.1}", name, took.as_secs_f64());
    }
    eprintln!("{}", "-".repeat(44));
    eprintln!("{:<34} {:>9.1}", "total", started.elapsed().as_secs_f64());
    match &result {
        Ok(()) => eprintln!("all stages passed"),
        Err(e) => eprintln!("FAILED: {e:#}"),
    }
    result
}

fn run_stages(ctx: &Ctx, times: &mut Vec<(String, Duration)>) -> Result<()> {
    let sh = &ctx.sh;
    stage(times, "setup (install missing tools)", || setup::ensure_tools(ctx))?;
    stage(times, "cargo fmt --check", || Ok(cmd!(sh, "cargo fmt --all -- --check").run()?))?;
    stage(times, "clippy (native, all targets)", || {
        Ok(cmd!(sh, "cargo clippy --workspace --all-targets --locked -- -D warnings").run()?)
    })?;
    stage(times, "clippy (wasm32: sdk, edge)", || {
        Ok(cmd!(sh, "cargo clippy -p nexus-sdk -p nexus-edge --target wasm32-unknown-unknown --locked -- -D warnings")
            .run()?)
    })?;
    stage(times, "cargo test (native + postgres)", || Ok(cmd!(sh, "cargo test --workspace --locked").run()?))?;
    stage(times, "build sdk (wasm + npm)", || sdk::build(ctx))?;
    stage(times, "test sdk (chromium)", || sdk::test(ctx))?;
    stage(times, "build edge (worker-build)", || edge::build(ctx))?;
    stage(times, "test edge (miniflare/workerd)", || edge::test(ctx))?;
    stage(times, "end to end (chromium->edge->origin)", || e2e::test(ctx))?;
    Ok(())
}
