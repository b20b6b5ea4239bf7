//! The pooler checks and the runner against a real PgBouncer in transaction
//! mode: PostgreSQL itself passes both, a pooled URL is refused within a
//! bounded time, and the runner takes no lock and applies nothing through one.

use std::str::FromStr;
use std::time::{Duration, Instant};

use obleth_config::db::pooler::{check_session, check_statements, PoolerError};
use obleth_config::migrate::runner::MigrateError;
use obleth_config::migrate::{MigrationSet, Mode, Runner, RunnerOptions};
use obleth_testkit::pgbouncer::{PgBouncer, PoolMode};
use obleth_testkit::PgCluster;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

/// Generous for a loaded 2-core machine; the checks wait 5 s at most.
const BOUND: Duration = Duration::from_secs(30);

fn pool(url: &str) -> PgPool {
    PgPoolOptions::new()
        .max_connections(2)
        .connect_lazy_with(PgConnectOptions::from_str(url).unwrap())
}

#[tokio::test]
async fn postgresql_itself_passes_both_checks() {
    let pg = PgCluster::start().unwrap();
    let db = pg.fresh_database().await.unwrap();
    let direct = pool(&db.url);
    check_session(&direct).await.unwrap();
    check_statements(&direct).await.unwrap();
}

#[tokio::test]
async fn a_transaction_pooler_is_not_a_session_and_is_told_within_a_bound() {
    let pg = PgCluster::start().unwrap();
    let db = pg.fresh_database().await.unwrap();
    let bouncer = PgBouncer::start(pg.port(), PoolMode::Transaction, 2, 0)
        .await
        .unwrap();
    let started = Instant::now();
    let refused = tokio::time::timeout(BOUND, check_session(&pool(&bouncer.url(&db.name))))
        .await
        .expect("the session check ends within its bound");
    assert!(
        matches!(refused, Err(PoolerError::NotASession { .. })),
        "{refused:?}"
    );
    assert!(started.elapsed() < BOUND);
    let message = refused.unwrap_err().to_string();
    assert!(message.contains("transaction pooler"), "{message}");
}

#[tokio::test]
async fn a_session_pooler_gives_sessions() {
    let pg = PgCluster::start().unwrap();
    let db = pg.fresh_database().await.unwrap();
    let bouncer = PgBouncer::start(pg.port(), PoolMode::Session, 4, 0)
        .await
        .unwrap();
    let pooled = pool(&bouncer.url(&db.name));
    check_session(&pooled).await.unwrap();
    check_statements(&pooled).await.unwrap();
}

#[tokio::test]
async fn a_pooler_without_prepared_statements_is_refused() {
    let pg = PgCluster::start().unwrap();
    let db = pg.fresh_database().await.unwrap();
    // max_prepared_statements = 0 is PgBouncer before 1.21: statements go to
    // whichever server the transaction gets.
    let bouncer = PgBouncer::start(pg.port(), PoolMode::Transaction, 2, 0)
        .await
        .unwrap();
    let refused = tokio::time::timeout(BOUND, check_statements(&pool(&bouncer.url(&db.name))))
        .await
        .expect("the statement check ends within its bound");
    let Err(PoolerError::StatementsMixed { evidence }) = &refused else {
        panic!("{refused:?}");
    };
    assert!(!evidence.is_empty());
    let message = refused.unwrap_err().to_string();
    assert!(message.contains("max_prepared_statements"), "{message}");
}

#[tokio::test]
async fn a_pooler_that_keeps_prepared_statements_passes_the_statement_check() {
    let pg = PgCluster::start().unwrap();
    let db = pg.fresh_database().await.unwrap();
    let bouncer = PgBouncer::start(pg.port(), PoolMode::Transaction, 2, 100)
        .await
        .unwrap();
    let pooled = pool(&bouncer.url(&db.name));
    check_statements(&pooled).await.unwrap();
    // It still is no session of its own.
    let session = check_session(&pooled).await;
    assert!(
        matches!(session, Err(PoolerError::NotASession { .. })),
        "{session:?}"
    );
}

#[tokio::test]
async fn the_runner_refuses_a_transaction_pooler_before_locking_or_applying() {
    let pg = PgCluster::start().unwrap();
    let db = pg.fresh_database().await.unwrap();
    let bouncer = PgBouncer::start(pg.port(), PoolMode::Transaction, 2, 100)
        .await
        .unwrap();
    let runner = Runner::new(MigrationSet::embedded().unwrap(), RunnerOptions::default());
    let options = PgConnectOptions::from_str(&bouncer.url(&db.name)).unwrap();
    let outcome = tokio::time::timeout(BOUND, runner.run(&options, Mode::Up))
        .await
        .expect("the runner ends within its bound");
    let Err(err @ MigrateError::Pooled(_)) = outcome else {
        panic!("{outcome:?}");
    };
    assert!(err.to_string().contains("PostgreSQL itself"), "{err}");
    let direct = pool(&db.url);
    let migrated: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        .fetch_one(&direct)
        .await
        .unwrap();
    assert!(!migrated, "nothing was applied through the pooler");
    let locks: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")
            .fetch_one(&direct)
            .await
            .unwrap();
    assert_eq!(locks, 0);
    // The same runner on PostgreSQL itself applies the set.
    let direct_options = PgConnectOptions::from_str(&db.url).unwrap();
    runner.run(&direct_options, Mode::Up).await.unwrap();
}
