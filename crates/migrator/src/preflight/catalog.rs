//! What preflight reads from the server: relations with their size and row
//! estimate, function volatility, open transactions, lock holders and
//! replication. Every query is read-only, and none selects a session's query
//! text, which can hold secrets.

use obleth_config::migrate::locks::{LockMode, Target};
use serde::Serialize;
use sqlx::PgConnection;

/// An existing relation a migration statement locks.
#[derive(Debug, Clone, Serialize)]
pub struct Relation {
    #[serde(skip)]
    pub oid: i64,
    /// The name as PostgreSQL prints it (`regclass`).
    pub name: String,
    /// `pg_total_relation_size`, summed over the partitions of a partitioned
    /// table; `None` when it could not be read within the lock timeout.
    pub size_bytes: Option<i64>,
    /// `reltuples` (summed over partitions); `None` when never analysed.
    pub rows_estimate: Option<i64>,
    /// Why the estimate cannot be trusted, when it cannot: never analysed
    /// (`reltuples` -1), or 0 while the table has pages.
    pub rows_note: Option<&'static str>,
}

const NEVER_ANALYSED: &str = "never analysed";
const STALE: &str = "not analysed since it filled";

impl Relation {
    /// The row estimate as people read it, such as `~20000 rows`.
    pub fn rows_text(&self) -> String {
        match (self.rows_estimate, self.rows_note) {
            (Some(n), None) => format!("~{n} rows"),
            (Some(n), Some(note)) => format!("{n} rows per statistics, {note}"),
            (None, note) => format!("rows unknown ({})", note.unwrap_or(NEVER_ANALYSED)),
        }
    }
}

type RelationRow = (i64, String, String, f64);

/// Finds the relation a target names, as the migration would resolve it
/// (through the search path); `None` when it does not exist yet.
pub async fn resolve(
    conn: &mut PgConnection,
    target: &Target,
) -> Result<Option<Relation>, sqlx::Error> {
    let row: Option<RelationRow> = match target {
        Target::Table(name) => sqlx::query_as(
            "SELECT c.oid::bigint, c.oid::regclass::text, c.relkind::text, c.reltuples::float8 \
                 FROM pg_class c WHERE c.oid = to_regclass($1)",
        )
        .bind(name.to_string())
        .fetch_optional(&mut *conn)
        .await?,
        Target::IndexOf(index) => sqlx::query_as(
            "SELECT c.oid::bigint, c.oid::regclass::text, c.relkind::text, c.reltuples::float8 \
                 FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid \
                 WHERE i.indexrelid = to_regclass($1)",
        )
        .bind(index.to_string())
        .fetch_optional(&mut *conn)
        .await?,
    };
    let Some((oid, name, relkind, reltuples)) = row else {
        return Ok(None);
    };
    let (size_bytes, rows_estimate, rows_note) = if relkind == "p" {
        // Partitions are summed: the parent of a partitioned table holds no rows.
        let partitions: Result<(Option<i64>, Option<f64>, Option<bool>), _> = sqlx::query_as(
            "SELECT coalesce(sum(pg_total_relation_size(t.relid)), 0)::bigint, \
                    sum(greatest(c.reltuples, 0))::float8, bool_or(c.reltuples >= 0) \
             FROM pg_partition_tree($1::bigint::oid) t JOIN pg_class c ON c.oid = t.relid \
             WHERE t.isleaf",
        )
        .bind(oid)
        .fetch_one(&mut *conn)
        .await;
        match partitions {
            Ok((size, rows, analysed)) => {
                let analysed = analysed == Some(true);
                (
                    size,
                    rows.filter(|_| analysed).map(|r| r.round() as i64),
                    (!analysed).then_some(NEVER_ANALYSED),
                )
            }
            Err(_) => (None, None, None),
        }
    } else {
        // pg_total_relation_size takes ACCESS SHARE: the session's
        // lock_timeout turns a wait behind an exclusive lock into "unknown".
        let sizes: Option<(Option<i64>, Option<i64>)> = sqlx::query_as(
            "SELECT pg_total_relation_size($1::bigint::oid), pg_relation_size($1::bigint::oid)",
        )
        .bind(oid)
        .fetch_one(&mut *conn)
        .await
        .ok();
        let (size, heap) = sizes.unwrap_or((None, None));
        let rows = (reltuples >= 0.0).then(|| reltuples.round() as i64);
        let note = if reltuples < 0.0 {
            Some(NEVER_ANALYSED)
        } else if reltuples == 0.0 && heap.is_some_and(|h| h > 0) {
            Some(STALE)
        } else {
            None
        };
        (size, rows, note)
    };
    Ok(Some(Relation {
        oid,
        name,
        size_bytes,
        rows_estimate,
        rows_note,
    }))
}

/// Whether any of the named functions is volatile; `None` when none is found.
pub async fn any_volatile(
    conn: &mut PgConnection,
    functions: &[String],
) -> Result<Option<bool>, sqlx::Error> {
    sqlx::query_scalar("SELECT bool_or(provolatile = 'v') FROM pg_proc WHERE proname = ANY($1)")
        .bind(functions)
        .fetch_one(conn)
        .await
}

/// A session of this database, without its query text.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Session {
    pub pid: i32,
    pub application: Option<String>,
    pub backend_type: Option<String>,
    /// `active`, `idle in transaction` and so on.
    pub state: Option<String>,
    /// Seconds since its transaction began.
    pub xact_age_secs: Option<f64>,
    pub wait_event_type: Option<String>,
}

/// Sessions of this database whose transaction is older than `secs`, oldest first.
pub async fn long_transactions(
    conn: &mut PgConnection,
    secs: u64,
) -> Result<Vec<Session>, sqlx::Error> {
    sqlx::query_as(
        "SELECT pid, application_name AS application, backend_type, state, \
                extract(epoch FROM now() - xact_start)::float8 AS xact_age_secs, wait_event_type \
         FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid() \
           AND xact_start IS NOT NULL AND now() - xact_start > make_interval(secs => $1) \
         ORDER BY xact_start",
    )
    .bind(secs as f64)
    .fetch_all(conn)
    .await
}

/// Client sessions of this database whose details this role may not see
/// (another role's, without `pg_read_all_stats`).
pub async fn hidden_sessions(conn: &mut PgConnection) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid() \
           AND backend_type = 'client backend' AND state IS NULL",
    )
    .fetch_one(conn)
    .await
}

/// A lock another session holds or awaits on a relation the migrations touch.
#[derive(Debug, Clone, Serialize)]
pub struct HeldLock {
    #[serde(flatten)]
    pub session: Session,
    pub table: String,
    #[serde(skip)]
    pub oid: i64,
    pub mode: String,
    pub granted: bool,
}

impl HeldLock {
    pub fn mode(&self) -> Option<LockMode> {
        LockMode::from_pg_locks(&self.mode)
    }
}

type HeldLockRow = (
    i32,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<f64>,
    Option<String>,
    String,
    i64,
    String,
    bool,
);

/// The table locks other sessions hold or wait for on `oids`.
pub async fn locks_on(conn: &mut PgConnection, oids: &[i64]) -> Result<Vec<HeldLock>, sqlx::Error> {
    let rows: Vec<HeldLockRow> = sqlx::query_as(
        "SELECT a.pid, a.application_name, a.backend_type, a.state, \
                extract(epoch FROM now() - a.xact_start)::float8, a.wait_event_type, \
                l.relation::regclass::text, l.relation::bigint, l.mode, l.granted \
         FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
         WHERE l.locktype = 'relation' AND l.pid <> pg_backend_pid() \
           AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
           AND l.relation::bigint = ANY($1) \
         ORDER BY a.xact_start NULLS LAST, l.pid",
    )
    .bind(oids)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(pid, application, backend_type, state, age, wait, table, oid, mode, granted)| {
                HeldLock {
                    session: Session {
                        pid,
                        application,
                        backend_type,
                        state,
                        xact_age_secs: age,
                        wait_event_type: wait,
                    },
                    table,
                    oid,
                    mode,
                    granted,
                }
            },
        )
        .collect())
}

/// A standby streaming from this primary.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Standby {
    pub application: Option<String>,
    pub client_addr: Option<String>,
    pub state: Option<String>,
    /// `replay_lag` in seconds; `None` when the standby has caught up and is idle.
    pub replay_lag_secs: Option<f64>,
}

pub async fn standbys(conn: &mut PgConnection) -> Result<Vec<Standby>, sqlx::Error> {
    sqlx::query_as(
        "SELECT application_name AS application, host(client_addr) AS client_addr, state, \
                extract(epoch FROM replay_lag)::float8 AS replay_lag_secs \
         FROM pg_stat_replication ORDER BY application_name",
    )
    .fetch_all(conn)
    .await
}

/// The session holding the migration runners' advisory lock `key` in this
/// database, if any: a migration run is in progress.
pub async fn migration_lock_holder(
    conn: &mut PgConnection,
    key: i64,
) -> Result<Option<Session>, sqlx::Error> {
    sqlx::query_as(
        "SELECT a.pid, a.application_name AS application, a.backend_type, a.state, \
                extract(epoch FROM now() - a.xact_start)::float8 AS xact_age_secs, a.wait_event_type \
         FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
         WHERE l.locktype = 'advisory' AND l.granted AND l.pid <> pg_backend_pid() \
           AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
           AND l.classid::bigint = $1 AND l.objid::bigint = $2 AND l.objsubid = 1 \
         LIMIT 1",
    )
    .bind((key >> 32) & 0xffff_ffff)
    .bind(key & 0xffff_ffff)
    .fetch_optional(conn)
    .await
}
