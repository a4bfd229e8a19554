//! `cargo xtask setup`: installs what a fresh machine lacks, and skips what is already there.
//!
//! The recipes are the verified ones of shared/toolchain.md: no step downloads from GitHub.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use xshell::cmd;

use crate::Ctx;

/// Version of wasm-bindgen-cli; must equal the `wasm-bindgen` crate pinned in Cargo.toml.
pub const WASM_BINDGEN_VERSION: &str = "0.2.130";
/// Version of worker-build; matches the `worker` crate.
pub const WORKER_BUILD_VERSION: &str = "0.8.7";

/// `$CARGO_HOME/bin` (tools installed by `cargo install`).
pub fn cargo_bin_dir() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from("/root/.cargo"))
        .join("bin")
}

/// Path of a cargo-installed tool.
pub fn cargo_tool(name: &str) -> PathBuf {
    cargo_bin_dir().join(name)
}

fn version_of(ctx: &Ctx, tool: &Path) -> Option<String> {
    if !tool.exists() {
        return None;
    }
    cmd!(ctx.sh, "{tool} --version").ignore_stderr().read().ok()
}

fn is_root(ctx: &Ctx) -> bool {
    cmd!(ctx.sh, "id -u").read().map(|s| s.trim() == "0").unwrap_or(false)
}

fn apt_install(ctx: &Ctx, packages: &[&str]) -> Result<()> {
    if !is_root(ctx) {
        bail!("missing system packages {packages:?}: run `sudo apt-get install -y {}`", packages.join(" "));
    }
    cmd!(ctx.sh, "apt-get update -qq").env("DEBIAN_FRONTEND", "noninteractive").run()?;
    cmd!(ctx.sh, "apt-get install -y -qq --no-install-recommends {packages...}")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .run()?;
    Ok(())
}

fn postgres_installed() -> bool {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join("pg_ctl").is_file()))
        .unwrap_or(false);
    on_path
        || std::fs::read_dir("/usr/lib/postgresql")
            .map(|d| d.filter_map(Result::ok).any(|e| e.path().join("bin/pg_ctl").is_file()))
            .unwrap_or(false)
}

/// Installs every tool the build, the tests and the run command need.
pub fn ensure_tools(ctx: &Ctx) -> Result<()> {
    // The toolchain file names the wasm32 target; this makes sure it is really installed.
    cmd!(ctx.sh, "rustup target add wasm32-unknown-unknown").ignore_stderr().quiet().run()?;

    let wb = cargo_tool("wasm-bindgen");
    if !version_of(ctx, &wb).is_some_and(|v| v.contains(WASM_BINDGEN_VERSION)) {
        eprintln!("installing wasm-bindgen-cli {WASM_BINDGEN_VERSION} (about 2 min)");
        // Not --locked: its locked webpki-roots version is not on crates.io any more.
        cmd!(ctx.sh, "cargo install wasm-bindgen-cli --version {WASM_BINDGEN_VERSION} --force").run()?;
    }
    let wkb = cargo_tool("worker-build");
    if !version_of(ctx, &wkb).is_some_and(|v| v.contains(WORKER_BUILD_VERSION)) {
        eprintln!("installing worker-build {WORKER_BUILD_VERSION} (about 4 min)");
        cmd!(ctx.sh, "cargo install worker-build --version {WORKER_BUILD_VERSION} --force").run()?;
    }

    let mut missing = Vec::new();
    if !Path::new("/usr/bin/chromium").exists() {
        missing.push("chromium");
    }
    if !Path::new("/usr/bin/chromedriver").exists() {
        missing.push("chromium-driver");
    }
    if !postgres_installed() {
        missing.extend(["postgresql", "postgresql-client"]);
    }
    if !missing.is_empty() {
        eprintln!("installing system packages: {missing:?}");
        apt_install(ctx, &missing)?;
    }

    let node = cmd!(ctx.sh, "node --version").read().context("node is required (20 or later)")?;
    let major: u32 = node.trim_start_matches('v').split('.').next().unwrap_or("0").parse().unwrap_or(0);
    if major < 20 {
        bail!("node {node} is too old: 20 or later is required");
    }
    let lock = ctx.root.join("package-lock.json");
    let stamp = ctx.root.join("node_modules/.package-lock.json");
    let stale = match (std::fs::metadata(&lock), std::fs::metadata(&stamp)) {
        (Ok(l), Ok(s)) => l.modified()? > s.modified()?,
        _ => true,
    };
    if stale || !ctx.node_bin("wrangler").exists() {
        eprintln!("installing node packages (npm ci)");
        cmd!(ctx.sh, "npm ci --no-audit --no-fund").run()?;
    }
    // The published package's own devDependencies (Vite and TypeScript for its packaging test).
    let npm_lock = ctx.root.join("npm/package-lock.json");
    let npm_stamp = ctx.root.join("npm/node_modules/.package-lock.json");
    let npm_stale = match (std::fs::metadata(&npm_lock), std::fs::metadata(&npm_stamp)) {
        (Ok(l), Ok(s)) => l.modified()? > s.modified()?,
        _ => true,
    };
    if npm_stale {
        eprintln!("installing the npm package's dev dependencies (npm ci --prefix npm)");
        cmd!(ctx.sh, "npm ci --prefix npm --no-audit --no-fund").run()?;
    }
    Ok(())
}
