//! A sampler of lock waits: every few milliseconds it lists the backends of
//! one database waiting for a lock (`wait_event_type = 'Lock'`: a table,
//! a row, an advisory lock) and keeps, for each wait, how long it had lasted
//! when last seen, so a scenario can report the longest wait of any statement.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How often the sampler looks.
pub const EVERY: Duration = Duration::from_millis(10);

/// One wait, from its start to the last time the sampler saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct LockWait {
    /// From `pg_locks.waitstart` (or the statement's start, for the moment
    /// before the server fills that in) to the last sighting.
    pub waited: Duration,
    /// The waiting statement, whitespace collapsed.
    pub statement: String,
    pub application: String,
    /// The lock it waited for, as `pg_locks` names it: `relation`,
    /// `transactionid`, `advisory` ...
    pub lock: String,
}

/// What the sampler saw.
#[derive(Debug, Clone, Default)]
pub struct LockWaitReport {
    /// Distinct waits seen.
    pub waits: usize,
    /// Samples taken.
    pub samples: u64,
    pub longest: Option<LockWait>,
}

impl LockWaitReport {
    /// The longest wait in milliseconds, 0 without any.
    pub fn longest_ms(&self) -> u128 {
        self.longest.as_ref().map_or(0, |w| w.waited.as_millis())
    }
}

/// A running sampler.
#[derive(Debug)]
pub struct LockWaits {
    stop: CancellationToken,
    handle: JoinHandle<anyhow::Result<LockWaitReport>>,
}

type Row = (i32, DateTime<Utc>, f64, String, String, String);

impl LockWaits {
    /// Starts sampling the database at `url` on a connection of its own.
    pub async fn start(url: &str) -> anyhow::Result<LockWaits> {
        let pool = PgPoolOptions::new().max_connections(1).connect(url).await?;
        let stop = CancellationToken::new();
        let handle = tokio::spawn(sample(pool, stop.clone()));
        Ok(LockWaits { stop, handle })
    }

    /// Stops sampling and reports.
    pub async fn finish(self) -> anyhow::Result<LockWaitReport> {
        self.stop.cancel();
        self.handle.await?
    }
}

async fn sample(pool: PgPool, stop: CancellationToken) -> anyhow::Result<LockWaitReport> {
    let mut seen: HashMap<(i32, DateTime<Utc>), LockWait> = HashMap::new();
    let mut report = LockWaitReport::default();
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT a.pid, COALESCE(l.waitstart, a.query_start), \
                    EXTRACT(epoch FROM clock_timestamp() - COALESCE(l.waitstart, a.query_start))::float8, \
                    a.query, a.application_name, COALESCE(l.locktype, '') \
             FROM pg_stat_activity a \
             LEFT JOIN LATERAL (SELECT min(w.waitstart) AS waitstart, min(w.locktype) AS locktype \
                                FROM pg_locks w WHERE w.pid = a.pid AND NOT w.granted) l ON TRUE \
             WHERE a.wait_event_type = 'Lock' AND a.datname = current_database() \
               AND a.pid <> pg_backend_pid() AND a.query_start IS NOT NULL",
        )
        .fetch_all(&pool)
        .await?;
        report.samples += 1;
        for (pid, since, secs, query, application, lock) in rows {
            let waited = Duration::from_secs_f64(secs.max(0.0));
            let entry = seen.entry((pid, since)).or_insert_with(|| LockWait {
                waited,
                statement: query.split_whitespace().collect::<Vec<_>>().join(" "),
                application,
                lock,
            });
            entry.waited = entry.waited.max(waited);
        }
    }
    pool.close().await;
    report.waits = seen.len();
    report.longest = seen.into_values().max_by_key(|w| w.waited);
    Ok(report)
}
