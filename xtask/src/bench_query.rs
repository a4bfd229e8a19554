//! `cargo xtask load-synthetic` and `cargo xtask bench-query`: both run the release-built
//! `origin-api/benches/query.rs`, which starts what it needs (embedded PostgreSQL, the origin).

use anyhow::Result;
use clap::Args;

use crate::Ctx;

/// `load-synthetic` options.
#[derive(Debug, Args)]
pub struct LoadArgs {
    /// Events to load (the generator's batches of 100, several per request).
    #[arg(long, default_value_t = 1_000_000)]
    pub events: usize,
    /// Generator seed.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Days of history, ending at today's midnight (UTC).
    #[arg(long, default_value_t = 90)]
    pub days: u32,
    /// Requests in flight.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// A running origin (`http://127.0.0.1:8700`); without it an embedded PostgreSQL in
    /// `--data-dir` is started and loaded.
    #[arg(long)]
    pub url: Option<String>,
    /// Write key of the running origin's project (with `--url`).
    #[arg(long)]
    pub write_key: Option<String>,
    /// The running origin's `NEXUS_EDGE_SECRET` (with `--url`): events go the edge's signed way,
    /// each with its own country, user agent and bot flag.
    #[arg(long)]
    pub edge_secret: Option<String>,
    /// Data directory of the embedded PostgreSQL (without `--url`).
    #[arg(long, default_value = ".nexus-synthetic")]
    pub data_dir: String,
}

/// `bench-query` options.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Events to load before timing (1000000 and 10000000 are the documented sizes).
    #[arg(long, default_value_t = 1_000_000)]
    pub events: usize,
    /// Generator seed.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Timed runs per query (the median is printed), after one warm-up.
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Keep the cluster in this directory and reuse the data set loaded there by an earlier run
    /// of the same size and seed (times the read side without loading again).
    #[arg(long)]
    pub keep: Option<std::path::PathBuf>,
}

fn bench(ctx: &Ctx, extra: Vec<String>) -> Result<()> {
    let sh = &ctx.sh;
    Ok(xshell::cmd!(sh, "cargo bench --locked -p nexus-origin --bench query -- {extra...}").run()?)
}

/// Loads synthetic events through the origin's ingest pipeline and prints the rate.
pub fn load_synthetic(ctx: &Ctx, a: &LoadArgs) -> Result<()> {
    let mut extra = vec!["--load-only".to_owned()];
    let pairs = [
        ("--events", Some(a.events.to_string())),
        ("--seed", Some(a.seed.to_string())),
        ("--days", Some(a.days.to_string())),
        ("--concurrency", Some(a.concurrency.to_string())),
        ("--url", a.url.clone()),
        ("--write-key", a.write_key.clone()),
        ("--edge-secret", a.edge_secret.clone()),
        // The bench runs in the crate's directory: a relative data dir means the workspace's.
        ("--data-dir", Some(ctx.root.join(&a.data_dir).display().to_string())),
    ];
    for (name, value) in pairs {
        if let Some(v) = value {
            extra.extend([name.to_owned(), v]);
        }
    }
    bench(ctx, extra)
}

/// Loads synthetic events, then times each dashboard query against its plain-SQL baseline.
pub fn bench_query(ctx: &Ctx, a: &BenchArgs) -> Result<()> {
    let mut extra = ["--events", &a.events.to_string(), "--seed", &a.seed.to_string(), "--runs", &a.runs.to_string()]
        .map(str::to_owned)
        .to_vec();
    if let Some(keep) = &a.keep {
        // The bench runs in the crate's directory: a relative path means the workspace's.
        extra.extend(["--keep".to_owned(), ctx.root.join(keep).display().to_string()]);
    }
    bench(ctx, extra)
}
