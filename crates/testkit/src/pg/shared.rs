//! The process-wide shared server behind [`fresh_database`].

use std::sync::OnceLock;

use anyhow::Context as _;

use super::{create_database, unique_database_name, with_database, PgCluster, TestDb};

/// Set once, on first use, by whichever test gets there first. A failure is
/// kept too (as its message), so that every later test reports it at once
/// instead of trying again.
static SHARED: OnceLock<Result<Server, String>> = OnceLock::new();

/// The server that fresh databases are created in.
enum Server {
    /// The server given by `DATABASE_URL`.
    External { url: String },
    /// A private cluster. Statics are never dropped, so its watchdog is what
    /// stops it when the process exits.
    Owned(PgCluster),
}

impl Server {
    fn url(&self, db: &str) -> anyhow::Result<String> {
        match self {
            Server::External { url } => with_database(url, db).context("reading DATABASE_URL"),
            Server::Owned(cluster) => Ok(cluster.url(db)),
        }
    }
}

/// Creates an empty database with a unique name on the process-wide shared
/// server and returns its URL.
///
/// If `DATABASE_URL` is set, that server is used: databases are created
/// through its `postgres` maintenance database and are left there afterwards.
/// Otherwise one [`PgCluster`] is started lazily on first use, shared by every
/// test in the process, and cleaned up when the process exits.
///
/// Safe to call from many tests at once, each on its own runtime: the first
/// call starts the cluster (on a blocking thread) while the others wait for
/// it, and each call uses a connection of its own.
pub async fn fresh_database() -> anyhow::Result<TestDb> {
    let server = tokio::task::spawn_blocking(shared_server)
        .await
        .context("starting the shared PostgreSQL server")??;
    let name = unique_database_name();
    create_database(&server.url("postgres")?, &name).await?;
    Ok(TestDb {
        url: server.url(&name)?,
        name,
    })
}

fn shared_server() -> anyhow::Result<&'static Server> {
    SHARED
        .get_or_init(|| {
            let server = match std::env::var("DATABASE_URL") {
                Ok(url) if !url.is_empty() => Ok(Server::External { url }),
                _ => PgCluster::start().map(Server::Owned),
            };
            server.map_err(|e| format!("{e:#}"))
        })
        .as_ref()
        .map_err(|e| anyhow::anyhow!("{e}"))
}
