//! HAProxy in front of the gateways, routing on `/readyz` as a Kubernetes
//! Service routes on readiness, with the Compose stack's configuration.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};

use obleth_testkit::proc::{command, free_port};

use crate::procs::GatewayProc;

/// The HAProxy configuration the Compose stack runs (deploy/compose/haproxy.cfg):
/// the checks, retries and timeouts under test are the ones operators get.
const SHARED_CONFIG: &str = include_str!("../../deploy/compose/haproxy.cfg");

/// A running HAProxy.
#[derive(Debug)]
pub struct Haproxy {
    pub port: u16,
    child: tokio::process::Child,
}

/// The chaos tests' verdicts rest on these lines of the shared file, so a
/// change to any of them is refused here rather than weakening the tests.
const RELIED_ON: [&str; 6] = [
    "    retries 3",
    "    option redispatch 1",
    "    retry-on conn-failure empty-response",
    "backend gateways",
    "    option httpchk GET /readyz",
    "    default-server inter 100ms fall 1 rise 2",
];

/// The shared configuration with its Compose `server` lines replaced by one
/// per gateway (proxy port, checked on its ops port), appended to the
/// `gateways` backend, which ends the file.
fn config(gateways: &[GatewayProc]) -> anyhow::Result<String> {
    for line in RELIED_ON {
        if !SHARED_CONFIG.lines().any(|l| l == line) {
            bail!(
                "deploy/compose/haproxy.cfg lacks `{}`, which the tests rely on",
                line.trim()
            );
        }
    }
    let mut config: String = SHARED_CONFIG
        .lines()
        .filter(|line| !line.trim_start().starts_with("server "))
        .map(|line| format!("{line}\n"))
        .collect();
    if !config.trim_end().ends_with(RELIED_ON[5]) {
        bail!("deploy/compose/haproxy.cfg must end with the gateways backend and its `default-server` line");
    }
    for g in gateways {
        config.push_str(&format!(
            "    server {} 127.0.0.1:{} check port {}\n",
            g.name, g.port, g.ops
        ));
    }
    Ok(config)
}

impl Haproxy {
    /// Starts HAProxy on a free port with an active `/readyz` check of every
    /// gateway, from deploy/compose/haproxy.cfg: checks every 100 ms, down
    /// after one failure, up after two; refused connections and empty answers
    /// retried on another server.
    pub async fn start(dir: &Path, gateways: &[GatewayProc]) -> anyhow::Result<Haproxy> {
        let binary = which("haproxy").context(
            "haproxy not found; install it with `apt-get install haproxy` (scripts/test does)",
        )?;
        let port = free_port();
        let env = [
            ("OBLETH_LB_BIND", format!("127.0.0.1:{port}")),
            (
                "OBLETH_LB_MONITOR_BIND",
                format!("127.0.0.1:{}", free_port()),
            ),
            ("OBLETH_LB_GATEWAYS", gateways.len().to_string()),
        ];
        let path = dir.join("haproxy.cfg");
        std::fs::write(&path, config(gateways)?)?;
        let check = std::process::Command::new(&binary)
            .args(["-c", "-f"])
            .arg(&path)
            .envs(env.iter().map(|(k, v)| (k, v)))
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
            .envs(env.iter().map(|(k, v)| (k, v)))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_config_keeps_the_relied_on_lines_and_drops_the_compose_servers() {
        let config = config(&[]).unwrap();
        for line in RELIED_ON {
            assert!(config.lines().any(|l| l == line), "missing `{line}`");
        }
        assert!(!config
            .lines()
            .any(|l| l.trim_start().starts_with("server ")));
        assert!(config.contains("bind \"${OBLETH_LB_BIND-:8080}\""));
    }
}
