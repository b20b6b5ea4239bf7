//! The `obleth-mock-upstream` binary: the mock OpenAI-compatible provider as a standalone server.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use obleth_testkit::mock::{MockConfig, MockUpstream};
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

/// A mock OpenAI-compatible LLM provider for the Compose stack and benchmarks.
#[derive(Debug, Parser)]
#[command(name = "obleth-mock-upstream", version)]
struct Cli {
    /// Address to serve on.
    #[arg(long, env = "MOCK_LISTEN", default_value = "127.0.0.1:8000")]
    listen: SocketAddr,
    /// Wait before each response's headers, in milliseconds.
    #[arg(long, env = "MOCK_LATENCY_MS", default_value_t = 0)]
    latency_ms: u64,
    /// Wait before each token of a streamed completion, in milliseconds.
    #[arg(long, env = "MOCK_TOKEN_DELAY_MS", default_value_t = 0)]
    token_delay_ms: u64,
    /// Tokens in each completion.
    #[arg(long, env = "MOCK_TOKENS", default_value_t = 16)]
    tokens: u32,
    /// Fraction of requests answered 500, from 0 to 1.
    #[arg(long, env = "MOCK_FAIL_RATE", default_value_t = 0.0, value_parser = parse_rate)]
    fail_rate: f64,
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(rate) if (0.0..=1.0).contains(&rate) => Ok(rate),
        _ => Err(format!("`{s}` is not a number from 0 to 1")),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();

    let listener = TcpListener::bind(cli.listen)
        .await
        .with_context(|| format!("binding {}", cli.listen))?;
    let config = MockConfig {
        latency: Duration::from_millis(cli.latency_ms),
        token_delay: Duration::from_millis(cli.token_delay_ms),
        completion_tokens: cli.tokens,
        fail_rate: cli.fail_rate,
        ..MockConfig::default()
    };
    let upstream = MockUpstream::start_on(listener, config)
        .await
        .context("starting the mock upstream")?;
    tracing::info!(addr = %upstream.addr(), base_url = %upstream.base_url(), "Mock upstream listening.");

    shutdown_signal().await?;
    upstream.shutdown().await;
    Ok(())
}

/// Resolves on SIGINT or SIGTERM, the signals a terminal and Compose send.
async fn shutdown_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
        tokio::select! {
            result = tokio::signal::ctrl_c() => result.context("listening for SIGINT")?,
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c()
        .await
        .context("listening for Ctrl-C")?;
    Ok(())
}
