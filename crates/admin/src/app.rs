//! Assembly and lifecycle: state, the server, start-up (migrations, schema
//! check), the heartbeat, the change log's pruning, and the drain on shutdown (not ready at once, keep
//! serving for `drain_delay`, stop accepting, let requests finish within
//! `drain_timeout`, leave the fleet, exit).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use obleth_config::db::DbError;
use obleth_config::{InvalidSetting, SettingsError};
use obleth_service::drain::DrainTimings;
use obleth_service::node::Heartbeat;
use obleth_service::{Health, Listener, ServerEnded};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::metrics::Metrics;
use crate::settings::AdminSettings;
use crate::startup::Fatal;
use crate::state::{AppState, Inner};
use crate::throttle::AuthThrottle;
use crate::tokens::AdminTokens;
use crate::{router, startup};
use obleth_service::ratelog::RateLimitedLog;

/// At most one warning this often about wrong admin tokens, and one about
/// throttled clients; each says how many were held back.
const AUTH_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Why an admin could not be built.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A setting failed [`AdminSettings::validate`].
    #[error(transparent)]
    Settings(#[from] InvalidSetting),
    /// `auth.tokens` or `auth.token_file` holds no usable token (named by
    /// place, never by value).
    #[error(transparent)]
    Tokens(#[from] SettingsError),
    /// The pool could not be set up from `[database]` (never the password).
    #[error("cannot set up the database pool")]
    Pool(#[source] DbError),
}

/// Why a running admin stopped with an error, after its drain: the process
/// must exit non-zero.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The schema can never suit this build, or a start-up migration failed.
    #[error(transparent)]
    Startup(#[from] Fatal),
    /// The listener's server ended on its own.
    #[error(transparent)]
    Server(#[from] ServerEnded),
}

/// An admin with its state built and nothing started yet.
#[derive(Debug)]
pub struct Admin {
    pub state: AppState,
}

impl Admin {
    /// Checks the settings, reads the tokens and builds the (lazy) pool;
    /// nothing is contacted yet.
    pub async fn build(settings: AdminSettings) -> Result<Admin, StartError> {
        settings.validate()?;
        let tokens = AdminTokens::load(&settings.auth)?;
        let node_id = settings
            .server
            .node_id
            .clone()
            .unwrap_or_else(|| obleth_config::process::default_node_id("admin"));
        let pool = obleth_config::db::connect_pool(&settings.database, "obleth-admin")
            .await
            .map_err(StartError::Pool)?;
        let state = AppState::new(Inner {
            pool,
            auth_throttle: AuthThrottle::new(
                settings.auth.max_failures,
                settings.auth.failure_window(),
            ),
            failure_log: RateLimitedLog::new(AUTH_LOG_INTERVAL),
            throttled_log: RateLimitedLog::new(AUTH_LOG_INTERVAL),
            tokens,
            health: Health::default(),
            metrics: Metrics::new(),
            node_id,
            beat: Arc::new(tokio::sync::Notify::new()),
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
    ) -> Result<(), RunError> {
        let state = self.state;
        let background = CancellationToken::new();
        let mut limits = state.settings.server.limits();
        obleth_service::server::fit_caps_to_fd_limit(&mut [(
            "server.max_connections",
            &mut limits,
            1,
        )]);
        let mut server = obleth_service::serve(
            Listener {
                name: "admin",
                listener,
                limits,
                nodelay: false,
                metrics: state.metrics.connections.clone(),
            },
            router::router(state.clone()),
        );
        // Registration fails until the schema exists; start-up wakes the
        // heartbeat once the admin is ready, so the fleet sees it at once.
        let heartbeat = Heartbeat {
            service: "admin",
            node_id: state.node_id.clone(),
            pool: state.pool.clone(),
            health: state.health.clone(),
            ready: {
                let (health, gauge) = (state.health.clone(), state.metrics.ready.clone());
                Arc::new(move || {
                    let ready = health.ready();
                    gauge.set(i64::from(ready));
                    ready
                })
            },
            every: Duration::from_secs(state.settings.server.heartbeat_secs),
            wake: Some(state.beat.clone()),
            tracks_database: true,
        };
        tokio::spawn(heartbeat.run(background.clone()));
        let (fatal_tx, mut fatal_rx) = tokio::sync::mpsc::channel::<Fatal>(1);
        {
            let state = state.clone();
            let stop = background.clone();
            tokio::spawn(async move {
                match startup::prepare_schema(&state, &stop).await {
                    Ok(()) if state.health.ready() => {
                        info!(node_id = %state.node_id, "Admin ready.");
                        state.beat.notify_one();
                        tokio::spawn(crate::prune::run(state.clone(), stop.clone()));
                        tokio::spawn(crate::dropped::run(state.clone(), stop.clone()));
                    }
                    Ok(()) => {}
                    Err(e) => {
                        error!("Refusing to start: {e}");
                        let _ = fatal_tx.send(e).await;
                    }
                }
            });
        }
        info!(node_id = %state.node_id, "Admin serving.");

        let mut failure = None;
        tokio::pin!(shutdown);
        tokio::select! {
            _ = &mut shutdown => info!("Shutdown requested; draining."),
            Some(e) = fatal_rx.recv() => failure = Some(RunError::Startup(e)),
            ended = server.ended_unexpectedly() => {
                error!("{ended}; draining.");
                failure = Some(ended.into());
            }
        }
        // 1-3. Not ready at once, keep serving through the drain delay, stop
        //    accepting, and let in-flight requests finish.
        let timings = DrainTimings {
            delay: state.settings.server.drain_delay(),
            timeout: state.settings.server.drain_timeout(),
        };
        let drained = obleth_service::drain::drain(
            &state.health,
            timings,
            failure.is_some(),
            &mut [&mut server],
            async {},
        )
        .await;
        if !drained {
            warn!("Drain timeout passed; ending open connections.");
            server.abort();
        }
        // 4. Leave the fleet.
        background.cancel();
        obleth_service::node::mark_stopped(&state.pool, &state.node_id, None).await;
        state.pool.close().await;
        info!("Admin stopped.");
        match failure {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}
