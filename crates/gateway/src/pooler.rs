//! The start-up check of the database connections against a pooler: the query
//! pool's prepared statements must stay apart, and the LISTEN connection needs
//! a PostgreSQL session of its own (`database.direct_url` behind PgBouncer in
//! transaction mode). Either refusal stops the gateway with a message naming
//! the setting; an unreachable database is waited for, as the warm-up does.

use std::time::Duration;

use obleth_config::db::pooler::{check_session, check_statements, PoolerError};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::state::AppState;

/// A database setting leads to a pooler the gateway cannot work through.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PoolerRefused(pub String);

/// Runs both checks, retrying while the database does not answer. Answers
/// `Ok` as well when `stop` is cancelled first.
pub async fn check(
    state: &AppState,
    pool: &PgPool,
    session_pool: &PgPool,
    stop: &CancellationToken,
) -> Result<(), PoolerRefused> {
    let database = &state.settings.database;
    let session_field = database.session_field();
    loop {
        // The session first: behind PgBouncer in transaction mode without a
        // direct URL, what to set is `database.direct_url`.
        let outcome = match check_session(session_pool).await {
            Ok(()) => check_statements(pool).await,
            Err(PoolerError::Unreachable(e)) => Err(PoolerError::Unreachable(e)),
            Err(refused) => {
                let url = database
                    .session_url()
                    .map(|u| u.redacted())
                    .unwrap_or_default();
                let hint = if session_field == "database.direct_url" {
                    "database.direct_url must name PostgreSQL itself, not the pooler"
                } else {
                    "set database.direct_url (OBLETH_DATABASE__DIRECT_URL) to PostgreSQL itself \
                     for the change feed's LISTEN connection and keep the pooler in database.url"
                };
                return Err(PoolerRefused(format!(
                    "{session_field} ({url}): {refused}; {hint}"
                )));
            }
        };
        match outcome {
            Ok(()) => return Ok(()),
            Err(PoolerError::Unreachable(e)) => {
                warn!(error = %e, "Cannot check the database connections yet; retrying.");
                state.health.set_database_ok(false);
            }
            Err(refused) => return Err(PoolerRefused(format!("database.url: {refused}"))),
        }
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}
