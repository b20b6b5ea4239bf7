//! PostgreSQL access shared by the gateway and the admin: the pool and the queries, one concern a module.
//!
//! Every mutation of keys, providers or routes goes through this module in one
//! transaction with its change-log row (see [`changes`]), so the gateways' key
//! caches cannot miss it.

pub mod catalog;
pub mod changes;
pub mod fold;
pub mod key_store;
pub mod keys;
pub mod ledger;
pub mod nodes;
pub mod pooler;
pub mod prices;
pub mod quota;
pub mod settings;
pub mod teams;
pub mod usage;

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

use crate::settings::DatabaseSettings;

/// A database that cannot be reached or used. Messages never carry the
/// connection URL's password.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("no database url is configured; set database.url (OBLETH_DATABASE__URL)")]
    NoUrl,
    #[error("invalid database url {url}: {source}")]
    InvalidUrl {
        /// The URL with its password masked.
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("database error: {0}")]
    Sqlx(#[from] sqlx::Error),
}

/// Builds the pool from `[database]` settings without connecting.
///
/// The pool is lazy so a gateway can start, and keep serving from its cache,
/// while the database is down: connections are opened on first use and each
/// acquire waits at most `acquire_timeout_ms`. `application_name` shows up in
/// `pg_stat_activity`, so operators can tell the services apart.
pub async fn connect_pool(
    settings: &DatabaseSettings,
    application_name: &str,
) -> Result<PgPool, DbError> {
    let url = settings.url.as_ref().ok_or(DbError::NoUrl)?;
    let options = connect_options(url)?.application_name(application_name);
    Ok(PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(Duration::from_millis(settings.acquire_timeout_ms))
        .connect_lazy_with(options))
}

/// The options for connections that need a session of their own (the
/// gateway's LISTEN connection, the migration runner): `database.direct_url`,
/// else `database.url`.
pub fn session_options(
    settings: &DatabaseSettings,
    application_name: &str,
) -> Result<PgConnectOptions, DbError> {
    let url = settings.session_url().ok_or(DbError::NoUrl)?;
    Ok(connect_options(url)?.application_name(application_name))
}

/// A lazy pool of at most two connections on the session URL (see
/// [`session_options`]), for `PgListener`, which detaches the connection it
/// takes, and the pooler check's second connection.
pub fn connect_session_pool(
    settings: &DatabaseSettings,
    application_name: &str,
) -> Result<PgPool, DbError> {
    Ok(PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_millis(settings.acquire_timeout_ms))
        .connect_lazy_with(session_options(settings, application_name)?))
}

fn connect_options(url: &crate::settings::DatabaseUrl) -> Result<PgConnectOptions, DbError> {
    PgConnectOptions::from_str(url.expose()).map_err(|source| DbError::InvalidUrl {
        url: url.redacted(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::DatabaseUrl;

    #[tokio::test]
    async fn connect_pool_needs_a_url_and_never_shows_its_password() {
        let none = connect_pool(&DatabaseSettings::default(), "test").await;
        assert!(matches!(none, Err(DbError::NoUrl)));

        let settings = DatabaseSettings {
            url: Some(DatabaseUrl::new("postgres://u:hunter2@h:notaport/db")),
            ..Default::default()
        };
        let err = connect_pool(&settings, "test").await.unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, DbError::InvalidUrl { .. }), "{msg}");
        assert!(!msg.contains("hunter2") && msg.contains("u:***@h"), "{msg}");
        assert!(!format!("{err:?}").contains("hunter2"));
    }

    #[tokio::test]
    async fn connect_pool_is_lazy_so_an_unreachable_database_is_not_an_error() {
        let settings = DatabaseSettings {
            url: Some(DatabaseUrl::new("postgres://u:p@127.0.0.1:1/db")),
            max_connections: 3,
            acquire_timeout_ms: 100,
            ..Default::default()
        };
        let pool = connect_pool(&settings, "test").await.unwrap();
        assert_eq!(pool.options().get_max_connections(), 3);
        assert!(pool.acquire().await.is_err());
    }
}
