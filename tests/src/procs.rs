//! obleth binaries as real processes: start with a settings file, wait until
//! ready, SIGTERM or SIGKILL, and keep their logs for a failing test to show.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};
use obleth_testkit::proc::{command, free_port, signal, Signal};

/// A gateway process with fixed ports, restartable on the same ports.
#[derive(Debug)]
pub struct GatewayProc {
    pub name: String,
    pub port: u16,
    pub ops: u16,
    pub binary: PathBuf,
    pub config: PathBuf,
    /// Empty for a gateway in embedded mode.
    pub database_url: String,
    /// `database.direct_url`, when the query pool's URL is a pooler.
    pub direct_url: Option<String>,
    log: PathBuf,
    child: Option<tokio::process::Child>,
}

impl GatewayProc {
    /// Writes the settings file; `start` runs it.
    pub fn new(
        dir: &Path,
        name: &str,
        binary: PathBuf,
        database_url: &str,
        drain_delay_secs: u64,
    ) -> anyhow::Result<Self> {
        Self::with_settings(dir, name, binary, database_url, drain_delay_secs, "")
    }

    /// Like [`GatewayProc::new`], with `extra` (whole sections) appended to
    /// the settings file.
    pub fn with_settings(
        dir: &Path,
        name: &str,
        binary: PathBuf,
        database_url: &str,
        drain_delay_secs: u64,
        extra: &str,
    ) -> anyhow::Result<Self> {
        let (port, ops) = (free_port(), free_port());
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(
            &config,
            format!(
                "[server]\nlisten = \"127.0.0.1:{port}\"\nops_listen = \"127.0.0.1:{ops}\"\n\
                 drain_delay_secs = {drain_delay_secs}\ndrain_timeout_secs = 30\nnode_id = \"{name}\"\nheartbeat_secs = 1\n\n\
                 [cache]\npoll_interval_secs = 2\n\n[usage]\nflush_interval_ms = 100\n\n\
                 [database]\nmax_connections = 5\nacquire_timeout_ms = 1000\n\n{extra}"
            ),
        )?;
        Ok(GatewayProc {
            name: name.to_owned(),
            port,
            ops,
            binary,
            config,
            database_url: database_url.to_owned(),
            direct_url: None,
            log: dir.join(format!("{name}.log")),
            child: None,
        })
    }

    /// A gateway in embedded mode (no database): the settings file holds the
    /// listeners and `sections` (providers, routes, keys, egress...).
    pub fn embedded(
        dir: &Path,
        name: &str,
        binary: PathBuf,
        sections: &str,
    ) -> anyhow::Result<Self> {
        let (port, ops) = (free_port(), free_port());
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(
            &config,
            format!(
                "[server]\nlisten = \"127.0.0.1:{port}\"\nops_listen = \"127.0.0.1:{ops}\"\n\
                 drain_delay_secs = 0\ndrain_timeout_secs = 30\nnode_id = \"{name}\"\n\n{sections}"
            ),
        )?;
        Ok(GatewayProc {
            name: name.to_owned(),
            port,
            ops,
            binary,
            config,
            database_url: String::new(),
            direct_url: None,
            log: dir.join(format!("{name}.log")),
            child: None,
        })
    }

    /// Drops the settings file's `drain_timeout_secs = 30`, so the gateway
    /// drains for its default: the longest request it allows.
    pub fn with_default_drain(self) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(&self.config)?;
        let without = text.replacen("drain_timeout_secs = 30\n", "", 1);
        if without == text {
            bail!(
                "{}: no drain_timeout_secs line to drop",
                self.config.display()
            );
        }
        std::fs::write(&self.config, without)?;
        Ok(self)
    }

    pub fn start(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let mut cmd = command(&self.binary);
        if let Some(direct) = &self.direct_url {
            cmd.env("OBLETH_DATABASE__DIRECT_URL", direct);
        }
        if self.database_url.is_empty() {
            cmd.env_remove("OBLETH_DATABASE__URL");
        } else {
            cmd.env("OBLETH_DATABASE__URL", &self.database_url);
        }
        let child = cmd
            .arg("--config")
            .arg(&self.config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .with_context(|| format!("cannot start {}", self.binary.display()))?;
        self.child = Some(child);
        Ok(())
    }

    pub async fn wait_ready(&self, limit: Duration) -> anyhow::Result<Duration> {
        obleth_testkit::poll::wait_ready(SocketAddr::from(([127, 0, 0, 1], self.ops)), limit)
            .await
            .with_context(|| format!("{} not ready; log:\n{}", self.name, self.log_tail()))
    }

    /// `http://127.0.0.1:PORT{path}` on the proxy listener.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// `http://127.0.0.1:PORT{path}` on the ops listener.
    pub fn ops_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.ops)
    }

    /// The ops listener's health detail (`/api/v1/health`): status and body.
    pub async fn health(&self) -> (u16, serde_json::Value) {
        obleth_testkit::http::get_json(&format!(
            "http://127.0.0.1:{}{}",
            self.ops,
            obleth_config::ops::paths::HEALTH
        ))
        .await
    }

    fn signal(&self, sig: Signal) -> anyhow::Result<()> {
        signal(self.child.as_ref().context("not running")?, sig)
    }

    pub fn sigterm(&self) -> anyhow::Result<()> {
        self.signal(Signal::Term)
    }

    pub fn sigkill(&self) -> anyhow::Result<()> {
        self.signal(Signal::Kill)
    }

    /// Waits for the process to exit; answers its exit code.
    pub async fn wait_exit(&mut self, limit: Duration) -> anyhow::Result<Option<i32>> {
        let child = self.child.as_mut().context("not running")?;
        let status = tokio::time::timeout(limit, child.wait())
            .await
            .with_context(|| format!("{} did not exit within {limit:?}", self.name))??;
        self.child = None;
        Ok(status.code())
    }

    /// SIGTERM, then wait for a clean exit (code 0).
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        if self.child.is_none() {
            return Ok(());
        }
        self.sigterm()?;
        let code = self.wait_exit(Duration::from_secs(60)).await?;
        if code != Some(0) {
            bail!(
                "{} exited with {code:?}; log:\n{}",
                self.name,
                self.log_tail()
            );
        }
        Ok(())
    }

    /// The whole log of this process so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last 40 lines of the log, without a backtrace's frames (an
    /// error's backtrace would otherwise push its message out).
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let frame = |l: &str| {
            let t = l.trim_start();
            t.starts_with("at ")
                || t.split_once(": ")
                    .is_some_and(|(n, _)| n.parse::<u32>().is_ok())
        };
        let lines: Vec<&str> = text.lines().filter(|l| !frame(l)).collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}
