//! HAProxy in TCP mode in front of a PostgreSQL primary and its standby,
//! routing only to the server that accepts client connections: the primary,
//! since the standby runs with `hot_standby = off` until it is promoted.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use sqlx::{Connection as _, PgConnection};

use obleth_testkit::proc::{command, free_port};
use obleth_testkit::PgReplicated;

use crate::haproxy::which;

/// Connections in a row that must reach the same primary before
/// [`PgFront::wait_routes_to`] trusts the routing: spaced 50 ms apart they
/// span more than the two 200 ms checks that mark a server down.
const STEADY: u32 = 10;

/// A running HAProxy that fronts a [`PgReplicated`] pair.
#[derive(Debug)]
pub struct PgFront {
    pub port: u16,
    child: tokio::process::Child,
}

impl PgFront {
    /// Starts HAProxy on a free port with both servers of `pair`, each
    /// checked every 200 ms with `option pgsql-check` (a startup packet
    /// answered by an authentication request is up, an error is down), and
    /// waits until it routes to the primary.
    ///
    /// `on-marked-down shutdown-sessions` closes the sessions of a server
    /// marked down, so a primary that hangs rather than dies does not keep
    /// its clients; the long client and server timeouts keep idle pooled and
    /// `LISTEN` connections open.
    pub async fn start(dir: &Path, pair: &PgReplicated) -> anyhow::Result<PgFront> {
        let binary = which("haproxy").context(
            "haproxy not found; install it with `apt-get install haproxy` (scripts/test does)",
        )?;
        let port = free_port();
        let config = format!(
            "global\n    maxconn 1024\n\
             defaults\n    mode tcp\n    timeout connect 1s\n    timeout check 1s\n\
                 timeout client 1h\n    timeout server 1h\n\
             frontend postgres\n    bind 127.0.0.1:{port}\n    default_backend primary\n\
             backend primary\n    option pgsql-check user postgres\n\
                 default-server inter 200ms fall 2 rise 1 on-marked-down shutdown-sessions\n\
                 server primary 127.0.0.1:{} check\n\
                 server standby 127.0.0.1:{} check\n",
            pair.primary().port(),
            pair.standby().port(),
        );
        let path = dir.join("haproxy-postgres.cfg");
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
        let front = PgFront { port, child };
        front
            .wait_routes_to(pair.primary().port(), Duration::from_secs(30))
            .await?;
        Ok(front)
    }

    /// The URL of database `db` through the front, as superuser `postgres`.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Waits until [`STEADY`] new connections in a row through the front
    /// reach the server on `port` and find it a primary (not in recovery);
    /// answers how long that took.
    ///
    /// One is not enough: HAProxy starts with every server up until its
    /// checks fail, and balances round-robin, so only a run of connections
    /// that all reach `port` shows that the other server is marked down.
    pub async fn wait_routes_to(&self, port: u16, limit: Duration) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let mut last = String::from("no attempt");
        let mut run = 0;
        while started.elapsed() < limit {
            match self.server().await {
                Ok((p, false)) if p == port => {
                    run += 1;
                    if run == STEADY {
                        return Ok(started.elapsed());
                    }
                }
                Ok((p, recovery)) => {
                    run = 0;
                    last = format!("reached port {p}, in recovery: {recovery}");
                }
                Err(e) => {
                    run = 0;
                    last = e.to_string();
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("haproxy did not route to the primary on port {port} within {limit:?}; last: {last}")
    }

    /// The port of the server a new connection through the front reaches,
    /// and whether that server is in recovery.
    async fn server(&self) -> anyhow::Result<(u16, bool)> {
        let mut conn = tokio::time::timeout(
            Duration::from_secs(2),
            PgConnection::connect(&self.url("postgres")),
        )
        .await
        .context("connecting through haproxy timed out")??;
        let (port, recovery): (i32, bool) =
            sqlx::query_as("SELECT inet_server_port(), pg_is_in_recovery()")
                .fetch_one(&mut conn)
                .await?;
        let _ = conn.close().await;
        Ok((u16::try_from(port)?, recovery))
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}
