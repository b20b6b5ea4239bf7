//! A primary and its synchronous streaming standby, for failover tests: the
//! standby is a `pg_basebackup -R` copy of the primary, and the helpers crash
//! the primary and promote the standby.

use std::fmt;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use sqlx::{Connection as _, PgConnection};

use super::cluster::{Extra, Origin};
use super::{create_database, unique_database_name, PgCluster, TestDb};

/// The role the standby replicates as: `REPLICATION` and `LOGIN`, nothing more.
pub const REPLICATION_ROLE: &str = "replicator";

/// The physical replication slot that keeps the primary's WAL until the
/// standby has it.
const SLOT: &str = "obleth_standby";

/// How long `start` waits for the standby to become synchronous.
const SYNC_LIMIT: Duration = Duration::from_secs(30);

/// How long `crash` waits for the server's port to close.
const CRASH_LIMIT: Duration = Duration::from_secs(10);

/// A primary with one streaming standby that is synchronous: a commit on the
/// primary returns only once the standby has flushed its WAL, so a crash of
/// the primary loses no acknowledged commit.
///
/// The standby runs with `hot_standby = off`, so it refuses every client
/// connection ("the database system is not accepting connections") until
/// it is promoted: a proxy that checks whether a server accepts a startup
/// packet (HAProxy's `option pgsql-check`) routes only to the primary.
///
/// Both clusters listen on 127.0.0.1 with trust authentication, `fsync` and
/// `full_page_writes` off, like [`PgCluster::start`]; the primary runs with
/// `synchronous_commit = on` and `wal_level = replica`. Dropping the pair
/// stops both servers and removes their dirs.
pub struct PgReplicated {
    primary: PgCluster,
    standby: PgCluster,
}

impl PgReplicated {
    /// Starts the primary, creates [`REPLICATION_ROLE`], copies the primary
    /// into the standby with `pg_basebackup -R` (creating the replication
    /// slot), starts the standby, then names it in the primary's
    /// `synchronous_standby_names` and waits until the primary reports it
    /// streaming and synchronous.
    ///
    /// The standby is made synchronous only after the copy because every
    /// commit on the primary (the role's, say) would wait for it before.
    /// Blocks for the few seconds `initdb`, the copy and the starts take.
    pub async fn start() -> anyhow::Result<PgReplicated> {
        let hba = format!("host replication {REPLICATION_ROLE} 127.0.0.1/32 trust\n");
        let primary = PgCluster::start_as(
            Origin::Initdb,
            &Extra {
                postgresql_conf: "wal_level = replica\n\
                                  max_wal_senders = 4\n\
                                  max_replication_slots = 4\n\
                                  synchronous_commit = on\n"
                    .to_owned(),
                pg_hba: hba.clone(),
            },
        )?;
        let mut admin = PgConnection::connect(&primary.url("postgres"))
            .await
            .context("connecting to the primary")?;
        sqlx::query(&format!(
            "CREATE ROLE {REPLICATION_ROLE} WITH REPLICATION LOGIN"
        ))
        .execute(&mut admin)
        .await
        .context("creating the replication role")?;
        let standby = PgCluster::start_as(
            Origin::BaseBackupOf {
                port: primary.port(),
                user: REPLICATION_ROLE,
                slot: SLOT,
            },
            &Extra {
                postgresql_conf: "hot_standby = off\n".to_owned(),
                pg_hba: hba,
            },
        )?;
        // `ALTER SYSTEM` writes the primary's `postgresql.auto.conf`, which
        // the standby copied before: once promoted, it waits for no standby.
        sqlx::query("ALTER SYSTEM SET synchronous_standby_names = '*'")
            .execute(&mut admin)
            .await
            .context("naming the synchronous standby")?;
        sqlx::query("SELECT pg_reload_conf()")
            .execute(&mut admin)
            .await
            .context("reloading the primary's settings")?;
        let started = Instant::now();
        loop {
            let sync: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_replication \
                 WHERE state = 'streaming' AND sync_state = 'sync'",
            )
            .fetch_one(&mut admin)
            .await
            .context("reading pg_stat_replication")?;
            if sync == 1 {
                break;
            }
            if started.elapsed() > SYNC_LIMIT {
                bail!(
                    "the standby on port {} did not become a synchronous streaming standby \
                     within {SYNC_LIMIT:?}",
                    standby.port()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        admin
            .close()
            .await
            .context("closing the primary connection")?;
        tracing::info!(
            primary = primary.port(),
            standby = standby.port(),
            "Started a primary with a synchronous standby."
        );
        Ok(PgReplicated { primary, standby })
    }

    pub fn primary(&self) -> &PgCluster {
        &self.primary
    }

    pub fn standby(&self) -> &PgCluster {
        &self.standby
    }

    /// Creates a fresh empty database on the primary (and so, through
    /// replication, on the standby) and returns its URL on the primary.
    pub async fn fresh_database(&self) -> anyhow::Result<TestDb> {
        let name = unique_database_name();
        create_database(&self.primary.url("postgres"), &name).await?;
        Ok(TestDb {
            url: self.primary.url(&name),
            name,
        })
    }

    /// Crashes the primary: see [`PgCluster::crash`].
    pub async fn kill_primary(&self) -> anyhow::Result<()> {
        self.primary.crash().await
    }

    /// Promotes the standby: see [`PgCluster::promote`].
    pub fn promote_standby(&self) -> anyhow::Result<()> {
        self.standby.promote()
    }
}

impl fmt::Debug for PgReplicated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgReplicated")
            .field("primary", &self.primary)
            .field("standby", &self.standby)
            .finish()
    }
}

impl PgCluster {
    /// Kills the server as a crash of its host would: SIGKILL to the
    /// postmaster and every process it started, at once, with nothing
    /// flushed or said to a client. Returns once its port refuses
    /// connections.
    ///
    /// `pg_ctl` starts the postmaster in a session of its own, so its process
    /// group holds exactly the server's processes; when it does not lead its
    /// group, only the postmaster is killed, and its backends end on their
    /// own when they see it gone. The pid file is removed afterwards, so
    /// neither the drop nor the watchdog signals a process that reused the pid.
    pub async fn crash(&self) -> anyhow::Result<()> {
        let pid_file = self.data_dir().join("postmaster.pid");
        let text = std::fs::read_to_string(&pid_file)
            .with_context(|| format!("reading {}", pid_file.display()))?;
        let pid: u32 = text
            .lines()
            .next()
            .and_then(|line| line.trim().parse().ok())
            .with_context(|| format!("{} holds no pid", pid_file.display()))?;
        let target = if process_group(pid)? == pid {
            format!("-{pid}")
        } else {
            pid.to_string()
        };
        let status = std::process::Command::new("kill")
            .args(["-KILL", "--", &target])
            .status()
            .context("running kill")?;
        if !status.success() {
            bail!("kill -KILL -- {target} failed ({status})");
        }
        let started = Instant::now();
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port()))
            .await
            .is_ok()
        {
            if started.elapsed() > CRASH_LIMIT {
                bail!(
                    "port {} still accepts connections {CRASH_LIMIT:?} after the kill",
                    self.port()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        std::fs::remove_file(&pid_file)
            .with_context(|| format!("removing {}", pid_file.display()))?;
        tracing::info!(port = self.port(), pid, "Crashed a PostgreSQL server.");
        Ok(())
    }

    /// Promotes a standby to a primary (`pg_ctl promote`, waiting until it
    /// accepts writes).
    pub fn promote(&self) -> anyhow::Result<()> {
        let output = self
            .pg_ctl()
            .arg("promote")
            .arg("-D")
            .arg(self.data_dir())
            .args(["-w", "-t", "30"])
            .output()
            .context("running pg_ctl promote")?;
        if !output.status.success() {
            return Err(self.failure(&output, "pg_ctl promote"));
        }
        // `pg_ctl promote -w` returns once recovery has ended, which can be
        // before the postmaster accepts clients ("Hot standby mode is
        // disabled"): wait for `pg_isready` to say it does.
        let started = Instant::now();
        loop {
            let ready = self
                .tool("pg_isready")
                .args(["-q", "-h", "127.0.0.1", "-d", "postgres", "-p"])
                .arg(self.port().to_string())
                .status()
                .context("running pg_isready")?;
            if ready.success() {
                break;
            }
            if started.elapsed() > Duration::from_secs(30) {
                bail!(
                    "the promoted standby on port {} does not accept clients after 30 s",
                    self.port()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        tracing::info!(port = self.port(), "Promoted a PostgreSQL standby.");
        Ok(())
    }
}

/// The process group of `pid`, the fifth field of `/proc/<pid>/stat` (the
/// second, the command, is in parentheses and may hold spaces).
fn process_group(pid: u32) -> anyhow::Result<u32> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(2))
        .and_then(|field| field.parse().ok())
        .with_context(|| format!("no process group in {path}"))
}
