//! PgBouncer in front of a test PostgreSQL: Debian's `pgbouncer` binary, its
//! config in a temp dir, 127.0.0.1 on a free port, trust auth against the
//! cluster, started and stopped by the tests.

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use tempfile::TempDir;

use crate::proc::{command, free_port};

/// How long a start may take before it counts as failed.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// How PgBouncer lends server connections to its clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolMode {
    /// A server connection for a client's whole session.
    Session,
    /// A server connection for one transaction, then back to the pool.
    Transaction,
}

impl PoolMode {
    fn as_str(self) -> &'static str {
        match self {
            PoolMode::Session => "session",
            PoolMode::Transaction => "transaction",
        }
    }
}

/// A running PgBouncer. Dropping it kills the process; the temp dir with its
/// config and log goes with it.
#[derive(Debug)]
pub struct PgBouncer {
    port: u16,
    binary: PathBuf,
    config: PathBuf,
    log: PathBuf,
    as_postgres: bool,
    child: Option<tokio::process::Child>,
    // Last, so the process is gone before its files.
    dir: TempDir,
}

impl PgBouncer {
    /// Starts PgBouncer in `mode` in front of the PostgreSQL server on
    /// 127.0.0.1:`pg_port`, every database of it, with at most `pool_size`
    /// server connections per database and user, so that clients really share
    /// them. `prepared_statements` is PgBouncer's `max_prepared_statements`
    /// (1.21 and later; 0 turns its prepared statement support off, as
    /// before 1.21). Returns once it accepts connections.
    pub async fn start(
        pg_port: u16,
        mode: PoolMode,
        pool_size: u32,
        prepared_statements: u32,
    ) -> anyhow::Result<PgBouncer> {
        let binary = find_binary().context(
            "pgbouncer not found; install it with `apt-get install pgbouncer` (scripts/test does)",
        )?;
        let version = version(&binary)?;
        let prepared = if version >= (1, 21) {
            format!("max_prepared_statements = {prepared_statements}\n")
        } else if prepared_statements > 0 {
            bail!(
                "{} is PgBouncer {}.{}, which cannot keep prepared statements in transaction mode \
                 (1.21 and later can); scripts/test builds one from Debian's newer source package \
                 into target/pgbouncer, or set OBLETH_PGBOUNCER to a pgbouncer 1.21 or later",
                binary.display(),
                version.0,
                version.1
            );
        } else {
            String::new()
        };
        let dir = tempfile::Builder::new()
            .prefix("obleth-pgbouncer-")
            .tempdir()
            .context("creating a temp dir for PgBouncer")?;
        // PgBouncer refuses to run as root: as root it runs as `postgres`
        // (as the test cluster does), which must read its config and write its log.
        let as_postgres = dir.path().metadata()?.uid() == 0;
        if as_postgres {
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))?;
        }
        let port = free_port();
        let config = dir.path().join("pgbouncer.ini");
        let log = dir.path().join("pgbouncer.log");
        // Trust auth still wants every user listed in the auth file. The
        // admin console (database `pgbouncer`) takes `postgres`, for `RECONNECT`
        // and `SHOW`. sqlx sends `extra_float_digits` at start-up, which
        // PgBouncer refuses unless told to ignore it.
        std::fs::write(dir.path().join("userlist.txt"), "\"postgres\" \"\"\n")?;
        std::fs::write(
            &config,
            format!(
                "[databases]\n\
                 * = host=127.0.0.1 port={pg_port}\n\
                 [pgbouncer]\n\
                 listen_addr = 127.0.0.1\n\
                 listen_port = {port}\n\
                 unix_socket_dir =\n\
                 auth_type = trust\n\
                 auth_file = {users}\n\
                 admin_users = postgres\n\
                 pool_mode = {mode}\n\
                 default_pool_size = {pool_size}\n\
                 max_client_conn = 1000\n\
                 ignore_startup_parameters = extra_float_digits\n\
                 logfile = {log}\n\
                 pidfile = {pid}\n\
                 {prepared}",
                users = dir.path().join("userlist.txt").display(),
                mode = mode.as_str(),
                log = log.display(),
                pid = dir.path().join("pgbouncer.pid").display(),
            ),
        )?;
        let mut bouncer = PgBouncer {
            port,
            binary,
            config,
            log,
            as_postgres,
            child: None,
            dir,
        };
        bouncer.spawn().await?;
        Ok(bouncer)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// URL of database `db` through PgBouncer, as `postgres` without a password.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// PgBouncer's own log, for a failing test's message.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The temp dir that holds the config and the log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Kills PgBouncer (every client and server connection drops at once) and
    /// starts it again on the same port, as a crashed or redeployed pooler.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill().await;
        self.spawn().await
    }

    /// Kills the process and waits for it.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    async fn spawn(&mut self) -> anyhow::Result<()> {
        let mut cmd = command(&self.binary);
        if self.as_postgres {
            cmd.args(["-u", "postgres"]);
        }
        let mut child = cmd
            .arg(&self.config)
            .current_dir(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("spawning pgbouncer")?;
        let started = Instant::now();
        // The port may still be in TIME_WAIT or held a moment after a kill;
        // PgBouncer sets SO_REUSEADDR, so a short wait is all it takes.
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .is_err()
        {
            if let Some(status) = child.try_wait()? {
                bail!("pgbouncer exited with {status}; its log:\n{}", self.log());
            }
            if started.elapsed() > START_TIMEOUT {
                bail!(
                    "pgbouncer did not listen on {} within {START_TIMEOUT:?}; its log:\n{}",
                    self.port,
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.child = Some(child);
        Ok(())
    }
}

/// The `OBLETH_PGBOUNCER` environment variable names the pgbouncer binary to
/// use; without it, the one scripts/test builds into `target/pgbouncer`, then
/// the system's.
pub const BINARY_VAR: &str = "OBLETH_PGBOUNCER";

/// Whether the pgbouncer the tests would run keeps prepared statements in
/// transaction mode (1.21 and later), with its version for messages.
pub fn supports_prepared_statements() -> anyhow::Result<bool> {
    let binary = find_binary().context("pgbouncer not found")?;
    Ok(version(&binary)? >= (1, 21))
}

/// `pgbouncer --version`'s first line, `PgBouncer 1.18.0`, as (major, minor).
fn version(binary: &Path) -> anyhow::Result<(u32, u32)> {
    let out = std::process::Command::new(binary)
        .arg("--version")
        .output()
        .with_context(|| format!("running {} --version", binary.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let parsed = text
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("PgBouncer "))
        .and_then(|v| {
            let mut parts = v.trim().split('.');
            Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
        });
    parsed.with_context(|| format!("unexpected `pgbouncer --version` output: {text}"))
}

fn find_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(BINARY_VAR) {
        return Some(PathBuf::from(path));
    }
    // Test binaries run from target/<profile>/deps.
    let built = std::env::current_exe().ok().and_then(|exe| {
        let target = exe.parent()?.parent()?.parent()?;
        Some(target.join("pgbouncer/bin/pgbouncer"))
    });
    if let Some(built) = built.filter(|p| p.exists()) {
        return Some(built);
    }
    let fixed = ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"]
        .into_iter()
        .map(PathBuf::from);
    let path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    fixed
        .chain(path)
        .map(|d| d.join("pgbouncer"))
        .find(|p| p.exists())
}
