//! Assembly and lifecycle: the routers, the background tasks, and the drain on
//! shutdown (not ready at once, keep serving for `drain_delay`, stop accepting,
//! let in-flight requests and streams finish within `drain_timeout`, flush
//! usage, exit).

use std::future::Future;
use std::path::PathBuf;
use std::sync::RwLock;
use std::time::Duration;

use axum::routing::{get, post};
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::budget::Budgets;
use crate::catalog::SharedCatalog;
use crate::health::Health;
use crate::keycache::KeyCache;
use crate::metrics::Metrics;
use crate::ratelimit::RateLimiter;
use crate::settings::GatewaySettings;
use crate::state::{AppState, InFlight, Inner};
use crate::upstream::Upstream;
use crate::{embedded, feed, node, ops, proxy, usage, warmup};

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
            "/v1/models",
            get(proxy::models).fallback(proxy::method_not_allowed),
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

/// A gateway with its state built and its background work not yet started.
#[derive(Debug)]
pub struct Gateway {
    pub state: AppState,
    config_file: Option<PathBuf>,
    usage_stop: CancellationToken,
    usage_task: tokio::task::JoinHandle<()>,
}

impl Gateway {
    /// Builds the state. In embedded mode the file's keys and routes are loaded
    /// here; with a database nothing is contacted yet.
    pub async fn build(
        settings: GatewaySettings,
        config_file: Option<PathBuf>,
    ) -> anyhow::Result<Gateway> {
        let metrics = Metrics::new();
        let pool = if settings.uses_database() {
            Some(obleth_config::db::connect_pool(&settings.database, "obleth-gateway").await?)
        } else {
            None
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
            upstream: Upstream::new(&settings.egress),
            limiter: RateLimiter::default(),
            budgets: Budgets::default(),
            usage: sink,
            metrics,
            health: Health::default(),
            pool,
            node_id,
            in_flight: InFlight::default(),
            maintenance: RwLock::new(None),
            cut_streams: CancellationToken::new(),
            schema_applied: RwLock::new(None),
            settings,
        });
        if state.pool.is_none() {
            embedded::load(&state, &state.settings).map_err(anyhow::Error::msg)?;
            state.health.set_schema(true, "embedded mode: no schema");
            state.health.set_warmed();
        }
        Ok(Gateway {
            state,
            config_file,
            usage_stop,
            usage_task,
        })
    }

    /// Serves until `shutdown` resolves, then drains. Answers an error when the
    /// database's schema is incompatible with this build (the process must exit
    /// non-zero).
    pub async fn run(
        self,
        proxy_listener: TcpListener,
        ops_listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let state = self.state.clone();
        let background = CancellationToken::new();
        let ops_stop = CancellationToken::new();
        let ops_task = {
            let stop = ops_stop.clone();
            let router = ops::router(state.clone());
            tokio::spawn(async move {
                axum::serve(ops_listener, router)
                    .with_graceful_shutdown(stop.cancelled_owned())
                    .await
            })
        };
        let (fatal_tx, mut fatal_rx) = tokio::sync::mpsc::channel::<String>(1);
        match state.pool.clone() {
            Some(pool) => {
                tokio::spawn(start_with_database(
                    state.clone(),
                    pool,
                    background.clone(),
                    fatal_tx,
                ));
            }
            None => {
                drop(fatal_tx);
                tokio::spawn(embedded::reload_on_sighup(
                    state.clone(),
                    self.config_file.clone(),
                    background.clone(),
                ));
            }
        }
        let accept_stop = CancellationToken::new();
        let mut server = {
            let stop = accept_stop.clone();
            let router = proxy_router(state.clone());
            tokio::spawn(async move {
                // TCP_NODELAY: SSE chunks are small; without it each waits for
                // the client's delayed ACK (about 40 ms per first token).
                let listener = axum::serve::ListenerExt::tap_io(proxy_listener, |tcp| {
                    if let Err(e) = tcp.set_nodelay(true) {
                        tracing::debug!(error = %e, "Cannot set TCP_NODELAY.");
                    }
                });
                axum::serve(listener, router)
                    .with_graceful_shutdown(stop.cancelled_owned())
                    .await
            })
        };
        info!(node_id = %state.node_id, "Gateway serving.");

        let mut fatal = None;
        tokio::pin!(shutdown);
        tokio::select! {
            _ = &mut shutdown => info!("Shutdown requested; draining."),
            Some(message) = fatal_rx.recv() => fatal = Some(message),
        }
        // 1. Not ready at once, so load balancers stop sending new requests,
        //    while we keep serving whatever still arrives.
        state.health.start_draining();
        if fatal.is_none() {
            tokio::time::sleep(state.settings.server.drain_delay()).await;
        }
        // 2. Stop accepting; in-flight requests and streams may finish.
        accept_stop.cancel();
        let drain_timeout = state.settings.server.drain_timeout();
        let drained = tokio::time::timeout(drain_timeout, async {
            state.in_flight.wait_idle().await;
            let _ = (&mut server).await;
        })
        .await;
        if drained.is_err() {
            // 3. Past the drain timeout: end open streams; each is recorded and counted.
            warn!(
                in_flight = state.in_flight.count(),
                "Drain timeout passed; ending open streams."
            );
            state.cut_streams.cancel();
            let _ = tokio::time::timeout(STREAM_CUT_GRACE, state.in_flight.wait_idle()).await;
            server.abort();
        }
        background.cancel();
        // 4. Flush usage, then leave the fleet.
        self.usage_stop.cancel();
        if let Err(e) = self.usage_task.await {
            error!(error = %e, "Usage writer task failed.");
        }
        if let Some(pool) = &state.pool {
            node::mark_stopped(&state, pool).await;
        }
        ops_stop.cancel();
        let _ = ops_task.await;
        info!("Gateway stopped.");
        match fatal {
            Some(message) => Err(anyhow::anyhow!(message)),
            None => Ok(()),
        }
    }
}

/// Schema check, warm-up, then the feed, heartbeat and budget refresh.
async fn start_with_database(
    state: AppState,
    pool: sqlx::PgPool,
    stop: CancellationToken,
    fatal: tokio::sync::mpsc::Sender<String>,
) {
    tokio::spawn(node::heartbeat(
        state.clone(),
        pool.clone(),
        Duration::from_secs(state.settings.server.heartbeat_secs),
        stop.clone(),
    ));
    if let Err(e) = warmup::wait_for_schema(&state, &pool, &stop).await {
        error!("Refusing to start: {e}");
        let _ = fatal.send(e.to_string()).await;
        return;
    }
    // LISTEN first, then read the change log's high-water mark and the keys:
    // a change made during the warm-up is both notified and replayed.
    let (seq, listener) = loop {
        if stop.is_cancelled() {
            return;
        }
        let listener = match feed::connect(&pool).await {
            Ok(l) => l,
            Err(e) => {
                warn!(error = %e, "Cannot LISTEN for changes; retrying.");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        match warmup::warm(&state, &pool).await {
            Ok(seq) => break (seq, listener),
            Err(e) => {
                warn!(error = %e, "Warm-up failed; retrying.");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    state.health.set_warmed();
    state.health.feed_confirmed();
    let every = Duration::from_secs(state.settings.cache.budget_refresh_secs);
    tokio::spawn(warmup::refresh_budgets(
        state.clone(),
        pool.clone(),
        every,
        stop.clone(),
    ));
    let poll = Duration::from_secs(state.settings.cache.poll_interval_secs);
    feed::run(state, pool, seq, poll, stop, Some(listener)).await;
}
