//! `obleth-admin`: parses the command line, starts tracing, loads settings and
//! serves the admin API until SIGTERM or SIGINT.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use obleth_admin::{Admin, AdminSettings};

/// The obleth admin API: keys, providers, routes, usage, the fleet and maintenance.
#[derive(Debug, Parser)]
#[command(name = "obleth-admin", version = obleth_config::version::VERSION, about)]
struct Cli {
    /// Settings file (TOML); also read from OBLETH_CONFIG.
    #[arg(long, env = "OBLETH_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check the settings and the admin tokens, then exit.
    Check,
    /// Print, as JSON, the port, probe paths and drain timings these settings
    /// give, for deploy manifests and their wiring tests. Needs no database.
    Wiring,
    /// Print the OpenAPI 3 document and exit.
    Openapi,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Wiring) => {
            let settings = AdminSettings::load_unchecked(cli.config.as_deref())
                .context("cannot load the settings")?;
            println!("{}", obleth_admin::ops::wiring(&settings));
            return Ok(());
        }
        Some(Command::Openapi) => {
            let document = obleth_admin::openapi::document();
            println!("{}", serde_json::to_string_pretty(document)?);
            return Ok(());
        }
        _ => {}
    }
    let settings =
        AdminSettings::load(cli.config.as_deref()).context("cannot load the settings")?;
    obleth_admin::tokens::AdminTokens::load(&settings.auth)
        .context("cannot load the admin tokens")?;
    if let Some(Command::Check) = cli.command {
        println!("settings are valid");
        return Ok(());
    }
    obleth_config::telemetry::init(settings.log.format, &settings.log.filter);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(settings.server.listen)
            .await
            .with_context(|| {
                format!("cannot listen on server.listen {}", settings.server.listen)
            })?;
        tracing::info!(listen = %settings.server.listen, "Listening.");
        let admin = Admin::build(settings).await?;
        admin
            .run(listener, obleth_config::process::shutdown_signal())
            .await?;
        Ok(())
    })
}
