//! Test support: an admin (and, where a test needs one, a gateway) in-process
//! on loopback ports against a fresh database, and a tiny HTTP client.

use std::net::SocketAddr;
use std::str::FromStr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Method;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use obleth_admin::{Admin, AdminSettings};
use obleth_config::migrate::{MigrationSet, Mode, Runner, RunnerOptions};
use obleth_config::DatabaseUrl;
use obleth_gateway::{Gateway, GatewaySettings};
use secrecy::SecretString;
use serde_json::Value;
use sqlx::postgres::PgConnectOptions;
use sqlx::PgPool;
use tokio::task::JoinHandle;

/// The admin token every test admin accepts.
pub const TOKEN: &str = "test-admin-token-0123456789";

pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

pub fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Admin settings on `url`: one token, no drain delay, a fast heartbeat.
pub fn admin_settings(url: &str) -> AdminSettings {
    let mut s = AdminSettings::default();
    s.database.url = Some(DatabaseUrl::new(url));
    s.auth.tokens = vec![SecretString::from(TOKEN)];
    s.server.listen = "127.0.0.1:0".parse().unwrap();
    s.server.drain_delay_secs = 0;
    s.server.drain_timeout_secs = 5;
    s.server.heartbeat_secs = 1;
    s.migrations.retry_backoff_ms = 50;
    s
}

/// An admin running in this process.
pub struct TestAdmin {
    pub addr: SocketAddr,
    pub node_id: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: JoinHandle<Result<(), obleth_admin::RunError>>,
}

impl TestAdmin {
    pub async fn start(settings: AdminSettings) -> TestAdmin {
        let listener = tokio::net::TcpListener::bind(settings.server.listen)
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let admin = Admin::build(settings).await.unwrap();
        let node_id = admin.state.node_id.clone();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(admin.run(listener, async move {
            let _ = rx.await;
        }));
        TestAdmin {
            addr,
            node_id,
            stop: Some(tx),
            task,
        }
    }

    /// An admin on a fresh, empty database, ready (it migrated it at start).
    pub async fn on_fresh_database() -> (TestAdmin, obleth_testkit::TestDb, PgPool) {
        let db = obleth_testkit::fresh_database().await.unwrap();
        let admin = TestAdmin::start(admin_settings(&db.url)).await;
        admin.wait_ready().await;
        let pool = PgPool::connect(&db.url).await.unwrap();
        (admin, db, pool)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Polls `/readyz` until it answers 200 (bounded).
    pub async fn wait_ready(&self) {
        wait_until(Duration::from_secs(60), "admin ready", || async {
            request(Method::GET, &self.url("/readyz"), &[], "")
                .await
                .status
                == 200
        })
        .await;
    }

    /// Calls the API with the test token; a non-empty `body` is sent as JSON.
    pub async fn call(&self, method: Method, path: &str, body: Value) -> Answer {
        let auth = format!("Bearer {TOKEN}");
        let mut headers = vec![("authorization", auth.as_str())];
        let body = if body.is_null() {
            String::new()
        } else {
            headers.push(("content-type", "application/json"));
            body.to_string()
        };
        request(method, &self.url(path), &headers, body).await
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.call(Method::GET, path, Value::Null).await
    }

    /// Stops the admin (as on SIGTERM) and answers how its run ended.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        Ok(self.task.await??)
    }

    /// Waits for the run to end by itself (a fatal start-up error).
    pub async fn exited(self, limit: Duration) -> anyhow::Result<()> {
        Ok(tokio::time::timeout(limit, self.task)
            .await
            .expect("the admin should have exited")??)
    }
}

/// A gateway in this process, in database mode on `url`.
pub struct TestGateway {
    pub proxy: SocketAddr,
    pub ops: SocketAddr,
    pub node_id: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: JoinHandle<Result<(), obleth_gateway::RunError>>,
}

impl TestGateway {
    pub async fn start(url: &str) -> TestGateway {
        let mut s = GatewaySettings::default();
        s.database.url = Some(DatabaseUrl::new(url));
        s.server.listen = "127.0.0.1:0".parse().unwrap();
        s.server.ops_listen = "127.0.0.1:0".parse().unwrap();
        s.server.drain_delay_secs = 0;
        s.server.drain_timeout_secs = 5;
        s.server.heartbeat_secs = 1;
        s.cache.poll_interval_secs = 2;
        s.usage.flush_interval_ms = 50;
        let proxy = tokio::net::TcpListener::bind(s.server.listen)
            .await
            .unwrap();
        let ops = tokio::net::TcpListener::bind(s.server.ops_listen)
            .await
            .unwrap();
        let (proxy_addr, ops_addr) = (proxy.local_addr().unwrap(), ops.local_addr().unwrap());
        let gateway = Gateway::build(s, None).await.unwrap();
        let node_id = gateway.state.node_id.clone();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(gateway.run(proxy, ops, async move {
            let _ = rx.await;
        }));
        let gw = TestGateway {
            proxy: proxy_addr,
            ops: ops_addr,
            node_id,
            stop: Some(tx),
            task,
        };
        wait_until(Duration::from_secs(30), "gateway ready", || async {
            request(Method::GET, &format!("http://{ops_addr}/readyz"), &[], "")
                .await
                .status
                == 200
        })
        .await;
        gw
    }

    pub fn ops_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.ops)
    }

    /// A chat request with `key` for model `model`.
    pub async fn chat(&self, key: &str, model: &str) -> Answer {
        let body =
            serde_json::json!({"model": model, "messages": [{"role": "user", "content": "hello"}]});
        request(
            Method::POST,
            &format!("http://{}/v1/chat/completions", self.proxy),
            &[
                ("authorization", &format!("Bearer {key}")),
                ("content-type", "application/json"),
            ],
            body.to_string(),
        )
        .await
    }

    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        Ok(self.task.await??)
    }
}

/// Creates provider `mock` and route `m` through the API.
pub async fn mock_route(admin: &TestAdmin) {
    let p = admin
        .call(
            Method::POST,
            "/api/v1/providers",
            serde_json::json!({"name": "mock", "kind": "mock"}),
        )
        .await;
    assert_eq!(p.status, 201, "{}", p.text());
    let r = admin
        .call(
            Method::POST,
            "/api/v1/routes",
            serde_json::json!({"model": "m", "targets": [{"provider": "mock"}]}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
}

/// Applies the embedded migrations, as `obleth-migrator up` would.
pub async fn migrate(url: &str) {
    Runner::new(MigrationSet::embedded().unwrap(), RunnerOptions::default())
        .run(&PgConnectOptions::from_str(url).unwrap(), Mode::Up)
        .await
        .unwrap();
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
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Asserts the admin's error shape and answers `(code, field)`.
    pub fn error(&self) -> (String, Option<String>) {
        let v = self.json();
        let e = v.get("error").unwrap_or_else(|| panic!("no error: {v}"));
        assert!(e["message"].is_string(), "{v}");
        assert!(e.get("field").is_some(), "{v}");
        (
            e["code"]
                .as_str()
                .unwrap_or_else(|| panic!("{v}"))
                .to_owned(),
            e["field"].as_str().map(str::to_owned),
        )
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

pub async fn request(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Answer {
    let mut builder = http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    let response = client()
        .request(builder.body(Full::new(body.into())).unwrap())
        .await
        .unwrap();
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

/// Polls `check` every 20 ms until it answers `Some`; panics naming `what` after `limit`.
pub async fn wait_for<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(started.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Like [`request`], from the local address `from` (any of 127.0.0.0/8 on
/// loopback), so tests can play several clients.
pub async fn request_from(
    from: std::net::IpAddr,
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
) -> Answer {
    let mut connector = HttpConnector::new();
    connector.set_local_address(Some(from));
    let client: HttpClient = Client::builder(TokioExecutor::new()).build(connector);
    let mut builder = http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    let response = client
        .request(builder.body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap();
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

/// The value of an unlabelled counter in a `/metrics` text; 0 when absent.
pub fn counter(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}
