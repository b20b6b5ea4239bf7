//! A running mock upstream: the router, its lifecycle and what tests ask of it.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::serve::ListenerExt as _;
use axum::Router;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::config::MockConfig;
use super::gate::{gate, MAX_BODY};
use super::handlers;
use super::state::{RecordedRequest, Shared};
use super::{anthropic, aws, azure, bedrock, gemini};

/// How long [`MockUpstream::shutdown`] waits for open requests before it
/// drops them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// A mock OpenAI-compatible provider serving on a local port until shut down
/// or dropped.
#[derive(Debug)]
pub struct MockUpstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl MockUpstream {
    /// Starts a mock on a free port of 127.0.0.1.
    pub async fn start(config: MockConfig) -> anyhow::Result<MockUpstream> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .context("binding the mock upstream to 127.0.0.1")?;
        Self::start_on(listener, config).await
    }

    /// Starts a mock serving `listener`, for a caller that chose the address.
    pub async fn start_on(
        listener: TcpListener,
        config: MockConfig,
    ) -> anyhow::Result<MockUpstream> {
        let addr = listener
            .local_addr()
            .context("reading the mock upstream's address")?;
        let shared = Arc::new(Shared::new(config));
        let stop = CancellationToken::new();
        // Streams are many small writes; without TCP_NODELAY a chunk can wait
        // for the client's delayed acknowledgement.
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let serve = axum::serve(listener, router(Arc::clone(&shared)))
            .with_graceful_shutdown(stop.clone().cancelled_owned());
        let task = tokio::spawn(async move {
            if let Err(err) = serve.await {
                tracing::warn!(error = %err, "Mock upstream stopped serving.");
            }
        });
        Ok(MockUpstream {
            addr,
            shared,
            stop,
            task: Some(task),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The OpenAI base URL, such as `http://127.0.0.1:PORT/v1`. An unspecified
    /// address (`0.0.0.0`) is given as loopback, which reaches it.
    pub fn base_url(&self) -> String {
        let mut addr = self.addr;
        if addr.ip().is_unspecified() {
            addr.set_ip(Ipv4Addr::LOCALHOST.into());
        }
        format!("http://{addr}/v1")
    }

    /// Replaces the config for requests that arrive from now on, and restarts
    /// the `fail_first` count.
    pub fn set_config(&self, config: MockConfig) {
        self.shared.set_config(config);
    }

    pub fn config(&self) -> MockConfig {
        self.shared.config()
    }

    /// How many requests under `/v1` arrived, whatever their answer.
    pub fn requests(&self) -> u64 {
        self.shared.requests()
    }

    /// The mock's root URL, such as `http://127.0.0.1:PORT`: Bedrock's
    /// endpoints are under `/model/`, STS is `/sts`.
    pub fn root_url(&self) -> String {
        self.base_url().trim_end_matches("/v1").to_owned()
    }

    /// How many STS `AssumeRoleWithWebIdentity` calls it answered (not
    /// counted in [`MockUpstream::requests`]).
    pub fn aws_sts_calls(&self) -> u64 {
        self.shared.sts_calls()
    }

    /// The most recent request under `/v1`.
    pub fn last_request(&self) -> Option<RecordedRequest> {
        self.shared.last_request()
    }

    /// Calls of the OAuth token endpoint (`/oauth2/token`), answered or not.
    pub fn token_calls(&self) -> u64 {
        self.shared.oauth.token_calls()
    }

    /// Calls of Google's Security Token Service (`/sts/v1/token`).
    pub fn google_sts_calls(&self) -> u64 {
        self.shared.oauth.sts_calls()
    }

    /// Calls of the metadata server's token URL.
    pub fn metadata_calls(&self) -> u64 {
        self.shared.oauth.metadata_calls()
    }

    /// Makes the next `calls` calls of the token endpoints (any of the
    /// three) answer 503.
    pub fn fail_token_calls(&self, calls: u32) {
        self.shared.oauth.fail_next(calls);
    }

    /// Revokes every token the token endpoints issued so far: the Vertex
    /// AI endpoints answer them 401.
    pub fn revoke_tokens(&self) {
        self.shared.oauth.revoke_all();
    }

    /// The client email of the last valid service-account assertion.
    pub fn last_token_issuer(&self) -> Option<String> {
        self.shared.oauth.last_issuer()
    }

    /// Requests under `/v1` still being answered, streams included.
    pub fn in_flight(&self) -> u64 {
        self.shared.in_flight()
    }

    /// Stops accepting connections and waits for open requests to finish,
    /// for at most five seconds.
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        if let Some(mut task) = self.task.take() {
            if tokio::time::timeout(SHUTDOWN_GRACE, &mut task)
                .await
                .is_err()
            {
                task.abort();
            }
        }
    }
}

impl Drop for MockUpstream {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The routes behind one middleware. The gate wraps the fallback too, so an
/// unknown `/v1` path is counted and recorded like any other request.
fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(handlers::chat_completions))
        .route("/v1/completions", post(handlers::completions))
        .route("/v1/embeddings", post(handlers::embeddings))
        .route("/v1/responses", post(super::responses::responses))
        .route(
            "/v1/messages",
            post(anthropic::messages).with_state(Arc::clone(&shared)),
        )
        .route(
            "/openai/deployments/{deployment}/chat/completions",
            post(azure::chat).with_state(Arc::clone(&shared)),
        )
        .route(
            "/openai/deployments/{deployment}/completions",
            post(azure::completions).with_state(Arc::clone(&shared)),
        )
        .route(
            "/openai/deployments/{deployment}/embeddings",
            post(azure::embeddings).with_state(Arc::clone(&shared)),
        )
        .route(
            "/openai/v1/responses",
            post(azure::responses).with_state(Arc::clone(&shared)),
        )
        .route(
            "/v1beta/models/{call}",
            post(gemini::ai_studio).with_state(Arc::clone(&shared)),
        )
        .route(
            "/v1/projects/{project}/locations/{location}/publishers/google/models/{call}",
            post(gemini::vertex).with_state(Arc::clone(&shared)),
        )
        .route(
            "/model/{model}/{operation}",
            post(bedrock::model).with_state(Arc::clone(&shared)),
        )
        .route("/sts/", post(aws::sts).with_state(Arc::clone(&shared)))
        .route(
            "/oauth2/token",
            post(super::oauth::token).with_state(Arc::clone(&shared)),
        )
        .route(
            "/sts/v1/token",
            post(super::oauth::sts).with_state(Arc::clone(&shared)),
        )
        .route(
            "/computeMetadata/v1/instance/service-accounts/default/token",
            get(super::oauth::metadata).with_state(Arc::clone(&shared)),
        )
        .route("/v1/models", get(handlers::models))
        .route("/health", get(handlers::health))
        .fallback(handlers::not_found)
        .layer(axum::middleware::from_fn_with_state(shared, gate))
        .layer(DefaultBodyLimit::max(MAX_BODY))
}
