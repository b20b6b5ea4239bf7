//! `obleth-gateway`: parses the command line, starts tracing, loads settings and
//! runs the gateway until SIGTERM or SIGINT.

/// The allocator: mimalloc unless built without the `mimalloc` feature.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use obleth_gateway::{Gateway, GatewaySettings};
use secrecy::ExposeSecret;

/// The obleth gateway: an OpenAI-compatible proxy with a warmed key cache.
#[derive(Debug, Parser)]
#[command(name = "obleth-gateway", version = obleth_config::version::VERSION, about)]
struct Cli {
    /// Settings file (TOML); also read from OBLETH_CONFIG.
    #[arg(long, env = "OBLETH_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Make a new API key and print it with the [[keys]] entry for the settings file.
    Key {
        /// The key's name in the file.
        #[arg(long, default_value = "my-key")]
        name: String,
    },
    /// Check the settings file and exit.
    Check,
    /// Print, as JSON, the ports, probe paths and drain timings these settings
    /// give, for deploy manifests and their wiring tests.
    Wiring,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(Command::Key { name }) = &cli.command {
        let key = obleth_config::apikey::generate();
        println!("# The key (shown once; give it to the client):");
        println!("# {}", key.secret.expose_secret());
        println!("[[keys]]");
        println!("name = {name:?}");
        println!("public_id = {:?}", key.public_id);
        println!("secret_sha256 = {:?}", hex(&key.secret_hash));
        return Ok(());
    }
    let settings =
        GatewaySettings::load(cli.config.as_deref()).context("cannot load the settings")?;
    match cli.command {
        Some(Command::Check) => {
            println!("settings are valid");
            return Ok(());
        }
        Some(Command::Wiring) => {
            println!("{}", obleth_gateway::ops::wiring(&settings));
            return Ok(());
        }
        _ => {}
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let (export, layer) =
        match obleth_gateway::otel::Export::start(&settings.telemetry, runtime.handle().clone())? {
            Some((export, layer)) => (Some(export), Some(layer)),
            None => (None, None),
        };
    obleth_config::telemetry::init_with(settings.log.format, &settings.log.filter, layer);
    runtime.block_on(async move {
        let proxy = tokio::net::TcpListener::bind(settings.server.listen)
            .await
            .with_context(|| format!("cannot listen on server.listen {}", settings.server.listen))?;
        let ops = tokio::net::TcpListener::bind(settings.server.ops_listen)
            .await
            .with_context(|| format!("cannot listen on server.ops_listen {}", settings.server.ops_listen))?;
        tracing::info!(listen = %settings.server.listen, ops = %settings.server.ops_listen, "Listening.");
        let gateway = Gateway::build(settings, cli.config.clone()).await?;
        let served = gateway
            .run(proxy, ops, obleth_config::process::shutdown_signal())
            .await;
        // The spans of the last requests, sent while the runtime runs.
        if let Some(export) = export {
            let _ = tokio::task::spawn_blocking(move || export.shutdown()).await;
        }
        served?;
        Ok(())
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
