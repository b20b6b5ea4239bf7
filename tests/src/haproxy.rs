//! HAProxy in front of the gateways, routing on `/readyz` as a Kubernetes
//! Service routes on readiness.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};

use obleth_testkit::proc::{command, free_port};

use crate::procs::GatewayProc;

/// A running HAProxy.
#[derive(Debug)]
pub struct Haproxy {
    pub port: u16,
    child: tokio::process::Child,
}

impl Haproxy {
    /// Starts HAProxy on a free port with an active `/readyz` check of every gateway.
    pub async fn start(dir: &Path, gateways: &[GatewayProc]) -> anyhow::Result<Haproxy> {
        let binary = which("haproxy").context(
            "haproxy not found; install it with `apt-get install haproxy` (scripts/test does)",
        )?;
        let port = free_port();
        let mut servers = String::new();
        for g in gateways {
            servers.push_str(&format!(
                "    server {} 127.0.0.1:{} check port {}\n",
                g.name, g.port, g.ops
            ));
        }
        // Health checks every 100 ms, down after one failure: a draining gateway
        // (not ready at once after SIGTERM) leaves the pool well within its drain
        // delay. Connection failures and empty answers are retried on another
        // server, as a Service's retrying client or an L7 proxy would.
        let config = format!(
            "global\n    maxconn 4096\n\
             defaults\n    mode http\n    timeout connect 2s\n    timeout client 120s\n    timeout server 120s\n\
                 retries 3\n    option redispatch 1\n    retry-on conn-failure empty-response\n\
             frontend fe\n    bind 127.0.0.1:{port}\n    default_backend gateways\n\
             backend gateways\n    balance roundrobin\n    option httpchk GET /readyz\n    http-check expect status 200\n\
                 default-server inter 100ms fall 1 rise 2\n{servers}"
        );
        let path = dir.join("haproxy.cfg");
        std::fs::write(&path, config)?;
        let check = std::process::Command::new(&binary)
            .args(["-c", "-f"])
            .arg(&path)
            .output()?;
        if !check.status.success() {
            bail!(
                "haproxy rejected its config: {}",
                String::from_utf8_lossy(&check.stderr)
            );
        }
        let child = command(&binary)
            .args(["-db", "-f"])
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let proxy = Haproxy { port, child };
        // Ready once it routes to at least one ready gateway.
        let started = std::time::Instant::now();
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            if started.elapsed() > Duration::from_secs(10) {
                bail!("haproxy did not listen on {port}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        Ok(proxy)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

pub(crate) fn which(name: &str) -> Option<std::path::PathBuf> {
    for dir in ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return Some(p);
        }
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.exists())
    })
}
