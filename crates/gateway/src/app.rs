//! Assembly and lifecycle: the routers, the background tasks, and the drain on
//! shutdown (not ready at once, keep serving for `drain_delay`, stop accepting,
//! let in-flight requests and streams finish within `drain_timeout`, flush
//! usage, exit).

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::routing::{get, post};
use axum::Router;
use obleth_config::db::DbError;
use obleth_service::drain::DrainTimings;
use obleth_service::node::Heartbeat;
use obleth_service::{Listener, ServerEnded};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::catalog::SharedCatalog;
use crate::embedded::EmbeddedError;
use crate::health::Health;
use crate::keycache::KeyCache;
use crate::memcheck::{self, WouldNotFit};
use crate::metrics::Metrics;
use crate::pooler::PoolerRefused;
use crate::quota::Quota;
use crate::settings::GatewaySettings;
use crate::state::{AppState, InFlight, Inner};
use crate::upstream::Upstream;
use crate::warmup::IncompatibleSchema;
use crate::{embedded, feed, ops, proxy, usage, warmup};

/// After the drain timeout: how long ended streams get to record themselves.
pub const STREAM_CUT_GRACE: Duration = Duration::from_secs(5);
/// At exit: how long the usage writer may retry its final flush.
pub const USAGE_FINAL_FLUSH: Duration = Duration::from_secs(10);

/// The proxy routes. The one layer marks answers `Connection: close` while
/// draining, so keep-alive clients reconnect (to a ready node) instead of
/// sending on a connection that is about to close. Limits and timeouts are
/// applied in the handler so every refusal has OpenAI's error shape.
pub fn proxy_router(state: AppState) -> Router {
    let draining = state.health.clone();
    Router::new()
        .route(
            "/v1/chat/completions",
            post(proxy::chat_completions).fallback(proxy::method_not_allowed),
        )
        .route(
            "/v1/completions",
            post(proxy::completions).fallback(proxy::method_not_allowed),
        )
        .route(
            "/v1/embeddings",
            post(proxy::embeddings).fallback(proxy::method_not_allowed),
        )
        .route(
            "/v1/responses",
            post(proxy::responses).fallback(proxy::method_not_allowed),
        )
        .route(
            "/v1/models",
            get(proxy::models).fallback(proxy::method_not_allowed),
        )
        .route(
            "/v1/messages",
            post(proxy::messages)
                .fallback(proxy::method_not_allowed)
                .layer(axum::middleware::map_response(
                    crate::protocol::anthropic_error_response,
                )),
        )
        .fallback(proxy::not_found)
        .layer(axum::middleware::map_response(
            move |mut response: axum::response::Response| {
                let draining = draining.draining();
                async move {
                    if draining {
                        response.headers_mut().insert(
                            http::header::CONNECTION,
                            http::HeaderValue::from_static("close"),
                        );
                    }
                    response
                }
            },
        ))
        .with_state(state)
}

/// Why a gateway could not be built.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The pool could not be set up from `[database]` (never the password).
    #[error(transparent)]
    Pool(#[from] DbError),
    /// Embedded mode: the file's keys, providers or routes.
    #[error(transparent)]
    Embedded(#[from] EmbeddedError),
}

/// Why a running gateway stopped with an error, after its drain: the
/// process must exit non-zero.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The database's schema can never suit this build.
    #[error(transparent)]
    Schema(#[from] IncompatibleSchema),
    /// The key store would not fit the cgroup's memory limit.
    #[error(transparent)]
    Memory(#[from] WouldNotFit),
    /// A listener's server ended on its own.
    #[error(transparent)]
    Server(#[from] ServerEnded),
    /// A database URL leads to a pooler the gateway cannot work through.
    #[error(transparent)]
    Pooler(#[from] PoolerRefused),
    /// The proxy's worker threads (`server.workers`) could not be started.
    #[error("cannot start the proxy's worker threads (server.workers): {0}")]
    Workers(std::io::Error),
}

/// A gateway with its state built and its background work not yet started.
#[derive(Debug)]
pub struct Gateway {
    pub state: AppState,
    config_file: Option<PathBuf>,
    usage_stop: CancellationToken,
    usage_task: tokio::task::JoinHandle<()>,
    /// The cgroup memory limit, read once at build (see `memcheck`).
    memory_limit: Option<u64>,
    /// Connections that need a session of their own (the change feed's
    /// LISTEN): `database.direct_url`, else `database.url`.
    session_pool: Option<sqlx::PgPool>,
}

impl Gateway {
    /// Builds the state. In embedded mode the file's keys and routes are loaded
    /// here; with a database nothing is contacted yet.
    pub async fn build(
        settings: GatewaySettings,
        config_file: Option<PathBuf>,
    ) -> Result<Gateway, StartError> {
        let metrics = Metrics::new();
        let memory_limit = memcheck::limit();
        memcheck::warn_if_max_keys_exceeds(settings.cache.max_keys, memory_limit);
        let (pool, session_pool) = if settings.uses_database() {
            (
                Some(obleth_config::db::connect_pool(&settings.database, "obleth-gateway").await?),
                Some(obleth_config::db::connect_session_pool(
                    &settings.database,
                    "obleth-gateway feed",
                )?),
            )
        } else {
            (None, None)
        };
        let usage_stop = CancellationToken::new();
        let (sink, usage_task) = usage::start(
            pool.clone(),
            &settings.usage,
            metrics.clone(),
            usage_stop.clone(),
            USAGE_FINAL_FLUSH,
        );
        let node_id = settings
            .server
            .node_id
            .clone()
            .unwrap_or_else(|| obleth_config::process::default_node_id("gateway"));
        let state = AppState::new(Inner {
            keys: KeyCache::new(&settings.cache),
            catalog: SharedCatalog::default(),
            prices: Default::default(),
            upstream: Upstream::from_settings(&settings.egress, &settings.upstream),
            quota: Quota::new(settings.limits.enabled, pool.is_some()),
            usage: sink,
            metrics,
            health: Health::default(),
            pool,
            node_id,
            in_flight: InFlight::default(),
            maintenance: RwLock::new(None),
            cut_streams: CancellationToken::new(),
            settings,
        });
        if state.pool.is_none() {
            embedded::load(&state, &state.settings)?;
            state.health.set_schema(true, "embedded mode: no schema");
            state.health.set_warmed();
        }
        Ok(Gateway {
            state,
            config_file,
            usage_stop,
            usage_task,
            memory_limit,
            session_pool,
        })
    }

    /// Serves until `shutdown` resolves, then drains. Answers an error when the
    /// database's schema is incompatible with this build or a listener's
    /// server ended on its own (the process must exit non-zero).
    pub async fn run(
        self,
        proxy_listener: TcpListener,
        ops_listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), RunError> {
        let state = self.state.clone();
        let background = CancellationToken::new();
        let server = &state.settings.server;
        let (mut proxy_limits, mut ops_limits) = (server.proxy_limits(), server.ops_limits());
        // A proxied connection holds its upstream connection's descriptor
        // too while a request is in flight.
        obleth_service::server::fit_caps_to_fd_limit(&mut [
            ("server.max_connections", &mut proxy_limits, 2),
            ("server.ops_max_connections", &mut ops_limits, 1),
        ]);
        let mut ops_server = obleth_service::serve(
            Listener {
                name: "ops",
                listener: ops_listener,
                limits: ops_limits,
                nodelay: false,
                metrics: state.metrics.connections.clone(),
            },
            ops::router(state.clone()),
        );
        let (fatal_tx, mut fatal_rx) = tokio::sync::mpsc::channel::<RunError>(1);
        tokio::spawn(crate::catalog::watch_credentials(
            state.catalog.clone(),
            state.settings.egress.clone(),
            Duration::from_secs(state.settings.cache.credential_poll_secs),
            background.clone(),
        ));
        match state.pool.clone().zip(self.session_pool.clone()) {
            Some((pool, session_pool)) => {
                tokio::spawn(start_with_database(
                    state.clone(),
                    pool,
                    session_pool,
                    self.memory_limit,
                    background.clone(),
                    fatal_tx,
                ));
            }
            None => {
                drop(fatal_tx);
                tokio::spawn(crate::quota::sync::housekeep_local(
                    state.quota.clone(),
                    background.clone(),
                ));
                tokio::spawn(embedded::reload_on_sighup(
                    state.clone(),
                    self.config_file.clone(),
                    background.clone(),
                ));
            }
        }
        // TCP_NODELAY on the proxy: SSE chunks are small; without it each
        // waits for the client's delayed ACK (about 40 ms per first token).
        let workers = state.settings.server.proxy_workers();
        let mut proxy_server = obleth_service::server::serve_sharded(
            Listener {
                name: "proxy",
                listener: proxy_listener,
                limits: proxy_limits,
                nodelay: true,
                metrics: state.metrics.connections.clone(),
            },
            proxy_router(state.clone()),
            workers,
        )
        .map_err(RunError::Workers)?;
        info!(node_id = %state.node_id, workers, "Gateway serving.");

        let mut failure = None;
        tokio::pin!(shutdown);
        tokio::select! {
            _ = &mut shutdown => info!("Shutdown requested; draining."),
            Some(e) = fatal_rx.recv() => failure = Some(e),
            ended = proxy_server.ended_unexpectedly() => {
                error!("{ended}; draining.");
                failure = Some(ended.into());
            }
            ended = ops_server.ended_unexpectedly() => {
                error!("{ended}; draining.");
                failure = Some(ended.into());
            }
        }
        // 1-3. Not ready at once, keep serving through the drain delay (the
        //    proxy marks every answer `Connection: close`), stop accepting,
        //    and let in-flight requests and streams finish.
        let timings = DrainTimings {
            delay: state.settings.server.drain_delay(),
            timeout: state.settings.server.drain_timeout(),
        };
        let drained = obleth_service::drain::drain(
            state.health.shared(),
            timings,
            failure.is_some(),
            &mut [&mut proxy_server],
            state.in_flight.wait_idle(),
        )
        .await;
        if !drained {
            // 4. Past the drain timeout: end open streams; each is recorded and counted.
            warn!(
                in_flight = state.in_flight.count(),
                "Drain timeout passed; ending open streams."
            );
            state.cut_streams.cancel();
            let _ = tokio::time::timeout(STREAM_CUT_GRACE, state.in_flight.wait_idle()).await;
            proxy_server.abort();
        }
        background.cancel();
        // 5. Flush usage, fold it into the rollups, then leave the fleet.
        self.usage_stop.cancel();
        if let Err(e) = self.usage_task.await {
            error!(error = %e, "Usage writer task failed.");
        }
        if let Some(pool) = &state.pool {
            // The writer's last batches, into the rollups before leaving.
            crate::fold::final_fold(pool).await;
            // What this process dropped, shutdown included, goes with the
            // stop: past this point no scrape reaches the pod.
            let dropped = usage::dropped_by_reason(&state.metrics);
            obleth_service::node::mark_stopped(pool, &state.node_id, Some(&dropped)).await;
        }
        ops_server.stop_accepting();
        ops_server.finished().await;
        info!("Gateway stopped.");
        match failure {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// Schema check, memory check, warm-up, then the feed, heartbeat and quota
/// sync.
async fn start_with_database(
    state: AppState,
    pool: sqlx::PgPool,
    session_pool: sqlx::PgPool,
    memory_limit: Option<u64>,
    stop: CancellationToken,
    fatal: tokio::sync::mpsc::Sender<RunError>,
) {
    let heartbeat = Heartbeat {
        service: "gateway",
        node_id: state.node_id.clone(),
        pool: pool.clone(),
        health: state.health.shared().clone(),
        ready: {
            let health = state.health.clone();
            Arc::new(move || health.ready())
        },
        every: Duration::from_secs(state.settings.server.heartbeat_secs),
        wake: None,
        // The feed says whether the database answers: it knows whether the
        // key cache is current, which is what `degraded` reports.
        tracks_database: false,
    };
    // Before anything relies on them: a pooler that mixes up prepared
    // statements, or a LISTEN that would never hear a notification, stops the
    // gateway here with the setting to change, instead of a feed that hangs.
    if let Err(e) = crate::pooler::check(&state, &pool, &session_pool, &stop).await {
        error!("Refusing to start: {e}");
        let _ = fatal.send(e.into()).await;
        return;
    }
    tokio::spawn(heartbeat.run(stop.clone()));
    if let Err(e) = warmup::wait_for_schema(&state, &pool, &stop).await {
        error!("Refusing to start: {e}");
        let _ = fatal.send(e.into()).await;
        return;
    }
    // LISTEN first, then read the change log's high-water mark and the keys:
    // a change made during the warm-up is both notified and replayed.
    let (mark, listener) = loop {
        if stop.is_cancelled() {
            return;
        }
        let listener = match feed::connect(&session_pool).await {
            Ok(l) => l,
            Err(e) => {
                warn!(error = %e, "Cannot LISTEN for changes; retrying.");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        // Before any key is loaded: keys that would not fit the memory limit
        // stop the gateway here, with the figures, rather than get it killed
        // half-way through the warm-up.
        let active = match obleth_config::db::key_store::count_active_keys(&pool).await {
            Ok(n) => u64::try_from(n).unwrap_or(0),
            Err(e) => {
                warn!(error = %e, "Cannot count the active keys; retrying.");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if let Err(e) = memcheck::check(active, state.settings.cache.max_keys, memory_limit) {
            error!("Refusing to start: {e}");
            let _ = fatal.send(e.into()).await;
            return;
        }
        match warmup::warm(&state, &pool, active).await {
            Ok(mark) => break (mark, listener),
            Err(e) => {
                warn!(error = %e, "Warm-up failed; retrying.");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    state.health.set_warmed();
    state.health.feed_confirmed();
    // On the direct URL: retention detaches partitions outside a transaction.
    tokio::spawn(crate::ledger::upkeep(
        session_pool.clone(),
        state.settings.usage.clone(),
        state.metrics.clone(),
        stop.clone(),
    ));
    // On the query pool: folding is short transactions, pooler-safe.
    tokio::spawn(crate::fold::run(pool.clone(), stop.clone()));
    tokio::spawn(crate::quota::sync::run(
        state.quota.clone(),
        pool.clone(),
        state.metrics.clone(),
        state.settings.limits.sync_interval(),
        stop.clone(),
    ));
    let poll = Duration::from_secs(state.settings.cache.poll_interval_secs);
    feed::run(state, pool, session_pool, mark, poll, stop, Some(listener)).await;
}
