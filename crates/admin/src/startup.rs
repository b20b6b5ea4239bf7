//! Start-up against PostgreSQL: pending expand migrations through the shared
//! runner (when `migrations.migrate_on_startup`), then the compatibility check
//! that makes the admin ready or refuses the schema.

use std::str::FromStr;
use std::time::Duration;

use obleth_config::db::pooler::PoolerError;
use obleth_config::migrate::runner::MigrateError;
use obleth_config::migrate::{check, read_applied, MigrationSet, Mode, Runner, RunnerOptions};
use sqlx::postgres::PgConnectOptions;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::state::AppState;

/// How long to wait before trying again after the database did not answer,
/// the migration lock was held too long, or migrations are still pending.
const RETRY: Duration = Duration::from_secs(2);

/// The schema can never suit this build (or a migration failed): the process
/// must exit non-zero with this message, which names the migrations.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Fatal(pub String);

/// Migrates (if configured) and waits until the schema suits this build,
/// keeping the admin not ready meanwhile with a message saying why. Returns
/// when the schema is compatible or `stop` is cancelled.
pub async fn prepare_schema(state: &AppState, stop: &CancellationToken) -> Result<(), Fatal> {
    let set = MigrationSet::embedded().map_err(|e| Fatal(e.to_string()))?;
    // Migrations first: their runner refuses a transaction pooler naming
    // `database.direct_url`, the first thing to set behind PgBouncer.
    if state.settings.migrations.migrate_on_startup {
        migrate(state, &set, stop).await?;
    }
    check_query_pool(state, stop).await?;
    wait_compatible(state, &set, stop).await
}

/// Refuses a query pool whose pooler mixes up prepared statements (see
/// `obleth_config::db::pooler`), retrying while the database does not answer.
async fn check_query_pool(state: &AppState, stop: &CancellationToken) -> Result<(), Fatal> {
    loop {
        match obleth_config::db::pooler::check_statements(&state.pool).await {
            Ok(()) => return Ok(()),
            Err(PoolerError::Unreachable(e)) => {
                state.health.set_database_ok(false);
                state
                    .health
                    .set_schema(false, format!("database unreachable: {e}"));
            }
            Err(e) => return Err(Fatal(format!("database.url: {e}"))),
        }
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = tokio::time::sleep(RETRY) => {}
        }
    }
}

/// Applies pending expand migrations. Many replicas may start at once: the
/// runner's advisory lock lets one apply them while the others wait, then
/// find nothing left to do.
async fn migrate(
    state: &AppState,
    set: &MigrationSet,
    stop: &CancellationToken,
) -> Result<(), Fatal> {
    // Migrations take a session lock: they run on `database.direct_url`, the
    // query pool's `database.url` may be a transaction pooler.
    let database = &state.settings.database;
    let field = database.session_field();
    let url = database
        .session_url()
        .ok_or_else(|| Fatal("database.url: required".to_owned()))?;
    let options = PgConnectOptions::from_str(url.expose())
        .map_err(|e| Fatal(format!("{field} {}: {e}", url.redacted())))?;
    let mut runner_options = RunnerOptions::from(&state.settings.migrations);
    runner_options.application_name = format!("obleth-admin {}", state.node_id);
    let runner = Runner::new(set.clone(), runner_options);
    loop {
        state.health.set_schema(false, "applying migrations");
        let outcome = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            outcome = runner.run(&options, Mode::Up) => outcome,
        };
        match outcome {
            Ok(report) => {
                let applied: Vec<i64> = report.applied.iter().map(|s| s.version).collect();
                state
                    .metrics
                    .migrations_applied
                    .inc_by(applied.len() as u64);
                info!(?applied, awaiting_finish = ?report.awaiting_finish, "Startup migrations done.");
                return Ok(());
            }
            // Transient: the database is not there yet, or another replica
            // holds the lock for longer than our wait.
            Err(
                e @ (MigrateError::Connect(_)
                | MigrateError::LockHeld { .. }
                | MigrateError::Database(_)),
            ) => {
                state.health.set_database_ok(false);
                let message = format!("startup migrations could not run yet: {e}");
                warn!("{message}; retrying.");
                state.health.set_schema(false, message);
            }
            Err(e @ MigrateError::Pooled(_)) => {
                return Err(Fatal(format!(
                    "startup migrations refused {field} ({}): {e}; {}",
                    url.redacted(),
                    direct_url_hint(field)
                )))
            }
            Err(e) => return Err(Fatal(format!("startup migrations failed: {e}"))),
        }
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = tokio::time::sleep(RETRY) => {}
        }
    }
}

/// What to do about a URL that leads to a transaction pooler, by the
/// setting it came from.
pub fn direct_url_hint(field: &str) -> &'static str {
    if field == "database.direct_url" {
        "database.direct_url must name PostgreSQL itself, not the pooler"
    } else {
        "set database.direct_url (OBLETH_DATABASE__DIRECT_URL) to PostgreSQL itself and keep the pooler in database.url"
    }
}

/// Checks the schema until it is compatible. Pending migrations keep the
/// admin not ready (the message says to run the migrator); an incompatible,
/// edited or dirty schema is fatal.
async fn wait_compatible(
    state: &AppState,
    set: &MigrationSet,
    stop: &CancellationToken,
) -> Result<(), Fatal> {
    let mut logged = String::new();
    loop {
        match state.pool.acquire().await {
            Ok(mut conn) => match read_applied(&mut conn).await {
                Ok(applied) => {
                    let applied = applied.unwrap_or_default();
                    state
                        .health
                        .set_schema_applied(applied.iter().map(|m| m.version).max());
                    state.health.set_database_ok(true);
                    let verdict = check(set, &applied);
                    let message = verdict.describe();
                    if verdict.is_compatible() {
                        info!("{message}");
                        state.health.set_schema(true, message);
                        return Ok(());
                    }
                    if verdict.is_fatal() {
                        return Err(Fatal(message));
                    }
                    if logged != message {
                        warn!("Not ready: {message}");
                        logged.clone_from(&message);
                    }
                    state.health.set_schema(false, message);
                }
                Err(e) => {
                    state
                        .health
                        .set_schema(false, format!("cannot read the schema state: {e}"));
                }
            },
            Err(e) => {
                state.health.set_database_ok(false);
                state
                    .health
                    .set_schema(false, format!("database unreachable: {e}"));
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = tokio::time::sleep(RETRY) => {}
        }
    }
}
