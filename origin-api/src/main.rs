//! `nexus-origin` binary: parses the command line and hands over to [`nexus_origin::serve`].

use clap::Parser;

// The ingest path allocates and frees many short-lived strings per event (parsed fields, derived
// columns, COPY buffers); glibc's allocator was ~20% of the origin's CPU in the ingest benchmark
// (`perf`), mimalloc's thread-local free lists cost a fraction of that.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let cli = nexus_origin::config::Cli::parse();
    nexus_origin::serve::run(cli)
}
