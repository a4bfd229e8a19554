//! `nexus-origin` binary: parses the command line and hands over to [`nexus_origin::serve`].

use clap::Parser;

fn main() -> anyhow::Result<()> {
    let cli = nexus_origin::config::Cli::parse();
    nexus_origin::serve::run(cli)
}
