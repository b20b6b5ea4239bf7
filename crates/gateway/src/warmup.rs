//! Start-up against PostgreSQL: the schema compatibility check, then the warm-up
//! that loads every active key before the gateway reports ready, and the same
//! load again (with a sweep) when the change feed must reload everything.

use std::collections::HashSet;
use std::future::Future;
use std::time::{Duration, Instant};

use futures_util::TryStreamExt;
use obleth_config::db::key_store::{self, BlockRange, KeyColumns};
use obleth_config::migrate::{check, read_applied, Compatibility, MigrationSet};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use uuid::Uuid;

use crate::catalog::Catalog;
use crate::history::FeedMark;
use crate::keycache::Entry;
use crate::state::AppState;

/// The schema can never suit this build: the process must exit.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct IncompatibleSchema(pub String);

/// Waits until the schema suits this build. Pending migrations keep the gateway
/// not ready (saying so in health and the log) and are re-checked; an
/// incompatible or edited schema is an error naming the migrations.
pub async fn wait_for_schema(
    state: &AppState,
    pool: &PgPool,
    stop: &CancellationToken,
) -> Result<(), IncompatibleSchema> {
    let set = MigrationSet::embedded().map_err(|e| IncompatibleSchema(e.to_string()))?;
    let mut logged = String::new();
    loop {
        let verdict = match pool.acquire().await {
            Ok(mut conn) => match read_applied(&mut conn).await {
                Ok(applied) => {
                    let applied = applied.unwrap_or_default();
                    state
                        .health
                        .set_schema_applied(applied.iter().map(|m| m.version).max());
                    state.health.set_database_ok(true);
                    Some(check(&set, &applied))
                }
                Err(e) => {
                    state
                        .health
                        .set_schema(false, format!("cannot read the schema state: {e}"));
                    None
                }
            },
            Err(e) => {
                state.health.set_database_ok(false);
                state
                    .health
                    .set_schema(false, format!("database unreachable: {e}"));
                None
            }
        };
        if let Some(verdict) = verdict {
            let message = verdict.describe();
            match verdict {
                Compatibility::Compatible { .. } => {
                    info!("{message}");
                    state.health.set_schema(true, message);
                    return Ok(());
                }
                Compatibility::Incompatible { .. } | Compatibility::Modified { .. } => {
                    return Err(IncompatibleSchema(message));
                }
                Compatibility::NeedsMigration { .. } | Compatibility::Dirty { .. } => {
                    if logged != message {
                        warn!("Not ready: {message}");
                        logged.clone_from(&message);
                    }
                    state.health.set_schema(false, message);
                }
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
}

/// How long one step of a load (a query, or a scan's next row) may take
/// before the load fails: a partitioned network hangs queries instead of
/// failing them, and the feed that reloads must not hang with it. A load
/// that keeps making progress may take as long as it needs.
const STEP_TIMEOUT: Duration = Duration::from_secs(5);

/// `query`, failed with a timeout after [`STEP_TIMEOUT`].
async fn step<T>(query: impl Future<Output = Result<T, sqlx::Error>>) -> Result<T, sqlx::Error> {
    match tokio::time::timeout(STEP_TIMEOUT, query).await {
        Ok(done) => done,
        Err(_) => Err(sqlx::Error::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no answer within {} s", STEP_TIMEOUT.as_secs()),
        ))),
    }
}

/// Concurrent scans of the key table in a warm-up.
const WARMUP_SCANS: u32 = 4;
/// Keys decoded before they are stored under one write lock.
const WARMUP_BATCH: usize = 4096;

/// Loads every active key, the teams and the catalog. Answers the feed's
/// mark: the change log's high-water mark and the server, read *before* the
/// keys, so replaying from it misses nothing.
///
/// `active` is the count of active keys read before (the memory check's):
/// the store reserves room for that many at once. The keys are read by
/// [`WARMUP_SCANS`] concurrent scans of block ranges of the table, each on
/// its own pooled connection, decoding only the columns the store keeps.
///
/// The caller listens for changes since before this call, so once the keys
/// are loaded the store holds every key as of the mark and will be told of
/// every change after it: as complete as after a catch-up, so it counts as
/// live from here. Otherwise a gateway that reports ready would look unknown
/// keys up in the database (and refuse those past the lookup limit with 503)
/// until the feed's first catch-up, which then applies what changed since.
pub async fn warm(state: &AppState, pool: &PgPool, active: u64) -> Result<FeedMark, sqlx::Error> {
    state
        .keys
        .reserve(usize::try_from(active).unwrap_or(usize::MAX));
    let mark = load(state, pool, false).await?;
    state.keys.set_live(true);
    Ok(mark)
}

/// The warm-up again, while serving, for a feed that cannot catch up
/// (`history::ReloadReason`): every active key is read and stored over the
/// ones held, then the keys the scans did not see (revoked or deleted
/// meanwhile) are forgotten, and the catalog, teams, prices and maintenance
/// are replaced. Keys held keep answering during the reload. The sweep
/// holds the ids read, 16 bytes and a hash-table slot a key, until it ends.
pub async fn reload(state: &AppState, pool: &PgPool) -> Result<FeedMark, sqlx::Error> {
    load(state, pool, true).await
}

async fn load(state: &AppState, pool: &PgPool, sweep: bool) -> Result<FeedMark, sqlx::Error> {
    let started = Instant::now();
    let mark = FeedMark::loaded(&step(obleth_config::db::changes::log_bounds(pool, 0)).await?);
    let scans = WARMUP_SCANS.min(state.settings.database.max_connections.max(1));
    let blocks = step(key_store::key_table_blocks(pool)).await?;
    let mut tasks = tokio::task::JoinSet::new();
    for range in BlockRange::split(scans, blocks) {
        tasks.spawn(scan(state.clone(), pool.clone(), range, sweep));
    }
    let mut count: i64 = 0;
    let mut seen = HashSet::new();
    let mut failure = None;
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(Ok((n, ids))) => {
                count += n;
                seen.extend(ids);
            }
            Ok(Err(e)) => failure = Some(e),
            Err(e) => failure = Some(sqlx::Error::Io(std::io::Error::other(e))),
        }
    }
    if let Some(e) = failure {
        return Err(e);
    }
    let forgotten = if sweep {
        state.keys.retain_ids(&seen)
    } else {
        0
    };
    drop(seen);
    state.keys.warmed_up();
    let keys_loaded = started.elapsed();
    let catalog = step(obleth_config::db::catalog::load_catalog(pool)).await?;
    state
        .catalog
        .set(Catalog::from_db(&catalog, &state.settings.egress));
    state
        .keys
        .replace_teams(step(obleth_config::db::teams::list_teams(pool)).await?);
    step(state.prices.load_from_db(pool)).await?;
    let maintenance = step(obleth_config::db::settings::get_maintenance(pool)).await?;
    apply_maintenance(state, &maintenance);
    let elapsed = started.elapsed();
    state.metrics.warmup_seconds.set(elapsed.as_secs_f64());
    state.metrics.warmup_keys.set(count);
    info!(
        keys = count,
        forgotten,
        model_lists = state.keys.model_lists(),
        elapsed_ms = elapsed.as_millis() as u64,
        keys_ms = keys_loaded.as_millis() as u64,
        high_water = mark.seq,
        "{}",
        if sweep {
            "Key cache reloaded."
        } else {
            "Key cache warmed."
        }
    );
    Ok(mark)
}

/// Reads the active keys in `range` into the store, in batches; answers how
/// many it read and, for a sweep, their ids. Each row within
/// [`STEP_TIMEOUT`].
async fn scan(
    state: AppState,
    pool: PgPool,
    range: BlockRange,
    sweep: bool,
) -> Result<(i64, Vec<Uuid>), sqlx::Error> {
    let mut rows = key_store::active_key_rows(&pool, range);
    let mut batch = Vec::with_capacity(WARMUP_BATCH);
    let mut ids = Vec::new();
    let mut count = 0;
    while let Some(row) = step(rows.try_next()).await? {
        count += 1;
        if let Some(entry) = Entry::new(KeyColumns::from_row(&row)?) {
            if sweep {
                ids.push(entry.id());
            }
            batch.push(entry);
        }
        if batch.len() == WARMUP_BATCH {
            state.keys.load(&mut batch);
        }
    }
    state.keys.load(&mut batch);
    Ok((count, ids))
}

/// Puts the gateway in or out of maintenance mode.
pub fn apply_maintenance(state: &AppState, m: &obleth_config::db::settings::Maintenance) {
    let next = m.enabled.then(|| crate::state::Maintenance {
        message: if m.message.is_empty() {
            "the service is under maintenance; retry later".to_owned()
        } else {
            m.message.clone()
        },
        retry_after_secs: m.retry_after_secs.max(1),
    });
    let mut current = state.maintenance.write().unwrap_or_else(|e| e.into_inner());
    if *current != next {
        match &next {
            Some(m) => info!(message = %m.message, "Maintenance mode on."),
            None => info!("Maintenance mode off."),
        }
        *current = next;
    }
}
