//! `obleth-admin`: the management API binary.

use std::path::PathBuf;

use clap::Parser;

/// The obleth admin API: keys, providers, routes, usage and the fleet.
#[derive(Debug, Parser)]
#[command(name = "obleth-admin", version = obleth_config::version::VERSION, about)]
struct Cli {
    /// Settings file (TOML); also read from OBLETH_CONFIG.
    #[arg(long, env = "OBLETH_CONFIG")]
    config: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    anyhow::bail!(
        "the admin API is not built yet (settings: {:?}); see the open admin issue",
        cli.config
    )
}
