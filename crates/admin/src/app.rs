//! Assembly and lifecycle: state, the server, start-up (migrations, schema
//! check), the heartbeat, and the drain on shutdown (not ready at once, keep
//! serving for `drain_delay`, stop accepting, let requests finish within
//! `drain_timeout`, leave the fleet, exit).

use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::health::Health;
use crate::metrics::Metrics;
use crate::settings::AdminSettings;
use crate::state::{AppState, Inner};
use crate::throttle::{AuthThrottle, LogLimiter};
use crate::tokens::AdminTokens;

/// At most one warning this often about wrong admin tokens, and one about
/// throttled clients; each says how many were held back.
const AUTH_LOG_INTERVAL: Duration = Duration::from_secs(10);
use crate::{node, router, startup};

/// An admin with its state built and nothing started yet.
#[derive(Debug)]
pub struct Admin {
    pub state: AppState,
}

impl Admin {
    /// Checks the settings, reads the tokens and builds the (lazy) pool;
    /// nothing is contacted yet.
    pub async fn build(settings: AdminSettings) -> anyhow::Result<Admin> {
        settings.validate().map_err(anyhow::Error::msg)?;
        let tokens = AdminTokens::load(&settings.auth)?;
        let node_id = settings
            .server
            .node_id
            .clone()
            .unwrap_or_else(|| obleth_config::process::default_node_id("admin"));
        let pool = obleth_config::db::connect_pool(&settings.database, "obleth-admin")
            .await
            .context("cannot set up the database pool")?;
        let state = AppState::new(Inner {
            pool,
            auth_throttle: AuthThrottle::new(
                settings.auth.max_failures,
                settings.auth.failure_window(),
            ),
            failure_log: LogLimiter::new(AUTH_LOG_INTERVAL),
            throttled_log: LogLimiter::new(AUTH_LOG_INTERVAL),
            tokens,
            health: Health::default(),
            metrics: Metrics::new(),
            node_id,
            beat: tokio::sync::Notify::new(),
            settings,
        });
        Ok(Admin { state })
    }

    /// Serves until `shutdown` resolves, then drains. Answers an error (the
    /// process must exit non-zero) when the schema is incompatible or a
    /// startup migration failed.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let state = self.state;
        let background = CancellationToken::new();
        let accept_stop = CancellationToken::new();
        let mut server = tokio::spawn(
            axum::serve(
                listener,
                // The peer address feeds the per-client throttle on wrong tokens.
                router::router(state.clone()).into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(accept_stop.clone().cancelled_owned())
            .into_future(),
        );
        tokio::spawn(node::heartbeat(
            state.clone(),
            Duration::from_secs(state.settings.server.heartbeat_secs),
            background.clone(),
        ));
        let (fatal_tx, mut fatal_rx) = tokio::sync::mpsc::channel::<String>(1);
        {
            let state = state.clone();
            let stop = background.clone();
            tokio::spawn(async move {
                match startup::prepare_schema(&state, &stop).await {
                    Ok(()) if state.health.ready() => {
                        info!(node_id = %state.node_id, "Admin ready.");
                        state.beat.notify_one();
                    }
                    Ok(()) => {}
                    Err(e) => {
                        error!("Refusing to start: {e}");
                        let _ = fatal_tx.send(e.to_string()).await;
                    }
                }
            });
        }
        info!(node_id = %state.node_id, "Admin serving.");

        let mut failure = None;
        tokio::pin!(shutdown);
        tokio::select! {
            _ = &mut shutdown => info!("Shutdown requested; draining."),
            Some(message) = fatal_rx.recv() => failure = Some(message),
            ended = &mut server => {
                failure = Some(match ended {
                    Ok(Ok(())) => "the server stopped unexpectedly".to_owned(),
                    Ok(Err(e)) => format!("the server failed: {e}"),
                    Err(e) => format!("the server task failed: {e}"),
                });
            }
        }
        // 1. Not ready at once, so load balancers stop sending requests, while
        //    whatever still arrives is served.
        state.health.start_draining();
        if failure.is_none() {
            tokio::time::sleep(state.settings.server.drain_delay()).await;
        }
        // 2. Stop accepting; in-flight requests may finish.
        accept_stop.cancel();
        if !server.is_finished()
            && tokio::time::timeout(state.settings.server.drain_timeout(), &mut server)
                .await
                .is_err()
        {
            warn!("Drain timeout passed; ending open connections.");
            server.abort();
        }
        // 3. Leave the fleet.
        background.cancel();
        node::mark_stopped(&state).await;
        state.pool.close().await;
        info!("Admin stopped.");
        match failure {
            Some(message) => Err(anyhow::anyhow!(message)),
            None => Ok(()),
        }
    }
}
