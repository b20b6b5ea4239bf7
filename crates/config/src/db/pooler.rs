//! Telling PostgreSQL from a transaction pooler in front of it: whether a URL
//! gives a session of its own (LISTEN, session advisory locks), and whether
//! the query pool's prepared statements stay with the connection that made them.
//!
//! Behind PgBouncer in transaction mode, a client connection gets a server
//! connection for one transaction only: a `LISTEN` is left on a server that
//! another client uses next, a session lock is held by a server connection
//! the runner no longer talks to, and (before PgBouncer 1.21, or with
//! `max_prepared_statements = 0`) the statement sqlx prepared on one server is
//! bound on another. Each check here runs once at start and ends within a
//! bounded time.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgListener};
use sqlx::{Connection as _, Executor as _, PgConnection, PgPool, Row as _};

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How long the session check waits for its own notification. On PostgreSQL
/// itself it arrives within milliseconds of the commit.
pub const SESSION_CHECK_WAIT: Duration = Duration::from_secs(5);

/// What a check found. Messages never hold a URL or a password: callers name
/// the setting.
#[derive(Debug, thiserror::Error)]
pub enum PoolerError {
    /// The check could not run: the database is down or refused. Try again.
    #[error("cannot check the connection: {0}")]
    Unreachable(#[source] sqlx::Error),
    /// The URL leads to a transaction pooler, not a session of its own.
    #[error(
        "it leads to a transaction pooler, not a PostgreSQL session of its own ({evidence}); \
         LISTEN and session advisory locks do not hold there"
    )]
    NotASession { evidence: String },
    /// The pooler hands one client's prepared statements to another.
    #[error(
        "its connection pooler does not keep prepared statements apart ({evidence}); \
         obleth needs PgBouncer 1.21 or later with max_prepared_statements above 0 in \
         transaction mode, or session mode"
    )]
    StatementsMixed { evidence: String },
}

/// Checks that `pool` (built on the session URL, at least two connections)
/// gives sessions of their own: a connection that LISTENs receives a
/// notification sent from another, and the two are distinct backends.
/// Ends within [`SESSION_CHECK_WAIT`] once connected.
///
/// It uses the simple query protocol only, so it judges a pooler correctly
/// even where prepared statements would fail.
///
/// Boxed with an explicit `Send`, as the runner's `run` is, so callers inside
/// spawned futures compile: rustc cannot prove sqlx's executor bounds for
/// every lifetime otherwise.
pub fn check_session(pool: &PgPool) -> BoxFuture<'_, Result<(), PoolerError>> {
    Box::pin(session_round_trip(pool))
}

async fn session_round_trip(pool: &PgPool) -> Result<(), PoolerError> {
    let channel = format!("obleth_session_check_{}", uuid::Uuid::new_v4().simple());
    let mut listener = PgListener::connect_with(pool)
        .await
        .map_err(PoolerError::Unreachable)?;
    listener.ignore_pool_close_event(true);
    listener
        .listen(&channel)
        .await
        .map_err(PoolerError::Unreachable)?;
    let listening = backend_pid(&mut listener).await?;
    let mut sender = pool.acquire().await.map_err(PoolerError::Unreachable)?;
    let sender_pid: i32 = sender
        .fetch_one("SELECT pg_backend_pid() AS pid")
        .await
        .and_then(|row| row.try_get("pid"))
        .map_err(PoolerError::Unreachable)?;
    if sender_pid == listening {
        sender.detach();
        return Err(PoolerError::NotASession {
            evidence: format!("two connections were served by one backend, pid {sender_pid}"),
        });
    }
    // A `&str` without arguments goes through the simple query protocol. The
    // channel is ours (hex digits), so it is a plain identifier.
    let notify = format!("SELECT pg_notify('{channel}', '')");
    let sent = sender.execute(notify.as_str()).await;
    sender.detach();
    match sent {
        Ok(_) => {}
        // Served by the listening backend meanwhile: the notification came
        // to a connection that never listened.
        Err(sqlx::Error::Protocol(m)) if m.contains("NotificationResponse") => {
            return Err(PoolerError::NotASession {
                evidence: "a connection that never listened received the notification".to_owned(),
            })
        }
        Err(e) => return Err(PoolerError::Unreachable(e)),
    }
    let deadline = tokio::time::Instant::now() + SESSION_CHECK_WAIT;
    loop {
        match tokio::time::timeout_at(deadline, listener.try_recv()).await {
            Ok(Ok(Some(n))) if n.channel() == channel => return Ok(()),
            Ok(Ok(Some(_))) => continue,
            Ok(Ok(None)) => {
                return Err(PoolerError::NotASession {
                    evidence: "the listening connection was closed".to_owned(),
                })
            }
            Ok(Err(e)) => return Err(PoolerError::Unreachable(e)),
            Err(_) => {
                return Err(PoolerError::NotASession {
                    evidence: format!(
                        "a notification sent from another connection did not arrive within {SESSION_CHECK_WAIT:?}"
                    ),
                })
            }
        }
    }
}

async fn backend_pid(listener: &mut PgListener) -> Result<i32, PoolerError> {
    let row = listener
        .fetch_one("SELECT pg_backend_pid() AS pid")
        .await
        .map_err(PoolerError::Unreachable)?;
    row.try_get("pid").map_err(PoolerError::Unreachable)
}

/// Checks that prepared statements stay with the connection that prepared
/// them, on two fresh connections built like `pool`'s: each numbers its
/// statements from one, so a pooler that lends one server to both makes the
/// second fail (`already exists`) or bind the first's statement.
pub fn check_statements(pool: &PgPool) -> BoxFuture<'_, Result<(), PoolerError>> {
    Box::pin(two_connections(pool))
}

async fn two_connections(pool: &PgPool) -> Result<(), PoolerError> {
    let options: PgConnectOptions = (*pool.connect_options()).clone();
    let mut a = PgConnection::connect_with(&options)
        .await
        .map_err(PoolerError::Unreachable)?;
    let mut b = PgConnection::connect_with(&options)
        .await
        .map_err(PoolerError::Unreachable)?;
    let result = interleave(&mut a, &mut b).await;
    let _ = a.close().await;
    let _ = b.close().await;
    result
}

async fn interleave(a: &mut PgConnection, b: &mut PgConnection) -> Result<(), PoolerError> {
    for round in 0..3_i32 {
        let n: i32 = sqlx::query_scalar("SELECT $1::int4")
            .bind(round)
            .fetch_one(&mut *a)
            .await
            .map_err(judge)?;
        let text: String = sqlx::query_scalar("SELECT $1::text")
            .bind("obleth")
            .fetch_one(&mut *b)
            .await
            .map_err(judge)?;
        if n != round || text != "obleth" {
            return Err(PoolerError::StatementsMixed {
                evidence: "a statement answered another statement's result".to_owned(),
            });
        }
    }
    Ok(())
}

/// A trivial statement fails on PostgreSQL itself only when the server goes
/// away; these codes mean a statement met a server that did not prepare it.
fn judge(e: sqlx::Error) -> PoolerError {
    let mixed = e
        .as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|code| matches!(&*code, "42P05" | "26000" | "08P01" | "42P18" | "22P03"));
    if mixed {
        PoolerError::StatementsMixed {
            evidence: e.to_string(),
        }
    } else {
        PoolerError::Unreachable(e)
    }
}
