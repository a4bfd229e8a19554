//! The end-to-end suite: real Chromium -> npm package -> edge in workerd -> origin -> PostgreSQL.

use anyhow::Result;
use xshell::cmd;

use crate::Ctx;

/// Runs `node --test e2e/` against the debug origin binary built by `cargo test`.
pub fn test(ctx: &Ctx) -> Result<()> {
    let sh = &ctx.sh;
    let origin = ctx.root.join("target/debug/nexus-origin");
    if !origin.exists() {
        cmd!(sh, "cargo build --locked -p nexus-origin").run()?;
    }
    cmd!(sh, "node --test --test-concurrency=1 e2e/e2e.test.mjs")
        .env("NEXUS_ORIGIN_BIN", &origin)
        .env("WRANGLER_SEND_METRICS", "false")
        .env("CLOUDFLARE_CF_FETCH_ENABLED", "false")
        .run()?;
    Ok(())
}
