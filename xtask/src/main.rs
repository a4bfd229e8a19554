//! `cargo xtask <command>`: set-up, build, run, test, bench and lint for the whole workspace.
//!
//! One entry point (as rust-analyzer does) so that the README, CI and developers run exactly the
//! same steps. Each tier keeps its build and test steps in its own module.

mod bench_query;
mod ci;
mod e2e;
mod edge;
mod run;
mod sdk;
mod setup;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::{Parser, Subcommand};
use xshell::Shell;

/// Shared state of one xtask invocation.
pub struct Ctx {
    /// Shell rooted at the workspace.
    pub sh: Shell,
    /// Workspace root.
    pub root: PathBuf,
}

impl Ctx {
    fn new() -> Result<Ctx> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .ok_or_else(|| anyhow::anyhow!("xtask has no parent directory"))?
            .to_path_buf();
        let sh = Shell::new()?;
        sh.change_dir(&root);
        Ok(Ctx { sh, root })
    }

    /// Path of a tool installed by `npm ci` at the workspace root.
    pub fn node_bin(&self, name: &str) -> PathBuf {
        self.root.join("node_modules/.bin").join(name)
    }
}

#[derive(Parser)]
#[command(name = "xtask", about = "Nexus workspace tasks")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what is missing (wasm tools, chromium, postgresql, node packages).
    Setup,
    /// Build everything and run the whole stack (origin, edge, demo page) until Ctrl-C.
    Run,
    /// Run every test of every tier, fmt and clippy, printing each stage's time.
    Test,
    /// Run only the end-to-end suite (needs build-sdk and build-edge first).
    TestE2e,
    /// Benchmark origin ingest over HTTP against a raw COPY of the same rows.
    BenchIngest {
        /// Events to send (batches of 100).
        #[arg(long, default_value_t = 400_000)]
        events: usize,
        /// Concurrent HTTP connections.
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        /// Visitors (sessions) whose events make up one batch of 100.
        #[arg(long, default_value_t = 10)]
        sessions_per_batch: usize,
        /// HTTP and COPY alternate in this many rounds (the ratio is printed per round and overall).
        #[arg(long, default_value_t = 4)]
        rounds: usize,
    },
    /// Build the browser SDK (wasm + npm package).
    BuildSdk,
    /// Build the edge worker.
    BuildEdge,
    /// Run the SDK test suites.
    TestSdk,
    /// Benchmark the SDK's track() against posthog-js in headless Chromium.
    BenchSdk,
    /// Run the edge test suites.
    TestEdge,
    /// Benchmark the built edge worker in wrangler dev against a pass-through JS worker.
    BenchEdge(edge::BenchArgs),
    /// Load deterministic synthetic events (persons, sessions, a funnel) through the origin's ingest.
    LoadSynthetic(bench_query::LoadArgs),
    /// Time the dashboard queries on synthetic data against plain-SQL baselines.
    BenchQuery(bench_query::BenchArgs),
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let ctx = Ctx::new()?;
    match cli.cmd {
        Cmd::Setup => setup::ensure_tools(&ctx),
        Cmd::Run => run::run(&ctx),
        Cmd::Test => ci::test(&ctx),
        Cmd::TestE2e => e2e::test(&ctx),
        Cmd::BenchIngest { events, concurrency, sessions_per_batch, rounds } => {
            let (events, concurrency) = (events.to_string(), concurrency.to_string());
            let (sessions, rounds) = (sessions_per_batch.to_string(), rounds.to_string());
            let sh = &ctx.sh;
            Ok(xshell::cmd!(
                sh,
                "cargo bench --locked -p nexus-origin --bench ingest -- --events {events} --concurrency {concurrency} --sessions-per-batch {sessions} --rounds {rounds}"
            )
            .run()?)
        }
        Cmd::BuildSdk => sdk::build(&ctx),
        Cmd::BuildEdge => edge::build(&ctx),
        Cmd::TestSdk => sdk::test(&ctx),
        Cmd::BenchSdk => sdk::bench(&ctx),
        Cmd::TestEdge => edge::test(&ctx),
        Cmd::BenchEdge(args) => edge::bench(&ctx, &args),
        Cmd::LoadSynthetic(args) => bench_query::load_synthetic(&ctx, &args),
        Cmd::BenchQuery(args) => bench_query::bench_query(&ctx, &args),
    }
}

/// Runs `f` as a named stage and records how long it took.
pub fn stage<T>(times: &mut Vec<(String, Duration)>, name: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    eprintln!("==> {name}");
    let start = Instant::now();
    let out = f();
    let took = start.elapsed();
    eprintln!("<== {name}: {:.1}s{}", took.as_secs_f64(), if out.is_err() { " (failed)" } else { "" });
    times.push((name.to_owned(), took));
    out
}
