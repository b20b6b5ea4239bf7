//! Test support: a gateway in-process on loopback ports, a tiny HTTP client, and
//! helpers for the database mode.

use std::net::SocketAddr;
use std::str::FromStr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use obleth_config::db::keys::{create_key, NewKey};
use obleth_config::migrate::{MigrationSet, Mode, Runner, RunnerOptions};
use obleth_config::model::ApiKey;
use obleth_config::DatabaseUrl;
use obleth_gateway::settings::{
    GatewaySettings, KeyConfig, ProviderConfig, RouteConfig, TargetConfig,
};
use obleth_gateway::Gateway;
use secrecy::ExposeSecret;
use serde_json::Value;
use sqlx::postgres::PgConnectOptions;
use sqlx::PgPool;
use tokio::task::JoinHandle;

pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

pub fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// A gateway running in this process.
pub struct TestGateway {
    pub proxy: SocketAddr,
    pub ops: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: JoinHandle<Result<(), obleth_gateway::RunError>>,
}

impl TestGateway {
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
        wait_until(Duration::from_secs(30), "gateway ready", || async {
            get(&self.ops_url("/readyz")).await.0 == 200
        })
        .await;
    }

    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        Ok(self.task.await??)
    }
}

/// Polls `check` every 20 ms until it holds; panics naming `what` after `limit`.
pub async fn wait_until<F, Fut>(limit: Duration, what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if check().await {
            return started.elapsed();
        }
        assert!(started.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A response read whole.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// Asserts OpenAI's error shape and answers the code.
    pub fn error_code(&self) -> String {
        let v = self.json();
        let error = v
            .get("error")
            .unwrap_or_else(|| panic!("no error object: {v}"));
        assert!(error["message"].is_string(), "{v}");
        assert!(error["type"].is_string(), "{v}");
        assert!(error.get("param").is_some(), "{v}");
        error["code"]
            .as_str()
            .unwrap_or_else(|| panic!("no code: {v}"))
            .to_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

pub async fn get(url: &str) -> (u16, Value) {
    let a = request(http::Method::GET, url, &[], Bytes::new()).await;
    let v = serde_json::from_slice(&a.body).unwrap_or(Value::Null);
    (a.status, v)
}

pub async fn request(
    method: http::Method,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Answer {
    let response = send(method, url, headers, body).await;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    Answer {
        status,
        headers,
        body,
    }
}

pub async fn send(
    method: http::Method,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> http::Response<Incoming> {
    let mut builder = http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    client()
        .request(builder.body(Full::new(body.into())).unwrap())
        .await
        .unwrap()
}

/// A chat request with `key`.
pub async fn chat(gw: &TestGateway, key: &str, model: &str) -> Answer {
    let body = serde_json::json!({"model": model, "messages": [{"role": "user", "content": "hello there"}]});
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

/// Embedded settings: one mock provider and route `m`.
pub fn embedded_settings(keys: Vec<KeyConfig>) -> GatewaySettings {
    let mut s = GatewaySettings::default();
    s.server.drain_delay_secs = 0;
    s.server.drain_timeout_secs = 5;
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
        expires_at: None,
        revoked: false,
    };
    edit(&mut config);
    (config, generated.secret.expose_secret().to_owned())
}

/// A fresh database with the schema applied, and a pool on it.
pub async fn migrated_database(url: &str) -> PgPool {
    Runner::new(MigrationSet::embedded().unwrap(), RunnerOptions::default())
        .run(&PgConnectOptions::from_str(url).unwrap(), Mode::Up)
        .await
        .unwrap();
    PgPool::connect(url).await.unwrap()
}

/// Database-mode settings on `url`, with a mock provider route `m` stored in the database.
pub async fn database_settings(url: &str, pool: &PgPool) -> GatewaySettings {
    use obleth_config::db::catalog::{create_provider, create_route, NewProvider};
    use obleth_config::model::{ProviderKind, RouteTarget};
    if obleth_config::db::catalog::load_catalog(pool)
        .await
        .unwrap()
        .routes
        .is_empty()
    {
        create_provider(
            pool,
            &NewProvider {
                name: "mock".to_owned(),
                kind: ProviderKind::Mock,
                base_url: "mock://".to_owned(),
                credential_ref: None,
                timeout_ms: 5_000,
            },
        )
        .await
        .unwrap();
        create_route(
            pool,
            "m",
            &[RouteTarget {
                provider: "mock".to_owned(),
                upstream_model: None,
            }],
        )
        .await
        .unwrap();
    }
    let mut s = GatewaySettings::default();
    s.database.url = Some(DatabaseUrl::new(url));
    s.server.drain_delay_secs = 0;
    s.server.drain_timeout_secs = 5;
    s.server.heartbeat_secs = 1;
    s.cache.poll_interval_secs = 2;
    s.usage.flush_interval_ms = 50;
    s
}

/// Creates a key through the write path the admin API uses.
pub async fn db_key(pool: &PgPool, edit: impl FnOnce(&mut NewKey)) -> (ApiKey, String) {
    let mut new = NewKey {
        name: "test".to_owned(),
        owner: None,
        allowed_models: Vec::new(),
        rpm_limit: None,
        tpm_limit: None,
        token_budget: None,
        expires_at: None,
    };
    edit(&mut new);
    let (key, generated) = create_key(pool, &new).await.unwrap();
    (key, generated.secret.expose_secret().to_owned())
}

/// The value of an unlabelled or first-labelled metric in the text format; 0 when absent.
pub async fn metric(gw: &TestGateway, name: &str) -> f64 {
    let a = request(
        http::Method::GET,
        &gw.ops_url("/metrics"),
        &[],
        Bytes::new(),
    )
    .await;
    let text = String::from_utf8_lossy(&a.body).into_owned();
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
