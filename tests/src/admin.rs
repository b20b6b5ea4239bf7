//! An `obleth-admin` process for a scenario: started with a settings file on
//! a free port, ready-waited, and driven over its HTTP API as an operator
//! would (keys created and revoked).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::Bytes;
use http::Method;
use obleth_testkit::http::request;
use obleth_testkit::proc::{bin, command, free_port};

/// The bearer token every scenario admin accepts.
pub const ADMIN_TOKEN: &str = "chaos-admin-token-0123456789";

/// A running admin.
#[derive(Debug)]
pub struct AdminProc {
    pub port: u16,
    log: PathBuf,
    child: tokio::process::Child,
}

impl AdminProc {
    /// Starts `obleth-admin` named `name` on `database_url` (settings file and
    /// log in `dir`) and waits until `/readyz` answers 200.
    pub async fn start(dir: &Path, name: &str, database_url: &str) -> anyhow::Result<AdminProc> {
        let port = free_port();
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(
            &config,
            format!(
                "[server]\nlisten = \"127.0.0.1:{port}\"\ndrain_delay_secs = 0\nnode_id = \"{name}\"\n\n\
                 [database]\nacquire_timeout_ms = 2000\n\n\
                 [auth]\ntokens = [\"{ADMIN_TOKEN}\"]\n"
            ),
        )?;
        let log = dir.join(format!("{name}.log"));
        let child = command(bin("obleth-admin"))
            .arg("--config")
            .arg(&config)
            .env("OBLETH_DATABASE__URL", database_url)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(&log)?))
            .spawn()
            .context("cannot start obleth-admin")?;
        let admin = AdminProc { port, log, child };
        obleth_testkit::poll::wait_ready(
            SocketAddr::from(([127, 0, 0, 1], port)),
            Duration::from_secs(60),
        )
        .await
        .with_context(|| format!("{name} not ready; log:\n{}", admin.log()))?;
        Ok(admin)
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Creates a key named `name` with no limits; answers its id and the
    /// whole key.
    pub async fn create_key(&self, name: &str) -> anyhow::Result<(String, String)> {
        let body = serde_json::json!({ "name": name }).to_string();
        let answer = request(
            Method::POST,
            &self.url("/api/v1/keys"),
            &[
                ("authorization", &format!("Bearer {ADMIN_TOKEN}")),
                ("content-type", "application/json"),
            ],
            body,
        )
        .await;
        if answer.status != 201 && answer.status != 200 {
            bail!(
                "creating key {name} answered {}: {}; log:\n{}",
                answer.status,
                answer.text(),
                self.log()
            );
        }
        let v = answer.json();
        let id = v["key"]["id"].as_str().context("no key.id")?.to_owned();
        let secret = v["secret"].as_str().context("no secret")?.to_owned();
        Ok((id, secret))
    }

    /// Revokes key `id`.
    pub async fn revoke_key(&self, id: &str) -> anyhow::Result<()> {
        let answer = request(
            Method::POST,
            &self.url(&format!("/api/v1/keys/{id}/revoke")),
            &[("authorization", &format!("Bearer {ADMIN_TOKEN}"))],
            Bytes::new(),
        )
        .await;
        if answer.status != 200 {
            bail!(
                "revoking key {id} answered {}: {}; log:\n{}",
                answer.status,
                answer.text(),
                self.log()
            );
        }
        Ok(())
    }

    /// The admin's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}
