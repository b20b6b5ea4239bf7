//! The one migration runner behind admin start-up and `obleth-migrator`: an advisory
//! lock with a bounded wait, phase-aware planning, per-statement timeouts with
//! retry on lock timeouts, and bookkeeping in `_sqlx_migrations`.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use rand::Rng;
use serde::Serialize;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, Executor, PgConnection};
use tracing::{info, warn};

use super::applied::{read_applied, AppliedMigration};
use super::compat::{check, Compatibility};
use super::phase::Phase;
use super::set::{MigrationDef, MigrationSet};
use super::sql::split_statements;
use crate::settings::MigrationSettings;

/// The advisory lock key every obleth runner takes ("obleth" and a 1).
pub const LOCK_KEY: i64 = 0x6f62_6c65_7468_0001;

/// SQLSTATE of `lock_timeout` expiring.
const LOCK_NOT_AVAILABLE: &str = "55P03";

/// How long the runner waits and retries.
#[derive(Debug, Clone)]
pub struct RunnerOptions {
    /// Longest wait for the advisory lock before giving up.
    pub lock_wait: Duration,
    /// `lock_timeout` for every migration statement.
    pub lock_timeout: Duration,
    /// `statement_timeout` for every migration statement.
    pub statement_timeout: Duration,
    /// Retries of a migration whose statement hit `lock_timeout`.
    pub max_retries: u32,
    /// First back-off after a lock timeout; doubles each retry, capped at 30 s.
    pub retry_backoff: Duration,
    /// The horizon: a node that never recorded its stop counts as alive for
    /// `finish` until this long after its last heartbeat. A gateway cut off
    /// from the database serves on without heartbeating, so silence alone
    /// proves nothing.
    pub node_liveness: Duration,
    /// The advisory lock key; tests use their own to stay independent.
    pub lock_key: i64,
    /// `application_name` of the runner's connection, shown to whoever waits for the lock.
    pub application_name: String,
}

impl Default for RunnerOptions {
    fn default() -> Self {
        RunnerOptions::from(&MigrationSettings::default())
    }
}

impl From<&MigrationSettings> for RunnerOptions {
    fn from(s: &MigrationSettings) -> Self {
        RunnerOptions {
            lock_wait: Duration::from_secs(s.lock_wait_secs),
            lock_timeout: Duration::from_millis(s.lock_timeout_ms),
            statement_timeout: Duration::from_secs(s.statement_timeout_secs),
            max_retries: s.max_retries,
            retry_backoff: Duration::from_millis(s.retry_backoff_ms),
            node_liveness: Duration::from_secs(s.node_horizon_secs),
            lock_key: LOCK_KEY,
            application_name: "obleth-migrator".to_owned(),
        }
    }
}

/// What a run applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Pending `expand` migrations only.
    Up,
    /// Every pending migration, `contract` included. Refused while a live node
    /// runs a release older than a contract migration requires, unless forced.
    Finish { force: bool },
}

/// A live node too old for a contract migration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeBlocker {
    pub node_id: String,
    pub service: String,
    pub version: String,
    pub migration: i64,
    pub requires_release: String,
    /// Seconds since its last heartbeat.
    pub silent_secs: i64,
}

/// Past this many seconds without a heartbeat (three beats of the default
/// `server.heartbeat_secs`) a blocking node is reported as silent.
pub const SILENT_AFTER_SECS: i64 = 30;

/// One migration applied by a run.
#[derive(Debug, Clone, Serialize)]
pub struct AppliedStep {
    pub version: i64,
    pub description: String,
    pub phase: Phase,
    /// 1 unless `lock_timeout` made the runner retry.
    pub attempts: u32,
    #[serde(serialize_with = "millis")]
    pub elapsed: Duration,
}

/// A duration as milliseconds, for the reports' JSON.
pub(super) fn millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64() * 1000.0)
}

/// The outcome of a run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RunReport {
    pub applied: Vec<AppliedStep>,
    /// Contract migrations left for `finish`.
    pub awaiting_finish: Vec<i64>,
    /// Old nodes that `finish --force` went past.
    pub forced_past: Vec<NodeBlocker>,
}

/// Why a run did not complete. Nothing of a failed migration is recorded, and
/// the lock is released on every one of these paths.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("cannot connect to the database: {0}")]
    Connect(#[source] sqlx::Error),
    #[error("the migration lock is held by {holder}; gave up after waiting {waited:?}; wait for that run to finish or raise the lock wait")]
    LockHeld { waited: Duration, holder: String },
    #[error("{0}")]
    Incompatible(String),
    #[error("migration {version} ({file}) failed: {message}; it was not recorded: fix the cause and run the same command again")]
    Failed {
        version: i64,
        file: String,
        message: String,
    },
    #[error("migration {version} ({file}) was still blocked by other transactions after {attempts} attempts with lock_timeout {lock_timeout:?}; find the long-running transaction (pg_stat_activity) and run again")]
    LockTimeoutExhausted {
        version: i64,
        file: String,
        attempts: u32,
        lock_timeout: Duration,
    },
    #[error("finish refused: live nodes run releases older than contract migrations require: {}; upgrade them first or pass --force", describe_blockers(.0))]
    OldNodesAlive(Vec<NodeBlocker>),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The runner's URL leads to a transaction pooler: its session lock
    /// would not hold. Nothing was locked or applied.
    #[error("the migration connection cannot hold the migration lock: {0}; connect the migrations to PostgreSQL itself")]
    Pooled(#[source] crate::db::pooler::PoolerError),
}

fn describe_blockers(blockers: &[NodeBlocker]) -> String {
    blockers
        .iter()
        .map(|b| {
            let silent = if b.silent_secs > SILENT_AFTER_SECS {
                format!(
                    " (silent for {} s with no recorded stop: it may be cut off from the \
                     database and still serving; pass --force only if it is gone for certain)",
                    b.silent_secs
                )
            } else {
                String::new()
            };
            format!(
                "{} {} runs {} but migration {} requires {}{silent}",
                b.service, b.node_id, b.version, b.migration, b.requires_release
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Runs a migration set against one database.
#[derive(Debug, Clone)]
pub struct Runner {
    set: MigrationSet,
    opts: RunnerOptions,
}

impl Runner {
    pub fn new(set: MigrationSet, opts: RunnerOptions) -> Self {
        Runner { set, opts }
    }

    pub fn set(&self) -> &MigrationSet {
        &self.set
    }

    pub fn options(&self) -> &RunnerOptions {
        &self.opts
    }

    /// The migrations a run in `mode` would apply to a database with `applied`,
    /// in order. `up` skips contract migrations; they wait for `finish`.
    ///
    /// The order is the versions' except that between two contract
    /// migrations, batched backfills run after the other expand migrations:
    /// a binary never waits for a backfill (see [`super::compat`]), so the
    /// schema it does wait for must not queue behind an hour-long copy, and
    /// no expand migration may need a backfill to have finished (what does
    /// belongs in a contract migration, which keeps its place).
    pub fn plan<'a>(&'a self, applied: &[AppliedMigration], mode: Mode) -> Vec<&'a MigrationDef> {
        let pending: Vec<&MigrationDef> = self
            .set
            .iter()
            .filter(|def| !applied.iter().any(|row| row.version == def.version))
            .filter(|def| matches!(mode, Mode::Finish { .. }) || def.phase == Phase::Expand)
            .collect();
        let mut plan = Vec::with_capacity(pending.len());
        let mut backfills = Vec::new();
        for def in pending {
            if def.phase == Phase::Contract {
                plan.append(&mut backfills);
                plan.push(def);
            } else if def.batched() {
                backfills.push(def);
            } else {
                plan.push(def);
            }
        }
        plan.append(&mut backfills);
        plan
    }

    /// Reads the database and answers what a run would apply, changing nothing
    /// and taking no lock. Refuses as a run would on an incompatible schema.
    pub async fn dry_run(
        &self,
        options: &PgConnectOptions,
        mode: Mode,
    ) -> Result<Vec<MigrationDef>, MigrateError> {
        let mut conn = self.connect(options).await?;
        let applied = read_applied(&mut conn).await?.unwrap_or_default();
        let _ = conn.close().await;
        refuse_incompatible(&self.set, &applied)?;
        Ok(self.plan(&applied, mode).into_iter().cloned().collect())
    }

    /// Applies what `mode` asks for under the advisory lock.
    ///
    /// The runner uses a connection of its own and closes it at the end of every
    /// path, so the session lock cannot outlive the run, even when the run fails
    /// or its future is dropped.
    pub fn run<'a>(
        &'a self,
        options: &'a PgConnectOptions,
        mode: Mode,
    ) -> Pin<Box<dyn Future<Output = Result<RunReport, MigrateError>> + Send + 'a>> {
        // Boxed with an explicit `Send` so callers can spawn it: without the box
        // rustc cannot prove the sqlx executor bounds for every lifetime.
        Box::pin(async move {
            self.check_session(options).await?;
            let mut conn = self.connect(options).await?;
            let result = match self.acquire_lock(&mut conn).await {
                Ok(()) => {
                    let result = self.run_locked(&mut conn, mode).await;
                    let unlocked: Result<bool, sqlx::Error> =
                        sqlx::query_scalar("SELECT pg_advisory_unlock($1)")
                            .bind(self.opts.lock_key)
                            .fetch_one(&mut conn)
                            .await;
                    if let Err(err) = unlocked {
                        warn!(error = %err, "Could not unlock the migration lock; closing the connection releases it.");
                    }
                    result
                }
                Err(err) => Err(err),
            };
            let _ = conn.close().await;
            result
        })
    }

    /// Refuses a URL that leads to a transaction pooler before taking the
    /// session lock, within a bounded time (see [`crate::db::pooler`]).
    pub(super) async fn check_session(
        &self,
        options: &PgConnectOptions,
    ) -> Result<(), MigrateError> {
        use crate::db::pooler::{check_session, PoolerError};
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .connect_lazy_with(
                options
                    .clone()
                    .application_name(&self.opts.application_name),
            );
        let checked = check_session(&pool).await;
        pool.close().await;
        match checked {
            Ok(()) => Ok(()),
            Err(PoolerError::Unreachable(e)) => Err(MigrateError::Connect(e)),
            Err(e) => Err(MigrateError::Pooled(e)),
        }
    }

    pub(super) async fn connect(
        &self,
        options: &PgConnectOptions,
    ) -> Result<PgConnection, MigrateError> {
        options
            .clone()
            .application_name(&self.opts.application_name)
            .connect()
            .await
            .map_err(MigrateError::Connect)
    }

    /// Polls `pg_try_advisory_lock` until the deadline, so the wait is bounded
    /// without holding a statement open on the server.
    pub(super) async fn acquire_lock(&self, conn: &mut PgConnection) -> Result<(), MigrateError> {
        let started = Instant::now();
        let mut pause = Duration::from_millis(25);
        loop {
            let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                .bind(self.opts.lock_key)
                .fetch_one(&mut *conn)
                .await?;
            if got {
                return Ok(());
            }
            let waited = started.elapsed();
            if waited >= self.opts.lock_wait {
                let holder = lock_holder(conn, self.opts.lock_key)
                    .await
                    .unwrap_or(None)
                    .unwrap_or_else(|| "another session".to_owned());
                return Err(MigrateError::LockHeld { waited, holder });
            }
            tokio::time::sleep(pause.min(self.opts.lock_wait - waited)).await;
            pause = (pause * 2).min(Duration::from_millis(500));
        }
    }

    async fn run_locked(
        &self,
        conn: &mut PgConnection,
        mode: Mode,
    ) -> Result<RunReport, MigrateError> {
        bootstrap(conn).await?;
        let applied = read_applied(conn).await?.unwrap_or_default();
        refuse_incompatible(&self.set, &applied)?;
        // Owned copies: borrowed plans held across awaits trip rustc's
        // higher-ranked `Send` check when the run is spawned.
        let plan: Vec<MigrationDef> = self.plan(&applied, mode).into_iter().cloned().collect();
        let mut report = RunReport::default();
        if let Mode::Finish { force } = mode {
            let blockers = self.old_nodes(conn, &plan).await?;
            if !blockers.is_empty() {
                if !force {
                    return Err(MigrateError::OldNodesAlive(blockers));
                }
                warn!(blockers = %describe_blockers(&blockers), "Forcing contract migrations past live older nodes.");
                report.forced_past = blockers;
            }
        } else {
            report.awaiting_finish = self
                .set
                .iter()
                .filter(|def| def.phase == Phase::Contract)
                .filter(|def| !applied.iter().any(|row| row.version == def.version))
                .map(|def| def.version)
                .collect();
        }
        for def in &plan {
            let step = if def.no_tx {
                self.apply_no_tx(conn, def).await?
            } else {
                self.apply_in_tx(conn, def).await?
            };
            info!(
                version = step.version,
                phase = %step.phase,
                attempts = step.attempts,
                elapsed_ms = step.elapsed.as_millis() as u64,
                "Applied migration {}.",
                def.file
            );
            report.applied.push(step);
        }
        Ok(report)
    }

    /// Runs the migration and its bookkeeping in one transaction: it is either
    /// applied and recorded, or neither.
    async fn apply_in_tx(
        &self,
        conn: &mut PgConnection,
        def: &MigrationDef,
    ) -> Result<AppliedStep, MigrateError> {
        let started = Instant::now();
        let mut attempts = 0;
        loop {
            attempts += 1;
            let outcome = apply_once(conn, def, &self.opts).await;
            match outcome {
                Ok(()) => return Ok(self.step(def, attempts, started)),
                Err(err) => self.retry_or_fail(def, attempts, err).await?,
            }
        }
    }

    /// Runs a `-- no-transaction` migration statement by statement (so that
    /// `CREATE INDEX CONCURRENTLY` works), then records it. A failure part-way
    /// records nothing; the statements are idempotent (the lint insists), so the
    /// next run repeats the migration from the start.
    async fn apply_no_tx(
        &self,
        conn: &mut PgConnection,
        def: &MigrationDef,
    ) -> Result<AppliedStep, MigrateError> {
        let started = Instant::now();
        let mut attempts = 0;
        set_timeouts(&mut *conn, &self.opts, false).await?;
        let result = self.no_tx_attempts(conn, def, &mut attempts).await;
        let reset = conn
            .execute("RESET lock_timeout; RESET statement_timeout")
            .await;
        result?;
        reset?;
        Ok(self.step(def, attempts, started))
    }

    /// Runs the whole file until it succeeds. A lock timeout restarts it from
    /// its first statement, not from the one that failed: a timed-out
    /// `CREATE INDEX CONCURRENTLY` leaves an invalid index that only the file's
    /// leading `DROP INDEX CONCURRENTLY IF EXISTS` clears.
    async fn no_tx_attempts(
        &self,
        conn: &mut PgConnection,
        def: &MigrationDef,
        attempts: &mut u32,
    ) -> Result<(), MigrateError> {
        let started = Instant::now();
        'attempt: loop {
            *attempts += 1;
            for statement in split_statements(&def.sql) {
                let outcome = if def.batched() {
                    repeat_until_zero(conn, def, &statement.text).await
                } else {
                    conn.execute(statement.text.as_str()).await.map(drop)
                };
                if let Err(err) = outcome {
                    self.retry_or_fail(def, *attempts, err).await?;
                    continue 'attempt;
                }
            }
            break;
        }
        // Never record a migration that leaves a half-built index behind.
        let invalid: Vec<String> = sqlx::query_scalar(
            "SELECT indexrelid::regclass::text FROM pg_index WHERE NOT indisvalid ORDER BY 1",
        )
        .fetch_all(&mut *conn)
        .await?;
        if !invalid.is_empty() {
            return Err(MigrateError::Failed {
                version: def.version,
                file: def.file.clone(),
                message: format!(
                    "invalid indexes remain after it ran: {}; drop them with DROP INDEX CONCURRENTLY and make the migration start with DROP INDEX CONCURRENTLY IF EXISTS",
                    invalid.join(", ")
                ),
            });
        }
        let mut tx = conn.begin().await?;
        record(&mut tx, def, started.elapsed()).await?;
        tx.commit().await?;
        Ok(())
    }

    fn step(&self, def: &MigrationDef, attempts: u32, started: Instant) -> AppliedStep {
        AppliedStep {
            version: def.version,
            description: def.description.clone(),
            phase: def.phase,
            attempts,
            elapsed: started.elapsed(),
        }
    }

    /// Sleeps and returns `Ok` when `err` is a lock timeout with retries left;
    /// otherwise turns it into the error that ends the run.
    pub(super) async fn retry_or_fail(
        &self,
        def: &MigrationDef,
        attempts: u32,
        err: sqlx::Error,
    ) -> Result<(), MigrateError> {
        let is_lock_timeout = err
            .as_database_error()
            .and_then(|e| e.code())
            .is_some_and(|code| code == LOCK_NOT_AVAILABLE);
        if !is_lock_timeout {
            return Err(MigrateError::Failed {
                version: def.version,
                file: def.file.clone(),
                message: err.to_string(),
            });
        }
        if attempts > self.opts.max_retries {
            return Err(MigrateError::LockTimeoutExhausted {
                version: def.version,
                file: def.file.clone(),
                attempts,
                lock_timeout: self.opts.lock_timeout,
            });
        }
        let backoff = backoff(self.opts.retry_backoff, attempts);
        warn!(
            version = def.version,
            attempt = attempts,
            backoff_ms = backoff.as_millis() as u64,
            "Migration hit lock_timeout; retrying."
        );
        tokio::time::sleep(backoff).await;
        Ok(())
    }

    async fn old_nodes(
        &self,
        conn: &mut PgConnection,
        plan: &[MigrationDef],
    ) -> Result<Vec<NodeBlocker>, MigrateError> {
        let contracts: Vec<&MigrationDef> = plan
            .iter()
            .filter(|d| d.phase == Phase::Contract && d.requires_release.is_some())
            .collect();
        if contracts.is_empty() {
            return Ok(Vec::new());
        }
        let nodes = live_nodes(conn, self.opts.node_liveness).await?;
        Ok(finish_blockers(&contracts, &nodes))
    }
}

/// The live nodes too old for the contract migrations in `plan`: what
/// `finish` refuses on, and what the admin's console shows as holding it back.
pub fn finish_blockers(plan: &[&MigrationDef], nodes: &[LiveNode]) -> Vec<NodeBlocker> {
    let mut blockers = Vec::new();
    {
        let contracts = plan.iter().filter(|d| d.phase == Phase::Contract);
        for def in contracts {
            let Some(required) = &def.requires_release else {
                continue;
            };
            for node in nodes {
                // A version that does not parse is treated as too old: refusing is
                // the safe answer when we cannot tell.
                let too_old = semver::Version::parse(&node.version)
                    .map(|v| v < *required)
                    .unwrap_or(true);
                if too_old {
                    blockers.push(NodeBlocker {
                        node_id: node.node_id.clone(),
                        service: node.service.clone(),
                        version: node.version.clone(),
                        migration: def.version,
                        requires_release: required.to_string(),
                        silent_secs: node.silent_secs,
                    });
                }
            }
        }
    }
    blockers
}

/// Refuses to touch a schema this set cannot live with.
pub(super) fn refuse_incompatible(
    set: &MigrationSet,
    applied: &[AppliedMigration],
) -> Result<(), MigrateError> {
    match check(set, applied) {
        verdict @ (Compatibility::Modified { .. }
        | Compatibility::Incompatible { .. }
        | Compatibility::Dirty { .. }) => Err(MigrateError::Incompatible(verdict.describe())),
        _ => Ok(()),
    }
}

/// One attempt at a transactional migration: the SQL and its bookkeeping commit
/// together or not at all.
async fn apply_once(
    conn: &mut PgConnection,
    def: &MigrationDef,
    opts: &RunnerOptions,
) -> Result<(), sqlx::Error> {
    let mut tx = conn.begin().await?;
    set_timeouts(&mut tx, opts, true).await?;
    let started = Instant::now();
    tx.execute(def.sql.as_str()).await?;
    record(&mut tx, def, started.elapsed()).await?;
    tx.commit().await
}

/// Exponential back-off with ±25 % jitter, capped at 30 s.
fn backoff(base: Duration, attempt: u32) -> Duration {
    let exp = base.saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
    let capped = exp.min(Duration::from_secs(30));
    let jitter = rand::rng().random_range(0.75..1.25);
    capped.mul_f64(jitter)
}

pub(super) async fn set_timeouts(
    conn: &mut PgConnection,
    opts: &RunnerOptions,
    local: bool,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "SELECT set_config('lock_timeout', $1, $3), set_config('statement_timeout', $2, $3)",
    )
    .bind(format!("{}ms", opts.lock_timeout.as_millis()))
    .bind(format!("{}ms", opts.statement_timeout.as_millis()))
    .bind(local)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Creates the bookkeeping tables if this is the first run. `_sqlx_migrations`
/// has exactly sqlx's layout, so sqlx-cli and plain SQL keep working.
pub(super) async fn bootstrap(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    conn.execute(
        "CREATE TABLE IF NOT EXISTS _sqlx_migrations (
            version BIGINT PRIMARY KEY,
            description TEXT NOT NULL,
            installed_on TIMESTAMPTZ NOT NULL DEFAULT now(),
            success BOOLEAN NOT NULL,
            checksum BYTEA NOT NULL,
            execution_time BIGINT NOT NULL
        );
        CREATE TABLE IF NOT EXISTS obleth_migration_phases (
            version BIGINT PRIMARY KEY,
            phase TEXT NOT NULL CHECK (phase IN ('expand', 'contract')),
            requires_release TEXT,
            recorded_at TIMESTAMPTZ NOT NULL DEFAULT now()
        );",
    )
    .await?;
    Ok(())
}

/// Records an applied migration and its phase (inside the caller's transaction).
async fn record(
    conn: &mut PgConnection,
    def: &MigrationDef,
    elapsed: Duration,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES ($1, $2, TRUE, $3, $4)",
    )
    .bind(def.version)
    .bind(&def.description)
    .bind(&def.checksum)
    .bind(i64::try_from(elapsed.as_nanos()).unwrap_or(i64::MAX))
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "INSERT INTO obleth_migration_phases (version, phase, requires_release) VALUES ($1, $2, $3) \
         ON CONFLICT (version) DO UPDATE SET phase = EXCLUDED.phase, requires_release = EXCLUDED.requires_release",
    )
    .bind(def.version)
    .bind(def.phase.as_str())
    .bind(def.requires_release.as_ref().map(ToString::to_string))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// A node recorded alive in the `nodes` table.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LiveNode {
    pub node_id: String,
    pub service: String,
    pub version: String,
    /// Seconds since its last heartbeat.
    pub silent_secs: i64,
    /// The newest migration its binary embeds (`nodes.release_schema`);
    /// `None` for a release older than that column, or before it exists.
    pub release_schema: Option<i64>,
}

/// Nodes that did not record their stop and were seen within `window` (the
/// horizon); none when the table does not exist.
pub async fn live_nodes(
    conn: &mut PgConnection,
    window: Duration,
) -> Result<Vec<LiveNode>, sqlx::Error> {
    let (has_nodes, has_release_schema): (bool, bool) = sqlx::query_as(
        "SELECT to_regclass('nodes') IS NOT NULL, EXISTS (SELECT 1 FROM pg_attribute \
         WHERE attrelid = to_regclass('nodes') AND attname = 'release_schema' \
         AND NOT attisdropped)",
    )
    .fetch_one(&mut *conn)
    .await?;
    if !has_nodes {
        return Ok(Vec::new());
    }
    // Before 20261128000007 no node records its release schema.
    let release_schema = if has_release_schema {
        "release_schema"
    } else {
        "NULL::bigint AS release_schema"
    };
    sqlx::query_as(&format!(
        "SELECT node_id, service, version, \
         floor(extract(epoch FROM now() - last_seen))::bigint AS silent_secs, {release_schema} \
         FROM nodes \
         WHERE stopped_at IS NULL AND last_seen > now() - make_interval(secs => $1) \
         ORDER BY node_id"
    ))
    .bind(window.as_secs_f64())
    .fetch_all(conn)
    .await
}

/// pid, application name, client address and connection time of a lock holder.
type LockHolderRow = (
    i32,
    Option<String>,
    Option<String>,
    Option<chrono::DateTime<chrono::Utc>>,
);

/// Who holds the advisory lock `key` in this database (advisory locks are per
/// database; another database on the same server may hold the same key), as
/// `pid N (application, client) since T`.
async fn lock_holder(conn: &mut PgConnection, key: i64) -> Result<Option<String>, sqlx::Error> {
    let high = (key >> 32) & 0xffff_ffff;
    let low = key & 0xffff_ffff;
    let row: Option<LockHolderRow> = sqlx::query_as(
        "SELECT a.pid, a.application_name, host(a.client_addr), a.backend_start \
             FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
             WHERE l.locktype = 'advisory' AND l.granted \
               AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
               AND l.classid::bigint = $1 AND l.objid::bigint = $2 AND l.objsubid = 1 \
             LIMIT 1",
    )
    .bind(high)
    .bind(low)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|(pid, app, client, since)| {
        let app = app
            .filter(|a| !a.is_empty())
            .unwrap_or_else(|| "unnamed".to_owned());
        let client = client.unwrap_or_else(|| "local socket".to_owned());
        match since {
            Some(t) => format!("backend pid {pid} ({app} from {client}, connected since {t})"),
            None => format!("backend pid {pid} ({app} from {client})"),
        }
    }))
}

/// Runs a batched migration's statement until it answers 0 or no row, each
/// run its own transaction under the runner's timeouts, logging progress
/// every few seconds. The statement keeps its own progress in the database,
/// so a run stopped part-way resumes where it stopped.
async fn repeat_until_zero(
    conn: &mut PgConnection,
    def: &MigrationDef,
    statement: &str,
) -> Result<(), sqlx::Error> {
    let started = Instant::now();
    let mut logged = Instant::now();
    let (mut runs, mut total) = (0u64, 0i64);
    loop {
        let answer: Option<Option<i64>> = sqlx::query_scalar(statement)
            .fetch_optional(&mut *conn)
            .await?;
        runs += 1;
        let n = answer.flatten().unwrap_or(0);
        if n <= 0 {
            break;
        }
        total += n;
        if logged.elapsed() >= Duration::from_secs(5) {
            info!(
                version = def.version,
                runs,
                total,
                elapsed_s = started.elapsed().as_secs(),
                "Batched migration {} in progress.",
                def.file
            );
            logged = Instant::now();
        }
    }
    info!(
        version = def.version,
        runs,
        total,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "Batched migration {} finished its statement.",
        def.file
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(version: i64, phase: Phase, batched: bool) -> MigrationDef {
        let header = if batched {
            "-- no-transaction\n-- batched\n"
        } else {
            ""
        };
        MigrationDef {
            sql: format!("{header}SELECT {version};"),
            no_tx: batched,
            ..MigrationDef::for_test(version, phase)
        }
    }

    #[test]
    fn backfills_run_after_the_expand_migrations_but_before_a_later_contract() {
        let runner = Runner::new(
            MigrationSet::from_defs(vec![
                def(1, Phase::Expand, false),
                def(2, Phase::Expand, true),
                def(3, Phase::Expand, false),
                def(4, Phase::Contract, false),
                def(5, Phase::Expand, true),
                def(6, Phase::Expand, false),
            ]),
            RunnerOptions::default(),
        );
        let versions = |mode| -> Vec<i64> {
            runner
                .plan(&[], mode)
                .into_iter()
                .map(|d| d.version)
                .collect()
        };
        assert_eq!(versions(Mode::Up), [1, 3, 6, 2, 5]);
        assert_eq!(versions(Mode::Finish { force: false }), [1, 3, 2, 4, 6, 5]);
    }

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        let base = Duration::from_millis(100);
        for attempt in 1..6 {
            let nominal = 100.0 * f64::from(1u32 << (attempt - 1));
            let got = backoff(base, attempt).as_secs_f64() * 1000.0;
            assert!(
                got >= nominal * 0.75 && got <= nominal * 1.25,
                "attempt {attempt}: {got}"
            );
        }
        assert!(backoff(base, 30) <= Duration::from_secs_f64(37.5));
    }
}
