//! Gateway test support: a gateway in-process on loopback ports, its settings
//! (embedded or database mode) and keys for its file. The HTTP client,
//! polling, metrics parsing and database fixtures are `obleth-testkit`'s,
//! re-exported here so each test imports one module.

use std::net::SocketAddr;
use std::time::Duration;

use obleth_config::db::keys::NewKey;
use obleth_config::model::{ApiKey, ProviderKind};
use obleth_config::DatabaseUrl;
use obleth_gateway::settings::{
    GatewaySettings, KeyConfig, ProviderConfig, RouteConfig, TargetConfig,
};
use obleth_gateway::Gateway;
use secrecy::ExposeSecret;
use sqlx::PgPool;
use tokio::task::JoinHandle;

pub use obleth_testkit::http::{client, get_json, request, send, Answer, HttpClient};
pub use obleth_testkit::poll::wait_until;

/// A gateway running in this process.
pub struct TestGateway {
    pub proxy: SocketAddr,
    pub ops: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: JoinHandle<Result<(), obleth_gateway::RunError>>,
}

impl TestGateway {
    /// Binds both listeners on `127.0.0.1:0` and runs the gateway; it may not
    /// be ready yet (see [`TestGateway::wait_ready`]).
    pub async fn start(mut settings: GatewaySettings) -> TestGateway {
        settings.server.listen = "127.0.0.1:0".parse().unwrap();
        settings.server.ops_listen = "127.0.0.1:0".parse().unwrap();
        let proxy = tokio::net::TcpListener::bind(settings.server.listen)
            .await
            .unwrap();
        let ops = tokio::net::TcpListener::bind(settings.server.ops_listen)
            .await
            .unwrap();
        let (proxy_addr, ops_addr) = (proxy.local_addr().unwrap(), ops.local_addr().unwrap());
        let gateway = Gateway::build(settings, None).await.unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(gateway.run(proxy, ops, async move {
            let _ = rx.await;
        }));
        TestGateway {
            proxy: proxy_addr,
            ops: ops_addr,
            stop: Some(tx),
            task,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.proxy)
    }

    pub fn ops_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.ops)
    }

    /// Polls `/readyz` until it answers 200 (bounded).
    pub async fn wait_ready(&self) {
        obleth_testkit::poll::wait_ready(self.ops, Duration::from_secs(30))
            .await
            .expect("gateway ready");
    }

    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        Ok(self.task.await??)
    }
}

/// A chat request with `key`.
pub async fn chat(gw: &TestGateway, key: &str, model: &str) -> Answer {
    let body = serde_json::json!({"model": model, "messages": [{"role": "user", "content": "hello there"}]});
    post_chat(gw, key, body).await
}

/// A streamed chat request with `key`, read whole.
pub async fn chat_stream(gw: &TestGateway, key: &str, model: &str) -> Answer {
    let body = serde_json::json!({"model": model, "stream": true, "messages": [{"role": "user", "content": "hello there"}]});
    post_chat(gw, key, body).await
}

/// `body` posted to `/v1/chat/completions` with `key`.
pub async fn post_chat(gw: &TestGateway, key: &str, body: serde_json::Value) -> Answer {
    request(
        http::Method::POST,
        &gw.url("/v1/chat/completions"),
        &[
            ("authorization", &format!("Bearer {key}")),
            ("content-type", "application/json"),
        ],
        body.to_string(),
    )
    .await
}

/// An embedded gateway, ready, with one key and a route `m` to an OpenAI
/// provider `up` at `upstream`; the key's secret.
pub async fn gateway_over(upstream: &obleth_testkit::MockUpstream) -> (TestGateway, String) {
    let (key, secret) = file_key(|_| {});
    let mut settings = embedded_settings(vec![key]);
    settings.providers = vec![openai_provider("up", &upstream.base_url())];
    settings.routes = vec![route("m", &["up"])];
    let gw = TestGateway::start(settings).await;
    gw.wait_ready().await;
    (gw, secret)
}

/// Embedded settings: one mock provider and route `m`.
pub fn embedded_settings(keys: Vec<KeyConfig>) -> GatewaySettings {
    let mut s = GatewaySettings::default();
    s.server.drain_delay_secs = 0;
    s.server.drain_timeout_secs = Some(5);
    s.providers = vec![mock_provider("mock")];
    s.routes = vec![route("m", &["mock"])];
    s.keys = keys;
    s
}

pub fn mock_provider(name: &str) -> ProviderConfig {
    toml::from_str(&format!("name = {name:?}\nkind = \"mock\"\n")).unwrap()
}

pub fn openai_provider(name: &str, base_url: &str) -> ProviderConfig {
    toml::from_str(&format!(
        "name = {name:?}\nkind = \"openai\"\nbase_url = {base_url:?}\ntimeout_ms = 5000\n"
    ))
    .unwrap()
}

pub fn route(model: &str, providers: &[&str]) -> RouteConfig {
    RouteConfig {
        model: model.to_owned(),
        targets: providers
            .iter()
            .map(|p| TargetConfig {
                provider: (*p).to_owned(),
                upstream_model: None,
                weight: 1,
                priority: None,
            })
            .collect(),
    }
}

/// A new key for the embedded file: the config entry and the full key.
pub fn file_key(edit: impl FnOnce(&mut KeyConfig)) -> (KeyConfig, String) {
    let generated = obleth_config::apikey::generate();
    let mut config = KeyConfig {
        name: "test".to_owned(),
        public_id: generated.public_id.clone(),
        secret_sha256: generated
            .secret_hash
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
        owner: None,
        allowed_models: Vec::new(),
        rpm_limit: None,
        tpm_limit: None,
        token_budget: None,
        budget_usd: None,
        budget_period: Default::default(),
        expires_at: None,
        revoked: false,
    };
    edit(&mut config);
    (config, generated.secret.expose_secret().to_owned())
}

/// The database at `url` with the schema applied, and a pool on it.
pub async fn migrated_database(url: &str) -> PgPool {
    obleth_testkit::db::migrate(url).await.unwrap()
}

/// Database-mode settings on `url`, with a mock provider route `m` stored in the database.
pub async fn database_settings(url: &str, pool: &PgPool) -> GatewaySettings {
    if obleth_config::db::catalog::load_catalog(pool)
        .await
        .unwrap()
        .routes
        .is_empty()
    {
        let mock = obleth_testkit::db::provider("mock", ProviderKind::Mock, "mock://");
        obleth_testkit::db::provider_and_route(pool, &mock, "m")
            .await
            .unwrap();
    }
    let mut s = GatewaySettings::default();
    s.database.url = Some(DatabaseUrl::new(url));
    s.server.drain_delay_secs = 0;
    s.server.drain_timeout_secs = Some(5);
    s.server.heartbeat_secs = 1;
    s.cache.poll_interval_secs = 2;
    s.usage.flush_interval_ms = 50;
    s
}

/// Creates a key through the write path the admin API uses.
pub async fn db_key(pool: &PgPool, edit: impl FnOnce(&mut NewKey)) -> (ApiKey, String) {
    obleth_testkit::db::key(pool, edit).await.unwrap()
}

/// The sum of metric `name`'s samples whose labels include `labels`, from
/// the gateway's `/metrics`; 0 when absent.
pub async fn metric(gw: &TestGateway, name: &str, labels: &[(&str, &str)]) -> f64 {
    let text = request(http::Method::GET, &gw.ops_url("/metrics"), &[], "")
        .await
        .text();
    obleth_testkit::metrics::sum(&text, name, labels)
}

/// The data payloads of an OpenAI stream's events.
pub fn chunks(text: &str) -> Vec<String> {
    text.split("\n\n")
        .filter_map(|e| e.trim().strip_prefix("data: ").map(str::to_owned))
        .collect()
}

/// The chunks of an OpenAI stream that ended with `data: [DONE]`, parsed,
/// and the text of their deltas.
#[track_caller]
pub fn done_chunks(text: &str) -> (Vec<serde_json::Value>, String) {
    let events = chunks(text);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "{text}");
    let parsed: Vec<serde_json::Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let content = parsed
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    (parsed, content)
}

/// Waits (10 s at most) until `key` has `count` successful usage rows.
pub async fn wait_for_usage_rows(pool: &PgPool, key: uuid::Uuid, count: usize) {
    wait_until(Duration::from_secs(10), "the usage rows", || {
        let pool = pool.clone();
        async move {
            let n: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM usage_ledger WHERE key_id = $1 AND status = 200",
            )
            .bind(key)
            .fetch_one(&pool)
            .await
            .unwrap();
            n as usize >= count
        }
    })
    .await;
}

/// The prompt and completion tokens of `key`'s successful usage rows, oldest
/// first, once there are `count`.
pub async fn usage_tokens(
    pool: &PgPool,
    key: uuid::Uuid,
    count: usize,
) -> Vec<(Option<i32>, Option<i32>)> {
    wait_for_usage_rows(pool, key, count).await;
    sqlx::query_as(
        "SELECT prompt_tokens, completion_tokens FROM usage_ledger \
         WHERE key_id = $1 AND status = 200 ORDER BY created_at",
    )
    .bind(key)
    .fetch_all(pool)
    .await
    .unwrap()
}
