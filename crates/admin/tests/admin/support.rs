//! Admin test support: an admin (and, where a test needs one, a gateway)
//! in-process on loopback ports against a fresh database. The HTTP client,
//! polling, metrics parsing and database fixtures are `obleth-testkit`'s,
//! re-exported here so each test imports one module.

use std::net::SocketAddr;
use std::time::Duration;

use http::Method;
use obleth_admin::{Admin, AdminSettings};
use obleth_config::DatabaseUrl;
use obleth_gateway::{Gateway, GatewaySettings};
use secrecy::SecretString;
use serde_json::Value;
use sqlx::PgPool;
use tokio::task::JoinHandle;

pub use obleth_testkit::http::{request, request_from, Answer};
pub use obleth_testkit::poll::{wait_for, wait_until};

/// The admin token every test admin accepts.
pub const TOKEN: &str = "test-admin-token-0123456789";

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
        obleth_testkit::poll::wait_ready(self.addr, Duration::from_secs(60))
            .await
            .expect("admin ready");
    }

    /// The admin's `/metrics` text.
    pub async fn metrics(&self) -> String {
        request(Method::GET, &self.url("/metrics"), &[], "")
            .await
            .text()
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

    /// Calls the API with the test token and `body` sent as JSON text as it
    /// is, for numbers no `serde_json::Value` holds (`1e400`).
    pub async fn call_raw(&self, method: Method, path: &str, body: &str) -> Answer {
        let auth = format!("Bearer {TOKEN}");
        let headers = [
            ("authorization", auth.as_str()),
            ("content-type", "application/json"),
        ];
        request(method, &self.url(path), &headers, body.to_owned()).await
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
        s.server.drain_timeout_secs = Some(5);
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
        obleth_testkit::poll::wait_ready(ops_addr, Duration::from_secs(30))
            .await
            .expect("gateway ready");
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
    obleth_testkit::db::migrate(url)
        .await
        .unwrap()
        .close()
        .await;
}

/// Waits until node `node_id` is registered and ready in the `nodes` table.
pub async fn wait_node_ready(pool: &PgPool, node_id: &str) {
    wait_until(
        Duration::from_secs(10),
        "the node registered and ready",
        || async {
            let ready: Option<bool> =
                sqlx::query_scalar("SELECT ready FROM nodes WHERE node_id = $1")
                    .bind(node_id)
                    .fetch_optional(pool)
                    .await
                    .unwrap();
            ready == Some(true)
        },
    )
    .await;
}
