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
    /// The post-upgrade check: exit 0 only when every live gateway and admin
    /// runs the expected release, has seen the expected schema and is ready,
    /// and a canary request through a gateway succeeds. Exit codes: 0
    /// complete, 1 error, 3 nodes or schema not there yet, 4 canary failed.
    RolloutStatus(RolloutArgs),
}

#[derive(Debug, clap::Args)]
struct RolloutArgs {
    /// The release every live gateway and admin must run, e.g. 0.2.0.
    #[arg(long)]
    expect_version: String,
    /// The migration every node must have seen and the database must have
    /// applied [default: this binary's newest expand migration].
    #[arg(long)]
    expect_schema: Option<i64>,
    /// PostgreSQL URL of the fleet's database.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// A gateway's base URL (its Service); with it, a canary chat completion
    /// is sent through it with the canary key.
    #[arg(long)]
    gateway_url: Option<String>,
    /// File holding the canary's API key (a Kubernetes Secret mount); else
    /// the OBLETH_CANARY_KEY environment variable.
    #[arg(long)]
    canary_key_file: Option<PathBuf>,
    /// The canary's model [default: the first the key's /v1/models lists].
    #[arg(long)]
    canary_model: Option<String>,
    /// Seconds the canary request may take.
    #[arg(long, default_value_t = 30)]
    canary_timeout_secs: u64,
    /// Poll until the rollout is complete or the timeout ends.
    #[arg(long)]
    wait: bool,
    /// With --wait: give up after this many seconds.
    #[arg(long, default_value_t = 300)]
    timeout_secs: u64,
    /// With --wait: seconds between checks.
    #[arg(long, default_value_t = 2)]
    interval_secs: u64,
    /// Nodes that never recorded their stop count until this many seconds
    /// after their last heartbeat (as for `obleth-migrator finish`).
    #[arg(
        long,
        env = "OBLETH_MIGRATIONS__NODE_HORIZON_SECS",
        default_value_t = 86_400
    )]
    node_horizon_secs: u64,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(Command::RolloutStatus(args)) = cli.command {
        std::process::exit(i32::from(rollout_status(args)));
    }
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

/// Runs `rollout-status` and answers its exit code.
fn rollout_status(args: RolloutArgs) -> u8 {
    use obleth_admin::rollout::{self, exit, Canary, RolloutCheck};
    let fail = |message: String| {
        eprintln!("obleth-admin rollout-status: {message}");
        exit::ERROR
    };
    let database_url = match args
        .database_url
        .or_else(|| std::env::var("OBLETH_DATABASE__URL").ok())
    {
        Some(url) if !url.is_empty() => url,
        _ => return fail(
            "no database given: pass --database-url or set DATABASE_URL (or OBLETH_DATABASE__URL)"
                .to_owned(),
        ),
    };
    let canary = match args.gateway_url {
        None => None,
        Some(gateway_url) => {
            let key = match &args.canary_key_file {
                Some(path) => match std::fs::read_to_string(path) {
                    Ok(text) => text.trim().to_owned(),
                    Err(e) => {
                        return fail(format!(
                            "cannot read --canary-key-file {}: {e}",
                            path.display()
                        ))
                    }
                },
                None => std::env::var("OBLETH_CANARY_KEY").unwrap_or_default(),
            };
            if key.is_empty() {
                return fail(
                    "--gateway-url needs a canary key: pass --canary-key-file or set OBLETH_CANARY_KEY"
                        .to_owned(),
                );
            }
            if !(gateway_url.starts_with("http://") || gateway_url.starts_with("https://")) {
                return fail(format!(
                    "--gateway-url must start with http:// or https://, got {gateway_url}"
                ));
            }
            Some(Canary {
                gateway_url,
                key,
                model: args.canary_model,
                timeout: std::time::Duration::from_secs(args.canary_timeout_secs),
            })
        }
    };
    let check = RolloutCheck {
        database_url,
        expect_version: args.expect_version,
        expect_schema: args.expect_schema,
        canary,
        node_horizon: std::time::Duration::from_secs(args.node_horizon_secs),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return fail(format!("cannot start the async runtime: {e}")),
    };
    let (wait, json) = (args.wait, args.json);
    let outcome = runtime.block_on(rollout::run(
        &check,
        wait,
        std::time::Duration::from_secs(args.timeout_secs),
        std::time::Duration::from_secs(args.interval_secs.max(1)),
        |round| {
            // While waiting, say on stderr what is still missing each round.
            if wait && !json {
                match round {
                    Ok(status) if status.code() != exit::COMPLETE => {
                        let missing = status
                            .problems
                            .first()
                            .cloned()
                            .unwrap_or_else(|| "the canary failed".to_owned());
                        eprintln!("waiting: {missing}");
                    }
                    Err(e) => eprintln!("waiting: {e}"),
                    Ok(_) => {}
                }
            }
        },
    ));
    match outcome {
        Ok(status) => {
            if json {
                match serde_json::to_string_pretty(&status) {
                    Ok(text) => println!("{text}"),
                    Err(e) => return fail(format!("cannot print the status: {e}")),
                }
            } else {
                print!("{}", status.render());
            }
            status.code()
        }
        Err(e) => fail(e),
    }
}
