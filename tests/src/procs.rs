//! obleth binaries as real processes: start with a settings file, wait until
//! ready, SIGTERM or SIGKILL, and keep their logs for a failing test to show.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// The directory holding the workspace's built binaries (next to `deps/`).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    exe.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// The path of a workspace binary such as `obleth-gateway`.
pub fn bin(name: &str) -> PathBuf {
    bin_dir().join(name)
}

/// A free loopback port (bound and released; good enough for tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// A gateway process with fixed ports, restartable on the same ports.
#[derive(Debug)]
pub struct GatewayProc {
    pub name: String,
    pub port: u16,
    pub ops: u16,
    pub binary: PathBuf,
    pub config: PathBuf,
    pub database_url: String,
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
        let (port, ops) = (free_port(), free_port());
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(
            &config,
            format!(
                "[server]\nlisten = \"127.0.0.1:{port}\"\nops_listen = \"127.0.0.1:{ops}\"\n\
                 drain_delay_secs = {drain_delay_secs}\ndrain_timeout_secs = 30\nnode_id = \"{name}\"\nheartbeat_secs = 1\n\n\
                 [cache]\npoll_interval_secs = 2\n\n[usage]\nflush_interval_ms = 100\n\n\
                 [database]\nmax_connections = 5\nacquire_timeout_ms = 1000\n"
            ),
        )?;
        Ok(GatewayProc {
            name: name.to_owned(),
            port,
            ops,
            binary,
            config,
            database_url: database_url.to_owned(),
            log: dir.join(format!("{name}.log")),
            child: None,
        })
    }

    pub fn start(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = tokio::process::Command::new(&self.binary)
            .arg("--config")
            .arg(&self.config)
            .env("OBLETH_DATABASE__URL", &self.database_url)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", self.binary.display()))?;
        self.child = Some(child);
        Ok(())
    }

    pub async fn wait_ready(&self, limit: Duration) -> anyhow::Result<Duration> {
        wait_ready(self.ops, limit)
            .await
            .with_context(|| format!("{} not ready; log:\n{}", self.name, self.log_tail()))
    }

    fn signal(&self, sig: &str) -> anyhow::Result<()> {
        let pid = self
            .child
            .as_ref()
            .and_then(|c| c.id())
            .context("not running")?;
        let status = std::process::Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()?;
        if !status.success() {
            bail!("kill {sig} {pid} failed");
        }
        Ok(())
    }

    pub fn sigterm(&self) -> anyhow::Result<()> {
        self.signal("-TERM")
    }

    pub fn sigkill(&self) -> anyhow::Result<()> {
        self.signal("-KILL")
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

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

/// Polls `http://127.0.0.1:{ops}/readyz` until 200.
pub async fn wait_ready(ops: u16, limit: Duration) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let client = crate::load::client();
    let uri: hyper::Uri = format!("http://127.0.0.1:{ops}/readyz").parse()?;
    loop {
        let req =
            http::Request::get(uri.clone()).body(http_body_util::Full::new(bytes::Bytes::new()))?;
        if let Ok(Ok(r)) = tokio::time::timeout(Duration::from_secs(1), client.request(req)).await {
            if r.status() == 200 {
                return Ok(started.elapsed());
            }
        }
        if started.elapsed() > limit {
            bail!("not ready after {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
