//! Throwaway PostgreSQL: the cluster, the process-wide shared server and test databases.

mod binaries;
mod cluster;
mod replica;
mod shared;
mod watchdog;

use std::fmt;

use anyhow::Context as _;
use sqlx::Connection as _;

pub use cluster::PgCluster;
pub use replica::{PgReplicated, REPLICATION_ROLE};
pub use shared::fresh_database;

/// An empty database created for one test.
///
/// The database is not dropped afterwards: a private cluster takes it along
/// when it goes, and on a `DATABASE_URL` server the unique name keeps it out of
/// the way of every other test.
pub struct TestDb {
    /// Connection URL of the database.
    pub url: String,
    /// Name of the database, `obleth_test_` followed by 32 hex digits.
    pub name: String,
}

impl fmt::Debug for TestDb {
    // The URL may carry a password when it comes from `DATABASE_URL`, so it is
    // left out.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestDb")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Returns a database name that no other test, in this process or another, uses.
fn unique_database_name() -> String {
    format!("obleth_test_{}", uuid::Uuid::new_v4().simple())
}

/// Creates database `name` through a short-lived connection to `admin_url`.
///
/// A single connection rather than a pool, because callers live on many
/// runtimes (each `#[tokio::test]` has its own) and a pool is bound to one.
async fn create_database(admin_url: &str, name: &str) -> anyhow::Result<()> {
    let mut conn = sqlx::PgConnection::connect(admin_url)
        .await
        .context("connecting to the maintenance database `postgres` to create a test database")?;
    // CREATE DATABASE takes no bind parameters. The name comes from
    // `unique_database_name`, letters, digits and underscores only, so quoting
    // it is enough.
    sqlx::query(&format!("CREATE DATABASE \"{name}\""))
        .execute(&mut conn)
        .await
        .with_context(|| format!("creating database {name}"))?;
    conn.close()
        .await
        .context("closing the maintenance connection")?;
    Ok(())
}

/// Returns `url` with its database (the URL path) replaced by `db`, keeping the
/// scheme, credentials, host and query parameters.
fn with_database(url: &str, db: &str) -> anyhow::Result<String> {
    let authority_start = url
        .find("://")
        .map(|i| i + 3)
        .context("the database URL has no `scheme://` prefix")?;
    let query_start = url[authority_start..]
        .find(['?', '#'])
        .map_or(url.len(), |i| authority_start + i);
    let path_start = url[authority_start..query_start]
        .find('/')
        .map_or(query_start, |i| authority_start + i);
    Ok(format!(
        "{}/{db}{}",
        &url[..path_start],
        &url[query_start..]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(url: &str, expected: &str) {
        assert_eq!(with_database(url, "x").unwrap(), expected, "for {url}");
    }

    #[test]
    fn with_database_replaces_only_the_path() {
        check("postgres://u:p@h:5432/app", "postgres://u:p@h:5432/x");
        check("postgres://u:p@h:5432", "postgres://u:p@h:5432/x");
        check("postgres://h/", "postgres://h/x");
        check(
            "postgresql://u@h/app?sslmode=disable",
            "postgresql://u@h/x?sslmode=disable",
        );
        check(
            "postgres://h?sslmode=require",
            "postgres://h/x?sslmode=require",
        );
        check(
            "postgres:///app?host=/var/run/postgresql",
            "postgres:///x?host=/var/run/postgresql",
        );
    }

    #[test]
    fn with_database_rejects_a_non_url() {
        assert!(with_database("host=localhost dbname=app", "x").is_err());
    }

    #[test]
    fn unique_database_names_are_valid_identifiers() {
        let name = unique_database_name();
        assert!(name.len() <= 63, "{name} is longer than NAMEDATALEN");
        assert!(name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'));
        assert_ne!(name, unique_database_name());
    }
}
