//! `obleth-gateway`: the data plane binary.

use std::path::PathBuf;

use clap::Parser;

/// The obleth gateway: an OpenAI-compatible proxy with a warmed key cache.
#[derive(Debug, Parser)]
#[command(name = "obleth-gateway", version = obleth_config::version::VERSION, about)]
struct Cli {
    /// Settings file (TOML); also read from OBLETH_CONFIG.
    #[arg(long, env = "OBLETH_CONFIG")]
    config: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    anyhow::bail!(
        "the gateway data plane is not built yet (settings: {:?}); see the open gateway issue",
        cli.config
    )
}
