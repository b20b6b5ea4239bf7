//! A private PostgreSQL cluster in a temp dir: initdb, start, stop and teardown.

use std::fmt;
use std::io::{Read as _, Seek as _, SeekFrom};
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Output};
use std::time::Instant;

use anyhow::{bail, Context as _};
use tempfile::TempDir;

use super::binaries::Binaries;
use super::{create_database, unique_database_name, watchdog, TestDb};

/// How many free ports `start` tries when the one it picked is taken before
/// the server binds it.
const PORT_ATTEMPTS: u32 = 5;

/// Seconds `pg_ctl` waits for the server to start or stop.
const PG_CTL_TIMEOUT_SECS: &str = "30";

/// Lines of the server log quoted in an error.
const LOG_TAIL_LINES: usize = 30;

/// A PostgreSQL server owned by this test process.
///
/// `DATABASE_URL` does not apply here: a test that starts its own cluster
/// gets one, whatever the environment says; [`super::fresh_database`] is what
/// honours it.
///
/// It listens on 127.0.0.1 only, trusts every connection there, and trades
/// durability for speed (`fsync`, `synchronous_commit` and `full_page_writes`
/// are off). Dropping it stops the server and removes its files; a watchdog
/// does the same if the process exits without dropping it.
pub struct PgCluster {
    port: u16,
    binaries: Binaries,
    watchdog: Option<Child>,
    // Declared last so that it is removed after `Drop::drop` stopped the
    // server.
    dir: TempDir,
}

impl PgCluster {
    /// Starts a new private cluster: initdb into a temp dir (owned by
    /// postgres when root), a free port on 127.0.0.1, fsync=off,
    /// synchronous_commit=off, full_page_writes=off, unix socket dir inside
    /// the temp dir, max_connections=300, log to a file in the temp dir.
    ///
    /// Blocks for the second or so that `initdb` and the start take, and
    /// returns once the server accepts connections.
    pub fn start() -> anyhow::Result<PgCluster> {
        Self::start_as(Origin::Initdb, &Extra::default())
    }

    /// Starts a cluster made by `origin`, with `extra` settings and
    /// `pg_hba.conf` lines after the ones [`PgCluster::start`] writes (a
    /// setting given twice takes its last value).
    pub(super) fn start_as(origin: Origin, extra: &Extra) -> anyhow::Result<PgCluster> {
        let started = Instant::now();
        let dir = tempfile::Builder::new()
            .prefix("obleth-pg-")
            .tempdir()
            .context("creating a temp dir for the PostgreSQL cluster")?;
        // The dir was just created, so its owner is this process's effective
        // uid; that answers "are we root" without a libc dependency.
        let is_root = dir
            .path()
            .metadata()
            .context("reading the cluster dir's metadata")?
            .uid()
            == 0;
        let binaries = Binaries::find(is_root)?;
        let mut cluster = PgCluster {
            port: 0,
            binaries,
            watchdog: None,
            dir,
        };
        // The watchdog comes first so that it also covers a process that dies
        // while the cluster is starting. From here on, an early return drops
        // `cluster`, which stops whatever was started.
        cluster.watchdog = Some(watchdog::spawn(
            cluster.dir.path(),
            &cluster.data_dir(),
            cluster.binaries.argv("pg_ctl"),
        )?);
        cluster.prepare_dir(is_root)?;
        match origin {
            Origin::Initdb => cluster.initdb()?,
            Origin::BaseBackupOf { port, user, slot } => cluster.base_backup(port, user, slot)?,
        }
        cluster.configure(extra)?;
        cluster.start_on_a_free_port()?;
        tracing::info!(
            port = cluster.port,
            dir = %cluster.dir.path().display(),
            bindir = %cluster.binaries.dir().display(),
            elapsed_ms = started.elapsed().as_millis(),
            standby = matches!(origin, Origin::BaseBackupOf { .. }),
            "Started a private PostgreSQL cluster."
        );
        Ok(cluster)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The temp dir that holds the cluster's data, socket and log; it is
    /// gone once the cluster is dropped.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// URL of database `db` as superuser `postgres`, password-less over TCP
    /// (trust auth on 127.0.0.1 only).
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Stops the server (pg_ctl stop -m fast) keeping data; `start_again`
    /// starts it on the same port and data dir. Used to simulate a database
    /// outage.
    pub fn stop(&self) -> anyhow::Result<()> {
        let data = self.data_dir();
        let output = self
            .pg_ctl()
            .arg("stop")
            .arg("-D")
            .arg(&data)
            .args(["-m", "fast", "-w", "-t", PG_CTL_TIMEOUT_SECS])
            .output()
            .context("running pg_ctl stop")?;
        if !output.status.success() {
            return Err(self.failure(&output, "pg_ctl stop"));
        }
        Ok(())
    }

    /// Starts the server again after `stop`, on the same port and data dir.
    ///
    /// Fails if another process took the port while the server was down.
    pub fn start_again(&self) -> anyhow::Result<()> {
        match self.try_start(self.port)? {
            Start::Started => Ok(()),
            Start::PortTaken(log) => bail!(
                "port {} was taken while the server was stopped; server log:\n{log}",
                self.port
            ),
        }
    }

    /// Creates a fresh empty database with a unique name and returns its URL.
    pub async fn fresh_database(&self) -> anyhow::Result<TestDb> {
        let name = unique_database_name();
        create_database(&self.url("postgres"), &name).await?;
        Ok(TestDb {
            url: self.url(&name),
            name,
        })
    }

    pub(super) fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn socket_dir(&self) -> PathBuf {
        self.dir.path().join("socket")
    }

    fn log_file(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    pub(super) fn pg_ctl(&self) -> std::process::Command {
        self.tool("pg_ctl")
    }

    /// One of the server's programs (`pg_isready`), run as `pg_ctl` is.
    pub(super) fn tool(&self, name: &str) -> std::process::Command {
        self.binaries.command(name, self.dir.path())
    }

    /// Creates the socket dir and, as root, hands the whole dir to user
    /// `postgres`, which runs the server.
    fn prepare_dir(&self, is_root: bool) -> anyhow::Result<()> {
        let socket_dir = self.socket_dir();
        std::fs::create_dir(&socket_dir).context("creating the cluster's socket dir")?;
        if is_root {
            let status = std::process::Command::new("chown")
                .args(["-R", "postgres"])
                .arg(self.dir.path())
                .status()
                .context("running chown to hand the cluster dir to user postgres")?;
            if !status.success() {
                bail!(
                    "chown -R postgres {} failed ({status}); does user postgres exist?",
                    self.dir.path().display()
                );
            }
        }
        Ok(())
    }

    /// Runs initdb into the data dir.
    fn initdb(&self) -> anyhow::Result<()> {
        let output = self
            .binaries
            .command("initdb", self.dir.path())
            .arg("-D")
            .arg(self.data_dir())
            .args([
                "--username=postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                // Nothing here has to survive a crash, and syncing is most of
                // initdb's time.
                "--no-sync",
            ])
            .output()
            .context("running initdb")?;
        if !output.status.success() {
            bail!(
                "initdb failed ({}):\n{}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(())
    }

    /// Copies the data dir of the server on 127.0.0.1:`port` with
    /// `pg_basebackup` as replication role `user`, streaming the WAL it needs
    /// and creating the physical replication slot `slot`. `-R` writes
    /// `standby.signal` and the `primary_conninfo` (with `primary_slot_name`)
    /// that make this cluster a streaming standby of that server.
    fn base_backup(&self, port: u16, user: &str, slot: &str) -> anyhow::Result<()> {
        let output = self
            .binaries
            .command("pg_basebackup", self.dir.path())
            .arg("-D")
            .arg(self.data_dir())
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", user])
            .args(["-R", "-X", "stream", "-C", "-S", slot])
            .args(["--checkpoint=fast", "--no-sync", "--no-password"])
            .output()
            .context("running pg_basebackup")?;
        if !output.status.success() {
            bail!(
                "pg_basebackup from port {port} failed ({}):\n{}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(())
    }

    /// Appends this cluster's settings to `postgresql.conf` and writes
    /// `pg_hba.conf`. A standby's copied `postgresql.conf` already holds its
    /// primary's block; the one appended here comes later, so it wins.
    fn configure(&self, extra: &Extra) -> anyhow::Result<()> {
        // The port is not here: it is passed on the command line, so that a
        // retry with another port does not have to edit this file.
        let settings = format!(
            "\n# Added by obleth-testkit: a throwaway server for tests.\n\
             listen_addresses = '127.0.0.1'\n\
             unix_socket_directories = '{}'\n\
             max_connections = 300\n\
             fsync = off\n\
             synchronous_commit = off\n\
             full_page_writes = off\n{}",
            self.socket_dir().display().to_string().replace('\'', "''"),
            extra.postgresql_conf,
        );
        // Both files are written in place, which keeps their owner
        // (postgres) when this process is root.
        let conf = self.data_dir().join("postgresql.conf");
        append(&conf, &settings).context("writing postgresql.conf")?;
        let hba = format!(
            "local all all trust\nhost all all 127.0.0.1/32 trust\n{}",
            extra.pg_hba
        );
        std::fs::write(self.data_dir().join("pg_hba.conf"), hba).context("writing pg_hba.conf")?;
        Ok(())
    }

    /// Starts the server on a free port, trying another one if the port was
    /// taken between choosing it and the server binding it.
    fn start_on_a_free_port(&mut self) -> anyhow::Result<()> {
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port()?;
            match self.try_start(port)? {
                Start::Started => {
                    self.port = port;
                    return Ok(());
                }
                Start::PortTaken(_) => {
                    tracing::debug!(port, "Port taken before PostgreSQL bound it, retrying.");
                }
            }
        }
        bail!(
            "PostgreSQL could not bind a free port in {PORT_ATTEMPTS} attempts; server log:\n{}",
            self.log_tail()
        )
    }

    /// Starts the server on `port` and waits until it accepts connections.
    fn try_start(&self, port: u16) -> anyhow::Result<Start> {
        let log_file = self.log_file();
        let log_offset = std::fs::metadata(&log_file).map_or(0, |m| m.len());
        let output = self
            .pg_ctl()
            .arg("start")
            .arg("-D")
            .arg(self.data_dir())
            .arg("-l")
            .arg(&log_file)
            .args(["-o", &format!("-p {port}")])
            .args(["-w", "-t", PG_CTL_TIMEOUT_SECS])
            .output()
            .context("running pg_ctl start")?;
        if output.status.success() {
            return Ok(Start::Started);
        }
        let log = read_from(&log_file, log_offset).unwrap_or_default();
        if log.contains("Address already in use") {
            return Ok(Start::PortTaken(log));
        }
        Err(self.failure(&output, "pg_ctl start"))
    }

    /// Describes a failed `pg_ctl` run, quoting its output and the tail of
    /// the server log.
    pub(super) fn failure(&self, output: &Output, what: &str) -> anyhow::Error {
        anyhow::anyhow!(
            "{what} failed ({}):\n{}{}server log ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            self.log_file().display(),
            self.log_tail()
        )
    }

    fn log_tail(&self) -> String {
        match std::fs::read_to_string(self.log_file()) {
            Ok(log) => {
                let lines: Vec<&str> = log.lines().collect();
                lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
            }
            Err(e) => format!("(unreadable: {e})"),
        }
    }
}

impl Drop for PgCluster {
    /// Stops the server at once (`-m immediate`: nothing needs to be saved)
    /// and removes the temp dir, then retires the watchdog that would have
    /// done the same at exit.
    fn drop(&mut self) {
        let data = self.data_dir();
        if data.join("postmaster.pid").exists() {
            let stopped = self
                .pg_ctl()
                .arg("stop")
                .arg("-D")
                .arg(&data)
                .args(["-m", "immediate", "-w", "-t", PG_CTL_TIMEOUT_SECS])
                .output();
            if let Err(e) = stopped {
                tracing::warn!(error = %e, port = self.port, "Could not stop PostgreSQL.");
            }
        }
        if let Some(mut watchdog) = self.watchdog.take() {
            // Killing a process that has exited is harmless, and waiting
            // reaps it.
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
        // `self.dir` is removed when the field is dropped, right after this.
    }
}

impl fmt::Debug for PgCluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgCluster")
            .field("port", &self.port)
            .field("dir", &self.dir.path())
            .finish_non_exhaustive()
    }
}

/// Where a cluster's data dir comes from.
#[derive(Debug, Clone, Copy)]
pub(super) enum Origin<'a> {
    /// `initdb`: a new, empty server.
    Initdb,
    /// `pg_basebackup -R` from the server on 127.0.0.1:`port`: a standby.
    BaseBackupOf {
        port: u16,
        user: &'a str,
        slot: &'a str,
    },
}

/// Settings and `pg_hba.conf` lines added to a cluster's own.
#[derive(Debug, Clone, Default)]
pub(super) struct Extra {
    /// Lines appended to `postgresql.conf`, each ending in a newline.
    pub(super) postgresql_conf: String,
    /// Lines appended to `pg_hba.conf`, each ending in a newline.
    pub(super) pg_hba: String,
}

/// The outcome of one `pg_ctl start` that did not fail outright.
enum Start {
    Started,
    /// The port was taken; holds the server's log lines from this attempt.
    PortTaken(String),
}

/// Returns a port on 127.0.0.1 that was free a moment ago.
fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding 127.0.0.1:0")?;
    Ok(listener
        .local_addr()
        .context("reading the bound port")?
        .port())
}

fn append(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    std::fs::OpenOptions::new()
        .append(true)
        .open(path)?
        .write_all(text.as_bytes())
}

/// Reads `path` from byte `offset` on.
fn read_from(path: &Path, offset: u64) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    file.seek(SeekFrom::Start(offset))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}
